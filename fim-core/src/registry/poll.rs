//! The registry poller's logic: every configured key in every view it is read in, its last
//! snapshot (kept in the baseline), and one poll: walk, compare, store, report.
//!
//! A key fim has never read is recorded without events (the first start sets the
//! baseline); a key recorded before is compared, so what changed while fim was stopped is
//! reported at the first poll (`found_at_start`). A key that does not exist is logged once
//! and, recorded as empty, is reported created when it appears.

use std::sync::Arc;

use log::{info, warn};

use super::{
    RegistryEvent,
    diff::{Context, diff},
    snapshot::{Registry, Reuse, Tree, WatchedKey, walk},
    store::root_id,
};
use crate::{
    baseline::{Baseline, BaselineError},
    config::RegistryRule,
    event::Origin,
    rules::Matched,
};

/// One watched key in one view.
#[derive(Debug)]
pub struct Root {
    /// What is read.
    pub watched: WatchedKey,
    /// Its name in the baseline.
    pub id: String,
    /// What its events carry.
    pub rule: Arc<Matched>,
    tree: Tree,
    known: bool,
    missing_told: bool,
}

impl Root {
    /// Whether the key existed at the last poll.
    pub fn exists(&self) -> bool {
        self.tree.contains_key(&self.watched.path)
    }
}

/// What a rule's events carry.
pub fn matched(
    name: &str,
    id: Option<&str>,
    severity: crate::config::Severity,
    techniques: &[String],
    tags: &[String],
) -> Arc<Matched> {
    Arc::new(Matched {
        rules: vec![(name.to_owned(), id.unwrap_or(name).to_owned())],
        severity,
        techniques: techniques.to_vec(),
        tags: tags.to_vec(),
        compare: None,
        rate: None,
    })
}

/// Registry events with the rule each falls under.
pub type Classified = Vec<(RegistryEvent, Arc<Matched>)>;

/// Every watched key, with what the last poll found.
#[derive(Debug, Default)]
pub struct Poller {
    /// The keys, in configuration order.
    pub roots: Vec<Root>,
}

/// What one poll did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PollStats {
    /// Keys whose values were read.
    pub keys_read: u64,
    /// Keys whose values were kept (last-write time unchanged).
    pub keys_skipped: u64,
    /// Keys that could not be read.
    pub unreadable: u64,
}

impl Poller {
    /// The keys of `rules`, each in each of its views, with their snapshots from
    /// `baseline`; snapshots of keys no longer configured are dropped from it.
    pub fn load(rules: &[RegistryRule], baseline: &mut Baseline) -> Result<Self, BaselineError> {
        let mut roots = Vec::new();
        for rule in rules {
            let m = matched(
                &rule.name,
                rule.id.as_deref(),
                rule.severity,
                &rule.techniques,
                &rule.tags,
            );
            for (hive, path) in &rule.keys {
                for view in rule.views.each() {
                    let watched = WatchedKey {
                        hive: *hive,
                        path: path.clone(),
                        view: *view,
                        depth: rule.depth,
                        exclude_values: rule.exclude_values.clone(),
                    };
                    let id = root_id(&watched);
                    if roots.iter().any(|r: &Root| r.id == id) {
                        continue;
                    }
                    roots.push(Root {
                        tree: baseline.registry_tree(&id)?,
                        known: baseline.registry_known(&id)?,
                        watched,
                        id,
                        rule: m.clone(),
                        missing_told: false,
                    });
                }
            }
        }
        let ids: Vec<String> = roots.iter().map(|r| r.id.clone()).collect();
        let dropped = baseline.retain_registry_roots(&ids)?;
        if dropped > 0 {
            info!("registry: forgot {dropped} keys no longer configured");
        }
        Ok(Self { roots })
    }

