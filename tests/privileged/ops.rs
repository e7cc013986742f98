//! The scenario suite of the eBPF sensor: one test per operation, run against the tier in
//! `FIM_TEST_TIER` (the host: tracepoint; the kernel matrix's guests: LSM, fentry and
//! tracepoint). Where the tiers differ by design (where a path came from, what a create's
//! requested mode is, whether a syscall number exists), the expected value depends on the tier.

use std::{
    ffi::CString,
    fs,
    io::Write,
    os::{
        fd::{AsRawFd, IntoRawFd},
        unix::ffi::OsStrExt,
        unix::fs::PermissionsExt,
    },
    path::{Path, PathBuf},
};

use fim_tests::{
    Daemon, action, assert_acted_by_this_thread, attribute_call_source, is, kernel_object_tier,
    path, path_arg_source, require_privileges, tempdir,
};
use serde_json::Value;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in path")
}

fn cs(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

fn check(ret: libc::c_int, what: &str) {
    assert!(ret >= 0, "{what}: {}", std::io::Error::last_os_error());
}

/// Asserts fields common to every event about `p` made by this thread.
fn assert_event(v: &Value, act: &str, p: &Path) {
    assert_eq!(action(v), act, "{v}");
    assert_eq!(path(v), p.to_str().expect("utf-8 test path"), "{v}");
    assert_eq!(
        v["file"]["name"],
        p.file_name().and_then(|n| n.to_str()).unwrap_or_default()
    );
    assert_eq!(
        v["file"]["directory"],
        p.parent().and_then(|d| d.to_str()).unwrap_or_default()
    );
    assert_eq!(v["event"]["category"][0], "file");
    // Kernel-object tiers see operations, not syscalls; every tier counts writes at their
    // syscalls (closes are seen at `filp_close` in the kernel-object tiers).
    let at_syscall = !kernel_object_tier() || act == "write";
    assert_eq!(
        v["fim"]["syscall_nr"].is_null(),
        !at_syscall,
        "syscall_nr in {v}"
    );
    // A close is the last release of the open file. Another test thread that forks while
    // the file is open copies the descriptor into its child, which releases it at exec:
    // then the child made the close, and the event says so.
    let forked_child = act == "close_write"
        && v["process"]["parent"]["pid"] == std::process::id()
        && v["process"]["pid"] != std::process::id();
    if !forked_child {
        assert_acted_by_this_thread(v);
    }
}

/// This process's umask, read without changing it (other test threads create files).
fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
        .expect("Umask line")
}

fn inode_of(p: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p).expect("stat").ino().to_string()
}

#[test]
fn create_write_close_report_mode_bytes_and_inode() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let mut d = Daemon::start(&[&dir]);
    let f = dir.join("new.txt");
    let mut file = fs::File::create(&f).expect("create");
    file.write_all(b"hello").expect("write");
    file.write_all(b" world").expect("write");
    drop(file);
    let ino = inode_of(&f);

    let v = d.wait_for("create", |v| is(v, "create", &f));
    assert_event(&v, "create", &f);
    assert_eq!(v["event"]["type"][0], "creation");
    let expected = format!("{:04o}", 0o666 & !umask());
    // The tracepoint tier reads the open's argument; the kernel-object tiers see the inode
    // the kernel made, after the umask.
    let requested = if kernel_object_tier() {
        expected.as_str()
    } else {
        "0666"
    };
    assert_eq!(
        v["fim"]["requested"]["mode"], requested,
        "mode requested by File::create"
    );
    assert_eq!(
        v["file"]["mode"],
        expected.as_str(),
        "the file's mode after umask"
    );
    assert_eq!(v["file"]["inode"], ino.as_str());
    assert_eq!(v["file"]["type"], "file");
    assert_eq!(v["fim"]["path"]["source"], "kernel_object");
    assert_eq!(v["fim"]["open_truncated"], true);

    let v = d.wait_for("write", |v| is(v, "write", &f));
    assert_event(&v, "write", &f);
    assert_eq!(v["fim"]["bytes_written"], 5, "the first write only");
    assert_eq!(v["file"]["inode"], ino.as_str());

    let v = d.wait_for("close_write", |v| is(v, "close_write", &f));
    assert_event(&v, "close_write", &f);
    assert_eq!(
        v["fim"]["bytes_written"], 11,
        "all writes through the open file"
    );
    let (seen, _, status) = d.stop();
    assert!(status.success(), "fim exits 0 on SIGINT");
    assert_eq!(
        seen.iter().filter(|v| is(v, "write", &f)).count(),
        1,
        "one write event per open"
    );
}

