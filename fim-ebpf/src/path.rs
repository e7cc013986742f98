//! Building absolute paths in the kernel.
//!
//! Two sources: a kernel object (a `struct path`, walked dentry by dentry up to the global
//! root, crossing mounts), and a caller's string, which is used as-is when absolute and
//! otherwise appended to the path of its dirfd or of the cwd. Every write into the event's
//! data area goes through a masked offset and a bounded length so the verifier can prove it
//! stays inside the scratch buffer.

use aya_ebpf::helpers::generated::{
    bpf_loop, bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_probe_read_user_str,
};
use fim_common::{
    AT_FDCWD, DATA_MASK, EventBuf, MAX_PATH_DEPTH, ObjectKey, PATH_MAX, WatchMatch, root_flags,
};

use crate::{
    kernel::{KPath, cwd_kpath, fd_to_file, file_kpath, off, read, read_ptr, read_user},
    maps::{PATHBUF, WATCHED_OBJECTS},
};

/// Longest name component the walk copies (Linux `NAME_MAX`).
const NAME_MAX: u32 = 255;
/// Walk steps allowed beyond [`MAX_PATH_DEPTH`] for mount crossings.
const MAX_MOUNT_CROSSINGS: usize = 16;

/// A path written into the data area: its length, whether it was cut short, and the
/// watched object found on the way up (by identity), if any.
#[derive(Clone, Copy)]
pub struct Written {
    pub len: usize,
    pub truncated: bool,
    pub watch: WatchMatch,
}

impl Written {
    /// A path of `len` bytes with no watched object found on the way.
    #[inline(always)]
    pub fn plain(len: usize, truncated: bool) -> Self {
        Self {
            len,
            truncated,
            watch: WatchMatch::default(),
        }
    }
}

#[inline(always)]
fn data_ptr(buf: *mut EventBuf, pos: usize) -> *mut u8 {
    unsafe { (*buf).data.as_mut_ptr().add(pos & DATA_MASK) }
}

/// Writes one byte at `pos` of the data area.
#[inline(always)]
pub fn put_byte(buf: *mut EventBuf, pos: usize, byte: u8) {
    unsafe { *data_ptr(buf, pos) = byte };
}

/// Reads one byte at `pos` of the data area.
#[inline(always)]
pub fn get_byte(buf: *mut EventBuf, pos: usize) -> u8 {
    unsafe { *data_ptr(buf, pos) }
}

/// State of one dentry walk, shared with the `bpf_loop` callback. It lives in map memory,
/// not on the stack, so its values are unknown to the verifier at every step: the callback's
/// states then converge after one step instead of one state per step.
#[repr(C)]
pub struct WalkState {
    pub dentry: u64,
    pub vfsmnt: u64,
    /// The path occupies `PathScratch::bytes[start..PATH_MAX)`.
    pub start: u64,
    /// 0 while walking; [`WALK_DONE`] at the global root; [`WALK_CUT`] when cut short.
    pub status: u64,
    /// Non-zero: look each dentry's inode up in `WATCHED_OBJECTS` until one applies.
    pub identify: u64,
    /// Names prepended so far (0: at the object itself).
    pub depth: u64,
    /// The watched object found: its id (0: none yet) and the path bytes below it.
    pub found: u64,
    pub below: u64,
    /// Non-zero: copy each name into the path; zero: only look for a watched object (and
    /// stop at the first one found).
    pub names: u64,
    /// The root dentry of `vfsmnt`, read once per mount rather than once per step.
    pub mnt_root: u64,
    /// The last super block seen and its device: every dentry of one mount shares them.
    pub sb: u64,
    pub dev: u64,
    /// Where the dentry's parent, name and inode are, relative to its `d_parent`
    /// ([`Layout`]); `u64::MAX`: not within one [`BLOCK`]-byte read on this kernel.
    pub layout: Layout,
    /// One read of a dentry's (or an inode's) neighbouring fields.
    pub block: [u8; BLOCK + 8],
}

