//! Exact and evasion-proof events: operations done back to back with no pause between them,
//! and the ways an attacker reaches a watched file without spelling its watched path (a
//! symlinked directory followed by `..`, a dirfd opened through a symlink, a bind mount, a
//! hard link made before or while the daemon runs). Every event's action, path(s), order
//! and acting thread is asserted, for each sensor: `fanotify` and `auto` (which is the eBPF
//! tracepoint tier with fanotify as its witness on a kernel whose eBPF allows only
//! tracepoints, and the eBPF LSM tier where BPF LSM is active), and the eBPF tier under test
//! (`FIM_TEST_TIER`).

use std::{
    ffi::CString,
    fs,
    io::Write,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use fim_tests::{Daemon, kernel_object_tier, require_privileges, tempdir, tier};
use serde_json::Value;

fim_tests::per_sensor!(
    a_fast_sequence_is_reported_in_order_by_the_renamed_thread,
    directories_renamed_or_removed_right_after_changes_inside,
    symlinked_directories_and_dotdot_reach_the_watched_object,
    a_bind_mount_of_a_watched_tree_is_watched,
    hard_links_outside_the_tree_are_watched_files,
    every_way_of_changing_a_file_is_seen_and_rehashed,
    the_cgroup_is_the_one_the_process_is_in_when_it_acts,
);

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in path")
}

fn check(ret: libc::c_int, what: &str) {
    assert!(ret >= 0, "{what}: {}", std::io::Error::last_os_error());
}

fn start(sensor: &str, watch: &[&Path]) -> Daemon {
    let mut d = Daemon::start_with(watch, None, &["--sensor", sensor]);
    d.wait_log("baseline built", Duration::from_secs(60));
    d
}

/// The sensor that reported `v`, as named in `fim.sensor`.
fn sensor_of(v: &Value) -> &str {
    v["fim"]["sensor"].as_str().unwrap_or_default()
}

/// One expected event: action (`a|b`: either), path, and the second name (rename: original
/// path; link and symlink: target), if any.
type Expected<'a> = (&'a str, PathBuf, Option<String>);

/// Whether `v` is one of `expected` (action alternatives `a|b`, path, second name).
fn matches(v: &Value, (act, p, second): &Expected<'_>) -> bool {
    let action = v["event"]["action"].as_str().unwrap_or_default();
    let second_ok = match (action, second) {
        ("rename", Some(s)) => v["file"]["original"]["path"] == s.as_str(),
        ("link" | "symlink", Some(s)) => v["file"]["target_path"] == s.as_str(),
        _ => true,
    };
    act.split('|').any(|a| a == action)
        && v["file"]["path"] == p.to_str().unwrap_or_default()
        && second_ok
}

