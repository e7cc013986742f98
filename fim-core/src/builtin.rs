//! The built-in ruleset: what runs without a configuration file.
//!
//! Microsoft Defender for Cloud's recommended Linux items, then the places attackers use
//! most after them, each with its reason (`rule.description`), a severity and its MITRE
//! ATT&CK techniques. A rule naming a more specific place comes first, so an event under
//! several rules names the most specific in `rule.name` (every one is in `fim.rules`). The
//! README lists this ruleset; a test holds the two together.

use crate::config::{Rule, Severity};

/// One built-in rule, as data.
struct Entry {
    name: &'static str,
    description: &'static str,
    paths: &'static [&'static str],
    exclude: &'static [&'static str],
    operations: Option<&'static [&'static str]>,
    severity: Severity,
    techniques: &'static [&'static str],
    /// Whether content is hashed (not for logs, which change all the time).
    hash: bool,
    /// The attributes compared (`None`: every one).
    attributes: Option<&'static [&'static str]>,
}

use Severity::{Critical, High, Medium};

const ENTRIES: &[Entry] = &[
    Entry {
        name: "accounts",
        description: "Local accounts and their passwords: a user added, a password or group changed",
        paths: &["/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow"],
        exclude: &[],
        operations: None,
        severity: Critical,
        techniques: &["T1136.001", "T1098"],
        hash: true,
        attributes: None,
    },
    Entry {
        name: "sudoers",
        description: "Who may run what as root",
        paths: &["/etc/sudoers", "/etc/sudoers.d"],
        exclude: &[],
        operations: None,
        severity: Critical,
        techniques: &["T1548.003"],
        hash: true,
        attributes: None,
    },
    Entry {
        name: "ld-preload",
        description: "Libraries loaded into every process, and where libraries are looked for",
        paths: &["/etc/ld.so.preload", "/etc/ld.so.conf", "/etc/ld.so.conf.d"],
        exclude: &[],
        operations: None,
        severity: Critical,
        techniques: &["T1574.006"],
        hash: true,
        attributes: None,
    },
    Entry {
        name: "ssh-authorized-keys",
        description: "Keys that log in as a user without a password, in every home",
        paths: &["~/.ssh/authorized_keys", "~/.ssh/authorized_keys2"],
        exclude: &[],
        operations: None,
        severity: Critical,
        techniques: &["T1098.004"],
        hash: true,
        attributes: None,
    },
    Entry {
        name: "sshd-config",
        description: "The SSH server's configuration: root login, key files, forwarding",
        paths: &["/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d"],
        exclude: &[],
        operations: None,
        severity: High,
        techniques: &["T1098.004", "T1556"],
        hash: true,
        attributes: None,
    },
    Entry {
        name: "pam",
        description: "How logins are authenticated (a PAM module can accept any password)",
        paths: &["/etc/pam.d", "/etc/security"],
        exclude: &[],
        operations: None,
        severity: Critical,
        techniques: &["T1556.003"],
        hash: true,
        attributes: None,
    },
    Entry {
        name: "cron",
        description: "Scheduled jobs, system-wide and per user, and at jobs",
        paths: &[
            "/etc/crontab",
            "/etc/cron.d",
            "/etc/cron.hourly",
            "/etc/cron.daily",
            "/etc/cron.weekly",
            "/etc/cron.monthly",
            "/var/spool/cron",
        ],
        exclude: &[],
        operations: None,
        severity: High,
        techniques: &["T1053.003", "T1053.002"],
        hash: true,
        attributes: None,
    },
    Entry {
        name: "init-scripts",
        description: "Scripts run at boot by SysV init and rc.local",
        paths: &["/etc/init.d", "/etc/rc.local"],
        exclude: &[],
        operations: None,
        severity: High,
        techniques: &["T1037.004"],
        hash: true,
        attributes: None,
    },
    Entry {
        name: "systemd-units",
        description: "Services, timers and other units, system-wide and per user",
        paths: &[
            "/etc/systemd/system",
            "/etc/systemd/user",
            "/lib/systemd/system",
            "/usr/lib/systemd/system",
            "~/.config/systemd/user",
        ],
        exclude: &[],
        operations: None,
        severity: High,
        techniques: &["T1543.002"],
        hash: true,
        attributes: None,
    },
    Entry {
        name: "shell-profiles",
        description: "Scripts every login or interactive shell runs",
        paths: &[
            "/etc/profile",
            "/etc/profile.d",
            "/etc/bash.bashrc",
            "~/.bashrc",
            "~/.profile",
            "~/.bash_profile",
            "~/.bash_login",
            "~/.zshrc",
        ],
        exclude: &[],
        operations: None,
        severity: High,
        techniques: &["T1546.004"],
        hash: true,
        attributes: None,
    },
    Entry {
        name: "kernel-modules",
        description: "Kernel modules and what loads them at boot",
        paths: &[
            "/lib/modules",
            "/usr/lib/modules",
            "/etc/modprobe.d",
            "/etc/modules-load.d",
            "/etc/modules",
        ],
        exclude: &[],
        operations: None,
        severity: High,
        techniques: &["T1547.006"],
        hash: true,
        attributes: None,
    },
    Entry {
        name: "audit-and-logging-config",
        description: "What the audit daemon, rsyslog and journald record and keep",
        paths: &[
            "/etc/audit",
            "/etc/rsyslog.conf",
            "/etc/rsyslog.d",
            "/etc/systemd/*.conf",
        ],
        exclude: &[],
        operations: None,
        severity: High,
        techniques: &["T1562.001"],
        hash: true,
        attributes: None,
    },
    Entry {
        name: "firewall-config",
        description: "The host firewall's rules",
        paths: &["/etc/ufw", "/etc/nftables.conf"],
        exclude: &[],
        operations: None,
        severity: High,
        techniques: &["T1562.004"],
        hash: true,
        attributes: None,
    },
    Entry {
        name: "environment",
        description: "Variables set for every session (PATH, LD_* among them)",
        paths: &["/etc/environment"],
        exclude: &[],
        operations: None,
        severity: High,
        techniques: &["T1574.007"],
        hash: true,
        attributes: None,
    },
    Entry {
        name: "name-resolution",
        description: "Which addresses names resolve to, and which servers are asked",
        paths: &["/etc/hosts", "/etc/resolv.conf"],
        exclude: &[],
        operations: None,
        severity: Medium,
        techniques: &["T1565.001"],
        hash: true,
        attributes: None,
    },
    Entry {
        name: "package-sources",
        description: "Where packages are installed from",
        paths: &["/etc/apt/sources.list", "/etc/apt/sources.list.d"],
        exclude: &[],
        operations: None,
        severity: High,
        techniques: &["T1195.002"],
        hash: true,
        attributes: None,
    },
    Entry {
        name: "log-tampering",
        description: "Logs removed, truncated, renamed or made unreadable (appends are not reported; the journal's own rotation is left out)",
        paths: &["/var/log"],
        exclude: &["/var/log/journal/**"],
        operations: Some(&[
            "unlink", "rmdir", "rename", "truncate", "chmod", "chown", "attrib", "removed",
            "changed",
        ]),
        severity: High,
        techniques: &["T1070.002"],
        // A log's content and size change all the time: reading it at every append would
        // cost more than it tells. What tampering changes is compared.
        hash: false,
        attributes: Some(&["type", "mode", "uid", "gid", "inode"]),
    },
    Entry {
        name: "defender-for-cloud-linux",
        description: "Microsoft Defender for Cloud's recommended Linux items: system binaries, boot files, configuration, cron and init scripts",
        paths: crate::watch::DEFAULT_WATCH,
        exclude: &[],
        operations: None,
        severity: Medium,
        techniques: &[],
        hash: true,
        attributes: None,
    },
];

