//! x86-64 long-mode paging: 4-level and 5-level (CR4.LA57) walks with 4 KiB, 2 MiB and
//! 1 GiB pages, and the vCPU register set the sources report.
//!
//! - [`translate`] walks the page tables of one [`PageTableRoot`] for one address. It
//!   reads at most one entry per level (four or five reads), so a hostile guest's
//!   tables cannot make it loop; every failure is a typed [`TranslateError`] naming the
//!   level and the entry.
//! - [`AddressSpace`] is a guest-virtual view over any
//!   [`PhysicalMemory`]: reads that cross pages, a bounded
//!   TLB-like translation cache with explicit invalidation.
//! - [`Registers`] is what a [`VcpuRegisters`](crate::memory::VcpuRegisters) source
//!   reports; [`Registers::page_table_root`] turns CR0/CR3/CR4/EFER into a root.
//! - [`PageTableBuilder`] writes real page tables into a
//!   [`MockMemory`](crate::memory::MockMemory) for tests.
//!
//! The frames entries name go through the source's
//! [`PhysicalMemory::table_frame`] (identity but for Xen PV domains, whose entries hold
//! machine frames), so a walk only ever sees guest-physical addresses.
//!
//! Physical addresses are taken as 52 bits wide (the architectural maximum): bits 51:12
//! of CR3 and of every entry hold the address; the PCID or PWT/PCD bits (11:0) and bit
//! 63 of CR3, and the NX, protection-key and software bits (63:52) of entries, are
//! masked off.

mod builder;
mod space;
mod walk;

pub use builder::{MapError, PageTableBuilder};
pub use space::{AddressSpace, TlbStats, TranslationLog, MAX_LOGGED_TRANSLATIONS};
pub use walk::{walk_range, Leaf, Walk, WalkLimits};

use std::fmt;

use crate::addr::{Pa, Va};
use crate::error::{Error, TranslateError};
use crate::memory::PhysicalMemory;

/// Bits 51:12: the address in CR3 and in table and 4 KiB page entries.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Bits 51:21: the address in a 2 MiB page entry.
pub const ADDR_MASK_2M: u64 = 0x000f_ffff_ffe0_0000;
/// Bits 51:30: the address in a 1 GiB page entry.
pub const ADDR_MASK_1G: u64 = 0x000f_ffff_c000_0000;

/// Entry bit: present.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Entry bit: writable.
pub const PTE_WRITABLE: u64 = 1 << 1;
/// Entry bit: user-accessible.
pub const PTE_USER: u64 = 1 << 2;
/// Entry bit: accessed.
pub const PTE_ACCESSED: u64 = 1 << 5;
/// Entry bit: dirty (leaf entries).
pub const PTE_DIRTY: u64 = 1 << 6;
/// Entry bit: page size (a leaf in a PDPT or PD entry).
pub const PTE_PAGE_SIZE: u64 = 1 << 7;
/// Entry bit: global (leaf entries).
pub const PTE_GLOBAL: u64 = 1 << 8;
/// Entry bit: execute-disable.
pub const PTE_NX: u64 = 1 << 63;

/// CR0.PG: paging enabled.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE: physical address extension (required for long mode).
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.LA57: 5-level paging.
pub const CR4_LA57: u64 = 1 << 12;
/// CR4.PCIDE: process-context identifiers in CR3 bits 11:0.
pub const CR4_PCIDE: u64 = 1 << 17;
/// EFER.LMA: long mode active.
pub const EFER_LMA: u64 = 1 << 10;

/// 4-level or 5-level paging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PagingMode {
    /// 48-bit virtual addresses, PML4 → PDPT → PD → PT.
    FourLevel,
    /// 57-bit virtual addresses (CR4.LA57), PML5 first.
    FiveLevel,
}

