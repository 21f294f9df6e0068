//! A process's memory mappings: what `/proc/PID/maps` shows, read from outside.
//!
//! Each mapping is a `vm_area_struct`. Kernels from 6.1 on keep them in a maple tree
//! (`mm_struct.mm_mt`), indexed by address range; earlier ones in a list sorted by
//! address (`mm_struct.mmap`, `vm_area_struct.vm_next`).
//!
//! The maple tree ([`Kernel::vmas`]): `maple_tree.ma_root` is an encoded node pointer
//! (an "enode": the 256-byte aligned `maple_node` with the node type in bits 3..6 and
//! bit 2 set, `MAPLE_ENODE_NULL`; the root also has bit 1, as xarray internal entries) or, for a tree of one entry at index
//! 0, the entry itself. The node types used here (lib/maple_tree.c of 6.1, 6.12 and
//! 7.x, 64-bit): `maple_leaf_64` (1) and `maple_range_64` (2), 15 pivots at offset 8, 16
//! slots at 128, the metadata's `end` byte at 248; `maple_arange_64` (3), internal
//! nodes of allocation trees such as the mm's, 9 pivots at 8, 10 slots at 80, 10 gaps,
//! `end` at 240. Slot `i` covers `pivot[i-1] + 1 ..= pivot[i]` (the node's own bounds at
//! either end; a 0 pivot after the first means the node's maximum); the last slot in
//! use is found as the kernel's `ma_data_end` finds it. A leaf slot holds a VMA or
//! nothing (gaps are `NULL`; small internal entries such as `XA_ZERO_ENTRY`, which fork
//! leaves behind on failure, are skipped). These layouts are the kernel's fixed
//! definitions, not a profile's: the profile gives `maple_tree.ma_root` (a type kernels
//! before 6.1 lack: an `opt_type` in [`VmaLayout`]'s declaration) and the VMA fields.
//!
//! Every VMA found is checked: a kernel pointer whose `vm_mm` is this mm, a non-empty
//! user range inside the range its slot covers, after the previous VMA. Bounded: at
//! most `mm_struct.map_count` VMAs (which itself must be at most [`MAX_VMAS`]) plus a
//! few in flight on a running guest, nodes visited once each, depth at most
//! [`MAPLE_HEIGHT_MAX`].
//!
//! Names ([`Kernel::maps`]) are what `/proc/PID/maps` prints: the file's path (rebuilt
//! as `d_path` does, see [`crate::kernel::files`]: ` (deleted)` after a deleted file,
//! `/memfd:NAME (deleted)` for a memfd) with its device and inode; for
//! mappings the kernel installs itself (no file, `vm_ops` set) the name of their
//! `vm_special_mapping` (`[vdso]`, `[vvar]`, `[uprobes]`) when `vm_ops` is
//! `special_mapping_vmops`; `[heap]` for the mapping that overlaps `start_brk..brk`,
//! `[stack]` for the one holding `start_stack`, `[anon:NAME]` for an anonymous mapping
//! named with `prctl(PR_SET_VMA_ANON_NAME)`. `[vsyscall]` is not a VMA of the process
//! (the kernel's gate area, the same for every process) and is not listed.
//!
//! Fields used ([`VmaLayout`]): `mm_struct.{mm_mt, mmap, map_count, start_brk, brk,
//! start_stack}`, `maple_tree.ma_root`, `vm_area_struct.{vm_start, vm_end, vm_flags,
//! vm_pgoff, vm_file, vm_mm, vm_ops, vm_private_data, vm_next, anon_name}`,
//! `vm_special_mapping.name`, `file.f_inode`, `inode.{i_ino, i_sb}`,
//! `super_block.s_dev`; the symbol `special_mapping_vmops` (optional: without it
//! special mappings have no name).

use std::collections::HashSet;

use crate::addr::Va;
use crate::error::{ReadError, TranslateError};
use crate::kernel::files::{FileName, Linkage};
use crate::kernel::objects::{is_kernel_va, read_err, u32_at, u64_at, walk_chain};
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// Most VMAs read per process (the kernel's default `vm.max_map_count` is 65530).
pub const MAX_VMAS: usize = 1 << 20;
/// Deepest maple tree walked (`MAPLE_HEIGHT_MAX`).
pub const MAPLE_HEIGHT_MAX: usize = 31;
/// VMAs allowed beyond `map_count` (a running guest links a VMA before it counts it).
const IN_FLIGHT: usize = 4;
/// Most bytes [`Kernel::user_bytes`] reads.
pub const MAX_USER_READ: usize = 1 << 16;
/// The top of the user half (4-level paging).
const USER_TOP: u64 = 0x0000_8000_0000_0000;
/// Longest special-mapping or anonymous-mapping name read.
const MAX_MAP_NAME: usize = 256;
/// `struct anon_vma_name { struct kref kref; char name[]; }`: the name after the
/// 4-byte reference count.
const ANON_NAME_OFFSET: u64 = 4;

