//! A page cache in front of any physical memory source.

use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard};

use lru::LruCache;

use crate::addr::{Pa, PAGE_SIZE};
use crate::error::PhysError;
use crate::memory::{PhysRange, PhysicalMemory};

const PAGE: usize = PAGE_SIZE as usize;

/// Hit and miss counts of a [`PageCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Page lookups served from the cache.
    pub hits: u64,
    /// Page lookups that read the source.
    pub misses: u64,
    /// Pages held now.
    pub pages: usize,
    /// Pages held at most.
    pub capacity: usize,
}

type Page = Box<[u8; PAGE]>;

/// The pages by frame, least recently used first out, and the buffers of pages dropped
/// (reused, so a cache that was invalidated allocates nothing to fill again).
struct Lru {
    pages: LruCache<u64, Page>,
    free: Vec<Page>,
    hits: u64,
    misses: u64,
}

impl Lru {
    /// A buffer for a new page: a free one, a new one, or the least recently used
    /// page's (taken out of the cache).
    fn take_buffer(&mut self) -> Page {
        if let Some(b) = self.free.pop() {
            return b;
        }
        if self.pages.len() < self.pages.cap().get() {
            return Box::new([0u8; PAGE]);
        }
        match self.pages.pop_lru() {
            Some((_, b)) => b,
            None => Box::new([0u8; PAGE]),
        }
    }

    fn clear(&mut self) {
        while let Some((_, b)) = self.pages.pop_lru() {
            self.free.push(b);
        }
    }
}

/// A bounded LRU cache of 4 KiB pages in front of a [`PhysicalMemory`].
///
/// Reads are served page by page from the cache; a miss reads the whole page from the
/// source. A page the source can only read in part (a range that ends inside it) is
/// not cached: the read goes to the source as asked. A live source changes under the
/// cache: call [`PageCache::invalidate`] whenever the guest may have run (e.g. after
/// each pause), or use the cache only on paused guests and dumps.
pub struct PageCache<M> {
    inner: M,
    capacity: usize,
    lru: Mutex<Lru>,
}

