//! Naming what fanotify reports without a name: `FAN_ATTRIB` (an attribute changed, which
//! one unsaid; the kernel also merges a chmod and a chown in a row into one record) and
//! `FAN_CREATE` (a new name, of a file, a symlink or a special file alike). fanotify does
//! not say, so the name comes from the values the integrity engine read before and after:
//! the engine calls [`name_from_values`] through the pipeline ([`crate::sources::Namer`])
//! once it has them, and knows nothing of fanotify itself.

use fim_core::{
    attrs::{Attr, FileType, Snapshot},
    event::{Action, FileEvent, PathSource, ReportedPath},
};

/// Names `event` from the values before and after it and what changed between them (an
/// event that needs no naming is left alone). Returns false when the event turned out not
/// to be the start of a write to a regular file (a new symlink, FIFO, device...), whose
/// write burst must then end.
pub fn name_from_values(
    event: &mut FileEvent,
    before: Option<&Snapshot>,
    after: Option<&Snapshot>,
    changed: &[Attr],
) -> bool {
    if event.action == Action::Attrib {
        event.action = name_attrib(changed, before, after);
    }
    // fanotify reports every new name as a create: a symlink or a special file is told by
    // its type (a sensor that saw the file can have said so already).
    if event.action == Action::Create
        && event.path.source == PathSource::FileHandle
        && let Some(a) = after
    {
        match a.attrs.file_type {
            FileType::Symlink => {
                event.action = Action::Symlink;
                event.source = a.attrs.symlink_target.clone().map(|t| ReportedPath {
                    bytes: t,
                    source: PathSource::FileHandle,
                    truncated: false,
                });
            }
            FileType::Fifo | FileType::Socket | FileType::CharDevice | FileType::BlockDevice => {
                event.action = Action::Mknod;
            }
            _ => {}
        }
        return event.action == Action::Create && a.attrs.file_type == FileType::File;
    }
    true
}

/// What an unspecific attribute change (fanotify's `FAN_ATTRIB`, which the kernel also
/// merges: a chmod and a chown in a row can arrive as one record) was, from the values
/// before and after. A name is given only when one kind of operation explains every
/// change: an owner change (which may also clear the setuid/setgid bits), an extended
/// attribute or ACL change (ACLs also move mode bits), a mode change. Anything else, or
/// times only, stays `attrib`, with `fim.changed` saying what changed.
fn name_attrib(changed: &[Attr], before: Option<&Snapshot>, after: Option<&Snapshot>) -> Action {
    let any = |set: &[Attr]| changed.iter().any(|c| set.contains(c));
    let owner = any(&[Attr::Uid, Attr::Gid]);
    let xattr = any(&[
        Attr::Xattrs,
        Attr::AclAccess,
        Attr::AclDefault,
        Attr::Capability,
    ]);
    let mode = any(&[Attr::Mode]);
    // Mode bits a chown may clear by itself: setuid and setgid.
    let only_setid_cleared = match (before, after) {
        (Some(b), Some(a)) => {
            let (b, a) = (b.attrs.mode, a.attrs.mode);
            (b ^ a) & !0o6000 == 0 && a & !b == 0
        }
        _ => false,
    };
    match (owner, xattr, mode) {
        (true, false, false) => Action::Chown,
        (true, false, true) if only_setid_cleared => Action::Chown,
        (false, true, _) => {
            let count = |s: Option<&Snapshot>| {
                s.map_or(0, |s| {
                    let a = &s.attrs;
                    a.xattrs.len()
                        + usize::from(a.acl_access.is_some())
                        + usize::from(a.acl_default.is_some())
                        + usize::from(a.capability.is_some())
                })
            };
            if count(after) < count(before) {
                Action::RemoveXattr
            } else {
                Action::SetXattr
            }
        }
        (false, false, true) => Action::Chmod,
        _ => Action::Attrib,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_changes_are_named_from_their_values() {
        let snap = |xattrs: usize| {
            let mut s = crate::test_support::snapshot(FileType::File, 0, 0);
            s.attrs.xattrs = (0..xattrs).map(|i| (vec![i as u8], [0; 32])).collect();
            s
        };
        let (one, two) = (snap(1), snap(2));
        let name = |c: &[Attr], b: &Snapshot, a: &Snapshot| name_attrib(c, Some(b), Some(a));
        let mut setuid = snap(1);
        setuid.attrs.mode = 0o4755;
        let mut plain = snap(1);
        plain.attrs.mode = 0o755;
        let mut private = snap(1);
        private.attrs.mode = 0o700;
        assert_eq!(
            name(&[Attr::Mode, Attr::Uid], &setuid, &plain),
            Action::Chown,
            "a chown clears setuid by itself"
        );
        assert_eq!(
            name(&[Attr::Mode, Attr::Uid], &plain, &private),
            Action::Attrib,
            "a chmod and a chown merged into one record: neither name alone is true"
        );
        assert_eq!(name(&[Attr::Uid, Attr::Xattrs], &one, &two), Action::Attrib);
        assert_eq!(
            name(&[Attr::Mode, Attr::AclAccess], &one, &two),
            Action::SetXattr
        );
        assert_eq!(name(&[Attr::Xattrs], &two, &one), Action::RemoveXattr);
        assert_eq!(name(&[Attr::Mode, Attr::Ctime], &one, &one), Action::Chmod);
        assert_eq!(name(&[Attr::Mtime], &one, &one), Action::Attrib);
    }

    #[test]
    fn a_new_name_is_told_by_its_type() {
        let snap = |file_type: FileType, target: Option<&[u8]>| {
            let mut s = crate::test_support::snapshot(file_type, 1, 0o644);
            s.attrs.symlink_target = target.map(<[u8]>::to_vec);
            s
        };
        let create = |source: PathSource| {
            FileEvent::new(
                Action::Create,
                ReportedPath::new(b"/w/n".to_vec(), source),
                "fanotify",
            )
        };
        let mut ev = create(PathSource::FileHandle);
        let link = snap(FileType::Symlink, Some(b"/etc/passwd"));
        assert!(!name_from_values(&mut ev, None, Some(&link), &[]));
        assert_eq!(ev.action, Action::Symlink);
        assert_eq!(
            ev.source.map(|s| s.bytes),
            Some(b"/etc/passwd".to_vec()),
            "the target"
        );
        let mut ev = create(PathSource::FileHandle);
        assert!(!name_from_values(
            &mut ev,
            None,
            Some(&snap(FileType::Fifo, None)),
            &[]
        ));
        assert_eq!(ev.action, Action::Mknod);
        let mut ev = create(PathSource::FileHandle);
        assert!(name_from_values(
            &mut ev,
            None,
            Some(&snap(FileType::File, None)),
            &[]
        ));
        assert_eq!(
            ev.action,
            Action::Create,
            "a file's create starts its burst"
        );
        // A sensor that saw the object named it already.
        let mut ev = create(PathSource::KernelObject);
        assert!(name_from_values(&mut ev, None, Some(&link), &[]));
        assert_eq!(ev.action, Action::Create);
    }
}
