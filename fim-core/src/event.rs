//! The event model every sensor produces and every sink consumes.
//!
//! Sensor-neutral: the eBPF tiers and (later) fanotify fill the same struct. Paths are bytes,
//! because Linux file names are; sinks decide how to render them.

use crate::attrs::{Attr, Snapshot};

/// What happened. `as_str` gives the `event.action` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// A regular file was created by an open.
    Create,
    /// An existing file was opened for writing.
    OpenWrite,
    /// First write through an open file.
    Write,
    /// A file opened for writing was closed.
    CloseWrite,
    /// A file was truncated.
    Truncate,
    /// A name was removed.
    Unlink,
    /// A directory was created.
    Mkdir,
    /// A directory was removed.
    Rmdir,
    /// A name was moved.
    Rename,
    /// Permission bits changed.
    Chmod,
    /// Owner or group changed.
    Chown,
    /// An extended attribute was set.
    SetXattr,
    /// An extended attribute was removed.
    RemoveXattr,
    /// A hard link was made.
    Link,
    /// A symbolic link was made.
    Symlink,
    /// A special (or regular) file was made by mknod.
    Mknod,
    /// Access or modification times were set (`utimensat`, `futimens`, `utimes`).
    Utimes,
    /// Space was allocated, punched or zeroed (`fallocate`): the content may have changed.
    Fallocate,
    /// Attributes changed, and the sensor cannot tell which (fanotify's `FAN_ATTRIB`); the
    /// integrity engine names it chmod, chown or an xattr change from before/after values.
    Attrib,
    /// Content settled after the quiet period while the file stayed open for writing.
    Modified,
    /// Found by comparing the disk with the baseline: a path the baseline did not have.
    Added,
    /// Found by comparing the disk with the baseline: a path that is gone.
    Removed,
    /// Found by comparing the disk with the baseline: a path whose attributes differ.
    Changed,
    /// Operations were lost before they could be reported (see [`Gap`]); the repair
    /// rescan that follows reports what they changed.
    Gap,
    /// Events a rule's rate limit held back in one window, summed up (see
    /// [`crate::ratelimit`]).
    Suppressed,
}

impl Action {
    /// Every action a rule may ask for (all but [`Action::Gap`], which is always reported).
    pub const REPORTABLE: [Self; 23] = [
        Self::Create,
        Self::OpenWrite,
        Self::Write,
        Self::CloseWrite,
        Self::Truncate,
        Self::Unlink,
        Self::Mkdir,
        Self::Rmdir,
        Self::Rename,
        Self::Chmod,
        Self::Chown,
        Self::SetXattr,
        Self::RemoveXattr,
        Self::Link,
        Self::Symlink,
        Self::Mknod,
        Self::Utimes,
        Self::Fallocate,
        Self::Attrib,
        Self::Modified,
        Self::Added,
        Self::Removed,
        Self::Changed,
    ];

    /// The action whose `event.action` string is `name` (not `gap`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::REPORTABLE.into_iter().find(|a| a.as_str() == name)
    }

    /// The `event.action` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::OpenWrite => "open_write",
            Self::Write => "write",
            Self::CloseWrite => "close_write",
            Self::Truncate => "truncate",
            Self::Unlink => "unlink",
            Self::Mkdir => "mkdir",
            Self::Rmdir => "rmdir",
            Self::Rename => "rename",
            Self::Chmod => "chmod",
            Self::Chown => "chown",
            Self::SetXattr => "setxattr",
            Self::RemoveXattr => "removexattr",
            Self::Link => "link",
            Self::Symlink => "symlink",
            Self::Mknod => "mknod",
            Self::Attrib => "attrib",
            Self::Utimes => "utimes",
            Self::Fallocate => "fallocate",
            Self::Modified => "modified",
            Self::Added => "added",
            Self::Removed => "removed",
            Self::Changed => "changed",
            Self::Gap => "gap",
            Self::Suppressed => "suppressed",
        }
    }

    /// The ECS `event.type` value.
    pub fn ecs_type(self) -> &'static str {
        match self {
            Self::Create | Self::Mkdir | Self::Link | Self::Symlink | Self::Mknod | Self::Added => {
                "creation"
            }
            Self::Unlink | Self::Rmdir | Self::Removed => "deletion",
            Self::OpenWrite => "access",
            Self::Gap | Self::Suppressed => "info",
            _ => "change",
        }
    }
}

/// Where a path came from, which says how far to trust it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathSource {
    /// Resolved in the kernel from the object itself (an open file): exact.
    KernelObject,
    /// The caller's string, joined to its dirfd/cwd and cleaned lexically: may be racy.
    SyscallString,
    /// Found on disk by a scan.
    Scan,
    /// The parent directory's file handle (fanotify), resolved to its current path when the
    /// event was read, plus the entry name.
    FileHandle,
}

