//! The Xen rig, booted once: Debian's Xen 4.17 and a dom0 toolstack in QEMU (TCG), a PVH
//! domU running the standard scenario whose ground truth arrives over its console relayed
//! by dom0, a shell in both, a program copied in from the host running in dom0, the
//! domU destroyed and started again, and a PV domU next to it.

mod common;

use std::time::Instant;

use vmi_lab::xen::{XenImage, XEN_BIN};
use vmi_lab::{DomuSpec, Scenario, XenOptions, XenRig, DEFAULT_KERNEL};

#[test]
fn xen_rig_runs_a_pvh_domu_with_the_standard_scenario() {
    let lab = common::lab();
    let t = Instant::now();
    let image = XenImage::ensure(&lab).expect("Xen image");
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "Xen image in {:.1?}: xen.elf {} KiB, dom0 initramfs {} MiB, from {} packages ({})",
        t.elapsed(),
        size(&image.xen) >> 10,
        size(&image.dom0_initramfs) >> 20,
        image.packages.len(),
        image
            .packages
            .iter()
            .find(|p| p.starts_with("xen-utils-4.17_"))
            .map(String::as_str)
            .unwrap_or("?")
    );

    let scenario = Scenario::standard();
    let expectations = scenario.expectations();
    let opts = XenOptions::default()
        .domu(DomuSpec::pvh("lab-pvh", DEFAULT_KERNEL, scenario.clone()))
        .domu(DomuSpec::pvh("lab-pv", DEFAULT_KERNEL, scenario).pv())
        // a host-built program runs in dom0 (the host is bookworm as dom0)
        .program("/bin/true", "/lab/files/host-true");
    let mut rig = XenRig::boot(&lab, &opts).expect("boot Xen and dom0");
    eprintln!("Xen + dom0 toolstack ready in {:.1?}", rig.boot_time());

    // dom0 is a lab guest too; its toolstack daemons run
    let dom0 = rig.dom0_truth();
    for daemon in ["xenstored", "xenconsoled"] {
        assert!(
            dom0.by_comm(daemon).count() >= 1,
            "dom0 runs no {daemon}: {:?}",
            dom0.processes.iter().map(|p| &p.comm).collect::<Vec<_>>()
        );
    }
    assert_eq!(dom0.release, DEFAULT_KERNEL);
    let info = rig.dom0_sh(&format!("{XEN_BIN}/xl info")).expect("xl info");
    assert_eq!(info.status, 0, "{:?}", info.lines);
    let field = |k: &str| {
        info.lines
            .iter()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.split(':').nth(1)))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(field("xen_major"), "4");
    assert_eq!(field("xen_minor"), "17");
    assert_eq!(field("nr_cpus"), "2");
    assert!(
        field("virt_caps").contains("hvm"),
        "no HVM support: {}",
        field("virt_caps")
    );
    let ran = rig
        .dom0_sh("/lab/files/host-true && echo ran")
        .expect("host program");
    assert_eq!(
        (ran.status, ran.lines.as_slice()),
        (0, &["ran".to_string()][..])
    );

    // an unknown domU is refused before anything starts
    let err = rig.start("no-such-domu").unwrap_err().to_string();
    assert!(err.contains("lab-pvh"), "{err}");

    let mut domu = rig.start("lab-pvh").expect("start the PVH domU");
    eprintln!(
        "PVH domU {} (domid {}) ready in {:.1?}",
        domu.name(),
        domu.domid(),
        domu.boot_time()
    );
    let truth = domu.truth().clone();
    assert_eq!(truth.release, DEFAULT_KERNEL);
    let problems = truth.check(&expectations);
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        truth.cmdline.contains("labchannel=/dev/hvc0"),
        "{}",
        truth.cmdline
    );
    // the domain dom0 lists is the one that answered
    let list = rig.dom0_sh(&format!("{XEN_BIN}/xl list")).expect("xl list");
    let row = list
        .lines
        .iter()
        .find(|l| l.starts_with("lab-pvh "))
        .unwrap_or_else(|| panic!("xl list: {:?}", list.lines));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], domu.domid().to_string(), "{row}");
    assert_eq!(cols[2], "256", "{row}");
    // the domU's hypervisor is Xen and its own view agrees
    let hv = domu
        .sh("cat /sys/hypervisor/type; ls /proc/xen 2>/dev/null | head -1; echo $((1+2))")
        .expect("domU shell");
    assert_eq!(hv.status, 0);
    assert_eq!(hv.lines.first().map(String::as_str), Some("xen"), "{hv:?}");
    assert_eq!(hv.lines.last().map(String::as_str), Some("3"), "{hv:?}");
    // a fresh block sees a new process
    domu.sh("/bin/lab-sleeper sleep </dev/null >/dev/null 2>&1 &")
        .expect("start a process");
    let fresh = domu.refresh_truth().expect("fresh truth");
    assert_eq!(
        fresh.by_comm("lab-sleeper").count(),
        truth.by_comm("lab-sleeper").count() + 1
    );
    let version = domu.read_file("/proc/version").expect("copy a file out");
    assert!(version.starts_with(b"Linux version 6.1.0-56-amd64"));

    rig.destroy("lab-pvh").expect("xl destroy");
    let list = rig.dom0_sh(&format!("{XEN_BIN}/xl list")).expect("xl list");
    assert!(
        !list.lines.iter().any(|l| l.starts_with("lab-pvh ")),
        "{:?}",
        list.lines
    );
    // the slot is free again: the same domU starts a second time
    let again = rig.start("lab-pvh").expect("start the domU again");
    assert!(again.truth().check(&expectations).is_empty());
    assert_ne!(again.domid(), domu.domid());

    // a PV domU next to it: PV guests boot too (their introspection comes later)
    let pv = rig.start("lab-pv").expect("start the PV domU");
    eprintln!("PV domU ready in {:.1?}", pv.boot_time());
    assert!(pv.truth().check(&expectations).is_empty());
    let both = rig.dom0_sh(&format!("{XEN_BIN}/xl list")).expect("xl list");
    assert_eq!(
        both.lines
            .iter()
            .filter(|l| l.starts_with("lab-pv ") || l.starts_with("lab-pvh "))
            .count(),
        2,
        "{:?}",
        both.lines
    );
    let t = Instant::now();
    rig.shutdown().expect("power off");
    eprintln!("powered off in {:.1?}", t.elapsed());
}
