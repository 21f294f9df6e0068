//! Guest slowdown under continuous introspection (issue 7): the founding study's
//! experiment (libVMI's process list once a second against a Xen guest: 14.77 %
//! slowdown) reproduced on a lab guest, for this project's detector.
//!
//! `bash scripts/bench-overhead.sh` (or `cargo run --release -p detector --example
//! overhead -- [--xen] [--repeats N] [--rounds N] [--round-secs S] [--rates HZ,..]
//! [--out DIR]`). With `--xen` the guest is a domU on real Xen and the detector runs in
//! dom0 (`overhead/xen.rs`); the rest of this text describes the QEMU mode.
//!
//! One Debian 6.1 guest (1 vCPU, 1 GiB, QEMU TCG) runs the lab's standard scenario plus
//! a process-churn workload (`lab-churn`: 20 short-lived children a second, so the
//! tasks list changes under every scan). Each *run* is the lab worker's `cpubench`: a
//! fixed amount of CPU-bound work in rounds of about one guest second, each round timed
//! by the guest's own clock; the host times the whole command by its clock. A run is
//! made under one introspection mode and rate:
//!
//! - `baseline`: nothing reads the guest;
//! - `watch`: one `detector watch --interval 1/RATE` process, pause-free;
//! - `watch-pause`: the same with `--pause` (the guest is paused around each scan);
//! - `ps-per-tick`: one new `detector ps` process per tick (the study's shell loop).
//!
//! Runs are made in blocks: each block runs the baseline first and last and every other
//! configuration once in between, in an order that rotates from block to block. A
//! configuration's slowdown in a block is `1 - throughput / mean(the block's two
//! baselines)`; its figure is the mean over blocks with a Student-t 95 % interval. The
//! detector's host CPU (user + system: its threads' run time from /proc/PID/task/*/schedstat, or `wait4` for each `ps` process) is measured over the
//! workload window, as are QEMU's and the whole machine's (what other users of the
//! machine took is reported as a noise indicator). Under TCG the guest's vCPU is one
//! host thread (`CPU 0/TCG`); its schedstat splits the host time of a run into running,
//! waiting for a host core (other users of this 2-core machine, or the detector) and
//! sleeping (the guest paused): besides the raw host-clock figure, the slowdown is also
//! given without the run-queue wait (what remains when cores are not scarce: pauses and
//! slower guest execution) and per second the vCPU ran (slower execution alone). Scan latency: each `ps` process's wall
//! time; for `watch`, the same `Watcher::tick` the binary runs, timed in this process
//! against the same guest while it runs the workload.
//!
//! Writes `overhead.json` and `overhead.png` (matplotlib in a pinned venv) to the output
//! directory (default `docs/`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use detector::target::{ProfileSpec, SourceSpec, Target};
use detector::watch::{WatchOptions, Watcher};
use serde_json::{json, Value};
use vmi_lab::python::Venv;
use vmi_lab::{BootOptions, Guest, Lab, Scenario, ShellOutput, DEFAULT_KERNEL};

#[path = "overhead/xen.rs"]
mod xen;

/// Statistics over repeated runs (unit-tested below).
mod stats {
    /// Arithmetic mean (NaN for no values).
    pub fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    /// Sample standard deviation (0 for fewer than two values).
    pub fn sd(v: &[f64]) -> f64 {
        if v.len() < 2 {
            return 0.0;
        }
        let m = mean(v);
        (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
    }

    /// The 0.975 quantile of Student's t distribution with `df` degrees of freedom.
    pub fn t975(df: usize) -> f64 {
        const T: [f64; 30] = [
            12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
            2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
            2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
        ];
        match df {
            0 => f64::INFINITY,
            1..=30 => T[df - 1],
            _ => 1.96,
        }
    }

    /// Mean and two-sided 95 % confidence interval of the mean.
    pub fn ci95(v: &[f64]) -> (f64, f64, f64) {
        let m = mean(v);
        let h = t975(v.len().saturating_sub(1)) * sd(v) / (v.len() as f64).sqrt();
        (m, m - h, m + h)
    }

    /// Nearest-rank percentile `p` (0..=100) of unsorted values.
    pub fn percentile(v: &[f64], p: f64) -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
        s[rank.clamp(1, s.len()) - 1]
    }

    /// Slowdown of `x` against a baseline `base` (both throughputs), in percent.
    pub fn slowdown_pct(x: f64, base: f64) -> f64 {
        (1.0 - x / base) * 100.0
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn mean_sd_and_interval() {
            let v = [1.0, 2.0, 3.0, 4.0];
            assert_eq!(mean(&v), 2.5);
            assert!((sd(&v) - 1.290_994).abs() < 1e-6);
            let (m, lo, hi) = ci95(&v);
            // 3.182 * 1.291 / 2 = 2.054
            assert!((hi - m - 2.0540).abs() < 1e-3 && (m - lo - 2.0540).abs() < 1e-3);
            assert_eq!(sd(&[5.0]), 0.0);
            assert!(ci95(&[5.0]).1.is_nan() || ci95(&[5.0]).1 == f64::NEG_INFINITY);
        }

        #[test]
        fn t_quantiles() {
            assert_eq!(t975(1), 12.706);
            assert_eq!(t975(4), 2.776);
            assert_eq!(t975(100), 1.96);
            assert!(t975(0).is_infinite());
        }

        #[test]
        fn percentiles_nearest_rank() {
            let v: Vec<f64> = (1..=100).map(f64::from).rev().collect();
            assert_eq!(percentile(&v, 50.0), 50.0);
            assert_eq!(percentile(&v, 99.0), 99.0);
            assert_eq!(percentile(&v, 100.0), 100.0);
            assert_eq!(percentile(&v, 0.0), 1.0);
            assert!(percentile(&[], 50.0).is_nan());
        }

        #[test]
        fn slowdown() {
            assert!((slowdown_pct(90.0, 100.0) - 10.0).abs() < 1e-9);
            assert!((slowdown_pct(101.0, 100.0) + 1.0).abs() < 1e-9);
        }
    }
}

