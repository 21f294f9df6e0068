//! `detector verify`: whether a profile is right for a guest, from the guest's own
//! consistency alone (no ground truth). A wrong offset or symbol shows as structures that
//! disagree with each other: a banner not where the symbol says, list links that do not
//! point back, names that are not text, the tasks list and the pid namespace naming
//! different tasks, modules the kset does not hold, handlers outside kernel text.
//!
//! Each rule passes, fails with its evidence, or does not apply (what it reads is not in
//! the profile or the kernel). A guest with a rootkit can fail a rule too (a process
//! unlinked from the tasks list fails `pid-namespace`): `check` says what the rootkit
//! did, `verify` only that the profile reads a consistent kernel.

use std::collections::BTreeSet;

use vmi_core::kernel::pidns::PidLimits;
use vmi_core::kernel::{Kernel, Limits};
use vmi_core::memory::{PhysicalMemory, VirtualMemory};
use vmi_core::Va;

/// How a rule came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The guest agrees with the profile.
    Pass,
    /// It does not: the detail says where.
    Fail,
    /// The rule cannot be applied (the profile or the kernel lacks what it reads).
    NotApplicable,
}

impl Outcome {
    /// `pass`, `FAIL` or `n/a`.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::NotApplicable => "n/a",
        }
    }
}

/// One rule's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleResult {
    /// The rule's name.
    pub rule: &'static str,
    /// How it came out.
    pub outcome: Outcome,
    /// What was compared, or the evidence of a failure.
    pub detail: String,
}

/// The rules, in the order they run.
pub const RULES: &[&str] = &[
    "banner",
    "tasks-list",
    "task-names",
    "thread-groups",
    "parents",
    "pid-namespace",
    "runqueues",
    "address-spaces",
    "credentials",
    "executables",
    "mappings",
    "modules",
    "syscall-table",
    "idt",
];

/// Most differences quoted in a detail.
const QUOTE: usize = 5;

fn result(rule: &'static str, outcome: Outcome, detail: impl Into<String>) -> RuleResult {
    RuleResult {
        rule,
        outcome,
        detail: detail.into(),
    }
}

fn pass_or_fail(rule: &'static str, problems: Vec<String>, ok: String) -> RuleResult {
    if problems.is_empty() {
        result(rule, Outcome::Pass, ok)
    } else {
        let more = problems.len().saturating_sub(QUOTE);
        let mut text: Vec<String> = problems.into_iter().take(QUOTE).collect();
        if more > 0 {
            text.push(format!("and {more} more"));
        }
        result(rule, Outcome::Fail, text.join("; "))
    }
}

/// Printable, non-empty text (a `comm` or module name read at the right offset).
fn is_text(b: &[u8]) -> bool {
    !b.is_empty() && b.iter().all(|&c| (0x20..0x7f).contains(&c))
}

/// Run every rule on `kernel`.
pub fn verify<M: PhysicalMemory>(kernel: &Kernel<M>, limits: &Limits) -> Vec<RuleResult> {
    let mut out = vec![banner(kernel)];
    let processes = kernel.processes(limits);
    match &processes {
        Ok(procs) => {
            out.push(tasks_list(kernel, procs));
            out.push(task_names(procs));
            out.push(thread_groups(procs));
            out.push(parents(procs));
            out.push(pid_namespace(kernel, procs));
            out.push(runqueues(kernel, procs));
            out.push(address_spaces(procs));
            out.push(credentials(procs));
            out.push(executables(kernel, procs));
            out.push(mappings(kernel, procs));
        }
        Err(e) => {
            out.push(result(
                "tasks-list",
                Outcome::Fail,
                format!("the walk failed: {e}"),
            ));
            // every rule on the tasks list's processes (between it and the modules)
            for &rule in &RULES[2..RULES.len() - 3] {
                out.push(result(
                    rule,
                    Outcome::NotApplicable,
                    "no tasks list to compare",
                ));
            }
        }
    }
    out.push(modules(kernel, limits));
    out.push(syscall_table(kernel));
    out.push(idt(kernel));
    out
}

