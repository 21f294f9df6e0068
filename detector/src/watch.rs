//! `watch`: continuous monitoring of a live guest.
//!
//! Every interval [`Watcher::tick`] looks at the guest and returns [`Event`]s:
//! - the guest's state: paused and resumed (no scan while paused), gone (QEMU exited,
//!   the Xen domain destroyed or shut down: its mappings are dropped at once), rebooted
//!   in place (a vCPU executes another kernel image than the one
//!   discovered: the kernel is found again, new KASLR shifts and all, once it has
//!   booted, so no scan reads a half-initialised kernel);
//! - processes that started and exited (an exit only once the process is missing from
//!   two scans in a row, so one torn read of a running guest makes no exit/start pair);
//! - each new finding once (confirmed by a second read in the same scan when the guest
//!   runs), and when it is gone from two scans in a row, that it cleared;
//! - a check that could not run, once a second read in the same scan failed too (on a
//!   running guest a process can exit under a walk);
//! - a credentials finding of its own that needs history: a process whose real, effective
//!   and saved uids were all non-zero and that has a uid of 0 now, with the same address
//!   space (no `exec` of a setuid binary happened in between).
//!
//! No pause by default: a walk that fails on a running guest (a pointer freed under it)
//! is retried; `--pause` pauses the guest around each scan for comparison. The checks
//! that read all of kernel text, `kernel-entries` and the `kernel-text` comparison (with
//! an image), run on one scan in [`WatchOptions::text_every`], the others on every scan,
//! incrementally by default ([`crate::incremental`]): a check whose reads are the same
//! bytes as at its last run is not run again, its findings are kept.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vmi_core::kernel::candidates::Executing;
use vmi_core::kernel::{Census, KernelError, Process};
use vmi_core::Va;

use crate::checks::{self, Check, Report, Settings};
use crate::finding::{guest_str, Finding, Severity};
use crate::incremental::{Incremental, TickStats};
use crate::target::{LiveState, Target};

/// How long after a reset a kernel found running must have booted (init running a
/// user program) before it is watched; past this it is watched in any state.
pub const BOOT_GRACE: Duration = Duration::from_secs(180);

/// What watch reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Watching started, or the kernel was found again after a reboot.
    Started {
        /// The kernel release.
        release: String,
        /// The KASLR virtual shift.
        virt_shift: u64,
        /// True after a reboot in place.
        after_reset: bool,
    },
    /// A process appeared.
    ProcessStart {
        /// Its pid.
        pid: u32,
        /// Its parent.
        ppid: u32,
        /// Its real uid.
        uid: u32,
        /// Its name (escaped).
        comm: String,
    },
    /// A process is gone.
    ProcessExit {
        /// Its pid.
        pid: u32,
        /// Its name (escaped).
        comm: String,
    },
    /// A new finding.
    Finding(Finding),
    /// A finding no longer seen.
    FindingCleared {
        /// Its check.
        check: &'static str,
        /// Its key (as raised).
        key: String,
        /// Its summary when raised.
        summary: String,
    },
    /// The guest was paused.
    Paused,
    /// The guest runs again.
    Resumed,
    /// A vCPU executes another kernel than the one watched: the guest rebooted.
    Reset,
    /// The guest is gone: QEMU exited (the guest shut down or QEMU was killed), or the
    /// Xen domain was destroyed or shut down.
    Shutdown {
        /// What QMP said.
        reason: String,
    },
    /// A scan failed (the next one is tried anyway).
    ScanError {
        /// Why.
        error: String,
    },
    /// Watching stopped (signal or scan limit).
    Stopped {
        /// Scans done.
        scans: u64,
        /// Why.
        reason: String,
    },
}

