//! What the integrity engine knows about one file: its attributes and its content digest,
//! and which of them differ between two observations.
//!
//! Pure logic: the raw xattr encodings (POSIX ACLs, file capabilities) are decoded here so
//! they can be tested without a file system; `observe` fills these structs from the disk.

use std::collections::BTreeMap;

/// The kind of file, from `st_mode & S_IFMT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// Anything else.
    Unknown,
}

impl FileType {
    /// From a `st_mode` value.
    pub fn from_mode(mode: u32) -> Self {
        use fim_common::mode::*;
        match mode & S_IFMT {
            S_IFREG => Self::File,
            S_IFDIR => Self::Dir,
            S_IFLNK => Self::Symlink,
            S_IFIFO => Self::Fifo,
            S_IFSOCK => Self::Socket,
            S_IFCHR => Self::CharDevice,
            S_IFBLK => Self::BlockDevice,
            _ => Self::Unknown,
        }
    }

    /// The type bits of a `st_mode` value ([`Self::from_mode`] backwards; 0 when unknown).
    pub fn mode_bits(self) -> u32 {
        use fim_common::mode::*;
        match self {
            Self::File => S_IFREG,
            Self::Dir => S_IFDIR,
            Self::Symlink => S_IFLNK,
            Self::Fifo => S_IFIFO,
            Self::Socket => S_IFSOCK,
            Self::CharDevice => S_IFCHR,
            Self::BlockDevice => S_IFBLK,
            Self::Unknown => 0,
        }
    }

    /// The ECS `file.type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Dir => "dir",
            Self::Symlink => "symlink",
            Self::Fifo => "fifo",
            Self::Socket => "socket",
            Self::CharDevice => "char_device",
            Self::BlockDevice => "block_device",
            Self::Unknown => "unknown",
        }
    }

    /// Stable small number for the baseline store.
    pub fn code(self) -> u8 {
        match self {
            Self::File => 1,
            Self::Dir => 2,
            Self::Symlink => 3,
            Self::Fifo => 4,
            Self::Socket => 5,
            Self::CharDevice => 6,
            Self::BlockDevice => 7,
            Self::Unknown => 0,
        }
    }

    /// Inverse of [`FileType::code`].
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Self::File,
            2 => Self::Dir,
            3 => Self::Symlink,
            4 => Self::Fifo,
            5 => Self::Socket,
            6 => Self::CharDevice,
            7 => Self::BlockDevice,
            _ => Self::Unknown,
        }
    }
}

/// Metadata of one file, taken from an open descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attrs {
    /// File type.
    pub file_type: FileType,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Inode number.
    pub ino: u64,
    /// Device major number of the file system.
    pub dev_major: u32,
    /// Device minor number of the file system.
    pub dev_minor: u32,
    /// Hard link count.
    pub nlink: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i64,
    /// Symlink target, verbatim.
    pub symlink_target: Option<Vec<u8>>,
    /// `system.posix_acl_access`, as ACL text (`user::rw-,user:1000:r--,...`).
    pub acl_access: Option<String>,
    /// `system.posix_acl_default` (directories), as ACL text.
    pub acl_default: Option<String>,
    /// `security.capability`, decoded (`permitted=0x...,inheritable=0x...,effective`).
    pub capability: Option<String>,
    /// Every other extended attribute: name -> SHA-256 of its value.
    pub xattrs: BTreeMap<Vec<u8>, [u8; 32]>,
}

/// Why a regular file has no digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotHashed {
    /// Larger than the configured limit.
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Gone between the event and the hash.
    Vanished,
    /// Another file took the name between the event and the hash.
    Replaced,
    /// Still being written; the digest follows with close or the quiet period.
    Deferred,
    /// Reading failed.
    Unreadable(String),
    /// The rule the file falls under says `hash = false`.
    ByRule,
}

