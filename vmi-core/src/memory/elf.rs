//! ELF cores of guest memory: QEMU `dump-guest-memory` (and `virsh dump
//! --memory-only`), kdump-style cores.
//!
//! - `PT_LOAD` segments give guest-physical ranges (`p_paddr`); bytes past `p_filesz`
//!   up to `p_memsz` read as zeros. Overlapping segments are clipped (the first
//!   one by address wins) and reported in [`ElfCore::warnings`].
//! - `QEMU` notes (type 0), one per vCPU, hold QEMU's `QEMUCPUState` version 1:
//!   general registers, RIP, RFLAGS, ten segment registers (selector, limit, flags, base)
//!   and CR0..CR4 (layout from QEMU's `target/i386/arch_dump.c`). They make the core a
//!   [`VcpuRegisters`] source.
//! - `CORE`/`NT_PRSTATUS` notes, one per vCPU, hold the general registers only
//!   ([`ElfCore::prstatus`]).
//! - A `VMCOREINFO` note (the guest's, handed to QEMU by `-device vmcoreinfo`) is
//!   parsed into [`VmcoreInfo`].
//!
//! Every offset and count in the file is checked against its size; a malformed header
//! is an [`Error::Format`], a malformed note is skipped with a warning.
//!
//! Our own reader rather than object's: a core needs the header, program headers and
//! notes only, and QEMU's CPU-state note and the overlap clipping are ours anyway.

use std::path::Path;

use crate::addr::Pa;
use crate::arch::x86_64::{DescriptorTable, Registers, Segment as SegReg};
use crate::error::{Error, PhysError};
use crate::memory::file::{Backing, MappedFile, Segment, SegmentMap, Warnings};
use crate::memory::{PhysRange, PhysicalMemory, VcpuRegisters};
use crate::vmcoreinfo::VmcoreInfo;

/// The first bytes of every ELF file.
pub(crate) const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const FORMAT: &str = "ELF core";

const ET_CORE: u16 = 4;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PN_XNUM: u16 = 0xffff;
const NT_PRSTATUS: u32 = 1;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;

/// Program headers read at most.
const MAX_PHDRS: usize = 1 << 20;
/// Notes read at most.
const MAX_NOTES: usize = 1 << 16;
/// vCPUs recorded at most.
const MAX_CPUS: usize = 8192;

/// Size of QEMU's `QEMUCPUState`, version 1.
const QEMU_CPU_STATE_SIZE: usize = 432;
/// Size of the x86-64 `elf_prstatus` QEMU writes.
const PRSTATUS_SIZE: usize = 336;
/// Offset of `pr_reg` in the x86-64 `elf_prstatus`.
const PRSTATUS_REGS: usize = 112;

/// The `NT_PRSTATUS` note of one vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrStatus {
    /// `pr_pid` (QEMU writes the vCPU number, from 1).
    pub pid: u32,
    /// General registers, RIP, RFLAGS, segment selectors and the FS/GS bases; control
    /// registers are 0 (the note has none).
    pub registers: Registers,
}

