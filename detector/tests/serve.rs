//! `detector serve` end to end: one service watching two live guests of different kernels
//! (Debian 6.1 and 6.12, KASLR on, TCG).
//!
//! - the 6.1 guest has a profile in its directory, the 6.12 guest's directory starts
//!   empty (its profile is made from its memory and written there);
//! - both are attached; a process started in each is reported under the right guest;
//! - SIGHUP with a changed interval for one guest: `config-reloaded` says one kept, one
//!   changed, and the kept guest is not attached again nor are its processes reported
//!   again; a broken file on SIGHUP is rejected and the service goes on;
//! - the 6.1 guest's QEMU stopped (SIGSTOP: its QMP hangs): a process started in the
//!   6.12 guest meanwhile is reported within seconds;
//! - the 6.1 guest's QEMU killed: `shutdown` and `detached` for it, and a process started
//!   in the 6.12 guest afterwards is still reported;
//! - the metrics endpoint answers and its counters move; alerts reach the syslog socket
//!   as RFC 5424 and the alert file; every line validates against
//!   docs/events.schema.json;
//! - SIGTERM: `service-stopped`, exit 0;
//! - `--check-config` on a broken file: exit 2 with file:line:column.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vmi_lab::{BootOptions, Guest, Lab, Scenario, DEFAULT_KERNEL};

mod common;

const OTHER_KERNEL: &str = "6.12.117+deb12-amd64";

fn detector() -> Command {
    Command::new(env!("CARGO_BIN_EXE_detector"))
}

/// The running service; killed if the test fails.
struct Serve {
    child: Child,
    lines: common::Lines,
    metrics: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(config: &Path) -> Serve {
        let mut child = detector()
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("detector serve");
        let lines = common::Lines::new(child.stdout.take().unwrap());
        let err = child.stderr.take().unwrap();
        // the endpoint's address is on stderr first; the rest is passed through
        let (atx, arx) = channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[serve] {line}");
                if !sent {
                    if let Some(a) = line.strip_prefix("detector serve: metrics on http://") {
                        let _ = atx.send(a.trim_end_matches("/metrics").to_string());
                        sent = true;
                    }
                }
            }
        });
        let metrics = arx
            .recv_timeout(Duration::from_secs(60))
            .expect("the metrics address on stderr");
        Serve {
            child,
            lines,
            metrics,
        }
    }

    fn wait_for(&mut self, what: &str, timeout: Duration, f: impl Fn(&Value) -> bool) -> Value {
        self.lines.wait_for(what, timeout, f)
    }

    fn wait_any(&mut self, what: &str, timeout: Duration, f: impl Fn(&Value) -> bool) -> Value {
        self.lines.wait_any(what, timeout, f)
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    fn scrape(&self) -> String {
        let out = common::get_metrics(&self.metrics).expect("metrics endpoint");
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        out
    }
}

fn event(v: &Value) -> &str {
    v["event"].as_str().unwrap_or("")
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name_and_labels} in\n{text}"))
}

fn config(path: &Path, guests: &[(&str, &Guest, &Path, &str)], syslog: &Path, alerts: &Path) {
    let mut s = format!(
        "[service]\ncpu_budget = 50\nmetrics = \"127.0.0.1:0\"\n\n[output]\nstdout = \"all\"\nsyslog = \"alerts\"\nsyslog_socket = \"{}\"\nfile = \"{}\"\nfile_events = \"alerts\"\n\n[defaults]\ninterval = \"1s\"\n",
        syslog.display(),
        alerts.display()
    );
    for (name, g, profiles, interval) in guests {
        s.push_str(&format!(
            "\n[[guest]]\nname = \"{name}\"\nqemu = \"{}\"\nmem_path = \"{}\"\nprofiles = \"{}\"\ninterval = \"{interval}\"\n",
            g.qmp_socket().display(),
            g.ram_path().display(),
            profiles.display()
        ));
    }
    std::fs::write(path, s).unwrap();
}

