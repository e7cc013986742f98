//! The walk a sensor makes at start to learn watched objects by identity: the directories
//! on the way to each watched root, the roots, and everything below them (not following
//! symlinks). The fanotify sensor learns directories and hard-linked files by handle; the
//! eBPF sensor learns roots and hard-linked files by device and inode.

use std::{fs::Metadata, os::unix::ffi::OsStrExt};

use fim_core::watch::{ScanRoot, WatchSet};

/// Where a visited path stands relative to the rule being walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A directory on the way to the root.
    Ancestor,
    /// The root of the rule itself (its canonical spelling).
    Root,
    /// Below the root (a tree's contents, a glob directory's entries).
    Below,
}

fn os(path: &[u8]) -> &std::ffi::OsStr {
    std::ffi::OsStr::from_bytes(path)
}

/// The proper ancestors of absolute `path`, from `/` down.
pub fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'/' && i + 1 < path.len())
        .map(move |(i, _)| if i == 0 { &path[..1] } else { &path[..i] })
}

/// The entries of directory `dir`, with whether each is a directory (not following
/// symlinks).
pub fn children(dir: &[u8]) -> Vec<(Vec<u8>, bool)> {
    let Ok(entries) = std::fs::read_dir(os(dir)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| {
            let mut p = dir.to_vec();
            if p != b"/" {
                p.push(b'/');
            }
            p.extend_from_slice(e.file_name().as_encoded_bytes());
            (p, e.file_type().is_ok_and(|t| t.is_dir()))
        })
        .collect()
}

/// Calls `visit` with `path`'s metadata (`lstat`), if it still exists.
fn at(
    path: &[u8],
    place: Place,
    root: &ScanRoot,
    visit: &mut impl FnMut(&[u8], &Metadata, Place, &ScanRoot),
) {
    if let Ok(meta) = std::fs::symlink_metadata(os(path)) {
        visit(path, &meta, place, root);
    }
}

/// Visits every existing path of the walk with its metadata (`lstat`).
pub fn walk(watch: &WatchSet, visit: impl FnMut(&[u8], &Metadata, Place, &ScanRoot)) {
    walk_roots(&watch.scan_roots(), visit);
}

/// [`walk`] over some of a watch set's roots (those a reload added).
pub fn walk_roots(roots: &[ScanRoot], mut visit: impl FnMut(&[u8], &Metadata, Place, &ScanRoot)) {
    for root in roots {
        let (path, tree) = match &root {
            ScanRoot::Tree(p) => (p.clone(), true),
            ScanRoot::Exact(p) => (p.clone(), false),
            ScanRoot::Children { dir, .. } => (dir.clone(), false),
        };
        for ancestor in ancestors(&path) {
            at(ancestor, Place::Ancestor, root, &mut visit);
        }
        at(&path, Place::Root, root, &mut visit);
        if tree {
            below(&path, root, &mut visit);
        } else if let ScanRoot::Children { dir, .. } = root {
            for (child, _) in children(dir) {
                at(&child, Place::Below, root, &mut visit);
            }
        }
    }
}

/// Visits everything below directory `dir`, depth first, with its metadata.
pub fn below(
    dir: &[u8],
    root: &ScanRoot,
    visit: &mut impl FnMut(&[u8], &Metadata, Place, &ScanRoot),
) {
    let mut stack = vec![dir.to_vec()];
    while let Some(d) = stack.pop() {
        for (child, is_dir) in children(&d) {
            at(&child, Place::Below, root, visit);
            if is_dir {
                stack.push(child);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_are_listed_from_the_top() {
        let got: Vec<&[u8]> = ancestors(b"/a/b/c").collect();
        assert_eq!(got, vec![&b"/"[..], b"/a", b"/a/b"]);
        assert_eq!(ancestors(b"/").count(), 0);
    }

    #[test]
    fn a_tree_is_walked_with_its_ancestors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        std::fs::create_dir(root.join("d")).expect("mkdir");
        std::fs::write(root.join("d/f"), b"x").expect("write");
        let patterns = vec![root.to_string_lossy().into_owned()];
        let set = WatchSet::new(&patterns, true, fim_core::watch::probe_disk).expect("set");
        let mut seen = Vec::new();
        walk(&set, |p, _, place, _| seen.push((p.to_vec(), place)));
        let root_bytes = root.as_os_str().as_bytes().to_vec();
        assert!(seen.contains(&(b"/".to_vec(), Place::Ancestor)));
        assert!(seen.contains(&(root_bytes.clone(), Place::Root)));
        let mut f = root_bytes.clone();
        f.extend_from_slice(b"/d/f");
        assert!(seen.contains(&(f, Place::Below)));
    }
}
