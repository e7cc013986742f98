//! The kernel-object tiers: BPF LSM hooks, or fentry on the `security_*` functions behind
//! them where BPF LSM is not active. Same bodies, two entry points each.
//!
//! A pre-operation hook sees the kernel's own objects (`struct path`, `struct dentry`,
//! `struct file`), so paths need no user string and operations that never pass through a
//! syscall (io_uring) are seen. It runs before the operation, so it only *announces* the
//! event: the record carries `AWAITS_OUTCOME`, and the thread's expected outcome function is
//! noted in `INTENT`. An fexit program on that `vfs_*` function sends an `Outcome` record
//! (failed or not) for the same thread; userspace reports the announced event only when the
//! outcome says it succeeded. Writes and closes through syscalls keep the tracepoint tier's
//! programs (they count bytes at the syscall's exit); a write that reaches a followed file
//! without a write syscall (io_uring) is reported at `file_permission`.
//!
//! Where each program attaches is named once, in `fim_common::programs` (`PRE_HOOKS`,
//! `OUTCOMES`, `FUNCTION_HOOKS`); the attributes here give only the program type, and
//! userspace names the hook or function when it loads the program.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, generated::bpf_get_func_ret},
    macros::{fentry, fexit, lsm},
    programs::{FEntryContext, FExitContext, LsmContext},
};
use fim_common::{
    EventBuf, EventKind, FMODE_CREATED, FMODE_WRITE, MAY_WRITE, O_TRUNC, OBJECT_BY_INODE,
    ObjectKey, Outcome, PATH_MAX, S_IFLNK, S_IFMT, S_IFREG, WatchedObject, flags, root_flags,
    writer_flags,
};

use crate::{
    emit::{
        finish, finish_bare, finish_named, new_event, set_dentry_inode, set_inode, set_path,
        set_path2,
    },
    filter::is_watched_path,
    kernel::{
        KPath, OUTCOME_RETURNS_PTR, dentry_inode, file_kpath, mount_of, off, read, read_kpath,
        read_ptr,
    },
    maps::{INTENT, OPEN_TRUNCATES, PENDING, WATCHED_OBJECTS, WRITERS, follow_writes},
    path::{Written, write_kernel_str, write_kpath},
    programs::is_self,
};

/// Argument `n` of the hooked function, as a plain number (read through the helper so the
/// verifier treats it as a scalar, not as a typed kernel pointer).
#[inline(always)]
fn arg(ctx: *mut c_void, n: usize) -> u64 {
    unsafe { bpf_probe_read_kernel((ctx as *const u64).wrapping_add(n)) }.unwrap_or(0)
}

/// The `struct path` argument `n` points at.
#[inline(always)]
fn path_arg(ctx: *mut c_void, n: usize) -> Option<KPath> {
    read_kpath(arg(ctx, n), 0)
}

/// Starts an announcement of `kind`, unless the daemon itself is acting.
#[inline(always)]
fn begin(kind: EventKind) -> Option<*mut EventBuf> {
    if is_self() {
        return None;
    }
    new_event(kind as u8, 0)
}

/// Marks the record as awaiting `outcome`, notes the expectation, and sends it (with the
/// kernel string `name` at the end, for xattrs).
#[inline(always)]
fn announce(buf: *mut EventBuf, end: usize, outcome: Outcome, name: Option<u64>) {
    announce_noting(buf, end, outcome as u32, name);
}

/// [`announce`] with extra bits above the outcome index in `INTENT` ([`WILL_TRUNCATE`]).
#[inline(always)]
fn announce_noting(buf: *mut EventBuf, end: usize, intent: u32, name: Option<u64>) {
    unsafe { (*buf).header.flags |= flags::AWAITS_OUTCOME };
    let id = bpf_get_current_pid_tgid();
    let _ = INTENT.insert(&id, &intent, 0);
    if !finish_named(buf, end, name, write_kernel_str) {
        // Lost (and counted as one operation): no outcome follows, so nothing is counted
        // twice.
        let _ = INTENT.remove(&id);
    }
}

