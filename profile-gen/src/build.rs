//! Assemble a profile (native, ISF or libVMI) from DWARF or BTF layouts and symbols.
//!
//! [`generate`] is the one entry point: it opens the input (a vmlinux file mapped
//! read-only, plus an optional System.map; or BTF from a boot image, a vmlinux `.BTF`
//! section or raw BTF, with symbols from a System.map, `/proc/kallsyms` or the image's
//! own kallsyms), hashes the inputs on one thread while the types are read on the
//! others, then writes the requested format. Both paths share the native builder,
//! which works over [`TypeSource`]. [`from_dwarf`] and [`from_btf`] give the native
//! profile as a value, for tests and other crates.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use object::Object;

use sha2::{Digest, Sha256};
use vmi_core::profile::{
    needs, InputFile, KernelIdentity, Missing, Profile, Provenance, SourceKind, FORMAT_VERSION,
};

use crate::btf::Btf;
use crate::dwarf::{DwarfSections, Layouts};
use crate::error::{Error, Result};
use crate::isf::{self, IsfInputs, IsfOptions, IsfStats, IsfTypes};
use crate::kimage::KernelElf;
use crate::source::TypeSource;
use crate::symbols::{self, ListKind, SymbolMap};
use crate::vmlinuz;

/// What to put into the profile.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Every struct and union, not only the needed ones.
    pub full: bool,
    /// Extra types to include.
    pub types: Vec<String>,
    /// Extra symbols to include.
    pub symbols: Vec<String>,
    /// The libVMI stanza's name (default: the kernel release).
    pub libvmi_name: Option<String>,
}

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The project's JSON profile (docs/profile.md).
    Native,
    /// Volatility 3 ISF 6.2.0.
    Isf,
    /// A libvmi.conf stanza.
    Libvmi,
}

/// Where the kernel comes from.
#[derive(Debug, Clone, Copy)]
pub enum Input<'p> {
    /// A vmlinux with DWARF and, optionally, its System.map.
    Files {
        /// The vmlinux.
        vmlinux: &'p Path,
        /// Its System.map (else the vmlinux symbol table is used).
        system_map: Option<&'p Path>,
    },
    /// A `linux-image-<abi>-dbg` package, read in place.
    DebugPackage(&'p Path),
    /// Types from BTF: a boot image (vmlinuz), a vmlinux with a `.BTF` section, or raw
    /// BTF (a copy of `/sys/kernel/btf/vmlinux`).
    Btf {
        /// The boot image, vmlinux or raw BTF.
        types: &'p Path,
        /// A System.map or a copy of `/proc/kallsyms` (else the image's symbol table or
        /// its own kallsyms tables; raw BTF needs one).
        symbols: Option<&'p Path>,
        /// A copy of `/proc/version` (the banner), for raw BTF.
        version: Option<&'p Path>,
    },
}

/// What the library reports while it works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Reading a package: compressed bytes consumed of the total.
    Unpacking(u64, u64),
    /// Decompressing a boot image.
    Decompressing,
    /// Indexing the DWARF units or the BTF.
    Indexing,
    /// Recovering symbols from the kernel's kallsyms tables.
    Kallsyms,
    /// Writing the output.
    Writing,
}

/// A profile and the warnings about what could not be found.
#[derive(Debug)]
pub struct Built {
    /// The profile.
    pub profile: Profile,
    /// Human-readable warnings (missing needed items, ...).
    pub warnings: Vec<String>,
}

