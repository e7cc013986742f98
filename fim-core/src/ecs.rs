//! Rendering an [`Event`] (a file's or a registry key's) as an Elastic Common Schema
//! document.
//!
//! ECS names where ECS has the field (`event.action`, `file.path`, `process.pid`,
//! `process.executable`, `user.id`, ...); everything else under `fim.*`. Paths that are not
//! UTF-8 are rendered with each invalid byte as `\xNN`, so the text is lossless and the
//! original bytes can be recovered.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    attrs::{Content, Snapshot, hex},
    event::{Action, Event, FileEvent, PathSource, ReportedPath, Stamp, Stamped},
    paths::render_bytes,
    registry::{DataType, RegistryEvent, State, ValueState},
    rules::Matched,
};

/// The version of the event schema (`schema/fim-event.schema.json`), in every event as
/// `fim.schema_version`. A field added is a minor version; one renamed, removed or given
/// another meaning, a major one.
pub const SCHEMA_VERSION: &str = "1.0.0";

/// The ECS version the field names follow (`ecs.version`).
pub const ECS_VERSION: &str = "8.11.0";

/// Who reports: this host and this agent, the same in every event of a run (ECS `host`,
/// `agent`).
#[derive(Clone, Debug, Serialize)]
pub struct Reporter {
    host: HostDoc,
    agent: AgentDoc,
}

#[derive(Clone, Debug, Serialize)]
struct HostDoc {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
struct AgentDoc {
    #[serde(rename = "type")]
    kind: &'static str,
    version: &'static str,
}

#[derive(Clone, Copy, Debug, Serialize)]
struct EcsDoc {
    version: &'static str,
}

impl Reporter {
    /// The host named `name`, with its stable id (`/etc/machine-id`) when it has one.
    pub fn new(name: String, id: Option<String>) -> Self {
        Self {
            host: HostDoc { name, id },
            agent: AgentDoc {
                kind: "fim",
                version: env!("CARGO_PKG_VERSION"),
            },
        }
    }

    /// The host's name.
    pub fn host_name(&self) -> &str {
        &self.host.name
    }

    /// Inserts `ecs`, `host` and `agent` into `doc`, and `fim.schema_version`.
    fn stamp_doc(&self, doc: &mut Value) {
        doc["ecs"] = json!(EcsDoc {
            version: ECS_VERSION
        });
        doc["host"] = json!(self.host);
        doc["agent"] = json!(self.agent);
        doc["fim"]["schema_version"] = json!(SCHEMA_VERSION);
    }
}

fn file_type(mode: u32) -> &'static str {
    use fim_common::mode::*;
    match mode & S_IFMT {
        S_IFREG => "file",
        S_IFDIR => "dir",
        S_IFLNK => "symlink",
        S_IFIFO => "fifo",
        S_IFSOCK => "socket",
        S_IFCHR => "char_device",
        S_IFBLK => "block_device",
        _ => "unknown",
    }
}

fn source_name(s: PathSource) -> &'static str {
    match s {
        PathSource::KernelObject => "kernel_object",
        PathSource::SyscallString => "syscall_string",
        PathSource::Scan => "scan",
        PathSource::FileHandle => "file_handle",
    }
}

/// `fim.path` and `fim.source_path`: where a path came from, and whether it was cut short.
#[derive(Serialize)]
struct PathInfo {
    source: &'static str,
    truncated: bool,
}

fn path_info(p: &ReportedPath) -> PathInfo {
    PathInfo {
        source: source_name(p.source),
        truncated: p.truncated,
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `file.original`: a renamed file's former path.
#[derive(Serialize)]
struct Original {
    path: String,
}

/// `fim.xattr`: the extended attribute set or removed.
#[derive(Serialize)]
struct Xattr {
    name: String,
}

#[derive(Serialize)]
struct Sha256 {
    sha256: String,
}

/// ECS `file`: the object as it is after the event (values read from the file take
/// precedence over what the sensor reported).
#[derive(Serialize)]
struct FileObject {
    path: String,
    name: String,
    directory: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    inode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    file_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    original: Option<Original>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ctime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<Sha256>,
}

/// `fim.requested`: what the caller asked for (chmod/chown/mkdir/create arguments).
#[derive(Serialize, Default)]
struct Requested {
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
}

impl Requested {
    fn is_empty(&self) -> bool {
        self.mode.is_none() && self.uid.is_none() && self.gid.is_none() && self.path.is_none()
    }
}

#[derive(Serialize)]
struct Fallocate {
    mode: Vec<&'static str>,
    length: u64,
}

/// `fim.*`: everything ECS has no field for.
#[derive(Serialize)]
struct FimObject<'a> {
    schema_version: &'static str,
    sensor: &'static str,
    /// Every rule the event falls under, when there are several (`rule` names the first).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rules: Vec<&'a str>,
    path: PathInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_path: Option<PathInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    syscall_nr: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup_id: Option<u64>,
    #[serde(skip_serializing_if = "Requested::is_empty")]
    requested: Requested,
    #[serde(skip_serializing_if = "is_false")]
    merged: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<Vec<&'static str>>,
    /// Present (maybe `null`) whenever the engine enriched the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    before: Option<Option<SnapshotDoc<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    after: Option<Option<SnapshotDoc<'a>>>,
    /// The content after against the digest its package recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    package: Option<PackageDoc<'a>>,
    /// The package manager that made the change (itself or through a process it started).
    #[serde(skip_serializing_if = "Option::is_none")]
    package_manager: Option<PackageManagerDoc<'a>>,
    #[serde(skip_serializing_if = "is_false")]
    replaced_target: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xattr: Option<Xattr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_written: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fallocate: Option<Fallocate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    truncate_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rename_flags: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "is_false")]
    open_truncated: bool,
    #[serde(skip_serializing_if = "is_false")]
    no_follow: bool,
    #[serde(skip_serializing_if = "is_false")]
    process_exited: bool,
}

