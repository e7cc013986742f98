//! The fanotify sensor's system calls, in one place: the group, its marks, reading it, and
//! turning a file handle back into a path.
//!
//! The group, its marks, `open`, `statfs` and `read` go through `nix`; the group is
//! initialised with the report flags `nix` does not name (`FAN_REPORT_DFID_NAME_TARGET`),
//! and its records are parsed by [`super::record`], since `nix`'s reader knows only the
//! descriptor-per-event format. `name_to_handle_at` and `open_by_handle_at` have no crate
//! that covers them: they are the two raw calls left here.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    time::UNIX_EPOCH,
};

use nix::{
    errno::Errno,
    fcntl::{OFlag, open},
    sys::{
        fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags},
        stat::{Mode, major, minor},
        statfs::{Statfs, fstatfs, statfs},
    },
};

/// What a mark asks to hear about: every namespace and content change, on directories too.
/// `FAN_RENAME` reports a move as one event with both names, so `FAN_MOVED_FROM/TO` are not
/// asked for; a watched root deleted or moved is reported by its parent's `FAN_DELETE` /
/// `FAN_RENAME` (the whole file system is marked), so the `*_SELF` events are not either.
pub const MARK_MASK: MaskFlags = MaskFlags::FAN_CREATE
    .union(MaskFlags::FAN_DELETE)
    .union(MaskFlags::FAN_RENAME)
    .union(MaskFlags::FAN_ATTRIB)
    .union(MaskFlags::FAN_MODIFY)
    .union(MaskFlags::FAN_CLOSE_WRITE)
    .union(MaskFlags::FAN_ONDIR);

/// What an inode mark on a file asks for (changes of the file itself).
const FILE_MASK: MaskFlags = MaskFlags::FAN_ATTRIB
    .union(MaskFlags::FAN_MODIFY)
    .union(MaskFlags::FAN_CLOSE_WRITE);

/// Creates a notification group reporting parent directory + name + target object
/// (`FAN_REPORT_DFID_NAME_TARGET`) and the acting thread id.
pub fn init() -> io::Result<Fanotify> {
    let flags = InitFlags::FAN_CLASS_NOTIF
        | InitFlags::FAN_CLOEXEC
        | InitFlags::FAN_NONBLOCK
        | InitFlags::FAN_REPORT_TID
        | InitFlags::from_bits_retain(libc::FAN_REPORT_DFID_NAME_TARGET);
    Ok(Fanotify::init(
        flags,
        EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE,
    )?)
}

/// Marks the whole file system holding `path`.
pub fn mark_filesystem(group: &Fanotify, path: &[u8]) -> io::Result<()> {
    mark(group, path, MarkFlags::FAN_MARK_FILESYSTEM, MARK_MASK)
}

/// Marks the inode at `path` only: a directory for its entries and its direct children, a
/// file for its own changes (whatever name they go through).
pub fn mark_inode(group: &Fanotify, path: &[u8], dir: bool) -> io::Result<()> {
    let mask = if dir {
        MARK_MASK | MaskFlags::FAN_EVENT_ON_CHILD
    } else {
        FILE_MASK
    };
    mark(group, path, MarkFlags::FAN_MARK_DONT_FOLLOW, mask)
}

/// Adds a mark of kind `flags` for `mask` on `path`.
fn mark(group: &Fanotify, path: &[u8], flags: MarkFlags, mask: MaskFlags) -> io::Result<()> {
    let c = c_path(path)?;
    // With a path, the directory descriptor is only used for relative ones; ours are absolute.
    let cwd = nix::fcntl::AT_FDCWD;
    Ok(group.mark(
        MarkFlags::FAN_MARK_ADD | flags,
        mask,
        cwd,
        Some(c.as_c_str()),
    )?)
}

