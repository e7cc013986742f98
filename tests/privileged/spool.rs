//! Nothing lost on the way out: a daemon killed with SIGKILL in the middle of a write storm,
//! and a receiver down for thousands of events across a daemon restart.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use fim_tests::{
    Daemon, config_with_sinks, require_privileges, scaled, schema_check, sha256_hex, tempdir,
};
use serde_json::Value;

/// Every complete JSON line of `path` (a file sink's output), checked against the schema.
fn events_in(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            schema_check(&v).unwrap_or_else(|invalid| panic!("{invalid}"));
            v
        })
        .collect()
}

/// How many complete lines `path` holds (cheap: while the daemon writes).
fn lines_in(path: &Path) -> usize {
    fs::read(path).map_or(0, |t| t.iter().filter(|b| **b == b'\n').count())
}

/// A number in 0..n that differs from run to run.
fn random_below(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    u64::from(nanos.wrapping_mul(2_654_435_761)) % n
}

fn start(config: &Path, state: &Path) -> Daemon {
    let config = config.to_str().expect("utf-8");
    Daemon::start_with(&[], Some(state), &["--config", config])
}

fn content(i: usize) -> Vec<u8> {
    format!("file {i}\n").repeat(1 + i % 7).into_bytes()
}

#[test]
fn a_daemon_killed_during_a_write_storm_reports_every_change_once() {
    if !require_privileges() {
        return;
    }
    let (_guard, root) = tempdir();
    let (watched, state) = (root.join("watched"), root.join("state"));
    fs::create_dir(&watched).expect("mkdir");
    let events = root.join("events.json");
    let config = config_with_sinks(
        &root,
        &watched,
        "",
        &format!(
            "[sinks.archive]\ntype = \"file\"\npath = {:?}\n",
            events.display().to_string()
        ),
    );
    let mut d = start(&config, &state);
    d.wait_log("baseline built", Duration::from_secs(60));

    // The storm: files made back to back, each with its own content, by another thread,
    // until the last kill is behind it.
    const MAX_FILES: usize = 6_000;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (watched, stop) = (watched.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while (!stop.load(Ordering::Acquire) || i < 1000) && i < MAX_FILES {
                fs::write(watched.join(format!("f{i}")), content(i)).expect("write");
                i += 1;
                // Short pauses keep the storm going through the restarts.
                if i % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            i
        })
    };
    // Three kills at random points, each followed by a restart on the same state.
    let mut kills = Vec::new();
    for _ in 0..3 {
        let want = lines_in(&events) + 50 + random_below(1500) as usize;
        let deadline = Instant::now() + scaled(Duration::from_secs(60));
        while lines_in(&events) < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(random_below(20)));
        }
        let at = lines_in(&events);
        unsafe { libc::kill(d.pid() as i32, libc::SIGKILL) };
        drop(d);
        kills.push(at);
        // Changes go on while no daemon runs; the next start finds them.
        std::thread::sleep(Duration::from_millis(random_below(300)));
        d = start(&config, &state);
    }
    stop.store(true, Ordering::Release);
    let files = writer.join().expect("writer");

    // Every file reported (in real time or at start), then the daemon stops cleanly.
    let deadline = Instant::now() + scaled(Duration::from_secs(120));
    let names: Vec<PathBuf> = (0..files).map(|i| watched.join(format!("f{i}"))).collect();
    let by_name = |all: &[Value]| {
        let mut by: HashMap<String, Vec<Value>> = HashMap::new();
        for v in all {
            if let Some(p) = v["file"]["path"].as_str() {
                by.entry(p.to_owned()).or_default().push(v.clone());
            }
        }
        by
    };
    let hash_of = |v: &Value| v["file"]["hash"]["sha256"].as_str().map(str::to_owned);
    loop {
        let by = by_name(&events_in(&events));
        let all_current = names.iter().enumerate().all(|(i, n)| {
            let want = sha256_hex(&content(i));
            by.get(n.to_str().expect("utf-8"))
                .is_some_and(|evs| evs.iter().any(|v| hash_of(v).as_deref() == Some(&*want)))
        });
        if all_current || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let (_, log, status) = d.stop();
    assert!(status.success(), "fim exited with {status}: {log}");

    let all = events_in(&events);
    let by = by_name(&all);
    let mut resent = 0;
    let mut ids: HashMap<String, Value> = HashMap::new();
    for v in &all {
        let id = v["event"]["id"].as_str().expect("event.id").to_owned();
        if let Some(earlier) = ids.insert(id.clone(), v.clone()) {
            // At least once: a re-delivered event is the same event, id and all.
            assert_eq!(
                &earlier, v,
                "event {id} delivered twice with different contents"
            );
            resent += 1;
        }
    }
    let mut problems = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let name = name.to_str().expect("utf-8");
        let want = sha256_hex(&content(i));
        let evs = by.get(name).map(Vec::as_slice).unwrap_or_default();
        let distinct = |pred: &dyn Fn(&Value) -> bool| {
            evs.iter()
                .filter(|v| pred(v))
                .map(|v| v["event"]["id"].as_str().unwrap_or_default())
                .collect::<HashSet<_>>()
                .len()
        };
        // The file appeared once: one `create` (real time) or one `added` (found at start).
        let appeared = distinct(&|v| matches!(fim_tests::action(v), "create" | "added"));
        // Its content was reported once: one event carrying its digest.
        let content_told = distinct(&|v| hash_of(v).as_deref() == Some(&*want));
        if appeared != 1 || content_told != 1 {
            problems.push(format!(
                "{name}: appeared {appeared} times, its content told {content_told} times: {:?}",
                evs.iter()
                    .map(|v| (
                        fim_tests::action(v).to_owned(),
                        v["event"]["sequence"].clone()
                    ))
                    .collect::<Vec<_>>()
            ));
        }
    }
    // Sequences go on across restarts: never reused for another event.
    let mut by_sequence: BTreeMap<u64, &str> = BTreeMap::new();
    for v in &all {
        let seq = v["event"]["sequence"].as_u64().expect("event.sequence");
        let id = v["event"]["id"].as_str().expect("event.id");
        if let Some(other) = by_sequence.insert(seq, id) {
            assert_eq!(other, id, "sequence {seq} names two events");
        }
    }
    eprintln!(
        "{files} files; killed after {kills:?} events; {} events, {resent} delivered again after a kill",
        all.len()
    );
    assert!(
        problems.is_empty(),
        "{} of {files} files not reported exactly once (kills after {kills:?} events):\n{}",
        problems.len(),
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_receiver_down_for_ten_thousand_events_gets_every_one_in_order() {
    receiver_down_for_ten_thousand_events(false);
}

#[test]
fn a_receiver_down_for_ten_thousand_events_and_a_daemon_restart_gets_every_one_in_order() {
    receiver_down_for_ten_thousand_events(true);
}

/// rsyslog stops after 400 files (about 1,200 events) and starts again after 3,400 (over
/// 10,000 events); with `restart`, the daemon stops and starts again in the middle of the
/// outage. Every event stdout got must reach rsyslog, first arrivals in sequence order.
fn receiver_down_for_ten_thousand_events(restart: bool) {
    if !require_privileges() {
        return;
    }
    let (_guard, root) = tempdir();
    let pki = fim_tests::receivers::Pki::make(&root.join("pki"));
    let Some(mut rsyslog) = fim_tests::receivers::Rsyslog::start(&root.join("rsyslog"), &pki)
    else {
        return;
    };
    let (watched, state) = (root.join("watched"), root.join("state"));
    fs::create_dir(&watched).expect("mkdir");
    let config = config_with_sinks(
        &root,
        &watched,
        "",
        &format!(
            "[sinks.console]\ntype = \"stdout\"\n\n\
             [sinks.siem]\ntype = \"syslog\"\naddress = \"127.0.0.1:{}\"\ntransport = \"tcp\"\n",
            rsyslog.tcp
        ),
    );
    let write = |from: usize, to: usize| {
        for i in from..to {
            fs::write(watched.join(format!("f{i}")), b"x").expect("write");
        }
    };
    let last_written = |d: &mut Daemon, i: usize| {
        let last = watched.join(format!("f{i}"));
        d.wait_for("the last write", |v| fim_tests::is(v, "close_write", &last));
    };
    let mut d = start(&config, &state);
    d.wait_log("baseline built", Duration::from_secs(60));
    // About three events a file: 3,400 files make over 10,000 events.
    write(0, 400);
    last_written(&mut d, 399);
    rsyslog.stop();
    write(400, 1600);
    last_written(&mut d, 1599);
    // The daemon stops in the middle of the outage; what the receiver did not take stays
    // in the spool.
    let (first, mut d) = if restart {
        let (first, log, status) = d.stop();
        assert!(status.success(), "fim exited with {status}: {log}");
        assert!(log.contains("in its spool"), "{log}");
        (first, start(&config, &state))
    } else {
        (Vec::new(), d)
    };
    write(1600, 3400);
    last_written(&mut d, 3399);
    rsyslog.resume();
    let (second, log, status) = {
        let mut stdout_ids: Vec<String> = first
            .iter()
            .chain(&d.seen)
            .map(|v| v["event"]["id"].as_str().expect("id").to_owned())
            .collect();
        stdout_ids.dedup();
        // Wait until rsyslog has every one, then stop.
        let deadline = Instant::now() + scaled(Duration::from_secs(120));
        loop {
            let got: HashSet<String> = received(&rsyslog.plain_log)
                .into_iter()
                .map(|(_, id)| id)
                .collect();
            if stdout_ids.iter().all(|id| got.contains(id)) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        d.stop()
    };
    assert!(status.success(), "fim exited with {status}: {log}");
    let reported: Vec<(u64, String)> = first
        .iter()
        .chain(&second)
        .map(|v| {
            (
                v["event"]["sequence"].as_u64().expect("sequence"),
                v["event"]["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect();
    assert!(
        reported.len() >= 10_000,
        "a stream of 10,000 events: {}",
        reported.len()
    );
    // What rsyslog holds: every event, first arrivals in sequence order.
    let arrived = received(&rsyslog.plain_log);
    let mut first_arrivals = Vec::new();
    let mut seen = HashSet::new();
    for (seq, id) in &arrived {
        if seen.insert(id.clone()) {
            first_arrivals.push((*seq, id.clone()));
        }
    }
    let missing: Vec<&(u64, String)> = reported
        .iter()
        .filter(|(_, id)| !seen.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} events never reached rsyslog, first: {:?}\n{}",
        missing.len(),
        reported.len(),
        missing.first(),
        rsyslog.log()
    );
    assert!(
        first_arrivals.windows(2).all(|w| w[0].0 < w[1].0),
        "events arrived out of order"
    );
    assert_eq!(
        first_arrivals, reported,
        "the same events as stdout, in order"
    );
    eprintln!(
        "{} events, {} arrivals at rsyslog ({} sent again after a connection closed)",
        reported.len(),
        arrived.len(),
        arrived.len() - first_arrivals.len()
    );
}

/// Each message rsyslog wrote to `log`: its event's sequence and id.
fn received(log: &Path) -> Vec<(u64, String)> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let json = &line[line.find('{')?..];
            let v: Value = serde_json::from_str(json).ok()?;
            Some((
                v["event"]["sequence"].as_u64()?,
                v["event"]["id"].as_str()?.to_owned(),
            ))
        })
        .collect()
}
