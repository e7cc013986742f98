//! The outbox: every reported event, rendered once, kept in the baseline's database until
//! every sink has it.
//!
//! The integrity engine appends an event to the outbox in the same transaction as the
//! baseline change it reports, and hands it to the sinks only once that transaction is
//! committed. So a crash at any point either loses both (the next start's scan finds the
//! change and reports it) or keeps both (the sinks deliver the event from the outbox after
//! the restart, with the same `event.id`): the baseline never knows a change its sinks
//! cannot tell. Each sink keeps a cursor, the last sequence it delivered; a sink that falls
//! behind (its receiver is down) reads what it missed from here, in order, and the rows
//! every sink has are pruned. A sink's share is capped ([`Baseline::spool_floor`]): past
//! the cap its oldest rows go, and the sink reports the hole as a gap.

use std::{borrow::Cow, path::Path};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::{
    baseline::{Baseline, BaselineError, DB_FILE},
    ecs::{Reporter, write_ecs},
    event::Stamped,
    wire::syslog::severity_of,
};

/// The outbox's table, created with the baseline's. `end_bytes` (where each row's document
/// ends, counting every document appended) grows with `seq`, so a cap is found by a binary
/// search on the key rather than by an index that every append would pay for.
pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY, id BLOB NOT NULL, time INTEGER NOT NULL,
        action TEXT NOT NULL, severity INTEGER NOT NULL, doc BLOB NOT NULL,
        end_bytes INTEGER NOT NULL, cef BLOB);";

/// The metadata key of the last sequence handed out (it outlives pruned rows).
const SEQUENCE_KEY: &str = "sequence";

/// One reported event as every sink takes it: its ECS document, rendered once, and the
/// few facts a wire format puts beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// `event.sequence`.
    pub sequence: u64,
    /// `event.id`.
    pub id: uuid::Uuid,
    /// When it happened, in ns since the Unix epoch.
    pub time_unix_ns: i128,
    /// `event.action`.
    pub action: Cow<'static, str>,
    /// Its syslog severity (0..=7, [`severity_of`]).
    pub severity: u8,
    /// The ECS document, one line of JSON without the newline.
    pub doc: Box<[u8]>,
    /// Its CEF line, rendered once for every sink that sends CEF (`None`: none does).
    pub cef: Option<Box<[u8]>>,
}

impl Record {
    /// `ev`, rendered as `by` reports it.
    pub fn render(ev: &Stamped, by: &Reporter) -> serde_json::Result<Self> {
        thread_local! {
            /// Where documents are written before they get their own, exact allocation.
            static SCRATCH: std::cell::RefCell<Vec<u8>> =
                std::cell::RefCell::new(Vec::with_capacity(4096));
        }
        let doc = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            write_ecs(&mut *scratch, ev, by).map(|()| Box::<[u8]>::from(&scratch[..]))
        })?;
        Ok(Self {
            sequence: ev.stamp.sequence,
            id: ev.stamp.id,
            time_unix_ns: ev.event.time_unix_ns(),
            action: Cow::Borrowed(ev.event.action().as_str()),
            severity: severity_of(ev),
            doc,
            cef: None,
        })
    }

    /// Adds its CEF line ([`crate::wire::cef`]), for the sinks that send CEF.
    pub fn add_cef(&mut self) -> serde_json::Result<()> {
        let line = crate::wire::cef::from_json_at(&self.doc, self.time_unix_ns)?;
        self.cef = Some(line.into_bytes().into_boxed_slice());
        Ok(())
    }

    /// The record with its CEF line.
    pub fn with_cef(mut self) -> serde_json::Result<Self> {
        self.add_cef()?;
        Ok(self)
    }

    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        let id: Vec<u8> = row.get(1)?;
        Ok(Self {
            sequence: row.get::<_, i64>(0)? as u64,
            id: uuid::Uuid::from_slice(&id).unwrap_or_default(),
            time_unix_ns: i128::from(row.get::<_, i64>(2)?),
            action: Cow::Owned(row.get(3)?),
            severity: row.get::<_, i64>(4)? as u8,
            doc: row.get::<_, Vec<u8>>(5)?.into_boxed_slice(),
            cef: row.get::<_, Option<Vec<u8>>>(6)?.map(Vec::into_boxed_slice),
        })
    }
}

