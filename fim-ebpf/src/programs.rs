//! The programs, one per syscall shape; userspace attaches each to the tracepoints of every
//! syscall of its shape (see `fim_userspace::sensors::ebpf::syscalls`).

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use fim_common::{
    AT_FDCWD, AT_REMOVEDIR, COMM_LEN, DropReason, EventBuf, EventKind, FMODE_CREATED, FMODE_WRITE,
    NO_ARG, O_TRUNC, OBJECT_BY_INODE, OPEN_WRITE_MASK, PATH_MAX, Pending, Shape, SyscallSpec,
    WriterState, flags, pending_flags, writer_flags,
};

use crate::{
    emit::{
        finish, finish_bare, finish_named, finish_with, new_event, set_inode, set_inode_of,
        set_path, set_path2,
    },
    filter::{is_watched, is_watched_path},
    kernel::{fd_to_file, off, read, read_ptr, read_user, self_tgid, tp_field},
    maps::{
        PENDING, SYSCALLS, WRITERS, attribute_calls_in_flight, count_attribute_calls, count_drop,
        follow_writes, uncount_drop,
    },
    path::{
        inode_kpath, is_watched_object, put_byte, write_file_path, write_inode_path,
        write_user_path, write_user_str,
    },
};

/// Offsets in the syscall tracepoint record (`trace_event_raw_sys_enter/exit`).
const NR_OFFSET: usize = 8;
const ARGS_OFFSET: usize = 16;
const RET_OFFSET: usize = 16;

/// Reads a field of a syscall tracepoint's record at a constant offset with a plain load,
/// which the verifier allows for tracepoint contexts: `read_at` is a helper call and a
/// fault-tolerant copy, several times the cost, and these run on every followed syscall
/// of every process.
#[inline(always)]
fn ctx_field<T: Copy, const OFF: usize>(ctx: &TracePointContext) -> T {
    const { assert!(OFF >= 8 && OFF % core::mem::align_of::<T>() == 0) };
    unsafe { core::ptr::read_volatile(ctx.as_ptr().cast::<u8>().add(OFF).cast::<T>()) }
}

#[inline(always)]
fn syscall_nr(ctx: &TracePointContext) -> Option<u32> {
    Some(ctx_field::<i32, NR_OFFSET>(ctx) as u32)
}

/// The return value, in a syscall exit's record.
#[inline(always)]
fn syscall_ret(ctx: &TracePointContext) -> i64 {
    ctx_field::<i64, RET_OFFSET>(ctx)
}

/// Argument `N`, in a syscall entry's record: only for a program attached to syscalls that
/// all have argument `N` (see `save_args`).
#[inline(always)]
fn syscall_arg<const N: usize>(ctx: &TracePointContext) -> u64 {
    match N {
        0 => ctx_field::<u64, ARGS_OFFSET>(ctx),
        1 => ctx_field::<u64, { ARGS_OFFSET + 8 }>(ctx),
        2 => ctx_field::<u64, { ARGS_OFFSET + 16 }>(ctx),
        3 => ctx_field::<u64, { ARGS_OFFSET + 24 }>(ctx),
        4 => ctx_field::<u64, { ARGS_OFFSET + 32 }>(ctx),
        _ => ctx_field::<u64, { ARGS_OFFSET + 40 }>(ctx),
    }
}

#[inline(always)]
fn arg(p: &Pending, slot: u8) -> Option<u64> {
    // Constant indices: the 6.1 verifier refuses variable-offset reads from the stack,
    // where `p` lives.
    match slot {
        0 => Some(p.args[0]),
        1 => Some(p.args[1]),
        2 => Some(p.args[2]),
        3 => Some(p.args[3]),
        4 => Some(p.args[4]),
        5 => Some(p.args[5]),
        _ => None,
    }
}

#[inline(always)]
pub fn is_self() -> bool {
    (bpf_get_current_pid_tgid() >> 32) as u32 == self_tgid()
}

/// Takes the arguments saved at entry if this exit belongs to them and the call succeeded.
#[inline(always)]
fn take_pending(ctx: &TracePointContext) -> Option<(Pending, SyscallSpec, i64)> {
    let id = bpf_get_current_pid_tgid();
    let pending = *unsafe { PENDING.get(&id) }?;
    remove_pending(id, &pending);
    if Some(pending.nr) != syscall_nr(ctx) {
        return None;
    }
    let ret = syscall_ret(ctx);
    if ret < 0 {
        return None;
    }
    let spec = *SYSCALLS.get(pending.nr)?;
    Some((pending, spec, ret))
}

