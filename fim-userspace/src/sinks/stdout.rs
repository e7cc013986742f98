//! The stdout sink: one ECS JSON document per line.
//!
//! It runs on its own thread: a write to a slow reader blocks only this thread, never the
//! sensor's. When full: blocks. Back-pressure travels up the channels to the sensor, whose
//! kernel ring buffer then fills and counts its losses, so nothing is dropped silently.

use std::io::Write as _;

use tokio::sync::mpsc;

use fim_core::{ecs::write_ecs, event::FileEvent};

/// Batches taken off the channel for one write, at most.
const BATCHES_PER_WRITE: usize = 16;

/// Writes batches of events to stdout until the channel closes (the engine closes it when
/// it stops, after its last event). Returns how many events were written.
pub fn run(mut rx: mpsc::Receiver<Vec<FileEvent>>) -> std::io::Result<u64> {
    let mut sequence = 0u64;
    let mut text = Vec::with_capacity(64 * 1024);
    while let Some(first) = rx.blocking_recv() {
        // One write for what is waiting (stdout is line-buffered: written line by line, each
        // event would cost a syscall).
        let mut batches = vec![first];
        while batches.len() < BATCHES_PER_WRITE
            && let Ok(more) = rx.try_recv()
        {
            batches.push(more);
        }
        text.clear();
        for ev in batches.iter().flatten() {
            sequence += 1;
            write_ecs(&mut text, ev, sequence)?;
            text.push(b'\n');
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&text)?;
        out.flush()?;
    }
    Ok(sequence)
}
