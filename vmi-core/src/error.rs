//! Error types.
//!
//! Reads are the hot path, so their errors are small `Copy` values that carry the
//! address that failed and allocate nothing: [`PhysError`] (a guest-physical read),
//! [`TranslateError`] (a page-table walk) and [`ReadError`] (a guest-virtual read, which
//! is either). Opening sources, QMP, registers and pause/resume report [`Error`], which
//! carries paths and messages that say what to do.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::addr::{Pa, Va};
use crate::arch::x86_64::{Level, PagingMode};

/// A guest-physical read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhysError {
    /// The address is outside every range the source holds (a hole in the guest's
    /// memory map, or past its end).
    #[error("guest-physical address {pa} is not backed by the memory source")]
    Unmapped {
        /// The first address that could not be read.
        pa: Pa,
    },
    /// The source holds the address but could not read it.
    #[error("reading guest-physical address {pa} failed: {kind}")]
    Io {
        /// The first address that could not be read.
        pa: Pa,
        /// What went wrong.
        kind: io::ErrorKind,
    },
}

impl PhysError {
    /// The first guest-physical address that could not be read.
    pub fn pa(&self) -> Pa {
        match *self {
            PhysError::Unmapped { pa } | PhysError::Io { pa, .. } => pa,
        }
    }
}

/// A page-table walk failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TranslateError {
    /// The address is not canonical: its top bits are not copies of bit 47 (4-level
    /// paging) or bit 56 (5-level paging).
    #[error("virtual address {va} is not canonical under {mode} paging")]
    NonCanonical {
        /// The address.
        va: Va,
        /// The paging mode.
        mode: PagingMode,
    },
    /// A paging-structure entry on the walk is not present.
    #[error(
        "virtual address {va} is not mapped: {level} entry {entry:#x} at {entry_pa} is not present"
    )]
    NotPresent {
        /// The address being translated.
        va: Va,
        /// The level whose entry is not present.
        level: Level,
        /// The entry as read.
        entry: u64,
        /// Where the entry is.
        entry_pa: Pa,
    },
    /// An entry sets a bit the processor reserves at its level (the page-size bit in a
    /// PML5 or PML4 entry), so the hardware would fault.
    #[error("virtual address {va}: {level} entry {entry:#x} at {entry_pa} sets the page-size bit, reserved at that level")]
    Reserved {
        /// The address being translated.
        va: Va,
        /// The level of the entry.
        level: Level,
        /// The entry as read.
        entry: u64,
        /// Where the entry is.
        entry_pa: Pa,
    },
    /// An entry names a frame that is not the guest's (a Xen PV guest's entries hold
    /// machine frames: one the domain does not own, or a grant or I/O mapping).
    #[error("virtual address {va}: {level} entry {entry:#x} at {entry_pa} names a frame that is not the guest's")]
    ForeignFrame {
        /// The address being translated.
        va: Va,
        /// The level of the entry.
        level: Level,
        /// The entry as read.
        entry: u64,
        /// Where the entry is.
        entry_pa: Pa,
    },
    /// A paging-structure entry could not be read from physical memory (the table
    /// pointer leads outside the source's memory).
    #[error("virtual address {va}: the {level} entry at {entry_pa} cannot be read: {cause}")]
    TableUnreadable {
        /// The address being translated.
        va: Va,
        /// The level of the table.
        level: Level,
        /// Where the entry should be.
        entry_pa: Pa,
        /// Why the read failed.
        cause: PhysError,
    },
}

impl TranslateError {
    /// The virtual address whose translation failed.
    pub fn va(&self) -> Va {
        match *self {
            TranslateError::NonCanonical { va, .. }
            | TranslateError::NotPresent { va, .. }
            | TranslateError::Reserved { va, .. }
            | TranslateError::ForeignFrame { va, .. }
            | TranslateError::TableUnreadable { va, .. } => va,
        }
    }
}

