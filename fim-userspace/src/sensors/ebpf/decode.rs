//! Turning a raw eBPF record (`fim_common::EventHeader` + strings) into a [`FileEvent`].
//!
//! Pure: takes bytes and a clock offset, returns an event or a typed error.

use fim_common::{EventHeader, EventKind, HEADER_LEN, flags, proc_fork};

use fim_core::{
    event::{Action, FileEvent, InodeRef, PathSource, Process, ReportedPath},
    paths::clean,
};

use super::identities::Identities;

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than a header.
    #[error("record of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    Short(usize),
    /// The kind byte is not one this build knows.
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
    /// The string lengths add up to more than the record holds.
    #[error("record strings ({wanted} bytes) overrun the record ({have} bytes)")]
    Overrun {
        /// Bytes the header claims.
        wanted: usize,
        /// Bytes present.
        have: usize,
    },
}

fn action_of(kind: EventKind) -> Option<Action> {
    Some(match kind {
        EventKind::Create => Action::Create,
        EventKind::OpenWrite => Action::OpenWrite,
        EventKind::Write => Action::Write,
        EventKind::CloseWrite => Action::CloseWrite,
        EventKind::Truncate => Action::Truncate,
        EventKind::Utimes => Action::Utimes,
        EventKind::Fallocate => Action::Fallocate,
        EventKind::Unlink => Action::Unlink,
        EventKind::Mkdir => Action::Mkdir,
        EventKind::Rmdir => Action::Rmdir,
        EventKind::Rename => Action::Rename,
        EventKind::Chmod => Action::Chmod,
        EventKind::Chown => Action::Chown,
        EventKind::SetXattr => Action::SetXattr,
        EventKind::RemoveXattr => Action::RemoveXattr,
        EventKind::Link => Action::Link,
        EventKind::Symlink => Action::Symlink,
        EventKind::Mknod => Action::Mknod,
        EventKind::ProcExec
        | EventKind::ProcFork
        | EventKind::ProcExit
        | EventKind::ProcRename
        | EventKind::ProcCgroup
        | EventKind::Outcome => {
            return None;
        }
    })
}

/// What happened to a process (the process table's input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcChange {
    /// It exec'd a new program.
    Exec,
    /// It made the new task `child`.
    Fork {
        /// The new task's thread id.
        child: u32,
        /// The new task is a thread of the same process (`CLONE_THREAD`).
        thread: bool,
    },
    /// It is exiting.
    Exit,
    /// Task `tid` was renamed to `name` (by itself, or through `/proc/<tid>/comm`).
    Rename {
        /// The renamed task.
        tid: u32,
        /// Its new name.
        name: String,
    },
    /// Process `pid` (and its threads) moved to the cgroup v2 cgroup `id`.
    Cgroup {
        /// The moved process.
        pid: u32,
        /// The cgroup's id.
        id: u64,
    },
}

/// One process-table record: the acting task, as the kernel saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcRecord {
    /// What happened.
    pub change: ProcChange,
    /// The task (for a fork: the parent).
    pub process: Process,
}

/// A decoded kernel record.
#[derive(Debug)]
pub enum Decoded {
    /// A file event.
    File(Box<FileEvent>),
    /// A file event announced before the operation ran (LSM and fentry tiers): to be
    /// reported only once its thread's [`Decoded::Outcome`] says it succeeded.
    Announced {
        /// The announcing thread.
        tid: u32,
        /// The event as announced.
        event: Box<FileEvent>,
    },
    /// The outcome of the operation `tid` announced last.
    Outcome {
        /// The thread.
        tid: u32,
        /// The operation failed.
        failed: bool,
        /// For a truncate: the new length.
        size: u64,
    },
    /// A process-table record.
    Process(ProcRecord),
}

fn process_of(h: &EventHeader, exe: &[u8]) -> Process {
    Process {
        pid: h.tgid,
        tid: h.tid,
        ppid: h.ppid,
        uid: h.uid,
        euid: h.euid,
        gid: h.gid,
        egid: h.egid,
        name: comm(&h.comm),
        executable: (!exe.is_empty()).then(|| exe.to_vec()),
        cgroup_id: h.cgroup_id,
        start_boot_ns: h.start_time_ns,
        exited: false,
    }
}

