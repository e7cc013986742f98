//! `[windows]`: what the Windows build watches: registry keys (`[[windows.registry]]`) and
//! files (`[[windows.files]]`), each group a rule with its severity, techniques and tags,
//! and how often everything is read in full.
//!
//! Without a `[windows]` table (or without one of its lists) the built-in lists apply:
//! the registry keys and files Microsoft Defender for Cloud recommends.

use std::{fmt::Write as _, time::Duration};

use toml::de::DeValue;

use super::{
    ConfigError, Severity,
    doc::Table,
    parse_duration,
    render::{array, quote},
    rule::{Labels, read_labels},
};
use crate::registry::{Hive, View};

/// Deepest subkey level a watched key may cover.
pub const MAX_DEPTH: u32 = 32;

/// The `[windows]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Windows {
    /// How often every key and file is read in full (change notifications wake the
    /// poller earlier for what they cover).
    pub poll_interval: Duration,
    /// The watched registry keys, by rule.
    pub registry: Vec<RegistryRule>,
    /// The watched files, by rule.
    pub files: Vec<FileRule>,
}

/// Which views a key is read in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Views {
    /// The 64-bit view.
    Native,
    /// The 32-bit view (`WOW6432Node` for redirected keys).
    Wow32,
    /// Both, each reported with its view.
    Both,
}

impl Views {
    /// The views, one by one.
    pub fn each(self) -> &'static [View] {
        match self {
            Self::Native => &[View::Native],
            Self::Wow32 => &[View::Wow32],
            Self::Both => &[View::Native, View::Wow32],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Native => "64",
            Self::Wow32 => "32",
            Self::Both => "both",
        }
    }
}

/// One `[[windows.registry]]`: keys watched under one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryRule {
    /// Unique among the Windows rules.
    pub name: String,
    /// `rule.id`; the name when not given.
    pub id: Option<String>,
    /// The keys: hive and path under it.
    pub keys: Vec<(Hive, String)>,
    /// The views they are read in.
    pub views: Views,
    /// Levels of subkeys read below each key (0: the key alone).
    pub depth: u32,
    /// Value names left out (`*`, `?` wildcards, any case).
    pub exclude_values: Vec<String>,
    /// What an event under the rule carries.
    pub severity: Severity,
    /// MITRE ATT&CK technique ids.
    pub techniques: Vec<String>,
    /// Free tags.
    pub tags: Vec<String>,
}

/// One `[[windows.files]]`: files watched under one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRule {
    /// Unique among the Windows rules.
    pub name: String,
    /// `rule.id`; the name when not given.
    pub id: Option<String>,
    /// Absolute paths (`C:\...`).
    pub paths: Vec<String>,
    /// What an event under the rule carries.
    pub severity: Severity,
    /// MITRE ATT&CK technique ids.
    pub techniques: Vec<String>,
    /// Free tags.
    pub tags: Vec<String>,
}

/// The default full-poll interval.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// The default subkey depth.
pub const DEPTH: u32 = 3;

const SOFTWARE_KEYS: [&str; 12] = [
    "Microsoft\\Cryptography\\OID\\EncodingType 0\\CryptSIPDllRemoveSignedDataMsg\\{C689AAB8-8E78-11D0-8C47-00C04FC295EE}",
    "Microsoft\\Cryptography\\OID\\EncodingType 0\\CryptSIPDllRemoveSignedDataMsg\\{603BCC1F-4B59-4E08-B724-D2C6297EF351}",
    "Microsoft\\Windows NT\\CurrentVersion\\IniFileMapping\\SYSTEM.ini\\boot",
    "Microsoft\\Windows NT\\CurrentVersion\\Windows",
    "Microsoft\\Windows NT\\CurrentVersion\\Winlogon",
    "Microsoft\\Windows\\CurrentVersion\\Explorer\\Shell Folders",
    "Microsoft\\Windows\\CurrentVersion\\Explorer\\User Shell Folders",
    "Microsoft\\Windows\\CurrentVersion\\Run",
    "Microsoft\\Windows\\CurrentVersion\\RunOnce",
    "Microsoft\\Windows\\CurrentVersion\\RunOnceEx",
    "Microsoft\\Windows\\CurrentVersion\\RunServices",
    "Microsoft\\Windows\\CurrentVersion\\RunServicesOnce",
];

