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

/// Names for groups of operations a rule may list instead of each action.
pub const OPERATION_GROUPS: [(&str, &[Action]); 4] = [
    (
        "content",
        &[
            Action::OpenWrite,
            Action::Write,
            Action::CloseWrite,
            Action::Truncate,
            Action::Fallocate,
            Action::Modified,
        ],
    ),
    (
        "metadata",
        &[
            Action::Chmod,
            Action::Chown,
            Action::SetXattr,
            Action::RemoveXattr,
            Action::Attrib,
            Action::Utimes,
        ],
    ),
    (
        "namespace",
        &[
            Action::Create,
            Action::Mkdir,
            Action::Mknod,
            Action::Symlink,
            Action::Link,
            Action::Unlink,
            Action::Rmdir,
            Action::Rename,
        ],
    ),
    ("scan", &[Action::Added, Action::Removed, Action::Changed]),
];

/// One `[[rule]]`: a named group of watched paths and what an event under them means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Unique among the rules (`rule.name`).
    pub name: String,
    /// `rule.id`; the name when not given.
    pub id: Option<String>,
    /// Why the rule exists (shown by `fim config check`).
    pub description: Option<String>,
    /// Absolute paths: a directory (watched with what is below it), a file, or `DIR/GLOB`.
    pub paths: Vec<String>,
    /// Whether a directory in `paths` is watched with everything below it (`false`: with
    /// its direct entries only). A file listed in another rule is watched either way.
    pub recursive: bool,
    /// Whether a file's content is hashed (`false`: never read; `sha256` not compared).
    pub hash: bool,
    /// At most this many events per window; the rest are summed up per window.
    pub rate_limit: Option<(u32, Duration)>,
    /// The attributes compared (`fim.changed`, and what makes a rescan report `changed`);
    /// `None`: every one.
    pub attributes: Option<Vec<String>>,
    /// Paths under the rule that it does not cover: a glob on the file name (`*.swp`), or
    /// an absolute glob on the whole path (`/var/log/journal/**`).
    pub exclude: Vec<String>,
    /// The operations reported (actions, or the groups in [`OPERATION_GROUPS`]); `None`:
    /// every one.
    pub operations: Option<Vec<String>>,
    /// How much an event under the rule matters.
    pub severity: Severity,
    /// MITRE ATT&CK technique ids (`T1053.003`).
    pub techniques: Vec<String>,
    /// Free tags: compliance references (`PCI-DSS 11.5`, `CIS 6.1`) and the like.
    pub tags: Vec<String>,
}

