//! `vmi-extract`: run as root inside a Linux guest whose kernel has BTF, it writes the
//! running kernel's profile (docs/profile.md) from `/sys/kernel/btf/vmlinux`,
//! `/proc/kallsyms` and `/proc/version`. Built static, so it runs on any x86-64 guest,
//! busybox initramfs included; see docs/guide.md ("Onboarding a guest kernel:
//! BTF extractor").

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use guest_module::extract::{self, Paths};
use profile_gen::build::Options;

#[derive(Parser)]
#[command(
    name = "vmi-extract",
    version,
    about = "Write the running kernel's profile (for the vmi detector) from its BTF and /proc/kallsyms. Run as root inside the guest."
)]
struct Cli {
    /// Output file (default: standard output). Written atomically: a temporary file in
    /// the same directory, renamed once complete.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Write every struct and union and every symbol, not only what the detector needs.
    #[arg(long)]
    full: bool,
    /// Also include this type (repeatable).
    #[arg(long = "type", value_name = "NAME")]
    types: Vec<String>,
    /// Also include this symbol (repeatable).
    #[arg(long = "symbol", value_name = "NAME")]
    symbols: Vec<String>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmi-extract: error: {}", message(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, each cause once (some errors already quote
/// their source in their own message).
fn message(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    extract::require_root()?;
    let opts = Options {
        full: cli.full,
        types: cli.types,
        symbols: cli.symbols,
        libvmi_name: None,
    };
    let built = extract::extract(&Paths::running_kernel(), &opts)?;
    for w in &built.warnings {
        eprintln!("vmi-extract: warning: {w}");
    }
    let json = built.profile.to_json();
    match &cli.output {
        Some(path) => extract::write_atomically(path, json.as_bytes())?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(json.as_bytes())
                .and_then(|()| out.flush())
                .context("writing the profile to standard output")?;
        }
    }
    Ok(())
}