/// Bytes read at once from a dentry (from `d_parent`) or an inode (from `i_sb`): a step
/// costs one read per structure instead of one per field, and every read of kernel memory
/// goes through the fault-tolerant copy, which costs more than the copy itself.
pub const BLOCK: usize = 32;

/// Offsets of fields inside the [`BLOCK`]s, from the kernel's BTF offsets.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Layout {
    /// From `d_parent`: the name's length, the name's pointer, the inode.
    pub name_len: u64,
    pub name_ptr: u64,
    pub inode: u64,
    /// From `i_sb`: the inode number.
    pub ino: u64,
}

impl Layout {
    /// The layout of this kernel, or `None` when a field is outside its block.
    #[inline(always)]
    fn of_kernel() -> Option<Self> {
        let within = |base: u64, field: u64, size: u64| {
            let d = field.wrapping_sub(base);
            (d + size <= BLOCK as u64).then_some(d)
        };
        let parent = off!(dentry_parent);
        let sb = off!(inode_sb);
        Some(Self {
            name_len: within(parent, off!(dentry_name_len), 4)?,
            name_ptr: within(parent, off!(dentry_name_ptr), 8)?,
            inode: within(parent, off!(dentry_inode), 8)?,
            ino: within(sb, off!(inode_ino), 8)?,
        })
    }
}

/// Reads a `T` at `at` of the walk's block (bounded for the verifier).
#[inline(always)]
fn block_field<T: Copy>(st: *mut WalkState, at: u64) -> T {
    unsafe {
        let p = (*st).block.as_ptr().add((at as usize) & (BLOCK - 1));
        core::ptr::read_unaligned(p.cast::<T>())
    }
}

/// Fills the walk's block with [`BLOCK`] bytes at kernel address `addr`.
#[inline(always)]
fn read_block(st: *mut WalkState, addr: u64) -> bool {
    unsafe {
        bpf_probe_read_kernel(
            (*st).block.as_mut_ptr().cast(),
            BLOCK as u32,
            addr as *const core::ffi::c_void,
        ) == 0
    }
}

/// A dentry's parent, name (pointer, length) and inode.
struct DentryFields {
    parent: u64,
    name: u64,
    len: u32,
    inode: u64,
}

/// Reads `dentry`'s [`DentryFields`]: one read where the layout allows, else one per field.
#[inline(always)]
fn dentry_fields(st: *mut WalkState, dentry: u64) -> Option<DentryFields> {
    let layout = unsafe { (*st).layout };
    if layout.name_len != u64::MAX {
        if !read_block(st, dentry + off!(dentry_parent)) {
            return None;
        }
        return Some(DentryFields {
            parent: block_field(st, 0),
            name: block_field(st, layout.name_ptr),
            len: block_field(st, layout.name_len),
            inode: block_field(st, layout.inode),
        });
    }
    Some(DentryFields {
        parent: read::<u64>(dentry, off!(dentry_parent))?,
        name: read::<u64>(dentry, off!(dentry_name_ptr)).unwrap_or(0),
        len: read::<u32>(dentry, off!(dentry_name_len)).unwrap_or(0),
        inode: read::<u64>(dentry, off!(dentry_inode)).unwrap_or(0),
    })
}

/// An inode's identity `(ino, dev)`, with its super block's device remembered for the
/// next step.
#[inline(always)]
fn inode_key(st: *mut WalkState, inode: u64) -> Option<(u64, u32)> {
    let layout = unsafe { (*st).layout };
    let (sb, ino) = if layout.name_len != u64::MAX {
        if !read_block(st, inode + off!(inode_sb)) {
            return None;
        }
        (
            block_field::<u64>(st, 0),
            block_field::<u64>(st, layout.ino),
        )
    } else {
        (
            read::<u64>(inode, off!(inode_sb))?,
            read::<u64>(inode, off!(inode_ino))?,
        )
    };
    if sb == 0 {
        return None;
    }
    let dev = if unsafe { (*st).sb } == sb {
        unsafe { (*st).dev as u32 }
    } else {
        let dev: u32 = read(sb, off!(sb_dev))?;
        unsafe {
            (*st).sb = sb;
            (*st).dev = u64::from(dev);
        }
        dev
    };
    Some((ino, dev))
}

