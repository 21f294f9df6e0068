//! Guest frames mapped in windows of consecutive frames, kept mapped least recently
//! used first out: the domain's [`PhysicalMemory`].

use std::ffi::c_int;
use std::io;

use crate::addr::Pa;
use crate::error::PhysError;
use crate::memory::{PhysRange, PhysicalMemory};

use super::ffi::XenPfn;
use super::handles::Inner;
use super::{io_kind, XenDomain, INVALID_GFN, PAGE};

pub(super) struct Window {
    addr: *mut u8,
    frames: usize,
    /// Per-frame errno (negative) or 0.
    err: Box<[c_int]>,
    used: u64,
}

impl Inner {
    pub(super) fn unmap(&mut self, w: Window) {
        // SAFETY: addr and frames are what xenforeignmemory_map returned and was given.
        unsafe { (self.libs.xenforeignmemory_unmap)(self.fmem, w.addr.cast(), w.frames) };
        self.stats.unmaps += 1;
    }

    pub(super) fn unmap_all(&mut self) {
        let windows: Vec<Window> = self.windows.drain().map(|(_, w)| w).collect();
        for w in windows {
            self.unmap(w);
        }
    }
}

impl XenDomain {
    /// The window `idx`, mapped now if it is not.
    fn window<'a>(&self, inner: &'a mut Inner, idx: u64) -> Result<&'a Window, io::Error> {
        inner.clock += 1;
        let now = inner.clock;
        if inner.windows.contains_key(&idx) {
            inner.stats.hits += 1;
        } else {
            if inner.windows.len() >= self.max_windows {
                if let Some(&oldest) = inner
                    .windows
                    .iter()
                    .min_by_key(|(_, w)| w.used)
                    .map(|(k, _)| k)
                {
                    if let Some(w) = inner.windows.remove(&oldest) {
                        inner.unmap(w);
                    }
                }
            }
            let first = idx * self.window_frames;
            let frames = self.window_frames as usize;
            let gfns: Vec<XenPfn> = (first..first + self.window_frames)
                .map(|g| self.frame_of(g))
                .collect();
            let mut err = vec![0 as c_int; frames].into_boxed_slice();
            // SAFETY: gfns and err hold `frames` entries each; the mapping is read-only
            // and released by unmap.
            let addr = unsafe {
                (inner.libs.xenforeignmemory_map)(
                    inner.fmem,
                    self.domid,
                    libc::PROT_READ,
                    frames,
                    gfns.as_ptr(),
                    err.as_mut_ptr(),
                )
            };
            if addr.is_null() {
                return Err(io::Error::last_os_error());
            }
            inner.stats.maps += 1;
            inner.stats.frames_mapped += frames as u64;
            inner.stats.frames_failed += gfns
                .iter()
                .zip(err.iter())
                .filter(|(g, e)| **g != INVALID_GFN && **e != 0)
                .count() as u64;
            inner.windows.insert(
                idx,
                Window {
                    addr: addr.cast(),
                    frames,
                    err,
                    used: now,
                },
            );
        }
        let w = inner
            .windows
            .get_mut(&idx)
            .ok_or_else(|| io::Error::other("window vanished"))?;
        w.used = now;
        Ok(w)
    }
}

impl PhysicalMemory for XenDomain {
    fn read_phys(&self, pa: Pa, buf: &mut [u8]) -> Result<(), PhysError> {
        let len = buf.len() as u64;
        if len == 0 {
            return Ok(());
        }
        let end = pa.0.checked_add(len).ok_or(PhysError::Unmapped { pa })?;
        // all-or-nothing: every page must be the domain's before anything is copied
        let mut at = pa.0;
        while at < end {
            if !self.covered(at) {
                return Err(PhysError::Unmapped { pa: Pa(at) });
            }
            at = (at | (PAGE - 1)) + 1;
        }
        let mut inner = self.lock().map_err(|_| PhysError::Io {
            pa,
            kind: io::ErrorKind::Other,
        })?;
        let mut done = 0usize;
        while done < buf.len() {
            let at = pa.0 + done as u64;
            let gfn = at / PAGE;
            let off = (at % PAGE) as usize;
            let n = (PAGE as usize - off).min(buf.len() - done);
            let idx = gfn / self.window_frames;
            let slot = (gfn % self.window_frames) as usize;
            let w = self.window(&mut inner, idx).map_err(|e| PhysError::Io {
                pa: Pa(at),
                kind: e.kind(),
            })?;
            let e = w.err[slot];
            if e != 0 {
                return Err(PhysError::Io {
                    pa: Pa(at),
                    kind: io_kind(e),
                });
            }
            // SAFETY: the window maps `frames` pages; slot < frames and off + n <= 4096.
            // The guest may write the page meanwhile: the copy is a snapshot.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    w.addr.add(slot * PAGE as usize + off),
                    buf[done..].as_mut_ptr(),
                    n,
                );
            }
            done += n;
        }
        Ok(())
    }

    fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }

    /// A PV guest's page tables name machine frames: back to guest frames by the
    /// inverse of its p2m.
    fn table_frame(&self, frame: u64) -> Option<Pa> {
        match &self.pv {
            None => Some(Pa(frame)),
            Some(pv) => pv.m2p.get(&(frame / PAGE)).map(|g| Pa(g * PAGE)),
        }
    }
}
