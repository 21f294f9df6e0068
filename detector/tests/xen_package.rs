//! The service as an admin of a Xen host runs it: the vmi-detector package
//! (`scripts/package.sh`) installed with `dpkg -i` in the lab's Xen dom0, its
//! `/etc/vmi/detector.toml` edited to name a PVH domU, `detector serve` started from the
//! installed binary. Its JSON lines show the domU attached, its kernel identified and a
//! process started in it; the metrics endpoint counts the guest, the alert file of the
//! default config has the attachment. Then the config is switched to `[xen] all = true`
//! and reloaded with SIGHUP: the domU, dropped as a listed guest, is found again as a
//! running domain and watched.
//!
//! dom0 is the lab's initramfs of unpacked bookworm packages (busybox init, no systemd,
//! no dpkg; busybox's dpkg applet reads no xz-compressed package, and its shell runs its
//! own applets first, hence full paths). The test puts the host's own dpkg, its helpers
//! and GNU tar into dom0 (the host is bookworm too) with the libraries they need that
//! dom0 lacks, and a dpkg status file that registers the packages the image was unpacked
//! from at their versions (with empty file lists), so `dpkg -i` checks the package's
//! Depends for real. The unit itself is not run (no systemd in dom0): `tests/package.rs`
//! verifies it.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use vmi_lab::xen::XenImage;
use vmi_lab::{DomuSpec, Lab, Scenario, XenOptions, XenRig, DEFAULT_KERNEL};

const DOMU: &str = "pkg-pvh";
const DEB: &str = "/lab/files/vmi-detector.deb";
const OUT: &str = "/tmp/serve.out";

/// The host's dpkg and what it runs (dpkg-deb calls GNU tar: busybox's lacks options it
/// passes), and the libraries of theirs dom0's image has not.
const DPKG_PROGRAMS: &[&str] = &[
    "/usr/bin/dpkg",
    "/usr/bin/dpkg-deb",
    "/usr/bin/dpkg-split",
    "/usr/bin/dpkg-query",
    "/usr/bin/tar",
    "/sbin/ldconfig",
];
const DPKG_LIBRARIES: &[&str] = &[
    "libmd.so.0",
    "libselinux.so.1",
    "libpcre2-8.so.0",
    "libbz2.so.1.0",
    "libacl.so.1",
];
const LIB_DIR: &str = "/usr/lib/x86_64-linux-gnu";

/// A dpkg status file: each package the image was unpacked from (`name_version_arch.deb`,
/// `%3a` for the epoch's colon) as installed.
fn dpkg_status(packages: &[String]) -> String {
    let mut s = String::new();
    for file in packages {
        let stem = file.strip_suffix(".deb").unwrap_or(file);
        let mut parts = stem.splitn(3, '_');
        let (Some(name), Some(version), Some(arch)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("not a package file name: {file}");
        };
        s.push_str(&format!(
            "Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: libs\nMaintainer: Debian\nArchitecture: {arch}\nVersion: {}\nDescription: unpacked into the lab's Xen dom0 image\n\n",
            version.replace("%3a", ":")
        ));
    }
    s
}

