//! The sinks of a pipeline, started: each built from its configuration (one that cannot
//! start stops the daemon before it begins), given its spool, and run on a blocking task of
//! its own behind a bounded queue; and the fan-out that numbers events into the outbox and
//! hands them out. Shared by every platform's daemon.

use std::{
    path::Path,
    sync::{Arc, atomic::AtomicU64},
};

use fim_core::{
    baseline::BaselineError, config::SinkConfig, ecs::Reporter, rules::RuleSet,
    telemetry::Telemetry,
};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use super::{
    SinkError, fanout,
    runner::{Reopen, Spool},
};

/// Batches buffered between the fan-out and each sink (the engine sends what one turn of
/// its loop reported, up to a few hundred events, as one batch).
pub const SINK_BATCHES: usize = 64;

/// The sinks could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A sink could not be built or its spool opened.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The outbox could not be read.
    #[error(transparent)]
    Baseline(#[from] BaselineError),
}

/// Running sinks and the fan-out feeding them.
pub struct Started {
    /// Numbers events, commits them to the outbox and hands them to every sink.
    pub fanout: fanout::Fanout,
    /// Each sink's task: it ends once the fan-out is dropped and its queue is drained.
    pub tasks: Vec<JoinHandle<Result<(), SinkError>>>,
    /// The sinks' names, in configuration order.
    pub names: Vec<String>,
}

/// Starts `sinks` on `tracker`, each resuming from its cursor in `state_dir`'s outbox;
/// numbering goes on from the last event committed.
pub fn start(
    sinks: &[SinkConfig],
    state_dir: &Path,
    rules: Arc<RuleSet>,
    reporter: &Arc<Reporter>,
    reopen: &Reopen,
    telemetry: &Arc<Telemetry>,
    tracker: &TaskTracker,
) -> Result<Started, StartError> {
    let built = sinks
        .iter()
        .map(|config| super::build(config, reporter))
        .collect::<Result<Vec<_>, _>>()?;
    let last = fim_core::outbox::last_sequence(state_dir)?;
    let head = Arc::new(AtomicU64::new(last));
    let mut outlets = Vec::new();
    let mut shares = Vec::new();
    let mut tasks = Vec::new();
    let mut names = Vec::new();
    for (sink, config) in built.into_iter().zip(sinks) {
        let name = sink.name().to_owned();
        let spool = Spool::open(state_dir, &name, head.clone(), reporter.clone())?;
        shares.push(fanout::SpoolShare {
            name: name.clone(),
            recorded: spool.recorded(),
            max_size: config.spool.max_size,
        });
        let (queue_tx, queue_rx) = flume::bounded(SINK_BATCHES);
        outlets.push(fanout::Outlet::spooled(&name, queue_tx));
        let t = telemetry.clone();
        let reopen = reopen.clone();
        tasks
            .push(tracker.spawn_blocking(move || {
                super::runner::run(sink, queue_rx, t, reopen, Some(spool))
            }));
        names.push(name);
    }
    let fanout = fanout::Fanout::new(outlets, rules, telemetry.clone())
        .reporting_as(reporter.clone())
        .rendering_cef(sinks.iter().any(|s| {
            matches!(&s.kind, fim_core::config::SinkKind::Syslog(syslog)
                if syslog.payload == fim_core::config::Payload::Cef)
        }))
        .with_outbox(last, head, shares);
    Ok(Started {
        fanout,
        tasks,
        names,
    })
}
