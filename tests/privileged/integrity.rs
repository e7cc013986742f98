//! The integrity engine through the real daemon: before/after values of every attribute,
//! digests, atomic saves, files that vanish or are replaced before hashing, special files,
//! awkward names, changes made while the daemon was stopped, the quiet period and rescans.

use std::{
    ffi::CString,
    fs,
    io::Write as _,
    os::unix::{
        ffi::OsStrExt,
        fs::{MetadataExt, PermissionsExt, symlink},
    },
    path::{Path, PathBuf},
    time::Duration,
};

use fim_tests::{
    Daemon, assert_acted_by_this_thread, changed, is, require_privileges, sha256_hex, tempdir,
};
use serde_json::Value;

const BUILD: Duration = Duration::from_secs(60);

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in path")
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let name = CString::new(name).expect("name");
    // SAFETY: valid C strings and buffer.
    let r = unsafe {
        libc::setxattr(
            c(p).as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {name:?}: {}",
        std::io::Error::last_os_error()
    );
}

/// The kernel's binary ACL: (tag, perm, id) entries after a version-2 header.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut raw = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        raw.extend_from_slice(&tag.to_le_bytes());
        raw.extend_from_slice(&perm.to_le_bytes());
        raw.extend_from_slice(&id.to_le_bytes());
    }
    raw
}

fn start_built(dir: &Path, args: &[&str]) -> Daemon {
    let mut d = Daemon::start_with(&[dir], None, args);
    d.wait_log("baseline built", BUILD);
    d
}

fn mode_of(p: &Path) -> String {
    format!(
        "{:04o}",
        fs::symlink_metadata(p).expect("stat").mode() & 0o7777
    )
}

#[test]
fn content_change_reports_size_and_digest_before_and_after() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let f = dir.join("conf");
    fs::write(&f, b"old").expect("seed");
    let before_ino = fs::metadata(&f).expect("stat").ino();
    let mut d = start_built(&dir, &[]);
    fs::write(&f, b"new content").expect("rewrite");

    let v = d.wait_for("close_write with digest", |v| {
        is(v, "close_write", &f) && v["fim"]["after"]["sha256"].is_string()
    });
    assert_acted_by_this_thread(&v);
    let (b, a) = (&v["fim"]["before"], &v["fim"]["after"]);
    assert_eq!(b["sha256"], sha256_hex(b"old"), "{v}");
    assert_eq!(a["sha256"], sha256_hex(b"new content"), "{v}");
    assert_eq!(v["file"]["hash"]["sha256"], sha256_hex(b"new content"));
    assert_eq!(
        (b["size"].as_u64(), a["size"].as_u64()),
        (Some(3), Some(11))
    );
    assert_eq!(a["inode"], before_ino, "same inode: rewritten in place");
    assert_eq!(v["file"]["size"], 11);
    assert_eq!(v["fim"]["origin"], "realtime");
    let ch = changed(&v);
    for attr in ["size", "mtime", "ctime", "sha256"] {
        assert!(ch.contains(&attr.to_owned()), "{attr} in {ch:?}");
    }
    assert!(!ch.contains(&"inode".to_owned()), "{ch:?}");

    // The burst's earlier events carry metadata but defer the digest to the close.
    let w = d.wait_for("write", |v| is(v, "write", &f));
    assert!(w["fim"]["after"]["sha256"].is_null(), "{w}");
    assert_eq!(
        w["fim"]["after"]["hash_status"],
        "not hashed yet: write in progress"
    );
}

