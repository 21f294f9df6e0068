//! `idt`: every present IDT gate must point into kernel text through `__KERNEL_CS`,
//! and every vCPU's IDTR must map to `idt_table`.
//!
//! One exception, by design of the kernel: a reserved exception vector (below 32) may
//! still hold its boot-time stub in `early_idt_handler_array` (init text, freed after
//! boot), exactly that stub and no other address.

use vmi_core::kernel::idt::KERNEL_CS;
use vmi_core::memory::PhysicalMemory;

use crate::checks::{CheckFailure, Scan};
use crate::finding::{Finding, Severity};

const NAME: &str = "idt";

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    scan.kernel.text_range()?;
    let (table, gates) = scan.kernel.idt()?;
    let mut findings = Vec::new();
    for g in gates.iter().filter(|g| g.present) {
        let early = scan.kernel.is_early_idt_stub(g.vector, g.target);
        if !scan.owners.in_text(g.target) && !early {
            let owner = scan.owners.owner(g.target);
            findings.push(
                Finding::new(
                    NAME,
                    Severity::High,
                    format!("{NAME}:gate:{}:{:#x}", g.vector, g.target.0),
                    format!(
                        "IDT vector {:#04x} points to {:#x} in {owner}, not kernel text: the interrupt handler is hooked",
                        g.vector, g.target.0
                    ),
                )
                .num("vector", u64::from(g.vector))
                .addr("target", g.target.0)
                .text("owner", owner.to_string())
                .addr("gate", table.0 + u64::from(g.vector) * 16),
            );
        }
        if g.selector != KERNEL_CS {
            findings.push(
                Finding::new(
                    NAME,
                    Severity::High,
                    format!("{NAME}:selector:{}:{:#x}", g.vector, g.selector),
                    format!(
                        "IDT vector {:#04x} uses code segment {:#x}, not the kernel's {KERNEL_CS:#x}",
                        g.vector, g.selector
                    ),
                )
                .num("vector", u64::from(g.vector))
                .addr("selector", u64::from(g.selector))
                .addr("gate", table.0 + u64::from(g.vector) * 16),
            );
        }
    }
    for (cpu, regs) in scan.registers.iter().enumerate() {
        // a vCPU still in real mode or firmware has no kernel IDT loaded yet
        if regs.idt.base == 0 {
            continue;
        }
        if !scan.kernel.idtr_matches(regs.idt.base)? {
            findings.push(
                Finding::new(
                    NAME,
                    Severity::High,
                    format!("{NAME}:idtr:{cpu}:{:#x}", regs.idt.base),
                    format!(
                        "vCPU {cpu} has loaded the IDT at {:#x}, which is not idt_table ({:#x}): the whole table is replaced",
                        regs.idt.base, table.0
                    ),
                )
                .num("vcpu", cpu as u64)
                .addr("idtr_base", regs.idt.base)
                .addr("idt_table", table.0),
            );
        }
    }
    Ok(findings)
}
