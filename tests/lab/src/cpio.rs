//! A writer for the `newc` cpio format the kernel unpacks as an initramfs.
//!
//! Written in-process so the lab needs neither the `cpio` program nor root (device nodes
//! such as `/dev/console` are just headers here). Our own rather than the cpio crate:
//! newc is one fixed header, and the writer is the lab's (the oracle shares no parser).

use std::io::{self, Write};

const TRAILER: &str = "TRAILER!!!";

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Builds a newc archive in memory-bounded, streaming fashion.
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    /// Start an archive on `out`.
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            ino: 1,
            written: 0,
        }
    }

    /// A directory.
    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        self.entry(path, S_IFDIR | (mode & 0o7777), 2, 0, b"")
    }

    /// A regular file with the given content.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, S_IFREG | (mode & 0o7777), 1, 0, data)
    }

    /// A symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, S_IFLNK | 0o777, 1, 0, target.as_bytes())
    }

    /// A character device node.
    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(
            path,
            S_IFCHR | (mode & 0o7777),
            1,
            (major << 8) | minor,
            b"",
        )
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        rdev: u32,
        data: &[u8],
    ) -> io::Result<()> {
        let name = path.trim_start_matches('/');
        if name.is_empty() || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad cpio path {path:?}"),
            ));
        }
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file over 4 GiB"))?;
        let ino = self.ino;
        self.ino += 1;
        self.header(ino, mode, nlink, size, rdev >> 8, rdev & 0xff, name)?;
        self.write_padded(data)
    }

    #[allow(clippy::too_many_arguments)]
    fn header(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        size: u32,
        rmajor: u32,
        rminor: u32,
        name: &str,
    ) -> io::Result<()> {
        let namesize = name.len() + 1;
        let header = format!(
            "070701{ino:08X}{mode:08X}{uid:08X}{gid:08X}{nlink:08X}{mtime:08X}{size:08X}{maj:08X}{min:08X}{rmajor:08X}{rminor:08X}{namesize:08X}{check:08X}",
            uid = 0,
            gid = 0,
            mtime = 0,
            maj = 0,
            min = 0,
            check = 0,
        );
        let mut buf = header.into_bytes();
        buf.extend_from_slice(name.as_bytes());
        buf.push(0);
        self.write_padded(&buf)
    }

    fn write_padded(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.out.write_all(&[0u8; 3][..pad])?;
        self.written += pad as u64;
        Ok(())
    }

    /// Write the trailer and return the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(0, 0, 1, 0, 0, 0, TRAILER)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse our own output back: (name, mode, size, rdev major, minor, data).
    fn parse(mut buf: &[u8]) -> Vec<(String, u32, Vec<u8>, u32, u32)> {
        let mut out = Vec::new();
        let total = buf.len();
        loop {
            let off = total - buf.len();
            assert_eq!(off % 4, 0);
            assert_eq!(&buf[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(
                    std::str::from_utf8(&buf[6 + i * 8..14 + i * 8]).unwrap(),
                    16,
                )
                .unwrap()
            };
            let (mode, size, rmaj, rmin, namesize) =
                (field(1), field(6), field(9), field(10), field(11));
            let name = std::str::from_utf8(&buf[110..110 + namesize as usize - 1])
                .unwrap()
                .to_string();
            let mut pos = 110 + namesize as usize;
            pos += (4 - (off + pos) % 4) % 4;
            let data = buf[pos..pos + size as usize].to_vec();
            pos += size as usize;
            pos += (4 - (off + pos) % 4) % 4;
            buf = &buf[pos..];
            if name == TRAILER {
                break;
            }
            out.push((name, mode, data, rmaj, rmin));
        }
        assert!(buf.is_empty());
        out
    }

    #[test]
    fn round_trip() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("/dev", 0o755).unwrap();
        w.char_device("/dev/console", 0o600, 5, 1).unwrap();
        w.file("/init", 0o755, b"#!/bin/sh\n").unwrap();
        w.symlink("/bin/sh", "busybox").unwrap();
        w.file("/odd", 0o644, b"12345").unwrap();
        let buf = w.finish().unwrap();
        let entries = parse(&buf);
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[0].0, "dev");
        assert_eq!(entries[0].1, 0o040755);
        assert_eq!(entries[1].0, "dev/console");
        assert_eq!(entries[1].1, 0o020600);
        assert_eq!((entries[1].3, entries[1].4), (5, 1));
        assert_eq!(entries[2].2, b"#!/bin/sh\n");
        assert_eq!(entries[3].1 & 0o170000, S_IFLNK);
        assert_eq!(entries[3].2, b"busybox");
        assert_eq!(entries[4].2, b"12345");
    }

    #[test]
    fn rejects_empty_path() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(w.file("/", 0o644, b"").is_err());
    }
}
