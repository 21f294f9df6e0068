//! The index of an xz data member: where each block lies in the file and in the
//! stream, one block decoded on its own, and reading on to the end of a block so its
//! check covers what was used.

use std::io::{self, Read};

use super::ar::ArMember;
use super::decode::XZ_MEMLIMIT;
use super::source::{read_exact_at, At, Source};
use super::tar::TarReader;

/// One block of an xz stream, from the stream's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct XzBlock {
    /// Offset of the block in the package file.
    pub(super) offset: u64,
    /// Block header, compressed data and check, without the padding.
    pub(super) unpadded: u64,
    /// Where its data starts in the decompressed stream.
    pub(super) start: u64,
    /// Its decompressed size.
    pub(super) size: u64,
}

/// The blocks of a single-stream xz member.
#[derive(Debug)]
pub(super) struct XzIndex {
    /// The stream flags (the check type), copied into the stream built for each block.
    pub(super) flags: [u8; 2],
    pub(super) blocks: Vec<XzBlock>,
    /// The decompressed size of the stream.
    pub(super) total: u64,
}

const XZ_MAGIC: &[u8; 6] = b"\xFD7zXZ\0";
/// The largest xz index read (Debian's are a few KB).
const MAX_XZ_INDEX: u64 = 64 << 20;

fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

pub(super) fn round4(n: u64) -> u64 {
    n.div_ceil(4) * 4
}

impl XzIndex {
    /// The index of member `m`, an xz stream with nothing after it. Errors say why the
    /// index cannot be used (the data is then walked from the start).
    pub(super) fn read<S: Source + ?Sized>(src: &S, m: &ArMember) -> Result<XzIndex, String> {
        if m.size < 32 {
            return Err("too small for an indexed xz stream".into());
        }
        let io = |e: io::Error| e.to_string();
        let mut header = [0u8; 12];
        read_exact_at(src, &mut header, m.offset).map_err(io)?;
        if &header[..6] != XZ_MAGIC || crc32(&header[6..8]) != le32(&header[8..]) {
            return Err("no xz stream header".into());
        }
        let flags = [header[6], header[7]];
        let mut footer = [0u8; 12];
        read_exact_at(src, &mut footer, m.offset + m.size - 12).map_err(io)?;
        if &footer[10..] != b"YZ"
            || footer[8..10] != flags
            || crc32(&footer[4..10]) != le32(&footer)
        {
            return Err("no xz stream footer at the end (several streams or padding)".into());
        }
        let index_size = (u64::from(le32(&footer[4..8])) + 1) * 4;
        if index_size > MAX_XZ_INDEX || index_size + 24 > m.size {
            return Err(format!("xz index of {index_size} bytes"));
        }
        let index_offset = m.size - 12 - index_size;
        let mut index = vec![0u8; index_size as usize];
        read_exact_at(src, &mut index, m.offset + index_offset).map_err(io)?;
        let (body, crc) = index.split_at(index.len() - 4);
        if index[0] != 0 || crc32(body) != le32(crc) {
            return Err("damaged xz index".into());
        }
        let mut pos = 1;
        let count = varint(body, &mut pos)?;
        if count > index_size / 2 {
            return Err(format!("xz index lists {count} blocks"));
        }
        let mut blocks = Vec::with_capacity(count as usize);
        let (mut offset, mut start) = (12u64, 0u64);
        for _ in 0..count {
            let unpadded = varint(body, &mut pos)?;
            let size = varint(body, &mut pos)?;
            if unpadded < 5 {
                return Err("xz index: bad block size".into());
            }
            blocks.push(XzBlock {
                offset: m.offset + offset,
                unpadded,
                start,
                size,
            });
            offset = offset
                .checked_add(round4(unpadded))
                .ok_or("xz index: sizes overflow")?;
            start = start.checked_add(size).ok_or("xz index: sizes overflow")?;
        }
        if body[pos..].iter().any(|&b| b != 0)
            || !body.len().is_multiple_of(4)
            || body.len() - pos > 3
        {
            return Err("xz index: bad padding".into());
        }
        if offset != index_offset {
            return Err("xz index: blocks do not end where the index starts".into());
        }
        Ok(XzIndex {
            flags,
            blocks,
            total: start,
        })
    }
}

/// Read on to the end of the xz block holding the last byte read and one byte past it,
/// so the decoder has checked every block the walk used.
pub(super) fn finish_block<R: Read>(tar: &mut TarReader<R>, index: &XzIndex) -> Result<(), String> {
    let last = tar.offset.saturating_sub(1);
    let Some(block) = index
        .blocks
        .iter()
        .find(|b| b.start <= last && last < b.start + b.size)
    else {
        return Err(format!(
            "the tar stream is at offset {} but the xz index ends at {}",
            tar.offset, index.total
        ));
    };
    let end = block.start + block.size;
    let target = (end + 1).min(index.total);
    let mut buf = [0u8; 64 << 10];
    while tar.offset < target {
        let want = (target - tar.offset).min(buf.len() as u64) as usize;
        if tar.read_full(&mut buf[..want])? < want {
            return Err(format!(
                "the xz stream ends at offset {} where its index says {}: the package is \
                 damaged (download it again)",
                tar.offset, index.total
            ));
        }
    }
    if target == index.total && tar.read_full(&mut buf[..1])? != 0 {
        return Err(format!(
            "the xz stream goes on past the {} bytes its index says: the package is \
             damaged (download it again)",
            index.total
        ));
    }
    Ok(())
}

