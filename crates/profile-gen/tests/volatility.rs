//! The ISF written by `profile-gen --full --format isf` is what Volatility 3 expects: it
//! validates against Volatility's own ISF 6.2.0 JSON Schema, and `vol linux.pslist` on an
//! ELF dump of a lab guest lists exactly the processes the guest itself reports.
//!
//! Volatility 3 (pinned, from PyPI) lives in a venv the lab makes once in its cache.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Instant;

use vmi_lab::python::{Venv, JSONSCHEMA, VOLATILITY};
use vmi_lab::{BootOptions, GroundTruth, Lab, Scenario, DEFAULT_KERNEL};

/// (pid, ppid, comm) of every process (thread-group leader), comm as `task_struct.comm`
/// holds it: at most 15 bytes, and without the workqueue suffix `/proc` adds to kworkers.
fn processes(truth: &GroundTruth) -> BTreeSet<(u32, u32, String)> {
    truth
        .processes
        .iter()
        .filter(|p| p.pid == p.tgid)
        .map(|p| {
            let mut comm = p.comm.clone();
            if comm.starts_with("kworker/") {
                if let Some(i) = comm.find('-') {
                    comm.truncate(i);
                }
            }
            let mut end = comm.len().min(15);
            while !comm.is_char_boundary(end) {
                end -= 1;
            }
            comm.truncate(end);
            (p.pid, p.ppid, comm)
        })
        .collect()
}

fn parse_pslist_csv(text: &str) -> BTreeSet<(u32, u32, String)> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with("TreeDepth,"));
    let header: Vec<&str> = lines.next().expect("a CSV header").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    let (pid, ppid, comm) = (col("PID"), col("PPID"), col("COMM"));
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[pid].parse().expect("a pid"),
                f[ppid].parse().expect("a ppid"),
                f[comm].trim_matches('"').to_string(),
            )
        })
        .collect()
}

#[test]
fn volatility_pslist_on_a_lab_dump_matches_the_guest() {
    let lab = Lab::open_default().expect("lab cache");
    let dbg = lab.store().debug(DEFAULT_KERNEL).expect("-dbg package");
    let dir = tempfile::tempdir().expect("tempdir");
    let symbols = dir.path().join("symbols");
    std::fs::create_dir_all(symbols.join("linux")).unwrap();
    let isf = symbols.join("linux").join(format!("{}.json", dbg.abi));

    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_profile-gen"))
        .arg(&dbg.vmlinux)
        .arg(&dbg.system_map)
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
        "ISF for {}: {} bytes in {:.1?} (test build)",
        dbg.abi,
        std::fs::metadata(&isf).unwrap().len(),
        started.elapsed()
    );

    let venv = Venv::ensure(lab.cache(), &[VOLATILITY, JSONSCHEMA]).expect("volatility venv");
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
             print(len(isf['user_types']), len(isf['enums']), len(isf['symbols']))",
        )
        .arg(&isf)
        .arg(&schema)
        .output()
        .expect("run python");
    assert!(
        check.status.success(),
        "the ISF does not validate against Volatility's schema: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    eprintln!(
        "schema ok; user_types enums symbols: {}",
        String::from_utf8_lossy(&check.stdout).trim()
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
    guest.shutdown().expect("shutdown");
    let want = processes(&truth);

    let volcache = dir.path().join("volcache");
    std::fs::create_dir_all(&volcache).unwrap();
    let started = Instant::now();
    let vol = Command::new(venv.bin("vol"))
        .args(["-q", "-r", "csv", "-s"])
        .arg(&symbols)
        .arg("--cache-path")
        .arg(&volcache)
        .arg("-f")
        .arg(&dump)
        .arg("linux.pslist")
        .current_dir(dir.path())
        .output()
        .expect("run vol");
    let stdout = String::from_utf8_lossy(&vol.stdout);
    assert!(
        vol.status.success() && stdout.contains("TreeDepth,"),
        "vol linux.pslist failed ({}):\n{stdout}\n{}",
        vol.status,
        String::from_utf8_lossy(&vol.stderr)
    );
    eprintln!("vol linux.pslist: {:.1?}", started.elapsed());
    let got = parse_pslist_csv(&stdout);
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "Volatility's pslist differs from the guest's own list.\nonly in the guest: {missing:?}\nonly in Volatility: {extra:?}"
    );
    assert!(
        want.len() > 40,
        "a standard guest runs more than 40 processes"
    );
    assert!(want.iter().any(|(_, _, c)| c == "lab-user"));
}
