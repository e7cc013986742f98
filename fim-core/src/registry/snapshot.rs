//! Reading a watched key into a snapshot: the key, its values and its subkeys down to a
//! depth, each key's last-write time and security descriptor digest.
//!
//! The registry itself is behind [`Registry`] (Windows' calls on Windows, a map in the
//! tests), so this walk is platform-free. A key whose last-write time has not moved keeps
//! its values from the previous snapshot without reading them: Windows moves that time for
//! every change to the key's values or to its list of subkeys. Security descriptors do not
//! move it, so they are read for every key on every walk.

use std::collections::BTreeMap;

use super::{Hive, KeyState, ValueState, View};

/// Keys by their path under the hive, every one a watched key covers.
pub type Tree = BTreeMap<String, KeyState>;

/// A registry call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{call} on {key}: {message} (error {code})")]
pub struct ReadError {
    /// The call (`RegOpenKeyExW`).
    pub call: &'static str,
    /// The key's path.
    pub key: String,
    /// The Windows error code.
    pub code: u32,
    /// Its text.
    pub message: String,
}

/// A raw value as the registry returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawValue {
    /// Its name (`""`: the default value).
    pub name: String,
    /// Its type number.
    pub kind: u32,
    /// Its data.
    pub bytes: Vec<u8>,
}

/// What the walk needs of a registry.
pub trait Registry {
    /// An open key.
    type Key;
    /// Opens `path` under `hive` in `view` for reading; `Ok(None)`: it does not exist.
    fn open(&mut self, hive: Hive, view: View, path: &str) -> Result<Option<Self::Key>, ReadError>;
    /// The key's last-write time (`FILETIME`).
    fn last_write(&mut self, key: &Self::Key) -> Result<u64, ReadError>;
    /// The names of its subkeys.
    fn subkeys(&mut self, key: &Self::Key) -> Result<Vec<String>, ReadError>;
    /// Its values.
    fn values(&mut self, key: &Self::Key) -> Result<Vec<RawValue>, ReadError>;
    /// Its security descriptor (owner, group and DACL), self-relative.
    fn security(&mut self, key: &Self::Key) -> Result<Vec<u8>, ReadError>;
}

/// One configured key to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedKey {
    /// Its hive.
    pub hive: Hive,
    /// Its path under the hive, `\`-separated, without leading or trailing `\`.
    pub path: String,
    /// The view it is read in.
    pub view: View,
    /// How many levels of subkeys are read (0: the key alone).
    pub depth: u32,
    /// Value names left out (`*` and `?` wildcards, any case).
    pub exclude_values: Vec<String>,
}

impl WatchedKey {
    /// Whether the value `name` is left out.
    pub fn excludes(&self, name: &str) -> bool {
        self.exclude_values.iter().any(|p| wildcard(p, name))
    }

    /// Whether `path` (a key's path under the hive) is this key or below it.
    pub fn covers(&self, path: &str) -> bool {
        below(&self.path, path)
    }
}

/// Whether `path` is `root` or below it (`\`-separated, any case).
pub fn below(root: &str, path: &str) -> bool {
    path.len() >= root.len()
        && path.is_char_boundary(root.len())
        && path[..root.len()].eq_ignore_ascii_case(root)
        && (path.len() == root.len() || root.is_empty() || path.as_bytes()[root.len()] == b'\\')
}

/// `*` and `?` wildcard match, ASCII case-insensitive (registry names compare so).
fn wildcard(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let n: Vec<char> = name.chars().flat_map(char::to_lowercase).collect();
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// What one walk found besides the tree.
#[derive(Debug, Default)]
pub struct Walk {
    /// The keys read.
    pub tree: Tree,
    /// Keys (and their subtrees) that could not be read this time: their previous state
    /// is kept, so an unreadable key is not reported as deleted.
    pub unreadable: Vec<ReadError>,
    /// Keys whose values were read (their last-write time moved, or they are new).
    pub keys_read: u64,
    /// Keys whose values were kept from `previous` (last-write time unchanged).
    pub keys_skipped: u64,
}

/// Whether a walk keeps the values of keys whose last-write time did not move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// Keeps them (a walk woken by a notification: fast).
    UnchangedKeys,
    /// Reads every key's values: a last-write time can be set back by whoever can write
    /// the key (`NtSetInformationKey`), or not move within one clock tick.
    Nothing,
}

