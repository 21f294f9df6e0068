//! The profile made from the boot image alone (BTF + the kernel's own kallsyms) equals
//! the profile made from the -dbg package (DWARF + System.map): kernel identity (release,
//! banner, build-id), every type field by field and every symbol, for the default
//! profile and for `--full`, on every kernel of the lab's matrix (the needed enums
//! too); and
//! its types equal what `pahole -F btf` reads from the same BTF.
//!
//! The differences BTF and kallsyms really have are allowed by name and counted, never
//! by loosening the comparison:
//! - BTF stores `T[a][b]` as `T[a*b]` (pahole writes one dimension);
//! - a name with several different definitions (BTF lists them all; e.g. `elf_note_info`
//!   of binfmt_elf and compat_binfmt_elf) may resolve to another one in DWARF, whose
//!   first definition in unit order wins: such names are skipped and counted;
//! - on kernels built with Rust (CONFIG_RUST, Debian's 7.x), DWARF also describes the
//!   Rust units: their types (`&[&str]`, `AllocError`, ...) are not in BTF (pahole leaves
//!   Rust units out), and where a Rust unit's bindgen copy of a C struct comes first in
//!   unit order the DWARF profile names its fields with Rust types (`i32`, `usize`, `enum
//!   c_void`): both are counted and allowed only on such kernels;
//! - kallsyms keeps assembler-local labels (`.LC0` on 5.10) that System.map drops;
//! - kallsyms leaves out absolute symbols (System.map type `A`: `text_size`, ...);
//!   per-CPU symbols of kernels with
//!   absolute per-CPU kallsyms have type `A` where System.map says `d`/`D`.

mod common;

use profile_gen::btf::Btf;
use profile_gen::build::{self, Options};
use profile_gen::kimage::KernelElf;
use profile_gen::vmlinuz;
use vmi_core::profile::{Profile, SourceKind};

use common::{type_differences, KERNEL_MAP};

fn config_has(config: &std::path::Path, option: &str) -> bool {
    std::fs::read_to_string(config)
        .unwrap()
        .lines()
        .any(|l| l == format!("{option}=y"))
}

/// The image's BTF.
fn image_btf(vmlinuz_path: &std::path::Path) -> Vec<u8> {
    let image = std::fs::read(vmlinuz_path).unwrap();
    let payload = vmlinuz::payload(&image).unwrap();
    let kernel = vmlinuz::decompress(&payload, usize::MAX).unwrap();
    KernelElf::parse(&kernel).unwrap().btf().unwrap().to_vec()
}

fn compare_types(
    abi: &str,
    dwarf: &Profile,
    btf: &Profile,
    ambiguous: &std::collections::HashSet<String>,
    rust: bool,
) -> (usize, usize, usize, usize) {
    let rust_words = [
        "i8", "u8", "i16", "u16", "i32", "u32", "i64", "u64", "i128", "u128", "usize", "isize",
        "bool", "f32", "f64", "c_void",
    ];
    let rust_typed = |s: &str| {
        s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|w| rust_words.contains(&w))
    };
    let (mut compared, mut flattened, mut skipped, mut from_rust) = (0, 0, 0, 0);
    let mut problems = Vec::new();
    for (name, d) in &dwarf.types {
        let Some(b) = btf.types.get(name) else {
            assert!(
                rust,
                "{abi}: {name} is in the DWARF profile but not in the BTF one"
            );
            from_rust += 1;
            continue;
        };
        if ambiguous.contains(name) {
            skipped += 1;
            continue;
        }
        let diffs = type_differences(name, d, b, &mut flattened);
        let rust_copy = rust && !diffs.is_empty() && d.fields.values().any(|f| rust_typed(&f.ty));
        if rust_copy {
            from_rust += 1;
        } else {
            problems.extend(diffs);
            compared += 1;
        }
    }
    for name in btf.types.keys() {
        assert!(
            dwarf.types.contains_key(name),
            "{abi}: {name} only in the BTF profile"
        );
    }
    assert!(
        problems.is_empty(),
        "{abi}: {} differences between the BTF and DWARF profiles:\n{}",
        problems.len(),
        problems[..problems.len().min(40)].join("\n")
    );
    (compared, flattened, skipped, from_rust)
}

/// Symbols: every one of the image's kallsyms equals the System.map (first occurrence);
/// every System.map symbol missing from kallsyms is absolute or a kallsyms table.
fn compare_symbols(abi: &str, dwarf: &Profile, btf: &Profile) -> usize {
    let mut percpu_a = 0;
    for (name, b) in &btf.symbols {
        let Some(d) = dwarf.symbols.get(name) else {
            // assembler-local labels: kallsyms keeps them, mksysmap drops them
            assert!(
                name.starts_with(".L"),
                "{abi}: {name} is in kallsyms but not in System.map"
            );
            continue;
        };
        assert_eq!(b.address, d.address, "{abi}: address of {name}");
        if b.kind != d.kind {
            // absolute per-CPU kallsyms
            assert!(
                b.kind == "A" && b.address < KERNEL_MAP,
                "{abi}: {name} is {} in kallsyms, {} in System.map",
                b.kind,
                d.kind
            );
            percpu_a += 1;
        }
    }
    for (name, d) in &dwarf.symbols {
        if !btf.symbols.contains_key(name) {
            assert!(
                d.kind == "A" || d.kind == "a",
                "{abi}: {name} ({}) is in System.map but was not recovered",
                d.kind
            );
        }
    }
    percpu_a
}

