//! `spoofing`: a user process that calls itself something it does not run.
//!
//! A process's names come from three places: `comm` (set by `execve` to the basename
//! of the file name it was given, cut to 15 bytes; `prctl(PR_SET_NAME)` changes it),
//! its executable (`mm->exe_file`, the path rebuilt across mounts: the file really
//! mapped, symlinks resolved) and its arguments (`argv[0]`, in its own memory, which
//! it may overwrite). Malware renames itself to pass for a kernel thread
//! (`kworker/0:1`) or a daemon. What is normal, and not reported:
//!
//! - symlinks and multi-call binaries: `sh` and `sleep` run as `/bin/busybox`, `vi` as
//!   `vim.basic`, `python3` as `python3.11`. `execve`'s file name (`AT_EXECFN`, the
//!   string the kernel copies above the environment) keeps the name the program was
//!   started by, so a name is accepted when it is the basename of the executable or
//!   of that file name;
//! - scripts: `comm` is the script's name, the executable the interpreter, and the
//!   kernel puts the interpreter's name as the shebang line wrote it into `argv[0]`
//!   and the script's path after it; `argv[0]` is accepted when `argv[1]` or
//!   `argv[2]` is the executed file;
//! - setproctitle: `sshd: root@pts/0`, `nginx: worker process`, a login shell's
//!   `-bash`: `argv[0]` is compared up to its first space or colon, without a leading
//!   `-`, by basename;
//! - `comm` equal to `argv[0]`'s name is accepted for `argv[0]` (a program that
//!   renames both is reported for `comm`);
//! - busybox's NOEXEC applets: its shell (and `xargs`, `find -exec`, every applet that
//!   runs commands through `spawn_and_wait`) forks and runs the applet in the child
//!   without an `execve`, naming the child after the applet (`set_task_comm`) while it
//!   keeps the forking process's arguments (`sh -c ...`, `xargs cut ...`), so a process
//!   whose executable is busybox may have any `comm` that does not pass for a kernel
//!   thread (a program that renames itself is not busybox);
//! - a process that changed while it was read (on a running guest: exited and its
//!   `mm_struct` reused by another process, whose executable and arguments would be
//!   compared with this one's `comm`; `execve`d; renamed) is judged at the next scan;
//! - a process in the middle of `execve` (its new address space installed, its
//!   arguments and environment not yet complete, `comm` perhaps still the old one) is
//!   not judged.
//!
//! Reported: `comm` that is none of those names (`prctl(PR_SET_NAME)`: threads of the
//! process may name themselves freely, only the group leader is checked), and an
//! `argv[0]` that names neither the executable, the executed file nor `comm`. High
//! when the new name is a kernel thread's (a running kernel thread has that name up
//! to its `/`, or the name is in brackets as `ps` shows kernel threads), medium
//! otherwise: some programs rename themselves openly. When the executed file name
//! cannot be read or names no program (`/proc/self/exe`: busybox's shell re-executes
//! itself for each applet, with the applet's name in `argv[0]` and `comm`;
//! `/dev/fd/N`), `argv[0]`'s basename stands in for it: a program that re-executes
//! itself through `/proc/self/exe` with a false `argv[0]` and `comm` alike is not
//! seen.

use std::collections::BTreeSet;

use vmi_core::kernel::userspace::ExecStrings;
use vmi_core::kernel::Process;
use vmi_core::memory::PhysicalMemory;

use crate::checks::{reread, unchanged, CheckFailure, Scan, READ_TRIES};
use crate::finding::{guest_str, Finding, Severity};

const NAME: &str = "spoofing";
/// `TASK_COMM_LEN - 1`.
const COMM_MAX: usize = 15;

fn basename(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

fn comm_of(name: &[u8]) -> &[u8] {
    &name[..name.len().min(COMM_MAX)]
}

/// The program name `argv[0]` gives: up to the first space or colon (setproctitle),
/// without a login shell's leading `-`, its basename.
pub fn argv0_name(argv0: &[u8]) -> &[u8] {
    let a = argv0.strip_prefix(b"-").unwrap_or(argv0);
    let end = a
        .iter()
        .position(|&b| b == b' ' || b == b':')
        .unwrap_or(a.len());
    basename(&a[..end])
}

/// What is wrong with one process's names (`exe`: its executable's path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spoof {
    /// `comm` is not a name the process was started by.
    Comm,
    /// `argv[0]` names neither the executable, the executed file nor `comm`.
    Argv0,
}