/// Reads `watched` into a tree. `previous` is what the last walk found under it: with
/// [`Reuse::UnchangedKeys`], keys whose last-write time it has are not read again. A
/// missing key gives an empty tree.
pub fn walk<R: Registry>(reg: &mut R, watched: &WatchedKey, previous: &Tree, reuse: Reuse) -> Walk {
    let mut out = Walk::default();
    let mut stack = vec![(watched.path.clone(), 0u32)];
    while let Some((path, depth)) = stack.pop() {
        let key = match reg.open(watched.hive, watched.view, &path) {
            Ok(Some(key)) => key,
            Ok(None) => continue,
            Err(e) => {
                keep_previous(&mut out, previous, &path, e);
                continue;
            }
        };
        match read_key(reg, &key, watched, previous.get(&path), reuse, &mut out) {
            Ok((state, subkeys)) => {
                out.tree.insert(path.clone(), state);
                if depth < watched.depth {
                    for name in subkeys {
                        stack.push((format!("{path}\\{name}"), depth + 1));
                    }
                }
            }
            Err(e) => keep_previous(&mut out, previous, &path, e),
        }
    }
    out
}

fn read_key<R: Registry>(
    reg: &mut R,
    key: &R::Key,
    watched: &WatchedKey,
    before: Option<&KeyState>,
    reuse: Reuse,
    out: &mut Walk,
) -> Result<(KeyState, Vec<String>), ReadError> {
    let last_write = reg.last_write(key)?;
    // A descriptor that cannot be read (no READ_CONTROL) is not a change.
    let security = match reg.security(key) {
        Ok(sd) => Some(crate::hash::sha256(&sd)),
        Err(_) => before.and_then(|b| b.security),
    };
    let unchanged = |b: &&KeyState| {
        reuse == Reuse::UnchangedKeys && b.last_write == last_write && last_write != 0
    };
    let values = match before.filter(unchanged) {
        Some(b) => {
            out.keys_skipped += 1;
            b.values.clone()
        }
        None => {
            out.keys_read += 1;
            reg.values(key)?
                .into_iter()
                .filter(|v| !watched.excludes(&v.name))
                .map(|v| (v.name, ValueState::of(v.kind, &v.bytes)))
                .collect()
        }
    };
    let subkeys = reg.subkeys(key)?;
    Ok((
        KeyState {
            last_write,
            security,
            values,
        },
        subkeys,
    ))
}

fn keep_previous(out: &mut Walk, previous: &Tree, path: &str, e: ReadError) {
    // Not a range scan: siblings such as `X.old` sort between `X` and `X\child`.
    for (p, s) in previous.iter().filter(|(p, _)| below(path, p)) {
        out.tree.insert(p.clone(), s.clone());
    }
    out.unreadable.push(e);
}

#[cfg(test)]
pub(crate) mod fake {
    //! A registry in memory, for the walk's and the diff's tests.

    use std::collections::BTreeMap;

    use super::*;

    /// A key: its last-write time, security descriptor, values and whether reading it fails.
    #[derive(Clone, Debug, Default)]
    pub struct FakeKey {
        pub last_write: u64,
        pub security: Vec<u8>,
        pub values: BTreeMap<String, (u32, Vec<u8>)>,
        pub denied: bool,
    }

    /// Keys by (view, path); subkeys are the keys one level below.
    #[derive(Default)]
    pub struct FakeRegistry {
        pub keys: BTreeMap<(View, String), FakeKey>,
        pub value_reads: u64,
        clock: u64,
    }

    impl FakeRegistry {
        /// Sets `name` in `path` (creating the key), moving its last-write time.
        pub fn set(&mut self, view: View, path: &str, name: &str, kind: u32, bytes: &[u8]) {
            let key = self.touch(view, path);
            key.values.insert(name.into(), (kind, bytes.to_vec()));
        }

        /// Creates `path` (and moves its parent's last-write time) or moves its own.
        pub fn touch(&mut self, view: View, path: &str) -> &mut FakeKey {
            self.clock += 1;
            let clock = self.clock;
            if !self.keys.contains_key(&(view, path.to_owned()))
                && let Some((parent, _)) = path.rsplit_once('\\')
                && let Some(p) = self.keys.get_mut(&(view, parent.to_owned()))
            {
                p.last_write = clock;
            }
            let key = self.keys.entry((view, path.to_owned())).or_default();
            key.last_write = clock;
            key
        }

