//! How `fim reload` reaches a running daemon: the daemon writes its pid to
//! `STATE_DIR/fim.pid` while it runs, takes SIGHUP as "reload", and writes how each reload
//! ended to `STATE_DIR/reload.status`, which `fim reload` waits on.
//!
//! The status is one line: `PID GENERATION ok` or `PID GENERATION refused: WHY`. The pid
//! tells a daemon's answer from its predecessor's; the generation counts the daemon's
//! reloads, so a waiter knows when a new one ended.

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// The daemon's pid file in its state directory.
const PID_FILE: &str = "fim.pid";
/// How the last reload ended, in the state directory.
const STATUS_FILE: &str = "reload.status";

/// Reaching the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No pid file: no daemon runs on this state directory.
    #[error("no daemon is running on `{dir}` (no `{PID_FILE}` there): start `fim run` first")]
    NotRunning {
        /// The state directory.
        dir: PathBuf,
    },
    /// The pid file names a process that is gone.
    #[error("the daemon that wrote `{path}` (pid {pid}) is gone")]
    Gone {
        /// The pid file.
        path: PathBuf,
        /// The pid it holds.
        pid: i32,
    },
    /// A file could not be read or written.
    #[error("{what} `{path}`: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// Another live daemon wrote the pid file.
    #[error("`{path}` names another running daemon (pid {pid})")]
    Taken {
        /// The pid file.
        path: PathBuf,
        /// Its pid.
        pid: i32,
    },
    /// The pid file does not hold a pid.
    #[error("`{path}` does not hold a process id")]
    BadPidFile {
        /// The pid file.
        path: PathBuf,
    },
    /// SIGHUP could not be sent.
    #[error("signalling the daemon (pid {pid}): {source}")]
    Signal {
        /// The daemon's pid.
        pid: i32,
        /// Why.
        source: nix::Error,
    },
    /// The daemon did not answer in time.
    #[error("the daemon (pid {pid}) did not finish the reload within {} s", .waited.as_secs())]
    NoAnswer {
        /// The daemon's pid.
        pid: i32,
        /// How long `fim reload` waited.
        waited: Duration,
    },
}

/// The daemon's pid file, removed when dropped.
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's pid to `state_dir/fim.pid`, unless another live process
    /// wrote it (a second daemon on the same directory, which will not get the baseline).
    pub fn create(state_dir: &Path) -> Result<Self, ControlError> {
        let path = state_dir.join(PID_FILE);
        if let Ok(pid) = read_pid_file(&path)
            && pid != std::process::id() as i32
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        {
            return Err(ControlError::Taken { path, pid });
        }
        write_atomically(&path, &format!("{}\n", std::process::id())).map_err(|source| {
            ControlError::Io {
                what: "writing the pid file",
                path: path.clone(),
                source,
            }
        })?;
        Ok(Self { path })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own: a daemon started later on the same directory keeps its file.
        if read_pid_file(&self.path).ok() == Some(std::process::id() as i32) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// How one reload ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The daemon's pid.
    pub pid: i32,
    /// The daemon's count of reloads.
    pub generation: u64,
    /// `Ok`, or why the reload was refused or failed.
    pub outcome: Result<(), String>,
}

impl Status {
    /// The status line.
    pub fn render(&self) -> String {
        match &self.outcome {
            Ok(()) => format!("{} {} ok\n", self.pid, self.generation),
            Err(why) => format!(
                "{} {} refused: {}\n",
                self.pid,
                self.generation,
                one_line(why)
            ),
        }
    }

    /// Reads a status line; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        let line = text.lines().next()?;
        let mut words = line.splitn(3, ' ');
        let pid = words.next()?.parse().ok()?;
        let generation = words.next()?.parse().ok()?;
        let outcome = match words.next()? {
            "ok" => Ok(()),
            rest => Err(rest.strip_prefix("refused: ")?.to_owned()),
        };
        Some(Self {
            pid,
            generation,
            outcome,
        })
    }
}

/// `text`'s lines on one: a line ending with `:` goes on with a space, others with `; `.
pub fn one_line(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str(if out.ends_with(':') { " " } else { "; " });
        }
        out.push_str(line);
    }
    out
}

