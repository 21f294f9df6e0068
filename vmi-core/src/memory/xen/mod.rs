//! A live Xen domain read from dom0: guest frames mapped through libxenforeignmemory,
//! vCPU registers and pause/resume through libxenctrl, names from xenstore.
//!
//! The libraries are loaded at run time (see `ffi.rs`), so this source is always built
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
//! for PV guests from `xc_vcpu_getcontext` (see [`registers::registers_from_pv`]).
//!
//! One file a job: `handles.rs` the library handles, the domain list and names,
//! `windows.rs` guest frames mapped in cached windows (the `PhysicalMemory` of a
//! domain), `ranges.rs` which frames a domain has, `p2m.rs` a PV guest's p2m,
//! `machine.rs` a PV domain's memory by machine address (to read that p2m),
//! `registers.rs` vCPU registers, `ffi.rs` the libraries loaded at run time and the
//! structures they fill; this file the public types and the domain itself.
//!
//! [`PhysicalMemory::ranges`]: crate::memory::PhysicalMemory::ranges
//! [`PhysicalMemory::table_frame`]: crate::memory::PhysicalMemory::table_frame

mod ffi;
mod handles;
mod machine;
mod p2m;
mod ranges;
mod registers;
mod windows;

pub use handles::list_domains;

use std::ffi::c_int;
use std::io;
use std::sync::{Mutex, MutexGuard};

use crate::error::Error;
use crate::memory::{PauseResume, PhysRange};

use ffi::{DomainInfo, XenPfn};
use handles::{names, open_handles, Inner};
use p2m::PvFrames;
use ranges::frames;

const PAGE: u64 = 4096;
/// Frames asked about per `xc_get_pfn_type_batch` call (Xen's limit is 1024).
const TYPE_BATCH: u64 = 1024;
/// A frame number Xen refuses: mapped in place of frames outside the domain's ranges.
const INVALID_GFN: XenPfn = u64::MAX;
/// Machine frame numbers are at most 40 bits (52-bit machine addresses).
const MFN_LIMIT: u64 = 1 << 40;

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

impl From<ffi::LoadError> for XenError {
    fn from(e: ffi::LoadError) -> Self {
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
        let kind = if d.flags & ffi::DOMINF_HVM_GUEST == 0 {
            XenGuestKind::Pv
        } else if d.emulation_flags & ffi::EMU_HVM_DEVICES == 0 {
            XenGuestKind::Pvh
        } else {
            XenGuestKind::Hvm
        };
        XenDomainInfo {
            domid: u32::from(d.domain),
            name,
            kind,
            paused: d.flags & ffi::DOMINF_PAUSED != 0,
            shutdown: d.flags & ffi::DOMINF_SHUTDOWN != 0,
            dying: d.flags & ffi::DOMINF_DYING != 0,
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
}

fn io_kind(errno: c_int) -> io::ErrorKind {
    io::Error::from_raw_os_error(errno.saturating_abs()).kind()
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
    fn domain_kinds_from_flags() {
        let mut d = DomainInfo {
            domain: 3,
            max_vcpu_id: 1,
            ..DomainInfo::default()
        };
        assert_eq!(XenDomainInfo::from_raw(&d, None).kind, XenGuestKind::Pv);
        d.flags = ffi::DOMINF_HVM_GUEST;
        d.emulation_flags = 1; // the local APIC only
        let i = XenDomainInfo::from_raw(&d, Some("g".into()));
        assert_eq!((i.kind, i.vcpus, i.domid), (XenGuestKind::Pvh, 2, 3));
        d.emulation_flags = 0x1ff;
        d.flags |= ffi::DOMINF_PAUSED;
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