#[test]
fn each_metadata_change_reports_before_and_after() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let f = dir.join("bin");
    let sub = dir.join("sub");
    let link = dir.join("link");
    fs::write(&f, b"#!/bin/sh\n").expect("seed");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::create_dir(&sub).expect("mkdir");
    symlink("old-target", &link).expect("symlink");
    let mut d = start_built(&dir, &[]);

    // mode (setuid added)
    fs::set_permissions(&f, fs::Permissions::from_mode(0o4755)).expect("chmod");
    let v = d.wait_for("chmod", |v| is(v, "chmod", &f));
    assert_eq!(v["fim"]["before"]["mode"], "0755", "{v}");
    assert_eq!(v["fim"]["after"]["mode"], "4755", "{v}");
    assert!(changed(&v).contains(&"mode".to_owned()), "{v}");
    assert_eq!(
        v["fim"]["before"]["sha256"], v["fim"]["after"]["sha256"],
        "content unchanged"
    );
    assert!(!changed(&v).contains(&"sha256".to_owned()));

    // owner and group (chown also clears setuid)
    std::os::unix::fs::chown(&f, Some(1234), Some(5678)).expect("chown");
    let v = d.wait_for("chown", |v| is(v, "chown", &f));
    assert_eq!(
        (&v["fim"]["before"]["uid"], &v["fim"]["before"]["gid"]),
        (&Value::from(0), &Value::from(0))
    );
    assert_eq!(
        (&v["fim"]["after"]["uid"], &v["fim"]["after"]["gid"]),
        (&Value::from(1234), &Value::from(5678))
    );
    assert_eq!(v["file"]["uid"], "1234");
    let ch = changed(&v);
    assert!(
        ch.contains(&"uid".to_owned()) && ch.contains(&"gid".to_owned()),
        "{ch:?}"
    );
    assert_eq!(v["fim"]["after"]["mode"], mode_of(&f));

    // an ordinary xattr, reported by the digest of its value
    set_xattr(&f, "user.fim", b"v1");
    let v = d.wait_for("setxattr user.fim", |v| {
        is(v, "setxattr", &f) && v["fim"]["xattr"]["name"] == "user.fim"
    });
    assert!(v["fim"]["before"]["xattrs"].is_null(), "{v}");
    assert_eq!(v["fim"]["after"]["xattrs"]["user.fim"], sha256_hex(b"v1"));
    assert!(changed(&v).contains(&"xattrs".to_owned()));

    // access ACL (its mask becomes the group bits)
    let access = acl(&[
        (0x01, 6, u32::MAX),
        (0x02, 4, 1000),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ]);
    set_xattr(&f, "system.posix_acl_access", &access);
    let v = d.wait_for("acl", |v| {
        is(v, "setxattr", &f) && v["fim"]["xattr"]["name"] == "system.posix_acl_access"
    });
    assert!(v["fim"]["before"]["acl_access"].is_null(), "{v}");
    assert_eq!(
        v["fim"]["after"]["acl_access"],
        "user::rw-,user:1000:r--,group::r--,mask::r--,other::r--"
    );
    assert!(changed(&v).contains(&"acl_access".to_owned()), "{v}");

    // file capabilities: cap_net_raw permitted + effective (vfs_cap_data revision 2)
    let mut cap = (0x0200_0000u32 | 1).to_le_bytes().to_vec();
    for w in [1u32 << 13, 0, 0, 0] {
        cap.extend_from_slice(&w.to_le_bytes());
    }
    set_xattr(&f, "security.capability", &cap);
    let v = d.wait_for("capability", |v| {
        is(v, "setxattr", &f) && v["fim"]["xattr"]["name"] == "security.capability"
    });
    assert!(v["fim"]["before"]["capability"].is_null(), "{v}");
    assert_eq!(
        v["fim"]["after"]["capability"],
        "permitted=0x2000,inheritable=0x0,effective"
    );
    assert!(changed(&v).contains(&"capability".to_owned()), "{v}");

    // default ACL on a directory
    let default = acl(&[
        (0x01, 7, u32::MAX),
        (0x04, 5, u32::MAX),
        (0x20, 0, u32::MAX),
    ]);
    set_xattr(&sub, "system.posix_acl_default", &default);
    let v = d.wait_for("default acl", |v| is(v, "setxattr", &sub));
    assert_eq!(v["fim"]["after"]["type"], "dir");
    assert_eq!(
        v["fim"]["after"]["acl_default"],
        "user::rwx,group::r-x,other::---"
    );
    assert!(changed(&v).contains(&"acl_default".to_owned()), "{v}");

    // symlink target, replaced atomically
    let tmp = dir.join("link.tmp");
    symlink("new-target", &tmp).expect("symlink");
    fs::rename(&tmp, &link).expect("rename");
    let v = d.wait_for("symlink replaced", |v| is(v, "rename", &link));
    assert_eq!(v["fim"]["before"]["symlink_target"], "old-target", "{v}");
    assert_eq!(v["fim"]["after"]["symlink_target"], "new-target");
    assert_eq!(v["fim"]["replaced_target"], true);
    let ch = changed(&v);
    assert!(ch.contains(&"symlink_target".to_owned()) && ch.contains(&"inode".to_owned()));

    // a second name: the link count of the original changes, seen at its next event
    let hard = dir.join("hard");
    fs::hard_link(&f, &hard).expect("link");
    d.wait_for("link", |v| is(v, "link", &hard));
    fs::set_permissions(&f, fs::Permissions::from_mode(0o700)).expect("chmod");
    let v = d.wait_for("chmod after link", |v| {
        is(v, "chmod", &f) && v["fim"]["after"]["mode"] == "0700"
    });
    assert_eq!(v["fim"]["after"]["nlink"], 2);
    assert!(changed(&v).contains(&"nlink".to_owned()), "{v}");
}

