//! `[sinks.NAME]`: where events go. Any number of sinks, each a table with its `type` and
//! the keys of that type; without any, events go to standard output.
//!
//! Secrets (an HTTP token, an API key, a password) come from the file itself (`token`), a
//! file (`token_file`) or the environment (`token_env`): exactly one of the three. They are
//! kept as [`Secret`], which never prints its value.

use std::{fmt, path::PathBuf, time::Duration};

use toml::de::DeValue;

use super::{ConfigError, doc::Table, parse_duration, parse_size, render_size};

#[cfg(doc)]
use super::Config;

/// One sink, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkConfig {
    /// Its name (`[sinks.NAME]`), in logs, metrics and the spool's directory.
    pub name: String,
    /// What it is.
    pub kind: SinkKind,
    /// How its events wait when its receiver is down or slow.
    pub spool: Spool,
}

/// The kinds of sink and their settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkKind {
    /// One JSON document per line on standard output.
    Stdout,
    /// JSON lines appended to a file, rotated by size (`path.1` is the newest of `keep`),
    /// reopened on SIGHUP (for logrotate).
    File {
        /// The file.
        path: PathBuf,
        /// Rotated when a write would make it larger (`None`: never).
        max_size: Option<u64>,
        /// Rotated files kept.
        keep: u32,
    },
    /// RFC 5424 syslog messages.
    Syslog(Syslog),
    /// Elasticsearch's `_bulk` API.
    Elasticsearch(Http),
    /// Splunk's HTTP Event Collector.
    SplunkHec(Http),
    /// A JSON array of events POSTed to a URL.
    Webhook(Http),
}

impl SinkKind {
    /// The `type` value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::File { .. } => "file",
            Self::Syslog(_) => "syslog",
            Self::Elasticsearch(_) => "elasticsearch",
            Self::SplunkHec(_) => "splunk_hec",
            Self::Webhook(_) => "webhook",
        }
    }
}

/// The `type` values.
pub const SINK_TYPES: [&str; 6] = [
    "stdout",
    "file",
    "syslog",
    "elasticsearch",
    "splunk_hec",
    "webhook",
];

/// How syslog messages travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// One datagram per message (RFC 5426): may be lost, no spool can tell.
    Udp,
    /// Octet-counted frames over TCP (RFC 6587).
    Tcp,
    /// Octet-counted frames over TLS (RFC 5425).
    Tls,
}

/// What a syslog message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// The event's JSON document.
    Json,
    /// ArcSight's Common Event Format (what Microsoft Sentinel ingests).
    Cef,
}

/// A syslog sink's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Syslog {
    /// `host:port`.
    pub address: String,
    /// UDP, TCP or TLS.
    pub transport: Transport,
    /// JSON or CEF.
    pub payload: Payload,
    /// The facility number (RFC 5424: `local0` is 16).
    pub facility: u8,
    /// APP-NAME.
    pub app_name: String,
    /// Certificates (TLS only).
    pub tls: Tls,
}

/// TLS settings: the CA that signs the receiver's certificate (else the system's roots),
/// and an optional client certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// PEM file of the CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate chain.
    pub client_cert: Option<PathBuf>,
    /// PEM file of the client's private key.
    pub client_key: Option<PathBuf>,
}

/// An HTTP sink's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Http {
    /// The base URL (`https://es.example:9200`) or, for a webhook, the whole URL.
    pub url: String,
    /// Elasticsearch: the index or data stream; Splunk: the index (optional).
    pub index: Option<String>,
    /// The credential: Elasticsearch's API key, Splunk's HEC token, a webhook's bearer
    /// token.
    pub token: Option<Secret>,
    /// Events per request, at most.
    pub batch_events: usize,
    /// How long a partial batch waits for more.
    pub batch_wait: Duration,
    /// Gzip the bodies.
    pub gzip: bool,
    /// Certificates for `https`.
    pub tls: Tls,
}

/// Where a secret comes from. Its value is read when the sink starts and never printed.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Written in the configuration file.
    Inline(String),
    /// The contents of this file (without its final newline).
    File(PathBuf),
    /// This environment variable.
    Env(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Secret(inline, redacted)"),
            Self::File(p) => write!(f, "Secret(file {})", p.display()),
            Self::Env(v) => write!(f, "Secret(env {v})"),
        }
    }
}

