//! Numbering and fan-out: the one place events get their [`Stamp`], are rendered, and are
//! put in the outbox, and from where every sink gets the same batches.
//!
//! It runs on the integrity engine's thread, as its [`Output`]: what the engine reports
//! in one turn is classified by the rules, numbered, rendered once, and appended to the
//! outbox in the transaction that records its baseline changes ([`fim_core::outbox`]).
//! Once the engine commits, the batch goes to each sink's bounded queue. A spooled sink's
//! queue never holds the engine back: when it is full the batch is skipped for that sink,
//! which reads it back from the outbox in its turn ([`super::runner`]). A sink that
//! stopped is left out. Events are counted here, by sensor and action, once for every
//! sink.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use log::{error, warn};

#[cfg(doc)]
use fim_core::event::Stamp;
use fim_core::{
    ancestry::package_manager,
    baseline::{Baseline, BaselineError},
    ecs::Reporter,
    event::{Action, Event, FileEvent, Stamper},
    event::{PathSource, ReportedPath, Stamped, unix_now_ns},
    outbox::Record,
    ratelimit::{RateLimiter, Summary},
    rules::{Matched, RuleSet, Verdict, behaviour, with_behaviour},
    telemetry::{Internal, Telemetry},
};

use super::{Batch, Output};

/// One sink's end of the fan-out.
pub struct Outlet {
    name: String,
    /// Whether a full queue is skipped (the sink reads the batch back from the outbox)
    /// rather than waited for.
    spooled: bool,
    queue: flume::Sender<Batch>,
    open: bool,
}

impl Outlet {
    /// The outlet feeding sink `name` through `queue`, waiting for room when it is full.
    pub fn blocking(name: &str, queue: flume::Sender<Batch>) -> Self {
        Self {
            name: name.to_owned(),
            spooled: false,
            queue,
            open: true,
        }
    }

    /// The outlet feeding sink `name` through `queue`, which reads from the outbox what
    /// did not fit.
    pub fn spooled(name: &str, queue: flume::Sender<Batch>) -> Self {
        Self {
            spooled: true,
            ..Self::blocking(name, queue)
        }
    }

    /// Hands `batch` to the sink.
    fn offer(&mut self, batch: &Batch, telemetry: &Telemetry) {
        if !self.open {
            return;
        }
        let sent = if self.spooled {
            match self.queue.try_send(batch.clone()) {
                Ok(()) | Err(flume::TrySendError::Full(_)) => Ok(()),
                Err(flume::TrySendError::Disconnected(_)) => Err(()),
            }
        } else {
            self.queue.send(batch.clone()).map_err(|_| ())
        };
        match sent {
            Ok(()) => {
                telemetry.emit(Internal::SinkQueued {
                    sink: &self.name,
                    batches: self.queue.len() as u64,
                });
            }
            Err(()) => {
                error!(
                    "sink {}: stopped; the other sinks go on without it",
                    self.name
                );
                self.open = false;
            }
        }
    }
}

/// What the fan-out knows of one spooled sink, to prune the outbox: the last sequence it
/// delivered and recorded (so a restart resumes after it), and how much it may hold.
#[derive(Clone, Debug)]
pub struct SpoolShare {
    /// The sink's name.
    pub name: String,
    /// Its recorded cursor ([`super::runner::Cursor`]).
    pub recorded: Arc<AtomicU64>,
    /// Its spool's size cap, in bytes of events.
    pub max_size: u64,
}

/// How often the outbox is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// The rules in force, replaced whole by a live reload.
pub type LiveRules = Arc<std::sync::RwLock<Arc<RuleSet>>>;

