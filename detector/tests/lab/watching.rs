//! `detector watch` beside the attack scenario (issue 24): every check at 10 Hz,
//! incremental (the default), with the kernel image, on the guest's second QMP socket,
//! from the clean guest to the last attack before the ELF dump.
//!
//! - Each finding a live `check` reports must have been raised by watch no later than
//!   [`WITHIN`] after that `check` started ([`TEXT_WITHIN`] for kernel-entries and
//!   kernel-text, which watch runs on one scan in 10): a unit kept from a memo while the
//!   guest changed what it read would show here as a finding raised late or never.
//! - After the ELF dump, the findings watch holds open (raised and not cleared) must
//!   be exactly those `check` finds in the dump, but for watch's own cross-scan
//!   finding (`became-root`, which no single scan can see).
//!
//! Findings are compared by check and key ([`Id`]). The latencies are printed: the
//! test's log holds the figures.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::SystemTime;

use super::*;

/// How long after a live `check` that reports a finding watch may raise it at most:
/// 10 intervals of 100 ms, generous for a noisy 2-core host running a TCG guest (a
/// tick takes a few ms, a new finding one more read to confirm).
pub(crate) const WITHIN: Duration = Duration::from_secs(1);

/// The same for the checks watch runs on one scan in 10 (`--text-every`).
pub(crate) const TEXT_WITHIN: Duration = Duration::from_secs(3);

/// A finding's check and key (what identifies it across scans: watch raises a finding
/// once, as first seen, and keeps it by its key while it stays, even if its summary
/// changes, e.g. a probe's owner read as "module area, no known module" while its
/// module loads, and by its name after).
type Id = (String, String);

thread_local! {
    /// Each live `--json check` of this test: when it started, and its findings.
    static CHECKS: RefCell<Vec<(SystemTime, Vec<Id>)>> = const { RefCell::new(Vec::new()) };
}

/// Note a live `check` run that started at `started` (the harness calls it).
pub(crate) fn note_check(started: SystemTime, run: &Run) {
    let Ok(v) = serde_json::from_str::<Value>(&run.stdout) else {
        return;
    };
    let found = v["findings"]
        .as_array()
        .map(|a| a.iter().map(identity).collect())
        .unwrap_or_default();
    CHECKS.with(|c| c.borrow_mut().push((started, found)));
}

/// A finding's [`Id`].
fn identity(f: &Value) -> Id {
    (
        f["check"].as_str().unwrap_or("").to_string(),
        f["key"].as_str().unwrap_or("").to_string(),
    )
}

/// Milliseconds since the epoch of a `ts` as watch prints it
/// (`2026-12-07T20:00:00.123Z`).
fn millis(ts: &str) -> Option<i64> {
    let (date, time) = ts.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i32>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let date = ::time::Date::from_calendar_date(
        y,
        ::time::Month::try_from(u8::try_from(m).ok()?).ok()?,
        u8::try_from(day).ok()?,
    )
    .ok()?;
    let (hms, ms) = time.split_once('.')?;
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    let days = i64::from(date.to_julian_day() - 2_440_588);
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms.parse::<i64>().ok()?)
}

