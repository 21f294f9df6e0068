//! Running the detector binary on a guest or a dump, and what its reports must hold:
//! [`Detector`], [`Run`], [`Want`] and [`expect_exactly`] (exactly the wanted findings
//! and no failed check), with the helpers the steps share.

use super::*;

/// The detector binary with a profile directory, and the kernel image (the vmlinux of
/// the -dbg package) for the kernel-text check.
pub(crate) struct Detector {
    pub(crate) profiles: PathBuf,
    pub(crate) image: Option<PathBuf>,
}

pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "detector printed no JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Detector {
    pub(crate) fn run(&self, source: &[&str], args: &[&str]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_detector"));
        cmd.args(source).arg("--profiles").arg(&self.profiles);
        if let Some(image) = &self.image {
            cmd.arg("--image").arg(image);
        }
        let out = cmd.args(args).output().expect("running detector");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub(crate) fn live(&self, guest: &mut Guest, args: &[&str]) -> Run {
        guest.release_qmp();
        let sock = guest.qmp_socket();
        let started = std::time::SystemTime::now();
        let run = self.run(&["--qemu", sock.to_str().unwrap()], args);
        // what a watch beside it must have raised too (watching.rs)
        if args.contains(&"check") && args.contains(&"--json") && !args.contains(&"--policy") {
            super::watching::note_check(started, &run);
        }
        run
    }
}

impl Run {
    /// Exit 0, or exit 1 with nothing on stderr but the warning that some processes
    /// are only in the kernel's other views (a process the attacks hid from the tasks
    /// list is still listed, and said).
    pub(crate) fn ok_but_hidden(&self) -> bool {
        self.code == 0
            || self.code == 1
                && !self.stderr.trim().is_empty()
                && self.stderr.lines().all(|l| {
                    l.starts_with("detector: warning: ") && l.contains("not on the tasks list")
                })
    }
}

/// The `views` `ps --json` gave process `pid` (`None` when it did not list it).
pub(crate) fn ps_views(ps: &Run, pid: u64) -> Option<Value> {
    ps.json()
        .as_array()?
        .iter()
        .find(|p| p["pid"].as_u64() == Some(pid))
        .map(|p| p["views"].clone())
}

pub(crate) fn profile_into(lab: &Lab, kernel: &str, dir: &Path) {
    let d = lab.store().debug(kernel).expect("-dbg package");
    let built = profile_gen::build::from_dwarf(
        &d.vmlinux,
        Some(&d.system_map),
        &profile_gen::build::Options::default(),
    )
    .expect("profile-gen");
    assert!(
        built.profile.missing.is_empty(),
        "{kernel}: the profile misses {:?}",
        built.profile.missing
    );
    let name = format!("{}.json", built.profile.kernel.release);
    std::fs::write(dir.join(name), built.profile.to_json()).expect("writing the profile");
}

/// A detector for `kernel`: profiles made into a new directory (kept while the returned
/// guard lives) and the -dbg package's vmlinux as `--image`.
pub(crate) fn detector_for(lab: &Lab, kernel: &str) -> (tempfile::TempDir, Detector) {
    let profiles = tempfile::tempdir().expect("tempdir");
    profile_into(lab, kernel, profiles.path());
    let d = Detector {
        profiles: profiles.path().to_path_buf(),
        image: Some(lab.store().debug(kernel).expect("-dbg").vmlinux),
    };
    (profiles, d)
}

