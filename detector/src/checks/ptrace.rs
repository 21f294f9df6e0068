//! `ptrace`: user processes traced by a program that is not a debugger (injection).
//!
//! A tracer may read and write every byte of its tracee's memory and set its
//! registers: it is how gdb works and how injectors put a payload into a running
//! process (a library loaded into sshd to harvest passwords, a shell's memory patched).
//! The kernel keeps the relation in the tracee's task (read by
//! [`vmi_core::kernel::ptrace`]): `ptrace`'s `PT_PTRACED` flag, and `parent`, the
//! tracer, differing from `real_parent`.
//!
//! Each thread of each live user process is read; the traced threads of a process are
//! grouped by tracer, one finding per (tracee, tracer). The tracer is judged by its
//! executable (the kernel's `mm->exe_file` path, not its `comm`, which any process
//! sets with `prctl`): allowed by the policy's `allow_tracers` globs, or without that
//! key by [`DEFAULT_TRACERS`] (debuggers and tracers as Debian installs them), it is
//! not reported. Otherwise the finding is high, or medium when the policy has its own
//! list that leaves out a known debugger of [`DEFAULT_TRACERS`] (a debugging session
//! the admin did not foresee, not an implant). A task whose `parent` is not its
//! `real_parent` while `PT_PTRACED` is clear (the kernel never leaves that: a tracer
//! hiding its flag) is high whoever the tracer is. The finding names tracee and tracer
//! (pid, thread, comm, executable); a tracer that no view of the census holds (a
//! hidden process) is read from its task directly and said so.
//!
//! Nothing here walks a list, so a cycle of tracers (each the other's) or any number of
//! traced threads costs one read per thread; findings are bounded per check
//! ([`crate::checks::MAX_FINDINGS_PER_CHECK`]) and the thread ids listed per finding by
//! [`MAX_TIDS`].

use std::collections::{BTreeMap, HashMap, HashSet};

use vmi_core::kernel::files::FileName;
use vmi_core::kernel::ptrace::{PtraceLayout, Trace};
use vmi_core::kernel::{KernelError, Process, Thread};
use vmi_core::memory::PhysicalMemory;
use vmi_core::Va;

use crate::checks::{broken, reread, unchanged, unreadable, CheckFailure, Scan, READ_TRIES};
use crate::finding::{guest_str, Finding, Severity};
use crate::policy::Policy;

const NAME: &str = "ptrace";

/// Most thread ids listed in one finding (the count says how many there are).
pub const MAX_TIDS: usize = 16;

/// Tracers allowed without a policy's `allow_tracers`: debuggers and system-call
/// tracers at the paths Debian installs them (exact paths).
pub const DEFAULT_TRACERS: &[&str] = &[
    "/usr/bin/gdb",
    "/usr/bin/gdb-multiarch",
    "/usr/bin/gdbserver",
    "/usr/bin/strace",
    "/usr/bin/ltrace",
    "/usr/bin/rr",
    "/usr/sbin/criu",
];

/// True when `path` (an executable's, without ` (deleted)`) is one of
/// [`DEFAULT_TRACERS`].
pub fn known_debugger(path: &[u8]) -> bool {
    DEFAULT_TRACERS.iter().any(|d| d.as_bytes() == path)
}

/// Who traces: the task, its process and executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracer {
    /// Its task (`tracee->parent`).
    pub task: Va,
    /// Its thread id.
    pub tid: u32,
    /// Its process id (`tgid`).
    pub pid: u32,
    /// Its thread's `comm`.
    pub comm: Vec<u8>,
    /// Its executable (`None`: none, a kernel thread, or unreadable).
    pub exe: Option<FileName>,
    /// True when a view of the census holds it.
    pub listed: bool,
}

