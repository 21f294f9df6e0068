//! The detector end to end on real guests: the `detector` binary against live QEMU
//! guests and their ELF dumps, profiles made by profile-gen from each kernel's -dbg
//! package, ground truth from the guests themselves.
//!
//! - `attacks_are_found_and_named`: on Debian 6.1 and 6.12 (the kernels this machine's
//!   gcc builds modules for), one guest per kernel. Clean first: `check` finds nothing,
//!   `ps`/`lsmod` equal the guest's own view, and the views the checks compare (pid
//!   namespace IDR, module kset, syscall table, IDT) are really read. Then test rootkits
//!   (`tests/mods/*.c`, the last an inline hook found by comparing kernel text with the
//!   image; the very last hides a busy process from every list but the runqueue) are
//!   loaded one after the other, and after each, `check` must
//!   report exactly the findings of the attacks so far, naming the right process,
//!   module, system call, vector and owner.
//! - `clean_guests_raise_nothing`: every other kernel of the lab's matrix (5.10, 7.2,
//!   newest 7.x; no attack modules: 7.x headers need gcc-16, which this machine lacks)
//!   booted once: `check` live and on an ELF dump finds nothing and no check fails;
//!   `identify`, `ps` and `lsmod` agree with the guest.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use vmi_core::kernel::pidns::PidLimits;
use vmi_core::kernel::{Hints, Kernel, ProfileSet};
use vmi_core::memory::{QemuLive, QemuOptions, VcpuRegisters};
use vmi_lab::{BootOptions, GroundTruth, Guest, Lab, Scenario, MATRIX};

/// Kernels whose headers this machine's gcc builds modules for.
const ATTACK_KERNELS: &[&str] = &["6.1.0-56-amd64", "6.12.117+deb12-amd64"];

