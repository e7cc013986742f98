//! Where events go, as components.
//!
//! A sink implements [`Sink`]: it delivers a slice of events, and says whether a failure is
//! worth retrying. It is built from its configuration (`[sinks.NAME]`, see [`build`]) and
//! runs on a thread of its own ([`runner`]), which feeds it from its bounded queue, retries
//! with backoff, and reopens it on SIGHUP. [`fanout`] numbers every event once ([`Stamp`]:
//! the same `event.sequence` and `event.id` in every sink) and hands every sink the same
//! batches, applying the policy the sink states for a full queue ([`WhenFull`]).

pub mod fanout;
pub mod file;
pub mod http;
pub mod runner;
pub mod stdout;
pub mod syslog;

use std::sync::Arc;

#[cfg(doc)]
use fim_core::event::Stamp;
use fim_core::{
    config::{SinkConfig, SinkKind},
    ecs::{Reporter, write_ecs},
    event::Stamped,
};

/// What the engine reported in one turn, numbered, shared by every sink.
pub type Batch = Arc<Vec<Stamped>>;

/// What happens to a batch when a sink's queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for room. The engine waits, then the sensor; what the kernel cannot hold
    /// meanwhile is counted there and repaired by a rescan, so nothing is lost unsaid.
    Block,
    /// Drop the batch for this sink only, counting its events: for a sink that must never
    /// hold the others back.
    DropNewest,
}

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
    /// Its policy when its queue is full.
    fn when_full(&self) -> WhenFull;
    /// Delivers the events of `batches`, in order: all of them, or none (a retry sends
    /// them again).
    fn deliver(&mut self, batches: &[Batch]) -> Result<(), Failure>;
    /// For a sink that sends requests: how many events it wants in one delivery, and how
    /// long a partial one may wait for more (`None`: it takes what is there).
    fn batching(&self) -> Option<(usize, std::time::Duration)> {
        None
    }
    /// Reopens what it writes to (SIGHUP, after logrotate moved a file away).
    fn reopen(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Renders the events of `batches` as JSON lines into `text` (emptied first).
pub fn json_lines(batches: &[Batch], by: &Reporter, text: &mut Vec<u8>) -> std::io::Result<()> {
    text.clear();
    for ev in batches.iter().flat_map(|b| b.iter()) {
        write_ecs(&mut *text, ev, by)?;
        text.push(b'\n');
    }
    Ok(())
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
        SinkKind::Stdout => Ok(Box::new(stdout::Stdout::new(
            name,
            std::io::stdout(),
            by.clone(),
        ))),
        SinkKind::File {
            path,
            max_size,
            keep,
        } => Ok(Box::new(file::FileSink::open(
            name,
            path.clone(),
            *max_size,
            *keep,
            by.clone(),
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
