//! The kernel image a guest booted, as the reference for the running kernel's text and
//! read-only data.
//!
//! [`KernelImage::open`] takes what an admin has:
//! - a vmlinux with its symbol table (the -dbg package's), mapped;
//! - a boot image (`/boot/vmlinuz-<abi>`, a bzImage): its payload decompressed
//!   (profile-gen's `vmlinuz` decoders) is the vmlinux stripped of its symbols, section
//!   headers kept;
//! - a Debian package: `linux-image-<abi>` (`/boot/vmlinuz-<abi>`), sid's
//!   `linux-binary-<abi>` (`/usr/lib/modules/<abi>/vmlinuz`) or `linux-image-<abi>-dbg`
//!   (its vmlinux), read in place by profile-gen's package reader.
//!
//! A stripped kernel's names come from its own kallsyms tables (profile-gen's
//! `kallsyms::recover`, on the image, not on the guest: the reference stays the file
//! the admin gave): every function, and with `KALLSYMS_ALL` (Debian's) the tables'
//! bounds such as `__start___jump_table`. Tables that are output sections of their own
//! (`.altinstructions`, `.smp_locks`, `runtime_ptr_*`, ...) are found by section name
//! when no symbol bounds them. Whatever stays unnamed is not guessed: its sites are
//! compared as plain text, or (`__ro_after_init`'s bounds) `.rodata` is left out, and
//! [`KernelImage::unchecked`] says so. The banner is found in `.rodata` by its text when
//! `linux_banner` is not named.
//!
//! The kernel changes its own text at boot and at run time in known places, each listed
//! in a table of the image; [`KernelImage`] turns them into [`Site`]s:
//!
//! | table | what the kernel writes there |
//! |---|---|
//! | `__mcount_loc` | `call __fentry__` at function entry → a 5-byte NOP, or a call to an ftrace trampoline |
//! | `ftrace_call`, `ftrace_regs_call`, `ftrace_graph_call` | ftrace's own callers → a `call`/`jmp` to the current list function |
//! | `__jump_table` | static keys: NOP ↔ `jmp` to the entry's target |
//! | `.static_call_sites`, `__SCT__*` trampolines | static calls: `call`/`jmp` to the current function |
//! | `.altinstructions` | alternatives: CPU-specific replacements |
//! | `.parainstructions` | paravirt calls patched to native instructions (before 6.8) |
//! | `.retpoline_sites`, `.return_sites`, `.call_sites` | thunk calls rewritten for the CPU's mitigations |
//! | `.ibt_endbr_seal` | `endbr64` of functions never called indirectly → NOP |
//! | `.smp_locks` | `lock` prefixes dropped on a single-CPU machine |
//!
//! The layouts of these tables are fixed by the x86 ABI, except `struct alt_instr`
//! (12 or 14 bytes), whose size is found from the entries themselves.
//!
//! KASLR adds its virtual shift to absolute addresses in the image (relocations); the
//! comparison accepts a difference that is exactly that ([`explained_by_shift`]).
//! `.rodata` holds `__ro_after_init` data (written during boot) between
//! `__start_ro_after_init` and `__end_ro_after_init`: it is not compared.

use std::ops::Range;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use vmi_core::profile::Profile;

/// What can go wrong reading an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The file could not be read.
    #[error("reading the kernel image {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a kernel the detector reads (a vmlinux, a vmlinuz, or a kernel package).
    #[error("{}: not a usable kernel image: {why}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The image is of another build than the guest's kernel.
    #[error("{} is not the kernel the guest runs: its banner is {image:?}, the guest's {guest:?}", path.display())]
    OtherBuild {
        /// The file.
        path: PathBuf,
        /// The image's banner.
        image: String,
        /// The guest's banner (from its profile).
        guest: String,
    },
}

/// What the kernel may write at a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SiteKind {
    /// `__fentry__` call at function entry (ftrace).
    Fentry,
    /// A static key's jump.
    JumpLabel,
    /// A static call site or trampoline.
    StaticCall,
    /// An alternative instruction.
    Alternative,
    /// A paravirt call.
    Paravirt,
    /// A retpoline, return or call-depth thunk call.
    Thunk,
    /// An `endbr64` sealed to a NOP.
    Endbr,
    /// A `lock` prefix.
    Lock,
    /// A constant fixed at boot (`runtime_const_*`).
    RuntimeConst,
}