impl<M> std::fmt::Debug for PageCache<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<M: PhysicalMemory> PageCache<M> {
    /// A cache of at most `capacity_pages` pages (at least 1) in front of `inner`.
    pub fn new(inner: M, capacity_pages: usize) -> PageCache<M> {
        PageCache {
            inner,
            capacity: capacity_pages.max(1),
            lru: Mutex::new(Lru {
                pages: LruCache::new(
                    NonZeroUsize::new(capacity_pages).unwrap_or(NonZeroUsize::MIN),
                ),
                free: Vec::new(),
                hits: 0,
                misses: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        // a panic while holding the lock cannot leave the list inconsistent in a way
        // that matters more than a cold cache: recover and clear
        self.lru.lock().unwrap_or_else(|poisoned| {
            let mut g = poisoned.into_inner();
            g.clear();
            g
        })
    }

    /// Drop every cached page.
    pub fn invalidate(&self) {
        self.lock().clear();
    }

    /// Drop the cached pages that overlap `range`.
    pub fn invalidate_range(&self, range: PhysRange) {
        let mut g = self.lock();
        let first = range.start.0 / PAGE_SIZE;
        let last = range.end.0.div_ceil(PAGE_SIZE);
        let victims: Vec<u64> = if last - first < g.pages.len() as u64 {
            (first..last).filter(|f| g.pages.contains(f)).collect()
        } else {
            g.pages
                .iter()
                .map(|(&f, _)| f)
                .filter(|f| (first..last).contains(f))
                .collect()
        };
        for f in victims {
            if let Some(b) = g.pages.pop(&f) {
                g.free.push(b);
            }
        }
    }

    /// Hits, misses and occupancy.
    pub fn stats(&self) -> CacheStats {
        let g = self.lock();
        CacheStats {
            hits: g.hits,
            misses: g.misses,
            pages: g.pages.len(),
            capacity: self.capacity,
        }
    }

    /// The source behind the cache.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// The source, without the cache.
    pub fn into_inner(self) -> M {
        self.inner
    }
}

impl<M: PhysicalMemory> PhysicalMemory for PageCache<M> {
    fn read_phys(&self, pa: Pa, buf: &mut [u8]) -> Result<(), PhysError> {
        let mut done = 0usize;
        let mut at = pa;
        while done < buf.len() {
            let off = at.page_offset() as usize;
            let n = (PAGE - off).min(buf.len() - done);
            let gfn = at.0 / PAGE_SIZE;
            let dst = &mut buf[done..done + n];
            let mut g = self.lock();
            if let Some(page) = g.pages.get(&gfn) {
                dst.copy_from_slice(&page[off..off + n]);
                g.hits += 1;
            } else {
                g.misses += 1;
                let mut page = g.take_buffer();
                match self.inner.read_phys(at.page_base(), &mut page[..]) {
                    Ok(()) => {
                        dst.copy_from_slice(&page[off..off + n]);
                        g.pages.put(gfn, page);
                    }
                    Err(_) => {
                        g.free.push(page);
                        drop(g);
                        self.inner.read_phys(at, dst)?;
                    }
                }
            }
            done += n;
            at = match at.checked_add(n as u64) {
                Some(a) => a,
                None if done == buf.len() => break,
                None => return Err(PhysError::Unmapped { pa: Pa(u64::MAX) }),
            };
        }
        Ok(())
    }

    fn ranges(&self) -> &[PhysRange] {
        self.inner.ranges()
    }

    fn table_frame(&self, frame: u64) -> Option<Pa> {
        self.inner.table_frame(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MockMemory;

    #[test]
    fn lru_hits_evicts_and_invalidates() {
        let mut m = MockMemory::new(&[
            PhysRange::new(0, 0x10_000),
            PhysRange::new(0x20_000, 0x20_800),
        ]);
        for p in 0..16u64 {
            m.write(Pa(p * 0x1000), &[p as u8; 0x1000]).unwrap();
        }
        let c = PageCache::new(&m, 4);
        let mut b = [0u8; 2];
        c.read_phys(Pa(0xfff), &mut b).unwrap();
        assert_eq!(b, [0, 1]);
        assert_eq!(c.stats().misses, 2);
        c.read_phys(Pa(0x10), &mut b).unwrap();
        assert_eq!(c.stats().hits, 1);
        for p in 2..8u64 {
            c.read_phys(Pa(p * 0x1000), &mut b).unwrap();
            assert_eq!(b, [p as u8; 2]);
        }
        let s = c.stats();
        assert_eq!((s.pages, s.capacity), (4, 4));
        // page 0 was evicted: a miss again
        let misses = s.misses;
        c.read_phys(Pa(0), &mut b).unwrap();
        assert_eq!(c.stats().misses, misses + 1);
        // the most recent pages stay
        c.read_phys(Pa(0x7000), &mut b).unwrap();
        assert_eq!(c.stats().misses, misses + 1);
        c.invalidate_range(PhysRange::new(0x7000, 0x7001));
        c.read_phys(Pa(0x7000), &mut b).unwrap();
        assert_eq!(c.stats().misses, misses + 2);
        c.invalidate();
        assert_eq!(c.stats().pages, 0);
        // a partly backed page is read through, uncached, with the source's errors
        c.read_phys(Pa(0x20_7fe), &mut b).unwrap();
        assert_eq!(
            c.read_phys(Pa(0x20_7ff), &mut b),
            Err(PhysError::Unmapped { pa: Pa(0x20_800) })
        );
        assert_eq!(
            c.read_phys(Pa(0x30_000), &mut b),
            Err(PhysError::Unmapped { pa: Pa(0x30_000) })
        );
        assert_eq!(c.stats().pages, 0);
        let mut top = [0u8; 4];
        assert!(c.read_phys(Pa(u64::MAX - 1), &mut top).is_err());
    }

    #[test]
    fn cached_reads_equal_direct_reads() {
        let mut m = MockMemory::new(&[PhysRange::new(0, 0x40_000)]);
        let data: Vec<u8> = (0..0x40_000u32).map(|i| (i * 7 % 253) as u8).collect();
        m.write(Pa(0), &data).unwrap();
        let c = PageCache::new(&m, 8);
        let mut seed = 1u64;
        for _ in 0..2000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pa = (seed >> 20) % 0x40_000;
            let len = ((seed >> 8) % 9000) as usize;
            let mut a = vec![0u8; len];
            let mut b = vec![0u8; len];
            let (ra, rb) = (c.read_phys(Pa(pa), &mut a), m.read_phys(Pa(pa), &mut b));
            assert_eq!(ra, rb);
            if ra.is_ok() {
                assert!(a == b, "cached read at {pa:#x}+{len} differs");
            }
        }
    }
}