/// Asserts that the real-time events about `dir`, in output order, are exactly `expected`,
/// each made by thread `tid` named `name` of this process, with increasing sequence numbers.
/// Operations the sensor got in one merged record (`fim.merged`, fanotify) have no order
/// among themselves: such a run is compared as a set.
fn assert_exactly(seen: &[Value], dir: &Path, expected: &[Expected<'_>], tid: u32, name: &str) {
    let dir = dir.to_str().expect("utf-8");
    let got: Vec<&Value> = seen
        .iter()
        .filter(|v| v["fim"]["origin"] == "realtime")
        .filter(|v| {
            v["file"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with(dir))
        })
        .collect();
    let render = |vs: &[&Value]| -> String { vs.iter().map(|v| format!("  {v}\n")).collect() };
    assert_eq!(
        got.len(),
        expected.len(),
        "expected {} events, got:\n{}\nall the daemon reported:\n{}",
        expected.len(),
        render(&got),
        render(&seen.iter().collect::<Vec<_>>())
    );
    let mut i = 0;
    while i < got.len() {
        let mut end = i + 1;
        if got[i]["fim"]["merged"] == true {
            while end < got.len()
                && got[end]["fim"]["merged"] == true
                && got[end]["file"]["path"] == got[i]["file"]["path"]
            {
                end += 1;
            }
        }
        let mut want: Vec<&Expected<'_>> = expected[i..end].iter().collect();
        for v in &got[i..end] {
            let Some(at) = want.iter().position(|e| matches(v, e)) else {
                panic!(
                    "{v}\nis not among the expected {:?}, in:\n{}",
                    &expected[i..end],
                    render(&got)
                );
            };
            want.remove(at);
        }
        i = end;
    }
    let mut last_seq = 0;
    let mut ids = std::collections::BTreeSet::new();
    for v in &got {
        let seq = v["event"]["sequence"].as_u64().expect("sequence");
        assert!(seq > last_seq, "sequence increases: {v}");
        last_seq = seq;
        // A UUID (8-4-4-4-12 hex digits), one per event.
        let id = v["event"]["id"].as_str().expect("event.id");
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "event.id of {v}");
        assert!(ids.insert(id.to_owned()), "event.id is unique: {v}");
        let p = &v["process"];
        assert_eq!(p["thread"]["id"], tid, "process.thread.id of {v}");
        if v["fim"]["process_exited"] == true {
            // fanotify alone reads /proc, where the thread may be gone by then: it says
            // so, with the thread id it has, and invents nothing.
            assert_eq!(sensor_of(v), "fanotify", "{v}");
            assert!(p["name"].is_null() && p["executable"].is_null(), "{v}");
        } else {
            assert_eq!(p["pid"], std::process::id(), "process.pid of {v}");
            assert_eq!(p["name"], name, "process.name of {v}");
        }
    }
}

/// Makes a last directory in `dir` and waits for its event (everything before it has been
/// reported then), stops the daemon (it must exit cleanly), and returns what it reported
/// but the marker.
fn stop_after_marker(mut d: Daemon, dir: &Path) -> Vec<Value> {
    let marker = dir.join("end");
    let name = marker.to_str().expect("utf-8").to_owned();
    fs::create_dir(&marker).expect("marker");
    d.wait_for("the end marker", |v| {
        v["event"]["action"] == "mkdir" && v["file"]["path"] == name.as_str()
    });
    let (seen, _, status) = d.stop();
    assert!(status.success(), "fim exited with {status}");
    seen.into_iter()
        .filter(|v| v["file"]["path"] != name.as_str())
        .collect()
}

/// Runs `ops` on a new thread that first renames itself to `name` (what malware does to
/// look like something else); returns its thread id.
fn as_renamed_thread(name: &'static str, ops: impl FnOnce() + Send + 'static) -> u32 {
    std::thread::spawn(move || {
        // No daemon is spawned while these operations hold files open (see `FORKS`).
        let _open_files = fim_tests::FORKS.read().unwrap_or_else(|e| e.into_inner());
        let n = CString::new(name).expect("name");
        // SAFETY: PR_SET_NAME with a NUL-terminated string of at most 16 bytes.
        check(
            unsafe { libc::prctl(libc::PR_SET_NAME, n.as_ptr()) },
            "prctl",
        );
        ops();
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() as u32 }
    })
    .join()
    .expect("actor thread")
}

