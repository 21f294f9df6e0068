//! Network namespaces and their netfilter hooks.
//!
//! Every `struct net` is on `net_namespace_list` (its `list`). Each keeps, per protocol
//! family, one pointer per hook point to a `struct nf_hook_entries` (`net->nf`, a
//! `struct netns_nf`: `hooks_ipv4[NF_INET_NUMHOOKS]`, `hooks_ipv6[...]`,
//! `hooks_arp[NF_ARP_NUMHOOKS]`, `hooks_bridge[...]`; the array lengths come from the
//! profile). An `nf_hook_entries` is `num_hook_entries` (u16), then `hooks[]` of
//! `struct nf_hook_entry { hook, priv }` in call order, then the trailer
//! `const struct nf_hook_ops *orig_ops[num_hook_entries]`: what was registered, with its
//! priority. `nf_register_net_hook` rebuilds the blob; the packet path calls every
//! `hook` of the blob of its hook point.
//!
//! Fields used: `net.list`, `net.nf`, `netns_nf.hooks_ipv4` (`hooks_ipv6`, `hooks_arp`,
//! `hooks_bridge` where the kernel has them), `nf_hook_entries.num_hook_entries`,
//! `.hooks`, `nf_hook_entry.hook`, `.priv`, `nf_hook_ops.hook`, `.pf`, `.hooknum`,
//! `.priority`. Symbols: `net_namespace_list`.
//!
//! Bounds: at most [`MAX_NETNS`] namespaces, [`MAX_HOOK_COUNT`] hooks per hook point
//! (the kernel's own limit) and [`MAX_NF_HOOKS`] hooks in all; a
//! namespace seen twice is a [`KernelError::Cycle`].

use crate::addr::Va;
use crate::kernel::layout::array_len;
use crate::kernel::objects::{is_kernel_va, read_err, u32_at, u64_at, walk_list};
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};
use crate::profile::Profile;

/// Most network namespaces walked.
pub const MAX_NETNS: usize = 1 << 14;
/// Most netfilter hooks read, every namespace and hook point together.
pub const MAX_NF_HOOKS: usize = 1 << 16;
/// Longest hook array of one family taken from a profile.
const MAX_HOOK_POINTS: u64 = 16;
/// The kernel's `MAX_HOOK_COUNT` (net/netfilter/core.c): `nf_hook_entries_grow` refuses
/// more hooks on one hook point, so a larger `num_hook_entries` is no kernel's.
pub const MAX_HOOK_COUNT: usize = 1024;

/// A protocol family with per-namespace hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `NFPROTO_IPV4` (`hooks_ipv4`).
    Ipv4,
    /// `NFPROTO_IPV6` (`hooks_ipv6`).
    Ipv6,
    /// `NFPROTO_ARP` (`hooks_arp`).
    Arp,
    /// `NFPROTO_BRIDGE` (`hooks_bridge`).
    Bridge,
}

impl Family {
    /// Every family, in the order read.
    pub const ALL: [Family; 4] = [Family::Ipv4, Family::Ipv6, Family::Arp, Family::Bridge];

    /// `ipv4`, `ipv6`, `arp`, `bridge`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
            Family::Arp => "arp",
            Family::Bridge => "bridge",
        }
    }

    /// The `netns_nf` member of its hook array.
    pub fn member(self) -> &'static str {
        match self {
            Family::Ipv4 => "hooks_ipv4",
            Family::Ipv6 => "hooks_ipv6",
            Family::Arp => "hooks_arp",
            Family::Bridge => "hooks_bridge",
        }
    }

    /// The name of hook point `n` (`NF_INET_LOCAL_IN`, `NF_ARP_OUT`, `NF_BR_FORWARD`).
    pub fn hook_point(self, n: u32) -> String {
        const INET: [&str; 5] = [
            "NF_INET_PRE_ROUTING",
            "NF_INET_LOCAL_IN",
            "NF_INET_FORWARD",
            "NF_INET_LOCAL_OUT",
            "NF_INET_POST_ROUTING",
        ];
        const ARP: [&str; 3] = ["NF_ARP_IN", "NF_ARP_OUT", "NF_ARP_FORWARD"];
        const BR: [&str; 6] = [
            "NF_BR_PRE_ROUTING",
            "NF_BR_LOCAL_IN",
            "NF_BR_FORWARD",
            "NF_BR_LOCAL_OUT",
            "NF_BR_POST_ROUTING",
            "NF_BR_BROUTING",
        ];
        let names: &[&str] = match self {
            Family::Ipv4 | Family::Ipv6 => &INET,
            Family::Arp => &ARP,
            Family::Bridge => &BR,
        };
        names
            .get(n as usize)
            .map(|s| s.to_string())
            .unwrap_or_else(|| format!("hook {n}"))
    }
}

