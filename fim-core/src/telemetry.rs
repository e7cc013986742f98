//! Telemetry: every count the daemon keeps, in one place.
//!
//! Why one place: a monitor that loses or skips something must say so, and the operator
//! must be able to read the same numbers in the log, in the summary at stop and (through
//! the metrics endpoint) in a dashboard. When each part kept counters of its own, each of
//! those readers had to know where they were. Here the parts report what happened as a
//! named internal event ([`Internal`]) to the one [`Telemetry`] the pipeline shares, and
//! every reader reads it: the integrity engine its loss totals ([`Telemetry::losses`],
//! turned into gap events and repair rescans), the daemon its summary, the log lines the
//! counts they print, and exporters every series ([`Telemetry::samples`]).
//!
//! Series are identified by a family ([`Family`]: name, help, kind, in Prometheus' naming)
//! and label values. Counting takes a lock; the parts report per batch, per file hashed or
//! per housekeeping tick, never per kernel record.

use std::{collections::BTreeMap, sync::Mutex};

use crate::event::{Action, Losses, Origin};

/// Whether a series only grows, goes up and down, or counts observations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Only grows (a total since start).
    Counter,
    /// The current value.
    Gauge,
    /// Durations observed, in microseconds, counted in buckets with these upper bounds
    /// (µs); exporters show them in seconds.
    Histogram(&'static [u64]),
}

/// Upper bounds of [`HASH_DURATION`]'s buckets, in µs: 100 µs to 10 s.
const HASH_BUCKETS: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];
/// Upper bounds of [`SCAN_DURATION`]'s buckets, in µs: 10 ms to 1 h.
const SCAN_BUCKETS: &[u64] = &[
    10_000,
    100_000,
    1_000_000,
    5_000_000,
    15_000_000,
    60_000_000,
    300_000_000,
    900_000_000,
    3_600_000_000,
];

/// A family of series: its name, what it counts, and the names of its labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Family {
    /// Name, Prometheus style (`_total` for counters).
    pub name: &'static str,
    /// One line on what it counts.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Its labels' names, in order.
    pub labels: &'static [&'static str],
}

