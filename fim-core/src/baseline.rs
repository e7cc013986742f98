//! The baseline: the last known state of every watched file, in SQLite under the state
//! directory (`baseline.sqlite`).
//!
//! Why SQLite: one file, crash-safe (WAL), a B-tree keyed by the path bytes gives point
//! lookups and subtree ranges (rename of a directory) without holding the baseline in
//! memory, so the daemon stays small with a million entries; `sqlite3` lets an operator
//! inspect it. One writer at a time (daemon or `fim scan init`) holds `lock` in the state
//! directory; `fim scan check` only reads.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

use crate::attrs::{Attrs, Content, FileType, NotHashed, Snapshot};

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "baseline.sqlite";
const LOCK_FILE: &str = "lock";
const SCHEMA_VERSION: i64 = 1;

/// A baseline operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The state directory cannot be created or used.
    #[error("preparing state directory `{path}`: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another writer holds the baseline.
    #[error("baseline `{path}` is in use by another fim process{holder}")]
    Busy {
        /// The lock file.
        path: PathBuf,
        /// ` (pid N)` when known.
        holder: String,
    },
    /// No baseline exists yet (read-only access).
    #[error("no baseline at `{0}`: run `fim scan init` first")]
    Missing(PathBuf),
    /// Written by an incompatible version.
    #[error("baseline `{path}` has schema version {found}, this fim uses {SCHEMA_VERSION}")]
    Version {
        /// The database.
        path: PathBuf,
        /// The version found.
        found: i64,
    },
    /// SQLite failed.
    #[error("baseline database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The outbox's segments cannot be written or read.
    #[error("outbox `{path}`: {source}")]
    Outbox {
        /// Its directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Whether this handle may write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Exclusive writer (takes the lock).
    Write,
    /// Reader (no lock; sees the last committed state).
    Read,
}

/// An open baseline.
pub struct Baseline {
    pub(crate) conn: Connection,
    in_tx: bool,
    writes: u64,
    /// The outbox, for a writer ([`crate::outbox`]).
    pub(crate) outbox: Option<crate::outbox::Writer>,
    _lock: Option<File>,
}

const COLUMNS: &str = "path, ftype, size, mode, uid, gid, ino, dev_major, dev_minor, nlink, \
     mtime, ctime, target, acl_access, acl_default, capability, xattrs, sha256, note";

fn encode_xattrs(x: &BTreeMap<Vec<u8>, [u8; 32]>) -> Option<Vec<u8>> {
    if x.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for (name, digest) in x {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(digest);
    }
    Some(out)
}

fn decode_xattrs(raw: Option<Vec<u8>>) -> BTreeMap<Vec<u8>, [u8; 32]> {
    let mut out = BTreeMap::new();
    let Some(raw) = raw else { return out };
    let mut rest = &raw[..];
    while rest.len() >= 2 {
        let n = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        if rest.len() < 2 + n + 32 {
            break;
        }
        let mut d = [0u8; 32];
        d.copy_from_slice(&rest[2 + n..2 + n + 32]);
        out.insert(rest[2..2 + n].to_vec(), d);
        rest = &rest[2 + n + 32..];
    }
    out
}

fn encode_content(c: &Option<Content>) -> (Option<&[u8]>, Option<String>) {
    match c {
        None => (None, None),
        Some(Content::Sha256(d)) => (Some(&d[..]), None),
        Some(Content::NotHashed(n)) => (
            None,
            Some(match n {
                NotHashed::TooLarge { limit } => format!("too_large:{limit}"),
                NotHashed::Vanished => "vanished".to_owned(),
                NotHashed::Replaced => "replaced".to_owned(),
                NotHashed::Deferred => "deferred".to_owned(),
                NotHashed::Unreadable(e) => format!("unreadable:{e}"),
                NotHashed::ByRule => "by_rule".to_owned(),
            }),
        ),
    }
}

