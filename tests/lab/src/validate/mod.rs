//! `lab validate`: whether the toolkit reads a kernel given as files, as CI would ask it.
//!
//! For each kernel ([`kernels::resolve`]): boot it in QEMU with the standard scenario
//! (the guest's own report must show every workload), make its profile with
//! `profile-gen` from the boot image (or from its DWARF, when given beside it), run
//! `detector verify --pause` on the live guest (a step per rule), compare `detector ps`
//! and `detector lsmod` with the guest's own view ([`crate::views`], the guest paused),
//! and shut it down. Each kernel gives a [`junit::Suite`]; a failed step carries its
//! evidence, and the steps a failure makes pointless are reported as skipped.
//!
//! The lab still knows nothing of profiles or kernel structures: `profile-gen` and
//! `detector` are run as programs ([`Tools`]) and their JSON compared with the truth.

pub mod junit;
pub mod kernels;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::guest::{BootOptions, Guest};
use crate::scenario::Scenario;
use crate::store::{self, KernelImage};
use crate::Lab;
use junit::{Case, Suite};
use kernels::{BootImage, Dwarf, KernelFiles, Modules};

/// The programs validation runs.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `profile-gen`.
    pub profile_gen: PathBuf,
    /// `detector`.
    pub detector: PathBuf,
}

impl Tools {
    /// Each program as given, else beside `beside` (the `lab` binary's directory, where
    /// cargo builds all three), else on `PATH` (the vmi-detector package installs both).
    pub fn find(
        profile_gen: Option<PathBuf>,
        detector: Option<PathBuf>,
        beside: Option<&Path>,
    ) -> Result<Tools> {
        let find = |given: Option<PathBuf>, program: &str| -> Result<PathBuf> {
            if let Some(p) = given {
                return if p.is_file() {
                    Ok(p)
                } else {
                    Err(Error::MissingProgram {
                        program: program.to_string(),
                        looked: p.display().to_string(),
                    })
                };
            }
            beside
                .map(|d| d.join(program))
                .filter(|p| p.is_file())
                .or_else(|| crate::tools::which(program))
                .ok_or_else(|| Error::MissingProgram {
                    program: program.to_string(),
                    looked: format!(
                        "{}PATH",
                        beside.map_or(String::new(), |d| format!("{} and ", d.display()))
                    ),
                })
        };
        Ok(Tools {
            profile_gen: find(profile_gen, "profile-gen")?,
            detector: find(detector, "detector")?,
        })
    }
}

/// How to validate.
#[derive(Debug, Clone)]
pub struct Options {
    /// How each guest boots (TCG, memory, the time it has to become ready).
    pub boot: BootOptions,
    /// The programs.
    pub tools: Tools,
    /// How long `profile-gen` (a DWARF profile of a 600 MB vmlinux takes minutes) and
    /// each `detector` run may take before it is killed and its step failed.
    pub tool_timeout: Duration,
}

/// The steps after boot, in order: what is reported skipped when one cannot run.
const LATER_STEPS: &[&str] = &["profile", "verify", "ps", "lsmod", "shutdown"];

