//! The `fim` command line on Linux: `run` (the daemon) and `scan`.

use std::process::ExitCode;

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use fim_core::{
    defaults,
    watch::{DEFAULT_WATCH, WatchSet, probe_disk},
};
use fim_userspace::{
    commands::scan::{self as scan_cmd, EXIT_BAD_WATCH, ScanArgs},
    daemon::{self, Pipeline},
    integrity::{engine::EngineConfig, observe::Limits, scan::default_threads},
    sensors::{SensorKind, ebpf::Tier},
    sinks::SinkSpec,
    sources::SourceSpec,
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
        default_value = defaults::STATE_DIR,
        global = true
    )]
    state_dir: PathBuf,
    /// Files larger than this many bytes are reported as "not hashed: too large".
    #[arg(long, value_name = "BYTES", default_value_t = defaults::HASH_MAX_SIZE, global = true)]
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
        /// Which sensor to use.
        #[arg(long, value_enum, default_value_t = SensorArg::Auto)]
        sensor: SensorArg,
        /// A file still open for writing is hashed after this long without a close (a
        /// duration with its unit: `500ms`, `2s`).
        #[arg(long, value_name = "DURATION", default_value_t = defaults::HASH_QUIET.into())]
        hash_quiet: humantime::Duration,
        /// Rescan the watched paths this often to catch what real time missed (`30m`, `1h`;
        /// `0`: never).
        #[arg(long, value_name = "DURATION", default_value_t = defaults::RESCAN_INTERVAL.into())]
        rescan_interval: humantime::Duration,
    },
    /// Build or check the baseline without the daemon.
    Scan {
        #[command(subcommand)]
        what: ScanCommand,
    },
}

/// The sensors `--sensor` names.
#[derive(Clone, Copy, ValueEnum)]
enum SensorArg {
    /// The best combination this kernel allows, logged at start.
    Auto,
    /// The best eBPF tier: LSM, then fentry, then tracepoints.
    Ebpf,
    /// The LSM tier exactly (an error if the kernel refuses it).
    Lsm,
    /// The fentry tier exactly (an error if the kernel refuses it).
    Fentry,
    /// The tracepoint tier exactly (an error if the kernel refuses it).
    Tracepoint,
    /// fanotify: no eBPF needed; process details read from /proc.
    Fanotify,
}

impl From<SensorArg> for SensorKind {
    fn from(arg: SensorArg) -> Self {
        match arg {
            SensorArg::Auto => Self::Auto,
            SensorArg::Ebpf => Self::Ebpf,
            SensorArg::Lsm => Self::Tier(Tier::Lsm),
            SensorArg::Fentry => Self::Tier(Tier::Fentry),
            SensorArg::Tracepoint => Self::Tier(Tier::Tracepoint),
            SensorArg::Fanotify => Self::Fanotify,
        }
    }
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

pub fn main() -> ExitCode {
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
            hash_quiet,
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
                quiet: hash_quiet.into(),
                rescan_interval: Some(Duration::from(rescan_interval))
                    .filter(|interval| !interval.is_zero()),
                workers: common.threads.unwrap_or_else(default_threads),
                max_backlog: defaults::MAX_BACKLOG,
            };
            // Today's pipeline: the sensor `--sensor` names, to standard output.
            let pipeline = Pipeline {
                source: SourceSpec::Sensor(sensor.into()),
                sinks: vec![SinkSpec::Stdout],
            };
            run(set, pipeline, cfg)
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

fn run(set: WatchSet, pipeline: Pipeline, cfg: EngineConfig) -> ExitCode {
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
        daemon::run(set, pipeline, cfg, Arc::default(), shutdown).await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_run(args: &[&str]) -> Result<Command, clap::Error> {
        let argv = ["fim", "run"].iter().chain(args).copied();
        Cli::try_parse_from(argv).map(|cli| cli.command)
    }

    #[test]
    fn durations_take_units_and_default_from_one_place() {
        let Ok(Command::Run {
            hash_quiet,
            rescan_interval,
            ..
        }) = parse_run(&[])
        else {
            panic!("no arguments must parse");
        };
        assert_eq!(Duration::from(hash_quiet), defaults::HASH_QUIET);
        assert_eq!(Duration::from(rescan_interval), defaults::RESCAN_INTERVAL);
        let Ok(Command::Run {
            hash_quiet,
            rescan_interval,
            ..
        }) = parse_run(&["--hash-quiet", "300ms", "--rescan-interval", "0"])
        else {
            panic!("units must parse");
        };
        assert_eq!(Duration::from(hash_quiet), Duration::from_millis(300));
        assert!(Duration::from(rescan_interval).is_zero());
    }

    #[test]
    fn a_duration_without_its_unit_is_refused_with_a_reason() {
        let Err(e) = parse_run(&["--rescan-interval", "3600"]) else {
            panic!("a bare number must be refused");
        };
        let text = e.to_string();
        assert!(text.contains("--rescan-interval"), "{text}");
        assert!(text.contains("unit"), "{text}");
    }

    #[test]
    fn every_sensor_is_named_and_nothing_else() {
        for name in ["auto", "ebpf", "lsm", "fentry", "tracepoint", "fanotify"] {
            assert!(parse_run(&["--sensor", name]).is_ok(), "{name}");
        }
        let Err(e) = parse_run(&["--sensor", "kprobe"]) else {
            panic!("an unknown sensor must be refused");
        };
        assert!(e.to_string().contains("possible values"), "{e}");
    }
}
