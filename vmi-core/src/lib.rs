//! `vmi-core` reads a Linux guest's memory from outside the guest.
//!
//! - [`profile`]: the kernel **profile** ([`profile::Profile`]), the versioned contract
//!   between every crate of the project (struct layouts and symbol addresses of one
//!   kernel build), and the declaration of what the detector needs from it
//!   ([`profile::needs`]).
//! - [`memory`]: memory **sources** and their capabilities, as small traits a source
//!   implements only when it can: [`memory::PhysicalMemory`] (guest-physical reads,
//!   batched reads, the physical memory map), [`memory::VcpuRegisters`] and
//!   [`memory::PauseResume`]. Sources: raw images ([`memory::RawImage`]), ELF cores
//!   with QEMU CPU notes and VMCOREINFO ([`memory::ElfCore`]), LiME
//!   ([`memory::LimeImage`]) and live QEMU guests ([`memory::QemuLive`]: the RAM file
//!   plus QMP). [`memory::PageCache`] caches any source.
//! - [`arch::x86_64`]: 4- and 5-level page-table walks ([`arch::x86_64::translate`]) and
//!   guest-virtual views with a translation cache ([`arch::x86_64::AddressSpace`]).
//! - [`addr`]: the address newtypes [`Pa`], [`Va`], [`Gfn`]; [`error`]: typed errors that
//!   carry the failing address.
//!
//! - [`kernel`]: finding the kernel with no help from the guest ([`kernel::ProfileSet`]
//!   picks the profile by banner, [`kernel::Kernel::discover`] the KASLR shifts and the
//!   kernel page table) and typed objects read through the profile (processes, threads,
//!   modules).
//! - `testing` (feature `test-support`): `SyntheticKernel`, a kernel built object by
//!   object in mock memory, for tests of what reads kernels that need no guest.
#![deny(missing_docs)]

pub mod addr;
pub mod arch;
pub mod error;
pub mod kernel;
pub mod memory;
pub mod profile;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod vmcoreinfo;

pub use addr::{Gfn, Pa, Va};
pub use error::{Error, PhysError, QmpError, ReadError, TranslateError};
