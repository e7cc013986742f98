//! `fim status`: a running daemon's state in a few lines, read from its metrics endpoint
//! (`/metrics`, `/health`, `/ready`). [`Scrape::parse`] reads the text format; [`summary`]
//! writes the lines.

use std::{collections::BTreeMap, fmt::Write as _};

/// One series: name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Its name.
    pub name: String,
    /// Its labels, in order.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

/// What a scrape returned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    /// Every series, in order.
    pub series: Vec<Series>,
}

/// The labels of `text` (what is between the braces) and the rest after the brace.
fn labels_of(text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (name, after) = rest.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((name.trim().to_owned(), value));
        rest = &after[end + 2..];
    }
}

impl Scrape {
    /// Reads Prometheus' text format; lines it cannot read are left out.
    pub fn parse(text: &str) -> Self {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|line| {
                let name_end = line.find(['{', ' '])?;
                let name = &line[..name_end];
                let (labels, rest) = if line[name_end..].starts_with('{') {
                    labels_of(&line[name_end + 1..])?
                } else {
                    (Vec::new(), &line[name_end..])
                };
                let value = rest.split_whitespace().next()?;
                let value = match value {
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    v => v.parse().ok()?,
                };
                Some(Series {
                    name: name.to_owned(),
                    labels,
                    value,
                })
            })
            .collect();
        Self { series }
    }

    /// The series named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Series> + 'a {
        self.series.iter().filter(move |s| s.name == name)
    }

    /// The sum of the series named `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.named(name).map(|s| s.value).sum()
    }

    /// The value of the series `name` whose label `key` is `value`.
    pub fn get(&self, name: &str, key: &str, value: &str) -> Option<f64> {
        self.named(name)
            .find(|s| s.labels.iter().any(|(k, v)| k == key && v == value))
            .map(|s| s.value)
    }
}

