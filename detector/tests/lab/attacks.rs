//! The attack scenario: a guest with the test rootkits (`tests/mods/*.c`) loaded one
//! after the other; after each, `check` must report exactly the findings of the
//! attacks so far. Steps 1-6 and 9 (lists, a task's mark, tables, a page made
//! writable, credentials, inline hooks, the runqueue-only process) are here; the others
//! are in their checks' files.

use super::*;

/// Kernels attacked with every test module (their modules build with the host gcc).
pub(crate) const ATTACK_KERNELS: &[&str] = &["6.1.0-56-amd64", "6.12.117+deb12-amd64"];

pub(crate) fn attack(lab: &Lab, kernel: &str) -> Vec<String> {
    let mods = [
        "vmi_hideproc",
        "vmi_markproc",
        "vmi_pagerw",
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
        "vmi_fop",
        "vmi_perf",
        "vmi_ghost",
        "vmi_cpu",
        "vmi_kthread",
    ];
    let mut scenario = Scenario::standard()
        .ksym("worker_thread")
        .sleeper("vmi-hideme")
        .sleeper("vmi-marked")
        .run_as("vmi-victim", 1000)
        .run_as("vmi-victim2", 1000);
    for m in mods {
        scenario = scenario.file(
            common::attack_module(lab, kernel, m),
            &format!("/lab/{m}.ko"),
            0o644,
        );
    }
    let (profiles, d) = detector_for(lab, kernel);
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
    problems.extend(clean::hold_debugfs_file(
        &format!("{kernel} clean"),
        &mut guest,
    ));
    let run = d.live(&mut guest, &["--json", "check"]);
    problems.extend(expect_exactly(&format!("{kernel} clean"), &run, &[]));
    problems.extend(clean::release_debugfs_file(
        &format!("{kernel} clean"),
        &mut guest,
    ));
    problems.extend(policy(kernel, &d, &mut guest, &truth, profiles.path()));
    // watch at 10 Hz from here to the dump: it must raise what each check finds
    let watching = watching::Watching::start(&d, &guest);

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
    // ps lists it from the pid namespace, marked so, and says so
    let ps = d.live(&mut guest, &["--json", "ps"]);
    let views = ps_views(&ps, u64::from(hideme));
    if views != Some(serde_json::json!(["pid-namespace"])) {
        problems.push(format!(
            "{kernel}: ps shows {hideme} with views {views:?}: the attack did not happen, or ps lost it"
        ));
    }
    if ps.code != 1 || !ps.stderr.contains(&format!("{hideme} (vmi-hideme)")) {
        problems.push(format!(
            "{kernel}: ps with {hideme} hidden: exit {}: {}",
            ps.code, ps.stderr
        ));
    }
    let t = guest.refresh_truth().expect("truth");
    if t.process(hideme).is_none() {
        problems.push(format!("{kernel}: /proc lost {hideme} too"));
    }

    // 1b. a process marked as Diamorphine marks the processes it hides
    let marked = pid_of(&truth, "vmi-marked");
    insmod(&mut guest, &format!("/lab/vmi_markproc.ko pid={marked}"));
    wants.push(want("the mark on vmi-marked", "hidden-process", move |e| {
        e["pid"] == marked && e["comm"] == "vmi-marked" && e["bits"] == "0x10000000"
    }));
    let run = d.live(&mut guest, &["--json", "check"]);
    problems.extend(expect_exactly(&format!("{kernel} markproc"), &run, &wants));

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

    // 3b. the page of sys_call_table made writable in the kernel's page table
    insmod(&mut guest, "/lab/vmi_pagerw.ko");
    wants.push(want(
        "read-only data mapped writable by vmi_pagerw",
        "kernel-pages",
        |e| e["kind"] == "writable" && e["section"] == "kernel read-only data",
    ));
    let run = d.live(&mut guest, &["--json", "check"]);
    problems.extend(expect_exactly(&format!("{kernel} pagerw"), &run, &wants));

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
    // the hook is the function's first instruction: found without the image too
    wants.push(want(
        "__x64_sys_sysfs's entry branching into vmi_inline",
        "kernel-entries",
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
    // 8a. /proc's root inode on a module's copy of its file operations (adore-ng)
    problems.extend(vfs_hooks(kernel, &d, &mut guest, &mut wants));
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
    // 8e. CPU protections switched off behind the kernel's back: CR0.WP and CR4.SMEP
    // cleared on every vCPU, SMEP's pinning first (QEMU's monitor and its ELF notes
    // give CR0 and CR4)
    insmod(&mut guest, "/lab/vmi_cpu.ko");
    wants.push(want_some("CR0.WP clear on each vCPU", "cpu-state", |e| {
        e["cr0"].is_string() && e["vcpu"].is_number()
    }));
    wants.push(want_some("SMEP cleared on each vCPU", "cpu-state", |e| {
        e["cleared"] == "SMEP" && e["features"].is_string()
    }));
    wants.push(want(
        "SMEP taken out of cr4_pinned_bits",
        "cpu-state",
        |e| e["unpinned"] == "SMEP",
    ));
    live_and_paused(
        &format!("{kernel} cpu"),
        &d,
        &mut guest,
        &wants,
        &mut problems,
    );
    // 8f. a kernel thread whose module then hid itself from the modules list: the
    // thread stays, running the hidden module's function
    insmod(&mut guest, "/lab/vmi_kthread.ko");
    let t = guest.refresh_truth().expect("truth");
    let kworker = pid_of(&t, "vmi_kworker");
    wants.push(want(
        "vmi_kworker runs a function of the hidden vmi_kthread",
        "kthreads",
        move |e| {
            e["pid"] == kworker
                && e["name"] == "vmi_kworker"
                && e["owner"] == "hidden module vmi_kthread"
        },
    ));
    wants.push(want("the hidden vmi_kthread", "hidden-module", |e| {
        e["module"] == "vmi_kthread"
    }));
    live_and_paused(
        &format!("{kernel} kthread"),
        &d,
        &mut guest,
        &wants,
        &mut problems,
    );

    // 8g. user-space implants: a memfd stage, a deleted dropper in /dev/shm,
    // libraries from /tmp, /dev/shm and a memfd
    let fileless = fileless::implants(kernel, &d, &mut guest, &mut wants);
    problems.extend(fileless.1);

    // the same from an ELF dump, and what Volatility 3 finds there
    let dump = tempfile::tempdir().expect("tempdir");
    let elf = dump.path().join("g.elf");
    guest.dump_elf(&elf).expect("ELF dump");
    let run = d.run(&["--dump", elf.to_str().unwrap()], &["--json", "check"]);
    problems.extend(expect_exactly(&format!("{kernel} ELF dump"), &run, &wants));
    problems.extend(watching.finish(kernel, &run));
    let vol = Volatility::new(lab, kernel, &elf, &d);
    problems.extend(volatility_tracing(&vol, &run));
    problems.extend(ebpf::volatility(&vol, &d, &run, &bpf));
    problems.extend(volatility_tables(&vol, &run));
    problems.extend(volatility_spoofing(&vol, &run, spoofed.0));
    problems.extend(volatility_sockets(&vol, &d));
    problems.extend(malfind::volatility_malfind(&vol, &run, &injected.0));
    problems.extend(volatility_kthreads(&vol, &run));
    problems.extend(fileless::volatility_maps(&vol, &d, &elf, &fileless.0));

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

/// Volatility 3's `linux.kthreads` lists every kernel thread's function and the module
/// it finds it in (its gatherers see hidden modules too): each of the detector's
/// `kthreads` findings must be a row of the same thread and function, and every row
/// whose function is outside kernel text in no module, or in the hidden
/// `vmi_kthread`, a finding.
fn volatility_kthreads(v: &Volatility, run: &Run) -> Vec<String> {
    let kernel = v.kernel.as_str();
    let got = findings(&run.json());
    let ours: Vec<&Value> = got
        .iter()
        .filter(|(c, _)| c == "kthreads")
        .map(|(_, e)| e)
        .collect();
    let rows = v.rows("linux.kthreads");
    let mut problems = Vec::new();
    if rows.is_empty() {
        problems.push(format!(
            "{kernel}: Volatility's linux.kthreads lists no thread"
        ));
    }
    for e in &ours {
        let same = rows.iter().any(|r| {
            r["TID"] == e["pid"] && e["threadfn"] == vol_hex(&r["Handler Address"]).as_str()
        });
        if !same {
            problems.push(format!(
                "{kernel}: the detector reports a kernel thread Volatility does not list with that function: {e}"
            ));
        }
    }
    let hidden = |r: &Value| match r["Module"].as_str() {
        Some(m) => m == "vmi_kthread" || m == "N/A",
        None => true,
    };
    for r in rows.iter().filter(|r| {
        vol_addr(&r["Handler Address"]).is_some_and(|a| !v.text.contains(&a)) && hidden(r)
    }) {
        if !ours.iter().any(|e| e["pid"] == r["TID"]) {
            problems.push(format!(
                "{kernel}: Volatility lists a kernel thread outside kernel text the detector does not report: {r}"
            ));
        }
    }
    problems
}
