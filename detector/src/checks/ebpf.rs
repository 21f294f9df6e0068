//! `ebpf`: loaded BPF programs of the types the policy lists.
//!
//! A BPF program attached to a kprobe, a tracepoint, a perf event, a kernel
//! function's entry or exit (fentry/fexit, fmod_ret), an LSM hook or a kernel
//! operations table runs kernel-verified code on every hit: it reads kernel memory,
//! writes user memory (`bpf_probe_write_user`), changes return values
//! (`bpf_override_return`, fmod_ret) or security decisions (LSM). eBPF rootkits
//! (ebpfkit, TripleCross, boopkit) are such programs: no module, no changed text or
//! table, nothing the other checks compare. This check lists every program of
//! `prog_idr` whose type (or type and expected attach type) the policy lists
//! ([`crate::policy::DEFAULT_EBPF_TYPES`] without a policy), unless the policy allows
//! it by name or tag, with what it is attached to: its links (a raw tracepoint's name,
//! the link type), the perf events that run it (the PMU, the kprobe's function or the
//! tracepoint, the process that opened the event) and its BTF attach function.
//!
//! Perf events are read from their owners' `perf_event_list`s, as Volatility's
//! `linux.tracing.perf_events` reads them, and reported here as the attach points of
//! the programs they carry rather than as a check of their own: the program is the
//! hook, the event how it is attached, and one finding per hook keeps an allowed
//! program allowed whichever way it is attached. Severity: high for programs that
//! decide rather than observe (LSM, fmod_ret, writable raw tracepoints, freplace,
//! struct_ops), medium for the others. See [`vmi_core::kernel::bpf`].

use vmi_core::kernel::bpf::{Attachment, BpfProgram, BpfView};
use vmi_core::memory::PhysicalMemory;

use crate::checks::{CheckFailure, Scan};
use crate::finding::{guest_str, Finding, Severity};
use crate::policy::Policy;

const NAME: &str = "ebpf";

/// What a program of this type (and expected attach type) can do, and how bad that
/// is.
pub fn capability(p: &BpfProgram) -> (Severity, &'static str) {
    match (p.type_name().as_str(), p.attach_type_name().as_str()) {
        ("lsm", _) => (Severity::High, "it decides an LSM hook: it can deny or grant what the kernel's security checks decide"),
        ("tracing", "modify_return") => (Severity::High, "it runs at a kernel function's exit and can change its return value"),
        ("raw_tracepoint_writable", _) => (Severity::High, "it can write the arguments of the tracepoint it runs on"),
        ("ext", _) => (Severity::High, "it replaces a function of another BPF program"),
        ("struct_ops", _) => (Severity::High, "it implements kernel operations (a TCP congestion control, a scheduler, ...)"),
        ("kprobe", _) => (Severity::Medium, "it runs on every hit of the probed function, reads kernel memory and can write user memory or override the function's result"),
        ("tracing", _) => (Severity::Medium, "it runs at a kernel function's entry or exit, reads kernel memory and can write user memory"),
        _ => (Severity::Medium, "it runs whenever its event fires, reads kernel memory and can write user memory"),
    }
}

/// The attach points of `p`, as text: `link 3 raw_tracepoint sys_enter`, `perf event
/// kprobe vfs_read (pid 7 loader)`, `function security_bprm_check`.
pub fn attach_points(view: &BpfView, p: &BpfProgram) -> Vec<String> {
    let mut out: Vec<String> = view
        .attachments(p.at)
        .into_iter()
        .map(|a| match a {
            Attachment::Link(l) => {
                let mut s = format!("link {} {}", l.id, l.type_name());
                if !l.target.is_empty() {
                    s.push(' ');
                    s.push_str(&guest_str(&l.target));
                }
                s
            }
            Attachment::PerfEvent(e) => {
                let mut s = format!("perf event {}", guest_str(&e.pmu));
                if !e.event.is_empty() {
                    s.push(' ');
                    s.push_str(&guest_str(&e.event));
                }
                s.push_str(&format!(" (pid {} {})", e.pid, guest_str(&e.comm)));
                s
            }
        })
        .collect();
    if !p.attach_func_name.is_empty() {
        out.push(format!("function {}", guest_str(&p.attach_func_name)));
    }
    out
}

