//! `fim.exe` under Wine, in a fresh prefix each: registry values of every type, subkeys,
//! deleted keys, the 32-bit view and the default value, changed through `wine reg` while
//! it runs and while it is stopped; the Windows files of the built-in list changed from
//! the host. Each event is asserted whole enough to name what changed, before and after,
//! and the rule and technique it carries.

mod harness;

use harness::{Fim, Kit, Prefix, require_wine};
use serde_json::{Value, json};

const RUN: &str = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Run";
const RUN_KEY: &str = r"SOFTWARE\Microsoft\Windows\CurrentVersion\Run";
const WOW_RUN_KEY: &str = r"SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Run";
const KNOWN_DLLS: &str = r"HKLM\SYSTEM\CurrentControlSet\Control\Session Manager\KnownDLLs";
const PUBLIC_PROFILE: &str =
    r"HKLM\SYSTEM\CurrentControlSet\Services\SharedAccess\Parameters\FirewallPolicy\PublicProfile";
const STATE: &str = r"C:\fim\state";
const CONFIG: &str = r"C:\fim\fim.toml";

/// The built-in configuration as fim.exe prints it, polling every 2 s, with one more rule:
/// a key read in the 32-bit view.
fn write_config(prefix: &Prefix, exe: &std::path::Path) {
    let mut cmd = prefix.command("timeout");
    cmd.arg("60")
        .arg("wine")
        .arg(exe)
        .args(["config", "default"]);
    let out = cmd.output().expect("fim.exe config default");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(
        text.contains("[windows]"),
        "Windows prints its lists:\n{text}"
    );
    let interval = "poll_interval = \"5m\"";
    assert!(text.contains(interval), "{text}");
    let text = text.replace(interval, "poll_interval = \"2s\"")
        + "\n[[windows.registry]]\nname = \"test-32-bit-view\"\nkeys = ['HKLM\\SOFTWARE\\FimView']\nview = \"32\"\ndepth = 1\nseverity = \"low\"\n";
    std::fs::create_dir_all(prefix.c("fim")).expect("C:\\fim");
    std::fs::write(prefix.c("fim/fim.toml"), text).expect("writing the configuration");
}

fn start(prefix: &Prefix, exe: &std::path::Path) -> Fim {
    Fim::start(
        prefix,
        exe,
        &[
            "--config",
            CONFIG,
            "--state-dir",
            STATE,
            "--metrics-address",
            "off",
        ],
    )
}

/// Sets the public firewall profile's `EnableFirewall` (a DWORD).
fn set_firewall(prefix: &Prefix, on: &str) {
    prefix.reg(&[
        "add",
        PUBLIC_PROFILE,
        "/v",
        "EnableFirewall",
        "/t",
        "REG_DWORD",
        "/d",
        on,
        "/f",
    ]);
}

fn action(v: &Value) -> &str {
    v["event"]["action"].as_str().unwrap_or_default()
}

/// A registry event on `key` (under HKLM) and `value` (`None`: the key itself).
fn on(v: &Value, act: &str, key: &str, value: Option<&str>) -> bool {
    v["event"]["category"][0] == "registry"
        && action(v) == act
        && v["registry"]["key"] == key
        && v["registry"].get("value").and_then(Value::as_str) == value
}

/// Asserts what every registry event says of itself and its rule.
fn assert_registry(v: &Value, rule: &str, technique: Option<&str>, origin: &str) {
    assert_eq!(v["registry"]["hive"], "HKLM", "{v}");
    let path = match v["registry"].get("value").and_then(Value::as_str) {
        Some(name) => format!(
            "HKLM\\{}\\{name}",
            v["registry"]["key"].as_str().unwrap_or_default()
        ),
        None => format!(
            "HKLM\\{}",
            v["registry"]["key"].as_str().unwrap_or_default()
        ),
    };
    assert_eq!(v["registry"]["path"], path.as_str(), "{v}");
    assert_eq!(v["event"]["dataset"], "fim.registry", "{v}");
    assert_eq!(v["rule"]["name"], rule, "{v}");
    match technique {
        Some(t) => assert_eq!(v["threat"]["technique"]["id"], json!([t]), "{v}"),
        None => assert!(v.get("threat").is_none(), "{v}"),
    }
    assert_eq!(v["fim"]["origin"], origin, "{v}");
    assert_eq!(v["fim"]["sensor"], "registry", "{v}");
}

