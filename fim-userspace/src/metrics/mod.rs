//! The metrics endpoint: what [`Telemetry`] counts, in Prometheus' text format
//! (`/metrics`, [`render`]), and the daemon's verdicts on itself: `/ready` once its sensor
//! is attached and its baseline loaded, `/health` unless its sensor has stalled or a sink
//! has failed for too long ([`assess`]). [`server`] serves them; `fim status` reads them
//! ([`status`]).
//!
//! The verdicts are read from the same series an operator sees: the sensor says which it
//! is (`fim_sensor_info`) once attached and when its loop last turned
//! (`fim_sensor_last_turn_timestamp_seconds`; idle, it wakes every few seconds), the
//! engine how many entries its baseline holds once loaded (`fim_baseline_entries`), each
//! sink since when it has been failing (`fim_sink_failing_since_timestamp_seconds`).

pub mod render;
pub mod server;
pub mod status;

use std::{sync::Arc, time::Duration};

use fim_core::telemetry::{
    self, BASELINE_ENTRIES, SENSOR_INFO, SENSOR_LAST_TURN, SINK_FAILING_SINCE, Sample, Telemetry,
};

/// Says which build and configuration run, and serves the endpoint `metrics` names (if
/// any) until the returned guard is dropped. A taken port is an error, before anything
/// else starts; `/ready` says 503 until the source is attached and the baseline loaded.
pub fn serve(
    metrics: &fim_core::config::Metrics,
    config_hash: u64,
    telemetry: &Arc<Telemetry>,
) -> Result<tokio_util::sync::DropGuard, server::BindError> {
    telemetry.emit(telemetry::Internal::Build {
        version: env!("CARGO_PKG_VERSION"),
    });
    telemetry.emit(telemetry::Internal::ConfigHash { hash: config_hash });
    let stop = tokio_util::sync::CancellationToken::new();
    if let Some(address) = metrics.address {
        let endpoint = Arc::new(Endpoint {
            telemetry: telemetry.clone(),
            limits: metrics.into(),
        });
        server::start(address, endpoint, stop.clone())?;
    }
    Ok(stop.drop_guard())
}

/// When the daemon calls itself unhealthy (`[metrics]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A sink failing this long.
    pub sink_failing_after: Duration,
    /// A sensor loop that has not turned for this long.
    pub sensor_stall_after: Duration,
}

impl From<&fim_core::config::Metrics> for Limits {
    fn from(m: &fim_core::config::Metrics) -> Self {
        Self {
            sink_failing_after: m.sink_failing_after,
            sensor_stall_after: m.sensor_stall_after,
        }
    }
}

/// The daemon's verdicts on itself, and why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The sensor is attached and the baseline loaded.
    pub ready: bool,
    /// Nothing below.
    pub healthy: bool,
    /// Why it is not ready.
    pub waiting_for: Vec<String>,
    /// Why it is unhealthy.
    pub problems: Vec<String>,
}

/// The verdicts the series `samples` give at `now` (s since the epoch) under `limits`.
pub fn assess(samples: &[Sample], now: u64, limits: Limits) -> Verdict {
    let has = |family| samples.iter().any(|s| s.family == family);
    let mut waiting_for = Vec::new();
    if !has(SENSOR_INFO) {
        waiting_for.push("the sensor is not attached yet".to_owned());
    }
    if !has(BASELINE_ENTRIES) {
        waiting_for.push("the baseline is not loaded yet".to_owned());
    }
    let mut problems = Vec::new();
    let stall = limits.sensor_stall_after.as_secs();
    for s in samples.iter().filter(|s| s.family == SENSOR_LAST_TURN) {
        let quiet = now.saturating_sub(s.value);
        if s.value > 0 && quiet > stall {
            problems.push(format!(
                "the sensor has not read from the kernel for {quiet} s (more than {stall} s): \
                 what the kernel holds for it is waiting or being lost"
            ));
        }
    }
    let failing = limits.sink_failing_after.as_secs();
    for s in samples.iter().filter(|s| s.family == SINK_FAILING_SINCE) {
        let since = now.saturating_sub(s.value);
        if s.value > 0 && since > failing {
            problems.push(format!(
                "sink {} has failed to deliver for {since} s (more than {failing} s)",
                s.labels.first().map_or("?", String::as_str)
            ));
        }
    }
    Verdict {
        ready: waiting_for.is_empty(),
        healthy: problems.is_empty(),
        waiting_for,
        problems,
    }
}

/// What the endpoint serves from: the daemon's telemetry and the limits of its verdicts.
pub struct Endpoint {
    /// Every count.
    pub telemetry: Arc<Telemetry>,
    /// When it is unhealthy.
    pub limits: Limits,
}

impl Endpoint {
    /// The verdicts now, also kept in `fim_ready` and `fim_healthy`.
    pub fn verdict(&self) -> Verdict {
        let now = fim_core::event::unix_now_secs();
        let v = assess(&self.telemetry.samples(), now, self.limits);
        self.telemetry.emit(telemetry::Internal::Verdicts {
            ready: v.ready,
            healthy: v.healthy,
        });
        v
    }

    /// `/metrics`: every series, with the verdicts current.
    pub fn metrics(&self) -> String {
        self.verdict();
        render::text(&self.telemetry)
    }
}

