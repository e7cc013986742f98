//! Files watched by reading them (the Windows build): each listed file's size, times,
//! SHA-256 and ACL (owner and DACL, as SDDL in `acl_access`), compared with the baseline
//! entry the last read left. Created, deleted and changed files are reported as `added`,
//! `removed` and `changed` file events with before and after, like a Linux rescan's.
//!
//! As for registry keys: a file fim never read is recorded without an event (the first
//! start sets the baseline), and what changed while fim was stopped is reported at the
//! first poll. Reading the disk is behind [`FileReader`], so this is platform-free.

use std::sync::Arc;

use log::warn;

use crate::{
    attrs::{Attrs, FileType, Snapshot, diff},
    baseline::{Baseline, BaselineError},
    config::FileRule,
    event::{Action, FileEvent, Integrity, Origin, PathSource, ReportedPath},
    registry::poll::matched,
    rules::Matched,
};

/// The `fim.sensor` of these events.
pub const SENSOR: &str = "file-poll";

/// What the poll needs of the disk.
pub trait FileReader {
    /// The file's state now; `Ok(None)`: it does not exist. `Err` says why it could not
    /// be read (its last known state is then kept).
    fn snapshot(&mut self, path: &str) -> Result<Option<Snapshot>, String>;
}

/// A regular file's attributes as Windows gives them: size, modification and change times
/// (ns since the Unix epoch), link count and ACL (SDDL); the Unix-only ones zero.
pub fn windows_attrs(
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    nlink: u64,
    acl: Option<String>,
) -> Attrs {
    Attrs {
        file_type: FileType::File,
        size,
        mode: 0,
        uid: 0,
        gid: 0,
        ino: 0,
        dev_major: 0,
        dev_minor: 0,
        nlink,
        mtime_ns,
        ctime_ns,
        symlink_target: None,
        acl_access: acl,
        acl_default: None,
        capability: None,
        xattrs: Default::default(),
    }
}

/// One watched file.
#[derive(Debug)]
pub struct WatchedFile {
    /// Its absolute path.
    pub path: String,
    /// What its events carry.
    pub rule: Arc<Matched>,
    last: Option<Snapshot>,
    known: bool,
}

/// Every watched file with what the last poll found.
#[derive(Debug, Default)]
pub struct FilePoller {
    /// The files, in configuration order.
    pub files: Vec<WatchedFile>,
}

fn meta_key(path: &str) -> String {
    format!("file:{path}")
}

impl FilePoller {
    /// The files of `rules`, with their baseline entries.
    pub fn load(rules: &[FileRule], baseline: &Baseline) -> Result<Self, BaselineError> {
        let mut files: Vec<WatchedFile> = Vec::new();
        for rule in rules {
            let m = matched(
                &rule.name,
                rule.id.as_deref(),
                rule.severity,
                &rule.techniques,
                &rule.tags,
            );
            for path in &rule.paths {
                if files.iter().any(|f| f.path.eq_ignore_ascii_case(path)) {
                    continue;
                }
                files.push(WatchedFile {
                    path: path.clone(),
                    rule: m.clone(),
                    last: baseline.get(path.as_bytes())?,
                    known: baseline.meta(&meta_key(path))?.is_some(),
                });
            }
        }
        Ok(Self { files })
    }