/// Run the check with `policy` (the default policy without one).
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    let default = Policy::default();
    let policy = scan.settings.policy.as_ref().unwrap_or(&default);
    let procs = scan.processes()?;
    let view = scan.kernel.bpf(procs)?;
    let mut findings = Vec::new();
    for p in &view.programs {
        let (ty, attach) = (p.type_name(), p.attach_type_name());
        let tag = p.tag_hex();
        if !policy.ebpf_type_listed(&ty, &attach) || policy.ebpf_allowed(&p.name, &tag).is_some() {
            continue;
        }
        let (severity, what) = capability(p);
        let name = guest_str(&p.name);
        let points = attach_points(&view, p);
        let on = if points.is_empty() {
            "loaded, attached to nothing the kernel lists".to_string()
        } else {
            format!("attached to {}", points.join(", "))
        };
        let mut f = Finding::new(
            NAME,
            severity,
            format!("{NAME}:{}:{tag}", p.id),
            format!(
                "BPF program {} {name:?} ({}, tag {tag}) is {on}: {what}",
                p.id,
                p.kind()
            ),
        )
        .num("id", u64::from(p.id))
        .text("type", ty)
        .text("name", name)
        .text("tag", tag)
        .addr("program", p.at.0)
        .addr("image", p.image.0)
        .num("jited_len", u64::from(p.jited_len))
        .num("load_time", p.load_time)
        .text("attach", points.join("; "));
        let pids: Vec<String> = view
            .perf_events
            .iter()
            .filter(|e| e.prog == p.at)
            .map(|e| e.pid.to_string())
            .collect();
        if !pids.is_empty() {
            f = f.text("pids", pids.join(","));
        }
        if p.expected_attach_type != 0 {
            f = f.text("attach_type", attach);
        }
        if !p.attach_func_name.is_empty() {
            f = f.text("attach_func", guest_str(&p.attach_func_name));
        }
        if p.dst_prog.0 != 0 {
            f = f.addr("dst_prog", p.dst_prog.0);
        }
        findings.push(f);
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use crate::checks::synthetic::{assert_fails, ev, ev_addr, run, run_on, single, system};
    use crate::checks::{Check, CheckFailure, Settings};
    use crate::finding::Severity;
    use crate::policy::Policy;

    const CHECK: Check = Check::Ebpf;
    const SOCKET_FILTER: u32 = 1;
    const KPROBE: u32 = 2;
    const LSM: u32 = 29;
    const TAG: [u8; 8] = [0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3];

    #[test]
    fn clean_with_a_socket_filter() {
        let mut s = system();
        s.sk.add_bpf_prog(3, SOCKET_FILTER, b"sshd_filter", [0; 8]);
        assert!(run(s.sk, CHECK).is_empty());
    }

    #[test]
    fn a_kprobe_program_is_medium_and_an_lsm_program_high() {
        let mut s = system();
        let kp = s.sk.add_bpf_prog(7, KPROBE, b"hide_pid", TAG);
        s.sk.add_bpf_prog(9, LSM, b"deny_kill", [1; 8]);
        let findings = run(s.sk, CHECK);
        assert_eq!(findings.len(), 2, "{findings:#?}");
        let f = &findings[0];
        assert_eq!((f.check, f.severity), ("ebpf", Severity::Medium));
        assert_eq!(f.key, "ebpf:7:deadbeef00010203");
        assert_eq!(ev(f, "type"), "kprobe");
        assert_eq!(ev(f, "name"), "hide_pid");
        assert_eq!(ev_addr(f, "program"), kp.0);
        assert_eq!(findings[1].severity, Severity::High);
        assert_eq!(ev(&findings[1], "type"), "lsm");
    }

    #[test]
    fn a_program_the_policy_allows_is_not_reported() {
        let mut s = system();
        s.sk.add_bpf_prog(7, KPROBE, b"my_agent", TAG);
        let settings = Settings {
            policy: Some(Policy::parse("ebpf_allow = [\"my_agent\"]").unwrap()),
            ..Settings::default()
        };
        let findings = run_on(s.sk, &[], &settings, CHECK).unwrap();
        assert!(findings.is_empty(), "{findings:#?}");

        let mut s = system();
        s.sk.add_bpf_prog(7, KPROBE, b"other", TAG);
        let findings = run_on(s.sk, &[], &settings, CHECK).unwrap();
        single(&findings, CHECK, Severity::Medium);
    }

    #[test]
    fn a_wild_prog_idr_entry_is_an_error() {
        let mut s = system();
        let idr = s.sk.symbol("prog_idr");
        s.sk.idr_store(idr, 4, 0x4000);
        assert_fails!(
            s.sk,
            CHECK,
            CheckFailure::Kernel(vmi_core::kernel::KernelError::BadPointer { .. })
        );
    }
}
