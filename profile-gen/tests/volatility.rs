//! The ISF written by `profile-gen --full --format isf` is what Volatility 3 expects, made
//! from DWARF (the -dbg files) and from the boot image alone (BTF + the image's kallsyms):
//! each validates against Volatility's own ISF 6.2.0 JSON Schema, and `vol linux.pslist`
//! on an ELF dump of a lab guest lists exactly the processes the guest itself reports.
//!
//! The same guest runs with KASLR, so it also checks the profile made from its raw BTF
//! and relocated /proc/kallsyms: moved back, the symbols equal the boot image's.
//!
//! Volatility 3 (pinned, from PyPI) lives in a venv the lab makes once in its cache.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{parse_pslist_csv, processes};
use profile_gen::build::{self, Options};
use vmi_lab::python::{Venv, JSONSCHEMA, VOLATILITY};
use vmi_lab::{BootOptions, Lab, Scenario, DEFAULT_KERNEL};

/// Write `profile-gen <inputs> --full --format isf` under `symbols/linux/`.
fn make_isf(inputs: &[&Path], symbols: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(symbols.join("linux")).unwrap();
    let isf = symbols.join("linux").join(format!("{name}.json"));
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_profile-gen"))
        .args(inputs)
        .args(["--full", "--format", "isf", "-o"])
        .arg(&isf)
        .output()
        .expect("run profile-gen");
    assert!(
        out.status.success(),
        "profile-gen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "ISF {name}: {} bytes in {:.1?} (test build)",
        std::fs::metadata(&isf).unwrap().len(),
        started.elapsed()
    );
    isf
}

/// The ISF validates against Volatility's schema and types init_task.
fn validate(venv: &Venv, isf: &Path) {
    let schema = venv
        .package_dir("volatility3")
        .expect("volatility3 installed")
        .join("schemas/schema-6.2.0.json");
    let check = Command::new(venv.bin("python"))
        .arg("-c")
        .arg(
            "import json, sys, jsonschema\n\
             isf = json.load(open(sys.argv[1])); schema = json.load(open(sys.argv[2]))\n\
             jsonschema.validate(isf, schema)\n\
             assert isf['metadata']['format'] == '6.2.0'\n\
             assert isf['symbols']['init_task']['type'] == {'kind': 'struct', 'name': 'task_struct'}\n\
             assert 'constant_data' in isf['symbols']['linux_banner']\n\
             print(len(isf['user_types']), len(isf['enums']), len(isf['symbols']))",
        )
        .arg(isf)
        .arg(&schema)
        .output()
        .expect("run python");
    assert!(
        check.status.success(),
        "{} does not validate against Volatility's schema: {}",
        isf.display(),
        String::from_utf8_lossy(&check.stderr)
    );
    eprintln!(
        "schema ok; user_types enums symbols: {}",
        String::from_utf8_lossy(&check.stdout).trim()
    );
}

/// `vol linux.pslist` on `dump` with the ISFs under `symbols`.
fn pslist(venv: &Venv, symbols: &Path, dump: &Path, work: &Path) -> String {
    let volcache = work.join("volcache");
    std::fs::create_dir_all(&volcache).unwrap();
    let started = Instant::now();
    let vol = Command::new(venv.bin("vol"))
        .args(["-q", "-r", "csv", "-s"])
        .arg(symbols)
        .arg("--cache-path")
        .arg(&volcache)
        .arg("-f")
        .arg(dump)
        .arg("linux.pslist")
        .current_dir(work)
        .output()
        .expect("run vol");
    let stdout = String::from_utf8_lossy(&vol.stdout).into_owned();
    assert!(
        vol.status.success() && stdout.contains("TreeDepth,"),
        "vol linux.pslist failed ({}):\n{stdout}\n{}",
        vol.status,
        String::from_utf8_lossy(&vol.stderr)
    );
    eprintln!("vol linux.pslist: {:.1?}", started.elapsed());
    stdout
}

