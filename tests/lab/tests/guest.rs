//! One kernel (the lab's default), many checks: memory dumps in three formats, pause and
//! resume, `nokaslr`, a test module built against the kernel's headers, and the failure
//! paths (timeout, unknown kernel, QEMU killed with its handle).

mod common;

use std::fs;
use std::time::Duration;

use vmi_lab::build::ModuleSource;
use vmi_lab::{BootOptions, Error, Scenario, DEFAULT_KERNEL};

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

struct Load {
    paddr: u64,
    offset: u64,
    size: u64,
}

/// PT_LOAD segments and the concatenated PT_NOTE contents of an ELF core.
fn parse_core(core: &[u8]) -> (Vec<Load>, Vec<u8>) {
    assert_eq!(&core[..4], b"\x7fELF");
    assert_eq!(core[4], 2, "ELFCLASS64");
    assert_eq!(u16_at(core, 16), 4, "ET_CORE");
    let phoff = u64_at(core, 0x20) as usize;
    let phentsize = u16_at(core, 0x36) as usize;
    let mut phnum = u16_at(core, 0x38) as usize;
    if phnum == 0xffff {
        // PN_XNUM: the real count is in section header 0's sh_info
        let shoff = u64_at(core, 0x28) as usize;
        phnum = u32_at(core, shoff + 0x2c) as usize;
    }
    let mut loads = Vec::new();
    let mut notes = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let (p_type, off, paddr, filesz) = (
            u32_at(core, ph),
            u64_at(core, ph + 8),
            u64_at(core, ph + 0x18),
            u64_at(core, ph + 0x20),
        );
        match p_type {
            1 => loads.push(Load {
                paddr,
                offset: off,
                size: filesz,
            }),
            4 => notes.extend_from_slice(&core[off as usize..(off + filesz) as usize]),
            _ => {}
        }
    }
    (loads, notes)
}

#[test]
fn dumps_pause_and_channel_on_default_kernel() {
    let lab = common::lab();
    let mut guest = lab
        .boot(
            DEFAULT_KERNEL,
            &Scenario::standard(),
            &BootOptions::default(),
        )
        .expect("booting");
    let banner = guest.truth().version.clone();
    let abi = guest.abi().to_string();
    let dir = tempfile::tempdir().unwrap();

    // pause and resume
    assert!(guest.is_running().unwrap());
    guest.pause().unwrap();
    assert!(!guest.is_running().unwrap());
    guest.resume().unwrap();
    assert!(guest.is_running().unwrap());

    // raw: file offset = guest-physical address
    let raw_path = dir.path().join("guest.raw");
    guest.dump_raw(&raw_path).unwrap();
    assert!(guest.is_running().unwrap(), "a dump resumes the guest");
    let raw = fs::read(&raw_path).unwrap();
    let map = guest.memory_map().to_vec();
    assert_eq!(raw.len() as u64, map.last().unwrap().end);
    let banner_pa = common::find(&raw, banner.as_bytes()).expect("banner in the raw dump") as u64;
    assert!(map
        .iter()
        .any(|r| r.start <= banner_pa && banner_pa < r.end));
    fs::remove_file(&raw_path).unwrap();
    drop(raw);

    // LiME: one header per RAM range, the banner at the same physical address
    let lime_path = dir.path().join("guest.lime");
    guest.dump_lime(&lime_path).unwrap();
    let lime = fs::read(&lime_path).unwrap();
    let mut pos = 0usize;
    let mut ranges = Vec::new();
    let mut banner_in_lime = None;
    while pos < lime.len() {
        assert_eq!(u32_at(&lime, pos), 0x4C69_4D45, "LiME magic at {pos}");
        assert_eq!(u32_at(&lime, pos + 4), 1);
        let (start, last) = (u64_at(&lime, pos + 8), u64_at(&lime, pos + 16));
        let data = pos + 32;
        let len = (last - start + 1) as usize;
        if (start..=last).contains(&banner_pa) {
            let at = data + (banner_pa - start) as usize;
            banner_in_lime = Some(&lime[at..at + banner.len()] == banner.as_bytes());
        }
        ranges.push((start, last + 1));
        pos = data + len;
    }
    assert_eq!(pos, lime.len());
    assert_eq!(
        ranges,
        map.iter().map(|r| (r.start, r.end)).collect::<Vec<_>>()
    );
    assert_eq!(banner_in_lime, Some(true));
    fs::remove_file(&lime_path).unwrap();
    drop(lime);

    // ELF core from QEMU: PT_LOADs by physical address, and the guest's VMCOREINFO
    let elf_path = dir.path().join("guest.elf");
    guest.dump_elf(&elf_path).unwrap();
    let core = fs::read(&elf_path).unwrap();
    let (loads, notes) = parse_core(&core);
    let seg = loads
        .iter()
        .find(|l| l.paddr <= banner_pa && banner_pa < l.paddr + l.size)
        .expect("a PT_LOAD covering the banner");
    let at = (seg.offset + banner_pa - seg.paddr) as usize;
    assert_eq!(&core[at..at + banner.len()], banner.as_bytes());
    let notes = String::from_utf8_lossy(&notes);
    assert!(
        notes.contains(&format!("OSRELEASE={abi}")),
        "no VMCOREINFO OSRELEASE note in the ELF dump"
    );
    assert!(
        notes.contains("KERNELOFFSET="),
        "VMCOREINFO lacks KERNELOFFSET"
    );
    drop(core);

    // nothing partial is left next to the dumps
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["guest.elf".to_string()]);

    guest.shutdown().unwrap();
}

