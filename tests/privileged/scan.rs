//! `fim scan init` / `fim scan check` on real trees: exit codes, the JSON report, special
//! files and awkward names. No daemon is involved.

use std::{
    ffi::{OsStr, OsString},
    fs,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::Path,
};

use fim_tests::{changed, fim, sha256_hex, tempdir};
use serde_json::Value;

fn args(cmd: &str, watch: &Path, state: &Path) -> Vec<OsString> {
    vec![
        "scan".into(),
        cmd.into(),
        "--watch".into(),
        watch.into(),
        "--state-dir".into(),
        state.into(),
    ]
}

fn run(cmd: &str, dir: &Path, state: &Path) -> (i32, Vec<Value>, String) {
    let a = args(cmd, dir, state);
    let refs: Vec<&OsStr> = a.iter().map(OsString::as_os_str).collect();
    let (code, out, err) = fim(&refs);
    let docs = out
        .lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}"));
            fim_tests::schema_check(&v).unwrap_or_else(|invalid| panic!("{invalid}"));
            v
        })
        .collect();
    (code, docs, err)
}

fn init(dir: &Path, state: &Path) {
    let (code, docs, err) = run("init", dir, state);
    assert_eq!(code, 0, "init failed: {err}");
    assert!(docs.is_empty(), "init prints no differences");
    assert!(err.contains("baseline of"), "{err}");
}

#[test]
fn check_exit_status_says_what_differs() {
    if !fim_tests::fim_bin().exists() {
        assert!(std::env::var_os("CI").is_none(), "fim binary missing in CI");
        eprintln!("skipping: no fim binary (run `cargo xtask test`)");
        return;
    }
    let (_guard, dir) = tempdir();
    let state = tempfile::tempdir().expect("state");
    for name in ["keep", "edit", "gone"] {
        fs::write(dir.join(name), name.as_bytes()).expect("seed");
    }
    // The directory's children only: its own mtime would change with every add/remove.
    let children = dir.join("*");
    let dir = children.as_path();
    let file = |name: &str| dir.with_file_name(name);
    init(dir, state.path());
    let (code, docs, err) = run("check", dir, state.path());
    assert_eq!((code, docs.len()), (0, 0), "clean check: {err}");
    assert!(err.contains("0 added, 0 removed, 0 changed"), "{err}");

    fs::write(file("new"), b"new").expect("add");
    let (code, docs, _) = run("check", dir, state.path());
    assert_eq!(code, 1, "added only");
    assert_eq!(docs.len(), 1);
    let v = &docs[0];
    assert_eq!(v["event"]["action"], "added");
    assert_eq!(v["fim"]["origin"], "scan_check");
    assert_eq!(v["fim"]["after"]["sha256"], sha256_hex(b"new"));
    fs::remove_file(file("new")).expect("rm");

    fs::remove_file(file("gone")).expect("rm");
    let (code, docs, _) = run("check", dir, state.path());
    assert_eq!(code, 2, "removed only: {docs:?}");
    assert_eq!(docs[0]["event"]["action"], "removed");
    assert_eq!(docs[0]["fim"]["before"]["sha256"], sha256_hex(b"gone"));

    fs::write(file("edit"), b"edited").expect("edit");
    let (code, docs, _) = run("check", dir, state.path());
    assert_eq!(code, 2 | 4, "removed and changed");
    let v = docs
        .iter()
        .find(|v| v["event"]["action"] == "changed")
        .expect("a changed document");
    assert_eq!(v["fim"]["before"]["sha256"], sha256_hex(b"edit"));
    assert_eq!(v["fim"]["after"]["sha256"], sha256_hex(b"edited"));
    assert!(changed(v).contains(&"sha256".to_owned()), "{v}");

    fs::write(file("new"), b"new").expect("add");
    let (code, docs, _) = run("check", dir, state.path());
    assert_eq!((code, docs.len()), (7, 3), "all three kinds");

    // check does not update the baseline; init does.
    init(dir, state.path());
    let (code, _, _) = run("check", dir, state.path());
    assert_eq!(code, 0);
}

