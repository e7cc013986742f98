//! A sink's thread: takes what waits in its queue, has the sink deliver it, and when the
//! receiver is down delivers the same events again after a pause that doubles (with
//! jitter) up to [`MAX_BACKOFF`]. Meanwhile the queue fills and the sink's policy when full
//! applies ([`super::WhenFull`]). Each SIGHUP has the sink reopen what it writes to.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use log::{error, info, warn};

use fim_core::telemetry::{Internal, Telemetry};

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

/// Runs `sink` until its queue closes and what it held is delivered (or, once stopping, no
/// delivery succeeded for [`STOP_GRACE`]).
pub fn run(
    mut sink: Box<dyn Sink>,
    queue: flume::Receiver<Batch>,
    telemetry: Arc<Telemetry>,
    reopen: Reopen,
) -> Result<(), SinkError> {
    let name = sink.name().to_owned();
    let mut seen_reopen = reopen.generation();
    let mut batches: Vec<Batch> = Vec::new();
    let mut closed = false;
    loop {
        if reopen.generation() != seen_reopen {
            seen_reopen = reopen.generation();
            sink.reopen()?;
            info!("sink {name}: reopened");
        }
        if batches.is_empty() {
            match queue.recv_timeout(REOPEN_CHECK) {
                Ok(b) => batches.push(b),
                Err(flume::RecvTimeoutError::Timeout) => continue,
                Err(flume::RecvTimeoutError::Disconnected) => return Ok(()),
            }
            while batches.len() < BATCHES_PER_DELIVERY
                && let Ok(more) = queue.try_recv()
            {
                batches.push(more);
            }
            // A sink that sends requests waits a moment for a fuller one.
            if let Some((want, wait)) = sink.batching() {
                let until = std::time::Instant::now() + wait;
                while batches.iter().map(|b| b.len()).sum::<usize>() < want {
                    match queue.recv_deadline(until) {
                        Ok(more) => batches.push(more),
                        Err(_) => break,
                    }
                }
            }
        }
        let events: u64 = batches.iter().map(|b| b.len() as u64).sum();
        match deliver_with_retries(
            sink.as_mut(),
            &batches,
            &queue,
            &mut closed,
            (&reopen, &mut seen_reopen),
        ) {
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
                return Err(e);
            }
        }
        batches.clear();
        if closed && queue.is_empty() {
            return Ok(());
        }
    }
}

/// Delivers `batches`, again and again while the receiver is down, reopening the sink
/// between attempts when asked (a file moved away may be what fails). Gives up with the
/// last [`Failure::Retry`] only when the queue has closed (the daemon stops) and no attempt
/// succeeded for [`STOP_GRACE`].
fn deliver_with_retries(
    sink: &mut dyn Sink,
    batches: &[Batch],
    queue: &flume::Receiver<Batch>,
    closed: &mut bool,
    (reopen, seen): (&Reopen, &mut u64),
) -> Result<(), Failure> {
    let mut failures = 0u32;
    let mut stopping_since: Option<Instant> = None;
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
                return other;
            }
        };
        failures += 1;
        if failures.is_power_of_two() {
            warn!(
                "sink {}: delivery failed ({failures} attempt(s)), trying again: {why}",
                sink.name()
            );
        }
        *closed = *closed || queue.is_disconnected();
        if *closed {
            let since = *stopping_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= STOP_GRACE {
                return Err(Failure::Retry(why));
            }
        }
        std::thread::sleep(backoff(failures, jitter()));
        if reopen.generation() != *seen {
            *seen = reopen.generation();
            sink.reopen().map_err(Failure::Fatal)?;
            info!("sink {}: reopened", sink.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use fim_core::event::{Action, FileEvent, PathSource, ReportedPath, Stamper};

    use super::*;
    use crate::sinks::WhenFull;

    /// `n` events, numbered by `stamper`.
    fn batch(stamper: &mut Stamper, n: usize) -> Batch {
        Arc::new(
            (0..n)
                .map(|_| {
                    stamper.stamp(FileEvent::new(
                        Action::Create,
                        ReportedPath::new(b"/w/f".to_vec(), PathSource::Scan),
                        "test",
                    ))
                })
                .collect(),
        )
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
        fn when_full(&self) -> WhenFull {
            WhenFull::Block
        }
        fn deliver(&mut self, batches: &[Batch]) -> Result<(), Failure> {
            if self.down > 0 {
                self.down -= 1;
                return Err(Failure::Retry("connection refused".into()));
            }
            let seqs: Vec<u64> = batches
                .iter()
                .flat_map(|b| b.iter().map(|s| s.stamp.sequence))
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
        let runner = std::thread::spawn(move || run(sink, rx, t, Reopen::default()));
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
        use fim_core::telemetry::{SINK_DELIVERED, SINK_FAILED};
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
        fn when_full(&self) -> WhenFull {
            WhenFull::Block
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
            std::thread::spawn(move || run(sink, rx, t, Reopen::default()))
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
}
