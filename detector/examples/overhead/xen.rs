//! The Xen mode (`overhead -- --xen`): the same experiment on the hypervisor of the
//! study. The lab's Xen rig (Debian's Xen 4.17 in QEMU TCG with two emulated CPUs: dom0
//! pinned to one, `dom0_max_vcpus=1 dom0_vcpus_pin`; the domU on the other, `cpus="1"`)
//! runs a PVH domU (Debian 6.1, 1 vCPU, 256 MiB, `tsc_mode="native"`) with the workload
//! of the QEMU mode; the detector binary runs in dom0 against it: `detector --xen DOMU
//! watch` pause-free and with `--pause` (`xc_domain_pause`), and one `detector --xen
//! DOMU ps` per tick, started in dom0 by this example's own binary (copied there and
//! run as `--dom0-ps`, the loop of the QEMU mode). The host clock is the clock outside
//! the rig, around the benchmark command; the introspection side's CPU is read from
//! dom0's /proc, and dom0's whole CPU (the study's figure: 1.8 % → 39 %) from its
//! /proc/stat over the window. `watch`'s scan latency is `Watcher::tick` timed in dom0
//! by this binary (`--dom0-latency`). Blocks, statistics, table and JSON are the QEMU
//! mode's; writes `overhead-xen.json` and `overhead-xen.png`.

use super::*;
use vmi_lab::xen::XEN_BIN;
use vmi_lab::{quote, DomuSpec, XenDomu, XenOptions, XenRig};

const DOMU: &str = "bench-pvh";
const DOM0_DETECTOR: &str = "/lab/files/detector";
const HELPER: &str = "/lab/files/overhead";
const PROFILES: &str = "/lab/files/profiles";
/// The QEMU thread of the CPU the domU is pinned to (`cpus="1"`).
const DOMU_VCPU: &str = "CPU 1/TCG";

/// In dom0: run a helper mode if the arguments name one (true if one ran).
/// `--dom0-ps DETECTOR DOMAIN PROFILES HZ STOP OUT`: one `detector ps` per tick until
/// the file STOP exists, then OUT gets `N CPU-SECONDS LIFE-SECONDS` and a line per
/// process with its wall time in ms.
/// `--dom0-latency DOMAIN PROFILES PAUSE N HZ`: N ticks of `Watcher` (paused if PAUSE is
/// 1) at HZ, their wall times in ms on stdout, a line each after a first line.
pub fn helper() -> bool {
    let v: Vec<String> = std::env::args().skip(1).collect();
    let env = |domain: &str, profiles: &str| Env {
        spec: SourceSpec::Xen {
            domain: domain.to_string(),
        },
        profiles: PathBuf::from(profiles),
    };
    match v.first().map(String::as_str) {
        Some("--dom0-ps") if v.len() == 7 => {
            use_detector(PathBuf::from(&v[1]));
            let hz: u32 = v[4].parse().expect("HZ");
            let stop = PathBuf::from(&v[5]);
            let t = Instant::now();
            let (n, cpu, lat) = ps_loop(
                &env(&v[2], &v[3]).base_args(),
                Duration::from_secs_f64(1.0 / hz as f64),
                &|| stop.exists(),
            );
            let head = format!("{n} {cpu} {}", t.elapsed().as_secs_f64());
            let mut out = atomic_write_file::AtomicWriteFile::open(&v[6]).expect("the result");
            std::io::Write::write_all(&mut out, lines(&head, &lat).as_bytes())
                .expect("writing the result");
            out.commit().expect("renaming the result");
            true
        }
        Some("--dom0-latency") if v.len() == 6 => {
            let lat = watch_latency(
                &env(&v[1], &v[2]),
                v[3] == "1",
                v[5].parse().expect("HZ"),
                v[4].parse().expect("N"),
            );
            print!("{}", lines("latencies", &lat));
            true
        }
        Some(k) if k.starts_with("--dom0-") => panic!("{k}: wrong number of arguments"),
        _ => false,
    }
}

