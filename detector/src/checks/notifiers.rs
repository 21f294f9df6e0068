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