#[derive(Serialize)]
struct Id {
    id: u32,
}

#[derive(Serialize)]
struct Pid {
    pid: u32,
}

/// ECS `process`: only the ids when the process was gone before it could be looked up.
#[derive(Serialize)]
struct ProcessObject<'a> {
    pid: u32,
    thread: Id,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<Pid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entity_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    executable: Option<String>,
}

/// ECS `user` and `group`: real and effective ids.
#[derive(Serialize)]
struct Ids {
    id: String,
    effective: IdText,
}

#[derive(Serialize)]
struct IdText {
    id: String,
}

fn ids(real: u32, effective: u32) -> Ids {
    Ids {
        id: real.to_string(),
        effective: IdText {
            id: effective.to_string(),
        },
    }
}

/// ECS `event`: what happened, and its place in the output.
#[derive(Serialize)]
struct EventObject {
    kind: &'static str,
    category: [&'static str; 1],
    #[serde(rename = "type")]
    event_type: [&'static str; 1],
    action: &'static str,
    module: &'static str,
    dataset: &'static str,
    sequence: u64,
    id: uuid::fmt::Hyphenated,
    /// The highest severity of the rules the event falls under.
    #[serde(skip_serializing_if = "Option::is_none")]
    severity: Option<u8>,
}

fn event_object(ev: &FileEvent, stamp: &Stamp) -> EventObject {
    event_of("file", ev.action, stamp)
}

/// The `event` object of an event about `category` (`file`, `registry`).
fn event_of(category: &'static str, action: Action, stamp: &Stamp) -> EventObject {
    EventObject {
        kind: "event",
        category: [category],
        event_type: [action.ecs_type()],
        action: action.as_str(),
        module: "fim",
        dataset: if category == "file" {
            "fim.file"
        } else {
            "fim.registry"
        },
        sequence: stamp.sequence,
        id: stamp.id.hyphenated(),
        severity: None,
    }
}

/// The ECS document of a file event.
#[derive(Serialize)]
struct FileDoc<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    ecs: EcsDoc,
    host: &'a HostDoc,
    agent: &'a AgentDoc,
    event: EventObject,
    file: FileObject,
    fim: FimObject<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<ProcessObject<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<Ids>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<Ids>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<RuleObject<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threat: Option<Threat<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<&'a str>,
}

/// The tag of a change a package manager made.
pub const PACKAGE_ACTIVITY: &str = "package_activity";

/// `fim.package_manager`.
#[derive(Serialize)]
struct PackageManagerDoc<'a> {
    name: &'a str,
    pid: u32,
}

/// `fim.package`: the package that installed the file, and whether the content is what it
/// recorded.
#[derive(Serialize)]
struct PackageDoc<'a> {
    name: &'a str,
    digest: &'static str,
}

/// ECS `rule`: the most specific rule the event falls under (every one: `fim.rules`).
#[derive(Serialize)]
struct RuleObject<'a> {
    name: &'a str,
    id: &'a str,
}

/// ECS `threat`: the ATT&CK techniques of the event's rules.
#[derive(Serialize)]
struct Threat<'a> {
    framework: &'static str,
    technique: Technique<'a>,
}

#[derive(Serialize)]
struct Technique<'a> {
    id: &'a [String],
}

/// Writes the ECS document for one event, as `by` reports it, as one line of JSON
/// (without the newline).
pub fn write_ecs(out: impl std::io::Write, ev: &Stamped, by: &Reporter) -> serde_json::Result<()> {
    let Stamped {
        stamp,
        event,
        rules,
    } = ev;
    // The common case is written as it is built; the rare ones are built as values.
    let mut doc = match event {
        Event::File(event) => match (&event.gap, &event.suppressed) {
            (Some(gap), _) => gap_doc(event, gap, stamp),
            (None, Some(s)) => suppressed_doc(event, s, stamp),
            (None, None) => {
                return serde_json::to_writer(out, &file_doc(event, stamp, rules.as_deref(), by));
            }
        },
        Event::Registry(event) => registry_doc(event, stamp, rules.as_deref()),
    };
    by.stamp_doc(&mut doc);
    serde_json::to_writer(out, &doc)
}

/// The ECS document for one event, as a JSON value, checked against the event schema
/// (`schema/fim-event.schema.json`): every document a unit test renders follows it.
#[cfg(test)]
pub fn to_ecs(ev: &Stamped) -> Value {
    let mut text = Vec::new();
    let by = Reporter::new("test-host".into(), Some("0123456789abcdef".into()));
    write_ecs(&mut text, ev, &by).expect("serializable");
    let doc: Value = serde_json::from_slice(&text).expect("valid JSON");
    let errors = schema_errors(&doc);
    assert!(errors.is_empty(), "{errors:?} in {doc}");
    doc
}

