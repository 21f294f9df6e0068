//! A live Xen domain read from dom0: guest frames mapped through libxenforeignmemory,
//! vCPU registers and pause/resume through libxenctrl, names from xenstore.
//!
//! The libraries are loaded at run time (see `xen_ffi`), so this source is always built
//! and only needs Xen 4.17's libraries, root and `/dev/xen/privcmd` when a domain is
//! opened.
//!
//! **Memory.** Guest frames are mapped in *windows* of [`XenOptions::window_frames`]
//! consecutive frames (one `xenforeignmemory_map` call each, per-frame errors kept), and
//! windows stay mapped, least recently used first out, up to
//! [`XenOptions::max_windows`]. A mapping shows the frame itself, so reads always see
//! the guest's current bytes; [`XenDomain::invalidate`] unmaps everything (after the
//! guest's memory layout changed: ballooning, a reboot). [`PhysicalMemory::ranges`] are
//! the frames Xen says the domain has, found at open by asking the type of every frame
//! from both ends of the guest-physical space until all of the domain's pages are
//! accounted for (a PVH guest with 256 MiB: ~80 hypercalls of 1024 frames).
//!
//! **Guests.** PVH and full HVM guests: their frame numbers are guest-physical and map
//! directly. PV guests are refused for now: their page tables hold machine frames.
//!
//! **Registers** come from Xen's HVM save record of each vCPU (`struct hvm_hw_cpu`).

use std::collections::HashMap;
use std::ffi::{c_int, c_uint, c_void, CString};
use std::io;
use std::sync::{Mutex, MutexGuard};

use crate::addr::Pa;
use crate::arch::x86_64::{DescriptorTable, Registers, Segment};
use crate::error::{Error, PhysError};
use crate::memory::xen_ffi::{self, libs, seg, DomainInfo, HvmHwCpu, Libs, XenPfn};
use crate::memory::{PauseResume, PhysRange, PhysicalMemory, VcpuRegisters};

const PAGE: u64 = 4096;
/// Frames asked about per `xc_get_pfn_type_batch` call (Xen's limit is 1024).
const TYPE_BATCH: u64 = 1024;
/// A frame number Xen refuses: mapped in place of frames outside the domain's ranges.
const INVALID_GFN: XenPfn = u64::MAX;
/// Domains listed at most.
const MAX_DOMAINS: usize = 32768;

/// How a domain is virtualised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XenGuestKind {
    /// Paravirtualised: page tables hold machine frames.
    Pv,
    /// PVH: hardware-virtualised, no emulated devices.
    Pvh,
    /// Full HVM: emulated platform devices.
    Hvm,
}

impl std::fmt::Display for XenGuestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            XenGuestKind::Pv => "PV",
            XenGuestKind::Pvh => "PVH",
            XenGuestKind::Hvm => "HVM",
        })
    }
}

/// Errors of the Xen source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XenError {
    /// The Xen libraries are not there.
    #[error("cannot load Xen 4.17's libraries ({what}: {why}); run in a Xen dom0 with them installed (Debian: libxenmisc4.17, libxenforeignmemory1, libxenstore4, libxentoollog1)")]
    Library {
        /// The library, or library and symbol.
        what: String,
        /// The loader's message.
        why: String,
    },
    /// No access to the hypervisor.
    #[error("{what}: {source}; reading a domain needs root in dom0 and /dev/xen/privcmd (load xen-privcmd, mount xenfs)")]
    NoAccess {
        /// What failed.
        what: String,
        /// Why.
        source: io::Error,
    },
    /// No such domain.
    #[error("no Xen domain {name:?}; running domains: {}", fmt_domains(.running))]
    UnknownDomain {
        /// The name or id asked for.
        name: String,
        /// The domains that exist (id, name).
        running: Vec<(u32, String)>,
    },
    /// The domain went away (destroyed, or rebooted under a new id).
    #[error("Xen domain {domid} no longer exists (destroyed or rebooted)")]
    Gone {
        /// Its id.
        domid: u32,
    },
    /// A library call failed.
    #[error("{call} on Xen domain {domid}: {source}")]
    Call {
        /// The function.
        call: &'static str,
        /// The domain.
        domid: u32,
        /// errno.
        source: io::Error,
    },
    /// The domain is of a kind this source does not read yet.
    #[error("Xen domain {domid} is a {kind} guest: {what}")]
    Unsupported {
        /// The domain.
        domid: u32,
        /// Its kind.
        kind: XenGuestKind,
        /// What is missing.
        what: &'static str,
    },
}

