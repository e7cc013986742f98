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

/// Whether a series only grows or goes up and down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Only grows (a total since start).
    Counter,
    /// The current value.
    Gauge,
}

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

/// Every family, in the order exporters list them.
pub const FAMILIES: &[Family] = &[
    SENSOR_LOST,
    SENSOR_OVERFLOWS,
    PROCESS_RECORDS_LOST,
    NOT_REPORTED,
    EVENTS,
    RULE_SUPPRESSED,
    RATE_LIMITED,
    UNENRICHED,
    HASHED,
    OBSERVE_ERRORS,
    SCANS,
    FOUND,
    SINK_DELIVERED,
    SINK_FAILED,
    SINK_DROPPED,
    SINK_SPOOLED,
    SINK_QUEUED,
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

/// Every series, shared by the parts of one pipeline.
#[derive(Debug, Default)]
pub struct Telemetry {
    series: Mutex<Series>,
}

/// Every series, by family, then label values.
type Series = BTreeMap<(Family, Vec<String>), u64>;

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
}

impl Telemetry {
    /// Counts `event`; returns the new value of the series it changed.
    pub fn emit(&self, event: Internal<'_>) -> u64 {
        use Internal as I;
        let (family, labels, change): (Family, Labels<'_>, Change) = match event {
            I::KernelLossTotal { cause, total } => (
                SENSOR_LOST,
                Labels::one(cause.as_str()),
                Change::Total(total),
            ),
            I::ProcessRecordsLostTotal { total } => {
                (PROCESS_RECORDS_LOST, Labels::none(), Change::Total(total))
            }
            I::Lost { cause, operations } => (
                SENSOR_LOST,
                Labels::one(cause.as_str()),
                Change::Add(operations),
            ),
            I::QueueOverflow => (SENSOR_OVERFLOWS, Labels::none(), Change::Add(1)),
            I::NotReported { why, count } => {
                (NOT_REPORTED, Labels::one(why.as_str()), Change::Add(count))
            }
            I::Reported {
                sensor,
                action,
                count,
            } => (
                EVENTS,
                Labels::two(sensor, action.as_str()),
                Change::Add(count),
            ),
            I::RuleSuppressed { action, count } => (
                RULE_SUPPRESSED,
                Labels::one(action.as_str()),
                Change::Add(count),
            ),
            I::RateLimited { count } => (RATE_LIMITED, Labels::none(), Change::Add(count)),
            I::Unenriched => (UNENRICHED, Labels::none(), Change::Add(1)),
            I::Hashed => (HASHED, Labels::none(), Change::Add(1)),
            I::ObservationFailed => (OBSERVE_ERRORS, Labels::none(), Change::Add(1)),
            I::ScanCompleted { origin } => (SCANS, Labels::one(origin.as_str()), Change::Add(1)),
            I::ChangeFound { action } => (FOUND, Labels::one(action.as_str()), Change::Add(1)),
            I::SinkDelivered { sink, events } => {
                (SINK_DELIVERED, Labels::one(sink), Change::Add(events))
            }
            I::SinkFailed { sink, events } => (SINK_FAILED, Labels::one(sink), Change::Add(events)),
            I::SinkDropped { sink, events } => {
                (SINK_DROPPED, Labels::one(sink), Change::Add(events))
            }
            I::SinkSpooled { sink, events } => {
                (SINK_SPOOLED, Labels::one(sink), Change::Add(events))
            }
            I::SinkQueued { sink, batches } => {
                (SINK_QUEUED, Labels::one(sink), Change::Set(batches))
            }
        };
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        // Found without allocating; a series' labels are copied once, when it first changes.
        let value = match series
            .range_mut((family, Vec::new())..)
            .take_while(|((f, _), _)| *f == family)
            .find(|((_, l), _)| labels.are(l))
        {
            Some((_, v)) => v,
            None => series.entry((family, labels.owned())).or_default(),
        };
        *value = match change {
            Change::Add(n) => value.saturating_add(n),
            Change::Total(t) => (*value).max(t),
            Change::Set(v) => v,
        };
        *value
    }

    /// The value of one series (0 if it never changed).
    pub fn get(&self, family: Family, labels: &[&str]) -> u64 {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        value(&series, family, labels)
    }

    /// The sum of a family's series.
    pub fn total(&self, family: Family) -> u64 {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        of_family(&series, family).map(|(_, v)| v).sum()
    }

    /// Every series that changed since start, by family (in [`FAMILIES`] order) then
    /// labels.
    pub fn samples(&self) -> Vec<Sample> {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Sample> = series
            .iter()
            .map(|((family, labels), value)| Sample {
                family: *family,
                labels: labels.clone(),
                value: *value,
            })
            .collect();
        let rank = |f: &Family| FAMILIES.iter().position(|g| g == f).unwrap_or(usize::MAX);
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
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let lost = |cause: LossCause| value(&series, SENSOR_LOST, &[cause.as_str()]);
        Losses {
            ring_full: lost(LossCause::RingFull),
            pending_full: lost(LossCause::PendingFull),
            writers_full: lost(LossCause::WritersFull),
            unresolved: lost(LossCause::Undecodable) + lost(LossCause::Unresolved),
            overflows: value(&series, SENSOR_OVERFLOWS, &[]),
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
        }
    }
}
