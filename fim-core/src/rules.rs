//! Which configured rules an event falls under, and what they make of it: whether it is
//! reported at all (each rule lists the operations it reports), and the rule names, severity,
//! ATT&CK techniques and tags it carries.
//!
//! The watch set decides what the sensors see; this decides, for what they saw, what it
//! means. It runs once per event, upstream of the numbering, so an event a rule does not
//! report leaves no hole in `event.sequence`. Pure logic: the disk is probed only through
//! the function given to [`RuleSet::new`].

use std::{path::Path, sync::Arc};

use globset::{GlobSet, GlobSetBuilder};

use crate::{
    attrs::Attr,
    config::{Rule, Severity},
    event::Action,
    paths::bytes_to_path,
    watch::{Found, WatchError, WatchSet},
};

/// What the rules an event matched say about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matched {
    /// (`rule.name`, `rule.id`) of each rule, the most specific first.
    pub rules: Vec<(String, String)>,
    /// The highest severity among them.
    pub severity: Severity,
    /// Their ATT&CK technique ids, each once, in rule order.
    pub techniques: Vec<String>,
    /// Their tags, each once, in rule order.
    pub tags: Vec<String>,
    /// The attributes the most specific rule compares (`None`: every one).
    pub compare: Option<Vec<Attr>>,
    /// The most specific rule's rate limit: events per window.
    pub rate: Option<(u32, std::time::Duration)>,
}

/// What becomes of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Reported, with what its rules say (`None`: it falls under no rule, as a gap).
    Report(Option<Arc<Matched>>),
    /// Every rule it falls under leaves this operation out, or excludes its path.
    Suppress,
}

#[derive(Clone, Debug)]
struct Compiled {
    watch: WatchSet,
    /// Excludes on the file name.
    names: GlobSet,
    /// Excludes on the whole path.
    paths: GlobSet,
    /// `None`: every operation.
    actions: Option<Vec<Action>>,
    /// What an event under this rule alone carries.
    alone: Arc<Matched>,
    /// Whether files under the rule are hashed.
    hash: bool,
}

/// The configured rules, ready to classify events.
#[derive(Clone, Debug)]
pub struct RuleSet {
    rules: Vec<Compiled>,
}

impl RuleSet {
    /// No rules: every event is reported, under no rule.
    pub fn none() -> Self {
        Self { rules: Vec::new() }
    }

