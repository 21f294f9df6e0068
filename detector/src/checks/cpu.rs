//! `cpu-state`: each vCPU's protections and system-call entries as the kernel set them.
//!
//! - CR0.WP set: cleared, the kernel writes through read-only pages (how rootkits patch
//!   the syscall table or kernel text);
//! - every CR4 bit the kernel pinned (`cr4_pinned_bits`: SMEP, SMAP, UMIP, ...) or set
//!   for the CPU features it uses (SMEP, SMAP from `boot_cpu_data`) set: cleared, the
//!   kernel may run or read user memory an exploit placed; a pinning that lacks a bit
//!   the features call for was itself switched off;
//! - EFER.NX set when the kernel's page tables use NX;
//! - IA32_LSTAR, IA32_CSTAR and IA32_SYSENTER_EIP at the kernel's entry points: elsewhere,
//!   every system call runs someone else's code first.
//!
//! Only what the source reports is compared; what it cannot show (QEMU's monitor and ELF
//! notes have no MSRs, QEMU's notes no EFER, raw and LiME dumps no CPU state at all) is
//! said per vCPU in the report's `not_checked`, never passed silently. LKRG checks these
//! from inside the guest.

use vmi_core::kernel::cpustate::{CpuExpectations, CR0_WP, CR4_PINNABLE, EFER_NX};
use vmi_core::memory::PhysicalMemory;
use vmi_core::Va;

use crate::checks::{CheckFailure, Scan};
use crate::finding::{Finding, Severity};

const NAME: &str = "cpu-state";

/// CR0.PG: paging is on (a vCPU without it is not running the kernel yet).
const CR0_PG: u64 = 1 << 31;

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    if scan.registers.is_empty() {
        scan.not_checked(
            NAME,
            "this source gives no vCPU registers (raw and LiME dumps, a QEMU process without its monitor)".into(),
        );
        return Ok(Vec::new());
    }
    let expect = scan.kernel.cpu_expectations()?;
    let mut findings: Vec<Finding> = pinning(&expect).into_iter().collect();
    let mut unread = Vec::new();
    for (cpu, r) in scan.registers.iter().enumerate() {
        if r.cr0 & CR0_PG == 0 {
            continue; // not started yet, or in firmware: nothing of the kernel's to compare
        }
        if r.paravirtual {
            unread.push("a paravirtual vCPU's control registers and MSRs (they are Xen's)");
            continue;
        }
        findings.extend(control_registers(cpu, r.cr0, r.cr4, r.efer, &expect));
        match r.efer {
            Some(_) if expect.uses_nx.is_none() => {
                unread.push("EFER.NX (the kernel's NX use is unknown)")
            }
            None => unread.push("EFER"),
            Some(_) => {}
        }
        if expect.cr4_pinned.is_none() && expect.cr4_features.is_none() {
            unread.push("CR4 (neither cr4_pinned_bits nor boot_cpu_data in the profile)");
        }
        let msrs = [
            (
                "LSTAR",
                r.lstar,
                expect.lstar,
                "entry_SYSCALL_64",
                "64-bit system call",
            ),
            (
                "CSTAR",
                r.cstar,
                expect.cstar,
                "entry_SYSCALL_compat",
                "32-bit syscall",
            ),
            (
                "SYSENTER_EIP",
                r.sysenter_eip,
                expect.sysenter,
                "entry_SYSENTER_compat",
                "32-bit sysenter",
            ),
        ];
        for (msr, value, want, symbol, what) in msrs {
            let (Some(value), Some(want)) = (value, want) else {
                if value.is_none() {
                    unread.push(msr);
                }
                continue;
            };
            if value != want.0 {
                let owner = scan.owners.owner(Va(value));
                findings.push(
                    Finding::new(
                        NAME,
                        Severity::High,
                        format!("{NAME}:{}:{cpu}:{value:#x}", msr.to_lowercase()),
                        format!(
                            "vCPU {cpu}'s {msr} is {value:#x} in {owner}, not {symbol} ({:#x}): every {what} enters there first",
                            want.0
                        ),
                    )
                    .num("vcpu", cpu as u64)
                    .text("msr", msr)
                    .addr("value", value)
                    .addr("expected", want.0)
                    .text("owner", owner.to_string()),
                );
            }
        }
    }
    unread.sort_unstable();
    unread.dedup();
    if !unread.is_empty() {
        scan.not_checked(
            NAME,
            format!("this source does not report {}", unread.join(", ")),
        );
    }
    Ok(findings)
}