/// The technique and rule name of each of [`SOFTWARE_KEYS`], by its position.
fn software_rule(i: usize) -> (&'static str, &'static str) {
    match i {
        0 | 1 => ("windows-sip-providers", "T1553.003"),
        2 => ("windows-boot-ini-mapping", "T1547"),
        3 => ("windows-appinit", "T1546.010"),
        4 => ("windows-winlogon", "T1547.004"),
        5 | 6 => ("windows-shell-folders", "T1547.001"),
        _ => ("windows-run-keys", "T1547.001"),
    }
}

impl Windows {
    /// Microsoft Defender for Cloud's recommended Windows registry keys (HKLM, each
    /// SOFTWARE key also under `WOW6432Node`, as the list names them) and files.
    pub fn builtin() -> Self {
        let mut registry: Vec<RegistryRule> = Vec::new();
        let mut add = |name: &str, technique: &str, key: String| match registry
            .iter_mut()
            .find(|r| r.name == name)
        {
            Some(r) => r.keys.push((Hive::Hklm, key)),
            None => registry.push(RegistryRule {
                name: name.into(),
                id: None,
                keys: vec![(Hive::Hklm, key)],
                views: Views::Native,
                depth: DEPTH,
                exclude_values: Vec::new(),
                severity: Severity::High,
                techniques: vec![technique.into()],
                tags: vec!["defender-for-cloud".into()],
            }),
        };
        for (i, key) in SOFTWARE_KEYS.iter().enumerate() {
            let (name, technique) = software_rule(i);
            add(name, technique, format!("SOFTWARE\\{key}"));
            // The list spells this one in lower case under WOW6432Node.
            let wow = key.replace("SYSTEM.ini", "system.ini");
            add(name, technique, format!("SOFTWARE\\WOW6432Node\\{wow}"));
        }
        add(
            "windows-hivelist",
            "T1112",
            "SYSTEM\\CurrentControlSet\\Control\\hivelist".into(),
        );
        add(
            "windows-known-dlls",
            "T1574.001",
            "SYSTEM\\CurrentControlSet\\Control\\Session Manager\\KnownDLLs".into(),
        );
        for profile in ["DomainProfile", "PublicProfile", "StandardProfile"] {
            add(
                "windows-firewall-policy",
                "T1562.004",
                format!(
                    "SYSTEM\\CurrentControlSet\\Services\\SharedAccess\\Parameters\\FirewallPolicy\\{profile}"
                ),
            );
        }
        let files = vec![FileRule {
            name: "windows-files".into(),
            id: None,
            paths: [
                "C:\\autoexec.bat",
                "C:\\boot.ini",
                "C:\\config.sys",
                "C:\\Windows\\system.ini",
                "C:\\Windows\\win.ini",
                "C:\\Windows\\regedit.exe",
                "C:\\Windows\\System32\\userinit.exe",
                "C:\\Windows\\SysWOW64\\userinit.exe",
                "C:\\Windows\\explorer.exe",
                "C:\\Program Files\\Microsoft Security Client\\msseces.exe",
            ]
            .map(String::from)
            .to_vec(),
            severity: Severity::High,
            techniques: Vec::new(),
            tags: vec!["defender-for-cloud".into()],
        }];
        Self {
            poll_interval: POLL_INTERVAL,
            registry,
            files,
        }
    }
}

/// `HIVE\path` split, the hive in either spelling; the path without leading or trailing
/// backslashes, not empty.
pub fn parse_key(text: &str) -> Result<(Hive, String), String> {
    let (hive, path) = text.split_once('\\').unwrap_or((text, ""));
    let hive = Hive::parse(hive).ok_or_else(|| {
        format!(
            "`{text}` does not start with a hive (HKLM, HKU, HKCU, HKCR, HKCC or their long names)"
        )
    })?;
    let path = path.trim_matches('\\');
    if path.is_empty() {
        return Err(format!("`{text}` names a whole hive: name a key under it"));
    }
    if path.contains("\\\\") {
        return Err(format!("`{text}` has an empty key name (`\\\\`)"));
    }
    Ok((hive, path.to_owned()))
}

/// Whether `path` is an absolute Windows path (`C:\...` or `\\server\share\...`).
fn is_absolute_windows(path: &str) -> bool {
    let b = path.as_bytes();
    (b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'\\')
        || path.starts_with("\\\\")
}

