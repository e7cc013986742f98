//! The fanotify sensor (`--sensor fanotify`): the event model from the VFS itself, with
//! filesystem marks filtered in userspace. Every scenario runs twice: with `--sensor
//! fanotify`, and with the default `--sensor auto`, which on a kernel whose eBPF allows only
//! tracepoints reports from the eBPF tracepoint tier with fanotify as its witness: there the
//! same scenarios show that fanotify adds no duplicate.

use std::{fs, os::unix::fs::PermissionsExt, path::Path, process::Command, time::Duration};

use fim_tests::{
    Daemon, assert_acted_by_this_thread_via, changed, is, require_privileges, sha256_hex, tempdir,
};
use serde_json::Value;

/// `fim.sensor` of the events: in both modes fanotify sees the file events.
const SENSOR: &str = "fanotify";

macro_rules! per_sensor {
    ($($name:ident),* $(,)?) => {
        mod sensor_fanotify {
            $( #[test] fn $name() { super::$name("fanotify") } )*
        }
        mod sensor_auto {
            $( #[test] fn $name() { super::$name("auto") } )*
        }
    };
}

per_sensor!(
    create_write_close_with_digest,
    rename_is_one_event_with_both_names,
    attribute_changes_are_named_chmod_chown_or_xattr,
    mkdir_rmdir_unlink_and_the_root_itself,
    nothing_from_outside_and_short_lived_processes,
    two_file_systems_at_once,
    queue_overflow_is_counted_and_repaired_by_a_rescan,
    links_symlinks_and_special_files_are_named_from_what_is_there,
    renames_into_and_out_of_the_tree,
    a_write_and_close_through_io_uring_are_seen,
);

fn start(sensor: &str, watch: &[&Path]) -> Daemon {
    let mut d = Daemon::start_with(watch, None, &["--sensor", sensor]);
    d.wait_log("baseline built", Duration::from_secs(60));
    d
}

/// Fields every event about `p` made by this thread has. With `--sensor fanotify`: paths
/// from fanotify's handles. With `auto` where fanotify is the witness of the eBPF tracepoint
/// tier (a kernel whose eBPF allows only tracepoints) or not used at all: the eBPF tier's
/// event, every one of these operations being spelled plainly (a fanotify event here would
/// be a duplicate).
fn assert_event(sensor: &str, v: &Value, act: &str, p: &Path) {
    assert_eq!(v["event"]["action"], act, "{v}");
    assert_eq!(v["file"]["path"], p.to_str().expect("utf-8"), "{v}");
    assert_eq!(v["fim"]["origin"], "realtime");
    let reporter = v["fim"]["sensor"].as_str().unwrap_or_default();
    if sensor == SENSOR {
        assert_eq!(reporter, SENSOR, "{v}");
        assert_eq!(v["fim"]["path"]["source"], "file_handle", "{v}");
        assert!(v["fim"]["syscall_nr"].is_null());
    } else {
        assert!(reporter.starts_with("ebpf-"), "{v}");
        assert_ne!(v["fim"]["path"]["source"], "file_handle", "{v}");
    }
    assert_acted_by_this_thread_via(v, reporter);
}

fn create_write_close_with_digest(sensor: &str) {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let mut d = start(sensor, &[&dir]);
    let f = dir.join("new.conf");
    fs::write(&f, b"hello").expect("write");
    let v = d.wait_for("create", |v| is(v, "create", &f));
    assert_event(sensor, &v, "create", &f);
    assert_eq!(v["event"]["type"][0], "creation");
    let v = d.wait_for("write", |v| is(v, "write", &f));
    assert_event(sensor, &v, "write", &f);
    let v = d.wait_for("close_write", |v| is(v, "close_write", &f));
    assert_event(sensor, &v, "close_write", &f);
    assert_eq!(v["fim"]["after"]["sha256"], sha256_hex(b"hello"));
    assert_eq!(v["file"]["size"], 5);
    let (seen, _, status) = d.stop();
    assert!(status.success());
    assert_eq!(
        seen.iter().filter(|v| is(v, "write", &f)).count(),
        1,
        "one write event until the close"
    );
}

fn rename_is_one_event_with_both_names(sensor: &str) {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let a = dir.join("a");
    fs::write(&a, b"x").expect("seed");
    let mut d = start(sensor, &[&dir]);
    let b = dir.join("b");
    fs::rename(&a, &b).expect("rename");
    let v = d.wait_for("rename", |v| is(v, "rename", &b));
    assert_event(sensor, &v, "rename", &b);
    assert_eq!(v["file"]["original"]["path"], a.to_str().expect("utf-8"));
    assert_eq!(
        v["fim"]["source_path"]["source"], v["fim"]["path"]["source"],
        "both names from the same place"
    );
    assert_eq!(
        v["fim"]["before"]["sha256"],
        sha256_hex(b"x"),
        "identity kept"
    );
    let mkdir = dir.join("end");
    fs::create_dir(&mkdir).expect("mkdir");
    d.wait_for("end marker", |v| is(v, "mkdir", &mkdir));
    let (seen, _, _) = d.stop();
    let about = |p: &Path| {
        seen.iter()
            .filter(|v| v["file"]["path"] == p.to_str().unwrap_or_default())
            .count()
    };
    assert_eq!(
        (about(&a), about(&b)),
        (0, 1),
        "no unlink/create pair: {seen:?}"
    );
}

fn attribute_changes_are_named_chmod_chown_or_xattr(sensor: &str) {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let f = dir.join("f");
    fs::write(&f, b"x").expect("seed");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut d = start(sensor, &[&dir]);

    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).expect("chmod");
    let v = d.wait_for("chmod", |v| is(v, "chmod", &f));
    assert_event(sensor, &v, "chmod", &f);
    assert_eq!(
        (&v["fim"]["before"]["mode"], &v["fim"]["after"]["mode"]),
        (&Value::from("0644"), &Value::from("0600"))
    );
    std::os::unix::fs::chown(&f, Some(4321), None).expect("chown");
    let v = d.wait_for("chown", |v| is(v, "chown", &f));
    assert_event(sensor, &v, "chown", &f);
    assert_eq!(v["fim"]["after"]["uid"], 4321);
    assert!(changed(&v).contains(&"uid".to_owned()));

    let name = std::ffi::CString::new("user.k").expect("name");
    let path = std::ffi::CString::new(f.to_str().expect("utf-8")).expect("path");
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), b"v".as_ptr().cast(), 1, 0) };
    assert_eq!(r, 0);
    let v = d.wait_for("setxattr", |v| is(v, "setxattr", &f));
    assert_event(sensor, &v, "setxattr", &f);
    assert_eq!(v["fim"]["after"]["xattrs"]["user.k"], sha256_hex(b"v"));
    // SAFETY: as above.
    let r = unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) };
    assert_eq!(r, 0);
    let v = d.wait_for("removexattr", |v| is(v, "removexattr", &f));
    assert_event(sensor, &v, "removexattr", &f);
}

