//! `detector watch` end to end on one live Debian 6.1 guest (KASLR on, TCG):
//!
//! 1. started while the guest is paused: it reports the pause, does not scan, and
//!    SIGTERM stops it cleanly (exit 0, a last `stopped` line);
//!    The JSON lines name the guest as QEMU does (its -name) and carry the time;
//! 2. on the running guest (JSON lines, 500 ms interval, an alert file, `--name`): a
//!    `process-start` for every process the guest has, then for a process started in the
//!    guest and its `process-exit` when it is killed; a credentials finding for a process
//!    given a fresh copy of the kernel's credentials (consistent in itself, so only a
//!    change over time shows it); one syscall-table finding for a hook, raised once;
//!    the guest rebooted in place (QEMU's reboot action set to reset): `reset`, then
//!    the kernel found again at its new KASLR shift, and its processes again; QEMU
//!    killed: `shutdown`, exit 0;
//! 3. the alert file holds exactly the findings, the reset and the shutdown, as JSON;
//!    every line printed or in the file validates against docs/events.schema.json, names
//!    the guest and is in time order.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use vmi_lab::{BootOptions, Guest, Lab, Scenario, DEFAULT_KERNEL};

/// A running `detector watch` and the JSON lines it printed.
struct Watch {
    child: Child,
    lines: common::Lines,
}

