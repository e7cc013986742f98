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

pub mod record;
pub mod sys;

use std::{
    collections::{HashMap, HashSet},
    os::fd::OwnedFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use log::{debug, info, warn};
use tokio::{io::unix::AsyncFd, sync::mpsc};
use tokio_util::sync::CancellationToken;

use self::record::{Fid, Record, info as kind};
use crate::{
    event::{Action, FileEvent, PathSource, ReportedPath},
    sensors::{procfs, proctable::ProcTable},
    watch::{ScanRoot, WatchSet},
};

/// The sensor's name in events.
pub const SENSOR_NAME: &str = "fanotify";

/// Directory handles whose paths are remembered; the cache is dropped whenever a directory
/// is renamed or removed, so a remembered path is never stale.
const DIR_CACHE_MAX: usize = 4096;
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
}

/// Counters the daemon reports and the engine watches.
#[derive(Debug, Default)]
pub struct FanotifyCounters {
    /// `FAN_Q_OVERFLOW` events: the kernel queue was full and events were lost.
    pub overflows: AtomicU64,
    /// Events whose directory could no longer be resolved to a path.
    pub unresolved: AtomicU64,
}

/// A started sensor: the group exists and its marks are in place.
pub struct FanotifySensor {
    group: OwnedFd,
    mounts: Vec<([i32; 2], OwnedFd)>,
    watch: Arc<WatchSet>,
    /// Drop and overflow counters.
    pub counters: Arc<FanotifyCounters>,
    dirs: HashMap<Vec<u8>, Vec<u8>>,
    writing: HashSet<Vec<u8>>,
    self_pid: u32,
    procs: Option<Arc<Mutex<ProcTable>>>,
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

impl FanotifySensor {
    /// Creates the group and marks every file system holding a watched root (or, for a
    /// root that does not exist yet, its nearest existing ancestor).
    pub fn start(watch: Arc<WatchSet>) -> Result<Self, FanotifyError> {
        let group = sys::init().map_err(FanotifyError::Init)?;
        let mut mounts: Vec<([i32; 2], OwnedFd)> = Vec::new();
        for root in watch.scan_roots() {
            let path = match &root {
                ScanRoot::Tree(p) | ScanRoot::Exact(p) => p.clone(),
                ScanRoot::Children { dir, .. } => dir.clone(),
            };
            let dir = existing_dir(&path);
            let render = || crate::sinks::ecs::render_bytes(&dir);
            let (fd, fsid) = sys::mount_ref(&dir).map_err(|source| FanotifyError::Mark {
                path: render(),
                source,
            })?;
            if mounts.iter().any(|(id, _)| *id == fsid) {
                continue;
            }
            sys::mark_filesystem(&group, &dir).map_err(|source| FanotifyError::Mark {
                path: render(),
                source,
            })?;
            mounts.push((fsid, fd));
        }
        info!("fanotify sensor: {} file system(s) marked", mounts.len());
        debug!(
            "fanotify: marked fsids {:?}",
            mounts.iter().map(|(id, _)| *id).collect::<Vec<_>>()
        );
        Ok(Self {
            group,
            mounts,
            watch,
            counters: Arc::new(FanotifyCounters::default()),
            dirs: HashMap::new(),
            writing: HashSet::new(),
            self_pid: std::process::id(),
            procs: None,
        })
    }

    /// Attributes events from `table` (fed by eBPF exec/fork/exit records) before `/proc`.
    pub fn with_process_table(mut self, table: Arc<Mutex<ProcTable>>) -> Self {
        self.procs = Some(table);
        self
    }

    fn table_get(&self, tid: u32) -> Option<(crate::event::Process, bool)> {
        self.procs.as_ref()?.lock().ok()?.get(tid)
    }

    /// The acting task: an exact process-table entry, else `/proc`, else an inexact entry
    /// (a forked child's copy of its parent), else "exited".
    fn process_for(&self, tid: u32) -> crate::event::Process {
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
        shutdown: CancellationToken,
    ) -> Result<(), FanotifyError> {
        let group = self.group.try_clone().map_err(FanotifyError::Read)?;
        // SAFETY: the AsyncFd owns this duplicate descriptor for its whole life.
        let fd = unsafe { AsyncFd::register_with_interest(group, tokio::io::Interest::READABLE) }
            .map_err(|e| FanotifyError::Read(e.into()))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut evict = tokio::time::interval(std::time::Duration::from_secs(10));
        loop {
            let stopping = tokio::select! {
                _ = shutdown.cancelled() => true,
                r = fd.readable() => {
                    let mut guard = r.map_err(FanotifyError::Read)?;
                    guard.clear_ready();
                    false
                }
                _ = evict.tick() => {
                    if let Some(t) = &self.procs && let Ok(mut t) = t.lock() {
                        t.evict(std::time::Instant::now());
                    }
                    false
                }
            };
            loop {
                let n = sys::read(fd.get_ref(), &mut buf).map_err(FanotifyError::Read)?;
                if n == 0 {
                    break;
                }
                let records = match record::parse(&buf[..n]) {
                    Ok(r) => r,
                    Err(e) => {
                        warn!("fanotify: {e}; skipping {n} bytes");
                        continue;
                    }
                };
                let mut events = Vec::new();
                for rec in records {
                    events.extend(self.decode(&rec));
                }
                // A task gone from /proc may still be on its way into the process table
                // (the eBPF ring is polled every 20 ms): give it one chance.
                if self.procs.is_some()
                    && events
                        .iter()
                        .any(|e| e.process.as_ref().is_some_and(|p| p.exited))
                {
                    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
                    for e in &mut events {
                        if let Some(p) = e.process.as_mut().filter(|p| p.exited)
                            && let Some((known, _)) = self.table_get(p.tid)
                        {
                            *p = known;
                        }
                    }
                }
                for ev in events {
                    if tx.send(ev).await.is_err() {
                        return Ok(());
                    }
                }
            }
            if stopping {
                return Ok(());
            }
        }
    }

