//! Guest slowdown under continuous introspection (issue 7): the founding study's
//! experiment (libVMI's process list once a second against a Xen guest: 14.77 %
//! slowdown) reproduced on a lab guest, for this project's detector.
//!
//! `bash scripts/bench-overhead.sh` (or `cargo run --release -p detector --example
//! overhead -- [--repeats N] [--rounds N] [--round-secs S] [--out DIR]`).
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
use vmi_lab::{BootOptions, Guest, Lab, Scenario, DEFAULT_KERNEL};

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
    /// QEMU's CPU seconds over the window.
    qemu_cpu: f64,
    /// The vCPU thread's run time over the window (seconds).
    vcpu_run: f64,
    /// The vCPU thread's run-queue wait over the window (seconds).
    vcpu_wait: f64,
    /// Host seconds of the cpubench command.
    host_s: f64,
    /// CPU seconds of everything else on the machine over the window.
    other_cpu: f64,
    /// The window (host seconds).
    wall: f64,
    /// Scans per second achieved (0 for the baseline).
    scans_per_s: f64,
    /// Per-scan wall times (ms) where the mode shows them (`ps` processes).
    latencies_ms: Vec<f64>,
}

struct Args {
    repeats: usize,
    rounds: usize,
    round_secs: f64,
    out: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        repeats: 8,
        rounds: 4,
        round_secs: 1.0,
        out: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs")),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--repeats" => a.repeats = v.parse().expect("--repeats N"),
            "--rounds" => a.rounds = v.parse().expect("--rounds N"),
            "--round-secs" => a.round_secs = v.parse().expect("--round-secs S"),
            "--out" => a.out = PathBuf::from(v),
            _ => panic!("unknown option {k} (--repeats, --rounds, --round-secs, --out)"),
        }
    }
    assert!(
        a.repeats >= 2,
        "--repeats must be at least 2 for an interval"
    );
    a
}

/// The `detector` binary measured: a copy of the one built next to this example
/// (`target/<profile>/detector`), taken at start so a rebuild during the run cannot
/// change it.
static DETECTOR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

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
    DETECTOR.set(copy).expect("once");
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
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
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

struct Env {
    sock: PathBuf,
    profiles: PathBuf,
}

impl Env {
    fn base_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "--qemu".into(),
            self.sock.clone().into(),
            "--profiles".into(),
            self.profiles.clone().into(),
        ]
    }
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
            let handle = std::thread::spawn(move || {
                let mut cpu = 0.0;
                let mut lat = Vec::new();
                let mut next = Instant::now();
                while !s.load(Ordering::SeqCst) {
                    let t = Instant::now();
                    let child = Command::new(bin())
                        .args(&args)
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
            });
            Side::Ps { stop, handle }
        }
    }
}

