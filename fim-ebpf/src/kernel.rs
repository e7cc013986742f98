//! Reads of kernel structures at offsets taken from the running kernel's BTF.
//!
//! Rust eBPF has no CO-RE, so no struct layout is compiled in: userspace fills the `OFFSETS`
//! global before load, and every field read here goes through [`off!`].

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_user};
use fim_common::Offsets;

/// Field offsets of the running kernel, set by userspace at load time.
#[unsafe(no_mangle)]
pub static OFFSETS: Offsets = Offsets {
    task_files: 0,
    task_fs: 0,
    task_real_parent: 0,
    task_group_leader: 0,
    task_tgid: 0,
    task_start_time: 0,
    task_mm: 0,
    task_cred: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    fs_pwd: 0,
    path_mnt: 0,
    path_dentry: 0,
    file_path: 0,
    file_inode: 0,
    file_mode: 0,
    dentry_parent: 0,
    dentry_name_len: 0,
    dentry_name_ptr: 0,
    inode_ino: 0,
    inode_mode: 0,
    inode_sb: 0,
    sb_dev: 0,
    mount_mnt: 0,
    mount_parent: 0,
    mount_mountpoint: 0,
    vfsmount_root: 0,
    mm_exe_file: 0,
    cred_uid: 0,
    cred_gid: 0,
    cred_euid: 0,
    cred_egid: 0,
    file_count: 0,
    file_count_one: 0,
    file_flags: 0,
    dentry_inode: 0,
    dentry_sb: 0,
    sb_mounts: 0,
    sb_mounts_style: 0,
    mount_instance: 0,
    mount_ns: 0,
    task_nsproxy: 0,
    nsproxy_mnt_ns: 0,
    iattr_size: 0,
    iattr_valid: 0,
    inode_dentry: 0,
    dentry_alias: 0,
};

/// Thread-group id of the daemon, set by userspace at load time.
#[unsafe(no_mangle)]
pub static SELF_TGID: u32 = 0;

/// Field offsets in tracepoint records, set by userspace at load time.
#[unsafe(no_mangle)]
pub static TRACEPOINT_FIELDS: fim_common::TracepointFields = fim_common::TracepointFields::DEFAULT;

/// Reads one field of a global userspace set at load time; volatile so the compiler cannot
/// fold the initialiser.
macro_rules! global {
    ($global:ident . $field:ident) => {{
        #[allow(
            unused_unsafe,
            reason = "the macro is used inside and outside unsafe blocks"
        )]
        let v = unsafe { core::ptr::read_volatile(&$crate::kernel::$global.$field) };
        v
    }};
}
pub(crate) use global;

/// One tracepoint field offset ([`TRACEPOINT_FIELDS`]).
macro_rules! tp_field {
    ($field:ident) => {
        $crate::kernel::global!(TRACEPOINT_FIELDS.$field) as usize
    };
}
pub(crate) use tp_field;

/// Bit `i`: outcome function `i` returns a pointer on this kernel; set by userspace.
#[unsafe(no_mangle)]
pub static OUTCOME_RETURNS_PTR: u32 = 0;

/// One kernel struct field offset ([`OFFSETS`]).
macro_rules! off {
    ($field:ident) => {
        u64::from($crate::kernel::global!(OFFSETS.$field))
    };
}
pub(crate) use off;

/// The daemon's own tgid.
#[inline(always)]
pub fn self_tgid() -> u32 {
    unsafe { core::ptr::read_volatile(&SELF_TGID) }
}

/// Reads a `T` at kernel address `base + offset`.
#[inline(always)]
pub fn read<T>(base: u64, offset: u64) -> Option<T> {
    if base == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + offset) as *const T).ok() }
}

/// Reads a pointer-sized field; `None` for a read error or a NULL pointer.
#[inline(always)]
pub fn read_ptr(base: u64, offset: u64) -> Option<u64> {
    match read::<u64>(base, offset) {
        Some(0) | None => None,
        p => p,
    }
}

/// Reads a `T` from user memory.
#[inline(always)]
pub fn read_user<T>(addr: u64) -> Option<T> {
    unsafe { bpf_probe_read_user(addr as *const T).ok() }
}

