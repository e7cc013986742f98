//! The daemon's integrity stage: takes sensor events, observes the files they touched
//! (attributes, digest) in a worker pool, reports before/after values, and keeps the
//! baseline current. It also reconciles the baseline with the disk at start, rescans on a
//! schedule and after lost events, and reports what those scans find.
//!
//! It runs on its own thread because it owns the SQLite connection. Event intake never
//! waits for hashing: observations run in the pool, events for a path whose observation is
//! in flight queue behind it (so per-path order holds), and a burst of writes is hashed once,
//! on close-after-write or after the quiet period. When the backlog reaches its limit, events
//! pass through unenriched with a note, are counted, and a rescan repairs the baseline.
//!
//! Input: [`FileEvent`]s from the sensor; output: the same events with
//! [`FileEvent::integrity`] filled, plus events found by scans.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use log::{info, warn};
use tokio::sync::mpsc;

use fim_core::{
    attrs::{Attr, Snapshot, diff},
    baseline::{Access, Baseline, BaselineError},
};

use super::{
    observe::{Hashing, Limits, ObserveError, Scratch, Within, observe, observe_within},
    order::{Reorder, Ticket},
    scan::{ScanItem, ScanOptions, scan},
};
use fim_core::{
    event::{
        Action, FileEvent, InodeRef, Integrity, Losses, Origin, PathSource, ReportedPath,
        unix_now_ns,
    },
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

/// Counters the daemon reports at exit (and, later, as metrics).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Events passed through without enrichment because the backlog was full.
    pub unenriched: AtomicU64,
    /// Files hashed.
    pub hashed: AtomicU64,
    /// Changes found by scans (start, scheduled, repair).
    pub found: AtomicU64,
    /// Observations that failed.
    pub errors: AtomicU64,
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

/// What to do for one event (pure: depends only on the action and the burst state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Part of a write burst: report metadata now, hash later.
    Defer,
    /// Observe with a fresh digest and store the result.
    Settle,
    /// Observe, reusing the digest when the file's version is unchanged, and store.
    Metadata,
    /// The name is gone: report and forget it.
    Forget,
    /// Move the baseline entry (and subtree), then observe the new name.
    Move,
}

fn step_for(action: Action, in_burst: bool) -> Step {
    match action {
        Action::Create | Action::OpenWrite | Action::Write => Step::Defer,
        Action::Truncate if in_burst => Step::Defer,
        Action::CloseWrite | Action::Truncate | Action::Modified | Action::Fallocate => {
            Step::Settle
        }
        Action::Unlink | Action::Rmdir | Action::Removed => Step::Forget,
        Action::Rename => Step::Move,
        Action::Chmod
        | Action::Utimes
        | Action::Attrib
        | Action::Chown
        | Action::SetXattr
        | Action::RemoveXattr
        | Action::Link
        | Action::Symlink
        | Action::Mknod
        | Action::Mkdir
        | Action::Added
        | Action::Changed => Step::Metadata,
        // Never accepted: the engine makes gap events itself and emits them in their turn.
        Action::Gap => Step::Metadata,
    }
}

/// Largest file the engine hashes on its own thread (about 30 µs of SHA-256); larger ones go
/// to a hashing worker, so one large file does not hold up the events behind it.
const INLINE_HASH_BYTES: u64 = 64 * 1024;

/// How often the baseline's changes are committed, at most.
const COMMIT_EVERY: Duration = Duration::from_millis(200);

/// `RENAME_EXCHANGE`.
const RENAME_EXCHANGE: u32 = 2;

struct Job {
    /// The event's place in the engine's input order.
    ticket: Ticket,
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
}

struct Dirty {
    deadline: Instant,
    last: FileEvent,
    /// The last observation during the burst, with the baseline's digest (the burst's
    /// content is hashed when it settles): the "before" of the burst's next event, so a
    /// chmod right after a create says what it changed.
    seen: Option<Snapshot>,
}