fn a_fast_sequence_is_reported_in_order_by_the_renamed_thread(sensor: &str) {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let d = start(sensor, &[&dir]);
    let [a, hl, sl, sub, b] = ["a", "hl", "sl", "sub", "sub/b"].map(|n| dir.join(n));
    // Paused, so every event is queued before the daemon reads any: the worst case, and for
    // fanotify the case where the kernel merges the most (deterministically).
    d.pause();
    let ops = {
        let (a, hl, sl, sub, b) = (a.clone(), hl.clone(), sl.clone(), sub.clone(), b.clone());
        move || {
            let mut f = fs::File::create(&a).expect("create");
            f.write_all(b"hello").expect("write");
            drop(f);
            check(unsafe { libc::truncate(c(&a).as_ptr(), 2) }, "truncate");
            fs::set_permissions(&a, fs::Permissions::from_mode(0o600)).expect("chmod");
            std::os::unix::fs::chown(&a, Some(1234), None).expect("chown");
            let (name, value) = (CString::new("user.k").expect("name"), b"v");
            check(
                unsafe {
                    libc::setxattr(c(&a).as_ptr(), name.as_ptr(), value.as_ptr().cast(), 1, 0)
                },
                "setxattr",
            );
            fs::hard_link(&a, &hl).expect("link");
            std::os::unix::fs::symlink("a", &sl).expect("symlink");
            fs::create_dir(&sub).expect("mkdir");
            fs::rename(&a, &b).expect("rename");
            fs::remove_file(&hl).expect("unlink hl");
            fs::remove_file(&b).expect("unlink sub/b");
            fs::remove_dir(&sub).expect("rmdir");
        }
    };
    let tid = as_renamed_thread("fim-seq-actor", ops);
    d.resume();
    let seen = stop_after_marker(d, &dir);
    let a_name = Some(a.to_str().expect("utf-8").to_owned());
    let expected: Vec<Expected<'_>> = if seen.first().is_some_and(|v| sensor_of(v) == "fanotify") {
        // fanotify: the kernel merges queued events on one name into one record (the
        // write, truncate and close of `a`; its chmod, chown and setxattr into one
        // `attrib`; the mkdir and rmdir of `sub`; the link and unlink of `hl`), so only what
        // the records tell apart is reported, and a merged removal (and any after it) comes
        // after what happened in between.
        vec![
            ("create", a.clone(), None),
            ("write", a.clone(), None),
            ("attrib", a.clone(), None),
            ("close_write", a.clone(), None),
            ("link", hl.clone(), a_name.clone()),
            ("symlink", sl.clone(), Some("a".into())),
            ("mkdir", sub.clone(), None),
            ("rename", b.clone(), a_name.clone()),
            ("unlink", hl.clone(), None),
            ("unlink", b.clone(), None),
            ("rmdir", sub.clone(), None),
        ]
    } else {
        vec![
            ("create", a.clone(), None),
            ("write", a.clone(), None),
            ("close_write", a.clone(), None),
            ("truncate", a.clone(), None),
            ("chmod", a.clone(), None),
            ("chown", a.clone(), None),
            ("setxattr", a.clone(), None),
            ("link", hl.clone(), a_name.clone()),
            ("symlink", sl.clone(), Some("a".into())),
            ("mkdir", sub.clone(), None),
            ("rename", b.clone(), a_name.clone()),
            ("unlink", hl.clone(), None),
            ("unlink", b.clone(), None),
            ("rmdir", sub.clone(), None),
        ]
    };
    assert_exactly(&seen, &dir, &expected, tid, "fim-seq-actor");
}

/// Whether `sensor` is `auto` reporting from the eBPF tracepoint tier with fanotify as its
/// witness (a kernel whose eBPF allows only tracepoints): what only fanotify saw comes from
/// fanotify, in its place among the tracepoint tier's events.
fn witnessed(sensor: &str, seen: &[Value]) -> bool {
    sensor == "auto" && seen.iter().any(|v| sensor_of(v) == "ebpf-tracepoint")
}

/// Whether `sensor` resolves path-based operations from the kernel's objects (and so
/// cannot be misled by how a path was spelled). The eBPF tracepoint tier sees only the
/// syscall's string; `auto` never uses it alone where fanotify exists.
fn resolves_objects(sensor: &str) -> bool {
    !(sensor == "tracepoint" || (sensor == tier() && !kernel_object_tier()))
}

/// Whether `sensor` resolves path-based *attribute* calls (chmod, chown, truncate,
/// utimensat, xattrs) from the object: every sensor but the tracepoint tier, and the
/// tracepoint tier too on kernels with the `timestamp` tracepoints (6.13+), where the
/// object whose ctime the call updates is found by identity.
fn resolves_attribute_calls(sensor: &str) -> bool {
    resolves_objects(sensor) || fim_tests::ctime_tracepoints()
}

