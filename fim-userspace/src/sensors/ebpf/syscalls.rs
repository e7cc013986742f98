//! Which syscalls the tracepoint tier follows, and how their arguments map onto events.
//!
//! Syscall numbers are per architecture; this table is for x86_64 (the only architecture the
//! project builds for today). It is data, not code: the kernel side dispatches on it.

use fim_common::{EventKind, Shape, SyscallSpec, programs};

/// One followed syscall.
#[derive(Clone, Copy, Debug)]
pub struct Followed {
    /// Name as in `syscalls:sys_enter_<name>`.
    pub name: &'static str,
    /// Syscall number on this architecture.
    pub nr: u32,
    /// How the kernel side reads it.
    pub spec: SyscallSpec,
    /// Present on every kernel we support (6.1+); a missing optional one is skipped.
    pub required: bool,
}

impl Followed {
    /// The program attached to this syscall's exit tracepoint.
    pub fn exit_program(&self) -> &'static str {
        match self.spec.shape {
            s if s == Shape::Fd as u8 => programs::EXIT_FD,
            s if s == Shape::TwoPaths as u8 => programs::EXIT_TWO_PATHS,
            s if s == Shape::Open as u8 => programs::EXIT_OPEN,
            _ => programs::EXIT_PATH,
        }
    }
}

/// Writes through a file descriptor: followed per open file by the write programs, with
/// the entry program that knows where the destination descriptor is.
pub const WRITE_FAMILY: &[(&str, &str)] = &[
    ("write", programs::ENTER_WRITE),
    ("pwrite64", programs::ENTER_WRITE),
    ("writev", programs::ENTER_WRITE),
    ("pwritev", programs::ENTER_WRITE),
    ("pwritev2", programs::ENTER_WRITE),
    ("sendfile64", programs::ENTER_WRITE),
    ("copy_file_range", programs::ENTER_WRITE_ARG2),
    ("splice", programs::ENTER_WRITE_ARG2),
];

/// Syscalls whose entry reports close-after-write: (name, program).
pub const CLOSE_FAMILY: &[(&str, &str)] = &[
    ("close", programs::ENTER_CLOSE),
    ("dup2", programs::ENTER_DUP),
    ("dup3", programs::ENTER_DUP),
];

/// Builder for [`SyscallSpec`] rows, so each row reads as "which argument is what".
#[derive(Clone, Copy)]
struct Row(SyscallSpec);

impl Row {
    fn new(shape: Shape, kind: EventKind) -> Self {
        Self(SyscallSpec {
            shape: shape as u8,
            kind: kind as u8,
            ..SyscallSpec::NONE
        })
    }
    fn dfd(mut self, i: u8) -> Self {
        self.0.dfd = i;
        self
    }
    fn path(mut self, i: u8) -> Self {
        self.0.path = i;
        self
    }
    fn dfd2(mut self, i: u8) -> Self {
        self.0.dfd2 = i;
        self
    }
    fn path2(mut self, i: u8) -> Self {
        self.0.path2 = i;
        self
    }
    fn mode(mut self, i: u8) -> Self {
        self.0.mode = i;
        self
    }
    fn owner(mut self, uid: u8, gid: u8) -> Self {
        self.0.uid = uid;
        self.0.gid = gid;
        self
    }
    fn name(mut self, i: u8) -> Self {
        self.0.name = i;
        self
    }
    fn flags(mut self, i: u8) -> Self {
        self.0.flags = i;
        self
    }
    fn flags_via_pointer(mut self, i: u8) -> Self {
        self.0.flags = i;
        self.0.flags_indirect = 1;
        self
    }
    fn fixed(mut self, flags: u32) -> Self {
        self.0.fixed_flags = flags;
        self
    }
    fn len(mut self, i: u8) -> Self {
        self.0.len = i;
        self
    }
}

