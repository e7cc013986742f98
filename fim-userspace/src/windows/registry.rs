//! The registry as the poller reads it: [`Registry`] over Windows' calls, and the change
//! notifications (`RegNotifyChangeKeyValue`) that wake the poller.

use std::ptr::null_mut;

use fim_core::registry::{
    Hive, View,
    snapshot::{RawValue, ReadError, Registry},
};
use windows_sys::Win32::{
    Foundation::{
        ERROR_FILE_NOT_FOUND, ERROR_INSUFFICIENT_BUFFER, ERROR_MORE_DATA, ERROR_NO_MORE_ITEMS,
        ERROR_PATH_NOT_FOUND, ERROR_SUCCESS, FILETIME, HANDLE,
    },
    Security::{DACL_SECURITY_INFORMATION, GROUP_SECURITY_INFORMATION, OWNER_SECURITY_INFORMATION},
    System::Registry::{
        HKEY, HKEY_CLASSES_ROOT, HKEY_CURRENT_CONFIG, HKEY_CURRENT_USER, HKEY_LOCAL_MACHINE,
        HKEY_USERS, KEY_NOTIFY, KEY_READ, KEY_WOW64_32KEY, KEY_WOW64_64KEY,
        REG_NOTIFY_CHANGE_ATTRIBUTES, REG_NOTIFY_CHANGE_LAST_SET, REG_NOTIFY_CHANGE_NAME,
        REG_NOTIFY_CHANGE_SECURITY, RegCloseKey, RegEnumKeyExW, RegEnumValueW, RegGetKeySecurity,
        RegNotifyChangeKeyValue, RegOpenKeyExW, RegQueryInfoKeyW,
    },
};

use super::wide;

/// An open key, closed when dropped.
pub struct Key {
    handle: HKEY,
    path: String,
}

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: a handle this value opened and owns.
        unsafe { RegCloseKey(self.handle) };
    }
}

fn root(hive: Hive) -> HKEY {
    match hive {
        Hive::Hklm => HKEY_LOCAL_MACHINE,
        Hive::Hku => HKEY_USERS,
        Hive::Hkcu => HKEY_CURRENT_USER,
        Hive::Hkcr => HKEY_CLASSES_ROOT,
        Hive::Hkcc => HKEY_CURRENT_CONFIG,
    }
}

fn view_flag(view: View) -> u32 {
    match view {
        View::Native => KEY_WOW64_64KEY,
        View::Wow32 => KEY_WOW64_32KEY,
    }
}

fn error(call: &'static str, key: &str, code: u32) -> ReadError {
    ReadError {
        call,
        key: key.to_owned(),
        code,
        message: std::io::Error::from_raw_os_error(code as i32).to_string(),
    }
}

/// Opens `path` with `access`; `Ok(None)` when it does not exist.
fn open_key(hive: Hive, view: View, path: &str, access: u32) -> Result<Option<Key>, ReadError> {
    let name = wide(path);
    let mut handle: HKEY = null_mut();
    // SAFETY: `name` is NUL-terminated and outlives the call; `handle` is written on success.
    let rc = unsafe {
        RegOpenKeyExW(
            root(hive),
            name.as_ptr(),
            0,
            access | view_flag(view),
            &mut handle,
        )
    };
    match rc {
        ERROR_SUCCESS => Ok(Some(Key {
            handle,
            path: path.to_owned(),
        })),
        ERROR_FILE_NOT_FOUND | ERROR_PATH_NOT_FOUND => Ok(None),
        code => Err(error("RegOpenKeyExW", path, code)),
    }
}

/// The registry of this machine.
#[derive(Default)]
pub struct WinRegistry;

/// The longest subkey name, value name and value data of `key`, in characters / bytes.
fn sizes(key: &Key) -> Result<(u32, u32, u32, u64), ReadError> {
    let (mut subkey, mut name, mut data) = (0u32, 0u32, 0u32);
    let mut written = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    // SAFETY: every out-pointer is a live local; the others are null as allowed.
    let rc = unsafe {
        RegQueryInfoKeyW(
            key.handle,
            null_mut(),
            null_mut(),
            null_mut(),
            null_mut(),
            &mut subkey,
            null_mut(),
            null_mut(),
            &mut name,
            &mut data,
            null_mut(),
            &mut written,
        )
    };
    if rc != ERROR_SUCCESS {
        return Err(error("RegQueryInfoKeyW", &key.path, rc));
    }
    let ft = (u64::from(written.dwHighDateTime) << 32) | u64::from(written.dwLowDateTime);
    Ok((subkey, name, data, ft))
}

impl Registry for WinRegistry {
    type Key = Key;

    fn open(&mut self, hive: Hive, view: View, path: &str) -> Result<Option<Key>, ReadError> {
        open_key(hive, view, path, KEY_READ)
    }

    fn last_write(&mut self, key: &Key) -> Result<u64, ReadError> {
        Ok(sizes(key)?.3)
    }

