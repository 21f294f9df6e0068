//! A guest-virtual address space over any physical memory, with a translation cache.

use std::sync::{Mutex, MutexGuard};

use crate::addr::{Pa, Va, PAGE_SHIFT};
use crate::arch::x86_64::{translate, PageFlags, PageSize, PageTableRoot, Registers, Translation};
use crate::error::{Error, ReadError, TranslateError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// Translation-cache entries by default.
const DEFAULT_TLB_ENTRIES: usize = 1024;

/// Hit and miss counts of an [`AddressSpace`]'s translation cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TlbStats {
    /// Translations served from the cache.
    pub hits: u64,
    /// Translations that walked the page tables.
    pub misses: u64,
}

#[derive(Debug, Clone, Copy)]
struct TlbEntry {
    /// Virtual page number + 1; 0 marks an empty entry.
    tag: u64,
    /// Physical address of the 4 KiB page that holds the virtual page.
    page_pa: u64,
    size: PageSize,
    flags: PageFlags,
}

const EMPTY: TlbEntry = TlbEntry {
    tag: 0,
    page_pa: 0,
    size: PageSize::Size4K,
    flags: PageFlags {
        writable: false,
        user: false,
        nx: false,
        global: false,
    },
};

/// A direct-mapped translation cache: bounded, O(1), no allocation after creation.
#[derive(Debug)]
struct Tlb {
    entries: Vec<TlbEntry>,
    stats: TlbStats,
    /// The translations used since [`AddressSpace::start_translation_log`], cached or
    /// walked (`None` when not logging); past [`MAX_LOGGED_TRANSLATIONS`] it is spoiled.
    log: Option<Vec<(u64, TlbEntry)>>,
    log_spoiled: bool,
}

/// Most translations one log keeps ([`AddressSpace::finish_translation_log`]).
pub const MAX_LOGGED_TRANSLATIONS: usize = 1 << 16;

/// The translations a computation used: (virtual page number, where it mapped, page
/// size and rights), sorted, each page once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TranslationLog {
    pages: Vec<(u64, u64, PageSize, PageFlags)>,
}

impl TranslationLog {
    /// Pages logged.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// True when nothing was translated.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }
}

/// One guest-virtual address space: a page-table root over a physical memory source.
///
/// Translations are cached in a small direct-mapped cache, like a TLB. A live guest can
/// change its page tables at any time: call [`AddressSpace::invalidate`] when it may
/// have (after it ran), as a processor does with `invlpg` or a CR3 write. Reads never
/// loop on guest data: a walk is at most five entry reads, a range read one walk per
/// page.
#[derive(Debug)]
pub struct AddressSpace<M> {
    mem: M,
    root: PageTableRoot,
    tlb: Mutex<Tlb>,
}

impl<M: PhysicalMemory> AddressSpace<M> {
    /// The address space under `root`, with the default translation cache.
    pub fn new(mem: M, root: PageTableRoot) -> AddressSpace<M> {
        AddressSpace::with_tlb_entries(mem, root, DEFAULT_TLB_ENTRIES)
    }

    /// With a translation cache of `entries` (rounded up to a power of two; 0 turns the
    /// cache off).
    pub fn with_tlb_entries(mem: M, root: PageTableRoot, entries: usize) -> AddressSpace<M> {
        let n = if entries == 0 {
            0
        } else {
            entries.next_power_of_two()
        };
        AddressSpace {
            mem,
            root,
            tlb: Mutex::new(Tlb {
                entries: vec![EMPTY; n],
                stats: TlbStats::default(),
                log: None,
                log_spoiled: false,
            }),
        }
    }

    /// The address space a vCPU's CR3 selects, in the paging mode its CR0, CR4 and
    /// EFER select.
    pub fn from_registers(mem: M, regs: &Registers) -> Result<AddressSpace<M>, Error> {
        Ok(AddressSpace::new(mem, regs.page_table_root()?))
    }

