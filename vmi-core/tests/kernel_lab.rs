//! Kernel discovery and kernel objects on real guests: Debian 5.10, 6.1, 6.12 and 7.2
//! booted with KASLR, profiles made by profile-gen from each kernel's -dbg package. For
//! the live guest (RAM file + QMP) and for ELF, raw and LiME dumps of it, the profile is
//! picked from a set holding every kernel's profile by the banner in memory, the KASLR
//! shifts are found without the guest's help, and the process list (pid, ppid, tgid,
//! uid, euid, comm, threads) and module list equal what the guest reports about itself.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use vmi_core::kernel::{Hints, Kernel, Limits, ProfileSet};
use vmi_core::memory::{
    ElfCore, LimeImage, PauseResume, PhysicalMemory, QemuLive, QemuOptions, RawImage, VcpuRegisters,
};
use vmi_core::profile::Profile;
use vmi_lab::{BootOptions, GroundTruth, Lab, Scenario};

const KERNELS: &[&str] = &[
    "5.10.0-46-amd64",
    "6.1.0-56-amd64",
    "6.12.117+deb12-amd64",
    "newest:7.2",
];

/// (pid, ppid, tgid, uid, euid, comm, thread ids).
type Row = (u32, u32, u32, u32, u32, String, Vec<u32>);

/// Does `comm` read from memory fit the name /proc shows? task_struct.comm holds at most
/// 15 bytes, and /proc adds "-<workqueue>" to a kworker's name.
fn comm_fits(memory: &str, proc_name: &str) -> bool {
    if !proc_name.starts_with(memory) {
        return false;
    }
    let rest = &proc_name[memory.len()..];
    rest.is_empty()
        || memory.len() == 15
        || (memory.starts_with("kworker/") && rest.starts_with('-'))
}

fn truth_rows(t: &GroundTruth) -> BTreeSet<Row> {
    t.processes
        .iter()
        .filter(|p| p.pid == p.tgid)
        .map(|p| {
            let mut tids: Vec<u32> = t
                .threads
                .iter()
                .filter(|th| th.tgid == p.pid)
                .map(|th| th.tid)
                .collect();
            tids.sort_unstable();
            (p.pid, p.ppid, p.tgid, p.uid, p.euid, p.comm.clone(), tids)
        })
        .collect()
}

fn read_rows<M: PhysicalMemory>(k: &Kernel<M>) -> BTreeSet<Row> {
    k.processes(&Limits::default())
        .expect("process walk")
        .into_iter()
        .map(|p| {
            let mut tids: Vec<u32> = p.threads.iter().map(|t| t.tid).collect();
            tids.sort_unstable();
            (p.pid, p.ppid, p.tgid, p.uid, p.euid, p.name(), tids)
        })
        .collect()
}

fn check<M: PhysicalMemory>(
    what: &str,
    mem: M,
    set: &ProfileSet,
    want: &Arc<Profile>,
    hints: &Hints,
    truth: &GroundTruth,
) -> Vec<String> {
    let mut problems = Vec::new();
    let t = Instant::now();
    let id = match set.identify(&mem) {
        Ok(id) => id,
        Err(e) => return vec![format!("{what}: identify: {e}")],
    };
    if id.profile.kernel.banner != want.kernel.banner {
        problems.push(format!(
            "{what}: picked the profile of {}",
            id.profile.kernel.release
        ));
    }
    let k = match Kernel::discover_at(mem, id.profile.clone(), id.banner_pa, hints) {
        Ok(k) => k,
        Err(e) => return vec![format!("{what}: discover: {e}")],
    };
    let rows = read_rows(&k);
    eprintln!(
        "{what}: identify + discover + process walk in {:.1?} ({} processes)",
        t.elapsed(),
        rows.len()
    );
    let place = k.placement();
    // VMCOREINFO found in memory agrees (the kernel publishes it for every source)
    match vmi_core::vmcoreinfo::find_in_memory(k.space().memory()) {
        Some((_, v)) => {
            if v.osrelease() != Some(truth.release.as_str())
                || v.kernel_offset() != Some(place.virt_shift)
            {
                problems.push(format!(
                    "{what}: VMCOREINFO in memory says {:?} / KERNELOFFSET {:x?}",
                    v.osrelease(),
                    v.kernel_offset()
                ));
            }
        }
        None => problems.push(format!("{what}: no VMCOREINFO page in memory")),
    }
    let kaslr = truth.text_addr.wrapping_sub(0xffff_ffff_8100_0000);
    if place.virt_shift != kaslr {
        problems.push(format!(
            "{what}: virtual shift {:#x}, the guest's _text says {kaslr:#x}",
            place.virt_shift
        ));
    }
    // the same processes with the same ids, credentials and threads; names that fit
    let key = |r: &Row| (r.0, r.1, r.2, r.3, r.4, r.6.clone());
    let want_rows = truth_rows(truth);
    let want_keys: BTreeSet<_> = want_rows.iter().map(key).collect();
    let got_keys: BTreeSet<_> = rows.iter().map(key).collect();
    for r in want_rows.iter().filter(|r| !got_keys.contains(&key(r))) {
        problems.push(format!("{what}: only in the guest: {r:?}"));
    }
    for r in rows.iter().filter(|r| !want_keys.contains(&key(r))) {
        problems.push(format!("{what}: only in memory: {r:?}"));
    }
    for got in &rows {
        if let Some(want) = want_rows.iter().find(|w| key(w) == key(got)) {
            if !comm_fits(&got.5, &want.5) {
                problems.push(format!(
                    "{what}: pid {}: comm {:?} in memory, {:?} in /proc",
                    got.0, got.5, want.5
                ));
            }
        }
    }
    match k.modules(&Limits::default()) {
        Ok(mods) => {
            let got: BTreeSet<(String, u64)> = mods
                .iter()
                .map(|m| (m.display_name(), m.core_base.0))
                .collect();
            let want: BTreeSet<(String, u64)> = truth
                .modules
                .iter()
                .map(|m| (m.name.clone(), m.addr))
                .collect();
            if got != want {
                problems.push(format!(
                    "{what}: modules {got:x?}, the guest says {want:x?}"
                ));
            }
        }
        Err(e) => problems.push(format!("{what}: modules: {e}")),
    }
    problems
}

