//! Opening a guest: the memory source (a dump recognised by content, a live QEMU, or a
//! Xen domain read from dom0), the profile, and the kernel found in memory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vmi_core::arch::x86_64::Registers;
use vmi_core::kernel::candidates::{all_candidates, Executing};
use vmi_core::kernel::{Hints, Kernel, Limits, ProfileSet};
use vmi_core::memory::{
    DumpFormat, ElfCore, LimeImage, PauseGuard, PauseResume, PhysicalMemory, QemuLive, QemuOptions,
    RawImage, Recording, VcpuRegisters, XenDomain, XenOptions,
};
use vmi_core::profile::Profile;

use crate::error::DetectorError;

/// Guest memory as the checks read it.
pub type Memory = Arc<dyn PhysicalMemory + Send + Sync>;

/// Where guest memory comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A dump file: ELF core, LiME or raw, recognised by its first bytes.
    Dump(PathBuf),
    /// A live QEMU guest: its QMP socket, and the RAM file when QEMU's `mem-path`
    /// is not the path to use (e.g. another mount namespace).
    Qemu {
        /// The QMP socket.
        socket: PathBuf,
        /// The RAM file.
        mem_path: Option<PathBuf>,
    },
    /// A running QEMU process, by pid: guest RAM read through the process (any memory
    /// backend), with its QMP socket when given (registers, pause), else without a
    /// monitor (the memory map from QEMU's command line; no registers, no pause).
    QemuPid {
        /// QEMU's pid.
        pid: i32,
        /// The QMP socket, when the monitor is free to use.
        qmp: Option<PathBuf>,
    },
    /// A running libvirt domain (QEMU), by name: RAM read through its QEMU process,
    /// registers and pause/resume through libvirt's API.
    Libvirt {
        /// The domain's name.
        name: String,
        /// libvirt's connection URI (`qemu:///system`).
        uri: String,
    },
    /// A live Xen domain (PV, PVH or HVM), by name or id, read from dom0.
    Xen {
        /// The domain's name or id.
        domain: String,
    },
}

/// Which profiles to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileSpec {
    /// Every profile under a directory; the one whose banner is in memory is used. When
    /// none matches, one is made from the guest's own memory and written there.
    Dir(PathBuf),
    /// One profile file.
    File(PathBuf),
    /// No profile: make it from the guest's own memory (kept in memory only).
    Auto,
}

/// The kind of memory source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// ELF core dump.
    Elf,
    /// LiME image.
    Lime,
    /// Raw physical image.
    Raw,
    /// Live QEMU guest.
    Qemu,
    /// Live Xen domain.
    Xen,
}

impl SourceKind {
    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Elf => "elf",
            SourceKind::Lime => "lime",
            SourceKind::Raw => "raw",
            SourceKind::Qemu => "qemu",
            SourceKind::Xen => "xen",
        }
    }
}

/// How a live guest is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveState {
    /// Its vCPUs run.
    Running,
    /// Paused (by the hypervisor's tools or QMP).
    Paused,
    /// It is gone: QEMU exited, or the Xen domain was destroyed, shut down or is dying.
    Gone(String),
}

/// An opened guest with its kernel found.
pub struct Target {
    /// The kernel.
    pub kernel: Kernel<Memory>,
    /// The profile file used.
    pub profile_path: PathBuf,
    /// What kind of source.
    pub kind: SourceKind,
    /// The dump file, QMP socket, `/proc/PID`, libvirt domain or Xen domain.
    pub path: PathBuf,
    /// Registers of every vCPU the source reports (empty for raw and LiME dumps).
    pub registers: Vec<Registers>,
    /// Things the source or profile loading had to skip.
    pub warnings: Vec<String>,
    live: Option<Arc<QemuLive>>,
    xen: Option<Arc<XenDomain>>,
    profiles: ProfileSet,
    /// The kernel's memory, which can record what a computation reads (`watch`'s
    /// incremental scans).
    recording: Arc<Recording<Memory>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("profile_path", &self.profile_path)
            .finish_non_exhaustive()
    }
}

/// Largest profile file read (as vmi-core's profile directories).
const MAX_PROFILE_BYTES: u64 = 256 << 20;

