//! Real Xen inside QEMU: Debian's Xen 4.17 hypervisor booted under TCG with a dom0 that
//! runs the toolstack, and domUs that run lab scenarios.
//!
//! - [`XenImage`]: the hypervisor (`xen.elf`, unpacked from `xen-hypervisor-4.17-amd64`)
//!   and the dom0 initramfs: the lab's worker and busybox (`/init`, whose scenario loads
//!   the Xen drivers and starts `xenstored`, `xen-init-dom0` and `xenconsoled`), then the
//!   toolstack and every library it links against, unpacked from Debian packages (no
//!   chroot, no debootstrap). Built once into the cache, keyed by its inputs; the dom0
//!   kernel is the store's [`DOM0_KERNEL`].
//! - [`XenRig`]: one QEMU (`-cpu max,-smap,-smep,-xsave,-avx,-avx2`, two CPUs: dom0 pinned
//!   to one, domUs to the other) running Xen and dom0. dom0's lab channel is COM2 (its
//!   worker, as in every lab guest); [`DOMU_SLOTS`] PCI serial ports carry the domUs' lab
//!   channels: dom0 attaches `xl create -c` to one of them, and the domU's worker serves
//!   its console (`labchannel=/dev/hvc0`). Per boot, a second cpio with the domUs'
//!   kernels, initramfs and xl configs and any host files (e.g. a test binary) is appended
//!   to the cached dom0 initramfs, so binaries built on this (bookworm) host run in dom0.
//! - [`XenDomu`]: a running domU: its ground truth, a shell, files copied out.
//!
//! Xen's own console and dom0's kernel console go to `console.log` in the run directory;
//! xenconsoled logs each domU's console in dom0 (`/var/log/xen/console/guest-NAME.log`).
//! QEMU dies with its [`XenRig`] (and with the test process), as every lab guest.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::apt::Archive;
use crate::build;
use crate::cache::{self, Cache};
use crate::cpio::CpioWriter;
use crate::error::{Error, IoContext, Result};
use crate::guest::{
    accept_until, boot_truth, console_tail, exited, kill, quote, spawn_tied, with_exit, Channel,
    ShellOutput, CONSOLE_TAIL,
};
use crate::scenario::Scenario;
use crate::store::{decompress_module, extract, find_file, KernelImage};
use crate::tools::{self, DPKG_DEB, QEMU};
use crate::truth::GroundTruth;
use crate::Lab;

/// The hypervisor package (`/boot/xen-4.17-amd64.gz`, a multiboot ELF).
pub const HYPERVISOR_PACKAGE: &str = "xen-hypervisor-4.17-amd64";

/// The suites the image's packages come from (newest version among them): bookworm, so
/// the toolstack matches the hypervisor and host-built programs find their libc.
pub const SUITES: &[&str] = &["bookworm", "bookworm-updates", "bookworm-security"];

/// The toolstack and everything it links against, unpacked into dom0's initramfs.
pub const DOM0_PACKAGES: &[&str] = &[
    "xen-utils-4.17",
    "xenstore-utils",
    "libxenmisc4.17",
    "libxencall1",
    "libxendevicemodel1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxengnttab1",
    "libxenhypfs1",
    "libxenstore4",
    "libxentoolcore1",
    "libxentoollog1",
    "libyajl2",
    "libc6",
    "libgcc-s1",
    "libncursesw6",
    "libtinfo6",
    "libext2fs2",
    "liblzma5",
    "libuuid1",
    "libzstd1",
    "zlib1g",
];

/// What a full HVM domU needs in dom0 besides the toolstack: the device model
/// (`/usr/libexec/xen-qemu-system-i386`), the libraries it links against, its option
/// ROMs (`linuxboot_dma.bin` for direct kernel boot) and SeaBIOS. Only in the image of a
/// rig that runs an HVM domU.
pub const HVM_PACKAGES: &[&str] = &[
    "qemu-system-xen",
    "qemu-system-data",
    "seabios",
    "libpixman-1-0",
    "libspice-server1",
    "libjpeg62-turbo",
    "libusb-1.0-0",
    "libudev1",
    "libfdt1",
    "libglib2.0-0",
    "libffi8",
    "libpcre2-8-0",
    "libmount1",
    "libblkid1",
    "libselinux1",
    "libgstreamer1.0-0",
    "libgstreamer-plugins-base1.0-0",
    "libunwind8",
    "libdw1",
    "libelf1",
    "libbz2-1.0",
    "libcap2",
    "liborc-0.4-0",
    "libopus0",
    "liblz4-1",
    "libsasl2-2",
    "libsasl2-modules-db",
    "libdb5.3",
    "libssl3",
    "libstdc++6",
];

/// What stays of `usr/share` (pruned otherwise): the device model's data and SeaBIOS.
const KEPT_SHARE: &[&str] = &["usr/share/qemu", "usr/share/seabios"];

/// The toolstack's programs in dom0.
pub const XEN_BIN: &str = "/usr/lib/xen-4.17/bin";

/// dom0's kernel (Debian's 6.1 has the Xen drivers dom0 needs as modules).
pub const DOM0_KERNEL: &str = crate::DEFAULT_KERNEL;

/// How many domUs can run at once (one PCI serial port each for their lab channel).
pub const DOMU_SLOTS: usize = 4;

/// The Xen drivers dom0 loads, in order (xenfs needs xen-privcmd).
const XEN_MODULES: &[&str] = &[
    "xen-privcmd",
    "xenfs",
    "xen-evtchn",
    "xen-gntdev",
    "xen-gntalloc",
];