impl SiteKind {
    /// The table it comes from.
    pub fn name(self) -> &'static str {
        match self {
            SiteKind::Fentry => "ftrace site",
            SiteKind::JumpLabel => "static key",
            SiteKind::StaticCall => "static call",
            SiteKind::Alternative => "alternative",
            SiteKind::Paravirt => "paravirt site",
            SiteKind::Thunk => "thunk site",
            SiteKind::Endbr => "endbr site",
            SiteKind::Lock => "lock prefix",
            SiteKind::RuntimeConst => "runtime constant",
        }
    }
}

/// A place the kernel patches (link-time addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Site {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// What it is.
    pub kind: SiteKind,
}

/// A symbol of the image (link-time address); its name is read from the image on
/// demand ([`KernelImage::symbolize`]), so opening allocates no names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageSymbol {
    /// Address.
    pub addr: u64,
    /// Size (0 when the symbol table does not say).
    pub size: u64,
    /// Its index in the symbol table (a stripped kernel: in its kallsyms).
    pub index: usize,
}

/// A section's bytes and where they load (link-time).
#[derive(Debug, Clone)]
pub struct Section {
    /// Load address.
    pub addr: u64,
    /// Its bytes in the file.
    pub file: Range<usize>,
}

/// The kernel a guest booted, opened as the reference of its running kernel.
pub struct KernelImage {
    path: PathBuf,
    map: Bytes,
    names: Names,
    unchecked: Vec<String>,
    /// `.text`.
    pub text: Section,
    /// `.rodata`.
    pub rodata: Section,
    /// The parts of `.rodata` compared (link-time), `__ro_after_init` data left out.
    pub rodata_compared: Vec<Range<u64>>,
    /// Patch sites, sorted, in `.text` (and trampolines).
    pub sites: Vec<Site>,
    /// Symbols in `.text` and `.rodata`, sorted by address.
    pub symbols: Vec<ImageSymbol>,
    /// The banner (`linux_banner`), without its trailing newline.
    pub banner: String,
}

impl std::fmt::Debug for KernelImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelImage")
            .field("path", &self.path)
            .field("sites", &self.sites.len())
            .field("symbols", &self.symbols.len())
            .finish_non_exhaustive()
    }
}

/// The longest x86 instruction: the most a one-instruction site can span.
const MAX_INSN: u64 = 15;
/// The most an alternative or paravirt site can span (its length is a `u8`).
const MAX_SEQUENCE: u64 = 255;

fn i32_at(b: &[u8], o: usize) -> Option<i64> {
    b.get(o..o + 4)
        .map(|s| i64::from(i32::from_le_bytes([s[0], s[1], s[2], s[3]])))
}

/// The image's bytes: the vmlinux file mapped, or a kernel decompressed from a boot
/// image or read out of a package.
enum Bytes {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// Where the names of [`ImageSymbol`]s are: the vmlinux's symbol table, or the image's
/// own kallsyms (a stripped kernel), by index.
enum Names {
    Elf,
    Kallsyms(Vec<String>),
}

/// The few symbols the comparison needs by name (text and rodata symbols are kept by
/// address only).
const NAMED: &[&str] = &[
    "linux_banner",
    "__retpoline_sites",
    "__retpoline_sites_end",
    "__return_sites",
    "__return_sites_end",
    "__call_sites",
    "__call_sites_end",
    "__ibt_endbr_seal",
    "__ibt_endbr_seal_end",
    "__smp_locks",
    "__smp_locks_end",
    "__alt_instructions",
    "__alt_instructions_end",
    "__parainstructions",
    "__parainstructions_end",
    "__start___jump_table",
    "__stop___jump_table",
    "__start_static_call_sites",
    "__stop_static_call_sites",
    "__start_mcount_loc",
    "ftrace_call",
    "ftrace_regs_call",
    "ftrace_graph_call",
    "__stop_mcount_loc",
    "__start_ro_after_init",
    "__end_ro_after_init",
];

/// Tables that are output sections of their own (`arch/x86/kernel/vmlinux.lds.S`): in a
/// stripped kernel, whose symbols are only what kallsyms keeps, the section headers
/// still say where they are. `(start symbol, end symbol, section)`.
const TABLE_SECTIONS: &[(&str, &str, &str)] = &[
    (
        "__retpoline_sites",
        "__retpoline_sites_end",
        ".retpoline_sites",
    ),
    ("__return_sites", "__return_sites_end", ".return_sites"),
    ("__call_sites", "__call_sites_end", ".call_sites"),
    (
        "__ibt_endbr_seal",
        "__ibt_endbr_seal_end",
        ".ibt_endbr_seal",
    ),
    ("__smp_locks", "__smp_locks_end", ".smp_locks"),
    (
        "__alt_instructions",
        "__alt_instructions_end",
        ".altinstructions",
    ),
    (
        "__parainstructions",
        "__parainstructions_end",
        ".parainstructions",
    ),
];

/// What `bytes` is, for errors: its first bytes.
fn starts_with_description(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(8)];
    format!("it starts with {head:02x?}")
}

