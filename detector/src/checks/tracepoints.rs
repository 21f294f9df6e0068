//! `tracepoints`: every probe on the kernel's tracepoints must be kernel text.
//!
//! `tracepoint_probe_register` lets any module run code whenever a tracepoint fires
//! (`sys_enter` on every system call, `sched_process_exec` on every exec, ...), which
//! rootkits use to watch and tamper without changing text or tables. The kernel's own
//! users (perf, ftrace events, BPF) register probes in kernel text; a probe anywhere
//! else is reported with the tracepoint's name and the module that owns the probe (also
//! one hidden from the modules list), or as unknown, hidden code when no module does.
//! See [`vmi_core::kernel::tracepoints`].

use vmi_core::memory::PhysicalMemory;

use crate::checks::{CheckFailure, Scan};
use crate::finding::{guest_str, Finding};

const NAME: &str = "tracepoints";

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    scan.kernel.text_range()?;
    let mut findings = Vec::new();
    for tp in scan.kernel.tracepoints()? {
        let name = guest_str(&tp.name);
        for probe in tp.probes.iter().filter(|p| !scan.owners.in_text(p.func)) {
            let owner = scan.owners.owner(probe.func);
            findings.push(
                Finding::new(
                    NAME,
                    owner.hook_severity(),
                    format!("{NAME}:{:#x}:{:#x}", tp.at.0, probe.func.0),
                    format!(
                        "tracepoint {name} calls the probe at {:#x} in {owner}, not kernel text: code runs whenever it fires",
                        probe.func.0
                    ),
                )
                .text("tracepoint", name.clone())
                .addr("tracepoint_addr", tp.at.0)
                .addr("probe", probe.func.0)
                .text("owner", owner.to_string())
                .addr("data", probe.data.0)
                .text("prio", probe.prio.to_string()),
            );
        }
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use vmi_core::Va;

    use crate::checks::synthetic::{assert_fails, ev, ev_addr, run, single, system};
    use crate::checks::{Check, CheckFailure};
    use crate::finding::Severity;

    const CHECK: Check = Check::Tracepoints;

    #[test]
    fn clean_with_the_kernel_s_own_probes() {
        let mut s = system();
        let probe = s.sk.kernel_fn();
        s.sk.add_tracepoint_probe("sched_switch", probe, Va(0), 10);
        assert!(run(s.sk, CHECK).is_empty());
    }

    #[test]
    fn a_probe_of_a_hidden_module_on_sys_enter_is_found() {
        let mut s = system();
        let own = s.sk.kernel_fn();
        s.sk.add_tracepoint_probe("sys_enter", own, Va(0), 10);
        let rk = s.sk.add_module(b"rk", 0x1000);
        s.sk.hide_module(&rk);
        let data = s.sk.alloc(64);
        let tp =
            s.sk.add_tracepoint_probe("sys_enter", rk.code(0x10), data, -5);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(
            f.key,
            format!("tracepoints:{:#x}:{:#x}", tp.0, rk.code(0x10).0)
        );
        assert_eq!(ev(f, "tracepoint"), "sys_enter");
        assert_eq!(ev(f, "owner"), "hidden module rk");
        assert_eq!(ev_addr(f, "data"), data.0);
        assert_eq!(ev(f, "prio"), "-5");
    }

    #[test]
    fn a_wild_funcs_pointer_is_an_error() {
        let mut s = system();
        let tp = s.sk.symbol("__tracepoint_sched_process_exec");
        s.sk.set(tp, "tracepoint", "funcs", 0x1234);
        assert_fails!(
            s.sk,
            CHECK,
            CheckFailure::Kernel(vmi_core::kernel::KernelError::BadPointer {
                what: "tracepoint.funcs",
                ..
            })
        );
    }
}
