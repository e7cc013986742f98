//! `[[rule]]`: what a rule watches and what it says of the events under it.

use super::*;

/// Names for groups of operations a rule may list instead of each action.
pub const OPERATION_GROUPS: [(&str, &[Action]); 4] = [
    (
        "content",
        &[
            Action::OpenWrite,
            Action::Write,
            Action::CloseWrite,
            Action::Truncate,
            Action::Fallocate,
            Action::Modified,
        ],
    ),
    (
        "metadata",
        &[
            Action::Chmod,
            Action::Chown,
            Action::SetXattr,
            Action::RemoveXattr,
            Action::Attrib,
            Action::Utimes,
        ],
    ),
    (
        "namespace",
        &[
            Action::Create,
            Action::Mkdir,
            Action::Mknod,
            Action::Symlink,
            Action::Link,
            Action::Unlink,
            Action::Rmdir,
            Action::Rename,
        ],
    ),
    ("scan", &[Action::Added, Action::Removed, Action::Changed]),
];

/// One `[[rule]]`: a named group of watched paths and what an event under them means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Unique among the rules (`rule.name`).
    pub name: String,
    /// `rule.id`; the name when not given.
    pub id: Option<String>,
    /// Why the rule exists (shown by `fim config check`).
    pub description: Option<String>,
    /// Absolute paths: a directory (watched with what is below it), a file, or `DIR/GLOB`.
    pub paths: Vec<String>,
    /// Whether a directory in `paths` is watched with everything below it (`false`: with
    /// its direct entries only). A file listed in another rule is watched either way.
    pub recursive: bool,
    /// Whether a file's content is hashed (`false`: never read; `sha256` not compared).
    pub hash: bool,
    /// At most this many events per window; the rest are summed up per window.
    pub rate_limit: Option<(u32, Duration)>,
    /// The attributes compared (`fim.changed`, and what makes a rescan report `changed`);
    /// `None`: every one.
    pub attributes: Option<Vec<String>>,
    /// Paths under the rule that it does not cover: a glob on the file name (`*.swp`), or
    /// an absolute glob on the whole path (`/var/log/journal/**`).
    pub exclude: Vec<String>,
    /// The operations reported (actions, or the groups in [`OPERATION_GROUPS`]); `None`:
    /// every one.
    pub operations: Option<Vec<String>>,
    /// How much an event under the rule matters.
    pub severity: Severity,
    /// MITRE ATT&CK technique ids (`T1053.003`).
    pub techniques: Vec<String>,
    /// Free tags: compliance references (`PCI-DSS 11.5`, `CIS 6.1`) and the like.
    pub tags: Vec<String>,
}

impl Rule {
    /// A rule watching `paths` with every other key at its default.
    pub fn new(name: &str, paths: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            id: None,
            description: None,
            paths,
            recursive: true,
            hash: true,
            rate_limit: None,
            attributes: None,
            exclude: Vec::new(),
            operations: None,
            severity: Severity::Medium,
            techniques: Vec::new(),
            tags: Vec::new(),
        }
    }

    /// The attributes the rule compares (`None`: every one). Checked on reading.
    pub fn compared(&self) -> Option<Vec<Attr>> {
        let listed = self.attributes.as_ref().map(|l| {
            l.iter()
                .filter_map(|a| Attr::from_name(a))
                .collect::<Vec<_>>()
        });
        match (listed, self.hash) {
            (Some(l), _) => Some(l),
            (None, true) => None,
            (None, false) => Some(
                Attr::ALL
                    .into_iter()
                    .filter(|a| *a != Attr::Sha256)
                    .collect(),
            ),
        }
    }

    /// The actions the rule reports (`None`: every one). Its names were checked on reading.
    pub fn actions(&self) -> Option<Vec<Action>> {
        self.operations.as_ref().map(|ops| {
            let mut out = Vec::new();
            for op in ops {
                match OPERATION_GROUPS.iter().find(|(g, _)| g == op) {
                    Some((_, actions)) => out.extend_from_slice(actions),
                    None => out.extend(Action::from_name(op)),
                }
            }
            out
        })
    }
}

/// Parses a rate limit: `N/DURATION` (`100/1m`), both above zero.
pub fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let bad = || format!("`{text}` is not a rate limit (events per window: \"100/1m\")");
    let (n, window) = text.split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    let window = parse_duration(window).map_err(|_| bad())?;
    if n == 0 || window.is_zero() {
        return Err(format!(
            "`{text}`: both the count and the window must be above zero"
        ));
    }
    Ok((n, window))
}

