//! Notifier chains: the callbacks the kernel calls on an event.
//!
//! A chain head (`struct atomic_notifier_head`, `blocking_notifier_head` or
//! `raw_notifier_head`; the kind is fixed by the chain's declaration in the kernel
//! source) holds `head`, the first `struct notifier_block`; blocks are linked through
//! `next`, sorted by `priority`, and the kernel calls each `notifier_call`. The chains
//! read ([`CHAINS`]) are those rootkits register on: `keyboard_notifier_list` (every
//! key press: keyloggers), `vt_notifier_list` (console output), `module_notify_list`
//! (every module load: hiding the next rootkit, disabling defences), `netdev_chain`,
//! `inetaddr_chain`, `inet6addr_chain`, `netlink_chain`, `reboot_notifier_list`,
//! `panic_notifier_list`, `die_chain` and `pm_chain_head`. A chain whose symbol the
//! profile lacks (the kernel was built without it) is left out.
//!
//! Fields used: `atomic_notifier_head.head`, `blocking_notifier_head.head`,
//! `raw_notifier_head.head`, `notifier_block.notifier_call`, `.next`, `.priority`.
//!
//! Bounds: at most [`MAX_BLOCKS`] blocks per chain; a block seen twice is a
//! [`KernelError::Cycle`].

use crate::addr::Va;
use crate::kernel::objects::{read_err, u32_at, u64_at, walk_chain};
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// Most blocks read per chain.
pub const MAX_BLOCKS: usize = 1 << 12;

/// The kind of a chain head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// `struct atomic_notifier_head` (a spinlock, then `head`).
    Atomic,
    /// `struct blocking_notifier_head` (an rw_semaphore, then `head`).
    Blocking,
    /// `struct raw_notifier_head` (`head` alone).
    Raw,
}

impl HeadKind {
    /// The head's type name.
    pub fn type_name(self) -> &'static str {
        match self {
            HeadKind::Atomic => "atomic_notifier_head",
            HeadKind::Blocking => "blocking_notifier_head",
            HeadKind::Raw => "raw_notifier_head",
        }
    }
}

/// The chains read, with the kind of their head.
pub const CHAINS: &[(&str, HeadKind)] = &[
    ("keyboard_notifier_list", HeadKind::Atomic),
    ("vt_notifier_list", HeadKind::Atomic),
    ("module_notify_list", HeadKind::Blocking),
    ("netdev_chain", HeadKind::Raw),
    ("inetaddr_chain", HeadKind::Blocking),
    ("inet6addr_chain", HeadKind::Atomic),
    ("netlink_chain", HeadKind::Blocking),
    ("reboot_notifier_list", HeadKind::Blocking),
    ("panic_notifier_list", HeadKind::Atomic),
    ("die_chain", HeadKind::Atomic),
    ("pm_chain_head", HeadKind::Blocking),
];

crate::kernel_layout! {
    /// Offsets the walk uses.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct NotifierLayout(p) {
        /// `atomic_notifier_head.head`
        pub atomic_head: u64 = "atomic_notifier_head" ["head"],
        /// `blocking_notifier_head.head`
        pub blocking_head: u64 = "blocking_notifier_head" ["head"],
        /// `raw_notifier_head.head`
        pub raw_head: u64 = "raw_notifier_head" ["head"],
        /// `notifier_block.notifier_call`
        pub call: u64 = "notifier_block" ["notifier_call"],
        /// `notifier_block.next`
        pub next: u64 = "notifier_block" ["next"],
        /// `notifier_block.priority`
        pub priority: u64 = "notifier_block" ["priority"],
    }
    symbols [
        opt ["keyboard_notifier_list"],
        opt ["vt_notifier_list"],
        opt ["module_notify_list"],
        opt ["netdev_chain"],
        opt ["inetaddr_chain"],
        opt ["inet6addr_chain"],
        opt ["netlink_chain"],
        opt ["reboot_notifier_list"],
        opt ["panic_notifier_list"],
        opt ["die_chain"],
        opt ["pm_chain_head"],
    ]
}

impl NotifierLayout {
    fn head(&self, k: HeadKind) -> u64 {
        match k {
            HeadKind::Atomic => self.atomic_head,
            HeadKind::Blocking => self.blocking_head,
            HeadKind::Raw => self.raw_head,
        }
    }
}

