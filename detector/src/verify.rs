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
use vmi_core::kernel::syscalls::in_module_area;
use vmi_core::kernel::{escape, Kernel, Limits, START_KERNEL_MAP};
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
    "symbols",
    "tasks-list",
    "task-names",
    "thread-groups",
    "parents",
    "task-values",
    "pid-namespace",
    "runqueues",
    "address-spaces",
    "credentials",
    "executables",
    "mappings",
    "process-memory",
    "open-files",
    "sockets",
    "bpf",
    "modules",
    "module-values",
    "syscall-table",
    "idt",
    "walks",
];

/// Most processes in state running on no run queue and no CPU that `runqueues` allows.
const STRAY: usize = 2;

/// `PF_EXITING`: the task runs `do_exit`.
const PF_EXITING: u32 = 0x4;

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
    let mut out = vec![banner(kernel), symbols(kernel)];
    let processes = kernel.processes(limits);
    match &processes {
        Ok(procs) => {
            out.push(tasks_list(kernel, procs));
            out.push(task_names(procs));
            out.push(thread_groups(procs));
            out.push(parents(procs));
            out.push(task_values(procs));
            out.push(pid_namespace(kernel, procs));
            out.push(runqueues(kernel, procs));
            out.push(address_spaces(procs));
            out.push(credentials(kernel, procs));
            out.push(executables(kernel, procs));
            out.push(mappings(kernel, procs));
            out.push(process_memory(kernel, procs));
            out.push(open_files(kernel, procs));
            out.push(sockets(kernel, procs));
            out.push(bpf(kernel, procs));
        }
        Err(e) => {
            out.push(result(
                "tasks-list",
                Outcome::Fail,
                format!("the walk failed: {e}"),
            ));
            // every rule on the tasks list's processes (between it and the modules)
            let first = RULES
                .iter()
                .position(|&r| r == "tasks-list")
                .map_or(0, |i| i + 1);
            let end = RULES.iter().position(|&r| r == "modules").unwrap_or(first);
            for &rule in RULES.get(first..end).unwrap_or_default() {
                out.push(result(
                    rule,
                    Outcome::NotApplicable,
                    "no tasks list to compare",
                ));
            }
        }
    }
    out.push(modules(kernel, limits));
    out.push(module_values(kernel, limits));
    out.push(syscall_table(kernel));
    out.push(idt(kernel));
    out.push(walks(kernel, limits));
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