/// An ELF core, mapped read-only.
#[derive(Debug)]
pub struct ElfCore {
    file: MappedFile,
    map: SegmentMap,
    machine: u16,
    qemu_cpus: Vec<Registers>,
    prstatus: Vec<PrStatus>,
    vmcoreinfo: Option<VmcoreInfo>,
    warnings: Vec<String>,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// A slice of `len` bytes at `off`, when it is inside `b`.
fn span(b: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let off = usize::try_from(off).ok()?;
    let len = usize::try_from(len).ok()?;
    b.get(off..off.checked_add(len)?)
}

impl ElfCore {
    /// Map and parse the core.
    pub fn open(path: impl AsRef<Path>) -> Result<ElfCore, Error> {
        let file = MappedFile::open(path.as_ref(), FORMAT)?;
        let bad = |what: String| Error::Format {
            path: file.path().to_path_buf(),
            format: FORMAT,
            what,
        };
        let b = file.bytes();
        if b.len() < EHDR_SIZE || !b.starts_with(ELF_MAGIC) {
            return Err(bad("no ELF header".into()));
        }
        if b[4] != 2 {
            return Err(bad(format!(
                "ELF class {} is not ELFCLASS64 (QEMU writes 32-bit cores only for guests not in long mode)",
                b[4]
            )));
        }
        if b[5] != 1 {
            return Err(bad("not little-endian".into()));
        }
        let e_type = u16_at(b, 16).unwrap_or(0);
        if e_type != ET_CORE {
            return Err(bad(format!("e_type {e_type} is not ET_CORE")));
        }
        let machine = u16_at(b, 18).unwrap_or(0);
        if machine != EM_X86_64 && machine != EM_386 {
            return Err(bad(format!("e_machine {machine} is not x86")));
        }
        let phoff = u64_at(b, 32).unwrap_or(0);
        let shoff = u64_at(b, 40).unwrap_or(0);
        let phentsize = u16_at(b, 54).unwrap_or(0) as usize;
        let mut phnum = u16_at(b, 56).unwrap_or(0) as usize;
        if phnum == PN_XNUM as usize {
            // the real count is in section header 0's sh_info
            phnum = span(b, shoff, 64)
                .and_then(|sh| u32_at(sh, 44))
                .ok_or_else(|| bad("PN_XNUM without a section header 0".into()))?
                as usize;
        }
        if phentsize < PHDR_SIZE {
            return Err(bad(format!("e_phentsize {phentsize} is below {PHDR_SIZE}")));
        }
        if phnum > MAX_PHDRS {
            return Err(bad(format!(
                "{phnum} program headers (at most {MAX_PHDRS})"
            )));
        }
        let phdrs = span(b, phoff, (phnum * phentsize) as u64)
            .ok_or_else(|| bad("the program headers pass the end of the file".into()))?;

        let mut warnings = Warnings::default();
        let mut segs = Vec::new();
        let mut notes = Vec::new();
        for i in 0..phnum {
            let ph = &phdrs[i * phentsize..i * phentsize + PHDR_SIZE];
            let field = |o| u64_at(ph, o).unwrap_or(0);
            let (p_type, offset, paddr, filesz, memsz) = (
                u32_at(ph, 0).unwrap_or(0),
                field(8),
                field(24),
                field(32),
                field(40),
            );
            match p_type {
                PT_LOAD => {
                    let file_end = paddr.checked_add(filesz);
                    let mem_end = paddr.checked_add(memsz.max(filesz));
                    let (Some(file_end), Some(mem_end)) = (file_end, mem_end) else {
                        warnings.push(format!(
                            "PT_LOAD {i} at {paddr:#x} (+{memsz:#x}) passes 2^64; ignored"
                        ));
                        continue;
                    };
                    segs.push(Segment {
                        start: paddr,
                        end: file_end,
                        backing: Backing::File(offset),
                    });
                    if mem_end > file_end {
                        segs.push(Segment {
                            start: file_end,
                            end: mem_end,
                            backing: Backing::Zero,
                        });
                    }
                }
                PT_NOTE => match span(b, offset, filesz) {
                    Some(n) => notes.push(n),
                    None => warnings.push(format!(
                        "PT_NOTE {i} ({offset:#x}+{filesz:#x}) passes the end of the file; ignored"
                    )),
                },
                _ => {}
            }
        }
        let map = SegmentMap::build(segs, file.len(), &mut warnings);

        let mut qemu_cpus = Vec::new();
        let mut prstatus = Vec::new();
        let mut vmcoreinfo = None;
        let mut count = 0usize;
        for seg in notes {
            for note in NoteIter::new(seg) {
                let note = match note {
                    Ok(n) => n,
                    Err(w) => {
                        warnings.push(w);
                        break;
                    }
                };
                count += 1;
                if count > MAX_NOTES {
                    warnings.push(format!("more than {MAX_NOTES} notes; the rest ignored"));
                    break;
                }
                match (note.name, note.kind) {
                    (b"QEMU", 0) => match qemu_cpu_state(note.desc) {
                        Ok(r) if qemu_cpus.len() < MAX_CPUS => qemu_cpus.push(r),
                        Ok(_) => {}
                        Err(w) => warnings.push(format!("QEMU note {}: {w}", qemu_cpus.len())),
                    },
                    (b"CORE", NT_PRSTATUS) => {
                        if machine != EM_X86_64 {
                            continue;
                        }
                        match prstatus_note(note.desc) {
                            Some(p) if prstatus.len() < MAX_CPUS => prstatus.push(p),
                            Some(_) => {}
                            None => warnings.push(format!(
                                "NT_PRSTATUS note {} has {} bytes, expected {PRSTATUS_SIZE}; skipped",
                                prstatus.len(),
                                note.desc.len()
                            )),
                        }
                    }
                    (b"VMCOREINFO", _) if vmcoreinfo.is_none() => {
                        vmcoreinfo = Some(VmcoreInfo::parse(note.desc));
                    }
                    _ => {}
                }
            }
        }
        Ok(ElfCore {
            file,
            map,
            machine,
            qemu_cpus,
            prstatus,
            vmcoreinfo,
            warnings: warnings.into_vec(),
        })
    }

