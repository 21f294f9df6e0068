//! Finding a Linux kernel in guest memory, and reading its objects.
//!
//! - [`ProfileSet`] loads a directory of profiles and identifies which one the guest runs
//!   by probing for its banner where the kernel image can be (see [`profiles`]).
//! - [`Kernel::discover`] computes the physical and virtual KASLR shifts and the kernel
//!   page-table root **without help from the guest**: the physical shift from where the
//!   banner is; the root is `init_top_pgt` (also called `swapper_pg_dir`), whose physical
//!   address follows from the physical shift alone; the virtual shift is the one 2 MiB
//!   aligned shift under which that page table maps `linux_banner` onto the banner found.
//!   vCPU registers (live guests, ELF dumps) only choose the paging mode (CR4.LA57) and
//!   VMCOREINFO's `KERNELOFFSET` is tried first, but neither is trusted: a CR3 caught while
//!   a user process runs (with KPTI, the user half of its page table, which does not map
//!   the kernel) changes nothing.
//! - [`Kernel`] then reads typed objects driven by the profile's offsets ([`Layout`]):
//!   processes and threads ([`Kernel::processes`]), modules ([`Kernel::modules`]).
//!
//! Guest memory is hostile: every list walk is bounded, detects cycles and checks that
//! pointers are kernel addresses; strings have a maximum length; errors carry the address.

pub mod bpf;
pub mod candidates;
pub mod cbpf;
pub mod census;
pub mod cpus;
pub mod cpustate;
pub mod creds;
pub mod declare;
mod error;
pub mod files;
pub mod ftrace;
pub mod idt;
pub mod iouring;
pub mod kallsyms;
pub mod kobject;
pub mod kprobes;
pub mod kthread;
pub mod layout;
pub mod modmem;
pub mod modtree;
pub mod netfilter;
pub mod notifiers;
pub mod objects;
pub mod openfiles;
pub mod pagecache;
pub mod perf;
pub mod pidns;
pub mod procmem;
pub mod procnet;
pub mod profiles;
pub mod ptrace;
pub mod runqueue;
pub mod salvage;
pub mod sockets;
pub mod syscalls;
pub mod tracepoints;
pub mod tty;
pub mod userspace;
pub mod vfs;
pub mod vma;

use std::sync::Arc;

pub use census::{Census, Views};
pub use error::KernelError;
pub use layout::Layout;
pub use objects::{Limits, Module, Process, Thread};
pub use profiles::{Identified, ProfileSet};
pub use salvage::{ListBreak, Salvaged};

use crate::addr::{Pa, Va};
use crate::arch::x86_64::{
    translate, AddressSpace, PageTableRoot, PagingMode, Registers, TranslationLog,
};
use crate::memory::{PhysicalMemory, VirtualMemory};
use crate::profile::Profile;
use crate::vmcoreinfo::VmcoreInfo;

/// The symbols [`Kernel::discover`] and [`ProfileSet`] use: the banner, the kernel
/// page-table root (`ROOT_SYMBOLS`) and the first task.
pub const NEEDS: crate::profile::needs::Declaration = crate::declaration!(
    "discover";
    fields [];
    symbols [["linux_banner"], ["init_top_pgt", "swapper_pg_dir"], ["init_task"]]
);

/// `__START_KERNEL_map`: where x86-64 maps the kernel image (before the KASLR shift).
pub const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// `CONFIG_PHYSICAL_ALIGN` of distribution kernels: both KASLR shifts are multiples.
pub const KASLR_ALIGN: u64 = 0x20_0000;
/// `KERNEL_IMAGE_SIZE` with KASLR: the virtual shift stays below it.
pub const KERNEL_IMAGE_SIZE: u64 = 1 << 30;

/// What the memory source can tell beyond memory, used as hints only.
#[derive(Debug, Clone, Default)]
pub struct Hints {
    /// Registers of one vCPU (for the paging mode).
    pub registers: Option<Registers>,
    /// The VMCOREINFO note of an ELF dump (for `KERNELOFFSET`).
    pub vmcoreinfo: Option<VmcoreInfo>,
}

/// Where the kernel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Physical address of `linux_banner`.
    pub banner_pa: Pa,
    /// Physical KASLR shift: load address minus the compile-time one.
    pub phys_shift: u64,
    /// Virtual KASLR shift: add it to a profile (System.map) address.
    pub virt_shift: u64,
    /// The kernel's own page table (`init_top_pgt`).
    pub root: PageTableRoot,
}

/// A Linux kernel found in guest memory, with its profile.
#[derive(Debug)]
pub struct Kernel<M> {
    space: AddressSpace<M>,
    profile: Arc<Profile>,
    layout: Layout,
    placement: Placement,
}

/// `init_top_pgt`, or its other name.
const ROOT_SYMBOLS: [&str; 2] = ["init_top_pgt", "swapper_pg_dir"];

