//! The fanotify sensor: no eBPF needed. One notification group in FID mode
//! (`FAN_REPORT_DFID_NAME_TARGET`, `FAN_REPORT_TID`) with a filesystem mark on each file
//! system holding a watched root. The kernel reports every change from the VFS itself
//! (io_uring included) and a rename as one event with both names; names are resolved from
//! the parent directory's file handle, and events outside the watched roots are dropped here,
//! before the acting process is looked up in `/proc`.
//!
//! Why filesystem marks: per-directory marks would have to be added for every directory
//! created under a root before anything happens in it (a race a fast attacker wins), and
//! cannot report a root's own deletion. The cost is that every change on those file systems
//! reaches this task; `cargo xtask bench marks` measures it.
//!
//! Queue overflow (`FAN_Q_OVERFLOW`) is counted and logged; the integrity engine sees the
//! count grow and rescans the watched roots, reporting what changed during the gap.

pub mod identity;
pub mod naming;
pub mod record;
pub mod sys;

use std::{
    collections::{HashMap, HashSet},
    os::fd::{AsFd, OwnedFd},
    sync::{Arc, Mutex},
};

use log::{debug, info, warn};
use nix::sys::fanotify::Fanotify;
use tokio::{io::unix::AsyncFd, sync::mpsc};
use tokio_util::sync::CancellationToken;

use self::{
    identity::{DirMap, Key, Objects},
    record::{Fid, Record, info as kind},
};
use fim_core::{
    baseline::Baseline,
    event::{Action, FileEvent, PathSource, ReportedPath},
    telemetry::{Internal, LossCause, Telemetry},
    watch::{ScanRoot, WatchSet},
};

use crate::sensors::{ProcessFeed, procfs, proctable::ProcTable, seed};

/// The sensor's name in events.
pub const SENSOR_NAME: &str = "fanotify";

/// Objects of the watched trees learned by handle while running (see [`identity`]).
const OBJECTS_MAX: usize = 65_536;
/// Reads of the group per wakeup before shutdown, timers and the process table get a turn.
const READS_PER_WAKE: usize = 64;
/// Merged removals waiting for the queue to drain, at most (see the read loop).
const REMOVALS_MAX: usize = 1024;
/// Watched files marked one by one, at most (per-directory scope): each mark pins an inode
/// in kernel memory. Past it, only watched files that already have other names are marked,
/// and a write through a hard link made later to another one is seen by the tracepoint tier
/// only if it resolves the link.
const FILE_MARKS_MAX: usize = 65_536;
/// Files with a reported first write and no close yet.
const WRITING_MAX: usize = 65_536;

/// Why the sensor could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum FanotifyError {
    /// fanotify_init failed.
    #[error(
        "creating the fanotify group: {0} (fanotify with FID reporting needs root and Linux 5.17+)"
    )]
    Init(std::io::Error),
    /// A mark could not be added.
    #[error("marking the file system of `{path}` with fanotify: {source}")]
    Mark {
        /// The path whose file system was marked.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Reading the group failed.
    #[error("reading fanotify events: {0}")]
    Read(std::io::Error),
    /// Setting up the housekeeping timer.
    #[error("creating the sensor's housekeeping timer (timerfd): {0}")]
    Ticker(std::io::Error),
}

/// What the sensor knows about objects by identity, kept in event order.
struct Known {
    dirs: DirMap,
    objects: Objects,
    /// A loss made the maps unreliable: seed them again before the next batch.
    stale: bool,
}

/// What the group marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkScope {
    /// Each file system holding a watched root: every change on it reaches this task,
    /// which keeps what is watched (`--sensor fanotify`: no race with new directories, a
    /// root's own removal seen).
    Filesystem,
    /// Each directory that matters (in a watched tree, or on the way to a watched root, with
    /// its direct children) and each watched file (up to [`FILE_MARKS_MAX`]; past it, those
    /// with other names), marked one by one: unrelated activity costs nothing. A directory
    /// made later is marked when its event is read; what happens in it before is not seen
    /// by fanotify (the witness of the tracepoint tier in `auto`, which reports those
    /// operations itself).
    Directories,
}

