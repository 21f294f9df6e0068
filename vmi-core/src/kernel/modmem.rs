//! A module's memory, its ELF sections and its symbols, read from its `struct module`
//! for a copy of it (`dump-module`, as Volatility's `linux.module_extract`).
//!
//! Memory: from 6.4 each `mem[type]` (a `module_memory`: `MOD_TEXT`, `MOD_DATA`,
//! `MOD_RODATA`, `MOD_RO_AFTER_INIT`, then the init types, freed and zeroed once the
//! module's init ran); before 6.4 `core_layout`, one allocation split by `text_size`,
//! `ro_size` and `ro_after_init_size` into text, read-only data, data read-only after
//! init and data (the init layout is not read: it is freed after init). Each region is
//! read page by page; a page the kernel's page table does not map is written as zeros
//! and reported. The sum of the regions' sizes is bounded by the caller.
//!
//! Sections: `sect_attrs`, the `/sys/module/NAME/sections` directory: its attribute
//! group's `bin_attrs`, a null-terminated array of `bin_attribute` pointers, each with
//! the section's name (`attr.name`) and address (before 6.15 in the `module_sect_attr`
//! around it, `address`; from 6.15 in the attribute's `private`). Names and addresses
//! only: sizes are not kept by the kernel.
//!
//! Symbols: `core_kallsyms`, the module's own symbol table as `/proc/kallsyms` lists
//! it: `symtab` (`Elf64_Sym`, values already relocated to the module's addresses),
//! `num_symtab` and `strtab`.
//!
//! Guest memory is hostile: sizes, counts and strings are capped ([`MAX_SECTIONS`],
//! [`MAX_SYMBOLS`], [`MAX_NAME`]); a count above its cap is read up to the cap and
//! said (`truncated`). Sections and symbols that cannot be read leave the memory
//! readable: each part carries its own result.
//!
//! Fields used ([`ModMemLayout`], every one optional: a kernel without sysfs or
//! kallsyms, or a profile built from headers, lacks some): `module.sect_attrs`,
//! `module.core_kallsyms`, `mod_kallsyms.{symtab,num_symtab,strtab}`,
//! `module_sect_attrs.grp`, `attribute_group.bin_attrs`, `module_sect_attr.{battr,address}`,
//! `bin_attribute.{attr,private}`, `attribute.name`,
//! `module_layout.{text_size,ro_size,ro_after_init_size}`, and the module fields of
//! [`Layout`](crate::kernel::Layout).

use crate::addr::Va;
use crate::kernel::layout::array_len;
use crate::kernel::objects::{is_kernel_va, u32_at, u64_at};
use crate::kernel::{Kernel, KernelError, Module};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// Most sections read from `sect_attrs` (a module has a few dozen).
pub const MAX_SECTIONS: usize = 1024;
/// Most symbols read from `core_kallsyms` (large drivers have some thousands).
pub const MAX_SYMBOLS: usize = 1 << 17;
/// Longest section or symbol name read (the kernel's `KSYM_NAME_LEN` is 512).
pub const MAX_NAME: usize = 512;
/// `sizeof(Elf64_Sym)`.
const ELF64_SYM: usize = 24;
const PAGE: u64 = 4096;

/// The `module_memory` types in `enum mod_mem_type` order.
pub const MEM_TYPES: [&str; 7] = [
    "text",
    "data",
    "rodata",
    "ro_after_init",
    "init_text",
    "init_data",
    "init_rodata",
];

