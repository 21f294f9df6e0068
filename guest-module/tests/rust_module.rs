//! The Rust-for-Linux module (guest-module/kmod), for real.
//!
//! The lab builds a small Rust-enabled 6.12 kernel from Debian's linux-source-6.12 with
//! rustc-web (cached; tests/lab/src/rustkernel.rs), the module is built against it, and a
//! KASLR guest of that kernel loads it. Checked:
//! - insmod works, /proc/vmi_profile is one JSON profile (format 1.0, source `module`),
//!   root-only, and the kernel log has the findoffsets-style libVMI lines;
//! - the profile equals profile-gen's DWARF profile of the same vmlinux + System.map:
//!   banner, every reported type's size and every reported field's offset and type, every
//!   reported symbol's link-time address and type letter; every needed type is reported
//!   unless the DWARF profile lacks it too; the needed symbols no module can see are
//!   listed as missing, and `profile-gen <profile> System.map` fills exactly those in;
//! - the completed profile drives vmi-core on the live guest: the process list equals
//!   the guest's own;
//! - rmmod removes the file, and the module loads again;
//! - a System.map of another build is refused when completing;
//! - a wrong type name in the C table does not build (the compiler checks every name).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use profile_gen::build::{self, Options};
use vmi_core::kernel::objects::Limits;
use vmi_core::profile::{needs, Profile, SourceKind};
use vmi_lab::{BootOptions, Guest, Lab, RustKernel, Scenario};

fn kmod_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kmod")
}

fn sh(guest: &mut Guest, cmd: &str) -> (i32, String) {
    let out = guest.sh(cmd).unwrap_or_else(|e| panic!("{cmd}: {e}"));
    (out.status, out.lines.join("\n"))
}

