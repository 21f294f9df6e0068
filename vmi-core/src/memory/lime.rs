//! LiME images: a sequence of ranges, each a 32-byte header (magic `0x4C694D45`,
//! version 1, first and last physical address, 8 reserved bytes) followed by its bytes.
//!
//! Our own reader: no maintained crate reads LiME, and the format is one header type.

use std::path::Path;

use crate::addr::Pa;
use crate::error::{Error, PhysError};
use crate::memory::file::{Backing, MappedFile, Segment, SegmentMap, Warnings};
use crate::memory::{PhysRange, PhysicalMemory};

const FORMAT: &str = "LiME image";
/// The header magic ("EMiL" on disk).
pub const LIME_MAGIC: u32 = 0x4C69_4D45;
const HEADER: u64 = 32;
/// Ranges read at most.
const MAX_RANGES: usize = 1 << 16;

/// A LiME image, mapped read-only.
#[derive(Debug)]
pub struct LimeImage {
    file: MappedFile,
    map: SegmentMap,
    warnings: Vec<String>,
}

impl LimeImage {
    /// Map the image and read its range headers. A bad header is an error; a last range
    /// cut short by the end of the file is kept up to there, with a warning.
    pub fn open(path: impl AsRef<Path>) -> Result<LimeImage, Error> {
        let file = MappedFile::open(path.as_ref(), FORMAT)?;
        let b = file.bytes();
        let len = file.len();
        let bad = |what: String| Error::Format {
            path: file.path().to_path_buf(),
            format: FORMAT,
            what,
        };
        let mut segs = Vec::new();
        let mut pos = 0u64;
        while pos < len {
            if segs.len() == MAX_RANGES {
                return Err(bad(format!("more than {MAX_RANGES} ranges")));
            }
            let Some(h) = b.get(pos as usize..(pos + HEADER) as usize) else {
                return Err(bad(format!(
                    "{} bytes at offset {pos:#x} are too few for a range header",
                    len - pos
                )));
            };
            let word = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap_or_default());
            let quad = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap_or_default());
            if word(0) != LIME_MAGIC {
                return Err(bad(format!(
                    "no LiME magic at offset {pos:#x} (found {:#010x})",
                    word(0)
                )));
            }
            if word(4) != 1 {
                return Err(bad(format!(
                    "range header at offset {pos:#x} has version {}, only 1 is known",
                    word(4)
                )));
            }
            let (start, last) = (quad(8), quad(16));
            if last < start {
                return Err(bad(format!(
                    "range header at offset {pos:#x}: last address {last:#x} before first {start:#x}"
                )));
            }
            let data = pos + HEADER;
            // last - start + 1 overflows only for the full 2^64 range, which no file holds
            let size = (last - start)
                .checked_add(1)
                .ok_or_else(|| bad(format!("range header at offset {pos:#x} spans all of 2^64")))?;
            let end = start.saturating_add(size);
            segs.push(Segment {
                start,
                end,
                backing: Backing::File(data),
            });
            pos = data.saturating_add(size);
        }
        let mut warnings = Warnings::default();
        let map = SegmentMap::build(segs, len, &mut warnings);
        Ok(LimeImage {
            file,
            map,
            warnings: warnings.into_vec(),
        })
    }

    /// The image file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// What had to be clipped while reading the image.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

impl PhysicalMemory for LimeImage {
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

    fn header(start: u64, last: u64) -> Vec<u8> {
        let mut h = vec![0u8; 32];
        h[0..4].copy_from_slice(&LIME_MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&1u32.to_le_bytes());
        h[8..16].copy_from_slice(&start.to_le_bytes());
        h[16..24].copy_from_slice(&last.to_le_bytes());
        h
    }

    #[test]
    fn ranges_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = header(0, 0xfff);
        img.extend(vec![1u8; 0x1000]);
        img.extend(header(0x10_0000, 0x10_1fff));
        img.extend(vec![2u8; 0x2000]);
        let p = dir.path().join("m.lime");
        std::fs::write(&p, &img).unwrap();
        let l = LimeImage::open(&p).unwrap();
        assert_eq!(
            l.ranges(),
            &[
                PhysRange::new(0, 0x1000),
                PhysRange::new(0x10_0000, 0x10_2000)
            ]
        );
        let mut b = [0u8; 4];
        l.read_phys(Pa(0x10_1ffc), &mut b).unwrap();
        assert_eq!(b, [2; 4]);
        assert_eq!(
            l.read_phys(Pa(0xffe), &mut b),
            Err(PhysError::Unmapped { pa: Pa(0x1000) })
        );

        // cut short: kept up to the end, with a warning
        std::fs::write(&p, &img[..img.len() - 0x1000]).unwrap();
        let l = LimeImage::open(&p).unwrap();
        assert_eq!(l.ranges()[1], PhysRange::new(0x10_0000, 0x10_1000));
        assert_eq!(l.warnings().len(), 1);

        // bad magic, bad version, inverted range
        let mut bad_magic = img.clone();
        bad_magic[0] = 0;
        let mut bad_version = img.clone();
        bad_version[4] = 2;
        let mut inverted = img.clone();
        inverted[8..16].copy_from_slice(&0x2000u64.to_le_bytes());
        for bad in [bad_magic, bad_version, inverted] {
            std::fs::write(&p, &bad).unwrap();
            assert!(matches!(LimeImage::open(&p), Err(Error::Format { .. })));
        }
        let mut short = img.clone();
        short.extend_from_slice(&[0x45, 0x4d]);
        std::fs::write(&p, &short).unwrap();
        assert!(matches!(LimeImage::open(&p), Err(Error::Format { .. })));
    }

    #[test]
    fn flipped_header_bytes_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = header(0, 0xfff);
        img.extend(vec![1u8; 0x1000]);
        img.extend(header(0x10_0000, 0x10_0fff));
        img.extend(vec![2u8; 0x1000]);
        let p = dir.path().join("m.lime");
        for i in (0..32).chain(0x1020..0x1040) {
            for v in [0u8, 0x7f, 0xff] {
                let mut bad = img.clone();
                bad[i] = v;
                std::fs::write(&p, &bad).unwrap();
                if let Ok(l) = LimeImage::open(&p) {
                    let mut b = [0u8; 64];
                    for r in l.ranges().to_vec() {
                        let _ = l.read_phys(r.start, &mut b);
                        let _ = l.read_phys(Pa(r.end.0.saturating_sub(8)), &mut b);
                    }
                }
            }
        }
    }
}