crate::kernel_layout! {
    /// Offsets of a module's sections and symbols.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ModMemLayout(p) {
        /// `module.sect_attrs` (a `module_sect_attrs *`, CONFIG_SYSFS)
        pub sect_attrs: Option<u64> = opt "module" ["sect_attrs"],
        /// `module.core_kallsyms` (a `mod_kallsyms`, CONFIG_KALLSYMS)
        pub core_kallsyms: Option<u64> = opt "module" ["core_kallsyms"],
        /// `mod_kallsyms.symtab` (`Elf64_Sym *`)
        pub ks_symtab: Option<u64> = opt_both "mod_kallsyms" ["symtab"],
        /// `mod_kallsyms.num_symtab`
        pub ks_num: Option<u64> = opt_both "mod_kallsyms" ["num_symtab"],
        /// `mod_kallsyms.strtab`
        pub ks_strtab: Option<u64> = opt_both "mod_kallsyms" ["strtab"],
        /// `module_sect_attrs.grp` (private to kernel/module/sysfs.c)
        pub sa_grp: Option<u64> = opt_both "module_sect_attrs" ["grp"],
        /// `attribute_group.bin_attrs`
        pub grp_bin_attrs: Option<u64> = opt_both "attribute_group" ["bin_attrs"],
        /// `module_sect_attr.battr` (before 6.15)
        pub msa_battr: Option<u64> = opt_both "module_sect_attr" ["battr"],
        /// `module_sect_attr.address` (before 6.15)
        pub msa_address: Option<u64> = opt_both "module_sect_attr" ["address"],
        /// `bin_attribute.attr`
        pub battr_attr: Option<u64> = opt_both "bin_attribute" ["attr"],
        /// `bin_attribute.private` (the section's address from 6.15)
        pub battr_private: Option<u64> = opt_both "bin_attribute" ["private"],
        /// `attribute.name`
        pub attr_name: Option<u64> = opt_both "attribute" ["name"],
        /// `module_layout.text_size` (before 6.4)
        pub text_size: Option<u64> = opt_both "module_layout" ["text_size"],
        /// `module_layout.ro_size` (before 6.4)
        pub ro_size: Option<u64> = opt_both "module_layout" ["ro_size"],
        /// `module_layout.ro_after_init_size` (before 6.4)
        pub ro_after_init_size: Option<u64> = opt_both "module_layout" ["ro_after_init_size"],
    }
    computed {
        /// The number of `module.mem` elements (`MOD_MEM_NUM_TYPES`, 7).
        pub mem_types: usize = p
            .field("module", "mem")
            .and_then(|f| array_len(&f.ty))
            .map_or(0, |n| n.min(MEM_TYPES.len() as u64) as usize),
    }
}

/// One part of a module's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// What it holds: a `module_memory` type (`text`, `data`, ...) or a part of the
    /// core layout (`text`, `rodata`, `ro_after_init`, `data`).
    pub kind: &'static str,
    /// Its first address.
    pub base: Va,
    /// Its bytes (zeros where not mapped).
    pub data: Vec<u8>,
    /// `[start, end)` ranges of it no page table entry maps (written as zeros).
    pub missing: Vec<(u64, u64)>,
}

impl Region {
    /// One past its last address.
    pub fn end(&self) -> u64 {
        self.base.0.saturating_add(self.data.len() as u64)
    }
}

/// A section of the module's ELF file, as `/sys/module/NAME/sections` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Its name (guest bytes).
    pub name: Vec<u8>,
    /// Its address.
    pub addr: u64,
}

/// A symbol of the module's `core_kallsyms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    /// Its name (guest bytes).
    pub name: Vec<u8>,
    /// Its address (`st_value`).
    pub value: u64,
    /// `st_size`.
    pub size: u64,
    /// `st_info` (binding and type).
    pub info: u8,
}

/// A list read from the guest, cut at a cap when it claims more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capped<T> {
    /// What was read.
    pub items: Vec<T>,
    /// How many the guest claims when more than were read (the cap was hit).
    pub truncated: Option<u64>,
    /// Entries left out: their name could not be read, or their pointer was no kernel
    /// address.
    pub unreadable: usize,
}