const WALK_DONE: u64 = 1;
const WALK_CUT: u64 = 2;

/// One step of the walk: one dentry up, or one mount crossing. Runs under `bpf_loop`, so the
/// verifier checks it once instead of once per step per caller (an unrolled walk of 144
/// steps exceeded the verifier's budget). Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn walk_step(_index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(scratch) = PATHBUF.get_ptr_mut(0) else {
        return 1;
    };
    let st = unsafe { &raw mut (*scratch).walk };
    let (dentry, vfsmnt, mnt_root) = unsafe { ((*st).dentry, (*st).vfsmnt, (*st).mnt_root) };
    let stop = |status| {
        unsafe { (*st).status = status };
        1
    };
    // Every dentry on the way is identified, mount roots included (a bind mount's root is
    // the watched directory itself).
    let Some(f) = dentry_fields(st, dentry) else {
        return stop(WALK_CUT);
    };
    if unsafe { (*st).identify != 0 && (*st).found == 0 } {
        identify(st, f.inode);
    }
    let names = unsafe { (*st).names } != 0;
    if !names && unsafe { (*st).found } != 0 {
        return stop(WALK_DONE);
    }
    if vfsmnt != 0 && dentry == mnt_root {
        // At the root of this mount: continue from where it is mounted in its parent.
        let mount = vfsmnt - off!(mount_mnt);
        let Some(parent) = read_ptr(mount, off!(mount_parent)) else {
            return stop(WALK_CUT);
        };
        if parent == mount {
            return stop(WALK_DONE);
        }
        let Some(mountpoint) = read_ptr(mount, off!(mount_mountpoint)) else {
            return stop(WALK_CUT);
        };
        let parent_mnt = parent + off!(mount_mnt);
        let Some(root) = read_ptr(parent_mnt, off!(vfsmount_root)) else {
            return stop(WALK_CUT);
        };
        unsafe {
            (*st).dentry = mountpoint;
            (*st).vfsmnt = parent_mnt;
            (*st).mnt_root = root;
        }
        return 0;
    }
    let parent = f.parent;
    if parent == 0 {
        return stop(WALK_CUT);
    }
    if parent == dentry {
        // Root of a filesystem that is not a mount root here (a detached tree).
        return stop(WALK_DONE);
    }
    if !names {
        unsafe {
            (*st).dentry = parent;
            (*st).depth += 1;
        }
        return 0;
    }
    let len = (if f.len > NAME_MAX { NAME_MAX } else { f.len }) as usize;
    let start = unsafe { (*st).start } as usize;
    if start > PATH_MAX || len + 1 >= start {
        return stop(WALK_CUT);
    }
    let start = (start - len - 1) & (PATH_MAX - 1);
    // Re-bound the size right at the call through an opaque copy: LLVM drops a mask it can
    // prove redundant, and the 6.1/6.12 verifiers lose the bound across the branch above.
    let size = unsafe { core::ptr::read_volatile(&len) } & 0xff;
    unsafe {
        let bytes = (*scratch).bytes.as_mut_ptr();
        *bytes.add(start) = b'/';
        bpf_probe_read_kernel(bytes.add(start + 1).cast(), size as u32, f.name as *const _);
        (*st).start = start as u64;
        (*st).dentry = parent;
        (*st).depth += 1;
    }
    0
}

/// Is `inode` (the current dentry's) a watched object that applies at this depth (itself
/// at depth 0, a recursive root above it, a glob's directory right above it)? Records the
/// first one.
#[inline(always)]
fn identify(st: *mut WalkState, inode: u64) {
    if inode == 0 {
        // A negative dentry: the name of an object about to be created.
        return;
    }
    let Some((ino, dev)) = inode_key(st, inode) else {
        return;
    };
    let key = ObjectKey { ino, dev, _pad: 0 };
    let Some(object) = (unsafe { WATCHED_OBJECTS.get(&key) }) else {
        return;
    };
    let depth = unsafe { (*st).depth };
    let applies = if depth == 0 {
        object.flags & root_flags::SELF != 0
    } else {
        object.flags & root_flags::RECURSIVE != 0
            || (depth == 1 && object.flags & root_flags::CHILDREN != 0)
    };
    if applies {
        unsafe {
            (*st).found = u64::from(object.id);
            (*st).below = PATH_MAX as u64 - (*st).start;
        }
    }
}

