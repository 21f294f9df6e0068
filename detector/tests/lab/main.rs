//! The detector end to end on real guests: the `detector` binary against live QEMU
//! guests and their ELF dumps, profiles made by profile-gen from each kernel's -dbg
//! package, ground truth from the guests themselves.
//!
//! One test per kernel of the lab's matrix, each booting one guest and running every
//! check's step on it (one file per check or view: `views.rs`, `tracing.rs`, `tables.rs`,
//! `spoofing.rs`, `sockets.rs`, `malfind.rs`, `ebpf.rs`, `policy.rs`, `verify.rs`, `hostile.rs`; the scenario in
//! `attacks.rs` and `clean.rs`). A guest is shared by the steps, not booted per check:
//! the attacks build on each other (after each, `check` must report exactly the
//! findings of all attacks so far, which is what shows that no check hides or invents
//! another's findings), and nextest runs each test in a process of its own.
//!
//! - `attacks_*`: on Debian 6.1 and 6.12 (the kernels this machine's gcc builds
//!   modules for). Clean first: `check` finds nothing,
//!   `ps`/`lsmod` equal the guest's own view, and the views the checks compare (pid
//!   namespace IDR, module kset, syscall table, IDT, and the tracing walkers against the
//!   guest's own kprobe events, function tracer and trace events) are really read. Then
//!   test rootkits (`tests/mods/*.c`: an inline hook found by comparing kernel text with
//!   the image, hooks through ftrace, kprobes and a tracepoint whose modules hide, a
//!   netfilter hook, a keyboard notifier from a module that hides, replaced tty and
//!   /proc/net/tcp operations, processes renamed with prctl or with rewritten
//!   arguments, and last a busy process hidden from every list but the
//!   runqueue) are loaded one after the other, and after each, `check` must report
//!   exactly the findings of the attacks so far, naming the right process, module,
//!   system call, vector, hooked function, hook point, chain, table and owner.
//!   Volatility 3's tracing, netfilter, keyboard_notifiers, tty_check, check_afinfo
//!   and process_spoofing plugins run on the ELF dump of the hooked guest: the
//!   detector must report every hook they do and both spoofed processes. With nc
//!   listeners and a connected pair up, `sockets` must list what the guest's /proc/net
//!   lists, with the pids its /proc/PID/fd give, `allow_listen` must flag the listeners
//!   it does not allow, and every TCP/UDP socket of Volatility's sockstat must be listed.
//!   A kernel perf counter with a module's overflow handler must be a perf-events
//!   finding. The lab worker then loads BPF programs through the raw bpf() syscall (a kprobe
//!   program on a kprobe perf event, a raw tracepoint program, a socket filter, a kprobe
//!   program on a perf event link; `ebpf.rs`): `bpf` must list them as the
//!   guest does, `ebpf` report all but the filter, and every program and perf event of Volatility's linux.ebpf and
//!   linux.tracing.perf_events must be the detector's too.
//!   The clean guests of the other kernels compare `sockets` with /proc/net too.
//!   A copy of the worker maps an anonymous RWX region holding shellcode-like bytes and
//!   one made r-x after it was written: `check` reports both with their first bytes,
//!   live and from the dump, and every region of Volatility's linux.malfind; `maps`
//!   equals /proc/PID/maps (also on the clean guests of the other kernels). A module
//!   then clears CR0.WP and CR4.SMEP on every CPU with plain `mov`s: `cpu-state` must
//!   report both per vCPU, live, paused and from the dump. A module starts a kernel
//!   thread and hides itself: `kthreads` must name the thread and the hidden module
//!   that owns its function (and `hidden-module` the module), live, paused and from the
//!   dump, and agree with Volatility's linux.kthreads. After `vmi_hideproc`, `ps`
//!   still lists the hidden process, marked as held by the pid namespace only, warns and
//!   exits 1. `vmi_markproc` sets Diamorphine's PF_INVISIBLE bit on a process:
//!   `hidden-process` reports the mark. `vmi_pagerw` sets the writable bit of the
//!   page-table entry that maps sys_call_table: `kernel-pages` reports read-only data
//!   mapped writable. Last, user-space implants (`fileless.rs`): a memfd second stage run
//!   with fexecve, a dropper that ran from /dev/shm and deleted itself, libraries
//!   mapped from /tmp, a deleted /dev/shm file and a memfd: `exec-location` reports
//!   each, live, paused and from the dump; `ps` and `maps` name them as /proc does,
//!   and as Volatility's linux.proc.Maps does. A `detector watch` at 10 Hz (incremental
//!   scans) runs beside the attacks from the clean guest to the dump (`watching.rs`):
//!   it must raise each finding of each live `check` within a second of it, and hold
//!   open exactly what `check` finds in the dump.
//! - `clean_*`: every other kernel of the lab's matrix (5.10, 7.2, newest 7.x): `check` live and on an ELF dump finds nothing and no
//!   check fails; `identify`, `ps` and `lsmod` agree with the guest, the tracing walkers
//!   read what the guest's own tracing shows, and the tty and /proc/net walkers what
//!   `/proc/tty/{ldiscs,drivers}` and `/proc/net` list. The 7.x guests are then hooked
//!   as in step 7 (ftrace, kprobes, a tracepoint; modules built with sid's gcc-16 and
//!   trixie's gcc-14 in a Debian root the lab makes), found live, paused and from a dump,
//!   and the user-space implants of `fileless.rs` started (live, paused, the dump,
//!   Volatility's linux.proc.Maps).
//!   Paused, each clean guest's tasks and modules lists are broken in its RAM
//!   (`hostile.rs`: a loop, wild pointers, a process cut out of both halves of the
//!   list): `ps`, `lsmod` and `check` must still see every process and module, report
//!   each break and exit 1.
//! - `injection_*`: on 6.1, 6.12 and the newest 7.x (`injection.rs`): the lab worker
//!   holds its child traced with `PTRACE_SEIZE` and a grandchild with `PTRACE_ATTACH`;
//!   the guest's `/proc/PID/status` names it as `TracerPid` of both, and `ptrace`
//!   reports both, high, naming tracee and tracer, live and paused, and nothing with a
//!   policy that allows the worker as a tracer. A process started with `LD_PRELOAD`
//!   (a library in /dev/shm) and `LD_LIBRARY_PATH=/tmp`, and an /etc/ld.so.preload
//!   written and read: `preload` reports both variables as the guest's
//!   /proc/PID/environ holds them and the file with its content, live, paused and
//!   from the dump (with the traces), and nothing with a policy allowing them. The
//!   worker's io_uring instances (one plain, one with `IORING_SETUP_SQPOLL`): `ps
//!   --json` lists them with the descriptors `/proc/PID/fd` shows as
//!   `anon_inode:[io_uring]` and the polling thread `/proc/PID/task` names, live and
//!   from the dump, and `ps` marks the process. Volatility 3's linux.ptrace and
//!   linux.envars on the dump show exactly the traced threads and loader variables
//!   the detector reports.
//! - `evidence_*`: the evidence commands (`evidence.rs`) on 6.1, 6.12 and the newest
//!   7.x: `env` and `lsof` of a process with a chosen environment and open files of
//!   every kind equal its `/proc/PID/environ`, `/proc/PID/fd` and fdinfo; `cat` of an
//!   ld.so.preload, a crontab, authorized_keys and a file on a tmpfs mounted on the way
//!   gives the guest's bytes and `cat --list /etc` its `ls -A`; `dump-process` gives a
//!   core gdb opens with the process's mappings, environment and `$pc`/`$sp` as the
//!   guest's /proc says; `dump-module` of a listed module, one hidden from the list
//!   and one hidden from the list and /sys/module (only the module tree holds it), by
//!   name and by address, gives ELF files with the guest's sections (/sys/module),
//!   symbols (/proc/kallsyms, the .ko) and the .ko's bytes, and names the views
//!   holding each; live and from an ELF dump.
//! - `socket_filter_*`: on 6.1, 6.12 and the newest 7.x (`sockets.rs`' `packet_filter`):
//!   `check` finds nothing on the clean guest; the lab worker then runs as BPFDoor
//!   does (from a deleted /dev/shm copy, renamed `haldaemon`) holding an AF_PACKET raw
//!   socket with a classic BPF filter for a magic packet, a raw UDP socket with an
//!   eBPF filter, unix sockets on a path and an abstract name and a netlink socket:
//!   `sockets` lists them as /proc/net/{packet,raw,unix,netlink} and /proc/PID/fd do,
//!   the classic program decoded as `tcpdump -d` prints it and the eBPF one by the id
//!   the kernel gave the worker; `socket-filter` reports both filters, high, live and
//!   from the dump, and nothing with a policy allowing the program; every backdoor
//!   socket and filter of Volatility's linux.sockstat is the detector's too.
//! - `no_dbg_*`: `kernel-text` with the boot image (vmlinuz) and kernel packages as
//!   `--image`, and `kernel-entries` without an image, on every matrix kernel
//!   (`nodbg.rs`): nothing on the clean guest, and on 6.1 and 6.12 `vmi_inline`'s hook,
//!   live, paused and from a dump; `vmi_ftrace`'s hook left to the `ftrace` check.