fn symlinked_directories_and_dotdot_reach_the_watched_object(sensor: &str) {
    if !require_privileges() {
        return;
    }
    // The tracepoint tier sees path-based calls only as strings: it reports what it can
    // resolve from objects (opens, descriptors), as the README's table says.
    let strings = !resolves_objects(sensor);
    let attributes = resolves_attribute_calls(sensor);
    let (_guard, base) = tempdir();
    let (wt, out) = (base.join("wt"), base.join("out"));
    fs::create_dir_all(wt.join("sub")).expect("tree");
    fs::create_dir(&out).expect("out");
    fs::write(wt.join("f"), b"f").expect("seed");
    // out/sl -> wt/sub, so out/sl/.. is wt for the kernel (and out for a lexical cleaner).
    std::os::unix::fs::symlink(wt.join("sub"), out.join("sl")).expect("symlink");
    let d = start(sensor, &[&wt]);
    let via = out.join("sl/..");
    let tid = as_renamed_thread("fim-dotdot", {
        let via = via.clone();
        move || {
            fs::set_permissions(via.join("f"), fs::Permissions::from_mode(0o600)).expect("chmod");
            fs::rename(via.join("f"), via.join("g")).expect("rename");
            // A dirfd opened through the symlink, and a name relative to it.
            let dfd = fs::File::open(via.join("sub")).expect("dirfd");
            use std::os::fd::AsRawFd;
            let g = CString::new("../g").expect("name");
            check(
                unsafe { libc::fchmodat(dfd.as_raw_fd(), g.as_ptr(), 0o640, 0) },
                "fchmodat",
            );
        }
    });
    let seen = stop_after_marker(d, &wt);
    let f = Some(wt.join("f").to_str().expect("utf-8").to_owned());
    let chmod = if seen.iter().any(|v| sensor_of(v) != "fanotify") {
        "chmod"
    } else {
        "chmod|attrib"
    };
    let expected: &[Expected<'_>] = if strings && attributes {
        // The chmods are found by the object whose ctime they update; the rename is read
        // as a string (`out/sl/..` cleaned to `out` as text): not seen.
        &[("chmod", wt.join("f"), None), ("chmod", wt.join("g"), None)]
    } else if strings {
        // `out/sl/..` is cleaned to `out` as text; the dirfd's own path comes from its
        // object, so `../g` relative to it is right.
        &[("chmod", wt.join("g"), None)]
    } else {
        &[
            (chmod, wt.join("f"), None),
            ("rename", wt.join("g"), f),
            (chmod, wt.join("g"), None),
        ]
    };
    assert_exactly(&seen, &wt, expected, tid, "fim-dotdot");
}

/// A bind mount at a fresh directory, undone when dropped.
struct BindMount(PathBuf);

impl BindMount {
    fn new(from: &Path, at: &Path) -> Self {
        fs::create_dir_all(at).expect("mount point");
        let ok = fim_tests::spawn(Command::new("mount").args(["-o", "bind"]).arg(from).arg(at))
            .and_then(|mut c| c.wait())
            .expect("mount")
            .success();
        assert!(ok, "mount --bind {} {}", from.display(), at.display());
        Self(at.to_owned())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = fim_tests::spawn(Command::new("umount").arg(&self.0)).and_then(|mut c| c.wait());
    }
}

