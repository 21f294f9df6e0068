//! `netfilter`: every netfilter hook of every network namespace must be kernel text.
//!
//! `nf_register_net_hook` lets a module see (and drop, change or steal) every packet
//! of a namespace at a hook point: rootkits use it for magic-packet backdoors and to
//! hide their traffic. The kernel's own users (iptables/nftables chains, conntrack,
//! NAT, bridge filtering) are kernel text or listed modules of the kernel's; a hook
//! anywhere else is reported with its namespace (`init_net` named), protocol family,
//! hook point, priority (from the registered `nf_hook_ops`) and the module that owns
//! it: medium when a listed module does (a firewall module registers hooks openly),
//! high otherwise. See [`vmi_core::kernel::netfilter`].

use vmi_core::memory::PhysicalMemory;

use crate::checks::{CheckFailure, Scan};
use crate::finding::Finding;

const NAME: &str = "netfilter";

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    scan.kernel.text_range()?;
    let init_net = scan.kernel.symbol("init_net").ok();
    let mut findings = Vec::new();
    for h in scan.kernel.netfilter_hooks(scan.namespaces()?)? {
        if scan.owners.in_text(h.hook) {
            continue;
        }
        let owner = scan.owners.owner(h.hook);
        let point = h.family.hook_point(h.hooknum);
        let net = if Some(h.net) == init_net {
            "init_net".to_string()
        } else {
            format!("the namespace at {:#x}", h.net.0)
        };
        let priority = h
            .ops
            .map(|o| format!(", priority {}", o.priority))
            .unwrap_or_default();
        let mut f = Finding::new(
            NAME,
            owner.hook_severity(),
            format!(
                "{NAME}:{:#x}:{}:{}:{:#x}",
                h.net.0,
                h.family.name(),
                h.hooknum,
                h.hook.0
            ),
            format!(
                "netfilter hook at {:#x} in {owner}, not kernel text, sees every {} packet at {point} of {net}{priority}",
                h.hook.0,
                h.family.name()
            ),
        )
        .addr("net", h.net.0)
        .text("namespace", if net == "init_net" { net.as_str() } else { "other" })
        .text("family", h.family.name())
        .text("hook_point", point)
        .num("hooknum", u64::from(h.hooknum))
        .num("index", h.index as u64)
        .addr("hook", h.hook.0)
        .addr("priv", h.priv_data.0)
        .addr("entries", h.entries.0)
        .text("owner", owner.to_string());
        if let Some(o) = h.ops {
            f = f
                .addr("nf_hook_ops", o.at.0)
                .text("priority", o.priority.to_string())
                .num("pf", u64::from(o.pf));
        }
        findings.push(f);
    }
    Ok(findings)
}