/// Operations a sensor saw but could not deliver, by cause; each is repaired by a rescan.
pub const SENSOR_LOST: Family = Family {
    name: "fim_sensor_lost_operations_total",
    help: "Operations a sensor saw but could not deliver, by cause (each is reported as a gap and repaired by a rescan)",
    kind: Kind::Counter,
    labels: &["cause"],
};
/// fanotify queue overflows: an unknown number of operations each.
pub const SENSOR_OVERFLOWS: Family = Family {
    name: "fim_sensor_queue_overflows_total",
    help: "Kernel event queue overflows, each losing an unknown number of operations (reported as a gap and repaired by a rescan)",
    kind: Kind::Counter,
    labels: &[],
};
/// Process-table records the kernel could not deliver (attribution may fall back to /proc).
pub const PROCESS_RECORDS_LOST: Family = Family {
    name: "fim_sensor_process_records_lost_total",
    help: "Process-table records lost because the ring buffer was full (no file operation is lost; attribution falls back to /proc)",
    kind: Kind::Counter,
    labels: &[],
};
/// Operations announced before they ran and not reported, by why.
pub const NOT_REPORTED: Family = Family {
    name: "fim_sensor_announcements_not_reported_total",
    help: "Operations announced by a pre-operation hook and not reported: failed, expired (no outcome came), superseded",
    kind: Kind::Counter,
    labels: &["why"],
};
/// Events by sensor and action, as numbered for the sinks.
pub const EVENTS: Family = Family {
    name: "fim_events_total",
    help: "Events reported, by sensor and action",
    kind: Kind::Counter,
    labels: &["sensor", "action"],
};
/// Events no rule reports (each rule lists the operations it reports), by action.
pub const RULE_SUPPRESSED: Family = Family {
    name: "fim_rule_suppressed_events_total",
    help: "Events not reported because no rule they fall under reports their operation, by action",
    kind: Kind::Counter,
    labels: &["action"],
};
/// Events a rule's rate limit held back (each window is summed up in one event).
pub const RATE_LIMITED: Family = Family {
    name: "fim_rate_limited_events_total",
    help: "Events held back by their rule's rate limit (each window is summed up in one `suppressed` event)",
    kind: Kind::Counter,
    labels: &[],
};
/// Events passed without before/after values because the engine's backlog was full.
pub const UNENRICHED: Family = Family {
    name: "fim_engine_unenriched_events_total",
    help: "Events passed without before/after values because the integrity backlog was full (a rescan repairs the baseline)",
    kind: Kind::Counter,
    labels: &[],
};
/// Files hashed after a change.
pub const HASHED: Family = Family {
    name: "fim_engine_files_hashed_total",
    help: "Files hashed after a change",
    kind: Kind::Counter,
    labels: &[],
};
/// Observations (stat, read, hash) that failed.
pub const OBSERVE_ERRORS: Family = Family {
    name: "fim_engine_observation_errors_total",
    help: "Files that could not be read or hashed",
    kind: Kind::Counter,
    labels: &[],
};
/// Scans of the watched paths completed, by why they ran.
pub const SCANS: Family = Family {
    name: "fim_engine_scans_total",
    help: "Scans of the watched paths completed, by origin (found_at_start, rescan, reload)",
    kind: Kind::Counter,
    labels: &["origin"],
};
/// Changes scans found, by action.
pub const FOUND: Family = Family {
    name: "fim_engine_scan_changes_total",
    help: "Changes found by comparing the disk with the baseline, by action (added, removed, changed)",
    kind: Kind::Counter,
    labels: &["action"],
};
/// Events each sink delivered.
pub const SINK_DELIVERED: Family = Family {
    name: "fim_sink_events_delivered_total",
    help: "Events a sink delivered",
    kind: Kind::Counter,
    labels: &["sink"],
};
/// Events a sink failed to deliver.
pub const SINK_FAILED: Family = Family {
    name: "fim_sink_events_failed_total",
    help: "Events a sink failed to deliver",
    kind: Kind::Counter,
    labels: &["sink"],
};
/// Events a sink lost: its spool reached its size cap and let its oldest events go (or,
/// for a sink without a spool, its queue was full).
pub const SINK_DROPPED: Family = Family {
    name: "fim_sink_events_dropped_total",
    help: "Events a sink lost because its spool reached its size cap",
    kind: Kind::Counter,
    labels: &["sink"],
};
/// Events a sink read back from the spool (the outbox) because they did not fit in its
/// queue while it was behind: not lost, only slower.
pub const SINK_SPOOLED: Family = Family {
    name: "fim_sink_events_spooled_total",
    help: "Events a sink read back from its on-disk spool because it was behind",
    kind: Kind::Counter,
    labels: &["sink"],
};
/// Batches waiting in each sink's queue.
pub const SINK_QUEUED: Family = Family {
    name: "fim_sink_queued_batches",
    help: "Batches of events waiting in a sink's queue",
    kind: Kind::Gauge,
    labels: &["sink"],
};