/// Make the profile of the kernel in `mem` from its own BTF and kallsyms, check it against
/// the running kernel (discovery's init_task check and a consistent process walk) before
/// trusting it, and write it atomically into `dir` under a name derived from its banner.
pub fn zero_touch(
    mem: &Memory,
    hints: &Hints,
    dir: Option<&Path>,
) -> Result<vmi_core::kernel::Identified, DetectorError> {
    let fail = |what: String| DetectorError::ZeroTouch(what);
    let built =
        profile_gen::build::from_memory(mem.as_ref(), &profile_gen::build::Options::default())
            .map_err(|e| fail(e.to_string()))?;
    let profile = Arc::new(built.profile);
    let banner_pa =
        vmi_core::kernel::profiles::probe_banner(mem.as_ref(), &profile).ok_or_else(|| {
            fail(
                "the banner of the profile made from memory is not where the kernel image is"
                    .into(),
            )
        })?;
    let kernel =
        Kernel::discover_at(mem.clone(), profile.clone(), banner_pa, hints).map_err(|e| {
            fail(format!(
                "the profile made from memory does not fit the running kernel: {e}"
            ))
        })?;
    kernel
        .processes(&vmi_core::kernel::Limits::default())
        .map_err(|e| {
            fail(format!(
                "the profile made from memory gives an inconsistent process list: {e}"
            ))
        })?;
    let mut path = PathBuf::new();
    if let Some(dir) = dir {
        path = dir.join(profile_file_name(&profile));
        let io = |source| DetectorError::Io {
            path: path.clone(),
            source,
        };
        let mut file = atomic_write_file::AtomicWriteFile::open(&path).map_err(io)?;
        file.write_all(profile.to_json().as_bytes()).map_err(io)?;
        file.commit().map_err(io)?;
    }
    Ok(vmi_core::kernel::Identified {
        profile,
        path,
        banner_pa,
    })
}

/// `<release>-<first 8 hex digits of the banner's sha256>.json`, release characters
/// outside `[A-Za-z0-9._+-]` replaced (the banner is guest data).
pub fn profile_file_name(p: &vmi_core::profile::Profile) -> String {
    use sha2::{Digest, Sha256};
    let release: String = p
        .kernel
        .release
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash = Sha256::digest(p.kernel.banner.as_bytes());
    let hex = hex::encode(&hash[..4]);
    format!(
        "{}-{hex}.json",
        if release.is_empty() {
            "kernel"
        } else {
            &release
        }
    )
}

fn open_err(path: &Path) -> impl FnOnce(vmi_core::Error) -> DetectorError + '_ {
    move |source| DetectorError::Open {
        path: path.to_path_buf(),
        source,
    }
}

fn all_registers<R: VcpuRegisters + ?Sized>(src: &R) -> Vec<Registers> {
    (0..src.vcpu_count().min(4096))
        .filter_map(|i| src.registers(i).ok())
        .collect()
}

impl Target {
    /// How a live QEMU guest's RAM is read (a file mapped, a memfd mapped, or copies
    /// through the QEMU process); `None` for other sources.
    pub fn ram_access(&self) -> Option<String> {
        self.live.as_ref().map(|l| l.ram_access())
    }

