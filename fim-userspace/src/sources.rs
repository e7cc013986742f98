//! Where events come from, as components.
//!
//! A source implements [`Source`] and is built from its [`SourceSpec`] (one line in
//! [`SourceSpec::build`] registers it). Today the one source is a sensor chosen by
//! `--sensor`; the scans that reconcile the disk with the baseline run inside the
//! integrity engine, which the pipeline places after the source.

use std::{future::Future, path::Path, pin::Pin, sync::Arc};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use fim_core::{
    attrs::{Attr, Snapshot},
    event::FileEvent,
    telemetry::Telemetry,
    watch::WatchSet,
};

#[cfg(target_os = "linux")]
use crate::sensors::{Sensor, SensorError, SensorKind};

/// Why a source could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A Linux sensor's.
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    Sensor(#[from] SensorError),
}

/// Names what a source reported without a name, from the values the integrity engine read
/// before and after the event and what changed (`fim.changed`). Returns false when the
/// event turned out not to start a write to a regular file (its write burst ends).
pub type Namer = fn(&mut FileEvent, Option<&Snapshot>, Option<&Snapshot>, &[Attr]) -> bool;

/// A live reload, as a source applies it: from now on it reports what `watch` covers; it
/// answers on `done` once its kernel side (filters, marks) covers the new set.
pub struct Rewatch {
    /// The new watch set.
    pub watch: Arc<WatchSet>,
    /// Where the source answers.
    pub done: tokio::sync::oneshot::Sender<Result<(), SourceError>>,
}

/// A source's running task.
pub type Running = Pin<Box<dyn Future<Output = Result<(), SourceError>> + Send>>;

/// One origin of events. What it loses it reports to the pipeline's telemetry (given when
/// it is built), where the integrity engine reads the totals.
pub trait Source: Send {
    /// Runs until `shutdown`, then delivers what it holds and closes `tx`. Between reads
    /// it applies the live reloads that come on `rewatch`.
    fn run(
        self: Box<Self>,
        tx: mpsc::Sender<FileEvent>,
        rewatch: mpsc::Receiver<Rewatch>,
        shutdown: CancellationToken,
    ) -> Running;
}

/// The sources a pipeline can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// A kernel sensor (`--sensor`).
    #[cfg(target_os = "linux")]
    Sensor(SensorKind),
}

impl SourceSpec {
    /// How the engine names this source's unnamed events, if it has any.
    pub fn namer(self) -> Option<Namer> {
        match self {
            // Every sensor may report through fanotify: `auto` and `fanotify` do, and the
            // tracepoint tier has fanotify as its witness.
            #[cfg(target_os = "linux")]
            Self::Sensor(_) => Some(crate::sensors::fanotify::naming::name_from_values),
        }
    }

    /// Starts the source for `watch`; `state_dir` holds the baseline; it counts in
    /// `telemetry`.
    pub fn build(
        self,
        watch: &Arc<WatchSet>,
        state_dir: &Path,
        telemetry: &Arc<Telemetry>,
    ) -> Result<Box<dyn Source>, SourceError> {
        #[cfg(not(target_os = "linux"))]
        let _ = (watch, state_dir, telemetry);
        match self {
            #[cfg(target_os = "linux")]
            Self::Sensor(kind) => Ok(Box::new(Sensor::start(kind, watch, state_dir, telemetry)?)),
        }
    }
}

#[cfg(target_os = "linux")]
impl Source for Sensor {
    fn run(
        self: Box<Self>,
        tx: mpsc::Sender<FileEvent>,
        rewatch: mpsc::Receiver<Rewatch>,
        shutdown: CancellationToken,
    ) -> Running {
        Box::pin(async move { Ok(Sensor::run(*self, tx, rewatch, shutdown).await?) })
    }
}