/// What [`generate`] did.
#[derive(Debug, Default)]
pub struct Report {
    /// Human-readable warnings (missing needed items, ...).
    pub warnings: Vec<String>,
    /// Counts, for ISF output.
    pub isf: Option<IsfStats>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// sha256 and size of a file, read with plain reads: hashing through a memory map would
/// make the whole file resident in this process.
pub fn describe_file(path: &Path) -> Result<InputFile> {
    use std::io::Read;
    let mut f = File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok(InputFile {
        name: file_name(path),
        size,
        sha256: h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
    })
}

/// sha256 and size of bytes, named `name`.
pub fn describe_bytes(name: &str, data: &[u8]) -> InputFile {
    let mut h = Sha256::new();
    for chunk in data.chunks(1 << 20) {
        h.update(chunk);
    }
    InputFile {
        name: name.to_string(),
        size: data.len() as u64,
        sha256: h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The types of a kernel.
#[derive(Clone, Copy)]
enum Types<'c> {
    Dwarf(&'c Layouts<'c>),
    Btf(&'c Btf),
}

impl<'c> Types<'c> {
    fn source(&self) -> &'c dyn TypeSource {
        match *self {
            Types::Dwarf(l) => l,
            Types::Btf(b) => b,
        }
    }
}

/// Everything read from the inputs, handed to the format writers.
struct Context<'c> {
    types: Types<'c>,
    symbols: SymbolMap,
    /// what the symbols came from: `system-map`, `proc-kallsyms` (a copy of
    /// /proc/kallsyms), `symtab` (the ELF's symbol table) or `kallsyms` (the image's own
    /// kallsyms tables)
    symbols_kind: &'static str,
    /// the input file the symbols came from
    symbols_input: usize,
    /// the banner as `linux_banner` holds it, without the final NUL
    banner: Option<String>,
    build_id: Option<String>,
    source: SourceKind,
    /// the type input first, then the symbol list and version file when given
    inputs: Vec<InputFile>,
    warnings: Vec<String>,
}

/// A System.map's name and text.
struct MapText {
    path: PathBuf,
    name: String,
    bytes: Vec<u8>,
}

/// Open the vmlinux bytes, index them and call `f` with everything read.
fn with_dwarf<T>(
    vmlinux_name: &str,
    data: &[u8],
    hash: impl FnOnce() -> Result<InputFile> + Send,
    map: Option<MapText>,
    progress: &mut dyn FnMut(Progress),
    f: impl FnOnce(&Context<'_>) -> Result<T>,
) -> Result<T> {
    let elf = object::File::parse(data).map_err(|e| Error::Input {
        path: PathBuf::from(vmlinux_name),
        message: format!("not an ELF vmlinux: {e}"),
    })?;
    if elf.kind() == object::ObjectKind::Relocatable {
        return Err(Error::Input {
            path: PathBuf::from(vmlinux_name),
            message: "this is a relocatable object (ET_REL, e.g. a .o or .ko): its DWARF needs relocations applied, which profile-gen does not do. Give a linked vmlinux (or link the object into a shared library first)".into(),
        });
    }
    progress(Progress::Indexing);
    // hash the vmlinux on one thread while the DWARF is indexed on the others
    std::thread::scope(|scope| {
        let hasher = scope.spawn(hash);
        let sections = DwarfSections::load(&elf)?;
        let layouts = Layouts::new(&sections)?;
        let vmlinux_input = hasher.join().map_err(|_| Error::Input {
            path: PathBuf::from(vmlinux_name),
            message: "hashing failed".into(),
        })??;
        let mut inputs = vec![vmlinux_input];
        let elf_symbols = symbols::from_elf(&elf);
        let (all_symbols, from_map) = match map {
            Some(m) => {
                let text = String::from_utf8_lossy(&m.bytes);
                let parsed = symbols::parse_system_map(&m.path, &text)?;
                check_map_matches(&m.path, &parsed, &elf_symbols)?;
                inputs.push(describe_bytes(&m.name, &m.bytes));
                (parsed, true)
            }
            None => (elf_symbols, false),
        };
        let banner = all_symbols
            .get("linux_banner")
            .and_then(|s| symbols::string_at(&elf, s.address, 1024));
        let ctx = Context {
            types: Types::Dwarf(&layouts),
            symbols: all_symbols,
            symbols_kind: if from_map { "system-map" } else { "symtab" },
            symbols_input: usize::from(from_map),
            banner,
            build_id: symbols::build_id(&elf),
            source: SourceKind::Dwarf,
            inputs,
            warnings: Vec::new(),
        };
        progress(Progress::Writing);
        f(&ctx)
    })
}

/// Run `f` on the context of `input`.
fn with_input<T>(
    input: Input<'_>,
    progress: &mut dyn FnMut(Progress),
    f: impl FnOnce(&Context<'_>) -> Result<T>,
) -> Result<T> {
    match input {
        Input::Files {
            vmlinux,
            system_map,
        } => {
            let file = File::open(vmlinux).map_err(io(vmlinux))?;
            // SAFETY: the file is opened read-only and not modified while mapped (a
            // concurrent writer could change what we read, never the memory safety of
            // our own data).
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io(vmlinux))?;
            let map_text = match system_map {
                Some(p) => Some(MapText {
                    path: p.to_path_buf(),
                    name: file_name(p),
                    bytes: std::fs::read(p).map_err(io(p))?,
                }),
                None => None,
            };
            let hash = || describe_file(vmlinux);
            with_dwarf(&file_name(vmlinux), &map, hash, map_text, progress, f)
        }
        Input::DebugPackage(path) => {
            let deb = crate::deb::read_dbg_deb(path, &mut |done, total| {
                progress(Progress::Unpacking(done, total))
            })?;
            let vmlinux_name = deb
                .vmlinux_member
                .rsplit('/')
                .next()
                .unwrap_or("vmlinux")
                .to_string();
            let map_text = match (deb.system_map, deb.system_map_member) {
                (Some(bytes), Some(member)) => Some(MapText {
                    path: path.join(&member),
                    name: member
                        .rsplit('/')
                        .next()
                        .unwrap_or("System.map")
                        .to_string(),
                    bytes,
                }),
                _ => None,
            };
            let data = &deb.vmlinux;
            let hash = || Ok(describe_bytes(&vmlinux_name, data));
            with_dwarf(&vmlinux_name, data, hash, map_text, progress, f)
        }
        Input::Btf {
            types,
            symbols,
            version,
        } => {
            let map = map_or_read(types)?;
            let list = match symbols {
                Some(p) => Some(MapText {
                    path: p.to_path_buf(),
                    name: file_name(p),
                    bytes: std::fs::read(p).map_err(io(p))?,
                }),
                None => None,
            };
            let version = match version {
                Some(p) => Some((file_name(p), std::fs::read(p).map_err(io(p))?)),
                None => None,
            };
            let hash = || describe_file(types);
            with_btf(types, &map, hash, list, version, progress, f)
        }
    }
}

/// A file's bytes: mapped, or read where the kernel refuses the mapping or reports no
/// size (`/sys/kernel/btf/vmlinux` cannot be mapped before Linux 6.16; procfs files say
/// 0 bytes), so the BTF path also works on the live files inside a guest.
enum FileBytes {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Read(v) => v,
        }
    }
}

