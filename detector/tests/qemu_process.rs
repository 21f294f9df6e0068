//! The detector on QEMU guests started the way people start them: RAM as QEMU's default
//! anonymous memory (pc and q35, 1 GiB and 4 GiB, above and below the 4 GiB split) or a
//! memfd backend, with no shared RAM file. Each guest is read through the QEMU process:
//! by pid without touching its monitor (the memory map from QEMU's command line), by pid
//! with its QMP socket, and by the QMP socket alone (`--qemu`, whose RAM is then found
//! through the socket's peer). `identify`, `ps` and `lsmod` must equal the guest's own
//! view, `check` must find nothing on a clean guest and the test rootkits on a hooked
//! one, `--pause` must say that it needs the monitor when there is none, and `watch`
//! must report a process start. The memory map read from the command line must place
//! RAM where QEMU's own `info mtree` does.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use vmi_core::memory::{QemuLive, QemuOptions, RamRegion};
use vmi_lab::{BootOptions, GroundTruth, Guest, Lab, RamBacking, Scenario};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }
}

fn detector(source: &[String], profiles: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_detector"))
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

fn profile_into(lab: &Lab, kernel: &str, dir: &Path) {
    let d = lab.store().debug(kernel).expect("-dbg package");
    let built =
        profile_gen::build::from_dwarf(&d.vmlinux, Some(&d.system_map), &Default::default())
            .expect("profile-gen");
    std::fs::write(dir.join(format!("{kernel}.json")), built.profile.to_json()).unwrap();
}

/// The three ways to name the guest: by pid alone, by pid with its QMP socket, by the
/// QMP socket alone.
fn sources(guest: &Guest) -> Vec<(&'static str, Vec<String>)> {
    let pid = guest.pid().expect("QEMU's pid").to_string();
    let sock = guest.qmp_socket().to_str().unwrap().to_string();
    vec![
        ("pid", vec!["--qemu-pid".into(), pid.clone()]),
        (
            "pid+qmp",
            vec!["--qemu-pid".into(), pid, "--qmp".into(), sock.clone()],
        ),
        ("qmp", vec!["--qemu".into(), sock]),
    ]
}

/// `identify`, `ps` and `lsmod` through `source` against the guest's own view (read
/// while the guest is paused, so both sides see the same processes).
fn views_match(
    label: &str,
    source: &[String],
    profiles: &Path,
    truth: &GroundTruth,
) -> Vec<String> {
    let mut problems = Vec::new();
    let id = detector(source, profiles, &["--json", "identify"]);
    if id.code != 0 {
        return vec![format!("{label}: identify exit {}: {}", id.code, id.stderr)];
    }
    let idv = id.json();
    if idv["release"] != truth.release.as_str() {
        problems.push(format!(
            "{label}: identify says {} for {}",
            idv["release"], truth.release
        ));
    }
    let shift = truth.text_addr.wrapping_sub(0xffff_ffff_8100_0000);
    if idv["kaslr"]["virtual_shift"] != format!("{shift:#x}").as_str() {
        problems.push(format!(
            "{label}: virtual shift {}, want {shift:#x}",
            idv["kaslr"]["virtual_shift"]
        ));
    }
    let ps = detector(source, profiles, &["--json", "ps"]).json();
    let got: BTreeSet<(u64, u64)> = ps
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["pid"].as_u64().unwrap(), p["ppid"].as_u64().unwrap()))
        .collect();
    let want: BTreeSet<(u64, u64)> = truth
        .processes
        .iter()
        .map(|p| (u64::from(p.pid), u64::from(p.ppid)))
        .collect();
    if got != want {
        problems.push(format!(
            "{label}: ps: only in memory {:?}, only in the guest {:?}",
            got.difference(&want).collect::<Vec<_>>(),
            want.difference(&got).collect::<Vec<_>>()
        ));
    }
    let lsmod = detector(source, profiles, &["--json", "lsmod"]).json();
    let got: BTreeSet<String> = lsmod
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = truth.modules.iter().map(|m| m.name.clone()).collect();
    if got != want {
        problems.push(format!("{label}: lsmod {got:?}, the guest says {want:?}"));
    }
    problems
}

/// Every range of `a` outside the BIOS and option-ROM window (0xa0000..1 MiB, which the
/// command-line map leaves out) lies in one range of `b` at the same RAM block offset.
fn same_bytes(a: &[RamRegion], b: &[RamRegion]) -> bool {
    let pieces = a.iter().flat_map(|r| {
        [
            (r.start.0, r.end.0.min(0xa0000)),
            (r.start.0.max(0x10_0000), r.end.0),
        ]
        .into_iter()
        .filter(|(s, e)| s < e)
        .map(move |(s, e)| (s, e, r.file_offset + (s - r.start.0)))
    });
    pieces.into_iter().all(|(s, e, off)| {
        b.iter()
            .any(|q| q.start.0 <= s && e <= q.end.0 && q.file_offset + (s - q.start.0) == off)
    })
}