fn banner<M: PhysicalMemory>(k: &Kernel<M>) -> RuleResult {
    let want = k.profile().kernel.banner.trim_end();
    let at = match k.symbol("linux_banner") {
        Ok(a) => a,
        Err(e) => return result("banner", Outcome::NotApplicable, e.to_string()),
    };
    match k.space().read_cstr(at, 512) {
        Ok(got) if String::from_utf8_lossy(&got).trim_end() == want => result(
            "banner",
            Outcome::Pass,
            format!("linux_banner at {at} is the profile's"),
        ),
        Ok(got) => result(
            "banner",
            Outcome::Fail,
            format!(
                "linux_banner at {at} reads {:?}, the profile says {want:?}",
                vmi_core::kernel::escape(&got[..got.len().min(120)])
            ),
        ),
        Err(e) => result(
            "banner",
            Outcome::Fail,
            format!("linux_banner at {at}: {e}"),
        ),
    }
}

/// Every task's `tasks` links point back: `next->prev` is the task itself.
fn tasks_list<M: PhysicalMemory>(k: &Kernel<M>, procs: &[vmi_core::kernel::Process]) -> RuleResult {
    let Some(off) = k.profile().field("task_struct", "tasks").map(|f| f.offset) else {
        return result("tasks-list", Outcome::NotApplicable, "no task_struct.tasks");
    };
    let mut problems = Vec::new();
    let mut nodes: Vec<Va> = procs.iter().map(|p| p.task).collect();
    if let Ok(init) = k.symbol("init_task") {
        nodes.push(init);
    }
    for task in &nodes {
        let node = Va(task.0.wrapping_add(off));
        match k.space().read_va(node) {
            Ok(next) => match k.space().read_va(Va(next.0.wrapping_add(8))) {
                Ok(back) if back == node => {}
                Ok(back) => problems.push(format!(
                    "task {task}: tasks.next {next} points back to {back}, not {node}"
                )),
                Err(e) => problems.push(format!("task {task}: tasks.next {next}: {e}")),
            },
            Err(e) => problems.push(format!("task {task}: {e}")),
        }
    }
    if procs.len() < 2 {
        problems.push(format!("only {} task(s) on the list", procs.len()));
    }
    pass_or_fail(
        "tasks-list",
        problems,
        format!("{} tasks, every next->prev points back", procs.len()),
    )
}

fn task_names(procs: &[vmi_core::kernel::Process]) -> RuleResult {
    let mut problems = Vec::new();
    let mut n = 0;
    for p in procs {
        for t in &p.threads {
            n += 1;
            if !is_text(&t.comm) {
                problems.push(format!(
                    "tid {}: comm {:?}",
                    t.tid,
                    vmi_core::kernel::escape(&t.comm)
                ));
            }
        }
    }
    pass_or_fail("task-names", problems, format!("{n} names, all text"))
}

fn thread_groups(procs: &[vmi_core::kernel::Process]) -> RuleResult {
    let mut problems = Vec::new();
    let mut pids = BTreeSet::new();
    for p in procs {
        if p.pid != p.tgid {
            problems.push(format!("process {}: tgid {}", p.pid, p.tgid));
        }
        if !p.threads.iter().any(|t| t.tid == p.pid) {
            problems.push(format!(
                "process {}: its leader is not among its threads",
                p.pid
            ));
        }
        for t in &p.threads {
            if !pids.insert(t.tid) {
                problems.push(format!("tid {} twice", t.tid));
            }
        }
    }
    if !procs.iter().any(|p| p.pid == 1) {
        problems.push("no pid 1".into());
    }
    pass_or_fail(
        "thread-groups",
        problems,
        format!(
            "{} threads in {} groups, ids unique",
            pids.len(),
            procs.len()
        ),
    )
}

fn parents(procs: &[vmi_core::kernel::Process]) -> RuleResult {
    let pids: BTreeSet<u32> = procs.iter().map(|p| p.pid).collect();
    // only init and kthreadd are children of the idle task (pid 0)
    let problems: Vec<String> = procs
        .iter()
        .filter(|p| {
            if p.ppid == 0 {
                !matches!(p.pid, 1 | 2)
            } else {
                !pids.contains(&p.ppid)
            }
        })
        .map(|p| format!("process {}: parent {} is not on the list", p.pid, p.ppid))
        .collect();
    pass_or_fail(
        "parents",
        problems,
        "every parent is on the list (pid 0 only for init and kthreadd)".into(),
    )
}