/// `VM_READ`.
pub const VM_READ: u64 = 0x1;
/// `VM_WRITE`.
pub const VM_WRITE: u64 = 0x2;
/// `VM_EXEC`.
pub const VM_EXEC: u64 = 0x4;
/// `VM_SHARED`.
pub const VM_SHARED: u64 = 0x8;
/// `VM_MAYREAD`.
pub const VM_MAYREAD: u64 = 0x10;
/// `VM_MAYWRITE`.
pub const VM_MAYWRITE: u64 = 0x20;
/// `VM_MAYEXEC`.
pub const VM_MAYEXEC: u64 = 0x40;
/// `VM_MAYSHARE` (the `s` of `/proc/PID/maps`).
pub const VM_MAYSHARE: u64 = 0x80;
/// `VM_GROWSDOWN` (a stack).
pub const VM_GROWSDOWN: u64 = 0x100;

/// The maple node types (`enum maple_type`).
const MAPLE_LEAF_64: u64 = 1;
const MAPLE_RANGE_64: u64 = 2;
const MAPLE_ARANGE_64: u64 = 3;
/// Bytes in a maple node.
const MAPLE_NODE_SIZE: usize = 256;

crate::kernel_layout! {
    /// Offsets the VMA walk uses.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct VmaLayout(p) {
        mm_mt: Option<u64> = opt "mm_struct" ["mm_mt"],
        mm_mmap: Option<u64> = opt "mm_struct" ["mmap"],
        ma_root: Option<u64> = opt_type "maple_tree" ["ma_root"],
        map_count: u64 = "mm_struct" ["map_count"],
        start_brk: u64 = "mm_struct" ["start_brk"],
        brk: u64 = "mm_struct" ["brk"],
        start_stack: u64 = "mm_struct" ["start_stack"],
        vm_start: u64 = "vm_area_struct" ["vm_start"],
        vm_end: u64 = "vm_area_struct" ["vm_end"],
        vm_flags: u64 = "vm_area_struct" ["vm_flags"],
        vm_pgoff: u64 = "vm_area_struct" ["vm_pgoff"],
        vm_file: u64 = "vm_area_struct" ["vm_file"],
        vm_mm: u64 = "vm_area_struct" ["vm_mm"],
        vm_ops: u64 = "vm_area_struct" ["vm_ops"],
        vm_private_data: u64 = "vm_area_struct" ["vm_private_data"],
        vm_next: Option<u64> = opt "vm_area_struct" ["vm_next"],
        anon_name: Option<u64> = opt "vm_area_struct" ["anon_name"],
        special_name: u64 = "vm_special_mapping" ["name"],
        file_inode: u64 = "file" ["f_inode"],
        inode_ino: u64 = "inode" ["i_ino"],
        inode_sb: u64 = "inode" ["i_sb"],
        sb_dev: u64 = "super_block" ["s_dev"],
    }
    computed {
        /// `[heap]` is the mapping that overlaps `start_brk..brk` strictly (kernels from
        /// 6.6: `vm_start < brk && vm_end > start_brk`) or touching it (before).
        strict_heap: bool = release_at_least(&p.kernel.release, (6, 6)),
    }
    check {
        if mm_mt.is_none() && mm_mmap.is_none() {
            return Err(KernelError::MissingField(
                "mm_struct.mm_mt (6.1 on) or mm_struct.mmap (before)".into(),
            ));
        }
        if mm_mt.is_some() && ma_root.is_none() {
            return Err(KernelError::MissingField("maple_tree.ma_root".into()));
        }
        if mm_mt.is_none() && vm_next.is_none() {
            return Err(KernelError::MissingField("vm_area_struct.vm_next".into()));
        }
    }
    also [
        // read by nothing yet: the tree's flags (its height is in the nodes)
        opt_type "maple_tree" ["ma_flags"],
    ]
    symbols [
        opt ["special_mapping_vmops"],
    ]
}