#[test]
fn atomic_save_is_a_content_change_of_the_target() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let target = dir.join("sshd_config");
    fs::write(&target, b"PermitRootLogin no\n").expect("seed");
    let mut d = start_built(&dir, &[]);

    let tmp = dir.join(".sshd_config.swp");
    fs::write(&tmp, b"PermitRootLogin yes\n").expect("temp");
    fs::rename(&tmp, &target).expect("rename over");
    let v = d.wait_for("rename over target", |v| is(v, "rename", &target));
    assert_acted_by_this_thread(&v);
    assert_eq!(v["file"]["original"]["path"], tmp.to_str().expect("utf-8"));
    assert_eq!(v["fim"]["replaced_target"], true);
    assert_eq!(
        v["fim"]["before"]["sha256"],
        sha256_hex(b"PermitRootLogin no\n")
    );
    assert_eq!(
        v["fim"]["after"]["sha256"],
        sha256_hex(b"PermitRootLogin yes\n")
    );
    let ch = changed(&v);
    assert!(
        ch.contains(&"sha256".to_owned()) && ch.contains(&"inode".to_owned()),
        "{ch:?}"
    );

    // The baseline follows the rename: a later chmod compares with the new content.
    fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).expect("chmod");
    let v = d.wait_for("chmod", |v| is(v, "chmod", &target));
    assert_eq!(
        v["fim"]["before"]["sha256"],
        sha256_hex(b"PermitRootLogin yes\n")
    );
    assert!(!changed(&v).contains(&"sha256".to_owned()), "{v}");
}

/// A 2 GiB sparse file keeps the single hashing worker busy for a while, so the files
/// queued behind it are gone or replaced by the time they are observed.
#[test]
fn files_that_vanish_or_are_replaced_before_hashing_are_reported_as_such() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let mut d = start_built(&dir, &["--threads", "1", "--hash-max-size", "8000000000"]);
    let big = dir.join("big");
    let file = fs::File::create(&big).expect("create");
    file.set_len(2 << 30).expect("sparse");
    (&file).write_all(b"x").expect("write");
    drop(file);

    let gone = dir.join("gone");
    fs::write(&gone, b"short-lived").expect("write");
    fs::remove_file(&gone).expect("unlink");

    let swapped = dir.join("swapped");
    fs::write(&swapped, b"first").expect("write");
    let other = dir.join("other");
    fs::write(&other, b"second").expect("write");
    fs::rename(&other, &swapped).expect("rename over");

    let v = d.wait_for("close_write of the vanished file", |v| {
        is(v, "close_write", &gone)
    });
    assert!(v["fim"]["after"].is_null(), "{v}");
    assert!(
        v["fim"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("vanished")),
        "{v}"
    );
    let v = d.wait_for("close_write of the replaced file", |v| {
        is(v, "close_write", &swapped)
    });
    // Observed after the rename over it: the other file is there, and is not hashed as this
    // one. Or the rename came in the same batch: not observed at all, and said so.
    let superseded = v["fim"]["after"].is_null()
        && v["fim"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("a later operation in the same batch"));
    assert!(
        superseded || v["fim"]["after"]["hash_status"] == "not hashed: replaced before hashing",
        "{v}"
    );
    let v = d.wait_for("the big file", |v| {
        is(v, "close_write", &big) && v["fim"]["after"]["sha256"].is_string()
    });
    assert_eq!(v["fim"]["after"]["size"], 2u64 << 30);
}