impl PagingMode {
    /// The levels walked, top first.
    pub fn levels(self) -> &'static [Level] {
        match self {
            PagingMode::FourLevel => &[Level::Pml4, Level::Pdpt, Level::Pd, Level::Pt],
            PagingMode::FiveLevel => &[Level::Pml5, Level::Pml4, Level::Pdpt, Level::Pd, Level::Pt],
        }
    }

    /// Virtual address bits (48 or 57).
    pub fn va_bits(self) -> u32 {
        match self {
            PagingMode::FourLevel => 48,
            PagingMode::FiveLevel => 57,
        }
    }

    /// True when `va`'s bits above the implemented ones copy the top implemented bit.
    pub fn is_canonical(self, va: Va) -> bool {
        let unused = 64 - self.va_bits();
        (((va.0 << unused) as i64) >> unused) as u64 == va.0
    }
}

impl fmt::Display for PagingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PagingMode::FourLevel => "4-level",
            PagingMode::FiveLevel => "5-level",
        })
    }
}

/// A paging-structure level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Page table (4 KiB pages), VA bits 20:12.
    Pt,
    /// Page directory (2 MiB pages or page tables), VA bits 29:21.
    Pd,
    /// Page-directory-pointer table (1 GiB pages or directories), VA bits 38:30.
    Pdpt,
    /// PML4, VA bits 47:39.
    Pml4,
    /// PML5 (5-level paging only), VA bits 56:48.
    Pml5,
}

impl Level {
    /// The lowest VA bit this level indexes with.
    pub fn shift(self) -> u32 {
        match self {
            Level::Pt => 12,
            Level::Pd => 21,
            Level::Pdpt => 30,
            Level::Pml4 => 39,
            Level::Pml5 => 48,
        }
    }

    /// The entry index `va` selects at this level.
    pub fn index(self, va: Va) -> u64 {
        (va.0 >> self.shift()) & 0x1ff
    }

    /// 1 for the page table up to 5 for the PML5.
    pub fn number(self) -> u8 {
        match self {
            Level::Pt => 1,
            Level::Pd => 2,
            Level::Pdpt => 3,
            Level::Pml4 => 4,
            Level::Pml5 => 5,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Pt => "PT",
            Level::Pd => "PD",
            Level::Pdpt => "PDPT",
            Level::Pml4 => "PML4",
            Level::Pml5 => "PML5",
        })
    }
}

/// The size of a mapped page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PageSize {
    /// 4 KiB, mapped by a PT entry.
    Size4K,
    /// 2 MiB, mapped by a PD entry.
    Size2M,
    /// 1 GiB, mapped by a PDPT entry.
    Size1G,
}

impl PageSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => 1 << 12,
            PageSize::Size2M => 1 << 21,
            PageSize::Size1G => 1 << 30,
        }
    }

    /// The level whose entry maps a page of this size.
    pub const fn level(self) -> Level {
        match self {
            PageSize::Size4K => Level::Pt,
            PageSize::Size2M => Level::Pd,
            PageSize::Size1G => Level::Pdpt,
        }
    }

    /// The entry bits that hold a page of this size's address.
    pub const fn addr_mask(self) -> u64 {
        match self {
            PageSize::Size4K => ADDR_MASK,
            PageSize::Size2M => ADDR_MASK_2M,
            PageSize::Size1G => ADDR_MASK_1G,
        }
    }
}

/// Access rights of a translation, combined over every level of the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PageFlags {
    /// Every level allows writes.
    pub writable: bool,
    /// Every level allows user-mode access.
    pub user: bool,
    /// Some level forbids execution (effective only with EFER.NXE).
    pub nx: bool,
    /// The leaf is global.
    pub global: bool,
}

/// A successful translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Translation {
    /// The physical address of the translated byte.
    pub pa: Pa,
    /// The page that maps it.
    pub size: PageSize,
    /// Combined access rights.
    pub flags: PageFlags,
}

impl Translation {
    /// The physical address of the start of the mapped page.
    pub fn page_pa(&self) -> Pa {
        Pa(self.pa.0 & !(self.size.bytes() - 1))
    }
}

