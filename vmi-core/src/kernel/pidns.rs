//! The initial pid namespace's IDR: every `struct pid` the kernel has handed out, and the
//! task each one names.
//!
//! `/proc` and `kill` find a task through this index (`init_pid_ns.idr`, an XArray keyed
//! by pid number), not through the `tasks` list, so the two views must agree: a task
//! that the IDR holds but the `tasks` list lacks was unlinked to hide it from list
//! walkers, and a task on the list that the IDR lacks is hidden from `/proc`.
//!
//! Fields used, resolved once per walk from the profile ([`PidNsLayout`]):
//! `pid_namespace.idr`, `idr.idr_rt`, `idr.idr_base`, `xarray.xa_head`, `xa_node.shift`,
//! `xa_node.slots`, `pid.numbers`, `pid.tasks`, `upid.nr` (and the size of `upid`),
//! `task_struct.pid_links`, `.pid`, `.tgid`, `.comm`, `.flags`, `.exit_state`,
//! `.group_leader`.
//!
//! The walk is bounded: nodes are visited once (a node reached twice is a
//! [`KernelError::Cycle`]), a child's `shift` must be its parent's minus the chunk
//! shift, and at most [`PidLimits::max_pids`] entries and [`PidLimits::max_nodes`] nodes
//! are read.

use std::collections::HashSet;

use crate::addr::Va;
use crate::kernel::layout::array_len;
use crate::kernel::objects::is_kernel_va;
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

crate::kernel_layout! {
    /// Offsets the IDR walk uses.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PidNsLayout(p) {
        /// `pid_namespace.idr`
        pub ns_idr: u64 = "pid_namespace" ["idr"],
        /// `idr.idr_rt` (an XArray)
        pub idr_rt: u64 = "idr" ["idr_rt"],
        /// `idr.idr_base`
        pub idr_base: u64 = "idr" ["idr_base"],
        /// `xarray.xa_head`
        pub xa_head: u64 = "xarray" ["xa_head"],
        /// `pid.numbers`
        pub pid_numbers: u64 = "pid" ["numbers"],
        /// `pid.tasks` (`hlist_head[PIDTYPE_MAX]`, PIDTYPE_PID first)
        pub pid_tasks: u64 = "pid" ["tasks"],
        /// `upid.nr`
        pub upid_nr: u64 = "upid" ["nr"],
        /// `task_struct.pid_links` (`pid_links[PIDTYPE_PID]` first)
        pub task_pid_links: u64 = "task_struct" ["pid_links"],
    }
    computed {
        /// The shape of its nodes (`xa_node`).
        pub xa: XaShape = XaShape::from_profile(p)?,
    }
    check {
        let chunk_size = xa.chunk_size;
        if !chunk_size.is_power_of_two() || !(4..=64).contains(&chunk_size) {
            return Err(KernelError::MissingField(format!(
                "xa_node.slots: {chunk_size} slots is not an XArray chunk"
            )));
        }
    }
    symbols [
        ["init_pid_ns"],
    ]
}

/// Bounds of the IDR walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidLimits {
    /// Most entries (pids) read.
    pub max_pids: usize,
    /// Most XArray nodes read.
    pub max_nodes: usize,
}

impl Default for PidLimits {
    fn default() -> PidLimits {
        // PID_MAX_LIMIT is 4M; 4M pids fill at most 4M/64 + 4M/4096 + ... nodes
        PidLimits {
            max_pids: 1 << 22,
            max_nodes: 1 << 17,
        }
    }
}

/// A task found through the pid namespace: a `struct pid` and the task it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidTask {
    /// The pid number in the initial namespace (`pid.numbers[0].nr`).
    pub nr: u32,
    /// The IDR index it is filed under (`nr` on a sane kernel).
    pub index: u64,
    /// The `struct pid`.
    pub pid: Va,
    /// The task (`pid.tasks[PIDTYPE_PID]`).
    pub task: Va,
    /// `task_struct.pid` (the thread id).
    pub tid: u32,
    /// `task_struct.tgid`.
    pub tgid: u32,
    /// `task_struct.comm` (guest bytes).
    pub comm: Vec<u8>,
    /// `task_struct.flags`.
    pub flags: u32,
    /// `task_struct.exit_state`.
    pub exit_state: u32,
    /// `task_struct.group_leader`.
    pub group_leader: Va,
}

/// What the IDR holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidNamespaceView {
    /// Pids that name a task.
    pub tasks: Vec<PidTask>,
    /// Pids with no task attached (a process group or session id outliving its leader,
    /// or a pid being set up or torn down).
    pub without_task: usize,
    /// XArray nodes read.
    pub nodes: usize,
}

