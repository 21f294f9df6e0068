//! Shared setup of the checks' unit tests on synthetic kernels
//! ([`vmi_core::testing::SyntheticKernel`]): no guest, no QEMU.
//!
//! [`system`] is a booted system with nothing to report (init, a kernel thread, a root
//! daemon, a user shell with a second thread, a listed module); each check's tests
//! tamper with it and assert what [`run`] finds, or that a corrupted kernel gives
//! [`fails`]' error instead of a panic or a hang.

use vmi_core::arch::x86_64::Registers;
use vmi_core::kernel::Kernel;
use vmi_core::memory::MockMemory;
use vmi_core::testing::{SynthModule, SynthTask, SyntheticKernel, VM_EXEC, VM_READ};
use vmi_core::Va;

use crate::checks::{Check, CheckFailure, Scan, Settings};
use crate::finding::{Evidence, Finding, Severity};

/// The booted system's parts, for the tests to tamper with.
pub(crate) struct System {
    pub sk: SyntheticKernel,
    /// pid 1, `systemd`.
    pub init: SynthTask,
    /// A root daemon, pid 400.
    pub sshd: SynthTask,
    /// A user shell (uid 1000), pid 1000, with thread 1001.
    pub bash: SynthTask,
    /// The shell's second thread.
    pub bash_thread: SynthTask,
    /// A listed module, `e1000`.
    pub e1000: SynthModule,
    /// The shell's address space (its text mapped from `/usr/bin/bash`).
    pub bash_mm: Va,
}

/// Where the system's programs map their text.
pub(crate) const TEXT_AT: u64 = 0x5555_5555_4000;

/// A clean, booted synthetic system (pid 1 `systemd`, kthreadd and the parts of
/// [`System`]; sshd and bash have run `execve`).
pub(crate) fn system() -> System {
    let mut sk = SyntheticKernel::clean();
    let systemd = sk.add_process(1, b"systemd", 0);
    sk.add_kthread(2, b"kthreadd");
    let sshd = sk.add_process(400, b"sshd", 0);
    let bash = sk.add_process(1000, b"bash", 1000);
    // init's children, as on a booted system (the builder parents every task to the
    // idle task)
    for child in [&sshd, &bash] {
        for f in ["real_parent", "parent"] {
            sk.set(child.task, "task_struct", f, systemd.task.0);
        }
    }
    let bash_thread = sk.add_thread(&bash, 1001, b"bash");
    let e1000 = sk.add_module(b"e1000", 0x2_0000);
    // what execve left: sshd's setproctitle, a login shell started as /bin/bash
    let sshd_argv: &[&[u8]] = &[b"sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"];
    // each with its executable's text, its stack and the vDSO
    let mm = sk.exec(&sshd, b"/usr/sbin/sshd", sshd_argv, b"/usr/sbin/sshd");
    let text = (TEXT_AT, TEXT_AT + 0x1_0000);
    sk.map_exe(mm, text, VM_READ | VM_EXEC, Some(b"\x7fELF"));
    sk.add_stack_and_vdso(mm);
    let init: &[&[u8]] = &[b"/usr/lib/systemd/systemd"];
    let init_mm = sk.exec(&systemd, b"/usr/lib/systemd/systemd", init, init[0]);
    sk.map_exe(init_mm, text, VM_READ | VM_EXEC, Some(b"\x7fELF"));
    sk.add_stack_and_vdso(init_mm);
    let bash_mm = sk.exec(&bash, b"/usr/bin/bash", &[b"-bash"], b"/bin/bash");
    sk.map_exe(bash_mm, text, VM_READ | VM_EXEC, None);
    sk.add_stack_and_vdso(bash_mm);
    // init holds the console as its standard input and output
    let console = sk.new_file(b"/dev/console");
    let fops = sk.symbol("tty_fops");
    sk.set(console, "file", "f_op", fops.0);
    for fd in 0..3 {
        sk.open_fd(&systemd, fd, console);
    }
    System {
        sk,
        init: systemd,
        sshd,
        bash,
        bash_thread,
        e1000,
        bash_mm,
    }
}

/// Discover the kernel (as on a real guest) and run `check` on it with `registers`
/// and `settings`.
pub(crate) fn run_on(
    sk: SyntheticKernel,
    registers: &[Registers],
    settings: &Settings,
    check: Check,
) -> Result<Vec<Finding>, CheckFailure> {
    let kernel: Kernel<MockMemory> = sk.discover().expect("discover the synthetic kernel");
    let scan = Scan::new(&kernel, registers, settings);
    scan.run(check)
}

/// The findings of `check`, which must run.
pub(crate) fn run(sk: SyntheticKernel, check: Check) -> Vec<Finding> {
    run_on(sk, &[], &Settings::default(), check).unwrap_or_else(|e| panic!("{}: {e}", check.name()))
}

/// The error of `check`, which must fail.
pub(crate) fn fails(sk: SyntheticKernel, check: Check) -> CheckFailure {
    match run_on(sk, &[], &Settings::default(), check) {
        Ok(f) => panic!("{} ran and found {f:?}", check.name()),
        Err(e) => e,
    }
}

