//! The daemon's integrity stage: takes sensor events, observes the files they touched
//! (attributes, digest) in a worker pool, reports before/after values, and keeps the
//! baseline current. It also runs the reconcile scans (at start, on a schedule and after
//! lost events) and reports what they find.
//!
//! It runs on its own thread because it owns the SQLite connection. Event intake never
//! waits for hashing: observations run in the pool, events for a path whose observation is
//! in flight wait behind it ([`super::schedule`]), and a burst of writes is hashed once
//! ([`super::burst`]). When the backlog reaches its limit, events pass through unenriched
//! with a note, are counted, and a rescan repairs the baseline. The values each event
//! carries are decided in [`super::enrich`], what scans find in [`super::reconcile`]; this
//! module is the loop that wires them, in input order ([`super::order`]).
//!
//! Input: [`FileEvent`]s from the source; output: the same events with
//! [`FileEvent::integrity`] filled, plus events found by scans.

use std::{
    collections::{HashSet, VecDeque},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use log::warn;

pub use crate::sinks::Output;
use crate::sources::Namer;
use fim_core::{
    attrs::{Content, NotHashed, Snapshot, diff},
    baseline::{Access, Baseline, BaselineError},
    telemetry::{Internal, Telemetry},
};

use super::{
    burst::Bursts,
    enrich,
    observe::{Hashing, Limits, ObserveError, Scratch, Within, observe, observe_within},
    order::{Reorder, Ticket},
    reconcile::{self, ScanRun, Unseen, found_event},
    scan::ScanItem,
    schedule::{PathQueues, Step, step_for},
};
use fim_core::{
    event::{Action, FileEvent, Integrity, Losses, Origin, PathSource, ReportedPath, unix_now_ns},
    watch::{ScanRoot, WatchSet},
};

/// Settings of the integrity stage.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Where the baseline lives.
    pub state_dir: PathBuf,
    /// Hashing limits.
    pub limits: Limits,
    /// A file still open for writing is hashed after this long without a close.
    pub quiet: Duration,
    /// Rescan the watched roots this often (`None`: never).
    pub rescan_interval: Option<Duration>,
    /// Threads observing files.
    pub workers: usize,
    /// Events waiting for enrichment before new ones pass through unenriched.
    pub max_backlog: usize,
}

/// What the engine takes from the source's side, in order.
#[derive(Debug)]
pub enum Input {
    /// Events that passed the watch-set check.
    Events(Vec<FileEvent>),
    /// From here on, another watch set and other limits (a live reload): the events
    /// before were checked against the old set, those after against the new one.
    Rewatch(Box<Rewatch>),
}

/// A live reload, as the engine applies it.
#[derive(Debug)]
pub struct Rewatch {
    /// What is watched from now on.
    pub watch: Arc<WatchSet>,
    /// How files are read from now on (hashing limit, rules, package digests).
    pub limits: Limits,
}

/// The integrity stage failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The baseline could not be opened or written.
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    /// The output channel closed early.
    #[error("the output stage stopped")]
    OutputClosed,
}

/// Largest file the engine hashes on its own thread (about 30 µs of SHA-256); larger ones go
/// to a hashing worker, so one large file does not hold up the events behind it.
const INLINE_HASH_BYTES: u64 = 64 * 1024;

/// How often the baseline's changes are committed when nothing is reported.
const COMMIT_EVERY: Duration = Duration::from_millis(200);
/// How long reported events may wait for the commit that makes them and their baseline
/// changes durable together (group commit: one commit serves every event of a burst).
const COMMIT_LATENCY: Duration = Duration::from_millis(1);
/// Writes after which the baseline is committed without waiting, so transactions stay
/// short.
const LARGE_TRANSACTION: u64 = 4096;

/// An [`Output`] that sends the events of each commit, as they are, to a channel (tests).
#[cfg(test)]
pub struct ChannelOutput {
    tx: flume::Sender<Vec<FileEvent>>,
    staged: Vec<FileEvent>,
}

#[cfg(test)]
impl ChannelOutput {
    /// Sends to `tx`.
    pub fn new(tx: flume::Sender<Vec<FileEvent>>) -> Self {
        Self {
            tx,
            staged: Vec::new(),
        }
    }
}

#[cfg(test)]
impl Output for ChannelOutput {
    fn stage(&mut self, events: Vec<FileEvent>, _: &mut Baseline) -> Result<(), BaselineError> {
        self.staged.extend(events);
        Ok(())
    }
    fn stage_due(&mut self, _: Option<Instant>, _: &mut Baseline) -> Result<(), BaselineError> {
        Ok(())
    }
    fn next_due(&self) -> Option<Instant> {
        None
    }
    fn staged(&self) -> bool {
        !self.staged.is_empty()
    }
    fn publish(&mut self, _: &mut Baseline) -> Result<bool, BaselineError> {
        if self.staged.is_empty() {
            return Ok(true);
        }
        Ok(self.tx.send(std::mem::take(&mut self.staged)).is_ok())
    }
}