impl Baseline {
    /// Appends `records` (in sequence order) to the outbox, in the transaction that holds
    /// the baseline changes they report; the last sequence is kept with them.
    pub fn append_outbox(&mut self, records: &[Record]) -> Result<(), BaselineError> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        self.tx()?;
        let mut end = self.outbox_end()?;
        {
            let mut insert = self.conn.prepare_cached(
                "INSERT OR REPLACE INTO outbox (seq, id, time, action, severity, doc, end_bytes, cef)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for r in records {
                end += r.doc.len() as i64;
                insert.execute(params![
                    r.sequence as i64,
                    r.id.as_bytes().as_slice(),
                    r.time_unix_ns
                        .clamp(i128::from(i64::MIN), i128::from(i64::MAX))
                        as i64,
                    r.action.as_ref(),
                    i64::from(r.severity),
                    &*r.doc,
                    end,
                    r.cef.as_deref(),
                ])?;
            }
        }
        self.outbox_end = Some(end);
        self.conn.execute(
            "INSERT OR REPLACE INTO meta VALUES (?1, ?2)",
            params![SEQUENCE_KEY, last.sequence.to_string()],
        )?;
        Ok(())
    }

    /// The payload bytes appended to the outbox since it was created (pruning does not
    /// lower it): the offset its next row starts at.
    fn outbox_end(&mut self) -> Result<i64, BaselineError> {
        if let Some(end) = self.outbox_end {
            return Ok(end);
        }
        let end: Option<i64> = self
            .conn
            .query_row(
                "SELECT end_bytes FROM outbox ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let end = end.unwrap_or(0);
        self.outbox_end = Some(end);
        Ok(end)
    }

    /// The last sequence handed out (0: none yet).
    pub fn last_sequence(&self) -> Result<u64, BaselineError> {
        Ok(self
            .meta(SEQUENCE_KEY)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// For a sink that may hold at most `cap` bytes of events: the last sequence it must
    /// let go for what follows to fit (`None`: everything fits).
    pub fn spool_floor(&mut self, cap: u64) -> Result<Option<u64>, BaselineError> {
        let end = self.outbox_end()?;
        let keep_from = end.saturating_sub(i64::try_from(cap).unwrap_or(i64::MAX));
        if keep_from <= 0 {
            return Ok(None);
        }
        let bounds: (Option<i64>, Option<i64>) =
            self.conn
                .query_row("SELECT MIN(seq), MAX(seq) FROM outbox", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
        let (Some(mut lo), Some(mut hi)) = bounds else {
            return Ok(None);
        };
        let mut probe = self.conn.prepare_cached(
            "SELECT seq, end_bytes FROM outbox WHERE seq >= ?1 ORDER BY seq LIMIT 1",
        )?;
        let mut at = |seq: i64| -> Result<(i64, i64), BaselineError> {
            Ok(probe.query_row([seq], |r| Ok((r.get(0)?, r.get(1)?)))?)
        };
        if at(lo)?.1 > keep_from {
            return Ok(None);
        }
        // The last row ending at or before `keep_from`: `lo` always is one.
        while lo < hi {
            let mid = lo + (hi - lo + 1) / 2;
            let (seq, end) = at(mid)?;
            if end <= keep_from {
                lo = seq;
            } else {
                hi = mid - 1;
            }
        }
        Ok(Some(lo as u64))
    }

    /// Removes the rows up to `sequence` (every sink has them, or gave them up).
    pub fn prune_outbox(&mut self, sequence: u64) -> Result<usize, BaselineError> {
        self.tx()?;
        Ok(self.conn.execute(
            "DELETE FROM outbox WHERE seq <= ?1",
            [i64::try_from(sequence).unwrap_or(i64::MAX)],
        )?)
    }
}

/// A sink's read-only view of the outbox.
pub struct OutboxReader {
    conn: Connection,
}

impl OutboxReader {
    /// Opens the outbox of the baseline in `state_dir`, which a writer created.
    pub fn open(state_dir: &Path) -> Result<Self, BaselineError> {
        let db = state_dir.join(DB_FILE);
        if !db.exists() {
            return Err(BaselineError::Missing(db));
        }
        let conn = Connection::open_with_flags(
            &db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch("PRAGMA cache_size = -1024; PRAGMA busy_timeout = 5000;")?;
        Ok(Self { conn })
    }

    /// The last sequence the writer handed out and committed (0: none yet).
    pub fn last_sequence(&self) -> Result<u64, BaselineError> {
        let value: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [SEQUENCE_KEY],
                |r| r.get(0),
            )
            .optional()?;
        Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// The rows after `after` up to `upto` (both sequences), at most `limit`, in order.
    /// A row missing from the start (pruned) is missing from the answer.
    pub fn read(&self, after: u64, upto: u64, limit: usize) -> Result<Vec<Record>, BaselineError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, id, time, action, severity, doc, cef FROM outbox
             WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![
                i64::try_from(after).unwrap_or(i64::MAX),
                i64::try_from(upto).unwrap_or(i64::MAX),
                limit as i64
            ],
            Record::from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        baseline::Access,
        event::{Action, FileEvent, PathSource, ReportedPath, Stamper},
    };

    fn records(stamper: &mut Stamper, n: usize) -> Vec<Record> {
        let by = Reporter::new("h".into(), None);
        (0..n)
            .map(|i| {
                let ev = FileEvent::new(
                    Action::Create,
                    ReportedPath::new(format!("/w/{i}").into_bytes(), PathSource::Scan),
                    "test",
                );
                Record::render(&stamper.stamp(ev), &by).expect("renders")
            })
            .collect()
    }

    #[test]
    fn what_is_committed_is_read_back_whole_in_order_and_the_numbering_survives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut stamper = Stamper::default();
        let written = records(&mut stamper, 5);
        {
            let mut b = Baseline::open(dir.path(), Access::Write).expect("open");
            b.append_outbox(&written[..3]).expect("append");
            b.commit().expect("commit");
            // Appended but never committed: a crash takes it away, number and all.
            b.append_outbox(&written[3..]).expect("append");
            std::mem::forget(b);
        }
        let reader = OutboxReader::open(dir.path()).expect("reader");
        assert_eq!(reader.read(0, u64::MAX, 100).expect("read"), written[..3]);
        assert_eq!(reader.read(1, 2, 100).expect("read"), written[1..2]);
    }

    #[test]
    fn the_cap_names_the_oldest_rows_to_let_go_and_pruning_keeps_the_numbering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut stamper = Stamper::default();
        let written = records(&mut stamper, 10);
        let mut b = Baseline::open(dir.path(), Access::Write).expect("open");
        b.append_outbox(&written).expect("append");
        b.commit().expect("commit");
        let each = written[0].doc.len() as u64;
        assert_eq!(b.spool_floor(100 * each).expect("floor"), None);
        // Room for about three: the first seven go (documents differ by a digit or two).
        let floor = b.spool_floor(3 * each).expect("floor").expect("over");
        assert!((6..=8).contains(&floor), "{floor}");
        assert_eq!(b.prune_outbox(floor).expect("prune"), floor as usize);
        b.commit().expect("commit");
        assert_eq!(b.last_sequence().expect("sequence"), 10);
        let reader = OutboxReader::open(dir.path()).expect("reader");
        let left = reader.read(0, u64::MAX, 100).expect("read");
        assert_eq!(left.first().map(|r| r.sequence), Some(floor + 1));
        assert_eq!(left.last().map(|r| r.sequence), Some(10));
    }
}
