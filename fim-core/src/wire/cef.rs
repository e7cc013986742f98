//! ArcSight's Common Event Format, as Microsoft Sentinel and ArcSight ingest it, from an
//! event's ECS document. Pure.
//!
//! `CEF:0|fim|fim|VERSION|ACTION|NAME|SEVERITY|EXTENSION`. The extension uses the keys
//! Sentinel maps to `CommonSecurityLog` columns (the README lists them): `rt`, `act`,
//! `externalId`, `fname`, `filePath`, `fileHash`, `fsize`, `filePermission`, `fileId`,
//! `fileType`, `fileModificationTime`, `oldFilePath`, `oldFileName`, `oldFileHash`,
//! `oldFileSize`, `oldFilePermission`, `suid`, `spid`, `sproc`, `dvchost`,
//! `deviceExternalId`, `msg`, `cnt`, and labelled custom strings for what has no key of its
//! own: cs1 the rule, cs2 the sensor, cs3 the attributes that changed, cs4 the process's
//! executable, cs5 the ATT&CK techniques, cs6 the package check. Times are milliseconds
//! since the epoch; a value that is absent is left out.

use serde_json::Value;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// The CEF severity (0..=10) of an event: from its rules' severity (low 3, medium 5, high
/// 8, critical 10), a gap or a rate limit's summary 5, anything else 1.
pub fn severity(doc: &Value) -> u8 {
    if let Some("gap" | "suppressed") = doc["event"]["action"].as_str() {
        return 5;
    }
    match doc["event"]["severity"].as_u64() {
        Some(99) => 10,
        Some(73) => 8,
        Some(47) => 5,
        Some(_) => 3,
        None => 1,
    }
}

/// A short name for what happened.
fn name(action: &str) -> &'static str {
    match action {
        "create" => "File created",
        "open_write" => "File opened for writing",
        "write" => "File written",
        "close_write" => "File written and closed",
        "modified" => "File content changed",
        "truncate" => "File truncated",
        "unlink" => "File removed",
        "mkdir" => "Directory created",
        "rmdir" => "Directory removed",
        "rename" => "File renamed",
        "chmod" => "Permissions changed",
        "chown" => "Owner changed",
        "setxattr" => "Extended attribute set",
        "removexattr" => "Extended attribute removed",
        "link" => "Hard link made",
        "symlink" => "Symbolic link made",
        "mknod" => "Special file made",
        "utimes" => "Times set",
        "fallocate" => "Space allocated",
        "attrib" => "Attributes changed",
        "added" => "File found added",
        "removed" => "File found removed",
        "changed" => "File found changed",
        "gap" => "Events lost",
        "suppressed" => "Events held back by a rate limit",
        _ => "File integrity event",
    }
}

/// A header field: `\` and `|` escaped, line breaks made spaces.
pub fn header_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// An extension value: `\` and `=` escaped, line breaks written `\n` and `\r`.
pub fn value_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// Milliseconds since the epoch of an RFC 3339 time.
fn millis(v: &Value) -> Option<String> {
    let t = OffsetDateTime::parse(v.as_str()?, &Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000).to_string())
}

/// A value as text: strings as they are, numbers written out, arrays joined with `,`.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(items) if !items.is_empty() => {
            Some(items.iter().filter_map(text).collect::<Vec<_>>().join(","))
        }
        _ => None,
    }
}