crate::kernel_layout! {
    /// The list of network namespaces.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct NetNsLayout(p) {
        /// `net.list` (on `net_namespace_list`)
        pub list: u64 = "net" ["list"],
    }
    symbols [
        ["net_namespace_list"],
        // the initial namespace (the detector's netfilter and afinfo checks)
        ["init_net"],
    ]
}

crate::kernel_layout! {
    /// Offsets the walk uses.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct NetfilterLayout(p) {
        /// `nf_hook_entries.num_hook_entries`
        pub num: u64 = "nf_hook_entries" ["num_hook_entries"],
        /// `nf_hook_entries.hooks`
        pub hooks: u64 = "nf_hook_entries" ["hooks"],
        /// `nf_hook_entry.hook`
        pub entry_hook: u64 = "nf_hook_entry" ["hook"],
        /// `nf_hook_entry.priv`
        pub entry_priv: u64 = "nf_hook_entry" ["priv"],
        /// `net.nf`
        pub net_nf: u64 = "net" ["nf"],
        /// `nf_hook_ops.hook`
        pub ops_hook: u64 = "nf_hook_ops" ["hook"],
        /// `nf_hook_ops.pf`
        pub ops_pf: u64 = "nf_hook_ops" ["pf"],
        /// `nf_hook_ops.hooknum`
        pub ops_hooknum: u64 = "nf_hook_ops" ["hooknum"],
        /// `nf_hook_ops.priority`
        pub ops_priority: u64 = "nf_hook_ops" ["priority"],
    }
    computed {
        /// `net.nf` + the family's `netns_nf.hooks_*` (see [`Family::member`]), and its
        /// number of hook points; a family the kernel lacks is left out.
        pub families: Vec<(Family, u64, u64)> = netns_families(p, net_nf)?,
        /// `sizeof(struct nf_hook_entry)`
        pub entry_size: u64 = p
            .types
            .get("nf_hook_entry")
            .map(|t| t.size)
            .filter(|&s| (16..=64).contains(&s))
            .ok_or_else(|| KernelError::MissingField("nf_hook_entry (its size)".into()))?,
    }
    also [
        // the families' hook arrays, read by `netns_families` (`Family::member`)
        "netns_nf" ["hooks_ipv4"],
        opt "netns_nf" ["hooks_ipv6"],
        opt "netns_nf" ["hooks_arp"],
        opt "netns_nf" ["hooks_bridge"],
    ]
}

/// The `nf_hook_ops` a hook was registered with (from the blob's `orig_ops` trailer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NfHookOps {
    /// The `struct nf_hook_ops`.
    pub at: Va,
    /// Its `hook`.
    pub hook: Va,
    /// `pf` (`NFPROTO_*`).
    pub pf: u8,
    /// `hooknum`.
    pub hooknum: u32,
    /// `priority`.
    pub priority: i32,
}

