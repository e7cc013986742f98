//! The one definition of everything that crosses the kernel/user boundary.
//!
//! `fim-ebpf` writes these records and reads these maps; `fim-userspace` decodes them and
//! fills the maps. Nothing here is re-declared on either side. Every record is `#[repr(C)]`
//! with explicit padding and a compile-time size check, so a change of layout is a build
//! error rather than a silent misread.
//!
//! Event wire format: one ring-buffer record is an [`EventHeader`] followed by up to four
//! byte strings, back to back, in this order: `path`, `path2`, `exe`, `name`. Their lengths
//! are in the header; none is NUL-terminated.
#![no_std]

pub mod syscall;

pub use syscall::{ArgSlot, NO_ARG, Shape, SyscallSpec};

/// Longest path the kernel side emits (Linux `PATH_MAX`); longer paths are cut and flagged.
pub const PATH_MAX: usize = 4096;
/// Longest extended-attribute name (Linux `XATTR_NAME_MAX`).
pub const XATTR_NAME_MAX: usize = 255;
/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;
/// Deepest dentry chain the in-kernel path walk follows before flagging truncation.
pub const MAX_PATH_DEPTH: usize = 128;
/// Bytes of a path the watch-root trie looks at; a watched root must be shorter.
pub const ROOT_KEY_LEN: usize = 256;
/// Longest file-name suffix the kernel can check for a `DIR/*SUFFIX` glob.
pub const SUFFIX_MAX: usize = 32;
/// Capacity of the syscall-spec table, indexed by syscall number.
pub const MAX_SYSCALL_NR: u32 = 512;

/// Offsets into the variable data area are masked with this (a power of two minus one)
/// so the verifier can bound every write; each piece is at most [`PATH_MAX`] bytes.
pub const DATA_MASK: usize = 16 * 1024 - 1;

/// Size of the event ring buffer. Its pages are mapped into the daemon (twice, for the
/// wrap-around view), so it counts twice in the daemon's resident memory. 4 MiB holds
/// about 18,000 typical records (header, path, executable: about 230 bytes), sixteen
/// times what wakes the reader: the churn benchmark (600,000 operations back to back)
/// lost none with 4 MiB, as with 8 MiB, and the idle daemon holds 8 MiB less.
pub const RING_BYTES: u32 = 4 * 1024 * 1024;
/// Size of the scratch data area: the mask plus the largest single piece.
pub const DATA_CAP: usize = DATA_MASK + 1 + PATH_MAX;
/// Largest record the kernel emits: header plus three paths and one xattr name.
pub const MAX_RECORD: usize = core::mem::size_of::<EventHeader>() + 3 * PATH_MAX + XATTR_NAME_MAX;

/// Map names, shared so neither side spells them twice.
pub mod maps {
    /// Ring buffer of event records.
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU counters of records that could not be delivered, indexed by [`super::DropReason`].
    pub const DROPS: &str = "DROPS";
    /// LPM trie of watched roots: path prefix (`[u8; ROOT_KEY_LEN]`, ending in `/`) -> [`super::WatchRoot`].
    pub const WATCH_ROOTS: &str = "WATCH_ROOTS";
    /// Array indexed by syscall number: [`super::SyscallSpec`].
    pub const SYSCALLS: &str = "SYSCALLS";
    /// Syscall arguments saved at entry, keyed by pid_tgid.
    pub const PENDING: &str = "PENDING";
    /// Open files being written under a watched root, keyed by `struct file` address.
    pub const WRITERS: &str = "WRITERS";
    /// Watched objects by identity: [`super::ObjectKey`] -> [`super::WatchedObject`].
    pub const WATCHED_OBJECTS: &str = "WATCHED_OBJECTS";

    /// Every map userspace opens by name (the object has more, private to the kernel side).
    pub const ALL: [&str; 7] = [
        EVENTS,
        DROPS,
        WATCH_ROOTS,
        SYSCALLS,
        PENDING,
        WRITERS,
        WATCHED_OBJECTS,
    ];
}

/// Capacity of the watched-roots table ([`maps::WATCH_ROOTS`]): path prefixes, each root
/// counted once per spelling.
pub const MAX_WATCH_ROOTS: u32 = 4096;

/// Device numbers as the kernel keeps them (`s_dev`, `MKDEV`): a 12-bit major above a 20-bit
/// minor. Records carry this encoding; userspace converts from and to `st_dev`.
pub mod dev {
    /// Bits of the minor number.
    pub const MINOR_BITS: u32 = 20;
    /// The minor number's mask.
    pub const MINOR_MASK: u32 = (1 << MINOR_BITS) - 1;

    /// The kernel's encoding of (`major`, `minor`).
    pub const fn encode(major: u32, minor: u32) -> u32 {
        major << MINOR_BITS | (minor & MINOR_MASK)
    }

    /// The major number of an encoded device.
    pub const fn major(dev: u32) -> u32 {
        dev >> MINOR_BITS
    }