    /// The core file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// `e_machine`: 62 (x86-64) or 3 (i386, a guest not in long mode).
    pub fn machine(&self) -> u16 {
        self.machine
    }

    /// The guest's VMCOREINFO, when the core has the note.
    pub fn vmcoreinfo(&self) -> Option<&VmcoreInfo> {
        self.vmcoreinfo.as_ref()
    }

    /// The `NT_PRSTATUS` notes, one per vCPU.
    pub fn prstatus(&self) -> &[PrStatus] {
        &self.prstatus
    }

    /// How many vCPUs have a QEMU CPU-state note (with control registers).
    pub fn qemu_cpu_count(&self) -> usize {
        self.qemu_cpus.len()
    }

    /// What had to be skipped or clipped while reading the core.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

impl PhysicalMemory for ElfCore {
    fn read_phys(&self, pa: Pa, buf: &mut [u8]) -> Result<(), PhysError> {
        self.map.read(&self.file, pa, buf)
    }

    fn ranges(&self) -> &[PhysRange] {
        self.map.ranges()
    }
}

impl VcpuRegisters for ElfCore {
    fn vcpu_count(&self) -> usize {
        self.qemu_cpus.len().max(self.prstatus.len())
    }

    fn registers(&self, vcpu: usize) -> Result<Registers, Error> {
        if let Some(r) = self.qemu_cpus.get(vcpu) {
            return Ok(*r);
        }
        if vcpu < self.prstatus.len() {
            return Err(Error::RegistersUnavailable {
                vcpu,
                why: "the core has general registers (NT_PRSTATUS) but no QEMU CPU-state note, so no control registers".into(),
            });
        }
        Err(Error::NoSuchVcpu {
            vcpu,
            count: self.vcpu_count(),
        })
    }
}

struct Note<'a> {
    name: &'a [u8],
    kind: u32,
    desc: &'a [u8],
}

/// The notes of one PT_NOTE segment; a malformed note ends the walk with an `Err`.
struct NoteIter<'a> {
    rest: &'a [u8],
}

impl<'a> NoteIter<'a> {
    fn new(seg: &'a [u8]) -> Self {
        NoteIter { rest: seg }
    }
}

fn pad4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|v| v & !3)
}

impl<'a> Iterator for NoteIter<'a> {
    type Item = Result<Note<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = std::mem::take(&mut self.rest);
        if b.len() < 12 {
            if b.iter().any(|&x| x != 0) {
                return Some(Err(format!("{} trailing bytes in a note segment", b.len())));
            }
            return None;
        }
        let namesz = u32_at(b, 0)? as usize;
        let descsz = u32_at(b, 4)? as usize;
        let kind = u32_at(b, 8)?;
        let desc_off = pad4(namesz).and_then(|n| n.checked_add(12));
        let end = desc_off.and_then(|d| pad4(descsz).and_then(|s| d.checked_add(s)));
        let (Some(desc_off), Some(end)) = (desc_off, end) else {
            return Some(Err("a note's sizes overflow".into()));
        };
        // the last note may omit the padding after its descriptor
        if desc_off.checked_add(descsz).is_none_or(|e| e > b.len()) {
            return Some(Err(format!(
                "a note (name size {namesz}, descriptor size {descsz}) passes the end of its segment"
            )));
        }
        let mut name = &b[12..12 + namesz];
        while let [rest @ .., 0] = name {
            name = rest;
        }
        let desc = &b[desc_off..desc_off + descsz];
        self.rest = b.get(end..).unwrap_or_default();
        Some(Ok(Note { name, kind, desc }))
    }
}

fn qemu_segment(d: &[u8], off: usize) -> SegReg {
    SegReg {
        selector: u32_at(d, off).unwrap_or(0) as u16,
        limit: u32_at(d, off + 4).unwrap_or(0),
        flags: u32_at(d, off + 8).unwrap_or(0),
        base: u64_at(d, off + 16).unwrap_or(0),
    }
}

