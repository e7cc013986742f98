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
    event::{FileEvent, Losses},
    watch::WatchSet,
};

use crate::sensors::{Sensor, SensorError, SensorKind};

/// A reader of a source's losses by cause: what it saw but could not deliver. The
/// integrity engine turns them into gap events and repair rescans.
pub type LossReader = Arc<dyn Fn() -> Losses + Send + Sync>;

/// A source's running task.
pub type Running = Pin<Box<dyn Future<Output = Result<(), SensorError>> + Send>>;

/// One origin of events.
pub trait Source: Send {
    /// A reader of its losses.
    fn losses(&self) -> LossReader;
    /// Runs until `shutdown`, then delivers what it holds and closes `tx`.
    fn run(self: Box<Self>, tx: mpsc::Sender<FileEvent>, shutdown: CancellationToken) -> Running;
}

/// The sources a pipeline can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// A kernel sensor (`--sensor`).
    Sensor(SensorKind),
}

impl SourceSpec {
    /// Starts the source for `watch`; `state_dir` holds the baseline.
    pub fn build(
        self,
        watch: &Arc<WatchSet>,
        state_dir: &Path,
    ) -> Result<Box<dyn Source>, SensorError> {
        match self {
            Self::Sensor(kind) => Ok(Box::new(Sensor::start(kind, watch, state_dir)?)),
        }
    }
}

impl Source for Sensor {
    fn losses(&self) -> LossReader {
        Arc::new(Sensor::losses(self))
    }

    fn run(self: Box<Self>, tx: mpsc::Sender<FileEvent>, shutdown: CancellationToken) -> Running {
        Box::pin(Sensor::run(*self, tx, shutdown))
    }
}
