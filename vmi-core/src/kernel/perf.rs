//! Perf events in the kernel's event contexts: every counter a CPU or a task has
//! installed, those the kernel and its modules create included.
//!
//! `perf_event_create_kernel_counter` (and `register_wide_hw_breakpoint` on it) gives a
//! module an event whose `overflow_handler` it chooses: its code then runs on every
//! sample or, for a hardware breakpoint, on every access to the watched address, with
//! no table, text or tracepoint changed. Such events have no owner task (they are on no
//! `perf_event_list`); they are installed in a context: a CPU's (`cpu >= 0`) or a
//! task's. A context (`struct perf_event_context`) lists its events on `event_list`
//! (`perf_event.event_entry`).
//!
//! CPU contexts: from 6.2 one per CPU, the per-CPU `perf_cpu_context` (its `ctx`);
//! before, one per PMU context kind: each PMU on `pmus` (`pmu.entry`) points at a
//! per-CPU `struct perf_cpu_context` (`pmu.pmu_cpu_context`, shared by PMUs of one
//! kind). Task contexts: `task_struct.perf_event_ctxp` (an array of two before 6.2,
//! one pointer from 6.2).
//!
//! Fields used: [`PerfContextLayout`]. Symbols: `perf_cpu_context` (6.2+) or `pmus`,
//! `__per_cpu_offset`, `nr_cpu_ids`. A kernel without `CONFIG_PERF_EVENTS` has no
//! events. Bounds: [`MAX_CPUS`] CPUs, [`MAX_PMUS`] PMUs, [`MAX_CONTEXT_EVENTS`] events per
//! context; a list element seen twice is a [`KernelError::Cycle`].

use std::collections::HashSet;

use crate::addr::Va;
use crate::kernel::bpf::pmu_name;
use crate::kernel::cpus::MAX_CPUS;
use crate::kernel::layout::array_len;
use crate::kernel::objects::{is_kernel_va, read_err, walk_list};
use crate::kernel::{Kernel, KernelError, Process};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// Most events read per context.
pub const MAX_CONTEXT_EVENTS: usize = 1 << 14;
/// Most PMUs read on `pmus`.
pub const MAX_PMUS: usize = 1 << 10;

crate::kernel_layout! {
    /// Offsets of the context walk.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PerfContextLayout(p) {
        /// `perf_event_context.event_list`
        pub event_list: u64 = opt "perf_event_context" ["event_list"],
        /// `perf_event.event_entry`
        pub event_entry: u64 = opt "perf_event" ["event_entry"],
        /// `perf_event.pmu`
        pub pmu: u64 = opt "perf_event" ["pmu"],
        /// `pmu.name`
        pub pmu_name: u64 = opt "pmu" ["name"],
        /// `perf_event.overflow_handler`
        pub overflow_handler: u64 = opt "perf_event" ["overflow_handler"],
        /// `perf_cpu_context.ctx`
        pub cpu_ctx: u64 = opt "perf_cpu_context" ["ctx"],
        /// `pmu.entry` (on `pmus`; read before 6.2)
        pub pmu_entry: Option<u64> = opt "pmu" ["entry"],
        /// `pmu.pmu_cpu_context` (before 6.2)
        pub pmu_cpu_context: Option<u64> = opt "pmu" ["pmu_cpu_context"],
        /// `task_struct.perf_event_ctxp`
        pub task_ctxp: u64 = opt "task_struct" ["perf_event_ctxp"],
    }
    computed {
        /// How many pointers `task_struct.perf_event_ctxp` holds (two before 6.2, one
        /// from 6.2)
        pub task_ctxp_len: u64 = p
            .field("task_struct", "perf_event_ctxp")
            .and_then(|f| array_len(&f.ty))
            .unwrap_or(1)
            .clamp(1, 4),
    }
    symbols [
        ["nr_cpu_ids"],
        ["__per_cpu_offset"],
        opt ["perf_cpu_context"],
        opt ["pmus"],
    ]
}

/// Where an event is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PerfContext {
    /// A CPU's context.
    Cpu(u32),
    /// A task's context: its thread id and `comm` (guest bytes).
    Task(u32, Vec<u8>),
}

