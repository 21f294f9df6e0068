//! The ftrace, kprobes and tracepoints checks: their walkers against the guest's own
//! tracing, the tracing hooks of step 7 of the attacks, and Volatility's tracing plugins.

use super::*;

/// The test modules of the tracing step ([`tracing_hooks`]).
pub(crate) const TRACING_MODULES: [&str; 3] = ["vmi_ftrace", "vmi_kprobe", "vmi_tracepoint"];

/// debugfs' `kprobes/list` lines as (address, kind, symbol+offset).
pub(crate) fn kprobe_list(lines: &[String]) -> BTreeSet<(u64, String, String)> {
    lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                u64::from_str_radix(f.first()?, 16).ok()?,
                f.get(1)?.to_string(),
                f.get(2)?.to_string(),
            ))
        })
        .collect()
}

/// The kprobe_table walk as `kprobes/list` prints it.
pub(crate) fn kprobe_table(
    k: &Kernel<&QemuLive>,
    name: &dyn Fn(vmi_core::Va) -> String,
) -> BTreeSet<(u64, String, String)> {
    k.kprobes()
        .expect("kprobe_table walk")
        .iter()
        .map(|p| {
            let kind = match p.kind {
                vmi_core::kernel::kprobes::ProbeKind::Kretprobe { .. } => "r",
                _ => "k",
            };
            (p.addr.0, kind.to_string(), name(p.addr))
        })
        .collect()
}

/// The tracing walkers against the guest's own tracing: a kprobe and a kretprobe made
/// through `kprobe_events`, the function tracer filtered on one function and the
/// `sched_switch` event. What tracefs' `enabled_functions` and debugfs' `kprobes/list`
/// say must be what the ftrace_ops, kprobe_table and tracepoint walks read, with the
/// names the kernel prints (kallsyms read in guest memory); the kernel's own handlers
/// are kernel text, so the ftrace, kprobes and tracepoints checks report nothing. All
/// of it is undone afterwards.
pub(crate) fn tracing_walkers(
    label: &str,
    d: &Detector,
    guest: &mut Guest,
    profiles: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    let out = guest
        .sh(
            "mkdir -p /sys/kernel/debug; mount -t debugfs nodev /sys/kernel/debug 2>/dev/null; \
             mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null; cd /sys/kernel/tracing && \
             echo 'p:vmi/probe vfs_read' >> kprobe_events && \
             echo 'r:vmi/retprobe vfs_write' >> kprobe_events && echo 1 > events/vmi/enable && \
             echo vfs_statfs > set_ftrace_filter && echo function > current_tracer && \
             echo 1 > events/sched/sched_switch/enable && \
             cat enabled_functions && echo == && cat /sys/kernel/debug/kprobes/list",
        )
        .expect("sh");
    let parts: Vec<&[String]> = out.lines.split(|l| l == "==").collect();
    let (0, [enabled, kprobes]) = (out.status, parts.as_slice()) else {
        return vec![format!("{label}: setting up tracing: {:?}", out.lines)];
    };
    let want_functions: BTreeSet<String> = enabled
        .iter()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let mut want_probes = kprobe_list(kprobes);

    let mut probes_differ = false;
    problems.extend(with_paused_kernel(guest, profiles, |k| {
        let mut problems = Vec::new();
        let syms = k.kallsyms().expect("kallsyms in guest memory");
        let name = |va| symbol_at(k, &syms, va);
        let mut got_functions = BTreeSet::new();
        for ops in k.ftrace_ops().expect("ftrace_ops walk") {
            if let vmi_core::kernel::ftrace::Filter::Functions(entries) = &ops.filter {
                for e in entries {
                    got_functions.insert(base_name(&name(e.ip)).to_string());
                }
            }
        }
        if got_functions != want_functions || got_functions.len() != 3 {
            problems.push(format!(
                "{label}: the ftrace_ops filter the functions {got_functions:?}, enabled_functions says {want_functions:?}"
            ));
        }
        let got_probes = kprobe_table(k, &name);
        if got_probes != want_probes || got_probes.len() != 2 {
            // the guest's list and the walk are read one after the other, the kretprobe
            // a moment after the kprobe: the list once showed only the kprobe while
            // kprobe_table held both. A difference is read again below before it counts
            probes_differ = true;
        }
        let tps = k.tracepoints().expect("tracepoints walk");
        if !tps
            .iter()
            .any(|t| t.name == b"sched_switch" && !t.probes.is_empty())
        {
            let names: Vec<String> = tps
                .iter()
                .map(|t| String::from_utf8_lossy(&t.name).into_owned())
                .collect();
            problems.push(format!(
                "{label}: no probe on sched_switch among the tracepoints with probes {names:?}"
            ));
        }
        problems
    }));
    if probes_differ {
        let mut tries = 1;
        loop {
            let got_probes = with_paused_kernel(guest, profiles, |k| {
                let syms = k.kallsyms().expect("kallsyms in guest memory");
                kprobe_table(k, &|va| symbol_at(k, &syms, va))
            });
            if got_probes == want_probes && got_probes.len() == 2 {
                break;
            }
            if tries == 3 {
                problems.push(format!(
                    "{label}: kprobe_table holds {got_probes:?}, kprobes/list says {want_probes:?}"
                ));
                break;
            }
            eprintln!("{label}: kprobe_table and kprobes/list differ (try {tries}); reading again");
            tries += 1;
            std::thread::sleep(std::time::Duration::from_millis(500));
            let out = guest.sh("cat /sys/kernel/debug/kprobes/list").expect("sh");
            want_probes = kprobe_list(&out.lines);
        }
    }
    let run = d.live(
        guest,
        &["--json", "check", "--check", "ftrace,kprobes,tracepoints"],
    );
    problems.extend(expect_exactly(
        &format!("{label} with the kernel's own tracing"),
        &run,
        &[],
    ));
    let out = guest
        .sh(
            "cd /sys/kernel/tracing && echo 0 > events/sched/sched_switch/enable && \
             echo nop > current_tracer && echo > set_ftrace_filter && \
             echo 0 > events/vmi/enable && echo > kprobe_events && cat enabled_functions",
        )
        .expect("sh");
    if out.status != 0 || !out.lines.is_empty() {
        problems.push(format!("{label}: undoing the tracing: {:?}", out.lines));
    }
    problems
}