/// The `[windows]` table.
pub(super) fn read_windows(mut t: Table<'_, '_>, errors: &mut Vec<ConfigError>) -> Windows {
    let doc = t.doc;
    let mut w = Windows::builtin();
    if let Some((text, span)) = t.string("poll_interval", errors) {
        match parse_duration(&text) {
            Ok(d) if d >= Duration::from_secs(1) => w.poll_interval = d,
            Ok(_) => errors.push(doc.error(&t.key("poll_interval"), span, "must be at least 1s")),
            Err(m) => errors.push(doc.error(&t.key("poll_interval"), span, m)),
        }
    }
    let mut names: Vec<(String, usize, String)> = Vec::new();
    if let Some(rules) = tables(&mut t, "registry", errors) {
        w.registry = rules
            .into_iter()
            .filter_map(|table| read_registry_rule(table, &mut names, errors))
            .collect();
    }
    if let Some(rules) = tables(&mut t, "files", errors) {
        w.files = rules
            .into_iter()
            .filter_map(|table| read_file_rule(table, &mut names, errors))
            .collect();
    }
    for (i, (name, line, key)) in names.iter().enumerate() {
        if names[..i].iter().any(|(other, _, _)| other == name) {
            errors.push(ConfigError {
                line: *line,
                key: key.clone(),
                message: format!("`{name}` names another Windows rule already"),
            });
        }
    }
    t.finish(errors);
    w
}

/// The tables of the array of tables `key` (`None`: absent).
fn tables<'a, 'i>(
    t: &mut Table<'a, 'i>,
    key: &'a str,
    errors: &mut Vec<ConfigError>,
) -> Option<Vec<Table<'a, 'i>>> {
    let doc = t.doc;
    let name = t.key(key);
    let value = t.take(key)?;
    let DeValue::Array(items) = value.get_ref() else {
        errors.push(doc.error(
            &name,
            value.span(),
            format!("must be an array of tables (`[[{name}]]`)"),
        ));
        return Some(Vec::new());
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = format!("{name}[{}]", i + 1);
        match item.get_ref() {
            DeValue::Table(table) => {
                out.push(Table::new(doc, &key, table, doc.line(item.span().start)))
            }
            _ => errors.push(doc.error(&key, item.span(), "must be a table")),
        }
    }
    Some(out)
}

/// A rule's `name` and `id`; the name is recorded for the duplicate check.
fn read_name(
    t: &mut Table<'_, '_>,
    names: &mut Vec<(String, usize, String)>,
    errors: &mut Vec<ConfigError>,
) -> (Option<String>, Option<String>) {
    let doc = t.doc;
    let name = match t.string("name", errors) {
        Some((n, span)) if n.trim().is_empty() => {
            errors.push(doc.error(&t.key("name"), span, "must not be empty"));
            None
        }
        Some((n, span)) => {
            names.push((n.clone(), doc.line(span.start), t.key("name")));
            Some(n)
        }
        None => {
            if !t.was_used("name") {
                errors.push(t.error_here("missing `name`: every Windows rule has a name"));
            }
            None
        }
    };
    let id = match t.string("id", errors) {
        Some((id, span)) if id.trim().is_empty() => {
            errors.push(doc.error(&t.key("id"), span, "must not be empty"));
            None
        }
        other => other.map(|(id, _)| id),
    };
    (name, id)
}