/// Validate one kernel; `progress` is told each step as it starts.
pub fn validate_kernel(
    lab: &Lab,
    kernel: &KernelFiles,
    opts: &Options,
    progress: &mut dyn FnMut(&str),
) -> Suite {
    let mut suite = Suite {
        name: kernel.name.clone(),
        ..Suite::default()
    };
    let not_booted = |suite: &mut Suite| {
        for step in LATER_STEPS {
            suite
                .cases
                .push(Case::skipped(step, "not run: the guest did not boot"));
        }
    };
    progress("boot");
    let t = Instant::now();
    let work = match tempfile::Builder::new()
        .prefix("vmi-lab-validate-")
        .tempdir()
        .ctx("creating a directory in", std::env::temp_dir())
    {
        Ok(w) => w,
        Err(e) => {
            suite.cases.push(Case::failed(
                "boot",
                t.elapsed(),
                "no work directory",
                e.to_string(),
            ));
            not_booted(&mut suite);
            return suite;
        }
    };
    let (mut guest, vmlinuz) = match boot(lab, kernel, work.path(), opts, &mut suite.properties) {
        Ok((guest, vmlinuz, output)) => {
            suite.cases.push(Case::passed("boot", t.elapsed(), output));
            (guest, vmlinuz)
        }
        Err(evidence) => {
            suite.cases.push(Case::failed(
                "boot",
                t.elapsed(),
                "the kernel did not boot to the lab's scenario",
                evidence,
            ));
            not_booted(&mut suite);
            return suite;
        }
    };

    progress("profile");
    let t = Instant::now();
    let profile = work.path().join("profile.json");
    let inputs = profile_inputs(kernel, &vmlinuz);
    suite.properties.push((
        "profile from".into(),
        inputs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
    ));
    match make_profile(&inputs, &profile, opts) {
        Ok(output) => suite
            .cases
            .push(Case::passed("profile", t.elapsed(), output)),
        Err((message, evidence)) => {
            suite
                .cases
                .push(Case::failed("profile", t.elapsed(), message, evidence));
            for step in ["verify", "ps", "lsmod"] {
                suite.cases.push(Case::skipped(step, "not run: no profile"));
            }
            suite.cases.push(shutdown(guest));
            return suite;
        }
    }

    progress("verify");
    suite.cases.extend(verify(&mut guest, &profile, opts));
    progress("ps, lsmod");
    suite.cases.extend(views(&mut guest, &profile, opts));
    progress("shutdown");
    suite.cases.push(shutdown(guest));
    suite
}

/// `profile-gen INPUTS -o PROFILE`: what it said (its warnings), or a failure's message
/// and evidence.
fn make_profile(
    inputs: &[PathBuf],
    profile: &Path,
    opts: &Options,
) -> std::result::Result<String, (&'static str, String)> {
    let mut cmd = Command::new(&opts.tools.profile_gen);
    cmd.args(inputs).arg("-o").arg(profile);
    match run_bounded(&mut cmd, opts.tool_timeout) {
        Ok(ran) if ran.code == Some(0) && profile.is_file() => Ok(ran.stderr),
        Ok(ran) => Err(("profile-gen made no profile", ran.evidence(&cmd))),
        Err(e) => Err(("profile-gen did not run", e)),
    }
}

/// What `profile-gen` is given: the DWARF when there is some, else the boot image.
fn profile_inputs(kernel: &KernelFiles, vmlinuz: &Path) -> Vec<PathBuf> {
    match &kernel.dwarf {
        Some(Dwarf::Vmlinux {
            vmlinux,
            system_map,
        }) => std::iter::once(vmlinux.clone())
            .chain(system_map.clone())
            .collect(),
        Some(Dwarf::DbgDeb(deb)) => vec![deb.clone()],
        None => vec![vmlinuz.to_path_buf()],
    }
}

/// The boot image (extracted from its package into `work` when it is in one) and the
/// `qemu_fw_cfg` module from the kernel's modules, uncompressed, when there is one.
fn boot_files(kernel: &KernelFiles, work: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    let unpacked = work.join("unpacked");
    std::fs::create_dir_all(&unpacked).ctx("creating", &unpacked)?;
    let fw_cfg = |p: &Path| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("qemu_fw_cfg.ko"))
    };
    let mut from_deb = None;
    let vmlinuz = match &kernel.image {
        BootImage::File(p) => p.clone(),
        BootImage::Deb(deb) => {
            store::extract(
                deb,
                &unpacked,
                &[],
                &[
                    "./boot/vmlinuz-*",
                    "*/modules/*/vmlinuz",
                    "*/qemu_fw_cfg.ko*",
                ],
                true,
            )?;
            from_deb = Some(deb.clone());
            store::find_file(&unpacked, |p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
            })?
            .ok_or_else(|| Error::KernelFiles {
                path: deb.clone(),
                message: "holds no boot image (./boot/vmlinuz-*, usr/lib/modules/*/vmlinuz): \
                          give the linux-image-<release>[-unsigned] or linux-binary package, \
                          or the vmlinuz itself"
                    .into(),
            })?
        }
    };
    let module = match &kernel.modules {
        None => None,
        Some(Modules::Dir(dir)) => store::find_file(dir, fw_cfg)?,
        Some(Modules::Deb(deb)) => {
            if from_deb.as_ref() != Some(deb) {
                store::extract(deb, &unpacked, &[], &["*/qemu_fw_cfg.ko*"], true)?;
            }
            store::find_file(&unpacked, fw_cfg)?
        }
    };
    let module = match module {
        None => None,
        Some(src) => {
            // a copy: the user's files are never moved
            let name = src.file_name().unwrap_or_default().to_string_lossy();
            let copy = work.join(format!("copy-{name}"));
            std::fs::copy(&src, &copy).ctx("copying", &src)?;
            let ko = work.join("qemu_fw_cfg.ko");
            store::decompress_module(&copy, &ko)?;
            Some(ko)
        }
    };
    Ok((vmlinuz, module))
}

