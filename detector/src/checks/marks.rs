//! Part of `hidden-process`: task flag bits that mark a task for a rootkit.
//!
//! Diamorphine hides a process by setting a bit of `task_struct.flags` that its
//! `getdents` hook and `kill` handler then look for (`PF_INVISIBLE`, 0x10000000); such
//! marks stay on the task while it lives, and nothing in the lists changes. Two kinds
//! of bits are reported, for every task of the tasks list and of the pid namespace:
//!
//! - bits no kernel from 5.10 to 7.3 defines (0x01000000 and 0x02000000: no kernel
//!   code sets them), high;
//! - `PF_MEMALLOC_PIN` (0x10000000; `PF_MEMALLOC_NOCMA` in 5.10), Diamorphine's bit:
//!   the kernel sets it only around a long-term page pin (`memalloc_pin_save`) and
//!   clears it before the call returns, so a task that holds it is marked or, rarely,
//!   inside such a call (io_uring buffer registration, VFIO, RDMA): medium. `watch`
//!   reads a new finding again before it reports it, which drops the transient case.
//!
//! The other undefined bits differ between versions (0x4000 before 6.4, 0x40000000
//! after 5.10, ...) and are left alone rather than judged by a version table.

use std::collections::BTreeMap;

use vmi_core::kernel::pidns::PidTask;
use vmi_core::kernel::Process;
use vmi_core::Va;

use crate::finding::{guest_str, Finding, Severity};

/// Bits no kernel from 5.10 to 7.3 defines.
pub(crate) const UNDEFINED: u32 = 0x0300_0000;
/// `PF_MEMALLOC_PIN` (`PF_MEMALLOC_NOCMA` in 5.10): Diamorphine's `PF_INVISIBLE`.
pub(crate) const PIN: u32 = 0x1000_0000;

/// A task as the views give it: (tid, tgid, comm, flags).
type Task<'a> = (u32, u32, &'a [u8], u32);

/// The findings for the marked tasks among `listed` (the tasks list's processes; their
/// threads are judged through the pid namespace) and `named` (the pid namespace's
/// tasks), each task once.
pub(crate) fn marked(name: &'static str, listed: &[&Process], named: &[PidTask]) -> Vec<Finding> {
    let mut tasks: BTreeMap<Va, Task<'_>> = BTreeMap::new();
    for t in named {
        tasks.insert(t.task, (t.tid, t.tgid, &t.comm, t.flags));
    }
    for p in listed {
        tasks
            .entry(p.task)
            .or_insert((p.pid, p.tgid, &p.comm, p.flags));
    }
    tasks
        .into_iter()
        .filter_map(|(task, (tid, tgid, comm, flags))| judge(name, task, tid, tgid, comm, flags))
        .collect()
}

fn judge(
    name: &'static str,
    task: Va,
    tid: u32,
    tgid: u32,
    comm: &[u8],
    flags: u32,
) -> Option<Finding> {
    let undefined = flags & UNDEFINED;
    let (severity, bits, why) = if undefined != 0 {
        (
            Severity::High,
            undefined,
            "a bit no kernel defines: a rootkit's mark".to_string(),
        )
    } else if flags & PIN != 0 {
        (
            Severity::Medium,
            PIN,
            "PF_MEMALLOC_PIN, which the kernel holds only inside a long-term page pin: Diamorphine's mark for the tasks it hides".to_string(),
        )
    } else {
        return None;
    };
    let comm = guest_str(comm);
    Some(
        Finding::new(
            name,
            severity,
            format!("{name}:flags:{tid}:{bits:#x}"),
            format!("task {tid} ({comm}) of process {tgid} has task flag {bits:#x} set ({why})"),
        )
        .num("pid", u64::from(tgid))
        .num("tid", u64::from(tid))
        .text("comm", comm)
        .addr("task", task.0)
        .text("flags", format!("{flags:#010x}"))
        .text("bits", format!("{bits:#x}")),
    )
}
