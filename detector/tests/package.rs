//! The Debian package (`scripts/package.sh`): built from the workspace, its control
//! data, conffile and files are what `[package.metadata.deb]` promises; unpacked into a
//! temporary root, its binaries run, its default config passes `serve --check-config`
//! once a guest is uncommented (and names the missing guest before), its unit passes
//! `systemd-analyze verify`, its man pages render without warnings, its completions
//! parse, and lintian reports nothing beyond what is accepted here. The Xen rig installs
//! the same package in dom0 (`tests/xen_package.rs`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", "command -v \"$1\"", "sh", program])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A program this test runs: scripts/setup.sh installs it, so a missing one fails the
/// test instead of skipping a check.
fn need(program: &str, package: &str) {
    assert!(
        have(program),
        "{program} is missing (Debian package {package}): run scripts/setup.sh"
    );
}

/// The default config with its first example `[[guest]]` uncommented (up to the next
/// blank line) and `profiles` pointed at `profiles`.
pub fn with_example_guest(default: &str, profiles: &Path) -> String {
    let mut out = String::new();
    let mut in_guest = false;
    let mut done = false;
    for line in default.lines() {
        if !done && line == "#[[guest]]" {
            in_guest = true;
        }
        if in_guest && line.is_empty() {
            in_guest = false;
            done = true;
        }
        let line = match line.strip_prefix('#') {
            Some(rest) if in_guest => rest,
            _ => line,
        };
        out.push_str(&line.replace("/var/lib/vmi/profiles", &profiles.to_string_lossy()));
        out.push('\n');
    }
    assert!(done, "no example [[guest]] in the default config");
    out
}

/// The files the package must install, with their modes.
const FILES: &[(&str, &str)] = &[
    ("./usr/bin/detector", "-rwxr-xr-x"),
    ("./usr/bin/profile-gen", "-rwxr-xr-x"),
    ("./etc/vmi/detector.toml", "-rw-r--r--"),
    (
        "./usr/lib/systemd/system/vmi-detector.service",
        "-rw-r--r--",
    ),
    ("./usr/share/man/man1/detector.1.gz", "-rw-r--r--"),
    ("./usr/share/man/man1/detector-serve.1.gz", "-rw-r--r--"),
    ("./usr/share/man/man1/detector-watch.1.gz", "-rw-r--r--"),
    ("./usr/share/man/man1/detector-check.1.gz", "-rw-r--r--"),
    ("./usr/share/man/man1/detector-ps.1.gz", "-rw-r--r--"),
    ("./usr/share/man/man1/detector-lsmod.1.gz", "-rw-r--r--"),
    ("./usr/share/man/man1/detector-identify.1.gz", "-rw-r--r--"),
    ("./usr/share/man/man1/profile-gen.1.gz", "-rw-r--r--"),
    (
        "./usr/share/bash-completion/completions/detector",
        "-rw-r--r--",
    ),
    (
        "./usr/share/bash-completion/completions/profile-gen",
        "-rw-r--r--",
    ),
    ("./usr/share/zsh/vendor-completions/_detector", "-rw-r--r--"),
    (
        "./usr/share/zsh/vendor-completions/_profile-gen",
        "-rw-r--r--",
    ),
    (
        "./usr/share/fish/vendor_completions.d/detector.fish",
        "-rw-r--r--",
    ),
    (
        "./usr/share/fish/vendor_completions.d/profile-gen.fish",
        "-rw-r--r--",
    ),
    ("./usr/share/doc/vmi-detector/README.md", "-rw-r--r--"),
    ("./usr/share/doc/vmi-detector/docs/guide.md", "-rw-r--r--"),
    (
        "./usr/share/doc/vmi-detector/docs/events.schema.json",
        "-rw-r--r--",
    ),
    ("./usr/share/doc/vmi-detector/docs/profile.md", "-rw-r--r--"),
    (
        "./usr/share/doc/vmi-detector/docs/profile.schema.json",
        "-rw-r--r--",
    ),
    (
        "./usr/share/doc/vmi-detector/docs/profile.example.json",
        "-rw-r--r--",
    ),
    ("./usr/share/doc/vmi-detector/copyright", "-rw-r--r--"),
    (
        "./usr/share/doc/vmi-detector/changelog.Debian.gz",
        "-rw-r--r--",
    ),
];