/// The pid namespace's tasks are the tasks list's threads.
fn pid_namespace<M: PhysicalMemory>(
    k: &Kernel<M>,
    procs: &[vmi_core::kernel::Process],
) -> RuleResult {
    let view = match k.pid_namespace_tasks(&PidLimits::default()) {
        Ok(v) => v,
        Err(e) => {
            return result(
                "pid-namespace",
                Outcome::Fail,
                format!("the IDR walk failed: {e}"),
            )
        }
    };
    let idr: BTreeSet<u32> = view.tasks.iter().map(|t| t.tid).collect();
    let list: BTreeSet<u32> = procs
        .iter()
        .flat_map(|p| p.threads.iter().map(|t| t.tid))
        .collect();
    let mut problems = Vec::new();
    if let Some(t) = idr.difference(&list).next() {
        problems.push(format!(
            "{} tid(s) only in the pid namespace (e.g. {t})",
            idr.difference(&list).count()
        ));
    }
    if let Some(t) = list.difference(&idr).next() {
        problems.push(format!(
            "{} tid(s) only on the tasks list (e.g. {t})",
            list.difference(&idr).count()
        ));
    }
    pass_or_fail(
        "pid-namespace",
        problems,
        format!("{} tasks in both", idr.len()),
    )
}

fn runqueues<M: PhysicalMemory>(k: &Kernel<M>, procs: &[vmi_core::kernel::Process]) -> RuleResult {
    let running = match k.running() {
        Ok(r) => r,
        Err(e) => return result("runqueues", Outcome::NotApplicable, e.to_string()),
    };
    let tids: BTreeSet<u32> = procs
        .iter()
        .flat_map(|p| p.threads.iter().map(|t| t.tid))
        .collect();
    let problems: Vec<String> = running
        .iter()
        .filter(|r| {
            let idle = r.tid == 0 && r.comm.starts_with(b"swapper");
            !idle && !tids.contains(&r.tid)
        })
        .map(|r| {
            format!(
                "CPU {} runs tid {} ({:?}), on no list",
                r.cpu,
                r.tid,
                vmi_core::kernel::escape(&r.comm)
            )
        })
        .collect();
    pass_or_fail(
        "runqueues",
        problems,
        format!(
            "{} CPU(s), each running a known task or its idle task",
            running.len()
        ),
    )
}

/// Kernel threads have no address space, every other process has one in kernel memory.
fn address_spaces(procs: &[vmi_core::kernel::Process]) -> RuleResult {
    let mut problems = Vec::new();
    let (mut kthreads, mut users) = (0, 0);
    for p in procs {
        if p.is_kernel_thread() {
            kthreads += 1;
            if p.mm.0 != 0 {
                problems.push(format!("kernel thread {} has mm {}", p.pid, p.mm));
            }
        } else {
            users += 1;
            // the kernel half of the address space
            if p.mm.0 >> 63 == 0 {
                problems.push(format!("process {}: mm {}", p.pid, p.mm));
            }
        }
    }
    if kthreads == 0 || users == 0 {
        problems.push(format!("{kthreads} kernel threads and {users} processes"));
    }
    pass_or_fail(
        "address-spaces",
        problems,
        format!("{users} processes with an mm, {kthreads} kernel threads without"),
    )
}

/// Kernel threads run as root; ids are in range (below 2^31, as the kernel's own
/// ranges are).
fn credentials(procs: &[vmi_core::kernel::Process]) -> RuleResult {
    let mut problems = Vec::new();
    for p in procs {
        let ids = [p.uid, p.gid, p.euid, p.egid];
        if p.is_kernel_thread() && ids != [0; 4] {
            problems.push(format!("kernel thread {}: ids {ids:?}", p.pid));
        } else if ids.iter().any(|&i| i >= 1 << 31) {
            problems.push(format!("process {}: ids {ids:?}", p.pid));
        }
    }
    if !procs.iter().any(|p| p.pid == 1 && p.uid == 0) {
        problems.push("init does not run as root".into());
    }
    pass_or_fail(
        "credentials",
        problems,
        "kernel threads and init root, every id in range".into(),
    )
}

/// Every process's executable is an absolute path of text, through its mm's exe_file,
/// the file's path and the mounts and dentries above it.
fn executables<M: PhysicalMemory>(
    k: &Kernel<M>,
    procs: &[vmi_core::kernel::Process],
) -> RuleResult {
    let mut problems = Vec::new();
    let mut n = 0;
    for p in procs.iter().filter(|p| !p.is_kernel_thread()) {
        match k.exe_path(p.mm) {
            Ok(Some(path)) if path.starts_with(b"/") && is_text(&path) => n += 1,
            // an exec in progress, or a process whose file is gone
            Ok(None) => {}
            Ok(Some(path)) => problems.push(format!(
                "process {}: executable {:?}",
                p.pid,
                vmi_core::kernel::escape(&path)
            )),
            Err(e) => problems.push(format!("process {}: {e}", p.pid)),
        }
    }
    if n == 0 {
        problems.push("no process has a readable executable".into());
    }
    pass_or_fail(
        "executables",
        problems,
        format!("{n} executables, absolute paths"),
    )
}

