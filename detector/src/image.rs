//! The kernel image a guest booted (its `vmlinux`, e.g. from the -dbg package), as the
//! reference for the running kernel's text and read-only data.
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
    /// Not an ELF vmlinux.
    #[error("{}: not a vmlinux (an x86-64 ELF kernel with its symbol table): {why}", path.display())]
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
    /// Its index in the symbol table.
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

/// A vmlinux opened as the reference of a running kernel.
pub struct KernelImage {
    path: PathBuf,
    map: memmap2::Mmap,
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

impl KernelImage {
    /// Open a vmlinux and check that it is the build `profile` describes.
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
        let text = section(".text").ok_or_else(|| format("no .text section".into()))?;
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
                .find(|s| va >= s.addr && va + len <= s.addr + s.file.len() as u64)?;
            let o = s.file.start + (va - s.addr) as usize;
            map.get(o..o + len as usize)
        };
        // the few symbols needed by name; text and rodata symbols by address only
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
        let mut by_name: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        let mut symbols = Vec::new();
        let mut trampolines = Vec::new();
        let mut count = 0usize;
        let text_range = text.addr..text.addr + text.file.len() as u64;
        let rodata_range = rodata.addr..rodata.addr + rodata.file.len() as u64;
        for sym in elf.symbols() {
            let Ok(name) = sym.name() else { continue };
            if name.is_empty() {
                continue;
            }
            count += 1;
            let a = sym.address();
            if NAMED.contains(&name)
                || name.starts_with("__start_runtime_")
                || name.starts_with("__stop_runtime_")
            {
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
        if count == 0 {
            return Err(format(
                "no symbol table (a stripped image): use the vmlinux of the -dbg package".into(),
            ));
        }
        symbols.sort();
        symbols.dedup_by(|a, b| a.addr == b.addr && a.size == b.size);
        let sym = |n: &str| by_name.get(n).copied();
        let range = |a: &str, b: &str| Some(sym(a)?..sym(b)?);

        // the banner: the guest must run this very build
        let banner_va = sym("linux_banner").ok_or_else(|| format("no linux_banner".into()))?;
        let want = profile.kernel.banner.as_bytes();
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

        let mut rodata_compared = vec![rodata_range.clone()];
        if let Some(r) = range("__start_ro_after_init", "__end_ro_after_init") {
            rodata_compared = vec![rodata_range.start..r.start, r.end..rodata_range.end];
        }
        let banner = profile.kernel.banner.trim_end().to_string();
        Ok(KernelImage {
            path: path.to_path_buf(),
            map,
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
        let elf = object::File::parse(&*self.map).ok()?;
        let sym = elf.symbol_by_index(object::SymbolIndex(s.index)).ok()?;
        Some((sym.name().ok()?.to_string(), va - s.addr))
    }

    /// The first site overlapping `[start, end)`.
    pub fn site_in(&self, start: u64, end: u64) -> Option<&Site> {
        let i = self.sites.partition_point(|s| s.end <= start);
        self.sites.get(i).filter(|s| s.start < end)
    }
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
