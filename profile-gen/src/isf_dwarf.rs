//! The ISF type graph written from DWARF: the [`Layouts`] index walked again (see
//! [`crate::isf`] for the document and the conventions shared with the BTF writer).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

use gimli::AttributeValue;

use crate::dwarf::{attr_udata, Layouts, Loc, MAX_TYPE_DEPTH};
use crate::error::{Error, Result};
use crate::isf::{bitfield, enum_body, json_str, member, BaseType, TypeWriter};

pub(crate) struct DwarfWriter<'l, 'a> {
    l: &'l Layouts<'a>,
    full: bool,
    /// aggregates to write: (name, definition)
    queue: VecDeque<(String, Loc)>,
    queued: HashSet<String>,
    /// generated names of anonymous aggregates and enums
    anon: HashMap<Loc, String>,
    enums: BTreeMap<String, Loc>,
    bases: BTreeMap<String, BaseType>,
}

impl TypeWriter for DwarfWriter<'_, '_> {
    fn enqueue_named(&mut self, name: &str) {
        if let Some(loc) = self.l.aggregate(name) {
            self.enqueue(name.to_string(), loc);
        }
    }

    fn all_names(&self) -> Vec<String> {
        let mut all: Vec<String> = self.l.type_names().map(str::to_string).collect();
        all.sort();
        all
    }

    fn variable_type(&mut self, name: &str) -> Option<String> {
        let var = self.l.variable(name)?;
        let entry = self.l.entry(var)?;
        let t = self.l.type_ref(var.unit, &entry);
        let mut s = String::new();
        self.desc(t, 0, &mut s);
        Some(s)
    }

    fn write_next(&mut self, out: &mut String) -> Result<bool> {
        let Some((name, loc)) = self.queue.pop_front() else {
            return Ok(false);
        };
        json_str(out, &name);
        out.push_str(": ");
        self.aggregate(loc, out)?;
        Ok(true)
    }

    fn write_enums(&mut self, buf: &mut String) -> usize {
        if self.full {
            for (name, loc) in self.l.enums() {
                self.enums.entry(name.to_string()).or_insert(loc);
            }
        }
        let enums = std::mem::take(&mut self.enums);
        for (i, (name, loc)) in enums.iter().enumerate() {
            buf.push_str(if i == 0 { "\n    " } else { ",\n    " });
            json_str(buf, name);
            buf.push_str(": ");
            self.enumeration(*loc, buf);
        }
        enums.len()
    }

    fn bases(&mut self) -> &mut BTreeMap<String, BaseType> {
        &mut self.bases
    }
}

impl<'l, 'a> DwarfWriter<'l, 'a> {
    pub(crate) fn new(l: &'l Layouts<'a>, full: bool) -> Self {
        DwarfWriter {
            l,
            full,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            anon: HashMap::new(),
            enums: BTreeMap::new(),
            bases: BTreeMap::new(),
        }
    }

    fn enqueue(&mut self, name: String, loc: Loc) {
        if self.queued.insert(name.clone()) {
            self.queue.push_back((name, loc));
        }
    }

    /// The name an aggregate or enum is known by in the ISF, queueing what is needed.
    fn aggregate_name(&mut self, loc: Loc, typedef: Option<&str>) -> String {
        let unit = &self.l.units[loc.unit];
        let Some(entry) = self.l.entry(loc) else {
            return format!("unnamed_{}_{:x}", loc.unit, loc.offset.0);
        };
        if let Some(name) = self.l.name_of(unit, &entry) {
            if !self.full {
                // named types are written from their definition (this may be a declaration)
                if let Some(def) = self.l.aggregate(&name) {
                    self.enqueue(name.clone(), def);
                }
            }
            return name;
        }
        if let Some(name) = self.anon.get(&loc) {
            return name.clone();
        }
        let name = match typedef {
            Some(t) if !self.queued.contains(t) && self.typedef_names_anonymous(t) => t.to_string(),
            _ => format!("unnamed_{}_{:x}", loc.unit, loc.offset.0),
        };
        self.anon.insert(loc, name.clone());
        self.enqueue(name.clone(), loc);
        name
    }

    /// True when `t` is free to name an anonymous aggregate: no struct/union has that tag,
    /// or the index knows it as a typedef of an anonymous one.
    fn typedef_names_anonymous(&self, t: &str) -> bool {
        match self.l.aggregate(t) {
            None => true,
            Some(def) => {
                let unit = &self.l.units[def.unit];
                self.l
                    .entry(def)
                    .is_some_and(|e| self.l.name_of(unit, &e).is_none())
            }
        }
    }