/// Removes the thread's saved arguments `p`, counting an attribute call out.
#[inline(always)]
fn remove_pending(id: u64, p: &Pending) {
    let _ = PENDING.remove(&id);
    if p.flags & pending_flags::ATTRIBUTE_CALL != 0 {
        count_attribute_calls(u64::MAX);
    }
}

/// Whether a syscall of `spec` changes the attributes of an object it names by path: the
/// calls whose object the ctime hooks find by identity.
#[inline(always)]
fn is_attribute_call(spec: &SyscallSpec) -> bool {
    let kind = spec.kind;
    spec.shape == Shape::Path as u8
        && (kind == EventKind::Chmod as u8
            || kind == EventKind::Chown as u8
            || kind == EventKind::Truncate as u8
            || kind == EventKind::Utimes as u8
            || kind == EventKind::SetXattr as u8
            || kind == EventKind::RemoveXattr as u8)
}

/// Saves the arguments of a followed syscall. Opens that neither write, create nor
/// truncate are dropped here, before any map work.
#[tracepoint]
pub fn fim_sys_enter(ctx: TracePointContext) -> u32 {
    let _ = save_args(&ctx);
    0
}

#[inline(always)]
fn save_args(ctx: &TracePointContext) -> Option<()> {
    if is_self() {
        return None;
    }
    let nr = syscall_nr(ctx)?;
    let spec = *SYSCALLS.get(nr)?;
    if spec.shape == Shape::None as u8 {
        return None;
    }
    let mut pending = Pending {
        nr,
        flags: 0,
        args: [0; 6],
        extra: 0,
    };
    // One copy of all six: plain loads past the last argument of a syscall with fewer would
    // make the kernel refuse to attach the program to that syscall's tracepoint (it checks
    // the largest context offset a program reads against the record's size).
    pending.args = unsafe { ctx.read_at::<[u64; 6]>(ARGS_OFFSET) }.ok()?;
    if spec.shape == Shape::Open as u8 {
        let raw = arg(&pending, spec.flags).unwrap_or(0);
        let open_flags = if spec.flags_indirect != 0 {
            read_user::<u64>(raw)?
        } else {
            raw
        };
        let open_flags = open_flags | u64::from(spec.fixed_flags);
        if open_flags & OPEN_WRITE_MASK == 0 {
            return None;
        }
        pending.extra = open_flags;
    }
    let attribute = is_attribute_call(&spec);
    if attribute {
        pending.flags |= pending_flags::ATTRIBUTE_CALL;
    }
    if PENDING
        .insert(&bpf_get_current_pid_tgid(), &pending, 0)
        .is_err()
    {
        count_drop(DropReason::PendingFull);
    } else if attribute {
        count_attribute_calls(1);
    }
    Some(())
}

/// Sets the operation fields every shape shares.
#[inline(always)]
fn set_op_fields(buf: *mut EventBuf, p: &Pending, spec: &SyscallSpec) {
    let h = unsafe { &mut (*buf).header };
    h.mode = arg(p, spec.mode).unwrap_or(0) as u32;
    h.owner_uid = arg(p, spec.uid).map_or(u32::MAX, |v| v as u32);
    h.owner_gid = arg(p, spec.gid).map_or(u32::MAX, |v| v as u32);
    let op_flags = arg(p, spec.flags).unwrap_or(0) | u64::from(spec.fixed_flags);
    h.op_flags = op_flags as u32;
    h.size = arg(p, spec.len).unwrap_or(0);
    if h.kind == EventKind::Unlink as u8 && spec.dfd != NO_ARG && op_flags & AT_REMOVEDIR != 0 {
        h.kind = EventKind::Rmdir as u8;
    }
}

/// Sends the record, with the xattr name at the end when the syscall has one.
#[inline(always)]
fn finish_op(buf: *mut EventBuf, end: usize, p: &Pending, spec: &SyscallSpec) -> bool {
    finish_named(buf, end, arg(p, spec.name), write_user_str)
}

#[inline(always)]
fn dfd_arg(p: &Pending, slot: u8) -> i64 {
    arg(p, slot).map_or(i64::from(AT_FDCWD), |v| i64::from(v as i32))
}

/// Exit of a one-path syscall: unlink, mkdir, chmod, chown, truncate, mknod, *xattr.
#[tracepoint]
pub fn fim_exit_path(ctx: TracePointContext) -> u32 {
    let _ = exit_path(&ctx);
    0
}

