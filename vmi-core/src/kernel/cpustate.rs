//! What the kernel set in each CPU's control registers and system-call MSRs, read from
//! its own memory, for comparison with the vCPUs' registers:
//!
//! - `cr4_pinned_bits` (5.3 on): the CR4 bits the kernel pinned at boot (SMEP, SMAP,
//!   UMIP, FSGSBASE, CET where the CPU has them); a CPU without one of them was tampered
//!   with by code that wrote CR4 directly;
//! - the features the kernel found and uses (`boot_cpu_data.x86_capability`): with
//!   SMEP or SMAP among them, CR4 has the bit on every CPU whatever `cr4_pinned_bits`
//!   says (a rootkit that clears a bit there first switches the pinning off);
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
    fields [opt "cpuinfo_x86" ["x86_capability"]];
    symbols [
        opt ["boot_cpu_data"],
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
    (CR4_SMEP, "SMEP"),
    (CR4_SMAP, "SMAP"),
    (1 << 23, "CET"),
];

/// CR4.SMEP.
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP.
pub const CR4_SMAP: u64 = 1 << 21;
/// `X86_FEATURE_SMEP` and `X86_FEATURE_SMAP` (word 9: CPUID 7.0 EBX, since 3.x) and the
/// CR4 bit each makes the kernel set.
const FEATURES: &[(u32, u64)] = &[(9 * 32 + 7, CR4_SMEP), (9 * 32 + 20, CR4_SMAP)];

/// What the kernel expects of every CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuExpectations {
    /// `cr4_pinned_bits` (`None` before 5.3 or without the symbol).
    pub cr4_pinned: Option<u64>,
    /// The CR4 bits the kernel's own feature words say it set (SMEP, SMAP; `None`
    /// without `boot_cpu_data` in the profile).
    pub cr4_features: Option<u64>,
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
        let cr4_features = match (
            self.symbol("boot_cpu_data"),
            self.profile.field("cpuinfo_x86", "x86_capability"),
        ) {
            (Ok(at), Some(f)) => {
                let mut words = [0u8; 4 * 10];
                self.space
                    .read_virt(Va(at.0.wrapping_add(f.offset)), &mut words)
                    .map_err(|source| KernelError::Read {
                        what: "boot_cpu_data.x86_capability",
                        source,
                    })?;
                let has = |bit: u32| {
                    let w = (bit / 32) as usize * 4;
                    u32::from_le_bytes([words[w], words[w + 1], words[w + 2], words[w + 3]])
                        & (1 << (bit % 32))
                        != 0
                };
                Some(
                    FEATURES
                        .iter()
                        .filter(|(bit, _)| has(*bit))
                        .fold(0, |a, (_, cr4)| a | cr4),
                )
            }
            _ => None,
        };
        Ok(CpuExpectations {
            cr4_pinned: read("cr4_pinned_bits")?,
            cr4_features,
            uses_nx: read("__supported_pte_mask")?.map(|m| m & (1 << 63) != 0),
            lstar: self.symbol("entry_SYSCALL_64").ok(),
            cstar: self.symbol("entry_SYSCALL_compat").ok(),
            sysenter: self.symbol("entry_SYSENTER_compat").ok(),
        })
    }
}
