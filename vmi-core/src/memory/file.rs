//! Read-only file mappings and the map from guest-physical ranges to file offsets that
//! every file-backed source (raw, ELF, LiME, the live RAM file) shares.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::addr::Pa;
use crate::error::{Error, PhysError};
use crate::memory::PhysRange;

/// At most this many diagnostics are kept per source; the rest are counted.
pub(crate) const MAX_WARNINGS: usize = 32;

/// Diagnostics about a source that was read despite flaws (rust-analyzer's "parsing
/// never fails": the source opens, and says what it had to skip).
#[derive(Debug, Default, Clone)]
pub(crate) struct Warnings {
    pub list: Vec<String>,
    pub dropped: usize,
}

impl Warnings {
    pub fn push(&mut self, w: String) {
        if self.list.len() < MAX_WARNINGS {
            self.list.push(w);
        } else {
            self.dropped += 1;
        }
    }

    pub fn into_vec(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.list
                .push(format!("... and {} more warnings", self.dropped));
        }
        self.list
    }
}

/// A whole file mapped read-only.
///
/// The mapping may be shared with a writer (QEMU writes the live RAM file while the
/// guest runs), so bytes are only ever copied out through raw pointers; no Rust
/// reference to the shared region is handed out except by [`MappedFile::bytes`], which
/// dump parsers use on files nobody writes.
#[derive(Debug)]
pub(crate) struct MappedFile {
    map: memmap2::Mmap,
    path: PathBuf,
}

impl MappedFile {
    /// Map `path`; an empty file is a [`Error::Format`] of `format`.
    pub fn open(path: &Path, format: &'static str) -> Result<MappedFile, Error> {
        let file = File::open(path).map_err(|source| Error::Io {
            what: "opening",
            path: path.to_path_buf(),
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| Error::Io {
                what: "inspecting",
                path: path.to_path_buf(),
                source,
            })?
            .len();
        if len == 0 {
            return Err(Error::Format {
                path: path.to_path_buf(),
                format,
                what: "the file is empty".into(),
            });
        }
        // SAFETY: the mapping is read-only. Another process may still change or
        // truncate the file; changes are tolerated (bytes are copied out through raw
        // pointers), truncation would raise SIGBUS, as with every mmap-based reader.
        let map =
            unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(|source| Error::Io {
                what: "mapping",
                path: path.to_path_buf(),
                source,
            })?;
        Ok(MappedFile {
            map,
            path: path.to_path_buf(),
        })
    }

    /// Map `len` bytes of `file` (at `path`) from `offset`, read-only. The caller
    /// vouches that the file cannot shrink below `offset + len` (a sealed memfd).
    pub fn map_part(
        file: &File,
        path: &Path,
        offset: u64,
        len: usize,
    ) -> std::io::Result<MappedFile> {
        // SAFETY: read-only; the span cannot be truncated away (the caller's promise),
        // and bytes are only copied out through raw pointers while a writer changes them.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(len)
                .map(file)
        }?;
        Ok(MappedFile {
            map,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// The whole file as a slice, for parsing dump headers (dumps are not written while
    /// they are read).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Copy `buf.len()` bytes from file offset `off`. The caller has checked that the
    /// span is inside the file.
    pub(crate) fn copy_out(&self, off: u64, buf: &mut [u8]) {
        let end = off.checked_add(buf.len() as u64);
        assert!(
            end.is_some_and(|e| e <= self.len()),
            "file read out of bounds"
        );
        // SAFETY: off..off+len is inside the mapping (checked above); the destination
        // is a distinct, exclusively borrowed buffer. The source may change under us
        // (a running guest); a byte copy of memory another process writes is how every
        // live memory reader works and yields some mix of old and new bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().add(off as usize),
                buf.as_mut_ptr(),
                buf.len(),
            );
        }
    }
}

/// Where a segment's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backing {
    /// From the file, starting at this offset.
    File(u64),
    /// Zeros (an ELF segment's `p_memsz` beyond its `p_filesz`).
    Zero,
}

/// A guest-physical range and where its bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub start: u64,
    pub end: u64,
    pub backing: Backing,
}

