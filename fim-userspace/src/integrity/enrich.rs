//! Enrichment: the values before and after an event, and what the baseline becomes.
//!
//! Why its own room: "before" is not always the baseline's entry for the event's path.
//! Within a write burst it is the burst's last observation; a rename moves the old name's
//! entry (and its subtree) to the new name, and when the new name already existed, the
//! replaced file's entry is what the event destroyed; `RENAME_EXCHANGE` swaps two entries.
//! And "after" is not always the event's file: when the kernel named the inode it wrote
//! and another file is under the name by the time it is read, the content read is not
//! what was written. These rules decide what a SIEM is told changed; they are kept here,
//! apart from the scheduling that decides when they run.

use fim_core::{
    attrs::{Content, NotHashed, Snapshot},
    baseline::{Baseline, BaselineError},
    event::{FileEvent, InodeRef, Integrity, Origin, PathSource},
};

use super::burst::Bursts;

/// `RENAME_EXCHANGE`.
const RENAME_EXCHANGE: u32 = 2;

/// The last known state of `key`: the burst's last observation, or the baseline's entry.
pub fn last_known(
    bursts: &Bursts,
    baseline: &Baseline,
    key: &[u8],
) -> Result<Option<Snapshot>, BaselineError> {
    match bursts.seen(key) {
        Some(seen) => Ok(Some(seen)),
        None => baseline.get(key),
    }
}

/// Applies the rename `ev` (from `old` to `new`) to the baseline. Returns the new name's
/// "before" and whether the rename replaced a file that was there.
pub fn apply_rename(
    bursts: &Bursts,
    baseline: &mut Baseline,
    ev: &FileEvent,
    old: &[u8],
    new: &[u8],
) -> Result<(Option<Snapshot>, bool), BaselineError> {
    if ev.rename_flags & RENAME_EXCHANGE != 0 {
        // Both names stay; each now holds what the other held.
        let before = last_known(bursts, baseline, new)?;
        baseline.exchange(old, new)?;
        return Ok((before, false));
    }
    let moved = last_known(bursts, baseline, old)?;
    let replaced = baseline.rename(old, new)?;
    let was_replaced = replaced.is_some();
    Ok((replaced.or(moved), was_replaced))
}

/// Marks the content of `after` as not the event's when the sensor named the inode it
/// acted on (`ev.inode`, from a kernel object) and another inode is under the name now:
/// the file was replaced before it could be hashed.
pub fn mark_replaced(after: &mut Snapshot, ev: &FileEvent) {
    if let Some(inode) = ev.inode
        && ev.path.source == PathSource::KernelObject
        && after.attrs.ino != inode.ino
        && after.content.is_some()
    {
        after.content = Some(Content::NotHashed(NotHashed::Replaced));
    }
}

/// Why an event that needed an observation has no "after".
pub fn vanished_note(superseded: bool) -> String {
    if superseded {
        "vanished or replaced before it could be observed: a later operation in the same \
         batch removed or rebound this name"
            .into()
    } else {
        "vanished before it could be observed".into()
    }
}

/// The inode a snapshot describes, for an event that did not name one.
pub fn inode_of(s: &Snapshot) -> InodeRef {
    InodeRef {
        ino: s.attrs.ino,
        major: s.attrs.dev_major,
        minor: s.attrs.dev_minor,
        mode: s.attrs.mode | s.attrs.file_type.mode_bits(),
    }
}

/// The values of an event that shared the observation of the one before it on its path
/// (`group`: how many events shared it): the state after the last of them.
pub fn shared(after: Option<Snapshot>, origin: Origin, group: usize) -> Integrity {
    Integrity {
        before: after.clone(),
        after,
        changed: Vec::new(),
        origin,
        replaced_target: false,
        note: Some(format!(
            "observed once for {group} events on this path; values are after the last"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fim_core::{
        attrs::FileType,
        baseline::Access,
        event::{Action, ReportedPath},
    };

    fn snap(ino: u64) -> Snapshot {
        let mut s = crate::test_support::snapshot(FileType::File, ino, 0o644);
        s.content = Some(Content::Sha256([ino as u8; 32]));
        s
    }

    fn rename(flags: u32) -> FileEvent {
        let mut ev = FileEvent::new(
            Action::Rename,
            ReportedPath::new(b"/w/b".to_vec(), PathSource::KernelObject),
            "test",
        );
        ev.rename_flags = flags;
        ev
    }

    #[test]
    fn a_rename_keeps_identity_and_says_what_it_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Baseline::open(dir.path(), Access::Write).expect("open");
        let bursts = Bursts::new(std::time::Duration::from_secs(1));
        b.put(b"/w/a", &snap(1)).expect("put");
        let (before, replaced) =
            apply_rename(&bursts, &mut b, &rename(0), b"/w/a", b"/w/b").expect("rename");
        assert_eq!(
            before.map(|s| s.attrs.ino),
            Some(1),
            "the moved file's values"
        );
        assert!(!replaced);
        assert!(b.get(b"/w/a").expect("get").is_none());
        // An atomic save: the new file renamed over the old one.
        b.put(b"/w/tmp", &snap(2)).expect("put");
        let (before, replaced) =
            apply_rename(&bursts, &mut b, &rename(0), b"/w/tmp", b"/w/b").expect("rename");
        assert!(replaced);
        assert_eq!(
            before.map(|s| s.attrs.ino),
            Some(1),
            "the replaced file's values"
        );
        assert_eq!(b.get(b"/w/b").expect("get").map(|s| s.attrs.ino), Some(2));
    }

    #[test]
    fn an_exchange_swaps_the_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Baseline::open(dir.path(), Access::Write).expect("open");
        let bursts = Bursts::new(std::time::Duration::from_secs(1));
        b.put(b"/w/a", &snap(1)).expect("put");
        b.put(b"/w/b", &snap(2)).expect("put");
        let (before, replaced) =
            apply_rename(&bursts, &mut b, &rename(RENAME_EXCHANGE), b"/w/a", b"/w/b")
                .expect("exchange");
        assert_eq!(before.map(|s| s.attrs.ino), Some(2));
        assert!(!replaced);
        assert_eq!(b.get(b"/w/a").expect("get").map(|s| s.attrs.ino), Some(2));
        assert_eq!(b.get(b"/w/b").expect("get").map(|s| s.attrs.ino), Some(1));
    }

    #[test]
    fn content_of_another_inode_is_not_the_events() {
        let mut ev = rename(0);
        ev.inode = Some(inode_of(&snap(1)));
        let mut after = snap(2);
        mark_replaced(&mut after, &ev);
        assert_eq!(after.content, Some(Content::NotHashed(NotHashed::Replaced)));
        let mut same = snap(1);
        mark_replaced(&mut same, &ev);
        assert!(matches!(same.content, Some(Content::Sha256(_))));
    }
}
