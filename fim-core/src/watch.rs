//! The watch set: which paths are monitored, as exact rules for userspace and as a
//! conservative prefix table for the kernel.
//!
//! A rule is a path (a directory watched recursively, or a single file) or a glob whose
//! wildcards are all in the last component (`/etc/*.conf`). Paths reached through symlinks
//! (`/bin` -> `/usr/bin` on merged-/usr systems) are watched under both spellings: the kernel
//! reports object paths canonically but syscall strings as written.
//! Pure logic: canonicalisation is passed in, so tests need no file system.

use std::path::{Path, PathBuf};

use fim_common::{MAX_WATCH_ROOTS, ROOT_KEY_LEN, SUFFIX_MAX, WatchRoot, root_flags};
use globset::{Glob, GlobMatcher};

use crate::paths::{bytes_to_path, clean, is_under};

/// The Linux recommended items of Microsoft Defender for Cloud's FIM: the default watch set.
pub const DEFAULT_WATCH: &[&str] = &[
    "/bin/login",
    "/bin/passwd",
    "/etc/*.conf",
    "/usr/bin",
    "/usr/sbin",
    "/bin",
    "/sbin",
    "/boot",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/opt/bin",
    "/opt/sbin",
    "/etc/crontab",
    "/etc/init.d",
    "/etc/cron.hourly",
    "/etc/cron.daily",
    "/etc/cron.weekly",
    "/etc/cron.monthly",
];

/// A rule that cannot be watched.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WatchError {
    /// Not an absolute path.
    #[error("watch path `{0}` is not absolute")]
    NotAbsolute(String),
    /// Wildcards outside the last component.
    #[error("watch glob `{0}`: only the last path component may contain wildcards")]
    GlobInDirectory(String),
    /// The glob does not parse.
    #[error("watch glob `{pattern}`: {reason}")]
    BadGlob {
        /// The pattern as given.
        pattern: String,
        /// The parser's complaint.
        reason: String,
    },
    /// Too long for the kernel's prefix table.
    #[error("watch path `{0}` is longer than {max} bytes", max = ROOT_KEY_LEN - 2)]
    TooLong(String),
    /// An explicitly requested path does not exist.
    #[error("watch path `{0}` does not exist")]
    Missing(String),
    /// An explicitly requested path exists but cannot be resolved or read.
    #[error("watch path `{path}` cannot be read: {reason}")]
    Unreadable {
        /// The path as given.
        path: String,
        /// The system's reason.
        reason: String,
    },
}

#[derive(Clone, Debug)]
enum Matcher {
    /// The path and everything below it.
    Tree,
    /// The path itself only.
    Exact,
    /// Direct children whose name matches.
    Children(GlobMatcher),
    /// A directory watched without recursion: itself and its direct children.
    Shallow(GlobMatcher),
}

#[derive(Clone, Debug)]
struct Rule {
    /// The pattern as given.
    pattern: String,
    /// Whether the path was missing when the set was made (watched for appearing).
    missing: bool,
    /// Spellings of the root (as given, and canonical if different).
    roots: Vec<Vec<u8>>,
    matcher: Matcher,
    /// For `Children` globs of the form `*LITERAL`: the literal, for the kernel.
    suffix: Option<Vec<u8>>,
}

/// What the caller knows about a path on disk (kept abstract for tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Does not exist.
    Missing,
    /// Exists (or may) but cannot be resolved: permission, a symlink loop, an I/O error.
    Unreadable(String),
    /// A directory, with its canonical path.
    Dir(PathBuf),
    /// Anything else, with its canonical path.
    File(PathBuf),
}

/// One place a scan of the disk starts, under its canonical spelling.
#[derive(Clone, Debug)]
pub enum ScanRoot {
    /// The path and everything below it.
    Tree(Vec<u8>),
    /// The path itself.
    Exact(Vec<u8>),
    /// The direct children of `dir` whose names match.
    Children {
        /// The directory.
        dir: Vec<u8>,
        /// The name pattern.
        glob: GlobMatcher,
    },
}