/// Decodes a record of any kind; `ids` names what the kernel matched by identity.
pub fn decode_record(
    record: &[u8],
    boot_to_unix_ns: i128,
    sensor: &'static str,
    ids: &Identities,
) -> Result<Decoded, DecodeError> {
    if record.len() >= HEADER_LEN {
        // SAFETY: as in `decode`.
        let h: EventHeader = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
        let change = match EventKind::from_u8(h.kind) {
            Some(EventKind::ProcExec) => Some(ProcChange::Exec),
            Some(EventKind::ProcFork) => Some(ProcChange::Fork {
                child: proc_fork::child(h.size),
                thread: proc_fork::is_thread(h.size),
            }),
            Some(EventKind::ProcExit) => Some(ProcChange::Exit),
            Some(EventKind::ProcRename) => {
                let data = &record[HEADER_LEN..];
                let (exe, name) = (usize::from(h.exe_len), usize::from(h.name_len));
                if exe + name > data.len() {
                    return Err(DecodeError::Overrun {
                        wanted: exe + name,
                        have: data.len(),
                    });
                }
                Some(ProcChange::Rename {
                    tid: h.size as u32,
                    name: String::from_utf8_lossy(&data[exe..exe + name]).into_owned(),
                })
            }
            Some(EventKind::ProcCgroup) => Some(ProcChange::Cgroup {
                pid: h.size as u32,
                id: h.ino,
            }),
            Some(EventKind::Outcome) => {
                return Ok(Decoded::Outcome {
                    tid: h.tid,
                    failed: h.flags & flags::FAILED != 0,
                    size: h.size,
                });
            }
            _ => None,
        };
        if let Some(change) = change {
            let exe_len = usize::from(h.exe_len);
            let data = &record[HEADER_LEN..];
            if exe_len > data.len() {
                return Err(DecodeError::Overrun {
                    wanted: exe_len,
                    have: data.len(),
                });
            }
            return Ok(Decoded::Process(ProcRecord {
                change,
                process: process_of(&h, &data[..exe_len]),
            }));
        }
    }
    let event = Box::new(decode(record, boot_to_unix_ns, sensor, ids)?);
    // SAFETY: `decode` checked the length.
    let h: EventHeader = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    Ok(if h.flags & flags::AWAITS_OUTCOME != 0 {
        Decoded::Announced { tid: h.tid, event }
    } else {
        Decoded::File(event)
    })
}

fn reported(bytes: &[u8], from_string: bool, truncated: bool) -> ReportedPath {
    ReportedPath {
        bytes: if from_string {
            clean(bytes)
        } else {
            bytes.to_vec()
        },
        source: if from_string {
            PathSource::SyscallString
        } else {
            PathSource::KernelObject
        },
        truncated,
    }
}