fn strings(v: &Value, side: &str) -> Value {
    v["fim"][side]["strings"].clone()
}

#[test]
fn every_kind_of_registry_change_is_reported_while_running_and_while_stopped() {
    let Some(Kit { exe, shim, acl }) = require_wine() else {
        return;
    };
    let prefix = Prefix::new(&shim);
    write_config(&prefix, &exe);
    // A Wine prefix has neither: made before fim.exe starts, so they are in its baseline.
    prefix.reg(&[
        "add",
        KNOWN_DLLS,
        "/v",
        "kernel32",
        "/d",
        "kernel32.dll",
        "/f",
    ]);
    set_firewall(&prefix, "1");
    let mut fim = start(&prefix, &exe);
    let run_rule = ("windows-run-keys", Some("T1547.001"));

    // A value of every type.
    let types: [(&str, &str, &str, Value); 6] = [
        ("FimSz", "REG_SZ", r"C:\evil.exe", json!([r"C:\evil.exe"])),
        (
            "FimExpand",
            "REG_EXPAND_SZ",
            r"%SystemRoot%\evil.exe",
            json!([r"%SystemRoot%\evil.exe"]),
        ),
        (
            "FimMulti",
            "REG_MULTI_SZ",
            r"one\0two",
            json!(["one", "two"]),
        ),
        ("FimDword", "REG_DWORD", "16", json!(["16"])),
        (
            "FimQword",
            "REG_QWORD",
            "0x100000000",
            json!(["4294967296"]),
        ),
        ("FimBinary", "REG_BINARY", "deadbeef", json!(["deadbeef"])),
    ];
    for (name, kind, data, shown) in &types {
        prefix.reg(&["add", RUN, "/v", name, "/t", kind, "/d", data, "/f"]);
        let v = fim.wait_for(name, |v| on(v, "added", RUN_KEY, Some(name)));
        assert_registry(&v, run_rule.0, run_rule.1, "realtime");
        assert_eq!(v["event"]["type"], json!(["creation"]));
        assert_eq!(v["registry"]["data"]["type"], *kind, "{v}");
        assert_eq!(v["registry"]["data"]["strings"], *shown, "{v}");
        assert_eq!(v["fim"]["after"]["type"], *kind, "{v}");
        assert_eq!(v["fim"]["registry_view"], "64");
        assert!(v["fim"]["before"].is_null(), "{v}");
    }

    // Content, then type, changed; a value deleted.
    prefix.reg(&["add", RUN, "/v", "FimSz", "/d", r"C:\evil2.exe", "/f"]);
    let v = fim.wait_for("FimSz changed", |v| {
        on(v, "changed", RUN_KEY, Some("FimSz"))
    });
    assert_registry(&v, run_rule.0, run_rule.1, "realtime");
    assert_eq!(strings(&v, "before"), json!([r"C:\evil.exe"]));
    assert_eq!(strings(&v, "after"), json!([r"C:\evil2.exe"]));
    assert_eq!(v["fim"]["changed"], json!(["size", "sha256"]));
    assert_eq!(v["fim"]["before"]["size"], 24);
    assert_eq!(v["fim"]["after"]["size"], 26);
    prefix.reg(&[
        "add", RUN, "/v", "FimDword", "/t", "REG_SZ", "/d", "16", "/f",
    ]);
    let v = fim.wait_for("FimDword retyped", |v| {
        on(v, "changed", RUN_KEY, Some("FimDword"))
    });
    assert_eq!(v["fim"]["changed"], json!(["type", "size", "sha256"]));
    assert_eq!(v["fim"]["before"]["type"], "REG_DWORD");
    assert_eq!(v["fim"]["after"]["type"], "REG_SZ");
    prefix.reg(&["delete", RUN, "/v", "FimBinary", "/f"]);
    let v = fim.wait_for("FimBinary removed", |v| {
        on(v, "removed", RUN_KEY, Some("FimBinary"))
    });
    assert_registry(&v, run_rule.0, run_rule.1, "realtime");
    assert_eq!(v["event"]["type"], json!(["deletion"]));
    assert_eq!(v["fim"]["before"]["bytes"], "deadbeef");
    assert!(v["fim"]["after"].is_null(), "{v}");

    // The default value.
    prefix.reg(&["add", RUN, "/ve", "/d", r"C:\default.exe", "/f"]);
    let v = fim.wait_for("default value", |v| on(v, "added", RUN_KEY, Some("")));
    assert_eq!(v["registry"]["path"], format!("{RUN}\\"));
    assert_eq!(strings(&v, "after"), json!([r"C:\default.exe"]));
    prefix.reg(&["add", RUN, "/ve", "/d", r"C:\other.exe", "/f"]);
    let v = fim.wait_for("default value changed", |v| {
        on(v, "changed", RUN_KEY, Some(""))
    });
    assert_eq!(strings(&v, "before"), json!([r"C:\default.exe"]));

    // A subkey made, then deleted: the key and its value each way.
    let sub = format!(r"{RUN}\FimSub");
    let sub_key = format!(r"{RUN_KEY}\FimSub");
    prefix.reg(&["add", &sub, "/v", "Inner", "/d", "x", "/f"]);
    let key = fim.wait_for("subkey", |v| on(v, "added", &sub_key, None));
    assert_registry(&key, run_rule.0, run_rule.1, "realtime");
    assert!(key["fim"]["after"]["last_write"].is_string(), "{key}");
    assert!(key["fim"]["after"]["security_sha256"].is_string(), "{key}");
    assert!(key["registry"].get("data").is_none(), "{key}");
    let value = fim.wait_for("its value", |v| on(v, "added", &sub_key, Some("Inner")));
    assert!(value["event"]["sequence"].as_u64() > key["event"]["sequence"].as_u64());
    prefix.reg(&["delete", &sub, "/f"]);
    let gone = fim.wait_for("subkey deleted", |v| on(v, "removed", &sub_key, None));
    assert_eq!(gone["event"]["type"], json!(["deletion"]));
    let v = fim.wait_for("its value deleted", |v| {
        on(v, "removed", &sub_key, Some("Inner"))
    });
    assert_eq!(strings(&v, "before"), json!(["x"]));

    // The key's ACL: no notification tells it (Wine's nor Windows'), the full poll does.
    prefix.wine(
        &acl,
        &["key", RUN, "O:BAD:(A;;KA;;;SY)(A;;KA;;;BA)(A;;KA;;;WD)"],
    );
    let v = fim.wait_for("Run key ACL", |v| on(v, "changed", RUN_KEY, None));
    assert_registry(&v, run_rule.0, run_rule.1, "rescan");
    assert_eq!(v["fim"]["changed"], json!(["acl"]));
    assert_ne!(
        v["fim"]["before"]["security_sha256"], v["fim"]["after"]["security_sha256"],
        "{v}"
    );
    assert_eq!(
        v["fim"]["before"]["last_write"],
        v["fim"]["after"]["last_write"]
    );

    // The 32-bit view: a 32-bit program's Run key is WOW6432Node's, in the built-in list;
    // and a key configured in the 32-bit view.
    prefix.reg(&[
        "add",
        RUN,
        "/v",
        "Fim32",
        "/d",
        r"C:\wow.exe",
        "/f",
        "/reg:32",
    ]);
    fim.wait_for("WOW6432Node Run key", |v| on(v, "added", WOW_RUN_KEY, None));
    let v = fim.wait_for("its value", |v| on(v, "added", WOW_RUN_KEY, Some("Fim32")));
    assert_registry(&v, run_rule.0, run_rule.1, "realtime");
    assert_eq!(strings(&v, "after"), json!([r"C:\wow.exe"]));
    prefix.reg(&[
        "add",
        r"HKLM\SOFTWARE\FimView",
        "/v",
        "V",
        "/d",
        "y",
        "/f",
        "/reg:32",
    ]);
    let v = fim.wait_for("32-bit view key", |v| {
        on(v, "added", r"SOFTWARE\FimView", Some("V"))
    });
    assert_registry(&v, "test-32-bit-view", None, "realtime");
    assert_eq!(v["fim"]["registry_view"], "32");
    assert_eq!(v["event"]["severity"], 21);

    // KnownDLLs and the firewall policy, with their techniques.
    prefix.reg(&["add", KNOWN_DLLS, "/v", "fimdll", "/d", "fim.dll", "/f"]);
    let known = &KNOWN_DLLS[5..];
    let v = fim.wait_for("KnownDLLs", |v| on(v, "added", known, Some("fimdll")));
    assert_registry(&v, "windows-known-dlls", Some("T1574.001"), "realtime");
    set_firewall(&prefix, "0");
    let profile = &PUBLIC_PROFILE[5..];
    let v = fim.wait_for("firewall off", |v| {
        on(v, "changed", profile, Some("EnableFirewall"))
    });
    assert_registry(&v, "windows-firewall-policy", Some("T1562.004"), "realtime");
    assert_eq!(strings(&v, "before"), json!(["1"]));
    assert_eq!(strings(&v, "after"), json!(["0"]));

    let (seen, log, status) = fim.stop();
    assert!(status.success(), "fim.exe exits 0 on Ctrl-C; log:\n{log}");
    let sequences: Vec<u64> = seen
        .iter()
        .filter_map(|v| v["event"]["sequence"].as_u64())
        .collect();
    assert!(
        sequences.windows(2).all(|w| w[1] == w[0] + 1),
        "{sequences:?}"
    );
    assert!(
        seen.iter().all(|v| v["event"]["category"][0] == "registry"),
        "nothing but the registry changed: {seen:#?}"
    );

    // While stopped: a value changed, one deleted, a key made.
    prefix.reg(&["add", RUN, "/v", "FimSz", "/d", r"C:\offline.exe", "/f"]);
    prefix.reg(&["delete", RUN, "/v", "FimQword", "/f"]);
    prefix.reg(&[
        "add",
        &format!(r"{RUN}\Offline"),
        "/v",
        "Later",
        "/d",
        "z",
        "/f",
    ]);
    let mut fim = start(&prefix, &exe);
    // In key order, and in value-name order within a key.
    let v = fim.wait_for("deleted while stopped", |v| {
        on(v, "removed", RUN_KEY, Some("FimQword"))
    });
    assert_registry(&v, run_rule.0, run_rule.1, "found_at_start");
    assert_eq!(strings(&v, "before"), json!(["4294967296"]));
    let v = fim.wait_for("changed while stopped", |v| {
        on(v, "changed", RUN_KEY, Some("FimSz"))
    });
    assert_registry(&v, run_rule.0, run_rule.1, "found_at_start");
    assert_eq!(strings(&v, "before"), json!([r"C:\evil2.exe"]));
    assert_eq!(strings(&v, "after"), json!([r"C:\offline.exe"]));
    let offline = format!(r"{RUN_KEY}\Offline");
    fim.wait_for("key made while stopped", |v| on(v, "added", &offline, None));
    let v = fim.wait_for("its value", |v| on(v, "added", &offline, Some("Later")));
    assert_registry(&v, run_rule.0, run_rule.1, "found_at_start");
    let first = sequences.last().copied().unwrap_or_default();
    assert!(
        fim.seen
            .iter()
            .all(|v| v["event"]["sequence"].as_u64() > Some(first)),
        "numbering goes on after a restart"
    );
    let (_, log, status) = fim.stop();
    assert!(status.success(), "{log}");
}

