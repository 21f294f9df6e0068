//! Which guest bytes a computation read, so that it need not run again while they stay
//! the same.
//!
//! [`Recording`] wraps any source. Between [`Recording::start`] and
//! [`Recording::finish`] it keeps a copy of every physical read, page-table entries
//! included, with its outcome; [`ReadLog::unchanged`] reads the same ranges again and
//! compares the bytes themselves. Code that is a function of the bytes it reads (and
//! of inputs the caller compares itself) gives the same result while its log is
//! unchanged: that is what makes `watch`'s incremental scans exact, with no guest
//! counter trusted. Written here rather than taken from a crate: it sits on the read
//! path of every source and bounds what it keeps ([`MAX_LOG_BYTES`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::addr::Pa;
use crate::error::PhysError;
use crate::memory::{PhysRange, PhysRead, PhysicalMemory};

/// Most bytes one recording keeps; a computation that reads more is not recorded
/// ([`Recording::finish`] returns `None`) and runs every time.
pub const MAX_LOG_BYTES: usize = 1 << 20;

/// Most reads one recording keeps.
pub const MAX_LOG_READS: usize = 1 << 16;

#[derive(Debug, Default)]
struct Buffer {
    /// (address, length, offset of the bytes in `bytes` or `None` when it failed as
    /// unbacked)
    reads: Vec<(u64, u32, Option<u32>)>,
    bytes: Vec<u8>,
    /// Too much to keep, or a read failed in a way that may not repeat.
    spoiled: bool,
}

/// A source that can record what is read from it (see the module doc).
#[derive(Debug)]
pub struct Recording<M> {
    inner: M,
    active: AtomicBool,
    buffer: Mutex<Buffer>,
}

impl<M: PhysicalMemory> Recording<M> {
    /// `inner`, not recording.
    pub fn new(inner: M) -> Recording<M> {
        Recording {
            inner,
            active: AtomicBool::new(false),
            buffer: Mutex::new(Buffer::default()),
        }
    }

    /// The source it wraps.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    fn buffer(&self) -> MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start recording (what an earlier recording kept is dropped).
    pub fn start(&self) {
        let mut b = self.buffer();
        b.reads.clear();
        b.bytes.clear();
        b.spoiled = false;
        self.active.store(true, Ordering::SeqCst);
    }

    /// Stop recording; the log of what was read since [`Recording::start`], or `None`
    /// when it cannot stand for the reads: more than [`MAX_LOG_BYTES`] or
    /// [`MAX_LOG_READS`], a read that failed other than as unbacked memory (an I/O error
    /// may not repeat), or two reads of the same bytes that saw different values (the
    /// guest changed them during the computation).
    pub fn finish(&self) -> Option<ReadLog> {
        self.active.store(false, Ordering::SeqCst);
        let mut b = self.buffer();
        if b.spoiled {
            return None;
        }
        let Buffer { reads, bytes, .. } = &mut *b;
        ReadLog::build(reads, bytes)
    }

    fn note(&self, pa: Pa, buf: &[u8], result: &Result<(), PhysError>) {
        if !self.active.load(Ordering::Relaxed) {
            return;
        }
        let mut b = self.buffer();
        if b.spoiled {
            return;
        }
        if b.reads.len() >= MAX_LOG_READS
            || b.bytes.len() + buf.len() > MAX_LOG_BYTES
            || u32::try_from(buf.len()).is_err()
        {
            b.spoiled = true;
            return;
        }
        match result {
            Ok(()) => {
                let at = b.bytes.len() as u32;
                b.bytes.extend_from_slice(buf);
                b.reads.push((pa.0, buf.len() as u32, Some(at)));
            }
            Err(PhysError::Unmapped { .. }) if buf.len() <= MAX_LOG_BYTES => {
                b.reads.push((pa.0, buf.len() as u32, None))
            }
            Err(_) => b.spoiled = true,
        }
    }
}

/// Starts and finishes recordings: what code that records needs of a [`Recording`],
/// whatever it wraps.
pub trait Recorder {
    /// [`Recording::start`].
    fn start(&self);
    /// [`Recording::finish`].
    fn finish(&self) -> Option<ReadLog>;
}

impl<M: PhysicalMemory> Recorder for Recording<M> {
    fn start(&self) {
        Recording::start(self)
    }

    fn finish(&self) -> Option<ReadLog> {
        Recording::finish(self)
    }
}

impl<M: PhysicalMemory> PhysicalMemory for Recording<M> {
    fn read_phys(&self, pa: Pa, buf: &mut [u8]) -> Result<(), PhysError> {
        let r = self.inner.read_phys(pa, buf);
        self.note(pa, buf, &r);
        r
    }

    fn ranges(&self) -> &[PhysRange] {
        self.inner.ranges()
    }

    fn read_phys_batch(&self, reads: &mut [PhysRead<'_>]) {
        self.inner.read_phys_batch(reads);
        for r in reads.iter() {
            self.note(r.pa, r.buf, &r.result);
        }
    }

    fn table_frame(&self, frame: u64) -> Option<Pa> {
        self.inner.table_frame(frame)
    }

    fn invalidate(&self) {
        self.inner.invalidate()
    }
}

/// What a recorded computation read: ranges with their bytes, merged where they touch,
/// and the reads that failed because nothing backs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadLog {
    /// (start, length) of merged ranges, sorted, not touching each other; their bytes
    /// one after the other in `bytes`.
    ranges: Vec<(u64, u32)>,
    bytes: Vec<u8>,
    /// (address, length) of reads that failed as unbacked.
    unbacked: Vec<(u64, u32)>,
}