/// A file whose descriptor is shared with a forked child and a dup. The tracepoint tier
/// sees releases only at `close`/`dup2`: the process that opened the file reports each of
/// its closes that follows writes, though the child still holds a copy (a child forked by
/// another thread holds one until its exec: waiting for it lost the report). The
/// kernel-object tiers see every release and report once, at the last, made by the child.
#[test]
fn a_file_shared_with_a_child_and_a_dup_reports_its_closes() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let mut d = Daemon::start(&[&dir]);
    let f = dir.join("shared.txt");
    let me = std::process::id();
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC;
    // SAFETY: plain syscalls on descriptors this test owns; the child only calls
    // async-signal-safe functions before `_exit`.
    let child = unsafe {
        let fd = libc::open(c(&f).as_ptr(), flags, 0o644);
        check(fd, "open");
        check(libc::write(fd, b"hello".as_ptr().cast(), 5) as i32, "write");
        let mut gate = [0; 2];
        check(libc::pipe2(gate.as_mut_ptr(), libc::O_CLOEXEC), "pipe2");
        let child = libc::fork();
        check(child, "fork");
        if child == 0 {
            // Holds its copy of `fd` until the parent closes the gate.
            libc::close(gate[1]);
            let mut byte = 0u8;
            libc::read(gate[0], (&raw mut byte).cast(), 1);
            libc::_exit(0);
        }
        libc::close(gate[0]);
        let dup = libc::dup(fd);
        check(dup, "dup");
        check(libc::close(fd), "close the opened descriptor");
        check(
            libc::write(dup, b" world".as_ptr().cast(), 6) as i32,
            "write through the dup",
        );
        check(libc::close(dup), "close the dup");
        check(libc::close(gate[1]), "open the gate");
        let mut status = 0;
        assert_eq!(libc::waitpid(child, &mut status, 0), child);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        child as u32
    };
    let whole = fim_tests::sha256_hex(b"hello world");
    let last = d.wait_for("the last close", |v| {
        is(v, "close_write", &f) && v["fim"]["after"]["sha256"] == whole.as_str()
    });
    let (seen, _, status) = d.stop();
    assert!(status.success(), "fim exits 0 on SIGINT");
    let steps: Vec<(String, i64, u32)> = seen
        .iter()
        .filter(|v| path(v) == f.to_str().unwrap_or_default())
        .filter(|v| ["create", "write", "close_write"].contains(&action(v)))
        .map(|v| {
            let pid = v["process"]["pid"].as_u64().unwrap_or_default() as u32;
            let bytes = v["fim"]["bytes_written"].as_i64().unwrap_or(-1);
            (action(v).to_owned(), bytes, pid)
        })
        .collect();
    let step = |a: &str, bytes: i64, pid: u32| (a.to_owned(), bytes, pid);
    let expected = if kernel_object_tier() {
        vec![
            step("create", -1, me),
            step("write", 5, me),
            step("close_write", 11, child),
        ]
    } else {
        vec![
            step("create", -1, me),
            step("write", 5, me),
            step("close_write", 5, me),
            step("write", 6, me),
            step("close_write", 6, me),
        ]
    };
    assert_eq!(steps, expected, "action, bytes written, pid: {seen:#?}");
    if kernel_object_tier() {
        assert_eq!(
            last["process"]["parent"]["pid"], me,
            "forked by this test: {last}"
        );
    }
}

