//! The integrity engine, unit-tested without root: real files in a temporary directory, a
//! temporary baseline, and a scripted source (the events a sensor would have sent for what
//! the test did on disk). Each test asserts the values the engine reports and what it
//! counted.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fim_core::{
    attrs::{Attr, Content},
    event::{Action, FileEvent, Losses, Origin, PathSource, ReportedPath},
    hash::sha256,
    telemetry::{self, Telemetry},
    watch::{WatchSet, probe_disk},
};

use super::{
    engine::{Engine, EngineConfig, EngineError, Input, Rewatch},
    observe::Limits,
};

/// How long a test waits for the engine.
const WAIT: Duration = Duration::from_secs(20);

/// A running engine fed by the test.
struct Harness {
    input: Option<flume::Sender<Input>>,
    output: flume::Receiver<Vec<FileEvent>>,
    telemetry: Arc<Telemetry>,
    /// What the scripted source says it lost so far.
    lost: Arc<Mutex<Losses>>,
    thread: Option<std::thread::JoinHandle<Result<(), EngineError>>>,
}

fn config(state: &Path, max_backlog: usize) -> EngineConfig {
    EngineConfig {
        state_dir: state.to_path_buf(),
        limits: Limits::default(),
        quiet: Duration::from_secs(3600),
        rescan_interval: None,
        workers: 2,
        max_backlog,
    }
}

impl Harness {
    /// Starts the engine on `dir` with its baseline in `state`, and waits for its first
    /// scan (building or reconciling the baseline) to end.
    fn start(dir: &Path, state: &Path, max_backlog: usize) -> Self {
        let watch = Arc::new(watch_set(&[dir]));
        let telemetry = Arc::new(Telemetry::default());
        let (out_tx, output) = flume::bounded(1024);
        let engine = Engine::start(
            config(state, max_backlog),
            watch,
            Box::new(super::engine::ChannelOutput::new(out_tx)),
            telemetry.clone(),
            None,
        )
        .expect("engine starts");
        let (input, input_rx) = flume::bounded(64);
        let lost = Arc::new(Mutex::new(Losses::default()));
        let reader = lost.clone();
        let thread =
            std::thread::spawn(move || engine.run(&input_rx, || *reader.lock().expect("losses")));
        let h = Self {
            input: Some(input),
            output,
            telemetry,
            lost,
            thread: Some(thread),
        };
        h.until("the first scan ends", || {
            h.telemetry.get(telemetry::SCANS, &[Origin::Start.as_str()]) == 1
        });
        h
    }

