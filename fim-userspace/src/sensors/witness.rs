//! `auto` on a kernel whose eBPF allows only tracepoints: the tracepoint tier names every
//! operation it can (its kind, order, time and thread, one event each), and fanotify, which
//! sees objects however they were reached, is its witness. A fanotify event that no
//! tracepoint event explains (same thread, same kind of change, same name) is an operation
//! the syscall strings missed: a rename through a bind mount or `dir-symlink/..`, a write
//! through io_uring or through a hard link made while running, the last release of a file
//! written through `mmap`. Only those are reported from fanotify; every other fanotify event
//! is a duplicate and is dropped.
//!
//! Order: each thread's operations are seen in order by both sensors (the ring keeps a
//! thread's records in order, and so does fanotify's queue). A fanotify-only event is put
//! where its neighbours in the fanotify queue put it: after the tracepoint event that
//! explained the fanotify event before it, before the one that explains the fanotify event
//! after it. So a thread's tracepoint events wait while an earlier fanotify event of the
//! same thread awaits its verdict.
//!
//! Timing: fanotify queues its event inside the syscall, the tracepoint tier writes its
//! record at the syscall's exit. The sensor loop drains the ring, then reads fanotify until
//! its queue is empty, then calls [`Merger::release`]: every fanotify event of an operation
//! whose tracepoint record was drained is in hand by then. A fanotify event nothing explains
//! is judged a round later (and at least [`JUDGE_AFTER_NS`] after it was read, or
//! [`JUDGE_LATE_NS`] if its thread has shown no tracepoint record since), once the
//! syscall it came from has surely exited. This module is the bookkeeping only: no
//! syscalls, no tasks.

use std::collections::{HashMap, VecDeque};

use fim_core::event::{Action, FileEvent};

/// Tracepoint events remembered for explaining fanotify events, at most: a fanotify event
/// read later than this many tracepoint events after its operation is judged unexplained
/// (reported twice rather than lost).
const REMEMBERED_MAX: usize = 131_072;

/// How long after it was read a fanotify event nothing explains is judged, at the soonest:
/// once its thread has shown a later tracepoint record (a thread's records come in order,
/// so the syscall it came from has exited, and its own record would be drained).
pub const JUDGE_AFTER_NS: i128 = 2_000_000;

/// How long a fanotify event nothing explains waits for that proof, at most: a thread the
/// tracepoint tier never sees (an io_uring worker, writeback of an `mmap`) gives none, and
/// a syscall preempted between queueing its fanotify event and writing its record may take
/// longer than [`JUDGE_AFTER_NS`] (judged then, it was reported twice under load).
pub const JUDGE_LATE_NS: i128 = 20_000_000;

/// What kind of change an event is, as far as both sensors can tell it apart (fanotify
/// merges, and says "attributes" for chmod, chown, xattrs and times alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Class {
    /// The content (writes, truncation, allocation).
    Modify,
    /// The close of a file open for writing.
    Close,
    /// Mode, owner, extended attributes, times, link count.
    Attributes,
    /// A name appeared (create, link, symlink, mkdir, mknod).
    Appear,
    /// A name went away (unlink, rmdir).
    Remove,
    /// A name moved.
    Rename,
}

/// The classes of change `action` stands for; empty for what no sensor reports in real time.
fn classes(action: Action) -> &'static [Class] {
    use Class::*;
    match action {
        // An open with O_TRUNC is a modification for fanotify.
        Action::OpenWrite | Action::Write | Action::Truncate | Action::Fallocate => &[Modify],
        Action::CloseWrite => &[Close],
        Action::Chmod
        | Action::Chown
        | Action::SetXattr
        | Action::RemoveXattr
        | Action::Utimes
        | Action::Attrib => &[Attributes],
        // A link or an unlink changes the object's link count (an attribute for fanotify).
        Action::Link | Action::Unlink => &[Appear, Remove, Attributes],
        Action::Create | Action::Symlink | Action::Mknod | Action::Mkdir => &[Appear],
        Action::Rmdir => &[Remove],
        Action::Rename => &[Rename],
        // The engine's and the scanner's, never a sensor's.
        Action::Modified
        | Action::Added
        | Action::Removed
        | Action::Changed
        | Action::Gap
        | Action::Suppressed => &[],
    }
}

