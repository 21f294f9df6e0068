//! `kernel-pages`: the kernel's own page tables, as the kernel set them after boot.
//!
//! A rootkit that writes read-only kernel memory without touching CR0.WP (which
//! `cpu-state` watches) makes the page writable instead: it sets the writable bit in
//! the entry that maps `sys_call_table`'s page, or maps kernel text writable at another
//! address. `mark_rodata_ro` leaves kernel text read-only and executable and read-only
//! data read-only and not executable, in the kernel's mapping and in the direct map
//! (the change-page-attribute code changes both aliases), and since 5.x the kernel
//! makes no mapping both writable and executable (`CONFIG_DEBUG_WX` checks that at
//! boot). Reported, each high, from `init_top_pgt` ([`walk_range`]):
//!
//! - kernel text (`_stext`..`_etext`) or read-only data (`__start_rodata`..
//!   `__end_rodata`) mapped writable;
//! - a writable alias of those pages in the direct map (`page_offset_base` plus the
//!   physical address, in the guest's numbering: a Xen PV domain's entries hold machine
//!   frames);
//! - a mapping both writable and executable in the kernel image's area or the module
//!   area (`0xffffffff80000000`..`MODULES_END`), named by its owner (the kernel image,
//!   a module, memory no module holds). Skipped when the kernel does not use NX.
//!
//! Adjacent pages of the same finding are reported as one range. The walk is bounded
//! (`WalkLimits`); a table that cannot be read or a walk cut short is reported low.

use vmi_core::arch::x86_64::{walk_range, Leaf, WalkLimits};
use vmi_core::kernel::syscalls::in_module_area;
use vmi_core::memory::{PhysicalMemory, VirtualMemory};
use vmi_core::Va;

use crate::checks::{CheckFailure, Scan};
use crate::finding::{Finding, Severity};

const NAME: &str = "kernel-pages";

/// Where the kernel image's mapping starts (`__START_KERNEL_map`).
const KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// Where the module area ends (`MODULES_END`, below the fixmap and the vsyscall page).
const MODULES_END: u64 = 0xffff_ffff_ff00_0000;

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    let k = scan.kernel;
    let text = k.text_range()?;
    let rodata = (k.symbol("__start_rodata")?, k.symbol("__end_rodata")?);
    let root = k.placement().root;
    let walk = walk_range(
        k.space().memory(),
        root,
        Va(KERNEL_MAP),
        Va(MODULES_END),
        WalkLimits::default(),
    );
    let mut findings = Vec::new();
    if walk.truncated || !walk.unreadable.is_empty() {
        findings.push(
            Finding::new(
                NAME,
                Severity::Low,
                format!("{NAME}:incomplete"),
                format!(
                    "the kernel's page tables were not read whole ({} table(s) unreadable{}): what they map there is not checked",
                    walk.unreadable.len(),
                    if walk.truncated { ", the walk stopped at its limits" } else { "" }
                ),
            )
            .num("unreadable_tables", walk.unreadable.len() as u64),
        );
    }
    let sections = [
        ("kernel text", text.start, text.end),
        ("kernel read-only data", rodata.0, rodata.1),
    ];
    // text and read-only data mapped writable, and their direct-map aliases
    let base = k
        .space()
        .read_u64(k.symbol("page_offset_base")?)
        .map_err(|e| CheckFailure::Walk {
            walk: "page_offset_base",
            error: e.to_string(),
        })?;
    for (what, start, end) in sections {
        let leaves: Vec<&Leaf> = walk
            .leaves
            .iter()
            .filter(|l| l.end() > start.0 && l.va.0 < end.0)
            .collect();
        for (from, to) in runs(leaves.iter().copied(), |l| l.flags.writable) {
            let (from, to) = (from.max(start.0), to.min(end.0));
            findings.push(range_finding(
                scan,
                "writable",
                from,
                to,
                format!("{what} is mapped writable at {from:#x}..{to:#x}: read-only kernel memory can be written without clearing CR0.WP"),
            ).text("section", what));
        }
        // the direct map over the physical pages of the section, walked once (bounded
        // as the first walk): its writable leaves that overlap those pages
        let phys: Vec<(u64, u64)> = leaves
            .iter()
            .filter_map(|l| {
                let (from, to) = (l.va.0.max(start.0), l.end().min(end.0));
                l.pa.map(|pa| (pa.0 + (from - l.va.0), pa.0 + (to - l.va.0)))
            })
            .collect();
        let mut alias_parts: Vec<(u64, u64)> = Vec::new();
        if let (Some(lo), Some(hi)) = (
            phys.iter().map(|p| p.0).min(),
            phys.iter().map(|p| p.1).max(),
        ) {
            let aliases = walk_range(
                k.space().memory(),
                root,
                Va(base.wrapping_add(lo)),
                Va(base.wrapping_add(hi)),
                WalkLimits::default(),
            );
            for a in aliases.leaves.iter().filter(|a| a.flags.writable) {
                // the part of this leaf that maps pages of the section
                for &(p0, p1) in &phys {
                    let (a0, a1) = (
                        a.va.0.max(base.wrapping_add(p0)),
                        a.end().min(base.wrapping_add(p1)),
                    );
                    if a0 < a1 {
                        alias_parts.push((a0, a1));
                    }
                }
            }
        }
        for (from, to) in merged(alias_parts) {
            findings.push(range_finding(
                scan,
                "alias",
                from,
                to,
                format!("the direct map's alias {from:#x}..{to:#x} of {what} is writable: the kernel's read-only pages can be written through it"),
            ).text("section", what));
        }
    }
    // writable and executable, where the kernel uses NX
    if walk.leaves.iter().any(|l| l.flags.nx) {
        for (from, to) in runs(walk.leaves.iter(), |l| l.flags.writable && !l.flags.nx) {
            let owner = scan.owners.owner(Va(from));
            let area = if in_module_area(Va(from)) {
                "the module area"
            } else {
                "the kernel image's area"
            };
            findings.push(
                range_finding(
                    scan,
                    "wx",
                    from,
                    to,
                    format!("{from:#x}..{to:#x} in {area} is mapped writable and executable ({owner}): code can be written and run there, which the kernel never allows"),
                )
                .text("owner", owner.to_string()),
            );
        }
    }
    Ok(findings)
}