/// (check, evidence) of every finding in a `check --json` report.
pub(crate) fn findings(v: &Value) -> Vec<(String, Value)> {
    v["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    (
                        f["check"].as_str().unwrap_or("").to_string(),
                        f["evidence"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One expected finding (or, with `some`, one or more): its check and a predicate on
/// its evidence.
pub(crate) struct Want {
    pub(crate) what: String,
    pub(crate) check: &'static str,
    pub(crate) matches: Box<dyn Fn(&Value) -> bool>,
    pub(crate) some: bool,
}

pub(crate) fn want(
    what: &str,
    check: &'static str,
    matches: impl Fn(&Value) -> bool + 'static,
) -> Want {
    Want {
        what: what.to_string(),
        check,
        matches: Box::new(matches),
        some: false,
    }
}

/// One or more findings, as many as the kernel has places of one kind (e.g. the call
/// sites a static call is inlined at).
pub(crate) fn want_some(
    what: &str,
    check: &'static str,
    matches: impl Fn(&Value) -> bool + 'static,
) -> Want {
    Want {
        some: true,
        ..want(what, check, matches)
    }
}

/// The report has exactly the wanted findings (one each) and no check failed.
pub(crate) fn expect_exactly(label: &str, run: &Run, wants: &[Want]) -> Vec<String> {
    let mut problems = Vec::new();
    let v = run.json();
    let want_code = if wants.is_empty() { 0 } else { 1 };
    if run.code != want_code {
        problems.push(format!(
            "{label}: exit code {} (want {want_code}): {}",
            run.code, run.stderr
        ));
    }
    if v["errors"].as_array().is_none_or(|e| !e.is_empty()) {
        problems.push(format!("{label}: checks failed: {}", v["errors"]));
    }
    let got = findings(&v);
    let mut used = vec![false; got.len()];
    for w in wants {
        let hits: Vec<usize> = got
            .iter()
            .enumerate()
            .filter(|(_, (c, ev))| c == w.check && (w.matches)(ev))
            .map(|(i, _)| i)
            .collect();
        match hits.as_slice() {
            [] => problems.push(format!("{label}: no finding for {}", w.what)),
            [i] => used[*i] = true,
            _ if w.some => hits.iter().for_each(|&i| used[i] = true),
            _ => problems.push(format!("{label}: {} findings for {}", hits.len(), w.what)),
        }
    }
    for (i, (c, ev)) in got.iter().enumerate() {
        if !used[i] {
            problems.push(format!("{label}: unexpected {c} finding {ev}"));
        }
    }
    problems
}

pub(crate) fn pid_of(truth: &GroundTruth, comm: &str) -> u32 {
    let mut it = truth.by_comm(comm);
    let p = it.next().unwrap_or_else(|| panic!("{comm} is not running"));
    p.pid
}

/// Attach to the live guest, pause it and run `f` on its kernel; the QMP client is gone
/// (and the guest running) when this returns.
pub(crate) fn with_paused_kernel<R>(
    guest: &mut Guest,
    profiles: &Path,
    f: impl FnOnce(&Kernel<&QemuLive>) -> R,
) -> R {
    with_live_kernel(guest, profiles, true, |_, k| f(k))
}

/// `f` on the guest's kernel through a QEMU source of its own (paused while `f` runs
/// with `pause`), which is closed when `f` returns (QMP takes one client).
pub(crate) fn with_live_kernel<R>(
    guest: &mut Guest,
    profiles: &Path,
    pause: bool,
    f: impl FnOnce(&QemuLive, &Kernel<&QemuLive>) -> R,
) -> R {
    guest.release_qmp();
    let live = QemuLive::connect(guest.qmp_socket(), &QemuOptions::default()).expect("live");
    let (set, _) = ProfileSet::load_dir(profiles).expect("profiles");
    let id = set.identify(&live).expect("identify");
    let hints = Hints {
        registers: live.registers(0).ok(),
        vmcoreinfo: None,
    };
    let _pause = pause.then(|| vmi_core::memory::PauseGuard::new(&live).expect("pause"));
    let k = Kernel::discover_at(&live, id.profile, id.banner_pa, &hints).expect("discover");
    f(&live, &k)
}

/// `va` named as the kernel prints it (`symbol+0xoff`), from kallsyms in guest memory.
pub(crate) fn symbol_at(
    k: &Kernel<&QemuLive>,
    syms: &vmi_core::kernel::kallsyms::Kallsyms,
    va: vmi_core::Va,
) -> String {
    match syms.lookup(k.space(), va) {
        Ok(Some((n, off))) => format!("{}+{off:#x}", String::from_utf8_lossy(&n)),
        other => format!("{va} ({other:?})"),
    }
}

/// The name in `function+0xoff`.
pub(crate) fn base_name(f: &str) -> &str {
    f.split('+').next().unwrap_or(f)
}

pub(crate) fn insmod(kernel: &str, guest: &mut Guest, line: &str) {
    let out = guest
        .sh_timeout(&format!("insmod {line}"), Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{kernel}: insmod {line}: {e}\n{}", guest.console_tail(30)));
    assert_eq!(
        out.status,
        0,
        "{kernel}: insmod {line}: {:?}\n{}",
        out.lines,
        guest.console_tail(30)
    );
}

/// `check` on the live guest, running (printed) and paused, must report exactly
/// `wants`; the paused run is returned.
pub(crate) fn live_and_paused(
    label: &str,
    d: &Detector,
    guest: &mut Guest,
    wants: &[Want],
    problems: &mut Vec<String>,
) -> Run {
    let run = d.live(guest, &["--json", "check"]);
    eprintln!("{label}: check:\n{}", run.stdout);
    problems.extend(expect_exactly(&format!("{label} (live)"), &run, wants));
    let run = d.live(guest, &["--json", "check", "--pause"]);
    problems.extend(expect_exactly(&format!("{label} (paused)"), &run, wants));
    run
}

/// A detector for `kernel` and a booted guest of the standard scenario on which
/// `check` found nothing (else the problem is in `problems`), with the label of the
/// step's messages; `None` when the guest did not boot (said in `problems`).
pub(crate) fn clean_guest(
    lab: &Lab,
    kernel: &str,
    problems: &mut Vec<String>,
) -> Option<(tempfile::TempDir, Detector, Guest, String)> {
    let (profiles, d) = detector_for(lab, kernel);
    let mut guest = match lab.boot(kernel, &Scenario::standard(), &BootOptions::default()) {
        Ok(g) => g,
        Err(e) => {
            problems.push(format!("{kernel}: boot: {e}"));
            return None;
        }
    };
    let truth = guest.refresh_truth().expect("truth");
    let label = format!("{kernel} ({})", truth.release);
    let t = std::time::Instant::now();
    let run = d.live(&mut guest, &["--json", "check"]);
    problems.extend(expect_exactly(&format!("{label} clean"), &run, &[]));
    eprintln!("{label}: clean check {:.1?}", t.elapsed());
    Some((profiles, d, guest, label))
}
