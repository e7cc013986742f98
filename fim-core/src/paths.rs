//! Lexical path helpers on raw bytes (Linux paths need not be UTF-8), and their rendering
//! as text.

use std::{borrow::Cow, path::Path};

/// A model path's bytes as a [`Path`]. On Unix every byte string is a path, as is; elsewhere
/// the bytes are taken as UTF-8, an invalid sequence replaced.
pub fn bytes_to_path(bytes: &[u8]) -> Cow<'_, Path> {
    #[cfg(unix)]
    {
        // SAFETY: on Unix an `OsStr` is any byte string; its encoded bytes are the bytes.
        Cow::Borrowed(Path::new(unsafe {
            std::ffi::OsStr::from_encoded_bytes_unchecked(bytes)
        }))
    }
    #[cfg(not(unix))]
    {
        match String::from_utf8_lossy(bytes) {
            Cow::Borrowed(s) => Cow::Borrowed(Path::new(s)),
            Cow::Owned(s) => Cow::Owned(s.into()),
        }
    }
}

/// Renders bytes as text, escaping bytes that are not valid UTF-8 as `\xNN`
/// (and a literal backslash as `\\`, so the rendering is reversible).
pub fn render_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&chunk.valid().replace('\\', "\\\\"));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Cleans an absolute path lexically: collapses `//`, drops `.`, and applies `..` to the
/// preceding component. Used on paths built from syscall strings; a `..` after a symlink
/// can make the result differ from what the kernel resolved (documented in the README).
pub fn clean(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return b"/".to_vec();
    }
    let mut out = Vec::with_capacity(path.len());
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    out
}

/// Whether `path` is `root` or lies below it (component-wise).
pub fn is_under(path: &[u8], root: &[u8]) -> bool {
    if root == b"/" {
        return path.starts_with(b"/");
    }
    path == root || (path.starts_with(root) && path.get(root.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_handles_dots_and_slashes() {
        assert_eq!(clean(b"/a//b/./c/"), b"/a/b/c");
        assert_eq!(clean(b"/a/b/../c"), b"/a/c");
        assert_eq!(clean(b"/../.."), b"/");
        assert_eq!(clean(b"/caf\xe9/x"), b"/caf\xe9/x");
    }

    #[test]
    fn under_is_component_wise() {
        assert!(is_under(b"/etc/passwd", b"/etc"));
        assert!(is_under(b"/etc", b"/etc"));
        assert!(!is_under(b"/etcfoo", b"/etc"));
        assert!(is_under(b"/anything", b"/"));
    }
}