#[test]
fn open_for_write_and_truncate_by_path_and_fd() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let f = dir.join("existing");
    fs::write(&f, b"0123456789").expect("seed");
    let mut d = Daemon::start(&[&dir]);

    let file = fs::OpenOptions::new().write(true).open(&f).expect("open");
    let v = d.wait_for("open_write", |v| is(v, "open_write", &f));
    assert_event(&v, "open_write", &f);
    assert_eq!(v["event"]["type"][0], "access");
    assert!(v["fim"]["open_truncated"].is_null());

    file.set_len(4).expect("ftruncate");
    let v = d.wait_for("ftruncate", |v| {
        is(v, "truncate", &f) && v["fim"]["truncate_length"] == 4
    });
    assert_event(&v, "truncate", &f);
    assert_eq!(v["fim"]["path"]["source"], "kernel_object");
    assert_eq!(v["file"]["inode"], inode_of(&f).as_str());
    drop(file);

    check(unsafe { libc::truncate(c(&f).as_ptr(), 2) }, "truncate");
    let v = d.wait_for("truncate", |v| {
        is(v, "truncate", &f) && v["fim"]["truncate_length"] == 2
    });
    assert_event(&v, "truncate", &f);
    assert_eq!(v["fim"]["path"]["source"], attribute_call_source());

    // An O_TRUNC open is one event that says so, not an open plus a truncate.
    let file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&f)
        .expect("open O_TRUNC");
    let v = d.wait_for("O_TRUNC open", |v| {
        is(v, "open_write", &f) && v["fim"]["open_truncated"] == true
    });
    assert_event(&v, "open_write", &f);
    drop(file);
    let marker = dir.join("marker");
    fs::create_dir(&marker).expect("marker");
    d.wait_for("marker", |v| is(v, "mkdir", &marker));
    let (seen, _, _) = d.stop();
    let zero: Vec<_> = seen
        .iter()
        .filter(|v| is(v, "truncate", &f) && v["fim"]["truncate_length"] == 0)
        .collect();
    assert!(zero.is_empty(), "O_TRUNC reported as a truncate: {zero:?}");
}

#[test]
fn unlink_mkdir_rmdir() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let f = dir.join("gone");
    fs::write(&f, b"x").expect("seed");
    let mut d = Daemon::start(&[&dir]);
    fs::remove_file(&f).expect("unlink");
    let v = d.wait_for("unlink", |v| is(v, "unlink", &f));
    assert_event(&v, "unlink", &f);
    assert_eq!(v["event"]["type"][0], "deletion");

    let sub = dir.join("sub");
    fs::DirBuilder::new()
        .mode(0o750)
        .create(&sub)
        .expect("mkdir");
    let v = d.wait_for("mkdir", |v| is(v, "mkdir", &sub));
    assert_event(&v, "mkdir", &sub);
    assert_eq!(v["file"]["mode"], "0750");
    fs::remove_dir(&sub).expect("rmdir");
    let v = d.wait_for("rmdir", |v| is(v, "rmdir", &sub));
    assert_event(&v, "rmdir", &sub);
}

use std::os::unix::fs::DirBuilderExt;

#[test]
fn rename_reports_both_paths_with_flags_and_dirfd_relative_names() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let (a, b, x) = (dir.join("a"), dir.join("b"), dir.join("x"));
    fs::write(&a, b"a").expect("seed");
    fs::write(&x, b"x").expect("seed");
    let mut d = Daemon::start(&[&dir]);

    fs::rename(&a, &b).expect("rename");
    let v = d.wait_for("rename", |v| is(v, "rename", &b));
    assert_event(&v, "rename", &b);
    assert_eq!(v["file"]["original"]["path"], a.to_str().expect("utf-8"));
    assert_eq!(v["fim"]["rename_flags"], serde_json::json!([]));

    // renameat2(dirfd, "b", dirfd, "x", RENAME_EXCHANGE): relative names against a dirfd.
    let dirfd = fs::File::open(&dir).expect("open dir");
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            dirfd.as_raw_fd(),
            cs("b").as_ptr(),
            dirfd.as_raw_fd(),
            cs("x").as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    check(r as i32, "renameat2 exchange");
    let v = d.wait_for("exchange", |v| {
        is(v, "rename", &x) && v["fim"]["rename_flags"][0] == "exchange"
    });
    assert_event(&v, "rename", &x);
    assert_eq!(v["file"]["original"]["path"], b.to_str().expect("utf-8"));

    let y = dir.join("y");
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            c(&x).as_ptr(),
            libc::AT_FDCWD,
            c(&y).as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    check(r as i32, "renameat2 noreplace");
    let v = d.wait_for("noreplace", |v| is(v, "rename", &y));
    assert_eq!(v["fim"]["rename_flags"], serde_json::json!(["noreplace"]));
    assert_eq!(v["file"]["original"]["path"], x.to_str().expect("utf-8"));
    assert_acted_by_this_thread(&v);
}

