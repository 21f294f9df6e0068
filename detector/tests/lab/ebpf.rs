//! Attack step: perf events and eBPF. First `vmi_perf` creates a kernel perf counter on
//! CPU 0 whose overflow handler is its own: `perf-events` must report it, owned by the
//! module, once the guest says the handler ran. Then the lab worker (`bpf all`, the raw bpf() syscall, no libbpf)
//! loads a kprobe program attached to `__x64_sys_getuid` through a kprobe perf event,
//! a raw tracepoint program on `sched_process_exec` (a raw tracepoint link), a socket
//! filter on a UDP socket and a kprobe program on `__x64_sys_getgid` through a BPF link
//! to a kprobe perf event (as libbpf attaches kprobes), and holds them open. The guest's view (each program's id,
//! tag and type from `BPF_OBJ_GET_INFO_BY_FD`, the descriptors of `/proc/PID/fdinfo`)
//! is what `detector bpf` must list; `check` must report exactly the kprobe and raw
//! tracepoint programs (the default policy lists those types, not socket filters),
//! named with their attach points; a policy that allows one by name and lists socket
//! filters changes the findings accordingly. On the ELF dump, every program of
//! Volatility's `linux.ebpf` and every perf event of `linux.tracing.perf_events` must be
//! the detector's too.

use super::*;

/// A program as the loader reports it.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    kind: String,
    id: u64,
    tag: String,
    type_code: u64,
    fd: u64,
}

/// What the step leaves for the dump's comparisons: the loader's pid and its programs.
pub(crate) struct Ebpf {
    pid: u32,
    programs: Vec<Loaded>,
}