/// The last component of a path.
fn basename(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

fn tid_of(ev: &FileEvent) -> u32 {
    ev.process.as_ref().map_or(0, |p| p.tid)
}

/// What explains what: a thread, a class of change, a name (the name by a keyed 64-bit
/// hash: no allocation or byte comparison per event, and a collision an attacker cannot aim
/// at, the key being random per run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    tid: u32,
    class: Class,
    name: u64,
}

/// The keyed hash of a name, for [`Key`].
fn name_hash(name: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(std::collections::hash_map::RandomState::new)
        .hash_one(name)
}

/// The hasher of the witness's maps. Their keys are thread ids and [`Key`]s, whose name
/// part is already a keyed SipHash ([`name_hash`]): mixing the fields with a multiply is
/// enough, where a second SipHash per lookup cost more than the rest of the bookkeeping.
#[derive(Default, Clone, Copy)]
struct Mix(u64);

impl Mix {
    fn add(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

/// A map of the witness (see [`Mix`]).
type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Mix>>;

/// One key per class of `ev`'s action and per name in `names`.
fn keys_on(ev: &FileEvent, names: &[&[u8]]) -> Vec<Key> {
    let tid = tid_of(ev);
    classes(ev.action)
        .iter()
        .flat_map(|&class| {
            names.iter().map(move |name| Key {
                tid,
                class,
                name: name_hash(basename(name)),
            })
        })
        .collect()
}

/// The keys a tracepoint event is known by: per class, its name (and for a link or a
/// rename, the other name too, whose link count or directory changed), each once.
fn keys(ev: &FileEvent) -> Vec<Key> {
    let mut keys = match &ev.source {
        Some(s) => keys_on(ev, &[&ev.path.bytes, &s.bytes]),
        None => keys_on(ev, &[&ev.path.bytes]),
    };
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Whether held tracepoint event `h` explains a fanotify event that `needs` these keys.
fn explains(needs: &[Key], h: &Held) -> bool {
    needs.iter().all(|k| h.keys.contains(k))
}

/// The keys a fanotify event needs explained: one per class of its action, on its name.
fn needs(ev: &FileEvent) -> Vec<Key> {
    keys_on(ev, &[&ev.path.bytes])
}

/// Tracepoint events' keys, remembered in a bounded window.
#[derive(Default)]
struct Remembered {
    counts: FastMap<Key, u32>,
    order: VecDeque<Key>,
}

impl Remembered {
    fn add(&mut self, keys: Vec<Key>) {
        for key in keys {
            *self.counts.entry(key).or_default() += 1;
            self.order.push_back(key);
        }
        while self.order.len() > REMEMBERED_MAX {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(n) = self.counts.get_mut(&old) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(&old);
                }
            }
        }
    }

    fn has_all(&self, keys: &[Key]) -> bool {
        keys.iter().all(|k| self.counts.contains_key(k))
    }
}

/// A fanotify event waiting for its verdict.
struct Waiting {
    ev: FileEvent,
    keys: Vec<Key>,
    round: u64,
    read_ns: i128,
    /// Ring position of the last tracepoint event drained before it was read.
    mark: u64,
}

/// A tracepoint event held, with its place in the ring's order.
struct Held {
    ev: FileEvent,
    keys: Vec<Key>,
    arrival: u64,
}

/// One thread's events not yet released.
#[derive(Default)]
struct Thread {
    tracepoint: VecDeque<Held>,
    /// The arrivals of `tracepoint`'s events by key, in order: finding the first event that
    /// explains a fanotify event is a lookup, not a scan of every event held.
    by_key: FastMap<Key, VecDeque<u64>>,
    /// How many of `tracepoint`, from the front, may go out (their place is known).
    eligible: usize,
    fanotify: VecDeque<Waiting>,
    /// What only fanotify saw, judged, waiting for its place: (anchor, rank, event).
    witnessed: Vec<(u64, u64, FileEvent)>,
    /// The ring position of this thread's last eligible tracepoint event: a fanotify-only
    /// event comes right after it.
    anchor: u64,
    /// Fanotify-only events placed after `anchor` so far.
    rank: u64,
}

impl Thread {
    /// The position of the first held tracepoint event that has every key of `keys`.
    fn first_explaining(&self, keys: &[Key]) -> Option<usize> {
        let Some(first_key) = keys.first() else {
            // Nothing to explain: the first event held does.
            return (!self.tracepoint.is_empty()).then_some(0);
        };
        self.by_key.get(first_key)?.iter().find_map(|&arrival| {
            let at = self
                .tracepoint
                .binary_search_by_key(&arrival, |h| h.arrival)
                .ok()?;
            explains(keys, &self.tracepoint[at]).then_some(at)
        })
    }