/// One hook the kernel calls at a hook point of a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfHook {
    /// The `struct net`.
    pub net: Va,
    /// The protocol family.
    pub family: Family,
    /// The hook point (`NF_INET_LOCAL_IN` is 1).
    pub hooknum: u32,
    /// Its place in call order.
    pub index: usize,
    /// The `struct nf_hook_entries`.
    pub entries: Va,
    /// `hook`: what the kernel calls.
    pub hook: Va,
    /// `priv`: its argument.
    pub priv_data: Va,
    /// The registered ops, when the trailer names readable ones.
    pub ops: Option<NfHookOps>,
}

/// `net.nf` + the family's `netns_nf.hooks_*`, and its number of hook points, for each
/// family the kernel has (IPv4 is required).
fn netns_families(p: &Profile, nf: u64) -> Result<Vec<(Family, u64, u64)>, KernelError> {
    let mut families = Vec::new();
    for fam in Family::ALL {
        let Some(f) = p.field("netns_nf", fam.member()) else {
            if fam == Family::Ipv4 {
                return Err(KernelError::MissingField("netns_nf.hooks_ipv4".into()));
            }
            continue;
        };
        let n = array_len(&f.ty)
            .filter(|&n| (1..=MAX_HOOK_POINTS).contains(&n))
            .ok_or_else(|| {
                KernelError::MissingField(format!("netns_nf.{} (its length)", fam.member()))
            })?;
        families.push((fam, nf + f.offset, n));
    }
    Ok(families)
}

impl<M: PhysicalMemory> Kernel<M> {
    /// Every network namespace (`struct net`) on `net_namespace_list`.
    pub fn net_namespaces(&self) -> Result<Vec<Va>, KernelError> {
        let l = NetNsLayout::from_profile(&self.profile)?;
        walk_namespaces(&self.space, self.symbol("net_namespace_list")?, l.list)
    }

    /// Every netfilter hook of the namespaces `nets`.
    pub fn netfilter_hooks(&self, nets: &[Va]) -> Result<Vec<NfHook>, KernelError> {
        let l = NetfilterLayout::from_profile(&self.profile)?;
        walk_hooks(&self.space, &l, nets)
    }
}

/// The `struct net`s on the list at `head` (linked through `net.list` at `list`).
pub fn walk_namespaces<V: VirtualMemory + ?Sized>(
    mem: &V,
    head: Va,
    list: u64,
) -> Result<Vec<Va>, KernelError> {
    let mut out = Vec::new();
    walk_list(mem, head, "net_namespace_list", MAX_NETNS, |node| {
        out.push(Va(node.0.wrapping_sub(list)));
        Ok(())
    })?;
    Ok(out)
}

/// Read the hooks of every family and hook point of the namespaces `nets`.
pub fn walk_hooks<V: VirtualMemory + ?Sized>(
    mem: &V,
    l: &NetfilterLayout,
    nets: &[Va],
) -> Result<Vec<NfHook>, KernelError> {
    let mut out = Vec::new();
    for &net in nets {
        for &(family, off, n) in &l.families {
            let ptrs = mem
                .read_bytes(Va(net.0.wrapping_add(off)), n as usize * 8)
                .map_err(read_err("netns_nf hook array"))?;
            for hooknum in 0..n {
                let entries = u64_at(&ptrs, hooknum * 8);
                if entries == 0 {
                    continue;
                }
                if !is_kernel_va(entries) {
                    return Err(KernelError::BadPointer {
                        what: "netns_nf hook array entry",
                        value: entries,
                    });
                }
                read_entries(mem, l, &mut out, net, family, hooknum as u32, Va(entries))?;
            }
        }
    }
    Ok(out)
}

