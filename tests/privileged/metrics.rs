//! The metrics endpoint, read by a real Prometheus: counters follow real changes exactly, a
//! forced kernel loss shows in the loss counter, `/health` and `/ready` and `fim status`
//! tell a failing sink, and the alerting rules pass `promtool`.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use fim_tests::{
    Daemon, fim_bin, is,
    receivers::{Prometheus, free_port, http_get},
    require_privileges, tempdir,
};
use serde_json::Value;

/// Operations beyond what the paused daemon's kernel ring holds (see `volume.rs`).
const BURST: usize = 60_000;

/// The events on stdout named `action`.
fn count(seen: &[Value], action: &str) -> f64 {
    seen.iter()
        .filter(|v| v["event"]["action"] == action)
        .count() as f64
}

/// Waits until `promql` gives the same value three times, 2.5 s apart (nothing moved for
/// longer than the daemon's 5 s loss check), and returns it.
fn settled(p: &Prometheus, promql: &str) -> f64 {
    let deadline = Instant::now() + fim_tests::scaled(Duration::from_secs(90));
    let (mut last, mut same) = (None, 0);
    loop {
        std::thread::sleep(Duration::from_millis(2500));
        let now = p.value(promql);
        same = if now.is_some() && now == last {
            same + 1
        } else {
            0
        };
        if same == 2 {
            return now.unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "{promql} never settled: {now:?}");
        last = now;
    }
}