fn label<'a>(s: &'a Series, key: &str) -> &'a str {
    s.labels
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// `seconds` as `3d 4h`, `2h 5m`, `4m 10s` or `12s`.
fn ago(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn bytes(n: f64) -> String {
    fim_core::config::render_size(n.max(0.0) as u64)
}

/// The summary of `scrape`, with the `/health` and `/ready` answers (status and body), at
/// `now` (s since the epoch).
pub fn summary(
    scrape: &Scrape,
    health: (u16, &str),
    ready: (u16, &str),
    address: &str,
    now: f64,
) -> String {
    let mut out = String::new();
    let version = scrape
        .named("fim_build_info")
        .map(|s| label(s, "version").to_owned())
        .next()
        .unwrap_or_else(|| "?".into());
    let verdict = |(status, body): (u16, &str), good: &str| {
        if status == 200 {
            good.to_owned()
        } else {
            body.trim().to_owned()
        }
    };
    let _ = writeln!(
        out,
        "fim {version} at {address}: {}; {}",
        verdict(health, "healthy"),
        verdict(ready, "ready")
    );
    let sensor = scrape
        .named("fim_sensor_info")
        .map(|s| format!("{} (eBPF tier: {})", label(s, "sensor"), label(s, "tier")))
        .next()
        .unwrap_or_else(|| "not attached".into());
    let turned = scrape.sum("fim_sensor_last_turn_timestamp_seconds");
    let _ = writeln!(
        out,
        "sensor: {sensor}, last read {} ago; up {}",
        if turned > 0.0 {
            ago(now - turned)
        } else {
            "never".into()
        },
        ago(now - scrape.sum("process_start_time_seconds"))
    );
    let mut by_action: BTreeMap<&str, f64> = BTreeMap::new();
    for s in scrape.named("fim_events_total") {
        *by_action.entry(label(s, "action")).or_default() += s.value;
    }
    let actions: Vec<String> = by_action.iter().map(|(a, n)| format!("{a} {n}")).collect();
    let _ = writeln!(
        out,
        "events: {} ({})",
        scrape.sum("fim_events_total"),
        if actions.is_empty() {
            "none yet".into()
        } else {
            actions.join(", ")
        }
    );
    let mut causes: Vec<String> = scrape
        .named("fim_sensor_lost_operations_total")
        .filter(|s| s.value > 0.0)
        .map(|s| format!("{} {}", label(s, "cause"), s.value))
        .collect();
    let overflows = scrape.sum("fim_sensor_queue_overflows_total");
    if overflows > 0.0 {
        causes.push(format!("{overflows} fanotify queue overflows"));
    }
    let _ = writeln!(
        out,
        "losses: {} operations lost{}, {} gap events, {} events without before/after values",
        scrape.sum("fim_sensor_lost_operations_total"),
        if causes.is_empty() {
            String::new()
        } else {
            format!(" ({})", causes.join(", "))
        },
        scrape.sum("fim_gap_events_total"),
        scrape.sum("fim_engine_unenriched_events_total"),
    );
    let _ = writeln!(
        out,
        "backlog: {} events in the engine; baseline {} entries, {} watched paths",
        scrape.sum("fim_engine_backlog_events"),
        scrape.sum("fim_baseline_entries"),
        scrape.sum("fim_watched_roots"),
    );
    let mut sinks: Vec<&str> = scrape
        .series
        .iter()
        .filter(|s| s.name.starts_with("fim_sink_"))
        .map(|s| label(s, "sink"))
        .collect();
    sinks.sort_unstable();
    sinks.dedup();
    for sink in sinks {
        let v = |name: &str| scrape.get(name, "sink", sink).unwrap_or(0.0);
        let last = v("fim_sink_last_success_timestamp_seconds");
        let failing = v("fim_sink_failing_since_timestamp_seconds");
        let _ = writeln!(
            out,
            "sink {sink}: {} delivered, {} refused, {} dropped, {} retries, {} spooled, \
             spool {}, queue {} batches, last delivery {}{}",
            v("fim_sink_events_delivered_total"),
            v("fim_sink_events_failed_total"),
            v("fim_sink_events_dropped_total"),
            v("fim_sink_retries_total"),
            v("fim_sink_events_spooled_total"),
            bytes(v("fim_sink_spool_bytes")),
            v("fim_sink_queued_batches"),
            if last > 0.0 {
                format!("{} ago", ago(now - last))
            } else {
                "never".into()
            },
            if failing > 0.0 {
                format!(", FAILING for {}", ago(now - failing))
            } else {
                String::new()
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP fim_build_info The running fim's version; always 1
# TYPE fim_build_info gauge
fim_build_info{version=\"0.1.0\"} 1
fim_sensor_info{sensor=\"ebpf\",tier=\"lsm\"} 1
fim_sensor_last_turn_timestamp_seconds 995
process_start_time_seconds 1000
fim_events_total{sensor=\"ebpf-lsm\",action=\"create\"} 3
fim_events_total{sensor=\"ebpf-lsm\",action=\"unlink\"} 2
fim_sensor_lost_operations_total{cause=\"ring_buffer_full\"} 7
fim_sensor_lost_operations_total{cause=\"in_flight_table_full\"} 0
fim_gap_events_total 1
fim_sink_events_delivered_total{sink=\"a \\\"q\\\" b\"} 5
fim_sink_failing_since_timestamp_seconds{sink=\"a \\\"q\\\" b\"} 4400
fim_engine_hash_duration_seconds_bucket{le=\"+Inf\"} 4
";

    #[test]
    fn the_text_format_is_read_with_escaped_labels() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.series.len(), 12);
        assert_eq!(s.sum("fim_events_total"), 5.0);
        assert_eq!(
            s.get("fim_sink_events_delivered_total", "sink", "a \"q\" b"),
            Some(5.0)
        );
        assert_eq!(s.series[11].labels, [("le".to_owned(), "+Inf".to_owned())]);
    }

    #[test]
    fn the_summary_names_the_sensor_losses_and_each_sink() {
        let text = summary(
            &Scrape::parse(TEXT),
            (503, "unhealthy: sink x has failed\n"),
            (200, "ready\n"),
            "127.0.0.1:9478",
            5_000.0,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "fim 0.1.0 at 127.0.0.1:9478: unhealthy: sink x has failed; ready"
        );
        assert_eq!(
            lines[1],
            "sensor: ebpf (eBPF tier: lsm), last read 1h 6m ago; up 1h 6m"
        );
        assert_eq!(lines[2], "events: 5 (create 3, unlink 2)");
        assert!(
            lines[3].starts_with("losses: 7 operations lost (ring_buffer_full 7), 1 gap events")
        );
        assert!(
            lines[5].starts_with("sink a \"q\" b: 5 delivered"),
            "{}",
            lines[5]
        );
        assert!(
            lines[5].ends_with("last delivery never, FAILING for 10m 0s"),
            "{}",
            lines[5]
        );
    }
}