#[test]
fn rename_into_and_out_of_the_watched_tree() {
    if !require_privileges() {
        return;
    }
    let (_g1, watched) = tempdir();
    let (_g2, outside) = tempdir();
    let (o, w) = (outside.join("in"), watched.join("in"));
    fs::write(&o, b"x").expect("seed");
    let mut d = Daemon::start(&[&watched]);
    fs::rename(&o, &w).expect("move in");
    let v = d.wait_for("move in", |v| is(v, "rename", &w));
    assert_eq!(v["file"]["original"]["path"], o.to_str().expect("utf-8"));
    let back = outside.join("out");
    fs::rename(&w, &back).expect("move out");
    let v = d.wait_for("move out", |v| is(v, "rename", &back));
    assert_eq!(v["file"]["original"]["path"], w.to_str().expect("utf-8"));
}

#[test]
fn chmod_by_path_and_fd() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let f = dir.join("perm");
    fs::write(&f, b"x").expect("seed");
    let mut d = Daemon::start(&[&dir]);
    fs::set_permissions(&f, fs::Permissions::from_mode(0o4751)).expect("chmod");
    let v = d.wait_for("chmod", |v| {
        is(v, "chmod", &f) && v["fim"]["requested"]["mode"] == "4751"
    });
    assert_event(&v, "chmod", &f);
    assert_eq!(v["fim"]["path"]["source"], attribute_call_source());

    let file = fs::File::open(&f).expect("open");
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .expect("fchmod");
    let v = d.wait_for("fchmod", |v| {
        is(v, "chmod", &f) && v["fim"]["requested"]["mode"] == "0600"
    });
    assert_event(&v, "chmod", &f);
    assert_eq!(v["fim"]["path"]["source"], "kernel_object");
    assert_eq!(v["file"]["inode"], inode_of(&f).as_str());
}

#[test]
fn chown_by_path_fd_and_without_following_symlinks() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let f = dir.join("owned");
    let link = dir.join("owned-link");
    fs::write(&f, b"x").expect("seed");
    std::os::unix::fs::symlink(&f, &link).expect("symlink");
    let mut d = Daemon::start(&[&dir]);

    std::os::unix::fs::chown(&f, Some(1234), Some(5678)).expect("chown");
    let v = d.wait_for("chown", |v| {
        is(v, "chown", &f) && v["fim"]["requested"]["uid"] == "1234"
    });
    assert_event(&v, "chown", &f);
    assert_eq!(v["fim"]["requested"]["gid"], "5678");

    let file = fs::File::open(&f).expect("open");
    std::os::unix::fs::fchown(&file, None, Some(42)).expect("fchown");
    let v = d.wait_for("fchown", |v| {
        is(v, "chown", &f) && v["fim"]["requested"]["gid"] == "42"
    });
    assert_event(&v, "chown", &f);
    assert!(
        v["fim"]["requested"]["uid"].is_null(),
        "an unchanged uid is not reported: {v}"
    );

    std::os::unix::fs::lchown(&link, Some(7), None).expect("lchown");
    let v = d.wait_for("lchown", |v| is(v, "chown", &link));
    assert_event(&v, "chown", &link);
    assert_eq!(v["fim"]["requested"]["uid"], "7");
    assert_eq!(v["fim"]["no_follow"], true);
}

#[test]
fn set_and_remove_xattr_by_path_and_fd() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let f = dir.join("attrs");
    fs::write(&f, b"x").expect("seed");
    let mut d = Daemon::start(&[&dir]);
    let value = b"v";
    let name = cs("user.fim.test");
    check(
        unsafe { libc::setxattr(c(&f).as_ptr(), name.as_ptr(), value.as_ptr().cast(), 1, 0) },
        "setxattr",
    );
    let v = d.wait_for("setxattr", |v| is(v, "setxattr", &f));
    assert_event(&v, "setxattr", &f);
    assert_eq!(v["fim"]["xattr"]["name"], "user.fim.test");

    let file = fs::File::open(&f).expect("open");
    let name2 = cs("user.second");
    check(
        unsafe {
            libc::fsetxattr(
                file.as_raw_fd(),
                name2.as_ptr(),
                value.as_ptr().cast(),
                1,
                0,
            )
        },
        "fsetxattr",
    );
    let v = d.wait_for("fsetxattr", |v| {
        is(v, "setxattr", &f) && v["fim"]["xattr"]["name"] == "user.second"
    });
    assert_event(&v, "setxattr", &f);
    assert_eq!(v["fim"]["path"]["source"], "kernel_object");

    check(
        unsafe { libc::removexattr(c(&f).as_ptr(), name.as_ptr()) },
        "removexattr",
    );
    let v = d.wait_for("removexattr", |v| is(v, "removexattr", &f));
    assert_event(&v, "removexattr", &f);
    assert_eq!(v["fim"]["xattr"]["name"], "user.fim.test");
}

