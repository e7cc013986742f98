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

pub mod receivers;

/// The event schema every event the daemon prints must follow (`schema/`).
const EVENT_SCHEMA: &str = include_str!("../../schema/fim-event.schema.json");

/// Checks `event` against the event schema; the reasons it fails, with the event.
pub fn schema_check(event: &Value) -> Result<(), String> {
    static VALIDATOR: std::sync::LazyLock<jsonschema::Validator> = std::sync::LazyLock::new(|| {
        let schema: Value = serde_json::from_str(EVENT_SCHEMA).expect("the schema is JSON");
        jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
    });
    let errors: Vec<String> = VALIDATOR
        .iter_errors(event)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "an event does not follow schema/fim-event.schema.json: {}\nthe event: {event}",
            errors.join("; ")
        ))
    }
}

/// How long a test waits for an expected event (before [`scaled`]).
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The daemon's default `--hash-quiet` (`fim_core::defaults::HASH_QUIET`; fim-core is not
/// a dependency here: the guests' static test binary would have to link OpenSSL).
pub const HASH_QUIET: Duration = Duration::from_secs(2);

/// `d` stretched by `FIM_TEST_TIME_SCALE` (default 1): guests under QEMU's TCG run several
/// times slower than the host, and the kernel matrix sets it.
pub fn scaled(d: Duration) -> Duration {
    let factor = std::env::var("FIM_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|f| *f > 0)
        .unwrap_or(1);
    d * factor
}

/// Held for reading by a test while it has files open for writing, and for writing while
/// any child process is spawned ([`spawn`]): a child forked meanwhile would hold those files
/// until its exec, so the test's own close would not be the last one, and the last release
/// (fanotify's `close_write`; for the eBPF tracepoint tier, none, as exec closes no file by
/// a syscall) would be the child's, after whatever the test did next.
pub static FORKS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Spawns `cmd` while no test has files open for writing (see [`FORKS`]); `spawn` returns
/// once the child has exec'd, its copies of those files closed.
pub fn spawn(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let _no_open_files = FORKS.write().unwrap_or_else(|e| e.into_inner());
    cmd.spawn()
}

/// How many test daemons run, and whether a test floods the file system ([`Flood`]): no
/// daemon runs while a test floods. A `--sensor fanotify` daemon marks the whole file
/// system, so another test's flood (above all while that daemon is paused, or slowed by
/// QEMU's TCG) would overflow its kernel queue (16,384 events): it would rightly report a
/// gap and rescan, but a test that asserts every event of its own sequence would fail.
/// A test may run two daemons at once, so a flood waits for none to run rather than
/// holding new ones back while it waits (which could deadlock such a test).
static QUIET: std::sync::Mutex<QuietState> = std::sync::Mutex::new(QuietState {
    running: 0,
    flooding: false,
});
static QUIET_CHANGED: std::sync::Condvar = std::sync::Condvar::new();

/// See [`QUIET`].
struct QuietState {
    /// Test daemons running (each holds a [`Quiet`]).
    running: usize,
    /// A test holds a [`Flood`].
    flooding: bool,
}

/// Waits while `wait_while` holds, then applies `f` and wakes the other waiters.
fn quiet_update<T>(
    wait_while: impl Fn(&QuietState) -> bool,
    f: impl FnOnce(&mut QuietState) -> T,
) -> T {
    let guard = QUIET.lock().unwrap_or_else(|e| e.into_inner());
    let mut state = QUIET_CHANGED
        .wait_while(guard, |s| wait_while(s))
        .unwrap_or_else(|e| e.into_inner());
    let out = f(&mut state);
    QUIET_CHANGED.notify_all();
    out
}

/// A running test daemon's share of [`QUIET`].
struct Quiet;

impl Quiet {
    fn begin() -> Self {
        quiet_update(|s| s.flooding, |s| s.running += 1);
        Self
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        quiet_update(|_| false, |s| s.running -= 1);
    }
}

/// Held by a test that floods the file system: no other test's daemon runs meanwhile.
pub struct Flood(());

impl Flood {
    /// Waits until no other test's daemon runs, and keeps new ones from starting until
    /// dropped.
    pub fn begin() -> Self {
        quiet_update(|s| s.running > 0 || s.flooding, |s| s.flooding = true);
        Self(())
    }

    /// [`Daemon::start_with`] for the test that floods.
    pub fn start_daemon(&self, watch: &[&Path], state: Option<&Path>, args: &[&str]) -> Daemon {
        Daemon::spawn(watch, state, args, None)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        quiet_update(|_| false, |s| s.flooding = false);
    }
}

/// The eBPF tier the scenarios run against: `$FIM_TEST_TIER` (`lsm`, `fentry` or
/// `tracepoint`), by default `tracepoint`, the one tier every supported host allows. The
/// kernel matrix runs the scenario suite once per tier each guest supports.
pub fn tier() -> String {
    std::env::var("FIM_TEST_TIER").unwrap_or_else(|_| "tracepoint".to_owned())
}

/// Whether the tier under test builds paths from kernel objects (LSM, fentry) rather than
/// from syscall arguments (tracepoint).
pub fn kernel_object_tier() -> bool {
    tier() != "tracepoint"
}

/// The `fim.path.source` the tier under test gives a path-based syscall (`chmod(path)`).
pub fn path_arg_source() -> &'static str {
    if kernel_object_tier() {
        "kernel_object"
    } else {
        "syscall_string"
    }
}

