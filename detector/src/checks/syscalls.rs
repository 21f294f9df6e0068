//! `syscall-table`: every system call table entry must point into kernel text.
//!
//! A hooked entry points into a module (named, also when the module hid itself from the
//! `modules` list) or elsewhere; the system call is named (`getdents64`) from the
//! kernel's own tracing metadata when it has it. The x64 table's length is `NR_syscalls` from the
//! profile; see [`vmi_core::kernel::syscalls`] for the ia32 table and for kernels that
//! dispatch through `x64_sys_call`.

use vmi_core::kernel::syscalls::{SyscallAbi, TableLength};
use vmi_core::memory::PhysicalMemory;

use crate::checks::{CheckFailure, Scan};
use crate::finding::{Finding, Severity};

const NAME: &str = "syscall-table";

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    // without the text range every entry would look hooked
    scan.kernel.text_range()?;
    let mut findings = Vec::new();
    // the x64 system calls' names, from the kernel's own metadata when it has them:
    // read at the first hooked entry, not on every scan of a clean kernel
    let mut names: Option<Vec<Option<String>>> = None;
    for table in scan.kernel.syscall_tables()? {
        let sym = table.abi.symbol();
        for (nr, &target) in table.entries.iter().enumerate() {
            if scan.owners.in_text(target) {
                continue;
            }
            let owner = scan.owners.owner(target);
            let name = match table.abi {
                SyscallAbi::X64 => names
                    .get_or_insert_with(|| scan.kernel.syscall_names().unwrap_or_default())
                    .get(nr)
                    .cloned()
                    .flatten(),
                SyscallAbi::Ia32 => None,
            };
            let what = match &name {
                Some(n) => format!("{sym}[{nr}] ({n})"),
                None => format!("{sym}[{nr}]"),
            };
            let mut f = Finding::new(
                NAME,
                Severity::High,
                format!("{NAME}:{sym}:{nr}:{:#x}", target.0),
                format!(
                    "{what} points to {:#x} in {owner}, not kernel text: the system call is hooked",
                    target.0
                ),
            );
            if let Some(n) = name {
                f = f.text("syscall", n);
            }
            findings.push(
                f.text("table", sym)
                    .num("nr", nr as u64)
                    .addr("target", target.0)
                    .text("owner", owner.to_string())
                    .addr("entry", table.addr.0 + nr as u64 * 8)
                    .text(
                        "table_length",
                        match table.length {
                            TableLength::Profile => {
                                format!("{} (NR_syscalls)", table.entries.len())
                            }
                            TableLength::Scanned => format!("{} (scanned)", table.entries.len()),
                        },
                    ),
            );
        }
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use vmi_core::testing::{synthetic_profile, SyntheticKernel};

    use crate::checks::synthetic::{assert_fails, ev, ev_addr, run, single, system};
    use crate::checks::{Check, CheckFailure};
    use crate::finding::Severity;

    const CHECK: Check = Check::SyscallTable;

    #[test]
    fn clean() {
        assert!(run(system().sk, CHECK).is_empty());
    }

    #[test]
    fn an_entry_into_a_listed_module_is_named_with_its_owner() {
        let mut s = system();
        let target = s.e1000.code(0x40);
        s.sk.set_syscall(62, target);
        let table = s.sk.symbol("sys_call_table");
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(
            f.key,
            format!("syscall-table:sys_call_table:62:{:#x}", target.0)
        );
        assert_eq!(ev(f, "nr"), "62");
        // named from the kernel's own tracing metadata
        assert_eq!(ev(f, "syscall"), "kill");
        assert!(
            f.summary.starts_with("sys_call_table[62] (kill) points to"),
            "{}",
            f.summary
        );
        assert_eq!(ev(f, "owner"), "module e1000");
        assert_eq!(ev_addr(f, "entry"), table.0 + 62 * 8);
        assert_eq!(ev(f, "table_length"), "335 (NR_syscalls)");
    }

    #[test]
    fn entries_into_a_hidden_module_and_into_no_module() {
        let mut s = system();
        let rk = s.sk.add_module(b"rk", 0x1000);
        s.sk.hide_module(&rk);
        s.sk.set_syscall(0, rk.code(0));
        let orphan = s.sk.orphan_code();
        s.sk.set_syscall(334, orphan);
        let findings = run(s.sk, CHECK);
        assert_eq!(findings.len(), 2, "{findings:#?}");
        assert_eq!(ev(&findings[0], "owner"), "hidden module rk");
        assert_eq!(ev(&findings[1], "nr"), "334");
        // no metadata for this number: no name
        assert!(!findings[1].evidence.iter().any(|(n, _)| *n == "syscall"));
        assert_eq!(
            ev(&findings[1], "owner"),
            "module area, no known module (hidden)"
        );
    }

    #[test]
    fn a_profile_without_nr_syscalls_is_a_typed_error() {
        let mut p = synthetic_profile();
        p.types.remove("trace_array");
        assert_fails!(SyntheticKernel::new(p), CHECK, CheckFailure::Kernel(vmi_core::kernel::KernelError::MissingField(f)) if f.contains("enter_syscall_files"));
    }
}
