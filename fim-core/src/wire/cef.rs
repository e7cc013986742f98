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

use std::borrow::Cow;

use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, SeqAccess, Visitor},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

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
    escape_value_into(text, &mut out);
    out
}

/// Appends `text`, escaped as an extension value, to `out`.
fn escape_value_into(text: &str, out: &mut String) {
    if !text.contains(['\\', '=', '\n', '\r']) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// Milliseconds since the epoch of an RFC 3339 time.
fn millis(v: &str) -> Option<String> {
    let t = OffsetDateTime::parse(v, &Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000).to_string())
}

/// A value as text: strings as they are, numbers written out, arrays joined with `,`.
/// A value CEF writes as text: a string, a number, or a list of them (joined with `,`).
#[derive(Debug, Default)]
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, a number or a list of them")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text((!v.is_empty()).then_some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text((!v.is_empty()).then(|| Cow::Owned(v.to_owned()))))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(if v { "true" } else { "false" }))))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items: Vec<Cow<'de, str>> = Vec::new();
                while let Some(Text(item)) = seq.next_element::<Text<'de>>()? {
                    items.extend(item);
                }
                Ok(Text(
                    (!items.is_empty()).then(|| Cow::Owned(items.join(","))),
                ))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl Text<'_> {
    fn get(&self) -> Option<Cow<'_, str>> {
        self.0.as_deref().map(Cow::Borrowed)
    }
    fn str(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// A part of the document that may be `null` (as `fim.before` of a new file): empty.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The parts of an ECS document CEF carries; everything else is skipped unread.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Doc<'a> {
    #[serde(rename = "@timestamp", borrow)]
    timestamp: Text<'a>,
    /// `@timestamp` in ms, when the caller knows it.
    #[serde(skip)]
    time_ms: Option<i128>,
    #[serde(borrow, deserialize_with = "null_default")]
    event: EventPart<'a>,
    #[serde(borrow, deserialize_with = "null_default")]
    agent: AgentPart<'a>,
    #[serde(borrow, deserialize_with = "null_default")]
    file: FilePart<'a>,
    #[serde(borrow, deserialize_with = "null_default")]
    fim: FimPart<'a>,
    #[serde(borrow, deserialize_with = "null_default")]
    user: Named<'a>,
    #[serde(borrow, deserialize_with = "null_default")]
    process: ProcessPart<'a>,
    #[serde(borrow, deserialize_with = "null_default")]
    host: Named<'a>,
    #[serde(borrow)]
    message: Text<'a>,
    #[serde(borrow, deserialize_with = "null_default")]
    rule: Named<'a>,
    #[serde(borrow, deserialize_with = "null_default")]
    threat: ThreatPart<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EventPart<'a> {
    #[serde(borrow)]
    action: Text<'a>,
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    sequence: Text<'a>,
    severity: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AgentPart<'a> {
    #[serde(borrow)]
    version: Text<'a>,
}

/// `name` and `id` (host, user, rule).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Named<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    id: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FilePart<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    path: Text<'a>,
    #[serde(borrow, deserialize_with = "null_default")]
    hash: Hash<'a>,
    #[serde(borrow)]
    size: Text<'a>,
    #[serde(borrow)]
    mode: Text<'a>,
    #[serde(borrow)]
    inode: Text<'a>,
    #[serde(borrow, rename = "type")]
    kind: Text<'a>,
    #[serde(borrow)]
    mtime: Text<'a>,
    #[serde(borrow, deserialize_with = "null_default")]
    original: Original<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Hash<'a> {
    #[serde(borrow)]
    sha256: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Original<'a> {
    #[serde(borrow)]
    path: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FimPart<'a> {
    #[serde(borrow, deserialize_with = "null_default")]
    before: Before<'a>,
    #[serde(borrow, deserialize_with = "null_default")]
    suppressed: Suppressed<'a>,
    #[serde(borrow)]
    sensor: Text<'a>,
    #[serde(borrow)]
    changed: Text<'a>,
    #[serde(borrow, deserialize_with = "null_default")]
    package: Package<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Before<'a> {
    #[serde(borrow)]
    sha256: Text<'a>,
    #[serde(borrow)]
    size: Text<'a>,
    #[serde(borrow)]
    mode: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Suppressed<'a> {
    #[serde(borrow)]
    events: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Package<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    digest: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ProcessPart<'a> {
    #[serde(borrow)]
    pid: Text<'a>,
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    executable: Text<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ThreatPart<'a> {
    #[serde(borrow, deserialize_with = "null_default")]
    technique: Technique<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Technique<'a> {
    #[serde(borrow)]
    id: Text<'a>,
}

/// The CEF line of the ECS document `json` (one rendered event), read without building a
/// JSON tree: only the fields CEF carries are looked at.
pub fn from_json(json: &[u8]) -> serde_json::Result<String> {
    let doc: Doc<'_> = serde_json::from_slice(json)?;
    Ok(from_doc(&doc))
}

/// [`from_json`] for an event that happened at `time_unix_ns` (its `@timestamp`, known
/// already: not parsed again).
pub fn from_json_at(json: &[u8], time_unix_ns: i128) -> serde_json::Result<String> {
    let mut doc: Doc<'_> = serde_json::from_slice(json)?;
    doc.time_ms = Some(time_unix_ns.div_euclid(1_000_000));
    Ok(from_doc(&doc))
}