    /// Takes the oldest held tracepoint event out, and out of the index.
    fn pop_front(&mut self) -> Option<Held> {
        let h = self.tracepoint.pop_front()?;
        for k in &h.keys {
            if let Some(arrivals) = self.by_key.get_mut(k) {
                if arrivals.front() == Some(&h.arrival) {
                    arrivals.pop_front();
                }
                if arrivals.is_empty() {
                    self.by_key.remove(k);
                }
            }
        }
        Some(h)
    }
}

/// Which sensor reported an event that goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    /// The tracepoint tier reported it.
    Tracepoint,
    /// Only fanotify saw it.
    Fanotify,
}

/// Interleaves the tracepoint tier's events with what only fanotify saw (see the module).
#[derive(Default)]
pub struct Merger {
    seen: Remembered,
    threads: FastMap<u32, Thread>,
    arrivals: u64,
    round: u64,
    /// fanotify events a tracepoint event explained (dropped).
    pub explained: u64,
    /// fanotify events nothing explained (reported).
    pub unexplained: u64,
}

impl Merger {
    /// A round begins: the ring is about to be drained, then fanotify read until empty.
    pub fn begin_round(&mut self) {
        self.round += 1;
    }

    /// An event the tracepoint tier reported.
    pub fn tracepoint(&mut self, ev: FileEvent) {
        let keys = keys(&ev);
        self.seen.add(keys.clone());
        self.arrivals += 1;
        let arrival = self.arrivals;
        let thread = self.threads.entry(tid_of(&ev)).or_default();
        for k in &keys {
            thread.by_key.entry(*k).or_default().push_back(arrival);
        }
        thread.tracepoint.push_back(Held { ev, keys, arrival });
    }

    /// An event fanotify reported, read at `now_ns`.
    pub fn fanotify(&mut self, ev: FileEvent, now_ns: i128) {
        let keys = needs(&ev);
        let (round, mark) = (self.round, self.arrivals);
        self.threads
            .entry(tid_of(&ev))
            .or_default()
            .fanotify
            .push_back(Waiting {
                ev,
                keys,
                round,
                read_ns: now_ns,
                mark,
            });
    }

    /// Tracepoint events held, fanotify events waiting (for the log).
    pub fn held(&self) -> (usize, usize) {
        self.threads.values().fold((0, 0), |(a, b), t| {
            (a + t.tracepoint.len(), b + t.fanotify.len())
        })
    }

    /// Whether fanotify events are waiting for a verdict (the loop should come back soon).
    pub fn waiting(&self) -> bool {
        self.threads.values().any(|t| !t.fanotify.is_empty())
    }

