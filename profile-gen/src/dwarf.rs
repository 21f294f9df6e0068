//! Struct and union layouts from DWARF (4 and 5; compressed sections; type units).
//!
//! The reader walks every compilation and type unit once, records where each named
//! struct/union definition lives, and then lays out the wanted ones: members of anonymous
//! structs/unions are flattened into the parent at their accumulated offset, members of
//! named nested structs are not. A vmlinux is an executable, so `.rela.debug_*` sections
//! need not be applied.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use gimli::{AttributeValue, DebuggingInformationEntry, EndianSlice, RunTimeEndian, UnitOffset};
use object::{Object, ObjectSection};
use vmi_core::profile::{Field, TypeDef, TypeKind};

use crate::error::{Error, Result};

pub(crate) type R<'a> = EndianSlice<'a, RunTimeEndian>;
pub(crate) type Unit<'a> = gimli::Unit<R<'a>>;

/// The DWARF sections of an ELF file, decompressed where needed.
pub struct DwarfSections<'d> {
    sections: HashMap<&'static str, Cow<'d, [u8]>>,
    endian: RunTimeEndian,
}

const NAMES: &[&str] = &[
    ".debug_abbrev",
    ".debug_addr",
    ".debug_aranges",
    ".debug_info",
    ".debug_line",
    ".debug_line_str",
    ".debug_loc",
    ".debug_loclists",
    ".debug_ranges",
    ".debug_rnglists",
    ".debug_str",
    ".debug_str_offsets",
    ".debug_types",
];

impl<'d> DwarfSections<'d> {
    /// Read (and decompress) the DWARF sections of `elf`. An ELF without `.debug_info`
    /// is an error that points to the BTF path.
    pub fn load(elf: &object::File<'d>) -> Result<DwarfSections<'d>> {
        let endian = if elf.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let mut sections = HashMap::new();
        for name in NAMES {
            if let Some(section) = elf.section_by_name(name) {
                let data = section.uncompressed_data().map_err(|e| Error::Section {
                    section: name.to_string(),
                    message: format!("cannot read or decompress: {e}"),
                })?;
                sections.insert(*name, data);
            }
        }
        if !sections.contains_key(".debug_info") {
            return Err(Error::NoDwarf);
        }
        Ok(DwarfSections { sections, endian })
    }

    fn dwarf(&self) -> gimli::Dwarf<R<'_>> {
        let get = |id: gimli::SectionId| -> std::result::Result<R<'_>, gimli::Error> {
            let data = self
                .sections
                .get(id.name())
                .map(|c| c.as_ref())
                .unwrap_or(&[]);
            Ok(EndianSlice::new(data, self.endian))
        };
        gimli::Dwarf::load(get).unwrap_or_else(|_: gimli::Error| gimli::Dwarf::default())
    }
}

/// Where a type definition lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Loc {
    pub(crate) unit: usize,
    pub(crate) offset: UnitOffset,
}

/// Named definitions found by one pass over the units. The first definition of a name
/// (in unit order) wins; definitions nested in functions only count when no file-scope
/// definition exists.
#[derive(Default)]
struct Index {
    /// named struct/union definitions
    aggregates: HashMap<String, Loc>,
    /// named enumeration definitions
    enums: HashMap<String, Loc>,
    /// file-scope variables by name (the variable's own DIE; its DW_AT_type is the type)
    variables: HashMap<String, Loc>,
    /// struct/union/enum definitions found only inside functions
    nested_aggregates: HashMap<String, Loc>,
    nested_enums: HashMap<String, Loc>,
    /// variables only declared (`extern`): their type may be incomplete (`char x[]`)
    declared_variables: HashMap<String, Loc>,
    /// anonymous structs/unions/enums known by a typedef's name (`typedef struct {..} atomic_t`)
    typedef_aggregates: HashMap<String, Loc>,
    typedef_enums: HashMap<String, Loc>,
    /// typedefs of a type-unit type (`DW_FORM_ref_sig8`), resolved once all units are read
    typedef_signatures: Vec<(String, u64)>,
}

impl Index {
    /// Merge an index of later units: existing names win.
    fn merge(&mut self, later: Index) {
        fn fold(a: &mut HashMap<String, Loc>, b: HashMap<String, Loc>) {
            for (k, v) in b {
                a.entry(k).or_insert(v);
            }
        }
        fold(&mut self.aggregates, later.aggregates);
        fold(&mut self.enums, later.enums);
        fold(&mut self.variables, later.variables);
        fold(&mut self.nested_aggregates, later.nested_aggregates);
        fold(&mut self.nested_enums, later.nested_enums);
        fold(&mut self.declared_variables, later.declared_variables);
        fold(&mut self.typedef_aggregates, later.typedef_aggregates);
        fold(&mut self.typedef_enums, later.typedef_enums);
        self.typedef_signatures.extend(later.typedef_signatures);
    }

