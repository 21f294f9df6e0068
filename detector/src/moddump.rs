//! `dump-module`: a kernel module's memory as an ELF file that `readelf` and `objdump`
//! read, for modules that hide too (as Volatility's `linux.module_extract`).
//!
//! Which module: by name, on the `modules` list or only in `/sys/module` (a module
//! unlinked from the list keeps its kobject: [`crate::checks::modules::kset_view`]), or
//! by an address inside its memory (the owner address a finding printed) or of its
//! `struct module` (one whose `mkobj.mod` points back to it, even when neither view
//! holds it).
//!
//! The file is an `ET_EXEC` image of x86-64, chosen over a relocatable object because
//! its addresses are the module's own: a `PT_LOAD` per memory region
//! ([`vmi_core::kernel::modmem`]) at its address, section headers with the module's
//! section names at their addresses (`sh_addr`), and a symbol table whose values are the
//! addresses `/proc/kallsyms` prints, so `objdump -d` disassembles at the guest's
//! addresses under the module's function names. The kernel keeps no section sizes: a
//! section extends to the next section's address in its region or to the region's end;
//! memory before a region's first section is a section named `.mod_<region>` (the whole
//! region when the kernel lists no sections); a listed section outside every region
//! (init sections are freed after init) is an empty `SHT_NOBITS` at its address. Bytes
//! of pages that are not mapped are zeros (the summary lists their ranges). Guest names
//! are written as the guest holds them (the file is evidence); they are escaped only in
//! what is printed. Written with object's ELF writer; the caller writes the bytes
//! atomically, like `dump-process`'s core ([`crate::coredump`]).

use object::elf;
use object::write::elf::{FileHeader, ProgramHeader, SectionHeader, Sym, Writer};
use object::write::StringId;
use vmi_core::kernel::modmem::{
    Capped, ModuleImage, Region, Section, Symbol, MAX_SECTIONS, MAX_SYMBOLS,
};
use vmi_core::kernel::{Kernel, KernelError, Module};
use vmi_core::memory::PhysicalMemory;
use vmi_core::Va;

const PAGE: u64 = 4096;

/// How a module is named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSpec {
    /// Its name (as `lsmod` and `/sys/module` show it).
    Name(Vec<u8>),
    /// An address in its memory, or of its `struct module`.
    Addr(u64),
}

impl ModuleSpec {
    /// `0x` and hex digits: an address; anything else: a name.
    pub fn parse(s: &str) -> ModuleSpec {
        match s.strip_prefix("0x").map(|h| u64::from_str_radix(h, 16)) {
            Some(Ok(a)) => ModuleSpec::Addr(a),
            _ => ModuleSpec::Name(s.as_bytes().to_vec()),
        }
    }
}

/// A view of the loaded modules that holds a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The `modules` list (`lsmod`).
    List,
    /// The module kset (`/sys/module`).
    Kset,
    /// The module tree (`mod_tree`).
    Tree,
    /// None: found by the address of its `struct module` only.
    Address,
}

impl View {
    /// The view's key in JSON and text.
    pub fn key(self) -> &'static str {
        match self {
            View::List => "list",
            View::Kset => "kset",
            View::Tree => "tree",
            View::Address => "address",
        }
    }
}

/// The modules of each view: those of the `modules` list, those only the module kset
/// holds ([`crate::checks::modules::kset_view`]), and the `struct module`s the kset's
/// kobjects and the module tree name (`None` when unreadable or, for the tree, absent).
#[derive(Debug, Clone, Copy)]
pub struct Views<'a> {
    /// On the `modules` list.
    pub list: &'a [Module],
    /// In the kset, not on the list.
    pub kset: &'a [Module],
    /// Every module of the kset (`module_kobject.mod`).
    pub kobjects: Option<&'a [Va]>,
    /// Every module of the module tree.
    pub tree: Option<&'a [Va]>,
}

