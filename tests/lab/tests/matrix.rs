//! Boot every kernel of the lab's matrix once with the standard scenario and check that
//! what the guest reports matches what was asked for, and that the host-side views of
//! the guest (RAM file, memory map, lab channel) are consistent with it.

mod common;

use vmi_lab::{BootOptions, Scenario};

fn boot_and_check(name: &str) {
    let lab = common::lab();
    let abi = lab.store().resolve(name).expect("resolving the kernel");
    let scenario = Scenario::standard();
    let mut guest = lab
        .boot(&abi, &scenario, &BootOptions::default())
        .unwrap_or_else(|e| panic!("booting {abi}: {e}"));
    eprintln!(
        "{abi}: READY after {:.1} s",
        guest.boot_time().as_secs_f64()
    );
    let truth = guest.truth().clone();

    // identity
    assert_eq!(truth.release, abi);
    assert_eq!(truth.machine, "x86_64");
    assert!(
        truth.version.starts_with(&format!("Linux version {abi} ")),
        "banner {:?}",
        truth.version
    );

    // KASLR is on by default and visible in kallsyms
    assert!(truth.kaslr, "KASLR should be active");
    assert_ne!(truth.text_addr, 0xffff_ffff_8100_0000);
    assert_eq!(truth.ksym("_text"), Some(truth.text_addr));
    assert!(truth.ksym("init_task").is_some(), "init_task in kallsyms");

    // every workload is there as asked
    let problems = truth.check(&scenario.expectations());
    assert!(problems.is_empty(), "{abi}: {problems:#?}");
    assert_eq!(truth.process(1).map(|p| p.comm.as_str()), Some("init"));
    assert!(truth.process(2).is_some_and(|p| p.is_kernel_thread()));

    // the fw_cfg driver was loaded, so QEMU has the guest's VMCOREINFO
    if lab.store().image(&abi).unwrap().fw_cfg_module.is_some() {
        assert!(
            truth.modules.iter().any(|m| m.name == "qemu_fw_cfg"),
            "qemu_fw_cfg not loaded: {:?}",
            truth.modules
        );
    }

    // the memory map covers guest RAM (minus the legacy VGA/BIOS holes)
    let map = guest.memory_map().to_vec();
    let mapped: u64 = map.iter().map(|r| r.end - r.start).sum();
    assert!(
        mapped <= guest.ram_size() && mapped + 0x60000 >= guest.ram_size(),
        "{map:x?}"
    );
    assert_eq!(map.last().map(|r| r.end), Some(guest.ram_size()));

    // the RAM file is the guest's memory: the running kernel's banner is in it
    let ram = common::read_ram(&guest);
    assert!(
        common::find(&ram, truth.version.as_bytes()).is_some(),
        "banner not found in the RAM file"
    );
    drop(ram);

    // the lab channel runs commands and reports a fresh ground truth
    let out = guest.sh("echo hello from $(uname -r)").unwrap();
    assert_eq!(out.status, 0);
    assert_eq!(out.lines, vec![format!("hello from {abi}")]);
    let failed = guest.sh("exit 3").unwrap();
    assert_eq!(failed.status, 3);
    guest
        .sh("/bin/lab-sleeper sleep late </dev/null >/dev/null 2>&1 &")
        .unwrap();
    let fresh = guest.refresh_truth().unwrap();
    assert_eq!(fresh.by_comm("lab-sleeper").count(), 2);
    assert_eq!(fresh.release, abi);

    guest.shutdown().expect("clean shutdown");
}

#[test]
fn debian_5_10() {
    boot_and_check("5.10.0-46-amd64");
}

#[test]
fn debian_6_1() {
    boot_and_check("6.1.0-56-amd64");
}

#[test]
fn debian_6_12() {
    boot_and_check("6.12.117+deb12-amd64");
}

#[test]
fn debian_7_2() {
    boot_and_check("newest:7.2");
}

#[test]
fn debian_7_newest() {
    boot_and_check("newest:7");
}

#[test]
fn matrix_names_resolve() {
    let lab = common::lab();
    for name in vmi_lab::MATRIX {
        let abi = lab.store().resolve(name).unwrap();
        assert!(abi.ends_with("-amd64"), "{name} -> {abi}");
    }
}
