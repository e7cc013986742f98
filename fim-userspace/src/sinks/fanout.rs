//! Numbering and fan-out: the one place events get their [`Stamp`], and from where every
//! sink gets the same batches.
//!
//! It runs on a thread of its own between the integrity engine and the sinks. Each sink has
//! a bounded queue; a batch goes to every queue, by the sink's [`WhenFull`] policy: a
//! `Block` sink that is full holds the fan-out (and so the engine) back, a `DropNewest`
//! sink loses that batch alone, counted. A sink that stopped is left out; when none is
//! left, the fan-out stops, which closes the engine's output as a stopped sink did before.
//! Events are counted here, by sensor and action, once for every sink.

use std::{collections::HashMap, sync::Arc, time::Instant};

use log::{error, warn};

#[cfg(doc)]
use fim_core::event::Stamp;
use fim_core::{
    ancestry::package_manager,
    event::{Action, FileEvent, Stamper},
    event::{PathSource, ReportedPath, Stamped, unix_now_ns},
    ratelimit::{RateLimiter, Summary},
    rules::{RuleSet, Verdict, behaviour, with_behaviour},
    telemetry::{Internal, Telemetry},
};

use super::{Batch, Sink, WhenFull};

/// One sink's end of the fan-out.
pub struct Outlet {
    name: String,
    when_full: WhenFull,
    queue: flume::Sender<Batch>,
    open: bool,
}

impl Outlet {
    /// The outlet feeding `sink` through `queue`.
    pub fn new(sink: &dyn Sink, queue: flume::Sender<Batch>) -> Self {
        Self {
            name: sink.name().to_owned(),
            when_full: sink.when_full(),
            queue,
            open: true,
        }
    }

    /// Hands `batch` to the sink by its policy.
    fn offer(&mut self, batch: &Batch, telemetry: &Telemetry) {
        if !self.open {
            return;
        }
        let sent = match self.when_full {
            WhenFull::Block => self.queue.send(batch.clone()).map_err(|_| true),
            WhenFull::DropNewest => self.queue.try_send(batch.clone()).map_err(|e| match e {
                flume::TrySendError::Full(_) => false,
                flume::TrySendError::Disconnected(_) => true,
            }),
        };
        match sent {
            Ok(()) => {
                telemetry.emit(Internal::SinkQueued {
                    sink: &self.name,
                    batches: self.queue.len() as u64,
                });
            }
            Err(true) => {
                error!(
                    "sink {}: stopped; the other sinks go on without it",
                    self.name
                );
                self.open = false;
            }
            Err(false) => {
                let dropped = telemetry.emit(Internal::SinkDropped {
                    sink: &self.name,
                    events: batch.len() as u64,
                });
                if dropped == batch.len() as u64 {
                    warn!(
                        "sink {}: its queue is full; events are dropped for it (counted)",
                        self.name
                    );
                }
            }
        }
    }
}

/// The rules in force, replaced whole by a live reload.
pub type LiveRules = Arc<std::sync::RwLock<Arc<RuleSet>>>;

/// The numbering and the outlets.
pub struct Fanout {
    stamper: Stamper,
    rules: Arc<RuleSet>,
    /// Where a live reload puts new rules; looked at once per batch.
    live: Option<LiveRules>,
    limits: RateLimiter,
    /// A live process's name and parent (the platform's process table), to find the
    /// package manager behind a change.
    parent_of: Option<ParentOf>,
    outlets: Vec<Outlet>,
    telemetry: Arc<Telemetry>,
}

impl Fanout {
    /// A fan-out to `outlets` of what `rules` report, counting in `telemetry`.
    pub fn new(outlets: Vec<Outlet>, rules: Arc<RuleSet>, telemetry: Arc<Telemetry>) -> Self {
        Self {
            stamper: Stamper::default(),
            rules,
            live: None,
            limits: RateLimiter::default(),
            parent_of: None,
            outlets,
            telemetry,
        }
    }

    /// Takes its rules from `live` from now on, and again whenever a reload replaces them.
    pub fn with_live_rules(mut self, live: LiveRules) -> Self {
        self.refresh_rules_from(&live);
        self.live = Some(live);
        self
    }

    fn refresh_rules_from(&mut self, live: &LiveRules) {
        if let Ok(current) = live.read()
            && !Arc::ptr_eq(&current, &self.rules)
        {
            self.rules = current.clone();
        }
    }