fn a_bind_mount_of_a_watched_tree_is_watched(sensor: &str) {
    if !require_privileges() {
        return;
    }
    // The tracepoint tier sees path-based calls only as strings: it reports what it can
    // resolve from objects (opens, descriptors), as the README's table says.
    let strings = !resolves_objects(sensor);
    let (_guard, base) = tempdir();
    let (wt, bm) = (base.join("wt"), base.join("bm"));
    fs::create_dir(&wt).expect("tree");
    fs::write(wt.join("g"), b"g").expect("seed");
    let d = start(sensor, &[&wt]);
    let mount = BindMount::new(&wt, &bm);
    let tid = as_renamed_thread("fim-bindmount", {
        let bm = bm.clone();
        move || {
            fs::set_permissions(bm.join("g"), fs::Permissions::from_mode(0o640)).expect("chmod");
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(bm.join("g"))
                .expect("open");
            f.write_all(b"more").expect("append");
            drop(f);
            fs::rename(bm.join("g"), bm.join("h")).expect("rename");
        }
    });
    let seen = stop_after_marker(d, &wt);
    drop(mount);
    let g = wt.join("g");
    let ebpf = seen.iter().any(|v| sensor_of(v) != "fanotify");
    // fanotify says only "attributes changed"; the name comes from values read later, when
    // the file may already be renamed: `attrib` then, never a wrong name.
    let chmod = if ebpf { "chmod" } else { "chmod|attrib" };
    let mut expected: Vec<Expected<'_>> = Vec::new();
    if resolves_attribute_calls(sensor) {
        expected.push((chmod, g.clone(), None));
    }
    if ebpf {
        expected.push(("open_write", g.clone(), None));
    }
    expected.extend([("write", g.clone(), None), ("close_write", g.clone(), None)]);
    if !strings {
        expected.push((
            "rename",
            wt.join("h"),
            Some(g.to_str().expect("utf-8").to_owned()),
        ));
    }
    assert_exactly(&seen, &wt, &expected, tid, "fim-bindmount");
    for v in seen.iter().filter(|v| v["fim"]["origin"] == "realtime") {
        let accessed = v["fim"]["requested"]["path"].as_str().unwrap_or_default();
        if sensor_of(v) != "fanotify" {
            // A kernel-object tier walks the path the caller used: it says which.
            assert!(accessed.starts_with(bm.to_str().unwrap_or("?")), "{v}");
        }
    }
}

fn hard_links_outside_the_tree_are_watched_files(sensor: &str) {
    if !require_privileges() {
        return;
    }
    // The tracepoint tier sees path-based calls only as strings: it reports what it can
    // resolve from objects (opens, descriptors), as the README's table says.
    let strings = !resolves_objects(sensor);
    let (_guard, base) = tempdir();
    let (wt, out) = (base.join("wt"), base.join("out"));
    fs::create_dir(&wt).expect("tree");
    fs::create_dir(&out).expect("out");
    let (f, g) = (wt.join("f"), wt.join("g"));
    fs::write(&f, b"f").expect("seed");
    fs::write(&g, b"g").expect("seed");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).expect("mode");
    // Made before the daemon starts.
    fs::hard_link(&f, out.join("hl")).expect("link");
    let d = start(sensor, &[&wt]);
    let (hl, hl2) = (out.join("hl"), out.join("hl2"));
    let tid = as_renamed_thread("fim-hardlink", {
        let (g, hl, hl2) = (g.clone(), hl.clone(), hl2.clone());
        move || {
            let mut h = fs::OpenOptions::new().append(true).open(&hl).expect("open");
            h.write_all(b"evil").expect("append");
            drop(h);
            fs::set_permissions(&hl, fs::Permissions::from_mode(0o4755)).expect("setuid");
            // Made while the daemon runs, then written through at once.
            fs::hard_link(&g, &hl2).expect("link");
            let mut h = fs::OpenOptions::new()
                .append(true)
                .open(&hl2)
                .expect("open");
            h.write_all(b"evil2").expect("append");
        }
    });
    let seen = stop_after_marker(d, &wt);
    let ebpf = seen.iter().any(|v| sensor_of(v) != "fanotify");
    let g_name = Some(g.to_str().expect("utf-8").to_owned());
    // The link's new name is outside the tree: the event is about it, with the watched file
    // as its target; everything else is reported on the watched name.
    let about_tree: Vec<Value> = seen
        .iter()
        .filter(|v| v["event"]["action"] != "link")
        .cloned()
        .collect();
    let mut expected: Vec<Expected<'_>> = Vec::new();
    if ebpf {
        expected.push(("open_write", f.clone(), None));
    }
    let chmod = if ebpf { "chmod" } else { "chmod|attrib" };
    expected.extend([("write", f.clone(), None), ("close_write", f.clone(), None)]);
    if resolves_attribute_calls(sensor) {
        expected.push((chmod, f.clone(), None));
    }
    if !strings {
        // Through the new link, made while running: only a kernel-object tier (or
        // fanotify) learns the file's identity as the link is made. `auto` on a
        // tracepoint-only kernel has these from its fanotify witness, which sees no opens.
        if ebpf && !witnessed(sensor, &seen) {
            expected.push(("open_write", g.clone(), None));
        }
        expected.extend([("write", g.clone(), None), ("close_write", g.clone(), None)]);
    }
    assert_exactly(&about_tree, &wt, &expected, tid, "fim-hardlink");
    let link: Vec<&Value> = seen
        .iter()
        .filter(|v| v["event"]["action"] == "link")
        .collect();
    assert_eq!(link.len(), 1, "one link event: {link:?}");
    assert_eq!(link[0]["file"]["path"], hl2.to_str().expect("utf-8"));
    assert_eq!(
        link[0]["file"]["target_path"],
        g_name.as_deref().unwrap_or("")
    );
    // Every event on a watched file says which name was used.
    for v in &about_tree {
        let used = v["fim"]["requested"]["path"].as_str().unwrap_or_default();
        assert!(
            used == hl.to_str().unwrap_or("?") || used == hl2.to_str().unwrap_or("?"),
            "{v}"
        );
    }
    if resolves_attribute_calls(sensor) {
        let setuid = about_tree
            .iter()
            .find(|v| v["event"]["action"] == "chmod" || v["event"]["action"] == "attrib")
            .expect("chmod");
        assert_eq!(setuid["fim"]["after"]["mode"], "4755", "{setuid}");
    }
}

