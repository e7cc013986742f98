//! Developer commands. Each installs what it lacks, saying what it does, so a fresh machine
//! needs nothing but this repository and rustup.
//!
//! - `cargo xtask setup`: rust-src, Debian's LLVM 22 dev packages, bpf-linker built for LLVM 22.
//! - `cargo xtask run [-- ARGS]`: setup, build, then `fim run` on the built-in defaults.
//! - `cargo xtask test`: setup, build, then every test (unit, integration, privileged).
//! - `cargo xtask matrix`: the sensor scenarios in QEMU guests on Debian's 6.1 and 6.12 kernels.
//! - `cargo xtask bench hash|scan|memory|marks|churn`: the benchmarks behind the speed and memory targets.

mod bench;
mod churn;
mod matrix;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// The pinned toolchain (see rust-toolchain.toml); its LLVM major must equal bpf-linker's.
const TOOLCHAIN: &str = "1.95.0";
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_MAJOR: &str = "22";
/// Debian packages the daemon links against (OpenSSL's libcrypto, found by pkg-config).
const BUILD_PACKAGES: &[&str] = &["libssl-dev", "pkg-config"];
/// The Windows target, and the crates that must build for it (fim-userspace without its
/// Linux sensors and engine).
const WINDOWS_TARGET: &str = "x86_64-pc-windows-gnu";
const WINDOWS_CRATES: &[&str] = &["fim-common", "fim-core", "fim-userspace"];
/// Debian packages for checking them: a MinGW C compiler (SQLite is compiled from C).
const WINDOWS_PACKAGES: &[&str] = &["gcc-mingw-w64-x86-64"];
/// Debian packages of the receivers the sink tests send to (rsyslog over TCP and TLS),
/// and the `openssl` that makes their test certificates.
/// Wine runs `fim.exe` for the Windows tests (8.0 in Debian 12; no display needed).
const WINE_PACKAGES: &[&str] = &["wine", "wine64"];
const RECEIVER_PACKAGES: &[&str] = &[
    "rsyslog",
    "rsyslog-gnutls",
    "openssl",
    // syslog-ng's libraries: syslog-ng itself conflicts with rsyslog in Debian, so its
    // package is unpacked, not installed (see `syslog_ng`).
    "libivykis0",
    "libnet1",
    "libpcre3",
    "libwrap0",
    "libjson-c5",
    "libglib2.0-0",
    "libcap2",
    // The metrics test's scraper, and promtool for the alerting rules.
    "prometheus",
];
/// Where `syslog_ng` unpacks syslog-ng-core (the tests look there).
const SYSLOG_NG_DIR: &str = "target/receivers/syslog-ng";
/// Debian packages needed to build bpf-linker against LLVM 22.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "libxml2-dev",
];

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building needs (idempotent).
    Setup,
    /// Build and run the daemon in the foreground (as root); arguments go to `fim run`.
    Run {
        /// Extra arguments for `fim run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test.
    Test {
        /// Skip the kernel-matrix stage (for quick local runs; CI runs it).
        #[arg(long)]
        host_only: bool,
    },
    /// Boot Debian's 6.1 and 6.12 cloud kernels in QEMU and run the scenario suite per eBPF
    /// tier there (the last stage of `test`, on its own).
    Matrix,
    /// Run a benchmark and print its numbers.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// fim's SHA-256 against `openssl speed -evp sha256`.
    Hash,
    /// `fim scan init` against `aide --init -W 2` on 50,000 files (~1.7 GB).
    Scan,
    /// The daemon's resident memory with a 1,000,000-entry baseline (root).
    Memory,
    /// fanotify filesystem marks vs per-directory marks on writes outside the roots (root).
    Marks,
    /// The churn workload under every monitor this machine runs, side by side (root).
    Churn,
    /// Each sink's events per second and CPU per event, to receivers on this machine.
    Sinks,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup(),
        Cmd::Run { args } => {
            setup()?;
            step("building fim (release)");
            cargo(&["build", "--release", "-p", "fim-userspace"])?;
            let bin = root().join("target/release/fim");
            step(&format!(
                "starting {} run {}",
                bin.display(),
                args.join(" ")
            ));
            let err = exec(Command::new(bin).arg("run").args(args));
            Err(err).context("starting fim")
        }
        Cmd::Test { host_only } => test(host_only),
        Cmd::Matrix => {
            setup()?;
            matrix::matrix().map(drop)
        }
        Cmd::Bench { what } => {
            setup()?;
            match what {
                BenchWhat::Hash => bench::hash(),
                BenchWhat::Scan => bench::scan(),
                BenchWhat::Memory => bench::memory(),
                BenchWhat::Marks => bench::marks(),
                BenchWhat::Churn => churn::churn(),
                BenchWhat::Sinks => bench::sinks(),
            }
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn step(what: &str) {
    eprintln!("==> xtask: {what}");
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    run(Command::new("cargo").current_dir(root()).args(args))
}

fn exec(cmd: &mut Command) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    cmd.exec()
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs the Debian packages that are missing (saying which).
fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f", "${Status}", p]))
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Unpacks Debian's syslog-ng-core under [`SYSLOG_NG_DIR`] (once): the second syslog
/// receiver of the sink tests, the strict one about RFC 6587 framing. Installing it would
/// remove rsyslog (both provide `system-log-daemon`).
fn syslog_ng() -> Result<()> {
    let dir = root().join(SYSLOG_NG_DIR);
    if dir.join("usr/sbin/syslog-ng").exists() {
        return Ok(());
    }
    step("unpacking syslog-ng-core (it cannot be installed beside rsyslog)");
    let download = root().join("target/receivers");
    std::fs::create_dir_all(&download).context("creating target/receivers")?;
    let fetch = || {
        run(Command::new("apt-get")
            .current_dir(&download)
            .args(["download", "syslog-ng-core"]))
    };
    if fetch().is_err() {
        // Package lists older than the archive: read them again.
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        fetch()?;
    }
    let deb = std::fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("syslog-ng-core_"))
        })
        .context("apt-get download left no syslog-ng-core .deb")?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))
}

