//! The guest-memory fuzzer's bounded CI mode (issue 23): lab dumps of Debian 6.1 (clean,
//! then with the demo's test rootkits, sockets and BPF programs) and of the newest 7.x
//! (sockets and BPF programs), each fuzzed with
//! [`MUTANTS`] mutants of its kernel objects (`fuzz/engine.rs`). Every run of every
//! command (`ps`, `lsmod`, `sockets`, `bpf`, `maps`, `check` with every check, the
//! policy and kernel-text checks included) must end without a panic within [`BOUND`]
//! of CPU time,
//! hold at most the engine's heap bound, and print no raw control character. The seed
//! is fixed ([`SEED`], or `VMI_FUZZ_SEED`), but the guests are booted afresh (KASLR, other
//! addresses), so a failure is reported by what it changed: the object, field and
//! mutation, with its bytes. On kept dumps a mutant replays by seed and index:
//! `cargo run -p detector --example fuzz_guest -- DIR --replay DUMP:SEED:INDEX`.
//! The long mode is `scripts/fuzz-guest.sh`.

#[path = "common/mod.rs"]
mod common;
#[path = "fuzz/engine.rs"]
mod engine;

use std::time::Duration;

/// Mutants per dump.
const MUTANTS: u64 = 250;
/// The seed, unless `VMI_FUZZ_SEED` says otherwise.
const SEED: u64 = 23;
/// A run's bound in CPU time: the 2 s on a 1 GiB dump is for a release build
/// (0.03-0.05 s on the unmutated dumps); this debug build takes about 4 times as long.
const BOUND: Duration = Duration::from_secs(8);

#[test]
fn mutated_guests_end_in_time_without_panics_and_escaped() {
    let seed = std::env::var("VMI_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let lab = vmi_lab::Lab::open_default().expect("lab");
    let dir = tempfile::tempdir().expect("tempdir");
    let specs = engine::prepare(&lab, dir.path());
    assert_eq!(specs.len(), 3, "{specs:?}");
    let mut tally = engine::Tally::default();
    let mut problems = Vec::new();
    for s in &specs {
        let mut f = engine::Fuzzer::open(&s.name, &s.elf, &s.profile, Some(&s.image), BOUND)
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{}: {}", s.name, f.census());
        // the dump itself: every command reads it and every check runs
        let o = f.baseline();
        eprintln!("{} unmutated: {:.2?}: {}", s.name, o.took, o.summary);
        // every check: those that need no configuration, the policy and kernel text
        let all = format!("{} ran", detector::checks::Check::ALL.len() + 2);
        if o.problem.is_some() || !o.check_errors.is_empty() || !o.summary.contains(&all) {
            problems.push(format!(
                "{} unmutated: {:?}, {}, {:?}",
                s.name, o.problem, o.summary, o.check_errors
            ));
        }
        // the walks are really fed: processes, modules and mappings were read
        for none in [" 0 processes", " 0 modules", " 0 mappings"] {
            if o.summary.contains(none) || o.summary.starts_with(none.trim()) {
                problems.push(format!("{} unmutated read{none}: {}", s.name, o.summary));
            }
        }
        // what each dump holds is found: the rootkits' hiding and hooks, the BPF programs
        let (rootkits, busy) = (s.name.ends_with("rootkits"), !s.name.ends_with("clean"));
        for (kind, want) in [
            ("hidden-process", rootkits),
            ("hidden-module", rootkits),
            ("syscall-table", rootkits),
            ("ebpf", busy),
        ] {
            if o.summary.contains(kind) != want {
                problems.push(format!("{} unmutated, {kind}: {}", s.name, o.summary));
            }
        }
        if !busy && !o.summary.contains(" 0 findings") {
            problems.push(format!("{} unmutated, findings: {}", s.name, o.summary));
        }
        // sockets and BPF programs where the guest had them
        for none in [" 0 sockets", " 0 BPF programs"] {
            if o.summary.contains(none) == busy {
                problems.push(format!("{} unmutated, {none}: {}", s.name, o.summary));
            }
        }
        for i in 0..MUTANTS {
            let m = f.mutant(seed, i);
            let o = f.run_one(&m);
            tally.add(&f, seed, &m, &o);
            if matches!(o.problem, Some(engine::Problem::Hang)) {
                break; // its thread still runs: the rest would be timed wrong
            }
        }
    }
    eprintln!("seed {seed}: {}", tally.line());
    if let Some((t, m)) = &tally.slowest {
        eprintln!("slowest ({t:.2?}): {m}");
    }
    if let Some((h, m)) = &tally.heaviest {
        eprintln!("most heap ({} KiB): {m}", h >> 10);
    }
    problems.extend(tally.problems.iter().cloned());
    // a fuzzer whose mutations never reach a walk proves nothing
    if tally.changed < tally.mutants / 10 {
        problems.push(format!(
            "only {} of {} mutants changed what the commands read",
            tally.changed, tally.mutants
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The output rule can fail: a raw escape or C1 control is caught, escaped text passes.
#[test]
fn raw_control_characters_in_output_are_caught() {
    let mut o = engine::Outputs::default();
    o.texts.push(("ps", "  1 init\n  2 kthreadd\t[x]".into()));
    assert_eq!(o.raw_control(), None);
    o.texts.push((
        "ps",
        vmi_core::kernel::escape(b"\x1b[2Jevil\x9b\x07").to_string(),
    ));
    assert_eq!(o.raw_control(), None);
    o.texts.push(("lsmod", "mod \u{1b}[2J".into()));
    assert!(o.raw_control().is_some_and(|r| r.starts_with("lsmod")));
    let mut o = engine::Outputs::default();
    o.texts.push(("check", "x \u{9b}31m".into()));
    assert!(o.raw_control().is_some());
}
