//! `kernel-text`: the running kernel's `.text` and `.rodata` against the image it booted
//! ([`crate::image::KernelImage`]).
//!
//! - A byte that differs outside every patch site and is not a KASLR relocation is a
//!   modification: reported once per function (or `.rodata` object), with the running
//!   and the image's bytes, and where a `jmp`/`call` written there leads (and who owns
//!   that: an inline hook into a module names the module).
//! - At patch sites the kernel's own changes are expected, but a branch from a site to
//!   outside kernel text is not: an ftrace-site, static-call or static-key hook into a
//!   module is reported as such.

use std::collections::BTreeMap;

use vmi_core::kernel::syscalls::TextRange;
use vmi_core::memory::{PhysicalMemory, VirtualMemory};
use vmi_core::Va;

use crate::checks::{CheckFailure, Scan};
use crate::finding::{Finding, Severity};
use crate::image::{explained_by_shift, KernelImage, SiteKind};

const NAME: &str = "kernel-text";
/// Bytes compared per read.
const CHUNK: u64 = 1 << 20;
/// Differences closer than this belong to one region.
const GAP: u64 = 16;

/// Where a branch at `at` (running address) with bytes `b` goes: `jmp`/`call rel32`,
/// `jmp rel8`, `movabs $imm64, %rax; jmp *%rax`, or `push $imm32; ret`.
pub fn branch_target(b: &[u8], at: u64) -> Option<u64> {
    match b {
        [0xe8 | 0xe9, r @ ..] if r.len() >= 4 => {
            let d = i32::from_le_bytes([r[0], r[1], r[2], r[3]]);
            Some(at.wrapping_add(5).wrapping_add(d as i64 as u64))
        }
        [0xeb, d, ..] => Some(at.wrapping_add(2).wrapping_add(*d as i8 as i64 as u64)),
        [0x48, 0xb8, r @ ..] if r.len() >= 10 && r[8] == 0xff && r[9] == 0xe0 => {
            Some(u64::from_le_bytes(r[..8].try_into().ok()?))
        }
        [0x68, r @ ..] if r.len() >= 5 && r[4] == 0xc3 => {
            let v = i32::from_le_bytes([r[0], r[1], r[2], r[3]]);
            Some(v as i64 as u64)
        }
        _ => None,
    }
}

/// One region of differing bytes (link-time addresses).
struct Region {
    start: u64,
    end: u64,
}

