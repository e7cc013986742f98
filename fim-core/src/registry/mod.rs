//! The registry subject: a Windows registry key or value, as the registry module (Windows
//! hosts) reports a change to it, and the snapshots it compares ([`snapshot`], [`diff`]).
//!
//! Why in the shared model: a SIEM gets registry and file changes through the same
//! pipeline, numbered and fanned out to the same sinks, rendered in the same schema (ECS
//! `registry.*`). Data is kept as the raw bytes the registry holds, with its type, so the
//! baseline compares exactly what Windows stores and the rendering decides how to show it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{Action, Origin};

pub mod diff;
pub mod poll;
pub mod snapshot;
pub mod store;

/// Data up to this size is kept in the snapshot (and shown in events); larger data is
/// known by its size and digest.
pub const SMALL_DATA: usize = 1024;

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

/// A hive, as ECS abbreviates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hive {
    /// `HKEY_LOCAL_MACHINE`.
    Hklm,
    /// `HKEY_USERS`.
    Hku,
    /// `HKEY_CURRENT_USER` (of the account fim runs as).
    Hkcu,
    /// `HKEY_CLASSES_ROOT`.
    Hkcr,
    /// `HKEY_CURRENT_CONFIG`.
    Hkcc,
}

impl Hive {
    /// Every hive.
    pub const ALL: [Hive; 5] = [Self::Hklm, Self::Hku, Self::Hkcu, Self::Hkcr, Self::Hkcc];

    /// The abbreviation (`HKLM`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hklm => "HKLM",
            Self::Hku => "HKU",
            Self::Hkcu => "HKCU",
            Self::Hkcr => "HKCR",
            Self::Hkcc => "HKCC",
        }
    }

    /// The full name (`HKEY_LOCAL_MACHINE`).
    pub fn long_name(self) -> &'static str {
        match self {
            Self::Hklm => "HKEY_LOCAL_MACHINE",
            Self::Hku => "HKEY_USERS",
            Self::Hkcu => "HKEY_CURRENT_USER",
            Self::Hkcr => "HKEY_CLASSES_ROOT",
            Self::Hkcc => "HKEY_CURRENT_CONFIG",
        }
    }

    /// From either spelling, any case.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|h| s.eq_ignore_ascii_case(h.as_str()) || s.eq_ignore_ascii_case(h.long_name()))
    }
}

/// Which view of the registry a key is read in: 64-bit Windows redirects parts of
/// `SOFTWARE` for 32-bit programs to `SOFTWARE\WOW6432Node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum View {
    /// The 64-bit (native) view (`KEY_WOW64_64KEY`).
    Native,
    /// The 32-bit view (`KEY_WOW64_32KEY`).
    Wow32,
}

impl View {
    /// `64` or `32`, as `fim.registry_view` and the configuration say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "64",
            Self::Wow32 => "32",
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

/// A value as a snapshot knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueState {
    /// Its type number (`REG_*`).
    #[serde(rename = "t")]
    pub kind: u32,
    /// Its size in bytes.
    #[serde(rename = "n")]
    pub size: u64,
    /// The SHA-256 of its data.
    #[serde(rename = "h", with = "hex32")]
    pub sha256: [u8; 32],
    /// The data itself, when at most [`SMALL_DATA`] bytes.
    #[serde(
        rename = "d",
        default,
        skip_serializing_if = "Option::is_none",
        with = "hex_opt"
    )]
    pub data: Option<Vec<u8>>,
}

impl ValueState {
    /// The state of a value holding `bytes` of type `kind`.
    pub fn of(kind: u32, bytes: &[u8]) -> Self {
        Self {
            kind,
            size: bytes.len() as u64,
            sha256: crate::hash::sha256(bytes),
            data: (bytes.len() <= SMALL_DATA).then(|| bytes.to_vec()),
        }
    }

    /// Its data with its type, when kept.
    pub fn data(&self) -> Option<Data> {
        self.data.as_ref().map(|bytes| Data {
            kind: DataType::from_raw(self.kind),
            bytes: bytes.clone(),
        })
    }
}

/// A key as a snapshot knows it: when it was last written, who may do what with it, and
/// its values by name (the default value is named `""`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    /// Its last-write time (`FILETIME`: 100 ns since 1601).
    #[serde(rename = "w")]
    pub last_write: u64,
    /// The SHA-256 of its security descriptor (owner, group and DACL), when readable.
    #[serde(
        rename = "s",
        default,
        skip_serializing_if = "Option::is_none",
        with = "hex32_opt"
    )]
    pub security: Option<[u8; 32]>,
    /// Its values.
    #[serde(rename = "v", default)]
    pub values: BTreeMap<String, ValueState>,
}

/// What an event says a key or value was, before or after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// A key: its last-write time and security descriptor digest.
    Key {
        /// `FILETIME` of its last write.
        last_write: u64,
        /// Digest of its security descriptor.
        security: Option<[u8; 32]>,
    },
    /// A value.
    Value(ValueState),
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
    /// The view it was read in.
    pub view: View,
    /// What it was (a key or value that existed).
    pub before: Option<State>,
    /// What it is (a key or value that exists now).
    pub after: Option<State>,
    /// What differs, for `Changed`: `type`, `size`, `sha256`, `acl`.
    pub changed: Vec<&'static str>,
    /// How the change came to be known.
    pub origin: Origin,
    /// The module that saw it, as in `fim.sensor`.
    pub sensor: &'static str,
}

/// `FILETIME` (100 ns since 1601) as ns since the Unix epoch.
pub fn filetime_to_unix_ns(ft: u64) -> i128 {
    const EPOCH_DIFF_100NS: i128 = 116_444_736_000_000_000;
    (i128::from(ft) - EPOCH_DIFF_100NS) * 100
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::attrs::hex(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        super::unhex(&text)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| D::Error::custom("not a SHA-256 in hex"))
    }
}

mod hex32_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::hex32::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::hex32")] [u8; 32]);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&crate::attrs::hex(v)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => super::unhex(&text)
                .map(Some)
                .ok_or_else(|| D::Error::custom("not hex")),
        }
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
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
    fn a_key_state_keeps_digests_and_small_data_through_its_encoding() {
        let mut key = KeyState {
            last_write: 133_000_000_000_000_000,
            security: Some([7; 32]),
            values: BTreeMap::new(),
        };
        key.values
            .insert(String::new(), ValueState::of(1, &utf16z(&["default"])));
        key.values
            .insert("big".into(), ValueState::of(3, &vec![0xab; SMALL_DATA + 1]));
        let text = serde_json::to_string(&key).expect("encoded");
        let back: KeyState = serde_json::from_str(&text).expect("decoded");
        assert_eq!(back, key);
        assert!(back.values["big"].data.is_none(), "large data is not kept");
        assert_eq!(back.values["big"].size, SMALL_DATA as u64 + 1);
        assert_eq!(
            back.values[""].data().map(|d| d.strings()),
            Some(vec!["default".to_owned()])
        );
        assert!(serde_json::from_str::<KeyState>(r#"{"w":1,"s":"zz"}"#).is_err());
    }

    #[test]
    fn hives_parse_from_either_spelling_and_filetimes_convert() {
        assert_eq!(Hive::parse("hklm"), Some(Hive::Hklm));
        assert_eq!(Hive::parse("HKEY_USERS"), Some(Hive::Hku));
        assert_eq!(Hive::parse("HKLX"), None);
        // 2024-01-01T00:00:00Z.
        assert_eq!(
            filetime_to_unix_ns(133_485_408_000_000_000),
            1_704_067_200_000_000_000
        );
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