    /// Open the source, pick the profile and find the kernel.
    pub fn open(source: &SourceSpec, profiles: &ProfileSpec) -> Result<Target, DetectorError> {
        let mut warnings = Vec::new();
        let mut xen = None;
        let (mem, kind, path, registers, vmcoreinfo, live): (
            Memory,
            SourceKind,
            PathBuf,
            Vec<Registers>,
            _,
            Option<Arc<QemuLive>>,
        ) = match source {
            SourceSpec::Dump(path) => {
                match DumpFormat::of_file(path).map_err(|source| DetectorError::Io {
                    path: path.to_path_buf(),
                    source,
                })? {
                    DumpFormat::Elf => {
                        let core = ElfCore::open(path).map_err(open_err(path))?;
                        warnings.extend(core.warnings().iter().cloned());
                        let regs = all_registers(&core);
                        let vmci = core.vmcoreinfo().cloned();
                        (
                            Arc::new(core),
                            SourceKind::Elf,
                            path.clone(),
                            regs,
                            vmci,
                            None,
                        )
                    }
                    DumpFormat::Lime => {
                        let l = LimeImage::open(path).map_err(open_err(path))?;
                        warnings.extend(l.warnings().iter().cloned());
                        (
                            Arc::new(l),
                            SourceKind::Lime,
                            path.clone(),
                            vec![],
                            None,
                            None,
                        )
                    }
                    DumpFormat::Raw => {
                        let r = RawImage::open(path).map_err(open_err(path))?;
                        (
                            Arc::new(r),
                            SourceKind::Raw,
                            path.clone(),
                            vec![],
                            None,
                            None,
                        )
                    }
                }
            }
            SourceSpec::Qemu { socket, mem_path } => {
                let opts = QemuOptions {
                    ram_path: mem_path.clone(),
                    ..QemuOptions::default()
                };
                let live = Arc::new(QemuLive::connect(socket, &opts).map_err(open_err(socket))?);
                warnings.extend(live.warnings().iter().cloned());
                let regs = all_registers(live.as_ref());
                let mem: Memory = live.clone();
                (
                    mem,
                    SourceKind::Qemu,
                    socket.clone(),
                    regs,
                    None,
                    Some(live),
                )
            }
            SourceSpec::QemuPid { pid, qmp } => {
                let path = PathBuf::from(format!("/proc/{pid}"));
                let live = Arc::new(
                    QemuLive::attach(*pid, qmp.as_deref(), &QemuOptions::default())
                        .map_err(open_err(&path))?,
                );
                warnings.extend(live.warnings().iter().cloned());
                let regs = all_registers(live.as_ref());
                let mem: Memory = live.clone();
                (mem, SourceKind::Qemu, path, regs, None, Some(live))
            }
            SourceSpec::Libvirt { name, uri } => {
                let path = PathBuf::from(name);
                let live = Arc::new(
                    QemuLive::attach_libvirt(name, uri, &QemuOptions::default())
                        .map_err(open_err(&path))?,
                );
                warnings.extend(live.warnings().iter().cloned());
                let regs = all_registers(live.as_ref());
                let mem: Memory = live.clone();
                (mem, SourceKind::Qemu, path, regs, None, Some(live))
            }
            SourceSpec::Xen { domain } => {
                let path = PathBuf::from(domain);
                let dom = Arc::new(
                    XenDomain::open(domain, &XenOptions::default()).map_err(open_err(&path))?,
                );
                warnings.extend(dom.warnings().iter().cloned());
                let regs = all_registers(dom.as_ref());
                let mem: Memory = dom.clone();
                xen = Some(dom);
                (mem, SourceKind::Xen, path, regs, None, None)
            }
        };
        let mut set = match profiles {
            ProfileSpec::Dir(dir) => {
                let (set, w) = ProfileSet::load_dir(dir)?;
                warnings.extend(w);
                set
            }
            ProfileSpec::File(file) => {
                let profile = read_profile(file)?;
                let mut set = ProfileSet::new();
                set.add(file.clone(), Arc::new(profile));
                set
            }
            ProfileSpec::Auto => ProfileSet::new(),
        };
        let hints = Hints {
            registers: registers.first().cloned(),
            vmcoreinfo,
        };
        let id = match set.identify(&mem) {
            Ok(id) => id,
            // zero-touch: a guest no profile describes gets one from its own memory
            Err(vmi_core::kernel::KernelError::NoProfile { .. })
                if !matches!(profiles, ProfileSpec::File(_)) =>
            {
                let dir = match profiles {
                    ProfileSpec::Dir(d) => Some(d.as_path()),
                    _ => None,
                };
                let id = zero_touch(&mem, &hints, dir)?;
                warnings.push(format!(
                    "no profile matched the guest's banner: made one from its memory{}",
                    if id.path.as_os_str().is_empty() {
                        String::new()
                    } else {
                        format!(" and wrote it to {}", id.path.display())
                    }
                ));
                set.add(id.path.clone(), id.profile.clone());
                id
            }
            Err(vmi_core::kernel::KernelError::NoBanner) if set.is_empty() => {
                return Err(match profiles {
                    ProfileSpec::Dir(dir) => DetectorError::NoProfiles {
                        path: dir.clone(),
                        warnings: vec![
                            "and no Linux banner in the guest's memory to make one from".into(),
                        ],
                    },
                    _ => vmi_core::kernel::KernelError::NoBanner.into(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let recording = Arc::new(Recording::new(mem));
        let kernel = Kernel::discover_at(
            recording.clone() as Memory,
            id.profile.clone(),
            id.banner_pa,
            &hints,
        )?;
        Ok(Target {
            recording,
            kernel,
            profile_path: id.path,
            kind,
            path,
            registers,
            warnings,
            live,
            xen,
            profiles: set,
        })
    }

    /// Whether the vCPUs execute the kernel this target describes: [`Executing::Other`]
    /// when any vCPU runs something else, [`Executing::This`] when one runs it and none
    /// runs something else. Reads the registers again.
    pub fn executing(&mut self) -> Executing {
        self.refresh_registers();
        let mut seen = Executing::Unknown;
        for r in &self.registers {
            match self.kernel.executing(r) {
                Executing::Other => return Executing::Other,
                Executing::This => seen = Executing::This,
                Executing::Unknown => {}
            }
        }
        seen
    }

    /// Find the kernel again after the guest rebooted in place: of every banner
    /// position of every profile where a kernel can be discovered, the one a vCPU
    /// executes (sampled up to `samples` times, `gap` apart, until one is seen in kernel
    /// text), once it has booted ([`Kernel::booted`]: init runs a user program), or
    /// while it still boots when `accept_booting`. `Ok(false)` when none is seen running
    /// yet, or the one running still boots.
    pub fn reidentify(
        &mut self,
        samples: usize,
        gap: std::time::Duration,
        accept_booting: bool,
    ) -> Result<bool, DetectorError> {
        let Some(live) = self.live.clone() else {
            return Ok(false);
        };
        let recording = Arc::new(Recording::new(live.clone() as Memory));
        let mem: Memory = recording.clone();
        let mut kernels = Vec::new();
        for c in all_candidates(&self.profiles, &mem) {
            let hints = Hints {
                registers: self.registers.first().cloned(),
                vmcoreinfo: None,
            };
            if let Ok(k) = Kernel::discover_at(mem.clone(), c.profile.clone(), c.banner_pa, &hints)
            {
                kernels.push((c.path, k));
            }
        }
        for i in 0..samples.max(1) {
            self.refresh_registers();
            if let Some(at) = kernels.iter().position(|(_, k)| {
                self.registers
                    .iter()
                    .any(|r| k.executing(r) == Executing::This)
            }) {
                let (path, kernel) = kernels.swap_remove(at);
                if !accept_booting && !kernel.booted(&Limits::default()) {
                    return Ok(false);
                }
                self.kernel = kernel;
                self.recording = recording;
                self.profile_path = path;
                return Ok(true);
            }
            if i + 1 < samples {
                std::thread::sleep(gap);
            }
        }
        Ok(false)
    }

    /// The kernel's memory, to record what a computation reads.
    pub fn recording(&self) -> &Recording<Memory> {
        &self.recording
    }

    /// The profile.
    pub fn profile(&self) -> &Arc<Profile> {
        self.kernel.profile()
    }

    /// The guest's name for event lines (`watch`'s `guest` when no `--name` is given):
    /// QEMU's own name for it (`-name`, which libvirt sets to the domain's name), else
    /// its QMP socket (a libvirt domain's name, asked through libvirt); a Xen
    /// domain's name (xenstore), else the domain as given; a
    /// dump's path. Escaped: it may be anything the host's configuration says.
    pub fn name(&self) -> String {
        let named = if let Some(l) = &self.live {
            l.execute("query-name", None).ok().and_then(|v| {
                v.get("name")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_string)
            })
        } else {
            self.xen.as_ref().and_then(|x| x.name().map(str::to_string))
        };
        match named.filter(|n| !n.is_empty()) {
            Some(n) => vmi_core::kernel::escape(n.as_bytes()),
            None => vmi_core::kernel::escape(self.path.as_os_str().as_encoded_bytes()),
        }
    }

    /// True for a live guest (QEMU or Xen).
    pub fn is_live(&self) -> bool {
        self.live.is_some() || self.xen.is_some()
    }

    /// The live QEMU guest, if this is one.
    pub fn live(&self) -> Option<&Arc<QemuLive>> {
        self.live.as_ref()
    }

    /// How a live guest is now (`None` for dumps). A Xen domain that is shut down,
    /// dying or gone counts as gone, and its mappings are dropped at once: a dying
    /// domain's memory is freed only once no one maps it.
    pub fn state(&self) -> Option<LiveState> {
        if let Some(l) = &self.live {
            return Some(match l.is_running() {
                Ok(true) => LiveState::Running,
                Ok(false) => LiveState::Paused,
                Err(e) => LiveState::Gone(e.to_string()),
            });
        }
        let x = self.xen.as_ref()?;
        let gone = |why: String| {
            x.invalidate();
            LiveState::Gone(why)
        };
        Some(match x.info() {
            Ok(i) if i.dying => gone(format!("Xen domain {} is being destroyed", i.domid)),
            Ok(i) if i.shutdown => gone(format!("Xen domain {} has shut down", i.domid)),
            Ok(i) if i.paused => LiveState::Paused,
            Ok(_) => LiveState::Running,
            Err(e) => gone(e.to_string()),
        })
    }

    /// Pause a live guest until the guard is dropped (`None` for dumps).
    pub fn pause(&self) -> Result<Option<PauseGuard<'_, dyn PauseResume + '_>>, DetectorError> {
        let source: &dyn PauseResume = match (&self.live, &self.xen) {
            (Some(l), _) => l.as_ref(),
            (None, Some(x)) => x.as_ref(),
            (None, None) => return Ok(None),
        };
        Ok(Some(PauseGuard::new(source).map_err(DetectorError::Pause)?))
    }

    /// Read the vCPU registers again (live guests).
    pub fn refresh_registers(&mut self) {
        if let Some(l) = &self.live {
            self.registers = all_registers(l.as_ref());
        } else if let Some(x) = &self.xen {
            self.registers = all_registers(x.as_ref());
        }
    }
}

/// Read one profile file.
pub fn read_profile(path: &Path) -> Result<Profile, DetectorError> {
    let io = |source| DetectorError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_PROFILE_BYTES {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{len} bytes is too large for a profile"),
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|source| DetectorError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Profile::from_json(&text).map_err(|source| {
        DetectorError::Kernel(vmi_core::kernel::KernelError::ProfileFile {
            path: path.to_path_buf(),
            source,
        })
    })
}
