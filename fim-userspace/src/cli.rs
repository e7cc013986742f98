//! The `fim` command line on Linux: `run` (the daemon), `reload`, `scan` and `config`.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use fim_core::{
    config::{self, Config, Rule, Sensor},
    defaults,
    rules::RuleSet,
    watch::{WatchSet, probe_disk},
};
use fim_userspace::{
    commands::scan::{self as scan_cmd, EXIT_BAD_WATCH, ScanArgs},
    control,
    daemon::{self, Pipeline, Reload, Update},
    integrity::{engine::EngineConfig, observe::Limits, scan::default_threads},
    packages,
    sensors::{SensorKind, ebpf::Tier},
    sinks::{self, runner::Reopen},
    sources::SourceSpec,
};
use log::error;
use tokio_util::sync::CancellationToken;

/// Exit status of `fim run` and `fim config check` when the configuration is refused.
const EXIT_BAD_CONFIG: u8 = 2;
/// `fim status`: the daemon is unhealthy.
const EXIT_UNHEALTHY: u8 = 1;
/// `fim status`: the daemon is not ready yet.
const EXIT_NOT_READY: u8 = 3;
/// `fim status`: no daemon answers.
const EXIT_UNREACHABLE: u8 = 4;

/// File integrity monitoring for Linux: real-time, attributed, lossless.
#[derive(Parser)]
#[command(name = "fim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log level for messages on stderr: off, error, warn, info, debug, trace
    /// (`daemon.log_level`).
    #[arg(long, global = true)]
    log_level: Option<log::LevelFilter>,
}

/// The configuration and what on the command line overrides it (shared by `run` and
/// `scan`). Each flag left out keeps the configuration's value; `fim config default` shows
/// the built-in ones.
#[derive(Args, Clone)]
struct Common {
    /// Read the configuration from FILE (default: /etc/fim/fim.toml when it exists, else
    /// the built-in configuration).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Watch this path (a directory recursively, a file, or DIR/GLOB) instead of the
    /// configuration's rules. Repeatable.
    #[arg(long = "watch", value_name = "PATH", global = true)]
    watch: Vec<String>,
    /// Directory holding the baseline database (`daemon.state_dir`).
    #[arg(long, value_name = "DIR", global = true)]
    state_dir: Option<PathBuf>,
    /// Files larger than this are reported as "not hashed: too large": bytes, or a size
    /// with its unit, `512MiB` (`daemon.hash_max_size`).
    #[arg(long, value_name = "SIZE", value_parser = config::parse_size, global = true)]
    hash_max_size: Option<u64>,
    /// Threads that stat and hash files; 0: one per CPU (`daemon.threads`).
    #[arg(long, value_name = "N", global = true)]
    threads: Option<usize>,
    /// Put every rule path (and /etc/passwd, for `~/`) under DIR: for tests that mirror
    /// the places the built-in rules watch.
    #[arg(
        long,
        value_name = "DIR",
        global = true,
        hide = true,
        default_value = "/"
    )]
    root: String,
}

/// What `fim run` alone overrides.
#[derive(Args, Clone, Default)]
struct RunFlags {
    /// Which sensor to use (`daemon.sensor`).
    #[arg(long, value_enum)]
    sensor: Option<SensorArg>,
    /// A file still open for writing is hashed after this long without a close: a
    /// duration with its unit, `500ms`, `2s` (`daemon.hash_quiet`).
    #[arg(long, value_name = "DURATION")]
    hash_quiet: Option<humantime::Duration>,
    /// Rescan the watched paths this often to catch what real time missed: `30m`, `1h`;
    /// `0`: never (`daemon.rescan_interval`).
    #[arg(long, value_name = "DURATION")]
    rescan_interval: Option<humantime::Duration>,
    /// Where the metrics endpoint listens, `ADDRESS:PORT`, or `off` (`metrics.address`).
    #[arg(long, value_name = "ADDRESS|off", value_parser = parse_metrics_address)]
    metrics_address: Option<MetricsAddress>,
}

/// `--metrics-address`: an address, or none.
#[derive(Clone, Copy, Debug)]
struct MetricsAddress(Option<std::net::SocketAddr>);

