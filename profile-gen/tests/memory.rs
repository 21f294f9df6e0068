//! Zero-touch profiles: for Debian 5.10, 6.1, 6.12 and 7.2 guests booted with KASLR, the
//! profile made from the running kernel's own memory (its BTF and kallsyms, placed by its
//! VMCOREINFO) — read live through QEMU and from an ELF dump — equals, field by field and
//! symbol by symbol, the profile made from the same kernel's vmlinuz; and vmi-core, given
//! only that profile, lists exactly the guest's processes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use profile_gen::build::{from_btf, from_memory, Options};
use vmi_core::kernel::{Hints, Kernel, Limits, ProfileSet};
use vmi_core::memory::{ElfCore, PauseResume, PhysicalMemory, QemuLive, QemuOptions};
use vmi_core::profile::{Profile, SourceKind};
use vmi_lab::{BootOptions, GroundTruth, Lab, Scenario};

const KERNELS: &[&str] = &[
    "5.10.0-46-amd64",
    "6.1.0-56-amd64",
    "6.12.117+deb12-amd64",
    "newest:7.2",
];

/// Everything but provenance must be equal.
fn compare(what: &str, got: &Profile, want: &Profile, problems: &mut Vec<String>) {
    if got.provenance.source != SourceKind::Memory {
        problems.push(format!("{what}: provenance {:?}", got.provenance.source));
    }
    if got.kernel != want.kernel {
        problems.push(format!(
            "{what}: kernel {:?} vs {:?}",
            got.kernel, want.kernel
        ));
    }
    if got.missing != want.missing {
        problems.push(format!(
            "{what}: missing {:?} vs {:?}",
            got.missing, want.missing
        ));
    }
    for (name, t) in &want.types {
        if got.types.get(name) != Some(t) {
            problems.push(format!("{what}: type {name} differs"));
        }
    }
    if got.types.len() != want.types.len() {
        problems.push(format!(
            "{what}: {} types vs {}",
            got.types.len(),
            want.types.len()
        ));
    }
    if got.symbols != want.symbols {
        let diff: Vec<_> = want
            .symbols
            .iter()
            .filter(|(n, s)| got.symbols.get(*n) != Some(s))
            .take(5)
            .collect();
        problems.push(format!("{what}: symbols differ, e.g. {diff:?}"));
    }
}

fn pids(t: &GroundTruth) -> BTreeSet<(u32, u32)> {
    t.processes
        .iter()
        .filter(|p| p.pid == p.tgid)
        .map(|p| (p.pid, p.ppid))
        .collect()
}

fn walk<M: PhysicalMemory>(
    what: &str,
    mem: M,
    profile: Profile,
    truth: &GroundTruth,
    problems: &mut Vec<String>,
) {
    let mut set = ProfileSet::new();
    set.add("memory.json".into(), Arc::new(profile));
    let listed = set
        .identify(&mem)
        .map_err(|e| e.to_string())
        .and_then(|id| {
            Kernel::discover_at(mem, id.profile, id.banner_pa, &Hints::default())
                .map_err(|e| e.to_string())
        })
        .and_then(|k| k.processes(&Limits::default()).map_err(|e| e.to_string()));
    match listed {
        Ok(ps) => {
            let got: BTreeSet<(u32, u32)> = ps.iter().map(|p| (p.pid, p.ppid)).collect();
            if got != pids(truth) {
                problems.push(format!("{what}: processes differ from the guest's"));
            }
        }
        Err(e) => problems.push(format!("{what}: {e}")),
    }
}