impl<M: PhysicalMemory> Kernel<M> {
    /// Find the kernel described by `profile` in `mem` (its banner is probed for at every
    /// possible physical shift).
    pub fn discover(
        mem: M,
        profile: Arc<Profile>,
        hints: &Hints,
    ) -> Result<Kernel<M>, KernelError> {
        let banner_pa = profiles::probe_banner(&mem, &profile).ok_or_else(|| {
            let found = scan_banners(&mem, 4);
            if found.is_empty() {
                return KernelError::NoBanner;
            }
            KernelError::NoProfile {
                banners: found.iter().map(|(_, b)| escape(b)).collect(),
                closest: vec![escape(profile.kernel.banner.trim_end().as_bytes())],
            }
        })?;
        Self::discover_at(mem, profile, banner_pa, hints)
    }

    /// [`Kernel::discover`] with the banner's physical address already known (from
    /// [`ProfileSet::identify`]).
    pub fn discover_at(
        mem: M,
        profile: Arc<Profile>,
        banner_pa: Pa,
        hints: &Hints,
    ) -> Result<Kernel<M>, KernelError> {
        let layout = Layout::from_profile(&profile)?;
        let placement = place(&mem, &profile, banner_pa, hints)?;
        let kernel = Kernel {
            space: AddressSpace::new(mem, placement.root),
            profile,
            layout,
            placement,
        };
        kernel.check_init_task()?;
        Ok(kernel)
    }

    /// init_task must be pid 0 named `swapper...`: a last check that shifts and offsets
    /// fit this guest.
    fn check_init_task(&self) -> Result<(), KernelError> {
        let init = self.symbol("init_task")?;
        let comm = self.read_bytes_at(init, self.layout.task_comm, 16, "init_task.comm")?;
        let pid = self.read_u32_at(init, self.layout.task_pid, "init_task.pid")?;
        if pid != 0 || !comm.starts_with(b"swapper") {
            return Err(KernelError::Inconsistent {
                banner_pa: self.placement.banner_pa,
                what: format!(
                    "init_task (pid {pid}, comm {}) is not the idle task: the profile's offsets do not fit this kernel",
                    escape(comm.split(|&b| b == 0).next().unwrap_or_default())
                ),
            });
        }
        Ok(())
    }

    /// The profile.
    pub fn profile(&self) -> &Arc<Profile> {
        &self.profile
    }

    /// The resolved offsets.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Where the kernel is.
    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// The kernel's virtual address space.
    pub fn space(&self) -> &AddressSpace<M> {
        &self.space
    }

    /// Forget cached translations (call after a live guest ran).
    pub fn invalidate(&self) {
        self.space.invalidate();
    }

    /// Forget cached translations only (the memory source keeps what it keeps): what
    /// is read next walks the page tables, so a [`Recording`](crate::memory::Recording)
    /// sees every page-table entry the reads depend on.
    pub fn flush_translations(&self) {
        self.space.flush_translations();
    }

    /// Log the kernel address space's translations from now
    /// ([`AddressSpace::start_translation_log`]).
    pub fn start_translation_log(&self) {
        self.space.start_translation_log();
    }

    /// The translations used since [`Kernel::start_translation_log`].
    pub fn finish_translation_log(&self) -> Option<TranslationLog> {
        self.space.finish_translation_log()
    }

    /// True when the kernel's pages in `log` translate as they did.
    pub fn same_translations(&self, log: &TranslationLog) -> bool {
        self.space.same_translations(log)
    }

    /// The run-time (relocated) address of a profile symbol.
    pub fn symbol(&self, name: &'static str) -> Result<Va, KernelError> {
        self.profile
            .symbol(name)
            .map(|a| Va(a.wrapping_add(self.placement.virt_shift)))
            .ok_or(KernelError::MissingSymbol(name))
    }

    fn read_u32_at(&self, base: Va, off: u64, what: &'static str) -> Result<u32, KernelError> {
        self.space
            .read_u32(Va(base.0.wrapping_add(off)))
            .map_err(|source| KernelError::Read { what, source })
    }

    fn read_bytes_at(
        &self,
        base: Va,
        off: u64,
        len: usize,
        what: &'static str,
    ) -> Result<Vec<u8>, KernelError> {
        self.space
            .read_bytes(Va(base.0.wrapping_add(off)), len)
            .map_err(|source| KernelError::Read { what, source })
    }
}

