//! `hidden-process`: the `tasks` list and the pid namespace must name the same tasks.
//!
//! - A task the initial pid namespace's IDR names but neither the `tasks` list nor any
//!   listed process's thread list holds was unlinked to hide it from list walkers
//!   (and from tools that read the list, e.g. Volatility's pslist). Reported once per
//!   thread group.
//! - A listed task whose pid the IDR lacks is hidden from `/proc`, `kill` and every
//!   lookup by pid.
//! - A `struct pid` whose number differs from its task's pid was tampered with.
//! - A task a CPU runs (`rq->curr`), or one queued on a run queue to run, that is on
//!   neither the tasks list nor in the pid namespace was hidden from both (a task that
//!   has begun to exit is left alone: it leaves both before its last instructions).
//! - A break in the tasks list or a thread list (a loop, a pointer out of the kernel),
//!   a task a view holds that is no readable process, and a corrupted pid IDR are high
//!   findings too: the processes are still read from the other views.
//! - A task whose flags carry a rootkit's mark (Diamorphine's `PF_INVISIBLE`), on any
//!   view: see [`marks`](super::marks).

use std::collections::{BTreeMap, HashMap, HashSet};

use vmi_core::kernel::objects::TASKS_LIST;
use vmi_core::kernel::pidns::{PidNamespaceView, PidTask};
use vmi_core::kernel::{Census, Process, Views};
use vmi_core::memory::PhysicalMemory;
use vmi_core::Va;

use crate::checks::{broken, marks, needed, CheckFailure, Scan};
use crate::finding::{guest_str, Finding, Severity};

