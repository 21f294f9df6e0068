//! Volatility 3 Intermediate Symbol Format (ISF), format version 6.2.0.
//!
//! Unlike the native profile, an ISF is a whole type graph: every field carries a full
//! type descriptor (`pointer` → `array` → `base` ...), aggregates are referenced by name,
//! and enums and base types have tables of their own. This module writes the document
//! and streams the JSON out; the type graph comes from the DWARF index
//! (`isf_dwarf.rs`, the `dwarf` feature) or from BTF (`isf_btf.rs`):
//!
//! - named structs/unions keep their DWARF name; anonymous ones get a generated name
//!   (`unnamed_<unit>_<offset>`, or the name of the typedef that names them) and the
//!   member that holds them is written with `"anonymous": true`, which Volatility 3
//!   (format 6.2.0 and later) flattens into the parent, exactly as the native profile does;
//! - typedefs and qualifiers are resolved to what they name;
//! - a bitfield is written at the offset of its storage unit (the size of its base type)
//!   with its bit position inside that unit;
//! - symbols carry full 64-bit addresses, the type of the variable of that name when the
//!   DWARF has one, and `linux_banner` carries the banner bytes (with the final NUL) in
//!   `constant_data`, which is how Volatility matches an ISF to a memory image.
//!
//! Volatility 3 2.28 reads format 6.2.0 and rejects 6.3.0, so 6.2.0 is written.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::Write;

use base64::Engine as _;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use vmi_core::profile::InputFile;

use crate::error::{Error, Result};
use crate::symbols::SymbolMap;

/// The ISF format version written.
pub const ISF_FORMAT: &str = "6.2.0";

/// What goes into the ISF.
#[derive(Debug, Clone, Default)]
pub struct IsfOptions {
    /// Every struct and union (otherwise: `types` and everything they reference).
    pub full: bool,
    /// Root types when not `full`.
    pub types: Vec<String>,
    /// Symbols whose variable type is written when not `full` (all symbols get an
    /// address either way).
    pub typed_symbols: Vec<String>,
    /// Producer timestamp (RFC 3339); `None` writes the current time.
    pub datetime: Option<String>,
}

/// The inputs named in the ISF metadata: `(kind, file)` of the types (`dwarf`, `btf`)
/// and of the symbols (`system-map`, `symtab`, `kallsyms` recovered from an image,
/// `proc-kallsyms`). Volatility's schema only allows `dwarf`, `symtab` and `system-map`,
/// so BTF is written as `dwarf` (type information), kallsyms recovered from the image
/// as `symtab` (the kernel's own symbol table) and a /proc/kallsyms copy as
/// `system-map` (the same format); the file names keep the real sources visible.
#[derive(Debug, Clone)]
pub struct IsfInputs<'i> {
    /// Where the types came from.
    pub types: (&'static str, &'i InputFile),
    /// Where the symbols came from.
    pub symbols: (&'static str, &'i InputFile),
}

/// The type graph an ISF is written from.
#[derive(Clone, Copy)]
pub enum IsfTypes<'t> {
    /// DWARF.
    #[cfg(feature = "dwarf")]
    Dwarf(&'t crate::dwarf::Layouts<'t>),
    /// BTF.
    Btf(&'t crate::btf::Btf),
}

/// Counts of what was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IsfStats {
    /// Structs and unions.
    pub user_types: usize,
    /// Enumerations.
    pub enums: usize,
    /// Base types.
    pub base_types: usize,
    /// Symbols.
    pub symbols: usize,
    /// Symbols with a type.
    pub typed_symbols: usize,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct BaseType {
    pub(crate) size: u64,
    pub(crate) signed: bool,
    pub(crate) kind: &'static str,
}

/// What the document skeleton ([`write_isf`]) needs from a type graph: roots queued by
/// name, variable types, then aggregates written one at a time as they are dequeued,
/// the enums and the base types they used.
pub(crate) trait TypeWriter {
    /// Queue the named struct/union (when defined).
    fn enqueue_named(&mut self, name: &str);
    /// Every struct/union name, sorted.
    fn all_names(&self) -> Vec<String>;
    /// The type descriptor of the named variable, when known.
    fn variable_type(&mut self, name: &str) -> Option<String>;
    /// Write the next queued aggregate as `"name": {...}`; false when none is left.
    fn write_next(&mut self, out: &mut String) -> Result<bool>;
    /// Write every enum used (with `--full`, every named enum: Volatility looks some
    /// up by name, e.g. `mod_mem_type` for the modules of 6.4 on), as `"name": {...}`
    /// items; returns how many.
    fn write_enums(&mut self, out: &mut String) -> usize;
    /// The base types used.
    fn bases(&mut self) -> &mut BTreeMap<String, BaseType>;
}

