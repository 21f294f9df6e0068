//! The `profile-gen` command on real Debian files: bad inputs get errors that say what
//! to do, and output files appear only when complete.

use std::process::Command;

fn profile_gen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_profile-gen"))
}

/// A minimal bzImage (setup header, boot protocol 2.15) around a compressed payload.
fn bzimage(payload: &[u8], size: u32) -> Vec<u8> {
    let mut img = vec![0u8; 1024];
    img[0x1f1] = 1;
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
    img[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
    img[0x24c..0x250].copy_from_slice(&(payload.len() as u32 + 4).to_le_bytes());
    img.extend_from_slice(payload);
    img.extend_from_slice(&size.to_le_bytes());
    img
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Run profile-gen on `inputs`; expect exit code 2, no output file, and return stderr.
fn refused(dir: &std::path::Path, inputs: &[&std::path::Path]) -> String {
    let out_path = dir.join("p.json");
    let out = profile_gen()
        .args(inputs)
        .arg("-o")
        .arg(&out_path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!out_path.exists(), "no output file");
    err
}

/// Bad boot images: unknown compression names the magic bytes; a kernel without BTF
/// points to the DWARF path and the guest module; a kernel whose kallsyms tables do not
/// decode (here: an ELF that is not Linux, carrying real BTF) is refused, never given
/// garbage symbols.
#[test]
fn bad_boot_images_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = dir.path().join("vmlinuz-unknown");
    std::fs::write(&unknown, bzimage(b"\x11\x22\x33\x44 what is this", 64)).unwrap();
    let err = refused(dir.path(), &[&unknown]);
    assert!(
        err.contains("unknown compression") && err.contains("[11, 22, 33, 44"),
        "{err}"
    );

    // an ELF kernel without BTF: this test binary, compressed
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let no_btf = dir.path().join("vmlinuz-nobtf");
    std::fs::write(&no_btf, bzimage(&gzip(&me), me.len() as u32)).unwrap();
    let err = refused(dir.path(), &[&no_btf]);
    assert!(
        err.contains("no BTF") && err.contains("-dbg") && err.contains("guest module"),
        "{err}"
    );

    // real BTF (from the 6.1 vmlinux) in an ELF without kallsyms (and without DWARF,
    // which would take precedence)
    let lab = vmi_lab::Lab::open_default().unwrap();
    let d = lab.store().debug("6.1.0-56-amd64").unwrap();
    let btf = dir.path().join("btf.bin");
    let elf = dir.path().join("btf.elf");
    let run = |args: &[&std::ffi::OsStr]| {
        let ok = Command::new("objcopy")
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "objcopy {args:?}");
    };
    run(&[
        "-O".as_ref(),
        "binary".as_ref(),
        "--only-section=.BTF".as_ref(),
        d.vmlinux.as_os_str(),
        btf.as_os_str(),
    ]);
    let add = format!(".BTF={}", btf.display());
    run(&[
        "--strip-debug".as_ref(),
        "--add-section".as_ref(),
        add.as_ref(),
        std::env::current_exe().unwrap().as_os_str(),
        elf.as_os_str(),
    ]);
    let elf_bytes = std::fs::read(&elf).unwrap();
    let not_linux = dir.path().join("vmlinuz-notlinux");
    std::fs::write(
        &not_linux,
        bzimage(&gzip(&elf_bytes), elf_bytes.len() as u32),
    )
    .unwrap();
    let err = refused(dir.path(), &[&not_linux]);
    assert!(err.contains("kallsyms"), "{err}");
    // the same ELF given as it is, and raw BTF without symbols
    let err = refused(dir.path(), &[&elf]);
    assert!(err.contains("kallsyms"), "{err}");
    let err = refused(dir.path(), &[&btf]);
    assert!(err.contains("raw BTF carries no symbols"), "{err}");
    // a truncated image
    let image = lab.store().image("6.1.0-56-amd64").unwrap();
    let bytes = std::fs::read(&image.vmlinuz).unwrap();
    let cut = dir.path().join("vmlinuz-cut");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let err = refused(dir.path(), &[&cut]);
    assert!(err.contains("truncated"), "{err}");
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

/// The libVMI stanza carries the profile's offsets (themselves checked against pahole in
/// tests/pahole.rs) and init_task's address, under the name given.
#[test]
fn libvmi_stanza_matches_the_profile() {
    let lab = vmi_lab::Lab::open_default().unwrap();
    let d = lab.store().debug("6.1.0-56-amd64").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], out: &str| {
        let path = dir.path().join(out);
        let o = profile_gen()
            .arg(&d.vmlinux)
            .arg(&d.system_map)
            .args(args)
            .arg("-o")
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(path).unwrap()
    };
    let profile = vmi_core::profile::Profile::from_json(&run(&[], "p.json")).unwrap();
    let conf = run(
        &["--format", "libvmi", "--libvmi-name", "guest-61"],
        "libvmi.conf",
    );
    assert!(conf.contains("guest-61 {"), "{conf}");
    assert!(conf.contains("ostype = \"Linux\";"), "{conf}");
    assert!(conf.starts_with("# Linux version 6.1.0-56-amd64"), "{conf}");
    let value = |key: &str| -> u64 {
        let line = conf
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key} =")))
            .unwrap_or_else(|| panic!("no {key} in {conf}"));
        let v = line.split('=').nth(1).unwrap().trim().trim_end_matches(';');
        u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap()
    };
    let field = |t: &str, f: &str| profile.field(t, f).unwrap().offset;
    assert_eq!(value("linux_tasks"), field("task_struct", "tasks"));
    assert_eq!(value("linux_mm"), field("task_struct", "mm"));
    assert_eq!(value("linux_pid"), field("task_struct", "pid"));
    assert_eq!(value("linux_name"), field("task_struct", "comm"));
    assert_eq!(value("linux_pgd"), field("mm_struct", "pgd"));
    assert_eq!(
        value("linux_init_task"),
        profile.symbol("init_task").unwrap()
    );
}