/// Walks from `path` up to the global root (or, without `names`, to the first watched
/// object), with the cursor in `st`; the outcome is left in `st`.
#[inline(always)]
fn walk(st: *mut WalkState, path: KPath, identify: bool, names: bool) {
    unsafe {
        let mnt_root = if path.mnt == 0 {
            0
        } else {
            read_ptr(path.mnt, off!(vfsmount_root)).unwrap_or(0)
        };
        (*st).dentry = path.dentry;
        (*st).vfsmnt = path.mnt;
        (*st).start = PATH_MAX as u64;
        (*st).status = 0;
        (*st).identify = u64::from(identify);
        (*st).depth = 0;
        (*st).found = 0;
        (*st).below = 0;
        (*st).names = u64::from(names);
        (*st).mnt_root = mnt_root;
        (*st).sb = 0;
        (*st).dev = 0;
        (*st).layout = Layout::of_kernel().unwrap_or(Layout {
            name_len: u64::MAX,
            name_ptr: 0,
            inode: 0,
            ino: 0,
        });
        let mut unused: u64 = 0;
        bpf_loop(
            (MAX_PATH_DEPTH + MAX_MOUNT_CROSSINGS) as u32,
            walk_step as *mut core::ffi::c_void,
            (&raw mut unused).cast(),
            0,
        );
    }
}

/// Writes the absolute path of `path` at `pos`; `/` for the root. With `identify`, also
/// finds the watched object on the way up by identity ([`Written::watch`]).
///
/// Walks from the dentry to the global root, assembling the path backwards (as the kernel's
/// `d_path` does) in per-CPU scratch, then copies it into the event in one read.
#[inline(always)]
pub fn write_kpath(buf: *mut EventBuf, pos: usize, path: KPath, identify: bool) -> Written {
    let Some(scratch) = PATHBUF.get_ptr_mut(0) else {
        return Written::plain(0, true);
    };
    let st = unsafe { &raw mut (*scratch).walk };
    walk(st, path, identify, true);
    let (status, start, found, below) = unsafe {
        (
            core::ptr::read_volatile(&(*st).status),
            core::ptr::read_volatile(&(*st).start),
            core::ptr::read_volatile(&(*st).found),
            core::ptr::read_volatile(&(*st).below),
        )
    };
    let truncated = status != WALK_DONE;
    let watch = WatchMatch {
        id: found as u32,
        below: below as u16,
        _pad: 0,
    };
    let start = start as usize;
    if start >= PATH_MAX {
        put_byte(buf, pos, b'/');
        return Written {
            len: 1,
            truncated,
            watch,
        };
    }
    let len = (PATH_MAX - start) & (PATH_MAX - 1);
    unsafe {
        let bytes = (*scratch).bytes.as_ptr();
        bpf_probe_read_kernel(
            data_ptr(buf, pos).cast(),
            len as u32,
            bytes.add(start & (PATH_MAX - 1)).cast(),
        );
    }
    Written {
        len,
        truncated,
        watch,
    }
}

/// Whether a watched object applies to `path` by identity (itself, a recursive root above
/// it, a glob's directory right above it), without building the path: the cheap first
/// question for callers that report nothing else. A walk cut short answers yes (the caller
/// then builds the path and decides).
#[inline(always)]
pub fn is_watched_object(path: KPath) -> bool {
    let Some(scratch) = PATHBUF.get_ptr_mut(0) else {
        return true;
    };
    let st = unsafe { &raw mut (*scratch).walk };
    walk(st, path, true, false);
    let (status, found) = unsafe {
        (
            core::ptr::read_volatile(&(*st).status),
            core::ptr::read_volatile(&(*st).found),
        )
    };
    found != 0 || status != WALK_DONE
}