/// Judge one process: `comm`, its executable's path and what `execve` left in its
/// memory.
pub fn judge(comm: &[u8], exe: &[u8], strings: &ExecStrings) -> Vec<Spoof> {
    let argv0 = strings.argv.first().map(Vec::as_slice).unwrap_or_default();
    let mut names: Vec<&[u8]> = vec![basename(exe)];
    // the kernel names a process after the file name execve was given, even one that
    // names no program (`exe` for /proc/self/exe, until busybox renames itself)
    if let Some(f) = strings.execfn.as_deref() {
        names.push(basename(f));
    }
    let execfn = strings.execfn.as_deref().filter(|f| !names_nothing(f));
    if execfn.is_none() && !argv0.is_empty() {
        names.push(argv0_name(argv0));
    }
    let mut out = Vec::new();
    if !names.iter().any(|n| comm_of(n) == comm) {
        out.push(Spoof::Comm);
    }
    if !argv0.is_empty() {
        let name = argv0_name(argv0);
        let script = strings
            .argv
            .iter()
            .skip(1)
            .take(2)
            .any(|a| execfn == Some(a.as_slice()) || comm_of(basename(a)) == comm);
        if !(names.contains(&name) || comm_of(name) == comm || comm_of(argv0) == comm || script) {
            out.push(Spoof::Argv0);
        }
    }
    out
}

/// True for an executed file name that names no program: a program re-executing its
/// own image (`/proc/self/exe`, `/proc/PID/exe`: busybox's shell runs its applets so)
/// or an open file (`/dev/fd/N`, fexecve).
fn names_nothing(execfn: &[u8]) -> bool {
    (execfn.starts_with(b"/proc/") && execfn.ends_with(b"/exe")) || execfn.starts_with(b"/dev/fd/")
}

/// True for a process running busybox: busybox forks to run a NOEXEC applet (`cut`,
/// `awk`, `head`, ...) and names the child after the applet without an `execve`; its
/// shell does so for commands, pipelines and command substitutions, and `xargs`,
/// `find -exec` and the other applets that run commands (`spawn_and_wait`) do too. The
/// child keeps the arguments of whatever forked it (`sh -c ...`, `xargs cut ...`), so
/// its arguments cannot tell such a fork from a rename; and a program that renames
/// itself is not busybox.
fn busybox(exe: &[u8]) -> bool {
    basename(exe) == b"busybox"
}

/// True when `name` passes for a kernel thread: in brackets, or a running kernel
/// thread's name up to its `/` (`kworker/0:1` for `kworker/u2:0`).
fn kernel_thread_like(name: &[u8], kthreads: &KthreadStems) -> bool {
    (name.starts_with(b"[") && name.ends_with(b"]"))
        || (!name.is_empty() && kthreads.contains(stem(name)))
}

/// A kernel thread's name up to its `/`.
fn stem(name: &[u8]) -> &[u8] {
    name.split(|&b| b == b'/').next().unwrap_or(name)
}

/// The names of the running kernel threads up to their `/`: all the check needs of
/// the other processes.
pub type KthreadStems = BTreeSet<Vec<u8>>;

/// The kernel threads' name stems of `procs`.
pub fn kthread_stems(procs: &[Process]) -> KthreadStems {
    procs
        .iter()
        .filter(|p| p.is_kernel_thread())
        .map(|p| stem(&p.comm).to_vec())
        .collect()
}

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    let kthreads = kthread_stems(scan.processes()?);
    let mut findings = Vec::new();
    for p in scan.user_processes()? {
        findings.extend(one(scan, p, &kthreads));
    }
    Ok(findings)
}

/// The findings of one user process, the kernel threads' name stems given.
pub fn one<M: PhysicalMemory>(
    scan: &Scan<'_, M>,
    p: &Process,
    kthreads: &KthreadStems,
) -> Vec<Finding> {
    one_or_none(scan, p, kthreads).unwrap_or_default()
}

