//! Prometheus metrics of the service, served as text (exposition format 0.0.4) on a
//! loopback address by one small thread: `GET /metrics`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `vmi_guests_configured` | gauge | |
//! | `vmi_guests_attached` | gauge | |
//! | `vmi_scans_total` | counter | guest |
//! | `vmi_scan_errors_total` | counter | guest |
//! | `vmi_scan_duration_seconds` | histogram | guest |
//! | `vmi_scan_work_seconds` | histogram | guest |
//! | `vmi_units_kept_total` | counter | guest |
//! | `vmi_units_run_total` | counter | guest |
//! | `vmi_findings_total` | counter | guest, check |
//! | `vmi_events_total` | counter | guest, event |
//! | `vmi_attach_failures_total` | counter | guest |
//! | `vmi_scans_late_total` | counter | guest |
//! | `vmi_cpu_seconds_total` | counter | |
//! | `vmi_cpu_budget_ratio` | gauge | |
//! | `vmi_output_errors_total` | counter | |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The whole of one request (reading it and writing the answer) must fit in this time.
pub const REQUEST_TIME: Duration = Duration::from_secs(2);
/// How often the thread looks whether it should stop.
const POLL: Duration = Duration::from_millis(200);

/// Upper bounds of the scan-duration histogram, in seconds.
pub const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn add(&mut self, secs: f64) {
        self.count += 1;
        self.sum += secs;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
    }
}

/// What one scan took and did (a [`Metrics::scan`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanFigures {
    /// The whole scan, the hypervisor's state and registers asked included.
    pub secs: f64,
    /// Reading the guest's memory and running the checks only.
    pub work: f64,
    /// Incremental units whose findings were kept.
    pub kept: u64,
    /// Incremental units run (all checks with full scans: 0).
    pub ran: u64,
}

/// Reads one per-guest counter.
type Counter = fn(&GuestMetrics) -> u64;

/// Reads one per-guest histogram.
type Hist = fn(&GuestMetrics) -> &Histogram;

/// Per-guest counters.
#[derive(Debug, Default, Clone)]
struct GuestMetrics {
    scans: u64,
    scan_errors: u64,
    attach_failures: u64,
    late: u64,
    durations: Histogram,
    work: Histogram,
    kept: u64,
    ran: u64,
    findings: BTreeMap<String, u64>,
    events: BTreeMap<String, u64>,
}

/// Everything the endpoint shows.
#[derive(Debug, Default)]
pub struct Metrics {
    configured: usize,
    attached: usize,
    cpu_seconds: f64,
    budget_ratio: f64,
    output_errors: u64,
    guests: BTreeMap<String, GuestMetrics>,
}

impl Metrics {
    fn guest(&mut self, name: &str) -> &mut GuestMetrics {
        self.guests.entry(name.to_string()).or_default()
    }

    /// Guests configured and attached now.
    pub fn set_guests(&mut self, configured: usize, attached: usize) {
        self.configured = configured;
        self.attached = attached;
    }

    /// A scan took and did `f`.
    pub fn scan(&mut self, guest: &str, f: ScanFigures) {
        let g = self.guest(guest);
        g.scans += 1;
        g.durations.add(f.secs);
        g.work.add(f.work);
        g.kept += f.kept;
        g.ran += f.ran;
    }

    /// An event was emitted (findings also by check).
    pub fn event(&mut self, guest: &str, kind: &str, check: Option<&str>) {
        let g = self.guest(guest);
        *g.events.entry(kind.to_string()).or_default() += 1;
        if kind == "scan-error" {
            g.scan_errors += 1;
        }
        if let Some(c) = check {
            *g.findings.entry(c.to_string()).or_default() += 1;
        }
    }

    /// Attaching to a guest failed.
    pub fn attach_failed(&mut self, guest: &str) {
        self.guest(guest).attach_failures += 1;
    }

    /// A scan started later than its interval asked (the CPU budget or slow scans).
    pub fn late(&mut self, guest: &str) {
        self.guest(guest).late += 1;
    }

    /// The service's CPU time so far and its share of the budget.
    pub fn cpu(&mut self, seconds: f64, budget_ratio: f64) {
        self.cpu_seconds = seconds;
        self.budget_ratio = budget_ratio;
    }

    /// Output write failures so far.
    pub fn output_errors(&mut self, n: u64) {
        self.output_errors = n;
    }