/// A path as reported, with how it was obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportedPath {
    /// Absolute path bytes.
    pub bytes: Vec<u8>,
    /// How it was obtained.
    pub source: PathSource,
    /// Cut short by the kernel's limits.
    pub truncated: bool,
}

/// The process that acted.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Process {
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// Effective uid.
    pub euid: u32,
    /// Real gid.
    pub gid: u32,
    /// Effective gid.
    pub egid: u32,
    /// Short name (`comm`).
    pub name: String,
    /// Executable path, when known.
    pub executable: Option<Vec<u8>>,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Start time of the process, ns since boot.
    pub start_boot_ns: u64,
    /// The process had exited before its details could be read: only the ids are real.
    pub exited: bool,
}

/// Identity of the inode the event is about, when the sensor saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InodeRef {
    /// Inode number.
    pub ino: u64,
    /// Device, as `major:minor`.
    pub major: u32,
    /// Minor device number.
    pub minor: u32,
    /// Type and permission bits.
    pub mode: u32,
}

/// An event's place in the output, given once, upstream of every sink, so that every sink
/// names an event alike: its number in output order (`event.sequence`, from 1 in each run)
/// and an identifier unique across runs and hosts (`event.id`, a UUIDv7: time-ordered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The event's number in output order.
    pub sequence: u64,
    /// The event's identifier.
    pub id: uuid::Uuid,
}

/// An event as the sinks receive it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamped {
    /// Its place in the output.
    pub stamp: Stamp,
    /// The event.
    pub event: Event,
    /// What the configured rules it falls under say about it (`None`: none).
    pub rules: Option<std::sync::Arc<crate::rules::Matched>>,
}

/// One change, by what it is about: a file (Linux sensors, scans) or a registry key or
/// value (the Windows registry module). Sinks take either.
// File events are the hot path (hundreds of thousands a second in a burst): not boxed; the
// registry variant is the smaller one anyway.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A file, directory or other file-system object.
    File(FileEvent),
    /// A registry key or value.
    Registry(crate::registry::RegistryEvent),
}

impl Event {
    /// What happened.
    pub fn action(&self) -> Action {
        match self {
            Self::File(e) => e.action,
            Self::Registry(e) => e.action,
        }
    }

    /// When it happened (ns since the Unix epoch).
    pub fn time_unix_ns(&self) -> i128 {
        match self {
            Self::File(e) => e.time_unix_ns,
            Self::Registry(e) => e.time_unix_ns,
        }
    }

    /// The sensor or module that saw it.
    pub fn sensor(&self) -> &'static str {
        match self {
            Self::File(e) => e.sensor,
            Self::Registry(e) => e.sensor,
        }
    }
}

impl From<FileEvent> for Event {
    fn from(e: FileEvent) -> Self {
        Self::File(e)
    }
}

impl From<crate::registry::RegistryEvent> for Event {
    fn from(e: crate::registry::RegistryEvent) -> Self {
        Self::Registry(e)
    }
}

/// Gives events their [`Stamp`], in output order.
#[derive(Debug, Default)]
pub struct Stamper {
    last: u64,
}

impl Stamper {
    /// A stamper whose first stamp follows sequence `last` (one kept from an earlier run).
    pub fn after(last: u64) -> Self {
        Self { last }
    }

    /// The last sequence handed out.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The next stamp.
    pub fn next_stamp(&mut self) -> Stamp {
        self.last += 1;
        Stamp {
            sequence: self.last,
            id: uuid::Uuid::now_v7(),
        }
    }

    /// `event` with the next stamp.
    pub fn stamp(&mut self, event: impl Into<Event>) -> Stamped {
        self.stamp_with(event, None)
    }

    /// `event` with the next stamp and what its rules say.
    pub fn stamp_with(
        &mut self,
        event: impl Into<Event>,
        rules: Option<std::sync::Arc<crate::rules::Matched>>,
    ) -> Stamped {
        Stamped {
            stamp: self.next_stamp(),
            event: event.into(),
            rules,
        }
    }
}

