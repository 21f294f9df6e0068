//! `policy`: what the policy file ([`crate::policy::Policy`]) forbids: process names,
//! executables (read from `mm->exe_file`, the path rebuilt across mounts), and root
//! processes of users not allowed to be root, listening sockets not allowed (read from
//! each process's open files). Kernel threads are not checked, nor processes that have
//! exited and wait for their parent to reap them (zombies: they run nothing).

use vmi_core::memory::PhysicalMemory;

use crate::checks::{CheckFailure, Scan};
use crate::finding::{guest_str, Finding, Severity};
use crate::policy::Policy;

const NAME: &str = "policy";

/// Run the check with `policy`.
pub fn run<M: PhysicalMemory>(
    scan: &Scan<'_, M>,
    policy: &Policy,
) -> Result<Vec<Finding>, CheckFailure> {
    let procs = scan.processes()?;
    let mut findings = Vec::new();
    // a zombie leader whose other threads still run is a running process
    let exited = |p: &vmi_core::kernel::Process| p.exit_state != 0 && p.threads.len() <= 1;
    for p in procs.iter().filter(|p| !p.is_kernel_thread() && !exited(p)) {
        let comm = guest_str(&p.comm);
        let id = format!("{}:{}", p.pid, p.start_time);
        let base = |rule: &str, sev: Severity, summary: String| {
            Finding::new(NAME, sev, format!("{NAME}:{rule}:{id}"), summary)
                .num("pid", u64::from(p.pid))
                .text("comm", comm.clone())
                .num("uid", u64::from(p.uid))
                .num("euid", u64::from(p.euid))
                .text("rule", rule.to_string())
        };
        if policy.deny_names.iter().any(|n| n.as_bytes() == p.comm) {
            findings.push(base(
                "deny_names",
                Severity::Medium,
                format!(
                    "process {} ({comm}) runs: its name is denied by the policy",
                    p.pid
                ),
            ));
        }
        if !policy.deny_exe.is_empty() {
            match scan.kernel.exe_path(p.mm) {
                Ok(Some(path)) => {
                    if let Some(g) = policy.denied_exe(&path) {
                        let path = guest_str(&path);
                        findings.push(
                            base(
                                "deny_exe",
                                Severity::Medium,
                                format!(
                                    "process {} ({comm}) runs {path}, which the policy denies ({g})",
                                    p.pid
                                ),
                            )
                            .text("exe", path)
                            .text("pattern", g.to_string()),
                        );
                    }
                }
                Ok(None) => {}
                Err(e) => findings.push(base(
                    "deny_exe",
                    Severity::Low,
                    format!(
                        "the executable of process {} ({comm}) cannot be read, so the policy cannot be applied to it: {e}",
                        p.pid
                    ),
                )),
            }
        }
        if policy.allow_listen.is_some() {
            match scan.kernel.sockets(p.task) {
                Ok(socks) => {
                    for s in socks.iter().filter(|s| s.is_listening()) {
                        let proto = s.protocol_name();
                        if policy.listen_allowed(&proto, s.local.1) {
                            continue;
                        }
                        let local = crate::render::endpoint(&s.local);
                        let mut f = base(
                            "allow_listen",
                            Severity::Medium,
                            format!(
                                "process {} ({comm}) listens on {proto} {local}, which the policy does not allow",
                                p.pid
                            ),
                        )
                        .text("protocol", proto.clone())
                        .text("local", local.clone())
                        .num("port", u64::from(s.local.1))
                        .num("fd", u64::from(s.fd))
                        .num("inode", s.inode);
                        f.key = format!("{NAME}:allow_listen:{id}:{proto}:{local}");
                        findings.push(f);
                    }
                }
                Err(e) => findings.push(base(
                    "allow_listen",
                    Severity::Low,
                    format!(
                        "the open files of process {} ({comm}) cannot be read, so the policy cannot be applied to its sockets: {e}",
                        p.pid
                    ),
                )),
            }
        }
        if let Some(allowed) = &policy.root_uids {
            if p.euid == 0 && !allowed.contains(&p.uid) {
                findings.push(base(
                    "root_uids",
                    Severity::Medium,
                    format!(
                        "process {} ({comm}) runs as root for uid {}, which the policy does not allow to be root",
                        p.pid, p.uid
                    ),
                ));
            }
        }
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use crate::checks::synthetic::{ev, run_on, system};
    use crate::checks::{Check, CheckFailure, Settings};
    use crate::finding::{Finding, Severity};
    use crate::policy::Policy;
    use vmi_core::testing::SyntheticKernel;

    const CHECK: Check = Check::Policy;

    fn with_policy(sk: SyntheticKernel, policy: &str) -> Vec<Finding> {
        let settings = Settings {
            policy: Some(Policy::parse(policy).unwrap()),
            ..Settings::default()
        };
        run_on(sk, &[], &settings, CHECK).unwrap()
    }

    #[test]
    fn clean_under_a_policy_the_system_keeps() {
        let s = system();
        let findings = with_policy(s.sk, "deny_names = [\"nc\"]\nroot_uids = [0]");
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn a_denied_name_and_a_root_the_policy_does_not_allow() {
        let mut s = system();
        s.sk.add_process(3333, b"nc", 1000);
        // bash's effective uid becomes root: uid 1000 may not be root
        s.sk.set_u32(s.bash.cred, "cred", "euid", 0);
        let findings = with_policy(s.sk, "deny_names = [\"nc\"]\nroot_uids = [0]");
        assert_eq!(findings.len(), 2, "{findings:#?}");
        let by_rule = |r: &str| findings.iter().find(|f| ev(f, "rule") == r).unwrap();
        let nc = by_rule("deny_names");
        assert_eq!((nc.check, nc.severity), ("policy", Severity::Medium));
        assert_eq!(ev(nc, "pid"), "3333");
        let root = by_rule("root_uids");
        assert_eq!(ev(root, "uid"), "1000");
        assert_eq!(ev(root, "euid"), "0");
    }

    #[test]
    fn a_zombie_runs_nothing_the_policy_could_forbid() {
        let mut s = system();
        let nc = s.sk.add_process(3333, b"nc", 0);
        s.sk.set_u32(nc.task, "task_struct", "exit_state", 16); // EXIT_ZOMBIE
        let findings = with_policy(s.sk, "deny_names = [\"nc\"]\nroot_uids = [1000]");
        // the other root processes of the system are still reported, the zombie is not
        assert!(!findings.is_empty());
        assert!(
            findings.iter().all(|f| ev(f, "pid") != "3333"),
            "{findings:#?}"
        );
    }

    #[test]
    fn an_executable_the_policy_denies() {
        let mut s = system();
        let miner = s.sk.add_process(2500, b"miner", 1000);
        s.sk.exec(&miner, b"/tmp/miner", &[b"miner"], b"/tmp/miner");
        let findings = with_policy(s.sk, "deny_exe = [\"/tmp/*\"]");
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(ev(&findings[0], "exe"), "/tmp/miner");
        assert_eq!(ev(&findings[0], "pattern"), "/tmp/*");
    }

    #[test]
    fn without_a_policy_it_cannot_run() {
        let e = run_on(system().sk, &[], &Settings::default(), CHECK).unwrap_err();
        assert!(
            matches!(
                e,
                CheckFailure::Walk {
                    walk: "a policy file",
                    ..
                }
            ),
            "{e}"
        );
    }
}
