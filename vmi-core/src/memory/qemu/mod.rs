//! A live QEMU guest: its guest RAM, its guest-physical memory map, vCPU registers and
//! pause/resume.
//!
//! Guest RAM is read one of two ways:
//! - **A shared RAM file** (the fast path): a `memory-backend-file` with `share=on`,
//!   e.g. `-object memory-backend-file,id=ram,size=1G,mem-path=/dev/shm/guest.ram,share=on
//!   -machine pc,memory-backend=ram`, mapped read-only.
//! - **The QEMU process** (`process.rs`): every other backend (QEMU's default anonymous
//!   RAM, `memory-backend-ram`, memfd, hugepages, a file mapped with `share=off`), read
//!   from QEMU's address space, as libvirt and other managers run their VMs.
//!
//! The layout and the rest come from QEMU's monitor when there is one: [`QemuLive::connect`]
//! takes the QMP socket (`-qmp unix:PATH,server=on,wait=off`), finds the backend (the
//! only one, or the one named), and reads where each guest-physical range lives in it
//! from the flat view of `info mtree -f` (a backend can appear at several places: below
//! and above 4 GiB, ROM shadows, each with its own offset). [`QemuLive::attach`] takes
//! QEMU's pid and works without a monitor too, because a manager may own the only one:
//! the layout then comes from QEMU's command line (`cmdline.rs`, pc and q35 machines),
//! and there are no registers and no pause. [`QemuLive::attach_libvirt`] takes a libvirt
//! domain: RAM through its process, the monitor through libvirt's pass-through
//! (`memory::libvirt`), so libvirt keeps the only connection to QEMU's monitor.
//! Whichever way, the monitor is a [`Monitor`] (`memory/monitor.rs`).
//!
//! Registers come from `info registers` on each vCPU (`human-monitor-command` with
//! `cpu-index`): CR0, CR2, CR3, CR4, EFER, general registers, segments, GDT/IDT. QEMU
//! does not print `KERNEL_GS_BASE`. A vCPU in 32-bit compatibility mode (a 32-bit user
//! process) is printed with 32-bit general registers and segment bases; the control
//! registers stay complete.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};

use crate::addr::Pa;
use crate::arch::x86_64::Registers;
use crate::error::{Error, PhysError};
use crate::memory::file::{Backing, MappedFile, Segment, SegmentMap, Warnings};
use crate::memory::libvirt::{LibvirtDomain, LibvirtMonitor};
use crate::memory::monitor::Monitor;
use crate::memory::qmp::QmpClient;
use crate::memory::{PauseResume, PhysRange, PhysicalMemory, VcpuRegisters};

mod cmdline;
mod hmp;
mod pages;
mod process;

pub use cmdline::{Backend, CommandLine, CommandLineError};
pub use hmp::{parse_info_registers, parse_mtree};
pub use pages::Stats as ProcessReadStats;
use process::{BlockHint, ProcessRam};

/// How to attach to a live QEMU guest.
#[derive(Debug, Clone)]
pub struct QemuOptions {
    /// The memory backend's id (`-object memory-backend-file,id=...`); `None` takes the
    /// only backend QEMU has.
    pub backend: Option<String>,
    /// The RAM file; `None` asks QEMU for the backend's `mem-path`.
    pub ram_path: Option<PathBuf>,
    /// Read RAM through the QEMU process even when a shared RAM file would do.
    pub through_process: bool,
    /// Timeout of connecting and of each QMP command.
    pub timeout: Duration,
}

impl Default for QemuOptions {
    fn default() -> Self {
        QemuOptions {
            backend: None,
            ram_path: None,
            through_process: false,
            timeout: Duration::from_secs(30),
        }
    }
}

/// One guest-physical range of RAM and where it is in the RAM file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRegion {
    /// First guest-physical address.
    pub start: Pa,
    /// One past the last.
    pub end: Pa,
    /// Offset of `start` in the RAM file (or RAM block).
    pub file_offset: u64,
}

/// Where guest RAM is read from.
#[derive(Debug)]
enum Ram {
    File(MappedFile),
    Process(Box<ProcessRam>),
}

impl Ram {
    fn len(&self) -> u64 {
        match self {
            Ram::File(f) => f.len(),
            Ram::Process(p) => p.len(),
        }
    }
}

/// Largest `/proc/PID/cmdline` read.
const MAX_CMDLINE: u64 = 1 << 20;