/// SHA-256 of a file's current content (coreutils, independent of fim).
fn digest(p: &Path) -> String {
    fim_tests::sha256_hex(&fs::read(p).expect("read back"))
}

fn open_fd(p: &Path, flags: libc::c_int) -> libc::c_int {
    // SAFETY: NUL-terminated path.
    let fd = unsafe { libc::open(c(p).as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    check(fd, "open");
    fd
}

fn every_way_of_changing_a_file_is_seen_and_rehashed(sensor: &str) {
    if !require_privileges() {
        return;
    }
    let (_guard, base) = tempdir();
    let (w, out) = (base.join("w"), base.join("out"));
    fs::create_dir(&w).expect("tree");
    fs::create_dir(&out).expect("out");
    let f: Vec<PathBuf> = (1..=8).map(|i| w.join(format!("f{i}"))).collect();
    for p in &f[..6] {
        fs::write(p, vec![b'x'; 16 << 10]).expect("seed");
    }
    fs::write(&f[7], vec![b'm'; 4096]).expect("seed");
    let src = out.join("src");
    fs::write(&src, b"copied from outside the tree").expect("src");
    let mut d = start(sensor, &[&w]);
    let (f2, tmp_dir) = (f.clone(), w.clone());
    as_renamed_thread("fim-changes", move || {
        let f = f2;
        // 2001-01-01T00:00:00Z, on the path and through a descriptor.
        let t = libc::timespec {
            tv_sec: 978_307_200,
            tv_nsec: 0,
        };
        let times = [t, t];
        check(
            unsafe { libc::utimensat(libc::AT_FDCWD, c(&f[0]).as_ptr(), times.as_ptr(), 0) },
            "utimensat",
        );
        let fd = open_fd(&f[1], libc::O_RDWR);
        check(unsafe { libc::futimens(fd, times.as_ptr()) }, "futimens");
        unsafe { libc::close(fd) };
        // A hole punched: 4 KiB of content become zeros, the size stays.
        let fd = open_fd(&f[2], libc::O_RDWR);
        check(
            unsafe {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    4096,
                    4096,
                )
            },
            "fallocate",
        );
        unsafe { libc::close(fd) };
        // Data moved by the kernel, not by a write(2).
        let s = open_fd(&src, libc::O_RDONLY);
        let fd = open_fd(&f[3], libc::O_WRONLY);
        let n = unsafe {
            libc::copy_file_range(s, std::ptr::null_mut(), fd, std::ptr::null_mut(), 28, 0)
        };
        assert_eq!(
            n,
            28,
            "copy_file_range: {}",
            std::io::Error::last_os_error()
        );
        unsafe { libc::close(fd) };
        let mut pipe = [0; 2];
        check(unsafe { libc::pipe(pipe.as_mut_ptr()) }, "pipe");
        let data = b"spliced";
        assert_eq!(
            unsafe { libc::write(pipe[1], data.as_ptr().cast(), data.len()) },
            7
        );
        let fd = open_fd(&f[4], libc::O_WRONLY);
        let mut off: libc::loff_t = 0;
        let n = unsafe { libc::splice(pipe[0], std::ptr::null_mut(), fd, &mut off, 7, 0) };
        assert_eq!(n, 7, "splice: {}", std::io::Error::last_os_error());
        unsafe {
            libc::close(fd);
            libc::close(pipe[0]);
            libc::close(pipe[1]);
        }
        let fd = open_fd(&f[5], libc::O_WRONLY);
        unsafe { libc::lseek(s, 0, libc::SEEK_SET) };
        let n = unsafe { libc::sendfile(fd, s, std::ptr::null_mut(), 28) };
        assert_eq!(n, 28, "sendfile: {}", std::io::Error::last_os_error());
        unsafe {
            libc::close(fd);
            libc::close(s);
        }
        // An unnamed file, written, then given a name in the tree.
        let fd = open_fd(&tmp_dir, libc::O_TMPFILE | libc::O_WRONLY);
        let data = b"born unnamed";
        assert_eq!(
            unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) },
            12
        );
        let empty = CString::new("").expect("empty");
        check(
            unsafe {
                libc::linkat(
                    fd,
                    empty.as_ptr(),
                    libc::AT_FDCWD,
                    c(&f[6]).as_ptr(),
                    libc::AT_EMPTY_PATH,
                )
            },
            "linkat",
        );
        unsafe { libc::close(fd) };
        // Written through a shared mapping, then unmapped and closed.
        let fd = open_fd(&f[7], libc::O_RDWR);
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED, "mmap");
        unsafe {
            std::ptr::copy_nonoverlapping(b"mapped".as_ptr(), map.cast::<u8>(), 6);
            libc::munmap(map, 4096);
            libc::close(fd);
        }
    });
    let mtime_set = |v: &Value| {
        v["fim"]["after"]["mtime"]
            .as_str()
            .is_some_and(|m| m.starts_with("2001-01-01"))
    };
    for (i, p) in f[..2].iter().enumerate() {
        d.wait_for(&format!("the times of f{}", i + 1), |v| {
            v["file"]["path"] == p.to_str().unwrap_or("")
                && (v["event"]["action"] == "utimes" || v["event"]["action"] == "attrib")
        });
    }
    for (i, p) in f[2..].iter().enumerate() {
        let want = digest(p);
        d.wait_for(&format!("f{} with its new digest", i + 3), |v| {
            v["file"]["path"] == p.to_str().unwrap_or("")
                && v["fim"]["after"]["sha256"] == want.as_str()
        });
    }
    let (seen, _, status) = d.stop();
    assert!(status.success());
    // The times set are in what the daemon recorded last for each file.
    for p in &f[..2] {
        let last = seen
            .iter()
            .rev()
            .find(|v| v["file"]["path"] == p.to_str().unwrap_or("") && !v["fim"]["after"].is_null())
            .expect("an observation");
        assert!(mtime_set(last), "{last}");
    }
}