/// A registered callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifierBlock {
    /// The `struct notifier_block`.
    pub at: Va,
    /// `notifier_call`.
    pub call: Va,
    /// `priority`.
    pub priority: i32,
}

/// A chain and its callbacks, in call order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifierChain {
    /// The chain's symbol.
    pub name: &'static str,
    /// The head.
    pub head: Va,
    /// Its blocks.
    pub blocks: Vec<NotifierBlock>,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// Every chain of [`CHAINS`] the kernel has, with its blocks.
    pub fn notifier_chains(&self) -> Result<Vec<NotifierChain>, KernelError> {
        let l = NotifierLayout::from_profile(&self.profile)?;
        CHAINS
            .iter()
            .filter_map(|&(name, kind)| self.symbol(name).ok().map(|at| (name, kind, at)))
            .map(|(name, kind, at)| walk_notifiers(&self.space, &l, name, kind, at))
            .collect()
    }
}

/// Read the chain `name` whose head of kind `kind` is at `head`.
pub fn walk_notifiers<V: VirtualMemory + ?Sized>(
    mem: &V,
    l: &NotifierLayout,
    name: &'static str,
    kind: HeadKind,
    head: Va,
) -> Result<NotifierChain, KernelError> {
    let first = mem
        .read_u64(Va(head.0.wrapping_add(l.head(kind))))
        .map_err(read_err("notifier chain head"))?;
    let span = (l.call.max(l.next).max(l.priority) + 8) as usize;
    let mut blocks = Vec::new();
    walk_chain(mem, first, 0, l.next, "notifier chain", MAX_BLOCKS, |at| {
        let b = mem
            .read_bytes(at, span)
            .map_err(read_err("struct notifier_block"))?;
        blocks.push(NotifierBlock {
            at,
            call: Va(u64_at(&b, l.call)),
            priority: u32_at(&b, l.priority) as i32,
        });
        Ok(())
    })?;
    Ok(NotifierChain { name, head, blocks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::objects::tests::Flat;

    const BASE: u64 = 0xffff_8880_0000_0000;

    fn layout() -> NotifierLayout {
        NotifierLayout {
            atomic_head: 8,
            blocking_head: 40,
            raw_head: 0,
            call: 0,
            next: 8,
            priority: 16,
        }
    }

    fn put(m: &mut Flat, at: u64, v: u64) {
        m.put(at, &v.to_le_bytes());
    }

    /// A blocking head at BASE (head at +40) with blocks at 0x100 and 0x200.
    fn guest() -> Flat {
        let mut m = Flat::new(BASE, 0x1000);
        put(&mut m, BASE + 40, BASE + 0x100);
        put(&mut m, BASE + 0x100, 0xffff_ffff_c000_0100);
        put(&mut m, BASE + 0x108, BASE + 0x200);
        m.put(BASE + 0x110, &(-5i32).to_le_bytes());
        put(&mut m, BASE + 0x200, 0xffff_ffff_8100_0200);
        m
    }

    #[test]
    fn blocks_are_read_in_order() {
        let m = guest();
        let c = walk_notifiers(&m, &layout(), "x", HeadKind::Blocking, Va(BASE)).unwrap();
        let got: Vec<(u64, u64, i32)> = c
            .blocks
            .iter()
            .map(|b| (b.at.0 - BASE, b.call.0, b.priority))
            .collect();
        assert_eq!(
            got,
            vec![
                (0x100, 0xffff_ffff_c000_0100, -5),
                (0x200, 0xffff_ffff_8100_0200, 0)
            ]
        );
        // the same memory read as a raw head: its first word is a lock, here 0: empty
        let c = walk_notifiers(&m, &layout(), "x", HeadKind::Raw, Va(BASE)).unwrap();
        assert!(c.blocks.is_empty());
    }

    #[test]
    fn loops_and_wild_pointers_are_errors() {
        let mut m = guest();
        put(&mut m, BASE + 0x208, BASE + 0x100);
        let e = walk_notifiers(&m, &layout(), "x", HeadKind::Blocking, Va(BASE)).unwrap_err();
        assert!(matches!(e, KernelError::Cycle { .. }), "{e}");
        let mut m = guest();
        put(&mut m, BASE + 0x208, 0x4141);
        let e = walk_notifiers(&m, &layout(), "x", HeadKind::Blocking, Va(BASE)).unwrap_err();
        assert!(
            matches!(e, KernelError::BadPointer { value: 0x4141, .. }),
            "{e}"
        );
    }
}