    fn dir_path(&mut self, fid: &Fid) -> Option<Vec<u8>> {
        let mut key = fid
            .fsid
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect::<Vec<u8>>();
        key.extend_from_slice(&fid.handle_type.to_ne_bytes());
        key.extend_from_slice(&fid.handle);
        if let Some(p) = self.dirs.get(&key) {
            return Some(p.clone());
        }
        let Some((_, mount)) = self.mounts.iter().find(|(id, _)| *id == fid.fsid) else {
            debug!("fanotify: no marked file system with fsid {:?}", fid.fsid);
            return None;
        };
        let path = sys::handle_path(mount, fid.handle_type, &fid.handle)?;
        if self.dirs.len() >= DIR_CACHE_MAX {
            self.dirs.clear();
        }
        self.dirs.insert(key, path.clone());
        Some(path)
    }

    /// Parent path + name of a directory-entry record; `.` names the directory itself.
    fn entry_path(&mut self, fid: &Fid) -> Option<Vec<u8>> {
        let mut dir = self.dir_path(fid)?;
        match fid.name.as_deref() {
            None | Some(b".") | Some(b"") => Some(dir),
            Some(name) => {
                if dir != b"/" {
                    dir.push(b'/');
                }
                dir.extend_from_slice(name);
                Some(dir)
            }
        }
    }

    /// The events one record stands for. The kernel merges consecutive events on one
    /// object into one record, so a record can mean several operations (a write and its
    /// close); each yields its own event, in the order they happen.
    fn decode(&mut self, rec: &Record) -> Vec<FileEvent> {
        if rec.mask & libc::FAN_Q_OVERFLOW != 0 {
            let n = self.counters.overflows.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(
                "fanotify queue overflow ({n} so far): events were lost; the watched paths will be rescanned"
            );
            return Vec::new();
        }
        let tid = rec.pid.max(0) as u32;
        if self.is_self(tid) {
            // This daemon's own writes (its baseline, its log).
            return Vec::new();
        }
        let is_dir = rec.mask & libc::FAN_ONDIR != 0;
        if is_dir && rec.mask & (libc::FAN_RENAME | libc::FAN_DELETE) != 0 {
            // A directory moved or went away: remembered paths below it may be wrong now.
            self.dirs.clear();
        }
        let Some(entry) = rec
            .fid(kind::DFID_NAME)
            .or_else(|| rec.fid(kind::NEW_DFID_NAME))
        else {
            return Vec::new();
        };
        let target = rec.fid(kind::FID).map(|f| &f.handle);
        let mut actions = Vec::new();
        let mut source = None;
        if rec.mask & libc::FAN_RENAME != 0 {
            let Some(old) = rec.fid(kind::OLD_DFID_NAME) else {
                return Vec::new();
            };
            source = self.entry_path(old);
            actions.push(Action::Rename);
        }
        if rec.mask & libc::FAN_CREATE != 0 {
            actions.push(if is_dir {
                Action::Mkdir
            } else {
                Action::Create
            });
        }
        if rec.mask & libc::FAN_MODIFY != 0 {
            let first = match &target {
                Some(t) => {
                    if self.writing.len() >= WRITING_MAX {
                        self.writing.clear();
                    }
                    self.writing.insert((*t).clone())
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
                self.writing.remove(t);
            }
            actions.push(Action::CloseWrite);
        }
        if rec.mask & libc::FAN_DELETE != 0 {
            actions.push(if is_dir {
                Action::Rmdir
            } else {
                Action::Unlink
            });
        }
        if actions.is_empty() {
            return Vec::new();
        }
        let Some(path) = self.entry_path(entry) else {
            self.counters.unresolved.fetch_add(1, Ordering::Relaxed);
            return Vec::new();
        };
        let watched =
            self.watch.matches(&path) || source.as_ref().is_some_and(|s| self.watch.matches(s));
        if !watched {
            return Vec::new();
        }
        let process = self.process_for(tid);
        actions
            .into_iter()
            .map(|action| {
                let mut ev = FileEvent::new(
                    action,
                    ReportedPath::new(path.clone(), PathSource::FileHandle),
                    SENSOR_NAME,
                );
                ev.source = source
                    .clone()
                    .filter(|_| action == Action::Rename)
                    .map(|s| ReportedPath::new(s, PathSource::FileHandle));
                ev.process = Some(process.clone());
                ev
            })
            .collect()
    }

    /// Whether `tid` is one of this daemon's threads (its own baseline writes).
    fn is_self(&self, tid: u32) -> bool {
        tid == self.self_pid
            || std::fs::metadata(format!("/proc/{}/task/{tid}", self.self_pid)).is_ok()
    }
}