/// One change to the watched file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEvent {
    /// What happened.
    pub action: Action,
    /// When, as ns since the Unix epoch.
    pub time_unix_ns: i128,
    /// The file acted on. For rename, link and symlink: the *new* name.
    pub path: ReportedPath,
    /// Rename: the old name. Link: the existing file. Symlink: the target text, verbatim.
    pub source: Option<ReportedPath>,
    /// The name the operation went through, where it differs from `path` (the watched,
    /// canonical name): another hard link, a bind mount, a symlinked directory.
    pub requested_path: Option<ReportedPath>,
    /// New mode (chmod, mkdir, mknod, create).
    pub mode: Option<u32>,
    /// New owner uid (chown); `None` when unchanged.
    pub owner_uid: Option<u32>,
    /// New owner gid (chown); `None` when unchanged.
    pub owner_gid: Option<u32>,
    /// Extended attribute name (setxattr, removexattr).
    pub xattr_name: Option<Vec<u8>>,
    /// Bytes written (write: this write; close_write: all writes through the open file).
    pub bytes_written: Option<u64>,
    /// New length (truncate).
    pub truncate_length: Option<u64>,
    /// `fallocate`'s mode bits and length.
    pub fallocate: Option<(u32, u64)>,
    /// Rename flags (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`, `RENAME_WHITEOUT`).
    pub rename_flags: u32,
    /// A gap: what was lost, when, where.
    pub gap: Option<Box<Gap>>,
    /// A rate limit's summary: what it held back.
    pub suppressed: Option<Box<crate::ratelimit::Summary>>,
    /// The package manager the acting process is, or descends from: (name, pid).
    pub package_manager: Option<Box<(String, u32)>>,
    /// The open truncated the file.
    pub open_truncated: bool,
    /// The operation did not follow a final symlink.
    pub no_follow: bool,
    /// The sensor got this operation in one record with others on the same object (the
    /// kernel merges queued fanotify events): their order among themselves is not known.
    pub merged: bool,
    /// The inode, when known.
    pub inode: Option<InodeRef>,
    /// Who did it; `None` for changes found by comparing the disk with the baseline.
    pub process: Option<Process>,
    /// Which sensor saw it.
    pub sensor: &'static str,
    /// Syscall number, when the sensor is syscall-based.
    pub syscall_nr: Option<u32>,
    /// What the integrity engine found: attributes and digest before and after.
    pub integrity: Option<Box<Integrity>>,
}

/// Now, as ns since the Unix epoch (the event clock).
pub fn unix_now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Now, in whole seconds since the Unix epoch.
pub fn unix_now_secs() -> u64 {
    u64::try_from(unix_now_ns() / 1_000_000_000).unwrap_or(0)
}

impl ReportedPath {
    /// A complete (not truncated) path obtained from `source`.
    pub fn new(bytes: Vec<u8>, source: PathSource) -> Self {
        Self {
            bytes,
            source,
            truncated: false,
        }
    }
}

impl FileEvent {
    /// An event with no operation details, no process and no integrity data yet: for
    /// sensors and scans that only know what happened where, now.
    pub fn new(action: Action, path: ReportedPath, sensor: &'static str) -> Self {
        Self {
            action,
            time_unix_ns: unix_now_ns(),
            path,
            source: None,
            requested_path: None,
            mode: None,
            owner_uid: None,
            owner_gid: None,
            xattr_name: None,
            bytes_written: None,
            truncate_length: None,
            fallocate: None,
            rename_flags: 0,
            open_truncated: false,
            no_follow: false,
            merged: false,
            inode: None,
            process: None,
            sensor,
            syscall_nr: None,
            integrity: None,
            gap: None,
            suppressed: None,
            package_manager: None,
        }
    }
}

/// What a sensor lost so far, by cause: running totals, read by the integrity engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Losses {
    /// Records the kernel could not put in the ring buffer (full): one operation each.
    pub ring_full: u64,
    /// Syscalls not followed because the in-flight table was full: one operation each.
    pub pending_full: u64,
    /// Open files whose writes were not followed (the open-file table was full): one
    /// operation each (their writes and close).
    pub writers_full: u64,
    /// Events that could not be resolved to a path: one operation each.
    pub unresolved: u64,
    /// fanotify queue overflows: an unknown number of operations each.
    pub overflows: u64,
}

