//! `cargo xtask bench <what>`: benchmarks that prove the speed and memory targets. They print
//! numbers (and whether the target is met); they are never part of the test suite.
//!
//! - `hash`: fim's SHA-256 seam against `openssl speed -evp sha256` on this CPU.
//! - `scan`: `fim scan init` against `aide --init -W 2` on a generated tree of 50,000 files
//!   (about 1.7 GB), warm cache, best of three runs each.
//! - `memory`: resident memory of the daemon with a baseline of 1,000,000 entries (target:
//!   peak under 48 MiB at first start and at restart), then idle on the built-in watch set
//!   in every sensor this kernel runs (target: under 24 MiB).

use std::{
    fs,
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{apt_install, cargo, output, root, run, step};

/// Seeded xorshift, so every machine generates the same tree.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Exponentially distributed with the given mean.
    fn exp(&mut self, mean: f64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (-mean * (1.0 - u).ln()) as u64
    }
}

pub(crate) fn bench_dir() -> PathBuf {
    // Canonical: AIDE matches rules against canonical paths and silently scans nothing
    // when the rule has a `..` in it.
    let dir = root().join("target/bench");
    let _ = fs::create_dir_all(&dir);
    fs::canonicalize(&dir).unwrap_or(dir)
}

pub(crate) fn release_fim() -> Result<PathBuf> {
    step("building fim (release)");
    cargo(&["build", "--release", "-p", "fim-userspace"])?;
    Ok(root().join("target/release/fim"))
}

/// Each sink's events per second and CPU time per event (`fim-userspace/examples/sink_speed.rs`).
pub fn sinks() -> Result<()> {
    step("building the sink benchmark (release)");
    cargo(&[
        "build",
        "--release",
        "-p",
        "fim-userspace",
        "--example",
        "sink_speed",
    ])?;
    let bin = root().join("target/release/examples/sink_speed");
    let status = Command::new(&bin)
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!("{} failed: {status}", bin.display());
    }
    Ok(())
}

/// fim's SHA-256 against OpenSSL's, one core each, 16 KiB blocks.
pub fn hash() -> Result<()> {
    apt_install(&["openssl"])?;
    step("building the hash benchmark (release)");
    cargo(&[
        "build",
        "--release",
        "-p",
        "fim-core",
        "--example",
        "hash_speed",
    ])?;
    // OpenSSL takes `OPENSSL_ia32cap` from the environment: masking the SHA extension bit
    // measures both on the AVX2/SSSE3 path that CPUs without SHA-NI take.
    const NO_SHA_NI: &str = "~0x20000000000000000000";
    let cpu = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let sha_ni = cpu.split_whitespace().any(|f| f == "sha_ni");
    println!("cpu: SHA-NI {}", if sha_ni { "present" } else { "absent" });
    let mut worst = f64::MAX;
    for (label, mask) in [("native", None), ("SHA-NI masked", Some(NO_SHA_NI))] {
        let with_mask = |cmd: &mut Command| {
            if let Some(m) = mask {
                cmd.env("OPENSSL_ia32cap", m);
            } else {
                cmd.env_remove("OPENSSL_ia32cap");
            }
        };
        let mut ours_cmd = Command::new(root().join("target/release/examples/hash_speed"));
        ours_cmd.arg("3");
        with_mask(&mut ours_cmd);
        let ours: f64 = output(&mut ours_cmd)
            .context("running hash_speed")?
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .context("parsing hash_speed output")?;
        let mut theirs_cmd = Command::new("openssl");
        theirs_cmd.args([
            "speed", "-seconds", "3", "-bytes", "16384", "-evp", "sha256",
        ]);
        with_mask(&mut theirs_cmd);
        // Last line: "sha256   1931509.76k" (thousands of bytes per second).
        let theirs: f64 = output(&mut theirs_cmd)
            .context("running openssl speed")?
            .lines()
            .last()
            .and_then(|l| l.split_whitespace().last())
            .and_then(|k| k.trim_end_matches('k').parse::<f64>().ok())
            .map(|k| k * 1000.0)
            .context("parsing openssl speed output")?;
        let ratio = ours / theirs;
        worst = worst.min(ratio);
        println!(
            "{label:>14}: fim {:>6.0} MB/s, openssl speed -evp sha256 {:>6.0} MB/s, ratio {ratio:.3}",
            ours / 1e6,
            theirs / 1e6
        );
    }
    println!(
        "target: at least OpenSSL's speed (ratio >= 0.95, allowing for noise): {}",
        if worst >= 0.95 { "met" } else { "NOT met" }
    );
    Ok(())
}

