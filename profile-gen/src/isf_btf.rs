//! The ISF type graph written from BTF (see [`crate::isf`] for the document and the
//! conventions shared with the DWARF writer: anonymous aggregates as generated user
//! types referenced with `"anonymous": true`, bitfields at their storage unit, typedefs
//! and qualifiers resolved).
//!
//! BTF describes the types of per-CPU variables only (`DATASEC .data..percpu`); other
//! variables have no type in BTF. Volatility needs typed symbols for a few of them
//! (`linux.pslist` starts from `init_task`), so the variables in [`KNOWN_VARIABLES`] —
//! the kernel's fixed declarations of the symbols the profile needs, such as `struct
//! task_struct init_task` — get their declared type when BTF defines it. Arrays whose
//! length BTF does not carry are sized by the banner (`linux_banner`), by a BTF array of
//! the same length (`sys_call_table`), or by the distance to the next symbol where the
//! array fills it (`__per_cpu_offset[NR_CPUS]`, `idt_table`); arrays that cannot be sized
//! that way (`taint_flags`) are left untyped. Everything else gets an address only, as in
//! an ISF made from a System.map.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

use crate::btf::{Btf, Kind};
use crate::error::Result;
use crate::isf::{bitfield, enum_body, json_str, member, BaseType, TypeWriter};
use crate::symbols::SymbolMap;

/// Deepest type chain followed, as for DWARF.
const MAX_DEPTH: usize = 32;