/// What rustup has installed of `what` (`component`, `target`) for the pinned toolchain.
fn rustup_installed(what: &str) -> String {
    output(Command::new("rustup").args([what, "list", "--installed", "--toolchain", TOOLCHAIN]))
        .unwrap_or_default()
}

fn setup() -> Result<()> {
    apt_install(BUILD_PACKAGES)?;
    if !rustup_installed("component")
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        step(&format!(
            "installing rust-src for {TOOLCHAIN} (the eBPF build compiles core)"
        ));
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            TOOLCHAIN,
        ]))?;
    }
    // The right version, linked against the right LLVM major (it does not print its LLVM).
    let linker_ok = output(Command::new("bpf-linker").arg("--version"))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION))
        && output(Command::new("sh").args(["-c", "ldd \"$(command -v bpf-linker)\""]))
            .is_some_and(|v| v.contains(&format!("libLLVM.so.{LLVM_MAJOR}")));
    if !linker_ok {
        apt_install(APT_PACKAGES)?;
        step(&format!(
            "building bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR} (2-5 minutes)"
        ));
        run(Command::new("cargo")
            .args([
                &format!("+{TOOLCHAIN}"),
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
            ])
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}")))?;
    }
    Ok(())
}

/// Installs what checking the Windows build needs: the Rust target and a MinGW compiler.
fn windows_setup() -> Result<()> {
    apt_install(WINDOWS_PACKAGES)?;
    if !rustup_installed("target")
        .lines()
        .any(|l| l.trim() == WINDOWS_TARGET)
    {
        step(&format!("installing the Rust target {WINDOWS_TARGET}"));
        run(Command::new("rustup").args([
            "target",
            "add",
            WINDOWS_TARGET,
            "--toolchain",
            TOOLCHAIN,
        ]))?;
    }
    Ok(())
}

/// `cargo check` of every crate that must run on Windows, for Windows.
fn check_windows() -> Result<()> {
    windows_setup()?;
    step(&format!(
        "checking {} for {WINDOWS_TARGET}",
        WINDOWS_CRATES.join(", ")
    ));
    let mut args = vec!["check", "--target", WINDOWS_TARGET, "--all-targets"];
    for krate in WINDOWS_CRATES {
        args.extend(["-p", krate]);
    }
    cargo(&args)
}