/// Findings of a `check --json` run as (check, evidence).
fn findings(run: &Run) -> Vec<(String, Value)> {
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

/// Boot `kernel` with `ram` on `machine` with `mib` of RAM and compare every way of
/// reading it with the guest.
fn clean_guest(kernel: &str, ram: RamBacking, machine: &str, mib: u32) -> Vec<String> {
    let lab = Lab::open_default().expect("lab");
    let profiles = tempfile::tempdir().expect("tempdir");
    profile_into(&lab, kernel, profiles.path());
    let opts = BootOptions {
        ram,
        machine: machine.into(),
        memory_mib: mib,
        ..BootOptions::default()
    };
    let mut guest = lab
        .boot(kernel, &Scenario::standard(), &opts)
        .expect("boot");
    let label = format!("{kernel} {machine} {mib} MiB {ram:?}");
    let truth = guest.refresh_truth().expect("truth");
    let mut problems = Vec::new();

    // the map from the command line is where QEMU's own map puts RAM (outside the BIOS
    // and option-ROM window, which the command-line map leaves out)
    let pid = guest.pid().expect("pid") as i32;
    guest.release_qmp();
    let bare = QemuLive::attach(pid, None, &QemuOptions::default()).expect("attach by pid");
    let monitored = QemuLive::attach(pid, Some(&guest.qmp_socket()), &QemuOptions::default())
        .expect("attach by pid with QMP");
    if !(same_bytes(bare.memory_map(), monitored.memory_map())
        && same_bytes(monitored.memory_map(), bare.memory_map()))
    {
        problems.push(format!(
            "{label}: the command line's map {:?}, QEMU's {:?}",
            bare.memory_map(),
            monitored.memory_map()
        ));
    }
    if bare.pid() != Some(pid) || monitored.ram_path().is_some() {
        problems.push(format!("{label}: not read through the QEMU process"));
    }
    drop(monitored);

    guest.pause().expect("pause");
    guest.release_qmp();
    for (how, source) in sources(&guest) {
        problems.extend(views_match(
            &format!("{label} by {how}"),
            &source,
            profiles.path(),
            &truth,
        ));
    }
    guest.resume().expect("resume");
    guest.release_qmp();
    for (how, source) in sources(&guest) {
        let run = detector(&source, profiles.path(), &["--json", "check"]);
        let f = findings(&run);
        if run.code != 0 || !f.is_empty() {
            problems.push(format!(
                "{label} by {how}: check exit {}, findings {f:?}: {}",
                run.code, run.stderr
            ));
        }
        let paused = detector(&source, profiles.path(), &["--json", "check", "--pause"]);
        match how {
            // no monitor: pausing is refused and says what is missing
            "pid" => {
                if paused.code != 2
                    || !paused.stdout.contains("QMP") && !paused.stderr.contains("QMP")
                {
                    problems.push(format!(
                        "{label} by pid: check --pause exit {}: {} {}",
                        paused.code, paused.stdout, paused.stderr
                    ));
                }
            }
            _ => {
                if paused.code != 0 || !findings(&paused).is_empty() {
                    problems.push(format!(
                        "{label} by {how}: check --pause exit {}: {}",
                        paused.code, paused.stderr
                    ));
                }
            }
        }
    }
    guest.shutdown().expect("shutdown");
    problems
}

fn assert_none(problems: Vec<String>) {
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn default_ram_pc_1g_6_1() {
    assert_none(clean_guest(
        "6.1.0-56-amd64",
        RamBacking::Anonymous,
        "pc",
        1024,
    ));
}

#[test]
fn default_ram_q35_4g_newest_7() {
    // q35 puts 2 GiB below 4 GiB and the rest above
    assert_none(clean_guest("newest:7", RamBacking::Anonymous, "q35", 4096));
}

#[test]
fn default_ram_pc_4g_6_12() {
    // pc puts 3 GiB below 4 GiB
    assert_none(clean_guest(
        "6.12.117+deb12-amd64",
        RamBacking::Anonymous,
        "pc",
        4096,
    ));
}

/// A memfd guest (libvirt's `<source type='memfd'/>`) with test rootkits loaded, read by
/// pid alone: `check` reports them, and `watch` reports a process that starts.
#[test]
fn memfd_guest_hooked_and_watched_by_pid() {
    let kernel = "6.1.0-56-amd64";
    let lab = Lab::open_default().expect("lab");
    let profiles = tempfile::tempdir().expect("tempdir");
    profile_into(&lab, kernel, profiles.path());
    let mut scenario = Scenario::standard().sleeper("vmi-hideme");
    for m in ["vmi_hideproc", "vmi_hooksys"] {
        scenario = scenario.file(
            common::attack_module(&lab, kernel, m),
            &format!("/lab/{m}.ko"),
            0o644,
        );
    }
    let opts = BootOptions {
        ram: RamBacking::Memfd,
        ..BootOptions::default()
    };
    let mut guest = lab.boot(kernel, &scenario, &opts).expect("boot");
    let truth = guest.refresh_truth().expect("truth");
    let hideme = truth.by_comm("vmi-hideme").next().expect("vmi-hideme").pid;
    for line in [
        format!("insmod /lab/vmi_hideproc.ko pid={hideme}"),
        "insmod /lab/vmi_hooksys.ko nr=180".into(),
    ] {
        let out = guest.sh(&line).expect("sh");
        assert_eq!(out.status, 0, "{line}: {:?}", out.lines);
    }
    guest.release_qmp();
    let source = vec!["--qemu-pid".to_string(), guest.pid().unwrap().to_string()];
    let run = detector(&source, profiles.path(), &["--json", "check"]);
    let f = findings(&run);
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

    let mut child = Command::new(env!("CARGO_BIN_EXE_detector"))
        .args(&source)
        .arg("--profiles")
        .arg(profiles.path())
        .args(["--json", "watch", "--interval", "500ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("watch");
    let mut lines = common::Lines::new(child.stdout.take().unwrap());
    let event = |v: &Value| v["event"].as_str().unwrap_or("").to_string();
    lines.wait_for("started", Duration::from_secs(60), |v| {
        event(v) == "started"
    });
    let marker = common::start_marker(&mut guest, "vmi-marker");
    lines.wait_for("the marker starting", Duration::from_secs(60), |v| {
        event(v) == "process-start" && v["pid"] == marker
    });
    // SAFETY: kill(2) on our own child
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    drop(guest);
}