/// Paths of the unpacked packages left out of dom0 (Python, charset converters, the
/// hypervisor itself; of `usr/share` all but [`KEPT_SHARE`]).
const PRUNED: &[&str] = &[
    "usr/lib/x86_64-linux-gnu/gconv",
    "usr/lib/xen-4.17/lib/python",
    "boot",
    "etc/init.d",
];

/// dom0's scenario after the drivers are loaded: the toolstack as Debian's init script
/// starts it, without systemd or udev.
const DOM0_SETUP: &[&str] = &[
    "mkdir -p /dev/pts /var /run/xen /run/xenstored /run/lock /var/log/xen/console /var/lib/xen /var/lib/xenstored /lab/files && ln -sfn /run /var/run && ln -sfn /run/lock /var/lock",
    "mount -t devpts devpts /dev/pts",
    "mount -t xenfs xenfs /proc/xen || echo 'lab-xen: xenfs did not mount'",
    "XENSTORED_ROOTDIR=/run/xenstored /usr/lib/xen-4.17/bin/xenstored --pid-file /run/xenstored.pid",
    "i=0; while ! /usr/bin/xenstore-read -s / >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 600 ] && { echo 'lab-xen: xenstored did not come up'; break; }; usleep 100000; done",
    "/usr/lib/xen-4.17/bin/xen-init-dom0 >/dev/null",
    "/usr/lib/xen-4.17/bin/xenconsoled --log=guest --log-dir=/var/log/xen/console --pid-file /run/xenconsoled.pid",
    "echo 'lab-xen: toolstack ready'",
];

/// Bump when the image is built differently with the same inputs.
const IMAGE_FORMAT: &str = "xen-image-1";

/// PCI slot of the first domU channel port (`-device pci-serial,addr=...`).
const SLOT_PCI_BASE: usize = 0x10;

/// The hypervisor and dom0 initramfs in the cache.
#[derive(Debug, Clone)]
pub struct XenImage {
    /// The cache entry.
    pub dir: PathBuf,
    /// The hypervisor, a multiboot ELF.
    pub xen: PathBuf,
    /// dom0's initramfs (uncompressed newc cpio).
    pub dom0_initramfs: PathBuf,
    /// dom0's kernel.
    pub dom0_kernel: KernelImage,
    /// The package files the image was built from (`name_version_arch.deb`).
    pub packages: Vec<String>,
}

impl XenImage {
    /// The image in `lab`'s cache, built when missing (downloads about 80 MB and takes
    /// a few seconds; later calls only check the entry).
    pub fn ensure(lab: &Lab) -> Result<XenImage> {
        Self::ensure_with(lab, false)
    }

    /// The image, with the HVM device model ([`HVM_PACKAGES`]) when `hvm`.
    pub fn ensure_with(lab: &Lab, hvm: bool) -> Result<XenImage> {
        let kernel = lab.store().image(DOM0_KERNEL)?;
        let worker = lab.worker()?;
        let busybox = tools::static_busybox()?;
        let worker_hash = cache::sha256_file(&worker)?;
        let busybox_hash = cache::sha256_file(&busybox)?;
        let mut parts: Vec<&[u8]> = vec![
            IMAGE_FORMAT.as_bytes(),
            HYPERVISOR_PACKAGE.as_bytes(),
            kernel.abi.as_bytes(),
            worker_hash.as_bytes(),
            busybox_hash.as_bytes(),
        ];
        parts.extend(DOM0_PACKAGES.iter().map(|p| p.as_bytes()));
        if hvm {
            parts.push(b"hvm");
            parts.extend(HVM_PACKAGES.iter().map(|p| p.as_bytes()));
            parts.extend(KEPT_SHARE.iter().map(|p| p.as_bytes()));
        }
        parts.extend(SUITES.iter().map(|p| p.as_bytes()));
        parts.extend(XEN_MODULES.iter().map(|p| p.as_bytes()));
        parts.extend(DOM0_SETUP.iter().map(|p| p.as_bytes()));
        let key = build::digest(&parts);
        let cache = lab.cache();
        let dir = cache.root().join("xen").join(&key);
        if !cache::is_complete(&dir, false)? {
            let _lock = cache.lock(&format!("xen-{key}"))?;
            if !cache::is_complete(&dir, false)? {
                build_image(cache, &kernel, &worker, &busybox, hvm, &dir)?;
            }
        }
        let packages = fs::read_to_string(dir.join("PACKAGES"))
            .ctx("reading", dir.join("PACKAGES"))?
            .lines()
            .map(str::to_string)
            .collect();
        Ok(XenImage {
            xen: dir.join("xen.elf"),
            dom0_initramfs: dir.join("dom0.cpio"),
            dom0_kernel: kernel,
            packages,
            dir,
        })
    }
}