impl VmaLayout {
    /// The span of `vm_area_struct` read per VMA: `[start, end)`.
    fn span(&self) -> (u64, u64) {
        let offs = [
            Some(self.vm_start),
            Some(self.vm_end),
            Some(self.vm_flags),
            Some(self.vm_pgoff),
            Some(self.vm_file),
            Some(self.vm_mm),
            Some(self.vm_ops),
            Some(self.vm_private_data),
            self.anon_name,
        ];
        let offs = offs.iter().flatten();
        let start = offs.clone().copied().min().unwrap_or(0);
        let end = offs.map(|o| o + 8).max().unwrap_or(8);
        (start, end)
    }
}

/// True when a release string (`6.1.0-56-amd64`) is at least `major.minor`.
fn release_at_least(release: &str, want: (u32, u32)) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts
        .next()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(0);
    let minor = parts
        .next()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(0);
    (major, minor) >= want
}

/// One memory mapping (`vm_area_struct`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vma {
    /// The `vm_area_struct`.
    pub addr: Va,
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `vm_flags` (`VM_READ`, `VM_WRITE`, `VM_EXEC`, `VM_MAY*`, ...).
    pub flags: u64,
    /// `vm_pgoff`: the file offset in pages (for anonymous mappings, the start's page
    /// number or what the mapping was created with).
    pub pgoff: u64,
    /// `vm_file` (null for anonymous and special mappings).
    pub file: Va,
    /// `vm_ops` (null for anonymous memory).
    pub ops: Va,
    /// `vm_private_data` (a special mapping's `vm_special_mapping`).
    pub private_data: u64,
    /// `anon_name` (null when unnamed or the kernel has none).
    pub anon_name: u64,
}

impl Vma {
    /// `rwxp` as `/proc/PID/maps` prints it (`s` for `VM_MAYSHARE`).
    pub fn perms(&self) -> String {
        let bit = |b: u64, c: char| if self.flags & b != 0 { c } else { '-' };
        [
            bit(VM_READ, 'r'),
            bit(VM_WRITE, 'w'),
            bit(VM_EXEC, 'x'),
            if self.flags & VM_MAYSHARE != 0 {
                's'
            } else {
                'p'
            },
        ]
        .iter()
        .collect()
    }

    /// Executable.
    pub fn is_exec(&self) -> bool {
        self.flags & VM_EXEC != 0
    }

    /// Writable.
    pub fn is_write(&self) -> bool {
        self.flags & VM_WRITE != 0
    }

    /// Anonymous memory, as the kernel's `vma_is_anonymous` says: no `vm_ops` (and so
    /// no file: a file mapping always has operations).
    pub fn is_anonymous(&self) -> bool {
        self.ops.0 == 0 && self.file.0 == 0
    }

    /// A mapping the kernel installed itself (no file but operations: the vDSO, its
    /// data pages, the uprobes area).
    pub fn is_special(&self) -> bool {
        self.ops.0 != 0 && self.file.0 == 0
    }
}

/// A file behind a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedFile {
    /// The path (as `d_path`; relative when its mount is detached), without
    /// ` (deleted)`.
    pub path: Vec<u8>,
    /// Whether the file is still in its directory, deleted or a memfd's (see
    /// [`crate::kernel::files`]).
    pub linkage: Linkage,
    /// The device (`inode->i_sb->s_dev`, the kernel's `dev_t`: major << 20 | minor).
    pub dev: u32,
    /// The inode number.
    pub inode: u64,
}

impl MappedFile {
    /// The file's name with what `d_path` adds (see [`FileName`]).
    pub fn name(&self) -> FileName {
        FileName {
            path: self.path.clone(),
            linkage: self.linkage,
        }
    }
}

/// What `/proc/PID/maps` names a mapping by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapName {
    /// The file mapped.
    File(MappedFile),
    /// A special mapping's own name (`[vdso]`, `[vvar]`, ...).
    Special(Vec<u8>),
    /// The initial heap (`brk`).
    Heap,
    /// The main thread's stack.
    Stack,
    /// An anonymous mapping named by its process (`[anon:NAME]`).
    Anon(Vec<u8>),
    /// Nothing (anonymous memory, or a special mapping whose name is unknown).
    None,
}