/// A running (or paused) QEMU guest.
#[derive(Debug)]
pub struct QemuLive {
    /// The monitor (QMP socket or libvirt); `None` when attached by pid without one.
    qmp: Option<Mutex<Box<dyn Monitor>>>,
    backend: String,
    ram: Ram,
    regions: Vec<RamRegion>,
    map: SegmentMap,
    cpus: Vec<i64>,
    warnings: Vec<String>,
}

fn qemu_err(what: impl Into<String>) -> Error {
    Error::Qemu(what.into())
}

/// What QMP says of a memory backend.
struct BackendInfo {
    size: u64,
    share: Option<bool>,
    mem_path: Option<String>,
    /// `offset` (QEMU 8.2 and later): where guest RAM starts in the file.
    base: u64,
}

fn backend_info(qmp: &mut dyn Monitor, backend: &str) -> Result<BackendInfo, Error> {
    let object = format!("/objects/{backend}");
    let mut qom =
        |prop: &str| qmp.execute("qom-get", Some(json!({ "path": object, "property": prop })));
    let size = qom("size")
        .map_err(|e| qemu_err(format!("memory backend {backend:?}: {e}")))?
        .as_u64()
        .ok_or_else(|| qemu_err(format!("memory backend {backend:?} has no numeric size")))?;
    let share = match qom("share") {
        Ok(Value::Bool(b)) => Some(b),
        _ => None,
    };
    let mem_path = match qom("mem-path") {
        Ok(Value::String(p)) if !p.is_empty() => Some(p),
        _ => None,
    };
    let base = qom("offset").ok().and_then(|v| v.as_u64()).unwrap_or(0);
    Ok(BackendInfo {
        size,
        share,
        mem_path,
        base,
    })
}

/// The regions of `backend` in `info mtree -f`, those that fit in the backend's `size`,
/// moved by `base` (the backend's offset in its file).
fn monitor_regions(
    qmp: &mut dyn Monitor,
    backend: &str,
    size: u64,
    base: u64,
    warnings: &mut Warnings,
) -> Result<Vec<RamRegion>, Error> {
    let text = qmp.hmp("info mtree -f", None)?;
    let mut regions = parse_mtree(&text, backend);
    regions.retain(|r| {
        let ok = r
            .file_offset
            .checked_add(r.end.0 - r.start.0)
            .is_some_and(|e| e <= size);
        if !ok {
            warnings.push(format!(
                "range {}..{} at backend offset {:#x} passes the backend's size {size:#x}; ignored",
                r.start, r.end, r.file_offset
            ));
        }
        ok
    });
    for r in &mut regions {
        r.file_offset += base;
    }
    if regions.is_empty() {
        return Err(qemu_err(format!(
            "the memory map (info mtree -f) shows no range of backend {backend:?}"
        )));
    }
    Ok(regions)
}

/// Whether `ram` holds the guest's RAM: 64 bytes at up to 8 places compared with what
/// QEMU's monitor reads there (`xp`). A running guest may change a place between the two
/// reads, so most of the places that hold data must agree, not all.
fn monitor_agrees(
    qmp: &mut dyn Monitor,
    regions: &[RamRegion],
    ram: &ProcessRam,
) -> Result<bool, Error> {
    let mut places = Vec::new();
    for r in regions.iter().filter(|r| r.end.0 - r.start.0 >= 1 << 20) {
        let len = r.end.0 - r.start.0;
        for k in 1..=4u64 {
            let pa = (r.start.0 + len * k / 5) & !0xfff;
            places.push((pa, r.file_offset + (pa - r.start.0)));
        }
    }
    places.truncate(8);
    let (mut agree, mut data) = (0, 0);
    for (pa, off) in places {
        let text = qmp.hmp(&format!("xp /8gx {pa:#x}"), None)?;
        let words: Vec<u64> = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .flat_map(|(_, rest)| rest.split_whitespace())
            .filter_map(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16).ok())
            .collect();
        let mut buf = [0u8; 64];
        if words.len() != 8 || ram.copy_out(off, &mut buf).is_err() {
            continue;
        }
        let mine: Vec<u64> = buf
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        if words.iter().any(|&w| w != 0) {
            data += 1;
            if mine == words {
                agree += 1;
            }
        }
    }
    Ok(data > 0 && agree * 2 > data)
}

