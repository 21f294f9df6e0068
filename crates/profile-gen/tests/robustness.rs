//! Hostile input: truncated and corrupted ELF/DWARF and System.map files give errors,
//! never a panic or a hang. A small real ELF (a gcc -g fixture linked into a shared
//! library) is mutated deterministically: truncated at many lengths and with bytes
//! overwritten inside every DWARF section; each mutant goes through the native and the
//! full ISF writers. (`cargo fuzz` targets in crates/profile-gen/fuzz explore further.)

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
