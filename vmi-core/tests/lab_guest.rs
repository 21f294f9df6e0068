//! Memory sources and translation on a real guest: the lab's default kernel (Debian
//! 6.1, KASLR on) booted once, read live (RAM file + QMP) while it runs and while it is
//! paused, then dumped as ELF, raw and LiME while paused. The four sources must agree
//! byte for byte on all guest RAM, and the CR3 each register source reports (QMP live,
//! QEMU's CPU notes in the ELF core) must translate the KASLR'd `linux_banner` (address
//! from the guest's own kallsyms) to the text of the guest's own `/proc/version`.

use std::time::{Duration, Instant};

use vmi_core::arch::x86_64::{AddressSpace, PageTableRoot, PagingMode, Registers, Translation};
use vmi_core::memory::{
    ElfCore, LimeImage, PageCache, PauseGuard, PauseResume, PhysRange, PhysicalMemory, QemuLive,
    QemuOptions, RawImage, VcpuRegisters, VirtualMemory,
};
use vmi_core::{Pa, PhysError, Va};
use vmi_lab::{BootOptions, Guest, Lab, Scenario, DEFAULT_KERNEL};

/// KPTI: a CR3 captured in user mode points at the user copy of the PGD (bit 12 set),
/// which maps almost none of the kernel; the kernel PGD is the page before it.
const PTI_USER_PGD_BIT: u64 = 1 << 12;

struct Expect {
    banner_va: Va,
    version: String,
}

/// Translate `linux_banner` with the vCPU's CR3 and check the bytes there. Returns the
/// translation and whether the KPTI fallback was needed.
fn check_banner<M: PhysicalMemory>(
    what: &str,
    mem: M,
    regs: &Registers,
    expect: &Expect,
) -> (Translation, bool) {
    let root = regs
        .page_table_root()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let space = AddressSpace::new(mem, root);
    let (space, kpti) = match space.translate(expect.banner_va) {
        Ok(_) => (space, false),
        Err(e) if root.table.0 & PTI_USER_PGD_BIT != 0 => {
            eprintln!(
                "{what}: {e}; CPL {} CR3 {:#x}: retrying with the kernel PGD",
                regs.cpl(),
                regs.cr3
            );
            let kernel = PageTableRoot {
                table: Pa(root.table.0 & !PTI_USER_PGD_BIT),
                mode: root.mode,
            };
            (AddressSpace::new(space.into_memory(), kernel), true)
        }
        Err(e) => panic!("{what}: translating linux_banner: {e}"),
    };
    let t = space
        .translate(expect.banner_va)
        .unwrap_or_else(|e| panic!("{what}: translating linux_banner: {e}"));
    let bytes = space
        .read_bytes(expect.banner_va, expect.version.len())
        .unwrap_or_else(|e| panic!("{what}: reading linux_banner: {e}"));
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        expect.version,
        "{what}: linux_banner at {} (PA {}) is not the guest's /proc/version",
        expect.banner_va,
        t.pa
    );
    assert!(bytes.starts_with(b"Linux version "));
    // the same bytes straight from physical memory
    let mut phys = vec![0u8; 14];
    space.memory().read_phys(t.pa, &mut phys).unwrap();
    assert_eq!(&phys, b"Linux version ");
    (t, kpti)
}

fn lab_map(guest: &Guest) -> Vec<(u64, u64, u64)> {
    guest
        .memory_map()
        .iter()
        .map(|r| (r.start, r.end, r.file_offset))
        .collect()
}

fn connect(guest: &mut Guest) -> QemuLive {
    guest.release_qmp();
    let t = Instant::now();
    let live = QemuLive::connect(guest.qmp_socket(), &QemuOptions::default())
        .expect("attaching the live source");
    eprintln!("live: attached in {:?}", t.elapsed());
    live
}

