//! What the fanotify sensor knows about objects by identity (file system id + file handle),
//! kept current in event order.
//!
//! fanotify names the parent directory of an event by its file handle. Resolving that
//! handle when the event is *read* answers "where is that directory now": a directory
//! renamed or removed right after the operation would misname the event or lose it. So
//! every directory that matters (below a watched tree, or on the way to a watched root) is
//! known by handle from the start, and each directory event (create, rename, delete)
//! updates the map when it is decoded, in the order the kernel queued them.
//!
//! The same goes for files reachable under other names: a watched file with several hard
//! links (found at start), or one whose handle was seen in a watched directory while
//! running, is known by its handle, so an operation through a name outside the watched
//! trees is still reported on the watched (canonical) path.
//!
//! Pure bookkeeping: keys and paths are bytes.

use std::collections::{BTreeMap, HashMap};

use fim_core::paths::is_under;

/// An object's identity: file system id, handle type and handle bytes, concatenated.
pub type Key = Vec<u8>;

/// Builds the key of a file handle on the file system `fsid`.
pub fn key(fsid: [i32; 2], handle_type: i32, handle: &[u8]) -> Key {
    let mut k = Vec::with_capacity(12 + handle.len());
    for w in fsid {
        k.extend_from_slice(&w.to_ne_bytes());
    }
    k.extend_from_slice(&handle_type.to_ne_bytes());
    k.extend_from_slice(handle);
    k
}

/// Removed directories kept by handle: the kernel merges an `rmdir` into the queued
/// `mkdir` of the same name, so the record saying a directory is gone can come before the
/// records about what happened inside it. A handle is never reused for another directory
/// (it carries a generation number), so remembering it is safe; the bound keeps it small.
const GONE_MAX: usize = 4096;

/// Directories by handle, with their current paths; updated in event order.
#[derive(Debug, Default)]
pub struct DirMap {
    paths: HashMap<Key, Vec<u8>>,
    keys: BTreeMap<Vec<u8>, Key>,
    gone: HashMap<Key, Vec<u8>>,
}

impl DirMap {
    /// Records that directory `key` is at `path` (replacing what was known of either).
    pub fn insert(&mut self, key: Key, path: Vec<u8>) {
        if let Some(old) = self.paths.remove(&key) {
            self.keys.remove(&old);
        }
        if let Some(other) = self.keys.remove(&path) {
            self.paths.remove(&other);
        }
        self.keys.insert(path.clone(), key.clone());
        self.paths.insert(key, path);
    }

    /// The current path of directory `key` (or its last path, when it was removed).
    pub fn path(&self, key: &[u8]) -> Option<&[u8]> {
        self.paths
            .get(key)
            .or_else(|| self.gone.get(key))
            .map(Vec::as_slice)
    }

    /// Whether directory `key` is known and not removed.
    pub fn is_live(&self, key: &[u8]) -> bool {
        self.paths.contains_key(key)
    }

    /// Directory `key` (and everything known below it) moved to `to`.
    pub fn moved(&mut self, key: &[u8], to: &[u8]) {
        let Some(from) = self.paths.get(key).cloned() else {
            return;
        };
        for (path, k) in self.below(&from) {
            self.keys.remove(&path);
            let mut renamed = to.to_vec();
            renamed.extend_from_slice(&path[from.len()..]);
            self.paths.insert(k.clone(), renamed.clone());
            self.keys.insert(renamed, k);
        }
    }

    /// Directory `key` (and everything known below it) is gone or no longer watched.
    pub fn remove(&mut self, key: &[u8]) {
        let Some(from) = self.paths.get(key).cloned() else {
            return;
        };
        if self.gone.len() >= GONE_MAX {
            self.gone.clear();
        }
        for (path, k) in self.below(&from) {
            self.keys.remove(&path);
            self.paths.remove(&k);
            self.gone.insert(k, path);
        }
    }

    /// Entries at or below `root`.
    fn below(&self, root: &[u8]) -> Vec<(Vec<u8>, Key)> {
        self.keys
            .range(root.to_vec()..)
            .take_while(|(p, _)| p.starts_with(root))
            .filter(|(p, _)| is_under(p, root))
            .map(|(p, k)| (p.clone(), k.clone()))
            .collect()
    }