/// Run the check against `image`.
pub fn run<M: PhysicalMemory>(
    scan: &Scan<'_, M>,
    image: &KernelImage,
) -> Result<Vec<Finding>, CheckFailure> {
    let k = scan.kernel;
    if image.banner != k.profile().kernel.banner.trim_end() {
        return Err(CheckFailure::Walk {
            walk: "the kernel image of this build",
            error: format!("{} is another build", image.path().display()),
        });
    }
    let shift = k.placement().virt_shift;
    let text = k.text_range()?;
    let mut findings = Vec::new();
    let mut regions: Vec<Region> = Vec::new();
    let mut site_hooks: Vec<(u64, u64, Vec<u8>)> = Vec::new(); // (site, target, bytes)

    let compare = |start: u64,
                   end: u64,
                   regions: &mut Vec<Region>,
                   site_hooks: &mut Vec<(u64, u64, Vec<u8>)>|
     -> Result<(), CheckFailure> {
        let mut run = vec![0u8; CHUNK as usize];
        let mut at = start;
        while at < end {
            let n = (end - at).min(CHUNK) as usize;
            let img = image.bytes(at, n).ok_or_else(|| CheckFailure::Walk {
                walk: "the image's bytes",
                error: format!("{at:#x}+{n:#x} is outside .text/.rodata"),
            })?;
            let run = &mut run[..n];
            k.space()
                .read_virt(Va(at.wrapping_add(shift)), run)
                .map_err(|source| vmi_core::kernel::KernelError::Read {
                    what: "kernel text",
                    source,
                })?;
            if img != &run[..] {
                diff_chunk(image, at, img, run, shift, &text, regions, site_hooks);
            }
            at += n as u64;
        }
        Ok(())
    };
    let t = &image.text;
    compare(
        t.addr,
        t.addr + t.file.len() as u64,
        &mut regions,
        &mut site_hooks,
    )?;
    let text_regions = regions.len();
    for r in &image.rodata_compared {
        compare(r.start, r.end, &mut regions, &mut site_hooks)?;
    }

    // one finding per function or object
    let mut by_symbol: BTreeMap<String, Vec<&Region>> = BTreeMap::new();
    for (i, r) in regions.iter().enumerate() {
        let name = match image.symbolize(r.start) {
            Some((s, _)) => s,
            None => format!("{:#x}", r.start),
        };
        let section = if i < text_regions { ".text" } else { ".rodata" };
        by_symbol
            .entry(format!("{section} {name}"))
            .or_default()
            .push(r);
    }
    // bounded as every check's findings are (`MAX_FINDINGS_PER_CHECK`), before they
    // are made: a remapped image differs in every function
    let total = by_symbol.len() + site_hooks.len();
    let listed = if total > super::MAX_FINDINGS_PER_CHECK {
        super::MAX_FINDINGS_PER_CHECK - 1
    } else {
        total
    };
    let site_hooks: Vec<_> = site_hooks
        .into_iter()
        .take(listed.saturating_sub(by_symbol.len().min(listed)))
        .collect();
    for (key, regs) in by_symbol.into_iter().take(listed) {
        let (section, name) = key.split_once(' ').unwrap_or(("", &key));
        let first = regs[0];
        let bytes: u64 = regs.iter().map(|r| r.end - r.start).sum();
        let len = (first.end - first.start).clamp(1, 16) as usize;
        let img = image.bytes(first.start, len).unwrap_or_default().to_vec();
        let mut run = vec![0u8; 16];
        let running = k
            .space()
            .read_virt(Va(first.start.wrapping_add(shift)), &mut run)
            .is_ok();
        let off = image.symbolize(first.start).map(|(_, o)| o).unwrap_or(0);
        let target = running
            .then(|| branch_target(&run, first.start.wrapping_add(shift)))
            .flatten();
        let mut f = Finding::new(
            NAME,
            Severity::High,
            format!("{NAME}:{section}:{name}:{off:#x}"),
            match target {
                Some(t) => format!(
                    "{name}+{off:#x} in kernel {section} differs from the image: a branch to {t:#x} in {} was written there (inline hook)",
                    scan.owners.owner(Va(t))
                ),
                None => format!(
                    "{name}+{off:#x} in kernel {section} differs from the image ({bytes} byte(s) in {} place(s)): modified kernel {}",
                    regs.len(),
                    if section == ".text" { "code" } else { "read-only data" }
                ),
            },
        )
        .text("symbol", name.to_string())
        .addr("address", first.start.wrapping_add(shift))
        .num("bytes", bytes)
        .text("running", hex::encode(&run[..len.min(run.len())]))
        .text("image", hex::encode(&img));
        if let Some(t) = target {
            f = f
                .addr("target", t)
                .text("owner", scan.owners.owner(Va(t)).to_string());
        }
        findings.push(f);
    }
    for (site, target, bytes) in site_hooks {
        let kind = image
            .site_in(site, site + 1)
            .map_or("patch site", |s| s.kind.name());
        let (name, off) = image
            .symbolize(site)
            .unwrap_or_else(|| (format!("{site:#x}"), 0));
        let owner = scan.owners.owner(Va(target));
        findings.push(
            Finding::new(
                NAME,
                Severity::High,
                format!("{NAME}:site:{site:#x}:{target:#x}"),
                format!(
                    "the {kind} at {name}+{off:#x} branches to {target:#x} in {owner}, outside kernel text (a hook through the kernel's own patch site)"
                ),
            )
            .text("symbol", name)
            .addr("address", site.wrapping_add(shift))
            .text("site", kind)
            .addr("target", target)
            .text("owner", owner.to_string())
            .text("running", hex::encode(&bytes)),
        );
    }
    if listed < total {
        findings.push(super::more_findings(NAME, listed, total));
    }
    Ok(findings)
}

