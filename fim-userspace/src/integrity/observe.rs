//! Reading one file's attributes and digest from the disk: the integrity engine's only
//! file-system seam.
//!
//! The path is first opened with `O_PATH | O_NOFOLLOW` (never follows a final symlink, never
//! opens a device or FIFO for I/O) and its metadata is taken from that descriptor. Only
//! regular files and directories are then opened for reading (`O_NONBLOCK`, `O_NOCTTY`,
//! `O_NOATIME` when allowed), and that second descriptor must name the same inode, otherwise
//! the file was replaced in between. FIFOs, sockets and devices are never opened for I/O.
//!
//! System calls go through `nix` (open, fstat, readlinkat, fadvise) and, for extended
//! attributes, which `nix` lacks, the `xattr` crate.

use std::{
    collections::BTreeMap,
    ffi::{CString, OsStr},
    fs::File,
    io,
    os::{
        fd::{AsFd, AsRawFd, OwnedFd, RawFd},
        unix::ffi::{OsStrExt, OsStringExt},
    },
    path::Path,
};

use nix::{
    errno::Errno,
    fcntl::{OFlag, PosixFadviseAdvice, posix_fadvise, readlinkat},
    sys::stat::{FileStat, Mode, fstat as nix_fstat, major, minor},
};

use fim_core::{
    attrs::{
        Attrs, Content, FileType, NotHashed, Snapshot, XATTR_ACL_ACCESS, XATTR_ACL_DEFAULT,
        XATTR_CAPABILITY, decode_acl, decode_capability,
    },
    hash,
};

/// Limits applied while observing.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Files larger than this are not hashed ("not hashed: too large").
    pub max_hash_bytes: u64,
    /// The rules, which say which files are not hashed at all (`hash = false`).
    pub rules: Option<std::sync::Arc<fim_core::rules::RuleSet>>,
    /// The digests packages recorded for watched files: a package's file that is read is
    /// checked against its record.
    pub packages: Option<std::sync::Arc<fim_core::packages::PackageIndex>>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_hash_bytes: fim_core::defaults::HASH_MAX_SIZE,
            rules: None,
            packages: None,
        }
    }
}

/// Whether to read the content.
#[derive(Clone, Copy, Debug)]
pub enum Hashing<'a> {
    /// Metadata only; a regular file's content is reported as deferred.
    Defer,
    /// Always read and hash.
    Always,
    /// Reuse this snapshot's digest when the inode, size, mtime and ctime are unchanged.
    Reuse(Option<&'a Snapshot>),
}

/// Observing a path failed for a reason other than the path being absent.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The path contains a NUL byte.
    #[error("path `{0}` contains a NUL byte")]
    Nul(String),
    /// A system call failed.
    #[error("{what} `{path}`: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path, rendered.
        path: String,
        /// The OS error.
        source: io::Error,
    },
}

/// Per-thread scratch memory for observing (the read buffer), reused across files.
pub struct Scratch {
    buf: Vec<u8>,
}

impl Default for Scratch {
    fn default() -> Self {
        Self {
            buf: vec![0; hash::READ_BUFFER],
        }
    }
}

fn render(path: &[u8]) -> String {
    fim_core::paths::render_bytes(path)
}

fn io_err(what: &'static str, path: &[u8], source: io::Error) -> ObserveError {
    ObserveError::Io {
        what,
        path: render(path),
        source,
    }
}

/// Whether `e` is one of `codes`.
fn is(e: &io::Error, codes: &[Errno]) -> bool {
    e.raw_os_error()
        .is_some_and(|raw| codes.iter().any(|c| *c as i32 == raw))
}

fn is_absent(e: &io::Error) -> bool {
    is(e, &[Errno::ENOENT, Errno::ENOTDIR])
}

fn open(path: &CString, flags: OFlag) -> io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        path.as_c_str(),
        flags | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

fn fstat(fd: &OwnedFd) -> io::Result<FileStat> {
    Ok(nix_fstat(fd)?)
}