/// Whether this kernel has the `timestamp` tracepoints (6.13+), at which the tracepoint
/// tier finds the object a path-based attribute call acted on.
pub fn ctime_tracepoints() -> bool {
    Path::new("/sys/kernel/tracing/events/timestamp/ctime_ns_xchg").exists()
}

/// The `fim.path.source` the tier under test gives a path-based *attribute* call (`chmod`,
/// `truncate`): the object where the kernel-object tiers run, and where the tracepoint tier
/// finds it at a ctime update (6.13+).
pub fn attribute_call_source() -> &'static str {
    if kernel_object_tier() || ctime_tracepoints() {
        "kernel_object"
    } else {
        "syscall_string"
    }
}

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
    /// Each line as JSON, or why it is not a valid event.
    lines: mpsc::Receiver<Result<Value, String>>,
    log: mpsc::Receiver<String>,
    log_seen: Vec<String>,
    stderr: std::thread::JoinHandle<String>,
    _state: Option<tempfile::TempDir>,
    /// No other test floods the file system while this daemon runs (see [`QUIET`]).
    _quiet: Option<Quiet>,
    /// Every event received so far, in order.
    pub seen: Vec<Value>,
}

impl Daemon {
    /// Starts `fim run --watch <each>` with a fresh state directory and waits until it
    /// reports ready.
    pub fn start(watch: &[&Path]) -> Self {
        Self::start_with(watch, None, &[])
    }

    /// Starts `fim run --watch <each> --state-dir <state> <args>`; without `state`, a fresh
    /// temporary state directory is used and removed with the daemon.
    pub fn start_with(watch: &[&Path], state: Option<&Path>, args: &[&str]) -> Self {
        Self::spawn(watch, state, args, Some(Quiet::begin()))
    }

    fn spawn(watch: &[&Path], state: Option<&Path>, args: &[&str], quiet: Option<Quiet>) -> Self {
        let owned = match state {
            Some(_) => None,
            None => Some(
                tempfile::Builder::new()
                    .prefix("fim-state-")
                    .tempdir()
                    .expect("state tempdir"),
            ),
        };
        let state_dir = state
            .map(Path::to_path_buf)
            .or_else(|| owned.as_ref().map(|t| t.path().to_path_buf()))
            .expect("a state directory");
        let mut cmd = Command::new(fim_bin());
        cmd.arg("run").arg("--state-dir").arg(&state_dir).args(args);
        // Tests that do not choose a sensor exercise the eBPF tier under test, forced: a
        // tier the kernel refuses fails the test instead of falling back.
        if !args.contains(&"--sensor") {
            cmd.args(["--sensor", &tier()]);
        }
        // Tests run daemons side by side: the metrics endpoint only where a test asks for it
        // (on a port of its own).
        if !args.contains(&"--metrics-address") {
            cmd.args(["--metrics-address", "off"]);
        }
        // The quiet period after which a file still open for writing is hashed ("modified")
        // is a deadline like the tests' own: stretched in slow guests, where a thread can
        // stall longer than the default 2 s between its open and its close.
        if !args.contains(&"--hash-quiet") && scaled(HASH_QUIET) != HASH_QUIET {
            cmd.arg("--hash-quiet")
                .arg(format!("{}ms", scaled(HASH_QUIET).as_millis()));
        }
        for w in watch {
            cmd.arg("--watch").arg(w);
        }
        let mut child = spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()))
            .unwrap_or_else(|e| panic!("starting {}: {e}", fim_bin().display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let checked = serde_json::from_str(&line)
                    .map_err(|e| format!("bad JSON line {line:?}: {e}"))
                    .and_then(|v| schema_check(&v).map(|()| v));
                if tx.send(checked).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (log_tx, log) = mpsc::channel();
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            let mut reader = BufReader::new(&mut stderr);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                let _ = log_tx.send(line.clone());
                all.push_str(&line);
                line.clear();
            }
            let _ = reader.read_to_string(&mut all);
            all
        });
        let mut daemon = Self {
            child,
            lines,
            log,
            log_seen: Vec::new(),
            stderr,
            _state: owned,
            _quiet: quiet,
            seen: Vec::new(),
        };
        daemon.wait_log("ready:", Duration::from_secs(60));
        daemon
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the daemon (SIGSTOP) and waits until every one of its threads has stopped, so
    /// nothing it reads happens before [`Daemon::resume`].
    pub fn pause(&self) {
        let pid = self.child.id();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        let end = Instant::now() + scaled(DEADLINE);
        loop {
            let all_stopped = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|tasks| {
                    tasks.flatten().all(|t| {
                        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
                            s.rsplit_once(')')
                                .and_then(|(_, r)| r.split_whitespace().next())
                                .is_some_and(|state| state == "T" || state == "t")
                        })
                    })
                })
                .unwrap_or(false);
            if all_stopped {
                return;
            }
            assert!(Instant::now() < end, "fim did not stop within {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Continues a daemon stopped by [`Daemon::pause`].
    pub fn resume(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }

    /// Waits until the daemon logs a line containing `needle` and returns that line; panics
    /// with the log at the deadline (or when the daemon exits first).
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(line) = self.log_seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let timeout = scaled(timeout);
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.log.recv_timeout(left) {
                Ok(line) => {
                    self.log_seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "fim exited before logging {needle:?}; its log:\n{}",
                        self.log_seen.concat()
                    );
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "fim did not log {needle:?} within {timeout:?}; its log:\n{}",
            self.log_seen.concat()
        );
    }

    /// Waits until an event satisfies `pred` and returns it; panics at the deadline with
    /// everything seen so far.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_within(scaled(DEADLINE), &pred)
            .unwrap_or_else(|| {
                panic!(
                    "no event {what} within {:?}; saw:\n{}",
                    scaled(DEADLINE),
                    self.dump()
                )
            })
    }

    /// Waits up to `timeout` until an event satisfies `pred`.
    pub fn wait_for_within(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return Some(v.clone());
        }
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(Err(invalid)) => panic!("{invalid}"),
                Ok(Ok(v)) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return Some(v);
                    }
                }
                Err(_) => break,
            }
        }
        None
    }

    /// What the daemon logged so far (for a failure's message).
    pub fn log_so_far(&mut self) -> String {
        while let Ok(line) = self.log.try_recv() {
            self.log_seen.push(line);
        }
        self.log_seen.concat()
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
            self.seen
                .push(v.unwrap_or_else(|invalid| panic!("{invalid}")));
        }
        let seen = std::mem::take(&mut self.seen);
        // `Daemon` has a Drop impl, so the handle is swapped out rather than moved.
        let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
        let log = stderr.join().unwrap_or_default();
        (seen, log, status)
    }
}

