//! The `fim` command line.

use std::process::ExitCode;

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use fim_core::watch::{DEFAULT_WATCH, WatchSet, probe_disk};
use fim_userspace::{
    commands::scan::{self as scan_cmd, EXIT_BAD_WATCH, ScanArgs},
    daemon,
    integrity::{engine::EngineConfig, observe::Limits, scan::default_threads},
    sensors::{SensorKind, ebpf::Tier},
};
use log::error;
use tokio_util::sync::CancellationToken;

/// File integrity monitoring for Linux: real-time, attributed, lossless.
#[derive(Parser)]
#[command(name = "fim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log level for messages on stderr (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info")]
    log_level: log::LevelFilter,
}

/// Where and how the baseline is kept (shared by `run` and `scan`).
#[derive(Args, Clone)]
struct Common {
    /// Watch this path (a directory recursively, a file, or DIR/GLOB) instead of the
    /// built-in defaults. Repeatable.
    #[arg(long = "watch", value_name = "PATH", global = true)]
    watch: Vec<String>,
    /// Directory holding the baseline database.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/fim",
        global = true
    )]
    state_dir: PathBuf,
    /// Files larger than this many bytes are reported as "not hashed: too large".
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30, global = true)]
    hash_max_size: u64,
    /// Threads that stat and hash files (default: one per CPU).
    #[arg(long, value_name = "N", global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Watch files and print one JSON line per change on stdout.
    Run {
        #[command(flatten)]
        common: Common,
        /// Which sensor to use: `auto` (the best combination this kernel allows, logged at
        /// start), `ebpf` (the best eBPF tier: LSM, then fentry, then tracepoints), one eBPF
        /// tier exactly (`lsm`, `fentry`, `tracepoint`; an error if the kernel refuses it), or
        /// `fanotify` (no eBPF needed; process details read from /proc).
        #[arg(long, default_value = "auto", value_parser = ["auto", "ebpf", "lsm", "fentry", "tracepoint", "fanotify"])]
        sensor: String,
        /// A file still open for writing is hashed after this many milliseconds without
        /// a close.
        #[arg(long, value_name = "MS", default_value_t = 2000)]
        hash_quiet_ms: u64,
        /// Rescan the watched paths every this many seconds to catch what real time missed
        /// (0: never).
        #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
        rescan_interval: u64,
    },
    /// Build or check the baseline without the daemon.
    Scan {
        #[command(subcommand)]
        what: ScanCommand,
    },
}

#[derive(Subcommand)]
enum ScanCommand {
    /// Scan the watched paths and write the baseline (replacing any existing one).
    Init {
        #[command(flatten)]
        common: Common,
    },
    /// Compare the watched paths with the baseline. Exit status: 0 no difference, else the
    /// sum of 1 (added), 2 (removed), 4 (changed); 17 bad watch list; 18 baseline/I/O error.
    Check {
        #[command(flatten)]
        common: Common,
    },
}

fn main() -> ExitCode {
    // glibc gives each thread that allocates its own arena; a dozen mostly idle threads
    // would keep tens of MiB resident. Two arenas are plenty for this workload.
    // SAFETY: called before any other thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    let cli = Cli::parse();
    env_logger::Builder::new()
        .filter_level(cli.log_level)
        .format_target(false)
        .target(env_logger::Target::Stderr)
        .init();
    match cli.command {
        Command::Run {
            common,
            sensor,
            hash_quiet_ms,
            rescan_interval,
        } => {
            let Some(set) = watch_set(&common.watch) else {
                return ExitCode::from(2);
            };
            let cfg = EngineConfig {
                state_dir: common.state_dir,
                limits: Limits {
                    max_hash_bytes: common.hash_max_size,
                },
                quiet: Duration::from_millis(hash_quiet_ms),
                rescan_interval: (rescan_interval > 0)
                    .then(|| Duration::from_secs(rescan_interval)),
                workers: common.threads.unwrap_or_else(default_threads),
                max_backlog: 8_192,
            };
            let kind = match sensor.as_str() {
                "fanotify" => SensorKind::Fanotify,
                "ebpf" => SensorKind::Ebpf,
                "lsm" => SensorKind::Tier(Tier::Lsm),
                "fentry" => SensorKind::Tier(Tier::Fentry),
                "tracepoint" => SensorKind::Tier(Tier::Tracepoint),
                _ => SensorKind::Auto,
            };
            run(set, kind, cfg)
        }
        Command::Scan { what } => {
            let (common, init) = match what {
                ScanCommand::Init { common } => (common, true),
                ScanCommand::Check { common } => (common, false),
            };
            let Some(set) = watch_set(&common.watch) else {
                return ExitCode::from(EXIT_BAD_WATCH);
            };
            let args = ScanArgs {
                watch: &set,
                state_dir: &common.state_dir,
                threads: common.threads.unwrap_or_else(default_threads),
                limits: Limits {
                    max_hash_bytes: common.hash_max_size,
                },
            };
            if init {
                scan_cmd::init(&args)
            } else {
                scan_cmd::check(&args)
            }
        }
    }
}

/// The watch set from `--watch` (or the defaults); prints every problem and returns `None`.
fn watch_set(watch: &[String]) -> Option<WatchSet> {
    let explicit = !watch.is_empty();
    let patterns: Vec<String> = if explicit {
        watch.to_vec()
    } else {
        DEFAULT_WATCH.iter().map(|s| (*s).to_owned()).collect()
    };
    match WatchSet::new(&patterns, explicit, probe_disk) {
        Ok(set) => Some(set),
        Err(errors) => {
            for e in errors {
                eprintln!("fim: error: {e}");
            }
            None
        }
    }
}

fn run(set: WatchSet, kind: SensorKind, cfg: EngineConfig) -> ExitCode {
    // One thread for the sensor and the filter, which hand events to each other in batches
    // without waking another thread; the engine and the sink have their own.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fim: error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let result = runtime.block_on(async {
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            signals.cancel();
        });
        daemon::run(set, kind, cfg, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("fim: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The one place signals are handled: SIGINT or SIGTERM starts a clean shutdown.
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        log::warn!("cannot install signal handlers; stop fim with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