fn attrs_from_stat(st: &FileStat) -> Attrs {
    Attrs {
        file_type: FileType::from_mode(st.st_mode),
        size: st.st_size as u64,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        ino: st.st_ino,
        // Majors have 12 bits and minors 20 in Linux's dev_t.
        dev_major: major(st.st_dev) as u32,
        dev_minor: minor(st.st_dev) as u32,
        nlink: st.st_nlink,
        mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
        ctime_ns: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec,
        symlink_target: None,
        acl_access: None,
        acl_default: None,
        capability: None,
        xattrs: BTreeMap::new(),
    }
}

/// Where xattrs are read from: an open descriptor, or a path without following symlinks.
enum XattrSource<'a> {
    Fd(&'a OwnedFd),
    Path(&'a CString),
}

/// A borrowed descriptor, for the `xattr` crate's by-descriptor calls.
struct Borrowed<'a>(&'a OwnedFd);

impl AsRawFd for Borrowed<'_> {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl xattr::FileExt for Borrowed<'_> {}

impl XattrSource<'_> {
    fn path(p: &CString) -> &Path {
        Path::new(OsStr::from_bytes(p.as_bytes()))
    }

    /// The attribute names.
    fn list(&self) -> io::Result<Vec<Vec<u8>>> {
        use xattr::FileExt;
        let names = match self {
            Self::Fd(fd) => Borrowed(fd).list_xattr()?,
            Self::Path(p) => xattr::list(Self::path(p))?,
        };
        Ok(names.map(|n| n.into_vec()).collect())
    }

    /// One attribute's value; `None` if it is gone.
    fn get(&self, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
        use xattr::FileExt;
        let name = OsStr::from_bytes(name);
        match self {
            Self::Fd(fd) => Borrowed(fd).get_xattr(name),
            Self::Path(p) => xattr::get(Self::path(p), name),
        }
    }
}

fn read_xattrs(src: &XattrSource<'_>, attrs: &mut Attrs) -> io::Result<()> {
    let names = match src.list() {
        Ok(n) => n,
        // File systems without xattrs.
        Err(e) if is(&e, &[Errno::ENOTSUP]) => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in names.iter().filter(|n| !n.is_empty()) {
        // `None`: removed since the list was taken.
        let Some(value) = src.get(name)? else {
            continue;
        };
        match name.as_slice() {
            XATTR_ACL_ACCESS => attrs.acl_access = Some(decode_acl(&value)),
            XATTR_ACL_DEFAULT => attrs.acl_default = Some(decode_acl(&value)),
            XATTR_CAPABILITY => attrs.capability = Some(decode_capability(&value)),
            _ => {
                attrs.xattrs.insert(name.clone(), hash::sha256(&value));
            }
        }
    }
    Ok(())
}

/// The target of the symlink an `O_PATH` descriptor holds.
pub fn read_link(fd: &impl AsFd) -> io::Result<Vec<u8>> {
    // An empty path with an O_PATH descriptor reads the link itself.
    Ok(readlinkat(fd, c"")?.into_vec())
}

/// SHA-256 of the file, and with `md5` its MD5 too (what dpkg records), from one read.
fn hash_file(
    fd: OwnedFd,
    size: u64,
    scratch: &mut Scratch,
    md5: bool,
) -> io::Result<([u8; 32], Option<[u8; 16]>)> {
    if size > 4 << 20 {
        // Advisory only: a failure changes nothing.
        let _ = posix_fadvise(&fd, 0, 0, PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL);
    }
    let mut file = File::from(fd);
    if md5 {
        let (sha, md5, _) = hash::sha256_md5_reader(&mut file, size, &mut scratch.buf)?;
        return Ok((sha, Some(md5)));
    }
    hash::sha256_reader(&mut file, size, &mut scratch.buf).map(|(digest, _)| (digest, None))
}

/// Observes `path`. `Ok(None)` when nothing is there.
pub fn observe(
    path: &[u8],
    hashing: Hashing<'_>,
    limits: &Limits,
    scratch: &mut Scratch,
) -> Result<Option<Snapshot>, ObserveError> {
    observe_whole(path, None, hashing, limits, scratch)
}

/// What [`observe_within`] found.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per observation and consumed at once, never stored"
)]
pub enum Within {
    /// The observation (`None`: nothing is there).
    Observed(Option<Snapshot>),
    /// The file must be read and hashed, and it is larger than the budget: observe it
    /// where a long read blocks nothing else.
    MustHash,
}

