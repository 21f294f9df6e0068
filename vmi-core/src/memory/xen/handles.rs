//! The handles of libxenctrl and libxenforeignmemory a domain is read through (with
//! its cache of mapped windows), the list of domains and their names from xenstore.

use std::collections::HashMap;
use std::ffi::{c_uint, CString};
use std::io;

use crate::error::Error;

use super::ffi::{self, libs, DomainInfo, Libs};
use super::windows::Window;
use super::{XenDomainInfo, XenError, XenStats};

/// Domains listed at most.
const MAX_DOMAINS: usize = 32768;

pub(super) struct Inner {
    pub(super) libs: &'static Libs,
    pub(super) xch: ffi::XcInterface,
    pub(super) fmem: ffi::ForeignMemory,
    pub(super) windows: HashMap<u64, Window>,
    pub(super) clock: u64,
    pub(super) stats: XenStats,
}

// SAFETY: the handles and mappings are only used through the Mutex that holds Inner;
// libxenctrl and libxenforeignmemory handles may be used from any thread one at a time.
unsafe impl Send for Inner {}

impl Inner {
    pub(super) fn info(&self, domid: u32) -> Result<Option<DomainInfo>, XenError> {
        let mut d = DomainInfo::default();
        // SAFETY: one DomainInfo of room for one entry.
        let n = unsafe { (self.libs.xc_domain_getinfolist)(self.xch, domid, 1, &mut d) };
        if n < 0 {
            return Err(XenError::Call {
                call: "xc_domain_getinfolist",
                domid,
                source: io::Error::last_os_error(),
            });
        }
        // getinfolist starts at `domid`: another domain means this one is gone
        Ok((n == 1 && u32::from(d.domain) == domid).then_some(d))
    }

    pub(super) fn all_domains(&self) -> Result<Vec<DomainInfo>, XenError> {
        let mut out = Vec::new();
        let mut next = 0u32;
        loop {
            let mut buf = vec![DomainInfo::default(); 256];
            // SAFETY: room for 256 entries.
            let n =
                unsafe { (self.libs.xc_domain_getinfolist)(self.xch, next, 256, buf.as_mut_ptr()) };
            if n < 0 {
                return Err(XenError::Call {
                    call: "xc_domain_getinfolist",
                    domid: next,
                    source: io::Error::last_os_error(),
                });
            }
            let n = n as usize;
            buf.truncate(n.min(256));
            let last = buf.last().map(|d| u32::from(d.domain));
            out.extend(buf);
            match last {
                Some(l) if n == 256 && out.len() < MAX_DOMAINS => next = l + 1,
                _ => return Ok(out),
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.unmap_all();
        // SAFETY: handles from the matching open calls, closed once.
        unsafe {
            (self.libs.xenforeignmemory_close)(self.fmem);
            (self.libs.xc_interface_close)(self.xch);
        }
    }
}

pub(super) fn open_handles() -> Result<Inner, XenError> {
    let libs = libs()?;
    let privcmd = std::path::Path::new("/dev/xen/privcmd");
    if !privcmd.exists() && !std::path::Path::new("/proc/xen/privcmd").exists() {
        return Err(XenError::NoAccess {
            what: "no /dev/xen/privcmd (not a Xen dom0, or xen-privcmd is not loaded)".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        });
    }
    // SAFETY: a logger from the library (or NULL: its default), no flags.
    let xch = unsafe { (libs.xc_interface_open)(libs.quiet, libs.quiet, 0) };
    if xch.is_null() {
        return Err(XenError::NoAccess {
            what: "xc_interface_open".into(),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: as above.
    let fmem = unsafe { (libs.xenforeignmemory_open)(libs.quiet, 0) };
    if fmem.is_null() {
        let source = io::Error::last_os_error();
        // SAFETY: opened above, closed once.
        unsafe { (libs.xc_interface_close)(xch) };
        return Err(XenError::NoAccess {
            what: "xenforeignmemory_open".into(),
            source,
        });
    }
    Ok(Inner {
        libs,
        xch,
        fmem,
        windows: HashMap::new(),
        clock: 0,
        stats: XenStats::default(),
    })
}

/// Domain names from xenstore (`/local/domain/ID/name`); `None` when xenstore does not
/// answer.
pub(super) fn names(libs: &Libs, domids: &[u32]) -> Vec<Option<String>> {
    // SAFETY: no flags; the handle is closed below.
    let xs = unsafe { (libs.xs_open)(0) };
    if xs.is_null() {
        return vec![None; domids.len()];
    }
    let out = domids
        .iter()
        .map(|id| {
            let path = CString::new(format!("/local/domain/{id}/name")).ok()?;
            let mut len: c_uint = 0;
            // SAFETY: a valid handle and C string; the result is malloc'd (freed below).
            let p = unsafe { (libs.xs_read)(xs, 0, path.as_ptr(), &mut len) };
            if p.is_null() {
                return None;
            }
            let n = (len as usize).min(4096);
            // SAFETY: xs_read returns `len` bytes (and a NUL after them).
            let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), n) }.to_vec();
            // SAFETY: allocated by the library with malloc.
            unsafe { libc::free(p) };
            Some(String::from_utf8_lossy(&bytes).into_owned())
        })
        .collect();
    // SAFETY: opened above.
    unsafe { (libs.xs_close)(xs) };
    out
}

/// Every domain Xen runs (dom0 included), with names from xenstore.
pub fn list_domains() -> Result<Vec<XenDomainInfo>, Error> {
    let inner = open_handles()?;
    let all = inner.all_domains()?;
    let ids: Vec<u32> = all.iter().map(|d| u32::from(d.domain)).collect();
    let names = names(inner.libs, &ids);
    Ok(all
        .iter()
        .zip(names)
        .map(|(d, n)| XenDomainInfo::from_raw(d, n))
        .collect())
}