    /// Reads the files `which` selects, writes what changed into `baseline`'s open
    /// transaction and returns the events, each with its rule.
    pub fn poll<R: FileReader>(
        &mut self,
        reader: &mut R,
        which: impl Fn(&str) -> bool,
        origin: Origin,
        baseline: &mut Baseline,
    ) -> Result<Vec<(FileEvent, Arc<Matched>)>, BaselineError> {
        let mut out = Vec::new();
        for f in &mut self.files {
            if !which(&f.path) {
                continue;
            }
            let now = match reader.snapshot(&f.path) {
                // An ACL that could not be read keeps the last one known.
                Ok(Some(mut s)) if s.attrs.acl_access.is_none() => {
                    s.attrs.acl_access = f.last.as_ref().and_then(|l| l.attrs.acl_access.clone());
                    Some(s)
                }
                Ok(s) => s,
                Err(e) => {
                    warn!(
                        "files: reading {}: {e}: its last known state is kept",
                        f.path
                    );
                    continue;
                }
            };
            let action = match (&f.last, &now) {
                (None, Some(_)) => Some(Action::Added),
                (Some(_), None) => Some(Action::Removed),
                (Some(b), Some(a)) if b != a => Some(Action::Changed),
                _ => None,
            };
            let changed = match (&f.last, &now) {
                (Some(b), Some(a)) => diff(b, a),
                _ => Vec::new(),
            };
            if let Some(action) = action.filter(|_| f.known) {
                let mut ev = FileEvent::new(
                    action,
                    ReportedPath::new(f.path.clone().into_bytes(), PathSource::Scan),
                    SENSOR,
                );
                ev.integrity = Some(Box::new(Integrity {
                    before: f.last.clone(),
                    after: now.clone(),
                    changed,
                    ..Integrity::unobserved(origin, None)
                }));
                out.push((ev, f.rule.clone()));
            }
            if !f.known {
                baseline.set_meta(&meta_key(&f.path), "1")?;
            }
            if action.is_some() {
                match &now {
                    Some(s) => baseline.put(f.path.as_bytes(), s)?,
                    None => {
                        baseline.remove(f.path.as_bytes())?;
                    }
                }
            }
            f.last = now;
            f.known = true;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        attrs::{Attr, Content},
        baseline::Access,
        config::Severity,
    };

    #[derive(Default)]
    struct FakeDisk(BTreeMap<String, Result<Snapshot, String>>);

    impl FileReader for FakeDisk {
        fn snapshot(&mut self, path: &str) -> Result<Option<Snapshot>, String> {
            self.0.get(path).cloned().transpose()
        }
    }

    fn file(size: u64, acl: &str, digest: u8) -> Snapshot {
        Snapshot {
            attrs: windows_attrs(size, 0, 0, 1, Some(acl.into())),
            content: Some(Content::Sha256([digest; 32])),
            package: None,
        }
    }

    const WIN_INI: &str = "C:\\Windows\\win.ini";
    const AUTOEXEC: &str = "C:\\autoexec.bat";

    fn rules() -> Vec<FileRule> {
        vec![FileRule {
            name: "windows-files".into(),
            id: None,
            paths: vec![
                WIN_INI.into(),
                AUTOEXEC.into(),
                "c:\\WINDOWS\\win.ini".into(),
            ],
            severity: Severity::High,
            techniques: Vec::new(),
            tags: Vec::new(),
        }]
    }

    #[test]
    fn created_deleted_and_changed_files_are_reported_after_the_first_poll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut disk = FakeDisk::default();
        disk.0
            .insert(WIN_INI.into(), Ok(file(10, "O:BAD:(A;;FA;;;SY)", 1)));
        {
            let mut b = Baseline::open(dir.path(), Access::Write).expect("open");
            let mut p = FilePoller::load(&rules(), &b).expect("load");
            assert_eq!(p.files.len(), 2, "one path spelled twice is watched once");
            let events = p
                .poll(&mut disk, |_| true, Origin::Start, &mut b)
                .expect("poll");
            assert!(events.is_empty());
            b.commit().expect("commit");
        }
        // While stopped: the ACL and content change, autoexec.bat appears.
        disk.0
            .insert(WIN_INI.into(), Ok(file(12, "O:BAD:(A;;FA;;;WD)", 2)));
        disk.0.insert(AUTOEXEC.into(), Ok(file(3, "O:BA", 3)));
        let mut b = Baseline::open(dir.path(), Access::Write).expect("reopen");
        let mut p = FilePoller::load(&rules(), &b).expect("load");
        let events = p
            .poll(&mut disk, |_| true, Origin::Start, &mut b)
            .expect("poll");
        let seen: Vec<(Action, &[u8], Vec<Attr>)> = events
            .iter()
            .map(|(e, _)| {
                (
                    e.action,
                    e.path.bytes.as_slice(),
                    e.integrity.as_ref().expect("integrity").changed.clone(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    Action::Changed,
                    WIN_INI.as_bytes(),
                    vec![Attr::Size, Attr::AclAccess, Attr::Sha256]
                ),
                (Action::Added, AUTOEXEC.as_bytes(), vec![]),
            ]
        );
        assert_eq!(events[0].1.rules[0].0, "windows-files");
        // An ACL that cannot be read is not a change.
        let mut no_acl = file(12, "", 2);
        no_acl.attrs.acl_access = None;
        disk.0.insert(WIN_INI.into(), Ok(no_acl));
        let events = p
            .poll(&mut disk, |p| p == WIN_INI, Origin::Rescan, &mut b)
            .expect("poll");
        assert!(events.is_empty(), "{events:?}");
        // An unreadable file keeps its state; a deleted one is reported.
        disk.0
            .insert(WIN_INI.into(), Err("sharing violation".into()));
        disk.0.remove(AUTOEXEC);
        let events = p
            .poll(&mut disk, |_| true, Origin::Rescan, &mut b)
            .expect("poll");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0.action, Action::Removed);
        assert_eq!(b.get(AUTOEXEC.as_bytes()).expect("get"), None);
        assert!(b.get(WIN_INI.as_bytes()).expect("get").is_some());
    }
}