/// XArray entry encoding (include/linux/xarray.h): internal entries end in `10`, value
/// entries in `1`; an internal entry above 4096 is a node pointer (plus 2).
fn xa_is_value(e: u64) -> bool {
    e & 1 == 1
}

fn xa_is_internal(e: u64) -> bool {
    e & 3 == 2
}

fn xa_is_node(e: u64) -> bool {
    xa_is_internal(e) && e > 4096
}

crate::kernel_layout! {
    /// Where an XArray node keeps what the walk needs.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct XaShape(p) {
        /// Offset of `xa_node.shift` (a byte).
        pub node_shift: u64 = "xa_node" ["shift"],
        /// Offset of `xa_node.slots`.
        pub node_slots: u64 = "xa_node" ["slots"],
    }
    computed {
        /// Entries per node (a power of two: `XA_CHUNK_SIZE`, 64 unless
        /// `CONFIG_BASE_SMALL`), the length of `xa_node.slots`.
        pub chunk_size: u64 = p
            .field("xa_node", "slots")
            .and_then(|f| array_len(&f.ty))
            .unwrap_or(64),
    }
}

/// Every pointer entry of the XArray whose `xa_head` is `head`, as (index, entry) in
/// index order, and the number of nodes read. Value entries and internal entries
/// (sibling, retry, zero) are skipped.
pub fn xarray_entries<V: VirtualMemory + ?Sized>(
    mem: &V,
    head: u64,
    shape: &XaShape,
    limits: &PidLimits,
    what: &'static str,
) -> Result<(Vec<(u64, u64)>, usize), KernelError> {
    let mut leaves: Vec<(u64, u64)> = Vec::new();
    let mut nodes = 0usize;
    if !xa_is_node(head) {
        if head != 0 && !xa_is_internal(head) && !xa_is_value(head) {
            leaves.push((0, head));
        }
        return Ok((leaves, 0));
    }
    let chunk_shift = u64::from(shape.chunk_size.trailing_zeros());
    let mut seen: HashSet<u64> = HashSet::new();
    // (node, first index it covers, the shift its parent implies)
    let mut stack: Vec<(u64, u64, Option<u64>)> = vec![(head - 2, 0, None)];
    let mut slots = vec![0u8; (shape.chunk_size * 8) as usize];
    while let Some((node, base, want_shift)) = stack.pop() {
        if !is_kernel_va(node) {
            return Err(KernelError::BadPointer {
                what: "xa_node",
                value: node,
            });
        }
        if !seen.insert(node) {
            return Err(KernelError::Cycle {
                what,
                at: Va(node),
                after: nodes,
            });
        }
        nodes += 1;
        if nodes > limits.max_nodes {
            return Err(KernelError::TooLong {
                what,
                max: limits.max_nodes,
            });
        }
        let shift = u64::from(
            mem.read_u8(Va(node.wrapping_add(shape.node_shift)))
                .map_err(|source| KernelError::Read {
                    what: "xa_node.shift",
                    source,
                })?,
        );
        let shape_ok =
            shift % chunk_shift == 0 && shift < 64 && want_shift.is_none_or(|w| w == shift);
        if !shape_ok {
            return Err(KernelError::Corrupt {
                what: format!(
                    "{what}: node with shift {shift} (expected {})",
                    want_shift
                        .map_or_else(|| format!("a multiple of {chunk_shift}"), |w| w.to_string())
                ),
                at: Va(node),
            });
        }
        mem.read_virt(Va(node.wrapping_add(shape.node_slots)), &mut slots)
            .map_err(|source| KernelError::Read {
                what: "xa_node.slots",
                source,
            })?;
        for (i, chunk) in slots.chunks_exact(8).enumerate() {
            let e = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            if e == 0 || xa_is_value(e) {
                continue;
            }
            let index = base.wrapping_add((i as u64) << shift);
            if xa_is_node(e) {
                if shift == 0 {
                    return Err(KernelError::Corrupt {
                        what: format!("{what}: a leaf node points to another node"),
                        at: Va(node),
                    });
                }
                stack.push((e - 2, index, Some(shift - chunk_shift)));
            } else if !xa_is_internal(e) {
                if leaves.len() >= limits.max_pids {
                    return Err(KernelError::TooLong {
                        what,
                        max: limits.max_pids,
                    });
                }
                leaves.push((index, e));
            }
        }
    }
    leaves.sort_unstable();
    Ok((leaves, nodes))
}