/// The address ranges of the leaves for which `pick` holds, adjacent ones joined.
fn runs<'a>(
    leaves: impl Iterator<Item = &'a Leaf>,
    pick: impl Fn(&Leaf) -> bool,
) -> Vec<(u64, u64)> {
    merged(
        leaves
            .filter(|l| pick(l))
            .map(|l| (l.va.0, l.end()))
            .collect(),
    )
}

/// `ranges` sorted, those that touch or overlap joined.
fn merged(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (from, to) in ranges {
        match out.last_mut() {
            Some(r) if from <= r.1 => r.1 = r.1.max(to),
            _ => out.push((from, to)),
        }
    }
    out
}

fn range_finding<M: PhysicalMemory>(
    scan: &Scan<'_, M>,
    kind: &str,
    from: u64,
    to: u64,
    summary: String,
) -> Finding {
    let mut f = Finding::new(
        NAME,
        Severity::High,
        format!("{NAME}:{kind}:{from:#x}"),
        summary,
    )
    .text("kind", kind)
    .addr("start", from)
    .addr("end", to)
    .num("bytes", to - from);
    // text and read-only data by their symbols (kallsyms holds data symbols too)
    let image = scan.settings.image.as_deref();
    if let Some(name) = scan.names.name(scan.kernel, image, true, Va(from)) {
        f = f.text("symbol", name);
    }
    f
}

#[cfg(test)]
mod tests {
    use vmi_core::arch::x86_64::{PTE_NX, PTE_WRITABLE};
    use vmi_core::Va;

    use crate::checks::synthetic::{ev, ev_addr, run, single, system};
    use crate::checks::Check;
    use crate::finding::Severity;

    const CHECK: Check = Check::KernelPages;

    #[test]
    fn read_only_data_made_writable_is_found() {
        let mut s = system();
        let table = s.sk.symbol("sys_call_table");
        s.sk.set_pte_bits(table, PTE_WRITABLE, 0);
        let rodata = s.sk.symbol("__start_rodata").0;
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(f.key, format!("kernel-pages:writable:{rodata:#x}"));
        assert!(
            f.summary
                .contains("kernel read-only data is mapped writable"),
            "{}",
            f.summary
        );
        assert_eq!(ev_addr(f, "start"), rodata);
        assert_eq!(ev(f, "section"), "kernel read-only data");
        assert_eq!(ev(f, "kind"), "writable");
    }

    #[test]
    fn a_writable_alias_of_kernel_text_in_the_direct_map_is_found() {
        let mut s = system();
        let text = s.sk.symbol("_stext");
        // the direct map's page of the text's first physical page
        let k = s.sk.clone().discover().expect("discover");
        let pa = k.space().translate(text).expect("text").pa.0;
        let alias = Va(0xffff_8880_0000_0000 + pa);
        s.sk.set_pte_bits(alias, PTE_WRITABLE, 0);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert!(f.key.starts_with("kernel-pages:alias:"), "{}", f.key);
        assert!(
            f.summary.contains("of kernel text is writable"),
            "{}",
            f.summary
        );
        assert_eq!(ev_addr(f, "start"), alias.0 & !0xfff);
    }

    #[test]
    fn a_writable_executable_module_page_is_found_with_its_owner() {
        let mut s = system();
        let code = s.e1000.code(0x40);
        s.sk.set_pte_bits(code, PTE_WRITABLE, 0);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(f.key, format!("kernel-pages:wx:{:#x}", code.0 & !0xfff));
        assert_eq!(ev(f, "owner"), "module e1000");
        assert_eq!(ev(f, "bytes"), "4096");
        // writable but not executable: data, as the kernel keeps it
        let mut s = system();
        let code = s.e1000.code(0x40);
        s.sk.set_pte_bits(code, PTE_WRITABLE | PTE_NX, 0);
        assert!(run(s.sk, CHECK).is_empty());
    }
}