/// `INTENT` bit: the announced open will truncate an existing file (the kernel clears
/// `O_TRUNC` from `f_flags` before `vfs_open` returns, so it is noted at announcement).
const WILL_TRUNCATE: u32 = 1 << 16;
/// `INTENT` bits holding the [`Outcome`] index.
const OUTCOME_MASK: u32 = 0xffff;

/// Writes `(mnt, dentry)`'s path at 0 and returns it if watched.
#[inline(always)]
fn watched_path(buf: *mut EventBuf, path: KPath) -> Option<Written> {
    let w = write_kpath(buf, 0, path, true);
    if !is_watched_path(buf, 0, &w) {
        return None;
    }
    set_path(buf, w, false);
    set_dentry_inode(buf, path.dentry);
    Some(w)
}

/// An operation on one name: `dir` (a `struct path *`) and the child `dentry`.
#[inline(always)]
fn on_child(
    ctx: *mut c_void,
    kind: EventKind,
    outcome: Outcome,
    mode: Option<usize>,
) -> Option<()> {
    let dir = path_arg(ctx, 0)?;
    let dentry = arg(ctx, 1);
    let buf = begin(kind)?;
    let w = watched_path(
        buf,
        KPath {
            mnt: dir.mnt,
            dentry,
        },
    )?;
    if let Some(n) = mode {
        unsafe { (*buf).header.mode = arg(ctx, n) as u32 & 0o177_777 };
    }
    announce(buf, w.len, outcome, None);
    Some(())
}

/// An operation on the object a `struct path *` (argument 0) names.
#[inline(always)]
fn on_path(ctx: *mut c_void, kind: EventKind) -> Option<(*mut EventBuf, Written)> {
    let path = path_arg(ctx, 0)?;
    let buf = begin(kind)?;
    let w = watched_path(buf, path)?;
    Some((buf, w))
}

macro_rules! pre_hook {
    ($lsm:ident, $fentry:ident, |$ctx:ident| $body:expr) => {
        // inline(always) reaches the body the macro wraps: each program stays one function,
        // with no BPF-to-BPF call passing the context.
        #[lsm]
        #[inline(always)]
        pub fn $lsm(ctx: LsmContext) -> i32 {
            let $ctx = ctx.as_ptr();
            let _ = $body;
            0
        }

        #[fentry]
        #[inline(always)]
        pub fn $fentry(ctx: FEntryContext) -> u32 {
            let $ctx = ctx.as_ptr();
            let _ = $body;
            0
        }
    };
}

pre_hook!(fim_lsm_path_unlink, fim_fentry_path_unlink, |ctx| on_child(
    ctx,
    EventKind::Unlink,
    Outcome::Unlink,
    None
));
pre_hook!(fim_lsm_path_rmdir, fim_fentry_path_rmdir, |ctx| on_child(
    ctx,
    EventKind::Rmdir,
    Outcome::Rmdir,
    None
));
pre_hook!(fim_lsm_path_mkdir, fim_fentry_path_mkdir, |ctx| on_child(
    ctx,
    EventKind::Mkdir,
    Outcome::Mkdir,
    Some(2)
));
pre_hook!(fim_lsm_path_mknod, fim_fentry_path_mknod, |ctx| path_mknod(
    ctx
));

/// mknod: a regular file goes through `vfs_create`, anything else through `vfs_mknod`. An
/// `O_CREAT` open also passes here; it never reaches `vfs_create`, and its `file_open`
/// announcement replaces this one.
#[inline(always)]
fn path_mknod(ctx: *mut c_void) -> Option<()> {
    let mode = arg(ctx, 2) as u32;
    let outcome = if mode & S_IFMT == S_IFREG || mode & S_IFMT == 0 {
        Outcome::Create
    } else {
        Outcome::Mknod
    };
    on_child(ctx, EventKind::Mknod, outcome, Some(2))
}

pre_hook!(fim_lsm_path_symlink, fim_fentry_path_symlink, |ctx| {
    path_symlink(ctx)
});