fn parse_metrics_address(text: &str) -> Result<MetricsAddress, String> {
    if text == "off" {
        return Ok(MetricsAddress(None));
    }
    text.parse()
        .map(|a| MetricsAddress(Some(a)))
        .map_err(|_| format!("`{text}` is not an address and port (127.0.0.1:9478) or `off`"))
}

#[derive(Subcommand)]
enum Command {
    /// Watch files and print one JSON line per change on stdout.
    Run {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        flags: RunFlags,
    },
    /// Make the running daemon read its configuration again (as SIGHUP does) and wait
    /// until it follows it. Exit status 0 when it does, 2 when the daemon refused the new
    /// configuration (it keeps the running one) or could not apply it, 1 when it could not
    /// be reached.
    Reload {
        #[command(flatten)]
        args: ReloadArgs,
    },
    /// A running daemon's state in a few lines (sensor, uptime, events, losses, backlog,
    /// sinks), read from its metrics endpoint. Exit status 0 when it is healthy and ready,
    /// 1 when it is unhealthy, 2 for a bad configuration or command line, 3 while it is not
    /// ready yet, 4 when no daemon answers.
    Status {
        #[command(flatten)]
        args: StatusArgs,
    },
    /// Build or check the baseline without the daemon.
    Scan {
        #[command(subcommand)]
        what: ScanCommand,
    },
    /// Check a configuration file, or print the built-in one.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
}

/// Which daemon `fim status` reads: the one whose metrics endpoint is at this address.
#[derive(Args)]
struct StatusArgs {
    /// The daemon's configuration, which names its metrics address (default:
    /// /etc/fim/fim.toml when it exists, else the built-in configuration).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The metrics endpoint, if `fim run` was given `--metrics-address`.
    #[arg(long, value_name = "ADDRESS")]
    address: Option<std::net::SocketAddr>,
}

/// Which daemon `fim reload` reaches: the one running on the state directory.
#[derive(Args)]
struct ReloadArgs {
    /// The daemon's configuration, which names its state directory (default:
    /// /etc/fim/fim.toml when it exists, else the built-in configuration).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The daemon's state directory, if `fim run` was given `--state-dir`.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// How long to wait for the daemon's answer.
    #[arg(long, value_name = "DURATION", default_value = "2m")]
    wait: humantime::Duration,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check FILE (default: /etc/fim/fim.toml, else the built-in configuration) and print
    /// what it watches. Exit status 0 when valid, 2 when not (every problem is listed).
    Check {
        /// The file to check.
        file: Option<PathBuf>,
    },
    /// Print the built-in configuration, every key explained: a starting point for
    /// /etc/fim/fim.toml.
    Default,
}

/// The sensors `--sensor` names (the same names as `daemon.sensor`).
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

impl From<SensorArg> for Sensor {
    fn from(arg: SensorArg) -> Self {
        match arg {
            SensorArg::Auto => Self::Auto,
            SensorArg::Ebpf => Self::Ebpf,
            SensorArg::Lsm => Self::Lsm,
            SensorArg::Fentry => Self::Fentry,
            SensorArg::Tracepoint => Self::Tracepoint,
            SensorArg::Fanotify => Self::Fanotify,
        }
    }
}

fn sensor_kind(sensor: Sensor) -> SensorKind {
    match sensor {
        Sensor::Auto => SensorKind::Auto,
        Sensor::Ebpf => SensorKind::Ebpf,
        Sensor::Lsm => SensorKind::Tier(Tier::Lsm),
        Sensor::Fentry => SensorKind::Tier(Tier::Fentry),
        Sensor::Tracepoint => SensorKind::Tier(Tier::Tracepoint),
        Sensor::Fanotify => SensorKind::Fanotify,
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
    /// sum of 1 (added), 2 (removed), 4 (changed); 17 bad watch list or configuration;
    /// 18 baseline/I/O error.
    Check {
        #[command(flatten)]
        common: Common,
    },
}

/// Where the configuration came from.
enum Origin {
    File(PathBuf),
    Builtin,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "`{}`", p.display()),
            Self::Builtin => f.write_str("the built-in configuration"),
        }
    }
}