struct Job {
    /// The event's place in the engine's input order.
    ticket: Ticket,
    /// How to read the file (the limits in force when the event was taken).
    limits: Arc<Limits>,
    /// Canonical keys the job holds (path; rename: new then old).
    keys: Vec<Vec<u8>>,
    event: FileEvent,
    step: Step,
    /// Baseline entry for the digest reuse (rename: the old name's entry).
    prev: Option<Snapshot>,
    /// Later events of the same kind on the same path that queued behind another job: one
    /// observation serves them all (a burst of 10,000 chmods is observed once per batch).
    followers: Vec<(Ticket, FileEvent)>,
    /// A later event of its batch removed or rebound the name: not observed (see
    /// [`super::supersede`]).
    superseded: bool,
}

impl Job {
    /// How the worker reads the file for this job.
    fn hashing(&self) -> Hashing<'_> {
        // fanotify cannot tell a new file from a new link to an old one (or a symlink, a
        // FIFO): read what is there rather than deferring to a close that may never come.
        let fanotify_create =
            self.event.action == Action::Create && self.event.path.source == PathSource::FileHandle;
        match self.step {
            Step::Defer if !fanotify_create => Hashing::Defer,
            Step::Settle => Hashing::Always,
            _ => Hashing::Reuse(self.prev.as_ref()),
        }
    }
}

struct Done {
    job: Job,
    result: Result<Option<Snapshot>, ObserveError>,
}

/// What is left to do for an event once everything before it is done.
enum Finished {
    /// Its observation: apply it to the baseline and report.
    Observed(Box<Done>),
    /// A name is gone: drop it from the baseline and report.
    Forget(Box<FileEvent>, Vec<u8>),
    /// Report as it is.
    Emit(Box<FileEvent>),
    /// A scan's finding, whose baseline change is written already: report it (no commit
    /// happens while one waits, so the change is never durable without it).
    Found(Box<FileEvent>),
}

/// The integrity stage, started (baseline open, first scan running) but not yet consuming.
pub struct Engine {
    cfg: EngineConfig,
    /// `cfg.limits`, shared with the jobs.
    limits: Arc<Limits>,
    watch: Arc<WatchSet>,
    /// Names the source's unnamed events from their values.
    namer: Option<Namer>,
    baseline: Baseline,
    output: Box<dyn Output>,
    /// Events reported since they were last staged in the output (once per turn of the
    /// loop, so the sinks wake once per batch rather than once per event).
    outbox: Vec<FileEvent>,
    /// Scan findings waiting for their turn whose baseline change is written already.
    found_waiting: usize,
    telemetry: Arc<Telemetry>,
    jobs: flume::Sender<Job>,
    done: flume::Receiver<Done>,
    workers: Vec<std::thread::JoinHandle<()>>,
    /// Jobs waiting for a free worker.
    ready: VecDeque<Job>,
    /// Buffers for the observations made on this thread (all but large files to hash).
    scratch: Scratch,
    in_flight: usize,
    /// Keys with a job in flight, and the events waiting behind it.
    busy: PathQueues,
    /// Results leave in input order (observations finish in any order).
    order: Reorder<Finished>,
    bursts: Bursts,
    scan: Option<ScanRun>,
    /// Keys touched by events since the current scan started: the scan must not override.
    touched: HashSet<Vec<u8>>,
    /// Watched directories whose entries events changed: their times and size changed with
    /// them, which is no news. Their baseline entries are brought up to date silently
    /// before the next commit, so no later scan reports them as changed.
    entries_changed: HashSet<Vec<u8>>,
    next_rescan: Option<Instant>,
    repair_wanted: bool,
    /// When the sensor's losses were last read unchanged: a gap began after it.
    losses_checked_ns: i128,
    last_commit: Instant,
    /// The backlog as last counted in telemetry.
    backlog_said: usize,
}

/// Counts the hash `result` holds, begun at `started`, if it was read now.
fn count_hash(
    telemetry: &Telemetry,
    hashing: Hashing<'_>,
    result: &Result<Option<Snapshot>, ObserveError>,
    started: Instant,
) {
    if let Some(bytes) = read_to_hash(hashing, result) {
        telemetry.emit(Internal::HashTook {
            bytes,
            micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        });
    }
}

/// The bytes read to hash what `hashing` asked for, when `result` is a digest read now (not
/// one reused from an unchanged file, nor a deferral).
fn read_to_hash(
    hashing: Hashing<'_>,
    result: &Result<Option<Snapshot>, ObserveError>,
) -> Option<u64> {
    let Ok(Some(s)) = result else { return None };
    if !matches!(s.content, Some(fim_core::attrs::Content::Sha256(_))) {
        return None;
    }
    match hashing {
        Hashing::Defer => None,
        Hashing::Reuse(Some(k))
            if k.attrs.ino == s.attrs.ino
                && k.attrs.size == s.attrs.size
                && k.attrs.mtime_ns == s.attrs.mtime_ns
                && k.attrs.ctime_ns == s.attrs.ctime_ns =>
        {
            None
        }
        _ => Some(s.attrs.size),
    }
}