#[inline(always)]
fn exit_path(ctx: &TracePointContext) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    if let Some(p) = unsafe { PENDING.get(&id) }
        && p.flags & pending_flags::ANNOUNCED != 0
    {
        // Announced while it ran, from the object itself: only the outcome is left.
        let p = *p;
        remove_pending(id, &p);
        let ret = syscall_ret(ctx);
        let spec = *SYSCALLS.get(p.nr)?;
        let buf = new_event(EventKind::Outcome as u8, 0)?;
        unsafe {
            (*buf).header.size = arg(&p, spec.len).unwrap_or(0);
            if ret < 0 || Some(p.nr) != syscall_nr(ctx) {
                (*buf).header.flags |= flags::FAILED;
            }
        }
        finish_bare(buf);
        return Some(());
    }
    let (p, spec, _) = take_pending(ctx)?;
    let buf = new_event(spec.kind, p.nr)?;
    let w = write_user_path(buf, 0, dfd_arg(&p, spec.dfd), arg(&p, spec.path)?);
    if !is_watched_path(buf, 0, &w) {
        return None;
    }
    set_path(buf, w, true);
    set_op_fields(buf, &p, &spec);
    finish_op(buf, w.len, &p, &spec);
    Some(())
}

/// The ctime of `inode` is being updated (`timestamp:ctime_ns_xchg`, 6.13+): if this thread
/// is in a followed path-based call that changes an object's attributes, `inode` is the
/// object the kernel resolved, whatever the string said (`dir-symlink/..`, a bind mount,
/// another hard link). Found watched by identity, the operation is announced under that
/// name, with the caller's string as the name used; the call's exit sends the outcome.
#[btf_tracepoint]
pub fn fim_tp_ctime_ns_xchg(ctx: BtfTracePointContext) -> u32 {
    let _ = ctime_changed(ctx.arg::<u64>(0));
    0
}

/// Same, when the ctime already had a fresh enough value (`timestamp:ctime_xchg_skip`).
#[btf_tracepoint]
pub fn fim_tp_ctime_xchg_skip(ctx: BtfTracePointContext) -> u32 {
    let _ = ctime_changed(ctx.arg::<u64>(0));
    0
}

/// Whether more than one dentry of `inode` is cached.
#[inline(always)]
fn has_other_names(inode: u64) -> bool {
    read_ptr(inode, off!(inode_dentry)).is_some_and(|first| read_ptr(first, 0).is_some())
}

#[inline(always)]
fn ctime_changed(inode: u64) -> Option<()> {
    // Most ctime updates are writes, creates and renames: no thread is in an attribute
    // call, and nothing needs looking up.
    if !attribute_calls_in_flight() {
        return None;
    }
    let id = bpf_get_current_pid_tgid();
    let pending = PENDING.get_ptr_mut(&id)?;
    let p = unsafe { *pending };
    if p.flags & pending_flags::ATTRIBUTE_CALL == 0 {
        return None;
    }
    let spec = *SYSCALLS.get(p.nr)?;
    let kind = spec.kind;
    // Most attribute calls are about unwatched objects: ask by identity first, without
    // building a path.
    if !is_watched_object(inode_kpath(inode)?) {
        return None;
    }
    let buf = new_event(kind, p.nr)?;
    let w = write_inode_path(buf, 0, inode)?;
    if w.watch.id == 0 {
        return None;
    }
    // Several cached names (hard links): the walk took one of them, maybe not the one the
    // caller used. Only a file watched as itself (by inode) is named right whatever the
    // name; otherwise the call stays with its string.
    if w.watch.id != OBJECT_BY_INODE && has_other_names(inode) {
        return None;
    }
    set_path(buf, w, false);
    set_inode_of(buf, inode);
    set_op_fields(buf, &p, &spec);
    let pos2 = w.len & (PATH_MAX - 1);
    let w2 = match arg(&p, spec.path) {
        Some(user) => write_user_str(buf, pos2, user, PATH_MAX as u32),
        None => crate::path::Written::plain(0, false),
    };
    set_path2(buf, w2, true);
    unsafe { (*buf).header.flags |= flags::AWAITS_OUTCOME | flags::PATH2_AS_CALLED };
    // Announced only if it went out. A lost announcement is not a lost operation here: the
    // call's exit reports it whole, from its string (and only that record's loss counts).
    if finish_op(buf, pos2 + w2.len, &p, &spec) {
        unsafe { (*pending).flags |= pending_flags::ANNOUNCED };
    } else {
        uncount_drop(DropReason::RingFull);
    }
    Some(())
}

