//! The kernel module's sources keep up with what the detector needs.
//!
//! `vmi_core::profile::needs` derives the default profile from the readers' declarations
//! (`needs::types()`, `needs::symbols()`: the union of every `kernel_layout!` and
//! `declaration!` in vmi-core); the module (guest-module/kmod) is plain kbuild source with
//! its own copies of those lists (it cannot use the crate, and the C table is not
//! generated from them: this check was kept instead). This test reads the sources and
//! fails when a type, field or symbol of the derived set is not covered, so a field
//! declared in a reader cannot silently make the module's profiles incomplete. (The guest
//! test, rust_module.rs, then proves the values on a real kernel.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use vmi_core::profile::needs;

fn read(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("kmod")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The string literals of `const NAME: &[&str] = &[ ... ];` in the Rust source.
fn rust_list(src: &str, name: &str) -> BTreeSet<String> {
    let start = src
        .find(&format!("const {name}: &[&str] = &["))
        .unwrap_or_else(|| panic!("no {name} in vmi_profile_main.rs"));
    let body = &src[start..];
    let body = &body[..body.find("];").expect("end of the list")];
    body.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// (type, field) of every F/FA/FX entry, and every T(name), in the C table.
fn c_table(src: &str) -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<String>) {
    let mut fields: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut types = BTreeSet::new();
    for line in src.lines() {
        let line = line.trim();
        for prefix in ["F(", "FA(", "FX("] {
            if let Some(rest) = line.strip_prefix(prefix) {
                let mut parts = rest.split(',').map(str::trim);
                if let (Some(t), Some(f)) = (parts.next(), parts.next()) {
                    fields
                        .entry(t.to_string())
                        .or_default()
                        .insert(f.to_string());
                }
            }
        }
        // T(a), T(b), ... lines of the type table
        if line.starts_with("T(") {
            for item in line.split("T(").skip(1) {
                if let Some(name) = item.split(')').next() {
                    types.insert(name.trim().to_string());
                }
            }
        }
    }
    (fields, types)
}

#[test]
fn kmod_tracks_needs() {
    let rs = read("vmi_profile_main.rs");
    let c = read("vmi_layout.c");
    let listed_types = rust_list(&rs, "NEEDED_TYPES");
    let listed_symbols = rust_list(&rs, "NEEDED_SYMBOLS");
    let (fields, types) = c_table(&c);
    let mut problems = Vec::new();
    for t in needs::types().iter().filter(|t| !t.optional) {
        if !listed_types.contains(t.name) {
            problems.push(format!("type {} is not in NEEDED_TYPES", t.name));
        }
        if !types.contains(t.name) {
            problems.push(format!(
                "type {} has no T({}) in vmi_layout.c",
                t.name, t.name
            ));
        }
        let have = fields.get(t.name).cloned().unwrap_or_default();
        for f in t.fields.iter().filter(|f| !f.optional) {
            if !f.aliases.iter().any(|a| have.contains(*a)) {
                problems.push(format!(
                    "field {}.{} is not in vmi_layout.c's table",
                    t.name, f.aliases[0]
                ));
            }
        }
    }
    for s in needs::symbols().iter().filter(|s| !s.optional) {
        if !listed_symbols.contains(s.aliases[0]) {
            problems.push(format!("symbol {} is not in NEEDED_SYMBOLS", s.aliases[0]));
        }
    }
    assert!(
        problems.is_empty(),
        "guest-module/kmod lags behind vmi_core::profile::needs:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_parsers_see_the_tables() {
    let (fields, types) = c_table(&read("vmi_layout.c"));
    assert!(fields["task_struct"].contains("tasks"));
    assert!(fields["task_struct"].contains("comm"));
    assert!(types.contains("task_struct") && types.contains("qstr"));
    let rs = read("vmi_profile_main.rs");
    assert!(rust_list(&rs, "NEEDED_SYMBOLS").contains("init_task"));
}

/// The C half compiles against Debian's 6.1 and 6.12 headers (their distribution
/// configs: SCHEDSTATS, every tracer, ...): the module's claim of 6.1 on holds for its
/// version guards and type names, not only on the lab's Rust kernel. (The Rust half needs
/// a Rust-enabled kernel; 7.x headers need gcc-16, not installed here.)
#[test]
fn the_c_half_builds_for_distribution_kernels() {
    let lab = vmi_lab::Lab::open_default().expect("lab");
    let make = vmi_lab::tools::MAKE.find().expect("make");
    for kernel in ["6.1.0-56-amd64", "6.12.117+deb12-amd64"] {
        let headers = lab.store().headers(kernel).expect("headers");
        let dir = tempfile::tempdir().unwrap();
        for name in ["vmi_layout.c", "vmi_layout.h"] {
            std::fs::write(dir.path().join(name), read(name)).unwrap();
        }
        std::fs::write(dir.path().join("Kbuild"), "obj-m := vmi_layout.o\n").unwrap();
        // the object alone: no modpost (the Rust half holds the module's metadata)
        let out = std::process::Command::new(&make)
            .arg("-C")
            .arg(&headers.kdir)
            .arg(format!("M={}", dir.path().display()))
            .arg("vmi_layout.o")
            .output()
            .expect("make");
        assert!(
            out.status.success() && dir.path().join("vmi_layout.o").exists(),
            "{kernel}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
