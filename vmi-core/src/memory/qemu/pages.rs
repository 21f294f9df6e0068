//! Pages of guest RAM read through the QEMU process, kept until the reader's next
//! invalidate, and read back at once after it: a scan touches much the same pages as the
//! scan before, and one vectored system call for all of them costs a fraction of one
//! call per page (the kernel's per-call cost, ~1 µs here, outweighs its per-page cost).
//!
//! Own code, not an LRU crate: the cache is bounded by a page count and emptied whole on
//! each invalidate, what it needs beyond a map is the span of each page a reader used
//! (read back in the next generation), and a lookup is two array indexes (a hashed map
//! made a walk's 750 reads cost twice what the mapped RAM file's do).

use std::io;
use std::time::{Duration, Instant};

/// The unit kept.
pub const PAGE: u64 = 4096;
/// Bytes read on a miss: the object read next is often on a neighbouring page.
const MISS_READ: u64 = 16 << 10;
/// Most pages kept (16 MiB); a generation that reads more starts over.
const MAX_PAGES: usize = 4096;
/// Ranges one vectored read carries (the kernel's `UIO_MAXIOV`).
const IOV_MAX: usize = 1024;
/// The most bytes read between the spans of two neighbouring pages to make them one
/// range (each range costs the kernel about what copying 3 KiB does).
const MERGE_GAP: u64 = 2 << 10;
/// Reads larger than this bypass the cache (a banner scan, a whole-RAM copy).
const BYPASS: usize = 64 << 10;
/// Spans read back are widened to this alignment (a neighbouring field is often read
/// next time).
const SPAN_ALIGN: u16 = 64;
/// How long a generation is used: well beyond one walk, well below a scan interval, so a
/// reader that forgets to invalidate still sees the guest move on.
const FRESH: Duration = Duration::from_millis(20);

/// Where the bytes come from: a RAM block of `len()` bytes read with vectored reads.
pub trait Fetch {
    /// The block's size.
    fn len(&self) -> u64;
    /// Fill each `(offset, buffer)` from the block, in order, in as few system calls as
    /// the source allows; the bytes read before a failure are counted in `Ok` (a short
    /// count means the range after them failed).
    fn read_vectored(&self, parts: &mut [(u64, &mut [u8])]) -> io::Result<usize>;
}

/// One kept page.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The page's number in the block.
    page: u64,
    /// The bytes of the page held: `lo..hi`.
    lo: u16,
    hi: u16,
    /// The bytes of the page read from the cache in this generation (`lo > hi`: none).
    used_lo: u16,
    used_hi: u16,
}

impl Entry {
    fn used(&self) -> Option<(u16, u16)> {
        (self.used_lo < self.used_hi).then_some((self.used_lo, self.used_hi))
    }
}

/// Counts since the cache was made, for benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Reads answered.
    pub reads: u64,
    /// System calls made (misses, read-backs, bypasses).
    pub calls: u64,
    /// Pages read back after an invalidate.
    pub read_back: u64,
    /// Ranges (`iovec`s) those read-backs asked for.
    pub ranges: u64,
    /// Bytes they copied.
    pub bytes: u64,
    /// Time spent in them.
    pub read_back_time: Duration,
}

/// Pages per second-level table of [`Index`] (2 MiB of RAM).
const LEAF: usize = 512;
/// An empty place in [`Index`].
const NONE: u32 = u32::MAX;

/// Page number → slot, in two levels: a table per 2 MiB of the block, made when a page
/// in it is first kept.
#[derive(Debug, Default)]
struct Index {
    leaves: Vec<Option<Box<[u32; LEAF]>>>,
}

impl Index {
    fn get(&self, page: u64) -> Option<u32> {
        let leaf = self.leaves.get((page / LEAF as u64) as usize)?.as_ref()?;
        let slot = leaf[(page % LEAF as u64) as usize];
        (slot != NONE).then_some(slot)
    }