/// Boot the kernel with the standard scenario: the guest, the boot image it runs (taken
/// out of its package when it came in one) and what it said; or the evidence of why not.
fn boot(
    lab: &Lab,
    kernel: &KernelFiles,
    work: &Path,
    opts: &Options,
    properties: &mut Vec<(String, String)>,
) -> std::result::Result<(Guest, PathBuf, String), String> {
    let (vmlinuz, module) = boot_files(kernel, work).map_err(|e| e.to_string())?;
    properties.push(("vmlinuz".into(), vmlinuz.display().to_string()));
    let release = kernels::bzimage_release(&vmlinuz).map_err(|e| e.to_string())?;
    properties.push(("image release".into(), release.clone()));
    if let Some(m) = &kernel.modules {
        let (Modules::Dir(p) | Modules::Deb(p)) = m;
        properties.push(("modules".into(), p.display().to_string()));
    }
    let image = KernelImage {
        abi: kernel.name.clone(),
        vmlinuz: vmlinuz.clone(),
        config: PathBuf::new(),
        fw_cfg_module: module.clone(),
    };
    let scenario = Scenario::standard();
    let worker = lab.worker().map_err(|e| e.to_string())?;
    let guest = Guest::boot_scenario(&image, &scenario, &worker, &opts.boot).map_err(|e| {
        format!(
            "{e}\n(the lab boots the image with a busybox initramfs on a serial console: the \
             kernel needs CONFIG_SERIAL_8250_CONSOLE, BLK_DEV_INITRD with gzip, PROC_FS, \
             SYSFS, DEVTMPFS built in)"
        )
    })?;
    let truth = guest.truth();
    let problems = truth.check(&scenario.expectations());
    if !problems.is_empty() {
        return Err(format!(
            "the guest does not run the scenario as asked:\n{}\nlast console lines:\n{}",
            problems.join("\n"),
            guest.console_tail(30)
        ));
    }
    properties.push(("release".into(), truth.release.clone()));
    let output = format!(
        "{} ready after {:.1} s (KASLR {}, _text {:#x}); {} processes, {} modules{}\n{}",
        truth.release,
        guest.boot_time().as_secs_f64(),
        if truth.kaslr { "on" } else { "off" },
        truth.text_addr,
        truth.processes.len(),
        truth.modules.len(),
        if module.is_some() {
            " (qemu_fw_cfg from the given modules)"
        } else {
            ""
        },
        truth.version,
    );
    Ok((guest, vmlinuz, output))
}

/// `detector verify --pause` on the live guest: a case per rule.
fn verify(guest: &mut Guest, profile: &Path, opts: &Options) -> Vec<Case> {
    let t = Instant::now();
    guest.release_qmp();
    let mut cmd = detector(guest, profile, opts);
    cmd.args(["--json", "verify", "--pause"]);
    let ran = match run_bounded(&mut cmd, opts.tool_timeout) {
        Ok(r) => r,
        Err(e) => {
            return vec![Case::failed(
                "verify",
                t.elapsed(),
                "detector did not run",
                e,
            )]
        }
    };
    let took = t.elapsed();
    let report: Option<serde_json::Value> = serde_json::from_str(&ran.stdout).ok();
    let rules = report
        .as_ref()
        .and_then(|r| r["rules"].as_array())
        .filter(|r| !r.is_empty());
    let Some(rules) = rules else {
        return vec![Case::failed(
            "verify",
            took,
            "detector verify gave no report",
            ran.evidence(&cmd),
        )];
    };
    let mut cases = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let rule = r["rule"].as_str().unwrap_or("?");
        let detail = r["detail"].as_str().unwrap_or("").to_string();
        let name = format!("verify {rule}");
        // the run's time goes to its first rule (the rules are not timed one by one)
        let time = if i == 0 { took } else { Duration::ZERO };
        cases.push(match r["outcome"].as_str() {
            Some("pass") => Case::passed(&name, time, detail),
            Some("n/a") => Case {
                time,
                ..Case::skipped(&name, &format!("n/a: {detail}"))
            },
            other => Case::failed(
                &name,
                time,
                &format!("rule {rule}: {}", other.unwrap_or("no outcome")),
                detail,
            ),
        });
    }
    let failed = cases.iter().any(Case::is_failure);
    if ran.code != Some(0) && !failed {
        cases.push(Case::failed(
            "verify",
            Duration::ZERO,
            "detector verify failed with no failed rule",
            ran.evidence(&cmd),
        ));
    }
    cases
}

