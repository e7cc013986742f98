//! `cargo xtask matrix` (also the last stage of `cargo xtask test`): the kernel matrix.
//! Boots Debian's 6.1 and 6.12 cloud kernels under QEMU (TCG, hard timeout) with a minimal
//! initramfs holding busybox, the release `fim` (the eBPF object is inside it) with the
//! shared libraries it links, and the privileged test binary built static (musl), and runs in each guest the eBPF
//! scenario suite once per tier (LSM, fentry, tracepoint: [`RUNS`]), the tier-choice tests,
//! and the fanotify scenarios. Results come back over the serial console (cloud kernels
//! have no 9p); a run or a guest that does not report is a failure.
//!
//! Kernel packages are fetched with `apt-get download` into `target/matrix/cache` once.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{apt_install, cargo, output, root, run, step};

/// Debian packages the matrix needs on the host.
const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "e2fsprogs",
    "xz-utils",
];
/// A guest that has not powered off by then has failed (the 6.12 guest takes about 17
/// minutes on a 2-vCPU host under TCG).
const GUEST_TIMEOUT: Duration = Duration::from_secs(1800);

/// One run of the privileged test binary inside each guest.
struct TestRun {
    /// Name in the serial log.
    label: &'static str,
    /// The eBPF tier the scenarios force (`FIM_TEST_TIER`).
    tier: &'static str,
    /// libtest filters.
    filter: &'static str,
}

/// The scenario suite per tier, then the fanotify sensor's. Debian's cloud kernels have
/// `bpf` in their default LSM list, so the best tier there is LSM (`FIM_TEST_BEST_TIER`).
const RUNS: &[TestRun] = &[
    TestRun {
        label: "lsm",
        tier: "lsm",
        filter: "ops:: volume:: tiers:: exact::sensor_ebpf_tier:: config::sensor_ebpf_tier::",
    },
    TestRun {
        label: "fentry",
        tier: "fentry",
        filter: "ops:: volume:: exact::sensor_ebpf_tier:: config::sensor_ebpf_tier::",
    },
    TestRun {
        label: "tracepoint",
        tier: "tracepoint",
        filter: "ops:: volume:: exact::sensor_ebpf_tier:: config::sensor_ebpf_tier::",
    },
    TestRun {
        label: "fanotify",
        tier: "tracepoint",
        filter: "fanotify::sensor_fanotify:: exact::sensor_fanotify:: config::sensor_fanotify::",
    },
];
const GUEST_BEST_TIER: &str = "lsm";

fn matrix_dir() -> PathBuf {
    root().join("target/matrix")
}

/// The newest cloud kernel package of a line: "6.1" or "6.12".
fn kernel_package(line: &str) -> Result<String> {
    if line == "6.12" {
        // The meta package depends on the newest 6.12 image.
        let deps =
            output(Command::new("apt-cache").args(["depends", "linux-image-6.12-cloud-amd64"]))
                .context("apt-cache depends")?;
        return deps
            .lines()
            .find_map(|l| l.trim().strip_prefix("Depends: "))
            .map(str::to_owned)
            .context("no 6.12 cloud kernel in the package index");
    }
    let found = output(Command::new("apt-cache").args([
        "search",
        "--names-only",
        &format!("^linux-image-{line}\\.0-[0-9]+-cloud-amd64$"),
    ]))
    .context("apt-cache search")?;
    let mut names: Vec<(u32, String)> = found
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| {
            let abi = n
                .strip_prefix(&format!("linux-image-{line}.0-"))?
                .strip_suffix("-cloud-amd64")?
                .parse()
                .ok()?;
            Some((abi, n.to_owned()))
        })
        .collect();
    names.sort();
    names
        .pop()
        .map(|(_, n)| n)
        .with_context(|| format!("no {line} cloud kernel in the package index"))
}