impl Watch {
    fn start(guest: &mut Guest, profiles: &Path, extra: &[&str]) -> Watch {
        guest.release_qmp();
        let mut child = Command::new(env!("CARGO_BIN_EXE_detector"))
            .arg("--qemu")
            .arg(guest.qmp_socket())
            .arg("--profiles")
            .arg(profiles)
            .args(["--json", "watch"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("detector watch");
        let lines = common::Lines::new(child.stdout.take().unwrap());
        Watch { child, lines }
    }

    fn wait_for(&mut self, what: &str, timeout: Duration, f: impl Fn(&Value) -> bool) -> Value {
        self.lines.wait_for(what, timeout, f)
    }

    /// Everything printed until the process exits, and its exit code.
    fn finish(mut self) -> (Vec<Value>, i32) {
        let code = self.child.wait().expect("wait").code().unwrap_or(-1);
        self.lines.rest(Duration::from_secs(5));
        (self.lines.seen.into_iter().map(|(_, v)| v).collect(), code)
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }
}

fn event(v: &Value) -> &str {
    v["event"].as_str().unwrap_or("")
}

/// Lines of one guest (`guest`), each valid against the schema, in time order (RFC
/// 3339 UTC with milliseconds sorts as text).
fn assert_lines(lines: &[Value], guest: &str) {
    assert!(!lines.is_empty());
    common::validate_events(lines.iter().map(Value::to_string));
    for v in lines {
        assert_eq!(v["guest"], guest, "{v}");
    }
    let ts: Vec<&str> = lines.iter().map(|v| v["ts"].as_str().unwrap()).collect();
    assert!(ts.is_sorted(), "{ts:?}");
}

#[test]
fn watch_reports_processes_findings_pause_reset_and_shutdown() {
    let lab = Lab::open_default().expect("lab");
    let creds = common::attack_module(&lab, DEFAULT_KERNEL, "vmi_creds");
    let hooksys = common::attack_module(&lab, DEFAULT_KERNEL, "vmi_hooksys");
    let profiles = tempfile::tempdir().expect("tempdir");
    let d = lab.store().debug(DEFAULT_KERNEL).expect("-dbg");
    let built =
        profile_gen::build::from_dwarf(&d.vmlinux, Some(&d.system_map), &Default::default())
            .expect("profile-gen");
    std::fs::write(profiles.path().join("6.1.json"), built.profile.to_json()).unwrap();
    let scenario = Scenario::standard()
        .run_as("vmi-esc", 1000)
        .file(&creds, "/lab/vmi_creds.ko", 0o644)
        .file(&hooksys, "/lab/vmi_hooksys.ko", 0o644);
    let mut guest = lab
        .boot(DEFAULT_KERNEL, &scenario, &BootOptions::default())
        .expect("boot");
    let truth = guest.refresh_truth().expect("truth");
    let esc = truth.by_comm("vmi-esc").next().expect("vmi-esc").pid;
    // a reboot in the guest resets the machine instead of ending QEMU
    guest
        .qmp("set-action", Some(json!({ "reboot": "reset" })))
        .expect("set-action");

    // 1. paused guest, then SIGTERM
    guest.pause().expect("pause");
    let mut w = Watch::start(&mut guest, profiles.path(), &["--interval", "200ms"]);
    let qemu_name = format!("vmi-lab-{}", guest.abi());
    let started = w.wait_for("started", Duration::from_secs(30), |v| {
        event(v) == "started"
    });
    assert_eq!(started["guest"], qemu_name.as_str(), "{started}");
    w.wait_for("paused", Duration::from_secs(10), |v| event(v) == "paused");
    std::thread::sleep(Duration::from_millis(600));
    w.signal(libc::SIGTERM);
    let (seen, code) = w.finish();
    assert_eq!(code, 0, "{seen:?}");
    let last = seen.last().expect("lines");
    assert_eq!(event(last), "stopped", "{seen:?}");
    assert_eq!(last["reason"], "signal");
    assert_lines(&seen, &qemu_name);
    assert!(
        !seen.iter().any(|v| event(v) == "process-start"),
        "scanned a paused guest: {seen:?}"
    );
    guest.resume().expect("resume");

    // 2. the running guest
    let alerts = profiles.path().join("alerts.jsonl");
    let mut w = Watch::start(
        &mut guest,
        profiles.path(),
        &[
            "--interval",
            "500ms",
            "--alerts",
            alerts.to_str().unwrap(),
            "--name",
            "lab-web",
        ],
    );
    let started = w.wait_for("started", Duration::from_secs(30), |v| {
        event(v) == "started"
    });
    let shift = started["virtual_shift"].as_str().unwrap().to_string();
    assert_eq!(
        shift,
        format!("{:#x}", truth.text_addr.wrapping_sub(0xffff_ffff_8100_0000))
    );
    // every process the guest has, once
    let want: BTreeSet<u64> = truth.processes.iter().map(|p| u64::from(p.pid)).collect();
    let mut got = BTreeSet::new();
    while !want.is_subset(&got) {
        let v = w.wait_for("process-start", Duration::from_secs(30), |v| {
            event(v) == "process-start"
        });
        assert!(got.insert(v["pid"].as_u64().unwrap()), "twice: {v}");
    }

    // named from its fork on (a shell's child is `sh` until it execs)
    let sleeper = common::start_marker(&mut guest, "vmi-sleeper");
    w.wait_for("the sleeper starting", Duration::from_secs(30), |v| {
        event(v) == "process-start" && v["pid"] == sleeper && v["comm"] == "vmi-sleeper"
    });
    guest.sh(&format!("kill {sleeper}")).expect("kill");
    w.wait_for("the sleeper exiting", Duration::from_secs(30), |v| {
        event(v) == "process-exit" && v["pid"] == sleeper
    });

    let out = guest
        .sh(&format!("insmod /lab/vmi_creds.ko kcred_pid={esc}"))
        .expect("insmod");
    assert_eq!(out.status, 0, "{:?}", out.lines);
    let f = w.wait_for("vmi-esc becoming root", Duration::from_secs(30), |v| {
        event(v) == "finding" && v["check"] == "credentials"
    });
    assert_eq!(f["evidence"]["pid"], esc, "{f}");
    assert_eq!(f["evidence"]["uid_before"], 1000, "{f}");
    assert_eq!(f["evidence"]["uid"], 0, "{f}");

    let out = guest
        .sh("insmod /lab/vmi_hooksys.ko nr=180")
        .expect("insmod");
    assert_eq!(out.status, 0, "{:?}", out.lines);
    let f = w.wait_for("the syscall hook", Duration::from_secs(30), |v| {
        event(v) == "finding" && v["check"] == "syscall-table"
    });
    assert_eq!(f["evidence"]["nr"], 180);
    assert_eq!(f["evidence"]["owner"], "module vmi_hooksys");

    // reboot in place: the old kernel's image stays in RAM next to the new one
    let _ = guest.sh_timeout("reboot -f", Duration::from_secs(3));
    w.wait_for("reset", Duration::from_secs(120), |v| event(v) == "reset");
    let again = w.wait_for("the kernel found again", Duration::from_secs(300), |v| {
        event(v) == "started"
    });
    assert_eq!(again["after_reset"], true);
    assert_eq!(again["release"], truth.release.as_str());
    w.wait_for("init of the new boot", Duration::from_secs(120), |v| {
        event(v) == "process-start" && v["pid"] == 1
    });

    // QEMU goes away
    drop(guest);
    w.wait_for("shutdown", Duration::from_secs(60), |v| {
        event(v) == "shutdown"
    });
    let (seen, code) = w.finish();
    assert_eq!(code, 0);
    assert_eq!(event(seen.last().unwrap()), "stopped");
    assert_lines(&seen, "lab-web");
    // the new kernel is watched once it has booted: nothing of it half-initialised
    let after_reset = seen.iter().skip_while(|v| event(v) != "reset");
    let errors: Vec<&Value> = after_reset.filter(|v| event(v) == "scan-error").collect();
    let story: Vec<&Value> = seen
        .iter()
        .filter(|v| !event(v).starts_with("process-"))
        .collect();
    assert!(
        errors.is_empty(),
        "scan errors after the reset: {errors:?}; every event but processes: {story:?}"
    );
    let findings: Vec<&Value> = seen.iter().filter(|v| event(v) == "finding").collect();
    // the hook and the credentials change, each once; after the reboot: nothing
    assert_eq!(findings.len(), 2, "{findings:?}");
    if again["virtual_shift"] == shift.as_str() {
        eprintln!("note: the new boot drew the same KASLR shift {shift}");
    }

    // 3. the alert file
    let text = std::fs::read_to_string(&alerts).expect("alert file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("alert JSON"))
        .collect();
    assert_lines(&lines, "lab-web");
    let kinds: Vec<String> = lines
        .iter()
        .map(|v| match v["check"].as_str() {
            Some(c) => format!("finding {c}"),
            None => v["event"].as_str().unwrap().to_string(),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "finding credentials",
            "finding syscall-table",
            "reset",
            "shutdown"
        ],
        "{text}"
    );
}

/// Busybox runs its NOEXEC applets (`cut`, `head`, `awk`, ...) in a forked child
/// without an exec, naming the child after the applet: its shell does, and so do
/// `xargs` and `find -exec` (`spawn_and_wait`). A script doing `$(cut ...)`, in
/// pipelines, subshells and command substitutions and through xargs and find, under
/// `watch` at a short interval, run as `sh FILE`, through its shebang line and inline
/// in `sh -c`, beside applets busybox executes (`grep`, `sed`, `tail`), and a `cut`
/// forked by an executed `xargs` (its arguments `xargs cut ...`, no shell's), must
/// raise no spoofing or exec-location finding (`cut` was reported as spoofing: `named
/// cut but runs /bin/busybox`).
#[test]
fn watch_a_busybox_pipeline_raises_nothing() {
    let lab = Lab::open_default().expect("lab");
    let profiles = tempfile::tempdir().expect("tempdir");
    common::profile_into(&lab, DEFAULT_KERNEL, profiles.path());
    let mut guest = lab
        .boot(
            DEFAULT_KERNEL,
            &Scenario::standard(),
            &BootOptions::default(),
        )
        .expect("boot");
    let mut w = Watch::start(&mut guest, profiles.path(), &["--interval", "100ms"]);
    w.wait_for("started", Duration::from_secs(60), |v| {
        event(v) == "started"
    });
    let body = "i=0; while [ $i -lt 300 ]; do \
                a=$(cut -d' ' -f1 /proc/loadavg); \
                b=$(echo \"$a\" | cut -d. -f1); \
                c=$(cut -d: -f1 /etc/passwd | head -n 1); \
                d=$( (cut -c1-3 /proc/version) ); \
                e=$(echo /proc/loadavg | xargs cut -d' ' -f2); \
                f=$(find /proc/loadavg -exec cut -d' ' -f3 {} \\;); \
                g=$(grep -c . /proc/loadavg | sed -n p | tail -n 1); \
                i=$((i+1)); done; echo done $a $b $c $d $e $f $g";
    // a `cut` that stays: run by an `xargs` that busybox executed (`env` runs it
    // through /proc/self/exe), blocked on a fifo; it keeps xargs's arguments
    let out = guest
        .sh("mkfifo /tmp/cut.fifo; echo /tmp/cut.fifo > /tmp/cut.list; \
             env xargs cut -c1-3 </tmp/cut.list >/dev/null 2>&1 & sleep 1; \
             for p in $(pidof cut); do echo $p $(tr '\\0' ' ' </proc/$p/cmdline); done")
        .expect("xargs cut");
    assert!(
        out.lines.iter().any(|l| l.contains(" xargs cut")),
        "no cut with xargs's arguments: {:?}",
        out.lines
    );
    let script = format!("#!/bin/sh\n{body}\n");
    let mut ran = Vec::new();
    let out = guest
        .sh_timeout(
            &format!(
                "cat > /tmp/cuts.sh <<'EOF'\n{script}EOF\nchmod 755 /tmp/cuts.sh; \
                 sh /tmp/cuts.sh; /tmp/cuts.sh; sh -c '{}'",
                body.replace('\'', "'\\''")
            ),
            Duration::from_secs(600),
        )
        .expect("the script");
    ran.extend(out.lines.iter().filter(|l| l.starts_with("done ")).cloned());
    assert_eq!(ran.len(), 3, "{:?}", out.lines);
    // one more scan after the last applet, then the blocked cut ends
    std::thread::sleep(Duration::from_secs(2));
    guest.sh("echo abc > /tmp/cut.fifo").expect("the fifo");
    w.signal(libc::SIGTERM);
    let (seen, code) = w.finish();
    assert_eq!(code, 0);
    // the checks that judge processes by their names and executables; a finding of
    // another check is printed (under this churn hidden-process reported a process
    // between the tasks list and the pid namespace once)
    let findings: Vec<&Value> = seen
        .iter()
        .filter(|v| {
            event(v) == "finding" && (v["check"] == "spoofing" || v["check"] == "exec-location")
        })
        .collect();
    let others: Vec<&Value> = seen
        .iter()
        .filter(|v| event(v) == "finding" && !findings.contains(v))
        .collect();
    if !others.is_empty() {
        eprintln!("other findings under this churn: {others:#?}");
    }
    let starts = seen.iter().filter(|v| event(v) == "process-start").count();
    let applets = seen
        .iter()
        .filter(|v| event(v) == "process-start" && v["comm"] == "cut")
        .count();
    eprintln!("{starts} process starts seen, {applets} of them cut; {ran:?}");
    assert!(
        applets > 0,
        "watch saw no cut at all: the test proves nothing"
    );
    assert!(findings.is_empty(), "{findings:#?}");
}
