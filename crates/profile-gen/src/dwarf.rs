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

type R<'a> = EndianSlice<'a, RunTimeEndian>;
type Unit<'a> = gimli::Unit<R<'a>>;

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
#[derive(Clone, Copy, Debug)]
struct Loc {
    unit: usize,
    offset: UnitOffset,
}

/// Layout extraction over a loaded DWARF.
pub struct Layouts<'a> {
    dwarf: gimli::Dwarf<R<'a>>,
    units: Vec<Unit<'a>>,
    /// info-section offset of each unit's start (for DW_FORM_ref_addr), sorted
    unit_starts: Vec<(usize, usize)>,
    /// signature → (unit, type offset) for type units
    signatures: HashMap<u64, Loc>,
    /// named struct/union definitions (first definition of a name wins)
    defs: HashMap<String, Loc>,
}

fn gerr(section: &str, e: gimli::Error) -> Error {
    Error::Section {
        section: section.to_string(),
        message: e.to_string(),
    }
}

/// Deepest type chain followed when naming a type (typedef → const → pointer ...).
const MAX_TYPE_DEPTH: usize = 32;
/// Deepest nesting of anonymous members flattened.
const MAX_ANON_DEPTH: usize = 16;

impl<'a> Layouts<'a> {
    /// Index every unit of `sections`.
    pub fn new(sections: &'a DwarfSections<'_>) -> Result<Layouts<'a>> {
        let dwarf = sections.dwarf();
        let mut units = Vec::new();
        let mut unit_starts = Vec::new();
        let mut signatures = HashMap::new();
        let mut headers = dwarf.units();
        while let Some(header) = headers.next().map_err(|e| gerr(".debug_info", e))? {
            let start = header
                .offset()
                .as_debug_info_offset()
                .map(|o| o.0)
                .unwrap_or(usize::MAX);
            let unit = dwarf.unit(header).map_err(|e| gerr(".debug_info", e))?;
            register_type_unit(&unit, units.len(), &mut signatures);
            unit_starts.push((start, units.len()));
            units.push(unit);
        }
        // DWARF 4 type units live in .debug_types
        let mut type_headers = dwarf.type_units();
        while let Some(header) = type_headers.next().map_err(|e| gerr(".debug_types", e))? {
            let unit = dwarf.unit(header).map_err(|e| gerr(".debug_types", e))?;
            register_type_unit(&unit, units.len(), &mut signatures);
            units.push(unit);
        }
        unit_starts.sort_unstable();
        let mut me = Layouts {
            dwarf,
            units,
            unit_starts,
            signatures,
            defs: HashMap::new(),
        };
        me.index_definitions()?;
        Ok(me)
    }

    fn index_definitions(&mut self) -> Result<()> {
        for (ui, unit) in self.units.iter().enumerate() {
            let mut cursor = unit.entries();
            while let Some((_, entry)) = cursor.next_dfs().map_err(|e| gerr(".debug_info", e))? {
                if !matches!(
                    entry.tag(),
                    gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type
                ) {
                    continue;
                }
                if is_declaration(entry) {
                    continue;
                }
                let Some(name) = self.name_of(unit, entry) else {
                    continue;
                };
                self.defs.entry(name).or_insert(Loc {
                    unit: ui,
                    offset: entry.offset(),
                });
            }
        }
        Ok(())
    }

    /// Names of every struct/union defined.
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.defs.keys().map(String::as_str)
    }

    fn name_of(&self, unit: &Unit<'a>, entry: &DebuggingInformationEntry<R<'a>>) -> Option<String> {
        let attr = entry.attr_value(gimli::DW_AT_name).ok()??;
        let s = self.dwarf.attr_string(unit, attr).ok()?;
        Some(String::from_utf8_lossy(s.slice()).into_owned())
    }

    fn entry(&self, loc: Loc) -> Option<DebuggingInformationEntry<'_, '_, R<'a>>> {
        self.units.get(loc.unit)?.entry(loc.offset).ok()
    }

    /// Resolve a DW_AT_type-style reference from `unit` to a location.
    fn resolve(&self, unit: usize, value: AttributeValue<R<'a>>) -> Option<Loc> {
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

    fn type_ref(&self, unit: usize, entry: &DebuggingInformationEntry<R<'a>>) -> Option<Loc> {
        let v = entry.attr_value(gimli::DW_AT_type).ok()??;
        self.resolve(unit, v)
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

    fn is_function(&self, loc: Loc, depth: usize) -> bool {
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

    fn array_dims(&self, loc: Loc) -> Vec<u64> {
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
                            other => other.udata_value().map(|u| u + 1),
                        })
                })
                .unwrap_or(0);
            dims.push(count);
        }
        dims
    }

    /// The layout of a named struct or union, or `None` when it has no definition.
    pub fn layout(&self, name: &str) -> Result<Option<TypeDef>> {
        let Some(&loc) = self.defs.get(name) else {
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
        self.members(loc, 0, 0, &mut fields)?;
        Ok(Some(TypeDef { kind, size, fields }))
    }

    fn members(
        &self,
        loc: Loc,
        base: u64,
        depth: usize,
        out: &mut BTreeMap<String, Field>,
    ) -> Result<()> {
        if depth > MAX_ANON_DEPTH {
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
            let name = self.name_of(unit, e);
            let ty = self.type_ref(loc.unit, e);
            let byte_loc = e
                .attr_value(gimli::DW_AT_data_member_location)
                .ok()
                .flatten()
                .and_then(|v| v.udata_value());
            let bit_size = e
                .attr_value(gimli::DW_AT_bit_size)
                .ok()
                .flatten()
                .and_then(|v| v.udata_value());
            // bit position of the member from the start of this (sub)object
            let data_bit_offset = e
                .attr_value(gimli::DW_AT_data_bit_offset)
                .ok()
                .flatten()
                .and_then(|v| v.udata_value())
                .or_else(|| {
                    // DWARF 2/3: DW_AT_bit_offset counts from the most significant bit of
                    // the storage unit (DW_AT_byte_size) at data_member_location
                    let old = e
                        .attr_value(gimli::DW_AT_bit_offset)
                        .ok()
                        .flatten()?
                        .udata_value()?;
                    let storage = e
                        .attr_value(gimli::DW_AT_byte_size)
                        .ok()
                        .flatten()?
                        .udata_value()?;
                    let bits = bit_size?;
                    Some(byte_loc.unwrap_or(0) * 8 + storage * 8 - old - bits)
                });
            match name {
                None => {
                    // anonymous struct/union: flatten its members
                    if let Some(target) = ty.and_then(|l| self.strip_to_aggregate(l)) {
                        let off = base + byte_loc.unwrap_or(0);
                        self.members(target, off, depth + 1, out)?;
                    }
                }
                Some(name) => {
                    let field = match (bit_size, data_bit_offset) {
                        (Some(bits), Some(dbo)) => Field {
                            offset: base + dbo / 8,
                            bit_offset: Some((dbo % 8) as u32),
                            bit_size: Some(bits as u32),
                            ty: self.type_name(ty),
                        },
                        _ => Field {
                            offset: base + byte_loc.unwrap_or(0),
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
    fn strip_to_aggregate(&self, mut loc: Loc) -> Option<Loc> {
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

fn is_declaration(entry: &DebuggingInformationEntry<R<'_>>) -> bool {
    matches!(
        entry.attr_value(gimli::DW_AT_declaration),
        Ok(Some(AttributeValue::Flag(true)))
    )
}
