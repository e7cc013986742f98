//! Where events go, as components.
//!
//! A sink is a module with its running task: it implements [`Sink`] and is built from its
//! [`SinkSpec`] (one line in [`SinkSpec::build`] registers it). The daemon gives each sink
//! a bounded queue of its own; [`fanout`] numbers every event once ([`Stamp`]: the same
//! `event.sequence` and `event.id` in every sink) and hands every sink the same batches,
//! applying the policy the sink states for a full queue ([`WhenFull`]).

pub mod fanout;
pub mod stdout;

use std::sync::Arc;

#[cfg(doc)]
use fim_core::event::Stamp;
use fim_core::{event::Stamped, telemetry::Telemetry};

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

/// Why a sink stopped.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing failed.
    #[error("writing events to {sink}: {source}")]
    Write {
        /// The sink.
        sink: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One destination of events.
pub trait Sink: Send {
    /// Its name in logs and counters.
    fn name(&self) -> &'static str;
    /// Its policy when its queue is full.
    fn when_full(&self) -> WhenFull;
    /// Delivers batches until its queue closes and is empty, on a thread of its own,
    /// reporting what it delivered (and failed to) to `telemetry`.
    fn run(
        self: Box<Self>,
        queue: flume::Receiver<Batch>,
        telemetry: Arc<Telemetry>,
    ) -> Result<(), SinkError>;
}

/// The sinks a pipeline can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    /// One ECS JSON document per line on standard output.
    Stdout,
}

impl SinkSpec {
    /// Builds the sink, for events `by` reports.
    pub fn build(self, by: &Arc<fim_core::ecs::Reporter>) -> Box<dyn Sink> {
        match self {
            Self::Stdout => Box::new(stdout::Stdout::new(std::io::stdout(), by.clone())),
        }
    }
}
