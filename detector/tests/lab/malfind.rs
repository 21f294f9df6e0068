//! The malfind step of the attacks, and the mapping walker against `/proc/PID/maps`.
//!
//! - [`injected_code`]: a copy of the lab worker (`/tmp/vmi-injector inject`) maps an
//!   anonymous RWX region holding shellcode-like bytes and an anonymous region written
//!   and then made r-x; `check` must report exactly those two (high and medium), with
//!   the first 64 bytes the guest itself printed; `maps` of the injector, a busybox
//!   shell, the worker and init must equal the guest's `/proc/PID/maps`.
//! - [`maps_match`]: `maps` against `/proc/PID/maps` (clean guests of every kernel).
//! - [`volatility_malfind`]: every region Volatility 3's `linux.malfind` reports on the
//!   ELF dump is a malfind finding of the detector's, and it reports the injected
//!   RWX region.

use super::*;

/// What the injector printed: its pid, the two regions and their first 64 bytes.
pub(crate) struct Injected {
    pid: u32,
    rwx: u64,
    rx: u64,
}

/// Spaced hex (`48 31 c0`) of the guest's unspaced hex.
fn spaced(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Start the injector, expect its two regions as findings (live, paused).
pub(crate) fn injected_code(
    kernel: &str,
    d: &Detector,
    guest: &mut Guest,
    wants: &mut Vec<Want>,
) -> (Injected, Vec<String>) {
    let mut problems = Vec::new();
    let out = guest
        .sh("cp /bin/lab-sleeper /tmp/vmi-injector && \
             /tmp/vmi-injector inject </dev/null >/tmp/inject.out 2>&1 & echo $!; \
             sleep 1; cat /tmp/inject.out")
        .expect("sh");
    let pid: u32 = out
        .lines
        .first()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("{kernel}: starting the injector: {:?}", out.lines));
    let line = out
        .lines
        .iter()
        .find(|l| l.starts_with("inject "))
        .unwrap_or_else(|| panic!("{kernel}: the injector printed {:?}", out.lines));
    let field = |k: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")).map(str::to_string))
            .unwrap_or_default()
    };
    let addr = |k: &str| u64::from_str_radix(&field(k), 16).expect("address");
    let inj = Injected {
        pid,
        rwx: addr("rwx"),
        rx: addr("rx"),
    };
    let page = 0x1000;
    for (start, end, perms, head) in [
        (
            inj.rwx,
            inj.rwx + 2 * page,
            "rwxp",
            spaced(&field("rwx_head")),
        ),
        (inj.rx, inj.rx + page, "r-xp", spaced(&field("rx_head"))),
    ] {
        let (s, e) = (format!("{start:#x}"), format!("{end:#x}"));
        wants.push(want(
            &format!("the injector's {perms} region at {s}"),
            "malfind",
            move |ev| {
                ev["pid"] == pid
                    && ev["comm"] == "vmi-injector"
                    && ev["start"] == s.as_str()
                    && ev["end"] == e.as_str()
                    && ev["perms"] == perms
                    && ev["mapping"] == "anonymous"
                    && ev["bytes"] == head.as_str()
                    && ev["exe"] == "/tmp/vmi-injector"
            },
        ));
    }
    // a copy of the worker in /tmp: a program in a world-writable directory
    wants.push(want(
        "the injector runs from /tmp",
        "exec-location",
        move |e| {
            e["pid"] == pid && e["rule"] == "world-writable" && e["file"] == "/tmp/vmi-injector"
        },
    ));
    let run = live_and_paused(&format!("{kernel} malfind"), d, guest, wants, &mut problems);
    for f in run.json()["findings"].as_array().into_iter().flatten() {
        if f["check"] != "malfind" {
            continue;
        }
        let want = if f["evidence"]["perms"] == "rwxp" {
            "high"
        } else {
            "medium"
        };
        if f["severity"] != want {
            problems.push(format!("{kernel}: malfind finding not {want}: {f}"));
        }
        if !f["evidence"]["ascii"]
            .as_str()
            .is_some_and(|a| a.contains("VMI-INJECTED") || a.contains("VMI-UNPACKED"))
        {
            problems.push(format!("{kernel}: malfind finding without the marker: {f}"));
        }
    }
    problems.extend(jit_policy(kernel, d, guest));
    problems.extend(maps_match(kernel, d, guest, &[pid]));
    (inj, problems)
}

/// The policy's `allow_jit`: with the injector's executable allowed, `check --check
/// malfind` finds nothing; with another program allowed, the two regions again.
fn jit_policy(kernel: &str, d: &Detector, guest: &mut Guest) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("jit.toml");
    let mut problems = Vec::new();
    for (globs, want) in [("\"/tmp/vmi-*\"", 0), ("\"/usr/bin/node\"", 2)] {
        let text = format!("allow_jit = [{globs}]\n");
        let run = run_check_with_policy(d, guest, &file, &text, "malfind");
        let got = findings(&run.json())
            .iter()
            .filter(|(c, _)| c == "malfind")
            .count();
        if got != want || run.code != i32::from(want > 0) {
            problems.push(format!(
                "{kernel}: allow_jit = [{globs}]: {got} malfind findings (want {want}), exit {}",
                run.code
            ));
        }
    }
    problems
}