/// Records how a reload ended, for `fim reload`.
pub fn write_status(state_dir: &Path, status: &Status) -> Result<(), ControlError> {
    let path = state_dir.join(STATUS_FILE);
    write_atomically(&path, &status.render()).map_err(|source| ControlError::Io {
        what: "writing the reload status",
        path,
        source,
    })
}

fn read_status(state_dir: &Path) -> Option<Status> {
    Status::parse(&std::fs::read_to_string(state_dir.join(STATUS_FILE)).ok()?)
}

fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn read_pid_file(path: &Path) -> Result<i32, ControlError> {
    let text = std::fs::read_to_string(path).map_err(|source| ControlError::Io {
        what: "reading the pid file",
        path: path.to_owned(),
        source,
    })?;
    text.trim()
        .parse()
        .ok()
        .filter(|&pid: &i32| pid > 0)
        .ok_or_else(|| ControlError::BadPidFile {
            path: path.to_owned(),
        })
}

/// Asks the daemon running on `state_dir` to reload its configuration and waits up to
/// `wait` for its answer: `Ok(Ok)` reloaded, `Ok(Err(why))` refused or failed.
pub fn reload(state_dir: &Path, wait: Duration) -> Result<Result<(), String>, ControlError> {
    use nix::{sys::signal, unistd::Pid};
    let path = state_dir.join(PID_FILE);
    if !path.exists() {
        return Err(ControlError::NotRunning {
            dir: state_dir.to_owned(),
        });
    }
    let pid = read_pid_file(&path)?;
    let before = read_status(state_dir).filter(|s| s.pid == pid);
    match signal::kill(Pid::from_raw(pid), signal::Signal::SIGHUP) {
        Ok(()) => {}
        Err(nix::Error::ESRCH) => return Err(ControlError::Gone { path, pid }),
        Err(source) => return Err(ControlError::Signal { pid, source }),
    }
    let deadline = Instant::now() + wait;
    loop {
        if let Some(now) = read_status(state_dir)
            && now.pid == pid
            && before
                .as_ref()
                .is_none_or(|b| now.generation > b.generation)
        {
            return Ok(now.outcome);
        }
        if Instant::now() >= deadline {
            return Err(ControlError::NoAnswer { pid, waited: wait });
        }
        if signal::kill(Pid::from_raw(pid), None) == Err(nix::Error::ESRCH) {
            return Err(ControlError::Gone { path, pid });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_line_reads_back_as_written() {
        let why = "2 problem(s):\n  line 3: `rule.paths`: bad glob\n  line 9: x";
        for outcome in [Ok(()), Err(why.to_owned())] {
            let s = Status {
                pid: 42,
                generation: 7,
                outcome,
            };
            let back = Status::parse(&s.render()).expect("parses");
            assert_eq!(back.pid, 42);
            assert_eq!(back.generation, 7);
            assert_eq!(
                back.outcome,
                s.outcome.map_err(
                    |_| "2 problem(s): line 3: `rule.paths`: bad glob; line 9: x".to_owned()
                )
            );
        }
        assert_eq!(Status::parse("42 x ok"), None);
        assert_eq!(Status::parse("42 1 maybe"), None);
    }

    #[test]
    fn without_a_daemon_reload_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = reload(dir.path(), Duration::from_secs(1)).expect_err("no daemon");
        assert!(matches!(e, ControlError::NotRunning { .. }), "{e}");
        assert!(e.to_string().contains("fim run"), "{e}");
        // A pid file left by a daemon that died without removing it.
        std::fs::write(dir.path().join(PID_FILE), "999999999\n").expect("write");
        let e = reload(dir.path(), Duration::from_secs(1)).expect_err("gone");
        assert!(matches!(e, ControlError::Gone { .. }), "{e}");
    }

    #[test]
    fn the_pid_file_lives_as_long_as_its_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = PidFile::create(dir.path()).expect("created");
        assert_eq!(
            read_pid_file(&dir.path().join(PID_FILE)).expect("readable"),
            std::process::id() as i32
        );
        // Another live process's file is left alone (pid 1 lives as long as the host).
        drop(file);
        assert!(!dir.path().join(PID_FILE).exists());
        std::fs::write(dir.path().join(PID_FILE), "1\n").expect("write");
        let taken = PidFile::create(dir.path()).err().expect("taken");
        assert!(
            matches!(taken, ControlError::Taken { pid: 1, .. }),
            "{taken}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(PID_FILE)).expect("read"),
            "1\n"
        );
    }
}
