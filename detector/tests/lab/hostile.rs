//! Never blind: with the guest paused, one process's `tasks.next` in the guest's RAM is
//! made a loop, then a wild pointer, then a wild pointer with the next process's `prev`
//! wild too (that process is on neither half of the list); one module's `list.next` is
//! made a wild pointer. Each time `ps` and `lsmod` must still print every process and
//! module (the one cut out of both halves marked with the pid namespace), say the break
//! on stderr and exit 1, and `check` must report exactly the breaks (and the process cut
//! out) as high findings with every check run. Each write is restored, and after it
//! `ps` exits 0 again.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use vmi_core::kernel::Limits;
use vmi_core::Va;

use super::*;

/// Where each pointer the test rewrites is, read with the guest paused through a QEMU
/// source that is dropped before the detector connects (QMP takes one client).
struct Places {
    /// `tasks.next` of lab-sleeper, and its offset in the RAM file.
    victim_next: (Va, u64),
    /// The process after lab-sleeper on the list.
    lost_pid: u32,
    /// `tasks.prev` of the process after that one.
    beyond_prev: (Va, u64),
    /// The first listed module's `list.next`.
    module_next: (Va, u64),
    pids: BTreeSet<u64>,
    modules: BTreeSet<String>,
}

fn places(guest: &mut Guest, profiles: &Path) -> Places {
    // the guest is paused already
    with_live_kernel(guest, profiles, false, |live, k| {
        let l = *k.layout();
        let procs = k.processes(&Limits::default()).expect("tasks list");
        let i = procs
            .iter()
            .position(|p| p.comm == b"lab-sleeper")
            .expect("lab-sleeper runs");
        assert!(
            i + 2 < procs.len(),
            "lab-sleeper is near the end of the list"
        );
        let mods = k.modules(&Limits::default()).expect("modules list");
        assert!(
            !mods.is_empty(),
            "the guest has no module (the lab loads qemu_fw_cfg where the kernel has it)"
        );
        let place = |va: Va| {
            let pa = k.space().translate(va).expect("translate").pa;
            let r = live
                .memory_map()
                .iter()
                .find(|r| r.start <= pa && pa.0 + 8 <= r.end.0)
                .expect("RAM region");
            (va, r.file_offset + (pa.0 - r.start.0))
        };
        Places {
            victim_next: place(Va(procs[i].task.0 + l.task_tasks)),
            lost_pid: procs[i + 1].pid,
            beyond_prev: place(Va(procs[i + 2].task.0 + l.task_tasks + 8)),
            module_next: place(Va(mods[0].addr.0 + l.module_list)),
            pids: procs.iter().map(|p| u64::from(p.pid)).collect(),
            modules: mods.iter().map(|m| m.display_name()).collect(),
        }
    })
}

/// Write `value` at each place; returns what was there.
fn patch(ram: &std::fs::File, writes: &[((Va, u64), u64)]) -> Vec<[u8; 8]> {
    writes
        .iter()
        .map(|&((_, off), value)| {
            let mut old = [0u8; 8];
            ram.read_exact_at(&mut old, off).expect("reading RAM");
            ram.write_all_at(&value.to_le_bytes(), off)
                .expect("writing RAM");
            old
        })
        .collect()
}

fn restore(ram: &std::fs::File, writes: &[((Va, u64), u64)], old: &[[u8; 8]]) {
    for (&((_, off), _), b) in writes.iter().zip(old) {
        ram.write_all_at(b, off).expect("restoring RAM");
    }
}

/// A `broken` finding of `check` for `list`'s `link` at `place`.
fn broken(check: &'static str, list: &'static str, link: &'static str, place: Va) -> Want {
    let at = format!("{:#x}", place.0);
    want(
        &format!("the {list} list's {link} break at {at}"),
        check,
        move |ev| ev["list"] == list && ev["link"] == link && ev["at"] == at.as_str(),
    )
}