/// Downloads (once) and unpacks a kernel package; returns (vmlinuz, unpacked root).
fn kernel(line: &str) -> Result<(PathBuf, PathBuf)> {
    let package = kernel_package(line)?;
    let cache = matrix_dir().join("cache");
    fs::create_dir_all(&cache)?;
    let have = fs::read_dir(&cache)?.flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with(&format!("{package}_"))
    });
    if !have {
        step(&format!("downloading {package}"));
        run(Command::new("apt-get")
            .arg("download")
            .arg(&package)
            .current_dir(&cache))?;
    }
    let deb = fs::read_dir(&cache)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .context("downloaded package not found")?;
    let unpacked = matrix_dir().join(&package);
    if !unpacked.join("boot").exists() {
        fs::create_dir_all(&unpacked)?;
        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked))?;
    }
    let vmlinuz = fs::read_dir(unpacked.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("no vmlinuz in the package")?;
    Ok((vmlinuz, unpacked))
}

/// Target of the guests' test binary: static (musl), so it needs nothing in the initramfs.
const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

/// The privileged test binary, built static without running it.
fn test_binary() -> Result<PathBuf> {
    // From the repository root, so rustup acts on the pinned toolchain.
    let installed =
        output(
            Command::new("rustup")
                .current_dir(root())
                .args(["target", "list", "--installed"]),
        )
        .unwrap_or_default();
    if !installed.lines().any(|l| l.trim() == STATIC_TARGET) {
        step(&format!(
            "installing the {STATIC_TARGET} target (static test binary)"
        ));
        run(Command::new("rustup")
            .current_dir(root())
            .args(["target", "add", STATIC_TARGET]))?;
    }
    let out = output(Command::new("cargo").current_dir(root()).args([
        "test",
        "-p",
        "fim-tests",
        "--test",
        "privileged",
        "--target",
        STATIC_TARGET,
        "--no-run",
        "--message-format=json",
    ]))
    .context("building the static test binary")?;
    out.lines()
        .filter(|l| l.contains("\"name\":\"privileged\""))
        .filter_map(|l| l.split("\"executable\":\"").nth(1))
        .filter_map(|r| r.split('"').next())
        .map(PathBuf::from)
        .next_back()
        .context("cargo did not report the privileged test binary")
}

/// Shared libraries (and the loader) a dynamic executable needs, from `ldd`.
fn libraries(exe: &Path) -> Result<Vec<PathBuf>> {
    let text = output(Command::new("ldd").arg(exe)).context("ldd")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => l.split_whitespace().next(),
            }
        })
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .collect())
}

fn initramfs(unpacked: &Path, fim: &Path, tests: &Path, out: &Path) -> Result<()> {
    let dir = out.with_extension("d");
    let _ = fs::remove_dir_all(&dir);
    for d in ["bin", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(dir.join(d))?;
    }
    fs::copy("/bin/busybox", dir.join("bin/busybox"))?;
    for applet in [
        "sh",
        "mount",
        "mkdir",
        "insmod",
        "losetup",
        "poweroff",
        "sha256sum",
        "cat",
        "echo",
    ] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet))?;
    }
    fs::copy(fim, dir.join("fim"))?;
    fs::copy(tests, dir.join("privileged"))?;
    // The test binary is static; the daemon links glibc and libcrypto, copied beside it.
    {
        let exe = fim;
        for lib in libraries(exe)? {
            let dest = dir.join(lib.strip_prefix("/").unwrap_or(&lib));
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::copy(&lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
        }
    }
    // /tmp is ext4 on a loop device: tmpfs in 6.1 has no user xattrs.
    let loop_ko = walk_find(&unpacked.join("lib/modules"), "loop.ko")?
        .context("no loop module in the kernel package")?;
    if loop_ko.extension().is_some_and(|e| e == "xz") {
        let raw = Command::new("xz").arg("-dc").arg(&loop_ko).output()?;
        fs::write(dir.join("loop.ko"), raw.stdout)?;
    } else {
        fs::copy(&loop_ko, dir.join("loop.ko"))?;
    }
    // FIM_MATRIX_FILTER and FIM_MATRIX_REPEAT: for chasing a rare failure in one guest.
    let filter_override = std::env::var("FIM_MATRIX_FILTER").ok();
    let repeat = repeats()?;
    let runs: String = selected_runs()
        .flat_map(|r| std::iter::repeat_n(r, repeat))
        .map(|r| {
            format!(
                "echo MATRIX-RUN: {label}\n\
                 FIM_BIN=/fim CI=true FIM_TEST_TIME_SCALE=10 FIM_TEST_TIER={tier} \
                 FIM_TEST_BEST_TIER={GUEST_BEST_TIER} /privileged --test-threads 2 {filter} 2>&1\n\
                 echo \"MATRIX-EXIT: {label} $?\"\n",
                label = r.label,
                tier = r.tier,
                filter = filter_override.as_deref().unwrap_or(r.filter)
            )
        })
        .collect();
    let img = dir.join("tmp.img");
    // Room (and inodes) for the 20,000-file overflow scenario, twice at once.
    fs::File::create(&img)?.set_len(160 << 20)?;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-N", "120000"])
        .arg(&img))?;
    fs::write(
        dir.join("init"),
        format!(
            "#!/bin/sh\nexport PATH=/bin\n\
             mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev\n\
             mount -t tracefs nodev /sys/kernel/tracing; mount -t securityfs none /sys/kernel/security\n\
             mount -t bpf bpf /sys/fs/bpf\n\
             insmod /loop.ko; losetup /dev/loop0 /tmp.img && mount -t ext4 /dev/loop0 /tmp\n\
             mkdir -p /dev/shm && mount -t tmpfs shm /dev/shm\n\
             echo \"MATRIX-KERNEL: $(cat /proc/sys/kernel/osrelease) lsm=$(cat /sys/kernel/security/lsm)\"\n\
             cd /tmp\n\
             {runs}\
             echo MATRIX-DONE\n\
             poweroff -f\n"
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.join("init"), fs::Permissions::from_mode(0o755))?;
    run(Command::new("sh").arg("-c").arg(format!(
        "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
        dir.display(),
        out.display()
    )))?;
    fs::remove_dir_all(&dir)?;
    Ok(())
}

