//! The stdout sink: one ECS JSON document per line.
//!
//! Like every sink, it is fed from its queue and its spool: a reader that stalls holds
//! nothing back but itself.

use std::io::Write;

use super::{Batch, Failure, Sink, SinkError, json_lines};

/// The sink, writing to standard output (or, in tests, to any writer).
pub struct Stdout<W> {
    name: String,
    out: W,
    text: Vec<u8>,
}

impl<W: Write + Send> Stdout<W> {
    /// A sink named `name` writing to `out`.
    pub fn new(name: String, out: W) -> Self {
        Self {
            name,
            out,
            text: Vec::with_capacity(64 * 1024),
        }
    }
}

impl<W: Write + Send> Sink for Stdout<W> {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver(&mut self, batches: &[Batch]) -> Result<(), Failure> {
        let fatal = |name: &str, what: &str, source| {
            Failure::Fatal(SinkError::Io {
                sink: name.to_owned(),
                what: what.to_owned(),
                source,
            })
        };
        json_lines(batches, &mut self.text);
        // One write for all of them (stdout is line-buffered: written line by line, each
        // event would cost a syscall). A reader that went away stops the sink.
        self.out
            .write_all(&self.text)
            .and_then(|()| self.out.flush())
            .map_err(|e| fatal(&self.name, "writing to standard output", e))
    }
}