fn read_entries<V: VirtualMemory + ?Sized>(
    mem: &V,
    l: &NetfilterLayout,
    out: &mut Vec<NfHook>,
    net: Va,
    family: Family,
    hooknum: u32,
    entries: Va,
) -> Result<(), KernelError> {
    let num = mem
        .read_bytes(Va(entries.0.wrapping_add(l.num)), 2)
        .map_err(read_err("nf_hook_entries.num_hook_entries"))?;
    let num = u16::from_le_bytes([num[0], num[1]]) as usize;
    if num > MAX_HOOK_COUNT {
        return Err(KernelError::Corrupt {
            what: format!(
                "nf_hook_entries.num_hook_entries is {num}, above the kernel's limit of {MAX_HOOK_COUNT} hooks per hook point"
            ),
            at: entries,
        });
    }
    if out.len() + num > MAX_NF_HOOKS {
        return Err(KernelError::TooLong {
            what: "netfilter hooks",
            max: MAX_NF_HOOKS,
        });
    }
    if num == 0 {
        return Ok(());
    }
    let hooks_at = entries.0.wrapping_add(l.hooks);
    let b = mem
        .read_bytes(Va(hooks_at), num * l.entry_size as usize)
        .map_err(read_err("nf_hook_entries.hooks"))?;
    // the orig_ops trailer: evidence (priorities), not structure
    let orig = mem
        .read_bytes(
            Va(hooks_at.wrapping_add(num as u64 * l.entry_size)),
            num * 8,
        )
        .ok();
    for i in 0..num {
        let e = i as u64 * l.entry_size;
        let ops = orig
            .as_ref()
            .map(|o| u64_at(o, i as u64 * 8))
            .and_then(|p| read_ops(mem, l, p));
        out.push(NfHook {
            net,
            family,
            hooknum,
            index: i,
            entries,
            hook: Va(u64_at(&b, e + l.entry_hook)),
            priv_data: Va(u64_at(&b, e + l.entry_priv)),
            ops,
        });
    }
    Ok(())
}

