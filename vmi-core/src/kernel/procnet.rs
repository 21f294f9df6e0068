//! The operations behind `/proc/net/{tcp,udp,raw}*` (and `arp`, `unix`, `packet`): what `netstat` and `ss -p`-less
//! tools read to list sockets, and what rootkits hook to hide theirs.
//!
//! Each protocol's `/proc/net` file is a seq_file whose `struct seq_operations` is a
//! kernel table (`tcp4_seq_ops`, `tcp6_seq_ops`, `udp_seq_ops`, `udp6_seq_ops`,
//! `raw_seq_ops`, `raw6_seq_ops`, and `arp_seq_ops`, `unix_seq_ops`, `packet_seq_ops` of
//! the other socket lists: [`SEQ_OPS`]); a rootkit replaces its `show` (the
//! technique Volatility's `check_afinfo` looks for; the `*_seq_afinfo` structs that
//! held these pointers before 4.18 no longer do). The files themselves are
//! `struct proc_dir_entry`s under every network namespace's `net->proc_net`, children
//! in the `subdir` red-black tree (linked through `subdir_node`), each with its
//! `seq_ops` and `proc_ops`: a rootkit may also point an entry at tables of its own.
//! Both are read: the tables by symbol and the entries named in [`ENTRIES`] of every
//! namespace.
//!
//! Fields used: `net.proc_net`, `proc_dir_entry.subdir`, `.subdir_node`, `.name`,
//! `.seq_ops`, `.proc_ops`, `rb_root.rb_node`, `rb_node.rb_left`, `.rb_right`, and
//! the `ptr fn` members of `seq_operations` and `proc_ops`.
//!
//! Bounds: at most [`MAX_ENTRIES`] entries in all `proc_net` directories together; an
//! entry seen twice is a [`KernelError::Cycle`].

use crate::addr::Va;
use crate::kernel::objects::{
    fn_fields, is_kernel_va, name_at, rb_nodes, read_err, read_fn_table, FnTable,
};
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// The kernel's seq_operations tables of `/proc/net` socket lists, with their file.
pub const SEQ_OPS: &[(&str, &str)] = &[
    ("tcp4_seq_ops", "tcp"),
    ("tcp6_seq_ops", "tcp6"),
    ("udp_seq_ops", "udp"),
    ("udp6_seq_ops", "udp6"),
    ("raw_seq_ops", "raw"),
    ("raw6_seq_ops", "raw6"),
    ("arp_seq_ops", "arp"),
    ("unix_seq_ops", "unix"),
    ("packet_seq_ops", "packet"),
];

/// The `/proc/net` entries read (seq_files all, so `seq_ops` is what they hold).
pub const ENTRIES: &[&str] = &[
    "tcp", "tcp6", "udp", "udp6", "udplite", "udplite6", "raw", "raw6", "arp", "unix", "packet",
];

/// Most entries walked, every namespace's `proc_net` together (a namespace has about
/// 60).
pub const MAX_ENTRIES: usize = 1 << 16;

/// A kernel table by symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqOpsTable {
    /// The symbol.
    pub symbol: &'static str,
    /// The `/proc/net` file it serves.
    pub file: &'static str,
    /// The table.
    pub ops: FnTable,
}

/// A `/proc/net` entry of a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcNetEntry {
    /// The `struct net`.
    pub net: Va,
    /// The `struct proc_dir_entry`.
    pub pde: Va,
    /// Its name (one of [`ENTRIES`]).
    pub name: &'static str,
    /// Its `seq_ops` (`None` when null).
    pub seq_ops: Option<FnTable>,
    /// Its `proc_ops` (`None` when null).
    pub proc_ops: Option<FnTable>,
}