/// A module's memory, sections and symbols.
#[derive(Debug)]
pub struct ModuleImage {
    /// Its memory regions, in `mem[]` (or core layout) order, empty ones left out.
    pub regions: Vec<Region>,
    /// Its sections; `Ok(None)` when the kernel has none for it (no sysfs).
    pub sections: Result<Option<Capped<Section>>, KernelError>,
    /// Its symbols; `Ok(None)` when the kernel keeps none (no kallsyms).
    pub symbols: Result<Option<Capped<Symbol>>, KernelError>,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The `(kind, base, size)` of each non-empty region of `module`'s memory.
    pub fn module_regions(&self, module: Va) -> Result<Vec<(&'static str, Va, u64)>, KernelError> {
        let l = self.layout();
        let ml = ModMemLayout::from_profile(self.profile())?;
        let what = "struct module memory";
        let core = Va(module.0.wrapping_add(l.module_core));
        let mut out = Vec::new();
        if let Some(stride) = l.module_mem_stride {
            let n = ml.mem_types.max(1);
            let bytes = self
                .space()
                .read_bytes(core, n * stride as usize)
                .map_err(|source| KernelError::Read { what, source })?;
            for (i, kind) in MEM_TYPES.iter().enumerate().take(n) {
                let at = i as u64 * stride;
                let base = u64_at(&bytes, at + l.module_core_base);
                let size = u64::from(u32_at(&bytes, at + l.module_core_size));
                if size != 0 {
                    out.push((*kind, Va(base), size));
                }
            }
        } else {
            let bytes = self
                .space()
                .read_bytes(core, 64)
                .map_err(|source| KernelError::Read { what, source })?;
            let base = u64_at(&bytes, l.module_core_base);
            let size = u64::from(u32_at(&bytes, l.module_core_size));
            let part = |off: Option<u64>| {
                off.filter(|&o| o + 4 <= 64)
                    .map(|o| u64::from(u32_at(&bytes, o)))
            };
            // text | rodata | ro_after_init | data, each end no lower than the last
            let ends = [
                part(ml.text_size),
                part(ml.ro_size),
                part(ml.ro_after_init_size),
            ];
            match ends {
                [Some(t), Some(r), Some(a)] if t <= r && r <= a && a <= size => {
                    let mut start = 0;
                    for (kind, end) in [
                        ("text", t),
                        ("rodata", r),
                        ("ro_after_init", a),
                        ("data", size),
                    ] {
                        if end > start {
                            out.push((kind, Va(base.wrapping_add(start)), end - start));
                        }
                        start = end;
                    }
                }
                _ if size != 0 => out.push(("core", Va(base), size)),
                _ => {}
            }
        }
        for (kind, base, size) in &out {
            if !is_kernel_va(base.0) || base.0.checked_add(*size).is_none() {
                return Err(KernelError::Corrupt {
                    what: format!("module memory {kind}: base {:#x} size {size:#x}", base.0),
                    at: module,
                });
            }
        }
        Ok(out)
    }

    /// `module`'s memory (at most `max_bytes` in all: more is [`KernelError::TooLong`]),
    /// sections and symbols.
    pub fn module_image(
        &self,
        module: &Module,
        max_bytes: u64,
    ) -> Result<ModuleImage, KernelError> {
        let regions = self.module_regions(module.addr)?;
        let total = regions.iter().fold(0u64, |t, r| t.saturating_add(r.2));
        if total > max_bytes {
            return Err(KernelError::TooLong {
                what: "module memory: bytes",
                max: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            });
        }
        let regions = regions
            .into_iter()
            .map(|(kind, base, size)| self.read_region(kind, base, size))
            .collect();
        Ok(ModuleImage {
            regions,
            sections: self.module_sections(module.addr),
            symbols: self.module_symbols(module.addr),
        })
    }

    /// `size` bytes at `base`, page by page, zeros where nothing is mapped.
    fn read_region(&self, kind: &'static str, base: Va, size: u64) -> Region {
        let mut data = vec![0u8; size as usize];
        let mut missing: Vec<(u64, u64)> = Vec::new();
        let mut off = 0u64;
        while off < size {
            let at = base.0 + off;
            let n = (PAGE - at % PAGE).min(size - off);
            let buf = &mut data[off as usize..(off + n) as usize];
            if self.space().read_virt(Va(at), buf).is_err() {
                buf.fill(0);
                match missing.last_mut() {
                    Some(m) if m.1 == at => m.1 = at + n,
                    _ => missing.push((at, at + n)),
                }
            }
            off += n;
        }
        Region {
            kind,
            base,
            data,
            missing,
        }
    }

