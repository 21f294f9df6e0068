//! `vmi-extract` in real guests. The test builds the binary itself (release, glibc
//! linked statically: `cargo rustc ... -- -C target-feature=+crt-static`), checks the
//! result has no interpreter and needs no library, and puts it into the busybox
//! initramfs of each kernel of the lab's matrix (5.10, 6.1, 6.12, 7.2), booted once with
//! KASLR on. In that guest:
//!
//! - run as root, default profile plus `--type`/`--symbol` extras (`-o FILE`) and
//!   `--full` (standard output), the profiles equal what profile-gen makes on the host
//!   from the same kernel's boot image with the same options: banner and release, every
//!   type field by field, every symbol with its address (moved back from the KASLR
//!   shift, which the warning names and which equals the guest's own `_text`), the
//!   missing lists. The only differences allowed are the documented ones
//!   (docs/profile.md, "Profiles made from BTF and kallsyms"): `provenance.inputs`
//!   (the guest's three files instead of the vmlinuz), `kernel.build_id` (raw BTF has
//!   none), and the kallsyms tables' own symbols (`kallsyms_names`, ...), which the
//!   image's profile adds from the tables where `/proc/kallsyms` omits them (5.10 and
//!   6.1; all of them optional in the default profile);
//! - the error paths, for real: as a non-root user (busybox `su`), with
//!   `kernel.kptr_restrict=2` (every address 0), with `/sys/kernel/btf` hidden under a
//!   tmpfs (a kernel without BTF), and with an output directory that does not exist;
//!   each exits 2 with its message and leaves no output file;
//! - the detector (its library: `detector --profile FILE identify` and `ps`) opens the
//!   live guest with the extracted profile as its only profile, finds the kernel at the
//!   guest's KASLR shift and lists exactly the guest's processes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use detector::{ProfileSpec, SourceSpec, Target};
use profile_gen::build::Options;
use vmi_core::kernel::Limits;
use vmi_core::profile::{Profile, SourceKind};
use vmi_lab::{BootOptions, Guest, Lab, Scenario, MATRIX};

/// x86-64 `_text` at link time (Debian's kernels use the default).
const LINK_TEXT: u64 = 0xffff_ffff_8100_0000;
/// Extras asked for on the command line, beyond what the detector needs.
const EXTRA_TYPES: &[&str] = &["super_block", "inode"];
const EXTRA_SYMBOLS: &[&str] = &["jiffies", "init_uts_ns"];

/// Build the static extractor once per test process; its path, or why it failed.
fn built_extractor() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let started = Instant::now();
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let out = Command::new(cargo)
                .current_dir(&workspace)
                .args([
                    "rustc",
                    "--release",
                    "-p",
                    "guest-module",
                    "--bin",
                    "vmi-extract",
                ])
                .args(["--message-format", "json-render-diagnostics", "--"])
                .args(["-C", "target-feature=+crt-static", "-C", "strip=debuginfo"])
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("running cargo: {e}"))?;
            if !out.status.success() {
                return Err(format!("cargo rustc vmi-extract failed: {}", out.status));
            }
            let exe = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
                .next_back()
                .ok_or("cargo named no executable")?;
            eprintln!(
                "vmi-extract built (static, release) in {:.1?}",
                started.elapsed()
            );
            Ok(exe)
        })
        .clone()
}