/// How bad a trace by `tracer` is (`None`: allowed). `attached` is the tracee's
/// `PT_PTRACED`.
pub fn judge(tracer: &Tracer, attached: bool, policy: Option<&Policy>) -> Option<Severity> {
    if !attached {
        return Some(Severity::High);
    }
    let Some(exe) = &tracer.exe else {
        return Some(Severity::High);
    };
    let allowed = match policy {
        Some(p) => p.tracer_allowed(&exe.path),
        None => known_debugger(&exe.path),
    };
    // a deleted or in-memory "gdb" is not the installed one
    let installed = !exe.is_deleted();
    if allowed && installed {
        return None;
    }
    if installed && known_debugger(&exe.path) {
        return Some(Severity::Medium);
    }
    Some(Severity::High)
}

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    let l = PtraceLayout::from_profile(scan.kernel.profile())?;
    let procs = scan.processes()?;
    // every thread of the census, by task
    let mut by_task: HashMap<Va, (&Process, &Thread)> = HashMap::new();
    for p in procs {
        for t in &p.threads {
            by_task.entry(t.task).or_insert((p, t));
        }
    }
    let policy = scan.settings.policy.as_ref();
    let mut findings = Vec::new();
    let mut seen = HashSet::new();
    for p in procs
        .iter()
        .filter(|p| !p.is_kernel_thread() && p.exit_state == 0)
    {
        // the traced threads, by tracer
        let mut traced: BTreeMap<Va, (Trace, Vec<u32>)> = BTreeMap::new();
        for t in &p.threads {
            if !seen.insert(t.task) {
                continue;
            }
            match reread(scan.kernel, READ_TRIES, || scan.kernel.trace(&l, t.task)) {
                Ok(Some(tr)) => traced
                    .entry(tr.tracer)
                    .or_insert((tr, Vec::new()))
                    .1
                    .push(t.tid),
                Ok(None) => {}
                Err(e @ KernelError::BadPointer { .. }) => findings.push(corrupt(p, t, &e)),
                Err(e) => {
                    if unchanged(scan.kernel, p) {
                        findings.push(unreadable(NAME, p, "ptrace state", &e));
                    }
                }
            }
        }
        if traced.is_empty() {
            continue;
        }
        let tracee_exe = reread(scan.kernel, READ_TRIES, || scan.kernel.exe_file(p.mm))
            .ok()
            .flatten();
        for (tracer_task, (trace, tids)) in traced {
            let tracer = tracer_of(scan, &by_task, tracer_task);
            let Some(severity) = judge(&tracer, trace.attached(), policy) else {
                continue;
            };
            findings.push(finding(
                p,
                tracee_exe.as_ref(),
                &trace,
                &tids,
                &tracer,
                severity,
            ));
        }
    }
    Ok(findings)
}

/// The tracer at `task`: from the census, else read from its task (a hidden process).
fn tracer_of<M: PhysicalMemory>(
    scan: &Scan<'_, M>,
    by_task: &HashMap<Va, (&Process, &Thread)>,
    task: Va,
) -> Tracer {
    let k = scan.kernel;
    let exe = |mm: Va| reread(k, READ_TRIES, || k.exe_file(mm)).ok().flatten();
    if let Some((p, t)) = by_task.get(&task) {
        return Tracer {
            task,
            tid: t.tid,
            pid: p.pid,
            comm: t.comm.clone(),
            exe: exe(p.mm),
            listed: true,
        };
    }
    match k.process_at(task) {
        Ok(q) => Tracer {
            task,
            tid: q.pid,
            pid: q.tgid,
            comm: q.comm.clone(),
            exe: exe(q.mm),
            listed: false,
        },
        Err(_) => Tracer {
            task,
            tid: 0,
            pid: 0,
            comm: Vec::new(),
            exe: None,
            listed: false,
        },
    }
}

fn finding(
    p: &Process,
    tracee_exe: Option<&FileName>,
    trace: &Trace,
    tids: &[u32],
    tracer: &Tracer,
    severity: Severity,
) -> Finding {
    let comm = guest_str(&p.comm);
    let tracer_comm = guest_str(&tracer.comm);
    let shown =
        |f: Option<&FileName>| f.map_or_else(|| "?".to_string(), |f| guest_str(&f.display()));
    let tracer_exe = shown(tracer.exe.as_ref());
    let how = if trace.attached() {
        "traced"
    } else {
        "traced with its PT_PTRACED flag cleared"
    };
    let hidden = if tracer.listed {
        ""
    } else {
        " (a task no process list holds)"
    };
    let summary = format!(
        "process {} ({comm}) is {how} by process {} ({tracer_comm}, {tracer_exe}){hidden}, which is not an allowed debugger",
        p.pid, tracer.pid
    );
    let listed: Vec<String> = tids.iter().take(MAX_TIDS).map(u32::to_string).collect();
    let mut f = Finding::new(
        NAME,
        severity,
        format!("{NAME}:{}:{}:{}", p.pid, p.start_time, tracer.pid),
        summary,
    )
    .num("pid", u64::from(p.pid))
    .text("comm", comm)
    .text("exe", shown(tracee_exe))
    .num("threads", tids.len() as u64)
    .text("tids", listed.join(","))
    .num("tracer_pid", u64::from(tracer.pid))
    .num("tracer_tid", u64::from(tracer.tid))
    .text("tracer_comm", tracer_comm)
    .text("tracer_exe", tracer_exe)
    .addr("tracer_task", tracer.task.0)
    .text("flags", format!("{:#x}", trace.flags))
    .text(
        "rule",
        if trace.attached() {
            "traced"
        } else {
            "unflagged"
        },
    );
    if trace.seized() {
        f = f.text("seized", "yes");
    }
    if !tracer.listed {
        f = f.text("tracer_listed", "no");
    }
    f
}

