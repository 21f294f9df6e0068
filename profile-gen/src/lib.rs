//! `profile-gen` builds kernel profiles ([`vmi_core::profile::Profile`]).
//!
//! - [`dwarf::Layouts`] reads struct and union layouts from vmlinux DWARF, [`btf::Btf`]
//!   from BTF; both are a [`source::TypeSource`] for the one native builder.
//! - [`symbols`] reads System.map, `/proc/kallsyms` copies (or the vmlinux symbol table);
//!   [`kallsyms`] recovers every symbol from the kernel's own tables in the image.
//! - [`vmlinuz`] finds and decompresses the kernel in a boot image; [`kimage`] reads that
//!   kernel (a symbol-less vmlinux ELF) through its program headers.
//! - [`deb`] reads vmlinux and System.map straight out of a `linux-image-<abi>-dbg` .deb,
//!   and the boot image out of a `linux-image-<abi>` one.
//! - [`build`] assembles a profile: the needed set from `vmi_core::profile::needs`
//!   (with aliases and missing items listed), plus extra types and symbols, or everything.
//! - [`isf`] writes Volatility 3 ISF from either type source.
//! - [`complete`] fills in the symbols of a profile made elsewhere (the guest module's)
//!   from the build's System.map.
//!
//! Features carry the inputs' dependencies: without any, profiles come from BTF (a
//! vmlinux's `.BTF` or raw BTF) and from guest memory ([`build::from_memory`]); `dwarf`
//! adds the DWARF reader (gimli), `vmlinuz` the boot images' decompressors, `packages` the package
//! reader, `deb` the package reader with DWARF (profiles from -dbg packages), and `cli` (the default) all of them plus the `profile-gen` binary.
#![deny(missing_docs)]

pub mod btf;
pub mod build;
pub mod complete;
#[cfg(feature = "packages")]
pub mod deb;
#[cfg(feature = "dwarf")]
pub mod dwarf;
pub mod error;
pub mod isf;
mod isf_btf;
#[cfg(feature = "dwarf")]
mod isf_dwarf;
pub mod kallsyms;
pub mod kimage;
pub mod memory;
pub mod source;
pub mod symbols;
pub mod vmlinuz;

pub use error::{Error, Result};
