//! vmlinux found from the end of a multi-block xz stream (the layout whose vmlinux sorts
//! after 7 GB of module debug info): blocks decoded in parallel from the last until its
//! tar header shows up, the blocks after it kept so its data is decoded once.

use std::collections::VecDeque;

use md5::{Digest, Md5};

use super::decode::xz_threads;
use super::scan::{check_elf, classify, too_large, Found, Role};
use super::source::{Progress, Source};
use super::tar::{check_checksum, parse_size, ustar_name};
use super::xz_index::{decode_block, round4, XzBlock, XzIndex};
use super::MAX_VMLINUX;

/// The largest block decoded on its own (dpkg-deb's are 24 MiB).
const MAX_XZ_BLOCK: u64 = 256 << 20;
/// Decoded blocks kept while searching from the end, so vmlinux is decoded once (a
/// larger one is decoded again).
const KEEP_DECODED: u64 = if cfg!(test) { 16 << 10 } else { 1 << 30 };

/// Find vmlinux of `abi` from the end of the stream: decode the blocks that end after
/// `from` (in parallel, from the last) until one holds its tar header; the blocks after
/// it are kept, so its data is decoded once. `None` when it is not found that way.
pub(super) fn find_vmlinux_backwards<S: Source + ?Sized>(
    src: &S,
    index: &XzIndex,
    from: u64,
    abi: &str,
    progress: &Progress,
) -> Result<Option<(Found, String)>, String> {
    if index.blocks.iter().any(|b| b.size > MAX_XZ_BLOCK) {
        return Ok(None);
    }
    let candidates: Vec<&XzBlock> = index
        .blocks
        .iter()
        .filter(|b| b.start + b.size > from)
        .collect();
    // the blocks decoded so far, in stream order, up to KEEP_DECODED bytes
    let mut kept: VecDeque<(&XzBlock, Vec<u8>)> = VecDeque::new();
    let mut kept_bytes = 0u64;
    let mut scanned = 0u64;
    for wave in candidates.rchunks(xz_threads()) {
        let decoded: Vec<Result<Vec<u8>, String>> = std::thread::scope(|s| {
            let handles: Vec<_> = wave
                .iter()
                .map(|&b| {
                    s.spawn(move || {
                        let mut data = Vec::with_capacity(b.size as usize);
                        decode_block(src, index.flags, b, &mut |p| data.extend_from_slice(p))?;
                        Ok(data)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("an xz thread panicked".into()))
                })
                .collect()
        });
        for b in wave {
            progress.add(round4(b.unpadded));
        }
        for (&b, data) in wave.iter().zip(decoded).rev() {
            let data = data?;
            let later = kept
                .front()
                .map_or(&[][..], |(_, d)| &d[..d.len().min(511)]);
            let found = find_header(&data, later, b.start, from, abi, index.total);
            kept_bytes += data.len() as u64;
            kept.push_front((b, data));
            while kept_bytes > KEEP_DECODED && kept.len() > 1 {
                if let Some((_, dropped)) = kept.pop_back() {
                    kept_bytes -= dropped.len() as u64;
                }
            }
            if let Some((header_offset, member, size)) = found {
                if size > MAX_VMLINUX {
                    return Err(too_large(&member, header_offset, size));
                }
                let (begin, end) = (header_offset + 512, header_offset + 512 + size);
                let all_kept = kept
                    .back()
                    .is_some_and(|(b, d)| b.start + d.len() as u64 >= end);
                let vmlinux = if all_kept {
                    take_range(&mut kept, begin, size)?
                } else {
                    // larger than what was kept: decode its blocks again, into place
                    drop(kept);
                    for b in index
                        .blocks
                        .iter()
                        .filter(|b| b.start < end && b.start + b.size > begin)
                    {
                        progress.add(round4(b.unpadded));
                    }
                    decode_range(src, index, begin, size)?
                };
                check_elf(&vmlinux, &member, header_offset)?;
                // every byte was covered by its block's check (unless the stream has
                // none): md5sums need not be checked
                let md5 = (index.flags[1] & 0x0f == 0).then(|| hex::encode(Md5::digest(&vmlinux)));
                let dir = match classify(&member) {
                    Some((_, _, dir)) => dir.to_string(),
                    None => String::new(),
                };
                #[cfg(test)]
                super::testdata::FOUND_FROM_THE_END.with(|n| n.set(n.get() + 1));
                let found = Found {
                    member,
                    data: vmlinux,
                    md5,
                };
                return Ok(Some((found, dir)));
            }
            scanned += b.size;
            if scanned > MAX_VMLINUX + MAX_XZ_BLOCK {
                return Ok(None);
            }
        }
    }
    Ok(None)
}

/// The last tar header in a block's `data` (decompressed from `start`; `later` is the
/// start of the next block) for the vmlinux of `abi` at or after `from` whose data fits
/// in the stream: its offset, member name and size.
fn find_header(
    data: &[u8],
    later: &[u8],
    start: u64,
    from: u64,
    abi: &str,
    total: u64,
) -> Option<(u64, String, u64)> {
    let first = ((512 - start % 512) % 512) as usize;
    for i in (first..data.len()).step_by(512).rev() {
        let mut h = [0u8; 512];
        let own = (data.len() - i).min(512);
        h[..own].copy_from_slice(&data[i..i + own]);
        if own < 512 {
            let rest = later.get(..512 - own)?;
            h[own..].copy_from_slice(rest);
        }
        let offset = start + i as u64;
        if !matches!(h[156], b'0' | 0) || &h[257..262] != b"ustar" || offset < from {
            continue;
        }
        let name = ustar_name(&h);
        if !matches!(classify(&name), Some((Role::Vmlinux, a, _)) if a == abi) {
            continue;
        }
        if check_checksum(&h).is_err() {
            continue;
        }
        let Ok(size) = parse_size(&h[124..136]) else {
            continue;
        };
        if offset + 512 + size <= total {
            return Some((offset, name, size));
        }
    }
    None
}

/// Decompressed bytes `[begin, begin + len)` out of the decoded blocks, which are
/// dropped one by one as they are copied.
fn take_range(
    blocks: &mut VecDeque<(&XzBlock, Vec<u8>)>,
    begin: u64,
    len: u64,
) -> Result<Vec<u8>, String> {
    let end = begin + len;
    let mut out = Vec::new();
    out.try_reserve_exact(len as usize)
        .map_err(|_| format!("cannot allocate {len} bytes for vmlinux"))?;
    while let Some((b, data)) = blocks.pop_front() {
        let lo = begin.max(b.start);
        let hi = end.min(b.start + data.len() as u64);
        if lo < hi {
            out.extend_from_slice(&data[(lo - b.start) as usize..(hi - b.start) as usize]);
        }
    }
    if out.len() as u64 != len {
        return Err(format!(
            "the xz blocks hold {} of the {len} bytes of vmlinux",
            out.len()
        ));
    }
    Ok(out)
}

/// Decompressed bytes `[begin, begin + len)` of the stream, its blocks decoded into
/// place by one thread per core.
fn decode_range<S: Source + ?Sized>(
    src: &S,
    index: &XzIndex,
    begin: u64,
    len: u64,
) -> Result<Vec<u8>, String> {
    #[cfg(test)]
    super::testdata::DECODED_AGAIN.with(|n| n.set(n.get() + 1));
    let end = begin + len;
    let mut data = Vec::new();
    data.try_reserve_exact(len as usize)
        .map_err(|_| format!("cannot allocate {len} bytes for vmlinux"))?;
    data.resize(len as usize, 0);
    // per thread: blocks, where the wanted part starts in each, and its place
    let threads = xz_threads();
    let mut jobs: Vec<Vec<(&XzBlock, u64, &mut [u8])>> = (0..threads).map(|_| Vec::new()).collect();
    let mut rest: &mut [u8] = &mut data;
    let blocks = index
        .blocks
        .iter()
        .filter(|b| b.start < end && b.start + b.size > begin);
    for (i, b) in blocks.enumerate() {
        let from = begin.max(b.start);
        let to = end.min(b.start + b.size);
        let (place, after) = std::mem::take(&mut rest).split_at_mut((to - from) as usize);
        rest = after;
        jobs[i % threads].push((b, from - b.start, place));
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|list| {
                s.spawn(move || {
                    for (b, skip, place) in list {
                        let mut at = 0u64; // position in the block's data
                        decode_block(src, index.flags, b, &mut |piece| {
                            let piece_end = at + piece.len() as u64;
                            let lo = skip.max(at);
                            let hi = (skip + place.len() as u64).min(piece_end);
                            if lo < hi {
                                place[(lo - skip) as usize..(hi - skip) as usize].copy_from_slice(
                                    &piece[(lo - at) as usize..(hi - at) as usize],
                                );
                            }
                            at = piece_end;
                        })?;
                    }
                    Ok::<(), String>(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err("an xz thread panicked".into()))
        })
    })?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use crate::deb::ar::ar_members;
    use crate::deb::testdata::*;

    #[test]
    fn split_layout_is_read_from_the_end() {
        let abi = "7.2.13+deb14-amd64";
        let tar = split_tar(abi, 60, false);
        let vmlinux_at = header_offset(&tar, &format!("./usr/lib/debug/lib/modules/{abi}/vmlinux"));
        let mut data = xz_blocks(&tar, 8192);
        let mut deb_bytes = deb(&control_tar("p"), "data.tar.xz", &data);
        let before = found_from_the_end();
        let k = read(&deb_bytes).unwrap();
        assert_eq!(found_from_the_end(), before + 1);
        assert_eq!(k.vmlinux, vmlinux_bytes());
        assert_eq!(k.system_map.as_deref(), Some(&b"map"[..]));

        // a damaged block in the middle of the modules is never decoded
        let index = data_index(&deb_bytes);
        let b = index
            .blocks
            .iter()
            .find(|b| b.start > 16_384 && b.start + b.size < vmlinux_at)
            .unwrap();
        let member = ar_members(&deb_bytes[..]).unwrap()[2].clone();
        let at = (b.offset + b.unpadded / 2 - member.offset) as usize;
        data[at] ^= 0x55;
        deb_bytes = deb(&control_tar("p"), "data.tar.xz", &data);
        let k = read(&deb_bytes).unwrap();
        assert_eq!(k.vmlinux, vmlinux_bytes());
        assert_eq!(found_from_the_end(), before + 2);

        // a damaged block holding vmlinux is an error naming the block
        let index = data_index(&deb_bytes);
        let b = index
            .blocks
            .iter()
            .find(|b| b.start + b.size > vmlinux_at + 1024)
            .unwrap();
        let mut data = xz_blocks(&tar, 8192);
        data[(b.offset + b.unpadded / 2 - member.offset) as usize] ^= 0x55;
        let msg = read(&deb(&control_tar("p"), "data.tar.xz", &data))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("xz block at offset") && msg.contains("damaged"),
            "{msg}"
        );
    }

    #[test]
    fn large_vmlinux_is_decoded_again_into_place() {
        // more than KEEP_DECODED (16 KiB in tests): its blocks are decoded a second time
        let mut vmlinux = b"\x7fELF".to_vec();
        vmlinux.extend(noise(100_000, 7));
        let tar = split_tar_with("7.2-amd64", 20, false, &vmlinux);
        let (found, again) = (found_from_the_end(), DECODED_AGAIN.with(|n| n.get()));
        for block_size in [8192, 5000] {
            let data = xz_blocks(&tar, block_size);
            let k = read(&deb(&control_tar("p"), "data.tar.xz", &data)).unwrap();
            assert!(k.vmlinux == vmlinux, "block size {block_size}");
        }
        assert_eq!(found_from_the_end(), found + 2);
        assert_eq!(DECODED_AGAIN.with(|n| n.get()), again + 2);
    }

    #[test]
    fn header_straddling_two_blocks() {
        let abi = "7.2-amd64";
        let tar = split_tar(abi, 30, false);
        let h = header_offset(&tar, &format!("./usr/lib/debug/lib/modules/{abi}/vmlinux"));
        for cut in [1, 200, 511] {
            let before = found_from_the_end();
            let data = xz_blocks(&tar, h + cut);
            let k = read(&deb(&control_tar("p"), "data.tar.xz", &data)).unwrap();
            assert_eq!(k.vmlinux, vmlinux_bytes(), "cut {cut}");
            assert_eq!(found_from_the_end(), before + 1, "cut {cut}");
        }
    }

    #[test]
    fn not_found_from_the_end_walks_the_tar() {
        // vmlinux named by a pax header only: the search from the end does not see it
        let tar = split_tar("7.2-amd64", 30, true);
        let before = found_from_the_end();
        let k = read(&deb(
            &control_tar("p"),
            "data.tar.xz",
            &xz_blocks(&tar, 8192),
        ))
        .unwrap();
        assert_eq!(k.vmlinux, vmlinux_bytes());
        assert_eq!(found_from_the_end(), before);
        // a damaged index: the tar is walked
        let mut data = xz_blocks(&split_tar("7.2-amd64", 30, false), 8192);
        let n = data.len();
        data[n - 20] ^= 0x01;
        let k = read(&deb(&control_tar("p"), "data.tar.xz", &data)).unwrap();
        assert_eq!(k.vmlinux, vmlinux_bytes());
        assert_eq!(found_from_the_end(), before);
    }

    #[test]
    fn split_layout_md5sums_checked_from_the_end() {
        let abi = "7.2-amd64";
        let tar = split_tar(abi, 30, false);
        let control = |md5: &str| {
            let mut t = Vec::new();
            let sums = format!("{md5}  usr/lib/debug/lib/modules/{abi}/vmlinux\n");
            add(&mut t, "./md5sums", sums.as_bytes(), b'0');
            end(&mut t);
            t
        };
        // without block checks, md5sums are checked
        let data = xz_blocks_check(&tar, 8192, liblzma::stream::Check::None);
        let before = found_from_the_end();
        read(&deb(
            &control(&md5_hex(&vmlinux_bytes())),
            "data.tar.xz",
            &data,
        ))
        .unwrap();
        let msg = read(&deb(&control(&md5_hex(b"x")), "data.tar.xz", &data))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("md5sums lists"), "{msg}");
        assert_eq!(found_from_the_end(), before + 2);
    }
}