fn map_or_read(path: &Path) -> Result<FileBytes> {
    let file = File::open(path).map_err(io(path))?;
    let meta = file.metadata().map_err(io(path))?;
    if meta.is_file() && meta.len() > 0 {
        // SAFETY: as above: read-only, not modified while mapped.
        if let Ok(map) = unsafe { memmap2::Mmap::map(&file) } {
            return Ok(FileBytes::Mapped(map));
        }
    }
    std::fs::read(path).map(FileBytes::Read).map_err(io(path))
}

/// The x86-64 kernel inside a boot image, decompressed as far as a profile needs: the
/// read-only segments (text, rodata with kallsyms and the banner, notes, BTF).
fn unpack(path: &Path, image: &[u8], progress: &mut dyn FnMut(Progress)) -> Result<Vec<u8>> {
    progress(Progress::Decompressing);
    let payload = vmlinuz::payload(image).map_err(|e| at_path(path, e))?;
    let mut u = vmlinuz::Unpacker::new(&payload).map_err(|e| at_path(path, e))?;
    let head = u.fill_to(64 << 10).map_err(|e| at_path(path, e))?;
    let need = KernelElf::parse(head)
        .map_err(|e| at_path(path, e))?
        .needed_len();
    u.fill_to(need).map_err(|e| at_path(path, e))?;
    let has_btf = KernelElf::parse(u.data())
        .ok()
        .and_then(|k| k.btf())
        .is_some();
    if !u.finished() && !has_btf {
        // not in the read-only segments: take everything (section headers are last)
        u.fill_to(usize::MAX).map_err(|e| at_path(path, e))?;
    }
    Ok(u.into_vec())
}