/// Section names of an ELF file, read from its section header table only.
fn elf_section_names(path: &std::path::Path) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::File::open(path).unwrap();
    let mut eh = [0u8; 64];
    f.read_exact(&mut eh).unwrap();
    assert_eq!(&eh[..4], b"\x7fELF", "{} is not ELF", path.display());
    let (shoff, shentsize, shnum, shstrndx) = (
        u64_at(&eh, 0x28),
        u16_at(&eh, 0x3a) as u64,
        u16_at(&eh, 0x3c) as u64,
        u16_at(&eh, 0x3e) as u64,
    );
    let mut sh = vec![0u8; (shentsize * shnum) as usize];
    f.seek(SeekFrom::Start(shoff)).unwrap();
    f.read_exact(&mut sh).unwrap();
    let str_hdr = (shstrndx * shentsize) as usize;
    let (str_off, str_size) = (u64_at(&sh, str_hdr + 0x18), u64_at(&sh, str_hdr + 0x20));
    let mut strtab = vec![0u8; str_size as usize];
    f.seek(SeekFrom::Start(str_off)).unwrap();
    f.read_exact(&mut strtab).unwrap();
    (0..shnum as usize)
        .map(|i| {
            let name = u32_at(&sh, i * shentsize as usize) as usize;
            let end = strtab[name..].iter().position(|&b| b == 0).unwrap() + name;
            String::from_utf8_lossy(&strtab[name..end]).into_owned()
        })
        .collect()
}

/// Without KASLR the kernel runs at its link address, so every kallsyms line the guest
/// reports equals the real System.map of the -dbg package (fetched here: vmlinux with
/// DWARF and System.map, streamed out of the ~1 GB package).
#[test]
fn nokaslr_kallsyms_equal_the_debug_packages_system_map() {
    let lab = common::lab();
    let dbg = lab
        .store()
        .debug(DEFAULT_KERNEL)
        .expect("fetching the -dbg part");
    let sections = elf_section_names(&dbg.vmlinux);
    for s in [".text", ".debug_info", ".debug_abbrev", ".symtab"] {
        assert!(
            sections.iter().any(|n| n == s),
            "vmlinux lacks {s}: {sections:?}"
        );
    }
    let map = fs::read_to_string(&dbg.system_map).unwrap();
    let mut by_name: std::collections::HashMap<&str, Vec<u64>> = Default::default();
    for line in map.lines() {
        let mut w = line.split_whitespace();
        let (Some(addr), Some(_), Some(name)) = (w.next(), w.next(), w.next()) else {
            panic!("bad System.map line {line:?}");
        };
        by_name
            .entry(name)
            .or_default()
            .push(u64::from_str_radix(addr, 16).unwrap());
    }
    assert!(
        by_name.len() > 50_000,
        "System.map has {} names",
        by_name.len()
    );

    let opts = BootOptions {
        kaslr: false,
        ..BootOptions::default()
    };
    let guest = lab.boot(DEFAULT_KERNEL, &Scenario::new(), &opts).unwrap();
    let t = guest.truth();
    assert!(t.cmdline.split(' ').any(|w| w == "nokaslr"));
    assert!(!t.kaslr);
    assert_eq!(t.text_addr, 0xffff_ffff_8100_0000);
    assert_eq!(by_name.get("_text"), Some(&vec![t.text_addr]));
    let mut compared = 0;
    for k in t.ksyms.iter().filter(|k| k.module.is_none()) {
        let addrs = by_name
            .get(k.name.as_str())
            .unwrap_or_else(|| panic!("{} not in System.map", k.name));
        assert!(
            addrs.contains(&k.addr),
            "{}: guest {:#x}, System.map {addrs:x?}",
            k.name,
            k.addr
        );
        compared += 1;
    }
    assert!(compared >= 15, "only {compared} symbols compared");
    guest.shutdown().unwrap();
}