/// Gap events reported (each says how many operations were lost, and why).
pub const GAPS: Family = Family {
    name: "fim_gap_events_total",
    help: "Gap events reported: each says what was lost, and a rescan repairs it",
    kind: Kind::Counter,
    labels: &[],
};
/// The sensor's loop turned (read the kernel, or woke to look) last, in s since the epoch.
pub const SENSOR_LAST_TURN: Family = Family {
    name: "fim_sensor_last_turn_timestamp_seconds",
    help: "When the sensor last read from the kernel or woke to look (it wakes every few seconds when idle)",
    kind: Kind::Gauge,
    labels: &[],
};
/// The sensor in use: always 1, its name and tier in the labels.
pub const SENSOR_INFO: Family = Family {
    name: "fim_sensor_info",
    help: "The sensor in use (ebpf, fanotify, or both with auto) and its eBPF tier; always 1",
    kind: Kind::Gauge,
    labels: &["sensor", "tier"],
};
/// Events waiting in the integrity engine for their before/after values.
pub const BACKLOG: Family = Family {
    name: "fim_engine_backlog_events",
    help: "Events waiting in the integrity engine for their before/after values",
    kind: Kind::Gauge,
    labels: &[],
};
/// Bytes read to hash files after a change.
pub const HASHED_BYTES: Family = Family {
    name: "fim_engine_hashed_bytes_total",
    help: "Bytes read to hash files after a change",
    kind: Kind::Counter,
    labels: &[],
};
/// How long hashing one file took.
pub const HASH_DURATION: Family = Family {
    name: "fim_engine_hash_duration_seconds",
    help: "Time to stat and hash one file after a change",
    kind: Kind::Histogram(HASH_BUCKETS),
    labels: &[],
};
/// Files reported without a digest, by why.
pub const NOT_HASHED: Family = Family {
    name: "fim_engine_files_not_hashed_total",
    help: "Changed files reported without a digest, by reason (too_large, vanished, replaced, unreadable, by_rule)",
    kind: Kind::Counter,
    labels: &["reason"],
};
/// How long scans took, by why they ran.
pub const SCAN_DURATION: Family = Family {
    name: "fim_engine_scan_duration_seconds",
    help: "Time a scan of the watched paths took, by origin",
    kind: Kind::Histogram(SCAN_BUCKETS),
    labels: &["origin"],
};
/// Entries in the baseline.
pub const BASELINE_ENTRIES: Family = Family {
    name: "fim_baseline_entries",
    help: "Files and directories in the baseline, as of the last scan (at start, a rescan or a reload)",
    kind: Kind::Gauge,
    labels: &[],
};
/// Watched roots.
pub const WATCHED_ROOTS: Family = Family {
    name: "fim_watched_roots",
    help: "Paths the rules watch (directories, files and globs), as in force",
    kind: Kind::Gauge,
    labels: &[],
};
/// Delivery attempts that failed and will be made again.
pub const SINK_RETRIES: Family = Family {
    name: "fim_sink_retries_total",
    help: "Deliveries a sink will make again because the receiver was down or busy",
    kind: Kind::Counter,
    labels: &["sink"],
};
/// Bytes of the outbox a sink has not recorded as delivered.
pub const SINK_SPOOL_BYTES: Family = Family {
    name: "fim_sink_spool_bytes",
    help: "Bytes of the on-disk outbox holding events a sink has not recorded as delivered (in whole 4 MiB segments)",
    kind: Kind::Gauge,
    labels: &["sink"],
};
/// When a sink last delivered, in s since the epoch.
pub const SINK_LAST_SUCCESS: Family = Family {
    name: "fim_sink_last_success_timestamp_seconds",
    help: "When a sink last delivered events",
    kind: Kind::Gauge,
    labels: &["sink"],
};
/// Whether a sink's deliveries are failing now.
pub const SINK_FAILING: Family = Family {
    name: "fim_sink_failing",
    help: "1 while a sink's deliveries fail (its receiver is down, or refuses every event of a delivery, or the sink stopped), else 0",
    kind: Kind::Gauge,
    labels: &["sink"],
};
/// Since when a sink has been failing, in s since the epoch (0: it is not).
pub const SINK_FAILING_SINCE: Family = Family {
    name: "fim_sink_failing_since_timestamp_seconds",
    help: "When a sink's deliveries began to fail (0 while it delivers)",
    kind: Kind::Gauge,
    labels: &["sink"],
};
/// Configuration reloads, by result.
pub const CONFIG_RELOADS: Family = Family {
    name: "fim_config_reloads_total",
    help: "Configuration reloads (SIGHUP), by result (success, failure)",
    kind: Kind::Counter,
    labels: &["result"],
};
/// The configuration in force, as a number.
pub const CONFIG_HASH: Family = Family {
    name: "fim_config_hash",
    help: "The first 48 bits of the SHA-256 of the configuration in force, as `fim config default` would write it with the command line's overrides",
    kind: Kind::Gauge,
    labels: &[],
};
/// The build: always 1, its version in the label.
pub const BUILD_INFO: Family = Family {
    name: "fim_build_info",
    help: "The running fim's version; always 1",
    kind: Kind::Gauge,
    labels: &["version"],
};
/// Whether the daemon is ready (its sensor attached and its baseline loaded).
pub const READY: Family = Family {
    name: "fim_ready",
    help: "1 once the sensor is attached and the baseline loaded (what /ready answers)",
    kind: Kind::Gauge,
    labels: &[],
};
/// Whether the daemon is healthy.
pub const HEALTHY: Family = Family {
    name: "fim_healthy",
    help: "1 unless the sensor has stalled or a sink has failed for too long (what /health answers)",
    kind: Kind::Gauge,
    labels: &[],
};

