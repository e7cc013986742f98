//! Sinks through the real daemon: every event reaches every sink, each once, in order.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use fim_tests::{Daemon, is, require_privileges, schema_check, tempdir};
use serde_json::Value;

/// The `event.sequence` of every line of `path` (none when it does not exist), each line
/// checked against the event schema.
fn sequences(path: &Path) -> Vec<u64> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: bad JSON line {l:?}: {e}", path.display()));
            schema_check(&v).unwrap_or_else(|invalid| panic!("{invalid}"));
            v["event"]["sequence"].as_u64().expect("event.sequence")
        })
        .collect()
}

#[test]
fn a_file_sink_gets_every_event_once_across_rotation_and_a_logrotate_move() {
    if !require_privileges() {
        return;
    }
    let (_guard, root) = tempdir();
    let (watched, logs) = (root.join("watched"), root.join("logs"));
    fs::create_dir(&watched).expect("mkdir");
    let archive = logs.join("events.json");
    let config = root.join("fim.toml");
    fs::write(
        &config,
        format!(
            "[daemon]\nrescan_interval = \"0\"\n\n[[rule]]\nname = \"w\"\npaths = [{:?}]\n\n\
             [sinks.console]\ntype = \"stdout\"\n\n\
             [sinks.archive]\ntype = \"file\"\npath = {:?}\nmax_size = \"16 KiB\"\nkeep = 50\n",
            watched.display().to_string(),
            archive.display().to_string()
        ),
    )
    .expect("configuration");
    let config_arg = config.to_str().expect("utf-8");
    let mut d = Daemon::start_with(&[], None, &["--config", config_arg]);
    d.wait_log("baseline built", Duration::from_secs(60));
    let write = |from: usize, to: usize| {
        for i in from..to {
            fs::write(watched.join(format!("f{i}")), b"x").expect("write");
        }
    };
    // Back to back, enough to rotate several times.
    write(0, 40);
    let last = watched.join("f39");
    d.wait_for("the last write before the move", |v| {
        is(v, "close_write", &last)
    });
    // logrotate: the file moves away, then SIGHUP.
    let moved = logs.join("events.json.moved");
    fs::rename(&archive, &moved).expect("move the file away");
    unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) };
    d.wait_log("sink archive: reopened", Duration::from_secs(30));
    write(40, 80);
    let last = watched.join("f79");
    d.wait_for("the last write", |v| is(v, "close_write", &last));
    let (seen, log, status) = d.stop();
    assert!(status.success(), "fim exited with {status}: {log}");
    let stdout: Vec<u64> = seen
        .iter()
        .map(|v| v["event"]["sequence"].as_u64().expect("sequence"))
        .collect();
    // Every file the sink wrote: the rotated ones, the one moved away, the current one.
    let mut files: Vec<PathBuf> = fs::read_dir(&logs)
        .expect("logs")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut archived: Vec<u64> = files.iter().flat_map(|f| sequences(f)).collect();
    let rotated = files
        .iter()
        .filter(|f| {
            f.extension()
                .is_some_and(|e| e.to_string_lossy().parse::<u32>().is_ok())
        })
        .count();
    assert!(rotated >= 2, "16 KiB holds fewer than 80 events: {files:?}");
    archived.sort_unstable();
    assert_eq!(
        archived, stdout,
        "the file sink has every event stdout has, each once"
    );
    assert_eq!(
        stdout,
        (1..=stdout.len() as u64).collect::<Vec<_>>(),
        "numbered without a hole"
    );
    assert!(
        stdout.len() >= 240,
        "3 events for each of 80 files: {}",
        stdout.len()
    );
}

#[test]
fn a_sink_that_cannot_start_stops_the_daemon_with_a_clear_error() {
    if !require_privileges() {
        return;
    }
    let (_guard, root) = tempdir();
    fs::create_dir(root.join("watched")).expect("mkdir");
    // A directory where the file should be.
    let blocked = root.join("blocked");
    fs::create_dir(&blocked).expect("mkdir");
    let config = root.join("fim.toml");
    fs::write(
        &config,
        format!(
            "[[rule]]\nname = \"w\"\npaths = [{:?}]\n\n[sinks.archive]\ntype = \"file\"\npath = {:?}\n",
            root.join("watched").display().to_string(),
            blocked.display().to_string()
        ),
    )
    .expect("configuration");
    let state = root.join("state");
    let (code, _, err) = fim_tests::fim(&[
        "run".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("sink archive: opening") && err.contains("blocked"),
        "{err}"
    );
}
