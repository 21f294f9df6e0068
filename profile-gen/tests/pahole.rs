//! The default profile made from Debian's -dbg packages equals what pahole (Debian's
//! dwarves) says about the same vmlinux: every struct size and field offset (bitfields
//! by bit position), and every symbol equals the package's System.map.

mod common;

use std::collections::BTreeMap;

use profile_gen::build::{self, Options};

fn check_kernel(name: &str) {
    let lab = vmi_lab::Lab::open_default().unwrap();
    let dbg = lab.store().debug(name).expect("fetching the -dbg part");
    let built = build::from_dwarf(&dbg.vmlinux, Some(&dbg.system_map), &Options::default())
        .expect("building the profile");
    let p = built.profile;
    assert!(p.missing.is_empty(), "{}: missing {:?}", dbg.abi, p.missing);
    assert_eq!(p.kernel.release, dbg.abi);
    assert!(p
        .kernel
        .banner
        .starts_with(&format!("Linux version {} ", dbg.abi)));

    // symbols equal the System.map
    let map = std::fs::read_to_string(&dbg.system_map).unwrap();
    let mut first = BTreeMap::new();
    for line in map.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        first
            .entry(w[2].to_string())
            .or_insert((u64::from_str_radix(w[0], 16).unwrap(), w[1].to_string()));
    }
    for (name, s) in &p.symbols {
        assert_eq!(
            first.get(name),
            Some(&(s.address, s.kind.clone())),
            "{}: symbol {name}",
            dbg.abi
        );
    }

    // types equal pahole's view
    let compared = common::assert_matches_pahole(&dbg.abi, &p, &["-F", "dwarf"], &dbg.vmlinux);
    assert!(compared > 300, "only {compared} fields compared");
    eprintln!(
        "{}: {compared} fields and {} symbols agree",
        dbg.abi,
        p.symbols.len()
    );
}

#[test]
fn debian_6_1_equals_pahole_and_system_map() {
    check_kernel("6.1.0-56-amd64");
}

#[test]
fn debian_7_2_equals_pahole_and_system_map() {
    check_kernel("newest:7.2");
}

/// Rust-enabled kernels (Debian's 7.x) carry the Rust bindings' copies of C structs in
/// their DWARF, with Rust field types: the C definitions must win.
#[test]
fn c_definitions_win_over_rust_bindings() {
    let lab = vmi_lab::Lab::open_default().unwrap();
    let d = lab.store().debug("newest:7.2").unwrap();
    let opts = profile_gen::build::Options {
        types: vec![
            "atomic_t".into(),
            "atomic64_t".into(),
            "refcount_struct".into(),
        ],
        ..Default::default()
    };
    let p = profile_gen::build::from_dwarf(&d.vmlinux, Some(&d.system_map), &opts)
        .unwrap()
        .profile;
    assert_eq!(p.field("atomic_t", "counter").unwrap().ty, "int");
    assert_eq!(
        p.field("atomic64_t", "counter").unwrap().ty,
        "long long int"
    );
    assert_eq!(
        p.field("refcount_struct", "refs").unwrap().ty,
        "struct atomic_t"
    );
    assert_eq!(
        p.field("task_struct", "tasks").unwrap().ty,
        "struct list_head"
    );
}
