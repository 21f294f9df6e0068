//! `malfind`: code a user process wrote into its own memory, or had written into it.
//!
//! Named after Volatility's `linux.malfind`, which looks for the same thing: memory
//! that is executable and was not loaded from a file the way the loader maps
//! programs. Injected code (shellcode written through `ptrace` or
//! `/proc/PID/mem`, a reflectively loaded library, a packer's unpacked payload) has to
//! live in such memory. Reported, for every mapping of every user process
//! ([`vmi_core::kernel::vma`]):
//!
//! - executable and writable (any: anonymous or a file mapped `PROT_WRITE|PROT_EXEC`):
//!   high when anonymous, medium for a file;
//! - executable and anonymous (not file-backed; the kernel's own special mappings such
//!   as the vDSO are not anonymous memory and are not reported): medium. Memory written
//!   and then made executable with `mprotect` looks like this.
//!
//! Evidence: the process, the range, `rwxp` and `vm_flags`, what the mapping is
//! (`anonymous`, `[heap]`, `[stack]`, a path) and its first 64 bytes as hex and as
//! printable ASCII (other bytes as `.`), or `not resident` when its first page is not
//! in memory.
//!
//! What a real system has: just-in-time compilers map memory writable and executable
//! or anonymous and executable by design (node and other V8 embedders, Java, .NET,
//! LuaJIT, browsers such as Firefox and Chromium, PCRE2 with JIT, some Python
//! extensions). A host that runs them should list their executables in the policy's
//! `allow_jit` (globs over the executable's path, as `deny_exe`): their mappings are
//! then not reported. A plain Debian or Ubuntu system without JITs has none: the
//! loader maps code read-only from files, the stack is not executable.

use vmi_core::kernel::vma::{MapName, UserBytes, Vma};
use vmi_core::kernel::Process;
use vmi_core::memory::PhysicalMemory;

use crate::checks::{reread, CheckFailure, Scan, READ_TRIES};
use crate::finding::{guest_str, Finding, Severity};

const NAME: &str = "malfind";
/// Bytes of each mapping shown.
pub const PREVIEW: usize = 64;

/// Why a mapping is reported (`None`: it is not).
pub fn suspicious(v: &Vma) -> Option<Severity> {
    if !v.is_exec() {
        return None;
    }
    match (v.is_write(), v.is_anonymous()) {
        (true, true) => Some(Severity::High),
        (true, false) | (false, true) => Some(Severity::Medium),
        (false, false) => None,
    }
}

/// `bytes` as hex, two digits a byte, space-separated (as hexdump shows them).
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(1)
        .map(hex::encode)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `bytes` as printable ASCII, `.` for every other byte (as hexdump shows them).
pub fn ascii(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    crate::checks::per_process(scan, one)
}

