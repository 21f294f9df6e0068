//! The tasks queued on each CPU's run queue: the fair class's red-black tree
//! (`rq.cfs.tasks_timeline`, group entities' own trees below it) and the real-time
//! class's priority lists (`rq.rt.active.queue[]`). With the CPUs' current tasks
//! ([`crate::kernel::cpus`]) this is every runnable task: a task unlinked from the tasks
//! list and the pid namespace still has to be queued here to get CPU time.
//!
//! The scheduler rewrites these structures all the time, so a walk of a running guest
//! can be torn: it is bounded (nodes, depth) and detects cycles, and its callers treat a
//! torn walk as no view rather than as evidence. The deadline class is not read.

use std::collections::HashSet;

use crate::addr::Va;
use crate::kernel::objects::{is_kernel_va, rb_nodes, read_err, visit, walk_list};
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

crate::kernel_layout! {
    /// Offsets of the run queues' task structures.
    pub struct RunqueueLayout(p) {
        /// `rq.cfs` (the fair class's queue, embedded)
        pub rq_cfs: u64 = "rq" ["cfs"],
        /// `rq.rt` (the real-time class's queue, embedded)
        pub rq_rt: u64 = "rq" ["rt"],
        /// `cfs_rq.tasks_timeline` (an `rb_root_cached`: its root node pointer first)
        pub cfs_timeline: u64 = "cfs_rq" ["tasks_timeline"],
        /// `rb_node.rb_right`
        pub rb_right: u64 = "rb_node" ["rb_right"],
        /// `rb_node.rb_left`
        pub rb_left: u64 = "rb_node" ["rb_left"],
        /// `sched_entity.run_node`
        pub se_run_node: u64 = "sched_entity" ["run_node"],
        /// `sched_entity.my_q`: the group's own queue (CONFIG_FAIR_GROUP_SCHED)
        pub se_my_q: Option<u64> = opt "sched_entity" ["my_q"],
        /// `task_struct.se`
        pub task_se: u64 = "task_struct" ["se"],
        /// `rt_rq.active` (an `rt_prio_array`)
        pub rt_active: u64 = "rt_rq" ["active"],
        /// `rt_prio_array.queue` (`MAX_RT_PRIO` list heads)
        pub rt_queue: u64 = "rt_prio_array" ["queue"],
        /// `sched_rt_entity.run_list`
        pub rt_run_list: u64 = "sched_rt_entity" ["run_list"],
        /// `sched_rt_entity.my_q`: the group's own queue (CONFIG_RT_GROUP_SCHED)
        pub rt_my_q: Option<u64> = opt "sched_rt_entity" ["my_q"],
        /// `task_struct.rt`
        pub task_rt: u64 = "task_struct" ["rt"],
    }
    symbols [ ["runqueues"] ]
}

/// `MAX_RT_PRIO`: the real-time priority lists of each run queue (the same in every
/// kernel since 2.6).
const MAX_RT_PRIO: u64 = 100;
/// Most nodes of one CPU's queues read.
const MAX_NODES: usize = 1 << 16;
/// Most levels of group scheduling followed (the kernel allows far fewer cgroup levels
/// with their own queue in practice).
const MAX_DEPTH: usize = 32;