impl KernelImage {
    /// Open the kernel the guest booted and check that it is the build `profile`
    /// describes: a vmlinux (with its symbol table, or stripped), a boot image
    /// (vmlinuz, bzImage), or a Debian package holding either (`linux-image-<abi>`,
    /// sid's `linux-binary-<abi>`, or `linux-image-<abi>-dbg`).
    pub fn open(path: &Path, profile: &Profile) -> Result<KernelImage, ImageError> {
        let file = std::fs::File::open(path).map_err(|source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: the file is opened read-only and only read through the map; a file
        // changed under us can give wrong bytes (a wrong finding), not unsafety in Rust
        // terms for plain byte reads
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let format = |why: String| ImageError::Format {
            path: path.to_path_buf(),
            why,
        };
        let (bytes, from) = if map.starts_with(b"\x7fELF") {
            (Bytes::Map(map), None)
        } else if profile_gen::vmlinuz::is_boot_image(&map) {
            let elf = unpack_boot_image(&map).map_err(|e| format(e.to_string()))?;
            (Bytes::Owned(elf), Some("its boot image".to_string()))
        } else if map.starts_with(b"!<arch>\n") {
            use profile_gen::deb::DebKernelFile;
            drop(map);
            match profile_gen::deb::read_kernel_deb(path, &mut |_, _| {}) {
                Ok(DebKernelFile::Vmlinux(k)) => (Bytes::Owned(k.vmlinux), Some(k.vmlinux_member)),
                Ok(DebKernelFile::BootImage(b)) => {
                    let elf = unpack_boot_image(&b.vmlinuz)
                        .map_err(|e| format(format!("{}: {e}", b.member)))?;
                    (Bytes::Owned(elf), Some(b.member))
                }
                Err(profile_gen::Error::Input { message, .. }) => return Err(format(message)),
                Err(e) => return Err(format(e.to_string())),
            }
        } else {
            return Err(format(format!(
                "not a kernel: {}; give the vmlinux (the -dbg package's), the vmlinuz from /boot, \
                 or the linux-image package of the guest's kernel",
                starts_with_description(&map)
            )));
        };
        Self::from_bytes(path, bytes, from.as_deref(), profile)
    }

    /// Read the tables of an ELF kernel in `map` (`from` names the member of the file it
    /// came from, for errors).
    fn from_bytes(
        path: &Path,
        map: Bytes,
        from: Option<&str>,
        profile: &Profile,
    ) -> Result<KernelImage, ImageError> {
        let format = |why: String| ImageError::Format {
            path: path.to_path_buf(),
            why: match from {
                Some(f) => format!("{f}: {why}"),
                None => why,
            },
        };
        let elf = object::File::parse(&*map).map_err(|e| format(e.to_string()))?;
        if elf.architecture() != object::Architecture::X86_64 {
            return Err(format(format!("architecture {:?}", elf.architecture())));
        }
        let section = |name: &str| -> Option<Section> {
            let s = elf.section_by_name(name)?;
            let (off, size) = s.file_range()?;
            Some(Section {
                addr: s.address(),
                file: off as usize..(off + size) as usize,
            })
        };
        let text = section(".text").ok_or_else(|| {
            format(
                "no .text section (a kernel's section headers are kept even when stripped)".into(),
            )
        })?;
        let rodata = section(".rodata").ok_or_else(|| format("no .rodata section".into()))?;
        // every loaded section with file bytes, to read tables wherever they are
        let loaded: Vec<Section> = elf
            .sections()
            .filter(|s| s.address() != 0)
            .filter_map(|s| {
                let (off, size) = s.file_range()?;
                Some(Section {
                    addr: s.address(),
                    file: off as usize..(off + size) as usize,
                })
            })
            .collect();
        let bytes_at = |va: u64, len: u64| -> Option<&[u8]> {
            let s = loaded
                .iter()
                .find(|s| va >= s.addr && va.saturating_add(len) <= s.addr + s.file.len() as u64)?;
            let o = s.file.start + (va - s.addr) as usize;
            map.get(o..o.checked_add(len as usize)?)
        };
        let text_range = text.addr..text.addr + text.file.len() as u64;
        let rodata_range = rodata.addr..rodata.addr + rodata.file.len() as u64;
        let wanted = |name: &str| {
            NAMED.contains(&name)
                || name.starts_with("__start_runtime_")
                || name.starts_with("__stop_runtime_")
        };
        let mut by_name: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        let mut symbols = Vec::new();
        let mut trampolines = Vec::new();
        let mut count = 0usize;
        for sym in elf.symbols() {
            let Ok(name) = sym.name() else { continue };
            if name.is_empty() {
                continue;
            }
            count += 1;
            let a = sym.address();
            if wanted(name) {
                by_name.insert(name.to_string(), a);
            }
            if matches!(
                sym.kind(),
                SymbolKind::Text | SymbolKind::Data | SymbolKind::Unknown
            ) && (text_range.contains(&a) || rodata_range.contains(&a))
            {
                if name.starts_with("__SCT__") {
                    trampolines.push(a);
                }
                symbols.push(ImageSymbol {
                    addr: a,
                    size: sym.size(),
                    index: sym.index().0,
                });
            }
        }
        let mut unchecked = Vec::new();
        let names = if count > 0 {
            Names::Elf
        } else {
            // stripped (a boot image's kernel): the names come from its own kallsyms
            // tables, which hold every function and (KALLSYMS_ALL) data symbol
            let recovered = profile_gen::kimage::KernelElf::parse(&map)
                .and_then(|k| profile_gen::kallsyms::recover(&k));
            match recovered {
                Ok((entries, _)) => {
                    let mut list = Vec::with_capacity(entries.len());
                    for (i, (name, a, _)) in entries.into_iter().enumerate() {
                        if wanted(&name) {
                            by_name.entry(name.clone()).or_insert(a);
                        }
                        if text_range.contains(&a) || rodata_range.contains(&a) {
                            if name.starts_with("__SCT__") {
                                trampolines.push(a);
                            }
                            symbols.push(ImageSymbol {
                                addr: a,
                                size: 0,
                                index: i,
                            });
                        }
                        list.push(name);
                    }
                    Names::Kallsyms(list)
                }
                Err(e) => {
                    // the profile's symbols (link-time, the needed ones) name what
                    // they can; functions stay addresses
                    for (name, s) in &profile.symbols {
                        if wanted(name) {
                            by_name.insert(name.clone(), s.address);
                        }
                    }
                    unchecked.push(format!(
                        "function names: the image is stripped and its kallsyms tables could \
                         not be read ({e}), so changes are named by address"
                    ));
                    Names::Kallsyms(Vec::new())
                }
            }
        };
        symbols.sort();
        symbols.dedup_by(|a, b| a.addr == b.addr && a.size == b.size);
        // tables that are sections of their own are found by name when no symbol says
        for (a, b, name) in TABLE_SECTIONS {
            if !(by_name.contains_key(*a) && by_name.contains_key(*b)) {
                if let Some(s) = section(name) {
                    by_name.insert(a.to_string(), s.addr);
                    by_name.insert(b.to_string(), s.addr + s.file.len() as u64);
                }
            }
        }
        // so are the runtime constants' (6.11 on): section `runtime_ptr_X` is the table
        // of `__start_runtime_ptr_X`..`__stop_runtime_ptr_X`
        for s in elf.sections() {
            let Ok(name) = s.name() else { continue };
            if !name.starts_with("runtime_") {
                continue;
            }
            let (start, stop) = (format!("__start_{name}"), format!("__stop_{name}"));
            if !(by_name.contains_key(&start) && by_name.contains_key(&stop)) {
                by_name.insert(start, s.address());
                by_name.insert(stop, s.address() + s.size());
            }
        }
        let sym = |n: &str| by_name.get(n).copied();
        let range = |a: &str, b: &str| Some(sym(a)?..sym(b)?);
        // what cannot be compared for want of a symbol, said rather than guessed
        for (a, b, what) in [
            (
                "__start_mcount_loc",
                "__stop_mcount_loc",
                "ftrace sites (__mcount_loc)",
            ),
            (
                "__start___jump_table",
                "__stop___jump_table",
                "static keys (__jump_table)",
            ),
            (
                "__start_static_call_sites",
                "__stop_static_call_sites",
                "static call sites (.static_call_sites)",
            ),
        ] {
            if range(a, b).is_none() {
                unchecked.push(format!(
                    "{what}: the image names no {a}..{b}, so these sites are compared as \
                     plain text (a kernel that patched them differs there)"
                ));
            }
        }

        // the banner: the guest must run this very build. A stripped kernel without
        // the symbol still has the string in .rodata.
        let want = profile.kernel.banner.as_bytes();
        let banner_va = sym("linux_banner").or_else(|| {
            let ro = map.get(rodata.file.clone())?;
            let at = find(ro, want).or_else(|| find(ro, b"Linux version "))?;
            Some(rodata.addr + at as u64)
        });
        let banner_va = banner_va.ok_or_else(|| format("no linux_banner".into()))?;
        let got = bytes_at(banner_va, want.len() as u64).unwrap_or_default();
        if got != want {
            let end = bytes_at(banner_va, 256)
                .map(|b| {
                    b.iter()
                        .position(|&c| c == 0 || c == b'\n')
                        .unwrap_or(b.len())
                })
                .unwrap_or(0);
            return Err(ImageError::OtherBuild {
                path: path.to_path_buf(),
                image: String::from_utf8_lossy(bytes_at(banner_va, end as u64).unwrap_or_default())
                    .into_owned(),
                guest: profile.kernel.banner.trim_end().to_string(),
            });
        }

        let mut sites = Vec::new();
        let mut push = |start: u64, len: u64, kind: SiteKind| {
            let max = match kind {
                SiteKind::Alternative | SiteKind::Paravirt => MAX_SEQUENCE,
                _ => MAX_INSN,
            };
            if len > 0 && len <= max {
                sites.push(Site {
                    start,
                    end: start + len,
                    kind,
                });
            }
        };
        // arrays of s32 offsets relative to each entry
        let rel_array = |r: Range<u64>| -> Vec<u64> {
            let n = r.end.saturating_sub(r.start);
            let Some(b) = bytes_at(r.start, n) else {
                return Vec::new();
            };
            (0..b.len() / 4)
                .filter_map(|i| {
                    let off = i32_at(b, i * 4)?;
                    Some(
                        r.start
                            .wrapping_add((i * 4) as u64)
                            .wrapping_add(off as u64),
                    )
                })
                .collect()
        };
        // an instruction's length at a thunk site: a jcc rel32 is 6 bytes, else 5
        let thunk_len = |a: u64| match bytes_at(a, 2) {
            Some([0x0f, op]) if (0x80..=0x8f).contains(op) => 6,
            _ => 5,
        };
        for (a, b) in [
            ("__retpoline_sites", "__retpoline_sites_end"),
            ("__return_sites", "__return_sites_end"),
            ("__call_sites", "__call_sites_end"),
        ] {
            if let Some(r) = range(a, b) {
                for s in rel_array(r) {
                    push(s, thunk_len(s), SiteKind::Thunk);
                }
            }
        }
        if let Some(r) = range("__ibt_endbr_seal", "__ibt_endbr_seal_end") {
            for s in rel_array(r) {
                push(s, 4, SiteKind::Endbr);
            }
        }
        if let Some(r) = range("__smp_locks", "__smp_locks_end") {
            for s in rel_array(r) {
                push(s, 1, SiteKind::Lock);
            }
        }
        // alternatives: struct alt_instr { s32 instr_offset; s32 repl_offset; <cpuid or
        // flags>; u8 instrlen; u8 replacementlen; }: 12 bytes until 6.2, 14 from 6.3 (13
        // with the old padlen). The stride is the one under which the entries point
        // into the image's sections and their replacements into .altinstr_replacement.
        if let Some(r) = range("__alt_instructions", "__alt_instructions_end") {
            let repl =
                section(".altinstr_replacement").map(|s| s.addr..s.addr + s.file.len() as u64);
            if let (Some(b), Some(repl)) = (bytes_at(r.start, r.end.saturating_sub(r.start)), repl)
            {
                let decode = |size: usize| -> Vec<(u64, u64, u64)> {
                    (0..b.len() / size)
                        .filter_map(|i| {
                            let e = i * size;
                            let at = r.start + e as u64;
                            let instr = at.wrapping_add(i32_at(b, e)? as u64);
                            let rep = (at + 4).wrapping_add(i32_at(b, e + 4)? as u64);
                            Some((instr, rep, u64::from(*b.get(e + size - 2)?)))
                        })
                        .collect()
                };
                let fits = |v: &[(u64, u64, u64)]| {
                    let ok = v
                        .iter()
                        .filter(|(instr, rep, len)| {
                            loaded
                                .iter()
                                .any(|s| (s.addr..s.addr + s.file.len() as u64).contains(instr))
                                && (*len == 0 || repl.contains(rep) || *rep == repl.end)
                        })
                        .count();
                    (ok, v.len())
                };
                let best = [12usize, 13, 14]
                    .into_iter()
                    .map(|size| (size, decode(size)))
                    .max_by_key(|(_, v)| {
                        let (ok, n) = fits(v);
                        (ok * 1000).checked_div(n).unwrap_or(0)
                    });
                if let Some((_, entries)) = best {
                    let (ok, n) = fits(&entries);
                    if n > 0 && ok * 10 >= n * 9 {
                        for (instr, _, len) in entries {
                            push(instr, len, SiteKind::Alternative);
                        }
                    }
                }
            }
        }
        // paravirt (until 6.7): struct paravirt_patch_site { u8 *instr; u8 type; u8 len; },
        // 8-aligned, so 16 bytes apart; the last entry is not padded
        if let Some(r) = range("__parainstructions", "__parainstructions_end") {
            if let Some(b) = bytes_at(r.start, r.end.saturating_sub(r.start)) {
                for e in (0..b.len()).step_by(16).filter_map(|o| b.get(o..o + 10)) {
                    let instr = u64::from_le_bytes(e[..8].try_into().unwrap_or([0; 8]));
                    push(instr, u64::from(e[9]), SiteKind::Paravirt);
                }
            }
        }
        // static keys: struct jump_entry { s32 code; s32 target; long key; }
        if let Some(r) = range("__start___jump_table", "__stop___jump_table") {
            if let Some(b) = bytes_at(r.start, r.end.saturating_sub(r.start)) {
                for (i, e) in b.chunks_exact(16).enumerate() {
                    if let Some(off) = i32_at(e, 0) {
                        let at = r.start + (i * 16) as u64;
                        push(at.wrapping_add(off as u64), 5, SiteKind::JumpLabel);
                    }
                }
            }
        }
        // static calls: struct static_call_site { s32 addr; s32 key; }, and trampolines
        if let Some(r) = range("__start_static_call_sites", "__stop_static_call_sites") {
            if let Some(b) = bytes_at(r.start, r.end.saturating_sub(r.start)) {
                for (i, e) in b.chunks_exact(8).enumerate() {
                    if let Some(off) = i32_at(e, 0) {
                        let at = r.start + (i * 8) as u64;
                        push(at.wrapping_add(off as u64), 5, SiteKind::StaticCall);
                    }
                }
            }
        }
        for &a in &trampolines {
            push(a, 8, SiteKind::StaticCall);
        }
        // runtime constants (6.11 on): the immediates of `runtime_const_ptr(sym)` (8 bytes),
        // `runtime_const_mask_32(sym)` (4 bytes, 7.3 on) and
        // `runtime_const_shift_right_32(sym)` (1 byte), one table per symbol
        let tables: Vec<(String, u64)> = by_name
            .iter()
            .filter(|(n, _)| n.starts_with("__start_runtime_"))
            .map(|(n, &a)| (n.clone(), a))
            .collect();
        for (start, a) in tables {
            let stop = start.replacen("__start_", "__stop_", 1);
            let len = if start.starts_with("__start_runtime_ptr_") {
                8
            } else if start.starts_with("__start_runtime_mask_") {
                4
            } else if start.starts_with("__start_runtime_shift_") {
                1
            } else {
                continue;
            };
            if let Some(b) = sym(&stop) {
                for s in rel_array(a..b) {
                    push(s, len, SiteKind::RuntimeConst);
                }
            }
        }
        // ftrace: __mcount_loc holds absolute addresses
        if let Some(r) = range("__start_mcount_loc", "__stop_mcount_loc") {
            if let Some(b) = bytes_at(r.start, r.end.saturating_sub(r.start)) {
                for e in b.chunks_exact(8) {
                    push(
                        u64::from_le_bytes(e.try_into().unwrap_or([0; 8])),
                        5,
                        SiteKind::Fentry,
                    );
                }
            }
        }
        // ftrace's own callers: `ftrace_update_ftrace_func` points their call (and the
        // graph tracer's jump) at the current list function
        for label in ["ftrace_call", "ftrace_regs_call", "ftrace_graph_call"] {
            if let Some(a) = sym(label) {
                push(a, 5, SiteKind::Fentry);
            }
        }
        sites.retain(|s| text_range.contains(&s.start));
        sites.sort();
        sites.dedup();

        // (ftrace_graph_call is gone from x86 since the graph tracer became an ftrace_ops,
        // before 6.1: its absence says nothing)
        for label in ["ftrace_call", "ftrace_regs_call"] {
            if sym(label).is_none() && sym("__start_mcount_loc").is_some() {
                unchecked.push(format!(
                    "{label}: the image does not name it, so ftrace's own caller there is \
                     compared as plain text"
                ));
            }
        }
        // without the bounds of __ro_after_init data (written at boot), .rodata cannot
        // be told apart from it: it is left out rather than reported wholesale
        let rodata_compared = match range("__start_ro_after_init", "__end_ro_after_init") {
            Some(r) => vec![rodata_range.start..r.start, r.end..rodata_range.end],
            None if matches!(names, Names::Elf) => vec![rodata_range.clone()],
            None => {
                unchecked.push(
                    "read-only data (.rodata): the image does not name __start_ro_after_init, \
                     so it is not compared"
                        .into(),
                );
                Vec::new()
            }
        };
        let banner = profile.kernel.banner.trim_end().to_string();
        Ok(KernelImage {
            path: path.to_path_buf(),
            map,
            names,
            unchecked,
            text,
            rodata,
            rodata_compared,
            sites,
            symbols,
            banner,
        })
    }

    /// The image's bytes at link-time address `va` in `.text` or `.rodata`.
    pub fn bytes(&self, va: u64, len: usize) -> Option<&[u8]> {
        [&self.text, &self.rodata].into_iter().find_map(|s| {
            let end = s.addr + s.file.len() as u64;
            if va >= s.addr && va.checked_add(len as u64)? <= end {
                let o = s.file.start + (va - s.addr) as usize;
                self.map.get(o..o + len)
            } else {
                None
            }
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The symbol `va` is in and the offset into it, by the symbol table.
    pub fn symbolize(&self, va: u64) -> Option<(String, u64)> {
        let i = self.symbols.partition_point(|s| s.addr <= va);
        let s = self.symbols[..i].last()?;
        if s.size != 0 && va >= s.addr + s.size {
            return None;
        }
        let name = match &self.names {
            Names::Elf => {
                let elf = object::File::parse(&*self.map).ok()?;
                let sym = elf.symbol_by_index(object::SymbolIndex(s.index)).ok()?;
                sym.name().ok()?.to_string()
            }
            Names::Kallsyms(list) => list.get(s.index)?.clone(),
        };
        Some((name, va - s.addr))
    }

    /// What is not compared for want of a symbol the image does not name (a stripped
    /// kernel's kallsyms may lack one), each a sentence.
    pub fn unchecked(&self) -> &[String] {
        &self.unchecked
    }

    /// True when the names came from the image's kallsyms (a stripped kernel: a boot
    /// image, or a package's).
    pub fn stripped(&self) -> bool {
        matches!(self.names, Names::Kallsyms(_))
    }

    /// The first site overlapping `[start, end)`.
    pub fn site_in(&self, start: u64, end: u64) -> Option<&Site> {
        let i = self.sites.partition_point(|s| s.end <= start);
        self.sites.get(i).filter(|s| s.start < end)
    }
}

/// The decompressed kernel (an ELF without symbols) of a boot image.
fn unpack_boot_image(image: &[u8]) -> Result<Vec<u8>, profile_gen::Error> {
    let payload = profile_gen::vmlinuz::payload(image)?;
    profile_gen::vmlinuz::decompress(&payload, profile_gen::vmlinuz::MAX_KERNEL)
}

/// The first position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether the difference at byte `i` of `run` (running bytes) against `img` (image
/// bytes) is a KASLR relocation: some 4- or 8-byte value covering it equals the image's
/// plus `shift` (absolute addresses; 32-bit ones sign-extended) or minus it (the
/// inverse relocations of per-CPU references). Returns the end of that value, so a
/// caller can skip its remaining bytes.
pub fn explained_by_shift(img: &[u8], run: &[u8], i: usize, shift: u64) -> Option<usize> {
    let n = img.len().min(run.len());
    for o in i.saturating_sub(7)..=i {
        if o + 8 <= n {
            let a = u64::from_le_bytes(img[o..o + 8].try_into().unwrap_or([0; 8]));
            let b = u64::from_le_bytes(run[o..o + 8].try_into().unwrap_or([0; 8]));
            if a != b && a.wrapping_add(shift) == b {
                return Some(o + 8);
            }
        }
        if o + 4 <= n && o + 3 >= i {
            let a = u32::from_le_bytes(img[o..o + 4].try_into().unwrap_or([0; 4]));
            let b = u32::from_le_bytes(run[o..o + 4].try_into().unwrap_or([0; 4]));
            let s = shift as u32;
            if a != b && (a.wrapping_add(s) == b || a.wrapping_sub(s) == b) {
                return Some(o + 4);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_explain_relocated_addresses_only() {
        let shift = 0x35c0_0000u64;
        // mov $0xffffffff82001234, %rdi (sign-extended imm32) relocated
        let img = [0x48, 0xc7, 0xc7, 0x34, 0x12, 0x00, 0x82, 0x90];
        let mut run = img;
        let v = 0x8200_1234u32.wrapping_add(shift as u32);
        run[3..7].copy_from_slice(&v.to_le_bytes());
        for i in 3..7 {
            if img[i] != run[i] {
                assert!(
                    explained_by_shift(&img, &run, i, shift).is_some(),
                    "byte {i}"
                );
            }
        }
        // a jmp written over the same bytes is not
        let hook = [0xe9, 0x10, 0x20, 0x30, 0x40, 0x00, 0x82, 0x90];
        assert!(explained_by_shift(&img, &hook, 0, shift).is_none());
        assert!(explained_by_shift(&img, &hook, 3, shift).is_none());
        // a 64-bit pointer
        let a = 0xffff_ffff_8200_1000u64;
        let img = a.to_le_bytes();
        let run = a.wrapping_add(shift).to_le_bytes();
        assert!(
            (0..8).all(|i| img[i] == run[i] || explained_by_shift(&img, &run, i, shift) == Some(8))
        );
    }
}