    /// Looks processes up with `parent_of` to tag changes a package manager made.
    pub fn with_ancestry(mut self, parent_of: ParentOf) -> Self {
        self.parent_of = Some(parent_of);
        self
    }

    /// The summary event of a rate limit's window, numbered.
    fn summary(&mut self, summary: Summary) -> Stamped {
        let mut ev = FileEvent::new(
            Action::Suppressed,
            ReportedPath::new(summary.last_path.clone(), PathSource::SyscallString),
            "fim",
        );
        ev.time_unix_ns = unix_now_ns();
        let rules = Some(summary.matched.clone());
        ev.suppressed = Some(Box::new(summary));
        self.stamper.stamp_with(ev, rules)
    }

    /// Numbers and delivers the summaries of the rate-limit windows that ended by `now`
    /// (or of every open one, at the end). Returns whether any sink is left.
    pub fn summarize(&mut self, now: Option<Instant>) -> bool {
        let due = match now {
            Some(now) => self.limits.due(now),
            None => self.limits.drain(),
        };
        if due.is_empty() {
            return self.outlets.iter().any(|o| o.open);
        }
        let batch: Batch = Arc::new(due.into_iter().map(|s| self.summary(s)).collect());
        for outlet in &mut self.outlets {
            outlet.offer(&batch, &self.telemetry);
        }
        self.outlets.iter().any(|o| o.open)
    }

    /// When the next rate-limit window with held events ends.
    pub fn next_due(&self) -> Option<Instant> {
        self.limits.next_due()
    }

