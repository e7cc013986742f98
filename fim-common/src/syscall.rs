//! How a syscall's arguments map onto an event.
//!
//! Syscall numbers are architecture-specific and the eBPF target is not, so the kernel side
//! knows no numbers: userspace fills the `SYSCALLS` table (indexed by number) with one
//! [`SyscallSpec`] per followed syscall, and one program per [`Shape`] is attached to the
//! enter/exit tracepoints of every syscall of that shape.

/// Which handler turns the syscall into an event.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Not followed.
    None = 0,
    /// One path string, optionally relative to a dirfd (unlink, mkdir, chmod, ...).
    Path = 1,
    /// One file descriptor (fchmod, fchown, ftruncate, fsetxattr, ...).
    Fd = 2,
    /// Two paths (rename, link, symlink).
    TwoPaths = 3,
    /// The open family: the result is a file descriptor.
    Open = 4,
}

/// "This argument is not present" in an [`ArgSlot`].
pub const NO_ARG: u8 = 0xff;

/// Index (0-5) of a syscall argument, or [`NO_ARG`].
pub type ArgSlot = u8;

/// One row of the `SYSCALLS` table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallSpec {
    /// A [`Shape`] value.
    pub shape: u8,
    /// The [`crate::EventKind`] value the syscall produces.
    pub kind: u8,
    /// Directory fd the first path is relative to (`AT_FDCWD` when absent).
    pub dfd: ArgSlot,
    /// First path string (or the fd, for [`Shape::Fd`]).
    pub path: ArgSlot,
    /// Directory fd the second path is relative to.
    pub dfd2: ArgSlot,
    /// Second path string.
    pub path2: ArgSlot,
    /// New mode.
    pub mode: ArgSlot,
    /// New owner uid.
    pub uid: ArgSlot,
    /// New owner gid.
    pub gid: ArgSlot,
    /// Extended-attribute name string.
    pub name: ArgSlot,
    /// Operation flags.
    pub flags: ArgSlot,
    /// Length (truncate).
    pub len: ArgSlot,
    /// Non-zero: `flags` is a pointer to a `u64` (openat2's `struct open_how`).
    pub flags_indirect: u8,
    /// Explicit padding.
    pub _pad: [u8; 3],
    /// Flags implied by the syscall itself, or-ed into the event's `op_flags`
    /// (`creat` implies `O_CREAT|O_WRONLY|O_TRUNC`, `lchown` implies no-follow).
    pub fixed_flags: u32,
}

impl SyscallSpec {
    /// A row that follows nothing.
    pub const NONE: Self = Self {
        shape: Shape::None as u8,
        kind: 0,
        dfd: NO_ARG,
        path: NO_ARG,
        dfd2: NO_ARG,
        path2: NO_ARG,
        mode: NO_ARG,
        uid: NO_ARG,
        gid: NO_ARG,
        name: NO_ARG,
        flags: NO_ARG,
        len: NO_ARG,
        flags_indirect: 0,
        _pad: [0; 3],
        fixed_flags: 0,
    };
}

const _: () = assert!(core::mem::size_of::<SyscallSpec>() == 20);