fn one_or_none<M: PhysicalMemory>(
    scan: &Scan<'_, M>,
    p: &Process,
    kthreads: &KthreadStems,
) -> Option<Vec<Finding>> {
    let comm = guest_str(&p.comm);
    let base = |rule: &str, sev: Severity, summary: String| {
        Finding::new(
            NAME,
            sev,
            format!("{NAME}:{rule}:{}:{}", p.pid, p.start_time),
            summary,
        )
        .num("pid", u64::from(p.pid))
        .text("comm", comm.clone())
        .text("rule", rule.to_string())
    };
    // a read that fails because the process exited meanwhile (its page tables gone)
    // is no finding: it is gone at the next scan
    let unreadable = |what: &str, e: &dyn std::fmt::Display| {
        if !unchanged(scan.kernel, p) {
            return None;
        }
        Some(vec![base(
            "unreadable",
            Severity::Low,
            format!(
                "the {what} of process {} ({comm}) cannot be read, so its names cannot be compared: {e}",
                p.pid
            ),
        )])
    };
    let exe_name = match reread(scan.kernel, READ_TRIES, || scan.kernel.exe_file(p.mm)) {
        Ok(Some(exe)) => exe,
        Ok(None) => return None,
        Err(e) => return unreadable("executable", &e),
    };
    let strings = match reread(scan.kernel, READ_TRIES, || scan.kernel.exec_strings(p.mm)) {
        Ok(Some(s)) => s,
        Ok(None) => return None,
        Err(e) => return unreadable("command line", &e),
    };
    if !unchanged(scan.kernel, p) {
        return None;
    }
    let argv0 = strings.argv.first().cloned().unwrap_or_default();
    // judged by the path, shown as /proc/PID/exe shows it (` (deleted)`, a memfd's
    // `/memfd:NAME (deleted)`)
    let exe = &exe_name.path;
    let exe_s = guest_str(&exe_name.display());
    let evidence = |f: Finding| {
        let f = f
            .text("exe", exe_s.clone())
            .text("argv0", guest_str(&argv0));
        match &strings.execfn {
            Some(x) => f.text("execfn", guest_str(x)),
            None => f,
        }
    };
    let severity = |name: &[u8]| {
        if kernel_thread_like(name, kthreads) {
            Severity::High
        } else {
            Severity::Medium
        }
    };
    let noexec_applet = busybox(exe) && !kernel_thread_like(&p.comm, kthreads);
    let found = judge(&p.comm, exe, &strings)
        .into_iter()
        .filter(|s| !(noexec_applet && *s == Spoof::Comm))
        .map(|s| match s {
            Spoof::Comm => evidence(base(
                "comm",
                severity(&p.comm),
                format!(
                    "process {} is named {comm} but runs {exe_s}: its name was changed after it started (prctl PR_SET_NAME)",
                    p.pid
                ),
            )),
            Spoof::Argv0 => evidence(base(
                "argv0",
                severity(&argv0),
                format!(
                    "process {} ({comm}) runs {exe_s} but its command line says {}: its arguments were rewritten",
                    p.pid,
                    guest_str(&argv0)
                ),
            )),
        })
        .collect();
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(argv: &[&str], execfn: Option<&str>) -> ExecStrings {
        ExecStrings {
            argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
            truncated: false,
            execfn: execfn.map(|f| f.as_bytes().to_vec()),
        }
    }

    #[test]
    fn what_admins_run_is_not_spoofing() {
        let ok = |comm: &str, exe: &str, argv: &[&str], execfn: Option<&str>| {
            assert_eq!(
                judge(comm.as_bytes(), exe.as_bytes(), &strings(argv, execfn)),
                vec![],
                "{comm} {exe} {argv:?}"
            )
        };
        ok(
            "sleep",
            "/bin/busybox",
            &["sleep", "100"],
            Some("/bin/sleep"),
        );
        ok("sh", "/bin/busybox", &["sh", "-c", "x"], Some("/bin/sh"));
        ok(
            "lab-sleeper",
            "/bin/lab-sleeper",
            &["/bin/lab-sleeper"],
            Some("/bin/lab-sleeper"),
        );
        // 15-byte truncation
        ok(
            "systemd-journal",
            "/usr/lib/systemd/systemd-journald",
            &["/usr/lib/systemd/systemd-journald"],
            Some("/usr/lib/systemd/systemd-journald"),
        );
        // a script: comm is the script, argv[0] the shebang's interpreter
        ok(
            "backup.sh",
            "/usr/bin/dash",
            &["/bin/sh", "/usr/local/bin/backup.sh"],
            Some("/usr/local/bin/backup.sh"),
        );
        ok(
            "tool",
            "/usr/bin/python3.11",
            &["/usr/bin/python3", "-u", "/opt/tool"],
            Some("/opt/tool"),
        );
        // setproctitle and login shells
        ok(
            "sshd",
            "/usr/sbin/sshd",
            &["sshd: root@pts/0"],
            Some("/usr/sbin/sshd"),
        );
        ok(
            "nginx",
            "/usr/sbin/nginx",
            &["nginx: worker process"],
            Some("/usr/sbin/nginx"),
        );
        ok("bash", "/usr/bin/bash", &["-bash"], Some("/bin/bash"));
        // no execfn: argv[0] stands in
        ok("python3", "/usr/bin/python3.11", &["python3"], None);
        // busybox's shell running an applet: itself again, named by argv[0] and comm
        ok(
            "sleep",
            "/bin/busybox",
            &["sleep", "100000"],
            Some("/proc/self/exe"),
        );
        // ... in the moment after its exec, before it renames itself
        ok(
            "exe",
            "/bin/busybox",
            &["sleep", "100000"],
            Some("/proc/self/exe"),
        );
        // fexecve: the kernel names it after the descriptor
        ok("3", "/tmp/x", &["x"], Some("/dev/fd/3"));
        // no arguments at all
        ok("x", "/tmp/x", &[], Some("/tmp/x"));
    }

    #[test]
    fn renamed_processes_are() {
        let s = strings(&["/tmp/spoof", "spoof-comm"], Some("/tmp/spoof"));
        assert_eq!(judge(b"kworker/0:1", b"/tmp/spoof", &s), vec![Spoof::Comm]);
        let s = strings(&["[kworker/1:0]"], Some("/tmp/spoof"));
        assert_eq!(judge(b"spoof", b"/tmp/spoof", &s), vec![Spoof::Argv0]);
        // both renamed the same: comm is reported
        let s = strings(&["kworker/0:1"], Some("/tmp/spoof"));
        assert_eq!(judge(b"kworker/0:1", b"/tmp/spoof", &s), vec![Spoof::Comm]);
        // both, differently
        let s = strings(&["/usr/sbin/sshd"], Some("/tmp/spoof"));
        assert_eq!(
            judge(b"kworker/0:1", b"/tmp/spoof", &s),
            vec![Spoof::Comm, Spoof::Argv0]
        );
    }

    #[test]
    fn busybox_noexec_applets_run_as_busybox() {
        // `awk` run by busybox's shell in a forked child, renamed without an exec: the
        // names alone say Comm, the executable excuses it
        let s = strings(&["sh", "-c", "x | awk 1"], Some("/bin/sh"));
        assert_eq!(judge(b"awk", b"/bin/busybox", &s), vec![Spoof::Comm]);
        assert!(busybox(b"/bin/busybox"));
        assert!(busybox(b"/usr/bin/busybox"));
        // not busybox: the rename counts
        assert!(!busybox(b"/usr/bin/dash"));
        assert!(!busybox(b"/tmp/busybox-x"));
    }

    #[test]
    fn kernel_thread_names() {
        let k: KthreadStems = [&b"kworker/u2:0"[..], b"ksoftirqd/0", b"kthreadd"]
            .iter()
            .map(|n| stem(n).to_vec())
            .collect();
        assert!(kernel_thread_like(b"kworker/0:1", &k));
        assert!(kernel_thread_like(b"[anything]", &k));
        assert!(kernel_thread_like(b"kthreadd", &k));
        assert!(!kernel_thread_like(b"sshd", &k));
        assert!(!kernel_thread_like(b"", &k));
    }
}