    fn until(&self, what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Hands the engine one batch, as a sensor would.
    fn send(&self, batch: Vec<FileEvent>) {
        self.input
            .as_ref()
            .expect("running")
            .send(Input::Events(batch))
            .expect("engine running");
    }

    /// A live reload: from now on, `dirs` are watched.
    fn rewatch(&self, dirs: &[&Path]) {
        self.input
            .as_ref()
            .expect("running")
            .send(Input::Rewatch(Box::new(Rewatch {
                watch: Arc::new(watch_set(dirs)),
                limits: Limits::default(),
            })))
            .expect("engine running");
    }

    /// The next `n` events the engine reports.
    fn take(&mut self, n: usize) -> Vec<FileEvent> {
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::new();
        while got.len() < n {
            match self.output.try_recv() {
                Ok(batch) => got.extend(batch),
                Err(_) => {
                    assert!(
                        Instant::now() < deadline,
                        "{} of {n} events reported: {got:#?}",
                        got.len()
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        assert_eq!(got.len(), n, "more than expected: {got:#?}");
        got
    }

    /// Closes the input (the source stopped) and returns what the engine still reports.
    fn stop(mut self) -> Vec<FileEvent> {
        drop(self.input.take());
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("engine thread")
            .expect("engine ends cleanly");
        let mut rest = Vec::new();
        while let Ok(batch) = self.output.try_recv() {
            rest.extend(batch);
        }
        rest
    }
}

/// The watch set of directories `dirs`.
fn watch_set(dirs: &[&Path]) -> WatchSet {
    let patterns: Vec<String> = dirs
        .iter()
        .map(|d| d.to_str().expect("utf-8").to_owned())
        .collect();
    WatchSet::new(&patterns, true, probe_disk).expect("watch set")
}

fn event(action: Action, path: &Path) -> FileEvent {
    FileEvent::new(
        action,
        ReportedPath::new(
            path.to_str().expect("utf-8").as_bytes().to_vec(),
            PathSource::KernelObject,
        ),
        "script",
    )
}

fn rename(from: &Path, to: &Path) -> FileEvent {
    let mut ev = event(Action::Rename, to);
    ev.source = Some(ReportedPath::new(
        from.to_str().expect("utf-8").as_bytes().to_vec(),
        PathSource::KernelObject,
    ));
    ev
}

fn digest(ev: &FileEvent, which: fn(&fim_core::event::Integrity) -> Option<&Content>) -> [u8; 32] {
    let i = ev.integrity.as_ref().expect("enriched");
    match which(i) {
        Some(Content::Sha256(d)) => *d,
        other => panic!("no digest ({other:?}) in {ev:#?}"),
    }
}

fn before(i: &fim_core::event::Integrity) -> Option<&Content> {
    i.before.as_ref().and_then(|s| s.content.as_ref())
}

fn after(i: &fim_core::event::Integrity) -> Option<&Content> {
    i.after.as_ref().and_then(|s| s.content.as_ref())
}

fn dirs() -> (tempfile::TempDir, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("state");
    let watched = dir.path().join("w");
    fs::create_dir(&watched).expect("watched dir");
    (dir, state, watched)
}

#[test]
fn a_rename_keeps_the_files_identity_and_values() {
    let (_dir, state, w) = dirs();
    let (a, b) = (w.join("a"), w.join("b"));
    fs::write(&a, b"content").expect("seed");
    let mut h = Harness::start(&w, state.path(), 64);
    fs::rename(&a, &b).expect("rename");
    h.send(vec![rename(&a, &b)]);
    let [ev] = h.take(1).try_into().expect("one event");
    assert_eq!(ev.action, Action::Rename);
    let i = ev.integrity.as_ref().expect("enriched");
    let (was, is) = (
        i.before.as_ref().expect("before"),
        i.after.as_ref().expect("after"),
    );
    assert_eq!(was.attrs.ino, is.attrs.ino, "the same file");
    assert_eq!(
        digest(&ev, before),
        sha256(b"content"),
        "its values move with it"
    );
    assert_eq!(digest(&ev, after), sha256(b"content"));
    assert!(!i.replaced_target);
    // The kernel stamps a renamed inode's ctime; nothing else about it changes.
    assert!(
        i.changed.iter().all(|c| *c == Attr::Ctime),
        "{:?}",
        i.changed
    );
    assert!(h.stop().is_empty());
}

#[test]
fn an_atomic_save_says_what_it_replaced() {
    let (_dir, state, w) = dirs();
    let (doc, tmp) = (w.join("doc"), w.join("doc.tmp"));
    fs::write(&doc, b"old").expect("seed");
    let mut h = Harness::start(&w, state.path(), 64);
    // An editor's save: a new file written beside, renamed over the old one.
    fs::write(&tmp, b"new").expect("write");
    fs::rename(&tmp, &doc).expect("rename");
    h.send(vec![
        event(Action::Create, &tmp),
        event(Action::Write, &tmp),
        event(Action::CloseWrite, &tmp),
        rename(&tmp, &doc),
    ]);
    let got = h.take(4);
    let actions: Vec<Action> = got.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [
            Action::Create,
            Action::Write,
            Action::CloseWrite,
            Action::Rename
        ],
        "in order"
    );
    let save = &got[3];
    let i = save.integrity.as_ref().expect("enriched");
    assert!(i.replaced_target, "{save:#?}");
    assert_eq!(digest(save, before), sha256(b"old"), "the replaced file");
    assert_eq!(digest(save, after), sha256(b"new"));
    assert!(i.changed.contains(&Attr::Sha256), "{:?}", i.changed);
    assert!(h.stop().is_empty());
}

#[test]
fn a_burst_of_writes_is_hashed_once_at_its_close() {
    let (_dir, state, w) = dirs();
    let f = w.join("log");
    fs::write(&f, b"").expect("seed");
    let mut h = Harness::start(&w, state.path(), 64);
    let hashed_before = h.telemetry.total(telemetry::HASHED);
    let mut batch = vec![event(Action::OpenWrite, &f)];
    let mut content = Vec::new();
    for i in 0..100u32 {
        content.extend_from_slice(format!("line {i}\n").as_bytes());
        batch.push(event(Action::Write, &f));
    }
    fs::write(&f, &content).expect("write");
    batch.push(event(Action::CloseWrite, &f));
    h.send(batch);
    let got = h.take(102);
    let close = got.last().expect("close");
    assert_eq!(close.action, Action::CloseWrite);
    assert_eq!(digest(close, after), sha256(&content));
    assert_eq!(digest(close, before), sha256(b""), "the burst's before");
    assert_eq!(
        h.telemetry.total(telemetry::HASHED) - hashed_before,
        1,
        "one hash for the whole burst"
    );
    let final_digest = Content::Sha256(sha256(&content));
    for e in &got[..101] {
        let after = e.integrity.as_ref().and_then(|i| i.after.as_ref());
        assert_ne!(
            after.and_then(|s| s.content.as_ref()),
            Some(&final_digest),
            "hashed inside the burst: {e:#?}"
        );
    }
    assert!(h.stop().is_empty());
}

#[test]
fn a_full_backlog_passes_events_unenriched_and_a_rescan_repairs_the_baseline() {
    let (_dir, state, w) = dirs();
    let big = w.join("big");
    // Larger than what the engine hashes on its own thread: a worker holds the path.
    fs::write(&big, vec![7u8; 4 << 20]).expect("seed");
    let mut h = Harness::start(&w, state.path(), 2);
    fs::write(&big, vec![8u8; 4 << 20]).expect("rewrite");
    fs::set_permissions(&big, fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut batch = vec![event(Action::CloseWrite, &big)];
    batch.extend((0..6).map(|_| event(Action::Chmod, &big)));
    h.send(batch);
    let got = h.take(7);
    let unenriched: Vec<&FileEvent> = got
        .iter()
        .filter(|e| {
            e.integrity
                .as_ref()
                .and_then(|i| i.note.as_deref())
                .is_some_and(|n| n.contains("backlog full"))
        })
        .collect();
    assert!(!unenriched.is_empty(), "{got:#?}");
    assert_eq!(
        h.telemetry.total(telemetry::UNENRICHED),
        unenriched.len() as u64,
        "each one counted"
    );
    h.until("the repair rescan", || {
        h.telemetry
            .get(telemetry::SCANS, &[Origin::Rescan.as_str()])
            == 1
    });
    assert_eq!(got[0].action, Action::CloseWrite);
    assert_eq!(digest(&got[0], after), sha256(&vec![8u8; 4 << 20]));
    h.stop();
}

#[test]
fn losses_are_reported_as_a_gap_and_repaired_by_a_rescan() {
    let (_dir, state, w) = dirs();
    let f = w.join("f");
    fs::write(&f, b"1").expect("seed");
    let mut h = Harness::start(&w, state.path(), 64);
    // The sensor lost the operation that made this change.
    fs::write(&f, b"2").expect("unseen write");
    h.lost.lock().expect("losses").ring_full = 3;
    let got = h.take(2);
    assert_eq!(got[0].action, Action::Gap);
    let gap = got[0].gap.as_ref().expect("gap details");
    assert_eq!(gap.operations, 3);
    assert_eq!(got[1].action, Action::Changed, "found by the repair rescan");
    assert_eq!(got[1].path.bytes, f.to_str().expect("utf-8").as_bytes());
    let i = got[1].integrity.as_ref().expect("values");
    assert_eq!(i.origin, Origin::Rescan);
    assert_eq!(digest(&got[1], after), sha256(b"2"));
    assert!(h.stop().is_empty());
}

#[test]
fn what_changed_while_stopped_is_reconciled_at_start() {
    let (_dir, state, w) = dirs();
    let (kept, changed, removed, added) = (
        w.join("kept"),
        w.join("changed"),
        w.join("removed"),
        w.join("added"),
    );
    for p in [&kept, &changed, &removed] {
        fs::write(p, b"x").expect("seed");
    }
    let h = Harness::start(&w, state.path(), 64);
    assert!(h.stop().is_empty(), "building the baseline reports nothing");
    fs::write(&changed, b"y").expect("change");
    fs::remove_file(&removed).expect("remove");
    fs::write(&added, b"z").expect("add");
    let h = Harness::start(&w, state.path(), 64);
    let mut got = h.stop();
    got.sort_by(|a, b| a.path.bytes.cmp(&b.path.bytes));
    let summary: Vec<(Action, &[u8])> = got
        .iter()
        .map(|e| (e.action, e.path.bytes.as_slice()))
        .collect();
    let b = |p: &Path| p.to_str().expect("utf-8").as_bytes().to_vec();
    assert_eq!(
        summary,
        [
            // The directory itself: a name added and one removed.
            (Action::Changed, b(&w).as_slice()),
            (Action::Added, b(&added).as_slice()),
            (Action::Changed, b(&changed).as_slice()),
            (Action::Removed, b(&removed).as_slice()),
        ]
    );
    for e in &got {
        assert_eq!(e.integrity.as_ref().expect("values").origin, Origin::Start);
    }
    assert_eq!(digest(&got[2], before), sha256(b"x"));
    assert_eq!(digest(&got[2], after), sha256(b"y"));
    assert_eq!(digest(&got[3], before), sha256(b"x"), "what was removed");
}

#[test]
fn a_reload_records_new_roots_silently_and_leaves_the_old_ones_to_their_events() {
    let (dir, state, w) = dirs();
    let added = dir.path().join("added");
    fs::create_dir(&added).expect("second dir");
    fs::write(added.join("there-before"), b"old").expect("seed");
    fs::write(w.join("kept"), b"v1").expect("seed");
    let mut h = Harness::start(&w, state.path(), 64);
    // A file of the old set written, its event still on its way: the reload's scan walks
    // the new root only, so the event alone reports it.
    fs::write(w.join("kept"), b"v2, longer").expect("change");
    h.rewatch(&[&w, &added]);
    h.until("the reload's scan ends", || {
        h.telemetry
            .get(telemetry::SCANS, &[Origin::Reload.as_str()])
            == 1
    });
    h.send(vec![event(Action::CloseWrite, &w.join("kept"))]);
    let [kept] = h.take(1).try_into().expect("one event");
    assert_eq!(kept.action, Action::CloseWrite);
    assert_eq!(digest(&kept, before), sha256(b"v1"));
    // A change in the new root after the reload has its values: the silent scan recorded
    // what was there.
    let old = added.join("there-before");
    fs::write(&old, b"new").expect("write");
    h.send(vec![event(Action::CloseWrite, &old)]);
    let [ev] = h.take(1).try_into().expect("one event");
    assert_eq!(ev.action, Action::CloseWrite);
    assert_eq!(digest(&ev, before), sha256(b"old"));
    assert_eq!(digest(&ev, after), sha256(b"new"));
    assert!(
        h.stop().is_empty(),
        "nothing else: the new root's files were not \"added\""
    );
}

#[test]
fn a_reload_during_the_first_scan_still_builds_the_baseline_silently() {
    let (dir, state, w) = dirs();
    let added = dir.path().join("added");
    fs::create_dir(&added).expect("second dir");
    for i in 0..2000 {
        fs::write(w.join(format!("f{i}")), b"x").expect("seed");
    }
    fs::write(added.join("a"), b"x").expect("seed");
    let telemetry = Arc::new(Telemetry::default());
    let (out_tx, output) = flume::bounded(1024);
    let engine = Engine::start(
        config(state.path(), 64),
        Arc::new(watch_set(&[&w])),
        Box::new(super::engine::ChannelOutput::new(out_tx)),
        telemetry.clone(),
        None,
    )
    .expect("engine starts");
    let (input, input_rx) = flume::bounded(64);
    // The reload is queued before the engine runs: the first scan has barely begun.
    input
        .send(Input::Rewatch(Box::new(Rewatch {
            watch: Arc::new(watch_set(&[&w, &added])),
            limits: Limits::default(),
        })))
        .expect("queued");
    let thread = std::thread::spawn(move || engine.run(&input_rx, Losses::default));
    let deadline = Instant::now() + WAIT;
    while telemetry.get(telemetry::SCANS, &[Origin::Start.as_str()]) == 0 {
        assert!(Instant::now() < deadline, "the start-up scan never ended");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(input);
    thread
        .join()
        .expect("engine thread")
        .expect("engine ends cleanly");
    let reported: Vec<FileEvent> = output.try_iter().flatten().collect();
    assert!(
        reported.is_empty(),
        "a first baseline reports nothing: {reported:#?}"
    );
    let b = fim_core::baseline::Baseline::open(state.path(), fim_core::baseline::Access::Read)
        .expect("baseline");
    assert!(
        b.get(added.join("a").to_str().expect("utf-8").as_bytes())
            .expect("read")
            .is_some()
    );
}

#[test]
fn a_directory_whose_entries_events_changed_is_not_found_changed_later() {
    let (_dir, state, w) = dirs();
    let sub = w.join("sub");
    fs::create_dir(&sub).expect("mkdir");
    let mut h = Harness::start(&w, state.path(), 64);
    let (f, g) = (sub.join("new"), w.join("moved"));
    fs::write(&f, b"x").expect("create");
    fs::rename(&f, &g).expect("rename");
    h.send(vec![
        event(Action::Create, &f),
        event(Action::CloseWrite, &f),
        rename(&f, &g),
    ]);
    h.take(3);
    let rest = h.stop();
    assert!(rest.is_empty(), "{rest:#?}");
    // The next start compares the disk with the baseline: both directories' times moved
    // with the events already reported.
    let h = Harness::start(&w, state.path(), 64);
    let found = h.stop();
    assert!(found.is_empty(), "{found:#?}");
}