crate::kernel_layout! {
    /// Offsets the tree walk uses.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PdeLayout(p) {
        /// `proc_dir_entry.subdir_node`
        pub subdir_node: u64 = "proc_dir_entry" ["subdir_node"],
        /// `rb_node.rb_left`
        pub left: u64 = "rb_node" ["rb_left"],
        /// `rb_node.rb_right`
        pub right: u64 = "rb_node" ["rb_right"],
        /// `proc_dir_entry.name`
        pub name: u64 = "proc_dir_entry" ["name"],
        /// `proc_dir_entry.seq_ops`
        pub seq_ops: u64 = "proc_dir_entry" ["seq_ops"],
        /// `proc_dir_entry.proc_ops`
        pub proc_ops: u64 = "proc_dir_entry" ["proc_ops"],
        /// `net.proc_net`
        pub proc_net: u64 = "net" ["proc_net"],
        /// `proc_dir_entry.subdir`
        pub subdir_root: u64 = "proc_dir_entry" ["subdir"],
        /// `rb_root.rb_node`
        pub rb_node: u64 = "rb_root" ["rb_node"],
    }
    computed {
        /// `proc_dir_entry.subdir` + `rb_root.rb_node`
        pub subdir: u64 = subdir_root + rb_node,
    }
    // the operation tables are read as every `ptr fn` member the profile has
    // (`fn_fields`): these at least
    also [
        "seq_operations" ["start"],
        "seq_operations" ["stop"],
        "seq_operations" ["next"],
        "seq_operations" ["show"],
        "proc_ops" ["proc_open"],
        "proc_ops" ["proc_read"],
        "proc_ops" ["proc_read_iter"],
        "proc_ops" ["proc_write"],
        "proc_ops" ["proc_lseek"],
        "proc_ops" ["proc_release"],
    ]
    // the tables of SEQ_OPS (a test checks they agree)
    symbols [
        ["tcp4_seq_ops"],
        ["udp_seq_ops"],
        opt ["tcp6_seq_ops"],
        opt ["udp6_seq_ops"],
        opt ["raw_seq_ops"],
        opt ["raw6_seq_ops"],
        opt ["arp_seq_ops"],
        opt ["unix_seq_ops"],
        opt ["packet_seq_ops"],
    ]
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The tables of [`SEQ_OPS`] the kernel has.
    pub fn seq_ops_tables(&self) -> Result<Vec<SeqOpsTable>, KernelError> {
        let fields = fn_fields(&self.profile, "seq_operations")?;
        SEQ_OPS
            .iter()
            .filter_map(|&(symbol, file)| self.symbol(symbol).ok().map(|at| (symbol, file, at)))
            .map(|(symbol, file, at)| {
                Ok(SeqOpsTable {
                    symbol,
                    file,
                    ops: read_fn_table(&self.space, &fields, at, "seq_operations")?,
                })
            })
            .collect()
    }

    /// The entries of [`ENTRIES`] under each namespace's `proc_net`.
    pub fn proc_net_entries(&self, nets: &[Va]) -> Result<Vec<ProcNetEntry>, KernelError> {
        let p = &self.profile;
        let seq = fn_fields(p, "seq_operations")?;
        let fops = fn_fields(p, "proc_ops")?;
        let l = PdeLayout::from_profile(p)?;
        let (proc_net, seq_off, fops_off) = (l.proc_net, l.seq_ops, l.proc_ops);
        let mem = &self.space;
        let mut out = Vec::new();
        let mut walked = 0usize;
        for &net in nets {
            let dir = mem
                .read_u64(Va(net.0.wrapping_add(proc_net)))
                .map_err(read_err("net.proc_net"))?;
            if dir == 0 {
                continue;
            }
            let entries = children(mem, &l, Va(dir), MAX_ENTRIES - walked)?;
            walked += entries.len();
            for (pde, name) in entries {
                let Some(&name) = ENTRIES.iter().find(|e| e.as_bytes() == name.as_slice()) else {
                    continue;
                };
                let table = |off: u64, fields, what| -> Result<Option<FnTable>, KernelError> {
                    let at = mem
                        .read_u64(Va(pde.0.wrapping_add(off)))
                        .map_err(read_err(what))?;
                    if at == 0 {
                        return Ok(None);
                    }
                    read_fn_table(mem, fields, Va(at), what).map(Some)
                };
                out.push(ProcNetEntry {
                    net,
                    pde,
                    name,
                    seq_ops: table(seq_off, &seq, "proc_dir_entry.seq_ops")?,
                    proc_ops: table(fops_off, &fops, "proc_dir_entry.proc_ops")?,
                });
            }
        }
        Ok(out)
    }
}

