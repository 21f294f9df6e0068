//! Hostile input: truncated and corrupted ELF/DWARF and System.map files give errors,
//! never a panic or a hang. A small real ELF (a gcc -g fixture linked into a shared
//! library) is mutated deterministically: truncated at many lengths and with bytes
//! overwritten inside every DWARF section; each mutant goes through the native and the
//! full ISF writers; real BTF and kallsyms tables (Debian 6.1's boot image) are damaged the
//! same way. (`cargo fuzz` targets in profile-gen/fuzz explore further.)

use std::path::Path;
use std::process::Command;

use object::{Object, ObjectSection};
use profile_gen::build::{generate_bytes, Format, Options};

fn fixture_elf(dir: &Path, flags: &[&str]) -> Vec<u8> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden/anonymous.c");
    let obj = dir.join("f.o");
    let so = dir.join("f.so");
    let ok = Command::new("gcc")
        .args(["-c", "-O0", "-fPIC", "-w"])
        .args(flags)
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status()
        .expect("gcc (Debian package gcc)")
        .success()
        && Command::new("gcc")
            .args(["-shared", "-nostdlib"])
            .arg(&obj)
            .arg("-o")
            .arg(&so)
            .status()
            .expect("gcc")
            .success();
    assert!(ok, "building the fixture failed");
    std::fs::read(&so).unwrap()
}

/// Run every writer on `data`; a panic fails the test, errors are fine.
fn exercise(data: &[u8], what: &str) -> bool {
    let mut ok = false;
    for (format, full) in [
        (Format::Native, false),
        (Format::Native, true),
        (Format::Isf, true),
        (Format::Libvmi, false),
    ] {
        let opts = Options {
            full,
            ..Options::default()
        };
        let mut sink = Vec::new();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            generate_bytes(data, None, &opts, format, &mut sink)
        }));
        match r {
            Ok(result) => ok |= result.is_ok(),
            Err(_) => panic!("{what}: profile-gen panicked ({format:?}, full {full})"),
        }
    }
    ok
}

/// A tiny deterministic generator (xorshift) so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn truncated_and_corrupted_dwarf_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    for flags in [
        &["-gdwarf-5"][..],
        &["-gdwarf-4", "-fdebug-types-section"],
        &["-gdwarf-5", "-gz=zlib"],
    ] {
        let elf = fixture_elf(dir.path(), flags);
        assert!(
            exercise(&elf, "the intact fixture"),
            "the intact fixture must work"
        );

        // truncations, dense near the start (headers) and spread over the file
        let mut cuts: Vec<usize> = (0..256).collect();
        cuts.extend((0..elf.len()).step_by(elf.len() / 200 + 1));
        for cut in cuts {
            exercise(
                &elf[..cut.min(elf.len())],
                &format!("{flags:?} cut at {cut}"),
            );
        }

        // overwritten bytes inside each DWARF section
        let file = object::File::parse(&*elf).unwrap();
        let sections: Vec<(String, u64, u64)> = file
            .sections()
            .filter_map(|s| {
                let name = s.name().ok()?.to_string();
                let (off, size) = s.file_range()?;
                name.starts_with(".debug").then_some((name, off, size))
            })
            .collect();
        assert!(sections.len() >= 3, "{sections:?}");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for (name, off, size) in &sections {
            for round in 0..60 {
                let mut m = elf.clone();
                let n = 1 + (rng.next() % 4) as usize;
                for _ in 0..n {
                    let at = (*off + rng.next() % (*size).max(1)) as usize;
                    if let Some(b) = m.get_mut(at) {
                        *b = match rng.next() % 4 {
                            0 => 0,
                            1 => 0xff,
                            2 => *b ^ (1 << (rng.next() % 8)),
                            _ => rng.next() as u8,
                        };
                    }
                }
                exercise(&m, &format!("{flags:?} {name} round {round}"));
            }
        }
    }
}

#[test]
fn garbage_system_maps_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let elf = fixture_elf(dir.path(), &["-gdwarf-5"]);
    for map in [
        &b""[..],
        b"\n\n",
        b"ffffffff81000000",
        b"ffffffff81000000 T",
        b"zzzz T _text\n",
        b"ffffffff81000000 TT _text\n",
        b"\xff\xfe\x00 T x\n",
        b"ffffffffffffffffffffffff T _text\n",
    ] {
        let r = generate_bytes(
            &elf,
            Some(map),
            &Options::default(),
            Format::Native,
            &mut Vec::new(),
        );
        let e = r.expect_err("a garbage System.map must be refused");
        assert!(e.to_string().contains("System.map"), "{e}");
    }
}

