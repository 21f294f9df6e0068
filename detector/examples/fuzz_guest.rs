//! The guest-memory fuzzer's long mode (issue 23; `scripts/fuzz-guest.sh`): lab dumps
//! (Debian 6.1 clean and with the test rootkits, sockets and BPF programs, the newest
//! 7.x with sockets and BPF programs) mutated by the
//! profile's layout, every command run on each mutant (`tests/fuzz/engine.rs`).
//!
//! ```text
//! fuzz_guest DIR [--seed S] [--mutants N | --minutes M] [--bound-ms MS]   (CPU time per run)
//! fuzz_guest DIR --replay DUMP:SEED:INDEX
//! ```
//!
//! DIR keeps the dumps and profiles between runs (made by booting lab guests when
//! missing). Mutants go round the dumps; a problem is printed with its seed and index,
//! which `--replay` runs again alone. Exit 1 when anything went wrong.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/fuzz/engine.rs"]
mod engine;

use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!("usage: fuzz_guest DIR [--seed S] [--mutants N | --minutes M] [--bound-ms MS] [--replay DUMP:SEED:INDEX]");
        std::process::exit(2)
    };
    let Some(dir) = args.first().map(PathBuf::from) else {
        usage()
    };
    let mut seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(23, |d| d.as_secs());
    let (mut mutants, mut minutes, mut bound_ms, mut replay) = (None, None, 2000u64, None);
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_else(|| usage());
        match a.as_str() {
            "--seed" => seed = val().parse().unwrap_or_else(|_| usage()),
            "--mutants" => mutants = Some(val().parse::<u64>().unwrap_or_else(|_| usage())),
            "--minutes" => minutes = Some(val().parse::<f64>().unwrap_or_else(|_| usage())),
            "--bound-ms" => bound_ms = val().parse().unwrap_or_else(|_| usage()),
            "--replay" => replay = Some(val()),
            _ => usage(),
        }
    }
    std::fs::create_dir_all(&dir).expect("creating DIR");
    let lab = vmi_lab::Lab::open_default().expect("lab");
    let specs = engine::prepare(&lab, &dir);
    let bound = Duration::from_millis(bound_ms);
    let mut fuzzers: Vec<engine::Fuzzer> = specs
        .iter()
        .map(|s| {
            let f = engine::Fuzzer::open(&s.name, &s.elf, &s.profile, Some(&s.image), bound)
                .unwrap_or_else(|e| panic!("{e}"));
            println!("{}: {}", s.name, f.census());
            f
        })
        .collect();
    if let Some(r) = replay {
        let parts: Vec<&str> = r.split(':').collect();
        let [name, s, i] = parts.as_slice() else {
            usage()
        };
        let f = fuzzers
            .iter()
            .find(|f| f.name == *name)
            .unwrap_or_else(|| usage());
        let m = f.mutant(
            s.parse().unwrap_or_else(|_| usage()),
            i.parse().unwrap_or_else(|_| usage()),
        );
        println!("mutant: {}", m.describe(&f.sites));
        let o = f.run_one(&m);
        println!(
            "{:.2?} ({:.2?} CPU), heap {} KiB: {:?}",
            o.took,
            o.cpu,
            o.heap >> 10,
            o.problem
        );
        println!("{}\n{}\n{:?}", o.times, o.summary, o.check_errors);
        for (check, heap, took) in f.per_check(&m) {
            println!("  check {check}: {took:.1?}, heap {} KiB", heap >> 10);
        }
        std::process::exit(i32::from(o.problem.is_some()));
    }
    // each dump as it is first: a baseline that must be clean
    let mut tally = engine::Tally::default();
    for f in &mut fuzzers {
        let o = f.baseline();
        println!(
            "{} unmutated: {:.2?}, heap {} MiB: {}; {:?}",
            f.name,
            o.took,
            o.heap >> 20,
            o.summary,
            o.check_errors
        );
        let none = engine::Mutant {
            index: u64::MAX,
            mutations: vec![],
        };
        tally.add(f, seed, &none, &o);
    }
    println!("seed {seed}");
    let start = Instant::now();
    let deadline = minutes.map(|m| start + Duration::from_secs_f64(m * 60.0));
    let mut i = 0u64;
    loop {
        if mutants.is_some_and(|n| i >= n) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if mutants.is_none() && deadline.is_none() && i >= 100 {
            break;
        }
        let f = &fuzzers[(i % fuzzers.len() as u64) as usize];
        let m = f.mutant(seed, i);
        let o = f.run_one(&m);
        tally.add(f, seed, &m, &o);
        if o.problem.is_some() {
            println!("{}", tally.problems.last().expect("just added"));
        }
        if matches!(o.problem, Some(engine::Problem::Hang)) {
            println!("a run hangs (its thread is left running): stopping");
            break;
        }
        i += 1;
        if i.is_multiple_of(200) {
            println!("[{:.0?}] {}", start.elapsed(), tally.line());
        }
    }
    println!("seed {seed}, {:.0?}: {}", start.elapsed(), tally.line());
    if let Some((t, m)) = &tally.slowest {
        println!("slowest ({t:.2?}): {m}");
    }
    if let Some((h, m)) = &tally.heaviest {
        println!("most heap ({} KiB): {m}", h >> 10);
    }
    std::process::exit(i32::from(!tally.clean()));
}