/// The on-disk spool behind a sink's memory queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spool {
    /// Largest size on disk; past it the oldest events are given up, counted and reported
    /// as a gap.
    pub max_size: u64,
}

impl Default for Spool {
    fn default() -> Self {
        Self {
            max_size: crate::defaults::SPOOL_MAX_SIZE,
        }
    }
}

/// Largest `keep` of a file sink.
pub const MAX_KEEP: u32 = 1000;
/// Largest `batch_events` of an HTTP sink.
pub const MAX_BATCH_EVENTS: usize = 100_000;

/// The default facility: `local0`.
pub const DEFAULT_FACILITY: u8 = 16;

/// Syslog facility names (RFC 5424 numbering).
const FACILITIES: [(&str, u8); 12] = [
    ("user", 1),
    ("daemon", 3),
    ("auth", 4),
    ("authpriv", 10),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// The name of facility `n`.
pub fn facility_name(n: u8) -> &'static str {
    FACILITIES
        .iter()
        .find(|(_, v)| *v == n)
        .map_or("local0", |(name, _)| name)
}

/// Reads `[sinks.NAME]` tables.
pub(super) fn read_sinks(mut t: Table<'_, '_>, errors: &mut Vec<ConfigError>) -> Vec<SinkConfig> {
    // In the file's order (the document's tables are read sorted by name).
    let mut sinks: Vec<(usize, SinkConfig)> = Vec::new();
    for name in t.keys() {
        let Some(table) = t.table(name, errors) else {
            continue;
        };
        let line = table.line;
        if !is_sink_name(name) {
            errors.push(table.error_here(format!(
                "`{name}` is not a sink name (letters, digits, `-` and `_`, up to 64)"
            )));
        }
        if let Some(sink) = read_sink(name, table, errors) {
            sinks.push((line, sink));
        }
    }
    t.finish(errors);
    sinks.sort_by_key(|(line, _)| *line);
    sinks.into_iter().map(|(_, sink)| sink).collect()
}

fn is_sink_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn read_sink(
    name: &str,
    mut t: Table<'_, '_>,
    errors: &mut Vec<ConfigError>,
) -> Option<SinkConfig> {
    let before = errors.len();
    let Some((kind, span)) = t.string("type", errors) else {
        if !t.has("type") {
            errors.push(t.error_here(format!("no `type` (one of: {})", SINK_TYPES.join(", "))));
        }
        t.finish(errors);
        return None;
    };
    let kind = match kind.as_str() {
        "stdout" => Some(SinkKind::Stdout),
        "file" => read_file(&mut t, errors),
        "syslog" => read_syslog(&mut t, errors).map(SinkKind::Syslog),
        "elasticsearch" => read_http(&mut t, errors, true).map(SinkKind::Elasticsearch),
        "splunk_hec" => read_http(&mut t, errors, false).map(SinkKind::SplunkHec),
        "webhook" => read_http(&mut t, errors, false).map(SinkKind::Webhook),
        other => {
            errors.push(t.error_at(
                "type",
                span,
                format!(
                    "`{other}` is not a sink type (one of: {})",
                    SINK_TYPES.join(", ")
                ),
            ));
            // The rest is not checked against a type it does not have.
            return None;
        }
    };
    let mut spool = Spool::default();
    if let Some(size) = size(&mut t, "spool_max_size", SPOOL_MIN_SIZE, errors) {
        spool.max_size = size;
    }
    t.finish(errors);
    let kind = kind?;
    (errors.len() == before).then(|| SinkConfig {
        name: name.to_owned(),
        kind,
        spool,
    })
}

/// A size key: bytes, or a string with its unit.
/// The smallest spool cap: the outbox lets old events go a segment at a time
/// ([`crate::outbox::SEGMENT_SIZE`]), so a cap is kept to within one segment.
pub const SPOOL_MIN_SIZE: u64 = 16 * crate::outbox::SEGMENT_SIZE;

