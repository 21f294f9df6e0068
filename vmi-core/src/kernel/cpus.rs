//! What each CPU runs: the per-CPU `current_task` (x86's `current`; from 6.2 to 6.14
//! the first member of the per-CPU `pcpu_hot`), which `__switch_to` keeps equal to the
//! runqueue's `curr`.
//!
//! A task hidden from the tasks list and the pid namespace alike still runs when it is
//! scheduled, and is `current` on its CPU then. Per-CPU addresses are the variable's
//! address plus `__per_cpu_offset[cpu]`: before 6.15 x86-64 per-CPU variables are
//! linked at zero-based offsets that KASLR does not move; from 6.15 they are ordinary
//! kernel addresses that it does.
//!
//! Symbols used: `current_task` or `pcpu_hot`, `__per_cpu_offset`, `nr_cpu_ids`.

use crate::addr::Va;
use crate::kernel::objects::is_kernel_va;
use crate::kernel::{Kernel, KernelError, START_KERNEL_MAP};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// The symbols the per-CPU reads use.
pub const NEEDS: crate::profile::needs::Declaration = crate::declaration!(
    "cpus";
    fields [];
    symbols [
        ["__per_cpu_offset"],
        // the task each CPU runs: the per-CPU `current_task` (inside `pcpu_hot`, at its
        // start, from 6.2 to 6.14)
        ["current_task", "pcpu_hot"],
        ["nr_cpu_ids"],
    ]
);

/// Most CPUs read (`NR_CPUS` of distribution kernels is 8192).
pub const MAX_CPUS: u32 = 8192;

/// The task a CPU runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// The CPU.
    pub cpu: u32,
    /// Its `current_task`.
    pub task: Va,
    /// `task_struct.pid` (0 for the idle task).
    pub tid: u32,
    /// `task_struct.tgid`.
    pub tgid: u32,
    /// `task_struct.comm` (guest bytes).
    pub comm: Vec<u8>,
    /// `task_struct.exit_state` (non-zero while a task runs its last instructions after
    /// it left the tasks list and the pid namespace).
    pub exit_state: u32,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The address of the per-CPU variable at link-time address `link` on `cpu`.
    pub fn per_cpu(&self, link: u64, cpu: u32) -> Result<Va, KernelError> {
        let base = if link < START_KERNEL_MAP {
            link // zero-based per-CPU section: not relocated
        } else {
            link.wrapping_add(self.placement.virt_shift)
        };
        let offsets = self.symbol("__per_cpu_offset")?;
        let off = self
            .space
            .read_u64(Va(offsets.0.wrapping_add(u64::from(cpu) * 8)))
            .map_err(|source| KernelError::Read {
                what: "__per_cpu_offset",
                source,
            })?;
        Ok(Va(base.wrapping_add(off)))
    }

    /// How many CPUs the kernel has (`nr_cpu_ids`, at most [`MAX_CPUS`]).
    pub fn nr_cpus(&self) -> Result<u32, KernelError> {
        let at = self.symbol("nr_cpu_ids")?;
        let nr = self
            .space
            .read_u32(at)
            .map_err(|source| KernelError::Read {
                what: "nr_cpu_ids",
                source,
            })?;
        if nr == 0 || nr > MAX_CPUS {
            return Err(KernelError::Corrupt {
                what: format!("nr_cpu_ids is {nr}"),
                at,
            });
        }
        Ok(nr)
    }

    /// What every CPU runs now (on a live guest: a snapshot per CPU).
    pub fn running(&self) -> Result<Vec<Running>, KernelError> {
        let current = ["current_task", "pcpu_hot"]
            .iter()
            .find_map(|n| self.profile.symbol(n))
            .ok_or(KernelError::MissingSymbol("current_task"))?;
        let l = self.layout;
        let mut out = Vec::new();
        for cpu in 0..self.nr_cpus()? {
            let at = self.per_cpu(current, cpu)?;
            let task = self
                .space
                .read_u64(at)
                .map_err(|source| KernelError::Read {
                    what: "current_task",
                    source,
                })?;
            if !is_kernel_va(task) {
                return Err(KernelError::BadPointer {
                    what: "current_task",
                    value: task,
                });
            }
            let task = Va(task);
            let comm = self.read_bytes_at(task, l.task_comm, 16, "task_struct.comm")?;
            out.push(Running {
                cpu,
                task,
                tid: self.read_u32_at(task, l.task_pid, "task_struct.pid")?,
                tgid: self.read_u32_at(task, l.task_tgid, "task_struct.tgid")?,
                comm: comm.split(|&b| b == 0).next().unwrap_or_default().to_vec(),
                exit_state: self.read_u32_at(task, l.task_exit_state, "task_struct.exit_state")?,
            });
        }
        Ok(out)
    }
}