#[test]
fn serve_watches_two_guests() {
    let lab = Lab::open_default().expect("lab");
    let dir = tempfile::tempdir().unwrap();
    let profiles_a = dir.path().join("profiles-a");
    let profiles_b = dir.path().join("profiles-b");
    std::fs::create_dir_all(&profiles_a).unwrap();
    std::fs::create_dir_all(&profiles_b).unwrap();
    // 6.1: a profile made beforehand from its boot image
    let image = lab.store().image(DEFAULT_KERNEL).expect("6.1 image");
    let built = profile_gen::build::from_btf(&image.vmlinuz, None, None, &Default::default())
        .expect("profile");
    std::fs::write(profiles_a.join("6.1.json"), built.profile.to_json()).unwrap();

    let opts = BootOptions {
        memory_mib: 512,
        ..BootOptions::default()
    };
    let t = Instant::now();
    let mut a = lab
        .boot(DEFAULT_KERNEL, &Scenario::standard(), &opts)
        .expect("boot 6.1");
    let mut b = lab
        .boot(OTHER_KERNEL, &Scenario::standard(), &opts)
        .expect("boot 6.12");
    eprintln!("two guests booted in {:.1?}", t.elapsed());
    a.release_qmp();
    b.release_qmp();

    let syslog_path = dir.path().join("log.sock");
    // a syslog daemon: reads every datagram as it comes (the queue holds only
    // net.unix.max_dgram_qlen of them, 10 by default)
    let syslog = UnixDatagram::bind(&syslog_path).unwrap();
    let (stx, srx) = channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = syslog.recv(&mut buf) {
            if stx
                .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    let alerts = dir.path().join("alerts.jsonl");
    let cfg = dir.path().join("detector.toml");
    config(
        &cfg,
        &[
            ("web", &a, &profiles_a, "1s"),
            ("db", &b, &profiles_b, "1s"),
        ],
        &syslog_path,
        &alerts,
    );
    let check = detector()
        .args(["serve", "--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    assert!(String::from_utf8_lossy(&check.stdout).contains("2 guest(s)"));

    let t = Instant::now();
    let mut s = Serve::start(&cfg);
    for g in ["web", "db"] {
        s.wait_any(&format!("{g} attached"), Duration::from_secs(120), |v| {
            event(v) == "attached" && v["guest"] == g
        });
    }
    for (g, release) in [("web", "6.1.0-56-amd64"), ("db", "6.12.117+deb12-amd64")] {
        s.wait_any(&format!("{g} started"), Duration::from_secs(60), |v| {
            event(v) == "started" && v["guest"] == g && v["release"] == release
        });
    }
    eprintln!("both guests attached and identified in {:.1?}", t.elapsed());
    assert_eq!(
        std::fs::read_dir(&profiles_b).unwrap().count(),
        1,
        "the 6.12 profile was made from memory and written"
    );

    let pa = common::start_marker(&mut a, "mark-web");
    let pb = common::start_marker(&mut b, "mark-db");
    for (g, pid, comm) in [("web", pa, "mark-web"), ("db", pb, "mark-db")] {
        s.wait_any(&format!("{comm} in {g}"), Duration::from_secs(60), |v| {
            event(v) == "process-start" && v["guest"] == g && v["pid"] == pid && v["comm"] == comm
        });
    }
    let m1 = s.scrape();
    assert_eq!(metric(&m1, "vmi_guests_attached "), 2.0);
    let scans_db = metric(&m1, "vmi_scans_total{guest=\"db\"} ");

    // reload: db's interval changes, web's does not
    config(
        &cfg,
        &[
            ("web", &a, &profiles_a, "1s"),
            ("db", &b, &profiles_b, "500ms"),
        ],
        &syslog_path,
        &alerts,
    );
    s.lines.drain();
    let mark = s.lines.seen.len();
    s.signal(libc::SIGHUP);
    let r = s.wait_for("config-reloaded", Duration::from_secs(30), |v| {
        event(v) == "config-reloaded"
    });
    assert_eq!(r["kept"], 1, "{r}");
    assert_eq!(r["changed"], json!(["db"]), "{r}");
    s.wait_for("db attached again", Duration::from_secs(60), |v| {
        event(v) == "attached" && v["guest"] == "db"
    });
    let pa2 = common::start_marker(&mut a, "mark-web2");
    s.wait_for("mark-web2", Duration::from_secs(60), |v| {
        event(v) == "process-start" && v["guest"] == "web" && v["pid"] == pa2
    });
    let after: Vec<&Value> = s.lines.seen[mark..].iter().map(|(_, v)| v).collect();
    assert!(
        !after
            .iter()
            .any(|v| v["guest"] == "web" && (event(v) == "attached" || event(v) == "started")),
        "web kept its state: {after:?}"
    );
    assert!(
        !after
            .iter()
            .any(|v| v["guest"] == "web" && event(v) == "process-start" && v["pid"] == pa),
        "web's processes are not reported again: {after:?}"
    );

    // a broken file is rejected and nothing changes
    std::fs::write(&cfg, "[[guest]]\nname = \"web\"\nqemu = 7\n").unwrap();
    s.signal(libc::SIGHUP);
    let rej = s.wait_for("config-rejected", Duration::from_secs(30), |v| {
        event(v) == "config-rejected"
    });
    assert!(
        rej["error"].as_str().unwrap().contains("detector.toml:3:8"),
        "{rej}"
    );

    // web's QEMU stops answering (SIGSTOP: QMP calls wait for their timeout): db is
    // still watched on time
    let qemu_a = a.pid().expect("web's QEMU pid") as libc::pid_t;
    // SAFETY: kill(2) on the lab's QEMU child
    unsafe { libc::kill(qemu_a, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    let pb3 = common::start_marker(&mut b, "mark-db3");
    s.wait_for("mark-db3 while web hangs", Duration::from_secs(20), |v| {
        event(v) == "process-start" && v["guest"] == "db" && v["pid"] == pb3
    });
    eprintln!(
        "db's new process seen {:.1?} after it started, web's QEMU stopped",
        t.elapsed()
    );
    // SAFETY: as above
    unsafe { libc::kill(qemu_a, libc::SIGCONT) };

    // web's QEMU goes away; db goes on
    let t = Instant::now();
    drop(a);
    s.wait_for("web shutdown", Duration::from_secs(60), |v| {
        event(v) == "shutdown" && v["guest"] == "web"
    });
    s.wait_for("web detached", Duration::from_secs(30), |v| {
        event(v) == "detached" && v["guest"] == "web"
    });
    eprintln!("web's end seen in {:.1?}", t.elapsed());
    let pb2 = common::start_marker(&mut b, "mark-db2");
    s.wait_for("mark-db2", Duration::from_secs(60), |v| {
        event(v) == "process-start" && v["guest"] == "db" && v["pid"] == pb2
    });
    let m2 = s.scrape();
    assert_eq!(metric(&m2, "vmi_guests_attached "), 1.0);
    assert!(metric(&m2, "vmi_scans_total{guest=\"db\"} ") > scans_db);
    assert!(
        metric(
            &m2,
            "vmi_events_total{guest=\"db\",event=\"process-start\"} "
        ) >= 2.0
    );
    assert!(metric(&m2, "vmi_attach_failures_total{guest=\"web\"} ") >= 0.0);
    assert!(m2.contains("vmi_scan_duration_seconds_bucket{guest=\"db\",le=\"+Inf\"}"));
    // incremental scans (the default) keep most units once the guest was scanned
    assert!(
        metric(&m2, "vmi_units_kept_total{guest=\"db\"} ") > 0.0,
        "{m2}"
    );

    s.signal(libc::SIGTERM);
    let code = s.child.wait().expect("wait").code();
    s.lines.rest(Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert_eq!(
        s.lines
            .seen
            .last()
            .map(|(_, v)| event(v).to_string())
            .as_deref(),
        Some("service-stopped")
    );
    b.shutdown().expect("shutdown");

    // syslog: RFC 5424 alerts
    let msgs: Vec<String> = srx.try_iter().collect();
    assert!(
        msgs.iter().any(|m| m.starts_with("<29>1 ")
            && m.contains(" vmi-detector ")
            && m.contains(" attached - {")),
        "{msgs:?}"
    );
    assert!(msgs.iter().any(|m| m.contains(" shutdown - {")), "{msgs:?}");
    assert!(
        !msgs.iter().any(|m| m.contains(" process-start - {")),
        "alerts only"
    );
    // the alert file: alerts only
    let file = std::fs::read_to_string(&alerts).unwrap();
    assert!(file.lines().any(|l| l.contains("\"event\":\"detached\"")));
    assert!(!file
        .lines()
        .any(|l| l.contains("\"event\":\"process-start\"")));

    // every line validates against the documented schema
    let mut all: Vec<&str> = s.lines.seen.iter().map(|(l, _)| l.as_str()).collect();
    all.extend(file.lines());
    let n = common::validate_events(all);
    eprintln!("{n} event lines valid against the schema");
}

/// `serve --check-config` on `text`: exit code and standard error.
fn check_config(path: &Path, text: &str) -> (Option<i32>, String) {
    std::fs::write(path, text).unwrap();
    let out = detector()
        .args(["serve", "--check-config", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg: PathBuf = dir.path().join("detector.toml");
    let (code, err) = check_config(
        &cfg,
        "[defaults]\ninterval = \"1s\"\n\n[[guest]]\nname = \"web\"\nqemu = \"/run/web.qmp\"\npolcy = \"/etc/vmi/policy.toml\"\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:7:1: unknown key \"polcy\"", cfg.display())),
        "{err}"
    );
    // a profile directory that does not exist
    let (code, err) = check_config(
        &cfg,
        "[[guest]]\nname = \"web\"\nqemu = \"/run/web.qmp\"\nprofiles = \"/nonexistent/profiles\"\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("/nonexistent/profiles does not exist"),
        "{err}"
    );
}
