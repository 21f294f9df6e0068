//! `detector`: what runs in a Linux guest, and was its kernel tampered with, read from
//! outside the guest.
//!
//! Exit status: 0 clean, 1 findings, 2 error (also when a check could not run and
//! nothing was found).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use detector::checks::{self, Check, Report};
use detector::render;
use detector::target::{ProfileSpec, SourceSpec, Target};
use vmi_core::kernel::Limits;

#[derive(Parser, Debug)]
#[command(
    name = "detector",
    version,
    about = "Read a Linux guest from outside (a memory dump or a live QEMU guest) and check its kernel for tampering",
    after_help = "Exit status: 0 clean, 1 findings, 2 error."
)]
struct Cli {
    #[command(flatten)]
    opts: Opts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Opts {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// A memory dump: ELF core (QEMU dump-guest-memory, virsh dump), LiME or raw,
    /// recognised by content.
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "qemu")]
    dump: Option<PathBuf>,
    /// A live QEMU guest, by its QMP socket (guest RAM must be a shared
    /// memory-backend-file).
    #[arg(long, global = true, value_name = "QMP_SOCKET")]
    qemu: Option<PathBuf>,
    /// The guest RAM file, when QEMU's mem-path is not the path to open.
    #[arg(long, global = true, value_name = "FILE", requires = "qemu")]
    mem_path: Option<PathBuf>,
    /// A directory of profiles; the one matching the guest's banner is used.
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "profile")]
    profiles: Option<PathBuf>,
    /// One profile file.
    #[arg(long, global = true, value_name = "FILE")]
    profile: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The guest's kernel: banner, release, KASLR shifts, page-table root, profile.
    Identify,
    /// Processes, from the kernel's tasks list.
    Ps {
        /// Show children under their parents.
        #[arg(long)]
        tree: bool,
    },
    /// Loaded kernel modules, from the modules list.
    Lsmod,
    /// Run the intrusion checks; one finding per line.
    Check {
        /// Only these checks (repeat or comma-separate): hidden-process, hidden-module,
        /// syscall-table, idt, credentials.
        #[arg(long = "check", value_name = "NAME", value_delimiter = ',')]
        only: Vec<String>,
        /// Pause a live guest while it is read (default: read it running and confirm
        /// each finding with a second read).
        #[arg(long)]
        pause: bool,
    },
}

fn open(opts: &Opts) -> Result<Target> {
    let source = match (&opts.dump, &opts.qemu) {
        (Some(d), None) => SourceSpec::Dump(d.clone()),
        (None, Some(q)) => SourceSpec::Qemu {
            socket: q.clone(),
            mem_path: opts.mem_path.clone(),
        },
        _ => bail!("give the guest: --dump FILE or --qemu QMP_SOCKET"),
    };
    let profiles = match (&opts.profiles, &opts.profile) {
        (Some(d), None) => ProfileSpec::Dir(d.clone()),
        (None, Some(f)) => ProfileSpec::File(f.clone()),
        _ => {
            bail!("give the profile: --profiles DIR or --profile FILE (make one with profile-gen)")
        }
    };
    Ok(Target::open(&source, &profiles)?)
}

fn emit(json: bool, value: serde_json::Value, text: String) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{value}")?;
    } else {
        out.write_all(text.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// The checks `check` runs: those named, or all.
fn wanted_checks(only: &[String]) -> Result<Vec<Check>> {
    let mut wanted = Vec::new();
    for name in only {
        match Check::from_name(name) {
            Some(c) => wanted.push(c),
            None => bail!(
                "no check named {:?}; the checks are: {}",
                vmi_core::kernel::escape(name.as_bytes()),
                Check::ALL.map(|c| c.name()).join(", ")
            ),
        }
    }
    if wanted.is_empty() {
        wanted = Check::ALL.to_vec();
    }
    Ok(wanted)
}

fn run(cli: &Cli) -> Result<ExitCode> {
    let wanted = match &cli.command {
        Command::Check { only, .. } => wanted_checks(only)?,
        _ => Vec::new(),
    };
    let target = open(&cli.opts)?;
    let json = cli.opts.json;
    let limits = Limits::default();
    match &cli.command {
        Command::Identify => {
            emit(
                json,
                render::identify_json(&target),
                render::identify_text(&target),
            )?;
        }
        Command::Ps { tree } => {
            let procs = target
                .kernel
                .processes(&limits)
                .context("walking the tasks list")?;
            emit(
                json,
                render::ps_json(&procs),
                render::ps_text(&procs, *tree),
            )?;
        }
        Command::Lsmod => {
            let mods = target
                .kernel
                .modules(&limits)
                .context("walking the modules list")?;
            emit(json, render::lsmod_json(&mods), render::lsmod_text(&mods))?;
        }
        Command::Check { pause, .. } => {
            let report = check(&target, &wanted, *pause, &limits)?;
            emit(
                json,
                render::report_json(&report),
                render::report_text(&report),
            )?;
            return Ok(if !report.findings.is_empty() {
                ExitCode::from(1)
            } else if !report.errors.is_empty() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(target: &Target, wanted: &[Check], pause: bool, limits: &Limits) -> Result<Report> {
    let guard = if pause { target.pause()? } else { None };
    let first = checks::run_once(&target.kernel, &target.registers, wanted, limits);
    if guard.is_some() || !target.is_live() || first.findings.is_empty() {
        if let Some(g) = guard {
            g.resume().context("resuming the guest")?;
        }
        return Ok(first);
    }
    // a running guest: what a second read confirms is real
    target.kernel.invalidate();
    let second = checks::run_once(&target.kernel, &target.registers, wanted, limits);
    Ok(checks::confirmed(first, &second))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            if cli.opts.json {
                let v = serde_json::json!({ "error": format!("{e:#}") });
                println!("{v}");
            }
            eprintln!("detector: {e:#}");
            ExitCode::from(2)
        }
    }
}
