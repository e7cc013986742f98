//! A sink's thread: takes what waits in its queue, has the sink deliver it, and when the
//! receiver is down delivers the same events again after a pause that doubles (with
//! jitter) up to [`MAX_BACKOFF`]. Meanwhile its queue fills and the fan-out skips it; what
//! the queue did not take, the sink reads back from its spool (the outbox, see
//! [`fim_core::outbox`]) in order, so it delivers every event at least once, in sequence
//! order, whatever the outage, across restarts. Each SIGHUP has the sink reopen what it
//! writes to.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use log::{error, info, warn};

use fim_core::{
    ecs::Reporter,
    event::{Action, FileEvent, Gap, PathSource, ReportedPath, SPOOL_FULL, Stamp, Stamped},
    outbox::{OutboxReader, Record},
    telemetry::{Internal, Telemetry},
};

use super::{Batch, Failure, Sink, SinkError};

/// Batches taken off the queue for one delivery, at most.
const BATCHES_PER_DELIVERY: usize = 16;
/// The first pause after a failed delivery.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a stopping daemon keeps trying to deliver what it holds.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often an idle sink looks for a reopen request.
const REOPEN_CHECK: Duration = Duration::from_millis(200);

/// Asks every sink to reopen what it writes to (SIGHUP): a generation each looks at.
#[derive(Clone, Debug, Default)]
pub struct Reopen(Arc<AtomicU64>);

