//! `hidden-process`: the `tasks` list and the pid namespace must name the same tasks.
//!
//! - A task the initial pid namespace's IDR names but neither the `tasks` list nor any
//!   listed process's thread list holds was unlinked to hide it from list walkers
//!   (and from tools that read the list, e.g. Volatility's pslist). Reported once per
//!   thread group.
//! - A listed task whose pid the IDR lacks is hidden from `/proc`, `kill` and every
//!   lookup by pid.
//! - A `struct pid` whose number differs from its task's pid was tampered with.
//! - A task a CPU runs (`rq->curr`) that is on neither the tasks list nor in the pid
//!   namespace was hidden from both (a task that has begun to exit is left alone: it
//!   leaves both before its last instructions).

use std::collections::{BTreeMap, HashMap, HashSet};

use vmi_core::kernel::pidns::{PidLimits, PidTask};
use vmi_core::memory::PhysicalMemory;
use vmi_core::Va;

use crate::checks::{needed, CheckFailure, Scan};
use crate::finding::{guest_str, Finding, Severity};

const NAME: &str = "hidden-process";

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    let procs = needed(&scan.processes, "the tasks list")?;
    let view = scan.kernel.pid_namespace_tasks(&PidLimits::default())?;
    let mut listed: HashMap<Va, (u32, u32)> = HashMap::new(); // task -> (tid, tgid)
    for p in procs {
        listed.insert(p.task, (p.pid, p.tgid));
        for t in &p.threads {
            listed.insert(t.task, (t.tid, p.tgid));
        }
    }
    let mut findings = Vec::new();

    // named by the IDR, not on the lists: group by thread group
    let mut hidden: BTreeMap<u32, Vec<&PidTask>> = BTreeMap::new();
    for t in view.tasks.iter().filter(|t| !listed.contains_key(&t.task)) {
        hidden.entry(t.tgid).or_default().push(t);
    }
    let listed_tgids: HashSet<u32> = procs.iter().map(|p| p.tgid).collect();
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
                    "{} {tgid} ({comm}) is not on the tasks list but the pid namespace holds it: unlinked to hide it",
                    if kthread { "kernel thread" } else { "process" }
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
    for p in procs {
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
    for r in scan.kernel.running()? {
        if r.tid == 0 || r.exit_state != 0 {
            continue; // an idle task, or one finishing its exit
        }
        if listed.contains_key(&r.task) || in_idr.contains(&r.task) {
            continue;
        }
        let comm = guest_str(&r.comm);
        findings.push(
            Finding::new(
                NAME,
                Severity::High,
                format!("{NAME}:running:{}:{:#x}", r.tid, r.task.0),
                format!(
                    "task {} ({comm}) of process {} runs on CPU {} but is on neither the tasks list nor in the pid namespace: hidden from both",
                    r.tid, r.tgid, r.cpu
                ),
            )
            .num("pid", u64::from(r.tgid))
            .num("tid", u64::from(r.tid))
            .text("comm", comm)
            .num("cpu", u64::from(r.cpu))
            .addr("task", r.task.0),
        );
    }

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