    /// The minor number of an encoded device.
    pub const fn minor(dev: u32) -> u32 {
        dev & MINOR_MASK
    }
}

/// A `ProcFork` record's `size`: the new task's id, and above it whether the task is a
/// thread of its parent's process.
pub mod proc_fork {
    /// The bit saying "a thread" (`CLONE_THREAD`).
    const THREAD: u64 = 1 << 32;

    /// Packs the new task's id and whether it is a thread.
    pub const fn pack(child: u32, thread: bool) -> u64 {
        child as u64 | if thread { THREAD } else { 0 }
    }

    /// The new task's id.
    pub const fn child(size: u64) -> u32 {
        size as u32
    }

    /// Whether the new task is a thread of its parent's process.
    pub const fn is_thread(size: u64) -> bool {
        size & THREAD != 0
    }
}

/// Names of global variables userspace sets at load time.
pub mod globals {
    /// The [`super::Offsets`] read from the running kernel's BTF.
    pub const OFFSETS: &str = "OFFSETS";
    /// Thread-group id of the daemon; its own file activity is not reported.
    pub const SELF_TGID: &str = "SELF_TGID";
    /// The [`super::TracepointFields`] read from tracefs.
    pub const TRACEPOINT_FIELDS: &str = "TRACEPOINT_FIELDS";
    /// Bit `i` set: outcome function `i` (an [`super::Outcome`]) returns a pointer
    /// (`ERR_PTR` on failure) rather than an `int` on this kernel (`vfs_mkdir` since 6.15).
    pub const OUTCOME_RETURNS_PTR: &str = "OUTCOME_RETURNS_PTR";

    /// Every global userspace sets.
    pub const ALL: [&str; 4] = [OFFSETS, SELF_TGID, TRACEPOINT_FIELDS, OUTCOME_RETURNS_PTR];
}

/// Names of the eBPF programs, as exported by `fim-ebpf`.
pub mod programs {
    /// Saves the arguments of a path- or fd-based syscall at entry.
    pub const SAVE_ARGS: &str = "fim_sys_enter";
    /// Emits path-based operations at exit (unlink, mkdir, chmod, ...).
    pub const EXIT_PATH: &str = "fim_exit_path";
    /// Emits fd-based operations at exit (fchmod, ftruncate, ...).
    pub const EXIT_FD: &str = "fim_exit_fd";
    /// Emits two-path operations at exit (rename, link, symlink).
    pub const EXIT_TWO_PATHS: &str = "fim_exit_two_paths";
    /// Emits create / open-for-write at exit of the open family.
    pub const EXIT_OPEN: &str = "fim_exit_open";
    /// Notes a write to a tracked file at entry (the descriptor is argument 0).
    pub const ENTER_WRITE: &str = "fim_enter_write";
    /// Same, for calls whose destination descriptor is argument 2 (`copy_file_range`,
    /// `splice`).
    pub const ENTER_WRITE_ARG2: &str = "fim_enter_write_arg2";
    /// Counts bytes and emits the first write at exit.
    pub const EXIT_WRITE: &str = "fim_exit_write";
    /// Emits close-after-write at entry of close (the fd is gone at exit).
    pub const ENTER_CLOSE: &str = "fim_enter_close";
    /// Same for `dup2`/`dup3`, which close their target fd.
    pub const ENTER_DUP: &str = "fim_enter_dup";
    /// Process table: `sched:sched_process_exec`.
    pub const PROC_EXEC: &str = "fim_proc_exec";
    /// Process table: `task:task_newtask` (carries the clone flags, so a new thread is told
    /// from a new process).
    pub const PROC_FORK: &str = "fim_proc_fork";
    /// Process table: `sched:sched_process_exit`.
    pub const PROC_EXIT: &str = "fim_proc_exit";
    /// Process table: `task:task_rename` (`prctl(PR_SET_NAME)`, a write to `comm`).
    pub const PROC_RENAME: &str = "fim_proc_rename";
    /// Process table: `cgroup:cgroup_attach_task` (a process moved to another cgroup).
    pub const PROC_CGROUP: &str = "fim_proc_cgroup";
    /// Kernel-object tiers: fentry on `filp_close`, every release of a descriptor (close,
    /// dup2 over it, io_uring close, process exit); replaces the close/dup tracepoints.
    pub const CLOSE_FILE: &str = "fim_fentry_filp_close";
    /// Same on `filp_flush` (6.8+), which `close(2)` calls instead of `filp_close`.
    pub const FLUSH_FILE: &str = "fim_fentry_filp_flush";
    /// Tracepoint tier (kernels with the `timestamp` tracepoints, 6.13+): the inode whose
    /// ctime a followed path-based call updates is the object the kernel resolved; found
    /// there by identity, it is announced under its watched name.
    pub const CTIME_UPDATE: &str = "fim_tp_ctime_ns_xchg";
    /// Same, when the ctime needed no new value.
    pub const CTIME_SKIP: &str = "fim_tp_ctime_xchg_skip";
    /// Kernel-object tiers: fentry on `notify_change`, announcing a change of times only
    /// (`utimensat`, `futimens`; no LSM hook covers them). Its outcome is `notify_change`'s.
    pub const SET_TIMES: &str = "fim_fentry_notify_change";