/// symlink: `path` is the target text, verbatim; `path2` the new name.
#[inline(always)]
fn path_symlink(ctx: *mut c_void) -> Option<()> {
    let dir = path_arg(ctx, 0)?;
    let buf = begin(EventKind::Symlink)?;
    let w1 = write_kernel_str(buf, 0, arg(ctx, 2), PATH_MAX as u32);
    let pos2 = w1.len & (PATH_MAX - 1);
    let w2 = write_kpath(
        buf,
        pos2,
        KPath {
            mnt: dir.mnt,
            dentry: arg(ctx, 1),
        },
        true,
    );
    if !is_watched_path(buf, pos2, &w2) {
        return None;
    }
    set_path(buf, w1, false);
    set_path2(buf, w2, false);
    announce(buf, pos2 + w2.len, Outcome::Symlink, None);
    Some(())
}

pre_hook!(fim_lsm_path_link, fim_fentry_path_link, |ctx| two_names(
    ctx,
    EventKind::Link,
    Outcome::Link,
    1,
    0,
    1,
    2
));
pre_hook!(
    fim_lsm_path_rename,
    fim_fentry_path_rename,
    |ctx| two_names(ctx, EventKind::Rename, Outcome::Rename, 0, 1, 2, 3)
);

/// link and rename: the old name (mount from `struct path *` argument `old_dir`, dentry
/// argument `old`) and the new one. A hard link is made on the new name's mount (the kernel
/// refuses links across mounts before this hook).
#[inline(always)]
fn two_names(
    ctx: *mut c_void,
    kind: EventKind,
    outcome: Outcome,
    old_dir: usize,
    old: usize,
    new_dir: usize,
    new: usize,
) -> Option<()> {
    let from = path_arg(ctx, old_dir)?;
    let to = path_arg(ctx, new_dir)?;
    let buf = begin(kind)?;
    let old_dentry = arg(ctx, old);
    let w1 = write_kpath(
        buf,
        0,
        KPath {
            mnt: from.mnt,
            dentry: old_dentry,
        },
        true,
    );
    let pos2 = w1.len & (PATH_MAX - 1);
    let w2 = write_kpath(
        buf,
        pos2,
        KPath {
            mnt: to.mnt,
            dentry: arg(ctx, new),
        },
        true,
    );
    let old_watched = is_watched_path(buf, 0, &w1);
    if !is_watched_path(buf, pos2, &w2) && !old_watched {
        return None;
    }
    if kind == EventKind::Link && old_watched {
        // A new name for a watched file: from now on it is watched by identity, whatever
        // name reaches it (before userspace has even read this event).
        watch_object(old_dentry);
    }
    set_path(buf, w1, false);
    set_path2(buf, w2, false);
    set_dentry_inode(buf, old_dentry);
    if kind == EventKind::Rename {
        unsafe { (*buf).header.op_flags = arg(ctx, 4) as u32 };
    }
    announce(buf, pos2 + w2.len, outcome, None);
    Some(())
}

/// Adds `dentry`'s inode to the watched objects, as a file named by its inode.
#[inline(always)]
fn watch_object(dentry: u64) {
    if let Some((ino, dev, _)) = dentry_inode(dentry) {
        let key = ObjectKey { ino, dev, _pad: 0 };
        let value = WatchedObject {
            id: OBJECT_BY_INODE,
            flags: root_flags::SELF,
        };
        // Full map: the link is still reported; later access through the new name is then
        // found only by its spelling.
        let _ = WATCHED_OBJECTS.insert(&key, &value, 0);
    }
}

pre_hook!(fim_lsm_path_chmod, fim_fentry_path_chmod, |ctx| path_chmod(
    ctx
));

#[inline(always)]
fn path_chmod(ctx: *mut c_void) -> Option<()> {
    let (buf, w) = on_path(ctx, EventKind::Chmod)?;
    unsafe { (*buf).header.mode = arg(ctx, 1) as u32 & 0o7777 };
    announce(buf, w.len, Outcome::NotifyChange, None);
    Some(())
}

pre_hook!(fim_lsm_path_chown, fim_fentry_path_chown, |ctx| path_chown(
    ctx
));

