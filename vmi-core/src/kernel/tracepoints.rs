//! Tracepoints: the kernel's static tracepoints and the probes registered on them.
//!
//! Every tracepoint of the kernel image is a `struct tracepoint` in the `__tracepoints`
//! section, listed by `__start___tracepoints_ptrs` .. `__stop___tracepoints_ptrs`. On
//! x86-64 (`CONFIG_HAVE_ARCH_PREL32_RELOCATIONS`) each entry is a 32-bit offset from
//! the entry's own address. `tracepoint_probe_register` puts a `tracepoint_func`
//! (`func`, `data`, `prio`) into the tracepoint's `funcs` array, which ends at a null
//! `func`; the kernel calls each `func` whenever the tracepoint fires.
//!
//! Fields used: `tracepoint.name`, `.funcs`, `tracepoint_func.func`, `.data`, `.prio`
//! (and its size, the array stride). Symbols: `__start___tracepoints_ptrs`,
//! `__stop___tracepoints_ptrs`. Tracepoints defined by modules (`module.tracepoints_ptrs`)
//! are not read here.
//!
//! Bounds: at most [`MAX_TRACEPOINTS`] tracepoints and [`MAX_PROBES`] probes in all.

use crate::addr::Va;
use crate::kernel::objects::{is_kernel_va, read_err, u32_at, u64_at};
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// Most tracepoints read (a 7.x kernel has about 1,800).
pub const MAX_TRACEPOINTS: u64 = 1 << 16;
/// Most probes read, all tracepoints together.
pub const MAX_PROBES: usize = 1 << 16;
/// Longest tracepoint name read.
pub const MAX_NAME: usize = 256;

crate::kernel_layout! {
    /// Offsets the walk uses.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct TracepointLayout(p) {
        /// `tracepoint.name`
        pub name: u64 = "tracepoint" ["name"],
        /// `tracepoint.funcs`
        pub funcs: u64 = "tracepoint" ["funcs"],
        /// `tracepoint_func.func`
        pub func: u64 = "tracepoint_func" ["func"],
        /// `tracepoint_func.data`
        pub data: u64 = "tracepoint_func" ["data"],
        /// `tracepoint_func.prio`
        pub prio: u64 = "tracepoint_func" ["prio"],
    }
    computed {
        /// `sizeof(struct tracepoint_func)`
        pub func_size: u64 = p
            .types
            .get("tracepoint_func")
            .map(|t| t.size)
            .filter(|&s| (8..=64).contains(&s))
            .ok_or_else(|| KernelError::MissingField("tracepoint_func (its size)".into()))?,
    }
    symbols [
        ["__start___tracepoints_ptrs"],
        ["__stop___tracepoints_ptrs"],
    ]
}

/// A probe on a tracepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TracepointProbe {
    /// `func`: what the tracepoint calls.
    pub func: Va,
    /// `data`: its first argument.
    pub data: Va,
    /// `prio`.
    pub prio: i32,
}

/// A tracepoint with probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracepoint {
    /// The `struct tracepoint`.
    pub at: Va,
    /// Its name (guest bytes).
    pub name: Vec<u8>,
    /// Its probes, in call order.
    pub probes: Vec<TracepointProbe>,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The kernel's tracepoints that have probes registered.
    pub fn tracepoints(&self) -> Result<Vec<Tracepoint>, KernelError> {
        let l = TracepointLayout::from_profile(&self.profile)?;
        walk_tracepoints(
            &self.space,
            &l,
            self.symbol("__start___tracepoints_ptrs")?,
            self.symbol("__stop___tracepoints_ptrs")?,
        )
    }
}