/// A guest-virtual read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A page of the range does not translate.
    #[error(transparent)]
    Translate(#[from] TranslateError),
    /// A page translates to physical memory the source cannot read.
    #[error("virtual address {va} maps to guest-physical {pa}, which cannot be read: {cause}")]
    Phys {
        /// The first virtual address that could not be read.
        va: Va,
        /// Its physical address.
        pa: Pa,
        /// Why the physical read failed.
        cause: PhysError,
    },
    /// The range passes the top of the 64-bit address space.
    #[error("reading {len} bytes at virtual address {va} wraps past the top of the address space")]
    Wrap {
        /// Start of the range.
        va: Va,
        /// Its length.
        len: u64,
    },
}

impl ReadError {
    /// The first virtual address that could not be read.
    pub fn va(&self) -> Va {
        match *self {
            ReadError::Translate(e) => e.va(),
            ReadError::Phys { va, .. } | ReadError::Wrap { va, .. } => va,
        }
    }
}

/// Errors from the QMP client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QmpError {
    /// The socket could not be connected.
    #[error("connecting to the QMP socket {}: {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// QEMU accepted the connection but sent no greeting.
    #[error("QEMU sent no QMP greeting on {} within {:.1} s; QEMU serves one client per QMP socket at a time: is another client connected?", path.display(), timeout.as_secs_f64())]
    NoGreeting {
        /// The socket.
        path: PathBuf,
        /// How long the client waited.
        timeout: Duration,
    },
    /// Reading or writing the socket failed.
    #[error("QMP {command}: {source}")]
    Io {
        /// The command being run.
        command: String,
        /// The error.
        source: io::Error,
    },
    /// No reply in time.
    #[error("QMP {command}: no reply within {:.1} s", timeout.as_secs_f64())]
    Timeout {
        /// The command.
        command: String,
        /// The timeout.
        timeout: Duration,
    },
    /// QEMU closed the connection (it exited, or another client took over).
    #[error("QMP {command}: QEMU closed the connection")]
    Closed {
        /// The command.
        command: String,
    },
    /// A reply line was longer than the client accepts.
    #[error("QMP {command}: a reply is longer than {limit} bytes")]
    TooLong {
        /// The command.
        command: String,
        /// The limit.
        limit: usize,
    },
    /// QEMU said something that is not QMP.
    #[error("QMP {command}: protocol error: {message}")]
    Protocol {
        /// The command.
        command: String,
        /// What was wrong.
        message: String,
    },
    /// The command failed in QEMU.
    #[error("QMP {command} failed: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// QEMU's error class (`GenericError`, `CommandNotFound`, ...).
        class: String,
        /// QEMU's description.
        desc: String,
    },
}

/// Errors from opening sources, registers, pause/resume and QMP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened, inspected or mapped.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done (`opening`, `mapping`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A dump is malformed.
    #[error("{} is not a usable {format}: {what}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The format expected (`ELF core`, `LiME image`, `raw image`).
        format: &'static str,
        /// What is wrong with it.
        what: String,
    },
    /// QMP failed.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// The live QEMU guest cannot be read the way it is configured.
    #[error("live QEMU source: {0}")]
    Qemu(String),
    /// A libvirt domain cannot be found, opened or controlled.
    #[error(transparent)]
    Libvirt(#[from] crate::memory::LibvirtError),
    /// A Xen domain cannot be opened or controlled.
    #[error(transparent)]
    Xen(#[from] crate::memory::XenError),
    /// The source has no such vCPU.
    #[error("no vCPU {vcpu}: the source has {count}")]
    NoSuchVcpu {
        /// The vCPU asked for.
        vcpu: usize,
        /// How many the source has.
        count: usize,
    },
    /// The source has the vCPU but not the registers asked for.
    #[error("vCPU {vcpu}: registers unavailable: {why}")]
    RegistersUnavailable {
        /// The vCPU.
        vcpu: usize,
        /// Why.
        why: String,
    },
    /// The registers describe a paging mode this crate does not translate (paging off,
    /// or 32-bit paging).
    #[error("unsupported paging mode (CR0={cr0:#x} CR4={cr4:#x} EFER={efer}): only 4- and 5-level long-mode paging is translated")]
    UnsupportedPaging {
        /// CR0.
        cr0: u64,
        /// CR4.
        cr4: u64,
        /// EFER, when known.
        efer: String,
    },
}
