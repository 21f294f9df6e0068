//! A PV guest's p2m (guest frame to machine frame), read as its `shared_info`
//! publishes it (the linear list, else the frame-list tree), and its inverse.

use std::collections::HashMap;

use crate::addr::{Pa, Va};
use crate::arch::x86_64::{translate, PageTableRoot, PagingMode};
use crate::memory::{PhysRange, PhysRead, PhysicalMemory};

use super::ffi::{self, ArchSharedInfo};
use super::ranges::frames_to_ranges;
use super::{INVALID_GFN, MFN_LIMIT, PAGE};

/// Frames a PV guest's p2m may cover (64 GiB): `max_pfn` is the guest's word.
const MAX_P2M_FRAMES: u64 = 1 << 24;
/// p2m entries with either of these bits set name no frame of the guest's own
/// (`FOREIGN_FRAME_BIT`, `IDENTITY_FRAME_BIT`; all ones is `INVALID_P2M_ENTRY`).
const P2M_NOT_OWN: u64 = 3 << 62;
/// Tries when the guest changes its p2m while it is read.
const P2M_TRIES: usize = 3;
/// Warnings kept about p2m pages that could not be read.
const MAX_WARNINGS: usize = 16;

/// A PV guest's frame tables.
#[derive(Debug, Default)]
pub(super) struct PvFrames {
    /// Guest frame → machine frame ([`INVALID_GFN`] where the guest has none).
    pub(super) p2m: Vec<u64>,
    /// Machine frame → guest frame, the inverse of `p2m`.
    pub(super) m2p: HashMap<u64, u64>,
}

impl PvFrames {
    /// From the p2m as read: entries that name no machine frame of the guest's own
    /// become invalid; a machine frame named twice keeps its first guest frame.
    pub(super) fn new(mut p2m: Vec<u64>) -> PvFrames {
        let mut m2p = HashMap::with_capacity(p2m.len());
        for (pfn, e) in p2m.iter_mut().enumerate() {
            if *e & P2M_NOT_OWN != 0 || *e >= MFN_LIMIT {
                *e = INVALID_GFN;
            } else {
                m2p.entry(*e).or_insert(pfn as u64);
            }
        }
        PvFrames { p2m, m2p }
    }

    /// The guest frames that have a machine frame.
    pub(super) fn ranges(&self) -> Vec<PhysRange> {
        let frames: Vec<u64> = (0..self.p2m.len() as u64)
            .filter(|&g| self.p2m[g as usize] != INVALID_GFN)
            .collect();
        frames_to_ranges(&frames)
    }
}