    /// The same index with unit numbers moved by `base` (a chunk's first unit).
    fn shifted(self, base: usize) -> Index {
        let shift = |m: HashMap<String, Loc>| -> HashMap<String, Loc> {
            m.into_iter()
                .map(|(k, l)| {
                    (
                        k,
                        Loc {
                            unit: l.unit + base,
                            offset: l.offset,
                        },
                    )
                })
                .collect()
        };
        Index {
            aggregates: shift(self.aggregates),
            enums: shift(self.enums),
            variables: shift(self.variables),
            nested_aggregates: shift(self.nested_aggregates),
            nested_enums: shift(self.nested_enums),
            declared_variables: shift(self.declared_variables),
            typedef_aggregates: shift(self.typedef_aggregates),
            typedef_enums: shift(self.typedef_enums),
            typedef_signatures: self.typedef_signatures,
        }
    }

    fn finish(&mut self) {
        for (k, v) in std::mem::take(&mut self.nested_aggregates) {
            self.aggregates.entry(k).or_insert(v);
        }
        for (k, v) in std::mem::take(&mut self.nested_enums) {
            self.enums.entry(k).or_insert(v);
        }
        for (k, v) in std::mem::take(&mut self.declared_variables) {
            self.variables.entry(k).or_insert(v);
        }
        for (k, v) in std::mem::take(&mut self.typedef_aggregates) {
            self.aggregates.entry(k).or_insert(v);
        }
        for (k, v) in std::mem::take(&mut self.typedef_enums) {
            self.enums.entry(k).or_insert(v);
        }
    }
}

/// Layout extraction over a loaded DWARF.
pub struct Layouts<'a> {
    pub(crate) dwarf: gimli::Dwarf<R<'a>>,
    pub(crate) units: Vec<Unit<'a>>,
    /// info-section offset of each unit's start (for DW_FORM_ref_addr), sorted
    unit_starts: Vec<(usize, usize)>,
    /// signature → (unit, type offset) for type units
    signatures: HashMap<u64, Loc>,
    index: Index,
}

fn gerr(section: &str, e: gimli::Error) -> Error {
    Error::Section {
        section: section.to_string(),
        message: e.to_string(),
    }
}

fn gerr_at(section: &str, unit_start: usize, e: gimli::Error) -> Error {
    Error::Section {
        section: section.to_string(),
        message: format!("unit at offset {unit_start:#x}: {e}"),
    }
}

/// Deepest type chain followed when naming a type (typedef → const → pointer ...).
pub(crate) const MAX_TYPE_DEPTH: usize = 32;
/// Deepest nesting of anonymous members flattened.
pub(crate) const MAX_ANON_DEPTH: usize = 16;
/// Most members (flattened ones included) visited while laying out one type; the
/// kernel's largest, task_struct, has a few hundred.
const MAX_MEMBERS: usize = 100_000;

/// The state of one layout walk: the anonymous aggregates being flattened (for cycle
/// detection) and the work left.
struct Walk {
    path: Vec<Loc>,
    budget: usize,
}

/// A unit header, the section it lives in and its offset there.
struct Pending<'a> {
    header: gimli::UnitHeader<R<'a>>,
    section: &'static str,
    start: usize,
}