/// The names of the CR4 bits in `bits` (hex where none is known).
fn cr4_names(bits: u64) -> String {
    let names: Vec<&str> = CR4_PINNABLE
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        format!("{bits:#x}")
    } else {
        names.join(", ")
    }
}

/// The kernel's pinning of CR4 lacks a bit its CPU features say it set: the pinning
/// was switched off (`cr4_pinned_bits` is read-only after boot).
fn pinning(expect: &CpuExpectations) -> Option<Finding> {
    let (pinned, features) = (expect.cr4_pinned?, expect.cr4_features?);
    let unpinned = features & !pinned;
    (unpinned != 0).then(|| {
        let names = cr4_names(unpinned);
        Finding::new(
            NAME,
            Severity::High,
            format!("{NAME}:pinning:{unpinned:#x}"),
            format!(
                "cr4_pinned_bits ({pinned:#x}) lacks {names}, which the kernel uses (its CPU features): the kernel's CR4 pinning was switched off, in read-only-after-boot memory"
            ),
        )
        .text("unpinned", names)
        .addr("pinned", pinned)
        .addr("features", features)
    })
}

/// CR0.WP, the pinned CR4 bits and EFER.NX of one vCPU.
fn control_registers(
    cpu: usize,
    cr0: u64,
    cr4: u64,
    efer: Option<u64>,
    expect: &CpuExpectations,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    if cr0 & CR0_WP == 0 {
        findings.push(
            Finding::new(
                NAME,
                Severity::High,
                format!("{NAME}:cr0-wp:{cpu}"),
                format!(
                    "vCPU {cpu} runs with CR0.WP clear (CR0 {cr0:#x}): the kernel writes through read-only pages, its text and tables included"
                ),
            )
            .num("vcpu", cpu as u64)
            .addr("cr0", cr0),
        );
    }
    if expect.cr4_pinned.is_some() || expect.cr4_features.is_some() {
        let pinned = expect.cr4_pinned.unwrap_or(0);
        let features = expect.cr4_features.unwrap_or(0);
        let missing = (pinned | features) & !cr4;
        if missing != 0 {
            let names = cr4_names(missing);
            findings.push(
                Finding::new(
                    NAME,
                    Severity::High,
                    format!("{NAME}:cr4:{cpu}:{missing:#x}"),
                    format!(
                        "vCPU {cpu} runs without {names}, which the kernel set and pinned in CR4 (CR4 {cr4:#x}, pinned {pinned:#x}, from its CPU features {features:#x}): cleared behind the kernel's back"
                    ),
                )
                .num("vcpu", cpu as u64)
                .text("cleared", names)
                .addr("cr4", cr4)
                .addr("pinned", pinned)
                .addr("features", features),
            );
        }
    }
    if let (Some(efer), Some(true)) = (efer, expect.uses_nx) {
        if efer & EFER_NX == 0 {
            findings.push(
                Finding::new(
                    NAME,
                    Severity::High,
                    format!("{NAME}:efer-nx:{cpu}"),
                    format!(
                        "vCPU {cpu} runs with EFER.NX clear (EFER {efer:#x}) while the kernel's page tables use NX: no page is execute-protected"
                    ),
                )
                .num("vcpu", cpu as u64)
                .addr("efer", efer),
            );
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use vmi_core::arch::x86_64::Registers;

    use crate::checks::synthetic::{ev, system};
    use crate::checks::{run_once, Check, Settings};
    use crate::finding::Severity;

    const CHECK: Check = Check::CpuState;

    /// A vCPU as the synthetic kernel set it up: paging, WP, SMEP, SMAP, NX, the
    /// kernel's entry points.
    fn vcpu(sk: &vmi_core::testing::SyntheticKernel) -> Registers {
        let mut r = Registers::default();
        r.cr0 = 0x8005_0033;
        r.cr4 = 0x0030_06f0;
        r.efer = Some(0xd01);
        r.lstar = Some(sk.symbol("entry_SYSCALL_64").0);
        r.cstar = Some(sk.symbol("entry_SYSCALL_compat").0);
        r.sysenter_eip = Some(sk.symbol("entry_SYSENTER_compat").0);
        r
    }

    fn report(sk: vmi_core::testing::SyntheticKernel, regs: &[Registers]) -> crate::checks::Report {
        let k = sk.discover().unwrap();
        run_once(&k, regs, &[CHECK], &Settings::default())
    }

    #[test]
    fn clean() {
        let s = system();
        let r = vcpu(&s.sk);
        let rep = report(s.sk, &[r, r]);
        assert!(rep.findings.is_empty(), "{:#?}", rep.findings);
        assert!(rep.errors.is_empty());
        assert!(rep.not_checked.is_empty(), "{:?}", rep.not_checked);
    }

    #[test]
    fn wp_cleared_and_smep_unpinned_on_one_vcpu_are_found() {
        let s = system();
        let good = vcpu(&s.sk);
        let mut bad = good;
        bad.cr0 &= !(1 << 16);
        bad.cr4 &= !(1 << 20);
        let rep = report(s.sk, &[good, bad]);
        let keys: Vec<&str> = rep.findings.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["cpu-state:cr0-wp:1", "cpu-state:cr4:1:0x100000"]);
        assert!(rep.findings.iter().all(|f| f.severity == Severity::High));
        assert_eq!(ev(&rep.findings[1], "cleared"), "SMEP");
    }

    #[test]
    fn an_lstar_into_a_module_is_found_with_its_owner() {
        let mut s = system();
        let target = s.sk.add_module(b"vmi_lstar", 0x1000).core_base;
        let mut r = vcpu(&s.sk);
        r.lstar = Some(target.0 + 0x10);
        let rep = report(s.sk, &[r]);
        assert_eq!(rep.findings.len(), 1, "{:#?}", rep.findings);
        let f = &rep.findings[0];
        assert_eq!(ev(f, "msr"), "LSTAR");
        assert!(ev(f, "owner").contains("vmi_lstar"), "{}", ev(f, "owner"));
    }

    #[test]
    fn smep_cleared_with_its_pinning_is_still_found_and_so_is_the_pinning() {
        let mut s = system();
        let pinned = s.sk.symbol("cr4_pinned_bits");
        s.sk.write_u64(pinned, 1 << 21); // SMEP taken out of the pinning
        let mut r = vcpu(&s.sk);
        r.cr4 &= !(1 << 20);
        let rep = report(s.sk, &[r]);
        let keys: Vec<&str> = rep.findings.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            keys,
            ["cpu-state:pinning:0x100000", "cpu-state:cr4:0:0x100000"]
        );
        assert_eq!(ev(&rep.findings[0], "unpinned"), "SMEP");
    }

    #[test]
    fn efer_nx_cleared_is_found() {
        let s = system();
        let mut r = vcpu(&s.sk);
        r.efer = Some(0x501);
        let rep = report(s.sk, &[r]);
        assert_eq!(rep.findings.len(), 1);
        assert_eq!(rep.findings[0].key, "cpu-state:efer-nx:0");
    }

    #[test]
    fn a_paravirtual_vcpu_is_not_judged_by_the_bits_xen_reports() {
        let s = system();
        let mut r = Registers::default();
        r.cr0 = 0x8000_0001; // no WP: Xen reports what a PV guest controls
        r.efer = Some(0x500);
        r.paravirtual = true;
        let rep = report(s.sk, &[r]);
        assert!(rep.findings.is_empty(), "{:#?}", rep.findings);
        assert!(rep.not_checked[0].1.contains("paravirtual"));
    }

    #[test]
    fn what_a_source_does_not_report_is_said_not_passed() {
        let s = system();
        let mut r = vcpu(&s.sk);
        // as QEMU's ELF notes give them
        r.efer = None;
        r.lstar = None;
        r.cstar = None;
        r.sysenter_eip = None;
        let rep = report(s.sk, &[r]);
        assert!(rep.findings.is_empty());
        assert_eq!(rep.not_checked.len(), 1);
        assert_eq!(
            rep.not_checked[0].1,
            "this source does not report CSTAR, EFER, LSTAR, SYSENTER_EIP"
        );
        let rep = report(system().sk, &[]);
        assert!(rep.not_checked[0].1.contains("no vCPU registers"));
        assert_eq!(rep.ran, [CHECK]);
    }
}
