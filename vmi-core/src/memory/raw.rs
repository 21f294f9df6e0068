//! Raw physical images: file offset = guest-physical address.

use std::path::Path;

use crate::addr::Pa;
use crate::error::{Error, PhysError};
use crate::memory::file::{Backing, MappedFile, Segment, SegmentMap, Warnings};
use crate::memory::{PhysRange, PhysicalMemory};

const FORMAT: &str = "raw image";

/// A raw physical memory image (e.g. QEMU `pmemsave`, `dd` of `/dev/mem`, the lab's
/// `dump_raw`), mapped read-only. Holes in the guest's memory map are whatever the
/// image holds there (zeros, usually); give the real map with
/// [`RawImage::open_with_ranges`] to make them unreadable instead.
#[derive(Debug)]
pub struct RawImage {
    file: MappedFile,
    map: SegmentMap,
}

impl RawImage {
    /// Map the image; the whole file is readable, from physical address 0.
    pub fn open(path: impl AsRef<Path>) -> Result<RawImage, Error> {
        let file = MappedFile::open(path.as_ref(), FORMAT)?;
        let len = file.len();
        RawImage::with_segments(file, &[PhysRange::new(0, len)])
    }

    /// Map the image and read only `ranges` of it (each must lie inside the file).
    pub fn open_with_ranges(
        path: impl AsRef<Path>,
        ranges: &[PhysRange],
    ) -> Result<RawImage, Error> {
        let file = MappedFile::open(path.as_ref(), FORMAT)?;
        RawImage::with_segments(file, ranges)
    }

    fn with_segments(file: MappedFile, ranges: &[PhysRange]) -> Result<RawImage, Error> {
        if let Some(r) = ranges.iter().find(|r| r.end.0 > file.len()) {
            return Err(Error::Format {
                path: file.path().to_path_buf(),
                format: FORMAT,
                what: format!(
                    "range {}..{} passes the end of the file ({:#x} bytes)",
                    r.start,
                    r.end,
                    file.len()
                ),
            });
        }
        let segs = ranges
            .iter()
            .map(|r| Segment {
                start: r.start.0,
                end: r.end.0,
                backing: Backing::File(r.start.0),
            })
            .collect();
        let map = SegmentMap::build(segs, file.len(), &mut Warnings::default());
        Ok(RawImage { file, map })
    }

    /// The image file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

impl PhysicalMemory for RawImage {
    fn read_phys(&self, pa: Pa, buf: &mut [u8]) -> Result<(), PhysError> {
        self.map.read(&self.file, pa, buf)
    }

    fn ranges(&self) -> &[PhysRange] {
        self.map.ranges()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_by_offset_and_respects_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.raw");
        let data: Vec<u8> = (0..0x3000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let raw = RawImage::open(&path).unwrap();
        assert_eq!(raw.ranges(), &[PhysRange::new(0, 0x3000)]);
        let mut b = [0u8; 16];
        raw.read_phys(Pa(0x1ff8), &mut b).unwrap();
        assert_eq!(&b, &data[0x1ff8..0x2008]);
        assert_eq!(
            raw.read_phys(Pa(0x2ff8), &mut b),
            Err(PhysError::Unmapped { pa: Pa(0x3000) })
        );
        assert_eq!(
            raw.read_phys(Pa(u64::MAX - 3), &mut b),
            Err(PhysError::Unmapped {
                pa: Pa(u64::MAX - 3)
            })
        );

        let holes = RawImage::open_with_ranges(
            &path,
            &[PhysRange::new(0, 0x1000), PhysRange::new(0x2000, 0x3000)],
        )
        .unwrap();
        assert_eq!(
            holes.read_phys(Pa(0xff8), &mut b),
            Err(PhysError::Unmapped { pa: Pa(0x1000) })
        );
        holes.read_phys(Pa(0x2000), &mut b).unwrap();
        assert!(!holes.is_backed(Pa(0x1800)));
        assert!(holes.is_backed(Pa(0x2800)));
        assert!(RawImage::open_with_ranges(&path, &[PhysRange::new(0, 0x4000)]).is_err());

        let empty = dir.path().join("empty.raw");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(RawImage::open(&empty), Err(Error::Format { .. })));
    }
}