fn walk_find(dir: &Path, prefix: &str) -> Result<Option<PathBuf>> {
    for e in fs::read_dir(dir)?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(found) = walk_find(&p, prefix)? {
                return Ok(Some(found));
            }
        } else if p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// The runs `FIM_MATRIX_RUNS` (comma-separated labels) selects; all by default. For
/// developers iterating on one tier; `cargo xtask test` runs them all.
fn selected_runs() -> impl Iterator<Item = &'static TestRun> {
    let only = std::env::var("FIM_MATRIX_RUNS").ok();
    RUNS.iter().filter(move |r| {
        only.as_ref()
            .is_none_or(|o| o.split(',').any(|l| l.trim() == r.label))
    })
}

/// The kernels `FIM_MATRIX_KERNELS` (comma-separated lines) selects; 6.1 and 6.12 by default.
fn selected_kernels() -> Vec<String> {
    std::env::var("FIM_MATRIX_KERNELS")
        .map(|k| k.split(',').map(|l| l.trim().to_owned()).collect())
        .unwrap_or_else(|_| vec!["6.1".to_owned(), "6.12".to_owned()])
}

/// What one guest reported for one run: its libtest counts, or nothing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RunResult {
    /// `test result:` line seen and the run exited 0.
    pub ok: bool,
    /// Tests passed.
    pub passed: u64,
    /// Tests failed.
    pub failed: u64,
}

/// How many times each run goes in one guest (`FIM_MATRIX_REPEAT`, 1 by default).
fn repeats() -> Result<usize> {
    match std::env::var("FIM_MATRIX_REPEAT") {
        Ok(n) => match n.parse() {
            Ok(k) if k > 0 => Ok(k),
            _ => bail!("FIM_MATRIX_REPEAT={n}: not a positive count"),
        },
        Err(_) => Ok(1),
    }
}

/// The `repeat` results labelled `label`, added up; nothing when fewer reported. Pure.
fn combined(got: &[(String, RunResult)], label: &str, repeat: usize) -> Option<RunResult> {
    let mine: Vec<&RunResult> = got
        .iter()
        .filter(|(l, _)| l == label)
        .map(|(_, r)| r)
        .collect();
    (mine.len() >= repeat).then(|| RunResult {
        ok: mine.iter().all(|r| r.ok),
        passed: mine.iter().map(|r| r.passed).sum(),
        failed: mine.iter().map(|r| r.failed).sum(),
    })
}