    /// Forget a guest no longer configured.
    pub fn remove(&mut self, guest: &str) {
        self.guests.remove(guest);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let head = |s: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut s,
            "vmi_guests_configured",
            "gauge",
            "Guests in the configuration (Xen domains found included).",
        );
        let _ = writeln!(s, "vmi_guests_configured {}", self.configured);
        head(
            &mut s,
            "vmi_guests_attached",
            "gauge",
            "Guests being watched now.",
        );
        let _ = writeln!(s, "vmi_guests_attached {}", self.attached);
        head(
            &mut s,
            "vmi_cpu_seconds_total",
            "counter",
            "CPU time used by the service (user + system).",
        );
        let _ = writeln!(s, "vmi_cpu_seconds_total {:.6}", self.cpu_seconds);
        head(
            &mut s,
            "vmi_cpu_budget_ratio",
            "gauge",
            "CPU used over the last window divided by the configured budget.",
        );
        let _ = writeln!(s, "vmi_cpu_budget_ratio {:.4}", self.budget_ratio);
        head(
            &mut s,
            "vmi_output_errors_total",
            "counter",
            "Events that an output failed to take.",
        );
        let _ = writeln!(s, "vmi_output_errors_total {}", self.output_errors);
        let per_guest: [(&str, &str, Counter); 6] = [
            ("vmi_scans_total", "Scans done.", |g| g.scans),
            (
                "vmi_scan_errors_total",
                "Scans or checks that failed.",
                |g| g.scan_errors,
            ),
            (
                "vmi_attach_failures_total",
                "Failed attempts to open the guest.",
                |g| g.attach_failures,
            ),
            (
                "vmi_scans_late_total",
                "Scans started later than the interval asked.",
                |g| g.late,
            ),
            (
                "vmi_units_kept_total",
                "Incremental scan units whose findings were kept (what they read unchanged).",
                |g| g.kept,
            ),
            ("vmi_units_run_total", "Incremental scan units run.", |g| {
                g.ran
            }),
        ];
        for (name, help, get) in per_guest {
            head(&mut s, name, "counter", help);
            for (guest, g) in &self.guests {
                let _ = writeln!(s, "{name}{{guest=\"{}\"}} {}", label(guest), get(g));
            }
        }
        let histograms: [(&str, &str, Hist); 2] = [
            (
                "vmi_scan_duration_seconds",
                "Time of one scan.",
                |g| &g.durations,
            ),
            (
                "vmi_scan_work_seconds",
                "Time of one scan's memory reads and checks (without asking the hypervisor for the guest's state and registers).",
                |g| &g.work,
            ),
        ];
        for (name, help, get) in histograms {
            head(&mut s, name, "histogram", help);
            for (guest, g) in &self.guests {
                let (l, h) = (label(guest), get(g));
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        s,
                        "{name}_bucket{{guest=\"{l}\",le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(s, "{name}_bucket{{guest=\"{l}\",le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(s, "{name}_sum{{guest=\"{l}\"}} {:.6}", h.sum);
                let _ = writeln!(s, "{name}_count{{guest=\"{l}\"}} {}", h.count);
            }
        }
        head(
            &mut s,
            "vmi_findings_total",
            "counter",
            "New findings, by check.",
        );
        for (guest, g) in &self.guests {
            for (check, n) in &g.findings {
                let _ = writeln!(
                    s,
                    "vmi_findings_total{{guest=\"{}\",check=\"{}\"}} {n}",
                    label(guest),
                    label(check)
                );
            }
        }
        head(
            &mut s,
            "vmi_events_total",
            "counter",
            "Events emitted, by kind.",
        );
        for (guest, g) in &self.guests {
            for (event, n) in &g.events {
                let _ = writeln!(
                    s,
                    "vmi_events_total{{guest=\"{}\",event=\"{}\"}} {n}",
                    label(guest),
                    label(event)
                );
            }
        }
        s
    }
}

/// A label value, escaped as the exposition format says.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The endpoint's thread; stops when `stop` is set (checked every 200 ms).
#[derive(Debug)]
pub struct Endpoint {
    /// The address it listens on (the port is known even when 0 was asked).
    pub addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Endpoint {
    /// Listen on `addr` and serve `metrics`.
    pub fn start(addr: SocketAddr, metrics: Arc<Mutex<Metrics>>) -> std::io::Result<Endpoint> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vmi-metrics".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => serve_one(conn, &metrics, &flag),
                        Err(_) => std::thread::sleep(POLL),
                    }
                }
            })?;
        Ok(Endpoint {
            addr,
            thread: Some(thread),
            stop,
        })
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request, bounded in size and in time: the whole request must arrive, and the
/// answer be written, within [`REQUEST_TIME`], else the connection is dropped; `stop`
/// is looked at every 200 ms meanwhile. A slow or hostile client cannot hold the thread
/// longer, nor delay shutdown.
fn serve_one(mut conn: TcpStream, metrics: &Mutex<Metrics>, stop: &AtomicBool) {
    let deadline = Instant::now() + REQUEST_TIME;
    // the time left, at most one look at `stop` away; `None` once it is over
    let slice = || {
        let left = deadline.saturating_duration_since(Instant::now());
        (!left.is_zero() && !stop.load(Ordering::Relaxed)).then(|| left.min(POLL))
    };
    let _ = conn.set_nonblocking(false);
    let mut buf = [0u8; 4096];
    let mut n = 0;
    while n < buf.len() {
        let Some(wait) = slice() else { return };
        if conn.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        match conn.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n")
                    || buf[..n].windows(2).any(|w| w == b"\n\n")
                {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let request = String::from_utf8_lossy(&buf[..n]);
    let first = request.lines().next().unwrap_or("");
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body, kind) = if method != "GET" {
        (
            "405 Method Not Allowed",
            "GET only\n".to_string(),
            "text/plain",
        )
    } else if path == "/metrics" || path.starts_with("/metrics?") {
        let text = metrics.lock().map(|m| m.render()).unwrap_or_default();
        ("200 OK", text, "text/plain; version=0.0.4; charset=utf-8")
    } else {
        ("404 Not Found", "see /metrics\n".to_string(), "text/plain")
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut rest = answer.as_bytes();
    while !rest.is_empty() {
        let Some(wait) = slice() else { return };
        if conn.set_write_timeout(Some(wait)).is_err() {
            return;
        }
        match conn.write(rest) {
            Ok(0) => return,
            Ok(k) => rest = &rest[k..],
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition() {
        let mut m = Metrics::default();
        m.set_guests(2, 1);
        let f = |secs, work, kept, ran| ScanFigures {
            secs,
            work,
            kept,
            ran,
        };
        m.scan("web1", f(0.002, 0.0004, 0, 40));
        m.scan("web1", f(0.3, 0.0008, 37, 3));
        m.event("web1", "finding", Some("idt"));
        m.event("web1", "scan-error", None);
        let text = m.render();
        assert!(text.contains("vmi_guests_attached 1\n"));
        assert!(text.contains("vmi_scans_total{guest=\"web1\"} 2\n"));
        assert!(text.contains("vmi_scan_duration_seconds_bucket{guest=\"web1\",le=\"0.0025\"} 1\n"));
        assert!(text.contains("vmi_scan_duration_seconds_bucket{guest=\"web1\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("vmi_scan_work_seconds_bucket{guest=\"web1\",le=\"0.0005\"} 1\n"));
        assert!(text.contains("vmi_scan_work_seconds_bucket{guest=\"web1\",le=\"0.001\"} 2\n"));
        assert!(text.contains("vmi_units_kept_total{guest=\"web1\"} 37\n"));
        assert!(text.contains("vmi_units_run_total{guest=\"web1\"} 43\n"));
        assert!(text.contains("vmi_findings_total{guest=\"web1\",check=\"idt\"} 1\n"));
        assert!(text.contains("vmi_scan_errors_total{guest=\"web1\"} 1\n"));
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn endpoint_answers() {
        let metrics = Arc::new(Mutex::new(Metrics::default()));
        metrics.lock().unwrap().scan(
            "g",
            ScanFigures {
                secs: 0.001,
                ..ScanFigures::default()
            },
        );
        let ep = Endpoint::start("127.0.0.1:0".parse().unwrap(), metrics).unwrap();
        let mut c = TcpStream::connect(ep.addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.contains("vmi_scans_total{guest=\"g\"} 1"), "{out}");
        let mut c = TcpStream::connect(ep.addr).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    }

    /// An endpoint being sent a request one byte every 300 ms, by a client that stops
    /// after 20 s or once the server closes the connection, and returns how long it was
    /// served; the client has been at it for 500 ms.
    fn endpoint_with_trickling_client() -> (Endpoint, std::thread::JoinHandle<Duration>) {
        let ep = Endpoint::start("127.0.0.1:0".parse().unwrap(), Arc::default()).unwrap();
        let mut c = TcpStream::connect(ep.addr).unwrap();
        let slow = std::thread::spawn(move || {
            let t = std::time::Instant::now();
            for b in b"GET /metrics HTTP/1.1\r\nX: ".iter().cycle() {
                if t.elapsed() > Duration::from_secs(20) || c.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            t.elapsed()
        });
        std::thread::sleep(Duration::from_millis(500));
        (ep, slow)
    }

    #[test]
    fn a_trickling_client_gets_one_deadline() {
        let (ep, slow) = endpoint_with_trickling_client();
        // the next client is answered once the slow one's time is up
        let t = std::time::Instant::now();
        let mut c = TcpStream::connect(ep.addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out:?}");
        assert!(
            t.elapsed() < REQUEST_TIME + Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
        // and the slow one was dropped
        let served = slow.join().unwrap();
        assert!(served < Duration::from_secs(10), "{served:?}");
    }

    #[test]
    fn a_trickling_client_does_not_hold_up_shutdown() {
        let (ep, slow) = endpoint_with_trickling_client();
        let t = std::time::Instant::now();
        drop(ep);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        let _ = slow.join();
    }
}