/// The top of a page-table hierarchy: the table CR3 points to and the paging mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageTableRoot {
    /// Physical address of the PML4 (or PML5) table.
    pub table: Pa,
    /// 4- or 5-level paging.
    pub mode: PagingMode,
}

impl PageTableRoot {
    /// The root CR3 points to: bits 51:12 (the PCID or PWT/PCD in bits 11:0, bit 63 and
    /// the reserved bits are dropped).
    pub fn from_cr3(cr3: u64, mode: PagingMode) -> PageTableRoot {
        PageTableRoot {
            table: Pa(cr3 & ADDR_MASK),
            mode,
        }
    }
}

/// Translate `va` by walking the tables under `root` in `mem`.
///
/// Reads one 8-byte entry per level; never loops.
pub fn translate<M: PhysicalMemory + ?Sized>(
    mem: &M,
    root: PageTableRoot,
    va: Va,
) -> Result<Translation, TranslateError> {
    if !root.mode.is_canonical(va) {
        return Err(TranslateError::NonCanonical {
            va,
            mode: root.mode,
        });
    }
    let mut table = root.table.0 & ADDR_MASK;
    let mut flags = PageFlags {
        writable: true,
        user: true,
        nx: false,
        global: false,
    };
    for &level in root.mode.levels() {
        // `table` has bits 51:12 only and the index is at most 511: no overflow
        let entry_pa = Pa(table + level.index(va) * 8);
        let entry =
            mem.read_phys_u64(entry_pa)
                .map_err(|cause| TranslateError::TableUnreadable {
                    va,
                    level,
                    entry_pa,
                    cause,
                })?;
        if entry & PTE_PRESENT == 0 {
            return Err(TranslateError::NotPresent {
                va,
                level,
                entry,
                entry_pa,
            });
        }
        flags.writable &= entry & PTE_WRITABLE != 0;
        flags.user &= entry & PTE_USER != 0;
        flags.nx |= entry & PTE_NX != 0;
        let size = match level {
            Level::Pt => Some(PageSize::Size4K),
            Level::Pd if entry & PTE_PAGE_SIZE != 0 => Some(PageSize::Size2M),
            Level::Pdpt if entry & PTE_PAGE_SIZE != 0 => Some(PageSize::Size1G),
            Level::Pml4 | Level::Pml5 if entry & PTE_PAGE_SIZE != 0 => {
                return Err(TranslateError::Reserved {
                    va,
                    level,
                    entry,
                    entry_pa,
                })
            }
            _ => None,
        };
        let foreign = TranslateError::ForeignFrame {
            va,
            level,
            entry,
            entry_pa,
        };
        match size {
            Some(size) => {
                flags.global = entry & PTE_GLOBAL != 0;
                // the 4 KiB frame of the byte, as the source numbers it
                let at = (entry & size.addr_mask()) | (va.0 & (size.bytes() - 1));
                let frame = mem.table_frame(at & ADDR_MASK).ok_or(foreign)?;
                return Ok(Translation {
                    pa: Pa(frame.0 | (at & 0xfff)),
                    size,
                    flags,
                });
            }
            None => table = mem.table_frame(entry & ADDR_MASK).ok_or(foreign)?.0 & ADDR_MASK,
        }
    }
    // Every mode's last level is the PT, which always returns above; a walk that gets
    // here found no leaf, which is "not present" at the PT in all but name.
    Err(TranslateError::NotPresent {
        va,
        level: Level::Pt,
        entry: 0,
        entry_pa: Pa(table),
    })
}

/// A segment register as the sources report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Segment {
    /// The selector.
    pub selector: u16,
    /// The base address (meaningful for FS and GS in long mode).
    pub base: u64,
    /// The limit.
    pub limit: u32,
    /// QEMU's descriptor flags (attribute bits 8..23 of the descriptor's high word);
    /// 0 when the source does not report them.
    pub flags: u32,
}

/// A descriptor-table register (GDTR, IDTR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DescriptorTable {
    /// Linear base address.
    pub base: u64,
    /// Limit.
    pub limit: u32,
}

