//! [`Telemetry`] in Prometheus' text format, through the `prometheus` crate's data model
//! and encoder; with the process collector's series (CPU, memory, descriptors) on Linux.
//!
//! A counter or gauge without labels that never changed is shown as 0, and so is each
//! cause of loss and each reload result (each sink's series are set to 0 when it starts),
//! so that `increase()` sees a series from the first scrape on and a first loss counts.

use fim_core::telemetry::{
    CONFIG_RELOADS, FAMILIES, Family, Histogram, Kind, LossCause, SENSOR_LOST, Sample, Telemetry,
};
use prometheus::{
    Encoder, TextEncoder,
    proto::{self, MetricFamily, MetricType},
};

/// Every cause of loss, shown from the start.
const CAUSES: [LossCause; 5] = [
    LossCause::RingFull,
    LossCause::PendingFull,
    LossCause::WritersFull,
    LossCause::Undecodable,
    LossCause::Unresolved,
];

fn labels(family: &Family, values: &[String]) -> Vec<proto::LabelPair> {
    family
        .labels
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let mut pair = proto::LabelPair::default();
            pair.set_name((*name).to_owned());
            pair.set_value(value.clone());
            pair
        })
        .collect()
}

fn scalar(family: &Family, values: &[String], value: u64) -> proto::Metric {
    let mut m = proto::Metric::default();
    m.set_label(labels(family, values));
    match family.kind {
        Kind::Counter => {
            let mut c = proto::Counter::default();
            c.set_value(value as f64);
            m.set_counter(c);
        }
        _ => {
            let mut g = proto::Gauge::default();
            g.set_value(value as f64);
            m.set_gauge(g);
        }
    }
    m
}

fn histogram(family: &Family, values: &[String], h: &Histogram) -> proto::Metric {
    let Kind::Histogram(bounds) = family.kind else {
        return proto::Metric::default();
    };
    let mut cumulative = 0;
    let buckets = bounds
        .iter()
        .zip(&h.counts)
        .map(|(bound, n)| {
            cumulative += n;
            let mut b = proto::Bucket::default();
            b.set_upper_bound(*bound as f64 / 1e6);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    let mut out = proto::Histogram::default();
    out.set_bucket(buckets);
    out.set_sample_count(h.count);
    out.set_sample_sum(h.sum_micros as f64 / 1e6);
    let mut m = proto::Metric::default();
    m.set_label(labels(family, values));
    m.set_histogram(out);
    m
}

/// The families of `samples` and `histograms`, in [`FAMILIES`] order, with the zeros the
/// module describes.
pub fn families(
    samples: &[Sample],
    histograms: &[(Family, Vec<String>, Histogram)],
) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    for family in FAMILIES {
        let mut metrics: Vec<proto::Metric> = Vec::new();
        if let Kind::Histogram(_) = family.kind {
            metrics.extend(
                histograms
                    .iter()
                    .filter(|(f, _, _)| f == family)
                    .map(|(f, l, h)| histogram(f, l, h)),
            );
        } else {
            let mine: Vec<&Sample> = samples.iter().filter(|s| s.family == *family).collect();
            metrics.extend(mine.iter().map(|s| scalar(family, &s.labels, s.value)));
            let known: &[&str] = if *family == SENSOR_LOST {
                &CAUSES.map(LossCause::as_str)
            } else if *family == CONFIG_RELOADS {
                &["success", "failure"]
            } else {
                &[]
            };
            for value in known {
                if !mine.iter().any(|s| s.labels[0] == *value) {
                    metrics.push(scalar(family, &[(*value).to_owned()], 0));
                }
            }
            if mine.is_empty() && family.labels.is_empty() {
                metrics.push(scalar(family, &[], 0));
            }
        }
        if metrics.is_empty() {
            continue;
        }
        let mut mf = MetricFamily::default();
        mf.set_name(family.name.to_owned());
        mf.set_help(family.help.to_owned());
        mf.set_field_type(match family.kind {
            Kind::Counter => MetricType::COUNTER,
            Kind::Gauge => MetricType::GAUGE,
            Kind::Histogram(_) => MetricType::HISTOGRAM,
        });
        mf.set_metric(metrics);
        out.push(mf);
    }
    out
}

/// The process' own series: CPU seconds, resident and virtual memory, open and maximum
/// descriptors, threads, start time.
#[cfg(target_os = "linux")]
fn process() -> Vec<MetricFamily> {
    use prometheus::core::Collector;
    prometheus::process_collector::ProcessCollector::for_self().collect()
}

#[cfg(not(target_os = "linux"))]
fn process() -> Vec<MetricFamily> {
    Vec::new()
}

/// Every series of `telemetry`, and the process', as Prometheus' text format.
pub fn text(telemetry: &Telemetry) -> String {
    let mut all = families(&telemetry.samples(), &telemetry.histograms());
    all.extend(process());
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&all, &mut out) {
        log::warn!("metrics: encoding: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fim_core::{event::Action, telemetry::Internal};

    #[test]
    fn series_come_with_help_type_labels_base_units_and_zeros() {
        let t = Telemetry::default();
        t.emit(Internal::Reported {
            sensor: "ebpf-lsm",
            action: Action::Create,
            count: 3,
        });
        t.emit(Internal::Lost {
            cause: LossCause::RingFull,
            operations: 7,
        });
        t.emit(Internal::HashTook {
            bytes: 4096,
            micros: 300,
        });
        t.emit(Internal::Build { version: "1.2.3" });
        let text = text(&t);
        for line in [
            "# HELP fim_events_total Events reported, by sensor and action",
            "# TYPE fim_events_total counter",
            "fim_events_total{sensor=\"ebpf-lsm\",action=\"create\"} 3",
            "fim_sensor_lost_operations_total{cause=\"ring_buffer_full\"} 7",
            "fim_sensor_lost_operations_total{cause=\"in_flight_table_full\"} 0",
            "fim_gap_events_total 0",
            "fim_config_reloads_total{result=\"failure\"} 0",
            "# TYPE fim_engine_hash_duration_seconds histogram",
            "fim_engine_hash_duration_seconds_bucket{le=\"0.00025\"} 0",
            "fim_engine_hash_duration_seconds_bucket{le=\"0.0005\"} 1",
            "fim_engine_hash_duration_seconds_bucket{le=\"+Inf\"} 1",
            "fim_engine_hash_duration_seconds_sum 0.0003",
            "fim_engine_hash_duration_seconds_count 1",
            "fim_engine_hashed_bytes_total 4096",
            "fim_build_info{version=\"1.2.3\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        #[cfg(target_os = "linux")]
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        // Nothing labelled that never happened: no sink, no scan origin.
        assert!(!text.contains("fim_sink_events_delivered_total{"));
    }
}