mod attacks;
mod clean;
#[path = "../common/mod.rs"]
mod common;
mod ebpf;
mod evidence;
mod fileless;
mod harness;
mod hostile;
mod injection;
mod malfind;
mod moddump;
mod nodbg;
mod policy;
mod sockets;
mod spoofing;
mod tables;
mod tracing;
mod verify;
mod views;
mod volatility;
mod watching;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use vmi_core::kernel::pidns::PidLimits;
use vmi_core::kernel::{Hints, Kernel, ProfileSet};
use vmi_core::memory::{QemuLive, QemuOptions, VcpuRegisters};
use vmi_lab::python::{Venv, VOLATILITY};
use vmi_lab::{BootOptions, GroundTruth, Guest, Lab, Scenario, MATRIX};

use attacks::*;
use harness::*;
use policy::*;
use sockets::*;
use spoofing::*;
use tables::*;
use tracing::*;
use views::*;
use volatility::*;

/// One test per kernel: `$run(&lab, kernel)` returns the problems found.
macro_rules! per_kernel {
    ($list:ident: $run:path { $($name:ident: $kernel:expr,)* }) => {
        $(
            #[test]
            fn $name() {
                let lab = Lab::open_default().expect("lab");
                let problems = $run(&lab, $kernel);
                assert!(problems.is_empty(), "{}", problems.join("\n"));
            }
        )*
        /// The kernels these tests boot.
        const $list: &[&str] = &[$($kernel),*];
    };
}