/// How a known variable is declared in the kernel.
#[derive(Debug, Clone, Copy)]
pub enum Declared {
    /// `struct NAME var`.
    Struct(&'static str),
    /// `struct NAME *var`.
    StructPtr(&'static str),
    /// `unsigned long var`.
    Ulong,
    /// `unsigned long var[]`, sized by the symbol's extent.
    UlongArray,
    /// `struct NAME var[]`, sized by the symbol's extent.
    StructArray(&'static str),
    /// `const char linux_banner[]`, sized by the banner.
    Banner,
    /// `extern char var[]`: a linker-script section marker.
    Marker,
    /// `const sys_call_ptr_t var[NR_syscalls]`: `NR_syscalls` is the length of
    /// `trace_array.enter_syscall_files` (CONFIG_FTRACE_SYSCALLS, as on every distribution
    /// kernel).
    SyscallTable,
}

/// Variables whose declaration is fixed across the supported kernels (5.10 to 7.x).
pub const KNOWN_VARIABLES: &[(&str, Declared)] = &[
    ("init_task", Declared::Struct("task_struct")),
    ("init_mm", Declared::Struct("mm_struct")),
    ("init_cred", Declared::Struct("cred")),
    ("init_pid_ns", Declared::Struct("pid_namespace")),
    ("init_files", Declared::Struct("files_struct")),
    ("init_fs", Declared::Struct("fs_struct")),
    ("init_nsproxy", Declared::Struct("nsproxy")),
    ("init_uts_ns", Declared::Struct("uts_namespace")),
    ("init_net", Declared::Struct("net")),
    ("modules", Declared::Struct("list_head")),
    ("module_kset", Declared::StructPtr("kset")),
    ("mod_tree", Declared::Struct("mod_tree_root")),
    ("tainted_mask", Declared::Ulong),
    ("net_namespace_list", Declared::Struct("list_head")),
    ("super_blocks", Declared::Struct("list_head")),
    ("file_systems", Declared::StructPtr("file_system_type")),
    ("idt_table", Declared::StructArray("gate_struct")),
    ("__per_cpu_offset", Declared::UlongArray),
    ("page_offset_base", Declared::Ulong),
    ("vmemmap_base", Declared::Ulong),
    ("vmalloc_base", Declared::Ulong),
    ("linux_banner", Declared::Banner),
    ("sys_call_table", Declared::SyscallTable),
    ("_text", Declared::Marker),
    ("_stext", Declared::Marker),
    ("_etext", Declared::Marker),
    ("_sdata", Declared::Marker),
    ("_edata", Declared::Marker),
    ("__start_rodata", Declared::Marker),
    ("__end_rodata", Declared::Marker),
    ("_sinittext", Declared::Marker),
    ("_einittext", Declared::Marker),
    ("__bss_start", Declared::Marker),
    ("__bss_stop", Declared::Marker),
    ("_end", Declared::Marker),
];

pub(crate) struct BtfWriter<'b> {
    btf: &'b Btf,
    full: bool,
    queue: VecDeque<(String, u32)>,
    queued: HashSet<String>,
    anon: HashMap<u32, String>,
    enums: BTreeMap<String, u32>,
    bases: BTreeMap<String, BaseType>,
    /// per-CPU variables: name → type id
    percpu: HashMap<&'b str, u32>,
    /// bytes from each symbol to the next one (for arrays sized by their extent)
    extent: HashMap<String, u64>,
    /// the banner's length with its NUL
    banner_len: Option<usize>,
}

impl<'b> BtfWriter<'b> {
    pub(crate) fn new(
        btf: &'b Btf,
        full: bool,
        symbols: &SymbolMap,
        banner_len: Option<usize>,
    ) -> BtfWriter<'b> {
        let percpu = btf
            .variables()
            .into_iter()
            .map(|(name, ty, _)| (name, ty))
            .collect();
        let mut by_address: Vec<(u64, &str)> = KNOWN_VARIABLES
            .iter()
            .filter_map(|(n, _)| symbols.get(*n).map(|s| (s.address, *n)))
            .collect();
        by_address.sort();
        let mut extent = HashMap::new();
        if !by_address.is_empty() {
            let mut all: Vec<u64> = symbols.values().map(|s| s.address).collect();
            all.sort_unstable();
            all.dedup();
            for (addr, name) in by_address {
                let i = all.partition_point(|&a| a <= addr);
                if let Some(next) = all.get(i) {
                    extent.insert(name.to_string(), next - addr);
                }
            }
        }
        BtfWriter {
            btf,
            full,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            anon: HashMap::new(),
            enums: BTreeMap::new(),
            bases: BTreeMap::new(),
            percpu,
            extent,
            banner_len,
        }
    }

    fn char_base(&mut self) -> String {
        self.bases.entry("char".into()).or_insert(BaseType {
            size: 1,
            signed: true,
            kind: "char",
        });
        "{\"kind\": \"base\", \"name\": \"char\"}".into()
    }

    fn enqueue(&mut self, name: String, id: u32) {
        if self.queued.insert(name.clone()) {
            self.queue.push_back((name, id));
        }
    }

    fn aggregate_name(&mut self, id: u32, typedef: Option<&str>) -> String {
        let btf = self.btf;
        let Some(t) = btf.get(id) else {
            return format!("unnamed_btf_{id}");
        };
        let name = btf.name(t);
        if !name.is_empty() {
            if !self.full {
                if let Some(def) = btf.aggregate(name) {
                    self.enqueue(name.to_string(), def);
                }
            }
            return name.to_string();
        }
        if let Some(n) = self.anon.get(&id) {
            return n.clone();
        }
        let name = match typedef {
            // free to name it: no struct has that tag, or it is this typedef's anonymous one
            Some(t)
                if !self.queued.contains(t)
                    && btf
                        .aggregate(t)
                        .is_none_or(|d| btf.get(d).is_some_and(|x| btf.name(x).is_empty())) =>
            {
                t.to_string()
            }
            _ => format!("unnamed_btf_{id}"),
        };
        self.anon.insert(id, name.clone());
        self.enqueue(name.clone(), id);
        name
    }

    fn enum_name(&mut self, id: u32, typedef: Option<&str>) -> String {
        let btf = self.btf;
        let name = btf.get(id).map(|t| btf.name(t)).unwrap_or_default();
        if !name.is_empty() {
            let def = btf.enumeration(name).unwrap_or(id);
            self.enums.entry(name.to_string()).or_insert(def);
            return name.to_string();
        }
        if let Some(n) = self.anon.get(&id) {
            return n.clone();
        }
        let name = match typedef {
            Some(t) if !self.enums.contains_key(t) => t.to_string(),
            _ => format!("unnamed_enum_btf_{id}"),
        };
        self.anon.insert(id, name.clone());
        self.enums.insert(name.clone(), id);
        name
    }

    fn desc(&mut self, id: u32, depth: usize, typedef: Option<&str>, out: &mut String) {
        const VOID: &str = "{\"kind\": \"base\", \"name\": \"void\"}";
        let btf = self.btf;
        let Some(t) = btf.get(id).copied().filter(|_| depth <= MAX_DEPTH) else {
            out.push_str(VOID);
            return;
        };
        let next = t.size_or_type;
        match t.kind {
            Kind::Int | Kind::Float => {
                let name = btf.name(&t);
                let name = if name.is_empty() { "void" } else { name };
                let (kind, signed) = match btf.int(&t) {
                    Some((enc, _, _)) if enc & 4 != 0 => ("bool", false),
                    Some((enc, _, _)) if name.contains("char") => {
                        ("char", enc & 1 != 0 || name == "char")
                    }
                    Some((enc, _, _)) => ("int", enc & 1 != 0),
                    None => ("float", true),
                };
                self.bases.entry(name.to_string()).or_insert(BaseType {
                    size: u64::from(t.size_or_type),
                    signed,
                    kind,
                });
                out.push_str("{\"kind\": \"base\", \"name\": ");
                json_str(out, name);
                out.push('}');
            }
            Kind::Ptr => {
                out.push_str("{\"kind\": \"pointer\", \"subtype\": ");
                self.desc(next, depth + 1, None, out);
                out.push('}');
            }
            Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag => {
                self.desc(next, depth + 1, typedef, out)
            }
            Kind::Typedef => {
                let name = btf.name(&t).to_string();
                self.desc(next, depth + 1, Some(&name), out)
            }
            Kind::Struct | Kind::Union | Kind::Fwd => {
                let union = t.kind == Kind::Union || (t.kind == Kind::Fwd && t.kind_flag);
                let name = self.aggregate_name(id, typedef);
                let _ = write!(
                    out,
                    "{{\"kind\": \"{}\", \"name\": ",
                    if union { "union" } else { "struct" }
                );
                json_str(out, &name);
                out.push('}');
            }
            Kind::Enum | Kind::Enum64 => {
                let name = self.enum_name(id, typedef);
                out.push_str("{\"kind\": \"enum\", \"name\": ");
                json_str(out, &name);
                out.push('}');
            }
            Kind::FuncProto => out.push_str("{\"kind\": \"function\"}"),
            Kind::Array => match btf.array(&t) {
                Some((elem, n)) => {
                    let _ = write!(out, "{{\"kind\": \"array\", \"count\": {n}, \"subtype\": ");
                    self.desc(elem, depth + 1, None, out);
                    out.push('}');
                }
                None => out.push_str(VOID),
            },
            _ => out.push_str(VOID),
        }
    }

    fn aggregate(&mut self, id: u32, out: &mut String) {
        let btf = self.btf;
        let Some(t) = btf.get(id).copied() else {
            out.push_str("{\"kind\": \"struct\", \"size\": 0, \"fields\": {}}");
            return;
        };
        let kind = if t.kind == Kind::Union {
            "union"
        } else {
            "struct"
        };
        let size = if t.kind == Kind::Fwd {
            0
        } else {
            t.size_or_type
        };
        let _ = write!(
            out,
            "{{\"kind\": \"{kind}\", \"size\": {size}, \"fields\": {{"
        );
        let mut seen = HashSet::new();
        for (index, m) in btf.members(&t).enumerate() {
            let index = index + 1;
            let (name, anonymous) = match btf.member_name(&m) {
                "" => {
                    let is_aggregate = btf
                        .get(btf.strip(m.ty, true))
                        .is_some_and(|x| matches!(x.kind, Kind::Struct | Kind::Union));
                    if m.bitfield_size > 0 || !is_aggregate {
                        continue;
                    }
                    (format!("unnamed_field_{index}"), true)
                }
                n => (n.to_string(), false),
            };
            if !seen.insert(name.clone()) {
                continue;
            }
            let mut tdesc = String::new();
            self.desc(m.ty, 0, None, &mut tdesc);
            let position = u64::from(m.bit_offset);
            let bits = if m.bitfield_size > 0 {
                Some((position, u64::from(m.bitfield_size)))
            } else if !t.kind_flag {
                btf.get(btf.strip(m.ty, true)).and_then(|it| {
                    let (_, off, nbits) = btf.int(it)?;
                    (off != 0 || nbits != it.size_or_type * 8)
                        .then_some((position + u64::from(off), u64::from(nbits)))
                })
            } else {
                None
            };
            let offset = match bits {
                Some((position, bits)) => {
                    let storage = btf.size_of(m.ty).unwrap_or(4);
                    bitfield(&mut tdesc, position, bits, storage)
                }
                None => position / 8,
            };
            member(out, seen.len() == 1, &name, &tdesc, offset, anonymous);
        }
        out.push_str(if seen.is_empty() { "}}" } else { "\n    }}" });
    }

    fn known_variable(&mut self, name: &str, declared: Declared) -> Option<String> {
        let btf = self.btf;
        let ulong = || "{\"kind\": \"base\", \"name\": \"long unsigned int\"}".to_string();
        let extent = self.extent.get(name).copied();
        Some(match declared {
            Declared::Struct(t) => {
                btf.aggregate(t)?;
                self.enqueue_named(t);
                format!("{{\"kind\": \"struct\", \"name\": \"{t}\"}}")
            }
            Declared::StructPtr(t) => {
                btf.aggregate(t)?;
                self.enqueue_named(t);
                format!("{{\"kind\": \"pointer\", \"subtype\": {{\"kind\": \"struct\", \"name\": \"{t}\"}}}}")
            }
            Declared::Ulong => {
                self.ulong_base();
                ulong()
            }
            Declared::UlongArray => {
                self.ulong_base();
                format!(
                    "{{\"kind\": \"array\", \"count\": {}, \"subtype\": {}}}",
                    extent? / 8,
                    ulong()
                )
            }
            Declared::StructArray(t) => {
                let size = btf.size_of(btf.aggregate(t)?)?;
                self.enqueue_named(t);
                format!(
                    "{{\"kind\": \"array\", \"count\": {}, \"subtype\": {{\"kind\": \"struct\", \"name\": \"{t}\"}}}}",
                    extent? / size.max(1)
                )
            }
            Declared::Banner => format!(
                "{{\"kind\": \"array\", \"count\": {}, \"subtype\": {}}}",
                self.banner_len?,
                self.char_base()
            ),
            Declared::Marker => format!(
                "{{\"kind\": \"array\", \"count\": 0, \"subtype\": {}}}",
                self.char_base()
            ),
            Declared::SyscallTable => {
                let ta = btf.get(btf.aggregate("trace_array")?)?;
                let m = btf
                    .members(ta)
                    .find(|m| btf.member_name(m) == "enter_syscall_files")?;
                let (_, count) = btf.array(btf.get(btf.strip(m.ty, true))?)?;
                format!(
                    "{{\"kind\": \"array\", \"count\": {count}, \"subtype\": {{\"kind\": \"pointer\", \"subtype\": {{\"kind\": \"function\"}}}}}}"
                )
            }
        })
    }

    fn ulong_base(&mut self) {
        self.bases
            .entry("long unsigned int".into())
            .or_insert(BaseType {
                size: 8,
                signed: false,
                kind: "int",
            });
    }
}

impl TypeWriter for BtfWriter<'_> {
    fn enqueue_named(&mut self, name: &str) {
        if let Some(id) = self.btf.aggregate(name) {
            self.enqueue(name.to_string(), id);
        }
    }