/// Checks a rule's path: absolute, or `~/REST` (REST under every user's home).
fn check_rule_path(path: &str) -> Result<(), watch::WatchError> {
    use watch::WatchError as E;
    let Some(rest) = path.strip_prefix("~/") else {
        return watch::check_pattern(path);
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(E::NotAbsolute(path.to_owned()));
    }
    watch::check_pattern(&format!("/{rest}")).map_err(|e| match e {
        E::GlobInDirectory(_) => E::GlobInDirectory(path.to_owned()),
        E::BadGlob { reason, .. } => E::BadGlob {
            pattern: path.to_owned(),
            reason,
        },
        E::TooLong(_) => E::TooLong(path.to_owned()),
        other => other,
    })
}

/// The home directories in an `/etc/passwd` text: each distinct absolute one but `/`, in
/// the file's order (the caller keeps those that exist).
pub fn homes_from_passwd(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        let Some(home) = fields.get(5).filter(|_| fields.len() == 7) else {
            continue;
        };
        let home = home.trim_end_matches('/');
        if home.starts_with('/') && !out.iter().any(|h| h == home) {
            out.push(home.to_owned());
        }
    }
    out
}

impl Rule {
    /// The rule's paths as watched: `~/REST` once under each of `homes`, and every path
    /// under `root` (`/` on a real host; a test's mirror of one otherwise).
    pub fn resolved_paths(&self, root: &str, homes: &[String]) -> Vec<String> {
        let root = root.trim_end_matches('/');
        let mut out = Vec::new();
        for path in &self.paths {
            match path.strip_prefix("~/") {
                Some(rest) => out.extend(homes.iter().map(|h| format!("{root}{h}/{rest}"))),
                None => out.push(format!("{root}{path}")),
            }
        }
        out
    }
}

/// A rule's name with its line (when it has one), and the rule when it has no problem.
pub(super) fn read_rule(
    mut t: Table<'_, '_>,
    errors: &mut Vec<ConfigError>,
) -> (Option<(String, usize)>, Option<Rule>) {
    let doc = t.doc;
    let before = errors.len();
    let name = match t.string("name", errors) {
        Some((n, span)) if n.trim().is_empty() => {
            errors.push(doc.error(&t.key("name"), span, "must not be empty"));
            None
        }
        Some((n, span)) => Some((n, doc.line(span.start))),
        None => {
            if !t.used.contains(&"name") {
                errors.push(ConfigError {
                    line: t.line,
                    key: t.key("name"),
                    message: "missing: every rule has a name".into(),
                });
            }
            None
        }
    };
    let mut paths = Vec::new();
    match t.take("paths") {
        None => errors.push(ConfigError {
            line: t.line,
            key: t.key("paths"),
            message: "missing: every rule lists the paths it watches".into(),
        }),
        Some(value) => match value.get_ref() {
            DeValue::Array(items) if items.is_empty() => {
                errors.push(doc.error(&t.key("paths"), value.span(), "must not be empty"));
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let key = format!("{}[{}]", t.key("paths"), i + 1);
                    match item.get_ref() {
                        DeValue::String(s) => match check_rule_path(s) {
                            Ok(()) => paths.push(s.to_string()),
                            Err(e) => errors.push(doc.error(&key, item.span(), e.to_string())),
                        },
                        _ => errors.push(doc.error(&key, item.span(), "must be a string")),
                    }
                }
            }
            _ => {
                errors.push(doc.error(&t.key("paths"), value.span(), "must be an array of strings"))
            }
        },
    }
    let id = match t.string("id", errors) {
        Some((id, span)) if id.trim().is_empty() => {
            errors.push(doc.error(&t.key("id"), span, "must not be empty"));
            None
        }
        other => other.map(|(id, _)| id),
    };
    let mut flag = |key: &'static str, errors: &mut Vec<ConfigError>| -> bool {
        match t.take(key) {
            None => true,
            Some(value) => match value.get_ref() {
                DeValue::Boolean(b) => *b,
                _ => {
                    errors.push(doc.error(&t.key(key), value.span(), "must be true or false"));
                    true
                }
            },
        }
    };
    let recursive = flag("recursive", errors);
    let hash = flag("hash", errors);
    let rate_limit =
        t.string("rate_limit", errors)
            .and_then(|(text, span)| match parse_rate(&text) {
                Ok(rate) => Some(rate),
                Err(m) => {
                    errors.push(doc.error(&t.key("rate_limit"), span, m));
                    None
                }
            });
    let attributes = t.has("attributes").then(|| {
        t.strings("attributes", errors, |name| {
            if Attr::from_name(name).is_some() {
                Ok(())
            } else {
                let names: Vec<&str> = Attr::ALL.iter().map(|a| a.as_str()).collect();
                Err(format!(
                    "`{name}` is not an attribute (one of: {})",
                    names.join(", ")
                ))
            }
        })
    });
    if let Some(list) = &attributes
        && list.is_empty()
    {
        errors.push(ConfigError {
            line: t.line,
            key: t.key("attributes"),
            message: "must not be empty (leave it out to compare every attribute)".into(),
        });
    }
    if !hash
        && attributes
            .as_ref()
            .is_some_and(|l| l.iter().any(|a| a == "sha256"))
    {
        errors.push(ConfigError {
            line: t.line,
            key: t.key("attributes"),
            message: "compares `sha256` while `hash = false`: one of them must go".into(),
        });
    }
    let description = match t.string("description", errors) {
        Some((d, span)) if d.trim().is_empty() => {
            errors.push(doc.error(&t.key("description"), span, "must not be empty"));
            None
        }
        other => other.map(|(d, _)| d),
    };
    let exclude = t.strings("exclude", errors, |pattern| {
        if pattern.contains('/') && !pattern.starts_with('/') {
            return Err(format!(
                "`{pattern}` has a slash but is not absolute: a name glob has none, a path \
                 glob starts with /"
            ));
        }
        globset::Glob::new(pattern)
            .map(|_| ())
            .map_err(|e| format!("glob `{pattern}`: {}", e.kind()))
    });
    let operations = t.has("operations").then(|| {
        t.strings("operations", errors, |op| {
            if Action::from_name(op).is_some() || OPERATION_GROUPS.iter().any(|(g, _)| *g == op) {
                Ok(())
            } else {
                let groups: Vec<&str> = OPERATION_GROUPS.iter().map(|(g, _)| *g).collect();
                Err(format!(
                    "`{op}` is not an operation (an event.action name such as `rename`, or a \
                     group: {})",
                    groups.join(", ")
                ))
            }
        })
    });
    if let Some(ops) = &operations
        && ops.is_empty()
        && errors.len() == before
    {
        errors.push(ConfigError {
            line: t.line,
            key: t.key("operations"),
            message: "must not be empty (leave it out to report every operation)".into(),
        });
    }
    let Labels {
        severity,
        techniques,
        tags,
    } = read_labels(&mut t, errors);
    t.finish(errors);
    let rule = match &name {
        Some((name, _)) if errors.len() == before => Some(Rule {
            name: name.clone(),
            id,
            description,
            paths,
            recursive,
            hash,
            rate_limit,
            attributes,
            exclude,
            operations,
            severity,
            techniques,
            tags,
        }),
        _ => None,
    };
    (name, rule)
}

