//! The Xen source on real Xen: the lab's Xen rig (Debian's Xen 4.17 and a dom0 toolstack
//! in QEMU) runs a PVH and a PV domU, each with the standard scenario and a test module;
//! this test binary copies itself into dom0 and runs `in_dom0` there, which opens each
//! domU by name, picks its profile by the banner in its memory, finds the kernel and
//! lists its processes and modules, which must equal what the domU reported about
//! itself; it also reads registers (a PV guest's CR3 turned into a guest frame must map
//! the kernel), scans the whole domain for the banner, pauses and resumes, and checks
//! the error paths (an unknown domain) and throughput.
//!
//! A full HVM domU (QEMU as device model in dom0, about three minutes to boot under TCG)
//! goes through the same checks in `xen_hvm_domu_read_from_dom0_equals_its_ground_truth`.
//! It is ignored in every run, CI's included (the boot and the rig image with QEMU's
//! device model would add several minutes): run it by name after changing the HVM
//! paths of the Xen source:
//! `cargo test -p vmi-core --test xen -- --ignored --exact xen_hvm_domu_read_from_dom0_equals_its_ground_truth`.
//!
//! `in_dom0` is ignored in a normal run: it needs a dom0, and the outer test gives it
//! each domU's ground truth in a file (`VMI_XEN_DOMAINS`: `name=file,...`).

use base64::Engine as _;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmi_core::arch::x86_64::translate;
use vmi_core::kernel::{scan_banners, Hints, Kernel, Limits, ProfileSet};
use vmi_core::memory::{
    list_domains, PauseGuard, PauseResume, PhysicalMemory, VcpuRegisters, XenDomain, XenGuestKind,
    XenOptions,
};
use vmi_core::{Error, Pa, PhysError, Va};
use vmi_lab::build::ModuleSource;
use vmi_lab::truth::{escape, kernel_worker_churn, unescape};
use vmi_lab::{quote, DomuKind, DomuSpec, Lab, Scenario, XenRig, DEFAULT_KERNEL};

const DOMU: &str = "vmi-pvh";
const PV: &str = "vmi-pv";
const HVM: &str = "vmi-hvm";
const BIN: &str = "/lab/files/vmi-core-xen-test";
const PROFILES: &str = "/lab/files/profiles";
const TRUTH_DIR: &str = "/lab/files";

/// (pid, ppid, tgid, uid, euid, thread ids) of a process.
type Key = (u32, u32, u32, u32, u32, Vec<u32>);

/// What the domU said about itself, as the outer test writes it for `in_dom0`.
#[derive(Debug, Default)]
struct Expected {
    banner: String,
    /// (pid, ppid, tgid, uid, euid, thread ids) → comm
    processes: Vec<(Key, String)>,
    /// (name, core base)
    modules: BTreeSet<(String, u64)>,
}

fn write_expected(t: &vmi_lab::GroundTruth) -> String {
    let mut s = format!("banner {}\n", escape(t.version.as_bytes()));
    for p in t.processes.iter().filter(|p| p.pid == p.tgid) {
        let tids: Vec<String> = t.thread_ids(p.pid).iter().map(u32::to_string).collect();
        s.push_str(&format!(
            "proc {} {} {} {} {} {} {}\n",
            p.pid,
            p.ppid,
            p.tgid,
            p.uid,
            p.euid,
            tids.join(","),
            escape(p.comm.as_bytes())
        ));
    }
    for m in &t.modules {
        s.push_str(&format!(
            "module {} {:x}\n",
            escape(m.name.as_bytes()),
            m.addr
        ));
    }
    s
}

fn read_expected(text: &str) -> Expected {
    let mut e = Expected::default();
    for line in text.lines() {
        let w: Vec<&str> = line.split(' ').collect();
        let text = |s: &str| String::from_utf8_lossy(&unescape(s)).into_owned();
        match w.as_slice() {
            ["banner", b] => e.banner = text(b),
            ["proc", pid, ppid, tgid, uid, euid, tids, comm] => {
                let n = |s: &str| s.parse::<u32>().expect("number");
                let tids = tids.split(',').filter(|t| !t.is_empty()).map(n).collect();
                e.processes.push((
                    (n(pid), n(ppid), n(tgid), n(uid), n(euid), tids),
                    text(comm),
                ));
            }
            ["module", name, addr] => {
                e.modules
                    .insert((text(name), u64::from_str_radix(addr, 16).expect("hex")));
            }
            _ => panic!("bad expectation line {line:?}"),
        }
    }
    e
}

/// The outer test: boot the rig, start both domUs, run `in_dom0` in dom0.
#[test]
fn xen_pvh_and_pv_domus_read_from_dom0_equal_their_ground_truth() {
    read_from_dom0(&[(DOMU, DomuKind::Pvh), (PV, DomuKind::Pv)]);
}