/// A size of at least `min` bytes.
fn size(
    t: &mut Table<'_, '_>,
    key: &'static str,
    min: u64,
    errors: &mut Vec<ConfigError>,
) -> Option<u64> {
    let value = t.take(key)?;
    let parsed = match value.get_ref() {
        DeValue::Integer(i) => {
            u64::from_str_radix(i.as_str(), i.radix()).map_err(|_| format!("`{i}` is not a size"))
        }
        DeValue::String(s) => parse_size(s),
        _ => Err("must be a size: a number of bytes, or a string with its unit (\"1 GiB\")".into()),
    };
    match parsed {
        Ok(0) => {
            errors.push(t.error_at(key, value.span(), "must be larger than 0"));
            None
        }
        Ok(n) if n < min => {
            errors.push(t.error_at(
                key,
                value.span(),
                format!("must be at least {}", render_size(min)),
            ));
            None
        }
        Ok(n) => Some(n),
        Err(m) => {
            errors.push(t.error_at(key, value.span(), m));
            None
        }
    }
}

/// A whole-number key within `1..=max`.
fn count(
    t: &mut Table<'_, '_>,
    key: &'static str,
    max: u64,
    errors: &mut Vec<ConfigError>,
) -> Option<u64> {
    let value = t.take(key)?;
    match value.get_ref() {
        DeValue::Integer(i) => match u64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if (1..=max).contains(&n) => Some(n),
            _ => {
                errors.push(t.error_at(key, value.span(), format!("must be 1 up to {max}")));
                None
            }
        },
        _ => {
            errors.push(t.error_at(key, value.span(), "must be a whole number"));
            None
        }
    }
}

/// An absolute path key.
fn absolute(
    t: &mut Table<'_, '_>,
    key: &'static str,
    errors: &mut Vec<ConfigError>,
) -> Option<PathBuf> {
    let (text, span) = t.string(key, errors)?;
    if std::path::Path::new(&text).is_absolute() {
        Some(PathBuf::from(text))
    } else {
        errors.push(t.error_at(key, span, format!("`{text}` is not an absolute path")));
        None
    }
}

fn read_file(t: &mut Table<'_, '_>, errors: &mut Vec<ConfigError>) -> Option<SinkKind> {
    let path = absolute(t, "path", errors);
    if path.is_none() && !t.was_used("path") {
        errors.push(t.error_here("a file sink needs its `path`"));
    }
    let max_size = size(t, "max_size", 1, errors);
    let keep = count(t, "keep", u64::from(MAX_KEEP), errors).map_or(5, |n| n as u32);
    Some(SinkKind::File {
        path: path?,
        max_size,
        keep,
    })
}

fn read_tls(t: &mut Table<'_, '_>, errors: &mut Vec<ConfigError>) -> Tls {
    let tls = Tls {
        ca_file: absolute(t, "ca_file", errors),
        client_cert: absolute(t, "client_cert", errors),
        client_key: absolute(t, "client_key", errors),
    };
    if tls.client_cert.is_some() != tls.client_key.is_some() {
        errors.push(t.error_here("`client_cert` and `client_key` go together"));
    }
    tls
}

