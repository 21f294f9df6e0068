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

#[cfg(test)]
mod tests {
    use vmi_core::arch::x86_64::Registers;
    use vmi_core::kernel::idt::KERNEL_CS;
    use vmi_core::Va;

    use crate::checks::synthetic::{ev, ev_addr, run, run_on, single, system};
    use crate::checks::{Check, Settings};
    use crate::finding::Severity;

    const CHECK: Check = Check::Idt;

    #[test]
    fn clean() {
        assert!(run(system().sk, CHECK).is_empty());
    }

    #[test]
    fn a_gate_into_a_module_is_found() {
        let mut s = system();
        let target = s.e1000.code(0x100);
        s.sk.set_gate(0x80, target, KERNEL_CS);
        let table = s.sk.symbol("idt_table");
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(f.key, format!("idt:gate:128:{:#x}", target.0));
        assert_eq!(ev(f, "owner"), "module e1000");
        assert_eq!(ev_addr(f, "gate"), table.0 + 0x80 * 16);
    }

    #[test]
    fn a_gate_through_another_code_segment_is_found() {
        let mut s = system();
        let f = s.sk.kernel_fn();
        s.sk.set_gate(3, f, 0x33);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(f.key, "idt:selector:3:0x33");
    }

    #[test]
    fn a_reserved_vector_may_keep_its_early_stub_and_nothing_else() {
        let mut s = system();
        let early = s.sk.symbol("early_idt_handler_array").0;
        s.sk.set_gate(21, Va(early + 21 * 9), KERNEL_CS);
        s.sk.set_gate(22, Va(early + 22 * 13), KERNEL_CS);
        s.sk.set_gate(23, Va(early + 23 * 9 + 1), KERNEL_CS);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(ev(f, "vector"), "23");
    }

    #[test]
    fn a_vcpu_with_another_idt_is_found() {
        let s = system();
        let table = s.sk.symbol("idt_table").0;
        let mut same = Registers::default();
        same.idt.base = table;
        let mut other = Registers::default();
        other.idt.base = table + 0x1000;
        let findings = run_on(
            s.sk,
            &[same, Registers::default(), other],
            &Settings::default(),
            CHECK,
        )
        .unwrap();
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(f.key, format!("idt:idtr:2:{:#x}", table + 0x1000));
    }
}
