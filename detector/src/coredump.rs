//! `dump-process`: a guest process as an ELF core file that gdb opens, read from
//! outside the guest.
//!
//! The core holds what the kernel's own core dumps hold that can be read from memory:
//! a `PT_LOAD` segment per run of resident pages of each mapping (pages the page
//! table does not map are left out, so gdb reads them as absent), an `NT_PRSTATUS`
//! note per thread with the user registers its kernel stack saved (`fs_base` and
//! `gs_base` are not there: zero), `NT_PRPSINFO` (pid, parent, uid, name, arguments)
//! and `NT_FILE` (each file mapping's range, offset and path, which gdb's
//! `info proc mappings` shows). Written in the x86-64 System V layout; the caller
//! writes the bytes atomically.

use vmi_core::kernel::procmem::ResidentRun;
use vmi_core::kernel::vma::{MapName, MapsEntry, VM_EXEC, VM_READ, VM_WRITE};

/// A thread's registers for `NT_PRSTATUS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRegs {
    /// The thread id.
    pub tid: u32,
    /// `pt_regs` in order (`r15` .. `ss`), `None` when they could not be read.
    pub regs: Option<[u64; 21]>,
}

/// What a process core is made of.
#[derive(Debug, Clone)]
pub struct ProcessCore<'a> {
    /// The process id.
    pub pid: u32,
    /// Its parent's.
    pub ppid: u32,
    /// Its real uid and gid.
    pub uid_gid: (u32, u32),
    /// `comm` (guest bytes, at most 16 kept).
    pub comm: &'a [u8],
    /// The arguments joined by spaces (at most 80 bytes kept).
    pub args: Vec<u8>,
    /// Its threads, the leader first.
    pub threads: Vec<ThreadRegs>,
    /// Its mappings.
    pub maps: &'a [MapsEntry],
    /// The resident runs of each mapping (same order as `maps`).
    pub memory: Vec<Vec<ResidentRun>>,
}

const PAGE: u64 = 4096;
/// One more than the most `PT_LOAD` segments a core holds here (`e_phnum` is 16 bits
/// and one header is the notes; the extended numbering of `PN_XNUM` is not written).
pub const MAX_SEGMENTS: usize = 0xffff;
const NT_PRSTATUS: u32 = 1;
const NT_PRPSINFO: u32 = 3;
const NT_FILE: u32 = 0x4649_4c45;

