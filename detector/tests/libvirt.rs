//! The detector on a libvirt domain: a private libvirtd (Debian's, started by the test
//! without systemd in its own mount namespace, with its own configuration, run and
//! state directories, so the system's /etc/libvirt is left alone) runs a `type='qemu'`
//! domain that boots a lab kernel and initramfs through `<kernel>`/`<initrd>`, its
//! monitor owned by libvirtd and its second serial port connected to the lab channel.
//! `detector --libvirt NAME` reads RAM through the QEMU process and talks to QEMU only
//! through libvirt: identify, ps and lsmod must equal the guest's own view, `check`
//! must find the test rootkits, `--pause` must work, `watch` must report a process
//! start, and under `watch --on-shutdown wait` a destroyed domain that is started again
//! must be reported and found again. `serve` with `[libvirt] all = true` must pick up a
//! domain started after it and drop it when it is destroyed.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{detector, findings, profile_into};
use serde_json::Value;
use vmi_lab::libvirt::Libvirtd;
use vmi_lab::{BootOptions, ExternalGuest, Lab};

/// The test's way with the lab's libvirtd: a failure is the test's, with its log.
trait Must {
    fn must(&self, args: &[&str]) -> String;
}

impl Must for Libvirtd {
    fn must(&self, args: &[&str]) -> String {
        self.virsh(args)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()))
    }
}

fn state(daemon: &Libvirtd, name: &str) -> String {
    daemon.must(&["domstate", name]).trim().to_string()
}

/// identify, ps and lsmod through libvirt against the guest's own view, the domain
/// suspended (through virsh) while the detector reads it.
fn views_match_suspended(
    daemon: &Libvirtd,
    guest: &mut ExternalGuest,
    name: &str,
    source: &[String],
    profiles: &Path,
) -> Vec<String> {
    let truth = guest.refresh_truth().expect("truth");
    daemon.must(&["suspend", name]);
    let problems = common::views_match(name, source, profiles, &truth);
    daemon.must(&["resume", name]);
    problems
}

