//! Registry snapshots in the shared baseline (table `registry`): one row per key, under
//! the watched key it was read for, so a change made while fim was stopped is found by
//! the first walk after it starts.

use rusqlite::params;

use super::{
    KeyState,
    snapshot::{Tree, WatchedKey},
};
use crate::baseline::{Baseline, BaselineError};

/// The name a watched key's snapshot is stored under: view, hive and path
/// (`64:HKLM\SOFTWARE\...`), and what decides what the snapshot holds (depth, excluded
/// values), so that changing them starts a new snapshot (recorded without events) instead
/// of reporting what they let in or out as changes.
pub fn root_id(w: &WatchedKey) -> String {
    let mut id = format!("{}:{}\\{}", w.view.as_str(), w.hive.as_str(), w.path);
    id.push_str(&format!(" depth={}", w.depth));
    if !w.exclude_values.is_empty() {
        id.push_str(&format!(" exclude={}", w.exclude_values.join("|")));
    }
    id
}

impl Baseline {
    /// The stored snapshot of `root` (empty: none yet). A row that does not decode is
    /// left out, and logged: its key is read afresh and reported as created.
    pub fn registry_tree(&self, root: &str) -> Result<Tree, BaselineError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT path, state FROM registry WHERE root = ?1")?;
        let rows = stmt.query_map([root], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut tree = Tree::new();
        for row in rows {
            let (path, state) = row?;
            match serde_json::from_str::<KeyState>(&state) {
                Ok(s) => {
                    tree.insert(path, s);
                }
                Err(e) => log::error!("baseline: registry key {root} {path}: {e}"),
            }
        }
        Ok(tree)
    }

    /// Whether a snapshot of `root` was ever stored (a key that did not exist is stored
    /// as such, so its creation is reported).
    pub fn registry_known(&self, root: &str) -> Result<bool, BaselineError> {
        Ok(self.meta(&format!("registry:{root}"))?.is_some())
    }

    /// Stores `after` as the snapshot of `root`, which was `before`: writes what differs.
    pub fn put_registry_tree(
        &mut self,
        root: &str,
        before: &Tree,
        after: &Tree,
    ) -> Result<(), BaselineError> {
        self.tx()?;
        if !self.registry_known(root)? {
            self.set_meta(&format!("registry:{root}"), "1")?;
        }
        for path in before.keys().filter(|p| !after.contains_key(*p)) {
            self.conn
                .prepare_cached("DELETE FROM registry WHERE root = ?1 AND path = ?2")?
                .execute(params![root, path])?;
        }
        for (path, state) in after {
            if before.get(path) == Some(state) {
                continue;
            }
            let text = serde_json::to_string(state).unwrap_or_default();
            self.conn
                .prepare_cached("INSERT OR REPLACE INTO registry VALUES (?1, ?2, ?3)")?
                .execute(params![root, path, text])?;
        }
        Ok(())
    }

    /// Forgets the snapshots of every watched key not in `roots` (no longer configured).
    pub fn retain_registry_roots(&mut self, roots: &[String]) -> Result<u64, BaselineError> {
        let stored: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare("SELECT key FROM meta WHERE key LIKE 'registry:%'")?;
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()?
        };
        let mut gone = 0;
        for key in stored {
            let root = &key["registry:".len()..];
            if roots.iter().any(|r| r == root) {
                continue;
            }
            self.tx()?;
            self.conn
                .execute("DELETE FROM registry WHERE root = ?1", [root])?;
            self.conn
                .execute("DELETE FROM meta WHERE key = ?1", [&key])?;
            gone += 1;
        }
        Ok(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        baseline::Access,
        registry::{Hive, ValueState, View},
    };

    fn watched(path: &str) -> WatchedKey {
        WatchedKey {
            hive: Hive::Hklm,
            path: path.into(),
            view: View::Wow32,
            depth: 1,
            exclude_values: Vec::new(),
        }
    }

    #[test]
    fn a_snapshot_survives_a_restart_and_only_differences_are_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = root_id(&watched("SOFTWARE\\Run"));
        assert_eq!(root, "32:HKLM\\SOFTWARE\\Run depth=1");
        let excluding = WatchedKey {
            exclude_values: vec!["Temp*".into(), "x".into()],
            ..watched("SOFTWARE\\Run")
        };
        assert_eq!(
            root_id(&excluding),
            "32:HKLM\\SOFTWARE\\Run depth=1 exclude=Temp*|x"
        );
        let mut tree = Tree::new();
        let mut key = KeyState {
            last_write: 5,
            security: Some([3; 32]),
            ..KeyState::default()
        };
        key.values
            .insert("a".into(), ValueState::of(4, &[1, 0, 0, 0]));
        tree.insert("SOFTWARE\\Run".into(), key.clone());
        tree.insert("SOFTWARE\\Run\\Sub".into(), KeyState::default());
        {
            let mut b = Baseline::open(dir.path(), Access::Write).expect("open");
            assert!(!b.registry_known(&root).expect("meta"));
            b.put_registry_tree(&root, &Tree::new(), &tree)
                .expect("put");
            b.commit().expect("commit");
        }
        let mut b = Baseline::open(dir.path(), Access::Write).expect("reopen");
        assert!(b.registry_known(&root).expect("meta"));
        assert_eq!(b.registry_tree(&root).expect("tree"), tree);
        let mut after = tree.clone();
        after.remove("SOFTWARE\\Run\\Sub");
        after.get_mut("SOFTWARE\\Run").expect("key").last_write = 6;
        b.put_registry_tree(&root, &tree, &after).expect("put");
        b.commit().expect("commit");
        assert_eq!(b.registry_tree(&root).expect("tree"), after);
        assert_eq!(
            b.registry_tree(&root).expect("tree")["SOFTWARE\\Run"].last_write,
            6
        );
        // An empty snapshot (the key is missing) is known, and creation is then reported.
        let missing = root_id(&watched("SOFTWARE\\Missing"));
        b.put_registry_tree(&missing, &Tree::new(), &Tree::new())
            .expect("put");
        assert!(b.registry_known(&missing).expect("meta"));
        assert_eq!(
            b.retain_registry_roots(std::slice::from_ref(&missing))
                .expect("retain"),
            1
        );
        assert!(b.registry_tree(&root).expect("tree").is_empty());
        assert!(!b.registry_known(&root).expect("meta"));
    }
}