impl Event {
    /// The event as one JSON object (`event` names its kind).
    pub fn to_json(&self) -> Value {
        match self {
            Event::Started {
                release,
                virt_shift,
                after_reset,
            } => json!({
                "event": "started",
                "release": release,
                "virtual_shift": format!("{virt_shift:#x}"),
                "after_reset": after_reset,
            }),
            Event::ProcessStart {
                pid,
                ppid,
                uid,
                comm,
            } => json!({
                "event": "process-start", "pid": pid, "ppid": ppid, "uid": uid, "comm": comm,
            }),
            Event::ProcessExit { pid, comm } => {
                json!({ "event": "process-exit", "pid": pid, "comm": comm })
            }
            Event::Finding(f) => {
                let mut v = f.to_json();
                v["event"] = json!("finding");
                v
            }
            Event::FindingCleared {
                check,
                key,
                summary,
            } => {
                json!({ "event": "finding-cleared", "check": check, "key": key, "summary": summary })
            }
            Event::Paused => json!({ "event": "paused" }),
            Event::Resumed => json!({ "event": "resumed" }),
            Event::Reset => json!({ "event": "reset" }),
            Event::Shutdown { reason } => json!({ "event": "shutdown", "reason": reason }),
            Event::ScanError { error } => json!({ "event": "scan-error", "error": error }),
            Event::Stopped { scans, reason } => {
                json!({ "event": "stopped", "scans": scans, "reason": reason })
            }
        }
    }

    /// The event as one line of text.
    pub fn to_text(&self) -> String {
        match self {
            Event::Started {
                release,
                virt_shift,
                after_reset,
            } => format!(
                "{} {} (KASLR shift {virt_shift:#x})",
                if *after_reset {
                    "kernel found again:"
                } else {
                    "watching"
                },
                release
            ),
            Event::ProcessStart {
                pid,
                ppid,
                uid,
                comm,
            } => format!("process start {pid} ({comm}) parent {ppid} uid {uid}"),
            Event::ProcessExit { pid, comm } => format!("process exit  {pid} ({comm})"),
            Event::Finding(f) => format!("finding {f}"),
            Event::FindingCleared { check, summary, .. } => format!("cleared {check}: {summary}"),
            Event::Paused => "guest paused".into(),
            Event::Resumed => "guest resumed".into(),
            Event::Reset => "guest reset: it runs another kernel image now".into(),
            Event::Shutdown { reason } => format!("guest gone: {reason}"),
            Event::ScanError { error } => format!("scan failed: {error}"),
            Event::Stopped { scans, reason } => format!("stopped after {scans} scans: {reason}"),
        }
    }

    /// True for events that go to the alert file.
    pub fn is_alert(&self) -> bool {
        matches!(
            self,
            Event::Finding(_) | Event::Reset | Event::Shutdown { .. }
        )
    }
}

/// How watch behaves.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The checks run each scan.
    pub checks: Vec<Check>,
    /// Pause the guest around each scan.
    pub pause: bool,
    /// Walk bounds and the policy.
    pub settings: Settings,
    /// Retries of a failed walk on a running guest.
    pub retries: usize,
    /// Run the checks that read all of kernel text on one scan in this many, the first
    /// included: on a 6.1 guest `kernel-text` takes 17-28 ms, `kernel-entries` 1.3 ms
    /// (5 ms through the QEMU process), the other checks together 0.4 ms.
    pub text_every: u64,
    /// Scan incrementally ([`crate::incremental`]); `false` runs every check in full on
    /// every scan.
    pub incremental: bool,
    /// With `incremental`, run every check in full on one scan in this many whatever
    /// changed (0: never).
    pub full_every: u64,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            checks: Check::ALL.to_vec(),
            pause: false,
            settings: Settings::default(),
            retries: 3,
            text_every: 10,
            incremental: true,
            full_every: 600,
        }
    }
}

