//! ftrace: every registered `ftrace_ops` and the functions it hooks.
//!
//! `register_ftrace_function` links an `ftrace_ops` into `ftrace_ops_list` (through
//! `ops->next`; the list ends at the static `ftrace_list_end`, not at null) and patches
//! the `call __fentry__` site of each function the ops filters on to call its
//! trampoline, which calls `ops->func` on every entry to those functions. A rootkit
//! that hooks a system call this way changes no table and no byte of kernel text
//! outside the patch sites the kernel itself rewrites.
//!
//! The functions an ops hooks are the `ip`s of the `ftrace_func_entry`s in its filter
//! hash (`ops->func_hash->filter_hash`: `1 << size_bits` hlist buckets); a hash with a
//! `count` of 0 means every function (`ftrace_hash_empty`), minus those of the notrace
//! hash. Ops with direct calls (6.3 on, `direct_call` and each entry's `direct`) jump
//! to that address instead of calling `func`.
//!
//! Fields used ([`FtraceLayout`]): `ftrace_ops.func`, `.next`, `.flags`, `.saved_func`,
//! `.func_hash`, `.trampoline`, `.trampoline_size`, `.direct_call` (optional),
//! `ftrace_ops_hash.filter_hash`, `.notrace_hash`, `ftrace_hash.size_bits`, `.buckets`,
//! `.count`, `ftrace_func_entry.hlist`, `.ip`, `.direct`. Symbols: `ftrace_ops_list`,
//! `ftrace_list_end`.
//!
//! Bounds: at most [`MAX_FTRACE_OPS`] ops, [`MAX_FTRACE_ENTRIES`] filter entries in
//! all, and a hash of at most `FTRACE_HASH_MAX_BITS` (12) bits; an ops or an entry seen
//! twice is a [`KernelError::Cycle`].

use crate::addr::Va;
use crate::kernel::objects::{flag_names, is_kernel_va, read_err, u64_at, walk_chain, walk_hlist};
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// Most ftrace_ops walked.
pub const MAX_FTRACE_OPS: usize = 4096;
/// Most filter entries read, all ops together (every traceable function of a 7.x
/// kernel is about 60,000).
pub const MAX_FTRACE_ENTRIES: usize = 1 << 18;
/// `FTRACE_HASH_MAX_BITS`.
pub const FTRACE_HASH_MAX_BITS: u64 = 12;

/// `FTRACE_OPS_FL_*` names, bit by bit (as in 5.10 to 7.x: `ENABLED` is bit 0).
pub const FLAG_NAMES: [&str; 19] = [
    "ENABLED",
    "DYNAMIC",
    "SAVE_REGS",
    "SAVE_REGS_IF_SUPPORTED",
    "RECURSION",
    "STUB",
    "INITIALIZED",
    "DELETED",
    "ADDING",
    "REMOVING",
    "MODIFYING",
    "ALLOC_TRAMP",
    "IPMODIFY",
    "PID",
    "RCU",
    "TRACE_ARRAY",
    "PERMANENT",
    "DIRECT",
    "SUBOP",
];

crate::kernel_layout! {
    /// Offsets the walk uses.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct FtraceLayout(p) {
        /// `ftrace_ops.func`
        pub func: u64 = "ftrace_ops" ["func"],
        /// `ftrace_ops.next`
        pub next: u64 = "ftrace_ops" ["next"],
        /// `ftrace_ops.flags`
        pub flags: u64 = "ftrace_ops" ["flags"],
        /// `ftrace_ops.saved_func`
        pub saved_func: u64 = "ftrace_ops" ["saved_func"],
        /// `ftrace_ops.func_hash`
        pub func_hash: u64 = "ftrace_ops" ["func_hash"],
        /// `ftrace_ops.trampoline`
        pub trampoline: u64 = "ftrace_ops" ["trampoline"],
        /// `ftrace_ops.trampoline_size`
        pub trampoline_size: u64 = "ftrace_ops" ["trampoline_size"],
        /// `ftrace_ops.direct_call` (6.3 on)
        pub direct_call: Option<u64> = opt "ftrace_ops" ["direct_call"],
        /// `ftrace_ops_hash.filter_hash`
        pub filter_hash: u64 = "ftrace_ops_hash" ["filter_hash"],
        /// `ftrace_ops_hash.notrace_hash`
        pub notrace_hash: u64 = "ftrace_ops_hash" ["notrace_hash"],
        /// `ftrace_hash.size_bits`
        pub size_bits: u64 = "ftrace_hash" ["size_bits"],
        /// `ftrace_hash.buckets`
        pub buckets: u64 = "ftrace_hash" ["buckets"],
        /// `ftrace_hash.count`
        pub count: u64 = "ftrace_hash" ["count"],
        /// `ftrace_func_entry.hlist`
        pub entry_hlist: u64 = "ftrace_func_entry" ["hlist"],
        /// `ftrace_func_entry.ip`
        pub entry_ip: u64 = "ftrace_func_entry" ["ip"],
        /// `ftrace_func_entry.direct`
        pub entry_direct: u64 = "ftrace_func_entry" ["direct"],
    }
    symbols [
        ["ftrace_ops_list"],
        ["ftrace_list_end"],
    ]
}

