//! `lab`: the guest lab for people. Fetch Debian kernels, boot them in QEMU with a
//! scenario and print what the guest reports about itself.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vmi_lab::{
    BootOptions, DomuSpec, GroundTruth, Lab, Scenario, ShellOutput, XenOptions, XenRig,
    DEFAULT_KERNEL, MATRIX,
};

#[derive(Parser)]
#[command(
    name = "lab",
    about = "Guest lab: real Debian kernels booted in QEMU as the ground truth"
)]
struct Cli {
    /// Cache directory (default: $VMI_LAB_CACHE, else ~/.cache/vmi-lab).
    #[arg(long, global = true)]
    cache: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

/// The items `lab prepare` makes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Items {
    /// Everything the workspace's tests use.
    All,
    /// All but the Rust-enabled kernel.
    Base,
    /// Only the Rust-enabled kernel.
    RustKernel,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the kernel builds the archive has (optionally only those containing TEXT).
    List { text: Option<String> },
    /// Resolve a kernel name or series (`newest:7`) to an exact build.
    Resolve { name: String },
    /// Fetch a kernel build into the cache and print where its files are.
    Fetch {
        /// ABI name (6.1.0-56-amd64) or series (newest:7).
        name: String,
        /// Also fetch vmlinux (DWARF) and System.map from the -dbg package (~1 GB).
        #[arg(long)]
        dbg: bool,
        /// Also keep the -dbg package file itself (~1 GB) and print its path.
        #[arg(long)]
        dbg_deb: bool,
        /// Also fetch the headers for building modules.
        #[arg(long)]
        headers: bool,
    },
    /// Boot a kernel with a scenario, print its ground truth, optionally dump its memory,
    /// then power it off.
    Boot {
        /// ABI name or series; default: the lab's default kernel.
        #[arg(default_value = DEFAULT_KERNEL)]
        name: String,
        /// Scenario: `standard` (workloads of every kind) or `empty`.
        #[arg(long, default_value = "standard")]
        scenario: String,
        /// Boot with `nokaslr`.
        #[arg(long)]
        nokaslr: bool,
        /// Guest RAM in MiB.
        #[arg(long, default_value_t = 1024)]
        memory: u32,
        /// Seconds to wait for the guest to become ready.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Write an ELF core (QMP dump-guest-memory) here.
        #[arg(long)]
        dump_elf: Option<PathBuf>,
        /// Write a raw physical image here.
        #[arg(long)]
        dump_raw: Option<PathBuf>,
        /// Write a LiME image here.
        #[arg(long)]
        dump_lime: Option<PathBuf>,
        /// Run this shell command in the guest and print its output.
        #[arg(long)]
        sh: Vec<String>,
    },
    /// Print the kernels the lab tests run on, resolved.
    Matrix,
    /// Build (or reuse) the Rust-enabled 6.12 kernel for the guest module and print
    /// where its files are.
    RustKernel,
    /// Fill the cache with everything the workspace's tests use (kernels and their
    /// parts, build roots, Python oracles, the Rust-enabled kernel, the Xen image),
    /// several at a time; one line per item with its time. Exits 1 when an item failed
    /// (the tests fetch it again themselves).
    Prepare {
        /// Which items: every one, all but the Rust-enabled kernel (`base`), or only
        /// that kernel (the longest item: scripts/test.sh starts the tests once `base`
        /// is ready, and the tests that need the kernel wait for its build).
        #[arg(long, value_enum, default_value_t = Items::All)]
        items: Items,
    },
    /// Validate kernels given as files, as CI would: boot each in QEMU (TCG) with the
    /// lab's scenario, make its profile with profile-gen, run `detector verify` on the
    /// live guest and compare `detector ps` and `detector lsmod` with the guest's own
    /// view; print a line per kernel and write one JUnit XML report (a testsuite per
    /// kernel, a testcase per step: boot, profile, verify <rule>, ps, lsmod, shutdown).
    /// Exit status 0 when every kernel passes, 1 when a step failed, 2 on bad arguments.
    ///
    /// Each KERNEL is a boot image (vmlinuz, a bzImage), a linux-image .deb holding one,
    /// or a directory: each vmlinuz-<release> in it (and each linux-image-<release>*.deb
    /// with no vmlinuz-<release> beside). Beside a vmlinuz-<release>, optional:
    /// modules-<release>/ (a copy of /lib/modules/<release>) or
    /// linux-image-<release>*.deb, whose qemu_fw_cfg module the guest loads at boot;
    /// vmlinux-<release> (+ System.map-<release>) or linux-image-<release>-dbg*.deb, to
    /// make the profile from DWARF instead of the boot image's BTF and kallsyms.
    ///
    /// profile-gen and detector are looked for beside this program, then on PATH.
    #[command(verbatim_doc_comment)]
    Validate {
        /// Kernels: vmlinuz files, linux-image .debs, directories of vmlinuz-<release>.
        #[arg(required = true, value_name = "KERNEL")]
        kernels: Vec<PathBuf>,
        /// Write the JUnit XML report here (whole or not at all).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// The profile-gen program.
        #[arg(long, value_name = "PATH")]
        profile_gen: Option<PathBuf>,
        /// The detector program.
        #[arg(long, value_name = "PATH")]
        detector: Option<PathBuf>,
        /// Guest RAM in MiB.
        #[arg(long, default_value_t = 1024)]
        memory: u32,
        /// Seconds each guest has to boot, and each profile-gen or detector run to end.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
    },
    /// Boot Xen and dom0 in QEMU, start one domU (`lab-domu`) with a scenario, print its
    /// ground truth, run shell commands in the domU and in dom0, then power off.
    Xen {
        /// The domU's kernel: ABI name or series; default: the lab's default kernel.
        #[arg(default_value = DEFAULT_KERNEL)]
        name: String,
        /// Scenario: `standard` (workloads of every kind) or `empty`.
        #[arg(long, default_value = "standard")]
        scenario: String,
        /// A PV domU instead of PVH.
        #[arg(long, conflicts_with = "hvm")]
        pv: bool,
        /// A full HVM domU instead of PVH (QEMU as device model in dom0; boots in
        /// about three minutes).
        #[arg(long)]
        hvm: bool,
        /// The domU's RAM in MiB.
        #[arg(long, default_value_t = 256)]
        memory: u32,
        /// Put a host file into dom0, as HOST:GUEST (executables keep running: the host
        /// is bookworm like dom0), e.g. target/debug/detector:/lab/files/detector.
        #[arg(long, value_name = "HOST:GUEST")]
        put: Vec<String>,
        /// Run this shell command in the domU and print its output.
        #[arg(long)]
        sh: Vec<String>,
        /// Run this shell command in dom0 (after the domU is up) and print its output.
        #[arg(long)]
        dom0_sh: Vec<String>,
    },
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let cache = match &cli.cache {
        Some(dir) => vmi_lab::Cache::open(dir)?,
        None => vmi_lab::Cache::open_default()?,
    };
    let lab = Lab::new(cache)?.with_progress(std::io::stderr().is_terminal());
    match cli.command {
        Cmd::List { text } => {
            for abi in lab.store().available()? {
                if text.as_deref().is_none_or(|t| abi.contains(t)) {
                    println!("{abi}");
                }
            }
        }
        Cmd::Resolve { name } => println!("{}", lab.store().resolve(&name)?),
        Cmd::RustKernel => {
            let k = vmi_lab::RustKernel::ensure(lab.cache())?;
            println!("release  {}", k.release);
            println!("bzImage  {}", k.image.vmlinuz.display());
            println!("vmlinux  {}", k.vmlinux.display());
            println!("map      {}", k.system_map.display());
            println!("tree     {}", k.tree.display());
            println!("rustc    {}", k.rustc.display());
        }
        Cmd::Prepare { items } => {
            let start = std::time::Instant::now();
            let quiet = lab.clone().with_progress(false);
            let rust = |lane: &Vec<vmi_lab::prepare::Item>| {
                lane.contains(&vmi_lab::prepare::Item::RustKernel)
            };
            let lanes: Vec<_> = vmi_lab::prepare::ci_lanes()
                .into_iter()
                .filter(|lane| match items {
                    Items::All => true,
                    Items::Base => !rust(lane),
                    Items::RustKernel => rust(lane),
                })
                .collect();
            let outcomes = vmi_lab::prepare::prepare(&quiet, lanes, |o| match &o.error {
                None => println!("prepare: {:7.1} s  {}", o.took.as_secs_f64(), o.item),
                Some(e) => println!(
                    "prepare: {:7.1} s  {}: FAILED: {}",
                    o.took.as_secs_f64(),
                    o.item,
                    printable(e)
                ),
            });
            let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
            println!(
                "prepare: {} items ready, {failed} failed, in {:.0} s",
                outcomes.len() - failed,
                start.elapsed().as_secs_f64()
            );
            if failed > 0 {
                std::process::exit(1);
            }
        }
        Cmd::Matrix => {
            for name in MATRIX {
                println!("{name:24} {}", lab.store().resolve(name)?);
            }
        }
        Cmd::Fetch {
            name,
            dbg,
            dbg_deb,
            headers,
        } => {
            let image = lab.store().image(&name)?;
            println!("abi       {}", image.abi);
            print_file("vmlinuz", &image.vmlinuz)?;
            print_file("config", &image.config)?;
            if let Some(fw) = &image.fw_cfg_module {
                print_file("fw_cfg", fw)?;
            }
            if dbg {
                let d = lab.store().debug(&image.abi)?;
                print_file("vmlinux", &d.vmlinux)?;
                print_file("sysmap", &d.system_map)?;
            }
            if dbg_deb {
                print_file("dbg-deb", &lab.store().dbg_package(&image.abi)?)?;
            }
            if headers {
                let h = lab.store().headers(&image.abi)?;
                println!("kdir      {}", h.kdir.display());
            }
        }
        Cmd::Boot {
            name,
            scenario,
            nokaslr,
            memory,
            timeout,
            dump_elf,
            dump_raw,
            dump_lime,
            sh,
        } => {
            let scenario = scenario_named(&scenario)?;
            let opts = BootOptions {
                memory_mib: memory,
                kaslr: !nokaslr,
                timeout: Duration::from_secs(timeout),
                ..BootOptions::default()
            };
            let image = lab.store().image(&name)?;
            eprintln!("booting {} under QEMU ({}) ...", image.abi, opts.accel);
            let mut guest = lab
                .boot(&image.abi, &scenario, &opts)
                .with_context(|| format!("booting {}", image.abi))?;
            eprintln!(
                "ready after {:.1} s; QMP {}; RAM {}",
                guest.boot_time().as_secs_f64(),
                guest.qmp_socket().display(),
                guest.ram_path().display()
            );
            print_truth(guest.truth());
            let problems = guest.truth().check(&scenario.expectations());
            for p in &problems {
                println!("MISMATCH {p}");
            }
            for cmd in &sh {
                print_shell(cmd, &guest.sh(cmd)?);
            }
            for (path, kind) in [(dump_elf, "elf"), (dump_raw, "raw"), (dump_lime, "lime")] {
                let Some(path) = path else { continue };
                let t = std::time::Instant::now();
                match kind {
                    "elf" => guest.dump_elf(&path)?,
                    "raw" => guest.dump_raw(&path)?,
                    _ => guest.dump_lime(&path)?,
                }
                eprintln!(
                    "{kind} dump {} in {:.1} s",
                    path.display(),
                    t.elapsed().as_secs_f64()
                );
            }
            guest.shutdown()?;
            if !problems.is_empty() {
                anyhow::bail!("the ground truth does not match the scenario");
            }
        }
        Cmd::Validate {
            kernels,
            junit,
            profile_gen,
            detector,
            memory,
            timeout,
        } => {
            let passed = validate(
                &lab,
                &kernels,
                junit,
                profile_gen,
                detector,
                memory,
                timeout,
            )?;
            if !passed {
                std::process::exit(1);
            }
        }
        Cmd::Xen {
            name,
            scenario,
            pv,
            hvm,
            memory,
            put,
            sh,
            dom0_sh,
        } => {
            let scenario = scenario_named(&scenario)?;
            let abi = lab.store().image(&name)?.abi;
            let mut spec = DomuSpec::pvh("lab-domu", &abi, scenario.clone());
            spec.memory_mib = memory;
            if pv {
                spec = spec.pv();
            }
            if hvm {
                spec = spec.hvm();
            }
            let kind = spec.kind;
            let mut opts = XenOptions::default().domu(spec);
            for p in &put {
                let Some((host, guest)) = p.split_once(':') else {
                    anyhow::bail!("--put {p:?}: give HOST:GUEST");
                };
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(host)
                    .with_context(|| format!("--put {host}"))?
                    .permissions()
                    .mode();
                opts = if mode & 0o111 != 0 {
                    opts.program(host, guest)
                } else {
                    opts.file(host, guest)
                };
            }
            eprintln!("booting Xen and dom0 under QEMU (TCG) ...");
            let mut rig = XenRig::boot(&lab, &opts).context("booting the Xen rig")?;
            eprintln!(
                "dom0 ready after {:.1} s; starting lab-domu ({abi}, {}) ...",
                rig.boot_time().as_secs_f64(),
                kind.xl_type().to_uppercase()
            );
            let mut domu = rig.start_timeout("lab-domu", std::time::Duration::from_secs(900))?;
            eprintln!(
                "lab-domu (domid {}) ready after {:.1} s",
                domu.domid(),
                domu.boot_time().as_secs_f64()
            );
            print_truth(domu.truth());
            let problems = domu.truth().check(&scenario.expectations());
            for p in &problems {
                println!("MISMATCH {p}");
            }
            for cmd in &sh {
                print_shell(cmd, &domu.sh(cmd)?);
            }
            for cmd in &dom0_sh {
                print_shell(&format!("(dom0) {cmd}"), &rig.dom0_sh(cmd)?);
            }
            rig.shutdown()?;
            if !problems.is_empty() {
                anyhow::bail!("the ground truth does not match the scenario");
            }
        }
    }
    Ok(())
}