/// The children of the directory entry `dir` with their names (guest bytes), at most
/// `max` of them.
pub fn children<V: VirtualMemory + ?Sized>(
    mem: &V,
    l: &PdeLayout,
    dir: Va,
    max: usize,
) -> Result<Vec<(Va, Vec<u8>)>, KernelError> {
    let what = "proc_dir_entry.subdir";
    if !is_kernel_va(dir.0) {
        return Err(KernelError::BadPointer { what, value: dir.0 });
    }
    let root = mem
        .read_u64(Va(dir.0.wrapping_add(l.subdir)))
        .map_err(read_err(what))?;
    let mut out = Vec::new();
    for node in rb_nodes(mem, root, (l.left, l.right), max, what)? {
        let pde = Va(node.wrapping_sub(l.subdir_node));
        let name = mem
            .read_u64(Va(pde.0.wrapping_add(l.name)))
            .map_err(read_err("proc_dir_entry.name"))?;
        out.push((pde, name_at(mem, name, 256)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::objects::tests::Flat;

    const BASE: u64 = 0xffff_8880_0000_0000;

    /// 6.1's offsets.
    fn layout() -> PdeLayout {
        PdeLayout {
            subdir: 128,
            subdir_root: 128,
            rb_node: 0,
            seq_ops: 0,
            proc_ops: 0,
            proc_net: 0,
            subdir_node: 136,
            left: 16,
            right: 8,
            name: 160,
        }
    }

    fn put(m: &mut Flat, at: u64, v: u64) {
        m.put(at, &v.to_le_bytes());
    }

    /// A directory at BASE with children "tcp" (0x400, the root), "raw" (0x200, left)
    /// and "udp" (0x600, right).
    fn guest() -> Flat {
        let mut m = Flat::new(BASE, 0x2000);
        let l = layout();
        let node = |pde: u64| BASE + pde + l.subdir_node;
        put(&mut m, BASE + l.subdir, node(0x400));
        put(&mut m, node(0x400) + l.left, node(0x200));
        put(&mut m, node(0x400) + l.right, node(0x600));
        for (pde, name) in [(0x200u64, "raw"), (0x400, "tcp"), (0x600, "udp")] {
            let s = BASE + 0x1000 + pde;
            m.put(s, format!("{name}\0").as_bytes());
            put(&mut m, BASE + pde + l.name, s);
        }
        m
    }

    #[test]
    fn every_child_is_found() {
        let m = guest();
        let mut got: Vec<(u64, String)> = children(&m, &layout(), Va(BASE), 10)
            .unwrap()
            .into_iter()
            .map(|(p, n)| (p.0 - BASE, String::from_utf8(n).unwrap()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (0x200, "raw".to_string()),
                (0x400, "tcp".into()),
                (0x600, "udp".into())
            ]
        );
    }

    #[test]
    fn loops_and_wild_pointers_are_errors() {
        let l = layout();
        let mut m = guest();
        // udp's right child is the root again
        put(
            &mut m,
            BASE + 0x600 + l.subdir_node + l.right,
            BASE + 0x400 + l.subdir_node,
        );
        let e = children(&m, &l, Va(BASE), 10).unwrap_err();
        assert!(matches!(e, KernelError::Cycle { .. }), "{e}");
        let mut m = guest();
        put(&mut m, BASE + 0x200 + l.subdir_node + l.left, 0x4141);
        let e = children(&m, &l, Va(BASE), 10).unwrap_err();
        assert!(
            matches!(e, KernelError::BadPointer { value: 0x4141, .. }),
            "{e}"
        );
    }
}
