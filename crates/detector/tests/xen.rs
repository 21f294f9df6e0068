//! `detector --xen DOMAIN` on real Xen: the lab's Xen rig (Debian's Xen 4.17 and a dom0
//! toolstack in QEMU) runs a PVH domU with the standard scenario and a test module; the
//! detector binary, copied into dom0, reads the domU from there. `identify`, `ps` and
//! `lsmod` equal the domU's own view and `check` finds nothing; after a test rootkit
//! unlinks a process from the tasks list, `check` (running, and with `--pause`) names
//! it. An unknown domain and `watch` are refused with errors that say why.

use std::time::{Duration, Instant};

use serde_json::Value;
use vmi_lab::build::ModuleSource;
use vmi_lab::xen::XEN_BIN;
use vmi_lab::{DomuSpec, GroundTruth, Lab, Scenario, XenOptions, XenRig, DEFAULT_KERNEL};

const DOMU: &str = "det-pvh";
const DETECTOR: &str = "/lab/files/detector";
const PROFILES: &str = "/lab/files/profiles";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "detector printed no JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Run the detector in dom0 with `args` after the source and profile options.
fn detector(rig: &mut XenRig, domain: &str, args: &str) -> Run {
    let t = Instant::now();
    let run = rig
        .dom0_sh_timeout(
            &format!(
                "{DETECTOR} --xen {domain} --profiles {PROFILES} {args} >/tmp/out 2>/tmp/err; echo $?"
            ),
            Duration::from_secs(600),
        )
        .expect("running the detector in dom0");
    let took = t.elapsed();
    let code = run
        .lines
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(-1);
    let mut cat = |f: &str| {
        rig.dom0_sh(&format!("cat {f}"))
            .expect("reading the output")
            .lines
            .join("\n")
    };
    Run {
        code,
        stdout: cat("/tmp/out"),
        stderr: cat("/tmp/err"),
        took,
    }
}

/// (pid, ppid, uid, euid, threads) of every process.
fn truth_ps(t: &GroundTruth) -> Vec<(u64, u64, u64, u64, usize)> {
    let mut v: Vec<_> = t
        .processes
        .iter()
        .filter(|p| p.pid == p.tgid)
        .map(|p| {
            (
                u64::from(p.pid),
                u64::from(p.ppid),
                u64::from(p.uid),
                u64::from(p.euid),
                t.thread_ids(p.pid).len(),
            )
        })
        .collect();
    v.sort_unstable();
    v
}

