//! Writes real x86-64 page tables into a [`MockMemory`], for tests.

use crate::addr::{Pa, Va, PAGE_SIZE};
use crate::arch::x86_64::{
    Level, PageSize, PageTableRoot, PagingMode, ADDR_MASK, PTE_PAGE_SIZE, PTE_PRESENT, PTE_USER,
    PTE_WRITABLE,
};
use crate::error::PhysError;
use crate::memory::{MockMemory, PhysRange, PhysicalMemory};

/// Why a mapping could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// The virtual or physical address is not aligned to the page size.
    #[error("{va} → {pa} is not aligned to a {size:?} page")]
    Misaligned {
        /// Virtual address.
        va: Va,
        /// Physical address.
        pa: Pa,
        /// Page size.
        size: PageSize,
    },
    /// The virtual address is not canonical.
    #[error("{va} is not canonical")]
    NonCanonical {
        /// Virtual address.
        va: Va,
    },
    /// Something is already mapped where the page would go.
    #[error("{va}: the {level} entry is already in use")]
    Conflict {
        /// Virtual address.
        va: Va,
        /// The level of the entry in the way.
        level: Level,
    },
    /// The area given for page tables is full.
    #[error("no room left for page tables")]
    OutOfTables,
    /// Writing the tables failed.
    #[error(transparent)]
    Memory(#[from] PhysError),
}

/// Builds a page-table hierarchy in a [`MockMemory`], taking table pages from an area
/// reserved for them.
#[derive(Debug, Clone)]
pub struct PageTableBuilder {
    mode: PagingMode,
    root: Pa,
    next: u64,
    end: u64,
}

impl PageTableBuilder {
    /// A hierarchy with an empty top-level table, its tables taken from `tables`
    /// (page-aligned, inside `mem`'s map).
    pub fn new(
        mem: &mut MockMemory,
        mode: PagingMode,
        tables: PhysRange,
    ) -> Result<PageTableBuilder, MapError> {
        let start = tables.start.0.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let mut b = PageTableBuilder {
            mode,
            root: Pa(0),
            next: start,
            end: tables.end.0,
        };
        b.root = b.alloc(mem)?;
        Ok(b)
    }

    fn alloc(&mut self, mem: &mut MockMemory) -> Result<Pa, MapError> {
        if self.end.saturating_sub(self.next) < PAGE_SIZE {
            return Err(MapError::OutOfTables);
        }
        let pa = Pa(self.next);
        self.next += PAGE_SIZE;
        mem.write(pa, &[0u8; PAGE_SIZE as usize])?;
        Ok(pa)
    }

    /// The paging mode.
    pub fn mode(&self) -> PagingMode {
        self.mode
    }

    /// The root, as [`translate`](crate::arch::x86_64::translate) takes it.
    pub fn root(&self) -> PageTableRoot {
        PageTableRoot {
            table: self.root,
            mode: self.mode,
        }
    }

    /// A CR3 value pointing at the root (no PCID).
    pub fn cr3(&self) -> u64 {
        self.root.0
    }

    /// Map the page of `size` at `va` to `pa`. The leaf entry gets `flags` (any bits:
    /// writable, user, NX, protection keys, software bits ...) plus present and, for
    /// large pages, page size; tables on the way are present, writable and user.
    pub fn map(
        &mut self,
        mem: &mut MockMemory,
        va: Va,
        pa: Pa,
        size: PageSize,
        flags: u64,
    ) -> Result<(), MapError> {
        if !va.0.is_multiple_of(size.bytes()) || !pa.0.is_multiple_of(size.bytes()) {
            return Err(MapError::Misaligned { va, pa, size });
        }
        if !self.mode.is_canonical(va) {
            return Err(MapError::NonCanonical { va });
        }
        let mut table = self.root.0;
        for &level in self.mode.levels() {
            let entry_pa = Pa(table + level.index(va) * 8);
            let entry = mem.read_phys_u64(entry_pa)?;
            if level == size.level() {
                if entry & PTE_PRESENT != 0 {
                    return Err(MapError::Conflict { va, level });
                }
                let ps = if size == PageSize::Size4K {
                    0
                } else {
                    PTE_PAGE_SIZE
                };
                mem.write_u64(
                    entry_pa,
                    (pa.0 & size.addr_mask()) | flags | PTE_PRESENT | ps,
                )?;
                return Ok(());
            }
            if entry & PTE_PRESENT == 0 {
                let t = self.alloc(mem)?;
                mem.write_u64(entry_pa, t.0 | PTE_PRESENT | PTE_WRITABLE | PTE_USER)?;
                table = t.0;
            } else if entry & PTE_PAGE_SIZE != 0 {
                return Err(MapError::Conflict { va, level });
            } else {
                table = entry & ADDR_MASK;
            }
        }
        Ok(())
    }
}