fn comm(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Decodes one record. `boot_to_unix_ns` converts the kernel's boot-time clock to wall time;
/// `ids` gives the watched name of a path the kernel matched by identity (the name used
/// goes to `requested_path` when it differs).
pub fn decode(
    record: &[u8],
    boot_to_unix_ns: i128,
    sensor: &'static str,
    ids: &Identities,
) -> Result<FileEvent, DecodeError> {
    if record.len() < HEADER_LEN {
        return Err(DecodeError::Short(record.len()));
    }
    // SAFETY: the length is checked above; EventHeader is repr(C) of plain integers, so any
    // bit pattern is valid, and read_unaligned copes with the ring buffer's 8-byte alignment.
    let h: EventHeader = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let kind = EventKind::from_u8(h.kind).ok_or(DecodeError::UnknownKind(h.kind))?;
    let lens = [h.path_len, h.path2_len, h.exe_len, h.name_len].map(usize::from);
    let wanted: usize = lens.iter().sum();
    let data = &record[HEADER_LEN..];
    if wanted > data.len() {
        return Err(DecodeError::Overrun {
            wanted,
            have: data.len(),
        });
    }
    let (path, rest) = data.split_at(lens[0]);
    let (path2, rest) = rest.split_at(lens[1]);
    let (exe, rest) = rest.split_at(lens[2]);
    let name = &rest[..lens[3]];

    let f = h.flags;
    let mut first = reported(
        path,
        f & flags::PATH_FROM_STRING != 0,
        f & flags::PATH_TRUNCATED != 0,
    );
    let mut second = reported(
        path2,
        f & flags::PATH2_FROM_STRING != 0,
        f & flags::PATH2_TRUNCATED != 0,
    );
    let action = action_of(kind).ok_or(DecodeError::UnknownKind(h.kind))?;
    // The object's own identity, for a match on a file named by its inode (the header's
    // inode is the first path's object). An operation on a *name* (unlink, rename, link)
    // is about that name, not about the object's other names: only a watched directory
    // above it renames it.
    let on_name = matches!(
        action,
        Action::Unlink | Action::Rmdir | Action::Rename | Action::Link | Action::Symlink
    );
    let own = (f & flags::HAS_INODE != 0).then_some((h.dev, h.ino));
    let mut accessed = [None, None];
    for (i, (p, inode)) in [(&mut first, own), (&mut second, None)]
        .into_iter()
        .enumerate()
    {
        let watch = h.watch[i];
        if on_name && watch.id == fim_common::OBJECT_BY_INODE {
            continue;
        }
        if let Some(canonical) = ids.canonical(watch, &p.bytes, inode)
            && canonical != p.bytes
        {
            accessed[i] = Some(std::mem::replace(&mut p.bytes, canonical));
        }
    }
    let [accessed_first, accessed_second] = accessed;
    // The kernel sends (from, to) for two-name operations; the event's `path` is the name
    // that now exists, `source` where it came from.
    let (path, source, requested) = match action {
        Action::Rename | Action::Link => (second, Some(first), accessed_second),
        Action::Symlink => {
            // The target is stored text: keep it exactly as given.
            let target = ReportedPath {
                bytes: path.to_vec(),
                source: PathSource::SyscallString,
                truncated: f & flags::PATH_TRUNCATED != 0,
            };
            (second, Some(target), accessed_second)
        }
        _ if f & flags::PATH2_AS_CALLED != 0 => {
            // The object was found by the kernel; the caller's string is the name used.
            let called = (path2 != first.bytes.as_slice()).then(|| path2.to_vec());
            (first, None, called)
        }
        _ => (first, None, accessed_first),
    };
    let requested_path = requested.map(|bytes| ReportedPath {
        bytes,
        source: path.source,
        truncated: path.truncated,
    });
    let mode = matches!(
        action,
        Action::Chmod | Action::Mkdir | Action::Mknod | Action::Create
    )
    .then_some(h.mode & 0o177_777);
    let is_chown = action == Action::Chown;
    let inode = (f & flags::HAS_INODE != 0).then_some(InodeRef {
        ino: h.ino,
        // Kernel-internal dev_t: 12-bit major, 20-bit minor.
        major: fim_common::dev::major(h.dev),
        minor: fim_common::dev::minor(h.dev),
        mode: h.imode,
    });
    Ok(FileEvent {
        action,
        time_unix_ns: i128::from(h.ktime_ns) + boot_to_unix_ns,
        path,
        source,
        requested_path,
        mode,
        owner_uid: (is_chown && h.owner_uid != u32::MAX).then_some(h.owner_uid),
        owner_gid: (is_chown && h.owner_gid != u32::MAX).then_some(h.owner_gid),
        xattr_name: (!name.is_empty()).then(|| name.to_vec()),
        bytes_written: (matches!(action, Action::Write | Action::CloseWrite)
            && f & flags::NO_SIZE == 0)
            .then_some(h.size),
        truncate_length: (action == Action::Truncate).then_some(h.size),
        fallocate: (action == Action::Fallocate).then_some((h.op_flags, h.size)),
        rename_flags: if action == Action::Rename {
            h.op_flags
        } else {
            0
        },
        open_truncated: f & flags::OPEN_TRUNC != 0,
        merged: false,
        no_follow: h.op_flags & libc::AT_SYMLINK_NOFOLLOW as u32 != 0
            && matches!(
                action,
                Action::Chown
                    | Action::Chmod
                    | Action::SetXattr
                    | Action::RemoveXattr
                    | Action::Utimes
            ),
        inode,
        process: Some(process_of(&h, exe)),
        sensor,
        // The kernel-object tiers see operations, not syscalls: 0 there.
        syscall_nr: (h.syscall_nr != 0).then_some(h.syscall_nr),
        integrity: None,
        gap: None,
        suppressed: None,
        package_manager: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fim_common::EventKind;

    fn header(kind: EventKind) -> EventHeader {
        EventHeader {
            kind: kind as u8,
            _pad0: 0,
            flags: 0,
            path_len: 0,
            path2_len: 0,
            exe_len: 0,
            name_len: 0,
            syscall_nr: 82,
            ktime_ns: 1_000,
            tid: 11,
            tgid: 10,
            ppid: 1,
            uid: 1000,
            euid: 0,
            gid: 100,
            egid: 0,
            _pad1: 0,
            watch: Default::default(),
            cgroup_id: 7,
            start_time_ns: 5,
            comm: *b"mv\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            mode: 0,
            owner_uid: u32::MAX,
            owner_gid: u32::MAX,
            op_flags: 0,
            size: 0,
            ino: 0,
            dev: 0,
            imode: 0,
        }
    }

    fn record(h: &EventHeader, strings: &[&[u8]]) -> Vec<u8> {
        // SAFETY: EventHeader is repr(C) plain data.
        let raw = unsafe {
            std::slice::from_raw_parts((h as *const EventHeader).cast::<u8>(), HEADER_LEN)
        };
        let mut out = raw.to_vec();
        for s in strings {
            out.extend_from_slice(s);
        }
        out
    }

    #[test]
    fn rename_reports_new_path_and_old_path_cleaned() {
        let mut h = header(EventKind::Rename);
        h.flags = flags::PATH_FROM_STRING | flags::PATH2_FROM_STRING;
        let (old, new, exe) = (
            b"/w/./a".as_slice(),
            b"/w//b".as_slice(),
            b"/usr/bin/mv".as_slice(),
        );
        h.path_len = old.len() as u16;
        h.path2_len = new.len() as u16;
        h.exe_len = exe.len() as u16;
        h.op_flags = 1;
        let ev = decode(
            &record(&h, &[old, new, exe]),
            500,
            "test",
            &Identities::default(),
        )
        .expect("decodes");
        assert_eq!(ev.action, Action::Rename);
        assert_eq!(ev.path.bytes, b"/w/b");
        assert_eq!(
            ev.source.as_ref().map(|s| s.bytes.clone()),
            Some(b"/w/a".to_vec())
        );
        assert_eq!(ev.rename_flags, 1);
        assert_eq!(ev.time_unix_ns, 1_500);
        assert_eq!(ev.process.as_ref().expect("process").name, "mv");
        assert_eq!(
            ev.process.as_ref().expect("process").executable.as_deref(),
            Some(exe)
        );
        assert_eq!(
            {
                let p = ev.process.as_ref().expect("process");
                (p.pid, p.tid, p.ppid)
            },
            (10, 11, 1)
        );
        assert_eq!(ev.owner_uid, None);
    }

    #[test]
    fn chown_keeps_only_changed_ids_and_xattr_name_is_read() {
        let mut h = header(EventKind::Chown);
        h.owner_uid = 42;
        h.path_len = 2;
        let ev = decode(&record(&h, &[b"/x"]), 0, "test", &Identities::default()).expect("decodes");
        assert_eq!((ev.owner_uid, ev.owner_gid), (Some(42), None));

        let mut h = header(EventKind::SetXattr);
        h.path_len = 2;
        h.name_len = 8;
        let ev = decode(
            &record(&h, &[b"/x", b"user.fim"]),
            0,
            "test",
            &Identities::default(),
        )
        .expect("decodes");
        assert_eq!(ev.xattr_name.as_deref(), Some(b"user.fim".as_slice()));
    }

    #[test]
    fn a_path_matched_by_identity_is_named_under_its_watched_name() {
        let mut ids = Identities::default();
        let wt = ids.add_root(b"/tmp/wt".to_vec());
        // A rename done through a bind mount of /tmp/wt at /mnt/bm.
        let mut h = header(EventKind::Rename);
        let (old, new) = (b"/mnt/bm/g".as_slice(), b"/mnt/bm/h".as_slice());
        h.path_len = old.len() as u16;
        h.path2_len = new.len() as u16;
        h.watch = [
            fim_common::WatchMatch {
                id: wt,
                below: 2,
                _pad: 0,
            },
            fim_common::WatchMatch {
                id: wt,
                below: 2,
                _pad: 0,
            },
        ];
        let ev = decode(&record(&h, &[old, new]), 0, "test", &ids).expect("decodes");
        assert_eq!(ev.path.bytes, b"/tmp/wt/h");
        assert_eq!(ev.source.expect("old name").bytes, b"/tmp/wt/g");
        assert_eq!(ev.requested_path.expect("as accessed").bytes, b"/mnt/bm/h");
        // A chmod through another hard link of a watched file.
        ids.learn((9, 42), b"/tmp/wt2/f".to_vec());
        let mut h = header(EventKind::Chmod);
        h.flags = flags::HAS_INODE;
        (h.dev, h.ino) = (9, 42);
        h.path_len = 7;
        h.watch[0] = fim_common::WatchMatch {
            id: fim_common::OBJECT_BY_INODE,
            below: 0,
            _pad: 0,
        };
        let ev = decode(&record(&h, &[b"/tmp/hl"]), 0, "test", &ids).expect("decodes");
        assert_eq!(ev.path.bytes, b"/tmp/wt2/f");
        assert_eq!(ev.requested_path.expect("as accessed").bytes, b"/tmp/hl");
        // Removing that other name is about the name, not the watched file.
        let mut h = header(EventKind::Unlink);
        h.flags = flags::HAS_INODE;
        (h.dev, h.ino) = (9, 42);
        h.path_len = 7;
        h.watch[0] = fim_common::WatchMatch {
            id: fim_common::OBJECT_BY_INODE,
            below: 0,
            _pad: 0,
        };
        let ev = decode(&record(&h, &[b"/tmp/hl"]), 0, "test", &ids).expect("decodes");
        assert_eq!(
            (ev.path.bytes.as_slice(), ev.requested_path),
            (&b"/tmp/hl"[..], None)
        );
        // Matched under its own name: nothing to add.
        let mut h = header(EventKind::Chmod);
        h.path_len = 9;
        h.watch[0] = fim_common::WatchMatch {
            id: wt,
            below: 2,
            _pad: 0,
        };
        let ev = decode(&record(&h, &[b"/tmp/wt/g"]), 0, "test", &ids).expect("decodes");
        assert_eq!(
            (ev.path.bytes.as_slice(), ev.requested_path),
            (&b"/tmp/wt/g"[..], None)
        );
    }

    #[test]
    fn bad_records_are_typed_errors() {
        assert_eq!(
            decode(&[0; 10], 0, "t", &Identities::default()),
            Err(DecodeError::Short(10))
        );
        let mut h = header(EventKind::Unlink);
        h.kind = 200;
        assert_eq!(
            decode(&record(&h, &[]), 0, "t", &Identities::default()),
            Err(DecodeError::UnknownKind(200))
        );
        let mut h = header(EventKind::Unlink);
        h.path_len = 100;
        assert_eq!(
            decode(&record(&h, &[b"/short"]), 0, "t", &Identities::default()),
            Err(DecodeError::Overrun {
                wanted: 100,
                have: 6
            })
        );
    }

    #[test]
    fn announcements_outcomes_and_sizeless_writes_of_the_kernel_object_tiers() {
        let mut h = header(EventKind::Chmod);
        h.flags = flags::AWAITS_OUTCOME;
        h.syscall_nr = 0;
        h.path_len = 4;
        match decode_record(&record(&h, &[b"/w/f"]), 0, "t", &Identities::default()) {
            Ok(Decoded::Announced { tid, event }) => {
                assert_eq!(tid, 11);
                assert_eq!(event.action, Action::Chmod);
                assert_eq!(event.syscall_nr, None, "no syscall behind an LSM hook");
            }
            other => panic!("expected an announcement, got {other:?}"),
        }
        let mut h = header(EventKind::Outcome);
        h.flags = flags::FAILED;
        h.size = 9;
        match decode_record(&record(&h, &[]), 0, "t", &Identities::default()) {
            Ok(Decoded::Outcome { tid, failed, size }) => {
                assert_eq!((tid, failed, size), (11, true, 9))
            }
            other => panic!("expected an outcome, got {other:?}"),
        }
        let mut h = header(EventKind::Write);
        h.flags = flags::NO_SIZE;
        h.path_len = 4;
        match decode_record(&record(&h, &[b"/w/f"]), 0, "t", &Identities::default()) {
            Ok(Decoded::File(e)) => assert_eq!(e.bytes_written, None),
            other => panic!("expected a write, got {other:?}"),
        }
    }
}
