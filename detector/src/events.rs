//! The event lines of `watch --json`, `watch --alerts` and `serve`, and where they are
//! written.
//!
//! Every line is one JSON object of `docs/events.schema.json`: `ts` (RFC 3339, UTC,
//! milliseconds), `guest` (whose event), `event` (its kind) and the kind's fields. The
//! kinds are a guest's [`Event`]s (what `watch` sees) and the service's own
//! [`ServiceEvent`]s. A [`Record`] is one event of one guest; [`Record::to_line`] makes
//! its line, [`print_line`] writes it to standard output and [`AlertFile::append`] to an
//! append-only file, so the three commands' lines are made and written by the same code.
//!
//! The guest is the name a reader of the lines knows it by: `serve`'s configured name
//! (the Xen domain's for `[xen] all`, `-` for the service's own events), `watch`'s
//! `--name` or else [`crate::target::Target::name`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{json, Value};

use crate::finding::Severity;
use crate::serve::output::rfc3339;
use crate::watch::Event;

/// One event of one guest (or of the service itself).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The guest it is about (`-` for the service itself).
    pub guest: String,
    /// The event object (`event` names its kind).
    pub body: Value,
    /// True for alerts: findings and changes of a guest's state.
    pub alert: bool,
    /// syslog severity (RFC 5424: 2 critical, 3 error, 4 warning, 5 notice,
    /// 6 informational).
    pub severity: u8,
}

impl Record {
    /// A record of the service's own or a guest's attachment: `body` is its event object.
    pub fn new(guest: &str, body: Value, alert: bool, severity: u8) -> Record {
        Record {
            guest: guest.to_string(),
            body,
            alert,
            severity,
        }
    }

    /// What `watch` saw on `guest`.
    pub fn watch(guest: &str, e: &Event) -> Record {
        Record::new(guest, e.to_json(), e.is_alert(), severity(e))
    }

    /// One of the service's events, about `guest` (`-` for the service itself): all
    /// are alerts.
    pub fn service(guest: &str, e: &ServiceEvent) -> Record {
        Record::new(guest, e.to_json(), true, e.severity())
    }

    /// The event's kind (`finding`, `process-start`, ...).
    pub fn kind(&self) -> &str {
        self.body
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or("event")
    }

    /// One line of JSON (without its newline): `ts`, `guest` and the event's fields.
    pub fn to_line(&self, now: SystemTime) -> String {
        let mut v = json!({ "ts": rfc3339(now), "guest": self.guest });
        if let (Some(out), Some(body)) = (v.as_object_mut(), self.body.as_object()) {
            for (k, x) in body {
                out.insert(k.clone(), x.clone());
            }
        }
        v.to_string()
    }
}

/// What `serve` reports besides its guests' [`Event`]s: its own life and a guest's
/// attachment.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceEvent {
    /// The service started.
    Started {
        /// The configuration file.
        config: String,
        /// Guests listed by name.
        guests: usize,
        /// Every running Xen domain is watched too.
        xen_all: bool,
    },
    /// The service stopped.
    Stopped {
        /// Scans done over its life.
        scans: u64,
    },
    /// The configuration was read again and applied.
    ConfigReloaded {
        /// Guests whose settings did not change (their watchers kept).
        kept: usize,
        /// New guests.
        added: Vec<String>,
        /// Guests whose settings changed (watched anew).
        changed: Vec<String>,
        /// Guests no longer listed.
        removed: Vec<String>,
    },
    /// A new configuration could not be applied; the running one is kept.
    ConfigRejected {
        /// Why.
        error: String,
    },
    /// The metrics endpoint could not listen at its new address.
    MetricsFailed {
        /// The address.
        address: String,
        /// Why.
        error: String,
    },
    /// Listing the running Xen domains failed.
    XenListFailed {
        /// Why.
        error: String,
    },
    /// Listing the running libvirt domains failed.
    LibvirtListFailed {
        /// Why.
        error: String,
    },
    /// The scans use more CPU than the budget (`over`), or fit in it again.
    CpuBudget {
        /// Over the budget (scans are held), or back under it.
        over: bool,
        /// The budget, in percent of one core.
        budget_percent: f64,
        /// The use over the window, when over.
        used_percent: Option<f64>,
    },
    /// A guest was opened and its kernel found.
    Attached {
        /// `qemu:SOCKET` or `xen:DOMAIN`.
        source: String,
        /// The profile file used.
        profile: String,
        /// Its scan interval.
        interval_ms: u64,
    },
    /// A guest could not be opened (it is tried again, with a growing delay).
    AttachFailed {
        /// Why.
        error: String,
    },
    /// A guest is no longer watched.
    Detached {
        /// Why.
        reason: String,
    },
}

