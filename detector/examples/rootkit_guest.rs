//! Boot a lab guest, load the detector's test rootkits in it, and dump its memory: the
//! input of the demo's last step.
//!
//! `cargo run --release -p detector --example rootkit_guest -- [KERNEL] OUT.elf`
//! (KERNEL: 6.1.0-56-amd64 by default; the modules build for the bookworm kernels 6.1
//! and 6.12, whose headers this machine's gcc-12 builds for).
//!
//! The guest runs the lab's standard scenario plus `vmi-hideme` (a sleeper) and
//! `vmi-victim` (uid 1000); then: `vmi_hideproc` unlinks `vmi-hideme` from the tasks
//! list, `vmi_hidemod` removes itself from the modules list, `vmi_hooksys` hooks
//! `sys_call_table[180]`, `vmi_hookidt` hooks IDT vector 15 and hides, `vmi_creds`
//! hands `init_cred` to `vmi-victim`. What the guest then says about itself (`ps`,
//! `lsmod`) is printed, before the dump is written.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use vmi_lab::{Lab, DEFAULT_KERNEL};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kernel, out) = match args.as_slice() {
        [out] => (DEFAULT_KERNEL.to_string(), PathBuf::from(out)),
        [k, out] => (k.clone(), PathBuf::from(out)),
        _ => {
            eprintln!("usage: rootkit_guest [KERNEL] OUT.elf");
            std::process::exit(2);
        }
    };
    let lab = Lab::open_default().expect("lab");
    let mut guest = common::boot_demo_rootkit_guest(&lab, &kernel);
    for line in common::load_demo_rootkits(&mut guest) {
        println!("guest# {line}");
    }
    println!("guest# lsmod   (the guest's own view: the hidden modules are not there)");
    for l in guest.sh("cat /proc/modules").expect("sh").lines {
        println!("  {l}");
    }
    println!("guest# ps | grep vmi-   (/proc still shows vmi-hideme: only the tasks list lost it)");
    for l in guest
        .sh("ps -o pid,user,comm | grep vmi-")
        .expect("sh")
        .lines
    {
        println!("  {l}");
    }
    guest.dump_elf(&out).expect("dump");
    guest.shutdown().expect("shutdown");
    println!("memory dump: {}", out.display());
}
