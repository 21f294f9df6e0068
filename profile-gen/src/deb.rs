//! vmlinux and System.map read straight out of a Debian `linux-image-<abi>-dbg` package.
//!
//! A `.deb` is an `ar` archive (`debian-binary`, `control.tar.*`, `data.tar.*`). The data
//! archive of a -dbg package is about 1 GB of xz holding 5-8 GB of tar: vmlinux,
//! System.map and the debug info of every module. [`read_dbg_deb`] parses the `ar`
//! archive itself, decompresses the data member as a stream (xz, zstd, gzip, lzma or
//! none) and walks the tar headers, so nothing is unpacked to disk.
//!
//! Members looked for (paths as in the package, `./` first):
//! - vmlinux: `usr/lib/debug/boot/vmlinux-<abi>` (bookworm and older) or
//!   `usr/lib/debug/lib/modules/<abi>/vmlinux` (the layout of newer packages and of
//!   `make bindeb-pkg`);
//! - System.map: `usr/lib/debug/boot/System.map-<abi>` or
//!   `usr/lib/debug/lib/modules/<abi>/System.map`, of the same ABI as the vmlinux.
//!   Packages built by `make bindeb-pkg` have none: archivers list a directory's entries
//!   together, so once the tar has left the vmlinux's directory the map is taken as
//!   absent ([`DebKernel::system_map`] is `None`).
//!
//! How much is decompressed depends on the layout:
//! - bookworm and older: `boot/` comes before the modules, so the walk stops after
//!   vmlinux, having decompressed about 0.65 GB of tar;
//! - the newer layout: dpkg-deb sorts the tar, so `lib/modules/<abi>/vmlinux` comes
//!   after `lib/modules/<abi>/kernel/`, i.e. after 7 GB of module debug info. When the
//!   walk reaches the modules first and the data is multi-block xz (dpkg-deb compresses
//!   with threads, in 24 MiB blocks), the xz index at the end of the stream gives each
//!   block's place, and the blocks are decoded on their own (one per core at a time)
//!   from the end backwards until the vmlinux header shows up; the blocks decoded on
//!   the way are kept, so vmlinux is decoded once. When that fails (no index, one
//!   block, vmlinux named by a pax header) the whole tar is walked.
//!
//! Integrity: System.map is checked against the package's own `md5sums` (in the
//! control archive) when it lists it. vmlinux is too, except with xz in blocks with
//! checks: then the walk reads on to the end of the block holding vmlinux's last byte
//! (at most one block, 24 MiB for dpkg-deb) so the block checks cover all of it, and
//! blocks decoded from the end are checked whole (hashing 0.6 GB would cost more).
//!
//! Everything in the package is untrusted: every size is checked against the file or a
//! cap before it is used, and a damaged or cut package gives an [`Error::Input`] that
//! names the member and the offset.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use md5::{Digest, Md5};

use crate::error::{Error, Result};

/// The largest vmlinux read into memory (Debian's are 0.4-0.7 GB).
pub const MAX_VMLINUX: u64 = 4 << 30;
/// The largest System.map read into memory (Debian's are 4-10 MB).
pub const MAX_SYSTEM_MAP: u64 = 256 << 20;
/// The largest decompressed control archive read (a kernel's is a few hundred KB).
const MAX_CONTROL: u64 = 64 << 20;
/// The most members an `ar` archive may have (a .deb has 3).
const MAX_AR_MEMBERS: usize = 64;
/// The largest GNU long name or pax header data.
const MAX_META: u64 = 1 << 20;
/// The most metadata headers (long names, pax) before one entry.
const MAX_META_HEADERS: usize = 16;
/// The most memory the xz decoder may use (beyond that the package is refused).
const XZ_MEMLIMIT: u64 = 2 << 30;
/// Memory the multi-threaded xz decoder may use before it falls back to one thread.
const XZ_MEMLIMIT_THREADING: u64 = 512 << 20;
/// Worker threads for xz (blocks of a Debian -dbg package decode in parallel).
const XZ_MAX_THREADS: usize = 4;

/// The kernel debug files of a -dbg package.
#[derive(Clone)]
pub struct DebKernel {
    /// vmlinux with DWARF.
    pub vmlinux: Vec<u8>,
    /// Its member name in the data archive, e.g.
    /// `./usr/lib/debug/boot/vmlinux-6.1.0-56-amd64`.
    pub vmlinux_member: String,
    /// The System.map of the same ABI, when the package has one.
    pub system_map: Option<Vec<u8>>,
    /// Its member name in the data archive.
    pub system_map_member: Option<String>,
    /// `Package` and `Version` from the control file (`linux-image-6.1.0-56-amd64-dbg
    /// 6.1.192-2`), when the control archive could be read.
    pub package: Option<String>,
}

impl std::fmt::Debug for DebKernel {
    /// Sizes, not contents.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebKernel")
            .field("vmlinux", &format_args!("{} bytes", self.vmlinux.len()))
            .field("vmlinux_member", &self.vmlinux_member)
            .field(
                "system_map",
                &self
                    .system_map
                    .as_ref()
                    .map(|m| format!("{} bytes", m.len())),
            )
            .field("system_map_member", &self.system_map_member)
            .field("package", &self.package)
            .finish()
    }
}

/// Read vmlinux and System.map out of a `linux-image-<abi>-dbg` package without
/// unpacking it to disk. `progress` is called with the compressed bytes of the data
/// archive consumed so far (never more than the total) and its total size.
///
/// Errors: [`Error::Io`] when the file cannot be opened; [`Error::Input`] when it is
/// not a .deb, is damaged or cut short (naming the member and offset), holds no vmlinux
/// (naming what the package is instead, e.g. the boot image package) or holds one
/// larger than [`MAX_VMLINUX`].
pub fn read_dbg_deb(path: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<DebKernel> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    read_deb(&FileSource { file, size }, path, progress)
}