impl ServiceEvent {
    /// The event as one JSON object (`event` names its kind).
    pub fn to_json(&self) -> Value {
        match self {
            ServiceEvent::Started {
                config,
                guests,
                xen_all,
            } => json!({
                "event": "service-started",
                "config": config,
                "guests": guests,
                "xen_all": xen_all,
                "version": env!("CARGO_PKG_VERSION"),
            }),
            ServiceEvent::Stopped { scans } => {
                json!({ "event": "service-stopped", "scans": scans })
            }
            ServiceEvent::ConfigReloaded {
                kept,
                added,
                changed,
                removed,
            } => json!({
                "event": "config-reloaded",
                "kept": kept,
                "added": added,
                "changed": changed,
                "removed": removed,
            }),
            ServiceEvent::ConfigRejected { error } => {
                json!({ "event": "config-rejected", "error": error })
            }
            ServiceEvent::MetricsFailed { address, error } => {
                json!({ "event": "metrics-failed", "address": address, "error": error })
            }
            ServiceEvent::XenListFailed { error } => {
                json!({ "event": "xen-list-failed", "error": error })
            }
            ServiceEvent::LibvirtListFailed { error } => {
                json!({ "event": "libvirt-list-failed", "error": error })
            }
            ServiceEvent::CpuBudget {
                over,
                budget_percent,
                used_percent,
            } => {
                let mut v = json!({ "event": "cpu-budget", "over": over, "budget_percent": budget_percent });
                if let Some(u) = used_percent {
                    v["used_percent"] = json!(u);
                }
                v
            }
            ServiceEvent::Attached {
                source,
                profile,
                interval_ms,
            } => json!({
                "event": "attached",
                "source": source,
                "profile": profile,
                "interval_ms": interval_ms,
            }),
            ServiceEvent::AttachFailed { error } => {
                json!({ "event": "attach-failed", "error": error })
            }
            ServiceEvent::Detached { reason } => json!({ "event": "detached", "reason": reason }),
        }
    }

    /// Its syslog severity: failures of the service's own as errors, a guest lost, a
    /// guest that cannot be opened and a CPU budget overrun as warnings, the rest notices.
    pub fn severity(&self) -> u8 {
        match self {
            ServiceEvent::ConfigRejected { .. } | ServiceEvent::MetricsFailed { .. } => 3,
            ServiceEvent::XenListFailed { .. }
            | ServiceEvent::LibvirtListFailed { .. }
            | ServiceEvent::AttachFailed { .. }
            | ServiceEvent::Detached { .. }
            | ServiceEvent::CpuBudget { over: true, .. } => 4,
            ServiceEvent::Started { .. }
            | ServiceEvent::Stopped { .. }
            | ServiceEvent::ConfigReloaded { .. }
            | ServiceEvent::CpuBudget { over: false, .. }
            | ServiceEvent::Attached { .. } => 5,
        }
    }
}

/// The syslog severity of a watch event: findings by their severity, a reset, a guest
/// gone and a failed scan as warnings, the rest informational.
pub fn severity(e: &Event) -> u8 {
    match e {
        Event::Finding(f) => match f.severity {
            Severity::High => 2,
            Severity::Medium => 4,
            Severity::Low => 5,
        },
        Event::Reset | Event::Shutdown { .. } | Event::ScanError { .. } => 4,
        _ => 6,
    }
}

