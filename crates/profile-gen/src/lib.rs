//! `profile-gen` builds kernel profiles ([`vmi_core::profile::Profile`]).
//!
//! - [`dwarf::Layouts`] reads struct and union layouts from vmlinux DWARF.
//! - [`symbols`] reads System.map (or the vmlinux symbol table).
//! - [`deb`] reads vmlinux and System.map straight out of a `linux-image-<abi>-dbg` .deb.
//! - [`build`] assembles a profile: the needed set from `vmi_core::profile::needs`
//!   (with aliases and missing items listed), plus extra types and symbols, or everything.
//!
//! BTF, kallsyms and the boot image are tracked by their own issue.
#![deny(missing_docs)]

pub mod build;
pub mod deb;
pub mod dwarf;
pub mod error;
pub mod isf;
pub mod symbols;

pub use error::{Error, Result};