fn kv<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Install the kernel counter, load the programs in the guest and check `bpf` and
/// `check` against the guest.
pub(crate) fn step(
    kernel: &str,
    d: &Detector,
    guest: &mut Guest,
    wants: &mut Vec<Want>,
    dir: &Path,
) -> (Ebpf, Vec<String>) {
    let mut problems = Vec::new();
    insmod(kernel, guest, "/lab/vmi_perf.ko");
    let out = guest
        .sh("sleep 1; cat /sys/module/vmi_perf/parameters/hits")
        .expect("sh");
    if out
        .lines
        .last()
        .and_then(|h| h.trim().parse::<u64>().ok())
        .unwrap_or(0)
        == 0
    {
        problems.push(format!(
            "{kernel}: vmi_perf's overflow handler did not run: {:?}",
            out.lines
        ));
    }
    wants.push(want(
        "vmi_perf's kernel counter on CPU 0 with its own overflow handler",
        "perf-events",
        // the cpu-clock PMU: registered without a name before 6.2
        |e| {
            e["owner"] == "module vmi_perf"
                && e["cpu"] == 0
                && (e["pmu"] == "" || e["pmu"] == "cpu_clock")
        },
    ));
    let out = guest
        .sh(
            "/bin/lab-sleeper bpf all </dev/null >/tmp/bpf.out 2>/tmp/bpf.err & \
             for i in 1 2 3 4 5 6 7 8 9 10; do grep -q ready /tmp/bpf.out && break; sleep 1; done; \
             cat /tmp/bpf.out /tmp/bpf.err",
        )
        .expect("sh");
    eprintln!("{kernel}: the BPF loader says:\n{}", out.lines.join("\n"));
    let pid: u32 = out
        .lines
        .iter()
        .find(|l| l.starts_with("bpf ready"))
        .and_then(|l| kv(l, "pid")?.parse().ok())
        .unwrap_or_else(|| panic!("{kernel}: the BPF loader failed: {:?}", out.lines));
    let loaded: Vec<Loaded> = out
        .lines
        .iter()
        .filter(|l| l.starts_with("bpf kind="))
        .map(|l| Loaded {
            kind: kv(l, "kind").unwrap_or("").to_string(),
            id: kv(l, "id").and_then(|v| v.parse().ok()).unwrap_or(0),
            tag: kv(l, "tag").unwrap_or("").to_string(),
            type_code: kv(l, "type").and_then(|v| v.parse().ok()).unwrap_or(99),
            fd: kv(l, "fd").and_then(|v| v.parse().ok()).unwrap_or(0),
        })
        .collect();
    assert_eq!(loaded.len(), 4, "{kernel}: {:?}", out.lines);

    // the guest's own view of the descriptors: prog_id and prog_tag per fdinfo
    let fdinfo = guest
        .sh(&format!(
            "cd /proc/{pid}/fdinfo && for f in *; do echo \"fd=$f $(grep -E '^(prog_id|prog_tag|prog_type|link_type|tp_name):' $f | tr '\\t\\n' '= ')\"; done"
        ))
        .expect("sh");
    eprintln!("{kernel}: fdinfo of {pid}:\n{}", fdinfo.lines.join("\n"));
    for p in &loaded {
        let line = fdinfo
            .lines
            .iter()
            .find(|l| kv(l, "fd").and_then(|v| v.parse::<u64>().ok()) == Some(p.fd));
        let ok = line.is_some_and(|l| {
            l.contains(&format!("prog_id:={} ", p.id))
                && l.contains(&format!("prog_tag:={} ", p.tag))
                && l.contains(&format!("prog_type:={} ", p.type_code))
        });
        if !ok {
            problems.push(format!(
                "{kernel}: /proc/{pid}/fdinfo/{} does not show program {} ({}): {line:?}",
                p.fd, p.id, p.tag
            ));
        }
    }

    // the listing equals the guest's view
    let listing = d.live(guest, &["--json", "bpf"]).json();
    let progs = listing["programs"].as_array().cloned().unwrap_or_default();
    let ids: BTreeSet<u64> = progs.iter().filter_map(|p| p["id"].as_u64()).collect();
    let want_ids: BTreeSet<u64> = loaded.iter().map(|p| p.id).collect();
    if ids != want_ids {
        problems.push(format!(
            "{kernel}: bpf lists programs {ids:?}, the guest {want_ids:?}"
        ));
    }
    // kind, type, name, what each attach point says (one entry each)
    let names: [(&str, &str, &str, &[&str]); 4] = [
        (
            "kprobe",
            "kprobe",
            "vmi_bpf_kprobe",
            &["perf event kprobe __x64_sys_getuid ("],
        ),
        (
            "raw_tracepoint",
            "raw_tracepoint",
            "vmi_bpf_rawtp",
            &["raw_tracepoint sched_process_exec"],
        ),
        ("socket_filter", "socket_filter", "vmi_bpf_filter", &[]),
        (
            "kprobe_link",
            "kprobe",
            "vmi_bpf_kplink",
            &[
                " perf_event kprobe __x64_sys_getgid",
                "perf event kprobe __x64_sys_getgid (",
            ],
        ),
    ];
    let kind = |k: &str| *names.iter().find(|n| n.0 == k).expect("kind");
    for p in &loaded {
        let Some(row) = progs.iter().find(|r| r["id"] == p.id) else {
            continue;
        };
        let (_, ty, name, attach) = kind(&p.kind);
        let points: Vec<&str> = row["attach"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let attach_ok = points.len() == attach.len()
            && attach.iter().all(|w| points.iter().any(|a| a.contains(w)));
        let held = row["holders"]
            .as_array()
            .is_some_and(|h| h.iter().any(|h| h["pid"] == pid && h["fd"] == p.fd));
        if row["tag"] != p.tag.as_str()
            || row["type_code"] != p.type_code
            || row["type"] != ty
            || row["name"] != name
            || !attach_ok
            || !held
        {
            problems.push(format!(
                "{kernel}: bpf lists program {} as {row}, the guest loaded {p:?} (name {name}, attached to {attach:?}) in {pid}",
                p.id
            ));
        }
    }
    let text = d.live(guest, &["bpf"]);
    eprintln!("{kernel}: detector bpf\n{}", text.stdout);

    // the check: the kprobe and raw tracepoint programs, not the socket filter
    for p in loaded.iter().filter(|p| p.kind != "socket_filter") {
        let (id, tag) = (p.id, p.tag.clone());
        let (kind, ty, name, attach) = kind(&p.kind);
        wants.push(want(
            &format!("the {kind} BPF program {id} ({name}) attached to {attach:?}"),
            "ebpf",
            move |e| {
                let a = e["attach"].as_str().unwrap_or("");
                e["id"] == id
                    && e["tag"] == tag.as_str()
                    && e["type"] == ty
                    && e["name"] == name
                    && attach.iter().all(|w| a.contains(w))
                    && (ty != "kprobe" || e["pids"] == pid.to_string().as_str())
            },
        ));
    }
    live_and_paused(&format!("{kernel} ebpf"), d, guest, wants, &mut problems);

    // a policy allowing the raw tracepoint program by name and listing socket filters
    let run = run_check_with_policy(
        d,
        guest,
        &dir.join("ebpf-policy.toml"),
        "ebpf_types = [\"kprobe\", \"socket_filter\"]\nebpf_allow = [\"vmi_bpf_rawtp\"]\n",
        "ebpf",
    );
    let policy_wants: Vec<Want> = loaded
        .iter()
        .filter(|p| p.kind != "raw_tracepoint")
        .map(|p| p.id)
        .map(|id| {
            want(&format!("BPF program {id} by policy"), "ebpf", move |e| {
                e["id"] == id
            })
        })
        .collect();
    problems.extend(expect_exactly(
        &format!("{kernel} ebpf policy"),
        &run,
        &policy_wants,
    ));
    (
        Ebpf {
            pid,
            programs: loaded,
        },
        problems,
    )
}

/// Volatility 3's `linux.ebpf` and `linux.tracing.perf_events` on the ELF dump: every
/// program it lists is in `detector bpf` with the same address, name, tag and type,
/// every perf event it lists with a program is one of the detector's (same thread,
/// PMU and program), and every such program of a listed type is an `ebpf` finding.
/// Volatility must see the loader's programs and its kprobe event.
pub(crate) fn volatility(v: &Volatility, d: &Detector, run: &Run, bpf: &Ebpf) -> Vec<String> {
    let mut problems = Vec::new();
    let kernel = v.kernel.as_str();
    let elf = v.elf.to_str().unwrap();
    let listing = d.run(&["--dump", elf], &["--json", "bpf"]).json();
    let progs = listing["programs"].as_array().cloned().unwrap_or_default();
    let events = listing["perf_events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let got = findings(&run.json());

    let rows = v.rows("linux.ebpf");
    for r in &rows {
        let ty = r["Type"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches("BPF_PROG_TYPE_")
            .to_ascii_lowercase();
        let ok = progs.iter().any(|p| {
            p["address"] == vol_hex(&r["Address"]).as_str()
                && p["name"] == r["Name"]
                && p["tag"] == r["Tag"]
                && p["type"] == ty.as_str()
        });
        if !ok {
            problems.push(format!(
                "{kernel}: Volatility lists a BPF program `detector bpf` does not: {r}"
            ));
        }
    }
    for p in &bpf.programs {
        let addr = progs
            .iter()
            .find(|r| r["id"] == p.id)
            .and_then(|r| r["address"].as_str())
            .unwrap_or("");
        if !rows.iter().any(|r| vol_hex(&r["Address"]) == addr) {
            problems.push(format!(
                "{kernel}: Volatility's linux.ebpf does not list the {} program {}",
                p.kind, p.id
            ));
        }
    }

    let rows = v.rows("linux.tracing.perf_events");
    for r in &rows {
        let prog = vol_hex(&r["Address"]);
        let listed = events.iter().any(|e| {
            e["tid"] == r["PID"] && e["pmu"] == r["Event"] && e["program"] == prog.as_str()
        });
        let found = got
            .iter()
            .any(|(c, e)| c == "ebpf" && e["program"] == prog.as_str());
        if !listed || !found {
            problems.push(format!(
                "{kernel}: Volatility lists a perf event with a BPF program the detector does not report (listed {listed}, finding {found}): {r}"
            ));
        }
    }
    if !rows
        .iter()
        .any(|r| r["PID"] == bpf.pid && r["Event"] == "kprobe")
    {
        problems.push(format!(
            "{kernel}: Volatility's linux.tracing.perf_events does not list the loader's kprobe event"
        ));
    }
    problems
}
