//! The configuration file (TOML): the daemon's settings and the rules naming what is watched.
//!
//! The file is read from a spanned document by hand rather than through serde, so that every
//! problem (an unknown key, a wrong type, a relative path, a bad glob, duration or size, two
//! rules with one name) is reported with its key and line, all of them in one go: a user
//! fixing a file should not have to run the check once per mistake.
//!
//! [`Config::builtin`] is what runs without a file; [`Config::render`] writes any
//! configuration back as a file with every key explained, and reading that file gives the
//! same configuration (`fim config default` prints the built-in one this way).
//!
//! Pure logic: no file is opened here except by [`Config::load`].

use std::{
    fmt::Write as _,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

use crate::{attrs::Attr, defaults, event::Action, watch};

mod doc;
mod metrics;
mod render;
mod rule;
mod sinks;
#[cfg(test)]
mod tests;
mod windows;

pub use metrics::Metrics;
pub use rule::{OPERATION_GROUPS, Rule, homes_from_passwd, parse_rate};
pub use sinks::{
    DEFAULT_FACILITY, Http, Payload, SINK_TYPES, Secret, SinkConfig, SinkKind, Spool, Syslog, Tls,
    Transport, facility_name,
};
pub use windows::{FileRule, RegistryRule, Views, Windows, parse_key};

use doc::{Doc, Table};
use rule::read_rule;

/// Which Linux sensor the daemon uses (`[daemon] sensor`, `fim run --sensor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sensor {
    /// The best combination this kernel allows.
    Auto,
    /// The best eBPF tier: LSM, then fentry, then tracepoints.
    Ebpf,
    /// The LSM tier exactly.
    Lsm,
    /// The fentry tier exactly.
    Fentry,
    /// The tracepoint tier exactly.
    Tracepoint,
    /// fanotify, without eBPF.
    Fanotify,
}

impl Sensor {
    /// Every sensor, in the order `--help` lists them.
    pub const ALL: [Self; 6] = [
        Self::Auto,
        Self::Ebpf,
        Self::Lsm,
        Self::Fentry,
        Self::Tracepoint,
        Self::Fanotify,
    ];

    /// The name the file and the command line use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Ebpf => "ebpf",
            Self::Lsm => "lsm",
            Self::Fentry => "fentry",
            Self::Tracepoint => "tracepoint",
            Self::Fanotify => "fanotify",
        }
    }

    /// The sensor called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The `[daemon]` table: how the daemon runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Daemon {
    /// Which sensor to use.
    pub sensor: Sensor,
    /// Directory holding the baseline database.
    pub state_dir: PathBuf,
    /// Threads that stat and hash files; `None`: one per CPU.
    pub threads: Option<usize>,
    /// Files larger than this are reported as "not hashed: too large".
    pub hash_max_size: u64,
    /// A file still open for writing is hashed after this long without a close.
    pub hash_quiet: Duration,
    /// How often the watched paths are rescanned; `None`: never.
    pub rescan_interval: Option<Duration>,
    /// Which messages the log (stderr) shows.
    pub log_level: log::LevelFilter,
}

impl Default for Daemon {
    fn default() -> Self {
        Self {
            sensor: Sensor::Auto,
            state_dir: PathBuf::from(defaults::STATE_DIR),
            threads: None,
            hash_max_size: defaults::HASH_MAX_SIZE,
            hash_quiet: defaults::HASH_QUIET,
            rescan_interval: Some(defaults::RESCAN_INTERVAL),
            log_level: log::LevelFilter::Info,
        }
    }
}