/// The first 48 bits of the SHA-256 of `config` as `fim config default` would write it: a
/// number that changes when the configuration in force does (exact in a float).
pub fn config_hash(config: &fim_core::config::Config) -> u64 {
    let digest = fim_core::hash::sha256(config.render().as_bytes());
    digest[..6]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fim_core::telemetry::Internal;

    const LIMITS: Limits = Limits {
        sink_failing_after: Duration::from_secs(300),
        sensor_stall_after: Duration::from_secs(60),
    };

    #[test]
    fn ready_once_the_sensor_is_attached_and_the_baseline_loaded() {
        let t = Telemetry::default();
        let v = assess(&t.samples(), 1_000, LIMITS);
        assert!(!v.ready && v.healthy);
        assert_eq!(v.waiting_for.len(), 2);
        t.emit(Internal::SensorInUse {
            sensor: "ebpf",
            tier: "lsm",
        });
        assert!(!assess(&t.samples(), 1_000, LIMITS).ready);
        // An empty baseline is loaded too.
        t.emit(Internal::BaselineEntries { entries: 0 });
        let v = assess(&t.samples(), 1_000, LIMITS);
        assert!(v.ready && v.healthy, "{v:?}");
    }

    #[test]
    fn a_stalled_sensor_or_a_sink_failing_too_long_is_unhealthy_and_says_why() {
        let t = Telemetry::default();
        t.emit(Internal::SensorTurned {
            unix_seconds: 1_000,
        });
        t.emit(Internal::SinkFailing {
            sink: "siem",
            since: Some(900),
        });
        // 60 s without a turn and 300 s of failure are still within the limits.
        assert!(assess(&t.samples(), 1_060, LIMITS).healthy);
        assert!(!assess(&t.samples(), 1_200, LIMITS).healthy);
        let v = assess(&t.samples(), 1_201, LIMITS);
        assert_eq!(v.problems.len(), 2, "{v:?}");
        assert!(v.problems[0].contains("not read from the kernel for 201 s"));
        assert!(v.problems[1].contains("sink siem has failed to deliver for 301 s"));
        // The sensor turns again, the sink delivers again: healthy.
        t.emit(Internal::SensorTurned {
            unix_seconds: 1_200,
        });
        t.emit(Internal::SinkFailing {
            sink: "siem",
            since: None,
        });
        assert!(assess(&t.samples(), 1_201, LIMITS).healthy);
    }

    #[test]
    fn the_config_hash_follows_the_configuration() {
        let builtin = fim_core::config::Config::builtin();
        let mut other = builtin.clone();
        other.daemon.hash_quiet = Duration::from_secs(9);
        let (a, b) = (config_hash(&builtin), config_hash(&other));
        assert_ne!(a, b);
        assert!(a < 1 << 48 && b < 1 << 48);
        assert_eq!(a, config_hash(&fim_core::config::Config::builtin()));
    }

    /// The metric names in `promql` (ours all begin `fim_` or `process_`).
    #[cfg(target_os = "linux")]
    fn names_in(promql: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut word = String::new();
        for c in promql.chars().chain([' ']) {
            if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
            } else {
                if word.starts_with("fim_") || word.starts_with("process_") {
                    out.push(std::mem::take(&mut word));
                }
                word.clear();
            }
        }
        out
    }

    /// Every query of the dashboard (`expr`, and the variables' `query` and `definition`).
    #[cfg(target_os = "linux")]
    fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(o) => {
                for (k, v) in o {
                    match (k.as_str(), v) {
                        ("expr" | "query" | "definition", serde_json::Value::String(q)) => {
                            out.push(q.clone());
                        }
                        _ => queries(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
            _ => {}
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_dashboard_and_the_alerting_rules_name_only_what_the_daemon_exports() {
        use fim_core::telemetry::{FAMILIES, Kind};
        // What the exporter writes: every family (a histogram as its three series), and
        // the process collector's series, as rendered.
        let mut exported: Vec<String> = Vec::new();
        for f in FAMILIES {
            match f.kind {
                Kind::Histogram(_) => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        exported.push(format!("{}{suffix}", f.name));
                    }
                }
                _ => exported.push(f.name.to_owned()),
            }
        }
        let text = render::text(&Telemetry::default());
        exported.extend(
            text.lines()
                .filter(|l| l.starts_with("process_"))
                .filter_map(|l| l.split([' ', '{']).next())
                .map(str::to_owned),
        );
        let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let dashboard: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(deploy.join("grafana/fim-dashboard.json")).expect("dashboard"),
        )
        .expect("the dashboard is JSON");
        let mut exprs = Vec::new();
        queries(&dashboard, &mut exprs);
        let rules =
            std::fs::read_to_string(deploy.join("prometheus/fim-alerts.yml")).expect("rules");
        let alert_exprs: Vec<String> = rules
            .lines()
            .filter_map(|l| l.trim().strip_prefix("expr:"))
            .map(str::to_owned)
            .collect();
        assert!(exprs.len() > 30, "{} dashboard queries", exprs.len());
        assert!(
            alert_exprs.len() >= 8,
            "{} alerting rules",
            alert_exprs.len()
        );
        for expr in &alert_exprs {
            assert!(
                !names_in(expr).is_empty() || expr.contains("up{"),
                "`{expr}` names no metric (a block-style expression is not read here)"
            );
        }
        let mut named = 0;
        for expr in exprs.iter().chain(&alert_exprs) {
            for name in names_in(expr) {
                assert!(
                    exported.contains(&name),
                    "`{name}` (in `{expr}`) is not a metric the daemon exports"
                );
                named += 1;
            }
        }
        assert!(named > 40);
        // The check itself catches a wrong name.
        assert_eq!(names_in("rate(fim_event_total[5m])"), ["fim_event_total"]);
        assert!(!exported.contains(&"fim_event_total".to_owned()));
    }
}