/// The CEF severity (0..=10) of an event with `action` and ECS `event.severity`: from its
/// rules' severity (low 3, medium 5, high 8, critical 10), a gap or a rate limit's summary
/// 5, anything else 1.
fn severity(action: &str, ecs: Option<u64>) -> u8 {
    if let "gap" | "suppressed" = action {
        return 5;
    }
    match ecs {
        Some(99) => 10,
        Some(73) => 8,
        Some(47) => 5,
        Some(_) => 3,
        None => 1,
    }
}

fn from_doc(doc: &Doc<'_>) -> String {
    let action = doc.event.action.str().unwrap_or("unknown");
    let version = doc.agent.version.str().unwrap_or("0");
    let mut out = format!(
        "CEF:0|fim|fim|{}|{}|{}|{}|",
        header_escape(version),
        header_escape(action),
        header_escape(name(action)),
        severity(action, doc.event.severity)
    );
    let file = &doc.file;
    let before = &doc.fim.before;
    let old_path = file.original.path.get();
    let old_name = file
        .original
        .path
        .str()
        .and_then(|p| p.rsplit('/').next())
        .map(Cow::Borrowed);
    let pairs = [
        (
            "rt",
            doc.time_ms
                .map(|ms| ms.to_string())
                .or_else(|| doc.timestamp.str().and_then(millis))
                .map(Cow::Owned),
        ),
        ("act", Some(Cow::Borrowed(action))),
        ("externalId", doc.event.id.get()),
        ("cn1Label", Some(Cow::Borrowed("sequence"))),
        ("cn1", doc.event.sequence.get()),
        ("fname", file.name.get()),
        ("filePath", file.path.get()),
        ("fileHash", file.hash.sha256.get()),
        ("fsize", file.size.get()),
        ("filePermission", file.mode.get()),
        ("fileId", file.inode.get()),
        ("fileType", file.kind.get()),
        (
            "fileModificationTime",
            file.mtime.str().and_then(millis).map(Cow::Owned),
        ),
        ("oldFilePath", old_path),
        ("oldFileName", old_name),
        ("oldFileHash", before.sha256.get()),
        ("oldFileSize", before.size.get()),
        ("oldFilePermission", before.mode.get()),
        ("suid", doc.user.id.get()),
        ("spid", doc.process.pid.get()),
        ("sproc", doc.process.name.get()),
        ("dvchost", doc.host.name.get()),
        ("deviceExternalId", doc.host.id.get()),
        ("msg", doc.message.get()),
        ("cnt", doc.fim.suppressed.events.get()),
        ("cs1Label", Some(Cow::Borrowed("rule"))),
        ("cs1", doc.rule.name.get()),
        ("cs2Label", Some(Cow::Borrowed("sensor"))),
        ("cs2", doc.fim.sensor.get()),
        ("cs3Label", Some(Cow::Borrowed("changed"))),
        ("cs3", doc.fim.changed.get()),
        ("cs4Label", Some(Cow::Borrowed("executable"))),
        ("cs4", doc.process.executable.get()),
        ("cs5Label", Some(Cow::Borrowed("technique"))),
        ("cs5", doc.threat.technique.id.get()),
        ("cs6Label", Some(Cow::Borrowed("package"))),
        (
            "cs6",
            doc.fim.package.digest.str().map(|d| {
                Cow::Owned(format!(
                    "{} {d}",
                    doc.fim.package.name.str().unwrap_or_default()
                ))
            }),
        ),
    ];
    let mut first = true;
    let mut labels_pending: Option<(&str, Cow<'_, str>)> = None;
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
            escape_value_into(&v, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

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
            "fim": {"sensor": "ebpf-lsm", "changed": ["ctime"], "before": {"sha256": "ab", "size": 12, "mode": "0644"}, "after": null, "package": null},
            "process": {"pid": 42, "name": "mv", "executable": "/usr/bin/mv"},
            "user": {"id": "0"},
            "rule": {"name": "etc", "id": "etc"}
        });
        let line = from_json(&serde_json::to_vec(&doc).expect("JSON")).expect("parses");
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
        // Read from the rendered text (escapes included), the same line.
        let text = serde_json::to_vec(&doc).expect("JSON");
        assert_eq!(from_json(&text).expect("parses"), line);
        let at = 1_796_040_000_123_456_789;
        assert_eq!(from_json_at(&text, at).expect("parses"), line);
        // A new file: nothing before it.
        let mut new = doc.clone();
        new["fim"]["before"] = Value::Null;
        new["file"]["original"] = Value::Null;
        let text = serde_json::to_vec(&new).expect("JSON");
        let line = from_json(&text).expect("a null part is an empty one");
        assert!(
            line.contains("filePath=") && !line.contains("oldFileHash"),
            "{line}"
        );
        let mut quoted = doc.clone();
        quoted["file"]["path"] = json!("/etc/\"q\"\\é\n");
        let text = serde_json::to_vec(&quoted).expect("JSON");
        assert!(
            from_json(&text)
                .expect("parses")
                .contains("filePath=/etc/\"q\"\\\\é\\n "),
            "escaped characters come back as they were, then CEF-escaped"
        );
        assert_eq!(severity("gap", None), 5);
    }
}
