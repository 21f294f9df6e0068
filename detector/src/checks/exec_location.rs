//! `exec-location`: user processes running code from where programs are not installed.
//!
//! Implants that change no kernel structure still have to run from somewhere, and
//! hide what they run from: a binary copied to `/dev/shm`, executed and deleted
//! (BPFDoor), a second stage written into a `memfd_create` file and run with
//! `fexecve` (PUMAKIT and most Linux loaders), a library dropped in `/tmp` and mapped.
//! The kernel still holds each file (`mm->exe_file`, a mapping's `vm_file`), and its
//! dentry says whether it was deleted or never had a directory (see
//! [`vmi_core::kernel::files`]).
//!
//! Each user process's executable, and each file mapped executable in it (a library),
//! is judged by where it is:
//!
//! | where | executable | executable mapping |
//! |---|---|---|
//! | a memfd or another in-memory file (`/memfd:NAME (deleted)`) | high | medium |
//! | deleted from a world-writable directory (`/tmp`, `/var/tmp`, `/dev/shm`, `/run/shm`) | high | high |
//! | in a world-writable directory | medium | medium |
//! | deleted from elsewhere, not a system directory | medium | medium |
//! | elsewhere, not a system directory (a library loaded from `/home`, `/srv`, `/root`) | not reported | low |
//! | deleted from a system directory (`/usr`, `/bin`, `/sbin`, `/lib*`, `/opt`, ...) | not reported | not reported |
//!
//! Why: a package upgrade replaces binaries and libraries under the system
//! directories while their processes run on (`/usr/sbin/sshd (deleted)` until the
//! daemon restarts); that is routine, not a finding. Nothing is installed into a
//! world-writable directory, and a program there that removed itself is hiding. An
//! executable memfd as a process's executable has few honest users (`runc init`, for
//! the moment before it runs the container); mapped executable, it is how some JIT
//! runtimes keep W^X (.NET's `doublemapper`), so medium. A library mapped from outside
//! the system directories is how a preload rootkit's library shows in the processes it
//! hooks (`LD_PRELOAD=/root/.x/libs.so`, see the `preload` check); programs that ship
//! their own libraries in their own tree do the same, so low. The system directories
//! are [`SYSTEM_DIRS`] for both roles (`/usr` holds `/usr/lib`, `/usr/lib64` and
//! `/usr/local/lib`; `/opt`, `/snap` and `/nix/store` are where packaged software
//! installs); a site that installs elsewhere lists its paths in `allow_exec_location`.
//! The directories are judged by the path the kernel rebuilds (the global mount tree),
//! not by the directory's mode.
//!
//! The policy's `allow_exec_location` globs (over the path, without ` (deleted)`; a
//! memfd's is `/memfd:NAME`) name files accepted anywhere. Only executable mappings
//! count (a data file in `/tmp`, QEMU's memfd guest RAM, System V segments are not
//! code); a mapping of the process's own executable is judged once, as the executable.
//! One finding per process for its executable and one per distinct mapped file. A
//! process that changed while it was read (on a running guest: exited and its
//! `mm_struct` reused, `execve`d) is judged at the next scan.

use std::collections::BTreeSet;

use vmi_core::kernel::files::{FileName, Linkage};
use vmi_core::kernel::vma::MapName;
use vmi_core::kernel::Process;
use vmi_core::memory::PhysicalMemory;

use crate::checks::{read_process, unchanged, CheckFailure, Scan};
use crate::finding::{guest_str, Finding, Severity};
use crate::policy::Policy;

const NAME: &str = "exec-location";

/// Directories anyone may write to, where programs are dropped.
pub const WORLD_WRITABLE: &[&[u8]] = &[b"/tmp/", b"/var/tmp/", b"/dev/shm/", b"/run/shm/"];

/// Directories packages install programs and libraries into: a deleted file there is
/// an upgrade's leftover.
pub const SYSTEM_DIRS: &[&[u8]] = &[
    b"/usr/",
    b"/bin/",
    b"/sbin/",
    b"/lib/",
    b"/lib32/",
    b"/lib64/",
    b"/libx32/",
    b"/opt/",
    b"/snap/",
    b"/nix/store/",
];