/// The current `task_struct`.
#[inline(always)]
pub fn current_task() -> u64 {
    unsafe { bpf_get_current_task() }
}

/// The `struct file` behind `fd` in the current task's table.
#[inline(always)]
pub fn fd_to_file(fd: i64) -> Option<u64> {
    if fd < 0 {
        return None;
    }
    let files = read_ptr(current_task(), off!(task_files))?;
    let fdt = read_ptr(files, off!(files_fdt))?;
    let max_fds: u32 = read(fdt, off!(fdt_max_fds))?;
    if fd as u64 >= u64::from(max_fds) {
        return None;
    }
    let array = read_ptr(fdt, off!(fdt_fd))?;
    read_ptr(array, (fd as u64) * 8)
}

/// A `(vfsmount, dentry)` pair: what the kernel calls a `struct path`.
#[derive(Clone, Copy)]
pub struct KPath {
    /// `struct vfsmount *`
    pub mnt: u64,
    /// `struct dentry *`
    pub dentry: u64,
}

/// Reads the `struct path` embedded at `base + offset`.
#[inline(always)]
pub fn read_kpath(base: u64, offset: u64) -> Option<KPath> {
    let mnt = read_ptr(base, offset + off!(path_mnt))?;
    let dentry = read_ptr(base, offset + off!(path_dentry))?;
    Some(KPath { mnt, dentry })
}

/// The path of an open file.
#[inline(always)]
pub fn file_kpath(file: u64) -> Option<KPath> {
    read_kpath(file, off!(file_path))
}

/// The current working directory of the current task.
#[inline(always)]
pub fn cwd_kpath() -> Option<KPath> {
    let fs = read_ptr(current_task(), off!(task_fs))?;
    read_kpath(fs, off!(fs_pwd))
}

/// Inode identity: `(ino, dev, mode)`.
#[inline(always)]
pub fn inode_identity(inode: u64) -> Option<(u64, u32, u32)> {
    let ino: u64 = read(inode, off!(inode_ino))?;
    let mode: u16 = read(inode, off!(inode_mode))?;
    let sb = read_ptr(inode, off!(inode_sb))?;
    let dev: u32 = read(sb, off!(sb_dev))?;
    Some((ino, dev, u32::from(mode)))
}

/// Inode identity of an open file.
#[inline(always)]
pub fn file_inode(file: u64) -> Option<(u64, u32, u32)> {
    inode_identity(read_ptr(file, off!(file_inode))?)
}

/// Inode identity behind a dentry; `None` for a negative dentry.
#[inline(always)]
pub fn dentry_inode(dentry: u64) -> Option<(u64, u32, u32)> {
    inode_identity(read_ptr(dentry, off!(dentry_inode))?)
}

/// A mount of the file system holding `dentry`, in the current task's mount namespace: for
/// hooks that get only a dentry (xattrs). The first such mount of the file system is taken;
/// a file system mounted several times in one namespace (bind mounts) is reported under
/// that first mount.
#[inline(always)]
pub fn mount_of(dentry: u64) -> Option<u64> {
    let sb = read_ptr(dentry, off!(dentry_sb))?;
    let nsproxy = read_ptr(current_task(), off!(task_nsproxy))?;
    let ns = read_ptr(nsproxy, off!(nsproxy_mnt_ns))?;
    let head = sb + off!(sb_mounts);
    let list_head = off!(sb_mounts_style) == u64::from(fim_common::MOUNTS_LIST_HEAD);
    // list_head: the first link; otherwise: the first mount.
    let mut node = read_ptr(head, 0)?;
    for _ in 0..8 {
        let mount = if list_head {
            if node == head {
                return None;
            }
            node - off!(mount_instance)
        } else {
            node
        };
        if read_ptr(mount, off!(mount_ns)) == Some(ns) {
            return Some(mount + off!(mount_mnt));
        }
        node = if list_head {
            read_ptr(node, 0)?
        } else {
            read_ptr(mount, off!(mount_instance))?
        };
    }
    None
}
