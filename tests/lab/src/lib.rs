//! The guest lab: real Debian kernels booted in QEMU as the ground truth for every other
//! part of the project.
//!
//! - [`Store`] fetches kernel builds from Debian's archive by ABI name (or series) through
//!   a private apt configuration and caches their parts ([`KernelImage`],
//!   [`KernelDebug`], [`KernelHeaders`]) in a [`Cache`].
//! - [`Scenario`] describes what runs in the guest (named workloads, files, modules,
//!   shell lines) and builds the initramfs around busybox and the guest worker
//!   (`guest/labworker.c`, compiled statically by [`build::worker`]).
//! - [`Guest`] boots a kernel with a scenario under QEMU (TCG), waits for the guest to
//!   report its [`GroundTruth`] on the lab channel, and exposes QMP, the RAM file and its
//!   memory map, dumps (ELF, raw, LiME), pause/resume and shutdown. Dropping it kills QEMU.
//! - [`build::kernel_module`] builds out-of-tree C modules against a kernel's headers.
//! - [`libvirt::Libvirtd`] runs a private libvirtd whose domains boot lab guests
//!   ([`ExternalGuest`]).
//! - [`XenRig`] boots Debian's Xen 4.17 with a dom0 toolstack in QEMU and starts domUs
//!   ([`DomuSpec`]: PVH or PV) that run scenarios and report their ground truth
//!   ([`XenDomu`]); host programs run in dom0 ([`xen`]).
//!
//! [`Lab`] ties them together for tests: `Lab::open_default()?.boot("6.1.0-56-amd64",
//! &Scenario::standard(), &BootOptions::default())`.
#![deny(missing_docs)]

pub mod apt;
pub mod build;
pub mod cache;
pub mod cpio;
pub mod error;
pub mod external;
pub mod guest;
pub mod libvirt;
pub mod prepare;
pub mod python;
pub mod qmp;
pub mod rustkernel;
pub mod scenario;
pub mod store;
pub mod toolchain;
pub mod tools;
pub mod truth;
pub mod validate;
pub mod views;
pub mod xen;

use std::path::PathBuf;

pub use cache::Cache;
pub use error::{Error, Result};
pub use external::ExternalGuest;
pub use guest::{quote, BootOptions, Guest, RamBacking, RamRange, ShellOutput};
pub use rustkernel::RustKernel;
pub use scenario::{Expectation, Scenario, Step, WorkloadKind};
pub use store::{KernelDebug, KernelHeaders, KernelImage, KernelSpec, Store};
pub use truth::GroundTruth;
pub use xen::{DomuKind, DomuSpec, XenDomu, XenImage, XenOptions, XenRig};

/// The kernels every lab test runs on: one per supported series. Exact builds where the
/// archive keeps them (bullseye, bookworm); the fast-moving 7.x builds (sid,
/// trixie-backports) by series, resolved at run time: the newest 7.2 build and the newest
/// 7.x build of any minor version.
pub const MATRIX: &[&str] = &[
    "5.10.0-46-amd64",
    "6.1.0-56-amd64",
    "6.12.117+deb12-amd64",
    "newest:7.2",
    "newest:7",
];

/// The kernel of the demo and of single-kernel tests.
pub const DEFAULT_KERNEL: &str = "6.1.0-56-amd64";

/// The lab: a cache, the kernel store in it, and the guest worker.
#[derive(Debug, Clone)]
pub struct Lab {
    cache: Cache,
    store: Store,
}

impl Lab {
    /// The lab in the default cache directory (see [`Cache::default_root`]).
    pub fn open_default() -> Result<Lab> {
        Lab::new(Cache::open_default()?)
    }

    /// The lab in `cache`.
    pub fn new(cache: Cache) -> Result<Lab> {
        let store = Store::new(&cache)?;
        Ok(Lab { cache, store })
    }

    /// Show download progress on the terminal.
    pub fn with_progress(mut self, visible: bool) -> Lab {
        self.store = self.store.with_progress(visible);
        self
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The kernel store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The compiled guest worker.
    pub fn worker(&self) -> Result<PathBuf> {
        build::worker(&self.cache)
    }

    /// Fetch a kernel image and boot it with a scenario.
    pub fn boot(&self, kernel: &str, scenario: &Scenario, opts: &BootOptions) -> Result<Guest> {
        let image = self.store.image(kernel)?;
        let worker = self.worker()?;
        Guest::boot_scenario(&image, scenario, &worker, opts)
    }

    /// Build a C kernel module against the headers of `kernel`.
    pub fn build_module(&self, kernel: &str, src: &build::ModuleSource) -> Result<PathBuf> {
        let headers = self.store.headers(kernel)?;
        build::kernel_module(&self.cache, &headers, src)
    }
}