#[test]
fn test_module_builds_and_loads_with_parameters() {
    let lab = common::lab();
    let src = ModuleSource::single("lab_hello", include_str!("../testmods/lab_hello.c"));
    let ko = lab
        .build_module(DEFAULT_KERNEL, &src)
        .expect("building the test module");
    let scenario = Scenario::new()
        .insmod(&ko, "tag=vmi-lab-42")
        .sleeper("lab-after");
    let mut guest = lab
        .boot(DEFAULT_KERNEL, &scenario, &BootOptions::default())
        .unwrap();
    let m = guest
        .truth()
        .modules
        .iter()
        .find(|m| m.name == "lab_hello")
        .cloned()
        .expect("lab_hello in /proc/modules");
    assert_eq!(m.state, "Live");
    assert!(
        m.addr >= 0xffff_ffff_c000_0000,
        "module address {:#x}",
        m.addr
    );
    let out = guest
        .sh("cat /sys/module/lab_hello/parameters/tag")
        .unwrap();
    assert_eq!(out.lines, vec!["vmi-lab-42".to_string()]);
    let problems = guest.truth().check(&scenario.expectations());
    assert!(problems.is_empty(), "{problems:?}");
    guest.shutdown().unwrap();
}

#[test]
fn a_guest_that_never_gets_ready_times_out_with_its_console() {
    let lab = common::lab();
    let scenario = Scenario::new()
        .shell("echo lab-test-marker-before-hang")
        .shell("sleep 100000");
    let opts = BootOptions {
        timeout: Duration::from_secs(45),
        ..BootOptions::default()
    };
    let err = lab.boot(DEFAULT_KERNEL, &scenario, &opts).unwrap_err();
    match &err {
        Error::BootTimeout { timeout, console } => {
            assert_eq!(timeout.as_secs(), 45);
            assert!(
                console.contains("lab-test-marker-before-hang"),
                "console tail: {console}"
            );
            assert!(console.lines().count() <= vmi_lab::guest::CONSOLE_TAIL);
        }
        other => panic!("expected a boot timeout, got {other}"),
    }
    assert!(err.to_string().contains("did not print READY"));
}

#[test]
fn qemu_dies_with_its_handle_even_on_panic() {
    let lab = common::lab();
    let handle = std::thread::spawn(move || {
        let guest = lab
            .boot(DEFAULT_KERNEL, &Scenario::new(), &BootOptions::default())
            .unwrap();
        let info = (guest.pid().unwrap(), guest.ram_path().to_path_buf());
        std::panic::panic_any(info);
    });
    let payload = handle.join().expect_err("the thread panicked");
    let (pid, ram) = *payload
        .downcast::<(u32, std::path::PathBuf)>()
        .expect("panic payload");
    assert!(
        !common::pid_exists(pid),
        "QEMU {pid} outlived its guest handle"
    );
    assert!(!ram.exists(), "RAM file {} left behind", ram.display());
}

#[test]
fn unknown_kernel_names_the_closest_builds() {
    let lab = common::lab();
    let err = lab.store().image("6.1.0-999-amd64").unwrap_err();
    match &err {
        Error::UnknownKernel { closest, .. } => {
            assert!(!closest.is_empty());
            assert!(closest.iter().all(|c| c.ends_with("-amd64")));
            assert!(
                closest.iter().any(|c| c.starts_with("6.1.0-")),
                "{closest:?}"
            );
        }
        other => panic!("expected UnknownKernel, got {other}"),
    }
    let bad = lab.store().image("not a kernel").unwrap_err();
    assert!(matches!(bad, Error::BadKernelName(_)), "{bad}");
}

/// The flavours resolve and fetch: their configs say which flavour they are.
#[test]
fn cloud_and_rt_flavours_fetch() {
    let lab = common::lab();
    let rt = lab.store().image("newest:6.1-rt-amd64").unwrap();
    assert!(rt.abi.ends_with("-rt-amd64"), "{}", rt.abi);
    let config = fs::read_to_string(&rt.config).unwrap();
    assert!(config.lines().any(|l| l == "CONFIG_PREEMPT_RT=y"));
    let cloud = lab.store().image("newest:6.1-cloud-amd64").unwrap();
    assert!(cloud.abi.ends_with("-cloud-amd64"), "{}", cloud.abi);
    // the cloud flavour leaves out most hardware drivers
    let modules = |path: &std::path::Path| {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| l.ends_with("=m"))
            .count()
    };
    let generic = lab.store().image(DEFAULT_KERNEL).unwrap();
    let (c, g) = (modules(&cloud.config), modules(&generic.config));
    assert!(c * 2 < g, "cloud {c} modules, generic {g}");
    assert!(fs::metadata(&cloud.vmlinuz).unwrap().len() > 1_000_000);
}
