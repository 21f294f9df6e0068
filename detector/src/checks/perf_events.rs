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

use crate::checks::{CheckFailure, Scan};
use crate::finding::{guest_str, Finding};

const NAME: &str = "perf-events";

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    scan.kernel.text_range()?;
    let procs = scan.processes()?;
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

#[cfg(test)]
mod tests {
    use crate::checks::synthetic::{assert_fails, ev, ev_addr, run, single, system};
    use crate::checks::{Check, CheckFailure};
    use crate::finding::Severity;

    const CHECK: Check = Check::PerfEvents;

    #[test]
    fn clean_with_the_kernel_s_own_handlers() {
        let mut s = system();
        let h = s.sk.kernel_fn();
        s.sk.add_perf_event(None, b"cpu", h);
        let h = s.sk.kernel_fn();
        s.sk.add_perf_event(Some(&s.bash), b"software", h);
        assert!(run(s.sk, CHECK).is_empty());
    }

    #[test]
    fn a_breakpoint_of_a_hidden_module_on_a_cpu_is_high() {
        let mut s = system();
        let rk = s.sk.add_module(b"rk", 0x1000);
        s.sk.hide_module(&rk);
        let event = s.sk.add_perf_event(None, b"breakpoint", rk.code(0x20));
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(
            f.key,
            format!("perf-events:{:#x}:{:#x}", event.0, rk.code(0x20).0)
        );
        assert_eq!(ev(f, "pmu"), "breakpoint");
        assert_eq!(ev(f, "cpu"), "0");
        assert_eq!(ev(f, "owner"), "hidden module rk");
    }

    #[test]
    fn a_task_s_event_in_a_listed_module_is_medium() {
        let mut s = system();
        let event = s.sk.add_perf_event(Some(&s.sshd), b"cpu", s.e1000.code(0));
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::Medium);
        assert_eq!(ev_addr(f, "event"), event.0);
        assert_eq!(ev(f, "tid"), "400");
        assert_eq!(ev(f, "comm"), "sshd");
    }

    #[test]
    fn a_context_list_cycle_and_a_wild_context_are_errors() {
        let mut s = system();
        let h = s.sk.kernel_fn();
        let event = s.sk.add_perf_event(None, b"cpu", h);
        let entry = s.sk.field_va(event, "perf_event", "event_entry");
        s.sk.write_u64(entry, entry.0);
        assert_fails!(
            s.sk,
            CHECK,
            CheckFailure::Kernel(vmi_core::kernel::KernelError::Cycle { .. })
        );

        let mut s = system();
        s.sk.set(s.bash.task, "task_struct", "perf_event_ctxp", 0x7f00_0000);
        assert_fails!(
            s.sk,
            CHECK,
            CheckFailure::Kernel(vmi_core::kernel::KernelError::BadPointer { .. })
        );
    }
}