/// Why `doc` does not follow the event schema (nothing: it does).
#[cfg(test)]
fn schema_errors(doc: &Value) -> Vec<String> {
    static VALIDATOR: std::sync::LazyLock<jsonschema::Validator> = std::sync::LazyLock::new(|| {
        let schema: Value =
            serde_json::from_str(include_str!("../../schema/fim-event.schema.json"))
                .expect("the schema is JSON");
        jsonschema::validator_for(&schema).expect("the schema is a JSON Schema")
    });
    VALIDATOR
        .iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

/// A registry value's data for ECS `registry.data`: its type, and its data when kept.
fn registry_data(v: &ValueState) -> Value {
    let mut doc = json!({ "type": DataType::from_raw(v.kind).as_str() });
    if let Some(d) = v.data() {
        doc["strings"] = json!(d.strings());
        doc["bytes"] = json!(hex(&d.bytes));
    }
    doc
}

/// What a registry key or value was or is, for `fim.before` / `fim.after`.
fn registry_state(st: &State) -> Value {
    match st {
        State::Value(v) => {
            let mut doc = registry_data(v);
            doc["size"] = json!(v.size);
            doc["sha256"] = json!(hex(&v.sha256));
            doc
        }
        State::Key {
            last_write,
            security,
        } => {
            let mut doc = json!({
                "last_write": time_ns(crate::registry::filetime_to_unix_ns(*last_write)),
            });
            if let Some(sd) = security {
                doc["security_sha256"] = json!(hex(sd));
            }
            doc
        }
    }
}

/// A change to a registry key or value: ECS `registry.*` (the data now, or the data that
/// was there for a removal), what it was and is under `fim.*`, and its rules' fields.
fn registry_doc(ev: &RegistryEvent, stamp: &Stamp, rules: Option<&Matched>) -> Value {
    let l = &ev.location;
    let mut registry = Map::new();
    registry.insert("hive".into(), json!(l.hive));
    registry.insert("key".into(), json!(l.key));
    if let Some(v) = &l.value {
        registry.insert("value".into(), json!(v));
    }
    registry.insert("path".into(), json!(l.path()));
    if let Some(State::Value(v)) = ev.after.as_ref().or(ev.before.as_ref()) {
        registry.insert("data".into(), registry_data(v));
    }
    let mut fim = Map::new();
    fim.insert("origin".into(), json!(ev.origin.as_str()));
    fim.insert("sensor".into(), json!(ev.sensor));
    fim.insert("registry_view".into(), json!(ev.view.as_str()));
    if ev.action == Action::Changed {
        fim.insert("changed".into(), json!(ev.changed));
    }
    if let Some(b) = &ev.before {
        fim.insert("before".into(), registry_state(b));
    }
    if let Some(a) = &ev.after {
        fim.insert("after".into(), registry_state(a));
    }
    let mut event = json!(event_of("registry", ev.action, stamp));
    if let Some(m) = rules {
        event["severity"] = json!(m.severity.ecs());
        if m.rules.len() > 1 {
            fim.insert(
                "rules".into(),
                json!(m.rules.iter().map(|(name, _)| name).collect::<Vec<_>>()),
            );
        }
    }
    let mut doc = json!({
        "@timestamp": time_ns(ev.time_unix_ns),
        "event": event,
        "registry": registry,
        "fim": fim,
    });
    if let Some(m) = rules {
        add_rule_fields(&mut doc, m);
    }
    doc
}

/// ECS `rule` (the most specific rule), `threat` (their techniques) and `tags` of a
/// document built as a value (the file document writes them from its struct).
fn add_rule_fields(doc: &mut Value, m: &Matched) {
    let (name, id) = m.rules.first().cloned().unwrap_or_default();
    doc["rule"] = json!({ "name": name, "id": id });
    if !m.techniques.is_empty() {
        doc["threat"] = json!({ "framework": "MITRE ATT&CK", "technique": { "id": m.techniques } });
    }
    if !m.tags.is_empty() {
        doc["tags"] = json!(m.tags);
    }
}

fn file_doc<'a>(
    ev: &'a FileEvent,
    stamp: &Stamp,
    rules: Option<&'a Matched>,
    by: &'a Reporter,
) -> FileDoc<'a> {
    // A Windows path (`C:\dir\name`, from the Windows build) splits at its backslashes.
    let p = &ev.path.bytes;
    let windows = (p.len() >= 3 && p[1] == b':' && p[2] == b'\\') || p.starts_with(b"\\\\");
    let sep = if windows { b'\\' } else { b'/' };
    let slash = p.iter().rposition(|&b| b == sep).unwrap_or(0);
    // Windows names are Unicode (fim converts them from UTF-16): shown as they are, without
    // the escaping of backslashes that Linux's arbitrary bytes need.
    let render = |b: &[u8]| {
        if windows {
            String::from_utf8_lossy(b).into_owned()
        } else {
            render_bytes(b)
        }
    };
    let mut file = FileObject {
        path: render(p),
        name: render(&p[slash + 1..]),
        directory: render(match (slash, windows) {
            (0, false) => b"/",
            (_, true) if slash == 2 => &p[..3],
            _ => &p[..slash],
        }),
        inode: ev.inode.map(|i| i.ino.to_string()),
        device: ev.inode.map(|i| format!("{}:{}", i.major, i.minor)),
        file_type: ev.inode.map(|i| file_type(i.mode)),
        original: None,
        target_path: None,
        size: None,
        mode: None,
        uid: None,
        gid: None,
        mtime: None,
        ctime: None,
        hash: None,
    };
    match (ev.action, &ev.source) {
        (Action::Rename, Some(old)) => {
            file.original = Some(Original {
                path: render_bytes(&old.bytes),
            });
        }
        (Action::Link | Action::Symlink, Some(target)) => {
            file.target_path = Some(render_bytes(&target.bytes));
        }
        _ => {}
    }
    if let Some(after) = ev.integrity.as_ref().and_then(|i| i.after.as_ref()) {
        // Values read from the file after the event take precedence over syscall arguments.
        let a = &after.attrs;
        file.file_type = Some(a.file_type.as_str());
        file.size = Some(a.size);
        if !windows {
            file.mode = Some(format!("{:04o}", a.mode));
            file.uid = Some(a.uid.to_string());
            file.gid = Some(a.gid.to_string());
            file.inode = Some(a.ino.to_string());
            file.device = Some(format!("{}:{}", a.dev_major, a.dev_minor));
        }
        file.mtime = Some(time_ns(i128::from(a.mtime_ns)));
        file.ctime = Some(time_ns(i128::from(a.ctime_ns)));
        file.hash = after.sha256().map(|d| Sha256 { sha256: hex(d) });
    }
    // What the caller asked for; the file's actual values after the event are in `file.*`
    // and `fim.after`.
    let requested = Requested {
        mode: ev.mode.map(|m| format!("{:04o}", m & 0o7777)),
        uid: ev.owner_uid.map(|u| u.to_string()),
        gid: ev.owner_gid.map(|g| g.to_string()),
        path: ev.requested_path.as_ref().map(|p| render_bytes(&p.bytes)),
    };
    let integrity = ev.integrity.as_ref();
    let exited = ev.process.as_ref().is_some_and(|p| p.exited);
    let mut fim = FimObject {
        schema_version: SCHEMA_VERSION,
        rules: Vec::new(),
        sensor: ev.sensor,
        path: path_info(&ev.path),
        source_path: ev.source.as_ref().map(path_info),
        syscall_nr: ev.syscall_nr,
        cgroup_id: ev.process.as_ref().map(|p| p.cgroup_id),
        requested,
        merged: ev.merged,
        origin: integrity.map(|i| i.origin.as_str()),
        changed: integrity.map(|i| i.changed.iter().map(|a| a.as_str()).collect()),
        before: integrity.map(|i| i.before.as_ref().map(|b| snapshot_doc(b, windows))),
        after: integrity.map(|i| i.after.as_ref().map(|a| snapshot_doc(a, windows))),
        package_manager: ev
            .package_manager
            .as_deref()
            .map(|(name, pid)| PackageManagerDoc { name, pid: *pid }),
        package: integrity
            .and_then(|i| i.after.as_ref())
            .and_then(|a| a.package.as_ref())
            .map(|p| PackageDoc {
                name: &p.package,
                digest: if p.matches {
                    "matches package"
                } else {
                    "differs from package"
                },
            }),
        replaced_target: integrity.is_some_and(|i| i.replaced_target),
        note: integrity.and_then(|i| i.note.as_deref()),
        xattr: ev.xattr_name.as_ref().map(|n| Xattr {
            name: render_bytes(n),
        }),
        bytes_written: ev.bytes_written,
        fallocate: ev.fallocate.map(|(mode, length)| {
            const MODES: [(u32, &str); 6] = [
                (0x01, "keep_size"),
                (0x02, "punch_hole"),
                (0x08, "collapse_range"),
                (0x10, "zero_range"),
                (0x20, "insert_range"),
                (0x40, "unshare_range"),
            ];
            Fallocate {
                mode: MODES
                    .iter()
                    .filter(|(bit, _)| mode & bit != 0)
                    .map(|(_, n)| *n)
                    .collect(),
                length,
            }
        }),
        truncate_length: ev.truncate_length,
        rename_flags: (ev.action == Action::Rename).then(|| {
            [(1u32, "noreplace"), (2, "exchange"), (4, "whiteout")]
                .into_iter()
                .filter(|(bit, _)| ev.rename_flags & bit != 0)
                .map(|(_, name)| name)
                .collect()
        }),
        open_truncated: ev.open_truncated,
        no_follow: ev.no_follow,
        // Gone before it could be looked up: say so, invent nothing.
        process_exited: exited,
    };
    let process = ev.process.as_ref().map(|p| {
        let known = !p.exited;
        ProcessObject {
            pid: p.pid,
            thread: Id { id: p.tid },
            name: known.then_some(p.name.as_str()),
            parent: known.then_some(Pid { pid: p.ppid }),
            entity_id: known.then(|| entity_id(p.pid, p.start_boot_ns)),
            executable: p
                .executable
                .as_ref()
                .filter(|_| known)
                .map(|e| render_bytes(e)),
        }
    });
    let known = ev.process.as_ref().filter(|p| !p.exited);
    let mut event = event_object(ev, stamp);
    event.severity = rules.map(|m| m.severity.ecs());
    if let Some(m) = rules
        && m.rules.len() > 1
    {
        fim.rules = m.rules.iter().map(|(name, _)| name.as_str()).collect();
    }
    FileDoc {
        timestamp: time_ns(ev.time_unix_ns),
        ecs: EcsDoc {
            version: ECS_VERSION,
        },
        host: &by.host,
        agent: &by.agent,
        event,
        file,
        fim,
        process,
        user: known.map(|p| ids(p.uid, p.euid)),
        group: known.map(|p| ids(p.gid, p.egid)),
        rule: rules
            .and_then(|m| m.rules.first())
            .map(|(name, id)| RuleObject { name, id }),
        threat: rules.filter(|m| !m.techniques.is_empty()).map(|m| Threat {
            framework: "MITRE ATT&CK",
            technique: Technique { id: &m.techniques },
        }),
        tags: rules
            .map_or(&[][..], |m| m.tags.as_slice())
            .iter()
            .map(String::as_str)
            .chain(ev.package_manager.is_some().then_some(PACKAGE_ACTIVITY))
            .collect(),
    }
}