/// The numbering, the outbox and the outlets.
pub struct Fanout {
    stamper: Stamper,
    rules: Arc<RuleSet>,
    /// Where a live reload puts new rules; looked at once per batch.
    live: Option<LiveRules>,
    limits: RateLimiter,
    /// A live process's name and parent (the platform's process table), to find the
    /// package manager behind a change.
    parent_of: Option<ParentOf>,
    reporter: Arc<Reporter>,
    /// Whether a sink sends CEF: each record then carries its CEF line, made once.
    cef: bool,
    outlets: Vec<Outlet>,
    telemetry: Arc<Telemetry>,
    /// What was put in the outbox and waits for the commit to go out.
    staged: Vec<Record>,
    /// The last sequence committed to the outbox, which the sinks read up to.
    head: Arc<AtomicU64>,
    /// The spooled sinks, for pruning.
    shares: Vec<SpoolShare>,
    last_prune: Instant,
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
            reporter: Arc::new(Reporter::new("localhost".into(), None)),
            cef: false,
            outlets,
            telemetry,
            staged: Vec::new(),
            head: Arc::new(AtomicU64::new(0)),
            shares: Vec::new(),
            last_prune: Instant::now(),
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

    /// Renders events as `reporter` reports them.
    pub fn reporting_as(mut self, reporter: Arc<Reporter>) -> Self {
        self.reporter = reporter;
        self
    }

    /// Renders each event's CEF line too, once for every sink that sends CEF.
    pub fn rendering_cef(mut self, cef: bool) -> Self {
        self.cef = cef;
        self
    }

    /// Numbers on from `last` (the outbox's), publishes each committed sequence in `head`,
    /// and prunes the outbox by the `shares` of the spooled sinks.
    pub fn with_outbox(mut self, last: u64, head: Arc<AtomicU64>, shares: Vec<SpoolShare>) -> Self {
        self.stamper = Stamper::after(last);
        head.store(last, Ordering::Release);
        self.head = head;
        self.shares = shares;
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

    /// The summaries of the rate-limit windows that ended by `now` (or of every open one,
    /// at the end), numbered.
    pub fn summaries(&mut self, now: Option<Instant>) -> Vec<Stamped> {
        let due = match now {
            Some(now) => self.limits.due(now),
            None => self.limits.drain(),
        };
        due.into_iter().map(|s| self.summary(s)).collect()
    }

    /// When the next rate-limit window with held events ends.
    pub fn next_due(&self) -> Option<Instant> {
        self.limits.next_due()
    }

    /// Classifies `events` by the rules and numbers those reported.
    pub fn number(&mut self, events: Vec<FileEvent>) -> Vec<Stamped> {
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
            if action == fim_core::event::Action::Gap {
                self.telemetry.emit(Internal::GapsReported { count });
            }
        }
        for (action, count) in suppressed {
            self.telemetry
                .emit(Internal::RuleSuppressed { action, count });
        }
        batch
    }

