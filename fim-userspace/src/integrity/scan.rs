//! Scanning the watched roots on disk: one walker thread lists paths, a pool of workers
//! observes (stats and hashes) them, and the caller consumes results on its own thread.
//!
//! Used by `fim scan init/check`, by the daemon's reconciliation at start and by scheduled
//! rescans. Bounded channels keep memory flat whatever the tree's size.

use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
};

use flume::bounded;

use fim_core::{
    attrs::{FileType, Snapshot},
    baseline::{Access, Baseline},
};

use super::observe::{Hashing, Limits, Scratch, observe_listed};
use fim_core::watch::ScanRoot;

/// How to scan.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    /// Worker threads observing files.
    pub threads: usize,
    /// Hashing limits.
    pub limits: Limits,
    /// When set, reuse digests from this state directory's baseline for files whose inode,
    /// size, mtime and ctime are unchanged. When unset, every file is read.
    pub reuse_from: Option<std::path::PathBuf>,
}

/// One result of a scan.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "sent through a bounded channel and consumed at once; failures are the rare case"
)]
pub enum ScanItem {
    /// The path was observed (`None`: it vanished between listing and observing).
    Observed {
        /// The path.
        path: Vec<u8>,
        /// What is there.
        snapshot: Option<Snapshot>,
    },
    /// The path could not be listed or observed.
    Failed {
        /// The path.
        path: Vec<u8>,
        /// Why, as a message.
        error: String,
    },
}

/// Threads to use by default: one per CPU.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

/// Paths travel between threads in batches: one channel operation per batch, not per file,
/// keeps the wake-ups (futex calls) from dominating a scan of small files.
const BATCH: usize = 128;

type Listed = (Vec<u8>, Option<FileType>);

fn listed_type(t: std::io::Result<std::fs::FileType>) -> Option<FileType> {
    let t = t.ok()?;
    if t.is_file() {
        Some(FileType::File)
    } else if t.is_dir() {
        Some(FileType::Dir)
    } else {
        None
    }
}

/// Collects listed paths and sends them in batches.
struct Batcher<'a> {
    tx: &'a flume::Sender<Vec<Listed>>,
    batch: Vec<Listed>,
}

impl Batcher<'_> {
    /// Queues one path; false when the receivers are gone.
    fn push(&mut self, path: Vec<u8>, listed: Option<FileType>) -> bool {
        self.batch.push((path, listed));
        self.batch.len() < BATCH || self.flush()
    }

    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        self.tx.send(std::mem::take(&mut self.batch)).is_ok()
    }
}

/// Lists every path under `roots` (directories included, symlinks not followed), sending
/// them in batches on `tx`. Listing errors become [`ScanItem::Failed`] on `failed`.
fn walk(
    roots: &[ScanRoot],
    tx: &flume::Sender<Vec<Listed>>,
    failed: &flume::Sender<Vec<ScanItem>>,
    cancel: &AtomicBool,
) {
    let mut out = Batcher {
        tx,
        batch: Vec::with_capacity(BATCH),
    };
    let fail = |path: &[u8], e: std::io::Error| {
        // A directory removed while scanning is not an error.
        if e.kind() != std::io::ErrorKind::NotFound {
            let _ = failed.send(vec![ScanItem::Failed {
                path: path.to_vec(),
                error: format!("listing directory: {e}"),
            }]);
        }
    };
    let mut stack: Vec<Vec<u8>> = Vec::new();
    for root in roots {
        match root {
            ScanRoot::Exact(p) => {
                if Path::new(OsStr::from_bytes(p)).symlink_metadata().is_ok()
                    && !out.push(p.clone(), None)
                {
                    return;
                }
            }
            ScanRoot::Tree(p) => {
                let Ok(meta) = Path::new(OsStr::from_bytes(p)).symlink_metadata() else {
                    continue;
                };
                if !out.push(p.clone(), None) {
                    return;
                }
                if meta.is_dir() {
                    stack.push(p.clone());
                }
            }
            ScanRoot::Children { dir, glob } => match std::fs::read_dir(OsStr::from_bytes(dir)) {
                Ok(entries) => {
                    for e in entries.flatten() {
                        if glob.is_match(Path::new(&e.file_name()))
                            && !out.push(bytes(&e.path()).to_vec(), listed_type(e.file_type()))
                        {
                            return;
                        }
                    }
                }
                Err(e) => fail(dir, e),
            },
        }
        while let Some(dir) = stack.pop() {
            if cancel.load(Ordering::Relaxed) {
                return;
            }
            let entries = match std::fs::read_dir(OsStr::from_bytes(&dir)) {
                Ok(e) => e,
                Err(e) => {
                    fail(&dir, e);
                    continue;
                }
            };
            for entry in entries {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        fail(&dir, e);
                        break;
                    }
                };
                let path = bytes(&entry.path()).to_vec();
                let listed = listed_type(entry.file_type());
                if listed == Some(FileType::Dir) {
                    stack.push(path.clone());
                }
                if !out.push(path, listed) {
                    return;
                }
            }
        }
    }
    out.flush();
}