fn mkdir_rmdir_unlink_and_the_root_itself(sensor: &str) {
    if !require_privileges() {
        return;
    }
    let (_guard, parent) = tempdir();
    let root = parent.join("root");
    fs::create_dir(&root).expect("root");
    let f = root.join("f");
    fs::write(&f, b"x").expect("seed");
    let moved = parent.join("moved");
    let mut d = start(sensor, &[&root]);

    let sub = root.join("sub");
    fs::create_dir(&sub).expect("mkdir");
    assert_event(
        sensor,
        &d.wait_for("mkdir", |v| is(v, "mkdir", &sub)),
        "mkdir",
        &sub,
    );
    fs::remove_dir(&sub).expect("rmdir");
    assert_event(
        sensor,
        &d.wait_for("rmdir", |v| is(v, "rmdir", &sub)),
        "rmdir",
        &sub,
    );
    fs::remove_file(&f).expect("unlink");
    let v = d.wait_for("unlink", |v| is(v, "unlink", &f));
    assert_event(sensor, &v, "unlink", &f);
    assert_eq!(v["fim"]["before"]["sha256"], sha256_hex(b"x"));

    // The watched root itself moves away, comes back, and is removed.
    fs::rename(&root, &moved).expect("move root");
    let v = d.wait_for("root moved", |v| {
        v["event"]["action"] == "rename"
            && v["file"]["original"]["path"] == root.to_str().unwrap_or_default()
    });
    assert_eq!(v["file"]["path"], moved.to_str().expect("utf-8"));
    fs::rename(&moved, &root).expect("move back");
    d.wait_for("root back", |v| is(v, "rename", &root));
    fs::remove_dir(&root).expect("rmdir root");
    assert_event(
        sensor,
        &d.wait_for("root removed", |v| is(v, "rmdir", &root)),
        "rmdir",
        &root,
    );
}