fn domain_end_to_end(kernel: &str, name: &str) {
    let lab = Lab::open_default().expect("lab");
    let profiles = tempfile::tempdir().expect("tempdir");
    profile_into(&lab, kernel, profiles.path());
    let scenario = common::rootkit_scenario(&lab, kernel);
    let mut guest = lab
        .external_guest(kernel, &scenario, &BootOptions::default())
        .expect("boot files");
    let mut daemon = Libvirtd::start().expect("libvirtd");
    daemon
        .define(name, &guest, 1024)
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    daemon.must(&["start", name]);
    let boot = Duration::from_secs(900);
    guest
        .accept(boot)
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    let source = vec![
        "--libvirt".to_string(),
        name.to_string(),
        "--libvirt-uri".into(),
        daemon.uri().to_string(),
    ];

    // the guest's own view, read through libvirt
    let problems = views_match_suspended(&daemon, &mut guest, name, &source, profiles.path());
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // a clean guest: no finding, with and without --pause (through libvirt)
    let run = detector(&source, profiles.path(), &["--json", "check"]);
    assert_eq!((run.code, findings(&run)), (0, vec![]), "{}", run.stderr);
    let run = detector(&source, profiles.path(), &["--json", "check", "--pause"]);
    assert_eq!((run.code, findings(&run)), (0, vec![]), "{}", run.stderr);
    assert_eq!(
        state(&daemon, name),
        "running",
        "--pause left the domain paused"
    );

    // the test rootkits
    let truth = guest.refresh_truth().expect("truth");
    let hideme = truth.by_comm("vmi-hideme").next().expect("vmi-hideme").pid;
    common::load_rootkits(&mut |line| guest.sh(line), hideme);
    let run = detector(&source, profiles.path(), &["--json", "check"]);
    common::assert_rootkits_found(&run, hideme);

    // watch: a process start; the domain destroyed, reported, started and found again
    let minute = Duration::from_secs(120);
    let (mut child, mut lines) = common::watch_started(
        &common::built_detector(),
        &source,
        profiles.path(),
        &["--interval", "1s", "--on-shutdown", "wait"],
        minute,
    );
    let event = |v: &Value| common::event(v).to_string();
    let marker = common::start_marker_with(&mut |line| guest.sh(line), "vmi-marker");
    lines.wait_for("the marker starting", minute, |v| {
        event(v) == "process-start" && v["pid"] == marker
    });
    daemon.must(&["destroy", name]);
    lines.wait_for("the domain gone", minute, |v| event(v) == "shutdown");
    daemon.must(&["start", name]);
    guest
        .accept(boot)
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    lines.wait_for("the domain found again", boot, |v| event(v) == "started");
    let marker = common::start_marker_with(&mut |line| guest.sh(line), "vmi-again");
    lines.wait_for("a start after the restart", minute, |v| {
        event(v) == "process-start" && v["pid"] == marker
    });
    // SAFETY: kill(2) on our own child
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    let seen: Vec<&str> = lines.seen.iter().map(|(l, _)| l.as_str()).collect();
    assert!(
        seen.iter()
            .all(|l| l.contains(&format!("\"guest\":\"{name}\""))),
        "events not named after the domain: {seen:?}"
    );
    common::validate_events(seen);

    // a domain that does not run: a clear error, no hang
    daemon.must(&["destroy", name]);
    let run = detector(&source, profiles.path(), &["--json", "ps"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("not running") && run.stderr.contains("shut off"),
        "{}",
        run.stderr
    );
    // an unknown domain: libvirt's own message, naming it
    let mut unknown = source.clone();
    unknown[1] = "vmi-no-such-domain".into();
    let run = detector(&unknown, profiles.path(), &["--json", "ps"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("vmi-no-such-domain"), "{}", run.stderr);
    drop(daemon);
}

#[test]
fn libvirt_domain_6_1() {
    domain_end_to_end("6.1.0-56-amd64", "vmi-lab-6-1");
}

#[test]
fn libvirt_domain_newest_7() {
    domain_end_to_end("newest:7", "vmi-lab-7");
}

/// `serve` with `[libvirt] all = true` (and an exclude that does not match): a domain
/// started after the service is attached and watched, and dropped once destroyed.
#[test]
fn serve_libvirt_all_picks_up_a_later_domain() {
    let kernel = "6.1.0-56-amd64";
    let name = "vmi-lab-serve";
    let lab = Lab::open_default().expect("lab");
    let profiles = tempfile::tempdir().expect("tempdir");
    profile_into(&lab, kernel, profiles.path());
    let mut guest = lab
        .external_guest(
            kernel,
            &vmi_lab::Scenario::standard(),
            &BootOptions::default(),
        )
        .expect("boot files");
    let mut daemon = Libvirtd::start().expect("libvirtd");
    daemon
        .define(name, &guest, 1024)
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    let config = daemon.dir().join("detector.toml");
    std::fs::write(
        &config,
        format!(
            "[output]\nstdout = \"all\"\n\n[libvirt]\nall = true\nuri = \"{}\"\nexclude = [\"other-*\"]\nprofiles = \"{}\"\ninterval = \"1s\"\n",
            daemon.uri(),
            profiles.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(common::built_detector())
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("detector serve");
    let mut lines = common::Lines::new(child.stdout.take().unwrap());
    let event = |v: &Value| v["event"].as_str().unwrap_or("").to_string();
    let minute = Duration::from_secs(120);
    lines.wait_for("service-started", minute, |v| event(v) == "service-started");
    // nothing runs yet: the service waits
    std::thread::sleep(Duration::from_secs(6));
    daemon.must(&["start", name]);
    guest
        .accept(Duration::from_secs(900))
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    lines.wait_for("the later domain attached", Duration::from_secs(600), |v| {
        event(v) == "attached" && v["guest"] == name
    });
    let marker = common::start_marker_with(&mut |line| guest.sh(line), "vmi-marker");
    lines.wait_for("a process start in the later domain", minute, |v| {
        event(v) == "process-start" && v["guest"] == name && v["pid"] == marker
    });
    daemon.must(&["destroy", name]);
    lines.wait_for("the destroyed domain dropped", minute, |v| {
        event(v) == "detached" && v["guest"] == name
    });
    // SAFETY: kill(2) on our own child
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    common::validate_events(lines.seen.iter().map(|(l, _)| l.as_str()));
    drop(daemon);
}
