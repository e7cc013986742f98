//! `cargo xtask matrix`: the kernel matrix. Boots Debian's 6.1 and 6.12 cloud kernels under
//! QEMU (TCG, hard timeout) with a minimal initramfs holding busybox, the release `fim`, the
//! privileged test binary and the libraries they link, and runs the sensor scenario suites
//! (`ops::` for the eBPF tracepoint sensor, `fanotify::` for fanotify and auto) in each guest. Results come back over the serial console (cloud kernels have no
//! 9p); a guest that does not report is a failure.
//!
//! Kernel packages are fetched with `apt-get download` into `target/matrix/cache` once.
//! Today the guests run the eBPF tracepoint tier; the LSM and fentry tiers join with issue 3.

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
/// A guest that has not powered off by then has failed.
const GUEST_TIMEOUT: Duration = Duration::from_secs(900);

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

/// The privileged test binary, built without running it.
fn test_binary() -> Result<PathBuf> {
    let out = output(Command::new("cargo").current_dir(root()).args([
        "test",
        "-p",
        "fim-tests",
        "--test",
        "privileged",
        "--no-run",
        "--message-format=json",
    ]))
    .context("building the test binary")?;
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

fn initramfs(unpacked: &Path, fim: &Path, tests: &Path, filter: &str, out: &Path) -> Result<()> {
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
    for exe in [fim, tests] {
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
             FIM_BIN=/fim CI=true FIM_TEST_TIME_SCALE=6 /privileged --test-threads 2 {filter} 2>&1\n\
             echo \"MATRIX-EXIT: $?\"\n\
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

/// Boots one guest and returns (passed, its serial log).
fn boot(vmlinuz: &Path, initrd: &Path, log: &Path) -> Result<(bool, String)> {
    let start = Instant::now();
    let status = Command::new("timeout")
        .arg(GUEST_TIMEOUT.as_secs().to_string())
        .args([
            "qemu-system-x86_64",
            "-accel",
            "tcg",
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
    let reported = text.contains("MATRIX-EXIT: ");
    let passed = text.contains("MATRIX-EXIT: 0") && text.contains("test result: ok.");
    if !reported {
        eprintln!(
            "guest did not report back ({status}, {:.0} s)",
            start.elapsed().as_secs_f64()
        );
    }
    Ok((passed, text))
}

/// Runs the matrix; fails when any kernel fails or does not report.
pub fn matrix() -> Result<()> {
    apt_install(PACKAGES)?;
    step("building fim (release) and the test binary");
    cargo(&["build", "--release", "-p", "fim-userspace"])?;
    let fim = root().join("target/release/fim");
    let tests = test_binary()?;
    let mut failed = Vec::new();
    for line in ["6.1", "6.12"] {
        let (vmlinuz, unpacked) = kernel(line)?;
        let initrd = matrix_dir().join(format!("initramfs-{line}.cpio.gz"));
        // The eBPF tracepoint scenarios and the fanotify/auto ones.
        initramfs(&unpacked, &fim, &tests, "ops:: fanotify::", &initrd)?;
        step(&format!("booting {} under QEMU (TCG)", vmlinuz.display()));
        let start = Instant::now();
        let log = matrix_dir().join(format!("serial-{line}.log"));
        let (passed, text) = boot(&vmlinuz, &initrd, &log)?;
        for l in text.lines().filter(|l| {
            l.contains("MATRIX-KERNEL") || l.starts_with("test ") || l.starts_with("test result")
        }) {
            println!(
                "  [{line}] {}",
                l.trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
            );
        }
        println!(
            "kernel {line}: {} in {:.0} s (serial log: {})",
            if passed { "passed" } else { "FAILED" },
            start.elapsed().as_secs_f64(),
            log.display()
        );
        if !passed {
            failed.push(line);
        }
    }
    if !failed.is_empty() {
        bail!("kernel matrix failed on {}", failed.join(", "));
    }
    Ok(())
}
