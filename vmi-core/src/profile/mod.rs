//! The kernel profile: struct layouts and symbol addresses of one kernel build.
//!
//! This is the project's contract between crates and the only place serde is used. The
//! JSON form is documented in `docs/profile.md` with a JSON Schema in
//! `docs/profile.schema.json` and an example in `docs/profile.example.json`.
//!
//! Versioning: `format_version` is `MAJOR.MINOR`. A reader accepts any profile with its
//! own major version (unknown fields of a newer minor version are ignored); a change that
//! removes or re-means a field bumps the major version.

pub mod needs;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The format version this crate writes.
pub const FORMAT_VERSION: &str = "1.1";
/// The major version this crate reads.
pub const FORMAT_MAJOR: u32 = 1;

/// A kernel profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// `MAJOR.MINOR` of the format.
    pub format_version: String,
    /// Which kernel build this describes.
    pub kernel: KernelIdentity,
    /// Where the profile came from.
    pub provenance: Provenance,
    /// Symbols by name.
    pub symbols: BTreeMap<String, Symbol>,
    /// Structs and unions by name.
    pub types: BTreeMap<String, TypeDef>,
    /// Enums by name: each enumerator's value (format 1.1; a profile without them, or
    /// without one, leaves readers to their own copy of the values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub enums: BTreeMap<String, BTreeMap<String, i64>>,
    /// Needed items the generator could not find (never written as 0 instead).
    #[serde(default, skip_serializing_if = "Missing::is_empty")]
    pub missing: Missing,
}

/// Which kernel build a profile describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelIdentity {
    /// The `uname -r` string, e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// The exact banner as `linux_banner` holds it (`Linux version ...`, with its
    /// trailing newline).
    pub banner: String,
    /// The architecture, `x86_64`.
    pub arch: String,
    /// The GNU build-id of vmlinux (lowercase hex), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
}

/// Where a profile came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The kind of source the types came from.
    pub source: SourceKind,
    /// The files read.
    pub inputs: Vec<InputFile>,
    /// The tool and its version, e.g. `profile-gen 0.1.0`.
    pub tool: String,
}

/// The kinds of source a profile can be made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// vmlinux DWARF (+ System.map).
    Dwarf,
    /// BTF (+ kallsyms or System.map).
    Btf,
    /// Symbols only, from kallsyms.
    Kallsyms,
    /// The in-guest extractor.
    Module,
    /// The running guest's own memory.
    Memory,
}

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// The file name (no directory).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256, lowercase hex.
    pub sha256: String,
}

/// A symbol: unrelocated virtual address and System.map type letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symbol {
    /// The link-time address (KASLR not applied), written as a `0x...` hex string.
    #[serde(serialize_with = "ser_hex", deserialize_with = "de_hex")]
    pub address: u64,
    /// The System.map type letter (`T`, `D`, `B`, `R`, ...).
    #[serde(rename = "type")]
    pub kind: String,
}

/// Struct or union.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TypeKind {
    /// `struct`.
    Struct,
    /// `union`.
    Union,
}

/// A struct or union layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeDef {
    /// Struct or union.
    pub kind: TypeKind,
    /// Size in bytes.
    pub size: u64,
    /// Fields by name. Members of anonymous structs and unions appear here at their
    /// accumulated offset; members of named nested structs do not.
    pub fields: BTreeMap<String, Field>,
}

/// A field of a struct or union.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Byte offset from the start of the containing (outermost named) type. For a
    /// bitfield: the offset of the byte that holds its first bit.
    pub offset: u64,
    /// For bitfields: the first bit within the byte at `offset` (0 = least significant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit_offset: Option<u32>,
    /// For bitfields: the width in bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit_size: Option<u32>,
    /// The compact type (see `docs/profile.md`): `int`, `ptr struct mm_struct`,
    /// `char[16]`, `struct list_head`, `ptr fn`, ...
    #[serde(rename = "type")]
    pub ty: String,
}

/// Needed items that were not found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    /// Types not found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// Fields not found, as `type.field` (the first alias is named).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Symbols not found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symbols: Vec<String>,
}

impl Missing {
    /// True when nothing is missing.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty() && self.fields.is_empty() && self.symbols.is_empty()
    }
}

fn ser_hex<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