impl Rule {
    /// A rule watching `paths` with every other key at its default.
    pub fn new(name: &str, paths: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            id: None,
            description: None,
            paths,
            recursive: true,
            hash: true,
            rate_limit: None,
            attributes: None,
            exclude: Vec::new(),
            operations: None,
            severity: Severity::Medium,
            techniques: Vec::new(),
            tags: Vec::new(),
        }
    }

    /// The attributes the rule compares (`None`: every one). Checked on reading.
    pub fn compared(&self) -> Option<Vec<Attr>> {
        let listed = self.attributes.as_ref().map(|l| {
            l.iter()
                .filter_map(|a| Attr::from_name(a))
                .collect::<Vec<_>>()
        });
        match (listed, self.hash) {
            (Some(l), _) => Some(l),
            (None, true) => None,
            (None, false) => Some(
                Attr::ALL
                    .into_iter()
                    .filter(|a| *a != Attr::Sha256)
                    .collect(),
            ),
        }
    }

    /// The actions the rule reports (`None`: every one). Its names were checked on reading.
    pub fn actions(&self) -> Option<Vec<Action>> {
        self.operations.as_ref().map(|ops| {
            let mut out = Vec::new();
            for op in ops {
                match OPERATION_GROUPS.iter().find(|(g, _)| g == op) {
                    Some((_, actions)) => out.extend_from_slice(actions),
                    None => out.extend(Action::from_name(op)),
                }
            }
            out
        })
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// How the daemon runs.
    pub daemon: Daemon,
    /// What is watched.
    pub rules: Vec<Rule>,
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
        };
        // Every rule's name with its line and place, valid rule or not, for the duplicate
        // check.
        let mut names: Vec<(String, usize, usize)> = Vec::new();
        if let Some(daemon) = top.table("daemon", &mut errors) {
            config.daemon = read_daemon(daemon, &mut errors);
        }
        match top.take("rule") {
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

    /// The configuration as a file, every key explained in a comment; [`Self::parse`] of it
    /// gives `self` back.
    pub fn render(&self) -> String {
        let d = &self.daemon;
        let mut out = String::new();
        out.push_str(
            "# fim configuration (TOML). `fim run` reads /etc/fim/fim.toml when it exists, or the\n\
             # file named by `--config`; without either it runs on the built-in configuration,\n\
             # which `fim config default` prints. Command-line flags override these keys.\n\
             # `fim config check [FILE]` validates a file and prints what it watches.\n\n",
        );
        out.push_str("[daemon]\n");
        let sensors: Vec<&str> = Sensor::ALL.iter().map(|s| s.name()).collect();
        let _ = writeln!(
            out,
            "# Which sensor sees changes: {}.\n\
             # auto: the best this kernel allows, logged at start.\n\
             sensor = \"{}\"",
            sensors.join(", "),
            d.sensor.name()
        );
        let _ = writeln!(
            out,
            "# Directory holding the baseline database (absolute).\n\
             state_dir = {}",
            quote(&d.state_dir.to_string_lossy())
        );
        let _ = writeln!(
            out,
            "# Threads that stat and hash files; 0: one per CPU (at most {MAX_THREADS}).\n\
             threads = {}",
            d.threads.unwrap_or(0)
        );
        let _ = writeln!(
            out,
            "# Files larger than this are reported as \"not hashed: too large\" (bytes, or a\n\
             # size with its unit: \"512 MiB\", \"1 GiB\").\n\
             hash_max_size = \"{}\"",
            render_size(d.hash_max_size)
        );
        let _ = writeln!(
            out,
            "# A file still open for writing is hashed after this long without a close\n\
             # (a duration with its unit: \"500ms\", \"2s\").\n\
             hash_quiet = \"{}\"",
            humantime::format_duration(d.hash_quiet)
        );
        let _ = writeln!(
            out,
            "# How often the watched paths are rescanned, to catch what real time missed\n\
             # (\"30m\", \"1h\"; \"0\": never).\n\
             rescan_interval = \"{}\"",
            d.rescan_interval.map_or_else(
                || "0".to_owned(),
                |i| humantime::format_duration(i).to_string()
            )
        );
        let _ = writeln!(
            out,
            "# Which messages the log on stderr shows: off, error, warn, info, debug, trace.\n\
             log_level = \"{}\"",
            d.log_level.as_str().to_lowercase()
        );
        for rule in &self.rules {
            out.push_str(
                "\n# A rule: a name unique among the rules, and the absolute paths it watches:\n\
                 # a directory (with everything below it), a file, or DIR/GLOB (wildcards in\n\
                 # the last component only: \"/etc/*.conf\"); `~/PATH` is PATH in every user's\n\
                 # home (from /etc/passwd). A path that does not exist yet is watched for\n\
                 # appearing.\n\
                 [[rule]]\n",
            );
            let _ = writeln!(out, "name = {}", quote(&rule.name));
            if let Some(d) = &rule.description {
                let _ = writeln!(out, "# Why the rule exists.\ndescription = {}", quote(d));
            }
            if let Some(id) = &rule.id {
                let _ = writeln!(
                    out,
                    "# `rule.id` in events (default: the name).\nid = {}",
                    quote(id)
                );
            }
            out.push_str("paths = [\n");
            for p in &rule.paths {
                let _ = writeln!(out, "    {},", quote(p));
            }
            out.push_str("]\n");
            let _ = writeln!(
                out,
                "# Whether a directory is watched with everything below it (false: its\n\
                 # direct entries only).\nrecursive = {}",
                rule.recursive
            );
            let _ = writeln!(
                out,
                "# Whether files' content is hashed (SHA-256).\nhash = {}",
                rule.hash
            );
            match rule.rate_limit {
                None => out.push_str(
                    "# At most N events per window (\"100/1m\"); the rest are summed up in one\n\
                     # `suppressed` event per window. Left out: no limit.\n",
                ),
                Some((n, window)) => {
                    let _ = writeln!(
                        out,
                        "# At most N events per window; the rest are summed up in one\n\
                         # `suppressed` event per window.\nrate_limit = \"{n}/{}\"",
                        humantime::format_duration(window)
                    );
                }
            }
            let attrs: Vec<&str> = Attr::ALL.iter().map(|a| a.as_str()).collect();
            match &rule.attributes {
                None => {
                    let _ = writeln!(
                        out,
                        "# The attributes compared: {}.\n# Left out: every one.",
                        attrs.join(", ")
                    );
                }
                Some(list) => {
                    let _ = writeln!(
                        out,
                        "# The attributes compared: {}.\nattributes = {}",
                        attrs.join(", "),
                        array(list)
                    );
                }
            }
            let _ = writeln!(
                out,
                "# What the rule does not cover: a glob on the file name (\"*.swp\"), or an\n\
                 # absolute glob on the whole path (\"/var/log/journal/**\").\n\
                 exclude = {}",
                array(&rule.exclude)
            );
            let groups: Vec<&str> = OPERATION_GROUPS.iter().map(|(g, _)| *g).collect();
            match &rule.operations {
                None => {
                    let _ = writeln!(
                        out,
                        "# The operations reported: event.action names, or the groups {}.\n\
                         # Left out: every operation.",
                        groups.join(", ")
                    );
                }
                Some(ops) => {
                    let _ = writeln!(
                        out,
                        "# The operations reported: event.action names, or the groups {}.\n\
                         operations = {}",
                        groups.join(", "),
                        array(ops)
                    );
                }
            }
            let severities: Vec<&str> = Severity::ALL.iter().map(|s| s.name()).collect();
            let _ = writeln!(
                out,
                "# How much an event matters ({}): `event.severity`.\nseverity = \"{}\"",
                severities.join(", "),
                rule.severity.name()
            );
            let _ = writeln!(
                out,
                "# MITRE ATT&CK technique ids: `threat.technique.id`.\ntechniques = {}",
                array(&rule.techniques)
            );
            let _ = writeln!(
                out,
                "# Free tags, such as compliance references: `tags`.\ntags = {}",
                array(&rule.tags)
            );
        }
        out
    }
}