/// The same on a full HVM domU (see the module documentation).
#[test]
#[ignore = "a full HVM domU boots in about three minutes under TCG: run it by name"]
fn xen_hvm_domu_read_from_dom0_equals_its_ground_truth() {
    read_from_dom0(&[(HVM, DomuKind::Hvm)]);
}

/// The kind each of this test's domUs is.
fn kind_of(name: &str) -> XenGuestKind {
    match name {
        PV => XenGuestKind::Pv,
        HVM => XenGuestKind::Hvm,
        _ => XenGuestKind::Pvh,
    }
}

/// Boot the rig with `domus`, start them, run `in_dom0` in dom0.
fn read_from_dom0(domus: &[(&str, DomuKind)]) {
    let lab = Lab::open_default().expect("lab");
    let image = lab.store().image(DEFAULT_KERNEL).expect("kernel image");
    // the profile from the boot image alone (what a Xen host has)
    let built = profile_gen::build::from_btf(
        &image.vmlinuz,
        None,
        None,
        &profile_gen::build::Options::default(),
    )
    .expect("profile from the vmlinuz");
    let dir = tempfile::tempdir().expect("temp dir");
    let profile = dir.path().join(format!("{DEFAULT_KERNEL}.json"));
    std::fs::write(&profile, built.profile.to_json()).expect("writing the profile");
    let hello = ModuleSource::single(
        "lab_hello",
        include_str!("../../tests/lab/testmods/lab_hello.c"),
    );
    let ko = lab
        .build_module(DEFAULT_KERNEL, &hello)
        .expect("the test module");
    let scenario = Scenario::standard().insmod(&ko, "tag=xen-domu");
    let me = std::env::current_exe().expect("this test binary");
    let mut opts = vmi_lab::XenOptions::default()
        .program(&me, BIN)
        .file(&profile, &format!("{PROFILES}/{DEFAULT_KERNEL}.json"));
    for &(name, kind) in domus {
        let mut spec = DomuSpec::pvh(name, DEFAULT_KERNEL, scenario.clone());
        spec.kind = kind;
        opts = opts.domu(spec);
    }
    let mut rig = XenRig::boot(&lab, &opts).expect("Xen rig");
    eprintln!("Xen + dom0 ready in {:.1?}", rig.boot_time());
    let mut started = Vec::new();
    for &(name, _) in domus {
        let domu = rig
            .start_timeout(name, Duration::from_secs(900))
            .expect("domU");
        eprintln!(
            "{name} ({:?}) ready in {:.1?}",
            domu.kind(),
            domu.boot_time()
        );
        assert!(domu.truth().check(&scenario.expectations()).is_empty());
        started.push(domu);
    }
    // the truth is taken again once every domU is up, just before dom0 reads them (the
    // first domU ran on while the next one booted; its kernel workers came and went)
    let mut domains = Vec::new();
    for domu in &mut started {
        let name = domu.name().to_string();
        let truth = domu.refresh_truth().expect("fresh ground truth");
        assert!(
            truth.modules.iter().any(|m| m.name == "lab_hello"),
            "the test module is not loaded in {name}: {:?}",
            truth.modules
        );
        let file = format!("{TRUTH_DIR}/truth-{name}.txt");
        let b64 = base64::engine::general_purpose::STANDARD.encode(write_expected(&truth));
        let put = rig
            .dom0_sh(&format!(
                "echo {b64} | base64 -d > {}",
                quote(&file).unwrap()
            ))
            .expect("writing the expectations into dom0");
        assert_eq!(put.status, 0, "{:?}", put.lines);
        domains.push(format!("{name}={file}"));
    }

    let t = Instant::now();
    let run = rig
        .dom0_sh_timeout(
            &format!(
                "VMI_XEN_DOMAINS={} VMI_XEN_PROFILES={PROFILES} \
                 RUST_BACKTRACE=1 {BIN} --ignored --exact in_dom0 --nocapture --test-threads=1 2>&1",
                quote(&domains.join(",")).unwrap()
            ),
            Duration::from_secs(900),
        )
        .expect("running the test in dom0");
    for l in &run.lines {
        eprintln!("dom0| {l}");
    }
    eprintln!("in_dom0 took {:.1?}", t.elapsed());
    assert_eq!(run.status, 0, "in_dom0 failed in dom0");
    assert!(
        run.lines
            .iter()
            .any(|l| l.contains("test result: ok. 1 passed")),
        "in_dom0 did not run"
    );
    rig.shutdown().expect("power off");
}

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| {
        panic!("{name} is not set: in_dom0 runs in the Xen rig's dom0, started by the outer test")
    }))
}