fn decode_content(sha: Option<Vec<u8>>, note: Option<String>) -> Option<Content> {
    if let Some(s) = sha.filter(|s| s.len() == 32) {
        let mut d = [0u8; 32];
        d.copy_from_slice(&s);
        return Some(Content::Sha256(d));
    }
    let note = note?;
    Some(Content::NotHashed(match note.split_once(':') {
        Some(("too_large", limit)) => NotHashed::TooLarge {
            limit: limit.parse().unwrap_or(0),
        },
        Some(("unreadable", e)) => NotHashed::Unreadable(e.to_owned()),
        _ if note == "vanished" => NotHashed::Vanished,
        _ if note == "replaced" => NotHashed::Replaced,
        _ if note == "by_rule" => NotHashed::ByRule,
        _ => NotHashed::Deferred,
    }))
}

fn row_to_entry(row: &Row<'_>) -> rusqlite::Result<(Vec<u8>, Snapshot)> {
    let path: Vec<u8> = row.get(0)?;
    let attrs = Attrs {
        file_type: FileType::from_code(row.get::<_, i64>(1)? as u8),
        size: row.get::<_, i64>(2)? as u64,
        mode: row.get::<_, i64>(3)? as u32,
        uid: row.get::<_, i64>(4)? as u32,
        gid: row.get::<_, i64>(5)? as u32,
        ino: row.get::<_, i64>(6)? as u64,
        dev_major: row.get::<_, i64>(7)? as u32,
        dev_minor: row.get::<_, i64>(8)? as u32,
        nlink: row.get::<_, i64>(9)? as u64,
        mtime_ns: row.get(10)?,
        ctime_ns: row.get(11)?,
        symlink_target: row.get(12)?,
        acl_access: row.get(13)?,
        acl_default: row.get(14)?,
        capability: row.get(15)?,
        xattrs: decode_xattrs(row.get(16)?),
    };
    let content = decode_content(row.get(17)?, row.get(18)?);
    Ok((
        path,
        Snapshot {
            attrs,
            content,
            package: None,
        },
    ))
}

/// The exclusive upper bound of the keys below directory `dir` (`dir/` .. `dir0`).
fn subtree_range(dir: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let base = if dir == b"/" { &b""[..] } else { dir };
    let mut lo = base.to_vec();
    lo.push(b'/');
    let mut hi = base.to_vec();
    hi.push(b'/' + 1);
    (lo, hi)
}

fn take_lock(dir: &Path) -> Result<File, BaselineError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| BaselineError::StateDir {
            path: path.clone(),
            source,
        })?;
    // An exclusive lock the operating system drops with the process (flock on Linux).
    if file.try_lock().is_err() {
        let holder = std::fs::read_to_string(&path)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .map(|pid| format!(" (pid {pid})"))
            .unwrap_or_default();
        return Err(BaselineError::Busy { path, holder });
    }
    let _ = file.set_len(0);
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