    fn tlb(&self) -> MutexGuard<'_, Tlb> {
        self.tlb.lock().unwrap_or_else(|poisoned| {
            let mut g = poisoned.into_inner();
            g.entries.fill(EMPTY);
            g
        })
    }

    /// The page-table root.
    pub fn root(&self) -> PageTableRoot {
        self.root
    }

    /// Switch to another root (a CR3 write); flushes the translation cache.
    pub fn set_root(&mut self, root: PageTableRoot) {
        self.root = root;
        self.invalidate();
    }

    /// The physical memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// The physical memory, without the address space.
    pub fn into_memory(self) -> M {
        self.mem
    }

    /// Drop every cached translation, and what the memory source keeps of guest memory
    /// ([`PhysicalMemory::invalidate`]).
    pub fn invalidate(&self) {
        self.tlb().entries.fill(EMPTY);
        self.mem.invalidate();
    }

    /// Drop every cached translation but keep what the memory source keeps: the next
    /// reads walk the page tables again (and so read their entries from the source).
    pub fn flush_translations(&self) {
        self.tlb().entries.fill(EMPTY);
    }

    /// Start logging every translation used, from the cache or walked (a log begun
    /// earlier is dropped). With [`PhysicalMemory`] reads recorded as well
    /// ([`Recording`](crate::memory::Recording)), the log says everything a computation
    /// read through this address space depended on.
    pub fn start_translation_log(&self) {
        let mut tlb = self.tlb();
        tlb.log = Some(Vec::new());
        tlb.log_spoiled = false;
    }

    /// Stop logging: the translations used since [`AddressSpace::start_translation_log`]
    /// (`None` when more than [`MAX_LOGGED_TRANSLATIONS`], or when not started).
    pub fn finish_translation_log(&self) -> Option<TranslationLog> {
        let mut tlb = self.tlb();
        let spoiled = std::mem::take(&mut tlb.log_spoiled);
        let mut log = tlb.log.take()?;
        if spoiled {
            return None;
        }
        log.sort_unstable_by_key(|(vpn, _)| *vpn);
        log.dedup_by_key(|(vpn, _)| *vpn);
        Some(TranslationLog {
            pages: log
                .into_iter()
                .map(|(vpn, e)| (vpn, e.page_pa, e.size, e.flags))
                .collect(),
        })
    }

    /// True when every page of `log` translates as it did (walked again where the
    /// cache does not hold it).
    pub fn same_translations(&self, log: &TranslationLog) -> bool {
        log.pages.iter().all(|&(vpn, page_pa, size, flags)| {
            matches!(self.translate(Va(vpn << PAGE_SHIFT)),
                Ok(t) if t.pa.0 & !0xfff == page_pa && t.size == size && t.flags == flags)
        })
    }

    /// Cache hits and misses so far.
    pub fn tlb_stats(&self) -> TlbStats {
        self.tlb().stats
    }

    /// Translate `va` (from the cache when it can).
    pub fn translate(&self, va: Va) -> Result<Translation, TranslateError> {
        let vpn = va.0 >> PAGE_SHIFT;
        {
            let mut tlb = self.tlb();
            let n = tlb.entries.len();
            if n > 0 {
                let e = tlb.entries[(vpn as usize) & (n - 1)];
                if e.tag == vpn + 1 {
                    tlb.stats.hits += 1;
                    log_translation(&mut tlb, vpn, e);
                    return Ok(Translation {
                        pa: Pa(e.page_pa | va.page_offset()),
                        size: e.size,
                        flags: e.flags,
                    });
                }
            }
            tlb.stats.misses += 1;
        }
        let t = translate(&self.mem, self.root, va)?;
        let mut tlb = self.tlb();
        let e = TlbEntry {
            tag: vpn + 1,
            page_pa: t.pa.0 & !0xfff,
            size: t.size,
            flags: t.flags,
        };
        log_translation(&mut tlb, vpn, e);
        let n = tlb.entries.len();
        if n > 0 {
            tlb.entries[(vpn as usize) & (n - 1)] = e;
        }
        Ok(t)
    }
}

fn log_translation(tlb: &mut Tlb, vpn: u64, e: TlbEntry) {
    let full = match &mut tlb.log {
        // the same page again (a field after a field): logged already
        Some(log) if log.last().is_some_and(|(v, _)| *v == vpn) => false,
        Some(log) if log.len() < MAX_LOGGED_TRANSLATIONS => {
            log.push((vpn, e));
            false
        }
        Some(_) => true,
        None => false,
    };
    if full {
        tlb.log_spoiled = true;
    }
}

impl<M: PhysicalMemory> VirtualMemory for AddressSpace<M> {
    fn read_virt(&self, va: Va, buf: &mut [u8]) -> Result<(), ReadError> {
        if buf.is_empty() {
            return Ok(());
        }
        if va.0.checked_add(buf.len() as u64 - 1).is_none() {
            return Err(ReadError::Wrap {
                va,
                len: buf.len() as u64,
            });
        }
        let mut done = 0usize;
        while done < buf.len() {
            // no overflow: checked for the whole range above
            let at = Va(va.0 + done as u64);
            let t = self.translate(at)?;
            let in_page = t.size.bytes() - (at.0 & (t.size.bytes() - 1));
            let n = in_page.min((buf.len() - done) as u64) as usize;
            self.mem
                .read_phys(t.pa, &mut buf[done..done + n])
                .map_err(|cause| ReadError::Phys {
                    va: Va(at.0 + cause.pa().0.saturating_sub(t.pa.0)),
                    pa: cause.pa(),
                    cause,
                })?;
            done += n;
        }
        Ok(())
    }
}