        /// Removes `path` and its subtree.
        pub fn delete(&mut self, view: View, path: &str) {
            self.keys.retain(|(v, p), _| *v != view || !below(path, p));
            self.clock += 1;
            if let Some((parent, _)) = path.rsplit_once('\\')
                && let Some(p) = self.keys.get_mut(&(view, parent.to_owned()))
            {
                p.last_write = self.clock;
            }
        }
    }

    fn denied(key: &str) -> ReadError {
        ReadError {
            call: "RegOpenKeyExW",
            key: key.into(),
            code: 5,
            message: "Access is denied.".into(),
        }
    }

    impl Registry for FakeRegistry {
        type Key = (View, String);

        fn open(
            &mut self,
            _hive: Hive,
            view: View,
            path: &str,
        ) -> Result<Option<Self::Key>, ReadError> {
            match self.keys.get(&(view, path.to_owned())) {
                None => Ok(None),
                Some(k) if k.denied => Err(denied(path)),
                Some(_) => Ok(Some((view, path.to_owned()))),
            }
        }

        fn last_write(&mut self, key: &Self::Key) -> Result<u64, ReadError> {
            Ok(self.keys[key].last_write)
        }

        fn subkeys(&mut self, (view, path): &Self::Key) -> Result<Vec<String>, ReadError> {
            let prefix = format!("{path}\\");
            Ok(self
                .keys
                .keys()
                .filter(|(v, p)| v == view && p.starts_with(&prefix))
                .map(|(_, p)| &p[prefix.len()..])
                .filter(|rest| !rest.contains('\\'))
                .map(str::to_owned)
                .collect())
        }

        fn values(&mut self, key: &Self::Key) -> Result<Vec<RawValue>, ReadError> {
            self.value_reads += 1;
            Ok(self.keys[key]
                .values
                .iter()
                .map(|(name, (kind, bytes))| RawValue {
                    name: name.clone(),
                    kind: *kind,
                    bytes: bytes.clone(),
                })
                .collect())
        }