#[test]
fn operations_a_later_one_superseded_are_reported_without_observing_a_newer_file() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let mut d = start_built(&dir, &[]);
    let (f, r, kept) = (dir.join("f"), dir.join("r"), dir.join("kept"));
    // Paused: the whole churn reaches the engine as one batch.
    d.pause();
    fs::write(&f, b"one").expect("write");
    fs::rename(&f, &r).expect("rename");
    fs::set_permissions(&r, fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::remove_file(&r).expect("unlink");
    fs::write(&kept, b"two").expect("write");
    d.resume();
    for (act, p) in [
        ("create", &f),
        ("write", &f),
        ("close_write", &f),
        ("rename", &r),
        ("chmod", &r),
    ] {
        let v = d.wait_for(act, |v| is(v, act, p));
        assert!(v["fim"]["after"].is_null(), "{v}");
        assert!(
            v["fim"]["note"]
                .as_str()
                .is_some_and(|n| n.contains("a later operation in the same batch")),
            "{v}"
        );
        assert_acted_by_this_thread(&v);
    }
    let v = d.wait_for("unlink", |v| is(v, "unlink", &r));
    assert!(
        v["fim"]["before"].is_null() && v["fim"]["after"].is_null(),
        "{v}"
    );
    let v = d.wait_for("close_write of the kept file", |v| {
        is(v, "close_write", &kept)
    });
    assert_eq!(v["fim"]["after"]["sha256"], sha256_hex(b"two"), "{v}");
}

#[test]
fn size_limit_fifo_and_socket_are_never_read() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let fifo = dir.join("fifo");
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(c(&fifo).as_ptr(), 0o600) }, 0);
    let sock = dir.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    // Building the baseline must not block on the FIFO nor fail on the socket.
    let mut d = start_built(&dir, &["--hash-max-size", "10"]);

    let fifo2 = dir.join("fifo2");
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(c(&fifo2).as_ptr(), 0o640) }, 0);
    let v = d.wait_for("mknod fifo", |v| is(v, "mknod", &fifo2));
    assert_eq!(v["fim"]["after"]["type"], "fifo", "{v}");
    assert!(v["fim"]["after"]["sha256"].is_null() && v["fim"]["after"]["hash_status"].is_null());

    let big = dir.join("big");
    fs::write(&big, b"more than ten bytes").expect("write");
    let v = d.wait_for("close_write", |v| is(v, "close_write", &big));
    assert_eq!(
        v["fim"]["after"]["hash_status"],
        "not hashed: too large (limit 10 bytes)"
    );
    assert_eq!(v["fim"]["after"]["size"], 19);
}

/// A name that is not UTF-8, and a path of 4,000 bytes.
#[test]
fn non_utf8_name_and_4000_byte_path() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let mut d = start_built(&dir, &[]);

    let odd = dir.join(std::ffi::OsStr::from_bytes(b"caf\xe9-\xff.conf"));
    fs::write(&odd, b"latin-1").expect("write");
    let rendered = format!("{}/caf\\xe9-\\xff.conf", dir.display());
    let v = d.wait_for("non-UTF-8 close_write", |v| {
        v["event"]["action"] == "close_write" && v["file"]["path"] == rendered.as_str()
    });
    assert_eq!(v["fim"]["after"]["sha256"], sha256_hex(b"latin-1"));

    let mut deep = dir.clone();
    while deep.as_os_str().len() < 4000 - 260 {
        deep.push("d".repeat(200));
    }
    fs::create_dir_all(&deep).expect("deep dirs");
    let pad = 4000 - deep.as_os_str().len() - 1;
    let long: PathBuf = deep.join("f".repeat(pad));
    assert_eq!(long.as_os_str().len(), 4000);
    fs::write(&long, b"deep").expect("write");
    let v = d.wait_for("4000-byte path", |v| is(v, "close_write", &long));
    assert_eq!(v["fim"]["path"]["truncated"], false);
    assert_eq!(v["fim"]["after"]["sha256"], sha256_hex(b"deep"));
}

