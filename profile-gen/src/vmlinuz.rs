//! The kernel inside an x86 boot image (bzImage, `/boot/vmlinuz-*`).
//!
//! A bzImage is the real-mode setup code followed by the protected-mode decompressor,
//! which carries the compressed kernel. The setup header (`Documentation/arch/x86/boot.rst`)
//! says where: `setup_sects` at 0x1f1 (0 means 4), the signature `HdrS` at 0x202, the
//! protocol version at 0x206 (2.08 or later has the payload fields), `payload_offset`
//! at 0x248 and `payload_length` at 0x24c, both relative to the protected-mode code at
//! `(setup_sects + 1) * 512`. The build appends the uncompressed size as 4 little-endian
//! bytes to every payload.
//!
//! The payload is `vmlinux.bin`: the vmlinux ELF with its symbols stripped (`objcopy
//! -S`), sections and program headers kept, followed by the KASLR relocation table. Its
//! compression is recognised by magic: gzip, xz, zstd, lz4 (legacy frames), bzip2, lzma
//! (`.lzma` "alone" format) and lzo (lzop framing); anything else is an error that names
//! the bytes found.
//!
//! Only the start of the kernel is needed for a profile (the ELF headers, `.rodata`
//! with kallsyms and the banner, `.BTF`): [`decompress`] takes a byte limit, and the
//! streaming decoders stop once it is reached.

use std::io::Read;

use crate::error::{Error, Result};

/// Largest kernel accepted (Debian's are 55-70 MB).
pub const MAX_KERNEL: usize = 1 << 30;

/// The compression of a boot image's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip (`1f 8b`).
    Gzip,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// zstd (`28 b5 2f fd`).
    Zstd,
    /// lz4 legacy frames (`02 21 4c 18`).
    Lz4,
    /// bzip2 (`42 5a 68`).
    Bzip2,
    /// lzma "alone" (`5d 00 00`).
    Lzma,
    /// lzop (`89 4c 5a 4f 00 0d 0a 1a 0a`).
    Lzo,
}

impl Compression {
    /// Recognise a compressed stream by its first bytes.
    pub fn detect(data: &[u8]) -> Option<Compression> {
        Some(if data.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if data.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
            Compression::Lz4
        } else if data.starts_with(b"BZh") {
            Compression::Bzip2
        } else if data.starts_with(&[0x5d, 0, 0]) {
            Compression::Lzma
        } else if data.starts_with(&[0x89, b'L', b'Z', b'O', 0, 0x0d, 0x0a, 0x1a, 0x0a]) {
            Compression::Lzo
        } else {
            return None;
        })
    }
}

/// The compressed kernel found in a boot image.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    /// The compressed bytes (without the appended size).
    pub data: &'a [u8],
    /// The compression.
    pub compression: Compression,
    /// The uncompressed size the build recorded.
    pub size: u32,
    /// The boot protocol version (e.g. 0x20f).
    pub protocol: u16,
}

fn input(message: String) -> Error {
    Error::Input {
        path: "boot image".into(),
        message,
    }
}

/// True when `data` has the x86 setup header signature.
pub fn is_boot_image(data: &[u8]) -> bool {
    data.get(0x202..0x206) == Some(b"HdrS")
}

/// Find the compressed kernel in a bzImage.
pub fn payload(image: &[u8]) -> Result<Payload<'_>> {
    if !is_boot_image(image) {
        return Err(input(
            "no x86 boot image setup header (\"HdrS\" at 0x202): not a bzImage".into(),
        ));
    }
    let u16_at = |o: usize| {
        image
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        image
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let protocol = u16_at(0x206).unwrap_or(0);
    if protocol < 0x208 {
        return Err(input(format!(
            "boot protocol {}.{:02} has no payload fields (2.08 or later needed)",
            protocol >> 8,
            protocol & 0xff
        )));
    }
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let (Some(offset), Some(length)) = (u32_at(0x248), u32_at(0x24c)) else {
        return Err(input("setup header truncated".into()));
    };
    let start = (setup_sects + 1) * 512 + offset as usize;
    let end = start.saturating_add(length as usize);
    let Some(data) = image.get(start..end) else {
        return Err(input(format!(
            "the payload ({length} bytes at {start:#x}) lies outside the {} bytes of the image (truncated?)",
            image.len()
        )));
    };
    if data.len() < 8 {
        return Err(input("the payload is empty".into()));
    }
    let size = u32::from_le_bytes([
        data[data.len() - 4],
        data[data.len() - 3],
        data[data.len() - 2],
        data[data.len() - 1],
    ]);
    let compression = Compression::detect(data).ok_or_else(|| {
        input(format!(
            "unknown compression of the kernel payload: first bytes {:02x?} (known: gzip, xz, zstd, lz4, bzip2, lzma, lzo)",
            &data[..data.len().min(8)]
        ))
    })?;
    Ok(Payload {
        data: &data[..data.len() - 4],
        compression,
        size,
        protocol,
    })
}

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
    use std::process::{Command, Stdio};

    /// A minimal bzImage around `payload`: setup header, protocol 2.15, one setup sector.
    pub(crate) fn bzimage(payload: &[u8], size: u32) -> Vec<u8> {
        let mut img = vec![0u8; 1024];
        img[0x1f1] = 1;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(payload.len() as u32 + 4).to_le_bytes());
        img.extend_from_slice(&[0u8; 16]);
        img.extend_from_slice(payload);
        img.extend_from_slice(&size.to_le_bytes());
        img
    }

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

    #[test]
    fn unknown_compression_names_the_bytes() {
        let img = bzimage(b"\x11\x22\x33\x44 not compressed", 10);
        let e = payload(&img).unwrap_err().to_string();
        assert!(e.contains("[11, 22, 33, 44"), "{e}");
        assert!(payload(&img[..0x300])
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        assert!(payload(b"plain text").is_err());
    }
}
