//! `afinfo`: the operations behind `/proc/net/{tcp,udp,raw}*` must be kernel text.
//!
//! `netstat` and other tools read sockets from these seq_files; a rootkit replaces
//! the `show` of `tcp4_seq_ops` (or points a `/proc/net` entry at a table of its own)
//! to hide its connections and listeners: Volatility's `check_afinfo`. The kernel's
//! tables are read by symbol, and the `seq_ops` and `proc_ops` of the `/proc/net`
//! entries of every network namespace; each table with functions outside kernel text
//! is one finding (reported once however many entries use it) with the file, the
//! members and the owner. See [`vmi_core::kernel::procnet`].

use std::collections::BTreeMap;

use vmi_core::memory::PhysicalMemory;
use vmi_core::Va;

use crate::checks::{table_finding, CheckFailure, Scan};
use crate::finding::Finding;

const NAME: &str = "afinfo";

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    scan.kernel.text_range()?;
    // table → (its symbol, the files that use it, the table)
    let mut tables: BTreeMap<Va, (Option<&str>, Vec<String>, _)> = BTreeMap::new();
    for t in scan.kernel.seq_ops_tables()? {
        tables.insert(
            t.ops.at,
            (Some(t.symbol), vec![format!("/proc/net/{}", t.file)], t.ops),
        );
    }
    let init_net = scan.kernel.symbol("init_net").ok();
    for e in scan.kernel.proc_net_entries(scan.namespaces()?)? {
        let file = if Some(e.net) == init_net {
            format!("/proc/net/{}", e.name)
        } else {
            format!("/proc/net/{} of the namespace at {:#x}", e.name, e.net.0)
        };
        for (kind, t) in [("seq_ops", e.seq_ops), ("proc_ops", e.proc_ops)] {
            let Some(t) = t else { continue };
            let entry = tables.entry(t.at).or_insert((None, Vec::new(), t));
            let label = format!("{file} ({kind})");
            if !entry.1.iter().any(|f| label.starts_with(f.as_str())) {
                entry.1.push(label);
            }
        }
    }
    let mut findings = Vec::new();
    for (symbol, files, table) in tables.values() {
        let what = match symbol {
            Some(s) => format!("{s}, the seq_operations of {}", files.join(", ")),
            None => format!("the operations of {}", files.join(", ")),
        };
        if let Some(mut f) = table_finding(
            scan,
            NAME,
            table,
            &what,
            ": the socket lists tools read can hide connections",
        ) {
            f = f.text("files", files.join(","));
            if let Some(s) = symbol {
                f = f.text("symbol", *s);
            }
            findings.push(f);
        }
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use crate::checks::synthetic::{assert_fails, ev, ev_addr, run, single, system};
    use crate::checks::{Check, CheckFailure};
    use crate::finding::Severity;

    const CHECK: Check = Check::Afinfo;

    #[test]
    fn clean() {
        assert!(run(system().sk, CHECK).is_empty());
    }

    #[test]
    fn a_hooked_tcp4_show_is_found() {
        let mut s = system();
        let table = s.sk.symbol("tcp4_seq_ops");
        let evil = s.sk.orphan_code();
        s.sk.set(table, "seq_operations", "show", evil.0);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(f.key, format!("afinfo:{:#x}:show", table.0));
        assert_eq!(ev(f, "symbol"), "tcp4_seq_ops");
        assert_eq!(ev(f, "files"), "/proc/net/tcp");
        assert_eq!(ev_addr(f, "target"), evil.0);
    }

    #[test]
    fn a_proc_net_entry_on_a_table_of_a_module_s_own_is_found() {
        let mut s = system();
        // /proc/net of init_net with one entry, "udp", on a copied table
        let init_net = s.sk.symbol("init_net");
        let dir = s.sk.alloc_type("proc_dir_entry");
        let udp = s.sk.alloc_type("proc_dir_entry");
        let name = s.sk.alloc_str(b"udp");
        s.sk.set(udp, "proc_dir_entry", "name", name.0);
        let copy = s.sk.fn_table("seq_operations");
        s.sk.set(copy, "seq_operations", "show", s.e1000.code(0x10).0);
        s.sk.set(udp, "proc_dir_entry", "seq_ops", copy.0);
        let node = s.sk.field_va(udp, "proc_dir_entry", "subdir_node");
        s.sk.set(dir, "proc_dir_entry", "subdir", node.0);
        s.sk.set(init_net, "net", "proc_net", dir.0);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::Medium);
        assert_eq!(f.key, format!("afinfo:{:#x}:show", copy.0));
        assert_eq!(ev(f, "files"), "/proc/net/udp (seq_ops)");
        assert_eq!(ev(f, "owner"), "module e1000");
    }

    #[test]
    fn a_wild_proc_net_is_an_error() {
        let mut s = system();
        let init_net = s.sk.symbol("init_net");
        s.sk.set(init_net, "net", "proc_net", 0x4141);
        assert_fails!(
            s.sk,
            CHECK,
            CheckFailure::Kernel(vmi_core::kernel::KernelError::BadPointer { .. })
        );
    }
}
