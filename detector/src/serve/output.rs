//! Where the service's events go: JSON lines on standard output (journald under
//! systemd), RFC 5424 messages on the local syslog socket, an append-only JSON-lines
//! file. Each line is a [`Record`]'s, made and written by the code `watch` uses too
//! ([`crate::events`]); syslog carries the same line as its message.

use std::os::unix::net::UnixDatagram;
use std::time::{SystemTime, UNIX_EPOCH};

use super::config::{Events, Outputs};
use crate::events::{print_line, AlertFile, OutputError, Record};

/// `2026-11-26T18:30:05.123Z`: UTC, milliseconds (a clock before 1970 reads as the
/// epoch, one past year 9999 as its last millisecond).
pub fn rfc3339(t: SystemTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let at = time::Duration::try_from(since)
        .ok()
        .and_then(|d| time::OffsetDateTime::UNIX_EPOCH.checked_add(d))
        .filter(|at| at.year() <= 9999)
        .unwrap_or(time::macros::datetime!(9999-12-31 23:59:59.999 UTC));
    at.format(FORMAT).unwrap_or_default()
}

fn wants(e: Events, ev: &Record) -> bool {
    match e {
        Events::None => false,
        Events::Alerts => ev.alert,
        Events::All => true,
    }
}

/// The open outputs.
pub struct Sinks {
    outputs: Outputs,
    file: Option<AlertFile>,
    syslog: Option<UnixDatagram>,
    hostname: String,
    /// Write errors so far (reported once per output, counted in metrics).
    pub errors: u64,
    complained: [bool; 3],
}

impl std::fmt::Debug for Sinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sinks")
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl Sinks {
    /// Open what the configuration asks for.
    pub fn open(outputs: &Outputs) -> Result<Sinks, OutputError> {
        let file = match (&outputs.file, outputs.file_events) {
            (Some(p), e) if e != Events::None => Some(AlertFile::open(p)?),
            _ => None,
        };
        let syslog = if outputs.syslog != Events::None {
            let s = UnixDatagram::unbound().map_err(|source| OutputError {
                what: "creating a socket for",
                path: outputs.syslog_socket.clone(),
                source,
            })?;
            s.connect(&outputs.syslog_socket)
                .map_err(|source| OutputError {
                    what: "connecting to the syslog socket",
                    path: outputs.syslog_socket.clone(),
                    source,
                })?;
            // a syslog daemon that does not keep up must never stall the service (a
            // full datagram queue blocks the sender): such a message is dropped and
            // counted; stdout and the file still have it
            s.set_nonblocking(true).map_err(|source| OutputError {
                what: "configuring the socket for",
                path: outputs.syslog_socket.clone(),
                source,
            })?;
            Some(s)
        } else {
            None
        };
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(|| "-".into());
        Ok(Sinks {
            outputs: outputs.clone(),
            file,
            syslog,
            hostname,
            errors: 0,
            complained: [false; 3],
        })
    }

    /// Write one event to every output that wants it. Output failures never stop the
    /// service: they are counted and reported once on standard error.
    pub fn emit(&mut self, ev: &Record) {
        let now = SystemTime::now();
        let line = ev.to_line(now);
        if wants(self.outputs.stdout, ev) {
            let r = print_line(&line);
            self.check(0, "standard output", r);
        }
        if wants(self.outputs.file_events, ev) {
            if let Some(f) = &mut self.file {
                let r = f.append(&line);
                self.check(1, "the alert file", r);
            }
        }
        if wants(self.outputs.syslog, ev) {
            if let Some(s) = &self.syslog {
                // <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG; facility daemon
                let pri = 3 * 8 + u32::from(ev.severity.min(7));
                let msgid = ev.kind();
                let msg = format!(
                    "<{pri}>1 {} {} vmi-detector {} {} - {line}",
                    rfc3339(now),
                    self.hostname,
                    std::process::id(),
                    msgid
                );
                let r = s.send(msg.as_bytes()).map(|_| ());
                self.check(2, "syslog", r);
            }
        }
    }

    fn check(&mut self, which: usize, name: &str, r: std::io::Result<()>) {
        if let Err(e) = r {
            self.errors += 1;
            if !self.complained[which] {
                self.complained[which] = true;
                eprintln!("detector serve: writing to {name} failed: {e} (further failures are counted in the metrics)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_717_805_123);
        assert_eq!(rfc3339(t), "2026-11-26T18:30:05.123Z"); // date -u -d @1795717805
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&rfc3339(leap)[..10], "2000-02-29");
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(rfc3339(before), "1970-01-01T00:00:00.000Z");
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn file_and_syslog_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("log");
        let server = UnixDatagram::bind(&sock).unwrap();
        let file = dir.path().join("alerts.jsonl");
        let mut sinks = Sinks::open(&Outputs {
            stdout: Events::None,
            syslog: Events::Alerts,
            syslog_socket: sock,
            file: Some(file.clone()),
            file_events: Events::All,
        })
        .unwrap();
        let quiet = Record::new("g", json!({"event": "process-start"}), false, 6);
        let loud = Record::new("g", json!({"event": "finding", "check": "idt"}), true, 2);
        sinks.emit(&quiet);
        sinks.emit(&loud);
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), 2);
        let mut buf = [0u8; 4096];
        let n = server.recv(&mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(msg.starts_with("<26>1 "), "{msg}");
        assert!(
            msg.contains(" vmi-detector ") && msg.contains(" finding - {"),
            "{msg}"
        );
        server.set_nonblocking(true).unwrap();
        assert!(server.recv(&mut buf).is_err(), "only alerts go to syslog");
    }

    #[test]
    fn a_syslog_that_does_not_read_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("log");
        let _server = UnixDatagram::bind(&sock).unwrap(); // never read
        let mut sinks = Sinks::open(&Outputs {
            stdout: Events::None,
            syslog: Events::All,
            syslog_socket: sock,
            file: None,
            file_events: Events::None,
        })
        .unwrap();
        let ev = Record::new("g", json!({"event": "finding"}), true, 2);
        let t = std::time::Instant::now();
        for _ in 0..2000 {
            sinks.emit(&ev);
        }
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(sinks.errors > 0, "the full queue's drops are counted");
    }
}