/// A file whose DWARF is damaged gets an error naming the section, exit code 2 (not a
/// panic's 101), and no output file.
#[test]
fn corrupt_dwarf_names_the_section_and_leaves_no_file() {
    use object::{Object, ObjectSection};
    let dir = tempfile::tempdir().unwrap();
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden/anonymous.c");
    let so = dir.path().join("f.so");
    let obj = dir.path().join("f.o");
    assert!(Command::new("gcc")
        .args(["-c", "-O0", "-fPIC", "-w", "-gdwarf-5"])
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap()
        .success());
    // an object file is refused with an explanation
    let out_path = dir.path().join("out").join("p.json");
    std::fs::create_dir_all(out_path.parent().unwrap()).unwrap();
    let o = profile_gen()
        .arg(&obj)
        .arg("-o")
        .arg(&out_path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("relocatable object"));
    assert!(Command::new("gcc")
        .args(["-shared", "-nostdlib"])
        .arg(&obj)
        .arg("-o")
        .arg(&so)
        .status()
        .unwrap()
        .success());
    let mut data = std::fs::read(&so).unwrap();
    let (off, size) = {
        let f = object::File::parse(&*data).unwrap();
        let s = f.section_by_name(".debug_abbrev").unwrap();
        s.file_range().unwrap()
    };
    // abbreviation codes that do not exist
    for b in &mut data[off as usize..(off + size) as usize] {
        *b = 0x7f;
    }
    let bad = dir.path().join("bad.so");
    std::fs::write(&bad, &data).unwrap();
    let o = profile_gen()
        .arg(&bad)
        .arg("-o")
        .arg(&out_path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(".debug_info") && err.contains("offset"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(out_path.parent().unwrap())
            .unwrap()
            .count(),
        0,
        "no partial file"
    );
}

/// The -dbg package given as it is gives the same profile as its extracted vmlinux and
/// System.map (same input hashes), and a usable ISF.
#[test]
fn debug_package_gives_the_same_profile_as_its_files() {
    let store = vmi_lab::Store::open_default().unwrap();
    let deb = store.dbg_package("6.1.0-56-amd64").unwrap();
    let d = store.debug("6.1.0-56-amd64").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let make = |inputs: &[&std::path::Path], extra: &[&str], out: &str| {
        let path = dir.path().join(out);
        let o = profile_gen()
            .args(inputs)
            .args(extra)
            .arg("-o")
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(path).unwrap()
    };
    let parse = |s: &str| vmi_core::profile::Profile::from_json(s).unwrap();
    let from_deb = parse(&make(&[&deb], &[], "deb.json"));
    let from_files = parse(&make(&[&d.vmlinux, &d.system_map], &[], "files.json"));
    assert_eq!(from_deb.kernel, from_files.kernel);
    assert_eq!(from_deb.types, from_files.types);
    assert_eq!(from_deb.symbols, from_files.symbols);
    let hashes = |p: &vmi_core::profile::Profile| {
        p.provenance
            .inputs
            .iter()
            .map(|i| i.sha256.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(hashes(&from_deb), hashes(&from_files));
    assert!(from_deb.provenance.inputs[0]
        .name
        .starts_with("vmlinux-6.1.0-56-amd64"));

    let isf = make(&[&deb], &["--format", "isf"], "isf.json");
    assert!(isf.contains("\"format\": \"6.2.0\""));
    assert!(isf.contains("\"linux_banner\": {\"address\": "));

    // a package and a System.map together are refused
    let o = profile_gen().arg(&deb).arg(&d.system_map).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("carries its own System.map"));
}

/// A boot image with a symbol list: the list is used when it belongs to the image (the
/// same profile as the image alone), refused when it does not; the libVMI stanza from
/// the image alone carries the same offsets as the DWARF one.
#[test]
fn boot_image_with_a_system_map_and_as_libvmi() {
    let store = vmi_lab::Store::open_default().unwrap();
    let image = store.image("6.1.0-56-amd64").unwrap();
    let d61 = store.debug("6.1.0-56-amd64").unwrap();
    let d72 = store.debug("newest:7.2").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = refused(dir.path(), &[&image.vmlinuz, &d72.system_map]);
    assert!(err.contains("different builds"), "{err}");

    let make = |inputs: &[&std::path::Path], extra: &[&str], out: &str| {
        let path = dir.path().join(out);
        let o = profile_gen()
            .args(inputs)
            .args(extra)
            .arg("-o")
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(path).unwrap()
    };
    let parse = |s: &str| vmi_core::profile::Profile::from_json(s).unwrap();
    let alone = parse(&make(&[&image.vmlinuz], &[], "alone.json"));
    let with_map = parse(&make(&[&image.vmlinuz, &d61.system_map], &[], "map.json"));
    assert_eq!(alone.types, with_map.types);
    assert_eq!(alone.kernel, with_map.kernel);
    for (name, s) in &alone.symbols {
        let m = with_map
            .symbols
            .get(name)
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(s.address, m.address, "{name}");
        // absolute per-CPU kallsyms (e.g. current_task) are typed A, D in System.map
        assert!(
            s.kind == m.kind || (s.kind == "A" && s.address < 0xffff_ffff_8000_0000),
            "{name}: {} vs {}",
            s.kind,
            m.kind
        );
    }
    assert_eq!(with_map.provenance.inputs.len(), 2);
    assert_eq!(alone.provenance.source, vmi_core::profile::SourceKind::Btf);

    let from_image = make(&[&image.vmlinuz], &["--format", "libvmi"], "btf.conf");
    let from_dwarf = make(
        &[&d61.vmlinux, &d61.system_map],
        &["--format", "libvmi"],
        "dwarf.conf",
    );
    let body = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(body(&from_image), body(&from_dwarf));
}

/// `--from-dump` on memory that holds no kernel: exit code 2, an error naming the other
/// onboarding paths, no output file.
#[test]
fn from_dump_without_a_kernel_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("zero.raw");
    std::fs::File::create(&raw)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let o = profile_gen()
        .arg("--from-dump")
        .arg(&raw)
        .arg("-o")
        .arg(out_dir.join("p.json"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("VMCOREINFO") && err.contains("vmlinuz"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0);
}
