//! The spoofing check: processes renamed with prctl or with rewritten arguments, and
//! Volatility's process_spoofing.

use super::*;

/// Step 8b of the attacks: two copies of the lab worker under /tmp, one renamed with
/// `prctl(PR_SET_NAME, "kworker/0:1")`, one whose argument area now reads
/// `[kworker/1:0]`; the guest's own `/proc` must show the new names, and `check` must
/// report each (high: both pass for kernel threads) with its executable, and each
/// executable as one in a world-writable directory (`exec-location`). Returns the
/// two pids.
pub(crate) fn spoofed_processes(
    kernel: &str,
    d: &Detector,
    guest: &mut Guest,
    wants: &mut Vec<Want>,
) -> ((u32, u32), Vec<String>) {
    let mut problems = Vec::new();
    let mut start = |line: &str| -> u32 {
        let out = guest.sh(line).expect("sh");
        out.lines
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("{kernel}: {line}: {:?}", out.lines))
    };
    let renamed = start(
        "cp /bin/lab-sleeper /tmp/spoof && /tmp/spoof spoof-comm kworker/0:1 </dev/null >/dev/null 2>&1 & echo $!",
    );
    let rewritten = start(
        "cp /bin/lab-sleeper /tmp/sysupd && /tmp/sysupd spoof-argv '[kworker/1:0]' </dev/null >/dev/null 2>&1 & echo $!",
    );
    std::thread::sleep(Duration::from_millis(500));
    let t = guest.refresh_truth().expect("truth");
    match (t.process(renamed), t.process(rewritten)) {
        (Some(a), Some(b))
            if a.comm == "kworker/0:1"
                && a.exe == "/tmp/spoof"
                && b.comm == "sysupd"
                && b.cmdline.starts_with(b"[kworker/1:0]\0") => {}
        (a, b) => problems.push(format!(
            "{kernel}: the guest does not show the spoofed processes as intended: {a:?} {b:?}"
        )),
    }
    let spoofs = [
        (renamed, "comm", "kworker/0:1", "/tmp/spoof", "/tmp/spoof"),
        (rewritten, "argv0", "sysupd", "/tmp/sysupd", "[kworker/1:0]"),
    ];
    for (pid, _, _, exe, _) in spoofs {
        // copies of the worker in /tmp: programs in a world-writable directory
        wants.push(want(
            &format!("process {pid} runs {exe} from /tmp"),
            "exec-location",
            move |e| e["pid"] == pid && e["rule"] == "world-writable" && e["file"] == exe,
        ));
    }
    for (pid, rule, comm, exe, argv0) in spoofs {
        wants.push(want(
            &format!("process {pid} spoofed ({rule}: {comm}, {argv0})"),
            "spoofing",
            move |e| {
                e["pid"] == pid
                    && e["rule"] == rule
                    && e["comm"] == comm
                    && e["exe"] == exe
                    && e["argv0"] == argv0
            },
        ));
    }
    let run = live_and_paused(
        &format!("{kernel} spoofing"),
        d,
        guest,
        wants,
        &mut problems,
    );
    let v = run.json();
    for f in v["findings"].as_array().into_iter().flatten() {
        if f["check"] == "spoofing" && f["severity"] != "high" {
            problems.push(format!("{kernel}: spoofing finding not high: {f}"));
        }
    }
    ((renamed, rewritten), problems)
}

/// Volatility 3's `linux.malware.process_spoofing` on the ELF dump: it must flag the
/// two spoofed processes as the detector does (comm, cmdline), and every spoofing
/// finding of the detector's must be a process it flags. It flags more: it compares
/// `comm` and `argv[0]` with the executable's basename only, so every busybox applet
/// (`sh` running as `/bin/busybox`) is "spoofed" there; those rows are printed, not
/// required.
pub(crate) fn volatility_spoofing(
    v: &Volatility,
    run: &Run,
    (renamed, rewritten): (u32, u32),
) -> Vec<String> {
    let mut problems = Vec::new();
    let kernel = v.kernel.as_str();
    let rows = v.rows("linux.malware.process_spoofing");
    let flagged = |pid: u32, col: &str| {
        rows.iter()
            .any(|r| r["PID"] == pid && r[col] == Value::Bool(true))
    };
    if !flagged(renamed, "Comm_Spoofed") || !flagged(rewritten, "Cmdline_Spoofed") {
        problems.push(format!(
            "{kernel}: Volatility's process_spoofing does not flag {renamed} (comm) and {rewritten} (cmdline)"
        ));
    }
    for (c, e) in findings(&run.json()) {
        if c != "spoofing" {
            continue;
        }
        let pid = e["pid"].as_u64().unwrap_or(0) as u32;
        let col = if e["rule"] == "comm" {
            "Comm_Spoofed"
        } else {
            "Cmdline_Spoofed"
        };
        if !flagged(pid, col) {
            problems.push(format!(
                "{kernel}: the detector reports spoofing Volatility does not: {e}"
            ));
        }
    }
    let extra = rows
        .iter()
        .filter(|r| {
            (r["Comm_Spoofed"] == Value::Bool(true) || r["Cmdline_Spoofed"] == Value::Bool(true))
                && r["PID"] != renamed
                && r["PID"] != rewritten
        })
        .count();
    eprintln!("{kernel}: Volatility's process_spoofing flags {extra} more processes (busybox applets, scripts)");
    problems
}
