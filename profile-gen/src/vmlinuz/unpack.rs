//! The decoders of a boot image's payload (the `vmlinuz` feature): streaming where the
//! crate streams (gzip, xz, lzma, zstd, bzip2), whole blocks for lz4 and lzo.

use std::io::Read;

use super::{input, Compression, Payload, MAX_KERNEL};
use crate::error::Result;

/// Decompress at least `want` bytes of the payload (all of it when `want` is larger),
/// never more than [`MAX_KERNEL`].
pub fn decompress(p: &Payload<'_>, want: usize) -> Result<Vec<u8>> {
    let mut u = Unpacker::new(p)?;
    u.fill_to(want)?;
    Ok(u.into_vec())
}

/// A payload being decompressed: [`Unpacker::fill_to`] decompresses further on demand.
pub struct Unpacker<'a> {
    compression: Compression,
    reader: Option<Box<dyn Read + 'a>>,
    out: Vec<u8>,
}

impl<'a> Unpacker<'a> {
    /// Start decompressing `p` (lz4 and lzo, which are fast, are decompressed at once).
    pub fn new(p: &Payload<'a>) -> Result<Unpacker<'a>> {
        let err = |e: String| {
            input(format!(
                "decompressing the {:?} payload: {e}",
                p.compression
            ))
        };
        let mut out = Vec::new();
        let reader: Option<Box<dyn Read + 'a>> = match p.compression {
            Compression::Gzip => Some(Box::new(flate2::read::GzDecoder::new(p.data))),
            Compression::Xz => Some(Box::new(liblzma::read::XzDecoder::new(p.data))),
            Compression::Lzma => {
                let stream = liblzma::stream::Stream::new_lzma_decoder(u64::MAX)
                    .map_err(|e| err(e.to_string()))?;
                Some(Box::new(liblzma::read::XzDecoder::new_stream(
                    p.data, stream,
                )))
            }
            Compression::Zstd => Some(Box::new(
                ruzstd::StreamingDecoder::new(p.data).map_err(|e| err(e.to_string()))?,
            )),
            Compression::Bzip2 => Some(Box::new(bzip2::read::BzDecoder::new(p.data))),
            Compression::Lz4 => {
                lz4_legacy(p.data, MAX_KERNEL, &mut out).map_err(err)?;
                None
            }
            Compression::Lzo => {
                lzop(p.data, MAX_KERNEL, &mut out).map_err(err)?;
                None
            }
        };
        Ok(Unpacker {
            compression: p.compression,
            reader,
            out,
        })
    }

    /// Decompress until at least `want` bytes (or everything) are out.
    pub fn fill_to(&mut self, want: usize) -> Result<&[u8]> {
        let limit = want.min(MAX_KERNEL);
        if let Some(r) = self.reader.as_mut() {
            let done = read_up_to(r, limit, &mut self.out).map_err(|e| {
                input(format!(
                    "decompressing the {:?} payload: {e}",
                    self.compression
                ))
            })?;
            if done {
                self.reader = None;
            }
        }
        if self.out.is_empty() {
            return Err(input(format!(
                "the {:?} payload decompressed to nothing",
                self.compression
            )));
        }
        Ok(&self.out)
    }

    /// What is decompressed so far.
    pub fn data(&self) -> &[u8] {
        &self.out
    }

    /// True when the whole payload is decompressed.
    pub fn finished(&self) -> bool {
        self.reader.is_none()
    }

    /// The decompressed bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.out
    }
}

/// Read into `out` until it holds `limit` bytes; true at the end of the stream.
fn read_up_to(r: &mut dyn Read, limit: usize, out: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 1 << 20];
    while out.len() < limit {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.extend_from_slice(&buf[..n]);
    }
    Ok(false)
}

/// lz4 legacy format (`lz4 -l`, as the kernel's `lz4c -l` writes it): the magic, then
/// blocks of `<u32 LE compressed size><lz4 block>`, each decompressing to at most 8 MiB.
/// The stream ends at the end of the data or at a block size that is the magic again.
fn lz4_legacy(data: &[u8], limit: usize, out: &mut Vec<u8>) -> std::result::Result<(), String> {
    const BLOCK: usize = 8 << 20;
    let mut at = 4;
    let mut buf = vec![0u8; BLOCK];
    while at + 4 <= data.len() && out.len() < limit {
        let size = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        if size == 0x184c_2102 {
            at += 4;
            continue;
        }
        at += 4;
        let Some(block) = data.get(at..at.saturating_add(size as usize)) else {
            return Err(format!(
                "lz4 block at {at:#x} of {size} bytes runs past the payload"
            ));
        };
        let n = lz4_flex::block::decompress_into(block, &mut buf)
            .map_err(|e| format!("lz4 block at {at:#x}: {e}"))?;
        out.extend_from_slice(&buf[..n]);
        at += size as usize;
    }
    Ok(())
}