fn nothing_from_outside_and_short_lived_processes(sensor: &str) {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let sibling = Path::new(&format!("{}-sibling", dir.display())).to_path_buf();
    fs::create_dir(&sibling).expect("sibling");
    let mut d = start(sensor, &[&dir]);

    // Stop the daemon so the writer has exited by the time its event is read.
    let f = dir.join("by-a-short-lived-process");
    d.pause();
    fs::write(sibling.join("noise"), b"outside").expect("outside");
    let status = fim_tests::spawn(
        Command::new("sh")
            .arg("-c")
            .arg(format!("echo hi > '{}'", f.display())),
    )
    .and_then(|mut c| c.wait())
    .expect("sh");
    assert!(status.success());
    d.resume();
    let v = d.wait_for("close_write by an exited process", |v| {
        is(v, "close_write", &f)
    });
    assert!(v["process"]["pid"].as_u64().is_some_and(|p| p > 0));
    if sensor == "auto" {
        // The eBPF process table saw it exec and exit: still attributed.
        assert!(v["fim"]["process_exited"].is_null(), "{v}");
        assert_eq!(v["process"]["name"], "sh", "{v}");
        let sh = fs::canonicalize("/bin/sh").expect("/bin/sh");
        assert_eq!(
            v["process"]["executable"],
            sh.to_str().expect("utf-8"),
            "{v}"
        );
        assert_eq!(v["process"]["parent"]["pid"], std::process::id(), "{v}");
        assert_eq!(v["user"]["id"], "0");
    } else {
        // /proc no longer has it: say so, invent nothing.
        assert_eq!(v["fim"]["process_exited"], true, "{v}");
        assert!(
            v["process"]["name"].is_null() && v["process"]["executable"].is_null(),
            "{v}"
        );
        assert!(v["user"].is_null(), "no invented user: {v}");
    }
    let (seen, _, _) = d.stop();
    assert!(
        seen.iter().all(|v| !v["file"]["path"]
            .as_str()
            .unwrap_or_default()
            .contains("-sibling")),
        "events from outside the root: {seen:?}"
    );
    let _ = fs::remove_dir_all(&sibling);
}

fn two_file_systems_at_once(sensor: &str) {
    if !require_privileges() {
        return;
    }
    let (_guard, disk) = tempdir();
    let shm = tempfile::Builder::new()
        .prefix("fim-test-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs dir");
    let mut d = start(sensor, &[&disk, shm.path()]);
    let (a, b) = (disk.join("on-disk"), shm.path().join("in-memory"));
    fs::write(&a, b"1").expect("write");
    fs::write(&b, b"2").expect("write");
    assert_event(
        sensor,
        &d.wait_for("ext4", |v| is(v, "close_write", &a)),
        "close_write",
        &a,
    );
    assert_event(
        sensor,
        &d.wait_for("tmpfs", |v| is(v, "close_write", &b)),
        "close_write",
        &b,
    );
}