/// The module `spec` names, from any view (the list first, then the kset, then the
/// tree: a module read from the tree must have its `mkobj.mod` point back to it), with
/// the views holding it; an address in no module's memory is tried as a
/// `struct module`. `None` when nothing matches.
pub fn find<M: PhysicalMemory>(
    kernel: &Kernel<M>,
    views: Views<'_>,
    spec: &ModuleSpec,
) -> Option<(Module, Vec<View>)> {
    let known: std::collections::HashSet<Va> = views
        .list
        .iter()
        .chain(views.kset)
        .map(|m| m.addr)
        .collect();
    let tree_only: Vec<Module> = views
        .tree
        .unwrap_or_default()
        .iter()
        .filter(|a| !known.contains(a))
        .filter_map(|a| kernel.module_at(*a).ok())
        .collect();
    let mut all = views.list.iter().chain(views.kset).chain(&tree_only);
    let found = match spec {
        ModuleSpec::Name(name) => all.find(|m| &m.name == name).cloned(),
        ModuleSpec::Addr(a) => {
            let inside = |m: &&Module| {
                m.addr.0 == *a
                    || kernel.module_regions(m.addr).is_ok_and(|rs| {
                        rs.iter().any(|(_, base, size)| {
                            (base.0..base.0.saturating_add(*size)).contains(a)
                        })
                    })
            };
            all.find(inside)
                .cloned()
                .or_else(|| kernel.module_at(Va(*a)).ok())
        }
    }?;
    let mut held = Vec::new();
    if views.list.iter().any(|m| m.addr == found.addr) {
        held.push(View::List);
    }
    for (view, addrs) in [(View::Kset, views.kobjects), (View::Tree, views.tree)] {
        if addrs.is_some_and(|a| a.contains(&found.addr)) {
            held.push(view);
        }
    }
    if held.is_empty() {
        held.push(View::Address);
    }
    Some((found, held))
}

/// A section of the written file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutSection {
    /// Its name (guest bytes, or `.mod_<region>`).
    pub name: Vec<u8>,
    /// Its address.
    pub addr: u64,
    /// Its size (0 outside the module's memory).
    pub size: u64,
    /// The region it is in, `None` outside every region.
    pub region: Option<usize>,
}

/// The written file and what it holds.
#[derive(Debug)]
pub struct ModuleFile {
    /// The ELF file's bytes.
    pub bytes: Vec<u8>,
    /// Its sections (after the null section), in header order.
    pub sections: Vec<OutSection>,
    /// Symbols written (the null symbol not counted).
    pub symbols: usize,
    /// Bytes of module memory written.
    pub memory: u64,
    /// `[start, end)` of the memory not mapped (zeros in the file).
    pub missing: Vec<(u64, u64)>,
}

/// The sections of the file: each listed section in the region holding it, up to the
/// next one; `.mod_<region>` before a region's first section; listed sections outside
/// every region last.
pub fn layout(regions: &[Region], listed: &[Section]) -> Vec<OutSection> {
    let mut sorted: Vec<&Section> = listed.iter().collect();
    sorted.sort_by_key(|s| s.addr);
    let mut out = Vec::new();
    for (ri, r) in regions.iter().enumerate() {
        let (start, end) = (r.base.0, r.end());
        let here: Vec<&&Section> = sorted
            .iter()
            .filter(|s| (start..end).contains(&s.addr))
            .collect();
        let first = here.first().map_or(end, |s| s.addr);
        if first > start {
            out.push(OutSection {
                name: format!(".mod_{}", r.kind).into_bytes(),
                addr: start,
                size: first - start,
                region: Some(ri),
            });
        }
        for (i, s) in here.iter().enumerate() {
            let next = here.get(i + 1).map_or(end, |n| n.addr);
            out.push(OutSection {
                name: s.name.clone(),
                addr: s.addr,
                size: next - s.addr,
                region: Some(ri),
            });
        }
    }
    for s in sorted {
        if !regions
            .iter()
            .any(|r| (r.base.0..r.end()).contains(&s.addr))
        {
            out.push(OutSection {
                name: s.name.clone(),
                addr: s.addr,
                size: 0,
                region: None,
            });
        }
    }
    out
}

fn region_flags(kind: &str) -> (u64, u32) {
    let (shf, pf) = match kind {
        "text" | "init_text" => (elf::SHF_EXECINSTR, elf::PF_X),
        "data" | "init_data" => (elf::SHF_WRITE, elf::PF_W),
        "core" => (elf::SHF_WRITE | elf::SHF_EXECINSTR, elf::PF_W | elf::PF_X),
        _ => (0, 0),
    };
    (u64::from(elf::SHF_ALLOC | shf), elf::PF_R | pf)
}

