//! A live QEMU guest: guest RAM from the `memory-backend-file` mapped read-only,
//! the guest-physical memory map, vCPU registers and pause/resume over QMP.
//!
//! Setup (QEMU side): guest RAM in a shared file backend, e.g.
//! `-object memory-backend-file,id=ram,size=1G,mem-path=/dev/shm/guest.ram,share=on
//! -machine pc,memory-backend=ram`, and a QMP socket (`-qmp unix:PATH,server=on,wait=off`).
//! [`QemuLive::connect`] finds the backend (the only one, or the one named), its file
//! (`qom-get mem-path`), checks `share=on` (without it QEMU's writes never reach the
//! file), maps the file and reads where each guest-physical range lives in it from the
//! flat view of `info mtree -f` (a backend can appear at several places: below and
//! above 4 GiB, ROM shadows, each with its own offset into the file).
//!
//! Registers come from `info registers` on each vCPU (`human-monitor-command` with
//! `cpu-index`): CR0, CR2, CR3, CR4, EFER, general registers, segments, GDT/IDT. QEMU
//! does not print `KERNEL_GS_BASE`. A vCPU in 32-bit compatibility mode (a 32-bit user
//! process) is printed with 32-bit general registers and segment bases; the control
//! registers stay complete.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};

use crate::addr::Pa;
use crate::arch::x86_64::Registers;
use crate::error::{Error, PhysError};
use crate::memory::file::{Backing, MappedFile, Segment, SegmentMap, Warnings};
use crate::memory::qmp::QmpClient;
use crate::memory::{PauseResume, PhysRange, PhysicalMemory, VcpuRegisters};

mod hmp;

pub use hmp::{parse_info_registers, parse_mtree};

/// How to attach to a live QEMU guest.
#[derive(Debug, Clone)]
pub struct QemuOptions {
    /// The memory backend's id (`-object memory-backend-file,id=...`); `None` takes the
    /// only backend QEMU has.
    pub backend: Option<String>,
    /// The RAM file; `None` asks QEMU for the backend's `mem-path`.
    pub ram_path: Option<PathBuf>,
    /// Timeout of connecting and of each QMP command.
    pub timeout: Duration,
}