/// How much an event matters (`event.severity` in ECS, on Elastic's 0-100 risk scale).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth keeping.
    Low,
    /// Worth a look.
    Medium,
    /// An attacker's likely step.
    High,
    /// Act now.
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Self; 4] = [Self::Low, Self::Medium, Self::High, Self::Critical];

    /// The name the file uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// The `event.severity` number (the values Elastic's detection rules use).
    pub fn ecs(self) -> u8 {
        match self {
            Self::Low => 21,
            Self::Medium => 47,
            Self::High => 73,
            Self::Critical => 99,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// How the daemon runs.
    pub daemon: Daemon,
    /// What is watched.
    pub rules: Vec<Rule>,
    /// Where events go (none: standard output).
    pub sinks: Vec<SinkConfig>,
    /// The metrics endpoint and health verdicts.
    pub metrics: Metrics,
    /// What the Windows build watches.
    pub windows: Windows,
}

/// The built-in rule's name.
pub const DEFAULT_RULE: &str = "defender-for-cloud-linux";

/// Largest `threads` value accepted (more would only cost memory).
pub const MAX_THREADS: usize = 256;

/// Longest duration accepted anywhere (a quiet period, a rescan interval, a rate-limit
/// window): longer ones would overflow the clocks they are added to.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// `text` as a duration with its unit, at most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration with its unit (\"2s\", \"1h\"): {e}"))?;
    if d > MAX_DURATION {
        return Err(format!("`{text}` is longer than a year"));
    }
    Ok(d)
}

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: `{key}`: {message}")]
pub struct ConfigError {
    /// 1-based line of the offending key or value.
    pub line: usize,
    /// The key, in dotted form (`rule[2].paths[0]`, `daemon.sensor`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("reading the configuration `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file has problems, every one listed.
    #[error("the configuration `{path}` has {} problem(s):\n  {}", errors.len(), list(errors))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        errors: Vec<ConfigError>,
    },
}

fn list(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

impl Config {
    /// What runs without a configuration file: the default settings and the built-in
    /// ruleset ([`crate::builtin`]).
    pub fn builtin() -> Self {
        Self {
            daemon: Daemon::default(),
            rules: crate::builtin::rules(),
            sinks: Vec::new(),
            metrics: Metrics::default(),
            windows: Windows::builtin(),
        }
    }

    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|errors| LoadError::Invalid {
            path: path.to_owned(),
            errors,
        })
    }

    /// Parses and checks a configuration; every problem is returned, in line order.
    pub fn parse(text: &str) -> Result<Self, Vec<ConfigError>> {
        let doc = Doc::new(text);
        let root = match DeTable::parse(text) {
            Ok(root) => root,
            Err(e) => {
                let line = e.span().map_or(1, |s| doc.line(s.start));
                return Err(vec![ConfigError {
                    line,
                    key: "(syntax)".into(),
                    message: e.message().trim().to_owned(),
                }]);
            }
        };
        let mut errors = Vec::new();
        let mut top = Table::new(&doc, "", root.get_ref(), 1);
        let mut config = Self {
            daemon: Daemon::default(),
            rules: Vec::new(),
            sinks: Vec::new(),
            metrics: Metrics::default(),
            windows: Windows::builtin(),
        };
        // Every rule's name with its line and place, valid rule or not, for the duplicate
        // check.
        let mut names: Vec<(String, usize, usize)> = Vec::new();
        if let Some(daemon) = top.table("daemon", &mut errors) {
            config.daemon = read_daemon(daemon, &mut errors);
        }
        if let Some(sinks) = top.table("sinks", &mut errors) {
            config.sinks = sinks::read_sinks(sinks, &mut errors);
        }
        if let Some(table) = top.table("metrics", &mut errors) {
            config.metrics = metrics::read_metrics(table, &mut errors);
        }
        let windows = top.table("windows", &mut errors);
        let has_windows = windows.is_some();
        if let Some(table) = windows {
            config.windows = windows::read_windows(table, &mut errors);
        }
        match top.take("rule") {
            // A configuration for Windows alone needs no Linux rule.
            None if has_windows => {}
            None => {
                errors.push(ConfigError {
                    line: 1,
                    key: "rule".into(),
                    message: "no rule: a configuration names what it watches in `[[rule]]` \
                              tables (`fim config default` prints the built-in ones)"
                        .into(),
                });
            }
            Some(value) => match value.get_ref() {
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let key = format!("rule[{}]", i + 1);
                        match item.get_ref() {
                            DeValue::Table(t) => {
                                let table = Table::new(&doc, &key, t, doc.line(item.span().start));
                                let (name, rule) = read_rule(table, &mut errors);
                                names.extend(name.map(|(n, line)| (n, line, i + 1)));
                                config.rules.extend(rule);
                            }
                            _ => errors.push(doc.error(&key, item.span(), "must be a table")),
                        }
                    }
                }
                _ => errors.push(doc.error(
                    "rule",
                    value.span(),
                    "must be an array of tables (`[[rule]]`)",
                )),
            },
        }
        top.finish(&mut errors);
        for (i, (name, line, place)) in names.iter().enumerate() {
            if names[..i].iter().any(|(other, _, _)| other == name) {
                errors.push(ConfigError {
                    line: *line,
                    key: format!("rule[{place}].name"),
                    message: format!("`{name}` names another rule already"),
                });
            }
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            errors.sort_by_key(|e| e.line);
            Err(errors)
        }
    }
}