#[derive(Debug, Clone)]
struct Seen {
    comm: String,
    /// Scans in a row it was missing from.
    missing: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CredState {
    uid: u32,
    euid: u32,
    suid: u32,
    mm: Va,
}

/// What watch remembers between scans.
#[derive(Debug)]
pub struct Watcher {
    opts: WatchOptions,
    /// (pid, start_time) -> name and misses.
    processes: BTreeMap<(u32, u64), Seen>,
    /// Finding key -> (check, summary, misses).
    findings: BTreeMap<String, (&'static str, String, u32)>,
    /// (pid, start_time) -> credentials last seen.
    creds: HashMap<(u32, u64), CredState>,
    /// Cross-scan findings already raised.
    raised: BTreeSet<String>,
    paused: bool,
    /// Scans in a row a vCPU ran another kernel.
    foreign: u32,
    /// Reset seen at this time, kernel not found again yet.
    lost: Option<Instant>,
    scans: u64,
    first: bool,
    /// The memos of incremental scans.
    incremental: Option<Incremental>,
    /// How long the last scan took (reading the guest and running the checks; not the
    /// hypervisor's state and registers asked before and after).
    last_scan: Duration,
}

/// The outcome of a tick.
#[derive(Debug)]
pub enum Tick {
    /// Keep watching.
    Continue(Vec<Event>),
    /// The guest is gone (QEMU exited, the Xen domain was destroyed).
    Gone(Vec<Event>),
}

impl Watcher {
    /// A watcher with nothing seen yet.
    pub fn new(opts: WatchOptions) -> Watcher {
        Watcher {
            processes: BTreeMap::new(),
            findings: BTreeMap::new(),
            creds: HashMap::new(),
            raised: BTreeSet::new(),
            paused: false,
            foreign: 0,
            lost: None,
            scans: 0,
            first: true,
            incremental: opts.incremental.then(|| Incremental::new(opts.full_every)),
            last_scan: Duration::ZERO,
            opts,
        }
    }

    /// How long the last scan took: the guest's memory read and the checks run, without
    /// asking the hypervisor for the guest's state and registers around it.
    pub fn last_scan(&self) -> Duration {
        self.last_scan
    }

    /// What the last incremental scan ran and kept (`None` with full scans).
    pub fn tick_stats(&self) -> Option<TickStats> {
        self.incremental.as_ref().map(|i| i.last)
    }

    /// Scans done.
    pub fn scans(&self) -> u64 {
        self.scans
    }

    /// Look at the guest once.
    pub fn tick(&mut self, target: &mut Target) -> Tick {
        let mut events = Vec::new();
        if self.first {
            self.first = false;
            events.push(started(target, false));
        }
        let Some(state) = target.state() else {
            // a dump: one scan
            self.scan(target, &mut events);
            return Tick::Continue(events);
        };
        if let LiveState::Gone(reason) = state {
            events.push(Event::Shutdown { reason });
            return Tick::Gone(events);
        }
        if state == LiveState::Paused {
            if !self.paused {
                self.paused = true;
                events.push(Event::Paused);
            }
            return Tick::Continue(events);
        }
        if self.paused {
            self.paused = false;
            events.push(Event::Resumed);
        }
        if let Some(since) = self.lost {
            // the new kernel is taken once it has booted (its objects before that are
            // not the running system), or after BOOT_GRACE in any state: a kernel that
            // never looks booted (e.g. a damaged tasks list) is still watched
            let accept_booting = since.elapsed() >= BOOT_GRACE;
            match target.reidentify(10, Duration::from_millis(20), accept_booting) {
                Ok(true) => {
                    self.lost = None;
                    self.forget();
                    events.push(started(target, true));
                }
                Ok(false) => return Tick::Continue(events),
                Err(e) => {
                    events.push(Event::ScanError {
                        error: format!("finding the kernel again: {e}"),
                    });
                    return Tick::Continue(events);
                }
            }
        } else if target.executing() == Executing::Other {
            // never scan a kernel the vCPUs do not run: its memory is being reused
            self.another_kernel(&mut events);
            return Tick::Continue(events);
        } else {
            self.foreign = 0;
        }
        let guard = if self.opts.pause {
            match target.pause() {
                Ok(g) => g,
                Err(e) => {
                    events.push(Event::ScanError {
                        error: e.to_string(),
                    });
                    return Tick::Continue(events);
                }
            }
        } else {
            None
        };
        let mut scanned = Vec::new();
        self.scan(target, &mut scanned);
        drop(guard);
        // a reboot that began during the scan: what it read is not this kernel's
        if target.executing() == Executing::Other {
            self.another_kernel(&mut events);
        } else {
            events.extend(scanned);
        }
        Tick::Continue(events)
    }

    /// A vCPU runs another kernel: after two such looks in a row, the guest was reset.
    fn another_kernel(&mut self, events: &mut Vec<Event>) {
        self.foreign += 1;
        if self.foreign >= 2 {
            self.foreign = 0;
            self.lost = Some(Instant::now());
            events.push(Event::Reset);
        }
    }

