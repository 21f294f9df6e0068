//! The intrusion checks.
//!
//! Each check compares two views the kernel keeps of the same thing, or a kernel table
//! with where its entries must point, and returns [`Finding`]s:
//!
//! | check | what it compares |
//! |---|---|
//! | `hidden-process` ([`processes`]) | the `tasks` list (and thread lists) with the pid namespace IDR, the CPUs' current tasks and run queues; breaks in any of them; tasks' flags for a rootkit's mark ([`marks`]) |
//! | `hidden-module` ([`modules`]) | the `modules` list (read from both ends where broken) with the kobjects of `module_kset` and the module tree |
//! | `syscall-table` ([`syscalls`]) | every `sys_call_table` (and `ia32_sys_call_table`) entry with kernel text |
//! | `idt` ([`idt`]) | every IDT gate with kernel text and `__KERNEL_CS`; each vCPU's IDTR with `idt_table` |
//! | `credentials` ([`creds`]) | user tasks' credentials with `init_cred` and with their `user_struct` |
//! | `ftrace` ([`ftrace`]) | every registered `ftrace_ops`' callbacks with kernel text |
//! | `kprobes` ([`kprobes`]) | every kprobe's and kretprobe's handlers with kernel text |
//! | `tracepoints` ([`tracepoints`]) | every probe on the kernel's tracepoints with kernel text |
//! | `netfilter` ([`netfilter`]) | every netfilter hook of every network namespace with kernel text |
//! | `notifiers` ([`notifiers`]) | the callbacks of security-relevant notifier chains (keyboard, modules, network, ...) with kernel text |
//! | `tty` ([`tty`]) | the operations of tty line disciplines, tty drivers and open ttys with kernel text |
//! | `afinfo` ([`afinfo`]) | the seq_file operations of `/proc/net/{tcp,udp,raw}*` with kernel text |
//! | `vfs-ops` ([`vfs`]) | the file, inode, dentry, super block and address space operations of every mount's root and every open file with kernel text and read-only data (or the module implementing the file system), a procfs root's with `proc_root_operations` |
//! | `spoofing` ([`spoofing`]) | each user process's `comm` and `argv[0]` with its executable and the file name it was executed by |
//! | `exec-location` ([`exec_location`]) | each user process's executable and executable mappings with where programs are installed: a memfd, a deleted file, a world-writable directory |
//! | `socket-filter` ([`socket_filter`]) | the BPF filter of every packet and raw socket of a user process with the programs allowed one (packet capture, DHCP; the policy's list): a passive backdoor's wake-up filter |
//! | `ptrace` ([`ptrace`]) | every thread of a user process traced (`PT_PTRACED`, `parent` not `real_parent`) with the tracers the policy allows (by default installed debuggers: gdb, strace, ...): injection |
//! | `preload` ([`preload`]) | each user process's environment with the loader's variables (`LD_PRELOAD`, `LD_AUDIT`, `LD_LIBRARY_PATH`), and the page cache with `/etc/ld.so.preload`: user-space rootkits that ride the loader (Symbiote, Kitsune) |
//! | `malfind` ([`malfind`]) | each user process's executable mappings with where code comes from: writable and executable, or anonymous and executable, memory (injected code) |
//! | `perf-events` ([`perf_events`]) | the overflow handler of every perf event in a CPU's or a task's context (kernel counters, hardware breakpoints) with kernel text |
//! | `kernel-pages` ([`pages`]) | the kernel's page tables: text and read-only data not writable (nor their direct-map aliases), no writable executable mapping in the kernel image's and the module area |
//! | `kthreads` ([`kthreads`]) | the function every kernel thread runs (its `struct kthread`'s `threadfn`) with kernel text and the listed modules |
//! | `cpu-state` ([`cpu`]) | each vCPU's CR0.WP, pinned CR4 bits, EFER.NX and system-call MSRs with what the kernel set (only what the source reports; the rest is said in `not_checked`) |
//! | `ebpf` ([`ebpf`]) | every loaded BPF program (`prog_idr`) with the program types the policy lists (by default those on kprobes, tracepoints, perf events, fentry/fexit, LSM hooks), with its links and perf events |
//! | `policy` ([`policy`]) | processes with the policy file (names, executables, who may be root, listening sockets); only with a policy |
//! | `kernel-entries` ([`entries`]) | the first instruction of every kernel function (kallsyms in guest memory) with kernel text: a branch out of it that no ftrace_ops or static call accounts for |
//! | `kernel-text` ([`text`]) | `.text` and `.rodata` with the kernel image, patch sites accounted for; only with an image |
//!
//! [`Scan`] reads what several checks share (processes, modules, module kobjects,
//! ftrace_ops, network namespaces) once, and names kernel functions on demand ([`names`]). A check that cannot run (a read fails, the profile lacks a field) reports a
//! [`CheckError`] and the others still run.

