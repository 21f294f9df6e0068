//! BTF (BPF Type Format) reader: struct and union layouts from `/sys/kernel/btf/vmlinux`,
//! a vmlinux `.BTF` section or the `.BTF` of a decompressed boot image.
//!
//! BTF is a flat table of types (`Documentation/bpf/btf.rst`): a 24-byte header, then
//! type records (12 bytes each, followed by kind-specific data: members, enumerators,
//! array bounds, ...), then a string section. Type ids count from 1 (0 is `void`).
//!
//! This is our own parser rather than a crate: the format is small, the kernel documents
//! it fully, and owning it lets every read be bounds-checked against the input (type
//! data is hostile: it may come from a guest) with no panics, a fixed cost per type,
//! and a view that mirrors the DWARF reader's (same flattening of anonymous members,
//! same compact type names; see [`crate::source::TypeSource`]). btf-rs would give the
//! same records but not the bounded single pass and the lookups we need.
//!
//! Differences from DWARF that matter for profiles (checked against DWARF profiles of
//! the same kernels in `tests/btf.rs`):
//! - BTF has no scopes: a struct defined inside a function is an ordinary type here.
//! - Several distinct definitions may share a name (BTF deduplication keeps types that
//!   differ); the first (lowest id) wins, as the first unit does for DWARF. Such names
//!   are reported by [`Btf::ambiguous`].
//! - Multi-dimensional arrays are nested `ARRAY` records; they are named like DWARF's
//!   one array with several subranges (`char[2][16]`).
//! - Variables are only described for per-CPU data (`DATASEC .data..percpu`); the
//!   types of other variables are not in BTF (see [`crate::isf`] for how symbols get
//!   their types in an ISF made from BTF).

use std::collections::{BTreeMap, HashMap, HashSet};

use vmi_core::profile::{Field, TypeDef, TypeKind};

use crate::error::{Error, Result};

/// The BTF magic, as stored by a little-endian kernel.
pub const MAGIC_LE: [u8; 2] = [0x9f, 0xeb];

/// Deepest type chain followed (typedef → const → pointer ...), as for DWARF.
const MAX_TYPE_DEPTH: usize = 32;
/// Deepest nesting of anonymous members flattened, as for DWARF.
const MAX_ANON_DEPTH: usize = 16;
/// Most members visited while laying out one type, as for DWARF.
const MAX_MEMBERS: usize = 100_000;
/// Largest BTF accepted (the kernel's is 5-10 MB).
const MAX_BTF: usize = 512 << 20;

/// BTF kinds (`BTF_KIND_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// `void` (id 0 only).
    Void,
    /// An integer (also `char` and `_Bool`).
    Int,
    /// A pointer.
    Ptr,
    /// An array.
    Array,
    /// A struct.
    Struct,
    /// A union.
    Union,
    /// An enum with 32-bit values.
    Enum,
    /// A forward declaration of a struct or union.
    Fwd,
    /// A typedef.
    Typedef,
    /// `volatile`.
    Volatile,
    /// `const`.
    Const,
    /// `restrict`.
    Restrict,
    /// A function.
    Func,
    /// A function prototype.
    FuncProto,
    /// A variable.
    Var,
    /// A data section (per-CPU variables).
    Datasec,
    /// A floating-point type.
    Float,
    /// A declaration tag.
    DeclTag,
    /// A type tag (`__user`, `__rcu`).
    TypeTag,
    /// An enum with 64-bit values.
    Enum64,
}

impl Kind {
    fn from_raw(k: u32) -> Option<Kind> {
        Some(match k {
            1 => Kind::Int,
            2 => Kind::Ptr,
            3 => Kind::Array,
            4 => Kind::Struct,
            5 => Kind::Union,
            6 => Kind::Enum,
            7 => Kind::Fwd,
            8 => Kind::Typedef,
            9 => Kind::Volatile,
            10 => Kind::Const,
            11 => Kind::Restrict,
            12 => Kind::Func,
            13 => Kind::FuncProto,
            14 => Kind::Var,
            15 => Kind::Datasec,
            16 => Kind::Float,
            17 => Kind::DeclTag,
            18 => Kind::TypeTag,
            19 => Kind::Enum64,
            _ => return None,
        })
    }
}