/// [`read_dbg_deb`] on any source (`path` names it in errors).
fn read_deb<S: Source + ?Sized>(
    src: &S,
    path: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<DebKernel> {
    let input = |message: String| Error::Input {
        path: path.to_path_buf(),
        message,
    };
    let members = ar_members(src).map_err(|e| e.into_error(path))?;
    let first = &members[0];
    let debian_binary = read_member(src, first, 64).map_err(|e| e.into_error(path))?;
    if first.name != "debian-binary" || !debian_binary.starts_with(b"2.") {
        return Err(input(format!(
            "not a Debian package: its first ar member is `{}`, not `debian-binary` with \
             format 2.x",
            first.name
        )));
    }
    let control = members
        .iter()
        .find(|m| m.name.starts_with("control.tar"))
        .and_then(|m| read_control(src, m).ok())
        .unwrap_or_default();
    let package = control.package;
    let data = members
        .iter()
        .find(|m| m.name.starts_with("data.tar"))
        .ok_or_else(|| {
            let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
            input(format!(
                "the package has no data.tar.* member (members: {})",
                names.join(", ")
            ))
        })?;
    let compression = Compression::of(&data.name).ok_or_else(|| {
        input(format!(
            "ar member `{}` at offset {}: unsupported compression (profile-gen reads \
             data.tar.xz, .zst, .gz, .lzma and plain data.tar)",
            data.name, data.header_offset
        ))
    })?;
    let in_data = |e: String| {
        input(format!(
            "ar member `{}` (at offset {}, {} bytes): {e}",
            data.name, data.header_offset, data.size
        ))
    };
    let progress = Progress {
        report: RefCell::new(progress),
        done: Cell::new(0),
        total: data.size,
    };
    // the xz index, for the layout whose vmlinux comes after the modules
    let index = match compression {
        Compression::Xz => XzIndex::read(src, data).ok().filter(|i| i.blocks.len() > 1),
        _ => None,
    };
    // with block checks, the walk reads on to the end of the block holding the last byte
    // it used instead of hashing vmlinux for md5sums
    let checked_blocks = index.as_ref().filter(|i| i.flags[1] & 0x0f != 0);
    // walk the tar from the start; the decoder (and its threads) ends with the walk
    let walk = |scan: &mut Scan, defer: bool| -> Result<(Option<String>, u64)> {
        let counted = Counting {
            inner: At::new(src, data.offset, data.size),
            progress: &progress,
        };
        let stream = compression
            .decoder(BufReader::with_capacity(1 << 20, counted))
            .map_err(&in_data)?;
        let mut tar = TarReader::new(stream);
        scan.hash_vmlinux = checked_blocks.is_none();
        let deferred = scan_data(&mut tar, scan, defer).map_err(&in_data)?;
        if let (None, Some(index)) = (&deferred, checked_blocks) {
            if scan.vmlinux.is_some() {
                finish_block(&mut tar, index).map_err(&in_data)?;
            }
        }
        Ok((deferred, tar.offset))
    };
    let mut scan = Scan::default();
    let (deferred, from) = walk(&mut scan, index.is_some())?;
    if let (Some(abi), Some(index)) = (deferred, &index) {
        match find_vmlinux_backwards(src, index, from, &abi, &progress).map_err(&in_data)? {
            Some((found, dir)) => scan.found_vmlinux(found, &abi, &dir),
            None => {
                // not found from the end: walk the whole tar
                scan.hints = Hints::default();
                walk(&mut scan, false)?;
            }
        }
    }
    let Some(vmlinux) = scan.vmlinux else {
        return Err(input(not_dbg_message(package.as_deref(), &scan.hints)));
    };
    for found in std::iter::once(&vmlinux).chain(&scan.system_map) {
        let Some(listed) = control.md5sums.get(normalize(&found.member)) else {
            continue;
        };
        let Some(md5) = &found.md5 else {
            continue;
        };
        if listed != md5 {
            return Err(in_data(format!(
                "`{}` has md5 {md5} but the package's md5sums lists {listed}: the package \
                 is damaged (download it again)",
                found.member
            )));
        }
    }
    let (system_map_member, system_map) = match scan.system_map {
        Some(m) => (Some(m.member), Some(m.data)),
        None => (None, None),
    };
    Ok(DebKernel {
        vmlinux: vmlinux.data,
        vmlinux_member: vmlinux.member,
        system_map,
        system_map_member,
        package,
    })
}

// ---------------------------------------------------------------------------------------
// reading the file

/// A package's bytes, read at offsets (so several readers and threads can share it).
trait Source: Sync {
    fn size(&self) -> u64;
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

struct FileSource {
    file: File,
    size: u64,
}

impl Source for FileSource {
    fn size(&self) -> u64 {
        self.size
    }

    #[cfg(unix)]
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.file, buf, offset)
    }

    #[cfg(windows)]
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::windows::fs::FileExt::seek_read(&self.file, buf, offset)
    }
}

impl Source for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// Fill `buf` from `offset`; an error if the source ends first.
fn read_exact_at<S: Source + ?Sized>(src: &S, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match src.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A reader of `src` from `pos` to `end`.
struct At<'a, S: ?Sized> {
    src: &'a S,
    pos: u64,
    end: u64,
}

impl<'a, S: Source + ?Sized> At<'a, S> {
    fn new(src: &'a S, offset: u64, len: u64) -> Self {
        At {
            src,
            pos: offset,
            end: offset + len,
        }
    }
}

impl<S: Source + ?Sized> Read for At<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.end - self.pos) as usize;
        if n == 0 {
            return Ok(0);
        }
        let got = self.src.read_at(&mut buf[..n], self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

/// The compressed bytes consumed, reported to the caller.
struct Progress<'a> {
    report: RefCell<&'a mut dyn FnMut(u64, u64)>,
    done: Cell<u64>,
    total: u64,
}

impl Progress<'_> {
    fn add(&self, n: u64) {
        let done = (self.done.get() + n).min(self.total);
        self.done.set(done);
        (self.report.borrow_mut())(done, self.total);
    }
}

/// Counts the compressed bytes read.
struct Counting<'a, 'b, R> {
    inner: R,
    progress: &'a Progress<'b>,
}

impl<R: Read> Read for Counting<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------
// ar

/// A parse error with the offset it happened at; turned into [`Error::Input`].
#[derive(Debug)]
struct ParseError(String);

impl ParseError {
    fn into_error(self, path: &Path) -> Error {
        Error::Input {
            path: path.to_path_buf(),
            message: self.0,
        }
    }
}

/// One member of an `ar` archive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ArMember {
    name: String,
    /// Offset of its 60-byte header.
    header_offset: u64,
    /// Offset of its data.
    offset: u64,
    size: u64,
}

const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
const AR_HEADER: u64 = 60;

/// The members of the `ar` archive `src`, each checked to lie in the file.
fn ar_members<S: Source + ?Sized>(src: &S) -> Result<Vec<ArMember>, ParseError> {
    let len = src.size();
    let io = |what: &str, offset: u64, e: io::Error| {
        ParseError(format!("reading {what} at offset {offset}: {e}"))
    };
    if len < 8 {
        return Err(ParseError(format!(
            "not a Debian package: {len} bytes, too short for an ar archive (the file is \
             truncated or not a .deb)"
        )));
    }
    let mut magic = [0u8; 8];
    read_exact_at(src, &mut magic, 0).map_err(|e| io("the ar header", 0, e))?;
    if &magic != AR_MAGIC {
        return Err(ParseError(
            "not a Debian package: no ar archive header (`!<arch>`)".into(),
        ));
    }
    let mut members = Vec::new();
    let mut pos = 8u64;
    while pos < len {
        let index = members.len() + 1;
        if members.len() == MAX_AR_MEMBERS {
            return Err(ParseError(format!(
                "more than {MAX_AR_MEMBERS} ar members (a .deb has 3): not a Debian package"
            )));
        }
        if len - pos < AR_HEADER {
            return Err(ParseError(format!(
                "ar member #{index} at offset {pos}: header cut short ({} of 60 bytes): \
                 the package is truncated (download it again)",
                len - pos
            )));
        }
        let mut h = [0u8; AR_HEADER as usize];
        read_exact_at(src, &mut h, pos).map_err(|e| io("an ar member header", pos, e))?;
        let raw_name = String::from_utf8_lossy(&h[..16]);
        let name = raw_name.trim_end_matches(' ');
        let name = name.strip_suffix('/').unwrap_or(name).to_string();
        if &h[58..60] != b"`\n" {
            return Err(ParseError(format!(
                "ar member #{index} (`{name}`) at offset {pos}: damaged header (no `\\n \
                 terminator): the package is damaged (download it again)"
            )));
        }
        let size_text = String::from_utf8_lossy(&h[48..58]);
        let size: u64 = size_text.trim_end_matches(' ').parse().map_err(|_| {
            ParseError(format!(
                "ar member #{index} (`{name}`) at offset {pos}: bad size field {size_text:?}"
            ))
        })?;
        let offset = pos + AR_HEADER;
        let available = len - offset;
        if size > available {
            return Err(ParseError(format!(
                "ar member `{name}` at offset {pos}: its header says {size} bytes but the \
                 file ends {available} bytes after it: the package is truncated \
                 (download it again)"
            )));
        }
        members.push(ArMember {
            name,
            header_offset: pos,
            offset,
            size,
        });
        // data is padded to an even offset; the pad of the last member may be missing
        pos = offset + size + (size & 1);
    }
    if members.is_empty() {
        return Err(ParseError(
            "not a Debian package: the ar archive is empty".into(),
        ));
    }
    Ok(members)
}