    /// The tracepoint programs and the tracepoint each is attached to, where that is one
    /// tracepoint (`category`, `name`); the syscall and write/close programs attach to many.
    pub const PROCESS_TRACEPOINTS: [(&str, &str, &str); 5] = [
        (PROC_EXEC, "sched", "sched_process_exec"),
        (PROC_FORK, "task", "task_newtask"),
        (PROC_EXIT, "sched", "sched_process_exit"),
        (PROC_RENAME, "task", "task_rename"),
        (PROC_CGROUP, "cgroup", "cgroup_attach_task"),
    ];

    /// The `tp_btf` programs on the `timestamp` tracepoints (6.13+).
    pub const CTIME_HOOKS: [(&str, &str); 2] = [
        (CTIME_UPDATE, "ctime_ns_xchg"),
        (CTIME_SKIP, "ctime_xchg_skip"),
    ];

    /// Kernel-object tiers: fentry programs on kernel functions other than the `security_*`
    /// ones: (program, function, optional). Every release of a descriptor, io_uring closes
    /// and process exit included; `close(2)` calls `filp_flush` directly where it exists
    /// (6.8+); changes of times.
    pub const FUNCTION_HOOKS: [(&str, &str, bool); 3] = [
        (CLOSE_FILE, "filp_close", false),
        (FLUSH_FILE, "filp_flush", true),
        (SET_TIMES, "notify_change", false),
    ];

    /// The syscall and write/close tracepoint programs (attached to many tracepoints each).
    pub const SYSCALL_PROGRAMS: [&str; 10] = [
        SAVE_ARGS,
        EXIT_PATH,
        EXIT_FD,
        EXIT_TWO_PATHS,
        EXIT_OPEN,
        ENTER_WRITE,
        ENTER_WRITE_ARG2,
        EXIT_WRITE,
        ENTER_CLOSE,
        ENTER_DUP,
    ];

    /// Kernel-object tiers: one pre-operation hook. `lsm` is the BPF LSM program's name and
    /// hook; `fentry` the fentry program's name and the `security_*` function it attaches to
    /// where BPF LSM is not active. Both run the same body.
    #[derive(Clone, Copy, Debug)]
    pub struct PreHook {
        /// BPF LSM program name.
        pub lsm: &'static str,
        /// fentry program name.
        pub fentry: &'static str,
        /// LSM hook name (`path_unlink`); the fentry target is `security_` + this.
        pub hook: &'static str,
        /// Absent on some supported kernels (attached when the kernel has it).
        pub optional: bool,
    }

    /// A hook's entry: its programs are named `fim_lsm_<hook>` and `fim_fentry_<hook>`.
    macro_rules! pre {
        ($hook:ident) => {
            pre!($hook, false)
        };
        ($hook:ident, $optional:expr) => {
            PreHook {
                lsm: concat!("fim_lsm_", stringify!($hook)),
                fentry: concat!("fim_fentry_", stringify!($hook)),
                hook: stringify!($hook),
                optional: $optional,
            }
        };
    }

    /// Every pre-operation hook of the LSM and fentry tiers.
    pub const PRE_HOOKS: [PreHook; 17] = [
        pre!(path_unlink),
        pre!(path_rmdir),
        pre!(path_mkdir),
        pre!(path_mknod),
        pre!(path_symlink),
        pre!(path_link),
        pre!(path_rename),
        pre!(path_chmod),
        pre!(path_chown),
        pre!(path_truncate),
        // 6.2+: ftruncate and O_TRUNC go through file_truncate instead of path_truncate.
        pre!(file_truncate, true),
        pre!(file_open),
        pre!(file_permission),
        pre!(inode_setxattr),
        pre!(inode_removexattr),
        // 6.2+: POSIX ACLs are set and removed through their own hooks.
        pre!(inode_set_acl, true),
        pre!(inode_remove_acl, true),
    ];

    /// Kernel-object tiers: the fexit programs that tell whether an operation announced by a
    /// pre-operation hook succeeded, by [`super::Outcome`] index: (program, kernel function,
    /// optional).
    pub const OUTCOMES: [(&str, &str, bool); 14] = [
        ("fim_fexit_vfs_unlink", "vfs_unlink", false),
        ("fim_fexit_vfs_rmdir", "vfs_rmdir", false),
        ("fim_fexit_vfs_mkdir", "vfs_mkdir", false),
        ("fim_fexit_vfs_mknod", "vfs_mknod", false),
        ("fim_fexit_vfs_create", "vfs_create", false),
        ("fim_fexit_vfs_symlink", "vfs_symlink", false),
        ("fim_fexit_vfs_link", "vfs_link", false),
        ("fim_fexit_vfs_rename", "vfs_rename", false),
        ("fim_fexit_notify_change", "notify_change", false),
        ("fim_fexit_vfs_open", "vfs_open", false),
        ("fim_fexit_vfs_setxattr", "vfs_setxattr", false),
        ("fim_fexit_vfs_removexattr", "vfs_removexattr", false),
        ("fim_fexit_vfs_set_acl", "vfs_set_acl", true),
        ("fim_fexit_vfs_remove_acl", "vfs_remove_acl", true),
    ];
}