/// The findings of one user process (into `out`).
pub fn one<M: PhysicalMemory>(
    scan: &Scan<'_, M>,
    p: &Process,
    policy: Option<&crate::policy::Policy>,
    out: &mut Vec<Finding>,
) {
    let k = scan.kernel;
    let comm = guest_str(&p.comm);
    let id = format!("{}:{}", p.pid, p.start_time);
    let vmas = match reread(k, READ_TRIES, || k.vmas(p.mm)) {
        Ok(v) => v,
        Err(e) => {
            out.push(
                Finding::new(
                    NAME,
                    Severity::Low,
                    format!("{NAME}:unreadable:{id}"),
                    format!(
                        "the memory mappings of process {} ({comm}) cannot be read, so they cannot be checked: {e}",
                        p.pid
                    ),
                )
                .num("pid", u64::from(p.pid))
                .text("comm", comm.clone()),
            );
            return;
        }
    };
    let flagged: Vec<(&Vma, Severity)> = vmas
        .iter()
        .filter_map(|v| suspicious(v).map(|s| (v, s)))
        .collect();
    if flagged.is_empty() {
        return;
    }
    let exe = k.exe_file(p.mm).ok().flatten();
    if let (Some(exe), Some(policy)) = (&exe, policy) {
        if policy.jit_allowed(&exe.path) {
            return;
        }
    }
    // named as /proc/PID/exe names it (` (deleted)`, `/memfd:NAME (deleted)`)
    let exe = exe.map(|e| e.display());
    for (v, severity) in flagged {
        let what = match k.map_name(p.mm, v) {
            Ok(MapName::None) if v.is_anonymous() => "anonymous".to_string(),
            Ok(MapName::None) => "special mapping".to_string(),
            Ok(n) => guest_str(&n.display()),
            Err(e) => format!("unnamed ({e})"),
        };
        let (bytes, text) = match k.user_bytes(p.mm, v.start, PREVIEW) {
            Ok(UserBytes::Resident(b)) => (hex(&b), ascii(&b)),
            Ok(UserBytes::NotResident) => ("not resident".to_string(), String::new()),
            Err(e) => (format!("unreadable: {e}"), String::new()),
        };
        let perms = v.perms();
        let mut f = Finding::new(
            NAME,
            severity,
            format!("{NAME}:{id}:{:#x}", v.start),
            format!(
                "process {} ({comm}) has {perms} {what} memory at {:#x}-{:#x}: code written at run time (injected, unpacked or a JIT's)",
                p.pid, v.start, v.end
            ),
        )
        .num("pid", u64::from(p.pid))
        .text("comm", comm.clone())
        .addr("start", v.start)
        .addr("end", v.end)
        .text("perms", perms)
        .addr("vm_flags", v.flags)
        .text("mapping", what)
        .text("bytes", bytes);
        if !text.is_empty() {
            f = f.text("ascii", text);
        }
        if let Some(exe) = &exe {
            f = f.text("exe", guest_str(exe));
        }
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmi_core::kernel::vma::{VM_EXEC, VM_MAYSHARE, VM_READ, VM_WRITE};
    use vmi_core::Va;

    fn vma(flags: u64, file: u64, ops: u64) -> Vma {
        Vma {
            addr: Va(0xffff_8880_0000_1000),
            start: 0x7f00_0000_0000,
            end: 0x7f00_0000_1000,
            flags,
            pgoff: 0,
            file: Va(file),
            ops: Va(ops),
            private_data: 0,
            anon_name: 0,
        }
    }

    #[test]
    fn what_is_reported() {
        const FILE: u64 = 0xffff_8880_0000_2000;
        const OPS: u64 = 0xffff_ffff_8220_0000;
        let rwx = VM_READ | VM_WRITE | VM_EXEC;
        let rx = VM_READ | VM_EXEC;
        assert_eq!(suspicious(&vma(rwx, 0, 0)), Some(Severity::High));
        assert_eq!(suspicious(&vma(rx, 0, 0)), Some(Severity::Medium));
        assert_eq!(
            suspicious(&vma(rwx | VM_MAYSHARE, FILE, OPS)),
            Some(Severity::Medium)
        );
        // program text, data, the vDSO
        assert_eq!(suspicious(&vma(rx, FILE, OPS)), None);
        assert_eq!(suspicious(&vma(VM_READ | VM_WRITE, 0, 0)), None);
        assert_eq!(suspicious(&vma(rx, 0, OPS)), None);
    }

    #[test]
    fn evidence_is_printable() {
        let b = b"\x48\x31\xc0VMI\x1b[2J\\\xff";
        assert_eq!(hex(&b[..3]), "48 31 c0");
        assert_eq!(ascii(b), "H1.VMI.[2J\\.");
    }
}

#[cfg(test)]
mod synthetic_tests {
    use vmi_core::testing::{VM_EXEC, VM_READ, VM_WRITE};
    use vmi_core::Va;

    use crate::checks::synthetic::{ev, run, run_on, single, system};
    use crate::checks::{Check, Settings};
    use crate::finding::Severity;
    use crate::policy::Policy;

    const CHECK: Check = Check::Malfind;
    const AT: u64 = 0x7f12_3400_0000;
    const SHELLCODE: &[u8] = b"\x48\x31\xc0\x50\x48\xbb/bin//sh";

    #[test]
    fn clean_with_code_mapped_from_files() {
        assert!(run(system().sk, CHECK).is_empty());
    }

    #[test]
    fn injected_code_in_anonymous_writable_memory_is_high_with_its_bytes() {
        let mut s = system();
        let rwx = VM_READ | VM_WRITE | VM_EXEC;
        s.sk.add_vma(s.bash_mm, (AT, AT + 0x1000), rwx, None, Some(SHELLCODE));
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(f.key, format!("malfind:1000:1000000:{AT:#x}"));
        assert_eq!(ev(f, "perms"), "rwxp");
        assert_eq!(ev(f, "mapping"), "anonymous");
        assert!(ev(f, "bytes").starts_with("48 31 c0 50 48 bb 2f"), "{f:#?}");
        assert!(ev(f, "ascii").contains("/bin//sh"), "{f:#?}");
    }

    #[test]
    fn a_jit_the_policy_allows_is_not_reported() {
        let mut s = system();
        let rwx = VM_READ | VM_WRITE | VM_EXEC;
        s.sk.add_vma(s.bash_mm, (AT, AT + 0x1000), rwx, None, Some(SHELLCODE));
        let settings = Settings {
            policy: Some(Policy::parse("allow_jit = [\"/usr/bin/bash\"]").unwrap()),
            ..Settings::default()
        };
        assert!(run_on(s.sk, &[], &settings, CHECK).unwrap().is_empty());
    }

    #[test]
    fn a_writable_file_mapping_and_anonymous_code_not_resident_are_medium() {
        let mut s = system();
        let rwx = VM_READ | VM_WRITE | VM_EXEC;
        s.sk.add_vma(
            s.bash_mm,
            (AT, AT + 0x1000),
            rwx,
            Some(b"/tmp/lib.so"),
            None,
        );
        let next = (AT + 0x10_0000, AT + 0x11_0000);
        s.sk.add_vma(s.bash_mm, next, VM_READ | VM_EXEC, None, None);
        let findings = run(s.sk, CHECK);
        assert_eq!(findings.len(), 2, "{findings:#?}");
        assert!(findings.iter().all(|f| f.severity == Severity::Medium));
        assert_eq!(ev(&findings[0], "mapping"), "/tmp/lib.so");
        assert_eq!(ev(&findings[1], "bytes"), "not resident");
    }

    #[test]
    fn a_mapping_of_another_mm_or_a_loop_is_a_low_finding() {
        let mut s = system();
        let vma = Va(s.sk.get(s.bash_mm, "mm_struct", "mmap"));
        s.sk.set(vma, "vm_area_struct", "vm_mm", s.sk.symbol("init_mm").0);
        let findings = run(s.sk, CHECK);
        assert_eq!(
            single(&findings, CHECK, Severity::Low).key,
            "malfind:unreadable:1000:1000000"
        );

        let mut s = system();
        let vma = Va(s.sk.get(s.bash_mm, "mm_struct", "mmap"));
        s.sk.set(vma, "vm_area_struct", "vm_next", vma.0);
        let findings = run(s.sk, CHECK);
        single(&findings, CHECK, Severity::Low);
    }
}