impl<'a> Layouts<'a> {
    /// Index every unit of `sections`, on up to `threads` threads (0: one per core).
    pub fn new(sections: &'a DwarfSections<'_>) -> Result<Layouts<'a>> {
        Self::with_threads(sections, 0)
    }

    /// [`Layouts::new`] with an explicit number of threads.
    pub fn with_threads(sections: &'a DwarfSections<'_>, threads: usize) -> Result<Layouts<'a>> {
        let dwarf = sections.dwarf();
        let mut pending = Vec::new();
        let mut headers = dwarf.units();
        while let Some(header) = headers.next().map_err(|e| gerr(".debug_info", e))? {
            let start = header
                .offset()
                .as_debug_info_offset()
                .map(|o| o.0)
                .unwrap_or(usize::MAX);
            pending.push(Pending {
                header,
                section: ".debug_info",
                start,
            });
        }
        // DWARF 4 type units live in .debug_types
        let mut type_headers = dwarf.type_units();
        while let Some(header) = type_headers.next().map_err(|e| gerr(".debug_types", e))? {
            let start = header
                .offset()
                .as_debug_types_offset()
                .map(|o| o.0)
                .unwrap_or(usize::MAX);
            pending.push(Pending {
                header,
                section: ".debug_types",
                start,
            });
        }
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .clamp(1, 16);
        // contiguous chunks of about equal size keep "first definition wins" simple
        let total: usize = pending
            .iter()
            .map(|p| p.header.length_including_self())
            .sum();
        let per = total / threads + 1;
        let mut chunks: Vec<Vec<Pending<'a>>> = vec![Vec::new()];
        let mut acc = 0;
        for p in pending {
            let len = p.header.length_including_self();
            if acc >= per && chunks.len() < threads {
                chunks.push(Vec::new());
                acc = 0;
            }
            acc += len;
            chunks.last_mut().expect("one chunk at least").push(p);
        }
        let dwarf_ref = &dwarf;
        let results: Vec<Result<Chunk<'a>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| scope.spawn(move || index_chunk(dwarf_ref, chunk)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Section {
                            section: ".debug_info".into(),
                            message: "the indexing thread failed".into(),
                        })
                    })
                })
                .collect()
        });
        let mut units = Vec::new();
        let mut unit_starts = Vec::new();
        let mut signatures = HashMap::new();
        let mut index = Index::default();
        let mut rust_indexes = Vec::new();
        for r in results {
            let (chunk_units, chunk_sections, chunk_starts, chunk_index, chunk_rust) = r?;
            let base = units.len();
            rust_indexes.push((base, chunk_rust));
            // chunk indexes refer to units by their position in the chunk
            index.merge(chunk_index.shifted(base));
            for (i, unit) in chunk_units.into_iter().enumerate() {
                let ui = base + i;
                register_type_unit(&unit, ui, &mut signatures);
                if chunk_sections[i] == ".debug_info" {
                    unit_starts.push((chunk_starts[i], ui));
                }
                units.push(unit);
            }
        }
        unit_starts.sort_unstable();
        let mut me = Layouts {
            dwarf,
            units,
            unit_starts,
            signatures,
            index,
        };
        me.resolve_typedef_signatures();
        me.index.finish();
        // Rust units' definitions only where no C unit defines the name, however the C
        // unit defines it (a typedef of an anonymous struct included)
        for (base, mut chunk_index) in rust_indexes {
            chunk_index.finish();
            me.index.merge(chunk_index.shifted(base));
        }
        Ok(me)
    }

    fn resolve_typedef_signatures(&mut self) {
        for (name, sig) in std::mem::take(&mut self.index.typedef_signatures) {
            let Some(&loc) = self.signatures.get(&sig) else {
                continue;
            };
            let Some(e) = self.entry(loc) else { continue };
            if e.attr_value(gimli::DW_AT_name).ok().flatten().is_some() || is_declaration(&e) {
                continue;
            }
            let map = match e.tag() {
                gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type => {
                    &mut self.index.typedef_aggregates
                }
                gimli::DW_TAG_enumeration_type => &mut self.index.typedef_enums,
                _ => continue,
            };
            map.entry(name).or_insert(loc);
        }
    }

    /// Names of every struct/union defined.
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.index.aggregates.keys().map(String::as_str)
    }

    /// Where the named struct/union is defined.
    pub(crate) fn aggregate(&self, name: &str) -> Option<Loc> {
        self.index.aggregates.get(name).copied()
    }

    /// Where the named enum is defined.
    pub(crate) fn enumeration(&self, name: &str) -> Option<Loc> {
        self.index.enums.get(name).copied()
    }

    /// Every named enum (and typedef of an anonymous one) with its definition.
    pub(crate) fn enums(&self) -> impl Iterator<Item = (&str, Loc)> {
        self.index.enums.iter().map(|(n, l)| (n.as_str(), *l))
    }

    /// The enumerators `(name, value)` of the enum defined at `loc`.
    pub(crate) fn enumerators(&self, loc: Loc) -> Vec<(String, i128)> {
        let Some(entry) = self.entry(loc) else {
            return Vec::new();
        };
        let Some(unit) = self.units.get(loc.unit) else {
            return Vec::new();
        };
        let size = attr_udata(&entry, gimli::DW_AT_byte_size).unwrap_or(4);
        let mut constants = Vec::new();
        if let Ok(mut tree) = unit.entries_tree(Some(loc.offset)) {
            if let Ok(root) = tree.root() {
                let mut children = root.children();
                while let Ok(Some(child)) = children.next() {
                    let e = child.entry();
                    if e.tag() != gimli::DW_TAG_enumerator {
                        continue;
                    }
                    let Some(name) = self.name_of(unit, e) else {
                        continue;
                    };
                    let value: i128 = match e.attr_value(gimli::DW_AT_const_value) {
                        Ok(Some(AttributeValue::Sdata(v))) => v.into(),
                        Ok(Some(AttributeValue::Udata(v))) => v.into(),
                        Ok(Some(v)) => match v.udata_value() {
                            Some(u) if size > 0 && size < 8 && u >> (size * 8) == 0 => {
                                // Data1/2/4: signed when the enum's type is
                                let bits = size * 8;
                                if u >> (bits - 1) & 1 == 1 && self.enum_signed(loc) {
                                    i128::from(u) - (1i128 << bits)
                                } else {
                                    u.into()
                                }
                            }
                            Some(u) => u.into(),
                            None => continue,
                        },
                        _ => continue,
                    };
                    constants.push((name, value));
                }
            }
        }
        constants
    }

    /// True when the enum at `loc` has a signed underlying type.
    fn enum_signed(&self, loc: Loc) -> bool {
        let Some(e) = self.entry(loc) else {
            return false;
        };
        let Some(t) = self.type_ref(loc.unit, &e) else {
            return false;
        };
        let Some(b) = self.entry(t) else { return false };
        matches!(
            b.attr_value(gimli::DW_AT_encoding),
            Ok(Some(AttributeValue::Encoding(gimli::DW_ATE_signed)))
        )
    }

    /// The file-scope variable of that name.
    pub(crate) fn variable(&self, name: &str) -> Option<Loc> {
        self.index.variables.get(name).copied()
    }

    pub(crate) fn name_of(
        &self,
        unit: &Unit<'a>,
        entry: &DebuggingInformationEntry<R<'a>>,
    ) -> Option<String> {
        let attr = entry.attr_value(gimli::DW_AT_name).ok()??;
        let s = self.dwarf.attr_string(unit, attr).ok()?;
        Some(String::from_utf8_lossy(s.slice()).into_owned())
    }

    pub(crate) fn entry(&self, loc: Loc) -> Option<DebuggingInformationEntry<'_, '_, R<'a>>> {
        self.units.get(loc.unit)?.entry(loc.offset).ok()
    }

    /// Resolve a DW_AT_type-style reference from `unit` to a location.
    pub(crate) fn resolve(&self, unit: usize, value: AttributeValue<R<'a>>) -> Option<Loc> {
        match value {
            AttributeValue::UnitRef(o) => Some(Loc { unit, offset: o }),
            AttributeValue::DebugInfoRef(o) => {
                let idx = self
                    .unit_starts
                    .partition_point(|(start, _)| *start <= o.0)
                    .checked_sub(1)?;
                let (start, ui) = self.unit_starts[idx];
                let u = self.units.get(ui)?;
                let uo = gimli::DebugInfoOffset(o.0).to_unit_offset(&u.header)?;
                let _ = start;
                Some(Loc {
                    unit: ui,
                    offset: uo,
                })
            }
            AttributeValue::DebugTypesRef(sig) => self.signatures.get(&sig.0).copied(),
            _ => None,
        }
    }

    pub(crate) fn type_ref(
        &self,
        unit: usize,
        entry: &DebuggingInformationEntry<R<'a>>,
    ) -> Option<Loc> {
        let v = entry.attr_value(gimli::DW_AT_type).ok()??;
        let loc = self.resolve(unit, v)?;
        Some(self.follow_signature(loc))
    }

    /// A declaration that only names a type unit (`DW_AT_signature`, as gcc writes inside
    /// type units for types of other type units) stands for that unit's type.
    pub(crate) fn follow_signature(&self, loc: Loc) -> Loc {
        let Some(e) = self.entry(loc) else {
            return loc;
        };
        match e.attr_value(gimli::DW_AT_signature) {
            Ok(Some(AttributeValue::DebugTypesRef(sig))) => {
                self.signatures.get(&sig.0).copied().unwrap_or(loc)
            }
            _ => loc,
        }
    }

    /// The compact type name of the type at `loc` (see docs/profile.md).
    fn type_name(&self, loc: Option<Loc>) -> String {
        self.type_name_depth(loc, 0)
    }

    fn type_name_depth(&self, loc: Option<Loc>, depth: usize) -> String {
        let Some(loc) = loc else {
            return "void".into();
        };
        if depth > MAX_TYPE_DEPTH {
            return "?".into();
        }
        let Some(entry) = self.entry(loc) else {
            return "?".into();
        };
        let unit = &self.units[loc.unit];
        let name = self.name_of(unit, &entry);
        let next = self.type_ref(loc.unit, &entry);
        match entry.tag() {
            gimli::DW_TAG_base_type => name.unwrap_or_else(|| "?".into()),
            gimli::DW_TAG_unspecified_type => name.unwrap_or_else(|| "void".into()),
            gimli::DW_TAG_pointer_type | gimli::DW_TAG_reference_type => match next {
                Some(l) if self.is_function(l, depth + 1) => "ptr fn".into(),
                // a pointer to an array is written `ptr (int[5])`; `ptr int[5]` is an
                // array of five pointers
                Some(l) if self.is_array(l, depth + 1) => {
                    format!("ptr ({})", self.type_name_depth(next, depth + 1))
                }
                _ => format!("ptr {}", self.type_name_depth(next, depth + 1)),
            },
            gimli::DW_TAG_const_type
            | gimli::DW_TAG_volatile_type
            | gimli::DW_TAG_restrict_type
            | gimli::DW_TAG_atomic_type => self.type_name_depth(next, depth + 1),
            gimli::DW_TAG_typedef => {
                // a typedef of an anonymous struct/union is known by the typedef's name
                if let Some(target) = next.and_then(|l| self.entry(l).map(|e| (l, e))) {
                    let (tl, te) = target;
                    let anon = self.name_of(&self.units[tl.unit], &te).is_none();
                    match te.tag() {
                        gimli::DW_TAG_structure_type if anon => {
                            return format!("struct {}", name.unwrap_or_default())
                        }
                        gimli::DW_TAG_union_type if anon => {
                            return format!("union {}", name.unwrap_or_default())
                        }
                        gimli::DW_TAG_enumeration_type if anon => {
                            return format!("enum {}", name.unwrap_or_default())
                        }
                        _ => {}
                    }
                }
                self.type_name_depth(next, depth + 1)
            }
            gimli::DW_TAG_structure_type => {
                format!("struct {}", name.unwrap_or_else(|| "<anon>".into()))
            }
            gimli::DW_TAG_union_type => {
                format!("union {}", name.unwrap_or_else(|| "<anon>".into()))
            }
            gimli::DW_TAG_enumeration_type => {
                format!("enum {}", name.unwrap_or_else(|| "<anon>".into()))
            }
            gimli::DW_TAG_subroutine_type => "fn".into(),
            gimli::DW_TAG_array_type => {
                let elem = self.type_name_depth(next, depth + 1);
                let mut dims = String::new();
                for n in self.array_dims(loc) {
                    dims.push_str(&format!("[{n}]"));
                }
                if dims.is_empty() {
                    dims.push_str("[0]");
                }
                format!("{elem}{dims}")
            }
            _ => "?".into(),
        }
    }

    fn is_array(&self, loc: Loc, depth: usize) -> bool {
        if depth > MAX_TYPE_DEPTH {
            return false;
        }
        let Some(e) = self.entry(loc) else {
            return false;
        };
        match e.tag() {
            gimli::DW_TAG_array_type => true,
            gimli::DW_TAG_typedef | gimli::DW_TAG_const_type | gimli::DW_TAG_volatile_type => self
                .type_ref(loc.unit, &e)
                .is_some_and(|l| self.is_array(l, depth + 1)),
            _ => false,
        }
    }

    pub(crate) fn is_function(&self, loc: Loc, depth: usize) -> bool {
        if depth > MAX_TYPE_DEPTH {
            return false;
        }
        let Some(e) = self.entry(loc) else {
            return false;
        };
        match e.tag() {
            gimli::DW_TAG_subroutine_type => true,
            gimli::DW_TAG_typedef | gimli::DW_TAG_const_type | gimli::DW_TAG_volatile_type => self
                .type_ref(loc.unit, &e)
                .is_some_and(|l| self.is_function(l, depth + 1)),
            _ => false,
        }
    }

    pub(crate) fn array_dims(&self, loc: Loc) -> Vec<u64> {
        let mut dims = Vec::new();
        let unit = &self.units[loc.unit];
        let Ok(mut tree) = unit.entries_tree(Some(loc.offset)) else {
            return dims;
        };
        let Ok(root) = tree.root() else {
            return dims;
        };
        let mut children = root.children();
        while let Ok(Some(child)) = children.next() {
            let e = child.entry();
            if e.tag() != gimli::DW_TAG_subrange_type {
                continue;
            }
            let count = e
                .attr_value(gimli::DW_AT_count)
                .ok()
                .flatten()
                .and_then(|v| v.udata_value())
                .or_else(|| {
                    e.attr_value(gimli::DW_AT_upper_bound)
                        .ok()
                        .flatten()
                        .and_then(|v| match v {
                            AttributeValue::Sdata(-1) => Some(0),
                            other => other.udata_value().map(|u| u.saturating_add(1)),
                        })
                })
                .unwrap_or(0);
            dims.push(count);
        }
        dims
    }

    /// The layout of a named struct or union, or `None` when it has no definition.
    pub fn layout(&self, name: &str) -> Result<Option<TypeDef>> {
        let Some(loc) = self.aggregate(name) else {
            return Ok(None);
        };
        let Some(entry) = self.entry(loc) else {
            return Ok(None);
        };
        let kind = if entry.tag() == gimli::DW_TAG_union_type {
            TypeKind::Union
        } else {
            TypeKind::Struct
        };
        let size = entry
            .attr_value(gimli::DW_AT_byte_size)
            .ok()
            .flatten()
            .and_then(|v| v.udata_value())
            .unwrap_or(0);
        let mut fields = BTreeMap::new();
        let mut walk = Walk {
            path: vec![loc],
            budget: MAX_MEMBERS,
        };
        self.members(loc, 0, &mut walk, &mut fields)?;
        Ok(Some(TypeDef { kind, size, fields }))
    }

    fn members(
        &self,
        loc: Loc,
        base: u64,
        walk: &mut Walk,
        out: &mut BTreeMap<String, Field>,
    ) -> Result<()> {
        if walk.path.len() > MAX_ANON_DEPTH {
            return Ok(());
        }
        let unit = &self.units[loc.unit];
        let mut tree = unit
            .entries_tree(Some(loc.offset))
            .map_err(|e| gerr(".debug_info", e))?;
        let root = tree.root().map_err(|e| gerr(".debug_info", e))?;
        let mut children = root.children();
        while let Some(child) = children.next().map_err(|e| gerr(".debug_info", e))? {
            let e = child.entry();
            if e.tag() != gimli::DW_TAG_member {
                continue;
            }
            // hostile DWARF can nest anonymous members exponentially: bound the work
            walk.budget = walk.budget.checked_sub(1).ok_or_else(|| Error::Section {
                section: ".debug_info".into(),
                message: format!(
                    "unit {} entry {:#x}: more than {MAX_MEMBERS} members under one type",
                    loc.unit, loc.offset.0
                ),
            })?;
            let name = self.name_of(unit, e);
            let ty = self.type_ref(loc.unit, e);
            let place = member_place(e);
            let byte_loc = place.byte;
            let bit_size = place.bits;
            let data_bit_offset = place.bit_position;
            match name {
                None => {
                    // anonymous struct/union: flatten its members
                    if let Some(target) = ty.and_then(|l| self.strip_to_aggregate(l)) {
                        // an anonymous member of its own (enclosing) type is a cycle
                        if !walk.path.contains(&target) {
                            let off = base.saturating_add(byte_loc);
                            walk.path.push(target);
                            self.members(target, off, walk, out)?;
                            walk.path.pop();
                        }
                    }
                }
                Some(name) => {
                    let field = match (bit_size, data_bit_offset) {
                        (Some(bits), Some(dbo)) => Field {
                            offset: base.saturating_add(dbo / 8),
                            bit_offset: Some((dbo % 8) as u32),
                            bit_size: Some(bits as u32),
                            ty: self.type_name(ty),
                        },
                        _ => Field {
                            offset: base.saturating_add(byte_loc),
                            bit_offset: None,
                            bit_size: None,
                            ty: self.type_name(ty),
                        },
                    };
                    out.entry(name).or_insert(field);
                }
            }
        }
        Ok(())
    }

    /// Follow typedefs and qualifiers to a struct/union definition.
    pub(crate) fn strip_to_aggregate(&self, mut loc: Loc) -> Option<Loc> {
        for _ in 0..MAX_TYPE_DEPTH {
            let e = self.entry(loc)?;
            match e.tag() {
                gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type => return Some(loc),
                gimli::DW_TAG_typedef | gimli::DW_TAG_const_type | gimli::DW_TAG_volatile_type => {
                    loc = self.type_ref(loc.unit, &e)?
                }
                _ => return None,
            }
        }
        None
    }
}

