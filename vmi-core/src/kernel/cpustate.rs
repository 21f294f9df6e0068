//! What the kernel set in each CPU's control registers and system-call MSRs, read from
//! its own memory, for comparison with the vCPUs' registers:
//!
//! - `cr4_pinned_bits` (5.3 on): the CR4 bits the kernel pinned at boot (SMEP, SMAP,
//!   UMIP, FSGSBASE, CET where the CPU has them); a CPU without one of them was tampered
//!   with by code that wrote CR4 directly;
//! - CR0.WP, which the kernel sets on every CPU and pins too;
//! - whether the kernel uses NX (`__supported_pte_mask` has bit 63), which needs
//!   EFER.NX on every CPU;
//! - the entry points the kernel writes into IA32_LSTAR (`entry_SYSCALL_64`),
//!   IA32_CSTAR (`entry_SYSCALL_compat`) and IA32_SYSENTER_EIP
//!   (`entry_SYSENTER_compat`).

use crate::addr::Va;
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// The symbols read.
pub const NEEDS: crate::profile::needs::Declaration = crate::declaration!(
    "cpustate";
    fields [];
    symbols [
        opt ["cr4_pinned_bits"],
        opt ["__supported_pte_mask"],
        ["entry_SYSCALL_64"],
        opt ["entry_SYSCALL_compat"],
        opt ["entry_SYSENTER_compat"],
    ]
);

/// CR0.WP: supervisor writes honour read-only pages.
pub const CR0_WP: u64 = 1 << 16;
/// EFER.NXE: the NX bit in page tables is enabled.
pub const EFER_NX: u64 = 1 << 11;

/// The names of CR4 bits a kernel pins.
pub const CR4_PINNABLE: &[(u64, &str)] = &[
    (1 << 11, "UMIP"),
    (1 << 16, "FSGSBASE"),
    (1 << 20, "SMEP"),
    (1 << 21, "SMAP"),
    (1 << 23, "CET"),
];

/// What the kernel expects of every CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuExpectations {
    /// `cr4_pinned_bits` (`None` before 5.3 or without the symbol).
    pub cr4_pinned: Option<u64>,
    /// True when the kernel's page tables use NX (`None` without the symbol).
    pub uses_nx: Option<bool>,
    /// `entry_SYSCALL_64`.
    pub lstar: Option<Va>,
    /// `entry_SYSCALL_compat` (kernels with IA32 emulation).
    pub cstar: Option<Va>,
    /// `entry_SYSENTER_compat`.
    pub sysenter: Option<Va>,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// What the kernel set up every CPU with (see the module docs).
    pub fn cpu_expectations(&self) -> Result<CpuExpectations, KernelError> {
        let read = |name: &'static str| -> Result<Option<u64>, KernelError> {
            match self.symbol(name) {
                Ok(at) => self
                    .space
                    .read_u64(at)
                    .map(Some)
                    .map_err(|source| KernelError::Read { what: name, source }),
                Err(_) => Ok(None),
            }
        };
        Ok(CpuExpectations {
            cr4_pinned: read("cr4_pinned_bits")?,
            uses_nx: read("__supported_pte_mask")?.map(|m| m & (1 << 63) != 0),
            lstar: self.symbol("entry_SYSCALL_64").ok(),
            cstar: self.symbol("entry_SYSCALL_compat").ok(),
            sysenter: self.symbol("entry_SYSENTER_compat").ok(),
        })
    }
}
