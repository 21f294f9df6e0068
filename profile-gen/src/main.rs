//! `profile-gen`: make a kernel profile from vmlinux DWARF (+ System.map), from the
//! `linux-image-<abi>-dbg` package itself, or from BTF (the boot image alone, a vmlinux
//! with `.BTF`, or raw BTF + `/proc/kallsyms`), as the project's JSON profile, a
//! Volatility 3 ISF or a libVMI config stanza.

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
    about = "Make a kernel profile from vmlinux DWARF (+ System.map), the -dbg package, or BTF (the boot image alone, or raw BTF + /proc/kallsyms)"
)]
struct Cli {
    /// Inputs, recognised by content: a vmlinux with DWARF and optionally its System.map;
    /// a linux-image-<abi>-dbg .deb (read in place); a boot image (vmlinuz) alone; a
    /// vmlinux with .BTF but no DWARF; or raw BTF (/sys/kernel/btf/vmlinux) with a copy of
    /// /proc/kallsyms (or the System.map) and of /proc/version; or a profile (e.g. the
    /// guest module's /proc/vmi_profile) with the System.map that fills in its symbols.
    #[arg(required_unless_present = "from_dump")]
    inputs: Vec<PathBuf>,
    /// Make the profile of the kernel running in a memory dump (ELF core, LiME or raw),
    /// from the BTF and kallsyms in its memory: no file from the guest needed.
    #[arg(long, value_name = "DUMP", conflicts_with = "inputs")]
    from_dump: Option<PathBuf>,
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
    RawBtf,
    Version,
    Profile,
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
    if profile_gen::btf::Btf::looks_like(head) {
        return Ok(Kind::RawBtf);
    }
    if head.starts_with(b"Linux version ") {
        return Ok(Kind::Version);
    }
    let trimmed = head.trim_ascii_start();
    if trimmed.starts_with(b"{") && head.windows(16).any(|w| w == b"\"format_version\"") {
        return Ok(Kind::Profile);
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
        "{}: not a vmlinux (ELF), boot image, -dbg package, raw BTF, System.map, /proc/kallsyms or /proc/version copy (first bytes {:02x?})",
        path.display(),
        &head[..head.len().min(8)]
    )
}

fn main() -> std::process::ExitCode {
    let cli: Cli = match cli_docs::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if let Err(e) = run(&cli) {
        eprintln!("error: {}", cli_docs::error_text(e.as_ref()));
        return std::process::ExitCode::from(2);
    }
    std::process::ExitCode::SUCCESS
}