/// Where a member sits in its containing object.
pub(crate) struct MemberPlace {
    /// Byte offset (`DW_AT_data_member_location`; 0 in unions).
    pub(crate) byte: u64,
    /// Bit size, for bitfields.
    pub(crate) bits: Option<u64>,
    /// Bit position from the start of the object, for bitfields.
    pub(crate) bit_position: Option<u64>,
}

/// Read a member's location: constant or (DWARF 2) `DW_OP_plus_uconst` expression byte
/// offsets, DWARF 4+ `DW_AT_data_bit_offset` and DWARF 2/3 `DW_AT_bit_offset` bitfields
/// (which count from the most significant bit of the storage unit and may be negative
/// when a packed bitfield straddles it).
pub(crate) fn member_place(e: &DebuggingInformationEntry<R<'_>>) -> MemberPlace {
    let byte = match e.attr_value(gimli::DW_AT_data_member_location) {
        Ok(Some(AttributeValue::Exprloc(expr))) => plus_uconst(expr.0.slice()).unwrap_or(0),
        Ok(Some(v)) => v.udata_value().unwrap_or(0),
        _ => 0,
    };
    let bits = attr_udata(e, gimli::DW_AT_bit_size);
    let bit_position = bits.and_then(|size| {
        if let Some(dbo) = attr_udata(e, gimli::DW_AT_data_bit_offset) {
            return Some(dbo);
        }
        let old = attr_sdata(e, gimli::DW_AT_bit_offset)?;
        let storage = attr_udata(e, gimli::DW_AT_byte_size).or_else(|| Some(size.div_ceil(8)))?;
        let pos =
            i128::from(byte) * 8 + i128::from(storage) * 8 - i128::from(old) - i128::from(size);
        u64::try_from(pos).ok()
    });
    MemberPlace {
        byte,
        bits,
        bit_position: bit_position.or(bits.map(|_| byte.saturating_mul(8))),
    }
}