    fn set(&mut self, page: u64, slot: u32) {
        let i = (page / LEAF as u64) as usize;
        if i >= self.leaves.len() {
            self.leaves.resize_with(i + 1, || None);
        }
        self.leaves[i].get_or_insert_with(|| Box::new([NONE; LEAF]))
            [(page % LEAF as u64) as usize] = slot;
    }

    fn unset(&mut self, page: u64) {
        if let Some(Some(leaf)) = self.leaves.get_mut((page / LEAF as u64) as usize) {
            leaf[(page % LEAF as u64) as usize] = NONE;
        }
    }
}

/// The kept pages of one RAM block.
#[derive(Debug)]
pub struct Pages {
    index: Index,
    /// The kept pages, by slot (`next_slot` of them).
    meta: Vec<Entry>,
    arena: Vec<u8>,
    next_slot: u32,
    /// What the last generation used: read back on this generation's first read.
    pending: Vec<(u64, u16, u16)>,
    started: Option<Instant>,
    stats: Stats,
}

impl Default for Pages {
    fn default() -> Self {
        Pages::new()
    }
}

impl Pages {
    /// An empty cache (its memory is allocated on first use).
    pub fn new() -> Pages {
        Pages {
            index: Index::default(),
            meta: Vec::new(),
            arena: Vec::new(),
            next_slot: 0,
            pending: Vec::new(),
            started: None,
            stats: Stats::default(),
        }
    }

    /// Counts so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Start a new generation: forget every page, remember which spans were used.
    pub fn invalidate(&mut self) {
        if self.started.is_none() {
            // nothing read since the last invalidate: keep what it remembered
            return;
        }
        let kept = &self.meta[..self.next_slot as usize];
        let mut used: Vec<(u64, u16, u16)> = kept
            .iter()
            .filter_map(|e| e.used().map(|(lo, hi)| (e.page, lo, hi)))
            .collect();
        used.sort_unstable_by_key(|u| u.0);
        self.pending = used;
        self.forget();
        self.started = None;
    }

    /// Drop every kept page.
    fn forget(&mut self) {
        for e in &self.meta[..self.next_slot as usize] {
            self.index.unset(e.page);
        }
        self.next_slot = 0;
    }

