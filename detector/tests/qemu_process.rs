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

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{detector, findings, profile_into, views_match};
use serde_json::Value;
use vmi_core::memory::{QemuLive, QemuOptions, RamRegion};
use vmi_lab::{BootOptions, Guest, Lab, RamBacking, Scenario};

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
    // anonymous memory cannot be mapped from another process: it is copied
    if !bare.ram_access().contains("process_vm_readv") {
        problems.push(format!("{label}: RAM read as {}", bare.ram_access()));
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
/// pid alone (the memfd mapped here through `/proc/PID/map_files`): `check` reports
/// them, and `watch` reports a process that starts.
#[test]
fn memfd_guest_hooked_and_watched_by_pid() {
    let kernel = "6.1.0-56-amd64";
    let lab = Lab::open_default().expect("lab");
    let profiles = tempfile::tempdir().expect("tempdir");
    profile_into(&lab, kernel, profiles.path());
    let scenario = common::rootkit_scenario(&lab, kernel);
    let opts = BootOptions {
        ram: RamBacking::Memfd,
        ..BootOptions::default()
    };
    let mut guest = lab.boot(kernel, &scenario, &opts).expect("boot");
    let truth = guest.refresh_truth().expect("truth");
    let hideme = truth.by_comm("vmi-hideme").next().expect("vmi-hideme").pid;
    common::load_rootkits(&mut |line| guest.sh(line), hideme);
    guest.release_qmp();
    let source = vec!["--qemu-pid".to_string(), guest.pid().unwrap().to_string()];
    // QEMU maps a memfd backend shared and sealed: it is mapped here as well, and read
    // as a RAM file is
    let run = detector(&source, profiles.path(), &["--json", "identify"]);
    let id: Value = serde_json::from_str(&run.stdout).expect("identify JSON");
    let ram = id["source"]["ram"].as_str().unwrap_or_default();
    assert!(
        ram.starts_with("memfd of QEMU process") && ram.ends_with("mapped"),
        "RAM read as {ram:?}: {}",
        run.stderr
    );
    let run = detector(&source, profiles.path(), &["--json", "check"]);
    common::assert_rootkits_found(&run, hideme);

    let (mut child, mut lines) = common::watch_started(
        Path::new(env!("CARGO_BIN_EXE_detector")),
        &source,
        profiles.path(),
        &["--interval", "500ms"],
        Duration::from_secs(60),
    );
    let event = |v: &Value| common::event(v).to_string();
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

/// Errors name the process and say why: a pid that is not QEMU, a pid that is gone, and
/// a QEMU that exits while `watch` reads it through its process (reported as a
/// shutdown, and `--on-shutdown exit` ends the watch).
#[test]
fn errors_name_the_process_and_why() {
    let kernel = "6.1.0-56-amd64";
    let lab = Lab::open_default().expect("lab");
    let profiles = tempfile::tempdir().expect("tempdir");
    profile_into(&lab, kernel, profiles.path());
    let by_pid = |pid: u32| vec!["--qemu-pid".to_string(), pid.to_string()];

    let run = detector(&by_pid(std::process::id()), profiles.path(), &["ps"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("is not QEMU"), "{}", run.stderr);

    let mut gone = Command::new("true").spawn().expect("true");
    let pid = gone.id();
    gone.wait().expect("wait");
    let run = detector(&by_pid(pid), profiles.path(), &["ps"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("process {pid}")),
        "{}",
        run.stderr
    );

    let opts = BootOptions {
        ram: RamBacking::Anonymous,
        ..BootOptions::default()
    };
    let mut guest = lab
        .boot(kernel, &Scenario::standard(), &opts)
        .expect("boot");
    guest.release_qmp();
    let (mut child, mut lines) = common::watch_started(
        Path::new(env!("CARGO_BIN_EXE_detector")),
        &by_pid(guest.pid().unwrap()),
        profiles.path(),
        &["--interval", "200ms", "--on-shutdown", "exit"],
        Duration::from_secs(60),
    );
    let event = |v: &Value| common::event(v).to_string();
    drop(guest); // QEMU is killed
    lines.wait_for("the shutdown", Duration::from_secs(60), |v| {
        event(v) == "shutdown"
    });
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{:?}", lines.seen);
}
