//! kprobes and kretprobes: every registered probe and its handlers.
//!
//! `register_kprobe` hashes a probe by its address into `kprobe_table`
//! (`KPROBE_TABLE_SIZE` = 64 `hlist_head`s, fixed since 2.6; the probe's `hlist`) and
//! arms it: an `int3` at the address, or through ftrace at a function's entry. On a
//! hit the kernel calls `pre_handler`, single-steps or emulates the instruction, then
//! calls `post_handler`. A second probe on an address already probed turns the entry
//! into an *aggregate* probe the kernel allocates (its `pre_handler` is
//! `aggr_pre_handler`) whose `list` holds the probes registered there. A kretprobe is
//! a `struct kretprobe` around its `kp`, whose `pre_handler` is
//! `pre_handler_kretprobe`; its own `handler` runs when the function returns and
//! `entry_handler` when it is entered.
//!
//! Fields used ([`KprobeLayout`]): `kprobe.hlist`, `.list`, `.addr`, `.symbol_name`,
//! `.offset`, `.pre_handler`, `.post_handler`, `.flags`, `kretprobe.kp`, `.handler`,
//! `.entry_handler`. Symbols: `kprobe_table`, `aggr_pre_handler`,
//! `pre_handler_kretprobe`.
//!
//! Bounds: at most [`MAX_KPROBES`] probes in all (aggregates' children included); a
//! probe seen twice is a [`KernelError::Cycle`].

use crate::addr::Va;
use crate::kernel::objects::{flag_names, read_err, u32_at, u64_at, walk_hlist, walk_list};
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// `KPROBE_TABLE_SIZE`.
pub const KPROBE_TABLE_SIZE: u64 = 64;
/// Most probes read.
pub const MAX_KPROBES: usize = 1 << 16;
/// Longest `symbol_name` read.
pub const MAX_SYMBOL_NAME: usize = 256;

/// `KPROBE_FLAG_*` names, bit by bit.
pub const FLAG_NAMES: [&str; 4] = ["GONE", "DISABLED", "OPTIMIZED", "FTRACE"];

crate::kernel_layout! {
    /// Offsets the walk uses.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct KprobeLayout(p) {
        /// `kprobe.hlist`
        pub hlist: u64 = "kprobe" ["hlist"],
        /// `kprobe.list`
        pub list: u64 = "kprobe" ["list"],
        /// `kprobe.addr`
        pub addr: u64 = "kprobe" ["addr"],
        /// `kprobe.symbol_name`
        pub symbol_name: u64 = "kprobe" ["symbol_name"],
        /// `kprobe.offset`
        pub offset: u64 = "kprobe" ["offset"],
        /// `kprobe.pre_handler`
        pub pre_handler: u64 = "kprobe" ["pre_handler"],
        /// `kprobe.post_handler`
        pub post_handler: u64 = "kprobe" ["post_handler"],
        /// `kprobe.flags`
        pub flags: u64 = "kprobe" ["flags"],
        /// `kretprobe.kp`
        pub kp: u64 = "kretprobe" ["kp"],
        /// `kretprobe.handler`
        pub handler: u64 = "kretprobe" ["handler"],
        /// `kretprobe.entry_handler`
        pub entry_handler: u64 = "kretprobe" ["entry_handler"],
    }
    symbols [
        ["kprobe_table"],
        ["aggr_pre_handler"],
        ["pre_handler_kretprobe"],
    ]
}

impl KprobeLayout {
    fn span(&self) -> usize {
        [
            self.hlist + 8,
            self.list + 16,
            self.addr + 8,
            self.symbol_name + 8,
            self.offset + 4,
            self.pre_handler + 8,
            self.post_handler + 8,
            self.flags + 4,
        ]
        .into_iter()
        .max()
        .unwrap_or(0) as usize
    }
}

/// What kind of probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// A plain kprobe.
    Kprobe,
    /// The kernel's aggregate of the probes on one address (its children follow it).
    Aggregate,
    /// A kretprobe.
    Kretprobe {
        /// The `struct kretprobe`.
        kretprobe: Va,
        /// `handler`: runs on return.
        handler: Va,
        /// `entry_handler`: runs on entry (0 for none).
        entry_handler: Va,
    },
}

/// A registered probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kprobe {
    /// The `struct kprobe`.
    pub at: Va,
    /// What kind.
    pub kind: ProbeKind,
    /// The aggregate probe it is registered under, if any.
    pub parent: Option<Va>,
    /// `addr`: the probed instruction.
    pub addr: Va,
    /// `symbol_name` as registered (guest bytes; empty when registered by address).
    pub symbol_name: Vec<u8>,
    /// `offset` into that symbol.
    pub offset: u32,
    /// `pre_handler` (0 for none).
    pub pre_handler: Va,
    /// `post_handler` (0 for none).
    pub post_handler: Va,
    /// `flags` (`KPROBE_FLAG_*`).
    pub flags: u32,
}