impl MapName {
    /// The name as `/proc/PID/maps` prints it (guest bytes).
    pub fn display(&self) -> Vec<u8> {
        match self {
            MapName::File(f) => f.name().display(),
            MapName::Special(n) => n.clone(),
            MapName::Heap => b"[heap]".to_vec(),
            MapName::Stack => b"[stack]".to_vec(),
            MapName::Anon(n) => {
                let mut s = b"[anon:".to_vec();
                s.extend_from_slice(n);
                s.push(b']');
                s
            }
            MapName::None => Vec::new(),
        }
    }
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsEntry {
    /// The mapping.
    pub vma: Vma,
    /// Its name.
    pub name: MapName,
}

impl MapsEntry {
    /// The file offset in bytes (0 without a file, as `/proc` prints it).
    pub fn offset(&self) -> u64 {
        match self.name {
            MapName::File(_) => self.vma.pgoff.wrapping_shl(12),
            _ => 0,
        }
    }

    /// `(major, minor)` of the file's device (0:0 without one).
    pub fn dev(&self) -> (u32, u32) {
        match &self.name {
            MapName::File(f) => (f.dev >> 20, f.dev & 0xf_ffff),
            _ => (0, 0),
        }
    }

    /// The file's inode number (0 without one).
    pub fn inode(&self) -> u64 {
        match &self.name {
            MapName::File(f) => f.inode,
            _ => 0,
        }
    }
}

/// Bytes read from a process's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserBytes {
    /// The bytes (fewer than asked when a later page is not resident).
    Resident(Vec<u8>),
    /// The first page is not in memory (never touched, or swapped out).
    NotResident,
}

/// The `mm_struct` fields names depend on.
#[derive(Debug, Clone, Copy)]
struct MmBounds {
    start_brk: u64,
    brk: u64,
    start_stack: u64,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// Every mapping of the address space `mm`, by address (none for a null `mm`).
    pub fn vmas(&self, mm: Va) -> Result<Vec<Vma>, KernelError> {
        if mm.0 == 0 {
            return Ok(Vec::new());
        }
        let vl = VmaLayout::from_profile(&self.profile)?;
        self.vmas_with(mm, &vl)
    }

    fn vmas_with(&self, mm: Va, vl: &VmaLayout) -> Result<Vec<Vma>, KernelError> {
        let count = self
            .space
            .read_u32(Va(mm.0.wrapping_add(vl.map_count)))
            .map_err(read_err("mm_struct.map_count"))? as usize;
        if count > MAX_VMAS {
            return Err(KernelError::TooLong {
                what: "mm_struct.map_count",
                max: MAX_VMAS,
            });
        }
        let max = count + IN_FLIGHT;
        // (VMA, lowest and highest address its place allows)
        let mut found: Vec<(u64, u64, u64)> = Vec::new();
        match (vl.mm_mt, vl.ma_root) {
            (Some(mt), Some(root)) => {
                let root = self
                    .space
                    .read_u64(Va(mm.0.wrapping_add(mt + root)))
                    .map_err(read_err("mm_struct.mm_mt.ma_root"))?;
                maple_entries(&self.space, root, max, &mut found)?;
            }
            _ => {
                let (Some(mmap), Some(next)) = (vl.mm_mmap, vl.vm_next) else {
                    return Err(KernelError::MissingField("mm_struct.mmap".into()));
                };
                let first = self.ptr(mm.0.wrapping_add(mmap), "mm_struct.mmap")?;
                walk_chain(&self.space, first, 0, next, "mm_struct.mmap", max, |v| {
                    found.push((v.0, 0, u64::MAX));
                    Ok(())
                })?;
            }
        }
        let (s, e) = vl.span();
        let mut buf = vec![0u8; (e - s) as usize];
        let mut out: Vec<Vma> = Vec::with_capacity(found.len());
        for (addr, lo, hi) in found {
            self.space
                .read_virt(Va(addr.wrapping_add(s)), &mut buf)
                .map_err(read_err("vm_area_struct"))?;
            let at = |off: u64| u64_at(&buf, off - s);
            let v = Vma {
                addr: Va(addr),
                start: at(vl.vm_start),
                end: at(vl.vm_end),
                flags: at(vl.vm_flags),
                pgoff: at(vl.vm_pgoff),
                file: Va(at(vl.vm_file)),
                ops: Va(at(vl.vm_ops)),
                private_data: at(vl.vm_private_data),
                anon_name: vl.anon_name.map(at).unwrap_or(0),
            };
            let owner = at(vl.vm_mm);
            let after = out.last().map(|p| p.end).unwrap_or(0);
            if owner != mm.0
                || v.start >= v.end
                || v.end > USER_TOP
                || v.start < lo
                || v.end - 1 > hi
                || v.start < after
            {
                return Err(KernelError::Corrupt {
                    what: format!(
                        "VMA {:#x}..{:#x} (vm_mm {owner:#x}, in the tree at {lo:#x}..={hi:#x}, after {after:#x})",
                        v.start, v.end
                    ),
                    at: Va(addr),
                });
            }
            for (p, what) in [
                (v.file.0, "vm_area_struct.vm_file"),
                (v.ops.0, "vm_area_struct.vm_ops"),
            ] {
                if p != 0 && !is_kernel_va(p) {
                    return Err(KernelError::BadPointer { what, value: p });
                }
            }
            out.push(v);
        }
        Ok(out)
    }

