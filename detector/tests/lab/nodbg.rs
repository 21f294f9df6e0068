//! Kernel text without the -dbg package's vmlinux (issue 19).
//!
//! `kernel-text` with the kernel an admin has: the boot image (`/boot/vmlinuz-<abi>`),
//! the linux-image package (made here with `dpkg-deb --build` from the cached boot image,
//! in bookworm's layout or sid's `linux-binary` one) and the -dbg package, instead of
//! the -dbg package's vmlinux the other steps use. And `kernel-entries`, with no image
//! at all.
//!
//! On the attack kernels (6.1, 6.12) the guest is clean first (nothing reported by
//! `kernel-text` with the boot image nor by `kernel-entries`), then `vmi_inline` writes
//! its `jmp`: both find it, live, paused and from an ELF dump, named with its function
//! and owner as the vmlinux run names it; on 6.1 also with the linux-image .deb and the
//! -dbg .deb as image. Then `vmi_ftrace` hooks two functions through ftrace: their ftrace
//! sites call its ops' trampoline, which `kernel-entries` leaves to the `ftrace` check
//! (it reports the ops, owned by the hidden module), so with both checks and no image
//! exactly those findings. On the clean kernels (5.10, 7.2, newest 7.x) neither check
//! reports anything, live, paused and from the dump, nor (7.x) `kernel-text` with a
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
    checks(label, d, source, &[], wants)
}

/// `check --check CHECKS` (`kernel-text` with an image, `kernel-entries,ftrace`
/// without) with `more` arguments must report exactly `wants`.
fn checks(
    label: &str,
    d: &Detector,
    source: &[&str],
    more: &[&str],
    wants: &[Want],
) -> Vec<String> {
    let start = std::time::Instant::now();
    let which = if d.image.is_some() {
        "kernel-text"
    } else {
        "kernel-entries,ftrace"
    };
    let mut args = vec!["--json", "check", "--check", which];
    args.extend_from_slice(more);
    let run = d.run(source, &args);
    eprintln!(
        "{label}: {which} with {} in {:.1} s",
        d.image
            .as_ref()
            .map_or("no image".into(), |p| p.display().to_string()),
        start.elapsed().as_secs_f64()
    );
    let mut problems = expect_exactly(label, &run, wants);
    if run.stderr.contains("--image") {
        problems.push(format!("{label}: warnings about the image: {}", run.stderr));
    }
    // each check looked at everything: the kallsyms tables were read
    if run.json()["not_checked"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        problems.push(format!(
            "{label}: not checked: {}",
            run.json()["not_checked"]
        ));
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
    problems.extend(checks(
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

/// One kernel: clean with its boot image and without; on the attack kernels hooked by
/// `vmi_inline`, then `vmi_ftrace`.
pub(crate) fn nodbg(lab: &Lab, kernel: &str) -> Vec<String> {
    let attacked = ATTACK_KERNELS.contains(&kernel);
    let profiles = tempfile::tempdir().expect("tempdir");
    profile_into(lab, kernel, profiles.path());
    let image = lab.store().image(kernel).expect("boot image");
    let abi = image.abi.clone();
    let mut scenario = Scenario::standard();
    if attacked {
        for m in ["vmi_inline", "vmi_ftrace"] {
            scenario = scenario.file(
                common::attack_module(lab, kernel, m),
                &format!("/lab/{m}.ko"),
                0o644,
            );
        }
    }
    let with = |path: &Path| Detector {
        profiles: profiles.path().to_path_buf(),
        image: Some(path.to_path_buf()),
    };
    let d = with(&image.vmlinuz);
    let none = Detector {
        profiles: profiles.path().to_path_buf(),
        image: None,
    };
    let mut guest = match lab.boot(kernel, &scenario, &BootOptions::default()) {
        Ok(g) => g,
        Err(e) => return vec![format!("{kernel}: boot: {e}")],
    };
    let label = format!("{abi} vmlinuz");
    let mut problems = everywhere(&format!("{label} clean"), &d, &mut guest, &[]);
    problems.extend(everywhere(
        &format!("{abi} no image, clean"),
        &none,
        &mut guest,
        &[],
    ));
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
    let entry = || {
        want(
            "__x64_sys_sysfs's entry branching into vmi_inline",
            "kernel-entries",
            |e| e["symbol"] == "__x64_sys_sysfs" && e["owner"] == "module vmi_inline",
        )
    };
    problems.extend(everywhere(
        &format!("{abi} no image, inline"),
        &none,
        &mut guest,
        &[entry()],
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
    // ftrace's own patch sites, calling a registered ops' trampoline: the ftrace
    // check's finding, not kernel-entries'
    insmod(kernel, &mut guest, "/lab/vmi_ftrace.ko");
    let ftrace = want(
        "vmi_ftrace's ftrace_ops on kill and getdents64, owned by the hidden vmi_ftrace",
        "ftrace",
        |e| e["owner"] == "hidden module vmi_ftrace" && e["hooked_count"] == 2,
    );
    problems.extend(everywhere(
        &format!("{abi} no image, inline and ftrace"),
        &none,
        &mut guest,
        &[entry(), ftrace],
    ));
    problems
}
