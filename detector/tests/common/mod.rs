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

/// The test rootkits of the demo's rootkit guest, in the order they are loaded.
pub const DEMO_ROOTKITS: [&str; 5] = [
    "vmi_hideproc",
    "vmi_hidemod",
    "vmi_hooksys",
    "vmi_hookidt",
    "vmi_creds",
];

/// Boot `kernel` with the lab's standard scenario plus `vmi-hideme` (a sleeper),
/// `vmi-victim` (uid 1000) and the [`DEMO_ROOTKITS`] built for it under `/lab/`, none loaded
/// yet ([`load_demo_rootkits`] loads them).
pub fn boot_demo_rootkit_guest(lab: &Lab, kernel: &str) -> vmi_lab::Guest {
    let mut scenario = vmi_lab::Scenario::standard()
        .sleeper("vmi-hideme")
        .run_as("vmi-victim", 1000);
    for m in DEMO_ROOTKITS {
        scenario = scenario.file(
            attack_module(lab, kernel, m),
            &format!("/lab/{m}.ko"),
            0o644,
        );
    }
    lab.boot(kernel, &scenario, &vmi_lab::BootOptions::default())
        .unwrap_or_else(|e| panic!("booting {kernel}: {e}"))
}

/// Load the [`DEMO_ROOTKITS`] in a guest of [`boot_demo_rootkit_guest`]: `vmi_hideproc` unlinks
/// `vmi-hideme` from the tasks list, `vmi_hidemod` removes itself from the modules list,
/// `vmi_hooksys` hooks `sys_call_table[180]`, `vmi_hookidt` hooks IDT vector 15 and
/// hides, `vmi_creds` hands `init_cred` to `vmi-victim`. Returns the commands run.
pub fn load_demo_rootkits(guest: &mut vmi_lab::Guest) -> Vec<String> {
    let truth = guest.truth().clone();
    let pid = |comm: &str| truth.by_comm(comm).next().expect(comm).pid;
    let (hideme, victim) = (pid("vmi-hideme"), pid("vmi-victim"));
    let lines = vec![
        format!("insmod /lab/vmi_hideproc.ko pid={hideme}"),
        "insmod /lab/vmi_hidemod.ko".into(),
        "insmod /lab/vmi_hooksys.ko nr=180".into(),
        "insmod /lab/vmi_hookidt.ko vector=15 hide=1".into(),
        format!("insmod /lab/vmi_creds.ko init_pid={victim}"),
    ];
    for line in &lines {
        let o = guest.sh(line).expect("sh");
        assert_eq!(o.status, 0, "{line}: {:?}", o.lines);
    }
    lines
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
/// a process is reported once, when first seen). Killed, it is reaped at once. The copy
/// is installed in /usr/local/bin: a program in /tmp is an `exec-location` finding.
pub fn start_marker(guest: &mut vmi_lab::Guest, name: &str) -> u64 {
    start_marker_with(&mut |line| guest.sh(line), name)
}

/// [`start_marker`] through any guest shell (a Xen domU's, ...).
pub fn start_marker_with(
    sh: &mut dyn FnMut(&str) -> vmi_lab::Result<vmi_lab::ShellOutput>,
    name: &str,
) -> u64 {
    let out = sh(&format!(
        "mkdir -p /usr/local/bin && cp /init /usr/local/bin/{name} || exit 1; \
         /usr/local/bin/{name} spawn 1 >/dev/null 2>&1 & p=$!; \
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

/// A finished detector run.
pub struct Run {
    /// Exit status (-1 when killed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Standard output as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }
}

/// Run the detector on `source` with the profiles in `profiles`.
pub fn detector(source: &[String], profiles: &Path, args: &[&str]) -> Run {
    let out = std::process::Command::new(built_detector())
        .args(source)
        .arg("--profiles")
        .arg(profiles)
        .args(args)
        .output()
        .expect("running detector");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Write the DWARF profile of `kernel` into `dir`.
pub fn profile_into(lab: &Lab, kernel: &str, dir: &Path) {
    let d = lab.store().debug(kernel).expect("-dbg package");
    let built =
        profile_gen::build::from_dwarf(&d.vmlinux, Some(&d.system_map), &Default::default())
            .expect("profile-gen");
    std::fs::write(dir.join(format!("{kernel}.json")), built.profile.to_json()).unwrap();
}

/// Findings of a `check --json` run as (check, evidence).
pub fn findings(run: &Run) -> Vec<(String, serde_json::Value)> {
    run.json()["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            (
                f["check"].as_str().unwrap_or("").to_string(),
                f["evidence"].clone(),
            )
        })
        .collect()
}

/// `identify --json` against the guest: its release, and the KASLR shift its `_text`
/// says.
pub fn identify_matches(
    label: &str,
    idv: &serde_json::Value,
    truth: &vmi_lab::GroundTruth,
) -> Vec<String> {
    let mut problems = Vec::new();
    if idv["release"] != truth.release.as_str() {
        problems.push(format!(
            "{label}: identify says {} for {}",
            idv["release"], truth.release
        ));
    }
    let shift = truth.text_addr.wrapping_sub(0xffff_ffff_8100_0000);
    if idv["kaslr"]["virtual_shift"] != format!("{shift:#x}").as_str() {
        problems.push(format!(
            "{label}: virtual shift {} (the guest's _text says {shift:#x})",
            idv["kaslr"]["virtual_shift"]
        ));
    }
    problems
}

/// `identify`, `ps` and `lsmod` through `source` against the guest's own view (read
/// while the guest is paused, so both sides see the same processes).
pub fn views_match(
    label: &str,
    source: &[String],
    profiles: &Path,
    truth: &vmi_lab::GroundTruth,
) -> Vec<String> {
    let mut problems = Vec::new();
    let id = detector(source, profiles, &["--json", "identify"]);
    if id.code != 0 {
        return vec![format!("{label}: identify exit {}: {}", id.code, id.stderr)];
    }
    problems.extend(identify_matches(label, &id.json(), truth));
    let ps = detector(source, profiles, &["--json", "ps"]).json();
    let lsmod = detector(source, profiles, &["--json", "lsmod"]).json();
    let differences = vmi_lab::views::ps_differences(&ps, truth)
        .into_iter()
        .chain(vmi_lab::views::lsmod_differences(&lsmod, truth));
    problems.extend(differences.map(|d| format!("{label}: {d}")));
    problems
}

/// The standard scenario with a sleeper `vmi-hideme` and the test rootkits
/// `vmi_hideproc` and `vmi_hooksys` built for `kernel` in the guest's `/lab`.
pub fn rootkit_scenario(lab: &Lab, kernel: &str) -> vmi_lab::Scenario {
    let mut scenario = vmi_lab::Scenario::standard().sleeper("vmi-hideme");
    for m in ["vmi_hideproc", "vmi_hooksys"] {
        scenario = scenario.file(
            attack_module(lab, kernel, m),
            &format!("/lab/{m}.ko"),
            0o644,
        );
    }
    scenario
}

/// Load the rootkits of [`rootkit_scenario`] through a guest shell: `vmi-hideme`
/// (pid `hideme`) hidden, syscall 180 hooked.
pub fn load_rootkits(
    sh: &mut dyn FnMut(&str) -> vmi_lab::Result<vmi_lab::ShellOutput>,
    hideme: u32,
) {
    for line in [
        format!("insmod /lab/vmi_hideproc.ko pid={hideme}"),
        "insmod /lab/vmi_hooksys.ko nr=180".into(),
    ] {
        let out = sh(&line).expect("sh");
        assert_eq!(out.status, 0, "{line}: {:?}", out.lines);
    }
}

/// `check --json` found what [`load_rootkits`] did.
pub fn assert_rootkits_found(run: &Run, hideme: u32) {
    let f = findings(run);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        f.iter()
            .any(|(c, e)| c == "hidden-process" && e["pid"] == hideme),
        "no hidden-process finding for {hideme}: {f:?}"
    );
    assert!(
        f.iter()
            .any(|(c, e)| c == "syscall-table" && e["nr"] == 180),
        "no syscall-table finding: {f:?}"
    );
}

/// A JSON line's `event`.
pub fn event(v: &serde_json::Value) -> &str {
    v["event"].as_str().unwrap_or("")
}

/// `BIN SOURCE --profiles DIR --json watch ARGS` started, with its lines read on a
/// thread, once it said `started` (within `timeout`).
pub fn watch_started(
    bin: &Path,
    source: &[String],
    profiles: &Path,
    args: &[&str],
    timeout: std::time::Duration,
) -> (std::process::Child, Lines) {
    let mut child = std::process::Command::new(bin)
        .args(source)
        .arg("--profiles")
        .arg(profiles)
        .args(["--json", "watch"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("watch");
    let mut lines = Lines::new(child.stdout.take().expect("watch's stdout"));
    lines.wait_for("started", timeout, |v| event(v) == "started");
    (child, lines)
}