/// The roots of `new` that `old` does not have (a reload's additions), compared by
/// [`ScanRoot::describe`].
pub fn added_roots(old: &[ScanRoot], new: &[ScanRoot]) -> Vec<ScanRoot> {
    let before: std::collections::HashSet<String> = old.iter().map(ScanRoot::describe).collect();
    new.iter()
        .filter(|r| !before.contains(&r.describe()))
        .cloned()
        .collect()
}

impl ScanRoot {
    /// The path the root starts from (for [`Self::Children`], the directory).
    pub fn path(&self) -> &[u8] {
        match self {
            Self::Tree(p) | Self::Exact(p) => p,
            Self::Children { dir, .. } => dir,
        }
    }

    /// Whether scanning this root visits `path`.
    pub fn covers(&self, path: &[u8]) -> bool {
        match self {
            Self::Tree(p) => is_under(path, p),
            Self::Exact(p) => path == p.as_slice(),
            Self::Children { dir, glob } => is_matching_child(path, dir, glob),
        }
    }

    /// A stable text naming the root (kept in the baseline to notice newly watched roots).
    pub fn describe(&self) -> String {
        use crate::paths::render_bytes;
        match self {
            Self::Tree(p) => format!("tree:{}", render_bytes(p)),
            Self::Exact(p) => format!("exact:{}", render_bytes(p)),
            Self::Children { dir, glob } => {
                format!("children:{}:{}", render_bytes(dir), glob.glob().glob())
            }
        }
    }
}

/// Whether `path` is a direct child of `dir` whose name matches `glob`.
fn is_matching_child(path: &[u8], dir: &[u8], glob: &GlobMatcher) -> bool {
    let Some(slash) = path.iter().rposition(|&b| b == b'/') else {
        return false;
    };
    let parent: &[u8] = if slash == 0 { b"/" } else { &path[..slash] };
    let name = &path[slash + 1..];
    parent == dir && !name.is_empty() && glob.is_match(bytes_to_path(name))
}

/// Checks what can be checked of a pattern without the disk: absolute, short enough for
/// the kernel's table, wildcards only in the last component, and a glob that parses.
pub fn check_pattern(pattern: &str) -> Result<(), WatchError> {
    if !pattern.starts_with('/') {
        return Err(WatchError::NotAbsolute(pattern.to_owned()));
    }
    if pattern.len() > ROOT_KEY_LEN - 2 {
        return Err(WatchError::TooLong(pattern.to_owned()));
    }
    if has_wildcard(pattern) {
        let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", pattern));
        if has_wildcard(dir) {
            return Err(WatchError::GlobInDirectory(pattern.to_owned()));
        }
        glob_of(pattern, name)?;
    }
    Ok(())
}

/// A matcher for any name.
fn any_name() -> GlobMatcher {
    // `*` always parses.
    Glob::new("*").map_or_else(|_| unreachable!("`*` is a glob"), |g| g.compile_matcher())
}

fn glob_of(pattern: &str, name: &str) -> Result<Glob, WatchError> {
    Glob::new(name).map_err(|e| WatchError::BadGlob {
        pattern: pattern.to_owned(),
        reason: e.kind().to_string(),
    })
}

/// The set of watched paths.
#[derive(Clone, Debug)]
pub struct WatchSet {
    rules: Vec<Rule>,
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

impl WatchSet {
    /// Builds the set from patterns. `probe` reports what is on disk; `must_exist` turns a
    /// missing plain path into an error (for paths a user asked for explicitly; the defaults
    /// may name paths a host does not have, which are then watched for appearing).
    pub fn new(
        patterns: &[String],
        must_exist: bool,
        probe: impl Fn(&Path) -> Found,
    ) -> Result<Self, Vec<WatchError>> {
        let all: Vec<(String, bool)> = patterns.iter().map(|p| (p.clone(), true)).collect();
        Self::with_recursion(&all, must_exist, probe)
    }