/// What an event under a rule carries: `severity`, `techniques` and `tags`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Labels {
    pub severity: Severity,
    pub techniques: Vec<String>,
    pub tags: Vec<String>,
}

/// Reads `severity` (medium when absent), `techniques` and `tags` from a rule's table.
pub(super) fn read_labels(t: &mut Table<'_, '_>, errors: &mut Vec<ConfigError>) -> Labels {
    let doc = t.doc;
    let mut severity = Severity::Medium;
    if let Some((name, span)) = t.string("severity", errors) {
        match Severity::from_name(&name) {
            Some(s) => severity = s,
            None => {
                let names: Vec<&str> = Severity::ALL.iter().map(|s| s.name()).collect();
                errors.push(doc.error(
                    &t.key("severity"),
                    span,
                    format!("`{name}` is not a severity (one of: {})", names.join(", ")),
                ));
            }
        }
    }
    let techniques = t.strings("techniques", errors, |id| {
        if is_technique(id) {
            Ok(())
        } else {
            Err(format!(
                "`{id}` is not a MITRE ATT&CK technique id (T1234 or T1234.001)"
            ))
        }
    });
    let tags = t.strings("tags", errors, |tag| {
        if tag.trim().is_empty() {
            Err("a tag must not be empty".into())
        } else {
            Ok(())
        }
    });
    Labels {
        severity,
        techniques,
        tags,
    }
}

/// `T` and four digits, optionally a dot and three more.
fn is_technique(id: &str) -> bool {
    let b = id.as_bytes();
    let digits = |r: &[u8]| r.iter().all(u8::is_ascii_digit);
    match b.len() {
        5 => b[0] == b'T' && digits(&b[1..]),
        9 => b[0] == b'T' && digits(&b[1..5]) && b[5] == b'.' && digits(&b[6..]),
        _ => false,
    }
}