fn detector_ps(ps: &Value) -> Vec<(u64, u64, u64, u64, usize)> {
    let mut v: Vec<_> = ps
        .as_array()
        .expect("an array of processes")
        .iter()
        .map(|p| {
            let n = |k: &str| p[k].as_u64().unwrap_or(u64::MAX);
            (
                n("pid"),
                n("ppid"),
                n("uid"),
                n("euid"),
                p["threads"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn detector_reads_a_pvh_domu_from_dom0() {
    let lab = Lab::open_default().expect("lab");
    let image = lab.store().image(DEFAULT_KERNEL).expect("kernel image");
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
    let module = |name: &str, src: &str| {
        lab.build_module(DEFAULT_KERNEL, &ModuleSource::single(name, src))
            .expect("building a test module")
    };
    let hello = module(
        "lab_hello",
        include_str!("../../../tests/lab/testmods/lab_hello.c"),
    );
    let hideproc = module("vmi_hideproc", include_str!("mods/vmi_hideproc.c"));
    let scenario = Scenario::standard()
        .insmod(&hello, "tag=xen-detector")
        .file(&hideproc, "/lab/vmi_hideproc.ko", 0o644);
    let opts = XenOptions::default()
        .domu(DomuSpec::pvh(DOMU, DEFAULT_KERNEL, scenario.clone()))
        .program(env!("CARGO_BIN_EXE_detector"), DETECTOR)
        .file(&profile, &format!("{PROFILES}/{DEFAULT_KERNEL}.json"));
    let mut rig = XenRig::boot(&lab, &opts).expect("Xen rig");
    let mut domu = rig.start(DOMU).expect("PVH domU");
    let truth = domu.truth().clone();
    assert!(truth.check(&scenario.expectations()).is_empty());

    let id = detector(&mut rig, DOMU, "--json identify");
    assert_eq!(id.code, 0, "{}", id.stderr);
    let v = id.json();
    assert_eq!(v["source"]["kind"], "xen");
    assert_eq!(v["source"]["path"], DOMU);
    assert_eq!(v["release"], truth.release.as_str());
    assert_eq!(v["vcpus"], 1);
    eprintln!("identify in {:.1?}", id.took);

    let ps = detector(&mut rig, DOMU, "--json ps");
    assert_eq!(ps.code, 0, "{}", ps.stderr);
    let procs = ps.json();
    assert_eq!(detector_ps(&procs), truth_ps(&truth));
    for p in procs.as_array().unwrap() {
        let pid = p["pid"].as_u64().unwrap() as u32;
        let comm = p["comm"].as_str().unwrap_or("");
        let want = &truth.process(pid).unwrap().comm;
        assert!(want.starts_with(comm), "pid {pid}: {comm:?} vs {want:?}");
    }
    eprintln!(
        "ps of {} processes in {:.1?}",
        procs.as_array().unwrap().len(),
        ps.took
    );

    let lsmod = detector(&mut rig, DOMU, "--json lsmod");
    assert_eq!(lsmod.code, 0, "{}", lsmod.stderr);
    let names: Vec<String> = lsmod
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap_or("").to_string())
        .collect();
    let want: Vec<String> = truth.modules.iter().map(|m| m.name.clone()).collect();
    assert_eq!(
        names.iter().collect::<std::collections::BTreeSet<_>>(),
        want.iter().collect()
    );
    assert!(names.iter().any(|n| n == "lab_hello"), "{names:?}");

    let clean = detector(&mut rig, DOMU, "--json check");
    let report = clean.json();
    assert_eq!(clean.code, 0, "{report}\n{}", clean.stderr);
    assert_eq!(report["findings"].as_array().map(Vec::len), Some(0));
    assert_eq!(report["errors"].as_array().map(Vec::len), Some(0));
    eprintln!("clean check in {:.1?}", clean.took);

    // a rootkit unlinks lab-idle from the tasks list
    let idle = truth.by_comm("lab-idle").next().expect("lab-idle").pid;
    let ins = domu
        .sh(&format!("insmod /lab/vmi_hideproc.ko pid={idle}"))
        .expect("loading the rootkit");
    assert_eq!(ins.status, 0, "{:?}", ins.lines);
    for args in ["--json check", "--json check --pause"] {
        let run = detector(&mut rig, DOMU, args);
        let report = run.json();
        assert_eq!(run.code, 1, "{args}: {report}\n{}", run.stderr);
        let findings = report["findings"].as_array().unwrap();
        assert!(
            findings.iter().any(|f| f["check"] == "hidden-process"
                && f["evidence"]["pid"] == idle
                && f["evidence"]["comm"] == "lab-idle"),
            "{args}: {report}"
        );
        eprintln!("{args} after the attack in {:.1?}", run.took);
    }
    // --pause resumed the domain
    let list = rig
        .dom0_sh(&format!("{XEN_BIN}/xl list {DOMU}"))
        .expect("xl list");
    let state = list
        .lines
        .last()
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap_or("");
    assert!(!state.contains('p'), "the domain stays paused: {list:?}");

    let unknown = detector(&mut rig, "no-such-domain", "identify");
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("no Xen domain \"no-such-domain\"")
            && unknown.stderr.contains(DOMU)
            && unknown.stderr.contains("Domain-0"),
        "{}",
        unknown.stderr
    );
    let watch = detector(&mut rig, DOMU, "watch --scans 1");
    assert_eq!(watch.code, 2);
    assert!(
        watch.stderr.contains("watch does not read Xen domains yet"),
        "{}",
        watch.stderr
    );
    rig.shutdown().expect("power off");
}
