//! What a page-table hierarchy maps in a range of addresses: every present leaf (a 4
//! KiB, 2 MiB or 1 GiB page) with its rights combined over the walk, as [`translate`]
//! combines them for one address.
//!
//! [`translate`] answers for one address; enumerating a range with it costs a walk per
//! page and cannot skip what is not present. This walk descends only into present
//! entries. Written here rather than taken from a crate for its bounds: the tables are
//! guest memory, so the walk stops at [`WalkLimits`] (tables read, leaves kept) and
//! says so, and a table that cannot be read is listed, not fatal. Depth is the paging
//! mode's, so a table that points at itself cannot loop.
//!
//! [`translate`]: super::translate

use crate::addr::{Pa, Va};
use crate::memory::PhysicalMemory;

use super::{
    Level, PageFlags, PageSize, PageTableRoot, ADDR_MASK, PTE_GLOBAL, PTE_NX, PTE_PAGE_SIZE,
    PTE_PRESENT, PTE_USER, PTE_WRITABLE,
};

/// A present leaf entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    /// The first address it maps.
    pub va: Va,
    /// The page's size.
    pub size: PageSize,
    /// The physical address of the page in the source's numbering (a Xen PV domain's
    /// entries hold machine frames, turned back into guest-physical ones as
    /// [`translate`](super::translate) does); `None` when the frame is not the guest's.
    pub pa: Option<Pa>,
    /// Rights combined over every level.
    pub flags: PageFlags,
}

impl Leaf {
    /// One past the last address it maps.
    pub fn end(&self) -> u64 {
        self.va.0.wrapping_add(self.size.bytes())
    }
}

/// How far a walk may go.
#[derive(Debug, Clone, Copy)]
pub struct WalkLimits {
    /// Tables read, the root included.
    pub tables: usize,
    /// Leaves kept.
    pub leaves: usize,
}

impl Default for WalkLimits {
    /// 64k tables (256 MiB of tables) and a million leaves (4 GiB of 4 KiB pages).
    fn default() -> WalkLimits {
        WalkLimits {
            tables: 1 << 16,
            leaves: 1 << 20,
        }
    }
}

/// What a walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    /// The present leaves that overlap the range, in address order.
    pub leaves: Vec<Leaf>,
    /// Tables that could not be read, by the level their entries are at.
    pub unreadable: Vec<(Level, Pa)>,
    /// A limit of [`WalkLimits`] stopped the walk: what lies beyond is not listed.
    pub truncated: bool,
}

/// Every present leaf under `root` that overlaps `[start, end)`.
pub fn walk_range<M: PhysicalMemory + ?Sized>(
    mem: &M,
    root: PageTableRoot,
    start: Va,
    end: Va,
    limits: WalkLimits,
) -> Walk {
    let mut w = Walker {
        mem,
        levels: root.mode.levels(),
        va_bits: root.mode.va_bits(),
        start: start.0,
        end: end.0,
        limits,
        tables: 0,
        out: Walk::default(),
    };
    let all = PageFlags {
        writable: true,
        user: true,
        nx: false,
        global: false,
    };
    w.table(0, root.table.0 & ADDR_MASK, 0, all);
    w.out
}

struct Walker<'a, M: ?Sized> {
    mem: &'a M,
    levels: &'static [Level],
    va_bits: u32,
    start: u64,
    end: u64,
    limits: WalkLimits,
    tables: usize,
    out: Walk,
}

