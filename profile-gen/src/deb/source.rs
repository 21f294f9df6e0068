//! A package's bytes read at offsets (several readers and threads share one file), and
//! the count of compressed bytes consumed that the caller's progress is told.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read};

/// A package's bytes, read at offsets (so several readers and threads can share it).
pub(super) trait Source: Sync {
    fn size(&self) -> u64;
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

pub(super) struct FileSource {
    pub(super) file: File,
    pub(super) size: u64,
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
pub(super) fn read_exact_at<S: Source + ?Sized>(
    src: &S,
    buf: &mut [u8],
    offset: u64,
) -> io::Result<()> {
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
pub(super) struct At<'a, S: ?Sized> {
    src: &'a S,
    pos: u64,
    end: u64,
}

impl<'a, S: Source + ?Sized> At<'a, S> {
    pub(super) fn new(src: &'a S, offset: u64, len: u64) -> Self {
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
pub(super) struct Progress<'a> {
    pub(super) report: RefCell<&'a mut dyn FnMut(u64, u64)>,
    pub(super) done: Cell<u64>,
    pub(super) total: u64,
}

impl Progress<'_> {
    pub(super) fn add(&self, n: u64) {
        let done = (self.done.get() + n).min(self.total);
        self.done.set(done);
        (self.report.borrow_mut())(done, self.total);
    }
}

/// Counts the compressed bytes read.
pub(super) struct Counting<'a, 'b, R> {
    pub(super) inner: R,
    pub(super) progress: &'a Progress<'b>,
}

impl<R: Read> Read for Counting<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}