/// Tags every built-in rule carries: the compliance requirement file integrity monitoring
/// answers.
const TAGS: &[&str] = &["PCI-DSS 11.5.2"];

/// The built-in rules, in order.
pub fn rules() -> Vec<Rule> {
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    ENTRIES
        .iter()
        .map(|e| Rule {
            description: Some(e.description.to_owned()),
            exclude: strings(e.exclude),
            operations: e.operations.map(strings),
            severity: e.severity,
            techniques: strings(e.techniques),
            tags: strings(TAGS),
            hash: e.hash,
            attributes: e.attributes.map(strings),
            ..Rule::new(e.name, strings(e.paths))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_builtin_rules_are_valid_configuration() {
        let builtin = Config::builtin();
        assert_eq!(builtin.rules, rules());
        assert_eq!(Config::parse(&builtin.render()), Ok(builtin));
    }

    #[test]
    fn the_readme_lists_every_builtin_rule_with_its_reason_and_paths() {
        let readme = include_str!("../../README.md");
        for e in ENTRIES {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", e.name)))
                .unwrap_or_else(|| panic!("README has no row for `{}`", e.name));
            assert!(
                row.contains(e.description),
                "{}: reason differs:\n{row}",
                e.name
            );
            for p in e.paths {
                assert!(
                    row.contains(&format!("`{p}`")),
                    "{}: {p} missing:\n{row}",
                    e.name
                );
            }
            for t in e.techniques {
                assert!(row.contains(t), "{}: {t} missing:\n{row}", e.name);
            }
        }
    }
}