#[test]
fn volatility_pslist_on_a_lab_dump_matches_the_guest() {
    let lab = Lab::open_default().expect("lab cache");
    let dbg = lab.store().debug(DEFAULT_KERNEL).expect("-dbg package");
    let image = lab.store().image(DEFAULT_KERNEL).expect("image");
    let dir = tempfile::tempdir().expect("tempdir");
    let dwarf_symbols = dir.path().join("symbols-dwarf");
    let btf_symbols = dir.path().join("symbols-btf");
    let dwarf_isf = make_isf(&[&dbg.vmlinux, &dbg.system_map], &dwarf_symbols, &dbg.abi);
    let btf_isf = make_isf(&[&image.vmlinuz], &btf_symbols, &dbg.abi);

    let venv = Venv::ensure(lab.cache(), &[VOLATILITY, JSONSCHEMA]).expect("volatility venv");
    validate(&venv, &dwarf_isf);
    validate(&venv, &btf_isf);
    // BTF types few variables: those it types match DWARF's (anonymous types by kind)
    let typed = Command::new(venv.bin("python"))
        .arg("-c")
        .arg(
            "import json, sys\n\
             d = json.load(open(sys.argv[1]))['symbols']; b = json.load(open(sys.argv[2]))['symbols']\n\
             def norm(t):\n\
             \x20   if isinstance(t, dict):\n\
             \x20       return {k: ('anon' if k == 'name' and v.startswith('unnamed_') else norm(v)) for k, v in t.items()}\n\
             \x20   return t\n\
             typed = [n for n, s in b.items() if 'type' in s]\n\
             bad = [n for n in typed if norm(b[n]['type']) != norm(d[n].get('type'))]\n\
             assert not bad, bad[:20]\n\
             need = ['init_task', 'init_mm', 'modules', 'mod_tree', 'idt_table', 'sys_call_table', '_text', 'linux_banner', '__per_cpu_offset']\n\
             assert all('type' in b[n] for n in need), [n for n in need if 'type' not in b[n]]\n\
             print(len(typed))",
        )
        .arg(&dwarf_isf)
        .arg(&btf_isf)
        .output()
        .expect("run python");
    assert!(
        typed.status.success(),
        "symbol types of the ISF from the boot image differ from DWARF's: {}",
        String::from_utf8_lossy(&typed.stderr)
    );
    eprintln!(
        "{} typed symbols of the boot image's ISF equal DWARF's",
        String::from_utf8_lossy(&typed.stdout).trim()
    );

    // a dump whose process list is known: the truth before and after the dump agree
    let mut guest = lab
        .boot(
            DEFAULT_KERNEL,
            &Scenario::standard(),
            &BootOptions::default(),
        )
        .expect("boot");
    let dump = dir.path().join("guest.elf");
    let mut attempts = 0;
    let truth = loop {
        attempts += 1;
        let before = guest.refresh_truth().expect("truth");
        guest.pause().expect("pause");
        guest.dump_elf(&dump).expect("ELF dump");
        guest.resume().expect("resume");
        let after = guest.refresh_truth().expect("truth");
        if processes(&before) == processes(&after) || attempts == 3 {
            break before;
        }
        std::fs::remove_file(&dump).ok();
    };
    assert!(truth.kaslr, "the guest runs with KASLR");
    let raw = dir.path().join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    for (path, name) in [
        ("/sys/kernel/btf/vmlinux", "vmlinux.btf"),
        ("/proc/kallsyms", "kallsyms"),
        ("/proc/version", "version"),
    ] {
        let data = guest.read_file(path).expect("a file out of the guest");
        std::fs::write(raw.join(name), data).unwrap();
    }
    guest.shutdown().expect("shutdown");
    let want = processes(&truth);

    // the relocated kallsyms, moved back, give the image's symbols
    let from_image = build::from_btf(&image.vmlinuz, None, None, &Options::default())
        .expect("profile from the image");
    let from_guest = build::from_btf(
        &raw.join("vmlinux.btf"),
        Some(&raw.join("kallsyms")),
        Some(&raw.join("version")),
        &Options::default(),
    )
    .expect("profile from raw BTF + relocated kallsyms");
    assert!(
        from_guest.warnings.iter().any(|w| w.contains("KASLR")),
        "the shift is reported: {:?}",
        from_guest.warnings
    );
    assert_eq!(from_image.profile.types, from_guest.profile.types);
    assert_eq!(
        from_image.profile.kernel.banner,
        from_guest.profile.kernel.banner
    );
    for (name, s) in &from_image.profile.symbols {
        match from_guest.profile.symbols.get(name) {
            Some(g) => assert_eq!(s, g, "symbol {name}"),
            None => assert!(name.starts_with("kallsyms_"), "{name} missing"),
        }
    }

    for (what, symbols) in [("DWARF", &dwarf_symbols), ("boot image", &btf_symbols)] {
        let work = dir.path().join(what.replace(' ', "-"));
        std::fs::create_dir_all(&work).unwrap();
        let got = parse_pslist_csv(&pslist(&venv, symbols, &dump, &work));
        let missing: Vec<_> = want.difference(&got).collect();
        let extra: Vec<_> = got.difference(&want).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "Volatility's pslist with the ISF from the {what} differs from the guest's own list.\nonly in the guest: {missing:?}\nonly in Volatility: {extra:?}"
        );
    }
    assert!(
        want.len() > 40,
        "a standard guest runs more than 40 processes"
    );
    assert!(want.iter().any(|(_, _, c)| c == "lab-user"));
}