const NAME: &str = "hidden-process";

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    let census = needed(&scan.census, "the tasks list")?;
    let mut findings = broken_views(scan, census)?;
    // an IDR found corrupted is reported; the comparisons that need it are skipped
    let empty = PidNamespaceView::default();
    let (view, have_idr) = match &census.pid_namespace {
        Ok(v) => (v, true),
        Err(e) if broken::is_manipulation(e) => {
            findings.push(broken::check_stopped(NAME, e));
            (&empty, false)
        }
        Err(e) => {
            return Err(CheckFailure::Walk {
                walk: "the pid namespace",
                error: e.to_string(),
            })
        }
    };
    let procs: Vec<&Process> = census.listed().collect();
    let mut listed: HashMap<Va, (u32, u32)> = HashMap::new(); // task -> (tid, tgid)
    for p in &procs {
        listed.insert(p.task, (p.pid, p.tgid));
        for t in &p.threads {
            listed.insert(t.task, (t.tid, p.tgid));
        }
    }
    // on the list but unreadable as a process: reported as such, not as hidden
    for u in census.undecodable.iter().filter(|u| u.view.on_tasks_list()) {
        listed.insert(u.task, (0, 0));
    }

    // named by the IDR, not on the lists: group by thread group
    let mut hidden: BTreeMap<u32, Vec<&PidTask>> = BTreeMap::new();
    for t in view.tasks.iter().filter(|t| !listed.contains_key(&t.task)) {
        hidden.entry(t.tgid).or_default().push(t);
    }
    let listed_tgids: HashSet<u32> = procs.iter().map(|p| p.tgid).collect();
    let beyond_break = census.breaks.iter().any(|b| b.list == TASKS_LIST);
    for (tgid, tasks) in hidden {
        let leader = tasks
            .iter()
            .find(|t| t.tid == tgid)
            .copied()
            .unwrap_or(tasks[0]);
        let comm = guest_str(&leader.comm);
        let tids: Vec<String> = tasks.iter().map(|t| t.tid.to_string()).collect();
        let kthread = leader.flags & 0x0020_0000 != 0;
        let f = if listed_tgids.contains(&tgid) {
            Finding::new(
                NAME,
                Severity::High,
                format!("{NAME}:thread:{tgid}:{}", tids.join(",")),
                format!(
                    "thread(s) {} of process {tgid} ({comm}) are not on its thread list but the pid namespace holds them",
                    tids.join(",")
                ),
            )
        } else {
            Finding::new(
                NAME,
                Severity::High,
                format!("{NAME}:process:{tgid}:{:#x}", leader.task.0),
                format!(
                    "{} {tgid} ({comm}) is not on the tasks list but the pid namespace holds it: {}",
                    if kthread { "kernel thread" } else { "process" },
                    if beyond_break {
                        "unlinked to hide it, or lost between the breaks of the list"
                    } else {
                        "unlinked to hide it"
                    }
                ),
            )
        };
        findings.push(
            f.num("pid", u64::from(tgid))
                .text("comm", comm)
                .addr("task", leader.task.0)
                .addr("struct_pid", leader.pid.0)
                .text("tids", tids.join(",")),
        );
    }

    // on the lists, not in the IDR
    let in_idr: HashSet<Va> = view.tasks.iter().map(|t| t.task).collect();
    for p in procs.iter().filter(|_| have_idr) {
        let exiting = p.exit_state != 0;
        let missing: Vec<u32> = std::iter::once((p.task, p.pid))
            .chain(p.threads.iter().map(|t| (t.task, t.tid)))
            .filter(|(task, _)| !in_idr.contains(task))
            .map(|(_, tid)| tid)
            .collect::<HashSet<u32>>()
            .into_iter()
            .collect();
        // a zombie whose threads are reaped keeps its pid; anything else must be there
        if missing.is_empty() || (exiting && !missing.contains(&p.pid)) {
            continue;
        }
        let mut missing = missing;
        missing.sort_unstable();
        let ids: Vec<String> = missing.iter().map(|t| t.to_string()).collect();
        let comm = guest_str(&p.comm);
        findings.push(
            Finding::new(
                NAME,
                Severity::High,
                format!("{NAME}:no-pid:{}:{}", p.pid, ids.join(",")),
                format!(
                    "process {} ({comm}) is on the tasks list but task(s) {} are missing from the pid namespace: hidden from /proc and from lookups by pid",
                    p.pid,
                    ids.join(",")
                ),
            )
            .num("pid", u64::from(p.pid))
            .text("comm", comm)
            .addr("task", p.task.0)
            .text("tids", ids.join(",")),
        );
    }

    // running on a CPU, on neither view
    let running = match &census.running {
        Ok(r) => r.as_slice(),
        Err(e) if broken::is_manipulation(e) => {
            findings.push(broken::check_stopped(NAME, e));
            &[]
        }
        Err(e) => {
            return Err(CheckFailure::Walk {
                walk: "the CPUs' current tasks",
                error: e.to_string(),
            })
        }
    };
    for r in running {
        if r.tid == 0 || r.exit_state != 0 {
            continue; // an idle task, or one finishing its exit
        }
        if listed.contains_key(&r.task) || in_idr.contains(&r.task) || !have_idr {
            continue;
        }
        findings.push(
            hidden_from_both(
                "running",
                r.tid,
                r.tgid,
                &r.comm,
                r.task,
                format!("runs on CPU {}", r.cpu),
            )
            .num("cpu", u64::from(r.cpu)),
        );
    }

    // queued to run, on neither view (a task that runs now was reported above)
    let queued = census.queued.as_deref().unwrap_or(&[]);
    for p in &census.processes {
        if p.views != Views::QUEUED || p.exit_state != 0 || p.pid == 0 || !have_idr {
            continue;
        }
        let Some(q) = queued.iter().find(|q| q.task == p.task) else {
            continue;
        };
        findings.push(
            hidden_from_both(
                "queued",
                p.pid,
                p.tgid,
                &p.comm,
                p.task,
                format!("waits on CPU {}'s {} run queue", q.cpu, q.class),
            )
            .num("cpu", u64::from(q.cpu))
            .text("class", q.class),
        );
    }

    findings.extend(marks::marked(NAME, &procs, &view.tasks));

    // a pid number that disagrees with its task
    for t in &view.tasks {
        if u64::from(t.nr) != t.index || t.nr != t.tid {
            let comm = guest_str(&t.comm);
            findings.push(
                Finding::new(
                    NAME,
                    Severity::Medium,
                    format!("{NAME}:pid-mismatch:{:#x}", t.pid.0),
                    format!(
                        "the pid namespace files pid {} (struct pid number {}) for task {} ({comm})",
                        t.index, t.nr, t.tid
                    ),
                )
                .num("idr_index", t.index)
                .num("pid_nr", u64::from(t.nr))
                .num("task_pid", u64::from(t.tid))
                .text("comm", comm)
                .addr("task", t.task.0)
                .addr("struct_pid", t.pid.0),
            );
        }
    }
    Ok(findings)
}