fn read_syslog(t: &mut Table<'_, '_>, errors: &mut Vec<ConfigError>) -> Option<Syslog> {
    let address = match t.string("address", errors) {
        Some((a, span)) => match a.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                Some(a)
            }
            _ => {
                errors.push(t.error_at("address", span, format!("`{a}` is not `host:port`")));
                None
            }
        },
        None => {
            if !t.was_used("address") {
                errors.push(t.error_here("a syslog sink needs its `address` (`host:port`)"));
            }
            None
        }
    };
    let transport = match t.string("transport", errors) {
        None => Some(Transport::Tcp),
        Some((s, span)) => match s.as_str() {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            "tls" => Some(Transport::Tls),
            _ => {
                errors.push(t.error_at(
                    "transport",
                    span,
                    format!("`{s}` is not a transport (udp, tcp, tls)"),
                ));
                None
            }
        },
    };
    let payload = match t.string("format", errors) {
        None => Some(Payload::Json),
        Some((s, span)) => match s.as_str() {
            "json" => Some(Payload::Json),
            "cef" => Some(Payload::Cef),
            _ => {
                errors.push(t.error_at(
                    "format",
                    span,
                    format!("`{s}` is not a format (json, cef)"),
                ));
                None
            }
        },
    };
    let facility = match t.string("facility", errors) {
        None => Some(DEFAULT_FACILITY),
        Some((s, span)) => match FACILITIES.iter().find(|(n, _)| *n == s) {
            Some((_, v)) => Some(*v),
            None => {
                let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
                errors.push(t.error_at(
                    "facility",
                    span,
                    format!("`{s}` is not a facility (one of: {})", names.join(", ")),
                ));
                None
            }
        },
    };
    let app_name = match t.string("app_name", errors) {
        None => Some("fim".to_owned()),
        // RFC 5424: 1 to 48 printable US-ASCII characters.
        Some((s, _))
            if !s.is_empty() && s.len() <= 48 && s.bytes().all(|b| (33..=126).contains(&b)) =>
        {
            Some(s)
        }
        Some((s, span)) => {
            errors.push(t.error_at(
                "app_name",
                span,
                format!("`{s}` is not an APP-NAME (1 to 48 printable ASCII characters, no space)"),
            ));
            None
        }
    };
    let tls = read_tls(t, errors);
    let transport = transport?;
    if transport != Transport::Tls && tls != Tls::default() {
        errors.push(t.error_here("certificates are for `transport = \"tls\"`"));
    }
    Some(Syslog {
        address: address?,
        transport,
        payload: payload?,
        facility: facility?,
        app_name: app_name?,
        tls,
    })
}

/// The secret named `key`: `key`, `key_file` or `key_env`, exactly one.
fn secret(
    t: &mut Table<'_, '_>,
    key: &'static str,
    errors: &mut Vec<ConfigError>,
) -> Option<Secret> {
    let (file_key, env_key): (&'static str, &'static str) = match key {
        "token" => ("token_file", "token_env"),
        _ => ("api_key_file", "api_key_env"),
    };
    let inline = t.string(key, errors).map(|(s, _)| Secret::Inline(s));
    let file = absolute(t, file_key, errors).map(Secret::File);
    let env = t.string(env_key, errors).map(|(s, _)| Secret::Env(s));
    let given: Vec<Secret> = [inline, file, env].into_iter().flatten().collect();
    if given.len() > 1 {
        errors.push(t.error_here(format!(
            "`{key}`, `{file_key}` and `{env_key}` are three ways to give one secret: give one"
        )));
        return None;
    }
    given.into_iter().next()
}

fn read_http(t: &mut Table<'_, '_>, errors: &mut Vec<ConfigError>, elastic: bool) -> Option<Http> {
    let url = match t.string("url", errors) {
        Some((u, span)) => {
            let scheme_ok = u.starts_with("https://") || u.starts_with("http://");
            let host = u.split_once("://").map_or("", |(_, rest)| rest);
            if scheme_ok && !host.is_empty() && !u.chars().any(char::is_whitespace) {
                Some(u)
            } else {
                errors.push(t.error_at(
                    "url",
                    span,
                    format!("`{u}` is not an http:// or https:// URL"),
                ));
                None
            }
        }
        None => {
            if !t.was_used("url") {
                errors.push(t.error_here("an HTTP sink needs its `url`"));
            }
            None
        }
    };
    let index = t.string("index", errors).map(|(s, _)| s);
    if elastic && index.is_none() && !t.was_used("index") {
        errors.push(t.error_here(
            "an elasticsearch sink needs its `index` (an index or a data stream: `logs-fim-default`)",
        ));
    }
    let token = secret(t, if elastic { "api_key" } else { "token" }, errors);
    let batch_events =
        count(t, "batch_events", MAX_BATCH_EVENTS as u64, errors).map_or(500, |n| n as usize);
    let batch_wait = match t.string("batch_wait", errors) {
        None => Duration::from_millis(200),
        Some((s, span)) => match parse_duration(&s) {
            Ok(d) if d <= Duration::from_secs(60) => d,
            Ok(_) => {
                errors.push(t.error_at("batch_wait", span, "must be at most a minute"));
                Duration::from_millis(200)
            }
            Err(m) => {
                errors.push(t.error_at("batch_wait", span, m));
                Duration::from_millis(200)
            }
        },
    };
    let gzip = match t.take("gzip") {
        None => true,
        Some(v) => match v.get_ref() {
            DeValue::Boolean(b) => *b,
            _ => {
                errors.push(t.error_at("gzip", v.span(), "must be true or false"));
                true
            }
        },
    };
    let tls = read_tls(t, errors);
    Some(Http {
        url: url?,
        index,
        token,
        batch_events,
        batch_wait,
        gzip,
        tls,
    })
}