impl Run {
    /// Work per host second in which the vCPU did not wait for a host core.
    fn uncontended(&self) -> f64 {
        self.work / (self.host_s - self.vcpu_wait)
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

/// Run the CPU benchmark once in the guest; returns (iterations, guest seconds, host
/// seconds).
fn cpubench(guest: &mut Guest, rounds: usize, iters: u64) -> (f64, f64, f64) {
    let t = Instant::now();
    let out = guest
        .sh_timeout(
            &format!("/bin/lab-cpu cpubench {rounds} {iters}"),
            Duration::from_secs(600),
        )
        .expect("cpubench");
    let host = t.elapsed().as_secs_f64();
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
    (total_iters, ns / 1e9, host)
}

fn run(guest: &mut Guest, env: &Env, cfg: Config, rounds: usize, iters: u64) -> Run {
    let qemu = guest.pid().expect("qemu pid");
    let side = start(env, cfg);
    let c0 = side_cpu(&side);
    let q0 = proc_runtime(qemu);
    let vcpu = vcpu_tid(qemu).expect("QEMU's vCPU thread");
    let (r0, w0) = sched(qemu, vcpu).expect("vCPU schedstat");
    let m0 = machine_busy();
    let t0 = Instant::now();
    let (work, guest_s, host_s) = cpubench(guest, rounds, iters);
    let window = t0.elapsed().as_secs_f64();
    let q1 = proc_runtime(qemu);
    let (r1, w1) = sched(qemu, vcpu).expect("vCPU schedstat");
    let m1 = machine_busy();
    let (intro_cpu, scans_per_s, latencies_ms) = stop(side, c0, window);
    Run {
        work,
        guest_ops: work / guest_s,
        host_ops: work / host_s,
        intro_cpu,
        qemu_cpu: q1 - q0,
        vcpu_run: r1 - r0,
        vcpu_wait: w1 - w0,
        host_s,
        other_cpu: ((m1 - m0) - (q1 - q0) - intro_cpu).max(0.0),
        wall: window,
        scans_per_s,
        latencies_ms,
    }
}

/// Scan latency of `watch`'s own tick, in this process, on the same guest while it runs
/// the workload: (p50, p90, p99, max) in ms.
fn watch_latency(env: &Env, pause: bool, hz: u32, n: usize) -> Vec<f64> {
    let mut target = Target::open(
        &SourceSpec::Qemu {
            socket: env.sock.clone(),
            mem_path: None,
        },
        &ProfileSpec::Dir(env.profiles.clone()),
    )
    .expect("target");
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
    let a = args();
    let lab = Lab::open_default().expect("lab");
    // the plot's venv first, so a missing package fails before the long part
    let venv = Venv::ensure(lab.cache(), &["matplotlib==3.9.2"]).expect("matplotlib venv");
    let d = lab.store().debug(DEFAULT_KERNEL).expect("-dbg");
    let built =
        profile_gen::build::from_dwarf(&d.vmlinux, Some(&d.system_map), &Default::default())
            .expect("profile");
    let dir = tempfile::tempdir().expect("tempdir");
    copy_detector(dir.path());
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("6.1.json"), built.profile.to_json()).unwrap();

    let opts = BootOptions::default();
    let scenario = Scenario::standard()
        .churn("lab-churn", 20)
        .sleeper("lab-cpu");
    let mut guest = lab.boot(DEFAULT_KERNEL, &scenario, &opts).expect("boot");
    guest.release_qmp();
    let env = Env {
        sock: guest.qmp_socket(),
        profiles,
    };
    let clocksource = guest
        .sh("cat /sys/devices/system/clocksource/clocksource0/current_clocksource")
        .map(|o| o.lines.join(" "))
        .unwrap_or_default();
    let load_start = loadavg();
    let started = chrono_now();

    // calibrate: iterations for a round of about `round_secs` guest seconds
    let probe = 20_000_000u64;
    let (w, g, _) = cpubench(&mut guest, 1, probe);
    let (w2, g2, _) = cpubench(&mut guest, 1, probe);
    let rate = (w + w2) / (g + g2);
    let iters = ((rate * a.round_secs) as u64).max(1_000_000);
    println!(
        "bench: {DEFAULT_KERNEL}, {} MiB, {} vCPU, TCG; guest {:.1} M iterations/s; runs of {} rounds x {} iterations; {} blocks; load average {}",
        opts.memory_mib,
        opts.cpus,
        rate / 1e6,
        a.rounds,
        iters,
        a.repeats,
        load_start
    );

    let mut configs = Vec::new();
    for mode in [Mode::Watch, Mode::WatchPause, Mode::PsPerTick] {
        for hz in [1, 10, 100] {
            configs.push(Config { mode, hz });
        }
    }
    let base = Config {
        mode: Mode::Baseline,
        hz: 0,
    };
    // runs[i][block]: configuration i in each block; baselines separately
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); configs.len()];
    let mut baselines: Vec<(Run, Run)> = Vec::new();
    let t_all = Instant::now();
    for block in 0..a.repeats {
        let b0 = run(&mut guest, &env, base, a.rounds, iters);
        let n = configs.len();
        for k in 0..n {
            let i = (k + block * 4) % n; // rotate the order from block to block
            let r = run(&mut guest, &env, configs[i], a.rounds, iters);
            println!(
                "  block {block} {:<12} {:>3} Hz: {:6.2} % host-clock, {:6.2} % guest-clock, detector {:.3} CPU-s, others {:.2} CPU-s",
                configs[i].mode.name(),
                configs[i].hz,
                slowdown_pct(r.host_ops, b0.host_ops),
                slowdown_pct(r.guest_ops, b0.guest_ops),
                r.intro_cpu,
                r.other_cpu
            );
            runs[i].push(r);
        }
        let b1 = run(&mut guest, &env, base, a.rounds, iters);
        println!(
            "  block {block} baselines: {:.2} / {:.2} M it/s host clock ({:.2} % apart)",
            b0.host_ops / 1e6,
            b1.host_ops / 1e6,
            slowdown_pct(b1.host_ops, b0.host_ops)
        );
        baselines.push((b0, b1));
    }
    let elapsed = t_all.elapsed();

    // scan latency of watch's own tick (pause-free and paused), with the workload running
    guest
        .sh("/bin/lab-cpu cpubench 1000 1000000000 >/dev/null 2>&1 &")
        .expect("background workload");
    let lat_free = watch_latency(&env, false, 10, 200);
    let lat_pause = watch_latency(&env, true, 10, 200);
    let _ = guest.sh("pkill -f 'lab-cpu cpubench' || killall lab-cpu");
    let load_end = loadavg();

    // figures
    let mut records = Vec::new();
    let base_host: Vec<f64> = baselines
        .iter()
        .map(|(x, y)| (x.host_ops + y.host_ops) / 2.0)
        .collect();
    let base_guest: Vec<f64> = baselines
        .iter()
        .map(|(x, y)| (x.guest_ops + y.guest_ops) / 2.0)
        .collect();
    let base_unc: Vec<f64> = baselines
        .iter()
        .map(|(x, y)| (x.uncontended() + y.uncontended()) / 2.0)
        .collect();
    let base_eff: Vec<f64> = baselines
        .iter()
        .map(|(x, y)| (x.work / x.vcpu_run + y.work / y.vcpu_run) / 2.0)
        .collect();
    let base_spread: Vec<f64> = baselines
        .iter()
        .map(|(x, y)| slowdown_pct(y.host_ops, x.host_ops))
        .collect();
    let base_others: Vec<f64> = baselines
        .iter()
        .flat_map(|(x, y)| [x.other_cpu / x.wall, y.other_cpu / y.wall])
        .collect();
    records.push(json!({
        "mode": "baseline", "rate_hz": 0, "runs": a.repeats * 2,
        "slowdown_pct": 0.0, "ci95_pct": [0.0, 0.0],
        "guest_clock_slowdown_pct": 0.0,
        "host_cpu_pct": 0.0,
        "throughput_host_mops": mean(&base_host) / 1e6,
        "throughput_guest_mops": mean(&base_guest) / 1e6,
        "baseline_drift_pct": ci95(&base_spread).0,
        "vcpu_wait_pct": 100.0 * mean(&baselines.iter().flat_map(|(x, y)| [x.vcpu_wait / x.host_s, y.vcpu_wait / y.host_s]).collect::<Vec<_>>()),
        "qemu_cpu_pct": 100.0 * mean(&baselines.iter().flat_map(|(x, y)| [x.qemu_cpu / x.wall, y.qemu_cpu / y.wall]).collect::<Vec<_>>()),
        "others_cpu_pct": 100.0 * mean(&base_others),
    }));
    println!();
    println!(
        "| mode | rate | slowdown, host clock (95 % CI) | guest-clock view | without vCPU run-queue wait | per vCPU run-second | vCPU waited | detector host CPU | scans/s | scan latency p50 / p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (i, cfg) in configs.iter().enumerate() {
        let r = &runs[i];
        let host: Vec<f64> = r
            .iter()
            .zip(&base_host)
            .map(|(x, b)| slowdown_pct(x.host_ops, *b))
            .collect();
        let guest_v: Vec<f64> = r
            .iter()
            .zip(&base_guest)
            .map(|(x, b)| slowdown_pct(x.guest_ops, *b))
            .collect();
        let (m, lo, hi) = ci95(&host);
        let (gm, glo, ghi) = ci95(&guest_v);
        // without the vCPU's run-queue wait: blind to host cores taken from the vCPU
        // (by other users of the machine, or by the detector itself: see its host
        // CPU), it keeps pauses and whatever slows the vCPU while it runs
        let unc: Vec<f64> = r
            .iter()
            .zip(&base_unc)
            .map(|(x, b)| slowdown_pct(x.uncontended(), *b))
            .collect();
        let (cm, clo, chi) = ci95(&unc);
        // per second the vCPU thread ran: only what slows translated guest code
        let eff: Vec<f64> = r
            .iter()
            .zip(&base_eff)
            .map(|(x, b)| slowdown_pct(x.work / x.vcpu_run, *b))
            .collect();
        let (em, elo, ehi) = ci95(&eff);
        let wait: Vec<f64> = r.iter().map(|x| 100.0 * x.vcpu_wait / x.host_s).collect();
        let cpu: Vec<f64> = r.iter().map(|x| 100.0 * x.intro_cpu / x.wall).collect();
        let qemu: Vec<f64> = r.iter().map(|x| 100.0 * x.qemu_cpu / x.wall).collect();
        let others: Vec<f64> = r.iter().map(|x| 100.0 * x.other_cpu / x.wall).collect();
        let scans = mean(&r.iter().map(|x| x.scans_per_s).collect::<Vec<_>>());
        let lat: Vec<f64> = match cfg.mode {
            Mode::PsPerTick => r.iter().flat_map(|x| x.latencies_ms.clone()).collect(),
            Mode::Watch => lat_free.clone(),
            Mode::WatchPause => lat_pause.clone(),
            Mode::Baseline => Vec::new(),
        };
        let (p50, p90, p99) = (
            percentile(&lat, 50.0),
            percentile(&lat, 90.0),
            percentile(&lat, 99.0),
        );
        println!(
            "| {} | {} Hz | {:.2} % ({:.2} … {:.2}) | {:.2} % ({:.2} … {:.2}) | {:.2} % ({:.2} … {:.2}) | {:.2} % ({:.2} … {:.2}) | {:.1} % | {:.2} % of a core | {:.1} | {:.2} / {:.2} ms |",
            cfg.mode.name(),
            cfg.hz,
            m,
            lo,
            hi,
            gm,
            glo,
            ghi,
            cm,
            clo,
            chi,
            em,
            elo,
            ehi,
            mean(&wait),
            mean(&cpu),
            scans,
            p50,
            p99
        );
        records.push(json!({
            "mode": cfg.mode.name(),
            "rate_hz": cfg.hz,
            "runs": r.len(),
            "slowdown_pct": m,
            "ci95_pct": [lo, hi],
            "guest_clock_slowdown_pct": gm,
            "guest_clock_ci95_pct": [glo, ghi],
            "uncontended_slowdown_pct": cm,
            "uncontended_ci95_pct": [clo, chi],
            "vcpu_run_slowdown_pct": em,
            "vcpu_run_ci95_pct": [elo, ehi],
            "vcpu_wait_pct": mean(&wait),
            "host_cpu_pct": mean(&cpu),
            "qemu_cpu_pct": mean(&qemu),
            "others_cpu_pct": mean(&others),
            "scans_per_s": scans,
            "scan_latency_ms": {
                "p50": p50, "p90": p90, "p99": p99,
                "source": if cfg.mode == Mode::PsPerTick { "wall time of each detector ps process" } else { "Watcher::tick timed in-process, 200 ticks at 10 Hz, workload running" },
            },
            "per_block_slowdown_pct": host,
        }));
    }
    let doc = json!({
        "what": "guest slowdown under continuous introspection (issue 7)",
        "command": "bash scripts/bench-overhead.sh",
        "started": started,
        "kernel": DEFAULT_KERNEL,
        "detector_build": detector_build(),
        "guest": {"memory_mib": opts.memory_mib, "vcpus": opts.cpus, "accel": opts.accel,
                  "scenario": "standard + lab-churn (20 short-lived processes/s)",
                  "clocksource": clocksource},
        "workload": {"name": "labworker cpubench", "rounds_per_run": a.rounds,
                     "iterations_per_round": iters, "guest_iterations_per_s": rate},
        "blocks": a.repeats,
        "method": "per block: baseline, every configuration once (rotating order), baseline; slowdown = 1 - throughput / mean of the block's baselines; mean over blocks with a Student-t 95 % interval. host clock = work / host wall time of the whole cpubench command; guest clock = work / sum of the guest's own round times; without vCPU run-queue wait = work / (host time - the time QEMU's vCPU thread waited for a host core, from its schedstat): blind to cores taken from the vCPU by other users of the machine or by the detector (whose CPU is reported), it keeps pauses and slower guest execution; per vCPU run-second = work / the vCPU thread's run time: only slower guest execution",
        "host": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                 "load_average_start": load_start, "load_average_end": load_end},
        "duration_s": elapsed.as_secs_f64(),
        "records": records,
    });
    std::fs::create_dir_all(&a.out).expect("output dir");
    let json_path = a.out.join("overhead.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&doc).unwrap() + "\n",
    )
    .expect("write json");
    drop(guest);
    println!(
        "\nwrote {} ({:.0} s of runs; load average {} → {})",
        json_path.display(),
        elapsed.as_secs_f64(),
        doc["host"]["load_average_start"],
        doc["host"]["load_average_end"]
    );
    plot(&venv, &json_path, &a.out.join("overhead.png"));
}

fn plot(venv: &Venv, json: &Path, png: &Path) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/plot-overhead.py"
    );
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
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
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
        "crates/detector/src",
        "crates/vmi-core/src",
    ]);
    if dirty.is_empty() {
        head
    } else {
        format!("{head} + uncommitted changes in crates/detector/src or crates/vmi-core/src")
    }
}

/// The current UTC time as text (`date -u`), for the record.
fn chrono_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