/// `detector ps` and `lsmod` against the guest's own view, read while it is paused.
fn views(guest: &mut Guest, profile: &Path, opts: &Options) -> Vec<Case> {
    let truth = match guest.refresh_truth() {
        Ok(t) => t,
        Err(e) => {
            let why = format!("the guest's own view: {e}\n{}", guest.console_tail(20));
            return vec![
                Case::failed("ps", Duration::ZERO, "no ground truth", why.clone()),
                Case::failed("lsmod", Duration::ZERO, "no ground truth", why),
            ];
        }
    };
    let paused = guest.pause();
    guest.release_qmp();
    let mut cases = Vec::new();
    for step in ["ps", "lsmod"] {
        let t = Instant::now();
        if let Err(e) = &paused {
            cases.push(Case::failed(
                step,
                t.elapsed(),
                "could not pause the guest",
                e.to_string(),
            ));
            continue;
        }
        let mut cmd = detector(guest, profile, opts);
        cmd.args(["--json", step]);
        let ran = match run_bounded(&mut cmd, opts.tool_timeout) {
            Ok(r) => r,
            Err(e) => {
                cases.push(Case::failed(step, t.elapsed(), "detector did not run", e));
                continue;
            }
        };
        let view: Option<serde_json::Value> = serde_json::from_str(&ran.stdout).ok();
        let differences = match &view {
            Some(v) if ran.code == Some(0) => differences(step, v, &truth),
            _ => {
                cases.push(Case::failed(
                    step,
                    t.elapsed(),
                    &format!("detector {step} failed"),
                    ran.evidence(&cmd),
                ));
                continue;
            }
        };
        let n = view.as_ref().and_then(|v| v.as_array()).map_or(0, Vec::len);
        cases.push(if differences.is_empty() {
            Case::passed(
                step,
                t.elapsed(),
                format!("{n} entries, as the guest's own view"),
            )
        } else {
            Case::failed(
                step,
                t.elapsed(),
                &format!("detector {step} differs from the guest's own view"),
                differences.join("\n"),
            )
        });
    }
    if paused.is_ok() {
        // a guest left paused still shuts down: QEMU is ended then
        let _ = guest.resume();
    }
    guest.release_qmp();
    cases
}

/// How a view (`ps` or `lsmod`) differs from the guest's own.
fn differences(step: &str, view: &serde_json::Value, truth: &crate::GroundTruth) -> Vec<String> {
    use crate::views::{exe_differences, lsmod_differences, ps_differences};
    match step {
        "ps" => {
            let mut d = ps_differences(view, truth);
            d.extend(exe_differences(view, truth));
            d
        }
        _ => lsmod_differences(view, truth),
    }
}

/// Power the guest off.
fn shutdown(guest: Guest) -> Case {
    let t = Instant::now();
    match guest.shutdown() {
        Ok(()) => Case::passed("shutdown", t.elapsed(), String::new()),
        Err(e) => Case::failed(
            "shutdown",
            t.elapsed(),
            "the guest did not power off",
            e.to_string(),
        ),
    }
}

/// `detector --qemu SOCKET --profile PROFILE`.
fn detector(guest: &Guest, profile: &Path, opts: &Options) -> Command {
    let mut cmd = Command::new(&opts.tools.detector);
    cmd.arg("--qemu")
        .arg(guest.qmp_socket())
        .arg("--profile")
        .arg(profile);
    cmd
}

