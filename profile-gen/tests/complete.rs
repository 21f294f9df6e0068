//! `profile-gen <profile> <System.map>`: a profile that knows its types but only some
//! symbols (what the guest module reports) is completed from the build's System.map.
//!
//! On Debian's 6.1 build: the DWARF profile cut down to the symbols a module sees (the
//! rest listed as missing) and completed through the command gets back exactly the
//! DWARF profile's symbols; the same with a KASLR-relocated kallsyms-style list; another
//! build's System.map, an ISF request and a profile mixed with a kernel are refused
//! without leaving a file.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use profile_gen::build::{self, Options};
use vmi_core::profile::{Profile, SourceKind};
use vmi_lab::Lab;

const KEEP: &[&str] = &["_text", "init_task", "linux_banner", "init_pid_ns"];

fn profile_gen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_profile-gen"))
}

fn run(args: &[&Path]) -> (bool, String, String) {
    let out = profile_gen().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_module_profile_is_completed_from_the_system_map() {
    let lab = Lab::open_default().unwrap();
    let dbg = lab
        .store()
        .debug("6.1.0-56-amd64")
        .expect("6.1 debug files");
    let full = build::from_dwarf(&dbg.vmlinux, Some(&dbg.system_map), &Options::default())
        .unwrap()
        .profile;
    let mut partial = full.clone();
    partial.provenance.source = SourceKind::Module;
    partial
        .symbols
        .retain(|name, _| KEEP.contains(&name.as_str()));
    partial.missing.symbols = full
        .symbols
        .keys()
        .filter(|n| !KEEP.contains(&n.as_str()))
        .cloned()
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("module.json");
    std::fs::write(&module, partial.to_json()).unwrap();

    // System.map
    let (ok, stdout, stderr) = run(&[&module, &dbg.system_map]);
    assert!(ok, "{stderr}");
    let done = Profile::from_json(&stdout).unwrap();
    assert_eq!(
        done.symbols, full.symbols,
        "every needed symbol, as DWARF's"
    );
    assert_eq!(done.missing.symbols, full.missing.symbols);
    assert_eq!(done.types, full.types);
    assert_eq!(done.provenance.source, SourceKind::Module);
    assert!(done
        .provenance
        .inputs
        .iter()
        .any(|i| i.name == "System.map"));

    // a kallsyms copy of a KASLR boot: moved back by _text
    let shift = 0x1d20_0000u64;
    let text = std::fs::read_to_string(&dbg.system_map).unwrap();
    let mut relocated = String::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let (Some(a), Some(t), Some(n)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let a = u64::from_str_radix(a, 16).unwrap();
        let a = if a >= 0xffff_ffff_8000_0000 {
            a + shift
        } else {
            a
        };
        relocated.push_str(&format!("{a:016x} {t} {n}\n"));
    }
    let kallsyms = dir.path().join("kallsyms");
    std::fs::write(&kallsyms, relocated).unwrap();
    let (ok, stdout, stderr) = run(&[&module, &kallsyms]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("KASLR"), "{stderr}");
    let done = Profile::from_json(&stdout).unwrap();
    let addresses = |p: &Profile| -> BTreeMap<String, u64> {
        p.symbols
            .iter()
            .map(|(n, s)| (n.clone(), s.address))
            .collect()
    };
    assert_eq!(addresses(&done), addresses(&full));

    // libVMI from the completed profile
    let out = profile_gen()
        .arg(&module)
        .arg(&dbg.system_map)
        .args(["--format", "libvmi"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("linux_init_task = 0x"));

    // refusals, and no file left behind
    let out_path = dir.path().join("out.json");
    let refused = |extra: &[&str], inputs: &[&Path]| -> String {
        let o = profile_gen()
            .args(inputs)
            .args(extra)
            .arg("-o")
            .arg(&out_path)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        assert!(!out_path.exists(), "no partial file");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    if let Ok(other) = lab.store().debug("6.12.117+deb12-amd64") {
        let e = refused(&[], &[&module, &other.system_map]);
        assert!(e.contains("another build"), "{e}");
    }
    let e = refused(&["--format", "isf"], &[&module, &dbg.system_map]);
    assert!(e.contains("ISF"), "{e}");
    let e = refused(&[], &[&module, &dbg.vmlinux]);
    assert!(e.contains("is a profile"), "{e}");
    let e = refused(&["--full"], &[&module, &dbg.system_map]);
    assert!(e.contains("not types"), "{e}");
}