/// Guest-physical ranges → file offsets: sorted, not overlapping, inside the file.
#[derive(Debug, Default)]
pub(crate) struct SegmentMap {
    segs: Vec<Segment>,
    ranges: Vec<PhysRange>,
}

impl SegmentMap {
    /// Sort `segs`, clip them to the file (`file_len`) and clip overlaps (a segment
    /// that starts earlier wins; at equal starts the earlier one in `segs`). What had
    /// to be clipped is reported in `warnings`.
    pub fn build(segs: Vec<Segment>, file_len: u64, warnings: &mut Warnings) -> SegmentMap {
        let mut segs: Vec<(usize, Segment)> = segs
            .into_iter()
            .enumerate()
            .filter(|(_, s)| s.start < s.end)
            .collect();
        segs.sort_by_key(|&(i, s)| (s.start, i));
        let mut out: Vec<Segment> = Vec::with_capacity(segs.len());
        let mut covered: Option<u64> = None;
        for (i, mut s) in segs {
            if let Backing::File(off) = s.backing {
                let avail = file_len.saturating_sub(off);
                if avail < s.end - s.start {
                    warnings.push(format!(
                        "segment {i} ({:#x}..{:#x}) extends {} bytes past the end of the file; cut",
                        s.start,
                        s.end,
                        (s.end - s.start) - avail
                    ));
                    s.end = s.start + avail;
                    if s.start == s.end {
                        continue;
                    }
                }
            }
            if let Some(c) = covered {
                if s.end <= c {
                    warnings.push(format!(
                        "segment {i} ({:#x}..{:#x}) lies inside an earlier one; ignored",
                        s.start, s.end
                    ));
                    continue;
                }
                if s.start < c {
                    warnings.push(format!(
                        "segment {i} ({:#x}..{:#x}) overlaps an earlier one; its part before {c:#x} is ignored",
                        s.start, s.end
                    ));
                    if let Backing::File(off) = &mut s.backing {
                        *off += c - s.start;
                    }
                    s.start = c;
                }
            }
            covered = Some(s.end);
            out.push(s);
        }
        let mut ranges: Vec<PhysRange> = Vec::new();
        for s in &out {
            match ranges.last_mut() {
                Some(r) if r.end.0 == s.start => r.end = Pa(s.end),
                _ => ranges.push(PhysRange::new(s.start, s.end)),
            }
        }
        SegmentMap { segs: out, ranges }
    }

