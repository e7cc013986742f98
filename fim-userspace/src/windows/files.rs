//! Watched files as the poller reads them: size, times, SHA-256 and ACL (owner and DACL
//! via `GetNamedSecurityInfoW`, as SDDL), and the directory change notifications that wake
//! the poller for them.

use std::{io::Read, os::windows::fs::MetadataExt, ptr::null_mut};

use fim_core::{
    attrs::{Content, Snapshot},
    filepoll::{FileReader, windows_attrs},
    hash::Sha256,
};
use windows_sys::Win32::{
    Foundation::{ERROR_SUCCESS, HANDLE, INVALID_HANDLE_VALUE, LocalFree},
    Security::{
        Authorization::{
            ConvertSecurityDescriptorToStringSecurityDescriptorW, GetNamedSecurityInfoW,
            SDDL_REVISION_1, SE_FILE_OBJECT,
        },
        DACL_SECURITY_INFORMATION, OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR,
    },
    Storage::FileSystem::{
        FILE_NOTIFY_CHANGE_ATTRIBUTES, FILE_NOTIFY_CHANGE_FILE_NAME, FILE_NOTIFY_CHANGE_LAST_WRITE,
        FILE_NOTIFY_CHANGE_SECURITY, FILE_NOTIFY_CHANGE_SIZE, FindCloseChangeNotification,
        FindFirstChangeNotificationW, FindNextChangeNotification,
    },
};

use super::wide;

/// `FILETIME` as ns since the Unix epoch.
fn unix_ns(ft: u64) -> i64 {
    fim_core::registry::filetime_to_unix_ns(ft) as i64
}

/// The files of this machine.
pub struct WinDisk {
    /// Files larger than this are not hashed.
    pub hash_max_size: u64,
}

/// The owner and DACL of `path`, as SDDL.
fn acl(path: &str) -> Result<String, String> {
    let name = wide(path);
    let mut sd: PSECURITY_DESCRIPTOR = null_mut();
    let what = OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION;
    // SAFETY: `name` is NUL-terminated; Windows allocates `sd`, freed below.
    let rc = unsafe {
        GetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            what,
            null_mut(),
            null_mut(),
            null_mut(),
            null_mut(),
            &mut sd,
        )
    };
    if rc != ERROR_SUCCESS {
        return Err(format!(
            "GetNamedSecurityInfoW: {}",
            std::io::Error::from_raw_os_error(rc as i32)
        ));
    }
    let mut text: *mut u16 = null_mut();
    let mut len = 0u32;
    // SAFETY: `sd` is the descriptor Windows gave; it allocates `text`, freed below.
    let ok = unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            sd,
            SDDL_REVISION_1,
            what,
            &mut text,
            &mut len,
        )
    };
    let out = if ok != 0 && !text.is_null() {
        // SAFETY: `text` holds `len` characters (with or without its NUL).
        let units = unsafe { std::slice::from_raw_parts(text, len as usize) };
        let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
        Ok(String::from_utf16_lossy(&units[..end]))
    } else {
        Err(format!(
            "ConvertSecurityDescriptorToStringSecurityDescriptorW: {}",
            std::io::Error::last_os_error()
        ))
    };
    // SAFETY: both were allocated by Windows with LocalAlloc.
    unsafe {
        if !text.is_null() {
            LocalFree(text.cast());
        }
        LocalFree(sd);
    }
    out
}

impl FileReader for WinDisk {
    fn snapshot(&mut self, path: &str) -> Result<Option<Snapshot>, String> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        if meta.is_dir() {
            return Err("a directory, not a file".into());
        }
        let content = if meta.len() > self.hash_max_size {
            Content::NotHashed(fim_core::attrs::NotHashed::TooLarge {
                limit: self.hash_max_size,
            })
        } else {
            let mut file = match std::fs::File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => h.update(&buf[..n]),
                    Err(e) => return Err(e.to_string()),
                }
            }
            Content::Sha256(h.finish())
        };
        let attrs = windows_attrs(
            meta.len(),
            unix_ns(meta.last_write_time()),
            unix_ns(meta.creation_time()),
            1,
            // An ACL fim may not read is not a change: the poll keeps the last one known.
            acl(path).map_err(|e| log::warn!("files: {path}: {e}")).ok(),
        );
        Ok(Some(Snapshot {
            attrs,
            content: Some(content),
            package: None,
        }))
    }
}

/// A change notification on a directory's entries (names, sizes, writes, attributes,
/// security), closed when dropped.
pub struct DirNotify {
    handle: HANDLE,
}

impl DirNotify {
    /// Watches `dir`; `None` when it cannot be watched (it does not exist).
    pub fn arm(dir: &str) -> Option<Self> {
        let name = wide(dir);
        let filter = FILE_NOTIFY_CHANGE_FILE_NAME
            | FILE_NOTIFY_CHANGE_SIZE
            | FILE_NOTIFY_CHANGE_LAST_WRITE
            | FILE_NOTIFY_CHANGE_ATTRIBUTES
            | FILE_NOTIFY_CHANGE_SECURITY;
        // SAFETY: `name` is NUL-terminated.
        let handle = unsafe { FindFirstChangeNotificationW(name.as_ptr(), 0, filter) };
        (handle != INVALID_HANDLE_VALUE && !handle.is_null()).then_some(Self { handle })
    }

    /// The handle to wait on.
    pub fn handle(&self) -> HANDLE {
        self.handle
    }

    /// Waits for the next change after one was signalled. `false`: the directory can no
    /// longer be watched.
    pub fn rearm(&self) -> bool {
        // SAFETY: a live notification handle.
        unsafe { FindNextChangeNotification(self.handle) != 0 }
    }
}

impl Drop for DirNotify {
    fn drop(&mut self) {
        // SAFETY: a handle this value owns.
        unsafe { FindCloseChangeNotification(self.handle) };
    }
}
