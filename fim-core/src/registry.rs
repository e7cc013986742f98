//! The registry subject: a Windows registry key or value, as the registry module (Windows
//! hosts) reports a change to it.
//!
//! Why in the shared model: a SIEM gets registry and file changes through the same
//! pipeline, numbered and fanned out to the same sinks, rendered in the same schema (ECS
//! `registry.*`). Data is kept as the raw bytes the registry holds, with its type, so the
//! baseline compares exactly what Windows stores and the rendering decides how to show it.

use crate::event::{Action, Origin};

/// A registry data type (`REG_*`), as Windows numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    /// `REG_NONE`.
    None,
    /// `REG_SZ`: a NUL-terminated UTF-16LE string.
    Sz,
    /// `REG_EXPAND_SZ`: a string with `%VARIABLE%` references.
    ExpandSz,
    /// `REG_BINARY`.
    Binary,
    /// `REG_DWORD`: 32 bits, little-endian.
    Dword,
    /// `REG_DWORD_BIG_ENDIAN`.
    DwordBigEndian,
    /// `REG_LINK`: a symbolic link to another key (UTF-16LE).
    Link,
    /// `REG_MULTI_SZ`: strings, each NUL-terminated, ending with an empty one.
    MultiSz,
    /// `REG_QWORD`: 64 bits, little-endian.
    Qword,
    /// Any other type number.
    Other(u32),
}

impl DataType {
    /// From the type number Windows reports.
    pub fn from_raw(n: u32) -> Self {
        match n {
            0 => Self::None,
            1 => Self::Sz,
            2 => Self::ExpandSz,
            3 => Self::Binary,
            4 => Self::Dword,
            5 => Self::DwordBigEndian,
            6 => Self::Link,
            7 => Self::MultiSz,
            11 => Self::Qword,
            n => Self::Other(n),
        }
    }

    /// The ECS `registry.data.type` value (`REG_SZ`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "REG_NONE",
            Self::Sz => "REG_SZ",
            Self::ExpandSz => "REG_EXPAND_SZ",
            Self::Binary => "REG_BINARY",
            Self::Dword => "REG_DWORD",
            Self::DwordBigEndian => "REG_DWORD_BIG_ENDIAN",
            Self::Link => "REG_LINK",
            Self::MultiSz => "REG_MULTI_SZ",
            Self::Qword => "REG_QWORD",
            Self::Other(_) => "REG_UNKNOWN",
        }
    }
}

/// A value's data as the registry holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Data {
    /// Its type.
    pub kind: DataType,
    /// Its bytes, unchanged.
    pub bytes: Vec<u8>,
}

impl Data {
    /// The data as text, the way ECS `registry.data.strings` shows it: the strings of a
    /// string type (invalid UTF-16 replaced), a number in decimal, other types in hex.
    pub fn strings(&self) -> Vec<String> {
        let utf16 = |b: &[u8]| -> Vec<u16> {
            b.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect()
        };
        match self.kind {
            DataType::Sz | DataType::ExpandSz | DataType::Link => {
                let units = utf16(&self.bytes);
                let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
                vec![String::from_utf16_lossy(&units[..end])]
            }
            DataType::MultiSz => utf16(&self.bytes)
                .split(|&u| u == 0)
                .take_while(|s| !s.is_empty())
                .map(String::from_utf16_lossy)
                .collect(),
            DataType::Dword if self.bytes.len() == 4 => {
                let n = u32::from_le_bytes([
                    self.bytes[0],
                    self.bytes[1],
                    self.bytes[2],
                    self.bytes[3],
                ]);
                vec![n.to_string()]
            }
            DataType::DwordBigEndian if self.bytes.len() == 4 => {
                let n = u32::from_be_bytes([
                    self.bytes[0],
                    self.bytes[1],
                    self.bytes[2],
                    self.bytes[3],
                ]);
                vec![n.to_string()]
            }
            DataType::Qword if self.bytes.len() == 8 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.bytes);
                vec![u64::from_le_bytes(b).to_string()]
            }
            _ => vec![crate::attrs::hex(&self.bytes)],
        }
    }
}

/// Which key or value changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The hive, abbreviated as ECS does (`HKLM`, `HKU`, ...).
    pub hive: String,
    /// The key's path under the hive, `\`-separated.
    pub key: String,
    /// The value's name; `None` for the key itself. The default value is `Some("")`.
    pub value: Option<String>,
}

impl Location {
    /// The full path, as ECS `registry.path` gives it: hive, key and value.
    pub fn path(&self) -> String {
        let mut p = format!("{}\\{}", self.hive, self.key);
        if let Some(v) = &self.value {
            p.push('\\');
            p.push_str(v);
        }
        p
    }
}

/// One change to a watched registry key or value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryEvent {
    /// What happened: `Added`, `Removed` or `Changed`.
    pub action: Action,
    /// When it was seen, as ns since the Unix epoch.
    pub time_unix_ns: i128,
    /// What changed.
    pub location: Location,
    /// The data before (a value that existed).
    pub before: Option<Data>,
    /// The data after (a value that exists now).
    pub after: Option<Data>,
    /// How the change came to be known.
    pub origin: Origin,
    /// The module that saw it, as in `fim.sensor`.
    pub sensor: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16z(parts: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            for u in p.encode_utf16().chain([0]) {
                out.extend_from_slice(&u.to_le_bytes());
            }
        }
        out
    }

    #[test]
    fn data_reads_as_windows_stores_it() {
        let sz = Data {
            kind: DataType::from_raw(1),
            bytes: utf16z(&["C:\\evil.exe"]),
        };
        assert_eq!(sz.strings(), ["C:\\evil.exe"]);
        let mut multi = utf16z(&["a", "bc"]);
        multi.extend_from_slice(&[0, 0]);
        let multi = Data {
            kind: DataType::from_raw(7),
            bytes: multi,
        };
        assert_eq!(multi.strings(), ["a", "bc"]);
        let dword = Data {
            kind: DataType::Dword,
            bytes: 1u32.to_le_bytes().to_vec(),
        };
        assert_eq!(dword.strings(), ["1"]);
        let qword = Data {
            kind: DataType::from_raw(11),
            bytes: (1u64 << 40).to_le_bytes().to_vec(),
        };
        assert_eq!(qword.strings(), [(1u64 << 40).to_string()]);
        let bin = Data {
            kind: DataType::Binary,
            bytes: vec![0xde, 0xad],
        };
        assert_eq!(bin.strings(), ["dead"]);
        assert_eq!(DataType::from_raw(42), DataType::Other(42));
        assert_eq!(DataType::from_raw(2).as_str(), "REG_EXPAND_SZ");
    }

    #[test]
    fn a_values_path_names_hive_key_and_value() {
        let mut l = Location {
            hive: "HKLM".into(),
            key: "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run".into(),
            value: Some("Updater".into()),
        };
        assert_eq!(
            l.path(),
            "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run\\Updater"
        );
        l.value = None;
        assert_eq!(
            l.path(),
            "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"
        );
    }
}