    /// Numbers `events` that carry their own rules (the Windows poller's: each watched key
    /// or file belongs to one rule) and writes them into `baseline`'s open transaction;
    /// [`Output::publish`] hands them out after the commit.
    pub fn stage_classified(
        &mut self,
        events: Vec<(Event, Option<Arc<Matched>>)>,
        baseline: &mut Baseline,
    ) -> Result<(), BaselineError> {
        let mut counts: HashMap<(&'static str, Action), u64> = HashMap::new();
        let stamped: Vec<Stamped> = events
            .into_iter()
            .map(|(ev, rules)| {
                *counts.entry((ev.sensor(), ev.action())).or_default() += 1;
                self.stamper.stamp_with(ev, rules)
            })
            .collect();
        for ((sensor, action), count) in counts {
            self.telemetry.emit(Internal::Reported {
                sensor,
                action,
                count,
            });
        }
        self.stage_stamped(&stamped, baseline)
    }

    /// Renders `stamped` once for every sink.
    fn render(&self, stamped: &[Stamped]) -> Vec<Record> {
        stamped
            .iter()
            .filter_map(|ev| {
                let mut record = match Record::render(ev, &self.reporter) {
                    Ok(r) => r,
                    Err(e) => {
                        error!("rendering event {}: {e}", ev.stamp.id);
                        return None;
                    }
                };
                // A CEF line that cannot be made is left to the sink, which says why.
                if self.cef && record.add_cef().is_err() {
                    record.cef = None;
                }
                Some(record)
            })
            .collect()
    }

    /// Hands `batch` to every sink. Returns whether any sink is left.
    pub fn offer(&mut self, batch: Vec<Record>) -> bool {
        if !batch.is_empty() {
            let batch: Batch = Arc::new(batch);
            for outlet in &mut self.outlets {
                outlet.offer(&batch, &self.telemetry);
            }
        }
        self.outlets.iter().any(|o| o.open)
    }

    /// Numbers, renders and hands `events` to every sink at once (no outbox). Returns
    /// whether any sink is left.
    #[cfg(test)]
    pub fn deliver(&mut self, events: Vec<FileEvent>) -> bool {
        let stamped = self.number(events);
        let records = self.render(&stamped);
        self.offer(records)
    }

    /// Lets the outbox go up to where every spooled sink has recorded its delivery, or
    /// its cap lets go of it.
    fn prune(&mut self, baseline: &mut Baseline) -> Result<(), BaselineError> {
        let mut upto = u64::MAX;
        for share in &self.shares {
            let recorded = share.recorded.load(Ordering::Acquire);
            let floor = baseline.spool_floor(share.max_size)?.unwrap_or(0);
            if floor > recorded {
                // The sink's runner finds the hole and reports it as a gap.
                warn!(
                    "sink {}: its spool is over its cap of {} bytes: events up to sequence {floor} are let go",
                    share.name, share.max_size
                );
            }
            upto = upto.min(recorded.max(floor));
        }
        let upto = upto.min(self.head.load(Ordering::Acquire));
        if upto > 0 {
            baseline.prune_outbox(upto)?;
        }
        // What each sink has yet to deliver, once what the cap let go is gone.
        for share in &self.shares {
            let recorded = share.recorded.load(Ordering::Acquire);
            match baseline.outbox_bytes_after(recorded) {
                Ok(bytes) => {
                    self.telemetry.emit(Internal::SinkSpoolBytes {
                        sink: &share.name,
                        bytes,
                    });
                }
                Err(e) => warn!("sink {}: measuring its spool: {e}", share.name),
            }
        }
        Ok(())
    }
}

impl Output for Fanout {
    fn stage(
        &mut self,
        events: Vec<FileEvent>,
        baseline: &mut Baseline,
    ) -> Result<(), BaselineError> {
        let stamped = self.number(events);
        self.stage_stamped(&stamped, baseline)
    }

    fn stage_due(
        &mut self,
        now: Option<Instant>,
        baseline: &mut Baseline,
    ) -> Result<(), BaselineError> {
        let stamped = self.summaries(now);
        self.stage_stamped(&stamped, baseline)
    }

    fn next_due(&self) -> Option<Instant> {
        Fanout::next_due(self)
    }

    fn staged(&self) -> bool {
        !self.staged.is_empty()
    }

