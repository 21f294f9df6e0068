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
//! with kallsyms and the banner, `.BTF`): `decompress` takes a byte limit, and the
//! streaming decoders stop once it is reached.
//!
//! The decoders (`unpack.rs`: `decompress`, `Unpacker`) are the `vmlinuz` feature's;
//! the header is read without them, so a boot image is recognised either way.

use crate::error::{Error, Result};

#[cfg(feature = "vmlinuz")]
mod unpack;
#[cfg(feature = "vmlinuz")]
pub use unpack::{decompress, Unpacker};

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

#[cfg(test)]
mod tests {
    use super::*;

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