impl FtraceLayout {
    /// Bytes of an `ftrace_ops` read in one go.
    fn ops_span(&self) -> usize {
        let last = [
            self.func,
            self.next,
            self.flags,
            self.saved_func,
            self.func_hash,
            self.trampoline,
            self.trampoline_size,
            self.direct_call.unwrap_or(0),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        last as usize + 8
    }
}

/// One function an ops filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterEntry {
    /// The function's ftrace site (its `call __fentry__`).
    pub ip: Va,
    /// Where a direct call jumps (0 for none).
    pub direct: Va,
}

/// Which functions an ops hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Every traceable function (the filter hash is empty).
    All,
    /// These functions.
    Functions(Vec<FilterEntry>),
}

/// A registered `ftrace_ops`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FtraceOps {
    /// The `struct ftrace_ops`.
    pub addr: Va,
    /// `func`: what the trampoline calls.
    pub func: Va,
    /// `saved_func`: the callback as registered (`func` may be a wrapper such as
    /// `ftrace_pid_func`).
    pub saved_func: Va,
    /// `flags` (`FTRACE_OPS_FL_*`).
    pub flags: u64,
    /// `trampoline` (0 when none was made).
    pub trampoline: Va,
    /// `trampoline_size`.
    pub trampoline_size: u64,
    /// `direct_call` (6.3 on; 0 for none).
    pub direct_call: Option<Va>,
    /// The functions it hooks.
    pub filter: Filter,
    /// Functions excluded (the notrace hash's `count`).
    pub notrace: u64,
}

impl FtraceOps {
    /// The names of the set `FTRACE_OPS_FL_*` flags, `|`-separated.
    pub fn flag_names(&self) -> String {
        flag_names(&FLAG_NAMES, self.flags)
    }
}

impl<M: PhysicalMemory> Kernel<M> {
    /// Every `ftrace_ops` on `ftrace_ops_list`, in list order.
    pub fn ftrace_ops(&self) -> Result<Vec<FtraceOps>, KernelError> {
        let l = FtraceLayout::from_profile(&self.profile)?;
        walk_ops(
            &self.space,
            &l,
            self.symbol("ftrace_ops_list")?,
            self.symbol("ftrace_list_end")?,
        )
    }
}

/// Walk the list whose head pointer is at `list` and that ends at `end`.
pub fn walk_ops<V: VirtualMemory + ?Sized>(
    mem: &V,
    l: &FtraceLayout,
    list: Va,
    end: Va,
) -> Result<Vec<FtraceOps>, KernelError> {
    let first = mem.read_u64(list).map_err(read_err("ftrace_ops_list"))?;
    let mut out = Vec::new();
    let mut left = MAX_FTRACE_ENTRIES;
    walk_chain(
        mem,
        first,
        end.0,
        l.next,
        "ftrace_ops_list",
        MAX_FTRACE_OPS,
        |at| {
            out.push(read_ops(mem, l, at, &mut left)?);
            Ok(())
        },
    )?;
    Ok(out)
}

