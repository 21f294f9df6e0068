//! `lab validate` as a user's CI runs it: over a directory of kernels given as files,
//! the matrix's Debian boot images (each with its `qemu_fw_cfg` module beside it as
//! `modules-<release>/`) and the lab's self-built Rust 6.12 kernel (a custom kernel, with
//! its vmlinux and System.map beside it, so its profile comes from DWARF). The JUnit
//! report must parse, hold one testsuite per kernel with the guest's release, and every
//! step must pass (a verify rule that does not apply is skipped).
//!
//! The `lab`, `profile-gen` and `detector` programs are cargo's builds, side by side in
//! the target directory (scripts/test.sh builds the whole workspace first); every
//! kernel is booted once.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use vmi_lab::{RustKernel, DEFAULT_KERNEL, MATRIX};

/// The programs `lab validate` runs, beside `lab`.
fn programs_beside_lab() -> PathBuf {
    let lab = Path::new(env!("CARGO_BIN_EXE_lab"));
    let dir = lab.parent().expect("target directory").to_path_buf();
    for p in ["profile-gen", "detector"] {
        assert!(
            dir.join(p).is_file(),
            "{} is missing: build it first (cargo build -p profile-gen -p detector; \
             scripts/test.sh builds the workspace)",
            dir.join(p).display()
        );
    }
    dir
}