#[test]
fn changes_made_while_stopped_are_found_at_start() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let state = tempfile::tempdir().expect("state");
    let (a, b, c_, n) = (dir.join("a"), dir.join("b"), dir.join("c"), dir.join("n"));
    for p in [&a, &b, &c_] {
        fs::write(p, b"same").expect("seed");
    }
    let mut d = Daemon::start_with(&[&dir], Some(state.path()), &[]);
    d.wait_log("baseline built: ", BUILD);
    let (_, _, status) = d.stop();
    assert!(status.success());

    fs::write(&a, b"edited offline").expect("edit");
    fs::set_permissions(&b, fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::remove_file(&c_).expect("rm");
    fs::write(&n, b"new").expect("add");

    let mut d = Daemon::start_with(&[&dir], Some(state.path()), &[]);
    let line = d.wait_log("reconciled:", BUILD);
    // a, b, and the directory itself (an entry added and one removed).
    assert!(line.contains("1 added, 1 removed, 3 changed"), "{line}");
    let found =
        |v: &Value, act: &str, p: &Path| is(v, act, p) && v["fim"]["origin"] == "found_at_start";
    let v = d.wait_for("a changed", |v| found(v, "changed", &a));
    assert_eq!(v["fim"]["before"]["sha256"], sha256_hex(b"same"));
    assert_eq!(v["fim"]["after"]["sha256"], sha256_hex(b"edited offline"));
    assert!(changed(&v).contains(&"sha256".to_owned()));
    assert!(v["process"].is_null(), "no process is invented: {v}");
    assert_eq!(v["fim"]["sensor"], "scan");
    let v = d.wait_for("b changed", |v| found(v, "changed", &b));
    assert_eq!(changed(&v), vec!["mode", "ctime"], "{v}");
    assert_eq!(v["fim"]["after"]["mode"], "0600");
    let v = d.wait_for("c removed", |v| found(v, "removed", &c_));
    assert!(v["fim"]["after"].is_null());
    assert_eq!(v["fim"]["before"]["sha256"], sha256_hex(b"same"));
    assert_eq!(v["event"]["type"][0], "deletion");
    let v = d.wait_for("n added", |v| found(v, "added", &n));
    assert!(v["fim"]["before"].is_null());
    assert_eq!(v["fim"]["after"]["sha256"], sha256_hex(b"new"));
    let v = d.wait_for("directory changed", |v| found(v, "changed", &dir));
    assert_eq!(changed(&v), vec!["mtime", "ctime"], "{v}");
    let (seen, _, _) = d.stop();
    assert_eq!(
        seen.iter()
            .filter(|v| v["fim"]["origin"] == "found_at_start")
            .count(),
        5,
        "nothing else is reported at start"
    );
}

#[test]
fn a_file_left_open_is_hashed_after_the_quiet_period() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let mut d = start_built(&dir, &["--hash-quiet", "300ms"]);
    let f = dir.join("log");
    let mut file = fs::File::create(&f).expect("create");
    file.write_all(b"still open").expect("write");
    let v = d.wait_for("modified", |v| is(v, "modified", &f));
    assert_acted_by_this_thread(&v);
    assert_eq!(v["fim"]["after"]["sha256"], sha256_hex(b"still open"));
    drop(file);
    let v = d.wait_for("close_write", |v| is(v, "close_write", &f));
    assert_eq!(v["fim"]["before"]["sha256"], sha256_hex(b"still open"));
}

