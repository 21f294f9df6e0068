//! Fill the cache with everything the lab tests use, concurrently, before they run.
//!
//! Each test fetches what it needs on first use (behind the cache's locks), so a test
//! run on an empty cache downloads, unpacks and builds inside the tests, one after
//! another, while they wait. [`prepare`] does the same work up front on a few threads:
//! the downloads of the kernel packages (network-bound) run side by side, each kernel's
//! parts in the order that reuses what was downloaded (the -dbg package kept, then its
//! vmlinux extracted from it), the Rust-enabled kernel (the longest) from the start on
//! a thread of its own, the Xen image on another. Nothing here is needed for
//! correctness: an item that fails is reported, and the test that needs it fetches it
//! again (and fails with the error if it fails again).
//!
//! [`ci_lanes`] is what the workspace's tests use; keep it in step when a test starts
//! using another kernel or part.

use std::fmt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::python::{Venv, JSONSCHEMA, VOLATILITY};
use crate::toolchain::{host_gcc_major, BuildRoot, KernelCompiler};
use crate::{Lab, RustKernel, XenImage, MATRIX};

/// One thing the tests use, made ready in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A kernel's boot image and config.
    Image(&'static str),
    /// A kernel's headers (for test modules).
    Headers(&'static str),
    /// A kernel's -dbg package file, kept.
    DebugPackage(&'static str),
    /// A kernel's vmlinux (DWARF) and System.map.
    Debug(&'static str),
    /// The Debian root with the kernel's gcc, when the host's is another major version.
    BuildRoot(&'static str),
    /// The compiled guest worker.
    Worker,
    /// Volatility 3 and jsonschema from PyPI.
    Volatility,
    /// The jsonschema venv alone.
    JsonSchema,
    /// The Rust-enabled 6.12 kernel for the guest module.
    RustKernel,
    /// Xen and the dom0 initramfs.
    Xen,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Image(k) => write!(f, "image {k}"),
            Item::Headers(k) => write!(f, "headers {k}"),
            Item::DebugPackage(k) => write!(f, "-dbg package {k}"),
            Item::Debug(k) => write!(f, "vmlinux and System.map {k}"),
            Item::BuildRoot(k) => write!(f, "build root for {k}"),
            Item::Worker => f.write_str("guest worker"),
            Item::Volatility => f.write_str("Volatility 3 venv"),
            Item::JsonSchema => f.write_str("jsonschema venv"),
            Item::RustKernel => f.write_str("Rust-enabled kernel"),
            Item::Xen => f.write_str("Xen image"),
        }
    }
}

/// Kernels whose modules the tests build (the attack guests and the hooked 7.x ones).
const MODULE_KERNELS: &[&str] = &[
    "6.1.0-56-amd64",
    "6.12.117+deb12-amd64",
    "newest:7.2",
    "newest:7",
];
/// Kernels whose -dbg package file the tests read as a package.
const DEB_KERNELS: &[&str] = &["6.1.0-56-amd64", "newest:7.2"];
/// Other flavours whose images the tests fetch (compression and resolution tests).
const FLAVOURS: &[&str] = &[
    "6.1.0-56-cloud-amd64",
    "6.1.0-56-rt-amd64",
    "newest:6.1-rt-amd64",
    "newest:6.1-cloud-amd64",
];

/// What the workspace's tests use, as lanes: the items of one lane are made in order
/// on one thread (a kernel's parts reuse each other), the lanes side by side.
pub fn ci_lanes() -> Vec<Vec<Item>> {
    let mut lanes = Vec::new();
    for &k in MATRIX {
        let mut lane = vec![Item::Image(k)];
        if DEB_KERNELS.contains(&k) {
            lane.push(Item::DebugPackage(k));
        }
        lane.push(Item::Debug(k));
        if MODULE_KERNELS.contains(&k) {
            lane.push(Item::Headers(k));
            lane.push(Item::BuildRoot(k));
        }
        lanes.push(lane);
    }
    lanes.push(FLAVOURS.iter().map(|&k| Item::Image(k)).collect());
    lanes.push(vec![Item::Volatility, Item::JsonSchema]);
    // the Rust-enabled kernel, the longest item (bindgen-cli's install and a kernel
    // build: about 10 minutes of CPU), from the start; the Xen image (mostly downloads)
    // beside it
    lanes.push(vec![Item::RustKernel]);
    lanes.push(vec![Item::Worker, Item::Xen]);
    lanes
}

/// Every item of [`ci_lanes`].
pub fn ci_items() -> Vec<Item> {
    ci_lanes().into_iter().flatten().collect()
}

/// How one item went.
#[derive(Debug)]
pub struct Outcome {
    /// The item.
    pub item: Item,
    /// How long it took (a cached item takes milliseconds).
    pub took: Duration,
    /// The error, when it failed.
    pub error: Option<String>,
}

/// Make one item ready.
pub fn ensure(lab: &Lab, item: &Item) -> Result<()> {
    let store = lab.store();
    match item {
        Item::Image(k) => store.image(k).map(drop),
        Item::Headers(k) => store.headers(k).map(drop),
        Item::DebugPackage(k) => store.dbg_package(k).map(drop),
        Item::Debug(k) => store.debug(k).map(drop),
        Item::BuildRoot(k) => {
            let headers = store.headers(k)?;
            match KernelCompiler::of_kdir(&headers.kdir)?.gcc_major {
                Some(major) if major != host_gcc_major()? => {
                    BuildRoot::for_kernel(lab.cache(), &headers.abi, major).map(drop)
                }
                _ => Ok(()),
            }
        }
        Item::Worker => lab.worker().map(drop),
        Item::Volatility => Venv::ensure(lab.cache(), &[VOLATILITY, JSONSCHEMA]).map(drop),
        Item::JsonSchema => Venv::ensure(lab.cache(), &[JSONSCHEMA]).map(drop),
        Item::RustKernel => RustKernel::ensure(lab.cache()).map(drop),
        Item::Xen => XenImage::ensure(lab).map(drop),
    }
}

/// Make every lane's items ready, the lanes concurrently; `report` is called as each
/// item ends (from this thread). Returns every outcome.
pub fn prepare(lab: &Lab, lanes: Vec<Vec<Item>>, mut report: impl FnMut(&Outcome)) -> Vec<Outcome> {
    let (tx, rx) = mpsc::channel();
    let mut outcomes = Vec::new();
    std::thread::scope(|s| {
        for lane in lanes {
            let tx = tx.clone();
            s.spawn(move || {
                for item in lane {
                    let start = Instant::now();
                    let error = ensure(lab, &item).err().map(|e| e.to_string());
                    let _ = tx.send(Outcome {
                        item,
                        took: start.elapsed(),
                        error,
                    });
                }
            });
        }
        drop(tx);
        for o in rx {
            report(&o);
            outcomes.push(o);
        }
    });
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_matrix_kernel_is_prepared_with_its_parts_in_order() {
        let lanes = ci_lanes();
        for &k in MATRIX {
            let lane = lanes
                .iter()
                .find(|l| l.first() == Some(&Item::Image(k)))
                .unwrap_or_else(|| panic!("no lane for {k}"));
            let at = |i: &Item| lane.iter().position(|x| x == i);
            assert!(at(&Item::Debug(k)).is_some(), "{k}");
            if let Some(p) = at(&Item::DebugPackage(k)) {
                // the kept package is what the vmlinux is extracted from
                assert!(p < at(&Item::Debug(k)).unwrap(), "{k}");
            }
            if let Some(b) = at(&Item::BuildRoot(k)) {
                assert!(at(&Item::Headers(k)).unwrap() < b, "{k}");
            }
        }
        let all = ci_items();
        for i in [Item::RustKernel, Item::Xen, Item::Volatility, Item::Worker] {
            assert!(all.contains(&i), "{i}");
        }
        // `lab prepare --items base` is every lane but the Rust-enabled kernel's, which
        // holds nothing else
        let rust: Vec<&Vec<Item>> = lanes
            .iter()
            .filter(|l| l.contains(&Item::RustKernel))
            .collect();
        assert_eq!(rust, vec![&vec![Item::RustKernel]]);
    }
}
