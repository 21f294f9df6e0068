//! `detector --xen DOMAIN` on real Xen: the lab's Xen rig (Debian's Xen 4.17 and a dom0
//! toolstack in QEMU) runs a PVH and a PV domU, each with the standard scenario and a
//! test module; the detector binary, copied into dom0, reads them from there. For each:
//! `identify`, `ps` and `lsmod` equal the domU's own view and `check` finds nothing;
//! after the test rootkits of the QEMU tests (a process unlinked from the tasks list, a
//! module from the modules list, init_cred handed to one process and uid 0 written into
//! another's cred; on the PVH domU also a sys_call_table and an IDT hook, which PV
//! guests cannot place: Xen refuses them CR0.WP), `check` (running, and with `--pause`)
//! reports exactly their findings. Then `watch` (pause-free) reports that finding, a process
//! started in the domU, `xl pause` and `xl unpause` (and scans again after), and
//! `xl destroy` as the guest gone, and the domain is really gone (no mapping keeps it
//! dying); then it exits, or with `--on-shutdown wait` (the PV domU) watches the domain
//! started again under the same name until SIGTERM; `watch --pause` scans and leaves the
//! domain running.
//! An unknown domain is refused with an error that lists the running ones.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use vmi_lab::build::ModuleSource;
use vmi_lab::truth::kernel_worker_churn;
use vmi_lab::xen::DomuKind;
use vmi_lab::xen::XEN_BIN;
use vmi_lab::{
    quote, DomuSpec, GroundTruth, Lab, Scenario, XenDomu, XenOptions, XenRig, DEFAULT_KERNEL,
};

/// The test rootkits loaded in each domU (the last two write read-only kernel data by
/// clearing CR0.WP, which Xen does not let a PV guest do: PVH only).
const ROOTKITS: &[&str] = &[
    "vmi_hideproc",
    "vmi_hidemod",
    "vmi_creds",
    "vmi_hooksys",
    "vmi_hookidt",
];

const DOMU: &str = "det-pvh";
const PV: &str = "det-pv";
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
                "{DETECTOR} --xen {} --profiles {PROFILES} {args} >/tmp/out 2>/tmp/err; echo $?",
                quote(domain).unwrap()
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
        rig.dom0_sh(&format!("cat {}", quote(f).unwrap()))
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
/// pid -> (ppid, uid, euid, threads, comm) of each process.
type Ps = BTreeMap<u64, (u64, u64, u64, usize, String)>;

fn truth_ps(t: &GroundTruth) -> Ps {
    t.processes
        .iter()
        .filter(|p| p.pid == p.tgid)
        .map(|p| {
            (
                u64::from(p.pid),
                (
                    u64::from(p.ppid),
                    u64::from(p.uid),
                    u64::from(p.euid),
                    t.thread_ids(p.pid).len(),
                    p.comm.clone(),
                ),
            )
        })
        .collect()
}