/// `lab validate`: whether every kernel passed.
fn validate(
    lab: &Lab,
    args: &[PathBuf],
    junit: Option<PathBuf>,
    profile_gen: Option<PathBuf>,
    detector: Option<PathBuf>,
    memory: u32,
    timeout: u64,
) -> Result<bool> {
    use vmi_lab::validate::{self, junit::Outcome};
    let kernels = validate::kernels::resolve(args)?;
    // a report that cannot be written is said before any guest boots
    if let Some(dir) = junit.as_deref().and_then(std::path::Path::parent) {
        if !dir.as_os_str().is_empty() && !dir.is_dir() {
            anyhow::bail!(
                "--junit: directory {} does not exist: create it first",
                dir.display()
            );
        }
    }
    let exe = std::env::current_exe().context("finding this program")?;
    let opts = validate::Options {
        boot: BootOptions {
            memory_mib: memory,
            timeout: Duration::from_secs(timeout),
            ..BootOptions::default()
        },
        tools: validate::Tools::find(profile_gen, detector, exe.parent())?,
        tool_timeout: Duration::from_secs(timeout),
    };
    let spinner = std::io::stderr().is_terminal().then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.enable_steady_tick(Duration::from_millis(200));
        s
    });
    let mut suites = Vec::new();
    for (i, k) in kernels.iter().enumerate() {
        let n = kernels.len();
        let mut progress = |step: &str| {
            let line = format!("{} ({}/{n}): {step}", k.name, i + 1);
            match &spinner {
                Some(s) => s.set_message(line),
                None => eprintln!("validate: {line}"),
            }
        };
        let suite = validate::validate_kernel(lab, k, &opts, &mut progress);
        let line = format!(
            "{} {} in {:.1} s: {} steps, {} failed, {} skipped",
            if suite.failures() == 0 {
                "PASS"
            } else {
                "FAIL"
            },
            suite.name,
            suite.time().as_secs_f64(),
            suite.cases.len(),
            suite.failures(),
            suite.skipped()
        );
        match &spinner {
            Some(s) => s.println(&line),
            None => println!("{line}"),
        }
        for c in &suite.cases {
            if let Outcome::Failed { message, evidence } = &c.outcome {
                println!("  {}: {}", c.name, printable(message));
                for l in evidence.lines() {
                    println!("    {}", printable(l));
                }
            }
        }
        suites.push(suite);
    }
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    if let Some(path) = &junit {
        validate::junit::write(path, &suites)?;
        println!("JUnit report: {}", path.display());
    }
    Ok(suites.iter().all(|s| s.failures() == 0))
}