    fn enum_name(&mut self, loc: Loc, typedef: Option<&str>) -> String {
        let unit = &self.l.units[loc.unit];
        let named = self.l.entry(loc).and_then(|e| {
            self.l
                .name_of(unit, &e)
                .map(|n| (n, crate::dwarf::is_declaration(&e)))
        });
        let name = match named {
            Some((n, decl)) => {
                let def = if decl {
                    self.l.enumeration(&n).unwrap_or(loc)
                } else {
                    loc
                };
                self.enums.entry(n.clone()).or_insert(def);
                return n;
            }
            None => match self.anon.get(&loc) {
                Some(n) => return n.clone(),
                None => match typedef {
                    Some(t) if !self.enums.contains_key(t) => t.to_string(),
                    _ => format!("unnamed_enum_{}_{:x}", loc.unit, loc.offset.0),
                },
            },
        };
        self.anon.insert(loc, name.clone());
        self.enums.insert(name.clone(), loc);
        name
    }

    /// Write the type descriptor of the type at `loc` (`None`: void).
    fn desc(&mut self, loc: Option<Loc>, depth: usize, out: &mut String) {
        self.desc_named(loc, depth, None, out)
    }

    fn desc_named(
        &mut self,
        loc: Option<Loc>,
        depth: usize,
        typedef: Option<&str>,
        out: &mut String,
    ) {
        let Some(loc) = loc else {
            out.push_str("{\"kind\": \"base\", \"name\": \"void\"}");
            return;
        };
        let entry = match self.l.entry(loc) {
            Some(e) if depth <= MAX_TYPE_DEPTH => e,
            _ => {
                out.push_str("{\"kind\": \"base\", \"name\": \"void\"}");
                return;
            }
        };
        let unit = &self.l.units[loc.unit];
        let next = self.l.type_ref(loc.unit, &entry);
        match entry.tag() {
            gimli::DW_TAG_base_type => {
                let name = self
                    .l
                    .name_of(unit, &entry)
                    .unwrap_or_else(|| "void".into());
                let size = attr_udata(&entry, gimli::DW_AT_byte_size).unwrap_or(0);
                let enc = match entry.attr_value(gimli::DW_AT_encoding) {
                    Ok(Some(AttributeValue::Encoding(e))) => e,
                    _ => gimli::DW_ATE_signed,
                };
                let (kind, signed) = match enc {
                    gimli::DW_ATE_boolean => ("bool", false),
                    gimli::DW_ATE_float | gimli::DW_ATE_complex_float => ("float", true),
                    gimli::DW_ATE_signed_char => ("char", true),
                    gimli::DW_ATE_unsigned_char => ("char", false),
                    gimli::DW_ATE_signed => ("int", true),
                    _ => ("int", false),
                };
                self.bases
                    .entry(name.clone())
                    .or_insert(BaseType { size, signed, kind });
                out.push_str("{\"kind\": \"base\", \"name\": ");
                json_str(out, &name);
                out.push('}');
            }
            gimli::DW_TAG_unspecified_type => {
                out.push_str("{\"kind\": \"base\", \"name\": \"void\"}");
            }
            gimli::DW_TAG_pointer_type | gimli::DW_TAG_reference_type => {
                out.push_str("{\"kind\": \"pointer\", \"subtype\": ");
                self.desc(next, depth + 1, out);
                out.push('}');
            }
            gimli::DW_TAG_const_type
            | gimli::DW_TAG_volatile_type
            | gimli::DW_TAG_restrict_type
            | gimli::DW_TAG_atomic_type => self.desc_named(next, depth + 1, typedef, out),
            gimli::DW_TAG_typedef => {
                let name = self.l.name_of(unit, &entry);
                self.desc_named(next, depth + 1, name.as_deref(), out)
            }
            gimli::DW_TAG_structure_type | gimli::DW_TAG_union_type => {
                let kind = if entry.tag() == gimli::DW_TAG_union_type {
                    "union"
                } else {
                    "struct"
                };
                let name = self.aggregate_name(loc, typedef);
                let _ = write!(out, "{{\"kind\": \"{kind}\", \"name\": ");
                json_str(out, &name);
                out.push('}');
            }
            gimli::DW_TAG_enumeration_type => {
                let name = self.enum_name(loc, typedef);
                out.push_str("{\"kind\": \"enum\", \"name\": ");
                json_str(out, &name);
                out.push('}');
            }
            gimli::DW_TAG_subroutine_type => out.push_str("{\"kind\": \"function\"}"),
            gimli::DW_TAG_array_type => {
                let mut dims = self.l.array_dims(loc);
                if dims.is_empty() {
                    dims.push(0);
                }
                for n in &dims {
                    let _ = write!(out, "{{\"kind\": \"array\", \"count\": {n}, \"subtype\": ");
                }
                self.desc(next, depth + 1, out);
                for _ in &dims {
                    out.push('}');
                }
            }
            _ => out.push_str("{\"kind\": \"base\", \"name\": \"void\"}"),
        }
    }

