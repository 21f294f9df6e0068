//! `verify` on the clean guest: every rule passes (or does not apply) with the right
//! profile, read live and paused; a profile with one offset moved fails the rule that
//! reads it, and a profile of another build fails discovery, naming the builds.

use super::*;

/// `verify --json` with the profile `file` on the live guest.
fn verify_with(guest: &mut Guest, file: &Path, pause: bool) -> Run {
    guest.release_qmp();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_detector"));
    cmd.arg("--qemu")
        .arg(guest.qmp_socket())
        .arg("--profile")
        .arg(file)
        .args(["--json", "verify"]);
    if pause {
        cmd.arg("--pause");
    }
    let out = cmd.output().expect("running detector");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// (rule, outcome) of a verify report.
fn outcomes(run: &Run) -> Vec<(String, String)> {
    run.json()["rules"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["rule"].as_str().unwrap_or("").to_string(),
                        r["outcome"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The profile in `profiles` (the only file there), as JSON.
fn the_profile(profiles: &Path) -> (PathBuf, Value) {
    let file = std::fs::read_dir(profiles)
        .expect("profiles")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("a profile");
    let v = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    (file, v)
}

pub(crate) fn verify_step(label: &str, guest: &mut Guest, profiles: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let (file, profile) = the_profile(profiles);
    for pause in [true, false] {
        let run = verify_with(guest, &file, pause);
        let got = outcomes(&run);
        let rules: Vec<&str> = got.iter().map(|(r, _)| r.as_str()).collect();
        // discovery first, then the library's rules in order
        let want: Vec<&str> = ["discovery"]
            .into_iter()
            .chain(detector::verify::RULES.iter().copied())
            .collect();
        let bad: Vec<&(String, String)> = got
            .iter()
            .filter(|(_, o)| o != "pass" && o != "n/a")
            .collect();
        // live (not paused), a task may start or end, and a file close, between the
        // reads of one rule
        let moving = [
            "pid-namespace",
            "runqueues",
            "open-files",
            "process-memory",
            "sockets",
            "walks",
        ];
        let transient = !pause && bad.iter().all(|(r, _)| moving.contains(&r.as_str()));
        if run.code != 0 && !transient || rules != want || !bad.is_empty() && !transient {
            problems.push(format!(
                "{label}: verify (pause {pause}) exit {}: {}\n{}",
                run.code, run.stdout, run.stderr
            ));
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // one offset moved: task_struct.tgid
    let mut wrong = profile.clone();
    let tgid = &mut wrong["types"]["task_struct"]["fields"]["tgid"]["offset"];
    *tgid = (tgid.as_u64().expect("tgid offset") + 8).into();
    let moved = dir.path().join("moved.json");
    std::fs::write(&moved, wrong.to_string()).unwrap();
    let run = verify_with(guest, &moved, true);
    let failed: Vec<String> = outcomes(&run)
        .into_iter()
        .filter(|(_, o)| o == "fail")
        .map(|(r, _)| r)
        .collect();
    if run.code != 1 || !failed.contains(&"thread-groups".to_string()) {
        problems.push(format!(
            "{label}: verify with task_struct.tgid moved: exit {}, failed {failed:?}: {}",
            run.code, run.stdout
        ));
    }
    // another build: its banner is not the guest's
    let mut other = profile;
    other["kernel"]["banner"] = "Linux version 6.1.0-other (vmi@elsewhere) #2 SMP\n".into();
    let other_file = dir.path().join("other.json");
    std::fs::write(&other_file, other.to_string()).unwrap();
    let run = verify_with(guest, &other_file, false);
    let discovery = run.json()["rules"][0].clone();
    if run.code != 1 || discovery["outcome"] != "fail" {
        problems.push(format!(
            "{label}: verify with another build's profile: exit {}: {}",
            run.code, run.stdout
        ));
    }
    problems
}