fn queue_overflow_is_counted_and_repaired_by_a_rescan(sensor: &str) {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    // No other test's daemon runs while this one floods the file system.
    let flood = fim_tests::Flood::begin();
    let mut d = flood.start_daemon(&[&dir], None, &["--sensor", sensor]);
    d.wait_log("baseline built", Duration::from_secs(60));
    d.pause();
    // More distinct events than the kernel queue holds (16,384).
    for i in 0..20_000 {
        fs::write(dir.join(format!("f{i}")), b"").expect("create");
    }
    d.resume();
    d.wait_log("fanotify queue overflow", Duration::from_secs(30));
    let line = d.wait_log("rescanned:", Duration::from_secs(60));
    assert!(
        !line.contains(" 0 added"),
        "the rescan reports what the gap hid: {line}"
    );
    let (seen, log, _) = d.stop();
    // Every file is known: from a real-time event before the overflow, or from the rescan.
    let known: std::collections::HashSet<&str> = seen
        .iter()
        .filter(|v| {
            matches!(
                v["event"]["action"].as_str(),
                Some("create" | "close_write")
            ) || (v["event"]["action"] == "added" && v["fim"]["origin"] == "rescan")
        })
        .filter_map(|v| v["file"]["name"].as_str())
        .collect();
    let missing: Vec<String> = (0..20_000)
        .map(|i| format!("f{i}"))
        .filter(|n| !known.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} files never reported, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // The loss was an event: its size unknown (fanotify says only that it overflowed),
    // its window and roots given.
    let gap = seen
        .iter()
        .find(|v| {
            v["event"]["action"] == "gap"
                && v["fim"]["gap"]["causes"]["queue_overflow"].as_u64() >= Some(1)
        })
        .unwrap_or_else(|| panic!("no gap event for the overflow; log:\n{log}"));
    assert_eq!(gap["fim"]["gap"]["unknown_more"], true, "{gap}");
    assert_eq!(
        gap["fim"]["gap"]["roots"][0],
        dir.to_str().expect("utf-8"),
        "{gap}"
    );
    assert!(
        gap["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("at least ")),
        "{gap}"
    );
}

fn links_symlinks_and_special_files_are_named_from_what_is_there(sensor: &str) {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let f = dir.join("f");
    fs::write(&f, b"x").expect("seed");
    // A short quiet period, waited out below (and a stop settles whatever is open): a burst
    // wrongly started would show as a "modified".
    let mut d = Daemon::start_with(
        &[&dir],
        None,
        &["--sensor", sensor, "--hash-quiet", "500ms"],
    );
    d.wait_log("baseline built", Duration::from_secs(60));

    let hard = dir.join("hard");
    fs::hard_link(&f, &hard).expect("link");
    let v = d.wait_for("link", |v| is(v, "link", &hard));
    assert_event(sensor, &v, "link", &hard);
    assert_eq!(v["fim"]["after"]["nlink"], 2);
    assert_eq!(v["fim"]["after"]["sha256"], sha256_hex(b"x"));

    let sym = dir.join("sym");
    std::os::unix::fs::symlink("../elsewhere", &sym).expect("symlink");
    let v = d.wait_for("symlink", |v| is(v, "symlink", &sym));
    assert_event(sensor, &v, "symlink", &sym);
    assert_eq!(v["file"]["target_path"], "../elsewhere");
    assert_eq!(v["fim"]["after"]["symlink_target"], "../elsewhere");

    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("path");
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let v = d.wait_for("mknod", |v| is(v, "mknod", &fifo));
    assert_event(sensor, &v, "mknod", &fifo);
    assert_eq!(v["fim"]["after"]["type"], "fifo");

    // None of them starts a write burst: no "modified" follows.
    std::thread::sleep(Duration::from_millis(1500));
    let (seen, _, _) = d.stop();
    assert!(
        seen.iter().all(|v| v["event"]["action"] != "modified"),
        "{seen:?}"
    );
}

fn renames_into_and_out_of_the_tree(sensor: &str) {
    if !require_privileges() {
        return;
    }
    let (_guard, parent) = tempdir();
    let root = parent.join("root");
    fs::create_dir(&root).expect("root");
    let outside = parent.join("outside");
    fs::write(&outside, b"in").expect("seed");
    let mut d = start(sensor, &[&root]);

    let inside = root.join("arrived");
    fs::rename(&outside, &inside).expect("into");
    let v = d.wait_for("rename into", |v| is(v, "rename", &inside));
    assert_event(sensor, &v, "rename", &inside);
    assert_eq!(
        v["file"]["original"]["path"],
        outside.to_str().expect("utf-8")
    );
    assert!(v["fim"]["before"].is_null(), "new to the baseline: {v}");
    assert_eq!(v["fim"]["after"]["sha256"], sha256_hex(b"in"));

    let gone = parent.join("left");
    fs::rename(&inside, &gone).expect("out of");
    let v = d.wait_for("rename out", |v| is(v, "rename", &gone));
    assert_eq!(
        v["file"]["original"]["path"],
        inside.to_str().expect("utf-8")
    );
    assert_eq!(v["fim"]["before"]["sha256"], sha256_hex(b"in"));
}

/// io_uring operations never pass the syscall tracepoints, but they do pass the VFS.
fn a_write_and_close_through_io_uring_are_seen(sensor: &str) {
    use std::os::fd::IntoRawFd;

    use io_uring::{IoUring, opcode, types};
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let f = dir.join("uring");
    fs::write(&f, b"before!!!").expect("seed");
    // Opened before the daemon starts: only the io_uring operations happen while it runs.
    let fd = fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .expect("open")
        .into_raw_fd();
    let mut d = start(sensor, &[&dir]);

    let mut ring = IoUring::new(4).expect("io_uring (enabled on this kernel?)");
    let data = b"via-uring";
    let write = opcode::Write::new(types::Fd(fd), data.as_ptr(), data.len() as u32)
        .offset(0)
        .build()
        .user_data(1);
    let close = opcode::Close::new(types::Fd(fd)).build().user_data(2);
    for op in [write, close] {
        // SAFETY: `data` outlives the submission, which completes before the next push.
        unsafe { ring.submission().push(&op).expect("queue") };
        ring.submit_and_wait(1).expect("submit");
        let cqe = ring.completion().next().expect("completion");
        assert!(
            cqe.result() >= 0,
            "io_uring op {} failed: {}",
            cqe.user_data(),
            cqe.result()
        );
    }

    let v = d.wait_for("write through io_uring", |v| is(v, "write", &f));
    assert_eq!(v["fim"]["sensor"], SENSOR);
    assert_eq!(v["process"]["pid"], std::process::id(), "{v}");
    let v = d.wait_for("close through io_uring", |v| is(v, "close_write", &f));
    // The last reference may be dropped by a child another test thread was forking while
    // the file was open: it holds the descriptor until its exec closes it, and the kernel
    // rightly reports that child.
    let me = u64::from(std::process::id());
    assert!(
        v["process"]["pid"] == me || v["process"]["parent"]["pid"] == me,
        "closed by this process or a child forked meanwhile: {v}"
    );
    assert_eq!(v["fim"]["before"]["sha256"], sha256_hex(b"before!!!"));
    assert_eq!(v["fim"]["after"]["sha256"], sha256_hex(b"via-uring"));
    assert!(changed(&v).contains(&"sha256".to_owned()), "{v}");
}
