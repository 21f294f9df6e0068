//! The kernel image read back from a running guest's memory (a live source or a dump),
//! for profiles made with no file from the guest at all ("zero-touch").
//!
//! A running x86-64 kernel keeps its whole image mapped and physically contiguous,
//! `.rodata` included: the kallsyms tables and `.BTF` are there, unchanged since boot.
//! Where the image is comes from the kernel's VMCOREINFO page (found in memory by
//! [`vmi_core::vmcoreinfo::find_in_memory`]): `KERNELOFFSET` is the virtual KASLR shift
//! and `NUMBER(phys_base)` the difference between the physical and the virtual one, so
//! `_text` is at virtual `0xffffffff81000000 + KERNELOFFSET` and at physical
//! `0x1000000 + phys_base + KERNELOFFSET`. The bytes from there are handed to the same
//! kallsyms recovery and BTF reader the boot-image path uses, as one executable segment
//! at the run-time address of `_text`; addresses come out relocated and are moved back
//! by `KERNELOFFSET`.
//!
//! Nothing read here is trusted on its own: the image must hold the banner the guest's
//! `linux_banner` symbol points at, `_text` must come out where VMCOREINFO says, and the
//! caller (vmi-core's discovery) then checks the profile against the live kernel
//! (init_task is pid 0 `swapper*`, the task list is consistent).

use vmi_core::memory::PhysicalMemory;
use vmi_core::vmcoreinfo::{find_all_in_memory, VmcoreInfo};
use vmi_core::Pa;

use crate::error::{Error, Result};

/// The link-time address of `_text` on x86-64.
pub const LINK_TEXT: u64 = 0xffff_ffff_8100_0000;
/// The physical address the kernel is linked to load at (`CONFIG_PHYSICAL_START`).
pub const LINK_PHYS: u64 = 0x100_0000;
/// Bytes of the image read from `_text` (Debian's 7.2 image is ~45 MB up to `.bss`).
pub const IMAGE_BYTES: u64 = 96 << 20;

/// A kernel image read from guest memory.
#[derive(Debug)]
pub struct MemoryImage {
    /// The bytes from `_text` on (as many as guest RAM holds, at most [`IMAGE_BYTES`]).
    pub data: Vec<u8>,
    /// Run-time virtual address of `_text`.
    pub text_va: u64,
    /// Physical address of `_text`.
    pub text_pa: Pa,
    /// The virtual KASLR shift.
    pub virt_shift: u64,
    /// The VMCOREINFO the placement came from.
    pub vmcoreinfo: VmcoreInfo,
}

fn no_image(message: String) -> Error {
    Error::Input {
        path: "guest memory".into(),
        message,
    }
}

/// What to do instead when memory alone cannot give a profile.
pub const OTHER_PATHS: &str = "make the profile from this kernel's vmlinuz (BTF + kallsyms), its -dbg package (DWARF), or with the in-guest extractor";

/// VMCOREINFO look-alike pages tried at most (a guest may plant some).
pub const MAX_CANDIDATES: usize = 8;

/// The VMCOREINFO pages in `mem` that could place the kernel, in address order.
pub fn candidates<M: PhysicalMemory + ?Sized>(mem: &M) -> Result<Vec<VmcoreInfo>> {
    let found = find_all_in_memory(mem, MAX_CANDIDATES);
    if found.is_empty() {
        return Err(no_image(format!(
            "no VMCOREINFO page in guest memory, so the kernel image cannot be placed: {OTHER_PATHS}"
        )));
    }
    Ok(found.into_iter().map(|(_, v)| v).collect())
}

/// Read the kernel image where `info` places it.
pub fn kernel_image<M: PhysicalMemory + ?Sized>(mem: &M, info: VmcoreInfo) -> Result<MemoryImage> {
    let virt_shift = info
        .kernel_offset()
        .ok_or_else(|| no_image("VMCOREINFO has no KERNELOFFSET".into()))?;
    let phys_base = info.number("phys_base").ok_or_else(|| {
        no_image(format!(
            "VMCOREINFO has no NUMBER(phys_base): {OTHER_PATHS}"
        ))
    })?;
    let text_va = LINK_TEXT.wrapping_add(virt_shift);
    let text_pa = LINK_PHYS
        .wrapping_add(phys_base as u64)
        .wrapping_add(virt_shift);
    // the image is physically contiguous from _text: read it up to the end of its RAM
    // range (or IMAGE_BYTES)
    let range = mem
        .ranges()
        .iter()
        .find(|r| r.start.0 <= text_pa && text_pa < r.end.0)
        .ok_or_else(|| {
            no_image(format!(
                "VMCOREINFO places _text at physical {text_pa:#x}, which the memory source does not hold"
            ))
        })?;
    let len = (range.end.0 - text_pa).min(IMAGE_BYTES) as usize;
    let mut data = vec![0u8; len];
    mem.read_phys(Pa(text_pa), &mut data)
        .map_err(|e| no_image(format!("reading the kernel image at {text_pa:#x}: {e}")))?;
    Ok(MemoryImage {
        data,
        text_va,
        text_pa: Pa(text_pa),
        virt_shift,
        vmcoreinfo: info,
    })
}