/// A thread whose tracer pointer is no kernel address: written memory.
fn corrupt(p: &Process, t: &Thread, e: &KernelError) -> Finding {
    let comm = guest_str(&p.comm);
    Finding::new(
        NAME,
        Severity::High,
        format!("{NAME}:broken:{}:{}", p.pid, t.tid),
        format!(
            "thread {} of process {} ({comm}) is traced by a task that cannot exist: {e}",
            t.tid, p.pid
        ),
    )
    .num("pid", u64::from(p.pid))
    .num("tid", u64::from(t.tid))
    .text("comm", comm)
    .text("rule", "corrupt")
    .text("cause", e.to_string())
    .text(
        "manipulation",
        if broken::is_manipulation(e) {
            "yes"
        } else {
            "no"
        },
    )
}

#[cfg(test)]
mod tests {
    use vmi_core::kernel::files::Linkage;

    use super::*;

    fn tracer(path: Option<&str>, linkage: Linkage) -> Tracer {
        Tracer {
            task: Va(0xffff_8880_0000_1000),
            tid: 7,
            pid: 7,
            comm: b"gdb".to_vec(),
            exe: path.map(|p| FileName {
                path: p.as_bytes().to_vec(),
                linkage,
            }),
            listed: true,
        }
    }

    #[test]
    fn who_may_trace() {
        use Linkage::*;
        let gdb = tracer(Some("/usr/bin/gdb"), Linked);
        assert_eq!(judge(&gdb, true, None), None);
        // flag cleared by hand: whoever it is
        assert_eq!(judge(&gdb, false, None), Some(Severity::High));
        // a copy of gdb elsewhere, or deleted, is not the installed one
        let copy = tracer(Some("/tmp/gdb"), Linked);
        assert_eq!(judge(&copy, true, None), Some(Severity::High));
        let deleted = tracer(Some("/usr/bin/gdb"), Deleted);
        assert_eq!(judge(&deleted, true, None), Some(Severity::High));
        let memfd = tracer(Some("/memfd:x"), Pseudo);
        assert_eq!(judge(&memfd, true, None), Some(Severity::High));
        // no executable: a kernel thread, or one the reader could not name
        assert_eq!(
            judge(&tracer(None, Linked), true, None),
            Some(Severity::High)
        );
        // a policy's own list replaces the defaults; a known debugger left out is medium
        let p = Policy::parse("allow_tracers = [\"/opt/agent/bin/*\"]").unwrap();
        let agent = tracer(Some("/opt/agent/bin/probe"), Linked);
        assert_eq!(judge(&agent, true, Some(&p)), None);
        assert_eq!(judge(&agent, true, None), Some(Severity::High));
        assert_eq!(judge(&gdb, true, Some(&p)), Some(Severity::Medium));
        // an empty policy without the key keeps the defaults
        let empty = Policy::parse("").unwrap();
        assert_eq!(judge(&gdb, true, Some(&empty)), None);
    }
}

#[cfg(test)]
mod synthetic_tests {
    use vmi_core::kernel::ptrace::{PT_PTRACED, PT_SEIZED};
    use vmi_core::testing::SynthTask;

    use crate::checks::synthetic::{ev, run, run_on, single, system, System};
    use crate::checks::{Check, Settings};
    use crate::finding::Severity;
    use crate::policy::Policy;

    const CHECK: Check = Check::Ptrace;

    fn attach(s: &mut System, tracee: &SynthTask, tracer: &SynthTask, flags: u32) {
        s.sk.set(tracee.task, "task_struct", "parent", tracer.task.0);
        s.sk.set_u32(tracee.task, "task_struct", "ptrace", flags);
    }

    /// The clean system with sshd traced by process 3000 (`comm`) running `exe`.
    fn sshd_traced_by(comm: &[u8], exe: &[u8], flags: u32) -> System {
        let mut s = system();
        let tracer = program(&mut s, 3000, comm, exe);
        let sshd = s.sshd;
        attach(&mut s, &sshd, &tracer, flags);
        s
    }

    /// A process `pid` running `exe`.
    fn program(s: &mut System, pid: u32, comm: &[u8], exe: &[u8]) -> SynthTask {
        let t = s.sk.add_process(pid, comm, 0);
        s.sk.exec(&t, exe, &[exe], exe);
        t
    }