impl QemuLive {
    /// Attach to the QEMU whose QMP socket is `qmp_socket`. The session stays open
    /// (QEMU serves one QMP client at a time) until this value is dropped. RAM comes
    /// from the backend's shared file when it has one, else from the QEMU process (the
    /// socket's peer).
    pub fn connect(qmp_socket: impl AsRef<Path>, opts: &QemuOptions) -> Result<QemuLive, Error> {
        let qmp = QmpClient::connect(qmp_socket.as_ref(), opts.timeout)?;
        Self::with_monitor(Box::new(qmp), opts, None)
    }

    /// Attach to the QEMU process `pid`. With `qmp_socket` (which must be that
    /// process's) everything works as with [`QemuLive::connect`], RAM read through the
    /// process; without, the memory map comes from QEMU's command line and the guest
    /// can be read but not paused, and its registers are not known.
    pub fn attach(
        pid: i32,
        qmp_socket: Option<&Path>,
        opts: &QemuOptions,
    ) -> Result<QemuLive, Error> {
        let cmd = command_line(pid)?;
        if !cmd.is_qemu() {
            return Err(qemu_err(format!(
                "process {pid} is not QEMU (it runs {:?})",
                cmd.program
            )));
        }
        if let Some(socket) = qmp_socket {
            let qmp = QmpClient::connect(socket, opts.timeout)?;
            return Self::with_monitor(Box::new(qmp), opts, Some(pid));
        }
        let cmd_err = |e: CommandLineError| qemu_err(format!("QEMU process {pid}: {e}"));
        let backend = match &opts.backend {
            Some(b) => b.clone(),
            None => cmd.ram_backend().map_err(cmd_err)?,
        };
        let object = cmd.backend(&backend);
        let hint = BlockHint {
            id: backend.clone(),
            size: object.and_then(|b| b.size).unwrap_or(cmd.ram_size),
            mem_path: object.and_then(|b| b.mem_path.clone()),
        };
        let regions = cmd.layout().map_err(cmd_err)?;
        let ram = ProcessRam::find(pid, &hint, &mut |_| Ok(false))?;
        let mut warnings = Warnings::default();
        let mut live = QemuLive {
            qmp: None,
            backend,
            ram: Ram::Process(Box::new(ram)),
            regions: Vec::new(),
            map: SegmentMap::default(),
            cpus: Vec::new(),
            warnings: Vec::new(),
        };
        live.set_regions(regions, &mut warnings);
        live.warnings = warnings.into_vec();
        Ok(live)
    }

    /// Attach to the QEMU of libvirt domain `name` at `uri` (e.g. `qemu:///system`):
    /// RAM read through its process (found by libvirt's pid file or the domain's UUID
    /// on QEMU's command line), the monitor through libvirt
    /// ([`LibvirtMonitor`]: registers, pause/resume, the memory map), never through the
    /// monitor socket libvirt owns.
    pub fn attach_libvirt(name: &str, uri: &str, opts: &QemuOptions) -> Result<QemuLive, Error> {
        let domain = LibvirtDomain::open(uri, name)?;
        let pid = domain.qemu_pid()?;
        let monitor = LibvirtMonitor::new(domain, pid);
        let mut opts = opts.clone();
        opts.through_process = true;
        Self::with_monitor(Box::new(monitor), &opts, Some(pid))
    }