/// What libtest printed for each failed test (its `---- name stdout ----` section), so the
/// matrix's own output says why, not only which. Long lines are cut. Pure.
fn failure_reports(log: &str) -> Vec<String> {
    const WIDTH: usize = 1500;
    let mut out = Vec::new();
    let mut inside = false;
    for line in log.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("---- ") && line.ends_with(" ----") {
            inside = true;
        } else if inside && (line.starts_with("failures:") || line.starts_with("test result: ")) {
            inside = false;
            continue;
        }
        if inside && !line.trim().is_empty() && !line.trim_start().starts_with("at /rustc/") {
            let cut = line
                .char_indices()
                .nth(WIDTH)
                .map_or(line.len(), |(i, _)| i);
            out.push(line[..cut].to_owned());
        }
    }
    out
}

/// Splits a guest's serial log into the result of each run in [`RUNS`] order. Pure.
fn results(log: &str) -> Vec<(String, RunResult)> {
    let mut out: Vec<(String, RunResult)> = Vec::new();
    // Markers are searched inside lines: the console may prefix them with escape codes.
    let after = |line: &'_ str, marker: &str| -> Option<String> {
        line.find(marker)
            .map(|i| line[i + marker.len()..].to_owned())
    };
    for line in log.lines() {
        if let Some(label) = after(line, "MATRIX-RUN: ") {
            out.push((label.trim().to_owned(), RunResult::default()));
        } else if let Some(rest) = after(line, "test result: ")
            && let Some((_, r)) = out.last_mut()
        {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|p| {
                        p.trim()
                            .trim_start_matches("ok. ")
                            .trim_start_matches("FAILED. ")
                            .strip_suffix(word)
                    })
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            r.passed += count(" passed");
            r.failed += count(" failed");
            r.ok = rest.starts_with("ok.");
        } else if let Some(rest) = after(line, "MATRIX-EXIT: ")
            && let Some((label, r)) = out.last_mut()
        {
            r.ok &= rest.trim() == format!("{label} 0") && r.passed > 0;
        }
    }
    out
}