/// Every family, in the order exporters list them.
pub const FAMILIES: &[Family] = &[
    BUILD_INFO,
    READY,
    HEALTHY,
    SENSOR_INFO,
    SENSOR_LAST_TURN,
    WATCHED_ROOTS,
    CONFIG_HASH,
    CONFIG_RELOADS,
    GAPS,
    SENSOR_LOST,
    SENSOR_OVERFLOWS,
    PROCESS_RECORDS_LOST,
    NOT_REPORTED,
    EVENTS,
    RULE_SUPPRESSED,
    RATE_LIMITED,
    UNENRICHED,
    HASHED,
    HASHED_BYTES,
    HASH_DURATION,
    NOT_HASHED,
    OBSERVE_ERRORS,
    BACKLOG,
    SCANS,
    SCAN_DURATION,
    FOUND,
    BASELINE_ENTRIES,
    SINK_DELIVERED,
    SINK_FAILED,
    SINK_RETRIES,
    SINK_DROPPED,
    SINK_SPOOLED,
    SINK_SPOOL_BYTES,
    SINK_QUEUED,
    SINK_LAST_SUCCESS,
    SINK_FAILING,
    SINK_FAILING_SINCE,
];

/// Why a sensor lost operations (the `cause` label of [`SENSOR_LOST`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossCause {
    /// The kernel's ring buffer was full (a record, or an announced operation's outcome).
    RingFull,
    /// The kernel's in-flight syscall table was full.
    PendingFull,
    /// The kernel's open-file table was full (the file's writes and close).
    WritersFull,
    /// A kernel record userspace could not decode.
    Undecodable,
    /// An event whose path could not be resolved.
    Unresolved,
}

impl LossCause {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RingFull => "ring_buffer_full",
            Self::PendingFull => "in_flight_table_full",
            Self::WritersFull => "open_file_table_full",
            Self::Undecodable => "undecodable",
            Self::Unresolved => "unresolved",
        }
    }
}

/// Why an announced operation was not reported (the `why` label of [`NOT_REPORTED`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReported {
    /// Its outcome said it failed.
    Failed,
    /// No outcome came in time (refused before it ran, or the outcome was lost).
    Expired,
    /// A newer announcement of the same thread replaced it (an `O_CREAT` open's mknod).
    Superseded,
}

impl NotReported {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Superseded => "superseded",
        }
    }
}