    fn forget(&mut self) {
        self.processes.clear();
        self.findings.clear();
        self.creds.clear();
        self.raised.clear();
        if let Some(i) = &mut self.incremental {
            i.forget();
        }
    }

    /// The processes of every view, read again on a running guest while the tasks list
    /// looks broken (a walk torn by the guest changing it). A list that stays broken is
    /// read from both ends up to its breaks: the `hidden-process` check reports the
    /// breaks and the processes only other views hold.
    fn census(&self, target: &Target) -> Result<Census, KernelError> {
        let limits = &self.opts.settings.limits;
        // a census that is not whole counts as a failed read for the retries, and is
        // what is left when they run out
        checks::reread(&target.kernel, self.opts.retries + 1, || {
            match target.kernel.census(limits) {
                Ok(c) if c.is_whole() => Ok(c),
                other => Err(Box::new(other)),
            }
        })
        .or_else(|last| *last)
    }

    fn scan(&mut self, target: &Target, events: &mut Vec<Event>) {
        let started = Instant::now();
        self.scan_guest(target, events);
        self.last_scan = started.elapsed();
    }

    fn scan_guest(&mut self, target: &Target, events: &mut Vec<Event>) {
        self.scans += 1;
        target.kernel.invalidate();
        // process starts and exits from the tasks list (the processes only other views
        // hold are the hidden-process check's findings)
        let census = self.census(target);
        match &census {
            Ok(c) => {
                let procs: Vec<Process> = c.listed().cloned().collect();
                self.process_events(&procs, events);
                self.cred_history(target, &procs, events);
            }
            Err(error) => events.push(Event::ScanError {
                error: format!("tasks list: {error}"),
            }),
        }
        let text_now = (self.scans - 1).is_multiple_of(self.opts.text_every.max(1));
        let checks: Vec<Check> = self
            .opts
            .checks
            .iter()
            .copied()
            .filter(|&c| !matches!(c, Check::KernelText | Check::KernelEntries) || text_now)
            .collect();
        let mut first = match &mut self.incremental {
            Some(inc) => inc.run(target, census, &checks, &self.opts.settings),
            None => checks::run_scan(
                checks::Scan::with_census(
                    &target.kernel,
                    &target.registers,
                    &self.opts.settings,
                    census,
                ),
                &checks,
            ),
        };
        // a check that failed on a running guest is run once more on a fresh read: a
        // process that exited during the scan (its credentials or mappings freed under
        // the walk) is the guest's own transient state, not an error to report
        if target.is_live() && !self.opts.pause && !first.errors.is_empty() {
            let failed: BTreeSet<&'static str> = first.errors.iter().map(|e| e.check).collect();
            let retry = self.read_again(target, &checks, &failed);
            first.errors = retry.errors;
            first.findings.retain(|f| !failed.contains(f.check));
            first.findings.extend(retry.findings);
            first.ran.extend(retry.ran);
            first.not_checked.extend(retry.not_checked);
        }
        // a new finding of a running guest is confirmed by a second read of its checks
        // (what was reported before was confirmed then)
        let new: BTreeSet<&'static str> = first
            .findings
            .iter()
            .filter(|f| !self.findings.contains_key(&f.key))
            .map(|f| f.check)
            .collect();
        let report = if target.is_live() && !self.opts.pause && !new.is_empty() {
            let second = self.read_again(target, &checks, &new);
            let known = &self.findings;
            let mut first = first;
            let confirmed: BTreeSet<&str> =
                second.findings.iter().map(|f| f.key.as_str()).collect();
            first
                .findings
                .retain(|f| known.contains_key(&f.key) || confirmed.contains(f.key.as_str()));
            first
        } else {
            first
        };
        for e in &report.errors {
            events.push(Event::ScanError {
                error: e.to_string(),
            });
        }
        let ran: BTreeSet<&str> = report.ran.iter().map(|c| c.name()).collect();
        let now: BTreeSet<&str> = report.findings.iter().map(|f| f.key.as_str()).collect();
        for f in &report.findings {
            match self.findings.get_mut(&f.key) {
                Some(entry) => entry.2 = 0,
                None => {
                    self.findings
                        .insert(f.key.clone(), (f.check, f.summary.clone(), 0));
                    events.push(Event::Finding(f.clone()));
                }
            }
        }
        // gone only from checks that ran, twice in a row
        let mut cleared = Vec::new();
        for (key, (check, summary, misses)) in self.findings.iter_mut() {
            if now.contains(key.as_str()) || !ran.contains(check) {
                continue;
            }
            *misses += 1;
            if *misses >= 2 {
                cleared.push(key.clone());
                events.push(Event::FindingCleared {
                    check,
                    key: key.clone(),
                    summary: summary.clone(),
                });
            }
        }
        for k in cleared {
            self.findings.remove(&k);
        }
    }

