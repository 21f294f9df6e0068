//! Benchmark of kernel discovery and the process walk on real lab guests (Debian 6.1),
//! with Volatility 3's `linux.pslist` on the same dump as the baseline, in the same run.
//!
//! `cargo run --release -p vmi-core --example bench_kernel [-- --tasks 1000,10000]
//! [--live-only]` (scripts/bench-vmi-core.sh runs it; `--live-only` stops after the live
//! walks). Prints:
//! - cold start on a 1 GiB ELF dump: open the dump, load the profile directory,
//!   identify the kernel, discover it, list every process (target: ≤ 150 ms);
//! - one process walk of the live guest after warm-up (target: ≤ 200 µs for ~100
//!   tasks), with the translation cache kept and with it invalidated before each walk,
//!   from the shared RAM file and through the QEMU process (target: ≤ 2x the file);
//! - how the walk grows with 1k and 10k tasks;
//! - Volatility 3 linux.pslist on the same dump (baseline).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmi_core::kernel::{Hints, Kernel, Limits, ProfileSet};
use vmi_core::memory::{ElfCore, PauseResume, QemuLive, QemuOptions, VcpuRegisters};
use vmi_core::profile::Profile;
use vmi_lab::python::{Venv, VOLATILITY};
use vmi_lab::{BootOptions, Lab, Scenario, DEFAULT_KERNEL};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn cold_start(dump: &Path, profiles: &Path) -> (Duration, usize) {
    let t = Instant::now();
    let core = ElfCore::open(dump).expect("ELF");
    let (set, _) = ProfileSet::load_dir(profiles).expect("profiles");
    let id = set.identify(&core).expect("identify");
    let hints = Hints {
        registers: core.registers(0).ok(),
        vmcoreinfo: core.vmcoreinfo().cloned(),
    };
    let k = Kernel::discover_at(&core, id.profile, id.banner_pa, &hints).expect("discover");
    let n = k.processes(&Limits::default()).expect("walk").len();
    (t.elapsed(), n)
}

/// Per-walk times on a live guest: (translation cache kept, invalidated per walk).
fn live_walks(live: &QemuLive, profile: Arc<Profile>, runs: usize) -> (Duration, Duration, usize) {
    let mut set = ProfileSet::new();
    set.add("p.json".into(), profile);
    let id = set.identify(live).expect("identify");
    let hints = Hints {
        registers: live.registers(0).ok(),
        vmcoreinfo: None,
    };
    let k = Kernel::discover_at(live, id.profile, id.banner_pa, &hints).expect("discover");
    let limits = Limits::default();
    let mut n = 0;
    for _ in 0..10 {
        n = k.processes(&limits).map(|p| p.len()).unwrap_or(0); // warm-up
    }
    let mut kept = Vec::with_capacity(runs);
    let mut fresh = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let _ = k.processes(&limits);
        kept.push(t.elapsed());
        k.invalidate();
        let t = Instant::now();
        let _ = k.processes(&limits);
        fresh.push(t.elapsed());
    }
    (median(kept), median(fresh), n)
}