    fn with_monitor(
        mut qmp: Box<dyn Monitor>,
        opts: &QemuOptions,
        expect_pid: Option<i32>,
    ) -> Result<QemuLive, Error> {
        let peer = qmp.qemu_pid();
        if let (Some(want), Ok(got)) = (expect_pid, &peer) {
            if want != *got {
                return Err(qemu_err(format!(
                    "{} belongs to process {got}, not to QEMU process {want}",
                    qmp.describe()
                )));
            }
        }
        let backend = match &opts.backend {
            Some(b) => b.clone(),
            None => only_backend(qmp.as_mut())?,
        };
        let info = backend_info(qmp.as_mut(), &backend)?;
        let mut warnings = Warnings::default();
        let regions = monitor_regions(qmp.as_mut(), &backend, info.size, info.base, &mut warnings)?;
        let file = opts
            .ram_path
            .clone()
            .or(info.mem_path.clone().map(PathBuf::from));
        let ram = match file {
            Some(path)
                if !opts.through_process && expect_pid.is_none() && info.share != Some(false) =>
            {
                Ram::File(open_ram_file(&path, &backend, info.size, info.base)?)
            }
            _ => {
                let pid = match (expect_pid, peer) {
                    (Some(p), _) => p,
                    (None, Ok(p)) => p,
                    (None, Err(e)) => {
                        return Err(qemu_err(format!(
                            "memory backend {backend:?} has no shared file and the QEMU process behind {} is unknown: {e}",
                            qmp.describe()
                        )))
                    }
                };
                let hint = BlockHint {
                    id: backend.clone(),
                    size: info.size,
                    mem_path: info.mem_path.clone(),
                };
                let found = ProcessRam::find(pid, &hint, &mut |r| {
                    monitor_agrees(qmp.as_mut(), &regions, r)
                })?;
                Ram::Process(Box::new(found))
            }
        };
        let cpus = query_cpus(qmp.as_mut())?;
        let mut live = QemuLive {
            qmp: Some(Mutex::new(qmp)),
            backend,
            ram,
            regions: Vec::new(),
            map: SegmentMap::default(),
            cpus,
            warnings: Vec::new(),
        };
        live.set_regions(regions, &mut warnings);
        live.warnings = warnings.into_vec();
        Ok(live)
    }

    fn set_regions(&mut self, regions: Vec<RamRegion>, warnings: &mut Warnings) {
        let segs = regions
            .iter()
            .map(|r| Segment {
                start: r.start.0,
                end: r.end.0,
                backing: Backing::File(r.file_offset),
            })
            .collect();
        self.map = SegmentMap::build(segs, self.ram.len(), warnings);
        self.regions = regions;
    }

    /// Read the memory map again (after memory hot-plug or a machine reset). Without a
    /// monitor the map is the command line's and does not change.
    pub fn refresh_memory_map(&mut self) -> Result<(), Error> {
        if self.qmp.is_none() {
            return Ok(());
        }
        let backend = self.backend.clone();
        let mut warnings = Warnings::default();
        let regions = {
            let mut s = self.session()?;
            let info = backend_info(s.as_mut(), &backend)?;
            monitor_regions(s.as_mut(), &backend, info.size, info.base, &mut warnings)?
        };
        self.set_regions(regions, &mut warnings);
        self.warnings = warnings.into_vec();
        Ok(())
    }

    fn session(&self) -> Result<MutexGuard<'_, Box<dyn Monitor>>, Error> {
        self.qmp
            .as_ref()
            .ok_or_else(|| {
                qemu_err("attached without QEMU's monitor: this needs the QMP socket (registers, pause, QMP commands)")
            })?
            .lock()
            .map_err(|_| qemu_err("the QMP session was poisoned by a panic in another thread"))
    }

    /// Run any QMP command on the session.
    pub fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value, Error> {
        self.session()?.execute(command, arguments)
    }

    /// True when a QMP session is open (false when attached by pid alone).
    pub fn has_monitor(&self) -> bool {
        self.qmp.is_some()
    }

    /// The memory backend's id.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The RAM file, when RAM is read from one.
    pub fn ram_path(&self) -> Option<&Path> {
        match &self.ram {
            Ram::File(f) => Some(f.path()),
            Ram::Process(_) => None,
        }
    }

    /// How guest RAM is read, for the reader: the RAM file, the QEMU process's memfd
    /// mapped here, or copies through the QEMU process.
    pub fn ram_access(&self) -> String {
        match &self.ram {
            Ram::File(f) => format!("mapped file {}", f.path().display()),
            Ram::Process(p) if p.is_mapped() => {
                format!("memfd of QEMU process {}, mapped", p.pid())
            }
            Ram::Process(p) => format!("copied from QEMU process {} (process_vm_readv)", p.pid()),
        }
    }

    /// Reads and system calls so far, when RAM is read through the QEMU process.
    pub fn process_read_stats(&self) -> Option<ProcessReadStats> {
        match &self.ram {
            Ram::File(_) => None,
            Ram::Process(p) => Some(p.stats()),
        }
    }

    /// QEMU's pid, when RAM is read through the QEMU process.
    pub fn pid(&self) -> Option<i32> {
        match &self.ram {
            Ram::File(_) => None,
            Ram::Process(p) => Some(p.pid()),
        }
    }

    /// Guest-physical RAM ranges and their offsets in the RAM file, sorted by address.
    pub fn memory_map(&self) -> &[RamRegion] {
        &self.regions
    }

    /// What had to be skipped while reading the memory map.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// QEMU's command line, from `/proc/PID/cmdline`.