/// Index of each outcome function in [`programs::OUTCOMES`] (and bit in
/// [`globals::OUTCOME_RETURNS_PTR`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `vfs_unlink`
    Unlink = 0,
    /// `vfs_rmdir`
    Rmdir = 1,
    /// `vfs_mkdir`
    Mkdir = 2,
    /// `vfs_mknod`
    Mknod = 3,
    /// `vfs_create` (mknod of a regular file)
    Create = 4,
    /// `vfs_symlink`
    Symlink = 5,
    /// `vfs_link`
    Link = 6,
    /// `vfs_rename`
    Rename = 7,
    /// `notify_change` (chmod, chown, truncate)
    NotifyChange = 8,
    /// `vfs_open`
    Open = 9,
    /// `vfs_setxattr`
    SetXattr = 10,
    /// `vfs_removexattr`
    RemoveXattr = 11,
    /// `vfs_set_acl`
    SetAcl = 12,
    /// `vfs_remove_acl`
    RemoveAcl = 13,
}

/// What happened to the file. Values are fixed: they are the wire format.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A regular file was created by an open with `O_CREAT` (or `creat`).
    Create = 1,
    /// An existing file was opened for writing.
    OpenWrite = 2,
    /// The first successful write through an open file.
    Write = 3,
    /// A file that was opened for writing was closed; `size` is the bytes written.
    CloseWrite = 4,
    /// The file was truncated to `size` bytes.
    Truncate = 5,
    /// A name was removed.
    Unlink = 6,
    /// A directory was created.
    Mkdir = 7,
    /// A directory was removed.
    Rmdir = 8,
    /// `path` was renamed to `path2` (`op_flags` holds `RENAME_*`).
    Rename = 9,
    /// The mode was changed to `mode`.
    Chmod = 10,
    /// The owner was changed to `owner_uid`/`owner_gid` (`u32::MAX` = unchanged).
    Chown = 11,
    /// The extended attribute `name` was set.
    SetXattr = 12,
    /// The extended attribute `name` was removed.
    RemoveXattr = 13,
    /// A hard link `path2` was made to `path`.
    Link = 14,
    /// A symbolic link `path2` was made, pointing at `path` (as given, unresolved).
    Symlink = 15,
    /// A special file (FIFO, socket, device) or regular file was made by `mknod`.
    Mknod = 16,
    /// Process table: the acting task just exec'd (header holds its new identity and exe).
    ProcExec = 17,
    /// Process table: the acting task made a new task; `size` holds its thread id in the low
    /// 32 bits and bit 32 set when it is a thread of the same process (`CLONE_THREAD`).
    ProcFork = 18,
    /// Process table: the acting task is exiting.
    ProcExit = 19,
    /// Kernel-object tiers: the outcome of the operation the same thread announced last (a
    /// record with [`flags::AWAITS_OUTCOME`]). [`flags::FAILED`] when it failed; for a
    /// truncate, `size` holds the new length.
    Outcome = 20,
    /// Process table: task `size` (a thread id) was renamed; the new name is the record's
    /// `name` string.
    ProcRename = 21,
    /// Process table: process `size` (its leader's thread id) moved to the cgroup v2 cgroup
    /// whose id is in `ino`.
    ProcCgroup = 22,
    /// The file's access or modification time was set (`utimensat`, `futimens`, `utimes`).
    Utimes = 23,
    /// Space was allocated, punched or zeroed (`fallocate`, mode in `op_flags`, length in
    /// `size`): the content may have changed.
    Fallocate = 24,
}

impl EventKind {
    /// Decodes a kind byte from the wire; `None` for a value this build does not know.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Create,
            2 => Self::OpenWrite,
            3 => Self::Write,
            4 => Self::CloseWrite,
            5 => Self::Truncate,
            6 => Self::Unlink,
            7 => Self::Mkdir,
            8 => Self::Rmdir,
            9 => Self::Rename,
            10 => Self::Chmod,
            11 => Self::Chown,
            12 => Self::SetXattr,
            13 => Self::RemoveXattr,
            14 => Self::Link,
            15 => Self::Symlink,
            16 => Self::Mknod,
            17 => Self::ProcExec,
            18 => Self::ProcFork,
            19 => Self::ProcExit,
            20 => Self::Outcome,
            21 => Self::ProcRename,
            22 => Self::ProcCgroup,
            23 => Self::Utimes,
            24 => Self::Fallocate,
            _ => return None,
        })
    }
}

