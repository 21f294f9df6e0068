//! What the detector's lab tests and examples share: building the test rootkits, reading
//! the JSON lines of a running detector. Not every test binary uses every item.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use vmi_lab::build::ModuleSource;
use vmi_lab::Lab;

/// Where the test rootkits' sources are.
pub const MODS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mods");

/// Build test rootkit `name` (`tests/mods/<name>.c` with `vmi_attack.h`) against the
/// headers of `kernel`.
pub fn attack_module(lab: &Lab, kernel: &str, name: &str) -> PathBuf {
    let read = |f: &str| {
        std::fs::read_to_string(Path::new(MODS).join(f)).unwrap_or_else(|e| panic!("{f}: {e}"))
    };
    let src = ModuleSource {
        name: name.to_string(),
        files: vec![
            (format!("{name}.c"), read(&format!("{name}.c"))),
            ("vmi_attack.h".into(), read("vmi_attack.h")),
        ],
    };
    lab.build_module(kernel, &src)
        .unwrap_or_else(|e| panic!("building {name} for {kernel}: {e}"))
}

/// A child's JSON lines, read on a thread, and every line read so far.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<(String, serde_json::Value)>,
    /// Each line read, with its parsed value, in order.
    pub seen: Vec<(String, serde_json::Value)>,
}

impl Lines {
    /// Read `out` on a thread: each line with its parsed value (a line that is not JSON
    /// becomes `{"event": "BAD-JSON", ...}`, which [`Lines::wait_for`] fails on).
    pub fn new(out: std::process::ChildStdout) -> Lines {
        Lines {
            rx: json_lines(out),
            seen: Vec::new(),
        }
    }

    /// Wait up to `timeout` for a line matching `f`; everything read is kept in `seen`.
    /// Panics naming `what` and every line seen when none comes.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: std::time::Duration,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((line, v)) => {
                    assert_ne!(v["event"], "BAD-JSON", "{v}");
                    self.seen.push((line, v.clone()));
                    if f(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no {what} within {timeout:?}; seen:\n{}",
                    self.seen
                        .iter()
                        .map(|(l, _)| l.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
    }

    /// Like [`Lines::wait_for`], but a line already read counts too (for events whose
    /// order is not fixed).
    pub fn wait_any(
        &mut self,
        what: &str,
        timeout: std::time::Duration,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        if let Some((_, v)) = self.seen.iter().find(|(_, v)| f(v)) {
            return v.clone();
        }
        self.wait_for(what, timeout, f)
    }

    /// Keep what has arrived without waiting.
    pub fn drain(&mut self) {
        while let Ok(x) = self.rx.try_recv() {
            self.seen.push(x);
        }
    }

    /// Keep what arrives until the writer is gone or is silent for `quiet`.
    pub fn rest(&mut self, quiet: std::time::Duration) {
        while let Ok(x) = self.rx.recv_timeout(quiet) {
            self.seen.push(x);
        }
    }
}

/// Read a child's JSON lines on a thread: each line with its parsed value (a line that is
/// not JSON becomes `{"event": "BAD-JSON", ...}` so the test can fail on it).
fn json_lines(
    out: std::process::ChildStdout,
) -> std::sync::mpsc::Receiver<(String, serde_json::Value)> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let v = serde_json::from_str(&line).unwrap_or_else(
                |e| serde_json::json!({"event": "BAD-JSON", "line": line, "error": e.to_string()}),
            );
            if tx.send((line, v)).is_err() {
                break;
            }
        }
    });
    rx
}

/// User + system CPU time of a process, from /proc (zero once it is gone).
pub fn cpu_time(pid: u32) -> std::time::Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    std::time::Duration::from_secs_f64(ticks as f64 / hz as f64)
}

/// Build the Debian package with `scripts/package.sh` (release build, generated docs,
/// cargo-deb) and return its path and how long that took.
pub fn build_package() -> (PathBuf, std::time::Duration) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let t = std::time::Instant::now();
    let out = std::process::Command::new("bash")
        .arg(workspace.join("scripts/package.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("running scripts/package.sh");
    assert!(out.status.success(), "scripts/package.sh: {}", out.status);
    let deb = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(deb.is_file(), "scripts/package.sh printed {deb:?}");
    (deb, t.elapsed())
}

/// The `detector` binary built next to the running example (`target/<profile>/detector`).
pub fn built_detector() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    let bin = dir.join("detector");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --release -p detector)",
        bin.display()
    );
    bin
}

/// `GET /metrics` from `detector serve`'s endpoint at `addr`: the whole HTTP response.
pub fn get_metrics(addr: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr)?;
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    c.read_to_string(&mut out)?;
    Ok(out)
}

/// Start a process named `name` in the guest; its pid. It has that name from its fork
/// on: it is the child of the lab worker run as `name` (`spawn 1`), not a child of the
/// shell, which is `sh` until it execs (a scan in that window reported it as `sh`, and
/// a process is reported once, when first seen). Killed, it is reaped at once.
pub fn start_marker(guest: &mut vmi_lab::Guest, name: &str) -> u64 {
    start_marker_with(&mut |line| guest.sh(line), name)
}

/// [`start_marker`] through any guest shell (a Xen domU's, ...).
pub fn start_marker_with(
    sh: &mut dyn FnMut(&str) -> vmi_lab::Result<vmi_lab::ShellOutput>,
    name: &str,
) -> u64 {
    let out = sh(&format!(
        "cp /init /tmp/{name} || exit 1; /tmp/{name} spawn 1 >/dev/null 2>&1 & p=$!; \
         for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do \
         c=$(cat /proc/$p/task/$p/children 2>/dev/null); [ -n \"$c\" ] && break; sleep 0.5; \
         done; echo $c"
    ))
    .expect("sh");
    assert_eq!(out.status, 0, "{:?}", out.lines);
    out.lines
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid: {:?}", out.lines))
}

/// Check every line against `docs/events.schema.json` (the format of `watch --json`,
/// `watch --alerts` and `serve`), failing with the first invalid line; the number of
/// lines.
pub fn validate_events(lines: impl IntoIterator<Item = impl AsRef<str>>) -> usize {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../../docs/events.schema.json"))
            .expect("docs/events.schema.json");
    let validator = jsonschema::draft202012::new(&schema).expect("a valid schema");
    let mut n = 0;
    for line in lines {
        let line = line.as_ref();
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{line}: {errors:?}");
        n += 1;
    }
    n
}
