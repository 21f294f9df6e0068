//! An in-memory physical memory for tests: sparse pages, zero until written.

use std::collections::HashMap;

use crate::addr::{Pa, PAGE_SIZE};
use crate::error::PhysError;
use crate::memory::{PhysRange, PhysicalMemory};

const PAGE: usize = PAGE_SIZE as usize;

/// Sparse guest-physical memory held in host memory, for tests.
///
/// It has a memory map like a real guest (reads outside it fail like on a dump), pages
/// are allocated when first written, and unwritten pages read as zeros. With
/// [`PageTableBuilder`](crate::arch::x86_64::PageTableBuilder) it holds real page
/// tables.
#[derive(Debug, Clone, Default)]
pub struct MockMemory {
    ranges: Vec<PhysRange>,
    pages: HashMap<u64, Box<[u8; PAGE]>>,
}

impl MockMemory {
    /// Memory backed over `ranges` (sorted and merged here).
    pub fn new(ranges: &[PhysRange]) -> MockMemory {
        let mut rs: Vec<PhysRange> = ranges.iter().copied().filter(|r| !r.is_empty()).collect();
        rs.sort();
        let mut merged: Vec<PhysRange> = Vec::new();
        for r in rs {
            match merged.last_mut() {
                Some(m) if r.start <= m.end => m.end = m.end.max(r.end),
                _ => merged.push(r),
            }
        }
        MockMemory {
            ranges: merged,
            pages: HashMap::new(),
        }
    }

    /// Memory backed over `0..size`.
    pub fn with_size(size: u64) -> MockMemory {
        MockMemory::new(&[PhysRange::new(0, size)])
    }

    /// The first address of `pa..pa+len` outside the memory map, if any.
    fn first_unbacked(&self, pa: Pa, len: u64) -> Option<Pa> {
        let mut at = pa.0;
        let end = pa.0.checked_add(len);
        let mut i = self.ranges.partition_point(|r| r.end.0 <= at);
        loop {
            if end.is_some_and(|e| at >= e) {
                return None;
            }
            match self.ranges.get(i) {
                Some(r) if r.start.0 <= at => {
                    at = r.end.0;
                    i += 1;
                }
                _ => return Some(Pa(at)),
            }
        }
    }

    /// Write `data` at `pa`; the whole span must be inside the memory map.
    pub fn write(&mut self, pa: Pa, data: &[u8]) -> Result<(), PhysError> {
        if let Some(pa) = self.first_unbacked(pa, data.len() as u64) {
            return Err(PhysError::Unmapped { pa });
        }
        let mut done = 0;
        let mut at = pa.0;
        while done < data.len() {
            let off = (at % PAGE_SIZE) as usize;
            let n = (PAGE - off).min(data.len() - done);
            let page = self
                .pages
                .entry(at / PAGE_SIZE)
                .or_insert_with(|| Box::new([0u8; PAGE]));
            page[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
            at = at.wrapping_add(n as u64);
        }
        Ok(())
    }

    /// Write a little-endian `u64` at `pa`.
    pub fn write_u64(&mut self, pa: Pa, v: u64) -> Result<(), PhysError> {
        self.write(pa, &v.to_le_bytes())
    }

    /// Pages written so far.
    pub fn pages_allocated(&self) -> usize {
        self.pages.len()
    }
}

impl PhysicalMemory for MockMemory {
    fn read_phys(&self, pa: Pa, buf: &mut [u8]) -> Result<(), PhysError> {
        if let Some(pa) = self.first_unbacked(pa, buf.len() as u64) {
            return Err(PhysError::Unmapped { pa });
        }
        let mut done = 0;
        let mut at = pa.0;
        while done < buf.len() {
            let off = (at % PAGE_SIZE) as usize;
            let n = (PAGE - off).min(buf.len() - done);
            match self.pages.get(&(at / PAGE_SIZE)) {
                Some(p) => buf[done..done + n].copy_from_slice(&p[off..off + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
            at = at.wrapping_add(n as u64);
        }
        Ok(())
    }

    fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_and_zero_pages() {
        let mut m = MockMemory::new(&[
            PhysRange::new(0x2000, 0x3000),
            PhysRange::new(0, 0x1000),
            PhysRange::new(0x1000, 0x1800),
        ]);
        assert_eq!(
            m.ranges(),
            &[PhysRange::new(0, 0x1800), PhysRange::new(0x2000, 0x3000)]
        );
        m.write(Pa(0xffe), &[1, 2, 3, 4]).unwrap();
        let mut b = [9u8; 6];
        m.read_phys(Pa(0xffd), &mut b).unwrap();
        assert_eq!(b, [0, 1, 2, 3, 4, 0]);
        assert_eq!(
            m.write(Pa(0x17ff), &[0, 0]),
            Err(PhysError::Unmapped { pa: Pa(0x1800) })
        );
        assert_eq!(
            m.read_phys(Pa(0x1ffe), &mut b),
            Err(PhysError::Unmapped { pa: Pa(0x1ffe) })
        );
        assert_eq!(
            m.read_phys(Pa(u64::MAX - 2), &mut b),
            Err(PhysError::Unmapped {
                pa: Pa(u64::MAX - 2)
            })
        );
        m.read_phys(Pa(0x3000), &mut []).unwrap();
    }
}