    /// Like [`Self::new`], each pattern with whether a directory it names is watched
    /// recursively (`false`: the directory and its direct children only).
    pub fn with_recursion(
        patterns: &[(String, bool)],
        must_exist: bool,
        probe: impl Fn(&Path) -> Found,
    ) -> Result<Self, Vec<WatchError>> {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for (pattern, recursive) in patterns {
            match Self::rule(pattern, must_exist, &probe) {
                Ok(mut rule) => {
                    if !recursive && matches!(rule.matcher, Matcher::Tree) {
                        rule.matcher = Matcher::Shallow(any_name());
                    }
                    rules.push(rule);
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Self { rules })
        } else {
            Err(errors)
        }
    }

    fn rule(
        pattern: &str,
        must_exist: bool,
        probe: &impl Fn(&Path) -> Found,
    ) -> Result<Rule, WatchError> {
        check_pattern(pattern)?;
        let given = clean(pattern.as_bytes());
        let spellings = |p: &Path| -> Vec<Vec<u8>> {
            let given = clean(p.as_os_str().as_encoded_bytes());
            let mut out = vec![given.clone()];
            let canonical = match probe(p) {
                Found::Dir(c) | Found::File(c) => clean(c.as_os_str().as_encoded_bytes()),
                Found::Missing | Found::Unreadable(_) => given,
            };
            if !out.contains(&canonical) {
                out.push(canonical);
            }
            out
        };
        if has_wildcard(pattern) {
            let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", pattern));
            if has_wildcard(dir) {
                return Err(WatchError::GlobInDirectory(pattern.to_owned()));
            }
            let glob = glob_of(pattern, name)?;
            let suffix = name
                .strip_prefix('*')
                .filter(|rest| !has_wildcard(rest) && rest.len() <= SUFFIX_MAX)
                .map(|rest| rest.as_bytes().to_vec());
            let dir = if dir.is_empty() { "/" } else { dir };
            return Ok(Rule {
                pattern: pattern.to_owned(),
                missing: !matches!(probe(Path::new(dir)), Found::Dir(_)),
                roots: spellings(Path::new(dir)),
                matcher: Matcher::Children(glob.compile_matcher()),
                suffix,
            });
        }
        let path = bytes_to_path(&given);
        let found = probe(&path);
        let matcher = match &found {
            Found::Missing if must_exist => return Err(WatchError::Missing(pattern.to_owned())),
            Found::Unreadable(reason) if must_exist => {
                return Err(WatchError::Unreadable {
                    path: pattern.to_owned(),
                    reason: reason.clone(),
                });
            }
            Found::File(_) => Matcher::Exact,
            Found::Dir(_) | Found::Missing | Found::Unreadable(_) => Matcher::Tree,
        };
        Ok(Rule {
            pattern: pattern.to_owned(),
            missing: matches!(found, Found::Missing | Found::Unreadable(_)),
            roots: spellings(&path),
            matcher,
            suffix: None,
        })
    }

    /// Whether `path` is watched by any rule.
    pub fn matches(&self, path: &[u8]) -> bool {
        self.rules.iter().any(|r| {
            r.roots.iter().any(|root| match &r.matcher {
                Matcher::Tree => is_under(path, root),
                Matcher::Exact => path == root.as_slice(),
                Matcher::Children(glob) => is_matching_child(path, root, glob),
                Matcher::Shallow(any) => {
                    path == root.as_slice() || is_matching_child(path, root, any)
                }
            })
        })
    }

    /// How specifically the set names `path`, or `None` when it does not: the longest
    /// matching root, a file named exactly above a glob over its directory, and that above
    /// a directory tree (`/etc/passwd` over `/etc/*` over `/etc`).
    pub fn specificity(&self, path: &[u8]) -> Option<usize> {
        self.rules
            .iter()
            .flat_map(|r| r.roots.iter().map(move |root| (r, root)))
            .filter_map(|(r, root)| {
                let (hit, rank) = match &r.matcher {
                    Matcher::Tree => (is_under(path, root), 0),
                    Matcher::Exact => (path == root.as_slice(), 2),
                    Matcher::Children(glob) => (is_matching_child(path, root, glob), 1),
                    Matcher::Shallow(any) => (
                        path == root.as_slice() || is_matching_child(path, root, any),
                        1,
                    ),
                };
                hit.then_some(root.len() * 4 + rank)
            })
            .max()
    }

    /// Whether directory `path` matters to a sensor that follows directories by identity:
    /// it lies in a watched tree, or is (or leads to) the root of a rule (the directory of
    /// a glob, the parent of a watched file, the place a missing root may appear).
    pub fn dir_relevant(&self, path: &[u8]) -> bool {
        self.rules.iter().any(|r| {
            r.roots.iter().any(|root| {
                is_under(root, path) || (matches!(r.matcher, Matcher::Tree) && is_under(path, root))
            })
        })
    }

    /// The kernel's prefix table: one entry per distinct root spelling (key ends in `/`).
    pub fn kernel_roots(&self) -> Vec<(Vec<u8>, WatchRoot)> {
        let mut out: Vec<(Vec<u8>, WatchRoot)> = Vec::new();
        for rule in &self.rules {
            for root in &rule.roots {
                let mut key = root.clone();
                if key != b"/" {
                    key.push(b'/');
                }
                let (flags, suffix) = match &rule.matcher {
                    Matcher::Tree => (root_flags::SELF | root_flags::RECURSIVE, None),
                    Matcher::Exact => (root_flags::SELF, None),
                    Matcher::Children(_) => (root_flags::CHILDREN, rule.suffix.clone()),
                    Matcher::Shallow(_) => (root_flags::SELF | root_flags::CHILDREN, None),
                };
                match out.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, existing)) => {
                        let same_suffix = existing.suffix_len as usize
                            == suffix.as_ref().map_or(0, Vec::len)
                            && suffix
                                .as_deref()
                                .is_none_or(|s| existing.suffix[..s.len()] == *s);
                        // A second glob with another suffix, or a glob meeting a non-glob
                        // entry: the kernel cannot check one suffix, so it passes all.
                        if flags & root_flags::CHILDREN != 0
                            && (existing.flags & root_flags::CHILDREN == 0 || !same_suffix)
                        {
                            existing.suffix_len = 0;
                        }
                        existing.flags |= flags;
                    }
                    None => {
                        let mut v = WatchRoot {
                            root_len: key.len() as u32,
                            flags,
                            suffix_len: 0,
                            suffix: [0; SUFFIX_MAX],
                        };
                        if let Some(s) = suffix {
                            v.suffix[..s.len()].copy_from_slice(&s);
                            v.suffix_len = s.len() as u32;
                        }
                        out.push((key, v));
                    }
                }
            }
        }
        pass_below_recursive(&mut out);
        coarsen(out, MAX_WATCH_ROOTS as usize)
    }

    /// One line per pattern: how it is watched, under which spellings (`fim config check`).
    pub fn explain(&self) -> Vec<String> {
        use crate::paths::render_bytes;
        let mut out = Vec::new();
        for rule in &self.rules {
            let how = match (&rule.matcher, rule.missing) {
                (_, true) => "missing: watched for appearing".to_owned(),
                (Matcher::Tree, false) => "directory, with everything below it".to_owned(),
                (Matcher::Exact, false) => "file".to_owned(),
                (Matcher::Children(g), false) => format!("entries matching `{}`", g.glob()),
                (Matcher::Shallow(_), false) => {
                    "directory and its entries, not what is below them".to_owned()
                }
            };
            let also: Vec<String> = rule.roots.iter().skip(1).map(|r| render_bytes(r)).collect();
            let also = if also.is_empty() {
                String::new()
            } else {
                format!(" (also as {})", also.join(", "))
            };
            out.push(format!("{}: {how}{also}", rule.pattern));
        }
        out
    }

    /// What a scan of the disk must visit: each rule under its canonical spelling, without
    /// roots that lie inside a recursive root already listed.
    pub fn scan_roots(&self) -> Vec<ScanRoot> {
        let mut out: Vec<ScanRoot> = Vec::new();
        for rule in &self.rules {
            let Some(root) = rule.roots.last() else {
                continue;
            };
            match &rule.matcher {
                Matcher::Tree => out.push(ScanRoot::Tree(root.clone())),
                Matcher::Exact => out.push(ScanRoot::Exact(root.clone())),
                Matcher::Children(glob) => out.push(ScanRoot::Children {
                    dir: root.clone(),
                    glob: glob.clone(),
                }),
                Matcher::Shallow(any) => {
                    out.push(ScanRoot::Exact(root.clone()));
                    out.push(ScanRoot::Children {
                        dir: root.clone(),
                        glob: any.clone(),
                    });
                }
            }
        }
        let trees: Vec<Vec<u8>> = out
            .iter()
            .filter_map(|r| match r {
                ScanRoot::Tree(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        let mut kept: Vec<ScanRoot> = Vec::new();
        for r in out {
            let covered = match &r {
                ScanRoot::Tree(p) => trees.iter().any(|t| t != p && is_under(p, t)),
                ScanRoot::Exact(p) => trees.iter().any(|t| is_under(p, t)),
                ScanRoot::Children { dir, .. } => trees.iter().any(|t| is_under(dir, t)),
            };
            let duplicate = kept.iter().any(|k| match (k, &r) {
                (ScanRoot::Tree(a), ScanRoot::Tree(b))
                | (ScanRoot::Exact(a), ScanRoot::Exact(b)) => a == b,
                _ => false,
            });
            if !covered && !duplicate {
                kept.push(r);
            }
        }
        kept
    }

    /// The canonical spelling of a watched path: a path reported under a symlinked root
    /// (`/bin/ls`) is rewritten to the root's real location (`/usr/bin/ls`), so the
    /// baseline holds one entry per file.
    pub fn canonical(&self, path: &[u8]) -> Vec<u8> {
        for rule in &self.rules {
            let (Some(given), Some(real)) = (rule.roots.first(), rule.roots.last()) else {
                continue;
            };
            if given != real && is_under(path, given) {
                let mut out = real.clone();
                out.extend_from_slice(&path[given.len()..]);
                return out;
            }
        }
        path.to_vec()
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// The kernel uses only the longest matching prefix, so a root inside a recursive root
/// must itself pass everything below it.
fn pass_below_recursive(roots: &mut [(Vec<u8>, WatchRoot)]) {
    let recursive: Vec<Vec<u8>> = roots
        .iter()
        .filter(|(_, v)| v.flags & root_flags::RECURSIVE != 0)
        .map(|(k, _)| k.clone())
        .collect();
    for (key, value) in roots.iter_mut() {
        if recursive.iter().any(|r| key.starts_with(r) && r != key) {
            value.flags |= root_flags::RECURSIVE | root_flags::SELF;
        }
    }
}

/// The kernel's prefix table holds `cap` entries. A larger set is made coarser, never
/// narrower: every prefix is cut to its first `depth` components (the largest depth that
/// fits), and a cut prefix passes everything below it. The kernel then passes more than is
/// watched, and userspace, which matches every event against the exact set, drops the rest:
/// nothing watched is missed, and only the filter's cost grows.
fn coarsen(roots: Vec<(Vec<u8>, WatchRoot)>, cap: usize) -> Vec<(Vec<u8>, WatchRoot)> {
    if roots.len() <= cap {
        return roots;
    }
    let components = |key: &[u8]| key.iter().filter(|&&b| b == b'/').count().saturating_sub(1);
    let deepest = roots.iter().map(|(k, _)| components(k)).max().unwrap_or(0);
    for depth in (0..deepest).rev() {
        let mut out: Vec<(Vec<u8>, WatchRoot)> = Vec::new();
        for (key, root) in &roots {
            let (key, root) = if components(key) > depth {
                // The first `depth` components, with the slash that ends the last one.
                let end = key
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'/')
                    .nth(depth)
                    .map_or(key.len(), |(i, _)| i + 1);
                let all = WatchRoot {
                    root_len: end as u32,
                    flags: root_flags::SELF | root_flags::RECURSIVE | root_flags::CHILDREN,
                    suffix_len: 0,
                    suffix: [0; SUFFIX_MAX],
                };
                (key[..end].to_vec(), all)
            } else {
                (key.clone(), *root)
            };
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some((_, existing)) => {
                    existing.flags |= root.flags;
                    if existing.suffix_len != root.suffix_len
                        || existing.suffix[..existing.suffix_len as usize]
                            != root.suffix[..root.suffix_len as usize]
                    {
                        existing.suffix_len = 0;
                    }
                }
                None => out.push((key, root)),
            }
            if out.len() > cap {
                break;
            }
        }
        if out.len() <= cap {
            log::warn!(
                "{} watched prefixes exceed the kernel's table ({cap}): it holds {} prefixes of \
                 at most {depth} components, which pass more than is watched; userspace keeps \
                 only the watched paths",
                roots.len(),
                out.len()
            );
            pass_below_recursive(&mut out);
            return out;
        }
    }
    unreachable!("depth 0 leaves one prefix, `/`")
}

/// Probes the real file system.
pub fn probe_disk(path: &Path) -> Found {
    match std::fs::canonicalize(path) {
        Ok(c) if c.is_dir() => Found::Dir(c),
        Ok(c) => Found::File(c),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Found::Missing,
        Err(e) => Found::Unreadable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(path: &Path) -> Found {
        match path.to_str().unwrap_or_default() {
            "/bin" => Found::Dir("/usr/bin".into()),
            "/bin/login" => Found::File("/usr/bin/login".into()),
            "/etc" | "/usr/bin" | "/w" => Found::Dir(path.into()),
            "/etc/crontab" => Found::File(path.into()),
            _ => Found::Missing,
        }
    }

    fn set(patterns: &[&str]) -> WatchSet {
        let p: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        WatchSet::new(&p, false, fake).expect("valid")
    }

    #[test]
    fn tree_exact_and_glob_rules_match_like_their_kernel_entries() {
        let s = set(&["/w", "/etc/*.conf", "/etc/crontab", "/bin"]);
        assert!(s.matches(b"/w") && s.matches(b"/w/a/b"));
        assert!(!s.matches(b"/wx"));
        assert!(s.matches(b"/etc/host.conf"));
        assert!(!s.matches(b"/etc/sub/x.conf") && !s.matches(b"/etc/hosts"));
        assert!(s.matches(b"/etc/crontab") && !s.matches(b"/etc/crontab/x"));
        assert!(s.matches(b"/bin/ls") && s.matches(b"/usr/bin/ls"));
        for relevant in ["/", "/w", "/w/a/b", "/etc", "/usr", "/usr/bin/sub"] {
            assert!(s.dir_relevant(relevant.as_bytes()), "{relevant}");
        }
        for other in ["/wx", "/etc/sub", "/tmp", "/usr/lib"] {
            assert!(!s.dir_relevant(other.as_bytes()), "{other}");
        }

        let roots = s.kernel_roots();
        let get = |k: &str| {
            roots
                .iter()
                .find(|(key, _)| key == k.as_bytes())
                .map(|(_, v)| *v)
        };
        let etc = get("/etc/").expect("/etc/ entry");
        assert_eq!(etc.flags, root_flags::CHILDREN);
        assert_eq!(&etc.suffix[..etc.suffix_len as usize], b".conf");
        assert_eq!(
            get("/etc/crontab/").expect("crontab").flags,
            root_flags::SELF
        );
        assert!(get("/bin/").is_some() && get("/usr/bin/").is_some());
        assert_eq!(get("/w/").expect("w").root_len, 3);
    }

    #[test]
    fn roots_inside_recursive_roots_pass_everything() {
        let s = set(&["/", "/etc/*.conf"]);
        let roots = s.kernel_roots();
        let etc = roots.iter().find(|(k, _)| k == b"/etc/").expect("etc").1;
        assert_ne!(etc.flags & root_flags::RECURSIVE, 0);
        assert!(s.matches(b"/etc/a/b"));
    }

    #[test]
    fn two_globs_in_one_directory_drop_the_kernel_suffix() {
        let s = set(&["/etc/*.conf", "/etc/*.cfg"]);
        let etc = s
            .kernel_roots()
            .into_iter()
            .find(|(k, _)| k == b"/etc/")
            .expect("etc")
            .1;
        assert_eq!(etc.suffix_len, 0);
        assert!(s.matches(b"/etc/a.cfg") && s.matches(b"/etc/a.conf") && !s.matches(b"/etc/a.txt"));
    }

    #[test]
    fn scan_roots_are_canonical_and_not_nested() {
        let s = set(&[
            "/bin/login",
            "/bin",
            "/usr/bin",
            "/etc/*.conf",
            "/etc/crontab",
        ]);
        let roots: Vec<String> = s
            .scan_roots()
            .iter()
            .map(|r| match r {
                ScanRoot::Tree(p) => format!("tree {}", String::from_utf8_lossy(p)),
                ScanRoot::Exact(p) => format!("exact {}", String::from_utf8_lossy(p)),
                ScanRoot::Children { dir, .. } => {
                    format!("children {}", String::from_utf8_lossy(dir))
                }
            })
            .collect();
        assert_eq!(
            roots,
            vec!["tree /usr/bin", "children /etc", "exact /etc/crontab"]
        );
        assert_eq!(s.canonical(b"/bin/ls"), b"/usr/bin/ls");
        assert_eq!(s.canonical(b"/usr/bin/ls"), b"/usr/bin/ls");
        assert_eq!(s.canonical(b"/binary"), b"/binary");
    }

    #[test]
    fn bad_patterns_are_all_reported() {
        let p: Vec<String> = ["relative", "/a/*/b", "/nope"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let errs = WatchSet::new(&p, true, fake).expect_err("invalid");
        assert_eq!(
            errs,
            vec![
                WatchError::NotAbsolute("relative".into()),
                WatchError::GlobInDirectory("/a/*/b".into()),
                WatchError::Missing("/nope".into()),
            ]
        );
    }

    #[test]
    fn defaults_are_valid_on_any_host() {
        let p: Vec<String> = DEFAULT_WATCH.iter().map(|s| s.to_string()).collect();
        let s = WatchSet::new(&p, false, fake).expect("defaults");
        assert_eq!(s.len(), DEFAULT_WATCH.len());
        assert!(s.matches(b"/etc/cron.daily/logrotate") && s.matches(b"/boot/vmlinuz"));
    }

    fn all_dirs(path: &Path) -> Found {
        Found::Dir(path.into())
    }

    #[test]
    fn a_set_larger_than_the_kernel_table_is_coarsened_never_narrowed() {
        // 5,000 directories under /srv/a and /srv/b, plus a glob elsewhere.
        let mut p: Vec<String> = (0..5000)
            .map(|i| format!("/srv/{}/d{i:04}", if i % 2 == 0 { "a" } else { "b" }))
            .collect();
        p.push("/etc/*.conf".into());
        let s = WatchSet::new(&p, false, all_dirs).expect("valid");
        let roots = s.kernel_roots();
        assert!(roots.len() <= MAX_WATCH_ROOTS as usize);
        let keys: Vec<&[u8]> = roots.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, vec![&b"/srv/a/"[..], b"/srv/b/", b"/etc/"]);
        // The cut prefixes pass everything below them; the glob keeps its own filter.
        for (key, root) in &roots[..2] {
            assert_ne!(root.flags & root_flags::RECURSIVE, 0, "{key:?}");
        }
        assert_eq!(roots[2].1.flags, root_flags::CHILDREN);
        assert_eq!(
            &roots[2].1.suffix[..roots[2].1.suffix_len as usize],
            b".conf"
        );
        // Userspace still matches exactly.
        assert!(s.matches(b"/srv/a/d0000/x") && !s.matches(b"/srv/a/d0001/x"));
    }

    #[test]
    fn a_set_that_fits_is_not_coarsened() {
        let p: Vec<String> = (0..MAX_WATCH_ROOTS).map(|i| format!("/srv/d{i}")).collect();
        let s = WatchSet::new(&p, false, all_dirs).expect("valid");
        assert_eq!(s.kernel_roots().len(), MAX_WATCH_ROOTS as usize);
    }

    #[test]
    fn an_unreadable_path_is_not_called_missing() {
        let p = vec!["/loop".to_owned()];
        let err = WatchSet::new(&p, true, |_: &Path| {
            Found::Unreadable("Too many levels of symbolic links (os error 40)".into())
        })
        .expect_err("explicit and unreadable");
        assert_eq!(
            err[0].to_string(),
            "watch path `/loop` cannot be read: Too many levels of symbolic links (os error 40)"
        );
        // Not asked for explicitly: watched for appearing, like a missing default.
        let s = WatchSet::new(&p, false, |_: &Path| Found::Unreadable("EACCES".into()))
            .expect("defaults may be unreadable");
        assert_eq!(
            s.explain(),
            vec!["/loop: missing: watched for appearing".to_owned()]
        );
    }

    #[test]
    fn the_explanation_names_each_pattern_its_kind_and_spellings() {
        let s = set(&["/bin", "/etc/crontab", "/etc/*.conf", "/nope"]);
        assert_eq!(
            s.explain(),
            vec![
                "/bin: directory, with everything below it (also as /usr/bin)",
                "/etc/crontab: file",
                "/etc/*.conf: entries matching `*.conf`",
                "/nope: missing: watched for appearing",
            ]
        );
    }

    #[test]
    fn a_directory_without_recursion_is_itself_and_its_entries_and_a_listed_file_stays() {
        let p = vec![("/w".to_owned(), false), ("/w/sub/listed".to_owned(), true)];
        let s = WatchSet::with_recursion(&p, false, |path: &Path| {
            if path.ends_with("listed") {
                Found::File(path.into())
            } else {
                Found::Dir(path.into())
            }
        })
        .expect("valid");
        assert!(s.matches(b"/w") && s.matches(b"/w/f") && s.matches(b"/w/sub"));
        assert!(!s.matches(b"/w/sub/f") && s.matches(b"/w/sub/listed"));
        let roots = s.kernel_roots();
        assert_eq!(roots[0].0, b"/w/");
        assert_eq!(roots[0].1.flags, root_flags::SELF | root_flags::CHILDREN);
        assert_eq!(roots[0].1.suffix_len, 0);
        let scans: Vec<String> = s.scan_roots().iter().map(ScanRoot::describe).collect();
        assert_eq!(
            scans,
            vec!["exact:/w", "children:/w:*", "exact:/w/sub/listed"]
        );
        assert!(s.dir_relevant(b"/w") && !s.dir_relevant(b"/w/other"));
        assert_eq!(
            s.explain()[0],
            "/w: directory and its entries, not what is below them"
        );
    }
}
