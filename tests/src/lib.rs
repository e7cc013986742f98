//! Shared helpers for fim's test binaries: start the real daemon on a real directory, read
//! its JSON lines, and wait for events with a deadline.
//!
//! Privileged tests call [`require_privileges`] first: outside CI a host that cannot run
//! them skips with a reason; in CI (`CI` set) that is a failure.

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long a test waits for an expected event.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Path of the `fim` binary under test: `$FIM_BIN`, or the workspace's debug build.
pub fn fim_bin() -> PathBuf {
    std::env::var_os("FIM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/fim"))
}

/// Returns false (after saying why) when this host cannot run privileged tests; panics
/// instead when `CI` is set, because in CI a privileged test that cannot run is a failure.
pub fn require_privileges() -> bool {
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("not running as root".to_owned())
    } else if !fim_bin().exists() {
        Some(format!(
            "{} does not exist (run `cargo xtask test`)",
            fim_bin().display()
        ))
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("the kernel has no BTF".to_owned())
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => {
            panic!("privileged test cannot run in CI: {why}")
        }
        Some(why) => {
            eprintln!("skipping privileged test: {why}");
            false
        }
    }
}

/// A running daemon and the events it printed so far.
pub struct Daemon {
    child: Child,
    lines: mpsc::Receiver<Value>,
    stderr: std::thread::JoinHandle<String>,
    /// Every event received so far, in order.
    pub seen: Vec<Value>,
}

impl Daemon {
    /// Starts `fim run --watch <each>` and waits until it reports ready.
    pub fn start(watch: &[&Path]) -> Self {
        let mut cmd = Command::new(fim_bin());
        cmd.arg("run");
        for w in watch {
            cmd.arg("--watch").arg(w);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", fim_bin().display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            let mut reader = BufReader::new(&mut stderr);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if line.contains("ready:") {
                    let _ = ready_tx.send(());
                }
                all.push_str(&line);
                line.clear();
            }
            let _ = reader.read_to_string(&mut all);
            all
        });
        let mut daemon = Self {
            child,
            lines,
            stderr,
            seen: Vec::new(),
        };
        if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = daemon.child.kill();
            let _ = daemon.child.wait();
            let log = daemon.stderr_text();
            panic!("fim did not become ready within 60 s; its log:\n{log}");
        }
        daemon
    }

    fn stderr_text(self) -> String {
        self.stderr.join().unwrap_or_default()
    }

    /// Waits until an event satisfies `pred` and returns it; panics at the deadline with
    /// everything seen so far.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let end = Instant::now() + DEADLINE;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no event {what} within {DEADLINE:?}; saw:\n{}", self.dump());
    }

    /// Everything seen so far, one line each.
    pub fn dump(&self) -> String {
        self.seen.iter().map(|v| format!("  {v}\n")).collect()
    }

    /// Stops the daemon with SIGINT, collects the remaining events, and returns its log.
    pub fn stop(mut self) -> (Vec<Value>, String, std::process::ExitStatus) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().expect("waiting for fim");
        while let Ok(v) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(v);
        }
        let seen = std::mem::take(&mut self.seen);
        let log = self.stderr.join().unwrap_or_default();
        (seen, log, status)
    }
}

/// `event.action` of an event.
pub fn action(v: &Value) -> &str {
    v["event"]["action"].as_str().unwrap_or_default()
}

/// `file.path` of an event.
pub fn path(v: &Value) -> &str {
    v["file"]["path"].as_str().unwrap_or_default()
}

/// Whether `v` is `action` on `p`.
pub fn is(v: &Value, act: &str, p: &Path) -> bool {
    action(v) == act && path(v) == p.to_str().unwrap_or_default()
}

/// A watched temporary directory, canonical (the kernel reports canonical paths).
pub fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("fim-test-")
        .tempdir()
        .expect("tempdir");
    let canonical = std::fs::canonicalize(dir.path()).expect("canonicalize");
    (dir, canonical)
}

/// The acting process as this test thread: (pid, tid, comm, executable).
pub fn this_thread() -> (u32, u32, String, String) {
    let comm = std::fs::read_to_string("/proc/thread-self/comm").expect("comm");
    let exe = std::fs::read_link("/proc/self/exe").expect("exe");
    (
        std::process::id(),
        unsafe { libc::gettid() } as u32,
        comm.trim_end().to_owned(),
        exe.to_string_lossy().into_owned(),
    )
}

/// Asserts the process fields of `v` are this test thread's.
pub fn assert_acted_by_this_thread(v: &Value) {
    let (pid, tid, comm, exe) = this_thread();
    let p = &v["process"];
    assert_eq!(p["pid"], pid, "process.pid in {v}");
    assert_eq!(p["thread"]["id"], tid, "process.thread.id in {v}");
    assert_eq!(p["name"], comm.as_str(), "process.name in {v}");
    assert_eq!(p["executable"], exe.as_str(), "process.executable in {v}");
    let ppid = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1))
                .map(str::to_owned)
        })
        .and_then(|p| p.parse::<u32>().ok())
        .expect("ppid");
    assert_eq!(p["parent"]["pid"], ppid, "process.parent.pid in {v}");
    let uid = unsafe { libc::getuid() }.to_string();
    assert_eq!(v["user"]["id"], uid.as_str(), "user.id in {v}");
    assert_eq!(
        v["user"]["effective"]["id"],
        unsafe { libc::geteuid() }.to_string().as_str()
    );
    assert_eq!(
        v["group"]["id"],
        unsafe { libc::getgid() }.to_string().as_str()
    );
    assert!(v["fim"]["cgroup_id"].as_u64().is_some(), "cgroup id in {v}");
    assert!(
        v["@timestamp"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")),
        "timestamp in {v}"
    );
    assert_eq!(v["fim"]["sensor"], "ebpf-tracepoint");
}
