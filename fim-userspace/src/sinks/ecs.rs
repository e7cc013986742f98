//! Rendering a [`FileEvent`] as an Elastic Common Schema document.
//!
//! ECS names where ECS has the field (`event.action`, `file.path`, `process.pid`,
//! `process.executable`, `user.id`, ...); everything else under `fim.*`. Paths that are not
//! UTF-8 are rendered with each invalid byte as `\xNN`, so the text is lossless and the
//! original bytes can be recovered.

use serde_json::{Map, Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    event::{Action, FileEvent, PathSource, ReportedPath},
    integrity::attrs::{Content, Snapshot, hex},
};

/// Renders bytes as text, escaping bytes that are not valid UTF-8 as `\xNN`
/// (and a literal backslash as `\\`, so the rendering is reversible).
pub fn render_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&chunk.valid().replace('\\', "\\\\"));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn file_type(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "char_device",
        libc::S_IFBLK => "block_device",
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

fn insert(map: &mut Map<String, Value>, key: &str, value: Value) {
    map.insert(key.to_owned(), value);
}

fn path_info(p: &ReportedPath) -> Value {
    json!({ "source": source_name(p.source), "truncated": p.truncated })
}

/// The ECS document for one event. `sequence` numbers events in output order.
pub fn to_ecs(ev: &FileEvent, sequence: u64) -> Value {
    if let Some(gap) = &ev.gap {
        return gap_doc(ev, gap, sequence);
    }
    let timestamp = time_ns(ev.time_unix_ns);
    let path = render_bytes(&ev.path.bytes);
    let mut file = Map::new();
    insert(&mut file, "path", json!(path));
    let slash = ev.path.bytes.iter().rposition(|&b| b == b'/').unwrap_or(0);
    insert(
        &mut file,
        "name",
        json!(render_bytes(&ev.path.bytes[slash + 1..])),
    );
    insert(
        &mut file,
        "directory",
        json!(render_bytes(if slash == 0 {
            b"/"
        } else {
            &ev.path.bytes[..slash]
        })),
    );
    // What the caller asked for (chmod/chown/mkdir/create arguments); the file's actual
    // values after the event are in `file.*` and `fim.after`.
    let mut requested = Map::new();
    if let Some(mode) = ev.mode {
        insert(
            &mut requested,
            "mode",
            json!(format!("{:04o}", mode & 0o7777)),
        );
    }
    if let Some(uid) = ev.owner_uid {
        insert(&mut requested, "uid", json!(uid.to_string()));
    }
    if let Some(gid) = ev.owner_gid {
        insert(&mut requested, "gid", json!(gid.to_string()));
    }
    if let Some(p) = &ev.requested_path {
        insert(&mut requested, "path", json!(render_bytes(&p.bytes)));
    }
    if let Some(inode) = ev.inode {
        insert(&mut file, "inode", json!(inode.ino.to_string()));
        insert(
            &mut file,
            "device",
            json!(format!("{}:{}", inode.major, inode.minor)),
        );
        insert(&mut file, "type", json!(file_type(inode.mode)));
    }
    match (ev.action, &ev.source) {
        (Action::Rename, Some(old)) => {
            insert(
                &mut file,
                "original",
                json!({ "path": render_bytes(&old.bytes) }),
            );
        }
        (Action::Link | Action::Symlink, Some(target)) => {
            insert(&mut file, "target_path", json!(render_bytes(&target.bytes)));
        }
        _ => {}
    }

    if let Some(after) = ev.integrity.as_ref().and_then(|i| i.after.as_ref()) {
        // Values read from the file after the event take precedence over syscall arguments.
        let a = &after.attrs;
        insert(&mut file, "type", json!(a.file_type.as_str()));
        insert(&mut file, "size", json!(a.size));
        insert(&mut file, "mode", json!(format!("{:04o}", a.mode)));
        insert(&mut file, "uid", json!(a.uid.to_string()));
        insert(&mut file, "gid", json!(a.gid.to_string()));
        insert(&mut file, "inode", json!(a.ino.to_string()));
        insert(
            &mut file,
            "device",
            json!(format!("{}:{}", a.dev_major, a.dev_minor)),
        );
        insert(&mut file, "mtime", json!(time_ns(i128::from(a.mtime_ns))));
        insert(&mut file, "ctime", json!(time_ns(i128::from(a.ctime_ns))));
        if let Some(d) = after.sha256() {
            insert(&mut file, "hash", json!({ "sha256": hex(d) }));
        }
    }
    let mut fim = Map::new();
    insert(&mut fim, "sensor", json!(ev.sensor));
    insert(&mut fim, "path", path_info(&ev.path));
    if let Some(source) = &ev.source {
        insert(&mut fim, "source_path", path_info(source));
    }
    if let Some(nr) = ev.syscall_nr {
        insert(&mut fim, "syscall_nr", json!(nr));
    }
    if let Some(p) = &ev.process {
        insert(&mut fim, "cgroup_id", json!(p.cgroup_id));
    }
    if !requested.is_empty() {
        insert(&mut fim, "requested", Value::Object(requested));
    }
    if ev.merged {
        insert(&mut fim, "merged", json!(true));
    }
    if let Some(i) = &ev.integrity {
        insert(&mut fim, "origin", json!(i.origin.as_str()));
        insert(
            &mut fim,
            "changed",
            json!(i.changed.iter().map(|a| a.as_str()).collect::<Vec<_>>()),
        );
        insert(
            &mut fim,
            "before",
            i.before.as_ref().map_or(Value::Null, snapshot),
        );
        insert(
            &mut fim,
            "after",
            i.after.as_ref().map_or(Value::Null, snapshot),
        );
        if i.replaced_target {
            insert(&mut fim, "replaced_target", json!(true));
        }
        if let Some(note) = &i.note {
            insert(&mut fim, "note", json!(note));
        }
    }
    if let Some(name) = &ev.xattr_name {
        insert(&mut fim, "xattr", json!({ "name": render_bytes(name) }));
    }
    if let Some(n) = ev.bytes_written {
        insert(&mut fim, "bytes_written", json!(n));
    }
    if let Some((mode, length)) = ev.fallocate {
        const MODES: [(u32, &str); 6] = [
            (0x01, "keep_size"),
            (0x02, "punch_hole"),
            (0x08, "collapse_range"),
            (0x10, "zero_range"),
            (0x20, "insert_range"),
            (0x40, "unshare_range"),
        ];
        let names: Vec<&str> = MODES
            .iter()
            .filter(|(bit, _)| mode & bit != 0)
            .map(|(_, n)| *n)
            .collect();
        insert(
            &mut fim,
            "fallocate",
            json!({ "mode": names, "length": length }),
        );
    }
    if let Some(n) = ev.truncate_length {
        insert(&mut fim, "truncate_length", json!(n));
    }
    if ev.action == Action::Rename {
        let mut flags = Vec::new();
        for (bit, name) in [(1u32, "noreplace"), (2, "exchange"), (4, "whiteout")] {
            if ev.rename_flags & bit != 0 {
                flags.push(name);
            }
        }
        insert(&mut fim, "rename_flags", json!(flags));
    }
    if ev.open_truncated {
        insert(&mut fim, "open_truncated", json!(true));
    }
    if ev.no_follow {
        insert(&mut fim, "no_follow", json!(true));
    }

    let mut doc = json!({
        "@timestamp": timestamp,
        "event": event_object(ev, sequence),
        "file": file,
        "fim": fim,
    });
    if let Some(p) = ev.process.as_ref().filter(|p| p.exited) {
        // Gone before it could be looked up: say so, invent nothing.
        doc["process"] = json!({ "pid": p.pid, "thread": { "id": p.tid } });
        doc["fim"]["process_exited"] = json!(true);
    } else if let Some(p) = &ev.process {
        let mut process = json!({
            "pid": p.pid,
            "thread": { "id": p.tid },
            "name": p.name,
            "parent": { "pid": p.ppid },
            "entity_id": entity_id(p.pid, p.start_boot_ns),
        });
        if let Some(exe) = &p.executable {
            process["executable"] = json!(render_bytes(exe));
        }
        doc["process"] = process;
        doc["user"] = json!({ "id": p.uid.to_string(), "effective": { "id": p.euid.to_string() } });
        doc["group"] =
            json!({ "id": p.gid.to_string(), "effective": { "id": p.egid.to_string() } });
    }
    doc
}

/// ECS `event`: what happened, and its place in the output.
fn event_object(ev: &FileEvent, sequence: u64) -> Value {
    json!({
        "kind": "event",
        "category": ["file"],
        "type": [ev.action.ecs_type()],
        "action": ev.action.as_str(),
        "module": "fim",
        "dataset": "fim.file",
        "sequence": sequence,
    })
}

/// A gap: operations lost before they were reported, when, where, and why. No `file`: it
/// is about the watched roots, which the repair rescan that follows goes through.
fn gap_doc(ev: &FileEvent, gap: &crate::event::Gap, sequence: u64) -> Value {
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
        "event": event_object(ev, sequence),
        "message": format!(
            "{count} file operations were lost before they were reported; the watched paths are rescanned to report what they changed"
        ),
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

/// `process.entity_id`: the pid and the start time in clock ticks since boot, the precision
/// `/proc` offers, so an event attributed from the kernel and one attributed from `/proc`
/// name the same process the same way (and pid reuse gives a new id).
pub fn entity_id(pid: u32, start_boot_ns: u64) -> String {
    static TICK_NS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let tick = *TICK_NS.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        1_000_000_000 / if hz > 0 { hz as u64 } else { 100 }
    });
    format!("{pid}-{}", start_boot_ns / tick)
}

