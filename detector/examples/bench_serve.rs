//! Benchmark of `detector serve` watching two live guests at 1 Hz each (target: ≤ 2 %
//! of one host core), with the study's pattern as the baseline in the same run: one new
//! `detector ps` process per guest per second.
//!
//! `cargo run --release -p detector --example bench_serve` (scripts/bench-serve.sh runs
//! it). Two lab guests (Debian 6.1 and 6.12, 512 MiB each, TCG) with their profiles in
//! place; then, one after the other, for `SECS` seconds each (default 60):
//! - `detector serve` with both guests at 1 Hz, every check: its CPU time (user +
//!   system, from /proc) after a 10 s settling period, as a share of one core, and the
//!   scans and scan latency from its metrics endpoint;
//! - the same at 10 Hz each;
//! - the baseline: `detector --qemu <guest> ps` started for each guest every second,
//!   the CPU time of those processes (getrusage of the children).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cpu_time;
use vmi_lab::{BootOptions, Guest, Lab, Scenario, DEFAULT_KERNEL};

const OTHER_KERNEL: &str = "6.12.117+deb12-amd64";

fn bin() -> PathBuf {
    common::built_detector()
}

fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn scrape(addr: &str) -> String {
    common::get_metrics(addr).unwrap_or_default()
}

fn sum_metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn write_config(path: &Path, guests: &[(&str, &Guest, &Path)], interval: &str, port: u16) {
    let mut s = format!(
        "[service]\ncpu_budget = 100\nmetrics = \"127.0.0.1:{port}\"\n[output]\nstdout = \"all\"\n[defaults]\ninterval = \"{interval}\"\n"
    );
    for (name, g, profiles) in guests {
        s.push_str(&format!(
            "[[guest]]\nname = \"{name}\"\nqemu = \"{}\"\nmem_path = \"{}\"\nprofiles = \"{}\"\n",
            g.qmp_socket().display(),
            g.ram_path().display(),
            profiles.display()
        ));
    }
    std::fs::write(path, s).unwrap();
}

struct ServeRun {
    cpu_percent: f64,
    scans: f64,
    mean_scan_ms: f64,
}

fn run_serve(config: &Path, port: u16, secs: u64) -> ServeRun {
    let mut child = Command::new(bin())
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("detector serve");
    let addr = format!("127.0.0.1:{port}");
    std::thread::sleep(Duration::from_secs(10));
    let m0 = scrape(&addr);
    let c0 = cpu_time(child.id());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let used = cpu_time(child.id()) - c0;
    let wall = t0.elapsed();
    let m1 = scrape(&addr);
    // SAFETY: kill(2) on our own child
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
    let scans = sum_metric(&m1, "vmi_scans_total{") - sum_metric(&m0, "vmi_scans_total{");
    let secs_sum = sum_metric(&m1, "vmi_scan_duration_seconds_sum{")
        - sum_metric(&m0, "vmi_scan_duration_seconds_sum{");
    ServeRun {
        cpu_percent: 100.0 * used.as_secs_f64() / wall.as_secs_f64(),
        scans,
        mean_scan_ms: if scans > 0.0 {
            1000.0 * secs_sum / scans
        } else {
            0.0
        },
    }
}

fn main() {
    let secs: u64 = std::env::var("SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let lab = Lab::open_default().expect("lab");
    let dir = tempfile::tempdir().unwrap();
    let mut profile_dirs = Vec::new();
    for (i, k) in [DEFAULT_KERNEL, OTHER_KERNEL].iter().enumerate() {
        let d = dir.path().join(format!("profiles-{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let image = lab.store().image(k).expect("image");
        let built = profile_gen::build::from_btf(&image.vmlinuz, None, None, &Default::default())
            .expect("profile");
        std::fs::write(d.join("p.json"), built.profile.to_json()).unwrap();
        profile_dirs.push(d);
    }
    let opts = BootOptions {
        memory_mib: 512,
        ..BootOptions::default()
    };
    let mut a = lab
        .boot(DEFAULT_KERNEL, &Scenario::standard(), &opts)
        .expect("boot 6.1");
    let mut b = lab
        .boot(OTHER_KERNEL, &Scenario::standard(), &opts)
        .expect("boot 6.12");
    a.release_qmp();
    b.release_qmp();
    let guests = [
        ("a", &a, profile_dirs[0].as_path()),
        ("b", &b, profile_dirs[1].as_path()),
    ];
    let cfg = dir.path().join("detector.toml");
    println!("detector serve, 2 live guests (Debian 6.1 and 6.12, TCG), every check, {secs} s after 10 s of settling:");
    let mut results = Vec::new();
    for (interval, port) in [("1s", 19_187u16), ("100ms", 19_188)] {
        write_config(&cfg, &guests, interval, port);
        let r = run_serve(&cfg, port, secs);
        println!(
            "  serve, {interval:>5} per guest: {:6.3} % of one core, {:5.0} scans, {:.2} ms per scan",
            r.cpu_percent, r.scans, r.mean_scan_ms
        );
        results.push(r);
    }

    // baseline: a new `detector ps` per guest per second
    let c0 = children_cpu();
    let t0 = Instant::now();
    let mut runs = 0;
    for tick in 0..secs {
        let due = t0 + Duration::from_secs(tick);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        for (g, profiles) in [(&a, &profile_dirs[0]), (&b, &profile_dirs[1])] {
            let ok = Command::new(bin())
                .arg("--qemu")
                .arg(g.qmp_socket())
                .arg("--mem-path")
                .arg(g.ram_path())
                .arg("--profiles")
                .arg(profiles)
                .arg("ps")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            runs += usize::from(ok);
        }
    }
    let wall = t0.elapsed();
    let used = children_cpu() - c0;
    let base = 100.0 * used.as_secs_f64() / wall.as_secs_f64();
    println!(
        "  baseline, a new `detector ps` per guest per second: {base:6.3} % of one core ({runs} runs succeeded)"
    );
    println!(
        "target: serve at 1 Hz for 2 guests <= 2 % of one core: {} ({:.3} %, {:.0}x less than the baseline)",
        if results[0].cpu_percent <= 2.0 {
            "met"
        } else {
            "MISSED"
        },
        results[0].cpu_percent,
        base / results[0].cpu_percent.max(1e-6)
    );
    let _ = a.shutdown();
    let _ = b.shutdown();
}