impl Default for QemuOptions {
    fn default() -> Self {
        QemuOptions {
            backend: None,
            ram_path: None,
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
    /// Offset of `start` in the RAM file.
    pub file_offset: u64,
}

/// A running (or paused) QEMU guest.
#[derive(Debug)]
pub struct QemuLive {
    qmp: Mutex<QmpClient>,
    backend: String,
    file: MappedFile,
    regions: Vec<RamRegion>,
    map: SegmentMap,
    cpus: Vec<i64>,
    warnings: Vec<String>,
}

fn qemu_err(what: impl Into<String>) -> Error {
    Error::Qemu(what.into())
}

impl QemuLive {
    /// Attach to the QEMU whose QMP socket is `qmp_socket`. The session stays open
    /// (QEMU serves one QMP client at a time) until this value is dropped.
    pub fn connect(qmp_socket: impl AsRef<Path>, opts: &QemuOptions) -> Result<QemuLive, Error> {
        let mut qmp = QmpClient::connect(qmp_socket.as_ref(), opts.timeout)?;
        let backend = match &opts.backend {
            Some(b) => b.clone(),
            None => only_backend(&mut qmp)?,
        };
        let object = format!("/objects/{backend}");
        let qom = |qmp: &mut QmpClient, prop: &str| {
            qmp.execute("qom-get", Some(json!({ "path": object, "property": prop })))
        };
        let size = qom(&mut qmp, "size")
            .map_err(|e| qemu_err(format!("memory backend {backend:?}: {e}")))?
            .as_u64()
            .ok_or_else(|| qemu_err(format!("memory backend {backend:?} has no numeric size")))?;
        if let Ok(Value::Bool(false)) = qom(&mut qmp, "share") {
            return Err(qemu_err(format!(
                "memory backend {backend:?} is not shared (share=off): QEMU's writes never reach its file; start QEMU with share=on"
            )));
        }
        let ram_path = match &opts.ram_path {
            Some(p) => p.clone(),
            None => match qom(&mut qmp, "mem-path") {
                Ok(Value::String(p)) if !p.is_empty() => PathBuf::from(p),
                _ => {
                    return Err(qemu_err(format!(
                        "memory backend {backend:?} has no mem-path (is it a memory-backend-file?); give the RAM file in QemuOptions::ram_path"
                    )))
                }
            },
        };
        if ram_path.is_dir() {
            return Err(qemu_err(format!(
                "the mem-path of backend {backend:?} is the directory {}: QEMU made an unlinked file in it that cannot be opened; give mem-path a file name",
                ram_path.display()
            )));
        }
        // memory-backend-file's `offset` property (QEMU 8.2 and later): where guest RAM
        // starts in the file
        let base = match qom(&mut qmp, "offset") {
            Ok(v) => v.as_u64().unwrap_or(0),
            Err(_) => 0,
        };
        let file = MappedFile::open(&ram_path, "guest RAM file")?;
        if file.len() < base.saturating_add(size) {
            return Err(qemu_err(format!(
                "the RAM file {} has {} bytes, the backend {backend:?} {size} from offset {base}",
                ram_path.display(),
                file.len()
            )));
        }
        let cpus = query_cpus(&mut qmp)?;
        let mut live = QemuLive {
            qmp: Mutex::new(qmp),
            backend,
            file,
            regions: Vec::new(),
            map: SegmentMap::default(),
            cpus,
            warnings: Vec::new(),
        };
        live.load_memory_map(base, size)?;
        Ok(live)
    }

    fn load_memory_map(&mut self, base: u64, size: u64) -> Result<(), Error> {
        let text = self.session()?.hmp("info mtree -f", None)?;
        let mut regions = parse_mtree(&text, &self.backend);
        let mut warnings = Warnings::default();
        regions.retain(|r| {
            let ok = r.file_offset.checked_add(r.end.0 - r.start.0).is_some_and(|e| e <= size);
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
                "the memory map (info mtree -f) shows no range of backend {:?}",
                self.backend
            )));
        }
        let segs = regions
            .iter()
            .map(|r| Segment {
                start: r.start.0,
                end: r.end.0,
                backing: Backing::File(r.file_offset),
            })
            .collect();
        self.map = SegmentMap::build(segs, self.file.len(), &mut warnings);
        self.regions = regions;
        self.warnings = warnings.into_vec();
        Ok(())
    }

    /// Read the memory map again (after memory hot-plug or a machine reset).
    pub fn refresh_memory_map(&mut self) -> Result<(), Error> {
        let size = self
            .session()?
            .execute(
                "qom-get",
                Some(json!({ "path": format!("/objects/{}", self.backend), "property": "size" })),
            )?
            .as_u64()
            .unwrap_or(self.file.len());
        let base = self
            .session()?
            .execute(
                "qom-get",
                Some(json!({ "path": format!("/objects/{}", self.backend), "property": "offset" })),
            )
            .ok()
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        self.load_memory_map(base, size)
    }

    fn session(&self) -> Result<MutexGuard<'_, QmpClient>, Error> {
        self.qmp
            .lock()
            .map_err(|_| qemu_err("the QMP session was poisoned by a panic in another thread"))
    }

    /// Run any QMP command on the session.
    pub fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value, Error> {
        Ok(self.session()?.execute(command, arguments)?)
    }

    /// The memory backend's id.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The RAM file.
    pub fn ram_path(&self) -> &Path {
        self.file.path()
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

/// The id of QEMU's only memory backend.
fn only_backend(qmp: &mut QmpClient) -> Result<String, Error> {
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
fn query_cpus(qmp: &mut QmpClient) -> Result<Vec<i64>, Error> {
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
        self.map.read(&self.file, pa, buf)
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
        self.execute("stop", None).map(|_| ())
    }

    fn resume(&self) -> Result<(), Error> {
        self.execute("cont", None).map(|_| ())
    }

    fn is_running(&self) -> Result<bool, Error> {
        let status = self.execute("query-status", None)?;
        status
            .get("running")
            .and_then(Value::as_bool)
            .ok_or_else(|| qemu_err(format!("query-status without \"running\": {status}")))
    }
}