fn build_image(
    cache: &Cache,
    kernel: &KernelImage,
    worker: &Path,
    busybox: &Path,
    hvm: bool,
    dest: &Path,
) -> Result<()> {
    let stage = cache.staging()?;
    let archive = Archive::new(cache)?;
    archive.update(false)?;
    let root = stage.path().join("root");
    fs::create_dir_all(&root).ctx("creating", &root)?;
    let mut used = Vec::new();
    let mut names = Vec::new();
    let extra: &[&str] = if hvm { HVM_PACKAGES } else { &[] };
    for package in std::iter::once(&HYPERVISOR_PACKAGE)
        .chain(DOM0_PACKAGES)
        .chain(extra)
    {
        let version = archive.version_in(package, SUITES)?;
        let deb = archive.download_version(package, &version, false)?;
        tools::run(DPKG_DEB.command()?.arg("-x").arg(&deb).arg(&root))?;
        names.push(
            deb.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        used.push(deb);
    }
    // the hypervisor
    let gz = root.join("boot/xen-4.17-amd64.gz");
    let mut xen = Vec::new();
    flate2::read::GzDecoder::new(File::open(&gz).ctx("opening", &gz)?)
        .read_to_end(&mut xen)
        .ctx("decompressing", &gz)?;
    if xen.get(..4) != Some(b"\x7fELF") {
        return Err(Error::Xen(format!(
            "{} is not an ELF file after decompression",
            gz.display()
        )));
    }
    let xen_elf = stage.path().join("xen.elf");
    fs::write(&xen_elf, &xen).ctx("writing", &xen_elf)?;

    // dom0's Xen drivers, from the kernel's own package
    let kmod = stage.path().join("kmod");
    let modules = dom0_modules(cache, &archive, &kernel.abi, &kmod)?;
    let mut scenario = Scenario::new();
    for m in &modules {
        scenario = scenario.insmod(m, "");
    }
    for line in DOM0_SETUP {
        scenario = scenario.shell(line);
    }
    let lab_part = stage.path().join("lab.cpio");
    scenario.build_initramfs(worker, busybox, None, &lab_part)?;

    // the lab part first (worker as /init, busybox, /lab), then the packages
    let initramfs = stage.path().join("dom0.cpio");
    fs::copy(&lab_part, &initramfs).ctx("copying", &lab_part)?;
    let out = fs::OpenOptions::new()
        .append(true)
        .open(&initramfs)
        .ctx("opening", &initramfs)?;
    let mut w = CpioWriter::new(BufWriter::new(out));
    add_tree(&mut w, &root).ctx("writing dom0 initramfs", &initramfs)?;
    let buf = w.finish().ctx("writing dom0 initramfs", &initramfs)?;
    buf.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .ctx("writing dom0 initramfs", &initramfs)?;

    fs::remove_dir_all(&root).ctx("removing", &root)?;
    fs::remove_dir_all(&kmod).ctx("removing", &kmod)?;
    fs::remove_file(&lab_part).ctx("removing", &lab_part)?;
    let mut list = names.join("\n");
    list.push('\n');
    fs::write(stage.path().join("PACKAGES"), list).ctx("writing", stage.path())?;
    cache.commit(stage, dest)?;
    // the image is what is kept
    for deb in used {
        let _ = fs::remove_file(deb);
    }
    Ok(())
}

/// Unpack [`XEN_MODULES`] from the dom0 kernel's package into `dir`, in load order.
fn dom0_modules(cache: &Cache, archive: &Archive, abi: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    // the store deletes this package after caching a kernel image: never both at once
    let _lock = cache.lock(&format!("kernel-{abi}-image"))?;
    let deb = archive.download(&format!("linux-image-{abi}-unsigned"), false)?;
    let tmp = dir.join("x");
    fs::create_dir_all(&tmp).ctx("creating", &tmp)?;
    let globs: Vec<String> = XEN_MODULES
        .iter()
        .map(|m| format!("*/kernel/drivers/xen/*{m}.ko*"))
        .collect();
    let globs: Vec<&str> = globs.iter().map(String::as_str).collect();
    let extracted = extract(&deb, &tmp, &[], &globs, false);
    let _ = fs::remove_file(&deb);
    extracted?;
    let mut out = Vec::new();
    for m in XEN_MODULES {
        let found = find_file(&tmp, |p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n == format!("{m}.ko") || n.starts_with(&format!("{m}.ko."))
            })
        })?
        .ok_or_else(|| Error::MissingMember {
            package: format!("linux-image-{abi}-unsigned"),
            member: format!("{m}.ko"),
        })?;
        let dest = dir.join(format!("{m}.ko"));
        decompress_module(&found, &dest)?;
        out.push(dest);
    }
    fs::remove_dir_all(&tmp).ctx("removing", &tmp)?;
    Ok(out)
}

/// Add every directory, file and symlink under `root` (in name order, parents first),
/// leaving out [`PRUNED`].
fn add_tree<W: Write>(w: &mut CpioWriter<W>, root: &Path) -> std::io::Result<()> {
    let rel = |path: &Path| {
        path.strip_prefix(root)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let kept = |e: &walkdir::DirEntry| {
        let rel = rel(e.path());
        let in_share = rel
            .strip_prefix("usr/share/")
            .is_some_and(|r| !r.contains('/'));
        !(PRUNED.contains(&rel.as_str()) || (in_share && !KEPT_SHARE.contains(&rel.as_str())))
    };
    let walk = walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name();
    for e in walk.into_iter().filter_entry(kept) {
        let e = e?;
        let path = e.path();
        let guest = format!("/{}", rel(path));
        let meta = e.metadata()?;
        let ty = meta.file_type();
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if ty.is_symlink() {
            w.symlink(&guest, &fs::read_link(path)?.to_string_lossy())?;
        } else if ty.is_dir() {
            w.dir(&guest, mode)?;
        } else if ty.is_file() {
            w.file(&guest, mode, &fs::read(path)?)?;
        }
    }
    Ok(())
}

/// How a domU is virtualised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomuKind {
    /// PVH: hardware virtualisation without emulated devices (the default).
    Pvh,
    /// Paravirtualised: the guest's page tables hold machine frames.
    Pv,
    /// Full HVM: an emulated PC (QEMU as device model in dom0), the kernel booted by
    /// SeaBIOS from QEMU's `-kernel`; console and lab channel on its serial port.
    Hvm,
}

