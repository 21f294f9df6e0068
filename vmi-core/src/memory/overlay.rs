//! A copy-free overlay: any memory source with a few byte patches laid over it.
//!
//! [`Overlay`] wraps a source and answers every read from it, with the bytes of its
//! patches in place of the source's where they overlap (a later patch wins over an
//! earlier one). Nothing of the source is copied, so one large dump serves many
//! variants of a guest at the cost of their patches: the guest-memory fuzzer mutates
//! kernel objects so, and a test can corrupt one field of a real dump. The number of
//! patches and their length are bounded ([`Overlay::MAX_PATCHES`],
//! [`Overlay::MAX_PATCH_LEN`]), and a patch must lie on memory the source holds, so the
//! overlay never changes the source's memory map.

use crate::addr::Pa;
use crate::error::PhysError;
use crate::memory::{PhysRange, PhysRead, PhysicalMemory};

/// Bytes laid over the source at a guest-physical address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    /// Where the bytes go.
    pub pa: Pa,
    /// The bytes read there instead of the source's.
    pub bytes: Vec<u8>,
}

impl Patch {
    fn end(&self) -> u64 {
        // bounded at creation: pa + len does not overflow
        self.pa.0 + self.bytes.len() as u64
    }
}

/// Why a patch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OverlayError {
    /// The overlay already holds [`Overlay::MAX_PATCHES`] patches.
    #[error("the overlay already holds its {max} patches")]
    TooManyPatches {
        /// The bound.
        max: usize,
    },
    /// The patch is empty or longer than [`Overlay::MAX_PATCH_LEN`].
    #[error("a patch of {len} bytes at {pa}: patches are 1 to {max} bytes")]
    BadLength {
        /// Where it was to go.
        pa: Pa,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Part of the patch is not memory the source holds.
    #[error("a patch of {len} bytes at {pa} is not on memory the source holds: {source}")]
    NotBacked {
        /// Where it was to go.
        pa: Pa,
        /// Its length.
        len: usize,
        /// The source's read error.
        source: PhysError,
    },
}

/// A memory source with byte patches laid over it; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Overlay<M> {
    inner: M,
    patches: Vec<Patch>,
}

impl<M: PhysicalMemory> Overlay<M> {
    /// At most this many patches.
    pub const MAX_PATCHES: usize = 256;
    /// At most this many bytes in one patch (a page).
    pub const MAX_PATCH_LEN: usize = 4096;

    /// `inner` as it is, with no patch yet.
    pub fn new(inner: M) -> Overlay<M> {
        Overlay {
            inner,
            patches: Vec::new(),
        }
    }

    /// Lay `bytes` over the source at `pa` (over any earlier patch there too).
    pub fn patch(&mut self, pa: Pa, bytes: &[u8]) -> Result<(), OverlayError> {
        if self.patches.len() >= Self::MAX_PATCHES {
            return Err(OverlayError::TooManyPatches {
                max: Self::MAX_PATCHES,
            });
        }
        let len = bytes.len();
        if len == 0 || len > Self::MAX_PATCH_LEN {
            return Err(OverlayError::BadLength {
                pa,
                len,
                max: Self::MAX_PATCH_LEN,
            });
        }
        // the source holds every byte (so pa + len does not overflow either)
        let mut scratch = vec![0u8; len];
        self.inner
            .read_phys(pa, &mut scratch)
            .map_err(|source| OverlayError::NotBacked { pa, len, source })?;
        self.patches.push(Patch {
            pa,
            bytes: bytes.to_vec(),
        });
        Ok(())
    }

    /// The patches, in the order they were laid.
    pub fn patches(&self) -> &[Patch] {
        &self.patches
    }

    /// Remove every patch: the source as it is.
    pub fn clear(&mut self) {
        self.patches.clear();
    }

    /// The source under the patches.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// Put the patches' bytes into `buf`, which holds the source's bytes at `pa`.
    fn apply(&self, pa: Pa, buf: &mut [u8]) {
        let start = pa.0;
        let end = start.saturating_add(buf.len() as u64);
        for p in &self.patches {
            let (from, to) = (start.max(p.pa.0), end.min(p.end()));
            if from < to {
                let dst = (from - start) as usize..(to - start) as usize;
                let src = (from - p.pa.0) as usize..(to - p.pa.0) as usize;
                buf[dst].copy_from_slice(&p.bytes[src]);
            }
        }
    }
}

