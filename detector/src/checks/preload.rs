//! `preload`: user-space rootkits that ride the dynamic loader (Symbiote, Kitsune,
//! Azazel, Jynx).
//!
//! The loader loads what `LD_PRELOAD` and `LD_AUDIT` name into every dynamically
//! linked program before its own libraries, searches `LD_LIBRARY_PATH`'s directories
//! first, and preloads every library `/etc/ld.so.preload` lists into every program
//! on the system. A library loaded so hooks `readdir`, `fopen` or PAM in the processes
//! the admin uses to look (`ls`, `ps`, `netstat`, `sshd`): the guest's own tools
//! cannot be trusted, its memory can.
//!
//! Per user process (a unit of its own in incremental scans, like `exec-location`),
//! the environment (`/proc/PID/environ`, read by [`vmi_core::kernel::userspace`]) is
//! searched for the three variables; each one set (not empty) is a finding with its
//! value (escaped, at most [`MAX_SHOWN`] bytes):
//!
//! | variable | severity |
//! |---|---|
//! | `LD_PRELOAD`, `LD_AUDIT` naming a library outside the system directories (or a relative name) | high |
//! | `LD_PRELOAD`, `LD_AUDIT` naming only libraries under the system directories | medium |
//! | `LD_LIBRARY_PATH` with a directory in a world-writable place, a relative or an empty one (the working directory) | medium |
//! | `LD_LIBRARY_PATH` otherwise | low |
//!
//! The system directories are `exec-location`'s ([`exec_location::SYSTEM_DIRS`]:
//! `/usr`, `/lib*`, `/opt`, ...), the world-writable ones too. The policy's
//! `allow_preload` globs (over each path a variable names: entries split at `:` and,
//! for `LD_PRELOAD`, spaces, as the loader splits them) accept a variable whose every
//! entry matches.
//!
//! Once per scan, `/etc/ld.so.preload` is looked up in the dentry cache from the root
//! of pid 1 ([`vmi_core::kernel::pagecache`]): the loader opens it at every program
//! start, so a file that exists is cached. Found, it is a high finding with its size
//! and its content as the page cache holds it (at most [`MAX_FILE`] bytes read, escaped,
//! [`MAX_SHOWN`] shown); the libraries it names that the policy allows are not
//! counted, and a file naming only those is not reported. A lookup that cannot be done
//! (pid 1 has no root, a pointer on the way is bad) is said in `not_checked`.

use vmi_core::kernel::pagecache::Lookup;
use vmi_core::kernel::Process;
use vmi_core::memory::PhysicalMemory;

use crate::checks::exec_location::{SYSTEM_DIRS, WORLD_WRITABLE};
use crate::checks::{read_process, reread, unchanged, CheckFailure, Scan, READ_TRIES};
use crate::finding::{guest_str, Finding, Severity};
use crate::policy::Policy;

const NAME: &str = "preload";

/// The preload file the loader reads.
pub const PRELOAD_FILE: &[u8] = b"/etc/ld.so.preload";
/// Most bytes of the preload file read from the page cache.
pub const MAX_FILE: u64 = 64 * 1024;
/// Most bytes of a value or of the file's content shown in a finding.
pub const MAX_SHOWN: usize = 1024;
/// Most entries of a variable or of the file judged.
pub const MAX_ENTRIES: usize = 256;

/// The loader's variables this check reports.
pub const VARIABLES: [&[u8]; 3] = [b"LD_PRELOAD", b"LD_AUDIT", b"LD_LIBRARY_PATH"];

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    let mut findings = crate::checks::per_process(scan, one)?;
    findings.extend(preload_file(scan)?);
    Ok(findings)
}

/// The entries of a variable's value (or of the file): split at `:`, and for a
/// preload list (`LD_PRELOAD`, the file) at spaces, tabs and newlines too; at most
/// [`MAX_ENTRIES`].
pub fn entries(value: &[u8], preload_list: bool) -> Vec<&[u8]> {
    let sep = |b: &u8| *b == b':' || preload_list && matches!(b, b' ' | b'\t' | b'\n');
    value
        .split(sep)
        .take(MAX_ENTRIES)
        .filter(|e| !preload_list || !e.is_empty())
        .collect()
}