impl DomuKind {
    /// The xl `type`.
    pub fn xl_type(self) -> &'static str {
        match self {
            DomuKind::Pvh => "pvh",
            DomuKind::Pv => "pv",
            DomuKind::Hvm => "hvm",
        }
    }
}

/// A domU the rig can start.
#[derive(Debug, Clone)]
pub struct DomuSpec {
    /// The domain name (xl `name`): letters, digits, `-` and `_`.
    pub name: String,
    /// PVH, PV or HVM.
    pub kind: DomuKind,
    /// The lab kernel it boots (a name the store resolves).
    pub kernel: String,
    /// What runs in it.
    pub scenario: Scenario,
    /// Its memory in MiB.
    pub memory_mib: u32,
    /// Its vCPUs.
    pub vcpus: u32,
    /// Leave KASLR on (a PVH guest boots without it anyway: its entry skips the
    /// decompressor that randomises).
    pub kaslr: bool,
    /// Extra kernel command-line words.
    pub append: Vec<String>,
}

impl DomuSpec {
    /// A PVH domU of `kernel` running `scenario`, 256 MiB and one vCPU.
    pub fn pvh(name: &str, kernel: &str, scenario: Scenario) -> DomuSpec {
        DomuSpec {
            name: name.to_string(),
            kind: DomuKind::Pvh,
            kernel: kernel.to_string(),
            scenario,
            memory_mib: 256,
            vcpus: 1,
            kaslr: true,
            append: Vec::new(),
        }
    }

    /// The same domU as a PV guest.
    pub fn pv(mut self) -> DomuSpec {
        self.kind = DomuKind::Pv;
        self
    }

    /// The same domU as a full HVM guest (boots in about three minutes under TCG).
    pub fn hvm(mut self) -> DomuSpec {
        self.kind = DomuKind::Hvm;
        self
    }

    fn validate(&self) -> Result<()> {
        let ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(Error::Xen(format!(
                "domU name {:?}: use 1-64 of [A-Za-z0-9_-]",
                self.name
            )));
        }
        if self.append.iter().any(|a| a.contains(['"', '\n', '\\'])) {
            return Err(Error::Xen(format!(
                "domU {}: kernel arguments may not contain quotes, backslashes or newlines",
                self.name
            )));
        }
        Ok(())
    }

    /// The xl configuration, with the domU's files under `dir` in dom0.
    pub fn xl_config(&self, dir: &str) -> String {
        // an HVM guest's console is its emulated serial port (what `xl create -c`
        // attaches to), the others' Xen's PV console
        let tty = if self.kind == DomuKind::Hvm {
            "ttyS0"
        } else {
            "hvc0"
        };
        let mut extra = vec![
            format!("console={tty}"),
            "loglevel=1".into(),
            "panic=-1".into(),
            format!("labchannel=/dev/{tty}"),
        ];
        if !self.kaslr {
            extra.push("nokaslr".into());
        }
        extra.extend(self.append.iter().cloned());
        format!(
            "name = \"{name}\"\ntype = \"{ty}\"\nkernel = \"{dir}/vmlinuz\"\nramdisk = \"{dir}/initramfs.cpio\"\n\
             extra = \"{extra}\"\nmemory = {mem}\nvcpus = {vcpus}\ncpus = \"1\"\ntsc_mode = \"native\"\n\
             on_poweroff = \"destroy\"\non_reboot = \"destroy\"\non_crash = \"preserve\"\n",
            name = self.name,
            ty = self.kind.xl_type(),
            extra = extra.join(" "),
            mem = self.memory_mib,
            vcpus = self.vcpus,
        ) + if self.kind == DomuKind::Hvm {
            "serial = \"pty\"\nvga = \"none\"\nvnc = 0\nsdl = 0\n"
        } else {
            ""
        }
    }
}

/// A host file put into dom0 at boot.
#[derive(Debug, Clone)]
pub struct Dom0File {
    /// The file on the host.
    pub host: PathBuf,
    /// Absolute path in dom0.
    pub guest: String,
    /// Permission bits.
    pub mode: u32,
    /// Copy without debug sections (`strip --strip-debug`; a debug test binary shrinks
    /// from ~45 MB to a few).
    pub strip_debug: bool,
}

/// How to boot the rig.
#[derive(Debug, Clone)]
pub struct XenOptions {
    /// QEMU's RAM in MiB (Xen, dom0 and every domU share it).
    pub memory_mib: u32,
    /// dom0's RAM in MiB.
    pub dom0_memory_mib: u32,
    /// How long to wait for dom0's toolstack.
    pub timeout: Duration,
    /// The domUs [`XenRig::start`] can start (their files are put into dom0 at boot).
    pub domus: Vec<DomuSpec>,
    /// Host files for dom0.
    pub files: Vec<Dom0File>,
}

impl Default for XenOptions {
    fn default() -> Self {
        XenOptions {
            memory_mib: 3072,
            dom0_memory_mib: 1024,
            timeout: Duration::from_secs(600),
            domus: Vec::new(),
            files: Vec::new(),
        }
    }
}

impl XenOptions {
    /// Add a domU.
    pub fn domu(mut self, spec: DomuSpec) -> XenOptions {
        self.domus.push(spec);
        self
    }