/// What a file is to the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Its executable (`mm->exe_file`).
    Executable,
    /// A file it maps executable (a library).
    Mapping,
}

/// Why a file is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A memfd's (or another in-memory) file.
    Memory,
    /// Deleted from a world-writable directory.
    DeletedWorldWritable,
    /// In a world-writable directory.
    WorldWritable,
    /// Deleted from a directory that is not a system one.
    Deleted,
    /// A library in a directory that is not a system one.
    NonSystem,
}

impl Place {
    /// The rule's name in findings.
    pub fn rule(self) -> &'static str {
        match self {
            Place::Memory => "memory",
            Place::DeletedWorldWritable => "deleted-world-writable",
            Place::WorldWritable => "world-writable",
            Place::Deleted => "deleted",
            Place::NonSystem => "non-system",
        }
    }

    fn says(self) -> &'static str {
        match self {
            Place::Memory => "a file that exists only in memory (memfd_create)",
            Place::DeletedWorldWritable => "a deleted file of a world-writable directory",
            Place::WorldWritable => "a world-writable directory",
            Place::Deleted => "a deleted file outside the system directories",
            Place::NonSystem => "a library outside the system directories",
        }
    }
}

fn under(path: &[u8], dirs: &[&[u8]]) -> bool {
    dirs.iter().any(|d| path.starts_with(d))
}

/// Judge one file: where it is and how bad that is for its role (`None`: nothing to
/// report).
pub fn judge(name: &FileName, role: Role) -> Option<(Place, Severity)> {
    let ww = under(&name.path, WORLD_WRITABLE);
    let place = match name.linkage {
        Linkage::Pseudo => Place::Memory,
        Linkage::Deleted if ww => Place::DeletedWorldWritable,
        Linkage::Deleted if under(&name.path, SYSTEM_DIRS) => return None,
        Linkage::Deleted => Place::Deleted,
        Linkage::Linked if ww => Place::WorldWritable,
        Linkage::Linked if role == Role::Mapping && !under(&name.path, SYSTEM_DIRS) => {
            Place::NonSystem
        }
        Linkage::Linked => return None,
    };
    let severity = match (place, role) {
        (Place::Memory, Role::Executable) | (Place::DeletedWorldWritable, _) => Severity::High,
        (Place::NonSystem, _) => Severity::Low,
        _ => Severity::Medium,
    };
    Some((place, severity))
}

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    crate::checks::per_process(scan, one)
}

fn allowed(policy: Option<&Policy>, name: &FileName) -> bool {
    policy.is_some_and(|p| p.exec_location_allowed(&name.path))
}

