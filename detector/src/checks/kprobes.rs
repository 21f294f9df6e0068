//! `kprobes`: every registered kprobe and kretprobe must run handlers in kernel text.
//!
//! A kprobe runs its `pre_handler` (and `post_handler`) whenever the probed instruction
//! executes and may change the registers, the return value included; a kretprobe runs
//! its `handler` when the probed function returns. Rootkits use them to hook functions
//! without writing a table or a byte of text themselves. The kernel's own users (perf
//! and trace kprobe events, BPF) dispatch from kernel text; a handler anywhere else is
//! reported with the probed function, the name the probe was registered with and the
//! module that owns the handler (also one hidden from the modules list), or as unknown,
//! hidden code when no module does. Probes sharing an address sit under an aggregate
//! probe of the kernel's and are each reported. See [`vmi_core::kernel::kprobes`].

use vmi_core::kernel::kprobes::ProbeKind;
use vmi_core::memory::PhysicalMemory;

use crate::checks::{CheckFailure, Scan};
use crate::finding::{guest_str, Finding};

const NAME: &str = "kprobes";

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    scan.kernel.text_range()?;
    let mut findings = Vec::new();
    for p in scan.kernel.kprobes()? {
        let handlers = p.handlers();
        let Some(&(role, target)) = handlers.iter().find(|(_, v)| !scan.owners.in_text(*v)) else {
            continue;
        };
        let owner = scan.owners.owner(target);
        let kind = match p.kind {
            ProbeKind::Kprobe => "kprobe",
            ProbeKind::Aggregate => "aggregate kprobe",
            ProbeKind::Kretprobe { .. } => "kretprobe",
        };
        let function = scan
            .function_name(p.addr)
            .unwrap_or_else(|| format!("{:#x} ({})", p.addr.0, scan.owners.owner(p.addr)));
        let mut f = Finding::new(
            NAME,
            owner.hook_severity(),
            format!("{NAME}:{:#x}:{:#x}", p.at.0, target.0),
            format!(
                "{kind} on {function} runs its {role} at {:#x} in {owner}, not kernel text: the function is hooked through kprobes",
                target.0
            ),
        )
        .text("kind", kind)
        .addr("kprobe", p.at.0)
        .addr("address", p.addr.0)
        .text("function", function)
        .text("owner", owner.to_string());
        if !p.symbol_name.is_empty() {
            f = f
                .text("symbol_name", guest_str(&p.symbol_name))
                .num("offset", u64::from(p.offset));
        }
        for (role, v) in &handlers {
            f = f.addr(role, v.0);
        }
        if let ProbeKind::Kretprobe { kretprobe, .. } = p.kind {
            f = f.addr("kretprobe", kretprobe.0);
        }
        if let Some(parent) = p.parent {
            f = f.addr("aggregate", parent.0);
        }
        findings.push(f.text("flags", p.flag_names()));
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use crate::checks::synthetic::{assert_fails, ev, ev_addr, run, single, system};
    use crate::checks::{Check, CheckFailure};
    use crate::finding::Severity;

    const CHECK: Check = Check::Kprobes;

    #[test]
    fn clean_with_a_probe_of_the_kernel_s_own() {
        let mut s = system();
        let (at, handler) = (s.sk.kernel_fn(), s.sk.kernel_fn());
        s.sk.add_kprobe(at, b"vfs_read", handler);
        assert!(run(s.sk, CHECK).is_empty());
    }

    #[test]
    fn a_kprobe_handler_in_a_module_is_found_with_its_symbol() {
        let mut s = system();
        let at = s.sk.kernel_fn();
        let handler = s.e1000.code(0x200);
        let kp = s.sk.add_kprobe(at, b"filldir64", handler);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::Medium);
        assert_eq!(f.key, format!("kprobes:{:#x}:{:#x}", kp.0, handler.0));
        assert_eq!(ev(f, "kind"), "kprobe");
        assert_eq!(ev(f, "symbol_name"), "filldir64");
        assert_eq!(ev_addr(f, "address"), at.0);
        assert_eq!(ev_addr(f, "pre_handler"), handler.0);
        assert_eq!(ev(f, "owner"), "module e1000");
    }

    #[test]
    fn a_kretprobe_handler_in_no_module_is_high() {
        let mut s = system();
        let at = s.sk.kernel_fn();
        let handler = s.sk.orphan_code();
        let rp = s.sk.add_kretprobe(at, b"tcp4_seq_show", handler);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(ev(f, "kind"), "kretprobe");
        assert_eq!(ev_addr(f, "kretprobe"), rp.0);
        assert_eq!(ev_addr(f, "handler"), handler.0);
        assert_eq!(ev(f, "owner"), "module area, no known module (hidden)");
    }

    #[test]
    fn a_bucket_cycle_is_an_error() {
        let mut s = system();
        let (at, handler) = (s.sk.kernel_fn(), s.sk.kernel_fn());
        let kp = s.sk.add_kprobe(at, b"x", handler);
        let node = s.sk.field_va(kp, "kprobe", "hlist");
        s.sk.write_u64(node, node.0);
        assert_fails!(
            s.sk,
            CHECK,
            CheckFailure::Kernel(vmi_core::kernel::KernelError::Cycle { .. })
        );
    }
}