/// `struct arch_shared_info` out of a `shared_info` page.
fn arch_shared_info(page: &[u8]) -> Option<ArchSharedInfo> {
    let at = ffi::SHARED_INFO_ARCH;
    let word = |i: usize| -> Option<u64> {
        let b = page.get(at + 8 * i..at + 8 * i + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    };
    Some(ArchSharedInfo {
        max_pfn: word(0)?,
        pfn_to_mfn_frame_list_list: word(1)?,
        nmi_reason: word(2)?,
        p2m_cr3: word(3)?,
        p2m_vaddr: word(4)?,
        p2m_generation: word(5)?,
    })
}

/// A PV guest's p2m, read through `machine` (machine addresses) as its `shared_info`
/// (at machine frame `shared_info_frame`) publishes it: the linear list at `p2m_vaddr`
/// (mapped by the page tables at `p2m_cr3`) when there is one, else the frame-list
/// tree. Read again if the guest changed the list's mapping meanwhile
/// (`p2m_generation`). Entries of p2m pages that cannot be read are invalid, with a
/// warning each (at most [`MAX_WARNINGS`], then a count).
pub(crate) fn read_p2m<M: PhysicalMemory + ?Sized>(
    machine: &M,
    shared_info_frame: u64,
) -> Result<(Vec<u64>, Vec<String>), String> {
    // read afresh each time (a batched whole-page read is never cached)
    let shared_info = || -> Result<ArchSharedInfo, String> {
        let mut page = vec![0u8; PAGE as usize];
        let mut read = [PhysRead::new(
            Pa(shared_info_frame.saturating_mul(PAGE)),
            &mut page,
        )];
        machine.read_phys_batch(&mut read);
        read[0]
            .result
            .map_err(|e| format!("shared_info (machine frame {shared_info_frame:#x}): {e}"))?;
        arch_shared_info(&page).ok_or_else(|| "shared_info page too short".into())
    };
    let mut last = String::new();
    for _ in 0..P2M_TRIES {
        let a = shared_info()?;
        if a.max_pfn == 0 || a.max_pfn > MAX_P2M_FRAMES {
            return Err(format!(
                "shared_info says it covers {:#x} frames (at most {MAX_P2M_FRAMES:#x} are read)",
                a.max_pfn
            ));
        }
        if !a.p2m_generation.is_multiple_of(2) {
            last = "the guest kept changing it".into();
            std::thread::sleep(std::time::Duration::from_millis(1));
            continue;
        }
        let read = if a.p2m_cr3 != 0 && a.p2m_vaddr != 0 {
            read_p2m_list(machine, &a)
        } else if a.pfn_to_mfn_frame_list_list != 0 && a.pfn_to_mfn_frame_list_list != u64::MAX {
            read_p2m_tree(machine, &a)
        } else {
            return Err("shared_info publishes neither a p2m list nor a frame-list tree (the guest has not set it up yet)".into());
        };
        if shared_info()?.p2m_generation == a.p2m_generation {
            return read;
        }
        last = "the guest kept changing it".into();
    }
    Err(last)
}

/// Collects per-page failures as at most [`MAX_WARNINGS`] lines plus a count.
#[derive(Default)]
struct Failures {
    lines: Vec<String>,
    more: usize,
}

impl Failures {
    fn add(&mut self, what: String) {
        if self.lines.len() < MAX_WARNINGS {
            self.lines.push(what);
        } else {
            self.more += 1;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.more > 0 {
            self.lines
                .push(format!("and {} more p2m pages not read", self.more));
        }
        self.lines
    }
}

/// Read whole pages at `addrs` (machine addresses; `None` = a page already known to be
/// unreadable) into `out`, one page per address, in one batch; a page that fails stays
/// all ones (invalid entries) and is reported.
fn read_pages<M: PhysicalMemory + ?Sized>(
    machine: &M,
    addrs: &[Option<Pa>],
    out: &mut [u8],
    what: &str,
    failures: &mut Failures,
) {
    out.fill(0xff);
    let mut reads: Vec<PhysRead<'_>> = Vec::with_capacity(addrs.len());
    let mut index = Vec::with_capacity(addrs.len());
    for (i, (pa, buf)) in addrs.iter().zip(out.chunks_mut(PAGE as usize)).enumerate() {
        if let Some(pa) = pa {
            reads.push(PhysRead::new(*pa, buf));
            index.push(i);
        }
    }
    machine.read_phys_batch(&mut reads);
    for (r, i) in reads.iter_mut().zip(index) {
        if let Err(e) = r.result {
            r.buf.fill(0xff);
            failures.add(format!("{what} {i}: {e}"));
        }
    }
}

/// Entries as little-endian words.
fn words(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0xff; 8])))
}