/// One type record.
#[derive(Debug, Clone, Copy)]
pub struct Type {
    /// The kind.
    pub kind: Kind,
    name_off: u32,
    /// `vlen`: members, enumerators, parameters ...
    pub vlen: u16,
    /// `kind_flag` (bitfield encoding for structs, union for forwards, signed for enums).
    pub kind_flag: bool,
    /// `size` (ints, structs, unions, enums, datasecs, floats) or `type` (the rest).
    pub size_or_type: u32,
    /// Offset of the kind-specific data in the type section.
    extra: u32,
}

/// A struct or union member.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    name_off: u32,
    /// The member's type id.
    pub ty: u32,
    /// Bit offset from the start of the aggregate.
    pub bit_offset: u32,
    /// Bitfield width (0: not a bitfield).
    pub bitfield_size: u32,
}

/// A parsed BTF blob.
pub struct Btf {
    data: Vec<u8>,
    big_endian: bool,
    /// start of the type section in `data`
    types_at: usize,
    types_len: usize,
    /// start and length of the string section in `data`
    strings_at: usize,
    strings_len: usize,
    /// `types[id]`; `types[0]` is void
    types: Vec<Type>,
    /// named struct/union definitions (first wins), then typedefs of anonymous ones
    aggregates: HashMap<String, u32>,
    /// named enum definitions (first wins), then typedefs of anonymous ones
    enums: HashMap<String, u32>,
    /// names with more than one struct/union definition
    ambiguous: HashSet<String>,
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.types.len())
            .field("bytes", &self.data.len())
            .finish_non_exhaustive()
    }
}

fn bad(message: impl Into<String>) -> Error {
    Error::Section {
        section: ".BTF".into(),
        message: message.into(),
    }
}

impl Btf {
    /// True when `data` starts like BTF (either byte order).
    pub fn looks_like(data: &[u8]) -> bool {
        data.len() >= 24 && (data[..3] == [0x9f, 0xeb, 1] || data[..3] == [0xeb, 0x9f, 1])
    }