/// `GET path` from the metrics endpoint at `address`: the whole answer.
fn get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("the metrics endpoint");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

fn sha256_hex(bytes: &[u8]) -> String {
    fim_tests::sha256_hex(bytes)
}

/// A file event on `path`.
fn file_on(v: &Value, act: &str, path: &str) -> bool {
    v["event"]["category"][0] == "file" && action(v) == act && v["file"]["path"] == path
}

#[test]
fn windows_files_are_reported_created_changed_and_deleted_while_running_and_while_stopped() {
    let Some(Kit { exe, shim, acl }) = require_wine() else {
        return;
    };
    let prefix = Prefix::new(&shim);
    write_config(&prefix, &exe);
    let win_ini = prefix.c("windows/win.ini");
    let before = std::fs::read(&win_ini).expect("win.ini");
    // With its metrics endpoint, which Wine serves on the host's loopback.
    let metrics = "127.0.0.1:19481";
    let mut fim = Fim::start(
        &prefix,
        &exe,
        &[
            "--config",
            CONFIG,
            "--state-dir",
            STATE,
            "--metrics-address",
            metrics,
        ],
    );
    assert!(
        get(metrics, "/ready").starts_with("HTTP/1.1 200"),
        "ready once polled"
    );

    let mut after = before.clone();
    after.extend_from_slice(b"[fim]\r\nchanged=1\r\n");
    std::fs::write(&win_ini, &after).expect("writing win.ini");
    let v = fim.wait_for("win.ini changed", |v| {
        file_on(v, "changed", r"C:\Windows\win.ini")
    });
    assert_eq!(v["file"]["name"], "win.ini");
    assert_eq!(v["file"]["directory"], r"C:\Windows");
    assert_eq!(v["fim"]["before"]["sha256"], sha256_hex(&before));
    assert_eq!(v["fim"]["after"]["sha256"], sha256_hex(&after));
    assert_eq!(v["file"]["hash"]["sha256"], sha256_hex(&after));
    let changed = v["fim"]["changed"].as_array().cloned().unwrap_or_default();
    assert!(
        changed.contains(&json!("size")) && changed.contains(&json!("sha256")),
        "{v}"
    );
    assert!(
        v["fim"]["after"]["acl_access"]
            .as_str()
            .is_some_and(|a| a.contains("D:")),
        "the owner and DACL: {v}"
    );
    assert_eq!(v["rule"]["name"], "windows-files");
    assert_eq!(v["fim"]["sensor"], "file-poll");

    // The file's owner and DACL.
    prefix.wine(&acl, &["file", r"C:\Windows\win.ini", "O:BAD:(A;;FR;;;WD)"]);
    let v = fim.wait_for("win.ini ACL", |v| {
        file_on(v, "changed", r"C:\Windows\win.ini") && v["fim"]["changed"] == json!(["acl_access"])
    });
    assert_ne!(
        v["fim"]["before"]["acl_access"],
        v["fim"]["after"]["acl_access"]
    );
    assert_eq!(
        v["fim"]["after"]["sha256"],
        sha256_hex(&after),
        "content unchanged"
    );

    let autoexec = prefix.c("autoexec.bat");
    std::fs::write(&autoexec, b"@echo off\r\n").expect("autoexec.bat");
    let v = fim.wait_for("autoexec.bat created", |v| {
        file_on(v, "added", r"C:\autoexec.bat")
    });
    assert_eq!(v["file"]["directory"], r"C:\");
    assert_eq!(v["fim"]["after"]["sha256"], sha256_hex(b"@echo off\r\n"));
    assert_eq!(v["fim"]["after"]["size"], 11);
    std::fs::remove_file(&autoexec).expect("removing autoexec.bat");
    let v = fim.wait_for("autoexec.bat deleted", |v| {
        file_on(v, "removed", r"C:\autoexec.bat")
    });
    assert!(v["fim"]["after"].is_null(), "{v}");
    let text = get(metrics, "/metrics");
    for series in [
        "fim_events_total{sensor=\"file-poll\",action=\"changed\"} 2",
        "fim_events_total{sensor=\"file-poll\",action=\"added\"} 1",
        "fim_events_total{sensor=\"file-poll\",action=\"removed\"} 1",
    ] {
        assert!(text.contains(series), "{series} in:\n{text}");
    }
    let (_, log, status) = fim.stop();
    assert!(status.success(), "{log}");

    // While stopped.
    let system_ini = prefix.c("windows/system.ini");
    let old = std::fs::read(&system_ini).expect("system.ini");
    std::fs::write(&system_ini, b"[boot]\r\nshell=evil.exe\r\n").expect("system.ini");
    let mut fim = start(&prefix, &exe);
    let v = fim.wait_for("system.ini changed while stopped", |v| {
        file_on(v, "changed", r"C:\Windows\system.ini")
    });
    assert_eq!(v["fim"]["origin"], "found_at_start");
    assert_eq!(v["fim"]["before"]["sha256"], sha256_hex(&old));
    let (_, log, status) = fim.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn the_service_installs_runs_until_stopped_and_uninstalls() {
    let Some(Kit { exe, shim, .. }) = require_wine() else {
        return;
    };
    let prefix = Prefix::new(&shim);
    std::fs::create_dir_all(prefix.c("fim")).expect("C:\\fim");
    // The service's events go to a file sink: a service has no console.
    std::fs::write(
        prefix.c("fim/service.toml"),
        "[windows]\npoll_interval = \"2s\"\n\
         [[windows.registry]]\nname = \"service-test\"\nkeys = ['HKLM\\SOFTWARE\\FimService']\n\
         techniques = [\"T1112\"]\n\
         [[windows.files]]\nname = \"none\"\npaths = ['C:\\fim\\absent.txt']\n\
         [sinks.events]\ntype = \"file\"\npath = 'C:\\fim\\events.json'\n",
    )
    .expect("the configuration");
    std::fs::copy(&exe, prefix.c("fim/fim.exe")).expect("fim.exe into the prefix");
    let installed = std::path::Path::new(r"C:\fim\fim.exe");
    // A bad configuration is refused with every problem and its line, exit status 2.
    std::fs::write(
        prefix.c("fim/bad.toml"),
        "[windows]\n[[windows.registry]]\nname = \"x\"\nkeys = ['HKXX\\y']\ndepth = 99\n",
    )
    .expect("bad configuration");
    for command in ["run", "service install"] {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.extend(["--config", r"C:\fim\bad.toml"]);
        let mut cmd = prefix.command("timeout");
        cmd.arg("60").arg("wine").arg(installed).args(&args);
        let out = cmd.output().expect("fim.exe");
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {said}");
        assert!(
            said.contains("line 4: `windows.registry[1].keys[1]`"),
            "{said}"
        );
        assert!(
            said.contains("line 5: `windows.registry[1].depth`"),
            "{said}"
        );
    }
    let out = prefix.wine(
        installed,
        &[
            "service",
            "install",
            "--config",
            r"C:\fim\service.toml",
            "--state-dir",
            r"C:\fim\service-state",
            "--metrics-address",
            "off",
        ],
    );
    assert!(out.contains("installed the service `fim`"), "{out}");
    // Wine's service manager may start an automatic service by itself first.
    let started = prefix.run("wine", &["net", "start", "fim"], 60);
    let said = String::from_utf8_lossy(&started.stdout).into_owned()
        + &String::from_utf8_lossy(&started.stderr);
    assert!(
        started.status.success() || said.contains("already running"),
        "net start fim: {said}"
    );
    let events = prefix.c("fim/events.json");
    // The first poll makes the sink's file; wait for it, then change the key.
    let ready = std::time::Instant::now();
    while !events.exists()
        && prefix
            .c("fim/service-state")
            .read_dir()
            .map_or(true, |mut d| d.next().is_none())
    {
        assert!(
            ready.elapsed() < std::time::Duration::from_secs(60),
            "the service never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    prefix.reg(&[
        "add",
        r"HKLM\SOFTWARE\FimService",
        "/v",
        "Svc",
        "/d",
        "on",
        "/f",
    ]);
    let start = std::time::Instant::now();
    let found = loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        let docs: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if let Some(v) = docs
            .iter()
            .find(|v| on(v, "added", r"SOFTWARE\FimService", Some("Svc")))
        {
            break v.clone();
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the service did not report the change; its file holds:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_registry(&found, "service-test", Some("T1112"), "realtime");
    assert_eq!(strings(&found, "after"), json!(["on"]));
    let out = prefix.wine(std::path::Path::new("net"), &["stop", "fim"]);
    assert!(out.contains("stopped"), "{out}");
    let out = prefix.wine(installed, &["service", "uninstall"]);
    assert!(out.contains("removed the service `fim`"), "{out}");
    let again = prefix.run("wine", &["net", "start", "fim"], 60);
    assert!(!again.status.success(), "the service is gone");
}