use stats::{ci95, mean, percentile, slowdown_pct};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Baseline,
    Watch,
    WatchPause,
    PsPerTick,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Baseline => "baseline",
            Mode::Watch => "watch",
            Mode::WatchPause => "watch-pause",
            Mode::PsPerTick => "ps-per-tick",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Config {
    mode: Mode,
    hz: u32,
}

/// What one run measured.
#[derive(Debug, Clone)]
struct Run {
    /// Iterations done.
    work: f64,
    /// Work per guest second (the guest's own clock).
    guest_ops: f64,
    /// Work per host second (the host's clock around the whole command).
    host_ops: f64,
    /// Host CPU seconds of the introspection side over the workload window.
    intro_cpu: f64,
    /// Host seconds of the cpubench command.
    host_s: f64,
    /// The window (host seconds).
    wall: f64,
    /// Scans per second achieved (0 for the baseline).
    scans_per_s: f64,
    /// Per-scan wall times (ms) where the mode shows them (`ps` processes).
    latencies_ms: Vec<f64>,
    /// The host's view of QEMU and the guest's vCPU thread (a Xen domU's: the thread of
    /// the emulated CPU it is pinned to).
    qemu: Option<QemuSched>,
    /// A Xen domU: dom0's busy CPU seconds over the window (all of dom0: the detector,
    /// the toolstack, the console relays).
    dom0_cpu: Option<f64>,
}

/// How the host ran a QEMU guest during a run.
#[derive(Debug, Clone, Copy)]
struct QemuSched {
    /// QEMU's CPU seconds over the window.
    qemu_cpu: f64,
    /// The vCPU thread's run time over the window (seconds).
    vcpu_run: f64,
    /// The vCPU thread's run-queue wait over the window (seconds).
    vcpu_wait: f64,
    /// CPU seconds of everything else on the machine over the window.
    other_cpu: f64,
}

struct Args {
    repeats: usize,
    rounds: usize,
    round_secs: f64,
    out: PathBuf,
    /// Run the workload in a Xen domU and the detector in dom0 (`xen.rs`).
    xen: bool,
    /// Run the guest as a libvirt domain (a private libvirtd owns its monitor) and read
    /// it with `--libvirt NAME`: RAM through the QEMU process.
    libvirt: bool,
    /// Introspection rates (Hz).
    rates: Vec<u32>,
    /// The modes measured (all but the baseline by default).
    modes: Vec<Mode>,
}

fn args() -> Args {
    let mut a = Args {
        repeats: 8,
        rounds: 4,
        round_secs: 1.0,
        out: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs")),
        xen: false,
        libvirt: false,
        rates: Vec::new(),
        modes: vec![Mode::Watch, Mode::WatchPause, Mode::PsPerTick],
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--xen" {
            a.xen = true;
            continue;
        }
        if k == "--libvirt" {
            a.libvirt = true;
            continue;
        }
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--repeats" => a.repeats = v.parse().expect("--repeats N"),
            "--rounds" => a.rounds = v.parse().expect("--rounds N"),
            "--round-secs" => a.round_secs = v.parse().expect("--round-secs S"),
            "--out" => a.out = PathBuf::from(v),
            "--rates" => {
                a.rates = v
                    .split(',')
                    .map(|r| r.parse().expect("--rates HZ,HZ,..."))
                    .collect()
            }
            "--modes" => {
                a.modes = v
                    .split(',')
                    .map(|m| {
                        [Mode::Watch, Mode::WatchPause, Mode::PsPerTick]
                            .into_iter()
                            .find(|x| x.name() == m)
                            .unwrap_or_else(|| {
                                panic!("--modes: {m} is not watch, watch-pause or ps-per-tick")
                            })
                    })
                    .collect()
            }
            _ => panic!(
                "unknown option {k} (--xen, --libvirt, --repeats, --rounds, --round-secs, --rates, --modes, --out)"
            ),
        }
    }
    assert!(
        a.repeats >= 2,
        "--repeats must be at least 2 for an interval"
    );
    if a.rates.is_empty() {
        // the Xen rig's emulated CPUs are slower: 100 Hz only when asked for
        a.rates = if a.xen { vec![1, 10] } else { vec![1, 10, 100] };
    }
    assert!(a.rates.iter().all(|&r| r > 0), "--rates must be above 0 Hz");
    a
}

/// The `detector` binary measured: a copy of the one built next to this example
/// (`target/<profile>/detector`), taken at start so a rebuild during the run cannot
/// change it.
static DETECTOR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The commit (and whether the sources differed from it) when the binary was copied.
static BUILD: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn bin() -> PathBuf {
    DETECTOR.get().expect("detector copied at start").clone()
}

fn copy_detector(dir: &Path) {
    let exe = std::env::current_exe().expect("current exe");
    let built = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .join("detector");
    assert!(
        built.exists(),
        "{} is missing: build it first (cargo build --release -p detector)",
        built.display()
    );
    let copy = dir.join("detector");
    std::fs::copy(&built, &copy).expect("copying the detector binary");
    // the tree's state now, when the copy is taken (it may change during the run)
    let _ = BUILD.set(detector_build());
    use_detector(copy);
}

/// Measure the detector binary at `path`.
fn use_detector(path: PathBuf) {
    DETECTOR.set(path).expect("once");
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// User + system CPU seconds of a process (threads included), from /proc.
fn proc_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    (t(11) + t(12)) as f64 / clk_tck()
}

