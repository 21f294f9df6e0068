//! Benchmark of `detector check` on a live Debian 6.1 guest (target: ≤ 50 ms), with
//! Volatility 3's matching plugins on a dump of the same guest as the baseline, in the
//! same run.
//!
//! `cargo run --release -p detector --example bench_check` (scripts/bench-detector.sh
//! runs it). Prints:
//! - `detector check --qemu` as a command (connect to QMP, map the RAM file, load the
//!   profile directory, identify and discover the kernel, run every check), running
//!   guest (and without `kernel-entries`, the one check that reads all of kernel text)
//!   and `--pause`;
//! - one scan of every check in a process that stays attached (what `watch` pays per
//!   interval), and each check alone;
//! - `detector check --dump` on the 1 GiB ELF dump;
//! - `detector watch --interval 1s` for 30 s: CPU time used, as a share of one core
//!   (target: ≤ 1 %);
//! - Volatility 3 (linux.pslist, linux.check_syscall, linux.check_idt,
//!   linux.hidden_modules, linux.check_creds, linux.tracing.ftrace,
//!   linux.tracing.tracepoints, linux.malware.netfilter,
//!   linux.malware.keyboard_notifiers, linux.malware.tty_check,
//!   linux.malware.check_afinfo) on the same dump.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use detector::checks::{self, Check, Settings};
use detector::image::KernelImage;
use detector::target::{ProfileSpec, SourceSpec, Target};
use vmi_lab::python::{Venv, VOLATILITY};

#[path = "../tests/common/mod.rs"]
mod common;
use common::cpu_time;
use vmi_lab::{BootOptions, Lab, Scenario, DEFAULT_KERNEL};