    /// Every mapping of `mm` with its name, as `/proc/PID/maps` lists them.
    pub fn maps(&self, mm: Va) -> Result<Vec<MapsEntry>, KernelError> {
        if mm.0 == 0 {
            return Ok(Vec::new());
        }
        let vl = VmaLayout::from_profile(&self.profile)?;
        let vmas = self.vmas_with(mm, &vl)?;
        let bounds = self.mm_bounds(mm, &vl)?;
        vmas.into_iter()
            .map(|vma| {
                let name = self.name_with(&vma, &bounds, &vl)?;
                Ok(MapsEntry { vma, name })
            })
            .collect()
    }

    /// The name of one mapping of `mm`.
    pub fn map_name(&self, mm: Va, vma: &Vma) -> Result<MapName, KernelError> {
        let vl = VmaLayout::from_profile(&self.profile)?;
        let bounds = self.mm_bounds(mm, &vl)?;
        self.name_with(vma, &bounds, &vl)
    }

    fn mm_bounds(&self, mm: Va, vl: &VmaLayout) -> Result<MmBounds, KernelError> {
        let read = |off: u64, what: &'static str| {
            self.space
                .read_u64(Va(mm.0.wrapping_add(off)))
                .map_err(read_err(what))
        };
        Ok(MmBounds {
            start_brk: read(vl.start_brk, "mm_struct.start_brk")?,
            brk: read(vl.brk, "mm_struct.brk")?,
            start_stack: read(vl.start_stack, "mm_struct.start_stack")?,
        })
    }

    fn name_with(&self, vma: &Vma, b: &MmBounds, vl: &VmaLayout) -> Result<MapName, KernelError> {
        if vma.file.0 != 0 {
            return self.mapped_file(vma.file, vl).map(MapName::File);
        }
        if vma.ops.0 != 0 {
            if let Some(ops) = self.profile.symbol("special_mapping_vmops") {
                if vma.ops.0 == ops.wrapping_add(self.placement.virt_shift)
                    && is_kernel_va(vma.private_data)
                {
                    let name = self.ptr(
                        vma.private_data.wrapping_add(vl.special_name),
                        "vm_special_mapping.name",
                    )?;
                    if name != 0 {
                        let n = self
                            .space
                            .read_cstr(Va(name), MAX_MAP_NAME)
                            .map_err(read_err("vm_special_mapping.name"))?;
                        return Ok(MapName::Special(n));
                    }
                }
            }
        }
        let heap = if vl.strict_heap {
            vma.start < b.brk && vma.end > b.start_brk
        } else {
            vma.start <= b.brk && vma.end >= b.start_brk
        };
        if heap {
            return Ok(MapName::Heap);
        }
        if vma.start <= b.start_stack && vma.end >= b.start_stack {
            return Ok(MapName::Stack);
        }
        if vma.anon_name != 0 && vma.ops.0 == 0 {
            if !is_kernel_va(vma.anon_name) {
                return Err(KernelError::BadPointer {
                    what: "vm_area_struct.anon_name",
                    value: vma.anon_name,
                });
            }
            let n = self
                .space
                .read_cstr(Va(vma.anon_name + ANON_NAME_OFFSET), MAX_MAP_NAME)
                .map_err(read_err("anon_vma_name.name"))?;
            return Ok(MapName::Anon(n));
        }
        Ok(MapName::None)
    }

    fn mapped_file(&self, file: Va, vl: &VmaLayout) -> Result<MappedFile, KernelError> {
        let (path, linkage) = match self.file_name(file.0)? {
            Some(n) => (n.path, n.linkage),
            None => (Vec::new(), Linkage::Linked),
        };
        let inode = self.ptr(file.0.wrapping_add(vl.file_inode), "file.f_inode")?;
        if inode == 0 {
            return Ok(MappedFile {
                path,
                linkage,
                dev: 0,
                inode: 0,
            });
        }
        let ino = self
            .space
            .read_u64(Va(inode.wrapping_add(vl.inode_ino)))
            .map_err(read_err("inode.i_ino"))?;
        let sb = self.ptr(inode.wrapping_add(vl.inode_sb), "inode.i_sb")?;
        let dev = if sb == 0 {
            0
        } else {
            let mut b = [0u8; 4];
            self.space
                .read_virt(Va(sb.wrapping_add(vl.sb_dev)), &mut b)
                .map_err(read_err("super_block.s_dev"))?;
            u32_at(&b, 0)
        };
        Ok(MappedFile {
            path,
            linkage,
            dev,
            inode: ino,
        })
    }

    /// Up to `len` bytes (at most [`MAX_USER_READ`]) at the user address `at` of the
    /// address space `mm`, read through its page table: cut short at the first page
    /// that is not resident; [`UserBytes::NotResident`] when the first is not.
    pub fn user_bytes(&self, mm: Va, at: u64, len: usize) -> Result<UserBytes, KernelError> {
        let len = len.min(MAX_USER_READ);
        if at >= USER_TOP || at.saturating_add(len as u64) > USER_TOP {
            return Err(KernelError::Corrupt {
                what: format!("user range {at:#x} + {len:#x}"),
                at: mm,
            });
        }
        let user = self.user_space(mm)?;
        let mut out = Vec::with_capacity(len);
        let mut va = at;
        while out.len() < len {
            let n = ((0x1000 - (va & 0xfff)) as usize).min(len - out.len());
            let mut page = vec![0u8; n];
            match user.read_virt(Va(va), &mut page) {
                Ok(()) => out.extend_from_slice(&page),
                Err(ReadError::Translate(TranslateError::NotPresent { .. })) => break,
                Err(e) => return Err(read_err("process memory")(e)),
            }
            va += n as u64;
        }
        if out.is_empty() && len > 0 {
            return Ok(UserBytes::NotResident);
        }
        Ok(UserBytes::Resident(out))
    }
}