/// CPU seconds a process has run (all its threads, nanosecond resolution), from
/// /proc/PID/task/*/schedstat; /proc/PID/stat's clock ticks when that is unreadable.
fn proc_runtime(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return proc_cpu(pid);
    };
    let mut ns = 0u64;
    let mut any = false;
    for t in tasks.flatten() {
        if let Some(v) = std::fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|x| x.parse::<u64>().ok())
            })
        {
            ns += v;
            any = true;
        }
    }
    if any {
        ns as f64 / 1e9
    } else {
        proc_cpu(pid)
    }
}

/// The thread of QEMU that has run longest: the vCPU (`CPU 0/TCG`; without
/// `debug-threads=on` every thread is named after QEMU, but a 1-vCPU guest running a
/// CPU-bound workload keeps its vCPU thread far ahead of the main loop and the others).
fn vcpu_tid(qemu: u32) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{qemu}/task")).ok()?;
    tasks
        .flatten()
        .filter_map(|t| {
            let tid: u32 = t.file_name().to_str()?.parse().ok()?;
            Some((sched(qemu, tid)?.0, tid))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, tid)| tid)
}

/// A thread's run time and run-queue wait (seconds it was runnable but no host core
/// ran it), from its schedstat.
fn sched(pid: u32, tid: u32) -> Option<(f64, f64)> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
    let f: Vec<f64> = st
        .split_whitespace()
        .filter_map(|x| x.parse::<f64>().ok())
        .collect();
    (f.len() >= 2).then(|| (f[0] / 1e9, f[1] / 1e9))
}

/// Busy CPU seconds of the whole machine (all cores), from /proc/stat.
fn machine_busy() -> f64 {
    stat_busy(&std::fs::read_to_string("/proc/stat").unwrap_or_default())
}

/// Busy CPU seconds (all cores) in the text of a /proc/stat (its first line).
fn stat_busy(stat: &str) -> f64 {
    let line = stat.lines().next().unwrap_or("");
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = f
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .take(8)
        .sum();
    busy as f64 / clk_tck()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Wait for a child and return its exit status and user + system CPU seconds.
fn wait_rusage(child: Child) -> (i32, f64) {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data, zero is a valid value
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own un-waited child; status and ru are valid for writes
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    std::mem::forget(child); // reaped above
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    (code, tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// The introspection side of one run.
enum Side {
    None,
    Watch {
        child: Child,
        lines: Receiver<Value>,
    },
    Ps {
        stop: Arc<AtomicBool>,
        handle: std::thread::JoinHandle<(usize, f64, Vec<f64>)>,
    },
}

/// The guest the detector reads, as the detector is told it.
struct Env {
    spec: SourceSpec,
    profiles: PathBuf,
}

impl Env {
    fn base_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = match &self.spec {
            SourceSpec::Qemu { socket, .. } => vec!["--qemu".into(), socket.clone().into()],
            SourceSpec::QemuPid { pid, qmp } => {
                let mut a = vec!["--qemu-pid".into(), pid.to_string().into()];
                if let Some(q) = qmp {
                    a.extend(["--qmp".into(), q.clone().into()]);
                }
                a
            }
            SourceSpec::Xen { domain } => vec!["--xen".into(), domain.into()],
            SourceSpec::Libvirt { name, uri } => vec![
                "--libvirt".into(),
                name.into(),
                "--libvirt-uri".into(),
                uri.into(),
            ],
            SourceSpec::Dump(p) => vec!["--dump".into(), p.clone().into()],
        };
        args.extend(["--profiles".into(), self.profiles.clone().into()]);
        args
    }
}

/// One new `detector ps` process (`args` before `ps`) per `period` until `stop()`:
/// (processes run, their user + system CPU seconds, each one's wall time in ms). The
/// study's shell loop, at a fixed rate: a tick that overruns starts the next at once.
fn ps_loop(
    args: &[std::ffi::OsString],
    period: Duration,
    stop: &dyn Fn() -> bool,
) -> (usize, f64, Vec<f64>) {
    let mut cpu = 0.0;
    let mut lat = Vec::new();
    let mut next = Instant::now();
    while !stop() {
        let t = Instant::now();
        let child = Command::new(bin())
            .args(args)
            .arg("ps")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("detector ps");
        let (code, c) = wait_rusage(child);
        assert_eq!(code, 0, "detector ps failed");
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        cpu += c;
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now; // a tick overran: no burst to catch up
        }
    }
    (lat.len(), cpu, lat)
}

fn start(env: &Env, cfg: Config) -> Side {
    let interval_ms = 1000u32.checked_div(cfg.hz).unwrap_or(0);
    match cfg.mode {
        Mode::Baseline => Side::None,
        Mode::Watch | Mode::WatchPause => {
            let mut cmd = Command::new(bin());
            cmd.args(env.base_args())
                .args(["--json", "watch", "--interval"])
                .arg(format!("{interval_ms}ms"));
            if cfg.mode == Mode::WatchPause {
                cmd.arg("--pause");
            }
            let mut child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("detector watch");
            let out = child.stdout.take().expect("stdout");
            let (tx, rx) = channel();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let v: Value = serde_json::from_str(&line).unwrap_or(json!({"raw": line}));
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            });
            // the first scan reports every process: attached, profile loaded, scanning
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(_) => {}
                Err(e) => panic!("detector watch printed nothing: {e}"),
            }
            Side::Watch { child, lines: rx }
        }
        Mode::PsPerTick => {
            let stop = Arc::new(AtomicBool::new(false));
            let s = stop.clone();
            let args = env.base_args();
            let period = Duration::from_millis(interval_ms as u64);
            let handle =
                std::thread::spawn(move || ps_loop(&args, period, &|| s.load(Ordering::SeqCst)));
            Side::Ps { stop, handle }
        }
    }
}

