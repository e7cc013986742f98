//! Write bursts: a file being written is hashed once, when the burst ends, not at every
//! write.
//!
//! Why: hashing at each `write` would cost a full read of the file per write (a log-like
//! writer would make the engine hash gigabytes), and the digest in the middle of a burst
//! is of a half-written file anyway. A burst starts with a create, an open for writing or
//! a write; it ends at close-after-write, at a truncate outside a burst, or, for a writer
//! that keeps its file open, after a quiet period without a close. Its events are reported
//! at once with their metadata; the burst's last event is kept so that the "modified"
//! reported at the quiet period's end names the process that wrote last.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use fim_core::{
    attrs::{Content, Snapshot},
    event::{Action, FileEvent, unix_now_ns},
};

struct Burst {
    /// When it settles without a close (the quiet period runs from its first event).
    deadline: Instant,
    /// Its last event, for attribution.
    last: FileEvent,
    /// The last observation during the burst, with the baseline's digest (the content is
    /// hashed when the burst settles): the "before" of the burst's next event, so a chmod
    /// right after a create says what it changed.
    seen: Option<Snapshot>,
}

/// The open write bursts, by canonical path.
pub struct Bursts {
    open: HashMap<Vec<u8>, Burst>,
    quiet: Duration,
}

impl Bursts {
    /// No burst open; one without a close settles after `quiet`.
    pub fn new(quiet: Duration) -> Self {
        Self {
            open: HashMap::new(),
            quiet,
        }
    }

    /// Whether `key` is being written.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.open.contains_key(key)
    }

    /// `ev` is part of a burst on `key`: starts it, or keeps `ev` as its last event.
    pub fn extend(&mut self, key: &[u8], ev: &FileEvent) {
        let deadline = Instant::now() + self.quiet;
        self.open
            .entry(key.to_vec())
            .and_modify(|b| b.last = ev.clone())
            .or_insert_with(|| Burst {
                deadline,
                last: ev.clone(),
                seen: None,
            });
    }

    /// The burst on `key` ended (settled, removed, or not a file after all).
    pub fn end(&mut self, key: &[u8]) {
        self.open.remove(key);
    }

    /// The file was renamed from `old` to `new`: its burst goes with it.
    pub fn moved(&mut self, old: &[u8], new: &[u8]) {
        if let Some(b) = self.open.remove(old) {
            self.open.insert(new.to_vec(), b);
        }
    }

    /// The last observation of `key` during its burst.
    pub fn seen(&self, key: &[u8]) -> Option<Snapshot> {
        self.open.get(key).and_then(|b| b.seen.clone())
    }

    /// Records an observation made during the burst on `key` (if one is open). Its content
    /// stays `content_before`, the last digest known: the burst is hashed when it settles.
    pub fn observed(&mut self, key: &[u8], after: &Snapshot, content_before: Option<Content>) {
        if let Some(b) = self.open.get_mut(key) {
            let mut seen = after.clone();
            seen.content = content_before;
            b.seen = Some(seen);
        }
    }

    /// The earliest quiet-period end.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open.values().map(|b| b.deadline).min()
    }

    /// The bursts whose quiet period has ended by `now`.
    pub fn due(&self, now: Instant) -> Vec<Vec<u8>> {
        self.open
            .iter()
            .filter(|(_, b)| b.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Every open burst (to settle them all at shutdown).
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.open.keys().cloned().collect()
    }

    /// The burst on `key` cannot settle yet (its path is being observed): it gets another
    /// quiet period.
    pub fn postpone(&mut self, key: &[u8]) {
        if let Some(b) = self.open.get_mut(key) {
            b.deadline = Instant::now() + self.quiet;
        }
    }

    /// Ends the burst on `key` without a close: the `modified` event that has its content
    /// hashed, attributed to the burst's last writer.
    pub fn settle(&mut self, key: &[u8]) -> Option<FileEvent> {
        let b = self.open.remove(key)?;
        let mut ev = b.last;
        ev.action = Action::Modified;
        ev.time_unix_ns = unix_now_ns();
        ev.bytes_written = None;
        ev.syscall_nr = None;
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fim_core::event::{PathSource, ReportedPath};

    /// An event by the writer numbered `writer` (kept in `owner_uid`, which a write leaves
    /// alone).
    fn event(action: Action, writer: u32) -> FileEvent {
        let mut ev = FileEvent::new(
            action,
            ReportedPath::new(b"/w/f".to_vec(), PathSource::KernelObject),
            "test",
        );
        ev.owner_uid = Some(writer);
        ev.bytes_written = Some(10);
        ev
    }

    #[test]
    fn a_burst_settles_once_as_modified_by_its_last_writer() {
        let mut b = Bursts::new(Duration::ZERO);
        b.extend(b"/w/f", &event(Action::OpenWrite, 1));
        b.extend(b"/w/f", &event(Action::Write, 2));
        assert!(b.contains(b"/w/f"));
        assert_eq!(b.due(Instant::now()), vec![b"/w/f".to_vec()]);
        let ev = b.settle(b"/w/f").expect("open");
        assert_eq!(ev.action, Action::Modified);
        assert_eq!(ev.owner_uid, Some(2), "the last writer");
        assert_eq!(ev.bytes_written, None);
        assert!(b.settle(b"/w/f").is_none(), "settled once");
        assert!(b.next_deadline().is_none());
    }

    #[test]
    fn a_burst_follows_a_rename_and_postponing_moves_its_deadline() {
        let mut b = Bursts::new(Duration::from_secs(3600));
        b.extend(b"/w/a", &event(Action::Create, 1));
        b.moved(b"/w/a", b"/w/b");
        assert!(!b.contains(b"/w/a") && b.contains(b"/w/b"));
        assert!(b.due(Instant::now()).is_empty());
        let before = b.next_deadline().expect("deadline");
        b.postpone(b"/w/b");
        assert!(b.next_deadline().expect("deadline") >= before);
        b.end(b"/w/b");
        assert!(b.keys().is_empty());
    }
}