/// Like [`observe`], but reads at most `budget` bytes of content: a file that must be hashed
/// and is larger is left unread ([`Within::MustHash`]). The engine observes small files on
/// its own thread this way, and hands only large ones to a hashing worker.
pub fn observe_within(
    path: &[u8],
    hashing: Hashing<'_>,
    limits: &Limits,
    scratch: &mut Scratch,
    budget: u64,
) -> Result<Within, ObserveError> {
    observe_once(path, None, hashing, limits, scratch, budget, 2)
}

/// Like [`observe`], for a path just listed from its directory with type `listed` (the
/// directory entry's `d_type`). A regular file or directory is then opened for reading
/// directly, saving the `O_PATH` round trip on large scans; the descriptor's own type is
/// checked before anything is read.
pub fn observe_listed(
    path: &[u8],
    listed: Option<FileType>,
    hashing: Hashing<'_>,
    limits: &Limits,
    scratch: &mut Scratch,
) -> Result<Option<Snapshot>, ObserveError> {
    observe_whole(path, listed, hashing, limits, scratch)
}

/// [`observe_once`] with no budget: whatever must be hashed is.
fn observe_whole(
    path: &[u8],
    listed: Option<FileType>,
    hashing: Hashing<'_>,
    limits: &Limits,
    scratch: &mut Scratch,
) -> Result<Option<Snapshot>, ObserveError> {
    match observe_once(path, listed, hashing, limits, scratch, u64::MAX, 2)? {
        Within::Observed(s) => Ok(s),
        Within::MustHash => unreachable!("no file is larger than u64::MAX bytes"),
    }
}

fn open_for_reading(path: &CString, file_type: FileType) -> io::Result<OwnedFd> {
    let mut flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    if file_type == FileType::Dir {
        flags |= OFlag::O_DIRECTORY;
    }
    match open(path, flags | OFlag::O_NOATIME) {
        // O_NOATIME needs ownership or CAP_FOWNER.
        Err(e) if is(&e, &[Errno::EPERM]) => open(path, flags),
        other => other,
    }
}

fn observe_once(
    path: &[u8],
    listed: Option<FileType>,
    hashing: Hashing<'_>,
    limits: &Limits,
    scratch: &mut Scratch,
    budget: u64,
    retries: u32,
) -> Result<Within, ObserveError> {
    let cpath = CString::new(path).map_err(|_| ObserveError::Nul(render(path)))?;
    if let Some(t @ (FileType::File | FileType::Dir)) = listed {
        match open_for_reading(&cpath, t) {
            Ok(fd) => {
                let st = fstat(&fd).map_err(|e| io_err("reading metadata of", path, e))?;
                if matches!(
                    FileType::from_mode(st.st_mode),
                    FileType::File | FileType::Dir
                ) {
                    return describe(
                        path,
                        &cpath,
                        attrs_from_stat(&st),
                        Some(fd),
                        None,
                        false,
                        hashing,
                        limits,
                        scratch,
                        budget,
                    );
                }
            }
            Err(e) if is_absent(&e) => return Ok(Within::Observed(None)),
            // Changed type since it was listed: take the careful path.
            Err(_) => {}
        }
    }
    let handle = match open(&cpath, OFlag::O_PATH | OFlag::O_NOFOLLOW) {
        Ok(fd) => fd,
        Err(e) if is_absent(&e) => return Ok(Within::Observed(None)),
        Err(e) => return Err(io_err("opening", path, e)),
    };
    let st = match fstat(&handle) {
        Ok(st) => st,
        Err(e) => return Err(io_err("reading metadata of", path, e)),
    };
    let attrs = attrs_from_stat(&st);
    if !matches!(attrs.file_type, FileType::File | FileType::Dir) {
        return describe(
            path,
            &cpath,
            attrs,
            None,
            Some(&handle),
            false,
            hashing,
            limits,
            scratch,
            budget,
        );
    }
    let fd = match open_for_reading(&cpath, attrs.file_type) {
        Ok(fd) => fd,
        Err(e) if is_absent(&e) => {
            return Ok(Within::Observed(Some(Snapshot {
                content: (attrs.file_type == FileType::File)
                    .then_some(Content::NotHashed(NotHashed::Vanished)),
                attrs,
                package: None,
            })));
        }
        // Replaced by a symlink, a FIFO or a directory since the first open.
        Err(e) if retries > 0 && is(&e, &[Errno::ELOOP, Errno::ENXIO, Errno::ENOTDIR]) => {
            return observe_once(path, None, hashing, limits, scratch, budget, retries - 1);
        }
        Err(e) => return Err(io_err("opening for reading", path, e)),
    };
    let st2 = fstat(&fd).map_err(|e| io_err("reading metadata of", path, e))?;
    let replaced = (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino);
    describe(
        path,
        &cpath,
        attrs_from_stat(&st2),
        Some(fd),
        None,
        replaced,
        hashing,
        limits,
        scratch,
        budget,
    )
}

