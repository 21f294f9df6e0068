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