/// chown: `kuid_t`/`kgid_t` are passed by value; -1 (unchanged) stays `u32::MAX`. The path
/// names the object changed, so a symlink here was not followed (`lchown`).
#[inline(always)]
fn path_chown(ctx: *mut c_void) -> Option<()> {
    let (buf, w) = on_path(ctx, EventKind::Chown)?;
    let h = unsafe { &mut (*buf).header };
    h.owner_uid = arg(ctx, 1) as u32;
    h.owner_gid = arg(ctx, 2) as u32;
    if h.flags & flags::HAS_INODE != 0 && h.imode & S_IFMT == S_IFLNK {
        h.op_flags = fim_common::AT_SYMLINK_NOFOLLOW as u32;
    }
    announce(buf, w.len, Outcome::NotifyChange, None);
    Some(())
}

pre_hook!(fim_lsm_path_truncate, fim_fentry_path_truncate, |ctx| {
    truncate(path_arg(ctx, 0))
});
pre_hook!(fim_lsm_file_truncate, fim_fentry_file_truncate, |ctx| {
    truncate(file_kpath(arg(ctx, 0)))
});

/// truncate, ftruncate: the new length comes with the outcome (`notify_change`'s iattr).
/// The truncate an `O_TRUNC` open performs is part of that open's event.
#[inline(always)]
fn truncate(path: Option<KPath>) -> Option<()> {
    let path = path?;
    let id = bpf_get_current_pid_tgid();
    if let Some(&opened) = unsafe { OPEN_TRUNCATES.get(&id) } {
        let _ = OPEN_TRUNCATES.remove(&id);
        if opened == path.dentry {
            return None;
        }
    }
    let buf = begin(EventKind::Truncate)?;
    let w = watched_path(buf, path)?;
    announce(buf, w.len, Outcome::NotifyChange, None);
    Some(())
}

pre_hook!(fim_lsm_file_open, fim_fentry_file_open, |ctx| file_open(
    ctx
));

/// An open that writes, creates or truncates.
#[inline(always)]
fn file_open(ctx: *mut c_void) -> Option<()> {
    let file = arg(ctx, 0);
    let f_mode: u32 = read(file, off!(file_mode))?;
    let f_flags: u32 = read(file, off!(file_flags))?;
    let created = f_mode & FMODE_CREATED != 0;
    if f_mode & FMODE_WRITE == 0 && !created && u64::from(f_flags) & O_TRUNC == 0 {
        return None;
    }
    let kind = if created {
        EventKind::Create
    } else {
        EventKind::OpenWrite
    };
    let buf = begin(kind)?;
    let w = watched_path(buf, file_kpath(file)?)?;
    set_inode(buf, file);
    let h = unsafe { &mut (*buf).header };
    h.op_flags = f_flags;
    if u64::from(f_flags) & O_TRUNC != 0 {
        h.flags |= flags::OPEN_TRUNC;
    }
    if created {
        h.mode = h.imode & 0o7777;
    }
    let truncates = u64::from(f_flags) & O_TRUNC != 0 && !created;
    let intent = Outcome::Open as u32 | if truncates { WILL_TRUNCATE } else { 0 };
    announce_noting(buf, w.len, intent, None);
    Some(())
}

pre_hook!(fim_lsm_file_permission, fim_fentry_file_permission, |ctx| {
    file_permission(ctx)
});

/// A write about to reach a followed file. Write syscalls are reported at their exit with
/// the bytes written (tracepoint programs); this reports the first write that comes any
/// other way (io_uring), without a byte count.
#[inline(always)]
fn file_permission(ctx: *mut c_void) -> Option<()> {
    if arg(ctx, 1) & MAY_WRITE == 0 {
        return None;
    }
    let file = arg(ctx, 0);
    let state = WRITERS.get_ptr_mut(&file)?;
    if is_self() {
        return None;
    }
    let id = bpf_get_current_pid_tgid();
    if let Some(p) = unsafe { PENDING.get(&id) }
        && p.extra == file
    {
        return None;
    }
    unsafe {
        (*state).flags |= writer_flags::UNCOUNTED;
        if (*state).writes != 0 {
            return None;
        }
        (*state).writes = 1;
    }
    let buf = new_event(EventKind::Write as u8, 0)?;
    let w = crate::path::write_file_path(buf, 0, file)?;
    set_path(buf, w, false);
    set_inode(buf, file);
    unsafe { (*buf).header.flags |= flags::NO_SIZE };
    finish(buf, w.len);
    Some(())
}

