//! The stdout sink: one ECS JSON document per line.
//!
//! It runs on its own thread: a write to a slow reader blocks only this thread, never the
//! sensor's. When full: blocks. Back-pressure travels up the channels to the sensor, whose
//! kernel ring buffer then fills and counts its losses, so nothing is dropped silently.

use std::{io::Write, sync::Arc};

use fim_core::{
    ecs::{Reporter, write_ecs},
    telemetry::{Internal, Telemetry},
};

use super::{Batch, Sink, SinkError, WhenFull};

/// Batches taken off the queue for one write, at most.
const BATCHES_PER_WRITE: usize = 16;

/// The sink, writing to standard output (or, in tests, to any writer).
pub struct Stdout<W> {
    out: W,
    by: Arc<Reporter>,
}

impl<W: Write + Send> Stdout<W> {
    /// A sink writing to `out` what `by` reports.
    pub fn new(out: W, by: Arc<Reporter>) -> Self {
        Self { out, by }
    }

    fn write(
        &mut self,
        queue: &flume::Receiver<Batch>,
        telemetry: &Telemetry,
    ) -> std::io::Result<()> {
        let mut text = Vec::with_capacity(64 * 1024);
        while let Ok(first) = queue.recv() {
            // One write for what is waiting (stdout is line-buffered: written line by line,
            // each event would cost a syscall).
            let mut batches = vec![first];
            while batches.len() < BATCHES_PER_WRITE
                && let Ok(more) = queue.try_recv()
            {
                batches.push(more);
            }
            let events = batches.iter().map(|b| b.len() as u64).sum();
            let written = self.write_batches(&batches, &mut text);
            if written.is_err() {
                telemetry.emit(Internal::SinkFailed { sink: NAME, events });
            }
            written?;
            telemetry.emit(Internal::SinkDelivered { sink: NAME, events });
        }
        Ok(())
    }

    fn write_batches(&mut self, batches: &[Batch], text: &mut Vec<u8>) -> std::io::Result<()> {
        text.clear();
        for ev in batches.iter().flat_map(|b| b.iter()) {
            write_ecs(&mut *text, ev, &self.by)?;
            text.push(b'\n');
        }
        self.out.write_all(text)?;
        self.out.flush()
    }
}

/// The sink's name in logs and counters.
const NAME: &str = "stdout";

impl<W: Write + Send> Sink for Stdout<W> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn when_full(&self) -> WhenFull {
        WhenFull::Block
    }

    fn run(
        mut self: Box<Self>,
        queue: flume::Receiver<Batch>,
        telemetry: Arc<Telemetry>,
    ) -> Result<(), SinkError> {
        self.write(&queue, &telemetry)
            .map_err(|source| SinkError::Write { sink: NAME, source })
    }
}