/// The entries of the maple tree whose root is `root`, with the range each slot
/// covers, appended to `out` in index order (at most `max`).
pub(crate) fn maple_entries<V: VirtualMemory + ?Sized>(
    mem: &V,
    root: u64,
    max: usize,
    out: &mut Vec<(u64, u64, u64)>,
) -> Result<(), KernelError> {
    const WHAT: &str = "mm_struct.mm_mt";
    if root == 0 {
        return Ok(());
    }
    if !is_node(root) {
        // one entry, at index 0
        if !is_kernel_va(root) {
            return Err(KernelError::BadPointer {
                what: WHAT,
                value: root,
            });
        }
        out.push((root, 0, u64::MAX));
        return Ok(());
    }
    let mut seen: HashSet<u64> = HashSet::new();
    let max_nodes = 2 * max + 16;
    // depth-first, lowest range first: (enode, min, max, depth)
    let mut stack: Vec<(u64, u64, u64, usize)> = vec![(root, 0, u64::MAX, 1)];
    let mut buf = [0u8; MAPLE_NODE_SIZE];
    while let Some((enode, min, nmax, depth)) = stack.pop() {
        let node = enode & !(MAPLE_NODE_SIZE as u64 - 1);
        if !is_kernel_va(node) {
            return Err(KernelError::BadPointer {
                what: "maple node",
                value: enode,
            });
        }
        if !seen.insert(node) {
            return Err(KernelError::Cycle {
                what: WHAT,
                at: Va(node),
                after: seen.len(),
            });
        }
        if seen.len() > max_nodes {
            return Err(KernelError::TooLong {
                what: "mm_struct.mm_mt nodes",
                max: max_nodes,
            });
        }
        if depth > MAPLE_HEIGHT_MAX {
            return Err(KernelError::TooLong {
                what: "mm_struct.mm_mt depth",
                max: MAPLE_HEIGHT_MAX,
            });
        }
        mem.read_virt(Va(node), &mut buf)
            .map_err(read_err("maple node"))?;
        let corrupt = |what: String| KernelError::Corrupt { what, at: Va(node) };
        // a dead node (freed, its parent pointing at itself): the tree changed
        // under the walk
        if u64_at(&buf, 0) & !(MAPLE_NODE_SIZE as u64 - 1) == node {
            return Err(corrupt(
                "a dead maple node (the tree changed while read)".into(),
            ));
        }
        let ty = (enode >> 3) & 0xf;
        let (pivots, slots, meta_end) = match ty {
            MAPLE_LEAF_64 | MAPLE_RANGE_64 => (15usize, 128u64, 248usize),
            MAPLE_ARANGE_64 => (9, 80, 240),
            t => return Err(corrupt(format!("maple node of type {t}"))),
        };
        let pivot = |i: usize| u64_at(&buf, 8 + 8 * i as u64);
        let end = if ty == MAPLE_ARANGE_64 || pivot(pivots - 1) == 0 {
            usize::from(buf[meta_end])
        } else if pivot(pivots - 1) == nmax {
            pivots - 1
        } else {
            pivots
        };
        if end > pivots {
            return Err(corrupt(format!("maple node data end {end}")));
        }
        let mut children = Vec::new();
        let mut lo = min;
        for i in 0..=end {
            let p = if i < pivots { pivot(i) } else { 0 };
            let hi = if i < pivots && (p != 0 || i == 0) {
                p
            } else {
                nmax
            };
            if hi < lo || hi > nmax {
                return Err(corrupt(format!(
                    "maple node slot {i} covers {lo:#x}..={hi:#x} outside {min:#x}..={nmax:#x}"
                )));
            }
            let slot = u64_at(&buf, slots + 8 * i as u64);
            if ty == MAPLE_LEAF_64 {
                if slot != 0 && !is_reserved(slot) {
                    if !is_kernel_va(slot) {
                        return Err(KernelError::BadPointer {
                            what: "maple leaf entry",
                            value: slot,
                        });
                    }
                    if out.len() >= max {
                        return Err(KernelError::TooLong {
                            what: "mm_struct.mm_mt entries (more than map_count)",
                            max,
                        });
                    }
                    out.push((slot, lo, hi));
                }
            } else {
                // a child is its node's address with the type in bits 3..6 and
                // MAPLE_ENODE_NULL (bit 2); only the root also has bit 1
                if !is_kernel_va(slot) || slot & 0x4 == 0 {
                    return Err(corrupt(format!("maple child {slot:#x} in slot {i}")));
                }
                children.push((slot, lo, hi, depth + 1));
            }
            if hi == nmax {
                break;
            }
            lo = hi + 1;
        }
        // lowest range popped first
        stack.extend(children.into_iter().rev());
    }
    Ok(())
}

