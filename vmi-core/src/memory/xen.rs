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
//! directly. PV guests: Xen maps them by machine frame and their page tables hold
//! machine frames, so the source reads the guest's own p2m (guest frame → machine
//! frame, published in its `shared_info`: the virtually mapped list at `p2m_vaddr`
//! under `p2m_cr3`, else the three-level frame-list tree) when the domain is opened,
//! and keeps its inverse. Reads stay guest-physical (a frame is mapped by the machine
//! frame the p2m gives), and [`PhysicalMemory::table_frame`] turns the machine frames
//! page-table entries and CR3 name back into guest frames, so translation, discovery
//! and every kernel object above see only guest-physical addresses. The p2m is read
//! again by [`XenDomain::refresh_ranges`] (after ballooning); p2m pages that cannot be
//! read leave their frames out of the ranges and are listed in
//! [`XenDomain::warnings`].
//!
//! **Registers** come from Xen's HVM save record of each vCPU (`struct hvm_hw_cpu`),
//! for PV guests from `xc_vcpu_getcontext` (see [`registers_from_pv`]).

use std::collections::HashMap;
use std::ffi::{c_int, c_uint, c_void, CString};
use std::io;
use std::sync::{Mutex, MutexGuard};

use crate::addr::Pa;
use std::cell::RefCell;

use crate::addr::Va;
use crate::arch::x86_64::{
    translate, DescriptorTable, PageTableRoot, PagingMode, Registers, Segment, ADDR_MASK, CR0_PG,
    CR4_PAE, EFER_LMA,
};
use crate::error::{Error, PhysError};
use crate::memory::xen_ffi::{
    self, libs, seg, ArchSharedInfo, DomainInfo, HvmHwCpu, Libs, VcpuGuestContext, XenPfn,
};
use crate::memory::{PauseResume, PhysRange, PhysRead, PhysicalMemory, VcpuRegisters};

