//! `profile-gen`: make a kernel profile from vmlinux DWARF + System.map.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use profile_gen::build::{self, Options};

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// The project's JSON profile (docs/profile.md).
    Native,
}

#[derive(Parser)]
#[command(
    name = "profile-gen",
    version,
    about = "Make a kernel profile from vmlinux DWARF (+ System.map)"
)]
struct Cli {
    /// Inputs: a vmlinux with DWARF and optionally its System.map (recognised by content).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output file (default: standard output). Written atomically.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "native")]
    format: Format,
    /// Write every struct and union and every symbol.
    #[arg(long)]
    full: bool,
    /// Also include this type (repeatable).
    #[arg(long = "type")]
    types: Vec<String>,
    /// Also include this symbol (repeatable).
    #[arg(long = "symbol")]
    symbols: Vec<String>,
}

#[derive(Debug, PartialEq)]
enum Kind {
    Elf,
    SystemMap,
    BootImage,
    Deb,
}

fn classify(path: &Path) -> Result<Kind> {
    let mut head = [0u8; 0x210];
    let n = {
        use std::io::Read;
        let mut f =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        f.read(&mut head)?
    };
    let head = &head[..n];
    if head.starts_with(b"\x7fELF") {
        return Ok(Kind::Elf);
    }
    if head.starts_with(b"!<arch>\n") {
        return Ok(Kind::Deb);
    }
    if head.len() >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        return Ok(Kind::BootImage);
    }
    let text = String::from_utf8_lossy(head);
    let first = text.lines().next().unwrap_or("");
    let mut w = first.split_whitespace();
    if let (Some(a), Some(t), Some(_)) = (w.next(), w.next(), w.next()) {
        if a.len() >= 8 && a.bytes().all(|b| b.is_ascii_hexdigit()) && t.len() == 1 {
            return Ok(Kind::SystemMap);
        }
    }
    bail!(
        "{}: not a vmlinux (ELF) or a System.map (first bytes {:02x?})",
        path.display(),
        &head[..head.len().min(8)]
    )
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let mut vmlinux = None;
    let mut map = None;
    for input in &cli.inputs {
        match classify(input)? {
            Kind::Elf => vmlinux = Some(input.clone()),
            Kind::SystemMap => map = Some(input.clone()),
            Kind::BootImage => bail!(
                "{} is a compressed boot image (vmlinuz/bzImage): it has no DWARF. Give the vmlinux from the linux-image-<abi>-dbg package, or make the profile from the image's BTF and kallsyms with the BTF path (see the profile-gen issue on BTF)",
                input.display()
            ),
            Kind::Deb => bail!(
                "{}: reading the -dbg .deb directly is not supported yet; extract vmlinux and System.map from it (dpkg-deb --fsys-tarfile X.deb | tar -x ./usr/lib/debug/boot/)",
                input.display()
            ),
        }
    }
    let Some(vmlinux) = vmlinux else {
        bail!("no vmlinux (ELF with DWARF) among the inputs")
    };
    let opts = Options {
        full: cli.full,
        types: cli.types,
        symbols: cli.symbols,
    };
    let built = build::from_dwarf(&vmlinux, map.as_deref(), &opts)
        .with_context(|| format!("reading {}", vmlinux.display()))?;
    for w in &built.warnings {
        eprintln!("warning: {w}");
    }
    let text = match cli.format {
        Format::Native => built.profile.to_json(),
    };
    match cli.output {
        None => std::io::stdout().write_all(text.as_bytes())?,
        Some(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
            tmp.write_all(text.as_bytes())?;
            tmp.persist(&path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}
