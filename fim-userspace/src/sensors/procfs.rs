//! Process details from `/proc` (read with the `procfs` crate), for sensors whose kernel
//! records carry only a pid (fanotify). A process that has exited by the time it is looked
//! up is reported as such, with nothing invented. Pid reuse between the event and the
//! lookup would misattribute; `--sensor auto` closes that gap with a process table fed by
//! exec/fork/exit tracepoints.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use fim_core::event::Process;

/// Ticks per second of `/proc/<pid>/stat` times.
fn clock_ticks() -> u64 {
    procfs::ticks_per_second().max(1)
}

/// A mount point as `mountinfo` spells it, with its octal escapes (`\040` for a space)
/// decoded: the `procfs` crate leaves them. Pure.
pub fn unescape_mount_point(point: &Path) -> PathBuf {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let bytes = point.as_os_str().as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes
            .get(i + 1..i + 4)
            .and_then(|o| std::str::from_utf8(o).ok())
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) if bytes[i] == b'\\' => {
                out.push(c);
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup` on a unified host,
/// `/sys/fs/cgroup/unified` on a hybrid one.
fn cgroup2_mount() -> Option<&'static Path> {
    static MOUNT: OnceLock<Option<PathBuf>> = OnceLock::new();
    MOUNT
        .get_or_init(|| {
            let mounts = procfs::process::Process::myself().ok()?.mountinfo().ok()?;
            mounts
                .into_iter()
                .find(|m| m.fs_type == "cgroup2")
                .map(|m| unescape_mount_point(&m.mount_point))
        })
        .as_deref()
}

/// The cgroup v2 id of `process`: the inode number of its cgroup's directory (0 unknown).
fn cgroup_id(process: &procfs::process::Process) -> u64 {
    let (Some(mount), Ok(groups)) = (cgroup2_mount(), process.cgroups()) else {
        return 0;
    };
    groups
        .into_iter()
        .find(|g| g.hierarchy == 0)
        .and_then(|g| std::fs::metadata(mount.join(g.pathname.trim_start_matches('/'))).ok())
        .map_or(0, |m| m.ino())
}

/// Live processes' names and parents from `/proc/PID/stat`, each kept a second: a burst's
/// events mostly share their ancestors.
#[derive(Default)]
pub struct ParentCache {
    seen: std::collections::HashMap<u32, (Option<(String, u32)>, std::time::Instant)>,
}

impl ParentCache {
    /// How long an answer is kept.
    const KEEP: std::time::Duration = std::time::Duration::from_secs(1);

    /// `pid`'s name and parent, while it lives.
    pub fn get(&mut self, pid: u32) -> Option<(String, u32)> {
        let now = std::time::Instant::now();
        if let Some((answer, at)) = self.seen.get(&pid)
            && now.duration_since(*at) < Self::KEEP
        {
            return answer.clone();
        }
        if self.seen.len() > 4096 {
            self.seen
                .retain(|_, (_, at)| now.duration_since(*at) < Self::KEEP);
        }
        let answer = procfs::process::Process::new(pid as i32)
            .and_then(|p| p.stat())
            .ok()
            .map(|s| (s.comm, s.ppid.max(0) as u32));
        self.seen.insert(pid, (answer.clone(), now));
        answer
    }

    /// The cache as a lookup function.
    pub fn into_lookup(mut self) -> impl FnMut(u32) -> Option<(String, u32)> + Send {
        move |pid| self.get(pid)
    }
}

/// Looks up thread `tid`. When it is gone, the result has `exited` set and only the ids
/// the kernel gave.
pub fn lookup(tid: u32) -> Process {
    let gone = Process {
        pid: tid,
        tid,
        exited: true,
        ..Process::default()
    };
    let Some(thread) = i32::try_from(tid)
        .ok()
        .and_then(|t| procfs::process::Process::new(t).ok())
    else {
        return gone;
    };
    // The name from `stat`, whose parser takes everything between the parentheses: the
    // crate's `status` parser cuts a name at its first colon, and a thread may be named
    // `a::b` (or named so to hide).
    let (Ok(status), Ok(stat)) = (thread.status(), thread.stat()) else {
        return gone;
    };
    // The main thread is the process: its files are read once.
    let main_thread = i64::from(status.tgid) == i64::from(tid);
    let other;
    let process = if main_thread {
        &thread
    } else {
        match procfs::process::Process::new(status.tgid) {
            Ok(p) => {
                other = p;
                &other
            }
            Err(_) => return gone,
        }
    };
    let start_ticks = if main_thread {
        Some(stat.starttime)
    } else {
        process.stat().ok().map(|s| s.starttime)
    };
    let start_boot_ns = start_ticks.map_or(0, |t| t * 1_000_000_000 / clock_ticks());
    let executable = process
        .exe()
        .ok()
        .map(|p| p.into_os_string().into_encoded_bytes());
    let id = |n: i32| u32::try_from(n).unwrap_or(0);
    Process {
        pid: id(status.tgid),
        tid,
        ppid: id(status.ppid),
        uid: status.ruid,
        euid: status.euid,
        gid: status.rgid,
        egid: status.egid,
        name: stat.comm,
        executable,
        cgroup_id: cgroup_id(process),
        start_boot_ns,
        exited: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_s_proc_tick_is_this_kernel_s() {
        // `process.entity_id` divides the kernel's start time by this tick so that kernel
        // and /proc attributions name a process alike.
        assert_eq!(
            1_000_000_000 / clock_ticks(),
            fim_core::ecs::PROC_TICK_NS,
            "sysconf(_SC_CLK_TCK)"
        );
    }

    #[test]
    fn mount_points_with_escapes_are_decoded() {
        assert_eq!(
            unescape_mount_point(Path::new("/mnt/my\\040cg")),
            PathBuf::from("/mnt/my cg")
        );
        assert_eq!(
            unescape_mount_point(Path::new("/sys/fs/cgroup")),
            PathBuf::from("/sys/fs/cgroup")
        );
        assert_eq!(
            unescape_mount_point(Path::new("/a\\b")),
            PathBuf::from("/a\\b"),
            "a backslash without three octal digits stays"
        );
    }

    #[test]
    fn this_process_has_its_cgroup_id() {
        use std::os::unix::fs::MetadataExt;
        let me = procfs::process::Process::myself().expect("/proc/self");
        let Some(mount) = cgroup2_mount() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "no cgroup v2 hierarchy mounted: this test must run in CI"
            );
            eprintln!("skipped: no cgroup v2 hierarchy mounted here");
            return;
        };
        let text = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
        let path = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a v2 line");
        let dir = mount.join(path.trim_start_matches('/'));
        assert_eq!(
            cgroup_id(&me),
            std::fs::metadata(dir).expect("cgroup dir").ino()
        );
    }

    #[test]
    fn a_thread_named_with_colons_keeps_its_whole_name() {
        let name = std::thread::Builder::new()
            .name("a::b: c".into())
            .spawn(|| lookup(nix::unistd::gettid().as_raw() as u32).name)
            .expect("thread")
            .join()
            .expect("joined");
        assert_eq!(name, "a::b: c");
    }

    #[test]
    fn this_thread_is_found_and_a_dead_pid_is_not_invented() {
        let tid = nix::unistd::gettid().as_raw() as u32;
        let p = lookup(tid);
        assert!(!p.exited);
        assert_eq!(p.pid, std::process::id());
        assert!(p.executable.is_some() && p.start_boot_ns > 0);
        let dead = lookup(u32::MAX - 1);
        assert!(dead.exited && dead.name.is_empty() && dead.executable.is_none());
    }
}
