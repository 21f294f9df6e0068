//! Zero-touch onboarding: for Debian 5.10, 6.1, 6.12 and 7.2 guests with KASLR, starting
//! with an empty profile directory, `detector ps` on the live guest and on an ELF dump of
//! it lists exactly the guest's processes, and the profile it wrote (from the guest's own
//! BTF and kallsyms) equals the profile profile-gen makes from that kernel's vmlinuz.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use vmi_core::profile::{Profile, SourceKind};
use vmi_lab::{BootOptions, GroundTruth, Lab, Scenario};

const KERNELS: &[&str] = &[
    "5.10.0-46-amd64",
    "6.1.0-56-amd64",
    "6.12.117+deb12-amd64",
    "newest:7.2",
];

fn detector() -> Command {
    Command::new(env!("CARGO_BIN_EXE_detector"))
}

/// `detector ps --json` with `args`: (pid, ppid) of every process, and the time it took.
fn ps(args: &[&std::ffi::OsStr]) -> Result<(BTreeSet<(u64, u64)>, f64), String> {
    let t = Instant::now();
    let o = detector()
        .args(["ps", "--json"])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    if !o.status.success() {
        return Err(format!(
            "detector ps failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| e.to_string())?;
    let rows = v
        .as_array()
        .ok_or("ps --json is not an array")?
        .iter()
        .map(|p| {
            (
                p["pid"].as_u64().unwrap_or(0),
                p["ppid"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    Ok((rows, secs))
}

fn truth_rows(t: &GroundTruth) -> BTreeSet<(u64, u64)> {
    t.processes
        .iter()
        .filter(|p| p.pid == p.tgid)
        .map(|p| (u64::from(p.pid), u64::from(p.ppid)))
        .collect()
}

/// The one profile `dir` holds, compared with `want` (all but provenance).
fn check_written(what: &str, dir: &Path, want: &Profile, problems: &mut Vec<String>) {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    if files.len() != 1 {
        problems.push(format!("{what}: {} files written: {files:?}", files.len()));
        return;
    }
    let p = Profile::from_json(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    if !name.starts_with(&want.kernel.release) || !name.ends_with(".json") {
        problems.push(format!("{what}: written as {name}"));
    }
    if p.provenance.source != SourceKind::Memory {
        problems.push(format!("{what}: provenance {:?}", p.provenance.source));
    }
    if p.kernel != want.kernel || p.types != want.types || p.symbols != want.symbols {
        problems.push(format!(
            "{what}: the written profile differs from the vmlinuz profile"
        ));
    }
}

#[test]
fn empty_profile_directory_live_and_dump_on_every_kernel() {
    let lab = Lab::open_default().expect("lab");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut problems = Vec::new();
    for kernel in KERNELS {
        let image = lab.store().image(kernel).expect("image");
        let want = profile_gen::build::from_btf(&image.vmlinuz, None, None, &Default::default())
            .expect("vmlinuz profile")
            .profile;
        let mut guest = lab
            .boot(kernel, &Scenario::standard(), &BootOptions::default())
            .expect("boot");
        // live: the detector pauses nothing; processes are stable in the standard scenario
        let truth = guest.refresh_truth().expect("truth");
        guest.release_qmp();
        let live_dir = tmp.path().join(format!("live-{kernel}"));
        std::fs::create_dir_all(&live_dir).unwrap();
        let sock = guest.qmp_socket();
        match ps(&[
            "--qemu".as_ref(),
            sock.as_os_str(),
            "--profiles".as_ref(),
            live_dir.as_os_str(),
        ]) {
            Ok((rows, secs)) => {
                eprintln!("{kernel}: live, empty profile directory: ps in {secs:.2} s");
                if rows != truth_rows(&truth) {
                    problems.push(format!("{kernel} live: processes differ from the guest's"));
                }
                check_written(&format!("{kernel} live"), &live_dir, &want, &mut problems);
            }
            Err(e) => problems.push(format!("{kernel} live: {e}")),
        }
        // the profile is reused on the next run: nothing new is written
        if let Err(e) = ps(&[
            "--qemu".as_ref(),
            sock.as_os_str(),
            "--profiles".as_ref(),
            live_dir.as_os_str(),
        ]) {
            problems.push(format!("{kernel} live, second run: {e}"));
        }
        check_written(
            &format!("{kernel} live, second run"),
            &live_dir,
            &want,
            &mut problems,
        );

        guest.pause().expect("pause");
        let truth_paused = truth.clone();
        let elf = tmp.path().join("g.elf");
        guest.dump_elf(&elf).expect("dump");
        guest.resume().ok();
        guest.shutdown().ok();
        let dump_dir = tmp.path().join(format!("dump-{kernel}"));
        std::fs::create_dir_all(&dump_dir).unwrap();
        match ps(&[
            "--dump".as_ref(),
            elf.as_os_str(),
            "--profiles".as_ref(),
            dump_dir.as_os_str(),
        ]) {
            Ok((rows, secs)) => {
                eprintln!("{kernel}: ELF dump, empty profile directory: ps in {secs:.2} s");
                if rows != truth_rows(&truth_paused) {
                    problems.push(format!("{kernel} dump: processes differ from the guest's"));
                }
                check_written(&format!("{kernel} dump"), &dump_dir, &want, &mut problems);
            }
            Err(e) => problems.push(format!("{kernel} dump: {e}")),
        }
        std::fs::remove_file(&elf).ok();
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Memory without a kernel: `--profile auto` fails with exit code 2 and names the other
/// onboarding paths.
#[test]
fn auto_profile_without_a_kernel_names_the_other_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("zero.raw");
    std::fs::File::create(&raw)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let o = detector()
        .args(["identify", "--profile", "auto", "--dump"])
        .arg(&raw)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("banner") || err.contains("VMCOREINFO"),
        "{err}"
    );
}