pub mod afinfo;
pub(crate) mod broken;
pub mod cpu;
pub mod creds;
pub mod ebpf;
pub mod entries;
pub mod exec_location;
pub mod ftrace;
pub mod idt;
pub mod kprobes;
pub mod kthreads;
pub mod malfind;
pub(crate) mod marks;
pub mod modules;
pub mod names;
pub mod netfilter;
pub mod notifiers;
pub mod owner;
pub mod pages;
pub mod perf_events;
pub mod policy;
pub mod preload;
pub mod processes;
pub mod ptrace;
pub mod socket_filter;
pub mod spoofing;
#[cfg(test)]
pub(crate) mod synthetic;
pub mod syscalls;
pub mod text;
pub mod tracepoints;
pub mod tty;
pub mod vfs;

use std::collections::BTreeSet;

use vmi_core::arch::x86_64::Registers;
use vmi_core::kernel::census::ModuleList;
use vmi_core::kernel::ftrace::FtraceOps;
use vmi_core::kernel::objects::FnTable;
use vmi_core::kernel::{Census, Kernel, KernelError, Limits, Process};
use vmi_core::memory::PhysicalMemory;
use vmi_core::Va;

use crate::finding::Finding;
use crate::image::KernelImage;
use crate::policy::Policy;
pub use owner::{Owner, Owners};

/// The checks, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
    /// Tasks hidden from the `tasks` list or from the pid namespace.
    HiddenProcess,
    /// Modules hidden from the `modules` list.
    HiddenModule,
    /// System call table entries outside kernel text.
    SyscallTable,
    /// IDT gates outside kernel text, IDTR elsewhere.
    Idt,
    /// Credentials shared with `init_cred` or rewritten.
    Credentials,
    /// ftrace callbacks outside kernel text.
    Ftrace,
    /// kprobe and kretprobe handlers outside kernel text.
    Kprobes,
    /// Tracepoint probes outside kernel text.
    Tracepoints,
    /// Netfilter hooks outside kernel text.
    Netfilter,
    /// Notifier callbacks outside kernel text.
    Notifiers,
    /// TTY line discipline and driver operations outside kernel text.
    Tty,
    /// `/proc/net` socket-list operations outside kernel text.
    Afinfo,
    /// VFS operation tables (files, inodes, dentries, super blocks) outside the kernel.
    VfsOps,
    /// Processes whose name or `argv[0]` is not what they run.
    Spoofing,
    /// Executables and libraries run from a memfd, a deleted file or a world-writable
    /// directory.
    ExecLocation,
    /// Executable memory that is writable or anonymous (injected code).
    Malfind,
    /// The loader's preload variables in a process's environment, and
    /// `/etc/ld.so.preload`.
    Preload,
    /// Processes traced by a program that is not an allowed debugger (injection).
    Ptrace,
    /// BPF filters on packet and raw sockets of programs not allowed one.
    SocketFilter,
    /// Perf event overflow handlers outside kernel text.
    PerfEvents,
    /// BPF programs of listed types (tracing and security hooks).
    Ebpf,
    /// vCPU protections and system-call entries the kernel did not set.
    CpuState,
    /// Kernel threads running code outside the kernel and the listed modules.
    Kthreads,
    /// Kernel text and read-only data mapped writable (also through the direct map),
    /// and writable executable kernel mappings.
    KernelPages,
    /// Kernel functions whose first instruction branches out of kernel text (no image
    /// needed).
    KernelEntries,
    /// What the policy file forbids (runs only with a policy).
    Policy,
    /// Kernel text and read-only data against the image (runs only with an image).
    KernelText,
}