/// The data of a small member (at most `cap` bytes).
fn read_member<S: Source + ?Sized>(src: &S, m: &ArMember, cap: u64) -> Result<Vec<u8>, ParseError> {
    let mut buf = vec![0u8; m.size.min(cap) as usize];
    read_exact_at(src, &mut buf, m.offset).map_err(|e| {
        ParseError(format!(
            "reading ar member `{}` at offset {}: {e}",
            m.name, m.offset
        ))
    })?;
    Ok(buf)
}

/// What the control archive says.
#[derive(Debug, Default)]
struct Control {
    /// `Package Version`.
    package: Option<String>,
    /// md5 (lowercase hex) of the members [`classify`] knows, by normalized path.
    md5sums: HashMap<String, String>,
}

/// The control file's package and version, and the md5sums of the kernel files.
fn read_control<S: Source + ?Sized>(src: &S, m: &ArMember) -> Result<Control, String> {
    let compression = Compression::of(&m.name).ok_or("unknown compression")?;
    let stream = compression.decoder(BufReader::new(At::new(src, m.offset, m.size)))?;
    let mut tar = TarReader::new(stream.take(MAX_CONTROL));
    let mut control = Control::default();
    while let Some(entry) = tar.next_entry()? {
        if !entry.is_file() {
            continue;
        }
        match normalize(&entry.path) {
            "control" => {
                let data = tar.read_data(&entry, MAX_CONTROL, &mut |_| {})?;
                let text = String::from_utf8_lossy(&data);
                let field = |name: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                        .map(|v| v.trim().to_string())
                };
                control.package = field("Package").map(|p| match field("Version") {
                    Some(v) => format!("{p} {v}"),
                    None => p,
                });
            }
            "md5sums" => {
                let data = tar.read_data(&entry, MAX_CONTROL, &mut |_| {})?;
                for line in String::from_utf8_lossy(&data).lines() {
                    let Some((md5, path)) = line.split_once(char::is_whitespace) else {
                        continue;
                    };
                    let path = normalize(path.trim_start());
                    if classify(path).is_some() {
                        control
                            .md5sums
                            .insert(path.to_string(), md5.to_ascii_lowercase());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(control)
}

// ---------------------------------------------------------------------------------------
// decompression

/// How a member is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Xz,
    Zstd,
    Gzip,
    Lzma,
}

impl Compression {
    fn of(name: &str) -> Option<Compression> {
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

    fn decoder<'a, R: BufRead + 'a>(self, r: R) -> Result<Box<dyn Read + 'a>, String> {
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
fn xz_threads() -> usize {
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

// ---------------------------------------------------------------------------------------
// tar

/// One tar entry (after GNU long names and pax headers are applied).
#[derive(Debug, Clone)]
struct TarEntry {
    path: String,
    /// Size of its data in the archive.
    size: u64,
    /// The typeflag.
    kind: u8,
    /// Offset of its (first) header in the tar stream.
    header_offset: u64,
}

impl TarEntry {
    fn is_file(&self) -> bool {
        matches!(self.kind, b'0' | 0 | b'7')
    }
}

/// A bounded streaming tar reader: ustar, GNU (long names, base-256 sizes) and pax.
struct TarReader<R> {
    r: R,
    /// Bytes read from the tar stream so far.
    offset: u64,
    /// Data and padding of the current entry not read yet.
    pending: u64,
}

impl<R: Read> TarReader<R> {
    fn new(r: R) -> Self {
        TarReader {
            r,
            offset: 0,
            pending: 0,
        }
    }

    /// Read up to `buf.len()` bytes; fewer only at the end of the stream.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(format!(
                        "decompressing failed at offset {} of the tar stream: {e} (the \
                         package is damaged or cut short: download it again)",
                        self.offset + n as u64
                    ))
                }
            }
        }
        self.offset += n as u64;
        Ok(n)
    }

    fn skip(&mut self, mut n: u64, what: &str) -> Result<(), String> {
        let mut buf = [0u8; 64 << 10];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = self.read_full(&mut buf[..want])?;
            if got < want {
                return Err(format!(
                    "the tar stream ends at offset {} inside {what}: the package is cut \
                     short (download it again)",
                    self.offset
                ));
            }
            n -= got as u64;
        }
        Ok(())
    }

    /// The next entry, or `None` at the end-of-archive marker. Skips what is left of the
    /// previous entry's data.
    fn next_entry(&mut self) -> Result<Option<TarEntry>, String> {
        let pending = std::mem::take(&mut self.pending);
        self.skip(pending, "an entry's data")?;
        let mut long_name: Option<String> = None;
        let mut pax_path: Option<String> = None;
        let mut pax_size: Option<u64> = None;
        let mut first_offset = None;
        for _ in 0..=MAX_META_HEADERS {
            let header_offset = self.offset;
            first_offset.get_or_insert(header_offset);
            let mut h = [0u8; 512];
            let got = self.read_full(&mut h)?;
            if got < 512 {
                return Err(format!(
                    "the tar stream ends at offset {} inside the header at offset \
                     {header_offset} (no end-of-archive marker): the package is cut \
                     short (download it again)",
                    self.offset
                ));
            }
            if h.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            check_checksum(&h).map_err(|e| format!("tar header at offset {header_offset}: {e}"))?;
            let size = parse_size(&h[124..136])
                .map_err(|e| format!("tar header at offset {header_offset}: {e}"))?;
            let kind = h[156];
            let padded = size.div_ceil(512) * 512;
            match kind {
                b'L' | b'x' => {
                    if size > MAX_META {
                        return Err(format!(
                            "tar header at offset {header_offset}: a {} of {size} bytes \
                             (more than {MAX_META})",
                            if kind == b'L' {
                                "long name"
                            } else {
                                "pax header"
                            }
                        ));
                    }
                    let mut data = vec![0u8; padded as usize];
                    if self.read_full(&mut data)? < data.len() {
                        return Err(format!(
                            "the tar stream ends at offset {} inside the metadata of the \
                             header at offset {header_offset}: the package is cut short \
                             (download it again)",
                            self.offset
                        ));
                    }
                    data.truncate(size as usize);
                    if kind == b'L' {
                        let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                        long_name = Some(String::from_utf8_lossy(&data[..end]).into_owned());
                    } else {
                        parse_pax(&data, &mut pax_path, &mut pax_size)
                            .map_err(|e| format!("pax header at offset {header_offset}: {e}"))?;
                    }
                }
                b'K' | b'g' => self.skip(padded, "a tar metadata entry")?,
                _ => {
                    let size = pax_size.unwrap_or(size);
                    let path = match (pax_path, long_name) {
                        (Some(p), _) | (None, Some(p)) => p,
                        (None, None) => ustar_name(&h),
                    };
                    // links, directories, devices and fifos have no data
                    let size = if matches!(kind, b'1'..=b'6') { 0 } else { size };
                    self.pending = size.checked_next_multiple_of(512).ok_or_else(|| {
                        format!("tar header at offset {header_offset}: size {size} too large")
                    })?;
                    return Ok(Some(TarEntry {
                        path,
                        size,
                        kind,
                        header_offset: first_offset.unwrap_or(header_offset),
                    }));
                }
            }
        }
        Err(format!(
            "more than {MAX_META_HEADERS} tar metadata headers in a row before offset {}",
            self.offset
        ))
    }

    /// The data of `entry` (the one [`TarReader::next_entry`] returned last), at most
    /// `cap` bytes or an error. `seen` is given the data piece by piece as it is read.
    fn read_data(
        &mut self,
        entry: &TarEntry,
        cap: u64,
        seen: &mut dyn FnMut(&[u8]),
    ) -> Result<Vec<u8>, String> {
        if entry.size > cap {
            return Err(format!(
                "`{}` (tar header at offset {}) is {} bytes, more than the {} bytes \
                 profile-gen reads into memory",
                entry.path, entry.header_offset, entry.size, cap
            ));
        }
        let size = entry.size as usize;
        let mut data = Vec::new();
        data.try_reserve_exact(size).map_err(|_| {
            format!(
                "`{}`: cannot allocate {} bytes to read it into memory",
                entry.path, entry.size
            )
        })?;
        data.resize(size, 0);
        let mut got = 0;
        for chunk in data.chunks_mut(4 << 20) {
            let n = self.read_full(chunk)?;
            seen(&chunk[..n]);
            got += n;
            if n < chunk.len() {
                return Err(format!(
                    "the tar stream ends at offset {} inside `{}` (tar header at offset \
                     {}; {got} of {size} bytes): the package is cut short (download it \
                     again)",
                    self.offset, entry.path, entry.header_offset
                ));
            }
        }
        self.pending -= entry.size;
        Ok(data)
    }
}

