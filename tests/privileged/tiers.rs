//! Choosing the eBPF tier at run time: `--sensor ebpf` takes the best tier the kernel allows
//! (LSM, then fentry, then tracepoints) and logs it; `--sensor auto` uses eBPF alone where a
//! kernel-object tier loads and fanotify plus the eBPF process table elsewhere; forcing a tier
//! the kernel refuses is a clear error.
//!
//! What "best" is on the running kernel comes from `FIM_TEST_BEST_TIER` (the kernel matrix
//! sets `lsm` in its guests), by default `tracepoint` (this project's hosts refuse LSM and
//! fentry programs).

use std::{fs, process::Command};

use fim_tests::{Daemon, fim_bin, is, require_privileges, tempdir};

fn best() -> String {
    std::env::var("FIM_TEST_BEST_TIER").unwrap_or_else(|_| "tracepoint".to_owned())
}

fn describe(tier: &str) -> &'static str {
    match tier {
        "lsm" => "eBPF LSM tier",
        "fentry" => "eBPF fentry tier",
        _ => "eBPF tracepoint tier",
    }
}

/// Starts fim with `sensor`, makes a directory, and returns the sensor that reported it.
fn sensor_reporting(sensor: &str) -> String {
    let (_guard, dir) = tempdir();
    let mut d = Daemon::start_with(&[&dir], None, &["--sensor", sensor]);
    let sub = dir.join("made");
    fs::create_dir(&sub).expect("mkdir");
    let v = d.wait_for("mkdir", |v| is(v, "mkdir", &sub));
    v["fim"]["sensor"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn ebpf_takes_the_best_tier_the_kernel_allows_and_logs_it() {
    if !require_privileges() {
        return;
    }
    let best = best();
    let (_guard, dir) = tempdir();
    let mut d = Daemon::start_with(&[&dir], None, &["--sensor", "ebpf"]);
    let line = d.wait_log("attached", std::time::Duration::from_secs(10));
    assert!(
        line.contains(&format!("sensor: {}", describe(&best))),
        "the chosen tier is logged: {line}"
    );
    drop(d);
    assert_eq!(sensor_reporting("ebpf"), format!("ebpf-{best}"));
}

#[test]
fn auto_uses_kernel_objects_where_allowed_and_witnessed_tracepoints_elsewhere() {
    if !require_privileges() {
        return;
    }
    // Where only tracepoints are allowed, the tracepoint tier reports (fanotify witnesses
    // it, and reports only what it alone saw).
    let best = best();
    if best == "tracepoint" {
        let (_guard, dir) = tempdir();
        let mut d = Daemon::start_with(&[&dir], None, &["--sensor", "auto"]);
        d.wait_log(
            "the eBPF tracepoint tier for file events, with fanotify as its witness",
            std::time::Duration::from_secs(30),
        );
    }
    assert_eq!(sensor_reporting("auto"), format!("ebpf-{best}"));
}

#[test]
fn each_tier_is_forced_or_refused_with_a_clear_error() {
    if !require_privileges() {
        return;
    }
    let best = best();
    let rank = |t: &str| ["lsm", "fentry", "tracepoint"].iter().position(|x| *x == t);
    let (_guard, dir) = tempdir();
    for tier in ["lsm", "fentry", "tracepoint"] {
        if rank(tier) >= rank(&best) {
            // Allowed here: forcing it runs exactly that tier.
            assert_eq!(
                sensor_reporting(tier),
                format!("ebpf-{tier}"),
                "--sensor {tier}"
            );
            continue;
        }
        let (_state_guard, state) = tempdir();
        let out = fim_tests::spawn(
            Command::new(fim_bin())
                .args([
                    "run",
                    "--metrics-address",
                    "off",
                    "--sensor",
                    tier,
                    "--watch",
                ])
                .arg(&dir)
                .arg("--state-dir")
                .arg(&state)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped()),
        )
        .and_then(std::process::Child::wait_with_output)
        .expect("run fim");
        assert_eq!(
            out.status.code(),
            Some(1),
            "--sensor {tier} on a kernel refusing it"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        let expected = format!("fim: error: the kernel refused the {}", describe(tier));
        assert!(
            err.lines().any(|l| l.starts_with(&expected)),
            "clear error for --sensor {tier}: {err}"
        );
        assert!(out.stdout.is_empty(), "no events from a refused tier");
    }
}