fn main() {
    let task_counts: Vec<u32> = std::env::args()
        .skip_while(|a| a != "--tasks")
        .nth(1)
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![1000, 10000]);
    let lab = Lab::open_default().expect("lab");
    let d = lab.store().debug(DEFAULT_KERNEL).expect("-dbg");
    let profile = Arc::new(
        profile_gen::build::from_dwarf(&d.vmlinux, Some(&d.system_map), &Default::default())
            .expect("profile")
            .profile,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("6.1.json"), profile.to_json()).unwrap();

    let live_only = std::env::args().any(|a| a == "--live-only");
    println!("bench: {DEFAULT_KERNEL}, standard scenario, 1 GiB guest, TCG");
    let mut guest = lab
        .boot(
            DEFAULT_KERNEL,
            &Scenario::standard(),
            &BootOptions::default(),
        )
        .expect("boot");
    guest.release_qmp();
    {
        let live = QemuLive::connect(guest.qmp_socket(), &QemuOptions::default()).expect("live");
        let (kept, fresh, n) = live_walks(&live, profile.clone(), 1000);
        println!(
            "live walk, {n} processes: {kept:.1?} (translation cache kept), {fresh:.1?} (invalidated) [target <= 200 µs]"
        );
        drop(live);
        // the same guest read through the QEMU process (as a VM without a shared RAM
        // file is), against the RAM file just measured
        let opts = QemuOptions {
            through_process: true,
            ..QemuOptions::default()
        };
        let live = QemuLive::connect(guest.qmp_socket(), &opts).expect("live, process");
        let before = live.process_read_stats().unwrap_or_default();
        let (pkept, pfresh, n) = live_walks(&live, profile.clone(), 1000);
        let after = live.process_read_stats().unwrap_or_default();
        println!(
            "live walk through the QEMU process, {n} processes: {pkept:.1?} (caches kept, {:.2}x the RAM file), {pfresh:.1?} (invalidated as each scan does, {:.2}x) [target <= 2x invalidated]; per invalidated walk {:.1} system calls, {:.0} reads, {:.0} pages read back in {:.0} ranges of {:.1} KiB taking {:.1?}",
            pkept.as_secs_f64() / kept.as_secs_f64(),
            pfresh.as_secs_f64() / fresh.as_secs_f64(),
            (after.calls - before.calls) as f64 / 1000.0,
            (after.reads - before.reads) as f64 / 2000.0,
            (after.read_back - before.read_back) as f64 / 1000.0,
            (after.ranges - before.ranges) as f64 / 1000.0,
            (after.bytes - before.bytes) as f64 / 1024.0 / 1000.0,
            (after.read_back_time - before.read_back_time) / 1000,
        );
        live.pause().expect("pause");
    }
    if live_only {
        guest.resume().expect("resume");
        guest.shutdown().expect("shutdown");
        return;
    }
    let dump = dir.path().join("guest.elf");
    guest.dump_elf(&dump).expect("dump");
    guest.resume().expect("resume");
    guest.shutdown().expect("shutdown");
    let size = std::fs::metadata(&dump).map(|m| m.len()).unwrap_or(0);
    let _ = cold_start(&dump, &profiles); // page cache warm, as after writing the dump
    let runs: Vec<(Duration, usize)> = (0..5).map(|_| cold_start(&dump, &profiles)).collect();
    let n = runs[0].1;
    let cold = median(runs.into_iter().map(|r| r.0).collect());
    println!(
        "cold start on a {} MiB ELF dump (open, load profiles, identify, discover, {n} processes): {cold:.1?} [target <= 150 ms]",
        size >> 20
    );

    // baseline: Volatility 3 on the same dump
    match Venv::ensure(lab.cache(), &[VOLATILITY]) {
        Ok(venv) => {
            let syms = dir.path().join("symbols/linux");
            std::fs::create_dir_all(&syms).unwrap();
            let isf = syms.join("6.1.json");
            let mut out = std::io::BufWriter::new(std::fs::File::create(&isf).unwrap());
            let opts = profile_gen::build::Options {
                full: true,
                ..Default::default()
            };
            profile_gen::build::generate(
                profile_gen::build::Input::Files {
                    vmlinux: &d.vmlinux,
                    system_map: Some(&d.system_map),
                },
                &opts,
                profile_gen::build::Format::Isf,
                &mut out,
                &mut |_| {},
            )
            .expect("ISF");
            drop(out);
            let cache = dir.path().join("volcache");
            std::fs::create_dir_all(&cache).unwrap();
            let t = Instant::now();
            let o = Command::new(venv.bin("vol"))
                .args(["-q", "-r", "csv", "-s"])
                .arg(dir.path().join("symbols"))
                .arg("--cache-path")
                .arg(&cache)
                .arg("-f")
                .arg(&dump)
                .arg("linux.pslist")
                .output()
                .expect("vol");
            let first = t.elapsed();
            let t = Instant::now();
            let o2 = Command::new(venv.bin("vol"))
                .args(["-q", "-r", "csv", "-s"])
                .arg(dir.path().join("symbols"))
                .arg("--cache-path")
                .arg(&cache)
                .arg("-f")
                .arg(&dump)
                .arg("linux.pslist")
                .output()
                .expect("vol");
            let second = t.elapsed();
            let rows = String::from_utf8_lossy(&o2.stdout)
                .lines()
                .count()
                .saturating_sub(2);
            println!(
                "baseline: Volatility 3 linux.pslist on the same dump: {first:.1?} (first run, builds its symbol cache), {second:.1?} (cached), {rows} rows{}",
                if o.status.success() && o2.status.success() { "" } else { " (FAILED)" }
            );
        }
        Err(e) => println!("baseline: Volatility 3 unavailable: {e}"),
    }

    // growth with the number of tasks
    for &n in &task_counts {
        let opts = BootOptions {
            memory_mib: if n > 2000 { 4096 } else { 1024 },
            ..BootOptions::default()
        };
        let scenario = Scenario::new().spawn("lab-spawn", n);
        let t = Instant::now();
        let mut guest = match lab.boot(DEFAULT_KERNEL, &scenario, &opts) {
            Ok(g) => g,
            Err(e) => {
                println!("{n} tasks: boot failed: {e}");
                continue;
            }
        };
        let boot = t.elapsed();
        guest.release_qmp();
        let live = QemuLive::connect(guest.qmp_socket(), &QemuOptions::default()).expect("live");
        let (kept, fresh, procs) = live_walks(&live, profile.clone(), 50);
        println!(
            "live walk, {procs} processes: {kept:.1?} (translation cache kept), {fresh:.1?} (invalidated); per process {:.2?} (guest ready in {boot:.0?})",
            kept / procs.max(1) as u32
        );
        drop(live);
        guest.shutdown().ok();
    }
}