    pub fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }

    #[cfg(test)]
    pub fn segments(&self) -> &[Segment] {
        &self.segs
    }

    /// Fill `buf` from `pa` on, crossing adjacent segments.
    pub fn read(&self, file: &MappedFile, pa: Pa, buf: &mut [u8]) -> Result<(), PhysError> {
        self.read_with(pa, buf, |off, dst| {
            file.copy_out(off, dst);
            Ok(())
        })
    }

    /// [`SegmentMap::read`] from any store of bytes: `copy(offset, dst)` fills `dst`
    /// from the store's `offset` (a segment's offset plus the distance into it).
    pub fn read_with(
        &self,
        pa: Pa,
        buf: &mut [u8],
        mut copy: impl FnMut(u64, &mut [u8]) -> Result<(), std::io::ErrorKind>,
    ) -> Result<(), PhysError> {
        let mut at = pa.0;
        let mut done = 0usize;
        let mut i = self.segs.partition_point(|s| s.end <= at);
        while done < buf.len() {
            let seg = match self.segs.get(i) {
                Some(s) if s.start <= at && at < s.end => s,
                _ => return Err(PhysError::Unmapped { pa: Pa(at) }),
            };
            let n = (seg.end - at).min((buf.len() - done) as u64) as usize;
            let dst = &mut buf[done..done + n];
            match seg.backing {
                Backing::File(off) => copy(off + (at - seg.start), dst)
                    .map_err(|kind| PhysError::Io { pa: Pa(at), kind })?,
                Backing::Zero => dst.fill(0),
            }
            done += n;
            at += n as u64;
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: u64, end: u64, off: u64) -> Segment {
        Segment {
            start,
            end,
            backing: Backing::File(off),
        }
    }

    #[test]
    fn build_sorts_merges_and_clips() {
        let mut w = Warnings::default();
        let m = SegmentMap::build(
            vec![
                seg(0x3000, 0x5000, 0x100),
                seg(0x0, 0x1000, 0x0),
                seg(0x1000, 0x2000, 0x1000),
                seg(0x4000, 0x6000, 0x2000),
                seg(0x4000, 0x4800, 0x3000),
                seg(0x10000, 0x20000, 0x9000),
            ],
            0xa000,
            &mut w,
        );
        assert_eq!(
            m.ranges(),
            &[
                PhysRange::new(0, 0x2000),
                PhysRange::new(0x3000, 0x6000),
                PhysRange::new(0x10000, 0x11000)
            ]
        );
        assert_eq!(m.segments()[3], seg(0x5000, 0x6000, 0x3000));
        assert_eq!(w.list.len(), 3, "{:?}", w.list);
    }

    proptest::proptest! {
        /// Reads through the map equal a byte-by-byte model: each byte belongs to the
        /// first segment (by start, then by order given) that holds it, after
        /// clipping segments to the file.
        #[test]
        fn reads_match_a_byte_model(
            segs in proptest::collection::vec(
                (0u64..0x8000, 0u64..0x3000, proptest::option::of(0u64..0x5000)),
                0..12,
            ),
            reads in proptest::collection::vec((0u64..0xa000, 0usize..0x3000), 16),
        ) {
            const FILE: u64 = 0x4000;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let data: Vec<u8> = (0..FILE).map(|i| (i % 251) as u8 + 1).collect();
            std::fs::write(&path, &data).unwrap();
            let file = MappedFile::open(&path, "test").unwrap();
            let segs: Vec<Segment> = segs
                .into_iter()
                .map(|(start, len, off)| Segment {
                    start,
                    end: start + len,
                    backing: off.map_or(Backing::Zero, Backing::File),
                })
                .collect();
            let mut w = Warnings::default();
            let map = SegmentMap::build(segs.clone(), FILE, &mut w);
            // the model
            let mut clipped: Vec<(usize, Segment)> = segs
                .into_iter()
                .map(|mut s| {
                    if let Backing::File(off) = s.backing {
                        s.end = s.end.min(s.start + FILE.saturating_sub(off));
                    }
                    s
                })
                .enumerate()
                .filter(|(_, s)| s.start < s.end)
                .collect();
            clipped.sort_by_key(|&(i, s)| (s.start, i));
            let byte = |pa: u64| -> Option<u8> {
                let (_, s) = clipped.iter().find(|(_, s)| s.start <= pa && pa < s.end)?;
                Some(match s.backing {
                    Backing::File(off) => data[(off + pa - s.start) as usize],
                    Backing::Zero => 0,
                })
            };
            for (pa, len) in reads {
                let mut buf = vec![0u8; len];
                let got = map.read(&file, Pa(pa), &mut buf);
                let want: Result<Vec<u8>, PhysError> = (pa..pa + len as u64)
                    .map(|a| byte(a).ok_or(PhysError::Unmapped { pa: Pa(a) }))
                    .collect();
                match want {
                    Ok(bytes) => {
                        proptest::prop_assert_eq!(got, Ok(()));
                        proptest::prop_assert!(buf == bytes, "bytes at {:#x}+{:#x}", pa, len);
                    }
                    Err(e) => proptest::prop_assert_eq!(got, Err(e)),
                }
            }
            // ranges are sorted, disjoint, merged, and hold exactly the owned bytes
            for w in map.ranges().windows(2) {
                proptest::prop_assert!(w[0].end < w[1].start);
            }
            for a in (0..0xb000u64).step_by(0x7f) {
                let in_ranges = map.ranges().iter().any(|r| r.contains(Pa(a)));
                proptest::prop_assert_eq!(in_ranges, byte(a).is_some(), "{:#x}", a);
            }
        }
    }
}