/// `ps` (or `lsmod`) printed `want` (pids or module names) in `key`, warned with
/// `warning` and exited 1.
fn listed_all(
    label: &str,
    run: &Run,
    key: &str,
    want: &BTreeSet<String>,
    warning: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    if run.code != 1 || !run.stderr.contains(warning) {
        problems.push(format!("{label}: exit {}: {}", run.code, run.stderr));
    }
    let got: BTreeSet<String> = run
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| match &p[key] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    if &got != want {
        problems.push(format!(
            "{label}: {:?} more and {:?} fewer than the whole list",
            got.difference(want).collect::<Vec<_>>(),
            want.difference(&got).collect::<Vec<_>>()
        ));
    }
    problems
}

/// The never-blind step (see the module documentation); the guest is paused.
pub(crate) fn never_blind(
    label: &str,
    d: &Detector,
    guest: &mut Guest,
    profiles: &Path,
) -> Vec<String> {
    let at = places(guest, profiles);
    let ram = OpenOptions::new()
        .read(true)
        .write(true)
        .open(guest.ram_path())
        .expect("the guest's RAM file");
    let sock = guest.qmp_socket();
    let src = ["--qemu", sock.to_str().unwrap()];
    let pids: BTreeSet<String> = at.pids.iter().map(u64::to_string).collect();
    let mut problems = Vec::new();
    let tasks = |link, place: (Va, u64)| broken("hidden-process", "init_task.tasks", link, place.0);

    // a loop, then a wild pointer: every process is still read, the break is the finding
    for (what, value) in [
        ("tasks loop", at.victim_next.0 .0),
        ("tasks wild next", 0x4141_4141_4141_4141),
    ] {
        let writes = [(at.victim_next, value)];
        let old = patch(&ram, &writes);
        let label = format!("{label}, {what}");
        let ps = d.run(&src, &["--json", "ps"]);
        problems.extend(listed_all(
            &label,
            &ps,
            "pid",
            &pids,
            "init_task.tasks breaks at",
        ));
        let check = d.run(&src, &["--json", "check"]);
        problems.extend(expect_exactly(
            &label,
            &check,
            &[tasks("next", at.victim_next)],
        ));
        restore(&ram, &writes, &old);
    }

    // both halves broken around one process: the pid namespace still names it
    let writes = [
        (at.victim_next, 0x4141_4141_4141_4141),
        (at.beyond_prev, 0x10),
    ];
    let old = patch(&ram, &writes);
    let label2 = format!("{label}, both ways broken");
    let ps = d.run(&src, &["--json", "ps"]);
    problems.extend(listed_all(
        &label2,
        &ps,
        "pid",
        &pids,
        "init_task.tasks breaks at",
    ));
    let lost = u64::from(at.lost_pid);
    let views = ps_views(&ps, lost);
    if views != Some(serde_json::json!(["pid-namespace"])) {
        problems.push(format!("{label2}: pid {lost} has views {views:?}"));
    }
    let check = d.run(&src, &["--json", "check"]);
    problems.extend(expect_exactly(
        &label2,
        &check,
        &[
            tasks("next", at.victim_next),
            // a break names the list_head whose link is bad (prev is its second word)
            tasks("prev", (Va(at.beyond_prev.0 .0 - 8), 0)),
            want(
                &format!("pid {lost} off the list"),
                "hidden-process",
                move |ev| ev["pid"] == lost && ev["struct_pid"].is_string(),
            ),
        ],
    ));
    restore(&ram, &writes, &old);

    // a module's wild next: lsmod and check still have every module
    let writes = [(at.module_next, 0x4141_4141_4141_4141)];
    let old = patch(&ram, &writes);
    let label3 = format!("{label}, modules wild next");
    let lsmod = d.run(&src, &["--json", "lsmod"]);
    problems.extend(listed_all(
        &label3,
        &lsmod,
        "name",
        &at.modules,
        "modules breaks at",
    ));
    let check = d.run(&src, &["--json", "check"]);
    problems.extend(expect_exactly(
        &label3,
        &check,
        &[broken("hidden-module", "modules", "next", at.module_next.0)],
    ));
    restore(&ram, &writes, &old);

    // whole again
    let ps = d.run(&src, &["--json", "ps"]);
    if ps.code != 0 || !ps.stderr.is_empty() {
        problems.push(format!(
            "{label}: ps after the restore: exit {}: {}",
            ps.code, ps.stderr
        ));
    }
    problems
}