/// Parses a rate limit: `N/DURATION` (`100/1m`), both above zero.
pub fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let bad = || format!("`{text}` is not a rate limit (events per window: \"100/1m\")");
    let (n, window) = text.split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    let window = parse_duration(window).map_err(|_| bad())?;
    if n == 0 || window.is_zero() {
        return Err(format!(
            "`{text}`: both the count and the window must be above zero"
        ));
    }
    Ok((n, window))
}

/// Checks a rule's path: absolute, or `~/REST` (REST under every user's home).
fn check_rule_path(path: &str) -> Result<(), watch::WatchError> {
    use watch::WatchError as E;
    let Some(rest) = path.strip_prefix("~/") else {
        return watch::check_pattern(path);
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(E::NotAbsolute(path.to_owned()));
    }
    watch::check_pattern(&format!("/{rest}")).map_err(|e| match e {
        E::GlobInDirectory(_) => E::GlobInDirectory(path.to_owned()),
        E::BadGlob { reason, .. } => E::BadGlob {
            pattern: path.to_owned(),
            reason,
        },
        E::TooLong(_) => E::TooLong(path.to_owned()),
        other => other,
    })
}

/// The home directories in an `/etc/passwd` text: each distinct absolute one but `/`, in
/// the file's order (the caller keeps those that exist).
pub fn homes_from_passwd(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        let Some(home) = fields.get(5).filter(|_| fields.len() == 7) else {
            continue;
        };
        let home = home.trim_end_matches('/');
        if home.starts_with('/') && !out.iter().any(|h| h == home) {
            out.push(home.to_owned());
        }
    }
    out
}

impl Rule {
    /// The rule's paths as watched: `~/REST` once under each of `homes`, and every path
    /// under `root` (`/` on a real host; a test's mirror of one otherwise).
    pub fn resolved_paths(&self, root: &str, homes: &[String]) -> Vec<String> {
        let root = root.trim_end_matches('/');
        let mut out = Vec::new();
        for path in &self.paths {
            match path.strip_prefix("~/") {
                Some(rest) => out.extend(homes.iter().map(|h| format!("{root}{h}/{rest}"))),
                None => out.push(format!("{root}{path}")),
            }
        }
        out
    }
}