    /// Copy `buf.len()` bytes from offset `off` of the block.
    pub fn read(&mut self, src: &dyn Fetch, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = off.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > src.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "read past the RAM block",
            ));
        }
        self.stats.reads += 1;
        if buf.len() > BYPASS {
            self.stats.calls += 1;
            return read_all(src, off, buf);
        }
        match self.started {
            // the clock is looked at every 64 reads: it costs a third of a read
            Some(t) if !self.stats.reads.is_multiple_of(64) || t.elapsed() < FRESH => {}
            Some(_) => {
                self.invalidate();
                self.begin(src);
            }
            None => self.begin(src),
        }
        let mut done = 0usize;
        while done < buf.len() {
            let at = off + done as u64;
            let page = at / PAGE;
            let lo = (at % PAGE) as u16;
            let n = ((PAGE - u64::from(lo)) as usize).min(buf.len() - done);
            let hi = lo + n as u16;
            let slot = match self.index.get(page) {
                Some(slot)
                    if self.meta[slot as usize].lo <= lo && hi <= self.meta[slot as usize].hi =>
                {
                    slot
                }
                _ => match self.miss(src, page)? {
                    Some(slot) => slot,
                    // the arena was full and started over: read around it
                    None => {
                        self.stats.calls += 1;
                        return read_all(src, at, &mut buf[done..]);
                    }
                },
            };
            let base = slot as usize * PAGE as usize;
            buf[done..done + n]
                .copy_from_slice(&self.arena[base + lo as usize..base + hi as usize]);
            let e = &mut self.meta[slot as usize];
            if e.used_lo >= e.used_hi {
                (e.used_lo, e.used_hi) = (lo, hi);
            } else {
                e.used_lo = e.used_lo.min(lo);
                e.used_hi = e.used_hi.max(hi);
            }
            done += n;
        }
        Ok(())
    }

    /// The first read of a generation: read back what the last one used, in as few
    /// vectored reads as `IOV_MAX` allows.
    fn begin(&mut self, src: &dyn Fetch) {
        self.started = Some(Instant::now());
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return;
        }
        self.ensure_arena();
        // slots in page order: pages next to each other get slots next to each other,
        // so a span running to the end of one page and from the start of the next is
        // one range
        // (offset in the block, offset in the arena, length)
        let mut ranges: Vec<(u64, usize, usize)> = Vec::new();
        // each entry with the index of the range holding its bytes
        let mut entries: Vec<(Entry, usize)> = Vec::with_capacity(pending.len());
        for &(page, lo, hi) in pending.iter().take(MAX_PAGES) {
            let in_block = (src.len().saturating_sub(page * PAGE)).min(PAGE) as u16;
            let lo = lo - lo % SPAN_ALIGN;
            let hi = hi
                .div_ceil(SPAN_ALIGN)
                .saturating_mul(SPAN_ALIGN)
                .min(in_block);
            if lo >= hi {
                continue;
            }
            let slot = entries.len();
            let at = slot * PAGE as usize + lo as usize;
            let off = page * PAGE + u64::from(lo);
            let len = (hi - lo) as usize;
            let mut entry = Entry {
                page,
                lo,
                hi,
                used_lo: 1,
                used_hi: 0,
            };
            // the end of the last page and the start of this one, read as one range
            // when the bytes between them cost less to copy than another range does
            match ranges.last_mut() {
                Some(r)
                    if off >= r.0 + r.2 as u64
                        && off - (r.0 + r.2 as u64) <= MERGE_GAP
                        && at >= r.1 + r.2
                        && (at - (r.1 + r.2)) as u64 == off - (r.0 + r.2 as u64) =>
                {
                    r.2 = at + len - r.1;
                    if let Some((last, _)) = entries.last_mut() {
                        last.hi = PAGE as u16;
                    }
                    entry.lo = 0;
                }
                _ => ranges.push((off, at, len)),
            }
            entries.push((entry, ranges.len() - 1));
        }
        // read in batches; the ranges before the first that failed are kept, the pages
        // of the others are read on demand
        let t = Instant::now();
        self.stats.ranges += ranges.len() as u64;
        self.stats.bytes += ranges.iter().map(|r| r.2 as u64).sum::<u64>();
        let mut whole = 0usize;
        for batch in ranges.chunks(IOV_MAX) {
            let mut parts = cut(&mut self.arena, batch.iter().copied());
            self.stats.calls += 1;
            let mut left = src.read_vectored(&mut parts).unwrap_or(0);
            let mut complete = true;
            for &(_, _, len) in batch {
                if left < len {
                    complete = false;
                    break;
                }
                left -= len;
                whole += 1;
            }
            if !complete {
                break;
            }
        }
        self.stats.read_back_time += t.elapsed();
        // the slots of pages not read stay taken (and empty: lo == hi)
        self.next_slot = entries.len() as u32;
        for (slot, (mut e, range)) in entries.into_iter().enumerate() {
            if range < whole {
                self.index.set(e.page, slot as u32);
                self.stats.read_back += 1;
            } else {
                e.hi = e.lo;
            }
            self.meta[slot] = e;
        }
    }

    fn ensure_arena(&mut self) {
        if self.arena.is_empty() {
            self.arena = vec![0; MAX_PAGES * PAGE as usize];
            self.meta = vec![
                Entry {
                    page: 0,
                    lo: 0,
                    hi: 0,
                    used_lo: 1,
                    used_hi: 0,
                };
                MAX_PAGES
            ];
        }
    }

    /// Read the `MISS_READ` bytes around `page` and keep them; the page's slot, or
    /// `None` when the arena is full (it is emptied for the next reads).
    fn miss(&mut self, src: &dyn Fetch, page: u64) -> io::Result<Option<u32>> {
        self.ensure_arena();
        let first = page * PAGE / MISS_READ * MISS_READ / PAGE;
        let last = ((first * PAGE + MISS_READ).min(src.len())).div_ceil(PAGE);
        let new = (first..last)
            .filter(|&p| self.index.get(p).is_none())
            .count();
        if self.next_slot as usize + new > MAX_PAGES {
            // full: start over (this generation's spans are not read back)
            self.forget();
            return Ok(None);
        }
        // slots: the pages already held keep theirs, the others take new ones
        let mut slots = Vec::with_capacity((last - first) as usize);
        for p in first..last {
            let slot = match self.index.get(p) {
                Some(slot) => slot,
                None => {
                    self.next_slot += 1;
                    let slot = self.next_slot - 1;
                    self.meta[slot as usize] = Entry {
                        page: p,
                        lo: 0,
                        hi: 0,
                        used_lo: 1,
                        used_hi: 0,
                    };
                    self.index.set(p, slot);
                    slot
                }
            };
            slots.push((slot, p));
        }
        // one part per page, cut from the arena in slot order, read in block order
        let mut by_slot = slots.clone();
        by_slot.sort_unstable_by_key(|x| x.0);
        let mut parts = cut(
            &mut self.arena,
            by_slot.iter().map(|&(slot, p)| {
                let len = (PAGE.min(src.len() - p * PAGE)) as usize;
                (p * PAGE, slot as usize * PAGE as usize, len)
            }),
        );
        parts.sort_unstable_by_key(|x| x.0);
        self.stats.calls += 1;
        let want: usize = parts.iter().map(|p| p.1.len()).sum();
        let got = src.read_vectored(&mut parts);
        let read = matches!(got, Ok(n) if n == want);
        for &(slot, p) in &slots {
            let e = &mut self.meta[slot as usize];
            e.lo = 0;
            e.hi = if read {
                (PAGE.min(src.len() - p * PAGE)) as u16
            } else {
                0
            };
        }
        match got {
            Ok(n) if n == want => Ok(Some(slots[(page - first) as usize].0)),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "QEMU's mapping ended inside the RAM block",
            )),
            Err(e) => Err(e),
        }
    }
}