pre_hook!(fim_lsm_inode_setxattr, fim_fentry_inode_setxattr, |ctx| {
    xattr(ctx, EventKind::SetXattr, Outcome::SetXattr, Some(5))
});
pre_hook!(
    fim_lsm_inode_removexattr,
    fim_fentry_inode_removexattr,
    |ctx| xattr(ctx, EventKind::RemoveXattr, Outcome::RemoveXattr, None)
);
pre_hook!(
    fim_lsm_inode_set_acl,
    fim_fentry_inode_set_acl,
    |ctx| xattr(ctx, EventKind::SetXattr, Outcome::SetAcl, None)
);
pre_hook!(
    fim_lsm_inode_remove_acl,
    fim_fentry_inode_remove_acl,
    |ctx| xattr(ctx, EventKind::RemoveXattr, Outcome::RemoveAcl, None)
);

/// xattr and ACL hooks get `(idmap, dentry, name, ...)`: no mount, so the path is built on
/// the file system's mount in the caller's namespace ([`mount_of`]).
#[inline(always)]
fn xattr(
    ctx: *mut c_void,
    kind: EventKind,
    outcome: Outcome,
    flags_arg: Option<usize>,
) -> Option<()> {
    let dentry = arg(ctx, 1);
    let mnt = mount_of(dentry)?;
    let buf = begin(kind)?;
    let w = watched_path(buf, KPath { mnt, dentry })?;
    if let Some(n) = flags_arg {
        unsafe { (*buf).header.op_flags = arg(ctx, n) as u32 };
    }
    announce(buf, w.len, outcome, Some(arg(ctx, 2)));
    Some(())
}

/// Sends the outcome of the operation this thread announced, if it expects `which`.
/// `extra` runs on success with the function's context and the `INTENT` value (it may fill `size`).
#[inline(always)]
fn outcome(
    ctx: *mut c_void,
    which: Outcome,
    extra: impl FnOnce(*mut c_void, u32) -> u64,
) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    let intent = *unsafe { INTENT.get(&id) }?;
    if intent & OUTCOME_MASK != which as u32 {
        return None;
    }
    let _ = INTENT.remove(&id);
    let mut ret: u64 = 0;
    unsafe { bpf_get_func_ret(ctx, &mut ret) };
    let returns_ptr =
        unsafe { core::ptr::read_volatile(&OUTCOME_RETURNS_PTR) } >> (which as u32) & 1 == 1;
    let failed = if returns_ptr {
        // ERR_PTR: the last page of the address space.
        ret >= (-4095i64) as u64
    } else {
        (ret as i32) < 0
    };
    let size = if failed { 0 } else { extra(ctx, intent) };
    let buf = new_event(EventKind::Outcome as u8, 0)?;
    unsafe {
        (*buf).header.size = size;
        if failed {
            (*buf).header.flags |= flags::FAILED;
        }
    }
    finish_bare(buf);
    Some(())
}

macro_rules! outcome_of {
    ($name:ident, $which:expr) => {
        #[fexit]
        #[inline(always)]
        pub fn $name(ctx: FExitContext) -> u32 {
            let _ = outcome(ctx.as_ptr(), $which, |_, _| 0);
            0
        }
    };
}

outcome_of!(fim_fexit_vfs_unlink, Outcome::Unlink);
outcome_of!(fim_fexit_vfs_rmdir, Outcome::Rmdir);
outcome_of!(fim_fexit_vfs_mkdir, Outcome::Mkdir);
outcome_of!(fim_fexit_vfs_mknod, Outcome::Mknod);
outcome_of!(fim_fexit_vfs_create, Outcome::Create);
outcome_of!(fim_fexit_vfs_symlink, Outcome::Symlink);
outcome_of!(fim_fexit_vfs_link, Outcome::Link);
outcome_of!(fim_fexit_vfs_rename, Outcome::Rename);
outcome_of!(fim_fexit_vfs_setxattr, Outcome::SetXattr);
outcome_of!(fim_fexit_vfs_removexattr, Outcome::RemoveXattr);
outcome_of!(fim_fexit_vfs_set_acl, Outcome::SetAcl);
outcome_of!(fim_fexit_vfs_remove_acl, Outcome::RemoveAcl);