fn time_ns(ns: i128) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ns)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Every attribute of one observation, for `fim.before` / `fim.after`.
pub fn snapshot(s: &Snapshot) -> Value {
    let a = &s.attrs;
    let mut m = Map::new();
    insert(&mut m, "type", json!(a.file_type.as_str()));
    insert(&mut m, "size", json!(a.size));
    insert(&mut m, "mode", json!(format!("{:04o}", a.mode)));
    insert(&mut m, "uid", json!(a.uid));
    insert(&mut m, "gid", json!(a.gid));
    insert(&mut m, "inode", json!(a.ino));
    insert(
        &mut m,
        "device",
        json!(format!("{}:{}", a.dev_major, a.dev_minor)),
    );
    insert(&mut m, "nlink", json!(a.nlink));
    insert(&mut m, "mtime", json!(time_ns(i128::from(a.mtime_ns))));
    insert(&mut m, "ctime", json!(time_ns(i128::from(a.ctime_ns))));
    if let Some(t) = &a.symlink_target {
        insert(&mut m, "symlink_target", json!(render_bytes(t)));
    }
    if let Some(acl) = &a.acl_access {
        insert(&mut m, "acl_access", json!(acl));
    }
    if let Some(acl) = &a.acl_default {
        insert(&mut m, "acl_default", json!(acl));
    }
    if let Some(cap) = &a.capability {
        insert(&mut m, "capability", json!(cap));
    }
    if !a.xattrs.is_empty() {
        let x: Map<String, Value> = a
            .xattrs
            .iter()
            .map(|(k, v)| (render_bytes(k), json!(hex(v))))
            .collect();
        insert(&mut m, "xattrs", Value::Object(x));
    }
    match &s.content {
        Some(Content::Sha256(d)) => insert(&mut m, "sha256", json!(hex(d))),
        Some(Content::NotHashed(why)) => insert(&mut m, "hash_status", json!(why.reason())),
        None => {}
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_id_has_proc_precision() {
        // SAFETY: sysconf has no preconditions.
        let tick = 1_000_000_000 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        // The kernel's nanoseconds and /proc's ticks name the same start.
        assert_eq!(entity_id(5, 12_345 * tick + 7), "5-12345");
        assert_eq!(
            entity_id(5, 12_345 * tick),
            entity_id(5, 12_345 * tick + tick - 1)
        );
    }

    #[test]
    fn non_utf8_bytes_are_escaped_reversibly() {
        assert_eq!(render_bytes(b"/tmp/caf\xe9"), "/tmp/caf\\xe9");
        assert_eq!(render_bytes(b"/a\\b"), "/a\\\\b");
        assert_eq!(render_bytes("/é".as_bytes()), "/é");
    }
}
