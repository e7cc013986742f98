//! The Windows build: `fim.exe` polls the registry keys and files of `[windows]` and sends
//! what changed through the same outbox, sinks and metrics as Linux. It runs in a console
//! (`fim.exe run`, Ctrl-C stops it) or as a service (`fim.exe service install`).
//!
//! [`registry`] and [`files`] read the machine; [`poller`] waits on change notifications
//! and polls; [`service`] talks to the service control manager. What they compare and
//! report is platform-free, in `fim_core::registry` and `fim_core::filepoll`.

pub mod cli;
pub mod files;
pub mod poller;
pub mod registry;
pub mod service;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicPtr, Ordering},
    },
};

use fim_core::{config::Config, telemetry::Telemetry};
use log::{error, info};
use tokio_util::task::TaskTracker;
use windows_sys::Win32::{
    Foundation::HANDLE,
    System::{
        Console::SetConsoleCtrlHandler,
        Threading::{CreateEventW, SetEvent},
    },
};

use crate::sinks::{outlets, runner::Reopen};

/// `s` as a NUL-terminated UTF-16 string.
pub fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain([0]).collect()
}

/// The stop event: set by Ctrl-C or the service control manager, waited on by the poller.
static STOP: AtomicPtr<core::ffi::c_void> = AtomicPtr::new(std::ptr::null_mut());

/// The stop event, made once (manual reset: once stopped, stopped).
fn stop_event() -> HANDLE {
    let current = STOP.load(Ordering::Acquire);
    if !current.is_null() {
        return current;
    }
    // SAFETY: default security, manual reset, not signalled, unnamed.
    let made = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
    match STOP.compare_exchange(
        std::ptr::null_mut(),
        made,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => made,
        Err(other) => {
            // SAFETY: the event made here lost the race and is not used.
            unsafe { windows_sys::Win32::Foundation::CloseHandle(made) };
            other
        }
    }
}

/// Asks the daemon to stop.
pub fn request_stop() {
    // SAFETY: a live event handle.
    unsafe { SetEvent(stop_event()) };
}

unsafe extern "system" fn on_console_control(_kind: u32) -> windows_sys::core::BOOL {
    request_stop();
    1
}

/// Stops on Ctrl-C, Ctrl-Break and console close.
pub fn stop_on_console_control() {
    // SAFETY: a handler that only sets an event.
    unsafe { SetConsoleCtrlHandler(Some(on_console_control), 1) };
}

/// `%ProgramData%\fim`: the configuration file and the state directory live there.
pub fn data_dir() -> PathBuf {
    std::env::var_os("ProgramData")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("C:\\ProgramData"))
        .join("fim")
}

/// The state directory: the configuration's, unless it is the Linux default.
pub fn state_dir(config: &Config) -> PathBuf {
    if config.daemon.state_dir == Path::new(fim_core::defaults::STATE_DIR) {
        data_dir().join("state")
    } else {
        config.daemon.state_dir.clone()
    }
}

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The async runtime could not start.
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The sinks could not start.
    #[error(transparent)]
    Start(#[from] outlets::StartError),
    /// The metrics endpoint cannot listen.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::server::BindError),
    /// The poller failed.
    #[error(transparent)]
    Poll(#[from] poller::PollError),
    /// A sink failed.
    #[error(transparent)]
    Sink(#[from] crate::sinks::SinkError),
    /// A task panicked.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// Runs the daemon on `config` until the stop event is set.
pub fn run(config: &Config, state_dir: &Path) -> Result<(), RunError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let telemetry = Arc::new(Telemetry::default());
    let reporter = Arc::new(crate::host::reporter());
    let sinks = if config.sinks.is_empty() {
        crate::sinks::default_sinks()
    } else {
        config.sinks.clone()
    };
    runtime.block_on(async {
        let _endpoint = crate::metrics::serve(
            &config.metrics,
            crate::metrics::config_hash(config),
            &telemetry,
        )?;
        std::fs::create_dir_all(state_dir).ok();
        let tracker = TaskTracker::new();
        let started = outlets::start(
            &sinks,
            state_dir,
            Arc::new(fim_core::rules::RuleSet::none()),
            &reporter,
            &Reopen::default(),
            &telemetry,
            &tracker,
        )?;
        let windows = config.windows.clone();
        let dir = state_dir.to_owned();
        let max = config.daemon.hash_max_size;
        let fanout = started.fanout;
        let stop = stop_event() as usize;
        let t = telemetry.clone();
        let polled = tracker
            .spawn_blocking(move || poller::run(&windows, &dir, max, fanout, &t, stop as HANDLE));
        tracker.close();
        let result = polled.await.map_err(|e| RunError::Task(e.to_string()))?;
        let mut sink_error = None;
        for task in started.tasks {
            if let Err(e) = task.await.map_err(|e| RunError::Task(e.to_string()))? {
                error!("{e}");
                sink_error.get_or_insert(e);
            }
        }
        tracker.wait().await;
        info!("stopped");
        result?;
        match sink_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    })
}
