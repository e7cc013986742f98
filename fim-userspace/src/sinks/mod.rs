//! Where events go, as components.
//!
//! A sink implements [`Sink`]: it delivers a slice of events, and says whether a failure is
//! worth retrying. It is built from its configuration (`[sinks.NAME]`, see [`build`]) and
//! runs on a thread of its own ([`runner`]), which feeds it from its bounded queue and its
//! spool, retries with backoff, and reopens it on SIGHUP. [`fanout`] numbers every event
//! once ([`Stamp`]: the same `event.sequence` and `event.id` in every sink), puts it in the
//! outbox with the baseline change it reports, and hands every sink the same batches.

pub mod fanout;
pub mod file;
pub mod http;
pub mod outlets;
pub mod runner;
pub mod stdout;
pub mod syslog;

use std::{sync::Arc, time::Instant};

#[cfg(doc)]
use fim_core::event::Stamp;
use fim_core::{
    baseline::{Baseline, BaselineError},
    config::{SinkConfig, SinkKind},
    ecs::Reporter,
    event::FileEvent,
    outbox::Record,
};

/// What the engine reported in one turn (or what a sink read back from the outbox),
/// numbered and rendered once, shared by every sink.
pub type Batch = Arc<Vec<Record>>;

/// Why a sink could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Its settings could not be used (a certificate, a secret): `what` says which and why.
    #[error("sink {sink}: {what}")]
    Setup {
        /// The sink's name.
        sink: String,
        /// What could not be used, and why.
        what: String,
    },
    /// Writing failed for good.
    #[error("sink {sink}: {what}: {source}")]
    Io {
        /// The sink's name.
        sink: String,
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// How a delivery failed.
#[derive(Debug)]
pub enum Failure {
    /// The receiver is unreachable or busy: the same events are delivered again later.
    Retry(String),
    /// The receiver refused these events for good: they are counted and logged, not
    /// retried.
    Reject(String),
    /// The receiver took all but `events` of them, which it refused for good.
    Refused {
        /// How many it refused.
        events: u64,
        /// Why, each.
        why: String,
    },
    /// The sink cannot go on.
    Fatal(SinkError),
}

/// One destination of events.
pub trait Sink: Send {
    /// Its name (`[sinks.NAME]`), in logs and counters.
    fn name(&self) -> &str;
    /// Delivers the events of `batches`, in order: all of them, or none (a retry sends
    /// them again).
    fn deliver(&mut self, batches: &[Batch]) -> Result<(), Failure>;
    /// For a sink that sends requests: how many events it wants in one delivery, and how
    /// long a partial one may wait for more (`None`: it takes what is there).
    fn batching(&self) -> Option<(usize, std::time::Duration)> {
        None
    }
    /// Of the events it delivered last, how many the receiver may yet lose (syslog has no
    /// acknowledgement: what a receiver had not read when its connection closed is gone).
    /// The sink's recorded cursor stays before them, so a restart sends them again. When
    /// `stopping`, the sink may first close its connection cleanly to learn that the
    /// receiver read everything.
    fn unconfirmed(&mut self, stopping: bool) -> u64 {
        let _ = stopping;
        0
    }
    /// Reopens what it writes to (SIGHUP, after logrotate moved a file away).
    fn reopen(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// The events of `batches` as JSON lines, in `text` (emptied first).
pub fn json_lines(batches: &[Batch], text: &mut Vec<u8>) {
    text.clear();
    for ev in batches.iter().flat_map(|b| b.iter()) {
        text.extend_from_slice(&ev.doc);
        text.push(b'\n');
    }
}

/// `n` events about `/w/f`, numbered by `stamper` and rendered for host `test-host`.
#[cfg(test)]
pub fn test_batch(stamper: &mut fim_core::event::Stamper, n: usize) -> Batch {
    use fim_core::event::{Action, FileEvent, PathSource, ReportedPath};
    let by = Reporter::new("test-host".into(), None);
    Arc::new(
        (0..n)
            .map(|_| {
                let ev = FileEvent::new(
                    Action::Create,
                    ReportedPath::new(b"/w/f".to_vec(), PathSource::Scan),
                    "test",
                );
                Record::render(&stamper.stamp(ev), &by).expect("renders")
            })
            .collect(),
    )
}

/// Where the integrity engine's reports go (the fan-out, [`fanout::Fanout`]). What it is handed is made durable in the baseline's
/// transaction (the outbox), and goes out only once that transaction is committed: the
/// baseline never holds a change whose report a crash could lose.
pub trait Output: Send {
    /// Takes the events reported since the last call and writes them, numbered, into
    /// `baseline`'s open transaction.
    fn stage(
        &mut self,
        events: Vec<FileEvent>,
        baseline: &mut Baseline,
    ) -> Result<(), BaselineError>;
    /// Stages what is due by `now` without an event (a rate limit's summary; every one
    /// still held when `None`, at the end).
    fn stage_due(
        &mut self,
        now: Option<Instant>,
        baseline: &mut Baseline,
    ) -> Result<(), BaselineError>;
    /// When [`Output::stage_due`] has something.
    fn next_due(&self) -> Option<Instant>;
    /// Whether staged events wait for a commit.
    fn staged(&self) -> bool;
    /// The transaction is committed: hands the staged events out. `false`: nobody takes
    /// them any more.
    fn publish(&mut self, baseline: &mut Baseline) -> Result<bool, BaselineError>;
}

/// The sinks of a configuration that names none: standard output.
pub fn default_sinks() -> Vec<SinkConfig> {
    vec![SinkConfig {
        name: "stdout".into(),
        kind: SinkKind::Stdout,
        spool: fim_core::config::Spool::default(),
    }]
}

/// Builds the sink `config` describes, for events `by` reports.
pub fn build(config: &SinkConfig, by: &Arc<Reporter>) -> Result<Box<dyn Sink>, SinkError> {
    let name = config.name.clone();
    match &config.kind {
        SinkKind::Stdout => Ok(Box::new(stdout::Stdout::new(name, std::io::stdout()))),
        SinkKind::File {
            path,
            max_size,
            keep,
        } => Ok(Box::new(file::FileSink::open(
            name,
            path.clone(),
            *max_size,
            *keep,
        )?)),
        SinkKind::Syslog(s) => Ok(Box::new(syslog::SyslogSink::new(
            name,
            s.clone(),
            by.clone(),
        )?)),
        SinkKind::Elasticsearch(h) => Ok(Box::new(http::HttpSink::new(
            name,
            http::Api::Elasticsearch,
            h,
            by.clone(),
        )?)),
        SinkKind::SplunkHec(h) => Ok(Box::new(http::HttpSink::new(
            name,
            http::Api::SplunkHec,
            h,
            by.clone(),
        )?)),
        SinkKind::Webhook(h) => Ok(Box::new(http::HttpSink::new(
            name,
            http::Api::Webhook,
            h,
            by.clone(),
        )?)),
    }
}
