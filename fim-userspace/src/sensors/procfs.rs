//! Process details from `/proc`, for sensors whose kernel records carry only a pid
//! (fanotify). A process that has exited by the time it is looked up is reported as such,
//! with nothing invented. Pid reuse between the event and the lookup would misattribute;
//! `--sensor auto` closes that gap with a process table fed by exec/fork/exit tracepoints.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use fim_core::event::Process;

/// Ticks per second of `/proc/<pid>/stat` times.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

fn field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

fn ids(status: &str, key: &str) -> Option<(u32, u32)> {
    let mut it = field(status, key)?.split_whitespace();
    let real = it.next()?.parse().ok()?;
    let effective = it.next()?.parse().ok()?;
    Some((real, effective))
}

/// Parses `/proc/<tid>/status` into (tgid, ppid, uid, euid, gid, egid, name). Pure.
pub fn parse_status(status: &str) -> Option<(u32, u32, u32, u32, u32, u32, String)> {
    let tgid = field(status, "Tgid:")?.parse().ok()?;
    let ppid = field(status, "PPid:")?.parse().ok()?;
    let (uid, euid) = ids(status, "Uid:")?;
    let (gid, egid) = ids(status, "Gid:")?;
    let name = field(status, "Name:")?.to_owned();
    Some((tgid, ppid, uid, euid, gid, egid, name))
}

/// The start time (field 22 of `/proc/<pid>/stat`) in ticks since boot. Pure.
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may contain spaces: count after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Where the cgroup v2 hierarchy is mounted, from a `mountinfo` text: `/sys/fs/cgroup` on
/// a unified host, `/sys/fs/cgroup/unified` on a hybrid one. Pure.
pub fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        // Spaces and other specials in the mount point are octal escapes (`\040`).
        let point = mount.split_whitespace().nth(4)?;
        let mut out = Vec::with_capacity(point.len());
        let bytes = point.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'\\'
                && let Some(code) = point
                    .get(i + 1..i + 4)
                    .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(code);
                i += 4;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        let os: std::ffi::OsString = std::os::unix::ffi::OsStringExt::from_vec(out);
        Some(PathBuf::from(os))
    })
}

fn cgroup2_mount() -> Option<&'static Path> {
    static MOUNT: OnceLock<Option<PathBuf>> = OnceLock::new();
    MOUNT
        .get_or_init(|| {
            std::fs::read_to_string("/proc/self/mountinfo")
                .ok()
                .and_then(|m| parse_cgroup2_mount(&m))
        })
        .as_deref()
}

fn cgroup_id(tgid: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(text) = std::fs::read_to_string(format!("/proc/{tgid}/cgroup")) else {
        return 0;
    };
    let Some(mount) = cgroup2_mount() else {
        return 0;
    };
    // cgroup v2: "0::/path"; its id is the inode number of the directory.
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .and_then(|p| std::fs::metadata(mount.join(p.trim_start_matches('/'))).ok())
        .map_or(0, |m| m.ino())
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
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return gone;
    };
    let Some((tgid, ppid, uid, euid, gid, egid, name)) = parse_status(&status) else {
        return gone;
    };
    let start_boot_ns = std::fs::read_to_string(format!("/proc/{tgid}/stat"))
        .ok()
        .and_then(|s| parse_start_ticks(&s))
        .map_or(0, |t| t * 1_000_000_000 / clock_ticks());
    let executable = std::fs::read_link(format!("/proc/{tgid}/exe"))
        .ok()
        .map(|p| p.into_os_string().into_encoded_bytes());
    Process {
        pid: tgid,
        tid,
        ppid,
        uid,
        euid,
        gid,
        egid,
        name,
        executable,
        cgroup_id: cgroup_id(tgid),
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
    fn status_and_stat_parse() {
        let status = "Name:\tmy prog\nUmask:\t0022\nState:\tS\nTgid:\t100\nNgid:\t0\nPid:\t101\n\
                      PPid:\t1\nUid:\t1000\t0\t0\t0\nGid:\t50\t60\t60\t60\n";
        assert_eq!(
            parse_status(status),
            Some((100, 1, 1000, 0, 50, 60, "my prog".to_owned()))
        );
        let stat = "100 (a) b) S 1 100 100 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        assert_eq!(parse_start_ticks(stat), Some(12345));
    }

    #[test]
    fn the_cgroup2_mount_is_found_on_unified_and_hybrid_hosts() {
        let hybrid = "30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                      40 30 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let spaced = "35 24 0:30 / /mnt/my\\040cg rw - cgroup2 none rw\n";
        assert_eq!(
            parse_cgroup2_mount(spaced),
            Some(PathBuf::from("/mnt/my cg"))
        );
        assert_eq!(
            parse_cgroup2_mount("1 0 8:1 / / rw - ext4 /dev/sda rw\n"),
            None
        );
    }

    #[test]
    fn this_thread_is_found_and_a_dead_pid_is_not_invented() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let p = lookup(tid);
        assert!(!p.exited);
        assert_eq!(p.pid, std::process::id());
        assert!(p.executable.is_some() && p.start_boot_ns > 0);
        let dead = lookup(u32::MAX - 1);
        assert!(dead.exited && dead.name.is_empty() && dead.executable.is_none());
    }
}
