//! The `fim` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fim_userspace::{
    daemon,
    watch::{DEFAULT_WATCH, WatchSet, probe_disk},
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

#[derive(Subcommand)]
enum Command {
    /// Watch files and print one JSON line per change on stdout.
    Run {
        /// Watch this path (a directory recursively, a file, or DIR/GLOB) instead of the
        /// built-in defaults. Repeatable.
        #[arg(long = "watch", value_name = "PATH")]
        watch: Vec<String>,
        /// Which sensor to use. Only `ebpf` (tracepoint tier) exists today.
        #[arg(long, default_value = "ebpf", value_parser = ["ebpf"])]
        sensor: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .filter_level(cli.log_level)
        .format_target(false)
        .target(env_logger::Target::Stderr)
        .init();
    match cli.command {
        Command::Run { watch, sensor: _ } => run(watch),
    }
}

fn run(watch: Vec<String>) -> ExitCode {
    let explicit = !watch.is_empty();
    let patterns: Vec<String> = if explicit {
        watch
    } else {
        DEFAULT_WATCH.iter().map(|s| (*s).to_owned()).collect()
    };
    let set = match WatchSet::new(&patterns, explicit, probe_disk) {
        Ok(set) => set,
        Err(errors) => {
            for e in errors {
                eprintln!("fim: error: {e}");
            }
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
        daemon::run(set, shutdown).await
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