/// Does `comm` read from memory fit the name /proc shows (15 bytes at most; kworkers
/// get "-<workqueue>" appended by /proc)?
fn fits(memory: &str, proc_name: &str) -> bool {
    match proc_name.strip_prefix(memory) {
        Some("") => true,
        Some(rest) => {
            memory.len() == 15 || (memory.starts_with("kworker/") && rest.starts_with('-'))
        }
        None => false,
    }
}

/// Runs in dom0 (see the module documentation).
#[test]
#[ignore = "runs in the Xen rig's dom0, started by xen_pvh_and_pv_domus_read_from_dom0_equal_their_ground_truth"]
fn in_dom0() {
    let spec = std::env::var("VMI_XEN_DOMAINS").expect("VMI_XEN_DOMAINS");
    let domains: Vec<(&str, &str)> = spec
        .split(',')
        .map(|d| d.split_once('=').expect("name=file"))
        .collect();

    // errors first: an unknown domain lists the running ones
    let err = XenDomain::open("no-such-domain", &XenOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("Domain-0 (id 0)"), "{text}");
    for (name, _) in &domains {
        assert!(text.contains(name), "{text}");
    }

    // every domain with its kind
    let listed = list_domains().expect("list the domains");
    let kind = |name: &str| {
        listed
            .iter()
            .find(|d| d.name.as_deref() == Some(name))
            .map(|d| d.kind)
    };
    assert_eq!(kind("Domain-0"), Some(XenGuestKind::Pv), "{listed:?}");
    for (name, _) in &domains {
        assert_eq!(kind(name), Some(kind_of(name)), "{listed:?}");
    }

    for (name, file) in &domains {
        let expected =
            read_expected(&std::fs::read_to_string(file).expect("reading the expectations"));
        println!("== {name}");
        read_domain(name, &expected, kind_of(name));
    }
}