/// `[sinks.NAME]` tables as a file (see [`Config::render`]).
pub(super) fn render_sinks(sinks: &[SinkConfig], out: &mut String) {
    use std::fmt::Write as _;
    for s in sinks {
        let _ = writeln!(out, "[sinks.{}]", s.name);
        let _ = writeln!(out, "type = \"{}\"", s.kind.type_name());
        match &s.kind {
            SinkKind::Stdout => {}
            SinkKind::File {
                path,
                max_size,
                keep,
            } => {
                let _ = writeln!(
                    out,
                    "path = {}",
                    super::render::quote(&path.display().to_string())
                );
                if let Some(m) = max_size {
                    let _ = writeln!(out, "max_size = \"{}\"", render_size(*m));
                }
                let _ = writeln!(out, "keep = {keep}");
            }
            SinkKind::Syslog(sys) => {
                let _ = writeln!(out, "address = {}", super::render::quote(&sys.address));
                let transport = match sys.transport {
                    Transport::Udp => "udp",
                    Transport::Tcp => "tcp",
                    Transport::Tls => "tls",
                };
                let _ = writeln!(out, "transport = \"{transport}\"");
                let format = match sys.payload {
                    Payload::Json => "json",
                    Payload::Cef => "cef",
                };
                let _ = writeln!(out, "format = \"{format}\"");
                let _ = writeln!(out, "facility = \"{}\"", facility_name(sys.facility));
                let _ = writeln!(out, "app_name = {}", super::render::quote(&sys.app_name));
                render_tls(&sys.tls, out);
            }
            SinkKind::Elasticsearch(h) | SinkKind::SplunkHec(h) | SinkKind::Webhook(h) => {
                let _ = writeln!(out, "url = {}", super::render::quote(&h.url));
                if let Some(i) = &h.index {
                    let _ = writeln!(out, "index = {}", super::render::quote(i));
                }
                let key = if matches!(s.kind, SinkKind::Elasticsearch(_)) {
                    "api_key"
                } else {
                    "token"
                };
                match &h.token {
                    None => {}
                    Some(Secret::Inline(v)) => {
                        let _ = writeln!(out, "{key} = {}", super::render::quote(v));
                    }
                    Some(Secret::File(p)) => {
                        let _ = writeln!(
                            out,
                            "{key}_file = {}",
                            super::render::quote(&p.display().to_string())
                        );
                    }
                    Some(Secret::Env(v)) => {
                        let _ = writeln!(out, "{key}_env = {}", super::render::quote(v));
                    }
                }
                let _ = writeln!(out, "batch_events = {}", h.batch_events);
                let _ = writeln!(
                    out,
                    "batch_wait = \"{}\"",
                    humantime::format_duration(h.batch_wait)
                );
                let _ = writeln!(out, "gzip = {}", h.gzip);
                render_tls(&h.tls, out);
            }
        }
        let _ = writeln!(
            out,
            "spool_max_size = \"{}\"",
            render_size(s.spool.max_size)
        );
        let _ = writeln!(out);
    }
}

fn render_tls(tls: &Tls, out: &mut String) {
    use std::fmt::Write as _;
    for (key, value) in [
        ("ca_file", &tls.ca_file),
        ("client_cert", &tls.client_cert),
        ("client_key", &tls.client_key),
    ] {
        if let Some(p) = value {
            let _ = writeln!(
                out,
                "{key} = {}",
                super::render::quote(&p.display().to_string())
            );
        }
    }
}