/// A scan in progress, feeding the engine.
struct ScanRun {
    origin: Origin,
    started: Instant,
    /// Empty baseline: record silently instead of reporting.
    initial: bool,
    /// Roots watched for the first time: their paths are recorded silently too (adding a
    /// watch path must not flood the SIEM with "added" for everything already there).
    quiet: Vec<ScanRoot>,
    cancel: Arc<AtomicBool>,
    items: flume::Receiver<ScanItem>,
    counts: [u64; 4],
}

/// The integrity stage, started (baseline open, first scan running) but not yet consuming.
pub struct Engine {
    cfg: EngineConfig,
    watch: Arc<WatchSet>,
    baseline: Baseline,
    output: mpsc::Sender<Vec<FileEvent>>,
    /// Events reported since the last send: sent as one batch per turn of the loop, so the
    /// sink wakes once per batch rather than once per event.
    outbox: Vec<FileEvent>,
    stats: Arc<EngineStats>,
    jobs: flume::Sender<Job>,
    done: flume::Receiver<Done>,
    workers: Vec<std::thread::JoinHandle<()>>,
    /// Jobs waiting for a free worker.
    ready: VecDeque<Job>,
    /// Buffers for the observations made on this thread (all but large files to hash).
    scratch: Scratch,
    in_flight: usize,
    /// Keys with a job in flight, and the events waiting behind it.
    busy: HashMap<Vec<u8>, VecDeque<(Ticket, FileEvent)>>,
    /// Results leave in input order (observations finish in any order).
    order: Reorder<Finished>,
    queued: usize,
    dirty: HashMap<Vec<u8>, Dirty>,
    scan: Option<ScanRun>,
    /// Keys touched by events since the current scan started: the scan must not override.
    touched: HashSet<Vec<u8>>,
    next_rescan: Option<Instant>,
    repair_wanted: bool,
    /// When the sensor's losses were last read unchanged: a gap began after it.
    losses_checked_ns: i128,
    last_commit: Instant,
}