    /// Polls the roots `which` selects, writes their new snapshots into `baseline`'s open
    /// transaction and returns what changed, each event with its rule.
    pub fn poll<R: Registry>(
        &mut self,
        reg: &mut R,
        which: impl Fn(usize) -> bool,
        origin: Origin,
        baseline: &mut Baseline,
    ) -> Result<(Classified, PollStats), BaselineError> {
        let mut out = Vec::new();
        let mut stats = PollStats::default();
        let now = crate::event::unix_now_ns();
        // Only a notification's quick look trusts last-write times; polls at start and on
        // the interval read every value.
        let reuse = if origin == Origin::Realtime {
            Reuse::UnchangedKeys
        } else {
            Reuse::Nothing
        };
        for (i, root) in self.roots.iter_mut().enumerate() {
            if !which(i) {
                continue;
            }
            let w = walk(reg, &root.watched, &root.tree, reuse);
            stats.keys_read += w.keys_read;
            stats.keys_skipped += w.keys_skipped;
            stats.unreadable += w.unreadable.len() as u64;
            for e in &w.unreadable {
                warn!("registry: {e}: its last known state is kept");
            }
            // A key never read that cannot be read now is not recorded as empty (its
            // values would all be reported added once it can be read).
            if !root.known && w.unreadable.iter().any(|e| e.key == root.watched.path) {
                continue;
            }
            let exists = w.tree.contains_key(&root.watched.path);
            if !exists && !root.missing_told {
                info!(
                    "registry: {}\\{} ({}-bit view) does not exist: it is reported when it appears",
                    root.watched.hive.as_str(),
                    root.watched.path,
                    root.watched.view.as_str()
                );
                root.missing_told = true;
            }
            if exists {
                root.missing_told = false;
            }
            if root.known {
                let cx = Context {
                    time_unix_ns: now,
                    origin,
                };
                out.extend(
                    diff(&root.watched, &root.tree, &w.tree, cx)
                        .into_iter()
                        .map(|e| (e, root.rule.clone())),
                );
            }
            if !root.known || w.tree != root.tree {
                baseline.put_registry_tree(&root.id, &root.tree, &w.tree)?;
            }
            root.tree = w.tree;
            root.known = true;
        }
        Ok((out, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        baseline::Access,
        config::{Severity, Views},
        event::Action,
        registry::{Hive, View, snapshot::fake::FakeRegistry},
    };

    const RUN: &str = "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run";
    const KNOWN_DLLS: &str = "SYSTEM\\CurrentControlSet\\Control\\Session Manager\\KnownDLLs";

    fn rules() -> Vec<RegistryRule> {
        vec![
            RegistryRule {
                name: "run".into(),
                id: Some("FIM-RUN".into()),
                keys: vec![(Hive::Hklm, RUN.into())],
                views: Views::Both,
                depth: 1,
                exclude_values: Vec::new(),
                severity: Severity::High,
                techniques: vec!["T1547.001".into()],
                tags: Vec::new(),
            },
            RegistryRule {
                name: "dlls".into(),
                id: None,
                keys: vec![(Hive::Hklm, KNOWN_DLLS.into())],
                views: Views::Native,
                depth: 0,
                exclude_values: Vec::new(),
                severity: Severity::Critical,
                techniques: vec!["T1574.001".into()],
                tags: Vec::new(),
            },
        ]
    }

    fn actions(events: &[(RegistryEvent, Arc<Matched>)]) -> Vec<(Action, String, View, String)> {
        events
            .iter()
            .map(|(e, m)| (e.action, e.location.path(), e.view, m.rules[0].1.clone()))
            .collect()
    }

    #[test]
    fn the_first_poll_sets_the_baseline_and_later_ones_report_even_across_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reg = FakeRegistry::default();
        reg.set(View::Native, RUN, "a", 1, b"a\0");
        reg.set(View::Wow32, RUN, "b", 1, b"b\0");
        {
            let mut b = Baseline::open(dir.path(), Access::Write).expect("open");
            let mut p = Poller::load(&rules(), &mut b).expect("load");
            assert_eq!(p.roots.len(), 3, "two views of Run, and KnownDLLs");
            let (events, stats) = p
                .poll(&mut reg, |_| true, Origin::Start, &mut b)
                .expect("poll");
            assert!(
                events.is_empty(),
                "the first poll reports nothing: {events:?}"
            );
            assert_eq!(stats.keys_read, 2);
            assert!(!p.roots[2].exists(), "KnownDLLs is missing");
            b.commit().expect("commit");
        }
        // While fim is stopped: a value in the 32-bit view changes, KnownDLLs appears.
        reg.set(View::Wow32, RUN, "b", 1, b"c\0");
        reg.set(View::Native, KNOWN_DLLS, "kernel32", 1, b"k\0");
        let mut b = Baseline::open(dir.path(), Access::Write).expect("reopen");
        let mut p = Poller::load(&rules(), &mut b).expect("load");
        let (events, stats) = p
            .poll(&mut reg, |_| true, Origin::Start, &mut b)
            .expect("poll");
        assert_eq!(
            actions(&events),
            [
                (
                    Action::Changed,
                    format!("HKLM\\{RUN}\\b"),
                    View::Wow32,
                    "FIM-RUN".into()
                ),
                (
                    Action::Added,
                    format!("HKLM\\{KNOWN_DLLS}"),
                    View::Native,
                    "dlls".into()
                ),
                (
                    Action::Added,
                    format!("HKLM\\{KNOWN_DLLS}\\kernel32"),
                    View::Native,
                    "dlls".into()
                ),
            ]
        );
        assert!(events.iter().all(|(e, _)| e.origin == Origin::Start));
        assert_eq!(stats.keys_skipped, 0, "a poll at start reads every value");
        b.commit().expect("commit");
        // Only the selected roots are read.
        reg.set(View::Native, RUN, "a", 1, b"z\0");
        let (events, _) = p
            .poll(&mut reg, |i| i == 2, Origin::Realtime, &mut b)
            .expect("poll");
        assert!(events.is_empty());
        let (events, _) = p
            .poll(&mut reg, |i| i == 0, Origin::Realtime, &mut b)
            .expect("poll");
        assert_eq!(actions(&events)[0].0, Action::Changed);
    }

    #[test]
    fn a_key_unreadable_at_its_first_poll_or_read_to_a_new_depth_reports_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reg = FakeRegistry::default();
        reg.set(View::Native, RUN, "a", 1, b"a\0");
        reg.set(View::Native, &format!("{RUN}\\Sub"), "b", 1, b"b\0");
        reg.keys
            .get_mut(&(View::Native, RUN.to_owned()))
            .expect("key")
            .denied = true;
        let mut b = Baseline::open(dir.path(), Access::Write).expect("open");
        let mut p = Poller::load(&rules()[..1], &mut b).expect("load");
        let (events, stats) = p
            .poll(&mut reg, |_| true, Origin::Start, &mut b)
            .expect("poll");
        assert!(events.is_empty());
        assert_eq!(
            stats.unreadable, 1,
            "the native view's key (the 32-bit one is missing)"
        );
        reg.keys
            .get_mut(&(View::Native, RUN.to_owned()))
            .expect("key")
            .denied = false;
        let (events, _) = p
            .poll(&mut reg, |_| true, Origin::Rescan, &mut b)
            .expect("poll");
        assert!(
            events.is_empty(),
            "its first reading is its baseline: {events:?}"
        );
        // Deeper now: the subkeys it lets in are a new baseline, not additions.
        let mut deeper = rules();
        deeper[0].depth = 0;
        let mut p = Poller::load(&deeper[..1], &mut b).expect("load");
        let (events, _) = p
            .poll(&mut reg, |_| true, Origin::Start, &mut b)
            .expect("poll");
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn keys_no_longer_configured_are_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reg = FakeRegistry::default();
        reg.set(View::Native, RUN, "a", 1, b"a\0");
        let mut b = Baseline::open(dir.path(), Access::Write).expect("open");
        let mut p = Poller::load(&rules(), &mut b).expect("load");
        p.poll(&mut reg, |_| true, Origin::Start, &mut b)
            .expect("poll");
        let fewer = &rules()[1..];
        let p = Poller::load(fewer, &mut b).expect("load");
        assert_eq!(p.roots.len(), 1);
        assert!(
            b.registry_known(&format!("64:HKLM\\{KNOWN_DLLS} depth=0"))
                .expect("meta")
        );
        assert!(
            !b.registry_known(&format!("64:HKLM\\{RUN} depth=1"))
                .expect("meta")
        );
    }
}
