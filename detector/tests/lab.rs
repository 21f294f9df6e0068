//! The detector end to end on real guests: the `detector` binary against live QEMU
//! guests and their ELF dumps, profiles made by profile-gen from each kernel's -dbg
//! package, ground truth from the guests themselves.
//!
//! - `attacks_are_found_and_named`: on Debian 6.1 and 6.12 (the kernels this machine's
//!   gcc builds modules for), one guest per kernel. Clean first: `check` finds nothing,
//!   `ps`/`lsmod` equal the guest's own view, and the views the checks compare (pid
//!   namespace IDR, module kset, syscall table, IDT, and the tracing walkers against the
//!   guest's own kprobe events, function tracer and trace events) are really read. Then
//!   test rootkits (`tests/mods/*.c`: an inline hook found by comparing kernel text with
//!   the image, hooks through ftrace, kprobes and a tracepoint whose modules hide, a
//!   netfilter hook, a keyboard notifier from a module that hides, replaced tty and
//!   /proc/net/tcp operations, processes renamed with prctl or with rewritten
//!   arguments, and last a busy process hidden from every list but the
//!   runqueue) are loaded one after the other, and after each, `check` must report
//!   exactly the findings of the attacks so far, naming the right process, module,
//!   system call, vector, hooked function, hook point, chain, table and owner.
//!   Volatility 3's tracing, netfilter, keyboard_notifiers, tty_check, check_afinfo
//!   and process_spoofing plugins run on the ELF dump of the hooked guest: the
//!   detector must report every hook they do and both spoofed processes. With nc
//!   listeners and a connected pair up, `sockets` must list what the guest's /proc/net
//!   lists, with the pids its /proc/PID/fd give, `allow_listen` must flag the listeners
//!   it does not allow, and every TCP/UDP socket of Volatility's sockstat must be listed.
//!   A kernel perf counter with a module's overflow handler must be a perf-events
//!   finding. The lab worker then loads BPF programs through the raw bpf() syscall (a kprobe
//!   program on a kprobe perf event, a raw tracepoint program, a socket filter, a kprobe
//!   program on a perf event link; `lab_steps/ebpf.rs`): `bpf` must list them as the
//!   guest does, `ebpf` report all but the filter, and every program and perf event of Volatility's linux.ebpf and
//!   linux.tracing.perf_events must be the detector's too.
//!   The clean guests of the other kernels compare `sockets` with /proc/net too.
//!   A copy of the worker maps an anonymous RWX region holding shellcode-like bytes and
//!   one made r-x after it was written: `check` reports both with their first bytes,
//!   live and from the dump, and every region of Volatility's linux.malfind; `maps`
//!   equals /proc/PID/maps (also on the clean guests of the other kernels).
//! - `clean_guests_raise_nothing`: every other kernel of the lab's matrix (5.10, 7.2,
//!   newest 7.x) booted once: `check` live and on an ELF dump finds nothing and no
//!   check fails; `identify`, `ps` and `lsmod` agree with the guest, the tracing walkers
//!   read what the guest's own tracing shows, and the tty and /proc/net walkers what
//!   `/proc/tty/{ldiscs,drivers}` and `/proc/net` list. The 7.x guests are then hooked
//!   as in step 7 (ftrace, kprobes, a tracepoint; modules built with sid's gcc-16 and
//!   trixie's gcc-14 in a Debian root the lab makes), found live, paused and from a dump.

mod common;
#[path = "lab_steps/ebpf.rs"]
mod ebpf;
#[path = "lab_steps/malfind.rs"]
mod malfind;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use vmi_core::kernel::pidns::PidLimits;
use vmi_core::kernel::{Hints, Kernel, ProfileSet};
use vmi_core::memory::{QemuLive, QemuOptions, VcpuRegisters};
use vmi_lab::python::{Venv, VOLATILITY};
use vmi_lab::{BootOptions, GroundTruth, Guest, Lab, Scenario, MATRIX};

/// Kernels attacked with every test module (their modules build with the host gcc).
const ATTACK_KERNELS: &[&str] = &["6.1.0-56-amd64", "6.12.117+deb12-amd64"];
/// Clean guests hooked through ftrace, kprobes and a tracepoint after their clean
/// checks: the 7.x builds, whose modules the lab builds with their suite's gcc.
const HOOKED_CLEAN_KERNELS: &[&str] = &["newest:7.2", "newest:7"];
/// The test modules of the tracing step ([`tracing_hooks`]).
const TRACING_MODULES: [&str; 3] = ["vmi_ftrace", "vmi_kprobe", "vmi_tracepoint"];

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

/// One expected finding (or, with `some`, one or more): its check and a predicate on
/// its evidence.
struct Want {
    what: String,
    check: &'static str,
    matches: Box<dyn Fn(&Value) -> bool>,
    some: bool,
}

fn want(what: &str, check: &'static str, matches: impl Fn(&Value) -> bool + 'static) -> Want {
    Want {
        what: what.to_string(),
        check,
        matches: Box::new(matches),
        some: false,
    }
}

/// One or more findings, as many as the kernel has places of one kind (e.g. the call
/// sites a static call is inlined at).
fn want_some(what: &str, check: &'static str, matches: impl Fn(&Value) -> bool + 'static) -> Want {
    Want {
        some: true,
        ..want(what, check, matches)
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
            [] => problems.push(format!("{label}: no finding for {}", w.what)),
            [i] => used[*i] = true,
            _ if w.some => hits.iter().for_each(|&i| used[i] = true),
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
    let truth = guest.truth().clone();
    with_paused_kernel(guest, profiles, |k| walkers_see(label, &truth, k))
}

/// Attach to the live guest, pause it and run `f` on its kernel; the QMP client is gone
/// (and the guest running) when this returns.
fn with_paused_kernel<R>(
    guest: &mut Guest,
    profiles: &Path,
    f: impl FnOnce(&Kernel<&QemuLive>) -> R,
) -> R {
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
    f(&k)
}

fn walkers_see(label: &str, truth: &GroundTruth, k: &Kernel<&QemuLive>) -> Vec<String> {
    let mut problems = Vec::new();
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

/// debugfs' `kprobes/list` lines as (address, kind, symbol+offset).
fn kprobe_list(lines: &[String]) -> BTreeSet<(u64, String, String)> {
    lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                u64::from_str_radix(f.first()?, 16).ok()?,
                f.get(1)?.to_string(),
                f.get(2)?.to_string(),
            ))
        })
        .collect()
}

/// `va` named as the kernel prints it (`symbol+0xoff`), from kallsyms in guest memory.
fn symbol_at(
    k: &Kernel<&QemuLive>,
    syms: &vmi_core::kernel::kallsyms::Kallsyms,
    va: vmi_core::Va,
) -> String {
    match syms.lookup(k.space(), va) {
        Ok(Some((n, off))) => format!("{}+{off:#x}", String::from_utf8_lossy(&n)),
        other => format!("{va} ({other:?})"),
    }
}

/// The kprobe_table walk as `kprobes/list` prints it.
fn kprobe_table(
    k: &Kernel<&QemuLive>,
    name: &dyn Fn(vmi_core::Va) -> String,
) -> BTreeSet<(u64, String, String)> {
    k.kprobes()
        .expect("kprobe_table walk")
        .iter()
        .map(|p| {
            let kind = match p.kind {
                vmi_core::kernel::kprobes::ProbeKind::Kretprobe { .. } => "r",
                _ => "k",
            };
            (p.addr.0, kind.to_string(), name(p.addr))
        })
        .collect()
}