/// The index (into `sections`) of the section holding `value`: the last one starting
/// at or before it in the region holding it.
fn holder(sections: &[OutSection], regions: &[Region], value: u64) -> Option<usize> {
    let ri = regions
        .iter()
        .position(|r| (r.base.0..r.end()).contains(&value))?;
    sections
        .iter()
        .enumerate()
        .filter(|(_, s)| s.region == Some(ri) && s.addr <= value)
        .max_by_key(|(i, s)| (s.addr, *i))
        .map(|(i, _)| i)
}

fn non_empty(name: &[u8]) -> &[u8] {
    if name.is_empty() {
        b".unnamed"
    } else {
        name
    }
}

/// The ELF file of `image` (sections and symbols that could not be read are left out:
/// the caller says so).
pub fn write(image: &ModuleImage) -> Result<ModuleFile, object::write::Error> {
    let regions = &image.regions;
    let listed: &[Section] = match &image.sections {
        Ok(Some(s)) => &s.items,
        _ => &[],
    };
    let symbols: &[Symbol] = match &image.symbols {
        Ok(Some(s)) => &s.items,
        _ => &[],
    };
    let sections = layout(regions, listed);
    // locals first, as the symbol table's sh_info requires
    let mut order: Vec<&Symbol> = symbols.iter().collect();
    order.sort_by_key(|s| s.info >> 4 != elf::STB_LOCAL);
    let num_local = 1 + order
        .iter()
        .filter(|s| s.info >> 4 == elf::STB_LOCAL)
        .count();

    let mut bytes = Vec::new();
    let mut w = Writer::new(object::Endianness::Little, true, &mut bytes);
    w.reserve_file_header();
    w.reserve_program_headers(regions.len() as u32);
    let offsets: Vec<usize> = regions
        .iter()
        .map(|r| w.reserve(r.data.len(), PAGE as usize))
        .collect();
    w.reserve_null_section_index();
    let mut ids: Vec<(StringId, object::write::elf::SectionIndex)> = Vec::new();
    for s in &sections {
        let name = w.add_section_name(non_empty(&s.name));
        ids.push((name, w.reserve_section_index()));
    }
    w.reserve_symtab_section_index();
    w.reserve_strtab_section_index();
    w.reserve_shstrtab_section_index();
    w.reserve_null_symbol_index();
    let mut syms = Vec::with_capacity(order.len());
    for s in &order {
        let name = w.add_string(non_empty(&s.name));
        let at = holder(&sections, regions, s.value);
        w.reserve_symbol_index(at.map(|i| ids[i].1));
        syms.push((name, at));
    }
    w.reserve_symtab();
    w.reserve_strtab();
    w.reserve_shstrtab();
    w.reserve_section_headers();

    w.write_file_header(&FileHeader {
        os_abi: elf::ELFOSABI_NONE,
        abi_version: 0,
        e_type: elf::ET_EXEC,
        e_machine: elf::EM_X86_64,
        e_entry: 0,
        e_flags: 0,
    })?;
    w.write_align_program_headers();
    for (r, off) in regions.iter().zip(&offsets) {
        w.write_program_header(&ProgramHeader {
            p_type: elf::PT_LOAD,
            p_flags: region_flags(r.kind).1,
            p_offset: *off as u64,
            p_vaddr: r.base.0,
            p_paddr: r.base.0,
            p_filesz: r.data.len() as u64,
            p_memsz: r.data.len() as u64,
            p_align: PAGE,
        });
    }
    for r in regions {
        w.write_align(PAGE as usize);
        w.write(&r.data);
    }
    w.write_null_symbol();
    for (s, (name, at)) in order.iter().zip(&syms) {
        w.write_symbol(&Sym {
            name: Some(*name),
            section: at.map(|i| ids[i].1),
            st_info: s.info,
            st_other: 0,
            st_shndx: if at.is_some() { 0 } else { elf::SHN_ABS },
            st_value: s.value,
            st_size: s.size,
        });
    }
    w.write_strtab();
    w.write_shstrtab();
    w.write_null_section_header();
    for (s, (name, _)) in sections.iter().zip(&ids) {
        let (sh_type, sh_flags, sh_offset) = match s.region {
            Some(ri) => {
                let r = &regions[ri];
                (
                    elf::SHT_PROGBITS,
                    region_flags(r.kind).0,
                    (offsets[ri] as u64) + (s.addr - r.base.0),
                )
            }
            None => (elf::SHT_NOBITS, 0, 0),
        };
        w.write_section_header(&SectionHeader {
            name: Some(*name),
            sh_type,
            sh_flags,
            sh_addr: s.addr,
            sh_offset,
            sh_size: s.size,
            sh_link: 0,
            sh_info: 0,
            sh_addralign: 1,
            sh_entsize: 0,
        });
    }
    w.write_symtab_section_header(num_local as u32);
    w.write_strtab_section_header();
    w.write_shstrtab_section_header();
    Ok(ModuleFile {
        bytes,
        sections,
        symbols: order.len(),
        memory: regions.iter().map(|r| r.data.len() as u64).sum(),
        missing: regions
            .iter()
            .flat_map(|r| r.missing.iter().copied())
            .collect(),
    })
}

