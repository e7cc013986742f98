//! Pairing announced operations with their outcomes (LSM and fentry tiers).
//!
//! A pre-operation hook announces an event before the kernel does the operation; an fexit
//! program on the `vfs_*` function then sends the outcome for the same thread. A thread
//! does one operation at a time, and the ring buffer keeps each thread's records in order,
//! so the outcome always belongs to the thread's latest announcement. Pure: no I/O.

use std::collections::HashMap;

use fim_core::event::{Action, FileEvent};

/// How long an announcement waits for its outcome. An operation refused before its `vfs_*`
/// function ran (by another LSM, say) never gets one.
pub const OUTCOME_WAIT_NS: i128 = 5_000_000_000;

/// Announcements waiting for their outcome, by thread.
#[derive(Default)]
pub struct Pairing {
    waiting: HashMap<u32, FileEvent>,
    /// Operations whose outcome said they failed (not reported), since [`Self::take_counts`].
    pub failed: u64,
    /// Announcements replaced by a newer one of the same thread before an outcome came: an
    /// `O_CREAT` open passes the mknod hook first, then announces itself as a create.
    pub superseded: u64,
    /// Announcements that waited longer than [`OUTCOME_WAIT_NS`].
    pub expired: u64,
}

impl Pairing {
    /// Holds `event`, announced by `tid`, until its outcome.
    pub fn announce(&mut self, tid: u32, event: FileEvent) {
        if self.waiting.insert(tid, event).is_some() {
            self.superseded += 1;
        }
    }

    /// The event `tid` announced, if the operation succeeded.
    pub fn outcome(&mut self, tid: u32, failed: bool, size: u64) -> Option<FileEvent> {
        let mut event = self.waiting.remove(&tid)?;
        if failed {
            self.failed += 1;
            return None;
        }
        if event.action == Action::Truncate {
            event.truncate_length = Some(size);
        }
        Some(event)
    }

    /// Forgets announcements made before `now_ns - OUTCOME_WAIT_NS`.
    pub fn expire(&mut self, now_ns: i128) {
        let before = self.waiting.len();
        self.waiting
            .retain(|_, e| now_ns - e.time_unix_ns < OUTCOME_WAIT_NS);
        self.expired += (before - self.waiting.len()) as u64;
    }

    /// The counts of announcements failed, expired and superseded since the last call.
    pub fn take_counts(&mut self) -> [u64; 3] {
        let counts = [self.failed, self.expired, self.superseded];
        (self.failed, self.expired, self.superseded) = (0, 0, 0);
        counts
    }

    /// Announcements still waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fim_core::event::{PathSource, ReportedPath};

    fn event(action: Action, at: i128) -> FileEvent {
        let mut e = FileEvent::new(
            action,
            ReportedPath::new(b"/w/f".to_vec(), PathSource::KernelObject),
            "test",
        );
        e.time_unix_ns = at;
        e
    }

    #[test]
    fn a_succeeded_operation_is_reported_once_and_a_failed_one_never() {
        let mut p = Pairing::default();
        p.announce(7, event(Action::Unlink, 0));
        p.announce(8, event(Action::Rmdir, 0));
        let ok = p.outcome(7, false, 0).expect("reported");
        assert_eq!(ok.action, Action::Unlink);
        assert!(p.outcome(7, false, 0).is_none(), "an outcome pairs once");
        assert!(p.outcome(8, true, 0).is_none());
        assert_eq!((p.failed, p.waiting()), (1, 0));
        assert!(
            p.outcome(9, false, 0).is_none(),
            "nothing was announced by 9"
        );
    }

    #[test]
    fn the_latest_announcement_of_a_thread_takes_the_outcome() {
        let mut p = Pairing::default();
        p.announce(7, event(Action::Mknod, 0));
        p.announce(7, event(Action::Create, 0));
        assert_eq!(
            p.outcome(7, false, 0).expect("create").action,
            Action::Create
        );
        assert_eq!(p.superseded, 1);
    }

    #[test]
    fn a_truncate_takes_its_length_from_the_outcome() {
        let mut p = Pairing::default();
        p.announce(3, event(Action::Truncate, 0));
        let e = p.outcome(3, false, 4).expect("truncate");
        assert_eq!(e.truncate_length, Some(4));
    }

    #[test]
    fn announcements_without_an_outcome_expire() {
        let mut p = Pairing::default();
        p.announce(1, event(Action::Chmod, 0));
        p.announce(2, event(Action::Chmod, OUTCOME_WAIT_NS));
        p.expire(OUTCOME_WAIT_NS + 1);
        assert_eq!((p.expired, p.waiting()), (1, 1));
        assert!(p.outcome(1, false, 0).is_none());
        assert!(p.outcome(2, false, 0).is_some());
    }
}