    /// Size in bytes of the type at `loc` (through typedefs and qualifiers).
    fn size_of(&self, mut loc: Loc) -> Option<u64> {
        for _ in 0..MAX_TYPE_DEPTH {
            let e = self.l.entry(loc)?;
            if let Some(s) = attr_udata(&e, gimli::DW_AT_byte_size) {
                return Some(s);
            }
            loc = self.l.type_ref(loc.unit, &e)?;
        }
        None
    }

    /// `{"kind": ..., "size": ..., "fields": {...}}` of the aggregate at `loc`.
    fn aggregate(&mut self, loc: Loc, out: &mut String) -> Result<()> {
        let l = self.l;
        let Some(entry) = l.entry(loc) else {
            out.push_str("{\"kind\": \"struct\", \"size\": 0, \"fields\": {}}");
            return Ok(());
        };
        let kind = if entry.tag() == gimli::DW_TAG_union_type {
            "union"
        } else {
            "struct"
        };
        let size = attr_udata(&entry, gimli::DW_AT_byte_size).unwrap_or(0);
        let _ = write!(
            out,
            "{{\"kind\": \"{kind}\", \"size\": {size}, \"fields\": {{"
        );
        let unit = &l.units[loc.unit];
        let mut tree = unit
            .entries_tree(Some(loc.offset))
            .map_err(|e| section_err(loc, e))?;
        let root = tree.root().map_err(|e| section_err(loc, e))?;
        let mut children = root.children();
        let mut seen = HashSet::new();
        let mut index = 0usize;
        while let Some(child) = children.next().map_err(|e| section_err(loc, e))? {
            let e = child.entry();
            if e.tag() != gimli::DW_TAG_member {
                continue;
            }
            index += 1;
            let ty = l.type_ref(loc.unit, e);
            let place = crate::dwarf::member_place(e);
            let byte_loc = place.byte;
            let bit_size = place.bits;
            let (name, anonymous) = match l.name_of(unit, e) {
                Some(n) => (n, false),
                None => {
                    // an anonymous struct/union is flattened by the reader; other unnamed
                    // members (`int :0` padding) carry nothing
                    if bit_size.is_some() || ty.and_then(|t| l.strip_to_aggregate(t)).is_none() {
                        continue;
                    }
                    (format!("unnamed_field_{index}"), true)
                }
            };
            if !seen.insert(name.clone()) {
                continue;
            }
            let mut tdesc = String::new();
            self.desc(ty, 0, &mut tdesc);
            let offset = match bit_size {
                Some(bits) => {
                    let dbo = place.bit_position.unwrap_or(byte_loc.saturating_mul(8));
                    let storage = ty.and_then(|t| self.size_of(t)).unwrap_or(4);
                    bitfield(&mut tdesc, dbo, bits, storage)
                }
                None => byte_loc,
            };
            member(out, seen.len() == 1, &name, &tdesc, offset, anonymous);
        }
        out.push_str(if seen.is_empty() { "}}" } else { "\n    }}" });
        Ok(())
    }

    fn enumeration(&mut self, loc: Loc, out: &mut String) {
        let l = self.l;
        let Some(entry) = l.entry(loc) else {
            out.push_str("{\"size\": 4, \"base\": \"int\", \"constants\": {}}");
            return;
        };
        let size = attr_udata(&entry, gimli::DW_AT_byte_size).unwrap_or(4);
        let constants = l.enumerators(loc);
        // the enum's own underlying type when DWARF names it
        let base = entry
            .attr_value(gimli::DW_AT_type)
            .ok()
            .flatten()
            .and_then(|v| l.resolve(loc.unit, v))
            .and_then(|t| self.base_of(t));
        enum_body(out, size, base, &constants, &mut self.bases);
    }

    /// The base type named by `loc` (through typedefs), registered in `bases`.
    fn base_of(&mut self, loc: Loc) -> Option<String> {
        let mut s = String::new();
        self.desc(Some(loc), 0, &mut s);
        let name = s
            .strip_prefix("{\"kind\": \"base\", \"name\": \"")?
            .strip_suffix("\"}")?;
        (name != "void").then(|| name.to_string())
    }
}

fn section_err(loc: Loc, e: gimli::Error) -> Error {
    Error::Section {
        section: ".debug_info".into(),
        message: format!("unit {} entry {:#x}: {e}", loc.unit, loc.offset.0),
    }
}
