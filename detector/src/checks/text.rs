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
    for (key, regs) in by_symbol {
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
