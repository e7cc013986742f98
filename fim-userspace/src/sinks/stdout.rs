//! The stdout sink: one ECS JSON document per line.
//!
//! When full: blocks. Back-pressure travels up the channel to the sensor, whose kernel ring
//! buffer then fills and counts its losses, so nothing is dropped silently.

use std::io::Write as _;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{event::FileEvent, sinks::ecs::write_ecs};

/// Writes batches of events to stdout until the channel closes. Returns how many events
/// were written.
pub async fn run(
    mut rx: mpsc::Receiver<Vec<FileEvent>>,
    shutdown: CancellationToken,
) -> std::io::Result<u64> {
    let mut sequence = 0u64;
    let mut batches = Vec::with_capacity(16);
    let mut text = Vec::with_capacity(64 * 1024);
    loop {
        // Drain what the sensor already sent even after shutdown: the sensor closes the
        // channel when it stops, which ends this loop.
        let n = rx.recv_many(&mut batches, 16).await;
        if n == 0 {
            break;
        }
        // One write for what is waiting (stdout is line-buffered: written line by line, each
        // event would cost a syscall).
        text.clear();
        for ev in batches.drain(..).flatten() {
            sequence += 1;
            write_ecs(&mut text, &ev, sequence)?;
            text.push(b'\n');
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&text)?;
        out.flush()?;
        drop(out);
        if shutdown.is_cancelled() && rx.is_empty() && rx.is_closed() {
            break;
        }
    }
    Ok(sequence)
}