#[cfg(test)]
mod synthetic_tests {
    use crate::checks::synthetic::{ev, run, single, system};
    use crate::checks::Check;
    use crate::finding::Severity;

    const CHECK: Check = Check::Spoofing;

    #[test]
    fn clean_with_setproctitle_and_a_login_shell() {
        assert!(run(system().sk, CHECK).is_empty());
    }

    #[test]
    fn a_miner_named_like_a_kernel_thread_is_high() {
        let mut s = system();
        s.sk.add_kthread(3, b"kworker/0:0");
        let miner = s.sk.add_process(2500, b"kworker/0:1", 1000);
        let exe: &[u8] = b"/tmp/.x/miner";
        s.sk.exec(&miner, exe, &[b"kworker/0:1"], exe);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(f.key, "spoofing:comm:2500:2500000");
        assert_eq!(ev(f, "exe"), "/tmp/.x/miner");
        assert_eq!(ev(f, "rule"), "comm");
    }

    #[test]
    fn a_rewritten_argv0_is_medium() {
        let mut s = system();
        let nc = s.sk.add_process(2600, b"nc", 1000);
        s.sk.exec(
            &nc,
            b"/usr/bin/nc.openbsd",
            &[b"/usr/sbin/sshd", b"-l"],
            b"/usr/bin/nc",
        );
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::Medium);
        assert_eq!(ev(f, "rule"), "argv0");
        assert_eq!(ev(f, "argv0"), "/usr/sbin/sshd");
        assert_eq!(ev(f, "execfn"), "/usr/bin/nc");
    }

    /// `cut` forked by busybox's shell, by `xargs` and by `find -exec`: named after
    /// the applet, with the arguments of what forked it; a busybox renamed to a kernel
    /// thread's name is still reported.
    #[test]
    fn busybox_forks_named_after_their_applet_are_not_reported() {
        let mut s = system();
        s.sk.add_kthread(3, b"kworker/0:0");
        // (pid, the arguments of what forked it, its execve file name)
        type Fork<'a> = (u32, &'a [&'a [u8]], &'a [u8]);
        let forks: [Fork; 4] = [
            (
                2000,
                &[b"sh", b"-c", b"x=$(cut -d' ' -f1 /proc/loadavg)"],
                b"/bin/sh",
            ),
            (2001, &[b"/bin/sh", b"/etc/init.d/rcS"], b"/etc/init.d/rcS"),
            (
                2002,
                &[b"xargs", b"cut", b"-d", b" ", b"-f2"],
                b"/proc/self/exe",
            ),
            (
                2003,
                &[b"find", b"/proc/loadavg", b"-exec", b"cut"],
                b"/usr/bin/find",
            ),
        ];
        for (pid, argv, execfn) in forks {
            let t = s.sk.add_process(pid, b"cut", 0);
            s.sk.exec(&t, b"/bin/busybox", argv, execfn);
        }
        let t = s.sk.add_process(2100, b"kworker/0:1", 0);
        s.sk.exec(&t, b"/bin/busybox", &[b"sh"], b"/bin/sh");
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(ev(f, "pid"), "2100");
    }

    /// A process that changed between the census and the reading of its memory (its
    /// `mm_struct` now another process's, or renamed) is not judged this scan.
    #[test]
    fn a_process_that_changed_while_read_is_not_judged() {
        let mut s = system();
        let t = s.sk.add_process(2000, b"cut", 0);
        s.sk.exec(&t, b"/tmp/x", &[b"/tmp/x"], b"/tmp/x");
        let kernel = s.sk.discover().unwrap();
        let settings = crate::checks::Settings::default();
        let scan = crate::checks::Scan::new(&kernel, &[], &settings);
        let procs = scan.processes().unwrap();
        let p = procs.iter().find(|p| p.pid == 2000).unwrap();
        assert!(crate::checks::unchanged(&kernel, p));
        let mut moved = p.clone();
        moved.mm = vmi_core::Va(p.mm.0 + 0x1000);
        assert!(!crate::checks::unchanged(&kernel, &moved));
        let mut renamed = p.clone();
        renamed.comm = b"sh".to_vec();
        assert!(!crate::checks::unchanged(&kernel, &renamed));
        let none = super::KthreadStems::new();
        assert_eq!(super::one(&scan, &moved, &none), vec![]);
        assert_eq!(super::one(&scan, p, &none).len(), 1);
    }

    #[test]
    fn corrupt_argument_bounds_are_a_low_finding_not_a_failure() {
        let mut s = system();
        s.sk.set(s.bash_mm, "mm_struct", "arg_end", 1);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::Low);
        assert_eq!(ev(f, "rule"), "unreadable");
        assert_eq!(ev(f, "pid"), "1000");
    }
}