    /// Add a host file at `guest` in dom0 (mode 0644).
    pub fn file(mut self, host: impl Into<PathBuf>, guest: &str) -> XenOptions {
        self.files.push(Dom0File {
            host: host.into(),
            guest: guest.to_string(),
            mode: 0o644,
            strip_debug: false,
        });
        self
    }

    /// Add a host program at `guest` in dom0 (mode 0755, debug sections stripped).
    pub fn program(mut self, host: impl Into<PathBuf>, guest: &str) -> XenOptions {
        self.files.push(Dom0File {
            host: host.into(),
            guest: guest.to_string(),
            mode: 0o755,
            strip_debug: true,
        });
        self
    }
}

/// One domU lab channel: a PCI serial port of QEMU, relayed in dom0 to a domU console.
struct Slot {
    channel: Arc<Mutex<Channel>>,
    /// The domU using it.
    domu: Option<String>,
}

/// Xen and dom0 running in QEMU.
pub struct XenRig {
    child: Option<Child>,
    run_dir: tempfile::TempDir,
    dom0: Channel,
    dom0_truth: GroundTruth,
    slots: Vec<Slot>,
    domus: Vec<DomuSpec>,
    image: XenImage,
    boot_time: Duration,
}

impl std::fmt::Debug for XenRig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenRig")
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("run_dir", &self.run_dir.path())
            .finish_non_exhaustive()
    }
}

impl XenRig {
    /// Boot Xen and dom0 and wait until dom0's toolstack is up (no domU runs yet).
    pub fn boot(lab: &Lab, opts: &XenOptions) -> Result<XenRig> {
        let hvm = opts.domus.iter().any(|d| d.kind == DomuKind::Hvm);
        let image = XenImage::ensure_with(lab, hvm)?;
        let qemu = QEMU.find()?;
        let run_dir = tempfile::Builder::new()
            .prefix("vmi-lab-xen-")
            .tempdir()
            .ctx("creating run directory in", std::env::temp_dir())?;
        let dir = run_dir.path().to_path_buf();

        // this boot's files: the domUs' kernels, initramfs and configs, host files
        let extra = dir.join("boot-files.cpio");
        write_boot_files(lab, opts, &dir, &extra)?;
        let initramfs = dir.join("dom0.cpio");
        fs::copy(&image.dom0_initramfs, &initramfs).ctx("copying", &image.dom0_initramfs)?;
        {
            let mut out = fs::OpenOptions::new()
                .append(true)
                .open(&initramfs)
                .ctx("opening", &initramfs)?;
            let mut src = File::open(&extra).ctx("opening", &extra)?;
            std::io::copy(&mut src, &mut out).ctx("appending to", &initramfs)?;
        }
        fs::remove_file(&extra).ctx("removing", &extra)?;

        let console = dir.join("console.log");
        let stderr_path = dir.join("qemu.stderr");
        let dom0_sock = dir.join("dom0.sock");
        let dom0_listener = listen(&dom0_sock)?;
        let mut slot_listeners = Vec::new();
        for i in 0..DOMU_SLOTS {
            let p = dir.join(format!("domu{i}.sock"));
            slot_listeners.push((listen(&p)?, p));
        }
        let xen_args = format!(
            "console=com1 com1=115200,8n1 dom0_mem={m}M,max:{m}M dom0_max_vcpus=1 dom0_vcpus_pin loglvl=all guest_loglvl=all",
            m = opts.dom0_memory_mib
        );
        let dom0_args = "console=hvc0 earlyprintk=xen 8250.nr_uarts=8 loglevel=4";
        // QEMU splits -initrd on commas (a comma in arguments is written twice)
        let modules = format!(
            "{} {},{}",
            qemu_path(&image.dom0_kernel.vmlinuz)?,
            dom0_args,
            qemu_path(&initramfs)?
        );
        let mut cmd = Command::new(qemu);
        // debug-threads: each vCPU thread is named ("CPU 1/TCG": the domUs' CPU)
        cmd.args(["-name", "vmi-lab-xen,debug-threads=on"])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .args(["-accel", "tcg", "-cpu", "max,-smap,-smep,-xsave,-avx,-avx2"])
            .args(["-smp", "2"])
            .args(["-m", &format!("{}M", opts.memory_mib)])
            .arg("-kernel")
            .arg(&image.xen)
            .args(["-append", &xen_args])
            .args(["-initrd", &modules])
            .arg("-chardev")
            .arg(format!("file,id=con,path={}", console.display()))
            .args(["-serial", "chardev:con"])
            .arg("-chardev")
            .arg(format!("socket,id=dom0,path={}", dom0_sock.display()))
            .args(["-serial", "chardev:dom0"]);
        for (i, (_, p)) in slot_listeners.iter().enumerate() {
            cmd.arg("-chardev")
                .arg(format!("socket,id=domu{i},path={}", p.display()))
                .arg("-device")
                .arg(format!(
                    "pci-serial,chardev=domu{i},addr={:#x}",
                    SLOT_PCI_BASE + i
                ));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr_path).ctx("creating", &stderr_path)?);
        let start = Instant::now();
        let mut child = Some(spawn_tied(cmd).ctx("starting", "qemu-system-x86_64")?);