/// A gap: operations lost before they were reported, when, where, and why. No `file`: it
/// is about the watched roots, which the repair rescan that follows goes through.
fn gap_doc(ev: &FileEvent, gap: &crate::event::Gap, stamp: &Stamp) -> Value {
    let count = if gap.unknown_more {
        format!("at least {}", gap.operations)
    } else {
        gap.operations.to_string()
    };
    let causes: Map<String, Value> = gap
        .causes
        .iter()
        .map(|(c, n)| ((*c).to_owned(), json!(n)))
        .collect();
    json!({
        "@timestamp": time_ns(ev.time_unix_ns),
        "event": event_object(ev, stamp),
        "message": if gap.causes.iter().any(|(c, _)| *c == crate::event::SPOOL_FULL) {
            format!(
                "{count} events were not delivered to this destination: its spool reached its size cap and let the oldest go"
            )
        } else {
            format!(
                "{count} file operations were lost before they were reported; the watched paths are rescanned to report what they changed"
            )
        },
        "fim": {
            "gap": {
                "operations": gap.operations,
                "unknown_more": gap.unknown_more,
                "causes": causes,
                "start": time_ns(gap.since_unix_ns),
                "end": time_ns(ev.time_unix_ns),
                "roots": gap.roots.iter().map(|r| render_bytes(r)).collect::<Vec<_>>(),
            },
        },
    })
}