/// Assert that a check fails on a kernel with an error that matches a pattern:
/// `assert_fails!(sk, check, CheckFailure::Walk { .. })`.
macro_rules! assert_fails {
    ($sk:expr, $check:expr, $($pattern:tt)+) => {{
        let e = $crate::checks::synthetic::fails($sk, $check);
        assert!(matches!(&e, $($pattern)+), "{e}");
    }};
}
pub(crate) use assert_fails;

/// The one finding of `findings`, of `check` and `severity`.
pub(crate) fn single(findings: &[Finding], check: Check, severity: Severity) -> &Finding {
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!(f.check, check.name());
    assert_eq!(f.severity, severity, "{f:#?}");
    f
}

/// The evidence `name` of `f`, displayed.
pub(crate) fn ev(f: &Finding, name: &str) -> String {
    f.evidence
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, e)| e.to_string())
        .unwrap_or_else(|| panic!("no evidence {name} in {f:#?}"))
}

/// The address evidence `name` of `f`.
pub(crate) fn ev_addr(f: &Finding, name: &str) -> u64 {
    match f.evidence.iter().find(|(n, _)| *n == name) {
        Some((_, Evidence::Addr(a))) => *a,
        other => panic!("evidence {name} of {f:#?} is {other:?}, not an address"),
    }
}

/// Every check that needs no configuration runs on [`system`] and finds nothing.
#[test]
fn a_clean_system_gives_no_finding() {
    let s = system();
    let kernel = s.sk.discover().unwrap();
    let report = crate::checks::run_once(&kernel, &[], &Check::ALL, &Settings::default());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(report.ran, Check::ALL);
}

/// Every pointer of the objects the checks walk, overwritten in turn with null, a
/// wild value, the object's own address (a loop) and an unmapped kernel address: the
/// checks end every time, with findings or errors, and never panic.
#[test]
fn any_corrupted_pointer_gives_a_result_never_a_panic() {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    // (object, its type) in a system with one hook of each kind
    let build = || {
        let mut s = system();
        let f = s.sk.kernel_fn();
        let ftrace = s.sk.add_ftrace_ops(s.e1000.code(0), &[f]);
        let kprobe = s.sk.add_kprobe(f, b"vfs_read", s.e1000.code(8));
        let nb =
            s.sk.add_notifier("keyboard_notifier_list", s.e1000.code(16), 0);
        let init_net = s.sk.symbol("init_net");
        let nf =
            s.sk.add_nf_hook(init_net, "hooks_ipv4", 1, s.e1000.code(24), 0);
        let tp =
            s.sk.add_tracepoint_probe("sys_enter", s.e1000.code(32), Va(0), 0);
        let event = s.sk.add_perf_event(Some(&s.bash), b"cpu", s.e1000.code(40));
        let prog = s.sk.add_bpf_prog(5, 2, b"p", [0; 8]);
        let driver = s.sk.first_tty_driver();
        let objects = vec![
            (s.sk.symbol("init_task"), "task_struct"),
            (s.bash.task, "task_struct"),
            (s.bash_thread.task, "task_struct"),
            (s.bash.signal, "signal_struct"),
            (s.bash.cred, "cred"),
            (s.bash.struct_pid, "pid"),
            (s.e1000.addr, "module"),
            (s.e1000.kobj, "kobject"),
            (ftrace, "ftrace_ops"),
            (kprobe, "kprobe"),
            (nb, "notifier_block"),
            (nf, "nf_hook_ops"),
            (tp, "tracepoint"),
            (event, "perf_event"),
            (prog, "bpf_prog"),
            (driver, "tty_driver"),
            (s.sk.ldisc_ops(0), "tty_ldisc_ops"),
            (init_net, "net"),
            (s.bash_mm, "mm_struct"),
            (
                Va(s.sk.get(s.bash_mm, "mm_struct", "mmap")),
                "vm_area_struct",
            ),
        ];
        (s, objects)
    };
    let (s, objects) = build();
    let mut cases = Vec::new();
    for &(at, ty) in &objects {
        for (name, field) in &s.sk.profile().types[ty].fields {
            if field.ty.starts_with("ptr") || field.ty.starts_with("struct list_head") {
                cases.push((at, ty, name.clone(), field.offset));
            }
        }
    }
    let values = [0, 0x4141_4141_4141_4141, u64::MAX, 0xffff_c900_dead_0000];
    let mut panics = Vec::new();
    for (at, ty, name, off) in &cases {
        for v in values.into_iter().chain([at.0]) {
            let (mut s, _) = build();
            s.sk.write_u64(Va(at.0 + off), v);
            let run = catch_unwind(AssertUnwindSafe(|| {
                if let Ok(kernel) = s.sk.discover() {
                    crate::checks::run_once(&kernel, &[], &Check::ALL, &Settings::default());
                }
            }));
            if run.is_err() {
                panics.push(format!("{ty}.{name} = {v:#x}"));
            }
        }
    }
    assert!(cases.len() > 90, "{} cases", cases.len());
    assert!(panics.is_empty(), "panics: {panics:?}");
}
