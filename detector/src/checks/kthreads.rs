//! `kthreads`: every kernel thread must run a function of the kernel or of a listed
//! module.
//!
//! A rootkit keeps a worker thread (a backdoor's listener, a keylogger's flusher, the
//! loop that hides it again) and hides the module that holds its code; the thread
//! itself stays, a kernel thread among a hundred, named as it likes. What it runs is in
//! its `struct kthread` (`threadfn`, read by [`vmi_core::kernel::kthread`]): a function
//! outside kernel text and outside every module on the `modules` list is reported,
//! high, with who owns it (a hidden module, the module area where no known module is,
//! or unknown memory). A function of a listed module is normal (drivers have threads)
//! and is not reported. Volatility 3's `linux.kthreads` lists the same functions with
//! the module it finds each in.
//!
//! Tasks without a `struct kthread` or with a null `threadfn` (the idle tasks,
//! `kthreadd`) are skipped; user workers (io_uring, vhost) have PF_KTHREAD clear.
//! Every thread is read alone: a thread whose `struct kthread` cannot be read does not
//! stop the others. A pointer to it that is not a kernel address is written memory,
//! reported high as a corrupted structure (as `broken.rs` does for lists); a read
//! that fails is reported low as unreadable (as `malfind` and `spoofing` do).

use std::collections::HashSet;

use vmi_core::kernel::kthread::{KernelThread, KthreadLayout};
use vmi_core::kernel::{KernelError, Process, Thread};
use vmi_core::memory::PhysicalMemory;

use crate::checks::owner::Owner;
use crate::checks::{broken, reread, CheckFailure, Scan, READ_TRIES};
use crate::finding::{guest_str, Finding, Severity};

const NAME: &str = "kthreads";

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    scan.kernel.text_range()?;
    let l = KthreadLayout::from_profile(scan.kernel.profile())?;
    let procs = scan.processes()?;
    let mut seen = HashSet::new();
    let mut findings = Vec::new();
    for p in procs.iter().filter(|p| p.is_kernel_thread()) {
        for t in &p.threads {
            if !seen.insert(t.task) {
                continue;
            }
            let read = reread(scan.kernel, READ_TRIES, || {
                scan.kernel.kernel_thread(&l, t.task)
            });
            match read {
                Ok(Some(k)) => findings.extend(judge(scan, p, t, &k)),
                Ok(None) => {}
                Err(e) => findings.push(unreadable(p, t, &e)),
            }
        }
    }
    Ok(findings)
}

/// The finding for a thread whose function is neither kernel text nor a listed
/// module's.
fn judge<M: PhysicalMemory>(
    scan: &Scan<'_, M>,
    p: &Process,
    t: &Thread,
    k: &KernelThread,
) -> Option<Finding> {
    let f = k.threadfn;
    if f.0 == 0 || scan.owners.in_text(f) {
        return None;
    }
    let owner = scan.owners.owner(f);
    if matches!(owner, Owner::Module { hidden: false, .. }) {
        return None;
    }
    let comm = guest_str(&t.comm);
    let name = if k.full_name.is_empty() {
        comm.clone()
    } else {
        guest_str(&k.full_name)
    };
    Some(
        Finding::new(
            NAME,
            Severity::High,
            format!("{NAME}:{}:{:#x}:{:#x}", t.tid, t.task.0, f.0),
            format!(
                "kernel thread {} ({name}) runs {:#x} in {owner}, not kernel text or a listed module: a worker of hidden code",
                t.tid, f.0
            ),
        )
        .num("pid", u64::from(t.tid))
        .num("tgid", u64::from(p.tgid))
        .text("comm", comm)
        .text("name", name)
        .addr("task", t.task.0)
        .addr("kthread", k.kthread.0)
        .addr("threadfn", f.0)
        .addr("data", k.data.0)
        .text("owner", owner.to_string()),
    )
}

/// The finding for a thread whose `struct kthread` could not be read.
fn unreadable(p: &Process, t: &Thread, e: &KernelError) -> Finding {
    let comm = guest_str(&t.comm);
    let (severity, kind, what) = if broken::is_manipulation(e) {
        (
            Severity::High,
            "broken",
            "is corrupted, so the function it runs is unknown",
        )
    } else {
        (
            Severity::Low,
            "unreadable",
            "cannot be read, so the function it runs cannot be checked",
        )
    };
    Finding::new(
        NAME,
        severity,
        format!("{NAME}:{kind}:{}:{:#x}", t.tid, t.task.0),
        format!(
            "the struct kthread of kernel thread {} ({comm}) {what}: {e}",
            t.tid
        ),
    )
    .num("pid", u64::from(t.tid))
    .num("tgid", u64::from(p.tgid))
    .text("comm", comm)
    .addr("task", t.task.0)
    .text("cause", e.to_string())
}

#[cfg(test)]
mod tests {
    use vmi_core::kernel::KernelError;
    use vmi_core::testing::{synthetic_profile, SyntheticKernel};
    use vmi_core::Va;