/// Step 7 of the attacks: `vmi_ftrace` (an ftrace_ops on kill(2) and getdents64(2),
/// then hidden from the modules list), `vmi_kprobe` (two kprobes on getpgid(2), which
/// the kernel aggregates, and a kretprobe on getppid(2); then hidden from the modules
/// list and /sys/module, so no module list names the owner) and `vmi_tracepoint` (a
/// probe on sys_enter, left listed). The guest's own views (tracefs'
/// `enabled_functions`, debugfs' `kprobes/list`, the hit counters) say the hooks are in
/// place and run; `check` must report each hook with the function hooked and the owner.
/// The kernel-text check sees the patch sites these hooks use too: the hooked
/// functions' ftrace sites now call ftrace trampolines (in the module area, owned by no
/// module), and the tracepoint's static call sites call the module's probe.
pub(crate) fn tracing_hooks(
    kernel: &str,
    d: &Detector,
    guest: &mut Guest,
    wants: &mut Vec<Want>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for m in TRACING_MODULES {
        insmod(kernel, guest, &format!("/lab/{m}.ko"));
    }
    let out = guest
        .sh("mkdir -p /sys/kernel/debug; mount -t debugfs nodev /sys/kernel/debug 2>/dev/null; \
             kill -0 1; ls / >/dev/null; \
             cat /sys/module/vmi_ftrace/parameters/hits /sys/module/vmi_tracepoint/parameters/hits; \
             echo ==; cat /sys/kernel/debug/tracing/enabled_functions; \
             echo ==; cat /sys/kernel/debug/kprobes/list")
        .expect("sh");
    let parts: Vec<&[String]> = out.lines.split(|l| l == "==").collect();
    let [hits, enabled, kprobes] = parts.as_slice() else {
        panic!("{kernel}: the guest's tracing views: {:?}", out.lines);
    };
    eprintln!(
        "{kernel}: the guest's view: hits {hits:?}\nenabled_functions:\n{}\nkprobes/list:\n{}",
        enabled.join("\n"),
        kprobes.join("\n")
    );
    if hits.len() != 2
        || hits
            .iter()
            .any(|h| h.trim().parse::<u64>().unwrap_or(0) == 0)
    {
        problems.push(format!(
            "{kernel}: the ftrace and tracepoint hooks did not run: hits {hits:?}"
        ));
    }
    // vmi_kprobe left the modules list and /sys/module: the module tree still holds it
    let hidden = "hidden module vmi_kprobe";
    wants.push(want("the hidden vmi_ftrace", "hidden-module", |e| {
        e["module"] == "vmi_ftrace"
    }));
    wants.push(want(
        "vmi_kprobe, held by the module tree only",
        "hidden-module",
        |e| e["module"] == "vmi_kprobe" && e["views"] == "tree",
    ));
    wants.push(want(
        "vmi_ftrace's ftrace_ops on kill and getdents64, owned by the hidden vmi_ftrace",
        "ftrace",
        |e| {
            let hooked = e["hooked"].as_str().unwrap_or("");
            e["owner"] == "hidden module vmi_ftrace"
                && e["hooked_count"] == 2
                && hooked.contains("__x64_sys_kill+")
                && hooked.contains("__x64_sys_getdents64+")
        },
    ));
    wants.push(want(
        "the kprobe on getpgid with pre and post handlers, under an aggregate",
        "kprobes",
        move |e| {
            e["kind"] == "kprobe"
                && base_name(e["function"].as_str().unwrap_or("")) == "__x64_sys_getpgid"
                && e["symbol_name"] == "__x64_sys_getpgid"
                && e["post_handler"].is_string()
                && e["aggregate"].is_string()
                && e["owner"] == hidden
        },
    ));
    wants.push(want(
        "the second kprobe on getpgid (pre handler only), under the same aggregate",
        "kprobes",
        move |e| {
            e["kind"] == "kprobe"
                && base_name(e["function"].as_str().unwrap_or("")) == "__x64_sys_getpgid"
                && e["post_handler"].is_null()
                && e["aggregate"].is_string()
                && e["owner"] == hidden
        },
    ));
    wants.push(want(
        "the kretprobe on getppid with return and entry handlers",
        "kprobes",
        move |e| {
            e["kind"] == "kretprobe"
                && e["symbol_name"] == "__x64_sys_getppid"
                && e["handler"].is_string()
                && e["entry_handler"].is_string()
                && e["owner"] == hidden
        },
    ));
    wants.push(want(
        "vmi_tracepoint's probe on sys_enter",
        "tracepoints",
        |e| e["tracepoint"] == "sys_enter" && e["owner"] == "module vmi_tracepoint",
    ));
    let trampoline = |e: &Value, callback: &str| {
        e["site"] == "ftrace site"
            && e["owner"].as_str().is_some_and(|o| {
                o.starts_with("the ftrace trampoline of ftrace_ops ")
                    && o.ends_with(&format!("(its callback in {callback})"))
            })
    };
    for f in ["__x64_sys_kill", "__x64_sys_getdents64"] {
        wants.push(want(
            &format!("the ftrace site of {f} calling vmi_ftrace's trampoline"),
            "kernel-text",
            move |e| e["symbol"] == f && trampoline(e, "hidden module vmi_ftrace"),
        ));
    }
    wants.push(want_some(
        "the ftrace sites of the probed functions calling the kprobes' trampolines",
        "kernel-text",
        move |e| trampoline(e, "kernel text"),
    ));
    wants.push(want_some(
        "the static call sites of sys_enter calling vmi_tracepoint's probe",
        "kernel-text",
        |e| e["site"] == "static call" && e["owner"] == "module vmi_tracepoint",
    ));
    let run = live_and_paused(
        &format!("{kernel} tracing hooks"),
        d,
        guest,
        wants,
        &mut problems,
    );

    // every function the guest says is hooked and every probe it lists is reported
    let got = findings(&run.json());
    let named = |check: &str, key: &str, f: &str| {
        got.iter().any(|(c, e)| {
            c == check
                && e[key]
                    .as_str()
                    .is_some_and(|h| h.split(", ").any(|n| base_name(n) == f))
        })
    };
    for line in enabled.iter() {
        let f = line.split_whitespace().next().unwrap_or("");
        if !named("ftrace", "hooked", f) && !named("kprobes", "function", f) {
            problems.push(format!(
                "{kernel}: the guest hooks {f} ({line}), no ftrace or kprobes finding names it"
            ));
        }
    }
    for line in kprobes.iter() {
        let f = line.split_whitespace().nth(2).unwrap_or("");
        let n = got
            .iter()
            .filter(|(c, e)| c == "kprobes" && e["function"] == f)
            .count();
        let want_n = kprobes
            .iter()
            .filter(|l| l.split_whitespace().nth(2) == Some(f))
            .count();
        if n != want_n {
            problems.push(format!(
                "{kernel}: the guest lists {want_n} probe(s) on {f}, the detector {n}"
            ));
        }
    }
    problems
}