/// The value of `DW_OP_plus_uconst N` (the only form gcc uses for member offsets).
fn plus_uconst(expr: &[u8]) -> Option<u64> {
    let (&op, rest) = expr.split_first()?;
    if op != gimli::DW_OP_plus_uconst.0 {
        return None;
    }
    let mut value = 0u64;
    for (i, &b) in rest.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

pub(crate) fn attr_udata(e: &DebuggingInformationEntry<R<'_>>, at: gimli::DwAt) -> Option<u64> {
    e.attr_value(at)
        .ok()
        .flatten()
        .and_then(|v| v.udata_value())
}

fn attr_sdata(e: &DebuggingInformationEntry<R<'_>>, at: gimli::DwAt) -> Option<i64> {
    match e.attr_value(at).ok()?? {
        AttributeValue::Sdata(v) => Some(v),
        v => v.udata_value().and_then(|u| i64::try_from(u).ok()),
    }
}

/// Remember where a type unit's type lives, by its signature (DW_FORM_ref_sig8).
fn register_type_unit(unit: &Unit<'_>, index: usize, signatures: &mut HashMap<u64, Loc>) {
    if let gimli::UnitType::Type {
        type_signature,
        type_offset,
    } = unit.header.type_()
    {
        signatures.insert(
            type_signature.0,
            Loc {
                unit: index,
                offset: type_offset,
            },
        );
    }
}

pub(crate) fn is_declaration(entry: &DebuggingInformationEntry<R<'_>>) -> bool {
    matches!(
        entry.attr_value(gimli::DW_AT_declaration),
        Ok(Some(AttributeValue::Flag(true)))
    )
}

/// One chunk's units, the section and start offset of each, the index of its C (and
/// other non-Rust) units and the index of its Rust units.
type Chunk<'a> = (Vec<Unit<'a>>, Vec<&'static str>, Vec<usize>, Index, Index);

/// True for units written in Rust: on Rust-enabled kernels (7.x), the Rust bindings
/// carry their own copies of C structs, laid out with Rust field types; the C
/// definitions must win.
fn is_rust(unit: &Unit<'_>) -> bool {
    let mut entries = unit.entries();
    matches!(entries.next_dfs(), Ok(Some(_)))
        && matches!(
            entries
                .current()
                .map(|e| e.attr_value(gimli::DW_AT_language)),
            Some(Ok(Some(AttributeValue::Language(gimli::DW_LANG_Rust))))
        )
}

/// Parse the units of one chunk and index their named definitions.
fn index_chunk<'a>(dwarf: &gimli::Dwarf<R<'a>>, chunk: Vec<Pending<'a>>) -> Result<Chunk<'a>> {
    let mut units = Vec::with_capacity(chunk.len());
    let mut sections = Vec::with_capacity(chunk.len());
    let mut starts = Vec::with_capacity(chunk.len());
    let mut index = Index::default();
    let mut rust = Index::default();
    for p in chunk {
        let unit = dwarf
            .unit(p.header)
            .map_err(|e| gerr_at(p.section, p.start, e))?;
        let target = if is_rust(&unit) {
            &mut rust
        } else {
            &mut index
        };
        index_unit(dwarf, &unit, units.len(), target)
            .map_err(|e| gerr_at(p.section, p.start, e))?;
        units.push(unit);
        sections.push(p.section);
        starts.push(p.start);
    }
    Ok((units, sections, starts, index, rust))
}

/// One pass over a unit's entries, reading attributes only of the entries that matter.
fn index_unit<'a>(
    dwarf: &gimli::Dwarf<R<'a>>,
    unit: &Unit<'a>,
    ui: usize,
    index: &mut Index,
) -> std::result::Result<(), gimli::Error> {
    let mut raw = unit.entries_raw(None)?;
    while !raw.is_empty() {
        let depth = raw.next_depth();
        let offset = raw.next_offset();
        let Some(abbrev) = raw.read_abbreviation()? else {
            continue;
        };
        let tag = abbrev.tag();
        let wanted = matches!(
            tag,
            gimli::DW_TAG_structure_type
                | gimli::DW_TAG_union_type
                | gimli::DW_TAG_enumeration_type
                | gimli::DW_TAG_variable
                | gimli::DW_TAG_typedef
        );
        let file_scope_only = matches!(tag, gimli::DW_TAG_variable | gimli::DW_TAG_typedef);
        if !wanted || (file_scope_only && depth != 1) {
            raw.skip_attributes(abbrev.attributes())?;
            continue;
        }
        let mut name = None;
        let mut declaration = false;
        let mut has_type = false;
        let mut specification = None;
        let mut type_value = None;
        for spec in abbrev.attributes() {
            let attr = raw.read_attribute(*spec)?;
            match attr.name() {
                gimli::DW_AT_name => name = Some(attr.value()),
                gimli::DW_AT_specification => specification = Some(attr.value()),
                gimli::DW_AT_declaration => {
                    declaration = matches!(attr.value(), AttributeValue::Flag(true))
                }
                gimli::DW_AT_type => {
                    has_type = true;
                    type_value = Some(attr.value());
                }
                _ => {}
            }
        }
        if name.is_none() && has_type && tag == gimli::DW_TAG_variable {
            // a definition completing an `extern` declaration (e.g. `char x[]` → `char x[9]`)
            // is named by its declaration
            if let Some(AttributeValue::UnitRef(decl)) = specification {
                name = unit
                    .entry(decl)
                    .ok()
                    .and_then(|e| e.attr_value(gimli::DW_AT_name).ok().flatten());
            }
        }
        let Some(name) = name else { continue };
        let Ok(name) = dwarf.attr_string(unit, name) else {
            continue;
        };
        let mut loc = Loc { unit: ui, offset };
        if tag == gimli::DW_TAG_typedef {
            // only typedefs naming an anonymous struct/union/enum defined in this unit, or
            // in a type unit (checked once every unit is read)
            let target = match type_value {
                Some(AttributeValue::UnitRef(target)) => target,
                Some(AttributeValue::DebugTypesRef(sig)) => {
                    let name = String::from_utf8_lossy(name.slice()).into_owned();
                    index.typedef_signatures.push((name, sig.0));
                    continue;
                }
                _ => continue,
            };
            let Ok(t) = unit.entry(target) else { continue };
            let anonymous_definition = t.attr_value(gimli::DW_AT_name).ok().flatten().is_none()
                && !matches!(
                    t.attr_value(gimli::DW_AT_declaration),
                    Ok(Some(AttributeValue::Flag(true)))
                );
            if !anonymous_definition {
                continue;
            }
            let map = match t.tag() {
                gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type => {
                    &mut index.typedef_aggregates
                }
                gimli::DW_TAG_enumeration_type => &mut index.typedef_enums,
                _ => continue,
            };
            let name = String::from_utf8_lossy(name.slice());
            if !map.contains_key(name.as_ref()) {
                loc.offset = target;
                map.insert(name.into_owned(), loc);
            }
            continue;
        }
        let map = match tag {
            gimli::DW_TAG_variable if has_type && declaration => &mut index.declared_variables,
            gimli::DW_TAG_variable if has_type => &mut index.variables,
            gimli::DW_TAG_variable => continue,
            _ if declaration => continue,
            gimli::DW_TAG_enumeration_type if depth == 1 => &mut index.enums,
            gimli::DW_TAG_enumeration_type => &mut index.nested_enums,
            _ if depth == 1 => &mut index.aggregates,
            _ => &mut index.nested_aggregates,
        };
        let name = String::from_utf8_lossy(name.slice());
        if !map.contains_key(name.as_ref()) {
            map.insert(name.into_owned(), loc);
        }
    }
    Ok(())
}