/// What could not be read of `image`'s sections and symbols, as warnings.
pub fn warnings(image: &ModuleImage) -> Vec<String> {
    let mut out = Vec::new();
    part(&mut out, "sections", &image.sections, MAX_SECTIONS);
    part(&mut out, "symbols", &image.symbols, MAX_SYMBOLS);
    out
}

fn part<T>(
    out: &mut Vec<String>,
    what: &str,
    read: &Result<Option<Capped<T>>, KernelError>,
    cap: usize,
) {
    match read {
        Err(e) => out.push(format!(
            "the module's {what} could not be read ({e}): none written"
        )),
        Ok(None) => out.push(format!(
            "the kernel keeps no {what} for this module: none written"
        )),
        Ok(Some(c)) => {
            if let Some(n) = c.truncated {
                out.push(format!(
                    "the module claims {n} {what}: the first {cap} read"
                ));
            }
            if c.unreadable > 0 {
                out.push(format!(
                    "{} {what} left out: their names or addresses could not be read",
                    c.unreadable
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use object::read::elf::{ElfFile64, ProgramHeader as _};
    use object::{Object, ObjectSection, ObjectSymbol, SectionIndex, SymbolSection};
    use vmi_core::kernel::Limits;
    use vmi_core::testing::{SynthModule, SyntheticKernel};

    use super::*;

    /// `push rbp; mov rbp, rsp; xor eax, eax; pop rbp; ret`
    const CODE: &[u8] = b"\x55\x48\x89\xe5\x31\xc0\x5d\xc3";

    /// A module `rk` with text (a function at +0x10), data with an unmapped page, its
    /// sections and symbols (one outside its memory).
    fn rootkit(sk: &mut SyntheticKernel) -> (SynthModule, Va) {
        let m = sk.add_module(b"rk", 0x2000);
        sk.write(m.code(0x10), CODE);
        let data = sk.add_module_region(&m, 1, 0x2000, &[1]);
        sk.add_module_sections(
            &m,
            &[
                (b".text", m.code(0x10).0),
                (b".data", data.0),
                (b".bss", data.0 + 0x1800),
                (b".init.text", 0xffff_ffff_c800_0000),
            ],
        );
        sk.add_module_symbols(
            &m,
            &[
                (b"rk_hook", m.code(0x10).0, CODE.len() as u64, 0x12),
                (b"rk_local", m.code(0x14).0, 4, 0x02),
                (b"rk_state", data.0 + 8, 8, 0x11),
                (b"rk_freed", 0xffff_ffff_c800_0000, 1, 0x12),
            ],
        );
        (m, data)
    }

    fn image(sk: SyntheticKernel, m: &SynthModule) -> ModuleImage {
        let k = sk.discover().unwrap();
        let module = k.module_at(m.addr).unwrap();
        k.module_image(&module, 64 << 20).unwrap()
    }

    #[test]
    fn the_file_holds_the_module_s_sections_symbols_and_memory_at_its_addresses() {
        let mut sk = SyntheticKernel::clean();
        let (m, data) = rootkit(&mut sk);
        let file = write(&image(sk, &m)).unwrap();
        let elf = ElfFile64::<object::Endianness>::parse(&file.bytes[..]).unwrap();
        assert_eq!(elf.kind(), object::ObjectKind::Executable);
        let secs: Vec<(String, u64, u64)> = elf
            .sections()
            .filter(|s| s.address() != 0)
            .map(|s| (s.name().unwrap().to_string(), s.address(), s.size()))
            .collect();
        let b = m.core_base.0;
        assert_eq!(
            secs,
            vec![
                (".mod_text".into(), b, 0x10),
                (".text".into(), b + 0x10, 0x1ff0),
                (".data".into(), data.0, 0x1800),
                (".bss".into(), data.0 + 0x1800, 0x800),
                (".init.text".into(), 0xffff_ffff_c800_0000, 0),
            ]
        );
        let text = elf.section_by_name(".text").unwrap();
        assert_eq!(&text.data().unwrap()[..CODE.len()], CODE);
        let bss = elf.section_by_name(".init.text").unwrap();
        assert_eq!(bss.kind(), object::SectionKind::UninitializedData);
        // locals first, each symbol in the section holding it, the freed one absolute
        let syms: Vec<(String, u64, Option<SectionIndex>, bool)> = elf
            .symbols()
            .map(|s| {
                let sec = match s.section() {
                    SymbolSection::Section(i) => Some(i),
                    _ => None,
                };
                (
                    s.name().unwrap().to_string(),
                    s.address(),
                    sec,
                    s.is_local(),
                )
            })
            .collect();
        let idx = |n: &str| Some(elf.section_by_name(n).unwrap().index());
        assert_eq!(
            syms,
            vec![
                ("rk_local".into(), b + 0x14, idx(".text"), true),
                ("rk_hook".into(), b + 0x10, idx(".text"), false),
                ("rk_state".into(), data.0 + 8, idx(".data"), false),
                ("rk_freed".into(), 0xffff_ffff_c800_0000, None, false),
            ]
        );
        // one PT_LOAD per region at its address
        let loads: Vec<(u64, u64)> = elf
            .elf_program_headers()
            .iter()
            .map(|p| {
                (
                    p.p_vaddr(object::Endianness::Little),
                    p.p_memsz(object::Endianness::Little),
                )
            })
            .collect();
        assert_eq!(loads, vec![(b, 0x2000), (data.0, 0x2000)]);
        assert_eq!(file.missing, vec![(data.0 + 0x1000, data.0 + 0x2000)]);
        assert_eq!((file.symbols, file.memory), (4, 0x4000));
    }

    /// binutils reads the file: objdump disassembles the function under its name at the
    /// module's address.
    #[test]
    fn objdump_disassembles_the_module_s_functions() {
        let mut sk = SyntheticKernel::clean();
        let (m, _) = rootkit(&mut sk);
        let file = write(&image(sk, &m)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rk.elf");
        std::fs::write(&path, &file.bytes).unwrap();
        let run = |tool: vmi_lab::tools::Tool, args: &[&str]| {
            let out = tool
                .command()
                .unwrap()
                .args(args)
                .arg(&path)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && err.is_empty(), "{text}{err}");
            text
        };
        let text = run(vmi_lab::tools::OBJDUMP, &["-d", "-j", ".text"]);
        let at = format!("{:016x} <rk_hook>:", m.code(0x10).0);
        assert!(text.contains(&at), "{text}");
        assert!(
            text.contains("push   %rbp") && text.contains("ret"),
            "{text}"
        );
        let text = run(vmi_lab::tools::READELF, &["-W", "-S", "-s"]);
        assert!(text.contains(&format!("{:016x}", m.code(0x10).0)), "{text}");
        assert!(text.contains("rk_state"), "{text}");
    }

    #[test]
    fn without_sections_each_region_is_one_section() {
        let mut sk = SyntheticKernel::clean();
        let m = sk.add_module(b"bare", 0x1000);
        let img = image(sk, &m);
        let file = write(&img).unwrap();
        assert_eq!(
            file.sections,
            vec![OutSection {
                name: b".mod_text".to_vec(),
                addr: m.core_base.0,
                size: 0x1000,
                region: Some(0)
            }]
        );
        assert_eq!(file.symbols, 0);
        assert_eq!(
            warnings(&img),
            vec![
                "the kernel keeps no sections for this module: none written".to_string(),
                "the kernel keeps no symbols for this module: none written".to_string(),
            ]
        );
    }

    #[test]
    fn sections_at_one_address_and_hostile_names_make_a_readable_file() {
        let mut sk = SyntheticKernel::clean();
        let m = sk.add_module(b"odd", 0x1000);
        let b = m.core_base.0;
        sk.add_module_sections(&m, &[(b".a", b), (b"", b), (b"\x1b[2J", b + 0x800)]);
        sk.add_module_symbols(&m, &[(b"\x1b]0;x\x07", b, 1, 0x12)]);
        let file = write(&image(sk, &m)).unwrap();
        let sizes: Vec<(Vec<u8>, u64)> = file
            .sections
            .iter()
            .map(|s| (s.name.clone(), s.size))
            .collect();
        assert_eq!(
            sizes,
            vec![
                (b".a".to_vec(), 0),
                (b"".to_vec(), 0x800),
                (b"\x1b[2J".to_vec(), 0x800)
            ]
        );
        let elf = ElfFile64::<object::Endianness>::parse(&file.bytes[..]).unwrap();
        // (object's iterator leaves out the null section)
        assert_eq!(elf.sections().count(), 3 + 3);
        assert!(elf.section_by_name(".unnamed").is_some());
    }

    /// The views of `k` as `dump-module` reads them.
    fn views_of(
        k: &Kernel<vmi_core::memory::MockMemory>,
    ) -> (Vec<Module>, Vec<Module>, Vec<Va>, Option<Vec<Va>>) {
        let list = k.modules(&Limits::default()).unwrap();
        let hidden: Vec<Module> = crate::checks::modules::kset_view(k, &list)
            .unwrap()
            .hidden
            .into_iter()
            .map(|h| h.module)
            .collect();
        let kobjects = k
            .module_kobjects(64)
            .unwrap()
            .iter()
            .filter_map(|o| o.module)
            .collect();
        (list, hidden, kobjects, k.module_tree(64).unwrap())
    }

    #[test]
    fn a_hidden_module_is_found_by_name_and_by_address_in_every_view() {
        use View::{Address, Kset, List, Tree};
        let mut sk = SyntheticKernel::clean();
        let listed = sk.add_module(b"good", 0x1000);
        let (rk, data) = rootkit(&mut sk);
        sk.hide_module(&rk);
        let ghost = sk.add_module(b"ghost", 0x1000);
        sk.hide_module(&ghost);
        sk.delete_module_kobject(&ghost);
        let k = sk.discover().unwrap();
        let (list, hidden, kobjects, tree) = views_of(&k);
        let views = Views {
            list: &list,
            kset: &hidden,
            kobjects: Some(&kobjects),
            tree: tree.as_deref(),
        };
        let found = |s: &str| find(&k, views, &ModuleSpec::parse(s)).map(|(m, v)| (m.addr, v));
        assert_eq!(found("good"), Some((listed.addr, vec![List, Kset, Tree])));
        assert_eq!(found("rk"), Some((rk.addr, vec![Kset, Tree])));
        // off the list and out of /sys/module: the module tree still holds it
        assert_eq!(found("ghost"), Some((ghost.addr, vec![Tree])));
        assert_eq!(
            found(&format!("{:#x}", ghost.code(0x10).0)),
            Some((ghost.addr, vec![Tree]))
        );
        // an address in its data region, and its struct module
        assert_eq!(
            found(&format!("{:#x}", data.0 + 0x10)),
            Some((rk.addr, vec![Kset, Tree]))
        );
        assert_eq!(
            found(&format!("{:#x}", rk.addr.0)),
            Some((rk.addr, vec![Kset, Tree]))
        );
        // in no view: by its struct module only
        let none = Views {
            list: &list,
            kset: &[],
            kobjects: None,
            tree: None,
        };
        assert_eq!(
            find(&k, none, &ModuleSpec::Addr(rk.addr.0)).map(|(m, v)| (m.addr, v)),
            Some((rk.addr, vec![Address]))
        );
        assert_eq!(find(&k, none, &ModuleSpec::Addr(data.0)), None);
        assert_eq!(found("nosuch"), None);
        // the page after good's text, in no module
        assert_eq!(found(&format!("{:#x}", listed.core_base.0 + 0x1000)), None);
    }
}
