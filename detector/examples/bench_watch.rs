//! Benchmark of `watch`'s incremental scans (issue 24) on a live lab guest (Debian 6.1,
//! 1 vCPU, 3 GiB, TCG), with full scans as the baseline in the same run: two watchers
//! of every check on the same guest, ticking in turn at 10 Hz, one incremental (the
//! default), one with `--full-scans`.
//!
//! `cargo run --release -p detector --example bench_watch [-- --ticks N --spawn N]`
//! (scripts/bench-watch.sh runs it). Three phases, in this order on one boot:
//! - `idle`: the standard scenario;
//! - `churn`: 20 short-lived processes a second (the lab worker's `churn 20`);
//! - `spawned`: churn stopped, `--spawn` sleeping processes added (default 10000).
//!
//! For each phase and mode it prints the scan (guest memory read and checks run, what
//! `Watcher::last_scan` times) and the whole tick (the guest's state and registers
//! asked of QEMU's monitor around the scan), p50 / p90 / p99 in ms; ticks that read
//! all of kernel text (one in 10, `--text-every`) are counted apart. For the
//! incremental watcher, the units kept and run per tick and the guest bytes compared.

use std::time::{Duration, Instant};

use detector::incremental::TickStats;
use detector::target::{ProfileSpec, SourceSpec, Target};
use detector::watch::{WatchOptions, Watcher};
use vmi_lab::{BootOptions, Lab, Scenario, DEFAULT_KERNEL};

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn line(phase: &str, mode: &str, what: &str, v: &[f64]) {
    println!(
        "{phase:8} {mode:12} {what:22} p50 {:7.3}  p90 {:7.3}  p99 {:7.3} ms  (n={})",
        pct(v, 0.5),
        pct(v, 0.9),
        pct(v, 0.99),
        v.len()
    );
}

struct Samples {
    scan: Vec<f64>,
    tick: Vec<f64>,
    text_scan: Vec<f64>,
    stats: Vec<TickStats>,
}

impl Samples {
    fn new() -> Samples {
        Samples {
            scan: Vec::new(),
            tick: Vec::new(),
            text_scan: Vec::new(),
            stats: Vec::new(),
        }
    }
}

/// One tick of `w`, its times recorded (a tick that read kernel text apart).
fn tick(w: &mut Watcher, target: &mut Target, text_every: u64, s: &mut Samples) {
    let text = w.scans().is_multiple_of(text_every);
    let t = Instant::now();
    let _ = w.tick(target);
    let total = t.elapsed().as_secs_f64() * 1e3;
    let scan = w.last_scan().as_secs_f64() * 1e3;
    if text {
        s.text_scan.push(scan);
    } else {
        s.scan.push(scan);
        s.tick.push(total);
    }
    if let Some(st) = w.tick_stats() {
        if !text {
            s.stats.push(st);
        }
    }
}