fn epoch_millis(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A running `detector watch` and its lines.
pub(crate) struct Watching {
    child: Child,
    lines: common::Lines,
}

impl Watching {
    /// Start watching `guest` at 10 Hz with every check.
    pub(crate) fn start(d: &Detector, guest: &Guest) -> Watching {
        CHECKS.with(|c| c.borrow_mut().clear());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_detector"));
        cmd.arg("--qemu")
            .arg(guest.watch_qmp_socket())
            .arg("--profiles")
            .arg(&d.profiles);
        if let Some(image) = &d.image {
            cmd.arg("--image").arg(image);
        }
        let mut child = cmd
            .args(["--json", "watch", "--interval", "100ms"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("detector watch");
        let mut lines = common::Lines::new(child.stdout.take().expect("stdout"));
        lines.wait_for("watch's first scan", Duration::from_secs(120), |v| {
            v["event"] == "process-start"
        });
        Watching { child, lines }
    }

    /// Stop watch and compare what it raised with every live `check` so far, and what
    /// it holds open with `dump` (`check` on the ELF dump taken just before).
    pub(crate) fn finish(mut self, kernel: &str, dump: &Run) -> Vec<String> {
        // what watch sees of the guest as dumped (the dump pauses it)
        std::thread::sleep(Duration::from_secs(2));
        // SAFETY: kill(2) on our own child
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let code = self.child.wait().map(|s| s.code()).ok().flatten();
        self.lines.rest(Duration::from_secs(5));
        let mut problems = Vec::new();
        if code != Some(0) {
            problems.push(format!("{kernel}: watch exited {code:?}"));
        }
        // raised: first time of each finding; open: raised and not cleared since
        let mut raised: BTreeMap<Id, i64> = BTreeMap::new();
        let mut open: BTreeSet<Id> = BTreeSet::new();
        for (line, v) in &self.lines.seen {
            let at = v["ts"].as_str().and_then(millis);
            match v["event"].as_str() {
                Some("finding") => {
                    let id = identity(v);
                    if let Some(at) = at {
                        raised.entry(id.clone()).or_insert(at);
                    }
                    open.insert(id);
                }
                Some("finding-cleared") => {
                    open.remove(&identity(v));
                }
                Some("scan-error") => problems.push(format!("{kernel}: watch: {line}")),
                _ => {}
            }
        }
        // each finding of a live check, raised in time
        let checks = CHECKS.with(|c| std::mem::take(&mut *c.borrow_mut()));
        let mut seen = BTreeSet::new();
        let mut latencies: Vec<(i64, String)> = Vec::new();
        for (started, found) in &checks {
            for id in found {
                if !seen.insert(id.clone()) {
                    continue;
                }
                let within = if matches!(id.0.as_str(), "kernel-text" | "kernel-entries") {
                    TEXT_WITHIN
                } else {
                    WITHIN
                };
                match raised.get(id) {
                    Some(&at) => {
                        let late = at - epoch_millis(*started);
                        latencies.push((late, id.0.clone()));
                        if late > within.as_millis() as i64 {
                            problems.push(format!(
                                "{kernel}: watch raised {}: {} {late} ms after a check that reported it started (at most {within:?})",
                                id.0, id.1
                            ));
                        }
                    }
                    None => {
                        problems.push(format!("{kernel}: watch never raised {}: {}", id.0, id.1))
                    }
                }
            }
        }
        latencies.sort();
        eprintln!(
            "{kernel}: watch at 10 Hz raised {} findings of live checks, ms after the check started (negative: before): {}",
            latencies.len(),
            latencies
                .iter()
                .map(|(ms, c)| format!("{c} {ms}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // what it holds open is what check finds in the dump
        let in_dump: BTreeSet<Id> = dump.json()["findings"]
            .as_array()
            .map(|a| a.iter().map(identity).collect())
            .unwrap_or_default();
        let own = |id: &Id| id.0 == "credentials" && id.1.contains("without an exec");
        for id in open.iter().filter(|id| !own(id) && !in_dump.contains(*id)) {
            problems.push(format!(
                "{kernel}: watch holds {}: {} open, check on the dump does not find it",
                id.0, id.1
            ));
        }
        for id in in_dump.iter().filter(|id| !open.contains(*id)) {
            problems.push(format!(
                "{kernel}: check on the dump finds {}: {}, watch does not hold it open",
                id.0, id.1
            ));
        }
        problems
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_timestamps_parse() {
    assert_eq!(millis("1970-01-01T00:00:01.250Z"), Some(1250));
    assert_eq!(
        millis("2026-12-07T20:00:00.123Z"),
        Some(epoch_millis(
            std::time::UNIX_EPOCH + Duration::from_millis(1_796_673_600_123)
        ))
    );
    assert_eq!(millis("2026-12-07 20:00:00"), None);
}