/// Compare every byte of `ranges` across the sources, 1 MiB at a time.
fn compare_all(ranges: &[PhysRange], sources: &[(&str, &dyn PhysicalMemory)]) -> u64 {
    const CHUNK: u64 = 1 << 20;
    let mut bufs: Vec<Vec<u8>> = sources.iter().map(|_| vec![0u8; CHUNK as usize]).collect();
    let mut total = 0;
    for r in ranges {
        let mut at = r.start.0;
        while at < r.end.0 {
            let n = CHUNK.min(r.end.0 - at) as usize;
            for ((name, src), buf) in sources.iter().zip(&mut bufs) {
                src.read_phys(Pa(at), &mut buf[..n])
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            for ((name, _), buf) in sources.iter().zip(&bufs).skip(1) {
                if buf[..n] != bufs[0][..n] {
                    let i = (0..n).find(|&i| buf[i] != bufs[0][i]).unwrap_or(0);
                    panic!(
                        "{name} differs from {} at {:#x}",
                        sources[0].0,
                        at + i as u64
                    );
                }
            }
            total += n as u64;
            at += n as u64;
        }
    }
    total
}

#[test]
fn live_elf_raw_and_lime_agree_and_translate_the_banner() {
    let lab = Lab::open_default().expect("opening the lab cache");
    let t = Instant::now();
    let mut guest = lab
        .boot(
            DEFAULT_KERNEL,
            &Scenario::standard(),
            &BootOptions::default(),
        )
        .expect("booting");
    eprintln!("boot: {:?}", t.elapsed());
    let truth = guest.truth().clone();
    assert!(truth.kaslr, "the guest runs with KASLR");
    let expect = Expect {
        banner_va: Va(truth
            .ksym("linux_banner")
            .expect("linux_banner in kallsyms")),
        version: truth.version.clone(),
    };
    let map = lab_map(&guest);

    // --- live, running ---------------------------------------------------------------
    let live = connect(&mut guest);
    assert_eq!(live.backend(), "lab-ram");
    assert_eq!(live.ram_path(), Some(guest.ram_path()));
    let live_map: Vec<(u64, u64, u64)> = live
        .memory_map()
        .iter()
        .map(|r| (r.start.0, r.end.0, r.file_offset))
        .collect();
    // the lab reads its map once, right after QEMU starts, racing the firmware's
    // shadowing of 0xc0000..0x100000; the live map is read now: every lab range must
    // be inside a live range, at the same place in the RAM file
    for &(start, end, off) in &map {
        assert!(
            live_map
                .iter()
                .any(|&(s, e, o)| s <= start && end <= e && o + (start - s) == off),
            "lab range {start:#x}..{end:#x} @{off:#x} not in the live map {live_map:x?}"
        );
    }
    assert!(live.warnings().is_empty(), "{:?}", live.warnings());
    assert_eq!(live.vcpu_count(), 1);
    assert!(live.is_running().unwrap());
    let t = Instant::now();
    let running = live.registers(0).unwrap();
    eprintln!(
        "live: registers in {:?}: CR3 {:#x} CR4 {:#x} RIP {:#x}",
        t.elapsed(),
        running.cr3,
        running.cr4,
        running.rip
    );
    assert_eq!(running.paging_mode(), Some(PagingMode::FourLevel));
    assert!(running.efer.is_some_and(|e| e & (1 << 10) != 0), "EFER.LMA");
    let (t_running, _) = check_banner("live (running)", &live, &running, &expect);
    assert!(matches!(
        live.registers(1),
        Err(vmi_core::Error::NoSuchVcpu { vcpu: 1, count: 1 })
    ));

    // --- live, paused ----------------------------------------------------------------
    live.pause().unwrap();
    assert!(!live.is_running().unwrap());
    let paused = live.registers(0).unwrap();
    assert_eq!(
        live.registers(0).unwrap(),
        paused,
        "registers hold still while paused"
    );
    let (t_paused, _) = check_banner("live (paused)", &live, &paused, &expect);
    assert_eq!(t_paused.pa, t_running.pa, "kernel text does not move");
    live.resume().unwrap();
    assert!(live.is_running().unwrap());
    {
        let _g = PauseGuard::new(&live).unwrap();
        assert!(!live.is_running().unwrap());
    }
    assert!(live.is_running().unwrap(), "the guard resumed the guest");

    // --- dumps of the paused guest ---------------------------------------------------
    live.pause().unwrap();
    let at_dump = live.registers(0).unwrap();
    drop(live);
    let dir = tempfile::tempdir().unwrap();
    let (elf_path, raw_path, lime_path) = (
        dir.path().join("guest.elf"),
        dir.path().join("guest.raw"),
        dir.path().join("guest.lime"),
    );
    let t = Instant::now();
    guest.dump_elf(&elf_path).expect("ELF dump");
    guest.dump_raw(&raw_path).expect("raw dump");
    guest.dump_lime(&lime_path).expect("LiME dump");
    eprintln!("lab: three dumps in {:?}", t.elapsed());
    assert!(!guest.is_running().unwrap(), "still paused after the dumps");
    let live = connect(&mut guest);

    let t = Instant::now();
    let elf = ElfCore::open(&elf_path).unwrap();
    let elf_open = t.elapsed();
    let t = Instant::now();
    let raw = RawImage::open(&raw_path).unwrap();
    let lime = LimeImage::open(&lime_path).unwrap();
    eprintln!("open: ELF {elf_open:?}, raw + LiME {:?}", t.elapsed());
    assert!(elf.warnings().is_empty(), "{:?}", elf.warnings());
    assert!(lime.warnings().is_empty(), "{:?}", lime.warnings());

    // memory maps: the lab wrote the raw and LiME dumps from its own map
    let ranges = lime.ranges().to_vec();
    let mut merged: Vec<PhysRange> = Vec::new();
    for &(s, e, _) in &map {
        match merged.last_mut() {
            Some(m) if m.end.0 == s => m.end = Pa(e),
            _ => merged.push(PhysRange::new(s, e)),
        }
    }
    assert_eq!(ranges, merged, "LiME ranges are the lab's map");
    for r in &ranges {
        assert!(live
            .ranges()
            .iter()
            .any(|l| l.start <= r.start && r.end <= l.end));
    }
    // QEMU's ELF dump also holds the BIOS ROM at the top of 4 GiB (not guest RAM)
    for r in live.ranges() {
        assert!(
            elf.ranges()
                .iter()
                .any(|e| e.start <= r.start && r.end <= e.end),
            "ELF PT_LOADs cover RAM range {r:?}: {:?}",
            elf.ranges()
        );
    }
    let end = ranges.last().unwrap().end.0;
    assert_eq!(raw.ranges(), &[PhysRange::new(0, end)]);

    // every byte of guest RAM, four ways
    let t = Instant::now();
    let compared = compare_all(
        &ranges,
        &[
            ("live", &live),
            ("ELF", &elf),
            ("raw", &raw),
            ("LiME", &lime),
        ],
    );
    eprintln!("compare: {} MiB x4 in {:?}", compared >> 20, t.elapsed());
    assert!(compared >= 1000 << 20);
    // what the lab's map may lack (the firmware-shadowed range), live against ELF
    let t = Instant::now();
    let compared = compare_all(live.ranges(), &[("live", &live), ("ELF", &elf)]);
    eprintln!("compare: {} MiB x2 in {:?}", compared >> 20, t.elapsed());

    // past the end of RAM every source refuses, naming the first missing address; in
    // a hole between RAM ranges (if the machine has one) a raw image reads zeros
    let mut b = [0xffu8; 16];
    let sources: [(&str, &dyn PhysicalMemory); 4] = [
        ("ELF", &elf),
        ("LiME", &lime),
        ("live", &live),
        ("raw", &raw),
    ];
    for (name, src) in sources {
        assert_eq!(
            src.read_phys(Pa(end - 8), &mut b),
            Err(PhysError::Unmapped { pa: Pa(end) }),
            "{name}"
        );
    }
    if let [first, _, ..] = &ranges[..] {
        // a hole in the lab's map (it may have been read before the firmware shadowed
        // 0xc0000..0x100000): zeros in the raw image, unreadable in the LiME image
        raw.read_phys(first.end, &mut b).unwrap();
        assert_eq!(b, [0; 16]);
        assert_eq!(
            lime.read_phys(first.end, &mut b),
            Err(PhysError::Unmapped { pa: first.end })
        );
    }
    eprintln!(
        "RAM ranges: lab {ranges:x?}, live {:x?}, ELF {:x?}",
        live.ranges(),
        elf.ranges()
    );

    // the ELF core's QEMU CPU notes: the registers the paused vCPU has
    assert_eq!(elf.vcpu_count(), 1);
    let er = elf.registers(0).unwrap();
    assert_eq!(
        (er.cr0, er.cr3, er.cr4),
        (at_dump.cr0, at_dump.cr3, at_dump.cr4)
    );
    assert_eq!(
        (er.rip, er.rsp, er.rflags),
        (at_dump.rip, at_dump.rsp, at_dump.rflags)
    );
    assert_eq!(
        (er.cs.selector, er.gs.base),
        (at_dump.cs.selector, at_dump.gs.base)
    );
    assert_eq!(er.efer, None, "QEMU's notes carry no EFER");
    assert_eq!(elf.prstatus().len(), 1);
    assert_eq!(elf.prstatus()[0].registers.rip, at_dump.rip);
    assert_eq!(elf.prstatus()[0].registers.gs.base, at_dump.gs.base);
    let (t_elf, kpti) = check_banner("ELF", &elf, &er, &expect);
    assert_eq!(t_elf.pa, t_running.pa);
    eprintln!(
        "banner: VA {} → PA {} ({:?} page, KPTI fallback: {kpti})",
        expect.banner_va, t_elf.pa, t_elf.size
    );

    // VMCOREINFO agrees with the guest's own kallsyms
    let info = elf.vmcoreinfo().expect("VMCOREINFO note");
    assert_eq!(info.osrelease(), Some(truth.release.as_str()));
    assert_eq!(
        info.kernel_offset(),
        Some(truth.text_addr - 0xffff_ffff_8100_0000)
    );
    assert_eq!(info.page_size(), Some(4096));

    // the ELF's CR3 works over every source, cached or not
    check_banner("raw with the ELF's CR3", &raw, &er, &expect);
    check_banner("LiME with the ELF's CR3", &lime, &er, &expect);
    check_banner("live with the ELF's CR3", &live, &er, &expect);
    let cached = PageCache::new(&elf, 256);
    check_banner("page cache over ELF", &cached, &er, &expect);
    check_banner("page cache over ELF, again", &cached, &er, &expect);
    let s = cached.stats();
    assert!(s.hits > 0 && s.misses > 0, "{s:?}");

    // a warm translation and read, for the record
    let space = AddressSpace::new(&elf, er.page_table_root().unwrap());
    space.read_bytes(expect.banner_va, 64).unwrap();
    let t = Instant::now();
    for _ in 0..1000 {
        space.read_u64(expect.banner_va).unwrap();
    }
    eprintln!(
        "warm 8-byte virtual read from the ELF core: {:?}",
        t.elapsed() / 1000
    );

    // --- resume and read while running again ----------------------------------------
    drop((elf, raw, lime));
    drop(dir);
    live.resume().unwrap();
    assert!(live.is_running().unwrap());
    std::thread::sleep(Duration::from_millis(200));
    let again = live.registers(0).unwrap();
    check_banner("live (running again)", &live, &again, &expect);
    drop(live);
    guest.shutdown().expect("clean shutdown");
}