/// Scans `roots`, calling `consume` on the caller's thread for each result, in no
/// particular order. Stops early when `cancel` is set. Returns how many paths were seen.
pub fn scan(
    roots: &[ScanRoot],
    opts: &ScanOptions,
    cancel: &AtomicBool,
    mut consume: impl FnMut(ScanItem),
) -> u64 {
    let (path_tx, path_rx) = bounded::<Vec<Listed>>(64);
    let (item_tx, item_rx) = bounded::<Vec<ScanItem>>(64);
    let mut count = 0u64;
    std::thread::scope(|s| {
        let failed = item_tx.clone();
        let walker = std::thread::Builder::new()
            .name("fim-scan-walk".into())
            .spawn_scoped(s, move || walk(roots, &path_tx, &failed, cancel));
        if let Err(e) = walker {
            consume(ScanItem::Failed {
                path: Vec::new(),
                error: format!("starting the scan: {e}"),
            });
            return;
        }
        for _ in 0..opts.threads.max(1) {
            let rx = path_rx.clone();
            let tx = item_tx.clone();
            let opts = opts.clone();
            let worker = std::thread::Builder::new()
                .name("fim-scan-hash".into())
                .spawn_scoped(s, move || {
                    let mut scratch = Scratch::default();
                    let reuse = opts
                        .reuse_from
                        .as_deref()
                        .and_then(|d| Baseline::open(d, Access::Read).ok());
                    for batch in rx.iter() {
                        if cancel.load(Ordering::Relaxed) {
                            break;
                        }
                        let mut items = Vec::with_capacity(batch.len());
                        for (path, listed) in batch {
                            let prev = reuse.as_ref().and_then(|b| b.get(&path).ok().flatten());
                            let hashing = if reuse.is_some() {
                                Hashing::Reuse(prev.as_ref())
                            } else {
                                Hashing::Always
                            };
                            items.push(
                                match observe_listed(
                                    &path,
                                    listed,
                                    hashing,
                                    &opts.limits,
                                    &mut scratch,
                                ) {
                                    Ok(snapshot) => ScanItem::Observed { path, snapshot },
                                    Err(e) => ScanItem::Failed {
                                        path,
                                        error: e.to_string(),
                                    },
                                },
                            );
                        }
                        if tx.send(items).is_err() {
                            break;
                        }
                    }
                });
            if let Err(e) = worker {
                // The other workers carry on; say so once.
                let _ = item_tx.send(vec![ScanItem::Failed {
                    path: Vec::new(),
                    error: format!("starting a scan worker: {e}"),
                }]);
            }
        }
        drop(item_tx);
        drop(path_rx);
        for batch in item_rx.iter() {
            for item in batch {
                count += 1;
                consume(item);
            }
        }
    });
    count
}