/// Stop the introspection side; returns (CPU seconds in the window, scans, latencies).
fn stop(side: Side, cpu_at_start: f64, window: f64) -> (f64, f64, Vec<f64>) {
    match side {
        Side::None => (0.0, 0.0, Vec::new()),
        Side::Watch { child, lines } => {
            let cpu_end = proc_runtime(child.id());
            // SAFETY: kill on our own child's pid
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let mut scans = 0.0;
            loop {
                match lines.recv_timeout(Duration::from_secs(30)) {
                    Ok(v) if v["event"] == "stopped" => {
                        scans = v["scans"].as_f64().unwrap_or(0.0);
                        break;
                    }
                    Ok(_) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => panic!("watch did not stop"),
                }
            }
            let (code, _) = wait_rusage(child);
            assert_eq!(code, 0, "detector watch exit status");
            // scans over the watch's life, as a rate over the window (the first one
            // happened before the window opened)
            (
                cpu_end - cpu_at_start,
                (scans - 1.0).max(0.0) / window,
                Vec::new(),
            )
        }
        Side::Ps { stop, handle } => {
            stop.store(true, Ordering::SeqCst);
            let (n, cpu, lat) = handle.join().expect("ps thread");
            (cpu, n as f64 / window, lat)
        }
    }
}

fn side_cpu(side: &Side) -> f64 {
    match side {
        Side::Watch { child, .. } => proc_runtime(child.id()),
        _ => 0.0,
    }
}

/// The shell command that runs the CPU benchmark in a lab guest.
fn cpubench_cmd(rounds: usize, iters: u64) -> String {
    format!("/bin/lab-cpu cpubench {rounds} {iters}")
}

/// The benchmark's output: (iterations, guest seconds by the guest's clock).
fn cpubench_parse(out: &ShellOutput) -> (f64, f64) {
    assert_eq!(out.status, 0, "cpubench: {:?}", out.lines);
    let mut total_iters = 0.0;
    let mut ns = 0.0;
    for l in &out.lines {
        let Some(rest) = l.strip_prefix("@@BENCH ") else {
            continue;
        };
        for kv in rest.split_whitespace() {
            match kv.split_once('=') {
                Some(("iters", v)) => total_iters += v.parse::<f64>().unwrap(),
                Some(("ns", v)) => ns += v.parse::<f64>().unwrap(),
                _ => {}
            }
        }
    }
    assert!(
        out.lines.iter().any(|l| l.starts_with("@@BENCH-END")),
        "cpubench output: {:?}",
        out.lines
    );
    (total_iters, ns / 1e9)
}

/// A lab guest's shell: a QEMU guest or a Xen domU.
trait Shell {
    fn run(&mut self, command: &str) -> ShellOutput;
}

impl Shell for Guest {
    fn run(&mut self, command: &str) -> ShellOutput {
        self.sh_timeout(command, Duration::from_secs(600))
            .unwrap_or_else(|e| panic!("{command}: {e}"))
    }
}

impl Shell for vmi_lab::ExternalGuest {
    fn run(&mut self, command: &str) -> ShellOutput {
        self.sh(command)
            .unwrap_or_else(|e| panic!("{command}: {e}"))
    }
}

impl Shell for vmi_lab::XenDomu {
    fn run(&mut self, command: &str) -> ShellOutput {
        self.sh(command)
            .unwrap_or_else(|e| panic!("{command}: {e}"))
    }
}

/// Run the CPU benchmark once in the guest; returns (iterations, guest seconds, host
/// seconds).
fn cpubench(guest: &mut impl Shell, rounds: usize, iters: u64) -> (f64, f64, f64) {
    let t = Instant::now();
    let out = guest.run(&cpubench_cmd(rounds, iters));
    let host = t.elapsed().as_secs_f64();
    let (work, guest_s) = cpubench_parse(&out);
    (work, guest_s, host)
}

/// What a benchmark records before its runs: the guest's clocksource, the time and load,
/// and the workload calibrated to rounds of about `round_secs` guest seconds.
struct Session {
    started: String,
    load_start: String,
    clocksource: String,
    /// Iterations per round.
    iters: u64,
    /// The guest's iterations per guest second.
    rate: f64,
}

impl Session {
    fn new(guest: &mut impl Shell, round_secs: f64) -> Session {
        let clocksource = guest
            .run("cat /sys/devices/system/clocksource/clocksource0/current_clocksource")
            .lines
            .join(" ");
        let load_start = loadavg();
        let started = chrono_now();
        let (iters, rate) = calibrate(round_secs, |r, i| {
            let (w, g, _) = cpubench(guest, r, i);
            (w, g)
        });
        Session {
            started,
            load_start,
            clocksource,
            iters,
            rate,
        }
    }

    /// Print the table of `b` and return the JSON document: what the session and `a`
    /// say, the records, and `extra`'s keys. `lat_watch`: [`report`]'s.
    fn doc(
        &self,
        a: &Args,
        b: &Blocks,
        lat_watch: [&[f64]; 2],
        lat_source: &str,
        extra: Value,
    ) -> Value {
        let records = report(&b.configs, &b.runs, &b.baselines, lat_watch, lat_source);
        let elapsed = b.elapsed;
        let mut doc = json!({
            "started": self.started,
            "kernel": DEFAULT_KERNEL,
            "detector_build": BUILD.get().cloned().unwrap_or_default(),
            "workload": {"name": "labworker cpubench", "rounds_per_run": a.rounds,
                         "iterations_per_round": self.iters, "guest_iterations_per_s": self.rate},
            "blocks": a.repeats,
            "host": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                     "load_average_start": self.load_start, "load_average_end": loadavg()},
            "duration_s": elapsed.as_secs_f64(),
            "records": records,
        });
        for (k, v) in extra.as_object().expect("an object") {
            doc[k] = v.clone();
        }
        doc["guest"]["clocksource"] = json!(self.clocksource);
        doc
    }
}