/// The header checksum: the sum of its bytes with the checksum field as spaces.
fn check_checksum(h: &[u8; 512]) -> Result<(), String> {
    let stored = parse_octal(&h[148..156]).map_err(|e| format!("checksum field: {e}"))?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed) {
        Ok(())
    } else {
        Err(format!(
            "bad checksum (stored {stored}, computed {unsigned}): not a tar header, the \
             package is damaged"
        ))
    }
}

/// An octal field: optional leading spaces, digits, then NULs or spaces.
fn parse_octal(field: &[u8]) -> Result<u64, String> {
    let text = field
        .iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|&&b| b != 0 && b != b' ');
    let mut value: u64 = 0;
    for &b in text {
        if !(b'0'..=b'7').contains(&b) {
            return Err(format!(
                "not an octal number: {:?}",
                String::from_utf8_lossy(field)
            ));
        }
        value = value
            .checked_mul(8)
            .map(|v| v + u64::from(b - b'0'))
            .ok_or("number too large")?;
    }
    Ok(value)
}

/// The size field: octal, or GNU base-256 (high bit of the first byte set).
fn parse_size(field: &[u8]) -> Result<u64, String> {
    if field[0] & 0x80 == 0 {
        return parse_octal(field).map_err(|e| format!("size field: {e}"));
    }
    if field[0] & 0x40 != 0 {
        return Err("size field: negative base-256 size".into());
    }
    let mut value: u64 = u64::from(field[0] & 0x3f);
    for &b in &field[1..] {
        value = value
            .checked_mul(256)
            .map(|v| v | u64::from(b))
            .ok_or("size field: base-256 size too large")?;
    }
    Ok(value)
}

/// The name of a ustar or old GNU header (the POSIX prefix field joined in).
fn ustar_name(h: &[u8; 512]) -> String {
    let cstr = |f: &[u8]| {
        let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        String::from_utf8_lossy(&f[..end]).into_owned()
    };
    let name = cstr(&h[..100]);
    // POSIX ustar ("ustar\0"); GNU's "ustar  \0" uses these bytes for other fields
    if &h[257..263] == b"ustar\0" {
        let prefix = cstr(&h[345..500]);
        if !prefix.is_empty() {
            return format!("{prefix}/{name}");
        }
    }
    name
}

/// pax records `<len> <key>=<value>\n`: `path` and `size` are used.
fn parse_pax(
    mut data: &[u8],
    path: &mut Option<String>,
    size: &mut Option<u64>,
) -> Result<(), String> {
    while !data.is_empty() && data[0] != 0 {
        let space = data
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or("record without a length")?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad record length")?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(format!("bad record length {len}"));
        }
        let record = &data[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("record without `=`")?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => *path = Some(String::from_utf8_lossy(value).into_owned()),
            b"size" => {
                *size = Some(
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or("bad size record")?,
                )
            }
            _ => {}
        }
        data = &data[len..];
    }
    Ok(())
}

/// A member name without its leading `./` or `/`.
fn normalize(path: &str) -> &str {
    let mut p = path;
    loop {
        if let Some(rest) = p.strip_prefix("./") {
            p = rest;
        } else if let Some(rest) = p.strip_prefix('/') {
            p = rest;
        } else {
            return p;
        }
    }
}

// ---------------------------------------------------------------------------------------
// finding the members

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Vmlinux,
    SystemMap,
}

/// What a member is, with its ABI and directory: `usr/lib/debug/boot/vmlinux-<abi>`,
/// `usr/lib/debug/lib/modules/<abi>/vmlinux` and the same for System.map.
fn classify(path: &str) -> Option<(Role, &str, &str)> {
    let p = normalize(path);
    let single = |s: &str| !s.is_empty() && !s.contains('/');
    if let Some(file) = p.strip_prefix("usr/lib/debug/boot/") {
        let dir = &p[..p.len() - file.len()];
        if let Some(abi) = file.strip_prefix("vmlinux-").filter(|a| single(a)) {
            return Some((Role::Vmlinux, abi, dir));
        }
        if let Some(abi) = file.strip_prefix("System.map-").filter(|a| single(a)) {
            return Some((Role::SystemMap, abi, dir));
        }
    }
    if let Some(rest) = p.strip_prefix("usr/lib/debug/lib/modules/") {
        let (abi, file) = rest.split_once('/')?;
        let dir = &p[..p.len() - file.len()];
        if single(abi) {
            match file {
                "vmlinux" => return Some((Role::Vmlinux, abi, dir)),
                "System.map" => return Some((Role::SystemMap, abi, dir)),
                _ => {}
            }
        }
    }
    None
}

/// What was seen of a package without vmlinux, to say what it is.
#[derive(Debug, Default)]
struct Hints {
    /// `boot/vmlinuz-<abi>`: a boot image package.
    vmlinuz: Option<String>,
    /// `lib/modules/<abi>/...` or `usr/lib/modules/<abi>/...`.
    modules_abi: Option<String>,
    files: u64,
    first_file: Option<String>,
}