#[test]
fn a_large_file_is_hashed_by_a_worker_and_the_small_ones_after_it_keep_their_order() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let mut d = start_built(&dir, &[]);
    // Large enough to be hashed on a worker thread, not on the engine's.
    let (big, small) = (dir.join("big"), dir.join("small"));
    let content: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    fs::write(&big, &content).expect("big");
    fs::write(&small, b"small").expect("small");
    fs::set_permissions(&small, fs::Permissions::from_mode(0o600)).expect("chmod");
    let end = dir.join("end");
    fs::create_dir(&end).expect("end");
    d.wait_for("end marker", |v| is(v, "mkdir", &end));
    let closes: Vec<&Value> = d
        .seen
        .iter()
        .filter(|v| {
            v["fim"]["origin"] == "realtime"
                && (is(v, "close_write", &big)
                    || is(v, "close_write", &small)
                    || is(v, "chmod", &small))
        })
        .collect();
    assert_eq!(closes.len(), 3, "{closes:?}");
    assert!(is(closes[0], "close_write", &big), "{}", closes[0]);
    assert_eq!(closes[0]["fim"]["after"]["sha256"], sha256_hex(&content));
    assert_eq!(closes[0]["file"]["size"], 4 << 20);
    assert!(is(closes[1], "close_write", &small), "{}", closes[1]);
    assert_eq!(closes[1]["fim"]["after"]["sha256"], sha256_hex(b"small"));
    assert!(is(closes[2], "chmod", &small), "{}", closes[2]);
    assert_eq!(closes[2]["fim"]["after"]["sha256"], sha256_hex(b"small"));
}

#[test]
fn a_scheduled_rescan_catches_what_real_time_missed() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let f = dir.join("stamp");
    fs::write(&f, b"x").expect("seed");
    // The eBPF tracepoint tier does not follow a file opened before it started (a
    // documented gap): a write through that descriptor is seen only by a rescan.
    let early = fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .expect("opened before the daemon");
    let mut d = start_built(&dir, &["--rescan-interval", "1s", "--sensor", "tracepoint"]);
    std::os::unix::fs::FileExt::write_at(&early, b"y", 0).expect("write");
    drop(early);
    let v = d.wait_for("rescan finding", |v| {
        is(v, "changed", &f) && v["fim"]["origin"] == "rescan"
    });
    let ch = changed(&v);
    assert!(
        ch.contains(&"sha256".to_owned()) && ch.contains(&"mtime".to_owned()),
        "{v}"
    );
    assert_eq!(v["fim"]["after"]["sha256"], sha256_hex(b"y"), "{v}");
}

#[test]
fn a_newly_watched_path_is_recorded_not_reported() {
    if !require_privileges() {
        return;
    }
    let (_guard_a, a) = tempdir();
    let (_guard_b, b) = tempdir();
    let state = tempfile::tempdir().expect("state");
    let (fa, fb) = (a.join("known"), b.join("already-there"));
    fs::write(&fa, b"one").expect("seed");
    fs::write(&fb, b"old").expect("seed");
    let mut d = Daemon::start_with(&[&a], Some(state.path()), &[]);
    d.wait_log("baseline built: ", BUILD);
    d.stop();

    fs::write(&fa, b"two").expect("edit while stopped");
    let mut d = Daemon::start_with(&[&a, &b], Some(state.path()), &[]);
    let newly = d.wait_log("newly watched", BUILD);
    assert!(newly.contains(b.to_str().expect("utf-8")), "{newly}");
    let line = d.wait_log("reconciled:", BUILD);
    assert!(line.contains("0 added, 0 removed, 1 changed"), "{line}");
    let v = d.wait_for("the offline edit", |v| {
        is(v, "changed", &fa) && v["fim"]["origin"] == "found_at_start"
    });
    assert_eq!(v["fim"]["after"]["sha256"], sha256_hex(b"two"));

    // The new root is in the baseline: a later change has its before values.
    fs::write(&fb, b"new").expect("edit");
    let v = d.wait_for("change under the new root", |v| {
        is(v, "close_write", &fb) && v["fim"]["after"]["sha256"].is_string()
    });
    assert_eq!(v["fim"]["before"]["sha256"], sha256_hex(b"old"));
    let (seen, _, _) = d.stop();
    assert!(
        seen.iter()
            .filter(|v| v["fim"]["origin"] == "found_at_start")
            .all(|v| v["file"]["path"] == fa.to_str().unwrap_or_default()),
        "nothing found at start under the new root: {seen:?}"
    );
}
