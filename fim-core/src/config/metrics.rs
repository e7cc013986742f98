//! `[metrics]`: the Prometheus endpoint, and when the daemon calls itself unhealthy.

use std::{fmt::Write as _, net::SocketAddr, time::Duration};

use super::{ConfigError, doc::Table, parse_duration};
use crate::defaults;

/// The metrics endpoint and the health verdicts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metrics {
    /// Where `/metrics`, `/health` and `/ready` are served (`None`: nowhere).
    pub address: Option<SocketAddr>,
    /// A sink failing for longer than this makes the daemon unhealthy.
    pub sink_failing_after: Duration,
    /// A sensor that has not read what the kernel holds for it for this long makes the
    /// daemon unhealthy.
    pub sensor_stall_after: Duration,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            address: Some(defaults::METRICS_ADDRESS),
            sink_failing_after: defaults::SINK_FAILING_AFTER,
            sensor_stall_after: defaults::SENSOR_STALL_AFTER,
        }
    }
}

/// The `[metrics]` table.
pub(super) fn read_metrics(mut t: Table<'_, '_>, errors: &mut Vec<ConfigError>) -> Metrics {
    let mut m = Metrics::default();
    let doc = t.doc;
    if let Some((text, span)) = t.string("address", errors) {
        match text.as_str() {
            "off" => m.address = None,
            _ => match text.parse::<SocketAddr>() {
                Ok(a) => m.address = Some(a),
                Err(_) => errors.push(doc.error(
                    &t.key("address"),
                    span,
                    format!("`{text}` is not an address and port (\"127.0.0.1:9478\") or \"off\""),
                )),
            },
        }
    }
    // An idle sensor wakes every 5 s: a stall is told after two of its wakeups at least.
    for (key, slot, min) in [
        ("sink_failing_after", &mut m.sink_failing_after, 1),
        ("sensor_stall_after", &mut m.sensor_stall_after, 10),
    ] {
        if let Some((text, span)) = t.string(key, errors) {
            match parse_duration(&text) {
                Ok(d) if d >= Duration::from_secs(min) => *slot = d,
                Ok(_) => {
                    errors.push(doc.error(&t.key(key), span, format!("must be at least {min}s")))
                }
                Err(e) => errors.push(doc.error(&t.key(key), span, e)),
            }
        }
    }
    t.finish(errors);
    m
}

/// The `[metrics]` table as a file, explained.
pub(super) fn render_metrics(m: &Metrics, out: &mut String) {
    let _ = writeln!(
        out,
        "\n# The Prometheus endpoint: `/metrics`, and `/health` and `/ready` (200 or 503), read\n\
         # by `fim status`.\n\
         [metrics]\n\
         # Address and port it listens on, or \"off\".\n\
         address = \"{}\"\n\
         # The daemon is unhealthy when a sink has failed to deliver for this long...\n\
         sink_failing_after = \"{}\"\n\
         # ...or when its sensor has not read what the kernel holds for it for this long.\n\
         sensor_stall_after = \"{}\"",
        m.address
            .map_or_else(|| "off".to_owned(), |a| a.to_string()),
        humantime::format_duration(m.sink_failing_after),
        humantime::format_duration(m.sensor_stall_after),
    );
}