    /// Compiles `rules` (checked already by the configuration reader; a glob that still
    /// fails is reported as a bad watch glob). `probe` says what is on disk.
    pub fn new(rules: &[Rule], probe: impl Fn(&Path) -> Found) -> Result<Self, Vec<WatchError>> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for rule in rules {
            let patterns: Vec<(String, bool)> = rule
                .paths
                .iter()
                .map(|p| (p.clone(), rule.recursive))
                .collect();
            let watch = match WatchSet::with_recursion(&patterns, false, &probe) {
                Ok(w) => w,
                Err(e) => {
                    errors.extend(e);
                    continue;
                }
            };
            let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
            for pattern in &rule.exclude {
                // `*` stays within one component; `**` crosses them.
                let glob = globset::GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build();
                match glob {
                    Ok(g) if pattern.contains('/') => {
                        paths.add(g);
                    }
                    Ok(g) => {
                        names.add(g);
                    }
                    Err(e) => errors.push(WatchError::BadGlob {
                        pattern: pattern.clone(),
                        reason: e.kind().to_string(),
                    }),
                }
            }
            let build = |b: GlobSetBuilder| b.build().unwrap_or_else(|_| GlobSet::empty());
            out.push(Compiled {
                watch,
                names: build(names),
                paths: build(paths),
                actions: rule.actions(),
                alone: Arc::new(Matched {
                    rules: vec![(
                        rule.name.clone(),
                        rule.id.clone().unwrap_or_else(|| rule.name.clone()),
                    )],
                    severity: rule.severity,
                    techniques: rule.techniques.clone(),
                    tags: rule.tags.clone(),
                    compare: rule.compared(),
                    rate: rule.rate_limit,
                }),
                hash: rule.hash,
            });
        }
        if errors.is_empty() {
            Ok(Self { rules: out })
        } else {
            Err(errors)
        }
    }

    /// What becomes of `action` on `path` (and, for a rename or link, `other`, the second
    /// name): the rules naming either path and reporting the action, most specific first.
    pub fn classify(&self, action: Action, path: &[u8], other: Option<&[u8]>) -> Verdict {
        if action == Action::Gap {
            return Verdict::Report(None);
        }
        let mut under: Vec<(usize, &Compiled)> = Vec::new();
        let mut excluded = false;
        for rule in &self.rules {
            let mut specificity = None;
            for p in [Some(path), other].into_iter().flatten() {
                if let Some(s) = rule.watch.specificity(p) {
                    if rule.excludes(p) {
                        excluded = true;
                    } else {
                        specificity = specificity.max(Some(s));
                    }
                }
            }
            if let Some(s) = specificity {
                under.push((s, rule));
            }
        }
        if under.is_empty() {
            // Taken out by an exclude, and no other rule wants it: not reported. Under no
            // rule at all (what the watch set passes for the sensors' sake): reported bare.
            return if excluded {
                Verdict::Suppress
            } else {
                Verdict::Report(None)
            };
        }
        under.retain(|(_, r)| r.actions.as_ref().is_none_or(|a| a.contains(&action)));
        // Stable: among equally specific rules, the file's order.
        under.sort_by_key(|(s, _)| std::cmp::Reverse(*s));
        match under.as_slice() {
            [] => Verdict::Suppress,
            [(_, only)] => Verdict::Report(Some(only.alone.clone())),
            several => {
                let mut m = Matched {
                    rules: Vec::new(),
                    severity: Severity::Low,
                    techniques: Vec::new(),
                    tags: Vec::new(),
                    compare: several[0].1.alone.compare.clone(),
                    rate: several[0].1.alone.rate,
                };
                for (_, r) in several {
                    let a = &r.alone;
                    m.rules.extend(a.rules.iter().cloned());
                    m.severity = m.severity.max(a.severity);
                    for t in &a.techniques {
                        if !m.techniques.contains(t) {
                            m.techniques.push(t.clone());
                        }
                    }
                    for t in &a.tags {
                        if !m.tags.contains(t) {
                            m.tags.push(t.clone());
                        }
                    }
                }
                Verdict::Report(Some(Arc::new(m)))
            }
        }
    }
}

/// Set-user-ID and set-group-ID bits.
const SETID: u32 = 0o6000;

/// What an operation itself says, whatever rule it falls under: a mode made set-user-ID or
/// set-group-ID (T1548.001, setuid and setgid), times set by hand (T1070.006,
/// timestomp). `mode` is the new mode, when known.
pub fn behaviour(action: Action, mode: Option<u32>) -> Option<(&'static str, Severity)> {
    match action {
        Action::Chmod if mode.is_some_and(|m| m & SETID != 0) => {
            Some(("T1548.001", Severity::High))
        }
        Action::Utimes => Some(("T1070.006", Severity::Medium)),
        _ => None,
    }
}