/// Units a size may carry, largest first.
const UNITS: [(&str, u64); 9] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
    ("B", 1),
];

/// Parses a size: a whole number with an optional unit (`B`, `KiB`, `MiB`, `GiB`, `TiB`,
/// or the decimal `KB`, `MB`, `GB`, `TB`), with or without a space between.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let unit = unit.trim_start();
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (a whole number and a unit: \"1 GiB\")"))?;
    let scale = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, s)| *s)
            .ok_or_else(|| {
                format!("`{unit}` is not a size unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")
            })?
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// A size in the largest binary unit that divides it.
pub fn render_size(bytes: u64) -> String {
    for (unit, scale) in &UNITS[..4] {
        if bytes != 0 && bytes.is_multiple_of(*scale) {
            return format!("{} {unit}", bytes / scale);
        }
    }
    format!("{bytes} B")
}

fn read_daemon(mut t: Table<'_, '_>, errors: &mut Vec<ConfigError>) -> Daemon {
    let mut d = Daemon::default();
    let doc = t.doc;
    if let Some((name, span)) = t.string("sensor", errors) {
        match Sensor::from_name(&name) {
            Some(s) => d.sensor = s,
            None => {
                let names: Vec<&str> = Sensor::ALL.iter().map(|s| s.name()).collect();
                errors.push(doc.error(
                    &t.key("sensor"),
                    span,
                    format!("`{name}` is not a sensor (one of: {})", names.join(", ")),
                ));
            }
        }
    }
    if let Some((dir, span)) = t.string("state_dir", errors) {
        if Path::new(&dir).is_absolute() {
            d.state_dir = PathBuf::from(dir);
        } else {
            errors.push(doc.error(
                &t.key("state_dir"),
                span,
                format!("`{dir}` is not an absolute path"),
            ));
        }
    }
    if let Some(value) = t.take("threads") {
        let key = t.key("threads");
        match value.get_ref() {
            DeValue::Integer(i) => match usize::from_str_radix(i.as_str(), i.radix()) {
                Ok(0) => d.threads = None,
                Ok(n) if n <= MAX_THREADS => d.threads = Some(n),
                _ => errors.push(doc.error(
                    &key,
                    value.span(),
                    format!("must be 0 (one per CPU) up to {MAX_THREADS}"),
                )),
            },
            _ => errors.push(doc.error(&key, value.span(), "must be a whole number")),
        }
    }
    if let Some(value) = t.take("hash_max_size") {
        let key = t.key("hash_max_size");
        let parsed = match value.get_ref() {
            DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| format!("`{i}` is not a size")),
            DeValue::String(s) => parse_size(s),
            _ => Err(
                "must be a size: a number of bytes, or a string with its unit (\"1 GiB\")".into(),
            ),
        };
        match parsed {
            Ok(n) => d.hash_max_size = n,
            Err(m) => errors.push(doc.error(&key, value.span(), m)),
        }
    }
    if let Some((text, span)) = t.string("hash_quiet", errors) {
        match parse_duration(&text) {
            Ok(q) if !q.is_zero() => d.hash_quiet = q,
            Ok(_) => errors.push(doc.error(&t.key("hash_quiet"), span, "must be longer than 0")),
            Err(m) => errors.push(doc.error(&t.key("hash_quiet"), span, m)),
        }
    }
    if let Some((text, span)) = t.string("log_level", errors) {
        match text.parse::<log::LevelFilter>() {
            Ok(level) => d.log_level = level,
            Err(_) => errors.push(doc.error(
                &t.key("log_level"),
                span,
                format!("`{text}` is not a log level (off, error, warn, info, debug, trace)"),
            )),
        }
    }
    if let Some((text, span)) = t.string("rescan_interval", errors) {
        match parse_duration(&text) {
            Ok(i) => d.rescan_interval = Some(i).filter(|i| !i.is_zero()),
            Err(m) => errors.push(doc.error(
                &t.key("rescan_interval"),
                span,
                format!("{m} (\"0\": never)"),
            )),
        }
    }
    t.finish(errors);
    d
}