    fn subkeys(&mut self, key: &Key) -> Result<Vec<String>, ReadError> {
        let mut out = Vec::new();
        let mut buf = vec![0u16; sizes(key)?.0 as usize + 1];
        let mut index = 0;
        loop {
            let mut len = buf.len() as u32;
            // SAFETY: `buf` holds `len` characters; the other pointers are null as allowed.
            let rc = unsafe {
                RegEnumKeyExW(
                    key.handle,
                    index,
                    buf.as_mut_ptr(),
                    &mut len,
                    null_mut(),
                    null_mut(),
                    null_mut(),
                    null_mut(),
                )
            };
            match rc {
                ERROR_SUCCESS => {
                    out.push(String::from_utf16_lossy(&buf[..len as usize]));
                    index += 1;
                }
                ERROR_MORE_DATA => buf.resize(buf.len() * 2 + 256, 0),
                ERROR_NO_MORE_ITEMS => return Ok(out),
                code => return Err(error("RegEnumKeyExW", &key.path, code)),
            }
        }
    }

    fn values(&mut self, key: &Key) -> Result<Vec<RawValue>, ReadError> {
        let (_, name_len, data_len, _) = sizes(key)?;
        let mut name = vec![0u16; name_len as usize + 1];
        let mut data = vec![0u8; data_len as usize + 2];
        let mut out = Vec::new();
        let mut index = 0;
        loop {
            let mut nlen = name.len() as u32;
            let mut dlen = data.len() as u32;
            let mut kind = 0u32;
            // SAFETY: `name` holds `nlen` characters and `data` `dlen` bytes.
            let rc = unsafe {
                RegEnumValueW(
                    key.handle,
                    index,
                    name.as_mut_ptr(),
                    &mut nlen,
                    null_mut(),
                    &mut kind,
                    data.as_mut_ptr(),
                    &mut dlen,
                )
            };
            match rc {
                ERROR_SUCCESS => {
                    out.push(RawValue {
                        name: String::from_utf16_lossy(&name[..nlen as usize]),
                        kind,
                        bytes: data[..dlen as usize].to_vec(),
                    });
                    index += 1;
                }
                // A value grew between the size query and the read: room, and again.
                ERROR_MORE_DATA => {
                    name.resize(name.len().max(nlen as usize + 1) + 256, 0);
                    data.resize(data.len().max(dlen as usize) * 2 + 256, 0);
                }
                ERROR_NO_MORE_ITEMS => return Ok(out),
                code => return Err(error("RegEnumValueW", &key.path, code)),
            }
        }
    }

    fn security(&mut self, key: &Key) -> Result<Vec<u8>, ReadError> {
        let what =
            OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION;
        let mut buf = vec![0u8; 512];
        loop {
            let mut len = buf.len() as u32;
            // SAFETY: `buf` holds `len` bytes.
            let rc =
                unsafe { RegGetKeySecurity(key.handle, what, buf.as_mut_ptr().cast(), &mut len) };
            match rc {
                ERROR_SUCCESS => {
                    buf.truncate(len as usize);
                    return Ok(buf);
                }
                ERROR_INSUFFICIENT_BUFFER if len as usize > buf.len() => {
                    buf.resize(len as usize, 0)
                }
                ERROR_INSUFFICIENT_BUFFER => buf.resize(buf.len() * 2, 0),
                code => return Err(error("RegGetKeySecurity", &key.path, code)),
            }
        }
    }
}

/// A change notification on a key (or, while the key is missing, on its nearest existing
/// ancestor, with its whole subtree, so the key's creation wakes the poller).
pub struct Notify {
    key: Key,
    event: HANDLE,
}

const NOTIFY_FILTER: u32 = REG_NOTIFY_CHANGE_NAME
    | REG_NOTIFY_CHANGE_LAST_SET
    | REG_NOTIFY_CHANGE_SECURITY
    | REG_NOTIFY_CHANGE_ATTRIBUTES;

impl Notify {
    /// Asks Windows to signal `event` at the next change to `path` or below, in `view`.
    /// `None` when the key (or, while it is missing, every ancestor) cannot be watched:
    /// only a missing key moves the watch up, a key fim may not watch is left to the full
    /// poll.
    ///
    /// # Safety
    /// `event` is an event handle that stays open while the notification is armed.
    pub unsafe fn arm(hive: Hive, view: View, path: &str, event: HANDLE) -> Option<Self> {
        let mut at = path;
        loop {
            match open_key(hive, view, at, KEY_NOTIFY) {
                Ok(Some(key)) => {
                    let notify = Self { key, event };
                    return notify.rearm().then_some(notify);
                }
                Ok(None) => {}
                Err(_) => return None,
            }
            match at.rsplit_once('\\') {
                Some((parent, _)) => at = parent,
                None => return None,
            }
        }
    }

    /// Asks again for the next change, on the same key: what changed since the last
    /// notification is told at once. `false`: the key is gone (deleted), arm afresh.
    pub fn rearm(&self) -> bool {
        // SAFETY: the key is open; `event` outlives the notification (see `arm`).
        let rc =
            unsafe { RegNotifyChangeKeyValue(self.key.handle, 1, NOTIFY_FILTER, self.event, 1) };
        rc == ERROR_SUCCESS
    }

    /// Whether the notification is on the key itself (not an ancestor).
    pub fn on(&self, path: &str) -> bool {
        self.key.path == path
    }
}
