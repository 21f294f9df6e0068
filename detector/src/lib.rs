//! `detector` reads a Linux guest from outside (a dump or a live QEMU) through
//! `vmi-core` and reports what runs in it and whether its kernel was tampered with.
//!
//! - [`target::Target`] opens a guest: the memory source ([`target::SourceSpec`]: a
//!   dump recognised by content, or a QEMU QMP socket), the profile
//!   ([`target::ProfileSpec`]: a directory searched by banner, or one file) and the
//!   kernel found in memory.
//! - [`checks`] holds the intrusion checks ([`checks::Check`]); [`checks::run_once`]
//!   runs a set of them over one [`checks::Scan`] of shared kernel views and returns a
//!   [`checks::Report`] of [`finding::Finding`]s.
//! - [`render`] turns process lists, module lists, the identification and reports into
//!   text or JSON. Guest strings are escaped before they reach either.
//! - [`evidence`] renders the evidence commands (`env`, `lsof`): a process's
//!   environment and open files, escaped.
//! - [`watch::Watcher`] monitors a live guest: one [`watch::Watcher::tick`] per interval
//!   turns what changed (processes, findings, the guest's state) into
//!   [`watch::Event`]s.
//! - [`events`] is the one event format of `watch --json`, `watch --alerts` and
//!   [`serve`]: a [`events::Record`] per event, written as a JSON line with time and
//!   guest.
//!
//! The `detector` binary (`src/main.rs`) is the command line over these.
#![deny(missing_docs)]

pub mod checks;
pub mod coredump;
pub mod error;
pub mod events;
pub mod evidence;
pub mod finding;
pub mod glob;
pub mod image;
pub mod incremental;
pub mod moddump;
pub mod policy;
pub mod render;
pub mod serve;
pub mod target;
pub mod verify;
pub mod watch;

pub use error::DetectorError;
pub use finding::{Finding, Severity};
pub use target::{ProfileSpec, SourceSpec, Target};