impl Hints {
    fn note(&mut self, entry: &TarEntry) {
        if !entry.is_file() && entry.kind != b'2' {
            return;
        }
        let p = normalize(&entry.path);
        if self.vmlinuz.is_none() {
            if let Some(abi) = p.strip_prefix("boot/vmlinuz-") {
                if !abi.is_empty() && !abi.contains('/') {
                    self.vmlinuz = Some(entry.path.clone());
                }
            }
        }
        if self.modules_abi.is_none() {
            let rest = p
                .strip_prefix("lib/modules/")
                .or_else(|| p.strip_prefix("usr/lib/modules/"));
            if let Some((abi, _)) = rest.and_then(|r| r.split_once('/')) {
                if !abi.is_empty() {
                    self.modules_abi = Some(abi.to_string());
                }
            }
        }
        if entry.is_file() {
            self.files += 1;
            if self.first_file.is_none() {
                self.first_file = Some(entry.path.clone());
            }
        }
    }

    fn abi(&self) -> Option<&str> {
        self.vmlinuz
            .as_deref()
            .and_then(|v| normalize(v).strip_prefix("boot/vmlinuz-"))
            .or(self.modules_abi.as_deref())
    }
}

/// A member read from the data archive.
#[derive(Debug)]
struct Found {
    member: String,
    data: Vec<u8>,
    /// Lowercase hex; `None` when the data was verified otherwise (xz block checks).
    md5: Option<String>,
}

