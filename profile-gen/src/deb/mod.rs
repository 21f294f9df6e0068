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
//!
//! [`read_kernel_deb`] reads whichever kernel file a package holds: the vmlinux of a
//! -dbg package, the boot image of an image package (`boot.rs`).
//!
//! One file a job: `ar.rs` lists the package's members, `decode.rs` decompresses a
//! member as a stream, `tar.rs` walks its headers, `control.rs` reads the control
//! archive (package name, md5sums), `scan.rs` picks vmlinux and System.map out of the
//! data archive, `xz_index.rs` reads the xz index and decodes one block on its own,
//! `xz_search.rs` finds vmlinux from the end of the stream, `source.rs` reads the file
//! at offsets.

mod ar;
mod boot;
mod control;
mod decode;
mod scan;
mod source;
mod tar;
#[cfg(test)]
mod testdata;
mod xz_index;
mod xz_search;

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use crate::error::{Error, Result};

pub use boot::{read_kernel_deb, DebBootImage, DebKernelFile, MAX_BOOT_IMAGE};

use ar::{ar_members, read_member};
use control::read_control;
use decode::Compression;
use scan::{not_dbg_message, scan_data, Hints, Scan};
use source::{At, Counting, FileSource, Progress, Source};
use tar::TarReader;
use xz_index::{finish_block, XzIndex};
use xz_search::find_vmlinux_backwards;

/// The largest vmlinux read into memory (Debian's are 0.4-0.7 GB).
pub const MAX_VMLINUX: u64 = 4 << 30;
/// The largest System.map read into memory (Debian's are 4-10 MB).
pub const MAX_SYSTEM_MAP: u64 = 256 << 20;

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

/// The `ar` members of a .deb, after checking that it is one (`debian-binary` first,
/// format 2.x); `path` names it in errors.
fn deb_members<S: Source + ?Sized>(src: &S, path: &Path) -> Result<Vec<ar::ArMember>> {
    let members = ar_members(src).map_err(|e| e.into_error(path))?;
    let first = &members[0];
    let debian_binary = read_member(src, first, 64).map_err(|e| e.into_error(path))?;
    if first.name != "debian-binary" || !debian_binary.starts_with(b"2.") {
        return Err(Error::Input {
            path: path.to_path_buf(),
            message: format!(
                "not a Debian package: its first ar member is `{}`, not `debian-binary` \
                 with format 2.x",
                first.name
            ),
        });
    }
    Ok(members)
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
    let members = deb_members(src, path)?;
    let control = members
        .iter()
        .find(|m| m.name.starts_with("control.tar"))
        .and_then(|m| read_control(src, m).ok())
        .unwrap_or_default();
    let package = control.package.clone();
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
        control.check(found).map_err(&in_data)?;
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

#[cfg(test)]
mod tests {
    use crate::deb::testdata::*;

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
}