#[test]
fn rust_module_reports_the_dwarf_profile() {
    let lab = Lab::open_default().expect("lab");
    let started = Instant::now();
    let kernel = RustKernel::ensure(lab.cache()).expect("the Rust-enabled kernel");
    eprintln!(
        "Rust-enabled kernel {} ready in {:.1?}",
        kernel.release,
        started.elapsed()
    );
    let out = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let ko = kernel
        .build_module(&kmod_dir(), "vmi_profile", out.path())
        .expect("module build");
    eprintln!("vmi_profile.ko built in {:.1?}", t.elapsed());

    let scenario = Scenario::standard().file(&ko, "/lab/vmi_profile.ko", 0o644);
    let worker = lab.worker().expect("worker");
    let mut guest =
        Guest::boot_scenario(&kernel.image, &scenario, &worker, &BootOptions::default())
            .expect("boot the Rust-enabled kernel");
    eprintln!("guest booted in {:.1?}", guest.boot_time());
    assert!(guest.truth().kaslr, "the guest runs with KASLR");

    let t = Instant::now();
    let (rc, text) = sh(&mut guest, "insmod /lab/vmi_profile.ko");
    assert_eq!(rc, 0, "insmod: {text}\n{}", guest.console_tail(30));
    eprintln!("insmod took {:.1?}", t.elapsed());
    let json = guest
        .read_file("/proc/vmi_profile")
        .expect("/proc/vmi_profile");
    let (_, mode) = sh(&mut guest, "stat -c %a /proc/vmi_profile");
    assert_eq!(mode.trim(), "400", "root-only file");
    let (rc, denied) = sh(&mut guest, "chpst -u :1000:1000 cat /proc/vmi_profile");
    assert_ne!(rc, 0, "a non-root reader is refused: {denied}");
    let (_, log) = sh(&mut guest, "dmesg");
    let module = Profile::from_json(std::str::from_utf8(&json).expect("UTF-8"))
        .unwrap_or_else(|e| panic!("not a profile: {e}\n{}", String::from_utf8_lossy(&json)));

    // the completed profile drives vmi-core on the live guest
    let completed_path = out.path().join("completed.json");
    let completed = profile_gen::complete::complete(
        &write(out.path(), "module.json", &json),
        Some(&kernel.system_map),
        &Options::default(),
    )
    .expect("completing with System.map");
    std::fs::write(&completed_path, completed.profile.to_json()).unwrap();
    // QMP takes one client: the lab's lets go for the detector's
    guest.release_qmp();
    let target = detector::Target::open(
        &detector::SourceSpec::Qemu {
            socket: guest.qmp_socket(),
            mem_path: Some(guest.ram_path().to_path_buf()),
        },
        &detector::ProfileSpec::File(completed_path.clone()),
    )
    .expect("detector opens the live guest with the completed profile");
    let listed: BTreeSet<(u32, Vec<u8>)> = target
        .kernel
        .processes(&Limits::default())
        .expect("process walk")
        .into_iter()
        .map(|p| (p.pid, p.comm))
        .collect();
    let truth: BTreeSet<(u32, Vec<u8>)> = guest
        .truth()
        .processes
        .iter()
        .filter(|p| p.pid == p.tgid)
        // task_struct.comm holds 15 bytes; /proc shows longer kernel-thread names
        .map(|p| (p.pid, p.comm.as_bytes()[..p.comm.len().min(15)].to_vec()))
        .collect();
    let guest_pids: BTreeSet<u32> = truth.iter().map(|(p, _)| *p).collect();
    let listed_now: BTreeSet<(u32, Vec<u8>)> = listed
        .into_iter()
        .filter(|(p, _)| guest_pids.contains(p) || *p == 0)
        .collect();
    // the lab's shell commands come and go: every process the guest reported is listed,
    // under its name (a kworker's /proc name adds its current workqueue)
    for (pid, comm) in &truth {
        let name = listed_now.iter().find(|(p, _)| p == pid).map(|(_, c)| c);
        assert!(
            name.is_some(),
            "process {pid} {:?} not listed through the module's profile",
            String::from_utf8_lossy(comm)
        );
        if !comm.starts_with(b"kworker/") {
            assert_eq!(name, Some(comm), "process {pid}");
        }
    }
    eprintln!(
        "{} processes listed on the live guest through the completed module profile",
        listed_now.len()
    );
    drop(target);

    // clean unload, and it loads again
    let (rc, text) = sh(
        &mut guest,
        "rmmod vmi_profile && test ! -e /proc/vmi_profile",
    );
    assert_eq!(rc, 0, "rmmod: {text}");
    let (rc, text) = sh(
        &mut guest,
        "insmod /lab/vmi_profile.ko && rmmod vmi_profile",
    );
    assert_eq!(rc, 0, "second load: {text}");
    guest.shutdown().expect("shutdown");

    // findoffsets-style lines in the log
    for key in [
        "linux_tasks",
        "linux_mm",
        "linux_pid",
        "linux_name",
        "linux_pgd",
        "linux_init_task",
    ] {
        assert!(
            log.lines().any(|l| l.contains(&format!("{key} = 0x"))),
            "no {key} line in the kernel log:\n{log}"
        );
    }
    assert!(log.contains("KASLR shift 0x"), "{log}");
    // the lab's kernel has no CONFIG_SCHEDSTATS: task_struct.stats is an empty struct
    // aligned to 64 bytes, whose alignment bindgen loses (GCC built the kernel), so the
    // bindings put every later task_struct field 16 bytes early; the module reports the
    // compiler's offsets (checked against DWARF below) and says so
    assert!(
        log.contains("task_struct.tasks: the Rust bindings put it at"),
        "{log}"
    );
    if let Some(summary) = log.lines().find(|l| l.contains("from the Rust bindings")) {
        eprintln!("{summary}");
    }

    // equal to profile-gen's DWARF profile of the same build
    let t = Instant::now();
    let dwarf = build::from_dwarf(
        &kernel.vmlinux,
        Some(&kernel.system_map),
        &Options::default(),
    )
    .expect("DWARF profile")
    .profile;
    eprintln!("DWARF profile in {:.1?}", t.elapsed());
    assert_eq!(module.provenance.source, SourceKind::Module);
    assert_eq!(module.kernel.banner, dwarf.kernel.banner);
    assert_eq!(module.kernel.release, dwarf.kernel.release);
    let needed: Vec<_> = needs::types().into_iter().filter(|t| !t.optional).collect();
    let mut fields = 0;
    for (name, ty) in &module.types {
        // an optional type this kernel does not build (its header still declares it:
        // unix_sock without CONFIG_UNIX) is the compiler's view, not the kernel's
        let optional = needs::types().iter().any(|t| t.name == name && t.optional);
        let Some(d) = dwarf.types.get(name) else {
            assert!(optional, "{name}: not in the DWARF profile");
            continue;
        };
        assert_eq!((ty.kind, ty.size), (d.kind, d.size), "{name}");
        for (field, f) in &ty.fields {
            assert_eq!(Some(f), d.fields.get(field), "{name}.{field}");
            fields += 1;
        }
        // every needed field the DWARF profile has is reported
        // (the module may know types `needs` has not yet, or no longer, declared)
        let Some(need) = needed.iter().find(|t| t.name == name) else {
            continue;
        };
        for nf in &need.fields {
            let in_dwarf = nf.aliases.iter().find(|a| d.fields.contains_key(**a));
            if let Some(a) = in_dwarf {
                assert!(ty.fields.contains_key(*a), "{name}.{a} not reported");
            }
        }
    }
    for t in &needed {
        if dwarf.types.contains_key(t.name) {
            assert!(
                module.types.contains_key(t.name),
                "type {} not reported",
                t.name
            );
        } else {
            assert!(
                module.missing.types.iter().any(|m| m == t.name),
                "{}",
                t.name
            );
        }
    }
    for (name, s) in &module.symbols {
        assert_eq!(Some(s), dwarf.symbols.get(name), "symbol {name}");
    }
    for s in needs::symbols() {
        let reported = s.aliases.iter().any(|a| module.symbols.contains_key(*a));
        let listed = module.missing.symbols.iter().any(|m| m == s.aliases[0]);
        assert!(
            reported || listed || s.optional,
            "needed symbol {} neither reported nor listed missing",
            s.aliases[0]
        );
    }
    // completed: every needed symbol as in the DWARF profile
    for s in needs::symbols() {
        for a in s.aliases {
            assert_eq!(
                completed.profile.symbols.get(*a),
                dwarf.symbols.get(*a),
                "completed symbol {a}"
            );
        }
    }
    assert_eq!(completed.profile.missing.symbols, dwarf.missing.symbols);
    eprintln!(
        "module profile: {} types, {fields} fields, {} symbols reported, {} completed from System.map; all equal to DWARF",
        module.types.len(),
        module.symbols.len(),
        completed.profile.symbols.len() - module.symbols.len()
    );

    // another build's System.map is refused
    if let Ok(other) = lab.store().debug("6.12.117+deb12-amd64") {
        let err = profile_gen::complete::complete(
            &out.path().join("module.json"),
            Some(&other.system_map),
            &Options::default(),
        )
        .expect_err("a System.map of another build");
        let msg = err.to_string();
        assert!(msg.contains("another build"), "{msg}");
    }
}

#[test]
fn a_wrong_type_name_does_not_build() {
    let lab = Lab::open_default().expect("lab");
    let kernel = RustKernel::ensure(lab.cache()).expect("the Rust-enabled kernel");
    let src = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(kmod_dir()).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, src.path().join(p.file_name().unwrap())).unwrap();
    }
    let c = src.path().join("vmi_layout.c");
    let text = std::fs::read_to_string(&c).unwrap();
    let wrong = text.replace(
        "F(task_struct, pid, pid_t, \"int\")",
        "F(task_struct, pid, long, \"long int\")",
    );
    assert_ne!(text, wrong, "the pid line is in the C table");
    std::fs::write(&c, wrong).unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = kernel
        .build_module(src.path(), "vmi_profile", out.path())
        .expect_err("a field declared with the wrong C type must not build");
    let msg = err.to_string();
    assert!(msg.contains("vmi_layout.c"), "{msg}");
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}