impl Reopen {
    /// Asks for a reopen.
    pub fn request(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn generation(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The pause before attempt `failures + 1`: doubling from [`FIRST_BACKOFF`], at most
/// [`MAX_BACKOFF`], then between half and all of it (`jitter` in 0..1000), so that many
/// agents do not retry in step.
pub fn backoff(failures: u32, jitter: u64) -> Duration {
    let full = FIRST_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    full / 2 + full / 2 * (jitter % 1000) as u32 / 1000
}

/// A number in 0..1000 that differs from call to call.
fn jitter() -> u64 {
    u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    ) % 1000
}

/// Where a sink's cursors live, under the state directory.
const CURSOR_DIR: &str = "sinks";
/// How often a delivering sink records its cursor (and always when idle or stopping): a
/// crash re-delivers at most what it delivered since, with the same `event.id`s.
const RECORD_EVERY: Duration = Duration::from_millis(100);
/// Events read back from the outbox for one delivery, at most.
const READ_BACK: usize = 4096;

/// A sink's spool: the outbox it reads what it missed from, and its cursor, the last
/// sequence it delivered, kept in `STATE_DIR/sinks/NAME.cursor`.
pub struct Spool {
    state_dir: PathBuf,
    reader: Option<OutboxReader>,
    /// The last sequence committed to the outbox.
    head: Arc<AtomicU64>,
    path: PathBuf,
    /// The cursor to record: what was delivered, less what the receiver may yet lose.
    cursor: u64,
    /// The cursor as last written to its file: the outbox keeps what follows it.
    recorded: Arc<AtomicU64>,
    recorded_at: Instant,
    by: Arc<Reporter>,
}

impl Spool {
    /// Sink `name`'s spool in `state_dir`. A sink seen for the first time starts after
    /// `head` (what is in the outbox was someone else's), and its cursor file is written at
    /// once, so a crash cannot make it skip what follows.
    pub fn open(
        state_dir: &Path,
        name: &str,
        head: Arc<AtomicU64>,
        by: Arc<Reporter>,
    ) -> Result<Self, SinkError> {
        let dir = state_dir.join(CURSOR_DIR);
        let io = |what: String| {
            move |source| SinkError::Io {
                sink: name.to_owned(),
                what,
                source,
            }
        };
        std::fs::create_dir_all(&dir).map_err(io(format!("creating `{}`", dir.display())))?;
        let path = dir.join(format!("{}.cursor", name.replace('/', "_")));
        let cursor = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|e| SinkError::Setup {
                sink: name.to_owned(),
                what: format!("its cursor `{}` holds no sequence: {e}", path.display()),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => head.load(Ordering::Acquire),
            Err(e) => return Err(io(format!("reading `{}`", path.display()))(e)),
        };
        let mut spool = Self {
            state_dir: state_dir.to_owned(),
            reader: None,
            head,
            path,
            cursor,
            recorded: Arc::new(AtomicU64::new(cursor)),
            recorded_at: Instant::now(),
            by,
        };
        spool
            .write_cursor()
            .map_err(io(format!("writing `{}`", spool.path.display())))?;
        Ok(spool)
    }

    /// The cursor as recorded, which the outbox's pruning follows.
    pub fn recorded(&self) -> Arc<AtomicU64> {
        self.recorded.clone()
    }

    fn write_cursor(&mut self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("cursor.new");
        std::fs::write(&tmp, format!("{}\n", self.cursor))?;
        std::fs::rename(&tmp, &self.path)?;
        self.recorded.store(self.cursor, Ordering::Release);
        self.recorded_at = Instant::now();
        Ok(())
    }

    /// Records the cursor if it moved and `now` or [`RECORD_EVERY`] says so.
    fn record(&mut self, name: &str, now: bool) {
        if self.recorded.load(Ordering::Relaxed) == self.cursor
            || !(now || self.recorded_at.elapsed() >= RECORD_EVERY)
        {
            return;
        }
        if let Err(e) = self.write_cursor() {
            warn!(
                "sink {name}: recording its cursor in `{}`: {e}",
                self.path.display()
            );
        }
    }

    fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// What follows sequence `after` (delivered) up to `upto`, read back from the outbox;
    /// a gap event first when the outbox no longer holds what follows it (the cap let it go).
    fn read_back(
        &mut self,
        name: &str,
        after: u64,
        upto: u64,
        telemetry: &Telemetry,
    ) -> Result<Batch, SinkError> {
        let reader = match &mut self.reader {
            Some(r) => r,
            None => self
                .reader
                .insert(
                    OutboxReader::open(&self.state_dir).map_err(|e| SinkError::Setup {
                        sink: name.to_owned(),
                        what: format!("opening the outbox: {e}"),
                    })?,
                ),
        };
        let rows = reader
            .read(after, upto, READ_BACK)
            .map_err(|e| SinkError::Setup {
                sink: name.to_owned(),
                what: format!("reading the outbox: {e}"),
            })?;
        let first = rows.first().map_or(upto + 1, |r| r.sequence);
        let mut batch = Vec::with_capacity(rows.len() + 1);
        if first > after + 1 {
            let lost = first - after - 1;
            telemetry.emit(Internal::SinkDropped {
                sink: name,
                events: lost,
            });
            error!(
                "sink {name}: {lost} events (sequences {} to {}) were let go: its spool reached its size cap; a gap event says so",
                after + 1,
                first - 1
            );
            batch.push(self.gap(first - 1, lost));
            telemetry.emit(Internal::GapsReported { count: 1 });
        }
        telemetry.emit(Internal::SinkSpooled {
            sink: name,
            events: rows.len() as u64,
        });
        batch.extend(rows);
        Ok(Arc::new(batch))
    }

    /// The gap event of `lost` events up to sequence `last`, which it takes.
    fn gap(&self, last: u64, lost: u64) -> Record {
        let now = fim_core::event::unix_now_ns();
        let mut ev = FileEvent::new(
            Action::Gap,
            ReportedPath::new(b"/".to_vec(), PathSource::Scan),
            "fim",
        );
        ev.time_unix_ns = now;
        ev.gap = Some(Box::new(Gap {
            operations: lost,
            unknown_more: false,
            causes: vec![(SPOOL_FULL, lost)],
            since_unix_ns: now,
            roots: Vec::new(),
        }));
        let stamped = Stamped {
            stamp: Stamp {
                sequence: last,
                id: uuid::Uuid::now_v7(),
            },
            event: ev.into(),
            rules: None,
        };
        Record::render(&stamped, &self.by).unwrap_or_else(|_| Record {
            sequence: last,
            id: stamped.stamp.id,
            time_unix_ns: now,
            action: Action::Gap.as_str().into(),
            severity: 4,
            doc: Box::default(),
            cef: None,
        })
    }
}

/// `batches` without the events up to `cursor` (delivered already, or read back).
fn after_cursor(batches: Vec<Batch>, cursor: u64) -> Vec<Batch> {
    batches
        .into_iter()
        .filter_map(|b| {
            if b.first().is_none_or(|r| r.sequence > cursor) {
                Some(b)
            } else if b.last().is_some_and(|r| r.sequence > cursor) {
                Some(Arc::new(
                    b.iter().filter(|r| r.sequence > cursor).cloned().collect(),
                ))
            } else {
                None
            }
        })
        .collect()
}

/// Runs `sink` until its queue closes and what it was handed is delivered. With a
/// `spool`, events go out strictly in sequence order: what the queue did not hold is read
/// back from the outbox, and at a stop what the receiver did not take stays there for the
/// next start. Without one, a stopping daemon keeps trying for [`STOP_GRACE`].
pub fn run(
    mut sink: Box<dyn Sink>,
    queue: flume::Receiver<Batch>,
    telemetry: Arc<Telemetry>,
    reopen: Reopen,
    mut spool: Option<Spool>,
) -> Result<(), SinkError> {
    let name = sink.name().to_owned();
    let mut seen_reopen = reopen.generation();
    let mut cursor = spool.as_ref().map_or(0, |s| s.cursor);
    let mut closed = false;
    // Since when deliveries have failed (s since the epoch), while they do.
    let mut failing: Option<u64> = None;
    // Its series exist from the start, at 0: a first drop or refusal shows in `increase()`.
    for zero in [
        Internal::SinkDelivered {
            sink: &name,
            events: 0,
        },
        Internal::SinkFailed {
            sink: &name,
            events: 0,
        },
        Internal::SinkDropped {
            sink: &name,
            events: 0,
        },
        Internal::SinkSpooled {
            sink: &name,
            events: 0,
        },
        Internal::SinkRetries {
            sink: &name,
            count: 0,
        },
        Internal::SinkQueued {
            sink: &name,
            batches: 0,
        },
        Internal::SinkFailing {
            sink: &name,
            since: None,
        },
    ] {
        telemetry.emit(zero);
    }
    let grace = if spool.is_some() {
        Duration::ZERO
    } else {
        STOP_GRACE
    };
    loop {
        if reopen.generation() != seen_reopen {
            seen_reopen = reopen.generation();
            sink.reopen()?;
            info!("sink {name}: reopened");
        }
        let behind = spool.as_ref().is_some_and(|s| s.head() > cursor);
        let mut batches: Vec<Batch> = Vec::new();
        if !behind && !closed {
            match queue.recv_timeout(REOPEN_CHECK) {
                Ok(b) => batches.push(b),
                Err(flume::RecvTimeoutError::Timeout) => {
                    if let Some(s) = spool.as_mut() {
                        s.record(&name, true);
                    }
                    continue;
                }
                Err(flume::RecvTimeoutError::Disconnected) => closed = true,
            }
        }
        while batches.len() < BATCHES_PER_DELIVERY
            && let Ok(more) = queue.try_recv()
        {
            batches.push(more);
        }
        telemetry.emit(Internal::SinkQueued {
            sink: &name,
            batches: queue.len() as u64,
        });
        closed = closed || queue.is_disconnected() && queue.is_empty();
        let mut batches = after_cursor(batches, cursor);
        if let Some(s) = spool.as_mut() {
            // A hole before what the queue holds (or after it, up to the outbox's head):
            // read it back. What the queue held then comes again from the outbox.
            let next = batches.first().and_then(|b| b.first()).map(|r| r.sequence);
            let upto = next.map_or(s.head(), |n| n - 1);
            if upto > cursor {
                batches = vec![s.read_back(&name, cursor, upto, &telemetry)?];
            }
        }
        if batches.iter().all(|b| b.is_empty()) {
            if closed && spool.as_ref().is_none_or(|s| s.head() <= cursor) {
                if let Some(s) = spool.as_mut() {
                    s.cursor = cursor.saturating_sub(sink.unconfirmed(true));
                    s.record(&name, true);
                }
                return Ok(());
            }
            continue;
        }
        // A sink that sends requests waits a moment for a fuller one.
        if let (Some((want, wait)), false) = (sink.batching(), closed) {
            let until = Instant::now() + wait;
            while batches.iter().map(|b| b.len()).sum::<usize>() < want {
                match queue.recv_deadline(until) {
                    Ok(more) => batches.extend(after_cursor(vec![more], cursor)),
                    Err(_) => break,
                }
            }
        }
        let last = batches
            .iter()
            .filter_map(|b| b.last())
            .map(|r| r.sequence)
            .max()
            .unwrap_or(cursor);
        let events: u64 = batches.iter().map(|b| b.len() as u64).sum();
        let outcome = deliver_with_retries(
            sink.as_mut(),
            &batches,
            &queue,
            &mut closed,
            grace,
            (&reopen, &mut seen_reopen),
            &telemetry,
            &mut failing,
        );
        match outcome {
            Ok(()) => {
                telemetry.emit(Internal::SinkDelivered {
                    sink: &name,
                    events,
                });
            }
            Err(Failure::Refused {
                events: refused,
                why,
            }) => {
                telemetry.emit(Internal::SinkDelivered {
                    sink: &name,
                    events: events.saturating_sub(refused),
                });
                telemetry.emit(Internal::SinkFailed {
                    sink: &name,
                    events: refused,
                });
                error!("sink {name}: {refused} events refused by the receiver, not retried: {why}");
            }
            Err(Failure::Reject(why)) => {
                telemetry.emit(Internal::SinkFailed {
                    sink: &name,
                    events,
                });
                error!("sink {name}: {events} events refused by the receiver, not retried: {why}");
            }
            Err(Failure::Retry(why)) if spool.is_some() => {
                // Only when stopping: the outbox keeps them for the next start.
                if let Some(s) = spool.as_mut() {
                    s.cursor = cursor.saturating_sub(sink.unconfirmed(true));
                    s.record(&name, true);
                    let waiting = s.head().saturating_sub(s.cursor);
                    warn!(
                        "sink {name}: stopping with {waiting} events in its spool, delivered at the next start: {why}"
                    );
                }
                return Ok(());
            }
            Err(Failure::Retry(why)) => {
                // Only when stopping: the grace period is over.
                telemetry.emit(Internal::SinkFailed {
                    sink: &name,
                    events,
                });
                error!(
                    "sink {name}: stopping with {events} events undelivered (no delivery for {} s): {why}",
                    STOP_GRACE.as_secs()
                );
                return Ok(());
            }
            Err(Failure::Fatal(e)) => {
                telemetry.emit(Internal::SinkFailed {
                    sink: &name,
                    events,
                });
                if let Some(s) = spool.as_mut() {
                    s.cursor = cursor;
                    s.record(&name, true);
                }
                return Err(e);
            }
        }
        cursor = cursor.max(last);
        if let Some(s) = spool.as_mut() {
            // What the receiver may yet lose stays in the outbox.
            s.cursor = cursor.saturating_sub(sink.unconfirmed(false));
            s.record(&name, false);
        }
    }
}

/// Says whether sink `name` is failing now: `failing` holds since when.
fn failing_state(telemetry: &Telemetry, name: &str, failing: &mut Option<u64>, now_failing: bool) {
    match (now_failing, failing.is_some()) {
        (true, false) => {
            let since = fim_core::event::unix_now_secs();
            *failing = Some(since);
            telemetry.emit(Internal::SinkFailing {
                sink: name,
                since: Some(since),
            });
        }
        (false, true) => {
            *failing = None;
            telemetry.emit(Internal::SinkFailing {
                sink: name,
                since: None,
            });
        }
        _ => {}
    }
}

/// Delivers `batches`, again and again while the receiver is down, reopening the sink
/// between attempts when asked (a file moved away may be what fails). Gives up with the
/// last [`Failure::Retry`] only when the queue has closed (the daemon stops) and no attempt
/// succeeded for [`STOP_GRACE`].
#[allow(clippy::too_many_arguments)]
fn deliver_with_retries(
    sink: &mut dyn Sink,
    batches: &[Batch],
    queue: &flume::Receiver<Batch>,
    closed: &mut bool,
    grace: Duration,
    (reopen, seen): (&Reopen, &mut u64),
    telemetry: &Telemetry,
    failing: &mut Option<u64>,
) -> Result<(), Failure> {
    let mut failures = 0u32;
    let mut stopping_since: Option<Instant> = None;
    let events: u64 = batches.iter().map(|b| b.len() as u64).sum();
    loop {
        let why = match sink.deliver(batches) {
            Err(Failure::Retry(why)) => why,
            other => {
                if failures > 0 {
                    info!(
                        "sink {}: delivering again after {failures} failed attempt(s)",
                        sink.name()
                    );
                }
                // Delivered, if only in part: the sink works. Refused whole, or stopped: it
                // fails (a receiver that refuses every event, bad credentials among them).
                let delivered = match &other {
                    Ok(()) => true,
                    Err(Failure::Refused {
                        events: refused, ..
                    }) => *refused < events,
                    Err(_) => false,
                };
                failing_state(telemetry, sink.name(), failing, !delivered);
                if delivered {
                    telemetry.emit(Internal::SinkSucceeded {
                        sink: sink.name(),
                        unix_seconds: fim_core::event::unix_now_secs(),
                    });
                }
                return other;
            }
        };
        failures += 1;
        failing_state(telemetry, sink.name(), failing, true);
        telemetry.emit(Internal::SinkRetries {
            sink: sink.name(),
            count: 1,
        });
        if failures.is_power_of_two() {
            warn!(
                "sink {}: delivery failed ({failures} attempt(s)), trying again: {why}",
                sink.name()
            );
        }
        *closed = *closed || queue.is_disconnected();
        if *closed {
            let since = *stopping_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= grace {
                return Err(Failure::Retry(why));
            }
        }
        // A stop ends the pause: a spooled sink then leaves what is left to the next start.
        let until = Instant::now() + backoff(failures, jitter());
        while Instant::now() < until && !(grace.is_zero() && queue.is_disconnected()) {
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
        }
        if reopen.generation() != *seen {
            *seen = reopen.generation();
            if let Err(e) = sink.reopen() {
                failing_state(telemetry, sink.name(), failing, true);
                return Err(Failure::Fatal(e));
            }
            info!("sink {}: reopened", sink.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use fim_core::event::Stamper;

    use super::*;

    /// `n` events, numbered by `stamper`.
    fn batch(stamper: &mut Stamper, n: usize) -> Batch {
        crate::sinks::test_batch(stamper, n)
    }

    /// Fails its first `down` deliveries as a receiver that is down would, refuses any
    /// batch holding sequence `refuse`, and keeps the sequences it delivered.
    struct Flaky {
        down: u32,
        refuse: u64,
        got: Arc<Mutex<Vec<u64>>>,
    }

    impl Sink for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        fn deliver(&mut self, batches: &[Batch]) -> Result<(), Failure> {
            if self.down > 0 {
                self.down -= 1;
                return Err(Failure::Retry("connection refused".into()));
            }
            let seqs: Vec<u64> = batches
                .iter()
                .flat_map(|b| b.iter().map(|s| s.sequence))
                .collect();
            if seqs.contains(&self.refuse) {
                return Err(Failure::Reject("400 bad request".into()));
            }
            self.got.lock().expect("lock").extend(seqs);
            Ok(())
        }
    }

    #[test]
    fn a_receiver_that_comes_back_gets_everything_in_order_and_a_refusal_is_counted() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Box::new(Flaky {
            down: 3,
            refuse: 5,
            got: got.clone(),
        });
        let (tx, rx) = flume::bounded(64);
        let mut stamper = Stamper::default();
        // Four batches of two, sent before the runner starts: taken together, refused
        // together (sequence 5 is in them), then one at a time.
        tx.send(batch(&mut stamper, 2)).expect("queued");
        let telemetry = Arc::new(Telemetry::default());
        let t = telemetry.clone();
        let runner = std::thread::spawn(move || run(sink, rx, t, Reopen::default(), None));
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..3 {
            tx.send(batch(&mut stamper, 2)).expect("queued");
        }
        drop(tx);
        runner.join().expect("runner").expect("ends cleanly");
        let got = got.lock().expect("lock").clone();
        // The first batch waited out three failures; the others came after it, in order,
        // but the batch holding 5 was refused.
        assert_eq!(got[..2], [1, 2]);
        assert!(!got.contains(&5));
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
        use fim_core::telemetry::{
            SINK_DELIVERED, SINK_FAILED, SINK_FAILING, SINK_FAILING_SINCE, SINK_LAST_SUCCESS,
            SINK_RETRIES,
        };
        // Down three times, then up: three retries. Failing at the end only if its last
        // delivery was refused whole (the one holding 5 and the last event).
        assert_eq!(telemetry.get(SINK_RETRIES, &["flaky"]), 3);
        let refused_last = !got.contains(&8);
        assert_eq!(
            telemetry.get(SINK_FAILING, &["flaky"]),
            u64::from(refused_last)
        );
        assert_eq!(
            telemetry.get(SINK_FAILING_SINCE, &["flaky"]) > 0,
            refused_last
        );
        assert!(telemetry.get(SINK_LAST_SUCCESS, &["flaky"]) > 1_700_000_000);
        let delivered = telemetry.get(SINK_DELIVERED, &["flaky"]);
        let failed = telemetry.get(SINK_FAILED, &["flaky"]);
        assert_eq!(delivered, got.len() as u64);
        assert_eq!(delivered + failed, 8, "every event counted once");
    }

    /// Keeps the size of each delivery; wants 4 events per delivery, waiting up to 5 s.
    struct Batching(Arc<Mutex<Vec<usize>>>);

    impl Sink for Batching {
        fn name(&self) -> &str {
            "batching"
        }
        fn batching(&self) -> Option<(usize, Duration)> {
            Some((4, Duration::from_secs(5)))
        }
        fn deliver(&mut self, batches: &[Batch]) -> Result<(), Failure> {
            let n = batches.iter().map(|b| b.len()).sum();
            self.0.lock().expect("lock").push(n);
            Ok(())
        }
    }

    #[test]
    fn a_batching_sink_waits_for_a_fuller_delivery_and_not_past_a_stop() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = flume::bounded(64);
        let mut stamper = Stamper::default();
        let runner = {
            let sink = Box::new(Batching(sizes.clone()));
            let t = Arc::new(Telemetry::default());
            std::thread::spawn(move || run(sink, rx, t, Reopen::default(), None))
        };
        tx.send(batch(&mut stamper, 2)).expect("queued");
        std::thread::sleep(Duration::from_millis(100));
        tx.send(batch(&mut stamper, 2)).expect("queued");
        std::thread::sleep(Duration::from_millis(100));
        // A partial one, then the stop: delivered at once, not after the wait.
        tx.send(batch(&mut stamper, 1)).expect("queued");
        let stopped = Instant::now();
        drop(tx);
        runner.join().expect("runner").expect("ends cleanly");
        assert!(stopped.elapsed() < Duration::from_secs(4));
        assert_eq!(*sizes.lock().expect("lock"), vec![4, 1]);
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap_with_jitter_within_half() {
        assert_eq!(backoff(1, 0), Duration::from_millis(50));
        assert_eq!(backoff(1, 999), Duration::from_micros(99_950));
        assert_eq!(backoff(3, 0), Duration::from_millis(200));
        assert_eq!(backoff(40, 0), MAX_BACKOFF / 2);
        assert!(backoff(40, 999) <= MAX_BACKOFF);
    }

    /// Keeps every record it is given.
    struct Keep(Arc<Mutex<Vec<Record>>>);

    impl Sink for Keep {
        fn name(&self) -> &str {
            "keep"
        }
        fn deliver(&mut self, batches: &[Batch]) -> Result<(), Failure> {
            let mut got = self.0.lock().expect("lock");
            got.extend(batches.iter().flat_map(|b| b.iter().cloned()));
            Ok(())
        }
    }

    #[test]
    fn a_sink_reads_back_what_it_missed_in_order_and_a_hole_left_by_its_cap_becomes_a_gap() {
        use fim_core::baseline::{Access, Baseline};
        let state = tempfile::tempdir().expect("tempdir");
        let mut stamper = Stamper::default();
        let all = batch(&mut stamper, 10);
        {
            let mut b = Baseline::open(state.path(), Access::Write).expect("baseline");
            b.set_outbox_segment_size(1);
            b.append_outbox(&all[..4]).expect("append");
            b.commit().expect("commit");
            b.append_outbox(&all[4..]).expect("append");
            b.commit().expect("commit");
            // The cap let the first four go.
            assert_eq!(b.prune_outbox(4).expect("prune"), 1);
        }
        // The sink had delivered up to 2 when its receiver went down.
        std::fs::create_dir_all(state.path().join(CURSOR_DIR)).expect("dir");
        std::fs::write(state.path().join(CURSOR_DIR).join("keep.cursor"), "2\n").expect("cursor");
        let head = Arc::new(AtomicU64::new(10));
        let by = Arc::new(Reporter::new("test-host".into(), None));
        let spool = Spool::open(state.path(), "keep", head, by).expect("spool");
        let recorded = spool.recorded();
        let got = Arc::new(Mutex::new(Vec::new()));
        let telemetry = Arc::new(Telemetry::default());
        let (tx, rx) = flume::bounded::<Batch>(4);
        // The last batch is in the queue too: taken once.
        tx.send(Arc::new(all[8..].to_vec())).expect("queued");
        drop(tx);
        let sink = Box::new(Keep(got.clone()));
        run(sink, rx, telemetry.clone(), Reopen::default(), Some(spool)).expect("runs");
        let got = got.lock().expect("lock").clone();
        let sequences: Vec<u64> = got.iter().map(|r| r.sequence).collect();
        assert_eq!(sequences, [4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(got[0].action, "gap");
        let gap: serde_json::Value = serde_json::from_slice(&got[0].doc).expect("JSON");
        assert_eq!(gap["fim"]["gap"]["operations"], 2, "3 and 4 were let go");
        assert_eq!(gap["fim"]["gap"]["causes"]["spool_full"], 2);
        assert_eq!(got[1..], all[4..]);
        use fim_core::telemetry::{SINK_DROPPED, SINK_SPOOLED};
        assert_eq!(telemetry.get(SINK_DROPPED, &["keep"]), 2);
        assert_eq!(telemetry.get(SINK_SPOOLED, &["keep"]), 6);
        // Its cursor is recorded where it stopped, for the next start and the pruning.
        assert_eq!(recorded.load(Ordering::Acquire), 10);
        let cursor = std::fs::read_to_string(state.path().join(CURSOR_DIR).join("keep.cursor"));
        assert_eq!(cursor.expect("cursor").trim(), "10");
    }
}