/// Compute the shifts and the kernel page-table root.
fn place<M: PhysicalMemory + ?Sized>(
    mem: &M,
    profile: &Profile,
    banner_pa: Pa,
    hints: &Hints,
) -> Result<Placement, KernelError> {
    let banner_va = profile
        .symbol("linux_banner")
        .ok_or(KernelError::MissingSymbol("linux_banner"))?;
    let inconsistent = |what: String| KernelError::Inconsistent { banner_pa, what };
    let image_offset = banner_va
        .checked_sub(START_KERNEL_MAP)
        .ok_or_else(|| inconsistent("linux_banner is not in the kernel image mapping".into()))?;
    let phys_shift = banner_pa
        .0
        .checked_sub(image_offset)
        .filter(|s| s % KASLR_ALIGN == 0)
        .ok_or_else(|| {
            inconsistent(format!(
                "it is not at a 2 MiB aligned shift of its place in the image ({image_offset:#x})"
            ))
        })?;
    let (root_name, root_va) = ROOT_SYMBOLS
        .iter()
        .find_map(|n| profile.symbol(n).map(|a| (*n, a)))
        .ok_or(KernelError::MissingSymbol("init_top_pgt"))?;
    let root_pa = root_va
        .checked_sub(START_KERNEL_MAP)
        .and_then(|o| o.checked_add(phys_shift))
        .map(Pa)
        .ok_or_else(|| inconsistent(format!("{root_name} is not in the kernel image mapping")))?;

    let modes: Vec<PagingMode> = match hints.registers.as_ref().and_then(|r| r.paging_mode()) {
        Some(m) => vec![m],
        None => vec![PagingMode::FourLevel, PagingMode::FiveLevel],
    };
    let mut shifts: Vec<u64> = Vec::with_capacity(513);
    if let Some(k) = hints.vmcoreinfo.as_ref().and_then(|v| v.kernel_offset()) {
        shifts.push(k);
    }
    shifts.extend((0..KERNEL_IMAGE_SIZE / KASLR_ALIGN).map(|k| k * KASLR_ALIGN));
    for mode in modes {
        let root = PageTableRoot {
            table: root_pa,
            mode,
        };
        for &shift in &shifts {
            let va = Va(banner_va.wrapping_add(shift));
            if let Ok(t) = translate(mem, root, va) {
                if t.pa == banner_pa {
                    return Ok(Placement {
                        banner_pa,
                        phys_shift,
                        virt_shift: shift,
                        root,
                    });
                }
            }
        }
    }
    Err(KernelError::NoVirtualShift {
        banner_pa,
        root: root_pa,
    })
}

/// Distinct banners (`Linux version ` up to the end of line, at most 512 bytes,
/// printable) found in `mem`, at most `max`, by a scan of every range (used only to
/// report what a guest runs when no profile matches). The kernel's own banner is in
/// memory more than once (`linux_banner`, the boot log), stray variants (e.g. the boot
/// decompressor's) once: the most frequent comes first.
pub fn scan_banners<M: PhysicalMemory + ?Sized>(mem: &M, max: usize) -> Vec<(Pa, Vec<u8>)> {
    const NEEDLE: &[u8] = b"Linux version ";
    const CHUNK: u64 = 4 << 20;
    const TAIL: u64 = 512;
    let finder = memchr::memmem::Finder::new(NEEDLE);
    let mut out: Vec<(Pa, Vec<u8>, usize)> = Vec::new();
    let mut buf = vec![0u8; (CHUNK + TAIL) as usize];
    for range in mem.ranges() {
        let mut at = range.start.0;
        while at < range.end.0 {
            let len = (range.end.0 - at).min(CHUNK + TAIL) as usize;
            let chunk = &mut buf[..len];
            if mem.read_phys(Pa(at), chunk).is_ok() {
                for pos in finder.find_iter(chunk) {
                    if pos as u64 >= CHUNK {
                        break; // the next chunk sees it
                    }
                    let text = &chunk[pos..(pos + TAIL as usize).min(chunk.len())];
                    let end = text
                        .iter()
                        .position(|&b| b == b'\n' || b == 0)
                        .unwrap_or(text.len());
                    let line = &text[..end];
                    if line.len() > NEEDLE.len() + 8
                        && line.iter().all(|&b| (0x20..0x7f).contains(&b))
                    {
                        let full = out.len() >= max;
                        match out.iter_mut().find(|(_, b, _)| b.as_slice() == line) {
                            Some(seen) => seen.2 += 1,
                            None if !full => out.push((Pa(at + pos as u64), line.to_vec(), 1)),
                            None => {}
                        }
                    }
                }
            }
            at += CHUNK;
        }
    }
    out.sort_by_key(|b| std::cmp::Reverse(b.2));
    out.into_iter().map(|(pa, b, _)| (pa, b)).collect()
}

/// Guest bytes made safe for a terminal: printable ASCII kept, everything else `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_keeps_printable_ascii_only() {
        assert_eq!(escape(b"bash"), "bash");
        assert_eq!(escape(b"a\x1b[31mb\n\\"), "a\\x1b[31mb\\x0a\\\\");
        assert_eq!(escape("é".as_bytes()), "\\xc3\\xa9");
    }
}
