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
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid descriptor and NUL-terminated path.
    let r = unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
            MARK_MASK,
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

/// The current path of the object a handle names, or `None` when it is gone.
pub fn handle_path(mount: &OwnedFd, handle_type: i32, handle: &[u8]) -> Option<Vec<u8>> {
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }
    let mut raw = Vec::with_capacity(8 + handle.len());
    raw.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
    raw.extend_from_slice(&handle_type.to_ne_bytes());
    raw.extend_from_slice(handle);
    // Keep the buffer aligned for the kernel's view of the struct.
    let mut words = vec![0u32; raw.len().div_ceil(4)];
    // SAFETY: `words` has at least raw.len() bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(raw.as_ptr(), words.as_mut_ptr().cast::<u8>(), raw.len());
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
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // An unlinked object still opens (its /proc link reads "<old path> (deleted)").
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and out-pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 || st.st_nlink == 0 {
        return None;
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let bytes = link.into_os_string().into_encoded_bytes();
    bytes.starts_with(b"/").then_some(bytes)
}
