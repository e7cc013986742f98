//! Reconcile: the disk compared with the baseline, by the daemon (at start, on schedule,
//! after lost events, for roots watched for the first time) and by `fim scan check`.
//!
//! Why one module: what counts as added, changed or removed, that an unreadable path is not
//! a removed one, and what a found change looks like as an event must not depend on which
//! of the two found it. The daemon's own rules on top (a path an event touched during the
//! scan is the event's, not the scan's) stay in the engine, which knows the events.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use log::{info, warn};

use fim_core::{
    attrs::{Attr, Snapshot, diff},
    baseline::{Baseline, BaselineError},
    event::{Action, FileEvent, Integrity, Origin, PathSource, ReportedPath},
    watch::{ScanRoot, WatchSet},
};

use super::{
    engine::EngineConfig,
    scan::{ScanItem, ScanOptions, scan},
};

/// What a scanned path's snapshot is, next to its baseline entry: added, changed (with
/// what changed) or, `None`, the same. Pure.
pub fn difference(before: Option<&Snapshot>, after: &Snapshot) -> Option<(Action, Vec<Attr>)> {
    match before {
        None => Some((Action::Added, Vec::new())),
        Some(b) => {
            let changed = diff(b, after);
            (!changed.is_empty()).then_some((Action::Changed, changed))
        }
    }
}

/// The baseline's entries a scan did not see (removed from the disk), read in batches by
/// path so the caller may change the baseline between batches.
#[derive(Default)]
pub struct Unseen {
    after: Vec<u8>,
}

impl Unseen {
    /// The next batch; empty when there is no more.
    pub fn next_batch(
        &mut self,
        baseline: &Baseline,
    ) -> Result<Vec<(Vec<u8>, Snapshot)>, BaselineError> {
        let batch = baseline.unseen(&self.after, 512)?;
        if let Some((last, _)) = batch.last() {
            self.after = last.clone();
        }
        Ok(batch)
    }
}

/// An event for a change found by comparing the disk with the baseline.
pub fn found_event(
    action: Action,
    path: Vec<u8>,
    before: Option<Snapshot>,
    after: Option<Snapshot>,
    changed: Vec<Attr>,
    origin: Origin,
) -> FileEvent {
    let inode = after
        .as_ref()
        .or(before.as_ref())
        .map(super::enrich::inode_of);
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

/// What a daemon scan found, by kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Paths checked.
    pub seen: u64,
    /// Added, removed and changed paths reported.
    pub added: u64,
    pub removed: u64,
    pub changed: u64,
}

impl Counts {
    /// Counts a change found (added, removed, changed).
    pub fn found(&mut self, action: Action) {
        match action {
            Action::Added => self.added += 1,
            Action::Removed => self.removed += 1,
            _ => self.changed += 1,
        }
    }
}

/// A daemon scan in progress: a thread walks the watched roots and sends what it observes.
pub struct ScanRun {
    /// Why it runs (start, schedule or repair).
    pub origin: Origin,
    started: Instant,
    /// Empty baseline: record silently instead of reporting.
    pub initial: bool,
    /// Roots watched for the first time: their paths are recorded silently too (adding a
    /// watch path must not flood the SIEM with "added" for everything already there).
    quiet: Vec<ScanRoot>,
    cancel: Arc<AtomicBool>,
    /// What the walk observed, in walk order.
    pub items: flume::Receiver<ScanItem>,
    /// What it found so far.
    pub counts: Counts,
}

impl ScanRun {
    /// Starts a scan of `watch`'s roots (`initial`: the baseline is empty). `None` when the
    /// walk cannot start (logged), or when a reload's scan has nothing to do.
    ///
    /// After a live reload ([`Origin::Reload`]) only the newly watched roots are walked,
    /// to record what is there: the others were watched in real time all along, and
    /// walking them while events are on their way would report as found what those
    /// events are about to report.
    pub fn start(
        baseline: &mut Baseline,
        watch: &WatchSet,
        cfg: &EngineConfig,
        origin: Origin,
        initial: bool,
    ) -> Option<Self> {
        let roots = watch.scan_roots();
        // Roots the baseline has not seen before (none known: an older baseline, report all).
        let known: Option<Vec<String>> = baseline
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
        let roots = if origin == Origin::Reload {
            if quiet.is_empty() {
                // Roots only taken away: the baseline's list follows.
                let described: Vec<String> = roots.iter().map(ScanRoot::describe).collect();
                if let Err(e) = baseline.set_meta("roots", &described.join("\n")) {
                    warn!("recording the watched roots: {e}");
                }
                return None;
            }
            quiet.clone()
        } else {
            roots
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
            threads: cfg.workers.max(1),
            limits: cfg.limits.clone(),
            reuse_from: (!initial).then(|| cfg.state_dir.clone()),
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
            return None;
        }
        if let Err(e) = baseline.scan_begin() {
            warn!("starting a scan of the watched paths: {e}");
            cancel.store(true, Ordering::Relaxed);
        }
        Some(Self {
            origin,
            started: Instant::now(),
            initial,
            quiet,
            cancel,
            items: rx,
            counts: Counts::default(),
        })
    }

