//! The clean guest of a kernel: nothing is hooked, so `check` must find nothing, live
//! and on an ELF dump, and no check may fail; `identify`, `ps`, `lsmod`, `sockets` and
//! `maps` must equal what the guest says, and the walkers the checks compare read what
//! the guest's own tracing, tty and /proc/net views show. The 7.x guests are then hooked
//! through ftrace, kprobes and a tracepoint ([`tracing_hooks`]), have a process marked
//! as Diamorphine marks it (`vmi_markproc`) and run the user-space implants of
//! [`fileless::implants`], found live, paused and from a dump.
//! Paused, the guest's tasks and modules lists are broken on purpose
//! ([`hostile::never_blind`]).

use super::*;

/// Clean guests hooked through ftrace, kprobes and a tracepoint after their clean
/// checks: the 7.x builds, whose modules the lab builds with their suite's gcc.
pub(crate) const HOOKED_CLEAN_KERNELS: &[&str] = &["newest:7.2", "newest:7"];

/// One clean guest of `kernel`: its views, walkers and checks against the guest, live and
/// from a dump; a 7.x guest is then hooked through tracing.
pub(crate) fn clean(lab: &Lab, kernel: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let (profiles, d) = detector_for(lab, kernel);
    let mut scenario = Scenario::standard().ksym("worker_thread");
    if HOOKED_CLEAN_KERNELS.contains(&kernel) {
        scenario = scenario.sleeper("vmi-marked");
        for m in TRACING_MODULES.into_iter().chain(["vmi_markproc"]) {
            scenario = scenario.file(
                common::attack_module(lab, kernel, m),
                &format!("/lab/{m}.ko"),
                0o644,
            );
        }
    }
    let mut guest = match lab.boot(kernel, &scenario, &BootOptions::default()) {
        Ok(g) => g,
        Err(e) => return vec![format!("{kernel}: boot: {e}")],
    };
    let truth = guest.refresh_truth().expect("truth");
    let label = format!("{kernel} ({})", truth.release);
    let sock = guest.qmp_socket();
    guest.pause().expect("pause");
    guest.release_qmp();
    problems.extend(views_match(
        &label,
        &d,
        &["--qemu", sock.to_str().unwrap()],
        &truth,
    ));
    problems.extend(walkers_see_the_guest(&label, &mut guest, profiles.path()));
    problems.extend(hostile::never_blind(
        &label,
        &d,
        &mut guest,
        profiles.path(),
    ));
    guest.resume().expect("resume");
    problems.extend(verify::verify_step(&label, &mut guest, profiles.path()));
    problems.extend(tracing_walkers(&label, &d, &mut guest, profiles.path()));
    problems.extend(hook_table_walkers(&label, &mut guest, profiles.path()));
    problems.extend(start_sockets(&label, &mut guest));
    problems.extend(sockets_match(&label, &d, &mut guest));
    problems.extend(malfind::maps_match(&label, &d, &mut guest, &[]));
    problems.extend(hold_debugfs_file(&label, &mut guest));
    let run = d.live(&mut guest, &["--json", "check"]);
    problems.extend(expect_exactly(&format!("{label} live"), &run, &[]));
    let dump = tempfile::tempdir().expect("tempdir");
    let elf = dump.path().join("g.elf");
    guest.dump_elf(&elf).expect("ELF dump");
    let run = d.run(&["--dump", elf.to_str().unwrap()], &["--json", "check"]);
    problems.extend(expect_exactly(&format!("{label} ELF"), &run, &[]));
    if HOOKED_CLEAN_KERNELS.contains(&kernel) {
        // then hooked through ftrace, kprobes and a tracepoint (step 7 of the
        // attacks), found live, paused and from a dump
        let mut wants = Vec::new();
        problems.extend(tracing_hooks(&label, &d, &mut guest, &mut wants));
        // a process marked as Diamorphine marks those it hides (step 1b)
        let marked = pid_of(&truth, "vmi-marked");
        insmod(
            kernel,
            &mut guest,
            &format!("/lab/vmi_markproc.ko pid={marked}"),
        );
        wants.push(want("the mark on vmi-marked", "hidden-process", move |e| {
            e["pid"] == marked && e["comm"] == "vmi-marked" && e["bits"] == "0x10000000"
        }));
        // and user-space implants (no module: they run on any kernel)
        let (implants, p) = fileless::implants(&label, &d, &mut guest, &mut wants);
        problems.extend(p);
        guest.dump_elf(&elf).expect("ELF dump");
        let run = d.run(&["--dump", elf.to_str().unwrap()], &["--json", "check"]);
        problems.extend(expect_exactly(
            &format!("{label} hooked, ELF"),
            &run,
            &wants,
        ));
        let vol = Volatility::new(lab, kernel, &elf, &d);
        problems.extend(fileless::volatility_maps(&vol, &d, &elf, &implants));
    }
    guest.shutdown().expect("shutdown");
    problems
}

/// A process holding a debugfs file open, as tools reading debugfs do: debugfs (before
/// 6.13) gives the open file a `file_operations` of its own on the heap, the kernel's,
/// which `vfs-ops` must not report.
pub(crate) fn hold_debugfs_file(label: &str, guest: &mut Guest) -> Vec<String> {
    let out = guest
        .sh(
            "mkdir -p /sys/kernel/debug; mount -t debugfs nodev /sys/kernel/debug 2>/dev/null; \
             f=/sys/kernel/debug/dynamic_debug/control; \
             [ -e $f ] && { sleep 100000 < $f >/dev/null 2>&1 & echo $! > /tmp/debugfs-holder; }; \
             sleep 1; \
             ls -l /proc/[0-9]*/fd/ 2>/dev/null | grep -c dynamic_debug/control",
        )
        .expect("debugfs");
    match out.lines.first().map(|l| l.trim()) {
        Some(n) if n != "0" => Vec::new(),
        _ => vec![format!(
            "{label}: no process holds /sys/kernel/debug/dynamic_debug/control open: {:?}",
            out.lines
        )],
    }
}

/// End the process [`hold_debugfs_file`] started (a root process later policy steps do
/// not expect), and wait until it has exited (whole seconds: busybox's `sleep` may not
/// take fractions). It may stay a zombie (the guest's pid 1 reaps orphans late), which
/// the policy check does not judge.
pub(crate) fn release_debugfs_file(label: &str, guest: &mut Guest) -> Vec<String> {
    let out = guest
        .sh("p=$(cat /tmp/debugfs-holder); kill $p; i=0; \
             alive() { [ -e /proc/$p ] && ! grep -q '^State:.*Z' /proc/$p/status 2>/dev/null; }; \
             while alive && [ $i -lt 10 ]; do sleep 1; i=$((i+1)); done; \
             rm -f /tmp/debugfs-holder; alive && echo still there; true")
        .expect("ending the debugfs holder");
    if out.lines.iter().any(|l| l.contains("still there")) {
        vec![format!("{label}: the debugfs holder did not end in 10 s")]
    } else {
        Vec::new()
    }
}