const PAGE: u64 = 4096;
/// Frames asked about per `xc_get_pfn_type_batch` call (Xen's limit is 1024).
const TYPE_BATCH: u64 = 1024;
/// A frame number Xen refuses: mapped in place of frames outside the domain's ranges.
const INVALID_GFN: XenPfn = u64::MAX;
/// Domains listed at most.
const MAX_DOMAINS: usize = 32768;
/// Frames a PV guest's p2m may cover (64 GiB): `max_pfn` is the guest's word.
const MAX_P2M_FRAMES: u64 = 1 << 24;
/// p2m entries with either of these bits set name no frame of the guest's own
/// (`FOREIGN_FRAME_BIT`, `IDENTITY_FRAME_BIT`; all ones is `INVALID_P2M_ENTRY`).
const P2M_NOT_OWN: u64 = 3 << 62;
/// Machine frame numbers are at most 40 bits (52-bit machine addresses).
const MFN_LIMIT: u64 = 1 << 40;
/// Machine frames of page tables kept while the p2m list is walked.
const TABLE_CACHE: usize = 64;
/// Tries when the guest changes its p2m while it is read.
const P2M_TRIES: usize = 3;
/// Warnings kept about p2m pages that could not be read.
const MAX_WARNINGS: usize = 16;

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
    /// A PV guest's p2m (its frame table) could not be read.
    #[error(
        "Xen PV domain {domid}: cannot read its p2m (guest frame to machine frame table): {what}"
    )]
    P2m {
        /// The domain.
        domid: u32,
        /// What failed.
        what: String,
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

/// A PV guest's frame tables.
#[derive(Debug, Default)]
struct PvFrames {
    /// Guest frame → machine frame ([`INVALID_GFN`] where the guest has none).
    p2m: Vec<u64>,
    /// Machine frame → guest frame, the inverse of `p2m`.
    m2p: HashMap<u64, u64>,
}

impl PvFrames {
    /// From the p2m as read: entries that name no machine frame of the guest's own
    /// become invalid; a machine frame named twice keeps its first guest frame.
    fn new(mut p2m: Vec<u64>) -> PvFrames {
        let mut m2p = HashMap::with_capacity(p2m.len());
        for (pfn, e) in p2m.iter_mut().enumerate() {
            if *e & P2M_NOT_OWN != 0 || *e >= MFN_LIMIT {
                *e = INVALID_GFN;
            } else {
                m2p.entry(*e).or_insert(pfn as u64);
            }
        }
        PvFrames { p2m, m2p }
    }

    /// The guest frames that have a machine frame.
    fn ranges(&self) -> Vec<PhysRange> {
        let frames: Vec<u64> = (0..self.p2m.len() as u64)
            .filter(|&g| self.p2m[g as usize] != INVALID_GFN)
            .collect();
        frames_to_ranges(&frames)
    }
}

/// A live Xen domain (PVH, HVM or PV).
pub struct XenDomain {
    domid: u32,
    name: Option<String>,
    kind: XenGuestKind,
    vcpus: usize,
    ranges: Vec<PhysRange>,
    pv: Option<PvFrames>,
    warnings: Vec<String>,
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
        let (ranges, pv, warnings) = frames(&inner, &d, info.kind)?;
        Ok(XenDomain {
            domid,
            name,
            kind: info.kind,
            vcpus: info.vcpus as usize,
            ranges,
            pv,
            warnings,
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

    /// PV, PVH or HVM.
    pub fn kind(&self) -> XenGuestKind {
        self.kind
    }

    /// What opening the domain had to skip (p2m pages of a PV guest that could not be
    /// read: their frames are left out of the ranges).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The machine frame of guest frame `gfn` (a PV guest's p2m; the frame itself for
    /// PVH and HVM guests), `None` outside the guest's frames.
    pub fn machine_frame(&self, gfn: u64) -> Option<u64> {
        let f = self.frame_of(gfn);
        (f != INVALID_GFN).then_some(f)
    }

    /// The frame to map for guest frame `gfn`, or [`INVALID_GFN`].
    fn frame_of(&self, gfn: u64) -> XenPfn {
        if !self.covered(gfn.saturating_mul(PAGE)) {
            return INVALID_GFN;
        }
        match &self.pv {
            None => gfn,
            Some(pv) => pv.p2m.get(gfn as usize).copied().unwrap_or(INVALID_GFN),
        }
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

    /// Find the domain's frames again (after it ballooned; a PV guest's p2m is read
    /// again); unmaps every window.
    pub fn refresh_ranges(&mut self) -> Result<(), Error> {
        let inner = self.lock()?;
        let d = inner
            .info(self.domid)?
            .ok_or(XenError::Gone { domid: self.domid })?;
        let (ranges, pv, warnings) = frames(&inner, &d, self.kind)?;
        drop(inner);
        self.invalidate();
        self.ranges = ranges;
        self.pv = pv;
        self.warnings = warnings;
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

/// The domain's frames: for PVH and HVM guests from the frame types Xen reports, for
/// PV guests from their p2m.
#[allow(clippy::type_complexity)]
fn frames(
    inner: &Inner,
    d: &DomainInfo,
    kind: XenGuestKind,
) -> Result<(Vec<PhysRange>, Option<PvFrames>, Vec<String>), Error> {
    let domid = u32::from(d.domain);
    if kind != XenGuestKind::Pv {
        return Ok((scan_ranges(inner, domid, d.tot_pages)?, None, Vec::new()));
    }
    let machine = MachineFrames::new(inner, domid);
    let (p2m, warnings) =
        read_p2m(&machine, d.shared_info_frame).map_err(|what| XenError::P2m { domid, what })?;
    let pv = PvFrames::new(p2m);
    if pv.m2p.is_empty() {
        return Err(XenError::P2m {
            domid,
            what: "it names no machine frame of the domain's".into(),
        }
        .into());
    }
    Ok((pv.ranges(), Some(pv), warnings))
}

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
struct MachineFrames<'a> {
    inner: &'a Inner,
    domid: u32,
    tables: RefCell<HashMap<u64, Box<[u8]>>>,
    all: [PhysRange; 1],
}

impl<'a> MachineFrames<'a> {
    fn new(inner: &'a Inner, domid: u32) -> Self {
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

/// `struct arch_shared_info` out of a `shared_info` page.
fn arch_shared_info(page: &[u8]) -> Option<ArchSharedInfo> {
    let at = xen_ffi::SHARED_INFO_ARCH;
    let word = |i: usize| -> Option<u64> {
        let b = page.get(at + 8 * i..at + 8 * i + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    };
    Some(ArchSharedInfo {
        max_pfn: word(0)?,
        pfn_to_mfn_frame_list_list: word(1)?,
        nmi_reason: word(2)?,
        p2m_cr3: word(3)?,
        p2m_vaddr: word(4)?,
        p2m_generation: word(5)?,
    })
}

/// A PV guest's p2m, read through `machine` (machine addresses) as its `shared_info`
/// (at machine frame `shared_info_frame`) publishes it: the linear list at `p2m_vaddr`
/// (mapped by the page tables at `p2m_cr3`) when there is one, else the frame-list
/// tree. Read again if the guest changed the list's mapping meanwhile
/// (`p2m_generation`). Entries of p2m pages that cannot be read are invalid, with a
/// warning each (at most [`MAX_WARNINGS`], then a count).
pub(crate) fn read_p2m<M: PhysicalMemory + ?Sized>(
    machine: &M,
    shared_info_frame: u64,
) -> Result<(Vec<u64>, Vec<String>), String> {
    // read afresh each time (a batched whole-page read is never cached)
    let shared_info = || -> Result<ArchSharedInfo, String> {
        let mut page = vec![0u8; PAGE as usize];
        let mut read = [PhysRead::new(
            Pa(shared_info_frame.saturating_mul(PAGE)),
            &mut page,
        )];
        machine.read_phys_batch(&mut read);
        read[0]
            .result
            .map_err(|e| format!("shared_info (machine frame {shared_info_frame:#x}): {e}"))?;
        arch_shared_info(&page).ok_or_else(|| "shared_info page too short".into())
    };
    let mut last = String::new();
    for _ in 0..P2M_TRIES {
        let a = shared_info()?;
        if a.max_pfn == 0 || a.max_pfn > MAX_P2M_FRAMES {
            return Err(format!(
                "shared_info says it covers {:#x} frames (at most {MAX_P2M_FRAMES:#x} are read)",
                a.max_pfn
            ));
        }
        if !a.p2m_generation.is_multiple_of(2) {
            last = "the guest kept changing it".into();
            std::thread::sleep(std::time::Duration::from_millis(1));
            continue;
        }
        let read = if a.p2m_cr3 != 0 && a.p2m_vaddr != 0 {
            read_p2m_list(machine, &a)
        } else if a.pfn_to_mfn_frame_list_list != 0 && a.pfn_to_mfn_frame_list_list != u64::MAX {
            read_p2m_tree(machine, &a)
        } else {
            return Err("shared_info publishes neither a p2m list nor a frame-list tree (the guest has not set it up yet)".into());
        };
        if shared_info()?.p2m_generation == a.p2m_generation {
            return read;
        }
        last = "the guest kept changing it".into();
    }
    Err(last)
}

/// Collects per-page failures as at most [`MAX_WARNINGS`] lines plus a count.
#[derive(Default)]
struct Failures {
    lines: Vec<String>,
    more: usize,
}

impl Failures {
    fn add(&mut self, what: String) {
        if self.lines.len() < MAX_WARNINGS {
            self.lines.push(what);
        } else {
            self.more += 1;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.more > 0 {
            self.lines
                .push(format!("and {} more p2m pages not read", self.more));
        }
        self.lines
    }
}

/// Read whole pages at `addrs` (machine addresses; `None` = a page already known to be
/// unreadable) into `out`, one page per address, in one batch; a page that fails stays
/// all ones (invalid entries) and is reported.
fn read_pages<M: PhysicalMemory + ?Sized>(
    machine: &M,
    addrs: &[Option<Pa>],
    out: &mut [u8],
    what: &str,
    failures: &mut Failures,
) {
    out.fill(0xff);
    let mut reads: Vec<PhysRead<'_>> = Vec::with_capacity(addrs.len());
    let mut index = Vec::with_capacity(addrs.len());
    for (i, (pa, buf)) in addrs.iter().zip(out.chunks_mut(PAGE as usize)).enumerate() {
        if let Some(pa) = pa {
            reads.push(PhysRead::new(*pa, buf));
            index.push(i);
        }
    }
    machine.read_phys_batch(&mut reads);
    for (r, i) in reads.iter_mut().zip(index) {
        if let Err(e) = r.result {
            r.buf.fill(0xff);
            failures.add(format!("{what} {i}: {e}"));
        }
    }
}

/// Entries as little-endian words.
fn words(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0xff; 8])))
}

/// The linear p2m list: page `i` of it at `p2m_vaddr + i * 4096`, found through the
/// page tables at `p2m_cr3` (machine frames, 4-level: PV guests do not run 5-level).
fn read_p2m_list<M: PhysicalMemory + ?Sized>(
    machine: &M,
    a: &ArchSharedInfo,
) -> Result<(Vec<u64>, Vec<String>), String> {
    let root = PageTableRoot::from_cr3(a.p2m_cr3, PagingMode::FourLevel);
    let pages = a.max_pfn.div_ceil(PAGE / 8);
    let mut failures = Failures::default();
    let mut addrs = Vec::with_capacity(pages as usize);
    for i in 0..pages {
        let va = a
            .p2m_vaddr
            .checked_add(i * PAGE)
            .ok_or("p2m_vaddr wraps around")?;
        match translate(machine, root, Va(va)) {
            Ok(t) => addrs.push(Some(t.pa)),
            Err(e) => {
                failures.add(format!("p2m page {i}: {e}"));
                addrs.push(None);
            }
        }
    }
    if addrs.iter().all(Option::is_none) {
        return Err(format!(
            "no page of the list at {:#x} is mapped by the tables at {:#x}: {}",
            a.p2m_vaddr,
            a.p2m_cr3,
            failures.lines.first().map_or("", String::as_str)
        ));
    }
    let mut bytes = vec![0u8; pages as usize * PAGE as usize];
    read_pages(machine, &addrs, &mut bytes, "p2m page", &mut failures);
    let mut p2m: Vec<u64> = words(&bytes).collect();
    p2m.truncate(a.max_pfn as usize);
    Ok((p2m, failures.finish()))
}

/// The frame-list tree: the frame-list list holds the machine frames of frame-list
/// pages, each of which holds the machine frames of 512 p2m pages.
fn read_p2m_tree<M: PhysicalMemory + ?Sized>(
    machine: &M,
    a: &ArchSharedInfo,
) -> Result<(Vec<u64>, Vec<String>), String> {
    let per_page = PAGE / 8;
    let pages = a.max_pfn.div_ceil(per_page);
    let lists = pages.div_ceil(per_page);
    let frame = |e: u64| (e < MFN_LIMIT).then(|| Pa(e * PAGE));
    let mut top = vec![0u8; PAGE as usize];
    let fll = frame(a.pfn_to_mfn_frame_list_list).ok_or("frame-list list out of range")?;
    machine
        .read_phys(fll, &mut top)
        .map_err(|e| format!("the frame-list list: {e}"))?;
    let mut failures = Failures::default();
    let list_addrs: Vec<Option<Pa>> = words(&top).take(lists as usize).map(frame).collect();
    let mut list_bytes = vec![0u8; list_addrs.len() * PAGE as usize];
    read_pages(
        machine,
        &list_addrs,
        &mut list_bytes,
        "frame-list page",
        &mut failures,
    );
    let page_addrs: Vec<Option<Pa>> = words(&list_bytes).take(pages as usize).map(frame).collect();
    let mut bytes = vec![0u8; page_addrs.len() * PAGE as usize];
    read_pages(machine, &page_addrs, &mut bytes, "p2m page", &mut failures);
    let mut p2m: Vec<u64> = words(&bytes).collect();
    p2m.truncate(a.max_pfn as usize);
    Ok((p2m, failures.finish()))
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

    /// A PV guest's page tables name machine frames: back to guest frames by the
    /// inverse of its p2m.
    fn table_frame(&self, frame: u64) -> Option<Pa> {
        match &self.pv {
            None => Some(Pa(frame)),
            Some(pv) => pv.m2p.get(&(frame / PAGE)).map(|g| Pa(g * PAGE)),
        }
    }
}

/// Registers from a PV vCPU's context, with CR3 as a guest-physical address (`cr3` is
/// the guest frame of the page table's machine frame).
///
/// Xen reports only the control-register bits a PV guest controls: a PV guest always
/// runs in long mode with 4-level paging, so CR0.PG, CR4.PAE and EFER.LMA/LME are set
/// here. The kernel runs in ring 3 (its CS has RPL 3); GS is the kernel's per-CPU base
/// while the vCPU is in guest kernel mode. PV guests have no GDTR or IDTR a tool can
/// read (their trap table is Xen's): both are reported as 0.
pub(crate) fn registers_from_pv(c: &VcpuGuestContext, cr3: u64) -> Registers {
    let u = &c.user_regs;
    let in_kernel = c.flags & xen_ffi::VGCF_IN_KERNEL != 0;
    let (gs, other) = if in_kernel {
        (c.gs_base_kernel, c.gs_base_user)
    } else {
        (c.gs_base_user, c.gs_base_kernel)
    };
    let selector = |s: u16| Segment {
        selector: s,
        ..Segment::default()
    };
    Registers {
        rax: u.rax,
        rbx: u.rbx,
        rcx: u.rcx,
        rdx: u.rdx,
        rsi: u.rsi,
        rdi: u.rdi,
        rsp: u.rsp,
        rbp: u.rbp,
        r: [u.r8, u.r9, u.r10, u.r11, u.r12, u.r13, u.r14, u.r15],
        rip: u.rip,
        rflags: u.rflags,
        cr0: c.ctrlreg[0] | CR0_PG | 1,
        cr2: c.ctrlreg[2],
        cr3,
        cr4: c.ctrlreg[4] | CR4_PAE,
        efer: Some(EFER_LMA | (1 << 8)),
        cs: selector(u.cs),
        ss: selector(u.ss),
        ds: selector(u.ds),
        es: selector(u.es),
        fs: Segment {
            base: c.fs_base,
            ..selector(u.fs)
        },
        gs: Segment {
            base: gs,
            ..selector(u.gs)
        },
        kernel_gs_base: Some(other),
        gdt: DescriptorTable::default(),
        idt: DescriptorTable::default(),
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
        if self.kind == XenGuestKind::Pv {
            return self.pv_registers(vcpu);
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
            return Err(self.context_error(&inner, vcpu, "xc_domain_hvm_getcontext_partial"));
        }
        Ok(registers_from_hvm(&ctx))
    }
}

impl XenDomain {
    /// Why `call` failed for `vcpu` (errno still set): the domain is gone, or the
    /// registers are unavailable.
    fn context_error(&self, inner: &Inner, vcpu: usize, call: &str) -> Error {
        let e = io::Error::last_os_error();
        if inner.info(self.domid).ok().flatten().is_none() {
            return XenError::Gone { domid: self.domid }.into();
        }
        Error::RegistersUnavailable {
            vcpu,
            why: format!("{call}: {e}"),
        }
    }

    fn pv_registers(&self, vcpu: usize) -> Result<Registers, Error> {
        let inner = self.lock()?;
        let mut ctx = VcpuGuestContext::default();
        // SAFETY: ctx is a vcpu_guest_context_any_t (size checked against Xen's headers).
        let rc = unsafe {
            (inner.libs.xc_vcpu_getcontext)(inner.xch, self.domid, vcpu as u32, &mut ctx)
        };
        if rc != 0 {
            return Err(self.context_error(&inner, vcpu, "xc_vcpu_getcontext"));
        }
        drop(inner);
        // xen_cr3_to_pfn on x86-64: the machine frame in bits 51:12
        let machine = ctx.ctrlreg[3] & ADDR_MASK;
        let cr3 = self
            .table_frame(machine)
            .ok_or_else(|| Error::RegistersUnavailable {
                vcpu,
                why: format!(
                    "its page table (machine frame {:#x}) is not in the domain's p2m",
                    machine / PAGE
                ),
            })?;
        Ok(registers_from_pv(&ctx, cr3.0))
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
    use crate::memory::MockMemory;

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
    fn pv_frames_keep_only_own_machine_frames() {
        let pv = PvFrames::new(vec![
            0x500,
            0x501,
            u64::MAX,          // INVALID_P2M_ENTRY
            (1 << 62) | 3,     // identity (I/O)
            (1 << 63) | 0x900, // foreign
            MFN_LIMIT,         // out of range
            0x501,             // named twice: the first guest frame keeps it
            0x7,
        ]);
        assert_eq!(pv.p2m[2..6], [INVALID_GFN; 4]);
        assert_eq!(pv.m2p.len(), 3);
        assert_eq!(pv.m2p[&0x501], 1);
        assert_eq!(pv.m2p[&0x7], 7);
        assert_eq!(
            pv.ranges(),
            vec![PhysRange::new(0, 0x2000), PhysRange::new(0x6000, 0x8000)]
        );
    }

    /// Machine memory with a shared_info page at frame 0x10; returns it with the
    /// arch_shared_info written.
    fn machine_with(a: &ArchSharedInfo) -> MockMemory {
        let mut m = MockMemory::new(&[PhysRange::new(0, 0x100_0000)]);
        let words = [
            a.max_pfn,
            a.pfn_to_mfn_frame_list_list,
            a.nmi_reason,
            a.p2m_cr3,
            a.p2m_vaddr,
            a.p2m_generation,
        ];
        for (i, w) in words.iter().enumerate() {
            m.write_u64(
                Pa(0x10_000 + xen_ffi::SHARED_INFO_ARCH as u64 + 8 * i as u64),
                *w,
            )
            .unwrap();
        }
        m
    }

    /// p2m page `i` (at machine frame `frames[i]`) holds 0x10000 + pfn for each pfn.
    fn write_p2m_pages(m: &mut MockMemory, frames: &[u64]) {
        for (i, f) in frames.iter().enumerate() {
            for j in 0..512u64 {
                m.write_u64(Pa(f * PAGE + 8 * j), 0x10000 + i as u64 * 512 + j)
                    .unwrap();
            }
        }
    }

    #[test]
    fn p2m_list_read_through_machine_page_tables() {
        use crate::arch::x86_64::{PageSize, PageTableBuilder};
        let vaddr = 0xffff_c900_0000_0000u64;
        let frames = [0x500u64, 0x380, 0x777];
        let a = ArchSharedInfo {
            max_pfn: 1100, // three pages, the last one partly
            p2m_vaddr: vaddr,
            ..ArchSharedInfo::default()
        };
        let mut m = machine_with(&a);
        let mut b = PageTableBuilder::new(
            &mut m,
            PagingMode::FourLevel,
            PhysRange::new(0x80_0000, 0x90_0000),
        )
        .unwrap();
        // pages 0 and 2 mapped, page 1 not: its entries are invalid, with a warning
        for i in [0usize, 2] {
            b.map(
                &mut m,
                Va(vaddr + i as u64 * PAGE),
                Pa(frames[i] * PAGE),
                PageSize::Size4K,
                0,
            )
            .unwrap();
        }
        write_p2m_pages(&mut m, &frames);
        let cr3_at = 0x10_000 + xen_ffi::SHARED_INFO_ARCH as u64 + 3 * 8;
        m.write_u64(Pa(cr3_at), b.cr3()).unwrap();
        let (p2m, warnings) = read_p2m(&m, 0x10).unwrap();
        assert_eq!(p2m.len(), 1100);
        assert_eq!((p2m[0], p2m[511]), (0x10000, 0x10000 + 511));
        assert!(p2m[512..1024].iter().all(|&e| e == u64::MAX));
        assert_eq!(p2m[1099], 0x10000 + 1099);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("p2m page 1:"), "{warnings:?}");
    }

    #[test]
    fn p2m_tree_and_bad_shared_info() {
        let frames = [0x600u64, 0x601];
        let a = ArchSharedInfo {
            max_pfn: 1024,
            pfn_to_mfn_frame_list_list: 0x20,
            ..ArchSharedInfo::default()
        };
        let mut m = machine_with(&a);
        m.write_u64(Pa(0x20 * PAGE), 0x21).unwrap(); // one frame-list page
        m.write_u64(Pa(0x21 * PAGE), frames[0]).unwrap();
        m.write_u64(Pa(0x21 * PAGE + 8), frames[1]).unwrap();
        write_p2m_pages(&mut m, &frames);
        let (p2m, warnings) = read_p2m(&m, 0x10).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(p2m, (0..1024).map(|i| 0x10000 + i).collect::<Vec<_>>());

        // a guest that claims too much, one that publishes nothing, and no shared_info
        let huge = machine_with(&ArchSharedInfo {
            max_pfn: MAX_P2M_FRAMES + 1,
            ..a
        });
        assert!(read_p2m(&huge, 0x10).unwrap_err().contains("frames"));
        let none = machine_with(&ArchSharedInfo {
            pfn_to_mfn_frame_list_list: u64::MAX,
            ..a
        });
        assert!(read_p2m(&none, 0x10).unwrap_err().contains("neither"));
        assert!(read_p2m(&m, 0x2000).unwrap_err().contains("shared_info"));
    }

    #[test]
    fn registers_from_a_pv_context() {
        let mut c = VcpuGuestContext {
            flags: xen_ffi::VGCF_IN_KERNEL,
            ..VcpuGuestContext::default()
        };
        c.user_regs.rip = 0xffff_ffff_8100_0000;
        c.user_regs.cs = 0xe033; // FLAT_KERNEL_CS64: ring 3
        c.user_regs.r8 = 8;
        c.user_regs.r15 = 15;
        c.ctrlreg = [
            0x8000_003b & !(1 << 31),
            0,
            0x1234,
            0x42_5000,
            0x0620,
            0,
            0,
            0,
        ];
        c.gs_base_kernel = 0xffff_8880_0f40_0000;
        c.gs_base_user = 0x7f00_0000_0000;
        let r = registers_from_pv(&c, 0x1_d000);
        assert_eq!(
            (r.rip, r.r[0], r.r[7], r.cr2),
            (c.user_regs.rip, 8, 15, 0x1234)
        );
        let root = r.page_table_root().unwrap();
        assert_eq!(
            (root.table, root.mode),
            (Pa(0x1_d000), PagingMode::FourLevel)
        );
        assert_eq!(r.cpl(), 3);
        assert_eq!(r.gs.base, 0xffff_8880_0f40_0000);
        assert_eq!(r.kernel_gs_base, Some(0x7f00_0000_0000));
        assert_eq!((r.idt.base, r.gdt.base), (0, 0));
        c.flags = 0; // user mode: the bases are the other way round
        let r = registers_from_pv(&c, 0x1_d000);
        assert_eq!(r.gs.base, 0x7f00_0000_0000);
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
