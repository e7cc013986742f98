//! Process details from `/proc`, for sensors whose kernel records carry only a pid
//! (fanotify). A process that has exited by the time it is looked up is reported as such,
//! with nothing invented. Pid reuse between the event and the lookup would misattribute;
//! `--sensor auto` closes that gap with a process table fed by exec/fork/exit tracepoints.

use std::path::Path;

use crate::event::Process;

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

fn cgroup_id(tgid: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(text) = std::fs::read_to_string(format!("/proc/{tgid}/cgroup")) else {
        return 0;
    };
    // cgroup v2: "0::/path"; its id is the inode number of the directory.
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .and_then(|p| {
            std::fs::metadata(Path::new("/sys/fs/cgroup").join(p.trim_start_matches('/'))).ok()
        })
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