/// `head` and a line per value: short lines, as the lab channel relays dom0's output
/// line by line.
fn lines(head: &str, values: &[f64]) -> String {
    let mut s = format!("{head}\n");
    for v in values {
        s += &format!("{v}\n");
    }
    s
}

/// The numbers of [`lines`]' head line (words that are not numbers left out), and the
/// values.
fn unlines(out: &[String]) -> (Vec<f64>, Vec<f64>) {
    let Some((head, rest)) = out.split_first() else {
        panic!("no output from the dom0 helper")
    };
    let head = head
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let values = rest
        .iter()
        .map(|l| l.trim().parse().expect("a number from the dom0 helper"))
        .collect();
    (head, values)
}

/// A dom0 command that must succeed; its output lines.
fn dom0(rig: &mut XenRig, cmd: &str) -> Vec<String> {
    let out = rig.dom0_sh(cmd).expect("dom0 shell");
    assert_eq!(out.status, 0, "dom0: {cmd}: {:?}", out.lines);
    out.lines
}

/// Poll dom0 until `test` holds (a shell condition), at most `secs` seconds.
fn dom0_wait(rig: &mut XenRig, test: &str, secs: u64, what: &str, err: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if rig.dom0_sh(test).expect("dom0 shell").status == 0 {
            return;
        }
        if Instant::now() > deadline {
            let e = rig
                .dom0_sh(&format!("cat {} 2>&1 | tail -20", quote(err).unwrap()))
                .map(|o| o.lines.join("\n"))
                .unwrap_or_default();
            panic!("{what} within {secs} s: {e}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// CPU seconds a dom0 process has run (all its threads), from its schedstat.
fn dom0_runtime(rig: &mut XenRig, pid: u32) -> f64 {
    dom0(rig, &format!("cat /proc/{pid}/task/*/schedstat"))
        .iter()
        .filter_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}

/// dom0's busy CPU seconds (its one vCPU), from its /proc/stat.
fn dom0_busy(rig: &mut XenRig) -> f64 {
    // the line itself: a background job's output may come first
    let out = dom0(rig, "head -1 /proc/stat");
    let line = out
        .iter()
        .find(|l| l.starts_with("cpu "))
        .unwrap_or_else(|| panic!("dom0's /proc/stat: {out:?}"));
    stat_busy(line)
}

/// The introspection side of one run, in dom0.
enum XenSide {
    None,
    Watch { pid: u32 },
    Ps,
}

const WATCH_OUT: &str = "/tmp/ovh-watch";
const PS_OUT: &str = "/tmp/ovh-ps";

fn start(rig: &mut XenRig, cfg: Config) -> XenSide {
    let interval_ms = 1000 / cfg.hz.max(1);
    match cfg.mode {
        Mode::Baseline => XenSide::None,
        Mode::Watch | Mode::WatchPause => {
            let pause = if cfg.mode == Mode::WatchPause {
                " --pause"
            } else {
                ""
            };
            let f = WATCH_OUT;
            dom0(
                rig,
                &format!(
                    "rm -f {f} {f}.*; (sh -c 'echo $$ >{f}.pid; exec {DOM0_DETECTOR} --xen {DOMU} --profiles {PROFILES} \
                     --json watch --interval {interval_ms}ms{pause}' >{f} 2>{f}.err </dev/null; echo $? >{f}.code) \
                     >/dev/null 2>&1 </dev/null &"
                ),
            );
            // the first scan reports every process: attached, profile loaded, scanning
            dom0_wait(
                rig,
                &format!("test -s {f}"),
                120,
                "detector watch printed nothing",
                &format!("{f}.err"),
            );
            let pid = dom0(rig, &format!("cat {f}.pid"))
                .join("")
                .trim()
                .parse()
                .expect("watch's pid");
            XenSide::Watch { pid }
        }
        Mode::PsPerTick => {
            let f = PS_OUT;
            dom0(
                rig,
                &format!(
                    "rm -f {f}.*; ({HELPER} --dom0-ps {DOM0_DETECTOR} {DOMU} {PROFILES} {} {f}.stop {f}.json \
                     >{f}.err 2>&1 </dev/null &) >/dev/null 2>&1 </dev/null",
                    cfg.hz
                ),
            );
            XenSide::Ps
        }
    }
}

/// Stop the introspection side; returns (CPU seconds in the window, scans/s, latencies).
fn stop(rig: &mut XenRig, side: XenSide, cpu_at_start: f64, window: f64) -> (f64, f64, Vec<f64>) {
    match side {
        XenSide::None => (0.0, 0.0, Vec::new()),
        XenSide::Watch { pid } => {
            let cpu = dom0_runtime(rig, pid) - cpu_at_start;
            let f = WATCH_OUT;
            dom0(rig, &format!("kill -TERM {pid}"));
            dom0_wait(
                rig,
                &format!("test -s {f}.code"),
                60,
                "watch did not stop",
                &format!("{f}.err"),
            );
            let code = dom0(rig, &format!("cat {f}.code")).join("");
            assert_eq!(code.trim(), "0", "detector watch exit status");
            let stopped = dom0(rig, &format!("grep '\"event\":\"stopped\"' {f}")).join("");
            let v: Value = serde_json::from_str(&stopped).expect("watch's stopped line");
            let scans = v["scans"].as_f64().unwrap_or(0.0);
            // the first scan happened before the window opened
            (cpu, (scans - 1.0).max(0.0) / window, Vec::new())
        }
        XenSide::Ps => {
            let f = PS_OUT;
            dom0(rig, &format!("touch {f}.stop"));
            dom0_wait(
                rig,
                &format!("test -s {f}.json"),
                60,
                "the ps loop did not stop",
                &format!("{f}.err"),
            );
            let (head, lat) = unlines(&dom0(rig, &format!("cat {f}.json")));
            let [n, cpu, life] = head[..] else {
                panic!("ps loop result: {head:?}")
            };
            (cpu / life * window, n / life, lat)
        }
    }
}

fn run(rig: &mut XenRig, domu: &mut XenDomu, cfg: Config, rounds: usize, iters: u64) -> Run {
    let side = start(rig, cfg);
    let c0 = match side {
        XenSide::Watch { pid } => dom0_runtime(rig, pid),
        _ => 0.0,
    };
    let d0 = dom0_busy(rig);
    let qemu = rig.pid().expect("QEMU's pid");
    let probe = HostProbe::start(qemu, thread_named(qemu, DOMU_VCPU).expect(DOMU_VCPU));
    let t0 = Instant::now();
    let bench = cpubench(domu, rounds, iters);
    let window = t0.elapsed().as_secs_f64();
    let host = probe.end(0.0);
    let d1 = dom0_busy(rig);
    let intro = stop(rig, side, c0, window);
    Run::new(bench, window, intro, host, Some(d1 - d0))
}

/// `Watcher::tick` timed in dom0: `n` ticks at `hz`.
fn watch_latency_dom0(rig: &mut XenRig, pause: bool, n: usize, hz: u32) -> Vec<f64> {
    let out = dom0(
        rig,
        &format!(
            "{HELPER} --dom0-latency {DOMU} {PROFILES} {} {n} {hz} 2>/tmp/ovh-lat.err",
            u8::from(pause)
        ),
    );
    let at = out
        .iter()
        .position(|l| l == "latencies")
        .unwrap_or_else(|| panic!("no latencies from dom0: {out:?}"));
    unlines(&out[at..]).1
}

pub fn main(a: &Args) {
    let lab = Lab::open_default().expect("lab");
    let venv = Venv::ensure(lab.cache(), &["matplotlib==3.9.2"]).expect("matplotlib venv");
    let dir = tempfile::tempdir().expect("tempdir");
    copy_detector(dir.path());
    let profile = dir.path().join("6.1.json");
    std::fs::write(&profile, default_profile(&lab)).unwrap();
    let me = std::env::current_exe().expect("current exe");
    let helper = dir.path().join("overhead");
    std::fs::copy(&me, &helper).expect("copying this binary");
    let spec = DomuSpec::pvh(DOMU, DEFAULT_KERNEL, workload_scenario());
    let opts = XenOptions::default()
        .domu(spec.clone())
        .program(bin(), DOM0_DETECTOR)
        .program(&helper, HELPER)
        .file(&profile, &format!("{PROFILES}/6.1.json"));
    let mut rig = XenRig::boot(&lab, &opts).expect("Xen rig");
    let mut domu = rig.start(DOMU).expect("domU");
    println!(
        "Xen + dom0 ready in {:.1?}, {DOMU} in {:.1?}",
        rig.boot_time(),
        domu.boot_time()
    );
    let vcpus = dom0(&mut rig, &format!("{XEN_BIN}/xl vcpu-list 2>/dev/null"));
    println!("{}", vcpus.join("\n"));
    let session = Session::new(&mut domu, a.round_secs);
    let iters = session.iters;
    println!(
        "bench (Xen): PVH domU {DEFAULT_KERNEL}, {} MiB, {} vCPU; guest {:.1} M iterations/s; runs of {} rounds x {} iterations; {} blocks; rates {:?} Hz; load average {}",
        spec.memory_mib,
        spec.vcpus,
        session.rate / 1e6,
        a.rounds,
        iters,
        a.repeats,
        a.rates,
        session.load_start
    );
    let configs = configs(&a.modes, &a.rates);
    let b = blocks(&configs, a.repeats, |cfg| {
        run(&mut rig, &mut domu, cfg, a.rounds, iters)
    });
    // scan latency of watch's own tick, in dom0
    let lat = watch_latencies(&mut domu, |pause| {
        watch_latency_dom0(&mut rig, pause, 100, 10)
    });
    let source = "Watcher::tick timed in dom0, 100 ticks at 10 Hz, workload running";
    let doc = session.doc(a, &b, [&lat[0], &lat[1]], source, json!({
        "what": "guest slowdown under continuous introspection (issue 7), on Xen (issue 9)",
        "command": super::command_line(),
        "hypervisor": "Xen 4.17 (Debian bookworm) in QEMU TCG, -smp 2; dom0 (1 vCPU, 1024 MiB) pinned to CPU 0, the domU to CPU 1",
        "xl_vcpu_list": vcpus,
        "rig_boot_s": rig.boot_time().as_secs_f64(),
        "guest": {"type": "pvh", "memory_mib": spec.memory_mib, "vcpus": spec.vcpus,
                  "tsc_mode": "native",
                  "scenario": "standard + lab-churn (20 short-lived processes/s)"},
        "method": format!("{METHOD}. The host clock is the clock outside the rig (QEMU's host), around the command sent to the domU through dom0's console relay; the detector runs in dom0 and its CPU (user + system of its threads, or of each ps process) is dom0 CPU; dom0_cpu_pct: dom0's whole busy time over the window (/proc/stat, one vCPU), the study's dom0 figure"),
    }));
    let _ = rig.shutdown();
    write_doc(&venv, &a.out, "overhead-xen", &doc);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_output_round_trips() {
        let text = lines("3 0.25 1.5", &[12.5, 480.0]);
        let out: Vec<String> = text.lines().map(String::from).collect();
        assert_eq!(unlines(&out), (vec![3.0, 0.25, 1.5], vec![12.5, 480.0]));
        // the latency head is a word, not a number
        let out = ["latencies".to_string(), "1.25".to_string()];
        assert_eq!(unlines(&out), (vec![], vec![1.25]));
    }
}