impl Check {
    /// Every check that needs no configuration, in the order they run.
    pub const ALL: [Check; 25] = [
        Check::HiddenProcess,
        Check::HiddenModule,
        Check::SyscallTable,
        Check::Idt,
        Check::Credentials,
        Check::Ftrace,
        Check::Kprobes,
        Check::Tracepoints,
        Check::Netfilter,
        Check::Notifiers,
        Check::Tty,
        Check::Afinfo,
        Check::VfsOps,
        Check::Spoofing,
        Check::ExecLocation,
        Check::Malfind,
        Check::Preload,
        Check::Ptrace,
        Check::SocketFilter,
        Check::PerfEvents,
        Check::Ebpf,
        Check::CpuState,
        Check::Kthreads,
        Check::KernelPages,
        Check::KernelEntries,
    ];

    /// The check's name in findings and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Check::HiddenProcess => "hidden-process",
            Check::HiddenModule => "hidden-module",
            Check::SyscallTable => "syscall-table",
            Check::Idt => "idt",
            Check::Credentials => "credentials",
            Check::Ftrace => "ftrace",
            Check::Kprobes => "kprobes",
            Check::Tracepoints => "tracepoints",
            Check::Netfilter => "netfilter",
            Check::Notifiers => "notifiers",
            Check::Tty => "tty",
            Check::Afinfo => "afinfo",
            Check::VfsOps => "vfs-ops",
            Check::Spoofing => "spoofing",
            Check::ExecLocation => "exec-location",
            Check::Malfind => "malfind",
            Check::Preload => "preload",
            Check::Ptrace => "ptrace",
            Check::SocketFilter => "socket-filter",
            Check::PerfEvents => "perf-events",
            Check::Ebpf => "ebpf",
            Check::CpuState => "cpu-state",
            Check::Kthreads => "kthreads",
            Check::KernelPages => "kernel-pages",
            Check::KernelEntries => "kernel-entries",
            Check::Policy => "policy",
            Check::KernelText => "kernel-text",
        }
    }

    /// The check named `name`.
    pub fn from_name(name: &str) -> Option<Check> {
        Check::ALL
            .into_iter()
            .chain([Check::Policy, Check::KernelText])
            .find(|c| c.name() == name)
    }
}

/// What the checks are run with.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Walk bounds.
    pub limits: Limits,
    /// The policy (the `policy` check fails without one).
    pub policy: Option<Policy>,
    /// The kernel image (the `kernel-text` check fails without one).
    pub image: Option<std::sync::Arc<KernelImage>>,
}

/// Why a check could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckFailure {
    /// A read or the profile failed the check itself.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A walk the check needs failed.
    #[error("it needs {walk}, which failed: {error}")]
    Walk {
        /// The walk.
        walk: &'static str,
        /// Its error.
        error: String,
    },
}

impl CheckFailure {
    /// True when the profile lacks what the check reads (a partial profile, or a kernel
    /// built without the feature), not when the guest's memory failed it.
    pub fn profile_lacks(&self) -> bool {
        match self {
            CheckFailure::Kernel(KernelError::MissingSymbol(_) | KernelError::MissingField(_)) => {
                true
            }
            // a shared walk's error, as `KernelError::Missing*` displays itself
            CheckFailure::Walk { error, .. } => error.starts_with("the profile has no "),
            CheckFailure::Kernel(_) => false,
        }
    }
}

/// A check that could not run.
#[derive(Debug, thiserror::Error)]
#[error("{check}: {source}")]
pub struct CheckError {
    /// The check's name.
    pub check: &'static str,
    /// Why.
    pub source: CheckFailure,
}