/// A private copy of the static extractor (a concurrent non-static build of the same
/// target cannot change it under the test), checked to be static.
fn extractor(dir: &Path) -> PathBuf {
    let built = built_extractor().unwrap_or_else(|e| panic!("{e}"));
    let copy = dir.join("vmi-extract");
    std::fs::copy(&built, &copy).expect("copying vmi-extract");
    let bytes = std::fs::read(&copy).unwrap();
    if let Err(e) = static_elf(&bytes) {
        panic!("{}: not a static executable: {e}", built.display());
    }
    copy
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A 64-bit little-endian ELF executable that needs no dynamic loader: no `PT_INTERP`
/// and no `DT_NEEDED` (a static-pie keeps `PT_DYNAMIC` for its own relocations).
fn static_elf(b: &[u8]) -> Result<(), String> {
    if !b.starts_with(b"\x7fELF\x02\x01") {
        return Err("not a 64-bit little-endian ELF".into());
    }
    let bad = || "truncated ELF headers".to_string();
    let phoff = u64_at(b, 0x20).ok_or_else(bad)? as usize;
    let phentsize = usize::from(u16_at(b, 0x36).ok_or_else(bad)?);
    let phnum = usize::from(u16_at(b, 0x38).ok_or_else(bad)?);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        match u32_at(b, ph).ok_or_else(bad)? {
            3 => return Err("it has an interpreter (PT_INTERP)".into()),
            2 => {
                let (off, size) = (
                    u64_at(b, ph + 8).ok_or_else(bad)? as usize,
                    u64_at(b, ph + 32).ok_or_else(bad)? as usize,
                );
                for at in (off..off + size).step_by(16) {
                    match u64_at(b, at).ok_or_else(bad)? {
                        0 => break,
                        1 => return Err("it needs shared libraries (DT_NEEDED)".into()),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Run `command` in the guest: its status, its output lines joined, how long it took.
fn run(guest: &mut Guest, command: &str) -> (i32, String, f64) {
    let t = Instant::now();
    let out = guest.sh(command).expect("guest shell");
    (out.status, out.lines.join("\n"), t.elapsed().as_secs_f64())
}

/// The `real` time busybox `time` printed (`real\t0m 1.23s`), in seconds.
fn guest_seconds(said: &str) -> Option<f64> {
    let real = said.lines().find_map(|l| l.strip_prefix("real"))?.trim();
    let (min, sec) = real.strip_suffix('s')?.split_once('m')?;
    Some(min.trim().parse::<f64>().ok()? * 60.0 + sec.trim().parse::<f64>().ok()?)
}

/// Where the profile from the guest (`got`) differs from the image's (`want`) other than
/// in the documented ways (see the file's header).
fn differences(got: &Profile, want: &Profile) -> Vec<String> {
    let mut d = Vec::new();
    if got.format_version != want.format_version {
        d.push(format!("format_version {}", got.format_version));
    }
    let (gk, wk) = (&got.kernel, &want.kernel);
    if (&gk.release, &gk.banner, &gk.arch) != (&wk.release, &wk.banner, &wk.arch) {
        d.push(format!("kernel {gk:?} != {wk:?}"));
    }
    // documented: raw BTF has no build-id, the image does
    if gk.build_id.is_some() || wk.build_id.is_none() {
        d.push(format!("build_id {:?} / {:?}", gk.build_id, wk.build_id));
    }
    let inputs: Vec<&str> = got
        .provenance
        .inputs
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    if got.provenance.source != SourceKind::Btf
        || inputs != ["vmlinux", "kallsyms", "version"]
        || got.provenance.tool != want.provenance.tool
    {
        d.push(format!("provenance {:?}", got.provenance));
    }
    if got.missing != want.missing {
        d.push(format!("missing {:?} != {:?}", got.missing, want.missing));
    }
    let names: BTreeSet<&String> = got.types.keys().chain(want.types.keys()).collect();
    for name in names {
        match (got.types.get(name), want.types.get(name)) {
            (Some(g), Some(w)) if g == w => {}
            (Some(g), Some(w)) => {
                if (g.kind, g.size) != (w.kind, w.size) {
                    d.push(format!(
                        "type {name}: {:?} {} != {:?} {}",
                        g.kind, g.size, w.kind, w.size
                    ));
                }
                let fields: BTreeSet<&String> = g.fields.keys().chain(w.fields.keys()).collect();
                for f in fields {
                    if g.fields.get(f) != w.fields.get(f) {
                        d.push(format!(
                            "field {name}.{f}: {:?} != {:?}",
                            g.fields.get(f),
                            w.fields.get(f)
                        ));
                    }
                }
            }
            (g, _) => d.push(format!(
                "type {name} only in the {} profile",
                if g.is_some() { "guest's" } else { "image's" }
            )),
        }
    }
    for (name, w) in &want.symbols {
        match got.symbols.get(name) {
            Some(g) if g == w => {}
            Some(g) => d.push(format!(
                "symbol {name}: {:#x} {} != {:#x} {}",
                g.address, g.kind, w.address, w.kind
            )),
            // documented: the kallsyms tables' own symbols, which the image's profile
            // adds from the tables where /proc/kallsyms omits them (5.10, 6.1)
            None if name.starts_with("kallsyms_") => {}
            None => d.push(format!("symbol {name} not in the guest's profile")),
        }
    }
    for name in got.symbols.keys() {
        if !want.symbols.contains_key(name) {
            d.push(format!("symbol {name} not in the image's profile"));
        }
    }
    d
}

fn options(full: bool) -> Options {
    Options {
        full,
        types: EXTRA_TYPES.iter().map(|s| s.to_string()).collect(),
        symbols: EXTRA_SYMBOLS.iter().map(|s| s.to_string()).collect(),
        libvmi_name: None,
    }
}

fn extras_args() -> String {
    let types = EXTRA_TYPES.iter().map(|t| format!(" --type {t}"));
    let symbols = EXTRA_SYMBOLS.iter().map(|s| format!(" --symbol {s}"));
    types.chain(symbols).collect()
}

/// The (pid, ppid) of every process the guest reports.
fn truth_rows(truth: &vmi_lab::GroundTruth) -> BTreeSet<(u32, u32)> {
    truth
        .processes
        .iter()
        .filter(|p| p.pid == p.tgid)
        .map(|p| (p.pid, p.ppid))
        .collect()
}

fn check(kernel: &str) {
    let test_started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let exe = extractor(tmp.path());
    let size = std::fs::metadata(&exe).unwrap().len();
    let lab = Lab::open_default().unwrap();
    let image = lab.store().image(kernel).expect("the image part");
    let scenario = Scenario::new()
        .file(&exe, "/bin/vmi-extract", 0o755)
        .sleeper("lab-sleeper");
    let mut guest = lab
        .boot(kernel, &scenario, &BootOptions::default())
        .expect("boot");
    let abi = guest.abi().to_string();
    let truth = guest.truth().clone();
    assert!(truth.kaslr, "{abi}: booted with KASLR");
    let shift = truth.text_addr.wrapping_sub(LINK_TEXT);
    assert_ne!(shift, 0, "{abi}: KASLR moved the kernel");
    let mut problems = Vec::new();

    // root, default profile with extras, to a file
    let (status, said, secs) = run(
        &mut guest,
        &format!(
            "time /bin/vmi-extract -o /tmp/profile.json{}",
            extras_args()
        ),
    );
    assert_eq!(status, 0, "{abi}: vmi-extract failed: {said}");
    eprintln!(
        "{abi}: vmi-extract ({size} bytes) made the default profile in {:.2} s in the guest ({secs:.2} s with the lab channel)",
        guest_seconds(&said).unwrap_or(f64::NAN)
    );
    let kaslr_warning = format!("{shift:#x} bytes above its link address {LINK_TEXT:#x} (KASLR)");
    if !said.contains(&kaslr_warning) {
        problems.push(format!(
            "{abi}: no KASLR warning with the guest's shift {shift:#x}: {said}"
        ));
    }
    let json = guest.read_file("/tmp/profile.json").expect("the profile");
    let got = Profile::from_json(&String::from_utf8_lossy(&json)).expect("a profile");
    let want = profile_gen::build::from_btf(&image.vmlinuz, None, None, &options(false))
        .expect("profile-gen on the vmlinuz")
        .profile;
    for t in EXTRA_TYPES {
        assert!(got.types.contains_key(*t), "{abi}: --type {t}");
    }
    for s in EXTRA_SYMBOLS {
        assert!(got.symbols.contains_key(*s), "{abi}: --symbol {s}");
    }
    problems.extend(
        differences(&got, &want)
            .into_iter()
            .map(|d| format!("{abi} default: {d}")),
    );

    // --full, to standard output
    let (status, said, secs) = run(
        &mut guest,
        "time /bin/vmi-extract --full > /tmp/full.json 2>/tmp/full.err; s=$?; cat /tmp/full.err; exit $s",
    );
    assert_eq!(status, 0, "{abi}: vmi-extract --full failed: {said}");
    let t = Instant::now();
    let json = guest.read_file("/tmp/full.json").expect("the full profile");
    eprintln!(
        "{abi}: --full in {:.2} s in the guest ({secs:.2} s with the lab channel; {} bytes, {:.1?} to copy out)",
        guest_seconds(&said).unwrap_or(f64::NAN),
        json.len(),
        t.elapsed()
    );
    let got_full = Profile::from_json(&String::from_utf8_lossy(&json)).expect("a profile");
    let want_full = profile_gen::build::from_btf(&image.vmlinuz, None, None, &options(true))
        .expect("profile-gen --full on the vmlinuz")
        .profile;
    assert!(
        got_full.types.len() > 1000,
        "{abi}: {} types",
        got_full.types.len()
    );
    assert!(
        got_full.symbols.len() > 10000,
        "{abi}: {} symbols",
        got_full.symbols.len()
    );
    problems.extend(
        differences(&got_full, &want_full)
            .into_iter()
            .map(|d| format!("{abi} --full: {d}")),
    );

    // error paths: each exits 2, says why and what to do, and writes nothing
    guest
        .sh("grep -q '^nobody:' /etc/passwd 2>/dev/null || { mkdir -p /etc; echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >> /etc/passwd; echo 'nobody:x:65534:' >> /etc/group; }")
        .expect("adding a user");
    let cases: [(&str, &str, &[&str]); 4] = [
        (
            "as a user",
            "su -s /bin/sh nobody -c '/bin/vmi-extract -o /tmp/err.json'",
            &["must run as root", "effective uid is 65534"],
        ),
        (
            "kptr_restrict=2",
            "old=$(cat /proc/sys/kernel/kptr_restrict); sysctl -w kernel.kptr_restrict=2 >/dev/null; /bin/vmi-extract -o /tmp/err.json; s=$?; sysctl -w kernel.kptr_restrict=$old >/dev/null; exit $s",
            &["/proc/kallsyms shows every address as 0", "kptr_restrict is 2", "sysctl kernel.kptr_restrict=1"],
        ),
        (
            "no BTF",
            "mount -t tmpfs none /sys/kernel/btf && { /bin/vmi-extract -o /tmp/err.json; s=$?; umount /sys/kernel/btf; exit $s; }",
            &["/sys/kernel/btf/vmlinux does not exist", "CONFIG_DEBUG_INFO_BTF", "-dbg package", "guest module"],
        ),
        (
            "no output directory",
            "/bin/vmi-extract -o /tmp/no/such/dir/p.json",
            &["writing /tmp/no/such/dir/p.json"],
        ),
    ];
    for (what, command, wants) in cases {
        let (status, said, _) = run(&mut guest, command);
        let last = said.lines().last().unwrap_or_default();
        if status != 2 || !last.starts_with("vmi-extract: error: ") {
            problems.push(format!("{abi} {what}: status {status}: {said}"));
        }
        for w in wants {
            if !said.contains(w) {
                problems.push(format!("{abi} {what}: the message lacks {w:?}: {said}"));
            }
        }
        let (left, _, _) = run(&mut guest, "test -e /tmp/err.json");
        if left == 0 {
            problems.push(format!("{abi} {what}: an output file was left"));
            guest.sh("rm -f /tmp/err.json").ok();
        }
    }
    eprintln!("{abi}: error paths: {}", cases.map(|c| c.0).join(", "));
    // the guest is as before: the extractor works again
    let (status, said, _) = run(&mut guest, "/bin/vmi-extract > /dev/null");
    assert_eq!(status, 0, "{abi}: after the error paths: {said}");

    // the detector on the live guest, with the extracted profile as its only profile
    let truth = guest.refresh_truth().expect("truth");
    let dir = tempfile::tempdir().unwrap();
    let profile_path = dir.path().join(format!("{}.json", got.kernel.release));
    std::fs::write(&profile_path, got.to_json()).unwrap();
    guest.release_qmp();
    let t = Instant::now();
    let source = SourceSpec::Qemu {
        socket: guest.qmp_socket(),
        mem_path: None,
    };
    match Target::open(&source, &ProfileSpec::File(profile_path.clone())) {
        Ok(target) => {
            let id = detector::render::identify_json(&target);
            let wanted = [
                ("release", truth.release.clone()),
                ("banner", truth.version.clone()),
                ("profile.path", profile_path.display().to_string()),
                ("kaslr.virtual_shift", format!("{shift:#x}")),
            ];
            for (key, want) in wanted {
                let v = key.split('.').fold(&id, |v, k| &v[k]);
                if v.as_str() != Some(want.as_str()) {
                    problems.push(format!(
                        "{abi} identify: {key} is {v}, the guest says {want}"
                    ));
                }
            }
            match target.kernel.processes(&Limits::default()) {
                Ok(procs) => {
                    let rows: BTreeSet<(u32, u32)> =
                        procs.iter().map(|p| (p.pid, p.ppid)).collect();
                    let names: BTreeMap<u32, String> =
                        procs.iter().map(|p| (p.pid, p.name())).collect();
                    if rows != truth_rows(&truth) {
                        problems.push(format!("{abi} ps: processes differ from the guest's"));
                    }
                    if !names.values().any(|n| n == "lab-sleeper") {
                        problems.push(format!("{abi} ps: no lab-sleeper among {names:?}"));
                    }
                    eprintln!(
                        "{abi}: detector identify + ps with the extracted profile: {} processes in {:.2?}",
                        procs.len(),
                        t.elapsed()
                    );
                }
                Err(e) => problems.push(format!("{abi} ps: {e}")),
            }
        }
        Err(e) => problems.push(format!("{abi} detector: {e}")),
    }
    guest.shutdown().ok();
    eprintln!("{abi}: test done in {:.1?}", test_started.elapsed());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn debian_5_10() {
    check(MATRIX[0]);
}

#[test]
fn debian_6_1() {
    check(MATRIX[1]);
}

#[test]
fn debian_6_12() {
    check(MATRIX[2]);
}

#[test]
fn debian_7_2() {
    check(MATRIX[3]);
}