/// Exit of a one-fd syscall: fchmod, fchown, ftruncate, fsetxattr, fremovexattr.
#[tracepoint]
pub fn fim_exit_fd(ctx: TracePointContext) -> u32 {
    let _ = exit_fd(&ctx);
    0
}

#[inline(always)]
fn exit_fd(ctx: &TracePointContext) -> Option<()> {
    let (p, spec, _) = take_pending(ctx)?;
    let file = fd_to_file(i64::from(arg(&p, spec.path)? as i32))?;
    let buf = new_event(spec.kind, p.nr)?;
    let w = write_file_path(buf, 0, file)?;
    if !is_watched_path(buf, 0, &w) {
        return None;
    }
    set_path(buf, w, false);
    set_inode(buf, file);
    set_op_fields(buf, &p, &spec);
    finish_op(buf, w.len, &p, &spec);
    Some(())
}

/// Exit of a two-path syscall: rename (both names), link, symlink (target as given).
#[tracepoint]
pub fn fim_exit_two_paths(ctx: TracePointContext) -> u32 {
    let _ = exit_two_paths(&ctx);
    0
}

#[inline(always)]
fn exit_two_paths(ctx: &TracePointContext) -> Option<()> {
    let (p, spec, _) = take_pending(ctx)?;
    let buf = new_event(spec.kind, p.nr)?;
    let first = arg(&p, spec.path)?;
    let symlink = spec.kind == EventKind::Symlink as u8;
    // A symlink's target is stored text, not a name in the tree: keep it verbatim.
    let w1 = if symlink {
        write_user_str(buf, 0, first, PATH_MAX as u32)
    } else {
        write_user_path(buf, 0, dfd_arg(&p, spec.dfd), first)
    };
    let pos2 = w1.len & (PATH_MAX - 1);
    let w2 = write_user_path(buf, pos2, dfd_arg(&p, spec.dfd2), arg(&p, spec.path2)?);
    let watched = is_watched(buf, pos2, w2.len) || (!symlink && is_watched(buf, 0, w1.len));
    if !watched {
        return None;
    }
    set_path(buf, w1, true);
    set_path2(buf, w2, true);
    set_op_fields(buf, &p, &spec);
    finish(buf, pos2 + w2.len);
    Some(())
}

/// Exit of the open family: reports a create or an open for write, and starts following
/// writes to the file.
#[tracepoint]
pub fn fim_exit_open(ctx: TracePointContext) -> u32 {
    let _ = exit_open(&ctx);
    0
}

#[inline(always)]
fn exit_open(ctx: &TracePointContext) -> Option<()> {
    let (p, spec, fd) = take_pending(ctx)?;
    let file = fd_to_file(fd)?;
    let f_mode: u32 = read(file, off!(file_mode))?;
    let created = f_mode & FMODE_CREATED != 0;
    let kind = if created {
        EventKind::Create
    } else {
        EventKind::OpenWrite
    };
    let buf = new_event(kind as u8, p.nr)?;
    let w = write_file_path(buf, 0, file)?;
    if !is_watched_path(buf, 0, &w) {
        if f_mode & FMODE_WRITE != 0 {
            // The address may have belonged to a followed file that was freed unseen.
            let _ = WRITERS.remove(&file);
        }
        return None;
    }
    set_path(buf, w, false);
    set_inode(buf, file);
    let h = unsafe { &mut (*buf).header };
    h.op_flags = p.extra as u32;
    if p.extra & O_TRUNC != 0 {
        h.flags |= flags::OPEN_TRUNC;
    }
    if created {
        h.mode = arg(&p, spec.mode).unwrap_or(0) as u32;
    }
    if f_mode & FMODE_WRITE != 0 {
        follow_writes(file);
    }
    finish(buf, w.len);
    Some(())
}

/// Entry of the write family: remembers the file if it is followed.
#[tracepoint]
pub fn fim_enter_write(ctx: TracePointContext) -> u32 {
    let _ = enter_write::<0>(&ctx);
    0
}

/// Entry of `copy_file_range` and `splice`, whose destination is argument 2.
#[tracepoint]
pub fn fim_enter_write_arg2(ctx: TracePointContext) -> u32 {
    let _ = enter_write::<2>(&ctx);
    0
}