/// The `(block offset, arena offset, length)` pieces, in ascending arena order without
/// overlap, as disjoint buffers of `arena` paired with their block offsets.
fn cut(
    arena: &mut [u8],
    pieces: impl Iterator<Item = (u64, usize, usize)>,
) -> Vec<(u64, &mut [u8])> {
    let mut parts = Vec::new();
    let mut rest = arena;
    let mut taken = 0usize;
    for (off, at, len) in pieces {
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(at - taken);
        let (part, after) = tail.split_at_mut(len);
        parts.push((off, part));
        rest = after;
        taken = at + len;
    }
    parts
}

/// Read `buf` from `off` in one range (looping over short reads).
fn read_all(src: &dyn Fetch, off: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let n = src.read_vectored(&mut [(off + done as u64, &mut buf[done..])])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "QEMU's mapping ended inside the RAM block",
            ));
        }
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};

    /// A block in memory that counts its calls and can fail from an offset on.
    struct Mem {
        bytes: RefCell<Vec<u8>>,
        calls: Cell<u32>,
        fail_from: Cell<u64>,
    }

    impl Mem {
        fn new(len: usize) -> Mem {
            Mem {
                bytes: RefCell::new((0..len).map(|i| (i / 7) as u8).collect()),
                calls: Cell::new(0),
                fail_from: Cell::new(u64::MAX),
            }
        }
    }

    impl Fetch for Mem {
        fn len(&self) -> u64 {
            self.bytes.borrow().len() as u64
        }
        fn read_vectored(&self, parts: &mut [(u64, &mut [u8])]) -> io::Result<usize> {
            self.calls.set(self.calls.get() + 1);
            let b = self.bytes.borrow();
            let mut n = 0;
            for (off, buf) in parts.iter_mut() {
                let o = *off as usize;
                if *off + buf.len() as u64 > self.fail_from.get() {
                    return if n == 0 {
                        Err(io::Error::from_raw_os_error(libc::EFAULT))
                    } else {
                        Ok(n)
                    };
                }
                buf.copy_from_slice(&b[o..o + buf.len()]);
                n += buf.len();
            }
            Ok(n)
        }
    }

    fn check(p: &mut Pages, m: &Mem, off: u64, len: usize) {
        let mut buf = vec![0u8; len];
        p.read(m, off, &mut buf).unwrap();
        assert_eq!(buf, m.bytes.borrow()[off as usize..off as usize + len]);
    }

    #[test]
    fn reads_are_exact_across_pages_and_chunks() {
        let m = Mem::new(1 << 20);
        let mut p = Pages::new();
        for (off, len) in [
            (0, 8),
            (4090, 20),
            (16380, 9000),
            (100_000, 1),
            (1_048_570, 6),
        ] {
            check(&mut p, &m, off, len);
        }
        // past the end, and a bypassing large read
        assert!(p.read(&m, (1 << 20) - 4, &mut [0u8; 8]).is_err());
        check(&mut p, &m, 3, 200_000);
    }

    #[test]
    fn a_generation_reads_back_what_the_last_used_in_one_call() {
        let m = Mem::new(4 << 20);
        let mut p = Pages::new();
        let offs: Vec<u64> = (0..40).map(|i| i * 77_777 + 100).collect();
        for &o in &offs {
            check(&mut p, &m, o, 16);
        }
        let first = m.calls.get();
        assert!(first >= 30, "{first} calls");
        // the guest changes; after invalidate the reads see it, with one call
        m.bytes.borrow_mut()[offs[3] as usize] ^= 0xff;
        p.invalidate();
        m.calls.set(0);
        for &o in &offs {
            check(&mut p, &m, o, 16);
        }
        assert_eq!(m.calls.get(), 1);
        assert_eq!(p.stats().read_back, 40);
        // a read outside last generation's spans is a miss, and still exact
        check(&mut p, &m, offs[5] + 1000, 8);
        assert_eq!(m.calls.get(), 2);
        // an invalidate with nothing read in between keeps the read set
        p.invalidate();
        p.invalidate();
        m.calls.set(0);
        for &o in &offs {
            check(&mut p, &m, o, 16);
        }
        assert_eq!(m.calls.get(), 1);
    }

    #[test]
    fn a_failed_read_back_falls_back_to_reads_on_demand() {
        let m = Mem::new(1 << 20);
        let mut p = Pages::new();
        for o in [1000u64, 300_000, 900_000] {
            check(&mut p, &m, o, 8);
        }
        p.invalidate();
        // the read-back fails part-way: the pages before the failure are kept, the
        // rest are read again (and fail) on demand
        m.fail_from.set(500_000);
        check(&mut p, &m, 1000, 8);
        check(&mut p, &m, 300_000, 8);
        assert!(p.read(&m, 900_000, &mut [0u8; 8]).is_err());
        m.fail_from.set(u64::MAX);
        check(&mut p, &m, 900_000, 8);
    }

    #[test]
    fn more_pages_than_kept_start_over_and_stay_exact() {
        let m = Mem::new((MAX_PAGES as u64 * PAGE * 2) as usize);
        let mut p = Pages::new();
        for i in 0..(MAX_PAGES as u64 * 2 / 4) {
            check(&mut p, &m, i * MISS_READ + 5, 3);
        }
        p.invalidate();
        for i in 0..(MAX_PAGES as u64 * 2 / 4) {
            check(&mut p, &m, i * MISS_READ + 5, 3);
        }
    }
}
