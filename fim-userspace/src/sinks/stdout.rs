//! The stdout sink: one ECS JSON document per line.
//!
//! It runs on its own thread: a write to a slow reader blocks only this thread, never the
//! sensor's. When full: blocks. Back-pressure travels up the channels to the sensor, whose
//! kernel ring buffer then fills and counts its losses, so nothing is dropped silently.

use std::io::Write;

use fim_core::ecs::write_ecs;

use super::{Batch, Sink, SinkError, WhenFull};

/// Batches taken off the queue for one write, at most.
const BATCHES_PER_WRITE: usize = 16;

/// The sink, writing to standard output (or, in tests, to any writer).
pub struct Stdout<W> {
    out: W,
}

impl<W: Write + Send> Stdout<W> {
    /// A sink writing to `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }

    fn write(&mut self, queue: &flume::Receiver<Batch>) -> std::io::Result<u64> {
        let mut written = 0u64;
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
            text.clear();
            for ev in batches.iter().flat_map(|b| b.iter()) {
                write_ecs(&mut text, ev)?;
                text.push(b'\n');
                written += 1;
            }
            self.out.write_all(&text)?;
            self.out.flush()?;
        }
        Ok(written)
    }
}

impl<W: Write + Send> Sink for Stdout<W> {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn when_full(&self) -> WhenFull {
        WhenFull::Block
    }

    fn run(mut self: Box<Self>, queue: flume::Receiver<Batch>) -> Result<u64, SinkError> {
        self.write(&queue).map_err(|source| SinkError::Write {
            sink: "stdout",
            source,
        })
    }
}
