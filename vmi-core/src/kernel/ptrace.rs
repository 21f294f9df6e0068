//! Whether a task is traced, and by whom.
//!
//! `ptrace(2)` is how debuggers stop and inspect a process, and how injectors write
//! code into one (a tracer may poke any byte of its tracee's memory and set its
//! registers). The kernel keeps the relation in the tracee's `task_struct`: `ptrace`
//! holds the `PT_*` flags (`PT_PTRACED` while attached, `PT_SEIZED` for
//! `PTRACE_SEIZE`), and `parent` is the tracer for as long as it is attached
//! (`real_parent` stays the task that forked it; untraced, the two are equal:
//! `__ptrace_link` sets `parent`, `__ptrace_unlink` sets it back).
//!
//! [`Kernel::trace`] reads both for one task: a task is traced when `PT_PTRACED` is
//! set, and is reported as well when `parent` differs from `real_parent` with the flag
//! clear, which the kernel never leaves (a tracer that cleared the flag to hide keeps
//! the link). No list is walked: each task is one read, so a cycle of tracers (two
//! tasks each the other's tracer) or any number of traced tasks costs one read each.
//!
//! Fields used: [`PtraceLayout`] and the process walk's `parent`/`real_parent`.
//! Hostile memory: a `parent` that is no kernel address is a
//! [`KernelError::BadPointer`] for that task alone.

use crate::addr::Va;
use crate::kernel::objects::is_kernel_va;
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// `PT_PTRACED` in `task_struct.ptrace`: attached.
pub const PT_PTRACED: u32 = 0x1;
/// `PT_SEIZED` in `task_struct.ptrace`: attached with `PTRACE_SEIZE`.
pub const PT_SEIZED: u32 = 0x1_0000;

crate::kernel_layout! {
    /// Offsets of a task's ptrace state.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PtraceLayout(p) {
        /// `task_struct.ptrace` (`PT_*` flags)
        pub task_ptrace: u64 = "task_struct" ["ptrace"],
    }
}

/// A traced task and its tracer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    /// The traced task.
    pub task: Va,
    /// `task_struct.ptrace`.
    pub flags: u32,
    /// `task_struct.parent`: the tracer.
    pub tracer: Va,
    /// `task_struct.real_parent`: who forked it.
    pub real_parent: Va,
}

impl Trace {
    /// True when `PT_PTRACED` is set (else only `parent` says it is traced).
    pub fn attached(&self) -> bool {
        self.flags & PT_PTRACED != 0
    }

    /// True when the tracer attached with `PTRACE_SEIZE`.
    pub fn seized(&self) -> bool {
        self.flags & PT_SEIZED != 0
    }
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The trace of `task`: `None` when it is not traced (`PT_PTRACED` clear and
    /// `parent == real_parent`).
    pub fn trace(&self, l: &PtraceLayout, task: Va) -> Result<Option<Trace>, KernelError> {
        let at = |off: u64| Va(task.0.wrapping_add(off));
        let flags = self
            .space
            .read_u32(at(l.task_ptrace))
            .map_err(|source| KernelError::Read {
                what: "task_struct.ptrace",
                source,
            })?;
        let ptr = |off: u64, what: &'static str| {
            self.space
                .read_u64(at(off))
                .map_err(|source| KernelError::Read { what, source })
        };
        let parent = ptr(self.layout.task_parent, "task_struct.parent")?;
        let real_parent = ptr(self.layout.task_real_parent, "task_struct.real_parent")?;
        if flags & PT_PTRACED == 0 && parent == real_parent {
            return Ok(None);
        }
        if !is_kernel_va(parent) {
            return Err(KernelError::BadPointer {
                what: "task_struct.parent",
                value: parent,
            });
        }
        Ok(Some(Trace {
            task,
            flags,
            tracer: Va(parent),
            real_parent: Va(real_parent),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SyntheticKernel;

    #[test]
    fn traced_by_flag_or_by_a_parent_that_is_not_the_real_one() {
        let mut sk = SyntheticKernel::clean();
        let gdb = sk.add_process(500, b"gdb", 0);
        let seized = sk.add_process(501, b"app", 0);
        let unflagged = sk.add_process(502, b"app2", 0);
        let free = sk.add_process(503, b"free", 0);
        let wild = sk.add_process(504, b"wild", 0);
        sk.set(seized.task, "task_struct", "parent", gdb.task.0);
        sk.set_u32(seized.task, "task_struct", "ptrace", PT_PTRACED | PT_SEIZED);
        sk.set(unflagged.task, "task_struct", "parent", gdb.task.0);
        sk.set_u32(wild.task, "task_struct", "ptrace", PT_PTRACED);
        sk.set(wild.task, "task_struct", "parent", 0x4141_4141);
        let init = sk.symbol("init_task");
        let k = sk.discover().unwrap();
        let l = PtraceLayout::from_profile(k.profile()).unwrap();
        let t = k.trace(&l, seized.task).unwrap().unwrap();
        assert_eq!((t.tracer, t.real_parent), (gdb.task, init));
        assert!(t.attached() && t.seized());
        let t = k.trace(&l, unflagged.task).unwrap().unwrap();
        assert!(!t.attached() && !t.seized());
        assert_eq!(t.tracer, gdb.task);
        assert_eq!(k.trace(&l, free.task).unwrap(), None);
        assert!(matches!(
            k.trace(&l, wild.task),
            Err(KernelError::BadPointer {
                value: 0x4141_4141,
                ..
            })
        ));
        // a task that cannot be read is an error, not a panic
        assert!(k.trace(&l, Va(0xffff_8000_dead_0000)).is_err());
    }
}
