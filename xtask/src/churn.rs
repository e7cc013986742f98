//! `cargo xtask bench churn`: the churn workload side by side under every monitor this
//! machine can run, in one run, printed as a Markdown table.
//!
//! The workload creates `N` files (default 100,000; `FIM_BENCH_FILES` overrides), and for
//! each: create, write 4 KiB, close, rename, chmod, unlink: six operations, counted by the
//! workload itself as they succeed (the true count). Each monitor runs while the workload
//! runs in a watched directory ("inside") and, for fim, in an unwatched directory on the
//! same file system with the built-in watch set ("outside"). Before each run, the file
//! system rests ([`cool`]). Reported: the workload's time and slowdown against the
//! unmonitored run, the operations the monitor reported against
//! the true count (fim: one event per operation; auditd: the four its watch records:
//! create, rename, chmod, unlink; inotifywait: its events folded to operations), the loss
//! the monitor itself reported, its CPU per operation, and write-to-event latency (p50,
//! p99) of 200 single writes made 10 ms apart, before the churn.
//!
//! Set `FIM_BENCH_PROFILE=1` to record the daemon of the first fim run with
//! `perf record -e cpu-clock -g` and print where its time went.

use std::{
    collections::HashMap,
    fs,
    io::{BufRead, BufReader, Write as _},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{apt_install, bench::cpu_seconds, step};

/// The six operations of the workload, per file, as fim names them.
const OPS: [&str; 6] = [
    "create",
    "write",
    "close_write",
    "rename",
    "chmod",
    "unlink",
];
/// Single writes timed for latency, and the pause between them.
const LATENCY_SAMPLES: usize = 200;
const LATENCY_GAP: Duration = Duration::from_millis(10);

/// How long the file system rests before each run, unless `FIM_BENCH_COOL` (seconds) says
/// otherwise. ext4 without a journal, as on this machine kind, skips inodes freed in the
/// last minute when it allocates one: back to back, each run of 100,000 deletions made the
/// next unmonitored run slower (2.94, 2.93, 3.09, 3.31, 3.46, 3.77 s), and 65 s later it
/// was back to 2.87 s. Without the rest, every row would pay for the rows before it.
const COOL: Duration = Duration::from_secs(65);

/// Lets the file system rest (see [`COOL`]) after writing back what is dirty.
fn cool() {
    let rest = std::env::var("FIM_BENCH_COOL")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(COOL, Duration::from_secs);
    let _ = Command::new("sync").status();
    std::thread::sleep(rest);
}

/// What the workload did: its duration and the operations that succeeded.
struct Done {
    took: Duration,
    ops: u64,
}

/// The workload: `n` files through the six operations, in `dir`.
fn workload(dir: &Path, n: usize) -> Result<Done> {
    let block = [7u8; 4096];
    let start = Instant::now();
    let mut ops = 0u64;
    for i in 0..n {
        let (p, r) = (dir.join(format!("f{i}")), dir.join(format!("r{i}")));
        let mut f = fs::File::create(&p)?;
        ops += 1;
        f.write_all(&block)?;
        ops += 1;
        drop(f);
        ops += 1;
        fs::rename(&p, &r)?;
        ops += 1;
        fs::set_permissions(&r, fs::Permissions::from_mode(0o600))?;
        ops += 1;
        fs::remove_file(&r)?;
        ops += 1;
    }
    Ok(Done {
        took: start.elapsed(),
        ops,
    })
}

/// What a monitor's output told us, filled by a reader thread.
#[derive(Default)]
struct Seen {
    /// Events per operation name, about the churn files.
    ops: HashMap<String, u64>,
    /// When each latency file's event arrived.
    latency: HashMap<String, Instant>,
    /// Whether the end marker was seen.
    end: bool,
    /// Operations the monitor said it lost.
    lost: u64,
    /// Losses it could not count (fim: gap events with `unknown_more`).
    uncounted: u64,
}

type Shared = Arc<Mutex<Seen>>;

/// A running monitor.
struct Running {
    /// auditd: the kernel's `lost` count when the watch was added.
    audit_lost_before: u64,
    child: Option<Child>,
    /// The thread reading the monitor's output (ends at its end of file).
    reader: Option<std::thread::JoinHandle<()>>,
    /// The process whose CPU is the monitor's.
    pid: u32,
    seen: Shared,
    what: &'static str,
    /// fim with its metrics endpoint on: the scraper reading it once a second, and its
    /// stop flag.
    scraper: Option<(
        Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<u64>,
    )>,
}

/// Reads `http://127.0.0.1:port/metrics` once a second, as a scraper would (Prometheus'
/// default is every 15 s), until `stop`; returns how many scrapes answered.
fn scrape(port: u16, stop: Arc<std::sync::atomic::AtomicBool>) -> u64 {
    use std::io::Read as _;
    let mut answered = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut body = Vec::new();
            if s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").is_ok()
                && s.read_to_end(&mut body).is_ok()
                && body.starts_with(b"HTTP/1.1 200")
            {
                answered += 1;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    answered
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The name after the last `/`.
fn base(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// The string value that follows the first `"key":"` in a JSON line (no escapes: the
/// bench's names have none).
fn json_str<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(key)? + key.len();
    let rest = line[at..].strip_prefix(":\"")?;
    rest.split('"').next()
}

/// The number that follows the first `"key":` after `after` in a JSON line.
fn json_u64(line: &str, after: &str, key: &str) -> Option<u64> {
    let from = line.find(after)?;
    let at = from + line[from..].find(key)? + key.len();
    let digits = line[at..].strip_prefix(':')?;
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Counts one fim event line. A scan for three keys, not a JSON parse: the reader shares
/// the machine's two CPUs with the workload and the daemon, and parsing half a million
/// events as JSON values would cost the workload more than some monitors do.
fn fim_line(seen: &Shared, line: &str) {
    // `event` comes first in fim's documents, `file` right after it.
    let action = json_str(line, "\"action\"").unwrap_or_default();
    if action == "gap" {
        let lost = json_u64(line, "\"gap\"", "\"operations\"").unwrap_or(0);
        let mut s = lock(seen);
        s.lost += lost;
        if line.contains("\"unknown_more\":true") {
            s.uncounted += 1;
        }
        return;
    }
    let path = json_str(line, "\"path\"").unwrap_or_default();
    let name = base(path);
    let mut s = lock(seen);
    if name.starts_with("lat") && action == "close_write" {
        s.latency
            .entry(name.to_owned())
            .or_insert_with(Instant::now);
    } else if name == "end" {
        s.end = true;
    } else if name.starts_with('f') || name.starts_with('r') {
        *s.ops.entry(action.to_owned()).or_default() += 1;
    }
}

/// Counts one inotifywait line (`EVENTS path`).
fn inotify_line(seen: &Shared, line: &str) {
    let Some((events, path)) = line.split_once(' ') else {
        return;
    };
    let name = base(path);
    let mut s = lock(seen);
    for e in events.split(',') {
        if name.starts_with("lat") && e == "CLOSE_WRITE" {
            s.latency
                .entry(name.to_owned())
                .or_insert_with(Instant::now);
        } else if name == "end" {
            s.end = true;
        } else if name.starts_with('f') || name.starts_with('r') {
            let op = match e {
                "CREATE" => "create",
                "MODIFY" => "write",
                "CLOSE_WRITE" => "close_write",
                "MOVED_TO" => "rename",
                "ATTRIB" => "chmod",
                "DELETE" => "unlink",
                _ => continue,
            };
            *s.ops.entry(op.to_owned()).or_default() += 1;
        } else if e == "Q_OVERFLOW" {
            s.lost += 1;
        }
    }
}

/// Starts fim with `sensor`, watching `watch` (the built-in set when `None`), with its
/// metrics endpoint scraped once a second, or off.
fn start_fim(
    fim: &Path,
    sensor: &str,
    watch: Option<&Path>,
    work: &Path,
    place: &str,
    metrics: bool,
) -> Result<Running> {
    let state = work.join(format!("state-{sensor}-{place}"));
    let _ = fs::remove_dir_all(&state);
    let log = work.join(format!("fim-{sensor}-{place}.log"));
    let mut cmd = Command::new(fim);
    cmd.args(["run", "--rescan-interval", "0", "--sensor", sensor])
        .arg("--state-dir")
        .arg(&state);
    if let Some(w) = watch {
        cmd.arg("--watch").arg(w);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    if metrics {
        cmd.arg("--metrics-address")
            .arg(format!("127.0.0.1:{port}"));
    } else {
        cmd.args(["--metrics-address", "off"]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&log)?)
        .spawn()
        .context("starting fim")?;
    let seen = Shared::default();
    let stdout = child.stdout.take().context("fim stdout")?;
    let s = seen.clone();
    // `FIM_BENCH_KEEP=1` keeps each run's events in the work directory.
    let mut keep = std::env::var("FIM_BENCH_KEEP")
        .is_ok_and(|v| v == "1")
        .then(|| fs::File::create(work.join(format!("events-{sensor}-{place}.json"))))
        .transpose()?;
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(k) = &mut keep {
                let _ = writeln!(k, "{line}");
            }
            fim_line(&s, &line);
        }
    });
    crate::bench::wait_started(&mut child, &log, Duration::from_secs(300))?;
    let scraper = metrics.then(|| {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        (stop, std::thread::spawn(move || scrape(port, flag)))
    });
    Ok(Running {
        audit_lost_before: 0,
        pid: child.id(),
        child: Some(child),
        reader: Some(reader),
        seen,
        what: "fim",
        scraper,
    })
}

fn start_inotifywait(dir: &Path) -> Result<Running> {
    let mut child = Command::new("inotifywait")
        .args(["-m", "-r", "-q", "--format", "%e %w%f"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting inotifywait")?;
    let seen = Shared::default();
    let stdout = child.stdout.take().context("inotifywait stdout")?;
    let s = seen.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            inotify_line(&s, &line);
        }
    });
    let stderr = child.stderr.take().context("inotifywait stderr")?;
    // It says "Watches established." on stderr even with -q? Not with -q: wait a moment.
    drop(stderr);
    std::thread::sleep(Duration::from_millis(500));
    Ok(Running {
        audit_lost_before: 0,
        pid: child.id(),
        child: Some(child),
        reader: Some(reader),
        seen,
        what: "inotifywait",
        scraper: None,
    })
}

const AUDIT_LOG: &str = "/var/log/audit/audit.log";
const AUDIT_KEY: &str = "fimbench";

/// The kernel's count of audit records it could not queue (`auditctl -s`: lost).
fn audit_lost() -> u64 {
    Command::new("auditctl")
        .arg("-s")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("lost ")?.trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
}

fn pidof(name: &str) -> Option<u32> {
    let out = Command::new("pidof").arg(name).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// auditd with one watch rule on `dir`; its log is followed by a thread.
fn start_auditd(dir: &Path) -> Result<Running> {
    if pidof("auditd").is_none() {
        crate::run(Command::new("auditd").arg("-s").arg("nochange")).context("starting auditd")?;
        std::thread::sleep(Duration::from_millis(500));
    }
    let pid = pidof("auditd").context("auditd is not running")?;
    let _ = Command::new("auditctl").args(["-D"]).output();
    // Auditing may be off (`auditctl -s`: enabled 0), and the kernel's backlog small (64
    // here; Debian's rules set 8192).
    for args in [["-e", "1"], ["-b", "8192"]] {
        crate::run(Command::new("auditctl").args(args).stdout(Stdio::null()))?;
    }
    crate::run(
        Command::new("auditctl")
            .arg("-w")
            .arg(dir)
            .args(["-p", "wa", "-k", AUDIT_KEY]),
    )?;
    let seen = Shared::default();
    let s = seen.clone();
    let start_len = fs::metadata(AUDIT_LOG).map(|m| m.len()).unwrap_or(0);
    std::thread::spawn(move || {
        use std::io::{Seek, SeekFrom};
        let Ok(mut f) = fs::File::open(AUDIT_LOG) else {
            return;
        };
        use std::os::unix::fs::MetadataExt;
        let _ = f.seek(SeekFrom::Start(start_len));
        let mut ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
        let mut r = BufReader::new(f);
        let mut line = String::new();
        // A PATH record names the file; the SYSCALL record before it says the operation.
        let mut syscall = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    // auditd rotates its log (8 MB by default): follow the new one.
                    if let Ok(m) = fs::metadata(AUDIT_LOG)
                        && m.ino() != ino
                        && let Ok(f) = fs::File::open(AUDIT_LOG)
                    {
                        ino = m.ino();
                        r = BufReader::new(f);
                        continue;
                    }
                    std::thread::sleep(Duration::from_micros(500));
                    continue;
                }
                Ok(_) => {}
            }
            if line.starts_with("type=SYSCALL") {
                if line.contains(AUDIT_KEY) {
                    syscall = line
                        .split_whitespace()
                        .find_map(|f| f.strip_prefix("syscall="))
                        .unwrap_or_default()
                        .to_owned();
                } else {
                    syscall.clear();
                }
                continue;
            }
            if syscall.is_empty()
                || !line.starts_with("type=PATH")
                || line.contains("nametype=PARENT")
            {
                continue;
            }
            let Some(name) = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("name="))
                .map(|n| base(n.trim_matches('"')).to_owned())
            else {
                continue;
            };
            let mut s = lock(&s);
            if name.starts_with("lat") {
                s.latency.entry(name).or_insert_with(Instant::now);
            } else if name == "end" {
                s.end = true;
            } else if name.starts_with('f') || name.starts_with('r') {
                // x86_64: openat 257, rename 82, renameat 264, renameat2 316, chmod 90,
                // fchmodat 268, unlink 87, unlinkat 263.
                let op = match syscall.as_str() {
                    "257" | "2" | "85" => "create",
                    "82" | "264" | "316" => "rename",
                    "90" | "268" | "452" => "chmod",
                    "87" | "263" => "unlink",
                    _ => continue,
                };
                *s.ops.entry(op.to_owned()).or_default() += 1;
                if op == "rename" {
                    // One rename has two PATH records (old and new): count it once.
                    syscall.clear();
                }
            }
        }
    });
    Ok(Running {
        audit_lost_before: audit_lost(),
        child: None,
        reader: None,
        pid,
        seen,
        what: "auditd",
        scraper: None,
    })
}

