//! The views against the guest: `identify`, `ps` and `lsmod` as the guest sees itself,
//! and the walkers the hidden-process, hidden-module, syscall-table and idt checks
//! compare (pid namespace, module kset, syscall tables, IDT, runqueues).

use super::*;

/// `ps --json` and `lsmod --json` equal the guest's view ([`vmi_lab::views`]);
/// `identify` the release and the KASLR shift.
pub(crate) fn views_match(
    label: &str,
    d: &Detector,
    source: &[&str],
    truth: &GroundTruth,
) -> Vec<String> {
    let mut problems = Vec::new();
    let id = d.run(source, &["--json", "identify"]);
    problems.extend(common::identify_matches(label, &id.json(), truth));
    let ps = d.run(source, &["--json", "ps"]).json();
    let lsmod = d.run(source, &["--json", "lsmod"]).json();
    let differences = vmi_lab::views::ps_differences(&ps, truth)
        .into_iter()
        .chain(vmi_lab::views::exe_differences(&ps, truth))
        .chain(vmi_lab::views::lsmod_differences(&lsmod, truth));
    problems.extend(differences.map(|d| format!("{label}: {d}")));
    problems
}

/// The views the checks compare are really read: the pid namespace names every thread
/// the guest has, the module kset holds every listed module, the x64 syscall table has
/// NR_syscalls entries in kernel text, the IDT has present gates.
pub(crate) fn walkers_see_the_guest(
    label: &str,
    guest: &mut Guest,
    profiles: &Path,
) -> Vec<String> {
    let truth = guest.truth().clone();
    with_paused_kernel(guest, profiles, |k| walkers_see(label, &truth, k))
}

/// The kthread reader on a clean guest: nearly every kernel thread has a `struct
/// kthread` (through `worker_private` from 5.17, `set_child_tid` before), every
/// function is kernel text, and each `kworker/*` (not the rescuers, `kworker/R-*`)
/// runs `worker_thread` by the guest's own kallsyms.
fn kthreads_seen(label: &str, truth: &GroundTruth, k: &Kernel<&QemuLive>) -> Vec<String> {
    use vmi_core::kernel::kthread::KthreadLayout;
    let mut problems = Vec::new();
    let l = KthreadLayout::from_profile(k.profile()).expect("kthread layout");
    let text = k.text_range().expect("text");
    let procs = k.processes(&Default::default()).expect("tasks list");
    let worker_thread = truth.ksym("worker_thread");
    let wt = worker_thread.map_or("absent".to_string(), |w| format!("{w:#x}"));
    let (mut kthreads, mut with_fn, mut kworkers) = (0, 0, 0);
    for p in procs.iter().filter(|p| p.is_kernel_thread()) {
        kthreads += 1;
        match k.kernel_thread(&l, p.task) {
            Ok(Some(t)) if t.threadfn.0 != 0 => {
                with_fn += 1;
                if !text.contains(t.threadfn) {
                    problems.push(format!(
                        "{label}: kernel thread {} ({}) runs {:#x}, outside kernel text",
                        p.pid,
                        p.name(),
                        t.threadfn.0
                    ));
                }
                // rescuers (kworker/R-*, 6.9 on) run rescuer_thread
                if p.comm.starts_with(b"kworker/") && !p.comm.starts_with(b"kworker/R-") {
                    kworkers += 1;
                    if worker_thread.is_some_and(|w| w != t.threadfn.0) {
                        problems.push(format!(
                            "{label}: {} ({}) runs {:#x}, not worker_thread {wt}",
                            p.pid,
                            p.name(),
                            t.threadfn.0,
                        ));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("{label}: kthread of {}: {e}", p.pid)),
        }
    }
    eprintln!(
        "{label}: {with_fn} of {kthreads} kernel threads run a function of their struct kthread, {kworkers} kworkers worker_thread ({wt})"
    );
    // kthreadd and the idle task have none
    if with_fn + 2 < kthreads || kworkers == 0 || worker_thread.is_none() {
        problems.push(format!(
            "{label}: {with_fn} of {kthreads} kernel threads with a function, {kworkers} kworkers, worker_thread {wt}"
        ));
    }
    problems
}

pub(crate) fn walkers_see(label: &str, truth: &GroundTruth, k: &Kernel<&QemuLive>) -> Vec<String> {
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
    // the system calls' names from the kernel's own tracing metadata
    match k.syscall_names() {
        Ok(names) => {
            let at = |nr: usize| names.get(nr).cloned().flatten();
            if at(0).as_deref() != Some("read") || at(217).as_deref() != Some("getdents64") {
                problems.push(format!(
                    "{label}: system call 0 is named {:?}, 217 {:?}",
                    at(0),
                    at(217)
                ));
            }
        }
        Err(e) => problems.push(format!("{label}: syscall names: {e}")),
    }
    let (_, gates) = k.idt().expect("idt");
    let present = gates.iter().filter(|g| g.present).count();
    if present < 200 {
        problems.push(format!("{label}: only {present} present IDT gates"));
    }
    problems.extend(kthreads_seen(label, truth, k));
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