impl Found {
    /// Read `entry`'s data, with its md5 when `hash`.
    fn read<R: Read>(
        tar: &mut TarReader<R>,
        entry: &TarEntry,
        cap: u64,
        hash: bool,
    ) -> Result<Found, String> {
        let mut md5 = hash.then(Md5::new);
        let data = tar.read_data(entry, cap, &mut |piece| {
            if let Some(md5) = &mut md5 {
                md5.update(piece);
            }
        })?;
        Ok(Found {
            member: entry.path.clone(),
            data,
            md5: md5.map(|m| hex(&m.finalize())),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the data archive gave so far.
#[derive(Debug, Default)]
struct Scan {
    vmlinux: Option<Found>,
    system_map: Option<Found>,
    /// The vmlinux's ABI and directory.
    vmlinux_at: Option<(String, String)>,
    /// The ABI of the System.map read.
    map_abi: Option<String>,
    /// Hash vmlinux for md5sums (not needed when xz block checks cover it).
    hash_vmlinux: bool,
    hints: Hints,
}

/// Walk the data tar until vmlinux and its System.map are read (or the map is known to
/// be absent), or to the end. With `defer`, stop at the first module debug file of
/// `usr/lib/debug/lib/modules/<abi>/` when no vmlinux was read yet (its vmlinux sorts
/// after them) and return that ABI; the walk can go on with another call.
fn scan_data<R: Read>(
    tar: &mut TarReader<R>,
    scan: &mut Scan,
    defer: bool,
) -> Result<Option<String>, String> {
    while let Some(entry) = tar.next_entry()? {
        if let Some((_, dir)) = &scan.vmlinux_at {
            // archivers list a directory's entries together: once the stream has left the
            // vmlinux's directory, its System.map is not in the package
            if !normalize(&entry.path).starts_with(dir.as_str()) {
                break;
            }
        }
        scan.hints.note(&entry);
        if !entry.is_file() {
            continue;
        }
        match classify(&entry.path) {
            Some((Role::Vmlinux, abi, dir)) if scan.vmlinux.is_none() => {
                if entry.size > MAX_VMLINUX {
                    return Err(too_large(&entry.path, entry.header_offset, entry.size));
                }
                let found = Found::read(tar, &entry, MAX_VMLINUX, scan.hash_vmlinux)?;
                check_elf(&found.data, &entry.path, entry.header_offset)?;
                scan.found_vmlinux(found, abi, dir);
            }
            Some((Role::SystemMap, abi, _)) if scan.system_map.is_none() => {
                if scan.vmlinux_at.as_ref().is_some_and(|(v, _)| v != abi) {
                    continue;
                }
                scan.map_abi = Some(abi.to_string());
                scan.system_map = Some(Found::read(tar, &entry, MAX_SYSTEM_MAP, true)?);
            }
            None if defer && scan.vmlinux.is_none() => {
                let abi = normalize(&entry.path)
                    .strip_prefix("usr/lib/debug/lib/modules/")
                    .and_then(|rest| rest.split_once('/'))
                    .map(|(abi, _)| abi)
                    .filter(|abi| !abi.is_empty());
                if let Some(abi) = abi {
                    return Ok(Some(abi.to_string()));
                }
            }
            _ => {}
        }
        if scan.vmlinux.is_some() && scan.system_map.is_some() {
            break;
        }
    }
    Ok(None)
}

impl Scan {
    fn found_vmlinux(&mut self, found: Found, abi: &str, dir: &str) {
        if self.map_abi.as_deref().is_some_and(|m| m != abi) {
            self.system_map = None; // another kernel's map
        }
        self.vmlinux_at = Some((abi.to_string(), dir.to_string()));
        self.vmlinux = Some(found);
    }
}

fn too_large(member: &str, header_offset: u64, size: u64) -> String {
    format!(
        "`{member}` (tar header at offset {header_offset}) is {size} bytes: profile-gen \
         refuses a vmlinux larger than 4 GiB"
    )
}

fn check_elf(data: &[u8], member: &str, header_offset: u64) -> Result<(), String> {
    if data.starts_with(b"\x7fELF") {
        Ok(())
    } else {
        Err(format!(
            "`{member}` (tar header at offset {header_offset}) is not an ELF file"
        ))
    }
}

/// The error for a package without vmlinux: what it is and what to give instead.
fn not_dbg_message(package: Option<&str>, hints: &Hints) -> String {
    let what = match package {
        Some(p) => format!("this is {p}"),
        None => "this package".to_string(),
    };
    let holds = if let Some(v) = &hints.vmlinuz {
        format!(
            "the boot image package: it holds {v}, a compressed kernel without DWARF, but \
             no vmlinux"
        )
    } else if let Some(abi) = &hints.modules_abi {
        format!("it holds kernel modules of {abi} but no vmlinux")
    } else if let Some(f) = &hints.first_file {
        format!("it holds {} files such as {f}, none a vmlinux", hints.files)
    } else {
        "its data archive holds no files".to_string()
    };
    let want = match hints.abi() {
        Some(abi) => format!("give the matching linux-image-{abi}-dbg package"),
        None => "give a linux-image-<abi>-dbg package".to_string(),
    };
    format!(
        "no vmlinux with debug info in this package (looked for \
         ./usr/lib/debug/boot/vmlinux-<abi> and ./usr/lib/debug/lib/modules/<abi>/vmlinux); \
         {what} ({holds}); {want}"
    )
}

// ---------------------------------------------------------------------------------------
// xz blocks: vmlinux found from the end of the stream

/// One block of an xz stream, from the stream's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct XzBlock {
    /// Offset of the block in the package file.
    offset: u64,
    /// Block header, compressed data and check, without the padding.
    unpadded: u64,
    /// Where its data starts in the decompressed stream.
    start: u64,
    /// Its decompressed size.
    size: u64,
}

/// The blocks of a single-stream xz member.
#[derive(Debug)]
struct XzIndex {
    /// The stream flags (the check type), copied into the stream built for each block.
    flags: [u8; 2],
    blocks: Vec<XzBlock>,
    /// The decompressed size of the stream.
    total: u64,
}

const XZ_MAGIC: &[u8; 6] = b"\xFD7zXZ\0";
/// The largest xz index read (Debian's are a few KB).
const MAX_XZ_INDEX: u64 = 64 << 20;
/// The largest block decoded on its own (dpkg-deb's are 24 MiB).
const MAX_XZ_BLOCK: u64 = 256 << 20;
/// Decoded blocks kept while searching from the end, so vmlinux is decoded once (a
/// larger one is decoded again).
const KEEP_DECODED: u64 = if cfg!(test) { 16 << 10 } else { 1 << 30 };

fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn round4(n: u64) -> u64 {
    n.div_ceil(4) * 4
}

impl XzIndex {
    /// The index of member `m`, an xz stream with nothing after it. Errors say why the
    /// index cannot be used (the data is then walked from the start).
    fn read<S: Source + ?Sized>(src: &S, m: &ArMember) -> Result<XzIndex, String> {
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
fn finish_block<R: Read>(tar: &mut TarReader<R>, index: &XzIndex) -> Result<(), String> {
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
fn decode_block<S: Source + ?Sized>(
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

/// Find vmlinux of `abi` from the end of the stream: decode the blocks that end after
/// `from` (in parallel, from the last) until one holds its tar header; the blocks after
/// it are kept, so its data is decoded once. `None` when it is not found that way.
fn find_vmlinux_backwards<S: Source + ?Sized>(
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
                let md5 = (index.flags[1] & 0x0f == 0).then(|| hex(&Md5::digest(&vmlinux)));
                let dir = match classify(&member) {
                    Some((_, _, dir)) => dir.to_string(),
                    None => String::new(),
                };
                #[cfg(test)]
                tests::FOUND_FROM_THE_END.with(|n| n.set(n.get() + 1));
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
    tests::DECODED_AGAIN.with(|n| n.set(n.get() + 1));
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
    use super::*;
    use std::io::Write;

    // --- builders -------------------------------------------------------------------

    fn tar_header(name: &str, size: u64, kind: u8) -> [u8; 512] {
        let mut h = [0u8; 512];
        let n = name.as_bytes();
        h[..n.len().min(100)].copy_from_slice(&n[..n.len().min(100)]);
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = kind;
        h[257..265].copy_from_slice(b"ustar  \0");
        set_checksum(&mut h);
        h
    }

    fn set_checksum(h: &mut [u8; 512]) {
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    fn pad(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(512) {
            out.push(0);
        }
    }

    fn add(out: &mut Vec<u8>, name: &str, data: &[u8], kind: u8) {
        if name.len() > 100 {
            let mut long = name.as_bytes().to_vec();
            long.push(0);
            out.extend_from_slice(&tar_header("././@LongLink", long.len() as u64, b'L'));
            out.extend_from_slice(&long);
            pad(out);
        }
        out.extend_from_slice(&tar_header(name, data.len() as u64, kind));
        out.extend_from_slice(data);
        pad(out);
    }

    fn add_pax(out: &mut Vec<u8>, name: &str, data: &[u8]) {
        let record = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            while format!("{len}{body}").len() != len {
                len += 1;
            }
            format!("{len}{body}")
        };
        let pax = record("path", name) + &record("mtime", "1700000000.5");
        out.extend_from_slice(&tar_header("./PaxHeaders/x", pax.len() as u64, b'x'));
        out.extend_from_slice(pax.as_bytes());
        pad(out);
        out.extend_from_slice(&tar_header("truncated-name", data.len() as u64, b'0'));
        out.extend_from_slice(data);
        pad(out);
    }

    fn end(out: &mut Vec<u8>) {
        out.extend_from_slice(&[0u8; 1024]);
    }

    fn vmlinux_bytes() -> Vec<u8> {
        let mut v = b"\x7fELF".to_vec();
        v.extend((0..3000u32).map(|i| (i * 7 % 251) as u8));
        v
    }

    /// A -dbg data tar, classic layout, with dirs, a symlink, a long name and trailing
    /// module data.
    fn dbg_tar(abi: &str) -> Vec<u8> {
        let mut t = Vec::new();
        add(&mut t, "./", b"", b'5');
        add(&mut t, "./usr/lib/debug/.build-id/79/", b"", b'5');
        add(&mut t, "./usr/lib/debug/.build-id/79/x.debug", b"", b'2');
        let long = format!("./usr/share/doc/{}/changelog.gz", "d".repeat(120));
        add(&mut t, &long, b"changes", b'0');
        add(&mut t, "./usr/lib/debug/boot/", b"", b'5');
        add(
            &mut t,
            &format!("./usr/lib/debug/boot/System.map-{abi}"),
            b"ffffffff81000000 T _text\n",
            b'0',
        );
        add(
            &mut t,
            &format!("./usr/lib/debug/boot/vmlinux-{abi}"),
            &vmlinux_bytes(),
            b'0',
        );
        add(
            &mut t,
            &format!("./usr/lib/debug/lib/modules/{abi}/kernel/a.ko"),
            &[1u8; 5000],
            b'0',
        );
        end(&mut t);
        t
    }

    fn control_tar(package: &str) -> Vec<u8> {
        let mut t = Vec::new();
        add(&mut t, "./", b"", b'5');
        let control = format!("Package: {package}\nVersion: 6.1.192-2\nArchitecture: amd64\n");
        add(&mut t, "./control", control.as_bytes(), b'0');
        end(&mut t);
        t
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        liblzma::read::XzEncoder::new(data, 1)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

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

    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = AR_MAGIC.to_vec();
        for (name, data) in members {
            let header = format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                format!("{name}/"),
                0,
                0,
                0,
                "100644",
                data.len()
            );
            assert_eq!(header.len(), 60);
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            if !data.len().is_multiple_of(2) {
                out.push(b'\n');
            }
        }
        out
    }

    fn deb(control: &[u8], data_name: &str, data: &[u8]) -> Vec<u8> {
        ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", &xz(control)),
            (data_name, data),
        ])
    }

    fn read(bytes: &[u8]) -> Result<DebKernel> {
        let mut calls = 0u64;
        let out = read_deb(bytes, Path::new("test.deb"), &mut |done, total| {
            assert!(done <= total);
            calls += 1;
        });
        if out.is_ok() {
            assert!(calls > 0);
        }
        out
    }

    const ABI: &str = "6.1.0-56-amd64";

    thread_local! {
        /// How often this thread found vmlinux from the end of an xz stream.
        pub(super) static FOUND_FROM_THE_END: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        /// How often this thread decoded vmlinux's blocks a second time.
        pub(super) static DECODED_AGAIN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn found_from_the_end() -> usize {
        FOUND_FROM_THE_END.with(|n| n.get())
    }

    /// xz in blocks of `block_size` decompressed bytes, as `xz -T` and dpkg-deb write.
    fn xz_blocks(data: &[u8], block_size: u64) -> Vec<u8> {
        xz_blocks_check(data, block_size, liblzma::stream::Check::Crc64)
    }

    fn xz_blocks_check(data: &[u8], block_size: u64, check: liblzma::stream::Check) -> Vec<u8> {
        let stream = liblzma::stream::MtStreamBuilder::new()
            .threads(2)
            .block_size(block_size)
            .preset(1)
            .check(check)
            .encoder()
            .unwrap();
        let mut out = Vec::new();
        liblzma::read::XzEncoder::new_stream(data, stream)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// The newer layout: System.map, then module debug info, then vmlinux, then
    /// symlinks. `pax_vmlinux` names vmlinux by a pax header only.
    fn split_tar(abi: &str, modules: usize, pax_vmlinux: bool) -> Vec<u8> {
        split_tar_with(abi, modules, pax_vmlinux, &vmlinux_bytes())
    }

    fn split_tar_with(abi: &str, modules: usize, pax_vmlinux: bool, vmlinux: &[u8]) -> Vec<u8> {
        let dir = format!("./usr/lib/debug/lib/modules/{abi}");
        let mut t = Vec::new();
        add(&mut t, "./", b"", b'5');
        add(&mut t, "./usr/lib/debug/boot/", b"", b'5');
        add(&mut t, &format!("{dir}/"), b"", b'5');
        add(&mut t, &format!("{dir}/System.map"), b"map", b'0');
        add(&mut t, &format!("{dir}/kernel/"), b"", b'5');
        for i in 0..modules {
            let ko = format!("{dir}/kernel/m{i}.ko");
            add(&mut t, &ko, &noise(3000 + i * 37, i as u64), b'0');
        }
        if pax_vmlinux {
            add_pax(&mut t, &format!("{dir}/vmlinux"), vmlinux);
        } else {
            add(&mut t, &format!("{dir}/vmlinux"), vmlinux, b'0');
        }
        add(
            &mut t,
            &format!("./usr/lib/debug/boot/vmlinux-{abi}"),
            b"",
            b'2',
        );
        end(&mut t);
        t
    }

    /// The offset of the header of the entry named `name`.
    fn header_offset(tar: &[u8], name: &str) -> u64 {
        let mut r = TarReader::new(tar);
        loop {
            let e = r.next_entry().unwrap().unwrap();
            if e.path == name {
                return e.header_offset;
            }
        }
    }

    fn data_index(deb: &[u8]) -> XzIndex {
        let members = ar_members(deb).unwrap();
        XzIndex::read(
            deb,
            members.iter().find(|m| m.name == "data.tar.xz").unwrap(),
        )
        .unwrap()
    }

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

    fn scan_all<R: Read>(tar: &mut TarReader<R>) -> Result<Scan, String> {
        let mut scan = Scan::default();
        scan_data(tar, &mut scan, false)?;
        Ok(scan)
    }

    // --- tests ----------------------------------------------------------------------

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
    fn split_layout_pax_and_long_names() {
        let abi = "7.2.13+deb14-amd64";
        let dir = format!("./usr/lib/debug/lib/modules/{abi}");
        let mut t = Vec::new();
        add(&mut t, &format!("{dir}/"), b"", b'5');
        add_pax(&mut t, &format!("{dir}/System.map"), b"map");
        add(
            &mut t,
            &format!("{dir}/kernel/{}.ko", "m".repeat(150)),
            &[2; 700],
            b'0',
        );
        add(&mut t, &format!("{dir}/vmlinux"), &vmlinux_bytes(), b'0');
        end(&mut t);
        let k = read(&deb(&control_tar("x"), "data.tar.xz", &xz(&t))).unwrap();
        assert_eq!(k.vmlinux_member, format!("{dir}/vmlinux"));
        assert_eq!(k.system_map.as_deref(), Some(&b"map"[..]));
        assert_eq!(k.package.as_deref(), Some("x 6.1.192-2"));
    }

    fn md5_hex(data: &[u8]) -> String {
        Md5::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn md5sums_are_checked() {
        let tar = dbg_tar(ABI);
        let with_sums = |vmlinux_md5: &str| {
            let mut t = Vec::new();
            add(&mut t, "./control", b"Package: p\nVersion: 1\n", b'0');
            let sums = format!(
                "{}  usr/lib/debug/boot/System.map-{ABI}\n{vmlinux_md5}  \
                 usr/lib/debug/boot/vmlinux-{ABI}\n0123  usr/share/doc/x\n",
                md5_hex(b"ffffffff81000000 T _text\n")
            );
            add(&mut t, "./md5sums", sums.as_bytes(), b'0');
            end(&mut t);
            t
        };
        let good = with_sums(&md5_hex(&vmlinux_bytes()).to_uppercase());
        read(&deb(&good, "data.tar.xz", &xz(&tar))).unwrap();
        let bad = with_sums(&md5_hex(b"something else"));
        let msg = read(&deb(&bad, "data.tar.xz", &xz(&tar)))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&format!("`./usr/lib/debug/boot/vmlinux-{ABI}` has md5")),
            "{msg}"
        );
        assert!(msg.contains("damaged"), "{msg}");
    }

    #[test]
    fn stops_once_both_are_read() {
        // garbage after the two members is never decompressed
        let mut tar = dbg_tar(ABI);
        let cut = tar.len() - 1024 - 5120;
        tar.truncate(cut);
        tar.extend_from_slice(&[0xAB; 4096]);
        let k = read(&deb(&control_tar("p"), "data.tar", &tar)).unwrap();
        assert_eq!(k.vmlinux, vmlinux_bytes());
    }

    #[test]
    fn map_absent_when_the_vmlinux_directory_is_left() {
        let mut t = Vec::new();
        add(
            &mut t,
            &format!("./usr/lib/debug/lib/modules/{ABI}/vmlinux"),
            &vmlinux_bytes(),
            b'0',
        );
        add(&mut t, "./usr/share/doc/x/copyright", b"c", b'0');
        t.extend_from_slice(&[0xCD; 2048]); // never read
        let k = read(&deb(&control_tar("p"), "data.tar", &t)).unwrap();
        assert!(k.system_map.is_none() && k.system_map_member.is_none());
    }

    #[test]
    fn map_of_another_kernel_is_not_taken() {
        let mut t = Vec::new();
        add(
            &mut t,
            "./usr/lib/debug/boot/System.map-9.9.9-amd64",
            b"other",
            b'0',
        );
        add(
            &mut t,
            &format!("./usr/lib/debug/boot/vmlinux-{ABI}"),
            &vmlinux_bytes(),
            b'0',
        );
        end(&mut t);
        let k = read(&deb(&control_tar("p"), "data.tar", &t)).unwrap();
        assert!(k.system_map.is_none());
    }

    #[test]
    fn image_package_is_a_clear_error() {
        let mut t = Vec::new();
        add(&mut t, "./boot/", b"", b'5');
        add(&mut t, &format!("./boot/System.map-{ABI}"), b"map", b'0');
        add(&mut t, &format!("./boot/vmlinuz-{ABI}"), b"MZ...", b'0');
        add(
            &mut t,
            &format!("./lib/modules/{ABI}/kernel/a.ko"),
            b"ko",
            b'0',
        );
        end(&mut t);
        let err = read(&deb(
            &control_tar("linux-image-6.1.0-56-amd64"),
            "data.tar.xz",
            &xz(&t),
        ))
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Input { .. }), "{msg}");
        assert!(
            msg.contains("this is linux-image-6.1.0-56-amd64 6.1.192-2"),
            "{msg}"
        );
        assert!(msg.contains("boot image package"), "{msg}");
        assert!(
            msg.contains("give the matching linux-image-6.1.0-56-amd64-dbg package"),
            "{msg}"
        );
    }

    #[test]
    fn other_packages_say_what_they_hold() {
        let mut t = Vec::new();
        add(&mut t, "./usr/bin/hello", b"#!", b'0');
        end(&mut t);
        let msg = read(&deb(&control_tar("hello"), "data.tar", &t))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("this is hello") && msg.contains("./usr/bin/hello"),
            "{msg}"
        );
        assert!(
            msg.contains("give a linux-image-<abi>-dbg package"),
            "{msg}"
        );
    }

    #[test]
    fn not_a_deb() {
        for bytes in [
            &b""[..],
            b"!<arch>",
            b"hello world, not an archive",
            b"!<arch>\n",
        ] {
            let msg = read(bytes).unwrap_err().to_string();
            assert!(msg.contains("not a Debian package"), "{msg}");
        }
        let plain = ar(&[("foo.o", b"x")]);
        assert!(read(&plain)
            .unwrap_err()
            .to_string()
            .contains("first ar member is `foo.o`"));
        let no_data = ar(&[("debian-binary", b"2.0\n"), ("control.tar", b"")]);
        let msg = read(&no_data).unwrap_err().to_string();
        assert!(msg.contains("no data.tar.* member"), "{msg}");
        let bz = deb(&control_tar("p"), "data.tar.bz2", b"BZh");
        let msg = read(&bz).unwrap_err().to_string();
        assert!(msg.contains("unsupported compression"), "{msg}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let tar = dbg_tar(ABI);
        for (name, data) in [("data.tar.xz", xz(&tar)), ("data.tar", tar.clone())] {
            let full = deb(&control_tar("p"), name, &data);
            read(&full).unwrap();
            // the ar archive's sizes catch every cut (the final pad byte is optional)
            let end = full.len() - usize::from(!data.len().is_multiple_of(2));
            for n in 0..end {
                let err = read(&full[..n]).expect_err(&format!("{name} cut at {n}"));
                assert!(matches!(err, Error::Input { .. }), "{err}");
            }
        }
    }

    #[test]
    fn truncated_ar_names_member_and_offset() {
        let full = deb(&control_tar("p"), "data.tar", &dbg_tar(ABI));
        let msg = read(&full[..full.len() - 100]).unwrap_err().to_string();
        assert!(msg.contains("ar member `data.tar` at offset"), "{msg}");
        assert!(msg.contains("truncated"), "{msg}");
    }

    #[test]
    fn every_tar_truncation_is_an_error_or_complete() {
        // the tar parser alone, on streams cut at every byte (as a damaged compressed
        // stream would end early)
        let tar = dbg_tar(ABI);
        let vmlinux = format!("./usr/lib/debug/boot/vmlinux-{ABI}");
        let needed = {
            // end of vmlinux's data: the last member read
            let mut r = TarReader::new(&tar[..]);
            loop {
                let e = r.next_entry().unwrap().unwrap();
                if e.path == vmlinux {
                    break r.offset as usize + e.size as usize;
                }
            }
        };
        for n in 0..tar.len() {
            let mut r = TarReader::new(&tar[..n]);
            match scan_all(&mut r) {
                Ok(scan) => {
                    assert!(n >= needed, "cut at {n} accepted");
                    assert_eq!(scan.vmlinux.unwrap().data, vmlinux_bytes());
                }
                Err(e) => {
                    assert!(n < needed, "cut at {n}: {e}");
                    assert!(e.contains("offset"), "{e}");
                }
            }
        }
    }

    #[test]
    fn corrupt_tar_headers() {
        let mut tar = dbg_tar(ABI);
        tar[600] ^= 0xFF; // second header's name: checksum fails
        let e = scan_all(&mut TarReader::new(&tar[..])).unwrap_err();
        assert!(
            e.contains("tar header at offset 512") && e.contains("checksum"),
            "{e}"
        );

        // a huge size claim: refused before any allocation or read
        let mut t = Vec::new();
        let mut h = tar_header(&format!("./usr/lib/debug/boot/vmlinux-{ABI}"), 0, b'0');
        h[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]); // 4 GiB
        h[135] = 1; // 4 GiB + 1
        set_checksum(&mut h);
        t.extend_from_slice(&h);
        let e = scan_all(&mut TarReader::new(&t[..])).unwrap_err();
        assert!(e.contains("larger than 4 GiB"), "{e}");

        // an oversized long name
        let mut t = tar_header("././@LongLink", MAX_META + 1, b'L').to_vec();
        t.extend_from_slice(&[b'a'; 1024]);
        let e = scan_all(&mut TarReader::new(&t[..])).unwrap_err();
        assert!(e.contains("long name"), "{e}");

        // a bad pax record
        let mut t = tar_header("pax", 9, b'x').to_vec();
        t.extend_from_slice(b"99 path=x");
        pad(&mut t);
        let e = scan_all(&mut TarReader::new(&t[..])).unwrap_err();
        assert!(e.contains("pax header at offset 0"), "{e}");

        // not an ELF
        let mut t = Vec::new();
        add(
            &mut t,
            &format!("./usr/lib/debug/boot/vmlinux-{ABI}"),
            b"text",
            b'0',
        );
        end(&mut t);
        let e = scan_all(&mut TarReader::new(&t[..])).unwrap_err();
        assert!(e.contains("not an ELF"), "{e}");

        // endless metadata headers
        let mut t = Vec::new();
        for _ in 0..20 {
            t.extend_from_slice(&tar_header("g", 0, b'g'));
        }
        let e = scan_all(&mut TarReader::new(&t[..])).unwrap_err();
        assert!(e.contains("metadata headers"), "{e}");
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
    fn fields() {
        assert_eq!(parse_octal(b"0000644\0").unwrap(), 0o644);
        assert_eq!(parse_octal(b"   12 \0").unwrap(), 0o12);
        assert!(parse_octal(b"0009\0").is_err());
        assert_eq!(
            parse_size(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]).unwrap(),
            256
        );
        assert!(parse_size(&[0xFF; 12]).is_err());
        assert!(
            parse_size(&[0x80, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0])
                .is_err()
        );
        assert_eq!(normalize(".///./usr/x"), "usr/x");
        assert_eq!(
            classify("./usr/lib/debug/boot/vmlinux-6.1.0-56-amd64"),
            Some((Role::Vmlinux, "6.1.0-56-amd64", "usr/lib/debug/boot/"))
        );
        assert_eq!(
            classify("usr/lib/debug/lib/modules/7.2-amd64/System.map"),
            Some((
                Role::SystemMap,
                "7.2-amd64",
                "usr/lib/debug/lib/modules/7.2-amd64/"
            ))
        );
        assert_eq!(classify("./usr/lib/debug/boot/vmlinux-"), None);
        assert_eq!(
            classify("./usr/lib/debug/lib/modules/x/kernel/vmlinux"),
            None
        );
        assert_eq!(classify("./boot/vmlinuz-6.1.0-56-amd64"), None);
        assert_eq!(Compression::of("data.tar.zst"), Some(Compression::Zstd));
        assert_eq!(Compression::of("data.tar.bz2"), None);
    }
}