    /// Forgets everything (after lost events, before seeding again).
    pub fn clear(&mut self) {
        self.paths.clear();
        self.keys.clear();
        self.gone.clear();
    }

    /// Number of known directories.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether no directory is known.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// Non-directory objects of the watched trees known by handle, with their watched path.
/// Bounded: past `cap` learned entries the learned ones are forgotten (the ones found with
/// several links at start are kept).
#[derive(Debug)]
pub struct Objects {
    seeded: HashMap<Key, Vec<u8>>,
    learned: HashMap<Key, Vec<u8>>,
    cap: usize,
}

impl Objects {
    /// An empty set holding at most `cap` learned objects.
    pub fn new(cap: usize) -> Self {
        Self {
            seeded: HashMap::new(),
            learned: HashMap::new(),
            cap,
        }
    }

    /// A watched file with other names, found at start.
    pub fn seed(&mut self, key: Key, path: Vec<u8>) {
        self.seeded.insert(key, path);
    }

    /// An object seen at `path` in a watched directory.
    pub fn learn(&mut self, key: Key, path: Vec<u8>) {
        if let Some(p) = self.seeded.get_mut(&key) {
            *p = path;
            return;
        }
        if self.learned.len() >= self.cap && !self.learned.contains_key(&key) {
            self.learned.clear();
        }
        self.learned.insert(key, path);
    }

    /// The watched path of object `key`.
    pub fn path(&self, key: &[u8]) -> Option<&[u8]> {
        self.seeded
            .get(key)
            .or_else(|| self.learned.get(key))
            .map(Vec::as_slice)
    }

    /// The watched name `path` of object `key` went away (unlinked, or renamed out): an
    /// object with other watched names keeps one of them only if the caller learns it again.
    pub fn forget(&mut self, key: &[u8], path: &[u8]) {
        for map in [&mut self.seeded, &mut self.learned] {
            if map.get(key).is_some_and(|p| p == path) {
                map.remove(key);
            }
        }
    }

    /// Forgets the learned objects (after lost events).
    pub fn clear_learned(&mut self) {
        self.learned.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u8) -> Key {
        key([1, 2], 1, &[n])
    }

    #[test]
    fn a_moved_directory_takes_what_is_below_it_along() {
        let mut m = DirMap::default();
        m.insert(k(1), b"/w".to_vec());
        m.insert(k(2), b"/w/d".to_vec());
        m.insert(k(3), b"/w/d/e".to_vec());
        m.insert(k(4), b"/w/dx".to_vec());
        m.moved(&k(2), b"/w/n");
        assert_eq!(m.path(&k(2)), Some(&b"/w/n"[..]));
        assert_eq!(m.path(&k(3)), Some(&b"/w/n/e"[..]));
        assert_eq!(m.path(&k(4)), Some(&b"/w/dx"[..]), "a sibling prefix stays");
        m.remove(&k(2));
        assert!(!m.is_live(&k(2)) && !m.is_live(&k(3)));
        assert_eq!(
            m.path(&k(3)),
            Some(&b"/w/n/e"[..]),
            "a removed directory keeps its last path for records the kernel merged ahead"
        );
        assert_eq!(m.len(), 2);
        // A new directory under a reused name replaces the old entry for that path.
        m.insert(k(5), b"/w/dx".to_vec());
        assert_eq!((m.path(&k(4)), m.path(&k(5))), (None, Some(&b"/w/dx"[..])));
    }

    #[test]
    fn objects_are_known_until_their_watched_name_goes() {
        let mut o = Objects::new(2);
        o.seed(k(1), b"/w/linked".to_vec());
        o.learn(k(2), b"/w/a".to_vec());
        o.learn(k(3), b"/w/b".to_vec());
        o.learn(k(4), b"/w/c".to_vec());
        assert_eq!(o.path(&k(1)), Some(&b"/w/linked"[..]), "seeded ones stay");
        assert_eq!(o.path(&k(4)), Some(&b"/w/c"[..]));
        o.forget(&k(4), b"/w/other");
        assert!(
            o.path(&k(4)).is_some(),
            "another name going does not matter"
        );
        o.forget(&k(4), b"/w/c");
        assert!(o.path(&k(4)).is_none());
    }
}