#[test]
fn hard_and_symbolic_links() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let f = dir.join("target");
    fs::write(&f, b"x").expect("seed");
    let mut d = Daemon::start(&[&dir]);
    let hard = dir.join("hard");
    fs::hard_link(&f, &hard).expect("link");
    let v = d.wait_for("link", |v| is(v, "link", &hard));
    assert_event(&v, "link", &hard);
    assert_eq!(v["file"]["target_path"], f.to_str().expect("utf-8"));

    let soft = dir.join("soft");
    std::os::unix::fs::symlink("../some/where", &soft).expect("symlink");
    let v = d.wait_for("symlink", |v| is(v, "symlink", &soft));
    assert_event(&v, "symlink", &soft);
    assert_eq!(
        v["file"]["target_path"], "../some/where",
        "the target text, verbatim"
    );
}

#[test]
fn dirfd_relative_unlink_resolves_in_the_kernel() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let sub = dir.join("deep/er");
    fs::create_dir_all(&sub).expect("mkdir");
    let f = sub.join("rel");
    fs::write(&f, b"x").expect("seed");
    let mut d = Daemon::start(&[&dir]);
    let dirfd = fs::File::open(dir.join("deep")).expect("open dir");
    check(
        unsafe { libc::unlinkat(dirfd.as_raw_fd(), cs("./er/rel").as_ptr(), 0) },
        "unlinkat",
    );
    let v = d.wait_for("unlinkat", |v| is(v, "unlink", &f));
    assert_event(&v, "unlink", &f);
    assert_eq!(v["fim"]["path"]["source"], path_arg_source());
}

#[test]
fn nothing_arrives_from_outside_the_watched_roots() {
    if !require_privileges() {
        return;
    }
    let (_g1, watched) = tempdir();
    // A sibling whose name extends the watched root's: a prefix match must not take it.
    let sibling = Path::new(&format!("{}-sibling", watched.display())).to_path_buf();
    fs::create_dir(&sibling).expect("sibling");
    let mut d = Daemon::start(&[&watched]);
    let f = sibling.join("f");
    fs::write(&f, b"x").expect("write");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::rename(&f, sibling.join("g")).expect("rename");
    fs::remove_file(sibling.join("g")).expect("unlink");
    // A marker inside the watched root: once it arrives, anything earlier has too.
    let marker = watched.join("marker");
    fs::create_dir(&marker).expect("marker");
    d.wait_for("marker", |v| is(v, "mkdir", &marker));
    let (seen, _, _) = d.stop();
    fs::remove_dir_all(&sibling).expect("cleanup");
    let stray: Vec<_> = seen
        .iter()
        .filter(|v| !path(v).starts_with(watched.to_str().unwrap_or("?")))
        .collect();
    assert!(
        stray.is_empty(),
        "events from outside the watched root: {stray:?}"
    );
}

