//! 5-level paging on a real guest: the default kernel booted on a vCPU with LA57 turns
//! it on; the live source's CR4 and the ELF core's CPU notes select 5-level walks, which
//! translate the KASLR'd `linux_banner` to the guest's own `/proc/version`.

use std::time::Instant;

use vmi_core::arch::x86_64::{AddressSpace, PagingMode, Registers, CR4_LA57};
use vmi_core::memory::{
    ElfCore, PauseResume, PhysicalMemory, QemuLive, QemuOptions, VcpuRegisters, VirtualMemory,
};
use vmi_core::Va;
use vmi_lab::{BootOptions, Lab, Scenario, DEFAULT_KERNEL};

fn banner<M: PhysicalMemory>(what: &str, mem: M, regs: &Registers, va: Va, version: &str) {
    let space = AddressSpace::from_registers(mem, regs).unwrap();
    assert_eq!(space.root().mode, PagingMode::FiveLevel, "{what}");
    let bytes = space
        .read_bytes(va, version.len())
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(String::from_utf8_lossy(&bytes), version, "{what}");
}

#[test]
fn five_level_guest_translates_live_and_from_its_elf_core() {
    let lab = Lab::open_default().expect("opening the lab cache");
    let opts = BootOptions {
        five_level_paging: true,
        ..BootOptions::default()
    };
    let t = Instant::now();
    let mut guest = lab
        .boot(DEFAULT_KERNEL, &Scenario::new(), &opts)
        .expect("booting with LA57");
    eprintln!("boot (LA57): {:?}", t.elapsed());
    let truth = guest.truth().clone();
    let va = Va(truth
        .ksym("linux_banner")
        .expect("linux_banner in kallsyms"));
    // with 5-level paging the direct map moves to 0xff11... and kallsyms still
    // reports the kernel image at its usual place
    assert!(va.0 >= 0xffff_ffff_8000_0000, "{va}");

    guest.release_qmp();
    let live = QemuLive::connect(guest.qmp_socket(), &QemuOptions::default()).unwrap();
    let regs = live.registers(0).unwrap();
    assert_ne!(
        regs.cr4 & CR4_LA57,
        0,
        "the kernel turned on LA57: CR4 {:#x}",
        regs.cr4
    );
    banner("live (running)", &live, &regs, va, &truth.version);
    live.pause().unwrap();
    let paused = live.registers(0).unwrap();
    banner("live (paused)", &live, &paused, va, &truth.version);
    drop(live);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("la57.elf");
    guest.dump_elf(&path).expect("ELF dump");
    let elf = ElfCore::open(&path).unwrap();
    let er = elf.registers(0).unwrap();
    assert_eq!(er.cr3, paused.cr3);
    assert_ne!(er.cr4 & CR4_LA57, 0);
    banner("ELF", &elf, &er, va, &truth.version);
    drop(elf);
    drop(dir);
    guest.resume().unwrap();
    guest.shutdown().expect("clean shutdown");
}