impl<M: PhysicalMemory> PhysicalMemory for Overlay<M> {
    fn read_phys(&self, pa: Pa, buf: &mut [u8]) -> Result<(), PhysError> {
        self.inner.read_phys(pa, buf)?;
        self.apply(pa, buf);
        Ok(())
    }

    fn ranges(&self) -> &[PhysRange] {
        self.inner.ranges()
    }

    fn read_phys_batch(&self, reads: &mut [PhysRead<'_>]) {
        self.inner.read_phys_batch(reads);
        for r in reads.iter_mut().filter(|r| r.result.is_ok()) {
            self.apply(r.pa, r.buf);
        }
    }

    fn table_frame(&self, frame: u64) -> Option<Pa> {
        self.inner.table_frame(frame)
    }

    fn invalidate(&self) {
        self.inner.invalidate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MockMemory;

    fn mem() -> MockMemory {
        let mut m = MockMemory::new(&[PhysRange::new(0, 0x2000), PhysRange::new(0x3000, 0x4000)]);
        m.write(Pa(0x100), &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        m
    }

    #[test]
    fn patches_replace_the_bytes_they_cover_only() {
        let mut o = Overlay::new(mem());
        o.patch(Pa(0x102), &[0xaa, 0xbb]).unwrap();
        let mut b = [0u8; 8];
        o.read_phys(Pa(0x100), &mut b).unwrap();
        assert_eq!(b, [1, 2, 0xaa, 0xbb, 5, 6, 7, 8]);
        // a read starting inside the patch, and one ending inside it
        let mut b = [0u8; 2];
        o.read_phys(Pa(0x103), &mut b).unwrap();
        assert_eq!(b, [0xbb, 5]);
        o.read_phys(Pa(0x101), &mut b).unwrap();
        assert_eq!(b, [2, 0xaa]);
        // the source is unchanged
        o.inner().read_phys(Pa(0x102), &mut b).unwrap();
        assert_eq!(b, [3, 4]);
    }

    #[test]
    fn a_later_patch_wins_and_clear_restores_the_source() {
        let mut o = Overlay::new(mem());
        o.patch(Pa(0x100), &[9; 4]).unwrap();
        o.patch(Pa(0x102), &[7; 4]).unwrap();
        assert_eq!(
            o.read_phys_u64(Pa(0x100)).unwrap(),
            u64::from_le_bytes([9, 9, 7, 7, 7, 7, 7, 8])
        );
        o.clear();
        assert_eq!(
            o.read_phys_u64(Pa(0x100)).unwrap(),
            u64::from_le_bytes([1, 2, 3, 4, 5, 6, 7, 8])
        );
    }

    #[test]
    fn batches_get_the_patches_and_keep_their_own_errors() {
        let mut o = Overlay::new(mem());
        o.patch(Pa(0x100), &[0xff]).unwrap();
        let (mut a, mut b) = ([0u8; 2], [0u8; 2]);
        let mut reads = [
            PhysRead::new(Pa(0x100), &mut a),
            PhysRead::new(Pa(0x2fff), &mut b),
        ];
        o.read_phys_batch(&mut reads);
        assert!(reads[0].result.is_ok());
        assert!(matches!(reads[1].result, Err(PhysError::Unmapped { .. })));
        assert_eq!(a, [0xff, 2]);
    }

    #[test]
    fn patches_are_bounded_and_only_on_backed_memory() {
        let mut o = Overlay::new(mem());
        assert!(matches!(
            o.patch(Pa(0x1fff), &[0, 0]),
            Err(OverlayError::NotBacked { pa: Pa(0x1fff), .. })
        ));
        assert!(matches!(
            o.patch(Pa(u64::MAX), &[0, 0]),
            Err(OverlayError::NotBacked { .. })
        ));
        assert!(matches!(
            o.patch(Pa(0), &[]),
            Err(OverlayError::BadLength { len: 0, .. })
        ));
        assert!(matches!(
            o.patch(Pa(0), &vec![0; Overlay::<MockMemory>::MAX_PATCH_LEN + 1]),
            Err(OverlayError::BadLength { .. })
        ));
        for i in 0..Overlay::<MockMemory>::MAX_PATCHES {
            o.patch(Pa(i as u64), &[0]).unwrap();
        }
        assert_eq!(
            o.patch(Pa(0), &[0]),
            Err(OverlayError::TooManyPatches {
                max: Overlay::<MockMemory>::MAX_PATCHES
            })
        );
        // the memory map is the source's
        assert_eq!(o.ranges(), mem().ranges());
    }
}
