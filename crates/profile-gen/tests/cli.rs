//! The `profile-gen` command on real Debian files: bad inputs get errors that say what
//! to do, and output files appear only when complete.

use std::process::Command;

fn profile_gen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_profile-gen"))
}

#[test]
fn boot_image_where_dwarf_is_expected_is_explained() {
    let lab = vmi_lab::Lab::open_default().unwrap();
    let image = lab.store().image("6.1.0-56-amd64").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("p.json");
    let out = profile_gen()
        .arg(&image.vmlinuz)
        .arg("-o")
        .arg(&out_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("compressed boot image"), "{err}");
    assert!(err.contains("-dbg"), "{err}");
    assert!(!out_path.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no partial file"
    );
}

#[test]
fn system_map_of_another_build_is_refused_and_a_good_pair_is_written() {
    let lab = vmi_lab::Lab::open_default().unwrap();
    let d61 = lab.store().debug("6.1.0-56-amd64").unwrap();
    let d72 = lab.store().debug("newest:7.2").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("p.json");
    let out = profile_gen()
        .arg(&d61.vmlinux)
        .arg(&d72.system_map)
        .arg("-o")
        .arg(&out_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("different builds"), "{err}");
    assert!(!out_path.exists());

    let out = profile_gen()
        .arg(&d61.system_map)
        .arg(&d61.vmlinux)
        .arg("-o")
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = vmi_core::profile::Profile::from_json(&std::fs::read_to_string(&out_path).unwrap())
        .unwrap();
    assert_eq!(p.kernel.release, "6.1.0-56-amd64");
    assert_eq!(p.provenance.inputs.len(), 2);
    assert!(p.field("task_struct", "tasks").is_some());
}
