//! `fim run`: a pipeline built from its description ([`Pipeline`]): a source, the watch-set
//! check, the integrity engine, the fan-out and its sinks, and shutdown by construction.
//!
//! source task -> filter task -> integrity engine and fan-out (own thread) -> each sink
//! (own thread, own bounded queue and spool), over bounded channels. The engine commits
//! each report to the outbox with the baseline change it reports before any sink sees it
//! ([`fim_core::outbox`]). One [`CancellationToken`] stops the source; it drains and closes
//! its channel, which ends the filter, then the engine (after settling open bursts and
//! committing the baseline), then each sink after what it holds; what a receiver did not
//! take stays in the outbox for the next start.
//!
//! A live reload ([`Update`], from `fim reload` or SIGHUP) goes to each stage in the order
//! that loses nothing: the fan-out's rules first, then the filter, which forwards the new
//! watch set to the engine in line with the events (those before were checked against the
//! old set), and last the source's kernel side. What only the new set watches reaches the
//! kernel after every later stage takes it; what both watch is never let go.

use std::sync::Arc;

use log::{error, info};
use tokio::sync::{mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use fim_core::{
    rules::RuleSet,
    telemetry::{self, Telemetry},
    watch::WatchSet,
};

use crate::{
    integrity::{
        engine::{Engine, EngineConfig, EngineError, Input, Rewatch},
        observe::Limits,
    },
    sinks::{SinkError, fanout, outlets, runner::Reopen},
    sources::{self, SourceError, SourceSpec},
};

/// What `fim run` runs: where events come from and where they go.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// The source.
    pub source: SourceSpec,
    /// What the configured rules make of each event, before it is numbered: reported or
    /// not, and with which rule names, severity, techniques and tags.
    pub rules: Arc<RuleSet>,
    /// The sinks; every event goes to each.
    pub sinks: Vec<fim_core::config::SinkConfig>,
    /// Where SIGHUP asks the sinks to reopen what they write to.
    pub reopen: Reopen,
    /// The host and agent every event names.
    pub reporter: Arc<fim_core::ecs::Reporter>,
    /// The metrics endpoint.
    pub metrics: fim_core::config::Metrics,
    /// The configuration in force, as `fim_config_hash` shows it.
    pub config_hash: u64,
}

/// A new configuration for the running daemon (a live reload): what to watch, what the
/// rules make of events, and how files are read.
pub struct Update {
    /// The new watch set.
    pub watch: WatchSet,
    /// The new rules.
    pub rules: Arc<RuleSet>,
    /// The new hashing limit, rules and package digests.
    pub limits: Limits,
}

/// A reload asked of the running daemon, and where it answers: `Ok` once every stage
/// follows the new configuration.
pub struct Reload {
    /// What to apply.
    pub update: Update,
    /// The answer.
    pub done: oneshot::Sender<Result<(), ReloadError>>,
}

/// A reload the daemon could not complete.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The source's kernel side could not follow the new watch set; the rules and the
    /// later stages follow it, the kernel watches what it managed to add.
    #[error("the sensor could not follow the new watch set: {0}")]
    Source(#[source] SourceError),
    /// The pipeline is stopping, or a stage ended.
    #[error("the daemon is stopping")]
    Stopping,
}

/// What the filter is asked to do between batches.
struct FilterRewatch {
    watch: Arc<WatchSet>,
    limits: Limits,
    /// Answered once the engine has the new set in line.
    done: oneshot::Sender<()>,
}

