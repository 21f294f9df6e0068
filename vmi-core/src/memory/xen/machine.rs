//! A PV domain's memory by machine address, for reading its p2m before there is one:
//! page-table frames kept (a few), batched whole-page reads mapped in one call.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_int;
use std::io;

use crate::addr::Pa;
use crate::error::PhysError;
use crate::memory::{PhysRange, PhysRead, PhysicalMemory};

use super::ffi::XenPfn;
use super::handles::Inner;
use super::{io_kind, MFN_LIMIT, PAGE, TYPE_BATCH};

/// Machine frames of page tables kept while the p2m list is walked.
const TABLE_CACHE: usize = 64;

/// Map `frames` (machine frames of a PV domain, or guest frames of another) in one
/// call and copy them out: page `i` into `out[i * 4096..]`, its errno (negative) or 0
/// into `err[i]`.
fn map_copy(
    inner: &Inner,
    domid: u32,
    frames: &[XenPfn],
    out: &mut [u8],
    err: &mut [c_int],
) -> io::Result<()> {
    let n = frames.len();
    if n == 0 {
        return Ok(());
    }
    if out.len() < n * PAGE as usize || err.len() < n {
        return Err(io::Error::other("map_copy: buffers too small"));
    }
    // SAFETY: frames and err hold n entries; the mapping is read-only and unmapped below.
    let addr = unsafe {
        (inner.libs.xenforeignmemory_map)(
            inner.fmem,
            domid,
            libc::PROT_READ,
            n,
            frames.as_ptr(),
            err.as_mut_ptr(),
        )
    };
    if addr.is_null() {
        return Err(io::Error::last_os_error());
    }
    for (i, e) in err.iter().take(n).enumerate() {
        if *e == 0 {
            let at = i * PAGE as usize;
            // SAFETY: the mapping holds n pages; page i was mapped (err 0).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    addr.cast::<u8>().add(at),
                    out[at..].as_mut_ptr(),
                    PAGE as usize,
                );
            }
        }
    }
    // SAFETY: what xenforeignmemory_map returned, with its page count.
    unsafe { (inner.libs.xenforeignmemory_unmap)(inner.fmem, addr, n) };
    Ok(())
}

/// A PV domain's memory by *machine* address, for reading its p2m before there is one:
/// page-table frames are kept (a few), batched reads map all their frames in one call.
pub(super) struct MachineFrames<'a> {
    inner: &'a Inner,
    domid: u32,
    tables: RefCell<HashMap<u64, Box<[u8]>>>,
    all: [PhysRange; 1],
}

impl<'a> MachineFrames<'a> {
    pub(super) fn new(inner: &'a Inner, domid: u32) -> Self {
        MachineFrames {
            inner,
            domid,
            tables: RefCell::new(HashMap::new()),
            all: [PhysRange::new(0, MFN_LIMIT * PAGE)],
        }
    }
}

impl PhysicalMemory for MachineFrames<'_> {
    fn read_phys(&self, pa: Pa, buf: &mut [u8]) -> Result<(), PhysError> {
        let off = (pa.0 % PAGE) as usize;
        let mfn = pa.0 / PAGE;
        if off + buf.len() > PAGE as usize || mfn >= MFN_LIMIT {
            return Err(PhysError::Unmapped { pa });
        }
        let mut tables = self.tables.borrow_mut();
        if !tables.contains_key(&mfn) {
            let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
            let mut err = [0 as c_int];
            map_copy(self.inner, self.domid, &[mfn], &mut page, &mut err)
                .map_err(|e| PhysError::Io { pa, kind: e.kind() })?;
            if err[0] != 0 {
                return Err(PhysError::Io {
                    pa,
                    kind: io_kind(err[0]),
                });
            }
            if tables.len() >= TABLE_CACHE {
                tables.clear();
            }
            tables.insert(mfn, page);
        }
        let page = tables.get(&mfn).ok_or(PhysError::Unmapped { pa })?;
        buf.copy_from_slice(&page[off..off + buf.len()]);
        Ok(())
    }

    fn ranges(&self) -> &[PhysRange] {
        &self.all
    }

    /// Whole-page reads are mapped together, `TYPE_BATCH` frames a call.
    fn read_phys_batch(&self, reads: &mut [PhysRead<'_>]) {
        let whole: Vec<usize> = (0..reads.len())
            .filter(|&i| {
                reads[i].pa.0.is_multiple_of(PAGE)
                    && reads[i].buf.len() == PAGE as usize
                    && reads[i].pa.0 / PAGE < MFN_LIMIT
            })
            .collect();
        for chunk in whole.chunks(TYPE_BATCH as usize) {
            let frames: Vec<XenPfn> = chunk.iter().map(|&i| reads[i].pa.0 / PAGE).collect();
            let mut out = vec![0u8; chunk.len() * PAGE as usize];
            let mut err = vec![0 as c_int; chunk.len()];
            let mapped = map_copy(self.inner, self.domid, &frames, &mut out, &mut err);
            for (k, &i) in chunk.iter().enumerate() {
                let pa = reads[i].pa;
                reads[i].result = match &mapped {
                    Err(e) => Err(PhysError::Io { pa, kind: e.kind() }),
                    Ok(()) if err[k] != 0 => Err(PhysError::Io {
                        pa,
                        kind: io_kind(err[k]),
                    }),
                    Ok(()) => {
                        let at = k * PAGE as usize;
                        reads[i].buf.copy_from_slice(&out[at..at + PAGE as usize]);
                        Ok(())
                    }
                };
            }
        }
        for (i, r) in reads.iter_mut().enumerate() {
            if whole.binary_search(&i).is_err() {
                r.result = self.read_phys(r.pa, r.buf);
            }
        }
    }
}