/// Most processes whose mappings are walked (a sample is enough to catch an offset).
const MAPPED: usize = 32;

/// Each process's mappings (up to [`MAPPED`] processes) are sorted, in user space and
/// not empty, and one of them is executable.
fn mappings<M: PhysicalMemory>(k: &Kernel<M>, procs: &[vmi_core::kernel::Process]) -> RuleResult {
    const VM_EXEC: u64 = 0x4;
    let mut problems = Vec::new();
    let mut n = 0;
    for p in procs.iter().filter(|p| !p.is_kernel_thread()).take(MAPPED) {
        match k.vmas(p.mm) {
            Ok(vmas) => {
                n += 1;
                let sorted = vmas
                    .windows(2)
                    .all(|w| w[0].start < w[0].end && w[0].end <= w[1].start);
                let user = vmas.iter().all(|v| v.end <= 1 << 56);
                let exec = vmas.iter().any(|v| v.flags & VM_EXEC != 0);
                if vmas.is_empty() || !sorted || !user || !exec {
                    problems.push(format!(
                        "process {}: {} mappings (sorted {sorted}, in user space {user}, one executable {exec})",
                        p.pid,
                        vmas.len()
                    ));
                }
            }
            Err(e) => problems.push(format!("process {}: {e}", p.pid)),
        }
    }
    pass_or_fail(
        "mappings",
        problems,
        format!("{n} processes' mappings sorted, in user space, with code"),
    )
}

/// Listed modules have text names, code in the module area, and a kobject in the kset.
fn modules<M: PhysicalMemory>(k: &Kernel<M>, limits: &Limits) -> RuleResult {
    let mods = match k.modules(limits) {
        Ok(m) => m,
        Err(e) => return result("modules", Outcome::Fail, format!("the walk failed: {e}")),
    };
    let mut problems = Vec::new();
    for m in &mods {
        if !is_text(&m.name) {
            problems.push(format!("module at {}: name {:?}", m.addr, m.display_name()));
        }
        if !vmi_core::kernel::syscalls::in_module_area(m.core_base) {
            problems.push(format!(
                "module {}: code at {}, outside the module area",
                m.display_name(),
                m.core_base
            ));
        }
    }
    match k.module_kobjects(limits.max_modules) {
        Ok(kobjs) => {
            let in_kset: BTreeSet<Vec<u8>> = kobjs
                .iter()
                .filter(|o| o.module.is_some())
                .map(|o| o.name.clone())
                .collect();
            let listed: BTreeSet<Vec<u8>> = mods.iter().map(|m| m.name.clone()).collect();
            for name in listed.symmetric_difference(&in_kset) {
                problems.push(format!(
                    "module {:?} is {}",
                    vmi_core::kernel::escape(name),
                    if listed.contains(name) {
                        "listed but not in the kset"
                    } else {
                        "in the kset but not listed"
                    }
                ));
            }
        }
        Err(e) => problems.push(format!("the module kset walk failed: {e}")),
    }
    pass_or_fail(
        "modules",
        problems,
        format!(
            "{} modules, named, in the module area and in the kset",
            mods.len()
        ),
    )
}

/// Most of the table points into kernel text (a hooked entry or two is `check`'s
/// business; a wrong symbol or length reads no table at all).
fn syscall_table<M: PhysicalMemory>(k: &Kernel<M>) -> RuleResult {
    let (tables, text) = match (k.syscall_tables(), k.text_range()) {
        (Ok(t), Ok(r)) => (t, r),
        (Err(e), _) | (_, Err(e)) => {
            return result("syscall-table", Outcome::NotApplicable, e.to_string())
        }
    };
    let Some(x64) = tables.first() else {
        return result("syscall-table", Outcome::NotApplicable, "no table");
    };
    let inside = x64.entries.iter().filter(|&&e| text.contains(e)).count();
    let n = x64.entries.len();
    if n >= 300 && inside * 10 >= n * 9 {
        result(
            "syscall-table",
            Outcome::Pass,
            format!("{inside} of {n} entries in kernel text"),
        )
    } else {
        result(
            "syscall-table",
            Outcome::Fail,
            format!("only {inside} of {n} entries in kernel text"),
        )
    }
}