/// What a program printed and how it ended.
#[derive(Debug)]
struct Ran {
    /// Exit code (`None`: killed by a signal).
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// The command, its exit and what it said, for a failure.
    fn evidence(&self, cmd: &Command) -> String {
        format!(
            "$ {}\nexit {}\nstderr:\n{}\nstdout:\n{}",
            crate::tools::display(cmd),
            self.code
                .map_or("by a signal".to_string(), |c| c.to_string()),
            crate::tools::tail(&self.stderr, 40),
            crate::tools::tail(&self.stdout, 40)
        )
    }
}

/// Each of a program's outputs is kept up to this many bytes (the rest is read and
/// dropped, so the program never blocks on a full pipe).
const OUTPUT_MAX: u64 = 64 << 20;

/// Read `r` whole, keeping at most [`OUTPUT_MAX`] bytes.
fn read_bounded(mut r: impl Read) -> String {
    let mut kept = Vec::new();
    let _ = (&mut r).take(OUTPUT_MAX).read_to_end(&mut kept);
    let _ = std::io::copy(&mut r, &mut std::io::sink());
    String::from_utf8_lossy(&kept).into_owned()
}

/// Run `cmd`, killing it after `timeout`: its outputs, or why it did not run or end.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> std::result::Result<Ran, String> {
    use std::os::unix::process::CommandExt;
    let shown = crate::tools::display(cmd);
    // a group of its own, so that its children end with it (they hold its pipes)
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("$ {shown}\ncould not start it: {e}"))?;
    let out = child
        .stdout
        .take()
        .map(|o| std::thread::spawn(|| read_bounded(o)));
    let err = child
        .stderr
        .take()
        .map(|e| std::thread::spawn(|| read_bounded(e)));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                kill_group(&mut child);
                break Err(format!("killed after {} s", timeout.as_secs()));
            }
            Err(e) => {
                kill_group(&mut child);
                break Err(format!("waiting for it: {e}"));
            }
        }
    };
    let join = |h: Option<std::thread::JoinHandle<String>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    let (stdout, stderr) = (join(out), join(err));
    match status {
        Ok(status) => Ok(Ran {
            code: status.code(),
            stdout,
            stderr,
        }),
        Err(why) => Err(format!(
            "$ {shown}\n{why}\nstderr:\n{}",
            crate::tools::tail(&stderr, 40)
        )),
    }
}

/// Kill a child started by [`run_bounded`] and the process group it leads.
fn kill_group(child: &mut std::process::Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill has no memory preconditions; the group is the child's own
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_that_hangs_is_killed_and_its_output_kept() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let ran = run_bounded(&mut cmd, Duration::from_secs(30)).unwrap();
        assert_eq!(
            (ran.code, ran.stdout.as_str(), ran.stderr.as_str()),
            (Some(3), "out\n", "err\n")
        );
        assert!(ran.evidence(&cmd).contains("exit 3"));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started >&2; sleep 30"]);
        let t = Instant::now();
        let e = run_bounded(&mut cmd, Duration::from_millis(300)).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert!(e.contains("killed after") && e.contains("started"), "{e}");
        let e = run_bounded(
            &mut Command::new("/nonexistent/tool"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.contains("could not start"), "{e}");
    }

    #[test]
    fn tools_not_found_say_where_they_were_looked_for() {
        let d = tempfile::tempdir().unwrap();
        let e = Tools::find(Some(d.path().join("pg")), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("profile-gen") && e.contains("pg"), "{e}");
        for name in ["profile-gen", "detector"] {
            std::fs::write(d.path().join(name), b"").unwrap();
        }
        let t = Tools::find(None, None, Some(d.path())).unwrap();
        assert_eq!(t.detector, d.path().join("detector"));
    }

    #[test]
    fn the_profile_comes_from_dwarf_when_given() {
        let k = KernelFiles {
            name: "k".into(),
            image: BootImage::File("/k/vmlinuz-k".into()),
            modules: None,
            dwarf: None,
        };
        let vmlinuz = Path::new("/k/vmlinuz-k");
        assert_eq!(profile_inputs(&k, vmlinuz), [vmlinuz]);
        let k = KernelFiles {
            dwarf: Some(Dwarf::Vmlinux {
                vmlinux: "/k/vmlinux-k".into(),
                system_map: Some("/k/System.map-k".into()),
            }),
            ..k
        };
        assert_eq!(
            profile_inputs(&k, vmlinuz),
            [Path::new("/k/vmlinux-k"), Path::new("/k/System.map-k")]
        );
    }
}