/// An xz variable-length integer.
fn varint(data: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for i in 0..9 {
        let b = *data.get(*pos).ok_or("xz index cut short")?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err("xz index: overlong number".into());
            }
            return Ok(value);
        }
    }
    Err("xz index: number too long".into())
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Decode one block on its own. It is wrapped in a stream of its own (the stream
/// header, the block's bytes as they are in the file, an index of that one block, a
/// footer), so liblzma checks the block's check and sizes. `out` gets the data piece
/// by piece.
pub(super) fn decode_block<S: Source + ?Sized>(
    src: &S,
    flags: [u8; 2],
    block: &XzBlock,
    out: &mut dyn FnMut(&[u8]),
) -> Result<(), String> {
    let mut head = XZ_MAGIC.to_vec();
    head.extend_from_slice(&flags);
    head.extend_from_slice(&crc32(&flags).to_le_bytes());
    let mut tail = vec![0u8];
    put_varint(&mut tail, 1);
    put_varint(&mut tail, block.unpadded);
    put_varint(&mut tail, block.size);
    while !tail.len().is_multiple_of(4) {
        tail.push(0);
    }
    tail.extend_from_slice(&crc32(&tail).to_le_bytes());
    let mut footer = ((tail.len() / 4 - 1) as u32).to_le_bytes().to_vec();
    footer.extend_from_slice(&flags);
    tail.extend_from_slice(&crc32(&footer).to_le_bytes());
    tail.extend_from_slice(&footer);
    tail.extend_from_slice(b"YZ");
    let stream = head
        .as_slice()
        .chain(At::new(src, block.offset, round4(block.unpadded)))
        .chain(tail.as_slice());
    let decoder = liblzma::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, 0)
        .map_err(|e| format!("cannot start the xz decoder: {e}"))?;
    let mut decoder = liblzma::read::XzDecoder::new_stream(stream, decoder);
    let damaged = |what: String| {
        format!(
            "xz block at offset {} of the file (decompressed offset {}): {what}: the \
             package is damaged (download it again)",
            block.offset, block.start
        )
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(damaged(e.to_string())),
        };
        got += n as u64;
        if got > block.size {
            break;
        }
        out(&buf[..n]);
    }
    if got != block.size {
        return Err(damaged(format!(
            "{got} bytes where the index says {}",
            block.size
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deb::ar::ar_members;
    use crate::deb::testdata::*;

    #[test]
    fn xz_index() {
        let tar = split_tar("7.2-amd64", 40, false);
        let deb = deb(&control_tar("p"), "data.tar.xz", &xz_blocks(&tar, 10_000));
        let index = data_index(&deb);
        assert_eq!(index.total, tar.len() as u64);
        assert_eq!(
            index.blocks.len() as u64,
            (tar.len() as u64).div_ceil(10_000)
        );
        for w in index.blocks.windows(2) {
            assert_eq!(w[0].start + w[0].size, w[1].start);
            assert_eq!(w[0].offset + round4(w[0].unpadded), w[1].offset);
        }
        let mut out = Vec::new();
        for b in &index.blocks {
            decode_block(&deb[..], index.flags, b, &mut |p| out.extend_from_slice(p)).unwrap();
        }
        assert_eq!(out, tar);
        let mut v = Vec::new();
        for n in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX >> 1] {
            v.clear();
            put_varint(&mut v, n);
            assert_eq!(varint(&v, &mut 0).unwrap(), n);
        }
        assert!(varint(&[0x80, 0x00], &mut 0).is_err());
        assert!(varint(&[0x80], &mut 0).is_err());
    }

    #[test]
    fn classic_layout_is_checked_to_the_end_of_its_block() {
        let tar = dbg_tar(ABI);
        let vmlinux_name = format!("./usr/lib/debug/boot/vmlinux-{ABI}");
        let last = header_offset(&tar, &vmlinux_name) + 512 + vmlinux_bytes().len() as u64 - 1;
        let data = xz_blocks(&tar, 2048);
        let deb_bytes = deb(&control_tar("p"), "data.tar.xz", &data);
        let before = found_from_the_end();
        assert_eq!(read(&deb_bytes).unwrap().vmlinux, vmlinux_bytes());
        assert_eq!(found_from_the_end(), before);
        // the check of the block holding vmlinux's last byte (not hashed for md5sums)
        let index = data_index(&deb_bytes);
        let b = index
            .blocks
            .iter()
            .find(|b| b.start <= last && last < b.start + b.size)
            .unwrap();
        assert!(
            b.start + b.size > last + 1,
            "the walk stops inside the block"
        );
        let member = ar_members(&deb_bytes[..]).unwrap()[2].clone();
        let mut bad = data.clone();
        bad[(b.offset + b.unpadded - 1 - member.offset) as usize] ^= 0x01;
        let msg = read(&deb(&control_tar("p"), "data.tar.xz", &bad))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("damaged"), "{msg}");
    }
}