/// What one run of the checks found.
#[derive(Debug, Default)]
pub struct Report {
    /// Findings, in check order.
    pub findings: Vec<Finding>,
    /// Checks that could not run.
    pub errors: Vec<CheckError>,
    /// The checks that ran to the end.
    pub ran: Vec<Check>,
    /// What a check that ran could not look at with this source (e.g. MSRs a QEMU
    /// monitor does not report): (check, what and why).
    pub not_checked: Vec<(&'static str, String)>,
}

impl Report {
    /// The outcome of check `c`: its findings (bounded), or why it could not run.
    pub fn add(&mut self, c: Check, outcome: Result<Vec<Finding>, CheckFailure>) {
        match outcome {
            Ok(f) => {
                self.findings.extend(bounded(c.name(), f));
                self.ran.push(c);
            }
            Err(source) => {
                // a structure found corrupted stops the check: that is a finding too
                if let CheckFailure::Kernel(e) = &source {
                    if broken::is_manipulation(e) {
                        self.findings.push(broken::check_stopped(c.name(), e));
                    }
                }
                self.errors.push(CheckError {
                    check: c.name(),
                    source,
                });
            }
        }
    }
}

/// What the checks share, read once per scan.
pub struct Scan<'k, M> {
    /// The kernel.
    pub kernel: &'k Kernel<M>,
    /// What the checks run with.
    pub settings: &'k Settings,
    /// vCPU registers (empty for dumps without CPU state).
    pub registers: &'k [Registers],
    /// The processes of every view (the `tasks` list from both ends, the pid IDR, the
    /// CPUs' current tasks), with where a view broke.
    pub census: Result<Census, KernelError>,
    /// The `modules` list, from both ends where it is broken.
    pub modules: Result<ModuleList, KernelError>,
    /// The registered ftrace_ops.
    pub ftrace: Result<Vec<FtraceOps>, KernelError>,
    /// The network namespaces (`struct net`), read when a check first needs them.
    pub namespaces: std::sync::OnceLock<Result<Vec<Va>, KernelError>>,
    /// Who owns kernel addresses (text, listed and hidden modules, ftrace
    /// trampolines).
    pub owners: Owners,
    /// What `module_kset` holds beyond the `modules` list.
    pub kset: Result<modules::KsetView, CheckFailure>,
    /// Names of kernel functions, looked up when a finding needs one.
    pub names: names::Names,
    /// What the checks could not look at ([`Report::not_checked`]).
    pub not_checked: std::sync::Mutex<Vec<(&'static str, String)>>,
}

/// Most module kobjects walked.
pub const MAX_KOBJECTS: usize = 1 << 14;

impl<'k, M: PhysicalMemory> Scan<'k, M> {
    /// Read the shared views.
    pub fn new(kernel: &'k Kernel<M>, registers: &'k [Registers], settings: &'k Settings) -> Self {
        Scan::with_census(kernel, registers, settings, kernel.census(&settings.limits))
    }

