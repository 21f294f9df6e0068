//! Profile mutation on kept dumps (issue 22; the CI test is `tests/mutation.rs`): every
//! needed field and symbol of the 6.1 and 7.x profiles moved, one at a time, judged by
//! `verify` and by every command's output (`tests/mutation/engine.rs`), printed as a
//! table: `caught RULE`, `same` or `DIFFERS COMMAND`, one line per mutant.
//!
//! ```text
//! mutate_profile DIR [NAME...]     (DIR: the fuzzer's dumps, made when missing)
//! ```

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/fuzz/engine.rs"]
mod engine;
#[path = "../tests/mutation/engine.rs"]
mod mutation;

use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first().map(PathBuf::from) else {
        eprintln!("usage: mutate_profile DIR [NAME...]");
        std::process::exit(2)
    };
    let only: Vec<&String> = args[1..].iter().collect();
    std::fs::create_dir_all(&dir).expect("creating DIR");
    let lab = vmi_lab::Lab::open_default().expect("lab");
    let specs = engine::prepare(&lab, &dir);
    let find = |n: &str| specs.iter().find(|s| s.name == n).expect("a dump");
    let mut bad = 0;
    for (short, verify, busy) in mutation::DUMPS {
        let (v, b) = (find(verify), find(busy));
        let judge = mutation::Judge::open(&b.profile, &v.elf, &b.elf, Some(&b.image))
            .unwrap_or_else(|e| panic!("{e}"));
        judge.deterministic().unwrap_or_else(|e| panic!("{e}"));
        println!(
            "# {short}: {} rules pass; {}",
            judge.passing.len(),
            judge.summary()
        );
        let ms = mutation::mutations(&judge.profile);
        let (mut caught, mut same, mut differs) = (0, 0, 0);
        for m in ms
            .iter()
            .filter(|m| only.is_empty() || only.iter().any(|o| m.name == **o))
        {
            let t = std::time::Instant::now();
            let v = judge.judge(m);
            let took = t.elapsed();
            let unread = if m.unread { " (unread)" } else { "" };
            match &v {
                mutation::Verdict::Caught { rule, detail } => {
                    caught += 1;
                    println!(
                        "{short} {} {}{unread}: caught {rule}: {detail:.120} [{took:.0?}]",
                        m.name, m.how
                    )
                }
                mutation::Verdict::Same => {
                    same += 1;
                    println!("{short} {} {}{unread}: same [{took:.0?}]", m.name, m.how)
                }
                mutation::Verdict::Differs { command, detail } => {
                    differs += 1;
                    bad += 1;
                    println!(
                        "{short} {} {}{unread}: DIFFERS {command}: {detail} [{took:.0?}]",
                        m.name, m.how
                    )
                }
            }
        }
        println!("# {short}: {caught} caught, {same} same, {differs} differ");
    }
    std::process::exit(i32::from(bad > 0));
}