fn read_registry_rule(
    mut t: Table<'_, '_>,
    names: &mut Vec<(String, usize, String)>,
    errors: &mut Vec<ConfigError>,
) -> Option<RegistryRule> {
    let doc = t.doc;
    let before = errors.len();
    let (name, id) = read_name(&mut t, names, errors);
    let listed = t.has("keys");
    let keys: Vec<(Hive, String)> = t
        .strings("keys", errors, |k| parse_key(k).map(drop))
        .iter()
        .filter_map(|k| parse_key(k).ok())
        .collect();
    if !listed {
        errors.push(t.error_here("missing `keys`: every registry rule lists its keys"));
    } else if keys.is_empty() && errors.len() == before {
        errors.push(t.error_here("`keys` must not be empty"));
    }
    let mut views = Views::Native;
    if let Some((text, span)) = t.string("view", errors) {
        match [Views::Native, Views::Wow32, Views::Both]
            .into_iter()
            .find(|v| v.name() == text)
        {
            Some(v) => views = v,
            None => errors.push(doc.error(
                &t.key("view"),
                span,
                format!("`{text}` is not a view (\"64\", \"32\" or \"both\")"),
            )),
        }
    }
    let mut depth = DEPTH;
    if let Some(value) = t.take("depth") {
        match value.get_ref() {
            DeValue::Integer(i) => match u32::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) if n <= MAX_DEPTH => depth = n,
                _ => errors.push(doc.error(
                    &t.key("depth"),
                    value.span(),
                    format!("must be 0 (the key alone) up to {MAX_DEPTH}"),
                )),
            },
            _ => errors.push(doc.error(&t.key("depth"), value.span(), "must be a whole number")),
        }
    }
    let exclude_values = t.strings("exclude_values", errors, |_| Ok(()));
    let Labels {
        severity,
        techniques,
        tags,
    } = read_labels(&mut t, errors);
    t.finish(errors);
    (errors.len() == before).then_some(RegistryRule {
        name: name?,
        id,
        keys,
        views,
        depth,
        exclude_values,
        severity,
        techniques,
        tags,
    })
}

fn read_file_rule(
    mut t: Table<'_, '_>,
    names: &mut Vec<(String, usize, String)>,
    errors: &mut Vec<ConfigError>,
) -> Option<FileRule> {
    let before = errors.len();
    let (name, id) = read_name(&mut t, names, errors);
    let listed = t.has("paths");
    let paths = t.strings("paths", errors, |p| {
        if is_absolute_windows(p) {
            Ok(())
        } else {
            Err(format!("`{p}` is not an absolute Windows path (`C:\\...`)"))
        }
    });
    if !listed {
        errors.push(t.error_here("missing `paths`: every file rule lists its files"));
    } else if paths.is_empty() && errors.len() == before {
        errors.push(t.error_here("`paths` must not be empty"));
    }
    let Labels {
        severity,
        techniques,
        tags,
    } = read_labels(&mut t, errors);
    t.finish(errors);
    (errors.len() == before).then_some(FileRule {
        name: name?,
        id,
        paths,
        severity,
        techniques,
        tags,
    })
}

/// The `[windows]` table as a file, explained.
pub(super) fn render_windows(w: &Windows, out: &mut String) {
    let _ = writeln!(
        out,
        "\n# Windows (fim.exe): registry keys and files, each group a rule. Change notifications\n\
         # wake the poller within a second for what they cover; everything is also read in\n\
         # full at this interval.\n\
         [windows]\n\
         poll_interval = \"{}\"",
        humantime::format_duration(w.poll_interval)
    );
    for r in &w.registry {
        out.push_str(
            "\n# Registry keys: HIVE\\PATH (HKLM, HKU, HKCU, HKCR, HKCC); view \"64\", \"32\" or\n\
             # \"both\"; depth: levels of subkeys read (0: the key alone); exclude_values:\n\
             # value names left out (* and ? wildcards, any case).\n\
             [[windows.registry]]\n",
        );
        let _ = writeln!(out, "name = {}", quote(&r.name));
        if let Some(id) = &r.id {
            let _ = writeln!(out, "id = {}", quote(id));
        }
        let keys: Vec<String> = r
            .keys
            .iter()
            .map(|(h, p)| format!("{}\\{p}", h.as_str()))
            .collect();
        let _ = writeln!(out, "keys = {}", array(&keys));
        let _ = writeln!(out, "view = \"{}\"\ndepth = {}", r.views.name(), r.depth);
        let _ = writeln!(out, "exclude_values = {}", array(&r.exclude_values));
        render_labels(r.severity, &r.techniques, &r.tags, out);
    }
    for f in &w.files {
        out.push_str("\n# Files: absolute Windows paths.\n[[windows.files]]\n");
        let _ = writeln!(out, "name = {}", quote(&f.name));
        if let Some(id) = &f.id {
            let _ = writeln!(out, "id = {}", quote(id));
        }
        let _ = writeln!(out, "paths = {}", array(&f.paths));
        render_labels(f.severity, &f.techniques, &f.tags, out);
    }
}