/// The linear p2m list: page `i` of it at `p2m_vaddr + i * 4096`, found through the
/// page tables at `p2m_cr3` (machine frames, 4-level: PV guests do not run 5-level).
fn read_p2m_list<M: PhysicalMemory + ?Sized>(
    machine: &M,
    a: &ArchSharedInfo,
) -> Result<(Vec<u64>, Vec<String>), String> {
    let root = PageTableRoot::from_cr3(a.p2m_cr3, PagingMode::FourLevel);
    let pages = a.max_pfn.div_ceil(PAGE / 8);
    let mut failures = Failures::default();
    let mut addrs = Vec::with_capacity(pages as usize);
    for i in 0..pages {
        let va = a
            .p2m_vaddr
            .checked_add(i * PAGE)
            .ok_or("p2m_vaddr wraps around")?;
        match translate(machine, root, Va(va)) {
            Ok(t) => addrs.push(Some(t.pa)),
            Err(e) => {
                failures.add(format!("p2m page {i}: {e}"));
                addrs.push(None);
            }
        }
    }
    if addrs.iter().all(Option::is_none) {
        return Err(format!(
            "no page of the list at {:#x} is mapped by the tables at {:#x}: {}",
            a.p2m_vaddr,
            a.p2m_cr3,
            failures.lines.first().map_or("", String::as_str)
        ));
    }
    let mut bytes = vec![0u8; pages as usize * PAGE as usize];
    read_pages(machine, &addrs, &mut bytes, "p2m page", &mut failures);
    let mut p2m: Vec<u64> = words(&bytes).collect();
    p2m.truncate(a.max_pfn as usize);
    Ok((p2m, failures.finish()))
}