    /// The checks of `checks` named in `names`, run in full on a fresh read of the
    /// guest (to retry a failed check, or confirm a new finding).
    fn read_again(&self, target: &Target, checks: &[Check], names: &BTreeSet<&str>) -> Report {
        let again: Vec<Check> = checks
            .iter()
            .copied()
            .filter(|c| names.contains(c.name()))
            .collect();
        target.kernel.invalidate();
        checks::run_once(
            &target.kernel,
            &target.registers,
            &again,
            &self.opts.settings,
        )
    }

    fn process_events(&mut self, procs: &[Process], events: &mut Vec<Event>) {
        let mut present = BTreeSet::new();
        for p in procs {
            let key = (p.pid, p.start_time);
            present.insert(key);
            match self.processes.get_mut(&key) {
                Some(s) => s.missing = 0,
                None => {
                    let comm = guest_str(&p.comm);
                    self.processes.insert(
                        key,
                        Seen {
                            comm: comm.clone(),
                            missing: 0,
                        },
                    );
                    events.push(Event::ProcessStart {
                        pid: p.pid,
                        ppid: p.ppid,
                        uid: p.uid,
                        comm,
                    });
                }
            }
        }
        let mut gone = Vec::new();
        for (key, s) in self.processes.iter_mut() {
            if present.contains(key) {
                continue;
            }
            s.missing += 1;
            if s.missing >= 2 {
                gone.push(*key);
                events.push(Event::ProcessExit {
                    pid: key.0,
                    comm: s.comm.clone(),
                });
            }
        }
        for k in gone {
            self.processes.remove(&k);
            self.creds.remove(&k);
        }
    }

    fn cred_history(&mut self, target: &Target, procs: &[Process], events: &mut Vec<Event>) {
        for p in procs.iter().filter(|p| !p.is_kernel_thread()) {
            let Ok(c) = target.kernel.task_creds(p.task) else {
                continue;
            };
            let key = (p.pid, p.start_time);
            let now = CredState {
                uid: c.real.uid,
                euid: c.real.euid,
                suid: c.real.suid,
                mm: p.mm,
            };
            if let Some(before) = self.creds.insert(key, now) {
                let was_user = before.uid != 0 && before.euid != 0 && before.suid != 0;
                let is_root = now.uid == 0 || now.euid == 0 || now.suid == 0;
                let fkey = format!("credentials:became-root:{}:{}", p.pid, p.start_time);
                if was_user && is_root && before.mm == now.mm && self.raised.insert(fkey.clone()) {
                    let comm = guest_str(&p.comm);
                    events.push(Event::Finding(
                        Finding::new(
                            "credentials",
                            Severity::High,
                            fkey,
                            format!(
                                "process {} ({comm}) went from uid {}/{}/{} to {}/{}/{} (real/effective/saved) without an exec: not a setuid program, a change behind the kernel's back",
                                p.pid, before.uid, before.euid, before.suid, now.uid, now.euid, now.suid
                            ),
                        )
                        .num("pid", u64::from(p.pid))
                        .text("comm", comm)
                        .addr("task", p.task.0)
                        .num("uid_before", u64::from(before.uid))
                        .num("uid", u64::from(now.uid))
                        .addr("mm", now.mm.0),
                    ));
                }
            }
        }
    }
}

fn started(target: &Target, after_reset: bool) -> Event {
    Event::Started {
        release: guest_str(target.profile().kernel.release.as_bytes()),
        virt_shift: target.kernel.placement().virt_shift,
        after_reset,
    }
}

/// Sleep until `deadline` in small steps, returning early when `stop` says so.
pub fn sleep_until(deadline: Instant, stop: &dyn Fn() -> bool) {
    while !stop() {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
    }
}