/// Registers from a `QEMUCPUState` (version 1).
fn qemu_cpu_state(d: &[u8]) -> Result<Registers, String> {
    let version = u32_at(d, 0).ok_or("too short")?;
    let size = u32_at(d, 4).ok_or("too short")? as usize;
    if version != 1 {
        return Err(format!(
            "QEMUCPUState version {version} is not the known version 1"
        ));
    }
    if size < QEMU_CPU_STATE_SIZE || d.len() < QEMU_CPU_STATE_SIZE {
        return Err(format!(
            "QEMUCPUState of {} bytes (size field {size}), expected {QEMU_CPU_STATE_SIZE}",
            d.len()
        ));
    }
    let q = |i: usize| u64_at(d, 8 + 8 * i).unwrap_or(0);
    let seg = |i: usize| qemu_segment(d, 152 + 24 * i);
    let cr = |i: usize| u64_at(d, 392 + 8 * i).unwrap_or(0);
    let (gdt, idt) = (seg(8), seg(9));
    Ok(Registers {
        rax: q(0),
        rbx: q(1),
        rcx: q(2),
        rdx: q(3),
        rsi: q(4),
        rdi: q(5),
        rsp: q(6),
        rbp: q(7),
        r: [q(8), q(9), q(10), q(11), q(12), q(13), q(14), q(15)],
        rip: q(16),
        rflags: q(17),
        cs: seg(0),
        ds: seg(1),
        es: seg(2),
        fs: seg(3),
        gs: seg(4),
        ss: seg(5),
        gdt: DescriptorTable {
            base: gdt.base,
            limit: gdt.limit,
        },
        idt: DescriptorTable {
            base: idt.base,
            limit: idt.limit,
        },
        cr0: cr(0),
        cr2: cr(2),
        cr3: cr(3),
        cr4: cr(4),
        efer: None,
        kernel_gs_base: None,
        // QEMUCPUState has no MSRs
        lstar: None,
        cstar: None,
        sysenter_eip: None,
        paravirtual: false,
    })
}

