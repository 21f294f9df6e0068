//! Incremental scans for `watch` and `serve`: a tick costs what changed in the guest,
//! not everything it holds, with the findings a full scan gives.
//!
//! A check is a function of the guest bytes it reads and of the inputs [`Scan`] hands
//! it. Each unit of work below runs with a [`Recording`](vmi_core::memory::Recording)
//! of its physical reads (page-table entries of the walks included) and a
//! [`TranslationLog`] of the kernel's translations it used, cached or walked; its
//! findings are kept with both. At the next tick the unit runs again only when its
//! inputs differ, [`ReadLog::unchanged`] finds a byte it read changed, or one of its
//! pages translates otherwise (walked afresh: the cache is emptied at every tick). The
//! bytes themselves are compared, no guest counter is trusted, so a change that would
//! alter its findings cannot be missed. The units:
//!
//! | unit | runs again when |
//! |---|---|
//! | `hidden-process`, `idt`, `cpu-state` | every tick: run queues, the CPUs' current tasks and vCPU registers change all the time (together ~20 µs) |
//! | `kernel-entries`, `kernel-text` | on `watch`'s own schedule (`--text-every`): they read all of kernel text |
//! | every other kernel check (hook tables, chains, lists) | a byte it read changed, or the shared views changed (modules list, module kobjects, ftrace_ops, network namespaces); it is given no processes |
//! | `credentials`, `vfs-ops`, `perf-events`, `ebpf`, `kthreads`, `ptrace`, `policy` | a byte it read changed, the shared views changed, or a process's stable fields did (pid, name, credentials' ids, address space, threads; not its scheduling state) |
//! | `spoofing`, `exec-location`, `malfind`, `socket-filter`, `preload`, per user process | that process is new or its stable fields changed, a byte read for it changed, or (spoofing) the kernel threads' names did |
//! | `preload`'s look at `/etc/ld.so.preload` (from pid 1's root) | a byte it read changed (the dentries on the way, the file's pages), or the shared views changed |
//!
//! A unit whose check fails, or whose reads were torn by the guest or too many to keep
//! ([`MAX_LOG_BYTES`](vmi_core::memory::record::MAX_LOG_BYTES)), runs every tick. Every
//! [`Incremental::full_every`] ticks every unit runs again whatever the logs say, a
//! bound on anything the comparison does not see (the source's own frame mapping of a
//! Xen PV guest, a bug here).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};

use vmi_core::arch::x86_64::{Registers, TranslationLog};
use vmi_core::kernel::{Census, Kernel, KernelError, Process, Views};
use vmi_core::memory::{PhysicalMemory, ReadLog, Recorder};

use crate::checks::{
    self, exec_location, malfind, names::Names, preload, socket_filter, spoofing, Check,
    CheckFailure, Report, Scan,
};
use crate::finding::Finding;
use crate::target::Target;

/// How a check is scanned incrementally (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Every tick.
    Always,
    /// On its own schedule, never from a memo.
    Scheduled,
    /// Kept while its reads and the shared views are unchanged; sees no processes.
    Kernel,
    /// Kept while its reads, the shared views and the processes' stable fields are
    /// unchanged.
    Processes,
    /// One unit per user process.
    PerProcess,
}