#[inline(always)]
fn enter_write<const FD_ARG: usize>(ctx: &TracePointContext) -> Option<()> {
    let fd = syscall_arg::<FD_ARG>(ctx);
    let file = fd_to_file(i64::from(fd as i32))?;
    WRITERS.get_ptr(&file)?;
    if is_self() {
        return None;
    }
    let pending = Pending {
        nr: syscall_nr(ctx)?,
        flags: 0,
        args: [0; 6],
        extra: file,
    };
    if PENDING
        .insert(&bpf_get_current_pid_tgid(), &pending, 0)
        .is_err()
    {
        count_drop(DropReason::PendingFull);
    }
    Some(())
}

/// Exit of the write family: counts bytes and reports the first write to each open file.
#[tracepoint]
pub fn fim_exit_write(ctx: TracePointContext) -> u32 {
    let _ = exit_write(&ctx);
    0
}

#[inline(always)]
fn exit_write(ctx: &TracePointContext) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    let pending = *unsafe { PENDING.get(&id) }?;
    remove_pending(id, &pending);
    if Some(pending.nr) != syscall_nr(ctx) {
        return None;
    }
    let written = syscall_ret(ctx);
    if written <= 0 {
        return None;
    }
    let file = pending.extra;
    let state = WRITERS.get_ptr_mut(&file)?;
    // Threads writing one file concurrently may race on these counters; the byte count is
    // advisory (the integrity engine hashes the file), the first-write report is not lost.
    let first = unsafe {
        (*state).bytes += written as u64;
        (*state).writes += 1;
        (*state).writes == 1
    };
    if !first {
        return None;
    }
    let buf = new_event(EventKind::Write as u8, pending.nr)?;
    let w = write_file_path(buf, 0, file)?;
    set_path(buf, w, false);
    set_inode(buf, file);
    unsafe { (*buf).header.size = written as u64 };
    finish(buf, w.len);
    Some(())
}

/// Entry of close: reports close-after-write with the bytes written. Done at entry because
/// the fd no longer exists at exit, and Linux releases the fd even when close fails.
#[tracepoint]
pub fn fim_enter_close(ctx: TracePointContext) -> u32 {
    let _ = release_fd::<0>(&ctx);
    0
}

/// Entry of dup2/dup3: the target fd is closed if open.
#[tracepoint]
pub fn fim_enter_dup(ctx: TracePointContext) -> u32 {
    let _ = release_fd::<1>(&ctx);
    0
}

/// The fd in argument `arg` is being released by `close` or `dup2`. This tier sees no other
/// release (a child's exec or exit drops its copy unseen), so the process that opened the
/// file reports close-after-write when it closes it after writes, even while another
/// reference remains: a child forked by another thread holds one until its exec, and
/// waiting for it would lose the report. The file stays followed; writes through a
/// remaining descriptor are reported anew. Another process closing its inherited copy
/// reports nothing.
#[inline(always)]
fn release_fd<const ARG: usize>(ctx: &TracePointContext) -> Option<()> {
    let fd = syscall_arg::<ARG>(ctx);
    let file = fd_to_file(i64::from(fd as i32))?;
    release_file(file, syscall_nr(ctx)?, Release::Descriptor)
}

/// Which release [`release_file`] is told of.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// One of every release of the file (kernel-object tiers): report at the last one.
    Every,
    /// A descriptor closed by a syscall, the only release the tracepoint tier sees.
    Descriptor,
}

/// A reference to `file` is being released (`syscall_nr` 0 outside a syscall). Reports
/// close-after-write with the bytes written: at the last reference, or (see
/// [`Release::Descriptor`]) at a descriptor's close after writes not yet reported.
#[inline(always)]
pub fn release_file(file: u64, syscall_nr: u32, release: Release) -> Option<()> {
    let state = *unsafe { WRITERS.get(&file) }?;
    let refs: i64 = read(file, off!(file_count))?;
    if refs > off!(file_count_one) as i64 {
        // Only after writes: a shell's `open; dup2 to 1; close` must not report a close
        // before the command writes (the last close reports then).
        let by_owner = (bpf_get_current_pid_tgid() >> 32) as u32 == state.owner;
        if release == Release::Every || !by_owner || state.writes == 0 {
            return None;
        }
        // Still shared: keep following, from zero, and remember this close was reported.
        let reported = WriterState {
            bytes: 0,
            writes: 0,
            flags: writer_flags::REPORTED,
            ..state
        };
        if WRITERS.insert(&file, &reported, 0).is_err() {
            count_drop(DropReason::WritersFull);
        }
    } else {
        let _ = WRITERS.remove(&file);
        // Reported at an earlier close, nothing written since.
        if state.writes == 0 && state.flags & writer_flags::REPORTED != 0 {
            return None;
        }
    }
    if is_self() {
        return None;
    }
    let buf = new_event(EventKind::CloseWrite as u8, syscall_nr)?;
    let w = write_file_path(buf, 0, file)?;
    set_path(buf, w, false);
    set_inode(buf, file);
    unsafe {
        (*buf).header.size = state.bytes;
        if state.flags & writer_flags::UNCOUNTED != 0 {
            (*buf).header.flags |= flags::NO_SIZE;
        }
    }
    finish(buf, w.len);
    Some(())
}