fn render_labels(severity: Severity, techniques: &[String], tags: &[String], out: &mut String) {
    let _ = writeln!(
        out,
        "severity = \"{}\"\ntechniques = {}\ntags = {}",
        severity.name(),
        array(techniques),
        array(tags)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_builtin_lists_are_defenders() {
        let w = Windows::builtin();
        let keys: Vec<String> = w
            .registry
            .iter()
            .flat_map(|r| r.keys.iter().map(|(h, p)| format!("{}\\{p}", h.as_str())))
            .collect();
        assert_eq!(keys.len(), 12 * 2 + 2 + 3);
        for expected in [
            "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run",
            "HKLM\\SOFTWARE\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\RunServicesOnce",
            "HKLM\\SOFTWARE\\WOW6432Node\\Microsoft\\Windows NT\\CurrentVersion\\IniFileMapping\\system.ini\\boot",
            "HKLM\\SYSTEM\\CurrentControlSet\\Control\\hivelist",
            "HKLM\\SYSTEM\\CurrentControlSet\\Control\\Session Manager\\KnownDLLs",
            "HKLM\\SYSTEM\\CurrentControlSet\\Services\\SharedAccess\\Parameters\\FirewallPolicy\\PublicProfile",
        ] {
            assert!(
                keys.iter().any(|k| k == expected),
                "{expected} in {keys:#?}"
            );
        }
        let technique = |name: &str| {
            w.registry
                .iter()
                .find(|r| r.name == name)
                .map(|r| r.techniques.clone())
        };
        for (rule, id) in [
            ("windows-run-keys", "T1547.001"),
            ("windows-winlogon", "T1547.004"),
            ("windows-known-dlls", "T1574.001"),
            ("windows-firewall-policy", "T1562.004"),
            ("windows-sip-providers", "T1553.003"),
        ] {
            assert_eq!(technique(rule), Some(vec![id.to_owned()]), "{rule}");
        }
        assert!(w.files[0].paths.iter().any(|p| p == "C:\\Windows\\win.ini"));
    }

    #[test]
    fn a_windows_table_is_read_checked_and_round_trips() {
        let text = r#"
[windows]
poll_interval = "30s"
[[windows.registry]]
name = "mine"
keys = ['HKEY_LOCAL_MACHINE\SOFTWARE\Fim\Test\', 'HKU\.DEFAULT\Run']
view = "both"
depth = 0
exclude_values = ["Temp*"]
severity = "critical"
techniques = ["T1112"]
[[windows.files]]
name = "files"
paths = ['C:\fim\watched.txt']
"#;
        let config = Config::parse(text).expect("valid");
        let w = &config.windows;
        assert_eq!(w.poll_interval, Duration::from_secs(30));
        assert_eq!(
            w.registry[0].keys,
            [
                (Hive::Hklm, "SOFTWARE\\Fim\\Test".to_owned()),
                (Hive::Hku, ".DEFAULT\\Run".to_owned())
            ]
        );
        assert_eq!(w.registry[0].views.each(), [View::Native, View::Wow32]);
        assert_eq!(w.registry[0].depth, 0);
        assert_eq!(w.files[0].paths, ["C:\\fim\\watched.txt"]);
        assert!(
            config.rules.is_empty(),
            "a Windows configuration needs no [[rule]]"
        );
        assert_eq!(Config::parse(&config.render()), Ok(config));
    }

    #[test]
    fn every_problem_in_a_windows_table_is_told_with_its_line() {
        let text = r#"
[windows]
poll_interval = "0s"
colour = 1
[[windows.registry]]
name = "a"
keys = ['HKXX\x', 'HKLM', 'HKLM\a\\b']
view = "48"
depth = 99
[[windows.registry]]
name = "a"
[[windows.files]]
name = "f"
paths = ['relative.txt']
"#;
        let errors = Config::parse(text).expect_err("refused");
        let said: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            said,
            [
                (3, "windows.poll_interval"),
                (4, "windows.colour"),
                (7, "windows.registry[1].keys[1]"),
                (7, "windows.registry[1].keys[2]"),
                (7, "windows.registry[1].keys[3]"),
                (8, "windows.registry[1].view"),
                (9, "windows.registry[1].depth"),
                (10, "windows.registry[2]"),
                (11, "windows.registry[2].name"),
                (14, "windows.files[1].paths[1]"),
            ],
            "{errors:#?}"
        );
    }
}