/// Bits of [`EventHeader::flags`].
pub mod flags {
    /// `path` was longer than the kernel could emit, or deeper than [`super::MAX_PATH_DEPTH`].
    pub const PATH_TRUNCATED: u16 = 1 << 0;
    /// Same for `path2`.
    pub const PATH2_TRUNCATED: u16 = 1 << 1;
    /// Same for `exe`.
    pub const EXE_TRUNCATED: u16 = 1 << 2;
    /// `path` was built from the caller's string (plus dirfd/cwd), not from a kernel object.
    pub const PATH_FROM_STRING: u16 = 1 << 3;
    /// Same for `path2`.
    pub const PATH2_FROM_STRING: u16 = 1 << 4;
    /// The open truncated the file (`O_TRUNC`).
    pub const OPEN_TRUNC: u16 = 1 << 5;
    /// `ino`, `dev` and `imode` are filled from the file's inode.
    pub const HAS_INODE: u16 = 1 << 6;
    /// The operation's flags asked not to follow a final symlink (`lchown`, `AT_SYMLINK_NOFOLLOW`).
    pub const NOFOLLOW: u16 = 1 << 7;
    /// Kernel-object tiers: sent by a pre-operation hook; report it only once an
    /// [`super::EventKind::Outcome`] record from the same thread says it succeeded.
    pub const AWAITS_OUTCOME: u16 = 1 << 8;
    /// On an [`super::EventKind::Outcome`] record: the operation failed.
    pub const FAILED: u16 = 1 << 9;
    /// `path2` is the caller's path string, as called (the event's `path` is the object the
    /// kernel acted on).
    pub const PATH2_AS_CALLED: u16 = 1 << 11;
    /// `size` is not known (a write seen at the kernel's permission check, not at a syscall).
    pub const NO_SIZE: u16 = 1 << 10;
}

/// Fixed part of every event record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`] value.
    pub kind: u8,
    /// Explicit padding.
    pub _pad0: u8,
    /// Bits from [`flags`].
    pub flags: u16,
    /// Length of `path` in the data that follows.
    pub path_len: u16,
    /// Length of `path2`.
    pub path2_len: u16,
    /// Length of the acting process's executable path.
    pub exe_len: u16,
    /// Length of the xattr name.
    pub name_len: u16,
    /// Syscall number that produced the event.
    pub syscall_nr: u32,
    /// `bpf_ktime_get_boot_ns()` at emission.
    pub ktime_ns: u64,
    /// Thread id (kernel `pid`).
    pub tid: u32,
    /// Process id (kernel `tgid`).
    pub tgid: u32,
    /// Parent process id (`real_parent->tgid`).
    pub ppid: u32,
    /// Real uid.
    pub uid: u32,
    /// Effective uid.
    pub euid: u32,
    /// Real gid.
    pub gid: u32,
    /// Effective gid.
    pub egid: u32,
    /// Explicit padding.
    pub _pad1: u32,
    /// For `path` and `path2`: the watched object the kernel found on the way from the
    /// object to the root, by identity (see [`WatchMatch`]).
    pub watch: [WatchMatch; 2],
    /// cgroup v2 id of the acting task.
    pub cgroup_id: u64,
    /// Start time of the thread-group leader, ns since boot: tells reused pids apart.
    pub start_time_ns: u64,
    /// `task_struct.comm`, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// New mode (chmod, mkdir, mknod, create).
    pub mode: u32,
    /// New owner uid (chown).
    pub owner_uid: u32,
    /// New owner gid (chown).
    pub owner_gid: u32,
    /// Operation flags: `RENAME_*`, open flags, `AT_*`, xattr flags.
    pub op_flags: u32,
    /// Bytes written (close-after-write) or new length (truncate).
    pub size: u64,
    /// Inode number, when `HAS_INODE`.
    pub ino: u64,
    /// Device (`s_dev`, kernel encoding), when `HAS_INODE`.
    pub dev: u32,
    /// Inode mode (type and permission bits), when `HAS_INODE`.
    pub imode: u32,
}

/// Size of [`EventHeader`] on the wire.
pub const HEADER_LEN: usize = core::mem::size_of::<EventHeader>();
const _: () = assert!(HEADER_LEN == 144);

/// Which watched object a path passed through, found by identity (device and inode) while
/// the kernel walked it from the object up: however the path was spelled (a bind mount, a
/// symlinked directory, another hard link), the object is watched, and its watched name is
/// `roots[id - 1]` followed by the last `below` bytes of the path ([`OBJECT_BY_INODE`]:
/// the watched name userspace knows for the event's inode).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchMatch {
    /// [`WatchedObject::id`]; 0: no watched object on the way.
    pub id: u32,
    /// Bytes of the path below the matched object (0: the object itself).
    pub below: u16,
    /// Explicit padding.
    pub _pad: u16,
}