/// One ops; at most `left` filter entries more are read.
fn read_ops<V: VirtualMemory + ?Sized>(
    mem: &V,
    l: &FtraceLayout,
    at: Va,
    left: &mut usize,
) -> Result<FtraceOps, KernelError> {
    let b = mem
        .read_bytes(at, l.ops_span())
        .map_err(read_err("ftrace_ops"))?;
    let hash = u64_at(&b, l.func_hash);
    let (filter, notrace) = if hash == 0 {
        (Filter::All, 0)
    } else {
        if !is_kernel_va(hash) {
            return Err(KernelError::BadPointer {
                what: "ftrace_ops.func_hash",
                value: hash,
            });
        }
        let ptrs = mem
            .read_bytes(Va(hash), (l.filter_hash.max(l.notrace_hash) + 8) as usize)
            .map_err(read_err("ftrace_ops_hash"))?;
        let filter = match read_hash(mem, l, u64_at(&ptrs, l.filter_hash), Some(left))? {
            (0, _) => Filter::All,
            (_, entries) => Filter::Functions(entries),
        };
        let (notrace, _) = read_hash(mem, l, u64_at(&ptrs, l.notrace_hash), None)?;
        (filter, notrace)
    };
    Ok(FtraceOps {
        addr: at,
        func: Va(u64_at(&b, l.func)),
        saved_func: Va(u64_at(&b, l.saved_func)),
        flags: u64_at(&b, l.flags),
        trampoline: Va(u64_at(&b, l.trampoline)),
        trampoline_size: u64_at(&b, l.trampoline_size),
        direct_call: l.direct_call.map(|o| Va(u64_at(&b, o))),
        filter,
        notrace,
    })
}