/// One monitor's run of latency samples and the workload, inside the watched tree.
struct Measured {
    done: Done,
    seen: Seen,
    /// The monitor's CPU seconds during the workload and its catch-up.
    cpu: f64,
    /// It reported the end marker within the limit.
    caught: bool,
    latency: Option<(Duration, Duration)>,
}

impl Measured {
    /// The table row of monitor `monitor`, inside the watched tree: `kinds` are the
    /// operations it is built to report, `lost` says what it lost (from whether it caught up,
    /// and what it saw).
    fn row(
        self,
        monitor: &str,
        files: usize,
        kinds: &[&str],
        lost: impl FnOnce(bool, &Seen) -> String,
    ) -> Row {
        Row {
            monitor: monitor.into(),
            detail: detail(&self.seen),
            place: "inside",
            took: self.done.took,
            reported: Some(reported(&self.seen, files as u64, kinds)),
            lost: lost(self.caught, &self.seen),
            cpu: self.cpu,
            ops: self.done.ops,
            latency: self.latency,
        }
    }
}

impl Running {
    /// Latency samples, then the workload in `dir` until the monitor catches up (at most
    /// `limit`), then stops it.
    fn measure(self, dir: &Path, files: usize, limit: Duration) -> Result<Measured> {
        let latency = latency(dir, &self)?;
        cool();
        let cpu0 = cpu_seconds(self.pid);
        let done = workload(dir, files)?;
        let caught = self.catch_up(dir, limit)?;
        let cpu = cpu_seconds(self.pid) - cpu0;
        let seen = self.stop()?;
        Ok(Measured {
            done,
            seen,
            cpu,
            caught,
            latency,
        })
    }

