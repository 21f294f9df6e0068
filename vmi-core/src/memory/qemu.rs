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
use crate::arch::x86_64::{DescriptorTable, Registers, Segment as SegReg};
use crate::error::{Error, PhysError};
use crate::memory::file::{Backing, MappedFile, Segment, SegmentMap, Warnings};
use crate::memory::qmp::QmpClient;
use crate::memory::{PauseResume, PhysRange, PhysicalMemory, VcpuRegisters};

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

/// The ranges of `backend` in the flat view of the `memory` address space, from the
/// text of `info mtree -f` (lines like
/// `0000000000100000-000000003fffffff (prio 0, ram): lab-ram @0000000000100000`),
/// with ranges contiguous in both address spaces merged.
pub fn parse_mtree(text: &str, backend: &str) -> Vec<RamRegion> {
    let mut out: Vec<RamRegion> = Vec::new();
    let mut in_memory = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("FlatView") {
            in_memory = false;
            continue;
        }
        if t.starts_with("AS \"memory\"") {
            in_memory = true;
            continue;
        }
        if !in_memory {
            continue;
        }
        let Some((span, rest)) = t.split_once(' ') else {
            continue;
        };
        let Some((a, b)) = span.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(last)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        let Some((kind, name)) = rest.split_once("): ") else {
            continue;
        };
        if !(kind.ends_with(" ram") || kind.ends_with(" rom")) || last < start {
            continue;
        }
        let mut words = name.split_whitespace();
        if words.next() != Some(backend) {
            continue;
        }
        let offset = words
            .find_map(|w| w.strip_prefix('@'))
            .and_then(|w| u64::from_str_radix(w, 16).ok())
            .unwrap_or(0);
        let Some(end) = last.checked_add(1) else {
            continue;
        };
        let r = RamRegion {
            start: Pa(start),
            end: Pa(end),
            file_offset: offset,
        };
        match out.last_mut() {
            Some(p)
                if p.end == r.start && p.file_offset + (p.end.0 - p.start.0) == r.file_offset =>
            {
                p.end = r.end
            }
            _ => out.push(r),
        }
    }
    out.sort_by_key(|r| r.start);
    out
}

fn hex(v: &str) -> Option<u64> {
    u64::from_str_radix(v, 16).ok()
}