/// A rate limit's summary: how many events its rule held back in one window, when, and
/// the last path; with the rule's fields, like the events it stands for.
fn suppressed_doc(ev: &FileEvent, s: &crate::ratelimit::Summary, stamp: &Stamp) -> Value {
    let m = &s.matched;
    let name = m
        .rules
        .first()
        .map(|(name, _)| name.as_str())
        .unwrap_or_default();
    let window = format!("{}s", s.window.as_secs_f64());
    let mut event = json!(event_object(ev, stamp));
    event["severity"] = json!(m.severity.ecs());
    let mut doc = json!({
        "@timestamp": time_ns(ev.time_unix_ns),
        "event": event,
        "message": format!(
            "rule `{name}`: {} more events were held back by its rate limit ({} per {window}); the last was on {}",
            s.held,
            s.limit,
            render_bytes(&s.last_path)
        ),
        "fim": {
            "suppressed": {
                "events": s.held,
                "limit": s.limit,
                "window": window,
                "start": time_ns(s.first_ns),
                "end": time_ns(s.last_ns),
                "last_path": render_bytes(&s.last_path),
            },
        },
    });
    add_rule_fields(&mut doc, m);
    doc
}

/// `process.entity_id`: the pid and the start time in clock ticks since boot, the precision
/// `/proc` offers, so an event attributed from the kernel and one attributed from `/proc`
/// name the same process the same way (and pid reuse gives a new id).
pub fn entity_id(pid: u32, start_boot_ns: u64) -> String {
    format!("{pid}-{}", start_boot_ns / PROC_TICK_NS)
}

/// One clock tick of `/proc` (Linux's `USER_HZ`, 100 on every architecture fim builds for;
/// the Linux daemon's tests check it against `sysconf(_SC_CLK_TCK)`).
pub const PROC_TICK_NS: u64 = 10_000_000;

fn time_ns(ns: i128) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ns)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Every attribute of one observation, for `fim.before` / `fim.after`.
#[derive(Serialize)]
struct SnapshotDoc<'a> {
    #[serde(rename = "type")]
    file_type: &'static str,
    size: u64,
    // Unix only: a Windows file (`C:\...`) has none of these.
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inode: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    nlink: u64,
    mtime: String,
    ctime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    symlink_target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acl_access: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acl_default: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capability: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    xattrs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_status: Option<String>,
}

