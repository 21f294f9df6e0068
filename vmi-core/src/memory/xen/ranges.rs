//! Which frames a domain has: for PVH and HVM guests the frame types Xen reports,
//! for PV guests their p2m.

use std::ffi::c_uint;
use std::io;

use crate::addr::Pa;
use crate::error::Error;
use crate::memory::PhysRange;

use super::ffi::{self, DomainInfo, XenPfn};
use super::handles::Inner;
use super::machine::MachineFrames;
use super::p2m::{read_p2m, PvFrames};
use super::{XenError, XenGuestKind, PAGE, TYPE_BATCH};

/// The domain's frames: for PVH and HVM guests from the frame types Xen reports, for
/// PV guests from their p2m.
#[allow(clippy::type_complexity)]
pub(super) fn frames(
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
            let ty = t & ffi::PFINFO_LTAB_MASK;
            if ty != ffi::PFINFO_XTAB && ty != ffi::PFINFO_BROKEN {
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
pub(super) fn frames_to_ranges(frames: &[u64]) -> Vec<PhysRange> {
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
}
