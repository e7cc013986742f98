//! Event sources. Each sensor turns kernel activity into [`fim_core::event::FileEvent`]s.

pub mod ebpf;
pub mod fanotify;
pub mod procfs;
pub mod proctable;
pub mod seed;
pub mod ticker;
pub mod witness;

use std::sync::{Arc, Mutex};

use log::{info, warn};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::fanotify::MarkScope;
use fim_core::{event::FileEvent, telemetry::Telemetry, watch::WatchSet};

/// How often an idle daemon wakes: each sensor reads its loss counters (and expires what
/// it waits for), and the integrity engine looks at them, this often when nothing else is
/// due. Under load both look at every turn. Idle, that is one wakeup of each per period
/// (the sensors' timer is a `timerfd`, see [`ticker`]). A loss found while idle is reported
/// within this time.
pub const HOUSEKEEPING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The live reloads a running sensor is asked to apply, in turn. Once nobody can ask any
/// more, [`Self::next`] waits forever (a `select!` arm that never fires).
pub struct Rewatches(Option<mpsc::Receiver<crate::sources::Rewatch>>);

impl Rewatches {
    /// The reloads that come on `rx`.
    pub fn new(rx: mpsc::Receiver<crate::sources::Rewatch>) -> Self {
        Self(Some(rx))
    }

    /// The next reload asked for.
    pub async fn next(&mut self) -> crate::sources::Rewatch {
        if let Some(rx) = self.0.as_mut() {
            if let Some(r) = rx.recv().await {
                return r;
            }
            self.0 = None;
        }
        std::future::pending().await
    }

    /// A reload already asked for, without waiting: a sensor looks between its rounds of
    /// reading too, so a flood (which keeps its other wakeups ready) cannot hold a reload
    /// back for long.
    pub fn try_next(&mut self) -> Option<crate::sources::Rewatch> {
        self.0.as_mut()?.try_recv().ok()
    }
}

/// Applies reload `r` with `apply` and answers it; logs a failure.
pub(crate) fn answer(
    r: crate::sources::Rewatch,
    apply: impl FnOnce(&Arc<WatchSet>) -> Result<(), SensorError>,
) {
    log::debug!("reload: the sensor applies the new watch set");
    let result = apply(&r.watch);
    if let Err(e) = &result {
        warn!("reload: the sensor could not follow the new watch set: {e}");
    }
    let _ = r.done.send(result.map_err(Into::into));
}

/// What keeps the process table current (the eBPF process-table programs): the fanotify
/// sensor brings it up to date before it attributes a batch of events.
pub trait ProcessFeed: Send {
    /// Applies every process record waiting in the kernel, and checks its loss counters.
    fn catch_up(&mut self);
}

/// The fanotify sensor, reading the baseline in `state_dir` for identities.
fn fanotify_sensor(
    watch: &Arc<WatchSet>,
    state_dir: &std::path::Path,
    scope: MarkScope,
    telemetry: &Arc<Telemetry>,
) -> Result<fanotify::FanotifySensor, fanotify::FanotifyError> {
    use fim_core::baseline::{Access, Baseline};
    let sensor = fanotify::FanotifySensor::start_scoped(watch.clone(), scope, telemetry)?;
    Ok(match Baseline::open(state_dir, Access::Read) {
        Ok(b) => sensor.with_baseline(b),
        Err(e) => {
            warn!(
                "fanotify: cannot read the baseline ({e}); hard links made outside the watched trees to watched files will not be followed"
            );
            sensor
        }
    })
}

/// Which sensor `fim run --sensor` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SensorKind {
    /// The best combination this kernel allows.
    Auto,
    /// The best eBPF tier this kernel allows (LSM, then fentry, then tracepoints).
    Ebpf,
    /// Exactly this eBPF tier; an error if the kernel refuses it.
    Tier(ebpf::Tier),
    /// fanotify with filesystem marks.
    Fanotify,
}

