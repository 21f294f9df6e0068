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