fn bin() -> std::path::PathBuf {
    common::built_detector()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_cli(args: &[&str], runs: usize) -> (Duration, Duration, i32) {
    let mut times = Vec::with_capacity(runs);
    let mut code = -1;
    for _ in 0..runs {
        let t = Instant::now();
        let out = Command::new(bin()).args(args).output().expect("detector");
        times.push(t.elapsed());
        code = out.status.code().unwrap_or(-1);
    }
    let min = *times.iter().min().unwrap();
    (median(times), min, code)
}

/// CPU time a `detector watch` uses over 30 s (after 3 s of start-up).
fn watch_cpu(args: &[&str]) -> (Duration, Duration) {
    let mut child = Command::new(bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("watch");
    std::thread::sleep(Duration::from_secs(3));
    let c0 = cpu_time(child.id());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    let used = cpu_time(child.id()) - c0;
    let wall = t0.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    (used, wall)
}

/// Median of 200 scans of every check on a clean guest, translations (and kept pages)
/// dropped before each, as each tick of `watch` does.
fn scan_median(target: &Target, settings: &Settings) -> Duration {
    let mut all = Vec::new();
    for _ in 0..200 {
        target.kernel.invalidate();
        let t = Instant::now();
        let r = checks::run_once(&target.kernel, &target.registers, &Check::ALL, settings);
        all.push(t.elapsed());
        assert!(r.errors.is_empty() && r.findings.is_empty(), "{r:?}");
    }
    median(all)
}

/// `detector ARGS` (a watch) for 30 s, printed as `what` with its share of a core and
/// the `goal` said after it.
fn print_watch(what: &str, goal: &str, args: &[&str]) {
    let (used, wall) = watch_cpu(args);
    println!(
        "{what}: {used:.2?} CPU in {wall:.0?} = {:.2} % of one core{goal}",
        used.as_secs_f64() * 100.0 / wall.as_secs_f64()
    );
}

fn vol(
    venv: &Venv,
    symbols: &Path,
    cache: &Path,
    dump: &Path,
    plugin: &str,
) -> (Duration, bool, usize) {
    let t = Instant::now();
    let o = Command::new(venv.bin("vol"))
        .args(["-q", "-r", "csv", "-s"])
        .arg(symbols)
        .arg("--cache-path")
        .arg(cache)
        .arg("-f")
        .arg(dump)
        .arg(plugin)
        .output()
        .expect("vol");
    let rows = String::from_utf8_lossy(&o.stdout)
        .lines()
        .count()
        .saturating_sub(1);
    (t.elapsed(), o.status.success(), rows)
}

fn main() {
    let lab = Lab::open_default().expect("lab");
    let d = lab.store().debug(DEFAULT_KERNEL).expect("-dbg");
    let built =
        profile_gen::build::from_dwarf(&d.vmlinux, Some(&d.system_map), &Default::default())
            .expect("profile");
    let dir = tempfile::tempdir().expect("tempdir");
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("6.1.json"), built.profile.to_json()).unwrap();
    let pdir = profiles.to_str().unwrap();

    println!("bench: {DEFAULT_KERNEL}, standard scenario, 1 GiB guest, TCG");
    let mut guest = lab
        .boot(
            DEFAULT_KERNEL,
            &Scenario::standard(),
            &BootOptions::default(),
        )
        .expect("boot");
    guest.release_qmp();
    let sock = guest.qmp_socket();
    let sock = sock.to_str().unwrap();

    let (med, min, code) = time_cli(&["--qemu", sock, "--profiles", pdir, "check"], 20);
    println!("detector check --qemu (running guest): median {med:.1?}, min {min:.1?}, exit {code} [target <= 50 ms]");
    // the same without kernel-entries, the one check that reads all of kernel text
    let others = Check::ALL
        .iter()
        .filter(|&&c| c != Check::KernelEntries)
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(",");
    let (omed, omin, ocode) = time_cli(
        &[
            "--qemu",
            sock,
            "--profiles",
            pdir,
            "check",
            "--check",
            &others,
        ],
        20,
    );
    println!("detector check --qemu without kernel-entries: median {omed:.1?}, min {omin:.1?}, exit {ocode}");
    // the same guest read through the QEMU process, as a VM without a shared RAM file is
    let pid = guest.pid().expect("qemu pid").to_string();
    let (pmed, pmin, code) = time_cli(
        &[
            "--qemu-pid",
            &pid,
            "--qmp",
            sock,
            "--profiles",
            pdir,
            "check",
        ],
        20,
    );
    println!(
        "detector check --qemu-pid --qmp (through the QEMU process): median {pmed:.1?}, min {pmin:.1?}, exit {code}, {:.2}x the RAM file [target <= 2x]",
        pmed.as_secs_f64() / med.as_secs_f64()
    );
    let (pmed, pmin, code) = time_cli(&["--qemu-pid", &pid, "--profiles", pdir, "check"], 20);
    println!(
        "detector check --qemu-pid (no monitor): median {pmed:.1?}, min {pmin:.1?}, exit {code}, {:.2}x the RAM file",
        pmed.as_secs_f64() / med.as_secs_f64()
    );
    let vmlinux = d.vmlinux.to_str().unwrap();
    let (med, min, code) = time_cli(
        &[
            "--qemu",
            sock,
            "--profiles",
            pdir,
            "--image",
            vmlinux,
            "check",
        ],
        20,
    );
    println!("detector check --qemu --image vmlinux (text/rodata too): median {med:.1?}, min {min:.1?}, exit {code}");
    let (med, min, code) = time_cli(
        &["--qemu", sock, "--profiles", pdir, "check", "--pause"],
        20,
    );
    println!("detector check --qemu --pause:        median {med:.1?}, min {min:.1?}, exit {code}");

    {
        let target = Target::open(
            &SourceSpec::Qemu {
                socket: sock.into(),
                mem_path: None,
            },
            &ProfileSpec::Dir(profiles.clone()),
        )
        .expect("target");
        let t = Instant::now();
        let image =
            std::sync::Arc::new(KernelImage::open(&d.vmlinux, target.profile()).expect("image"));
        println!(
            "kernel image model from the vmlinux ({} patch sites): {:.1?}",
            image.sites.len(),
            t.elapsed()
        );
        let with_image = Settings {
            image: Some(image),
            ..Settings::default()
        };
        let text: Vec<Duration> = (0..50)
            .map(|_| {
                let t = Instant::now();
                let r = checks::run_once(
                    &target.kernel,
                    &target.registers,
                    &[Check::KernelText],
                    &with_image,
                );
                assert!(r.errors.is_empty() && r.findings.is_empty(), "{r:?}");
                t.elapsed()
            })
            .collect();
        println!(
            "one kernel-text scan (.text and .rodata against the image), attached: median {:.2?}",
            median(text)
        );
        let settings = Settings::default();
        let file_scan = scan_median(&target, &settings);
        println!("one scan, every check, attached (as in watch: translations dropped before each): median {file_scan:.2?}");
        for c in Check::ALL {
            let times: Vec<Duration> = (0..100)
                .map(|_| {
                    let t = Instant::now();
                    let _ = checks::run_once(&target.kernel, &target.registers, &[c], &settings);
                    t.elapsed()
                })
                .collect();
            println!(
                "  {:<15} median {:.2?} (shared walks included)",
                c.name(),
                median(times)
            );
        }
        // QEMU takes one QMP client at a time: the RAM file's target lets go of it first
        drop(target);
        let through = Target::open(
            &SourceSpec::QemuPid {
                pid: guest.pid().expect("qemu pid") as i32,
                qmp: Some(sock.into()),
            },
            &ProfileSpec::Dir(profiles.clone()),
        )
        .expect("target through the process");
        let scan = scan_median(&through, &settings);
        println!(
            "one scan, every check, through the QEMU process: median {scan:.2?}, {:.2}x the RAM file [target <= 2x]",
            scan.as_secs_f64() / file_scan.as_secs_f64()
        );
    }

    // watch: CPU share over 30 s
    let watch = ["--json", "watch", "--interval", "1s"];
    let file = ["--qemu", sock, "--profiles", pdir];
    print_watch(
        "detector watch --interval 1s",
        " [target <= 1 %]",
        &[&file[..], &watch[..]].concat(),
    );
    print_watch(
        "detector watch --interval 1s through the QEMU process",
        " [target <= 0.5 %]",
        &[
            &["--qemu-pid", &pid, "--qmp", sock, "--profiles", pdir][..],
            &watch[..],
        ]
        .concat(),
    );
    print_watch(
        "detector watch --interval 1s --image (text every 10th scan)",
        "",
        &[&file[..], &["--image", vmlinux][..], &watch[..]].concat(),
    );

    let dump = dir.path().join("guest.elf");
    guest.dump_elf(&dump).expect("dump");
    guest.shutdown().expect("shutdown");
    let (med, min, code) = time_cli(
        &[
            "--dump",
            dump.to_str().unwrap(),
            "--profiles",
            pdir,
            "check",
        ],
        10,
    );
    println!("detector check --dump (1 GiB ELF): median {med:.1?}, min {min:.1?}, exit {code}");

    match Venv::ensure(lab.cache(), &[VOLATILITY]) {
        Ok(venv) => {
            let syms = dir.path().join("symbols/linux");
            std::fs::create_dir_all(&syms).unwrap();
            let mut out =
                std::io::BufWriter::new(std::fs::File::create(syms.join("6.1.json")).unwrap());
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
            let symbols = dir.path().join("symbols");
            let _ = vol(&venv, &symbols, &cache, &dump, "linux.pslist"); // builds its cache
            let mut total = Duration::ZERO;
            for plugin in [
                "linux.pslist",
                "linux.check_syscall",
                "linux.check_idt",
                "linux.hidden_modules",
                "linux.check_creds",
                "linux.tracing.ftrace",
                "linux.tracing.tracepoints",
                "linux.malware.netfilter",
                "linux.malware.keyboard_notifiers",
                "linux.malware.tty_check",
                "linux.malware.check_afinfo",
            ] {
                let (t, ok, rows) = vol(&venv, &symbols, &cache, &dump, plugin);
                total += t;
                println!(
                    "baseline: Volatility 3 {plugin}: {t:.1?}, {rows} rows{}",
                    if ok { "" } else { " (FAILED)" }
                );
            }
            println!("baseline: Volatility 3, those eleven plugins together: {total:.1?}");
        }
        Err(e) => println!("baseline: Volatility 3 unavailable: {e}"),
    }
}