/// Waits until `/ready` on `port` answers 200.
fn wait_ready(port: u16) {
    let deadline = Instant::now() + fim_tests::scaled(Duration::from_secs(30));
    loop {
        let (code, body) = http_get(port, "/ready").expect("ready");
        if code == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn prometheus_sees_every_change_counted_exactly_and_a_forced_kernel_loss() {
    if !require_privileges() {
        return;
    }
    let (_guard, root) = tempdir();
    let watched = root.join("watched");
    fs::create_dir(&watched).expect("mkdir");
    let f = watched.join("modes");
    fs::write(&f, b"x").expect("seed");
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    // No other test's daemon runs while this one floods the file system.
    let flood = fim_tests::Flood::begin();
    let mut d = flood.start_daemon(&[&watched], None, &["--metrics-address", &address]);
    d.wait_log("baseline built", Duration::from_secs(60));
    wait_ready(port);
    assert_eq!(http_get(port, "/health").expect("health").0, 200);
    let Some(prom) = Prometheus::start(&root, port) else {
        return;
    };
    assert_eq!(
        prom.wait_for("up{job=\"fim\"}", 1.0, Duration::from_secs(30)),
        Some(1.0),
        "prometheus scrapes the daemon:\n{}",
        prom.log()
    );
    // Before any change: the losses are there, at 0, from the first scrape.
    assert_eq!(
        prom.value("sum(fim_sensor_lost_operations_total)"),
        Some(0.0)
    );
    assert_eq!(prom.value("fim_gap_events_total"), Some(0.0));
    let info = prom.query("fim_sensor_info");
    assert_eq!(info.len(), 1, "{info:?}");
    // Back to back: 12 files created, 20 mode changes, 5 files removed.
    let names: Vec<PathBuf> = (0..12).map(|i| watched.join(format!("n{i}"))).collect();
    for n in &names {
        fs::write(n, b"new").expect("create");
    }
    for i in 0..20 {
        let mode = if i % 2 == 0 { 0o600 } else { 0o640 };
        fs::set_permissions(&f, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    for n in &names[..5] {
        fs::remove_file(n).expect("unlink");
    }
    d.wait_for("the last unlink", |v| is(v, "unlink", &names[4]));
    let by = |action: &str| format!("sum(fim_events_total{{action=\"{action}\"}})");
    for (action, want) in [("create", 12.0), ("chmod", 20.0), ("unlink", 5.0)] {
        assert_eq!(
            prom.wait_for(&by(action), want, Duration::from_secs(30)),
            Some(want),
            "{action}"
        );
    }
    // And no more than that: nothing counted twice.
    for (action, want) in [("create", 12.0), ("chmod", 20.0), ("unlink", 5.0)] {
        assert_eq!(settled(&prom, &by(action)), want, "{action}");
    }
    // The 7 files that stay were hashed (a file removed at once may be gone first), each
    // timed, their 3 bytes each read.
    let hashed = settled(&prom, "fim_engine_files_hashed_total");
    assert!(hashed >= 7.0, "{hashed} files hashed");
    let timed = prom
        .value("fim_engine_hash_duration_seconds_count")
        .unwrap_or_default();
    assert!(
        timed >= hashed,
        "{timed} hashes timed, {hashed} files hashed"
    );
    let read = prom
        .value("fim_engine_hashed_bytes_total")
        .unwrap_or_default();
    assert!(read >= 3.0 * 7.0, "{read} bytes hashed");
    assert_eq!(
        prom.value("sum(fim_sensor_lost_operations_total)"),
        Some(0.0)
    );

    // A loss forced in the kernel: the daemon paused while a burst outruns its ring.
    d.pause();
    for i in 0..BURST {
        let mode = if i % 2 == 0 { 0o600 } else { 0o640 };
        fs::set_permissions(&f, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    d.resume();
    d.wait_log("reporting a gap", Duration::from_secs(60));
    let marker = watched.join("end");
    fs::create_dir(&marker).expect("marker");
    d.wait_for("the end marker", |v| is(v, "mkdir", &marker));
    // The loss schedules a repair rescan: what it finds is reported too, before the counts
    // are compared.
    assert_eq!(
        prom.wait_for(
            "sum(fim_engine_scans_total{origin=\"rescan\"}) > 0",
            1.0,
            Duration::from_secs(120)
        ),
        Some(1.0),
        "the repair rescan ran"
    );
    let lost = settled(&prom, "sum(fim_sensor_lost_operations_total)");
    let gaps = settled(&prom, "fim_gap_events_total");
    let events = settled(&prom, "sum(fim_events_total)");
    let chmods = prom.value(&by("chmod")).unwrap_or_default();
    let (seen, log, status) = d.stop();
    assert!(status.success(), "{log}");
    assert!(lost > 0.0, "the burst outran the paused daemon's ring");
    assert_eq!(
        lost,
        fim_tests::lost_in_kernel(&log) as f64,
        "Prometheus has what the daemon counted"
    );
    assert_eq!(gaps, count(&seen, "gap"), "one gap event each");
    assert_eq!(
        chmods,
        count(&seen, "chmod"),
        "every chmod reported, counted once"
    );
    assert_eq!(
        events,
        seen.len() as f64,
        "every event on stdout, counted once"
    );
    assert_eq!(
        chmods + lost,
        (20 + BURST) as f64,
        "every chmod is reported or counted as lost"
    );
}

/// A configuration watching `watched` with a syslog sink to `sink_port`, its metrics on
/// `port`, unhealthy after a second of failure.
fn failing_sink_config(root: &Path, watched: &Path, port: u16, sink_port: u16) -> PathBuf {
    fim_tests::config_with_sinks(
        root,
        watched,
        "",
        &format!(
            "[sinks.siem]\ntype = \"syslog\"\naddress = \"127.0.0.1:{sink_port}\"\n\
             transport = \"tcp\"\n\n\
             [metrics]\naddress = \"127.0.0.1:{port}\"\nsink_failing_after = \"1s\"\n"
        ),
    )
}

/// Runs `fim status --address 127.0.0.1:port`: (exit code, stdout, stderr).
fn status(port: u16) -> (i32, String, String) {
    let out = Command::new(fim_bin())
        .args(["status", "--address", &format!("127.0.0.1:{port}")])
        .output()
        .expect("fim status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn health_and_fim_status_tell_a_sink_failing_too_long_and_its_recovery() {
    if !require_privileges() {
        return;
    }
    let (_guard, root) = tempdir();
    let watched = root.join("watched");
    fs::create_dir(&watched).expect("mkdir");
    let (port, sink_port) = (free_port(), free_port());
    // Nobody listens yet: no daemon.
    let (code, _, err) = status(port);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("no daemon answers"), "{err}");
    let config = failing_sink_config(&root, &watched, port, sink_port);
    let mut d = Daemon::start_with(
        &[],
        None,
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--metrics-address",
            &format!("127.0.0.1:{port}"),
        ],
    );
    d.wait_log("baseline built", Duration::from_secs(60));
    wait_ready(port);
    let (code, out, err) = status(port);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": healthy; ready"), "{out}");
    // The receiver is down: the first delivery fails, and a second later the daemon is
    // unhealthy, saying why.
    fs::write(watched.join("a"), b"x").expect("write");
    let deadline = Instant::now() + fim_tests::scaled(Duration::from_secs(30));
    let (mut health, mut body) = (0, String::new());
    while Instant::now() < deadline {
        (health, body) = http_get(port, "/health").expect("health");
        if health == 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(health, 503, "{body}");
    assert!(body.contains("sink siem has failed to deliver"), "{body}");
    let (code, out, _) = status(port);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unhealthy: sink siem has failed"), "{out}");
    assert!(out.contains("sink siem: 0 delivered"), "{out}");
    assert!(out.contains("FAILING for"), "{out}");
    let (_, metrics) = http_get(port, "/metrics").expect("metrics");
    assert!(
        metrics.contains("\nfim_sink_failing{sink=\"siem\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nfim_healthy 0\n"), "{metrics}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("fim_sink_retries_total{sink=\"siem\"} ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // The receiver comes up: the sink delivers, and the daemon is healthy again.
    let receiver = std::net::TcpListener::bind(("127.0.0.1", sink_port)).expect("receiver");
    std::thread::spawn(move || {
        for conn in receiver.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut &conn, &mut std::io::sink());
            });
        }
    });
    let deadline = Instant::now() + fim_tests::scaled(Duration::from_secs(60));
    loop {
        let (code, out, _) = status(port);
        if code == 0 {
            // Every event reported, delivered (how many a new file makes is the sensor's).
            let events = out
                .lines()
                .find_map(|l| l.strip_prefix("events: "))
                .and_then(|l| l.split(' ').next())
                .unwrap_or_else(|| panic!("{out}"));
            assert!(
                out.contains(&format!("sink siem: {events} delivered")),
                "{out}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "still unhealthy: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let (_, log, status) = d.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn a_taken_metrics_port_stops_the_daemon_with_a_clear_error() {
    if !require_privileges() {
        return;
    }
    let (_guard, watched) = tempdir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let (_state_guard, state) = tempdir();
    let mut child = fim_tests::spawn(
        Command::new(fim_bin())
            .args(["run", "--metrics-address", &address, "--watch"])
            .arg(&watched)
            .arg("--state-dir")
            .arg(&state)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    )
    .expect("fim run");
    // It must stop at once; a daemon that starts anyway is stopped, and fails the test.
    let deadline = Instant::now() + fim_tests::scaled(Duration::from_secs(30));
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("fim run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("the metrics endpoint cannot listen on {address}")),
        "{err}"
    );
}

#[test]
fn promtool_accepts_the_alerting_rules() {
    if !require_privileges() {
        return;
    }
    let promtool = Path::new("/usr/bin/promtool");
    if !promtool.exists() {
        let why = "promtool is not installed (`cargo xtask test` installs prometheus)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipping: {why}");
        return;
    }
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/fim-alerts.yml");
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}
