//! Kernel threads and the function each one runs.
//!
//! Every thread `kthread_create` starts (PF_KTHREAD) has a `struct kthread`, allocated
//! by the kernel, that holds the function the thread runs (`threadfn`), its argument
//! (`data`) and, from 5.17, its full name when `comm` was too short for it
//! (`full_name`). The task points at it: from 5.17 through `task_struct.worker_private`,
//! before through `task_struct.set_child_tid` (kernel/kthread.c, `to_kthread`). A
//! rootkit that keeps a worker thread leaves its function there, in its own module.
//!
//! Tasks without one: the idle tasks and `kthreadd` before 5.17 (a null pointer);
//! from 5.17 they have one whose `threadfn` is null. User workers (io_uring's, vhost's:
//! PF_IO_WORKER, PF_USER_WORKER) have PF_KTHREAD clear, and their `worker_private` is
//! not a `struct kthread`: they are not read.
//!
//! Fields used: [`KthreadLayout`]. `struct kthread` is private to kernel/kthread.c, so
//! a profile built from kernel headers (the guest module's) lacks it: the type is
//! `opt_type`, and [`KthreadLayout::from_profile`] then fails with the missing field.
//! Hostile memory: a pointer to the `struct kthread` that is not a kernel address is a
//! [`KernelError::BadPointer`], an unreadable one a [`KernelError::Read`], for that
//! thread alone; `full_name` is evidence, read at most [`MAX_FULL_NAME`] bytes and
//! empty when unreadable.

use crate::addr::Va;
use crate::kernel::objects::{is_kernel_va, name_at};
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// `PF_KTHREAD` in `task_struct.flags`.
pub const PF_KTHREAD: u32 = 0x0020_0000;
/// Most bytes of a `full_name` read.
pub const MAX_FULL_NAME: usize = 128;

crate::kernel_layout! {
    /// Offsets of a task's `struct kthread`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct KthreadLayout(p) {
        /// `task_struct.worker_private` (5.17 on: the `struct kthread`)
        pub worker_private: Option<u64> = opt "task_struct" ["worker_private"],
        /// `task_struct.set_child_tid` (before 5.17 a kernel thread's `struct kthread`)
        pub set_child_tid: u64 = "task_struct" ["set_child_tid"],
        /// `kthread.threadfn`
        pub threadfn: u64 = opt_type "kthread" ["threadfn"],
        /// `kthread.data`
        pub data: u64 = opt_type "kthread" ["data"],
        /// `kthread.full_name` (5.17 on)
        pub full_name: Option<u64> = opt_both "kthread" ["full_name"],
    }
    computed {
        /// Where the task keeps its `struct kthread`.
        pub task_kthread: u64 = worker_private.unwrap_or(set_child_tid),
    }
}

impl KthreadLayout {
    /// The name of the task's pointer to its `struct kthread`.
    fn pointer_name(&self) -> &'static str {
        if self.worker_private.is_some() {
            "task_struct.worker_private"
        } else {
            "task_struct.set_child_tid"
        }
    }
}

/// A kernel thread's `struct kthread`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelThread {
    /// The task.
    pub task: Va,
    /// Its `struct kthread`.
    pub kthread: Va,
    /// `threadfn`, the function the thread runs (null for the idle tasks and
    /// `kthreadd`, which `kthread_create` did not start).
    pub threadfn: Va,
    /// `data`, the function's argument.
    pub data: Va,
    /// `full_name` (guest bytes; empty when absent or unreadable).
    pub full_name: Vec<u8>,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The `struct kthread` of `task`: `None` when the task is no kernel thread
    /// (PF_KTHREAD clear) or has none (a null pointer).
    pub fn kernel_thread(
        &self,
        l: &KthreadLayout,
        task: Va,
    ) -> Result<Option<KernelThread>, KernelError> {
        let read = |at: Va, off: u64, what: &'static str| {
            self.space
                .read_u64(Va(at.0.wrapping_add(off)))
                .map_err(|source| KernelError::Read { what, source })
        };
        let flags = self
            .space
            .read_u32(Va(task.0.wrapping_add(self.layout.task_flags)))
            .map_err(|source| KernelError::Read {
                what: "task_struct.flags",
                source,
            })?;
        if flags & PF_KTHREAD == 0 {
            return Ok(None);
        }
        let what = l.pointer_name();
        let kthread = read(task, l.task_kthread, what)?;
        if kthread == 0 {
            return Ok(None);
        }
        if !is_kernel_va(kthread) {
            return Err(KernelError::BadPointer {
                what,
                value: kthread,
            });
        }
        let kthread = Va(kthread);
        let threadfn = read(kthread, l.threadfn, "kthread.threadfn")?;
        let data = read(kthread, l.data, "kthread.data")?;
        let full_name = match l.full_name {
            Some(off) => read(kthread, off, "kthread.full_name")
                .map(|p| name_at(&self.space, p, MAX_FULL_NAME))
                .unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(Some(KernelThread {
            task,
            kthread,
            threadfn: Va(threadfn),
            data: Va(data),
            full_name,
        }))
    }
}