    /// Parse BTF bytes (copied; the input is usually a slice of a larger image).
    pub fn parse(data: &[u8]) -> Result<Btf> {
        if data.len() > MAX_BTF {
            return Err(bad(format!(
                "{} bytes: larger than the {MAX_BTF} bytes accepted",
                data.len()
            )));
        }
        let big_endian = match data.get(..2) {
            Some([0x9f, 0xeb]) => false,
            Some([0xeb, 0x9f]) => true,
            _ => {
                return Err(bad(format!(
                    "no BTF magic 0xeb9f at offset 0 (found {:02x?})",
                    &data[..data.len().min(4)]
                )))
            }
        };
        let mut btf = Btf {
            data: data.to_vec(),
            big_endian,
            types_at: 0,
            types_len: 0,
            strings_at: 0,
            strings_len: 0,
            types: vec![Type {
                kind: Kind::Void,
                name_off: 0,
                vlen: 0,
                kind_flag: false,
                size_or_type: 0,
                extra: 0,
            }],
            aggregates: HashMap::new(),
            enums: HashMap::new(),
            ambiguous: HashSet::new(),
        };
        let version = btf.data.get(2).copied().unwrap_or(0);
        if version != 1 {
            return Err(bad(format!(
                "BTF version {version} (only version 1 exists)"
            )));
        }
        let hdr_len = btf.u32_at(4).ok_or_else(|| bad("header truncated"))? as usize;
        let field = |i: usize| btf.u32_at(8 + 4 * i).map(|v| v as usize);
        let (Some(type_off), Some(type_len), Some(str_off), Some(str_len)) =
            (field(0), field(1), field(2), field(3))
        else {
            return Err(bad("header truncated"));
        };
        if hdr_len < 24 || hdr_len > btf.data.len() {
            return Err(bad(format!("header length {hdr_len} is impossible")));
        }
        let end = |off: usize, len: usize| hdr_len.checked_add(off)?.checked_add(len);
        match (end(type_off, type_len), end(str_off, str_len)) {
            (Some(t), Some(s)) if t <= btf.data.len() && s <= btf.data.len() => {}
            _ => {
                return Err(bad(format!(
                    "type section {type_off}+{type_len} or string section {str_off}+{str_len} lies outside the {} bytes given (truncated?)",
                    btf.data.len()
                )))
            }
        }
        btf.types_at = hdr_len + type_off;
        btf.types_len = type_len;
        btf.strings_at = hdr_len + str_off;
        btf.strings_len = str_len;
        btf.read_types()?;
        btf.index();
        Ok(btf)
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.data.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    /// u32 number `i` of the kind-specific data of `t`.
    fn extra(&self, t: &Type, i: usize) -> Option<u32> {
        self.u32_at(self.types_at + t.extra as usize + 4 * i)
    }

    fn read_types(&mut self) -> Result<()> {
        let mut off = 0usize;
        while off < self.types_len {
            let at = self.types_at + off;
            let (Some(name_off), Some(info), Some(size_or_type)) =
                (self.u32_at(at), self.u32_at(at + 4), self.u32_at(at + 8))
            else {
                return Err(bad(format!(
                    "type {} at offset {off:#x} is truncated",
                    self.types.len()
                )));
            };
            let raw_kind = (info >> 24) & 0x1f;
            let kind = Kind::from_raw(raw_kind).ok_or_else(|| {
                bad(format!(
                    "type {} at offset {off:#x} has unknown kind {raw_kind}",
                    self.types.len()
                ))
            })?;
            let vlen = (info & 0xffff) as u16;
            let words = match kind {
                Kind::Int | Kind::Var | Kind::DeclTag => 1,
                Kind::Array => 3,
                Kind::Struct | Kind::Union | Kind::Datasec | Kind::Enum64 => 3 * vlen as usize,
                Kind::Enum | Kind::FuncProto => 2 * vlen as usize,
                _ => 0,
            };
            let extra = off + 12;
            let next = extra + 4 * words;
            if next > self.types_len {
                return Err(bad(format!(
                    "type {} at offset {off:#x} runs past the end of the type section",
                    self.types.len()
                )));
            }
            self.types.push(Type {
                kind,
                name_off,
                vlen,
                kind_flag: info >> 31 == 1,
                size_or_type,
                extra: extra as u32,
            });
            off = next;
        }
        Ok(())
    }

    fn index(&mut self) {
        let mut typedef_aggregates = Vec::new();
        let mut typedef_enums = Vec::new();
        for id in 1..self.types.len() as u32 {
            let t = self.types[id as usize];
            let name = self.str_at(t.name_off);
            if name.is_empty() {
                continue;
            }
            match t.kind {
                Kind::Struct | Kind::Union => {
                    if self.aggregates.contains_key(name) {
                        self.ambiguous.insert(name.to_string());
                    } else {
                        self.aggregates.insert(name.to_string(), id);
                    }
                }
                // an enum without enumerators is a declaration
                Kind::Enum | Kind::Enum64 if t.vlen > 0 => {
                    self.enums.entry(name.to_string()).or_insert(id);
                }
                Kind::Typedef => {
                    if let Some(target) = self.get(t.size_or_type) {
                        if self.str_at(target.name_off).is_empty() {
                            match target.kind {
                                Kind::Struct | Kind::Union => {
                                    typedef_aggregates.push((name.to_string(), t.size_or_type))
                                }
                                Kind::Enum | Kind::Enum64 => {
                                    typedef_enums.push((name.to_string(), t.size_or_type))
                                }
                                _ => {}
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        for (name, id) in typedef_aggregates {
            self.aggregates.entry(name).or_insert(id);
        }
        for (name, id) in typedef_enums {
            self.enums.entry(name).or_insert(id);
        }
    }

    /// The string at `off` of the string section ("" when out of range or not UTF-8).
    pub fn str_at(&self, off: u32) -> &str {
        let off = off as usize;
        if off >= self.strings_len {
            return "";
        }
        let s = &self.data[self.strings_at + off..self.strings_at + self.strings_len];
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// The type with id `id` (`None` when out of range).
    pub fn get(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// Number of type ids (void included).
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// True when only `void` is there.
    pub fn is_empty(&self) -> bool {
        self.types.len() <= 1
    }

    /// The name of a type ("" when anonymous).
    pub fn name(&self, t: &Type) -> &str {
        self.str_at(t.name_off)
    }

    /// The member's name ("" when anonymous).
    pub fn member_name(&self, m: &Member) -> &str {
        self.str_at(m.name_off)
    }

    /// Members of a struct or union (empty for other kinds).
    pub fn members(&self, t: &Type) -> impl Iterator<Item = Member> + '_ {
        let n = match t.kind {
            Kind::Struct | Kind::Union => t.vlen as usize,
            _ => 0,
        };
        let t = *t;
        (0..n).filter_map(move |i| {
            let (name_off, ty, offset) = (
                self.extra(&t, 3 * i)?,
                self.extra(&t, 3 * i + 1)?,
                self.extra(&t, 3 * i + 2)?,
            );
            let (bit_offset, bitfield_size) = if t.kind_flag {
                (offset & 0xff_ffff, offset >> 24)
            } else {
                (offset, 0)
            };
            Some(Member {
                name_off,
                ty,
                bit_offset,
                bitfield_size,
            })
        })
    }

    /// `(element type, element count)` of an array.
    pub fn array(&self, t: &Type) -> Option<(u32, u32)> {
        (t.kind == Kind::Array).then_some(())?;
        Some((self.extra(t, 0)?, self.extra(t, 2)?))
    }

    /// `(encoding, bit offset, bits)` of an int (`BTF_INT_SIGNED` = 1, `CHAR` = 2, `BOOL` = 4).
    pub fn int(&self, t: &Type) -> Option<(u32, u32, u32)> {
        (t.kind == Kind::Int).then_some(())?;
        let v = self.extra(t, 0)?;
        Some(((v >> 24) & 0xf, (v >> 16) & 0xff, v & 0xff))
    }

    /// Enumerators `(name, value)` of an enum or enum64.
    pub fn enumerators(&self, t: &Type) -> Vec<(&str, i128)> {
        let mut out = Vec::new();
        match t.kind {
            Kind::Enum => {
                for i in 0..t.vlen as usize {
                    let (Some(n), Some(v)) = (self.extra(t, 2 * i), self.extra(t, 2 * i + 1))
                    else {
                        break;
                    };
                    let v = if t.kind_flag {
                        i128::from(v as i32)
                    } else {
                        i128::from(v)
                    };
                    out.push((self.str_at(n), v));
                }
            }
            Kind::Enum64 => {
                for i in 0..t.vlen as usize {
                    let (Some(n), Some(lo), Some(hi)) = (
                        self.extra(t, 3 * i),
                        self.extra(t, 3 * i + 1),
                        self.extra(t, 3 * i + 2),
                    ) else {
                        break;
                    };
                    let v = (u64::from(hi) << 32) | u64::from(lo);
                    let v = if t.kind_flag {
                        i128::from(v as i64)
                    } else {
                        i128::from(v)
                    };
                    out.push((self.str_at(n), v));
                }
            }
            _ => {}
        }
        out
    }

    /// Names of every struct/union defined (and typedefs of anonymous ones).
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.aggregates.keys().map(String::as_str)
    }

    /// The id of the named struct/union definition.
    pub fn aggregate(&self, name: &str) -> Option<u32> {
        self.aggregates.get(name).copied()
    }

    /// The id of the named enum definition.
    pub fn enumeration(&self, name: &str) -> Option<u32> {
        self.enums.get(name).copied()
    }

    /// Every named enum (and typedef of an anonymous one) with its id.
    pub fn enums(&self) -> impl Iterator<Item = (&str, u32)> {
        self.enums.iter().map(|(n, id)| (n.as_str(), *id))
    }

    /// Names that have more than one struct/union definition (the first is used).
    pub fn ambiguous(&self) -> &HashSet<String> {
        &self.ambiguous
    }

    /// Follow typedefs, qualifiers and type tags from `id` (bounded).
    pub fn strip(&self, mut id: u32, also_typedefs: bool) -> u32 {
        for _ in 0..MAX_TYPE_DEPTH {
            match self.get(id).map(|t| t.kind) {
                Some(Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag) => {
                    id = self.types[id as usize].size_or_type
                }
                Some(Kind::Typedef) if also_typedefs => id = self.types[id as usize].size_or_type,
                _ => return id,
            }
        }
        id
    }

    /// The size in bytes of the type `id` (through typedefs, qualifiers and arrays).
    pub fn size_of(&self, id: u32) -> Option<u64> {
        let mut id = id;
        let mut mult = 1u64;
        for _ in 0..MAX_TYPE_DEPTH {
            let t = self.get(id)?;
            match t.kind {
                Kind::Int
                | Kind::Struct
                | Kind::Union
                | Kind::Enum
                | Kind::Enum64
                | Kind::Float => return mult.checked_mul(u64::from(t.size_or_type)),
                Kind::Ptr => return mult.checked_mul(8),
                Kind::Array => {
                    let (elem, n) = self.array(t)?;
                    mult = mult.checked_mul(u64::from(n))?;
                    id = elem;
                }
                Kind::Typedef | Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag => {
                    id = t.size_or_type
                }
                _ => return None,
            }
        }
        None
    }

    /// True when `id` names a function type (through typedefs and qualifiers).
    fn is_function(&self, id: u32) -> bool {
        self.get(self.strip(id, true))
            .is_some_and(|t| t.kind == Kind::FuncProto)
    }

    /// True when `id` names an array (through typedefs and qualifiers).
    fn is_array(&self, id: u32) -> bool {
        self.get(self.strip(id, true))
            .is_some_and(|t| t.kind == Kind::Array)
    }

    /// The compact type name of `id` (docs/profile.md), as the DWARF reader writes it.
    pub fn type_name(&self, id: u32) -> String {
        self.type_name_depth(id, 0)
    }

    fn type_name_depth(&self, id: u32, depth: usize) -> String {
        if depth > MAX_TYPE_DEPTH {
            return "?".into();
        }
        let Some(t) = self.get(id) else {
            return "?".into();
        };
        let name = self.name(t);
        let named = |prefix: &str| {
            if name.is_empty() {
                format!("{prefix} <anon>")
            } else {
                format!("{prefix} {name}")
            }
        };
        let next = t.size_or_type;
        match t.kind {
            Kind::Void => "void".into(),
            Kind::Int | Kind::Float => {
                if name.is_empty() {
                    "?".into()
                } else {
                    name.to_string()
                }
            }
            Kind::Ptr => {
                if self.is_function(next) {
                    "ptr fn".into()
                } else if self.is_array(next) {
                    format!("ptr ({})", self.type_name_depth(next, depth + 1))
                } else {
                    format!("ptr {}", self.type_name_depth(next, depth + 1))
                }
            }
            Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag => {
                self.type_name_depth(next, depth + 1)
            }
            Kind::Typedef => {
                if let Some(target) = self.get(next) {
                    if self.name(target).is_empty() {
                        match target.kind {
                            Kind::Struct => return format!("struct {name}"),
                            Kind::Union => return format!("union {name}"),
                            Kind::Enum | Kind::Enum64 => return format!("enum {name}"),
                            _ => {}
                        }
                    }
                }
                self.type_name_depth(next, depth + 1)
            }
            Kind::Struct => named("struct"),
            Kind::Union => named("union"),
            Kind::Fwd if t.kind_flag => named("union"),
            Kind::Fwd => named("struct"),
            Kind::Enum | Kind::Enum64 => named("enum"),
            Kind::FuncProto => "fn".into(),
            Kind::Array => {
                // nested arrays are one multi-dimensional array to DWARF
                let mut dims = String::new();
                let mut cur = *t;
                let mut elem = 0;
                for _ in 0..MAX_TYPE_DEPTH {
                    let Some((e, n)) = self.array(&cur) else {
                        return "?".into();
                    };
                    dims.push_str(&format!("[{n}]"));
                    elem = e;
                    match self.get(e) {
                        Some(next) if next.kind == Kind::Array => cur = *next,
                        _ => break,
                    }
                }
                format!("{}{dims}", self.type_name_depth(elem, depth + 1))
            }
            _ => "?".into(),
        }
    }

    /// The layout of a named struct or union, or `None` when BTF does not define it.
    pub fn layout(&self, name: &str) -> Result<Option<TypeDef>> {
        let Some(id) = self.aggregate(name) else {
            return Ok(None);
        };
        let t = self.types[id as usize];
        let kind = if t.kind == Kind::Union {
            TypeKind::Union
        } else {
            TypeKind::Struct
        };
        let mut fields = BTreeMap::new();
        let mut path = vec![id];
        let mut budget = MAX_MEMBERS;
        self.flatten(id, 0, &mut path, &mut budget, &mut fields)?;
        Ok(Some(TypeDef {
            kind,
            size: u64::from(t.size_or_type),
            fields,
        }))
    }

    fn flatten(
        &self,
        id: u32,
        base_bits: u64,
        path: &mut Vec<u32>,
        budget: &mut usize,
        out: &mut BTreeMap<String, Field>,
    ) -> Result<()> {
        if path.len() > MAX_ANON_DEPTH {
            return Ok(());
        }
        let t = self.types[id as usize];
        for m in self.members(&t) {
            *budget = budget.checked_sub(1).ok_or_else(|| {
                bad(format!(
                    "type {id}: more than {MAX_MEMBERS} members under one type"
                ))
            })?;
            let name = self.member_name(&m);
            let bits = base_bits + u64::from(m.bit_offset);
            if name.is_empty() {
                // an anonymous struct/union: its members belong to the parent
                let target = self.strip(m.ty, true);
                let is_aggregate = self
                    .get(target)
                    .is_some_and(|t| matches!(t.kind, Kind::Struct | Kind::Union));
                if is_aggregate && !path.contains(&target) {
                    path.push(target);
                    self.flatten(target, bits / 8 * 8, path, budget, out)?;
                    path.pop();
                }
                continue;
            }
            let bitfield = if m.bitfield_size > 0 {
                Some((bits, m.bitfield_size))
            } else if !t.kind_flag {
                // the old encoding: the bitfield is described by the int itself
                self.get(self.strip(m.ty, true)).and_then(|it| {
                    let (_, off, nbits) = self.int(it)?;
                    (off != 0 || u64::from(nbits) != u64::from(it.size_or_type) * 8)
                        .then_some((bits + u64::from(off), nbits))
                })
            } else {
                None
            };
            let field = match bitfield {
                Some((pos, size)) => Field {
                    offset: pos / 8,
                    bit_offset: Some((pos % 8) as u32),
                    bit_size: Some(size),
                    ty: self.type_name(m.ty),
                },
                None => Field {
                    offset: bits / 8,
                    bit_offset: None,
                    bit_size: None,
                    ty: self.type_name(m.ty),
                },
            };
            out.entry(name.to_string()).or_insert(field);
        }
        Ok(())
    }

    /// `(name, type id, offset, size)` of each variable of each `DATASEC` (per-CPU data).
    pub fn variables(&self) -> Vec<(&str, u32, u32)> {
        let mut out = Vec::new();
        for t in &self.types {
            if t.kind != Kind::Datasec {
                continue;
            }
            for i in 0..t.vlen as usize {
                let (Some(var), Some(offset)) = (self.extra(t, 3 * i), self.extra(t, 3 * i + 1))
                else {
                    break;
                };
                if let Some(v) = self.get(var).filter(|v| v.kind == Kind::Var) {
                    out.push((self.name(v), v.size_or_type, offset));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF: `struct s { int a; struct { int b:3; }; char c[2][4]; }` and a typedef
    /// of an anonymous struct.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0c\0char\0kuid_t\0val\0";
        let name = |s: &str| -> u32 {
            let hay = std::str::from_utf8(strings).unwrap();
            hay.find(&format!("\0{s}\0")).unwrap() as u32 + 1
        };
        let mut t: Vec<u32> = Vec::new();
        // 1: int
        t.extend([name("int"), 1 << 24, 4, (1 << 24) | 32]);
        // 2: char
        t.extend([name("char"), 1 << 24, 1, 8]);
        // 3: int[4]... char[4]
        t.extend([0, 3 << 24, 0, 2, 1, 4]);
        // 4: char[2][4]
        t.extend([0, 3 << 24, 0, 3, 1, 2]);
        // 5: anonymous struct { int b:3 } (kind_flag)
        t.extend([0, (1 << 31) | (4 << 24) | 1, 4, name("b"), 1, 3 << 24]);
        // 6: struct s
        t.extend([
            name("s"),
            (4 << 24) | 3,
            16,
            name("a"),
            1,
            0,
            0,
            5,
            32,
            name("c"),
            4,
            64,
        ]);
        // 7: anonymous struct { int val }, 8: typedef kuid_t
        t.extend([0, (4 << 24) | 1, 4, name("val"), 1, 0]);
        t.extend([name("kuid_t"), 8 << 24, 7]);
        let types: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = vec![0x9f, 0xeb, 1, 0];
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend(v.to_le_bytes());
        }
        out.extend(types);
        out.extend(strings);
        out
    }

    #[test]
    fn layouts_flatten_anonymous_members_and_name_types() {
        let btf = Btf::parse(&sample()).unwrap();
        let s = btf.layout("s").unwrap().unwrap();
        assert_eq!(s.size, 16);
        assert_eq!(s.fields["a"].ty, "int");
        let b = &s.fields["b"];
        assert_eq!((b.offset, b.bit_offset, b.bit_size), (4, Some(0), Some(3)));
        assert_eq!(s.fields["c"].ty, "char[2][4]");
        assert_eq!(s.fields["c"].offset, 8);
        let k = btf.layout("kuid_t").unwrap().unwrap();
        assert_eq!(k.fields["val"].offset, 0);
        assert_eq!(btf.type_name(8), "struct kuid_t");
    }

    #[test]
    fn damaged_btf_is_an_error_not_a_panic() {
        let good = sample();
        for n in 0..good.len() {
            let _ = Btf::parse(&good[..n]);
        }
        let mut bad = good.clone();
        bad[4 + 4 * 3] = 0xff; // type_len far too big
        assert!(Btf::parse(&bad).is_err());
        let mut kind = good.clone();
        kind[24 + 7] = 0x1f; // unknown kind
        assert!(Btf::parse(&kind)
            .unwrap_err()
            .to_string()
            .contains("unknown kind"));
        for i in 24..good.len() {
            let mut m = good.clone();
            m[i] ^= 0xa5;
            if let Ok(b) = Btf::parse(&m) {
                for name in ["s", "kuid_t"] {
                    let _ = b.layout(name);
                }
                for id in 0..b.len() as u32 + 2 {
                    let _ = b.type_name(id);
                    let _ = b.size_of(id);
                }
            }
        }
    }
}