fn read_ops<V: VirtualMemory + ?Sized>(mem: &V, l: &NetfilterLayout, at: u64) -> Option<NfHookOps> {
    if !is_kernel_va(at) {
        return None;
    }
    let span = [l.ops_hook, l.ops_pf, l.ops_hooknum, l.ops_priority]
        .into_iter()
        .max()
        .unwrap_or(0)
        + 8;
    let b = mem.read_bytes(Va(at), span as usize).ok()?;
    Some(NfHookOps {
        at: Va(at),
        hook: Va(u64_at(&b, l.ops_hook)),
        pf: b.get(l.ops_pf as usize).copied().unwrap_or(0),
        hooknum: u32_at(&b, l.ops_hooknum),
        priority: u32_at(&b, l.ops_priority) as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::objects::tests::Flat;

    const BASE: u64 = 0xffff_8880_0000_0000;

    /// 6.1's offsets: net.list 32, net.nf 2616 (+104 ipv4, +144 ipv6, +184 arp).
    fn layout() -> NetfilterLayout {
        NetfilterLayout {
            families: vec![
                (Family::Ipv4, 2616 + 104, 5),
                (Family::Ipv6, 2616 + 144, 5),
                (Family::Arp, 2616 + 184, 3),
            ],
            num: 0,
            hooks: 8,
            entry_hook: 0,
            entry_priv: 8,
            entry_size: 16,
            net_nf: 2616,
            ops_hook: 16,
            ops_pf: 40,
            ops_hooknum: 44,
            ops_priority: 48,
        }
    }

    fn put(m: &mut Flat, at: u64, v: u64) {
        m.put(at, &v.to_le_bytes());
    }

    /// The list head at BASE; two namespaces at 0x1000 and 0x3000. The first has two
    /// hooks on ipv4 LOCAL_IN (blob at 0x6000, ops at 0x6100, 0x6200), the second one
    /// on arp OUT whose trailer is null.
    fn guest() -> Flat {
        let mut m = Flat::new(BASE, 0x8000);
        let (n1, n2) = (BASE + 0x1000, BASE + 0x3000);
        put(&mut m, BASE, n1 + 32);
        put(&mut m, n1 + 32, n2 + 32);
        put(&mut m, n2 + 32, BASE);
        let blob = BASE + 0x6000;
        put(&mut m, n1 + 2616 + 104 + 8, blob);
        m.put(blob, &2u16.to_le_bytes());
        put(&mut m, blob + 8, 0xffff_ffff_8110_0000);
        put(&mut m, blob + 24, 0xffff_ffff_c000_1000);
        put(&mut m, blob + 32, BASE + 0x7000);
        put(&mut m, blob + 40, BASE + 0x6100);
        put(&mut m, blob + 48, BASE + 0x6200);
        put(&mut m, BASE + 0x6200 + 16, 0xffff_ffff_c000_1000);
        m.put(BASE + 0x6200 + 40, &[2]);
        m.put(BASE + 0x6200 + 44, &1u32.to_le_bytes());
        m.put(BASE + 0x6200 + 48, &(-150i32).to_le_bytes());
        let blob2 = BASE + 0x6800;
        put(&mut m, n2 + 2616 + 184 + 8, blob2);
        m.put(blob2, &1u16.to_le_bytes());
        put(&mut m, blob2 + 8, 0xffff_ffff_c000_2000);
        m
    }

    #[test]
    fn namespaces_and_their_hooks_are_read() {
        let m = guest();
        let nets = walk_namespaces(&m, Va(BASE), 32).unwrap();
        assert_eq!(nets, vec![Va(BASE + 0x1000), Va(BASE + 0x3000)]);
        let hooks = walk_hooks(&m, &layout(), &nets).unwrap();
        let got: Vec<(u64, Family, u32, usize, u64)> = hooks
            .iter()
            .map(|h| (h.net.0 - BASE, h.family, h.hooknum, h.index, h.hook.0))
            .collect();
        assert_eq!(
            got,
            vec![
                (0x1000, Family::Ipv4, 1, 0, 0xffff_ffff_8110_0000),
                (0x1000, Family::Ipv4, 1, 1, 0xffff_ffff_c000_1000),
                (0x3000, Family::Arp, 1, 0, 0xffff_ffff_c000_2000),
            ]
        );
        let ops = hooks[1].ops.unwrap();
        assert_eq!((ops.pf, ops.hooknum, ops.priority), (2, 1, -150));
        assert_eq!(ops.hook, hooks[1].hook);
        assert_eq!(hooks[1].priv_data, Va(BASE + 0x7000));
        assert_eq!(hooks[2].ops, None);
        assert_eq!(Family::Arp.hook_point(1), "NF_ARP_OUT");
        assert_eq!(Family::Ipv6.hook_point(9), "hook 9");
    }

    #[test]
    fn loops_and_wild_pointers_are_errors() {
        let mut m = guest();
        put(&mut m, BASE + 0x3000 + 32, BASE + 0x1000 + 32);
        let e = walk_namespaces(&m, Va(BASE), 32).unwrap_err();
        assert!(matches!(e, KernelError::Cycle { .. }), "{e}");
        let mut m = guest();
        put(&mut m, BASE + 0x1000 + 2616 + 144, 0x4141);
        let e = walk_hooks(&m, &layout(), &[Va(BASE + 0x1000)]).unwrap_err();
        assert!(
            matches!(e, KernelError::BadPointer { value: 0x4141, .. }),
            "{e}"
        );
        // a blob whose count runs past readable memory
        let mut m = guest();
        m.put(BASE + 0x6800, &1000u16.to_le_bytes());
        let e = walk_hooks(&m, &layout(), &[Va(BASE + 0x3000)]).unwrap_err();
        assert!(matches!(e, KernelError::Read { .. }), "{e}");
        // a count no kernel has: found by the guest-memory fuzzer (issue 23), a remapped
        // page under a 6.1 dump's hook blob read as 65,535 hooks per hook point, and the
        // netfilter check made as many findings (62 MiB) before they were bounded
        let mut m = guest();
        m.put(BASE + 0x6800, &1025u16.to_le_bytes());
        let e = walk_hooks(&m, &layout(), &[Va(BASE + 0x3000)]).unwrap_err();
        assert!(
            matches!(&e, KernelError::Corrupt { what, at } if what.contains("1025") && *at == Va(BASE + 0x6800)),
            "{e}"
        );
    }
}