/// A TOML array of basic strings, on one line.
fn array(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| quote(i)).collect();
    format!("[{}]", quoted.join(", "))
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
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

/// The document's text, for turning byte offsets into lines.
struct Doc {
    line_starts: Vec<usize>,
}

impl Doc {
    fn new(text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { line_starts }
    }

    /// 1-based line of byte `offset`.
    fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset).max(1)
    }

    fn error(&self, key: &str, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            line: self.line(span.start),
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// A table being read: which keys were used, so the others can be reported.
struct Table<'a, 'i> {
    doc: &'a Doc,
    /// Dotted name of the table ("" for the top).
    name: String,
    entries: &'a DeTable<'i>,
    used: Vec<&'a str>,
    /// Where the table starts (for problems with no key of their own).
    line: usize,
}

type Value<'i> = Spanned<DeValue<'i>>;

impl<'a, 'i> Table<'a, 'i> {
    fn new(doc: &'a Doc, name: &str, entries: &'a DeTable<'i>, line: usize) -> Self {
        Self {
            doc,
            name: name.to_owned(),
            entries,
            used: Vec::new(),
            line,
        }
    }

    fn key(&self, key: &str) -> String {
        if self.name.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.name)
        }
    }

    fn has(&self, key: &str) -> bool {
        self.entries
            .iter()
            .any(|(k, _)| k.get_ref().as_ref() == key)
    }

    fn take(&mut self, key: &'a str) -> Option<&'a Value<'i>> {
        let found = self
            .entries
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v);
        if found.is_some() {
            self.used.push(key);
        }
        found
    }

    fn table(&mut self, key: &'a str, errors: &mut Vec<ConfigError>) -> Option<Table<'a, 'i>> {
        let value = self.take(key)?;
        let name = self.key(key);
        match value.get_ref() {
            DeValue::Table(t) => Some(Table::new(
                self.doc,
                &name,
                t,
                self.doc.line(value.span().start),
            )),
            _ => {
                errors.push(self.doc.error(&name, value.span(), "must be a table"));
                None
            }
        }
    }

    fn string(
        &mut self,
        key: &'a str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<(String, Range<usize>)> {
        let value = self.take(key)?;
        match value.get_ref() {
            DeValue::String(s) => Some((s.to_string(), value.span())),
            _ => {
                errors.push(
                    self.doc
                        .error(&self.key(key), value.span(), "must be a string"),
                );
                None
            }
        }
    }

    /// An array of strings, each checked by `check`; problems are recorded and the bad
    /// items left out. A missing key is an empty list.
    fn strings(
        &mut self,
        key: &'a str,
        errors: &mut Vec<ConfigError>,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Vec<String> {
        let Some(value) = self.take(key) else {
            return Vec::new();
        };
        let name = self.key(key);
        let DeValue::Array(items) = value.get_ref() else {
            errors.push(
                self.doc
                    .error(&name, value.span(), "must be an array of strings"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let key = format!("{name}[{}]", i + 1);
            match item.get_ref() {
                DeValue::String(s) => match check(s) {
                    Ok(()) => out.push(s.to_string()),
                    Err(m) => errors.push(self.doc.error(&key, item.span(), m)),
                },
                _ => errors.push(self.doc.error(&key, item.span(), "must be a string")),
            }
        }
        out
    }

    /// Every key that was not used is an error.
    fn finish(self, errors: &mut Vec<ConfigError>) {
        for (k, _) in self.entries.iter() {
            let name: &str = k.get_ref().as_ref();
            if !self.used.contains(&name) {
                errors.push(self.doc.error(&self.key(name), k.span(), "unknown key"));
            }
        }
    }
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

/// A rule's name with its line (when it has one), and the rule when it has no problem.
fn read_rule(
    mut t: Table<'_, '_>,
    errors: &mut Vec<ConfigError>,
) -> (Option<(String, usize)>, Option<Rule>) {
    let doc = t.doc;
    let before = errors.len();
    let name = match t.string("name", errors) {
        Some((n, span)) if n.trim().is_empty() => {
            errors.push(doc.error(&t.key("name"), span, "must not be empty"));
            None
        }
        Some((n, span)) => Some((n, doc.line(span.start))),
        None => {
            if !t.used.contains(&"name") {
                errors.push(ConfigError {
                    line: t.line,
                    key: t.key("name"),
                    message: "missing: every rule has a name".into(),
                });
            }
            None
        }
    };
    let mut paths = Vec::new();
    match t.take("paths") {
        None => errors.push(ConfigError {
            line: t.line,
            key: t.key("paths"),
            message: "missing: every rule lists the paths it watches".into(),
        }),
        Some(value) => match value.get_ref() {
            DeValue::Array(items) if items.is_empty() => {
                errors.push(doc.error(&t.key("paths"), value.span(), "must not be empty"));
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let key = format!("{}[{}]", t.key("paths"), i + 1);
                    match item.get_ref() {
                        DeValue::String(s) => match check_rule_path(s) {
                            Ok(()) => paths.push(s.to_string()),
                            Err(e) => errors.push(doc.error(&key, item.span(), e.to_string())),
                        },
                        _ => errors.push(doc.error(&key, item.span(), "must be a string")),
                    }
                }
            }
            _ => {
                errors.push(doc.error(&t.key("paths"), value.span(), "must be an array of strings"))
            }
        },
    }
    let id = match t.string("id", errors) {
        Some((id, span)) if id.trim().is_empty() => {
            errors.push(doc.error(&t.key("id"), span, "must not be empty"));
            None
        }
        other => other.map(|(id, _)| id),
    };
    let mut flag = |key: &'static str, errors: &mut Vec<ConfigError>| -> bool {
        match t.take(key) {
            None => true,
            Some(value) => match value.get_ref() {
                DeValue::Boolean(b) => *b,
                _ => {
                    errors.push(doc.error(&t.key(key), value.span(), "must be true or false"));
                    true
                }
            },
        }
    };
    let recursive = flag("recursive", errors);
    let hash = flag("hash", errors);
    let rate_limit =
        t.string("rate_limit", errors)
            .and_then(|(text, span)| match parse_rate(&text) {
                Ok(rate) => Some(rate),
                Err(m) => {
                    errors.push(doc.error(&t.key("rate_limit"), span, m));
                    None
                }
            });
    let attributes = t.has("attributes").then(|| {
        t.strings("attributes", errors, |name| {
            if Attr::from_name(name).is_some() {
                Ok(())
            } else {
                let names: Vec<&str> = Attr::ALL.iter().map(|a| a.as_str()).collect();
                Err(format!(
                    "`{name}` is not an attribute (one of: {})",
                    names.join(", ")
                ))
            }
        })
    });
    if let Some(list) = &attributes
        && list.is_empty()
    {
        errors.push(ConfigError {
            line: t.line,
            key: t.key("attributes"),
            message: "must not be empty (leave it out to compare every attribute)".into(),
        });
    }
    if !hash
        && attributes
            .as_ref()
            .is_some_and(|l| l.iter().any(|a| a == "sha256"))
    {
        errors.push(ConfigError {
            line: t.line,
            key: t.key("attributes"),
            message: "compares `sha256` while `hash = false`: one of them must go".into(),
        });
    }
    let description = match t.string("description", errors) {
        Some((d, span)) if d.trim().is_empty() => {
            errors.push(doc.error(&t.key("description"), span, "must not be empty"));
            None
        }
        other => other.map(|(d, _)| d),
    };
    let exclude = t.strings("exclude", errors, |pattern| {
        if pattern.contains('/') && !pattern.starts_with('/') {
            return Err(format!(
                "`{pattern}` has a slash but is not absolute: a name glob has none, a path \
                 glob starts with /"
            ));
        }
        globset::Glob::new(pattern)
            .map(|_| ())
            .map_err(|e| format!("glob `{pattern}`: {}", e.kind()))
    });
    let operations = t.has("operations").then(|| {
        t.strings("operations", errors, |op| {
            if Action::from_name(op).is_some() || OPERATION_GROUPS.iter().any(|(g, _)| *g == op) {
                Ok(())
            } else {
                let groups: Vec<&str> = OPERATION_GROUPS.iter().map(|(g, _)| *g).collect();
                Err(format!(
                    "`{op}` is not an operation (an event.action name such as `rename`, or a \
                     group: {})",
                    groups.join(", ")
                ))
            }
        })
    });
    if let Some(ops) = &operations
        && ops.is_empty()
        && errors.len() == before
    {
        errors.push(ConfigError {
            line: t.line,
            key: t.key("operations"),
            message: "must not be empty (leave it out to report every operation)".into(),
        });
    }
    let mut severity = Severity::Medium;
    if let Some((name, span)) = t.string("severity", errors) {
        match Severity::from_name(&name) {
            Some(s) => severity = s,
            None => {
                let names: Vec<&str> = Severity::ALL.iter().map(|s| s.name()).collect();
                errors.push(doc.error(
                    &t.key("severity"),
                    span,
                    format!("`{name}` is not a severity (one of: {})", names.join(", ")),
                ));
            }
        }
    }
    let techniques = t.strings("techniques", errors, |id| {
        if is_technique(id) {
            Ok(())
        } else {
            Err(format!(
                "`{id}` is not a MITRE ATT&CK technique id (T1234 or T1234.001)"
            ))
        }
    });
    let tags = t.strings("tags", errors, |tag| {
        if tag.trim().is_empty() {
            Err("a tag must not be empty".into())
        } else {
            Ok(())
        }
    });
    t.finish(errors);
    let rule = match &name {
        Some((name, _)) if errors.len() == before => Some(Rule {
            name: name.clone(),
            id,
            description,
            paths,
            recursive,
            hash,
            rate_limit,
            attributes,
            exclude,
            operations,
            severity,
            techniques,
            tags,
        }),
        _ => None,
    };
    (name, rule)
}

/// `T` and four digits, optionally a dot and three more.
fn is_technique(id: &str) -> bool {
    let b = id.as_bytes();
    let digits = |r: &[u8]| r.iter().all(u8::is_ascii_digit);
    match b.len() {
        5 => b[0] == b'T' && digits(&b[1..]),
        9 => b[0] == b'T' && digits(&b[1..5]) && b[5] == b'.' && digits(&b[6..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(text: &str) -> Vec<ConfigError> {
        Config::parse(text).expect_err("must be refused")
    }

    #[test]
    fn the_builtin_configuration_round_trips_through_its_rendering() {
        let builtin = Config::builtin();
        let text = builtin.render();
        assert_eq!(Config::parse(&text), Ok(builtin), "{text}");
    }

    #[test]
    fn any_configuration_round_trips_through_its_rendering() {
        let config = Config {
            daemon: Daemon {
                sensor: Sensor::Fanotify,
                state_dir: "/srv/fim state/\"q\"".into(),
                threads: Some(3),
                hash_max_size: 3 * 1000,
                hash_quiet: Duration::from_millis(1500),
                rescan_interval: None,
                log_level: log::LevelFilter::Debug,
            },
            rules: vec![
                Rule {
                    id: Some("FIM-1".into()),
                    recursive: false,
                    hash: false,
                    rate_limit: Some((100, Duration::from_secs(60))),
                    attributes: Some(vec!["mode".into(), "uid".into()]),
                    exclude: vec!["*.swp".into(), "/etc/x/**".into()],
                    operations: Some(vec!["unlink".into(), "metadata".into()]),
                    severity: Severity::Critical,
                    techniques: vec!["T1053.003".into(), "T1037".into()],
                    tags: vec!["PCI-DSS 11.5".into(), "CIS \"6.1\"".into()],
                    ..Rule::new("a \\ b", vec!["/etc/*.conf".into(), "/x y".into()])
                },
                Rule::new("second", vec!["/srv".into()]),
            ],
        };
        assert_eq!(Config::parse(&config.render()), Ok(config));
    }

    #[test]
    fn the_builtin_configuration_uses_the_defaults_defined_once() {
        let c = Config::builtin();
        assert_eq!(c.daemon.hash_quiet, defaults::HASH_QUIET);
        assert_eq!(c.daemon.rescan_interval, Some(defaults::RESCAN_INTERVAL));
        assert_eq!(c.daemon.hash_max_size, defaults::HASH_MAX_SIZE);
        assert_eq!(c.daemon.state_dir, Path::new(defaults::STATE_DIR));
        let defender = c
            .rules
            .iter()
            .find(|r| r.name == DEFAULT_RULE)
            .expect("the Defender rule");
        assert_eq!(defender.paths.len(), watch::DEFAULT_WATCH.len());
    }

    #[test]
    fn a_minimal_file_takes_the_defaults_for_what_it_does_not_say() {
        let c = Config::parse("[[rule]]\nname = \"etc\"\npaths = [\"/etc\"]\n").expect("valid");
        assert_eq!(c.daemon, Daemon::default());
        assert_eq!(c.rules[0].paths, vec!["/etc".to_owned()]);
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key_and_line() {
        let text = "\
[daemon]
sensor = \"kprobe\"
state_dir = \"var/lib/fim\"
threads = -1
hash_max_size = \"12 parsecs\"
hash_quiet = \"2\"
rescan_interval = \"soon\"
colour = \"blue\"

[[rule]]
name = \"etc\"
paths = [\"etc\", \"/etc/**/x\", \"/etc/[z\", 7]
recursive = \"yes\"

[[rule]]
name = \"etc\"
paths = [\"/srv\"]
";
        let errors = errors_of(text);
        let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (2, "daemon.sensor"),
                (3, "daemon.state_dir"),
                (4, "daemon.threads"),
                (5, "daemon.hash_max_size"),
                (6, "daemon.hash_quiet"),
                (7, "daemon.rescan_interval"),
                (8, "daemon.colour"),
                (12, "rule[1].paths[1]"),
                (12, "rule[1].paths[2]"),
                (12, "rule[1].paths[3]"),
                (12, "rule[1].paths[4]"),
                (13, "rule[1].recursive"),
                (16, "rule[2].name"),
            ],
            "{errors:#?}"
        );
        let text = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        for needle in [
            "line 2: `daemon.sensor`: `kprobe` is not a sensor",
            "`var/lib/fim` is not an absolute path",
            "`parsecs` is not a size unit",
            "`2` is not a duration with its unit",
            "line 8: `daemon.colour`: unknown key",
            "`etc` is not absolute",
            "only the last path component may contain wildcards",
            "`/etc/[z`",
            "line 16: `rule[2].name`: `etc` names another rule already",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn rule_keys_are_checked_one_by_one() {
        let text = "\
[[rule]]
name = \"r\"
id = \"\"
paths = [\"/etc\"]
exclude = [\"*.swp\", \"tmp/*\", \"/x/[\"]
operations = [\"rename\", \"append\", \"content\"]
severity = \"urgent\"
techniques = [\"T1053.003\", \"T105\", \"t1053\"]
tags = [\"PCI-DSS 11.5\", \"\"]
";
        let got: Vec<(usize, String)> = errors_of(text)
            .into_iter()
            .map(|e| (e.line, e.key))
            .collect();
        let want: Vec<(usize, String)> = [
            (3, "rule[1].id"),
            (5, "rule[1].exclude[2]"),
            (5, "rule[1].exclude[3]"),
            (6, "rule[1].operations[2]"),
            (7, "rule[1].severity"),
            (8, "rule[1].techniques[2]"),
            (8, "rule[1].techniques[3]"),
            (9, "rule[1].tags[2]"),
        ]
        .into_iter()
        .map(|(l, k)| (l, k.to_owned()))
        .collect();
        assert_eq!(got, want);
        let errors = errors_of("[[rule]]\nname = \"r\"\npaths = [\"/etc\"]\noperations = []\n");
        assert_eq!(errors[0].key, "rule[1].operations");
    }

    #[test]
    fn operations_name_actions_or_groups() {
        let c = Config::parse(
            "[[rule]]\nname = \"logs\"\npaths = [\"/var/log\"]\n\
             operations = [\"unlink\", \"metadata\"]\nseverity = \"high\"\n",
        )
        .expect("valid");
        let actions = c.rules[0].actions().expect("listed");
        assert!(actions.contains(&Action::Unlink) && actions.contains(&Action::Chown));
        assert!(!actions.contains(&Action::Write) && !actions.contains(&Action::Rename));
        assert_eq!(c.rules[0].severity, Severity::High);
        assert_eq!(Config::builtin().rules[0].actions(), None);
    }

    #[test]
    fn tilde_paths_are_under_every_home_and_a_root_prefixes_everything() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                      broken line\n\
                      alice:x:1000:1000:Alice,,,:/home/alice/:/bin/bash\n\
                      odd:x:1001:1001::/:/bin/sh\n\
                      again:x:1002:1002::/root:/bin/sh\n";
        let homes = homes_from_passwd(passwd);
        assert_eq!(homes, vec!["/root", "/usr/sbin", "/home/alice"]);
        let rule = Rule::new(
            "keys",
            vec![
                "~/.ssh/authorized_keys".into(),
                "/etc/ssh/sshd_config".into(),
            ],
        );
        let homes = vec!["/root".to_owned(), "/home/alice".to_owned()];
        assert_eq!(
            rule.resolved_paths("/", &homes),
            vec![
                "/root/.ssh/authorized_keys",
                "/home/alice/.ssh/authorized_keys",
                "/etc/ssh/sshd_config",
            ]
        );
        assert_eq!(
            rule.resolved_paths("/tmp/mirror/", &homes)[1],
            "/tmp/mirror/home/alice/.ssh/authorized_keys"
        );
        let errors = errors_of(
            "[[rule]]\nname = \"r\"\npaths = [\"~/ok\", \"~\", \"~//x\", \"~/*/x\", \"~user/x\"]\n",
        );
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "rule[1].paths[2]",
                "rule[1].paths[3]",
                "rule[1].paths[4]",
                "rule[1].paths[5]"
            ]
        );
        assert!(
            errors[2].message.contains("`~/*/x`"),
            "{}",
            errors[2].message
        );
    }

    #[test]
    fn a_duplicate_name_is_reported_at_its_own_rule() {
        let errors = errors_of(
            "[[rule]]\npaths = [\"/a\"]\n\n[[rule]]\nname = \"x\"\npaths = [\"/b\"]\n\n\
             [[rule]]\nname = \"x\"\npaths = [\"/c\"]\n",
        );
        let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(got, vec![(1, "rule[1].name"), (9, "rule[3].name")]);
        assert!(errors_of("[daemon]\nhash_quiet = \"300000000000y\"\n[[rule]]\nname = \"r\"\npaths = [\"/x\"]\n")[0]
            .message
            .contains("longer than a year"));
        assert!(parse_rate("1/300000000000y").is_err());
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let errors = errors_of("[daemon]\nsensor = \"auto\"\nthreads = = 2\n");
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].line, errors[0].key.as_str()), (3, "(syntax)"));
    }

    #[test]
    fn a_file_without_rules_or_with_an_incomplete_rule_is_refused() {
        let errors = errors_of("[daemon]\nsensor = \"auto\"\n");
        assert_eq!(errors[0].key, "rule");
        let errors = errors_of("[[rule]]\npaths = []\n\n[[rule]]\nname = \"x\"\n");
        let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (1, "rule[1].name"),
                (2, "rule[1].paths"),
                (4, "rule[2].paths")
            ]
        );
    }

    #[test]
    fn rate_limits_are_events_per_window() {
        assert_eq!(parse_rate("100/1m"), Ok((100, Duration::from_secs(60))));
        assert_eq!(parse_rate(" 5 / 2s "), Ok((5, Duration::from_secs(2))));
        for bad in ["100", "x/1m", "100/soon", "0/1m", "5/0s", "-1/1m"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        let errors = errors_of("[[rule]]\nname = \"r\"\npaths = [\"/x\"]\nrate_limit = \"lots\"\n");
        assert_eq!(
            (errors[0].line, errors[0].key.as_str()),
            (4, "rule[1].rate_limit")
        );
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("3 KB"), Ok(3000));
        assert!(parse_size("1.5 GiB").is_err());
        assert!(parse_size("99999999999 TiB").is_err());
        assert_eq!(render_size(1 << 30), "1 GiB");
        assert_eq!(render_size(3 << 10), "3 KiB");
        assert_eq!(render_size(1536), "1536 B");
    }

    #[test]
    fn sensor_names_are_unique_and_found_back() {
        for s in Sensor::ALL {
            assert_eq!(Sensor::from_name(s.name()), Some(s));
        }
        assert_eq!(Sensor::from_name("kprobe"), None);
    }
}
