//! The Windows source: polls the watched registry keys and files, and waits between polls
//! on their change notifications, the next full poll, and the stop event.
//!
//! Each wake reads only what the signalled notifications cover (after a short settle, so a
//! burst of changes is one read), compares, commits the new snapshots to the baseline with
//! the events they make into the outbox, and hands the events to the sinks.

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};

use fim_core::{
    baseline::{Access, Baseline, BaselineError},
    config::Windows,
    event::{Event, Origin},
    filepoll::FilePoller,
    registry::poll::Poller,
    telemetry::{Internal, Telemetry},
};
use log::{debug, info, warn};
use windows_sys::Win32::{
    Foundation::{HANDLE, WAIT_OBJECT_0, WAIT_TIMEOUT},
    System::Threading::{CreateEventW, ResetEvent, WaitForMultipleObjects},
};

use super::{
    files::{DirNotify, WinDisk},
    registry::{Notify, WinRegistry},
};
use crate::sinks::{Output, fanout::Fanout};

/// How long a wake waits for the rest of a burst of changes before reading.
const SETTLE: Duration = Duration::from_millis(100);
/// The loop turns at least this often (the health check's sensor stall is at least 10 s).
const TURN: Duration = Duration::from_secs(5);
/// `WaitForMultipleObjects` takes at most this many handles.
const MAX_HANDLES: usize = 64;

/// Why the poller stopped.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The baseline (snapshots, outbox) failed.
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    /// Every sink is gone.
    #[error("every sink has stopped")]
    NoSink,
    /// A Windows call failed.
    #[error("{0}: {1}")]
    Os(&'static str, std::io::Error),
}

/// A notification and what it covers.
enum Watch {
    Key { root: usize, notify: Notify },
    Dir { dir: String, notify: DirNotify },
}

/// One auto-reset event, owned.
struct Event_(HANDLE);

