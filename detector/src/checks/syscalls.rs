//! `syscall-table`: every system call table entry must point into kernel text.
//!
//! A hooked entry points into a module (named, also when the module hid itself from the
//! `modules` list) or elsewhere. The x64 table's length is `NR_syscalls` from the
//! profile; see [`vmi_core::kernel::syscalls`] for the ia32 table and for kernels that
//! dispatch through `x64_sys_call`.

use vmi_core::kernel::syscalls::TableLength;
use vmi_core::memory::PhysicalMemory;

use crate::checks::{CheckFailure, Scan};
use crate::finding::{Finding, Severity};

const NAME: &str = "syscall-table";

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    // without the text range every entry would look hooked
    scan.kernel.text_range()?;
    let mut findings = Vec::new();
    for table in scan.kernel.syscall_tables()? {
        let sym = table.abi.symbol();
        for (nr, &target) in table.entries.iter().enumerate() {
            if scan.owners.in_text(target) {
                continue;
            }
            let owner = scan.owners.owner(target);
            findings.push(
                Finding::new(
                    NAME,
                    Severity::High,
                    format!("{NAME}:{sym}:{nr}:{:#x}", target.0),
                    format!("{sym}[{nr}] points to {:#x} in {owner}, not kernel text: the system call is hooked", target.0),
                )
                .text("table", sym)
                .num("nr", nr as u64)
                .addr("target", target.0)
                .text("owner", owner.to_string())
                .addr("entry", table.addr.0 + nr as u64 * 8)
                .text(
                    "table_length",
                    match table.length {
                        TableLength::Profile => format!("{} (NR_syscalls)", table.entries.len()),
                        TableLength::Scanned => format!("{} (scanned)", table.entries.len()),
                    },
                ),
            );
        }
    }
    Ok(findings)
}
