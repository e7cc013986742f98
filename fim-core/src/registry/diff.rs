//! What changed between two snapshots of a watched key: keys created and deleted (with
//! the values they held), values created, deleted and modified (saying whether the type,
//! the size, the content or the key's ACL changed), in key order, each key before its
//! values.

use super::{
    Location, RegistryEvent, State, ValueState,
    snapshot::{Tree, WatchedKey},
};
use crate::event::{Action, Origin};

/// The `fim.sensor` of registry events.
pub const SENSOR: &str = "registry";

/// How the events of one comparison are told.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    /// When the comparison was made (ns since the Unix epoch).
    pub time_unix_ns: i128,
    /// How the change came to be known.
    pub origin: Origin,
}

/// The events that take `before` to `after`, both snapshots of `watched`.
pub fn diff(watched: &WatchedKey, before: &Tree, after: &Tree, cx: Context) -> Vec<RegistryEvent> {
    let mut out = Vec::new();
    let event = |key: &str, value: Option<&str>, action: Action| RegistryEvent {
        action,
        time_unix_ns: cx.time_unix_ns,
        location: Location {
            hive: watched.hive.as_str().to_owned(),
            key: key.to_owned(),
            value: value.map(str::to_owned),
        },
        view: watched.view,
        before: None,
        after: None,
        changed: Vec::new(),
        origin: cx.origin,
        sensor: SENSOR,
    };
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for key in keys {
        match (before.get(key), after.get(key)) {
            (None, Some(a)) => {
                let mut e = event(key, None, Action::Added);
                e.after = Some(key_state(a));
                out.push(e);
                for (name, v) in &a.values {
                    let mut e = event(key, Some(name), Action::Added);
                    e.after = Some(State::Value(v.clone()));
                    out.push(e);
                }
            }
            (Some(b), None) => {
                let mut e = event(key, None, Action::Removed);
                e.before = Some(key_state(b));
                out.push(e);
                for (name, v) in &b.values {
                    let mut e = event(key, Some(name), Action::Removed);
                    e.before = Some(State::Value(v.clone()));
                    out.push(e);
                }
            }
            (Some(b), Some(a)) => {
                if b.security.is_some() && a.security.is_some() && b.security != a.security {
                    let mut e = event(key, None, Action::Changed);
                    e.before = Some(key_state(b));
                    e.after = Some(key_state(a));
                    e.changed = vec!["acl"];
                    out.push(e);
                }
                let names: std::collections::BTreeSet<&String> =
                    b.values.keys().chain(a.values.keys()).collect();
                for name in names {
                    let (vb, va) = (b.values.get(name), a.values.get(name));
                    let action = match (vb, va) {
                        (None, Some(_)) => Action::Added,
                        (Some(_), None) => Action::Removed,
                        (Some(vb), Some(va)) if vb != va => Action::Changed,
                        _ => continue,
                    };
                    let mut e = event(key, Some(name), action);
                    e.before = vb.cloned().map(State::Value);
                    e.after = va.cloned().map(State::Value);
                    if let (Some(vb), Some(va)) = (vb, va) {
                        e.changed = value_changes(vb, va);
                    }
                    out.push(e);
                }
            }
            (None, None) => {}
        }
    }
    out
}

fn key_state(k: &super::KeyState) -> State {
    State::Key {
        last_write: k.last_write,
        security: k.security,
    }
}

