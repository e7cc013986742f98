//! dpkg's recorded digests of the watched files, read once at start (`fim-core::packages`
//! holds and checks them).

use std::path::Path;

use fim_core::{packages::PackageIndex, watch::WatchSet};
use log::{info, warn};

/// Where dpkg keeps one `PACKAGE.md5sums` per package (under `root`).
const DPKG_INFO: &str = "/var/lib/dpkg/info";

/// The recorded digests of the files `watch` covers, from `root`'s dpkg database (empty on
/// a host without dpkg). Paths are put under `root` and indexed by their canonical spelling.
pub fn load(root: &str, watch: &WatchSet) -> PackageIndex {
    let root = root.trim_end_matches('/');
    let dir = format!("{root}{DPKG_INFO}");
    let mut index = PackageIndex::default();
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
        malformed += index.add(package, &text, |absolute| {
            let mut under_root = root.as_bytes().to_vec();
            under_root.extend_from_slice(absolute);
            let canonical = watch.canonical(&under_root);
            watch.matches(&canonical).then_some(canonical)
        });
    }
    if malformed > 0 {
        warn!("{dir}: {malformed} malformed md5sums lines left out");
    }
    info!(
        "package digests: {} watched files recorded by {packages} package(s)",
        index.len()
    );
    index
}