impl NotHashed {
    /// Its reason as a metric label (`None`: not final, the digest follows).
    pub fn label(&self) -> Option<&'static str> {
        match self {
            Self::TooLarge { .. } => Some("too_large"),
            Self::Vanished => Some("vanished"),
            Self::Replaced => Some("replaced"),
            Self::Deferred => None,
            Self::Unreadable(_) => Some("unreadable"),
            Self::ByRule => Some("by_rule"),
        }
    }

    /// The text reported to users.
    pub fn reason(&self) -> String {
        match self {
            Self::TooLarge { limit } => format!("not hashed: too large (limit {limit} bytes)"),
            Self::Vanished => "not hashed: vanished before hashing".to_owned(),
            Self::Replaced => "not hashed: replaced before hashing".to_owned(),
            Self::Deferred => "not hashed yet: write in progress".to_owned(),
            Self::Unreadable(e) => format!("not hashed: {e}"),
            Self::ByRule => "not hashed: its rule says hash = false".to_owned(),
        }
    }
}

/// The content of a regular file as far as the engine knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// SHA-256 digest.
    Sha256([u8; 32]),
    /// No digest, and why.
    NotHashed(NotHashed),
}

/// One observation of a file: metadata, and content for regular files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Metadata.
    pub attrs: Attrs,
    /// Content digest (regular files only).
    pub content: Option<Content>,
    /// The content against the digest its package recorded, when a package installed the
    /// file and the content was read. Not kept in the baseline.
    pub package: Option<Box<crate::packages::PackageCheck>>,
}

impl Snapshot {
    /// The digest, when there is one.
    pub fn sha256(&self) -> Option<&[u8; 32]> {
        match &self.content {
            Some(Content::Sha256(d)) => Some(d),
            _ => None,
        }
    }

    /// Whether `other` is the same unmodified inode as far as the kernel's own timestamps
    /// tell (same inode, size, mtime and ctime). `ctime` cannot be set from user space, so a
    /// digest taken for `self` still describes `other`.
    pub fn same_version(&self, other: &Attrs) -> bool {
        let a = &self.attrs;
        a.file_type == other.file_type
            && a.ino == other.ino
            && a.dev_major == other.dev_major
            && a.dev_minor == other.dev_minor
            && a.size == other.size
            && a.mtime_ns == other.mtime_ns
            && a.ctime_ns == other.ctime_ns
    }
}

/// One attribute that can change. `as_str` names it in events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attr {
    /// File type.
    Type,
    /// Size.
    Size,
    /// Permission bits.
    Mode,
    /// Owner.
    Uid,
    /// Group.
    Gid,
    /// Inode number (a different file now has the name).
    Inode,
    /// Device.
    Device,
    /// Link count.
    Nlink,
    /// Modification time.
    Mtime,
    /// Status change time.
    Ctime,
    /// Symlink target.
    SymlinkTarget,
    /// Access ACL.
    AclAccess,
    /// Default ACL.
    AclDefault,
    /// File capabilities.
    Capability,
    /// Other extended attributes.
    Xattrs,
    /// Content digest.
    Sha256,
}

impl Attr {
    /// Every attribute, in the order [`diff`] lists them.
    pub const ALL: [Self; 16] = [
        Self::Type,
        Self::Size,
        Self::Mode,
        Self::Uid,
        Self::Gid,
        Self::Inode,
        Self::Device,
        Self::Nlink,
        Self::Mtime,
        Self::Ctime,
        Self::SymlinkTarget,
        Self::AclAccess,
        Self::AclDefault,
        Self::Capability,
        Self::Xattrs,
        Self::Sha256,
    ];

    /// The attribute named `name` in events.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The name used in events (`fim.changed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Type => "type",
            Self::Size => "size",
            Self::Mode => "mode",
            Self::Uid => "uid",
            Self::Gid => "gid",
            Self::Inode => "inode",
            Self::Device => "device",
            Self::Nlink => "nlink",
            Self::Mtime => "mtime",
            Self::Ctime => "ctime",
            Self::SymlinkTarget => "symlink_target",
            Self::AclAccess => "acl_access",
            Self::AclDefault => "acl_default",
            Self::Capability => "capability",
            Self::Xattrs => "xattrs",
            Self::Sha256 => "sha256",
        }
    }
}