/// lzop framing (what the kernel's `unlzo` reads): a header (magic, versions, method,
/// level, flags, mode, mtime, name, checksum), then blocks `<u32 BE uncompressed
/// size><u32 BE compressed size>[checksums]<data>`, a stored block when both sizes are
/// equal, an uncompressed size of 0 at the end.
fn lzop(data: &[u8], limit: usize, out: &mut Vec<u8>) -> std::result::Result<(), String> {
    const F_ADLER32_D: u32 = 0x1;
    const F_ADLER32_C: u32 = 0x2;
    const F_H_EXTRA_FIELD: u32 = 0x40;
    const F_CRC32_D: u32 = 0x100;
    const F_CRC32_C: u32 = 0x200;
    const F_H_FILTER: u32 = 0x800;
    let mut at = 9;
    let trunc = || "lzo header truncated".to_string();
    let be16 = |at: usize| {
        data.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let be32 = |at: usize| {
        data.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let version = be16(at).ok_or_else(trunc)?;
    at += 4; // version, library version
    if version >= 0x0940 {
        at += 2; // version needed to extract
    }
    let method = *data.get(at).ok_or_else(trunc)?;
    if !(1..=3).contains(&method) {
        return Err(format!("lzo method {method} is not LZO1X"));
    }
    at += 1;
    if version >= 0x0940 {
        at += 1; // level
    }
    let flags = be32(at).ok_or_else(trunc)?;
    at += 4;
    if flags & F_H_FILTER != 0 {
        at += 4;
    }
    at += 8; // mode, mtime
    if version >= 0x0940 {
        at += 4; // mtime high
    }
    let name_len = *data.get(at).ok_or_else(trunc)? as usize;
    at += 1 + name_len + 4; // name, header checksum
    if flags & F_H_EXTRA_FIELD != 0 {
        let n = be32(at).ok_or_else(trunc)? as usize;
        at = at.saturating_add(8).saturating_add(n);
    }
    while out.len() < limit {
        let dst_len = be32(at).ok_or("lzo block header truncated")? as usize;
        at += 4;
        if dst_len == 0 {
            break;
        }
        if dst_len > 64 << 20 {
            return Err(format!("lzo block at {at:#x} claims {dst_len} bytes"));
        }
        let src_len = be32(at).ok_or("lzo block header truncated")? as usize;
        at += 4;
        for f in [F_ADLER32_D, F_CRC32_D] {
            if flags & f != 0 {
                at += 4;
            }
        }
        if src_len < dst_len {
            for f in [F_ADLER32_C, F_CRC32_C] {
                if flags & f != 0 {
                    at += 4;
                }
            }
        }
        let block = data
            .get(at..at.saturating_add(src_len))
            .ok_or_else(|| format!("lzo block at {at:#x} runs past the payload"))?;
        if src_len == dst_len {
            out.extend_from_slice(block);
        } else if src_len > dst_len {
            return Err(format!(
                "lzo block at {at:#x}: compressed larger than plain"
            ));
        } else {
            let plain = lzokay_native::decompress_all(block, Some(dst_len))
                .map_err(|e| format!("lzo block at {at:#x}: {e:?}"))?;
            if plain.len() != dst_len {
                return Err(format!(
                    "lzo block at {at:#x}: {} bytes, header says {dst_len}",
                    plain.len()
                ));
            }
            out.extend_from_slice(&plain);
        }
        at += src_len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmlinuz::payload;
    use crate::vmlinuz::tests::bzimage;
    use std::process::{Command, Stdio};

    fn compress(tool: &[&str], data: &[u8]) -> Option<Vec<u8>> {
        use std::io::Write;
        let mut child = Command::new(tool[0])
            .args(&tool[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let mut stdin = child.stdin.take()?;
        let data = data.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output().ok()?;
        writer.join().ok()?.ok()?;
        out.status.success().then_some(out.stdout)
    }

    #[test]
    fn every_kernel_compression_decompresses() {
        // compressible but not trivial: a few MB of text-like bytes
        let plain: Vec<u8> = (0..3_000_000u32)
            .map(|i| b"kernel text and data "[(i as usize * 7 + (i as usize >> 9)) % 21])
            .collect();
        let tools: &[(&[&str], Compression, &str)] = &[
            (&["gzip", "-9c"], Compression::Gzip, "gzip"),
            (
                &["xz", "--check=crc32", "--x86", "--lzma2=", "-c"],
                Compression::Xz,
                "xz-utils",
            ),
            (&["zstd", "-19", "-c", "-q"], Compression::Zstd, "zstd"),
            (&["lz4", "-l", "-9", "-c"], Compression::Lz4, "lz4"),
            (&["bzip2", "-9c"], Compression::Bzip2, "bzip2"),
            (&["lzma", "-9c"], Compression::Lzma, "xz-utils"),
            (&["lzop", "-9c"], Compression::Lzo, "lzop"),
        ];
        for (tool, kind, package) in tools {
            let packed = compress(tool, &plain)
                .unwrap_or_else(|| panic!("{} (Debian package {package}) failed", tool[0]));
            let img = bzimage(&packed, plain.len() as u32);
            let p = payload(&img).unwrap();
            assert_eq!(p.compression, *kind);
            assert_eq!(p.size as usize, plain.len());
            let all = decompress(&p, usize::MAX).unwrap();
            assert!(
                all == plain,
                "{kind:?}: {} bytes back of {}",
                all.len(),
                plain.len()
            );
            // a limit stops early, with at least what was asked for
            let part = decompress(&p, 1 << 20).unwrap();
            assert!(
                part.len() >= 1 << 20 && plain.starts_with(&part),
                "{kind:?}"
            );
            // truncated streams are errors or short, never a panic
            let cut = bzimage(&packed[..packed.len() / 2], plain.len() as u32);
            if let Ok(short) = decompress(&payload(&cut).unwrap(), usize::MAX) {
                assert!(
                    short.len() < plain.len() && plain.starts_with(&short),
                    "{kind:?}"
                );
            }
        }
    }
}
