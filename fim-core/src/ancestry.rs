//! Package activity: a change made by a package manager (dpkg, apt, rpm...) or by a process
//! it started (a maintainer script) is tagged as such, so that an upgrade's thousands of
//! changes read as what they are and a change outside one stands out.
//!
//! Pure logic: the caller gives the lookup of a process's name and parent.

/// Process names (`comm`, at most 15 bytes) of package managers.
pub const PACKAGE_MANAGERS: &[&str] = &[
    "dpkg",
    "apt",
    "apt-get",
    "aptitude",
    "unattended-upgr",
    "packagekitd",
    "rpm",
    "dnf",
    "yum",
    "zypper",
];

/// How many generations up the walk goes.
const MAX_DEPTH: usize = 16;

/// The package manager among `pid` (named `name`, child of `ppid`) and its ancestors, as
/// (name, pid); `parent_of` gives a live process's name and parent.
pub fn package_manager(
    pid: u32,
    name: &str,
    ppid: u32,
    mut parent_of: impl FnMut(u32) -> Option<(String, u32)>,
) -> Option<(String, u32)> {
    if PACKAGE_MANAGERS.contains(&name) {
        return Some((name.to_owned(), pid));
    }
    let mut next = ppid;
    for _ in 0..MAX_DEPTH {
        if next <= 1 {
            return None;
        }
        let (name, parent) = parent_of(next)?;
        if PACKAGE_MANAGERS.contains(&name.as_str()) {
            return Some((name, next));
        }
        next = parent;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pid: u32) -> Option<(String, u32)> {
        match pid {
            100 => Some(("apt".into(), 1)),
            200 => Some(("dpkg".into(), 100)),
            300 => Some(("sh".into(), 200)),
            400 => Some(("bash".into(), 1)),
            500 => Some(("loop".into(), 500)),
            _ => None,
        }
    }

    #[test]
    fn a_package_manager_or_any_of_its_descendants_is_found() {
        assert_eq!(
            package_manager(200, "dpkg", 100, table),
            Some(("dpkg".into(), 200))
        );
        // A maintainer script's cp: sh, then dpkg.
        assert_eq!(
            package_manager(301, "cp", 300, table),
            Some(("dpkg".into(), 200))
        );
    }

    #[test]
    fn other_processes_and_gone_or_looping_ancestors_are_not() {
        assert_eq!(package_manager(401, "vi", 400, table), None);
        assert_eq!(
            package_manager(9, "x", 999, table),
            None,
            "an ancestor already gone"
        );
        assert_eq!(package_manager(501, "x", 500, table), None, "a loop ends");
    }
}