impl<M: PhysicalMemory + ?Sized> Walker<'_, M> {
    /// The canonical address of `raw` (bits above the paging mode's sign-extended).
    fn canonical(&self, raw: u64) -> u64 {
        let unused = 64 - self.va_bits;
        (((raw << unused) as i64) >> unused) as u64
    }

    /// Visit the table at `pa` of level `levels[depth]`, whose first entry maps `base`.
    fn table(&mut self, depth: usize, pa: u64, base: u64, flags: PageFlags) {
        let Some(&level) = self.levels.get(depth) else {
            return;
        };
        if self.tables >= self.limits.tables {
            self.out.truncated = true;
            return;
        }
        self.tables += 1;
        let mut entries = [0u8; 4096];
        if self.mem.read_phys(Pa(pa), &mut entries).is_err() {
            self.out.unreadable.push((level, Pa(pa)));
            return;
        }
        let span = 1u64 << level.shift();
        for (i, e) in entries.chunks_exact(8).enumerate() {
            let raw = base | ((i as u64) << level.shift());
            let va = self.canonical(raw);
            // the entries that overlap [start, end)
            let last = va.wrapping_add(span - 1);
            if last < self.start || va >= self.end {
                continue;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(e);
            let entry = u64::from_le_bytes(b);
            if entry & PTE_PRESENT == 0 {
                continue;
            }
            let f = PageFlags {
                writable: flags.writable && entry & PTE_WRITABLE != 0,
                user: flags.user && entry & PTE_USER != 0,
                nx: flags.nx || entry & PTE_NX != 0,
                global: entry & PTE_GLOBAL != 0,
            };
            let size = match level {
                Level::Pt => Some(PageSize::Size4K),
                Level::Pd if entry & PTE_PAGE_SIZE != 0 => Some(PageSize::Size2M),
                Level::Pdpt if entry & PTE_PAGE_SIZE != 0 => Some(PageSize::Size1G),
                // a large page at the top levels is reserved: nothing is mapped
                Level::Pml4 | Level::Pml5 if entry & PTE_PAGE_SIZE != 0 => continue,
                _ => None,
            };
            match size {
                Some(size) => {
                    if self.out.leaves.len() >= self.limits.leaves {
                        self.out.truncated = true;
                        return;
                    }
                    let start = entry & size.addr_mask();
                    // the first 4 KiB frame in the source's numbering (large pages are
                    // contiguous in both)
                    let pa = self.mem.table_frame(start & ADDR_MASK);
                    self.out.leaves.push(Leaf {
                        va: Va(va),
                        size,
                        pa,
                        flags: f,
                    });
                }
                None => {
                    let Some(next) = self.mem.table_frame(entry & ADDR_MASK) else {
                        self.out.unreadable.push((level, Pa(entry & ADDR_MASK)));
                        continue;
                    };
                    self.table(depth + 1, next.0 & ADDR_MASK, raw, f);
                    if self.out.truncated {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::{PageTableBuilder, PagingMode};
    use crate::memory::{MockMemory, PhysRange};

    #[test]
    fn leaves_of_a_range_with_their_combined_rights() {
        let mut mem = MockMemory::new(&[PhysRange::new(0, 0x200_0000)]);
        let tables = PhysRange::new(0x10_0000, 0x20_0000);
        let mut b = PageTableBuilder::new(&mut mem, PagingMode::FourLevel, tables).unwrap();
        let text = 0xffff_ffff_8100_0000u64;
        let module = 0xffff_ffff_c000_2000u64;
        b.map(&mut mem, Va(text), Pa(0x100_0000), PageSize::Size2M, 0)
            .unwrap();
        b.map(
            &mut mem,
            Va(module),
            Pa(0x30_0000),
            PageSize::Size4K,
            PTE_WRITABLE,
        )
        .unwrap();
        b.map(
            &mut mem,
            Va(module + 0x1000),
            Pa(0x30_1000),
            PageSize::Size4K,
            PTE_WRITABLE | PTE_NX,
        )
        .unwrap();
        let root = b.root();
        let all = walk_range(
            &mem,
            root,
            Va(0xffff_ffff_8000_0000),
            Va(0xffff_ffff_ff00_0000),
            WalkLimits::default(),
        );
        assert!(!all.truncated && all.unreadable.is_empty(), "{all:?}");
        let got: Vec<(u64, PageSize, u64, bool, bool)> = all
            .leaves
            .iter()
            .map(|l| {
                (
                    l.va.0,
                    l.size,
                    l.pa.unwrap().0,
                    l.flags.writable,
                    l.flags.nx,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (text, PageSize::Size2M, 0x100_0000, false, false),
                (module, PageSize::Size4K, 0x30_0000, true, false),
                (module + 0x1000, PageSize::Size4K, 0x30_1000, true, true),
            ]
        );
        // only what overlaps the range
        let one = walk_range(
            &mem,
            root,
            Va(module + 0x1800),
            Va(module + 0x1801),
            WalkLimits::default(),
        );
        assert_eq!(one.leaves.len(), 1);
        assert_eq!(one.leaves[0].va.0, module + 0x1000);
        // the limits stop the walk and say so
        let few = walk_range(
            &mem,
            root,
            Va(0xffff_ffff_8000_0000),
            Va(0xffff_ffff_ff00_0000),
            WalkLimits {
                tables: 1_000,
                leaves: 2,
            },
        );
        assert!(few.truncated);
        assert_eq!(few.leaves.len(), 2);
    }

    #[test]
    fn a_table_pointing_at_itself_ends() {
        // every PML4 entry points at the PML4 itself: the walk ends at the mode's depth
        let mut mem = MockMemory::new(&[PhysRange::new(0, 0x20_0000)]);
        let root = Pa(0x10_0000);
        for i in 0..512 {
            mem.write_u64(Pa(root.0 + i * 8), root.0 | PTE_PRESENT | PTE_WRITABLE)
                .unwrap();
        }
        let root = PageTableRoot {
            table: root,
            mode: PagingMode::FourLevel,
        };
        let w = walk_range(
            &mem,
            root,
            Va(0xffff_ffff_ff00_0000),
            Va(0xffff_ffff_ff20_0000),
            WalkLimits::default(),
        );
        // PML4 -> PDPT -> PD -> PT, each the same page: the PT's entries are 4 KiB leaves
        assert!(!w.truncated);
        assert_eq!(w.leaves.len(), 512);
    }
}