/// The attributes that differ between `before` and `after`, in a fixed order. A digest
/// that is missing on either side (deferred, too large, vanished) is not compared.
pub fn diff(before: &Snapshot, after: &Snapshot) -> Vec<Attr> {
    let (a, b) = (&before.attrs, &after.attrs);
    let mut out = Vec::new();
    let mut check = |differs: bool, attr: Attr| {
        if differs {
            out.push(attr);
        }
    };
    check(a.file_type != b.file_type, Attr::Type);
    check(a.size != b.size, Attr::Size);
    check(a.mode != b.mode, Attr::Mode);
    check(a.uid != b.uid, Attr::Uid);
    check(a.gid != b.gid, Attr::Gid);
    check(a.ino != b.ino, Attr::Inode);
    check(
        (a.dev_major, a.dev_minor) != (b.dev_major, b.dev_minor),
        Attr::Device,
    );
    check(a.nlink != b.nlink, Attr::Nlink);
    check(a.mtime_ns != b.mtime_ns, Attr::Mtime);
    check(a.ctime_ns != b.ctime_ns, Attr::Ctime);
    check(a.symlink_target != b.symlink_target, Attr::SymlinkTarget);
    check(a.acl_access != b.acl_access, Attr::AclAccess);
    check(a.acl_default != b.acl_default, Attr::AclDefault);
    check(a.capability != b.capability, Attr::Capability);
    check(a.xattrs != b.xattrs, Attr::Xattrs);
    match (before.sha256(), after.sha256()) {
        (Some(x), Some(y)) => check(x != y, Attr::Sha256),
        // A file recorded while it was being written: its content was never told.
        (None, Some(_)) => check(
            before.content == Some(Content::NotHashed(NotHashed::Deferred)),
            Attr::Sha256,
        ),
        _ => {}
    }
    out
}

/// The xattr holding the access ACL.
pub const XATTR_ACL_ACCESS: &[u8] = b"system.posix_acl_access";
/// The xattr holding the default ACL.
pub const XATTR_ACL_DEFAULT: &[u8] = b"system.posix_acl_default";
/// The xattr holding file capabilities.
pub const XATTR_CAPABILITY: &[u8] = b"security.capability";

/// Decodes the kernel's POSIX ACL xattr (`posix_acl_xattr_header` + entries) into the
/// short text form `getfacl -c` would print on one line. Unknown layouts are shown as hex.
pub fn decode_acl(raw: &[u8]) -> String {
    const VERSION: u32 = 2;
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    if raw.len() < 4 || word(raw) != VERSION || !(raw.len() - 4).is_multiple_of(8) {
        return format!("raw:{}", hex(raw));
    }
    let mut parts = Vec::new();
    for e in raw[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = word(&e[4..8]);
        let perms = format!(
            "{}{}{}",
            if perm & 4 != 0 { 'r' } else { '-' },
            if perm & 2 != 0 { 'w' } else { '-' },
            if perm & 1 != 0 { 'x' } else { '-' }
        );
        parts.push(match tag {
            0x01 => format!("user::{perms}"),
            0x02 => format!("user:{id}:{perms}"),
            0x04 => format!("group::{perms}"),
            0x08 => format!("group:{id}:{perms}"),
            0x10 => format!("mask::{perms}"),
            0x20 => format!("other::{perms}"),
            t => format!("tag{t:#x}:{id}:{perms}"),
        });
    }
    parts.join(",")
}