fn command_line(pid: i32) -> Result<CommandLine, Error> {
    let path = format!("/proc/{pid}/cmdline");
    let mut raw = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_CMDLINE).read_to_end(&mut raw))
        .map_err(|e| process::proc_err(pid, "reading its command line", &e))?;
    if raw.is_empty() {
        return Err(qemu_err(format!(
            "process {pid} has no command line (a kernel thread, or it is exiting)"
        )));
    }
    CommandLine::parse(&raw).map_err(|e| qemu_err(format!("QEMU process {pid}: {e}")))
}

/// Map the shared RAM file of `backend`.
fn open_ram_file(path: &Path, backend: &str, size: u64, base: u64) -> Result<MappedFile, Error> {
    if path.is_dir() {
        return Err(qemu_err(format!(
            "the mem-path of backend {backend:?} is the directory {}: QEMU made an unlinked file in it that cannot be opened; give mem-path a file name",
            path.display()
        )));
    }
    let file = MappedFile::open(path, "guest RAM file")?;
    if file.len() < base.saturating_add(size) {
        return Err(qemu_err(format!(
            "the RAM file {} has {} bytes, the backend {backend:?} {size} from offset {base}",
            path.display(),
            file.len()
        )));
    }
    Ok(file)
}

/// The id of QEMU's only memory backend.
fn only_backend(qmp: &mut dyn Monitor) -> Result<String, Error> {
    let list = qmp.execute("query-memdev", None)?;
    let ids: Vec<String> = list
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    match ids.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(qemu_err(
            "QEMU has no memory backend object: start it with -object memory-backend-file,...,share=on and -machine memory-backend=ID",
        )),
        many => Err(qemu_err(format!(
            "QEMU has {} memory backends ({}); name one in QemuOptions::backend",
            many.len(),
            many.join(", ")
        ))),
    }
}

/// The vCPUs' `cpu-index` values, sorted.
fn query_cpus(qmp: &mut dyn Monitor) -> Result<Vec<i64>, Error> {
    let list = qmp.execute("query-cpus-fast", None)?;
    let mut cpus: Vec<i64> = list
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("cpu-index").and_then(Value::as_i64))
                .collect()
        })
        .unwrap_or_default();
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        return Err(qemu_err("query-cpus-fast lists no vCPU"));
    }
    Ok(cpus)
}

impl PhysicalMemory for QemuLive {
    fn read_phys(&self, pa: Pa, buf: &mut [u8]) -> Result<(), PhysError> {
        match &self.ram {
            Ram::File(f) => self.map.read(f, pa, buf),
            Ram::Process(p) => self
                .map
                .read_with(pa, buf, |off, dst| p.read(off, dst).map_err(|e| e.kind())),
        }
    }

    fn invalidate(&self) {
        if let Ram::Process(p) = &self.ram {
            p.invalidate();
        }
    }

    fn ranges(&self) -> &[PhysRange] {
        self.map.ranges()
    }
}

impl VcpuRegisters for QemuLive {
    fn vcpu_count(&self) -> usize {
        self.cpus.len()
    }

    fn registers(&self, vcpu: usize) -> Result<Registers, Error> {
        let &index = self.cpus.get(vcpu).ok_or(Error::NoSuchVcpu {
            vcpu,
            count: self.cpus.len(),
        })?;
        let text = self.session()?.hmp("info registers", Some(index))?;
        parse_info_registers(&text).map_err(|why| Error::RegistersUnavailable { vcpu, why })
    }
}

impl PauseResume for QemuLive {
    fn pause(&self) -> Result<(), Error> {
        self.session()?.pause()
    }

    fn resume(&self) -> Result<(), Error> {
        self.session()?.resume()
    }

    /// Without a monitor: true while the QEMU process runs (whether its vCPUs are
    /// paused cannot be seen), an error once it has exited.
    fn is_running(&self) -> Result<bool, Error> {
        if self.qmp.is_none() {
            return match &self.ram {
                Ram::Process(p) => p.alive().map(|()| true),
                Ram::File(_) => Err(qemu_err("no QEMU monitor")),
            };
        }
        if let Ram::Process(p) = &self.ram {
            p.alive()?;
        }
        self.session()?.running()
    }
}
