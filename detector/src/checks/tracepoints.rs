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
