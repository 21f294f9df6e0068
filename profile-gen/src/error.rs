//! profile-gen's error type.

use std::path::PathBuf;

/// What can go wrong while building a profile.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A section could not be read.
    #[error("section {section}: {message}")]
    Section {
        /// The section's name.
        section: String,
        /// What was wrong (with the offset where the parser knows it).
        message: String,
    },
    /// The ELF has no DWARF.
    #[error("the ELF file has no .debug_info section: use the vmlinux from the linux-image-<abi>-dbg package (or a kernel built with CONFIG_DEBUG_INFO)")]
    NoDwarf,
    /// The kernel has no BTF.
    #[error("{path}: the kernel has no BTF (.BTF section): it was built without CONFIG_DEBUG_INFO_BTF. Make the profile from DWARF instead (the vmlinux of the linux-image-<abi>-dbg package, or that package itself), or inside the guest with the guest module")]
    NoBtf {
        /// The image.
        path: PathBuf,
    },
    /// The input is not a kind profile-gen reads.
    #[error("{path}: {message}")]
    Input {
        /// The file.
        path: PathBuf,
        /// What it is and what to do instead.
        message: String,
    },
    /// The System.map does not belong to the vmlinux.
    #[error("System.map {path} does not match the vmlinux: {message}")]
    Mismatch {
        /// The System.map.
        path: PathBuf,
        /// Which symbol differs.
        message: String,
    },
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(#[source] std::io::Error),
}

/// profile-gen's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
