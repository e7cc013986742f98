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
    let config = fim_tests::config_with_sinks(
        &root,
        &watched,
        "",
        &format!(
            "[sinks.console]\ntype = \"stdout\"\n\n\
             [sinks.archive]\ntype = \"file\"\npath = {:?}\nmax_size = \"16 KiB\"\nkeep = 50\n",
            archive.display().to_string()
        ),
    );
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
        "--metrics-address".as_ref(),
        "off".as_ref(),
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
    let d = daemon_with_sinks(
        &root,
        &watched,
        "severity = \"high\"\n",
        &format!(
            "[sinks.siem]\ntype = \"syslog\"\naddress = \"127.0.0.1:{tcp}\"\ntransport = \"tcp\"\n\n\
             [sinks.sentinel]\ntype = \"syslog\"\naddress = \"localhost:{tls}\"\ntransport = \"tls\"\n\
             format = \"cef\"\nfacility = \"authpriv\"\nca_file = {ca}\nclient_cert = {cert}\nclient_key = {key}\n",
            tcp = rsyslog.tcp,
            tls = rsyslog.tls,
            ca = toml(&pki.ca),
            cert = toml(&pki.client_cert),
            key = toml(&pki.client_key),
        ),
    );
    // Names with what CEF must escape.
    let names: Vec<String> = (0..20).map(|i| format!("key={i}|x")).collect();
    let (seen, _) = write_and_stop(d, &watched, &names);
    let ids: Vec<String> = seen
        .iter()
        .map(|v| v["event"]["id"].as_str().expect("event.id").to_owned())
        .collect();
    assert!(ids.len() >= 60, "3 events per file: {}", ids.len());

    // TCP: RFC 5424 carrying the event's JSON document, each event once, in order.
    let plain = fim_tests::receivers::wait_lines(&rsyslog.plain_log, ids.len());
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
    let tls = fim_tests::receivers::wait_lines(&rsyslog.tls_log, ids.len());
    let mut got = Vec::new();
    for (line, doc) in tls.iter().zip(&seen) {
        let (pri, msgid, msg) = rfc5424(line);
        assert_eq!(pri, 10 * 8 + 3, "authpriv: {line}");
        assert!(msg.starts_with("CEF:0|fim|fim|"), "{msg}");
        let header: Vec<&str> = msg.splitn(8, '|').collect();
        assert_eq!(header[4], msgid);
        assert_eq!(header[6], "8", "a high rule: CEF severity 8");
        assert_eq!(cef_value(&msg, "cs1").as_deref(), Some("w"));
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

/// `path` as a TOML string.
fn toml(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// Starts the daemon on `watched` (rule `w`, with `rule_extra` keys) with a stdout sink and
/// the sinks in `sinks`, and waits for its baseline.
fn daemon_with_sinks(root: &Path, watched: &Path, rule_extra: &str, sinks: &str) -> Daemon {
    let config = fim_tests::config_with_sinks(
        root,
        watched,
        rule_extra,
        &format!("[sinks.console]\ntype = \"stdout\"\n\n{sinks}"),
    );
    let config_arg = config.to_str().expect("utf-8");
    let mut d = Daemon::start_with(&[], None, &["--config", config_arg]);
    d.wait_log("baseline built", Duration::from_secs(60));
    d
}

/// Makes `names` in `watched` back to back, waits for the last one's event, stops the
/// daemon and returns what stdout got (each event's document) and the log.
fn write_and_stop(mut d: Daemon, watched: &Path, names: &[String]) -> (Vec<Value>, String) {
    for n in names {
        fs::write(watched.join(n), b"x").expect("write");
    }
    let last = watched.join(names.last().expect("names"));
    d.wait_for("the last write", |v| is(v, "close_write", &last));
    let (seen, log, status) = d.stop();
    assert!(status.success(), "fim exited with {status}: {log}");
    (seen, log)
}

/// [`daemon_with_sinks`] with `sink_toml`, then [`write_and_stop`] with `names`.
fn run_with_sink(
    root: &Path,
    watched: &Path,
    sink_toml: &str,
    names: &[String],
) -> (Vec<Value>, String) {
    let d = daemon_with_sinks(root, watched, "", sink_toml);
    write_and_stop(d, watched, names)
}

/// Whether a JSON document (or a HEC object holding one) is about a file named `bad-*`
/// (by its path: an id or a digest may hold the letters too).
fn is_bad(json: &str) -> bool {
    let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    let path = v["file"]["path"]
        .as_str()
        .or(v["event"]["file"]["path"].as_str())
        .unwrap_or_default();
    path.contains("/bad-")
}

/// The id of each event about a file named `bad-*`, and of the others.
fn split_bad(seen: &[Value]) -> (Vec<String>, Vec<String>) {
    let id = |v: &Value| v["event"]["id"].as_str().expect("id").to_owned();
    let bad = |v: &Value| {
        v["file"]["path"]
            .as_str()
            .is_some_and(|p| p.contains("/bad-"))
    };
    (
        seen.iter().filter(|v| bad(v)).map(id).collect(),
        seen.iter().filter(|v| !bad(v)).map(id).collect(),
    )
}

#[test]
fn elasticsearch_gets_a_bulk_body_retries_what_was_busy_and_logs_what_it_refused() {
    if !require_privileges() {
        return;
    }
    let (_guard, root) = tempdir();
    let watched = root.join("watched");
    fs::create_dir(&watched).expect("mkdir");
    // A receiver like Elasticsearch: stores each `_id` once (409 after), refuses a
    // document whose path holds "bad" (400), and is busy (429) the first time it sees the
    // second item of a request.
    let es = fim_tests::receivers::HttpReceiver::start(|req, before| {
        let stored: std::collections::HashSet<String> = before
            .iter()
            .flat_map(|r| bulk_items(&r.body))
            .filter(|(_, doc)| !is_bad(doc))
            .map(|(id, _)| id)
            .collect();
        let mut seen_now = std::collections::HashSet::new();
        let items: Vec<String> = bulk_items(&req.body)
            .into_iter()
            .enumerate()
            .map(|(i, (id, doc))| {
                let status = if is_bad(&doc) {
                    400
                } else if stored.contains(&id) || !seen_now.insert(id.clone()) {
                    409
                } else if i == 1 && !before.iter().any(|r| bulk_items(&r.body).iter().any(|(b, _)| *b == id)) {
                    429
                } else {
                    201
                };
                let error = match status {
                    400 => r#","error":{"type":"document_parsing_exception","reason":"failed to parse"}"#,
                    409 => r#","error":{"type":"version_conflict_engine_exception","reason":"exists"}"#,
                    429 => r#","error":{"type":"es_rejected_execution_exception","reason":"busy"}"#,
                    _ => "",
                };
                format!(r#"{{"create":{{"_id":"{id}","status":{status}{error}}}}}"#)
            })
            .collect();
        (
            200,
            format!(
                r#"{{"took":1,"errors":true,"items":[{}]}}"#,
                items.join(",")
            ),
        )
    });
    let names: Vec<String> = (0..10)
        .map(|i| {
            if i == 6 {
                "bad-6".to_owned()
            } else {
                format!("f{i}")
            }
        })
        .collect();
    let (seen, log) = run_with_sink(
        &root,
        &watched,
        &format!(
            "[sinks.elastic]\ntype = \"elasticsearch\"\nurl = \"http://127.0.0.1:{}\"\n\
             index = \"logs-fim.file-default\"\napi_key = \"a2V5OnNlY3JldA==\"\nbatch_events = 5\n",
            es.port
        ),
        &names,
    );
    let by_id: std::collections::HashMap<String, &Value> = seen
        .iter()
        .map(|v| (v["event"]["id"].as_str().expect("id").to_owned(), v))
        .collect();
    let requests = es.requests();
    assert!(requests.len() >= 2, "{} requests\n{log}", requests.len());
    assert!(
        log.contains("refused by the receiver") && log.contains("document_parsing_exception"),
        "the refused events are logged with the receiver's reason: {log}"
    );
    let mut stored = Vec::new();
    for r in &requests {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/_bulk"));
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.header("authorization"), Some("ApiKey a2V5OnNlY3JldA=="));
        assert!(r.body.ends_with(b"\n"), "a bulk body ends with a newline");
        let text = String::from_utf8(r.body.clone()).expect("UTF-8");
        let lines: Vec<&str> = text.trim_end_matches('\n').split('\n').collect();
        assert!(
            lines.len().is_multiple_of(2) && lines.len() <= 10,
            "{} lines",
            lines.len()
        );
        for pair in lines.chunks(2) {
            let doc: Value = serde_json::from_str(pair[1]).expect("a document line");
            let id = doc["event"]["id"].as_str().expect("event.id");
            // The action line, to the byte.
            assert_eq!(
                pair[0],
                format!(r#"{{"create":{{"_id":"{id}","_index":"logs-fim.file-default"}}}}"#)
            );
            assert_eq!(Some(&&doc), by_id.get(id), "the document stdout printed");
        }
    }
    // What the receiver stored: every event but the refused ones, once.
    for r in &requests {
        stored.extend(
            bulk_items(&r.body)
                .into_iter()
                .filter(|(_, doc)| !is_bad(doc))
                .map(|(id, _)| id),
        );
    }
    stored.sort();
    stored.dedup();
    let (bad, good) = split_bad(&seen);
    assert!(!bad.is_empty());
    let mut good = good;
    good.sort();
    assert_eq!(
        stored, good,
        "every event but the refused ones reached Elasticsearch"
    );
}

/// (`_id`, document line) of each item of a bulk body.
fn bulk_items(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .filter_map(|pair| {
            let action: Value = serde_json::from_str(pair.first()?).ok()?;
            Some((
                action["create"]["_id"].as_str()?.to_owned(),
                (*pair.get(1)?).to_owned(),
            ))
        })
        .collect()
}

#[test]
fn splunk_hec_gets_one_object_per_event_and_a_refused_event_does_not_hold_the_rest() {
    if !require_privileges() {
        return;
    }
    let (_guard, root) = tempdir();
    let watched = root.join("watched");
    fs::create_dir(&watched).expect("mkdir");
    // Busy the first time, and right after each refusal; otherwise it refuses an event
    // whose path holds "bad" by its number, having indexed those before it. HEC does not
    // deduplicate: a retry must not send again what it indexed.
    let hec = fim_tests::receivers::HttpReceiver::start(|req, before| {
        if hec_busy(before) {
            return (503, r#"{"text":"Server is busy","code":9}"#.into());
        }
        let text = String::from_utf8_lossy(&req.body).into_owned();
        match text.lines().position(is_bad) {
            Some(n) => (
                400,
                format!(r#"{{"text":"Invalid data format","code":6,"invalid-event-number":{n}}}"#),
            ),
            None => (200, r#"{"text":"Success","code":0}"#.into()),
        }
    });
    let names: Vec<String> = (0..8)
        .map(|i| {
            if i == 3 {
                "bad-3".to_owned()
            } else {
                format!("f{i}")
            }
        })
        .collect();
    // The token from a file, as a secret should come.
    let token = root.join("hec.token");
    fs::write(&token, "12345678-abcd\n").expect("token file");
    let (seen, log) = run_with_sink(
        &root,
        &watched,
        &format!(
            "[sinks.splunk]\ntype = \"splunk_hec\"\nurl = \"http://127.0.0.1:{}\"\n\
             token_file = {:?}\nindex = \"fim\"\ngzip = false\n",
            hec.port,
            token.display().to_string()
        ),
        &names,
    );
    assert!(
        log.contains("refused by the receiver") && log.contains("Invalid data format"),
        "the refused event is logged with the receiver's reason: {log}"
    );
    let mut indexed = Vec::new();
    let requests = hec.requests();
    assert!(
        (1..requests.len()).any(|i| hec_busy(&requests[..i]) && i > 1),
        "a request after a refusal was answered busy: {} requests",
        requests.len()
    );
    for (i, r) in requests.iter().enumerate() {
        assert_eq!(r.path, "/services/collector/event");
        assert_eq!(r.header("authorization"), Some("Splunk 12345678-abcd"));
        assert_eq!(r.header("content-encoding"), None, "gzip = false");
        let text = String::from_utf8(r.body.clone()).expect("UTF-8");
        let objects: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        for o in &objects {
            assert_eq!(o["source"], "fim");
            assert_eq!(o["sourcetype"], "_json");
            assert_eq!(o["index"], "fim");
            assert!(o["time"].as_f64().is_some_and(|t| t > 1.7e9), "{o}");
            schema_check(&o["event"]).unwrap_or_else(|invalid| panic!("{invalid}"));
        }
        // What the receiver indexed: all of a successful request; before the refused one
        // of a refused request; nothing of the busy first one.
        let took = match text.lines().position(is_bad) {
            _ if hec_busy(&requests[..i]) => 0,
            Some(n) => n,
            None => objects.len(),
        };
        indexed.extend(
            objects[..took]
                .iter()
                .map(|o| o["event"]["event"]["id"].as_str().expect("id").to_owned()),
        );
    }
    let (bad, good) = split_bad(&seen);
    assert!(!bad.is_empty());
    assert_eq!(indexed, good, "every other event once, in order");
}

/// Whether the test's HEC receiver answers busy after the requests `before`: to the first
/// request, and to the one after a refusal (a request holding a `bad-*` event that it did
/// not answer busy).
fn hec_busy(before: &[fim_tests::receivers::Request]) -> bool {
    match before.split_last() {
        None => true,
        Some((last, earlier)) => {
            !hec_busy(earlier) && String::from_utf8_lossy(&last.body).lines().any(is_bad)
        }
    }
}

#[test]
fn a_receiver_that_takes_no_request_that_large_gets_smaller_ones_and_every_event_once() {
    if !require_privileges() {
        return;
    }
    let (_guard, root) = tempdir();
    let watched = root.join("watched");
    fs::create_dir(&watched).expect("mkdir");
    // A webhook that answers 413 to a request of more than 3 events, and takes the rest.
    let hook = fim_tests::receivers::HttpReceiver::start(|req, _| {
        let docs: Vec<Value> = serde_json::from_slice(&req.body).expect("a JSON array");
        if docs.len() > 3 {
            (413, "Request Entity Too Large".into())
        } else {
            (200, "{}".into())
        }
    });
    let names: Vec<String> = (0..12).map(|i| format!("f{i}")).collect();
    let (seen, log) = run_with_sink(
        &root,
        &watched,
        &format!(
            "[sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{}/in\"\n\
             batch_events = 16\nbatch_wait = \"2s\"\ngzip = false\n",
            hook.port
        ),
        &names,
    );
    assert!(
        log.contains("(HTTP 413): sending at most"),
        "the smaller requests are logged: {log}"
    );
    let mut took = Vec::new();
    for r in hook.requests() {
        let docs: Vec<Value> = serde_json::from_slice(&r.body).expect("a JSON array");
        if docs.len() <= 3 {
            took.extend(
                docs.iter()
                    .map(|d| d["event"]["id"].as_str().expect("id").to_owned()),
            );
        }
    }
    let all: Vec<String> = seen
        .iter()
        .map(|v| v["event"]["id"].as_str().expect("id").to_owned())
        .collect();
    assert!(
        all.len() >= 24,
        "create and close_write of 12 files: {}",
        all.len()
    );
    assert_eq!(took, all, "every event once, in order");
}

#[test]
fn syslog_over_tcp_is_octet_counted_as_syslog_ng_demands() {
    if !require_privileges() {
        return;
    }
    let (_guard, root) = tempdir();
    let Some(sng) = fim_tests::receivers::SyslogNg::start(&root.join("syslog-ng")) else {
        return;
    };
    let watched = root.join("watched");
    fs::create_dir(&watched).expect("mkdir");
    let d = daemon_with_sinks(
        &root,
        &watched,
        "",
        &format!(
            "[sinks.siem]\ntype = \"syslog\"\naddress = \"127.0.0.1:{}\"\n",
            sng.tcp
        ),
    );
    // Names with a space and a line break: a frame is counted in bytes, not cut at LF.
    let names: Vec<String> = (0..10).map(|i| format!("f {i}\nx")).collect();
    let (seen, _) = write_and_stop(d, &watched, &names);
    let ids: Vec<&str> = seen
        .iter()
        .map(|v| v["event"]["id"].as_str().expect("id"))
        .collect();
    let lines = fim_tests::receivers::wait_lines(&sng.raw_log, ids.len());
    let got: Vec<String> = lines
        .iter()
        .map(|line| {
            let (_, _, msg) = rfc5424(line);
            let v: Value = serde_json::from_str(&msg).unwrap_or_else(|e| panic!("{e}: {msg}"));
            v["event"]["id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(got, ids, "every event once, in order\n{}", sng.log());
}
