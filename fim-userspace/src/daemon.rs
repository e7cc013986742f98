//! `fim run`: one sensor, the watch-set check, one sink, and shutdown by construction.
//!
//! sensor task --(bounded channel)--> filter --(bounded channel)--> sink task.
//! One [`CancellationToken`] stops the sensor; the sensor drains and closes its channel,
//! which ends the filter and then the sink, so every event read from the kernel is written.

use std::sync::{Arc, atomic::Ordering};

use log::{error, info};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    sensors::ebpf::{EbpfError, EbpfSensor},
    sinks,
    watch::WatchSet,
};

/// Events buffered between stages.
const CHANNEL_CAPACITY: usize = 4096;

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The sensor failed to start or run.
    #[error(transparent)]
    Sensor(#[from] EbpfError),
    /// Writing output failed.
    #[error("writing events to stdout: {0}")]
    Sink(std::io::Error),
    /// A task panicked.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// Runs until `shutdown` is cancelled. Prints "ready" to the log once the sensor is attached.
pub async fn run(watch: WatchSet, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let sensor = EbpfSensor::start(&watch)?;
    let counters = sensor.counters.clone();
    let (sensor_tx, mut filter_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (sink_tx, sink_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let tracker = TaskTracker::new();
    let sensor_task = tracker.spawn(sensor.run(sensor_tx, shutdown.clone()));
    let watched_paths = watch.len();
    let watch = Arc::new(watch);
    let filter_task = tracker.spawn(async move {
        // The kernel filter is a conservative prefix match; this is the exact rule check.
        while let Some(ev) = filter_rx.recv().await {
            let watched = watch.matches(&ev.path.bytes)
                || ev.source.as_ref().is_some_and(|s| {
                    ev.action != crate::event::Action::Symlink && watch.matches(&s.bytes)
                });
            if watched && sink_tx.send(ev).await.is_err() {
                break;
            }
        }
    });
    let sink_task = tracker.spawn(sinks::stdout::run(sink_rx, shutdown.clone()));
    tracker.close();
    info!("ready: watching {watched_paths} paths");

    let sensor_result = sensor_task
        .await
        .map_err(|e| DaemonError::Task(e.to_string()))?;
    filter_task
        .await
        .map_err(|e| DaemonError::Task(e.to_string()))?;
    let written = sink_task
        .await
        .map_err(|e| DaemonError::Task(e.to_string()))?
        .map_err(DaemonError::Sink)?;
    tracker.wait().await;
    let lost = counters.ring_full.load(Ordering::Relaxed)
        + counters.pending_full.load(Ordering::Relaxed)
        + counters.writers_full.load(Ordering::Relaxed);
    info!("stopped: {written} events written, {lost} lost in the kernel");
    if let Err(e) = sensor_result {
        error!("sensor: {e}");
        return Err(e.into());
    }
    Ok(())
}
