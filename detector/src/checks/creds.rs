//! `credentials`: user tasks must not share `init_cred`, and a credential's `uid` must
//! be the uid of its `user_struct`.
//!
//! - `init_cred` belongs to the kernel's own threads; a user task pointing to it
//!   (`task->cred = &init_cred`) was given full root by a module.
//! - The kernel sets `cred->uid` only through paths that also switch `cred->user`
//!   (`set_user()`); an escalation that writes the ids of a `struct cred` directly
//!   (`prepare_creds()`, ids set to 0, `commit_creds()`: the usual rootkit "give me
//!   root") leaves `user` pointing to the old uid's `user_struct`.
//! - Subjective credentials (`cred`) that are root while the objective ones
//!   (`real_cred`) are not: the kernel overrides credentials only briefly, so a scan
//!   that sees it twice (live guests are confirmed by a second read) is suspicious.

use vmi_core::kernel::creds::CredIds;
use vmi_core::memory::PhysicalMemory;
use vmi_core::Va;

use crate::checks::{CheckFailure, Scan};
use crate::finding::{guest_str, Finding, Severity};

const NAME: &str = "credentials";

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    let procs = scan.processes()?;
    let init_cred = scan.kernel.symbol("init_cred")?;
    let mut findings = Vec::new();
    for p in procs.iter().filter(|p| !p.is_kernel_thread()) {
        let comm = guest_str(&p.comm);
        let mut tasks: Vec<(Va, u32)> = vec![(p.task, p.pid)];
        tasks.extend(
            p.threads
                .iter()
                .filter(|t| t.task != p.task)
                .map(|t| (t.task, t.tid)),
        );
        for (task, tid) in tasks {
            let c = scan.kernel.task_creds(task)?;
            let base = |key: String, sev: Severity, summary: String| {
                Finding::new(NAME, sev, key, summary)
                    .num("pid", u64::from(p.pid))
                    .num("tid", u64::from(tid))
                    .text("comm", comm.clone())
                    .addr("task", task.0)
            };
            // one struct cred serves both unless the kernel overrides the subjective one
            let sets: &[(&'static str, &CredIds)] = if c.subjective.addr == c.real.addr {
                &[("cred", &c.real)]
            } else {
                &[("real_cred", &c.real), ("cred", &c.subjective)]
            };
            for &(which, ids) in sets {
                if ids.addr == init_cred {
                    findings.push(
                        base(
                            format!("{NAME}:init_cred:{which}:{:#x}", task.0),
                            Severity::High,
                            format!(
                                "user task {tid} of process {} ({comm}) uses init_cred as {}: the kernel's own root credentials were handed to it",
                                p.pid,
                                describe(which, sets.len())
                            ),
                        )
                        .addr(which, ids.addr.0)
                        .addr("init_cred", init_cred.0),
                    );
                } else if ids.uid != ids.user_uid {
                    findings.push(
                        base(
                            format!("{NAME}:uid:{which}:{:#x}:{}", task.0, ids.uid),
                            Severity::High,
                            format!(
                                "task {tid} of process {} ({comm}) has uid {} in {} but the user_struct of uid {}: the ids were written directly, not set by the kernel",
                                p.pid,
                                ids.uid,
                                describe(which, sets.len()),
                                ids.user_uid
                            ),
                        )
                        .addr(which, ids.addr.0)
                        .num("uid", u64::from(ids.uid))
                        .num("euid", u64::from(ids.euid))
                        .num("user_struct_uid", u64::from(ids.user_uid)),
                    );
                }
            }
            if c.subjective.addr != c.real.addr && is_root(&c.subjective) && !is_root(&c.real) {
                findings.push(
                    base(
                        format!("{NAME}:override:{:#x}:{:#x}", task.0, c.subjective.addr.0),
                        Severity::Medium,
                        format!(
                            "task {tid} of process {} ({comm}) acts as root (cred euid {}) while its real credentials are uid {} euid {}",
                            p.pid, c.subjective.euid, c.real.uid, c.real.euid
                        ),
                    )
                    .addr("cred", c.subjective.addr.0)
                    .addr("real_cred", c.real.addr.0),
                );
            }
        }
    }
    Ok(findings)
}

/// "its cred", or "its credentials (cred and real_cred)" when one struct serves both.
fn describe(which: &str, sets: usize) -> String {
    if sets == 1 {
        "its credentials (cred and real_cred)".into()
    } else {
        format!("its {which}")
    }
}

fn is_root(c: &CredIds) -> bool {
    c.euid == 0 || c.fsuid == 0
}

#[cfg(test)]
mod tests {
    use crate::checks::synthetic::{assert_fails, ev, ev_addr, run, single, system};
    use crate::checks::{Check, CheckFailure};
    use crate::finding::Severity;

    const CHECK: Check = Check::Credentials;

    #[test]
    fn clean() {
        assert!(run(system().sk, CHECK).is_empty());
    }

    #[test]
    fn a_user_task_with_init_cred_is_found() {
        let mut s = system();
        let init_cred = s.sk.symbol("init_cred");
        for f in ["cred", "real_cred"] {
            s.sk.set(s.bash.task, "task_struct", f, init_cred.0);
        }
        let findings = run(s.sk, CHECK);
        // the leader; its thread shares the old cred
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(
            f.key,
            format!("credentials:init_cred:cred:{:#x}", s.bash.task.0)
        );
        assert_eq!(ev(f, "tid"), "1000");
        assert_eq!(ev_addr(f, "init_cred"), init_cred.0);
    }

    #[test]
    fn ids_written_directly_disagree_with_the_user_struct() {
        let mut s = system();
        for f in ["uid", "euid", "suid", "fsuid"] {
            s.sk.set_u32(s.bash.cred, "cred", f, 0);
        }
        let findings = run(s.sk, CHECK);
        // leader and thread share the cred: one finding each
        assert_eq!(findings.len(), 2, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.severity, Severity::High);
        assert_eq!(
            f.key,
            format!("credentials:uid:cred:{:#x}:0", s.bash.task.0)
        );
        assert_eq!(ev(f, "user_struct_uid"), "1000");
        assert_eq!(ev(&findings[1], "tid"), "1001");
    }

    #[test]
    fn a_root_subjective_cred_over_user_real_creds_is_found() {
        let mut s = system();
        let root = s.sk.new_cred(0);
        s.sk.set(s.bash_thread.task, "task_struct", "cred", root.0);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::Medium);
        assert_eq!(
            f.key,
            format!(
                "credentials:override:{:#x}:{:#x}",
                s.bash_thread.task.0, root.0
            )
        );
        assert_eq!(ev_addr(f, "real_cred"), s.bash.cred.0);
    }

    #[test]
    fn a_wild_user_pointer_is_an_error() {
        let mut s = system();
        s.sk.set(s.sshd.cred, "cred", "user", 0x1000);
        assert_fails!(
            s.sk,
            CHECK,
            CheckFailure::Kernel(vmi_core::kernel::KernelError::BadPointer {
                what: "cred.user",
                ..
            })
        );
    }
}