/// Registers from an x86-64 `elf_prstatus`.
fn prstatus_note(d: &[u8]) -> Option<PrStatus> {
    if d.len() < PRSTATUS_SIZE {
        return None;
    }
    let pid = u32_at(d, 32)?;
    // user_regs_struct: r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi
    // orig_rax rip cs eflags rsp ss fs_base gs_base ds es fs gs
    let g = |i: usize| u64_at(d, PRSTATUS_REGS + 8 * i).unwrap_or(0);
    let sel = |i: usize, base: u64| SegReg {
        selector: g(i) as u16,
        base,
        ..SegReg::default()
    };
    Some(PrStatus {
        pid,
        registers: Registers {
            r: [g(9), g(8), g(7), g(6), g(3), g(2), g(1), g(0)],
            rbp: g(4),
            rbx: g(5),
            rax: g(10),
            rcx: g(11),
            rdx: g(12),
            rsi: g(13),
            rdi: g(14),
            rip: g(16),
            cs: sel(17, 0),
            rflags: g(18),
            rsp: g(19),
            ss: sel(20, 0),
            ds: sel(23, 0),
            es: sel(24, 0),
            fs: sel(25, g(21)),
            gs: sel(26, g(22)),
            ..Registers::default()
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF core writer for tests: PT_LOADs (paddr, data, extra zero bytes)
    /// and notes (name, type, descriptor).
    pub(crate) fn build_core(
        loads: &[(u64, Vec<u8>, u64)],
        notes: &[(&str, u32, Vec<u8>)],
    ) -> Vec<u8> {
        let mut note_bytes = Vec::new();
        for (name, kind, desc) in notes {
            let mut n = name.as_bytes().to_vec();
            n.push(0);
            note_bytes.extend_from_slice(&(n.len() as u32).to_le_bytes());
            note_bytes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            note_bytes.extend_from_slice(&kind.to_le_bytes());
            note_bytes.extend_from_slice(&n);
            while note_bytes.len() % 4 != 0 {
                note_bytes.push(0);
            }
            note_bytes.extend_from_slice(desc);
            while note_bytes.len() % 4 != 0 {
                note_bytes.push(0);
            }
        }
        let phnum = loads.len() + 1;
        let mut out = vec![0u8; EHDR_SIZE];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[6] = 1;
        out[16..18].copy_from_slice(&ET_CORE.to_le_bytes());
        out[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        out[32..40].copy_from_slice(&(EHDR_SIZE as u64).to_le_bytes());
        out[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        out[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        let mut data_off = (EHDR_SIZE + phnum * PHDR_SIZE) as u64;
        let mut phdrs = Vec::new();
        let mut ph = |t: u32, off: u64, paddr: u64, filesz: u64, memsz: u64| {
            let mut p = vec![0u8; PHDR_SIZE];
            p[0..4].copy_from_slice(&t.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[24..32].copy_from_slice(&paddr.to_le_bytes());
            p[32..40].copy_from_slice(&filesz.to_le_bytes());
            p[40..48].copy_from_slice(&memsz.to_le_bytes());
            phdrs.extend_from_slice(&p);
        };
        ph(PT_NOTE, data_off, 0, note_bytes.len() as u64, 0);
        data_off += note_bytes.len() as u64;
        for (paddr, data, zeros) in loads {
            ph(
                PT_LOAD,
                data_off,
                *paddr,
                data.len() as u64,
                data.len() as u64 + zeros,
            );
            data_off += data.len() as u64;
        }
        out.extend_from_slice(&phdrs);
        out.extend_from_slice(&note_bytes);
        for (_, data, _) in loads {
            out.extend_from_slice(data);
        }
        out
    }

    pub(crate) fn qemu_note(cr3: u64, rip: u64) -> Vec<u8> {
        let mut d = vec![0u8; QEMU_CPU_STATE_SIZE];
        d[0..4].copy_from_slice(&1u32.to_le_bytes());
        d[4..8].copy_from_slice(&(QEMU_CPU_STATE_SIZE as u32).to_le_bytes());
        d[8..16].copy_from_slice(&0xaaaau64.to_le_bytes()); // rax
        d[136..144].copy_from_slice(&rip.to_le_bytes());
        d[152..156].copy_from_slice(&0x10u32.to_le_bytes()); // cs selector
        d[248 + 16..248 + 24].copy_from_slice(&0xffff_8880_3ec0_0000u64.to_le_bytes()); // gs base
        d[392..400].copy_from_slice(&0x8005_0033u64.to_le_bytes());
        d[416..424].copy_from_slice(&cr3.to_le_bytes());
        d[424..432].copy_from_slice(&0x0035_0ef0u64.to_le_bytes());
        d
    }

    fn prstatus(pid: u32, rip: u64) -> Vec<u8> {
        let mut d = vec![0u8; PRSTATUS_SIZE];
        d[32..36].copy_from_slice(&pid.to_le_bytes());
        d[PRSTATUS_REGS + 16 * 8..PRSTATUS_REGS + 17 * 8].copy_from_slice(&rip.to_le_bytes());
        d[PRSTATUS_REGS + 22 * 8..PRSTATUS_REGS + 23 * 8].copy_from_slice(&0x1234u64.to_le_bytes());
        d
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn loads_notes_and_registers() {
        let dir = tempfile::tempdir().unwrap();
        let core = build_core(
            &[
                (0x0, vec![1u8; 0x1000], 0),
                (0x1000, vec![2u8; 0x800], 0x800),
                (0x10_0000, vec![3u8; 0x2000], 0),
            ],
            &[
                ("CORE", NT_PRSTATUS, prstatus(1, 0xffff_ffff_8100_0000)),
                ("CORE", NT_PRSTATUS, prstatus(2, 0xffff_ffff_8100_1000)),
                ("QEMU", 0, qemu_note(0x260_a000, 0xffff_ffff_8100_0000)),
                (
                    "QEMU",
                    0,
                    qemu_note(0x8000_0000_0260_a001, 0xffff_ffff_8100_1000),
                ),
                (
                    "VMCOREINFO",
                    0,
                    b"OSRELEASE=6.1.0-test\nKERNELOFFSET=1a000000\n".to_vec(),
                ),
            ],
        );
        let path = write(&dir, "core.elf", &core);
        let elf = ElfCore::open(&path).unwrap();
        assert!(elf.warnings().is_empty(), "{:?}", elf.warnings());
        assert_eq!(
            elf.ranges(),
            &[
                PhysRange::new(0, 0x2000),
                PhysRange::new(0x10_0000, 0x10_2000)
            ]
        );
        let mut b = [0u8; 8];
        elf.read_phys(Pa(0xffc), &mut b).unwrap();
        assert_eq!(b, [1, 1, 1, 1, 2, 2, 2, 2]);
        elf.read_phys(Pa(0x17fc), &mut b).unwrap();
        assert_eq!(
            b,
            [2, 2, 2, 2, 0, 0, 0, 0],
            "p_memsz beyond p_filesz reads zeros"
        );
        assert_eq!(
            elf.read_phys(Pa(0x1ffc), &mut b),
            Err(PhysError::Unmapped { pa: Pa(0x2000) })
        );
        assert_eq!(elf.vcpu_count(), 2);
        let r = elf.registers(1).unwrap();
        assert_eq!(r.cr3, 0x8000_0000_0260_a001);
        assert_eq!(r.rip, 0xffff_ffff_8100_1000);
        assert_eq!(r.rax, 0xaaaa);
        assert_eq!(r.cs.selector, 0x10);
        assert_eq!(r.gs.base, 0xffff_8880_3ec0_0000);
        assert_eq!(r.page_table_root().unwrap().table, Pa(0x260_a000));
        assert!(matches!(
            elf.registers(2),
            Err(Error::NoSuchVcpu { vcpu: 2, count: 2 })
        ));
        assert_eq!(elf.prstatus()[1].pid, 2);
        assert_eq!(elf.prstatus()[1].registers.rip, 0xffff_ffff_8100_1000);
        assert_eq!(elf.prstatus()[0].registers.gs.base, 0x1234);
        let info = elf.vmcoreinfo().unwrap();
        assert_eq!(info.osrelease(), Some("6.1.0-test"));
        assert_eq!(info.kernel_offset(), Some(0x1a00_0000));
    }

    #[test]
    fn prstatus_only_has_no_control_registers() {
        let dir = tempfile::tempdir().unwrap();
        let core = build_core(
            &[(0, vec![0; 0x1000], 0)],
            &[("CORE", NT_PRSTATUS, prstatus(1, 5))],
        );
        let elf = ElfCore::open(write(&dir, "c", &core)).unwrap();
        assert!(matches!(
            elf.registers(0),
            Err(Error::RegistersUnavailable { vcpu: 0, .. })
        ));
    }

    #[test]
    fn malformed_headers_are_errors_and_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let good = build_core(
            &[(0x1000, vec![7; 0x1000], 0)],
            &[("QEMU", 0, qemu_note(0x1000, 0))],
        );
        for bad in [&b"not an elf"[..], &good[..40]] {
            assert!(matches!(
                ElfCore::open(write(&dir, "bad", bad)),
                Err(Error::Format { .. })
            ));
        }
        // flip every byte of the headers and notes in turn: open either fails cleanly
        // or yields a source whose reads stay in bounds
        let head = EHDR_SIZE + 2 * PHDR_SIZE + 12 + 8 + QEMU_CPU_STATE_SIZE;
        for i in 0..head {
            for v in [0x00u8, 0xff, 0x80] {
                let mut c = good.clone();
                c[i] = v;
                if let Ok(elf) = ElfCore::open(write(&dir, "mut", &c)) {
                    let mut b = [0u8; 64];
                    for r in elf.ranges().to_vec() {
                        let _ = elf.read_phys(r.start, &mut b);
                        let _ = elf.read_phys(Pa(r.end.0.saturating_sub(8)), &mut b);
                    }
                    for v in 0..elf.vcpu_count() {
                        let _ = elf.registers(v);
                    }
                }
            }
        }
    }

    #[test]
    fn overlapping_loads_are_clipped_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let core = build_core(
            &[(0x0, vec![1; 0x2000], 0), (0x1000, vec![2; 0x2000], 0)],
            &[],
        );
        let elf = ElfCore::open(write(&dir, "o", &core)).unwrap();
        assert_eq!(elf.ranges(), &[PhysRange::new(0, 0x3000)]);
        let mut b = [0u8; 2];
        elf.read_phys(Pa(0x1fff), &mut b).unwrap();
        assert_eq!(b, [1, 2]);
        assert_eq!(elf.warnings().len(), 1, "{:?}", elf.warnings());
    }
}