/// A regular file's content when it need not be read (deferred, reused, replaced, too
/// large); `None` when it must be hashed.
fn known_content(
    path: &[u8],
    attrs: &Attrs,
    replaced: bool,
    hashing: Hashing<'_>,
    limits: &Limits,
) -> Option<Content> {
    if replaced {
        return Some(Content::NotHashed(NotHashed::Replaced));
    }
    if limits.rules.as_ref().is_some_and(|r| !r.hashes(path)) {
        return Some(Content::NotHashed(NotHashed::ByRule));
    }
    match hashing {
        Hashing::Defer => Some(Content::NotHashed(NotHashed::Deferred)),
        Hashing::Reuse(Some(prev)) if prev.sha256().is_some() && prev.same_version(attrs) => Some(
            prev.content
                .clone()
                .unwrap_or(Content::NotHashed(NotHashed::Deferred)),
        ),
        _ if attrs.size > limits.max_hash_bytes => Some(Content::NotHashed(NotHashed::TooLarge {
            limit: limits.max_hash_bytes,
        })),
        _ => None,
    }
}

/// Completes an observation: xattrs, symlink target, digest. `reader` is an open-for-read
/// descriptor of a regular file or directory; `handle` an `O_PATH` one for anything else.
#[expect(
    clippy::too_many_arguments,
    reason = "one private step of observe_once"
)]
fn describe(
    path: &[u8],
    cpath: &CString,
    mut attrs: Attrs,
    reader: Option<OwnedFd>,
    handle: Option<&OwnedFd>,
    replaced: bool,
    hashing: Hashing<'_>,
    limits: &Limits,
    scratch: &mut Scratch,
    budget: u64,
) -> Result<Within, ObserveError> {
    // What the content will be is decided from the metadata alone: a file that must be
    // hashed beyond the budget is left before anything else is read.
    let known = match (attrs.file_type, &reader) {
        (FileType::File, Some(_)) => Some(known_content(path, &attrs, replaced, hashing, limits)),
        _ => None,
    };
    if matches!(known, Some(None)) && attrs.size > budget {
        return Ok(Within::MustHash);
    }
    if let Some(fd) = &reader {
        read_xattrs(&XattrSource::Fd(fd), &mut attrs)
            .map_err(|e| io_err("reading extended attributes of", path, e))?;
    } else {
        if let (FileType::Symlink, Some(h)) = (attrs.file_type, handle) {
            attrs.symlink_target =
                Some(read_link(h).map_err(|e| io_err("reading symlink", path, e))?);
        }
        match read_xattrs(&XattrSource::Path(cpath), &mut attrs) {
            Ok(()) => {}
            Err(e) if is_absent(&e) => {}
            Err(e) => return Err(io_err("reading extended attributes of", path, e)),
        }
    }
    let owned = limits.packages.as_ref().filter(|p| p.owns(path));
    let mut package = None;
    let content = match (known, reader) {
        (Some(Some(content)), _) => Some(content),
        (Some(None), Some(fd)) => Some(match hash_file(fd, attrs.size, scratch, owned.is_some()) {
            Ok((d, md5)) => {
                package = owned
                    .zip(md5)
                    .and_then(|(p, md5)| p.check(path, &md5))
                    .map(Box::new);
                Content::Sha256(d)
            }
            Err(e) => Content::NotHashed(NotHashed::Unreadable(e.to_string())),
        }),
        _ => None,
    };
    Ok(Within::Observed(Some(Snapshot {
        attrs,
        content,
        package,
    })))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    fn obs(path: &std::path::Path, hashing: Hashing<'_>) -> Option<Snapshot> {
        observe(
            path.as_os_str().as_encoded_bytes(),
            hashing,
            &Limits::default(),
            &mut Scratch::default(),
        )
        .expect("observing")
    }

    #[test]
    fn regular_file_symlink_and_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let s = obs(&f, Hashing::Always).expect("present");
        assert_eq!(s.attrs.file_type, FileType::File);
        assert_eq!(s.attrs.size, 3);
        assert_eq!(s.attrs.mode, 0o640);
        assert_eq!(s.content, Some(Content::Sha256(hash::sha256(b"abc"))));

        let l = dir.path().join("l");
        symlink("f", &l).expect("symlink");
        let s = obs(&l, Hashing::Always).expect("present");
        assert_eq!(s.attrs.file_type, FileType::Symlink);
        assert_eq!(s.attrs.symlink_target.as_deref(), Some(&b"f"[..]));
        assert_eq!(s.content, None);

        assert!(obs(&dir.path().join("nope"), Hashing::Always).is_none());
        assert!(obs(&f.join("under-a-file"), Hashing::Always).is_none());
    }

    #[test]
    fn size_limit_and_deferral() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("big");
        std::fs::write(&f, vec![0u8; 100]).expect("write");
        let limits = Limits {
            max_hash_bytes: 99,
            rules: None,
            packages: None,
        };
        let s = observe(
            f.as_os_str().as_encoded_bytes(),
            Hashing::Always,
            &limits,
            &mut Scratch::default(),
        )
        .expect("observing")
        .expect("present");
        assert_eq!(
            s.content,
            Some(Content::NotHashed(NotHashed::TooLarge { limit: 99 }))
        );
        let s = obs(&f, Hashing::Defer).expect("present");
        assert_eq!(s.content, Some(Content::NotHashed(NotHashed::Deferred)));
    }

    #[test]
    fn within_a_budget_only_files_that_must_be_hashed_and_are_larger_are_left_unread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (small, big) = (dir.path().join("small"), dir.path().join("big"));
        std::fs::write(&small, b"abc").expect("write");
        std::fs::write(&big, vec![1u8; 100]).expect("write");
        let within = |p: &std::path::Path, hashing| {
            observe_within(
                p.as_os_str().as_encoded_bytes(),
                hashing,
                &Limits::default(),
                &mut Scratch::default(),
                10,
            )
            .expect("observing")
        };
        let Within::Observed(Some(s)) = within(&small, Hashing::Always) else {
            panic!("a small file is observed and hashed");
        };
        assert!(s.sha256().is_some());
        assert!(matches!(within(&big, Hashing::Always), Within::MustHash));
        // Metadata only, or a digest reused: nothing to read, whatever the size.
        let Within::Observed(Some(meta)) = within(&big, Hashing::Defer) else {
            panic!("metadata is observed");
        };
        assert_eq!(meta.attrs.size, 100);
        let hashed = obs(&big, Hashing::Always).expect("present");
        let Within::Observed(Some(reused)) = within(&big, Hashing::Reuse(Some(&hashed))) else {
            panic!("an unchanged file reuses its digest");
        };
        assert_eq!(reused.sha256(), hashed.sha256());
        assert!(matches!(
            within(&dir.path().join("absent"), Hashing::Always),
            Within::Observed(None)
        ));
    }

    #[test]
    fn reuse_only_for_the_same_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        std::fs::write(&f, b"one").expect("write");
        let mut prev = obs(&f, Hashing::Always).expect("present");
        prev.content = Some(Content::Sha256([9; 32]));
        let again = obs(&f, Hashing::Reuse(Some(&prev))).expect("present");
        assert_eq!(again.content, Some(Content::Sha256([9; 32])));
        std::fs::write(&f, b"two").expect("write");
        let after = obs(&f, Hashing::Reuse(Some(&prev))).expect("present");
        assert_eq!(after.content, Some(Content::Sha256(hash::sha256(b"two"))));
    }
}