/// An event in a context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextEvent {
    /// The `struct perf_event`.
    pub at: Va,
    /// Its context.
    pub context: PerfContext,
    /// The PMU's name (guest bytes).
    pub pmu: Vec<u8>,
    /// `overflow_handler`.
    pub overflow_handler: Va,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// Every event in the CPU contexts and in the contexts of the threads of
    /// `processes`, each once.
    pub fn perf_context_events(
        &self,
        processes: &[Process],
    ) -> Result<Vec<ContextEvent>, KernelError> {
        // a kernel without perf events has none
        let Ok(l) = PerfContextLayout::from_profile(&self.profile) else {
            return Ok(Vec::new());
        };
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let cpus = self
            .space
            .read_u32(self.symbol("nr_cpu_ids")?)
            .map_err(read_err("nr_cpu_ids"))?
            .min(MAX_CPUS);
        let offsets = self.symbol("__per_cpu_offset")?;
        let offset = |cpu: u32| {
            self.space
                .read_u64(Va(offsets.0.wrapping_add(u64::from(cpu) * 8)))
                .map_err(read_err("__per_cpu_offset"))
        };
        // the per-CPU perf_cpu_context structures (zero-based per-CPU offsets)
        let mut cpu_contexts: Vec<u64> = Vec::new();
        if let Some(link) = self.profile.symbol("perf_cpu_context") {
            for cpu in 0..cpus {
                cpu_contexts.push(self.per_cpu(link, cpu)?.0);
            }
        } else if let Some((entry, pmu_cpu_context)) = l.pmu_entry.zip(l.pmu_cpu_context) {
            let mut kinds = HashSet::new();
            walk_list(
                &self.space,
                self.symbol("pmus")?,
                "pmus",
                MAX_PMUS,
                |node| {
                    let pmu = node.0.wrapping_sub(entry);
                    let percpu = self
                        .space
                        .read_u64(Va(pmu.wrapping_add(pmu_cpu_context)))
                        .map_err(read_err("pmu.pmu_cpu_context"))?;
                    if percpu != 0 {
                        kinds.insert(percpu);
                    }
                    Ok(())
                },
            )?;
            let mut kinds: Vec<u64> = kinds.into_iter().collect();
            kinds.sort_unstable();
            for k in kinds {
                for cpu in 0..cpus {
                    cpu_contexts.push(k.wrapping_add(offset(cpu)?));
                }
            }
        }
        for (i, ctx) in cpu_contexts.iter().enumerate() {
            let cpu = (i as u64 % u64::from(cpus.max(1))) as u32;
            let list = ctx.wrapping_add(l.cpu_ctx + l.event_list);
            context_events(
                &self.space,
                &l,
                list,
                &PerfContext::Cpu(cpu),
                &mut seen,
                &mut out,
            )?;
        }
        for p in processes {
            for t in &p.threads {
                let ptrs = self
                    .space
                    .read_bytes(
                        Va(t.task.0.wrapping_add(l.task_ctxp)),
                        8 * l.task_ctxp_len as usize,
                    )
                    .map_err(read_err("task_struct.perf_event_ctxp"))?;
                for c in ptrs.chunks_exact(8) {
                    let ctx = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
                    if ctx == 0 {
                        continue;
                    }
                    if !is_kernel_va(ctx) {
                        return Err(KernelError::BadPointer {
                            what: "task_struct.perf_event_ctxp",
                            value: ctx,
                        });
                    }
                    let context = PerfContext::Task(t.tid, t.comm.clone());
                    let list = ctx.wrapping_add(l.event_list);
                    context_events(&self.space, &l, list, &context, &mut seen, &mut out)?;
                }
            }
        }
        Ok(out)
    }
}

/// The events on the context list at `list` not `seen` before.
pub fn context_events<V: VirtualMemory + ?Sized>(
    mem: &V,
    l: &PerfContextLayout,
    list: u64,
    context: &PerfContext,
    seen: &mut HashSet<u64>,
    out: &mut Vec<ContextEvent>,
) -> Result<(), KernelError> {
    walk_list(
        mem,
        Va(list),
        "perf_event_context.event_list",
        MAX_CONTEXT_EVENTS,
        |node| {
            let at = node.0.wrapping_sub(l.event_entry);
            if !seen.insert(at) {
                return Ok(());
            }
            let read = |off: u64, what: &'static str| {
                mem.read_u64(Va(at.wrapping_add(off)))
                    .map_err(read_err(what))
            };
            let pmu = pmu_name(mem, read(l.pmu, "perf_event.pmu")?, l.pmu_name)?;
            out.push(ContextEvent {
                at: Va(at),
                context: context.clone(),
                pmu,
                overflow_handler: Va(read(l.overflow_handler, "perf_event.overflow_handler")?),
            });
            Ok(())
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::objects::tests::Flat;

    const BASE: u64 = 0xffff_8880_0000_0000;

    fn layout() -> PerfContextLayout {
        PerfContextLayout {
            event_list: 0x60,
            event_entry: 0,
            pmu: 0x98,
            pmu_name: 0x30,
            overflow_handler: 0x398,
            cpu_ctx: 0,
            pmu_entry: None,
            pmu_cpu_context: None,
            task_ctxp: 0,
            task_ctxp_len: 1,
        }
    }

    #[test]
    fn events_of_a_context_once_each() {
        let mut m = Flat::new(BASE, 0x8000);
        let ctx = BASE + 0x100;
        let (e1, e2) = (BASE + 0x1000, BASE + 0x2000);
        let put = |m: &mut Flat, at: u64, v: u64| m.put(at, &v.to_le_bytes());
        put(&mut m, ctx + 0x60, e1);
        put(&mut m, e1, e2);
        put(&mut m, e2, ctx + 0x60);
        put(&mut m, e1 + 0x98, BASE + 0x3000);
        put(&mut m, BASE + 0x3030, BASE + 0x3100);
        m.put(BASE + 0x3100, b"software\0");
        put(&mut m, e1 + 0x398, 0xffff_ffff_c000_1000);
        put(&mut m, e2 + 0x398, 0xffff_ffff_8100_2000);
        let (mut seen, mut out) = (HashSet::new(), Vec::new());
        let c = PerfContext::Cpu(0);
        context_events(&m, &layout(), ctx + 0x60, &c, &mut seen, &mut out).unwrap();
        // the same list again (a context shared by two PMUs) adds nothing
        context_events(&m, &layout(), ctx + 0x60, &c, &mut seen, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].pmu, b"software");
        assert_eq!(out[0].overflow_handler, Va(0xffff_ffff_c000_1000));
        assert!(out[1].pmu.is_empty());
        // a list that loops
        put(&mut m, e2, e1);
        let (mut seen, mut out) = (HashSet::new(), Vec::new());
        let e = context_events(&m, &layout(), ctx + 0x60, &c, &mut seen, &mut out).unwrap_err();
        assert!(matches!(e, KernelError::Cycle { .. }), "{e}");
    }
}
