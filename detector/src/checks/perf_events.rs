//! `perf-events`: every perf event installed in a CPU's or a task's context must have
//! its overflow handler in kernel text.
//!
//! A module that creates a kernel counter (`perf_event_create_kernel_counter`, or a
//! hardware breakpoint through `register_wide_hw_breakpoint`) chooses the event's
//! `overflow_handler`: its code then runs on every sample, or on every access to a
//! watched address, without a table, text or tracepoint of the kernel changed. The
//! kernel's own handlers (perf's output, the BPF and watchdog handlers, ptrace's
//! breakpoints) are kernel text; a handler anywhere else is reported with the event's
//! PMU, its CPU or task, and the module that owns the handler (also one hidden from the
//! modules list), or as unknown, hidden code. Events opened from user space with a BPF
//! program are the `ebpf` check's attach points, not this one's: their handler is the
//! kernel's. See [`vmi_core::kernel::perf`].

use vmi_core::kernel::perf::PerfContext;
use vmi_core::memory::PhysicalMemory;

use crate::checks::{needed, CheckFailure, Scan};
use crate::finding::{guest_str, Finding};

const NAME: &str = "perf-events";

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    scan.kernel.text_range()?;
    let procs = needed(&scan.processes, "the tasks list")?;
    let mut findings = Vec::new();
    for e in scan.kernel.perf_context_events(procs)? {
        let h = e.overflow_handler;
        if h.0 == 0 || scan.owners.in_text(h) {
            continue;
        }
        let owner = scan.owners.owner(h);
        let pmu = guest_str(&e.pmu);
        // PMUs registered without a name (cpu-clock, task-clock) say nothing
        let of = if pmu.is_empty() {
            String::new()
        } else {
            format!(" ({pmu})")
        };
        let on = match &e.context {
            PerfContext::Cpu(cpu) => format!("CPU {cpu}"),
            PerfContext::Task(tid, comm) => format!("task {tid} ({})", guest_str(comm)),
        };
        let finding = Finding::new(
            NAME,
            owner.hook_severity(),
            format!("{NAME}:{:#x}:{:#x}", e.at.0, h.0),
            format!(
                "perf event {:#x}{of} on {on} calls its overflow handler at {:#x} in {owner}, not kernel text: code runs on every sample or breakpoint hit",
                e.at.0, h.0
            ),
        )
        .addr("event", e.at.0)
        .text("pmu", pmu)
        .addr("overflow_handler", h.0)
        .text("owner", owner.to_string());
        let finding = match &e.context {
            PerfContext::Cpu(cpu) => finding.num("cpu", u64::from(*cpu)),
            PerfContext::Task(tid, comm) => finding
                .num("tid", u64::from(*tid))
                .text("comm", guest_str(comm)),
        };
        findings.push(finding);
    }
    Ok(findings)
}