impl<M: PhysicalMemory> Kernel<M> {
    /// Every task the initial pid namespace's IDR names.
    pub fn pid_namespace_tasks(&self, limits: &PidLimits) -> Result<PidNamespaceView, KernelError> {
        let pl = PidNsLayout::from_profile(&self.profile)?;
        let ns = self.symbol("init_pid_ns")?;
        let idr = Va(ns.0.wrapping_add(pl.ns_idr));
        let idr_base = self.read_u32_at(idr, pl.idr_base, "init_pid_ns.idr.idr_base")?;
        let xa = Va(idr.0.wrapping_add(pl.idr_rt));
        let head = self
            .space
            .read_u64(Va(xa.0.wrapping_add(pl.xa_head)))
            .map_err(|source| KernelError::Read {
                what: "init_pid_ns.idr.idr_rt.xa_head",
                source,
            })?;

        let (leaves, nodes) = xarray_entries(&self.space, head, &pl.xa, limits, "init_pid_ns.idr")?;

        let mut view = PidNamespaceView {
            nodes,
            ..PidNamespaceView::default()
        };
        for (index, pid) in leaves {
            if !is_kernel_va(pid) {
                return Err(KernelError::BadPointer {
                    what: "init_pid_ns.idr entry (struct pid)",
                    value: pid,
                });
            }
            let pid = Va(pid);
            let nr = self.read_u32_at(pid, pl.pid_numbers + pl.upid_nr, "pid.numbers[0].nr")?;
            let first = self
                .space
                .read_u64(Va(pid.0.wrapping_add(pl.pid_tasks)))
                .map_err(|source| KernelError::Read {
                    what: "pid.tasks[PIDTYPE_PID]",
                    source,
                })?;
            if first == 0 {
                view.without_task += 1;
                continue;
            }
            if !is_kernel_va(first) {
                return Err(KernelError::BadPointer {
                    what: "pid.tasks[PIDTYPE_PID].first",
                    value: first,
                });
            }
            let task = Va(first.wrapping_sub(pl.task_pid_links));
            let l = self.layout;
            let comm = self.read_bytes_at(task, l.task_comm, 16, "task_struct.comm")?;
            let leader = self
                .space
                .read_u64(Va(task.0.wrapping_add(l.task_group_leader)))
                .map_err(|source| KernelError::Read {
                    what: "task_struct.group_leader",
                    source,
                })?;
            view.tasks.push(PidTask {
                nr,
                index: index.wrapping_add(u64::from(idr_base)),
                pid,
                task,
                tid: self.read_u32_at(task, l.task_pid, "task_struct.pid")?,
                tgid: self.read_u32_at(task, l.task_tgid, "task_struct.tgid")?,
                comm: comm.split(|&b| b == 0).next().unwrap_or_default().to_vec(),
                flags: self.read_u32_at(task, l.task_flags, "task_struct.flags")?,
                exit_state: self.read_u32_at(task, l.task_exit_state, "task_struct.exit_state")?,
                group_leader: Va(leader),
            });
        }
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Pa;
    use crate::error::{PhysError, ReadError};

    const BASE: u64 = 0xffff_8880_0000_0000;
    const SHAPE: XaShape = XaShape {
        chunk_size: 64,
        node_shift: 0,
        node_slots: 0x28,
    };
    const NODE_SIZE: u64 = 0x28 + 64 * 8;

    /// Flat kernel memory with XArray nodes laid out one after the other.
    struct Flat(Vec<u8>);

    impl VirtualMemory for Flat {
        fn read_virt(&self, va: Va, buf: &mut [u8]) -> Result<(), ReadError> {
            let off = va.0.wrapping_sub(BASE) as usize;
            match self.0.get(off..off.wrapping_add(buf.len())) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    Ok(())
                }
                None => Err(ReadError::Phys {
                    va,
                    pa: Pa(0),
                    cause: PhysError::Unmapped { pa: Pa(0) },
                }),
            }
        }
    }

    impl Flat {
        fn new(nodes: usize) -> Flat {
            Flat(vec![0; nodes * NODE_SIZE as usize])
        }
        fn node(i: usize) -> u64 {
            BASE + i as u64 * NODE_SIZE
        }
        fn set_shift(&mut self, node: usize, shift: u8) {
            self.0[node * NODE_SIZE as usize] = shift;
        }
        fn set_slot(&mut self, node: usize, slot: usize, entry: u64) {
            let o = node * NODE_SIZE as usize + 0x28 + slot * 8;
            self.0[o..o + 8].copy_from_slice(&entry.to_le_bytes());
        }
    }

    #[test]
    fn entry_encoding() {
        // a node pointer is tagged with 2
        assert!(xa_is_node(0xffff_8880_0123_4002));
        assert!(!xa_is_node(0xffff_8880_0123_4000));
        // retry (256) and zero (257) entries are internal but not nodes
        assert!(xa_is_internal((256 << 2) | 2) && !xa_is_node((256 << 2) | 2));
        assert!(xa_is_internal((257 << 2) | 2) && !xa_is_node((257 << 2) | 2));
        assert!(xa_is_value((5 << 1) | 1));
    }

    #[test]
    fn a_two_level_array_yields_its_entries_in_index_order() {
        // root (shift 6) -> leaves for indices 0..64 and 128..192
        let mut m = Flat::new(3);
        m.set_shift(0, 6);
        m.set_slot(0, 0, Flat::node(1) + 2);
        m.set_slot(0, 2, Flat::node(2) + 2);
        let p = |n: u64| 0xffff_8880_1000_0000 + n * 0x100;
        m.set_slot(1, 1, p(1));
        m.set_slot(1, 63, p(63));
        m.set_slot(1, 5, (7 << 1) | 1); // a value entry: skipped
        m.set_slot(1, 6, (256 << 2) | 2); // a retry entry: skipped
        m.set_slot(2, 0, p(128));
        m.set_slot(2, 4, p(132));
        let limits = PidLimits::default();
        let (got, nodes) = xarray_entries(&m, Flat::node(0) + 2, &SHAPE, &limits, "t").unwrap();
        assert_eq!(nodes, 3);
        assert_eq!(
            got,
            vec![(1, p(1)), (63, p(63)), (128, p(128)), (132, p(132))]
        );
        // a single entry sits in the head itself
        let (got, nodes) = xarray_entries(&m, p(0), &SHAPE, &limits, "t").unwrap();
        assert_eq!((got, nodes), (vec![(0, p(0))], 0));
        // so does nothing at all
        let (got, _) = xarray_entries(&m, 0, &SHAPE, &limits, "t").unwrap();
        assert!(got.is_empty());
        // a bound on the entries
        let small = PidLimits {
            max_pids: 3,
            max_nodes: 10,
        };
        let e = xarray_entries(&m, Flat::node(0) + 2, &SHAPE, &small, "t").unwrap_err();
        assert!(matches!(e, KernelError::TooLong { max: 3, .. }), "{e}");
    }

    #[test]
    fn cycles_bad_shifts_and_wild_nodes_are_reported() {
        let limits = PidLimits::default();
        // a node that lists itself
        let mut m = Flat::new(2);
        m.set_shift(0, 6);
        m.set_slot(0, 3, Flat::node(1) + 2);
        m.set_shift(1, 0);
        m.set_slot(1, 0, 0xffff_8880_1000_0000);
        let mut cyc = Flat(m.0.clone());
        cyc.set_shift(1, 6);
        cyc.set_slot(1, 1, Flat::node(0) + 2);
        let e = xarray_entries(&cyc, Flat::node(0) + 2, &SHAPE, &limits, "t").unwrap_err();
        // node 1 has shift 6 where its parent (shift 6) implies 0
        assert!(
            matches!(e, KernelError::Corrupt { at, .. } if at == Va(Flat::node(1))),
            "{e}"
        );
        // two slots naming one node: the node is reached twice
        let mut twice = Flat(m.0.clone());
        twice.set_slot(0, 4, Flat::node(1) + 2);
        let e = xarray_entries(&twice, Flat::node(0) + 2, &SHAPE, &limits, "t").unwrap_err();
        assert!(
            matches!(e, KernelError::Cycle { at, .. } if at == Va(Flat::node(1))),
            "{e}"
        );
        // a shift that is no multiple of the chunk shift
        let mut bad = Flat(m.0.clone());
        bad.set_shift(0, 5);
        let e = xarray_entries(&bad, Flat::node(0) + 2, &SHAPE, &limits, "t").unwrap_err();
        assert!(matches!(e, KernelError::Corrupt { .. }), "{e}");
        // a node pointer into user space
        let e = xarray_entries(&m, 0x4141_4142, &SHAPE, &limits, "t").unwrap_err();
        assert!(
            matches!(
                e,
                KernelError::BadPointer {
                    value: 0x4141_4140,
                    ..
                }
            ),
            "{e}"
        );
        // a node pointer to unreadable memory carries the address
        let e = xarray_entries(&m, BASE + 0x10_0002, &SHAPE, &limits, "t").unwrap_err();
        assert!(
            matches!(e, KernelError::Read { source, .. } if source.va() == Va(BASE + 0x10_0000)),
            "{e}"
        );
    }
}
