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

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{detector, findings, profile_into};
use serde_json::Value;
use vmi_lab::{BootOptions, ExternalGuest, Lab};

/// A libvirtd of the test's own: killed with every QEMU it started when dropped (also
/// while unwinding from a panic); its thread dying kills it too (`PR_SET_PDEATHSIG`).
struct Libvirtd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    uri: String,
    /// The UUIDs of the domains defined, to find their QEMUs if libvirtd cannot.
    uuids: Vec<String>,
}

const LIBVIRTD_CONF: &str = r#"auth_unix_ro = "none"
auth_unix_rw = "none"
"#;

/// QEMU as root, no security driver, no cgroups and no private /dev (none of which a
/// container offers), QEMU's output to a file (no virtlogd).
const QEMU_CONF: &str = r#"user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
"#;

impl Libvirtd {
    fn start() -> Libvirtd {
        let dir = tempfile::Builder::new()
            .prefix("vmi-libvirtd-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        for sub in ["etc", "run", "lib", "cache", "log", "sock"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let sock = d.join("sock");
        std::fs::write(
            d.join("etc/libvirtd.conf"),
            format!(
                "{LIBVIRTD_CONF}unix_sock_dir = \"{}\"\nlog_outputs = \"3:file:{}\"\n",
                sock.display(),
                d.join("libvirtd.log").display()
            ),
        )
        .unwrap();
        std::fs::write(d.join("etc/qemu.conf"), QEMU_CONF).unwrap();
        let mut script = String::from("set -e\n");
        for (own, system) in [
            ("etc", "/etc/libvirt"),
            ("run", "/run/libvirt"),
            ("lib", "/var/lib/libvirt"),
            ("cache", "/var/cache/libvirt"),
            ("log", "/var/log/libvirt"),
        ] {
            script.push_str(&format!(
                "mkdir -p {system}; mount --bind {} {system}\n",
                d.join(own).display()
            ));
        }
        // its own pid file too: the default, /run/libvirtd.pid, would make two daemons
        // of tests running side by side refuse each other
        script
            .push_str("exec libvirtd -f /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid\n");
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("libvirtd.stderr")).unwrap());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .expect("starting libvirtd (is libvirt-daemon-system installed? scripts/setup.sh)");
        let mut daemon = Libvirtd {
            uri: format!(
                "qemu:///system?socket={}",
                sock.join("libvirt-sock").display()
            ),
            dir,
            child: Some(child),
            uuids: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if daemon.virsh(&["version"]).is_ok() {
                break;
            }
            if let Some(Ok(Some(status))) = daemon.child.as_mut().map(Child::try_wait) {
                panic!("libvirtd exited ({status}): {}", daemon.log());
            }
            assert!(
                Instant::now() < deadline,
                "libvirtd did not answer in 120 s: {}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        daemon
    }

    fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        let text = format!("{}\n{}", read("libvirtd.stderr"), read("libvirtd.log"));
        text.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Run virsh on this daemon; its stdout, or an error with its stderr.
    fn virsh(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("virsh")
            .args(["-q", "-c", &self.uri])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("virsh: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "virsh {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn must(&self, args: &[&str]) -> String {
        self.virsh(args)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()))
    }

    /// Define domain `name` booting `guest` (console to a file, the lab channel on the
    /// second serial port).
    fn define(&mut self, name: &str, guest: &ExternalGuest, memory_mib: u32) {
        let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .unwrap()
            .trim()
            .to_string();
        let xml = format!(
            r#"<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/><vmcoreinfo state='on'/></features>
  <cpu mode='maximum' check='none'><feature policy='disable' name='la57'/></cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <serial type='unix'><source mode='connect' path='{channel}'/><target port='1'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
"#,
            kernel = guest.vmlinuz().display(),
            initrd = guest.initramfs().display(),
            cmdline = guest.cmdline(),
            console = guest.console_path().display(),
            channel = guest.channel_socket().display(),
        );
        let file = self.dir.path().join(format!("{name}.xml"));
        std::fs::write(&file, xml).unwrap();
        self.uuids.push(uuid);
        self.must(&["define", file.to_str().unwrap()]);
    }

    /// The QEMU processes of this daemon's domains, by their `-uuid`.
    fn qemu_pids(&self) -> Vec<i32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let mut raw = Vec::new();
                let _ = std::fs::File::open(format!("/proc/{pid}/cmdline"))
                    .and_then(|f| f.take(1 << 20).read_to_end(&mut raw));
                let args: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
                args.windows(2)
                    .any(|w| w[0] == b"-uuid" && self.uuids.iter().any(|u| w[1] == u.as_bytes()))
            })
            .collect()
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        if let Ok(list) = self.virsh(&["list", "--name"]) {
            for name in list.lines().filter(|l| !l.trim().is_empty()) {
                let _ = self.virsh(&["destroy", name.trim()]);
            }
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // a QEMU libvirtd left behind
        for pid in self.qemu_pids() {
            // SAFETY: kill(2) on a QEMU this test's daemon started (matched by UUID).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
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
    let mut daemon = Libvirtd::start();
    daemon.define(name, &guest, 1024);
    daemon.must(&["start", name]);
    let boot = Duration::from_secs(900);
    guest
        .accept(boot)
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    let source = vec![
        "--libvirt".to_string(),
        name.to_string(),
        "--libvirt-uri".into(),
        daemon.uri.clone(),
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
    let mut daemon = Libvirtd::start();
    daemon.define(name, &guest, 1024);
    let config = daemon.dir.path().join("detector.toml");
    std::fs::write(
        &config,
        format!(
            "[output]\nstdout = \"all\"\n\n[libvirt]\nall = true\nuri = \"{}\"\nexclude = [\"other-*\"]\nprofiles = \"{}\"\ninterval = \"1s\"\n",
            daemon.uri,
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