impl Losses {
    /// The causes, with their totals.
    fn causes(&self) -> [(&'static str, u64); 5] {
        [
            ("ring_buffer_full", self.ring_full),
            ("in_flight_table_full", self.pending_full),
            ("open_file_table_full", self.writers_full),
            ("unresolved", self.unresolved),
            ("queue_overflow", self.overflows),
        ]
    }

    /// The gap between `before` and these totals, if anything was lost in between
    /// (`roots` is asked for only then).
    pub fn gap_since(
        &self,
        before: &Self,
        since_unix_ns: i128,
        roots: impl FnOnce() -> Vec<Vec<u8>>,
    ) -> Option<Gap> {
        let causes: Vec<(&'static str, u64)> = self
            .causes()
            .iter()
            .zip(before.causes())
            .filter(|((_, now), (_, then))| now > then)
            .map(|((name, now), (_, then))| (*name, now - then))
            .collect();
        if causes.is_empty() {
            return None;
        }
        Some(Gap {
            operations: causes
                .iter()
                .filter(|(name, _)| *name != "queue_overflow")
                .map(|(_, n)| n)
                .sum(),
            unknown_more: self.overflows > before.overflows,
            causes,
            since_unix_ns,
            roots: roots(),
        })
    }

    /// Operations counted lost (overflows, of unknown size, not included).
    pub fn operations(&self) -> u64 {
        self.ring_full + self.pending_full + self.writers_full + self.unresolved
    }
}

/// Operations lost before they were reported: in the kernel (ring buffer full, in-flight
/// table full, fanotify's queue full) or in userspace (an event that could not be
/// resolved). The watched roots are rescanned right after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// How many operations were lost, where the sensor can count them.
    pub operations: u64,
    /// The sensor also lost an unknown number (fanotify's queue overflow says only that
    /// it happened): `operations` is then a lower bound.
    pub unknown_more: bool,
    /// Why, one entry per cause with its count.
    pub causes: Vec<(&'static str, u64)>,
    /// The loss happened after this moment (ns since the Unix epoch) and before the
    /// event's time.
    pub since_unix_ns: i128,
    /// The watched roots whose events may be missing.
    pub roots: Vec<Vec<u8>>,
}

/// The cause a sink's gap names when its spool reached its size cap and let events go.
pub const SPOOL_FULL: &str = "spool_full";

/// How a change came to be known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Seen by a sensor as it happened.
    Realtime,
    /// Found when the daemon started: the change happened while it was not running.
    Start,
    /// Found by a scheduled rescan (or a rescan after lost events).
    Rescan,
    /// Found by `fim scan check`.
    Check,
    /// Found by the scan that follows a live reload of the configuration (`fim reload`,
    /// SIGHUP): a watched path changed while nothing reported it.
    Reload,
}

impl Origin {
    /// The `fim.origin` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Realtime => "realtime",
            Self::Start => "found_at_start",
            Self::Rescan => "rescan",
            Self::Check => "scan_check",
            Self::Reload => "reload",
        }
    }
}

/// The integrity engine's view of one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Integrity {
    /// The baseline's entry before the event (for a rename over an existing file: the
    /// replaced file's entry).
    pub before: Option<Snapshot>,
    /// What is on disk after the event.
    pub after: Option<Snapshot>,
    /// Attributes that differ between `before` and `after`.
    pub changed: Vec<Attr>,
    /// How the change came to be known.
    pub origin: Origin,
    /// A rename replaced an existing file (an editor's atomic save).
    pub replaced_target: bool,
    /// Why the engine could not fill `after` (`skipped: engine backlog full`, ...).
    pub note: Option<String>,
}

impl Integrity {
    /// Integrity data with no observation behind it (`note` says why, if it is not obvious).
    pub fn unobserved(origin: Origin, note: Option<String>) -> Self {
        Self {
            before: None,
            after: None,
            changed: Vec::new(),
            origin,
            replaced_target: false,
            note,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stamps_number_events_from_one_with_ids_unique_and_in_time_order() {
        let mut stamper = super::Stamper::default();
        let stamps: Vec<super::Stamp> = (0..1000).map(|_| stamper.next_stamp()).collect();
        assert_eq!(stamps[999].sequence, 1000);
        for (i, pair) in stamps.windows(2).enumerate() {
            assert_eq!(pair[0].sequence, i as u64 + 1);
            assert!(pair[0].id < pair[1].id, "UUIDv7s of one run increase");
        }
        assert_eq!(stamps[0].id.get_version_num(), 7);
    }

    use super::Losses;

    #[test]
    fn a_gap_counts_operations_by_cause_and_says_when_the_count_is_a_lower_bound() {
        let before = Losses {
            ring_full: 5,
            overflows: 1,
            ..Losses::default()
        };
        assert_eq!(before.gap_since(&before, 0, Vec::new), None, "nothing new");
        let now = Losses {
            ring_full: 12,
            pending_full: 3,
            overflows: 1,
            ..Losses::default()
        };
        let gap = now
            .gap_since(&before, 100, || vec![b"/etc".to_vec()])
            .expect("a gap");
        assert_eq!(gap.operations, 10);
        assert!(!gap.unknown_more);
        assert_eq!(
            gap.causes,
            [("ring_buffer_full", 7), ("in_flight_table_full", 3)]
        );
        assert_eq!(
            (gap.since_unix_ns, gap.roots),
            (100, vec![b"/etc".to_vec()])
        );
        let overflowed = Losses {
            overflows: 3,
            ..now
        };
        let gap = overflowed.gap_since(&now, 0, Vec::new).expect("a gap");
        assert_eq!((gap.operations, gap.unknown_more), (0, true));
        assert_eq!(gap.causes, [("queue_overflow", 2)]);
    }
}