#[test]
fn the_debian_package_has_the_service_and_its_documentation() {
    let (deb, took) = common::build_package();
    let size = std::fs::metadata(&deb).expect("the package").len();
    eprintln!(
        "package {} built in {took:.1?}, {:.2} MB",
        deb.display(),
        size as f64 / 1e6
    );

    // control data
    let field = |name: &str| text(&run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name)));
    assert_eq!(field("Package").trim(), "vmi-detector");
    assert_eq!(field("Architecture").trim(), "amd64");
    let depends = field("Depends");
    assert!(depends.contains("libc6"), "Depends: {depends}");
    assert!(
        !depends.contains("libxen"),
        "Xen is loaded at run time: {depends}"
    );
    let suggests = field("Suggests");
    for p in ["libxenmisc4.17", "libxenstore4", "libxenforeignmemory1"] {
        assert!(suggests.contains(p), "Suggests: {suggests}");
    }
    let conffiles = text(&run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles")));
    assert_eq!(conffiles.trim(), "/etc/vmi/detector.toml");
    let postinst = text(&run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("postinst")));
    assert!(
        postinst.contains("mkdir -p /var/lib/vmi/profiles"),
        "{postinst}"
    );
    // the installation neither enables nor starts the unit: the config names no guest yet
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");

    // files
    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)));
    for (path, mode) in FILES {
        let line = listing
            .lines()
            .find(|l| l.split_whitespace().last() == Some(path))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"));
        assert!(line.starts_with(mode), "{line}");
        assert!(line.contains(" 0/0 "), "owned by root: {line}");
    }

    // unpacked: the binaries run
    let root = tempfile::tempdir().expect("temp dir");
    let root = root.path();
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(root));
    let bin = |name: &str| root.join("usr/bin").join(name);
    for name in ["detector", "profile-gen"] {
        let v = text(&run(Command::new(bin(name)).arg("--version")));
        assert_eq!(v.trim(), format!("{name} {}", env!("CARGO_PKG_VERSION")));
    }

    // the default config: no guest yet, then the example guest
    let default = std::fs::read_to_string(root.join("etc/vmi/detector.toml")).expect("config");
    assert_eq!(
        default,
        include_str!("../../packaging/detector.toml"),
        "the packaged config is packaging/detector.toml"
    );
    let check = |config: &Path| {
        Command::new(bin("detector"))
            .args(["serve", "--check-config", "--config"])
            .arg(config)
            .output()
            .expect("running detector serve --check-config")
    };
    let as_shipped = check(&root.join("etc/vmi/detector.toml"));
    assert_eq!(as_shipped.status.code(), Some(2));
    let err = String::from_utf8_lossy(&as_shipped.stderr);
    assert!(err.contains("no guest to watch"), "{err}");
    let profiles = root.join("profiles");
    std::fs::create_dir(&profiles).expect("profile dir");
    let edited = root.join("detector.toml");
    std::fs::write(&edited, with_example_guest(&default, &profiles)).expect("writing");
    let ok = check(&edited);
    let said = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        said.contains("1 guest(s)") && said.contains("web1: qemu:"),
        "{said}"
    );
    assert!(said.contains("metrics 127.0.0.1:9187"), "{said}");

    // the unit
    let unit_path = root.join("usr/lib/systemd/system/vmi-detector.service");
    let unit = std::fs::read_to_string(&unit_path).expect("unit");
    assert_eq!(unit, include_str!("../../packaging/vmi-detector.service"));
    for line in [
        "ExecStart=/usr/bin/detector serve --config /etc/vmi/detector.toml",
        "ExecStartPre=/usr/bin/detector serve --check-config --config /etc/vmi/detector.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line}");
    }
    assert!(
        !unit.lines().any(|l| l.starts_with("PrivateDevices=yes")),
        "/dev/shm and /dev/xen must stay visible"
    );
    verify_unit(root, &unit);

    // man pages and completions
    check_man_pages(&root.join("usr/share/man"));
    let completions = [
        ("bash", "usr/share/bash-completion/completions/detector"),
        ("zsh", "usr/share/zsh/vendor-completions/_detector"),
        ("fish", "usr/share/fish/vendor_completions.d/detector.fish"),
    ];
    for (shell, file) in completions {
        need(shell, shell);
        run(Command::new(shell).arg("-n").arg(root.join(file)));
        let body = std::fs::read_to_string(root.join(file)).expect("completion");
        for word in ["serve", "check-config", "watch", "profiles"] {
            assert!(body.contains(word), "{file} lacks {word}");
        }
        assert!(!body.contains("generate-docs"), "{file}");
    }

    lintian_accepts(&deb);
}