/// A task queued on a run queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    /// The CPU.
    pub cpu: u32,
    /// The `task_struct`.
    pub task: Va,
    /// Its scheduling class' queue: `"fair"` or `"rt"`.
    pub class: &'static str,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// Every task queued on each CPU's fair and real-time queues (not the CPUs' current
    /// tasks: the fair class takes a running task out of its tree).
    pub fn queued(&self) -> Result<Vec<Queued>, KernelError> {
        let rl = RunqueueLayout::from_profile(&self.profile)?;
        // the link-time address: per_cpu relocates it
        let link = self
            .profile
            .symbol("runqueues")
            .ok_or(KernelError::MissingSymbol("runqueues"))?;
        let mut out = Vec::new();
        for cpu in 0..self.nr_cpus()? {
            let rq = self.per_cpu(link, cpu)?;
            let mut seen = HashSet::new();
            let mut queues = vec![(Va(rq.0.wrapping_add(rl.rq_cfs)), 0usize)];
            while let Some((cfs_rq, depth)) = queues.pop() {
                for se in
                    self.rb_tree(&rl, Va(cfs_rq.0.wrapping_add(rl.cfs_timeline)), &mut seen)?
                {
                    let my_q = match rl.se_my_q {
                        Some(off) => {
                            self.read_ptr(Va(se.0.wrapping_add(off)), "sched_entity.my_q")?
                        }
                        None => 0,
                    };
                    if my_q == 0 {
                        out.push(Queued {
                            cpu,
                            task: Va(se.0.wrapping_sub(rl.task_se)),
                            class: "fair",
                        });
                    } else if depth + 1 < MAX_DEPTH && is_kernel_va(my_q) {
                        queues.push((Va(my_q), depth + 1));
                    } else {
                        return Err(KernelError::Corrupt {
                            what: format!("a group's queue {my_q:#x} at depth {}", depth + 1),
                            at: se,
                        });
                    }
                }
            }
            self.rt_queued(
                &rl,
                cpu,
                Va(rq.0.wrapping_add(rl.rq_rt)),
                &mut seen,
                &mut out,
            )?;
        }
        Ok(out)
    }

    /// The entities (`sched_entity`) of the red-black tree rooted at `root` (an
    /// `rb_root_cached`), within what is left of the CPU's node budget; a node already
    /// seen on this CPU's queues is a loop.
    fn rb_tree(
        &self,
        rl: &RunqueueLayout,
        root: Va,
        seen: &mut HashSet<u64>,
    ) -> Result<Vec<Va>, KernelError> {
        let what = "a run queue's tree";
        let nodes = rb_nodes(
            &self.space,
            self.read_ptr(root, "cfs_rq.tasks_timeline")?,
            (rl.rb_left, rl.rb_right),
            MAX_NODES.saturating_sub(seen.len()),
            what,
        )?;
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            if !seen.insert(node) {
                return Err(KernelError::Cycle {
                    what,
                    at: Va(node),
                    after: seen.len(),
                });
            }
            out.push(Va(node.wrapping_sub(rl.se_run_node)));
        }
        Ok(out)
    }

    /// The tasks of a real-time queue's priority lists (one read of the list heads).
    fn rt_queued(
        &self,
        rl: &RunqueueLayout,
        cpu: u32,
        rt_rq: Va,
        seen: &mut HashSet<u64>,
        out: &mut Vec<Queued>,
    ) -> Result<(), KernelError> {
        let queue = Va(rt_rq.0.wrapping_add(rl.rt_active + rl.rt_queue));
        let mut heads = vec![0u8; (MAX_RT_PRIO * 16) as usize];
        self.space
            .read_virt(queue, &mut heads)
            .map_err(|source| KernelError::Read {
                what: "rt_prio_array.queue",
                source,
            })?;
        for prio in 0..MAX_RT_PRIO {
            let head = Va(queue.0 + prio * 16);
            let o = (prio * 16) as usize;
            let next = u64::from_le_bytes(heads[o..o + 8].try_into().unwrap_or([0; 8]));
            if next == head.0 {
                continue; // empty
            }
            walk_list(
                &self.space,
                head,
                "rt_prio_array.queue",
                MAX_NODES,
                |node| {
                    // a node also on another of this CPU's queues is a loop
                    visit(seen, node.0, seen.len(), MAX_NODES, "a real-time queue")?;
                    let rt_se = Va(node.0.wrapping_sub(rl.rt_run_list));
                    let my_q = match rl.rt_my_q {
                        Some(off) => {
                            self.read_ptr(Va(rt_se.0.wrapping_add(off)), "sched_rt_entity.my_q")?
                        }
                        None => 0,
                    };
                    // a group's entity: its tasks are on the group's own lists, which the
                    // kernel builds only with CONFIG_RT_GROUP_SCHED (off in distribution
                    // kernels); they are not followed
                    if my_q == 0 {
                        out.push(Queued {
                            cpu,
                            task: Va(rt_se.0.wrapping_sub(rl.task_rt)),
                            class: "rt",
                        });
                    }
                    Ok(())
                },
            )?;
        }
        Ok(())
    }

    fn read_ptr(&self, at: Va, what: &'static str) -> Result<u64, KernelError> {
        self.space.read_u64(at).map_err(read_err(what))
    }
}