/// chmod, chown, truncate: `notify_change(idmap, dentry, iattr, ...)`; the new length of a
/// truncate is the iattr's `ia_size`.
#[fexit]
#[inline(always)]
pub fn fim_fexit_notify_change(ctx: FExitContext) -> u32 {
    let _ = outcome(ctx.as_ptr(), Outcome::NotifyChange, |ctx, _| {
        read::<u64>(arg(ctx, 2), off!(iattr_size)).unwrap_or(0)
    });
    0
}

/// `notify_change(idmap, dentry, iattr, delegated)` changing times only (`utimensat`,
/// `futimens`, `utimes`): no LSM hook covers it, so it is announced here, before the
/// change, like the other hooks; the `notify_change` fexit sends its outcome. Changes of
/// mode, owner or size are announced by their own hooks.
#[fentry]
#[inline(always)]
pub fn fim_fentry_notify_change(ctx: FEntryContext) -> u32 {
    let _ = set_times(ctx.as_ptr());
    0
}

#[inline(always)]
fn set_times(ctx: *mut c_void) -> Option<()> {
    const ATTR_MODE: u32 = 1 << 0;
    const ATTR_UID: u32 = 1 << 1;
    const ATTR_GID: u32 = 1 << 2;
    const ATTR_SIZE: u32 = 1 << 3;
    const ATTR_ATIME: u32 = 1 << 4;
    const ATTR_MTIME: u32 = 1 << 5;
    let valid: u32 = read(arg(ctx, 2), off!(iattr_valid))?;
    if valid & (ATTR_ATIME | ATTR_MTIME) == 0
        || valid & (ATTR_MODE | ATTR_UID | ATTR_GID | ATTR_SIZE) != 0
    {
        return None;
    }
    let dentry = arg(ctx, 1);
    let mnt = mount_of(dentry)?;
    let buf = begin(EventKind::Utimes)?;
    let w = watched_path(buf, KPath { mnt, dentry })?;
    announce(buf, w.len, Outcome::NotifyChange, None);
    Some(())
}

/// `filp_close(file, owner)`: every release of a descriptor, whether by `close`, `dup2`,
/// an io_uring close or the exit of the process; the last one of a followed file reports
/// close-after-write.
#[fentry]
#[inline(always)]
pub fn fim_fentry_filp_close(ctx: FEntryContext) -> u32 {
    let _ = crate::programs::release_file(arg(ctx.as_ptr(), 0), 0, crate::programs::Release::Every);
    0
}

/// `filp_flush(file, owner)` (6.8+): `close(2)` calls it directly instead of `filp_close`.
/// Where `filp_close` calls it too, the first of the two to see the last reference reports
/// and forgets the file, so a close is reported once.
#[fentry]
#[inline(always)]
pub fn fim_fentry_filp_flush(ctx: FEntryContext) -> u32 {
    let _ = crate::programs::release_file(arg(ctx.as_ptr(), 0), 0, crate::programs::Release::Every);
    0
}

/// `vfs_open(path, file)`: a successful open for write starts following the file's writes;
/// an `O_TRUNC` open of an existing file notes the truncate it is about to do.
#[fexit]
#[inline(always)]
pub fn fim_fexit_vfs_open(ctx: FExitContext) -> u32 {
    let _ = outcome(ctx.as_ptr(), Outcome::Open, |ctx, intent| {
        let _ = opened(arg(ctx, 1), intent & WILL_TRUNCATE != 0);
        0
    });
    0
}

#[inline(always)]
fn opened(file: u64, truncates: bool) -> Option<()> {
    let f_mode: u32 = read(file, off!(file_mode))?;
    if f_mode & FMODE_WRITE != 0 {
        follow_writes(file);
    }
    if truncates {
        let dentry = read_ptr(file, off!(file_path) + off!(path_dentry))?;
        let _ = OPEN_TRUNCATES.insert(&bpf_get_current_pid_tgid(), &dentry, 0);
    }
    Some(())
}