/// The tracing walkers against the guest's own tracing: a kprobe and a kretprobe made
/// through `kprobe_events`, the function tracer filtered on one function and the
/// `sched_switch` event. What tracefs' `enabled_functions` and debugfs' `kprobes/list`
/// say must be what the ftrace_ops, kprobe_table and tracepoint walks read, with the
/// names the kernel prints (kallsyms read in guest memory); the kernel's own handlers
/// are kernel text, so the ftrace, kprobes and tracepoints checks report nothing. All
/// of it is undone afterwards.
fn tracing_walkers(label: &str, d: &Detector, guest: &mut Guest, profiles: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let out = guest
        .sh(
            "mkdir -p /sys/kernel/debug; mount -t debugfs nodev /sys/kernel/debug 2>/dev/null; \
             mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null; cd /sys/kernel/tracing && \
             echo 'p:vmi/probe vfs_read' >> kprobe_events && \
             echo 'r:vmi/retprobe vfs_write' >> kprobe_events && echo 1 > events/vmi/enable && \
             echo vfs_statfs > set_ftrace_filter && echo function > current_tracer && \
             echo 1 > events/sched/sched_switch/enable && \
             cat enabled_functions && echo == && cat /sys/kernel/debug/kprobes/list",
        )
        .expect("sh");
    let parts: Vec<&[String]> = out.lines.split(|l| l == "==").collect();
    let (0, [enabled, kprobes]) = (out.status, parts.as_slice()) else {
        return vec![format!("{label}: setting up tracing: {:?}", out.lines)];
    };
    let want_functions: BTreeSet<String> = enabled
        .iter()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let mut want_probes = kprobe_list(kprobes);

    let mut probes_differ = false;
    problems.extend(with_paused_kernel(guest, profiles, |k| {
        let mut problems = Vec::new();
        let syms = k.kallsyms().expect("kallsyms in guest memory");
        let name = |va| symbol_at(k, &syms, va);
        let mut got_functions = BTreeSet::new();
        for ops in k.ftrace_ops().expect("ftrace_ops walk") {
            if let vmi_core::kernel::ftrace::Filter::Functions(entries) = &ops.filter {
                for e in entries {
                    got_functions.insert(base_name(&name(e.ip)).to_string());
                }
            }
        }
        if got_functions != want_functions || got_functions.len() != 3 {
            problems.push(format!(
                "{label}: the ftrace_ops filter the functions {got_functions:?}, enabled_functions says {want_functions:?}"
            ));
        }
        let got_probes = kprobe_table(k, &name);
        if got_probes != want_probes || got_probes.len() != 2 {
            // the guest's list and the walk are read one after the other, the kretprobe
            // a moment after the kprobe: the list once showed only the kprobe while
            // kprobe_table held both. A difference is read again below before it counts
            probes_differ = true;
        }
        let tps = k.tracepoints().expect("tracepoints walk");
        if !tps
            .iter()
            .any(|t| t.name == b"sched_switch" && !t.probes.is_empty())
        {
            let names: Vec<String> = tps
                .iter()
                .map(|t| String::from_utf8_lossy(&t.name).into_owned())
                .collect();
            problems.push(format!(
                "{label}: no probe on sched_switch among the tracepoints with probes {names:?}"
            ));
        }
        problems
    }));
    if probes_differ {
        let mut tries = 1;
        loop {
            let got_probes = with_paused_kernel(guest, profiles, |k| {
                let syms = k.kallsyms().expect("kallsyms in guest memory");
                kprobe_table(k, &|va| symbol_at(k, &syms, va))
            });
            if got_probes == want_probes && got_probes.len() == 2 {
                break;
            }
            if tries == 3 {
                problems.push(format!(
                    "{label}: kprobe_table holds {got_probes:?}, kprobes/list says {want_probes:?}"
                ));
                break;
            }
            eprintln!("{label}: kprobe_table and kprobes/list differ (try {tries}); reading again");
            tries += 1;
            std::thread::sleep(std::time::Duration::from_millis(500));
            let out = guest.sh("cat /sys/kernel/debug/kprobes/list").expect("sh");
            want_probes = kprobe_list(&out.lines);
        }
    }
    let run = d.live(
        guest,
        &["--json", "check", "--check", "ftrace,kprobes,tracepoints"],
    );
    problems.extend(expect_exactly(
        &format!("{label} with the kernel's own tracing"),
        &run,
        &[],
    ));
    let out = guest
        .sh(
            "cd /sys/kernel/tracing && echo 0 > events/sched/sched_switch/enable && \
             echo nop > current_tracer && echo > set_ftrace_filter && \
             echo 0 > events/vmi/enable && echo > kprobe_events && cat enabled_functions",
        )
        .expect("sh");
    if out.status != 0 || !out.lines.is_empty() {
        problems.push(format!("{label}: undoing the tracing: {:?}", out.lines));
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
    let run_with = |guest: &mut Guest, text: &str| run_policy(d, guest, &file, text);
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

/// `check --check CHECK` (`policy` by default) on the live guest with `text` written
/// to the policy `file`.
fn run_policy(d: &Detector, guest: &mut Guest, file: &Path, text: &str) -> Run {
    run_check_with_policy(d, guest, file, text, "policy")
}

fn run_check_with_policy(
    d: &Detector,
    guest: &mut Guest,
    file: &Path,
    text: &str,
    check: &str,
) -> Run {
    std::fs::write(file, text).unwrap();
    d.live(
        guest,
        &[
            "--json",
            "--policy",
            file.to_str().unwrap(),
            "check",
            "--check",
            check,
        ],
    )
}

fn insmod(kernel: &str, guest: &mut Guest, line: &str) {
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
}

fn attack(lab: &Lab, kernel: &str) -> Vec<String> {
    let mods = [
        "vmi_hideproc",
        "vmi_hidemod",
        "vmi_hooksys",
        "vmi_hookidt",
        "vmi_creds",
        "vmi_inline",
        "vmi_ftrace",
        "vmi_kprobe",
        "vmi_tracepoint",
        "vmi_netfilter",
        "vmi_keylog",
        "vmi_tty",
        "vmi_perf",
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
    problems.extend(tracing_walkers(
        &format!("{kernel} clean"),
        &d,
        &mut guest,
        profiles.path(),
    ));
    problems.extend(hook_table_walkers(
        &format!("{kernel} clean"),
        &mut guest,
        profiles.path(),
    ));
    let run = d.live(&mut guest, &["--json", "check"]);
    problems.extend(expect_exactly(&format!("{kernel} clean"), &run, &[]));
    problems.extend(policy(kernel, &d, &mut guest, &truth, profiles.path()));

    let hideme = pid_of(&truth, "vmi-hideme");
    let victim = pid_of(&truth, "vmi-victim");
    let victim2 = pid_of(&truth, "vmi-victim2");
    let mut wants: Vec<Want> = Vec::new();
    let insmod = |guest: &mut Guest, line: &str| insmod(kernel, guest, line);

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

    // 7. kernel functions hooked through ftrace, kprobes and a tracepoint
    problems.extend(tracing_hooks(kernel, &d, &mut guest, &mut wants));
    // 8. a netfilter hook, a keyboard notifier, tty and /proc/net/tcp operations
    problems.extend(table_hooks(kernel, &d, &mut guest, &mut wants));
    // 8b. processes renamed (comm) and with rewritten arguments (argv[0])
    let spoofed = spoofed_processes(kernel, &d, &mut guest, &mut wants);
    problems.extend(spoofed.1);
    // 8c. sockets: nc listeners and a connected pair, listed as the guest lists them,
    // and a policy that does not allow two of the listeners
    problems.extend(start_sockets(kernel, &mut guest));
    problems.extend(sockets_match(kernel, &d, &mut guest));
    problems.extend(listen_policy(kernel, &d, &mut guest, profiles.path()));
    // 8d. injected code: anonymous RWX memory, and memory made r-x once written
    let injected = malfind::injected_code(kernel, &d, &mut guest, &mut wants);
    problems.extend(injected.1);
    // 8d. a kernel perf counter with a module's overflow handler; eBPF: a kprobe
    // program on a perf event, a raw tracepoint program, a socket filter
    let (bpf, bpf_problems) = ebpf::step(kernel, &d, &mut guest, &mut wants, profiles.path());
    problems.extend(bpf_problems);

    // the same from an ELF dump, and what Volatility 3 finds there
    let dump = tempfile::tempdir().expect("tempdir");
    let elf = dump.path().join("g.elf");
    guest.dump_elf(&elf).expect("ELF dump");
    let run = d.run(&["--dump", elf.to_str().unwrap()], &["--json", "check"]);
    problems.extend(expect_exactly(&format!("{kernel} ELF dump"), &run, &wants));
    let vol = Volatility::new(lab, kernel, &elf, &d);
    problems.extend(volatility_tracing(&vol, &run));
    problems.extend(ebpf::volatility(&vol, &d, &run, &bpf));
    problems.extend(volatility_tables(&vol, &run));
    problems.extend(volatility_spoofing(&vol, &run, spoofed.0));
    problems.extend(volatility_sockets(&vol, &d));
    problems.extend(malfind::volatility_malfind(&vol, &run, &injected.0));

    // 9. a busy process hidden from the tasks list and the pid namespace alike: only
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
        let mut scenario = Scenario::standard();
        if HOOKED_CLEAN_KERNELS.contains(kernel) {
            for m in TRACING_MODULES {
                scenario = scenario.file(
                    common::attack_module(&lab, kernel, m),
                    &format!("/lab/{m}.ko"),
                    0o644,
                );
            }
        }
        let mut guest = match lab.boot(kernel, &scenario, &BootOptions::default()) {
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
        problems.extend(tracing_walkers(&label, &d, &mut guest, profiles.path()));
        problems.extend(hook_table_walkers(&label, &mut guest, profiles.path()));
        problems.extend(start_sockets(&label, &mut guest));
        problems.extend(sockets_match(&label, &d, &mut guest));
        problems.extend(malfind::maps_match(&label, &d, &mut guest, &[]));
        let run = d.live(&mut guest, &["--json", "check"]);
        problems.extend(expect_exactly(&format!("{label} live"), &run, &[]));
        let dump = tempfile::tempdir().expect("tempdir");
        let elf = dump.path().join("g.elf");
        guest.dump_elf(&elf).expect("ELF dump");
        let run = d.run(&["--dump", elf.to_str().unwrap()], &["--json", "check"]);
        problems.extend(expect_exactly(&format!("{label} ELF"), &run, &[]));
        if HOOKED_CLEAN_KERNELS.contains(kernel) {
            // then hooked through ftrace, kprobes and a tracepoint (step 7 of the
            // attacks), found live, paused and from a dump
            let mut wants = Vec::new();
            problems.extend(tracing_hooks(&label, &d, &mut guest, &mut wants));
            guest.dump_elf(&elf).expect("ELF dump");
            let run = d.run(&["--dump", elf.to_str().unwrap()], &["--json", "check"]);
            problems.extend(expect_exactly(
                &format!("{label} hooked, ELF"),
                &run,
                &wants,
            ));
        }
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

/// The name in `function+0xoff`.
fn base_name(f: &str) -> &str {
    f.split('+').next().unwrap_or(f)
}

/// Step 7 of the attacks: `vmi_ftrace` (an ftrace_ops on kill(2) and getdents64(2),
/// then hidden from the modules list), `vmi_kprobe` (two kprobes on getpgid(2), which
/// the kernel aggregates, and a kretprobe on getppid(2); then hidden from the modules
/// list and /sys/module, so no module list names the owner) and `vmi_tracepoint` (a
/// probe on sys_enter, left listed). The guest's own views (tracefs'
/// `enabled_functions`, debugfs' `kprobes/list`, the hit counters) say the hooks are in
/// place and run; `check` must report each hook with the function hooked and the owner.
/// The kernel-text check sees the patch sites these hooks use too: the hooked
/// functions' ftrace sites now call ftrace trampolines (in the module area, owned by no
/// module), and the tracepoint's static call sites call the module's probe.
fn tracing_hooks(
    kernel: &str,
    d: &Detector,
    guest: &mut Guest,
    wants: &mut Vec<Want>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for m in TRACING_MODULES {
        insmod(kernel, guest, &format!("/lab/{m}.ko"));
    }
    let out = guest
        .sh("mkdir -p /sys/kernel/debug; mount -t debugfs nodev /sys/kernel/debug 2>/dev/null; \
             kill -0 1; ls / >/dev/null; \
             cat /sys/module/vmi_ftrace/parameters/hits /sys/module/vmi_tracepoint/parameters/hits; \
             echo ==; cat /sys/kernel/debug/tracing/enabled_functions; \
             echo ==; cat /sys/kernel/debug/kprobes/list")
        .expect("sh");
    let parts: Vec<&[String]> = out.lines.split(|l| l == "==").collect();
    let [hits, enabled, kprobes] = parts.as_slice() else {
        panic!("{kernel}: the guest's tracing views: {:?}", out.lines);
    };
    eprintln!(
        "{kernel}: the guest's view: hits {hits:?}\nenabled_functions:\n{}\nkprobes/list:\n{}",
        enabled.join("\n"),
        kprobes.join("\n")
    );
    if hits.len() != 2
        || hits
            .iter()
            .any(|h| h.trim().parse::<u64>().unwrap_or(0) == 0)
    {
        problems.push(format!(
            "{kernel}: the ftrace and tracepoint hooks did not run: hits {hits:?}"
        ));
    }
    let hidden = "module area, no known module (hidden)";
    wants.push(want("the hidden vmi_ftrace", "hidden-module", |e| {
        e["module"] == "vmi_ftrace"
    }));
    wants.push(want(
        "vmi_ftrace's ftrace_ops on kill and getdents64, owned by the hidden vmi_ftrace",
        "ftrace",
        |e| {
            let hooked = e["hooked"].as_str().unwrap_or("");
            e["owner"] == "hidden module vmi_ftrace"
                && e["hooked_count"] == 2
                && hooked.contains("__x64_sys_kill+")
                && hooked.contains("__x64_sys_getdents64+")
        },
    ));
    wants.push(want(
        "the kprobe on getpgid with pre and post handlers, under an aggregate",
        "kprobes",
        move |e| {
            e["kind"] == "kprobe"
                && base_name(e["function"].as_str().unwrap_or("")) == "__x64_sys_getpgid"
                && e["symbol_name"] == "__x64_sys_getpgid"
                && e["post_handler"].is_string()
                && e["aggregate"].is_string()
                && e["owner"] == hidden
        },
    ));
    wants.push(want(
        "the second kprobe on getpgid (pre handler only), under the same aggregate",
        "kprobes",
        move |e| {
            e["kind"] == "kprobe"
                && base_name(e["function"].as_str().unwrap_or("")) == "__x64_sys_getpgid"
                && e["post_handler"].is_null()
                && e["aggregate"].is_string()
                && e["owner"] == hidden
        },
    ));
    wants.push(want(
        "the kretprobe on getppid with return and entry handlers",
        "kprobes",
        move |e| {
            e["kind"] == "kretprobe"
                && e["symbol_name"] == "__x64_sys_getppid"
                && e["handler"].is_string()
                && e["entry_handler"].is_string()
                && e["owner"] == hidden
        },
    ));
    wants.push(want(
        "vmi_tracepoint's probe on sys_enter",
        "tracepoints",
        |e| e["tracepoint"] == "sys_enter" && e["owner"] == "module vmi_tracepoint",
    ));
    let trampoline = |e: &Value, callback: &str| {
        e["site"] == "ftrace site"
            && e["owner"].as_str().is_some_and(|o| {
                o.starts_with("the ftrace trampoline of ftrace_ops ")
                    && o.ends_with(&format!("(its callback in {callback})"))
            })
    };
    for f in ["__x64_sys_kill", "__x64_sys_getdents64"] {
        wants.push(want(
            &format!("the ftrace site of {f} calling vmi_ftrace's trampoline"),
            "kernel-text",
            move |e| e["symbol"] == f && trampoline(e, "hidden module vmi_ftrace"),
        ));
    }
    wants.push(want_some(
        "the ftrace sites of the probed functions calling the kprobes' trampolines",
        "kernel-text",
        move |e| trampoline(e, "kernel text"),
    ));
    wants.push(want_some(
        "the static call sites of sys_enter calling vmi_tracepoint's probe",
        "kernel-text",
        |e| e["site"] == "static call" && e["owner"] == "module vmi_tracepoint",
    ));
    let run = live_and_paused(
        &format!("{kernel} tracing hooks"),
        d,
        guest,
        wants,
        &mut problems,
    );

    // every function the guest says is hooked and every probe it lists is reported
    let got = findings(&run.json());
    let named = |check: &str, key: &str, f: &str| {
        got.iter().any(|(c, e)| {
            c == check
                && e[key]
                    .as_str()
                    .is_some_and(|h| h.split(", ").any(|n| base_name(n) == f))
        })
    };
    for line in enabled.iter() {
        let f = line.split_whitespace().next().unwrap_or("");
        if !named("ftrace", "hooked", f) && !named("kprobes", "function", f) {
            problems.push(format!(
                "{kernel}: the guest hooks {f} ({line}), no ftrace or kprobes finding names it"
            ));
        }
    }
    for line in kprobes.iter() {
        let f = line.split_whitespace().nth(2).unwrap_or("");
        let n = got
            .iter()
            .filter(|(c, e)| c == "kprobes" && e["function"] == f)
            .count();
        let want_n = kprobes
            .iter()
            .filter(|l| l.split_whitespace().nth(2) == Some(f))
            .count();
        if n != want_n {
            problems.push(format!(
                "{kernel}: the guest lists {want_n} probe(s) on {f}, the detector {n}"
            ));
        }
    }
    problems
}

/// Volatility 3's `linux.tracing.ftrace` and `linux.tracing.tracepoints` on the ELF dump
/// of the hooked guest : every hook
/// it reports must be a finding of the detector's. Volatility 2.28 has no kprobes
/// plugin. Its ftrace plugin lists the kprobes' own ftrace_ops too (callback
/// `kprobe_ftrace_handler`, in kernel text): those hooks must be kprobes findings.
///
/// Volatility sees less, and the test does not require it to see more: its ftrace
/// plugin reads only the first bucket of a filter hash (`buckets.first`), so of
/// vmi_ftrace's two functions (a hash of two buckets) it reports the one in bucket 0 on
/// 6.1 and none at all on 6.12, where both fall in bucket 1; it reports nothing for an
/// ops that hooks every function (an empty filter); and from 6.2 on (IBT) an ftrace
/// site is 4 bytes into its function, where it finds no symbol ("Hooked symbols" is
/// empty). Its Module column is empty for vmi_kprobe, which no module list holds.
fn volatility_tracing(v: &Volatility, run: &Run) -> Vec<String> {
    let mut problems = Vec::new();
    let kernel = v.kernel.as_str();
    let text = &v.text;
    let got = findings(&run.json());
    let vol = |plugin: &str| v.rows(plugin);
    let addr = vol_addr;
    let hex = vol_hex;
    // "Hooked symbols": the aliases at the hooked address, comma-separated
    let names_one_of = |hooked: &str, name: &str| hooked.split(',').any(|h| h == name);

    let rows = vol("linux.tracing.ftrace");
    if rows.is_empty() {
        problems.push(format!(
            "{kernel}: Volatility's ftrace plugin reported nothing"
        ));
    }
    for r in &rows {
        let ops = hex(&r["ftrace_ops address"]);
        let callback = addr(&r["Callback address"]).unwrap_or(0);
        let hooked = r["Hooked symbols"].as_str().unwrap_or("");
        let ok = if text.contains(&callback) {
            // a kprobe armed through ftrace: the kprobes check reports the probe, or
            // the ebpf check the program on a kprobe perf event
            r["Callback"] == "kprobe_ftrace_handler"
                && (hooked.is_empty()
                    || got.iter().any(|(c, e)| {
                        c == "kprobes"
                            && names_one_of(hooked, base_name(e["function"].as_str().unwrap_or("")))
                    })
                    || got.iter().any(|(c, e)| {
                        c == "ebpf"
                            && e["attach"].as_str().is_some_and(|a| {
                                hooked
                                    .split(',')
                                    .any(|h| a.contains(&format!("kprobe {h} ")))
                            })
                    }))
        } else {
            got.iter().any(|(c, e)| {
                c == "ftrace"
                    && e["ftrace_ops"] == ops.as_str()
                    && e["callback"] == hex(&r["Callback address"]).as_str()
                    && (hooked.is_empty()
                        || e["hooked"].as_str().is_some_and(|h| {
                            h.split(", ").any(|n| names_one_of(hooked, base_name(n)))
                        }))
            })
        };
        if !ok {
            problems.push(format!(
                "{kernel}: Volatility reports an ftrace hook the detector does not: {r}"
            ));
        }
    }
    let rows = vol("linux.tracing.tracepoints");
    for r in rows
        .iter()
        .filter(|r| addr(&r["Probe address"]).is_some_and(|a| !text.contains(&a)))
    {
        let ok = got.iter().any(|(c, e)| {
            c == "tracepoints"
                && e["tracepoint"] == r["tracepoint"]
                && e["probe"] == hex(&r["Probe address"]).as_str()
        });
        if !ok {
            problems.push(format!(
                "{kernel}: Volatility reports a tracepoint probe the detector does not: {r}"
            ));
        }
    }
    if !rows.iter().any(|r| r["tracepoint"] == "sys_enter") {
        problems.push(format!(
            "{kernel}: Volatility's tracepoints plugin does not see the sys_enter probe"
        ));
    }
    problems
}

/// Volatility 3 on an ELF dump of a lab guest: the venv, an ISF by profile-gen from the
/// kernel's -dbg package (`--full`), and the guest's kernel text (relocated, to tell the
/// kernel's own callbacks from hooks).
struct Volatility {
    kernel: String,
    venv: Venv,
    dir: tempfile::TempDir,
    elf: PathBuf,
    text: std::ops::Range<u64>,
}

impl Volatility {
    fn new(lab: &Lab, kernel: &str, elf: &Path, d: &Detector) -> Volatility {
        let venv = Venv::ensure(lab.cache(), &[VOLATILITY]).expect("volatility venv");
        let dir = tempfile::tempdir().expect("tempdir");
        let syms = dir.path().join("symbols/linux");
        std::fs::create_dir_all(&syms).unwrap();
        std::fs::create_dir_all(dir.path().join("cache")).unwrap();
        let dbg = lab.store().debug(kernel).expect("-dbg");
        let mut out = std::io::BufWriter::new(std::fs::File::create(syms.join("k.json")).unwrap());
        profile_gen::build::generate(
            profile_gen::build::Input::Files {
                vmlinux: &dbg.vmlinux,
                system_map: Some(&dbg.system_map),
            },
            &profile_gen::build::Options {
                full: true,
                ..Default::default()
            },
            profile_gen::build::Format::Isf,
            &mut out,
            &mut |_| {},
        )
        .expect("ISF");
        drop(out);
        let map = std::fs::read_to_string(&dbg.system_map).expect("System.map");
        let sym = |n: &str| {
            map.lines()
                .find_map(|l| {
                    let mut f = l.split_whitespace();
                    let a = f.next()?;
                    (f.nth(1)? == n).then(|| u64::from_str_radix(a, 16).ok())?
                })
                .unwrap_or_else(|| panic!("{n} in System.map"))
        };
        let id = d
            .run(&["--dump", elf.to_str().unwrap()], &["--json", "identify"])
            .json();
        let shift = id["kaslr"]["virtual_shift"]
            .as_str()
            .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
            .expect("virtual shift");
        Volatility {
            kernel: kernel.to_string(),
            venv,
            dir,
            elf: elf.to_path_buf(),
            text: sym("_stext") + shift..sym("_etext") + shift,
        }
    }

    /// The rows `plugin` reports as JSON (none when it fails: the failure is printed).
    fn rows(&self, plugin: &str) -> Vec<Value> {
        let t = std::time::Instant::now();
        let o = Command::new(self.venv.bin("vol"))
            .args(["-q", "-r", "json", "-s"])
            .arg(self.dir.path().join("symbols"))
            .arg("--cache-path")
            .arg(self.dir.path().join("cache"))
            .arg("-f")
            .arg(&self.elf)
            .arg(plugin)
            .output()
            .expect("vol");
        let stdout = String::from_utf8_lossy(&o.stdout);
        eprintln!(
            "{}: vol {plugin} ({:.1?}):\n{stdout}\n{}",
            self.kernel,
            t.elapsed(),
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_str::<Value>(&stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
}

/// A kernel address as Volatility prints it (without its sign extension, 48 bits).
fn vol_addr(v: &Value) -> Option<u64> {
    v.as_u64().map(|a| {
        if a >> 47 == 1 {
            a | 0xffff_0000_0000_0000
        } else {
            a
        }
    })
}

/// [`vol_addr`] as the detector's hex.
fn vol_hex(v: &Value) -> String {
    vol_addr(v).map(|a| format!("{a:#x}")).unwrap_or_default()
}

/// The walkers of the netfilter, notifiers, tty and afinfo checks against the guest's
/// own views: `/proc/tty/ldiscs` (every registered line discipline by name and
/// number), `/proc/tty/drivers` (every tty driver by driver name), `ls /proc/net` (the
/// socket-list files read); the namespace walk holds `init_net`, the kernel's own
/// notifier chains are read (netdev_chain and reboot_notifier_list have blocks of the
/// kernel's), and the kernel's tables are kernel text.
fn hook_table_walkers(label: &str, guest: &mut Guest, profiles: &Path) -> Vec<String> {
    let out = guest
        .sh("cat /proc/tty/ldiscs; echo ==; cat /proc/tty/drivers; echo ==; ls /proc/net")
        .expect("sh");
    let parts: Vec<&[String]> = out.lines.split(|l| l == "==").collect();
    let (0, [ldiscs, drivers, net]) = (out.status, parts.as_slice()) else {
        return vec![format!(
            "{label}: the guest's tty and net views: {:?}",
            out.lines
        )];
    };
    let want_ldiscs: BTreeSet<(String, u32)> = ldiscs
        .iter()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect();
    // the first lines name device nodes (/dev/tty, /dev/console, ...), not drivers; a
    // driver without a driver_name is "unknown"
    let want_drivers: BTreeSet<String> = drivers
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|d| !d.starts_with("/dev/"))
        .map(str::to_string)
        .collect();
    let want_files: BTreeSet<String> = net
        .iter()
        .flat_map(|l| l.split_whitespace())
        .filter(|f| vmi_core::kernel::procnet::ENTRIES.contains(f))
        .map(str::to_string)
        .collect();
    with_paused_kernel(guest, profiles, |k| {
        let mut problems = Vec::new();
        let text = k.text_range().expect("text");
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let got: BTreeSet<(String, u32)> = k
            .tty_ldiscs()
            .expect("tty_ldiscs")
            .iter()
            .map(|l| (lossy(&l.name), l.num))
            .collect();
        if got != want_ldiscs {
            problems.push(format!(
                "{label}: tty_ldiscs {got:?}, /proc/tty/ldiscs {want_ldiscs:?}"
            ));
        }
        let drivers = k.tty_drivers().expect("tty_drivers");
        let got: BTreeSet<String> = drivers
            .iter()
            .map(|d| match d.driver_name.as_slice() {
                b"" => "unknown".to_string(),
                n => lossy(n),
            })
            .collect();
        if got != want_drivers {
            problems.push(format!(
                "{label}: tty_drivers {got:?}, /proc/tty/drivers {want_drivers:?}"
            ));
        }
        if !drivers
            .iter()
            .any(|d| d.ttys.iter().any(|t| t.ldisc_ops.0 != 0))
        {
            problems.push(format!("{label}: no open tty with a line discipline"));
        }
        let nets = k.net_namespaces().expect("net_namespace_list");
        let init_net = k.symbol("init_net").expect("init_net");
        if !nets.contains(&init_net) {
            problems.push(format!("{label}: the namespaces {nets:?} lack init_net"));
        }
        k.netfilter_hooks(&nets).expect("netfilter hooks");
        let entries = k.proc_net_entries(&nets).expect("/proc/net entries");
        let got: BTreeSet<String> = entries
            .iter()
            .filter(|e| e.net == init_net && e.seq_ops.is_some())
            .map(|e| e.name.to_string())
            .collect();
        if got != want_files {
            problems.push(format!(
                "{label}: /proc/net entries read {got:?}, the guest lists {want_files:?}"
            ));
        }
        let tables = k.seq_ops_tables().expect("seq_operations");
        let all_text = |t: &vmi_core::kernel::objects::FnTable| {
            t.fns.len() >= 4 && t.fns.iter().all(|(_, v)| text.contains(*v))
        };
        if tables.len() < 6 || !tables.iter().all(|t| all_text(&t.ops)) {
            problems.push(format!("{label}: the seq_operations tables {tables:?}"));
        }
        let chains = k.notifier_chains().expect("notifier chains");
        for name in ["netdev_chain", "reboot_notifier_list"] {
            if !chains
                .iter()
                .any(|c| c.name == name && !c.blocks.is_empty())
            {
                problems.push(format!("{label}: {name} has no blocks"));
            }
        }
        if !chains.iter().any(|c| c.name == "keyboard_notifier_list") {
            problems.push(format!("{label}: no keyboard_notifier_list"));
        }
        problems
    })
}

/// Step 8 of the attacks: `vmi_netfilter` (a hook on IPv4 NF_INET_LOCAL_IN of
/// `init_net`, priority -150, left listed), `vmi_keylog` (a keyboard notifier, then
/// hidden from the modules list) and `vmi_tty` (N_TTY's `receive_buf2` and
/// `tcp4_seq_ops.show` replaced by wrappers of its own, left listed). The `show`
/// wrapper runs (`cat /proc/net/tcp` counts `hits`); `check` must report each hook
/// with its place and owner. `tcp4_seq_ops` is in `.rodata`, so the kernel-text check
/// sees the write too.
fn table_hooks(
    kernel: &str,
    d: &Detector,
    guest: &mut Guest,
    wants: &mut Vec<Want>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for m in ["vmi_netfilter", "vmi_keylog", "vmi_tty"] {
        insmod(kernel, guest, &format!("/lab/{m}.ko"));
    }
    let out = guest
        .sh("cat /proc/net/tcp >/dev/null; cat /sys/module/vmi_tty/parameters/hits")
        .expect("sh");
    let hits = out.lines.first().and_then(|h| h.trim().parse::<u64>().ok());
    if out.status != 0 || hits.unwrap_or(0) == 0 {
        problems.push(format!(
            "{kernel}: vmi_tty's wrappers did not run: {:?}",
            out.lines
        ));
    }
    wants.push(want(
        "vmi_netfilter's hook on ipv4 NF_INET_LOCAL_IN of init_net",
        "netfilter",
        |e| {
            e["namespace"] == "init_net"
                && e["family"] == "ipv4"
                && e["hook_point"] == "NF_INET_LOCAL_IN"
                && e["priority"] == "-150"
                && e["owner"] == "module vmi_netfilter"
        },
    ));
    wants.push(want("the hidden vmi_keylog", "hidden-module", |e| {
        e["module"] == "vmi_keylog"
    }));
    wants.push(want(
        "vmi_keylog's keyboard notifier, owned by the hidden vmi_keylog",
        "notifiers",
        |e| e["chain"] == "keyboard_notifier_list" && e["owner"] == "hidden module vmi_keylog",
    ));
    wants.push(want("N_TTY's receive_buf2 in vmi_tty", "tty", |e| {
        e["kind"] == "ldisc"
            && e["ldisc"] == 0
            && e["name"] == "n_tty"
            && e["members"] == "receive_buf2"
            && e["owner"] == "module vmi_tty"
    }));
    wants.push(want("tcp4_seq_ops.show in vmi_tty", "afinfo", |e| {
        e["symbol"] == "tcp4_seq_ops"
            && e["members"] == "show"
            && e["files"] == "/proc/net/tcp"
            && e["owner"] == "module vmi_tty"
    }));
    wants.push(want(
        "tcp4_seq_ops differing from the image",
        "kernel-text",
        |e| e["symbol"] == "tcp4_seq_ops",
    ));
    live_and_paused(
        &format!("{kernel} table hooks"),
        d,
        guest,
        wants,
        &mut problems,
    );
    problems
}

/// Step 8b of the attacks: two copies of the lab worker under /tmp, one renamed with
/// `prctl(PR_SET_NAME, "kworker/0:1")`, one whose argument area now reads
/// `[kworker/1:0]`; the guest's own `/proc` must show the new names, and `check` must
/// report each (high: both pass for kernel threads) with its executable. Returns the
/// two pids.
fn spoofed_processes(
    kernel: &str,
    d: &Detector,
    guest: &mut Guest,
    wants: &mut Vec<Want>,
) -> ((u32, u32), Vec<String>) {
    let mut problems = Vec::new();
    let mut start = |line: &str| -> u32 {
        let out = guest.sh(line).expect("sh");
        out.lines
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("{kernel}: {line}: {:?}", out.lines))
    };
    let renamed = start(
        "cp /bin/lab-sleeper /tmp/spoof && /tmp/spoof spoof-comm kworker/0:1 </dev/null >/dev/null 2>&1 & echo $!",
    );
    let rewritten = start(
        "cp /bin/lab-sleeper /tmp/sysupd && /tmp/sysupd spoof-argv '[kworker/1:0]' </dev/null >/dev/null 2>&1 & echo $!",
    );
    std::thread::sleep(Duration::from_millis(500));
    let t = guest.refresh_truth().expect("truth");
    match (t.process(renamed), t.process(rewritten)) {
        (Some(a), Some(b))
            if a.comm == "kworker/0:1"
                && a.exe == "/tmp/spoof"
                && b.comm == "sysupd"
                && b.cmdline.starts_with(b"[kworker/1:0]\0") => {}
        (a, b) => problems.push(format!(
            "{kernel}: the guest does not show the spoofed processes as intended: {a:?} {b:?}"
        )),
    }
    let spoofs = [
        (renamed, "comm", "kworker/0:1", "/tmp/spoof", "/tmp/spoof"),
        (rewritten, "argv0", "sysupd", "/tmp/sysupd", "[kworker/1:0]"),
    ];
    for (pid, rule, comm, exe, argv0) in spoofs {
        wants.push(want(
            &format!("process {pid} spoofed ({rule}: {comm}, {argv0})"),
            "spoofing",
            move |e| {
                e["pid"] == pid
                    && e["rule"] == rule
                    && e["comm"] == comm
                    && e["exe"] == exe
                    && e["argv0"] == argv0
            },
        ));
    }
    let run = live_and_paused(
        &format!("{kernel} spoofing"),
        d,
        guest,
        wants,
        &mut problems,
    );
    let v = run.json();
    for f in v["findings"].as_array().into_iter().flatten() {
        if f["check"] == "spoofing" && f["severity"] != "high" {
            problems.push(format!("{kernel}: spoofing finding not high: {f}"));
        }
    }
    ((renamed, rewritten), problems)
}

/// Internet sockets in the guest: busybox `nc` listening on TCP 4444 (IPv6, dual
/// stack), the lab worker bound to UDP 5555 (IPv4; busybox's nc has no UDP), and a
/// connected TCP pair (an IPv4 client to an nc listening on 4445, which nc closes once
/// it accepts), the loopback brought up first.
fn start_sockets(label: &str, guest: &mut Guest) -> Vec<String> {
    let out = guest.sh("ip link set lo up; \
         sleep 100000 2>/dev/null | nc -l -p 4444 >/dev/null 2>&1 & \
         /bin/lab-sleeper udp 5555 </dev/null >/dev/null 2>&1 & \
         sleep 100000 2>/dev/null | nc -l -p 4445 >/dev/null 2>&1 & sleep 1; \
         sleep 100000 2>/dev/null | nc 127.0.0.1 4445 >/dev/null 2>&1 & sleep 1; echo started");
    match out {
        Ok(o) if o.lines.last().map(String::as_str) == Some("started") => Vec::new(),
        o => vec![format!("{label}: starting the sockets: {o:?}")],
    }
}

/// One socket as "proto local remote state inode pid", from the guest's /proc/net.
type SocketRow = String;

/// The guest's own view: every socket of `/proc/net/{tcp,tcp6,udp,udp6}` with an inode,
/// once per process holding it (`/proc/PID/fd` links `socket:[INODE]`).
fn guest_sockets(label: &str, guest: &mut Guest) -> Result<BTreeSet<SocketRow>, String> {
    let out = guest
        .sh(
            "for f in tcp tcp6 udp udp6; do sed 1d /proc/net/$f | sed \"s/^/$f /\"; done; \
             for l in /proc/[0-9]*/fd/*; do t=$(readlink $l 2>/dev/null); \
             case $t in socket:*) echo \"fd $l $t\";; esac; done",
        )
        .map_err(|e| format!("{label}: reading /proc/net: {e}"))?;
    let mut pids: std::collections::BTreeMap<u64, BTreeSet<u32>> = Default::default();
    let mut rows = Vec::new();
    for line in &out.lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"fd") && f.len() == 3 {
            let pid = f[1].split('/').nth(2).and_then(|p| p.parse().ok());
            let ino = f[2]
                .trim_start_matches("socket:[")
                .trim_end_matches(']')
                .parse()
                .ok();
            if let (Some(pid), Some(ino)) = (pid, ino) {
                pids.entry(ino).or_default().insert(pid);
            }
        } else if f.len() > 10 {
            rows.push((f[0], f[2], f[3], f[4], f[10]));
        }
    }
    let addr = |a: &str| -> Option<String> {
        let (ip, port) = a.split_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        let words: Vec<[u8; 4]> = (0..ip.len() / 8)
            .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).map(u32::to_le_bytes))
            .collect::<Result<_, _>>()
            .ok()?;
        Some(match words.len() {
            1 => format!("{}:{port}", std::net::Ipv4Addr::from(words[0])),
            4 => {
                let b: Vec<u8> = words.concat();
                let b: [u8; 16] = b.try_into().ok()?;
                format!("[{}]:{port}", std::net::Ipv6Addr::from(b))
            }
            _ => return None,
        })
    };
    let mut set = BTreeSet::new();
    for (file, local, remote, st, ino) in rows {
        let ino: u64 = ino.parse().map_err(|_| format!("{label}: inode {ino}"))?;
        if ino == 0 {
            continue;
        }
        let (Some(l), Some(r), Ok(st)) = (addr(local), addr(remote), u8::from_str_radix(st, 16))
        else {
            return Err(format!(
                "{label}: /proc/net/{file} line {local} {remote} {st}"
            ));
        };
        for pid in pids.get(&ino).into_iter().flatten() {
            set.insert(format!("{file} {l} {r} {st} {ino} {pid}"));
        }
    }
    Ok(set)
}

/// The detector's `sockets --json` in the same form as [`guest_sockets`].
fn detector_sockets(run: &Run) -> BTreeSet<SocketRow> {
    let mut set = BTreeSet::new();
    for s in run.json().as_array().into_iter().flatten() {
        let v6 = s["family"] == "ipv6";
        let ep = |a: &Value, p: &Value| {
            if v6 {
                format!("[{}]:{}", a.as_str().unwrap_or(""), p)
            } else {
                format!("{}:{}", a.as_str().unwrap_or(""), p)
            }
        };
        set.insert(format!(
            "{}{} {} {} {} {} {}",
            s["protocol"].as_str().unwrap_or(""),
            if v6 { "6" } else { "" },
            ep(&s["local_address"], &s["local_port"]),
            ep(&s["remote_address"], &s["remote_port"]),
            s["state_code"],
            s["inode"],
            s["pid"]
        ));
    }
    set
}

/// `sockets` lists exactly the guest's /proc/net sockets with their processes, and
/// has the nc listeners and the connected pair (they stay as they are between the
/// guest's read and the detector's).
fn sockets_match(label: &str, d: &Detector, guest: &mut Guest) -> Vec<String> {
    let mut problems = Vec::new();
    let want = match guest_sockets(label, guest) {
        Ok(w) => w,
        Err(e) => return vec![e],
    };
    let run = d.live(guest, &["--json", "sockets"]);
    if run.code != 0 {
        return vec![format!(
            "{label}: sockets: exit {}: {}",
            run.code, run.stderr
        )];
    }
    let got = detector_sockets(&run);
    for w in want.difference(&got) {
        problems.push(format!(
            "{label}: the guest has socket {w}, the detector not"
        ));
    }
    for g in got.difference(&want) {
        problems.push(format!(
            "{label}: the detector lists socket {g}, the guest not"
        ));
    }
    let listens = |p: &str, port: &str| want.iter().any(|w| w.contains(p) && w.contains(port));
    if !(listens("tcp", ":4444 ") && listens("udp", ":5555 ") && listens(" 1 ", ":4445 ")) {
        problems.push(format!(
            "{label}: the nc sockets are not all there: {want:#?}"
        ));
    }
    eprintln!("{label}: {} sockets, as the guest lists them", want.len());
    problems
}

/// `allow_listen` in a policy: the listeners on 4444 (tcp) and 5555 (udp) are the
/// findings of a policy that allows only tcp:4445 and tcp:22; allowing `*:*` finds
/// nothing.
fn listen_policy(label: &str, d: &Detector, guest: &mut Guest, dir: &Path) -> Vec<String> {
    let file = dir.join("listen.toml");
    let mut problems = Vec::new();
    for (text, wants) in [
        (
            "allow_listen = [\"tcp:22\", \"tcp:4445\"]\n",
            vec![
                want("nc listening on tcp 4444", "policy", |e| {
                    e["rule"] == "allow_listen" && e["protocol"] == "tcp" && e["port"] == 4444
                }),
                want("nc bound to udp 5555", "policy", |e| {
                    e["rule"] == "allow_listen" && e["protocol"] == "udp" && e["port"] == 5555
                }),
            ],
        ),
        ("allow_listen = [\"*:*\"]\n", vec![]),
    ] {
        let run = run_policy(d, guest, &file, text);
        problems.extend(expect_exactly(
            &format!("{label} {}", text.trim()),
            &run,
            &wants,
        ));
    }
    problems
}

/// Volatility 3's `linux.sockstat` on the ELF dump: every TCP and UDP socket of the
/// IPv4 and IPv6 families it lists (by pid, fd and local port) is in the detector's
/// `sockets` on the same dump.
fn volatility_sockets(v: &Volatility, d: &Detector) -> Vec<String> {
    let kernel = v.kernel.as_str();
    let run = d.run(&["--dump", v.elf.to_str().unwrap()], &["--json", "sockets"]);
    let ours = run.json();
    let ours = ours.as_array().cloned().unwrap_or_default();
    let mut problems = Vec::new();
    let rows = v.rows("linux.sockstat");
    // a string in Volatility's JSON
    let port = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .or_else(|| v.as_u64().map(|n| n.to_string()))
    };
    let mut seen = 0;
    for r in rows.iter().filter(|r| {
        matches!(r["Family"].as_str(), Some("AF_INET" | "AF_INET6"))
            && matches!(r["Proto"].as_str(), Some("TCP" | "UDP"))
    }) {
        seen += 1;
        let ok = ours.iter().any(|s| {
            s["pid"] == r["PID"]
                && s["fd"] == r["FD"]
                && Some(s["local_port"].to_string().as_str()) == port(&r["Source Port"]).as_deref()
                && s["protocol"].as_str().map(str::to_uppercase).as_deref() == r["Proto"].as_str()
        });
        if !ok {
            problems.push(format!(
                "{kernel}: Volatility's sockstat lists a socket the detector does not: {r}"
            ));
        }
    }
    if seen == 0 {
        problems.push(format!(
            "{kernel}: Volatility's sockstat lists no TCP or UDP socket"
        ));
    }
    problems
}

/// Volatility 3's `linux.malware.process_spoofing` on the ELF dump: it must flag the
/// two spoofed processes as the detector does (comm, cmdline), and every spoofing
/// finding of the detector's must be a process it flags. It flags more: it compares
/// `comm` and `argv[0]` with the executable's basename only, so every busybox applet
/// (`sh` running as `/bin/busybox`) is "spoofed" there; those rows are printed, not
/// required.
fn volatility_spoofing(v: &Volatility, run: &Run, (renamed, rewritten): (u32, u32)) -> Vec<String> {
    let mut problems = Vec::new();
    let kernel = v.kernel.as_str();
    let rows = v.rows("linux.malware.process_spoofing");
    let flagged = |pid: u32, col: &str| {
        rows.iter()
            .any(|r| r["PID"] == pid && r[col] == Value::Bool(true))
    };
    if !flagged(renamed, "Comm_Spoofed") || !flagged(rewritten, "Cmdline_Spoofed") {
        problems.push(format!(
            "{kernel}: Volatility's process_spoofing does not flag {renamed} (comm) and {rewritten} (cmdline)"
        ));
    }
    for (c, e) in findings(&run.json()) {
        if c != "spoofing" {
            continue;
        }
        let pid = e["pid"].as_u64().unwrap_or(0) as u32;
        let col = if e["rule"] == "comm" {
            "Comm_Spoofed"
        } else {
            "Cmdline_Spoofed"
        };
        if !flagged(pid, col) {
            problems.push(format!(
                "{kernel}: the detector reports spoofing Volatility does not: {e}"
            ));
        }
    }
    let extra = rows
        .iter()
        .filter(|r| {
            (r["Comm_Spoofed"] == Value::Bool(true) || r["Cmdline_Spoofed"] == Value::Bool(true))
                && r["PID"] != renamed
                && r["PID"] != rewritten
        })
        .count();
    eprintln!("{kernel}: Volatility's process_spoofing flags {extra} more processes (busybox applets, scripts)");
    problems
}

/// `check` on the live guest, running (printed) and paused, must report exactly
/// `wants`; the paused run is returned.
fn live_and_paused(
    label: &str,
    d: &Detector,
    guest: &mut Guest,
    wants: &[Want],
    problems: &mut Vec<String>,
) -> Run {
    let run = d.live(guest, &["--json", "check"]);
    eprintln!("{label}: check:\n{}", run.stdout);
    problems.extend(expect_exactly(&format!("{label} (live)"), &run, wants));
    let run = d.live(guest, &["--json", "check", "--pause"]);
    problems.extend(expect_exactly(&format!("{label} (paused)"), &run, wants));
    run
}

/// Volatility 3's `linux.malware.netfilter`, `linux.malware.keyboard_notifiers`,
/// `linux.malware.tty_check` and `linux.malware.check_afinfo` on the ELF dump of the
/// hooked guest: every hook they report outside kernel text must be a finding of the
/// detector's (netfilter: same namespace, family, hook point and handler; keyboard
/// notifiers: same callback; tty: a tty finding with that receive_buf; afinfo: the
/// same table member and handler).
///
/// keyboard_notifiers prints the address of each `notifier_block` (where its
/// `notifier_call` member is, at offset 0), not the callback, so a row is matched by
/// the finding's `notifier_block` or `callback`.
///
/// What Volatility misses here (the test does not require it to see it): tty_check
/// reads only `receive_buf`, which N_TTY does not use (input goes through
/// `receive_buf2` when a discipline has it), so it reports vmi_tty's hook on no tty;
/// it reads no driver's `tty_operations`. keyboard_notifiers is the only notifier
/// chain it reads. check_afinfo reads the tables by symbol only (not the /proc/net
/// entries, which a rootkit can point elsewhere).
fn volatility_tables(v: &Volatility, run: &Run) -> Vec<String> {
    let mut problems = Vec::new();
    let kernel = v.kernel.as_str();
    let got = findings(&run.json());
    let outside = |a: Option<u64>| a.is_some_and(|a| !v.text.contains(&a));
    let has = |check: &str, f: &dyn Fn(&Value) -> bool| got.iter().any(|(c, e)| c == check && f(e));

    let rows = v.rows("linux.malware.netfilter");
    for r in rows.iter().filter(|r| outside(vol_addr(&r["Handler"]))) {
        let ok = has("netfilter", &|e| {
            e["hook"] == vol_hex(&r["Handler"]).as_str()
                && r["Proto"]
                    .as_str()
                    .is_some_and(|p| p.eq_ignore_ascii_case(e["family"].as_str().unwrap_or("")))
                && r["Hook"].as_str().is_some_and(|h| {
                    e["hook_point"]
                        .as_str()
                        .is_some_and(|p| p.ends_with(&format!("_{h}")))
                })
        });
        if !ok {
            problems.push(format!(
                "{kernel}: Volatility reports a netfilter hook the detector does not: {r}"
            ));
        }
    }
    if !rows.iter().any(|r| outside(vol_addr(&r["Handler"]))) {
        eprintln!("{kernel}: Volatility's netfilter plugin reports no hook outside kernel text");
    }
    let rows = v.rows("linux.malware.keyboard_notifiers");
    for r in rows.iter().filter(|r| outside(vol_addr(&r["Address"]))) {
        let a = vol_hex(&r["Address"]);
        let ok = has("notifiers", &|e| {
            e["chain"] == "keyboard_notifier_list"
                && (e["callback"] == a.as_str() || e["notifier_block"] == a.as_str())
        });
        if !ok {
            problems.push(format!(
                "{kernel}: Volatility reports a keyboard notifier the detector does not: {r}"
            ));
        }
    }
    let rows = v.rows("linux.malware.tty_check");
    for r in rows.iter().filter(|r| outside(vol_addr(&r["Address"]))) {
        let ok = has("tty", &|e| {
            e["member"] == "receive_buf" && e["target"] == vol_hex(&r["Address"]).as_str()
                || e["targets"]
                    .as_str()
                    .is_some_and(|t| t.contains(&format!("receive_buf={}", vol_hex(&r["Address"]))))
        });
        if !ok {
            problems.push(format!(
                "{kernel}: Volatility reports a tty hook the detector does not: {r}"
            ));
        }
    }
    let rows = v.rows("linux.malware.check_afinfo");
    for r in &rows {
        let member = r["Member"].as_str().unwrap_or("");
        let target = vol_hex(&r["Handler Address"]);
        let ok = has("afinfo", &|e| {
            e["symbol"] == r["Symbol Name"]
                && (e["member"] == member && e["target"] == target.as_str()
                    || e["targets"]
                        .as_str()
                        .is_some_and(|t| t.contains(&format!("{member}={target}"))))
        });
        if !ok {
            problems.push(format!(
                "{kernel}: Volatility reports an afinfo hook the detector does not: {r}"
            ));
        }
    }
    problems
}