/// Volatility 3's `linux.tracing.ftrace` and `linux.tracing.tracepoints` on the ELF dump
/// of the hooked guest : every hook
/// it reports must be a finding of the detector's. Volatility 2.28 has no kprobes
/// plugin. Its ftrace plugin lists the kprobes' own ftrace_ops too (callback
/// `kprobe_ftrace_handler`, in kernel text): those hooks must be kprobes findings.
///
/// Volatility sees less, and the test does not require it to see more: its ftrace
/// plugin reads only the first bucket of a filter hash (`buckets.first`), so of
/// vmi_ftrace's two functions (a hash of two buckets) it reports the one in bucket 0 on
/// 6.1 and none at all on 6.12, where both fall in bucket 1; it reports nothing for an
/// ops that hooks every function (an empty filter); and from 6.2 on (IBT) an ftrace
/// site is 4 bytes into its function, where it finds no symbol ("Hooked symbols" is
/// empty). Its Module column is empty for vmi_kprobe, which no module list holds.
pub(crate) fn volatility_tracing(v: &Volatility, run: &Run) -> Vec<String> {
    let mut problems = Vec::new();
    let kernel = v.kernel.as_str();
    let text = &v.text;
    let got = findings(&run.json());
    let vol = |plugin: &str| v.rows(plugin);
    let addr = vol_addr;
    let hex = vol_hex;
    // "Hooked symbols": the aliases at the hooked address, comma-separated
    let names_one_of = |hooked: &str, name: &str| hooked.split(',').any(|h| h == name);

    let rows = vol("linux.tracing.ftrace");
    if rows.is_empty() {
        problems.push(format!(
            "{kernel}: Volatility's ftrace plugin reported nothing"
        ));
    }
    for r in &rows {
        let ops = hex(&r["ftrace_ops address"]);
        let callback = addr(&r["Callback address"]).unwrap_or(0);
        let hooked = r["Hooked symbols"].as_str().unwrap_or("");
        let ok = if text.contains(&callback) {
            // a kprobe armed through ftrace: the kprobes check reports the probe, or
            // the ebpf check the program on a kprobe perf event
            r["Callback"] == "kprobe_ftrace_handler"
                && (hooked.is_empty()
                    || got.iter().any(|(c, e)| {
                        c == "kprobes"
                            && names_one_of(hooked, base_name(e["function"].as_str().unwrap_or("")))
                    })
                    || got.iter().any(|(c, e)| {
                        c == "ebpf"
                            && e["attach"].as_str().is_some_and(|a| {
                                hooked
                                    .split(',')
                                    .any(|h| a.contains(&format!("kprobe {h} ")))
                            })
                    }))
        } else {
            got.iter().any(|(c, e)| {
                c == "ftrace"
                    && e["ftrace_ops"] == ops.as_str()
                    && e["callback"] == hex(&r["Callback address"]).as_str()
                    && (hooked.is_empty()
                        || e["hooked"].as_str().is_some_and(|h| {
                            h.split(", ").any(|n| names_one_of(hooked, base_name(n)))
                        }))
            })
        };
        if !ok {
            problems.push(format!(
                "{kernel}: Volatility reports an ftrace hook the detector does not: {r}"
            ));
        }
    }
    let rows = vol("linux.tracing.tracepoints");
    for r in rows
        .iter()
        .filter(|r| addr(&r["Probe address"]).is_some_and(|a| !text.contains(&a)))
    {
        let ok = got.iter().any(|(c, e)| {
            c == "tracepoints"
                && e["tracepoint"] == r["tracepoint"]
                && e["probe"] == hex(&r["Probe address"]).as_str()
        });
        if !ok {
            problems.push(format!(
                "{kernel}: Volatility reports a tracepoint probe the detector does not: {r}"
            ));
        }
    }
    if !rows.iter().any(|r| r["tracepoint"] == "sys_enter") {
        problems.push(format!(
            "{kernel}: Volatility's tracepoints plugin does not see the sys_enter probe"
        ));
    }
    problems
}