impl Engine {
    /// Opens the baseline (failing if another writer holds it), starts the hashing workers
    /// and the scan that builds or reconciles the baseline.
    pub fn start(
        cfg: EngineConfig,
        watch: Arc<WatchSet>,
        output: mpsc::Sender<Vec<FileEvent>>,
        stats: Arc<EngineStats>,
    ) -> Result<Self, EngineError> {
        let baseline = Baseline::open(&cfg.state_dir, Access::Write)?;
        let workers_n = cfg.workers.max(1);
        let (jobs, job_rx) = flume::bounded::<Job>(workers_n * 2);
        let (done_tx, done) = flume::unbounded::<Done>();
        let mut workers = Vec::new();
        for i in 0..workers_n {
            let rx = job_rx.clone();
            let tx = done_tx.clone();
            let limits = cfg.limits;
            let spawned = std::thread::Builder::new()
                .name(format!("fim-hash-{i}"))
                .spawn(move || {
                    let mut scratch = Scratch::default();
                    for job in rx.iter() {
                        let path = job.keys[0].clone();
                        let hashing = job.hashing();
                        let result = observe(&path, hashing, &limits, &mut scratch);
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
        let mut engine = Self {
            cfg,
            watch,
            baseline,
            output,
            outbox: Vec::new(),
            stats,
            jobs,
            done,
            workers,
            ready: VecDeque::new(),
            scratch: Scratch::default(),
            in_flight: 0,
            busy: HashMap::new(),
            order: Reorder::default(),
            queued: 0,
            dirty: HashMap::new(),
            scan: None,
            touched: HashSet::new(),
            next_rescan,
            repair_wanted: false,
            losses_checked_ns: unix_now_ns(),
            last_commit: Instant::now(),
        };
        let initial = engine.baseline.meta("initialized")?.is_none();
        engine.start_scan(Origin::Start, initial);
        Ok(engine)
    }

    /// Runs the stage on the current thread until `input` closes. `lost_in_kernel` reports
    /// the sensor's losses; when they grow, a gap event is reported (in its turn) and a
    /// repair rescan is scheduled.
    pub fn run(
        mut self,
        input: &flume::Receiver<Vec<FileEvent>>,
        lost_in_kernel: impl Fn() -> Losses,
    ) -> Result<(), EngineError> {
        let result = self.event_loop(input, lost_in_kernel);
        self.finish();
        result
    }

    fn event_loop(
        &mut self,
        input: &flume::Receiver<Vec<FileEvent>>,
        lost_in_kernel: impl Fn() -> Losses,
    ) -> Result<(), EngineError> {
        let mut input_open = true;
        let mut lost_seen = lost_in_kernel();
        loop {
            self.send_outbox()?;
            if !input_open && self.in_flight == 0 && self.ready.is_empty() && self.order.is_empty()
            {
                return Ok(());
            }
            // Back-pressure: while this many results wait for an earlier one (a large file
            // being hashed), stop taking events; the sensor's queue holds them, and what it
            // cannot hold is counted there and repaired by a rescan.
            let taking = input_open && self.order.len() < 4 * self.cfg.max_backlog;
            let deadline = self.next_deadline();
            enum Msg {
                Events(Option<Vec<FileEvent>>),
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
                Msg::Events(Some(batch)) => {
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
                        s.cancel.store(true, Ordering::Relaxed);
                    }
                    // Settle every burst still open, so nothing is left unhashed.
                    let keys: Vec<Vec<u8>> = self.dirty.keys().cloned().collect();
                    for key in keys {
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
                    while s.items.recv().is_ok() {}
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
        for dirty in self.dirty.values() {
            d = d.min(dirty.deadline);
        }
        if self.baseline.uncommitted() {
            d = d.min(self.last_commit + COMMIT_EVERY);
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
        let due: Vec<Vec<u8>> = self
            .dirty
            .iter()
            .filter(|(_, d)| d.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
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
        if now.duration_since(self.last_commit) >= COMMIT_EVERY {
            self.baseline.commit()?;
            self.last_commit = now;
        } else {
            self.baseline.commit_if_large()?;
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
        if self.busy.contains_key(key) {
            if let Some(d) = self.dirty.get_mut(key) {
                d.deadline = Instant::now() + self.cfg.quiet;
            }
            return Ok(());
        }
        let Some(d) = self.dirty.remove(key) else {
            return Ok(());
        };
        let mut ev = d.last;
        ev.action = Action::Modified;
        ev.time_unix_ns = unix_now_ns();
        ev.bytes_written = None;
        ev.syscall_nr = None;
        self.accept(ev, false)
    }

    /// Reports `ev` now (it goes out with the next batch).
    fn emit(&mut self, ev: FileEvent) {
        self.outbox.push(ev);
    }

    /// Sends what was reported since the last send, as one batch (blocking while the sink
    /// is full: back-pressure).
    fn send_outbox(&mut self) -> Result<(), EngineError> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        self.output
            .blocking_send(std::mem::take(&mut self.outbox))
            .map_err(|_| EngineError::OutputClosed)
    }

    /// Reports `ev` in its turn (after every event that came in before it).
    fn emit_in_order(&mut self, ev: FileEvent) {
        let ticket = self.order.ticket();
        self.order.fill(ticket, Finished::Emit(Box::new(ev)));
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
        if let Some(seen) = self.dirty.get(key).and_then(|d| d.seen.clone()) {
            return Ok(Some(seen));
        }
        Ok(self.baseline.get(key)?)
    }

    /// Takes one event in: it gets its place in the output order, then runs now or queues
    /// behind the job holding its path.
    fn accept(&mut self, ev: FileEvent, superseded: bool) -> Result<(), EngineError> {
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
        if let Some(k) = keys.iter().find(|k| self.busy.contains_key(*k)) {
            if self.queued >= self.cfg.max_backlog {
                self.pass_unenriched(ticket, ev);
                for (t, f) in followers {
                    self.pass_unenriched(t, f);
                }
                return Ok(());
            }
            if let Some(q) = self.busy.get_mut(k) {
                self.queued += 1 + followers.len();
                q.push_back((ticket, ev));
                q.extend(followers);
            }
            return Ok(());
        }
        let in_burst = self.dirty.contains_key(&keys[0]);
        let step = step_for(ev.action, in_burst);
        match step {
            Step::Defer => {
                // The quiet period runs from the burst's first event; the last one is kept
                // for attribution.
                let deadline = Instant::now() + self.cfg.quiet;
                self.dirty
                    .entry(keys[0].clone())
                    .and_modify(|d| d.last = ev.clone())
                    .or_insert_with(|| Dirty {
                        deadline,
                        last: ev.clone(),
                        seen: None,
                    });
            }
            Step::Settle | Step::Forget => {
                self.dirty.remove(&keys[0]);
            }
            Step::Move => {
                if let Some(old) = keys.get(1)
                    && let Some(d) = self.dirty.remove(old)
                {
                    self.dirty.insert(keys[0].clone(), d);
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
        for k in &keys {
            self.busy.insert(k.clone(), VecDeque::new());
        }
        self.submit(Job {
            ticket,
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
        match observe_within(
            &job.keys[0],
            job.hashing(),
            &self.cfg.limits,
            &mut self.scratch,
            INLINE_HASH_BYTES,
        ) {
            Ok(Within::Observed(s)) => return self.complete(Done { job, result: Ok(s) }),
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
        let n = self.stats.unenriched.fetch_add(1, Ordering::Relaxed) + 1;
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
        let before = self.dirty.get(key).and_then(|d| d.seen.clone()).or(removed);
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
        let mut waiting = Vec::new();
        for k in &keys {
            if let Some(q) = self.busy.remove(k) {
                self.queued -= q.len();
                waiting.extend(q);
            }
        }
        waiting.sort_by_key(|(t, _)| *t);
        let mut rest = waiting.into_iter().peekable();
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
        let in_burst = self
            .dirty
            .contains_key(&self.watch.canonical(&ev.path.bytes));
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
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                note = Some(e.to_string());
                None
            }
        };
        let mut after = after;
        // The kernel named the inode it acted on; another file under the name now means
        // the file was replaced before it could be hashed.
        if let (Some(a), Some(inode)) = (after.as_mut(), event.inode)
            && step == Step::Settle
            && event.path.source == PathSource::KernelObject
            && a.attrs.ino != inode.ino
            && a.content.is_some()
        {
            a.content = Some(fim_core::attrs::Content::NotHashed(
                fim_core::attrs::NotHashed::Replaced,
            ));
        }
        if after.is_none() && note.is_none() && step != Step::Forget {
            note = Some(if superseded {
                "vanished or replaced before it could be observed: a later operation in the \
                 same batch removed or rebound this name"
                    .into()
            } else {
                "vanished before it could be observed".into()
            });
        }
        if let Some(Some(fim_core::attrs::Content::Sha256(_))) = after.as_ref().map(|a| &a.content)
            && matches!(step, Step::Settle)
        {
            self.stats.hashed.fetch_add(1, Ordering::Relaxed);
        }
        let mut replaced_target = false;
        let before = match step {
            Step::Move => {
                let old = keys.get(1).cloned().unwrap_or_default();
                if event.rename_flags & RENAME_EXCHANGE != 0 {
                    let b = self.last_known(key)?;
                    self.baseline.exchange(&old, key)?;
                    b
                } else {
                    let moved = self.last_known(&old)?;
                    let replaced = self.baseline.rename(&old, key)?;
                    replaced_target = replaced.is_some();
                    replaced.or(moved)
                }
            }
            _ => self.last_known(key)?,
        };
        if step != Step::Defer {
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
        if let Some(d) = self.dirty.get_mut(key.as_slice())
            && let Some(a) = &after
        {
            let mut seen = a.clone();
            seen.content = before.as_ref().and_then(|b| b.content.clone());
            d.seen = Some(seen);
        }
        if let Some(a) = &after
            && event.inode.is_none()
        {
            event.inode = Some(InodeRef {
                ino: a.attrs.ino,
                major: a.attrs.dev_major,
                minor: a.attrs.dev_minor,
                mode: a.attrs.mode | a.attrs.file_type.mode_bits(),
            });
        }
        if event.action == Action::Attrib {
            event.action = name_attrib(&changed, before.as_ref(), after.as_ref());
        }
        // fanotify reports every new name as a create: a symlink or a special file is
        // told by its type (a sensor that saw the file can have said so already).
        if event.action == Action::Create
            && event.path.source == PathSource::FileHandle
            && let Some(a) = &after
        {
            use fim_core::attrs::FileType as T;
            match a.attrs.file_type {
                T::Symlink => {
                    event.action = Action::Symlink;
                    event.source = a.attrs.symlink_target.clone().map(|t| ReportedPath {
                        bytes: t,
                        source: PathSource::FileHandle,
                        truncated: false,
                    });
                }
                T::Fifo | T::Socket | T::CharDevice | T::BlockDevice => {
                    event.action = Action::Mknod
                }
                _ => {}
            }
            if event.action != Action::Create || a.attrs.file_type != T::File {
                // Not the start of a write burst after all.
                self.dirty.remove(key);
            }
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
            f.integrity = Some(
                Integrity {
                    before: after.clone(),
                    after: after.clone(),
                    changed: Vec::new(),
                    origin,
                    replaced_target: false,
                    note: Some(format!(
                        "observed once for {} events on this path; values are after the last",
                        n + 1
                    )),
                }
                .into(),
            );
            self.order.fill(ticket, Finished::Emit(Box::new(f)));
        }
        Ok(())
    }

    fn start_scan(&mut self, origin: Origin, initial: bool) {
        let roots = self.watch.scan_roots();
        // Roots the baseline has not seen before (none known: an older baseline, report all).
        let known: Option<Vec<String>> = self
            .baseline
            .meta("roots")
            .ok()
            .flatten()
            .map(|m| m.lines().map(str::to_owned).collect());
        let quiet: Vec<ScanRoot> = match (&known, initial) {
            (Some(known), false) => roots
                .iter()
                .filter(|r| !known.contains(&r.describe()))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        if !quiet.is_empty() {
            info!(
                "newly watched, recorded without reporting what is already there: {}",
                quiet
                    .iter()
                    .map(ScanRoot::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let opts = ScanOptions {
            threads: self.cfg.workers.max(1),
            limits: self.cfg.limits,
            reuse_from: (!initial).then(|| self.cfg.state_dir.clone()),
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = flume::bounded(1024);
        let flag = cancel.clone();
        let spawned = std::thread::Builder::new()
            .name("fim-scan".into())
            .spawn(move || {
                scan(&roots, &opts, &flag, |item| {
                    let _ = tx.send(item);
                })
            });
        if let Err(e) = spawned {
            warn!("starting a scan of the watched paths: {e}");
            return;
        }
        if let Err(e) = self.baseline.scan_begin() {
            warn!("starting a scan of the watched paths: {e}");
            cancel.store(true, Ordering::Relaxed);
        }
        self.touched.clear();
        self.scan = Some(ScanRun {
            origin,
            started: Instant::now(),
            initial,
            quiet,
            cancel,
            items: rx,
            counts: [0; 4],
        });
    }

    fn scanned(&mut self, item: ScanItem) -> Result<(), EngineError> {
        let ScanItem::Observed { path, snapshot } = item else {
            if let ScanItem::Failed { path, error } = item {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
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
        scan.counts[0] += 1;
        let origin = scan.origin;
        let initial = scan.initial || scan.quiet.iter().any(|r| r.covers(&path));
        if !self.watch.matches(&path)
            || self.touched.contains(&path)
            || self.busy.contains_key(&path)
            || self.dirty.contains_key(&path)
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
        let (action, changed) = match &before {
            None => (Action::Added, Vec::new()),
            Some(b) => {
                let changed = diff(b, &after);
                if changed.is_empty() {
                    return Ok(());
                }
                (Action::Changed, changed)
            }
        };
        if let Some(s) = self.scan.as_mut() {
            s.counts[if action == Action::Added { 1 } else { 3 }] += 1;
        }
        self.stats.found.fetch_add(1, Ordering::Relaxed);
        let ev = found_event(action, path, before, Some(after), changed, origin);
        self.emit_in_order(ev);
        Ok(())
    }

    fn scan_finished(&mut self) -> Result<(), EngineError> {
        let Some(run) = self.scan.take() else {
            return Ok(());
        };
        let mut run = run;
        if !run.cancel.load(Ordering::Relaxed) {
            // Whatever the scan did not see is gone.
            let mut after = Vec::new();
            loop {
                let batch = self.baseline.unseen(&after, 512)?;
                let Some((last, _)) = batch.last() else {
                    break;
                };
                after = last.clone();
                for (path, before) in batch {
                    if self.touched.contains(&path) || self.busy.contains_key(&path) {
                        continue;
                    }
                    self.baseline.remove(&path)?;
                    if run.initial || !self.watch.matches(&path) {
                        continue;
                    }
                    run.counts[2] += 1;
                    self.stats.found.fetch_add(1, Ordering::Relaxed);
                    let ev = found_event(
                        Action::Removed,
                        path,
                        Some(before),
                        None,
                        Vec::new(),
                        run.origin,
                    );
                    self.emit_in_order(ev);
                }
            }
            if run.initial {
                self.baseline
                    .set_meta("initialized", &unix_now_ns().to_string())?;
            }
            let roots: Vec<String> = self
                .watch
                .scan_roots()
                .iter()
                .map(ScanRoot::describe)
                .collect();
            self.baseline.set_meta("roots", &roots.join("\n"))?;
            self.baseline.commit()?;
            let [seen, added, removed, changed] = run.counts;
            let secs = run.started.elapsed().as_secs_f64();
            if run.initial {
                info!("baseline built: {seen} paths in {secs:.1} s");
            } else {
                info!(
                    "{}: {seen} paths checked, {added} added, {removed} removed, {changed} changed in {secs:.1} s",
                    if run.origin == Origin::Start {
                        "reconciled"
                    } else {
                        "rescanned"
                    }
                );
            }
        }
        self.touched.clear();
        Ok(())
    }

    fn finish(&mut self) {
        if let Some(s) = self.scan.take() {
            s.cancel.store(true, Ordering::Relaxed);
            while s.items.recv().is_ok() {}
        }
        if let Err(e) = self.baseline.commit() {
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

/// What an unspecific attribute change (fanotify's `FAN_ATTRIB`, which the kernel also
/// merges: a chmod and a chown in a row can arrive as one record) was, from the values
/// before and after. A name is given only when one kind of operation explains every
/// change: an owner change (which may also clear the setuid/setgid bits), an extended
/// attribute or ACL change (ACLs also move mode bits), a mode change. Anything else, or
/// times only, stays `attrib`, with `fim.changed` saying what changed.
fn name_attrib(changed: &[Attr], before: Option<&Snapshot>, after: Option<&Snapshot>) -> Action {
    let any = |set: &[Attr]| changed.iter().any(|c| set.contains(c));
    let owner = any(&[Attr::Uid, Attr::Gid]);
    let xattr = any(&[
        Attr::Xattrs,
        Attr::AclAccess,
        Attr::AclDefault,
        Attr::Capability,
    ]);
    let mode = any(&[Attr::Mode]);
    // Mode bits a chown may clear by itself: setuid and setgid.
    let only_setid_cleared = match (before, after) {
        (Some(b), Some(a)) => {
            let (b, a) = (b.attrs.mode, a.attrs.mode);
            (b ^ a) & !0o6000 == 0 && a & !b == 0
        }
        _ => false,
    };
    match (owner, xattr, mode) {
        (true, false, false) => Action::Chown,
        (true, false, true) if only_setid_cleared => Action::Chown,
        (false, true, _) => {
            let count = |s: Option<&Snapshot>| {
                s.map_or(0, |s| {
                    let a = &s.attrs;
                    a.xattrs.len()
                        + usize::from(a.acl_access.is_some())
                        + usize::from(a.acl_default.is_some())
                        + usize::from(a.capability.is_some())
                })
            };
            if count(after) < count(before) {
                Action::RemoveXattr
            } else {
                Action::SetXattr
            }
        }
        (false, false, true) => Action::Chmod,
        _ => Action::Attrib,
    }
}

fn origin_of(ev: &FileEvent) -> Origin {
    match ev.integrity.as_ref() {
        Some(i) => i.origin,
        None => Origin::Realtime,
    }
}

/// An event for a change found by comparing the disk with the baseline.
pub fn found_event(
    action: Action,
    path: Vec<u8>,
    before: Option<Snapshot>,
    after: Option<Snapshot>,
    changed: Vec<fim_core::attrs::Attr>,
    origin: Origin,
) -> FileEvent {
    let inode = after.as_ref().or(before.as_ref()).map(|s| InodeRef {
        ino: s.attrs.ino,
        major: s.attrs.dev_major,
        minor: s.attrs.dev_minor,
        mode: s.attrs.mode | s.attrs.file_type.mode_bits(),
    });
    let mut ev = FileEvent::new(action, ReportedPath::new(path, PathSource::Scan), "scan");
    ev.inode = inode;
    ev.integrity = Some(
        Integrity {
            before,
            after,
            changed,
            origin,
            replaced_target: false,
            note: None,
        }
        .into(),
    );
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_changes_are_named_from_their_values() {
        use fim_core::attrs::{Attrs, FileType};
        let snap = |xattrs: usize| Snapshot {
            attrs: Attrs {
                file_type: FileType::File,
                size: 0,
                mode: 0,
                uid: 0,
                gid: 0,
                ino: 0,
                dev_major: 0,
                dev_minor: 0,
                nlink: 1,
                mtime_ns: 0,
                ctime_ns: 0,
                symlink_target: None,
                acl_access: None,
                acl_default: None,
                capability: None,
                xattrs: (0..xattrs).map(|i| (vec![i as u8], [0; 32])).collect(),
            },
            content: None,
        };
        let (one, two) = (snap(1), snap(2));
        let name = |c: &[Attr], b: &Snapshot, a: &Snapshot| name_attrib(c, Some(b), Some(a));
        let mut setuid = snap(1);
        setuid.attrs.mode = 0o4755;
        let mut plain = snap(1);
        plain.attrs.mode = 0o755;
        let mut private = snap(1);
        private.attrs.mode = 0o700;
        assert_eq!(
            name(&[Attr::Mode, Attr::Uid], &setuid, &plain),
            Action::Chown,
            "a chown clears setuid by itself"
        );
        assert_eq!(
            name(&[Attr::Mode, Attr::Uid], &plain, &private),
            Action::Attrib,
            "a chmod and a chown merged into one record: neither name alone is true"
        );
        assert_eq!(name(&[Attr::Uid, Attr::Xattrs], &one, &two), Action::Attrib);
        assert_eq!(
            name(&[Attr::Mode, Attr::AclAccess], &one, &two),
            Action::SetXattr
        );
        assert_eq!(name(&[Attr::Xattrs], &two, &one), Action::RemoveXattr);
        assert_eq!(name(&[Attr::Mode, Attr::Ctime], &one, &one), Action::Chmod);
        assert_eq!(name(&[Attr::Mtime], &one, &one), Action::Attrib);
    }

    #[test]
    fn bursts_are_hashed_once_at_their_end() {
        assert_eq!(step_for(Action::Create, false), Step::Defer);
        assert_eq!(step_for(Action::Write, true), Step::Defer);
        assert_eq!(step_for(Action::Truncate, true), Step::Defer);
        assert_eq!(step_for(Action::Truncate, false), Step::Settle);
        assert_eq!(step_for(Action::CloseWrite, true), Step::Settle);
        assert_eq!(step_for(Action::Modified, true), Step::Settle);
        assert_eq!(step_for(Action::Chmod, true), Step::Metadata);
        assert_eq!(step_for(Action::Rename, false), Step::Move);
        assert_eq!(step_for(Action::Unlink, true), Step::Forget);
    }
}
