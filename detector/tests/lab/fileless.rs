//! The exec-location step: user-space implants that change no kernel structure.
//!
//! - [`implants`]: the lab worker started three ways, as implants run: a second
//!   stage copied into a memfd named `stage2` and run with `fexecve` (PUMAKIT); a
//!   dropper that copies itself to `/dev/shm/kdmtmpflush`, executes it, deletes it
//!   and renames itself `haldaemon` (BPFDoor); a process mapping "libraries" (a page of
//!   a copy of the worker, read + execute) from `/tmp` (kept), from `/dev/shm`
//!   (deleted) and from a memfd `vmi-jit`. The guest's own `/proc/PID/exe` must say
//!   what the attack meant; `check` must report each executable and each mapping
//!   (with the dropper's rename as spoofing), live and paused; `ps --json` must name
//!   their executables as `/proc/PID/exe` does and `maps` of the three must equal
//!   `/proc/PID/maps`, `(deleted)` and `/memfd:NAME` names included.
//! - [`volatility_maps`]: on the ELF dump, Volatility 3's `linux.proc.Maps` must name
//!   each file mapping of the three as `maps` from the dump does.

use super::*;

/// The implants' pids.
pub(crate) struct Implants {
    memfd: u32,
    dropper: u32,
    maplib: u32,
}

impl Implants {
    pub(crate) fn pids(&self) -> [u32; 3] {
        [self.memfd, self.dropper, self.maplib]
    }
}

/// Start the three implants, expect their findings (live, paused), compare `ps` and
/// `maps` with the guest's /proc.
pub(crate) fn implants(
    label: &str,
    d: &Detector,
    guest: &mut Guest,
    wants: &mut Vec<Want>,
) -> (Implants, Vec<String>) {
    let mut problems = Vec::new();
    let mut start = |line: &str| -> u32 {
        let out = guest.sh(line).expect("sh");
        out.lines
            .first()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("{label}: {line}: {:?}", out.lines))
    };
    let imp = Implants {
        memfd: start("/bin/lab-sleeper memfd-exec stage2 </dev/null >/dev/null 2>&1 & echo $!"),
        dropper: start(
            "mkdir -p /dev/shm; /bin/lab-sleeper drop /dev/shm kdmtmpflush haldaemon \
             </dev/null >/tmp/drop.out 2>&1 & echo $!",
        ),
        maplib: start(
            "/bin/lab-sleeper maplib /tmp/libvmi-keep.so /dev/shm/libvmi-gone.so vmi-jit \
             </dev/null >/tmp/maplib.out 2>&1 & echo $!",
        ),
    };
    let out = guest
        .sh("for i in 1 2 3 4 5 6 7 8 9 10; do grep -q ready /tmp/drop.out && grep -q maplib /tmp/maplib.out && break; sleep 1; done; cat /tmp/drop.out /tmp/maplib.out")
        .expect("sh");
    let truth = guest.refresh_truth().expect("truth");
    let exe = |pid: u32| truth.process(pid).map(|p| (p.comm.clone(), p.exe.clone()));
    let want_exe = [
        (imp.memfd, None, "/memfd:stage2 (deleted)"),
        (
            imp.dropper,
            Some("haldaemon"),
            "/dev/shm/kdmtmpflush (deleted)",
        ),
        (imp.maplib, None, "/bin/lab-sleeper"),
    ];
    for (pid, comm, path) in want_exe {
        match exe(pid) {
            Some((c, e)) if e == path && comm.is_none_or(|w| w == c) => {}
            other => problems.push(format!(
                "{label}: the guest does not show implant {pid} as {comm:?} running {path}: {other:?} ({:?})",
                out.lines
            )),
        }
    }
    let findings = [
        (imp.memfd, "executable", "memory", "/memfd:stage2 (deleted)"),
        (
            imp.dropper,
            "executable",
            "deleted-world-writable",
            "/dev/shm/kdmtmpflush (deleted)",
        ),
        (
            imp.maplib,
            "mapping",
            "world-writable",
            "/tmp/libvmi-keep.so",
        ),
        (
            imp.maplib,
            "mapping",
            "deleted-world-writable",
            "/dev/shm/libvmi-gone.so (deleted)",
        ),
        (imp.maplib, "mapping", "memory", "/memfd:vmi-jit (deleted)"),
    ];
    for (pid, role, rule, file) in findings {
        wants.push(want(
            &format!("{pid} {role} {file} ({rule})"),
            "exec-location",
            move |e| e["pid"] == pid && e["role"] == role && e["rule"] == rule && e["file"] == file,
        ));
    }
    let dropper = imp.dropper;
    wants.push(want(
        "the dropper renamed haldaemon",
        "spoofing",
        move |e| {
            e["pid"] == dropper
                && e["rule"] == "comm"
                && e["comm"] == "haldaemon"
                && e["exe"] == "/dev/shm/kdmtmpflush (deleted)"
        },
    ));
    let run = live_and_paused(&format!("{label} fileless"), d, guest, wants, &mut problems);
    problems.extend(severities(label, &run));
    // ps --json names the implants' executables as their /proc/PID/exe does (the
    // attack guests hide a process from /proc: only the implants are compared)
    let truth = guest.refresh_truth().expect("truth");
    let ps = d.live(guest, &["--json", "ps"]).json();
    for pid in imp.pids() {
        let got = ps
            .as_array()
            .and_then(|a| a.iter().find(|p| p["pid"] == pid))
            .and_then(|p| p["exe"].as_str());
        let want = truth.process(pid).map(|p| p.exe.as_str());
        eprintln!("{label}: ps --json {pid}: exe {got:?}, /proc/{pid}/exe {want:?}");
        if got.is_none() || got != want {
            problems.push(format!(
                "{label}: ps --json names {pid}'s executable {got:?}, the guest {want:?}"
            ));
        }
    }
    problems.extend(malfind::maps_match(label, d, guest, &imp.pids()));
    (imp, problems)
}