/// Every needed symbol of the profile is where the kernel's own kallsyms tables (read
/// with the profile's `kallsyms_*` symbols) put a symbol of that name.
fn symbols<M: PhysicalMemory>(k: &Kernel<M>) -> RuleResult {
    const RULE: &str = "symbols";
    if k.profile().symbol("kallsyms_names").is_none() {
        return result(
            RULE,
            Outcome::NotApplicable,
            "the profile does not name the kernel's kallsyms tables",
        );
    }
    let table = match k.kallsyms() {
        Ok(t) => t,
        Err(e) => {
            return result(
                RULE,
                Outcome::Fail,
                format!("the kernel's kallsyms tables do not read at the profile's symbols: {e}"),
            )
        }
    };
    let shift = k.placement().virt_shift;
    let (mut problems, mut found) = (Vec::new(), 0);
    for needed in vmi_core::profile::needs::symbols() {
        let Some((name, link)) = needed
            .aliases
            .iter()
            .find_map(|a| Some((*a, k.profile().symbol(a)?)))
        else {
            continue;
        };
        // zero-based per-CPU symbols are not relocated (as `Kernel::per_cpu` reads them)
        let at = if link < START_KERNEL_MAP {
            link
        } else {
            link.wrapping_add(shift)
        };
        let names = match table.names_at(k.space(), Va(at)) {
            Ok(n) => n,
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        // the tables themselves are not in kallsyms before 6.x's later releases: that
        // they decode into the names of every other symbol is their check
        if names.iter().any(|n| n == name.as_bytes())
            || names.is_empty() && name.starts_with("kallsyms_")
        {
            found += 1;
            continue;
        }
        let there = match (names.first(), table.lookup(k.space(), Va(at))) {
            (Some(n), _) => format!("the kernel's symbol there is {}", escape(n)),
            (None, Ok(Some((n, off)))) => format!("that is {}+{off:#x}", escape(&n)),
            (None, _) => "no symbol is there".to_string(),
        };
        problems.push(format!("{name} at {at:#x}: {there}"));
    }
    pass_or_fail(
        RULE,
        problems,
        format!(
            "{found} symbols where the kernel's kallsyms puts them ({} in its table)",
            table.len()
        ),
    )
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

/// Every task's state is one the kernel sets (bits below `TASK_STATE_MAX`, 0x10000),
/// its exit state is `EXIT_ZOMBIE`, `EXIT_DEAD`, both or none, and a process started no
/// earlier than its parent (start times are the monotonic clock).
fn task_values(procs: &[vmi_core::kernel::Process]) -> RuleResult {
    let mut problems = Vec::new();
    let start: std::collections::BTreeMap<u32, u64> =
        procs.iter().map(|p| (p.pid, p.start_time)).collect();
    for p in procs {
        if p.state >= 0x10000 {
            problems.push(format!("process {}: state {:#x}", p.pid, p.state));
        }
        if !matches!(p.exit_state, 0 | 0x10 | 0x20 | 0x30) {
            problems.push(format!("process {}: exit state {:#x}", p.pid, p.exit_state));
        }
        if let Some(&parent) = start.get(&p.ppid) {
            if p.ppid != 0 && p.start_time < parent {
                problems.push(format!(
                    "process {} started at {} ns, before its parent {} ({} ns)",
                    p.pid, p.start_time, p.ppid, parent
                ));
            }
        }
    }
    // init starts after the kernel's own set-up
    if procs.iter().any(|p| p.pid == 1 && p.start_time == 0) {
        problems.push("init started at 0 ns".into());
    }
    pass_or_fail(
        "task-values",
        problems,
        "states and exit states the kernel sets, every process started after its parent".into(),
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

/// Each CPU runs a task of the lists (or its idle task), and the processes whose state
/// is `TASK_RUNNING` are queued on a run queue or running on a CPU: a task that sleeps
/// is taken off its queue, one that runs or waits for a CPU is on it. A few may be on
/// neither as the walk sees them (a group throttled by its CPU quota is off its
/// parent's tree, a migration between queues, the stop class's queue), so the rule
/// fails on more than [`STRAY`] such processes and more than a quarter of all: a state
/// read at the wrong offset reads running for nearly every task.
fn runqueues<M: PhysicalMemory>(k: &Kernel<M>, procs: &[vmi_core::kernel::Process]) -> RuleResult {
    let running = match k.running() {
        Ok(r) => r,
        Err(e) => return result("runqueues", Outcome::NotApplicable, e.to_string()),
    };
    let tids: BTreeSet<u32> = procs
        .iter()
        .flat_map(|p| p.threads.iter().map(|t| t.tid))
        .collect();
    let mut problems: Vec<String> = running
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
    let mut detail = format!(
        "{} CPU(s), each running a known task or its idle task",
        running.len()
    );
    // the queues' walk needs the scheduler's layout; without it only the CPUs are compared
    if let Ok(queued) = k.queued() {
        let on_cpu: BTreeSet<u64> = running
            .iter()
            .map(|r| r.task.0)
            .chain(queued.iter().map(|q| q.task.0))
            .collect();
        let stray: Vec<&vmi_core::kernel::Process> = procs
            .iter()
            .filter(|p| p.state == 0 && p.exit_state == 0 && !on_cpu.contains(&p.task.0))
            .collect();
        let too_many = stray.len() > STRAY && stray.len() * 4 > procs.len();
        if let (true, Some(p)) = (too_many, stray.first()) {
            problems.push(format!(
                "{} process(es) in state running on no run queue and no CPU (e.g. {} {:?}; {} queued, {} running)",
                stray.len(),
                p.pid,
                p.name(),
                queued.len(),
                running.len()
            ));
        }
        let sleeping = procs.iter().filter(|p| p.state != 0).count();
        detail = format!(
            "{detail}; the processes in state running are queued or running ({} queued, {sleeping} sleeping, {} on neither)",
            queued.len(),
            stray.len()
        );
    }
    pass_or_fail("runqueues", problems, detail)
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
/// ranges are); each credential's `user` is the `user_struct` of its real uid.
fn credentials<M: PhysicalMemory>(
    k: &Kernel<M>,
    procs: &[vmi_core::kernel::Process],
) -> RuleResult {
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
    // a cred's user is the user_struct of its real uid
    for p in procs.iter().take(MAPPED * 4) {
        match k.task_creds(p.task) {
            Ok(c) => {
                for ids in [&c.real, &c.subjective] {
                    if ids.user_uid != ids.uid {
                        problems.push(format!(
                            "process {}: cred {} has uid {} and its user_struct {} uid {}",
                            p.pid, ids.addr, ids.uid, ids.user, ids.user_uid
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!("process {}: {e}", p.pid)),
        }
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

/// The offset of `ty.field` in the profile.
fn offset<M: PhysicalMemory>(k: &Kernel<M>, ty: &str, field: &str) -> Option<u64> {
    k.profile().field(ty, field).map(|f| f.offset)
}

/// The 8 bytes at `base + off`.
fn word<M: PhysicalMemory>(k: &Kernel<M>, base: u64, off: u64) -> Result<u64, String> {
    k.space()
        .read_u64(Va(base.wrapping_add(off)))
        .map_err(|e| format!("{:#x}: {e}", base.wrapping_add(off)))
}

/// An address in the kernel's half.
fn kernel_pointer(v: u64) -> bool {
    v >= 0xffff_8000_0000_0000
}

/// Each process's memory layout agrees with its mappings (up to [`MAPPED`] processes):
/// the stack pointer and the arguments and environment lie in one growing-down
/// mapping, the heap's bounds are in order and a mapping holds them, the executable is
/// mapped from offset 0 by the same `file` as `exe_file`, and the vDSO is named by its
/// special mapping.
fn process_memory<M: PhysicalMemory>(
    k: &Kernel<M>,
    procs: &[vmi_core::kernel::Process],
) -> RuleResult {
    const RULE: &str = "process-memory";
    const VM_GROWSDOWN: u64 = 0x100;
    let fields = [
        "start_brk",
        "brk",
        "start_stack",
        "arg_start",
        "arg_end",
        "env_end",
        "exe_file",
    ];
    let Some(offs) = fields
        .iter()
        .map(|f| offset(k, "mm_struct", f))
        .collect::<Option<Vec<u64>>>()
    else {
        return result(
            RULE,
            Outcome::NotApplicable,
            "the profile lacks mm_struct's bounds",
        );
    };
    let (mut problems, mut n) = (Vec::new(), 0);
    for p in procs
        .iter()
        .filter(|p| !p.is_kernel_thread() && p.mm.0 != 0)
        .take(MAPPED)
    {
        let vals: Result<Vec<u64>, String> = offs.iter().map(|&o| word(k, p.mm.0, o)).collect();
        let (vals, maps) = match (vals, k.maps(p.mm)) {
            (Ok(v), Ok(m)) => (v, m),
            (Err(e), _) => {
                problems.push(format!("process {}: mm_struct {e}", p.pid));
                continue;
            }
            (_, Err(e)) => {
                problems.push(format!("process {}: {e}", p.pid));
                continue;
            }
        };
        let [start_brk, brk, start_stack, arg_start, arg_end, env_end, exe] = vals[..] else {
            continue;
        };
        // in the middle of execve: the new mm's bounds are not all set yet
        if arg_end == 0 || env_end == 0 || maps.is_empty() {
            continue;
        }
        n += 1;
        let mut bad = Vec::new();
        let holder = |a: u64| maps.iter().find(|m| m.vma.start <= a && a < m.vma.end);
        match holder(start_stack) {
            Some(st) if st.vma.flags & VM_GROWSDOWN != 0 => {
                let inside = |a: u64| st.vma.start <= a && a <= st.vma.end;
                // argc and the pointer arrays lie below the strings; since 5.18 there
                // is always an argument (an empty argv gets ""), and every kernel's
                // processes have one in practice
                let ordered = start_stack < arg_start && arg_start < arg_end && arg_end <= env_end;
                if !(ordered && inside(arg_start) && inside(env_end)) {
                    bad.push(format!(
                        "arguments {arg_start:#x}..{arg_end:#x}, environment end {env_end:#x} outside the stack {:#x}..{:#x}",
                        st.vma.start, st.vma.end
                    ));
                }
            }
            _ => bad.push(format!(
                "start_stack {start_stack:#x} is in no stack mapping"
            )),
        }
        // the arguments and the environment are NUL-terminated strings, the arguments
        // after the zeroed gap `create_elf_tables` leaves below them
        for (at, what) in [
            (arg_start.wrapping_sub(1), "the byte before the arguments"),
            (arg_end.wrapping_sub(1), "the arguments' last byte"),
            (env_end.wrapping_sub(1), "the environment's last byte"),
        ] {
            match k.user_bytes(p.mm, at, 1) {
                Ok(vmi_core::kernel::vma::UserBytes::Resident(b))
                    if b.first().is_some_and(|&c| c != 0) =>
                {
                    bad.push(format!("{what} ({at:#x}) is {:#04x}, not NUL", b[0]))
                }
                Ok(_) => {}
                Err(e) => bad.push(format!("{what} ({at:#x}): {e}")),
            }
        }
        // execve's file name lies just above the environment: a path, not a variable
        if let Ok(Some(strings)) = k.exec_strings(p.mm) {
            if let Some(f) = strings.execfn.filter(|f| f.is_empty() || f.contains(&b'=')) {
                bad.push(format!(
                    "the file name at the environment's end reads {:?}",
                    escape(&f)
                ));
            }
        }
        if start_brk > brk {
            bad.push(format!(
                "heap {start_brk:#x}..{brk:#x} ends before it starts"
            ));
        } else if brk > start_brk {
            let heap: Vec<_> = maps
                .iter()
                .filter(|m| m.vma.start < brk && m.vma.end > start_brk)
                .collect();
            // the heap is anonymous writable memory: no file, no stack
            let anon = |m: &&vmi_core::kernel::vma::MapsEntry| {
                m.vma.file.0 == 0 && m.vma.flags & (VM_GROWSDOWN | 0x2) == 0x2
            };
            if heap.is_empty() || !heap.iter().all(anon) {
                bad.push(format!(
                    "the heap {start_brk:#x}..{brk:#x} is in {} mappings, not all anonymous and writable",
                    heap.len()
                ));
            }
        }
        let mut own = maps.iter().filter(|m| m.vma.file.0 == exe && exe != 0);
        match own.next() {
            Some(first) if first.vma.pgoff == 0 => {}
            Some(first) => bad.push(format!(
                "the executable's first mapping {:#x} is at file page {:#x}, not 0",
                first.vma.start, first.vma.pgoff
            )),
            None if exe != 0 => bad.push("no mapping of the executable's file".into()),
            None => {}
        }
        if !maps.iter().any(
            |m| matches!(&m.name, vmi_core::kernel::vma::MapName::Special(n) if n == b"[vdso]"),
        ) {
            bad.push("no [vdso] mapping".into());
        }
        if !bad.is_empty() {
            problems.push(format!("process {}: {}", p.pid, bad.join(", ")));
        }
    }
    pass_or_fail(
        RULE,
        problems,
        format!("{n} processes' stacks, arguments, heaps, executables and vDSOs where their mappings are"),
    )
}

/// Most file descriptors read per process by [`open_files`].
const FDS: u64 = 256;

/// Each process that is not exiting has a file table (up to [`MAPPED`] processes and
/// [`FDS`] descriptors each): its size is a multiple of 64, and every open file has an
/// inode whose mapping is the file's, on the superblock of the file's mount, and
/// operations in the kernel.
fn open_files<M: PhysicalMemory>(k: &Kernel<M>, procs: &[vmi_core::kernel::Process]) -> RuleResult {
    const RULE: &str = "open-files";
    let names = [
        ("file", "f_inode"),
        ("file", "f_op"),
        ("file", "f_mapping"),
        ("file", "f_path"),
        ("path", "mnt"),
        ("vfsmount", "mnt_sb"),
        ("inode", "i_mapping"),
        ("inode", "i_sb"),
    ];
    let Some(o) = names
        .iter()
        .map(|(t, f)| offset(k, t, f))
        .collect::<Option<Vec<u64>>>()
    else {
        return result(
            RULE,
            Outcome::NotApplicable,
            "the profile lacks the file table's fields",
        );
    };
    let socket_ops = k.symbol("socket_file_ops").ok().map(|v| v.0);
    let (mut problems, mut files, mut tables) = (Vec::new(), 0, 0);
    let mut sbs = std::collections::BTreeMap::new();
    // init always holds its console (and it is first among the processes)
    let (mut init_table, mut init_files) = (false, false);
    for p in procs.iter().filter(|p| !p.is_kernel_thread()).take(MAPPED) {
        let (fd, max) = match k.fd_table(p.task) {
            Err(e @ vmi_core::kernel::KernelError::MissingField(_)) => {
                return result(RULE, Outcome::NotApplicable, e.to_string())
            }
            Err(e) => {
                problems.push(format!("process {}: {e}", p.pid));
                continue;
            }
            // the kernel drops the table in do_exit, after it set PF_EXITING
            Ok(None) if p.flags & PF_EXITING != 0 || p.exit_state != 0 => continue,
            Ok(None) => {
                problems.push(format!(
                    "process {}: no files table, and it is not exiting",
                    p.pid
                ));
                continue;
            }
            Ok(Some(t)) => {
                if t.fdt.0 == 0 || t.fd.0 == 0 {
                    problems.push(format!(
                        "process {}: files {}, fdtable {}, fd array {}",
                        p.pid, t.files, t.fdt, t.fd
                    ));
                    continue;
                }
                if t.max_fds == 0 || t.max_fds % 64 != 0 || t.max_fds > 1 << 24 {
                    problems.push(format!("process {}: max_fds {}", p.pid, t.max_fds));
                    continue;
                }
                (t.fd.0, u64::from(t.max_fds))
            }
        };
        tables += 1;
        init_table |= p.pid == 1;
        for i in 0..max.min(FDS) {
            // the file's super block when there is a file
            let check = || -> Result<Option<u64>, String> {
                let f = word(k, fd, i * 8)?;
                if f == 0 {
                    return Ok(None);
                }
                let (inode, ops, mapping, mnt) = (
                    word(k, f, o[0])?,
                    word(k, f, o[1])?,
                    word(k, f, o[2])?,
                    word(k, f, o[3] + o[4])?,
                );
                if !kernel_pointer(inode) || !kernel_pointer(ops) || !kernel_pointer(mnt) {
                    return Err(format!("f_inode {inode:#x}, f_op {ops:#x}, mount {mnt:#x}"));
                }
                let (i_mapping, i_sb, sb) = (
                    word(k, inode, o[6])?,
                    word(k, inode, o[7])?,
                    word(k, mnt, o[5])?,
                );
                if mapping != i_mapping {
                    return Err(format!(
                        "f_mapping {mapping:#x}, its inode's {i_mapping:#x}"
                    ));
                }
                if i_sb != sb || !kernel_pointer(sb) {
                    return Err(format!(
                        "its inode's superblock {i_sb:#x}, its mount's {sb:#x}"
                    ));
                }
                if Some(ops) == socket_ops {
                    socket_file(k, f)?;
                }
                Ok(Some(sb))
            };
            match check() {
                Ok(Some(sb)) => {
                    files += 1;
                    init_files |= p.pid == 1;
                    sbs.entry(sb).or_insert(p.pid);
                }
                Ok(None) => {}
                Err(e) => problems.push(format!("process {} fd {i}: {e}", p.pid)),
            }
        }
    }
    if tables > 0 && files == 0 {
        problems.push(format!("{tables} file tables and not one open file"));
    }
    problems.extend(devices(k, &sbs));
    if init_table && !init_files {
        problems.push("init has no open file".into());
    }
    pass_or_fail(
        RULE,
        problems,
        format!("{files} open files of {tables} processes on their mounts' superblocks"),
    )
}

/// In-memory file systems, whose super blocks take an anonymous device number (major
/// 0): proc, sysfs, tmpfs, ramfs, sockfs, pipefs, anon_inodefs, devpts, debugfs,
/// tracefs, cgroup, cgroup2, bpf, securityfs, mqueue, nsfs, hugetlbfs.
const ANONYMOUS_FS: [u64; 17] = [
    0x9fa0,
    0x6265_6572,
    0x0102_1994,
    0x8584_58f6,
    0x534f_434b,
    0x5049_5045,
    0x0904_1934,
    0x1cd1,
    0x6462_6720,
    0x7472_6163,
    0x0027_e0eb,
    0x6367_7270,
    0xcafe_4a11,
    0x7363_6673,
    0x1980_0202,
    0x6e73_6673,
    0x9584_58f6,
];

/// The device numbers of the open files' super blocks (as `lsof` and `maps` print
/// them), each super block read once: a device number is one super block's, so it has
/// one file system type (one `s_magic`), and an in-memory file system's is anonymous
/// (major 0). `sbs` are the super blocks with the first process that has a file on each.
fn devices<M: PhysicalMemory>(
    k: &Kernel<M>,
    sbs: &std::collections::BTreeMap<u64, u32>,
) -> Vec<String> {
    let (Some(dev_at), Some(magic_at)) = (
        offset(k, "super_block", "s_dev"),
        offset(k, "super_block", "s_magic"),
    ) else {
        return Vec::new();
    };
    let mut magic_of: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
    let mut problems = Vec::new();
    for (&sb, &pid) in sbs {
        let dev = k.space().read_u32(Va(sb.wrapping_add(dev_at)));
        let (Ok(dev), Ok(magic)) = (dev, word(k, sb, magic_at)) else {
            problems.push(format!("process {pid}: super block {sb:#x} unreadable"));
            continue;
        };
        let (major, minor) = (dev >> 20, dev & 0xf_ffff);
        if ANONYMOUS_FS.contains(&magic) && major != 0 {
            problems.push(format!(
                "process {pid}: a file of file system {magic:#x} (in memory) on device {major}:{minor}"
            ));
        }
        match magic_of.get(&dev) {
            Some(&m) if m != magic => problems.push(format!(
                "device {major}:{minor} holds files of file systems {m:#x} and {magic:#x}"
            )),
            Some(_) => {}
            None => {
                magic_of.insert(dev, magic);
            }
        }
    }
    problems
}

/// A socket's file: its `private_data` is a `socket` whose `sk` has an address family
/// and a type the kernel has (every family, not only the internet's).
fn socket_file<M: PhysicalMemory>(k: &Kernel<M>, file: u64) -> Result<(), String> {
    let offs = [
        offset(k, "file", "private_data"),
        offset(k, "socket", "sk"),
        offset(k, "sock", "__sk_common"),
        offset(k, "sock_common", "skc_family"),
        offset(k, "sock", "sk_type"),
    ];
    let [Some(private), Some(sk), Some(common), Some(family), Some(ty)] = offs else {
        return Ok(());
    };
    let socket = word(k, file, private)?;
    let sock = word(k, socket, sk)?;
    if !kernel_pointer(socket) || !kernel_pointer(sock) {
        return Err(format!(
            "a socket file's socket {socket:#x}, sock {sock:#x}"
        ));
    }
    let u16_at = |off: u64| {
        k.space()
            .read_u16(Va(sock.wrapping_add(off)))
            .map_err(|e| format!("sock {sock:#x}: {e}"))
    };
    let (fam, t) = (u16_at(common + family)?, u16_at(ty)?);
    // AF_UNIX 1 .. AF_MAX; SOCK_STREAM 1 .. SOCK_SEQPACKET 5, SOCK_DCCP 6, SOCK_PACKET 10
    if !(1..46).contains(&fam) || !matches!(t, 1..=6 | 10) {
        return Err(format!("sock {sock:#x}: family {fam}, type {t}"));
    }
    Ok(())
}

/// Every socket of every process has a family, type, protocol and state the kernel
/// uses together, an inode number, and ports as its state has them (internet), a
/// printable path ended within `sun_path` (unix), a type its family has (packet,
/// netlink), and a filter of 1 to 4096 classic instructions or a loaded eBPF program.
fn sockets<M: PhysicalMemory>(k: &Kernel<M>, procs: &[vmi_core::kernel::Process]) -> RuleResult {
    const RULE: &str = "sockets";
    let (mut problems, mut n, mut inet, mut filters) = (Vec::new(), 0, 0, 0);
    let mut inodes = std::collections::BTreeMap::new();
    for p in procs.iter().filter(|p| !p.is_kernel_thread()) {
        let socks = match k.sockets(p.task) {
            Ok(s) => s,
            Err(
                e @ (vmi_core::kernel::KernelError::MissingField(_)
                | vmi_core::kernel::KernelError::MissingSymbol(_)),
            ) => return result(RULE, Outcome::NotApplicable, e.to_string()),
            Err(e) => {
                problems.push(format!("process {}: {e}", p.pid));
                continue;
            }
        };
        for s in socks {
            n += 1;
            // one socket in two processes (a fork's) is one inode of one sock
            if *inodes.entry(s.inode).or_insert(s.sock.0) != s.sock.0 {
                problems.push(format!(
                    "process {} fd {}: inode {} is another socket's",
                    p.pid, s.fd, s.inode
                ));
            }
            let numbered = s.inode != 0 && s.inode <= u64::from(u32::MAX);
            if let Some(why) = socket_implausible(&s).or((!numbered).then_some("no inode number")) {
                problems.push(format!(
                    "process {} fd {}: {why}: family {}, type {}, protocol {}, state {}, inode {}, {} to {}",
                    p.pid,
                    s.fd,
                    s.family,
                    s.sock_type,
                    s.protocol,
                    s.state,
                    s.inode,
                    crate::render::local_end(&s),
                    crate::render::endpoint(&s.remote),
                ));
            }
            inet += usize::from(s.is_inet());
            filters += usize::from(s.filter.is_some());
        }
    }
    if n == 0 && problems.is_empty() {
        return result(RULE, Outcome::NotApplicable, "no socket open");
    }
    pass_or_fail(
        RULE,
        problems,
        format!(
            "{n} sockets ({inet} internet, {filters} filtered) with families, types, states, ports, names and filters that go together"
        ),
    )
}

/// What about a socket no kernel makes (`None`: nothing).
fn socket_implausible(s: &vmi_core::kernel::sockets::Socket) -> Option<&'static str> {
    use vmi_core::kernel::sockets::{Detail, Filter, UNIX_PATH_MAX};
    let family_fits = match &s.detail {
        Detail::Inet => {
            matches!(
                (s.sock_type, s.protocol),
                (1, 6 | 132 | 262) | (2, 17 | 136 | 1 | 58) | (3, 0..=255) | (5, 132)
            ) && (1..=12).contains(&s.state)
        }
        // SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET; protocol 0 or PF_UNIX; connected,
        // unconnected, listening
        Detail::Unix { .. } => {
            matches!(s.sock_type, 1 | 2 | 5) && s.protocol <= 1 && matches!(s.state, 1 | 7 | 10)
        }
        // SOCK_DGRAM, SOCK_RAW, SOCK_PACKET
        Detail::Packet { .. } => matches!(s.sock_type, 2 | 3 | 10),
        // SOCK_DGRAM, SOCK_RAW; MAX_LINKS
        Detail::Netlink { .. } => matches!(s.sock_type, 2 | 3) && s.protocol < 32,
        Detail::Other => true,
    };
    if !family_fits {
        return Some("a family, type, protocol and state no kernel uses together");
    }
    // TCP listens on a port with no peer; a connection has both ends; an unconnected
    // UDP socket has no peer
    let (local, remote) = (&s.local, &s.remote);
    let ports = !s.is_inet()
        || match (s.protocol, s.state) {
            (6, 10) => local.1 != 0 && remote.1 == 0 && remote.0.is_unspecified(),
            (6, 1) => {
                local.1 != 0
                    && remote.1 != 0
                    && !local.0.is_unspecified()
                    && !remote.0.is_unspecified()
            }
            (17, 7) => remote.1 == 0 && remote.0.is_unspecified(),
            _ => true,
        };
    if !ports {
        return Some("ports its state does not have");
    }
    // a path is printable and ends (NUL) within sun_path; an abstract name is bytes
    if let Detail::Unix { name: Some(name) } = &s.detail {
        let path = name.first().is_some_and(|&b| b != 0);
        let printable = name.iter().all(|&c| c >= 0x20 && c != 0x7f);
        if path && (name.len() >= UNIX_PATH_MAX || !printable) {
            return Some("a unix path that is not a printable string ended within sun_path");
        }
        if name.is_empty() {
            return Some("a bound unix socket without a name");
        }
    }
    match &s.filter {
        Some(Filter::Classic { len, .. }) if !(1..=4096).contains(len) => {
            Some("a classic filter of no instructions or more than BPF_MAXINSNS")
        }
        // BPF_COMPLEXITY_LIMIT_INSNS; a program of prog_idr has an id
        Some(Filter::Ebpf { id, len, .. }) if *id == 0 || !(1..=1_000_000).contains(len) => {
            Some("an eBPF filter without an id or with no or too many instructions")
        }
        _ => None,
    }
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
/// BPF names: letters, digits, `_` and `.` (as `bpf_obj_name_cpy` accepts).
fn bpf_name(b: &[u8]) -> bool {
    b.iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
}

/// Every BPF program and link has the id of its place in its IDR, a type of the
/// kernel's enums, a name of the characters the kernel accepts, and (programs) a tag, a
/// load time and JIT code in the module area (where the kernel allocates executable
/// memory); a link's program and a perf event's are
/// programs of the IDR, and perf events name their PMU and event.
fn bpf<M: PhysicalMemory>(k: &Kernel<M>, procs: &[vmi_core::kernel::Process]) -> RuleResult {
    const RULE: &str = "bpf";
    let (view, (progs, links)) = match (k.bpf(procs), k.bpf_indexes()) {
        (Ok(v), Ok(i)) => (v, i),
        (Err(e), _) | (_, Err(e)) => {
            if k.profile().symbol("prog_idr").is_none() {
                return result(RULE, Outcome::NotApplicable, e.to_string());
            }
            return result(RULE, Outcome::Fail, format!("the walk failed: {e}"));
        }
    };
    if view.programs.is_empty() && view.links.is_empty() && view.perf_events.is_empty() {
        return result(
            RULE,
            Outcome::NotApplicable,
            "no BPF program, link or perf event",
        );
    }
    let base = |idr: &'static str| -> u64 {
        let Some(off) = offset(k, "idr", "idr_base") else {
            return 0;
        };
        k.symbol(idr)
            .ok()
            .and_then(|at| k.space().read_u32(Va(at.0.wrapping_add(off))).ok())
            .map_or(0, u64::from)
    };
    let known = |e: &str, v: u32, max: u32| match k.profile().enums.get(e) {
        Some(vals) => vals
            .iter()
            .any(|(n, &x)| x == i64::from(v) && !n.starts_with("__MAX")),
        None => v < max,
    };
    let mut problems = Vec::new();
    let (pb, lb) = (base("prog_idr"), base("link_idr"));
    let at_index =
        |list: &[(u64, Va)], at: Va| list.iter().find(|(_, a)| *a == at).map(|(i, _)| *i);
    for p in &view.programs {
        let mut bad = Vec::new();
        if at_index(&progs, p.at).map(|i| i + pb) != Some(u64::from(p.id)) {
            bad.push(format!("id {} is not its IDR index", p.id));
        }
        if !known("bpf_prog_type", p.prog_type, 64) || p.prog_type == 0 {
            bad.push(format!("type {}", p.prog_type));
        }
        if !known("bpf_attach_type", p.expected_attach_type, 128) {
            bad.push(format!("expected attach type {}", p.expected_attach_type));
        }
        if !bpf_name(&p.name) || !bpf_name(&p.attach_func_name) && !is_text(&p.attach_func_name) {
            bad.push(format!("name {:?}", escape(&p.name)));
        }
        if p.tag == [0; 8] {
            bad.push("tag 0".into());
        }
        if p.load_time == 0 || p.load_time >= 1 << 62 {
            bad.push(format!("load time {}", p.load_time));
        }
        if p.jited_len == 0 || p.jited_len >= 1 << 24 || !in_module_area(p.image) {
            bad.push(format!("JIT code {} of {} bytes", p.image, p.jited_len));
        }
        if p.dst_prog.0 != 0 && !kernel_pointer(p.dst_prog.0) {
            bad.push(format!("target program {}", p.dst_prog));
        }
        if !bad.is_empty() {
            problems.push(format!("program at {}: {}", p.at, bad.join(", ")));
        }
    }
    let is_prog = |at: Va| view.programs.iter().any(|p| p.at == at);
    for l in &view.links {
        if at_index(&links, l.at).map(|i| i + lb) != Some(u64::from(l.id))
            || !known("bpf_link_type", l.link_type, 32)
            || l.link_type == 0
            || !is_prog(l.prog)
        {
            problems.push(format!(
                "link at {}: id {}, type {}, program {}",
                l.at, l.id, l.link_type, l.prog
            ));
        }
    }
    // what may attach a program of each type
    let prog_of = |at: Va| view.programs.iter().find(|p| p.at == at);
    for l in &view.links {
        let fits = match (l.type_label.as_str(), prog_of(l.prog)) {
            ("raw_tracepoint", Some(p)) => {
                p.type_label.starts_with("raw_tracepoint") || p.type_label == "tracing"
            }
            ("perf_event", Some(p)) => matches!(
                p.type_label.as_str(),
                "kprobe" | "tracepoint" | "perf_event"
            ),
            _ => true,
        };
        let ident = |b: &[u8]| b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_');
        if !fits || l.type_label == "raw_tracepoint" && !ident(&l.target) {
            problems.push(format!(
                "link {} ({}) holds a program of type {} for {:?}",
                l.id,
                l.type_label,
                prog_of(l.prog).map_or("?", |p| p.type_label.as_str()),
                escape(&l.target)
            ));
        }
    }
    for e in view.perf_events.iter().filter(|e| e.prog.0 != 0) {
        if let Some(p) = prog_of(e.prog) {
            if !matches!(
                p.type_label.as_str(),
                "kprobe" | "tracepoint" | "perf_event"
            ) {
                problems.push(format!(
                    "perf event at {} holds program {} of type {}",
                    e.at, p.id, p.type_label
                ));
            }
        }
    }
    for e in &view.perf_events {
        if !is_text(&e.pmu)
            || !e.event.is_empty() && !is_text(&e.event)
            || e.prog.0 != 0 && !is_prog(e.prog)
            || !kernel_pointer(e.overflow_handler.0)
        {
            problems.push(format!(
                "perf event at {} of tid {}: pmu {:?}, event {:?}, program {}, overflow handler {}",
                e.at,
                e.tid,
                escape(&e.pmu),
                escape(&e.event),
                e.prog,
                e.overflow_handler
            ));
        }
    }
    pass_or_fail(
        RULE,
        problems,
        format!(
            "{} programs, {} links and {} perf events, each consistent",
            view.programs.len(),
            view.links.len(),
            view.perf_events.len()
        ),
    )
}

/// Every listed module's state is one the kernel has (live, coming, going, unformed),
/// its core size is a whole number of pages below 1 GiB (before 6.4, holding the
/// module's own struct), and its `mkobj.mod` points back at it; every registered
/// ftrace_ops's trampoline is in the module area with a size, or absent.
fn module_values<M: PhysicalMemory>(k: &Kernel<M>, limits: &Limits) -> RuleResult {
    const RULE: &str = "module-values";
    let mods = match k.modules(limits) {
        Ok(m) => m,
        Err(e) => return result(RULE, Outcome::Fail, format!("the walk failed: {e}")),
    };
    if mods.is_empty() {
        return result(RULE, Outcome::NotApplicable, "no module listed");
    }
    let back = offset(k, "module", "mkobj").zip(offset(k, "module_kobject", "mod"));
    let mut problems = Vec::new();
    for m in &mods {
        let name = m.display_name();
        if m.state > 3 {
            problems.push(format!("module {name}: state {}", m.state));
        }
        if m.core_size == 0 || m.core_size % 4096 != 0 || m.core_size >= 1 << 30 {
            problems.push(format!("module {name}: core size {}", m.core_size));
        }
        // before 6.4 (core_layout) the core holds text and data, `struct module` too
        if k.profile().field("module", "core_layout").is_some()
            && !(m.core_base.0..m.core_base.0.saturating_add(u64::from(m.core_size)))
                .contains(&m.addr.0)
        {
            problems.push(format!(
                "module {name}: its struct at {} is outside its core {}+{:#x}",
                m.addr, m.core_base, m.core_size
            ));
        }
        if let Some((mkobj, modp)) = back {
            match word(k, m.addr.0, mkobj + modp) {
                Ok(v) if v == m.addr.0 => {}
                Ok(v) => problems.push(format!("module {name} at {}: mkobj.mod is {v:#x}", m.addr)),
                Err(e) => problems.push(format!("module {name}: mkobj.mod {e}")),
            }
        }
    }
    if let Ok(ops) = k.ftrace_ops() {
        for o in ops.iter().filter(|o| o.trampoline.0 != 0) {
            if !in_module_area(o.trampoline)
                || o.trampoline_size == 0
                || o.trampoline_size > 1 << 20
            {
                problems.push(format!(
                    "ftrace_ops {}: trampoline {} of {} bytes",
                    o.addr, o.trampoline, o.trampoline_size
                ));
            }
        }
    }
    pass_or_fail(
        RULE,
        problems,
        format!(
            "{} modules with known states, whole pages, and kobjects that point back",
            mods.len()
        ),
    )
}

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

/// Every check walks what it reads without meeting a structure no kernel builds: no
/// check fails, and none reports a broken list, an unreadable or undecodable object, a
/// struct pid whose number is not its place in the pid namespace, or
/// a function pointer into memory that holds no code (neither kernel text nor the module
/// area: the heap is not executable) (the policy and the kernel image are not needed). A rootkit that corrupts a list fails
/// this rule too; `check` says where.
fn walks<M: PhysicalMemory>(k: &Kernel<M>, limits: &Limits) -> RuleResult {
    let settings = crate::checks::Settings {
        limits: *limits,
        policy: None,
        image: None,
    };
    // kernel-entries reads kernel text, no structure (and its symbols are the symbols
    // rule's): it is left out
    let walking: Vec<crate::checks::Check> = crate::checks::Check::ALL
        .into_iter()
        .filter(|c| *c != crate::checks::Check::KernelEntries)
        .collect();
    let report = crate::checks::run_once(k, &[], &walking, &settings);
    // a check the profile cannot feed does not apply (a kernel without networking)
    let mut problems: Vec<String> = report
        .errors
        .iter()
        .filter(|e| !e.source.profile_lacks())
        .map(|e| e.to_string())
        .collect();
    problems.extend(
        report
            .findings
            .iter()
            .filter(|f| {
                [
                    ":broken:",
                    ":unreadable",
                    ":undecodable",
                    ":bogus",
                    ":pid-mismatch:",
                ]
                .iter()
                .any(|m| f.key.contains(m)) || f.evidence.iter().any(|(k, v)| {
                    *k == "owner"
                        && matches!(v, crate::finding::Evidence::Text(t) if t == "unknown memory")
                }) || f.evidence.iter().any(|(k, v)| {
                    *k == "rule"
                        && matches!(v, crate::finding::Evidence::Text(t) if t == "unreadable")
                })
            })
            .map(|f| f.summary.clone()),
    );
    pass_or_fail(
        "walks",
        problems,
        format!(
            "{} checks read their structures, none broken",
            report.ran.len()
        ),
    )
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
        // the synthetic kernel has no kallsyms tables, sockets or BPF objects
        let absent = ["symbols", "sockets", "bpf"];
        for (rule, outcome, detail) in &got {
            let want = if absent.contains(rule) {
                Outcome::NotApplicable
            } else {
                Outcome::Pass
            };
            assert_eq!(*outcome, want, "{rule}: {detail}");
        }
    }

    /// The sockets rule on a system with a socket of each family and filters: it
    /// passes, and a classic filter longer than BPF_MAXINSNS, an unprintable unix
    /// path, a netlink socket of a stream type and an eBPF filter without an id fail it.
    #[test]
    fn sockets_of_every_family_and_their_filters() {
        use vmi_core::kernel::sockets::{AF_INET, AF_NETLINK, AF_PACKET, AF_UNIX, SOCK_RAW};
        let insn = [[0x06u8, 0, 0, 0, 0, 0, 0, 0]];
        let sockets = |bad: usize| {
            let mut s = system();
            let t = &s.bash;
            let pkt = s.sk.add_socket(t, 3, (AF_PACKET, SOCK_RAW, 0x0300, 7), 901);
            s.sk.attach_cbpf(pkt, &insn, if bad == 1 { 4097 } else { 1 });
            let u = s.sk.add_socket(t, 4, (AF_UNIX, 1, 0, 10), 902);
            s.sk.bind_unix(
                u,
                if bad == 2 {
                    b"/run/\x1b[2J"
                } else {
                    b"/run/x.sock"
                },
            );
            let u = s.sk.add_socket(t, 5, (AF_UNIX, 2, 0, 7), 903);
            s.sk.bind_unix(u, b"\0abstract\x01");
            let nl_type = if bad == 3 { 1 } else { 3 };
            s.sk.add_socket(t, 6, (AF_NETLINK, nl_type, 0, 7), 904);
            let raw = s.sk.add_socket(t, 7, (AF_INET, SOCK_RAW, 1, 7), 905);
            let prog =
                s.sk.add_bpf_prog(if bad == 4 { 0 } else { 7 }, 1, b"f", [0; 8]);
            s.sk.set_u32(prog, "bpf_prog", "len", 5);
            s.sk.attach_prog(raw, prog);
            let got = outcomes(s.sk);
            got.into_iter()
                .find(|r| r.0 == "sockets")
                .expect("the rule")
        };
        let (_, outcome, detail) = sockets(0);
        assert_eq!(outcome, Outcome::Pass, "{detail}");
        assert!(
            detail.starts_with("5 sockets (1 internet, 2 filtered)"),
            "{detail}"
        );
        for bad in 1..=4 {
            let (_, outcome, detail) = sockets(bad);
            assert_eq!(outcome, Outcome::Fail, "{bad}: {detail}");
        }
    }

    #[test]
    fn task_values_out_of_the_kernels_range_fail() {
        let mut s = system();
        s.sk.set_u32(s.sshd.task, "task_struct", "__state", 0x20000);
        assert_eq!(failed(s.sk), vec!["task-values"]);
        let mut s = system();
        s.sk.set_u32(s.sshd.task, "task_struct", "exit_state", 0x40);
        assert_eq!(failed(s.sk), vec!["task-values"]);
        // sshd (a child of init) started before init
        let mut s = system();
        s.sk.set(s.sshd.task, "task_struct", "start_time", 1);
        let init = s.sk.get(s.sshd.task, "task_struct", "real_parent");
        s.sk.set(Va(init), "task_struct", "start_time", 5_000_000_000);
        assert_eq!(failed(s.sk), vec!["task-values"]);
    }

    /// A process in state running that no run queue holds and no CPU runs fails
    /// `runqueues`, so does the state read one word early (every task reads running);
    /// queued on the fair or the real-time queue, or running, it passes.
    #[test]
    fn running_processes_are_queued_or_on_a_cpu() {
        // one (a throttled group's, a migrating task) is allowed; three of four are not
        let mut s = system();
        s.sk.set_u32(s.sshd.task, "task_struct", "__state", 0);
        assert!(failed(s.sk).is_empty());
        let mut s = system();
        for t in [s.sshd.task, s.bash.task, s.bash_thread.task] {
            s.sk.set_u32(t, "task_struct", "__state", 0);
        }
        let init = s.sk.get(s.sshd.task, "task_struct", "real_parent");
        s.sk.set_u32(Va(init), "task_struct", "__state", 0);
        assert_eq!(failed(s.sk), vec!["runqueues"]);
        let mut s = system();
        let (sshd, bash) = (s.sshd, s.bash);
        s.sk.enqueue(&sshd);
        s.sk.enqueue_rt(&bash, 10);
        assert!(failed(s.sk).is_empty());
        let mut s = system();
        s.sk.set_running(s.sshd.task);
        assert!(failed(s.sk).is_empty());
        let mut s = system();
        let at = s.sk.offset("task_struct", "__state");
        s.sk.profile_mut()
            .types
            .get_mut("task_struct")
            .and_then(|t| t.fields.get_mut("__state"))
            .expect("__state")
            .offset = at - 8;
        let got = outcomes(s.sk);
        let rq = got.iter().find(|r| r.0 == "runqueues").expect("runqueues");
        assert_eq!(rq.1, Outcome::Fail, "{}", rq.2);
        assert!(
            rq.2.contains("in state running on no run queue"),
            "{}",
            rq.2
        );
    }

    /// A live process without a file table fails `open-files` (the table read one word
    /// off, where most tasks hold null); one in do_exit (`PF_EXITING`) has none.
    #[test]
    fn a_live_process_without_files_fails() {
        let mut s = system();
        s.sk.set(s.sshd.task, "task_struct", "files", 0);
        assert_eq!(failed(s.sk), vec!["open-files"]);
        let mut s = system();
        s.sk.set(s.sshd.task, "task_struct", "files", 0);
        let flags = s.sk.get(s.sshd.task, "task_struct", "flags") as u32;
        s.sk.set_u32(s.sshd.task, "task_struct", "flags", flags | PF_EXITING);
        assert!(failed(s.sk).is_empty());
    }

    /// The open files' device numbers: an in-memory file system's is anonymous, and
    /// one device holds one file system; pipes and sockets on their own anonymous
    /// devices pass.
    #[test]
    fn device_numbers_of_open_files() {
        use vmi_core::kernel::openfiles::{PIPEFS_MAGIC, SOCKFS_MAGIC};
        let files = |dev: Option<u32>, same: bool| {
            let mut s = system();
            let pipe = s.sk.pseudo_file(PIPEFS_MAGIC, b"");
            let sock = s.sk.pseudo_file(SOCKFS_MAGIC, b"");
            let sb = |s: &crate::checks::synthetic::System, f: Va| {
                let inode = s.sk.get(f, "file", "f_inode");
                Va(s.sk.get(Va(inode), "inode", "i_sb"))
            };
            if let Some(dev) = dev {
                let at = sb(&s, pipe);
                s.sk.set_u32(at, "super_block", "s_dev", dev);
            }
            if same {
                let dev = s.sk.get(sb(&s, pipe), "super_block", "s_dev") as u32;
                let at = sb(&s, sock);
                s.sk.set_u32(at, "super_block", "s_dev", dev);
            }
            let fops = s.sk.symbol("tty_fops");
            for f in [pipe, sock] {
                s.sk.set(f, "file", "f_op", fops.0);
            }
            let bash = s.bash;
            s.sk.open_fd(&bash, 3, pipe);
            s.sk.open_fd(&bash, 4, sock);
            let got = outcomes(s.sk);
            let r = got
                .iter()
                .find(|r| r.0 == "open-files")
                .expect("open-files");
            (r.1, r.2.clone())
        };
        let (o, d) = files(None, false);
        assert_eq!(o, Outcome::Pass, "{d}");
        let (o, d) = files(Some(8 << 20 | 1), false);
        assert_eq!(o, Outcome::Fail);
        assert!(d.contains("(in memory) on device 8:1"), "{d}");
        let (o, d) = files(None, true);
        assert_eq!(o, Outcome::Fail);
        assert!(d.contains("holds files of file systems"), "{d}");
    }

    #[test]
    fn process_memory_out_of_its_mappings_fails() {
        for (field, by) in [("start_stack", 0x10_0000u64), ("arg_start", 0x10_0000)] {
            let mut s = system();
            let v = s.sk.get(s.bash_mm, "mm_struct", field);
            s.sk.set(s.bash_mm, "mm_struct", field, v - by);
            // (arguments out of the stack are also unreadable to spoofing: walks)
            let f = failed(s.sk);
            assert!(f.contains(&"process-memory"), "{field}: {f:?}");
        }
        // no argument at all: arg_end read where arg_start is
        let mut s = system();
        let start = s.sk.get(s.bash_mm, "mm_struct", "arg_start");
        s.sk.set(s.bash_mm, "mm_struct", "arg_end", start);
        assert!(failed(s.sk).contains(&"process-memory"));
        // the heap's bounds swapped
        let mut s = system();
        s.sk.set(s.bash_mm, "mm_struct", "start_brk", 0x60_0000);
        s.sk.set(s.bash_mm, "mm_struct", "brk", 0x50_0000);
        assert_eq!(failed(s.sk), vec!["process-memory"]);
        // exe_file is another file: no mapping of the executable's file
        let mut s = system();
        let sshd_mm = s.sk.get(s.sshd.task, "task_struct", "mm");
        let other = s.sk.get(Va(sshd_mm), "mm_struct", "exe_file");
        s.sk.set(s.bash_mm, "mm_struct", "exe_file", other);
        assert!(failed(s.sk).contains(&"process-memory"));
        // the executable's first mapping is not from its start
        let mut s = system();
        let first = s.sk.get(s.bash_mm, "mm_struct", "mmap");
        s.sk.set(Va(first), "vm_area_struct", "vm_pgoff", 5);
        assert!(failed(s.sk).contains(&"process-memory"));
    }

    #[test]
    fn a_module_without_its_kobject_or_state_fails() {
        let mut s = system();
        shift(&mut s.sk, "module_kobject", "mod", 8);
        assert!(failed(s.sk).contains(&"module-values"));
        let mut s = system();
        s.sk.set_u32(s.e1000.addr, "module", "state", 7);
        assert_eq!(failed(s.sk), vec!["module-values"]);
    }

    #[test]
    fn a_check_the_profile_cannot_feed_does_not_fail_walks() {
        // a kernel built without networking: its profile has no net_namespace_list
        let mut s = system();
        s.sk.profile_mut().symbols.remove("net_namespace_list");
        let got = outcomes(s.sk);
        let walks = got.iter().find(|r| r.0 == "walks").expect("walks");
        assert_eq!(walks.1, Outcome::Pass, "{}", walks.2);
        // nor without socket_file_ops (the lab's tinyconfig Rust kernel): socket-filter
        // cannot run, rather than finding every process's sockets unreadable
        let mut s = system();
        s.sk.profile_mut().symbols.remove("socket_file_ops");
        let got = outcomes(s.sk);
        let walks = got.iter().find(|r| r.0 == "walks").expect("walks");
        assert_eq!(walks.1, Outcome::Pass, "{}", walks.2);
    }

    #[test]
    fn a_cred_whose_user_is_another_uid_fails() {
        let mut s = system();
        let cred = s.sk.get(s.bash.task, "task_struct", "real_cred");
        let user = s.sk.get(Va(cred), "cred", "user");
        s.sk.set_u32(Va(user), "user_struct", "uid", 4242);
        assert!(failed(s.sk).contains(&"credentials"));
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
        assert_eq!(failed(s.sk), vec!["tasks-list", "walks"]);
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