/// Key of the `WATCHED_OBJECTS` map: an inode on a device (`s_dev`, kernel encoding).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    /// Inode number.
    pub ino: u64,
    /// Device.
    pub dev: u32,
    /// Explicit padding.
    pub _pad: u32,
}

/// Value of the `WATCHED_OBJECTS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchedObject {
    /// 1 + the index of the watched root in userspace's table, or [`OBJECT_BY_INODE`].
    pub id: u32,
    /// Bits from [`root_flags`]: the object itself (`SELF`), everything below it
    /// (`RECURSIVE`), its direct children (`CHILDREN`).
    pub flags: u32,
}

/// [`WatchedObject::id`] of a watched file with other names (hard links): userspace names
/// it by its inode. The kernel-object tiers add one when a watched file is hard-linked.
pub const OBJECT_BY_INODE: u32 = u32::MAX;
/// Capacity of the `WATCHED_OBJECTS` map.
pub const MAX_WATCHED_OBJECTS: u32 = 65_536;

/// The scratch record the kernel builds an event in before copying it to the ring buffer.
#[repr(C)]
pub struct EventBuf {
    /// The fixed part.
    pub header: EventHeader,
    /// The variable strings; see the module docs for their order.
    pub data: [u8; DATA_CAP],
}

/// Why a record or a piece of state was dropped in the kernel. Index into the `DROPS` map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The ring buffer had no room for an operation's record (a whole operation, or the
    /// announcement of one, whose outcome is then not sent): one operation lost.
    RingFull = 0,
    /// The table of in-flight syscalls was full: the syscall was not followed.
    PendingFull = 1,
    /// The table of files being written was full: writes to that file will not be seen.
    WritersFull = 2,
    /// The ring buffer had no room for the outcome of an announced operation: that
    /// operation is lost (its announcement alone is never reported).
    RingFullOutcome = 3,
    /// The ring buffer had no room for a process-table record: no operation lost, but the
    /// processes named afterwards may be less complete (a later `/proc` read fills in).
    RingFullProcess = 4,
}

impl DropReason {
    /// Why a record of kind `kind` (an [`EventKind`] byte) that the ring buffer had no room
    /// for is counted: what losing it costs.
    pub const fn ring_full(kind: u8) -> Self {
        if kind == EventKind::Outcome as u8 {
            Self::RingFullOutcome
        } else if kind == EventKind::ProcExec as u8
            || kind == EventKind::ProcFork as u8
            || kind == EventKind::ProcExit as u8
            || kind == EventKind::ProcRename as u8
            || kind == EventKind::ProcCgroup as u8
        {
            Self::RingFullProcess
        } else {
            Self::RingFull
        }
    }
}

/// Number of [`DropReason`] values (size of the `DROPS` map).
pub const DROP_REASONS: u32 = 5;

/// Bits of [`WatchRoot::flags`].
pub mod root_flags {
    /// Everything below the root, at any depth.
    pub const RECURSIVE: u32 = 1 << 0;
    /// Only direct children of the root (a `DIR/*` or `DIR/*SUFFIX` glob).
    pub const CHILDREN: u32 = 1 << 1;
    /// The root itself (a watched file, or a directory's own attributes).
    pub const SELF: u32 = 1 << 2;
}

/// Value of the watch-root trie: what below this prefix is watched.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WatchRoot {
    /// Length in bytes of the key's path (including the trailing `/`).
    pub root_len: u32,
    /// Bits from [`root_flags`].
    pub flags: u32,
    /// Length of `suffix`; 0 means any name.
    pub suffix_len: u32,
    /// Required file-name suffix for `CHILDREN` (for example `.conf`).
    pub suffix: [u8; SUFFIX_MAX],
}

/// Syscall arguments saved at entry, consumed at exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    /// Syscall number, checked at exit against the exiting syscall.
    pub nr: u32,
    /// Bits from [`pending_flags`].
    pub flags: u32,
    /// The six raw arguments.
    pub args: [u64; 6],
    /// Writes: the `struct file` address being written. Opens: the effective open flags.
    pub extra: u64,
}

/// Bits of [`Pending::flags`].
pub mod pending_flags {
    /// The object the call acts on was found by the kernel while the call ran (a ctime
    /// update on a watched object) and announced: the exit sends only the outcome.
    pub const ANNOUNCED: u32 = 1 << 0;
    /// The call changes a path-named object's attributes and is counted in the kernel's
    /// count of such calls in flight (the ctime hooks do nothing while it is zero).
    pub const ATTRIBUTE_CALL: u32 = 1 << 1;
}

/// State of a file opened for writing under a watched root.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WriterState {
    /// Bytes written so far.
    pub bytes: u64,
    /// Successful write syscalls so far (1 once a write without a syscall was reported).
    pub writes: u32,
    /// Bits from [`writer_flags`].
    pub flags: u32,
    /// The process that opened the file (tgid).
    pub owner: u32,
    /// Padding (zero).
    pub _pad: u32,
}

