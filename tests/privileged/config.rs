//! The configuration file, through the real binary: `fim config check` and `fim config
//! default`, `fim run --config`, and a watch set larger than the kernel's prefix table
//! (5,000 directories), in every sensor.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use fim_tests::{Daemon, fim_bin, is, require_privileges, tempdir};
use serde_json::Value;

macro_rules! per_sensor {
    ($($name:ident),* $(,)?) => {
        mod sensor_fanotify {
            $( #[test] fn $name() { super::$name("fanotify") } )*
        }
        mod sensor_auto {
            $( #[test] fn $name() { super::$name("auto") } )*
        }
        mod sensor_ebpf_tier {
            $( #[test] fn $name() { super::$name(&fim_tests::tier()) } )*
        }
    };
}

per_sensor!(
    the_configuration_file_decides_what_is_watched,
    events_carry_their_rules_and_rules_choose_their_operations,
    five_thousand_watched_directories_work_and_only_they_are_reported,
);

/// Writes `text` as `fim.toml` in `dir`.
fn config_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("fim.toml");
    fs::write(&path, text).expect("writing the configuration");
    path
}

/// A TOML array of the paths.
fn toml_paths(paths: &[PathBuf]) -> String {
    let quoted: Vec<String> = paths
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    format!("[{}]", quoted.join(", "))
}

fn start(sensor: &str, config: &Path) -> Daemon {
    let config = config.to_str().expect("utf-8");
    let mut d = Daemon::start_with(&[], None, &["--config", config, "--sensor", sensor]);
    d.wait_log("baseline built", Duration::from_secs(120));
    d
}

/// Creates `end` in `dir`, waits for its event, stops the daemon and returns every event
/// but the marker's.
fn stop_after_marker(mut d: Daemon, dir: &Path) -> Vec<Value> {
    let marker = dir.join("end");
    fs::write(&marker, b"").expect("marker");
    d.wait_for("the end marker", |v| is(v, "close_write", &marker));
    let (seen, _, status) = d.stop();
    assert!(status.success(), "fim exited with {status}");
    seen.into_iter()
        .filter(|v| v["file"]["path"] != marker.to_str().unwrap_or_default())
        .collect()
}

/// (action, path) of each event.
fn summary(seen: &[Value]) -> Vec<(String, String)> {
    seen.iter()
        .map(|v| {
            (
                v["event"]["action"].as_str().unwrap_or_default().to_owned(),
                v["file"]["path"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn the_configuration_file_decides_what_is_watched(sensor: &str) {
    if !require_privileges() {
        return;
    }
    let (_guard, root) = tempdir();
    let (watched, other, conf_dir) = (root.join("watched"), root.join("other"), root.join("conf"));
    for d in [&watched, &other, &conf_dir] {
        fs::create_dir(d).expect("mkdir");
    }
    let config = config_file(
        &conf_dir,
        &format!(
            "[daemon]\nrescan_interval = \"0\"\n\n[[rule]]\nname = \"test\"\npaths = {}\n",
            toml_paths(std::slice::from_ref(&watched))
        ),
    );
    let d = start(sensor, &config);
    let (inside, outside) = (watched.join("a"), other.join("a"));
    fs::write(&outside, b"x").expect("write outside");
    fs::write(&inside, b"x").expect("write inside");
    let seen = stop_after_marker(d, &watched);
    let p = inside.display().to_string();
    assert_eq!(
        summary(&seen),
        vec![
            ("create".to_owned(), p.clone()),
            ("write".to_owned(), p.clone()),
            ("close_write".to_owned(), p),
        ],
        "only the configured path is watched"
    );
}

fn events_carry_their_rules_and_rules_choose_their_operations(sensor: &str) {
    if !require_privileges() {
        return;
    }
    let (_guard, root) = tempdir();
    let (keys, logs, conf_dir) = (root.join("keys"), root.join("log"), root.join("conf"));
    for d in [&keys, &logs, &conf_dir] {
        fs::create_dir(d).expect("mkdir");
    }
    let syslog = logs.join("syslog");
    fs::write(&syslog, b"boot\n").expect("seed the log");
    let config = config_file(
        &conf_dir,
        &format!(
            "[daemon]\nrescan_interval = \"0\"\n\n\
             [[rule]]\nname = \"keys\"\nid = \"FIM-KEYS\"\npaths = {}\n\
             exclude = [\"*.swp\"]\nseverity = \"high\"\ntechniques = [\"T1098.004\"]\n\
             tags = [\"PCI-DSS 11.5\"]\n\n\
             [[rule]]\nname = \"log-tampering\"\npaths = {}\n\
             operations = [\"unlink\", \"rename\", \"truncate\", \"metadata\"]\n\
             techniques = [\"T1070.002\"]\n",
            toml_paths(std::slice::from_ref(&keys)),
            toml_paths(std::slice::from_ref(&logs)),
        ),
    );
    let d = start(sensor, &config);
    let (key, swap) = (
        keys.join("authorized_keys"),
        keys.join(".authorized_keys.swp"),
    );
    // Back to back: a key added, its editor's swap file, an append to the log (not what
    // the log rule reports), then the log's mode changed and the log removed.
    fs::write(&swap, b"swap").expect("swap file");
    fs::write(&key, b"ssh-ed25519 AAAA attacker").expect("key");
    {
        use std::io::Write as _;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&syslog)
            .expect("open the log");
        f.write_all(b"more\n").expect("append");
    }
    fs::set_permissions(&syslog, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    fs::remove_file(&syslog).expect("unlink");
    let seen = stop_after_marker(d, &keys);
    let (k, l) = (key.display().to_string(), syslog.display().to_string());
    let got: Vec<(String, String, Value, Value, Value, Value)> = seen
        .iter()
        .map(|v| {
            let action = match v["event"]["action"].as_str().unwrap_or_default() {
                // fanotify cannot tell a chmod from other attribute changes; the engine
                // names it from before/after values, which a file removed right after no
                // longer has.
                "attrib" if sensor == "fanotify" => "chmod",
                a => a,
            };
            (
                action.to_owned(),
                v["file"]["path"].as_str().unwrap_or_default().to_owned(),
                v["rule"].clone(),
                v["event"]["severity"].clone(),
                v["threat"]["technique"]["id"].clone(),
                v["tags"].clone(),
            )
        })
        .collect();
    let keys_rule = || {
        (
            serde_json::json!({"name": "keys", "id": "FIM-KEYS"}),
            serde_json::json!(73),
            serde_json::json!(["T1098.004"]),
            serde_json::json!(["PCI-DSS 11.5"]),
        )
    };
    let logs_rule = || {
        (
            serde_json::json!({"name": "log-tampering", "id": "log-tampering"}),
            serde_json::json!(47),
            serde_json::json!(["T1070.002"]),
            Value::Null,
        )
    };
    let row = |action: &str, path: &str, (r, s, t, g): (Value, Value, Value, Value)| {
        (action.to_owned(), path.to_owned(), r, s, t, g)
    };
    let want = vec![
        row("create", &k, keys_rule()),
        row("write", &k, keys_rule()),
        row("close_write", &k, keys_rule()),
        row("chmod", &l, logs_rule()),
        row("unlink", &l, logs_rule()),
    ];
    assert_eq!(
        got,
        want,
        "events:\n{}",
        seen.iter().map(|v| format!("  {v}\n")).collect::<String>()
    );
}

/// Directories watched, more than the kernel's prefix table holds (4,096).
const MANY: usize = 5_000;

fn five_thousand_watched_directories_work_and_only_they_are_reported(sensor: &str) {
    if !require_privileges() {
        return;
    }
    let (_guard, root) = tempdir();
    let dirs: Vec<PathBuf> = (0..MANY).map(|i| root.join(format!("d{i:04}"))).collect();
    for d in &dirs {
        fs::create_dir(d).expect("mkdir");
    }
    // A sibling the kernel's coarser prefix passes, which userspace must drop.
    let unwatched = root.join("unwatched");
    fs::create_dir(&unwatched).expect("mkdir");
    let conf_dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(
        conf_dir.path(),
        &format!(
            "[daemon]\nrescan_interval = \"0\"\n\n[[rule]]\nname = \"many\"\npaths = {}\n",
            toml_paths(&dirs)
        ),
    );
    let d = start(sensor, &config);
    let (first, last, outside) = (
        dirs[0].join("f"),
        dirs[MANY - 1].join("f"),
        unwatched.join("f"),
    );
    fs::write(&first, b"1").expect("write first");
    fs::write(&outside, b"1").expect("write outside");
    fs::write(&last, b"1").expect("write last");
    let seen = stop_after_marker(d, &dirs[MANY / 2]);
    let [f, l] = [&first, &last].map(|p| p.display().to_string());
    assert_eq!(
        summary(&seen),
        vec![
            ("create".to_owned(), f.clone()),
            ("write".to_owned(), f.clone()),
            ("close_write".to_owned(), f),
            ("create".to_owned(), l.clone()),
            ("write".to_owned(), l.clone()),
            ("close_write".to_owned(), l),
        ],
        "the first and the last of {MANY} directories, and nothing from the sibling"
    );
}

/// Runs `fim` with `args`; (exit code, stdout, stderr).
fn fim(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(fim_bin())
        .args(args)
        .output()
        .expect("running fim");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_lists_every_problem_with_its_line_and_exits_2() {
    if !require_privileges() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(
        dir.path(),
        "[daemon]\nsensor = \"kprobe\"\nhash_quiet = \"soon\"\n\n[[rule]]\nname = \"x\"\n\
         paths = [\"relative/path\", \"/etc/*/x\"]\ncolour = \"red\"\n",
    );
    let config = config.to_str().expect("utf-8");
    let (code, out, err) = fim(&["config", "check", config]);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    for needle in [
        "5 problem(s)",
        "line 2: `daemon.sensor`: `kprobe` is not a sensor",
        "line 3: `daemon.hash_quiet`: `soon` is not a duration",
        "line 7: `rule[1].paths[1]`: watch path `relative/path` is not absolute",
        "line 7: `rule[1].paths[2]`: watch glob `/etc/*/x`: only the last path component",
        "line 8: `rule[1].colour`: unknown key",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    // The daemon refuses the same file the same way, before starting anything.
    let (code, _, run_err) = fim(&["run", "--config", config]);
    assert_eq!(code, 2, "{run_err}");
    assert!(run_err.contains("line 2: `daemon.sensor`"), "{run_err}");
}

#[test]
fn the_printed_default_configuration_checks_valid_and_watches_the_defaults() {
    if !require_privileges() {
        return;
    }
    let (code, default, err) = fim(&["config", "default"]);
    assert_eq!(code, 0, "{err}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config_file(dir.path(), &default);
    let (code, out, err) = fim(&["config", "check", path.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": valid"), "{out}");
    assert!(out.contains("rule `defender-for-cloud-linux`:"), "{out}");
    for default_path in ["/usr/bin", "/etc/*.conf", "/boot", "/etc/crontab"] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{default_path}: "))),
            "{default_path} missing from:\n{out}"
        );
    }
}

#[test]
fn an_explicit_watch_path_that_cannot_be_resolved_is_not_called_missing() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let looped = dir.join("loop");
    std::os::unix::fs::symlink(&looped, &looped).expect("a symlink to itself");
    let (code, _, err) = fim(&["scan", "check", "--watch", looped.to_str().expect("utf-8")]);
    assert_eq!(code, 17, "{err}");
    assert!(
        err.contains("cannot be read: Too many levels of symbolic links"),
        "{err}"
    );
    assert!(!err.contains("does not exist"), "{err}");
}