impl Engine {
    /// Opens the baseline (failing if another writer holds it), starts the hashing workers
    /// and the scan that builds or reconciles the baseline.
    pub fn start(
        cfg: EngineConfig,
        watch: Arc<WatchSet>,
        output: Box<dyn Output>,
        telemetry: Arc<Telemetry>,
        namer: Option<Namer>,
    ) -> Result<Self, EngineError> {
        let baseline = Baseline::open(&cfg.state_dir, Access::Write)?;
        let workers_n = cfg.workers.max(1);
        let (jobs, job_rx) = flume::bounded::<Job>(workers_n * 2);
        let (done_tx, done) = flume::unbounded::<Done>();
        let mut workers = Vec::new();
        for i in 0..workers_n {
            let rx = job_rx.clone();
            let tx = done_tx.clone();
            let t = telemetry.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("fim-hash-{i}"))
                .spawn(move || {
                    let mut scratch = Scratch::default();
                    for job in rx.iter() {
                        let path = job.keys[0].clone();
                        let hashing = job.hashing();
                        let started = Instant::now();
                        let result = observe(&path, hashing, &job.limits, &mut scratch);
                        count_hash(&t, job.hashing(), &result, started);
                        if tx.send(Done { job, result }).is_err() {
                            break;
                        }
                    }
                });
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => warn!("starting hashing worker {i}: {e}"),
            }
        }
        let next_rescan = cfg.rescan_interval.map(|d| Instant::now() + d);
        let bursts = Bursts::new(cfg.quiet);
        let mut engine = Self {
            limits: Arc::new(cfg.limits.clone()),
            cfg,
            watch,
            namer,
            baseline,
            output,
            outbox: Vec::new(),
            found_waiting: 0,
            telemetry,
            jobs,
            done,
            workers,
            ready: VecDeque::new(),
            scratch: Scratch::default(),
            in_flight: 0,
            busy: PathQueues::default(),
            order: Reorder::default(),
            bursts,
            scan: None,
            touched: HashSet::new(),
            entries_changed: HashSet::new(),
            next_rescan,
            repair_wanted: false,
            losses_checked_ns: unix_now_ns(),
            last_commit: Instant::now(),
            backlog_said: 0,
        };
        let initial = engine.baseline.meta("initialized")?.is_none();
        if !initial {
            // Loaded: ready (`fim_baseline_entries` says so); the reconciliation goes on.
            engine.telemetry.emit(Internal::BaselineEntries {
                entries: engine.baseline.len()?,
            });
        }
        engine.start_scan(Origin::Start, initial);
        Ok(engine)
    }

    /// Runs the stage on the current thread until `input` closes. `lost_in_kernel` reports
    /// the sensor's losses; when they grow, a gap event is reported (in its turn) and a
    /// repair rescan is scheduled.
    pub fn run(
        mut self,
        input: &flume::Receiver<Input>,
        lost_in_kernel: impl Fn() -> Losses,
    ) -> Result<(), EngineError> {
        let result = self.event_loop(input, lost_in_kernel);
        self.finish();
        result
    }

    fn event_loop(
        &mut self,
        input: &flume::Receiver<Input>,
        lost_in_kernel: impl Fn() -> Losses,
    ) -> Result<(), EngineError> {
        let mut input_open = true;
        let mut lost_seen = lost_in_kernel();
        loop {
            self.stage_reports()?;
            if self.output.staged() && self.last_commit.elapsed() >= COMMIT_LATENCY {
                self.commit()?;
            }
            if !input_open && self.in_flight == 0 && self.ready.is_empty() && self.order.is_empty()
            {
                return Ok(());
            }
            // Back-pressure: while this many results wait for an earlier one (a large file
            // being hashed), stop taking events; the sensor's queue holds them, and what it
            // cannot hold is counted there and repaired by a rescan.
            let taking = input_open && self.order.len() < 4 * self.cfg.max_backlog;
            if self.order.len() != self.backlog_said {
                self.backlog_said = self.order.len();
                self.telemetry.emit(Internal::Backlog {
                    events: self.backlog_said as u64,
                });
            }
            let deadline = self.next_deadline();
            enum Msg {
                Events(Option<Input>),
                Done(Box<Done>),
                Scan(Option<Box<ScanItem>>),
                Tick,
            }
            let msg = {
                let mut sel = flume::Selector::new().recv(&self.done, |r| {
                    r.map_or(Msg::Tick, |d| Msg::Done(Box::new(d)))
                });
                if taking {
                    sel = sel.recv(input, |r| Msg::Events(r.ok()));
                }
                if let Some(s) = &self.scan {
                    sel = sel.recv(&s.items, |r| Msg::Scan(r.ok().map(Box::new)));
                }
                sel.wait_deadline(deadline).unwrap_or(Msg::Tick)
            };
            match msg {
                // A batch is taken whole (its results leave together): the back-pressure
                // above holds at most one batch more.
                Msg::Events(Some(Input::Rewatch(rewatch))) => self.rewatch(*rewatch),
                Msg::Events(Some(Input::Events(batch))) => {
                    let keys: Vec<Vec<Vec<u8>>> = batch.iter().map(|ev| self.keys(ev)).collect();
                    let pairs: Vec<(Action, &[Vec<u8>])> = batch
                        .iter()
                        .zip(&keys)
                        .map(|(ev, k)| (ev.action, k.as_slice()))
                        .collect();
                    let superseded = super::supersede::superseded(&pairs);
                    for (ev, superseded) in batch.into_iter().zip(superseded) {
                        self.accept(ev, superseded)?;
                    }
                }
                Msg::Events(None) => {
                    input_open = false;
                    // The sensor has stopped and read its counters a last time: what it
                    // lost since the last check is reported now (no repair scan follows a
                    // stop; the next start compares the disk with the baseline).
                    self.report_losses(&mut lost_seen, &lost_in_kernel);
                    if let Some(s) = &self.scan {
                        s.cancel();
                    }
                    // Settle every burst still open, so nothing is left unhashed.
                    for key in self.bursts.keys() {
                        self.settle_quiet(&key)?;
                    }
                }
                Msg::Done(done) => self.complete(*done)?,
                Msg::Scan(Some(item)) => self.scanned(*item)?,
                Msg::Scan(None) => self.scan_finished()?,
                Msg::Tick => {}
            }
            self.flush()?;
            if !input_open {
                // Drain a cancelled scan without applying it.
                if let Some(s) = self.scan.take() {
                    s.drain();
                }
                continue;
            }
            self.timers(&mut lost_seen, &lost_in_kernel)?;
        }
    }

    /// When the loop must wake without input: a quiet period ending, a commit due, a
    /// scheduled rescan, and for the sensor's loss counters as often as the sensor reads
    /// them ([`crate::sensors::HOUSEKEEPING_INTERVAL`]), which is how often it wakes idle.
    fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        let mut d = now + crate::sensors::HOUSEKEEPING_INTERVAL;
        if let Some(burst) = self.bursts.next_deadline() {
            d = d.min(burst);
        }
        if self.output.staged() {
            d = d.min(self.last_commit + COMMIT_LATENCY);
        } else if self.baseline.uncommitted() {
            d = d.min(self.last_commit + COMMIT_EVERY);
        }
        if let Some(due) = self.output.next_due() {
            d = d.min(due);
        }
        if let Some(t) = self.next_rescan {
            d = d.min(t);
        }
        d.max(now)
    }

    fn timers(
        &mut self,
        lost_seen: &mut Losses,
        lost_in_kernel: &impl Fn() -> Losses,
    ) -> Result<(), EngineError> {
        let now = Instant::now();
        for key in self.bursts.due(now) {
            self.settle_quiet(&key)?;
        }
        if self.report_losses(lost_seen, lost_in_kernel) {
            self.repair_wanted = true;
        }
        if self.scan.is_none() {
            let scheduled = self.next_rescan.is_some_and(|t| t <= now);
            if scheduled || self.repair_wanted {
                self.repair_wanted = false;
                self.next_rescan = self.cfg.rescan_interval.map(|d| now + d);
                self.start_scan(Origin::Rescan, false);
            }
        }
        if self.output.next_due().is_some_and(|due| due <= now) {
            self.output.stage_due(Some(now), &mut self.baseline)?;
        }
        if now.duration_since(self.last_commit) >= COMMIT_EVERY
            || self.baseline.pending_writes() >= LARGE_TRANSACTION
        {
            self.commit()?;
        }
        Ok(())
    }

    /// Reports a gap event (in its turn) if the sensor lost operations since the last
    /// check; true if it did.
    fn report_losses(
        &mut self,
        lost_seen: &mut Losses,
        lost_in_kernel: &impl Fn() -> Losses,
    ) -> bool {
        let lost = lost_in_kernel();
        let checked = unix_now_ns();
        let gap = lost.gap_since(lost_seen, self.losses_checked_ns, || self.roots());
        self.losses_checked_ns = checked;
        let Some(gap) = gap else {
            return false;
        };
        warn!(
            "{}{} operations lost before they were reported ({}): reporting a gap and rescanning the watched paths to repair the baseline",
            gap.operations,
            if gap.unknown_more {
                " and an unknown number of"
            } else {
                ""
            },
            gap.causes
                .iter()
                .map(|(c, n)| format!("{c}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let root = gap.roots.first().cloned().unwrap_or_else(|| b"/".to_vec());
        let mut ev = FileEvent::new(
            Action::Gap,
            ReportedPath::new(root, PathSource::Scan),
            "fim",
        );
        ev.gap = Some(Box::new(gap));
        self.emit_in_order(ev);
        *lost_seen = lost;
        true
    }

    /// The watched roots, as a gap event names them.
    fn roots(&self) -> Vec<Vec<u8>> {
        self.watch
            .scan_roots()
            .into_iter()
            .map(|r| match r {
                ScanRoot::Tree(p) | ScanRoot::Exact(p) => p,
                ScanRoot::Children { dir, .. } => dir,
            })
            .collect()
    }

    /// Hashes a burst that saw no close within the quiet period.
    fn settle_quiet(&mut self, key: &[u8]) -> Result<(), EngineError> {
        if self.busy.is_busy(key) {
            self.bursts.postpone(key);
            return Ok(());
        }
        match self.bursts.settle(key) {
            Some(ev) => self.accept(ev, false),
            None => Ok(()),
        }
    }

    /// Reports `ev` now (it goes out with the next batch).
    fn emit(&mut self, ev: FileEvent) {
        self.outbox.push(ev);
    }

    /// Stages what was reported since the last call in the output (the baseline's open
    /// transaction).
    fn stage_reports(&mut self) -> Result<(), EngineError> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        self.output
            .stage(std::mem::take(&mut self.outbox), &mut self.baseline)?;
        Ok(())
    }

    /// Commits the baseline with the reports of its changes, then hands the reports out.
    /// Waits while a scan's finding whose change is written waits for its turn.
    fn commit(&mut self) -> Result<(), EngineError> {
        if self.found_waiting > 0 {
            return Ok(());
        }
        self.stage_reports()?;
        self.refresh_directories()?;
        self.baseline.commit()?;
        self.last_commit = Instant::now();
        if !self.output.publish(&mut self.baseline)? {
            return Err(EngineError::OutputClosed);
        }
        Ok(())
    }

    /// Reports `ev` in its turn (after every event that came in before it).
    fn emit_in_order(&mut self, ev: FileEvent) {
        let ticket = self.order.ticket();
        self.order.fill(ticket, Finished::Emit(Box::new(ev)));
    }

    /// Reports a scan's finding, whose baseline change is written, in its turn; no commit
    /// happens until it is staged.
    fn emit_found(&mut self, ev: FileEvent) {
        self.found_waiting += 1;
        let ticket = self.order.ticket();
        self.order.fill(ticket, Finished::Found(Box::new(ev)));
    }

    /// Applies and reports every result whose turn has come.
    fn flush(&mut self) -> Result<(), EngineError> {
        while let Some((_, finished)) = self.order.next_ready() {
            match finished {
                Finished::Observed(done) => {
                    let Done { job, result } = *done;
                    self.apply(job, result)?;
                }
                Finished::Forget(ev, key) => self.forget(*ev, &key)?,
                Finished::Emit(ev) => self.emit(*ev),
                Finished::Found(ev) => {
                    self.found_waiting -= 1;
                    self.emit(*ev);
                }
            }
        }
        Ok(())
    }

    fn keys(&self, ev: &FileEvent) -> Vec<Vec<u8>> {
        let mut keys = vec![self.watch.canonical(&ev.path.bytes)];
        if ev.action == Action::Rename
            && let Some(src) = &ev.source
        {
            keys.push(self.watch.canonical(&src.bytes));
        }
        keys
    }

    /// The last known state of `key`: the burst's last observation, or the baseline's.
    fn last_known(&self, key: &[u8]) -> Result<Option<Snapshot>, EngineError> {
        Ok(enrich::last_known(&self.bursts, &self.baseline, key)?)
    }

    /// Takes one event in: it gets its place in the output order, then runs now or queues
    /// behind the job holding its path.
    fn accept(&mut self, ev: FileEvent, superseded: bool) -> Result<(), EngineError> {
        if changes_entries(ev.action) {
            for key in self.keys(&ev) {
                let parent = parent_of(&key);
                self.touched.insert(parent.clone());
                self.entries_changed.insert(parent);
            }
        }
        let ticket = self.order.ticket();
        self.accept_group(ticket, ev, Vec::new(), superseded)
    }

    /// Like [`Self::accept`] for an event that already has its ticket, with followers that
    /// share the observation.
    fn accept_group(
        &mut self,
        ticket: Ticket,
        ev: FileEvent,
        followers: Vec<(Ticket, FileEvent)>,
        superseded: bool,
    ) -> Result<(), EngineError> {
        let keys = self.keys(&ev);
        if self.scan.is_some() {
            self.touched.extend(keys.iter().cloned());
        }
        if let Some(k) = self.busy.holder(&keys) {
            if self.busy.queued() >= self.cfg.max_backlog {
                self.pass_unenriched(ticket, ev);
                for (t, f) in followers {
                    self.pass_unenriched(t, f);
                }
                return Ok(());
            }
            let k = k.clone();
            self.busy.wait_behind(&k, ticket, ev, followers);
            return Ok(());
        }
        let in_burst = self.bursts.contains(&keys[0]);
        let step = step_for(ev.action, in_burst);
        match step {
            Step::Defer => self.bursts.extend(&keys[0], &ev),
            Step::Settle | Step::Forget => self.bursts.end(&keys[0]),
            Step::Move => {
                if let Some(old) = keys.get(1) {
                    self.bursts.moved(old, &keys[0]);
                }
            }
            Step::Metadata => {}
        }
        if step == Step::Forget {
            let key = keys[0].clone();
            self.order
                .fill(ticket, Finished::Forget(Box::new(ev), key.clone()));
            for (t, f) in followers {
                self.accept_group(t, f, Vec::new(), false)?;
            }
            return Ok(());
        }
        // Only to decide whether a digest can be reused; "before" is read when the result
        // is applied, in order.
        let prev = match step {
            _ if superseded => None,
            Step::Move => match keys.get(1) {
                Some(old) => self.baseline.get(old)?,
                None => None,
            },
            _ => self.baseline.get(&keys[0])?,
        };
        if self.ready.len() + self.in_flight >= self.cfg.max_backlog {
            self.pass_unenriched(ticket, ev);
            for (t, f) in followers {
                self.pass_unenriched(t, f);
            }
            return Ok(());
        }
        self.busy.hold(&keys);
        self.submit(Job {
            ticket,
            limits: self.limits.clone(),
            keys,
            event: ev,
            step,
            prev,
            followers,
            superseded,
        })
    }

    fn submit(&mut self, job: Job) -> Result<(), EngineError> {
        self.in_flight += 1;
        if job.superseded {
            return self.complete(Done {
                job,
                result: Ok(None),
            });
        }
        // Metadata, a reused digest or a small file: observed here, without handing the job
        // to a worker and its result back (two thread wakeups, more than the work itself).
        // Only a file that must be hashed and is larger goes to a worker.
        let started = Instant::now();
        match observe_within(
            &job.keys[0],
            job.hashing(),
            &job.limits,
            &mut self.scratch,
            INLINE_HASH_BYTES,
        ) {
            Ok(Within::Observed(s)) => {
                let result = Ok(s);
                count_hash(&self.telemetry, job.hashing(), &result, started);
                return self.complete(Done { job, result });
            }
            Err(e) => {
                return self.complete(Done {
                    job,
                    result: Err(e),
                });
            }
            Ok(Within::MustHash) => {}
        }
        if !self.ready.is_empty() {
            self.ready.push_back(job);
            return Ok(());
        }
        if let Err(flume::TrySendError::Full(job) | flume::TrySendError::Disconnected(job)) =
            self.jobs.try_send(job)
        {
            self.ready.push_back(job);
        }
        Ok(())
    }

    fn pass_unenriched(&mut self, ticket: Ticket, mut ev: FileEvent) {
        let n = self.telemetry.emit(Internal::Unenriched);
        if n == 1 || n.is_power_of_two() {
            warn!(
                "integrity backlog full: {n} events passed without before/after values; a rescan will repair the baseline"
            );
        }
        self.repair_wanted = true;
        ev.integrity = Some(
            Integrity::unobserved(
                Origin::Realtime,
                Some("not enriched: integrity backlog full, repaired by rescan".into()),
            )
            .into(),
        );
        self.order.fill(ticket, Finished::Emit(Box::new(ev)));
    }

    /// Unlink/rmdir: no observation needed.
    fn forget(&mut self, mut ev: FileEvent, key: &[u8]) -> Result<(), EngineError> {
        // The last known state: the burst's last observation, or the entry just removed.
        let removed = self.baseline.remove(key)?;
        let before = self.bursts.seen(key).or(removed);
        if ev.action == Action::Rmdir {
            self.baseline.remove_below(key)?;
        }
        ev.integrity = Some(
            Integrity {
                before,
                after: None,
                changed: Vec::new(),
                origin: origin_of(&ev),
                replaced_target: false,
                note: None,
            }
            .into(),
        );
        self.emit(ev);
        Ok(())
    }

    /// An observation finished: its keys are free for what waited behind them (observed
    /// now, in order, so observations of one path follow its events); its result is
    /// applied in its turn.
    fn complete(&mut self, done: Done) -> Result<(), EngineError> {
        self.in_flight -= 1;
        while let Some(job) = self.ready.pop_front() {
            match self.jobs.try_send(job) {
                Ok(()) => {}
                Err(flume::TrySendError::Full(job) | flume::TrySendError::Disconnected(job)) => {
                    self.ready.push_front(job);
                    break;
                }
            }
        }
        let keys = done.job.keys.clone();
        let ticket = done.job.ticket;
        self.order.fill(ticket, Finished::Observed(Box::new(done)));
        let mut rest = self.busy.release(&keys).into_iter().peekable();
        while let Some((t, ev)) = rest.next() {
            let mut followers = Vec::new();
            if let Some(step) = self.shareable(&ev) {
                let key = self.watch.canonical(&ev.path.bytes);
                while let Some(next) = rest.next_if(|(_, n)| {
                    self.shareable(n) == Some(step) && self.watch.canonical(&n.path.bytes) == key
                }) {
                    followers.push(next);
                }
            }
            self.accept_group(t, ev, followers, false)?;
        }
        Ok(())
    }

    /// The step of an event that may share an observation with its neighbours on the same
    /// path: metadata changes and burst events, never renames, settles or removals.
    fn shareable(&self, ev: &FileEvent) -> Option<Step> {
        let in_burst = self.bursts.contains(&self.watch.canonical(&ev.path.bytes));
        match step_for(ev.action, in_burst) {
            s @ (Step::Metadata | Step::Defer) => Some(s),
            _ => None,
        }
    }

    fn apply(
        &mut self,
        job: Job,
        result: Result<Option<Snapshot>, ObserveError>,
    ) -> Result<(), EngineError> {
        let Job {
            keys,
            mut event,
            step,
            followers,
            superseded,
            ..
        } = job;
        let key = &keys[0];
        let mut note = None;
        let after = match result {
            Ok(a) => a,
            Err(e) => {
                self.telemetry.emit(Internal::ObservationFailed);
                note = Some(e.to_string());
                None
            }
        };
        let mut after = after;
        if let Some(a) = after.as_mut()
            && step == Step::Settle
        {
            enrich::mark_replaced(a, &event);
        }
        if after.is_none() && note.is_none() && step != Step::Forget {
            note = Some(enrich::vanished_note(superseded));
        }
        if let Some(Some(fim_core::attrs::Content::Sha256(_))) = after.as_ref().map(|a| &a.content)
            && matches!(step, Step::Settle)
        {
            self.telemetry.emit(Internal::Hashed);
        }
        if let Some(Some(fim_core::attrs::Content::NotHashed(why))) =
            after.as_ref().map(|a| &a.content)
            && matches!(step, Step::Settle)
            && let Some(reason) = why.label()
        {
            self.telemetry.emit(Internal::NotHashed { reason });
        }
        let mut replaced_target = false;
        let before = match step {
            Step::Move => {
                let old = keys.get(1).cloned().unwrap_or_default();
                let (before, replaced) =
                    enrich::apply_rename(&self.bursts, &mut self.baseline, &event, &old, key)?;
                replaced_target = replaced;
                before
            }
            _ => self.last_known(key)?,
        };
        if step == Step::Defer {
            // A new file being written is reported now and hashed when the writes settle.
            // Its entry goes in with the report, without a digest, so that after a crash
            // the next start tells its content as a change rather than the file as new
            // a second time.
            if let (None, Some(a)) = (&before, &after)
                && self.watch.matches(key)
            {
                let mut provisional = a.clone();
                if a.attrs.file_type == fim_core::attrs::FileType::File {
                    provisional.content = Some(Content::NotHashed(NotHashed::Deferred));
                }
                self.baseline.put(key, &provisional)?;
            }
        } else {
            match &after {
                Some(a) if self.watch.matches(key) => self.baseline.put(key, a)?,
                _ => {
                    self.baseline.remove(key)?;
                    if step == Step::Move {
                        self.baseline.remove_below(key)?;
                    }
                }
            }
        }
        let changed = match (&before, &after) {
            (Some(b), Some(a)) => diff(b, a),
            _ => Vec::new(),
        };
        // Within a burst, the next event's "before" is this observation (its content is
        // still the last digest known: the burst is hashed when it settles).
        if let Some(a) = &after {
            self.bursts
                .observed(key, a, before.as_ref().and_then(|b| b.content.clone()));
        }
        if let Some(a) = &after
            && event.inode.is_none()
        {
            event.inode = Some(enrich::inode_of(a));
        }
        // What the sensor could not name by itself (fanotify: an unspecific attribute
        // change, a new name of unknown type) is named from the values, on its side.
        if let Some(name) = self.namer
            && !name(&mut event, before.as_ref(), after.as_ref(), &changed)
        {
            // Not the start of a write burst after all.
            self.bursts.end(key);
        }
        let origin = origin_of(&event);
        let inode = event.inode;
        event.integrity = Some(
            Integrity {
                before,
                after: after.clone(),
                changed,
                origin,
                replaced_target,
                note,
            }
            .into(),
        );
        self.emit(event);
        let n = followers.len();
        for (ticket, mut f) in followers {
            f.inode = f.inode.or(inode);
            f.integrity = Some(enrich::shared(after.clone(), origin, n + 1).into());
            self.order.fill(ticket, Finished::Emit(Box::new(f)));
        }
        Ok(())
    }

    /// A live reload: the new watch set and limits apply to what comes after, and a scan
    /// records the newly watched roots without reporting what is already there (see
    /// [`ScanRun::start`]). A scan in progress is given up (it walked the old set); a
    /// start-up or scheduled one is started again on the new set, so nothing it was to
    /// check goes unchecked.
    fn rewatch(&mut self, rewatch: Rewatch) {
        let Rewatch { watch, limits } = rewatch;
        self.watch = watch;
        self.limits = Arc::new(limits.clone());
        self.cfg.limits = limits;
        // A start-up scan given up is started again, for the same purpose: a first one
        // still records everything silently.
        let (origin, initial) = match self.scan.take() {
            Some(s) => {
                let again = (s.origin != Origin::Reload).then_some((s.origin, s.initial));
                s.drain();
                again.unwrap_or((Origin::Reload, false))
            }
            None => (Origin::Reload, false),
        };
        self.start_scan(origin, initial);
    }

    /// Brings the baseline entries of the directories whose entries events changed up to
    /// date (see `entries_changed`); one with an observation in flight waits for the next
    /// time.
    fn refresh_directories(&mut self) -> Result<(), EngineError> {
        if self.entries_changed.is_empty() {
            return Ok(());
        }
        let dirs: Vec<Vec<u8>> = self.entries_changed.drain().collect();
        for dir in dirs {
            if self.busy.is_busy(&dir) {
                self.entries_changed.insert(dir);
                continue;
            }
            if !self.watch.matches(&dir) || self.baseline.get(&dir)?.is_none() {
                continue;
            }
            // Gone or no longer a directory: its own event, or the next scan, says so.
            if let Ok(Some(now)) = observe(&dir, Hashing::Defer, &self.limits, &mut self.scratch)
                && now.attrs.file_type == fim_core::attrs::FileType::Dir
            {
                self.baseline.put(&dir, &now)?;
            }
        }
        Ok(())
    }

    fn start_scan(&mut self, origin: Origin, initial: bool) {
        if let Err(e) = self.refresh_directories() {
            warn!("bringing changed directories up to date in the baseline: {e}");
        }
        self.touched.clear();
        self.scan = ScanRun::start(&mut self.baseline, &self.watch, &self.cfg, origin, initial);
    }

    fn scanned(&mut self, item: ScanItem) -> Result<(), EngineError> {
        let ScanItem::Observed { path, snapshot } = item else {
            if let ScanItem::Failed { path, error } = item {
                self.telemetry.emit(Internal::ObservationFailed);
                warn!("scan: {}: {error}", fim_core::paths::render_bytes(&path));
                // Keep what the baseline knows rather than reporting a removal.
                self.baseline.seen(&path)?;
            }
            return Ok(());
        };
        self.baseline.seen(&path)?;
        let Some(scan) = self.scan.as_mut() else {
            return Ok(());
        };
        scan.counts.seen += 1;
        let origin = scan.origin;
        let initial = scan.records_silently(&path);
        if !self.watch.matches(&path)
            || self.touched.contains(&path)
            || self.busy.is_busy(&path)
            || self.bursts.contains(&path)
        {
            return Ok(());
        }
        let Some(after) = snapshot else {
            return Ok(());
        };
        let before = self.baseline.get(&path)?;
        self.baseline.put(&path, &after)?;
        if initial {
            return Ok(());
        }
        let Some((action, changed)) = reconcile::difference(before.as_ref(), &after) else {
            return Ok(());
        };
        if let Some(s) = self.scan.as_mut() {
            s.counts.found(action);
        }
        self.telemetry.emit(Internal::ChangeFound { action });
        let ev = found_event(action, path, before, Some(after), changed, origin);
        self.emit_found(ev);
        Ok(())
    }

    fn scan_finished(&mut self) -> Result<(), EngineError> {
        let Some(mut run) = self.scan.take() else {
            return Ok(());
        };
        if !run.cancelled() {
            // Whatever the scan did not see is gone (a partial scan saw only its roots).
            let mut unseen = Unseen::default();
            while !run.partial() {
                let batch = unseen.next_batch(&self.baseline)?;
                if batch.is_empty() {
                    break;
                }
                for (path, before) in batch {
                    if self.touched.contains(&path) || self.busy.is_busy(&path) {
                        continue;
                    }
                    self.baseline.remove(&path)?;
                    if run.initial || !self.watch.matches(&path) {
                        continue;
                    }
                    run.counts.found(Action::Removed);
                    self.telemetry.emit(Internal::ChangeFound {
                        action: Action::Removed,
                    });
                    let ev = found_event(
                        Action::Removed,
                        path,
                        Some(before),
                        None,
                        Vec::new(),
                        run.origin,
                    );
                    self.emit_found(ev);
                }
            }
            run.completed(&mut self.baseline, &self.watch)?;
            self.commit()?;
            self.telemetry.emit(Internal::ScanTook {
                origin: run.origin,
                micros: u64::try_from(run.elapsed().as_micros()).unwrap_or(u64::MAX),
            });
            self.telemetry.emit(Internal::BaselineEntries {
                entries: self.baseline.len()?,
            });
            // A scan's channels and buffers held thousands of entries: give them back.
            crate::memory::give_back();
            self.telemetry
                .emit(Internal::ScanCompleted { origin: run.origin });
        }
        self.touched.clear();
        Ok(())
    }

    fn finish(&mut self) {
        if let Some(s) = self.scan.take() {
            s.drain();
        }
        let staged = self
            .stage_reports()
            .and_then(|()| Ok(self.output.stage_due(None, &mut self.baseline)?));
        if let Err(e) = staged.and_then(|()| self.commit()) {
            warn!("committing the baseline: {e}");
        }
        // Closing the job channel ends the workers.
        let (closed, _) = flume::bounded(1);
        self.jobs = closed;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Whether `action` adds or removes a directory entry (its directory's times change).
fn changes_entries(action: Action) -> bool {
    matches!(
        action,
        Action::Create
            | Action::Unlink
            | Action::Mkdir
            | Action::Rmdir
            | Action::Rename
            | Action::Link
            | Action::Symlink
            | Action::Mknod
    )
}

/// The directory holding `path` (`/` for a name at the top).
fn parent_of(path: &[u8]) -> Vec<u8> {
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) | None => b"/".to_vec(),
        Some(i) => path[..i].to_vec(),
    }
}

fn origin_of(ev: &FileEvent) -> Origin {
    match ev.integrity.as_ref() {
        Some(i) => i.origin,
        None => Origin::Realtime,
    }
}