fn run(cli: &Cli) -> Result<()> {
    if let Some(dump) = &cli.from_dump {
        return run_from_dump(cli, dump);
    }
    let mut elf = None;
    let mut map = None;
    let mut deb = None;
    let mut image = None;
    let mut raw_btf = None;
    let mut version = None;
    let mut profile = None;
    for input in &cli.inputs {
        let slot = match classify(input)? {
            Kind::Elf => &mut elf,
            Kind::SystemMap => &mut map,
            Kind::Deb => &mut deb,
            Kind::BootImage => &mut image,
            Kind::RawBtf => &mut raw_btf,
            Kind::Version => &mut version,
            Kind::Profile => &mut profile,
        };
        if let Some(previous) = slot.replace(input.clone()) {
            bail!(
                "{} and {} are the same kind of input: give one of each",
                previous.display(),
                input.display()
            );
        }
    }
    if let Some(profile) = &profile {
        if elf.is_some()
            || deb.is_some()
            || image.is_some()
            || raw_btf.is_some()
            || version.is_some()
        {
            bail!(
                "{} is a profile: give it alone or with the kernel's System.map (or a root copy of /proc/kallsyms) to fill in its missing symbols",
                profile.display()
            );
        }
        return run_complete(cli, profile, map.as_deref());
    }
    // an ELF without DWARF but with .BTF goes the BTF way
    let elf_is_btf = match &elf {
        Some(e) if image.is_none() && raw_btf.is_none() => !has_dwarf(e)?,
        _ => false,
    };
    let input = match (&elf, &deb, &image, &raw_btf) {
        (Some(v), None, None, None) if !elf_is_btf => Input::Files {
            vmlinux: v,
            system_map: map.as_deref(),
        },
        (None, Some(d), None, None) if map.is_none() => Input::DebugPackage(d),
        (None, Some(_), None, None) => {
            bail!("a -dbg package carries its own System.map: give the package alone")
        }
        (Some(t), None, None, None) | (None, None, Some(t), None) | (None, None, None, Some(t)) => {
            Input::Btf {
                types: t,
                symbols: map.as_deref(),
                version: version.as_deref(),
            }
        }
        (None, None, None, None) => bail!(
            "no kernel among the inputs: give a vmlinux, a -dbg package, a boot image (vmlinuz) or raw BTF"
        ),
        _ => bail!(
            "give one kernel: a vmlinux (+ System.map), a -dbg package, a boot image, or raw BTF (+ /proc/kallsyms)"
        ),
    };
    if version.is_some() && !matches!(input, Input::Btf { .. }) {
        bail!("a /proc/version copy is only needed with raw BTF (images carry their banner)");
    }
    let source = elf
        .as_ref()
        .or(deb.as_ref())
        .or(image.as_ref())
        .or(raw_btf.as_ref())
        .cloned()
        .unwrap_or_default();
    let opts = options(cli);
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
            Progress::Decompressing
            | Progress::Indexing
            | Progress::Kallsyms
            | Progress::Writing => {}
        }
        if timings {
            eprintln!("[{:>8.3} s] {p:?}", started.elapsed().as_secs_f64());
        }
        if let Some(b) = &bar {
            b.set_style(spinner_style());
            b.set_message(match p {
                Progress::Decompressing => "decompressing the kernel",
                Progress::Indexing => "reading types",
                Progress::Kallsyms => "recovering kallsyms",
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

/// What to put into the profile, from the command line.
fn options(cli: &Cli) -> Options {
    Options {
        full: cli.full,
        types: cli.types.clone(),
        symbols: cli.symbols.clone(),
        libvmi_name: cli.libvmi_name.clone(),
    }
}

/// A profile from elsewhere (the guest module), completed with a System.map.
fn run_complete(cli: &Cli, profile: &Path, map: Option<&Path>) -> Result<()> {
    let opts = options(cli);
    let built = profile_gen::complete::complete(profile, map, &opts)
        .with_context(|| format!("completing {}", profile.display()))?;
    let text = match cli.format {
        Format::Native => built.profile.to_json(),
        Format::Libvmi => build::libvmi(&built.profile, &opts)?,
        Format::Isf => bail!(
            "an ISF describes every type of the kernel; a profile has only the needed ones: give the vmlinux, the -dbg package or the boot image for --format isf"
        ),
    };
    match &cli.output {
        None => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
        Some(path) => write_atomically(path, |out| {
            out.write_all(text.as_bytes())
                .map_err(|source| profile_gen::error::Error::Io {
                    path: path.clone(),
                    source,
                })
        })??,
    }
    for w in &built.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// `--from-dump`: the profile of the kernel in a memory dump.
fn run_from_dump(cli: &Cli, dump: &Path) -> Result<()> {
    use vmi_core::memory::{DumpFormat, ElfCore, LimeImage, PhysicalMemory, RawImage};
    let kind = DumpFormat::of_file(dump).with_context(|| format!("reading {}", dump.display()))?;
    let mem: Box<dyn PhysicalMemory> = match kind {
        DumpFormat::Elf => Box::new(ElfCore::open(dump)?),
        DumpFormat::Lime => Box::new(LimeImage::open(dump)?),
        DumpFormat::Raw => Box::new(RawImage::open(dump)?),
    };
    let opts = options(cli);
    let format = match cli.format {
        Format::Native => build::Format::Native,
        Format::Isf => build::Format::Isf,
        Format::Libvmi => build::Format::Libvmi,
    };
    let started = std::time::Instant::now();
    let mut on_progress = |p: Progress| {
        if cli.timings {
            eprintln!("[{:>8.3} s] {p:?}", started.elapsed().as_secs_f64());
        }
    };
    let report = match &cli.output {
        None => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
            let r = build::generate_from_memory(
                mem.as_ref(),
                &opts,
                format,
                &mut out,
                &mut on_progress,
            );
            out.flush()?;
            r
        }
        Some(path) => write_atomically(path, |out| {
            build::generate_from_memory(mem.as_ref(), &opts, format, out, &mut on_progress)
        })?,
    }
    .with_context(|| format!("making the profile of the kernel in {}", dump.display()))?;
    if cli.timings {
        eprintln!("[{:>8.3} s] done", started.elapsed().as_secs_f64());
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// True when the ELF file has DWARF (`.debug_info`); else its BTF is used.
fn has_dwarf(path: &Path) -> Result<bool> {
    use object::Object;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: read-only mapping of a file we do not modify.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("mapping {}", path.display()))?;
    let elf = object::File::parse(&*map)
        .with_context(|| format!("{} is not a valid ELF file", path.display()))?;
    Ok(elf.section_by_name(".debug_info").is_some() || elf.section_by_name(".BTF").is_none())
}

/// Write the output of `f` to `path` whole or not at all (atomic-write-file: a temporary
/// file in the target's directory, renamed over it only when everything was written and
/// `f` succeeded): no partial file is ever left behind.
fn write_atomically<T>(
    path: &Path,
    f: impl FnOnce(&mut dyn Write) -> Result<T, profile_gen::Error>,
) -> Result<Result<T, profile_gen::Error>> {
    let writing = || format!("writing {}", path.display());
    let file = atomic_write_file::AtomicWriteFile::open(path).with_context(writing)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let result = f(&mut out);
    if result.is_ok() {
        out.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|file| file.commit())
            .with_context(writing)?;
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