#[test]
fn profiles_from_guest_memory_equal_the_boot_image_profiles() {
    let lab = Lab::open_default().expect("lab");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut problems = Vec::new();
    for kernel in KERNELS {
        let image = lab.store().image(kernel).expect("image");
        let want = from_btf(&image.vmlinuz, None, None, &Options::default())
            .expect("profile from vmlinuz")
            .profile;
        let mut guest = lab
            .boot(kernel, &Scenario::standard(), &BootOptions::default())
            .expect("boot");
        let truth = guest.refresh_truth().expect("truth");
        guest.release_qmp();
        {
            let live =
                QemuLive::connect(guest.qmp_socket(), &QemuOptions::default()).expect("live");
            let t = Instant::now();
            match from_memory(&live, &Options::default()) {
                Ok(built) => {
                    eprintln!("{kernel}: profile from live memory in {:.0?}", t.elapsed());
                    compare(
                        &format!("{kernel} live"),
                        &built.profile,
                        &want,
                        &mut problems,
                    );
                    live.pause().expect("pause");
                    walk(
                        &format!("{kernel} live"),
                        &live,
                        built.profile,
                        &truth,
                        &mut problems,
                    );
                }
                Err(e) => problems.push(format!("{kernel} live: {e}")),
            }
        }
        let elf = dir.path().join("g.elf");
        guest.dump_elf(&elf).expect("dump");
        guest.resume().ok();
        guest.shutdown().ok();
        let core = ElfCore::open(&elf).expect("ELF");
        match from_memory(&core, &Options::default()) {
            Ok(built) => {
                compare(
                    &format!("{kernel} ELF"),
                    &built.profile,
                    &want,
                    &mut problems,
                );
                walk(
                    &format!("{kernel} ELF"),
                    &core,
                    built.profile,
                    &truth,
                    &mut problems,
                );
            }
            Err(e) => problems.push(format!("{kernel} ELF: {e}")),
        }
        drop(core);
        std::fs::remove_file(&elf).ok();
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Memory with no kernel in it: an error that names the other onboarding paths, never a
/// guessed profile.
#[test]
fn memory_without_a_kernel_is_refused_with_the_other_paths() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("zero.raw");
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len(64 << 20).unwrap();
    let mem = vmi_core::memory::RawImage::open(&raw).unwrap();
    let e = from_memory(&mem, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("VMCOREINFO") && e.contains("vmlinuz") && e.contains("-dbg"),
        "{e}"
    );
}

/// A guest that plants a VMCOREINFO look-alike does not get a wrong profile: a fake page
/// before the real one is skipped (its image does not decode), and when the real page is
/// falsified too the result is an error, never a guessed profile.
#[test]
fn planted_vmcoreinfo_pages_never_give_a_wrong_profile() {
    use std::os::unix::fs::FileExt;
    let lab = Lab::open_default().expect("lab");
    let kernel = vmi_lab::DEFAULT_KERNEL;
    let image = lab.store().image(kernel).expect("image");
    let want = from_btf(&image.vmlinuz, None, None, &Options::default())
        .expect("profile from vmlinuz")
        .profile;
    let mut guest = lab
        .boot(kernel, &Scenario::standard(), &BootOptions::default())
        .expect("boot");
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("g.raw");
    guest.dump_raw(&raw).expect("raw dump");
    guest.shutdown().ok();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&raw)
        .unwrap();
    let open = || vmi_core::memory::RawImage::open(&raw).expect("raw image");

    let real = vmi_core::vmcoreinfo::find_all_in_memory(&open(), 8);
    assert_eq!(real.len(), 1, "one VMCOREINFO page in a clean guest");
    let (real_pa, real_info) = real.into_iter().next().unwrap();
    let fake = format!(
        "OSRELEASE={}\nPAGESIZE=4096\nKERNELOFFSET=0\nNUMBER(phys_base)=0\n",
        real_info.osrelease().unwrap()
    );
    let mut page = fake.into_bytes();
    page.resize(4096, 0);
    file.write_all_at(&page, 0x20_0000).unwrap(); // below the kernel, before the real page

    let mem = open();
    assert_eq!(vmi_core::vmcoreinfo::find_all_in_memory(&mem, 8).len(), 2);
    let got = from_memory(&mem, &Options::default()).expect("the real page still wins");
    let mut problems = Vec::new();
    compare("with a planted page", &got.profile, &want, &mut problems);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    drop(mem);

    // falsify the real page's KERNELOFFSET as well: nothing consistent is left
    let mut real_page = vec![0u8; 4096];
    file.read_exact_at(&mut real_page, real_pa.0).unwrap();
    let text = String::from_utf8_lossy(&real_page).into_owned();
    let offset = real_info.get("KERNELOFFSET").unwrap();
    let forged = text.replacen(
        &format!("KERNELOFFSET={offset}"),
        &format!(
            "KERNELOFFSET={:x}",
            real_info.kernel_offset().unwrap() + 0x20_0000
        ),
        1,
    );
    let mut forged = forged.into_bytes();
    forged.resize(4096, 0);
    file.write_all_at(&forged, real_pa.0).unwrap();
    let e = from_memory(&open(), &Options::default())
        .expect_err("no consistent kernel image is left")
        .to_string();
    assert!(e.contains("vmlinuz"), "{e}");
}