/// Bits of [`WriterState::flags`].
pub mod writer_flags {
    /// Some writes did not pass a write syscall (io_uring): `bytes` is not the total.
    pub const UNCOUNTED: u32 = 1 << 0;
    /// A close of a descriptor to the file was reported while other references remained;
    /// the counters start again from there (tracepoint tier).
    pub const REPORTED: u32 = 1 << 1;
}

/// Byte offsets of the kernel struct fields the programs read, taken from the running
/// kernel's BTF at load time (Rust eBPF has no CO-RE). Zero means "not found".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    /// `task_struct.files`
    pub task_files: u32,
    /// `task_struct.fs`
    pub task_fs: u32,
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// `task_struct.group_leader`
    pub task_group_leader: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.start_boottime`
    pub task_start_time: u32,
    /// `task_struct.mm`
    pub task_mm: u32,
    /// `task_struct.cred`
    pub task_cred: u32,
    /// `files_struct.fdt`
    pub files_fdt: u32,
    /// `fdtable.max_fds`
    pub fdt_max_fds: u32,
    /// `fdtable.fd`
    pub fdt_fd: u32,
    /// `fs_struct.pwd`
    pub fs_pwd: u32,
    /// `path.mnt`
    pub path_mnt: u32,
    /// `path.dentry`
    pub path_dentry: u32,
    /// `file.f_path`
    pub file_path: u32,
    /// `file.f_inode`
    pub file_inode: u32,
    /// `file.f_mode`
    pub file_mode: u32,
    /// `dentry.d_parent`
    pub dentry_parent: u32,
    /// `dentry.d_name` + `qstr.len`
    pub dentry_name_len: u32,
    /// `dentry.d_name` + `qstr.name`
    pub dentry_name_ptr: u32,
    /// `inode.i_ino`
    pub inode_ino: u32,
    /// `inode.i_mode`
    pub inode_mode: u32,
    /// `inode.i_sb`
    pub inode_sb: u32,
    /// `super_block.s_dev`
    pub sb_dev: u32,
    /// Offset of `struct vfsmount mnt` inside `struct mount`.
    pub mount_mnt: u32,
    /// `mount.mnt_parent`
    pub mount_parent: u32,
    /// `mount.mnt_mountpoint`
    pub mount_mountpoint: u32,
    /// `vfsmount.mnt_root`
    pub vfsmount_root: u32,
    /// `mm_struct.exe_file`
    pub mm_exe_file: u32,
    /// `cred.uid`
    pub cred_uid: u32,
    /// `cred.gid`
    pub cred_gid: u32,
    /// `cred.euid`
    pub cred_euid: u32,
    /// `cred.egid`
    pub cred_egid: u32,
    /// `file.f_ref` (6.13+, `file_ref_t`) or `file.f_count` (older, `atomic_long_t`).
    pub file_count: u32,
    /// The value of that counter when exactly one reference is held (0 for `f_ref`, 1 for
    /// `f_count`).
    pub file_count_one: u32,
    /// `file.f_flags`
    pub file_flags: u32,
    /// `dentry.d_inode`
    pub dentry_inode: u32,
    /// `dentry.d_sb`
    pub dentry_sb: u32,
    /// `super_block.s_mounts`: the `struct mount`s of a file system
    pub sb_mounts: u32,
    /// How `s_mounts` links mounts: [`MOUNTS_LIST_HEAD`] (`mount.mnt_instance`, before
    /// 6.16), [`MOUNTS_NEXT_FOR_SB`] (`mount.mnt_next_for_sb`), or 0 (neither found).
    pub sb_mounts_style: u32,
    /// `mount.mnt_instance` or `mount.mnt_next_for_sb`, by `sb_mounts_style`
    pub mount_instance: u32,
    /// `mount.mnt_ns`
    pub mount_ns: u32,
    /// `task_struct.nsproxy`
    pub task_nsproxy: u32,
    /// `nsproxy.mnt_ns`
    pub nsproxy_mnt_ns: u32,
    /// `iattr.ia_size`
    pub iattr_size: u32,
    /// `iattr.ia_valid`
    pub iattr_valid: u32,
    /// `inode.i_dentry`: the list of the inode's dentries (`hlist_head`).
    pub inode_dentry: u32,
    /// `dentry.d_u`, whose `d_alias` links a dentry into its inode's `i_dentry`.
    pub dentry_alias: u32,
}

/// Byte offsets of fields in tracepoint records, read from their tracefs `format` files at
/// load time (they move between kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracepointFields {
    /// `task:task_newtask`: `pid` (the new task).
    pub newtask_pid: u32,
    /// `task:task_newtask`: `clone_flags`.
    pub newtask_flags: u32,
    /// `task:task_rename`: `pid` (the renamed task).
    pub rename_pid: u32,
    /// `task:task_rename`: `newcomm` (16 bytes).
    pub rename_newcomm: u32,
    /// `cgroup:cgroup_attach_task`: `dst_root` (hierarchy id; 0 is cgroup v2).
    pub attach_root: u32,
    /// `cgroup:cgroup_attach_task`: `dst_id`.
    pub attach_id: u32,
    /// `cgroup:cgroup_attach_task`: `pid` (the moved process's leader).
    pub attach_pid: u32,
    /// Explicit padding.
    pub _pad: u32,
}

impl TracepointFields {
    /// The layout of kernels 6.1 to 6.18, used where a format file cannot be read.
    pub const DEFAULT: Self = Self {
        newtask_pid: 8,
        newtask_flags: 32,
        rename_pid: 8,
        rename_newcomm: 28,
        attach_root: 8,
        attach_id: 16,
        attach_pid: 24,
        _pad: 0,
    };
}

/// [`Offsets::sb_mounts_style`]: `s_mounts` is a `list_head` of `mount.mnt_instance`.
pub const MOUNTS_LIST_HEAD: u32 = 1;
/// [`Offsets::sb_mounts_style`]: `s_mounts` points at the first mount, each mount at the
/// next through `mnt_next_for_sb`.
pub const MOUNTS_NEXT_FOR_SB: u32 = 2;

/// `f_mode` bit: the file is open for writing. Not in BTF (a macro); stable since 2.6.
pub const FMODE_WRITE: u32 = 0x2;
/// `f_mode` bit: this open created the file. Not in BTF (a macro); `1 << 20` since 4.19.
pub const FMODE_CREATED: u32 = 1 << 20;
/// Open flags that make an open interesting: write access, create or truncate.
pub const OPEN_WRITE_MASK: u64 = 0o1 | 0o2 | 0o100 | 0o1000;
/// `O_TRUNC`.
pub const O_TRUNC: u64 = 0o1000;
/// `AT_FDCWD`, as the kernel sees it in a 64-bit register (sign-extended `int`).
pub const AT_FDCWD: i32 = -100;
/// `AT_REMOVEDIR` (unlinkat): the operation is an rmdir.
pub const AT_REMOVEDIR: u64 = 0x200;
/// `AT_SYMLINK_NOFOLLOW`.
pub const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
/// `MAY_WRITE` in a `file_permission` mask.
pub const MAY_WRITE: u64 = 0x2;
/// The file-type bits of a mode (`st_mode`, `i_mode`): Linux's values, which the event model
/// and the baseline keep on every platform.
pub mod mode {
    /// The type bits.
    pub const S_IFMT: u32 = 0o170_000;
    /// A socket.
    pub const S_IFSOCK: u32 = 0o140_000;
    /// A symbolic link.
    pub const S_IFLNK: u32 = 0o120_000;
    /// A regular file.
    pub const S_IFREG: u32 = 0o100_000;
    /// A block device.
    pub const S_IFBLK: u32 = 0o060_000;
    /// A directory.
    pub const S_IFDIR: u32 = 0o040_000;
    /// A character device.
    pub const S_IFCHR: u32 = 0o020_000;
    /// A FIFO.
    pub const S_IFIFO: u32 = 0o010_000;
}
pub use mode::{S_IFLNK, S_IFMT, S_IFREG};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), contain only integers and byte arrays, and have
    // explicit padding, so every bit pattern is valid.
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::TracepointFields {}
    unsafe impl aya::Pod for super::ObjectKey {}
    unsafe impl aya::Pod for super::WatchedObject {}
    unsafe impl aya::Pod for super::WatchRoot {}
    unsafe impl aya::Pod for super::SyscallSpec {}
    unsafe impl aya::Pod for super::EventHeader {}
}

const _: () = assert!(core::mem::size_of::<Offsets>().is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<WatchRoot>() == 12 + SUFFIX_MAX);
const _: () = assert!(core::mem::size_of::<TracepointFields>() == 32);
const _: () = assert!(core::mem::size_of::<ObjectKey>() == 16);
const _: () = assert!(core::mem::size_of::<WatchedObject>() == 8);
const _: () = assert!(core::mem::size_of::<Pending>() == 64);
const _: () = assert!(MAX_RECORD <= DATA_CAP);

#[cfg(test)]
mod tests {
    use super::{DropReason, EventKind};

    #[test]
    fn a_lost_record_is_counted_by_what_it_costs() {
        for (kind, reason) in [
            (EventKind::Chmod, DropReason::RingFull),
            (EventKind::Create, DropReason::RingFull),
            (EventKind::Outcome, DropReason::RingFullOutcome),
            (EventKind::ProcExec, DropReason::RingFullProcess),
            (EventKind::ProcFork, DropReason::RingFullProcess),
            (EventKind::ProcExit, DropReason::RingFullProcess),
            (EventKind::ProcRename, DropReason::RingFullProcess),
            (EventKind::ProcCgroup, DropReason::RingFullProcess),
        ] {
            assert_eq!(DropReason::ring_full(kind as u8), reason, "{kind:?}");
        }
    }
}