fn under(path: &[u8], dirs: &[&[u8]]) -> bool {
    dirs.iter().any(|d| path.starts_with(d))
}

fn allowed(policy: Option<&Policy>, entry: &[u8]) -> bool {
    policy.is_some_and(|p| p.preload_allowed(entry))
}

/// How bad the variable `name` set to `value` is (`None`: nothing to report).
pub fn judge(name: &[u8], value: &[u8], policy: Option<&Policy>) -> Option<Severity> {
    let library_path = name == b"LD_LIBRARY_PATH";
    let list = entries(value, name == b"LD_PRELOAD");
    if value.is_empty() || list.iter().all(|e| !e.is_empty() && allowed(policy, e)) {
        return None;
    }
    if library_path {
        let risky = list
            .iter()
            .any(|d| d.is_empty() || !d.starts_with(b"/") || under(&with_slash(d), WORLD_WRITABLE));
        return Some(if risky {
            Severity::Medium
        } else {
            Severity::Low
        });
    }
    let system = list
        .iter()
        .all(|l| under(l, SYSTEM_DIRS) && !under(l, WORLD_WRITABLE));
    Some(if system {
        Severity::Medium
    } else {
        Severity::High
    })
}

/// A directory with a trailing `/`, so that `/tmp` is under `/tmp/`.
fn with_slash(d: &[u8]) -> Vec<u8> {
    let mut v = d.to_vec();
    if !v.ends_with(b"/") {
        v.push(b'/');
    }
    v
}

/// At most [`MAX_SHOWN`] bytes of `bytes`, escaped, with `...` when cut.
fn shown(bytes: &[u8]) -> String {
    let mut s = guest_str(&bytes[..bytes.len().min(MAX_SHOWN)]);
    if bytes.len() > MAX_SHOWN {
        s.push_str("...");
    }
    s
}

/// The findings of one user process (into `out`).
pub fn one<M: PhysicalMemory>(
    scan: &Scan<'_, M>,
    p: &Process,
    policy: Option<&Policy>,
    out: &mut Vec<Finding>,
) {
    let k = scan.kernel;
    let Some(Some(env)) = read_process(k, NAME, p, "environment", out, || k.environment(p.mm))
    else {
        return;
    };
    // on a running guest the address space may have been reused meanwhile
    if !unchanged(k, p) {
        return;
    }
    let comm = guest_str(&p.comm);
    for name in VARIABLES {
        // the loader takes the first definition
        let Some(value) = env.vars.iter().find_map(|v| {
            v.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(b"="))
        }) else {
            continue;
        };
        let Some(severity) = judge(name, value, policy) else {
            continue;
        };
        let var = String::from_utf8_lossy(name).into_owned();
        let value = shown(value);
        out.push(
            Finding::new(
                NAME,
                severity,
                format!("{NAME}:env:{}:{}:{var}", p.pid, p.start_time),
                format!("process {} ({comm}) runs with {var}={value}", p.pid),
            )
            .num("pid", u64::from(p.pid))
            .text("comm", comm.clone())
            .text("rule", "environment")
            .text("variable", var)
            .text("value", value),
        );
    }
}