#[test]
fn errors_have_their_own_exit_status() {
    if !fim_tests::fim_bin().exists() {
        assert!(std::env::var_os("CI").is_none(), "fim binary missing in CI");
        return;
    }
    let (_guard, dir) = tempdir();
    let state = tempfile::tempdir().expect("state");
    let (code, _, err) = run("check", &dir, &state.path().join("none"));
    assert_eq!(code, 18, "{err}");
    assert!(err.contains("run `fim scan init` first"), "{err}");
    let (code, _, err) = fim(&[
        OsStr::new("scan"),
        OsStr::new("check"),
        OsStr::new("--watch"),
        OsStr::new("relative/path"),
    ]);
    assert_eq!(code, 17, "{err}");
    assert!(err.contains("is not absolute"), "{err}");
}

#[test]
fn special_files_and_awkward_names_round_trip() {
    if !fim_tests::fim_bin().exists() {
        assert!(std::env::var_os("CI").is_none(), "fim binary missing in CI");
        return;
    }
    let (_guard, dir) = tempdir();
    let state = tempfile::tempdir().expect("state");
    let fifo = std::ffi::CString::new(dir.join("fifo").as_os_str().as_bytes()).expect("path");
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let _sock = std::os::unix::net::UnixListener::bind(dir.join("sock")).expect("bind");
    let odd = dir.join(OsStr::from_bytes(b"\xff\xfe"));
    fs::write(&odd, b"odd").expect("write");
    let mut deep = dir.clone();
    while deep.as_os_str().len() < 3700 {
        deep.push("x".repeat(200));
    }
    fs::create_dir_all(&deep).expect("deep");
    let long = deep.join("y".repeat(4000 - deep.as_os_str().len() - 1));
    assert_eq!(long.as_os_str().len(), 4000);
    fs::write(&long, b"long").expect("write");
    let shape = dir.join("shape");
    fs::write(&shape, b"a file for now").expect("write");

    init(&dir, state.path());
    let (code, docs, err) = run("check", &dir, state.path());
    assert_eq!((code, docs.len()), (0, 0), "{err}");

    fs::write(&odd, b"odder").expect("edit");
    fs::write(&long, b"longer").expect("edit");
    fs::set_permissions(dir.join("fifo"), fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::remove_file(dir.join("sock")).expect("rm");
    fs::remove_file(&shape).expect("rm");
    fs::create_dir(&shape).expect("mkdir");
    let (code, docs, err) = run("check", &dir, state.path());
    assert_eq!(code, 2 | 4, "{err}");
    let find = |p: String| {
        docs.iter()
            .find(|v| v["file"]["path"] == p.as_str())
            .unwrap_or_else(|| panic!("no document for {p}: {docs:?}"))
            .clone()
    };
    let v = find(format!("{}/\\xff\\xfe", dir.display()));
    assert_eq!(v["fim"]["after"]["sha256"], sha256_hex(b"odder"));
    let v = find(long.to_str().expect("utf-8").to_owned());
    assert_eq!(v["fim"]["after"]["sha256"], sha256_hex(b"longer"));
    let v = find(format!("{}/fifo", dir.display()));
    assert_eq!(changed(&v), vec!["mode", "ctime"]);
    assert_eq!(v["fim"]["after"]["type"], "fifo");
    let v = find(format!("{}/shape", dir.display()));
    assert_eq!(changed(&v)[0], "type", "{v}");
    assert_eq!(
        (&v["fim"]["before"]["type"], &v["fim"]["after"]["type"]),
        (&Value::from("file"), &Value::from("dir"))
    );
    assert!(v["fim"]["after"]["sha256"].is_null());
    let v = find(format!("{}/sock", dir.display()));
    assert_eq!(v["event"]["action"], "removed");
    assert_eq!(v["fim"]["before"]["type"], "socket");
}
