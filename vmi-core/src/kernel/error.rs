//! Errors of kernel discovery and kernel-object walks.

use std::path::PathBuf;

use crate::addr::{Pa, Va};
use crate::error::{PhysError, ReadError};
use crate::profile::ProfileError;

/// What can go wrong finding the kernel or reading its objects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// No `Linux version ...` banner anywhere in guest memory.
    #[error("no Linux banner (\"Linux version ...\") in guest memory: is this a Linux guest, and is the dump complete?")]
    NoBanner,
    /// Banners were found but no profile matches them.
    #[error("no profile for the banner found in guest memory:{}\nMake one with profile-gen from this kernel's -dbg package, vmlinuz or BTF.{}", banner_list(.banners), closest_list(.closest))]
    NoProfile {
        /// The distinct banners found, most frequent first (escaped). Besides the
        /// kernel's own, memory can hold stray variants (e.g. a build's placeholder).
        banners: Vec<String>,
        /// Banners of the closest profiles available.
        closest: Vec<String>,
    },
    /// A profile file could not be read.
    #[error("profile {}: {source}", path.display())]
    ProfileFile {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        source: ProfileError,
    },
    /// Reading a profile directory failed.
    #[error("reading the profile directory {}: {source}", path.display())]
    ProfileDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The profile lacks a symbol discovery or a walk needs.
    #[error(
        "the profile has no symbol {0}: regenerate it with profile-gen (this one may be partial)"
    )]
    MissingSymbol(&'static str),
    /// The profile lacks a field a walk needs (under every alias).
    #[error("the profile has no field {0}: regenerate it with profile-gen")]
    MissingField(String),
    /// The banner is in memory but the kernel image around it does not fit the profile.
    #[error("the banner at {banner_pa} matches the profile, but {what}")]
    Inconsistent {
        /// Where the banner was found.
        banner_pa: Pa,
        /// What did not fit.
        what: String,
    },
    /// No virtual shift maps the kernel image onto the physical copy found.
    #[error("no KASLR virtual shift maps linux_banner to {banner_pa} through the kernel page table at {root}: the page table or the profile does not belong to this guest")]
    NoVirtualShift {
        /// The banner's physical address.
        banner_pa: Pa,
        /// The page-table root tried.
        root: Pa,
    },
    /// A guest-virtual read failed.
    #[error("reading {what}: {source}")]
    Read {
        /// What was being read.
        what: &'static str,
        /// The failed read (carries the address).
        source: ReadError,
    },
    /// A guest-physical read failed.
    #[error("reading {what}: {source}")]
    Phys {
        /// What was being read.
        what: &'static str,
        /// The failed read (carries the address).
        source: PhysError,
    },
    /// A list loops back to an element other than its head.
    #[error("{what}: the list loops back to {at} after {after} elements without returning to its head (corrupted or manipulated kernel memory)")]
    Cycle {
        /// Which list.
        what: &'static str,
        /// The element seen twice.
        at: Va,
        /// Elements walked.
        after: usize,
    },
    /// A list is longer than the configured bound.
    #[error(
        "{what}: more than {max} elements (raise the limit if the guest really has that many)"
    )]
    TooLong {
        /// Which list.
        what: &'static str,
        /// The bound.
        max: usize,
    },
    /// A kernel object has a shape no kernel gives it.
    #[error("{what} at {at}: corrupted or manipulated kernel memory")]
    Corrupt {
        /// What is wrong with it.
        what: String,
        /// Where the object is.
        at: Va,
    },
    /// A pointer read from the guest is not a kernel address.
    #[error("{what}: {value:#x} is not a kernel address (corrupted or manipulated kernel memory)")]
    BadPointer {
        /// Which pointer.
        what: &'static str,
        /// Its value.
        value: u64,
    },
}

fn banner_list(banners: &[String]) -> String {
    let mut s = String::new();
    for b in banners {
        s.push_str("\n  ");
        s.push_str(b);
    }
    s
}

fn closest_list(closest: &[String]) -> String {
    if closest.is_empty() {
        return "\nNo profiles were loaded.".into();
    }
    let mut s = String::from("\nClosest profiles:");
    for c in closest {
        s.push_str("\n  ");
        s.push_str(c);
    }
    s
}