/// A task a CPU runs or has queued (`how`) that neither the tasks list nor the pid
/// namespace holds.
fn hidden_from_both(
    kind: &str,
    tid: u32,
    tgid: u32,
    comm: &[u8],
    task: Va,
    how: String,
) -> Finding {
    let comm = guest_str(comm);
    Finding::new(
        NAME,
        Severity::High,
        format!("{NAME}:{kind}:{tid}:{:#x}", task.0),
        format!(
            "task {tid} ({comm}) of process {tgid} {how} but is on neither the tasks list nor in the pid namespace: hidden from both"
        ),
    )
    .num("pid", u64::from(tgid))
    .num("tid", u64::from(tid))
    .text("comm", comm)
    .addr("task", task.0)
}

/// The breaks of the tasks list and of thread lists, and tasks a view holds that are no
/// readable process: each a high finding.
fn broken_views<M: PhysicalMemory>(
    scan: &Scan<'_, M>,
    census: &Census,
) -> Result<Vec<Finding>, CheckFailure> {
    let l = scan.kernel.layout();
    let init = scan.kernel.symbol("init_task")?;
    let by_task: HashMap<Va, &Process> = census.processes.iter().map(|p| (p.task, p)).collect();
    let mut findings = Vec::new();
    for b in &census.breaks {
        let element = if b.list == TASKS_LIST {
            let task = Va(b.from.0.wrapping_sub(l.task_tasks));
            match by_task.get(&task) {
                _ if task == init => "the list head (init_task)".to_string(),
                Some(p) => format!("task {task} (pid {}, {})", p.pid, guest_str(&p.comm)),
                None => format!("task {task}"),
            }
        } else {
            // a thread list: name the process whose list it is
            let owner = census.processes.iter().find(|p| {
                p.threads
                    .iter()
                    .any(|t| Va(t.task.0.wrapping_add(l.task_thread_node)) == b.from)
            });
            match owner {
                Some(p) => format!(
                    "a thread list node ({}) of process {} ({})",
                    b.from,
                    p.pid,
                    guest_str(&p.comm)
                ),
                None => format!("the thread list node at {}", b.from),
            }
        };
        findings.push(broken::list_break(NAME, b, &element));
    }
    for u in &census.undecodable {
        findings.push(
            Finding::new(
                NAME,
                Severity::High,
                format!("{NAME}:undecodable:{:#x}", u.task.0),
                u.to_string(),
            )
            .addr("task", u.task.0)
            .text("views", u.view.names().join(","))
            .text("cause", u.error.to_string()),
        );
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use vmi_core::kernel::Limits;
    use vmi_core::Va;

    use crate::checks::synthetic::{ev, ev_addr, run, run_on, single, system};
    use crate::checks::{Check, Settings};
    use crate::finding::Severity;

    const CHECK: Check = Check::HiddenProcess;

    #[test]
    fn clean() {
        assert!(run(system().sk, CHECK).is_empty());
    }

    #[test]
    fn a_process_unlinked_from_the_tasks_list_is_found_in_the_pid_namespace() {
        let mut s = system();
        let rk = s.sk.add_process(1234, b"rootkitd", 0);
        s.sk.unlink_task(&rk);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(
            f.key,
            format!("hidden-process:process:1234:{:#x}", rk.task.0)
        );
        assert_eq!(ev(f, "comm"), "rootkitd");
        assert_eq!(ev(f, "pid"), "1234");
        assert_eq!(ev_addr(f, "struct_pid"), rk.struct_pid.0);
    }

    /// Diamorphine's mark on a process is medium, a bit no kernel defines on a thread
    /// high; the flags kernel code sets (a kernel thread's, a forked child's) are not
    /// marks.
    #[test]
    fn tasks_marked_by_their_flags_are_found() {
        let mut s = system();
        let flags = |s: &crate::checks::synthetic::System, t: Va| {
            s.sk.get(t, "task_struct", "flags") as u32
        };
        // PF_FORKNOEXEC | PF_RANDOMIZE | PF_USED_MATH on sshd: normal
        let f = flags(&s, s.sshd.task);
        s.sk.set_u32(s.sshd.task, "task_struct", "flags", f | 0x0040_2040);
        assert!(run(s.sk, CHECK).is_empty());

        let mut s = system();
        let f = flags(&s, s.sshd.task);
        s.sk.set_u32(s.sshd.task, "task_struct", "flags", f | 0x1000_0000);
        let t = s.bash_thread.task;
        let f = flags(&s, t);
        s.sk.set_u32(t, "task_struct", "flags", f | 0x0200_0000);
        let findings = run(s.sk, CHECK);
        let (medium, high): (Vec<_>, Vec<_>) = findings
            .into_iter()
            .partition(|f| f.severity == Severity::Medium);
        let sshd = single(&medium, CHECK, Severity::Medium);
        assert_eq!(sshd.key, "hidden-process:flags:400:0x10000000");
        assert_eq!(ev(sshd, "comm"), "sshd");
        assert_eq!(ev(sshd, "pid"), "400");
        let thread = single(&high, CHECK, Severity::High);
        assert_eq!(thread.key, "hidden-process:flags:1001:0x2000000");
        assert_eq!(ev(thread, "pid"), "1000");
        assert_eq!(ev(thread, "tid"), "1001");
        assert_eq!(ev_addr(thread, "task"), t.0);
    }

    #[test]
    fn a_thread_unlinked_from_its_thread_list_is_found() {
        let mut s = system();
        s.sk.unlink_thread(&s.bash_thread);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(f.key, "hidden-process:thread:1000:1001");
        assert_eq!(ev(f, "tids"), "1001");
    }

    #[test]
    fn a_listed_process_missing_from_the_pid_namespace_is_found() {
        let mut s = system();
        s.sk.idr_set(400, 0);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(f.key, "hidden-process:no-pid:400:400");
        assert_eq!(ev(f, "comm"), "sshd");
    }

    #[test]
    fn a_running_task_hidden_from_both_views_is_found() {
        let mut s = system();
        let rk = s.sk.add_process(2000, b"miner", 1000);
        s.sk.unlink_task(&rk);
        s.sk.idr_set(2000, 0);
        s.sk.set_running(rk.task);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(
            f.key,
            format!("hidden-process:running:2000:{:#x}", rk.task.0)
        );
        assert_eq!(ev(f, "cpu"), "0");
    }

    #[test]
    fn a_queued_task_hidden_from_both_views_is_found() {
        let mut s = system();
        let rk = s.sk.add_process(2001, b"miner", 1000);
        s.sk.unlink_task(&rk);
        s.sk.idr_set(2001, 0);
        s.sk.enqueue(&s.sshd);
        s.sk.enqueue(&rk);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(
            f.key,
            format!("hidden-process:queued:2001:{:#x}", rk.task.0)
        );
        assert_eq!(ev(f, "class"), "fair");
    }

    #[test]
    fn a_struct_pid_with_another_number_is_found() {
        let mut s = system();
        let nr = s.sk.offset("pid", "numbers") + s.sk.offset("upid", "nr");
        s.sk.write_u32(Va(s.sshd.struct_pid.0 + nr), 401);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::Medium);
        assert_eq!(ev(f, "idr_index"), "400");
        assert_eq!(ev(f, "pid_nr"), "401");
    }

    #[test]
    fn a_tasks_list_cycle_is_a_high_finding_and_hides_nothing() {
        let mut s = system();
        // bash's next points back at sshd: the walk meets sshd twice
        let tasks = s.sk.offset("task_struct", "tasks");
        s.sk.write_u64(Va(s.bash.task.0 + tasks), s.sshd.task.0 + tasks);
        let findings = run(s.sk, CHECK);
        // every process is still read (the tail backwards): only the loop is reported
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(
            f.key,
            format!(
                "hidden-process:broken:init_task.tasks:next:{:#x}",
                s.bash.task.0 + tasks
            )
        );
        assert!(
            f.summary.contains("(pid 1000, bash)'s next leads back to"),
            "{}",
            f.summary
        );
        assert_eq!(ev(f, "link"), "next");
    }

    #[test]
    fn a_process_beyond_two_breaks_is_still_found_in_the_pid_namespace() {
        let mut s = system();
        let tasks = s.sk.offset("task_struct", "tasks");
        // the head's next and prev are wild: nothing of the list can be read
        let head = s.sk.symbol("init_task").0 + tasks;
        s.sk.write_u64(Va(head), 0x4141_4141_4141_4141);
        s.sk.write_u64(Va(head + 8), 0x10);
        let findings = run(s.sk, CHECK);
        let keys: Vec<&str> = findings.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(findings.len(), 6, "{keys:?}"); // 2 breaks, and 4 processes
        assert!(findings.iter().all(|f| f.severity == Severity::High));
        assert!(
            keys.iter()
                .any(|k| k.starts_with("hidden-process:process:1000:")),
            "{keys:?}"
        );
    }

    #[test]
    fn a_task_with_a_wild_cred_is_found_and_the_others_are_read() {
        let mut s = system();
        s.sk.set(s.sshd.task, "task_struct", "real_cred", 0x4141);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(
            f.key,
            format!("hidden-process:undecodable:{:#x}", s.sshd.task.0)
        );
        assert_eq!(ev(f, "views"), "tasks");
    }

    #[test]
    fn a_tasks_list_longer_than_the_limit_is_reported_where_the_walk_stopped() {
        let s = system();
        let settings = Settings {
            limits: Limits {
                max_processes: 3,
                ..Limits::default()
            },
            ..Settings::default()
        };
        let findings = run_on(s.sk, &[], &settings, CHECK).unwrap();
        let stop = findings
            .iter()
            .find(|f| {
                f.key
                    .starts_with("hidden-process:broken:init_task.tasks:next:")
            })
            .expect("the limit is reported");
        assert!(
            stop.summary.contains("more than 3 elements"),
            "{}",
            stop.summary
        );
        // no walk backwards beyond the limit: one break
        assert_eq!(
            findings
                .iter()
                .filter(|f| f.key.contains(":broken:"))
                .count(),
            1
        );
    }

    #[test]
    fn a_corrupt_pid_namespace_is_a_high_finding() {
        let mut s = system();
        // a node pointer in a leaf node
        let slots = s.sk.offset("xa_node", "slots");
        let head = s.sk.symbol("init_pid_ns").0
            + s.sk.offset("pid_namespace", "idr")
            + s.sk.offset("idr", "idr_rt")
            + s.sk.offset("xarray", "xa_head");
        let root = s.sk.read_u64(Va(head)) - 2;
        let leaf = s.sk.read_u64(Va(root + slots)) - 2;
        s.sk.write_u64(Va(leaf + slots + 8 * 5), root + 2);
        // the comparisons with the IDR are skipped, not turned into false findings
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert!(
            f.key.starts_with("hidden-process:broken:init_pid_ns.idr"),
            "{}",
            f.key
        );
    }
}