/// The differences of one chunk: regions outside the patch sites that are not
/// relocations, and patch sites that branch out of kernel text.
#[allow(clippy::too_many_arguments)]
fn diff_chunk(
    image: &KernelImage,
    base: u64,
    img: &[u8],
    run: &[u8],
    shift: u64,
    text: &TextRange,
    regions: &mut Vec<Region>,
    site_hooks: &mut Vec<(u64, u64, Vec<u8>)>,
) {
    let mut i = 0usize;
    let n = img.len();
    while i < n {
        // skip equal 64-byte blocks fast
        if i.is_multiple_of(64) && i + 64 <= n && img[i..i + 64] == run[i..i + 64] {
            i += 64;
            continue;
        }
        if img[i] == run[i] {
            i += 1;
            continue;
        }
        let va = base + i as u64;
        if let Some(site) = image.site_in(va, va + 1) {
            // the kernel may rewrite a site; a branch out of kernel text it may not. A
            // runtime constant's site is an instruction's immediate (a pointer, a mask, a
            // shift), data the kernel fixes at boot: decoding it as a branch misread a
            // pointer whose low byte is 0xe8 as a call (a clean 7.3 guest's
            // __futex_hash); an instruction rewritten around it differs outside the site
            let s = (site.start.max(base) - base) as usize;
            let e = ((site.end - base) as usize).min(n);
            if site.start >= base && site.kind != SiteKind::RuntimeConst {
                let at = site.start.wrapping_add(shift);
                let window = &run[s..(s + 12).min(n)];
                if let Some(t) = branch_target(window, at) {
                    if !text.contains(Va(t)) {
                        site_hooks.push((site.start, t, run[s..e].to_vec()));
                    }
                }
            }
            i = e.max(i + 1);
            continue;
        }
        if let Some(end) = explained_by_shift(img, run, i, shift) {
            i = end.max(i + 1);
            continue;
        }
        match regions.last_mut() {
            Some(r) if va <= r.end + GAP => r.end = va + 1,
            _ => regions.push(Region {
                start: va,
                end: va + 1,
            }),
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use vmi_core::testing::{TEXT, VIRT_SHIFT};

    use crate::checks::synthetic::{ev, ev_addr, run_on, single, system, System};
    use crate::checks::{Check, CheckFailure, Settings};
    use crate::finding::Severity;
    use crate::image::{ImageError, KernelImage, SiteKind};

    const CHECK: Check = Check::KernelText;
    /// The image's `.text`: 64 KiB from `_text`, two functions in it.
    const TEXT_LEN: usize = 0x1_0000;
    const FN_A: u64 = TEXT + 0x1000;
    const FN_B: u64 = TEXT + 0x2000;
    /// The image's `.rodata`: 4 KiB from `__start_rodata`, the banner and one object.
    const RODATA: u64 = TEXT + 0x20_0000;
    const RO_OBJECT: u64 = RODATA + 0x800;
    /// A function's bytes: push %rbp; mov %rsp,%rbp; nop; pop %rbp; ret.
    const CODE: &[u8] = &[0x55, 0x48, 0x89, 0xe5, 0x90, 0x5d, 0xc3];

    /// A vmlinux-like ELF (ET_EXEC, x86-64): `.text` and `.rodata` at their link-time
    /// addresses and a symbol table with `linux_banner`, two functions and an object.
    fn vmlinux(text: &[u8], rodata: &[u8]) -> tempfile::NamedTempFile {
        temp(&elf(text, rodata, true, &[]))
    }

    /// The ELF bytes: `.text`, `.rodata`, the `extra` sections (name, address, bytes),
    /// and with `symbols` the symbol table; without, a stripped kernel as a boot image
    /// holds (section headers kept).
    fn elf(text: &[u8], rodata: &[u8], symbols: bool, extra: &[(&str, u64, Vec<u8>)]) -> Vec<u8> {
        use object::elf;
        use object::write::elf::{FileHeader, SectionHeader, Sym, Writer};
        let mut buf = Vec::new();
        let mut w = Writer::new(object::Endianness::Little, true, &mut buf);
        w.reserve_file_header();
        w.reserve_null_section_index();
        let text_name = w.add_section_name(b".text");
        let text_idx = w.reserve_section_index();
        let ro_name = w.add_section_name(b".rodata");
        let ro_idx = w.reserve_section_index();
        let extra_names: Vec<_> = extra
            .iter()
            .map(|(n, _, _)| {
                let name = w.add_section_name(n.as_bytes());
                w.reserve_section_index();
                name
            })
            .collect();
        let syms: [(&[u8], u64, u64, bool); 4] = [
            (b"linux_banner", RODATA + 0x100, 0x80, false),
            (b"fn_a", FN_A, 0x100, true),
            (b"fn_b", FN_B, 0x100, true),
            (b"ro_object", RO_OBJECT, 0x40, false),
        ];
        let mut names = Vec::new();
        if symbols {
            names = syms.iter().map(|s| w.add_string(s.0)).collect();
            w.reserve_null_symbol_index();
            for s in &syms {
                w.reserve_symbol_index(Some(if s.3 { text_idx } else { ro_idx }));
            }
            w.reserve_symtab_section_index();
            w.reserve_strtab_section_index();
        }
        w.reserve_shstrtab_section_index();
        let text_off = w.reserve(text.len(), 16);
        let ro_off = w.reserve(rodata.len(), 16);
        let extra_offs: Vec<_> = extra
            .iter()
            .map(|(_, _, b)| w.reserve(b.len(), 16))
            .collect();
        if symbols {
            w.reserve_symtab();
            w.reserve_strtab();
        }
        w.reserve_shstrtab();
        w.reserve_section_headers();
        w.write_file_header(&FileHeader {
            os_abi: 0,
            abi_version: 0,
            e_type: elf::ET_EXEC,
            e_machine: elf::EM_X86_64,
            e_entry: TEXT,
            e_flags: 0,
        })
        .unwrap();
        w.write_align(16);
        w.write(text);
        w.write_align(16);
        w.write(rodata);
        for (_, _, b) in extra {
            w.write_align(16);
            w.write(b);
        }
        if symbols {
            w.write_null_symbol();
            for (s, name) in syms.iter().zip(&names) {
                let kind = if s.3 { elf::STT_FUNC } else { elf::STT_OBJECT };
                w.write_symbol(&Sym {
                    name: Some(*name),
                    section: Some(if s.3 { text_idx } else { ro_idx }),
                    st_info: (elf::STB_GLOBAL << 4) | kind,
                    st_other: 0,
                    st_shndx: 0,
                    st_value: s.1,
                    st_size: s.2,
                });
            }
            w.write_strtab();
        }
        w.write_shstrtab();
        w.write_null_section_header();
        let mut headers = vec![
            (
                text_name,
                TEXT,
                text_off,
                text.len(),
                elf::SHF_ALLOC | elf::SHF_EXECINSTR,
            ),
            (ro_name, RODATA, ro_off, rodata.len(), elf::SHF_ALLOC),
        ];
        for ((name, (_, addr, b)), off) in extra_names.iter().zip(extra).zip(&extra_offs) {
            headers.push((*name, *addr, *off, b.len(), elf::SHF_ALLOC));
        }
        for (name, addr, off, len, flags) in headers {
            w.write_section_header(&SectionHeader {
                name: Some(name),
                sh_type: elf::SHT_PROGBITS,
                sh_flags: u64::from(flags),
                sh_addr: addr,
                sh_offset: off as u64,
                sh_size: len as u64,
                sh_link: 0,
                sh_info: 0,
                sh_addralign: 16,
                sh_entsize: 0,
            });
        }
        if symbols {
            w.write_symtab_section_header(1);
            w.write_strtab_section_header();
        }
        w.write_shstrtab_section_header();
        buf
    }

    fn temp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, bytes).unwrap();
        file
    }

    /// The bytes of the image's sections: the two functions, the banner, and in
    /// `ro_object` a pointer to `fn_b` (which KASLR relocates in the running kernel).
    fn sections(banner: &str) -> (Vec<u8>, Vec<u8>) {
        let mut text = vec![0xcc; TEXT_LEN];
        for f in [FN_A, FN_B] {
            let o = (f - TEXT) as usize;
            text[o..o + CODE.len()].copy_from_slice(CODE);
        }
        let mut rodata = vec![0u8; 0x1000];
        rodata[0x100..0x100 + banner.len()].copy_from_slice(banner.as_bytes());
        let o = (RO_OBJECT - RODATA) as usize;
        rodata[o..o + 8].copy_from_slice(&FN_B.to_le_bytes());
        rodata[o + 8..o + 16].copy_from_slice(b"constant");
        (text, rodata)
    }

    /// The system with the image's bytes in its running kernel (relocated by the
    /// KASLR shift), and the image.
    fn booted() -> (System, tempfile::NamedTempFile) {
        let mut s = system();
        let banner = s.sk.profile().kernel.banner.clone();
        let (text, mut rodata) = sections(&banner);
        let file = vmlinux(&text, &rodata);
        let o = (RO_OBJECT - RODATA) as usize;
        rodata[o..o + 8].copy_from_slice(&(FN_B + VIRT_SHIFT).to_le_bytes());
        s.sk.write(vmi_core::Va(TEXT + VIRT_SHIFT), &text);
        s.sk.write(vmi_core::Va(RODATA + VIRT_SHIFT), &rodata);
        (s, file)
    }

    fn check(
        s: System,
        image: &tempfile::NamedTempFile,
    ) -> Result<Vec<crate::finding::Finding>, CheckFailure> {
        let img = KernelImage::open(image.path(), s.sk.profile()).expect("the image opens");
        let settings = Settings {
            image: Some(Arc::new(img)),
            ..Settings::default()
        };
        run_on(s.sk, &[], &settings, CHECK)
    }

    #[test]
    fn clean_with_a_relocated_pointer() {
        let (s, image) = booted();
        assert_eq!(check(s, &image).unwrap(), vec![]);
    }

    #[test]
    fn an_inline_hook_into_a_module_is_named_with_its_target_and_owner() {
        let (mut s, image) = booted();
        let target = s.e1000.code(0x40);
        let at = FN_A + VIRT_SHIFT;
        let rel = (target.0 as i64 - (at as i64 + 5)) as i32;
        let mut jmp = vec![0xe9];
        jmp.extend_from_slice(&rel.to_le_bytes());
        s.sk.write(vmi_core::Va(at), &jmp);
        let findings = check(s, &image).unwrap();
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(ev(f, "symbol"), "fn_a");
        assert_eq!(ev_addr(f, "address"), at);
        assert_eq!(ev_addr(f, "target"), target.0);
        assert_eq!(ev(f, "owner"), "module e1000");
        assert!(f.summary.contains("inline hook"), "{}", f.summary);
    }

    #[test]
    fn changed_read_only_data_and_code_without_a_branch() {
        let (mut s, image) = booted();
        s.sk.write(vmi_core::Va(RO_OBJECT + 8 + VIRT_SHIFT), b"CONSTANT");
        // a nop replaced: not a branch, still a change
        s.sk.write(vmi_core::Va(FN_B + 4 + VIRT_SHIFT), &[0xcc]);
        let findings = check(s, &image).unwrap();
        assert_eq!(findings.len(), 2, "{findings:#?}");
        let ro = findings
            .iter()
            .find(|f| ev(f, "symbol") == "ro_object")
            .expect("ro_object");
        assert!(ro.summary.contains("read-only data"), "{}", ro.summary);
        assert_eq!(ev(ro, "bytes"), "8");
        let code = findings
            .iter()
            .find(|f| ev(f, "symbol") == "fn_b")
            .expect("fn_b");
        assert!(
            code.summary.contains("modified kernel code"),
            "{}",
            code.summary
        );
    }

    #[test]
    fn an_image_of_another_build_is_refused() {
        let s = system();
        let (text, rodata) = sections("Linux version 6.1.0-other (vmi@elsewhere) #2\n");
        let image = vmlinux(&text, &rodata);
        match KernelImage::open(image.path(), s.sk.profile()) {
            Err(ImageError::OtherBuild { image, .. }) => assert!(image.contains("6.1.0-other")),
            other => panic!("{other:?}"),
        }
    }

    /// Where the stripped image's own-section tables lie (outside text and rodata).
    const LOCKS: u64 = TEXT + 0x30_0000;
    const RUNTIME: u64 = TEXT + 0x30_1000;
    /// A `lock` prefix in fn_a, and a runtime constant's 8-byte immediate in fn_b.
    const LOCK_SITE: u64 = FN_A + 0x10;
    const CONST_SITE: u64 = FN_B + 0x12;

    /// s32 offsets from each entry to its site, as the kernel's tables hold them.
    fn rel_table(at: u64, sites: &[u64]) -> Vec<u8> {
        sites
            .iter()
            .enumerate()
            .flat_map(|(i, &s)| ((s as i64 - (at + 4 * i as u64) as i64) as i32).to_le_bytes())
            .collect()
    }

    /// The booted system and a stripped image of its kernel (no symbol table, no
    /// kallsyms), with `.smp_locks` and `runtime_ptr_x` as sections when `tables`.
    fn booted_stripped(tables: bool) -> (System, Vec<u8>) {
        let mut s = system();
        let banner = s.sk.profile().kernel.banner.clone();
        let (mut text, mut rodata) = sections(&banner);
        let o = (LOCK_SITE - TEXT) as usize;
        text[o] = 0xf0;
        let extra = if tables {
            vec![
                (".smp_locks", LOCKS, rel_table(LOCKS, &[LOCK_SITE])),
                ("runtime_ptr_x", RUNTIME, rel_table(RUNTIME, &[CONST_SITE])),
            ]
        } else {
            Vec::new()
        };
        let image = elf(&text, &rodata, false, &extra);
        let o = (RO_OBJECT - RODATA) as usize;
        rodata[o..o + 8].copy_from_slice(&(FN_B + VIRT_SHIFT).to_le_bytes());
        s.sk.write(vmi_core::Va(TEXT + VIRT_SHIFT), &text);
        s.sk.write(vmi_core::Va(RODATA + VIRT_SHIFT), &rodata);
        (s, image)
    }

    /// The kernel patched itself where the tables say: the lock prefix dropped (a
    /// single-CPU guest) and the runtime constant set.
    fn patch_sites(s: &mut System) {
        s.sk.write(vmi_core::Va(LOCK_SITE + VIRT_SHIFT), &[0x3e]);
        s.sk.write(
            vmi_core::Va(CONST_SITE + VIRT_SHIFT),
            &0xffff_8880_1234_5678u64.to_le_bytes(),
        );
    }

    #[test]
    fn a_stripped_image_finds_its_tables_by_section_name() {
        let (mut s, bytes) = booted_stripped(true);
        let file = temp(&bytes);
        let img = KernelImage::open(file.path(), s.sk.profile()).expect("opens");
        assert!(img.stripped());
        let kinds: Vec<_> = img.sites.iter().map(|x| (x.start, x.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (LOCK_SITE, SiteKind::Lock),
                (CONST_SITE, SiteKind::RuntimeConst)
            ]
        );
        // what cannot be compared without the symbols is said
        let said = img.unchecked().join("\n");
        for what in [
            "ftrace sites",
            "static keys",
            "static call sites",
            "read-only data (.rodata)",
            "function names",
        ] {
            assert!(said.contains(what), "{what}: {said}");
        }
        patch_sites(&mut s);
        // .rodata is not compared without __ro_after_init's bounds
        s.sk.write(vmi_core::Va(RO_OBJECT + 8 + VIRT_SHIFT), b"CONSTANT");
        assert_eq!(check(s, &file).unwrap(), vec![]);
    }

    #[test]
    fn without_the_sections_the_same_patches_are_changes() {
        let (mut s, bytes) = booted_stripped(false);
        let file = temp(&bytes);
        patch_sites(&mut s);
        let findings = check(s, &file).unwrap();
        assert_eq!(findings.len(), 2, "{findings:#?}");
    }

    #[test]
    fn an_inline_hook_against_a_stripped_image_is_named_by_address() {
        let (mut s, bytes) = booted_stripped(true);
        let file = temp(&bytes);
        patch_sites(&mut s);
        let target = s.e1000.code(0x40);
        let at = FN_B + VIRT_SHIFT;
        let rel = (target.0 as i64 - (at as i64 + 5)) as i32;
        let mut jmp = vec![0xe9];
        jmp.extend_from_slice(&rel.to_le_bytes());
        s.sk.write(vmi_core::Va(at), &jmp);
        let findings = check(s, &file).unwrap();
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(ev(f, "symbol"), format!("{FN_B:#x}"));
        assert_eq!(ev_addr(f, "target"), target.0);
        assert_eq!(ev(f, "owner"), "module e1000");
    }

    #[test]
    fn a_boot_image_is_its_kernel() {
        use std::io::Write;
        let (mut s, bytes) = booted_stripped(true);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        let payload = gz.finish().unwrap();
        // a bzImage: the setup header (protocol 2.15, one setup sector) and the payload
        // with its uncompressed size appended
        let mut bz = vec![0u8; 1024];
        bz[0x1f1] = 1;
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        bz[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        bz[0x24c..0x250].copy_from_slice(&(payload.len() as u32 + 4).to_le_bytes());
        bz.extend_from_slice(&payload);
        bz.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        let file = temp(&bz);
        let img = KernelImage::open(file.path(), s.sk.profile()).expect("opens");
        assert!(img.stripped());
        assert_eq!(img.sites.len(), 2);
        patch_sites(&mut s);
        s.sk.write(vmi_core::Va(FN_A + 4 + VIRT_SHIFT), &[0xcc]);
        let findings = check(s, &file).unwrap();
        assert_eq!(findings.len(), 1, "{findings:#?}");
        // a cut boot image is an error that says so
        let cut = temp(&bz[..bz.len() / 2]);
        let e = KernelImage::open(cut.path(), system().sk.profile())
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn what_is_no_kernel_is_refused_with_what_to_give() {
        let s = system();
        for junk in [&b"hello, not a kernel"[..], b"\x7fELF\x02\x01 cut"] {
            let f = temp(junk);
            let e = KernelImage::open(f.path(), s.sk.profile())
                .unwrap_err()
                .to_string();
            assert!(e.contains("not a usable kernel image"), "{e}");
        }
        let e = KernelImage::open(temp(b"!<arch>\nfoo").path(), s.sk.profile())
            .unwrap_err()
            .to_string();
        assert!(e.contains("the package is truncated"), "{e}");
        // a stripped image of another build
        let (text, rodata) = sections("Linux version 6.1.0-other (vmi@elsewhere) #2\n");
        let f = temp(&elf(&text, &rodata, false, &[]));
        match KernelImage::open(f.path(), s.sk.profile()) {
            Err(ImageError::OtherBuild { image, .. }) => assert!(image.contains("6.1.0-other")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn branch_targets() {
        let at = 0xffff_ffff_8100_0000u64;
        // jmp +0x10
        assert_eq!(branch_target(&[0xe9, 0x10, 0, 0, 0], at), Some(at + 0x15));
        // call backwards
        assert_eq!(branch_target(&[0xe8, 0xfb, 0xff, 0xff, 0xff], at), Some(at));
        assert_eq!(branch_target(&[0xeb, 0xfe], at), Some(at));
        let mut abs = vec![0x48, 0xb8];
        abs.extend_from_slice(&0xffff_ffff_c012_3456u64.to_le_bytes());
        abs.extend_from_slice(&[0xff, 0xe0]);
        assert_eq!(branch_target(&abs, at), Some(0xffff_ffff_c012_3456));
        assert_eq!(
            branch_target(&[0x68, 0x56, 0x34, 0x12, 0xc0, 0xc3], at),
            Some(0xffff_ffff_c012_3456)
        );
        assert_eq!(branch_target(&[0x0f, 0x1f, 0x44, 0, 0], at), None);
    }
}
