//! The policy check on the clean guest: each rule finds exactly the processes the
//! guest says it should.

use super::*;

/// The policy check on the clean guest: each rule finds exactly the processes the guest
/// says it should, and an allowing policy finds nothing.
pub(crate) fn policy(
    kernel: &str,
    d: &Detector,
    guest: &mut Guest,
    truth: &GroundTruth,
    dir: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    let file = dir.join("policy.toml");
    let run_with = |guest: &mut Guest, text: &str| run_policy(d, guest, &file, text);
    let user = |p: &&vmi_lab::truth::Process| !p.is_kernel_thread();
    let sleeper = pid_of(truth, "lab-sleeper");
    let chains: Vec<u32> = truth.by_comm("lab-chain").map(|p| p.pid).collect();
    let roots: Vec<u32> = truth
        .processes
        .iter()
        .filter(user)
        .filter(|p| p.euid == 0)
        .map(|p| p.pid)
        .collect();
    let mut wants = vec![want("lab-sleeper by name", "policy", move |e| {
        e["rule"] == "deny_names" && e["pid"] == sleeper
    })];
    for pid in chains {
        wants.push(want(
            &format!("lab-chain {pid} by path"),
            "policy",
            move |e| e["rule"] == "deny_exe" && e["pid"] == pid && e["exe"] == "/bin/lab-chain",
        ));
    }
    for pid in roots {
        wants.push(want(&format!("root process {pid}"), "policy", move |e| {
            e["rule"] == "root_uids" && e["pid"] == pid
        }));
    }
    let run = run_with(
        guest,
        "deny_names = [\"lab-sleeper\"]\ndeny_exe = [\"/bin/lab-ch*\"]\nroot_uids = [1]\n",
    );
    problems.extend(expect_exactly(&format!("{kernel} policy"), &run, &wants));
    let run = run_with(
        guest,
        "deny_names = [\"nc\"]\ndeny_exe = [\"/tmp/*\"]\nroot_uids = [0]\n",
    );
    problems.extend(expect_exactly(
        &format!("{kernel} allowing policy"),
        &run,
        &[],
    ));
    problems
}

/// `check --check CHECK` (`policy` by default) on the live guest with `text` written
/// to the policy `file`.
pub(crate) fn run_policy(d: &Detector, guest: &mut Guest, file: &Path, text: &str) -> Run {
    run_check_with_policy(d, guest, file, text, "policy")
}

pub(crate) fn run_check_with_policy(
    d: &Detector,
    guest: &mut Guest,
    file: &Path,
    text: &str,
    check: &str,
) -> Run {
    std::fs::write(file, text).unwrap();
    d.live(
        guest,
        &[
            "--json",
            "--policy",
            file.to_str().unwrap(),
            "check",
            "--check",
            check,
        ],
    )
}
