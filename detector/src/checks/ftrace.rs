//! `ftrace`: every registered `ftrace_ops` must call back into kernel text.
//!
//! An ftrace hook (the `ftrace_helper.h` technique of current rootkits) registers an
//! `ftrace_ops` whose callback runs on entry to the functions of its filter, typically
//! system call handlers, and may redirect them. The kernel's own users (function
//! tracer, kprobes on ftrace, livepatch, BPF) call back into kernel text; a callback
//! (`func`, the registered `saved_func`, or a direct-call target) anywhere else is
//! reported with the module that owns it (also one hidden from the modules list), or
//! as unknown, hidden code when no module does, and with every function the ops hooks
//! (`every function` for an empty filter). See [`vmi_core::kernel::ftrace`].

use vmi_core::kernel::ftrace::{Filter, FtraceOps};
use vmi_core::memory::PhysicalMemory;
use vmi_core::Va;

use crate::checks::{needed, CheckFailure, Scan};
use crate::finding::Finding;

const NAME: &str = "ftrace";
/// Hooked functions named in a finding; more are counted.
const NAMED: usize = 16;

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    // without the text range every callback would look foreign
    scan.kernel.text_range()?;
    let mut findings = Vec::new();
    for ops in needed(&scan.ftrace, "the ftrace_ops list")? {
        let Some((role, target)) = foreign_callback(scan, ops) else {
            continue;
        };
        let owner = scan.owners.owner(target);
        let (hooked, count) = hooked(scan, ops);
        let mut f = Finding::new(
            NAME,
            owner.hook_severity(),
            format!("{NAME}:{:#x}:{:#x}", ops.addr.0, target.0),
            format!(
                "ftrace_ops at {:#x} calls {:#x} in {owner}, not kernel text, on entry to {}: kernel functions are hooked through ftrace",
                ops.addr.0,
                target.0,
                match count {
                    None => "every function".to_string(),
                    Some(1) => hooked.clone(),
                    Some(n) => format!("{n} functions ({hooked})"),
                }
            ),
        )
        .addr("ftrace_ops", ops.addr.0)
        .addr("callback", target.0)
        .text("callback_role", role)
        .text("owner", owner.to_string())
        .text("hooked", hooked)
        .num("hooked_count", count.unwrap_or(0) as u64)
        .text("flags", ops.flag_names());
        if ops.func != target {
            f = f.addr("func", ops.func.0);
        }
        if ops.trampoline.0 != 0 {
            f = f
                .addr("trampoline", ops.trampoline.0)
                .num("trampoline_size", ops.trampoline_size);
        }
        findings.push(f);
    }
    Ok(findings)
}

/// The first callback of `ops` outside kernel text, with its role.
fn foreign_callback<M: PhysicalMemory>(
    scan: &Scan<'_, M>,
    ops: &FtraceOps,
) -> Option<(&'static str, Va)> {
    let mut callbacks = vec![("func", ops.func), ("saved_func", ops.saved_func)];
    if let Some(d) = ops.direct_call {
        callbacks.push(("direct_call", d));
    }
    if let Filter::Functions(entries) = &ops.filter {
        callbacks.extend(entries.iter().map(|e| ("direct", e.direct)));
    }
    callbacks
        .into_iter()
        .find(|(_, v)| v.0 != 0 && !scan.owners.in_text(*v))
}

/// The hooked functions by name (at most [`NAMED`]) and their number (`None`: every
/// function).
fn hooked<M: PhysicalMemory>(scan: &Scan<'_, M>, ops: &FtraceOps) -> (String, Option<usize>) {
    let entries = match &ops.filter {
        Filter::All => {
            let s = if ops.notrace > 0 {
                format!("every function but {} (notrace)", ops.notrace)
            } else {
                "every function".into()
            };
            return (s, None);
        }
        Filter::Functions(e) => e,
    };
    let mut names: Vec<String> = entries
        .iter()
        .take(NAMED)
        .map(|e| {
            scan.function_name(e.ip)
                .unwrap_or_else(|| format!("{:#x} ({})", e.ip.0, scan.owners.owner(e.ip)))
        })
        .collect();
    names.sort();
    if entries.len() > NAMED {
        names.push(format!("and {} more", entries.len() - NAMED));
    }
    (names.join(", "), Some(entries.len()))
}

#[cfg(test)]
mod tests {
    use crate::checks::synthetic::{assert_fails, ev, ev_addr, run, single, system};
    use crate::checks::{Check, CheckFailure};
    use crate::finding::Severity;

    const CHECK: Check = Check::Ftrace;

    #[test]
    fn clean_with_the_kernel_s_own_tracer() {
        let mut s = system();
        let tracer = s.sk.kernel_fn();
        s.sk.add_ftrace_ops(tracer, &[]);
        assert!(run(s.sk, CHECK).is_empty());
    }

    #[test]
    fn a_callback_in_a_listed_module_is_medium_with_what_it_hooks() {
        let mut s = system();
        let victim = s.sk.kernel_fn();
        let cb = s.e1000.code(0x80);
        let ops = s.sk.add_ftrace_ops(cb, &[victim]);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::Medium);
        assert_eq!(f.key, format!("ftrace:{:#x}:{:#x}", ops.0, cb.0));
        assert_eq!(ev(f, "owner"), "module e1000");
        assert_eq!(ev(f, "callback_role"), "func");
        assert_eq!(ev(f, "hooked_count"), "1");
        assert_eq!(ev(f, "hooked"), format!("{:#x} (kernel text)", victim.0));
    }

    #[test]
    fn a_callback_of_a_hidden_module_on_every_function_is_high() {
        let mut s = system();
        let rk = s.sk.add_module(b"rk", 0x1000);
        s.sk.hide_module(&rk);
        let ops = s.sk.add_ftrace_ops(rk.code(0), &[]);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(ev(f, "owner"), "hidden module rk");
        assert_eq!(ev(f, "hooked"), "every function");
        assert_eq!(ev_addr(f, "ftrace_ops"), ops.0);
    }

    #[test]
    fn an_ops_list_cycle_is_an_error() {
        let mut s = system();
        let f = s.sk.kernel_fn();
        let ops = s.sk.add_ftrace_ops(f, &[]);
        s.sk.set(ops, "ftrace_ops", "next", ops.0);
        assert_fails!(s.sk, CHECK, CheckFailure::Walk { walk: "the ftrace_ops list", error } if error.contains("loops back"));
    }
}