impl Baseline {
    /// Opens (creating for writers) the baseline in `state_dir`.
    pub fn open(state_dir: &Path, access: Access) -> Result<Self, BaselineError> {
        let db = state_dir.join(DB_FILE);
        let lock = match access {
            Access::Write => {
                std::fs::create_dir_all(state_dir).map_err(|source| BaselineError::StateDir {
                    path: state_dir.to_owned(),
                    source,
                })?;
                Some(take_lock(state_dir)?)
            }
            Access::Read => {
                if !db.exists() {
                    return Err(BaselineError::Missing(db));
                }
                None
            }
        };
        let flags = match access {
            Access::Write => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            Access::Read => OpenFlags::SQLITE_OPEN_READ_ONLY,
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&db, flags)?;
        // A small page cache keeps the daemon's memory flat whatever the baseline's size;
        // readers (scan workers) do point lookups and need even less.
        let cache_kib = match access {
            Access::Write => 4096,
            Access::Read => 1024,
        };
        conn.execute_batch(&format!(
            "PRAGMA cache_size = -{cache_kib}; PRAGMA temp.cache_size = -1024; \
             PRAGMA temp_store = FILE; PRAGMA busy_timeout = 5000;"
        ))?;
        if access == Access::Write {
            conn.execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
                 CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS entries (
                    path BLOB PRIMARY KEY, ftype INTEGER NOT NULL, size INTEGER NOT NULL,
                    mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
                    ino INTEGER NOT NULL, dev_major INTEGER NOT NULL, dev_minor INTEGER NOT NULL,
                    nlink INTEGER NOT NULL, mtime INTEGER NOT NULL, ctime INTEGER NOT NULL,
                    target BLOB, acl_access TEXT, acl_default TEXT, capability TEXT,
                    xattrs BLOB, sha256 BLOB, note TEXT) WITHOUT ROWID;
                 CREATE INDEX IF NOT EXISTS entries_by_inode ON entries (ino, dev_major, dev_minor);
                 CREATE TABLE IF NOT EXISTS registry (
                    root TEXT NOT NULL, path TEXT NOT NULL, state TEXT NOT NULL,
                    PRIMARY KEY (root, path)) WITHOUT ROWID;
                 INSERT OR IGNORE INTO meta VALUES ('schema', '{SCHEMA_VERSION}');
                 DROP TABLE IF EXISTS outbox;"
            ))?;
        }
        let found: i64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if found != SCHEMA_VERSION {
            return Err(BaselineError::Version { path: db, found });
        }
        // Scratch table of paths seen by the current scan (see `seen` / `unseen`).
        conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS seen (path BLOB PRIMARY KEY) WITHOUT ROWID;",
        )?;
        let mut baseline = Self {
            conn,
            in_tx: false,
            writes: 0,
            outbox: None,
            _lock: lock,
        };
        if access == Access::Write {
            baseline.open_outbox(state_dir)?;
        }
        Ok(baseline)
    }

    pub(crate) fn tx(&mut self) -> Result<(), BaselineError> {
        if !self.in_tx {
            self.conn.execute_batch("BEGIN")?;
            self.in_tx = true;
        }
        self.writes += 1;
        Ok(())
    }

    /// Whether changes wait for a commit.
    pub fn uncommitted(&self) -> bool {
        self.in_tx
    }

    /// Makes every change so far durable.
    pub fn commit(&mut self) -> Result<(), BaselineError> {
        if self.in_tx {
            self.flush_outbox()?;
            self.conn.execute_batch("COMMIT")?;
            self.in_tx = false;
        }
        self.writes = 0;
        Ok(())
    }

    /// Writes since the last commit.
    pub fn pending_writes(&self) -> u64 {
        self.writes
    }

    /// Commits when many writes are pending, so transactions stay short.
    pub fn commit_if_large(&mut self) -> Result<(), BaselineError> {
        if self.writes >= 4096 {
            self.writes = 0;
            self.commit()?;
        }
        Ok(())
    }

    /// The entry for `path`.
    pub fn get(&self, path: &[u8]) -> Result<Option<Snapshot>, BaselineError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM entries WHERE path = ?1"))?;
        Ok(stmt
            .query_row([path], row_to_entry)
            .optional()?
            .map(|(_, s)| s))
    }

    /// The paths whose entry is inode `ino` on device `major:minor`: the watched names of
    /// an object reached through another name (a hard link made outside the watched trees).
    pub fn paths_of_inode(
        &self,
        major: u32,
        minor: u32,
        ino: u64,
    ) -> Result<Vec<Vec<u8>>, BaselineError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT path FROM entries WHERE ino = ?1 AND dev_major = ?2 AND dev_minor = ?3",
        )?;
        let rows = stmt.query_map(
            rusqlite::params![ino as i64, i64::from(major), i64::from(minor)],
            |r| r.get::<_, Vec<u8>>(0),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Inserts or replaces the entry for `path`.
    pub fn put(&mut self, path: &[u8], s: &Snapshot) -> Result<(), BaselineError> {
        self.tx()?;
        let a = &s.attrs;
        let (sha, note) = encode_content(&s.content);
        let mut stmt = self.conn.prepare_cached(&format!(
            "INSERT OR REPLACE INTO entries ({COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
        ))?;
        stmt.execute(params![
            path,
            i64::from(a.file_type.code()),
            a.size as i64,
            i64::from(a.mode),
            i64::from(a.uid),
            i64::from(a.gid),
            a.ino as i64,
            i64::from(a.dev_major),
            i64::from(a.dev_minor),
            a.nlink as i64,
            a.mtime_ns,
            a.ctime_ns,
            a.symlink_target,
            a.acl_access,
            a.acl_default,
            a.capability,
            encode_xattrs(&a.xattrs),
            sha,
            note,
        ])?;
        Ok(())
    }

    /// Removes `path`, returning what it was.
    pub fn remove(&mut self, path: &[u8]) -> Result<Option<Snapshot>, BaselineError> {
        let old = self.get(path)?;
        if old.is_some() {
            self.tx()?;
            self.conn
                .prepare_cached("DELETE FROM entries WHERE path = ?1")?
                .execute([path])?;
        }
        Ok(old)
    }

    /// Removes every entry below directory `dir` (not `dir` itself); returns how many.
    pub fn remove_below(&mut self, dir: &[u8]) -> Result<usize, BaselineError> {
        self.tx()?;
        let (lo, hi) = subtree_range(dir);
        Ok(self
            .conn
            .prepare_cached("DELETE FROM entries WHERE path >= ?1 AND path < ?2")?
            .execute([lo, hi])?)
    }

    /// Moves the entries for `old` and everything below it to `new`, replacing what was
    /// there. Returns the entry `new` had before (the file a rename replaced).
    pub fn rename(&mut self, old: &[u8], new: &[u8]) -> Result<Option<Snapshot>, BaselineError> {
        let replaced = self.remove(new)?;
        self.remove_below(new)?;
        if let Some(s) = self.remove(old)? {
            self.put(new, &s)?;
        }
        self.move_below(old, new)?;
        Ok(replaced)
    }

    /// Swaps `a` and `b` (and their subtrees), as `RENAME_EXCHANGE` does.
    pub fn exchange(&mut self, a: &[u8], b: &[u8]) -> Result<(), BaselineError> {
        let mut tmp = a.to_vec();
        tmp.extend_from_slice(b"\0fim-exchange");
        self.rename(a, &tmp)?;
        self.rename(b, a)?;
        self.rename(&tmp, b)?;
        Ok(())
    }

    fn move_below(&mut self, old: &[u8], new: &[u8]) -> Result<(), BaselineError> {
        let (lo, hi) = subtree_range(old);
        let (new_lo, _) = subtree_range(new);
        let moved: Vec<(Vec<u8>, Snapshot)> = {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM entries WHERE path >= ?1 AND path < ?2"
            ))?;
            stmt.query_map([&lo, &hi], row_to_entry)?
                .collect::<Result<_, _>>()?
        };
        if moved.is_empty() {
            return Ok(());
        }
        self.tx()?;
        self.conn
            .prepare_cached("DELETE FROM entries WHERE path >= ?1 AND path < ?2")?
            .execute([&lo, &hi])?;
        for (path, s) in moved {
            let mut p = new_lo.clone();
            p.extend_from_slice(&path[lo.len()..]);
            self.put(&p, &s)?;
        }
        Ok(())
    }

    /// Starts a scan: forgets which paths earlier scans saw.
    pub fn scan_begin(&mut self) -> Result<(), BaselineError> {
        self.conn.execute_batch("DELETE FROM temp.seen")?;
        Ok(())
    }

    /// Records that the current scan saw `path`.
    pub fn seen(&mut self, path: &[u8]) -> Result<(), BaselineError> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO temp.seen VALUES (?1)")?
            .execute([path])?;
        Ok(())
    }

    /// Up to `limit` entries the current scan did not see, with paths after `after`
    /// (pass `b""` first, then the last path returned), in path order.
    pub fn unseen(
        &self,
        after: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Snapshot)>, BaselineError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM entries WHERE path > ?1 \
             AND path NOT IN (SELECT path FROM temp.seen) ORDER BY path LIMIT ?2"
        ))?;
        Ok(stmt
            .query_map(params![after, limit as i64], row_to_entry)?
            .collect::<Result<_, _>>()?)
    }

    /// Number of entries.
    pub fn len(&self) -> Result<u64, BaselineError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM entries", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    /// Whether the baseline has no entries.
    pub fn is_empty(&self) -> Result<bool, BaselineError> {
        Ok(self.len()? == 0)
    }

    /// Deletes every entry (for `fim scan init`).
    pub fn clear(&mut self) -> Result<(), BaselineError> {
        self.tx()?;
        self.conn.execute_batch("DELETE FROM entries")?;
        Ok(())
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<String>, BaselineError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets a metadata value.
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), BaselineError> {
        self.tx()?;
        self.conn
            .execute("INSERT OR REPLACE INTO meta VALUES (?1, ?2)", [key, value])?;
        Ok(())
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        if let Err(e) = self.commit() {
            log::error!("committing the baseline at exit: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::Attrs;

    fn snap(size: u64) -> Snapshot {
        Snapshot {
            attrs: Attrs {
                file_type: FileType::File,
                size,
                mode: 0o4755,
                uid: 1,
                gid: 2,
                ino: u64::MAX,
                dev_major: 259,
                dev_minor: 3,
                nlink: 1,
                mtime_ns: -5,
                ctime_ns: 1_700_000_000_123_456_789,
                symlink_target: Some(b"t\xff".to_vec()),
                acl_access: Some("user::rw-".into()),
                acl_default: None,
                capability: Some("permitted=0x1,inheritable=0x0".into()),
                xattrs: [(b"user.a".to_vec(), [3; 32])].into_iter().collect(),
            },
            content: Some(Content::Sha256([7; 32])),
            package: None,
        }
    }

    #[test]
    fn entries_are_found_by_inode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Baseline::open(dir.path(), Access::Write).expect("open");
        let mut s = snap(1);
        s.attrs.ino = 77;
        b.put(b"/w/a", &s).expect("put");
        b.put(b"/w/b", &s).expect("put");
        b.put(b"/w/c", &snap(1)).expect("put");
        b.commit().expect("commit");
        let mut found = b
            .paths_of_inode(s.attrs.dev_major, s.attrs.dev_minor, 77)
            .expect("lookup");
        found.sort();
        assert_eq!(found, vec![b"/w/a".to_vec(), b"/w/b".to_vec()]);
        assert!(
            b.paths_of_inode(s.attrs.dev_major + 1, s.attrs.dev_minor, 77)
                .expect("lookup")
                .is_empty(),
            "same inode number on another device"
        );
    }

    #[test]
    fn round_trip_rename_subtree_and_unseen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Baseline::open(dir.path(), Access::Write).expect("open");
        b.put(b"/d/a", &snap(1)).expect("put");
        b.put(b"/d/sub/x", &snap(2)).expect("put");
        b.put(b"/d-other", &snap(3)).expect("put");
        b.put(b"/e", &snap(4)).expect("put");
        assert_eq!(b.get(b"/d/a").expect("get"), Some(snap(1)));

        let replaced = b.rename(b"/d", b"/e").expect("rename");
        assert_eq!(replaced, Some(snap(4)));
        assert_eq!(b.get(b"/e/sub/x").expect("get"), Some(snap(2)));
        assert_eq!(b.get(b"/d/a").expect("get"), None);
        assert_eq!(b.get(b"/d-other").expect("get"), Some(snap(3)));

        b.exchange(b"/e/a", b"/d-other").expect("exchange");
        assert_eq!(b.get(b"/e/a").expect("get"), Some(snap(3)));
        assert_eq!(b.get(b"/d-other").expect("get"), Some(snap(1)));

        b.scan_begin().expect("scan");
        b.seen(b"/e/a").expect("seen");
        let unseen: Vec<Vec<u8>> = b
            .unseen(b"", 10)
            .expect("unseen")
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(unseen, vec![b"/d-other".to_vec(), b"/e/sub/x".to_vec()]);
        b.commit().expect("commit");
        assert_eq!(b.len().expect("len"), 3);
    }

    #[test]
    fn second_writer_is_refused_and_reader_needs_a_baseline() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            Baseline::open(dir.path(), Access::Read),
            Err(BaselineError::Missing(_))
        ));
        let _first = Baseline::open(dir.path(), Access::Write).expect("open");
        let err = Baseline::open(dir.path(), Access::Write)
            .err()
            .expect("second writer refused");
        assert!(
            err.to_string().contains("in use by another fim process"),
            "{err}"
        );
        let reader = Baseline::open(dir.path(), Access::Read).expect("reader");
        assert!(reader.is_empty().expect("len"));
    }
}