/// The detector binary with a profile directory, and the kernel image (the vmlinux of
/// the -dbg package) for the kernel-text check.
struct Detector {
    profiles: PathBuf,
    image: Option<PathBuf>,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
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

impl Detector {
    fn run(&self, source: &[&str], args: &[&str]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_detector"));
        cmd.args(source).arg("--profiles").arg(&self.profiles);
        if let Some(image) = &self.image {
            cmd.arg("--image").arg(image);
        }
        let out = cmd.args(args).output().expect("running detector");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn live(&self, guest: &mut Guest, args: &[&str]) -> Run {
        guest.release_qmp();
        let sock = guest.qmp_socket();
        self.run(&["--qemu", sock.to_str().unwrap()], args)
    }
}

fn profile_into(lab: &Lab, kernel: &str, dir: &Path) {
    let d = lab.store().debug(kernel).expect("-dbg package");
    let built = profile_gen::build::from_dwarf(
        &d.vmlinux,
        Some(&d.system_map),
        &profile_gen::build::Options::default(),
    )
    .expect("profile-gen");
    assert!(
        built.profile.missing.is_empty(),
        "{kernel}: the profile misses {:?}",
        built.profile.missing
    );
    let name = format!("{}.json", built.profile.kernel.release);
    std::fs::write(dir.join(name), built.profile.to_json()).expect("writing the profile");
}

/// (check, evidence) of every finding in a `check --json` report.
fn findings(v: &Value) -> Vec<(String, Value)> {
    v["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    (
                        f["check"].as_str().unwrap_or("").to_string(),
                        f["evidence"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One expected finding: its check and a predicate on its evidence.
struct Want {
    what: String,
    check: &'static str,
    matches: Box<dyn Fn(&Value) -> bool>,
}

fn want(what: &str, check: &'static str, matches: impl Fn(&Value) -> bool + 'static) -> Want {
    Want {
        what: what.to_string(),
        check,
        matches: Box::new(matches),
    }
}

/// The report has exactly the wanted findings (one each) and no check failed.
fn expect_exactly(label: &str, run: &Run, wants: &[Want]) -> Vec<String> {
    let mut problems = Vec::new();
    let v = run.json();
    let want_code = if wants.is_empty() { 0 } else { 1 };
    if run.code != want_code {
        problems.push(format!(
            "{label}: exit code {} (want {want_code}): {}",
            run.code, run.stderr
        ));
    }
    if v["errors"].as_array().is_none_or(|e| !e.is_empty()) {
        problems.push(format!("{label}: checks failed: {}", v["errors"]));
    }
    let got = findings(&v);
    let mut used = vec![false; got.len()];
    for w in wants {
        let hits: Vec<usize> = got
            .iter()
            .enumerate()
            .filter(|(_, (c, ev))| c == w.check && (w.matches)(ev))
            .map(|(i, _)| i)
            .collect();
        match hits.as_slice() {
            [i] => used[*i] = true,
            [] => problems.push(format!("{label}: no finding for {}", w.what)),
            _ => problems.push(format!("{label}: {} findings for {}", hits.len(), w.what)),
        }
    }
    for (i, (c, ev)) in got.iter().enumerate() {
        if !used[i] {
            problems.push(format!("{label}: unexpected {c} finding {ev}"));
        }
    }
    problems
}

fn pid_of(truth: &GroundTruth, comm: &str) -> u32 {
    let mut it = truth.by_comm(comm);
    let p = it.next().unwrap_or_else(|| panic!("{comm} is not running"));
    p.pid
}

/// `ps --json` and `lsmod --json` equal the guest's view; `identify` the release and
/// the KASLR shift.
fn views_match(label: &str, d: &Detector, source: &[&str], truth: &GroundTruth) -> Vec<String> {
    let mut problems = Vec::new();
    let id = d.run(source, &["--json", "identify"]);
    let idv = id.json();
    if idv["release"] != truth.release.as_str() {
        problems.push(format!(
            "{label}: identify says {} for {}",
            idv["release"], truth.release
        ));
    }
    let shift = truth.text_addr.wrapping_sub(0xffff_ffff_8100_0000);
    if idv["kaslr"]["virtual_shift"] != format!("{shift:#x}").as_str() {
        problems.push(format!(
            "{label}: virtual shift {} (the guest's _text says {shift:#x})",
            idv["kaslr"]["virtual_shift"]
        ));
    }
    let ps = d.run(source, &["--json", "ps"]).json();
    let got: BTreeSet<(u64, u64, u64, usize)> = ps
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["pid"].as_u64().unwrap(),
                p["ppid"].as_u64().unwrap(),
                p["uid"].as_u64().unwrap(),
                p["threads"].as_array().unwrap().len(),
            )
        })
        .collect();
    let want: BTreeSet<(u64, u64, u64, usize)> = truth
        .processes
        .iter()
        .map(|p| {
            (
                u64::from(p.pid),
                u64::from(p.ppid),
                u64::from(p.uid),
                p.threads as usize,
            )
        })
        .collect();
    if got != want {
        problems.push(format!(
            "{label}: ps differs from the guest: only in memory {:?}, only in the guest {:?}",
            got.difference(&want).collect::<Vec<_>>(),
            want.difference(&got).collect::<Vec<_>>()
        ));
    }
    // executables, rebuilt from mm->exe_file across mounts, as /proc/<pid>/exe says
    let got: BTreeSet<(u64, String)> = ps
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| Some((p["pid"].as_u64()?, p["exe"].as_str()?.to_string())))
        .collect();
    let want: BTreeSet<(u64, String)> = truth
        .processes
        .iter()
        .filter(|p| !p.exe.is_empty())
        .map(|p| (u64::from(p.pid), p.exe.clone()))
        .collect();
    if got != want || want.is_empty() {
        problems.push(format!(
            "{label}: executables differ: only in memory {:?}, only in the guest {:?}",
            got.difference(&want).collect::<Vec<_>>(),
            want.difference(&got).collect::<Vec<_>>()
        ));
    }
    let lsmod = d.run(source, &["--json", "lsmod"]).json();
    let got: BTreeSet<(String, String)> = lsmod
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["core_base"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = truth
        .modules
        .iter()
        .map(|m| (m.name.clone(), format!("{:#x}", m.addr)))
        .collect();
    if got != want {
        problems.push(format!("{label}: lsmod {got:?}, the guest says {want:?}"));
    }
    problems
}

/// The views the checks compare are really read: the pid namespace names every thread
/// the guest has, the module kset holds every listed module, the x64 syscall table has
/// NR_syscalls entries in kernel text, the IDT has present gates.
fn walkers_see_the_guest(label: &str, guest: &mut Guest, profiles: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let truth = guest.truth().clone();
    guest.release_qmp();
    let live = QemuLive::connect(guest.qmp_socket(), &QemuOptions::default()).expect("live");
    let (set, _) = ProfileSet::load_dir(profiles).expect("profiles");
    let id = set.identify(&live).expect("identify");
    let hints = Hints {
        registers: live.registers(0).ok(),
        vmcoreinfo: None,
    };
    let _pause = vmi_core::memory::PauseGuard::new(&live).expect("pause");
    let k = Kernel::discover_at(&live, id.profile, id.banner_pa, &hints).expect("discover");
    let view = k
        .pid_namespace_tasks(&PidLimits::default())
        .expect("pid namespace walk");
    let got: BTreeSet<(u32, u32)> = view.tasks.iter().map(|t| (t.tgid, t.tid)).collect();
    let want: BTreeSet<(u32, u32)> = truth.threads.iter().map(|t| (t.tgid, t.tid)).collect();
    if got != want {
        problems.push(format!(
            "{label}: pid namespace tasks differ from /proc: only in the IDR {:?}, only in /proc {:?}",
            got.difference(&want).collect::<Vec<_>>(),
            want.difference(&got).collect::<Vec<_>>()
        ));
    }
    let kobjs = k.module_kobjects(1 << 14).expect("module kset walk");
    let with_module: BTreeSet<String> = kobjs
        .iter()
        .filter(|o| o.module.is_some())
        .map(|o| String::from_utf8_lossy(&o.name).into_owned())
        .collect();
    let listed: BTreeSet<String> = truth.modules.iter().map(|m| m.name.clone()).collect();
    if with_module != listed {
        problems.push(format!(
            "{label}: module kobjects {with_module:?}, /proc/modules {listed:?}"
        ));
    }
    if kobjs.len() <= with_module.len() {
        problems.push(format!(
            "{label}: no built-in module kobjects among {} (the kset walk sees only part of /sys/module)",
            kobjs.len()
        ));
    }
    let tables = k.syscall_tables().expect("syscall tables");
    let text = k.text_range().expect("text");
    let x64 = &tables[0];
    if x64.entries.len() < 400 || !x64.entries.iter().all(|&e| text.contains(e)) {
        problems.push(format!(
            "{label}: sys_call_table has {} entries, {} outside text",
            x64.entries.len(),
            x64.entries.iter().filter(|&&e| !text.contains(e)).count()
        ));
    }
    let (_, gates) = k.idt().expect("idt");
    let present = gates.iter().filter(|g| g.present).count();
    if present < 200 {
        problems.push(format!("{label}: only {present} present IDT gates"));
    }
    // the runqueue of the guest's one CPU names its idle task or a task the guest has
    let running = k.running().expect("runqueues");
    let known = |tid: u32| truth.threads.iter().any(|t| t.tid == tid);
    let fits = running.len() == 1
        && running.iter().all(|r| {
            (r.tid == 0 && r.comm.starts_with(b"swapper")) || (r.tid != 0 && known(r.tid))
        });
    if !fits {
        problems.push(format!("{label}: the runqueues say {running:?}"));
    }
    problems
}

#[test]
fn attacks_are_found_and_named() {
    let lab = Lab::open_default().expect("lab");
    let mut problems = Vec::new();
    for kernel in ATTACK_KERNELS {
        problems.extend(attack(&lab, kernel));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The policy check on the clean guest: each rule finds exactly the processes the guest
/// says it should, and an allowing policy finds nothing.
fn policy(
    kernel: &str,
    d: &Detector,
    guest: &mut Guest,
    truth: &GroundTruth,
    dir: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    let file = dir.join("policy.toml");
    let run_with = |guest: &mut Guest, text: &str| {
        std::fs::write(&file, text).unwrap();
        d.live(
            guest,
            &[
                "--json",
                "--policy",
                file.to_str().unwrap(),
                "check",
                "--check",
                "policy",
            ],
        )
    };
    let user = |p: &&vmi_lab::truth::Process| !p.is_kernel_thread();
    let sleeper = pid_of(truth, "lab-sleeper");
    let chains: Vec<u32> = truth.by_comm("lab-chain").map(|p| p.pid).collect();
    let roots: Vec<u32> = truth
        .processes
        .iter()
        .filter(user)
        .filter(|p| p.euid == 0)
        .map(|p| p.pid)
        .collect();
    let mut wants = vec![want("lab-sleeper by name", "policy", move |e| {
        e["rule"] == "deny_names" && e["pid"] == sleeper
    })];
    for pid in chains {
        wants.push(want(
            &format!("lab-chain {pid} by path"),
            "policy",
            move |e| e["rule"] == "deny_exe" && e["pid"] == pid && e["exe"] == "/bin/lab-chain",
        ));
    }
    for pid in roots {
        wants.push(want(&format!("root process {pid}"), "policy", move |e| {
            e["rule"] == "root_uids" && e["pid"] == pid
        }));
    }
    let run = run_with(
        guest,
        "deny_names = [\"lab-sleeper\"]\ndeny_exe = [\"/bin/lab-ch*\"]\nroot_uids = [1]\n",
    );
    problems.extend(expect_exactly(&format!("{kernel} policy"), &run, &wants));
    let run = run_with(
        guest,
        "deny_names = [\"nc\"]\ndeny_exe = [\"/tmp/*\"]\nroot_uids = [0]\n",
    );
    problems.extend(expect_exactly(
        &format!("{kernel} allowing policy"),
        &run,
        &[],
    ));
    problems
}

fn attack(lab: &Lab, kernel: &str) -> Vec<String> {
    let mods = [
        "vmi_hideproc",
        "vmi_hidemod",
        "vmi_hooksys",
        "vmi_hookidt",
        "vmi_creds",
        "vmi_inline",
        "vmi_ghost",
    ];
    let mut scenario = Scenario::standard()
        .sleeper("vmi-hideme")
        .run_as("vmi-victim", 1000)
        .run_as("vmi-victim2", 1000);
    for m in mods {
        scenario = scenario.file(
            common::attack_module(lab, kernel, m),
            &format!("/lab/{m}.ko"),
            0o644,
        );
    }
    let profiles = tempfile::tempdir().expect("tempdir");
    profile_into(lab, kernel, profiles.path());
    let d = Detector {
        profiles: profiles.path().to_path_buf(),
        image: Some(lab.store().debug(kernel).expect("-dbg").vmlinux),
    };
    let mut guest = lab
        .boot(kernel, &scenario, &BootOptions::default())
        .expect("boot");
    let truth = guest.refresh_truth().expect("truth");
    let mut problems = Vec::new();
    let sock = guest.qmp_socket();
    let live = ["--qemu", sock.to_str().unwrap()];

    // clean; paused while compared with the truth (kernel threads come and go)
    guest.pause().expect("pause");
    guest.release_qmp();
    problems.extend(views_match(&format!("{kernel} clean"), &d, &live, &truth));
    problems.extend(walkers_see_the_guest(
        &format!("{kernel} clean"),
        &mut guest,
        profiles.path(),
    ));
    guest.resume().expect("resume");
    let run = d.live(&mut guest, &["--json", "check"]);
    problems.extend(expect_exactly(&format!("{kernel} clean"), &run, &[]));
    problems.extend(policy(kernel, &d, &mut guest, &truth, profiles.path()));

    let hideme = pid_of(&truth, "vmi-hideme");
    let victim = pid_of(&truth, "vmi-victim");
    let victim2 = pid_of(&truth, "vmi-victim2");
    let mut wants: Vec<Want> = Vec::new();
    let insmod = |guest: &mut Guest, line: &str| {
        let out = guest
            .sh_timeout(&format!("insmod {line}"), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{kernel}: insmod {line}: {e}\n{}", guest.console_tail(30)));
        assert_eq!(
            out.status,
            0,
            "{kernel}: insmod {line}: {:?}\n{}",
            out.lines,
            guest.console_tail(30)
        );
    };

    // 1. a process unlinked from the tasks list
    insmod(&mut guest, &format!("/lab/vmi_hideproc.ko pid={hideme}"));
    wants.push(want("the hidden vmi-hideme", "hidden-process", move |e| {
        e["pid"] == hideme && e["comm"] == "vmi-hideme"
    }));
    let run = d.live(&mut guest, &["--json", "check"]);
    problems.extend(expect_exactly(&format!("{kernel} hideproc"), &run, &wants));
    let ps = d.live(&mut guest, &["--json", "ps"]).json();
    if ps.as_array().unwrap().iter().any(|p| p["pid"] == hideme) {
        problems.push(format!(
            "{kernel}: ps (tasks list) still shows {hideme}: the attack did not happen"
        ));
    }
    let t = guest.refresh_truth().expect("truth");
    if t.process(hideme).is_none() {
        problems.push(format!("{kernel}: /proc lost {hideme} too"));
    }

    // 2. a module removed from the modules list
    insmod(&mut guest, "/lab/vmi_hidemod.ko");
    wants.push(want("the hidden vmi_hidemod", "hidden-module", |e| {
        e["module"] == "vmi_hidemod"
    }));
    let run = d.live(&mut guest, &["--json", "check"]);
    problems.extend(expect_exactly(&format!("{kernel} hidemod"), &run, &wants));
    let t = guest.refresh_truth().expect("truth");
    if t.modules.iter().any(|m| m.name == "vmi_hidemod") {
        problems.push(format!("{kernel}: /proc/modules still lists vmi_hidemod"));
    }

    // 3. a system call table entry pointing into a (listed) module
    insmod(&mut guest, "/lab/vmi_hooksys.ko nr=180");
    wants.push(want(
        "sys_call_table[180] hooked by vmi_hooksys",
        "syscall-table",
        |e| e["table"] == "sys_call_table" && e["nr"] == 180 && e["owner"] == "module vmi_hooksys",
    ));
    // sys_call_table lies in .rodata, outside __ro_after_init: the image comparison
    // sees the same write
    wants.push(want(
        "sys_call_table differing from the image",
        "kernel-text",
        |e| e["symbol"] == "sys_call_table",
    ));
    let run = d.live(&mut guest, &["--json", "check"]);
    problems.extend(expect_exactly(&format!("{kernel} hooksys"), &run, &wants));

    // 4. an IDT gate pointing into a module that then hides
    insmod(&mut guest, "/lab/vmi_hookidt.ko vector=15 hide=1");
    wants.push(want(
        "IDT vector 15 hooked by hidden vmi_hookidt",
        "idt",
        |e| e["vector"] == 15 && e["owner"] == "hidden module vmi_hookidt",
    ));
    wants.push(want("the hidden vmi_hookidt", "hidden-module", |e| {
        e["module"] == "vmi_hookidt"
    }));
    let run = d.live(&mut guest, &["--json", "check"]);
    problems.extend(expect_exactly(&format!("{kernel} hookidt"), &run, &wants));

    // 5. credentials: init_cred handed to one process, uid 0 written into another's
    insmod(
        &mut guest,
        &format!("/lab/vmi_creds.ko init_pid={victim} zero_pid={victim2}"),
    );
    // cred and real_cred are one struct cred in a process that never overrode them:
    // one finding each
    wants.push(want(
        "vmi-victim's credentials are init_cred",
        "credentials",
        move |e| e["pid"] == victim && e["init_cred"].is_string() && e["init_cred"] == e["cred"],
    ));
    wants.push(want(
        "vmi-victim2's uid 0 with the user_struct of uid 1000",
        "credentials",
        move |e| e["pid"] == victim2 && e["uid"] == 0 && e["user_struct_uid"] == 1000,
    ));
    let t = guest.refresh_truth().expect("truth");
    for pid in [victim, victim2] {
        if t.process(pid).map(|p| p.uid) != Some(0) {
            problems.push(format!("{kernel}: the guest does not see {pid} as root"));
        }
    }
    // 6. an inline hook at a kernel function's entry
    insmod(&mut guest, "/lab/vmi_inline.ko");
    wants.push(want(
        "__x64_sys_sysfs hooked inline by vmi_inline",
        "kernel-text",
        |e| e["symbol"] == "__x64_sys_sysfs" && e["owner"] == "module vmi_inline",
    ));
    let run = d.live(&mut guest, &["--json", "check"]);
    let label = format!("{kernel} creds (live)");
    problems.extend(expect_exactly(&label, &run, &wants));
    let run = d.live(&mut guest, &["--json", "check", "--pause"]);
    problems.extend(expect_exactly(
        &format!("{kernel} creds (paused)"),
        &run,
        &wants,
    ));
    // text output: one line per finding, exit code 1, printable
    let run = d.live(&mut guest, &["check"]);
    eprintln!("{kernel}: detector check\n{}", run.stdout);
    let lines = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("high") || l.starts_with("medium"))
        .count();
    if run.code != 1
        || lines != wants.len()
        || !run
            .stdout
            .bytes()
            .all(|b| b == b'\n' || (0x20..0x7f).contains(&b))
    {
        problems.push(format!(
            "{kernel}: text check: exit {} and {lines} lines:\n{}",
            run.code, run.stdout
        ));
    }

    // the same from an ELF dump
    let dump = tempfile::tempdir().expect("tempdir");
    let elf = dump.path().join("g.elf");
    guest.dump_elf(&elf).expect("ELF dump");
    let run = d.run(&["--dump", elf.to_str().unwrap()], &["--json", "check"]);
    problems.extend(expect_exactly(&format!("{kernel} ELF dump"), &run, &wants));

    // 7. a busy process hidden from the tasks list and the pid namespace alike: only
    // the runqueue of the CPU it runs on names it. The guest's one CPU runs it nearly
    // always, but a paused guest can have stopped in another task: up to 5 tries.
    let out = guest
        .sh("sh -c 'while :; do :; done' >/dev/null 2>&1 & echo $!")
        .expect("sh");
    let spin: u32 = out.lines[0].trim().parse().expect("pid");
    insmod(&mut guest, &format!("/lab/vmi_ghost.ko pid={spin}"));
    let t = guest.refresh_truth().expect("truth");
    if t.process(spin).is_some() {
        problems.push(format!(
            "{kernel}: /proc still shows {spin}: the attack did not happen"
        ));
    }
    wants.push(want(
        "the busy process hidden from both views, on CPU 0",
        "hidden-process",
        move |e| e["tid"] == spin && e["cpu"] == 0,
    ));
    let mut last = Vec::new();
    for _ in 0..5 {
        let run = d.live(&mut guest, &["--json", "check", "--pause"]);
        last = expect_exactly(&format!("{kernel} ghost (paused)"), &run, &wants);
        if last.is_empty() {
            break;
        }
    }
    problems.extend(last);
    drop(guest); // the spinning guest is killed, not shut down
    problems
}

#[test]
fn clean_guests_raise_nothing() {
    let lab = Lab::open_default().expect("lab");
    let mut problems = Vec::new();
    for kernel in MATRIX.iter().filter(|k| !ATTACK_KERNELS.contains(k)) {
        let profiles = tempfile::tempdir().expect("tempdir");
        profile_into(&lab, kernel, profiles.path());
        let d = Detector {
            profiles: profiles.path().to_path_buf(),
            image: Some(lab.store().debug(kernel).expect("-dbg").vmlinux),
        };
        let mut guest = match lab.boot(kernel, &Scenario::standard(), &BootOptions::default()) {
            Ok(g) => g,
            Err(e) => {
                problems.push(format!("{kernel}: boot: {e}"));
                continue;
            }
        };
        let truth = guest.refresh_truth().expect("truth");
        let label = format!("{kernel} ({})", truth.release);
        let sock = guest.qmp_socket();
        guest.pause().expect("pause");
        guest.release_qmp();
        problems.extend(views_match(
            &label,
            &d,
            &["--qemu", sock.to_str().unwrap()],
            &truth,
        ));
        problems.extend(walkers_see_the_guest(&label, &mut guest, profiles.path()));
        guest.resume().expect("resume");
        let run = d.live(&mut guest, &["--json", "check"]);
        problems.extend(expect_exactly(&format!("{label} live"), &run, &[]));
        let dump = tempfile::tempdir().expect("tempdir");
        let elf = dump.path().join("g.elf");
        guest.dump_elf(&elf).expect("ELF dump");
        let run = d.run(&["--dump", elf.to_str().unwrap()], &["--json", "check"]);
        problems.extend(expect_exactly(&format!("{label} ELF"), &run, &[]));
        guest.shutdown().expect("shutdown");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn bad_input_is_an_error_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.raw");
    std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    let d = Detector {
        profiles,
        image: None,
    };
    // no profiles at all
    let run = d.run(&["--dump", junk.to_str().unwrap()], &["check"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no profiles"), "{}", run.stderr);
    // a missing dump, with --json: the error is JSON too
    let run = d.run(&["--dump", "/nonexistent/dump"], &["--json", "ps"]);
    assert_eq!(run.code, 2);
    assert!(run.json()["error"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/dump"));
    // a profile that is no profile
    let p = dir.path().join("p.json");
    std::fs::write(&p, "{}").unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_detector"))
        .args([
            "--dump",
            junk.to_str().unwrap(),
            "--profile",
            p.to_str().unwrap(),
            "check",
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("p.json"));
    // an unknown check name lists the real ones
    let run = d.run(
        &["--dump", junk.to_str().unwrap()],
        &["check", "--check", "idt,bogus"],
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("\"bogus\"") && run.stderr.contains("hidden-process, hidden-module"),
        "{}",
        run.stderr
    );
    // no source given
    let run = Command::new(env!("CARGO_BIN_EXE_detector"))
        .args(["identify"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--dump FILE or --qemu"));
}