/// Overwrite 1-4 bytes of `data[range]` with values that break parsers most often.
fn mutate(data: &[u8], range: std::ops::Range<usize>, rng: &mut Rng) -> Vec<u8> {
    let mut m = data.to_vec();
    let n = 1 + (rng.next() % 4) as usize;
    for _ in 0..n {
        let at = range.start + (rng.next() as usize) % (range.end - range.start).max(1);
        if let Some(b) = m.get_mut(at) {
            *b = match rng.next() % 4 {
                0 => 0,
                1 => 0xff,
                2 => *b ^ (1 << (rng.next() % 8)),
                _ => rng.next() as u8,
            };
        }
    }
    m
}

/// The kernel inside Debian 6.1's boot image (decompressed as far as profiles need).
fn kernel_6_1() -> Vec<u8> {
    use profile_gen::vmlinuz;
    let store = vmi_lab::Store::open_default().unwrap();
    let image = std::fs::read(store.image("6.1.0-56-amd64").unwrap().vmlinuz).unwrap();
    let payload = vmlinuz::payload(&image).unwrap();
    vmlinuz::decompress(&payload, usize::MAX).unwrap()
}

/// Real BTF, truncated and with bytes overwritten in its header, its type records and
/// its strings: an error or layouts, never a panic.
#[test]
fn mutated_btf_never_panics() {
    use profile_gen::btf::Btf;
    use profile_gen::kimage::KernelElf;
    let kernel = kernel_6_1();
    let btf = KernelElf::parse(&kernel).unwrap().btf().unwrap().to_vec();
    let exercise = |data: &[u8], what: &str| {
        let r = std::panic::catch_unwind(|| {
            let Ok(b) = Btf::parse(data) else {
                return false;
            };
            for t in vmi_core::profile::needs::types() {
                let _ = b.layout(t.name);
            }
            for id in (0..b.len() as u32 + 2).step_by(97) {
                let _ = b.type_name(id);
                let _ = b.size_of(id);
            }
            true
        });
        r.unwrap_or_else(|_| panic!("{what}: the BTF reader panicked"))
    };
    assert!(exercise(&btf, "intact"));
    for cut in (0..64).chain((0..btf.len()).step_by(btf.len() / 100 + 1)) {
        exercise(&btf[..cut], &format!("cut at {cut}"));
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let types_end = 24 + u32::from_le_bytes(btf[12..16].try_into().unwrap()) as usize;
    for (name, range) in [
        ("header", 0..24),
        ("types", 24..types_end),
        ("strings", types_end..btf.len()),
    ] {
        for round in 0..100 {
            let m = mutate(&btf, range.clone(), &mut rng);
            exercise(&m, &format!("{name} round {round}"));
        }
    }
}

/// Damaged kallsyms tables are refused (or still decode consistently), never a panic,
/// and never a table whose anchors (`_text`, the banner) are wrong.
#[test]
fn mutated_kallsyms_tables_never_panic() {
    use profile_gen::kallsyms;
    use profile_gen::kimage::KernelElf;
    let kernel = kernel_6_1();
    let elf = KernelElf::parse(&kernel).unwrap();
    let (_, layout) = kallsyms::recover(&elf).expect("the intact tables decode");
    let text = elf.text_address().unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let regions = [
        ("names", layout.names..layout.markers.0),
        ("markers", layout.markers.0..layout.token_table),
        ("token table", layout.token_table..layout.token_index),
        ("token index", layout.token_index..layout.token_index + 512),
        ("num_syms", layout.num_syms..layout.num_syms + 4),
    ];
    let (mut refused, mut decoded) = (0, 0);
    for (name, range) in regions {
        for round in 0..8 {
            let m = mutate(&kernel, range.clone(), &mut rng);
            let r = std::panic::catch_unwind(|| {
                let elf = KernelElf::parse(&m).unwrap();
                kallsyms::recover(&elf).map(|(entries, _)| {
                    entries
                        .iter()
                        .find(|(n, _, _)| n == "_text")
                        .map(|(_, a, _)| *a)
                })
            });
            match r {
                Err(_) => panic!("{name} round {round}: kallsyms recovery panicked"),
                Ok(Err(_)) => refused += 1,
                Ok(Ok(t)) => {
                    assert_eq!(t, Some(text), "{name} round {round}: _text moved");
                    decoded += 1;
                }
            }
        }
    }
    eprintln!("damaged kallsyms: {refused} refused, {decoded} still consistent");
    assert!(refused > 0, "some damage must be refused");
}