/// A hash's `count` and, with a budget of entries `left`, its entries (none for a null
/// hash).
fn read_hash<V: VirtualMemory + ?Sized>(
    mem: &V,
    l: &FtraceLayout,
    hash: u64,
    left: Option<&mut usize>,
) -> Result<(u64, Vec<FilterEntry>), KernelError> {
    if hash == 0 {
        return Ok((0, Vec::new()));
    }
    if !is_kernel_va(hash) {
        return Err(KernelError::BadPointer {
            what: "ftrace_hash",
            value: hash,
        });
    }
    let span = [l.size_bits, l.buckets, l.count]
        .into_iter()
        .max()
        .unwrap_or(0)
        + 8;
    let h = mem
        .read_bytes(Va(hash), span as usize)
        .map_err(read_err("ftrace_hash"))?;
    let count = u64_at(&h, l.count);
    let Some(left) = left.filter(|_| count != 0) else {
        return Ok((count, Vec::new()));
    };
    let bits = u64_at(&h, l.size_bits);
    if bits > FTRACE_HASH_MAX_BITS {
        return Err(KernelError::Corrupt {
            what: format!("ftrace_hash of {bits} bits (at most {FTRACE_HASH_MAX_BITS})"),
            at: Va(hash),
        });
    }
    let buckets = u64_at(&h, l.buckets);
    if !is_kernel_va(buckets) {
        return Err(KernelError::BadPointer {
            what: "ftrace_hash.buckets",
            value: buckets,
        });
    }
    let heads = mem
        .read_bytes(Va(buckets), 8 << bits)
        .map_err(read_err("ftrace_hash buckets"))?;
    let mut out = Vec::new();
    for (i, first) in heads.chunks_exact(8).enumerate() {
        if first.iter().all(|&b| b == 0) {
            continue;
        }
        let head = Va(buckets + 8 * i as u64);
        let budget = left.saturating_sub(out.len());
        walk_hlist(mem, head, "ftrace_hash bucket", budget, |node| {
            let e = Va(node.0.wrapping_sub(l.entry_hlist));
            let span = l.entry_ip.max(l.entry_direct) + 8;
            let b = mem
                .read_bytes(e, span as usize)
                .map_err(read_err("ftrace_func_entry"))?;
            out.push(FilterEntry {
                ip: Va(u64_at(&b, l.entry_ip)),
                direct: Va(u64_at(&b, l.entry_direct)),
            });
            Ok(())
        })?;
    }
    *left = left.saturating_sub(out.len());
    Ok((count, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::objects::tests::Flat;

    const BASE: u64 = 0xffff_8880_0000_0000;

    /// 6.1's offsets.
    fn layout() -> FtraceLayout {
        FtraceLayout {
            func: 0,
            next: 8,
            flags: 16,
            saved_func: 32,
            func_hash: 88,
            trampoline: 144,
            trampoline_size: 152,
            direct_call: None,
            filter_hash: 8,
            notrace_hash: 0,
            size_bits: 0,
            buckets: 8,
            count: 16,
            entry_hlist: 0,
            entry_ip: 16,
            entry_direct: 24,
        }
    }

    fn put(m: &mut Flat, at: u64, v: u64) {
        m.put(at, &v.to_le_bytes());
    }

    /// list head at BASE, end marker at BASE+0x100, two ops: one with a 2-bucket
    /// filter hash of three functions, one with an empty hash.
    fn guest() -> Flat {
        let mut m = Flat::new(BASE, 0x4000);
        let (head, end, a, b) = (BASE, BASE + 0x100, BASE + 0x200, BASE + 0x400);
        put(&mut m, head, a);
        put(&mut m, a + 8, b);
        put(&mut m, b + 8, end);
        put(&mut m, a, 0xffff_ffff_c000_1000);
        put(&mut m, a + 32, 0xffff_ffff_c000_1000);
        put(&mut m, a + 16, 1 | 1 << 2);
        put(&mut m, b, 0xffff_ffff_8100_2000);
        // a's func_hash → ops_hash at 0x800 → filter hash at 0x900, buckets at 0xa00
        put(&mut m, a + 88, BASE + 0x800);
        put(&mut m, BASE + 0x808, BASE + 0x900);
        put(&mut m, BASE + 0x900, 1); // size_bits
        put(&mut m, BASE + 0x908, BASE + 0xa00);
        put(&mut m, BASE + 0x910, 3); // count
                                      // bucket 0: e1 → e2; bucket 1: e3
        let (e1, e2, e3) = (BASE + 0xb00, BASE + 0xb40, BASE + 0xb80);
        put(&mut m, BASE + 0xa00, e1);
        put(&mut m, e1, e2);
        put(&mut m, BASE + 0xa08, e3);
        for (e, ip) in [(e1, 0x10), (e2, 0x20), (e3, 0x30)] {
            put(&mut m, e + 16, 0xffff_ffff_8100_0000 + ip);
        }
        // b's func_hash → ops_hash at 0xc00 whose filter hash has count 0
        put(&mut m, b + 88, BASE + 0xc00);
        put(&mut m, BASE + 0xc08, BASE + 0xd00);
        put(&mut m, BASE + 0xd08, BASE + 0xe00);
        m
    }

    #[test]
    fn every_ops_and_every_bucket_is_read() {
        let m = guest();
        let ops = walk_ops(&m, &layout(), Va(BASE), Va(BASE + 0x100)).unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].func, Va(0xffff_ffff_c000_1000));
        assert_eq!(ops[0].flag_names(), "ENABLED|SAVE_REGS");
        let Filter::Functions(f) = &ops[0].filter else {
            panic!("{:?}", ops[0].filter)
        };
        let ips: Vec<u64> = f.iter().map(|e| e.ip.0 - 0xffff_ffff_8100_0000).collect();
        assert_eq!(ips, vec![0x10, 0x20, 0x30]);
        assert_eq!(ops[1].filter, Filter::All);
    }

    #[test]
    fn loops_wild_pointers_and_huge_hashes_are_errors() {
        let mut m = guest();
        put(&mut m, BASE + 0x400 + 8, BASE + 0x200);
        let e = walk_ops(&m, &layout(), Va(BASE), Va(BASE + 0x100)).unwrap_err();
        assert!(matches!(e, KernelError::Cycle { after: 2, .. }), "{e}");

        let mut m = guest();
        put(&mut m, BASE + 0x200 + 8, 0x4141);
        let e = walk_ops(&m, &layout(), Va(BASE), Va(BASE + 0x100)).unwrap_err();
        assert!(
            matches!(e, KernelError::BadPointer { value: 0x4141, .. }),
            "{e}"
        );

        let mut m = guest();
        put(&mut m, BASE + 0x900, 40);
        let e = walk_ops(&m, &layout(), Va(BASE), Va(BASE + 0x100)).unwrap_err();
        assert!(e.to_string().contains("40 bits"), "{e}");

        // an entry that points back into its bucket
        let mut m = guest();
        put(&mut m, BASE + 0xb40, BASE + 0xb00);
        let e = walk_ops(&m, &layout(), Va(BASE), Va(BASE + 0x100)).unwrap_err();
        assert!(matches!(e, KernelError::Cycle { .. }), "{e}");
    }
}