/// The configuration `--config` names, else /etc/fim/fim.toml when it exists, else the
/// built-in one.
fn load(explicit: Option<&Path>) -> Result<(Config, Origin), config::LoadError> {
    let path = match explicit {
        Some(p) => p.to_owned(),
        None if Path::new(defaults::CONFIG_FILE).exists() => PathBuf::from(defaults::CONFIG_FILE),
        None => return Ok((Config::builtin(), Origin::Builtin)),
    };
    Ok((Config::load(&path)?, Origin::File(path)))
}

/// Name of the rule `--watch` makes.
const COMMAND_LINE_RULE: &str = "command-line";

/// The configuration with the command line's overrides applied.
fn effective(common: &Common, flags: &RunFlags) -> Result<(Config, Origin), config::LoadError> {
    let (mut config, origin) = load(common.config.as_deref())?;
    let d = &mut config.daemon;
    if let Some(dir) = &common.state_dir {
        d.state_dir.clone_from(dir);
    }
    if let Some(size) = common.hash_max_size {
        d.hash_max_size = size;
    }
    if let Some(threads) = common.threads {
        d.threads = Some(threads).filter(|&n| n != 0);
    }
    if let Some(sensor) = flags.sensor {
        d.sensor = sensor.into();
    }
    if let Some(quiet) = flags.hash_quiet {
        d.hash_quiet = quiet.into();
    }
    if let Some(interval) = flags.rescan_interval {
        d.rescan_interval = Some(std::time::Duration::from(interval)).filter(|i| !i.is_zero());
    }
    if let Some(MetricsAddress(address)) = flags.metrics_address {
        config.metrics.address = address;
    }
    if common.watch.is_empty() {
        resolve(&mut config, &common.root);
    } else {
        // `--watch` replaces the rules: nothing of theirs (their `~/` homes) is read.
        config.rules = vec![Rule::new(COMMAND_LINE_RULE, common.watch.clone())];
    }
    Ok((config, origin))
}

/// The rules' paths as watched: `~/` once under each user's home that exists (from
/// `ROOT/etc/passwd`), every path under `root`.
fn resolve(config: &mut Config, root: &str) {
    let under = |p: &str| format!("{}{p}", root.trim_end_matches('/'));
    let passwd = under("/etc/passwd");
    let homes: Vec<String> = match std::fs::read_to_string(&passwd) {
        Ok(text) => config::homes_from_passwd(&text)
            .into_iter()
            .filter(|h| Path::new(&under(h)).is_dir())
            .collect(),
        Err(e) => {
            if config
                .rules
                .iter()
                .any(|r| r.paths.iter().any(|p| p.starts_with("~/")))
            {
                log::warn!("reading {passwd} for the rules' `~/` paths: {e}; they watch nothing");
            }
            Vec::new()
        }
    };
    for rule in &mut config.rules {
        rule.paths = rule.resolved_paths(root, &homes);
    }
}

/// The watch set of `config`'s rules. Paths given with `--watch` must exist; a rule's
/// path that does not is watched for appearing.
fn watch_set(config: &Config) -> Result<WatchSet, Vec<String>> {
    let explicit = config.rules.iter().any(|r| r.name == COMMAND_LINE_RULE);
    let patterns: Vec<(String, bool)> = config
        .rules
        .iter()
        .flat_map(|r| r.paths.iter().map(|p| (p.clone(), r.recursive)))
        .collect();
    WatchSet::with_recursion(&patterns, explicit, probe_disk)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect())
}

