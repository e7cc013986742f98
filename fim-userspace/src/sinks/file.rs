//! The file sink: JSON lines appended to a file, rotated by size, reopened on SIGHUP.
//!
//! Rotation: before a line would take the file past `max_size`, `PATH.N-1` becomes
//! `PATH.N` (the oldest, `PATH.keep`, is removed), ..., `PATH` becomes `PATH.1`, and a new
//! `PATH` is opened. A line is never split between two files. After logrotate (or anyone)
//! moved the file away, SIGHUP makes the sink open `PATH` again; until then it writes to
//! the moved file, so nothing written is lost either way.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

use super::{Batch, Failure, Sink, SinkError, json_lines};

/// Mode of a file the sink creates: events name files and processes, not for everyone.
#[cfg(unix)]
const FILE_MODE: u32 = 0o640;

/// The sink.
pub struct FileSink {
    name: String,
    path: PathBuf,
    max_size: Option<u64>,
    keep: u32,
    file: File,
    /// Bytes in `file`.
    size: u64,
    text: Vec<u8>,
}

fn open_append(path: &Path) -> std::io::Result<(File, u64)> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    let file = options.open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

/// `PATH.n`.
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

impl FileSink {
    /// Opens (or creates, with its directory) `path` for appending.
    pub fn open(
        name: String,
        path: PathBuf,
        max_size: Option<u64>,
        keep: u32,
    ) -> Result<Self, SinkError> {
        let io = |what: String, source| SinkError::Io {
            sink: name.clone(),
            what,
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| io(format!("creating `{}`", dir.display()), e))?;
        }
        let (file, size) =
            open_append(&path).map_err(|e| io(format!("opening `{}`", path.display()), e))?;
        Ok(Self {
            name,
            path,
            max_size,
            keep,
            file,
            size,
            text: Vec::with_capacity(64 * 1024),
        })
    }

    fn error(&self, what: String, source: std::io::Error) -> SinkError {
        SinkError::Io {
            sink: self.name.clone(),
            what,
            source,
        }
    }

    /// Moves the files one place down and opens a new `PATH`. When `PATH` is gone already
    /// (logrotate moved it away and the SIGHUP has not come yet), a new `PATH` is all it
    /// takes: the moved file is someone else's now.
    fn rotate(&mut self) -> std::io::Result<()> {
        if !self.path.exists() {
            (self.file, self.size) = open_append(&self.path)?;
            return Ok(());
        }
        let _ = std::fs::remove_file(rotated(&self.path, self.keep));
        for n in (1..self.keep).rev() {
            match std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        (self.file, self.size) = open_append(&self.path)?;
        Ok(())
    }
}