#[test]
fn bad_watch_path_is_a_clear_error() {
    if !require_privileges() {
        return;
    }
    let out = fim_tests::spawn(
        std::process::Command::new(fim_tests::fim_bin())
            .args(["run", "--watch", "/nonexistent/fim-test-path"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    )
    .and_then(std::process::Child::wait_with_output)
    .expect("run fim");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "fim: error: watch path `/nonexistent/fim-test-path` does not exist"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn more_watched_roots_than_the_kernel_table_holds_are_watched_through_coarser_prefixes() {
    if !require_privileges() {
        return;
    }
    // One more root than the kernel's table holds (fim_common::MAX_WATCH_ROOTS): the table
    // gets coarser prefixes, userspace keeps the exact set.
    let (_guard, dir) = tempdir();
    let roots: Vec<PathBuf> = (0..4097).map(|i| dir.join(format!("r{i}"))).collect();
    for root in &roots {
        fs::create_dir(root).expect("mkdir");
    }
    let unwatched = dir.join("unwatched");
    fs::create_dir(&unwatched).expect("mkdir");
    let watch: Vec<&Path> = roots.iter().map(PathBuf::as_path).collect();
    let mut d = Daemon::start(&watch);
    let warning = d.wait_log(
        "exceed the kernel's table",
        std::time::Duration::from_secs(5),
    );
    assert!(warning.contains("4097 watched prefixes"), "{warning}");
    let (last, outside) = (roots[4096].join("f"), unwatched.join("f"));
    fs::write(&outside, b"x").expect("write outside");
    fs::write(&last, b"x").expect("write in the last root");
    d.wait_for("the last root's change", |v| is(v, "close_write", &last));
    let (seen, _, status) = d.stop();
    assert!(status.success());
    let outside = outside.to_str().expect("utf-8");
    assert!(
        seen.iter().all(|v| v["file"]["path"] != outside),
        "the coarser prefix lets the sibling through the kernel, not through fim"
    );
}

#[test]
fn failed_operations_are_not_reported() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let full = dir.join("full");
    fs::create_dir(&full).expect("mkdir");
    fs::write(full.join("inside"), b"x").expect("seed");
    let f = dir.join("attrs");
    fs::write(&f, b"x").expect("seed");
    let name = cs("user.once");
    check(
        unsafe { libc::setxattr(c(&f).as_ptr(), name.as_ptr(), b"1".as_ptr().cast(), 1, 0) },
        "setxattr",
    );
    let mut d = Daemon::start(&[&dir]);
    // Both pass the kernel's permission hooks and fail inside the operation itself.
    let err = fs::remove_dir(&full).expect_err("rmdir of a non-empty directory");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));
    let r = unsafe {
        libc::setxattr(
            c(&f).as_ptr(),
            name.as_ptr(),
            b"2".as_ptr().cast(),
            1,
            libc::XATTR_CREATE,
        )
    };
    assert_eq!(r, -1, "XATTR_CREATE on an existing attribute fails");
    let marker = dir.join("marker");
    fs::create_dir(&marker).expect("marker");
    d.wait_for("marker", |v| is(v, "mkdir", &marker));
    let (seen, _, _) = d.stop();
    let reported: Vec<_> = seen
        .iter()
        .filter(|v| is(v, "rmdir", &full) || is(v, "setxattr", &f))
        .collect();
    assert!(
        reported.is_empty(),
        "failed operations reported: {reported:?}"
    );
}

/// Whether the tier under test sees io_uring; says so when it does not (by design: io_uring
/// bypasses syscall tracepoints, and fanotify covers it on such kernels, see fanotify.rs).
/// The matrix runs these scenarios on LSM and fentry.
fn io_uring_is_seen() -> bool {
    if !kernel_object_tier() {
        println!("skipped: the tracepoint tier does not see io_uring");
    }
    kernel_object_tier()
}

/// Submits `op`, waits for it, and returns its result.
///
/// # Safety
/// Whatever `op` points at (buffers, path strings, descriptors) must stay valid until this
/// returns; it waits for the completion.
unsafe fn through_the_ring(ring: &mut io_uring::IoUring, op: &io_uring::squeue::Entry) -> i32 {
    // SAFETY: the caller's contract above.
    unsafe { ring.submission().push(op).expect("queue") };
    ring.submit_and_wait(1).expect("submit");
    ring.completion().next().expect("completion").result()
}

#[test]
fn a_write_through_io_uring_is_seen_by_the_kernel_object_tiers() {
    if !require_privileges() || !io_uring_is_seen() {
        return;
    }
    let (_guard, dir) = tempdir();
    let mut d = Daemon::start(&[&dir]);
    let f = dir.join("ring");
    let file = fs::File::create(&f).expect("create");
    d.wait_for("create", |v| is(v, "create", &f));
    let mut ring = io_uring::IoUring::new(4).expect("io_uring");
    let data = b"through the ring";
    let write = io_uring::opcode::Write::new(
        io_uring::types::Fd(file.as_raw_fd()),
        data.as_ptr(),
        data.len() as u32,
    )
    .build();
    // SAFETY: `data` and `file` outlive the call.
    let written = unsafe { through_the_ring(&mut ring, &write) };
    assert_eq!(written, data.len() as i32);
    let v = d.wait_for("io_uring write", |v| is(v, "write", &f));
    assert_eq!(path(&v), f.to_str().expect("utf-8"));
    assert_eq!(v["fim"]["path"]["source"], "kernel_object");
    assert!(
        v["fim"]["bytes_written"].is_null(),
        "no byte count outside a write syscall: {v}"
    );
    assert_eq!(v["file"]["inode"], inode_of(&f).as_str());
    assert_eq!(v["fim"]["sensor"], format!("ebpf-{}", fim_tests::tier()));
    assert_eq!(v["process"]["pid"], std::process::id());

    let close = io_uring::opcode::Close::new(io_uring::types::Fd(file.into_raw_fd())).build();
    // SAFETY: closing a descriptor this test owns (given up by into_raw_fd).
    assert_eq!(unsafe { through_the_ring(&mut ring, &close) }, 0);
    let v = d.wait_for("io_uring close", |v| is(v, "close_write", &f));
    assert_eq!(v["fim"]["path"]["source"], "kernel_object");
    assert!(
        v["fim"]["bytes_written"].is_null(),
        "bytes written through io_uring are not counted: {v}"
    );
    // The last reference may be dropped by a child another test thread was forking while
    // the file was open (it holds the descriptor until its exec closes it).
    let me = u64::from(std::process::id());
    assert!(
        v["process"]["pid"] == me || v["process"]["parent"]["pid"] == me,
        "closed by this process or a child forked meanwhile: {v}"
    );
    assert_eq!(v["fim"]["after"]["sha256"], fim_tests::sha256_hex(data));
}