pub fn main() -> ExitCode {
    // glibc gives each thread that allocates its own arena; a dozen mostly idle threads
    // would keep tens of MiB resident. Two arenas are plenty for this workload.
    // SAFETY: called before any other thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    let cli = Cli::parse();
    // Every level passes the logger; `log`'s maximum decides: the flag's until the
    // configuration is read, then the flag's or the configuration's.
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Trace)
        .format_target(false)
        .target(env_logger::Target::Stderr)
        .init();
    let flag_level = cli.log_level;
    log::set_max_level(flag_level.unwrap_or(log::LevelFilter::Info));
    let configured = |config: &Config| {
        log::set_max_level(flag_level.unwrap_or(config.daemon.log_level));
    };
    match cli.command {
        Command::Run { common, flags } => {
            let (config, set, rules) = match prepare(&common, &flags) {
                Ok(prepared) => prepared,
                Err(problems) => return refuse(&problems, EXIT_BAD_CONFIG),
            };
            configured(&config);
            let d = &config.daemon;
            let cfg = EngineConfig {
                state_dir: d.state_dir.clone(),
                limits: limits_of(&config, &rules, &common.root, &set),
                quiet: d.hash_quiet,
                rescan_interval: d.rescan_interval,
                workers: d.threads.unwrap_or_else(default_threads),
                max_backlog: defaults::MAX_BACKLOG,
            };
            // Today's pipeline: the configured sensor, through the rules, to standard output.
            let pipeline = Pipeline {
                source: SourceSpec::Sensor(sensor_kind(d.sensor)),
                rules,
                sinks: if config.sinks.is_empty() {
                    sinks::default_sinks()
                } else {
                    config.sinks.clone()
                },
                reporter: Arc::new(fim_userspace::host::reporter()),
                reopen: Reopen::default(),
                metrics: config.metrics.clone(),
                config_hash: fim_userspace::metrics::config_hash(&config),
            };
            let reloader = Reloader {
                common,
                flags,
                running: config.daemon.clone(),
                sinks: config.sinks.clone(),
                flag_level,
                generation: 0,
                metrics: config.metrics,
                telemetry: Arc::default(),
            };
            run(set, pipeline, cfg, reloader)
        }
        Command::Reload { args } => reload(&args),
        Command::Status { args } => status(&args),
        Command::Scan { what } => {
            let (common, init) = match what {
                ScanCommand::Init { common } => (common, true),
                ScanCommand::Check { common } => (common, false),
            };
            let (config, set, rules) = match prepare(&common, &RunFlags::default()) {
                Ok(prepared) => prepared,
                Err(problems) => return refuse(&problems, EXIT_BAD_WATCH),
            };
            configured(&config);
            let d = &config.daemon;
            let args = ScanArgs {
                watch: &set,
                state_dir: &d.state_dir,
                threads: d.threads.unwrap_or_else(default_threads),
                limits: limits_of(&config, &rules, &common.root, &set),
            };
            if init {
                scan_cmd::init(&args)
            } else {
                scan_cmd::check(&args)
            }
        }
        Command::Config { what } => match what {
            ConfigCommand::Default => emit(&Config::builtin().render()),
            ConfigCommand::Check { file } => check(file.as_deref()),
        },
    }
}

/// The effective configuration, its watch set and its rules; every problem otherwise.
fn prepare(
    common: &Common,
    flags: &RunFlags,
) -> Result<(Config, WatchSet, Arc<RuleSet>), Vec<String>> {
    let (config, _) = effective(common, flags).map_err(|e| vec![e.to_string()])?;
    if config.rules.is_empty() {
        return Err(vec![
            "the configuration has no [[rule]]: nothing to watch on Linux (its [windows] \
             table is for fim.exe); add a [[rule]] or pass --watch PATH"
                .into(),
        ]);
    }
    let d = &config.daemon;
    let long = [
        ("--hash-quiet", Some(d.hash_quiet)),
        ("--rescan-interval", d.rescan_interval),
    ];
    let too_long: Vec<String> = long
        .iter()
        .filter(|(_, v)| v.is_some_and(|v| v > config::MAX_DURATION))
        .map(|(flag, _)| format!("{flag}: longer than a year"))
        .collect();
    if !too_long.is_empty() {
        return Err(too_long);
    }
    let set = watch_set(&config)?;
    let rules = rule_set(&config)?;
    Ok((config, set, rules))
}

/// How files are read under `config`: its hashing limit, its rules, and the package
/// digests of the files `set` watches (dpkg's database under `root`).
fn limits_of(config: &Config, rules: &Arc<RuleSet>, root: &str, set: &WatchSet) -> Limits {
    Limits {
        max_hash_bytes: config.daemon.hash_max_size,
        rules: Some(rules.clone()),
        packages: Some(Arc::new(packages::load(root, set))),
    }
}

/// The configuration's rules, compiled.
fn rule_set(config: &Config) -> Result<Arc<RuleSet>, Vec<String>> {
    RuleSet::new(&config.rules, probe_disk)
        .map(Arc::new)
        .map_err(|e| e.iter().map(ToString::to_string).collect())
}