fn fmt_domains(d: &[(u32, String)]) -> String {
    if d.is_empty() {
        return "none".into();
    }
    d.iter()
        .map(|(id, name)| format!("{name} (id {id})"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<xen_ffi::LoadError> for XenError {
    fn from(e: xen_ffi::LoadError) -> Self {
        XenError::Library {
            what: e.what,
            why: e.why,
        }
    }
}

/// One domain as Xen lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenDomainInfo {
    /// Domain id.
    pub domid: u32,
    /// Its name in xenstore (`/local/domain/ID/name`), when xenstore answers.
    pub name: Option<String>,
    /// PV, PVH or HVM.
    pub kind: XenGuestKind,
    /// Paused by the toolstack.
    pub paused: bool,
    /// Shut down (or crashed) but not yet destroyed.
    pub shutdown: bool,
    /// Being destroyed.
    pub dying: bool,
    /// Pages it owns.
    pub pages: u64,
    /// vCPUs (highest vCPU id + 1).
    pub vcpus: u32,
}

impl XenDomainInfo {
    fn from_raw(d: &DomainInfo, name: Option<String>) -> XenDomainInfo {
        let kind = if d.flags & xen_ffi::DOMINF_HVM_GUEST == 0 {
            XenGuestKind::Pv
        } else if d.emulation_flags & xen_ffi::EMU_HVM_DEVICES == 0 {
            XenGuestKind::Pvh
        } else {
            XenGuestKind::Hvm
        };
        XenDomainInfo {
            domid: u32::from(d.domain),
            name,
            kind,
            paused: d.flags & xen_ffi::DOMINF_PAUSED != 0,
            shutdown: d.flags & xen_ffi::DOMINF_SHUTDOWN != 0,
            dying: d.flags & xen_ffi::DOMINF_DYING != 0,
            pages: d.tot_pages,
            vcpus: d.max_vcpu_id.wrapping_add(1),
        }
    }
}

/// How to read a domain.
#[derive(Debug, Clone)]
pub struct XenOptions {
    /// Frames mapped per call (a window; default 1024 = 4 MiB).
    pub window_frames: usize,
    /// Windows kept mapped (default 256: 1 GiB of guest memory with 1024-frame windows).
    pub max_windows: usize,
}

impl Default for XenOptions {
    fn default() -> Self {
        XenOptions {
            window_frames: 1024,
            max_windows: 256,
        }
    }
}

/// What the mapping cache did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XenStats {
    /// `xenforeignmemory_map` calls.
    pub maps: u64,
    /// Frames those calls asked for.
    pub frames_mapped: u64,
    /// Frames Xen refused to map (inside the domain's ranges).
    pub frames_failed: u64,
    /// Windows dropped (evicted or invalidated).
    pub unmaps: u64,
    /// Page reads served by a window already mapped.
    pub hits: u64,
}

struct Window {
    addr: *mut u8,
    frames: usize,
    /// Per-frame errno (negative) or 0.
    err: Box<[c_int]>,
    used: u64,
}

struct Inner {
    libs: &'static Libs,
    xch: xen_ffi::XcInterface,
    fmem: xen_ffi::ForeignMemory,
    windows: HashMap<u64, Window>,
    clock: u64,
    stats: XenStats,
}

// SAFETY: the handles and mappings are only used through the Mutex that holds Inner;
// libxenctrl and libxenforeignmemory handles may be used from any thread one at a time.
unsafe impl Send for Inner {}

impl Inner {
    fn unmap(&mut self, w: Window) {
        // SAFETY: addr and frames are what xenforeignmemory_map returned and was given.
        unsafe { (self.libs.xenforeignmemory_unmap)(self.fmem, w.addr.cast(), w.frames) };
        self.stats.unmaps += 1;
    }

    fn unmap_all(&mut self) {
        let windows: Vec<Window> = self.windows.drain().map(|(_, w)| w).collect();
        for w in windows {
            self.unmap(w);
        }
    }

    fn info(&self, domid: u32) -> Result<Option<DomainInfo>, XenError> {
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

    fn all_domains(&self) -> Result<Vec<DomainInfo>, XenError> {
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

fn open_handles() -> Result<Inner, XenError> {
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
fn names(libs: &Libs, domids: &[u32]) -> Vec<Option<String>> {
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

/// A live Xen domain (PVH or HVM).
pub struct XenDomain {
    domid: u32,
    name: Option<String>,
    kind: XenGuestKind,
    vcpus: usize,
    ranges: Vec<PhysRange>,
    window_frames: u64,
    max_windows: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for XenDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenDomain")
            .field("domid", &self.domid)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("ranges", &self.ranges.len())
            .finish_non_exhaustive()
    }
}

impl XenDomain {
    /// Open a domain by name (xenstore) or numeric id.
    pub fn open(domain: &str, opts: &XenOptions) -> Result<XenDomain, Error> {
        let inner = open_handles()?;
        let all = inner.all_domains()?;
        let ids: Vec<u32> = all.iter().map(|d| u32::from(d.domain)).collect();
        let names = names(inner.libs, &ids);
        let by_id = domain.parse::<u32>().ok();
        let found = ids
            .iter()
            .zip(&names)
            .position(|(id, n)| Some(*id) == by_id || n.as_deref() == Some(domain));
        let Some(i) = found else {
            return Err(XenError::UnknownDomain {
                name: domain.to_string(),
                running: ids
                    .iter()
                    .zip(names)
                    .map(|(id, n)| (*id, n.unwrap_or_else(|| "?".into())))
                    .collect(),
            }
            .into());
        };
        Self::with_handles(inner, ids[i], names[i].clone(), opts)
    }

    /// Open a domain by id.
    pub fn open_id(domid: u32, opts: &XenOptions) -> Result<XenDomain, Error> {
        let inner = open_handles()?;
        let name = names(inner.libs, &[domid]).pop().flatten();
        Self::with_handles(inner, domid, name, opts)
    }

    fn with_handles(
        inner: Inner,
        domid: u32,
        name: Option<String>,
        opts: &XenOptions,
    ) -> Result<XenDomain, Error> {
        let d = inner.info(domid)?.ok_or(XenError::Gone { domid })?;
        let info = XenDomainInfo::from_raw(&d, name.clone());
        if info.kind == XenGuestKind::Pv {
            return Err(XenError::Unsupported {
                domid,
                kind: info.kind,
                what: "PV guests' page tables hold machine frames, which this source does not translate yet",
            }
            .into());
        }
        let ranges = scan_ranges(&inner, domid, d.tot_pages)?;
        Ok(XenDomain {
            domid,
            name,
            kind: info.kind,
            vcpus: info.vcpus as usize,
            ranges,
            window_frames: opts.window_frames.clamp(1, 1 << 20) as u64,
            max_windows: opts.max_windows.max(1),
            inner: Mutex::new(inner),
        })
    }

    /// The domain id.
    pub fn domid(&self) -> u32 {
        self.domid
    }

    /// The domain's name, when xenstore gave one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// PVH or HVM.
    pub fn kind(&self) -> XenGuestKind {
        self.kind
    }

    /// The domain as Xen lists it now.
    pub fn info(&self) -> Result<XenDomainInfo, Error> {
        let inner = self.lock()?;
        let d = inner
            .info(self.domid)?
            .ok_or(XenError::Gone { domid: self.domid })?;
        Ok(XenDomainInfo::from_raw(&d, self.name.clone()))
    }

    /// Unmap every window: the next reads map the frames again (after the guest's
    /// memory changed owner: ballooning, a reboot in place).
    pub fn invalidate(&self) {
        if let Ok(mut inner) = self.lock() {
            inner.unmap_all();
        }
    }

    /// Find the domain's frames again (after it ballooned); unmaps every window.
    pub fn refresh_ranges(&mut self) -> Result<(), Error> {
        let inner = self.lock()?;
        let d = inner
            .info(self.domid)?
            .ok_or(XenError::Gone { domid: self.domid })?;
        let ranges = scan_ranges(&inner, self.domid, d.tot_pages)?;
        drop(inner);
        self.invalidate();
        self.ranges = ranges;
        Ok(())
    }

    /// What the mapping cache did so far.
    pub fn stats(&self) -> XenStats {
        self.lock().map(|i| i.stats).unwrap_or_default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, Error> {
        self.inner.lock().map_err(|_| {
            Error::Xen(XenError::NoAccess {
                what: "the Xen handles".into(),
                source: io::Error::other("poisoned by a panic in another thread"),
            })
        })
    }

    fn covered(&self, pa: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.end.0 <= pa);
        self.ranges.get(i).is_some_and(|r| r.start.0 <= pa)
    }

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
                .map(|g| {
                    if self.covered(g * PAGE) {
                        g
                    } else {
                        INVALID_GFN
                    }
                })
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

/// The domain's frames as ranges: the types of frames are asked from 0 upwards while
/// batches hold frames, then from the highest frame downwards, until `tot_pages` frames
/// are found or both ends meet.
fn scan_ranges(inner: &Inner, domid: u32, tot_pages: u64) -> Result<Vec<PhysRange>, Error> {
    let mut max_gpfn: XenPfn = 0;
    // SAFETY: one xen_pfn_t out.
    let rc = unsafe { (inner.libs.xc_domain_maximum_gpfn)(inner.xch, domid, &mut max_gpfn) };
    if rc < 0 {
        return Err(XenError::Call {
            call: "xc_domain_maximum_gpfn",
            domid,
            source: io::Error::last_os_error(),
        }
        .into());
    }
    let (mut lo, mut hi) = (0u64, max_gpfn.saturating_add(1));
    let mut found = 0u64;
    let mut present: Vec<u64> = Vec::new();
    let mut up = true;
    let mut arr = vec![0 as XenPfn; TYPE_BATCH as usize];
    while lo < hi && found < tot_pages {
        let (start, n) = if up {
            (lo, (hi - lo).min(TYPE_BATCH))
        } else {
            let n = (hi - lo).min(TYPE_BATCH);
            (hi - n, n)
        };
        for (i, a) in arr.iter_mut().take(n as usize).enumerate() {
            *a = start + i as u64;
        }
        // SAFETY: arr holds at least n entries.
        let rc = unsafe {
            (inner.libs.xc_get_pfn_type_batch)(inner.xch, domid, n as c_uint, arr.as_mut_ptr())
        };
        if rc != 0 {
            return Err(XenError::Call {
                call: "xc_get_pfn_type_batch",
                domid,
                source: io::Error::last_os_error(),
            }
            .into());
        }
        let before = found;
        for (i, t) in arr.iter().take(n as usize).enumerate() {
            let ty = t & xen_ffi::PFINFO_LTAB_MASK;
            if ty != xen_ffi::PFINFO_XTAB && ty != xen_ffi::PFINFO_BROKEN {
                present.push(start + i as u64);
                found += 1;
            }
        }
        if up {
            lo += n;
            up = found > before;
        } else {
            hi -= n;
        }
    }
    present.sort_unstable();
    Ok(frames_to_ranges(&present))
}

/// Sorted frame numbers as merged byte ranges.
fn frames_to_ranges(frames: &[u64]) -> Vec<PhysRange> {
    let mut out: Vec<PhysRange> = Vec::new();
    for &f in frames {
        let (s, e) = (f * PAGE, (f + 1) * PAGE);
        match out.last_mut() {
            Some(r) if r.end.0 == s => r.end = Pa(e),
            _ => out.push(PhysRange::new(s, e)),
        }
    }
    out
}

fn io_kind(errno: c_int) -> io::ErrorKind {
    io::Error::from_raw_os_error(errno.saturating_abs()).kind()
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
}

/// QEMU-style segment flags (descriptor bits 8..23) from Xen's attributes, in either
/// the packed 12-bit form (type, S, DPL, P, then AVL, L, D/B, G at bits 8..11) or the
/// VMX form (those four at bits 12..15).
fn segment_flags(ar: u32) -> u32 {
    let low = ar & 0xff;
    let high = if ar & 0xf000 != 0 {
        (ar >> 12) & 0xf
    } else {
        (ar >> 8) & 0xf
    };
    (low << 8) | (high << 20)
}

/// Registers from a vCPU's HVM save record.
pub(crate) fn registers_from_hvm(c: &HvmHwCpu) -> Registers {
    let segment = |i: usize| Segment {
        selector: c.sel[i] as u16,
        base: c.base[i],
        limit: c.limit[i],
        flags: segment_flags(c.arbytes[i]),
    };
    Registers {
        rax: c.rax,
        rbx: c.rbx,
        rcx: c.rcx,
        rdx: c.rdx,
        rsi: c.rsi,
        rdi: c.rdi,
        rsp: c.rsp,
        rbp: c.rbp,
        r: c.r8_15,
        rip: c.rip,
        rflags: c.rflags,
        cr0: c.cr0,
        cr2: c.cr2,
        cr3: c.cr3,
        cr4: c.cr4,
        efer: Some(c.msr_efer),
        cs: segment(seg::CS),
        ss: segment(seg::SS),
        ds: segment(seg::DS),
        es: segment(seg::ES),
        fs: segment(seg::FS),
        gs: segment(seg::GS),
        kernel_gs_base: Some(c.shadow_gs),
        gdt: DescriptorTable {
            base: c.base[seg::GDTR],
            limit: c.limit[seg::GDTR],
        },
        idt: DescriptorTable {
            base: c.base[seg::IDTR],
            limit: c.limit[seg::IDTR],
        },
    }
}

impl VcpuRegisters for XenDomain {
    fn vcpu_count(&self) -> usize {
        self.vcpus
    }

    fn registers(&self, vcpu: usize) -> Result<Registers, Error> {
        if vcpu >= self.vcpus {
            return Err(Error::NoSuchVcpu {
                vcpu,
                count: self.vcpus,
            });
        }
        let inner = self.lock()?;
        let mut ctx = HvmHwCpu::default();
        // SAFETY: ctx is a struct hvm_hw_cpu (layout checked against Xen's headers) and
        // its size is passed.
        let rc = unsafe {
            (inner.libs.xc_domain_hvm_getcontext_partial)(
                inner.xch,
                self.domid,
                xen_ffi::HVM_SAVE_CODE_CPU,
                vcpu as u16,
                (&mut ctx as *mut HvmHwCpu).cast::<c_void>(),
                std::mem::size_of::<HvmHwCpu>() as u32,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if inner.info(self.domid).ok().flatten().is_none() {
                return Err(XenError::Gone { domid: self.domid }.into());
            }
            return Err(Error::RegistersUnavailable {
                vcpu,
                why: format!("xc_domain_hvm_getcontext_partial: {e}"),
            });
        }
        Ok(registers_from_hvm(&ctx))
    }
}

impl PauseResume for XenDomain {
    fn pause(&self) -> Result<(), Error> {
        if !self.is_running()? {
            return Ok(());
        }
        let inner = self.lock()?;
        // SAFETY: a valid handle.
        if unsafe { (inner.libs.xc_domain_pause)(inner.xch, self.domid) } != 0 {
            return Err(XenError::Call {
                call: "xc_domain_pause",
                domid: self.domid,
                source: io::Error::last_os_error(),
            }
            .into());
        }
        Ok(())
    }

    fn resume(&self) -> Result<(), Error> {
        let inner = self.lock()?;
        // SAFETY: a valid handle.
        if unsafe { (inner.libs.xc_domain_unpause)(inner.xch, self.domid) } != 0 {
            return Err(XenError::Call {
                call: "xc_domain_unpause",
                domid: self.domid,
                source: io::Error::last_os_error(),
            }
            .into());
        }
        Ok(())
    }

    fn is_running(&self) -> Result<bool, Error> {
        let info = self.info()?;
        Ok(!(info.paused || info.shutdown || info.dying))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_merge_into_ranges() {
        let r = frames_to_ranges(&[0, 1, 2, 0x11, 0x12, 0xfeff8]);
        assert_eq!(
            r,
            vec![
                PhysRange::new(0, 0x3000),
                PhysRange::new(0x11000, 0x13000),
                PhysRange::new(0xfeff8000, 0xfeff9000),
            ]
        );
        assert!(frames_to_ranges(&[]).is_empty());
    }

    #[test]
    fn segment_attributes_in_both_forms() {
        // 64-bit kernel code: type 0xb, S, DPL 0, P; L and G set
        let packed = 0x9b | (1 << 9) | (1 << 11);
        let vmx = 0x9b | (1 << 13) | (1 << 15);
        for ar in [packed, vmx] {
            let f = segment_flags(ar);
            assert_eq!(f & 0xff00, 0x9b00, "{ar:#x}");
            assert_ne!(f & (1 << 21), 0, "L bit of {ar:#x}");
            assert_ne!(f & (1 << 23), 0, "G bit of {ar:#x}");
        }
        assert_eq!(segment_flags(0), 0);
    }

    #[test]
    fn registers_from_a_save_record() {
        let mut c = HvmHwCpu {
            rax: 1,
            r8_15: [8, 9, 10, 11, 12, 13, 14, 15],
            rip: 0xffff_ffff_8100_0000,
            cr0: 0x8005_0033,
            cr3: 0x5a5_6000,
            cr4: 0x10ef0,
            msr_efer: 0xd01,
            shadow_gs: 0x7f00_0000_0000,
            ..HvmHwCpu::default()
        };
        c.sel[seg::CS] = 0x10;
        c.arbytes[seg::CS] = 0xa9b;
        c.base[seg::GS] = 0xffff_8880_0f40_0000;
        c.base[seg::IDTR] = 0xffff_fe00_0000_0000;
        c.limit[seg::IDTR] = 0xfff;
        let r = registers_from_hvm(&c);
        assert_eq!((r.rax, r.r[7], r.rip), (1, 15, 0xffff_ffff_8100_0000));
        assert_eq!((r.cr3, r.efer, r.cpl()), (0x5a5_6000, Some(0xd01), 0));
        assert_eq!(r.gs.base, 0xffff_8880_0f40_0000);
        assert_eq!(r.kernel_gs_base, Some(0x7f00_0000_0000));
        assert_eq!((r.idt.base, r.idt.limit), (0xffff_fe00_0000_0000, 0xfff));
        assert!(r.page_table_root().is_ok());
    }

    #[test]
    fn domain_kinds_from_flags() {
        let mut d = DomainInfo {
            domain: 3,
            max_vcpu_id: 1,
            ..DomainInfo::default()
        };
        assert_eq!(XenDomainInfo::from_raw(&d, None).kind, XenGuestKind::Pv);
        d.flags = xen_ffi::DOMINF_HVM_GUEST;
        d.emulation_flags = 1; // the local APIC only
        let i = XenDomainInfo::from_raw(&d, Some("g".into()));
        assert_eq!((i.kind, i.vcpus, i.domid), (XenGuestKind::Pvh, 2, 3));
        d.emulation_flags = 0x1ff;
        d.flags |= xen_ffi::DOMINF_PAUSED;
        let i = XenDomainInfo::from_raw(&d, None);
        assert_eq!((i.kind, i.paused), (XenGuestKind::Hvm, true));
    }

    #[test]
    fn unknown_domain_error_lists_the_running_ones() {
        let e = XenError::UnknownDomain {
            name: "web".into(),
            running: vec![(0, "Domain-0".into()), (3, "db".into())],
        };
        let text = e.to_string();
        assert!(text.contains("\"web\"") && text.contains("Domain-0 (id 0), db (id 3)"));
    }

    #[test]
    fn opening_without_xen_is_a_clear_error() {
        // outside a dom0 the libraries or privcmd are missing (in one, the domain is):
        // the error says which and what to do
        let e = XenDomain::open("no-such-domain", &XenOptions::default()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("Xen 4.17's libraries")
                || text.contains("/dev/xen/privcmd")
                || text.contains("running domains"),
            "{text}"
        );
    }
}
