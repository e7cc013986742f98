//! Filling in the acting process and sending the record to userspace.

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_ktime_get_boot_ns, generated::bpf_probe_read_kernel,
    },
};
use fim_common::{
    DATA_MASK, DropReason, EventBuf, EventHeader, HEADER_LEN, MAX_RECORD, PATH_MAX, XATTR_NAME_MAX,
    flags,
};

use crate::{
    kernel::{current_task, dentry_inode, file_inode, off, read, read_ptr},
    maps::{EVENTS, EXE_CACHE, SCRATCH, count_drop},
    path::{Written, write_exe_path},
};

/// Past this much waiting, wake the reader whatever it is doing. Below it, the ring's own
/// rule applies: a record wakes the reader only when the reader has read everything before
/// it (it is then waiting). At low rates each event wakes it at once; at high rates the
/// reader, busy or pausing between batches (userspace), is not woken per record.
const WAKEUP_THRESHOLD: u64 = 256 * 1024;

/// The per-CPU scratch record, with a cleared header of the given kind.
#[inline(always)]
pub fn new_event(kind: u8, syscall_nr: u32) -> Option<*mut EventBuf> {
    let buf = SCRATCH.get_ptr_mut(0)?;
    // Clear the header with aligned 8-byte stores the compiler cannot turn into a `memset`
    // call: kernels before ~6.5 reject a call to a global subprogram (memset) that takes a
    // map-value pointer ("reg type unsupported for arg#0 function memset").
    let words = buf.cast::<u64>();
    for i in 0..(core::mem::size_of::<EventHeader>() / 8) {
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    unsafe {
        (*buf).header.kind = kind;
        (*buf).header.syscall_nr = syscall_nr;
    }
    Some(buf)
}

/// Fills the process fields and appends the executable path at `pos`; returns the new end.
#[inline(always)]
fn fill_process(buf: *mut EventBuf, pos: usize) -> usize {
    let h = unsafe { &mut (*buf).header };
    let pid_tgid = bpf_get_current_pid_tgid();
    h.tid = pid_tgid as u32;
    h.tgid = (pid_tgid >> 32) as u32;
    h.ktime_ns = unsafe { bpf_ktime_get_boot_ns() };
    h.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    h.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    let task = current_task();
    if let Some(leader) = read_ptr(task, off!(task_group_leader)) {
        h.start_time_ns = read(leader, off!(task_start_time)).unwrap_or(0);
    }
    if let Some(parent) = read_ptr(task, off!(task_real_parent)) {
        h.ppid = read(parent, off!(task_tgid)).unwrap_or(0);
    }
    if let Some(cred) = read_ptr(task, off!(task_cred)) {
        (h.uid, h.gid, h.euid, h.egid) = ids(cred);
    }
    let start_time = h.start_time_ns;
    let Some(mm) = read_ptr(task, off!(task_mm)) else {
        return pos;
    };
    let Some(exe) = read_ptr(mm, off!(mm_exe_file)) else {
        return pos;
    };
    let (len, truncated) = match exe_path(buf, pos, mm, exe, start_time) {
        Some(w) => w,
        None => return pos,
    };
    let h = unsafe { &mut (*buf).header };
    h.exe_len = len as u16;
    if truncated {
        h.flags |= flags::EXE_TRUNCATED;
    }
    pos + len
}

/// The real and effective user and group ids of `cred`: the ids are neighbours
/// (`uid, gid, suid, sgid, euid, egid`), read in one copy where this kernel lays them out
/// so, else one by one. `u32::MAX` for an id that could not be read.
#[inline(always)]
fn ids(cred: u64) -> (u32, u32, u32, u32) {
    let base = off!(cred_uid);
    // Constant indices: the 6.1 verifier refuses variable-offset reads from the stack.
    let slot = |field: u64| match field.wrapping_sub(base) {
        0 => Some(0),
        4 => Some(1),
        8 => Some(2),
        12 => Some(3),
        16 => Some(4),
        20 => Some(5),
        _ => None,
    };
    let slots = (
        slot(off!(cred_gid)),
        slot(off!(cred_euid)),
        slot(off!(cred_egid)),
    );
    if let (Some(g), Some(eu), Some(eg)) = slots
        && let Some(block) = read::<[u32; 6]>(cred, base)
    {
        let pick = |i: usize| match i {
            0 => block[0],
            1 => block[1],
            2 => block[2],
            3 => block[3],
            4 => block[4],
            _ => block[5],
        };
        return (block[0], pick(g), pick(eu), pick(eg));
    }
    (
        read(cred, off!(cred_uid)).unwrap_or(u32::MAX),
        read(cred, off!(cred_gid)).unwrap_or(u32::MAX),
        read(cred, off!(cred_euid)).unwrap_or(u32::MAX),
        read(cred, off!(cred_egid)).unwrap_or(u32::MAX),
    )
}

/// Writes the path of executable `exe` at `pos`: from this CPU's [`EXE_CACHE`] when it is
/// the same process's same executable as last time, else walked (and remembered). Returns
/// its length and whether it was cut short.
#[inline(always)]
fn exe_path(
    buf: *mut EventBuf,
    pos: usize,
    mm: u64,
    exe: u64,
    start: u64,
) -> Option<(usize, bool)> {
    let cache = EXE_CACHE.get_ptr_mut(0)?;
    unsafe {
        if (*cache).mm == mm && (*cache).exe_file == exe && (*cache).start_time == start {
            let len = ((*cache).len as usize) & (PATH_MAX - 1);
            bpf_probe_read_kernel(
                (*buf).data.as_mut_ptr().add(pos & DATA_MASK).cast(),
                len as u32,
                (*cache).bytes.as_ptr().cast(),
            );
            return Some((len, (*cache).truncated != 0));
        }
    }
    let w = write_exe_path(buf, pos, exe)?;
    let len = w.len & (PATH_MAX - 1);
    unsafe {
        (*cache).mm = mm;
        (*cache).exe_file = exe;
        (*cache).start_time = start;
        (*cache).len = len as u64;
        (*cache).truncated = u64::from(w.truncated);
        bpf_probe_read_kernel(
            (*cache).bytes.as_mut_ptr().cast(),
            len as u32,
            (*buf).data.as_ptr().add(pos & DATA_MASK).cast(),
        );
    }
    Some((w.len, w.truncated))
}

/// Completes the record whose strings end at `end` (after `path`, `path2`) and sends it.
/// `name` strings, if any, must be appended by the caller *after* this returns `pos`; use
/// [`finish_with`] for that.
#[inline(always)]
pub fn finish(buf: *mut EventBuf, end: usize) -> bool {
    let end = fill_process(buf, end);
    send(buf, end)
}

/// Like [`finish`], but lets `append` add the trailing `name` string after the exe path.
#[inline(always)]
pub fn finish_with(
    buf: *mut EventBuf,
    end: usize,
    append: impl FnOnce(*mut EventBuf, usize) -> usize,
) -> bool {
    let end = fill_process(buf, end);
    let end = append(buf, end);
    send(buf, end)
}

/// Sends a record that names only the acting thread (an outcome record).
#[inline(always)]
pub fn finish_bare(buf: *mut EventBuf) -> bool {
    let h = unsafe { &mut (*buf).header };
    let pid_tgid = bpf_get_current_pid_tgid();
    h.tid = pid_tgid as u32;
    h.tgid = (pid_tgid >> 32) as u32;
    h.ktime_ns = unsafe { bpf_ktime_get_boot_ns() };
    send(buf, 0)
}

#[inline(always)]
pub fn set_path(buf: *mut EventBuf, w: Written, from_string: bool) {
    let h = unsafe { &mut (*buf).header };
    h.path_len = w.len as u16;
    h.watch[0] = w.watch;
    if w.truncated {
        h.flags |= flags::PATH_TRUNCATED;
    }
    if from_string {
        h.flags |= flags::PATH_FROM_STRING;
    }
}

#[inline(always)]
pub fn set_path2(buf: *mut EventBuf, w: Written, from_string: bool) {
    let h = unsafe { &mut (*buf).header };
    h.path2_len = w.len as u16;
    h.watch[1] = w.watch;
    if w.truncated {
        h.flags |= flags::PATH2_TRUNCATED;
    }
    if from_string {
        h.flags |= flags::PATH2_FROM_STRING;
    }
}

/// Fills `ino`/`dev`/`imode` from an open file's inode.
#[inline(always)]
pub fn set_inode(buf: *mut EventBuf, file: u64) {
    set_identity(buf, file_inode(file));
}

/// Fills `ino`/`dev`/`imode` from an inode.
#[inline(always)]
pub fn set_inode_of(buf: *mut EventBuf, inode: u64) {
    set_identity(buf, crate::kernel::inode_identity(inode));
}

/// Fills `ino`/`dev`/`imode` from a dentry's inode, when it has one.
#[inline(always)]
pub fn set_dentry_inode(buf: *mut EventBuf, dentry: u64) {
    set_identity(buf, dentry_inode(dentry));
}

#[inline(always)]
fn set_identity(buf: *mut EventBuf, identity: Option<(u64, u32, u32)>) {
    if let Some((ino, dev, mode)) = identity {
        let h = unsafe { &mut (*buf).header };
        h.ino = ino;
        h.dev = dev;
        h.imode = mode;
        h.flags |= flags::HAS_INODE;
    }
}

/// Like [`finish`], with the xattr `name` (if any) copied by `copy` after the exe path.
#[inline(always)]
pub fn finish_named(
    buf: *mut EventBuf,
    end: usize,
    name: Option<u64>,
    copy: impl FnOnce(*mut EventBuf, usize, u64, u32) -> Written,
) -> bool {
    match name {
        Some(name) => finish_with(buf, end, |buf, pos| {
            let w = copy(buf, pos, name, XATTR_NAME_MAX as u32 + 1);
            unsafe { (*buf).header.name_len = w.len as u16 };
            pos + w.len
        }),
        None => finish(buf, end),
    }
}

/// Sends the record; whether it went out. A record the ring has no room for is counted by
/// what it was: an operation (or an announcement), an outcome, a process-table record.
#[inline(always)]
fn send(buf: *mut EventBuf, data_len: usize) -> bool {
    let size = HEADER_LEN + data_len;
    if size > MAX_RECORD || data_len > 3 * PATH_MAX + 256 {
        return false;
    }
    let record = unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), size) };
    let wake = if EVENTS.query(aya_ebpf::bindings::BPF_RB_AVAIL_DATA.into()) > WAKEUP_THRESHOLD {
        BPF_RB_FORCE_WAKEUP
    } else {
        0
    };
    if EVENTS.output::<[u8]>(record, wake.into()).is_ok() {
        return true;
    }
    count_drop(DropReason::ring_full(unsafe { (*buf).header.kind }));
    false
}