impl Kprobe {
    /// The names of the set `KPROBE_FLAG_*` flags, `|`-separated.
    pub fn flag_names(&self) -> String {
        flag_names(&FLAG_NAMES, u64::from(self.flags))
    }

    /// Every handler the probe runs (non-null), with its role.
    pub fn handlers(&self) -> Vec<(&'static str, Va)> {
        let mut out = vec![
            ("pre_handler", self.pre_handler),
            ("post_handler", self.post_handler),
        ];
        if let ProbeKind::Kretprobe {
            handler,
            entry_handler,
            ..
        } = self.kind
        {
            out.push(("handler", handler));
            out.push(("entry_handler", entry_handler));
        }
        out.retain(|(_, v)| v.0 != 0);
        out
    }
}

/// The handlers that mark an aggregate probe and a kretprobe (relocated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KprobeMarkers {
    /// `aggr_pre_handler`
    pub aggr_pre_handler: Va,
    /// `pre_handler_kretprobe`
    pub pre_handler_kretprobe: Va,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// Every probe in `kprobe_table`, each aggregate followed by its children.
    pub fn kprobes(&self) -> Result<Vec<Kprobe>, KernelError> {
        let l = KprobeLayout::from_profile(&self.profile)?;
        let markers = KprobeMarkers {
            aggr_pre_handler: self.symbol("aggr_pre_handler")?,
            pre_handler_kretprobe: self.symbol("pre_handler_kretprobe")?,
        };
        walk_table(&self.space, &l, &markers, self.symbol("kprobe_table")?)
    }
}

/// Walk the `KPROBE_TABLE_SIZE` buckets at `table`.
pub fn walk_table<V: VirtualMemory + ?Sized>(
    mem: &V,
    l: &KprobeLayout,
    markers: &KprobeMarkers,
    table: Va,
) -> Result<Vec<Kprobe>, KernelError> {
    let mut out: Vec<Kprobe> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for i in 0..KPROBE_TABLE_SIZE {
        let head = Va(table.0 + 8 * i);
        let budget = MAX_KPROBES.saturating_sub(out.len());
        walk_hlist(mem, head, "kprobe_table bucket", budget, |node| {
            let at = Va(node.0.wrapping_sub(l.hlist));
            let p = read_probe(mem, l, markers, at, None)?;
            let aggregate = p.kind == ProbeKind::Aggregate;
            seen.insert(at);
            out.push(p);
            if aggregate {
                let head = Va(at.0.wrapping_add(l.list));
                let budget = MAX_KPROBES.saturating_sub(out.len());
                walk_list(mem, head, "aggregate kprobe list", budget, |child| {
                    let c = Va(child.0.wrapping_sub(l.list));
                    if !seen.insert(c) {
                        return Err(KernelError::Cycle {
                            what: "aggregate kprobe list",
                            at: c,
                            after: out.len(),
                        });
                    }
                    out.push(read_probe(mem, l, markers, c, Some(at))?);
                    Ok(())
                })?;
            }
            Ok(())
        })?;
    }
    Ok(out)
}