/// Events buffered between stages.
const CHANNEL_CAPACITY: usize = 4096;
/// Events the filter passes to the engine as one batch, at most.
const FILTER_BATCH: usize = 256;
/// Batches buffered between the filter and the engine.
const ENGINE_BATCHES: usize = 16;

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The source failed to start or run.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The integrity engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The sinks could not start.
    #[error(transparent)]
    Start(#[from] outlets::StartError),
    /// The metrics endpoint cannot listen.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::server::BindError),
    /// A task panicked.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// Names a path given under a symlinked root (`/bin/cat` where `/bin` is `/usr/bin`) by its
/// real location, as every sensor does for paths it resolves from objects, keeping the
/// spelling used in `requested_path`.
fn canonical_spelling(watch: &WatchSet, ev: &mut fim_core::event::FileEvent) {
    let canonical = watch.canonical(&ev.path.bytes);
    if canonical != ev.path.bytes {
        let given = std::mem::replace(&mut ev.path.bytes, canonical);
        if ev.requested_path.is_none() {
            ev.requested_path = Some(fim_core::event::ReportedPath {
                bytes: given,
                ..ev.path.clone()
            });
        }
    }
    if ev.action != fim_core::event::Action::Symlink
        && let Some(source) = ev.source.as_mut()
    {
        source.bytes = watch.canonical(&source.bytes);
    }
}

/// Runs until `shutdown` is cancelled. Prints "ready" to the log once the sensor is attached.
/// Every part counts in `telemetry`; the summary at stop reads it.
pub async fn run(
    watch: WatchSet,
    pipeline: Pipeline,
    integrity: EngineConfig,
    telemetry: Arc<Telemetry>,
    reloads: mpsc::Receiver<Reload>,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    // The endpoint first: a taken port stops the daemon before it begins.
    let _endpoint = crate::metrics::serve(&pipeline.metrics, pipeline.config_hash, &telemetry)?;
    telemetry.emit(telemetry::Internal::WatchedRoots {
        roots: watch.len() as u64,
    });
    let state_dir = integrity.state_dir.clone();
    let tracker = TaskTracker::new();
    let started = outlets::start(
        &pipeline.sinks,
        &state_dir,
        pipeline.rules.clone(),
        &pipeline.reporter,
        &pipeline.reopen,
        &telemetry,
        &tracker,
    )?;
    let (sink_tasks, sink_names) = (started.tasks, started.names);
    let watch = Arc::new(watch);
    let rules: fanout::LiveRules = Arc::new(std::sync::RwLock::new(pipeline.rules.clone()));
    let ancestry: fanout::ParentOf =
        Box::new(crate::sensors::procfs::ParentCache::default().into_lookup());
    let output = started
        .fanout
        .with_live_rules(rules.clone())
        .with_ancestry(ancestry);
    let engine = Engine::start(
        integrity,
        watch.clone(),
        Box::new(output),
        telemetry.clone(),
        pipeline.source.namer(),
    )?;
    let source = pipeline.source.build(&watch, &state_dir, &telemetry)?;
    let (source_tx, mut filter_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (engine_tx, engine_rx) = flume::bounded(ENGINE_BATCHES);
    let (source_rewatch, source_rewatches) = mpsc::channel(1);
    let sensor_task = tracker.spawn(source.run(source_tx, source_rewatches, shutdown.clone()));
    let watched_paths = watch.len();
    let (filter_rewatch, mut filter_rewatches) = mpsc::channel::<FilterRewatch>(1);
    let mut filter_watch = watch.clone();
    let filter_task = tracker.spawn(async move {
        // The kernel filter is a conservative prefix match; this is the exact rule check.
        let mut batch = Vec::with_capacity(FILTER_BATCH);
        let mut rewatches_open = true;
        loop {
            // What arrived together goes on together: one wakeup of the engine per batch.
            // Not biased: a flood of events must not hold a reload back. Which set checks
            // the events already read does not matter: only what both sets watch can be
            // there for now (the kernel takes the new set last).
            tokio::select! {
                n = filter_rx.recv_many(&mut batch, FILTER_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    let watched = watched_of(&filter_watch, &mut batch);
                    if !watched.is_empty()
                        && engine_tx.send_async(Input::Events(watched)).await.is_err()
                    {
                        break;
                    }
                }
                r = filter_rewatches.recv(), if rewatches_open => {
                    let Some(FilterRewatch { watch, limits, done }) = r else {
                        rewatches_open = false;
                        continue;
                    };
                    filter_watch = watch.clone();
                    let rewatch = Input::Rewatch(Box::new(Rewatch { watch, limits }));
                    if engine_tx.send_async(rewatch).await.is_err() {
                        break;
                    }
                    let _ = done.send(());
                }
            }
        }
    });
    let losses = telemetry.clone();
    let engine_task = tracker.spawn_blocking(move || engine.run(&engine_rx, || losses.losses()));
    tracker.spawn(apply_reloads(
        reloads,
        rules,
        filter_rewatch,
        source_rewatch,
        shutdown.clone(),
    ));
    tracker.close();
    info!("ready: watching {watched_paths} paths");

    let sensor_result = sensor_task
        .await
        .map_err(|e| DaemonError::Task(e.to_string()))?;
    // A sensor that ended on its own (an error) stops the daemon: nothing else would.
    shutdown.cancel();
    filter_task
        .await
        .map_err(|e| DaemonError::Task(e.to_string()))?;
    let engine_result = engine_task
        .await
        .map_err(|e| DaemonError::Task(e.to_string()))?;
    let mut sink_error = None;
    for task in sink_tasks {
        if let Err(e) = task.await.map_err(|e| DaemonError::Task(e.to_string()))? {
            error!("{e}");
            sink_error.get_or_insert(e);
        }
    }
    tracker.wait().await;
    log_summary(&telemetry, &sink_names);
    if let Err(e) = sensor_result {
        error!("sensor: {e}");
        return Err(e.into());
    }
    engine_result?;
    if let Some(e) = sink_error {
        return Err(e.into());
    }
    Ok(())
}

/// The exact watch-set check of `batch` (emptied): the events `watch` covers, each named
/// by its canonical spelling.
fn watched_of(
    watch: &WatchSet,
    batch: &mut Vec<fim_core::event::FileEvent>,
) -> Vec<fim_core::event::FileEvent> {
    let mut watched = Vec::with_capacity(batch.len());
    for mut ev in batch.drain(..) {
        canonical_spelling(watch, &mut ev);
        if watch.matches(&ev.path.bytes)
            || ev.source.as_ref().is_some_and(|s| {
                ev.action != fim_core::event::Action::Symlink && watch.matches(&s.bytes)
            })
        {
            watched.push(ev);
        }
    }
    watched
}

/// Applies each reload, in the order the module's documentation gives, until `shutdown`.
async fn apply_reloads(
    mut reloads: mpsc::Receiver<Reload>,
    rules: fanout::LiveRules,
    filter: mpsc::Sender<FilterRewatch>,
    source: mpsc::Sender<sources::Rewatch>,
    shutdown: CancellationToken,
) {
    loop {
        let reload = tokio::select! {
            () = shutdown.cancelled() => return,
            r = reloads.recv() => match r {
                Some(r) => r,
                None => return,
            },
        };
        let Reload { update, done } = reload;
        let result = tokio::select! {
            () = shutdown.cancelled() => Err(ReloadError::Stopping),
            r = apply(update, &rules, &filter, &source) => r,
        };
        let _ = done.send(result);
    }
}

/// One reload through every stage.
async fn apply(
    update: Update,
    rules: &fanout::LiveRules,
    filter: &mpsc::Sender<FilterRewatch>,
    source: &mpsc::Sender<sources::Rewatch>,
) -> Result<(), ReloadError> {
    let Update {
        watch,
        rules: new_rules,
        limits,
    } = update;
    let watch = Arc::new(watch);
    match rules.write() {
        Ok(mut r) => *r = new_rules,
        Err(poisoned) => *poisoned.into_inner() = new_rules,
    }
    let (done, filtered) = oneshot::channel();
    let rewatch = FilterRewatch {
        watch: watch.clone(),
        limits,
        done,
    };
    log::debug!("reload: the rules follow; handing the watch set to the filter");
    if filter.send(rewatch).await.is_err() || filtered.await.is_err() {
        return Err(ReloadError::Stopping);
    }
    log::debug!("reload: the filter and the engine follow; handing the watch set to the sensor");
    let (done, followed) = oneshot::channel();
    let rewatch = sources::Rewatch {
        watch: watch.clone(),
        done,
    };
    if source.send(rewatch).await.is_err() {
        return Err(ReloadError::Stopping);
    }
    match followed.await {
        Ok(Ok(())) => {
            info!("reloaded: watching {} paths", watch.len());
            Ok(())
        }
        Ok(Err(e)) => Err(ReloadError::Source(e)),
        Err(_) => Err(ReloadError::Stopping),
    }
}

/// The summary at stop, from the telemetry.
fn log_summary(t: &Telemetry, sinks: &[String]) {
    for sink in sinks {
        let dropped = t.get(telemetry::SINK_DROPPED, &[sink]);
        if dropped > 0 {
            error!("sink {sink}: {dropped} events lost because its spool reached its size cap");
        }
    }
    // What every sink wrote (the fewest, where one stopped or dropped).
    let written = sinks
        .iter()
        .map(|sink| t.get(telemetry::SINK_DELIVERED, &[sink]))
        .min()
        .unwrap_or(0);
    let lost = t.losses();
    info!(
        "stopped: {written} events written, {} operations lost before they were reported ({} queue overflows of unknown size), {} passed without integrity data, {} files hashed",
        lost.operations(),
        lost.overflows,
        t.total(telemetry::UNENRICHED),
        t.total(telemetry::HASHED)
    );
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use fim_core::{
        event::{Action, FileEvent, PathSource, ReportedPath},
        watch::Found,
    };

    #[test]
    fn a_path_under_a_symlinked_root_is_named_by_its_real_location() {
        let probe = |p: &Path| {
            if p == Path::new("/bin") {
                Found::Dir(PathBuf::from("/usr/bin"))
            } else {
                Found::Missing
            }
        };
        let set = WatchSet::new(&["/bin".to_owned()], false, probe).expect("valid");
        let spelled = |p: &[u8]| ReportedPath::new(p.to_vec(), PathSource::SyscallString);
        // dpkg's atomic replace, as the tracepoint tier reads it from the syscall.
        let mut ev = FileEvent::new(Action::Rename, spelled(b"/bin/cat"), "test");
        ev.source = Some(spelled(b"/bin/cat.dpkg-new"));
        canonical_spelling(&set, &mut ev);
        assert_eq!(ev.path.bytes, b"/usr/bin/cat");
        assert_eq!(
            ev.source.map(|s| s.bytes),
            Some(b"/usr/bin/cat.dpkg-new".to_vec())
        );
        assert_eq!(
            ev.requested_path.map(|r| r.bytes),
            Some(b"/bin/cat".to_vec())
        );
        // Already canonical: untouched.
        let mut ev = FileEvent::new(Action::Chmod, spelled(b"/usr/bin/cat"), "test");
        canonical_spelling(&set, &mut ev);
        assert_eq!(
            (ev.path.bytes.as_slice(), ev.requested_path),
            (&b"/usr/bin/cat"[..], None)
        );
    }
}