    /// Read the shared views, the processes' census already read (by `watch`, which
    /// reports process starts and exits from it).
    pub fn with_census(
        kernel: &'k Kernel<M>,
        registers: &'k [Registers],
        settings: &'k Settings,
        census: Result<Census, KernelError>,
    ) -> Self {
        let modules = kernel.modules_salvaged(&settings.limits);
        let kset = match &modules {
            Ok(list) => modules::kset_view(kernel, &list.modules).map_err(CheckFailure::from),
            Err(e) => Err(CheckFailure::Walk {
                walk: "the modules list",
                error: e.to_string(),
            }),
        };
        let mut owners = Owners::new(
            kernel.text_range().ok(),
            modules
                .as_ref()
                .map(|l| l.modules.as_slice())
                .unwrap_or(&[]),
            kset.iter()
                .flat_map(|k| k.hidden.iter().map(|h| &h.module).chain(&k.tree_only)),
        );
        let ftrace = kernel.ftrace_ops();
        if let Ok(ops) = &ftrace {
            owners.add_ftrace_trampolines(ops);
        }
        Scan {
            kernel,
            settings,
            registers,
            census,
            modules,
            ftrace,
            namespaces: std::sync::OnceLock::new(),
            owners,
            kset,
            names: names::Names::default(),
            not_checked: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Run one check.
    pub fn run(&self, check: Check) -> Result<Vec<Finding>, CheckFailure> {
        match check {
            Check::HiddenProcess => processes::run(self),
            Check::HiddenModule => modules::run(self),
            Check::SyscallTable => syscalls::run(self),
            Check::Idt => idt::run(self),
            Check::Credentials => creds::run(self),
            Check::Ftrace => ftrace::run(self),
            Check::Kprobes => kprobes::run(self),
            Check::Tracepoints => tracepoints::run(self),
            Check::Netfilter => netfilter::run(self),
            Check::Notifiers => notifiers::run(self),
            Check::Tty => tty::run(self),
            Check::Afinfo => afinfo::run(self),
            Check::VfsOps => vfs::run(self),
            Check::Spoofing => spoofing::run(self),
            Check::ExecLocation => exec_location::run(self),
            Check::Malfind => malfind::run(self),
            Check::Preload => preload::run(self),
            Check::Ptrace => ptrace::run(self),
            Check::SocketFilter => socket_filter::run(self),
            Check::PerfEvents => perf_events::run(self),
            Check::Ebpf => ebpf::run(self),
            Check::CpuState => cpu::run(self),
            Check::Kthreads => kthreads::run(self),
            Check::KernelPages => pages::run(self),
            Check::KernelEntries => entries::run(self),
            Check::Policy => match &self.settings.policy {
                Some(p) => policy::run(self, p),
                None => Err(CheckFailure::Walk {
                    walk: "a policy file",
                    error: "none was given (--policy FILE)".into(),
                }),
            },
            Check::KernelText => match &self.settings.image {
                Some(i) => text::run(self, i),
                None => Err(CheckFailure::Walk {
                    walk: "the kernel image",
                    error: "none was given (--image IMAGE)".into(),
                }),
            },
        }
    }
}

impl<M: PhysicalMemory> Scan<'_, M> {
    /// Say that `check` could not look at `what` with this source.
    pub fn not_checked(&self, check: &'static str, what: String) {
        if let Ok(mut v) = self.not_checked.lock() {
            v.push((check, what));
        }
    }

    /// The processes every view holds (see [`Scan::census`]).
    pub fn processes(&self) -> Result<&[Process], CheckFailure> {
        needed(&self.census, "the tasks list").map(|c| c.processes.as_slice())
    }

    /// The live user processes: not kernel threads, with an address space, not
    /// exited (a zombie runs nothing) — those whose memory the process checks read.
    pub fn user_processes(&self) -> Result<impl Iterator<Item = &Process>, CheckFailure> {
        Ok(self
            .processes()?
            .iter()
            .filter(|p| !p.is_kernel_thread() && p.mm.0 != 0 && p.exit_state == 0))
    }

    /// The network namespaces, walked once per scan.
    pub fn namespaces(&self) -> Result<&[Va], CheckFailure> {
        needed(
            self.namespaces.get_or_init(|| self.kernel.net_namespaces()),
            "the net_namespace_list walk",
        )
        .map(Vec::as_slice)
    }

    /// The functions of `table` outside kernel text, by member name.
    pub fn foreign_fns<'t>(&self, table: &'t FnTable) -> Vec<&'t (String, Va)> {
        table
            .fns
            .iter()
            .filter(|(_, v)| !self.owners.in_text(*v))
            .collect()
    }
}

/// A finding for an operations table with functions outside kernel text (`None` when
/// every function is kernel text): `what` names the table, `consequence` says what the
/// hook gives its owner; the owner (and severity) is that of the first such function,
/// every one is listed as evidence (`member=address`).
pub(crate) fn table_finding<M: PhysicalMemory>(
    scan: &Scan<'_, M>,
    check: &'static str,
    table: &FnTable,
    what: &str,
    consequence: &str,
) -> Option<Finding> {
    let foreign = scan.foreign_fns(table);
    let (first, target) = foreign.first()?;
    let owner = scan.owners.owner(*target);
    let members: Vec<&str> = foreign.iter().map(|(n, _)| n.as_str()).collect();
    let mut f = Finding::new(
        check,
        owner.hook_severity(),
        format!("{check}:{:#x}:{}", table.at.0, members.join(",")),
        format!(
            "{what} at {:#x}: {} calls {:#x} in {owner}, not kernel text{consequence}",
            table.at.0,
            members.join(", "),
            target.0
        ),
    )
    .addr("table", table.at.0)
    .text("members", members.join(","))
    .text("member", first.clone())
    .addr("target", target.0)
    .text("owner", owner.to_string());
    if foreign.len() > 1 {
        let all: Vec<String> = foreign
            .iter()
            .map(|(n, v)| format!("{n}={:#x}", v.0))
            .collect();
        f = f.text("targets", all.join(", "));
    }
    Some(f)
}

/// The result of a shared walk, for a check that needs it.
pub(crate) fn needed<'a, T, E: std::fmt::Display>(
    r: &'a Result<T, E>,
    walk: &'static str,
) -> Result<&'a T, CheckFailure> {
    r.as_ref().map_err(|e| CheckFailure::Walk {
        walk,
        error: e.to_string(),
    })
}