/// Registers from the text of `info registers` on one x86 vCPU (QEMU's
/// `x86_cpu_dump_state`). Fails when CR0, CR3 or CR4 is missing.
pub fn parse_info_registers(text: &str) -> Result<Registers, String> {
    let mut r = Registers::default();
    let mut seen_cr3 = false;
    let mut seen_cr0 = false;
    let mut seen_cr4 = false;
    for line in text.lines() {
        let l = line.trim();
        if let Some((name, rest)) = l.split_once('=') {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let seg = || SegReg {
                selector: words.first().and_then(|w| hex(w)).unwrap_or(0) as u16,
                base: words.get(1).and_then(|w| hex(w)).unwrap_or(0),
                limit: words.get(2).and_then(|w| hex(w)).unwrap_or(0) as u32,
                flags: words.get(3).and_then(|w| hex(w)).unwrap_or(0) as u32,
            };
            let table = || DescriptorTable {
                base: words.first().and_then(|w| hex(w)).unwrap_or(0),
                limit: words.get(1).and_then(|w| hex(w)).unwrap_or(0) as u32,
            };
            match name.trim() {
                "ES" => r.es = seg(),
                "CS" => r.cs = seg(),
                "SS" => r.ss = seg(),
                "DS" => r.ds = seg(),
                "FS" => r.fs = seg(),
                "GS" => r.gs = seg(),
                "LDT" | "TR" => {}
                "GDT" => r.gdt = table(),
                "IDT" => r.idt = table(),
                _ => {
                    // `R8 =0000...` → `R8=0000...`
                    let norm = l.replace(" =", "=");
                    for tok in norm.split_whitespace() {
                        let Some((k, v)) = tok.split_once('=') else {
                            continue;
                        };
                        let Some(v) = hex(v) else {
                            continue;
                        };
                        match k {
                            "RAX" | "EAX" => r.rax = v,
                            "RBX" | "EBX" => r.rbx = v,
                            "RCX" | "ECX" => r.rcx = v,
                            "RDX" | "EDX" => r.rdx = v,
                            "RSI" | "ESI" => r.rsi = v,
                            "RDI" | "EDI" => r.rdi = v,
                            "RBP" | "EBP" => r.rbp = v,
                            "RSP" | "ESP" => r.rsp = v,
                            "R8" => r.r[0] = v,
                            "R9" => r.r[1] = v,
                            "R10" => r.r[2] = v,
                            "R11" => r.r[3] = v,
                            "R12" => r.r[4] = v,
                            "R13" => r.r[5] = v,
                            "R14" => r.r[6] = v,
                            "R15" => r.r[7] = v,
                            "RIP" | "EIP" => r.rip = v,
                            "RFL" | "EFL" => r.rflags = v,
                            "CR0" => {
                                r.cr0 = v;
                                seen_cr0 = true;
                            }
                            "CR2" => r.cr2 = v,
                            "CR3" => {
                                r.cr3 = v;
                                seen_cr3 = true;
                            }
                            "CR4" => {
                                r.cr4 = v;
                                seen_cr4 = true;
                            }
                            "EFER" => r.efer = Some(v),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    if !(seen_cr0 && seen_cr3 && seen_cr4) {
        let first = text.lines().next().unwrap_or_default();
        return Err(format!(
            "no CR0/CR3/CR4 in the output of info registers (it begins {:?})",
            &first[..first.len().min(80)]
        ));
    }
    Ok(r)
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

#[cfg(test)]
mod tests {
    use super::*;

    const MTREE: &str = "FlatView #0\n AS \"memory\", root: system\n AS \"cpu-memory-0\", root: system\n Root memory region: system\n  0000000000000000-000000000009ffff (prio 0, ram): ram0\n  00000000000a0000-00000000000bffff (prio 1, i/o): vga-lowmem\n  00000000000c0000-00000000000cafff (prio 0, rom): ram0 @00000000000c0000\n  00000000000cb000-00000000000cdfff (prio 0, ram): ram0 @00000000000cb000\n  0000000000100000-000000007fffffff (prio 0, ram): ram0 @0000000000100000 KVM\n  0000000100000000-000000017fffffff (prio 0, ram): ram0 @0000000080000000 KVM\n  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios\n  00000000fed00000-00000000fed003ff (prio 0, i/o): hpet\n\nFlatView #1\n AS \"cpu-smm-0\", root: memory\n  0000000000000000-00000000000bffff (prio 0, ram): ram0\n";

    #[test]
    fn mtree_ranges_with_offsets_above_4g() {
        let m = parse_mtree(MTREE, "ram0");
        let r = |s: u64, e: u64, o: u64| RamRegion {
            start: Pa(s),
            end: Pa(e),
            file_offset: o,
        };
        assert_eq!(
            m,
            vec![
                r(0, 0xa0000, 0),
                r(0xc0000, 0xce000, 0xc0000),
                r(0x100000, 0x8000_0000, 0x100000),
                r(0x1_0000_0000, 0x1_8000_0000, 0x8000_0000),
            ]
        );
        assert!(parse_mtree(MTREE, "other").is_empty());
        assert!(parse_mtree("garbage\n-\n0-1 (x): ram0\n", "ram0").is_empty());
    }

    const REGS64: &str =
        "RAX=0000000000000000 RBX=ffffffff82a13940 RCX=0000000000000001 RDX=0000000000000002\r
RSI=0000000000000083 RDI=0000000000000000 RBP=0000000000000000 RSP=ffffffff82a03e80\r
R8 =0000000000000001 R9 =0000000000000002 R10=0000000000000003 R11=0000000000000004\r
R12=0000000000000005 R13=0000000000000006 R14=0000000000000007 R15=0000000000000008\r
RIP=ffffffff81e0b1be RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\r
ES =0000 0000000000000000 00000000 00000000\r
CS =0010 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]\r
SS =0018 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]\r
DS =0000 0000000000000000 00000000 00000000\r
FS =0000 0000000000000000 00000000 00000000\r
GS =0000 ffff88803ec00000 00000000 00000000\r
LDT=0000 0000000000000000 00000000 00008200 DPL=0 LDT\r
TR =0040 fffffe0000003000 00004087 00008900 DPL=0 TSS64-avl\r
GDT=     fffffe0000001000 0000007f\r
IDT=     fffffe0000000000 00000fff\r
CR0=80050033 CR2=00007f2b7e5ff000 CR3=000000000260a000 CR4=00350ef0\r
DR0=0000000000000000 DR1=0000000000000000 DR2=0000000000000000 DR3=0000000000000000 \r
DR6=00000000ffff0ff0 DR7=0000000000000400\r
EFER=0000000000000d01\r
FCW=037f FSW=0000 [ST=0] FTW=00 MXCSR=00001f80\r
FPR0=0000000000000000 0000 FPR1=0000000000000000 0000\r
XMM00=0000000000000000 0000000000000000 XMM01=0000000000000000 0000000000000000\r
";

    #[test]
    fn info_registers_64() {
        let r = parse_info_registers(REGS64).unwrap();
        assert_eq!(r.rbx, 0xffff_ffff_82a1_3940);
        assert_eq!(r.rsp, 0xffff_ffff_82a0_3e80);
        assert_eq!(r.r, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(r.rip, 0xffff_ffff_81e0_b1be);
        assert_eq!(r.rflags, 0x246);
        assert_eq!(r.cs.selector, 0x10);
        assert_eq!(r.cs.flags, 0x00af_9b00);
        assert_eq!(r.ss.limit, 0xffff_ffff);
        assert_eq!(r.gs.base, 0xffff_8880_3ec0_0000);
        assert_eq!(r.gdt.base, 0xffff_fe00_0000_1000);
        assert_eq!(r.idt.limit, 0xfff);
        assert_eq!(
            (r.cr0, r.cr2, r.cr3, r.cr4),
            (0x8005_0033, 0x7f2b_7e5f_f000, 0x260_a000, 0x0035_0ef0)
        );
        assert_eq!(r.efer, Some(0xd01));
        assert_eq!(r.cpl(), 0);
        assert!(r.page_table_root().is_ok());
    }

    #[test]
    fn info_registers_compat_mode_and_garbage() {
        let text = "EAX=00000001 EBX=00000002 ECX=00000003 EDX=00000004\nESI=0 EDI=0 EBP=0 ESP=ffffd000\nEIP=08049000 EFL=00000202 [-------] CPL=3 II=0 A20=1 SMM=0 HLT=0\nCS =0023 00000000 ffffffff 00cffb00 DPL=3 CS32 [-RA]\nGDT=     fffffe0000001000 0000007f\nCR0=80050033 CR2=0000000008049000 CR3=0000000003a1e000 CR4=00350ef0\nEFER=0000000000000d01\n";
        let r = parse_info_registers(text).unwrap();
        assert_eq!((r.rax, r.rip, r.cpl()), (1, 0x0804_9000, 3));
        assert_eq!(r.cr3, 0x3a1_e000);
        assert!(parse_info_registers("unknown command: 'info registerz'").is_err());
        assert!(parse_info_registers("").is_err());
        assert!(parse_info_registers("CR0=zz CR3= CR4=\n= = =\n").is_err());
    }
}