/// The CEF line of ECS document `doc`.
pub fn from_ecs(doc: &Value) -> String {
    let action = doc["event"]["action"].as_str().unwrap_or("unknown");
    let version = doc["agent"]["version"].as_str().unwrap_or("0");
    let mut out = format!(
        "CEF:0|fim|fim|{}|{}|{}|{}|",
        header_escape(version),
        header_escape(action),
        header_escape(name(action)),
        severity(doc)
    );
    let file = &doc["file"];
    let before = &doc["fim"]["before"];
    let old_path = &file["original"]["path"];
    let old_name = old_path
        .as_str()
        .and_then(|p| p.rsplit('/').next())
        .map(|n| Value::String(n.to_owned()))
        .unwrap_or(Value::Null);
    let message = doc["message"].clone();
    let count = doc["fim"]["suppressed"]["events"].clone();
    let pairs: Vec<(&str, Option<String>)> = vec![
        ("rt", millis(&doc["@timestamp"])),
        ("act", Some(action.to_owned())),
        ("externalId", text(&doc["event"]["id"])),
        ("cn1Label", Some("sequence".into())),
        ("cn1", text(&doc["event"]["sequence"])),
        ("fname", text(&file["name"])),
        ("filePath", text(&file["path"])),
        ("fileHash", text(&file["hash"]["sha256"])),
        ("fsize", text(&file["size"])),
        ("filePermission", text(&file["mode"])),
        ("fileId", text(&file["inode"])),
        ("fileType", text(&file["type"])),
        ("fileModificationTime", millis(&file["mtime"])),
        ("oldFilePath", text(old_path)),
        ("oldFileName", text(&old_name)),
        ("oldFileHash", text(&before["sha256"])),
        ("oldFileSize", text(&before["size"])),
        ("oldFilePermission", text(&before["mode"])),
        ("suid", text(&doc["user"]["id"])),
        ("spid", text(&doc["process"]["pid"])),
        ("sproc", text(&doc["process"]["name"])),
        ("dvchost", text(&doc["host"]["name"])),
        ("deviceExternalId", text(&doc["host"]["id"])),
        ("msg", text(&message)),
        ("cnt", text(&count)),
        ("cs1Label", Some("rule".into())),
        ("cs1", text(&doc["rule"]["name"])),
        ("cs2Label", Some("sensor".into())),
        ("cs2", text(&doc["fim"]["sensor"])),
        ("cs3Label", Some("changed".into())),
        ("cs3", text(&doc["fim"]["changed"])),
        ("cs4Label", Some("executable".into())),
        ("cs4", text(&doc["process"]["executable"])),
        ("cs5Label", Some("technique".into())),
        ("cs5", text(&doc["threat"]["technique"]["id"])),
        ("cs6Label", Some("package".into())),
        (
            "cs6",
            text(&doc["fim"]["package"]["digest"]).map(|d| {
                format!(
                    "{} {d}",
                    doc["fim"]["package"]["name"].as_str().unwrap_or_default()
                )
            }),
        ),
    ];
    let mut first = true;
    let mut labels_pending: Option<(&str, String)> = None;
    for (key, value) in pairs {
        let Some(value) = value else {
            // A label without its value says nothing.
            labels_pending = None;
            continue;
        };
        if key.ends_with("Label") {
            labels_pending = Some((key, value));
            continue;
        }
        for (k, v) in labels_pending.take().into_iter().chain([(key, value)]) {
            if !first {
                out.push(' ');
            }
            first = false;
            out.push_str(k);
            out.push('=');
            out.push_str(&value_escape(&v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn escapes_follow_the_context() {
        assert_eq!(header_escape("a|b\\c=d\ne"), "a\\|b\\\\c=d e");
        assert_eq!(value_escape("C:\\a=b|c\nx"), "C:\\\\a\\=b|c\\nx");
    }

    #[test]
    fn a_rename_maps_to_sentinels_keys_and_absent_values_are_left_out() {
        let doc = json!({
            "@timestamp": "2026-11-30T12:00:00.123456789Z",
            "event": {"action": "rename", "id": "0192-aa", "sequence": 7, "severity": 73},
            "agent": {"type": "fim", "version": "0.1.0"},
            "host": {"name": "web-1"},
            "file": {"path": "/etc/app/b=c.conf", "name": "b=c.conf", "size": 12,
                     "mode": "0644", "inode": "99", "type": "file",
                     "original": {"path": "/etc/app/a.conf"},
                     "hash": {"sha256": "ab"}},
            "fim": {"sensor": "ebpf-lsm", "changed": ["ctime"], "before": {"sha256": "ab", "size": 12, "mode": "0644"}},
            "process": {"pid": 42, "name": "mv", "executable": "/usr/bin/mv"},
            "user": {"id": "0"},
            "rule": {"name": "etc", "id": "etc"}
        });
        let line = from_ecs(&doc);
        assert_eq!(
            line,
            "CEF:0|fim|fim|0.1.0|rename|File renamed|8|rt=1796040000123 act=rename \
             externalId=0192-aa cn1Label=sequence cn1=7 fname=b\\=c.conf \
             filePath=/etc/app/b\\=c.conf fileHash=ab fsize=12 filePermission=0644 fileId=99 \
             fileType=file oldFilePath=/etc/app/a.conf oldFileName=a.conf oldFileHash=ab \
             oldFileSize=12 oldFilePermission=0644 suid=0 spid=42 sproc=mv dvchost=web-1 \
             cs1Label=rule cs1=etc cs2Label=sensor cs2=ebpf-lsm cs3Label=changed cs3=ctime \
             cs4Label=executable cs4=/usr/bin/mv"
        );
        assert_eq!(severity(&json!({"event": {"action": "gap"}})), 5);
    }
}
