//! Profiles without debug packages, checked against what running guests say about
//! themselves. Each kernel of the lab's matrix is booted once (`nokaslr`), and:
//! - every symbol of the profile made from its boot image alone equals the guest's own
//!   /proc/kallsyms, and every kernel symbol the guest lists is in the profile;
//! - the profile made from the guest's raw BTF (/sys/kernel/btf/vmlinux) + its
//!   /proc/kallsyms + its /proc/version equals the boot image's profile: banner, every
//!   type field by field, every symbol.
//!
//! (The KASLR case, raw BTF + relocated kallsyms, is checked on the KASLR guest of
//! tests/volatility.rs.)

mod common;

use std::time::Instant;

use profile_gen::build::{self, Options};
use vmi_lab::{BootOptions, Lab, Scenario, MATRIX};

fn check(kernel: &str) {
    let lab = Lab::open_default().unwrap();
    let image = lab.store().image(kernel).expect("the image part");
    let dir = tempfile::tempdir().unwrap();
    let mut guest = lab
        .boot(
            kernel,
            &Scenario::new(),
            &BootOptions {
                kaslr: false,
                ..BootOptions::default()
            },
        )
        .expect("boot");
    let abi = guest.abi().to_string();
    let started = Instant::now();
    let kallsyms = guest.read_file("/proc/kallsyms").expect("kallsyms");
    let btf = guest.read_file("/sys/kernel/btf/vmlinux").expect("raw BTF");
    let version = guest.read_file("/proc/version").expect("/proc/version");
    eprintln!(
        "{abi}: {} bytes of kallsyms, {} of BTF out of the guest in {:.1?}",
        kallsyms.len(),
        btf.len(),
        started.elapsed()
    );
    assert!(!guest.truth().kaslr, "{abi}: booted nokaslr");
    let guest_version = guest.truth().version.clone();
    guest.shutdown().expect("shutdown");
    let paths = [
        ("kallsyms", &kallsyms),
        ("btf", &btf),
        ("version", &version),
    ]
    .map(|(name, data)| {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    });
    let [kallsyms_path, btf_path, version_path] = &paths;

    // the boot image's symbols are the guest's
    let full = Options {
        full: true,
        ..Options::default()
    };
    let from_image = build::from_btf(&image.vmlinuz, None, None, &full).expect("from vmlinuz");
    let guest_syms = common::parse_kallsyms(&String::from_utf8_lossy(&kallsyms));
    for (name, s) in &from_image.profile.symbols {
        match guest_syms.get(name) {
            Some((addr, kind)) => {
                assert_eq!((s.address, &s.kind), (*addr, kind), "{abi}: symbol {name}")
            }
            // the tables found in the image, on kernels whose kallsyms omits them
            // (checked against System.map in tests/btf.rs)
            None => assert!(
                name.starts_with("kallsyms_"),
                "{abi}: {name} is not in the guest's kallsyms"
            ),
        }
    }
    for name in guest_syms.keys() {
        assert!(
            from_image.profile.symbols.contains_key(name),
            "{abi}: the guest lists {name}, the profile does not"
        );
    }

    // raw BTF + /proc/kallsyms + /proc/version: the same profile
    let opts = Options::default();
    let a = build::from_btf(&image.vmlinuz, None, None, &opts)
        .expect("from vmlinuz")
        .profile;
    let b = build::from_btf(btf_path, Some(kallsyms_path), Some(version_path), &opts)
        .expect("from raw BTF + kallsyms");
    let b_profile = &b.profile;
    assert_eq!(a.kernel.release, b_profile.kernel.release, "{abi}");
    assert_eq!(a.kernel.banner, b_profile.kernel.banner, "{abi}: banner");
    assert_eq!(
        a.kernel.banner.trim_end(),
        guest_version,
        "{abi}: the banner is the guest's /proc/version"
    );
    assert_eq!(a.types, b_profile.types, "{abi}: types");
    for (name, s) in &a.symbols {
        match b_profile.symbols.get(name) {
            Some(t) => assert_eq!(s, t, "{abi}: symbol {name}"),
            None => assert!(name.starts_with("kallsyms_"), "{abi}: {name} missing"),
        }
    }
    assert!(
        b.warnings.iter().all(|w| !w.contains("KASLR")),
        "{abi}: nokaslr: nothing to move: {:?}",
        b.warnings
    );
    eprintln!(
        "{abi}: {} symbols equal the guest's kallsyms; raw BTF profile equals the image's",
        from_image.profile.symbols.len()
    );
}

#[test]
fn debian_5_10_matches_the_guest() {
    check(MATRIX[0]);
}

#[test]
fn debian_6_1_matches_the_guest() {
    check(MATRIX[1]);
}

#[test]
fn debian_6_12_matches_the_guest() {
    check(MATRIX[2]);
}

#[test]
fn debian_7_2_matches_the_guest() {
    check(MATRIX[3]);
}

#[test]
fn newest_7_matches_the_guest() {
    check(MATRIX[4]);
}