/// Scan latencies of pause-free and paused `watch` by `measure(pause)`, with the
/// benchmark running in the guest.
fn watch_latencies(
    guest: &mut impl Shell,
    mut measure: impl FnMut(bool) -> Vec<f64>,
) -> [Vec<f64>; 2] {
    guest.run("/bin/lab-cpu cpubench 1000 1000000000 >/dev/null 2>&1 &");
    let lat = [measure(false), measure(true)];
    guest.run("pkill -f 'lab-cpu cpubench' || killall lab-cpu");
    lat
}

/// The host's view of QEMU over a run's window: QEMU's CPU, the vCPU thread `vcpu`'s
/// schedstat, the whole machine's CPU.
struct HostProbe {
    qemu: u32,
    vcpu: u32,
    q0: f64,
    r0: f64,
    w0: f64,
    m0: f64,
}

impl HostProbe {
    fn start(qemu: u32, vcpu: u32) -> HostProbe {
        let (r0, w0) = sched(qemu, vcpu).expect("vCPU schedstat");
        HostProbe {
            qemu,
            vcpu,
            q0: proc_runtime(qemu),
            r0,
            w0,
            m0: machine_busy(),
        }
    }

    /// The window's figures; `intro_cpu`: host CPU of the introspection side outside
    /// QEMU (not counted as the machine's other users).
    fn end(&self, intro_cpu: f64) -> QemuSched {
        let q1 = proc_runtime(self.qemu);
        let (r1, w1) = sched(self.qemu, self.vcpu).expect("vCPU schedstat");
        let m1 = machine_busy();
        QemuSched {
            qemu_cpu: q1 - self.q0,
            vcpu_run: r1 - self.r0,
            vcpu_wait: w1 - self.w0,
            other_cpu: ((m1 - self.m0) - (q1 - self.q0) - intro_cpu).max(0.0),
        }
    }
}

/// The thread of `pid` named `name` (QEMU names its threads with `debug-threads=on`).
fn thread_named(pid: u32, name: &str) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))?
        .file_name()
        .to_str()?
        .parse()
        .ok()
}

fn run(
    guest: &mut impl Shell,
    qemu: u32,
    env: &Env,
    cfg: Config,
    rounds: usize,
    iters: u64,
) -> Run {
    let side = start(env, cfg);
    let c0 = side_cpu(&side);
    let probe = HostProbe::start(qemu, vcpu_tid(qemu).expect("QEMU's vCPU thread"));
    let t0 = Instant::now();
    let bench = cpubench(guest, rounds, iters);
    let window = t0.elapsed().as_secs_f64();
    let intro = stop(side, c0, window);
    let host = probe.end(intro.0);
    Run::new(bench, window, intro, host, None)
}

impl Run {
    /// A run from the benchmark's (iterations, guest seconds, host seconds), its window,
    /// what [`stop`] returned for the introspection side, and the host's and dom0's view.
    fn new(
        (work, guest_s, host_s): (f64, f64, f64),
        window: f64,
        (intro_cpu, scans_per_s, latencies_ms): (f64, f64, Vec<f64>),
        host: QemuSched,
        dom0_cpu: Option<f64>,
    ) -> Run {
        Run {
            work,
            guest_ops: work / guest_s,
            host_ops: work / host_s,
            intro_cpu,
            host_s,
            wall: window,
            scans_per_s,
            latencies_ms,
            qemu: Some(host),
            dom0_cpu,
        }
    }
}

/// Scan latency of `watch`'s own tick, in this process, on the same guest while it runs
/// the workload: (p50, p90, p99, max) in ms.
fn watch_latency(env: &Env, pause: bool, hz: u32, n: usize) -> Vec<f64> {
    let mut target =
        Target::open(&env.spec, &ProfileSpec::Dir(env.profiles.clone())).expect("target");
    let mut w = Watcher::new(WatchOptions {
        pause,
        ..WatchOptions::default()
    });
    let period = Duration::from_secs_f64(1.0 / hz as f64);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let _ = w.tick(&mut target);
        let d = t.elapsed();
        out.push(d.as_secs_f64() * 1e3);
        if d < period {
            std::thread::sleep(period - d);
        }
    }
    out
}

fn main() {
    if xen::helper() {
        return;
    }
    let a = args();
    if a.xen {
        xen::main(&a);
    } else if a.libvirt {
        libvirt_main(&a);
    } else {
        qemu_main(&a);
    }
}

/// The profile of the lab's default kernel, from its -dbg package.
fn default_profile(lab: &Lab) -> String {
    let d = lab.store().debug(DEFAULT_KERNEL).expect("-dbg");
    profile_gen::build::from_dwarf(&d.vmlinux, Some(&d.system_map), &Default::default())
        .expect("profile")
        .profile
        .to_json()
}

/// The guest's workload besides the benchmark: the standard scenario, 20 short-lived
/// processes a second, and the benchmark's program.
fn workload_scenario() -> Scenario {
    Scenario::standard()
        .churn("lab-churn", 20)
        .sleeper("lab-cpu")
}