fn phase(
    name: &str,
    target: &mut Target,
    inc: &mut Watcher,
    full: &mut Watcher,
    ticks: usize,
    text_every: u64,
) {
    let period = Duration::from_millis(100);
    let (mut a, mut b) = (Samples::new(), Samples::new());
    let mut next = Instant::now();
    for i in 0..ticks {
        // alternate which goes first, so neither always reads a guest just run
        if i % 2 == 0 {
            tick(inc, target, text_every, &mut a);
            tick(full, target, text_every, &mut b);
        } else {
            tick(full, target, text_every, &mut b);
            tick(inc, target, text_every, &mut a);
        }
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    // what a tick asks of QEMU's monitor, and the census every scan reads
    let (mut state, mut exec, mut census) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..30 {
        let t = Instant::now();
        let _ = target.state();
        state.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let _ = target.executing();
        exec.push(t.elapsed().as_secs_f64() * 1e3);
        target.kernel.invalidate();
        let t = Instant::now();
        let _ = target.kernel.census(&Default::default());
        census.push(t.elapsed().as_secs_f64() * 1e3);
    }
    line(name, "", "QMP query-status", &state);
    line(name, "", "QMP registers", &exec);
    line(name, "", "census", &census);
    line(name, "full", "scan", &b.scan);
    line(name, "incremental", "scan", &a.scan);
    line(name, "full", "tick (with QMP)", &b.tick);
    line(name, "incremental", "tick (with QMP)", &a.tick);
    line(name, "full", "scan reading text", &b.text_scan);
    line(name, "incremental", "scan reading text", &a.text_scan);
    let n = a.stats.len().max(1) as f64;
    let kept: f64 = a.stats.iter().map(|s| f64::from(s.kept)).sum::<f64>() / n;
    let ran: f64 = a.stats.iter().map(|s| f64::from(s.ran)).sum::<f64>() / n;
    let compared: f64 = a.stats.iter().map(|s| s.compared as f64).sum::<f64>() / n;
    println!(
        "{name:8} incremental  per tick: {kept:.1} units kept, {ran:.1} run, {:.0} KiB compared; scan p50 {:.1}x faster than full",
        compared / 1024.0,
        pct(&b.scan, 0.5) / pct(&a.scan, 0.5)
    );
}

fn main() {
    let mut ticks = 300usize;
    let mut spawn = 10_000u32;
    let args: Vec<String> = std::env::args().skip(1).collect();
    for w in args.chunks(2) {
        match (w[0].as_str(), w.get(1).and_then(|v| v.parse::<u64>().ok())) {
            ("--ticks", Some(n)) => ticks = n as usize,
            ("--spawn", Some(n)) => spawn = n as u32,
            _ => panic!("usage: bench_watch [--ticks N] [--spawn N]"),
        }
    }
    let lab = Lab::open_default().expect("lab");
    let img = lab.store().image(DEFAULT_KERNEL).expect("boot image");
    let built = profile_gen::build::from_btf(&img.vmlinuz, None, None, &Default::default())
        .expect("profile from the boot image's BTF");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("6.1.json"), built.profile.to_json()).expect("profile");

    println!("bench: {DEFAULT_KERNEL}, standard scenario, 1 vCPU, 3 GiB, TCG; watch of every check at 10 Hz, {ticks} ticks per phase and mode");
    let opts = BootOptions {
        memory_mib: 3072,
        ..BootOptions::default()
    };
    let mut guest = lab
        .boot(DEFAULT_KERNEL, &Scenario::standard(), &opts)
        .expect("boot");
    guest.release_qmp();
    let spec = SourceSpec::Qemu {
        socket: guest.qmp_socket(),
        mem_path: None,
    };
    let mut target =
        Target::open(&spec, &ProfileSpec::Dir(dir.path().to_path_buf())).expect("target");
    let text_every = WatchOptions::default().text_every;
    let mut inc = Watcher::new(WatchOptions::default());
    let mut full = Watcher::new(WatchOptions {
        incremental: false,
        ..WatchOptions::default()
    });
    // first scans: every process is new
    for _ in 0..3 {
        let _ = inc.tick(&mut target);
        let _ = full.tick(&mut target);
    }
    phase("idle", &mut target, &mut inc, &mut full, ticks, text_every);

    drop(target);
    let out = guest
        .sh("/bin/lab-sleeper churn 20 </dev/null >/dev/null 2>&1 & echo $!")
        .expect("start churn");
    let churn = out.lines.first().cloned().unwrap_or_default();
    guest.release_qmp();
    let mut target =
        Target::open(&spec, &ProfileSpec::Dir(dir.path().to_path_buf())).expect("target");
    phase("churn", &mut target, &mut inc, &mut full, ticks, text_every);

    drop(target);
    guest
        .sh(&format!(
            "kill {}; /bin/lab-sleeper spawn {spawn} </dev/null >/dev/null 2>&1 &",
            churn.trim()
        ))
        .expect("spawn");
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(600) {
        let out = guest.sh("ls -d /proc/[0-9]* | wc -l").expect("count");
        n = out
            .lines
            .first()
            .and_then(|l| l.trim().parse::<u32>().ok())
            .unwrap_or(0);
        if n > spawn {
            break;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    println!("spawned: the guest has {n} processes");
    guest.release_qmp();
    let mut target =
        Target::open(&spec, &ProfileSpec::Dir(dir.path().to_path_buf())).expect("target");
    for _ in 0..3 {
        let _ = inc.tick(&mut target);
        let _ = full.tick(&mut target);
    }
    phase(
        "spawned",
        &mut target,
        &mut inc,
        &mut full,
        ticks / 3,
        text_every,
    );
    drop(target);
    guest.shutdown().expect("shutdown");
}