fn profile_for(lab: &Lab, kernel: &str) -> Arc<Profile> {
    let d = lab.store().debug(kernel).expect("-dbg package");
    let built = profile_gen::build::from_dwarf(
        &d.vmlinux,
        Some(&d.system_map),
        &profile_gen::build::Options::default(),
    )
    .expect("profile-gen");
    Arc::new(built.profile)
}

#[test]
fn processes_and_modules_match_the_guest_on_every_kernel_and_source() {
    let lab = Lab::open_default().expect("lab");
    let mut set = ProfileSet::new();
    let mut profiles = Vec::new();
    for k in KERNELS {
        let p = profile_for(&lab, k);
        set.add(PathBuf::from(format!("{k}.json")), p.clone());
        profiles.push(p);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut problems = Vec::new();
    for (kernel, profile) in KERNELS.iter().zip(&profiles) {
        let mut guest = match lab.boot(kernel, &Scenario::standard(), &BootOptions::default()) {
            Ok(g) => g,
            Err(e) => {
                problems.push(format!("{kernel}: boot: {e}"));
                continue;
            }
        };
        let truth = guest.refresh_truth().expect("truth");
        assert!(truth.kaslr, "{kernel}: KASLR is on");

        // live, paused so that memory holds still while it is compared with the truth
        guest.release_qmp();
        {
            let live = QemuLive::connect(guest.qmp_socket(), &QemuOptions::default())
                .expect("live source");
            live.pause().expect("pause");
            let hints = Hints {
                registers: live.registers(0).ok(),
                vmcoreinfo: None,
            };
            problems.extend(check(
                &format!("{kernel} live"),
                &live,
                &set,
                profile,
                &hints,
                &truth,
            ));
            // dropping `live` closes its QMP connection; the lab takes over again
        }
        let elf = dir.path().join("g.elf");
        let raw = dir.path().join("g.raw");
        let lime = dir.path().join("g.lime");
        guest.dump_elf(&elf).expect("ELF dump");
        guest.dump_raw(&raw).expect("raw dump");
        guest.dump_lime(&lime).expect("LiME dump");
        guest.resume().expect("resume");
        guest.shutdown().expect("shutdown");

        let core = ElfCore::open(&elf).expect("ELF core");
        let hints = Hints {
            registers: core.registers(0).ok(),
            vmcoreinfo: core.vmcoreinfo().cloned(),
        };
        problems.extend(check(
            &format!("{kernel} ELF"),
            &core,
            &set,
            profile,
            &hints,
            &truth,
        ));
        drop(core);
        let no_hints = Hints::default();
        let r = RawImage::open(&raw).expect("raw image");
        let mut others = ProfileSet::new();
        for (k2, p2) in KERNELS.iter().zip(&profiles) {
            if k2 != kernel {
                others.add(PathBuf::from(format!("{k2}.json")), p2.clone());
            }
        }
        match others.identify(&r) {
            Err(vmi_core::kernel::KernelError::NoProfile { banners, closest }) => {
                if !banners.iter().any(|b| b == truth.version.trim_end())
                    || closest.len() != KERNELS.len() - 1
                {
                    problems.push(format!(
                        "{kernel}: unknown kernel reported as {banners:?}, closest {closest:?}"
                    ));
                }
            }
            other => problems.push(format!(
                "{kernel}: identify without its profile gave {other:?}"
            )),
        }
        problems.extend(check(
            &format!("{kernel} raw"),
            &r,
            &set,
            profile,
            &no_hints,
            &truth,
        ));
        drop(r);
        let l = LimeImage::open(&lime).expect("LiME image");
        problems.extend(check(
            &format!("{kernel} LiME"),
            &l,
            &set,
            profile,
            &no_hints,
            &truth,
        ));
        drop(l);
        for f in [&elf, &raw, &lime] {
            std::fs::remove_file(f).ok();
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