        fn security(&mut self, key: &Self::Key) -> Result<Vec<u8>, ReadError> {
            Ok(self.keys[key].security.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fake::FakeRegistry, *};

    const RUN: &str = "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run";

    fn watched(depth: u32) -> WatchedKey {
        WatchedKey {
            hive: Hive::Hklm,
            path: RUN.into(),
            view: View::Native,
            depth,
            exclude_values: vec!["Temp*".into()],
        }
    }

    #[test]
    fn a_walk_reads_values_and_subkeys_to_its_depth_and_leaves_out_excluded_values() {
        let mut reg = FakeRegistry::default();
        reg.set(View::Native, RUN, "Updater", 1, b"u\0");
        reg.set(View::Native, RUN, "tempfile", 1, b"t\0");
        reg.set(View::Native, &format!("{RUN}\\Sub"), "", 4, &[1, 0, 0, 0]);
        reg.set(
            View::Native,
            &format!("{RUN}\\Sub\\Deep"),
            "x",
            4,
            &[2, 0, 0, 0],
        );
        reg.set(View::Wow32, RUN, "Other", 1, b"o\0");
        let shallow = walk(&mut reg, &watched(1), &Tree::new(), Reuse::UnchangedKeys);
        assert_eq!(
            shallow.tree.keys().collect::<Vec<_>>(),
            [&RUN.to_owned(), &format!("{RUN}\\Sub")]
        );
        assert_eq!(
            shallow.tree[RUN].values.keys().collect::<Vec<_>>(),
            ["Updater"]
        );
        let deep = walk(&mut reg, &watched(5), &Tree::new(), Reuse::UnchangedKeys);
        assert_eq!(deep.tree.len(), 3);
        assert!(deep.tree[&format!("{RUN}\\Sub")].values.contains_key(""));
        let missing = WatchedKey {
            path: "SOFTWARE\\Nope".into(),
            ..watched(1)
        };
        assert!(
            walk(&mut reg, &missing, &Tree::new(), Reuse::UnchangedKeys)
                .tree
                .is_empty()
        );
    }

    #[test]
    fn keys_whose_last_write_did_not_move_are_not_read_again() {
        let mut reg = FakeRegistry::default();
        reg.set(View::Native, RUN, "a", 1, b"a\0");
        reg.set(View::Native, &format!("{RUN}\\Sub"), "b", 1, b"b\0");
        let first = walk(&mut reg, &watched(1), &Tree::new(), Reuse::UnchangedKeys);
        assert_eq!((first.keys_read, first.keys_skipped), (2, 0));
        let reads = reg.value_reads;
        let again = walk(&mut reg, &watched(1), &first.tree, Reuse::UnchangedKeys);
        assert_eq!((again.keys_read, again.keys_skipped), (0, 2));
        assert_eq!(reg.value_reads, reads);
        assert_eq!(again.tree, first.tree);
        reg.set(View::Native, &format!("{RUN}\\Sub"), "b", 1, b"c\0");
        let third = walk(&mut reg, &watched(1), &again.tree, Reuse::UnchangedKeys);
        assert_eq!((third.keys_read, third.keys_skipped), (1, 1));
        assert_ne!(third.tree, again.tree);
    }

    #[test]
    fn an_unreadable_subkey_keeps_its_previous_state() {
        let mut reg = FakeRegistry::default();
        reg.set(View::Native, RUN, "a", 1, b"a\0");
        reg.set(View::Native, &format!("{RUN}\\Locked"), "b", 1, b"b\0");
        reg.set(View::Native, &format!("{RUN}\\Locked\\In"), "c", 1, b"c\0");
        let first = walk(&mut reg, &watched(3), &Tree::new(), Reuse::UnchangedKeys);
        assert_eq!(first.tree.len(), 3);
        reg.keys
            .get_mut(&(View::Native, format!("{RUN}\\Locked")))
            .expect("key")
            .denied = true;
        let second = walk(&mut reg, &watched(3), &first.tree, Reuse::UnchangedKeys);
        assert_eq!(second.tree, first.tree, "nothing reported deleted");
        assert_eq!(second.unreadable.len(), 1);
        assert_eq!(second.unreadable[0].code, 5);
    }

    #[test]
    fn an_unreadable_key_keeps_its_whole_subtree_whatever_its_siblings_names() {
        let mut reg = FakeRegistry::default();
        reg.touch(View::Native, RUN);
        for key in ["X", "X.old", "XBar", "X\\child", "X\\child\\deep"] {
            reg.set(View::Native, &format!("{RUN}\\{key}"), "v", 1, b"v\0");
        }
        let first = walk(&mut reg, &watched(3), &Tree::new(), Reuse::UnchangedKeys);
        assert_eq!(first.tree.len(), 6);
        reg.keys
            .get_mut(&(View::Native, format!("{RUN}\\X")))
            .expect("key")
            .denied = true;
        let second = walk(&mut reg, &watched(3), &first.tree, Reuse::UnchangedKeys);
        assert_eq!(second.tree, first.tree, "X\\child is not reported deleted");
    }

    #[test]
    fn a_full_walk_reads_values_even_when_the_last_write_time_was_set_back() {
        let mut reg = FakeRegistry::default();
        reg.set(View::Native, RUN, "a", 1, b"a\0");
        let first = walk(&mut reg, &watched(0), &Tree::new(), Reuse::UnchangedKeys);
        // Timestomped: the value changes, the last-write time is put back.
        let key = reg
            .keys
            .get_mut(&(View::Native, RUN.to_owned()))
            .expect("key");
        key.values.insert("a".into(), (1, b"b\0".to_vec()));
        let quick = walk(&mut reg, &watched(0), &first.tree, Reuse::UnchangedKeys);
        assert_eq!(quick.tree, first.tree, "a quick walk trusts the time");
        let full = walk(&mut reg, &watched(0), &first.tree, Reuse::Nothing);
        assert_ne!(full.tree, first.tree, "a full walk reads the values");
        assert_eq!(full.keys_skipped, 0);
    }

    #[test]
    fn wildcards_and_subtrees_compare_without_case() {
        assert!(wildcard("temp*", "TempFile"));
        assert!(wildcard("a?c", "ABC"));
        assert!(!wildcard("a?c", "abbc"));
        assert!(wildcard("*", ""));
        assert!(below("SOFTWARE\\Run", "software\\run\\x"));
        assert!(below("SOFTWARE\\Run", "SOFTWARE\\Run"));
        assert!(!below("SOFTWARE\\Run", "SOFTWARE\\RunOnce"));
    }
}