impl Drop for Daemon {
    /// A test that fails midway must not leave its daemon running (and loaded with BPF
    /// programs) behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
    assert_acted_by_this_thread_via(v, &format!("ebpf-{}", tier()));
}

/// Asserts the process fields of `v` are this test thread's, and that `sensor` saw it.
pub fn assert_acted_by_this_thread_via(v: &Value, sensor: &str) {
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
    assert_eq!(v["fim"]["sensor"], sensor);
}

/// SHA-256 of `bytes` in hex, computed by coreutils' `sha256sum` (an oracle independent
/// of the implementation under test).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = spawn(
        Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )
    .expect("running sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("feeding sha256sum");
    let out = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}

/// Names in `fim.changed`.
pub fn changed(v: &Value) -> Vec<String> {
    v["fim"]["changed"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `fim <args>` to completion: (exit code, stdout, stderr).
pub fn fim(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = spawn(
        Command::new(fim_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .and_then(std::process::Child::wait_with_output)
    .unwrap_or_else(|e| panic!("running {}: {e}", fim_bin().display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs each named scenario `fn name(sensor: &str)` once per sensor, as tests in modules
/// `sensor_fanotify`, `sensor_auto` and `sensor_ebpf_tier` (the tier in `FIM_TEST_TIER`).
#[macro_export]
macro_rules! per_sensor {
    ($($name:ident),* $(,)?) => {
        mod sensor_fanotify {
            $( #[test] fn $name() { super::$name("fanotify") } )*
        }
        mod sensor_auto {
            $( #[test] fn $name() { super::$name("auto") } )*
        }
        mod sensor_ebpf_tier {
            $( #[test] fn $name() { super::$name(&$crate::tier()) } )*
        }
    };
}

/// Writes `root/fim.toml`: no scheduled rescan, rule `w` on `watched` (with `rule_extra`
/// keys), and the sinks in `sinks` (TOML tables); returns its path.
pub fn config_with_sinks(root: &Path, watched: &Path, rule_extra: &str, sinks: &str) -> PathBuf {
    let config = root.join("fim.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nrescan_interval = \"0\"\n\n[[rule]]\nname = \"w\"\npaths = [{:?}]\n{rule_extra}\n{sinks}",
            watched.display().to_string()
        ),
    )
    .expect("configuration");
    config
}

/// The operations the daemon counted as lost, from its final log line ("N events written,
/// M operations lost").
pub fn lost_in_kernel(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.split("written, ").nth(1))
        .filter_map(|rest| rest.split(' ').next())
        .filter_map(|n| n.parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no final summary in the log:\n{log}"))
}
