//! A configuration written back as a file, every key explained ([`Config::render`]).

use super::*;

impl Config {
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
        metrics::render_metrics(&self.metrics, &mut out);
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
        out.push_str(SINKS_HELP);
        sinks::render_sinks(&self.sinks, &mut out);
        // Linux hosts see the Windows lists only when they are not the built-in ones.
        if cfg!(windows) || self.windows != Windows::builtin() {
            windows::render_windows(&self.windows, &mut out);
        }
        out
    }
}

/// What `[sinks.NAME]` tables say, before the configuration's own.
const SINKS_HELP: &str = "
# Where events go: any number of `[sinks.NAME]` tables (none: standard output). Each has a
# `type` and the keys of that type, and `spool_max_size`, the most its on-disk spool (under
# the state directory) may hold while its receiver is down.
#   type = \"stdout\"         one JSON document per line
#   type = \"file\"           path = \"/var/log/fim/events.json\", max_size = \"100 MiB\" (rotate when
#                             larger), keep = 5 (rotated files kept); reopened on SIGHUP
#   type = \"syslog\"         address = \"host:port\", transport = \"udp\" | \"tcp\" | \"tls\",
#                             format = \"json\" | \"cef\", facility = \"local0\", app_name = \"fim\",
#                             ca_file, client_cert, client_key (TLS, PEM files)
#   type = \"elasticsearch\"  url = \"https://es:9200\", index = \"logs-fim-default\", api_key
#   type = \"splunk_hec\"     url = \"https://splunk:8088\", token, index
#   type = \"webhook\"        url = \"https://example/hook\", token (sent as a bearer token)
#   HTTP sinks also take batch_events = 500, batch_wait = \"200ms\", gzip = true, ca_file,
#   client_cert, client_key. A secret (api_key, token) is written inline, or read from a
#   file (`token_file`) or the environment (`token_env`); it never appears in the logs.
";

/// A TOML array of basic strings, on one line.
pub(super) fn array(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| quote(i)).collect();
    format!("[{}]", quoted.join(", "))
}

/// A TOML basic string.
pub(super) fn quote(s: &str) -> String {
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