fn host_library(name: &str) -> PathBuf {
    for dir in ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not on this host (dpkg's own libraries)")
}

/// Run `command` in dom0; its output, and a panic with it when it fails.
fn sh(rig: &mut XenRig, command: &str) -> String {
    let out = rig
        .dom0_sh_timeout(command, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    let text = out.lines.join("\n");
    assert_eq!(out.status, 0, "{command}:\n{text}");
    text
}

/// The service's JSON lines so far.
fn events(rig: &mut XenRig) -> Vec<Value> {
    sh(rig, &format!("cat {OUT}"))
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Poll the JSON lines until one satisfies `f`.
fn wait_for(rig: &mut XenRig, what: &str, timeout: Duration, f: impl Fn(&Value) -> bool) -> Value {
    wait_after(rig, 0, what, timeout, f)
}

/// As `wait_for`, among the lines after the first `skip`.
fn wait_after(
    rig: &mut XenRig,
    skip: usize,
    what: &str,
    timeout: Duration,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = events(rig);
        if let Some(v) = seen.iter().skip(skip).find(|v| f(v)) {
            return v.clone();
        }
        if Instant::now() > deadline {
            let err = rig
                .dom0_sh("cat /tmp/serve.err")
                .map(|o| o.lines.join("\n"));
            panic!("no {what} within {timeout:?}; lines:\n{seen:#?}\nstderr: {err:?}");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn the_installed_package_watches_a_pvh_domu_from_dom0() {
    let (deb, took) = common::build_package();
    eprintln!("package built in {took:.1?}");
    let lab = Lab::open_default().expect("lab");
    let image = XenImage::ensure(&lab).expect("Xen image");
    let dir = tempfile::tempdir().expect("temp dir");
    let status = dir.path().join("status");
    std::fs::write(&status, dpkg_status(&image.packages)).expect("writing the status file");
    // the domU's profile where the default config looks (the service would otherwise make
    // one from the domU's memory, which tests/zero_touch.rs covers)
    let kernel = lab.store().image(DEFAULT_KERNEL).expect("kernel image");
    let built = profile_gen::build::from_btf(&kernel.vmlinuz, None, None, &Default::default())
        .expect("profile from the vmlinuz");
    let profile = dir.path().join("profile.json");
    std::fs::write(&profile, built.profile.to_json()).expect("writing the profile");

    let mut opts = XenOptions::default()
        .domu(DomuSpec::pvh(DOMU, DEFAULT_KERNEL, Scenario::standard()))
        .file(&deb, DEB)
        .file(&status, "/var/lib/dpkg/status")
        .file(
            &profile,
            &format!("/var/lib/vmi/profiles/{DEFAULT_KERNEL}.json"),
        );
    for p in DPKG_PROGRAMS {
        opts = opts.program(p, p);
    }
    for l in DPKG_LIBRARIES {
        opts = opts.file(host_library(l), &format!("{LIB_DIR}/{l}"));
    }
    let mut rig = XenRig::boot(&lab, &opts).expect("Xen rig");
    eprintln!("rig booted in {:.1?}", rig.boot_time());

    // install as an admin would
    let t = Instant::now();
    let install = sh(
        &mut rig,
        &format!(
            "export PATH=/usr/sbin:/usr/bin:/sbin:/bin; mkdir -p /var/lib/dpkg/info /var/lib/dpkg/updates /var/log && touch /var/lib/dpkg/available && for p in $(sed -n 's/^Package: //p' /var/lib/dpkg/status); do touch /var/lib/dpkg/info/$p.list; done && /usr/bin/dpkg -i {DEB} 2>&1"
        ),
    );
    eprintln!("dpkg -i in {:.1?}:\n{install}", t.elapsed());
    let state = sh(&mut rig, "/usr/bin/dpkg -s vmi-detector");
    assert!(
        state.contains("Status: install ok installed")
            && state.contains(&format!("Version: {}-1", env!("CARGO_PKG_VERSION"))),
        "{state}"
    );
    let conffiles = sh(&mut rig, "cat /var/lib/dpkg/info/vmi-detector.conffiles");
    assert_eq!(conffiles.trim(), "/etc/vmi/detector.toml");
    let version = sh(&mut rig, "/usr/bin/detector --version");
    assert_eq!(
        version.trim(),
        format!("detector {}", env!("CARGO_PKG_VERSION"))
    );
    // postinst made the directories the default config names
    sh(
        &mut rig,
        "test -d /var/lib/vmi/profiles && test -d /var/log/vmi",
    );
    let as_installed = rig
        .dom0_sh("/usr/bin/detector serve --check-config --config /etc/vmi/detector.toml")
        .expect("check-config");
    assert_eq!(
        as_installed.status, 2,
        "no guest yet: {:?}",
        as_installed.lines
    );

    let mut domu = rig.start(DOMU).expect("PVH domU");
    let release = domu.truth().release.clone();

    // the admin names the domU in the installed config
    sh(
        &mut rig,
        &format!(
            "printf '\\n[[guest]]\\nname = \"{DOMU}\"\\nxen = \"{DOMU}\"\\n' >> /etc/vmi/detector.toml"
        ),
    );
    let checked = sh(
        &mut rig,
        "/usr/bin/detector serve --check-config --config /etc/vmi/detector.toml",
    );
    assert!(
        checked.contains(&format!("{DOMU}: xen:{DOMU}")),
        "{checked}"
    );
    // the metrics endpoint of the default config is on loopback
    sh(&mut rig, "ip link set lo up");
    let pid = sh(
        &mut rig,
        &format!(
            "/usr/bin/detector serve --config /etc/vmi/detector.toml >{OUT} 2>/tmp/serve.err </dev/null & echo $!"
        ),
    );
    let pid: u32 = pid
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .parse()
        .expect("pid");
    let t = Instant::now();
    wait_for(&mut rig, "attached", Duration::from_secs(300), |v| {
        v["event"] == "attached" && v["guest"] == DOMU
    });
    wait_for(&mut rig, "started", Duration::from_secs(300), |v| {
        v["event"] == "started" && v["guest"] == DOMU && v["release"] == release.as_str()
    });
    eprintln!("domU attached and identified in {:.1?}", t.elapsed());

    // named from its fork on, and alive until the domU goes
    let mark = common::start_marker_with(&mut |line| domu.sh(line), "pkg-mark");
    let t = Instant::now();
    wait_for(&mut rig, "process-start", Duration::from_secs(300), |v| {
        v["event"] == "process-start"
            && v["guest"] == DOMU
            && v["pid"] == mark
            && v["comm"] == "pkg-mark"
    });
    eprintln!("process start reported in {:.1?}", t.elapsed());

    let metrics = sh(&mut rig, "wget -q -O - http://127.0.0.1:9187/metrics");
    assert!(
        metrics.lines().any(|l| l == "vmi_guests_attached 1"),
        "{metrics}"
    );
    let alerts = sh(&mut rig, "cat /var/log/vmi/alerts.jsonl");
    assert!(
        alerts
            .lines()
            .any(|l| l.contains("\"attached\"") && l.contains(DOMU)),
        "{alerts}"
    );

    // every running domain rather than one by name: `[xen] all = true`, applied with
    // SIGHUP; the domU is dropped as a listed guest and found again as a running domain
    sh(
        &mut rig,
        "sed -i '/^\\[\\[guest\\]\\]/,$d' /etc/vmi/detector.toml && printf '\\n[xen]\\nall = true\\n' >> /etc/vmi/detector.toml",
    );
    let checked = sh(
        &mut rig,
        "/usr/bin/detector serve --check-config --config /etc/vmi/detector.toml",
    );
    assert!(checked.contains("every running Xen domain"), "{checked}");
    let before = events(&mut rig).len();
    sh(&mut rig, &format!("kill -HUP {pid}"));
    let t = Instant::now();
    let reloaded = wait_after(
        &mut rig,
        before,
        "config-reloaded",
        Duration::from_secs(120),
        |v| v["event"] == "config-reloaded",
    );
    assert_eq!(reloaded["removed"], serde_json::json!([DOMU]), "{reloaded}");
    let again = wait_after(
        &mut rig,
        before,
        "the domU found as a running domain",
        Duration::from_secs(300),
        |v| v["event"] == "started" && v["guest"] == DOMU,
    );
    assert!(
        events(&mut rig)[before..]
            .iter()
            .any(|v| v["event"] == "attached" && v["guest"] == DOMU),
        "attached again after the reload"
    );
    assert_eq!(again["release"], release.as_str());
    eprintln!(
        "[xen] all = true: the domU watched again {:.1?} after SIGHUP",
        t.elapsed()
    );

    sh(&mut rig, &format!("kill -TERM {pid}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    // gone, or a zombie nobody reaped yet
    let running = format!("[ -d /proc/{pid} ] && ! grep -q zombie /proc/{pid}/status");
    while rig.dom0_sh(&running).is_ok_and(|o| o.status == 0) {
        assert!(
            Instant::now() < deadline,
            "detector serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    rig.shutdown().expect("power off");
}