/// Writes `text` to standard output; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> ExitCode {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fim: error: writing to standard output: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints every problem and returns `code`.
fn refuse(problems: &[String], code: u8) -> ExitCode {
    for p in problems {
        eprintln!("fim: error: {p}");
    }
    ExitCode::from(code)
}

/// `fim config check`: the problems, or the effective settings and watch set.
fn check(file: Option<&Path>) -> ExitCode {
    let (mut config, origin) = match load(file) {
        Ok(loaded) => loaded,
        Err(e) => return refuse(&[e.to_string()], EXIT_BAD_CONFIG),
    };
    resolve(&mut config, "/");
    let set = match watch_set(&config) {
        Ok(set) => set,
        Err(problems) => return refuse(&problems, EXIT_BAD_CONFIG),
    };
    let d = &config.daemon;
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{origin}: valid");
    let _ = writeln!(
        out,
        "daemon: sensor {}, state_dir {}, threads {}, hash_max_size {}, hash_quiet {}, \
         rescan_interval {}",
        d.sensor.name(),
        d.state_dir.display(),
        d.threads
            .map_or_else(|| "one per CPU".to_owned(), |n| n.to_string()),
        config::render_size(d.hash_max_size),
        humantime::format_duration(d.hash_quiet),
        d.rescan_interval.map_or_else(
            || "never".to_owned(),
            |i| humantime::format_duration(i).to_string()
        ),
    );
    let explained = set.explain();
    let mut lines = explained.iter();
    for rule in &config.rules {
        let _ = writeln!(out, "rule `{}`:", rule.name);
        for line in lines.by_ref().take(rule.paths.len()) {
            let _ = writeln!(out, "  {line}");
        }
    }
    if config.sinks.is_empty() {
        let _ = writeln!(out, "sinks: standard output (no [sinks] table)");
    }
    for sink in &config.sinks {
        let _ = writeln!(out, "sink `{}`: {}", sink.name, sink.kind.type_name());
    }
    let m = &config.metrics;
    match m.address {
        Some(a) => {
            let _ = writeln!(
                out,
                "metrics: http://{a}/metrics, /health, /ready (unhealthy when a sink fails for {} \
                 or the sensor stalls for {})",
                humantime::format_duration(m.sink_failing_after),
                humantime::format_duration(m.sensor_stall_after)
            );
        }
        None => {
            let _ = writeln!(out, "metrics: off");
        }
    }
    let _ = writeln!(
        out,
        "kernel filter: {} prefixes (the table holds {})",
        set.kernel_roots().len(),
        fim_common::MAX_WATCH_ROOTS
    );
    emit(&out)
}

