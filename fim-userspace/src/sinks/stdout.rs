//! The stdout sink: one ECS JSON document per line.
//!
//! When full: blocks. Back-pressure travels up the channels to the sensor, whose kernel
//! ring buffer then fills and counts its losses, so nothing is dropped silently.

use std::{io::Write, sync::Arc};

use fim_core::ecs::Reporter;

use super::{Batch, Failure, Sink, SinkError, WhenFull, json_lines};

/// The sink, writing to standard output (or, in tests, to any writer).
pub struct Stdout<W> {
    name: String,
    out: W,
    by: Arc<Reporter>,
    text: Vec<u8>,
}

impl<W: Write + Send> Stdout<W> {
    /// A sink named `name` writing to `out` what `by` reports.
    pub fn new(name: String, out: W, by: Arc<Reporter>) -> Self {
        Self {
            name,
            out,
            by,
            text: Vec::with_capacity(64 * 1024),
        }
    }
}

impl<W: Write + Send> Sink for Stdout<W> {
    fn name(&self) -> &str {
        &self.name
    }

    fn when_full(&self) -> WhenFull {
        WhenFull::Block
    }

    fn deliver(&mut self, batches: &[Batch]) -> Result<(), Failure> {
        let fatal = |name: &str, what: &str, source| {
            Failure::Fatal(SinkError::Io {
                sink: name.to_owned(),
                what: what.to_owned(),
                source,
            })
        };
        json_lines(batches, &self.by, &mut self.text)
            .map_err(|e| fatal(&self.name, "rendering events", e))?;
        // One write for all of them (stdout is line-buffered: written line by line, each
        // event would cost a syscall). A reader that went away stops the sink.
        self.out
            .write_all(&self.text)
            .and_then(|()| self.out.flush())
            .map_err(|e| fatal(&self.name, "writing to standard output", e))
    }
}
