//! `profile-gen`: make a kernel profile from vmlinux DWARF (+ System.map) or from the
//! `linux-image-<abi>-dbg` package itself, as the project's JSON profile, a Volatility 3
//! ISF or a libVMI config stanza.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use profile_gen::build::{self, Input, Options, Progress};

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// The project's JSON profile (docs/profile.md).
    Native,
    /// Volatility 3 ISF (format 6.2.0); use with --full for Volatility's plugins.
    Isf,
    /// A libvmi.conf stanza (linux_tasks, linux_mm, linux_pid, linux_name, linux_pgd, linux_init_task).
    Libvmi,
}

#[derive(Parser)]
#[command(
    name = "profile-gen",
    version,
    about = "Make a kernel profile from vmlinux DWARF (+ System.map) or from the -dbg package"
)]
struct Cli {
    /// Inputs, recognised by content: a vmlinux with DWARF and optionally its System.map,
    /// or a linux-image-<abi>-dbg .deb (read in place).
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
    /// Name of the libVMI stanza (default: the kernel release); must be the VM's name.
    #[arg(long)]
    libvmi_name: Option<String>,
    /// Print how long each stage took to standard error.
    #[arg(long)]
    timings: bool,
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
    let mut deb = None;
    for input in &cli.inputs {
        match classify(input)? {
            Kind::Elf => vmlinux = Some(input.clone()),
            Kind::SystemMap => map = Some(input.clone()),
            Kind::Deb => deb = Some(input.clone()),
            Kind::BootImage => bail!(
                "{} is a compressed boot image (vmlinuz/bzImage): it has no DWARF. Give the vmlinux from the linux-image-<abi>-dbg package (or that package itself), or make the profile from the image's BTF and kallsyms with the BTF path (see the profile-gen issue on BTF)",
                input.display()
            ),
        }
    }
    let input = match (&vmlinux, &deb) {
        (Some(v), None) => Input::Files {
            vmlinux: v,
            system_map: map.as_deref(),
        },
        (None, Some(d)) if map.is_none() => Input::DebugPackage(d),
        (None, Some(_)) => {
            bail!("a -dbg package carries its own System.map: give the package alone")
        }
        (Some(_), Some(_)) => {
            bail!("give either a vmlinux (+ System.map) or a -dbg package, not both")
        }
        (None, None) => bail!("no vmlinux (ELF with DWARF) or -dbg package among the inputs"),
    };
    let source = vmlinux
        .as_ref()
        .or(deb.as_ref())
        .cloned()
        .unwrap_or_default();
    let opts = Options {
        full: cli.full,
        types: cli.types,
        symbols: cli.symbols,
        libvmi_name: cli.libvmi_name,
    };
    let format = match cli.format {
        Format::Native => build::Format::Native,
        Format::Isf => build::Format::Isf,
        Format::Libvmi => build::Format::Libvmi,
    };

    let bar = progress_bar();
    let started = std::time::Instant::now();
    let timings = cli.timings;
    let mut on_progress = |p: Progress| {
        match p {
            Progress::Unpacking(done, total) => {
                if let Some(b) = &bar {
                    if b.length() != Some(total) {
                        b.set_style(bytes_style());
                        b.set_length(total);
                        b.set_message("reading the package");
                    }
                    b.set_position(done);
                }
                return;
            }
            Progress::Indexing | Progress::Writing => {}
        }
        if timings {
            eprintln!("[{:>8.3} s] {p:?}", started.elapsed().as_secs_f64());
        }
        if let Some(b) = &bar {
            b.set_style(spinner_style());
            b.set_message(match p {
                Progress::Indexing => "indexing DWARF",
                _ => "writing",
            });
        }
    };
    let report = match &cli.output {
        None => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
            let r = build::generate(input, &opts, format, &mut out, &mut on_progress);
            out.flush()?;
            r
        }
        Some(path) => write_atomically(path, |out| {
            build::generate(input, &opts, format, out, &mut on_progress)
        })?,
    }
    .with_context(|| format!("reading {}", source.display()))?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if timings {
        eprintln!("[{:>8.3} s] done", started.elapsed().as_secs_f64());
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// Write through a temporary file in the target's directory, renamed over the target only
/// when everything was written: no partial file is ever left behind.
fn write_atomically<T>(
    path: &Path,
    f: impl FnOnce(&mut dyn Write) -> Result<T, profile_gen::Error>,
) -> Result<Result<T, profile_gen::Error>> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, tmp);
    let result = f(&mut out);
    if result.is_ok() {
        let tmp = out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", path.display()))?;
        tmp.persist(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(result)
}

fn progress_bar() -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = ProgressBar::new_spinner();
    b.set_style(spinner_style());
    b.enable_steady_tick(Duration::from_millis(100));
    Some(b)
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}