#[test]
fn validate_matrix_and_rust_kernel_as_files_gives_a_passing_junit_report() {
    programs_beside_lab();
    let lab = common::lab();
    let kernels = tempfile::tempdir().expect("tempdir");
    let dir = kernels.path();
    let mut releases = Vec::new();
    for name in MATRIX {
        let image = lab
            .store()
            .image(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        symlink(&image.vmlinuz, dir.join(format!("vmlinuz-{}", image.abi))).unwrap();
        if let Some(fw) = &image.fw_cfg_module {
            let modules = dir.join(format!("modules-{}", image.abi));
            std::fs::create_dir(&modules).unwrap();
            symlink(fw, modules.join("qemu_fw_cfg.ko")).unwrap();
        }
        releases.push(image.abi);
    }
    let rust = RustKernel::ensure(lab.cache()).expect("the Rust-enabled kernel");
    let r = &rust.release;
    symlink(&rust.image.vmlinuz, dir.join(format!("vmlinuz-{r}"))).unwrap();
    symlink(&rust.vmlinux, dir.join(format!("vmlinux-{r}"))).unwrap();
    symlink(&rust.system_map, dir.join(format!("System.map-{r}"))).unwrap();
    releases.push(r.clone());

    let report = kernels.path().join("report.xml");
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .arg("validate")
        .arg(dir)
        .arg("--junit")
        .arg(&report)
        .output()
        .expect("running lab validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "lab validate: {} kernels in {:.1} s\n{stdout}",
        releases.len(),
        t.elapsed().as_secs_f64()
    );
    let xml = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no report {} ({e}):\n{stdout}\n{stderr}", report.display()));
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}:\n{xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suites: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    let names: Vec<&str> = suites.iter().filter_map(|s| s.attribute("name")).collect();
    let mut want: Vec<&str> = releases.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(names, want, "one testsuite per kernel, in name order");
    let mut problems = Vec::new();
    for s in &suites {
        let name = s.attribute("name").unwrap_or("?");
        // the guest said it runs the release its file is named for
        let release = s
            .descendants()
            .find(|p| p.has_tag_name("property") && p.attribute("name") == Some("release"));
        if release.and_then(|p| p.attribute("value")) != Some(name) {
            problems.push(format!("{name}: the guest's release is {release:?}"));
        }
        let cases: Vec<_> = s
            .children()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        let steps: Vec<&str> = cases.iter().filter_map(|c| c.attribute("name")).collect();
        for step in [
            "boot",
            "profile",
            "verify discovery",
            "ps",
            "lsmod",
            "shutdown",
        ] {
            if !steps.contains(&step) {
                problems.push(format!("{name}: no {step} step among {steps:?}"));
            }
        }
        if steps.iter().filter(|s| s.starts_with("verify ")).count() < 10 {
            problems.push(format!("{name}: too few verify rules: {steps:?}"));
        }
        if s.attribute("tests") != Some(cases.len().to_string().as_str()) {
            problems.push(format!("{name}: tests={:?}", s.attribute("tests")));
        }
        for c in &cases {
            let step = c.attribute("name").unwrap_or("?");
            for bad in c
                .children()
                .filter(|n| n.has_tag_name("failure") || n.has_tag_name("error"))
            {
                problems.push(format!(
                    "{name}: {step}: {}\n{}",
                    bad.attribute("message").unwrap_or(""),
                    bad.text().unwrap_or("")
                ));
            }
            let skipped = c.children().any(|n| n.has_tag_name("skipped"));
            if skipped && !step.starts_with("verify ") {
                problems.push(format!("{name}: {step} was skipped"));
            }
        }
        let time = |step: &str| {
            cases
                .iter()
                .find(|c| c.attribute("name") == Some(step))
                .and_then(|c| c.attribute("time"))
                .unwrap_or("?")
        };
        let from = s
            .descendants()
            .find(|p| p.has_tag_name("property") && p.attribute("name") == Some("profile from"))
            .and_then(|p| p.attribute("value"))
            .unwrap_or("?");
        eprintln!(
            "{name}: {} steps in {} s (boot {}, profile {} from {from}, shutdown {})",
            cases.len(),
            s.attribute("time").unwrap_or("?"),
            time("boot"),
            time("profile"),
            time("shutdown")
        );
    }
    assert!(
        problems.is_empty(),
        "{}\n{stdout}\n{stderr}",
        problems.join("\n")
    );
    assert_eq!(root.attribute("failures"), Some("0"));
    assert!(
        out.status.success(),
        "exit {}:\n{stdout}\n{stderr}",
        out.status
    );
}

/// Bad arguments are refused before any guest boots, saying what to give; a file that is
/// no boot image fails its own kernel's boot step, in the report; a profile of another
/// kernel (6.12's boot image given as 6.1's "vmlinux") fails verify, ps and lsmod; a
/// "vmlinux" profile-gen cannot read fails the profile step, the steps after it skipped.
#[test]
fn bad_kernels_are_named_with_what_to_give() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&Path]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lab"))
            .arg("validate")
            .args(args)
            .output()
            .expect("running lab validate");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, stderr) = run(&[dir.path()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("vmlinuz-<release>"), "{stderr}");

    programs_beside_lab();
    let vmlinux = dir.path().join("vmlinuz-9.9.9-not-a-bzimage");
    std::fs::write(&vmlinux, b"\x7fELF\x02\x01\x01 not a boot image").unwrap();
    let report = dir.path().join("r.xml");
    let (code, stdout, stderr) = run(&[&vmlinux, Path::new("--junit"), &report]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("FAIL 9.9.9-not-a-bzimage") && stdout.contains("not a boot image"),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&report).expect("report");
    let doc = roxmltree::Document::parse(&xml).expect("XML");
    let failures: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .collect();
    assert_eq!(failures.len(), 1, "{xml}");
    assert!(
        failures[0].text().unwrap_or("").contains("bzImage"),
        "{xml}"
    );

    let lab = common::lab();
    let image = |name: &str| lab.store().image(name).unwrap_or_else(|e| panic!("{e}"));
    let (guest, other) = (image(DEFAULT_KERNEL), image("6.12.117+deb12-amd64"));
    let kernels = dir.path().join("kernels");
    std::fs::create_dir(&kernels).unwrap();
    let abi = &guest.abi;
    symlink(&guest.vmlinuz, kernels.join(format!("vmlinuz-{abi}"))).unwrap();
    symlink(&other.vmlinuz, kernels.join(format!("vmlinux-{abi}"))).unwrap();
    // and 6.12 with a "vmlinux" profile-gen cannot read
    symlink(
        &other.vmlinuz,
        kernels.join(format!("vmlinuz-{}", other.abi)),
    )
    .unwrap();
    std::fs::write(kernels.join(format!("vmlinux-{}", other.abi)), b"junk").unwrap();
    let (code, stdout, stderr) = run(&[&kernels, Path::new("--junit"), &report]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let xml = std::fs::read_to_string(&report).expect("report");
    let doc = roxmltree::Document::parse(&xml).expect("XML");
    let failed: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .filter_map(|f| f.parent()?.attribute("name"))
        .collect();
    assert_eq!(
        failed,
        ["verify discovery", "ps", "lsmod", "profile"],
        "{xml}"
    );
    let skipped = doc
        .descendants()
        .filter(|n| n.has_tag_name("skipped"))
        .count();
    assert_eq!(skipped, 3, "verify, ps and lsmod of 6.12 not run: {xml}");
    assert!(
        xml.contains(&other.abi),
        "the evidence names the profile's kernel: {xml}"
    );
}
