//! Scheduling: what each event needs (its [`Step`]) and the order in which events on one
//! path are observed.
//!
//! Why: observations run in parallel, but two events on one path must be observed in the
//! order they happened, or the "after" of the first would be read after the second and
//! the baseline would end in the wrong state. So a path with an observation in flight
//! holds the events that come for it ([`PathQueues`]); they run, in their input order,
//! when it is done, and runs of the same kind share one observation (a burst of 10,000
//! chmods is observed once per batch). Held events are the engine's backlog: at its limit
//! new ones pass through without before/after values, counted, and a rescan repairs the
//! baseline. Results leave in input order through [`super::order`].

use std::collections::{HashMap, VecDeque};

use fim_core::event::{Action, FileEvent};

use super::order::Ticket;

/// What to do for one event (pure: depends only on the action and the burst state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
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

/// The step for an event of `action` on a path with a write burst open (`in_burst`) or not.
pub fn step_for(action: Action, in_burst: bool) -> Step {
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
        // Never accepted: the engine makes gap events itself and emits them in their turn;
        // rate-limit summaries are made after the engine.
        Action::Gap | Action::Suppressed => Step::Metadata,
    }
}

/// The paths with an observation in flight, and the events held behind each.
#[derive(Default)]
pub struct PathQueues {
    held: HashMap<Vec<u8>, VecDeque<(Ticket, FileEvent)>>,
    /// Events held, over every path.
    queued: usize,
}

impl PathQueues {
    /// Whether `key` has an observation in flight.
    pub fn is_busy(&self, key: &[u8]) -> bool {
        self.held.contains_key(key)
    }

    /// The first of `keys` that has an observation in flight.
    pub fn holder<'k>(&self, keys: &'k [Vec<u8>]) -> Option<&'k Vec<u8>> {
        keys.iter().find(|k| self.held.contains_key(*k))
    }

    /// Events held, over every path: the backlog.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// An observation of `keys` starts: events for them wait until it is released.
    pub fn hold(&mut self, keys: &[Vec<u8>]) {
        for k in keys {
            self.held.insert(k.clone(), VecDeque::new());
        }
    }

    /// Holds `ev` (and the events sharing its observation) behind `key`'s observation.
    pub fn wait_behind(
        &mut self,
        key: &[u8],
        ticket: Ticket,
        ev: FileEvent,
        followers: Vec<(Ticket, FileEvent)>,
    ) {
        if let Some(q) = self.held.get_mut(key) {
            self.queued += 1 + followers.len();
            q.push_back((ticket, ev));
            q.extend(followers);
        }
    }

    /// The observation of `keys` is done: the events held behind them, in input order.
    pub fn release(&mut self, keys: &[Vec<u8>]) -> Vec<(Ticket, FileEvent)> {
        let mut waiting = Vec::new();
        for k in keys {
            if let Some(q) = self.held.remove(k) {
                self.queued -= q.len();
                waiting.extend(q);
            }
        }
        waiting.sort_by_key(|(t, _)| *t);
        waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::order::Reorder;
    use fim_core::event::{PathSource, ReportedPath};

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

    #[test]
    fn events_held_behind_an_observation_come_back_in_input_order() {
        let mut order: Reorder<()> = Reorder::default();
        let ev = |p: &[u8]| {
            FileEvent::new(
                Action::Chmod,
                ReportedPath::new(p.to_vec(), PathSource::KernelObject),
                "test",
            )
        };
        let (a, b) = (b"/w/a".to_vec(), b"/w/b".to_vec());
        let mut q = PathQueues::default();
        // A rename holds both its names.
        q.hold(&[b.clone(), a.clone()]);
        assert!(q.is_busy(&a) && q.is_busy(&b));
        assert_eq!(q.holder(&[b"/w/c".to_vec(), a.clone()]), Some(&a));
        let (t1, t2, t3) = (order.ticket(), order.ticket(), order.ticket());
        q.wait_behind(&a, t2, ev(&a), Vec::new());
        q.wait_behind(&b, t1, ev(&b), vec![(t3, ev(&b))]);
        assert_eq!(q.queued(), 3);
        let back = q.release(&[b.clone(), a.clone()]);
        assert_eq!(
            back.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            [t1, t2, t3]
        );
        assert_eq!(q.queued(), 0);
        assert!(!q.is_busy(&a));
    }
}