/// Generates the scan tree once: 50,000 files in 3,500 directories, exponentially
/// distributed sizes with a 34 KB mean (about 1.7 GB), contents from a random pool.
fn scan_tree() -> Result<PathBuf> {
    let tree = bench_dir().join("tree");
    let marker = bench_dir().join("tree.done");
    if marker.exists() {
        return Ok(tree);
    }
    step("generating the benchmark tree (50,000 files, ~1.7 GB)");
    let _ = fs::remove_dir_all(&tree);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let pool: Vec<u8> = (0..(1 << 20) + 65_536).map(|_| rng.next() as u8).collect();
    let mut total = 0u64;
    for i in 0..50_000u64 {
        let dir = tree.join(format!("d{:03}/s{}", i % 500, i % 7));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let size = rng.exp(34_000.0);
        let mut f = fs::File::create(dir.join(format!("f{i:06}")))?;
        let mut left = size;
        while left > 0 {
            let off = (rng.next() % (1 << 20)) as usize;
            let n = left.min(65_536) as usize;
            f.write_all(&pool[off..off + n])?;
            left -= n as u64;
        }
        total += size;
    }
    fs::write(&marker, total.to_string())?;
    println!("tree: 50000 files, {:.2} GB", total as f64 / 1e9);
    Ok(tree)
}

/// Runs `cmd`, checks it succeeded and that its output has `label` followed by a count of
/// at least `min` (so a run that scanned nothing is never timed); returns how long it took.
fn time(cmd: &mut Command, label: &str, min: u64) -> Result<Duration> {
    let start = Instant::now();
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    let took = start.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{cmd:?} failed: {}\n{text}", out.status);
    }
    let count = text
        .split(label)
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .find(|w| !w.is_empty())
        })
        .and_then(|n| n.parse::<u64>().ok());
    match count {
        Some(n) if n >= min => Ok(took),
        _ => bail!("{cmd:?} did not report {label}>= {min}:\n{text}"),
    }
}

fn best_of(n: usize, mut once: impl FnMut() -> Result<Duration>) -> Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..n {
        best = best.min(once()?);
    }
    Ok(best)
}