    /// Classifies `events` by the rules, numbers those reported and hands them to every
    /// sink. Returns whether any sink is left.
    pub fn deliver(&mut self, events: Vec<FileEvent>) -> bool {
        if let Some(live) = self.live.clone() {
            self.refresh_rules_from(&live);
        }
        let mut counts: HashMap<(&'static str, Action), u64> = HashMap::new();
        let mut suppressed: HashMap<Action, u64> = HashMap::new();
        let mut batch = Vec::with_capacity(events.len());
        for mut ev in events {
            let other = ev
                .source
                .as_ref()
                .filter(|_| ev.action != Action::Symlink)
                .map(|s| s.bytes.as_slice());
            // An open that truncated is, to the rules, a truncation (a log wiped with `>`).
            let action = if ev.open_truncated && ev.action == Action::OpenWrite {
                Action::Truncate
            } else {
                ev.action
            };
            let verdict = self.rules.classify(action, &ev.path.bytes, other);
            // What the operation itself says is reported whatever the rules (their
            // operations, excludes, rate limits) would do with it.
            let telling = telling(&ev);
            let verdict = match (compared(verdict, &mut ev), telling) {
                (Verdict::Suppress, Some(_)) => Verdict::Report(None),
                (v, _) => v,
            };
            match verdict {
                Verdict::Suppress => *suppressed.entry(ev.action).or_default() += 1,
                Verdict::Report(mut rules) => {
                    if let Some(b) = telling {
                        rules = Some(with_behaviour(rules, b));
                    }
                    if let Some(m) = rules.as_ref().filter(|_| telling.is_none()) {
                        let (admitted, ended) =
                            self.limits
                                .admit(m, &ev.path.bytes, ev.time_unix_ns, Instant::now());
                        if let Some(summary) = ended {
                            batch.push(self.summary(summary));
                        }
                        if !admitted {
                            self.telemetry.emit(Internal::RateLimited { count: 1 });
                            continue;
                        }
                    }
                    if let (Some(parent_of), Some(p)) = (self.parent_of.as_mut(), &ev.process) {
                        ev.package_manager =
                            package_manager(p.pid, &p.name, p.ppid, &mut *parent_of).map(Box::new);
                    }
                    *counts.entry((ev.sensor, ev.action)).or_default() += 1;
                    batch.push(self.stamper.stamp_with(ev, rules));
                }
            }
        }
        for ((sensor, action), count) in counts {
            self.telemetry.emit(Internal::Reported {
                sensor,
                action,
                count,
            });
        }
        for (action, count) in suppressed {
            self.telemetry
                .emit(Internal::RuleSuppressed { action, count });
        }
        if batch.is_empty() {
            return self.outlets.iter().any(|o| o.open);
        }
        let batch: Batch = Arc::new(batch);
        for outlet in &mut self.outlets {
            outlet.offer(&batch, &self.telemetry);
        }
        self.outlets.iter().any(|o| o.open)
    }
}

/// What `ev` itself says ([`behaviour`]): its technique and severity. A chmod counts when
/// it adds a set-user-ID or set-group-ID bit the file did not have before.
fn telling(ev: &FileEvent) -> Option<(&'static str, fim_core::config::Severity)> {
    let integrity = ev.integrity.as_deref();
    let new_mode = ev
        .mode
        .or_else(|| Some(integrity?.after.as_ref()?.attrs.mode));
    let old_mode = integrity
        .and_then(|i| i.before.as_ref())
        .map_or(0, |b| b.attrs.mode);
    behaviour(ev.action, new_mode.map(|m| m & !old_mode))
}

/// `verdict` with the attributes its most specific rule compares applied to `ev`: the
/// others are left out of `fim.changed`, and a difference found by a scan in none of them
/// is no change at all.
fn compared(verdict: Verdict, ev: &mut FileEvent) -> Verdict {
    let Verdict::Report(Some(m)) = &verdict else {
        return verdict;
    };
    let (Some(compare), Some(integrity)) = (&m.compare, ev.integrity.as_mut()) else {
        return verdict;
    };
    integrity.changed.retain(|a| compare.contains(a));
    if ev.action == Action::Changed && integrity.changed.is_empty() {
        return Verdict::Suppress;
    }
    verdict
}

/// A live process's name and parent, by pid.
pub type ParentOf = Box<dyn FnMut(u32) -> Option<(String, u32)> + Send>;

/// Numbers what the engine reports and feeds the sinks until the engine closes its output
/// or no sink is left; then closes every queue, so each sink finishes what it holds.
pub fn run(
    input: flume::Receiver<Vec<FileEvent>>,
    outlets: Vec<Outlet>,
    rules: LiveRules,
    parent_of: Option<ParentOf>,
    telemetry: Arc<Telemetry>,
) {
    let first = rules
        .read()
        .map(|r| r.clone())
        .unwrap_or_else(|e| e.into_inner().clone());
    let mut fanout = Fanout::new(outlets, first, telemetry).with_live_rules(rules);
    if let Some(parent_of) = parent_of {
        fanout = fanout.with_ancestry(parent_of);
    }
    loop {
        let received = match fanout.next_due() {
            Some(due) => input.recv_deadline(due),
            None => input
                .recv()
                .map_err(|_| flume::RecvTimeoutError::Disconnected),
        };
        let open = match received {
            // A busy input must not hold back a window's summary past its end.
            Ok(events) => {
                fanout.deliver(events)
                    && (fanout.next_due().is_none_or(|due| due > Instant::now())
                        || fanout.summarize(Some(Instant::now())))
            }
            Err(flume::RecvTimeoutError::Timeout) => fanout.summarize(Some(Instant::now())),
            Err(flume::RecvTimeoutError::Disconnected) => {
                fanout.summarize(None);
                break;
            }
        };
        if !open {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use fim_core::event::{Action, PathSource, ReportedPath};

    use super::*;
    use crate::sinks::{runner, stdout::Stdout};
    use fim_core::telemetry::{EVENTS, SINK_DELIVERED, SINK_DROPPED};

    /// A sink that keeps what it is given (its policy chosen by the test).
    struct Keep(WhenFull);

    impl Sink for Keep {
        fn name(&self) -> &'static str {
            "keep"
        }
        fn when_full(&self) -> WhenFull {
            self.0
        }
        fn deliver(&mut self, _: &[Batch]) -> Result<(), crate::sinks::Failure> {
            Ok(())
        }
    }

    fn events(n: usize) -> Vec<FileEvent> {
        (0..n)
            .map(|i| {
                FileEvent::new(
                    Action::Create,
                    ReportedPath::new(format!("/w/f{i}").into_bytes(), PathSource::KernelObject),
                    "test",
                )
            })
            .collect()
    }

    #[test]
    fn every_sink_gets_every_event_with_the_same_number_and_id() {
        let (tx_a, rx_a) = flume::bounded(8);
        let (tx_b, rx_b) = flume::bounded(8);
        let sink = Keep(WhenFull::Block);
        let telemetry = Arc::new(Telemetry::default());
        let mut fanout = Fanout::new(
            vec![Outlet::new(&sink, tx_a), Outlet::new(&sink, tx_b)],
            Arc::new(RuleSet::none()),
            telemetry.clone(),
        );
        assert!(fanout.deliver(events(3)));
        assert!(fanout.deliver(events(2)));
        let a: Vec<_> = rx_a.try_iter().flat_map(|b| b.to_vec()).collect();
        let b: Vec<_> = rx_b.try_iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(a, b, "both sinks see the same stamped events");
        let numbers: Vec<u64> = a.iter().map(|s| s.stamp.sequence).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 5]);
        let ids: std::collections::BTreeSet<_> = a.iter().map(|s| s.stamp.id).collect();
        assert_eq!(ids.len(), 5, "ids are unique");
        assert_eq!(telemetry.get(EVENTS, &["test", "create"]), 5);
        assert_eq!(telemetry.total(SINK_DROPPED), 0);
    }