fn de_hex<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    parse_hex(&s)
        .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a 0x-prefixed hex address")))
}

/// Parse `0x`-prefixed hex.
pub fn parse_hex(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Why a profile could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// Not JSON of the profile's shape.
    #[error("not a valid profile: {0}")]
    Json(#[from] serde_json::Error),
    /// A format version this crate does not read.
    #[error("profile format version {found} is not supported (this build reads {FORMAT_MAJOR}.x): regenerate the profile with this version of profile-gen")]
    Version {
        /// The version in the file.
        found: String,
    },
}

impl Profile {
    /// Parse a profile from JSON, checking the format version.
    pub fn from_json(text: &str) -> Result<Profile, ProfileError> {
        #[derive(Deserialize)]
        struct Head {
            format_version: String,
        }
        let head: Head = serde_json::from_str(text)?;
        let major = head
            .format_version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok());
        if major != Some(FORMAT_MAJOR) {
            return Err(ProfileError::Version {
                found: head.format_version,
            });
        }
        Ok(serde_json::from_str(text)?)
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// A symbol's address.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).map(|s| s.address)
    }

    /// A field of a type.
    pub fn field(&self, ty: &str, field: &str) -> Option<&Field> {
        self.types.get(ty)?.fields.get(field)
    }

    /// The enumerators of an enum whose names start with `prefix`, by value, the prefix
    /// stripped and lowercased (`BPF_PROG_TYPE_KPROBE` → `kprobe`; `__MAX_BPF_PROG_TYPE`
    /// is left out): `None` when the profile lacks the enum.
    pub fn enum_names(&self, name: &str, prefix: &str) -> Option<BTreeMap<i64, String>> {
        let e = self.enums.get(name)?;
        Some(
            e.iter()
                .filter_map(|(n, v)| Some((*v, n.strip_prefix(prefix)?.to_ascii_lowercase())))
                .collect(),
        )
    }

    /// The first of several alias names that the type has.
    pub fn field_any(&self, ty: &str, aliases: &[&str]) -> Option<(&str, &Field)> {
        let t = self.types.get(ty)?;
        aliases
            .iter()
            .find_map(|a| t.fields.get_key_value(*a))
            .map(|(k, v)| (k.as_str(), v))
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Dwarf => "dwarf",
            SourceKind::Btf => "btf",
            SourceKind::Kallsyms => "kallsyms",
            SourceKind::Module => "module",
            SourceKind::Memory => "memory",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../docs/profile.example.json");

    #[test]
    fn example_round_trips() {
        let p = Profile::from_json(EXAMPLE).unwrap();
        assert_eq!(p.format_version, FORMAT_VERSION);
        assert_eq!(p.symbol("init_task"), Some(0xffffffff82a1aa40));
        let f = p.field("task_struct", "tasks").unwrap();
        assert_eq!(f.ty, "struct list_head");
        let back = Profile::from_json(&p.to_json()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn other_major_versions_are_refused() {
        let v2 = EXAMPLE.replacen("\"1.1\"", "\"2.0\"", 1);
        let e = Profile::from_json(&v2).unwrap_err();
        assert!(matches!(e, ProfileError::Version { .. }), "{e}");
        // 1.0 (no enums) and a newer minor version are read
        let v10 = EXAMPLE.replacen("\"1.1\"", "\"1.0\"", 1);
        assert!(Profile::from_json(&v10).is_ok());
        let v19 = EXAMPLE.replacen("\"1.1\"", "\"1.9\"", 1);
        assert!(Profile::from_json(&v19).is_ok());
    }

    #[test]
    fn addresses_are_hex_strings() {
        let bad = EXAMPLE.replace("\"0xffffffff82a1aa40\"", "\"12345\"");
        assert!(Profile::from_json(&bad).is_err());
        assert_eq!(parse_hex("0x10"), Some(16));
        assert_eq!(parse_hex("0x"), None);
        assert_eq!(parse_hex("0x1ffffffffffffffff"), None);
    }

    #[test]
    fn aliases_pick_the_first_present() {
        let p = Profile::from_json(EXAMPLE).unwrap();
        let (name, _) = p.field_any("task_struct", &["state", "__state"]).unwrap();
        assert_eq!(name, "__state");
    }
}
