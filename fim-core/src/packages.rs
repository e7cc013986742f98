//! What the package manager says a watched file should contain: dpkg's recorded digests
//! (`/var/lib/dpkg/info/PACKAGE.md5sums`), for the watched files only.
//!
//! A changed file under a package's control is compared with the digest dpkg recorded when
//! it installed the file: the same content is a package's own file (an upgrade, a
//! reinstall), other content is not what any package installed (a modified `/usr/bin/ls`).
//! Pure logic: the caller reads the files and says which paths are watched.

use std::collections::HashMap;

/// A file's content against its package's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageCheck {
    /// The package that installed the file.
    pub package: String,
    /// Whether the content is what the package recorded.
    pub matches: bool,
}

/// Reads a package's record of one file again: (package, canonical path) -> digest.
pub type Reread = std::sync::Arc<dyn Fn(&str, &[u8]) -> Option<[u8; 16]> + Send + Sync>;

/// Recorded digests of the watched files, by canonical path.
#[derive(Clone, Default)]
pub struct PackageIndex {
    packages: Vec<String>,
    by_path: HashMap<Vec<u8>, (u32, [u8; 16])>,
    /// Asked when content differs from the record read at start: an upgrade since then
    /// has a newer record.
    reread: Option<Reread>,
}

impl std::fmt::Debug for PackageIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackageIndex")
            .field("packages", &self.packages.len())
            .field("files", &self.by_path.len())
            .finish()
    }
}

impl PackageIndex {
    /// Adds the entries of one package's `md5sums` text (`HEX  relative/path` per line)
    /// whose path `keep` accepts; `keep` gets the absolute path and returns the canonical
    /// one to index it under (or `None`). Returns how many lines were malformed.
    pub fn add(
        &mut self,
        package: &str,
        md5sums: &[u8],
        keep: impl Fn(&[u8]) -> Option<Vec<u8>>,
    ) -> usize {
        let mut malformed = 0;
        let mut id = None;
        for line in md5sums.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Some((digest, path)) = parse_line(line) else {
                malformed += 1;
                continue;
            };
            let mut absolute = Vec::with_capacity(path.len() + 1);
            absolute.push(b'/');
            absolute.extend_from_slice(path);
            let Some(key) = keep(&absolute) else {
                continue;
            };
            let id = *id.get_or_insert_with(|| {
                self.packages.push(package.to_owned());
                (self.packages.len() - 1) as u32
            });
            self.by_path.insert(key, (id, digest));
        }
        malformed
    }

    /// Whether `path` is a package's file.
    pub fn owns(&self, path: &[u8]) -> bool {
        self.by_path.contains_key(path)
    }

    /// Packages with at least one file indexed.
    pub fn packages(&self) -> usize {
        self.packages.len()
    }

    /// Files indexed.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    /// Whether no file is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    /// Sets how a package's current record of a file is read again.
    pub fn with_reread(mut self, reread: Reread) -> Self {
        self.reread = Some(reread);
        self
    }

    /// `path`'s content (its MD5 `digest`) against its package's record, if a package
    /// installed it. Content that differs from the record read at start is checked against
    /// the package's current record (an upgrade since), when it can be read again.
    pub fn check(&self, path: &[u8], digest: &[u8; 16]) -> Option<PackageCheck> {
        let (id, recorded) = self.by_path.get(path)?;
        let package = &self.packages[*id as usize];
        let matches = recorded == digest
            || self
                .reread
                .as_ref()
                .and_then(|reread| reread(package, path))
                .is_some_and(|current| current == *digest);
        Some(PackageCheck {
            package: package.clone(),
            matches,
        })
    }

    /// The digest this index holds for `path`.
    pub fn recorded(&self, path: &[u8]) -> Option<[u8; 16]> {
        self.by_path.get(path).map(|(_, d)| *d)
    }
}

/// `HEX32` then two spaces (or a space and `*`) then the path.
fn parse_line(line: &[u8]) -> Option<([u8; 16], &[u8])> {
    let (hex, rest) = line.split_at_checked(32)?;
    let path = rest
        .strip_prefix(b"  ")
        .or_else(|| rest.strip_prefix(b" *"))?;
    if path.is_empty() {
        return None;
    }
    let mut digest = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        digest[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some((digest, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const COREUTILS: &[u8] = b"7a4179e324c784b99e98fedee05260f7  bin/cat\n\
        db0817401cfd9c5a818ae919d10ba7c5  bin/chgrp\n\
        not a line\n\
        0123456789abcdef0123456789abcdef  usr/share/doc/coreutils/README\n";

    fn digest(hex: &str) -> [u8; 16] {
        parse_line(format!("{hex}  x").as_bytes()).expect("hex").0
    }

    #[test]
    fn only_watched_files_are_indexed_under_their_canonical_path() {
        let mut index = PackageIndex::default();
        // /bin is a symlink to /usr/bin here; documentation is not watched.
        let malformed = index.add("coreutils", COREUTILS, |p| {
            p.strip_prefix(b"/bin/")
                .map(|name| [b"/usr/bin/", name].concat())
        });
        assert_eq!(malformed, 1);
        assert_eq!(index.len(), 2);
        assert!(index.owns(b"/usr/bin/cat") && !index.owns(b"/bin/cat"));
        assert!(!index.owns(b"/usr/share/doc/coreutils/README"));
    }

    #[test]
    fn content_is_checked_against_the_recorded_digest() {
        let mut index = PackageIndex::default();
        index.add("coreutils", COREUTILS, |p| Some(p.to_vec()));
        let same = index.check(b"/bin/cat", &digest("7a4179e324c784b99e98fedee05260f7"));
        assert_eq!(
            same,
            Some(PackageCheck {
                package: "coreutils".into(),
                matches: true
            })
        );
        let other = index.check(b"/bin/cat", &digest("00000000000000000000000000000000"));
        assert_eq!(other.map(|c| c.matches), Some(false));
        assert_eq!(index.check(b"/usr/local/bin/tool", &[0; 16]), None);
    }

    #[test]
    fn a_package_with_no_watched_file_is_not_kept() {
        let mut index = PackageIndex::default();
        index.add("docs", COREUTILS, |_| None);
        assert!(index.is_empty() && index.packages.is_empty());
    }

    #[test]
    fn content_that_differs_is_checked_against_the_current_record() {
        let upgraded = digest("00000000000000000000000000000001");
        let mut index = PackageIndex::default();
        index.add("coreutils", COREUTILS, |p| Some(p.to_vec()));
        let index = index.with_reread(std::sync::Arc::new(move |package, path| {
            (package == "coreutils" && path == b"/bin/cat").then_some(upgraded)
        }));
        assert_eq!(
            index.check(b"/bin/cat", &upgraded).map(|c| c.matches),
            Some(true)
        );
        assert_eq!(
            index.check(b"/bin/cat", &[9; 16]).map(|c| c.matches),
            Some(false)
        );
    }
}