/// Something that happened, as the part it happened in reports it.
#[derive(Clone, Copy, Debug)]
pub enum Internal<'a> {
    /// The kernel's running total of operations lost for `cause` (read from its counters;
    /// a total, not an increment).
    KernelLossTotal { cause: LossCause, total: u64 },
    /// The kernel's running total of process-table records lost.
    ProcessRecordsLostTotal { total: u64 },
    /// Operations lost in userspace (undecodable record, unresolved path).
    Lost { cause: LossCause, operations: u64 },
    /// The kernel's event queue overflowed.
    QueueOverflow,
    /// Announced operations not reported.
    NotReported { why: NotReported, count: u64 },
    /// Events numbered for the sinks.
    Reported {
        sensor: &'a str,
        action: Action,
        count: u64,
    },
    /// Events no rule reports.
    RuleSuppressed { action: Action, count: u64 },
    /// Events a rate limit held back.
    RateLimited { count: u64 },
    /// An event passed without before/after values (backlog full).
    Unenriched,
    /// A file hashed after a change.
    Hashed,
    /// A file could not be observed.
    ObservationFailed,
    /// A scan of the watched paths completed.
    ScanCompleted { origin: Origin },
    /// A scan found a change.
    ChangeFound { action: Action },
    /// A sink delivered events.
    SinkDelivered { sink: &'a str, events: u64 },
    /// A sink failed to deliver events.
    SinkFailed { sink: &'a str, events: u64 },
    /// Events dropped at a full sink queue.
    SinkDropped { sink: &'a str, events: u64 },
    /// Events a sink read back from its spool.
    SinkSpooled { sink: &'a str, events: u64 },
    /// Batches now waiting in a sink's queue.
    SinkQueued { sink: &'a str, batches: u64 },
    /// Gap events numbered for the sinks (or made by a sink for its spool's cap).
    GapsReported { count: u64 },
    /// The sensor's loop turned, at `unix_seconds`.
    SensorTurned { unix_seconds: u64 },
    /// The sensor in use, and its tier (`none` without eBPF).
    SensorInUse { sensor: &'a str, tier: &'a str },
    /// Events now waiting in the integrity engine.
    Backlog { events: u64 },
    /// A file was stat'ed and hashed: `bytes` read in `micros`.
    HashTook { bytes: u64, micros: u64 },
    /// A changed file reported without a digest, and why (`too_large`...).
    NotHashed { reason: &'static str },
    /// A scan took `micros`.
    ScanTook { origin: Origin, micros: u64 },
    /// The baseline now holds `entries`.
    BaselineEntries { entries: u64 },
    /// The rules in force watch `roots` paths.
    WatchedRoots { roots: u64 },
    /// A sink will deliver again, `count` times more (0: it starts, and says so).
    SinkRetries { sink: &'a str, count: u64 },
    /// A sink delivered, at `unix_seconds`.
    SinkSucceeded { sink: &'a str, unix_seconds: u64 },
    /// A sink's deliveries began to fail at `since` (s since the epoch), or (`None`)
    /// deliver again.
    SinkFailing { sink: &'a str, since: Option<u64> },
    /// The outbox holds `bytes` a sink has not recorded.
    SinkSpoolBytes { sink: &'a str, bytes: u64 },
    /// A configuration reload succeeded or failed.
    ConfigReloaded { ok: bool },
    /// The configuration in force, as a number.
    ConfigHash { hash: u64 },
    /// The running build.
    Build { version: &'a str },
    /// Whether the daemon is ready, and healthy.
    Verdicts { ready: bool, healthy: bool },
}

/// One series' value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Its family.
    pub family: Family,
    /// Its label values, in the family's label order.
    pub labels: Vec<String>,
    /// Its value.
    pub value: u64,
}

/// One histogram series: how many observations fell in each bucket (the last: above
/// every bound), their sum and count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket, not cumulative; one more than the family's bounds.
    pub counts: Vec<u64>,
    /// Their sum, in µs.
    pub sum_micros: u64,
    /// How many.
    pub count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[u64], micros: u64) {
        if self.counts.len() != bounds.len() + 1 {
            self.counts = vec![0; bounds.len() + 1];
        }
        let bucket = bounds.partition_point(|b| *b < micros);
        self.counts[bucket] += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
        self.count += 1;
    }
}

/// Every series, shared by the parts of one pipeline.
#[derive(Debug, Default)]
pub struct Telemetry {
    series: Mutex<Store>,
}

/// Every series, by family, then label values.
type Series = BTreeMap<(Family, Vec<String>), u64>;

/// The counters and gauges, and the histograms.
#[derive(Debug, Default)]
struct Store {
    values: Series,
    histograms: BTreeMap<(Family, Vec<String>), Histogram>,
}

/// The series of `family`, with their label values.
fn of_family(series: &Series, family: Family) -> impl Iterator<Item = (&[String], u64)> {
    series
        .range((family, Vec::new())..)
        .take_while(move |((f, _), _)| *f == family)
        .map(|((_, labels), v)| (labels.as_slice(), *v))
}

/// The value of the series of `family` labelled `labels` (0 if it never changed).
fn value(series: &Series, family: Family, labels: &[&str]) -> u64 {
    of_family(series, family)
        .find(|(l, _)| l.iter().map(String::as_str).eq(labels.iter().copied()))
        .map_or(0, |(_, v)| v)
}

/// An internal event's label values, without allocating (at most two).
struct Labels<'a> {
    values: [&'a str; 2],
    len: usize,
}

impl<'a> Labels<'a> {
    fn none() -> Self {
        Self {
            values: ["", ""],
            len: 0,
        }
    }

    fn one(a: &'a str) -> Self {
        Self {
            values: [a, ""],
            len: 1,
        }
    }

    fn two(a: &'a str, b: &'a str) -> Self {
        Self {
            values: [a, b],
            len: 2,
        }
    }

    fn as_slice(&self) -> &[&'a str] {
        &self.values[..self.len]
    }

    /// Whether a stored series has these values.
    fn are(&self, stored: &[String]) -> bool {
        stored
            .iter()
            .map(String::as_str)
            .eq(self.as_slice().iter().copied())
    }

    fn owned(&self) -> Vec<String> {
        self.as_slice().iter().map(|l| (*l).to_owned()).collect()
    }
}

/// How an internal event changes its series.
enum Change {
    Add(u64),
    /// A running total read elsewhere: never lets the series go down.
    Total(u64),
    Set(u64),
    /// A histogram observation, in µs.
    Observe(u64),
}

/// One series an internal event changes, and how.
type Step<'a> = (Family, Labels<'a>, Change);

/// The series `event` changes (one, sometimes two).
fn steps<'a>(event: Internal<'a>) -> (Step<'a>, Option<Step<'a>>) {
    use Internal as I;
    fn one(step: Step<'_>) -> (Step<'_>, Option<Step<'_>>) {
        (step, None)
    }
    let flag = |b: bool| u64::from(b);
    match event {
        I::KernelLossTotal { cause, total } => one((
            SENSOR_LOST,
            Labels::one(cause.as_str()),
            Change::Total(total),
        )),
        I::ProcessRecordsLostTotal { total } => {
            one((PROCESS_RECORDS_LOST, Labels::none(), Change::Total(total)))
        }
        I::Lost { cause, operations } => one((
            SENSOR_LOST,
            Labels::one(cause.as_str()),
            Change::Add(operations),
        )),
        I::QueueOverflow => one((SENSOR_OVERFLOWS, Labels::none(), Change::Add(1))),
        I::NotReported { why, count } => {
            one((NOT_REPORTED, Labels::one(why.as_str()), Change::Add(count)))
        }
        I::Reported {
            sensor,
            action,
            count,
        } => one((
            EVENTS,
            Labels::two(sensor, action.as_str()),
            Change::Add(count),
        )),
        I::RuleSuppressed { action, count } => one((
            RULE_SUPPRESSED,
            Labels::one(action.as_str()),
            Change::Add(count),
        )),
        I::RateLimited { count } => one((RATE_LIMITED, Labels::none(), Change::Add(count))),
        I::Unenriched => one((UNENRICHED, Labels::none(), Change::Add(1))),
        I::Hashed => one((HASHED, Labels::none(), Change::Add(1))),
        I::ObservationFailed => one((OBSERVE_ERRORS, Labels::none(), Change::Add(1))),
        I::ScanCompleted { origin } => one((SCANS, Labels::one(origin.as_str()), Change::Add(1))),
        I::ChangeFound { action } => one((FOUND, Labels::one(action.as_str()), Change::Add(1))),
        I::SinkDelivered { sink, events } => {
            one((SINK_DELIVERED, Labels::one(sink), Change::Add(events)))
        }
        I::SinkFailed { sink, events } => {
            one((SINK_FAILED, Labels::one(sink), Change::Add(events)))
        }
        I::SinkDropped { sink, events } => {
            one((SINK_DROPPED, Labels::one(sink), Change::Add(events)))
        }
        I::SinkSpooled { sink, events } => {
            one((SINK_SPOOLED, Labels::one(sink), Change::Add(events)))
        }
        I::SinkQueued { sink, batches } => {
            one((SINK_QUEUED, Labels::one(sink), Change::Set(batches)))
        }
        I::GapsReported { count } => one((GAPS, Labels::none(), Change::Add(count))),
        I::SensorTurned { unix_seconds } => {
            one((SENSOR_LAST_TURN, Labels::none(), Change::Set(unix_seconds)))
        }
        I::SensorInUse { sensor, tier } => {
            one((SENSOR_INFO, Labels::two(sensor, tier), Change::Set(1)))
        }
        I::Backlog { events } => one((BACKLOG, Labels::none(), Change::Set(events))),
        I::HashTook { bytes, micros } => (
            (HASHED_BYTES, Labels::none(), Change::Add(bytes)),
            Some((HASH_DURATION, Labels::none(), Change::Observe(micros))),
        ),
        I::NotHashed { reason } => one((NOT_HASHED, Labels::one(reason), Change::Add(1))),
        I::ScanTook { origin, micros } => one((
            SCAN_DURATION,
            Labels::one(origin.as_str()),
            Change::Observe(micros),
        )),
        I::BaselineEntries { entries } => {
            one((BASELINE_ENTRIES, Labels::none(), Change::Set(entries)))
        }
        I::WatchedRoots { roots } => one((WATCHED_ROOTS, Labels::none(), Change::Set(roots))),
        I::SinkRetries { sink, count } => {
            one((SINK_RETRIES, Labels::one(sink), Change::Add(count)))
        }
        I::SinkSucceeded { sink, unix_seconds } => one((
            SINK_LAST_SUCCESS,
            Labels::one(sink),
            Change::Set(unix_seconds),
        )),
        I::SinkFailing { sink, since } => (
            (
                SINK_FAILING,
                Labels::one(sink),
                Change::Set(flag(since.is_some())),
            ),
            Some((
                SINK_FAILING_SINCE,
                Labels::one(sink),
                Change::Set(since.unwrap_or(0)),
            )),
        ),
        I::SinkSpoolBytes { sink, bytes } => {
            one((SINK_SPOOL_BYTES, Labels::one(sink), Change::Set(bytes)))
        }
        I::ConfigReloaded { ok } => one((
            CONFIG_RELOADS,
            Labels::one(if ok { "success" } else { "failure" }),
            Change::Add(1),
        )),
        I::ConfigHash { hash } => one((CONFIG_HASH, Labels::none(), Change::Set(hash))),
        I::Build { version } => one((BUILD_INFO, Labels::one(version), Change::Set(1))),
        I::Verdicts { ready, healthy } => (
            (READY, Labels::none(), Change::Set(flag(ready))),
            Some((HEALTHY, Labels::none(), Change::Set(flag(healthy)))),
        ),
    }
}

impl Store {
    /// Applies one step; the series' new value (a histogram's count).
    fn apply(&mut self, (family, labels, change): Step<'_>) -> u64 {
        if let Change::Observe(micros) = change {
            let Kind::Histogram(bounds) = family.kind else {
                return 0;
            };
            let h = match self
                .histograms
                .range_mut((family, Vec::new())..)
                .take_while(|((f, _), _)| *f == family)
                .find(|((_, l), _)| labels.are(l))
            {
                Some((_, h)) => h,
                None => self.histograms.entry((family, labels.owned())).or_default(),
            };
            h.observe(bounds, micros);
            return h.count;
        }
        // Found without allocating; a series' labels are copied once, when it first changes.
        let value = match self
            .values
            .range_mut((family, Vec::new())..)
            .take_while(|((f, _), _)| *f == family)
            .find(|((_, l), _)| labels.are(l))
        {
            Some((_, v)) => v,
            None => self.values.entry((family, labels.owned())).or_default(),
        };
        *value = match change {
            Change::Add(n) => value.saturating_add(n),
            Change::Total(t) => (*value).max(t),
            Change::Set(v) | Change::Observe(v) => v,
        };
        *value
    }
}

/// Where `family` comes in [`FAMILIES`].
fn rank(family: &Family) -> usize {
    FAMILIES
        .iter()
        .position(|g| g == family)
        .unwrap_or(usize::MAX)
}

impl Telemetry {
    /// Counts `event`; returns the new value of the (first) series it changed.
    pub fn emit(&self, event: Internal<'_>) -> u64 {
        let (first, second) = steps(event);
        let mut store = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let value = store.apply(first);
        if let Some(step) = second {
            store.apply(step);
        }
        value
    }

    /// Every histogram that was observed, by family (in [`FAMILIES`] order) then labels.
    pub fn histograms(&self) -> Vec<(Family, Vec<String>, Histogram)> {
        let store = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = store
            .histograms
            .iter()
            .map(|((f, l), h)| (*f, l.clone(), h.clone()))
            .collect();
        out.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then_with(|| a.1.cmp(&b.1)));
        out
    }

    /// The value of one series (0 if it never changed).
    pub fn get(&self, family: Family, labels: &[&str]) -> u64 {
        let store = self.series.lock().unwrap_or_else(|e| e.into_inner());
        value(&store.values, family, labels)
    }

    /// The sum of a family's series.
    pub fn total(&self, family: Family) -> u64 {
        let store = self.series.lock().unwrap_or_else(|e| e.into_inner());
        of_family(&store.values, family).map(|(_, v)| v).sum()
    }

    /// Every series that changed since start, by family (in [`FAMILIES`] order) then
    /// labels.
    pub fn samples(&self) -> Vec<Sample> {
        let store = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Sample> = store
            .values
            .iter()
            .map(|((family, labels), value)| Sample {
                family: *family,
                labels: labels.clone(),
                value: *value,
            })
            .collect();
        out.sort_by(|a, b| {
            rank(&a.family)
                .cmp(&rank(&b.family))
                .then_with(|| a.labels.cmp(&b.labels))
        });
        out
    }

    /// What the sensors lost so far, by cause: the totals the integrity engine turns into
    /// gap events and repair rescans.
    pub fn losses(&self) -> Losses {
        // Read at every turn of the engine's loop: one lock, no allocation.
        let store = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let series = &store.values;
        let lost = |cause: LossCause| value(series, SENSOR_LOST, &[cause.as_str()]);
        Losses {
            ring_full: lost(LossCause::RingFull),
            pending_full: lost(LossCause::PendingFull),
            writers_full: lost(LossCause::WritersFull),
            unresolved: lost(LossCause::Undecodable) + lost(LossCause::Unresolved),
            overflows: value(series, SENSOR_OVERFLOWS, &[]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_add_up_and_totals_never_go_down() {
        let t = Telemetry::default();
        assert_eq!(t.emit(Internal::Hashed), 1);
        assert_eq!(t.emit(Internal::Hashed), 2);
        let ring = |total| Internal::KernelLossTotal {
            cause: LossCause::RingFull,
            total,
        };
        assert_eq!(t.emit(ring(5)), 5);
        assert_eq!(t.emit(ring(3)), 5, "a stale total read later");
        assert_eq!(t.emit(ring(9)), 9);
        let queued = |batches| Internal::SinkQueued {
            sink: "stdout",
            batches,
        };
        t.emit(queued(4));
        assert_eq!(t.emit(queued(1)), 1, "a gauge is set");
    }

    #[test]
    fn a_histogram_counts_each_observation_in_its_bucket() {
        let t = Telemetry::default();
        for micros in [50, 100, 101, 20_000_000] {
            t.emit(Internal::HashTook { bytes: 10, micros });
        }
        assert_eq!(t.get(HASHED_BYTES, &[]), 40);
        let h = t.histograms();
        assert_eq!(h.len(), 1);
        let (family, labels, h) = &h[0];
        assert_eq!((*family, labels.len()), (HASH_DURATION, 0));
        assert_eq!((h.count, h.sum_micros), (4, 20_000_251));
        // 50 and 100 are at most 100 µs; 101 at most 250; 20 s above every bound.
        assert_eq!(h.counts[0], 2);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts.last(), Some(&1));
        assert_eq!(h.counts.iter().sum::<u64>(), 4);
        // Two series from one event: a failing sink.
        t.emit(Internal::SinkFailing {
            sink: "siem",
            since: Some(1_700_000_000),
        });
        assert_eq!(t.get(SINK_FAILING, &["siem"]), 1);
        assert_eq!(t.get(SINK_FAILING_SINCE, &["siem"]), 1_700_000_000);
        t.emit(Internal::SinkFailing {
            sink: "siem",
            since: None,
        });
        assert_eq!(t.get(SINK_FAILING, &["siem"]), 0);
        assert_eq!(t.get(SINK_FAILING_SINCE, &["siem"]), 0);
    }

    #[test]
    fn losses_read_what_the_sensors_reported() {
        let t = Telemetry::default();
        t.emit(Internal::KernelLossTotal {
            cause: LossCause::PendingFull,
            total: 7,
        });
        t.emit(Internal::Lost {
            cause: LossCause::Undecodable,
            operations: 1,
        });
        t.emit(Internal::Lost {
            cause: LossCause::Unresolved,
            operations: 2,
        });
        t.emit(Internal::QueueOverflow);
        assert_eq!(
            t.losses(),
            Losses {
                ring_full: 0,
                pending_full: 7,
                writers_full: 0,
                unresolved: 3,
                overflows: 1,
            }
        );
        assert_eq!(t.losses().operations(), 10);
    }

    #[test]
    fn samples_are_listed_by_family_then_labels() {
        let t = Telemetry::default();
        for (sensor, action) in [("fanotify", Action::Chmod), ("ebpf-lsm", Action::Unlink)] {
            t.emit(Internal::Reported {
                sensor,
                action,
                count: 2,
            });
        }
        t.emit(Internal::QueueOverflow);
        let s = t.samples();
        assert_eq!(s[0].family, SENSOR_OVERFLOWS);
        assert_eq!(s[1].labels, ["ebpf-lsm", "unlink"]);
        assert_eq!(s[2].labels, ["fanotify", "chmod"]);
        assert_eq!(t.total(EVENTS), 4);
        assert_eq!(t.get(EVENTS, &["fanotify", "chmod"]), 2);
        assert!(
            s.iter().all(|x| x.labels.len() == x.family.labels.len()),
            "every series has its family's labels"
        );
    }

    #[test]
    fn every_family_is_named_once_and_counters_end_in_total() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
        for f in FAMILIES {
            assert!(f.name.starts_with("fim_"), "{}", f.name);
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
            if let Kind::Histogram(bounds) = f.kind {
                assert!(f.name.ends_with("_seconds"), "{}", f.name);
                assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{}", f.name);
            }
        }
    }
}
