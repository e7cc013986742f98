//! The fanotify sensor's system calls, in one place: the group, its marks, reading it, and
//! turning a file handle back into a path.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// What a mark asks to hear about: every namespace and content change, on directories too.
/// `FAN_RENAME` reports a move as one event with both names, so `FAN_MOVED_FROM/TO` are not
/// asked for; a watched root deleted or moved is reported by its parent's `FAN_DELETE` /
/// `FAN_RENAME` (the whole file system is marked), so the `*_SELF` events are not either.
pub const MARK_MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_RENAME
    | libc::FAN_ATTRIB
    | libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ONDIR;

/// Creates a notification group reporting parent directory + name + target object
/// (`FAN_REPORT_DFID_NAME_TARGET`) and the acting thread id.
pub fn init() -> io::Result<OwnedFd> {
    let flags = libc::FAN_CLASS_NOTIF
        | libc::FAN_CLOEXEC
        | libc::FAN_NONBLOCK
        | libc::FAN_REPORT_DFID_NAME_TARGET
        | libc::FAN_REPORT_TID;
    // SAFETY: plain syscall; the descriptor is owned below.
    let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE) as u32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Marks the whole file system holding `path`.
pub fn mark_filesystem(group: &OwnedFd, path: &[u8]) -> io::Result<()> {
    mark(group, path, libc::FAN_MARK_FILESYSTEM, MARK_MASK)
}

/// What an inode mark on a file asks for (changes of the file itself).
const FILE_MASK: u64 = libc::FAN_ATTRIB | libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE;

/// Marks the inode at `path` only: a directory for its entries and its direct children, a
/// file for its own changes (whatever name they go through).
pub fn mark_inode(group: &OwnedFd, path: &[u8], dir: bool) -> io::Result<()> {
    let mask = if dir {
        MARK_MASK | libc::FAN_EVENT_ON_CHILD
    } else {
        FILE_MASK
    };
    mark(group, path, libc::FAN_MARK_DONT_FOLLOW, mask)
}

/// Adds a mark of kind `flags` for `mask` on `path`.
fn mark(group: &OwnedFd, path: &[u8], flags: libc::c_uint, mask: u64) -> io::Result<()> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid descriptor and NUL-terminated path.
    let r = unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            libc::FAN_MARK_ADD | flags,
            mask,
            libc::AT_FDCWD,
            c.as_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens directory `path` (the mount reference for
/// `open_by_handle_at`), with its file system id.
pub fn mount_ref(path: &[u8]) -> io::Result<(OwnedFd, [i32; 2])> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: NUL-terminated path.
    // Not O_PATH: open_by_handle_at refuses O_PATH mount descriptors (EBADF).
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and out-pointer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: __fsid_t is two ints.
    let fsid: [i32; 2] = unsafe { std::mem::transmute(st.f_fsid) };
    Ok((fd, fsid))
}

/// Reads what the group has (non-blocking). `Ok(0)` when nothing is pending.
pub fn read(group: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: valid descriptor and buffer.
    let n = unsafe { libc::read(group.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// Opens the object a handle names (`O_PATH`), or `None` when it is gone.
pub fn open_handle(mount: &OwnedFd, handle_type: i32, handle: &[u8]) -> Option<OwnedFd> {
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
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
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

/// `statx` of an open descriptor (an `O_PATH` one included).
pub fn stat_fd(fd: &OwnedFd) -> io::Result<ObjectStat> {
    // SAFETY: zeroed statx is a valid out-parameter.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, empty NUL-terminated path, out-pointer.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_TYPE
                | libc::STATX_MODE
                | libc::STATX_NLINK
                | libc::STATX_INO
                | libc::STATX_BTIME,
            &mut st,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let btime_ns = (st.stx_mask & libc::STATX_BTIME != 0).then(|| {
        i128::from(st.stx_btime.tv_sec) * 1_000_000_000 + i128::from(st.stx_btime.tv_nsec)
    });
    Ok(ObjectStat {
        mode: u32::from(st.stx_mode),
        nlink: st.stx_nlink,
        btime_ns,
        ino: st.stx_ino,
        dev: (st.stx_dev_major, st.stx_dev_minor),
    })
}

/// The target of a symlink held by an `O_PATH` descriptor.
pub fn read_link_fd(fd: &OwnedFd) -> Option<Vec<u8>> {
    crate::integrity::observe::read_link(fd).ok()
}

/// The file handle of `path`, not following a final symlink: (handle type, bytes).
pub fn name_to_handle(path: &[u8]) -> io::Result<(i32, Vec<u8>)> {
    /// `MAX_HANDLE_SZ` in the kernel.
    const MAX_HANDLE: usize = 128;
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
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
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: NUL-terminated path and out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: __fsid_t is two ints.
    Ok(unsafe { std::mem::transmute::<libc::fsid_t, [i32; 2]>(st.f_fsid) })
}
