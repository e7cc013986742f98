//! What the unit tests build again and again.

use fim_core::attrs::{Attrs, FileType, Snapshot};

/// A snapshot of a one-byte `file_type` object with inode `ino` and permission bits `mode`
/// on device 8:1, one link, times zero, no symlink target, ACL, capability, extended
/// attribute or content.
pub fn snapshot(file_type: FileType, ino: u64, mode: u32) -> Snapshot {
    Snapshot {
        attrs: Attrs {
            file_type,
            size: 1,
            mode,
            uid: 0,
            gid: 0,
            ino,
            dev_major: 8,
            dev_minor: 1,
            nlink: 1,
            mtime_ns: 0,
            ctime_ns: 0,
            symlink_target: None,
            acl_access: None,
            acl_default: None,
            capability: None,
            xattrs: Default::default(),
        },
        content: None,
        package: None,
    }
}