/// A started sensor: the group exists and its marks are in place.
pub struct FanotifySensor {
    scope: MarkScope,
    /// Marks that could not be added (a directory gone meanwhile, the mark limit).
    marks_failed: u64,
    /// Watched files marked one by one ([`MarkScope::Directories`]), at most
    /// [`FILE_MARKS_MAX`].
    files_marked: usize,
    group: Fanotify,
    mounts: Vec<([i32; 2], OwnedFd)>,
    watch: Arc<WatchSet>,
    /// Where overflows and unresolved events are counted.
    telemetry: Arc<Telemetry>,
    known: Known,
    /// When the marks were placed (ns since the epoch): a file born before is not new.
    started_ns: i128,
    writing: HashSet<Vec<u8>>,
    self_pid: u32,
    /// Recent answers of [`Self::is_self`], by thread id, with when they were found.
    self_threads: std::cell::RefCell<HashMap<u32, (bool, std::time::Instant)>>,
    procs: Option<Arc<Mutex<ProcTable>>>,
    feed: Option<Box<dyn ProcessFeed>>,
    /// The baseline, read to find the watched names of an object by its inode.
    baseline: Option<Baseline>,
    /// Events carry their thread id only; the caller looks the process up for the events
    /// it keeps ([`Self::process_for`]).
    defer_processes: bool,
}

/// The group's descriptor, registered with the runtime, and the state of reading it.
pub struct Reader {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
    /// Removals the kernel merged into an earlier record wait here until what was queued
    /// before them has been read (the queue is empty), or until their name is used again.
    removals: Vec<(FileEvent, Option<Fid>)>,
}

/// The nearest existing directory at or above `path`.
fn existing_dir(path: &[u8]) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut p = path.to_vec();
    loop {
        if std::path::Path::new(std::ffi::OsStr::from_bytes(&p)).is_dir() || p == b"/" {
            return p;
        }
        match p.iter().rposition(|&b| b == b'/') {
            Some(0) | None => return b"/".to_vec(),
            Some(i) => p.truncate(i),
        }
    }
}

/// Finds each file system holding a watched root of `watch` (or, for a root that does not
/// exist yet, its nearest existing ancestor) that `mounts` does not hold yet, and adds it
/// there, marked when `scope` marks file systems.
fn mark_file_systems(
    group: &Fanotify,
    watch: &WatchSet,
    scope: MarkScope,
    mounts: &mut Vec<([i32; 2], OwnedFd)>,
) -> Result<(), FanotifyError> {
    for root in watch.scan_roots() {
        let path = match &root {
            ScanRoot::Tree(p) | ScanRoot::Exact(p) => p.clone(),
            ScanRoot::Children { dir, .. } => dir.clone(),
        };
        let dir = existing_dir(&path);
        let render = || fim_core::paths::render_bytes(&dir);
        let (fd, fsid) = sys::mount_ref(&dir).map_err(|source| FanotifyError::Mark {
            path: render(),
            source,
        })?;
        if mounts.iter().any(|(id, _)| *id == fsid) {
            continue;
        }
        if scope == MarkScope::Filesystem {
            sys::mark_filesystem(group, &dir).map_err(|source| FanotifyError::Mark {
                path: render(),
                source,
            })?;
        }
        mounts.push((fsid, fd));
    }
    Ok(())
}

/// How long an answer of `is_self` stands, and how many are kept.
const SELF_CHECK_TTL: std::time::Duration = std::time::Duration::from_secs(1);
const SELF_CHECK_MAX: usize = 4096;

impl FanotifySensor {
    /// Creates the group and marks every file system holding a watched root (or, for a
    /// root that does not exist yet, its nearest existing ancestor).
    pub fn start(watch: Arc<WatchSet>, telemetry: &Arc<Telemetry>) -> Result<Self, FanotifyError> {
        Self::start_scoped(watch, MarkScope::Filesystem, telemetry)
    }

    /// Like [`Self::start`], marking what `scope` says.
    pub fn start_scoped(
        watch: Arc<WatchSet>,
        scope: MarkScope,
        telemetry: &Arc<Telemetry>,
    ) -> Result<Self, FanotifyError> {
        let group = sys::init().map_err(FanotifyError::Init)?;
        let mut mounts: Vec<([i32; 2], OwnedFd)> = Vec::new();
        mark_file_systems(&group, &watch, scope, &mut mounts)?;
        if scope == MarkScope::Filesystem {
            info!("fanotify sensor: {} file system(s) marked", mounts.len());
        }
        debug!(
            "fanotify: marked fsids {:?}",
            mounts.iter().map(|(id, _)| *id).collect::<Vec<_>>()
        );
        let mut sensor = Self {
            scope,
            marks_failed: 0,
            files_marked: 0,
            group,
            mounts,
            watch,
            telemetry: telemetry.clone(),
            known: Known {
                dirs: DirMap::default(),
                objects: Objects::new(OBJECTS_MAX),
                stale: false,
            },
            started_ns: fim_core::event::unix_now_ns(),
            writing: HashSet::new(),
            self_pid: std::process::id(),
            self_threads: std::cell::RefCell::new(HashMap::new()),
            procs: None,
            feed: None,
            baseline: None,
            defer_processes: false,
        };
        // After the marks: a directory made from now on is seen by its event; one made
        // before is found by the walk.
        sensor.seed();
        Ok(sensor)
    }