impl ReadLog {
    fn build(reads: &mut [(u64, u32, Option<u32>)], bytes: &[u8]) -> Option<ReadLog> {
        reads.sort_unstable_by_key(|&(pa, len, _)| (pa, std::cmp::Reverse(len)));
        let mut log = ReadLog::default();
        for &(pa, len, at) in reads.iter() {
            let Some(at) = at else {
                log.unbacked.push((pa, len));
                continue;
            };
            let new = &bytes[at as usize..at as usize + len as usize];
            match log.ranges.last_mut() {
                Some((start, have)) if pa <= *start + u64::from(*have) => {
                    // overlaps or touches the range before: the overlap must agree
                    let from = (pa - *start) as usize;
                    let overlap = (*have as usize - from).min(new.len());
                    let base = log.bytes.len() - *have as usize;
                    if log.bytes[base + from..base + from + overlap] != new[..overlap] {
                        return None;
                    }
                    log.bytes.extend_from_slice(&new[overlap..]);
                    *have += (new.len() - overlap) as u32;
                }
                _ => {
                    log.ranges.push((pa, len));
                    log.bytes.extend_from_slice(new);
                }
            }
        }
        log.unbacked.sort_unstable();
        log.unbacked.dedup();
        log.ranges.shrink_to_fit();
        log.bytes.shrink_to_fit();
        Some(log)
    }

    /// Bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Ranges kept (after merging).
    pub fn ranges(&self) -> usize {
        self.ranges.len() + self.unbacked.len()
    }

    /// True when `mem` holds the same bytes at every range read, and the reads that
    /// failed still fail: the recorded computation would read exactly the same again.
    pub fn unchanged<M: PhysicalMemory + ?Sized>(&self, mem: &M) -> bool {
        let mut buf = [0u8; 4096];
        let mut at = 0usize;
        for &(start, len) in &self.ranges {
            // in pieces of at most a page: no allocation
            let mut done = 0usize;
            while done < len as usize {
                let n = (len as usize - done).min(buf.len());
                if mem
                    .read_phys(Pa(start + done as u64), &mut buf[..n])
                    .is_err()
                    || buf[..n] != self.bytes[at + done..at + done + n]
                {
                    return false;
                }
                done += n;
            }
            at += len as usize;
        }
        // (rare: a walk that met a hole)
        self.unbacked.iter().all(|&(pa, len)| {
            let mut whole = vec![0u8; len as usize];
            matches!(
                mem.read_phys(Pa(pa), &mut whole),
                Err(PhysError::Unmapped { .. })
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MockMemory;

    fn mem() -> MockMemory {
        MockMemory::new(&[PhysRange::new(0x1000, 0x3000)])
    }

    #[test]
    fn a_log_is_unchanged_until_a_byte_it_read_changes() {
        let r = Recording::new(mem());
        r.start();
        let mut b = [0u8; 8];
        r.read_phys(Pa(0x1000), &mut b).unwrap();
        r.read_phys(Pa(0x1004), &mut b).unwrap();
        r.read_phys(Pa(0x2000), &mut b[..4]).unwrap();
        assert!(r.read_phys(Pa(0x9000), &mut b).is_err());
        let log = r.finish().unwrap();
        // 0x1000..0x100c merged, 0x2000..0x2004, one unbacked read
        assert_eq!(log.ranges(), 3);
        assert_eq!(log.bytes(), 16);
        assert!(log.unchanged(r.inner()));
        // a byte nobody read changes nothing
        let mut m = mem();
        m.write(Pa(0x1800), &[1]).unwrap();
        assert!(log.unchanged(&m));
        // one that was read does
        let mut m = mem();
        m.write(Pa(0x100b), &[1]).unwrap();
        assert!(!log.unchanged(&m));
        // memory that appears where a read failed does
        let m = MockMemory::new(&[
            PhysRange::new(0x1000, 0x3000),
            PhysRange::new(0x9000, 0xa000),
        ]);
        assert!(!log.unchanged(&m));
    }

    #[test]
    fn reads_outside_a_recording_are_not_kept_and_a_torn_read_spoils_it() {
        let r = Recording::new(mem());
        let mut b = [0u8; 8];
        r.read_phys(Pa(0x1000), &mut b).unwrap();
        r.start();
        let log = r.finish().unwrap();
        assert_eq!(log.ranges(), 0);
        // two reads of the same bytes that disagree: the guest changed them meanwhile
        let mut bytes = vec![0u8; 16];
        bytes[8] = 1;
        let mut reads = vec![(0x1000, 8, Some(0)), (0x1000, 8, Some(8))];
        assert!(ReadLog::build(&mut reads, &bytes).is_none());
    }

    #[test]
    fn a_recording_past_its_bound_is_not_kept() {
        let r = Recording::new(MockMemory::with_size(MAX_LOG_BYTES as u64 + 0x1000));
        r.start();
        let mut b = vec![0u8; MAX_LOG_BYTES];
        r.read_phys(Pa(0), &mut b).unwrap();
        r.read_phys(Pa(0), &mut b[..16]).unwrap();
        assert!(r.finish().is_none());
    }
}
