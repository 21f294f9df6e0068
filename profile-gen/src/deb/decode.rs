//! Stream decoders for a compressed member: xz (multi-threaded), lzma, gzip, zstd (one
//! or more frames) or none.

use std::io::{self, BufRead, Read};

/// The most memory the xz decoder may use (beyond that the package is refused).
pub(super) const XZ_MEMLIMIT: u64 = 2 << 30;
/// Memory the multi-threaded xz decoder may use before it falls back to one thread.
const XZ_MEMLIMIT_THREADING: u64 = 512 << 20;
/// Worker threads for xz (blocks of a Debian -dbg package decode in parallel).
const XZ_MAX_THREADS: usize = 4;

/// How a member is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compression {
    None,
    Xz,
    Zstd,
    Gzip,
    Lzma,
}

impl Compression {
    pub(super) fn of(name: &str) -> Option<Compression> {
        let (_, ext) = name.split_once(".tar")?;
        Some(match ext {
            "" => Compression::None,
            ".xz" => Compression::Xz,
            ".zst" => Compression::Zstd,
            ".gz" => Compression::Gzip,
            ".lzma" => Compression::Lzma,
            _ => return None,
        })
    }

    pub(super) fn decoder<'a, R: BufRead + 'a>(self, r: R) -> Result<Box<dyn Read + 'a>, String> {
        Ok(match self {
            Compression::None => Box::new(r),
            Compression::Xz => {
                let threads = xz_threads();
                let stream = if threads > 1 {
                    liblzma::stream::MtStreamBuilder::new()
                        .threads(threads as u32)
                        .memlimit_threading(XZ_MEMLIMIT_THREADING)
                        .memlimit_stop(XZ_MEMLIMIT)
                        .decoder()
                } else {
                    liblzma::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, 0)
                }
                .map_err(|e| format!("cannot start the xz decoder: {e}"))?;
                Box::new(liblzma::bufread::XzDecoder::new_stream(r, stream))
            }
            Compression::Lzma => {
                let stream = liblzma::stream::Stream::new_lzma_decoder(XZ_MEMLIMIT)
                    .map_err(|e| format!("cannot start the lzma decoder: {e}"))?;
                Box::new(liblzma::bufread::XzDecoder::new_stream(r, stream))
            }
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
            Compression::Zstd => Box::new(ZstdFrames::Between(r)),
        })
    }
}

/// Threads for xz decoding.
pub(super) fn xz_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(XZ_MAX_THREADS)
}

/// A zstd stream of one or more frames (ruzstd decodes one frame at a time).
enum ZstdFrames<R: BufRead> {
    Between(R),
    In(Box<ruzstd::StreamingDecoder<R, ruzstd::FrameDecoder>>),
    Failed,
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match std::mem::replace(self, ZstdFrames::Failed) {
                ZstdFrames::Between(mut r) => {
                    if r.fill_buf()?.is_empty() {
                        *self = ZstdFrames::Between(r);
                        return Ok(0);
                    }
                    let dec = ruzstd::StreamingDecoder::new(r)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    *self = ZstdFrames::In(Box::new(dec));
                }
                ZstdFrames::In(mut dec) => {
                    let n = dec.read(buf)?;
                    if n > 0 {
                        *self = ZstdFrames::In(dec);
                        return Ok(n);
                    }
                    *self = ZstdFrames::Between((*dec).into_inner());
                }
                ZstdFrames::Failed => {
                    return Err(io::Error::other("the zstd stream failed before"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deb::testdata::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// zstd frames of raw blocks (no zstd encoder needed).
    fn zstd_raw(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in data.chunks(100_000) {
            out.extend_from_slice(&0xFD2F_B528u32.to_le_bytes());
            out.push(0b1010_0000); // single segment, 4-byte content size, no checksum
            out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            let blocks: Vec<&[u8]> = chunk.chunks(1 << 16).collect();
            for (i, b) in blocks.iter().enumerate() {
                let last = u32::from(i + 1 == blocks.len());
                let header = last | ((b.len() as u32) << 3); // type 0: raw
                out.extend_from_slice(&header.to_le_bytes()[..3]);
                out.extend_from_slice(b);
            }
        }
        out
    }

    #[test]
    fn reads_every_compression() {
        let tar = dbg_tar(ABI);
        let control = control_tar("linux-image-6.1.0-56-amd64-dbg");
        for (name, data) in [
            ("data.tar.xz", xz(&tar)),
            ("data.tar.gz", gz(&tar)),
            ("data.tar.zst", zstd_raw(&tar)),
            ("data.tar", tar.clone()),
        ] {
            let k = read(&deb(&control, name, &data)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(k.vmlinux, vmlinux_bytes(), "{name}");
            assert_eq!(
                k.vmlinux_member,
                format!("./usr/lib/debug/boot/vmlinux-{ABI}")
            );
            assert_eq!(
                k.system_map.as_deref(),
                Some(&b"ffffffff81000000 T _text\n"[..])
            );
            assert_eq!(
                k.system_map_member.as_deref(),
                Some(&*format!("./usr/lib/debug/boot/System.map-{ABI}"))
            );
            assert_eq!(
                k.package.as_deref(),
                Some("linux-image-6.1.0-56-amd64-dbg 6.1.192-2")
            );
        }
    }

    #[test]
    fn damaged_xz_is_an_error() {
        let tar = dbg_tar(ABI);
        let mut data = xz(&tar);
        let mid = data.len() / 2;
        data[mid] ^= 0x55;
        let msg = read(&deb(&control_tar("p"), "data.tar.xz", &data))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("ar member `data.tar.xz`"), "{msg}");
    }

    #[test]
    fn compression_of_names() {
        assert_eq!(Compression::of("data.tar.zst"), Some(Compression::Zstd));
        assert_eq!(Compression::of("data.tar.bz2"), None);
    }
}