#[test]
fn a_file_left_open_at_exit_is_closed_by_the_kernel_object_tiers() {
    if !require_privileges() {
        return;
    }
    if !kernel_object_tier() {
        // By design: only close/dup2 syscalls are seen there; the integrity engine's quiet
        // period hashes such a file.
        println!("skipped: the tracepoint tier sees closes only at the close syscalls");
        return;
    }
    let (_guard, dir) = tempdir();
    let mut d = Daemon::start(&[&dir]);
    let f = dir.join("left-open");
    // The shell opens fd 3, writes through it and exits without closing it.
    let status = fim_tests::spawn(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("exec 3>'{}'; echo left >&3; exit 0", f.display())),
    )
    .and_then(|mut c| c.wait())
    .expect("sh");
    assert!(status.success());
    let v = d.wait_for("close at exit", |v| is(v, "close_write", &f));
    assert_eq!(v["fim"]["bytes_written"], 5, "{v}");
    assert_eq!(v["process"]["name"], "sh", "{v}");
    assert_eq!(v["process"]["parent"]["pid"], std::process::id(), "{v}");
    assert_eq!(
        v["fim"]["after"]["sha256"],
        fim_tests::sha256_hex(b"left\n")
    );
}

#[test]
fn namespace_operations_through_io_uring_are_seen_by_the_kernel_object_tiers() {
    if !require_privileges() || !io_uring_is_seen() {
        return;
    }
    let (_guard, dir) = tempdir();
    let mut d = Daemon::start(&[&dir]);
    let (sub, a, b) = (dir.join("ringdir"), dir.join("a"), dir.join("b"));
    fs::write(&a, b"x").expect("seed");
    let mut ring = io_uring::IoUring::new(4).expect("io_uring");
    let (sub_c, a_c, b_c) = (c(&sub), c(&a), c(&b));
    let ops = [
        io_uring::opcode::MkDirAt::new(io_uring::types::Fd(libc::AT_FDCWD), sub_c.as_ptr())
            .mode(0o700)
            .build(),
        io_uring::opcode::RenameAt::new(
            io_uring::types::Fd(libc::AT_FDCWD),
            a_c.as_ptr(),
            io_uring::types::Fd(libc::AT_FDCWD),
            b_c.as_ptr(),
        )
        .build(),
        io_uring::opcode::UnlinkAt::new(io_uring::types::Fd(libc::AT_FDCWD), b_c.as_ptr()).build(),
    ];
    for op in ops {
        // SAFETY: the path strings outlive the call.
        let result = unsafe { through_the_ring(&mut ring, &op) };
        assert_eq!(result, 0, "io_uring operation failed");
    }
    for (what, act, p) in [
        ("mkdir", "mkdir", &sub),
        ("rename", "rename", &b),
        ("unlink", "unlink", &b),
    ] {
        let v = d.wait_for(what, |v| is(v, act, p));
        assert_eq!(v["fim"]["path"]["source"], "kernel_object", "{v}");
        assert_eq!(v["process"]["pid"], std::process::id(), "{v}");
        assert_eq!(v["fim"]["sensor"], format!("ebpf-{}", fim_tests::tier()));
        if act == "rename" {
            assert_eq!(v["file"]["original"]["path"], a.to_str().expect("utf-8"));
        }
        if act == "mkdir" {
            assert_eq!(v["file"]["mode"], "0700");
        }
    }
}