/// Write the ISF of `types` + `symbols` to `out`.
pub fn write_isf(
    out: &mut dyn Write,
    types: IsfTypes<'_>,
    symbols: &SymbolMap,
    banner: Option<&[u8]>,
    inputs: &IsfInputs<'_>,
    opts: &IsfOptions,
) -> Result<IsfStats> {
    match types {
        #[cfg(feature = "dwarf")]
        IsfTypes::Dwarf(layouts) => {
            let mut w = crate::isf_dwarf::DwarfWriter::new(layouts, opts.full);
            write_document(out, &mut w, symbols, banner, inputs, opts)
        }
        IsfTypes::Btf(btf) => {
            let mut w =
                crate::isf_btf::BtfWriter::new(btf, opts.full, symbols, banner.map(<[u8]>::len));
            write_document(out, &mut w, symbols, banner, inputs, opts)
        }
    }
}

fn write_document(
    out: &mut dyn Write,
    w: &mut dyn TypeWriter,
    symbols: &SymbolMap,
    banner: Option<&[u8]>,
    inputs: &IsfInputs<'_>,
    opts: &IsfOptions,
) -> Result<IsfStats> {
    let mut stats = IsfStats::default();
    let roots: Vec<String> = if opts.full {
        w.all_names()
    } else {
        opts.types.clone()
    };
    for name in roots {
        w.enqueue_named(&name);
    }

    // symbol types first: they may reference more aggregates
    let typed: HashSet<&str> = opts.typed_symbols.iter().map(String::as_str).collect();
    let mut syms: Vec<(&str, u64, Option<String>)> = Vec::with_capacity(symbols.len());
    for (name, sym) in symbols {
        let ty = if opts.full || typed.contains(name.as_str()) {
            w.variable_type(name)
        } else {
            None
        };
        syms.push((name.as_str(), sym.address, ty));
    }

    let io = |e: std::io::Error| Error::Output(e);
    let mut buf = String::with_capacity(1 << 16);
    buf.push_str("{\n  \"metadata\": ");
    metadata(&mut buf, inputs, opts);
    buf.push_str(",\n  \"user_types\": {");
    out.write_all(buf.as_bytes()).map_err(io)?;
    let mut first = true;
    loop {
        buf.clear();
        buf.push_str(if first { "\n    " } else { ",\n    " });
        if !w.write_next(&mut buf)? {
            break;
        }
        first = false;
        out.write_all(buf.as_bytes()).map_err(io)?;
        stats.user_types += 1;
    }
    buf.clear();
    buf.push_str("\n  },\n  \"enums\": {");
    stats.enums = w.write_enums(&mut buf);
    buf.push_str("\n  },\n  \"base_types\": {");
    let bases = w.bases();
    bases.insert(
        "pointer".into(),
        BaseType {
            size: 8,
            signed: false,
            kind: "int",
        },
    );
    bases.insert(
        "void".into(),
        BaseType {
            size: 0,
            signed: false,
            kind: "void",
        },
    );
    for (i, (name, b)) in bases.iter().enumerate() {
        buf.push_str(if i == 0 { "\n    " } else { ",\n    " });
        json_str(&mut buf, name);
        let _ = write!(
            buf,
            ": {{\"size\": {}, \"signed\": {}, \"kind\": \"{}\", \"endian\": \"little\"}}",
            b.size, b.signed, b.kind
        );
        stats.base_types += 1;
    }
    buf.push_str("\n  },\n  \"symbols\": {");
    out.write_all(buf.as_bytes()).map_err(io)?;
    for (i, (name, address, ty)) in syms.iter().enumerate() {
        buf.clear();
        buf.push_str(if i == 0 { "\n    " } else { ",\n    " });
        json_str(&mut buf, name);
        let _ = write!(buf, ": {{\"address\": {address}");
        if let Some(ty) = ty {
            buf.push_str(", \"type\": ");
            buf.push_str(ty);
            stats.typed_symbols += 1;
        }
        if *name == "linux_banner" {
            if let Some(b) = banner {
                buf.push_str(", \"constant_data\": \"");
                base64::engine::general_purpose::STANDARD.encode_string(b, &mut buf);
                buf.push('"');
            }
        }
        buf.push('}');
        out.write_all(buf.as_bytes()).map_err(io)?;
        stats.symbols += 1;
    }
    out.write_all(b"\n  }\n}\n").map_err(io)?;
    Ok(stats)
}