        let connected = (|| {
            let mut gone = || exited(&mut child);
            let dom0 = accept_until(&dom0_listener, Duration::from_secs(60), &mut gone)?;
            let dom0 = Channel::spawn(dom0, "vmi-lab-xen-dom0", &dom0_sock)?;
            let mut slots = Vec::new();
            for (i, (l, p)) in slot_listeners.iter().enumerate() {
                let s = accept_until(l, Duration::from_secs(60), &mut gone)?;
                slots.push(Slot {
                    channel: Arc::new(Mutex::new(Channel::spawn(
                        s,
                        &format!("vmi-lab-xen-domu{i}"),
                        p,
                    )?)),
                    domu: None,
                });
            }
            Ok::<_, Error>((dom0, slots))
        })();
        let (dom0, slots) = match connected {
            Ok(v) => v,
            Err(e) => {
                let e = with_exit(e, &mut child, &console, &stderr_path);
                kill(&mut child);
                return Err(e);
            }
        };
        let mut rig = XenRig {
            child,
            run_dir,
            dom0,
            dom0_truth: GroundTruth::default(),
            slots,
            domus: opts.domus.clone(),
            image,
            boot_time: Duration::ZERO,
        };
        let deadline = start + opts.timeout;
        let XenRig { dom0, child, .. } = &mut rig;
        let truth = boot_truth(
            dom0,
            child,
            &console,
            &stderr_path,
            deadline,
            opts.timeout,
            true,
        )?;
        rig.dom0_truth = truth;
        // the toolstack answers
        let list = rig.dom0_sh(&format!("{XEN_BIN}/xl list"))?;
        if list.status != 0 || !list.lines.iter().any(|l| l.starts_with("Domain-0")) {
            return Err(Error::Xen(format!(
                "dom0 booted but `xl list` failed (status {}): {}\nconsole:\n{}",
                list.status,
                list.lines.join("\n"),
                rig.console_tail(CONSOLE_TAIL)
            )));
        }
        rig.boot_time = start.elapsed();
        Ok(rig)
    }

    /// QEMU's process id (None once it has exited).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Time from starting QEMU to dom0's toolstack answering.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// The image the rig booted.
    pub fn image(&self) -> &XenImage {
        &self.image
    }

    /// dom0's ground truth (dom0 is a lab guest too).
    pub fn dom0_truth(&self) -> &GroundTruth {
        &self.dom0_truth
    }

    /// Run a shell command in dom0 (busybox sh, as root) and wait for it.
    pub fn dom0_sh(&mut self, command: &str) -> Result<ShellOutput> {
        self.dom0_sh_timeout(command, Duration::from_secs(300))
    }

    /// [`XenRig::dom0_sh`] with a timeout.
    pub fn dom0_sh_timeout(&mut self, command: &str, timeout: Duration) -> Result<ShellOutput> {
        match self.dom0.sh_timeout(command, timeout) {
            Ok(out) => Ok(out),
            Err(e) => Err(self.check_alive().unwrap_or(e)),
        }
    }

    /// Copy a file out of dom0.
    pub fn dom0_read_file(&mut self, path: &str) -> Result<Vec<u8>> {
        self.dom0.read_file(path)
    }

    /// The last `n` lines of Xen's and dom0's console.
    pub fn console_tail(&self, n: usize) -> String {
        console_tail(&self.console_path(), n)
    }

    /// Xen's and dom0's console log.
    pub fn console_path(&self) -> PathBuf {
        self.run_dir.path().join("console.log")
    }

    fn check_alive(&mut self) -> Option<Error> {
        let console = self.console_path();
        let stderr = self.run_dir.path().join("qemu.stderr");
        exited(&mut self.child).then(|| {
            with_exit(
                Error::Channel("QEMU exited".into()),
                &mut self.child,
                &console,
                &stderr,
            )
        })
    }

    /// Create the domU named `name` (one of [`XenOptions::domus`]) and wait until its
    /// worker reports READY on its lab channel.
    pub fn start(&mut self, name: &str) -> Result<XenDomu> {
        self.start_timeout(name, Duration::from_secs(600))
    }

    /// [`XenRig::start`] with a timeout.
    pub fn start_timeout(&mut self, name: &str, timeout: Duration) -> Result<XenDomu> {
        let spec = self
            .domus
            .iter()
            .find(|d| d.name == name)
            .cloned()
            .ok_or_else(|| {
                Error::Xen(format!(
                    "no domU {name:?} was given at boot (XenOptions::domus has: {})",
                    self.domus
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        if self.slots.iter().any(|s| s.domu.as_deref() == Some(name)) {
            return Err(Error::Xen(format!("domU {name} is already running")));
        }
        let slot = self
            .slots
            .iter()
            .position(|s| s.domu.is_none())
            .ok_or_else(|| {
                Error::Xen(format!(
                    "all {DOMU_SLOTS} domU channels are in use: destroy a domU first"
                ))
            })?;
        let channel = self.slots[slot].channel.clone();
        lock(&channel)?.drain();
        let dir = format!("/lab/domu/{name}");
        let pci = format!("0000:00:{:02x}.0", SLOT_PCI_BASE + slot);
        let start = Instant::now();
        // the console client stays attached for the domU's life; all of its fds point
        // away from the shell's pipe so the command returns
        let create = format!(
            "tty=$(ls /sys/bus/pci/devices/{pci}/tty) && stty -F /dev/$tty raw -echo && \
             ({XEN_BIN}/xl create -c {dir}/xl.cfg </dev/$tty >/dev/$tty 2>{dir}/xl.log &) ; \
             i=0; while ! {XEN_BIN}/xl domid {name} >/dev/null 2>&1; do i=$((i+1)); \
             if [ $i -gt 600 ]; then cat {dir}/xl.log; exit 1; fi; usleep 100000; done; \
             {XEN_BIN}/xl domid {name}"
        );
        let out = self.dom0_sh(&create)?;
        let domid = out
            .lines
            .last()
            .and_then(|l| l.trim().parse::<u32>().ok())
            .filter(|_| out.status == 0)
            .ok_or_else(|| {
                Error::Xen(format!(
                    "xl create {name} failed (status {}): {}",
                    out.status,
                    out.lines.join("\n")
                ))
            })?;
        self.slots[slot].domu = Some(name.to_string());
        let mut console_lines: Vec<String> = Vec::new();
        let deadline = Instant::now() + timeout;
        let truth = {
            let mut ch = lock(&channel)?;
            let XenRig { child, .. } = self;
            ch.read_truth(
                deadline,
                true,
                &mut || exited(child).then(|| Error::Channel("QEMU exited".into())),
                &|| Error::Channel(format!("domU {name}: no READY within {timeout:?}")),
                &mut |l| {
                    console_lines.push(l.to_string());
                    if console_lines.len() > CONSOLE_TAIL {
                        console_lines.remove(0);
                    }
                },
            )
        };
        let truth = match truth {
            Ok(t) => t,
            Err(e) => {
                let log = self
                    .dom0_sh(&format!(
                        "{XEN_BIN}/xl list; cat {dir}/xl.log; tail -n 50 /var/log/xen/console/guest-{name}.log"
                    ))
                    .map(|o| o.lines.join("\n"))
                    .unwrap_or_default();
                let _ = self.destroy(name);
                return Err(Error::Xen(format!(
                    "domU {name} (domid {domid}) did not become ready: {e}\n\
                     its channel showed:\n{}\ndom0 says:\n{log}\nXen console:\n{}",
                    console_lines.join("\n"),
                    self.console_tail(20)
                )));
            }
        };
        Ok(XenDomu {
            name: name.to_string(),
            kind: spec.kind,
            domid,
            truth,
            channel,
            boot_time: start.elapsed(),
        })
    }

    /// Destroy a domU (`xl destroy`) and free its channel.
    pub fn destroy(&mut self, name: &str) -> Result<()> {
        let out = self.dom0_sh(&format!("{XEN_BIN}/xl destroy {}", quote(name)?))?;
        for s in &mut self.slots {
            if s.domu.as_deref() == Some(name) {
                s.domu = None;
            }
        }
        if out.status != 0 {
            return Err(Error::Xen(format!(
                "xl destroy {name} failed (status {}): {}",
                out.status,
                out.lines.join("\n")
            )));
        }
        Ok(())
    }

    /// Power dom0 off (Xen then powers the machine off) and wait for QEMU to exit; QEMU
    /// is killed if it has not within a minute.
    pub fn shutdown(mut self) -> Result<()> {
        let _ = self.dom0.send("poweroff");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if exited(&mut self.child) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(Error::Xen(
            "dom0 did not power off within 60 s; QEMU was killed".into(),
        ))
    }
}

impl Drop for XenRig {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

fn lock(channel: &Mutex<Channel>) -> Result<MutexGuard<'_, Channel>> {
    channel
        .lock()
        .map_err(|_| Error::Channel("a domU channel was poisoned by a panic".into()))
}

fn listen(path: &Path) -> Result<UnixListener> {
    let l = UnixListener::bind(path).ctx("listening on", path)?;
    l.set_nonblocking(true).ctx("configuring", path)?;
    Ok(l)
}

/// A path QEMU's `-initrd` list takes: no commas (they separate modules) and UTF-8.
fn qemu_path(p: &Path) -> Result<String> {
    match p.to_str() {
        Some(s) if !s.contains([',', ' ']) => Ok(s.to_string()),
        _ => Err(Error::Xen(format!(
            "{} cannot be passed to QEMU's -initrd (commas, spaces or non-UTF-8 in the path)",
            p.display()
        ))),
    }
}

/// The per-boot cpio: `/lab/domu/NAME/{vmlinuz,initramfs.cpio,xl.cfg}` and host files.
fn write_boot_files(lab: &Lab, opts: &XenOptions, dir: &Path, out: &Path) -> Result<()> {
    let worker = lab.worker()?;
    let busybox = tools::static_busybox()?;
    let file = File::create(out).ctx("creating", out)?;
    let mut w = CpioWriter::new(BufWriter::new(file));
    let io = |e: std::io::Error| Error::Io {
        what: "writing",
        path: out.to_path_buf(),
        source: e,
    };
    w.dir("/lab/domu", 0o755).map_err(io)?;
    let mut names = Vec::new();
    for spec in &opts.domus {
        spec.validate()?;
        if names.contains(&spec.name) {
            return Err(Error::Xen(format!("domU {} is given twice", spec.name)));
        }
        names.push(spec.name.clone());
        let kernel = lab.store().image(&spec.kernel)?;
        let initramfs = dir.join(format!("domu-{}.cpio", spec.name));
        spec.scenario
            .build_initramfs(&worker, &busybox, None, &initramfs)?;
        let d = format!("/lab/domu/{}", spec.name);
        w.dir(&d, 0o755).map_err(io)?;
        let vmlinuz = fs::read(&kernel.vmlinuz).ctx("reading", &kernel.vmlinuz)?;
        w.file(&format!("{d}/vmlinuz"), 0o644, &vmlinuz)
            .map_err(io)?;
        let data = fs::read(&initramfs).ctx("reading", &initramfs)?;
        w.file(&format!("{d}/initramfs.cpio"), 0o644, &data)
            .map_err(io)?;
        fs::remove_file(&initramfs).ctx("removing", &initramfs)?;
        w.file(&format!("{d}/xl.cfg"), 0o644, spec.xl_config(&d).as_bytes())
            .map_err(io)?;
    }
    let mut dirs: Vec<String> = Vec::new();
    for f in &opts.files {
        if !f.guest.starts_with('/') || f.guest.contains("..") {
            return Err(Error::Xen(format!(
                "dom0 path {:?} must be absolute and without ..",
                f.guest
            )));
        }
        for d in Path::new(&f.guest)
            .ancestors()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            let d = d.to_string_lossy().into_owned();
            if d != "/" && !d.is_empty() && !dirs.contains(&d) {
                w.dir(&d, 0o755).map_err(io)?;
                dirs.push(d);
            }
        }
        let data = if f.strip_debug {
            stripped(&f.host, dir)?
        } else {
            fs::read(&f.host).ctx("reading", &f.host)?
        };
        w.file(&f.guest, f.mode, &data).map_err(io)?;
    }
    let buf = w.finish().map_err(io)?;
    buf.into_inner().map_err(|e| io(e.into_error()))?;
    Ok(())
}

/// A program without its debug sections (`strip --strip-debug`), or as it is when
/// binutils' strip is not installed.
fn stripped(host: &Path, dir: &Path) -> Result<Vec<u8>> {
    let out = dir.join("stripped");
    let ok = tools::which("strip").is_some_and(|strip| {
        Command::new(strip)
            .arg("--strip-debug")
            .arg("-o")
            .arg(&out)
            .arg(host)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    let data = if ok {
        fs::read(&out).ctx("reading", &out)?
    } else {
        fs::read(host).ctx("reading", host)?
    };
    let _ = fs::remove_file(&out);
    Ok(data)
}

/// A running domU.
pub struct XenDomu {
    name: String,
    kind: DomuKind,
    domid: u32,
    truth: GroundTruth,
    channel: Arc<Mutex<Channel>>,
    boot_time: Duration,
}

impl std::fmt::Debug for XenDomu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenDomu")
            .field("name", &self.name)
            .field("domid", &self.domid)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl XenDomu {
    /// The domain name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The domain id.
    pub fn domid(&self) -> u32 {
        self.domid
    }

    /// PVH or PV.
    pub fn kind(&self) -> DomuKind {
        self.kind
    }

    /// Time from `xl create` to READY.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// The ground truth the domU reported last: when it became ready, or at the latest
    /// `refresh_truth`.
    pub fn truth(&self) -> &GroundTruth {
        &self.truth
    }

    /// Ask the domU for a fresh ground-truth block; `truth` returns it from now on.
    pub fn refresh_truth(&mut self) -> Result<GroundTruth> {
        let mut ch = lock(&self.channel)?;
        ch.send("truth")?;
        let name = self.name.clone();
        let truth = ch.read_truth(
            Instant::now() + Duration::from_secs(300),
            false,
            &mut || None,
            &|| Error::Channel(format!("domU {name}: no ground truth within 300 s")),
            &mut |_| {},
        )?;
        drop(ch);
        self.truth = truth.clone();
        Ok(truth)
    }

    /// Run a shell command in the domU and wait for it.
    pub fn sh(&mut self, command: &str) -> Result<ShellOutput> {
        lock(&self.channel)?.sh_timeout(command, Duration::from_secs(300))
    }

    /// Copy a file out of the domU.
    pub fn read_file(&mut self, path: &str) -> Result<Vec<u8>> {
        lock(&self.channel)?.read_file(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xl_config_names_the_files_and_the_channel() {
        let mut spec = DomuSpec::pvh("lab-pvh", "6.1.0-56-amd64", Scenario::standard());
        spec.kaslr = false;
        spec.append.push("quiet".into());
        let cfg = spec.xl_config("/lab/domu/lab-pvh");
        for want in [
            "name = \"lab-pvh\"",
            "type = \"pvh\"",
            "kernel = \"/lab/domu/lab-pvh/vmlinuz\"",
            "ramdisk = \"/lab/domu/lab-pvh/initramfs.cpio\"",
            "labchannel=/dev/hvc0 nokaslr quiet\"",
            "tsc_mode = \"native\"",
            "memory = 256",
        ] {
            assert!(cfg.contains(want), "{want} not in\n{cfg}");
        }
        assert!(spec.clone().pv().xl_config("/d").contains("type = \"pv\""));
        assert!(!cfg.contains("serial"), "{cfg}");
        let hvm = spec.clone().hvm().xl_config("/d");
        for want in [
            "type = \"hvm\"",
            "console=ttyS0 ",
            "labchannel=/dev/ttyS0 ",
            "serial = \"pty\"",
            "vga = \"none\"",
        ] {
            assert!(hvm.contains(want), "{want} not in\n{hvm}");
        }
    }

    #[test]
    fn bad_domu_names_and_arguments_are_refused() {
        for bad in ["", "a b", "x\"y", "../x"] {
            assert!(DomuSpec::pvh(bad, "k", Scenario::new()).validate().is_err());
        }
        let mut spec = DomuSpec::pvh("ok", "k", Scenario::new());
        assert!(spec.validate().is_ok());
        spec.append.push("a\"b".into());
        assert!(spec.validate().is_err());
    }

    #[test]
    fn qemu_paths_without_commas() {
        assert!(qemu_path(Path::new("/tmp/a,b")).is_err());
        assert!(qemu_path(Path::new("/tmp/a b")).is_err());
        assert_eq!(qemu_path(Path::new("/tmp/ab")).unwrap(), "/tmp/ab");
    }
}