/// Everything `in_dom0` checks on one domU.
fn read_domain(domain: &str, expected: &Expected, want_kind: XenGuestKind) {
    let t = Instant::now();
    let dom = Arc::new(XenDomain::open(domain, &XenOptions::default()).expect("open the domU"));
    let open = t.elapsed();
    assert_eq!(dom.kind(), want_kind);
    assert!(dom.warnings().is_empty(), "{:?}", dom.warnings());
    assert_eq!(dom.name(), Some(domain));
    let by_id = XenDomain::open(&dom.domid().to_string(), &XenOptions::default()).expect("by id");
    assert_eq!(by_id.ranges(), dom.ranges());
    drop(by_id);
    let bytes: u64 = dom.ranges().iter().map(|r| r.len()).sum();
    println!(
        "opened {domain} (domid {}) in {open:.1?}: {} ranges, {} KiB: {:x?}",
        dom.domid(),
        dom.ranges().len(),
        bytes >> 10,
        dom.ranges()
    );
    // 256 MiB of RAM (less the pages Xen keeps, plus ACPI and special pages)
    assert!((250 << 20..270 << 20).contains(&bytes), "{bytes:#x} bytes");

    // outside the ranges: unmapped, with the address
    let hole = dom.ranges().last().unwrap().end;
    let mut b = [0u8; 8];
    assert_eq!(
        dom.read_phys(hole, &mut b),
        Err(PhysError::Unmapped { pa: hole })
    );
    assert!(matches!(
        dom.registers(dom.vcpu_count()),
        Err(Error::NoSuchVcpu { .. })
    ));

    // registers: long mode, kernel page tables that map the kernel
    let regs = dom.registers(0).expect("vCPU 0 registers");
    println!(
        "vCPU 0: rip {:#x} cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:x?} cs {:#x}/{:#x}",
        regs.rip, regs.cr0, regs.cr3, regs.cr4, regs.efer, regs.cs.selector, regs.cs.flags
    );
    assert!(regs.page_table_root().is_ok(), "{regs:x?}");
    assert_ne!(regs.efer.unwrap_or(0) & (1 << 10), 0, "EFER.LMA");
    if regs.cpl() == 0 {
        assert_ne!(
            regs.cs.flags & (1 << 21),
            0,
            "64-bit kernel CS: {:#x}",
            regs.cs.flags
        );
    }

    // the kernel, found without the guest's help
    let (set, warnings) = ProfileSet::load_dir(&env_path("VMI_XEN_PROFILES")).expect("profiles");
    assert!(warnings.is_empty(), "{warnings:?}");
    let t = Instant::now();
    let id = set.identify(&*dom).expect("identify");
    assert_eq!(
        id.profile.kernel.banner.trim_end(),
        expected.banner.trim_end()
    );
    let hints = Hints {
        registers: Some(regs),
        vmcoreinfo: None,
    };
    let kernel = Kernel::discover_at(dom.clone(), id.profile.clone(), id.banner_pa, &hints)
        .expect("discover");
    let procs = kernel.processes(&Limits::default()).expect("processes");
    let first = t.elapsed();
    // the vCPU's own page table (for PV: its machine frame turned into a guest frame)
    // maps the banner (at its KASLR place) where the kernel is
    let banner_va: Va = kernel.symbol("linux_banner").expect("linux_banner");
    let root = regs.page_table_root().expect("root");
    let t_banner = translate(&*dom, root, banner_va).expect("the banner through CR3");
    assert_eq!(t_banner.pa, id.banner_pa, "CR3 {:#x}", regs.cr3);
    println!(
        "identify + discover + {} processes in {first:.1?} (banner at {}, {:?})",
        procs.len(),
        id.banner_pa,
        dom.stats()
    );

    // equal to the ground truth: ids, credentials, threads, names that fit
    let mut got: Vec<_> = procs
        .iter()
        .map(|p| {
            let mut tids: Vec<u32> = p.threads.iter().map(|t| t.tid).collect();
            tids.sort_unstable();
            ((p.pid, p.ppid, p.tgid, p.uid, p.euid, tids), p.name())
        })
        .collect();
    got.sort();
    let mut want = expected.processes.clone();
    want.sort();
    // the guest runs on between its truth and this read: kernel workers may have come or
    // gone; every other task must be in both, with the same ids, credentials and threads
    let want_keys: BTreeMap<&Key, &str> = want.iter().map(|(k, n)| (k, n.as_str())).collect();
    let got_keys: BTreeMap<&Key, &str> = got.iter().map(|(k, n)| (k, n.as_str())).collect();
    let churn = |k: &Key, name: &str| kernel_worker_churn(k.1, name);
    let only_read: Vec<_> = got_keys
        .iter()
        .filter(|(k, _)| !want_keys.contains_key(*k))
        .collect();
    let only_truth: Vec<_> = want_keys
        .iter()
        .filter(|(k, _)| !got_keys.contains_key(*k))
        .collect();
    assert!(
        only_read.iter().all(|(k, n)| churn(k, n)) && only_truth.iter().all(|(k, n)| churn(k, n)),
        "process lists differ beyond kernel workers: only read {only_read:?}, only in the truth {only_truth:?}"
    );
    for (k, mem) in &got_keys {
        if let Some(proc_name) = want_keys.get(k) {
            assert!(
                fits(mem, proc_name),
                "pid {}: {mem:?} vs {proc_name:?}",
                k.0
            );
        }
    }
    let modules: BTreeSet<(String, u64)> = kernel
        .modules(&Limits::default())
        .expect("modules")
        .iter()
        .map(|m| (m.display_name(), m.core_base.0))
        .collect();
    assert_eq!(modules, expected.modules);

    // warm: the windows are mapped
    let t = Instant::now();
    let again = kernel
        .processes(&Limits::default())
        .expect("processes again");
    println!(
        "warm walk of {} processes in {:.1?}",
        again.len(),
        t.elapsed()
    );

    // paused, the vCPU stands still; resumed, it runs
    {
        let guard = PauseGuard::new(&*dom).expect("pause");
        assert!(!dom.is_running().unwrap());
        let a = dom.registers(0).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let b = dom.registers(0).unwrap();
        assert_eq!((a.rip, a.rsp, a.cr3), (b.rip, b.rsp, b.cr3));
        guard.resume().expect("resume");
    }
    assert!(dom.is_running().unwrap());

    // throughput: every frame of the domain, cold and warm
    for pass in ["cold", "warm"] {
        if pass == "cold" {
            dom.invalidate();
        }
        let before = dom.stats();
        let t = Instant::now();
        let mut buf = vec![0u8; 1 << 20];
        let mut read = 0u64;
        for r in dom.ranges() {
            let mut at = r.start.0;
            while at < r.end.0 {
                let n = (r.end.0 - at).min(buf.len() as u64) as usize;
                dom.read_phys(Pa(at), &mut buf[..n])
                    .expect("reading every frame");
                read += n as u64;
                at += n as u64;
            }
        }
        let s = t.elapsed().as_secs_f64();
        let after = dom.stats();
        println!(
            "{pass} scan: {} MiB in {s:.2} s = {:.0} MiB/s ({} maps)",
            read >> 20,
            (read >> 20) as f64 / s,
            after.maps - before.maps
        );
    }
    assert_eq!(dom.stats().frames_failed, 0, "{:?}", dom.stats());

    // the whole domain scanned for banners (for PV: every frame the p2m names)
    let t = Instant::now();
    let banners = scan_banners(&*dom, 4);
    println!(
        "banner scan of the whole domain in {:.2?}: {} banners",
        t.elapsed(),
        banners.len()
    );
    assert!(
        banners
            .iter()
            .any(|(_, b)| String::from_utf8_lossy(b).trim_end() == expected.banner.trim_end()),
        "{banners:?}"
    );
}