fn directories_renamed_or_removed_right_after_changes_inside(sensor: &str) {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let d = start(sensor, &[&dir]);
    let [dd, df, de, ef] = ["d", "d/f", "e", "e/f"].map(|n| dir.join(n));
    d.pause();
    let tid = as_renamed_thread("fim-dir-actor", {
        let (dd, df, de, ef) = (dd.clone(), df.clone(), de.clone(), ef.clone());
        move || {
            fs::create_dir(&dd).expect("mkdir");
            fs::write(&df, b"one").expect("write");
            fs::rename(&dd, &de).expect("rename dir");
            let mut f = fs::OpenOptions::new().append(true).open(&ef).expect("open");
            f.write_all(b"two").expect("append");
            drop(f);
            fs::remove_file(&ef).expect("unlink");
            fs::remove_dir(&de).expect("rmdir");
        }
    });
    d.resume();
    let seen = stop_after_marker(d, &dir);
    let from_d = Some(dd.to_str().expect("utf-8").to_owned());
    let expected: Vec<Expected<'_>> = if seen.first().is_some_and(|v| sensor_of(v) == "fanotify") {
        // The writes through `d/f` and `e/f` are one object under one directory handle: the
        // kernel merges them (and the unlink) into the first record, named where it was.
        vec![
            ("mkdir", dd.clone(), None),
            ("create", df.clone(), None),
            ("write", df.clone(), None),
            ("close_write", df.clone(), None),
            ("rename", de.clone(), from_d),
            ("unlink", ef.clone(), None),
            ("rmdir", de.clone(), None),
        ]
    } else {
        vec![
            ("mkdir", dd.clone(), None),
            ("create", df.clone(), None),
            ("write", df.clone(), None),
            ("close_write", df.clone(), None),
            ("rename", de.clone(), from_d),
            ("open_write", ef.clone(), None),
            ("write", ef.clone(), None),
            ("close_write", ef.clone(), None),
            ("unlink", ef.clone(), None),
            ("rmdir", de.clone(), None),
        ]
    };
    assert_exactly(&seen, &dir, &expected, tid, "fim-dir-actor");
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup` or `/sys/fs/cgroup/unified` on a hybrid
/// host); mounted at a temporary directory when it is nowhere (the kernel matrix's guests).
fn cgroup2_root() -> (PathBuf, Option<tempfile::TempDir>) {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    if let Some(point) = mountinfo.lines().find_map(|l| {
        let (mount, fs) = l.split_once(" - ")?;
        (fs.split_whitespace().next()? == "cgroup2").then(|| mount.split_whitespace().nth(4))?
    }) {
        return (PathBuf::from(point), None);
    }
    let dir = tempfile::tempdir().expect("mount point");
    let ok = fim_tests::spawn(
        Command::new("mount")
            .args(["-t", "cgroup2", "none"])
            .arg(dir.path()),
    )
    .and_then(|mut c| c.wait())
    .expect("mount")
    .success();
    assert!(ok, "mounting cgroup2");
    (dir.path().to_owned(), Some(dir))
}

fn the_cgroup_is_the_one_the_process_is_in_when_it_acts(sensor: &str) {
    use std::os::unix::fs::MetadataExt;
    if !require_privileges() {
        return;
    }
    let (root, mounted) = cgroup2_root();
    let cg = root.join(format!("fim-test-{}-{sensor}", std::process::id()));
    fs::create_dir(&cg).expect("a cgroup");
    let cg_id = fs::metadata(&cg).expect("cgroup").ino();
    let (_guard, dir) = tempdir();
    let mut d = start(sensor, &[&dir]);
    let (moved, forked) = (dir.join("moved"), dir.join("forked"));
    // What a service manager does: move itself into the cgroup, then exec the service; and
    // a process forked inside the cgroup. Both stay alive a moment, so even fanotify alone
    // finds them in /proc.
    let script = format!(
        "echo $$ > '{procs}'; exec sh -c \"echo x > '{moved}'; (echo y > '{forked}'; sleep 2); sleep 1\"",
        procs = cg.join("cgroup.procs").display(),
        moved = moved.display(),
        forked = forked.display(),
    );
    let mut child = fim_tests::spawn(Command::new("sh").args(["-c", &script])).expect("sh");
    for p in [&moved, &forked] {
        let v = d.wait_for("the write", |v| {
            v["file"]["path"] == p.to_str().unwrap_or("")
                && v["event"]["action"] != "close_write"
                && v["process"]["pid"].is_u64()
        });
        assert_eq!(v["fim"]["cgroup_id"], cg_id, "{v}");
    }
    let _ = child.wait();
    drop(d);
    let _ = fs::remove_dir(&cg);
    if let Some(m) = mounted {
        let _ = fim_tests::spawn(Command::new("umount").arg(m.path())).and_then(|mut c| c.wait());
    }
}