    /// Whether the scan walks some roots only (a reload's): what it did not see is not gone.
    pub fn partial(&self) -> bool {
        self.origin == Origin::Reload
    }

    /// Whether a change at `path` is recorded without being reported.
    pub fn records_silently(&self, path: &[u8]) -> bool {
        self.initial || self.quiet.iter().any(|r| r.covers(path))
    }

    /// Stops the walk; what it already sent can still be received.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Whether the walk was stopped before its end (its result is then not applied).
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// How long it has run.
    pub fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Stops the walk and waits for it.
    pub fn drain(self) {
        self.cancel();
        while self.items.recv().is_ok() {}
    }

    /// Records a finished scan in the baseline (built, and which roots it covered; the
    /// engine commits it with the reports of its findings) and logs what it found.
    pub fn completed(
        &self,
        baseline: &mut Baseline,
        watch: &WatchSet,
    ) -> Result<(), BaselineError> {
        if self.initial {
            baseline.set_meta("initialized", &fim_core::event::unix_now_ns().to_string())?;
        }
        let roots: Vec<String> = watch.scan_roots().iter().map(ScanRoot::describe).collect();
        baseline.set_meta("roots", &roots.join("\n"))?;
        let Counts {
            seen,
            added,
            removed,
            changed,
        } = self.counts;
        let secs = self.started.elapsed().as_secs_f64();
        if self.initial {
            info!("baseline built: {seen} paths in {secs:.1} s");
        } else if self.partial() {
            info!("newly watched roots recorded: {seen} paths in {secs:.1} s");
        } else {
            info!(
                "{}: {seen} paths checked, {added} added, {removed} removed, {changed} changed in {secs:.1} s",
                if self.origin == Origin::Start {
                    "reconciled"
                } else {
                    "rescanned"
                }
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fim_core::attrs::FileType;

    fn snap(mode: u32) -> Snapshot {
        crate::test_support::snapshot(FileType::File, 7, mode)
    }

    #[test]
    fn new_paths_are_added_changed_ones_say_what_and_equal_ones_nothing() {
        assert_eq!(
            difference(None, &snap(0o644)),
            Some((Action::Added, Vec::new()))
        );
        assert_eq!(
            difference(Some(&snap(0o644)), &snap(0o600)),
            Some((Action::Changed, vec![Attr::Mode]))
        );
        assert_eq!(difference(Some(&snap(0o644)), &snap(0o644)), None);
    }

    #[test]
    fn a_found_change_names_its_inode_from_the_values() {
        let ev = found_event(
            Action::Removed,
            b"/etc/x".to_vec(),
            Some(snap(0o644)),
            None,
            Vec::new(),
            Origin::Rescan,
        );
        let inode = ev.inode.expect("inode from before");
        assert_eq!((inode.ino, inode.major, inode.minor), (7, 8, 1));
        assert_eq!(inode.mode, 0o100644);
        assert_eq!(ev.path.source, PathSource::Scan);
    }

    #[test]
    fn unseen_entries_come_in_batches_until_none_are_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Baseline::open(dir.path(), fim_core::baseline::Access::Write).expect("open");
        for i in 0..1100u32 {
            b.put(format!("/w/{i:05}").as_bytes(), &snap(0o644))
                .expect("put");
        }
        b.commit().expect("commit");
        b.scan_begin().expect("scan");
        b.seen(b"/w/00003").expect("seen");
        let mut unseen = Unseen::default();
        let mut total = 0;
        loop {
            let batch = unseen.next_batch(&b).expect("batch");
            if batch.is_empty() {
                break;
            }
            assert!(batch.iter().all(|(p, _)| p != b"/w/00003"));
            total += batch.len();
        }
        assert_eq!(total, 1099);
    }
}