    fn publish(&mut self, baseline: &mut Baseline) -> Result<bool, BaselineError> {
        self.head.store(self.stamper.last(), Ordering::Release);
        let staged = std::mem::take(&mut self.staged);
        let open = self.offer(staged);
        if !self.shares.is_empty() && self.last_prune.elapsed() >= PRUNE_EVERY {
            self.last_prune = Instant::now();
            self.prune(baseline)?;
        }
        Ok(open)
    }
}

impl Fanout {
    fn stage_stamped(
        &mut self,
        stamped: &[Stamped],
        baseline: &mut Baseline,
    ) -> Result<(), BaselineError> {
        if stamped.is_empty() {
            return Ok(());
        }
        let records = self.render(stamped);
        baseline.append_outbox(&records)?;
        self.staged.extend(records);
        Ok(())
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

#[cfg(test)]
mod tests {
    use fim_core::event::{Action, PathSource, ReportedPath};

    use super::*;
    use crate::sinks::{runner, stdout::Stdout};
    use fim_core::telemetry::{EVENTS, SINK_DELIVERED, SINK_DROPPED};

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
        let telemetry = Arc::new(Telemetry::default());
        let mut fanout = Fanout::new(
            vec![Outlet::blocking("a", tx_a), Outlet::blocking("b", tx_b)],
            Arc::new(RuleSet::none()),
            telemetry.clone(),
        );
        assert!(fanout.deliver(events(3)));
        assert!(fanout.deliver(events(2)));
        let a: Vec<_> = rx_a.try_iter().flat_map(|b| b.to_vec()).collect();
        let b: Vec<_> = rx_b.try_iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(a, b, "both sinks see the same stamped events");
        let numbers: Vec<u64> = a.iter().map(|r| r.sequence).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 5]);
        let ids: std::collections::BTreeSet<_> = a.iter().map(|r| r.id).collect();
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
        let telemetry = Arc::new(Telemetry::default());
        let mut fanout = Fanout::new(Vec::new(), rules, telemetry.clone());
        let mut batch = events(3);
        batch[1].action = Action::Unlink;
        let mut more = events(2);
        more[0].action = Action::Unlink;
        let mut numbered = fanout.number(batch);
        numbered.extend(fanout.number(more));
        let got: Vec<(u64, Action, u8)> = numbered
            .into_iter()
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
        let mut fanout = Fanout::new(
            Vec::new(),
            Arc::new(RuleSet::none()),
            Arc::new(Telemetry::default()),
        )
        .with_live_rules(live.clone());
        let mut numbered = fanout.number(events(1));
        *live.write().expect("lock") =
            rules_of("[[rule]]\nname = \"after\"\npaths = [\"/w\"]\nseverity = \"high\"\n");
        numbered.extend(fanout.number(events(1)));
        let got: Vec<(u64, String)> = numbered
            .into_iter()
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
        let mut fanout = Fanout::new(Vec::new(), rules, Arc::new(Telemetry::default()));
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
        let got: Vec<(Action, Vec<String>)> = fanout
            .number(vec![chmod(0o755, 0o4755), chmod(0o4755, 0o4750)])
            .into_iter()
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
    fn a_full_spooled_sink_is_skipped_without_holding_the_others_back() {
        let (tx_spool, rx_spool) = flume::bounded(1);
        let (tx_block, rx_block) = flume::bounded(8);
        let telemetry = Arc::new(Telemetry::default());
        let mut fanout = Fanout::new(
            vec![
                Outlet::spooled("spooled", tx_spool),
                Outlet::blocking("blocking", tx_block),
            ],
            Arc::new(RuleSet::none()),
            telemetry.clone(),
        );
        fanout.deliver(events(2));
        fanout.deliver(events(3));
        fanout.deliver(events(4));
        // The spooled sink reads the other two batches back from the outbox: no loss.
        assert_eq!(rx_spool.try_iter().map(|b| b.len()).sum::<usize>(), 2);
        assert_eq!(rx_block.try_iter().map(|b| b.len()).sum::<usize>(), 9);
        assert_eq!(telemetry.total(SINK_DROPPED), 0);
    }

    #[test]
    fn a_stopped_sink_is_left_out_and_the_last_one_stops_the_fanout() {
        let (tx_a, rx_a) = flume::bounded(8);
        let (tx_b, rx_b) = flume::bounded(8);
        let mut fanout = Fanout::new(
            vec![Outlet::blocking("a", tx_a), Outlet::blocking("b", tx_b)],
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
        let sink: Box<dyn crate::sinks::Sink> =
            Box::new(Stdout::new("stdout".into(), Shared(text.clone())));
        let telemetry = Arc::new(Telemetry::default());
        let mut fanout = Fanout::new(
            vec![Outlet::blocking("stdout", tx)],
            Arc::new(RuleSet::none()),
            telemetry.clone(),
        );
        let sink_telemetry = telemetry.clone();
        let writer = std::thread::spawn(move || {
            runner::run(sink, rx, sink_telemetry, runner::Reopen::default(), None)
        });
        for _ in 0..50 {
            assert!(fanout.deliver(events(20)), "the sink is running");
        }
        drop(fanout);
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
