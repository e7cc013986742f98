//! Lexical path helpers on raw bytes (Linux paths need not be UTF-8).

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
