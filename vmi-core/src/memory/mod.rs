//! Memory sources and what they can do.
//!
//! A source implements only the capabilities it has:
//!
//! | source | [`PhysicalMemory`] | [`VcpuRegisters`] | [`PauseResume`] |
//! |---|---|---|---|
//! | [`RawImage`] (file offset = physical address) | yes | — | — |
//! | [`ElfCore`] (QEMU `dump-guest-memory`, `virsh dump`) | yes | with QEMU CPU notes | — |
//! | [`LimeImage`] | yes | — | — |
//! | [`QemuLive`] (RAM file or QEMU process, + QMP) | yes | yes | yes |
//! | [`QemuLive`] attached by pid, no monitor | yes | — | — |
//! | [`QemuLive`] of a libvirt domain (process + monitor through libvirt) | yes | yes | yes |
//! | [`XenDomain`] (from dom0: foreign mappings, libxenctrl) | yes | yes | yes |
//! | [`MockMemory`] (tests) | yes | — | — |
//! | [`Overlay`] (any source with byte patches laid over it) | yes | — | — |
//! | [`Recording`] (any source, keeping what a computation read) | yes | — | — |
//!
//! [`DumpFormat`] tells which of the three dump sources a file is.
//!
//! Caches are wrappers around any source: [`PageCache`] keeps recently read pages
//! (bounded LRU, [`PageCache::invalidate`] for live sources); translation caching lives
//! in [`AddressSpace`](crate::arch::x86_64::AddressSpace).
//!
//! Guest memory is hostile input: every read is bounds-checked against the source's
//! ranges and returns a [`PhysError`] carrying the address; nothing panics on guest data.

mod cache;
mod dump;
mod elf;
mod file;
mod libvirt;
mod lime;
mod mock;
mod monitor;
mod overlay;
mod qemu;
pub mod qmp;
mod raw;
pub mod record;
mod xen;

pub use cache::{CacheStats, PageCache};
pub use dump::DumpFormat;
pub use elf::{ElfCore, PrStatus};
pub use libvirt::{
    running_domains, DomainState, LibvirtDomain, LibvirtError, LibvirtMonitor, SYSTEM_URI,
};
pub use lime::LimeImage;
pub use mock::MockMemory;
pub use monitor::Monitor;
pub use overlay::{Overlay, OverlayError, Patch};
pub use qemu::{
    parse_info_registers, parse_mtree, Backend, CommandLine, CommandLineError, ProcessReadStats,
    QemuLive, QemuOptions, RamRegion,
};
pub use raw::RawImage;
pub use record::{ReadLog, Recorder, Recording};
pub use xen::{
    list_domains, XenDomain, XenDomainInfo, XenError, XenGuestKind, XenOptions, XenStats,
};

use std::sync::Arc;

use crate::addr::{Pa, Va};
use crate::arch::x86_64::Registers;
use crate::error::{Error, PhysError, ReadError};

/// A range of guest-physical addresses, `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhysRange {
    /// First address.
    pub start: Pa,
    /// One past the last address.
    pub end: Pa,
}

impl PhysRange {
    /// `start..end`.
    pub const fn new(start: u64, end: u64) -> PhysRange {
        PhysRange {
            start: Pa(start),
            end: Pa(end),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end.0.saturating_sub(self.start.0)
    }

    /// True for an empty range.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when `pa` is in the range.
    pub fn contains(&self, pa: Pa) -> bool {
        self.start <= pa && pa < self.end
    }
}

/// One element of a batched physical read: where, into what, and how it went.
#[derive(Debug)]
pub struct PhysRead<'a> {
    /// Where to read.
    pub pa: Pa,
    /// What to fill.
    pub buf: &'a mut [u8],
    /// Set by [`PhysicalMemory::read_phys_batch`].
    pub result: Result<(), PhysError>,
}

impl<'a> PhysRead<'a> {
    /// A read of `buf.len()` bytes at `pa`, not yet done.
    pub fn new(pa: Pa, buf: &'a mut [u8]) -> PhysRead<'a> {
        PhysRead {
            pa,
            buf,
            result: Ok(()),
        }
    }
}

/// Guest-physical memory.
///
/// Reads are all-or-nothing: `read_phys` fills the whole buffer or returns the first
/// address it could not read (a read may span several ranges as long as they are
/// contiguous). Implementations are `&self` so one source can serve many readers.
pub trait PhysicalMemory {
    /// Fill `buf` with the bytes at `pa..pa + buf.len()`.
    fn read_phys(&self, pa: Pa, buf: &mut [u8]) -> Result<(), PhysError>;