    /// Waits until the monitor reported the end marker (made after the workload), at most
    /// `limit`.
    fn catch_up(&self, dir: &Path, limit: Duration) -> Result<bool> {
        let end = dir.join("end");
        fs::write(&end, b"end")?;
        let start = Instant::now();
        while start.elapsed() < limit {
            if lock(&self.seen).end {
                let _ = fs::remove_file(&end);
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = fs::remove_file(&end);
        Ok(false)
    }

    /// Stops the monitor and returns everything it reported (its output read to the end).
    fn stop(mut self) -> Result<Seen> {
        let answered = self.scraper.take().map(|(stop, scraper)| {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            scraper.join().unwrap_or(0)
        });
        if self.what == "auditd" {
            // Its log is followed by a thread that never ends: what it read so far, and what
            // the kernel says it lost.
            std::thread::sleep(Duration::from_millis(500));
            let _ = Command::new("auditctl").arg("-D").output();
            let mut seen = std::mem::take(&mut *lock(&self.seen));
            seen.lost = audit_lost().saturating_sub(self.audit_lost_before);
            return Ok(seen);
        }
        if let Some(c) = &mut self.child {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let start = Instant::now();
            while c.try_wait()?.is_none() {
                if start.elapsed() > Duration::from_secs(60) {
                    let _ = c.kill();
                    let _ = c.wait();
                    bail!("{} did not stop within 60 s of SIGINT", self.what);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if answered == Some(0) {
            bail!("fim's metrics endpoint never answered a scrape");
        }
        Ok(std::mem::take(&mut *lock(&self.seen)))
    }
}

/// Write-to-event latency of single writes in `dir`: (p50, p99), or `None` when the
/// monitor reported too few of them.
fn latency(dir: &Path, m: &Running) -> Result<Option<(Duration, Duration)>> {
    let mut sent = Vec::new();
    for i in 0..LATENCY_SAMPLES {
        let name = format!("lat{i}");
        let p = dir.join(&name);
        let t = Instant::now();
        fs::write(&p, b"latency sample")?;
        sent.push((name, t));
        std::thread::sleep(LATENCY_GAP);
    }
    std::thread::sleep(Duration::from_millis(500));
    let seen = lock(&m.seen);
    let mut lat: Vec<Duration> = sent
        .iter()
        .filter_map(|(n, t)| seen.latency.get(n).map(|r| r.saturating_duration_since(*t)))
        .collect();
    drop(seen);
    for (n, _) in &sent {
        let _ = fs::remove_file(dir.join(n));
    }
    if lat.len() < LATENCY_SAMPLES * 9 / 10 {
        return Ok(None);
    }
    lat.sort();
    let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    Ok(Some((at(0.5), at(0.99))))
}

/// One row of the table.
struct Row {
    monitor: String,
    /// Events per operation name.
    detail: String,
    place: &'static str,
    took: Duration,
    reported: Option<(u64, u64)>,
    lost: String,
    cpu: f64,
    ops: u64,
    latency: Option<(Duration, Duration)>,
}

/// Operations reported, capped per operation at the number of files, against what the
/// monitor is built to report (`kinds` of the six operations per file).
fn reported(seen: &Seen, files: u64, kinds: &[&str]) -> (u64, u64) {
    let got = kinds
        .iter()
        .map(|k| seen.ops.get(*k).copied().unwrap_or(0).min(files))
        .sum();
    (got, files * kinds.len() as u64)
}

/// The events per operation name, sorted.
fn detail(seen: &Seen) -> String {
    let mut v: Vec<_> = seen.ops.iter().collect();
    v.sort();
    v.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The benchmark.
pub fn churn() -> Result<()> {
    if !crate::is_root() {
        bail!("the churn benchmark runs fim, auditd and fanotify: run it as root");
    }
    apt_install(&["auditd", "inotify-tools"])?;
    let fim = crate::bench::release_fim()?;
    let files: usize = std::env::var("FIM_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let profile = std::env::var("FIM_BENCH_PROFILE").is_ok_and(|v| v == "1");
    let work = crate::bench::bench_dir().join("churn");
    let _ = fs::remove_dir_all(&work);
    let (inside, outside) = (work.join("inside"), work.join("outside"));
    fs::create_dir_all(&inside)?;
    fs::create_dir_all(&outside)?;
    // `FIM_BENCH_SENSORS=auto,tracepoint` measures only those; `FIM_BENCH_OTHERS=0` skips
    // auditd and inotifywait (while working on fim).
    let sensors = match std::env::var("FIM_BENCH_SENSORS") {
        Ok(list) => list
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Err(_) => sensors(&fim)?,
    };
    let others = std::env::var("FIM_BENCH_OTHERS").map_or(true, |v| v != "0");
    let places: Vec<&str> = match std::env::var("FIM_BENCH_PLACES") {
        Ok(p) if p == "inside" => vec!["inside"],
        Ok(p) if p == "outside" => vec!["outside"],
        _ => vec!["inside", "outside"],
    };
    step(&format!(
        "churn: {files} files x 6 operations; fim sensors here: {}",
        sensors.join(", ")
    ));

    // Warm up, then the unmonitored reference (best of 3).
    workload(&inside, files / 10)?;
    let mut none = Duration::MAX;
    for _ in 0..3 {
        cool();
        let d = workload(&inside, files)?;
        if d.ops != 6 * files as u64 {
            bail!("the workload did {} operations, not {}", d.ops, 6 * files);
        }
        none = none.min(d.took);
    }
    let mut rows = vec![Row {
        monitor: "none".into(),
        detail: String::new(),
        place: "—",
        took: none,
        reported: None,
        lost: "—".into(),
        cpu: 0.0,
        ops: 6 * files as u64,
        latency: None,
    }];

    // `FIM_BENCH_METRICS=on` (the default: fim's own default, its endpoint scraped once a
    // second), `off`, or `both` (each fim run twice, to compare).
    let metrics_modes: Vec<bool> = match std::env::var("FIM_BENCH_METRICS").as_deref() {
        Ok("off") => vec![false],
        Ok("both") => vec![true, false],
        Ok("on") | Err(_) => vec![true],
        Ok(other) => bail!("FIM_BENCH_METRICS={other}: on, off or both"),
    };
    let mut profiled = !profile;
    for sensor in &sensors {
        for &place in &places {
            for &metrics in &metrics_modes {
                let (dir, watch) = if place == "inside" {
                    (&inside, Some(inside.as_path()))
                } else {
                    (&outside, None)
                };
                let monitor = format!(
                    "fim --sensor {sensor}{}",
                    if metrics {
                        ", metrics scraped 1/s"
                    } else {
                        ", metrics off"
                    }
                );
                step(&format!("{monitor}, churn {place} the watched tree"));
                let m = start_fim(&fim, sensor, watch, &work, place, metrics)?;
                let lat = if place == "inside" {
                    latency(dir, &m)?
                } else {
                    None
                };
                let perf = if profiled || place == "outside" {
                    None
                } else {
                    profiled = true;
                    Some(
                        Command::new("perf")
                            .args(["record", "-e", "cpu-clock", "-g", "-o"])
                            .arg(work.join("perf.data"))
                            .args(["-p", &m.pid.to_string()])
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .spawn()
                            .context("perf record")?,
                    )
                };
                cool();
                let cpu0 = cpu_seconds(m.pid);
                let d = workload(dir, files)?;
                let caught = if place == "inside" {
                    m.catch_up(dir, Duration::from_secs(600))?
                } else {
                    std::thread::sleep(Duration::from_millis(500));
                    true
                };
                let cpu = cpu_seconds(m.pid) - cpu0;
                if let Some(mut p) = perf {
                    let _ = Command::new("kill")
                        .args(["-INT", &p.id().to_string()])
                        .status();
                    let _ = p.wait();
                }
                let seen = m.stop()?;
                let detail = detail(&seen);
                let lost = if !caught {
                    "did not catch up in 10 min".to_owned()
                } else if seen.uncounted > 0 {
                    format!(
                        "{} operations + {} gaps of unknown size",
                        seen.lost, seen.uncounted
                    )
                } else if seen.lost > 0 {
                    format!("{} operations", seen.lost)
                } else {
                    "0".to_owned()
                };
                rows.push(Row {
                    monitor: monitor.clone(),
                    detail,
                    place,
                    took: d.took,
                    reported: (place == "inside").then(|| reported(&seen, files as u64, &OPS)),
                    lost,
                    cpu,
                    ops: d.ops,
                    latency: lat,
                });
            }
        }
    }

    if others {
        others_rows(&inside, files, &mut rows)?;
    }
    print_table(files, none, &rows);
    if profile {
        let out = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--percent-limit",
                "1.5",
                "-i",
            ])
            .arg(work.join("perf.data"))
            .args(["--sort", "symbol", "-g", "none"])
            .output()
            .context("perf report")?;
        println!(
            "\nwhere the first fim run's daemon spent its CPU (perf, cpu-clock, symbols over 1.5%):\n{}",
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}

/// auditd and inotifywait on the same workload.
fn others_rows(inside: &Path, files: usize, rows: &mut Vec<Row>) -> Result<()> {
    let inside = inside.to_path_buf();
    step("auditd -w DIR -p wa");
    match start_auditd(&inside) {
        Ok(m) => rows.push(m.measure(&inside, files, Duration::from_secs(60))?.row(
            "auditd `-w DIR -p wa`",
            files,
            &["create", "rename", "chmod", "unlink"],
            |caught, seen| match (caught, seen.lost) {
                (_, n) if n > 0 => format!("{n} records (kernel `lost`)"),
                (true, _) => "0".into(),
                _ => "did not catch up in 60 s".into(),
            },
        )),
        Err(e) => eprintln!("==> xtask: auditd not measured: {e:#}"),
    }

    step("inotifywait -m -r");
    rows.push(
        start_inotifywait(&inside)?
            .measure(&inside, files, Duration::from_secs(600))?
            .row("inotifywait `-m -r`", files, &OPS, |caught, seen| {
                if seen.lost > 0 {
                    format!("{} overflows", seen.lost)
                } else if caught {
                    "0".into()
                } else {
                    "did not catch up".into()
                }
            }),
    );

    Ok(())
}

/// The Markdown table, then each monitor's events per operation.
fn print_table(files: usize, none: Duration, rows: &[Row]) {
    println!(
        "\nchurn: {files} files x (create, write 4 KiB, close, rename, chmod, unlink) = {} operations; \
         unmonitored best of 3: {:.3} s\n",
        6 * files,
        none.as_secs_f64()
    );
    println!(
        "| monitor | churn | workload | slowdown | operations reported / it reports | loss it reported | monitor CPU | µs per operation | write→event p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let rep = r.reported.map_or("—".to_owned(), |(got, of)| {
            format!(
                "{got} / {of} ({:.1}%)",
                100.0 * got as f64 / of.max(1) as f64
            )
        });
        let (p50, p99) = r
            .latency
            .map_or(("—".to_owned(), "—".to_owned()), |(a, b)| {
                (ms(a), ms(b))
            });
        println!(
            "| {} | {} | {:.3} s | {:.2}x | {rep} | {} | {:.2} s | {:.2} | {p50} | {p99} |",
            r.monitor,
            r.place,
            r.took.as_secs_f64(),
            r.took.as_secs_f64() / none.as_secs_f64(),
            r.lost,
            r.cpu,
            r.cpu * 1e6 / r.ops.max(1) as f64,
        );
    }
    println!("\nevents per operation, as each monitor named them:");
    for r in rows.iter().filter(|r| !r.detail.is_empty()) {
        println!("- {} ({}): {}", r.monitor, r.place, r.detail);
    }
}

/// The fim sensors this kernel runs: `auto` and each eBPF tier that loads, and fanotify.
fn sensors(fim: &Path) -> Result<Vec<String>> {
    let mut out = vec!["auto".to_owned()];
    let probe = crate::bench::bench_dir().join("churn-probe");
    let _ = fs::create_dir_all(&probe);
    for tier in ["lsm", "fentry", "tracepoint"] {
        let state = probe.join(format!("state-{tier}"));
        let _ = fs::remove_dir_all(&state);
        let mut c = Command::new(fim)
            .args([
                "run",
                "--metrics-address",
                "off",
                "--rescan-interval",
                "0",
                "--sensor",
                tier,
                "--watch",
            ])
            .arg(&probe)
            .arg("--state-dir")
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = c.stderr.take().context("stderr")?;
        let mut ok = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("baseline built") {
                ok = true;
                break;
            }
        }
        let _ = Command::new("kill")
            .args(["-INT", &c.id().to_string()])
            .status();
        let _ = c.wait();
        if ok {
            out.push(tier.to_owned());
        }
    }
    out.push("fanotify".to_owned());
    let _ = fs::remove_dir_all(&probe);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_finds_action_path_and_gap_counts_without_parsing() {
        let ev = r#"{"@timestamp":"t","event":{"kind":"event","action":"rename","sequence":3},"file":{"path":"/d/r12","name":"r12"},"fim":{"path":{"source":"kernel_object"}}}"#;
        assert_eq!(json_str(ev, "\"action\""), Some("rename"));
        assert_eq!(json_str(ev, "\"path\""), Some("/d/r12"));
        let gap =
            r#"{"event":{"action":"gap"},"fim":{"gap":{"operations":54124,"unknown_more":true}}}"#;
        assert_eq!(json_u64(gap, "\"gap\"", "\"operations\""), Some(54124));
        let seen = Shared::default();
        fim_line(&seen, ev);
        fim_line(&seen, gap);
        fim_line(&seen, "not json");
        let s = lock(&seen);
        assert_eq!(
            (s.ops.get("rename"), s.lost, s.uncounted),
            (Some(&1), 54124, 1)
        );
    }
}
