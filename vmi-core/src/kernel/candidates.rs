//! Every place a kernel of a profile set sits in guest memory.
//!
//! [`ProfileSet::identify`] stops at the first banner found. After a guest reboots in
//! place its RAM is not cleared, so the old kernel's image (banner, `init_task`, page
//! tables) stays next to the new one at another KASLR shift; telling them apart needs
//! every candidate ([`all_candidates`]) and a sign of which one runs (the caller's, e.g.
//! where a vCPU executes).

use crate::addr::{Pa, Va};
use crate::arch::x86_64::{translate, Registers};
use crate::kernel::objects::Limits;
use crate::kernel::profiles::probe_banner;
use crate::kernel::syscalls::in_module_area;
use crate::kernel::{Identified, Kernel, ProfileSet, KERNEL_IMAGE_SIZE, START_KERNEL_MAP};
use crate::memory::{PhysRange, PhysicalMemory};

/// Most candidates returned (each costs a kernel discovery to check).
pub const MAX_CANDIDATES: usize = 16;

/// `mem` seen from `from` upwards (ranges below it hidden).
struct Above<'a, M: ?Sized> {
    mem: &'a M,
    ranges: Vec<PhysRange>,
}

impl<'a, M: PhysicalMemory + ?Sized> Above<'a, M> {
    fn new(mem: &'a M, from: Pa) -> Self {
        let ranges = mem
            .ranges()
            .iter()
            .filter(|r| r.end > from)
            .map(|r| PhysRange {
                start: r.start.max(from),
                end: r.end,
            })
            .collect();
        Above { mem, ranges }
    }
}

impl<M: PhysicalMemory + ?Sized> PhysicalMemory for Above<'_, M> {
    fn read_phys(&self, pa: Pa, buf: &mut [u8]) -> Result<(), crate::PhysError> {
        self.mem.read_phys(pa, buf)
    }

    fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }

    fn table_frame(&self, frame: u64) -> Option<Pa> {
        self.mem.table_frame(frame)
    }
}

/// Every (profile, banner position) of `set` in `mem`, in profile order then address
/// order, at most [`MAX_CANDIDATES`].
pub fn all_candidates<M: PhysicalMemory + ?Sized>(set: &ProfileSet, mem: &M) -> Vec<Identified> {
    let mut out = Vec::new();
    for (path, profile) in set.iter() {
        let mut from = Pa(0);
        while out.len() < MAX_CANDIDATES {
            let Some(pa) = probe_banner(&Above::new(mem, from), profile) else {
                break;
            };
            out.push(Identified {
                profile: profile.clone(),
                path: path.to_path_buf(),
                banner_pa: pa,
            });
            from = Pa(pa.0 + 1);
        }
    }
    out
}

/// Whether a vCPU executes the kernel a [`Kernel`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executing {
    /// Its instruction pointer is in this kernel's text, mapped to this kernel's
    /// physical copy by the vCPU's own page table.
    This,
    /// It runs something else: paging is off (firmware, a kernel booting), it runs in
    /// ring 0 below the kernel half (boot code: Linux never executes there in ring 0
    /// once up), or it executes another kernel image (one loaded at another KASLR shift
    /// or physical place after a reboot).
    Other,
    /// Cannot tell from this sample (user mode, modules, trampolines).
    Unknown,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// Whether the vCPU whose registers are `regs` executes this kernel.
    pub fn executing(&self, regs: &Registers) -> Executing {
        let Ok(root) = regs.page_table_root() else {
            return Executing::Other;
        };
        if regs.cpl() != 0 {
            return Executing::Unknown;
        }
        let rip = Va(regs.rip);
        if rip.0 < 0xff00_0000_0000_0000 {
            return Executing::Other;
        }
        let text = match self.text_range() {
            Ok(t) => t,
            Err(_) => return Executing::Unknown,
        };
        let image = START_KERNEL_MAP..START_KERNEL_MAP + KERNEL_IMAGE_SIZE;
        if !text.contains(rip) && (!image.contains(&rip.0) || in_module_area(rip)) {
            return Executing::Unknown;
        }
        // in the text, or elsewhere in the kernel image: this kernel's `.init.text` while
        // it boots (outside `_stext.._etext`), or another kernel's image. Either way it is
        // this kernel only when the vCPU's page table maps the instruction to this
        // kernel's physical copy: a kernel loaded at another shift maps it elsewhere, and
        // this kernel's init text is unmapped once it has booted.
        let mem = self.space.memory();
        match (
            translate(mem, root, rip),
            translate(mem, self.placement.root, rip),
        ) {
            (Ok(live), Ok(ours)) if live.pa == ours.pa => Executing::This,
            (Ok(_), _) => Executing::Other,
            (Err(_), _) => Executing::Unknown,
        }
    }

    /// True once the kernel has booted: init (pid 1) has an address space, so it has
    /// exec'd its user program and every initcall has run (the modules kset, the network
    /// namespaces, ... are set up). Until its exec, pid 1 is `kernel_init`, a task
    /// without `mm` (and, since 5.x, without PF_KTHREAD). A kernel a vCPU executes can
    /// still be booting (after a reboot in place): what its objects hold then is not
    /// yet the running system.
    pub fn booted(&self, limits: &Limits) -> bool {
        self.processes(limits)
            .is_ok_and(|ps| ps.iter().any(|p| p.pid == 1 && p.mm.0 != 0))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::kernel::{KASLR_ALIGN, START_KERNEL_MAP};
    use crate::memory::MockMemory;
    use crate::profile::Profile;

    const EXAMPLE: &str = include_str!("../../../docs/profile.example.json");

    #[test]
    fn finds_every_copy_of_the_banner_at_kaslr_positions() {
        let profile = Profile::from_json(EXAMPLE).unwrap();
        let va = profile.symbol("linux_banner").unwrap();
        let off = va - START_KERNEL_MAP;
        let banner = profile.kernel.banner.clone();
        let mut mem = MockMemory::new(&[PhysRange::new(0, 0x1000_0000)]);
        // two kernels, 3 and 7 steps of 2 MiB up; a third copy off the alignment
        for shift in [3 * KASLR_ALIGN, 7 * KASLR_ALIGN] {
            mem.write(Pa(off + shift), banner.as_bytes()).unwrap();
        }
        mem.write(Pa(off + 0x1000), banner.as_bytes()).unwrap();
        let mut set = ProfileSet::new();
        set.add("p.json".into(), Arc::new(profile));
        let got: Vec<Pa> = all_candidates(&set, &mem)
            .iter()
            .map(|c| c.banner_pa)
            .collect();
        assert_eq!(
            got,
            vec![Pa(off + 3 * KASLR_ALIGN), Pa(off + 7 * KASLR_ALIGN)]
        );
    }
}
