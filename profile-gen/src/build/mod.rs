//! Assemble a profile (native, ISF or libVMI) from DWARF or BTF layouts and symbols.
//!
//! [`generate`] is the one entry point: it opens the input (a vmlinux file mapped
//! read-only, plus an optional System.map; or BTF from a boot image, a vmlinux `.BTF`
//! section or raw BTF, with symbols from a System.map, `/proc/kallsyms` or the image's
//! own kallsyms), hashes the inputs on one thread while the types are read on the
//! others, then writes the requested format. Both paths share the native builder,
//! which works over [`TypeSource`]. [`from_dwarf`] and [`from_btf`] give the native
//! profile as a value, for tests and other crates.
//!
//! One file a job: `inputs.rs` opens the input and hashes it, `dwarf_input.rs`,
//! `btf_input.rs` and `memory_input.rs` read a kernel's types and symbols from a
//! vmlinux with DWARF, from BTF, or from guest memory into a `Context`; `native.rs`
//! is the native builder, `libvmi.rs` the libVMI writer, `write.rs` writes the format
//! asked for; this file holds the public types and entry points.

mod btf_input;
#[cfg(feature = "dwarf")]
mod dwarf_input;
mod inputs;
mod libvmi;
mod memory_input;
mod native;
mod write;

pub use inputs::{describe_bytes, describe_file};
pub use libvmi::libvmi;

use std::io::Write;
use std::path::Path;

use vmi_core::profile::{InputFile, Profile, SourceKind};

use crate::btf::Btf;
#[cfg(feature = "dwarf")]
use crate::dwarf::Layouts;
use crate::error::Result;
use crate::isf::IsfStats;
use crate::source::TypeSource;
use crate::symbols::SymbolMap;

use inputs::with_input;
use memory_input::with_memory;
use native::native;
use write::write_format;

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
    #[cfg(feature = "dwarf")]
    Files {
        /// The vmlinux.
        vmlinux: &'p Path,
        /// Its System.map (else the vmlinux symbol table is used).
        system_map: Option<&'p Path>,
    },
    /// A `linux-image-<abi>-dbg` package, read in place.
    #[cfg(feature = "deb")]
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

/// The types of a kernel.
#[derive(Clone, Copy)]
enum Types<'c> {
    #[cfg(feature = "dwarf")]
    Dwarf(&'c Layouts<'c>),
    Btf(&'c Btf),
}

impl<'c> Types<'c> {
    fn source(&self) -> &'c dyn TypeSource {
        match *self {
            #[cfg(feature = "dwarf")]
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
#[cfg(feature = "dwarf")]
pub fn generate_bytes(
    vmlinux: &[u8],
    system_map: Option<&[u8]>,
    opts: &Options,
    format: Format,
    out: &mut dyn Write,
) -> Result<Report> {
    let map = system_map.map(|b| inputs::MapText {
        path: "System.map".into(),
        name: "System.map".into(),
        bytes: b.to_vec(),
    });
    let hash = || Ok(describe_bytes("vmlinux", vmlinux));
    dwarf_input::with_dwarf("vmlinux", vmlinux, hash, map, &mut |_| {}, |ctx| {
        write_format(ctx, opts, format, out)
    })
}

/// Build the native profile from a DWARF vmlinux and, optionally, its System.map.
#[cfg(feature = "dwarf")]
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