/// Boots one guest and returns its serial log.
fn boot(vmlinuz: &Path, initrd: &Path, log: &Path) -> Result<String> {
    let start = Instant::now();
    let status = Command::new("timeout")
        .arg(GUEST_TIMEOUT.as_secs().to_string())
        .args([
            "qemu-system-x86_64",
            "-accel",
            // One host thread for both vCPUs: with multi-threaded TCG, a CPU can run code
            // another CPU is patching with int3 (static keys flip each time a daemon attaches
            // or detaches a syscall tracepoint), and the guest oopses in
            // syscall_trace_enter ("Oops: int3"). Seen once on 6.12 in the fentry run.
            "tcg,thread=single",
            "-m",
            "2G",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdout(fs::File::create(log)?)
        .stderr(std::process::Stdio::null())
        .status()
        .context("starting qemu")?;
    let text = String::from_utf8_lossy(&fs::read(log)?).into_owned();
    if !text.contains("MATRIX-DONE") {
        eprintln!(
            "guest did not finish ({status}, {:.0} s)",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(text)
}

/// Runs the matrix; fails when any run on any kernel fails or does not report. Returns the
/// tests passed and failed over all guests.
pub fn matrix() -> Result<(u64, u64)> {
    apt_install(PACKAGES)?;
    step("building fim (release) and the test binary");
    cargo(&["build", "--release", "-p", "fim-userspace"])?;
    let fim = root().join("target/release/fim");
    let tests = test_binary()?;
    let (mut passed, mut failed_tests) = (0, 0);
    let mut failed = Vec::new();
    let mut guests = Vec::new();
    for line in selected_kernels() {
        let (vmlinuz, unpacked) = kernel(&line)?;
        let initrd = matrix_dir().join(format!("initramfs-{line}.cpio.gz"));
        initramfs(&unpacked, &fim, &tests, &initrd)?;
        let log = matrix_dir().join(format!("serial-{line}.log"));
        guests.push((line, vmlinuz, initrd, log));
    }
    // Each guest runs on one host thread (`tcg,thread=single`): on this 2-core host the
    // guests run side by side unless FIM_MATRIX_SERIAL is set.
    let serial = std::env::var_os("FIM_MATRIX_SERIAL").is_some();
    step(&format!(
        "booting {} guests under QEMU (TCG){}",
        guests.len(),
        if serial {
            ", one after the other"
        } else {
            ", side by side"
        }
    ));
    let boot_one = |(_, vmlinuz, initrd, log): &(String, PathBuf, PathBuf, PathBuf)| {
        let start = Instant::now();
        (boot(vmlinuz, initrd, log), start.elapsed())
    };
    let outcomes: Vec<(Result<String>, std::time::Duration)> = if serial {
        guests.iter().map(boot_one).collect()
    } else {
        std::thread::scope(|s| {
            let running: Vec<_> = guests
                .iter()
                .map(|g| s.spawn(move || boot_one(g)))
                .collect();
            running
                .into_iter()
                .map(|h| h.join().expect("a guest's thread"))
                .collect()
        })
    };
    for ((line, _, _, log), (text, took)) in guests.iter().zip(outcomes) {
        let line = line.as_str();
        let text = text?;
        for l in text
            .lines()
            .filter(|l| l.contains("MATRIX-") || l.starts_with("test ") || l.contains("panicked"))
        {
            println!(
                "  [{line}] {}",
                l.trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
            );
        }
        for report in failure_reports(&text) {
            println!("  [{line}] {report}");
        }
        let got = results(&text);
        for run in selected_runs() {
            let r = combined(&got, run.label, repeats()?);
            let r = r.as_ref();
            passed += r.map_or(0, |r| r.passed);
            failed_tests += r.map_or(1, |r| r.failed.max(u64::from(!r.ok)));
            let verdict = match r {
                None => "did not report".to_owned(),
                Some(r) if r.ok => format!("ok ({} passed)", r.passed),
                Some(r) => format!("FAILED ({} passed, {} failed)", r.passed, r.failed),
            };
            println!("kernel {line}, {}: {verdict}", run.label);
            if !r.is_some_and(|r| r.ok) {
                failed.push(format!("{line}/{}", run.label));
            }
        }
        println!(
            "kernel {line}: {:.0} s (serial log: {})",
            took.as_secs_f64(),
            log.display()
        );
    }
    if !failed.is_empty() {
        bail!("kernel matrix failed: {}", failed.join(", "));
    }
    Ok((passed, failed_tests))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_is_judged_by_its_own_result_and_exit_lines() {
        let log = "\x1b[0mMATRIX-RUN: lsm\n\
                   test ops::x ... ok\n\
                   test result: ok. 15 passed; 0 failed; 0 ignored\n\
                   MATRIX-EXIT: lsm 0\n\
                   MATRIX-RUN: fentry\n\
                   test result: FAILED. 14 passed; 1 failed; 0 ignored\n\
                   MATRIX-EXIT: fentry 101\n\
                   MATRIX-RUN: tracepoint\n";
        let r = results(log);
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0],
            (
                "lsm".to_owned(),
                RunResult {
                    ok: true,
                    passed: 15,
                    failed: 0
                }
            )
        );
        assert!(!r[1].1.ok);
        assert_eq!(r[1].1.failed, 1);
        assert!(!r[2].1.ok, "a run that never finished is not ok");
    }

    #[test]
    fn repeated_runs_add_up_and_a_missing_one_fails() {
        let log = "MATRIX-RUN: fentry\n\
                   test result: ok. 2 passed; 0 failed\n\
                   MATRIX-EXIT: fentry 0\n\
                   MATRIX-RUN: fentry\n\
                   test result: FAILED. 1 passed; 1 failed\n\
                   MATRIX-EXIT: fentry 101\n";
        let got = results(log);
        let r = combined(&got, "fentry", 2).expect("both reported");
        assert_eq!((r.ok, r.passed, r.failed), (false, 3, 1));
        assert_eq!(combined(&got, "fentry", 3), None);
        assert_eq!(combined(&got, "lsm", 1), None);
    }

    #[test]
    fn a_failed_tests_message_is_kept_without_its_backtrace_paths() {
        let log = "test x ... FAILED\n\nfailures:\n\n---- exact::x stdout ----\n\
                   thread 'x' panicked at tests/a.rs:9:5:\n2 events, expected 3\n\
                   \x20            at /rustc/abc/library/std/src/rt.rs:1:1\n\n\
                   failures:\n    exact::x\n\ntest result: FAILED. 0 passed; 1 failed\n";
        assert_eq!(
            failure_reports(log),
            [
                "---- exact::x stdout ----",
                "thread 'x' panicked at tests/a.rs:9:5:",
                "2 events, expected 3"
            ]
        );
    }
}