/// Tries of a per-process read in the checks ([`reread`]).
pub const READ_TRIES: usize = 3;

/// `read` of a running guest's changing structures (the tasks list, a process's
/// mappings or arguments), tried up to `tries` times with the kernel's translations
/// dropped in between: a walk can be torn by the guest changing them under it (a
/// multi-threaded process mapping thread stacks), which is no corruption. A dump gives
/// the same answer each time.
pub fn reread<M: PhysicalMemory, T, E>(
    kernel: &Kernel<M>,
    tries: usize,
    mut read: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let mut last = read();
    for _ in 1..tries {
        if last.is_ok() {
            break;
        }
        kernel.invalidate();
        last = read();
    }
    last
}

/// True when the process `p` of the census is still the same process: its task has
/// the same pid, start time, address space and name and has not exited. A check that
/// read a process's memory of a running guest asks this afterwards: the process may
/// have exited meanwhile and its freed `mm_struct` been reused by another process
/// (whose executable and arguments would then be judged under this one's name), or
/// `execve`d, or renamed itself. Such a process is judged at the next scan; a dump or
/// a paused guest never changes.
pub fn unchanged<M: PhysicalMemory>(kernel: &Kernel<M>, p: &Process) -> bool {
    matches!(kernel.process_at(p.task), Ok(q)
        if q.pid == p.pid
            && q.start_time == p.start_time
            && q.mm == p.mm
            && q.comm == p.comm
            && q.exit_state == 0)
}

/// A per-process read of process `p` for `check`, tried as [`reread`] does: its
/// value, or `None` with the low [`unreadable`] finding (`what` could not be read) in
/// `out` — unless the process changed meanwhile (exited, its address space gone or
/// reused: [`unchanged`]), which is no finding: it is judged at the next scan.
pub fn read_process<M: PhysicalMemory, T, E: std::fmt::Display>(
    kernel: &Kernel<M>,
    check: &'static str,
    p: &Process,
    what: &str,
    out: &mut Vec<Finding>,
    read: impl FnMut() -> Result<T, E>,
) -> Option<T> {
    match reread(kernel, READ_TRIES, read) {
        Ok(v) => Some(v),
        Err(e) => {
            out.extend(unchanged(kernel, p).then(|| unreadable(check, p, what, &e)));
            None
        }
    }
}

