//! Profile mutation (issue 22): every needed field and symbol of the 6.1 and newest 7.x
//! profiles (from their boot images' BTF, as users make them) moved by ±8 bytes and onto
//! another needed field's offset, one at a time, against lab dumps of those kernels
//! (`mutation/engine.rs`). `verify` must catch every mutant not listed in
//! `tests/data/mutation-not-caught.txt`: a rule that passes with the right profile
//! fails, or discovery does. A mutant no rule catches is run through every command and
//! compared with the right profile's outputs, and the table (caught / same / differs)
//! is printed.
//!
//! The file lists what `verify` does not catch yet: a ratchet, for issue 22 to empty.
//! A mutant caught in this run can leave it (the test prints those); a mutant not on it
//! that this run does not catch fails the test.

#[path = "common/mod.rs"]
mod common;
#[path = "fuzz/engine.rs"]
mod engine;
#[path = "mutation/engine.rs"]
mod mutation;
use std::collections::BTreeSet;

use mutation::Verdict;

/// What `verify` does not catch yet: `KERNEL VALUE HOW`, one mutant a line, with how
/// it came out after `#`. `UPDATE_MUTATION=1` adds this run's (kept sorted).
const NOT_YET_CAUGHT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/mutation-not-caught.txt"
);

fn key(kernel: &str, m: &mutation::Mutation) -> String {
    format!("{kernel} {} {}", m.name, m.how)
}

#[test]
fn every_moved_field_and_symbol_is_caught_by_verify() {
    let lab = vmi_lab::Lab::open_default().expect("lab");
    let dir = tempfile::tempdir().expect("tempdir");
    let specs = engine::prepare(&lab, dir.path());
    let find = |n: &str| specs.iter().find(|s| s.name == n).expect("a dump");
    let listed: BTreeSet<String> = std::fs::read_to_string(NOT_YET_CAUGHT)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('#').next())
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .collect();
    let (mut problems, mut missed, mut lines) = (Vec::new(), BTreeSet::new(), Vec::new());
    for (kernel, verify, busy) in mutation::DUMPS {
        let (v, b) = (find(verify), find(busy));
        let judge = mutation::Judge::open(&b.profile, &v.elf, &b.elf, Some(&b.image))
            .unwrap_or_else(|e| panic!("{kernel}: {e}"));
        // with the right profile: no rule fails on the clean guest (and most apply),
        // and the commands repeat themselves
        assert!(
            judge.failing.is_empty() && judge.passing.len() + 2 >= detector::verify::RULES.len(),
            "{kernel}: with the right profile {:?} pass, and fail: {:?}",
            judge.passing,
            judge.failing
        );
        judge
            .deterministic()
            .unwrap_or_else(|e| panic!("{kernel}: {e}"));
        eprintln!("{kernel}: {}", judge.summary());
        let (mut caught, mut same, mut differs, mut n) = (0, 0, 0, 0);
        for m in mutation::mutations(&judge.profile) {
            n += 1;
            let verdict = judge.judge(&m);
            let line = match &verdict {
                Verdict::Caught { rule, .. } => {
                    caught += 1;
                    format!("caught by {rule}")
                }
                Verdict::Same => {
                    same += 1;
                    "not caught, every output the same".into()
                }
                Verdict::Differs { command, detail } => {
                    differs += 1;
                    format!("not caught, {command} differs: {detail}")
                }
            };
            let unread = if m.unread { " (read by no reader)" } else { "" };
            eprintln!("{kernel} {} {}{unread}: {line}", m.name, m.how);
            if !matches!(verdict, Verdict::Caught { .. }) {
                let k = key(kernel, &m);
                let class = match (&verdict, m.unread) {
                    (Verdict::Same, true) => "same: no reader reads it",
                    (Verdict::Same, false) => "same",
                    _ => "differs",
                };
                lines.push(format!("{k:<72} # {class}"));
                if !listed.contains(&k) {
                    problems.push(format!("{k}: {line}"));
                }
                missed.insert(k);
            }
        }
        eprintln!(
            "{kernel}: {n} mutants: {caught} caught, {same} not caught with the same outputs, {differs} not caught with other outputs"
        );
    }
    let now_caught: Vec<&String> = listed.iter().filter(|k| !missed.contains(*k)).collect();
    if !now_caught.is_empty() {
        eprintln!(
            "caught in this run, can leave the list: {}",
            now_caught
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if std::env::var_os("UPDATE_MUTATION").is_some() {
        // this run's lines, and the listed ones this run caught (another boot may not)
        let mut all: BTreeSet<String> = lines.into_iter().collect();
        let text = std::fs::read_to_string(NOT_YET_CAUGHT).unwrap_or_default();
        all.extend(
            text.lines()
                .filter(|l| {
                    l.split('#')
                        .next()
                        .is_some_and(|k| !missed.contains(k.trim()))
                })
                .filter(|l| !l.trim().is_empty() && !l.starts_with("//"))
                .map(str::to_string),
        );
        let mut out = String::from(
            "// What `verify` does not catch yet (tests/mutation.rs): KERNEL VALUE HOW # how it came out\n",
        );
        for l in all {
            out.push_str(&l);
            out.push('\n');
        }
        std::fs::write(NOT_YET_CAUGHT, out).expect("writing the list");
        return;
    }
    assert!(
        problems.is_empty(),
        "verify does not catch (and the list does not say so):\n{}",
        problems.join("\n")
    );
}