fn note(out: &mut Vec<u8>, kind: u32, desc: &[u8]) {
    out.extend_from_slice(&5u32.to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(b"CORE\0\0\0\0");
    out.extend_from_slice(desc);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn prstatus(t: &ThreadRegs, core: &ProcessCore) -> Vec<u8> {
    let mut d = vec![0u8; 336];
    d[32..36].copy_from_slice(&t.tid.to_le_bytes());
    d[36..40].copy_from_slice(&core.ppid.to_le_bytes());
    d[40..44].copy_from_slice(&core.pid.to_le_bytes());
    d[44..48].copy_from_slice(&core.pid.to_le_bytes());
    if let Some(regs) = t.regs {
        for (i, r) in regs.iter().enumerate() {
            d[112 + i * 8..120 + i * 8].copy_from_slice(&r.to_le_bytes());
        }
    }
    d
}

fn prpsinfo(core: &ProcessCore) -> Vec<u8> {
    let mut d = vec![0u8; 136];
    d[1] = b'S';
    d[16..20].copy_from_slice(&core.uid_gid.0.to_le_bytes());
    d[20..24].copy_from_slice(&core.uid_gid.1.to_le_bytes());
    d[24..28].copy_from_slice(&core.pid.to_le_bytes());
    d[28..32].copy_from_slice(&core.ppid.to_le_bytes());
    d[32..36].copy_from_slice(&core.pid.to_le_bytes());
    d[36..40].copy_from_slice(&core.pid.to_le_bytes());
    let name = &core.comm[..core.comm.len().min(15)];
    d[40..40 + name.len()].copy_from_slice(name);
    let args = &core.args[..core.args.len().min(79)];
    d[56..56 + args.len()].copy_from_slice(args);
    d
}

fn nt_file(maps: &[MapsEntry]) -> Vec<u8> {
    let files: Vec<&MapsEntry> = maps
        .iter()
        .filter(|m| matches!(m.name, MapName::File(_)))
        .collect();
    let mut d = Vec::new();
    d.extend_from_slice(&(files.len() as u64).to_le_bytes());
    d.extend_from_slice(&PAGE.to_le_bytes());
    for m in &files {
        d.extend_from_slice(&m.vma.start.to_le_bytes());
        d.extend_from_slice(&m.vma.end.to_le_bytes());
        d.extend_from_slice(&m.vma.pgoff.to_le_bytes());
    }
    for m in &files {
        d.extend(m.name.display().into_iter().filter(|&b| b != 0));
        d.push(0);
    }
    d
}

/// The core file's bytes (at most [`MAX_SEGMENTS`]` - 1` resident runs: the caller
/// checks).
pub fn write(core: &ProcessCore) -> Vec<u8> {
    let mut notes = Vec::new();
    for (i, t) in core.threads.iter().enumerate() {
        note(&mut notes, NT_PRSTATUS, &prstatus(t, core));
        if i == 0 {
            note(&mut notes, NT_PRPSINFO, &prpsinfo(core));
        }
    }
    note(&mut notes, NT_FILE, &nt_file(core.maps));
    // (vaddr, flags, bytes) of each segment
    let mut loads: Vec<(u64, u32, &[u8])> = Vec::new();
    for (m, runs) in core.maps.iter().zip(&core.memory) {
        let f = m.vma.flags;
        let flags = u32::from(f & VM_READ != 0) * 4
            + u32::from(f & VM_WRITE != 0) * 2
            + u32::from(f & VM_EXEC != 0);
        for r in runs {
            loads.push((r.start, flags, &r.data));
        }
    }
    let phnum = 1 + loads.len();
    let notes_at = 64 + 56 * phnum as u64;
    let mut data_at = (notes_at + notes.len() as u64).div_ceil(PAGE) * PAGE;
    let mut out = Vec::new();
    // ELF header
    out.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    out.extend_from_slice(&4u16.to_le_bytes()); // ET_CORE
    out.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // entry
    out.extend_from_slice(&64u64.to_le_bytes()); // phoff
    out.extend_from_slice(&0u64.to_le_bytes()); // shoff
    out.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, phnum.min(MAX_SEGMENTS) as u16, 64, 0, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let phdr =
        |out: &mut Vec<u8>, kind: u32, flags: u32, off: u64, va: u64, size: u64, align: u64| {
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&flags.to_le_bytes());
            for v in [off, va, 0, size, size, align] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        };
    phdr(&mut out, 4, 4, notes_at, 0, notes.len() as u64, 4); // PT_NOTE
    for (va, flags, bytes) in &loads {
        phdr(&mut out, 1, *flags, data_at, *va, bytes.len() as u64, PAGE); // PT_LOAD
        data_at += bytes.len() as u64;
    }
    out.extend_from_slice(&notes);
    out.resize(out.len().div_ceil(PAGE as usize) * PAGE as usize, 0);
    for (_, _, bytes) in &loads {
        out.extend_from_slice(bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::read::elf::{ElfFile64, ProgramHeader};
    use object::{Endianness, Object};

    #[test]
    fn the_core_parses_with_its_segments_and_notes() {
        let maps: Vec<MapsEntry> = Vec::new();
        let core = ProcessCore {
            pid: 7,
            ppid: 1,
            uid_gid: (0, 0),
            comm: b"sleep",
            args: b"sleep 100".to_vec(),
            threads: vec![ThreadRegs {
                tid: 7,
                regs: Some([3; 21]),
            }],
            maps: &maps,
            memory: Vec::new(),
        };
        let bytes = write(&core);
        let elf = ElfFile64::<Endianness>::parse(&bytes[..]).unwrap();
        assert_eq!(elf.kind(), object::ObjectKind::Core);
        let phdrs = elf.elf_program_headers();
        assert_eq!(phdrs.len(), 1);
        let e = Endianness::Little;
        let mut notes = phdrs[0].notes(e, &bytes[..]).unwrap().unwrap();
        let mut kinds = Vec::new();
        while let Some(n) = notes.next().unwrap() {
            assert_eq!(n.name(), b"CORE");
            kinds.push(n.n_type(e));
        }
        assert_eq!(kinds, vec![NT_PRSTATUS, NT_PRPSINFO, NT_FILE]);
    }
}