fn scenario_named(name: &str) -> Result<Scenario> {
    match name {
        "standard" => Ok(Scenario::standard()),
        "empty" => Ok(Scenario::new()),
        other => anyhow::bail!("unknown scenario {other:?}: use standard or empty"),
    }
}

fn print_shell(cmd: &str, out: &ShellOutput) {
    println!("$ {cmd}   (exit {})", out.status);
    for l in &out.lines {
        println!("{}", printable(l));
    }
}

fn print_file(label: &str, path: &std::path::Path) -> Result<()> {
    let size = std::fs::metadata(path)?.len();
    println!("{label:9} {} ({:.1} MB)", path.display(), size as f64 / 1e6);
    Ok(())
}

/// Guest strings may hold anything: show control characters as escapes.
fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn print_truth(t: &GroundTruth) {
    println!("release   {}", printable(&t.release));
    println!("banner    {}", printable(&t.version));
    println!("cmdline   {}", printable(&t.cmdline));
    println!(
        "kaslr     {} (_text {:#x})",
        if t.kaslr { "on" } else { "off" },
        t.text_addr
    );
    println!(
        "\n{:>6} {:>6} {:>6} {:>5} {:>2} {:>3}  COMM",
        "PID", "PPID", "TGID", "UID", "S", "THR"
    );
    for p in &t.processes {
        println!(
            "{:>6} {:>6} {:>6} {:>5} {:>2} {:>3}  {}",
            p.pid,
            p.ppid,
            p.tgid,
            p.uid,
            p.state,
            p.threads,
            printable(&p.comm)
        );
    }
    println!("\n{} modules:", t.modules.len());
    for m in &t.modules {
        println!("  {:24} {:>8} {:#x}", printable(&m.name), m.size, m.addr);
    }
    println!("\nkallsyms:");
    for k in &t.ksyms {
        println!("  {:#018x} {} {}", k.addr, k.kind, printable(&k.name));
    }
}