/// Read the tracepoints listed in `start..stop` (PC-relative 32-bit entries) and keep
/// those with probes.
pub fn walk_tracepoints<V: VirtualMemory + ?Sized>(
    mem: &V,
    l: &TracepointLayout,
    start: Va,
    stop: Va,
) -> Result<Vec<Tracepoint>, KernelError> {
    let n = stop.0.checked_sub(start.0).unwrap_or(u64::MAX) / 4;
    if n > MAX_TRACEPOINTS {
        return Err(KernelError::Corrupt {
            what: format!(
                "__start___tracepoints_ptrs..__stop___tracepoints_ptrs holds {n} entries (at most {MAX_TRACEPOINTS})"
            ),
            at: start,
        });
    }
    let ptrs = mem
        .read_bytes(start, n as usize * 4)
        .map_err(read_err("__start___tracepoints_ptrs"))?;
    let mut out = Vec::new();
    let mut total = 0usize;
    for (i, c) in ptrs.chunks_exact(4).enumerate() {
        let rel = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let tp = Va(start
            .0
            .wrapping_add(4 * i as u64)
            .wrapping_add(i64::from(rel) as u64));
        let funcs = mem
            .read_u64(Va(tp.0.wrapping_add(l.funcs)))
            .map_err(read_err("tracepoint.funcs"))?;
        if funcs == 0 {
            continue;
        }
        if !is_kernel_va(funcs) {
            return Err(KernelError::BadPointer {
                what: "tracepoint.funcs",
                value: funcs,
            });
        }
        let mut probes = Vec::new();
        loop {
            if total >= MAX_PROBES {
                return Err(KernelError::TooLong {
                    what: "tracepoint.funcs",
                    max: MAX_PROBES,
                });
            }
            let at = funcs.wrapping_add(probes.len() as u64 * l.func_size);
            let b = mem
                .read_bytes(Va(at), l.func_size as usize)
                .map_err(read_err("tracepoint_func"))?;
            let func = u64_at(&b, l.func);
            if func == 0 {
                break;
            }
            probes.push(TracepointProbe {
                func: Va(func),
                data: Va(u64_at(&b, l.data)),
                prio: u32_at(&b, l.prio) as i32,
            });
            total += 1;
        }
        let name = mem
            .read_u64(Va(tp.0.wrapping_add(l.name)))
            .ok()
            .filter(|&p| is_kernel_va(p))
            .and_then(|p| mem.read_cstr(Va(p), MAX_NAME).ok())
            .unwrap_or_default();
        out.push(Tracepoint {
            at: tp,
            name,
            probes,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::objects::tests::Flat;

    const BASE: u64 = 0xffff_ffff_8200_0000;

    fn layout() -> TracepointLayout {
        TracepointLayout {
            name: 0,
            funcs: 64,
            func: 0,
            data: 8,
            prio: 16,
            func_size: 24,
        }
    }

    /// Pointers at 0x100 to tracepoints at 0x1000 (no probes) and 0x1100 (two).
    fn guest() -> Flat {
        let mut m = Flat::new(BASE, 0x4000);
        m.put(BASE + 0x100, &(0x1000i32 - 0x100).to_le_bytes());
        m.put(BASE + 0x104, &(0x1100i32 - 0x104).to_le_bytes());
        m.put(BASE + 0x1100, &(BASE + 0x3000).to_le_bytes());
        m.put(BASE + 0x3000, b"sys_enter\0");
        m.put(BASE + 0x1100 + 64, &(BASE + 0x2000).to_le_bytes());
        m.put(BASE + 0x2000, &0xffff_ffff_8100_1000u64.to_le_bytes());
        m.put(BASE + 0x2018, &0xffff_ffff_c000_1000u64.to_le_bytes());
        m.put(BASE + 0x2028, &(-5i32).to_le_bytes());
        m
    }

    #[test]
    fn tracepoints_with_probes_are_read() {
        let m = guest();
        let tps = walk_tracepoints(&m, &layout(), Va(BASE + 0x100), Va(BASE + 0x108)).unwrap();
        assert_eq!(tps.len(), 1);
        assert_eq!(tps[0].name, b"sys_enter");
        assert_eq!(tps[0].at, Va(BASE + 0x1100));
        let funcs: Vec<(u64, i32)> = tps[0].probes.iter().map(|p| (p.func.0, p.prio)).collect();
        assert_eq!(
            funcs,
            vec![(0xffff_ffff_8100_1000, 0), (0xffff_ffff_c000_1000, -5)]
        );
    }

    #[test]
    fn bad_ranges_and_pointers_are_errors() {
        let m = guest();
        let e = walk_tracepoints(&m, &layout(), Va(BASE + 0x108), Va(BASE + 0x100)).unwrap_err();
        assert!(e.to_string().contains("entries"), "{e}");
        let mut m = guest();
        m.put(BASE + 0x1100 + 64, &0x4141u64.to_le_bytes());
        let e = walk_tracepoints(&m, &layout(), Va(BASE + 0x100), Va(BASE + 0x108)).unwrap_err();
        assert!(
            matches!(e, KernelError::BadPointer { value: 0x4141, .. }),
            "{e}"
        );
    }
}