impl Event_ {
    fn new() -> Result<Self, PollError> {
        // SAFETY: default security, auto-reset, not signalled, unnamed.
        let h = unsafe { CreateEventW(std::ptr::null(), 0, 0, std::ptr::null()) };
        if h.is_null() {
            return Err(PollError::Os(
                "CreateEventW",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Self(h))
    }
}

impl Drop for Event_ {
    fn drop(&mut self) {
        // SAFETY: a handle this value owns.
        unsafe { windows_sys::Win32::Foundation::CloseHandle(self.0) };
    }
}

/// The parent directory of a Windows path.
fn parent(path: &str) -> Option<&str> {
    let (dir, _) = path.rsplit_once('\\')?;
    Some(if dir.len() == 2 && dir.ends_with(':') {
        &path[..3]
    } else {
        dir
    })
}

/// Runs until `stop` is signalled (or every sink is gone): the first poll compares with
/// the baseline (`found_at_start`), then notifications and the interval drive it.
pub fn run(
    config: &Windows,
    state_dir: &Path,
    hash_max_size: u64,
    mut fanout: Fanout,
    telemetry: &Telemetry,
    stop: HANDLE,
) -> Result<(), PollError> {
    let mut baseline = Baseline::open(state_dir, Access::Write)?;
    let mut keys = Poller::load(&config.registry, &mut baseline)?;
    let mut files = FilePoller::load(&config.files, &baseline)?;
    let mut reg = WinRegistry;
    let mut disk = WinDisk { hash_max_size };
    let started = Instant::now();
    let mut deliver = |keys_which: &dyn Fn(usize) -> bool,
                       files_which: &dyn Fn(&str) -> bool,
                       origin: Origin,
                       keys: &mut Poller,
                       files: &mut FilePoller,
                       baseline: &mut Baseline|
     -> Result<(), PollError> {
        let (reg_events, stats) = keys.poll(&mut reg, keys_which, origin, baseline)?;
        let file_events = files.poll(&mut disk, files_which, origin, baseline)?;
        debug!(
            "poll ({}): {} keys read, {} unchanged, {} unreadable",
            origin.as_str(),
            stats.keys_read,
            stats.keys_skipped,
            stats.unreadable
        );
        let events: Vec<_> = reg_events
            .into_iter()
            .map(|(e, m)| (Event::Registry(e), Some(m)))
            .chain(
                file_events
                    .into_iter()
                    .map(|(e, m)| (Event::File(e), Some(m))),
            )
            .collect();
        fanout.stage_classified(events, baseline)?;
        baseline.commit()?;
        if !fanout.publish(baseline)? {
            return Err(PollError::NoSink);
        }
        Ok(())
    };
    let events: Vec<Event_> = (0..MAX_HANDLES - 1)
        .map(|_| Event_::new())
        .collect::<Result<_, _>>()?;
    let mut watches: Vec<Option<Watch>> = (0..MAX_HANDLES - 1).map(|_| None).collect();
    let dirs: BTreeSet<String> = files
        .files
        .iter()
        .filter_map(|f| parent(&f.path).map(str::to_owned))
        .collect();
    let wanted = keys.roots.len() + dirs.len();
    if wanted > MAX_HANDLES - 1 {
        warn!(
            "{wanted} keys and directories to watch, {} notifications at most: the rest are read every {:?}",
            MAX_HANDLES - 1,
            config.poll_interval
        );
    }
    // Armed before the first poll: a change while it reads wakes the next one.
    arm(&keys, &dirs, &mut watches, &events);
    deliver(
        &|_| true,
        &|_| true,
        Origin::Start,
        &mut keys,
        &mut files,
        &mut baseline,
    )?;
    telemetry.emit(Internal::SensorInUse {
        sensor: "windows-poll",
        tier: "none",
    });
    telemetry.emit(Internal::WatchedRoots {
        roots: (keys.roots.len() + files.files.len()) as u64,
    });
    telemetry.emit(Internal::BaselineEntries {
        entries: baseline.len()?,
    });
    info!(
        "ready: watching {} registry keys and {} files (first poll took {:?})",
        keys.roots.len(),
        files.files.len(),
        started.elapsed()
    );

    let mut next_full = Instant::now() + config.poll_interval;
    loop {
        arm(&keys, &dirs, &mut watches, &events);
        let mut handles = vec![stop];
        let mut slots = Vec::new();
        for (i, w) in watches.iter().enumerate() {
            match w {
                Some(Watch::Key { .. }) => {
                    handles.push(events[i].0);
                    slots.push(i);
                }
                Some(Watch::Dir { notify, .. }) => {
                    handles.push(notify.handle());
                    slots.push(i);
                }
                None => {}
            }
        }
        telemetry.emit(Internal::SensorTurned {
            unix_seconds: fim_core::event::unix_now_ns().max(0) as u64 / 1_000_000_000,
        });
        // Woken every few seconds at least, so `/health` sees the loop turn.
        let wait = next_full
            .saturating_duration_since(Instant::now())
            .min(TURN);
        // SAFETY: every handle is live for the call.
        let rc = unsafe {
            WaitForMultipleObjects(
                handles.len() as u32,
                handles.as_ptr(),
                0,
                wait.as_millis().min(u128::from(u32::MAX - 1)) as u32,
            )
        };
        if rc != WAIT_TIMEOUT {
            let first = rc.wrapping_sub(WAIT_OBJECT_0) as usize;
            if first == 0 {
                info!("stopping");
                break;
            }
            if first >= handles.len() {
                return Err(PollError::Os(
                    "WaitForMultipleObjects",
                    std::io::Error::last_os_error(),
                ));
            }
            // Let the burst settle, then take every notification signalled meanwhile.
            std::thread::sleep(SETTLE);
            let mut fired = vec![slots[first - 1]];
            for (k, &h) in handles.iter().enumerate().skip(1) {
                if k == first {
                    continue;
                }
                // SAFETY: a live handle; a zero timeout only polls it.
                if unsafe { WaitForMultipleObjects(1, &h, 0, 0) } == WAIT_OBJECT_0 {
                    fired.push(slots[k - 1]);
                }
            }
            let mut roots = BTreeSet::new();
            let mut changed_dirs = BTreeSet::new();
            for s in fired {
                match watches[s].take() {
                    // Asked again before reading, on the same key: a change made while the
                    // poll reads wakes the next turn.
                    Some(Watch::Key { root, notify }) => {
                        roots.insert(root);
                        if notify.rearm() {
                            watches[s] = Some(Watch::Key { root, notify });
                        }
                    }
                    Some(Watch::Dir { dir, notify }) => {
                        changed_dirs.insert(dir.clone());
                        if notify.rearm() {
                            watches[s] = Some(Watch::Dir { dir, notify });
                        }
                    }
                    None => {}
                }
            }
            deliver(
                &|i| roots.contains(&i),
                &|p| parent(p).is_some_and(|d| changed_dirs.contains(d)),
                Origin::Realtime,
                &mut keys,
                &mut files,
                &mut baseline,
            )?;
        }
        // The full poll on its interval, woken or not: notifications that never stop (a
        // missing key watched on a busy ancestor) must not hold it back.
        if Instant::now() >= next_full {
            deliver(
                &|_| true,
                &|_| true,
                Origin::Rescan,
                &mut keys,
                &mut files,
                &mut baseline,
            )?;
            next_full = Instant::now() + config.poll_interval;
        }
    }
    fanout.stage_due(None, &mut baseline)?;
    baseline.commit()?;
    fanout.publish(&mut baseline)?;
    Ok(())
}

/// (Re)arms what is not armed: a key's notification fires once; a missing key's watch
/// sits on an ancestor until the key appears, then moves to the key.
fn arm(keys: &Poller, dirs: &BTreeSet<String>, watches: &mut [Option<Watch>], events: &[Event_]) {
    let mut slot = 0;
    for (i, root) in keys.roots.iter().enumerate() {
        if slot >= watches.len() {
            return;
        }
        let on_key = matches!(&watches[slot], Some(Watch::Key { notify, .. }) if notify.on(&root.watched.path));
        if watches[slot].is_none() || (root.exists() && !on_key) {
            // Closing a key with a pending notification signals its event: the old watch
            // goes, and that signal with it, before the new one is armed.
            watches[slot] = None;
            // SAFETY: a live event handle.
            unsafe { ResetEvent(events[slot].0) };
            // SAFETY: `events` outlives every watch (both live for the whole poller).
            watches[slot] = unsafe {
                Notify::arm(
                    root.watched.hive,
                    root.watched.view,
                    &root.watched.path,
                    events[slot].0,
                )
            }
            .map(|notify| Watch::Key { root: i, notify });
        }
        slot += 1;
    }
    for dir in dirs {
        if slot >= watches.len() {
            return;
        }
        if watches[slot].is_none() {
            watches[slot] = DirNotify::arm(dir).map(|notify| Watch::Dir {
                dir: dir.clone(),
                notify,
            });
        }
        slot += 1;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_files_directory_is_its_parent_and_a_drive_root_keeps_its_backslash() {
        assert_eq!(super::parent("C:\\Windows\\win.ini"), Some("C:\\Windows"));
        assert_eq!(super::parent("C:\\autoexec.bat"), Some("C:\\"));
        assert_eq!(super::parent("nothing"), None);
    }
}