/// What differs between two states of one value.
fn value_changes(b: &ValueState, a: &ValueState) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if b.kind != a.kind {
        changed.push("type");
    }
    if b.size != a.size {
        changed.push("size");
    }
    if b.sha256 != a.sha256 {
        changed.push("sha256");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::{
        super::{
            Hive, View,
            snapshot::{Reuse, fake::FakeRegistry, walk},
        },
        *,
    };

    const RUN: &str = "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run";

    fn watched() -> WatchedKey {
        WatchedKey {
            hive: Hive::Hklm,
            path: RUN.into(),
            view: View::Native,
            depth: 2,
            exclude_values: Vec::new(),
        }
    }

    fn cx() -> Context {
        Context {
            time_unix_ns: 1,
            origin: Origin::Realtime,
        }
    }

    fn sz(s: &str) -> Vec<u8> {
        s.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    /// (action, key below RUN, value, changed) of each event.
    fn summary(events: &[RegistryEvent]) -> Vec<(Action, String, Option<String>, Vec<&str>)> {
        events
            .iter()
            .map(|e| {
                (
                    e.action,
                    e.location.key[RUN.len()..].to_owned(),
                    e.location.value.clone(),
                    e.changed.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn every_kind_of_change_is_one_event_with_before_and_after() {
        let w = watched();
        let mut reg = FakeRegistry::default();
        reg.set(View::Native, RUN, "Keep", 1, &sz("same"));
        reg.set(View::Native, RUN, "Edit", 1, &sz("C:\\good.exe"));
        reg.set(View::Native, RUN, "Retype", 1, &sz("12"));
        reg.set(View::Native, RUN, "Gone", 4, &[1, 0, 0, 0]);
        reg.set(View::Native, &format!("{RUN}\\Old"), "x", 3, &[1, 2]);
        let before = walk(&mut reg, &w, &Tree::new(), Reuse::UnchangedKeys).tree;

        reg.set(View::Native, RUN, "Edit", 1, &sz("C:\\evil.exe"));
        reg.set(View::Native, RUN, "Retype", 4, &[1, 0, 0, 0]);
        reg.keys
            .get_mut(&(View::Native, RUN.to_owned()))
            .expect("key")
            .values
            .remove("Gone");
        reg.set(View::Native, RUN, "", 2, &sz("%SystemRoot%\\x.exe"));
        reg.delete(View::Native, &format!("{RUN}\\Old"));
        reg.set(
            View::Native,
            &format!("{RUN}\\New"),
            "y",
            11,
            &7u64.to_le_bytes(),
        );
        reg.touch(View::Native, RUN).security = b"D:(A;;KA;;;WD)".to_vec();
        let after = walk(&mut reg, &w, &before, Reuse::UnchangedKeys).tree;

        let events = diff(&w, &before, &after, cx());
        let s = |x: &str| Some(x.to_owned());
        assert_eq!(
            summary(&events),
            [
                (Action::Changed, String::new(), None, vec!["acl"]),
                (Action::Added, String::new(), s(""), vec![]),
                (Action::Changed, String::new(), s("Edit"), vec!["sha256"]),
                (Action::Removed, String::new(), s("Gone"), vec![]),
                (
                    Action::Changed,
                    String::new(),
                    s("Retype"),
                    vec!["type", "size", "sha256"]
                ),
                (Action::Added, "\\New".into(), None, vec![]),
                (Action::Added, "\\New".into(), s("y"), vec![]),
                (Action::Removed, "\\Old".into(), None, vec![]),
                (Action::Removed, "\\Old".into(), s("x"), vec![]),
            ]
        );
        let edit = &events[2];
        let data = |st: &Option<State>| match st {
            Some(State::Value(v)) => v.data().map(|d| d.strings()),
            other => panic!("not a value: {other:?}"),
        };
        assert_eq!(data(&edit.before), Some(vec!["C:\\good.exe".to_owned()]));
        assert_eq!(data(&edit.after), Some(vec!["C:\\evil.exe".to_owned()]));
        assert_eq!(edit.location.path(), format!("HKLM\\{RUN}\\Edit"));
        assert_eq!(data(&events[8].before), Some(vec!["0102".to_owned()]));
        assert!(
            diff(&w, &after, &after, cx()).is_empty(),
            "no change, no event"
        );
    }

    #[test]
    fn a_watched_key_that_appears_or_goes_is_reported_whole() {
        let w = watched();
        let mut reg = FakeRegistry::default();
        let empty = walk(&mut reg, &w, &Tree::new(), Reuse::UnchangedKeys).tree;
        reg.set(View::Native, RUN, "a", 1, &sz("a"));
        let now = walk(&mut reg, &w, &empty, Reuse::UnchangedKeys).tree;
        let added = diff(&w, &empty, &now, cx());
        assert_eq!(
            summary(&added),
            [
                (Action::Added, String::new(), None, vec![]),
                (Action::Added, String::new(), Some("a".into()), vec![]),
            ]
        );
        let removed = diff(&w, &now, &empty, cx());
        assert_eq!(removed[0].action, Action::Removed);
        assert_eq!(removed.len(), 2);
    }

    #[test]
    fn an_unreadable_descriptor_is_not_an_acl_change() {
        let w = watched();
        let mut before = Tree::new();
        before.insert(
            RUN.into(),
            super::super::KeyState {
                last_write: 1,
                security: Some([1; 32]),
                values: Default::default(),
            },
        );
        let mut after = before.clone();
        after.get_mut(RUN).expect("key").security = None;
        assert!(diff(&w, &before, &after, cx()).is_empty());
    }
}
