//! `fim.exe`'s command line.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use fim_core::config::Config;
use log::{LevelFilter, error};

/// Exit status for a configuration or usage problem.
const EXIT_BAD_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "fim",
    version,
    about = "File integrity monitoring for Windows: registry keys and files, polled and woken by change notifications"
)]
struct Cli {
    /// Which messages the log (stderr) shows: off, error, warn, info, debug, trace.
    #[arg(long, global = true)]
    log_level: Option<LevelFilter>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch the registry keys and files of the configuration until Ctrl-C.
    Run(RunArgs),
    /// Check a configuration file, or print the built-in one.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
    /// Install or remove the Windows service.
    Service {
        #[command(subcommand)]
        what: ServiceCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check FILE (default: %ProgramData%\fim\fim.toml) and say what it watches.
    Check {
        /// The file.
        file: Option<PathBuf>,
    },
    /// Print the built-in configuration.
    Default,
}

#[derive(Subcommand)]
enum ServiceCommand {
    /// Install the service "fim", started at boot, with these settings.
    Install(RunArgs),
    /// Remove the service.
    Uninstall,
    /// Run as the service (the control manager starts this).
    #[command(hide = true)]
    Run(RunArgs),
}

#[derive(Args, Clone, Default)]
struct RunArgs {
    /// Configuration file (default: %ProgramData%\fim\fim.toml when it exists, else the
    /// built-in configuration).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for the baseline and the outbox (default: %ProgramData%\fim\state).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Where the metrics endpoint listens ("off": nowhere).
    #[arg(long)]
    metrics_address: Option<String>,
}

impl RunArgs {
    /// The same settings as command-line words, for the service's command line.
    fn words(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(c) = &self.config {
            out.extend(["--config".into(), absolute(c)]);
        }
        if let Some(s) = &self.state_dir {
            out.extend(["--state-dir".into(), absolute(s)]);
        }
        if let Some(m) = &self.metrics_address {
            out.extend(["--metrics-address".into(), m.clone()]);
        }
        out
    }
}

fn absolute(p: &std::path::Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_owned())
        .display()
        .to_string()
}

/// The configuration `args` name, with their overrides.
fn configuration(args: &RunArgs) -> Result<(Config, PathBuf), String> {
    let default = super::data_dir().join("fim.toml");
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None if default.exists() => Config::load(&default).map_err(|e| e.to_string())?,
        None => Config::builtin(),
    };
    if let Some(m) = &args.metrics_address {
        config.metrics.address = match m.as_str() {
            "off" => None,
            a => Some(a.parse().map_err(|_| {
                format!("--metrics-address `{a}` is not an address and port (\"127.0.0.1:9478\") or \"off\"")
            })?),
        };
    }
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| super::state_dir(&config));
    Ok((config, state_dir))
}

fn daemon(args: &RunArgs) -> Result<(), String> {
    let (config, state_dir) = configuration(args)?;
    if log::max_level() == LevelFilter::Info {
        log::set_max_level(config.daemon.log_level);
    }
    super::run(&config, &state_dir).map_err(|e| e.to_string())
}

/// `fim.exe`'s entry point.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .filter_level(LevelFilter::Trace)
        .format_target(false)
        .target(env_logger::Target::Stderr)
        .init();
    log::set_max_level(cli.log_level.unwrap_or(LevelFilter::Info));
    match cli.command {
        Command::Run(args) => {
            if let Err(e) = configuration(&args) {
                eprintln!("fim: error: {e}");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
            super::stop_on_console_control();
            match daemon(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e}");
                    eprintln!("fim: error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config { what } => match what {
            ConfigCommand::Default => {
                print!("{}", Config::builtin().render());
                ExitCode::SUCCESS
            }
            ConfigCommand::Check { file } => {
                let args = RunArgs {
                    config: file,
                    ..RunArgs::default()
                };
                match configuration(&args) {
                    Ok((config, state_dir)) => {
                        let w = &config.windows;
                        let keys: usize = w
                            .registry
                            .iter()
                            .map(|r| r.keys.len() * r.views.each().len())
                            .sum();
                        let files: usize = w.files.iter().map(|f| f.paths.len()).sum();
                        println!(
                            "ok: {keys} registry keys in {} rules, {files} files in {} rules, full poll every {}, state in {}",
                            w.registry.len(),
                            w.files.len(),
                            humantime::format_duration(w.poll_interval),
                            state_dir.display()
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("fim: error: {e}");
                        ExitCode::from(EXIT_BAD_CONFIG)
                    }
                }
            }
        },
        Command::Service { what } => match what {
            ServiceCommand::Install(args) => {
                if let Err(e) = configuration(&args) {
                    eprintln!("fim: error: {e}");
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
                match super::service::install(&args.words()) {
                    Ok(()) => {
                        println!("installed the service `{}`", super::service::NAME);
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("fim: error: installing the service: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            ServiceCommand::Uninstall => match super::service::uninstall() {
                Ok(()) => {
                    println!("removed the service `{}`", super::service::NAME);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("fim: error: removing the service: {e}");
                    ExitCode::FAILURE
                }
            },
            ServiceCommand::Run(args) => match super::service::dispatch(move || daemon(&args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!(
                        "fim: error: `service run` is for the service control manager ({e}); use `fim run` in a console"
                    );
                    ExitCode::FAILURE
                }
            },
        },
    }
}
