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
