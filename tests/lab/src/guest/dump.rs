//! Dumps of a lab guest's memory: an ELF core through QMP, a raw image and a LiME image
//! from the RAM file, each written beside its destination and renamed into place.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use atomic_write_file::AtomicWriteFile;
use serde_json::json;

use crate::error::{Error, IoContext, Result};

use super::{Guest, RamRange};

impl Guest {
    /// Write an ELF core of guest memory (QMP `dump-guest-memory`, paging off; with the
    /// guest's VMCOREINFO note when its fw_cfg driver handed it over). Written atomically.
    pub fn dump_elf(&mut self, path: &Path) -> Result<()> {
        let tmp = temp_beside(path)?;
        let r = self.qmp_session()?.execute_timeout(
            "dump-guest-memory",
            Some(json!({ "paging": false, "protocol": format!("file:{}", tmp.display()) })),
            Duration::from_secs(900),
        );
        if let Err(e) = r {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, path).ctx("renaming dump to", path)
    }

    /// Write a raw physical image (file offset = guest-physical address, holes as
    /// zeros, sparse) while the guest is paused. Written atomically.
    pub fn dump_raw(&mut self, path: &Path) -> Result<()> {
        self.dump_with(path, |ram, out, map| {
            let end = map.iter().map(|r| r.end).max().unwrap_or(0);
            out.set_len(end)?;
            for r in map {
                out.seek(SeekFrom::Start(r.start))?;
                copy_range(ram, out, r.file_offset, r.end - r.start)?;
            }
            Ok(())
        })
    }

    /// Write a LiME image (one header per RAM range, then its bytes) while the guest is
    /// paused. Written atomically.
    pub fn dump_lime(&mut self, path: &Path) -> Result<()> {
        self.dump_with(path, |ram, out, map| {
            for r in map {
                out.write_all(&lime_header(r.start, r.end))?;
                copy_range(ram, out, r.file_offset, r.end - r.start)?;
            }
            Ok(())
        })
    }

    fn dump_with(
        &mut self,
        path: &Path,
        write: impl FnOnce(&mut File, &mut File, &[RamRange]) -> std::io::Result<()>,
    ) -> Result<()> {
        let was_running = self.is_running()?;
        if was_running {
            self.pause()?;
        }
        let result = (|| {
            let mut ram = File::open(&self.ram_path).ctx("opening", &self.ram_path)?;
            let mut out = AtomicWriteFile::open(path).ctx("creating", path)?;
            write(&mut ram, out.as_file_mut(), &self.memory_map).ctx("writing dump", path)?;
            out.commit().ctx("renaming dump to", path)
        })();
        if was_running {
            self.resume()?;
        }
        result
    }
}

fn temp_beside(path: &Path) -> Result<PathBuf> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dump".into());
    if !dir.is_dir() {
        return Err(Error::Io {
            what: "writing into",
            path: dir.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    Ok(dir.join(format!(".{name}.partial-{}", std::process::id())))
}

fn copy_range(ram: &mut File, out: &mut File, offset: u64, len: u64) -> std::io::Result<()> {
    ram.seek(SeekFrom::Start(offset))?;
    let copied = std::io::copy(&mut ram.take(len), out)?;
    if copied != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("RAM file ended after {copied} of {len} bytes at offset {offset:#x}"),
        ));
    }
    Ok(())
}

/// The LiME range header: magic "EMiL" (0x4C694D45 little-endian), version 1, first and
/// last (inclusive) physical address, 8 reserved bytes.
pub fn lime_header(start: u64, end: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[0..4].copy_from_slice(&0x4C69_4D45u32.to_le_bytes());
    h[4..8].copy_from_slice(&1u32.to_le_bytes());
    h[8..16].copy_from_slice(&start.to_le_bytes());
    h[16..24].copy_from_slice(&(end - 1).to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lime_header_layout() {
        let h = lime_header(0x1000, 0x2000);
        assert_eq!(&h[0..4], &[0x45, 0x4d, 0x69, 0x4c]);
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(h[8..16].try_into().unwrap()), 0x1000);
        assert_eq!(u64::from_le_bytes(h[16..24].try_into().unwrap()), 0x1fff);
    }
}