/// Wine, `fim.exe`, the stand-in `bcryptprimitives.dll` Wine 8.0 lacks and the ACL setter
/// the tests use (Wine has no `icacls` worth the name), for the Windows tests
/// (`tests/wine`). Returns the paths of the executable, the DLL and the helper.
fn wine_setup() -> Result<(PathBuf, PathBuf, PathBuf)> {
    apt_install(WINE_PACKAGES)?;
    step("building fim.exe (debug) for the Wine tests");
    cargo(&[
        "build",
        "--target",
        WINDOWS_TARGET,
        "-p",
        "fim-userspace",
        "--bin",
        "fim",
    ])?;
    let dir = root().join("target/wine");
    std::fs::create_dir_all(&dir)?;
    let dll = dir.join("bcryptprimitives.dll");
    run(Command::new("x86_64-w64-mingw32-gcc")
        .args(["-shared", "-O2", "-o"])
        .arg(&dll)
        .arg(root().join("xtask/wine/bcryptprimitives.c"))
        .arg("-ladvapi32"))?;
    let acl = dir.join("fimacl.exe");
    run(Command::new("x86_64-w64-mingw32-gcc")
        .args(["-municode", "-O2", "-o"])
        .arg(&acl)
        .arg(root().join("xtask/wine/fimacl.c"))
        .arg("-ladvapi32"))?;
    Ok((
        root().join(format!("target/{WINDOWS_TARGET}/debug/fim.exe")),
        dll,
        acl,
    ))
}

fn test(host_only: bool) -> Result<()> {
    setup()?;
    step("checking formatting");
    cargo(&["fmt", "--all", "--", "--check"])?;
    check_windows()?;
    let (fim_exe, wine_shim, wine_acl) = wine_setup()?;
    apt_install(RECEIVER_PACKAGES)?;
    syslog_ng()?;
    step("building fim (debug) for the privileged tests");
    cargo(&["build", "-p", "fim-userspace"])?;
    let privileged = is_root();
    if !privileged {
        eprintln!("==> xtask: not root: privileged tests will skip (they fail when CI is set)");
    }
    step("running every test");
    let mut child = Command::new("cargo")
        .current_dir(root())
        .args([
            "test",
            "--no-fail-fast",
            "--workspace",
            "--exclude",
            "fim-ebpf",
            "--",
            "--test-threads",
            "4",
        ])
        .env("FIM_BIN", root().join("target/debug/fim"))
        .env("FIM_EXE", &fim_exe)
        .env("FIM_WINE_SHIM", &wine_shim)
        .env("FIM_WINE_ACL", &wine_acl)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("spawning cargo test")?;
    // Echo libtest's output and add up its result lines, so the run ends with one total.
    let (mut passed, mut failed) = (0u64, 0u64);
    if let Some(stdout) = child.stdout.take() {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                let count = |word: &str| {
                    rest.split(';')
                        .find_map(|part| {
                            part.trim()
                                .trim_start_matches("ok. ")
                                .trim_start_matches("FAILED. ")
                                .strip_suffix(word)
                        })
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                passed += count(" passed");
                failed += count(" failed");
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!("host tests: {passed} passed, {failed} failed");
    // The matrix runs even after a host failure, so one run shows everything that is wrong.
    let matrix = if host_only {
        println!("==> xtask: kernel matrix skipped (--host-only)");
        None
    } else if !privileged && std::env::var_os("CI").is_none() {
        eprintln!("==> xtask: not root: kernel matrix skipped (it runs when CI is set)");
        None
    } else {
        step("kernel matrix: the scenario suite per eBPF tier in QEMU guests");
        Some(matrix::matrix())
    };
    let (mut total_passed, mut total_failed) = (passed, failed);
    let mut matrix_error = None;
    match matrix {
        Some(Ok((p, f))) => {
            total_passed += p;
            total_failed += f;
        }
        Some(Err(e)) => matrix_error = Some(e),
        None => {}
    }
    println!("tests: {total_passed} passed, {total_failed} failed");
    if !status.success() || failed > 0 {
        bail!("host tests failed ({status})");
    }
    if let Some(e) = matrix_error {
        return Err(e);
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|u| u.trim() == "0")
}