fn c_path(path: &[u8]) -> io::Result<CString> {
    CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// The file system id as fanotify's records carry it (`__kernel_fsid_t`, two ints).
fn fsid(st: &Statfs) -> [i32; 2] {
    // SAFETY: `fsid_t` is `struct { int __val[2]; }`, the same size and layout.
    unsafe { std::mem::transmute::<libc::fsid_t, [i32; 2]>(st.filesystem_id()) }
}

/// Opens directory `path` (the mount reference for
/// `open_by_handle_at`), with its file system id.
pub fn mount_ref(path: &[u8]) -> io::Result<(OwnedFd, [i32; 2])> {
    // Not O_PATH: open_by_handle_at refuses O_PATH mount descriptors (EBADF).
    let fd = open(
        c_path(path)?.as_c_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let st = fstatfs(&fd)?;
    Ok((fd, fsid(&st)))
}

/// Reads what the group has (non-blocking). `Ok(0)` when nothing is pending.
pub fn read(group: &impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    match nix::unistd::read(group, buf) {
        Ok(n) => Ok(n),
        Err(Errno::EAGAIN) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Opens the object a handle names (`O_PATH`), or `None` when it is gone.
pub fn open_handle(mount: &OwnedFd, handle_type: i32, handle: &[u8]) -> Option<File> {
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }, kept
    // aligned for the kernel's view of the struct.
    let mut words = vec![0u32; 2 + handle.len().div_ceil(4)];
    words[0] = handle.len() as u32;
    words[1] = handle_type as u32;
    // SAFETY: `words` has room for the 8-byte header and the handle bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            handle.as_ptr(),
            words.as_mut_ptr().add(2).cast::<u8>(),
            handle.len(),
        );
    }
    // SAFETY: a valid file_handle buffer and mount descriptor.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            words.as_mut_ptr().cast::<libc::file_handle>(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        log::debug!("open_by_handle_at: {}", io::Error::last_os_error());
        return None;
    }
    // SAFETY: fresh descriptor.
    Some(unsafe { File::from_raw_fd(fd) })
}

/// The current path of the object a handle names, or `None` when it is gone.
pub fn handle_path(mount: &OwnedFd, handle_type: i32, handle: &[u8]) -> Option<Vec<u8>> {
    let fd = open_handle(mount, handle_type, handle)?;
    // An unlinked object still opens (its /proc link reads "<old path> (deleted)").
    let st = stat_fd(&fd).ok()?;
    if st.nlink == 0 {
        return None;
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let bytes = link.into_os_string().into_encoded_bytes();
    bytes.starts_with(b"/").then_some(bytes)
}

/// What the sensor reads of an object it holds: type and mode, link count, birth time.
#[derive(Clone, Copy, Debug)]
pub struct ObjectStat {
    /// `st_mode`.
    pub mode: u32,
    /// `st_nlink`.
    pub nlink: u32,
    /// Birth time in ns since the epoch, when the file system records it.
    pub btime_ns: Option<i128>,
    /// Inode number.
    pub ino: u64,
    /// Device major and minor numbers.
    pub dev: (u32, u32),
}

/// What an open descriptor (an `O_PATH` one included) names: `statx` through the
/// standard library, which asks for the birth time too.
pub fn stat_fd(file: &File) -> io::Result<ObjectStat> {
    let meta = file.metadata()?;
    let btime_ns = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128);
    Ok(ObjectStat {
        mode: meta.mode(),
        nlink: meta.nlink() as u32,
        btime_ns,
        ino: meta.ino(),
        dev: (major(meta.dev()) as u32, minor(meta.dev()) as u32),
    })
}

/// The target of a symlink held by an `O_PATH` descriptor.
pub fn read_link_fd(fd: &File) -> Option<Vec<u8>> {
    crate::integrity::observe::read_link(fd).ok()
}

/// The file handle of `path`, not following a final symlink: (handle type, bytes).
pub fn name_to_handle(path: &[u8]) -> io::Result<(i32, Vec<u8>)> {
    /// `MAX_HANDLE_SZ` in the kernel.
    const MAX_HANDLE: usize = 128;
    let c = c_path(path)?;
    let mut words = vec![0u32; 2 + MAX_HANDLE / 4];
    words[0] = MAX_HANDLE as u32;
    let mut mount_id: libc::c_int = 0;
    // SAFETY: a file_handle buffer with room for MAX_HANDLE bytes, NUL-terminated path.
    let r = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c.as_ptr(),
            words.as_mut_ptr().cast::<libc::file_handle>(),
            &mut mount_id,
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = (words[0] as usize).min(MAX_HANDLE);
    // SAFETY: the kernel wrote `len` handle bytes after the 8-byte header.
    let bytes = unsafe { std::slice::from_raw_parts(words.as_ptr().add(2).cast::<u8>(), len) };
    Ok((words[1] as i32, bytes.to_vec()))
}

/// The file system id of the file system holding `path` (as fanotify reports it).
pub fn fsid_of(path: &[u8]) -> io::Result<[i32; 2]> {
    Ok(fsid(&statfs(c_path(path)?.as_c_str())?))
}