fn check(kernel: &str) {
    let store = vmi_lab::Store::open_default().unwrap();
    let image = store.image(kernel).expect("the image part");
    let dbg = store.debug(kernel).expect("the -dbg part");
    let abi = &dbg.abi;
    let rust = config_has(&image.config, "CONFIG_RUST");
    let raw_btf = image_btf(&image.vmlinuz);
    let ambiguous = Btf::parse(&raw_btf).unwrap().ambiguous().clone();

    // the default profile: exactly equal but for flattened dimensions
    let opts = Options::default();
    let b = build::from_btf(&image.vmlinuz, None, None, &opts).expect("profile from vmlinuz");
    let d = build::from_dwarf(&dbg.vmlinux, Some(&dbg.system_map), &opts).expect("from DWARF");
    assert!(
        b.profile.missing.is_empty(),
        "{abi}: {:?}",
        b.profile.missing
    );
    assert_eq!(b.profile.kernel, d.profile.kernel, "{abi}: kernel identity");
    assert!(b.profile.kernel.build_id.is_some(), "{abi}: build-id");
    assert_eq!(b.profile.provenance.source, SourceKind::Btf);
    assert_eq!(b.profile.provenance.inputs.len(), 1);
    assert_eq!(b.profile.provenance.inputs[0].name, "vmlinuz");
    assert_eq!(
        b.profile.types.keys().collect::<Vec<_>>(),
        d.profile.types.keys().collect::<Vec<_>>(),
        "{abi}: default types"
    );
    let mut flattened = 0;
    for (name, dt) in &d.profile.types {
        let diffs = type_differences(name, dt, &b.profile.types[name], &mut flattened);
        assert!(diffs.is_empty(), "{abi}: {diffs:#?}");
    }
    // the same symbols at the same addresses; a per-CPU symbol (e.g. `current_task`) is
    // typed A by kallsyms on kernels with absolute per-CPU kallsyms, D by System.map
    assert_eq!(
        b.profile.symbols.keys().collect::<Vec<_>>(),
        d.profile.symbols.keys().collect::<Vec<_>>(),
        "{abi}: default symbols"
    );
    compare_symbols(abi, &d.profile, &b.profile);
    // the enums readers name (the BPF ones), enumerator by enumerator
    assert!(!b.profile.enums.is_empty(), "{abi}: no enums");
    assert_eq!(b.profile.enums, d.profile.enums, "{abi}: enums");

    // everything
    let full = Options {
        full: true,
        ..Options::default()
    };
    let b = build::from_btf(&image.vmlinuz, None, None, &full).expect("full from vmlinuz");
    let d = build::from_dwarf(&dbg.vmlinux, Some(&dbg.system_map), &full).expect("full DWARF");
    let (compared, flattened, skipped, from_rust) =
        compare_types(abi, &d.profile, &b.profile, &ambiguous, rust);
    assert!(compared > 5000, "{abi}: only {compared} types compared");
    assert!(
        skipped * 100 < compared,
        "{abi}: {skipped} ambiguous names is too many"
    );
    let percpu_a = compare_symbols(abi, &d.profile, &b.profile);
    assert!(
        b.profile.symbols.len() * 100 > d.profile.symbols.len() * 99,
        "{abi}: {} symbols recovered of {} in System.map",
        b.profile.symbols.len(),
        d.profile.symbols.len()
    );
    eprintln!(
        "{abi}: {compared} types equal ({flattened} fields with flattened dimensions), {skipped} ambiguous names skipped, {from_rust} DWARF types from Rust units; {} symbols equal ({percpu_a} per-CPU typed A) of {} in System.map",
        b.profile.symbols.len(),
        d.profile.symbols.len()
    );
}

#[test]
fn debian_5_10_boot_image_equals_dwarf() {
    check("5.10.0-46-amd64");
}

#[test]
fn debian_6_1_boot_image_equals_dwarf() {
    check("6.1.0-56-amd64");
}

#[test]
fn debian_6_12_boot_image_equals_dwarf() {
    check("6.12.117+deb12-amd64");
}

#[test]
fn debian_7_2_boot_image_equals_dwarf() {
    check("newest:7.2");
}

#[test]
fn newest_7_boot_image_equals_dwarf() {
    check("newest:7");
}

/// Other flavours of the same release, from the boot image alone: the cloud kernel is
/// compressed with lz4, the real-time one (PREEMPT_RT, other layouts) with xz.
#[test]
fn cloud_and_rt_flavours_from_the_boot_image_alone() {
    let store = vmi_lab::Store::open_default().unwrap();
    for (kernel, compression) in [
        ("6.1.0-56-cloud-amd64", vmlinuz::Compression::Lz4),
        ("6.1.0-56-rt-amd64", vmlinuz::Compression::Xz),
    ] {
        let image = store.image(kernel).expect("the image part");
        let bytes = std::fs::read(&image.vmlinuz).unwrap();
        assert_eq!(vmlinuz::payload(&bytes).unwrap().compression, compression);
        let b = build::from_btf(&image.vmlinuz, None, None, &Options::default())
            .expect("profile from vmlinuz");
        let p = b.profile;
        assert!(p.missing.is_empty(), "{kernel}: {:?}", p.missing);
        assert_eq!(p.kernel.release, kernel);
        assert_eq!(p.symbol("_text"), Some(0xffff_ffff_8100_0000), "{kernel}");
        assert!(p.kernel.build_id.is_some(), "{kernel}");
    }
}

#[test]
fn dimensions_flatten_like_btf() {
    use common::flatten_dims;
    assert_eq!(
        flatten_dims("long unsigned int[3][1]"),
        "long unsigned int[3]"
    );
    assert_eq!(flatten_dims("char[2][16]"), "char[32]");
    assert_eq!(flatten_dims("char[16]"), "char[16]");
    assert_eq!(flatten_dims("ptr (int[2][3])"), "ptr (int[2][3])");
    assert_eq!(flatten_dims("struct list_head"), "struct list_head");
}
