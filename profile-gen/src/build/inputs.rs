//! Opening the input: files mapped (or read where they cannot be), a package read in
//! place, each hashed for the profile's provenance, and handed to the DWARF or BTF
//! reader.

use std::fs::File;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use vmi_core::profile::InputFile;

use crate::error::{Error, Result};

use super::btf_input::with_btf;
use super::{Context, Input, Progress};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// sha256 and size of a file, read with plain reads: hashing through a memory map would
/// make the whole file resident in this process.
pub fn describe_file(path: &Path) -> Result<InputFile> {
    use std::io::Read;
    let mut f = File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok(InputFile {
        name: file_name(path),
        size,
        sha256: hex::encode(h.finalize()),
    })
}

/// sha256 and size of bytes, named `name`.
pub fn describe_bytes(name: &str, data: &[u8]) -> InputFile {
    let mut h = Sha256::new();
    for chunk in data.chunks(1 << 20) {
        h.update(chunk);
    }
    InputFile {
        name: name.to_string(),
        size: data.len() as u64,
        sha256: hex::encode(h.finalize()),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A System.map's name and text.
pub(super) struct MapText {
    pub(super) path: PathBuf,
    pub(super) name: String,
    pub(super) bytes: Vec<u8>,
}

/// Run `f` on the context of `input`.
pub(super) fn with_input<T>(
    input: Input<'_>,
    progress: &mut dyn FnMut(Progress),
    f: impl FnOnce(&Context<'_>) -> Result<T>,
) -> Result<T> {
    match input {
        #[cfg(feature = "dwarf")]
        Input::Files {
            vmlinux,
            system_map,
        } => {
            let file = File::open(vmlinux).map_err(io(vmlinux))?;
            // SAFETY: the file is opened read-only and not modified while mapped (a
            // concurrent writer could change what we read, never the memory safety of
            // our own data).
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io(vmlinux))?;
            let map_text = match system_map {
                Some(p) => Some(MapText {
                    path: p.to_path_buf(),
                    name: file_name(p),
                    bytes: std::fs::read(p).map_err(io(p))?,
                }),
                None => None,
            };
            let hash = || describe_file(vmlinux);
            super::dwarf_input::with_dwarf(&file_name(vmlinux), &map, hash, map_text, progress, f)
        }
        #[cfg(feature = "deb")]
        Input::DebugPackage(path) => {
            let deb = crate::deb::read_dbg_deb(path, &mut |done, total| {
                progress(Progress::Unpacking(done, total))
            })?;
            let vmlinux_name = deb
                .vmlinux_member
                .rsplit('/')
                .next()
                .unwrap_or("vmlinux")
                .to_string();
            let map_text = match (deb.system_map, deb.system_map_member) {
                (Some(bytes), Some(member)) => Some(MapText {
                    path: path.join(&member),
                    name: member
                        .rsplit('/')
                        .next()
                        .unwrap_or("System.map")
                        .to_string(),
                    bytes,
                }),
                _ => None,
            };
            let data = &deb.vmlinux;
            let hash = || Ok(describe_bytes(&vmlinux_name, data));
            super::dwarf_input::with_dwarf(&vmlinux_name, data, hash, map_text, progress, f)
        }
        Input::Btf {
            types,
            symbols,
            version,
        } => {
            let map = map_or_read(types)?;
            let list = match symbols {
                Some(p) => Some(MapText {
                    path: p.to_path_buf(),
                    name: file_name(p),
                    bytes: std::fs::read(p).map_err(io(p))?,
                }),
                None => None,
            };
            let version = match version {
                Some(p) => Some((file_name(p), std::fs::read(p).map_err(io(p))?)),
                None => None,
            };
            let hash = || describe_file(types);
            with_btf(types, &map, hash, list, version, progress, f)
        }
    }
}

/// A file's bytes: mapped, or read where the kernel refuses the mapping or reports no
/// size (`/sys/kernel/btf/vmlinux` cannot be mapped before Linux 6.16; procfs files say
/// 0 bytes), so the BTF path also works on the live files inside a guest.
enum FileBytes {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Read(v) => v,
        }
    }
}

fn map_or_read(path: &Path) -> Result<FileBytes> {
    let file = File::open(path).map_err(io(path))?;
    let meta = file.metadata().map_err(io(path))?;
    if meta.is_file() && meta.len() > 0 {
        // SAFETY: as above: read-only, not modified while mapped.
        if let Ok(map) = unsafe { memmap2::Mmap::map(&file) } {
            return Ok(FileBytes::Mapped(map));
        }
    }
    std::fs::read(path).map(FileBytes::Read).map_err(io(path))
}
