//! The names of watched objects the kernel finds by identity.
//!
//! While walking a path up from the object, the programs look each inode up in the
//! `WATCHED_OBJECTS` map and report the first watched object that applies as a
//! [`WatchMatch`]: a watched root (by index) and how many bytes of the path lie below it,
//! or a watched file with other hard links (named by its inode). This table turns that into
//! the watched (canonical) name, whatever name the caller used: a bind mount, a symlinked
//! directory, another hard link.
//!
//! Pure bookkeeping; the sensor fills it at load and keeps it current in event order.

use std::collections::HashMap;

use fim_common::{OBJECT_BY_INODE, WatchMatch};

/// An inode on a device (`s_dev`, kernel encoding).
pub type InodeKey = (u32, u64);

/// Watched roots by index, and watched files with other names by inode.
#[derive(Debug, Default)]
pub struct Identities {
    roots: Vec<Vec<u8>>,
    /// Each root's id, by path: a root watched again after a reload keeps its id, so a
    /// record the kernel sent before the reload is named as it was meant.
    ids: HashMap<Vec<u8>, u32>,
    by_inode: HashMap<InodeKey, Vec<u8>>,
}

impl Identities {
    /// Adds a watched root; returns its id for the kernel (`WatchedObject::id`). A root
    /// known already keeps its id; one no longer watched keeps its name (records about it
    /// may still wait in the ring).
    pub fn add_root(&mut self, path: Vec<u8>) -> u32 {
        if let Some(&id) = self.ids.get(&path) {
            return id;
        }
        self.roots.push(path.clone());
        let id = self.roots.len() as u32;
        self.ids.insert(path, id);
        id
    }

    /// A watched file at `path` with other names.
    pub fn learn(&mut self, inode: InodeKey, path: Vec<u8>) {
        self.by_inode.insert(inode, path);
    }

    /// The watched name `path` of `inode` moved to `to` (a rename).
    pub fn moved(&mut self, inode: InodeKey, path: &[u8], to: &[u8]) {
        if let Some(p) = self.by_inode.get_mut(&inode)
            && p == path
        {
            *p = to.to_vec();
        }
    }

    /// The watched name `path` of `inode` went away; returns whether it was known (then the
    /// object is no longer watched by identity).
    pub fn forget(&mut self, inode: InodeKey, path: &[u8]) -> bool {
        if self.by_inode.get(&inode).is_some_and(|p| p == path) {
            self.by_inode.remove(&inode);
            return true;
        }
        false
    }

    /// The id of watched root `path`, if it is one.
    pub fn root_id(&self, path: &[u8]) -> Option<u32> {
        self.ids.get(path).copied()
    }

    /// Forgets the watched files with other names that `keep` no longer wants; returns
    /// their inodes.
    pub fn forget_files(&mut self, mut keep: impl FnMut(&[u8]) -> bool) -> Vec<InodeKey> {
        let gone: Vec<InodeKey> = self
            .by_inode
            .iter()
            .filter(|(_, path)| !keep(path))
            .map(|(key, _)| *key)
            .collect();
        for key in &gone {
            self.by_inode.remove(key);
        }
        gone
    }

    /// The watched name of the path `accessed` the kernel matched as `watch` (`inode`: the
    /// object's own identity, when the event carries it). `None` when nothing matched or
    /// the match cannot be named.
    pub fn canonical(
        &self,
        watch: WatchMatch,
        accessed: &[u8],
        inode: Option<InodeKey>,
    ) -> Option<Vec<u8>> {
        let below = usize::from(watch.below);
        if watch.id == 0 || below > accessed.len() {
            return None;
        }
        let base = if watch.id == OBJECT_BY_INODE {
            self.by_inode.get(&inode?)?
        } else {
            self.roots.get(watch.id as usize - 1)?
        };
        let mut out = base.clone();
        let rest = &accessed[accessed.len() - below..];
        if out == b"/" && rest.starts_with(b"/") {
            out.clear();
        }
        out.extend_from_slice(rest);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u32, below: u16) -> WatchMatch {
        WatchMatch { id, below, _pad: 0 }
    }

    #[test]
    fn matches_are_named_under_the_watched_name() {
        let mut ids = Identities::default();
        let wt = ids.add_root(b"/tmp/wt".to_vec());
        let root = ids.add_root(b"/".to_vec());
        // Through a bind mount: /mnt/bm is /tmp/wt.
        assert_eq!(
            ids.canonical(m(wt, 6), b"/mnt/bm/sub/f", None).as_deref(),
            Some(&b"/tmp/wt/sub/f"[..])
        );
        assert_eq!(
            ids.canonical(m(wt, 0), b"/mnt/bm", None).as_deref(),
            Some(&b"/tmp/wt"[..])
        );
        assert_eq!(
            ids.canonical(m(root, 2), b"/x", None).as_deref(),
            Some(&b"/x"[..])
        );
        // Through another hard link: named by inode.
        ids.learn((5, 77), b"/tmp/wt2/f".to_vec());
        let by_inode = m(OBJECT_BY_INODE, 0);
        assert_eq!(
            ids.canonical(by_inode, b"/tmp/hl", Some((5, 77)))
                .as_deref(),
            Some(&b"/tmp/wt2/f"[..])
        );
        ids.moved((5, 77), b"/tmp/wt2/f", b"/tmp/wt2/g");
        assert_eq!(
            ids.canonical(by_inode, b"/tmp/hl", Some((5, 77)))
                .as_deref(),
            Some(&b"/tmp/wt2/g"[..])
        );
        assert!(!ids.forget((5, 77), b"/tmp/wt2/f"), "not its watched name");
        assert!(ids.forget((5, 77), b"/tmp/wt2/g"));
        assert_eq!(ids.canonical(by_inode, b"/tmp/hl", Some((5, 77))), None);
        assert_eq!(ids.canonical(m(0, 0), b"/x", None), None);
        assert_eq!(ids.add_root(b"/tmp/wt".to_vec()), wt, "known: its id");
        assert_eq!(ids.add_root(b"/srv".to_vec()), 3, "new: the next id");
        assert_eq!(ids.canonical(m(9, 0), b"/x", None), None, "unknown id");
        assert_eq!(
            ids.canonical(m(wt, 9), b"/x", None),
            None,
            "below longer than path"
        );
    }
}
