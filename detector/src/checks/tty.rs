//! `tty`: the operations of tty line disciplines and drivers must be kernel text.
//!
//! Every byte typed on a terminal goes through its line discipline's `receive_buf`
//! (`receive_buf2`), every byte written through its driver's `write`: TTY keyloggers
//! and command sniffers replace these pointers, in a registered
//! `tty_ldiscs[]` table, in a driver's `tty_operations`, or by pointing an open tty at
//! a copied table. Each table with functions outside kernel text is one finding,
//! naming the table (ldisc number and name, driver name, or the ttys using an
//! unregistered table), the members and the owner: medium when a listed module owns
//! it (a driver module's own table), high otherwise. See [`vmi_core::kernel::tty`].

use std::collections::BTreeMap;

use vmi_core::memory::PhysicalMemory;
use vmi_core::Va;

use crate::checks::{table_finding, CheckFailure, Scan};
use crate::finding::{guest_str, Finding};

const NAME: &str = "tty";
const SNIFF: &str = ": terminal input and output can be read or changed";

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    scan.kernel.text_range()?;
    let mut findings = Vec::new();
    let ldiscs = scan.kernel.tty_ldiscs()?;
    for l in &ldiscs {
        let what = format!("line discipline {} ({})", l.num, guest_str(&l.name));
        if let Some(f) = table_finding(scan, NAME, &l.ops, &what, SNIFF) {
            findings.push(
                f.text("kind", "ldisc")
                    .num("ldisc", u64::from(l.num))
                    .text("name", guest_str(&l.name)),
            );
        }
    }
    // the ttys of every driver, by the line discipline table they use
    let mut users: BTreeMap<Va, Vec<String>> = BTreeMap::new();
    for d in scan.kernel.tty_drivers()? {
        for t in &d.ttys {
            if t.ldisc_ops.0 != 0 {
                users
                    .entry(t.ldisc_ops)
                    .or_default()
                    .push(guest_str(&t.name));
            }
        }
        let Some(ops) = &d.ops else { continue };
        let what = format!(
            "the tty_operations of driver {} ({})",
            guest_str(&d.name),
            guest_str(&d.driver_name)
        );
        if let Some(f) = table_finding(scan, NAME, ops, &what, SNIFF) {
            findings.push(
                f.text("kind", "driver")
                    .addr("tty_driver", d.at.0)
                    .text("name", guest_str(&d.name))
                    .text("driver_name", guest_str(&d.driver_name)),
            );
        }
    }
    // a tty whose ldisc ops are no registered discipline's: a copied table
    for (ops, ttys) in users {
        if ldiscs.iter().any(|l| l.ops.at == ops) {
            continue;
        }
        let table = scan.kernel.tty_ldisc_ops(ops)?;
        let what = format!(
            "the line discipline operations of {}, registered nowhere",
            ttys.join(", ")
        );
        if let Some(f) = table_finding(scan, NAME, &table, &what, SNIFF) {
            findings.push(f.text("kind", "tty").text("ttys", ttys.join(",")));
        }
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use crate::checks::synthetic::{assert_fails, ev, ev_addr, run, single, system};
    use crate::checks::{Check, CheckFailure};
    use crate::finding::Severity;

    const CHECK: Check = Check::Tty;

    #[test]
    fn clean_with_an_open_tty() {
        let mut s = system();
        let driver = s.sk.first_tty_driver();
        let n_tty = s.sk.ldisc_ops(0);
        s.sk.add_tty(driver, b"ttyS0", n_tty);
        assert!(run(s.sk, CHECK).is_empty());
    }

    #[test]
    fn a_hooked_receive_buf_of_n_tty_is_found() {
        let mut s = system();
        let n_tty = s.sk.ldisc_ops(0);
        let evil = s.sk.orphan_code();
        s.sk.set(n_tty, "tty_ldisc_ops", "receive_buf", evil.0);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(f.key, format!("tty:{:#x}:receive_buf", n_tty.0));
        assert_eq!(ev(f, "kind"), "ldisc");
        assert_eq!(ev(f, "name"), "n_tty");
        assert_eq!(ev_addr(f, "target"), evil.0);
    }

    #[test]
    fn driver_operations_in_a_listed_module_are_medium() {
        let mut s = system();
        let driver = s.sk.first_tty_driver();
        let ops = s.sk.get(driver, "tty_driver", "ops");
        s.sk.set(
            vmi_core::Va(ops),
            "tty_operations",
            "write",
            s.e1000.code(0).0,
        );
        s.sk.set(
            vmi_core::Va(ops),
            "tty_operations",
            "ioctl",
            s.e1000.code(8).0,
        );
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::Medium);
        assert_eq!(f.key, format!("tty:{ops:#x}:write,ioctl"));
        assert_eq!(ev(f, "kind"), "driver");
        assert_eq!(ev(f, "name"), "ttyS");
        assert_eq!(ev(f, "driver_name"), "serial");
    }

    #[test]
    fn a_tty_on_a_copied_line_discipline_is_found() {
        let mut s = system();
        let copy = s.sk.fn_table("tty_ldisc_ops");
        let evil = s.sk.orphan_code();
        s.sk.set(copy, "tty_ldisc_ops", "receive_buf2", evil.0);
        let driver = s.sk.first_tty_driver();
        s.sk.add_tty(driver, b"ttyS0", copy);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(ev(f, "kind"), "tty");
        assert_eq!(ev(f, "ttys"), "ttyS0");
        assert_eq!(ev(f, "member"), "receive_buf2");
    }

    #[test]
    fn a_driver_with_too_many_lines_is_an_error() {
        let mut s = system();
        let driver = s.sk.first_tty_driver();
        let n_tty = s.sk.ldisc_ops(0);
        s.sk.add_tty(driver, b"ttyS0", n_tty);
        s.sk.set_u32(driver, "tty_driver", "num", u32::MAX);
        assert_fails!(
            s.sk,
            CHECK,
            CheckFailure::Kernel(vmi_core::kernel::KernelError::Corrupt { .. })
        );
    }
}