/// An encoded maple node: an xarray internal entry (low bits `10`) above 4096.
fn is_node(v: u64) -> bool {
    v & 3 == 2 && v > 4096
}

/// A reserved value in a leaf (an xarray internal entry that is no node, such as
/// `XA_ZERO_ENTRY`), not a VMA.
fn is_reserved(v: u64) -> bool {
    v & 3 == 2 && v <= 4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_compare_by_major_and_minor() {
        assert!(!release_at_least("6.1.0-56-amd64", (6, 6)));
        assert!(release_at_least("6.12.117+deb12-amd64", (6, 6)));
        assert!(release_at_least("7.2.13+deb14-amd64", (6, 6)));
        assert!(!release_at_least("5.10.0-46-amd64", (6, 6)));
        assert!(!release_at_least("", (6, 6)));
    }

    #[test]
    fn encoded_nodes_and_reserved_entries() {
        // an arange_64 node at a 256-byte aligned address: type 3 in bits 3..6, bit 1
        let node = 0xffff_8880_0123_4500u64;
        let enode = node | (3 << 3) | 2;
        assert!(is_node(enode));
        assert_eq!((enode >> 3) & 0xf, 3);
        assert!(!is_node(0xffff_8880_0123_4500));
        // XA_ZERO_ENTRY = xa_mk_internal(257)
        assert!(is_reserved((257 << 2) | 2));
        assert!(!is_reserved(node));
    }

    use crate::kernel::objects::tests::Flat;

    const BASE: u64 = 0xffff_8880_0010_0000;

    /// A leaf (maple_leaf_64) at `at` with (pivot, slot) pairs, `end` in its metadata.
    fn leaf(m: &mut Flat, at: u64, entries: &[(u64, u64)]) {
        for (i, (p, v)) in entries.iter().enumerate() {
            if i < 15 {
                m.put(at + 8 + 8 * i as u64, &p.to_le_bytes());
            }
            m.put(at + 128 + 8 * i as u64, &v.to_le_bytes());
        }
        m.put(at + 248, &[(entries.len() - 1) as u8]);
    }

    fn enode(node: u64, ty: u64) -> u64 {
        node | (ty << 3) | 4
    }

    fn root(node: u64, ty: u64) -> u64 {
        enode(node, ty) | 2
    }

    #[test]
    fn walks_a_two_level_maple_tree_in_order() {
        let mut m = Flat::new(BASE, 0x1000);
        let (root_node, a, b) = (BASE, BASE + 0x100, BASE + 0x200);
        let (v1, v2, v3) = (BASE + 0x800, BASE + 0x900, BASE + 0xa00);
        // root: arange_64 with two children, split at 0x4fff
        m.put(root_node + 8, &0x4fffu64.to_le_bytes());
        m.put(root_node + 80, &enode(a, MAPLE_LEAF_64).to_le_bytes());
        m.put(root_node + 88, &enode(b, MAPLE_LEAF_64).to_le_bytes());
        m.put(root_node + 240, &[1]);
        // a: gap, VMA 0x1000..0x3000, gap up to 0x4fff
        leaf(&mut m, a, &[(0xfff, 0), (0x2fff, v1), (0x4fff, 0)]);
        // b: VMA 0x5000..0x6000, XA_ZERO_ENTRY, VMA 0x8000..0x9000, gap to the top
        leaf(
            &mut m,
            b,
            &[(0x5fff, v2), (0x7fff, (257 << 2) | 2), (0x8fff, v3), (0, 0)],
        );
        let mut out = Vec::new();
        maple_entries(&m, root(root_node, MAPLE_ARANGE_64), 10, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                (v1, 0x1000, 0x2fff),
                (v2, 0x5000, 0x5fff),
                (v3, 0x8000, 0x8fff)
            ]
        );
        // more entries than map_count allows
        let e =
            maple_entries(&m, root(root_node, MAPLE_ARANGE_64), 2, &mut Vec::new()).unwrap_err();
        assert!(matches!(e, KernelError::TooLong { max: 2, .. }), "{e}");
        // a child pointing back at the root
        m.put(
            root_node + 88,
            &enode(root_node, MAPLE_ARANGE_64).to_le_bytes(),
        );
        let e =
            maple_entries(&m, root(root_node, MAPLE_ARANGE_64), 10, &mut Vec::new()).unwrap_err();
        assert!(matches!(e, KernelError::Cycle { .. }), "{e}");
        // a child that is no node, and a node type no mm tree has
        m.put(root_node + 88, &0x4141_4141u64.to_le_bytes());
        let e =
            maple_entries(&m, root(root_node, MAPLE_ARANGE_64), 10, &mut Vec::new()).unwrap_err();
        assert!(matches!(e, KernelError::Corrupt { .. }), "{e}");
        let e = maple_entries(&m, root(a, 0), 10, &mut Vec::new()).unwrap_err();
        assert!(matches!(e, KernelError::Corrupt { .. }), "{e}");
        // pivots that go backwards
        leaf(&mut m, a, &[(0x2fff, v1), (0x1fff, v2)]);
        let e = maple_entries(&m, root(a, MAPLE_LEAF_64), 10, &mut Vec::new()).unwrap_err();
        assert!(matches!(e, KernelError::Corrupt { .. }), "{e}");
    }

    #[test]
    fn perms_as_proc_prints_them() {
        let v = Vma {
            addr: Va(0),
            start: 0x1000,
            end: 0x2000,
            flags: VM_READ | VM_EXEC | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC,
            pgoff: 0,
            file: Va(0),
            ops: Va(0),
            private_data: 0,
            anon_name: 0,
        };
        assert_eq!(v.perms(), "r-xp");
        assert!(v.is_anonymous() && v.is_exec() && !v.is_write());
        let s = Vma {
            flags: VM_READ | VM_WRITE | VM_MAYSHARE | VM_SHARED,
            ops: Va(0xffff_ffff_8200_0000),
            ..v
        };
        assert_eq!(s.perms(), "rw-s");
        assert!(s.is_special() && !s.is_anonymous());
    }
}