/// `maps PID` equals the guest's `/proc/PID/maps` (fields compared, `[vsyscall]`, the
/// kernel's gate area and no VMA of the process, left out) for init, the lab worker, a
/// busybox shell started here and `extra`; `maps --json` has as many mappings.
pub(crate) fn maps_match(
    label: &str,
    d: &Detector,
    guest: &mut Guest,
    extra: &[u32],
) -> Vec<String> {
    let mut problems = Vec::new();
    let out = guest
        .sh("sh -c 'sleep 100000; exit 0' </dev/null >/dev/null 2>&1 & echo $!; sleep 1")
        .expect("sh");
    let shell: u32 = out
        .lines
        .first()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("{label}: starting a shell: {:?}", out.lines));
    let truth = guest.refresh_truth().expect("truth");
    let mut pids = vec![1, pid_of(&truth, "lab-sleeper"), shell];
    pids.extend(extra);
    let norm = |lines: &mut dyn Iterator<Item = &str>| -> Vec<String> {
        lines
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| !l.is_empty() && !l.ends_with("[vsyscall]"))
            .collect()
    };
    for pid in pids {
        // the guest's view and the detector's are read one after the other from a
        // running guest: a process can change its mappings in between (init serves the
        // lab channel; one run here lost init's [stack] line), so a difference is
        // read again, up to three times, before it counts
        let mut tries = 0;
        let (want, run, got) = loop {
            tries += 1;
            let out = guest.sh(&format!("cat /proc/{pid}/maps")).expect("sh");
            let want = norm(&mut out.lines.iter().map(String::as_str));
            let run = d.live(guest, &["maps", &pid.to_string()]);
            let got = norm(&mut run.stdout.lines());
            if (run.ok_but_hidden() && got == want) || tries == 3 {
                break (want, run, got);
            }
            eprintln!("{label}: maps {pid} differs from the guest's (try {tries}); reading again");
        };
        if !run.ok_but_hidden() || got != want || want.len() < 5 {
            problems.push(format!(
                "{label}: maps {pid} (exit {}: {}):\n{}\nthe guest's /proc/{pid}/maps:\n{}",
                run.code,
                run.stderr.trim(),
                got.join("\n"),
                want.join("\n")
            ));
            continue;
        }
        let json = d.live(guest, &["--json", "maps", &pid.to_string()]).json();
        if json.as_array().map(Vec::len) != Some(want.len()) {
            problems.push(format!("{label}: maps --json {pid}: {json}"));
        }
    }
    eprintln!("{label}: maps of init, the worker, a shell and {extra:?} as /proc/PID/maps");
    problems
}

/// Volatility 3's `linux.malfind` on the ELF dump: each region it reports is a
/// malfind finding of the detector's (same pid and start), and it reports the
/// injector's RWX region.
pub(crate) fn volatility_malfind(v: &Volatility, run: &Run, inj: &Injected) -> Vec<String> {
    let mut problems = Vec::new();
    let kernel = v.kernel.as_str();
    let got = findings(&run.json());
    let rows = v.rows("linux.malfind");
    let start = |r: &Value| r["Start"].as_u64().or_else(|| r["Start VPN"].as_u64());
    for r in &rows {
        let ok = start(r).is_some_and(|s| {
            got.iter().any(|(c, e)| {
                c == "malfind" && e["pid"] == r["PID"] && e["start"] == format!("{s:#x}").as_str()
            })
        });
        if !ok {
            problems.push(format!(
                "{kernel}: Volatility's malfind reports a region the detector does not: {r}"
            ));
        }
    }
    if !rows
        .iter()
        .any(|r| r["PID"] == inj.pid && start(r) == Some(inj.rwx))
    {
        problems.push(format!(
            "{kernel}: Volatility's malfind does not report the injected RWX region {:#x} of {}",
            inj.rwx, inj.pid
        ));
    }
    eprintln!(
        "{kernel}: Volatility's malfind reports {} regions (the r-x one at {:#x}: {})",
        rows.len(),
        inj.rx,
        rows.iter()
            .any(|r| r["PID"] == inj.pid && start(r) == Some(inj.rx))
    );
    problems
}

/// The malfind step alone on a guest of each attack kernel (about 25 s each), for work
/// on it; the `attacks_*` tests run it among the other steps.
#[test]
#[ignore = "focused run of the malfind step; the attacks_* tests cover it"]
fn malfind_step_alone() {
    let lab = Lab::open_default().expect("lab");
    let mut problems = Vec::new();
    for kernel in ATTACK_KERNELS {
        let profiles = tempfile::tempdir().expect("tempdir");
        profile_into(&lab, kernel, profiles.path());
        let d = Detector {
            profiles: profiles.path().to_path_buf(),
            image: None,
        };
        let mut guest = lab
            .boot(kernel, &Scenario::standard(), &BootOptions::default())
            .expect("boot");
        let run = d.live(&mut guest, &["--json", "check"]);
        problems.extend(expect_exactly(&format!("{kernel} clean"), &run, &[]));
        let mut wants = Vec::new();
        let (inj, p) = injected_code(kernel, &d, &mut guest, &mut wants);
        problems.extend(p);
        let dump = tempfile::tempdir().expect("tempdir");
        let elf = dump.path().join("g.elf");
        guest.dump_elf(&elf).expect("ELF dump");
        let run = d.run(&["--dump", elf.to_str().unwrap()], &["--json", "check"]);
        problems.extend(expect_exactly(&format!("{kernel} ELF dump"), &run, &wants));
        let vol = Volatility::new(&lab, kernel, &elf, &d);
        problems.extend(volatility_malfind(&vol, &run, &inj));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