/// The registers of one vCPU.
///
/// `#[non_exhaustive]`: a source outside this crate starts from
/// `Registers::default()` and sets the fields it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Registers {
    /// RAX.
    pub rax: u64,
    /// RBX.
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// RSP.
    pub rsp: u64,
    /// RBP.
    pub rbp: u64,
    /// R8 to R15.
    pub r: [u64; 8],
    /// RIP.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// CR0.
    pub cr0: u64,
    /// CR2.
    pub cr2: u64,
    /// CR3 as the vCPU holds it (PCID bits included).
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// IA32_EFER, when the source reports it (QEMU's ELF notes do not).
    pub efer: Option<u64>,
    /// CS.
    pub cs: Segment,
    /// SS.
    pub ss: Segment,
    /// DS.
    pub ds: Segment,
    /// ES.
    pub es: Segment,
    /// FS (its base is the FS base).
    pub fs: Segment,
    /// GS (its base is the GS base: the per-CPU area while in the kernel).
    pub gs: Segment,
    /// IA32_KERNEL_GS_BASE (the value `swapgs` exchanges), when reported.
    pub kernel_gs_base: Option<u64>,
    /// GDTR.
    pub gdt: DescriptorTable,
    /// IDTR.
    pub idt: DescriptorTable,
    /// IA32_LSTAR (the 64-bit `syscall` entry), when the source reports it (Xen's HVM
    /// context does; QEMU's monitor and ELF notes do not).
    pub lstar: Option<u64>,
    /// IA32_CSTAR (the compatibility-mode `syscall` entry), when reported.
    pub cstar: Option<u64>,
    /// IA32_SYSENTER_EIP (the `sysenter` entry), when reported.
    pub sysenter_eip: Option<u64>,
    /// A paravirtual vCPU (Xen PV): its control registers, EFER and system-call entries
    /// are the hypervisor's, and CR0, CR4 and EFER hold only the bits the guest controls
    /// plus those long mode implies.
    pub paravirtual: bool,
}

impl Registers {
    /// The current privilege level (the RPL of CS): 0 in the kernel, 3 in user mode.
    pub fn cpl(&self) -> u8 {
        (self.cs.selector & 3) as u8
    }

    /// The paging mode CR0, CR4 and EFER describe, or `None` when paging is off or not
    /// long-mode paging. Without EFER (ELF notes) long mode is assumed when CR0.PG and
    /// CR4.PAE are set.
    pub fn paging_mode(&self) -> Option<PagingMode> {
        if self.cr0 & CR0_PG == 0 || self.cr4 & CR4_PAE == 0 {
            return None;
        }
        if matches!(self.efer, Some(efer) if efer & EFER_LMA == 0) {
            return None;
        }
        Some(if self.cr4 & CR4_LA57 != 0 {
            PagingMode::FiveLevel
        } else {
            PagingMode::FourLevel
        })
    }

    /// The page-table root CR3 points to, in the mode CR4 selects.
    pub fn page_table_root(&self) -> Result<PageTableRoot, Error> {
        match self.paging_mode() {
            Some(mode) => Ok(PageTableRoot::from_cr3(self.cr3, mode)),
            None => Err(Error::UnsupportedPaging {
                cr0: self.cr0,
                cr4: self.cr4,
                efer: self
                    .efer
                    .map_or_else(|| "unknown".into(), |e| format!("{e:#x}")),
            }),
        }
    }