    /// The guest-physical ranges the source holds, sorted, not overlapping, adjacent
    /// ranges merged.
    fn ranges(&self) -> &[PhysRange];

    /// Many reads at once; each element gets its own result. Sources with a per-call
    /// cost (a hypercall, a socket) override this.
    fn read_phys_batch(&self, reads: &mut [PhysRead<'_>]) {
        for r in reads {
            r.result = self.read_phys(r.pa, r.buf);
        }
    }

    /// A little-endian `u64` at `pa`.
    fn read_phys_u64(&self, pa: Pa) -> Result<u64, PhysError> {
        let mut b = [0u8; 8];
        self.read_phys(pa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A little-endian `u32` at `pa`.
    fn read_phys_u32(&self, pa: Pa) -> Result<u32, PhysError> {
        let mut b = [0u8; 4];
        self.read_phys(pa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// The guest-physical address of the 4 KiB frame at `frame` as page-table entries
    /// (and CR3) name it. Identity for every source but one whose guest's page tables
    /// hold frames of another numbering (a Xen PV domain's hold machine frames, which
    /// the source turns back into its guest-physical ones). `None` when the frame is
    /// not the guest's. `frame` is 4 KiB aligned.
    fn table_frame(&self, frame: u64) -> Option<Pa> {
        Some(Pa(frame))
    }

    /// Forget what the source keeps of guest memory between reads (a live source's read
    /// cache), so that the next read sees the guest as it is now. The kernel's
    /// [`AddressSpace::invalidate`](crate::arch::x86_64::AddressSpace::invalidate) calls
    /// it; sources that keep nothing do nothing.
    fn invalidate(&self) {}

    /// True when `pa` is in one of [`PhysicalMemory::ranges`].
    fn is_backed(&self, pa: Pa) -> bool {
        let ranges = self.ranges();
        let i = ranges.partition_point(|r| r.end <= pa);
        ranges.get(i).is_some_and(|r| r.contains(pa))
    }
}

macro_rules! forward_physical_memory {
    ($($ty:ty),*) => {$(
        impl<T: PhysicalMemory + ?Sized> PhysicalMemory for $ty {
            fn read_phys(&self, pa: Pa, buf: &mut [u8]) -> Result<(), PhysError> {
                (**self).read_phys(pa, buf)
            }
            fn ranges(&self) -> &[PhysRange] {
                (**self).ranges()
            }
            fn read_phys_batch(&self, reads: &mut [PhysRead<'_>]) {
                (**self).read_phys_batch(reads)
            }
            fn table_frame(&self, frame: u64) -> Option<Pa> {
                (**self).table_frame(frame)
            }
            fn invalidate(&self) {
                (**self).invalidate()
            }
        }
    )*};
}

forward_physical_memory!(&T, Box<T>, Arc<T>);

/// Guest-virtual memory (one address space).
pub trait VirtualMemory {
    /// Fill `buf` with the bytes at `va..va + buf.len()`, crossing pages as needed.
    fn read_virt(&self, va: Va, buf: &mut [u8]) -> Result<(), ReadError>;

    /// A little-endian `u64` at `va`.
    fn read_u64(&self, va: Va) -> Result<u64, ReadError> {
        let mut b = [0u8; 8];
        self.read_virt(va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A little-endian `u32` at `va`.
    fn read_u32(&self, va: Va) -> Result<u32, ReadError> {
        let mut b = [0u8; 4];
        self.read_virt(va, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// A little-endian `u16` at `va`.
    fn read_u16(&self, va: Va) -> Result<u16, ReadError> {
        let mut b = [0u8; 2];
        self.read_virt(va, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// The byte at `va`.
    fn read_u8(&self, va: Va) -> Result<u8, ReadError> {
        let mut b = [0u8; 1];
        self.read_virt(va, &mut b)?;
        Ok(b[0])
    }

    /// A pointer at `va`.
    fn read_va(&self, va: Va) -> Result<Va, ReadError> {
        self.read_u64(va).map(Va)
    }

    /// `len` bytes at `va`. `len` is the caller's bound: never pass a length read from
    /// the guest without capping it.
    fn read_bytes(&self, va: Va, len: usize) -> Result<Vec<u8>, ReadError> {
        let mut v = vec![0u8; len];
        self.read_virt(va, &mut v)?;
        Ok(v)
    }

    /// The NUL-terminated string at `va`, without its NUL, at most `max` bytes (a
    /// string that does not end within `max` bytes is cut there). Reads page by page,
    /// so a string that ends before an unmapped page reads fine.
    fn read_cstr(&self, va: Va, max: usize) -> Result<Vec<u8>, ReadError> {
        let mut out = Vec::new();
        let mut at = va;
        while out.len() < max {
            let chunk = (at.to_page_end() as usize).min(max - out.len());
            let mut buf = [0u8; 4096];
            self.read_virt(at, &mut buf[..chunk])?;
            if let Some(nul) = buf[..chunk].iter().position(|&b| b == 0) {
                out.extend_from_slice(&buf[..nul]);
                return Ok(out);
            }
            out.extend_from_slice(&buf[..chunk]);
            at = at.checked_add(chunk as u64).ok_or(ReadError::Wrap {
                va: at,
                len: chunk as u64,
            })?;
        }
        Ok(out)
    }
}

/// vCPU registers.
pub trait VcpuRegisters {
    /// How many vCPUs the source reports.
    fn vcpu_count(&self) -> usize;

    /// The registers of vCPU `vcpu` (0-based, in the source's order). A live source
    /// reads them now; a running vCPU's values are a snapshot that may already be stale.
    fn registers(&self, vcpu: usize) -> Result<Registers, Error>;
}

/// Stopping and restarting the guest's vCPUs.
pub trait PauseResume {
    /// Stop every vCPU (no effect when already stopped).
    fn pause(&self) -> Result<(), Error>;

    /// Restart the vCPUs.
    fn resume(&self) -> Result<(), Error>;

    /// True while the vCPUs run.
    fn is_running(&self) -> Result<bool, Error>;
}

/// Pauses a guest for as long as it lives and resumes it on drop if it was running
/// before (also while unwinding from a panic).
#[derive(Debug)]
pub struct PauseGuard<'a, P: PauseResume + ?Sized> {
    source: &'a P,
    was_running: bool,
}

impl<'a, P: PauseResume + ?Sized> PauseGuard<'a, P> {
    /// Pause `source` if it runs.
    pub fn new(source: &'a P) -> Result<PauseGuard<'a, P>, Error> {
        let was_running = source.is_running()?;
        if was_running {
            source.pause()?;
        }
        Ok(PauseGuard {
            source,
            was_running,
        })
    }

    /// Resume now (if the guest was running) and report the error a drop would swallow.
    pub fn resume(mut self) -> Result<(), Error> {
        let was_running = std::mem::replace(&mut self.was_running, false);
        if was_running {
            self.source.resume()
        } else {
            Ok(())
        }
    }
}

impl<P: PauseResume + ?Sized> Drop for PauseGuard<'_, P> {
    fn drop(&mut self) {
        if self.was_running {
            let _ = self.source.resume();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn sources_are_send_and_sync() {
        send_sync::<RawImage>();
        send_sync::<ElfCore>();
        send_sync::<LimeImage>();
        send_sync::<QemuLive>();
        send_sync::<XenDomain>();
        send_sync::<MockMemory>();
        send_sync::<PageCache<ElfCore>>();
        send_sync::<crate::arch::x86_64::AddressSpace<PageCache<QemuLive>>>();
    }

    #[test]
    fn batched_reads_fail_per_element() {
        let mut m = MockMemory::new(&[PhysRange::new(0, 0x2000)]);
        m.write_u64(Pa(0x10), 0x1122_3344_5566_7788).unwrap();
        let (mut a, mut b, mut c) = ([0u8; 8], [0u8; 8], [0u8; 0x10]);
        let mut reads = [
            PhysRead::new(Pa(0x10), &mut a),
            PhysRead::new(Pa(0x1ffc), &mut b),
            PhysRead::new(Pa(0x1000), &mut c),
        ];
        (&m as &dyn PhysicalMemory).read_phys_batch(&mut reads);
        assert_eq!(reads[0].result, Ok(()));
        assert_eq!(reads[1].result, Err(PhysError::Unmapped { pa: Pa(0x2000) }));
        assert_eq!(reads[2].result, Ok(()));
        assert_eq!(u64::from_le_bytes(a), 0x1122_3344_5566_7788);
        assert!(m.is_backed(Pa(0x1fff)) && !m.is_backed(Pa(0x2000)));
    }
}
