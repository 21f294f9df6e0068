//! Hostile kernel memory on a live guest (Debian 6.1): while the guest is paused, the
//! test rewrites one process's `tasks.next` in the guest's RAM file (a loop, a wild
//! pointer, a pointer to unmapped kernel memory) and checks that the process walk fails
//! at once with an error that says what and where, then restores the bytes: the walk and
//! the guest work again. The same for a process's argument bounds (ending before they
//! start, far past the read bound) and its file table (more descriptors than NR_OPEN,
//! a descriptor that is no kernel pointer). Also: a CR3 caught while a user process
//! runs (the KPTI user half of its page table) does not stop discovery.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use vmi_core::arch::x86_64::Registers;
use vmi_core::kernel::{Hints, Kernel, KernelError, Limits, ProfileSet};
use vmi_core::memory::{PauseResume, QemuLive, QemuOptions, VcpuRegisters, VirtualMemory};
use vmi_core::Va;
use vmi_lab::{BootOptions, Lab, Scenario, DEFAULT_KERNEL};

#[test]
fn corrupted_task_lists_fail_bounded_and_reported() {
    let lab = Lab::open_default().expect("lab");
    let d = lab.store().debug(DEFAULT_KERNEL).expect("-dbg");
    let profile = Arc::new(
        profile_gen::build::from_dwarf(&d.vmlinux, Some(&d.system_map), &Default::default())
            .expect("profile")
            .profile,
    );
    let mut set = ProfileSet::new();
    set.add("6.1.json".into(), profile.clone());

    let mut guest = lab
        .boot(
            DEFAULT_KERNEL,
            &Scenario::standard(),
            &BootOptions::default(),
        )
        .expect("boot");
    guest.release_qmp();
    let live = QemuLive::connect(guest.qmp_socket(), &QemuOptions::default()).expect("live");
    live.pause().expect("pause");
    let regs = live.registers(0).expect("registers");
    let id = set.identify(&live).expect("identify");
    let kernel = Kernel::discover_at(
        &live,
        profile.clone(),
        id.banner_pa,
        &Hints {
            registers: Some(regs),
            vmcoreinfo: None,
        },
    )
    .expect("discover");
    let before = kernel.processes(&Limits::default()).expect("walk");
    let victim = before
        .iter()
        .find(|p| p.comm == b"lab-sleeper")
        .expect("lab-sleeper runs")
        .clone();
    let l = *kernel.layout();

    // where a kernel address lives in the RAM file
    let ram_at = |va: Va| {
        let pa = kernel.space().translate(va).expect("translate").pa;
        let r = *live
            .memory_map()
            .iter()
            .find(|r| r.start <= pa && pa.0 + 8 <= r.end.0)
            .expect("RAM region");
        r.file_offset + (pa.0 - r.start.0)
    };
    let next_va = Va(victim.task.0 + l.task_tasks);
    let file_off = ram_at(next_va);
    let ram = OpenOptions::new()
        .read(true)
        .write(true)
        .open(live.ram_path().expect("the lab guest's RAM file"))
        .expect("RAM file");
    let mut original = [0u8; 8];
    ram.read_exact_at(&mut original, file_off).unwrap();
    let write = |v: u64| ram.write_all_at(&v.to_le_bytes(), file_off).unwrap();

    // 1. a loop that never returns to the head
    write(next_va.0);
    let t = Instant::now();
    let e = kernel.processes(&Limits::default()).unwrap_err();
    eprintln!("loop: {e} ({:?})", t.elapsed());
    assert!(
        matches!(e, KernelError::Cycle { at, .. } if at == next_va),
        "{e}"
    );
    assert!(e.to_string().contains("init_task.tasks"), "{e}");

    // 2. a wild pointer
    write(0x4141_4141_4141_4141);
    let e = kernel.processes(&Limits::default()).unwrap_err();
    eprintln!("wild: {e}");
    assert!(
        matches!(
            e,
            KernelError::BadPointer {
                value: 0x4141_4141_4141_4141,
                ..
            }
        ),
        "{e}"
    );

    // 3. a kernel address nothing maps
    let unmapped = 0xffff_c900_dead_0000u64;
    write(unmapped);
    let e = kernel.processes(&Limits::default()).unwrap_err();
    eprintln!("unmapped: {e}");
    match &e {
        // the walk reads the task around the bad node: the span of fields it uses
        KernelError::Read { source, .. } => {
            assert_eq!(source.va(), Va(unmapped - l.task_tasks + l.task_span.0))
        }
        other => panic!("expected a read error at {unmapped:#x}, got {other}"),
    }

    // 4. a bound smaller than the list
    ram.write_all_at(&original, file_off).unwrap();
    let e = kernel
        .processes(&Limits {
            max_processes: 5,
            ..Limits::default()
        })
        .unwrap_err();
    assert!(matches!(e, KernelError::TooLong { max: 5, .. }), "{e}");

    // restored: the same list as before
    let after = kernel
        .processes(&Limits::default())
        .expect("walk after restore");
    assert_eq!(after, before);

    // a process's own memory and its open files, rewritten (each restored after)
    let off = |ty: &str, f: &str| profile.field(ty, f).expect("field").offset;
    let patch = |va: Va, v: &[u8], check: &dyn Fn()| {
        let at = ram_at(va);
        let mut old = vec![0u8; v.len()];
        ram.read_exact_at(&mut old, at).unwrap();
        ram.write_all_at(v, at).unwrap();
        check();
        ram.write_all_at(&old, at).unwrap();
    };
    let strings = kernel
        .exec_strings(victim.mm)
        .expect("exec strings")
        .expect("a user process");
    assert_eq!(
        strings.argv.first().map(Vec::as_slice),
        Some(&b"/bin/lab-sleeper"[..])
    );
    assert_eq!(strings.execfn.as_deref(), Some(&b"/bin/lab-sleeper"[..]));
    let arg_start = kernel
        .space()
        .read_u64(Va(victim.mm.0 + off("mm_struct", "arg_start")))
        .unwrap();
    // 5. arguments that end before they start; ten times the bound
    patch(
        Va(victim.mm.0 + off("mm_struct", "arg_end")),
        &(arg_start - 1).to_le_bytes(),
        &|| {
            let e = kernel.exec_strings(victim.mm).unwrap_err();
            eprintln!("arguments: {e}");
            assert!(matches!(e, KernelError::Corrupt { .. }), "{e}");
        },
    );
    patch(
        Va(victim.mm.0 + off("mm_struct", "arg_end")),
        &(arg_start + 40960).to_le_bytes(),
        &|| match kernel.exec_strings(victim.mm) {
            Ok(Some(s)) => assert!(s.truncated),
            Err(e) => assert!(matches!(e, KernelError::Read { .. }), "{e}"),
            Ok(None) => panic!("no strings"),
        },
    );
    assert_eq!(kernel.exec_strings(victim.mm).unwrap().unwrap(), strings);
    // 6. a file table larger than NR_OPEN; a descriptor that is no kernel pointer
    assert_eq!(kernel.sockets(victim.task).expect("sockets"), vec![]);
    let files = kernel
        .space()
        .read_u64(Va(victim.task.0 + off("task_struct", "files")))
        .unwrap();
    let fdt = kernel
        .space()
        .read_u64(Va(files + off("files_struct", "fdt")))
        .unwrap();
    patch(
        Va(fdt + off("fdtable", "max_fds")),
        &u32::MAX.to_le_bytes(),
        &|| {
            let e = kernel.sockets(victim.task).unwrap_err();
            eprintln!("file table: {e}");
            assert!(matches!(e, KernelError::TooLong { .. }), "{e}");
        },
    );
    let fd0 = kernel
        .space()
        .read_u64(Va(fdt + off("fdtable", "fd")))
        .unwrap();
    patch(Va(fd0), &0x4141_4141_4141_4141u64.to_le_bytes(), &|| {
        let e = kernel.sockets(victim.task).unwrap_err();
        eprintln!("descriptor: {e}");
        assert!(
            matches!(
                e,
                KernelError::BadPointer {
                    value: 0x4141_4141_4141_4141,
                    ..
                }
            ),
            "{e}"
        );
    });
    assert_eq!(kernel.sockets(victim.task).expect("sockets"), vec![]);

    // KPTI: the user half of a user process's page table as CR3 still finds the kernel
    let user = before
        .iter()
        .find(|p| p.comm == b"lab-user")
        .expect("lab-user runs");
    let pgd_va = kernel
        .space()
        .read_u64(Va(user.mm.0 + l.mm_pgd))
        .map(Va)
        .expect("mm->pgd");
    let pgd_pa = kernel.space().translate(pgd_va).expect("pgd").pa;
    let mut user_regs: Registers = regs;
    user_regs.cr3 = pgd_pa.0 | 0x1000 | 0x8000_0000_0000_0001; // user PGD, NOFLUSH, PCID 1
    let k2 = Kernel::discover_at(
        &live,
        profile,
        id.banner_pa,
        &Hints {
            registers: Some(user_regs),
            vmcoreinfo: None,
        },
    )
    .expect("discovery with a user CR3");
    assert_eq!(k2.placement(), kernel.placement());
    assert_eq!(k2.processes(&Limits::default()).expect("walk"), before);

    live.resume().expect("resume");
    drop(live);
    let truth = guest.refresh_truth().expect("the guest still answers");
    assert!(truth.processes.iter().any(|p| p.comm == "lab-sleeper"));
    guest.shutdown().expect("shutdown");
}