/// Run `one` on every live user process ([`Scan::user_processes`]) with the policy,
/// and collect what it finds: the body of the checks that judge each process alone.
pub fn per_process<M: PhysicalMemory>(
    scan: &Scan<'_, M>,
    one: impl Fn(&Scan<'_, M>, &Process, Option<&Policy>, &mut Vec<Finding>),
) -> Result<Vec<Finding>, CheckFailure> {
    let policy = scan.settings.policy.as_ref();
    let mut findings = Vec::new();
    for p in scan.user_processes()? {
        one(scan, p, policy, &mut findings);
    }
    Ok(findings)
}

/// The low finding of a per-process check that could not read what it judges
/// (`what`: "executable", "sockets", ...) of process `p`: key
/// `CHECK:unreadable:PID:START`, `rule` `unreadable`.
pub fn unreadable(
    check: &'static str,
    p: &Process,
    what: &str,
    e: &dyn std::fmt::Display,
) -> Finding {
    let comm = crate::finding::guest_str(&p.comm);
    Finding::new(
        check,
        crate::finding::Severity::Low,
        format!("{check}:unreadable:{}:{}", p.pid, p.start_time),
        format!(
            "the {what} of process {} ({comm}) cannot be read, so it cannot be checked: {e}",
            p.pid
        ),
    )
    .num("pid", u64::from(p.pid))
    .text("comm", comm)
    .text("rule", "unreadable")
}

/// Run `checks` on the kernel once.
pub fn run_once<M: PhysicalMemory>(
    kernel: &Kernel<M>,
    registers: &[Registers],
    checks: &[Check],
    settings: &Settings,
) -> Report {
    run_scan(Scan::new(kernel, registers, settings), checks)
}

/// Most findings one check lists in a report; past it the rest are one finding
/// ([`more_findings`]). A kernel changed on a large scale (its text remapped by one
/// page-table entry, every entry of a table overwritten) would otherwise make tens of
/// thousands of findings from a few bytes of guest memory, each an event line of
/// `watch` and `serve`.
pub const MAX_FINDINGS_PER_CHECK: usize = 256;

/// The finding that stands for the findings of `check` past the first `listed` of
/// `total`.
pub fn more_findings(check: &'static str, listed: usize, total: usize) -> Finding {
    Finding::new(
        check,
        crate::finding::Severity::High,
        format!("{check}:more"),
        format!(
            "{} more {check} findings not listed ({total} in all): the kernel is changed on a large scale",
            total - listed
        ),
    )
    .num("listed", listed as u64)
    .num("total", total as u64)
}

/// `findings` of `check` bounded to [`MAX_FINDINGS_PER_CHECK`], the last standing for
/// the rest.
fn bounded(check: &'static str, mut findings: Vec<Finding>) -> Vec<Finding> {
    let total = findings.len();
    if total > MAX_FINDINGS_PER_CHECK {
        let listed = MAX_FINDINGS_PER_CHECK - 1;
        findings.truncate(listed);
        findings.push(more_findings(check, listed, total));
    }
    findings
}

/// Run `checks` on what `scan` read.
pub fn run_scan<M: PhysicalMemory>(scan: Scan<'_, M>, checks: &[Check]) -> Report {
    let mut report = Report::default();
    for &c in checks {
        report.add(c, scan.run(c));
    }
    if let Ok(mut v) = scan.not_checked.lock() {
        report.not_checked = std::mem::take(&mut *v);
    }
    report
}

/// Keep only the findings of `first` that `second` confirms (same key). A live guest
/// that runs while it is read can show a process half-created or a list mid-update
/// once; what two reads agree on is real.
pub fn confirmed(first: Report, second: &Report) -> Report {
    let keys: BTreeSet<&str> = second.findings.iter().map(|f| f.key.as_str()).collect();
    Report {
        findings: first
            .findings
            .into_iter()
            .filter(|f| keys.contains(f.key.as_str()))
            .collect(),
        errors: first.errors,
        ran: first.ran,
        not_checked: first.not_checked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::synthetic::system;
    use crate::finding::Severity;

    /// Found by the guest-memory fuzzer (issue 23, `detector/tests/fuzz.rs`): one
    /// kernel page-table entry of a 7.x dump made a 1 GiB huge page (mutant 128 of seed
    /// 4 on `7-clean`) remapped the kernel image and made 31,172 findings (126 MiB) in
    /// one `check`. A check lists at most [`MAX_FINDINGS_PER_CHECK`], the rest counted
    /// in one finding.
    #[test]
    fn a_check_lists_a_bounded_number_of_findings_and_counts_the_rest() {
        let mut s = system();
        // every system call hooked
        let evil = 0xffff_c900_dead_0000u64;
        for nr in 0..s.sk.nr_syscalls() {
            s.sk.set_syscall(nr, Va(evil + 16 * nr));
        }
        let kernel = s.sk.discover().unwrap();
        let report = run_once(&kernel, &[], &[Check::SyscallTable], &Settings::default());
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.findings.len(), MAX_FINDINGS_PER_CHECK);
        let last = report.findings.last().unwrap();
        assert_eq!(last.key, "syscall-table:more");
        assert!(
            last.summary
                .contains("more syscall-table findings not listed"),
            "{}",
            last.summary
        );
        // under the bound nothing changes
        let few: Vec<Finding> = report.findings[..3].to_vec();
        assert_eq!(bounded("syscall-table", few.clone()).len(), 3);
    }

    #[test]
    fn a_check_stopped_by_a_corrupted_chain_is_a_high_finding_and_the_others_run() {
        let mut s = system();
        let f = s.sk.kernel_fn();
        let nb = s.sk.add_notifier("die_chain", f, 0);
        s.sk.set(nb, "notifier_block", "next", nb.0);
        let kernel = s.sk.discover().unwrap();
        let report = run_once(&kernel, &[], &Check::ALL, &Settings::default());
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert_eq!(report.errors[0].check, "notifiers");
        assert_eq!(report.ran.len(), Check::ALL.len() - 1);
        assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
        let finding = &report.findings[0];
        assert_eq!(
            (finding.check, finding.severity),
            ("notifiers", Severity::High)
        );
        assert!(
            finding.key.starts_with("notifiers:broken:"),
            "{}",
            finding.key
        );
    }
}