/// `fim scan init` against `aide --init -W 2`, warm cache.
pub fn scan() -> Result<()> {
    apt_install(&["aide"])?;
    let fim = release_fim()?;
    let tree = scan_tree()?;
    let work = bench_dir().join("scan");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let db = work.join("aide.db.new");
    // "SHA-256 only": the one digest; the lean set is AIDE's usual metadata, the full set
    // also reads ACLs, xattrs and capabilities as fim does.
    let configs = [
        ("lean", "p+i+n+u+g+s+m+c+sha256"),
        (
            "same attributes as fim",
            "p+i+n+u+g+s+m+c+acl+xattrs+caps+ftype+sha256",
        ),
    ];
    let state = work.join("state");
    let fim_once = || {
        time(
            Command::new(&fim)
                .args(["scan", "init", "--watch"])
                .arg(&tree)
                .arg("--state-dir")
                .arg(&state),
            "baseline of ",
            54_001,
        )
    };
    step("warming the page cache (and letting fresh files reach the disk)");
    run(&mut Command::new("sync"))?;
    fim_once()?;
    let ours = best_of(3, fim_once)?;
    println!(
        "fim scan init:                      {:>6.2} s",
        ours.as_secs_f64()
    );
    let mut worst_ratio = f64::MAX;
    for (name, attrs) in configs {
        let conf = work.join("aide.conf");
        fs::write(
            &conf,
            format!(
                "database_out=file:{}\ngzip_dbout=no\n{} {attrs}\n",
                db.display(),
                tree.display()
            ),
        )?;
        let aide = best_of(3, || {
            let _ = fs::remove_file(&db);
            time(
                Command::new("aide")
                    .args(["--init", "-W", "2", "-c"])
                    .arg(&conf),
                "Number of entries:",
                54_001,
            )
        })?;
        let ratio = aide.as_secs_f64() / ours.as_secs_f64();
        worst_ratio = worst_ratio.min(ratio);
        println!(
            "aide --init -W 2 ({name}): {:>6.2} s  -> fim is {ratio:.1}x faster",
            aide.as_secs_f64()
        );
    }
    println!(
        "target: at least 4x faster than aide: {}",
        if worst_ratio >= 4.0 { "met" } else { "NOT met" }
    );
    Ok(())
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Starts `fim run` on `watch` (the built-in watch set when `None`) with its own state
/// directory, scheduled rescans off, events discarded and the log in `log`.
fn spawn_daemon(
    fim: &std::path::Path,
    sensor: &str,
    watch: Option<&std::path::Path>,
    state: &std::path::Path,
    log: &std::path::Path,
) -> Result<std::process::Child> {
    let mut cmd = Command::new(fim);
    // The metrics endpoint on a port of its own (a fim already running holds 9478).
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    cmd.args(["run", "--rescan-interval", "0", "--sensor", sensor])
        .arg("--metrics-address")
        .arg(format!("127.0.0.1:{port}"));
    if let Some(watch) = watch {
        cmd.arg("--watch").arg(watch);
    }
    cmd.arg("--state-dir")
        .arg(state)
        .stdout(Stdio::null())
        .stderr(fs::File::create(log)?)
        .spawn()
        .context("starting fim")
}

/// Creates `n` small files (once) for the memory benchmark.
fn memory_tree(n: u64) -> Result<PathBuf> {
    let tree = bench_dir().join("million");
    let marker = bench_dir().join("million.done");
    if marker.exists() {
        return Ok(tree);
    }
    step(&format!("creating {n} small files (once; a few minutes)"));
    let _ = fs::remove_dir_all(&tree);
    for i in 0..n {
        let dir = tree.join(format!("{:04}", i / 1000));
        if i % 1000 == 0 {
            fs::create_dir_all(&dir)?;
        }
        fs::write(dir.join(format!("{:03}", i % 1000)), i.to_le_bytes())?;
    }
    fs::write(&marker, n.to_string())?;
    Ok(tree)
}

/// The daemon's resident memory with a 1,000,000-entry baseline: while building it, and
/// while reconciling it after a restart.
pub fn memory() -> Result<()> {
    if !crate::is_root() {
        bail!("the memory benchmark runs the daemon: run it as root");
    }
    let fim = release_fim()?;
    let tree = memory_tree(1_000_000)?;
    let state = bench_dir().join("memory-state");
    let _ = fs::remove_dir_all(&state);
    for phase in [
        "first start (builds the baseline)",
        "restart (reconciles it)",
    ] {
        step(phase);
        let log = bench_dir().join("memory.log");
        let mut child = spawn_daemon(&fim, "auto", Some(&tree), &state, &log)?;
        let pid = child.id();
        let start = Instant::now();
        let mut peak_rss = 0;
        let done = loop {
            std::thread::sleep(Duration::from_millis(200));
            peak_rss = peak_rss.max(status_kib(pid, "VmRSS:").unwrap_or(0));
            let text = fs::read_to_string(&log).unwrap_or_default();
            if let Some(l) = text
                .lines()
                .find(|l| l.contains("baseline built") || l.contains("reconciled:"))
            {
                break l.to_owned();
            }
            if start.elapsed() > Duration::from_secs(1800) || child.try_wait()?.is_some() {
                let _ = child.kill();
                bail!("fim did not finish its scan:\n{text}");
            }
        };
        let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
        std::thread::sleep(Duration::from_secs(2));
        let settled = status_kib(pid, "VmRSS:").unwrap_or(0);
        interrupt(pid);
        let _ = child.wait();
        println!("{phase}: {}", done.trim());
        println!(
            "  resident: peak {:.1} MiB (VmHWM {:.1} MiB), after the scan {:.1} MiB; target < 48 MiB: {}",
            peak_rss as f64 / 1024.0,
            hwm as f64 / 1024.0,
            settled as f64 / 1024.0,
            if hwm < 48 * 1024 { "met" } else { "NOT met" }
        );
    }
    idle()
}

/// How long an idle daemon runs after its start-up scan before its memory is read.
const IDLE_SETTLE: Duration = Duration::from_secs(15);

/// The daemon's resident memory idle on the built-in watch set, in each sensor this kernel
/// runs (a sensor the kernel refuses is named, with the daemon's reason).
fn idle() -> Result<()> {
    let fim = release_fim()?;
    println!("idle on the built-in watch set, {IDLE_SETTLE:?} after the start-up scan:");
    for sensor in ["auto", "lsm", "fentry", "tracepoint", "fanotify"] {
        let state = bench_dir().join(format!("idle-state-{sensor}"));
        let _ = fs::remove_dir_all(&state);
        let log = bench_dir().join(format!("idle-{sensor}.log"));
        let mut child = spawn_daemon(&fim, sensor, None, &state, &log)?;
        if wait_started(&mut child, &log, Duration::from_secs(600)).is_err() {
            let _ = child.wait();
            let text = fs::read_to_string(&log).unwrap_or_default();
            let reason = text.lines().last().unwrap_or("no log");
            println!("  {sensor:<10} not run here: {reason}");
            continue;
        }
        std::thread::sleep(IDLE_SETTLE);
        let pid = child.id();
        let rss = status_kib(pid, "VmRSS:").unwrap_or(0);
        let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
        interrupt(pid);
        let _ = child.wait();
        println!(
            "  {sensor:<10} resident {:.1} MiB (start-up peak {:.1} MiB); target < 24 MiB: {}",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0,
            if rss < 24 * 1024 { "met" } else { "NOT met" }
        );
    }
    Ok(())
}

/// Waits until the daemon `child` logs (to `log`) that its baseline is built, at most
/// `limit`; kills it and fails with its log otherwise.
pub(crate) fn wait_started(
    child: &mut std::process::Child,
    log: &std::path::Path,
    limit: Duration,
) -> Result<()> {
    let start = Instant::now();
    while !fs::read_to_string(log)
        .unwrap_or_default()
        .contains("baseline built")
    {
        if start.elapsed() > limit || child.try_wait()?.is_some() {
            let _ = child.kill();
            bail!(
                "fim did not start:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// SIGINT to a child, through `kill(1)` so xtask needs no libc binding.
fn interrupt(pid: u32) {
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
}

/// The write-heavy workload: create, write 4 KiB, close, unlink, `n` times in `dir`.
fn churn(dir: &std::path::Path, n: usize) -> Result<Duration> {
    let block = [7u8; 4096];
    let start = Instant::now();
    for i in 0..n {
        let p = dir.join(format!("c{i}"));
        fs::write(&p, block)?;
        fs::remove_file(&p)?;
    }
    Ok(start.elapsed())
}

/// CPU seconds (user + system) a process has used so far.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (indices 11 and 12 after the command name).
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// A fanotify group with per-directory inode marks on `dirs` only, drained by a thread:
/// the alternative to filesystem marks, measured without the rest of the daemon.
fn per_directory_marks(
    dirs: &[PathBuf],
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<(i32, std::thread::JoinHandle<u64>)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: plain syscalls on descriptors we own.
    let fd = unsafe {
        libc::fanotify_init(
            libc::FAN_CLASS_NOTIF
                | libc::FAN_CLOEXEC
                | libc::FAN_NONBLOCK
                | libc::FAN_REPORT_DFID_NAME_TARGET,
            libc::O_RDONLY as u32,
        )
    };
    if fd < 0 {
        bail!("fanotify_init: {}", std::io::Error::last_os_error());
    }
    for d in dirs {
        let c = std::ffi::CString::new(d.as_os_str().as_bytes())?;
        let mask = libc::FAN_CREATE
            | libc::FAN_DELETE
            | libc::FAN_RENAME
            | libc::FAN_ATTRIB
            | libc::FAN_MODIFY
            | libc::FAN_CLOSE_WRITE
            | libc::FAN_ONDIR
            | libc::FAN_EVENT_ON_CHILD;
        // SAFETY: valid descriptor and path.
        let r = unsafe {
            libc::fanotify_mark(fd, libc::FAN_MARK_ADD, mask, libc::AT_FDCWD, c.as_ptr())
        };
        if r < 0 {
            bail!(
                "fanotify_mark {}: {}",
                d.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let mut bytes = 0u64;
        // Non-blocking with a stop flag: closing a descriptor does not wake a blocked read.
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            // SAFETY: valid descriptor and buffer.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                bytes += n as u64;
            } else {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        bytes
    });
    Ok((fd, reader))
}

/// fanotify filesystem marks (the daemon, filtering in userspace) against per-directory
/// marks, on a write-heavy workload outside the watched roots; eBPF for comparison, and
/// `auto` (on a tracepoint-only kernel: both, fanotify witnessing the tracepoint tier).
pub fn marks() -> Result<()> {
    if !crate::is_root() {
        bail!("the marks benchmark runs the daemon and fanotify: run it as root");
    }
    let fim = release_fim()?;
    let work = bench_dir().join("marks");
    let _ = fs::remove_dir_all(&work);
    let (watched, outside) = (work.join("watched"), work.join("outside"));
    fs::create_dir_all(watched.join("sub"))?;
    fs::create_dir_all(&outside)?;
    const N: usize = 20_000;
    let best = |f: &mut dyn FnMut() -> Result<Duration>| -> Result<Duration> {
        let mut b = Duration::MAX;
        for _ in 0..3 {
            b = b.min(f()?);
        }
        Ok(b)
    };
    churn(&outside, N)?;
    let none = best(&mut || churn(&outside, N))?;
    println!(
        "workload: {N} x (create, write 4 KiB, close, unlink) outside the watched root, best of 3"
    );
    println!(
        "  unmonitored:                       {:>6.3} s",
        none.as_secs_f64()
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (fd, reader) = per_directory_marks(&[watched.clone(), watched.join("sub")], stop.clone())?;
    let per_dir = best(&mut || churn(&outside, N))?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = reader.join();
    // SAFETY: our own descriptor, no longer read.
    unsafe { libc::close(fd) };
    println!(
        "  per-directory marks (raw group):   {:>6.3} s  ({:.2}x)",
        per_dir.as_secs_f64(),
        per_dir.as_secs_f64() / none.as_secs_f64()
    );

    for sensor in ["fanotify", "ebpf", "auto"] {
        let state = work.join(format!("state-{sensor}"));
        let log = work.join(format!("{sensor}.log"));
        let mut child = spawn_daemon(&fim, sensor, Some(&watched), &state, &log)?;
        wait_started(&mut child, &log, Duration::from_secs(60))?;
        let cpu_before = cpu_seconds(child.id());
        let took = best(&mut || churn(&outside, N))?;
        std::thread::sleep(Duration::from_millis(300));
        let cpu = cpu_seconds(child.id()) - cpu_before;
        interrupt(child.id());
        let _ = child.wait();
        let label = match sensor {
            "fanotify" => "filesystem mark (fim, fanotify):",
            "ebpf" => "in-kernel filter (fim, ebpf):   ",
            _ => "both (fim, auto):               ",
        };
        println!(
            "  {label}   {:>6.3} s  ({:.2}x), daemon CPU {cpu:.2} s for 3 runs",
            took.as_secs_f64(),
            took.as_secs_f64() / none.as_secs_f64()
        );
    }
    Ok(())
}
