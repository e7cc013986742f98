//! Event sources. Each sensor turns kernel activity into [`crate::event::FileEvent`]s.

pub mod ebpf;
pub mod fanotify;
pub mod procfs;

use std::sync::{Arc, atomic::Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{event::FileEvent, watch::WatchSet};

/// Which sensor `fim run --sensor` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SensorKind {
    /// eBPF, tracepoint tier.
    Ebpf,
    /// fanotify with filesystem marks.
    Fanotify,
}

/// A sensor failed to start or run.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// The eBPF sensor.
    #[error(transparent)]
    Ebpf(#[from] ebpf::EbpfError),
    /// The fanotify sensor.
    #[error(transparent)]
    Fanotify(#[from] fanotify::FanotifyError),
}

/// A started sensor of either kind.
pub enum Sensor {
    /// eBPF, tracepoint tier.
    Ebpf(ebpf::EbpfSensor),
    /// fanotify.
    Fanotify(fanotify::FanotifySensor),
}

impl Sensor {
    /// Starts the sensor of `kind` for `watch`.
    pub fn start(kind: SensorKind, watch: &Arc<WatchSet>) -> Result<Self, SensorError> {
        Ok(match kind {
            SensorKind::Ebpf => Self::Ebpf(ebpf::EbpfSensor::start(watch)?),
            SensorKind::Fanotify => Self::Fanotify(fanotify::FanotifySensor::start(watch.clone())?),
        })
    }

    /// The sensor's name, as in events.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ebpf(_) => ebpf::SENSOR_NAME,
            Self::Fanotify(_) => fanotify::SENSOR_NAME,
        }
    }

    /// A reader of the sensor's loss total (kernel drops, or fanotify queue overflows),
    /// which the integrity engine watches to schedule repair rescans.
    pub fn losses(&self) -> impl Fn() -> u64 + Send + 'static {
        let (ebpf, fan) = match self {
            Self::Ebpf(s) => (Some(s.counters.clone()), None),
            Self::Fanotify(s) => (None, Some(s.counters.clone())),
        };
        move || {
            ebpf.as_ref().map_or(0, |c| {
                c.ring_full.load(Ordering::Relaxed)
                    + c.pending_full.load(Ordering::Relaxed)
                    + c.writers_full.load(Ordering::Relaxed)
            }) + fan
                .as_ref()
                .map_or(0, |c| c.overflows.load(Ordering::Relaxed))
        }
    }

    /// Runs until `shutdown`, then drains and closes `tx`.
    pub async fn run(
        self,
        tx: mpsc::Sender<FileEvent>,
        shutdown: CancellationToken,
    ) -> Result<(), SensorError> {
        match self {
            Self::Ebpf(s) => s.run(tx, shutdown).await.map(drop).map_err(Into::into),
            Self::Fanotify(s) => Ok(s.run(tx, shutdown).await?),
        }
    }
}