fn detector_ps(ps: &Value) -> Ps {
    ps.as_array()
        .expect("an array of processes")
        .iter()
        .map(|p| {
            let n = |k: &str| p[k].as_u64().unwrap_or(u64::MAX);
            (
                n("pid"),
                (
                    n("ppid"),
                    n("uid"),
                    n("euid"),
                    p["threads"].as_array().map_or(0, Vec::len),
                    p["comm"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

/// The processes `ps` read and the guest's truth taken a moment before differ in no
/// more than kernel workers that came or went meanwhile; names fit (comm is 15 bytes).
fn ps_matches(got: &Ps, want: &Ps) -> Vec<String> {
    let mut problems = Vec::new();
    for (pid, g) in got {
        match want.get(pid) {
            Some(w) => {
                if (g.0, g.1, g.2, g.3) != (w.0, w.1, w.2, w.3) || !w.4.starts_with(&g.4) {
                    problems.push(format!("pid {pid}: read {g:?}, the guest says {w:?}"));
                }
            }
            None if kernel_worker_churn(g.0 as u32, &g.4) => {}
            None => problems.push(format!("pid {pid} read, not in the guest: {g:?}")),
        }
    }
    for (pid, w) in want {
        if !got.contains_key(pid) && !kernel_worker_churn(w.0 as u32, &w.4) {
            problems.push(format!("pid {pid} missing: {w:?}"));
        }
    }
    problems
}

#[test]
fn detector_reads_pvh_and_pv_domus_from_dom0() {
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
    let hello = lab
        .build_module(
            DEFAULT_KERNEL,
            &ModuleSource::single(
                "lab_hello",
                include_str!("../../tests/lab/testmods/lab_hello.c"),
            ),
        )
        .expect("building the test module");
    let mut scenario = Scenario::standard()
        .insmod(&hello, "tag=xen-detector")
        .run_as("vmi-victim", 1000)
        .run_as("vmi-victim2", 1000);
    for m in ROOTKITS {
        scenario = scenario.file(
            common::attack_module(&lab, DEFAULT_KERNEL, m),
            &format!("/lab/{m}.ko"),
            0o644,
        );
    }
    let opts = XenOptions::default()
        .domu(DomuSpec::pvh(DOMU, DEFAULT_KERNEL, scenario.clone()))
        .domu(DomuSpec::pvh(PV, DEFAULT_KERNEL, scenario.clone()).pv())
        .program(env!("CARGO_BIN_EXE_detector"), DETECTOR)
        .file(&profile, &format!("{PROFILES}/{DEFAULT_KERNEL}.json"));
    let t = Instant::now();
    let mut rig = XenRig::boot(&lab, &opts).expect("Xen rig");
    eprintln!("Xen + dom0 ready in {:.1?}", rig.boot_time());

    let unknown = detector(&mut rig, "no-such-domain", "identify");
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("no Xen domain \"no-such-domain\"")
            && unknown.stderr.contains("Domain-0"),
        "{}",
        unknown.stderr
    );

    for name in [DOMU, PV] {
        let t = Instant::now();
        let mut domu = rig.start(name).expect("domU");
        eprintln!(
            "{name} ({:?}) ready in {:.1?}",
            domu.kind(),
            domu.boot_time()
        );
        assert!(domu.truth().check(&scenario.expectations()).is_empty());
        let truth = domu.refresh_truth().expect("fresh ground truth");
        let idle = read_and_attack(&mut rig, &mut domu, &truth);
        // the PV domU is watched across its destruction and a new start
        watch(&mut rig, &mut domu, idle, name == PV);
        eprintln!("{name}: every test in {:.1?}", t.elapsed());
    }
    rig.shutdown().expect("power off");
    eprintln!("whole test in {:.1?}", t.elapsed());
}

/// identify, ps, lsmod, a clean check; then the test rootkits (a hidden process and
/// module, stolen credentials; on PVH also a syscall and an IDT hook) and check
/// (running and paused) reports exactly their findings. Returns the hidden pid.
fn read_and_attack(rig: &mut XenRig, domu: &mut XenDomu, truth: &GroundTruth) -> u32 {
    let name = domu.name().to_string();
    let id = detector(rig, &name, "--json identify");
    assert_eq!(id.code, 0, "{}", id.stderr);
    let v = id.json();
    assert_eq!(v["source"]["kind"], "xen");
    assert_eq!(v["source"]["path"], name.as_str());
    assert_eq!(v["release"], truth.release.as_str());
    assert_eq!(v["vcpus"], 1);
    eprintln!("{name}: identify in {:.1?}", id.took);

    let ps = detector(rig, &name, "--json ps");
    assert_eq!(ps.code, 0, "{}", ps.stderr);
    let procs = ps.json();
    let problems = ps_matches(&detector_ps(&procs), &truth_ps(truth));
    assert!(problems.is_empty(), "{name}: {}", problems.join("\n"));
    eprintln!(
        "{name}: ps of {} processes in {:.1?}",
        procs.as_array().unwrap().len(),
        ps.took
    );

    let lsmod = detector(rig, &name, "--json lsmod");
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

    let clean = detector(rig, &name, "--json check");
    let report = clean.json();
    assert_eq!(clean.code, 0, "{report}\n{}", clean.stderr);
    assert_eq!(report["findings"].as_array().map(Vec::len), Some(0));
    assert_eq!(report["errors"].as_array().map(Vec::len), Some(0));
    eprintln!("{name}: clean check in {:.1?}", clean.took);

    // the rootkits, one after another, as on QEMU guests (tests/lab/attacks.rs)
    let pid_of = |comm: &str| truth.by_comm(comm).next().expect(comm).pid;
    let (idle, victim, victim2) = (
        pid_of("lab-idle"),
        pid_of("vmi-victim"),
        pid_of("vmi-victim2"),
    );
    let mut wants: Vec<Want> = vec![(
        "lab-idle unlinked from the tasks list",
        "hidden-process",
        Box::new(move |e| e["pid"] == idle && e["comm"] == "lab-idle"),
    )];
    let mut steps = vec![
        format!("vmi_hideproc.ko pid={idle}"),
        "vmi_hidemod.ko".to_string(),
        format!("vmi_creds.ko init_pid={victim} zero_pid={victim2}"),
    ];
    wants.push((
        "the hidden vmi_hidemod",
        "hidden-module",
        Box::new(|e| e["module"] == "vmi_hidemod"),
    ));
    wants.push((
        "vmi-victim's credentials are init_cred",
        "credentials",
        Box::new(move |e| e["pid"] == victim && e["init_cred"] == e["cred"]),
    ));
    wants.push((
        "vmi-victim2's uid 0 with the user_struct of uid 1000",
        "credentials",
        Box::new(move |e| e["pid"] == victim2 && e["uid"] == 0 && e["user_struct_uid"] == 1000),
    ));
    if domu.kind() != DomuKind::Pv {
        steps.push("vmi_hooksys.ko nr=180".into());
        steps.push("vmi_hookidt.ko vector=15 hide=1".into());
        wants.push((
            "sys_call_table[180] hooked by vmi_hooksys",
            "syscall-table",
            Box::new(|e| e["nr"] == 180 && e["owner"] == "module vmi_hooksys"),
        ));
        wants.push((
            "IDT vector 15 hooked by the hidden vmi_hookidt",
            "idt",
            Box::new(|e| e["vector"] == 15 && e["owner"] == "hidden module vmi_hookidt"),
        ));
        wants.push((
            "the hidden vmi_hookidt",
            "hidden-module",
            Box::new(|e| e["module"] == "vmi_hookidt"),
        ));
    }
    for step in &steps {
        let ins = domu
            .sh(&format!("insmod /lab/{step}"))
            .expect("loading a rootkit");
        assert_eq!(ins.status, 0, "insmod {step}: {:?}", ins.lines);
    }
    for args in ["--json check", "--json check --pause"] {
        let run = detector(rig, &name, args);
        let report = run.json();
        assert_eq!(run.code, 1, "{args}: {report}\n{}", run.stderr);
        expect_exactly(&format!("{name} {args}"), &report, &wants);
        eprintln!(
            "{name}: {args} after {} rootkits: {} findings in {:.1?}",
            steps.len(),
            wants.len(),
            run.took
        );
    }
    // --pause resumed the domain
    assert!(
        !xl_state(rig, &name).contains('p'),
        "the domain stays paused"
    );
    idle
}

/// A finding a report must have: what it is, its check, a test of its evidence.
type Want = (&'static str, &'static str, Box<dyn Fn(&Value) -> bool>);

/// `report` has exactly the findings `wants` describe, and no errors.
fn expect_exactly(label: &str, report: &Value, wants: &[Want]) {
    let findings = report["findings"].as_array().expect("findings");
    for (what, check, test) in wants {
        assert!(
            findings
                .iter()
                .any(|f| f["check"] == *check && test(&f["evidence"])),
            "{label}: no finding for {what}: {report:#}"
        );
    }
    assert_eq!(findings.len(), wants.len(), "{label}: {report:#}");
    assert_eq!(
        report["errors"].as_array().map(Vec::len),
        Some(0),
        "{label}: {report:#}"
    );
}

fn is_hidden(f: &Value, pid: u32) -> bool {
    f["check"] == "hidden-process"
        && f["evidence"]["pid"] == pid
        && f["evidence"]["comm"] == "lab-idle"
}

/// The state column of `xl list DOMAIN` (empty when it is not listed).
fn xl_state(rig: &mut XenRig, domain: &str) -> String {
    let list = rig
        .dom0_sh(&format!(
            "{XEN_BIN}/xl list {} 2>/dev/null",
            quote(domain).unwrap()
        ))
        .expect("xl list");
    list.lines
        .iter()
        .find(|l| l.starts_with(domain))
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap_or("")
        .to_string()
}

/// The JSON events `watch` has written to `file` in dom0 so far.
fn events(rig: &mut XenRig, file: &str) -> Vec<Value> {
    rig.dom0_sh(&format!("cat {}", quote(file).unwrap()))
        .expect("reading the watch output")
        .lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Wait until `watch` has written an event matching `pred` (after the first `skip`).
fn wait_for(
    rig: &mut XenRig,
    file: &str,
    what: &str,
    skip: usize,
    pred: impl Fn(&Value) -> bool,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = events(rig, file);
        if let Some(i) = seen.iter().skip(skip).position(&pred) {
            return skip + i + 1;
        }
        if Instant::now() > deadline {
            let err = rig
                .dom0_sh(&format!(
                    "cat {}; echo exit status: $(cat {} 2>/dev/null); \
                     ps -o pid,stat,time,args | grep -v grep | grep detector; \
                     {XEN_BIN}/xl list",
                    quote(&format!("{file}.err")).unwrap(),
                    quote(&format!("{file}.code")).unwrap()
                ))
                .map(|o| o.lines);
            panic!("watch did not report {what}: {seen:#?}\nstderr, status, ps, xl list: {err:#?}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `watch --pause` scans and resumes; pause-free `watch` reports the hidden process, a
/// new process, `xl pause`/`xl unpause` and `xl destroy`, then exits; with `wait`
/// (`--on-shutdown wait`) it watches the domain started again under the same name
/// instead, until SIGTERM.
fn watch(rig: &mut XenRig, domu: &mut XenDomu, hidden: u32, wait: bool) {
    let name = domu.name().to_string();
    // one scan's latency: 21 scans against 1, back to back, same start-up
    let one = detector(rig, &name, "--json watch --scans 1 --interval 10ms");
    let many = detector(rig, &name, "--json watch --scans 21 --interval 10ms");
    assert_eq!(
        (one.code, many.code),
        (0, 0),
        "{}{}",
        one.stderr,
        many.stderr
    );
    eprintln!(
        "{name}: one watch scan from dom0 takes {:.1?} (21 scans {:.1?}, 1 scan {:.1?})",
        many.took.saturating_sub(one.took) / 20,
        many.took,
        one.took
    );
    let paused = detector(
        rig,
        &name,
        "--json watch --pause --scans 3 --interval 200ms",
    );
    assert_eq!(paused.code, 0, "{}", paused.stderr);
    assert!(
        paused.stdout.contains(r#""event":"stopped""#),
        "{}",
        paused.stdout
    );
    assert!(
        !xl_state(rig, &name).contains('p'),
        "watch --pause left it paused"
    );

    let file = format!("/tmp/watch-{name}.jsonl");
    let on_shutdown = if wait { "wait" } else { "exit" };
    let q = |s: &str| quote(s).unwrap().into_owned();
    let watch = format!(
        "echo $$ >{}; exec {DETECTOR} --xen {} --profiles {PROFILES} \
         --json watch --interval 500ms --on-shutdown {on_shutdown}",
        q(&format!("{file}.pid")),
        q(&name)
    );
    let start = rig
        .dom0_sh(&format!(
            "(sh -c {} >{} 2>{} </dev/null; echo $? >{}) >/dev/null 2>&1 </dev/null &",
            q(&watch),
            q(&file),
            q(&format!("{file}.err")),
            q(&format!("{file}.code"))
        ))
        .expect("starting watch in dom0");
    assert_eq!(start.status, 0, "{:?}", start.lines);
    let t = Instant::now();
    let mut at = wait_for(rig, &file, "the rootkit's hidden process", 0, |v| {
        v["event"] == "finding" && is_hidden(v, hidden)
    });
    eprintln!("{name}: watch's first scan reported in {:.1?}", t.elapsed());

    // a worker's child named from its fork on, reaped at once when killed (a shell's
    // orphaned `sleep` stayed a zombie of init, listed, until init next reaped)
    let sleeper = common::start_marker_with(&mut |line| domu.sh(line), "vmi-sleeper");
    let t = Instant::now();
    at = wait_for(rig, &file, "the sleeper starting", at, |v| {
        v["event"] == "process-start" && v["pid"] == sleeper && v["comm"] == "vmi-sleeper"
    });
    eprintln!("{name}: a new process reported in {:.1?}", t.elapsed());

    let xl = |rig: &mut XenRig, cmd: &str| {
        let o = rig
            .dom0_sh(&format!("{XEN_BIN}/xl {cmd} {}", quote(&name).unwrap()))
            .expect("xl");
        assert_eq!(o.status, 0, "xl {cmd}: {:?}", o.lines);
    };
    xl(rig, "pause");
    at = wait_for(rig, &file, "the pause", at, |v| v["event"] == "paused");
    xl(rig, "unpause");
    at = wait_for(rig, &file, "the resume", at, |v| v["event"] == "resumed");
    // and it scans again: the sleeper's exit
    let kill = domu.sh(&format!("kill {sleeper}")).expect("kill");
    assert_eq!(kill.status, 0, "kill {sleeper}: {:?}", kill.lines);
    at = wait_for(rig, &file, "the sleeper exiting", at, |v| {
        v["event"] == "process-exit" && v["pid"] == sleeper
    });

    let t = Instant::now();
    rig.destroy(&name).expect("xl destroy");
    at = wait_for(rig, &file, "the domain gone", at, |v| {
        v["event"] == "shutdown"
    });
    eprintln!("{name}: xl destroy reported in {:.1?}", t.elapsed());
    // nothing of ours keeps the domain alive as a dying one
    let deadline = Instant::now() + Duration::from_secs(20);
    while !xl_state(rig, &name).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{name} is still listed after xl destroy"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    if wait {
        // the same name again: watch finds it and its processes, then stops on SIGTERM
        let again = rig.start(&name).expect("the domU again");
        at = wait_for(rig, &file, "watching the new domain", at, |v| {
            v["event"] == "started"
        });
        at = wait_for(rig, &file, "the new domain's lab-idle", at, |v| {
            v["event"] == "process-start" && v["comm"] == "lab-idle"
        });
        eprintln!(
            "{name}: watched again {:.1?} after it booted ({:.1?})",
            t.elapsed(),
            again.boot_time()
        );
        let term = rig
            .dom0_sh(&format!(
                "kill -TERM $(cat {})",
                quote(&format!("{file}.pid")).unwrap()
            ))
            .expect("kill");
        assert_eq!(term.status, 0, "{:?}", term.lines);
    }
    wait_for(rig, &file, "watch stopping", at, |v| {
        v["event"] == "stopped"
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        let code = rig
            .dom0_sh(&format!(
                "cat {} 2>/dev/null",
                quote(&format!("{file}.code")).unwrap()
            ))
            .expect("exit code")
            .lines
            .join("");
        if !code.trim().is_empty() || Instant::now() > deadline {
            break code;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(code.trim(), "0", "watch's exit status");
}