fn read_probe<V: VirtualMemory + ?Sized>(
    mem: &V,
    l: &KprobeLayout,
    markers: &KprobeMarkers,
    at: Va,
    parent: Option<Va>,
) -> Result<Kprobe, KernelError> {
    let b = mem
        .read_bytes(at, l.span())
        .map_err(read_err("struct kprobe"))?;
    let pre_handler = Va(u64_at(&b, l.pre_handler));
    let kind = if pre_handler == markers.aggr_pre_handler && parent.is_none() {
        ProbeKind::Aggregate
    } else if pre_handler == markers.pre_handler_kretprobe {
        let rp = Va(at.0.wrapping_sub(l.kp));
        let span = (l.handler.max(l.entry_handler) + 8) as usize;
        let r = mem
            .read_bytes(rp, span)
            .map_err(read_err("struct kretprobe"))?;
        ProbeKind::Kretprobe {
            kretprobe: rp,
            handler: Va(u64_at(&r, l.handler)),
            entry_handler: Va(u64_at(&r, l.entry_handler)),
        }
    } else {
        ProbeKind::Kprobe
    };
    let name = u64_at(&b, l.symbol_name);
    // the name is the registering module's string: unreadable is not fatal
    let symbol_name = if name == 0 {
        Vec::new()
    } else {
        mem.read_cstr(Va(name), MAX_SYMBOL_NAME).unwrap_or_default()
    };
    Ok(Kprobe {
        at,
        kind,
        parent,
        addr: Va(u64_at(&b, l.addr)),
        symbol_name,
        offset: u32_at(&b, l.offset),
        pre_handler,
        post_handler: Va(u64_at(&b, l.post_handler)),
        flags: u32_at(&b, l.flags),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::objects::tests::Flat;

    const BASE: u64 = 0xffff_8880_0000_0000;
    const AGGR: u64 = 0xffff_ffff_8110_0000;
    const KRET: u64 = 0xffff_ffff_8110_0100;

    /// 6.1's offsets.
    fn layout() -> KprobeLayout {
        KprobeLayout {
            hlist: 0,
            list: 16,
            addr: 40,
            symbol_name: 48,
            offset: 56,
            pre_handler: 64,
            post_handler: 72,
            flags: 120,
            kp: 0,
            handler: 128,
            entry_handler: 136,
        }
    }

    fn markers() -> KprobeMarkers {
        KprobeMarkers {
            aggr_pre_handler: Va(AGGR),
            pre_handler_kretprobe: Va(KRET),
        }
    }

    fn put(m: &mut Flat, at: u64, v: u64) {
        m.put(at, &v.to_le_bytes());
    }

    /// Table at BASE; bucket 3: an aggregate (0x1000) with children 0x1100, 0x1200,
    /// then a kretprobe (0x1400); bucket 63: a plain probe (0x1600) named "vfs_read".
    fn guest() -> Flat {
        let mut m = Flat::new(BASE, 0x4000);
        let (ag, c1, c2, rp, p) = (
            BASE + 0x1000,
            BASE + 0x1100,
            BASE + 0x1200,
            BASE + 0x1400,
            BASE + 0x1600,
        );
        put(&mut m, BASE + 3 * 8, ag);
        put(&mut m, ag, rp);
        put(&mut m, ag + 64, AGGR);
        put(&mut m, ag + 16, c1 + 16);
        put(&mut m, c1 + 16, c2 + 16);
        put(&mut m, c2 + 16, ag + 16);
        put(&mut m, c1 + 64, 0xffff_ffff_c000_0100);
        put(&mut m, c2 + 64, 0xffff_ffff_c000_0200);
        put(&mut m, c2 + 72, 0xffff_ffff_c000_0300);
        put(&mut m, rp + 64, KRET);
        put(&mut m, rp + 128, 0xffff_ffff_c000_0400);
        put(&mut m, BASE + 63 * 8, p);
        put(&mut m, p + 40, 0xffff_ffff_8120_0000);
        put(&mut m, p + 48, BASE + 0x2000);
        m.put(BASE + 0x2000, b"vfs_read\0");
        put(&mut m, p + 64, 0xffff_ffff_c000_0500);
        m
    }

    #[test]
    fn aggregates_kretprobes_and_plain_probes() {
        let m = guest();
        let probes = walk_table(&m, &layout(), &markers(), Va(BASE)).unwrap();
        let kinds: Vec<(u64, Option<u64>)> = probes
            .iter()
            .map(|p| (p.at.0 - BASE, p.parent.map(|v| v.0 - BASE)))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (0x1000, None),
                (0x1100, Some(0x1000)),
                (0x1200, Some(0x1000)),
                (0x1400, None),
                (0x1600, None)
            ]
        );
        assert_eq!(probes[0].kind, ProbeKind::Aggregate);
        assert_eq!(
            probes[2].handlers(),
            vec![
                ("pre_handler", Va(0xffff_ffff_c000_0200)),
                ("post_handler", Va(0xffff_ffff_c000_0300))
            ]
        );
        assert!(matches!(
            probes[3].kind,
            ProbeKind::Kretprobe { handler, .. } if handler == Va(0xffff_ffff_c000_0400)
        ));
        assert_eq!(probes[4].symbol_name, b"vfs_read");
    }

    #[test]
    fn a_child_listed_twice_or_a_looping_bucket_is_an_error() {
        let mut m = guest();
        // the kretprobe's hlist points back to the aggregate
        put(&mut m, BASE + 0x1400, BASE + 0x1000);
        let e = walk_table(&m, &layout(), &markers(), Va(BASE)).unwrap_err();
        assert!(matches!(e, KernelError::Cycle { .. }), "{e}");
        let mut m = guest();
        // a child that loops to the first child instead of the aggregate's head
        put(&mut m, BASE + 0x1200 + 16, BASE + 0x1100 + 16);
        let e = walk_table(&m, &layout(), &markers(), Va(BASE)).unwrap_err();
        assert!(matches!(e, KernelError::Cycle { .. }), "{e}");
    }
}