    #[test]
    fn gdb_is_allowed_an_injector_is_high() {
        assert!(run(system().sk, CHECK).is_empty());
        let s = sshd_traced_by(b"gdb", b"/usr/bin/gdb", PT_PTRACED);
        assert!(run(s.sk, CHECK).is_empty());
        let s = sshd_traced_by(b"gdb", b"/dev/shm/.x", PT_PTRACED | PT_SEIZED);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(f.key, "ptrace:400:400000:3000");
        assert_eq!(ev(f, "exe"), "/usr/sbin/sshd");
        assert_eq!(ev(f, "tracer_pid"), "3000");
        assert_eq!(ev(f, "tracer_comm"), "gdb");
        assert_eq!(ev(f, "tracer_exe"), "/dev/shm/.x");
        assert_eq!(ev(f, "rule"), "traced");
        assert_eq!(ev(f, "seized"), "yes");
        assert_eq!(ev(f, "threads"), "1");
    }

    #[test]
    fn threads_traced_by_one_tracer_are_one_finding() {
        let mut s = system();
        let inj = program(&mut s, 3000, b"inj", b"/tmp/inj");
        let (bash, thread) = (s.bash, s.bash_thread);
        attach(&mut s, &bash, &inj, PT_PTRACED);
        attach(&mut s, &thread, &inj, PT_PTRACED);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(
            (ev(f, "threads"), ev(f, "tids")),
            ("2".into(), "1000,1001".into())
        );
    }

    #[test]
    fn a_cleared_flag_is_high_even_for_gdb() {
        let s = sshd_traced_by(b"gdb", b"/usr/bin/gdb", 0);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(ev(f, "rule"), "unflagged");
    }

    #[test]
    fn the_policy_names_the_debuggers() {
        let s = sshd_traced_by(b"probe", b"/opt/agent/bin/probe", PT_PTRACED);
        let settings = |text: &str| Settings {
            policy: Some(Policy::parse(text).unwrap()),
            ..Settings::default()
        };
        let allowed = settings("allow_tracers = [\"/opt/agent/bin/*\"]");
        assert!(run_on(s.sk, &[], &allowed, CHECK).unwrap().is_empty());
    }

    /// Two processes each the other's tracer: one finding each, no walk to loop in.
    #[test]
    fn a_tracer_cycle_is_two_findings() {
        let mut s = system();
        let a = program(&mut s, 3000, b"a", b"/tmp/a");
        let b = program(&mut s, 3001, b"b", b"/tmp/b");
        attach(&mut s, &a, &b, PT_PTRACED);
        attach(&mut s, &b, &a, PT_PTRACED);
        let findings = run(s.sk, CHECK);
        assert_eq!(findings.len(), 2, "{findings:#?}");
        assert_eq!(ev(&findings[0], "tracer_pid"), "3001");
        assert_eq!(ev(&findings[1], "tracer_pid"), "3000");
    }

    /// A tracer hidden from every list is still named, read from its task.
    #[test]
    fn a_hidden_tracer_is_read_from_its_task() {
        let mut s = system();
        let inj = program(&mut s, 3000, b"inj", b"/tmp/inj");
        s.sk.unlink_task(&inj);
        let bash = s.bash;
        attach(&mut s, &bash, &inj, PT_PTRACED);
        let findings = run(s.sk, CHECK);
        let f = findings
            .iter()
            .find(|f| f.key.starts_with("ptrace:1000:"))
            .unwrap_or_else(|| panic!("{findings:#?}"));
        assert_eq!(f.severity, Severity::High);
        assert_eq!(ev(f, "tracer_comm"), "inj");
    }

    /// Many traced threads: one finding, the thread ids listed up to the bound.
    #[test]
    fn many_traced_threads_list_a_bounded_number_of_ids() {
        let mut s = system();
        let inj = program(&mut s, 3000, b"inj", b"/tmp/inj");
        let bash = s.bash;
        attach(&mut s, &bash, &inj, PT_PTRACED);
        for tid in 0..100 {
            let t = s.sk.add_thread(&bash, 3100 + tid, b"bash");
            attach(&mut s, &t, &inj, PT_PTRACED);
        }
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(ev(f, "threads"), "101");
        assert_eq!(ev(f, "tids").split(',').count(), super::MAX_TIDS);
    }

    #[test]
    fn a_wild_tracer_pointer_is_a_corrupt_finding() {
        let mut s = system();
        let sshd = s.sshd.task;
        s.sk.set(sshd, "task_struct", "parent", 0x4141_4141_4141);
        s.sk.set_u32(sshd, "task_struct", "ptrace", PT_PTRACED);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(ev(f, "rule"), "corrupt");
        // an unreadable tracer task (no such memory) is named as unknown, high
        let mut s = system();
        let sshd = s.sshd.task;
        s.sk.set(sshd, "task_struct", "parent", 0xffff_8000_dead_0000);
        s.sk.set_u32(sshd, "task_struct", "ptrace", PT_PTRACED);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(ev(f, "tracer_pid"), "0");
        assert_eq!(ev(f, "tracer_listed"), "no");
    }
}