fn run(set: WatchSet, pipeline: Pipeline, cfg: EngineConfig, reloader: Reloader) -> ExitCode {
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
    let state_dir = cfg.state_dir.clone();
    let result = runtime.block_on(async {
        let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
        let signals = Signals::install(shutdown.clone());
        // Written once SIGHUP is ours: `fim reload` signals only a daemon that takes it.
        let _pid_file = match std::fs::create_dir_all(&state_dir)
            .map_err(|source| control::ControlError::Io {
                what: "creating the state directory",
                path: state_dir.clone(),
                source,
            })
            .and_then(|()| control::PidFile::create(&state_dir))
        {
            Ok(f) => Some(f),
            Err(e) => {
                log::warn!("{e}; `fim reload` cannot reach this daemon (SIGHUP still reloads)");
                None
            }
        };
        let reopen = pipeline.reopen.clone();
        let telemetry = reloader.telemetry.clone();
        tokio::spawn(signals.serve(reloader, reload_tx, state_dir.clone(), reopen));
        daemon::run(set, pipeline, cfg, telemetry, reloads, shutdown).await
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

/// What a reload reads again: the configuration file with the command line's overrides,
/// exactly as at start.
struct Reloader {
    common: Common,
    flags: RunFlags,
    /// The `[daemon]` settings in force.
    running: config::Daemon,
    /// The sinks in force.
    sinks: Vec<config::SinkConfig>,
    /// `--log-level`, which the configuration does not override.
    flag_level: Option<log::LevelFilter>,
    /// Reloads so far.
    generation: u64,
    /// `[metrics]` in force (a restart applies a change).
    metrics: config::Metrics,
    /// Where reloads are counted.
    telemetry: Arc<fim_core::telemetry::Telemetry>,
}

impl Reloader {
    /// Reads the configuration again and has the daemon apply it; the outcome as
    /// `fim reload` reports it.
    async fn reload(&mut self, daemon: &tokio::sync::mpsc::Sender<Reload>) -> Result<(), String> {
        let result = self.reload_once(daemon).await;
        self.telemetry
            .emit(fim_core::telemetry::Internal::ConfigReloaded { ok: result.is_ok() });
        result
    }

    async fn reload_once(
        &mut self,
        daemon: &tokio::sync::mpsc::Sender<Reload>,
    ) -> Result<(), String> {
        let (common, flags) = (self.common.clone(), self.flags.clone());
        let prepared = tokio::task::spawn_blocking(move || {
            let (config, set, rules) = prepare(&common, &flags)?;
            let limits = limits_of(&config, &rules, &common.root, &set);
            Ok::<_, Vec<String>>((
                config,
                Update {
                    watch: set,
                    rules,
                    limits,
                },
            ))
        })
        .await
        .map_err(|e| vec![format!("internal task failed: {e}")]);
        let (config, update) = match prepared.and_then(|p| p) {
            Ok(p) => p,
            Err(problems) => {
                let why = format!(
                    "reload refused, the running configuration stays: {}",
                    control::one_line(&problems.join("\n"))
                );
                error!("{why}");
                return Err(why);
            }
        };
        let new = &config.daemon;
        let mut restart_only = restart_only_changes(&self.running, new);
        if config.sinks != self.sinks {
            restart_only.push("`[sinks]`");
        }
        if config.metrics != self.metrics {
            restart_only.push("`[metrics]`");
        }
        let roots = update.watch.len() as u64;
        if !restart_only.is_empty() {
            log::warn!(
                "reload: {} changed; the running daemon keeps the old value until it is restarted",
                restart_only.join(", ")
            );
        }
        log::set_max_level(self.flag_level.unwrap_or(new.log_level));
        let (done, answer) = tokio::sync::oneshot::channel();
        if daemon.send(Reload { update, done }).await.is_err() {
            return Err("the daemon is stopping".to_owned());
        }
        match answer.await {
            Ok(Ok(())) => {
                self.running.hash_max_size = new.hash_max_size;
                self.running.log_level = new.log_level;
                // What is in force: the new rules, and what only a restart changes as it was.
                let applied = Config {
                    daemon: self.running.clone(),
                    sinks: self.sinks.clone(),
                    metrics: self.metrics.clone(),
                    ..config
                };
                use fim_core::telemetry::Internal;
                self.telemetry.emit(Internal::ConfigHash {
                    hash: fim_userspace::metrics::config_hash(&applied),
                });
                self.telemetry.emit(Internal::WatchedRoots { roots });
                Ok(())
            }
            Ok(Err(e)) => {
                let why = format!("reload failed: {e}");
                error!("{why}");
                Err(why)
            }
            Err(_) => Err("the daemon is stopping".to_owned()),
        }
    }
}

/// The `[daemon]` keys that differ between `running` and `new` and take effect only at
/// a restart (a reload applies the rules, `hash_max_size` and `log_level`).
fn restart_only_changes(running: &config::Daemon, new: &config::Daemon) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if running.sensor != new.sensor {
        changed.push("`daemon.sensor`");
    }
    if running.state_dir != new.state_dir {
        changed.push("`daemon.state_dir`");
    }
    if running.threads != new.threads {
        changed.push("`daemon.threads`");
    }
    if running.hash_quiet != new.hash_quiet {
        changed.push("`daemon.hash_quiet`");
    }
    if running.rescan_interval != new.rescan_interval {
        changed.push("`daemon.rescan_interval`");
    }
    changed
}

/// The one place signals are handled: SIGINT or SIGTERM starts a clean shutdown, SIGHUP
/// a reload.
struct Signals {
    streams: Option<[tokio::signal::unix::Signal; 3]>,
    shutdown: CancellationToken,
}

impl Signals {
    /// Takes the signals over from their defaults (SIGHUP would end the process).
    fn install(shutdown: CancellationToken) -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let streams = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(int), Ok(term), Ok(hup)) => Some([int, term, hup]),
            _ => {
                log::warn!("cannot install signal handlers; stop fim with SIGKILL");
                None
            }
        };
        Self { streams, shutdown }
    }

    /// Serves the signals until a stop: each SIGHUP reloads, and its outcome goes to the
    /// state directory for `fim reload`.
    async fn serve(
        self,
        mut reloader: Reloader,
        daemon: tokio::sync::mpsc::Sender<Reload>,
        state_dir: PathBuf,
        reopen: Reopen,
    ) {
        let Some([mut int, mut term, mut hup]) = self.streams else {
            return;
        };
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = hup.recv() => {
                    // Files the sinks write to are reopened (logrotate moved them away).
                    reopen.request();
                    log::info!("reload asked for: reading the configuration again");
                    let outcome = reloader.reload(&daemon).await;
                    reloader.generation += 1;
                    let status = control::Status {
                        pid: std::process::id() as i32,
                        generation: reloader.generation,
                        outcome,
                    };
                    if let Err(e) = control::write_status(&state_dir, &status) {
                        log::warn!("{e}");
                    }
                }
            }
        }
        self.shutdown.cancel();
    }
}