/// The finding for `/etc/ld.so.preload` in the page cache, looked up from pid 1's
/// root.
pub fn preload_file<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    let k = scan.kernel;
    let Some(init) = scan.processes()?.iter().find(|p| p.pid == 1) else {
        scan.not_checked(
            NAME,
            "/etc/ld.so.preload: there is no pid 1 to look it up from".into(),
        );
        return Ok(Vec::new());
    };
    let entry = match reread(k, READ_TRIES, || k.lookup_cached(init.task, PRELOAD_FILE)) {
        Ok(Lookup::Found(e)) if e.inode.0 != 0 => e,
        Ok(_) => return Ok(Vec::new()),
        Err(e) => {
            scan.not_checked(NAME, format!("/etc/ld.so.preload: the lookup failed: {e}"));
            return Ok(Vec::new());
        }
    };
    let file = match reread(k, READ_TRIES, || k.read_cached(entry.inode, MAX_FILE)) {
        Ok(f) => f,
        Err(e) => {
            scan.not_checked(
                NAME,
                format!("/etc/ld.so.preload: its data cannot be read: {e}"),
            );
            return Ok(Vec::new());
        }
    };
    let policy = scan.settings.policy.as_ref();
    let libraries = entries(&file.data, true);
    let unallowed = libraries.iter().filter(|l| !allowed(policy, l)).count();
    if !libraries.is_empty() && unallowed == 0 {
        return Ok(Vec::new());
    }
    let content = shown(&file.data);
    let mut f = Finding::new(
        NAME,
        Severity::High,
        format!("{NAME}:file"),
        format!(
            "/etc/ld.so.preload exists ({} bytes): every program started loads {content}",
            file.size
        ),
    )
    .text("rule", "ld.so.preload")
    .text("file", guest_str(PRELOAD_FILE))
    .num("size", file.size)
    .text("content", content)
    .num("libraries", libraries.len() as u64);
    if !file.missing.is_empty() {
        let not_resident: u64 = file.missing.iter().map(|(a, b)| b - a).sum();
        f = f.num("not_resident", not_resident);
    }
    Ok(vec![f])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_variable_names_decides() {
        let j = |n: &str, v: &str| judge(n.as_bytes(), v.as_bytes(), None);
        assert_eq!(j("LD_PRELOAD", "/dev/shm/libx.so"), Some(Severity::High));
        assert_eq!(j("LD_PRELOAD", "libx.so"), Some(Severity::High));
        assert_eq!(j("LD_PRELOAD", "/home/u/libx.so"), Some(Severity::High));
        assert_eq!(
            j("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
            Some(Severity::Medium)
        );
        // one library out of the system directories is enough, in any separator
        assert_eq!(
            j("LD_PRELOAD", "/usr/lib/a.so /tmp/b.so"),
            Some(Severity::High)
        );
        assert_eq!(
            j("LD_AUDIT", "/lib/a.so:/var/tmp/b.so"),
            Some(Severity::High)
        );
        assert_eq!(j("LD_PRELOAD", ""), None);
        assert_eq!(j("LD_LIBRARY_PATH", "/opt/app/lib"), Some(Severity::Low));
        for risky in ["/tmp", "/dev/shm/x", "lib", "/opt/app/lib:", ":/usr/lib"] {
            assert_eq!(
                j("LD_LIBRARY_PATH", risky),
                Some(Severity::Medium),
                "{risky}"
            );
        }
        // the policy accepts a variable whose every entry it allows
        let p =
            Policy::parse("allow_preload = [\"/usr/lib/*/libjemalloc.so.*\", \"/opt/app/lib\"]")
                .unwrap();
        let jp = |n: &str, v: &str| judge(n.as_bytes(), v.as_bytes(), Some(&p));
        assert_eq!(
            jp("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
            None
        );
        assert_eq!(jp("LD_LIBRARY_PATH", "/opt/app/lib"), None);
        assert_eq!(
            jp("LD_LIBRARY_PATH", "/opt/app/lib:"),
            Some(Severity::Medium)
        );
        assert_eq!(
            jp(
                "LD_PRELOAD",
                "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2:/tmp/x.so"
            ),
            Some(Severity::High)
        );
    }

    #[test]
    fn entries_are_bounded() {
        let many = ":".repeat(10_000);
        assert_eq!(entries(many.as_bytes(), false).len(), MAX_ENTRIES);
        assert!(entries(many.as_bytes(), true).is_empty());
        assert_eq!(entries(b"/a.so\n/b.so  /c.so", true).len(), 3);
    }
}

#[cfg(test)]
mod synthetic_tests {
    use vmi_core::testing::PageState;

    use crate::checks::synthetic::{ev, run, run_on, single, system, System};
    use crate::checks::{Check, Settings};
    use crate::finding::Severity;
    use crate::policy::Policy;

    const CHECK: Check = Check::Preload;

    /// The clean system with process 3000 started with `env`.
    fn with_env(env: &[&[u8]]) -> System {
        let mut s = system();
        let t = s.sk.add_process(3000, b"sshd", 0);
        s.sk.exec_env(
            &t,
            b"/usr/sbin/sshd",
            &[b"/usr/sbin/sshd"],
            env,
            b"/usr/sbin/sshd",
        );
        s
    }

    #[test]
    fn a_preloaded_library_in_dev_shm_is_high() {
        assert!(run(system().sk, CHECK).is_empty());
        assert!(run(with_env(&[b"PATH=/usr/bin", b"TERM=xterm"]).sk, CHECK).is_empty());
        let s = with_env(&[
            b"PATH=/usr/bin",
            b"LD_PRELOAD=/dev/shm/libsym\x1b[2J.so",
            b"LD_LIBRARY_PATH=/opt/app/lib",
        ]);
        let findings = run(s.sk, CHECK);
        assert_eq!(findings.len(), 2, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.key, "preload:env:3000:3000000:LD_PRELOAD");
        assert_eq!(ev(f, "value"), "/dev/shm/libsym\\x1b[2J.so");
        assert_eq!(ev(f, "pid"), "3000");
        let f = &findings[1];
        assert_eq!(
            (f.severity, ev(f, "variable")),
            (Severity::Low, "LD_LIBRARY_PATH".into())
        );
    }

    #[test]
    fn a_huge_value_is_shown_cut() {
        // (the synthetic execve lays the strings out in one page)
        let value = format!("LD_AUDIT=/tmp/{}", "a".repeat(3000));
        let findings = run(with_env(&[value.as_bytes()]).sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        let shown = ev(f, "value");
        assert_eq!(shown.len(), super::MAX_SHOWN + 3);
        assert!(shown.ends_with("..."));
    }

    #[test]
    fn the_policy_allows_a_preload() {
        let s = with_env(&[b"LD_PRELOAD=/usr/lib/libfaketime.so.1"]);
        let settings = Settings {
            policy: Some(Policy::parse("allow_preload = [\"/usr/lib/libfaketime.so.*\"]").unwrap()),
            ..Settings::default()
        };
        assert!(run_on(s.sk, &[], &settings, CHECK).unwrap().is_empty());
        let s = with_env(&[b"LD_PRELOAD=/usr/lib/libfaketime.so.1"]);
        let findings = run(s.sk, CHECK);
        single(&findings, CHECK, Severity::Medium);
    }

    /// The clean system whose pid 1 has the root file system, with
    /// `/etc/ld.so.preload` holding `content` in the page cache.
    fn with_preload_file(content: &[u8]) -> System {
        let mut s = system();
        let init = s.init;
        s.sk.set_fs_root(&init);
        let pages = vec![PageState::Head; content.len().div_ceil(0x1000).max(1)];
        s.sk.cache_file(b"/etc/ld.so.preload", content, &pages);
        s
    }

    #[test]
    fn a_cached_ld_so_preload_is_high_with_its_content() {
        let findings = run(with_preload_file(b"/lib/libsym.so\n\x1b[2J\n").sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(f.key, "preload:file");
        assert_eq!(ev(f, "content"), "/lib/libsym.so\\x0a\\x1b[2J\\x0a");
        assert_eq!(ev(f, "size"), "20");
        assert_eq!(ev(f, "libraries"), "2");
        // allowed by the policy, library by library
        let settings = |globs: &str| Settings {
            policy: Some(Policy::parse(&format!("allow_preload = [{globs}]")).unwrap()),
            ..Settings::default()
        };
        let s = with_preload_file(b"/usr/lib/libagent.so\n");
        let ok = settings("\"/usr/lib/libagent.so\"");
        assert!(run_on(s.sk, &[], &ok, CHECK).unwrap().is_empty());
        let s = with_preload_file(b"/usr/lib/libagent.so\n/tmp/x.so\n");
        assert_eq!(run_on(s.sk, &[], &ok, CHECK).unwrap().len(), 1);
    }

    #[test]
    fn a_large_ld_so_preload_is_read_bounded() {
        let content = vec![b'a'; 3 * 0x1000];
        let findings = run(with_preload_file(&content).sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(ev(f, "size"), "12288");
        assert_eq!(ev(f, "content").len(), super::MAX_SHOWN + 3);
    }

    #[test]
    fn no_ld_so_preload_is_no_finding() {
        let mut s = system();
        let init = s.init;
        s.sk.set_fs_root(&init);
        s.sk.cache_file(b"/etc/hosts", b"127.0.0.1 localhost\n", &[PageState::Head]);
        assert!(run(s.sk, CHECK).is_empty());
    }
}
