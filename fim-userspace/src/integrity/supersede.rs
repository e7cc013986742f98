//! Which observations a batch of events makes pointless.
//!
//! The engine observes a path after its event, when it gets to it. Under load the sensor
//! hands over hundreds of events at once, and a later one in the same batch may already
//! have removed the name (unlink, a rename away) or bound it to another object (a create,
//! a rename over it). Observing the name then finds nothing, or worse, the newer object; so
//! such an event is reported without an observation, saying why, and the files of a churn
//! (create, write, rename, chmod, unlink in a row) are not opened five times to find them
//! gone. At low rates each event arrives alone and is observed as before.

use fim_core::event::Action;

/// Whether `action` changes what its name (and, for a rename, its old name) refers to.
fn rebinds(action: Action) -> bool {
    matches!(
        action,
        Action::Unlink
            | Action::Rmdir
            | Action::Removed
            | Action::Create
            | Action::Link
            | Action::Symlink
            | Action::Mknod
            | Action::Mkdir
            | Action::Rename
    )
}

/// For each event of a batch, given its action and its keys (the path, then a rename's
/// old path), whether a later event of the batch removes or rebinds the path it would
/// observe.
pub fn superseded(events: &[(Action, &[Vec<u8>])]) -> Vec<bool> {
    let mut out = vec![false; events.len()];
    let mut rebound: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
    for (j, (action, keys)) in events.iter().enumerate().rev() {
        let Some(path) = keys.first() else {
            continue;
        };
        out[j] = rebound.contains(path.as_slice());
        if rebinds(*action) {
            for k in keys.iter() {
                rebound.insert(k);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(p: &str) -> Vec<u8> {
        p.as_bytes().to_vec()
    }

    #[test]
    fn a_churned_file_is_observed_by_no_event_but_a_name_kept_is() {
        let (f, r, keep) = (
            vec![k("/d/f")],
            vec![k("/d/r"), k("/d/f")],
            vec![k("/d/keep")],
        );
        let r_only = vec![k("/d/r")];
        let batch: Vec<(Action, &[Vec<u8>])> = vec![
            (Action::Create, &f),
            (Action::Write, &f),
            (Action::CloseWrite, &f),
            (Action::Chmod, &keep),
            (Action::Rename, &r),
            (Action::Chmod, &r_only),
            (Action::Unlink, &r_only),
            (Action::Chmod, &keep),
        ];
        assert_eq!(
            superseded(&batch),
            [true, true, true, false, true, true, false, false]
        );
    }

    #[test]
    fn a_name_created_again_later_supersedes_what_came_before_it_only() {
        let p = vec![k("/d/p")];
        let batch: Vec<(Action, &[Vec<u8>])> = vec![
            (Action::CloseWrite, &p),
            (Action::Create, &p),
            (Action::CloseWrite, &p),
            (Action::Chmod, &p),
        ];
        assert_eq!(superseded(&batch), [true, false, false, false]);
    }
}