    /// Everything that can go out now, in order; with `all`, everything (stopping: the last
    /// drain is done). Fanotify events come with thread id only as their process.
    ///
    /// A thread whose fanotify event awaits its verdict holds back the tracepoint events of
    /// every thread drained after that event was read (and after the thread's last
    /// explained one): the ring's order is the order things happened in, and a
    /// fanotify-only event may still have to go before them. Events drained before it was
    /// read go (a thread that only fanotify sees, such as an io_uring worker, never holds
    /// back more than a round).
    pub fn release(&mut self, now_ns: i128, all: bool) -> Vec<(FileEvent, Reporter)> {
        let round = self.round;
        let mut barrier = u64::MAX;
        for thread in self.threads.values_mut() {
            let mut blocked = None;
            while let Some(w) = thread.fanotify.front() {
                if let Some(first) = thread.first_explaining(&w.keys) {
                    // Explained: what the tracepoint tier reported up to its explainer goes
                    // first. One fanotify record may stand for several operations in a row
                    // (the kernel merges): the whole run goes.
                    let end = first
                        + 1
                        + thread
                            .tracepoint
                            .iter()
                            .skip(first + 1)
                            .take_while(|h| explains(&w.keys, h))
                            .count();
                    if end > thread.eligible {
                        thread.eligible = end;
                        thread.anchor = thread.tracepoint[end - 1].arrival;
                        thread.rank = 0;
                    }
                    thread.fanotify.pop_front();
                    self.explained += 1;
                    continue;
                }
                // Its own tracepoint record may not be drained yet: wait for it rather than
                // take an older event of the same kind for it.
                let age = now_ns - w.read_ns;
                let moved_on = thread.tracepoint.back().is_some_and(|h| h.arrival > w.mark);
                let judged = all
                    || (round > w.round
                        && age >= JUDGE_AFTER_NS
                        && (moved_on || age >= JUDGE_LATE_NS));
                if !judged {
                    blocked = Some(w.mark);
                    break;
                }
                let Some(w) = thread.fanotify.pop_front() else {
                    break;
                };
                if self.seen.has_all(&w.keys) {
                    // Another report of something already out (fanotify reports a burst of
                    // writes once per read, the tracepoint tier once per open).
                    self.explained += 1;
                    continue;
                }
                self.unexplained += 1;
                thread.rank += 1;
                thread.witnessed.push((thread.anchor, thread.rank, w.ev));
            }
            if let Some(mark) = blocked {
                barrier = barrier.min(thread.anchor.max(mark) + 1);
            } else if let Some(last) = thread.tracepoint.back() {
                thread.eligible = thread.tracepoint.len();
                thread.anchor = last.arrival;
                thread.rank = 0;
            }
        }
        // Sorted by (ring position of the tracepoint event it follows, place after it,
        // thread): a thread's own order, and the ring's order across threads.
        let mut out: Vec<((u64, u64, u32), FileEvent, Reporter)> = Vec::new();
        for (&tid, thread) in &mut self.threads {
            while thread.eligible > 0
                && thread
                    .tracepoint
                    .front()
                    .is_some_and(|h| h.arrival < barrier)
            {
                let Some(h) = thread.pop_front() else {
                    break;
                };
                thread.eligible -= 1;
                out.push(((h.arrival, 0, tid), h.ev, Reporter::Tracepoint));
            }
            let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut thread.witnessed)
                .into_iter()
                .partition(|(anchor, _, _)| *anchor < barrier);
            thread.witnessed = later;
            for (anchor, rank, ev) in now {
                out.push(((anchor, rank, tid), ev, Reporter::Fanotify));
            }
        }
        // A thread with nothing pending is forgotten: every event of it is out, so a
        // fanotify-only event it makes later goes before anything still to come (anchor 0).
        self.threads.retain(|_, t| {
            !t.fanotify.is_empty() || !t.tracepoint.is_empty() || !t.witnessed.is_empty()
        });
        out.sort_by_key(|(order, _, _)| *order);
        out.into_iter().map(|(_, ev, from)| (ev, from)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fim_core::event::{PathSource, Process, ReportedPath};

    fn ev(action: Action, path: &str, tid: u32) -> FileEvent {
        let mut e = FileEvent::new(
            action,
            ReportedPath::new(path.as_bytes().to_vec(), PathSource::SyscallString),
            "test",
        );
        e.process = Some(Process {
            tid,
            ..Process::default()
        });
        e
    }

    fn names(out: &[(FileEvent, Reporter)]) -> Vec<String> {
        out.iter()
            .map(|(e, from)| {
                format!(
                    "{} {} {from:?}",
                    e.action.as_str(),
                    String::from_utf8_lossy(&e.path.bytes)
                )
            })
            .collect()
    }

    const MS: i128 = 1_000_000;
    /// Past the longest wait for a verdict.
    const LATE: i128 = JUDGE_LATE_NS + MS;

    #[test]
    fn each_fanotify_event_is_explained_by_the_first_matching_event_in_a_long_round() {
        let mut m = Merger::default();
        m.begin_round();
        for i in 0..2_000 {
            m.tracepoint(ev(Action::Write, &format!("/w/f{}", i % 3), 7));
            m.tracepoint(ev(Action::Chmod, &format!("/w/f{}", i % 3), 7));
        }
        // The kernel merged the first writes of f0 (one record), then reports the rest in
        // turn; an io_uring write on g only fanotify saw falls between f1's and f2's.
        m.fanotify(ev(Action::Write, "/w/f0", 7), 0);
        m.fanotify(ev(Action::Attrib, "/w/f0", 7), 0);
        m.fanotify(ev(Action::Write, "/w/f1", 7), 0);
        m.fanotify(ev(Action::Write, "/w/g", 7), 0);
        m.fanotify(ev(Action::Attrib, "/w/f1", 7), 0);
        let out = m.release(0, false);
        assert!(out.is_empty() || out.iter().all(|(_, r)| *r == Reporter::Tracepoint));
        m.begin_round();
        let rest = m.release(LATE, false);
        let out: Vec<_> = out.into_iter().chain(rest).collect();
        assert_eq!(out.len(), 4_001);
        assert_eq!((m.explained, m.unexplained), (4, 1));
        // The fanotify-only write comes right after what explained the event before it
        // (f1's write, the third tracepoint event).
        let at = out
            .iter()
            .position(|(_, r)| *r == Reporter::Fanotify)
            .expect("the io_uring write");
        assert_eq!(at, 3, "{:?}", &names(&out[..6]));
        assert_eq!(m.held(), (0, 0));
    }

    #[test]
    fn duplicates_are_dropped_and_tracepoint_events_go_out_at_once() {
        let mut m = Merger::default();
        m.begin_round();
        m.tracepoint(ev(Action::Chmod, "/w/a", 7));
        m.tracepoint(ev(Action::OpenWrite, "/w/b", 7));
        m.tracepoint(ev(Action::Write, "/w/b", 7));
        m.fanotify(ev(Action::Attrib, "/w/a", 7), 0);
        m.fanotify(ev(Action::Write, "/w/b", 7), 0);
        // A second report of the same burst, explained by the same run.
        m.fanotify(ev(Action::Write, "/w/b", 7), 0);
        assert_eq!(
            names(&m.release(0, false)),
            [
                "chmod /w/a Tracepoint",
                "open_write /w/b Tracepoint",
                "write /w/b Tracepoint"
            ]
        );
        assert_eq!((m.explained, m.unexplained), (3, 0));
        assert!(!m.waiting());
        // A third report, read once those went out: dropped once judged.
        m.begin_round();
        m.fanotify(ev(Action::Write, "/w/b", 7), 0);
        assert!(m.release(0, false).is_empty());
        assert!(m.waiting());
        m.begin_round();
        assert!(m.release(LATE, false).is_empty());
        assert_eq!((m.explained, m.unexplained), (4, 0));
        assert!(!m.waiting());
    }

    #[test]
    fn what_only_fanotify_saw_goes_where_the_fanotify_queue_puts_it() {
        // chmod through `sl/..` (resolved by both), rename through `sl/..` (a string the
        // tracepoint tier cannot trust), chmod of the new name (both).
        let mut m = Merger::default();
        m.begin_round();
        m.tracepoint(ev(Action::Chmod, "/w/f", 7));
        m.tracepoint(ev(Action::Chmod, "/w/g", 7));
        m.fanotify(ev(Action::Attrib, "/w/f", 7), 0);
        let mut r = ev(Action::Rename, "/w/g", 7);
        r.source = Some(ReportedPath::new(b"/w/f".to_vec(), PathSource::FileHandle));
        m.fanotify(r, 0);
        m.fanotify(ev(Action::Attrib, "/w/g", 7), 0);
        // The rename waits for its verdict, and the chmod of `g` with it.
        assert_eq!(names(&m.release(0, false)), ["chmod /w/f Tracepoint"]);
        assert!(m.waiting());
        // Same round, later: still waiting (its tracepoint record may not be drained yet).
        assert!(m.release(10 * MS, false).is_empty());
        m.begin_round();
        assert!(
            m.release(MS, false).is_empty(),
            "too soon after it was read"
        );
        assert_eq!(
            names(&m.release(LATE, false)),
            ["rename /w/g Fanotify", "chmod /w/g Tracepoint"]
        );
        assert_eq!((m.explained, m.unexplained), (2, 1));
    }

    #[test]
    fn a_merged_record_releases_the_run_of_operations_it_stands_for() {
        // open, append, close, then a rename through a bind mount: fanotify merged the
        // write and the close into one record (decoded as two events).
        let mut m = Merger::default();
        m.begin_round();
        for a in [Action::OpenWrite, Action::Write, Action::CloseWrite] {
            m.tracepoint(ev(a, "/w/g", 7));
        }
        m.fanotify(ev(Action::Write, "/w/g", 7), 0);
        m.fanotify(ev(Action::CloseWrite, "/w/g", 7), 0);
        let mut r = ev(Action::Rename, "/w/h", 7);
        r.source = Some(ReportedPath::new(b"/w/g".to_vec(), PathSource::FileHandle));
        m.fanotify(r, 0);
        assert_eq!(
            names(&m.release(0, false)),
            [
                "open_write /w/g Tracepoint",
                "write /w/g Tracepoint",
                "close_write /w/g Tracepoint"
            ]
        );
        m.begin_round();
        assert_eq!(names(&m.release(LATE, false)), ["rename /w/h Fanotify"]);
    }

    #[test]
    fn a_close_drained_after_its_fanotify_record_still_goes_before_what_followed_it() {
        // The ring was drained before the close's syscall exited, fanotify read after the
        // rename that followed it.
        let mut m = Merger::default();
        m.begin_round();
        m.tracepoint(ev(Action::Write, "/w/g", 7));
        m.fanotify(ev(Action::Write, "/w/g", 7), 0);
        m.fanotify(ev(Action::CloseWrite, "/w/g", 7), 0);
        let mut r = ev(Action::Rename, "/w/h", 7);
        r.source = Some(ReportedPath::new(b"/w/g".to_vec(), PathSource::FileHandle));
        m.fanotify(r, 0);
        assert_eq!(names(&m.release(0, false)), ["write /w/g Tracepoint"]);
        m.begin_round();
        m.tracepoint(ev(Action::CloseWrite, "/w/g", 7));
        assert_eq!(
            names(&m.release(LATE, false)),
            ["close_write /w/g Tracepoint", "rename /w/h Fanotify"]
        );
    }

    #[test]
    fn a_thread_awaiting_a_verdict_holds_back_later_events_of_other_threads() {
        let mut m = Merger::default();
        m.begin_round();
        m.tracepoint(ev(Action::Chmod, "/w/g", 7));
        m.fanotify(ev(Action::Attrib, "/w/g", 7), 0);
        let mut r = ev(Action::Rename, "/w/h", 7);
        r.source = Some(ReportedPath::new(b"/w/g".to_vec(), PathSource::FileHandle));
        m.fanotify(r, 0);
        // Another thread acts after: its event waits for the rename's verdict.
        m.tracepoint(ev(Action::Mkdir, "/w/end", 8));
        m.fanotify(ev(Action::Mkdir, "/w/end", 8), 0);
        assert_eq!(names(&m.release(0, false)), ["chmod /w/g Tracepoint"]);
        m.begin_round();
        assert_eq!(
            names(&m.release(LATE, false)),
            ["rename /w/h Fanotify", "mkdir /w/end Tracepoint"]
        );
    }

    #[test]
    fn a_thread_only_fanotify_sees_holds_back_only_what_came_after_it() {
        let mut m = Merger::default();
        m.begin_round();
        m.tracepoint(ev(Action::Chmod, "/w/a", 7));
        // An io_uring worker's write, read after the chmod was drained.
        m.fanotify(ev(Action::Write, "/w/u", 9), 0);
        m.fanotify(ev(Action::Attrib, "/w/a", 7), 0);
        m.tracepoint(ev(Action::Chmod, "/w/b", 7));
        m.fanotify(ev(Action::Attrib, "/w/b", 7), 0);
        // The chmod of `a` came before the worker's write was read: it goes; `b` waits.
        assert_eq!(names(&m.release(0, false)), ["chmod /w/a Tracepoint"]);
        m.begin_round();
        assert_eq!(
            names(&m.release(LATE, false)),
            ["write /w/u Fanotify", "chmod /w/b Tracepoint"]
        );
    }

    #[test]
    fn an_explainer_drained_a_round_later_still_explains() {
        let mut m = Merger::default();
        m.begin_round();
        m.fanotify(ev(Action::Unlink, "/w/a", 7), 0);
        assert!(m.release(0, false).is_empty());
        m.begin_round();
        m.tracepoint(ev(Action::Unlink, "/w/a", 7));
        assert_eq!(names(&m.release(5 * MS, false)), ["unlink /w/a Tracepoint"]);
        assert_eq!((m.explained, m.unexplained), (1, 0));
    }

    #[test]
    fn an_explainer_drained_after_the_short_wait_still_explains_when_the_thread_showed_nothing_since()
     {
        // The syscall was preempted between queueing its fanotify event and writing its
        // tracepoint record: no record of the thread since, so no verdict yet.
        let mut m = Merger::default();
        m.begin_round();
        m.fanotify(ev(Action::Unlink, "/w/a", 7), 0);
        m.begin_round();
        assert!(m.release(5 * MS, false).is_empty());
        m.begin_round();
        m.tracepoint(ev(Action::Unlink, "/w/a", 7));
        assert_eq!(
            names(&m.release(15 * MS, false)),
            ["unlink /w/a Tracepoint"]
        );
        assert_eq!((m.explained, m.unexplained), (1, 0));
    }

    #[test]
    fn a_later_record_of_the_same_thread_lets_the_verdict_come_after_the_short_wait() {
        // A rename through `sl/..` only fanotify names right; the thread's next call (a
        // chmod) shows the rename has exited: judged after the short wait, not the long one.
        let mut m = Merger::default();
        m.begin_round();
        let mut r = ev(Action::Rename, "/w/g", 7);
        r.source = Some(ReportedPath::new(b"/w/f".to_vec(), PathSource::FileHandle));
        m.fanotify(r, 0);
        assert!(m.release(0, false).is_empty());
        m.begin_round();
        m.tracepoint(ev(Action::Chmod, "/w/g", 7));
        assert!(
            m.release(MS, false).is_empty(),
            "too soon after it was read"
        );
        assert_eq!(
            names(&m.release(3 * MS, false)),
            ["rename /w/g Fanotify", "chmod /w/g Tracepoint"]
        );
        assert_eq!((m.explained, m.unexplained), (0, 1));
    }

    #[test]
    fn other_threads_names_and_kinds_do_not_explain() {
        let mut m = Merger::default();
        m.begin_round();
        m.tracepoint(ev(Action::Chmod, "/w/a", 7));
        m.fanotify(ev(Action::Attrib, "/w/a", 8), 0);
        m.fanotify(ev(Action::Attrib, "/w/c", 7), 0);
        m.fanotify(ev(Action::Unlink, "/w/a", 7), 0);
        let mut r = ev(Action::Rename, "/w/c", 7);
        r.source = Some(ReportedPath::new(b"/w/a".to_vec(), PathSource::FileHandle));
        m.fanotify(r, 0);
        let mut out = names(&m.release(0, true));
        out.sort();
        assert_eq!(
            out,
            [
                "attrib /w/a Fanotify",
                "attrib /w/c Fanotify",
                "chmod /w/a Tracepoint",
                "rename /w/c Fanotify",
                "unlink /w/a Fanotify",
            ]
        );
        assert_eq!((m.explained, m.unexplained), (0, 4));
    }

    #[test]
    fn memory_is_bounded_and_forgets_the_oldest_first() {
        let mut seen = Remembered::default();
        let first = keys(&ev(Action::Mkdir, "/w/first", 1));
        seen.add(first.clone());
        for i in 0..REMEMBERED_MAX {
            seen.add(keys(&ev(Action::Chmod, &format!("/w/{i}"), 2)));
        }
        assert!(!seen.has_all(&first));
        assert!(seen.has_all(&keys(&ev(
            Action::Chmod,
            &format!("/w/{}", REMEMBERED_MAX - 1),
            2
        ))));
        assert!(seen.order.len() <= REMEMBERED_MAX);
        assert!(seen.counts.len() <= REMEMBERED_MAX);
    }
}