/// Process table (`--sensor auto`): the task that just exec'd, with its new executable.
#[tracepoint]
pub fn fim_proc_exec(_ctx: TracePointContext) -> u32 {
    let _ = proc_record(EventKind::ProcExec, 0);
    0
}

/// Process table: the parent, and in `size` the new task's thread id and whether it is a
/// thread of the parent's process.
#[tracepoint]
pub fn fim_proc_fork(ctx: TracePointContext) -> u32 {
    const CLONE_THREAD: u64 = 0x0001_0000;
    let (at_pid, at_flags) = (tp_field!(newtask_pid), tp_field!(newtask_flags));
    // SAFETY: the offsets come from the tracepoint's own format description.
    let child = unsafe { ctx.read_at::<i32>(at_pid) }.unwrap_or(0).max(0) as u32;
    let flags = unsafe { ctx.read_at::<u64>(at_flags) }.unwrap_or(0);
    let size = fim_common::proc_fork::pack(child, flags & CLONE_THREAD != 0);
    let _ = proc_record(EventKind::ProcFork, size);
    0
}

/// Process table: the task that is exiting.
#[tracepoint]
pub fn fim_proc_exit(_ctx: TracePointContext) -> u32 {
    let _ = proc_record(EventKind::ProcExit, 0);
    0
}

/// Process table: a task's name changed (`prctl(PR_SET_NAME)`, a write to
/// `/proc/<pid>/comm`, exec); the record names the task and carries the new name.
#[tracepoint]
pub fn fim_proc_rename(ctx: TracePointContext) -> u32 {
    let _ = proc_rename(&ctx);
    0
}

#[inline(always)]
fn proc_rename(ctx: &TracePointContext) -> Option<()> {
    if is_self() {
        return None;
    }
    // SAFETY: the offsets come from the tracepoint's own format description.
    let pid = unsafe { ctx.read_at::<i32>(tp_field!(rename_pid)) }.ok()?;
    let comm = unsafe { ctx.read_at::<[u8; COMM_LEN]>(tp_field!(rename_newcomm)) }.ok()?;
    let buf = new_event(EventKind::ProcRename as u8, 0)?;
    unsafe { (*buf).header.size = pid.max(0) as u64 };
    finish_with(buf, 0, |buf, pos| {
        let mut len = COMM_LEN;
        for (i, &b) in comm.iter().enumerate() {
            if b == 0 && len == COMM_LEN {
                len = i;
            }
            put_byte(buf, pos + i, b);
        }
        unsafe { (*buf).header.name_len = len as u16 };
        pos + len
    });
    Some(())
}

/// Process table: a process moved to another cgroup (v2 hierarchy only): what service
/// managers do before they exec.
#[tracepoint]
pub fn fim_proc_cgroup(ctx: TracePointContext) -> u32 {
    let _ = proc_cgroup(&ctx);
    0
}

#[inline(always)]
fn proc_cgroup(ctx: &TracePointContext) -> Option<()> {
    // SAFETY: the offsets come from the tracepoint's own format description.
    let root = unsafe { ctx.read_at::<i32>(tp_field!(attach_root)) }.ok()?;
    if root != 0 || is_self() {
        return None;
    }
    let id = unsafe { ctx.read_at::<u64>(tp_field!(attach_id)) }.ok()?;
    let pid = unsafe { ctx.read_at::<i32>(tp_field!(attach_pid)) }.ok()?;
    let buf = new_event(EventKind::ProcCgroup as u8, 0)?;
    unsafe {
        (*buf).header.size = pid.max(0) as u64;
        (*buf).header.ino = id;
    }
    finish(buf, 0);
    Some(())
}

#[inline(always)]
fn proc_record(kind: EventKind, size: u64) -> Option<()> {
    if is_self() {
        return None;
    }
    let buf = new_event(kind as u8, 0)?;
    unsafe { (*buf).header.size = size };
    finish(buf, 0);
    Some(())
}