    /// The rules of configuration `text`, every path a directory.
    fn rules_of(text: &str) -> Arc<RuleSet> {
        let config = fim_core::config::Config::parse(text).expect("valid");
        RuleSet::new(&config.rules, |p: &std::path::Path| {
            fim_core::watch::Found::Dir(p.into())
        })
        .map(Arc::new)
        .expect("compiles")
    }

    #[test]
    fn what_no_rule_reports_is_counted_and_leaves_no_hole_in_the_numbering() {
        let rules = rules_of(
            "[[rule]]\nname = \"w\"\npaths = [\"/w\"]\noperations = [\"unlink\"]\n\
             severity = \"critical\"\n",
        );
        let (tx, rx) = flume::bounded(8);
        let sink = Keep(WhenFull::Block);
        let telemetry = Arc::new(Telemetry::default());
        let mut fanout = Fanout::new(vec![Outlet::new(&sink, tx)], rules, telemetry.clone());
        let mut batch = events(3);
        batch[1].action = Action::Unlink;
        let mut more = events(2);
        more[0].action = Action::Unlink;
        assert!(fanout.deliver(batch));
        assert!(fanout.deliver(more));
        let got: Vec<(u64, Action, u8)> = rx
            .try_iter()
            .flat_map(|b| b.iter().cloned().collect::<Vec<_>>())
            .map(|s| {
                let severity = s.rules.as_ref().map_or(0, |m| m.severity.ecs());
                (s.stamp.sequence, s.event.action(), severity)
            })
            .collect();
        assert_eq!(got, vec![(1, Action::Unlink, 99), (2, Action::Unlink, 99)]);
        assert_eq!(
            telemetry.get(fim_core::telemetry::RULE_SUPPRESSED, &["create"]),
            3
        );
        assert_eq!(telemetry.total(EVENTS), 2);
    }