fn metadata(buf: &mut String, inputs: &IsfInputs<'_>, opts: &IsfOptions) {
    let now = opts.datetime.clone().unwrap_or_else(now_rfc3339);
    let item = |buf: &mut String, kind: &str, f: &InputFile| {
        buf.push_str("{\"kind\": ");
        json_str(buf, kind);
        buf.push_str(", \"name\": ");
        json_str(buf, &f.name);
        buf.push_str(", \"hash_type\": \"sha256\", \"hash_value\": ");
        json_str(buf, &f.sha256);
        buf.push('}');
    };
    buf.push_str("{\"format\": \"");
    buf.push_str(ISF_FORMAT);
    buf.push_str("\", \"producer\": {\"name\": \"profile-gen\", \"version\": \"");
    buf.push_str(env!("CARGO_PKG_VERSION"));
    buf.push_str("\", \"datetime\": ");
    json_str(buf, &now);
    let schema_kind = |kind: &'static str| match kind {
        "btf" => "dwarf",
        "kallsyms" => "symtab",
        "proc-kallsyms" => "system-map",
        other => other,
    };
    buf.push_str("}, \"linux\": {\"symbols\": [");
    item(buf, schema_kind(inputs.symbols.0), inputs.symbols.1);
    buf.push_str("], \"types\": [");
    item(buf, schema_kind(inputs.types.0), inputs.types.1);
    buf.push_str("]}}");
}

/// The enum's `{"size", "base", "constants"}`. The base must be a type of the ISF's
/// base_types (Volatility builds its natives from them): the enum's own underlying type
/// when known, else one chosen by size and sign (and registered in `bases`).
pub(crate) fn enum_body(
    out: &mut String,
    size: u64,
    base: Option<String>,
    constants: &[(String, i128)],
    bases: &mut BTreeMap<String, BaseType>,
) {
    let signed = constants.iter().any(|(_, v)| *v < 0);
    let base = base.unwrap_or_else(|| {
        let (name, kind) = match (size, signed) {
            (1, true) => ("signed char", "char"),
            (1, false) => ("unsigned char", "char"),
            (2, true) => ("short int", "int"),
            (2, false) => ("short unsigned int", "int"),
            (8, true) => ("long int", "int"),
            (8, false) => ("long unsigned int", "int"),
            (_, true) => ("int", "int"),
            (_, false) => ("unsigned int", "int"),
        };
        bases.entry(name.into()).or_insert(BaseType {
            size: size.clamp(1, 8),
            signed,
            kind,
        });
        name.to_string()
    });
    let _ = write!(out, "{{\"size\": {size}, \"base\": ");
    json_str(out, &base);
    out.push_str(", \"constants\": {");
    for (i, (name, value)) in constants.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        json_str(out, name);
        let _ = write!(out, ": {value}");
    }
    out.push_str("}}");
}

/// Wrap `tdesc` in a bitfield descriptor for a bitfield of `bits` bits at bit `position`
/// of the aggregate, whose type is `storage` bytes wide; returns the byte offset to write.
/// Volatility reads a bitfield from its storage unit: the unit holding it when it fits
/// in one, else from the byte holding its first bit.
pub(crate) fn bitfield(tdesc: &mut String, position: u64, bits: u64, storage: u64) -> u64 {
    let storage = storage.clamp(1, 16) * 8;
    let start = position / storage * storage;
    let (off, pos) = if position.saturating_add(bits) <= start.saturating_add(storage) {
        (start / 8, position - start)
    } else {
        (position / 8, position % 8)
    };
    *tdesc = format!(
        "{{\"kind\": \"bitfield\", \"bit_position\": {pos}, \"bit_length\": {bits}, \"type\": {tdesc}}}"
    );
    off
}

/// One field of a user type: `"name": {"type": ..., "offset": ...}`.
pub(crate) fn member(
    out: &mut String,
    first: bool,
    name: &str,
    tdesc: &str,
    offset: u64,
    anonymous: bool,
) {
    out.push_str(if first { "\n      " } else { ",\n      " });
    json_str(out, name);
    let _ = write!(out, ": {{\"type\": {tdesc}, \"offset\": {offset}");
    if anonymous {
        out.push_str(", \"anonymous\": true");
    }
    out.push('}');
}

/// Append `s` as a JSON string.
pub(crate) fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The current UTC time as RFC 3339, in whole seconds (honours `SOURCE_DATE_EPOCH` for
/// reproducible output; a value that is no date is ignored).
fn now_rfc3339() -> String {
    let pinned = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok());
    rfc3339(pinned.unwrap_or_else(OffsetDateTime::now_utc))
}

fn rfc3339(t: OffsetDateTime) -> String {
    // formatting fails only for a year past 9999, which neither constructor gives
    t.truncate_to_second()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The banner's `constant_data` is standard base64 with padding.
    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut s = String::new();
            base64::engine::general_purpose::STANDARD.encode_string(input, &mut s);
            assert_eq!(s, want, "{input}");
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\n\u{1}");
        assert_eq!(s, r#""a\"b\\c\n\u0001""#);
    }

    #[test]
    fn dates_are_rfc3339() {
        let at = |secs| rfc3339(OffsetDateTime::from_unix_timestamp(secs).unwrap());
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        // whole seconds, as Volatility's producer datetime is written
        let now = rfc3339(OffsetDateTime::now_utc());
        assert!(now.len() == 20 && now.ends_with('Z'), "{now}");
    }
}