fn idt<M: PhysicalMemory>(k: &Kernel<M>) -> RuleResult {
    let (gates, text) = match (k.idt(), k.text_range()) {
        (Ok((_, g)), Ok(r)) => (g, r),
        (Err(e), _) | (_, Err(e)) => return result("idt", Outcome::NotApplicable, e.to_string()),
    };
    let present: Vec<_> = gates.iter().filter(|g| g.present).collect();
    let inside = present.iter().filter(|g| text.contains(g.target)).count();
    if present.len() >= 32 && inside * 10 >= present.len() * 9 {
        result(
            "idt",
            Outcome::Pass,
            format!("{inside} of {} present gates in kernel text", present.len()),
        )
    } else {
        result(
            "idt",
            Outcome::Fail,
            format!("{inside} of {} present gates in kernel text", present.len()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::synthetic::system;

    /// The profile of `sk` with `ty.field` moved by `by` bytes (the kernel's memory
    /// keeps the real offset): a wrong profile.
    fn shift(sk: &mut vmi_core::testing::SyntheticKernel, ty: &str, field: &str, by: u64) {
        let f = sk
            .profile_mut()
            .types
            .get_mut(ty)
            .and_then(|t| t.fields.get_mut(field))
            .expect("the field");
        f.offset += by;
    }

    fn outcomes(sk: vmi_core::testing::SyntheticKernel) -> Vec<(&'static str, Outcome, String)> {
        let k = sk.discover().expect("discover");
        verify(&k, &Limits::default())
            .into_iter()
            .map(|r| (r.rule, r.outcome, r.detail))
            .collect()
    }

    fn failed(sk: vmi_core::testing::SyntheticKernel) -> Vec<&'static str> {
        outcomes(sk)
            .into_iter()
            .filter(|(_, o, _)| *o == Outcome::Fail)
            .map(|(r, _, _)| r)
            .collect()
    }

    #[test]
    fn a_clean_kernel_passes_every_rule() {
        let got = outcomes(system().sk);
        let rules: Vec<&str> = got.iter().map(|r| r.0).collect();
        assert_eq!(rules, RULES);
        for (rule, outcome, detail) in &got {
            assert_eq!(*outcome, Outcome::Pass, "{rule}: {detail}");
        }
    }

    #[test]
    fn names_that_are_not_text_fail() {
        let mut s = system();
        s.sk.write_field(s.bash.task, "task_struct", "comm", b"\x90\x90\xeb\xfe\0");
        assert_eq!(failed(s.sk), vec!["task-names"]);
    }

    #[test]
    fn wrong_tgid_and_parent_offsets() {
        // (init_task's pid and comm are checked at discovery: a profile wrong there is
        // refused before any rule runs)
        let mut s = system();
        shift(&mut s.sk, "task_struct", "tgid", 8);
        let f = failed(s.sk);
        assert!(f.contains(&"thread-groups"), "{f:?}");
        // real_parent + 8 is `parent`, the same task in a process nobody traces: no
        // rule can tell, and no result depends on the difference; + 0x10 (the children
        // list) breaks the walk
        let mut s = system();
        shift(&mut s.sk, "task_struct", "real_parent", 8);
        assert!(failed(s.sk).is_empty());
        let mut s = system();
        shift(&mut s.sk, "task_struct", "real_parent", 0x10);
        assert_eq!(failed(s.sk), vec!["tasks-list"]);
        // a parent that is not on the list
        let mut s = system();
        let sshd = s.sshd.task;
        for f in ["real_parent", "parent"] {
            s.sk.set(s.bash.task, "task_struct", f, sshd.0 + 0x2000);
        }
        assert!(failed(s.sk).contains(&"parents"));
    }

    #[test]
    fn a_hidden_process_fails_the_namespace_rule_only() {
        let mut s = system();
        s.sk.unlink_task(&s.sshd);
        assert_eq!(failed(s.sk), vec!["pid-namespace"]);
    }

    #[test]
    fn a_module_off_the_list_and_a_broken_link() {
        let mut s = system();
        s.sk.hide_module(&s.e1000);
        // bash's tasks.next->prev no longer points back
        let tasks = s.sk.field_va(s.bash.task, "task_struct", "tasks");
        let next = s.sk.read_u64(tasks);
        s.sk.write_u64(Va(next + 8), 0xffff_8880_dead_0000);
        let f = failed(s.sk);
        assert!(f.contains(&"modules") && f.contains(&"tasks-list"), "{f:?}");
    }
}