    #[test]
    fn a_reload_replaces_the_rules_from_the_next_batch_on_and_the_numbering_goes_on() {
        let live: LiveRules = Arc::new(std::sync::RwLock::new(rules_of(
            "[[rule]]\nname = \"before\"\npaths = [\"/w\"]\n",
        )));
        let (tx, rx) = flume::bounded(8);
        let sink = Keep(WhenFull::Block);
        let mut fanout = Fanout::new(
            vec![Outlet::new(&sink, tx)],
            Arc::new(RuleSet::none()),
            Arc::new(Telemetry::default()),
        )
        .with_live_rules(live.clone());
        assert!(fanout.deliver(events(1)));
        *live.write().expect("lock") =
            rules_of("[[rule]]\nname = \"after\"\npaths = [\"/w\"]\nseverity = \"high\"\n");
        assert!(fanout.deliver(events(1)));
        let got: Vec<(u64, String)> = rx
            .try_iter()
            .flat_map(|b| b.iter().cloned().collect::<Vec<_>>())
            .map(|s| {
                let rule = s
                    .rules
                    .as_ref()
                    .and_then(|m| m.rules.first())
                    .map(|(name, _)| name.clone())
                    .unwrap_or_default();
                (s.stamp.sequence, rule)
            })
            .collect();
        assert_eq!(got, vec![(1, "before".to_owned()), (2, "after".to_owned())]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_new_setuid_bit_is_reported_whatever_the_rule_and_an_old_one_is_not_news() {
        use fim_core::{
            attrs::FileType,
            event::{Integrity, Origin},
        };
        let rules =
            rules_of("[[rule]]\nname = \"w\"\npaths = [\"/w\"]\noperations = [\"content\"]\n");
        let (tx, rx) = flume::bounded(8);
        let sink = Keep(WhenFull::Block);
        let mut fanout = Fanout::new(
            vec![Outlet::new(&sink, tx)],
            rules,
            Arc::new(Telemetry::default()),
        );
        let chmod = |old: u32, new: u32| {
            let mut ev = events(1).remove(0);
            ev.action = Action::Chmod;
            ev.mode = Some(new);
            let mut i = Integrity::unobserved(Origin::Realtime, None);
            i.before = Some(crate::test_support::snapshot(FileType::File, 7, old));
            ev.integrity = Some(i.into());
            ev
        };
        // The rule reports content only: a chmod is not its business, but a new setuid bit
        // is anybody's. A file that was setuid already gains nothing.
        assert!(fanout.deliver(vec![chmod(0o755, 0o4755), chmod(0o4755, 0o4750)]));
        let got: Vec<(Action, Vec<String>)> = rx
            .try_iter()
            .flat_map(|b| b.iter().cloned().collect::<Vec<_>>())
            .map(|s| {
                let techniques = s
                    .rules
                    .as_ref()
                    .map(|m| m.techniques.clone())
                    .unwrap_or_default();
                (s.event.action(), techniques)
            })
            .collect();
        assert_eq!(got, vec![(Action::Chmod, vec!["T1548.001".to_owned()])]);
    }

    #[test]
    fn a_full_dropping_sink_loses_only_its_own_copy_counted() {
        let (tx_drop, rx_drop) = flume::bounded(1);
        let (tx_block, rx_block) = flume::bounded(8);
        let dropping = Keep(WhenFull::DropNewest);
        let blocking = Keep(WhenFull::Block);
        let telemetry = Arc::new(Telemetry::default());
        let mut fanout = Fanout::new(
            vec![
                Outlet::new(&dropping, tx_drop),
                Outlet::new(&blocking, tx_block),
            ],
            Arc::new(RuleSet::none()),
            telemetry.clone(),
        );
        fanout.deliver(events(2));
        fanout.deliver(events(3));
        fanout.deliver(events(4));
        assert_eq!(rx_drop.try_iter().map(|b| b.len()).sum::<usize>(), 2);
        assert_eq!(rx_block.try_iter().map(|b| b.len()).sum::<usize>(), 9);
        assert_eq!(telemetry.get(SINK_DROPPED, &["keep"]), 7);
    }

    #[test]
    fn a_stopped_sink_is_left_out_and_the_last_one_stops_the_fanout() {
        let (tx_a, rx_a) = flume::bounded(8);
        let (tx_b, rx_b) = flume::bounded(8);
        let sink = Keep(WhenFull::Block);
        let mut fanout = Fanout::new(
            vec![Outlet::new(&sink, tx_a), Outlet::new(&sink, tx_b)],
            Arc::new(RuleSet::none()),
            Arc::new(Telemetry::default()),
        );
        drop(rx_a);
        assert!(fanout.deliver(events(1)), "one sink is left");
        assert_eq!(rx_b.try_iter().count(), 1);
        drop(rx_b);
        assert!(!fanout.deliver(events(1)), "no sink is left");
    }

    #[test]
    fn a_blocking_sink_holds_the_fanout_until_it_has_room() {
        let (input_tx, input_rx) = flume::bounded(4);
        let (tx, rx) = flume::bounded(1);
        let text = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink: Box<dyn Sink> = Box::new(Stdout::new(
            "stdout".into(),
            Shared(text.clone()),
            Arc::new(fim_core::ecs::Reporter::new("test-host".into(), None)),
        ));
        let outlet = Outlet::new(sink.as_ref(), tx);
        let telemetry = Arc::new(Telemetry::default());
        let fan_telemetry = telemetry.clone();
        let fan = std::thread::spawn(move || {
            run(
                input_rx,
                vec![outlet],
                Arc::new(std::sync::RwLock::new(Arc::new(RuleSet::none()))),
                None,
                fan_telemetry,
            )
        });
        let sink_telemetry = telemetry.clone();
        let writer = std::thread::spawn(move || {
            runner::run(sink, rx, sink_telemetry, runner::Reopen::default())
        });
        for _ in 0..50 {
            input_tx.send(events(20)).expect("fan-out running");
        }
        drop(input_tx);
        fan.join().expect("fan-out");
        writer.join().expect("sink").expect("written");
        assert_eq!(telemetry.get(SINK_DELIVERED, &["stdout"]), 1000);
        assert_eq!(telemetry.total(EVENTS), 1000);
        assert_eq!(telemetry.total(SINK_DROPPED), 0);
        let text = text.lock().expect("lock");
        let sequences: Vec<u64> = text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_slice(l).expect("JSON line");
                v["event"]["sequence"].as_u64().expect("sequence")
            })
            .collect();
        assert_eq!(
            sequences,
            (1..=1000).collect::<Vec<_>>(),
            "nothing lost, in order"
        );
    }
}