impl Unit {
    /// The unit of `check`.
    pub fn of(check: Check) -> Unit {
        match check {
            Check::HiddenProcess | Check::Idt | Check::CpuState => Unit::Always,
            Check::KernelEntries | Check::KernelText => Unit::Scheduled,
            Check::Spoofing
            | Check::ExecLocation
            | Check::Malfind
            | Check::SocketFilter
            | Check::Preload => Unit::PerProcess,
            Check::Credentials
            | Check::VfsOps
            | Check::PerfEvents
            | Check::Ebpf
            | Check::Kthreads
            | Check::Ptrace
            | Check::Policy => Unit::Processes,
            Check::HiddenModule
            | Check::SyscallTable
            | Check::Ftrace
            | Check::Kprobes
            | Check::Tracepoints
            | Check::Netfilter
            | Check::Notifiers
            | Check::Tty
            | Check::Afinfo
            | Check::KernelPages => Unit::Kernel,
        }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickStats {
    /// Units whose findings were kept (their reads unchanged).
    pub kept: u32,
    /// Units that ran.
    pub ran: u32,
    /// Guest bytes compared to keep units.
    pub compared: u64,
}

/// A unit's findings and what it could not look at.
type Outcome = (Vec<Finding>, Vec<(&'static str, String)>);

/// A unit's findings and what it read.
#[derive(Debug)]
struct Memo {
    log: ReadLog,
    translations: TranslationLog,
    findings: Vec<Finding>,
    not_checked: Vec<(&'static str, String)>,
}

impl Memo {
    /// True when the guest holds what the unit read, translated as it was.
    fn holds<M: PhysicalMemory>(&self, kernel: &Kernel<M>, stats: &mut TickStats) -> bool {
        stats.compared += self.log.bytes() as u64;
        kernel.same_translations(&self.translations) && self.log.unchanged(kernel.space().memory())
    }
}

/// A per-process unit's memo, with the process it was made for.
#[derive(Debug)]
struct ProcessMemo {
    process: Process,
    memo: Memo,
}

/// What incremental scans remember between ticks.
#[derive(Debug)]
pub struct Incremental {
    /// Every this many ticks every unit runs again (0: never).
    pub full_every: u64,
    ticks: u64,
    /// Keys of the hash of the shared views and processes (random: the guest cannot
    /// aim at a collision).
    hasher: std::collections::hash_map::RandomState,
    shared: Option<u64>,
    processes: Option<u64>,
    stems: Option<spoofing::KthreadStems>,
    units: HashMap<Check, Memo>,
    per_process: HashMap<(Check, u32, u64), ProcessMemo>,
    /// What the last tick did.
    pub last: TickStats,
    /// The memoized units the last tick ran (check, and the process of a per-process
    /// unit).
    pub ran: Vec<(Check, Option<u32>)>,
}

/// The processes as the memoized checks see them: without their scheduling state and
/// the views that hold them (which change from tick to tick), and without the run
/// queues, the CPUs' current tasks and the pid IDR (only `hidden-process` compares
/// views, every tick).
fn stable(mut census: Census) -> Census {
    for p in &mut census.processes {
        p.state = 0;
        p.views = Views::default();
    }
    let withheld = || {
        KernelError::MissingField("(withheld from this check by watch's incremental scan)".into())
    };
    census.pid_namespace = Err(withheld());
    census.running = Err(withheld());
    census.queued = Err(withheld());
    census
}

/// A hash of `value`'s `Debug` text, streamed (nothing allocated).
fn debug_hash<T: std::fmt::Debug>(h: &mut impl Hasher, value: &T) {
    struct W<'a, H>(&'a mut H);
    impl<H: Hasher> std::fmt::Write for W<'_, H> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }
    let _ = std::fmt::write(&mut W(h), format_args!("{value:?}"));
}

impl Default for Incremental {
    fn default() -> Self {
        Incremental::new(600)
    }
}

impl Incremental {
    /// Nothing remembered; every unit runs again every `full_every` ticks (0: never).
    pub fn new(full_every: u64) -> Incremental {
        Incremental {
            full_every,
            ticks: 0,
            hasher: Default::default(),
            shared: None,
            processes: None,
            stems: None,
            units: HashMap::new(),
            per_process: HashMap::new(),
            last: TickStats::default(),
            ran: Vec::new(),
        }
    }

    /// Forget every memo (a reboot: another kernel).
    pub fn forget(&mut self) {
        self.shared = None;
        self.processes = None;
        self.stems = None;
        self.units.clear();
        self.per_process.clear();
    }

    /// Memos held now.
    pub fn memos(&self) -> usize {
        self.units.len() + self.per_process.len()
    }

    /// What each check's memos hold: (check, memos, bytes, ranges, pages translated),
    /// per-process memos summed per check.
    pub fn memo_sizes(&self) -> Vec<(&'static str, usize, usize, usize, usize)> {
        let mut by: BTreeMap<Check, (usize, usize, usize, usize)> = BTreeMap::new();
        let memos = self
            .units
            .iter()
            .map(|(c, m)| (*c, m))
            .chain(self.per_process.iter().map(|(k, m)| (k.0, &m.memo)));
        for (c, m) in memos {
            let e = by.entry(c).or_default();
            e.0 += 1;
            e.1 += m.log.bytes();
            e.2 += m.log.ranges();
            e.3 += m.translations.len();
        }
        by.into_iter()
            .map(|(c, (n, b, r, p))| (c.name(), n, b, r, p))
            .collect()
    }

    /// Run `checks` on the guest as one scan would, from memos where the guest did
    /// not change what they read. `census` is the tick's census (read by the caller,
    /// who reports process starts and exits from it); the kernel's caches must have
    /// been invalidated before it was read.
    pub fn run(
        &mut self,
        target: &Target,
        census: Result<Census, KernelError>,
        checks: &[Check],
        settings: &checks::Settings,
    ) -> Report {
        self.run_on(
            &target.kernel,
            target.recording(),
            &target.registers,
            census,
            checks,
            settings,
        )
    }

    /// [`Incremental::run`] on a kernel whose memory `rec` records.
    pub fn run_on<M: PhysicalMemory>(
        &mut self,
        kernel: &Kernel<M>,
        rec: &dyn Recorder,
        registers: &[Registers],
        census: Result<Census, KernelError>,
        checks: &[Check],
        settings: &checks::Settings,
    ) -> Report {
        self.ticks += 1;
        if self.full_every > 0 && self.ticks.is_multiple_of(self.full_every) {
            self.forget();
        }
        let mut stats = TickStats::default();
        self.ran.clear();
        let mut scan = Scan::with_census(kernel, registers, settings, census);
        // read before any unit, so that no unit's log lacks the reads (each sees it)
        let _ = scan.namespaces();
        let mut h = self.hasher.build_hasher();
        debug_hash(&mut h, &scan.modules);
        debug_hash(&mut h, &scan.kset);
        debug_hash(&mut h, &scan.ftrace);
        debug_hash(&mut h, &scan.namespaces.get());
        debug_hash(&mut h, &scan.owners);
        let shared = h.finish();
        if self.shared != Some(shared) {
            self.forget();
            self.shared = Some(shared);
        }

        let mut results: BTreeMap<Check, Result<Outcome, CheckFailure>> = BTreeMap::new();
        // every tick, with the whole census
        for &c in checks
            .iter()
            .filter(|&&c| matches!(Unit::of(c), Unit::Always | Unit::Scheduled))
        {
            let r = scan.run(c);
            results.insert(c, r.map(|f| (f, take_not_checked(&scan))));
            stats.ran += 1;
        }
        let census = std::mem::replace(
            &mut scan.census,
            Err(KernelError::MissingField(
                "(no processes are given to this check in watch's incremental scan)".into(),
            )),
        );
        // the kernel units, with no processes
        for &c in checks.iter().filter(|&&c| Unit::of(c) == Unit::Kernel) {
            results.insert(c, self.unit(&mut scan, rec, c, &mut stats));
        }
        scan.census = census.map(stable);
        // everything of the census these checks see
        let processes = scan.census.as_ref().ok().map(|c| {
            let mut h = self.hasher.build_hasher();
            c.processes.hash(&mut h);
            debug_hash(&mut h, &c.breaks);
            debug_hash(&mut h, &c.undecodable);
            h.finish()
        });
        if processes.is_none() || self.processes != processes {
            self.units.retain(|c, _| Unit::of(*c) != Unit::Processes);
            self.processes = processes;
        }
        for &c in checks.iter().filter(|&&c| Unit::of(c) == Unit::Processes) {
            results.insert(c, self.unit(&mut scan, rec, c, &mut stats));
        }
        let per: Vec<Check> = checks
            .iter()
            .copied()
            .filter(|&c| Unit::of(c) == Unit::PerProcess)
            .collect();
        if !per.is_empty() {
            for (c, r) in self.per_process(&mut scan, rec, &per, &mut stats) {
                results.insert(c, r);
            }
        }

        let mut report = Report::default();
        for &c in checks {
            if let Some(r) = results.remove(&c) {
                let findings = r.map(|(findings, not_checked)| {
                    report.not_checked.extend(not_checked);
                    findings
                });
                report.add(c, findings);
            }
        }
        self.last = stats;
        report
    }

    /// One memoized check.
    fn unit<M: PhysicalMemory>(
        &mut self,
        scan: &mut Scan<'_, M>,
        rec: &dyn Recorder,
        c: Check,
        stats: &mut TickStats,
    ) -> Result<Outcome, CheckFailure> {
        self.memoized(scan, rec, c, stats, |s| s.run(c))
    }

    /// `run`, the work of check `c` that is not per process, memoized under `c`.
    fn memoized<'k, M: PhysicalMemory>(
        &mut self,
        scan: &mut Scan<'k, M>,
        rec: &dyn Recorder,
        c: Check,
        stats: &mut TickStats,
        run: impl FnOnce(&Scan<'k, M>) -> Result<Vec<Finding>, CheckFailure>,
    ) -> Result<Outcome, CheckFailure> {
        if let Some(m) = self.units.get(&c) {
            if m.holds(scan.kernel, stats) {
                stats.kept += 1;
                return Ok((m.findings.clone(), m.not_checked.clone()));
            }
        }
        self.units.remove(&c);
        stats.ran += 1;
        self.ran.push((c, None));
        let (r, log) = recorded(scan, rec, run);
        let r = r.map(|f| (f, take_not_checked(scan)));
        if let (Ok((findings, not_checked)), Some((log, translations))) = (&r, log) {
            self.units.insert(
                c,
                Memo {
                    log,
                    translations,
                    findings: findings.clone(),
                    not_checked: not_checked.clone(),
                },
            );
        }
        r
    }

    /// The per-process checks `per`, one unit per user process.
    fn per_process<M: PhysicalMemory>(
        &mut self,
        scan: &mut Scan<'_, M>,
        rec: &dyn Recorder,
        per: &[Check],
        stats: &mut TickStats,
    ) -> Vec<(Check, Result<Outcome, CheckFailure>)> {
        let processes: Vec<Process> = match scan.user_processes() {
            Ok(ps) => ps.cloned().collect(),
            Err(e) => {
                let error = e.to_string();
                return per
                    .iter()
                    .map(|&c| {
                        (
                            c,
                            Err(CheckFailure::Walk {
                                walk: "the tasks list",
                                error: error.clone(),
                            }),
                        )
                    })
                    .collect();
            }
        };
        let stems = spoofing::kthread_stems(scan.processes().unwrap_or(&[]));
        if self.stems.as_ref() != Some(&stems) {
            self.per_process.retain(|k, _| k.0 != Check::Spoofing);
            self.stems = Some(stems.clone());
        }
        // forget the processes that are gone
        let live: std::collections::HashSet<(u32, u64)> =
            processes.iter().map(|p| (p.pid, p.start_time)).collect();
        self.per_process.retain(|k, _| live.contains(&(k.1, k.2)));
        let policy = scan.settings.policy.clone();
        let mut out = Vec::new();
        for &c in per {
            // a check the profile cannot feed fails as a whole, as a full scan's does
            if c == Check::SocketFilter {
                if let Err(e) = socket_filter::ready(scan) {
                    out.push((c, Err(e)));
                    continue;
                }
            }
            let mut findings = Vec::new();
            let mut not_checked = Vec::new();
            // preload's look at /etc/ld.so.preload, once per scan (from pid 1's root)
            if c == Check::Preload {
                match self.memoized(scan, rec, c, stats, preload::preload_file) {
                    Ok((f, nc)) => {
                        findings.extend(f);
                        not_checked.extend(nc);
                    }
                    Err(e) => {
                        out.push((c, Err(e)));
                        continue;
                    }
                }
            }
            for p in &processes {
                let key = (c, p.pid, p.start_time);
                if let Some(m) = self.per_process.get(&key) {
                    if m.process == *p && m.memo.holds(scan.kernel, stats) {
                        stats.kept += 1;
                        findings.extend(m.memo.findings.iter().cloned());
                        not_checked.extend(m.memo.not_checked.iter().cloned());
                        continue;
                    }
                }
                self.per_process.remove(&key);
                stats.ran += 1;
                self.ran.push((c, Some(p.pid)));
                let (found, log) = recorded(scan, rec, |s| match c {
                    Check::Spoofing => spoofing::one(s, p, &stems),
                    Check::ExecLocation => {
                        let mut v = Vec::new();
                        exec_location::one(s, p, policy.as_ref(), &mut v);
                        v
                    }
                    Check::SocketFilter => {
                        let mut v = Vec::new();
                        socket_filter::one(s, p, policy.as_ref(), &mut v);
                        v
                    }
                    Check::Preload => {
                        let mut v = Vec::new();
                        preload::one(s, p, policy.as_ref(), &mut v);
                        v
                    }
                    _ => {
                        let mut v = Vec::new();
                        malfind::one(s, p, policy.as_ref(), &mut v);
                        v
                    }
                });
                let nc = take_not_checked(scan);
                if let Some((log, translations)) = log {
                    self.per_process.insert(
                        key,
                        ProcessMemo {
                            process: p.clone(),
                            memo: Memo {
                                log,
                                translations,
                                findings: found.clone(),
                                not_checked: nc.clone(),
                            },
                        },
                    );
                }
                findings.extend(found);
                not_checked.extend(nc);
            }
            out.push((c, Ok((findings, not_checked))));
        }
        out
    }
}

/// What the checks run so far could not look at, taken out of `scan`.
fn take_not_checked<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Vec<(&'static str, String)> {
    scan.not_checked
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default()
}

/// `f` on `scan` with its reads recorded, and the kernel's translations it used
/// (cached or walked), function names looked up afresh (they are cached per scan).
fn recorded<'k, M: PhysicalMemory, T>(
    scan: &mut Scan<'k, M>,
    rec: &dyn Recorder,
    f: impl FnOnce(&Scan<'k, M>) -> T,
) -> (T, Option<(ReadLog, TranslationLog)>) {
    scan.names = Names::default();
    scan.kernel.start_translation_log();
    rec.start();
    let out = f(scan);
    let log = rec.finish();
    let translations = scan.kernel.finish_translation_log();
    (out, log.zip(translations))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};

    use vmi_core::error::PhysError;
    use vmi_core::memory::{MockMemory, PhysRange, Recording};
    use vmi_core::testing::{SyntheticKernel, VM_EXEC, VM_READ, VM_WRITE};
    use vmi_core::{Pa, Va};

    use super::*;
    use crate::checks::synthetic::{system, TEXT_AT};
    use crate::checks::{run_once, CheckError, Settings};

    /// Memory the test changes while the kernel reads it, as a running guest's.
    struct Live {
        ranges: Vec<PhysRange>,
        mem: RwLock<MockMemory>,
    }

    impl PhysicalMemory for Live {
        fn read_phys(&self, pa: Pa, buf: &mut [u8]) -> Result<(), PhysError> {
            self.mem.read().unwrap().read_phys(pa, buf)
        }
        fn ranges(&self) -> &[PhysRange] {
            &self.ranges
        }
    }

    type Mem = Arc<Recording<Live>>;

    struct Guest {
        kernel: Kernel<Mem>,
        mem: Mem,
        inc: Incremental,
    }

    impl Guest {
        fn new(sk: SyntheticKernel) -> Guest {
            let mut mem = None;
            let kernel = sk
                .discover_over(|m| {
                    let live = Arc::new(Recording::new(Live {
                        ranges: m.ranges().to_vec(),
                        mem: RwLock::new(m),
                    }));
                    mem = Some(live.clone());
                    live
                })
                .unwrap();
            Guest {
                kernel,
                mem: mem.unwrap(),
                inc: Incremental::new(0),
            }
        }

        /// One tick of every check (kernel-entries too), as watch runs it.
        fn tick(&mut self) -> Report {
            self.kernel.invalidate();
            let census = self.kernel.census(&Default::default());
            let checks = Check::ALL;
            self.inc.run_on(
                &self.kernel,
                &*self.mem,
                &[],
                census,
                &checks,
                &Settings::default(),
            )
        }

        /// What a full scan finds now.
        fn full(&self) -> Report {
            self.kernel.invalidate();
            run_once(&self.kernel, &[], &Check::ALL, &Settings::default())
        }

        /// Write `bytes` at the kernel's virtual address `va`.
        fn poke(&self, va: Va, bytes: &[u8]) {
            let pa = self.kernel.space().translate(va).unwrap().pa;
            self.mem
                .inner()
                .mem
                .write()
                .unwrap()
                .write(pa, bytes)
                .unwrap();
        }

        /// The memory of another synthetic kernel built the same way (the same
        /// placement and allocations, then more).
        fn become_(&self, sk: &SyntheticKernel) {
            *self.mem.inner().mem.write().unwrap() = sk.memory().clone();
        }
    }

    fn keys(r: &Report) -> Vec<String> {
        let mut k: Vec<String> = r.findings.iter().map(|f| f.key.clone()).collect();
        k.sort();
        k
    }

    /// Units that run every tick with every check (no policy, no image).
    fn always() -> u32 {
        Check::ALL
            .iter()
            .filter(|&&c| matches!(Unit::of(c), Unit::Always | Unit::Scheduled))
            .count() as u32
    }

    /// preload's look at `/etc/ld.so.preload` is kept while the file's bytes are the
    /// same, and runs again when its content changes.
    #[test]
    fn a_changed_ld_so_preload_runs_its_unit_again() {
        let with = |content: &[u8]| {
            let mut s = system();
            let init = s.init;
            s.sk.set_fs_root(&init);
            s.sk.cache_file(
                b"/etc/ld.so.preload",
                content,
                &[vmi_core::testing::PageState::Head],
            );
            s.sk
        };
        let content = |r: &Report| {
            r.findings
                .iter()
                .find(|f| f.key == "preload:file")
                .map(|f| f.to_json()["evidence"]["content"].clone())
        };
        let mut g = Guest::new(with(b"/tmp/a.so\n"));
        assert_eq!(content(&g.tick()), Some("/tmp/a.so\\x0a".into()));
        let r = g.tick();
        assert!(
            !g.inc.ran.contains(&(Check::Preload, None)),
            "{:?}",
            g.inc.ran
        );
        assert_eq!(content(&r), Some("/tmp/a.so\\x0a".into()));
        g.become_(&with(b"/tmp/b.so\n"));
        let r = g.tick();
        assert!(
            g.inc.ran.contains(&(Check::Preload, None)),
            "{:?}",
            g.inc.ran
        );
        assert_eq!(content(&r), Some("/tmp/b.so\\x0a".into()));
        assert_eq!(keys(&r), keys(&g.full()));
    }

    #[test]
    fn nothing_changed_keeps_every_unit_with_a_full_scan_s_findings() {
        let mut s = system();
        let evil = Va(0xffff_c900_dead_0000);
        s.sk.set_syscall(59, evil);
        let mut g = Guest::new(s.sk);
        let first = g.tick();
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        let units = g.inc.memos() as u32;
        // 10 kernel and 6 process checks, preload's ld.so.preload, 5 per-process
        // checks of 3 user processes
        assert_eq!(units, 17 + 5 * 3, "{:?}", g.inc.last);
        assert_eq!(g.inc.last.ran, units + always());
        let second = g.tick();
        assert_eq!(
            g.inc.last,
            TickStats {
                kept: units,
                ran: always(),
                compared: g.inc.last.compared
            }
        );
        assert!(g.inc.last.compared > 0);
        assert_eq!(keys(&second), keys(&g.full()));
        assert_eq!(keys(&second), keys(&first));
        assert!(keys(&second)
            .iter()
            .any(|k| k.starts_with("syscall-table:")));
    }

    #[test]
    fn a_hook_written_between_ticks_is_found_at_the_next_and_only_its_unit_runs() {
        let s = system();
        let table = s.sk.symbol("sys_call_table");
        let mut g = Guest::new(s.sk);
        assert!(g.tick().findings.is_empty());
        g.poke(
            Va(table.0 + 8 * 59),
            &0xffff_c900_dead_0000u64.to_le_bytes(),
        );
        let r = g.tick();
        assert_eq!(g.inc.ran, vec![(Check::SyscallTable, None)]);
        assert_eq!(keys(&r), keys(&g.full()));
        assert!(
            keys(&r).iter().any(|k| k.starts_with("syscall-table:")),
            "{:?}",
            keys(&r)
        );
        // and when it is put back, the finding goes
        g.poke(Va(table.0 + 8 * 59), &[0; 8]);
        g.tick();
        let back = g.full();
        assert_eq!(keys(&g.tick()), keys(&back));
    }

    #[test]
    fn a_new_process_runs_its_own_units_and_those_that_read_every_process() {
        let mut g = Guest::new(system().sk);
        g.tick();
        // the same system, and a process started since with injected code
        let mut s = system();
        let p = s.sk.add_process(2000, b"stage2", 1000);
        let mm =
            s.sk.exec(&p, b"/usr/bin/stage2", &[b"stage2"], b"/usr/bin/stage2");
        s.sk.map_exe(mm, (TEXT_AT, TEXT_AT + 0x1000), VM_READ | VM_EXEC, None);
        s.sk.map_exe(
            mm,
            (TEXT_AT + 0x10_0000, TEXT_AT + 0x10_1000),
            VM_READ | VM_WRITE | VM_EXEC,
            Some(b"\x90\x90\x90\xcc"),
        );
        s.sk.add_stack_and_vdso(mm);
        g.become_(&s.sk);
        let r = g.tick();
        // the new process's 3 units and the 5 checks that read every process ran; no
        // kernel unit, and of the other processes' only those whose reads changed
        // (bash's task, last on the tasks list, links to the new one now)
        let ran = &g.inc.ran;
        for c in [
            Check::Spoofing,
            Check::ExecLocation,
            Check::Malfind,
            Check::SocketFilter,
            Check::Preload,
        ] {
            assert!(ran.contains(&(c, Some(2000))), "{ran:?}");
        }
        for c in Check::ALL {
            match Unit::of(c) {
                Unit::Processes => assert!(ran.contains(&(c, None)), "{ran:?}"),
                Unit::Kernel => assert!(!ran.contains(&(c, None)), "{ran:?}"),
                _ => {}
            }
        }
        assert!(!ran.contains(&(Check::Malfind, Some(1))), "{ran:?}");
        assert!(!ran.contains(&(Check::Spoofing, Some(400))), "{ran:?}");
        assert_eq!(keys(&r), keys(&g.full()));
        assert!(
            keys(&r).iter().any(|k| k.starts_with("malfind:")),
            "{:?}",
            keys(&r)
        );
    }

    #[test]
    fn a_changed_page_table_entry_runs_the_units_that_translated_through_it() {
        let s = system();
        let table = s.sk.symbol("sys_call_table");
        let mut g = Guest::new(s.sk);
        g.tick();
        g.tick();
        assert!(!g.inc.ran.contains(&(Check::SyscallTable, None)));
        // the entry that maps the table, its writable bit flipped: the bytes read
        // through it are the same, the translation is not
        let mem = g.mem.inner();
        let mut table_at = g.kernel.placement().root.table.0;
        let (e_pa, e) = [39u64, 30, 21, 12]
            .into_iter()
            .find_map(|shift| {
                let e_pa = table_at + 8 * ((table.0 >> shift) & 511);
                let e = mem.read_phys_u64(Pa(e_pa)).unwrap();
                if shift == 12 || e & 0x80 != 0 {
                    return Some((e_pa, e));
                }
                table_at = e & 0x000f_ffff_ffff_f000;
                None
            })
            .unwrap();
        mem.mem.write().unwrap().write_u64(Pa(e_pa), e ^ 2).unwrap();
        g.tick();
        assert!(
            g.inc.ran.contains(&(Check::SyscallTable, None)),
            "{:?}",
            g.inc.ran
        );
    }

    #[test]
    fn every_unit_runs_again_every_full_every_ticks() {
        let mut g = Guest::new(system().sk);
        g.inc.full_every = 3;
        g.tick();
        g.tick();
        assert_eq!(g.inc.last.ran, always());
        g.tick();
        assert_eq!(g.inc.last.kept, 0);
        g.tick();
        assert_eq!(g.inc.last.ran, always());
    }

    /// A per-process check the profile cannot feed fails as a whole, as in a full scan.
    #[test]
    fn a_per_process_check_without_its_symbols_fails_once() {
        let mut s = system();
        s.sk.profile_mut().symbols.remove("socket_file_ops");
        let mut g = Guest::new(s.sk);
        let r = g.tick();
        let e: Vec<&CheckError> = r.errors.iter().collect();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].check, "socket-filter");
        assert!(e[0].source.profile_lacks(), "{}", e[0]);
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert_eq!(keys(&r), keys(&g.full()));
        assert_eq!(g.full().errors.len(), 1);
    }

    /// The checks kept while only the shared views and their reads are unchanged must
    /// not read processes: they are given none.
    #[test]
    fn kernel_units_run_without_processes() {
        let s = system();
        let kernel = s.sk.discover().unwrap();
        let settings = Settings::default();
        let mut scan = Scan::new(&kernel, &[], &settings);
        scan.census = Err(KernelError::MissingField("none".into()));
        for c in Check::ALL
            .into_iter()
            .filter(|&c| Unit::of(c) == Unit::Kernel)
        {
            assert!(scan.run(c).is_ok(), "{} needs processes", c.name());
        }
    }
}
