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

use super::{
    attrs::Snapshot,
    baseline::{Access, Baseline},
    observe::{Hashing, Limits, Scratch, observe},
};
use crate::watch::ScanRoot;

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

/// Lists every path under `roots` (directories included, symlinks not followed), sending
/// each on `tx`. Listing errors become [`ScanItem::Failed`] on `failed`.
fn walk(
    roots: &[ScanRoot],
    tx: &flume::Sender<Vec<u8>>,
    failed: &flume::Sender<ScanItem>,
    cancel: &AtomicBool,
) {
    let mut stack: Vec<Vec<u8>> = Vec::new();
    for root in roots {
        match root {
            ScanRoot::Exact(p) => {
                if Path::new(OsStr::from_bytes(p)).symlink_metadata().is_ok() && tx.send(p.clone()).is_err() {
                    return;
                }
            }
            ScanRoot::Tree(p) => {
                let meta = Path::new(OsStr::from_bytes(p)).symlink_metadata();
                let Ok(meta) = meta else { continue };
                if tx.send(p.clone()).is_err() {
                    return;
                }
                if meta.is_dir() {
                    stack.push(p.clone());
                }
            }
            ScanRoot::Children { dir, glob } => {
                let Ok(entries) = std::fs::read_dir(OsStr::from_bytes(dir)) else {
                    continue;
                };
                for e in entries.flatten() {
                    if glob.is_match(Path::new(&e.file_name())) && tx.send(bytes(&e.path()).to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
        while let Some(dir) = stack.pop() {
            if cancel.load(Ordering::Relaxed) {
                return;
            }
            let entries = match std::fs::read_dir(OsStr::from_bytes(&dir)) {
                Ok(e) => e,
                Err(e) => {
                    // A directory removed while scanning is not an error.
                    if e.kind() != std::io::ErrorKind::NotFound {
                        let _ = failed.send(ScanItem::Failed {
                            path: dir.clone(),
                            error: format!("listing directory: {e}"),
                        });
                    }
                    continue;
                }
            };
            for entry in entries {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = failed.send(ScanItem::Failed {
                            path: dir.clone(),
                            error: format!("listing directory: {e}"),
                        });
                        break;
                    }
                };
                let path = bytes(&entry.path()).to_vec();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(path.clone());
                }
                if tx.send(path).is_err() {
                    return;
                }
            }
        }
    }
}

/// Scans `roots`, calling `consume` on the caller's thread for each result, in no
/// particular order. Stops early when `cancel` is set. Returns how many paths were seen.
pub fn scan(
    roots: &[ScanRoot],
    opts: &ScanOptions,
    cancel: &AtomicBool,
    mut consume: impl FnMut(ScanItem),
) -> u64 {
    let (path_tx, path_rx) = bounded::<Vec<u8>>(4096);
    let (item_tx, item_rx) = bounded::<ScanItem>(4096);
    let mut count = 0u64;
    std::thread::scope(|s| {
        let failed = item_tx.clone();
        std::thread::Builder::new()
            .name("fim-scan-walk".into())
            .spawn_scoped(s, move || walk(roots, &path_tx, &failed, cancel))
            .expect("spawning the scan walker");
        for _ in 0..opts.threads.max(1) {
            let rx = path_rx.clone();
            let tx = item_tx.clone();
            let opts = opts.clone();
            std::thread::Builder::new()
                .name("fim-scan-hash".into())
                .spawn_scoped(s, move || {
                    let mut scratch = Scratch::default();
                    let reuse = opts
                        .reuse_from
                        .as_deref()
                        .and_then(|d| Baseline::open(d, Access::Read).ok());
                    for path in rx {
                        if cancel.load(Ordering::Relaxed) {
                            break;
                        }
                        let prev = reuse.as_ref().and_then(|b| b.get(&path).ok().flatten());
                        let hashing = if reuse.is_some() {
                            Hashing::Reuse(prev.as_ref())
                        } else {
                            Hashing::Always
                        };
                        let item = match observe(&path, hashing, &opts.limits, &mut scratch) {
                            Ok(snapshot) => ScanItem::Observed { path, snapshot },
                            Err(e) => ScanItem::Failed {
                                path,
                                error: e.to_string(),
                            },
                        };
                        if tx.send(item).is_err() {
                            break;
                        }
                    }
                })
                .expect("spawning a scan worker");
        }
        drop(item_tx);
        drop(path_rx);
        for item in item_rx {
            count += 1;
            consume(item);
        }
    });
    count
}
