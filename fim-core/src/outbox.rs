//! The outbox: every reported event, rendered once, kept on disk until every sink has it.
//!
//! The integrity engine hands the outbox each event in the transaction that records the
//! baseline change it reports, and the sinks get it only once that transaction is
//! committed. The events go into append-only segment files under `STATE_DIR/outbox/`, one
//! `write` per commit, made just before the baseline's commit; the transaction records the
//! last sequence handed out and where the committed bytes end. So a crash at any point
//! either loses both (what a segment holds past the recorded end is cut at the next start,
//! and that start's scan finds the change and reports it) or keeps both (the sinks deliver
//! the event from the outbox after the restart, with the same `event.id`): the baseline
//! never knows a change its sinks cannot tell. Both survive what the baseline survives: a
//! process crash; a power loss may take the last commits of either.
//!
//! Each sink keeps a cursor, the last sequence it delivered; a sink that falls behind (its
//! receiver is down) reads what it missed from here, in order ([`OutboxReader`]), and the
//! segments every sink has are deleted. A sink's share is capped ([`Baseline::spool_floor`]):
//! past the cap its oldest segments go, and the sink reports the hole as a gap.
//!
//! A segment is named by the first sequence it holds (`00000000000000000001.seg`) and is a
//! run of frames, each one record: `len u32` (the whole frame's), `version u8`,
//! `sequence u64`, `id [u8; 16]`, `time i64` (ns), `severity u8`, `action_len u8`,
//! `doc_len u32`, `cef_len u32` (`u32::MAX`: none), then the action, document and CEF
//! bytes; integers little-endian.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    fs::{File, OpenOptions},
    path::{Path, PathBuf},
};

use rusqlite::params;

use crate::{
    baseline::{Access, Baseline, BaselineError},
    ecs::{Reporter, write_ecs},
    event::Stamped,
    wire::syslog::severity_of,
};

/// The directory of the segments, under the state directory.
pub const OUTBOX_DIR: &str = "outbox";
/// A segment is closed, and the next one started, once it holds this many bytes: the
/// granularity of pruning and of the cap.
pub const SEGMENT_SIZE: u64 = 4 << 20;
/// The metadata key of the last sequence handed out (it outlives pruned segments).
const SEQUENCE_KEY: &str = "sequence";
/// The metadata key of the committed end: `FIRST END`, the tail segment and its length.
const TAIL_KEY: &str = "outbox_tail";
/// The frame layout's version.
const FRAME_VERSION: u8 = 1;
/// A frame's fixed part.
const HEADER: usize = 4 + 1 + 8 + 16 + 8 + 1 + 1 + 4 + 4;
/// How much a reader reads at once.
const READ_CHUNK: usize = 256 << 10;

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

    /// Appends its frame to `out`.
    fn encode(&self, out: &mut Vec<u8>) {
        let action = &self.action.as_bytes()[..self.action.len().min(255)];
        let cef = self.cef.as_deref();
        let len = HEADER + action.len() + self.doc.len() + cef.map_or(0, <[u8]>::len);
        out.reserve(len);
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
        out.push(FRAME_VERSION);
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(self.id.as_bytes());
        let time = self
            .time_unix_ns
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        out.extend_from_slice(&time.to_le_bytes());
        out.push(self.severity);
        out.push(action.len() as u8);
        out.extend_from_slice(&(self.doc.len() as u32).to_le_bytes());
        out.extend_from_slice(&cef.map_or(u32::MAX, |c| c.len() as u32).to_le_bytes());
        out.extend_from_slice(action);
        out.extend_from_slice(&self.doc);
        if let Some(cef) = cef {
            out.extend_from_slice(cef);
        }
    }

    /// The record of a whole `frame` (`None`: not one this version wrote).
    fn decode(frame: &[u8]) -> Option<Self> {
        let h = Header::parse(frame)?;
        let mut rest = frame.get(HEADER..h.len)?;
        let mut take = |n: usize| {
            let (taken, left) = rest.split_at_checked(n)?;
            rest = left;
            Some(taken)
        };
        let action = std::str::from_utf8(take(usize::from(frame[38]))?).ok()?;
        let doc_len = u32::from_le_bytes(frame[39..43].try_into().ok()?) as usize;
        let cef_len = u32::from_le_bytes(frame[43..47].try_into().ok()?);
        let doc = take(doc_len)?;
        let cef = if cef_len == u32::MAX {
            None
        } else {
            Some(take(cef_len as usize)?)
        };
        Some(Self {
            sequence: h.sequence,
            id: uuid::Uuid::from_slice(&frame[13..29]).ok()?,
            time_unix_ns: i128::from(i64::from_le_bytes(frame[29..37].try_into().ok()?)),
            action: Cow::Owned(action.to_owned()),
            severity: frame[37],
            doc: doc.into(),
            cef: cef.map(Into::into),
        })
    }
}

