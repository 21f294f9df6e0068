//! `kernel-text` with the kernel an admin has: the boot image (`/boot/vmlinuz-<abi>`),
//! the linux-image package (made here with `dpkg-deb --build` from the cached boot image,
//! in bookworm's layout or sid's `linux-binary` one) and the -dbg package, instead of
//! the -dbg package's vmlinux the other steps use.
//!
//! On the attack kernels (6.1, 6.12) the guest is clean first (nothing reported with the
//! boot image), then `vmi_inline` writes its `jmp`: found live, paused and from an ELF
//! dump, named with its function and owner as the vmlinux run names it; on 6.1 also with
//! the linux-image .deb and the -dbg .deb. On the clean kernels (5.10, 7.2, newest 7.x)
//! nothing is reported with the boot image, live and from the dump, nor (7.x) with a
//! package in sid's layout.

use super::*;

/// How `--image` is given.
#[derive(Clone, Copy)]
enum Layout {
    /// `/boot/vmlinuz-<abi>` in `linux-image-<abi>`.
    Bookworm,
    /// `/usr/lib/modules/<abi>/vmlinuz` in `linux-binary-<abi>`.
    Sid,
}

/// A kernel package made by dpkg's own tool around the cached boot image.
fn image_deb(vmlinuz: &Path, abi: &str, layout: Layout, dir: &Path) -> PathBuf {
    let root = dir.join("root");
    let (package, member) = match layout {
        Layout::Bookworm => (format!("linux-image-{abi}"), format!("boot/vmlinuz-{abi}")),
        Layout::Sid => (
            format!("linux-binary-{abi}"),
            format!("usr/lib/modules/{abi}/vmlinuz"),
        ),
    };
    let at = root.join(&member);
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::fs::copy(vmlinuz, &at).expect("copying the boot image");
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {package}\nVersion: 1\nArchitecture: amd64\nMaintainer: lab <lab@invalid>\nDescription: the lab's boot image\n"
        ),
    )
    .unwrap();
    let deb = dir.join(format!("{package}.deb"));
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&root)
        .arg(&deb)
        .output()
        .expect("dpkg-deb (package dpkg)");
    assert!(
        out.status.success(),
        "dpkg-deb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&root).unwrap();
    deb
}

/// `check --check kernel-text` must report exactly `wants`, and say nothing is left
/// uncompared (every table of a Debian kernel is named in its kallsyms).
fn text_check(label: &str, d: &Detector, source: &[&str], wants: &[Want]) -> Vec<String> {
    text_check_with(label, d, source, &[], wants)
}

fn text_check_with(
    label: &str,
    d: &Detector,
    source: &[&str],
    more: &[&str],
    wants: &[Want],
) -> Vec<String> {
    let start = std::time::Instant::now();
    let mut args = vec!["--json", "check", "--check", "kernel-text"];
    args.extend_from_slice(more);
    let run = d.run(source, &args);
    eprintln!(
        "{label}: kernel-text with {} in {:.1} s",
        d.image.as_ref().unwrap().display(),
        start.elapsed().as_secs_f64()
    );
    let mut problems = expect_exactly(label, &run, wants);
    if run.stderr.contains("--image") {
        problems.push(format!("{label}: warnings about the image: {}", run.stderr));
    }
    problems
}

fn live(guest: &mut Guest) -> Vec<String> {
    guest.release_qmp();
    vec![
        "--qemu".to_string(),
        guest.qmp_socket().to_str().unwrap().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Live, paused (`--pause`) and from an ELF dump.
fn everywhere(label: &str, d: &Detector, guest: &mut Guest, wants: &[Want]) -> Vec<String> {
    let mut problems = Vec::new();
    let src = live(guest);
    problems.extend(text_check(&format!("{label} live"), d, &strs(&src), wants));
    problems.extend(text_check_with(
        &format!("{label} paused"),
        d,
        &strs(&src),
        &["--pause"],
        wants,
    ));
    let dump = tempfile::tempdir().expect("tempdir");
    let elf = dump.path().join("g.elf");
    guest.dump_elf(&elf).expect("ELF dump");
    problems.extend(text_check(
        &format!("{label} ELF"),
        d,
        &["--dump", elf.to_str().unwrap()],
        wants,
    ));
    problems
}

/// One kernel: clean with its boot image; on the attack kernels hooked by `vmi_inline`.
pub(crate) fn boot_image(lab: &Lab, kernel: &str) -> Vec<String> {
    let attacked = ATTACK_KERNELS.contains(&kernel);
    let profiles = tempfile::tempdir().expect("tempdir");
    profile_into(lab, kernel, profiles.path());
    let image = lab.store().image(kernel).expect("boot image");
    let abi = image.abi.clone();
    let mut scenario = Scenario::standard();
    if attacked {
        scenario = scenario.file(
            common::attack_module(lab, kernel, "vmi_inline"),
            "/lab/vmi_inline.ko",
            0o644,
        );
    }
    let with = |path: &Path| Detector {
        profiles: profiles.path().to_path_buf(),
        image: Some(path.to_path_buf()),
    };
    let d = with(&image.vmlinuz);
    let mut guest = match lab.boot(kernel, &scenario, &BootOptions::default()) {
        Ok(g) => g,
        Err(e) => return vec![format!("{kernel}: boot: {e}")],
    };
    let label = format!("{abi} vmlinuz");
    let mut problems = everywhere(&format!("{label} clean"), &d, &mut guest, &[]);
    let debs = tempfile::tempdir().expect("tempdir");
    if abi.starts_with('7') {
        let deb = image_deb(&image.vmlinuz, &abi, Layout::Sid, debs.path());
        let src = live(&mut guest);
        problems.extend(text_check(
            &format!("{abi} linux-binary .deb clean"),
            &with(&deb),
            &strs(&src),
            &[],
        ));
    }
    if !attacked {
        return problems;
    }
    insmod(kernel, &mut guest, "/lab/vmi_inline.ko");
    let wants = || {
        vec![want(
            "__x64_sys_sysfs hooked inline by vmi_inline",
            "kernel-text",
            |e| e["symbol"] == "__x64_sys_sysfs" && e["owner"] == "module vmi_inline",
        )]
    };
    problems.extend(everywhere(
        &format!("{label} inline"),
        &d,
        &mut guest,
        &wants(),
    ));
    if abi.starts_with("6.1.") {
        let src = live(&mut guest);
        let deb = image_deb(&image.vmlinuz, &abi, Layout::Bookworm, debs.path());
        problems.extend(text_check(
            &format!("{abi} linux-image .deb inline"),
            &with(&deb),
            &strs(&src),
            &wants(),
        ));
        let dbg = lab.store().dbg_package(kernel).expect("-dbg package");
        problems.extend(text_check(
            &format!("{abi} -dbg .deb inline"),
            &with(&dbg),
            &strs(&src),
            &wants(),
        ));
    }
    problems
}