    fn all_names(&self) -> Vec<String> {
        let mut all: Vec<String> = self.btf.type_names().map(str::to_string).collect();
        all.sort();
        all
    }

    fn variable_type(&mut self, name: &str) -> Option<String> {
        if let Some(&ty) = self.percpu.get(name) {
            let mut s = String::new();
            self.desc(ty, 0, None, &mut s);
            return Some(s);
        }
        let (_, declared) = KNOWN_VARIABLES.iter().find(|(n, _)| *n == name)?;
        self.known_variable(name, *declared)
    }

    fn write_next(&mut self, out: &mut String) -> Result<bool> {
        let Some((name, id)) = self.queue.pop_front() else {
            return Ok(false);
        };
        json_str(out, &name);
        out.push_str(": ");
        self.aggregate(id, out);
        Ok(true)
    }

    fn write_enums(&mut self, buf: &mut String) -> usize {
        if self.full {
            for (name, id) in self.btf.enums() {
                self.enums.entry(name.to_string()).or_insert(id);
            }
        }
        let enums = std::mem::take(&mut self.enums);
        for (i, (name, id)) in enums.iter().enumerate() {
            buf.push_str(if i == 0 { "\n    " } else { ",\n    " });
            json_str(buf, name);
            buf.push_str(": ");
            let Some(t) = self.btf.get(*id).copied() else {
                buf.push_str("{\"size\": 4, \"base\": \"int\", \"constants\": {}}");
                continue;
            };
            let constants: Vec<(String, i128)> = self
                .btf
                .enumerators(&t)
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect();
            enum_body(
                buf,
                u64::from(t.size_or_type),
                None,
                &constants,
                &mut self.bases,
            );
        }
        enums.len()
    }

    fn bases(&mut self) -> &mut BTreeMap<String, BaseType> {
        &mut self.bases
    }
}