/// What a frame's fixed part says of its place.
#[derive(Clone, Copy, Debug)]
struct Header {
    len: usize,
    sequence: u64,
}

impl Header {
    /// The header at the start of `bytes` (`None`: too short, or not a frame).
    fn parse(bytes: &[u8]) -> Option<Self> {
        let fixed = bytes.get(..HEADER)?;
        let len = u32::from_le_bytes(fixed[..4].try_into().ok()?) as usize;
        if fixed[4] != FRAME_VERSION || len < HEADER {
            return None;
        }
        Some(Self {
            len,
            sequence: u64::from_le_bytes(fixed[5..13].try_into().ok()?),
        })
    }
}

/// Reads at `at` in `file`, without moving its position where the platform can.
fn read_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    #[cfg(unix)]
    return std::os::unix::fs::FileExt::read_at(file, buf, at);
    #[cfg(windows)]
    return std::os::windows::fs::FileExt::seek_read(file, buf, at);
}

/// Writes all of `buf` at `at` in `file`.
fn write_all_at(file: &File, mut buf: &[u8], mut at: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        #[cfg(unix)]
        let written = std::os::unix::fs::FileExt::write_at(file, buf, at);
        #[cfg(windows)]
        let written = std::os::windows::fs::FileExt::seek_write(file, buf, at);
        match written {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                at += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads into `buf` from `at` in `file` until it is full or the file ends; how many bytes.
fn read_full_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match read_at(file, &mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The segment files in `dir`, by the first sequence each holds, with their lengths.
fn segments_in(dir: &Path) -> std::io::Result<BTreeMap<u64, u64>> {
    let mut found = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.insert(first, entry.metadata()?.len());
    }
    Ok(found)
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

/// Where the whole frames of `file` end, at or before `limit`.
fn whole_frames_end(file: &File, limit: u64) -> std::io::Result<u64> {
    let mut at = 0u64;
    let mut header = [0u8; HEADER];
    while at + HEADER as u64 <= limit {
        if read_full_at(file, &mut header, at)? < HEADER {
            break;
        }
        let Some(h) = Header::parse(&header) else {
            break;
        };
        if at + h.len as u64 > limit {
            break;
        }
        at += h.len as u64;
    }
    Ok(at)
}

/// The writing side, held by the baseline's writer.
pub(crate) struct Writer {
    dir: PathBuf,
    /// Each segment's first sequence and committed length.
    segments: BTreeMap<u64, u64>,
    /// The last segment, open for appending.
    tail: Option<(u64, File)>,
    /// Frames appended since the last commit.
    pending: Vec<u8>,
    /// The first and last sequence of `pending`.
    pending_span: Option<(u64, u64)>,
    segment_size: u64,
}

impl Writer {
    /// The outbox in `state_dir`, cut back to what the baseline committed (`tail`, from
    /// its metadata): bytes past the committed end, and segments after it, were written
    /// for a commit that never happened.
    fn open(state_dir: &Path, tail: Option<(u64, u64)>) -> Result<Self, BaselineError> {
        let dir = state_dir.join(OUTBOX_DIR);
        let io = |source| BaselineError::Outbox {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let mut segments = segments_in(&dir).map_err(io)?;
        let keep_upto = tail.map(|(first, _)| first);
        let uncommitted: Vec<u64> = segments
            .keys()
            .copied()
            .filter(|first| keep_upto.is_none_or(|k| *first > k))
            .collect();
        for first in uncommitted {
            std::fs::remove_file(segment_path(&dir, first)).map_err(io)?;
            segments.remove(&first);
        }
        if let Some((first, end)) = tail {
            match segments.get(&first).copied() {
                Some(len) if len > end => {
                    let file = OpenOptions::new()
                        .write(true)
                        .open(segment_path(&dir, first))
                        .map_err(io)?;
                    file.set_len(end).map_err(io)?;
                    segments.insert(first, end);
                }
                Some(len) if len < end => {
                    // The file system lost what the baseline kept (a power loss): keep the
                    // whole frames; the sinks see the missing sequences as a gap.
                    let file = OpenOptions::new()
                        .write(true)
                        .read(true)
                        .open(segment_path(&dir, first))
                        .map_err(io)?;
                    let whole = whole_frames_end(&file, len).map_err(io)?;
                    file.set_len(whole).map_err(io)?;
                    log::error!(
                        "the outbox lost {} bytes of committed events (segment `{}` is shorter than the baseline recorded): the sinks report them as a gap",
                        end - whole,
                        segment_path(&dir, first).display()
                    );
                    segments.insert(first, whole);
                }
                Some(_) => {}
                None => log::error!(
                    "the outbox lost its segment `{}`: the sinks report what it held as a gap",
                    segment_path(&dir, first).display()
                ),
            }
        }
        Ok(Self {
            dir,
            segments,
            tail: None,
            pending: Vec::new(),
            pending_span: None,
            segment_size: SEGMENT_SIZE,
        })
    }

    /// Writes what was appended since the last commit, which the caller is about to
    /// make: returns the last sequence and the committed end to record with it.
    fn flush(&mut self) -> std::io::Result<Option<(u64, u64, u64)>> {
        let Some((first, last)) = self.pending_span else {
            return Ok(None);
        };
        let start_new = match self.segments.last_key_value() {
            Some((_, len)) => *len >= self.segment_size,
            None => true,
        };
        if start_new {
            let path = segment_path(&self.dir, first);
            let file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)?;
            self.segments.insert(first, 0);
            self.tail = Some((first, file));
        }
        let (tail_first, len) = self
            .segments
            .last_key_value()
            .map(|(f, l)| (*f, *l))
            .unwrap_or((first, 0));
        let file = match &mut self.tail {
            Some((f, file)) if *f == tail_first => file,
            _ => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(segment_path(&self.dir, tail_first))?;
                &mut self.tail.insert((tail_first, file)).1
            }
        };
        write_all_at(file, &self.pending, len)?;
        let end = len + self.pending.len() as u64;
        self.segments.insert(tail_first, end);
        self.pending.clear();
        self.pending_span = None;
        Ok(Some((last, tail_first, end)))
    }

    /// The last sequence of the oldest segments to let go for the rest to fit in `cap`
    /// bytes (`None`: everything fits). The tail is never let go.
    fn floor(&self, cap: u64) -> Option<u64> {
        let mut total: u64 = self.segments.values().sum();
        let mut floor = None;
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        for (i, first) in firsts.iter().enumerate() {
            let Some(next) = firsts.get(i + 1) else { break };
            if total <= cap {
                break;
            }
            total -= self.segments[first];
            floor = Some(next - 1);
        }
        floor
    }

    /// Deletes the segments holding nothing after `sequence`; returns how many.
    fn prune(&mut self, sequence: u64) -> std::io::Result<usize> {
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        let mut removed = 0;
        for pair in firsts.windows(2) {
            if pair[1] - 1 > sequence {
                break;
            }
            std::fs::remove_file(segment_path(&self.dir, pair[0]))?;
            self.segments.remove(&pair[0]);
            removed += 1;
        }
        Ok(removed)
    }
}

impl Baseline {
    /// The outbox of a writer, cut back to what was committed.
    pub(crate) fn open_outbox(&mut self, state_dir: &Path) -> Result<(), BaselineError> {
        let tail = self.meta(TAIL_KEY)?.and_then(|v| {
            let (first, end) = v.split_once(' ')?;
            Some((first.parse().ok()?, end.parse().ok()?))
        });
        self.outbox = Some(Writer::open(state_dir, tail)?);
        Ok(())
    }

    fn outbox_writer(&mut self) -> &mut Writer {
        self.outbox
            .as_mut()
            .expect("a baseline opened for writing has an outbox")
    }

    /// Appends `records` (in sequence order) to the outbox: they are written, and the last
    /// sequence recorded, with the next commit.
    pub fn append_outbox(&mut self, records: &[Record]) -> Result<(), BaselineError> {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(());
        };
        self.tx()?;
        let writer = self.outbox_writer();
        for r in records {
            r.encode(&mut writer.pending);
        }
        writer.pending_span = Some((
            writer.pending_span.map_or(first.sequence, |(f, _)| f),
            last.sequence,
        ));
        Ok(())
    }

    /// Writes the outbox's pending frames and records where they end, in the transaction
    /// about to be committed.
    pub(crate) fn flush_outbox(&mut self) -> Result<(), BaselineError> {
        let Some(writer) = self.outbox.as_mut() else {
            return Ok(());
        };
        let dir = writer.dir.clone();
        let Some((last, tail, end)) = writer
            .flush()
            .map_err(|source| BaselineError::Outbox { path: dir, source })?
        else {
            return Ok(());
        };
        let mut put = self
            .conn
            .prepare_cached("INSERT OR REPLACE INTO meta VALUES (?1, ?2)")?;
        put.execute(params![SEQUENCE_KEY, last.to_string()])?;
        put.execute(params![TAIL_KEY, format!("{tail} {end}")])?;
        Ok(())
    }

    /// The last sequence handed out and committed (0: none yet).
    pub fn last_sequence(&self) -> Result<u64, BaselineError> {
        Ok(self
            .meta(SEQUENCE_KEY)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Segments are started once the last holds `bytes` (tests and benchmarks).
    pub fn set_outbox_segment_size(&mut self, bytes: u64) {
        self.outbox_writer().segment_size = bytes.max(1);
    }

    /// For a sink that may hold at most `cap` bytes of events: the last sequence it must
    /// let go for what follows to fit (`None`: everything fits). Whole segments go.
    pub fn spool_floor(&mut self, cap: u64) -> Result<Option<u64>, BaselineError> {
        Ok(self.outbox_writer().floor(cap))
    }

    /// The bytes of the segments holding events after `sequence`, committed: what a sink
    /// that recorded `sequence` has yet to deliver, in whole segments.
    pub fn outbox_bytes_after(&self, sequence: u64) -> Result<u64, BaselineError> {
        let Some(writer) = self.outbox.as_ref() else {
            return Ok(0);
        };
        if sequence >= self.last_sequence()? {
            return Ok(0);
        }
        let segments: Vec<(u64, u64)> = writer.segments.iter().map(|(f, l)| (*f, *l)).collect();
        Ok(segments
            .iter()
            .enumerate()
            // A segment's last sequence is one before the next one's first.
            .filter(|(i, _)| {
                segments
                    .get(i + 1)
                    .is_none_or(|(next, _)| next - 1 > sequence)
            })
            .map(|(_, (_, len))| *len)
            .sum())
    }

    /// Deletes the segments holding nothing after `sequence` (every sink has them, or
    /// gave them up); returns how many.
    pub fn prune_outbox(&mut self, sequence: u64) -> Result<usize, BaselineError> {
        let writer = self.outbox_writer();
        let dir = writer.dir.clone();
        writer
            .prune(sequence)
            .map_err(|source| BaselineError::Outbox { path: dir, source })
    }
}

/// The last sequence the outbox in `state_dir` handed out and committed (0: none yet, or
/// no baseline).
pub fn last_sequence(state_dir: &Path) -> Result<u64, BaselineError> {
    match Baseline::open(state_dir, Access::Read) {
        Ok(b) => b.last_sequence(),
        Err(BaselineError::Missing(_)) => Ok(0),
        Err(e) => Err(e),
    }
}

/// Where a reader stands: before the frame at `offset` of segment `first`, which follows
/// sequence `after`.
struct Place {
    first: u64,
    file: File,
    offset: u64,
    after: u64,
    /// Bytes read from `file`, starting at offset `buf_at`.
    buf: Vec<u8>,
    buf_at: u64,
}

impl Place {
    fn new(first: u64, file: File, after: u64) -> Self {
        Self {
            first,
            file,
            offset: 0,
            after,
            buf: Vec::new(),
            buf_at: 0,
        }
    }

    /// The `need` bytes at `offset`, read if they are not yet (`None`: the file ends
    /// first).
    fn bytes(&mut self, need: usize) -> std::io::Result<Option<&[u8]>> {
        let held = self.buf_at <= self.offset
            && self.offset + need as u64 <= self.buf_at + self.buf.len() as u64;
        if !held {
            self.buf.resize(need.max(READ_CHUNK), 0);
            let got = read_full_at(&self.file, &mut self.buf, self.offset)?;
            self.buf.truncate(got);
            self.buf_at = self.offset;
            if got < need {
                return Ok(None);
            }
        }
        let from = (self.offset - self.buf_at) as usize;
        Ok(Some(&self.buf[from..from + need]))
    }
}

/// A sink's reading view of the outbox.
pub struct OutboxReader {
    dir: PathBuf,
    place: Option<Place>,
}

impl OutboxReader {
    /// The outbox in `state_dir` (which a writer made, or will).
    pub fn open(state_dir: &Path) -> Result<Self, BaselineError> {
        Ok(Self {
            dir: state_dir.join(OUTBOX_DIR),
            place: None,
        })
    }

    fn io(&self, source: std::io::Error) -> BaselineError {
        BaselineError::Outbox {
            path: self.dir.clone(),
            source,
        }
    }

    /// The segment to read what follows `after` from: the last starting at or before
    /// the next sequence, or the oldest when that one was let go.
    fn place_after(&self, after: u64) -> Result<Option<Place>, BaselineError> {
        let segments = segments_in(&self.dir).map_err(|e| self.io(e))?;
        let first = segments
            .range(..=after.saturating_add(1))
            .next_back()
            .or_else(|| segments.first_key_value())
            .map(|(first, _)| *first);
        let Some(first) = first else { return Ok(None) };
        match File::open(segment_path(&self.dir, first)) {
            Ok(file) => Ok(Some(Place::new(first, file, after))),
            // Pruned since it was listed: it held nothing wanted any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.place_after_next(first, after)
            }
            Err(e) => Err(self.io(e)),
        }
    }

    /// The segment after `first`, for a reader that read it to its end.
    fn place_after_next(&self, first: u64, after: u64) -> Result<Option<Place>, BaselineError> {
        let segments = segments_in(&self.dir).map_err(|e| self.io(e))?;
        for next in segments.range(first + 1..).map(|(f, _)| *f) {
            match File::open(segment_path(&self.dir, next)) {
                Ok(file) => return Ok(Some(Place::new(next, file, after))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(e)),
            }
        }
        Ok(None)
    }

    /// The records after `after` up to `upto` (both sequences), at most `limit`, in
    /// order. What is missing from the start (let go) is missing from the answer, and the
    /// answer stops before any later hole, so the next call starts at it.
    pub fn read(
        &mut self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Record>, BaselineError> {
        let mut out: Vec<Record> = Vec::new();
        let mut place = match self.place.take() {
            Some(p) if p.after == after => p,
            _ => match self.place_after(after)? {
                Some(p) => p,
                None => return Ok(out),
            },
        };
        let result = loop {
            if out.len() >= limit {
                break Ok(());
            }
            let header = match place.bytes(HEADER) {
                Ok(Some(bytes)) => Header::parse(bytes),
                Ok(None) => {
                    // The segment's end, so far: on to the next one if there is one.
                    match self.place_after_next(place.first, place.after) {
                        Ok(Some(next)) => {
                            place = next;
                            continue;
                        }
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                }
                Err(e) => break Err(self.io(e)),
            };
            let Some(h) = header else {
                break Err(self.io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "segment {} holds no frame at offset {}",
                        place.first, place.offset
                    ),
                )));
            };
            if h.sequence > upto {
                break Ok(());
            }
            if h.sequence > place.after + 1 && !out.is_empty() {
                // A hole: the next call starts at it and reports it.
                break Ok(());
            }
            let (first, offset) = (place.first, place.offset);
            let record = match place.bytes(h.len) {
                Ok(Some(frame)) => (h.sequence > after).then(|| Record::decode(frame)),
                Ok(None) => break Ok(()),
                Err(e) => break Err(self.io(e)),
            };
            match record {
                Some(Some(record)) => {
                    out.push(record);
                    place.after = h.sequence;
                }
                Some(None) => {
                    break Err(self.io(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("segment {first} holds a bad frame at offset {offset}"),
                    )));
                }
                None => {}
            }
            place.offset += h.len as u64;
        };
        result?;
        self.place = Some(place);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, FileEvent, PathSource, ReportedPath, Stamper};

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

    fn segment_count(state: &Path) -> usize {
        segments_in(&state.join(OUTBOX_DIR)).expect("list").len()
    }

    #[test]
    fn what_is_committed_is_read_back_whole_in_order_and_the_numbering_survives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut stamper = Stamper::default();
        let mut written = records(&mut stamper, 5);
        written[1] = written[1].clone().with_cef().expect("CEF");
        {
            let mut b = Baseline::open(dir.path(), Access::Write).expect("open");
            b.append_outbox(&written[..3]).expect("append");
            b.commit().expect("commit");
            // Appended but never committed: a crash takes it away, number and all.
            b.append_outbox(&written[3..]).expect("append");
            std::mem::forget(b);
        }
        assert_eq!(last_sequence(dir.path()).expect("sequence"), 3);
        let mut reader = OutboxReader::open(dir.path()).expect("reader");
        assert_eq!(reader.read(0, u64::MAX, 100).expect("read"), written[..3]);
        assert_eq!(reader.read(1, 2, 100).expect("read"), written[1..2]);
        assert_eq!(reader.read(0, 3, 2).expect("read"), written[..2]);
        assert_eq!(reader.read(2, 3, 2).expect("read"), written[2..3]);
    }

    #[test]
    fn bytes_written_for_a_commit_that_never_happened_are_cut_at_the_next_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut stamper = Stamper::default();
        let first = records(&mut stamper, 3);
        let mut b = Baseline::open(dir.path(), Access::Write).expect("open");
        b.append_outbox(&first).expect("append");
        b.commit().expect("commit");
        drop(b);
        // A crash between the segment's write and the baseline's commit: a frame and a
        // half past the committed end, and a segment the commit would have started.
        let segment = segment_path(&dir.path().join(OUTBOX_DIR), 1);
        let mut torn = Vec::new();
        records(&mut stamper, 2)
            .iter()
            .for_each(|r| r.encode(&mut torn));
        torn.truncate(torn.len() - 100);
        let len = std::fs::metadata(&segment).expect("segment").len();
        let file = OpenOptions::new().write(true).open(&segment).expect("open");
        write_all_at(&file, &torn, len).expect("torn write");
        std::fs::write(segment_path(&dir.path().join(OUTBOX_DIR), 6), b"x").expect("stray");
        // The next start numbers on from what was committed and writes after it.
        let mut stamper = Stamper::after(3);
        let next = records(&mut stamper, 2);
        let mut b = Baseline::open(dir.path(), Access::Write).expect("reopen");
        assert_eq!(std::fs::metadata(&segment).expect("segment").len(), len);
        assert_eq!(segment_count(dir.path()), 1);
        b.append_outbox(&next).expect("append");
        b.commit().expect("commit");
        let mut reader = OutboxReader::open(dir.path()).expect("reader");
        let got = reader.read(0, 5, 100).expect("read");
        assert_eq!(got[..3], first[..]);
        assert_eq!(got[3..], next[..]);
    }

    #[test]
    fn a_reader_follows_appends_and_segments_and_stops_before_a_hole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut stamper = Stamper::default();
        let all = records(&mut stamper, 12);
        let mut b = Baseline::open(dir.path(), Access::Write).expect("open");
        b.set_outbox_segment_size(1);
        let mut reader = OutboxReader::open(dir.path()).expect("reader");
        assert!(reader.read(0, 10, 100).expect("nothing yet").is_empty());
        b.append_outbox(&all[..2]).expect("append");
        b.commit().expect("commit");
        assert_eq!(reader.read(0, 2, 100).expect("read"), all[..2]);
        // Each commit starts a segment: the reader goes on from where it stood.
        b.append_outbox(&all[2..4]).expect("append");
        b.commit().expect("commit");
        b.append_outbox(&all[4..5]).expect("append");
        b.commit().expect("commit");
        assert_eq!(segment_count(dir.path()), 3);
        // Only what is committed is asked for: what is past `upto` waits.
        assert_eq!(reader.read(2, 4, 100).expect("read"), all[2..4]);
        assert_eq!(reader.read(4, 5, 100).expect("read"), all[4..5]);
        // Sequences 6 to 9 never came (a power loss took them): the reader stops before
        // the hole and the next read starts at it.
        b.append_outbox(&all[9..]).expect("append");
        b.commit().expect("commit");
        let got = reader.read(5, 12, 100).expect("read");
        assert_eq!(got, all[9..]);
        let mut fresh = OutboxReader::open(dir.path()).expect("reader");
        assert_eq!(fresh.read(0, 12, 100).expect("read"), all[..5]);
        assert_eq!(fresh.read(5, 12, 100).expect("read"), all[9..]);
        assert!(reader.read(12, 12, 100).expect("read").is_empty());
    }

    #[test]
    fn the_cap_lets_whole_old_segments_go_and_pruning_keeps_the_numbering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut stamper = Stamper::default();
        let written = records(&mut stamper, 10);
        let mut b = Baseline::open(dir.path(), Access::Write).expect("open");
        b.set_outbox_segment_size(1);
        for pair in written.chunks(2) {
            b.append_outbox(pair).expect("append");
            b.commit().expect("commit");
        }
        assert_eq!(segment_count(dir.path()), 5);
        let each = (HEADER + written[0].action.len() + written[0].doc.len()) as u64;
        assert_eq!(b.spool_floor(100 * each).expect("floor"), None);
        // Room for about five: the first three segments go (documents differ by a digit).
        assert_eq!(b.spool_floor(5 * each).expect("floor"), Some(6));
        // The tail is kept whatever the cap.
        assert_eq!(b.spool_floor(0).expect("floor"), Some(8));
        assert_eq!(b.outbox_bytes_after(10).expect("bytes"), 0, "all delivered");
        let tail = segments_in(&dir.path().join(OUTBOX_DIR)).expect("list")[&9];
        assert_eq!(b.outbox_bytes_after(8).expect("bytes"), tail);
        assert_eq!(b.outbox_bytes_after(9).expect("bytes"), tail);
        assert!(b.outbox_bytes_after(0).expect("bytes") > 4 * tail);
        assert_eq!(b.prune_outbox(5).expect("prune"), 2);
        assert_eq!(b.prune_outbox(100).expect("prune"), 2);
        assert_eq!(segment_count(dir.path()), 1);
        drop(b);
        assert_eq!(last_sequence(dir.path()).expect("sequence"), 10);
        let mut reader = OutboxReader::open(dir.path()).expect("reader");
        let left = reader.read(0, u64::MAX, 100).expect("read");
        assert_eq!(left, written[8..]);
    }
}