/// The findings of one user process (into `out`).
pub fn one<M: PhysicalMemory>(
    scan: &Scan<'_, M>,
    p: &Process,
    policy: Option<&Policy>,
    out: &mut Vec<Finding>,
) {
    let k = scan.kernel;
    let comm = guest_str(&p.comm);
    let id = format!("{}:{}", p.pid, p.start_time);
    // a read that fails because the process exited meanwhile (its address space
    // gone) is no finding: it is gone at the next scan
    let Some(exe) = read_process(k, NAME, p, "executable", out, || k.exe_file(p.mm)) else {
        return;
    };
    let report = |name: &FileName, role: Role, key: String, start: Option<u64>| {
        let (place, severity) = judge(name, role)?;
        if allowed(policy, name) {
            return None;
        }
        let shown = guest_str(&name.display());
        let summary = match role {
            Role::Executable => {
                format!("process {} ({comm}) runs {shown}: {}", p.pid, place.says())
            }
            Role::Mapping => format!(
                "process {} ({comm}) maps {shown} executable: {}",
                p.pid,
                place.says()
            ),
        };
        let f = Finding::new(NAME, severity, key, summary)
            .num("pid", u64::from(p.pid))
            .text("comm", comm.clone())
            .text("rule", place.rule())
            .text(
                "role",
                match role {
                    Role::Executable => "executable",
                    Role::Mapping => "mapping",
                },
            )
            .text("file", shown);
        Some(match start {
            Some(s) => f.addr("start", s),
            None => f,
        })
    };
    let Some(maps) = read_process(k, NAME, p, "memory mappings", out, || k.maps(p.mm)) else {
        return;
    };
    // on a running guest the process may have exited and its address space been
    // reused by another while it was read: judged at the next scan
    if !unchanged(k, p) {
        return;
    }
    if let Some(exe) = &exe {
        out.extend(report(
            exe,
            Role::Executable,
            format!("{NAME}:exe:{id}"),
            None,
        ));
    }
    let mut seen: BTreeSet<Vec<u8>> = BTreeSet::new();
    for m in maps.iter().filter(|m| m.vma.is_exec()) {
        let MapName::File(f) = &m.name else { continue };
        let name = f.name();
        if exe.as_ref() == Some(&name) || !seen.insert(name.display()) {
            continue;
        }
        let key = format!("{NAME}:map:{id}:{}", guest_str(&name.path));
        out.extend(report(&name, Role::Mapping, key, Some(m.vma.start)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(path: &str, linkage: Linkage) -> FileName {
        FileName {
            path: path.as_bytes().to_vec(),
            linkage,
        }
    }

    #[test]
    fn where_a_file_is_decides() {
        use Linkage::*;
        use Role::*;
        let j = |p: &str, l: Linkage, r: Role| judge(&name(p, l), r);
        // installed programs, and an upgrade's leftovers
        assert_eq!(j("/usr/sbin/sshd", Linked, Executable), None);
        assert_eq!(j("/usr/sbin/sshd", Deleted, Executable), None);
        assert_eq!(j("/lib/x86_64-linux-gnu/libc.so.6", Deleted, Mapping), None);
        assert_eq!(j("/opt/app/bin/app", Deleted, Executable), None);
        assert_eq!(j("/home/u/build/a.out", Linked, Executable), None);
        // in memory
        assert_eq!(
            j("/memfd:stage2", Pseudo, Executable),
            Some((Place::Memory, Severity::High))
        );
        assert_eq!(
            j("/memfd:doublemapper", Pseudo, Mapping),
            Some((Place::Memory, Severity::Medium))
        );
        // dropped in a world-writable directory
        for dir in ["/tmp/", "/var/tmp/", "/dev/shm/", "/run/shm/"] {
            let p = format!("{dir}kdmtmpflush");
            assert_eq!(
                j(&p, Deleted, Executable),
                Some((Place::DeletedWorldWritable, Severity::High))
            );
            assert_eq!(
                j(&p, Deleted, Mapping),
                Some((Place::DeletedWorldWritable, Severity::High))
            );
            assert_eq!(
                j(&p, Linked, Executable),
                Some((Place::WorldWritable, Severity::Medium))
            );
        }
        // deleted elsewhere
        assert_eq!(
            j("/root/.cache/x", Deleted, Executable),
            Some((Place::Deleted, Severity::Medium))
        );
        // libraries from outside the system directories: low; installed ones: nothing
        assert_eq!(
            j("/root/.x/libs.so", Linked, Mapping),
            Some((Place::NonSystem, Severity::Low))
        );
        assert_eq!(
            j("/srv/app/lib/libapp.so", Linked, Mapping),
            Some((Place::NonSystem, Severity::Low))
        );
        for installed in [
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/lib64/ld-linux-x86-64.so.2",
            "/usr/local/lib/libx.so",
            "/opt/app/lib/liby.so",
        ] {
            assert_eq!(j(installed, Linked, Mapping), None, "{installed}");
        }
        // a prefix is a directory, not a name's start
        assert_eq!(j("/tmpfs-tools/x", Linked, Executable), None);
        assert_eq!(
            j("/usrx/lib.so", Linked, Mapping).map(|v| v.0),
            Some(Place::NonSystem)
        );
        assert_eq!(
            j("/usrx/x", Deleted, Executable).map(|v| v.0),
            Some(Place::Deleted)
        );
    }
}

#[cfg(test)]
mod synthetic_tests {
    use vmi_core::testing::{VM_EXEC, VM_READ};

    use crate::checks::synthetic::{ev, ev_addr, run, run_on, single, system};
    use crate::checks::{Check, Settings};
    use crate::finding::Severity;
    use crate::policy::Policy;

    const CHECK: Check = Check::ExecLocation;

    #[test]
    fn clean_system_and_an_upgraded_daemon() {
        let mut s = system();
        assert!(run(system().sk, CHECK).is_empty());
        // apt replaced sshd and a library under it
        s.sk.unlink(b"/usr/sbin/sshd");
        let mm = s.sk.get(s.sshd.task, "task_struct", "mm");
        s.sk.add_vma(
            vmi_core::Va(mm),
            (0x7f00_0000_0000, 0x7f00_0001_0000),
            VM_READ | VM_EXEC,
            Some(b"/usr/lib/x86_64-linux-gnu/libcrypto.so.3"),
            None,
        );
        s.sk.unlink(b"/usr/lib/x86_64-linux-gnu/libcrypto.so.3");
        assert!(run(s.sk, CHECK).is_empty());
    }

    #[test]
    fn a_memfd_stage_is_high() {
        let mut s = system();
        let t = s.sk.add_process(2000, b"3", 0);
        let memfd = s.sk.memfd_file(b"stage2");
        let mm = s.sk.exec_file(&t, memfd, &[b"stage2"], b"/dev/fd/3");
        // its own text, mapped from the memfd: judged once, as the executable
        s.sk.add_file_vma(mm, (0x40_0000, 0x40_1000), VM_READ | VM_EXEC, memfd);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(f.key, "exec-location:exe:2000:2000000");
        assert_eq!(ev(f, "file"), "/memfd:stage2 (deleted)");
        assert_eq!(ev(f, "rule"), "memory");
        assert_eq!(ev(f, "role"), "executable");
    }

    #[test]
    fn a_deleted_binary_in_dev_shm_is_high() {
        let mut s = system();
        let t = s.sk.add_process(2100, b"haldaemon", 0);
        let exe: &[u8] = b"/dev/shm/kdmtmpflush";
        s.sk.exec(&t, exe, &[b"/usr/sbin/haldaemon"], exe);
        s.sk.unlink(exe);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(ev(f, "file"), "/dev/shm/kdmtmpflush (deleted)");
        assert_eq!(ev(f, "rule"), "deleted-world-writable");
    }

    #[test]
    fn libraries_from_tmp_and_memfd_are_one_finding_each() {
        let mut s = system();
        let lib: &[u8] = b"/tmp/libhide.so";
        for (i, perms) in [VM_READ | VM_EXEC, VM_READ, VM_READ | VM_EXEC]
            .into_iter()
            .enumerate()
        {
            let start = 0x7f00_0000_0000 + 0x1_0000 * i as u64;
            s.sk.add_vma(s.bash_mm, (start, start + 0x1000), perms, Some(lib), None);
        }
        let jit = s.sk.memfd_file(b"doublemapper");
        s.sk.add_file_vma(
            s.bash_mm,
            (0x7f10_0000_0000, 0x7f10_0000_1000),
            VM_READ | VM_EXEC,
            jit,
        );
        // a data file in /tmp is not code
        s.sk.add_vma(
            s.bash_mm,
            (0x7f20_0000_0000, 0x7f20_0000_1000),
            VM_READ,
            Some(b"/tmp/data"),
            None,
        );
        let findings = run(s.sk, CHECK);
        assert_eq!(findings.len(), 2, "{findings:#?}");
        let tmp = &findings[0];
        assert_eq!(
            (
                tmp.severity,
                ev(tmp, "file").as_str(),
                ev(tmp, "rule").as_str()
            ),
            (Severity::Medium, "/tmp/libhide.so", "world-writable")
        );
        assert_eq!(ev_addr(tmp, "start"), 0x7f00_0000_0000);
        assert_eq!(tmp.key, "exec-location:map:1000:1000000:/tmp/libhide.so");
        let mem = &findings[1];
        assert_eq!(
            (
                mem.severity,
                ev(mem, "file").as_str(),
                ev(mem, "role").as_str()
            ),
            (Severity::Medium, "/memfd:doublemapper (deleted)", "mapping")
        );
    }

    #[test]
    fn the_policy_allows_by_path() {
        let mut s = system();
        let t = s.sk.add_process(2000, b"runc:[2:INIT]", 0);
        let memfd = s.sk.memfd_file(b"runc_cloned:/proc/self/exe");
        s.sk.exec_file(&t, memfd, &[b"runc", b"init"], b"/proc/self/exe");
        let settings = |text: &str| Settings {
            policy: Some(Policy::parse(text).unwrap()),
            ..Settings::default()
        };
        let allowed = settings("allow_exec_location = [\"/memfd:runc_cloned:*\"]");
        assert!(run_on(s.sk, &[], &allowed, CHECK).unwrap().is_empty());
        let mut s = system();
        let t = s.sk.add_process(2000, b"runc:[2:INIT]", 0);
        let memfd = s.sk.memfd_file(b"runc_cloned:/proc/self/exe");
        s.sk.exec_file(&t, memfd, &[b"runc", b"init"], b"/proc/self/exe");
        let other = settings("allow_exec_location = [\"/tmp/*\"]");
        assert_eq!(run_on(s.sk, &[], &other, CHECK).unwrap().len(), 1);
    }

    #[test]
    fn a_library_from_outside_the_system_directories_is_low() {
        let mut s = system();
        let lib: &[u8] = b"/root/.x/libs.so";
        let at = (0x7f00_0000_0000, 0x7f00_0000_1000);
        s.sk.add_vma(s.bash_mm, at, VM_READ | VM_EXEC, Some(lib), None);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::Low);
        assert_eq!(ev(f, "rule"), "non-system");
        assert_eq!(ev(f, "file"), "/root/.x/libs.so");
        assert_eq!(ev(f, "role"), "mapping");
        let mut s = system();
        s.sk.add_vma(s.bash_mm, at, VM_READ | VM_EXEC, Some(lib), None);
        let allowed = Settings {
            policy: Some(Policy::parse("allow_exec_location = [\"/root/.x/*\"]").unwrap()),
            ..Settings::default()
        };
        assert!(run_on(s.sk, &[], &allowed, CHECK).unwrap().is_empty());
    }

    /// The clean system with sshd's `exe_file` pointing at unmapped kernel memory.
    fn sshd_exe_unreadable() -> vmi_core::testing::SyntheticKernel {
        let mut s = system();
        let mm = s.sk.get(s.sshd.task, "task_struct", "mm");
        let exe_file = 0xffff_8000_dead_0000;
        s.sk.set(vmi_core::Va(mm), "mm_struct", "exe_file", exe_file);
        s.sk
    }

    /// A process whose executable cannot be read because it exited while it was read
    /// (the census saw it as it was) is no finding.
    #[test]
    fn an_exited_process_is_not_reported_unreadable() {
        let kernel = sshd_exe_unreadable().discover().unwrap();
        let settings = Settings::default();
        let scan = crate::checks::Scan::new(&kernel, &[], &settings);
        let procs = scan.processes().unwrap();
        let mut gone = procs.iter().find(|p| p.pid == 400).unwrap().clone();
        let mut out = Vec::new();
        super::one(&scan, &gone, None, &mut out);
        assert_eq!(out.len(), 1, "{out:#?}");
        // the census saw another comm: the task changed since
        gone.comm = b"sshd-old".to_vec();
        out.clear();
        super::one(&scan, &gone, None, &mut out);
        assert!(out.is_empty(), "{out:#?}");
    }

    #[test]
    fn an_unreadable_executable_is_a_low_finding() {
        let findings = run(sshd_exe_unreadable(), CHECK);
        let f = single(&findings, CHECK, Severity::Low);
        assert_eq!(ev(f, "rule"), "unreadable");
        assert_eq!(ev(f, "pid"), "400");
    }
}