/// Errors of the image readers name the file.
fn at_path(path: &Path, e: Error) -> Error {
    match e {
        Error::Input { message, .. } => Error::Input {
            path: path.to_path_buf(),
            message,
        },
        other => other,
    }
}

/// Read BTF types and symbols for the BTF path and call `f`.
fn with_btf<T>(
    path: &Path,
    data: &[u8],
    hash: impl FnOnce() -> Result<InputFile> + Send,
    list: Option<MapText>,
    version: Option<(String, Vec<u8>)>,
    progress: &mut dyn FnMut(Progress),
    f: impl FnOnce(&Context<'_>) -> Result<T>,
) -> Result<T> {
    std::thread::scope(|scope| {
        let hasher = scope.spawn(hash);
        let mut warnings = Vec::new();
        let unpacked;
        let kernel = if vmlinuz::is_boot_image(data) {
            unpacked = unpack(path, data, progress)?;
            Some(KernelElf::parse(&unpacked).map_err(|e| at_path(path, e))?)
        } else if data.starts_with(b"\x7fELF") {
            Some(KernelElf::parse(data).map_err(|e| at_path(path, e))?)
        } else if Btf::looks_like(data) {
            None
        } else {
            return Err(Error::Input {
                path: path.to_path_buf(),
                message: format!(
                    "not a boot image, an ELF kernel or raw BTF (first bytes {:02x?})",
                    &data[..data.len().min(8)]
                ),
            });
        };
        progress(Progress::Indexing);
        let btf_bytes = match &kernel {
            Some(k) => k.btf().ok_or_else(|| Error::NoBtf {
                path: path.to_path_buf(),
            })?,
            None => data,
        };
        let btf = Btf::parse(btf_bytes)?;
        let input = hasher.join().map_err(|_| Error::Input {
            path: path.to_path_buf(),
            message: "hashing failed".into(),
        })??;
        let mut inputs = vec![input];

        let (symbols, symbols_kind, symbols_input) = match (list, &kernel) {
            (Some(m), _) => {
                let text = String::from_utf8_lossy(&m.bytes);
                let (mut parsed, kind) = symbols::parse_symbol_list(&m.path, &text)?;
                let link_text = kernel
                    .as_ref()
                    .and_then(|k| k.text_address())
                    .unwrap_or(symbols::X86_64_TEXT);
                let shift = symbols::unrelocate(&mut parsed, link_text);
                if shift != 0 {
                    warnings.push(format!(
                        "{}: _text is {shift:#x} bytes above its link address {link_text:#x} (KASLR): every kernel address was moved back by that much{}",
                        m.name,
                        if kernel.is_none() { " (the x86-64 default link address; give the boot image to check it)" } else { "" }
                    ));
                }
                if let Some(k) = &kernel {
                    check_list_matches(&m.path, &parsed, k)?;
                }
                inputs.push(describe_bytes(&m.name, &m.bytes));
                let kind = match kind {
                    ListKind::Kallsyms => "proc-kallsyms",
                    ListKind::SystemMap => "system-map",
                };
                (parsed, kind, 1)
            }
            (None, Some(k)) => {
                let elf_symbols = object::File::parse(k.data)
                    .map(|elf| symbols::from_elf(&elf))
                    .unwrap_or_default();
                if elf_symbols.contains_key("_text") {
                    (elf_symbols, "symtab", 0)
                } else {
                    progress(Progress::Kallsyms);
                    let (map, _) = crate::kallsyms::symbols(k).map_err(|e| at_path(path, e))?;
                    (map, "kallsyms", 0)
                }
            }
            (None, None) => {
                return Err(Error::Input {
                    path: path.to_path_buf(),
                    message: "raw BTF carries no symbols: give /proc/kallsyms (read as root with kernel.kptr_restrict=0) or the System.map with it".into(),
                })
            }
        };
        let banner = match (&kernel, version) {
            (Some(k), _) => symbols
                .get("linux_banner")
                .and_then(|s| k.string_at(s.address, 1024))
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            (None, Some((name, text))) => {
                let t = String::from_utf8_lossy(&text).into_owned();
                inputs.push(describe_bytes(&name, &text));
                Some(t)
            }
            (None, None) => {
                warnings.push("no banner: give a copy of the guest's /proc/version with raw BTF so the profile names its kernel".into());
                None
            }
        };
        let ctx = Context {
            types: Types::Btf(&btf),
            symbols,
            symbols_kind,
            symbols_input,
            banner,
            build_id: kernel.as_ref().and_then(|k| k.build_id()),
            source: SourceKind::Btf,
            inputs,
            warnings,
        };
        progress(Progress::Writing);
        f(&ctx)
    })
}

/// The context of a kernel read back from guest memory (see [`crate::memory`]).
fn with_memory<T, M: vmi_core::memory::PhysicalMemory + ?Sized>(
    mem: &M,
    progress: &mut dyn FnMut(Progress),
    f: impl FnOnce(&Context<'_>) -> Result<T>,
) -> Result<T> {
    // a guest can plant VMCOREINFO look-alikes: the first page whose image decodes
    // consistently wins, and when none does, the first page's error is reported
    let mut first_error = None;
    progress(Progress::Indexing);
    for info in crate::memory::candidates(mem)? {
        match memory_kernel(mem, info) {
            Ok(found) => return with_memory_kernel(found, progress, f),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| Error::Input {
        path: "guest memory".into(),
        message: "no kernel image".into(),
    }))
}

/// A kernel read back from memory: its image, types, relocated-back symbols and banner.
struct MemoryKernel {
    image: crate::memory::MemoryImage,
    btf: Btf,
    symbols: SymbolMap,
    banner: String,
}

fn memory_kernel<M: vmi_core::memory::PhysicalMemory + ?Sized>(
    mem: &M,
    info: vmi_core::vmcoreinfo::VmcoreInfo,
) -> Result<MemoryKernel> {
    let bad = |message: String| Error::Input {
        path: "guest memory".into(),
        message,
    };
    let image = crate::memory::kernel_image(mem, info)?;
    let kernel = KernelElf::from_image(&image.data, image.text_va);
    let btf_bytes = kernel.btf().ok_or_else(|| {
        bad(format!(
            "no BTF in the kernel image in memory (a kernel built without CONFIG_DEBUG_INFO_BTF): {}",
            crate::memory::OTHER_PATHS
        ))
    })?;
    let btf = Btf::parse(btf_bytes)?;
    let (mut symbols, _) = crate::kallsyms::symbols(&kernel).map_err(|e| {
        bad(format!(
            "the kallsyms tables in memory do not decode ({e}): {}",
            crate::memory::OTHER_PATHS
        ))
    })?;
    let banner = symbols
        .get("linux_banner")
        .and_then(|s| kernel.string_at(s.address, 1024))
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .filter(|b| b.starts_with("Linux version "))
        .ok_or_else(|| bad("linux_banner in memory does not hold a banner".into()))?;
    let shift = symbols::unrelocate(&mut symbols, symbols::X86_64_TEXT);
    if shift != image.virt_shift {
        return Err(bad(format!(
            "kallsyms puts _text {shift:#x} above its link address, VMCOREINFO says {:#x}: the memory is inconsistent",
            image.virt_shift
        )));
    }
    Ok(MemoryKernel {
        image,
        btf,
        symbols,
        banner,
    })
}

fn with_memory_kernel<T>(
    k: MemoryKernel,
    progress: &mut dyn FnMut(Progress),
    f: impl FnOnce(&Context<'_>) -> Result<T>,
) -> Result<T> {
    let mut warnings = Vec::new();
    let info = &k.image.vmcoreinfo;
    if info.osrelease().is_some_and(|r| !k.banner.contains(r)) {
        warnings.push(format!(
            "VMCOREINFO names release {:?}, the banner says {:?}",
            info.osrelease().unwrap_or_default(),
            k.banner
        ));
    }
    let ctx = Context {
        types: Types::Btf(&k.btf),
        symbols: k.symbols,
        symbols_kind: "kallsyms",
        symbols_input: 0,
        banner: Some(k.banner),
        build_id: info.get("BUILD-ID").map(str::to_string),
        source: SourceKind::Memory,
        inputs: vec![describe_bytes("guest memory: kernel image", &k.image.data)],
        warnings,
    };
    progress(Progress::Writing);
    f(&ctx)
}

/// Build the native profile of the kernel running in guest memory, from its own BTF and
/// kallsyms (provenance `memory`).
pub fn from_memory<M: vmi_core::memory::PhysicalMemory + ?Sized>(
    mem: &M,
    opts: &Options,
) -> Result<Built> {
    with_memory(mem, &mut |_| {}, |ctx| native(ctx, opts))
}

/// [`generate`] for the kernel running in guest memory.
pub fn generate_from_memory<M: vmi_core::memory::PhysicalMemory + ?Sized>(
    mem: &M,
    opts: &Options,
    format: Format,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report> {
    with_memory(mem, progress, |ctx| write_format(ctx, opts, format, out))
}

/// A symbol list given with a kernel image must describe it: its `linux_banner` must
/// point at the banner in the image.
fn check_list_matches(path: &Path, list: &SymbolMap, kernel: &KernelElf<'_>) -> Result<()> {
    let Some(s) = list.get("linux_banner") else {
        return Ok(());
    };
    match kernel.string_at(s.address, 1024) {
        Some(b) if b.starts_with(b"Linux version ") => Ok(()),
        _ => Err(Error::Mismatch {
            path: path.to_path_buf(),
            message: format!(
                "linux_banner is at {:#x} in the list, where the image holds no banner: they come from different builds",
                s.address
            ),
        }),
    }
}

/// Make the profile of `input` in `format` and write it to `out`.
pub fn generate(
    input: Input<'_>,
    opts: &Options,
    format: Format,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report> {
    with_input(input, progress, |ctx| write_format(ctx, opts, format, out))
}

/// [`generate`] on a vmlinux (and System.map) already in memory, e.g. for fuzzing.
pub fn generate_bytes(
    vmlinux: &[u8],
    system_map: Option<&[u8]>,
    opts: &Options,
    format: Format,
    out: &mut dyn Write,
) -> Result<Report> {
    let map = system_map.map(|b| MapText {
        path: PathBuf::from("System.map"),
        name: "System.map".into(),
        bytes: b.to_vec(),
    });
    let hash = || Ok(describe_bytes("vmlinux", vmlinux));
    with_dwarf("vmlinux", vmlinux, hash, map, &mut |_| {}, |ctx| {
        write_format(ctx, opts, format, out)
    })
}

fn write_format(
    ctx: &Context<'_>,
    opts: &Options,
    format: Format,
    out: &mut dyn Write,
) -> Result<Report> {
    match format {
        Format::Native => {
            let built = native(ctx, opts)?;
            out.write_all(built.profile.to_json().as_bytes())
                .map_err(Error::Output)?;
            Ok(Report {
                warnings: built.warnings,
                isf: None,
            })
        }
        Format::Libvmi => {
            let built = native(ctx, opts)?;
            let text = libvmi(&built.profile, opts)?;
            out.write_all(text.as_bytes()).map_err(Error::Output)?;
            Ok(Report {
                warnings: built.warnings,
                isf: None,
            })
        }
        Format::Isf => {
            let mut warnings = ctx.warnings.clone();
            let banner = ctx.banner.as_ref().map(|b| {
                let mut bytes = b.clone().into_bytes();
                bytes.push(0);
                bytes
            });
            if banner.is_none() {
                warnings.push(
                    "linux_banner could not be read: Volatility will not match this ISF to a memory image".into(),
                );
            }
            let mut types: Vec<String> = needs::TYPES
                .iter()
                .chain(needs::OPTIONAL_TYPES)
                .map(|t| t.name.to_string())
                .collect();
            types.extend(opts.types.iter().cloned());
            let mut typed: Vec<String> = needs::SYMBOLS
                .iter()
                .flat_map(|s| s.aliases.iter().map(|a| a.to_string()))
                .collect();
            typed.extend(opts.symbols.iter().cloned());
            let iopts = IsfOptions {
                full: opts.full,
                types,
                typed_symbols: typed,
                datetime: None,
            };
            let inputs = IsfInputs {
                types: (
                    match ctx.types {
                        Types::Dwarf(_) => "dwarf",
                        Types::Btf(_) => "btf",
                    },
                    &ctx.inputs[0],
                ),
                symbols: (ctx.symbols_kind, &ctx.inputs[ctx.symbols_input]),
            };
            let types = match ctx.types {
                Types::Dwarf(l) => IsfTypes::Dwarf(l),
                Types::Btf(b) => IsfTypes::Btf(b),
            };
            let stats =
                isf::write_isf(out, types, &ctx.symbols, banner.as_deref(), &inputs, &iopts)?;
            Ok(Report {
                warnings,
                isf: Some(stats),
            })
        }
    }
}

/// Build the native profile from a DWARF vmlinux and, optionally, its System.map.
pub fn from_dwarf(vmlinux: &Path, system_map: Option<&Path>, opts: &Options) -> Result<Built> {
    with_input(
        Input::Files {
            vmlinux,
            system_map,
        },
        &mut |_| {},
        |ctx| native(ctx, opts),
    )
}

/// Build the native profile from BTF: a boot image, a vmlinux with `.BTF` or raw BTF,
/// with an optional System.map or `/proc/kallsyms` copy and `/proc/version` copy.
pub fn from_btf(
    types: &Path,
    symbols: Option<&Path>,
    version: Option<&Path>,
    opts: &Options,
) -> Result<Built> {
    with_input(
        Input::Btf {
            types,
            symbols,
            version,
        },
        &mut |_| {},
        |ctx| native(ctx, opts),
    )
}

fn native(ctx: &Context<'_>, opts: &Options) -> Result<Built> {
    let layouts = ctx.types.source();
    let all_symbols = &ctx.symbols;
    let mut warnings = ctx.warnings.clone();
    let mut missing = Missing::default();
    let mut types = BTreeMap::new();
    let wanted: Vec<String> = if opts.full {
        layouts.type_names()
    } else {
        needs::TYPES
            .iter()
            .chain(needs::OPTIONAL_TYPES)
            .map(|t| t.name.to_string())
            .chain(opts.types.iter().cloned())
            .collect()
    };
    for name in &wanted {
        match layouts.layout(name)? {
            Some(def) => {
                types.insert(name.clone(), def);
            }
            None if needs::OPTIONAL_TYPES.iter().any(|t| t.name == name) => {}
            None => {
                if !missing.types.contains(name) {
                    missing.types.push(name.clone());
                }
            }
        }
    }
    for t in needs::TYPES {
        let Some(def) = types.get(t.name) else {
            continue;
        };
        for f in t.fields {
            let found = f.aliases.iter().any(|a| def.fields.contains_key(*a));
            if !found && !f.optional {
                missing.fields.push(format!("{}.{}", t.name, f.aliases[0]));
            }
        }
    }
    let mut syms = BTreeMap::new();
    let wanted_syms: Vec<(Vec<&str>, bool)> = needs::SYMBOLS
        .iter()
        .map(|s| (s.aliases.to_vec(), s.optional))
        .chain(opts.symbols.iter().map(|s| (vec![s.as_str()], false)))
        .collect();
    if opts.full {
        syms = all_symbols.clone();
    }
    for (aliases, optional) in &wanted_syms {
        let mut found = false;
        for a in aliases {
            if let Some(s) = all_symbols.get(*a) {
                syms.insert(a.to_string(), s.clone());
                found = true;
            }
        }
        if !found && !optional {
            missing.symbols.push(aliases[0].to_string());
        }
    }
    for t in &missing.types {
        warnings.push(format!("type {t} not found"));
    }
    for f in &missing.fields {
        warnings.push(format!("field {f} not found (under any alias)"));
    }
    for s in &missing.symbols {
        warnings.push(format!("symbol {s} not found"));
    }

    let banner = ctx.banner.clone().unwrap_or_default();
    if banner.is_empty() {
        warnings.push("linux_banner could not be read: kernel.banner is empty".into());
    }
    let release = banner
        .strip_prefix("Linux version ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_default()
        .to_string();
    let profile = Profile {
        format_version: FORMAT_VERSION.into(),
        kernel: KernelIdentity {
            release,
            banner,
            arch: "x86_64".into(),
            build_id: ctx.build_id.clone(),
        },
        provenance: Provenance {
            source: ctx.source,
            inputs: ctx.inputs.clone(),
            tool: format!("profile-gen {}", env!("CARGO_PKG_VERSION")),
        },
        symbols: syms,
        types,
        missing,
    };
    Ok(Built { profile, warnings })
}

/// The libvmi.conf stanza for a profile: the five offsets and init_task libVMI's Linux
/// driver reads. Missing items are an error (libVMI would read garbage with a 0).
pub fn libvmi(profile: &Profile, opts: &Options) -> Result<String> {
    let mut missing = Vec::new();
    let mut field = |ty: &str, aliases: &[&str]| match profile.field_any(ty, aliases) {
        Some((_, f)) => f.offset,
        None => {
            missing.push(format!("{ty}.{}", aliases[0]));
            0
        }
    };
    let tasks = field("task_struct", &["tasks"]);
    let mm = field("task_struct", &["mm"]);
    let pid = field("task_struct", &["pid"]);
    let name = field("task_struct", &["comm"]);
    let pgd = field("mm_struct", &["pgd"]);
    let init_task = profile.symbol("init_task");
    if init_task.is_none() {
        missing.push("symbol init_task".into());
    }
    if !missing.is_empty() {
        return Err(Error::Input {
            path: PathBuf::from(&profile.kernel.release),
            message: format!(
                "cannot write a libVMI stanza: {} not found",
                missing.join(", ")
            ),
        });
    }
    let stanza = opts
        .libvmi_name
        .clone()
        .unwrap_or_else(|| profile.kernel.release.clone());
    let banner: String = profile
        .kernel
        .banner
        .trim_end()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Ok(format!(
        "# {banner}\n# libVMI offsets for Linux {release}, made by profile-gen {version} from {source}.\n# Rename the stanza to your VM's name; linux_init_task is the unrelocated address (libVMI adds the KASLR shift).\n{stanza} {{\n    ostype = \"Linux\";\n    linux_tasks = {tasks:#x};\n    linux_mm = {mm:#x};\n    linux_pid = {pid:#x};\n    linux_name = {name:#x};\n    linux_pgd = {pgd:#x};\n    linux_init_task = {init:#x};\n}}\n",
        release = profile.kernel.release,
        version = env!("CARGO_PKG_VERSION"),
        source = profile
            .provenance
            .inputs
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(" + "),
        init = init_task.unwrap_or(0),
    ))
}

/// A System.map from another build shows different addresses for the same symbols.
fn check_map_matches(path: &Path, map: &SymbolMap, elf: &SymbolMap) -> Result<()> {
    if elf.is_empty() {
        return Ok(()); // stripped vmlinux: nothing to compare with
    }
    for name in ["_text", "linux_banner", "init_task", "_etext"] {
        if let (Some(a), Some(b)) = (map.get(name), elf.get(name)) {
            if a.address != b.address {
                return Err(Error::Mismatch {
                    path: PathBuf::from(path),
                    message: format!(
                        "{name} is at {:#x} in the System.map but at {:#x} in the vmlinux: they come from different builds",
                        a.address, b.address
                    ),
                });
            }
        }
    }
    Ok(())
}