    /// The PCID in CR3 bits 11:0 when CR4.PCIDE is set.
    pub fn pcid(&self) -> Option<u16> {
        (self.cr4 & CR4_PCIDE != 0).then_some((self.cr3 & 0xfff) as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical() {
        let four = PagingMode::FourLevel;
        assert!(four.is_canonical(Va(0x0000_7fff_ffff_ffff)));
        assert!(!four.is_canonical(Va(0x0000_8000_0000_0000)));
        assert!(four.is_canonical(Va(0xffff_8000_0000_0000)));
        assert!(!four.is_canonical(Va(0xff7f_8000_0000_0000)));
        let five = PagingMode::FiveLevel;
        assert!(five.is_canonical(Va(0x00ff_ffff_ffff_ffff)));
        assert!(five.is_canonical(Va(0x0000_8000_0000_0000)));
        assert!(!five.is_canonical(Va(0x0100_0000_0000_0000)));
        assert!(five.is_canonical(Va(0xff00_0000_0000_0000)));
        assert!(!five.is_canonical(Va(0xfe00_0000_0000_0000)));
    }

    /// Guest-physical view of machine memory, as a Xen PV source presents it: guest
    /// frame g is machine frame g + 0x100 (frames 0..0x100), and page-table entries
    /// name machine frames.
    struct Renumbered(crate::memory::MockMemory);

    const OFFSET: u64 = 0x100;

    impl PhysicalMemory for Renumbered {
        fn read_phys(&self, pa: Pa, buf: &mut [u8]) -> Result<(), crate::PhysError> {
            if pa.0 >= OFFSET << 12 {
                return Err(crate::PhysError::Unmapped { pa });
            }
            self.0.read_phys(Pa(pa.0 + (OFFSET << 12)), buf)
        }
        fn ranges(&self) -> &[crate::memory::PhysRange] {
            &[]
        }
        fn table_frame(&self, frame: u64) -> Option<Pa> {
            let f = frame >> 12;
            (OFFSET..2 * OFFSET)
                .contains(&f)
                .then(|| Pa((f - OFFSET) << 12))
        }
    }

    #[test]
    fn entries_go_through_the_sources_frame_numbering() {
        use crate::memory::{MockMemory, PhysRange};
        let mut m = MockMemory::new(&[PhysRange::new(0, 0x40_0000)]);
        let mut b = PageTableBuilder::new(
            &mut m,
            PagingMode::FourLevel,
            PhysRange::new(0x150_000, 0x160_000),
        )
        .unwrap();
        let va = Va(0xffff_8880_0000_3000);
        b.map(&mut m, va, Pa(0x1a3_000), PageSize::Size4K, 0)
            .unwrap();
        // a frame the guest does not own (outside the renumbered window)
        b.map(
            &mut m,
            Va(va.0 + 0x1000),
            Pa(0x3a_0000),
            PageSize::Size4K,
            0,
        )
        .unwrap();
        let mem = Renumbered(m);
        let root =
            PageTableRoot::from_cr3(mem.table_frame(b.cr3()).unwrap().0, PagingMode::FourLevel);
        let t = translate(&mem, root, Va(va.0 + 0x18)).unwrap();
        assert_eq!(t.pa, Pa(0xa3_018));
        assert!(matches!(
            translate(&mem, root, Va(va.0 + 0x1000)),
            Err(TranslateError::ForeignFrame {
                level: Level::Pt,
                ..
            })
        ));
    }

    #[test]
    fn registers_paging_mode() {
        let mut r = Registers {
            cr0: 0x8005_0033,
            cr4: 0x0035_0ef0,
            cr3: 0x8000_0000_0260_a001,
            efer: Some(0xd01),
            ..Registers::default()
        };
        assert_eq!(r.paging_mode(), Some(PagingMode::FourLevel));
        let root = r.page_table_root().unwrap();
        assert_eq!(root.table, Pa(0x260_a000));
        assert_eq!(r.pcid(), None);
        r.cr4 |= CR4_PCIDE;
        assert_eq!(r.pcid(), Some(1));
        r.cr4 |= CR4_LA57;
        assert_eq!(r.paging_mode(), Some(PagingMode::FiveLevel));
        r.efer = Some(0x500 & !EFER_LMA);
        assert_eq!(r.paging_mode(), None);
        r.efer = None;
        r.cr0 = 0x11;
        assert!(matches!(
            r.page_table_root(),
            Err(Error::UnsupportedPaging { .. })
        ));
    }
}
