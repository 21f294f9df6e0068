//! `notifiers`: the callbacks of security-relevant notifier chains must be kernel text.
//!
//! A module on `keyboard_notifier_list` sees every key press (the keylogger
//! technique), one on `module_notify_list` every module load (rootkits use it to hide
//! or disarm what loads after them), others network device and address changes,
//! netlink sockets, console output, reboot, panic and die events. Many drivers
//! register notifiers openly, so a callback in a listed module is medium; one in a
//! hidden module or in no module is high. Each is reported with its chain, priority
//! and owner. See [`vmi_core::kernel::notifiers`].

use vmi_core::memory::PhysicalMemory;

use crate::checks::{CheckFailure, Scan};
use crate::finding::Finding;

const NAME: &str = "notifiers";

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    scan.kernel.text_range()?;
    let mut findings = Vec::new();
    for chain in scan.kernel.notifier_chains()? {
        for b in chain.blocks.iter().filter(|b| !scan.owners.in_text(b.call)) {
            let owner = scan.owners.owner(b.call);
            let what = match chain.name {
                "keyboard_notifier_list" => ": it sees every key press (a keylogger's hook)",
                "module_notify_list" => ": it sees every module load",
                _ => "",
            };
            findings.push(
                Finding::new(
                    NAME,
                    owner.hook_severity(),
                    format!("{NAME}:{}:{:#x}:{:#x}", chain.name, b.at.0, b.call.0),
                    format!(
                        "{} calls {:#x} in {owner}, not kernel text{what}",
                        chain.name, b.call.0
                    ),
                )
                .text("chain", chain.name)
                .addr("head", chain.head.0)
                .addr("notifier_block", b.at.0)
                .addr("callback", b.call.0)
                .text("priority", b.priority.to_string())
                .text("owner", owner.to_string()),
            );
        }
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use crate::checks::synthetic::{assert_fails, ev, ev_addr, run, single, system};
    use crate::checks::{Check, CheckFailure};
    use crate::finding::Severity;

    const CHECK: Check = Check::Notifiers;

    #[test]
    fn clean_with_the_kernel_s_own_blocks_on_every_chain() {
        let mut s = system();
        for chain in vmi_core::testing::NOTIFIER_CHAINS {
            let f = s.sk.kernel_fn();
            s.sk.add_notifier(chain, f, 0);
        }
        assert!(run(s.sk, CHECK).is_empty());
    }

    #[test]
    fn a_keylogger_on_the_keyboard_chain_is_found() {
        let mut s = system();
        let own = s.sk.kernel_fn();
        s.sk.add_notifier("keyboard_notifier_list", own, 0);
        let call = s.sk.orphan_code();
        let nb = s.sk.add_notifier("keyboard_notifier_list", call, 7);
        let head = s.sk.symbol("keyboard_notifier_list");
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(
            f.key,
            format!("notifiers:keyboard_notifier_list:{:#x}:{:#x}", nb.0, call.0)
        );
        assert!(f.summary.contains("key press"), "{}", f.summary);
        assert_eq!(ev(f, "priority"), "7");
        assert_eq!(ev_addr(f, "head"), head.0);
    }

    #[test]
    fn a_listed_module_on_the_module_chain_is_medium() {
        let mut s = system();
        s.sk.add_notifier("module_notify_list", s.e1000.code(8), 0);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::Medium);
        assert_eq!(ev(f, "chain"), "module_notify_list");
    }

    #[test]
    fn a_chain_cycle_is_an_error() {
        let mut s = system();
        let f = s.sk.kernel_fn();
        let nb = s.sk.add_notifier("die_chain", f, 0);
        s.sk.set(nb, "notifier_block", "next", nb.0);
        assert_fails!(
            s.sk,
            CHECK,
            CheckFailure::Kernel(vmi_core::kernel::KernelError::Cycle { .. })
        );
    }
}