/// The frame-list tree: the frame-list list holds the machine frames of frame-list
/// pages, each of which holds the machine frames of 512 p2m pages.
fn read_p2m_tree<M: PhysicalMemory + ?Sized>(
    machine: &M,
    a: &ArchSharedInfo,
) -> Result<(Vec<u64>, Vec<String>), String> {
    let per_page = PAGE / 8;
    let pages = a.max_pfn.div_ceil(per_page);
    let lists = pages.div_ceil(per_page);
    let frame = |e: u64| (e < MFN_LIMIT).then(|| Pa(e * PAGE));
    let mut top = vec![0u8; PAGE as usize];
    let fll = frame(a.pfn_to_mfn_frame_list_list).ok_or("frame-list list out of range")?;
    machine
        .read_phys(fll, &mut top)
        .map_err(|e| format!("the frame-list list: {e}"))?;
    let mut failures = Failures::default();
    let list_addrs: Vec<Option<Pa>> = words(&top).take(lists as usize).map(frame).collect();
    let mut list_bytes = vec![0u8; list_addrs.len() * PAGE as usize];
    read_pages(
        machine,
        &list_addrs,
        &mut list_bytes,
        "frame-list page",
        &mut failures,
    );
    let page_addrs: Vec<Option<Pa>> = words(&list_bytes).take(pages as usize).map(frame).collect();
    let mut bytes = vec![0u8; page_addrs.len() * PAGE as usize];
    read_pages(machine, &page_addrs, &mut bytes, "p2m page", &mut failures);
    let mut p2m: Vec<u64> = words(&bytes).collect();
    p2m.truncate(a.max_pfn as usize);
    Ok((p2m, failures.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MockMemory;

    #[test]
    fn pv_frames_keep_only_own_machine_frames() {
        let pv = PvFrames::new(vec![
            0x500,
            0x501,
            u64::MAX,          // INVALID_P2M_ENTRY
            (1 << 62) | 3,     // identity (I/O)
            (1 << 63) | 0x900, // foreign
            MFN_LIMIT,         // out of range
            0x501,             // named twice: the first guest frame keeps it
            0x7,
        ]);
        assert_eq!(pv.p2m[2..6], [INVALID_GFN; 4]);
        assert_eq!(pv.m2p.len(), 3);
        assert_eq!(pv.m2p[&0x501], 1);
        assert_eq!(pv.m2p[&0x7], 7);
        assert_eq!(
            pv.ranges(),
            vec![PhysRange::new(0, 0x2000), PhysRange::new(0x6000, 0x8000)]
        );
    }

    /// Machine memory with a shared_info page at frame 0x10; returns it with the
    /// arch_shared_info written.
    fn machine_with(a: &ArchSharedInfo) -> MockMemory {
        let mut m = MockMemory::new(&[PhysRange::new(0, 0x100_0000)]);
        let words = [
            a.max_pfn,
            a.pfn_to_mfn_frame_list_list,
            a.nmi_reason,
            a.p2m_cr3,
            a.p2m_vaddr,
            a.p2m_generation,
        ];
        for (i, w) in words.iter().enumerate() {
            m.write_u64(
                Pa(0x10_000 + ffi::SHARED_INFO_ARCH as u64 + 8 * i as u64),
                *w,
            )
            .unwrap();
        }
        m
    }

    /// p2m page `i` (at machine frame `frames[i]`) holds 0x10000 + pfn for each pfn.
    fn write_p2m_pages(m: &mut MockMemory, frames: &[u64]) {
        for (i, f) in frames.iter().enumerate() {
            for j in 0..512u64 {
                m.write_u64(Pa(f * PAGE + 8 * j), 0x10000 + i as u64 * 512 + j)
                    .unwrap();
            }
        }
    }

    #[test]
    fn p2m_list_read_through_machine_page_tables() {
        use crate::arch::x86_64::{PageSize, PageTableBuilder};
        let vaddr = 0xffff_c900_0000_0000u64;
        let frames = [0x500u64, 0x380, 0x777];
        let a = ArchSharedInfo {
            max_pfn: 1100, // three pages, the last one partly
            p2m_vaddr: vaddr,
            ..ArchSharedInfo::default()
        };
        let mut m = machine_with(&a);
        let mut b = PageTableBuilder::new(
            &mut m,
            PagingMode::FourLevel,
            PhysRange::new(0x80_0000, 0x90_0000),
        )
        .unwrap();
        // pages 0 and 2 mapped, page 1 not: its entries are invalid, with a warning
        for i in [0usize, 2] {
            b.map(
                &mut m,
                Va(vaddr + i as u64 * PAGE),
                Pa(frames[i] * PAGE),
                PageSize::Size4K,
                0,
            )
            .unwrap();
        }
        write_p2m_pages(&mut m, &frames);
        let cr3_at = 0x10_000 + ffi::SHARED_INFO_ARCH as u64 + 3 * 8;
        m.write_u64(Pa(cr3_at), b.cr3()).unwrap();
        let (p2m, warnings) = read_p2m(&m, 0x10).unwrap();
        assert_eq!(p2m.len(), 1100);
        assert_eq!((p2m[0], p2m[511]), (0x10000, 0x10000 + 511));
        assert!(p2m[512..1024].iter().all(|&e| e == u64::MAX));
        assert_eq!(p2m[1099], 0x10000 + 1099);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("p2m page 1:"), "{warnings:?}");
    }

    #[test]
    fn p2m_tree_and_bad_shared_info() {
        let frames = [0x600u64, 0x601];
        let a = ArchSharedInfo {
            max_pfn: 1024,
            pfn_to_mfn_frame_list_list: 0x20,
            ..ArchSharedInfo::default()
        };
        let mut m = machine_with(&a);
        m.write_u64(Pa(0x20 * PAGE), 0x21).unwrap(); // one frame-list page
        m.write_u64(Pa(0x21 * PAGE), frames[0]).unwrap();
        m.write_u64(Pa(0x21 * PAGE + 8), frames[1]).unwrap();
        write_p2m_pages(&mut m, &frames);
        let (p2m, warnings) = read_p2m(&m, 0x10).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(p2m, (0..1024).map(|i| 0x10000 + i).collect::<Vec<_>>());

        // a guest that claims too much, one that publishes nothing, and no shared_info
        let huge = machine_with(&ArchSharedInfo {
            max_pfn: MAX_P2M_FRAMES + 1,
            ..a
        });
        assert!(read_p2m(&huge, 0x10).unwrap_err().contains("frames"));
        let none = machine_with(&ArchSharedInfo {
            pfn_to_mfn_frame_list_list: u64::MAX,
            ..a
        });
        assert!(read_p2m(&none, 0x10).unwrap_err().contains("neither"));
        assert!(read_p2m(&m, 0x2000).unwrap_err().contains("shared_info"));
    }
}
