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

#[cfg(test)]
mod tests {
    use crate::checks::synthetic::{assert_fails, ev, ev_addr, run, single, system};
    use crate::checks::{Check, CheckFailure};
    use crate::finding::Severity;

    const CHECK: Check = Check::Netfilter;

    #[test]
    fn clean_with_the_kernel_s_own_hooks() {
        let mut s = system();
        let init_net = s.sk.symbol("init_net");
        for hooknum in 0..5 {
            let h = s.sk.kernel_fn();
            s.sk.add_nf_hook(init_net, "hooks_ipv4", hooknum, h, 0);
        }
        let net = s.sk.add_net();
        let h = s.sk.kernel_fn();
        s.sk.add_nf_hook(net, "hooks_ipv6", 1, h, -200);
        assert!(run(s.sk, CHECK).is_empty());
    }

    #[test]
    fn a_hook_of_a_hidden_module_in_init_net_is_found_with_its_priority() {
        let mut s = system();
        let init_net = s.sk.symbol("init_net");
        let own = s.sk.kernel_fn();
        s.sk.add_nf_hook(init_net, "hooks_ipv4", 0, own, -300);
        let rk = s.sk.add_module(b"rk", 0x1000);
        s.sk.hide_module(&rk);
        let ops =
            s.sk.add_nf_hook(init_net, "hooks_ipv4", 0, rk.code(0x30), -100);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(
            f.key,
            format!("netfilter:{:#x}:ipv4:0:{:#x}", init_net.0, rk.code(0x30).0)
        );
        assert_eq!(ev(f, "namespace"), "init_net");
        assert_eq!(ev(f, "hook_point"), "NF_INET_PRE_ROUTING");
        assert_eq!(ev(f, "index"), "1");
        assert_eq!(ev(f, "priority"), "-100");
        assert_eq!(ev_addr(f, "nf_hook_ops"), ops.0);
    }

    #[test]
    fn a_hook_of_a_listed_module_in_another_namespace_is_medium() {
        let mut s = system();
        let net = s.sk.add_net();
        s.sk.add_nf_hook(net, "hooks_arp", 1, s.e1000.code(0), 0);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::Medium);
        assert_eq!(ev(f, "namespace"), "other");
        assert_eq!(ev(f, "family"), "arp");
        assert_eq!(ev(f, "hook_point"), "NF_ARP_OUT");
    }

    #[test]
    fn a_namespace_list_cycle_is_an_error() {
        let mut s = system();
        let net = s.sk.add_net();
        let list = s.sk.field_va(net, "net", "list");
        s.sk.write_u64(list, list.0);
        assert_fails!(
            s.sk,
            CHECK,
            CheckFailure::Walk {
                walk: "the net_namespace_list walk",
                ..
            }
        );
    }
}
