//! Volume: every operation in a burst is reported or counted as lost, and every loss is
//! reported as a gap event.

use std::{fs, os::unix::fs::PermissionsExt, time::Duration};

use fim_tests::{is, require_privileges, tempdir};

/// More operations than the kernel's ring buffer holds while the daemon is paused (each
/// record is a few hundred bytes; the ring holds 4 MiB): some are lost for sure, and every
/// one must be counted, exactly, in operations (an announced operation's outcome record
/// lost is one operation; a lost announcement whose outcome never follows is one too).
const BURST: usize = 60_000;

#[test]
fn a_burst_beyond_the_ring_is_reported_or_counted_lost_exactly() {
    if !require_privileges() {
        return;
    }
    let (_guard, dir) = tempdir();
    let f = dir.join("burst");
    fs::write(&f, b"x").expect("seed");
    // No other test's daemon runs while this one floods the file system.
    let flood = fim_tests::Flood::begin();
    let d = flood.start_daemon(&[&dir], None, &[]);
    d.pause();
    for i in 0..BURST {
        let mode = if i % 2 == 0 { 0o600 } else { 0o640 };
        fs::set_permissions(&f, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    d.resume();
    let mut d = d;
    // The loss is reported while running, as a gap event, within the loss check's period.
    d.wait_log("reporting a gap", Duration::from_secs(60));
    assert!(
        d.wait_for_within(fim_tests::scaled(Duration::from_secs(60)), |v| {
            v["event"]["action"] == "gap"
        })
        .is_some(),
        "the daemon logged a gap but reported no gap event:\n{}",
        d.dump()
    );
    // An end marker made while the ring is still full would be lost too: one more each
    // second until one is reported (after every chmod before it).
    let mut markers = 0u64;
    let seen_end = (0..120).any(|i| {
        markers += 1;
        let end = dir.join(format!("end-{i}"));
        fs::create_dir(&end).expect("end marker");
        d.wait_for_within(Duration::from_secs(1), |v| {
            v["event"]["action"] == "mkdir"
                && v["file"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("end-"))
        })
        .is_some()
    });
    assert!(
        seen_end,
        "no end marker reported in two minutes:\n{}",
        d.dump()
    );
    let (seen, log, status) = d.stop();
    assert!(status.success());
    let reported = seen.iter().filter(|v| is(v, "chmod", &f)).count() as u64;
    let lost = fim_tests::lost_in_kernel(&log);
    // Every loss is an event too, counted in operations, with its window and roots.
    let gaps: Vec<&serde_json::Value> = seen
        .iter()
        .filter(|v| v["event"]["action"] == "gap")
        .collect();
    let in_gaps: u64 = gaps
        .iter()
        .map(|v| v["fim"]["gap"]["operations"].as_u64().expect("operations"))
        .sum();
    for g in &gaps {
        assert_eq!(g["fim"]["gap"]["unknown_more"], false, "{g}");
        assert!(
            g["fim"]["gap"]["start"].as_str() <= g["fim"]["gap"]["end"].as_str(),
            "{g}"
        );
        assert_eq!(
            g["fim"]["gap"]["roots"][0],
            dir.to_str().expect("utf-8"),
            "{g}"
        );
    }
    eprintln!(
        "burst: {reported} reported, {lost} lost, {} gap events",
        gaps.len()
    );
    assert_eq!(
        in_gaps, lost,
        "the gap events add up to what the daemon counted"
    );
    assert!(
        reported <= BURST as u64,
        "more events than operations: {reported}"
    );
    // The markers made while the ring was still full are lost and counted too.
    let markers_reported = seen
        .iter()
        .filter(|v| {
            v["event"]["action"] == "mkdir"
                && v["file"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("end-"))
        })
        .count() as u64;
    assert_eq!(
        reported + lost,
        BURST as u64 + (markers - markers_reported),
        "every chmod (and end marker) is reported or counted as lost, once"
    );
    assert!(lost > 0, "the burst outran the paused daemon's ring");
    // Modes alternate, and arrive in order.
    let modes: Vec<_> = seen
        .iter()
        .filter(|v| is(v, "chmod", &f))
        .map(|v| v["fim"]["requested"]["mode"].clone())
        .collect();
    if lost == 0 {
        assert!(
            modes
                .iter()
                .enumerate()
                .all(|(i, m)| m == if i % 2 == 0 { "0600" } else { "0640" })
        );
    }
}