/// A sensor failed to start or run.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// The eBPF sensor.
    #[error(transparent)]
    Ebpf(#[from] ebpf::EbpfError),
    /// The fanotify sensor.
    #[error(transparent)]
    Fanotify(#[from] fanotify::FanotifyError),
}

/// A started sensor of either kind.
pub enum Sensor {
    /// eBPF, one tier.
    Ebpf(Box<ebpf::EbpfSensor>),
    /// fanotify.
    Fanotify(fanotify::FanotifySensor),
    /// The eBPF tracepoint tier for file events, with fanotify as its witness: what only
    /// fanotify saw is reported from fanotify (see [`witness`]).
    Witnessed {
        /// The tracepoint tier, which also keeps the process table.
        events: Box<ebpf::EbpfSensor>,
        /// The witness.
        files: fanotify::FanotifySensor,
    },
    /// fanotify for file events, attributed through an eBPF-fed process table (the
    /// fanotify sensor drives the eBPF programs' ring).
    Auto {
        /// The file-event sensor (it drives the process-table programs' ring).
        files: fanotify::FanotifySensor,
    },
}

impl Sensor {
    /// Starts the sensor of `kind` for `watch`; `state_dir` holds the baseline, which the
    /// fanotify sensor reads to know watched files by inode. What it loses is counted in
    /// `telemetry`.
    pub fn start(
        kind: SensorKind,
        watch: &Arc<WatchSet>,
        state_dir: &std::path::Path,
        telemetry: &Arc<Telemetry>,
    ) -> Result<Self, SensorError> {
        use ebpf::{EbpfSensor, Tier};
        let t = telemetry;
        let sensor = match kind {
            SensorKind::Ebpf => Self::Ebpf(Box::new(EbpfSensor::start_best(
                watch,
                &Tier::BEST_FIRST,
                t,
            )?)),
            SensorKind::Tier(tier) => Self::Ebpf(Box::new(EbpfSensor::start(watch, tier, t)?)),
            SensorKind::Fanotify => {
                Self::Fanotify(fanotify_sensor(watch, state_dir, MarkScope::Filesystem, t)?)
            }
            SensorKind::Auto => Self::auto(watch, state_dir, t)?,
        };
        crate::memory::give_back();
        let (name, tier) = sensor.info();
        telemetry.emit(fim_core::telemetry::Internal::SensorInUse { sensor: name, tier });
        Ok(sensor)
    }

    /// What is in use, as `fim_sensor_info` names it: the sensor (`ebpf`, `fanotify`,
    /// `ebpf+fanotify` for the tracepoint tier with its witness, `fanotify+process-table`
    /// for fanotify with the eBPF process table) and the eBPF tier for file events (`none`).
    pub fn info(&self) -> (&'static str, &'static str) {
        let tier = |s: &ebpf::EbpfSensor| s.name().strip_prefix("ebpf-").unwrap_or("none");
        match self {
            Self::Ebpf(s) => ("ebpf", tier(s)),
            Self::Witnessed { events, .. } => ("ebpf+fanotify", tier(events)),
            Self::Fanotify(_) => ("fanotify", "none"),
            Self::Auto { .. } => ("fanotify+process-table", "none"),
        }
    }

    /// Where the kernel allows the LSM or fentry tier, eBPF alone: kernel objects, io_uring,
    /// filtering in the kernel. On a kernel whose eBPF allows only tracepoints, the
    /// tracepoint tier reports every operation it can name (one event each, in order, with
    /// the acting thread as it was), and fanotify, which sees objects however they were
    /// reached (bind mounts, `dir-symlink/..`, io_uring), witnesses it: what only fanotify
    /// saw is reported from fanotify. Without the tracepoint tier, fanotify with the eBPF
    /// process table, or alone (details from /proc); without fanotify, the tracepoint tier
    /// alone.
    fn auto(
        watch: &Arc<WatchSet>,
        state_dir: &std::path::Path,
        t: &Arc<Telemetry>,
    ) -> Result<Self, SensorError> {
        use ebpf::{EbpfSensor, Tier};
        match EbpfSensor::start_best(watch, &[Tier::Lsm, Tier::Fentry], t) {
            Ok(s) => {
                info!("sensor auto: eBPF with kernel objects ({})", s.name());
                return Ok(Self::Ebpf(Box::new(s)));
            }
            Err(e) => info!("sensor auto: no kernel-object eBPF tier ({e})"),
        }
        let table = Arc::new(Mutex::new(proctable::ProcTable::default()));
        match EbpfSensor::start(watch, Tier::Tracepoint, t)
            .and_then(|s| s.with_process_programs(table.clone()))
        {
            Ok(events) => {
                let files = match fanotify_sensor(watch, state_dir, MarkScope::Directories, t) {
                    Ok(f) => f,
                    Err(e) => {
                        warn!(
                            "sensor auto: fanotify unavailable ({e}); the eBPF tracepoint tier alone"
                        );
                        return Ok(Self::Ebpf(Box::new(events)));
                    }
                };
                info!(
                    "sensor auto: the eBPF tracepoint tier for file events, with fanotify as its \
                     witness (what only fanotify sees is reported from fanotify); this kernel \
                     gives eBPF tracepoints only"
                );
                return Ok(Self::Witnessed {
                    events: Box::new(events),
                    files: files
                        .with_process_table(table, None)
                        .with_deferred_processes(),
                });
            }
            Err(e) => info!("sensor auto: no eBPF tracepoint tier ({e})"),
        }
        let files = fanotify_sensor(watch, state_dir, MarkScope::Filesystem, t)?;
        match EbpfSensor::start_process_table(watch, t) {
            Ok(procs) => {
                info!(
                    "sensor auto: fanotify for file events, eBPF process table \
                     (sched_process_exec, task_newtask, sched_process_exit) for attribution; this kernel gives eBPF \
                     tracepoints only"
                );
                let feed = Box::new(procs.with_process_table(table.clone()));
                Ok(Self::Auto {
                    files: files.with_process_table(table, Some(feed)),
                })
            }
            Err(e) => {
                warn!("sensor auto: no eBPF ({e}); fanotify alone, process details from /proc");
                Ok(Self::Fanotify(files))
            }
        }
    }

    /// The sensor's name, as in events.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ebpf(s) | Self::Witnessed { events: s, .. } => s.name(),
            Self::Fanotify(_) | Self::Auto { .. } => fanotify::SENSOR_NAME,
        }
    }

    /// Runs until `shutdown`, then drains and closes `tx`. Applies the reloads that come
    /// on `rewatch` between reads.
    pub async fn run(
        self,
        tx: mpsc::Sender<FileEvent>,
        rewatch: mpsc::Receiver<crate::sources::Rewatch>,
        shutdown: CancellationToken,
    ) -> Result<(), SensorError> {
        let rewatch = Rewatches::new(rewatch);
        match self {
            Self::Ebpf(s) => Ok((*s).run(tx, rewatch, shutdown).await?),
            Self::Fanotify(s) | Self::Auto { files: s } => Ok(s.run(tx, rewatch, shutdown).await?),
            Self::Witnessed { events, files } => {
                Ok(run_witnessed(*events, files, tx, rewatch, shutdown).await?)
            }
        }
    }
}