/// Tags lintian reports on the package that are known and accepted, each with why.
const LINTIAN_ACCEPTED: &[(&str, &str)] = &[
    (
        "bogus-mail-host",
        "the project has no mail domain: the Maintainer field says vmi@invalid",
    ),
    (
        "bogus-mail-host-in-debian-changelog",
        "the same address signs packaging/changelog",
    ),
    (
        "initial-upload-closes-no-bugs",
        "the package is not uploaded to Debian, so no ITP bug is closed",
    ),
];

/// lintian finds no error or warning on the package beyond [`LINTIAN_ACCEPTED`].
fn lintian_accepts(deb: &Path) {
    need("lintian", "lintian");
    let out = Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .arg(deb)
        .output()
        .expect("running lintian");
    let report = String::from_utf8_lossy(&out.stdout);
    // "E: vmi-detector: TAG details": errors and warnings, not info or pedantic notes
    let unexpected: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .filter(|l| {
            let tag = l.split_whitespace().nth(2).unwrap_or("");
            !LINTIAN_ACCEPTED.iter().any(|(t, _)| *t == tag)
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "lintian ({}) on {}: {unexpected:#?}\n{report}{}",
        out.status,
        deb.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `systemd-analyze verify` on the unit with its paths moved into `root` (the binary
/// and config exist there, and `man` finds the pages there); `security --offline` is
/// printed.
fn verify_unit(root: &Path, unit: &str) {
    need("systemd-analyze", "systemd");
    let r = root.to_string_lossy();
    let moved = unit
        .replace("/usr/bin/detector", &format!("{r}/usr/bin/detector"))
        .replace("/etc/vmi/", &format!("{r}/etc/vmi/"));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("vmi-detector.service");
    std::fs::write(&path, moved).expect("writing the unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("MANPATH", root.join("usr/share/man"))
        .output()
        .expect("running systemd-analyze verify");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let sec = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&path)
        .output()
        .expect("running systemd-analyze security");
    let report = String::from_utf8_lossy(&sec.stdout);
    let overall = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("no overall exposure level");
    eprintln!("systemd-analyze security: {overall}");
}

/// Each page renders with groff without a warning, and with `man -l`.
fn check_man_pages(dir: &Path) {
    need("groff", "groff-base");
    need("man", "man-db");
    let pages: Vec<PathBuf> = std::fs::read_dir(dir.join("man1"))
        .expect("man1")
        .map(|e| e.expect("entry").path())
        .collect();
    for page in &pages {
        let roff = text(&run(Command::new("gzip").arg("-dc").arg(page)));
        assert!(roff.contains(".TH "), "{}", page.display());
        {
            let mut child = Command::new("groff")
                .args(["-man", "-ww", "-z"])
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("groff");
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), roff.as_bytes())
                .expect("feeding groff");
            let out = child.wait_with_output().expect("groff");
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "{}: {}",
                page.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        {
            let out = run(Command::new("man")
                .arg("-l")
                .arg(page)
                .env("MANWIDTH", "80"));
            let shown = text(&out);
            assert!(shown.contains("NAME"), "{}:\n{shown}", page.display());
        }
    }
}