/// Iterations for a round of about `round_secs` guest seconds, from two probe runs of
/// `bench(rounds, iters) -> (iterations, guest seconds)`; and the guest's rate.
fn calibrate(round_secs: f64, mut bench: impl FnMut(usize, u64) -> (f64, f64)) -> (u64, f64) {
    let probe = 20_000_000u64;
    let (w, g) = bench(1, probe);
    let (w2, g2) = bench(1, probe);
    let rate = (w + w2) / (g + g2);
    (((rate * round_secs) as u64).max(1_000_000), rate)
}

/// What a QEMU-host run needs first: the lab, the plot's venv (first, so a missing
/// package fails before the long part), the detector copied and the default kernel's
/// profile in a temporary directory (kept alive by the caller).
fn setup() -> (Lab, Venv, tempfile::TempDir, PathBuf) {
    let lab = Lab::open_default().expect("lab");
    let venv = Venv::ensure(lab.cache(), &["matplotlib==3.9.2"]).expect("matplotlib venv");
    let dir = tempfile::tempdir().expect("tempdir");
    copy_detector(dir.path());
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("6.1.json"), default_profile(&lab)).unwrap();
    (lab, venv, dir, profiles)
}

fn qemu_main(a: &Args) {
    let (lab, venv, _dir, profiles) = setup();

    let opts = BootOptions::default();
    let mut guest = lab
        .boot(DEFAULT_KERNEL, &workload_scenario(), &opts)
        .expect("boot");
    guest.release_qmp();
    let env = Env {
        spec: SourceSpec::Qemu {
            socket: guest.qmp_socket(),
            mem_path: None,
        },
        profiles,
    };
    let qemu = guest.pid().expect("qemu pid");
    let doc = measure(a, &mut guest, qemu, &env, &opts, "");
    drop(guest);
    write_doc(&venv, &a.out, "overhead", &doc);
}

/// The same as [`qemu_main`] with the guest run as a libvirt domain by a private
/// libvirtd, read with `--libvirt NAME` (RAM through the QEMU process, the monitor
/// through libvirt); writes `overhead-libvirt.json` and `.png`.
fn libvirt_main(a: &Args) {
    let (lab, venv, _dir, profiles) = setup();

    let opts = BootOptions::default();
    let mut guest = lab
        .external_guest(DEFAULT_KERNEL, &workload_scenario(), &opts)
        .expect("boot files");
    let mut daemon = vmi_lab::libvirt::Libvirtd::start().expect("libvirtd");
    let name = "vmi-overhead";
    daemon
        .define(name, &guest, opts.memory_mib)
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    daemon
        .virsh(&["start", name])
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    guest
        .accept(Duration::from_secs(900))
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    let qemu = match daemon.qemu_pids().as_slice() {
        [pid] => *pid as u32,
        other => panic!("the domain's QEMU: {other:?}"),
    };
    let env = Env {
        spec: SourceSpec::Libvirt {
            name: name.into(),
            uri: daemon.uri().into(),
        },
        profiles,
    };
    let doc = measure(
        a,
        &mut guest,
        qemu,
        &env,
        &opts,
        " (libvirt domain: RAM read through the QEMU process, the monitor through libvirt)",
    );
    drop(daemon);
    drop(guest);
    write_doc(&venv, &a.out, "overhead-libvirt", &doc);
}

/// Calibrate, run the blocks and the scan latencies on `guest` (QEMU process `qemu`)
/// read as `env` says; the JSON document. `how`: what is particular to the guest.
fn measure(
    a: &Args,
    guest: &mut impl Shell,
    qemu: u32,
    env: &Env,
    opts: &BootOptions,
    how: &str,
) -> Value {
    let session = Session::new(guest, a.round_secs);
    let iters = session.iters;
    println!(
        "bench: {DEFAULT_KERNEL}, {} MiB, {} vCPU, TCG; guest {:.1} M iterations/s; runs of {} rounds x {} iterations; {} blocks; load average {}",
        opts.memory_mib,
        opts.cpus,
        session.rate / 1e6,
        a.rounds,
        iters,
        a.repeats,
        session.load_start
    );

    let configs = configs(&a.modes, &a.rates);
    let b = blocks(&configs, a.repeats, |cfg| {
        run(guest, qemu, env, cfg, a.rounds, iters)
    });
    // scan latency of watch's own tick
    let lat = watch_latencies(guest, |pause| watch_latency(env, pause, 10, 200));
    let source = "Watcher::tick timed in-process, 200 ticks at 10 Hz, workload running";
    session.doc(a, &b, [&lat[0], &lat[1]], source, json!({
        "what": "guest slowdown under continuous introspection (issue 7)",
        "command": command_line(),
        "guest": {"memory_mib": opts.memory_mib, "vcpus": opts.cpus, "accel": opts.accel,
                  "scenario": format!("standard + lab-churn (20 short-lived processes/s){how}")},
        "method": format!("{METHOD}; without vCPU run-queue wait = work / (host time - the time QEMU's vCPU thread waited for a host core, from its schedstat): blind to cores taken from the vCPU by other users of the machine or by the detector (whose CPU is reported), it keeps pauses and slower guest execution; per vCPU run-second = work / the vCPU thread's run time: only slower guest execution"),
    }))
}

/// How every benchmark's figures are made (the JSON's `method`, with what is particular
/// to the guest after it).
const METHOD: &str = "per block: baseline, every configuration once (rotating order), baseline; slowdown = 1 - throughput / mean of the block's baselines; mean over blocks with a Student-t 95 % interval. host clock = work / host wall time of the whole cpubench command; guest clock = work / sum of the guest's own round times";

/// Every mode asked for at every rate.
fn configs(modes: &[Mode], rates: &[u32]) -> Vec<Config> {
    let mut configs = Vec::new();
    for &mode in modes {
        for &hz in rates {
            configs.push(Config { mode, hz });
        }
    }
    configs
}