    use crate::checks::synthetic::{assert_fails, ev, ev_addr, run, single, system};
    use crate::checks::{Check, CheckFailure};
    use crate::finding::Severity;

    const CHECK: Check = Check::Kthreads;

    #[test]
    fn clean_with_threads_of_the_kernel_and_of_a_listed_module() {
        let mut s = system();
        s.sk.add_kthread(3, b"ksoftirqd/0");
        let e1000 = s.sk.add_kthread(50, b"e1000_watchdog");
        s.sk.set_threadfn(&e1000, s.e1000.code(0x40), None);
        // an idle task: its struct kthread has no function (from 5.17)
        let idle = s.sk.add_kthread(4, b"swapper/1");
        s.sk.set_threadfn(&idle, Va(0), None);
        assert!(run(s.sk, CHECK).is_empty());
    }

    #[test]
    fn a_thread_of_a_hidden_module_is_high_with_its_owner() {
        let mut s = system();
        let rk = s.sk.add_module(b"rk", 0x1000);
        s.sk.hide_module(&rk);
        let t = s.sk.add_kthread(77, b"kworker/u2:1");
        s.sk.set_threadfn(&t, rk.code(0x30), Some(b"kworker/u2:1-events_unbound"));
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(
            f.key,
            format!("kthreads:77:{:#x}:{:#x}", t.task.0, rk.code(0x30).0)
        );
        assert_eq!(ev(f, "owner"), "hidden module rk");
        assert_eq!(ev(f, "name"), "kworker/u2:1-events_unbound");
        assert_eq!(ev(f, "comm"), "kworker/u2:1");
        assert_eq!(ev_addr(f, "threadfn"), rk.code(0x30).0);
    }

    #[test]
    fn a_thread_of_no_known_module_is_high() {
        let mut s = system();
        let code = s.sk.orphan_code();
        let t = s.sk.add_kthread(78, b"kworker/0:2");
        s.sk.set_threadfn(&t, code, None);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(ev(f, "owner"), "module area, no known module (hidden)");
        assert_eq!(ev(f, "name"), "kworker/0:2");
    }

    #[test]
    fn a_wild_struct_kthread_is_contained_and_the_others_are_judged() {
        let mut s = system();
        let rk = s.sk.add_module(b"rk", 0x1000);
        s.sk.hide_module(&rk);
        let wild = s.sk.add_kthread(60, b"kworker/1:0");
        s.sk.set(
            wild.task,
            "task_struct",
            "worker_private",
            0x4141_4141_4141_4141,
        );
        let unmapped = s.sk.add_kthread(61, b"kworker/1:1");
        s.sk.set(
            unmapped.task,
            "task_struct",
            "worker_private",
            0xffff_c900_dead_0000,
        );
        let bad = s.sk.add_kthread(62, b"rk_worker");
        s.sk.set_threadfn(&bad, rk.code(0), None);
        let mut findings = run(s.sk, CHECK);
        findings.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(findings.len(), 3, "{findings:#?}");
        let keys: Vec<&str> = findings.iter().map(|f| f.key.as_str()).collect();
        assert!(keys[0].starts_with("kthreads:62:"), "{keys:?}");
        assert_eq!(findings[0].severity, Severity::High);
        assert_eq!(keys[1], format!("kthreads:broken:60:{:#x}", wild.task.0));
        assert_eq!(findings[1].severity, Severity::High);
        assert_eq!(
            keys[2],
            format!("kthreads:unreadable:61:{:#x}", unmapped.task.0)
        );
        assert_eq!(findings[2].severity, Severity::Low);
    }

    #[test]
    fn before_5_17_the_struct_kthread_is_at_set_child_tid() {
        let mut p = synthetic_profile();
        let task = p.types.get_mut("task_struct").unwrap();
        task.fields.remove("worker_private");
        p.types
            .get_mut("kthread")
            .unwrap()
            .fields
            .remove("full_name");
        let mut sk = SyntheticKernel::new(p);
        sk.add_kthread(2, b"kthreadd");
        let rk = sk.add_module(b"rk", 0x1000);
        sk.hide_module(&rk);
        let t = sk.add_kthread(90, b"rk_worker");
        sk.set_threadfn(&t, rk.code(8), None);
        let findings = run(sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(ev(f, "owner"), "hidden module rk");
        assert_eq!(ev(f, "name"), "rk_worker");
    }

    #[test]
    fn a_profile_without_struct_kthread_is_a_typed_error() {
        // the guest module's profiles: the type is private to kernel/kthread.c
        let mut p = synthetic_profile();
        p.types.remove("kthread");
        assert_fails!(
            SyntheticKernel::new(p),
            CHECK,
            CheckFailure::Kernel(KernelError::MissingField(f)) if f.contains("kthread")
        );
    }

    #[test]
    fn user_tasks_are_not_read() {
        let mut s = system();
        // a user task's pointer is not a struct kthread (set_child_tid, io_uring's
        // worker_private): PF_KTHREAD clear, it is left alone
        s.sk.set(s.bash.task, "task_struct", "worker_private", 0x4141_4141);
        assert!(run(s.sk, CHECK).is_empty());
    }
}