fn snapshot_doc(s: &Snapshot, windows: bool) -> SnapshotDoc<'_> {
    let a = &s.attrs;
    let unix = !windows;
    SnapshotDoc {
        file_type: a.file_type.as_str(),
        size: a.size,
        mode: unix.then(|| format!("{:04o}", a.mode)),
        uid: unix.then_some(a.uid),
        gid: unix.then_some(a.gid),
        inode: unix.then_some(a.ino),
        device: unix.then(|| format!("{}:{}", a.dev_major, a.dev_minor)),
        nlink: a.nlink,
        mtime: time_ns(i128::from(a.mtime_ns)),
        ctime: time_ns(i128::from(a.ctime_ns)),
        symlink_target: a.symlink_target.as_ref().map(|t| render_bytes(t)),
        acl_access: a.acl_access.as_deref(),
        acl_default: a.acl_default.as_deref(),
        capability: a.capability.as_deref(),
        xattrs: a
            .xattrs
            .iter()
            .map(|(k, v)| (render_bytes(k), hex(v)))
            .collect(),
        sha256: match &s.content {
            Some(Content::Sha256(d)) => Some(hex(d)),
            _ => None,
        },
        hash_status: match &s.content {
            Some(Content::NotHashed(why)) => Some(why.reason()),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_id_has_proc_precision() {
        let tick = PROC_TICK_NS;
        // The kernel's nanoseconds and /proc's ticks name the same start.
        assert_eq!(entity_id(5, 12_345 * tick + 7), "5-12345");
        assert_eq!(
            entity_id(5, 12_345 * tick),
            entity_id(5, 12_345 * tick + tick - 1)
        );
    }

    #[test]
    fn a_document_names_both_paths_the_values_after_and_the_process() {
        use crate::event::{Integrity, Origin, Process};
        let mut ev = FileEvent::new(
            Action::Rename,
            ReportedPath::new(b"/etc/b\xe9".to_vec(), PathSource::KernelObject),
            "ebpf-lsm",
        );
        ev.source = Some(ReportedPath::new(
            b"/etc/a".to_vec(),
            PathSource::KernelObject,
        ));
        ev.rename_flags = 1;
        ev.integrity = Some(Integrity::unobserved(Origin::Realtime, None).into());
        let mut p = Process {
            pid: 10,
            tid: 11,
            ppid: 1,
            uid: 1000,
            euid: 0,
            gid: 100,
            egid: 0,
            name: "mv".into(),
            executable: Some(b"/usr/bin/mv".to_vec()),
            cgroup_id: 7,
            start_boot_ns: 0,
            exited: false,
        };
        ev.process = Some(p.clone());
        let id = uuid::Uuid::from_u128(0x0192_7e1a_b2c3_7d4e_8f90_1234_5678_9abc);
        let stamped = |event: &FileEvent, sequence| Stamped {
            stamp: Stamp { sequence, id },
            event: Event::File(event.clone()),
            rules: None,
        };
        let mut text = Vec::new();
        let by = Reporter::new("test-host".into(), Some("0123456789abcdef".into()));
        write_ecs(&mut text, &stamped(&ev, 3), &by).expect("written");
        let v: Value = serde_json::from_slice(&text).expect("JSON");
        assert_eq!(
            v["host"],
            json!({"name": "test-host", "id": "0123456789abcdef"})
        );
        assert_eq!(
            v["agent"],
            json!({"type": "fim", "version": env!("CARGO_PKG_VERSION")})
        );
        assert_eq!(v["ecs"]["version"], ECS_VERSION);
        assert_eq!(v["fim"]["schema_version"], SCHEMA_VERSION);
        assert_eq!(v["event"]["action"], "rename");
        assert_eq!(v["event"]["sequence"], 3);
        assert_eq!(v["event"]["id"], "01927e1a-b2c3-7d4e-8f90-123456789abc");
        assert_eq!(v["file"]["path"], "/etc/b\\xe9");
        assert_eq!(v["file"]["name"], "b\\xe9");
        assert_eq!(v["file"]["directory"], "/etc");
        assert_eq!(v["file"]["original"]["path"], "/etc/a");
        assert_eq!(v["fim"]["rename_flags"], json!(["noreplace"]));
        assert_eq!(v["fim"]["before"], Value::Null);
        assert!(v["fim"].as_object().expect("fim").contains_key("after"));
        assert_eq!(v["fim"]["changed"], json!([]));
        assert_eq!(v["process"]["executable"], "/usr/bin/mv");
        assert_eq!(v["user"]["effective"]["id"], "0");
        assert_eq!(v["fim"]["cgroup_id"], 7);
        assert!(v["fim"].get("merged").is_none() && v["fim"].get("requested").is_none());
        assert_eq!(v, to_ecs(&stamped(&ev, 3)));
        // Gone before it could be looked up: only the ids, and saying so.
        p.exited = true;
        ev.process = Some(p);
        let v = to_ecs(&stamped(&ev, 4));
        assert_eq!(v["process"], json!({ "pid": 10, "thread": { "id": 11 } }));
        assert_eq!(v["fim"]["process_exited"], true);
        assert!(v.get("user").is_none());
    }

    #[test]
    fn a_registry_change_is_rendered_in_ecs_registry_fields() {
        use crate::{
            event::Origin,
            registry::{Location, View},
        };
        let utf16z = |s: &str| -> Vec<u8> {
            s.encode_utf16()
                .chain([0])
                .flat_map(u16::to_le_bytes)
                .collect()
        };
        let good = ValueState::of(1, &utf16z("C:\\good.exe"));
        let evil = ValueState::of(1, &utf16z("C:\\evil.exe"));
        let ev = RegistryEvent {
            action: Action::Changed,
            time_unix_ns: 1_700_000_000_000_000_000,
            location: Location {
                hive: "HKLM".into(),
                key: "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run".into(),
                value: Some("Updater".into()),
            },
            view: View::Wow32,
            before: Some(State::Value(good.clone())),
            after: Some(State::Value(evil.clone())),
            changed: vec!["sha256"],
            origin: Origin::Rescan,
            sensor: "registry",
        };
        let matched = Matched {
            rules: vec![
                ("run-keys".into(), "FIM-RUN".into()),
                ("software".into(), "FIM-SW".into()),
            ],
            severity: crate::config::Severity::High,
            techniques: vec!["T1547.001".into()],
            tags: vec!["persistence".into()],
            compare: None,
            rate: None,
        };
        let stamped = Stamped {
            stamp: Stamp {
                sequence: 9,
                id: uuid::Uuid::from_u128(1),
            },
            event: ev.clone().into(),
            rules: Some(std::sync::Arc::new(matched)),
        };
        let mut text = Vec::new();
        let by = Reporter::new("test-host".into(), Some("0123456789abcdef".into()));
        write_ecs(&mut text, &stamped, &by).expect("written");
        let v: Value = serde_json::from_slice(&text).expect("JSON");
        assert_eq!(v, to_ecs(&stamped));
        assert_eq!(v["host"]["name"], "test-host");
        assert_eq!(v["fim"]["schema_version"], SCHEMA_VERSION);
        assert_eq!(v["event"]["category"][0], "registry");
        assert_eq!(v["event"]["type"][0], "change");
        assert_eq!(v["event"]["dataset"], "fim.registry");
        assert_eq!(v["event"]["sequence"], 9);
        assert_eq!(v["event"]["severity"], 73);
        assert_eq!(v["registry"]["hive"], "HKLM");
        assert_eq!(v["registry"]["value"], "Updater");
        assert_eq!(
            v["registry"]["path"],
            "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run\\Updater"
        );
        assert_eq!(v["registry"]["data"]["type"], "REG_SZ");
        assert_eq!(v["registry"]["data"]["strings"][0], "C:\\evil.exe");
        assert_eq!(v["fim"]["before"]["strings"][0], "C:\\good.exe");
        assert_eq!(v["fim"]["before"]["sha256"], hex(&good.sha256));
        assert_eq!(v["fim"]["after"]["size"], evil.size);
        assert_eq!(v["fim"]["changed"], json!(["sha256"]));
        assert_eq!(v["fim"]["registry_view"], "32");
        assert_eq!(v["fim"]["origin"], "rescan");
        assert_eq!(v["fim"]["rules"], json!(["run-keys", "software"]));
        assert_eq!(v["rule"], json!({"name": "run-keys", "id": "FIM-RUN"}));
        assert_eq!(v["threat"]["technique"]["id"], json!(["T1547.001"]));
        assert_eq!(v["tags"], json!(["persistence"]));
        assert!(v.get("file").is_none());

        // A key's creation: its last-write time and descriptor digest; large data is
        // told by size and digest only.
        let key = RegistryEvent {
            action: Action::Added,
            location: Location {
                value: None,
                ..ev.location.clone()
            },
            before: None,
            after: Some(State::Key {
                last_write: 133_485_408_000_000_000,
                security: Some([2; 32]),
            }),
            changed: Vec::new(),
            ..ev.clone()
        };
        let v = to_ecs(&stamped_registry(key));
        assert_eq!(v["event"]["type"][0], "creation");
        assert_eq!(v["fim"]["after"]["last_write"], "2024-01-01T00:00:00Z");
        assert_eq!(v["fim"]["after"]["security_sha256"], hex(&[2; 32]));
        assert!(v["registry"].get("data").is_none());
        assert!(v["fim"].get("changed").is_none());
        let big = RegistryEvent {
            action: Action::Removed,
            before: Some(State::Value(ValueState::of(3, &[0; 5000]))),
            after: None,
            ..ev
        };
        let v = to_ecs(&stamped_registry(big));
        assert_eq!(v["registry"]["data"], json!({"type": "REG_BINARY"}));
        assert_eq!(v["fim"]["before"]["size"], 5000);
    }

    #[test]
    fn a_windows_path_is_split_at_its_backslashes() {
        for (path, directory, name) in [
            ("C:\\Windows\\win.ini", "C:\\Windows", "win.ini"),
            ("C:\\autoexec.bat", "C:\\", "autoexec.bat"),
            ("\\\\server\\share\\x.exe", "\\\\server\\share", "x.exe"),
        ] {
            let mut ev = FileEvent::new(
                Action::Added,
                ReportedPath::new(path.as_bytes().to_vec(), PathSource::Scan),
                "file-poll",
            );
            let after = Snapshot {
                attrs: crate::filepoll::windows_attrs(
                    3,
                    0,
                    0,
                    1,
                    Some("O:BAD:(A;;FA;;;SY)".into()),
                ),
                content: Some(Content::Sha256([1; 32])),
                package: None,
            };
            ev.integrity = Some(Box::new(crate::event::Integrity {
                after: Some(after),
                ..crate::event::Integrity::unobserved(crate::event::Origin::Rescan, None)
            }));
            let v = to_ecs(&Stamped {
                stamp: Stamp {
                    sequence: 1,
                    id: uuid::Uuid::from_u128(3),
                },
                event: ev.into(),
                rules: None,
            });
            assert_eq!(v["file"]["path"], path);
            assert_eq!(v["file"]["directory"], directory, "{path}");
            assert_eq!(v["file"]["name"], name, "{path}");
            // No Unix values on a Windows file: its owner and DACL are the ACL.
            for unix in ["mode", "uid", "gid", "inode", "device"] {
                assert!(v["file"].get(unix).is_none(), "{unix} in {v}");
                assert!(v["fim"]["after"].get(unix).is_none(), "{unix} in {v}");
            }
            assert_eq!(v["fim"]["after"]["acl_access"], "O:BAD:(A;;FA;;;SY)");
            assert_eq!(v["file"]["size"], 3);
        }
    }

    fn stamped_registry(ev: RegistryEvent) -> Stamped {
        Stamped {
            stamp: Stamp {
                sequence: 10,
                id: uuid::Uuid::from_u128(2),
            },
            event: ev.into(),
            rules: None,
        }
    }

    #[test]
    fn gaps_and_rate_limit_summaries_follow_the_schema_and_a_stray_field_does_not() {
        let mut ev = FileEvent::new(
            Action::Gap,
            ReportedPath::new(b"/etc".to_vec(), PathSource::Scan),
            "fim",
        );
        ev.gap = Some(Box::new(crate::event::Gap {
            operations: 12,
            unknown_more: true,
            causes: vec![("ring_buffer_full", 12), ("queue_overflow", 1)],
            since_unix_ns: 1_700_000_000_000_000_000,
            roots: vec![b"/etc".to_vec(), b"/usr/bin".to_vec()],
        }));
        let stamp = Stamp {
            sequence: 1,
            id: uuid::Uuid::from_u128(7),
        };
        let gap = to_ecs(&Stamped {
            stamp,
            event: Event::File(ev),
            rules: None,
        });
        assert_eq!(gap["fim"]["gap"]["operations"], 12);
        let matched = std::sync::Arc::new(Matched {
            rules: vec![("noisy".into(), "FIM-1".into())],
            severity: crate::config::Severity::High,
            techniques: vec!["T1070.002".into()],
            tags: vec!["PCI-DSS 11.5".into()],
            compare: None,
            rate: Some((3, std::time::Duration::from_secs(2))),
        });
        let mut ev = FileEvent::new(
            Action::Suppressed,
            ReportedPath::new(b"/var/log/x".to_vec(), PathSource::SyscallString),
            "fim",
        );
        ev.suppressed = Some(Box::new(crate::ratelimit::Summary {
            matched: matched.clone(),
            held: 12,
            first_ns: 1_700_000_000_000_000_000,
            last_ns: 1_700_000_001_000_000_000,
            last_path: b"/var/log/x".to_vec(),
            limit: 3,
            window: std::time::Duration::from_secs(2),
        }));
        let summary = to_ecs(&Stamped {
            stamp,
            event: Event::File(ev),
            rules: Some(matched),
        });
        assert_eq!(summary["fim"]["suppressed"]["events"], 12);
        // The schema documents every field: one it does not know is an error.
        let mut stray = summary.clone();
        stray["fim"]["surprise"] = json!(1);
        assert!(!schema_errors(&stray).is_empty());
        let mut no_id = gap;
        no_id["event"].as_object_mut().expect("object").remove("id");
        assert!(!schema_errors(&no_id).is_empty());
    }

    #[test]
    fn non_utf8_bytes_are_escaped_reversibly() {
        assert_eq!(render_bytes(b"/tmp/caf\xe9"), "/tmp/caf\\xe9");
        assert_eq!(render_bytes(b"/a\\b"), "/a\\\\b");
        assert_eq!(render_bytes("/é".as_bytes()), "/é");
    }

    #[test]
    fn the_rules_an_event_falls_under_give_its_rule_severity_techniques_and_tags() {
        use crate::config::Severity;
        let ev = FileEvent::new(
            Action::CloseWrite,
            ReportedPath::new(b"/etc/passwd".to_vec(), PathSource::KernelObject),
            "ebpf-lsm",
        );
        let stamp = Stamp {
            sequence: 1,
            id: uuid::Uuid::from_u128(1),
        };
        let matched = Matched {
            rules: vec![
                ("accounts".into(), "FIM-ACCT".into()),
                ("etc".into(), "etc".into()),
            ],
            severity: Severity::High,
            techniques: vec!["T1136.001".into(), "T1098".into()],
            tags: vec!["PCI-DSS 11.5".into()],
            compare: None,
            rate: None,
        };
        let v = to_ecs(&Stamped {
            stamp,
            event: ev.clone().into(),
            rules: Some(std::sync::Arc::new(matched)),
        });
        assert_eq!(v["rule"], json!({"name": "accounts", "id": "FIM-ACCT"}));
        assert_eq!(v["fim"]["rules"], json!(["accounts", "etc"]));
        assert_eq!(v["event"]["severity"], 73);
        assert_eq!(
            v["threat"],
            json!({"framework": "MITRE ATT&CK", "technique": {"id": ["T1136.001", "T1098"]}})
        );
        assert_eq!(v["tags"], json!(["PCI-DSS 11.5"]));
        // Under no rule: none of these fields.
        let v = to_ecs(&Stamped {
            stamp,
            event: ev.into(),
            rules: None,
        });
        for absent in ["rule", "threat", "tags"] {
            assert!(v.get(absent).is_none(), "{absent}: {v}");
        }
        assert!(v["event"].get("severity").is_none() && v["fim"].get("rules").is_none());
    }
}