/// What [`blocks`] measured.
struct Blocks {
    configs: Vec<Config>,
    /// Each configuration's runs, one a block.
    runs: Vec<Vec<Run>>,
    /// Each block's two baselines.
    baselines: Vec<(Run, Run)>,
    /// The time it took.
    elapsed: Duration,
}

/// `repeats` blocks: each the baseline, every configuration once in an order that rotates
/// from block to block, and the baseline again.
fn blocks(configs: &[Config], repeats: usize, mut run: impl FnMut(Config) -> Run) -> Blocks {
    let base = Config {
        mode: Mode::Baseline,
        hz: 0,
    };
    let n = configs.len();
    // a step coprime with n, so every configuration takes every place in turn
    let step = [4, 5, 7, 1]
        .into_iter()
        .find(|&s| gcd(s, n) == 1)
        .unwrap_or(1);
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); n];
    let mut baselines: Vec<(Run, Run)> = Vec::new();
    let t_all = Instant::now();
    for block in 0..repeats {
        let b0 = run(base);
        for k in 0..n {
            let i = (k + block * step) % n;
            let r = run(configs[i]);
            let others = match (r.qemu, r.dom0_cpu) {
                (Some(q), _) => format!("others {:.2} CPU-s", q.other_cpu),
                (None, Some(d)) => format!("dom0 {:.2} CPU-s", d),
                _ => String::new(),
            };
            println!(
                "  block {block} {:<12} {:>3} Hz: {:6.2} % host-clock, {:6.2} % guest-clock, detector {:.3} CPU-s, {others}",
                configs[i].mode.name(),
                configs[i].hz,
                slowdown_pct(r.host_ops, b0.host_ops),
                slowdown_pct(r.guest_ops, b0.guest_ops),
                r.intro_cpu,
            );
            runs[i].push(r);
        }
        let b1 = run(base);
        println!(
            "  block {block} baselines: {:.2} / {:.2} M it/s host clock ({:.2} % apart)",
            b0.host_ops / 1e6,
            b1.host_ops / 1e6,
            slowdown_pct(b1.host_ops, b0.host_ops)
        );
        baselines.push((b0, b1));
    }
    Blocks {
        configs: configs.to_vec(),
        runs,
        baselines,
        elapsed: t_all.elapsed(),
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Mean over a block's two baselines of `f`.
fn per_block(baselines: &[(Run, Run)], f: impl Fn(&Run) -> f64) -> Vec<f64> {
    baselines.iter().map(|(x, y)| (f(x) + f(y)) / 2.0).collect()
}

/// Slowdown (mean, 95 % interval) of `runs` against the blocks' baselines, throughput
/// by `f`; and the per-block values.
fn slowdowns(
    runs: &[Run],
    base: &[(Run, Run)],
    f: impl Fn(&Run) -> f64,
) -> (f64, f64, f64, Vec<f64>) {
    let b = per_block(base, &f);
    let v: Vec<f64> = runs
        .iter()
        .zip(&b)
        .map(|(x, b)| slowdown_pct(f(x), *b))
        .collect();
    let (m, lo, hi) = ci95(&v);
    (m, lo, hi, v)
}

/// Print the table and return the JSON records: the baseline, then each configuration.
/// `lat_watch`: the scan latencies of pause-free and paused `watch` (in `lat_source`'s
/// sense); a `ps` process's is its wall time. Columns from QEMU's schedstat or dom0's
/// CPU where the runs have them.
fn report(
    configs: &[Config],
    runs: &[Vec<Run>],
    baselines: &[(Run, Run)],
    lat_watch: [&[f64]; 2],
    lat_source: &str,
) -> Vec<Value> {
    let all_base: Vec<&Run> = baselines.iter().flat_map(|(x, y)| [x, y]).collect();
    let avg = |f: &dyn Fn(&Run) -> f64| mean(&all_base.iter().map(|r| f(r)).collect::<Vec<_>>());
    let has_sched = all_base.iter().all(|r| r.qemu.is_some());
    let is_xen = all_base.iter().all(|r| r.dom0_cpu.is_some());
    let q = |r: &Run| r.qemu.expect("QEMU schedstat");
    // work per host second in which the vCPU did not wait for a host core
    let uncontended = |r: &Run| r.work / (r.host_s - q(r).vcpu_wait);
    let per_run_s = |r: &Run| r.work / q(r).vcpu_run;
    let dom0 = |r: &Run| 100.0 * r.dom0_cpu.expect("dom0 CPU") / r.wall;

    let mut base = json!({
        "mode": "baseline", "rate_hz": 0, "runs": baselines.len() * 2,
        "slowdown_pct": 0.0, "ci95_pct": [0.0, 0.0],
        "guest_clock_slowdown_pct": 0.0,
        "host_cpu_pct": 0.0,
        "throughput_host_mops": avg(&|r| r.host_ops) / 1e6,
        "throughput_guest_mops": avg(&|r| r.guest_ops) / 1e6,
        "baseline_drift_pct": ci95(&baselines.iter().map(|(x, y)| slowdown_pct(y.host_ops, x.host_ops)).collect::<Vec<_>>()).0,
    });
    if has_sched {
        base["vcpu_wait_pct"] = json!(100.0 * avg(&|r| q(r).vcpu_wait / r.host_s));
        base["qemu_cpu_pct"] = json!(100.0 * avg(&|r| q(r).qemu_cpu / r.wall));
        base["others_cpu_pct"] = json!(100.0 * avg(&|r| q(r).other_cpu / r.wall));
    }
    if is_xen {
        base["dom0_cpu_pct"] = json!(avg(&dom0));
    }
    let mut records = vec![base];

    let mut header = vec![
        "mode",
        "rate",
        "slowdown, host clock (95 % CI)",
        "guest-clock view",
    ];
    if has_sched {
        header.extend([
            "without vCPU run-queue wait",
            "per vCPU run-second",
            "vCPU waited",
        ]);
    }
    header.push("detector host CPU");
    if is_xen {
        header.push("dom0 CPU (baseline)");
    }
    header.extend(["scans/s", "scan latency p50 / p99"]);
    println!();
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    let ci = |(m, lo, hi, _): &(f64, f64, f64, Vec<f64>)| format!("{m:.2} % ({lo:.2} … {hi:.2})");
    for (i, cfg) in configs.iter().enumerate() {
        let r = &runs[i];
        let host = slowdowns(r, baselines, |x| x.host_ops);
        let guest_v = slowdowns(r, baselines, |x| x.guest_ops);
        let of = |f: &dyn Fn(&Run) -> f64| mean(&r.iter().map(f).collect::<Vec<_>>());
        let cpu = of(&|x| 100.0 * x.intro_cpu / x.wall);
        let scans = of(&|x| x.scans_per_s);
        let lat: Vec<f64> = match cfg.mode {
            Mode::PsPerTick => r.iter().flat_map(|x| x.latencies_ms.clone()).collect(),
            Mode::Watch => lat_watch[0].to_vec(),
            Mode::WatchPause => lat_watch[1].to_vec(),
            Mode::Baseline => Vec::new(),
        };
        let (p50, p90, p99) = (
            percentile(&lat, 50.0),
            percentile(&lat, 90.0),
            percentile(&lat, 99.0),
        );
        let mut row = vec![
            cfg.mode.name().to_string(),
            format!("{} Hz", cfg.hz),
            ci(&host),
            ci(&guest_v),
        ];
        let mut rec = json!({
            "mode": cfg.mode.name(),
            "rate_hz": cfg.hz,
            "runs": r.len(),
            "slowdown_pct": host.0,
            "ci95_pct": [host.1, host.2],
            "guest_clock_slowdown_pct": guest_v.0,
            "guest_clock_ci95_pct": [guest_v.1, guest_v.2],
            "host_cpu_pct": cpu,
            "scans_per_s": scans,
            "scan_latency_ms": {
                "p50": p50, "p90": p90, "p99": p99,
                "source": if cfg.mode == Mode::PsPerTick { "wall time of each detector ps process" } else { lat_source },
            },
            "per_block_slowdown_pct": host.3,
        });
        if has_sched {
            // without the vCPU's run-queue wait: blind to host cores taken from the vCPU
            // (by other users of the machine, or by the detector itself: see its host
            // CPU), it keeps pauses and whatever slows the vCPU while it runs
            let unc = slowdowns(r, baselines, uncontended);
            // per second the vCPU thread ran: only what slows translated guest code
            let eff = slowdowns(r, baselines, per_run_s);
            let wait = of(&|x| 100.0 * q(x).vcpu_wait / x.host_s);
            row.extend([ci(&unc), ci(&eff), format!("{wait:.1} %")]);
            rec["uncontended_slowdown_pct"] = json!(unc.0);
            rec["uncontended_ci95_pct"] = json!([unc.1, unc.2]);
            rec["vcpu_run_slowdown_pct"] = json!(eff.0);
            rec["vcpu_run_ci95_pct"] = json!([eff.1, eff.2]);
            rec["vcpu_wait_pct"] = json!(wait);
            rec["qemu_cpu_pct"] = json!(of(&|x| 100.0 * q(x).qemu_cpu / x.wall));
            rec["others_cpu_pct"] = json!(of(&|x| 100.0 * q(x).other_cpu / x.wall));
        }
        row.push(format!("{cpu:.2} % of a core"));
        if is_xen {
            let d = of(&dom0);
            row.push(format!("{d:.1} % ({:.1} %)", avg(&dom0)));
            rec["dom0_cpu_pct"] = json!(d);
        }
        row.extend([format!("{scans:.1}"), format!("{p50:.2} / {p99:.2} ms")]);
        println!("| {} |", row.join(" | "));
        records.push(rec);
    }
    records
}

/// Write `doc` as `<name>.json` under `out` and plot it as `<name>.png`.
fn write_doc(venv: &Venv, out: &Path, name: &str, doc: &Value) {
    std::fs::create_dir_all(out).expect("output dir");
    let json_path = out.join(format!("{name}.json"));
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(doc).unwrap() + "\n",
    )
    .expect("write json");
    println!(
        "\nwrote {} ({:.0} s of runs; load average {} → {})",
        json_path.display(),
        doc["duration_s"].as_f64().unwrap_or(0.0),
        doc["host"]["load_average_start"],
        doc["host"]["load_average_end"]
    );
    plot(venv, &json_path, &out.join(format!("{name}.png")));
}

fn plot(venv: &Venv, json: &Path, png: &Path) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/plot-overhead.py");
    let st = Command::new(venv.bin("python"))
        .arg(script)
        .arg(json)
        .arg(png)
        .status()
        .expect("python");
    assert!(st.success(), "plot-overhead.py failed");
    println!("wrote {}", png.display());
}

/// The commit the detector was built from, and whether its sources had changes on top.
fn detector_build() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let head = git(&["rev-parse", "--short", "HEAD"]);
    let dirty = git(&[
        "status",
        "--porcelain",
        "--",
        "detector/src",
        "vmi-core/src",
    ]);
    if dirty.is_empty() {
        head
    } else {
        format!("{head} + uncommitted changes in detector/src or vmi-core/src")
    }
}

/// How this run was asked for, as the script takes it.
fn command_line() -> String {
    std::iter::once("bash scripts/bench-overhead.sh".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The current UTC time as text (`date -u`), for the record.
fn chrono_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