/// `matched` (or nothing) with what the operation itself says added: its technique, and at
/// least its severity.
pub fn with_behaviour(
    matched: Option<Arc<Matched>>,
    (technique, severity): (&'static str, Severity),
) -> Arc<Matched> {
    let mut m = matched.map_or_else(
        || Matched {
            rules: Vec::new(),
            severity,
            techniques: Vec::new(),
            tags: Vec::new(),
            compare: None,
            rate: None,
        },
        |m| (*m).clone(),
    );
    m.severity = m.severity.max(severity);
    if !m.techniques.iter().any(|t| t == technique) {
        m.techniques.push(technique.to_owned());
    }
    Arc::new(m)
}

impl RuleSet {
    /// Whether a file at `path` is hashed: as the most specific rule naming it says (a
    /// path under no rule is).
    pub fn hashes(&self, path: &[u8]) -> bool {
        // A path no `hash = false` rule names is hashed: only those rules are matched in
        // the common case (a scan asks this of every file).
        if !self
            .rules
            .iter()
            .any(|r| !r.hash && r.watch.specificity(path).is_some())
        {
            return true;
        }
        self.rules
            .iter()
            .filter(|r| !r.excludes(path))
            .filter_map(|r| r.watch.specificity(path).map(|s| (s, r)))
            .fold(None::<(usize, &Compiled)>, |best, (s, r)| match best {
                Some((b, _)) if b >= s => best,
                _ => Some((s, r)),
            })
            .is_none_or(|(_, r)| r.hash)
    }
}

impl Compiled {
    fn excludes(&self, path: &[u8]) -> bool {
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        (!self.names.is_empty() && self.names.is_match(bytes_to_path(name)))
            || (!self.paths.is_empty() && self.paths.is_match(bytes_to_path(path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn on_disk(path: &Path) -> Found {
        match path.to_str().unwrap_or_default() {
            "/etc/passwd" | "/etc/shadow" => Found::File(path.into()),
            _ => Found::Dir(path.into()),
        }
    }

    fn rules(text: &str) -> RuleSet {
        let config = Config::parse(text).expect("valid configuration");
        RuleSet::new(&config.rules, on_disk).expect("compiles")
    }

    fn names(v: &Verdict) -> Vec<&str> {
        match v {
            Verdict::Report(Some(m)) => m.rules.iter().map(|(n, _)| n.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    const TEXT: &str = r#"
[[rule]]
name = "etc"
paths = ["/etc"]
exclude = ["*.swp", "/etc/cache/**"]
severity = "low"
tags = ["PCI-DSS 11.5"]

[[rule]]
name = "accounts"
id = "FIM-ACCT"
paths = ["/etc/passwd", "/etc/shadow"]
severity = "high"
techniques = ["T1136.001", "T1098"]
tags = ["PCI-DSS 11.5", "CIS 6.1"]

[[rule]]
name = "logs"
paths = ["/var/log"]
operations = ["unlink", "rename", "truncate", "metadata"]
severity = "medium"
techniques = ["T1070.002"]
"#;

    #[test]
    fn an_event_carries_every_rule_it_falls_under_the_most_specific_first() {
        let set = rules(TEXT);
        let v = set.classify(Action::CloseWrite, b"/etc/passwd", None);
        assert_eq!(names(&v), vec!["accounts", "etc"]);
        let Verdict::Report(Some(m)) = v else {
            panic!("reported with rules");
        };
        assert_eq!(m.rules[0], ("accounts".to_owned(), "FIM-ACCT".to_owned()));
        assert_eq!(m.rules[1], ("etc".to_owned(), "etc".to_owned()));
        assert_eq!(m.severity, Severity::High);
        assert_eq!(m.techniques, vec!["T1136.001", "T1098"]);
        assert_eq!(m.tags, vec!["PCI-DSS 11.5", "CIS 6.1"]);
    }

    #[test]
    fn excludes_take_a_path_out_of_their_rule_only() {
        let set = rules(TEXT);
        assert_eq!(
            names(&set.classify(Action::Write, b"/etc/hosts", None)),
            vec!["etc"]
        );
        for excluded in [&b"/etc/.hosts.swp"[..], b"/etc/cache/a/b"] {
            assert_eq!(
                set.classify(Action::Write, excluded, None),
                Verdict::Suppress,
                "{}",
                String::from_utf8_lossy(excluded)
            );
        }
    }

    #[test]
    fn an_excluded_path_another_rule_covers_is_reported_under_that_rule() {
        let set = rules(
            "[[rule]]\nname = \"etc\"\npaths = [\"/etc\"]\nexclude = [\"passwd\"]\n\n\
             [[rule]]\nname = \"accounts\"\npaths = [\"/etc/passwd\"]\n",
        );
        assert_eq!(
            names(&set.classify(Action::Chmod, b"/etc/passwd", None)),
            vec!["accounts"]
        );
        // Outside every rule (a path the sensors pass on their way): reported bare.
        assert_eq!(
            set.classify(Action::Chmod, b"/srv/x", None),
            Verdict::Report(None)
        );
    }

    #[test]
    fn an_operation_no_rule_reports_is_suppressed() {
        let set = rules(TEXT);
        // Appending to a log is not what the log rule is about; removing one is.
        assert_eq!(
            set.classify(Action::Write, b"/var/log/syslog", None),
            Verdict::Suppress
        );
        assert_eq!(
            set.classify(Action::CloseWrite, b"/var/log/syslog", None),
            Verdict::Suppress
        );
        assert_eq!(
            names(&set.classify(Action::Unlink, b"/var/log/syslog", None)),
            vec!["logs"]
        );
        assert_eq!(
            names(&set.classify(Action::Chmod, b"/var/log/syslog", None)),
            vec!["logs"]
        );
        // A gap is always reported.
        assert_eq!(
            set.classify(Action::Gap, b"/var/log", None),
            Verdict::Report(None)
        );
    }

    #[test]
    fn a_rename_falls_under_the_rules_of_either_name() {
        let set = rules(TEXT);
        let v = set.classify(Action::Rename, b"/tmp/x", Some(b"/var/log/auth.log"));
        assert_eq!(names(&v), vec!["logs"]);
        let v = set.classify(Action::Rename, b"/etc/passwd", Some(b"/tmp/evil"));
        assert_eq!(names(&v), vec!["accounts", "etc"]);
    }

    #[test]
    fn the_most_specific_rule_decides_hashing_and_what_is_compared() {
        let set = rules(
            "[[rule]]\nname = \"modules\"\npaths = [\"/lib/modules\"]\nhash = false\n\n\
             [[rule]]\nname = \"one\"\npaths = [\"/lib/modules/key.ko\"]\n\
             attributes = [\"sha256\", \"mode\"]\n",
        );
        assert!(!set.hashes(b"/lib/modules/x.ko"));
        assert!(set.hashes(b"/lib/modules/key.ko"));
        assert!(set.hashes(b"/elsewhere"));
        let compare = |path: &[u8]| match set.classify(Action::Changed, path, None) {
            Verdict::Report(Some(m)) => m.compare.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            compare(b"/lib/modules/key.ko"),
            Some(vec![Attr::Sha256, Attr::Mode])
        );
        let unhashed = compare(b"/lib/modules/x.ko").expect("hash = false lists the rest");
        assert!(!unhashed.contains(&Attr::Sha256) && unhashed.contains(&Attr::Mode));
    }

    #[test]
    fn setuid_chmod_and_timestomp_add_their_technique_whatever_the_rule() {
        assert_eq!(
            behaviour(Action::Chmod, Some(0o104755)),
            Some(("T1548.001", Severity::High))
        );
        assert_eq!(
            behaviour(Action::Chmod, Some(0o2755)).map(|b| b.0),
            Some("T1548.001")
        );
        assert_eq!(behaviour(Action::Chmod, Some(0o755)), None);
        assert_eq!(behaviour(Action::Chmod, None), None);
        assert_eq!(
            behaviour(Action::Utimes, None).map(|b| b.0),
            Some("T1070.006")
        );
        let set = rules(TEXT);
        let Verdict::Report(etc) = set.classify(Action::Chmod, b"/etc/hosts", None) else {
            panic!("reported");
        };
        let m = with_behaviour(etc, ("T1548.001", Severity::High));
        assert_eq!(m.rules[0].0, "etc");
        assert_eq!(m.severity, Severity::High, "raised from the rule's low");
        assert_eq!(m.techniques, vec!["T1548.001"]);
        let bare = with_behaviour(None, ("T1070.006", Severity::Medium));
        assert!(bare.rules.is_empty() && bare.techniques == vec!["T1070.006"]);
    }

    #[test]
    fn a_star_in_an_exclude_path_stays_within_one_component() {
        let set = rules(
            "[[rule]]\nname = \"etc\"\npaths = [\"/etc\"]\nexclude = [\"/etc/*.bak\", \"/etc/c/**\"]\n",
        );
        assert_eq!(
            set.classify(Action::Write, b"/etc/x.bak", None),
            Verdict::Suppress
        );
        assert_eq!(
            names(&set.classify(Action::Write, b"/etc/sudoers.d/x.bak", None)),
            vec!["etc"]
        );
        assert_eq!(
            set.classify(Action::Write, b"/etc/c/d/e", None),
            Verdict::Suppress
        );
    }
}