    /// A live reload: from now on, what `watch` covers is reported. A file system it needs
    /// is marked first, then the directories of the roots it adds are learned (and, with
    /// per-directory marks, marked) before the next read. Marks the old set needed and the
    /// new one does not stay until the daemon stops: their events are dropped here, and
    /// the file systems' descriptors still resolve events queued before.
    pub fn rewatch(&mut self, watch: Arc<WatchSet>) -> Result<(), FanotifyError> {
        let before = self.mounts.len();
        mark_file_systems(&self.group, &watch, self.scope, &mut self.mounts)?;
        if self.mounts.len() > before && self.scope == MarkScope::Filesystem {
            info!(
                "fanotify sensor: {} more file system(s) marked",
                self.mounts.len() - before
            );
        }
        let added = fim_core::watch::added_roots(&self.watch.scan_roots(), &watch.scan_roots());
        self.watch = watch;
        // Only what the reload added is walked: what the old set knew stays known (a
        // directory no longer relevant is no longer reported), and a large tree watched
        // before and after is not walked again while the queue fills.
        let started = std::time::Instant::now();
        let known = self.known.dirs.len();
        let mut fsids: Vec<(u64, [i32; 2])> = Vec::new();
        seed::walk_roots(&added, |path, meta, _, root| {
            self.seed_entry(path, meta, root, &mut fsids);
        });
        info!(
            "fanotify: {} newly watched root(s), {} more directories known by handle ({:.2} s)",
            added.len(),
            self.known.dirs.len().saturating_sub(known),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Learns every directory that matters, and every watched file with other hard links,
    /// by handle, walking the watched roots (canonical spellings) and their ancestors.
    fn seed(&mut self) {
        let started = std::time::Instant::now();
        self.known.dirs.clear();
        self.known.objects.clear_learned();
        let mut fsids: Vec<(u64, [i32; 2])> = Vec::new();
        let watch = self.watch.clone();
        seed::walk(&watch, |path, meta, _, root| {
            self.seed_entry(path, meta, root, &mut fsids);
        });
        self.known.stale = false;
        info!(
            "fanotify: {} directories known by handle{} ({:.2} s)",
            self.known.dirs.len(),
            if self.scope == MarkScope::Directories {
                ", each marked"
            } else {
                ""
            },
            started.elapsed().as_secs_f64()
        );
    }

    /// One path found by the walk: a directory that matters, or a watched file with other
    /// names.
    fn seed_entry(
        &mut self,
        path: &[u8],
        meta: &std::fs::Metadata,
        root: &ScanRoot,
        fsids: &mut Vec<(u64, [i32; 2])>,
    ) {
        use std::os::unix::fs::MetadataExt;
        let dir = meta.is_dir();
        let watched_file = meta.is_file() && root.covers(path);
        // Known by handle: a watched file with other names (its events may come through
        // them), and with per-directory marks every watched file, marked on its own, since
        // a hard link made later outside the watched trees would lead its events there.
        let linked_file = watched_file
            && (meta.nlink() > 1
                || self.scope == MarkScope::Directories && self.files_marked < FILE_MARKS_MAX);
        if !(dir && self.watch.dir_relevant(path) || linked_file) {
            return;
        }
        let fsid = match fsids.iter().find(|(dev, _)| *dev == meta.dev()) {
            Some((_, id)) => *id,
            None => match sys::fsid_of(path) {
                Ok(id) => {
                    fsids.push((meta.dev(), id));
                    id
                }
                Err(_) => return,
            },
        };
        let Ok((handle_type, handle)) = sys::name_to_handle(path) else {
            return;
        };
        let key = identity::key(fsid, handle_type, &handle);
        if dir {
            self.mark(path, true);
            self.known.dirs.insert(key, path.to_vec());
        } else {
            self.mark_file(path, meta.nlink() > 1);
            self.known.objects.seed(key, path.to_vec());
        }
    }

    /// Marks watched file `path` itself (per-directory scope): within [`FILE_MARKS_MAX`], or
    /// always when it has other names (`linked`).
    fn mark_file(&mut self, path: &[u8], linked: bool) {
        if linked {
            self.mark(path, false);
        } else if self.scope == MarkScope::Directories && self.files_marked < FILE_MARKS_MAX {
            self.files_marked += 1;
            self.mark(path, false);
            if self.files_marked == FILE_MARKS_MAX {
                warn!(
                    "fanotify: {FILE_MARKS_MAX} watched files marked one by one; further ones are not (only those with other names)"
                );
            }
        }
    }

    /// Marks directory (or file) `path` itself, when marks are per directory. A failure is
    /// counted and logged (the first, then every power of two), not fatal: the directory may
    /// be gone already.
    fn mark(&mut self, path: &[u8], dir: bool) {
        if self.scope != MarkScope::Directories {
            return;
        }
        if let Err(e) = sys::mark_inode(&self.group, path, dir) {
            self.marks_failed += 1;
            if self.marks_failed.is_power_of_two() {
                warn!(
                    "fanotify: marking `{}`: {e} ({} marks failed so far)",
                    fim_core::paths::render_bytes(path),
                    self.marks_failed
                );
            }
        }
    }

    /// Learns everything below directory `dir` (moved into the watched trees).
    fn seed_below(&mut self, dir: &[u8]) {
        let root = ScanRoot::Tree(dir.to_vec());
        let mut fsids = Vec::new();
        seed::below(dir, &root, &mut |path, meta, _, root| {
            self.seed_entry(path, meta, root, &mut fsids);
        });
    }

    /// Finds the watched names of objects by inode in `baseline` (read-only), so a hard link
    /// made outside the watched trees to a watched file is followed from its first event.
    pub fn with_baseline(mut self, baseline: Baseline) -> Self {
        self.baseline = Some(baseline);
        self
    }

    /// A new name outside the watched trees for an object not known by handle: if it is a
    /// regular file with several links whose inode the baseline holds under a watched
    /// name, it is a watched file, known by handle from now on (in event order, before the
    /// operations made through the new name).
    fn identify(&mut self, target: &Fid) -> Option<Vec<u8>> {
        let baseline = self.baseline.as_ref()?;
        let fd = sys::open_handle(self.mount_for(target)?, target.handle_type, &target.handle)?;
        let st = sys::stat_fd(&fd).ok()?;
        if st.mode & libc::S_IFMT != libc::S_IFREG || st.nlink < 2 {
            return None;
        }
        let paths = match baseline.paths_of_inode(st.dev.0, st.dev.1, st.ino) {
            Ok(p) => p,
            Err(e) => {
                warn!("fanotify: looking up an inode in the baseline: {e}");
                return None;
            }
        };
        let watched = paths.into_iter().find(|p| self.watch.matches(p))?;
        self.known
            .objects
            .learn(Self::key_of(target), watched.clone());
        Some(watched)
    }

    /// Attributes events from `table` before `/proc`; `feed` (the eBPF process-table
    /// programs) is brought up to date before each batch of events is attributed, so every
    /// exec, fork, rename, cgroup move and exit that came before the operations is known.
    pub fn with_process_table(
        mut self,
        table: Arc<Mutex<ProcTable>>,
        feed: Option<Box<dyn ProcessFeed>>,
    ) -> Self {
        self.procs = Some(table);
        self.feed = feed;
        self
    }

    /// Events carry their thread id only: the caller keeps few of them and looks up the
    /// process of those with [`Self::process_for`].
    pub fn with_deferred_processes(mut self) -> Self {
        self.defer_processes = true;
        self
    }

    fn table_get(&self, tid: u32) -> Option<(fim_core::event::Process, bool)> {
        self.procs.as_ref()?.lock().ok()?.get(tid)
    }

    /// The acting task: an exact process-table entry, else `/proc`, else an inexact entry
    /// (a forked child's copy of its parent), else "exited".
    pub fn process_for(&self, tid: u32) -> fim_core::event::Process {
        let known = self.table_get(tid);
        if let Some((p, true)) = &known {
            return p.clone();
        }
        let p = procfs::lookup(tid);
        if !p.exited {
            if let Some(t) = &self.procs
                && let Ok(mut t) = t.lock()
            {
                t.remember(&p);
            }
            return p;
        }
        known.map_or(p, |(p, _)| p)
    }

    /// Reads events until `shutdown`, then drains what is queued and closes `tx`.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<FileEvent>,
        mut rewatch: crate::sensors::Rewatches,
        shutdown: CancellationToken,
    ) -> Result<(), FanotifyError> {
        let mut reader = self.reader()?;
        // Keeps the process table current (and its kernel ring drained) when no file
        // events come.
        let tick = crate::sensors::ticker::Ticker::new(crate::sensors::HOUSEKEEPING_INTERVAL)
            .map_err(FanotifyError::Ticker)?;
        let mut events = Vec::new();
        let mut more = false;
        let mut heartbeat = crate::sensors::Heartbeat::default();
        loop {
            heartbeat.beat(&self.telemetry);
            let stopping = tokio::select! {
                _ = shutdown.cancelled() => true,
                r = Self::readable(&reader), if !more => {
                    r?;
                    false
                }
                // A flood outlasted one wakeup's reads, and their readiness is consumed.
                () = tokio::task::yield_now(), if more => false,
                () = tick.tick() => {
                    self.tick();
                    false
                }
                r = rewatch.next() => {
                    crate::sensors::answer(r, |watch| Ok(self.rewatch(watch.clone())?));
                    false
                }
            };
            more = !self.read_some(&mut reader, &mut events)?;
            if stopping {
                self.stop(&mut reader, &mut events)?;
            }
            for ev in events.drain(..) {
                if tx.send(ev).await.is_err() {
                    return Ok(());
                }
            }
            if stopping {
                return Ok(());
            }
            if let Some(r) = rewatch.try_next() {
                crate::sensors::answer(r, |watch| Ok(self.rewatch(watch.clone())?));
            }
        }
    }

    /// The group's descriptor, ready to be waited on.
    pub fn reader(&self) -> Result<Reader, FanotifyError> {
        let group = self
            .group
            .as_fd()
            .try_clone_to_owned()
            .map_err(FanotifyError::Read)?;
        // SAFETY: the AsyncFd owns this duplicate descriptor for its whole life.
        let fd = unsafe { AsyncFd::register_with_interest(group, tokio::io::Interest::READABLE) }
            .map_err(|e| FanotifyError::Read(e.into()))?;
        Ok(Reader {
            fd,
            buf: vec![0u8; 256 * 1024],
            removals: Vec::new(),
        })
    }

    /// Waits until events are queued.
    pub async fn readable(reader: &Reader) -> Result<(), FanotifyError> {
        let mut guard = reader.fd.readable().await.map_err(FanotifyError::Read)?;
        guard.clear_ready();
        Ok(())
    }

    /// Once a second: brings the process table up to date and ages it.
    pub fn tick(&mut self) {
        if let Some(f) = &mut self.feed {
            f.catch_up();
        }
        if let Some(t) = &self.procs
            && let Ok(mut t) = t.lock()
        {
            t.evict(std::time::Instant::now());
        }
    }

    /// Reads what is queued into `out`, in order. A flood that never lets the queue drain
    /// must not keep shutdown, timers and the process table waiting: this returns after
    /// [`READS_PER_WAKE`] reads. True when the queue was found empty.
    pub fn read_some(
        &mut self,
        reader: &mut Reader,
        out: &mut Vec<FileEvent>,
    ) -> Result<bool, FanotifyError> {
        for _ in 0..READS_PER_WAKE {
            let n = sys::read(reader.fd.get_ref(), &mut reader.buf).map_err(FanotifyError::Read)?;
            if n == 0 {
                out.extend(self.flush_removals(&mut reader.removals));
                return Ok(true);
            }
            let records = match record::parse(&reader.buf[..n]) {
                Ok(r) => r,
                Err(e) => {
                    warn!("fanotify: {e}; skipping {n} bytes");
                    continue;
                }
            };
            if let Some(f) = &mut self.feed {
                f.catch_up();
            }
            out.extend(self.decode_batch(&records, &mut reader.removals));
            if self.known.stale {
                self.seed();
            }
        }
        Ok(false)
    }

    /// Stopping: what still waits goes to `out`; a queue still not empty is logged.
    pub fn stop(
        &mut self,
        reader: &mut Reader,
        out: &mut Vec<FileEvent>,
    ) -> Result<(), FanotifyError> {
        out.extend(self.flush_removals(&mut reader.removals));
        // Still more queued: a flood outlasted the drain; say so rather than hang.
        if sys::read(reader.fd.get_ref(), &mut reader.buf).map_err(FanotifyError::Read)? > 0 {
            warn!("fanotify: stopped with events still queued (a flood outlasted the drain)");
        }
        Ok(())
    }

    /// The events of one read, in order. A link or an unlink first tells the object its
    /// link count changed (a record without a name), then names the entry: one operation,
    /// reported once, with its name record. Removals the kernel merged into an earlier
    /// record go to `removals` (see [`Self::flush_removals`]).
    fn decode_batch(
        &mut self,
        records: &[Record],
        removals: &mut Vec<(FileEvent, Option<Fid>)>,
    ) -> Vec<FileEvent> {
        let mut events = Vec::new();
        let mut held: Option<(Key, Vec<FileEvent>)> = None;
        for rec in records {
            let decoded = self.decode(rec);
            if let Some((key, evs)) = held.take() {
                let names_it = rec.mask & (libc::FAN_CREATE | libc::FAN_DELETE) != 0
                    && !decoded.is_empty()
                    && rec.fid(kind::FID).is_some_and(|f| Self::key_of(f) == key);
                if !names_it {
                    events.extend(evs);
                }
            }
            let link_count_only =
                rec.mask & !libc::FAN_ATTRIB == 0 && rec.fid(kind::DFID_NAME).is_none();
            if link_count_only && let Some(target) = rec.fid(kind::FID) {
                held = Some((Self::key_of(target), decoded));
                continue;
            }
            let merged = rec.mask & !(libc::FAN_DELETE | libc::FAN_ONDIR) != 0;
            for ev in decoded {
                let removal = matches!(ev.action, Action::Unlink | Action::Rmdir);
                if removal && (merged || !removals.is_empty()) {
                    // After a merged removal, later removals wait with it, so a directory
                    // still goes after what was in it.
                    removals.push((ev, rec.fid(kind::DFID_NAME).cloned()));
                    continue;
                }
                if removals.iter().any(|(r, _)| r.path.bytes == ev.path.bytes) {
                    // The name is used again: its removal came first.
                    events.extend(self.flush_removals(removals));
                }
                events.push(ev);
            }
        }
        if let Some((_, evs)) = held {
            events.extend(evs);
        }
        if removals.len() >= REMOVALS_MAX {
            // A queue that never drains must not hold removals forever.
            events.extend(self.flush_removals(removals));
        }
        events
    }

    /// The waiting removals, named where their directories are now, in an order that can
    /// have happened: files first (in their order), then directories, deepest first (a
    /// directory goes only once it is empty).
    fn flush_removals(&self, removals: &mut Vec<(FileEvent, Option<Fid>)>) -> Vec<FileEvent> {
        let mut out: Vec<FileEvent> = removals
            .drain(..)
            .map(|(mut ev, entry)| {
                if ev.requested_path.is_none()
                    && let Some(p) = entry.and_then(|e| self.known_entry(&e))
                {
                    ev.path.bytes = p;
                }
                ev
            })
            .collect();
        out.sort_by_key(|ev| match ev.action {
            Action::Rmdir => usize::MAX - ev.path.bytes.iter().filter(|&&b| b == b'/').count(),
            _ => 0,
        });
        out
    }

    fn key_of(fid: &Fid) -> Key {
        identity::key(fid.fsid, fid.handle_type, &fid.handle)
    }

    fn mount_for(&self, fid: &Fid) -> Option<&OwnedFd> {
        let found = self.mounts.iter().find(|(id, _)| *id == fid.fsid);
        if found.is_none() {
            debug!("fanotify: no marked file system with fsid {:?}", fid.fsid);
        }
        found.map(|(_, fd)| fd)
    }

    /// `dir` + `/` + the record's name (`.` or none: the directory itself).
    fn join(mut dir: Vec<u8>, fid: &Fid) -> Vec<u8> {
        match fid.name.as_deref() {
            None | Some(b".") | Some(b"") => dir,
            Some(name) => {
                if dir != b"/" {
                    dir.push(b'/');
                }
                dir.extend_from_slice(name);
                dir
            }
        }
    }

    /// The path of a directory-entry record whose directory matters, from what is known in
    /// event order; `None` for a directory outside everything watched.
    fn known_entry(&self, fid: &Fid) -> Option<Vec<u8>> {
        let dir = self.known.dirs.path(&Self::key_of(fid))?;
        Some(Self::join(dir.to_vec(), fid))
    }

    /// The path of a directory-entry record outside the watched trees, resolved now
    /// (`open_by_handle_at`): only for the rare records that concern a watched object.
    fn resolve_entry(&self, fid: &Fid) -> Option<Vec<u8>> {
        let dir = sys::handle_path(self.mount_for(fid)?, fid.handle_type, &fid.handle)?;
        Some(Self::join(dir, fid))
    }

    /// What a new non-directory name in a watched directory is: a link to an object known
    /// under another name, or one born before the marks were placed; a symlink or a special
    /// file by its type; otherwise a new file. Returns the action and its source (the
    /// existing name of a link, the target of a symlink).
    fn name_create(&self, target: Option<&Fid>, path: &[u8]) -> (Action, Option<Vec<u8>>) {
        let Some(t) = target else {
            return (Action::Create, None);
        };
        if let Some(known) = self.known.objects.path(&Self::key_of(t))
            && known != path
        {
            return (Action::Link, Some(known.to_vec()));
        }
        let Some(fd) = self
            .mount_for(t)
            .and_then(|m| sys::open_handle(m, t.handle_type, &t.handle))
        else {
            // Already gone: nothing links to it any more; it was made here.
            return (Action::Create, None);
        };
        let Ok(st) = sys::stat_fd(&fd) else {
            return (Action::Create, None);
        };
        match st.mode & libc::S_IFMT {
            libc::S_IFLNK => (Action::Symlink, sys::read_link_fd(&fd)),
            libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK => (Action::Mknod, None),
            _ if st.nlink > 1 && st.btime_ns.is_some_and(|b| b < self.started_ns) => {
                (Action::Link, None)
            }
            _ => (Action::Create, None),
        }
    }

    /// The events one record stands for. The kernel merges consecutive events on one
    /// object into one record, so a record can mean several operations (a write and its
    /// close); each yields its own event, in the order they happen. Directory records also
    /// update what is known by handle, in the order they come.
    fn decode(&mut self, rec: &Record) -> Vec<FileEvent> {
        if rec.mask & libc::FAN_Q_OVERFLOW != 0 {
            let n = self.telemetry.emit(Internal::QueueOverflow);
            warn!(
                "fanotify queue overflow ({n} so far): events were lost; the watched paths will be rescanned"
            );
            // Renames and removals may be among the lost: what is known by handle is
            // learned again.
            self.known.stale = true;
            return Vec::new();
        }
        let is_dir = rec.mask & libc::FAN_ONDIR != 0;
        let target = rec.fid(kind::FID);
        let target_key = target.map(Self::key_of);
        let mut actions = Vec::new();
        let mut source = None;
        let mut requested = None;
        let mut linked = None;
        // Reached through a name outside the watched trees (another hard link).
        let mut outside = false;
        let path;
        if rec.mask & libc::FAN_RENAME != 0 {
            let (Some(old), Some(new)) =
                (rec.fid(kind::OLD_DFID_NAME), rec.fid(kind::NEW_DFID_NAME))
            else {
                return Vec::new();
            };
            let (from, to) = (self.known_entry(old), self.known_entry(new));
            if from.is_none() && to.is_none() {
                return Vec::new();
            }
            let from = from.or_else(|| self.resolve_entry(old));
            let to = to.or_else(|| self.resolve_entry(new));
            let (Some(from), Some(to)) = (from, to) else {
                self.unresolved(rec);
                return Vec::new();
            };
            if let Some(k) = &target_key {
                if is_dir {
                    if !self.watch.dir_relevant(&to) {
                        self.known.dirs.remove(k);
                    } else if self.known.dirs.is_live(k) {
                        self.known.dirs.moved(k, &to);
                    } else {
                        // Moved in from outside: learn it and what is below it.
                        self.known.dirs.insert(k.clone(), to.clone());
                        self.seed_below(&to);
                    }
                } else {
                    self.known.objects.forget(k, &from);
                    if self.watch.matches(&to) {
                        self.known.objects.learn(k.clone(), to.clone());
                    }
                }
            }
            source = Some(from);
            path = to;
            actions.push(Action::Rename);
        } else {
            let entry = rec.fid(kind::DFID_NAME);
            match entry.and_then(|e| self.known_entry(e)) {
                Some(p) => path = p,
                None => {
                    // Not in a watched directory: only an object known by identity (a
                    // watched file reached through another hard link) matters.
                    let known = target_key
                        .as_ref()
                        .and_then(|k| self.known.objects.path(k))
                        .map(<[u8]>::to_vec);
                    let canonical = match (known, target) {
                        (Some(c), _) => c,
                        (None, Some(t)) if rec.mask & libc::FAN_CREATE != 0 && !is_dir => {
                            match self.identify(t) {
                                Some(c) => c,
                                None => return Vec::new(),
                            }
                        }
                        _ => return Vec::new(),
                    };
                    outside = true;
                    let accessed = entry.and_then(|e| self.resolve_entry(e));
                    if rec.mask & libc::FAN_CREATE != 0 && !is_dir {
                        // A new name for a watched file, outside the watched trees: a link
                        // event about the new name, then what was done through it.
                        let Some(new_name) = accessed.clone() else {
                            self.unresolved(rec);
                            return Vec::new();
                        };
                        linked =
                            self.event(rec, Action::Link, new_name, Some(canonical.clone()), None);
                    }
                    requested = accessed.filter(|a| *a != canonical);
                    path = canonical;
                }
            }
        }
        if linked.is_some() {
            // The create was the link, reported first.
        } else if rec.mask & libc::FAN_CREATE != 0 {
            if is_dir {
                if let Some(k) = &target_key
                    && self.watch.dir_relevant(&path)
                {
                    self.mark(&path, true);
                    self.known.dirs.insert(k.clone(), path.clone());
                }
                actions.push(Action::Mkdir);
            } else {
                let (action, from) = self.name_create(target, &path);
                if action == Action::Link || action == Action::Symlink {
                    source = from;
                }
                if matches!(action, Action::Create | Action::Link) && self.watch.matches(&path) {
                    self.mark_file(&path, false);
                }
                actions.push(action);
            }
        }
        if let Some(k) = &target_key
            && !is_dir
            && rec.mask
                & (libc::FAN_CREATE | libc::FAN_MODIFY | libc::FAN_ATTRIB | libc::FAN_CLOSE_WRITE)
                != 0
            && self.watch.matches(&path)
        {
            self.known.objects.learn(k.clone(), path.clone());
        }
        if rec.mask & libc::FAN_MODIFY != 0 {
            let first = match &target {
                Some(t) => {
                    if self.writing.len() >= WRITING_MAX {
                        self.writing.clear();
                    }
                    self.writing.insert(t.handle.clone())
                }
                None => true,
            };
            if first {
                actions.push(Action::Write);
            }
        }
        if rec.mask & libc::FAN_ATTRIB != 0 {
            actions.push(Action::Attrib);
        }
        if rec.mask & libc::FAN_CLOSE_WRITE != 0 {
            if let Some(t) = target {
                self.writing.remove(&t.handle);
            }
            actions.push(Action::CloseWrite);
        }
        if rec.mask & libc::FAN_DELETE != 0 && outside {
            // Another name of a watched file went away; the file stays (its link count
            // change is reported on it).
        } else if rec.mask & libc::FAN_DELETE != 0 {
            if let Some(k) = &target_key {
                if is_dir {
                    self.known.dirs.remove(k);
                } else {
                    self.known.objects.forget(k, &path);
                }
            }
            actions.push(if is_dir {
                Action::Rmdir
            } else {
                Action::Unlink
            });
        }
        let watched =
            self.watch.matches(&path) || source.as_ref().is_some_and(|s| self.watch.matches(s));
        if !watched {
            return linked.into_iter().collect();
        }
        let merged = actions.len() + usize::from(linked.is_some()) > 1;
        linked
            .into_iter()
            .chain(actions.into_iter().filter_map(|action| {
                let src = source
                    .clone()
                    .filter(|_| matches!(action, Action::Rename | Action::Link | Action::Symlink));
                self.event(rec, action, path.clone(), src, requested.clone())
            }))
            .map(|mut ev| {
                ev.merged = merged;
                ev
            })
            .collect()
    }

    /// An event by the record's thread; `None` for the daemon's own activity.
    fn event(
        &self,
        rec: &Record,
        action: Action,
        path: Vec<u8>,
        source: Option<Vec<u8>>,
        requested: Option<Vec<u8>>,
    ) -> Option<FileEvent> {
        let tid = rec.pid.max(0) as u32;
        if self.is_self(tid) {
            // This daemon's own writes (its baseline, its log).
            return None;
        }
        let mut ev = FileEvent::new(
            action,
            ReportedPath::new(path, PathSource::FileHandle),
            SENSOR_NAME,
        );
        ev.source = source.map(|s| ReportedPath::new(s, PathSource::FileHandle));
        ev.requested_path = requested.map(|r| ReportedPath::new(r, PathSource::FileHandle));
        ev.process = Some(if self.defer_processes {
            fim_core::event::Process {
                tid,
                ..Default::default()
            }
        } else {
            self.process_for(tid)
        });
        Some(ev)
    }

    /// A record about a watched object whose names could not be resolved: counted, logged
    /// (never silent), and repaired by a rescan.
    fn unresolved(&mut self, rec: &Record) {
        let n = self.telemetry.emit(Internal::Lost {
            cause: LossCause::Unresolved,
            operations: 1,
        });
        warn!(
            "fanotify: an event (mask {:#x}) on a watched object could not be resolved to a path ({n} so far); the watched paths will be rescanned",
            rec.mask
        );
    }

    /// Whether `tid` is one of this daemon's threads (its own baseline writes). Asked of
    /// `/proc` once a second per thread at most: a burst comes from few threads. (A thread
    /// id freed by another process and reused by a new thread of this daemon within that
    /// second would be taken for the other's: this daemon's own write reported, not a
    /// change hidden.)
    fn is_self(&self, tid: u32) -> bool {
        if tid == self.self_pid {
            return true;
        }
        let now = std::time::Instant::now();
        let mut known = self.self_threads.borrow_mut();
        if let Some(&(answer, at)) = known.get(&tid)
            && now.duration_since(at) < SELF_CHECK_TTL
        {
            return answer;
        }
        if known.len() >= SELF_CHECK_MAX {
            known.clear();
        }
        let answer = std::fs::metadata(format!("/proc/{}/task/{tid}", self.self_pid)).is_ok();
        known.insert(tid, (answer, now));
        answer
    }
}