/// The first cached dentry of `inode`, with no mount known: the object as its file system
/// names it.
#[inline(always)]
pub fn inode_kpath(inode: u64) -> Option<KPath> {
    let first = read_ptr(inode, off!(inode_dentry))?;
    Some(KPath {
        mnt: 0,
        dentry: first - off!(dentry_alias),
    })
}

/// Writes the path of an open file at `pos`, finding its watched object by identity.
#[inline(always)]
pub fn write_file_path(buf: *mut EventBuf, pos: usize, file: u64) -> Option<Written> {
    Some(write_kpath(buf, pos, file_kpath(file)?, true))
}

/// Writes the path of `inode` inside its file system (from its first dentry up to the file
/// system's root: no mount is known), finding its watched object by identity.
#[inline(always)]
pub fn write_inode_path(buf: *mut EventBuf, pos: usize, inode: u64) -> Option<Written> {
    Some(write_kpath(buf, pos, inode_kpath(inode)?, true))
}

/// Writes the path of the acting process's executable at `pos` (no identity lookup).
#[inline(always)]
pub fn write_exe_path(buf: *mut EventBuf, pos: usize, file: u64) -> Option<Written> {
    Some(write_kpath(buf, pos, file_kpath(file)?, false))
}

/// Copies a user string at `pos` as-is (no resolution). Returns its length without the NUL.
#[inline(always)]
pub fn write_user_str(buf: *mut EventBuf, pos: usize, user: u64, max: u32) -> Written {
    let n = unsafe { bpf_probe_read_user_str(data_ptr(buf, pos).cast(), max, user as *const _) };
    if n <= 0 {
        return Written::plain(0, false);
    }
    let len = (n - 1) as usize;
    // The helper stops at `max` bytes, NUL included: a full buffer means a cut string.
    Written::plain(len, n as u32 >= max)
}

/// Copies a kernel string (a symlink target or xattr name the kernel already copied in) at
/// `pos` as-is. Returns its length without the NUL.
#[inline(always)]
pub fn write_kernel_str(buf: *mut EventBuf, pos: usize, kernel: u64, max: u32) -> Written {
    let n =
        unsafe { bpf_probe_read_kernel_str(data_ptr(buf, pos).cast(), max, kernel as *const _) };
    if n <= 0 {
        return Written::plain(0, false);
    }
    Written::plain((n - 1) as usize, n as u32 >= max)
}

/// Writes the absolute path a syscall meant by (`dfd`, `user`): the string itself when it
/// is absolute; otherwise the dirfd's (or cwd's) path, `/`, and the string. An empty string
/// (`AT_EMPTY_PATH`) means the dirfd itself.
///
/// Racy by nature: the string is read after the syscall returned, and the dirfd/cwd may have
/// changed in between (another thread's `chdir`, `dup2`). `..` and symlinks inside the string
/// are not resolved.
#[inline(always)]
pub fn write_user_path(buf: *mut EventBuf, pos: usize, dfd: i64, user: u64) -> Written {
    let first: u8 = read_user(user).unwrap_or(0);
    if first == b'/' {
        return write_user_str(buf, pos, user, PATH_MAX as u32);
    }
    let base = if dfd as i32 == AT_FDCWD {
        cwd_kpath()
    } else {
        fd_to_file(dfd).and_then(file_kpath)
    };
    let Some(base) = base else {
        return Written::plain(0, true);
    };
    // A string may climb out of the base with `..`: identity from the base's walk only
    // when there is no string (the call is about the dirfd itself).
    let mut w = write_kpath(buf, pos, base, first == 0);
    if first == 0 {
        return w;
    }
    if w.len > 1 {
        put_byte(buf, pos + w.len, b'/');
        w.len += 1;
    }
    w.watch = WatchMatch::default();
    let rest = write_user_str(buf, pos + (w.len & (PATH_MAX - 1)), user, PATH_MAX as u32);
    let total = w.len + rest.len;
    if total > PATH_MAX {
        return Written::plain(PATH_MAX, true);
    }
    Written::plain(total, w.truncated || rest.truncated)
}