/// Decodes `security.capability` (`vfs_cap_data`, revisions 1-3) into
/// `permitted=0x..,inheritable=0x..[,effective][,rootid=N]`.
pub fn decode_capability(raw: &[u8]) -> String {
    let word = |i: usize| {
        raw.get(i..i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let Some(magic) = word(0) else {
        return format!("raw:{}", hex(raw));
    };
    let revision = magic & 0xff00_0000;
    let effective = magic & 1 != 0;
    let (permitted, inheritable, rootid) = match (revision, raw.len()) {
        (0x0100_0000, 12) => (
            u64::from(word(4).unwrap_or(0)),
            u64::from(word(8).unwrap_or(0)),
            None,
        ),
        (0x0200_0000, 20) | (0x0300_0000, 24) => {
            let lo_p = u64::from(word(4).unwrap_or(0));
            let lo_i = u64::from(word(8).unwrap_or(0));
            let hi_p = u64::from(word(12).unwrap_or(0));
            let hi_i = u64::from(word(16).unwrap_or(0));
            let rootid = if revision == 0x0300_0000 {
                word(20)
            } else {
                None
            };
            (lo_p | hi_p << 32, lo_i | hi_i << 32, rootid)
        }
        _ => return format!("raw:{}", hex(raw)),
    };
    let mut s = format!("permitted={permitted:#x},inheritable={inheritable:#x}");
    if effective {
        s.push_str(",effective");
    }
    if let Some(r) = rootid {
        s.push_str(&format!(",rootid={r}"));
    }
    s
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Snapshot {
        Snapshot {
            attrs: Attrs {
                file_type: FileType::File,
                size: 5,
                mode: 0o644,
                uid: 0,
                gid: 0,
                ino: 42,
                dev_major: 8,
                dev_minor: 1,
                nlink: 1,
                mtime_ns: 1_000,
                ctime_ns: 2_000,
                symlink_target: None,
                acl_access: None,
                acl_default: None,
                capability: None,
                xattrs: BTreeMap::new(),
            },
            content: Some(Content::Sha256([1; 32])),
            package: None,
        }
    }

    #[test]
    fn a_file_type_goes_to_mode_bits_and_back() {
        for t in [
            FileType::File,
            FileType::Dir,
            FileType::Symlink,
            FileType::Fifo,
            FileType::Socket,
            FileType::CharDevice,
            FileType::BlockDevice,
        ] {
            assert_eq!(FileType::from_mode(t.mode_bits() | 0o644), t);
        }
        assert_eq!(FileType::Unknown.mode_bits(), 0);
    }

    #[test]
    fn diff_names_each_changed_attribute() {
        let a = sample();
        let mut b = sample();
        assert!(diff(&a, &b).is_empty());
        b.attrs.mode = 0o4755;
        b.attrs.uid = 1000;
        b.attrs.ctime_ns = 3_000;
        b.content = Some(Content::Sha256([2; 32]));
        b.attrs.xattrs.insert(b"user.x".to_vec(), [0; 32]);
        assert_eq!(
            diff(&a, &b),
            vec![
                Attr::Mode,
                Attr::Uid,
                Attr::Ctime,
                Attr::Xattrs,
                Attr::Sha256
            ]
        );
    }

    #[test]
    fn missing_digest_is_not_a_content_change() {
        let a = sample();
        let mut b = sample();
        b.content = Some(Content::NotHashed(NotHashed::Deferred));
        assert!(diff(&a, &b).is_empty());
    }

    #[test]
    fn same_version_needs_ctime() {
        let a = sample();
        let mut b = sample().attrs;
        assert!(a.same_version(&b));
        b.ctime_ns += 1;
        assert!(!a.same_version(&b));
    }

    #[test]
    fn acl_decodes_to_getfacl_text() {
        let mut raw = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (0x10, 5, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            raw.extend_from_slice(&tag.to_le_bytes());
            raw.extend_from_slice(&perm.to_le_bytes());
            raw.extend_from_slice(&id.to_le_bytes());
        }
        assert_eq!(
            decode_acl(&raw),
            "user::rw-,user:1000:r--,group::r--,mask::r-x,other::---"
        );
        assert_eq!(decode_acl(b"\x01"), "raw:01");
    }

    #[test]
    fn capability_decodes_revision_2() {
        // cap_net_raw+ep: bit 13.
        let mut raw = (0x0200_0000u32 | 1).to_le_bytes().to_vec();
        for w in [1u32 << 13, 0, 0, 0] {
            raw.extend_from_slice(&w.to_le_bytes());
        }
        assert_eq!(
            decode_capability(&raw),
            "permitted=0x2000,inheritable=0x0,effective"
        );
        assert_eq!(decode_capability(b"xy"), "raw:7879");
    }
}
