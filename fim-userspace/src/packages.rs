//! dpkg's recorded digests of the watched files, read once at start (`fim-core::packages`
//! holds and checks them).

use std::path::Path;

use std::sync::Arc;

use fim_core::{
    packages::{PackageIndex, Reread},
    watch::WatchSet,
};
use log::{info, warn};

/// Where dpkg keeps one `PACKAGE.md5sums` per package (under `root`).
const DPKG_INFO: &str = "/var/lib/dpkg/info";

/// The recorded digests of the files `watch` covers, from `root`'s dpkg database (empty on
/// a host without dpkg). Paths are put under `root` and indexed by their canonical spelling.
pub fn load(root: &str, watch: &WatchSet) -> PackageIndex {
    let root = root.trim_end_matches('/');
    let reread: Reread = {
        let (root, watch) = (root.to_owned(), watch.clone());
        Arc::new(move |package, path| {
            let text = std::fs::read(format!("{root}{DPKG_INFO}/{package}.md5sums")).ok()?;
            let mut one = PackageIndex::default();
            one.add(package, &text, |absolute| keep(&root, &watch, absolute));
            one.recorded(path)
        })
    };
    let dir = format!("{root}{DPKG_INFO}");
    let mut index = PackageIndex::default().with_reread(reread);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => {
            if Path::new(&dir).exists() {
                warn!("reading {dir}: {e}; changed files are not checked against packages");
            }
            return index;
        }
    };
    let (mut packages, mut malformed) = (0, 0);
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(package) = name.to_str().and_then(|n| n.strip_suffix(".md5sums")) else {
            continue;
        };
        let Ok(text) = std::fs::read(entry.path()) else {
            continue;
        };
        packages += 1;
        malformed += index.add(package, &text, |absolute| keep(root, watch, absolute));
    }
    if malformed > 0 {
        warn!("{dir}: {malformed} malformed md5sums lines left out");
    }
    info!(
        "package digests: {} watched files recorded by {} of {packages} package(s)",
        index.len(),
        index.packages()
    );
    index
}

/// The canonical spelling of a recorded path (relative to `/`) put under `root`, when it is
/// watched.
fn keep(root: &str, watch: &WatchSet, absolute: &[u8]) -> Option<Vec<u8>> {
    let mut under_root = root.as_bytes().to_vec();
    under_root.extend_from_slice(absolute);
    let canonical = watch.canonical(&under_root);
    watch.matches(&canonical).then_some(canonical)
}