/// What each finding's severity must be: a memfd or deleted dropped executable and a
/// deleted dropped library high, a kept library or an executable memfd mapping
/// medium, the rename medium (haldaemon is no kernel thread's name).
fn severities(label: &str, run: &Run) -> Vec<String> {
    let mut problems = Vec::new();
    for f in run.json()["findings"].as_array().into_iter().flatten() {
        let e = &f["evidence"];
        let want = match (f["check"].as_str(), e["rule"].as_str(), e["role"].as_str()) {
            (Some("exec-location"), Some("memory"), Some("executable")) => "high",
            (Some("exec-location"), Some("deleted-world-writable"), _) => "high",
            (Some("exec-location"), _, _) => "medium",
            (Some("spoofing"), _, _) if e["comm"] == "haldaemon" => "medium",
            _ => continue,
        };
        if f["severity"] != want {
            problems.push(format!("{label}: finding not {want}: {f}"));
        }
    }
    problems
}

/// Volatility 3's `linux.proc.Maps` of the implants on the ELF dump: every file
/// mapping it lists is in `maps` from the dump at the same start with the same name
/// (Volatility prints a file with no links left as ` PATH (deleted)`, a memfd as
/// `/memfd:NAME (deleted)`), and it names the implants' in-memory and deleted files so.
pub(crate) fn volatility_maps(
    v: &Volatility,
    d: &Detector,
    elf: &Path,
    imp: &Implants,
) -> Vec<String> {
    let mut problems = Vec::new();
    let kernel = v.kernel.as_str();
    let pids: Vec<String> = imp.pids().iter().map(u32::to_string).collect();
    let mut args = vec!["linux.proc.Maps", "--pid"];
    args.extend(pids.iter().map(String::as_str));
    let rows = v.rows_with(&args);
    let mut compared = 0;
    let mut named = BTreeSet::new();
    for pid in imp.pids() {
        let ours = d
            .run(
                &["--dump", elf.to_str().unwrap()],
                &["--json", "maps", &pid.to_string()],
            )
            .json();
        let ours = ours.as_array().cloned().unwrap_or_default();
        for r in rows.iter().filter(|r| r["PID"] == pid) {
            let path = r["File Path"].as_str().unwrap_or("").trim();
            if !path.starts_with('/') {
                continue; // anonymous, [heap], [stack], [vdso]
            }
            let start = r["Start"].as_u64().map(|s| format!("{s:#x}"));
            let mine = ours
                .iter()
                .find(|m| Some(m["start"].as_str().unwrap_or("")) == start.as_deref());
            compared += 1;
            match mine {
                Some(m) if m["name"] == path => {
                    named.insert(path.to_string());
                }
                other => problems.push(format!(
                    "{kernel}: Volatility's proc.Maps names {pid}'s mapping at {start:?} {path:?}, maps from the dump {other:?}"
                )),
            }
        }
    }
    for want in [
        "/memfd:stage2 (deleted)",
        "/dev/shm/kdmtmpflush (deleted)",
        "/tmp/libvmi-keep.so",
        "/dev/shm/libvmi-gone.so (deleted)",
        "/memfd:vmi-jit (deleted)",
    ] {
        if !named.contains(want) {
            problems.push(format!(
                "{kernel}: Volatility's proc.Maps and maps do not both name {want}"
            ));
        }
    }
    eprintln!(
        "{kernel}: {compared} file mappings of the implants compared with Volatility's proc.Maps"
    );
    problems
}