impl FileSink {
    /// Appends the lines of `text`, rotating before a line that would not fit. Written in
    /// as few writes as the rotations allow.
    fn write_lines(&mut self, text: &[u8]) -> Result<(), Failure> {
        let mut start = 0;
        while start < text.len() {
            // As many whole lines as fit; in an empty file at least one (a line larger than
            // the limit is written whole, in a file of its own).
            let room = self
                .max_size
                .map_or(u64::MAX, |max| max.saturating_sub(self.size));
            let mut end = start;
            for line_end in text[start..]
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| start + i + 1)
            {
                if (line_end - start) as u64 > room && !(end == start && self.size == 0) {
                    break;
                }
                end = line_end;
            }
            if end == start {
                // Not even one line fits: the next file. A failed rotation (a full disk, a
                // permission) is tried again with the write.
                self.rotate().map_err(|e| {
                    Failure::Retry(format!("rotating `{}`: {e}", self.path.display()))
                })?;
                continue;
            }
            if let Err(e) = self.file.write_all(&text[start..end]) {
                // Part of it may be in the file: the retry writes the whole delivery again,
                // so a reader may see a line twice (the same `event.id`), never lose one.
                let _ = self.file.metadata().map(|m| self.size = m.len());
                return Err(Failure::Retry(format!(
                    "writing to `{}`: {e}",
                    self.path.display()
                )));
            }
            self.size += (end - start) as u64;
            start = end;
        }
        Ok(())
    }
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver(&mut self, batches: &[Batch]) -> Result<(), Failure> {
        json_lines(batches, &mut self.text);
        let text = std::mem::take(&mut self.text);
        let written = self.write_lines(&text);
        self.text = text;
        written
    }

    fn reopen(&mut self) -> Result<(), SinkError> {
        let (file, size) = open_append(&self.path)
            .map_err(|e| self.error(format!("reopening `{}`", self.path.display()), e))?;
        (self.file, self.size) = (file, size);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use fim_core::event::Stamper;

    use super::*;

    fn batch(stamper: &mut Stamper, n: usize) -> Batch {
        crate::sinks::test_batch(stamper, n)
    }

    fn sequences(path: &Path) -> Vec<u64> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
                v["event"]["sequence"].as_u64().expect("sequence")
            })
            .collect()
    }

    fn sink(path: &Path, max_size: Option<u64>, keep: u32) -> FileSink {
        FileSink::open("archive".into(), path.to_owned(), max_size, keep).expect("opens")
    }

    #[test]
    fn files_rotate_by_size_keep_their_count_and_never_split_a_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs/events.json");
        let mut s = sink(&path, Some(4096), 2);
        let mut stamper = Stamper::default();
        for _ in 0..12 {
            s.deliver(&[batch(&mut stamper, 3)]).expect("delivered");
        }
        // Newest first: PATH, PATH.1, PATH.2; older ones are gone.
        let (now, one, two) = (
            sequences(&path),
            sequences(&rotated(&path, 1)),
            sequences(&rotated(&path, 2)),
        );
        assert!(!rotated(&path, 3).exists(), "keep = 2");
        let all: Vec<u64> = two.iter().chain(&one).chain(&now).copied().collect();
        assert!(!two.is_empty() && !one.is_empty() && !now.is_empty());
        let last = *all.last().expect("events");
        assert_eq!(last, 36);
        assert_eq!(
            all,
            (all[0]..=last).collect::<Vec<_>>(),
            "in order, no hole"
        );
        for p in [&path, &rotated(&path, 1)] {
            assert!(std::fs::metadata(p).expect("exists").len() <= 4096);
        }
    }

    #[test]
    fn a_rotation_due_after_the_file_was_moved_away_starts_a_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.json");
        let moved = dir.path().join("events.json.moved");
        let mut s = sink(&path, Some(2048), 3);
        let mut stamper = Stamper::default();
        s.deliver(&[batch(&mut stamper, 2)]).expect("delivered");
        std::fs::rename(&path, &moved).expect("rename");
        for _ in 0..4 {
            s.deliver(&[batch(&mut stamper, 2)])
                .expect("delivered without a reopen");
        }
        let mut all: Vec<u64> = [&moved, &path, &rotated(&path, 1), &rotated(&path, 2)]
            .iter()
            .flat_map(|p| sequences(p))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (1..=10).collect::<Vec<_>>(), "every event once");
    }

    #[cfg(unix)]
    #[test]
    fn after_the_file_is_moved_away_a_reopen_starts_a_new_one_and_nothing_is_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.json");
        let moved = dir.path().join("events.json.moved");
        let mut s = sink(&path, None, 5);
        let mut stamper = Stamper::default();
        s.deliver(&[batch(&mut stamper, 2)]).expect("delivered");
        // logrotate: the file is renamed; writes go on to it until the reopen.
        std::fs::rename(&path, &moved).expect("rename");
        s.deliver(&[batch(&mut stamper, 2)]).expect("delivered");
        s.reopen().expect("reopened");
        s.deliver(&[batch(&mut stamper, 2)]).expect("delivered");
        assert_eq!(sequences(&moved), vec![1, 2, 3, 4]);
        assert_eq!(sequences(&path), vec![5, 6]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, FILE_MODE);
    }
}