per_kernel!(ATTACKED: attacks::attack {
    attacks_on_6_1_are_found_and_named: "6.1.0-56-amd64",
    attacks_on_6_12_are_found_and_named: "6.12.117+deb12-amd64",
});

per_kernel!(NO_DBG: nodbg::nodbg {
    no_dbg_6_1_finds_the_inline_hook: "6.1.0-56-amd64",
    no_dbg_6_12_finds_the_inline_hook: "6.12.117+deb12-amd64",
    no_dbg_5_10_clean_raises_nothing: "5.10.0-46-amd64",
    no_dbg_7_2_clean_raises_nothing: "newest:7.2",
    no_dbg_newest_7_clean_raises_nothing: "newest:7",
});

per_kernel!(SOCKET_FILTER: sockets::packet_filter {
    socket_filter_6_1_finds_the_backdoor_filter: "6.1.0-56-amd64",
    socket_filter_6_12_finds_the_backdoor_filter: "6.12.117+deb12-amd64",
    socket_filter_newest_7_finds_the_backdoor_filter: "newest:7",
});

per_kernel!(CLEAN: clean::clean {
    clean_5_10_raises_nothing: "5.10.0-46-amd64",
    clean_newest_7_2_raises_nothing: "newest:7.2",
    clean_newest_7_raises_nothing: "newest:7",
});

per_kernel!(INJECTION: injection::injection {
    injection_6_1_finds_the_tracer: "6.1.0-56-amd64",
    injection_6_12_finds_the_tracer: "6.12.117+deb12-amd64",
    injection_newest_7_finds_the_tracer: "newest:7",
});

per_kernel!(EVIDENCE: evidence::evidence {
    evidence_6_1_matches_the_guest: "6.1.0-56-amd64",
    evidence_6_12_matches_the_guest: "6.12.117+deb12-amd64",
    evidence_newest_7_matches_the_guest: "newest:7",
});

/// Every kernel of the matrix has its test, the attack kernels theirs.
#[test]
fn every_matrix_kernel_has_a_test() {
    let mut tested: Vec<&str> = ATTACKED.iter().chain(CLEAN).copied().collect();
    tested.sort_unstable();
    let mut matrix = MATRIX.to_vec();
    matrix.sort_unstable();
    assert_eq!(tested, matrix);
    assert_eq!(ATTACKED, ATTACK_KERNELS);
    assert!(SOCKET_FILTER.iter().all(|k| MATRIX.contains(k)));
    let mut no_dbg = NO_DBG.to_vec();
    no_dbg.sort_unstable();
    assert_eq!(no_dbg, matrix);
    assert!(EVIDENCE.iter().all(|k| MATRIX.contains(k)));
    assert!(INJECTION.iter().all(|k| MATRIX.contains(k)));
}

#[test]
fn bad_input_is_an_error_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.raw");
    std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    let d = Detector {
        profiles,
        image: None,
    };
    // no profiles at all
    let run = d.run(&["--dump", junk.to_str().unwrap()], &["check"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no profiles"), "{}", run.stderr);
    // a missing dump, with --json: the error is JSON too
    let run = d.run(&["--dump", "/nonexistent/dump"], &["--json", "ps"]);
    assert_eq!(run.code, 2);
    assert!(run.json()["error"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/dump"));
    // a profile that is no profile
    let p = dir.path().join("p.json");
    std::fs::write(&p, "{}").unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_detector"))
        .args([
            "--dump",
            junk.to_str().unwrap(),
            "--profile",
            p.to_str().unwrap(),
            "check",
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("p.json"));
    // an unknown check name lists the real ones
    let run = d.run(
        &["--dump", junk.to_str().unwrap()],
        &["check", "--check", "idt,bogus"],
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("\"bogus\"") && run.stderr.contains("hidden-process, hidden-module"),
        "{}",
        run.stderr
    );
    // no source given
    let run = Command::new(env!("CARGO_BIN_EXE_detector"))
        .args(["identify"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr)
        .contains("--dump FILE, --qemu QMP_SOCKET, --qemu-pid PID or --libvirt NAME"));
}