const O_CREAT_WRONLY_TRUNC: u32 = (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u32;
const NOFOLLOW: u32 = libc::AT_SYMLINK_NOFOLLOW as u32;

/// The x86_64 table of followed syscalls (write and close families aside).
pub fn table() -> Vec<Followed> {
    use EventKind as K;
    use Shape as S;
    let rows: [(&str, i64, Row, bool); 41] = [
        // Times: `utimensat(dfd, NULL, ...)` is `futimens(dfd)`: no string, the dirfd itself.
        (
            "utimensat",
            libc::SYS_utimensat,
            Row::new(S::Path, K::Utimes).dfd(0).path(1).flags(3),
            true,
        ),
        (
            "futimesat",
            libc::SYS_futimesat,
            Row::new(S::Path, K::Utimes).dfd(0).path(1),
            true,
        ),
        (
            "utimes",
            libc::SYS_utimes,
            Row::new(S::Path, K::Utimes).path(0),
            true,
        ),
        (
            "utime",
            libc::SYS_utime,
            Row::new(S::Path, K::Utimes).path(0),
            true,
        ),
        (
            "fallocate",
            libc::SYS_fallocate,
            Row::new(S::Fd, K::Fallocate).path(0).flags(1).len(3),
            true,
        ),
        (
            "open",
            libc::SYS_open,
            Row::new(S::Open, K::Create).path(0).flags(1).mode(2),
            true,
        ),
        (
            "openat",
            libc::SYS_openat,
            Row::new(S::Open, K::Create).dfd(0).path(1).flags(2).mode(3),
            true,
        ),
        (
            "openat2",
            libc::SYS_openat2,
            Row::new(S::Open, K::Create)
                .dfd(0)
                .path(1)
                .flags_via_pointer(2),
            true,
        ),
        (
            "creat",
            libc::SYS_creat,
            Row::new(S::Open, K::Create)
                .path(0)
                .mode(1)
                .fixed(O_CREAT_WRONLY_TRUNC),
            true,
        ),
        (
            "truncate",
            libc::SYS_truncate,
            Row::new(S::Path, K::Truncate).path(0).len(1),
            true,
        ),
        (
            "ftruncate",
            libc::SYS_ftruncate,
            Row::new(S::Fd, K::Truncate).path(0).len(1),
            true,
        ),
        (
            "unlink",
            libc::SYS_unlink,
            Row::new(S::Path, K::Unlink).path(0),
            true,
        ),
        (
            "unlinkat",
            libc::SYS_unlinkat,
            Row::new(S::Path, K::Unlink).dfd(0).path(1).flags(2),
            true,
        ),
        (
            "rmdir",
            libc::SYS_rmdir,
            Row::new(S::Path, K::Rmdir).path(0),
            true,
        ),
        (
            "mkdir",
            libc::SYS_mkdir,
            Row::new(S::Path, K::Mkdir).path(0).mode(1),
            true,
        ),
        (
            "mkdirat",
            libc::SYS_mkdirat,
            Row::new(S::Path, K::Mkdir).dfd(0).path(1).mode(2),
            true,
        ),
        (
            "mknod",
            libc::SYS_mknod,
            Row::new(S::Path, K::Mknod).path(0).mode(1),
            true,
        ),
        (
            "mknodat",
            libc::SYS_mknodat,
            Row::new(S::Path, K::Mknod).dfd(0).path(1).mode(2),
            true,
        ),
        (
            "rename",
            libc::SYS_rename,
            Row::new(S::TwoPaths, K::Rename).path(0).path2(1),
            true,
        ),
        (
            "renameat",
            libc::SYS_renameat,
            Row::new(S::TwoPaths, K::Rename)
                .dfd(0)
                .path(1)
                .dfd2(2)
                .path2(3),
            true,
        ),
        (
            "renameat2",
            libc::SYS_renameat2,
            Row::new(S::TwoPaths, K::Rename)
                .dfd(0)
                .path(1)
                .dfd2(2)
                .path2(3)
                .flags(4),
            true,
        ),
        (
            "link",
            libc::SYS_link,
            Row::new(S::TwoPaths, K::Link).path(0).path2(1),
            true,
        ),
        (
            "linkat",
            libc::SYS_linkat,
            Row::new(S::TwoPaths, K::Link)
                .dfd(0)
                .path(1)
                .dfd2(2)
                .path2(3)
                .flags(4),
            true,
        ),
        (
            "symlink",
            libc::SYS_symlink,
            Row::new(S::TwoPaths, K::Symlink).path(0).path2(1),
            true,
        ),
        (
            "symlinkat",
            libc::SYS_symlinkat,
            Row::new(S::TwoPaths, K::Symlink).path(0).dfd2(1).path2(2),
            true,
        ),
        (
            "chmod",
            libc::SYS_chmod,
            Row::new(S::Path, K::Chmod).path(0).mode(1),
            true,
        ),
        (
            "fchmod",
            libc::SYS_fchmod,
            Row::new(S::Fd, K::Chmod).path(0).mode(1),
            true,
        ),
        (
            "fchmodat",
            libc::SYS_fchmodat,
            Row::new(S::Path, K::Chmod).dfd(0).path(1).mode(2),
            true,
        ),
        (
            "fchmodat2",
            libc::SYS_fchmodat2,
            Row::new(S::Path, K::Chmod).dfd(0).path(1).mode(2).flags(3),
            false,
        ),
        (
            "chown",
            libc::SYS_chown,
            Row::new(S::Path, K::Chown).path(0).owner(1, 2),
            true,
        ),
        (
            "lchown",
            libc::SYS_lchown,
            Row::new(S::Path, K::Chown)
                .path(0)
                .owner(1, 2)
                .fixed(NOFOLLOW),
            true,
        ),
        (
            "fchown",
            libc::SYS_fchown,
            Row::new(S::Fd, K::Chown).path(0).owner(1, 2),
            true,
        ),
        (
            "fchownat",
            libc::SYS_fchownat,
            Row::new(S::Path, K::Chown)
                .dfd(0)
                .path(1)
                .owner(2, 3)
                .flags(4),
            true,
        ),
        (
            "setxattr",
            libc::SYS_setxattr,
            Row::new(S::Path, K::SetXattr).path(0).name(1).flags(4),
            true,
        ),
        (
            "lsetxattr",
            libc::SYS_lsetxattr,
            Row::new(S::Path, K::SetXattr)
                .path(0)
                .name(1)
                .flags(4)
                .fixed(NOFOLLOW),
            true,
        ),
        (
            "fsetxattr",
            libc::SYS_fsetxattr,
            Row::new(S::Fd, K::SetXattr).path(0).name(1).flags(4),
            true,
        ),
        (
            "removexattr",
            libc::SYS_removexattr,
            Row::new(S::Path, K::RemoveXattr).path(0).name(1),
            true,
        ),
        (
            "lremovexattr",
            libc::SYS_lremovexattr,
            Row::new(S::Path, K::RemoveXattr)
                .path(0)
                .name(1)
                .fixed(NOFOLLOW),
            true,
        ),
        (
            "fremovexattr",
            libc::SYS_fremovexattr,
            Row::new(S::Fd, K::RemoveXattr).path(0).name(1),
            true,
        ),
        // Linux 6.13+: setxattrat(dfd, path, at_flags, name, args, size).
        (
            "setxattrat",
            SYS_SETXATTRAT,
            Row::new(S::Path, K::SetXattr)
                .dfd(0)
                .path(1)
                .flags(2)
                .name(3),
            false,
        ),
        (
            "removexattrat",
            SYS_REMOVEXATTRAT,
            Row::new(S::Path, K::RemoveXattr)
                .dfd(0)
                .path(1)
                .flags(2)
                .name(3),
            false,
        ),
    ];
    rows.into_iter()
        .map(|(name, nr, row, required)| Followed {
            name,
            nr: nr as u32,
            spec: row.0,
            required,
        })
        .collect()
}

/// `setxattrat` on x86_64 (not yet in the libc crate).
const SYS_SETXATTRAT: i64 = 463;
/// `removexattrat` on x86_64 (not yet in the libc crate).
const SYS_REMOVEXATTRAT: i64 = 466;

#[cfg(test)]
mod tests {
    use super::*;
    use fim_common::NO_ARG;

    #[test]
    fn rows_are_unique_and_fit_the_kernel_table() {
        let t = table();
        for (i, f) in t.iter().enumerate() {
            assert!(f.nr < fim_common::MAX_SYSCALL_NR, "{} nr {}", f.name, f.nr);
            assert!(
                t[i + 1..].iter().all(|g| g.nr != f.nr && g.name != f.name),
                "{} twice",
                f.name
            );
            assert_ne!(f.spec.shape, Shape::None as u8);
            assert_ne!(f.spec.path, NO_ARG, "{} has no path/fd argument", f.name);
        }
    }

    #[test]
    fn every_shape_has_a_program() {
        let t = table();
        let by_name = |n: &str| t.iter().find(|f| f.name == n).copied().expect(n);
        assert_eq!(
            by_name("renameat2").exit_program(),
            programs::EXIT_TWO_PATHS
        );
        assert_eq!(by_name("fchmod").exit_program(), programs::EXIT_FD);
        assert_eq!(by_name("openat").exit_program(), programs::EXIT_OPEN);
        assert_eq!(by_name("unlinkat").exit_program(), programs::EXIT_PATH);
        assert_eq!(
            by_name("creat").spec.fixed_flags & libc::O_CREAT as u32,
            libc::O_CREAT as u32
        );
    }
}