    /// The sections `/sys/module/NAME/sections` lists for the module at `module`.
    pub fn module_sections(&self, module: Va) -> Result<Option<Capped<Section>>, KernelError> {
        let ml = ModMemLayout::from_profile(self.profile())?;
        let (Some(sa), Some(grp), Some(bin_attrs), Some(attr), Some(name)) = (
            ml.sect_attrs,
            ml.sa_grp,
            ml.grp_bin_attrs,
            ml.battr_attr,
            ml.attr_name,
        ) else {
            return Ok(None);
        };
        // the address: in the module_sect_attr around the attribute, else its private
        let address = match (ml.msa_battr, ml.msa_address, ml.battr_private) {
            (Some(b), Some(a), _) => a.wrapping_sub(b),
            (_, _, Some(p)) => p,
            _ => return Ok(None),
        };
        let read = |what: &'static str, at: u64| {
            self.space()
                .read_u64(Va(at))
                .map_err(|source| KernelError::Read { what, source })
        };
        let attrs = read("module.sect_attrs", module.0.wrapping_add(sa))?;
        if attrs == 0 {
            return Ok(None);
        }
        if !is_kernel_va(attrs) {
            return Err(KernelError::BadPointer {
                what: "module.sect_attrs",
                value: attrs,
            });
        }
        let array = read(
            "module_sect_attrs.grp.bin_attrs",
            attrs.wrapping_add(grp + bin_attrs),
        )?;
        if !is_kernel_va(array) {
            return Err(KernelError::BadPointer {
                what: "module_sect_attrs.grp.bin_attrs",
                value: array,
            });
        }
        let mut out = Capped {
            items: Vec::new(),
            truncated: None,
            unreadable: 0,
        };
        for i in 0..=MAX_SECTIONS as u64 {
            let battr = read(
                "a section's bin_attribute pointer",
                array.wrapping_add(i * 8),
            )?;
            if battr == 0 {
                return Ok(Some(out));
            }
            if i == MAX_SECTIONS as u64 {
                out.truncated = Some(i + 1);
                break;
            }
            if !is_kernel_va(battr) {
                out.unreadable += 1;
                continue;
            }
            let name_ptr = read("attribute.name", battr.wrapping_add(attr + name));
            let name = name_ptr
                .ok()
                .filter(|&p| is_kernel_va(p))
                .and_then(|p| self.space().read_cstr(Va(p), MAX_NAME).ok());
            match (
                name,
                read("a section's address", battr.wrapping_add(address)),
            ) {
                (Some(name), Ok(addr)) => out.items.push(Section { name, addr }),
                _ => out.unreadable += 1,
            }
        }
        Ok(Some(out))
    }

    /// The symbols of the module at `module` (`core_kallsyms`), the null symbol left out.
    pub fn module_symbols(&self, module: Va) -> Result<Option<Capped<Symbol>>, KernelError> {
        let ml = ModMemLayout::from_profile(self.profile())?;
        let (Some(ks), Some(symtab), Some(num), Some(strtab)) =
            (ml.core_kallsyms, ml.ks_symtab, ml.ks_num, ml.ks_strtab)
        else {
            return Ok(None);
        };
        let ks = module.0.wrapping_add(ks);
        let err = |what| move |source| KernelError::Read { what, source };
        let table = self
            .space()
            .read_u64(Va(ks.wrapping_add(symtab)))
            .map_err(err("mod_kallsyms.symtab"))?;
        let count = self
            .space()
            .read_u32(Va(ks.wrapping_add(num)))
            .map_err(err("mod_kallsyms.num_symtab"))?;
        let strings = self
            .space()
            .read_u64(Va(ks.wrapping_add(strtab)))
            .map_err(err("mod_kallsyms.strtab"))?;
        if count == 0 || table == 0 {
            return Ok(None);
        }
        for (what, value) in [
            ("mod_kallsyms.symtab", table),
            ("mod_kallsyms.strtab", strings),
        ] {
            if !is_kernel_va(value) {
                return Err(KernelError::BadPointer { what, value });
            }
        }
        let n = (count as usize).min(MAX_SYMBOLS);
        let mut out = Capped {
            items: Vec::new(),
            truncated: (count as usize > MAX_SYMBOLS).then_some(u64::from(count)),
            unreadable: 0,
        };
        let bytes = self
            .space()
            .read_bytes(Va(table), n * ELF64_SYM)
            .map_err(err("the module's symbol table"))?;
        for sym in bytes.chunks_exact(ELF64_SYM) {
            let st_name = u64::from(u32_at(sym, 0));
            let value = u64_at(sym, 8);
            if st_name == 0 && value == 0 {
                continue; // the null symbol
            }
            match self
                .space()
                .read_cstr(Va(strings.wrapping_add(st_name)), MAX_NAME)
            {
                Ok(name) if !name.is_empty() => out.items.push(Symbol {
                    name,
                    value,
                    size: u64_at(sym, 16),
                    info: sym[4],
                }),
                _ => out.unreadable += 1,
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::profile::{Field, Profile, TypeDef, TypeKind};
    use crate::testing::{synthetic_profile, SyntheticKernel};

    const STT_FUNC_GLOBAL: u8 = 0x12;

    fn field(offset: u64, ty: &str) -> Field {
        Field {
            offset,
            bit_offset: None,
            bit_size: None,
            ty: ty.into(),
        }
    }

    fn add_type(p: &mut Profile, name: &str, size: u64, fields: &[(&str, u64, &str)]) {
        let fields: BTreeMap<String, Field> = fields
            .iter()
            .map(|(n, o, t)| (n.to_string(), field(*o, t)))
            .collect();
        p.types.insert(
            name.into(),
            TypeDef {
                kind: TypeKind::Struct,
                size,
                fields,
            },
        );
    }

    #[test]
    fn memory_sections_and_symbols_of_a_module() {
        let mut sk = SyntheticKernel::clean();
        let m = sk.add_module(b"rk", 0x2000);
        sk.write(m.code(0x10), b"\x55\x48\x89\xe5\xc3");
        // MOD_DATA of three pages, the middle one not mapped
        let data = sk.add_module_region(&m, 1, 0x3000, &[1]);
        sk.write(data, b"data!");
        sk.add_module_sections(
            &m,
            &[
                (b".text", m.core_base.0),
                (b".data", data.0),
                (b".bss", data.0 + 0x2800),
            ],
        );
        sk.add_module_symbols(
            &m,
            &[
                (b"rk_hide", m.code(0x10).0, 5, STT_FUNC_GLOBAL),
                (b"rk_state", data.0, 8, 0x11),
            ],
        );
        let k = sk.discover().unwrap();
        let module = k.modules(&Default::default()).unwrap().remove(0);
        let img = k.module_image(&module, 64 << 20).unwrap();
        let kinds: Vec<_> = img
            .regions
            .iter()
            .map(|r| (r.kind, r.base, r.data.len()))
            .collect();
        assert_eq!(
            kinds,
            vec![("text", m.core_base, 0x2000), ("data", data, 0x3000)]
        );
        assert_eq!(&img.regions[0].data[0x10..0x15], b"\x55\x48\x89\xe5\xc3");
        assert!(img.regions[0].missing.is_empty());
        assert_eq!(&img.regions[1].data[..5], b"data!");
        assert_eq!(
            img.regions[1].missing,
            vec![(data.0 + 0x1000, data.0 + 0x2000)]
        );
        let sections = img.sections.unwrap().unwrap();
        let names: Vec<_> = sections
            .items
            .iter()
            .map(|s| (s.name.as_slice(), s.addr))
            .collect();
        assert_eq!(
            names,
            vec![
                (&b".text"[..], m.core_base.0),
                (b".data", data.0),
                (b".bss", data.0 + 0x2800)
            ]
        );
        assert_eq!((sections.truncated, sections.unreadable), (None, 0));
        let symbols = img.symbols.unwrap().unwrap();
        assert_eq!(
            symbols.items,
            vec![
                Symbol {
                    name: b"rk_hide".to_vec(),
                    value: m.code(0x10).0,
                    size: 5,
                    info: STT_FUNC_GLOBAL
                },
                Symbol {
                    name: b"rk_state".to_vec(),
                    value: data.0,
                    size: 8,
                    info: 0x11
                },
            ]
        );
    }

    #[test]
    fn sections_before_6_15_take_the_address_from_module_sect_attr() {
        let mut p = synthetic_profile();
        add_type(
            &mut p,
            "module_sect_attr",
            0x50,
            &[
                ("battr", 0, "struct bin_attribute"),
                ("address", 0x48, "unsigned long"),
            ],
        );
        let mut sk = SyntheticKernel::new(p);
        let m = sk.add_module(b"old", 0x1000);
        sk.add_module_sections(&m, &[(b".text", m.core_base.0 + 0x40)]);
        let k = sk.discover().unwrap();
        let s = k.module_sections(m.addr).unwrap().unwrap();
        assert_eq!(s.items[0].addr, m.core_base.0 + 0x40);
        assert_eq!(s.items[0].name, b".text");
    }

    /// A 6.1 profile: `core_layout` (a `module_layout`) instead of `mem[]`.
    fn core_layout_kernel() -> SyntheticKernel {
        let mut p = synthetic_profile();
        let module = p.types.get_mut("module").unwrap();
        module.fields.remove("mem");
        module
            .fields
            .insert("core_layout".into(), field(0x140, "struct module_layout"));
        add_type(
            &mut p,
            "module_layout",
            0x50,
            &[
                ("base", 0, "ptr void"),
                ("size", 8, "unsigned int"),
                ("text_size", 0xc, "unsigned int"),
                ("ro_size", 0x10, "unsigned int"),
                ("ro_after_init_size", 0x14, "unsigned int"),
            ],
        );
        SyntheticKernel::new(p)
    }

    #[test]
    fn the_core_layout_is_split_by_its_sizes() {
        let mut sk = core_layout_kernel();
        let m = sk.add_module(b"old", 0x4000);
        let cl = sk.field_va(m.addr, "module", "core_layout");
        for (f, v) in [
            ("text_size", 0x1000),
            ("ro_size", 0x2000),
            ("ro_after_init_size", 0x3000),
        ] {
            sk.set_u32(cl, "module_layout", f, v);
        }
        let k = sk.discover().unwrap();
        let b = m.core_base;
        assert_eq!(
            k.module_regions(m.addr).unwrap(),
            vec![
                ("text", b, 0x1000),
                ("rodata", Va(b.0 + 0x1000), 0x1000),
                ("ro_after_init", Va(b.0 + 0x2000), 0x1000),
                ("data", Va(b.0 + 0x3000), 0x1000),
            ]
        );
    }

    #[test]
    fn a_core_layout_whose_sizes_do_not_nest_is_one_region() {
        let mut sk = core_layout_kernel();
        let m = sk.add_module(b"odd", 0x2000);
        let cl = sk.field_va(m.addr, "module", "core_layout");
        sk.set_u32(cl, "module_layout", "text_size", 0xffff_0000);
        let k = sk.discover().unwrap();
        assert_eq!(
            k.module_regions(m.addr).unwrap(),
            vec![("core", m.core_base, 0x2000)]
        );
    }

    #[test]
    fn sizes_beyond_the_budget_are_refused_before_any_allocation() {
        let mut sk = SyntheticKernel::clean();
        let m = sk.add_module(b"big", 0x1000);
        // every mem[] type claims 4 GiB - 1
        let mem = sk.field_va(m.addr, "module", "mem");
        for i in 0..7 {
            sk.set_u32(Va(mem.0 + i * 0x50), "module_memory", "size", u32::MAX);
            sk.set(
                Va(mem.0 + i * 0x50),
                "module_memory",
                "base",
                0xffff_c900_0000_0000,
            );
        }
        let k = sk.discover().unwrap();
        let module = k.modules(&Default::default()).unwrap().remove(0);
        let err = k.module_image(&module, 64 << 20).unwrap_err();
        assert!(matches!(err, KernelError::TooLong { .. }), "{err}");
    }

    #[test]
    fn a_region_outside_the_kernel_half_is_corrupt() {
        let mut sk = SyntheticKernel::clean();
        let m = sk.add_module(b"bad", 0x1000);
        let mem = sk.field_va(m.addr, "module", "mem");
        sk.set(mem, "module_memory", "base", 0x4000_0000);
        let k = sk.discover().unwrap();
        assert!(matches!(
            k.module_regions(m.addr),
            Err(KernelError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_symbol_count_above_the_cap_is_read_to_the_cap() {
        let mut sk = SyntheticKernel::clean();
        let m = sk.add_module(b"many", 0x1000);
        let syms: Vec<(&[u8], u64, u64, u8)> = (0..MAX_SYMBOLS as u64 + 4)
            .map(|i| (&b"s"[..], m.core_base.0 + i, 1, STT_FUNC_GLOBAL))
            .collect();
        let ks = sk.add_module_symbols(&m, &syms);
        sk.set_u32(ks, "mod_kallsyms", "num_symtab", u32::MAX);
        let k = sk.discover().unwrap();
        let s = k.module_symbols(m.addr).unwrap().unwrap();
        assert_eq!(s.truncated, Some(u64::from(u32::MAX)));
        // the null symbol is the first of the MAX_SYMBOLS read
        assert_eq!(s.items.len(), MAX_SYMBOLS - 1);
    }

    #[test]
    fn a_string_table_without_terminator_is_cut_and_unreadable_names_counted() {
        let mut sk = SyntheticKernel::clean();
        let m = sk.add_module(b"strs", 0x1000);
        let ks = sk.add_module_symbols(
            &m,
            &[
                (b"first", m.core_base.0, 1, STT_FUNC_GLOBAL),
                (b"second", m.core_base.0 + 1, 1, STT_FUNC_GLOBAL),
            ],
        );
        // a string table of 4000 'A's, no NUL anywhere
        let strs = sk.alloc(4000);
        sk.write(strs, &[b'A'; 4000]);
        sk.set(ks, "mod_kallsyms", "strtab", strs.0);
        // the second symbol's name far outside any mapping
        let tab = Va(sk.get(ks, "mod_kallsyms", "symtab"));
        sk.write_u32(Va(tab.0 + 48), 0x7fff_0000);
        let k = sk.discover().unwrap();
        let s = k.module_symbols(m.addr).unwrap().unwrap();
        assert_eq!(s.items.len(), 1);
        assert_eq!(s.items[0].name.len(), MAX_NAME);
        assert_eq!(s.unreadable, 1);
    }

    #[test]
    fn a_section_array_without_terminator_stops_at_the_cap() {
        let mut sk = SyntheticKernel::clean();
        let m = sk.add_module(b"secs", 0x1000);
        let names: Vec<Vec<u8>> = (0..MAX_SECTIONS + 8)
            .map(|i| format!(".s{i}").into_bytes())
            .collect();
        let secs: Vec<(&[u8], u64)> = names
            .iter()
            .map(|n| (n.as_slice(), m.core_base.0))
            .collect();
        let array = sk.add_module_sections(&m, &secs);
        // no terminator: the slot after the last points to an attribute again
        let first = sk.read_u64(array);
        sk.write_u64(Va(array.0 + 8 * secs.len() as u64), first);
        let k = sk.discover().unwrap();
        let s = k.module_sections(m.addr).unwrap().unwrap();
        assert_eq!(s.items.len(), MAX_SECTIONS);
        assert_eq!(s.truncated, Some(MAX_SECTIONS as u64 + 1));
    }

    #[test]
    fn broken_sections_or_symbols_leave_the_memory_readable() {
        let mut sk = SyntheticKernel::clean();
        let m = sk.add_module(b"rk", 0x1000);
        sk.set(m.addr, "module", "sect_attrs", 0x1234);
        let ks = sk.add_module_symbols(&m, &[(b"f", m.core_base.0, 1, STT_FUNC_GLOBAL)]);
        sk.set(ks, "mod_kallsyms", "symtab", 0x10);
        let k = sk.discover().unwrap();
        let module = k.modules(&Default::default()).unwrap().remove(0);
        let img = k.module_image(&module, 64 << 20).unwrap();
        assert_eq!(img.regions.len(), 1);
        assert!(matches!(img.sections, Err(KernelError::BadPointer { .. })));
        assert!(matches!(img.symbols, Err(KernelError::BadPointer { .. })));
    }

    #[test]
    fn a_module_without_sections_or_symbols_has_none() {
        let mut sk = SyntheticKernel::clean();
        let m = sk.add_module(b"bare", 0x1000);
        let k = sk.discover().unwrap();
        assert_eq!(k.module_sections(m.addr).unwrap(), None);
        assert_eq!(k.module_symbols(m.addr).unwrap(), None);
    }
}