/// Says when a sensor's loop last turned ([`fim_core::telemetry::SENSOR_LAST_TURN`]), at
/// most once a second: what `/health` reads to tell a stalled sensor.
#[derive(Default)]
pub struct Heartbeat {
    last: u64,
}

impl Heartbeat {
    /// The loop turned.
    pub fn beat(&mut self, telemetry: &Telemetry) {
        let now = fim_core::event::unix_now_secs();
        if now != self.last {
            self.last = now;
            telemetry.emit(fim_core::telemetry::Internal::SensorTurned { unix_seconds: now });
        }
    }
}

/// Begins a round of `merger` and gives it what the ring holds; returns how many records
/// were read (process records included).
fn drain_round(
    events: &mut ebpf::EbpfSensor,
    merger: &mut witness::Merger,
    drained: &mut Vec<FileEvent>,
) -> usize {
    merger.begin_round();
    let records = events.take_ready(drained);
    for ev in drained.drain(..) {
        merger.tracepoint(ev);
    }
    records
}

/// How soon the loop comes back while fanotify events wait for their verdict.
const WITNESSED_JUDGE: std::time::Duration = std::time::Duration::from_millis(3);

/// `auto`'s loop on a kernel whose eBPF allows only tracepoints: each round drains the
/// tracepoint ring, then reads fanotify until its queue is empty, then lets
/// [`witness::Merger`] release what can go out (see there for why in that order).
async fn run_witnessed(
    mut events: ebpf::EbpfSensor,
    mut files: fanotify::FanotifySensor,
    tx: mpsc::Sender<FileEvent>,
    mut rewatch: Rewatches,
    shutdown: CancellationToken,
) -> Result<(), SensorError> {
    use witness::{Merger, Reporter};
    let mut reader = files.reader()?;
    let mut merger = Merger::default();
    let housekeeping = ticker::Ticker::new(ebpf::DROP_CHECK_INTERVAL)
        .map_err(|e| SensorError::Ebpf(ebpf::EbpfError::Ticker(e)))?;
    let (mut drained, mut read) = (Vec::new(), Vec::new());
    let mut batched = false;
    let mut heartbeat = Heartbeat::default();
    let telemetry = events.telemetry();
    loop {
        heartbeat.beat(&telemetry);
        let waiting = merger.waiting();
        let stopping = tokio::select! {
            () = shutdown.cancelled() => true,
            () = events.readable(), if !batched => false,
            r = fanotify::FanotifySensor::readable(&reader), if !batched => {
                r?;
                false
            }
            // A verdict due, or the pause after a drain that found records (`ebpf::BATCH_PAUSE`).
            () = tokio::time::sleep(if batched { ebpf::BATCH_PAUSE } else { WITNESSED_JUDGE }),
                if waiting || batched => false,
            () = housekeeping.tick() => {
                events.housekeeping();
                files.tick();
                false
            }
            r = rewatch.next() => {
                // The tracepoint tier first, then its witness: both watch the new set before
                // the next round reads either.
                answer(r, |watch| {
                    events.rewatch(watch)?;
                    Ok(files.rewatch(watch.clone())?)
                });
                false
            }
        };
        let records = drain_round(&mut events, &mut merger, &mut drained);
        let queue_empty = files.read_some(&mut reader, &mut read)?;
        // After ring records, or a fanotify flood that outlasted one wakeup's reads (its
        // readiness is consumed), come back after a pause rather than wait for a wakeup.
        batched = !stopping && (records > 0 || !queue_empty);
        if stopping {
            files.stop(&mut reader, &mut read)?;
        }
        let now = fim_core::event::unix_now_ns();
        let read_count = read.len();
        for ev in read.drain(..) {
            merger.fanotify(ev, now);
        }
        if stopping {
            // What the syscalls still running when the fanotify queue was read will report.
            tokio::time::sleep(WITNESSED_JUDGE).await;
            drain_round(&mut events, &mut merger, &mut drained);
        }
        let released = merger.release(fim_core::event::unix_now_ns(), stopping);
        if log::log_enabled!(log::Level::Debug) {
            // Counting what is held walks every thread: only when it is logged.
            let (held, waiting) = merger.held();
            log::debug!(
                "witnessed round: {records} ring records, {read_count} fanotify events read, {} released, {held} held, {waiting} waiting",
                released.len()
            );
        }
        for (mut ev, from) in released {
            if from == Reporter::Fanotify {
                let tid = ev.process.as_ref().map_or(0, |p| p.tid);
                ev.process = Some(files.process_for(tid));
            }
            if tx.send(ev).await.is_err() {
                return Ok(());
            }
        }
        if let Some(r) = rewatch.try_next() {
            answer(r, |watch| {
                events.rewatch(watch)?;
                Ok(files.rewatch(watch.clone())?)
            });
        }
        if stopping {
            events.finish();
            info!(
                "sensor auto: {} fanotify events were also reported by the tracepoint tier, {} were seen by fanotify alone",
                merger.explained, merger.unexplained
            );
            return Ok(());
        }
    }
}
