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

/// An RFC 5424 message as rsyslog's `%rawmsg%` keeps it: (PRI, MSGID, MSG); panics on a
/// line that is not one, with no structured data.
fn rfc5424(line: &str) -> (u32, String, String) {
    let rest = line
        .strip_prefix('<')
        .unwrap_or_else(|| panic!("no PRI: {line:?}"));
    let (pri, rest) = rest.split_once(">1 ").expect("VERSION 1");
    let fields: Vec<&str> = rest.splitn(7, ' ').collect();
    let [timestamp, host, app, procid, msgid, sd, msg] = fields[..] else {
        panic!("not every header field: {line:?}");
    };
    assert!(
        timestamp.ends_with('Z') && timestamp.split('.').nth(1).map(str::len) == Some(7),
        "a UTC timestamp with microseconds: {timestamp}"
    );
    assert!(!host.is_empty() && host != "-", "{line:?}");
    assert_eq!(app, "fim");
    assert!(
        procid.parse::<u32>().is_ok(),
        "PROCID is the daemon's pid: {procid}"
    );
    assert_eq!(sd, "-", "no structured data");
    (pri.parse().expect("PRI"), msgid.to_owned(), msg.to_owned())
}

/// The value of CEF extension key `key` in `line` (values never hold an unescaped `=`).
fn cef_value(line: &str, key: &str) -> Option<String> {
    let ext = line.splitn(8, '|').nth(7)?;
    let start = ext.find(&format!("{key}="))? + key.len() + 1;
    let rest = &ext[start..];
    // The value ends where the next ` key=` begins.
    let end = rest
        .match_indices(' ')
        .find(|(i, _)| {
            rest[i + 1..]
                .split_once('=')
                .is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()))
        })
        .map_or(rest.len(), |(i, _)| i);
    Some(rest[..end].to_owned())
}

#[test]
fn syslog_over_tcp_with_json_and_over_tls_with_cef_reaches_rsyslog_once_each() {
    if !require_privileges() {
        return;
    }
    let (_guard, root) = tempdir();
    let pki = fim_tests::receivers::Pki::make(&root.join("pki"));
    let Some(rsyslog) = fim_tests::receivers::Rsyslog::start(&root.join("rsyslog"), &pki) else {
        return;
    };
    let watched = root.join("watched");
    fs::create_dir(&watched).expect("mkdir");
    let config = root.join("fim.toml");
    let p = |p: &Path| format!("{:?}", p.display().to_string());
    fs::write(
        &config,
        format!(
            "[daemon]\nrescan_interval = \"0\"\n\n\
             [[rule]]\nname = \"keys\"\npaths = [{w}]\nseverity = \"high\"\n\n\
             [sinks.console]\ntype = \"stdout\"\n\n\
             [sinks.siem]\ntype = \"syslog\"\naddress = \"127.0.0.1:{tcp}\"\ntransport = \"tcp\"\n\n\
             [sinks.sentinel]\ntype = \"syslog\"\naddress = \"localhost:{tls}\"\ntransport = \"tls\"\n\
             format = \"cef\"\nfacility = \"authpriv\"\nca_file = {ca}\nclient_cert = {cert}\nclient_key = {key}\n",
            w = p(&watched),
            tcp = rsyslog.tcp,
            tls = rsyslog.tls,
            ca = p(&pki.ca),
            cert = p(&pki.client_cert),
            key = p(&pki.client_key),
        ),
    )
    .expect("configuration");
    let config_arg = config.to_str().expect("utf-8");
    let mut d = Daemon::start_with(&[], None, &["--config", config_arg]);
    d.wait_log("baseline built", Duration::from_secs(60));
    // A name with what CEF must escape.
    for i in 0..20 {
        fs::write(watched.join(format!("key={i}|x")), b"ssh-ed25519 AAAA").expect("write");
    }
    let last = watched.join("key=19|x");
    d.wait_for("the last write", |v| is(v, "close_write", &last));
    let (seen, log, status) = d.stop();
    assert!(status.success(), "fim exited with {status}: {log}");
    let ids: Vec<String> = seen
        .iter()
        .map(|v| v["event"]["id"].as_str().expect("event.id").to_owned())
        .collect();
    assert!(ids.len() >= 60, "3 events per file: {}", ids.len());

    // TCP: RFC 5424 carrying the event's JSON document, each event once, in order.
    let plain = rsyslog.wait_lines(&rsyslog.plain_log, ids.len());
    let mut got = Vec::new();
    for line in &plain {
        let (pri, msgid, msg) = rfc5424(line);
        // local0 (16), and a `high` rule: err (3).
        assert_eq!(pri, 16 * 8 + 3, "{line}");
        let v: Value = serde_json::from_str(&msg).unwrap_or_else(|e| panic!("{e}: {msg}"));
        schema_check(&v).unwrap_or_else(|invalid| panic!("{invalid}"));
        assert_eq!(v["event"]["action"], msgid.as_str());
        got.push(v["event"]["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(
        got,
        ids,
        "over TCP: every event once, in order\n{}",
        rsyslog.log()
    );

    // TLS with a client certificate: CEF, each event once, in order.
    let tls = rsyslog.wait_lines(&rsyslog.tls_log, ids.len());
    let mut got = Vec::new();
    for (line, doc) in tls.iter().zip(&seen) {
        let (pri, msgid, msg) = rfc5424(line);
        assert_eq!(pri, 10 * 8 + 3, "authpriv: {line}");
        assert!(msg.starts_with("CEF:0|fim|fim|"), "{msg}");
        let header: Vec<&str> = msg.splitn(8, '|').collect();
        assert_eq!(header[4], msgid);
        assert_eq!(header[6], "8", "a high rule: CEF severity 8");
        assert_eq!(cef_value(&msg, "cs1").as_deref(), Some("keys"));
        let path = doc["file"]["path"].as_str().expect("path");
        assert_eq!(
            cef_value(&msg, "filePath"),
            Some(path.replace('=', "\\=")),
            "{msg}"
        );
        got.push(cef_value(&msg, "externalId").expect("externalId"));
    }
    assert_eq!(
        got,
        ids,
        "over TLS: every event once, in order\n{}",
        rsyslog.log()
    );
}