/// `fim reload`: signals the daemon on the state directory and reports its answer.
fn reload(args: &ReloadArgs) -> ExitCode {
    let state_dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => match load(args.config.as_deref()) {
            Ok((config, _)) => config.daemon.state_dir,
            Err(e) => return refuse(&[e.to_string()], EXIT_BAD_CONFIG),
        },
    };
    match control::reload(&state_dir, args.wait.into()) {
        Ok(Ok(())) => {
            println!("reloaded");
            ExitCode::SUCCESS
        }
        Ok(Err(why)) => refuse(&[why], EXIT_BAD_CONFIG),
        Err(e) => refuse(&[e.to_string()], 1),
    }
}

/// `fim status`.
fn status(args: &StatusArgs) -> ExitCode {
    use fim_userspace::metrics::status::{Scrape, summary};
    let address = match args.address {
        Some(a) => a,
        None => match load(args.config.as_deref()) {
            Ok((config, origin)) => match config.metrics.address {
                Some(a) => a,
                None => {
                    return refuse(
                        &[format!(
                            "{origin} turns the metrics endpoint off ([metrics] address = \"off\"): \
                             there is nothing to read the daemon's state from"
                        )],
                        EXIT_UNREACHABLE,
                    );
                }
            },
            Err(e) => return refuse(&[e.to_string()], EXIT_BAD_CONFIG),
        },
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let get = |path: &str| -> Result<(u16, String), String> {
        let url = format!("http://{address}{path}");
        let mut response = agent
            .get(&url)
            .call()
            .map_err(|e| format!("no daemon answers at {url}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("reading {url}: {e}"))?;
        Ok((status, body))
    };
    let answers = get("/metrics").and_then(|m| Ok((m, get("/health")?, get("/ready")?)));
    let ((status, metrics), health, ready) = match answers {
        Ok(a) => a,
        Err(why) => return refuse(&[why], EXIT_UNREACHABLE),
    };
    if status != 200 {
        return refuse(
            &[format!("{address}/metrics answered HTTP {status}")],
            EXIT_UNREACHABLE,
        );
    }
    let now = fim_core::event::unix_now_ns() as f64 / 1e9;
    let text = summary(
        &Scrape::parse(&metrics),
        (health.0, &health.1),
        (ready.0, &ready.1),
        &address.to_string(),
        now,
    );
    let printed = emit(&text);
    if printed != ExitCode::SUCCESS {
        return printed;
    }
    match (health.0, ready.0) {
        (200, 200) => ExitCode::SUCCESS,
        (200, _) => ExitCode::from(EXIT_NOT_READY),
        _ => ExitCode::from(EXIT_UNHEALTHY),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse_run(args: &[&str]) -> Result<(Common, RunFlags), clap::Error> {
        let argv = ["fim", "run"].iter().chain(args).copied();
        match Cli::try_parse_from(argv)?.command {
            Command::Run { common, flags } => Ok((common, flags)),
            _ => unreachable!("`run` parses as Run"),
        }
    }

    fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fim.toml");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[test]
    fn without_flags_the_configuration_decides() {
        let (_dir, path) = write_config(
            "[daemon]\nsensor = \"fanotify\"\nhash_quiet = \"700ms\"\nthreads = 3\n\n\
             [[rule]]\nname = \"etc\"\npaths = [\"/etc\"]\n",
        );
        let path_arg = path.to_string_lossy().into_owned();
        let (common, flags) = parse_run(&["--config", &path_arg]).expect("parses");
        let (config, _) = effective(&common, &flags).expect("valid");
        assert_eq!(config.daemon.sensor, Sensor::Fanotify);
        assert_eq!(config.daemon.hash_quiet, Duration::from_millis(700));
        assert_eq!(config.daemon.threads, Some(3));
        assert_eq!(
            config.daemon.rescan_interval,
            Some(defaults::RESCAN_INTERVAL)
        );
        assert_eq!(config.rules[0].name, "etc");
    }

    #[test]
    fn a_configuration_for_windows_alone_watches_nothing_here_and_says_so() {
        let (_dir, path) = write_config("[windows]\npoll_interval = \"1m\"\n");
        let path_arg = path.to_string_lossy().into_owned();
        let (common, flags) = parse_run(&["--config", &path_arg]).expect("parses");
        let problems = prepare(&common, &flags).expect_err("refused");
        assert!(problems[0].contains("no [[rule]]"), "{problems:?}");
        let (common, flags) =
            parse_run(&["--config", &path_arg, "--watch", "/etc"]).expect("parses");
        assert!(prepare(&common, &flags).is_ok(), "--watch gives it a rule");
    }

    #[test]
    fn flags_override_the_configuration() {
        let (_dir, path) = write_config(
            "[daemon]\nsensor = \"fanotify\"\nrescan_interval = \"2h\"\n\n\
             [[rule]]\nname = \"etc\"\npaths = [\"/etc\"]\n",
        );
        let path_arg = path.to_string_lossy().into_owned();
        let (common, flags) = parse_run(&[
            "--config",
            &path_arg,
            "--sensor",
            "tracepoint",
            "--rescan-interval",
            "0",
            "--hash-max-size",
            "2MiB",
            "--watch",
            "/srv",
        ])
        .expect("parses");
        let (config, _) = effective(&common, &flags).expect("valid");
        assert_eq!(config.daemon.sensor, Sensor::Tracepoint);
        assert_eq!(config.daemon.rescan_interval, None);
        assert_eq!(config.daemon.hash_max_size, 2 << 20);
        assert_eq!(config.rules.len(), 1);
        assert_eq!(config.rules[0].paths, vec!["/srv".to_owned()]);
    }

    #[test]
    fn a_bad_configuration_file_is_refused_with_every_problem() {
        let (_dir, path) = write_config("[daemon]\nsensor = \"x\"\nnope = 1\n");
        let Err(e) = load(Some(&path)) else {
            panic!("must be refused");
        };
        let text = e.to_string();
        assert!(text.contains("3 problem(s)"), "{text}");
        assert!(text.contains("line 2: `daemon.sensor`"), "{text}");
        assert!(
            text.contains("line 3: `daemon.nope`: unknown key"),
            "{text}"
        );
        let missing = load(Some(Path::new("/nonexistent/fim.toml")));
        assert!(
            matches!(missing, Err(config::LoadError::Read { .. })),
            "a named file that cannot be read is an error, not the defaults"
        );
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
    fn every_sensor_is_named_as_in_the_configuration_and_nothing_else() {
        for sensor in Sensor::ALL {
            let Ok((_, flags)) = parse_run(&["--sensor", sensor.name()]) else {
                panic!("{} must parse", sensor.name());
            };
            assert_eq!(flags.sensor.map(Sensor::from), Some(sensor));
        }
        assert_eq!(SensorArg::value_variants().len(), Sensor::ALL.len());
        let Err(e) = parse_run(&["--sensor", "kprobe"]) else {
            panic!("an unknown sensor must be refused");
        };
        assert!(e.to_string().contains("possible values"), "{e}");
    }
}