/// Write one line to standard output and flush it (a reader of a pipe sees each
/// event when it happens).
pub fn print_line(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Why an output could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct OutputError {
    /// What was being done.
    pub what: &'static str,
    /// The file or socket.
    pub path: PathBuf,
    /// Why it failed.
    pub source: std::io::Error,
}

/// An append-only file of event lines (`watch --alerts`, serve's `file`): each line is
/// on disk before [`AlertFile::append`] returns, so an alert survives a crash that
/// follows it.
#[derive(Debug)]
pub struct AlertFile {
    file: File,
}

impl AlertFile {
    /// Open `path` for appending, creating it when missing.
    pub fn open(path: &Path) -> Result<AlertFile, OutputError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| OutputError {
                what: "opening the alert file",
                path: path.to_path_buf(),
                source,
            })?;
        Ok(AlertFile { file })
    }

    /// Append one line and sync it to disk.
    pub fn append(&mut self, line: &str) -> std::io::Result<()> {
        writeln!(self.file, "{line}")?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Finding;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn lines_carry_guest_and_time() {
        let ev = Record::new(
            "web1",
            json!({"event": "process-start", "pid": 7}),
            false,
            6,
        );
        let v: Value = serde_json::from_str(&ev.to_line(UNIX_EPOCH)).unwrap();
        assert_eq!(v["guest"], "web1");
        assert_eq!(v["pid"], 7);
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
        assert_eq!(ev.kind(), "process-start");
    }

    #[test]
    fn watch_records_take_alert_and_severity_from_the_event() {
        let f = Finding::new("idt", Severity::High, "k".into(), "hooked".into());
        let r = Record::watch("db", &Event::Finding(f));
        assert!(r.alert);
        assert_eq!((r.severity, r.kind()), (2, "finding"));
        let r = Record::watch("db", &Event::Paused);
        assert!(!r.alert);
        assert_eq!((r.severity, r.kind()), (6, "paused"));
        let r = Record::watch("db", &Event::Reset);
        assert!(r.alert);
        assert_eq!(r.severity, 4);
    }

    /// One event of every kind `watch` reports.
    fn watch_examples() -> Vec<Event> {
        let finding = Finding::new(
            "syscall-table",
            Severity::High,
            "syscall-table:180".into(),
            "syscall 180 is hooked".into(),
        )
        .num("nr", 180)
        .addr("handler", 0xffff_ffff_c000_1000)
        .text("owner", "module vmi_hooksys");
        let all = vec![
            Event::Started {
                release: "6.1.0-40-amd64".into(),
                virt_shift: 0x1e00_0000,
                after_reset: false,
            },
            Event::ProcessStart {
                pid: 42,
                ppid: 1,
                uid: 1000,
                comm: "sshd".into(),
            },
            Event::ProcessExit {
                pid: 42,
                comm: "sshd".into(),
            },
            Event::Finding(finding),
            Event::FindingCleared {
                check: "syscall-table",
                key: "syscall-table:sys_call_table:180".into(),
                summary: "syscall 180 is hooked".into(),
            },
            Event::Paused,
            Event::Resumed,
            Event::Reset,
            Event::Shutdown {
                reason: "QEMU exited".into(),
            },
            Event::ScanError {
                error: "tasks list: a cycle".into(),
            },
            Event::Stopped {
                scans: 12,
                reason: "signal".into(),
            },
        ];
        for e in &all {
            // a new kind fails to compile here until it has an example above
            match e {
                Event::Started { .. }
                | Event::ProcessStart { .. }
                | Event::ProcessExit { .. }
                | Event::Finding(_)
                | Event::FindingCleared { .. }
                | Event::Paused
                | Event::Resumed
                | Event::Reset
                | Event::Shutdown { .. }
                | Event::ScanError { .. }
                | Event::Stopped { .. } => {}
            }
        }
        all
    }

    /// One event of every kind `serve` reports of its own.
    fn service_examples() -> Vec<ServiceEvent> {
        let all = vec![
            ServiceEvent::Started {
                config: "/etc/vmi/detector.toml".into(),
                guests: 2,
                xen_all: true,
            },
            ServiceEvent::Stopped { scans: 300 },
            ServiceEvent::ConfigReloaded {
                kept: 1,
                added: vec!["web2".into()],
                changed: vec![],
                removed: vec!["db".into()],
            },
            ServiceEvent::ConfigRejected {
                error: "line 3: unknown key".into(),
            },
            ServiceEvent::MetricsFailed {
                address: "127.0.0.1:9101".into(),
                error: "address in use".into(),
            },
            ServiceEvent::XenListFailed {
                error: "no xenstore".into(),
            },
            ServiceEvent::LibvirtListFailed {
                error: "connecting to libvirt at qemu:///system: no daemon".into(),
            },
            ServiceEvent::CpuBudget {
                over: true,
                budget_percent: 10.0,
                used_percent: Some(13.5),
            },
            ServiceEvent::CpuBudget {
                over: false,
                budget_percent: 10.0,
                used_percent: None,
            },
            ServiceEvent::Attached {
                source: "qemu:/run/vmi/web1.qmp".into(),
                profile: "/var/lib/vmi/profiles/6.1.json".into(),
                interval_ms: 1000,
            },
            ServiceEvent::AttachFailed {
                error: "no profile matches".into(),
            },
            ServiceEvent::Detached {
                reason: "the guest is gone".into(),
            },
        ];
        for e in &all {
            // a new kind fails to compile here until it has an example above
            match e {
                ServiceEvent::Started { .. }
                | ServiceEvent::Stopped { .. }
                | ServiceEvent::ConfigReloaded { .. }
                | ServiceEvent::ConfigRejected { .. }
                | ServiceEvent::MetricsFailed { .. }
                | ServiceEvent::XenListFailed { .. }
                | ServiceEvent::LibvirtListFailed { .. }
                | ServiceEvent::CpuBudget { .. }
                | ServiceEvent::Attached { .. }
                | ServiceEvent::AttachFailed { .. }
                | ServiceEvent::Detached { .. } => {}
            }
        }
        all
    }

    fn schema() -> Value {
        let text = include_str!("../../docs/events.schema.json");
        serde_json::from_str(text).expect("docs/events.schema.json is JSON")
    }

    #[test]
    fn every_event_kind_validates_against_the_schema() {
        let schema = schema();
        let validator = jsonschema::draft202012::new(&schema).expect("a valid schema");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_717_805_123);
        let mut records: Vec<Record> = watch_examples()
            .iter()
            .map(|e| Record::watch("vmi-lab-6.1.0-40-amd64", e))
            .collect();
        records.extend(service_examples().iter().map(|e| Record::service("-", e)));
        let mut kinds = std::collections::BTreeSet::new();
        for r in &records {
            let line = r.to_line(t);
            let v: Value = serde_json::from_str(&line).unwrap();
            let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{line}: {errors:?}");
            kinds.insert(r.kind().to_string());
        }
        // every kind the schema names is made by the code, and no other
        let named: std::collections::BTreeSet<String> = schema["properties"]["event"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        assert_eq!(kinds, named);
    }

    #[test]
    fn the_schema_rejects_lines_without_time_guest_or_fields() {
        let schema = schema();
        let validator = jsonschema::draft202012::new(&schema).unwrap();
        let line = Record::watch("g", &Event::Reset).to_line(UNIX_EPOCH);
        let good: Value = serde_json::from_str(&line).unwrap();
        assert!(validator.is_valid(&good));
        // watch's lines before they shared serve's format: no time, no guest
        assert!(!validator.is_valid(&Event::Reset.to_json()));
        let mut bad = good.clone();
        bad["ts"] = json!("1970-01-01 00:00:00");
        assert!(!validator.is_valid(&bad));
        let mut bad = good;
        bad["event"] = json!("finding");
        assert!(!validator.is_valid(&bad), "a finding needs its check");
    }

    #[test]
    fn the_alert_file_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        std::fs::write(&path, "earlier\n").unwrap();
        let mut f = AlertFile::open(&path).unwrap();
        let t = UNIX_EPOCH + Duration::from_secs(60);
        f.append(&Record::watch("g", &Event::Reset).to_line(t))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0], "earlier");
        let v: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["ts"], "1970-01-01T00:01:00.000Z");
        assert_eq!(v["event"], "reset");
        let missing = dir.path().join("no/such/dir/alerts.jsonl");
        let e = AlertFile::open(&missing).unwrap_err().to_string();
        assert!(e.starts_with("opening the alert file "), "{e}");
    }
}
