//! Guest RAM read from the QEMU process's own address space, for guests whose RAM no
//! shared file holds: anonymous memory (QEMU's default), `memory-backend-ram`, memfd,
//! hugepages, a file mapped privately. The RAM block is found in `/proc/PID/maps` by
//! its size (and its name where the mapping has one). A block QEMU maps shared from a
//! sealed memfd (`memory-backend-memfd`, libvirt's `<source type='memfd'/>`) is mapped
//! here too, through `/proc/PID/map_files` (root), and read as the RAM file is; any
//! other is copied with `process_vm_readv`, which needs the right to trace the process
//! (root, or CAP_SYS_PTRACE).

use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

use super::pages::{Fetch, Pages, Stats};
use crate::error::Error;
use crate::memory::file::MappedFile;

/// Most lines read from `/proc/PID/maps` (a QEMU process has a few thousand).
const MAX_MAPS_LINES: usize = 1 << 17;

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vma {
    /// First address.
    pub start: u64,
    /// One past the last.
    pub end: u64,
    /// `rw-p`, `r-xp`, ...
    pub perms: String,
    /// The offset in the mapped file.
    pub offset: u64,
    /// The path column (empty for anonymous memory).
    pub path: String,
}

impl Vma {
    /// Readable and writable, not executable: what QEMU maps guest RAM as (TCG's code
    /// buffer, often as large as guest RAM, is executable).
    fn is_ram_like(&self) -> bool {
        self.perms.starts_with("rw") && !self.perms.contains('x')
    }
}

/// Parse the text of `/proc/PID/maps` (bounded; malformed lines are skipped).
pub fn parse_maps(text: &str) -> Vec<Vma> {
    text.lines()
        .take(MAX_MAPS_LINES)
        .filter_map(|line| {
            let mut f = line.splitn(6, ' ');
            let (a, b) = f.next()?.split_once('-')?;
            let start = u64::from_str_radix(a, 16).ok()?;
            let end = u64::from_str_radix(b, 16).ok()?;
            let perms = f.next()?.to_string();
            let offset = u64::from_str_radix(f.next()?, 16).ok()?;
            let path = f
                .nth(2)
                .map(|p| p.trim_start().to_string())
                .unwrap_or_default();
            (start < end).then_some(Vma {
                start,
                end,
                perms,
                offset,
                path,
            })
        })
        .collect()
}

/// What is known of the RAM block to find.
#[derive(Debug, Clone)]
pub struct BlockHint {
    /// The backend's id (`pc.ram`); a memfd backend's mapping is `/memfd:ID (deleted)`.
    pub id: String,
    /// The block's size in bytes.
    pub size: u64,
    /// The file of a file backend (`mem-path`).
    pub mem_path: Option<String>,
}

/// A run of RAM-like mappings of one kind (adjacent VMAs merged: the kernel splits a
/// mapping where madvise or THP change part of it, and merges an anonymous mapping with
/// its anonymous neighbour).
struct Extent<'a> {
    start: u64,
    end: u64,
    path: &'a str,
    /// A no-access mapping follows at once: QEMU's guard page after a RAM block.
    guarded: bool,
}

fn extents(vmas: &[Vma]) -> Vec<Extent<'_>> {
    let mut out: Vec<Extent<'_>> = Vec::new();
    let mut last_ram_like = false;
    for v in vmas {
        if !v.is_ram_like() {
            if last_ram_like {
                if let Some(e) = out.last_mut() {
                    e.guarded = e.end == v.start && v.perms.starts_with("---");
                }
            }
            last_ram_like = false;
            continue;
        }
        match out.last_mut() {
            Some(e) if last_ram_like && e.end == v.start && e.path == v.path.as_str() => {
                e.end = v.end;
            }
            _ => out.push(Extent {
                start: v.start,
                end: v.end,
                path: v.path.as_str(),
                guarded: false,
            }),
        }
        last_ram_like = true;
    }
    out
}

/// The largest RAM-like mappings, for an error that says what was there instead.
fn largest(vmas: &[Vma]) -> String {
    let mut e = extents(vmas);
    e.sort_by_key(|e| std::cmp::Reverse(e.end - e.start));
    e.iter()
        .take(3)
        .map(|e| {
            format!(
                "{:#x}..{:#x} ({} MiB{}) {}",
                e.start,
                e.end,
                (e.end - e.start) >> 20,
                if e.guarded { ", guarded" } else { "" },
                e.path
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the block can be: (start, end) in QEMU's address space. A mapping that names
/// the block (its memfd or file) is the answer when there is one. Otherwise anonymous
/// memory or a memfd: QEMU maps a block at a 2 MiB boundary with a guard page right after it, so
/// the block is the last `size` bytes of a mapping followed by a guard (the kernel may
/// have merged the mapping before it into the same VMA), or a mapping of the block's
/// size (at most 2 MiB of alignment more) without one.
pub fn candidates(vmas: &[Vma], hint: &BlockHint) -> Vec<(u64, u64)> {
    let extents = extents(vmas);
    let memfd = format!("/memfd:{} (deleted)", hint.id);
    let named = |path: &str| {
        path == memfd
            || hint
                .mem_path
                .as_deref()
                .is_some_and(|p| path == p || path.strip_suffix(" (deleted)") == Some(p))
    };
    let by_name: Vec<(u64, u64)> = extents
        .iter()
        .filter(|e| named(e.path) && e.end - e.start >= hint.size)
        .map(|e| (e.start, e.start + hint.size))
        .collect();
    if !by_name.is_empty() {
        return by_name;
    }
    extents
        .iter()
        // anonymous memory, or a memfd QEMU named after the backend's type
        // (`/memfd:memory-backend-memfd (deleted)` in QEMU 7)
        .filter(|e| {
            (e.path.is_empty() || e.path.starts_with("/memfd:")) && e.end - e.start >= hint.size
        })
        .filter_map(|e| {
            let len = e.end - e.start;
            if e.guarded && (e.end - hint.size).is_multiple_of(4096) {
                Some((e.end - hint.size, e.end))
            } else if len - hint.size <= 2 << 20 {
                Some((e.start, e.start + hint.size))
            } else {
                None
            }
        })
        .collect()
}

/// A RAM block in a running QEMU process.
#[derive(Debug)]
pub struct ProcessRam {
    pid: i32,
    base: u64,
    len: u64,
    /// The process's start time (`/proc/PID/stat` field 22): a pid reused by another
    /// process is not mistaken for QEMU.
    start_time: u64,
    /// Recently read pages, until [`ProcessRam::invalidate`] (or 20 ms).
    pages: Mutex<Pages>,
    /// The block mapped here, when QEMU maps it shared from a sealed memfd.
    mapped: Option<MappedFile>,
}

fn proc_path(pid: i32, what: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{what}"))
}

/// An error reading `/proc/PID/...`, with what to do about a missing permission.
pub(crate) fn proc_err(pid: i32, what: &str, e: &io::Error) -> Error {
    let hint = if e.kind() == io::ErrorKind::PermissionDenied {
        format!(
            ": run as root or with CAP_SYS_PTRACE (kernel.yama.ptrace_scope is {}); an AppArmor or SELinux profile confining QEMU can also refuse it",
            std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "not set".into())
        )
    } else if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) {
        ": the process is gone".to_string()
    } else {
        String::new()
    };
    Error::Qemu(format!("QEMU process {pid}: {what}: {e}{hint}"))
}

/// The start time of process `pid` (clock ticks since boot).
pub(crate) fn start_time(pid: i32) -> Result<u64, Error> {
    let stat = std::fs::read_to_string(proc_path(pid, "stat"))
        .map_err(|e| proc_err(pid, "reading /proc/PID/stat", &e))?;
    // the command name (field 2) is in parentheses and may hold spaces
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19)?.parse().ok())
        .ok_or_else(|| Error::Qemu(format!("QEMU process {pid}: unreadable /proc/PID/stat")))
}

impl ProcessRam {
    /// Find the block `hint` describes in process `pid`. `verify` says whether a
    /// candidate holds the guest's RAM (e.g. by comparing bytes QEMU's monitor reads);
    /// it decides between several candidates.
    pub fn find(
        pid: i32,
        hint: &BlockHint,
        verify: &mut dyn FnMut(&ProcessRam) -> Result<bool, Error>,
    ) -> Result<ProcessRam, Error> {
        let start_time = start_time(pid)?;
        let maps = std::fs::read_to_string(proc_path(pid, "maps"))
            .map_err(|e| proc_err(pid, "reading its memory map (/proc/PID/maps)", &e))?;
        let vmas = parse_maps(&maps);
        let found = candidates(&vmas, hint);
        let ram = |(base, end): (u64, u64)| ProcessRam::new(pid, base, end - base, start_time);
        match found.as_slice() {
            [] => Err(Error::Qemu(format!(
                "QEMU process {pid} maps no memory of the size of its RAM block {:?} ({} bytes): is the VM paused for migration, or is its RAM elsewhere (NUMA nodes)? Its largest read-write mappings: {}",
                hint.id, hint.size, largest(&vmas)
            ))),
            [one] => {
                let r = ram(*one);
                r.check_readable()?;
                Ok(r.map_shared(&vmas))
            }
            many => {
                let mut matching = Vec::new();
                for &c in many {
                    let r = ram(c);
                    r.check_readable()?;
                    if verify(&r)? {
                        matching.push(r);
                    }
                }
                if matching.len() == 1 {
                    Ok(matching.remove(0).map_shared(&vmas))
                } else {
                    Err(Error::Qemu(format!(
                        "QEMU process {pid} maps {} regions of the size of its RAM block {:?} and {} of them hold the guest's RAM; give the QMP socket to tell them apart",
                        many.len(),
                        hint.id,
                        matching.len()
                    )))
                }
            }
        }
    }

    fn new(pid: i32, base: u64, len: u64, start_time: u64) -> ProcessRam {
        ProcessRam {
            pid,
            base,
            len,
            start_time,
            pages: Mutex::new(Pages::new()),
            mapped: None,
        }
    }

    /// The same block, mapped here when QEMU maps it shared (`rw-s`) from a memfd sealed
    /// against shrinking, in one mapping: then reads cost what the RAM file's do. Any
    /// other block (anonymous memory, a private or unsealed mapping), or a mapping the
    /// kernel refuses (`/proc/PID/map_files` needs CAP_SYS_ADMIN), is read through the
    /// process as before.
    fn map_shared(mut self, vmas: &[Vma]) -> ProcessRam {
        let Some(v) = vmas
            .iter()
            .find(|v| v.start <= self.base && self.base + self.len <= v.end)
        else {
            return self;
        };
        if !v.perms.starts_with("rw-s") || !v.path.starts_with("/memfd:") {
            return self;
        }
        let link = proc_path(self.pid, &format!("map_files/{:x}-{:x}", v.start, v.end));
        let Ok(file) = std::fs::File::open(&link) else {
            return self;
        };
        // SAFETY: fcntl(F_GET_SEALS) on a descriptor we own.
        let seals =
            unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&file), libc::F_GET_SEALS) };
        let offset = v.offset + (self.base - v.start);
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if seals < 0
            || seals & libc::F_SEAL_SHRINK == 0
            || offset.checked_add(self.len).is_none_or(|e| e > size)
        {
            return self;
        }
        // sealed against shrinking and inside its size (checked above): no access to
        // the mapping can raise SIGBUS
        if let Ok(map) = MappedFile::map_part(&file, &link, offset, self.len as usize) {
            self.mapped = Some(map);
        }
        self
    }

    /// True when the block is mapped here rather than read through the process.
    pub fn is_mapped(&self) -> bool {
        self.mapped.is_some()
    }

    /// Forget the kept pages: the next read sees the guest as it is now (and reads
    /// back at once the pages the reads since the last invalidate used).
    pub fn invalidate(&self) {
        if let Ok(mut p) = self.pages.lock() {
            p.invalidate();
        }
    }

    /// Copy `buf.len()` bytes from offset `off` of the block, through the kept pages.
    pub fn read(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        if let Some(map) = &self.mapped {
            let end = off.checked_add(buf.len() as u64);
            if end.is_none_or(|e| e > self.len) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "read past the RAM block",
                ));
            }
            map.copy_out(off, buf);
            return Ok(());
        }
        match self.pages.lock() {
            Ok(mut p) => p.read(self, off, buf),
            Err(_) => self.copy_out(off, buf),
        }
    }

    /// Reads and system calls so far.
    pub fn stats(&self) -> Stats {
        self.pages.lock().map(|p| p.stats()).unwrap_or_default()
    }

    /// The block's size.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// QEMU's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    fn check_readable(&self) -> Result<(), Error> {
        let mut b = [0u8; 8];
        self.copy_out(0, &mut b)
            .map_err(|e| proc_err(self.pid, "reading its memory (process_vm_readv)", &e))
    }

    /// True while the same process (same pid, same start time) runs.
    pub fn alive(&self) -> Result<(), Error> {
        match start_time(self.pid) {
            Ok(t) if t == self.start_time => Ok(()),
            Ok(_) => Err(Error::Qemu(format!(
                "QEMU process {} has exited (its pid now belongs to another process)",
                self.pid
            ))),
            Err(_) => Err(Error::Qemu(format!("QEMU process {} has exited", self.pid))),
        }
    }

    /// Copy `buf.len()` bytes from offset `off` of the block.
    pub fn copy_out(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = off.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "read past the RAM block",
            ));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let local = libc::iovec {
                iov_base: buf[done..].as_mut_ptr().cast(),
                iov_len: buf.len() - done,
            };
            let remote = libc::iovec {
                iov_base: (self.base + off + done as u64) as *mut libc::c_void,
                iov_len: buf.len() - done,
            };
            // SAFETY: `local` describes the unread tail of `buf`, exclusively borrowed;
            // `remote` is an address in another process, which the kernel checks (a bad
            // one is EFAULT, never a fault here).
            let n = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "QEMU's mapping ended inside the RAM block",
                ));
            }
            done += n as usize;
        }
        Ok(())
    }
}

impl Fetch for ProcessRam {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_vectored(&self, parts: &mut [(u64, &mut [u8])]) -> io::Result<usize> {
        let mut local = Vec::with_capacity(parts.len());
        let mut remote = Vec::with_capacity(parts.len());
        for (off, buf) in parts.iter_mut() {
            let end = off.checked_add(buf.len() as u64);
            if end.is_none_or(|e| e > self.len) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "read past the RAM block",
                ));
            }
            local.push(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            });
            remote.push(libc::iovec {
                iov_base: (self.base + *off) as *mut libc::c_void,
                iov_len: buf.len(),
            });
        }
        // SAFETY: each `local` entry describes one of the exclusively borrowed buffers
        // of `parts`; `remote` holds addresses in another process, which the kernel
        // checks (a bad one is EFAULT or a short count, never a fault here).
        let n = unsafe {
            libc::process_vm_readv(
                self.pid,
                local.as_ptr(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::super::pages::PAGE;
    use super::*;

    const MAPS: &str = "\
55d0c0000000-55d0c0a00000 r-xp 00000000 08:01 1234 /usr/bin/qemu-system-x86_64
7f0000000000-7f0040000000 rwxp 00000000 00:00 0 
7f1000000000-7f1000001000 ---p 00000000 00:00 0 
7f1000200000-7f1020000000 rw-p 00000000 00:00 0 
7f1020000000-7f1040000000 rw-p 00000000 00:00 0 
7f1040000000-7f1040200000 ---p 00000000 00:00 0 
7f2000000000-7f2001000000 rw-p 00000000 00:00 0 
7f3000000000-7f3040000000 rw-s 00000000 00:01 77 /memfd:pc.ram (deleted)
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
garbage line
";

    #[test]
    fn maps_lines() {
        let v = parse_maps(MAPS);
        assert_eq!(v.len(), 9);
        assert_eq!(v[0].path, "/usr/bin/qemu-system-x86_64");
        assert_eq!(v[7].path, "/memfd:pc.ram (deleted)");
        assert_eq!(v[8].path, "[stack]");
        assert_eq!(v[1].perms, "rwxp");
    }

    #[test]
    fn the_block_by_size_or_by_name() {
        let v = parse_maps(MAPS);
        // by size: the split anonymous mapping (511 MiB + 512 MiB, merged), not the
        // executable TCG buffer of the same size
        let anon = BlockHint {
            id: "pc.ram".into(),
            size: (1 << 30) - (2 << 20),
            mem_path: None,
        };
        let got = candidates(&v[..7], &anon);
        assert_eq!(got, vec![(0x7f10_0020_0000, 0x7f10_4000_0000)]);
        // a memfd names its backend
        let memfd = BlockHint {
            size: 1 << 30,
            ..anon.clone()
        };
        assert_eq!(
            candidates(&v, &memfd),
            vec![(0x7f30_0000_0000, 0x7f30_4000_0000)]
        );
        // QEMU 7 names a memfd after the backend's type, not its id
        let typed = "7f3000000000-7f3040000000 rw-s 00000000 00:01 77 /memfd:memory-backend-memfd (deleted)\n7f3040000000-7f3040001000 ---p 00000000 00:00 0 \n";
        let lab = BlockHint {
            id: "lab-ram".into(),
            size: 1 << 30,
            mem_path: None,
        };
        assert_eq!(
            candidates(&parse_maps(typed), &lab),
            vec![(0x7f30_0000_0000, 0x7f30_4000_0000)]
        );
        // nothing of the size
        let big = BlockHint {
            id: "other".into(),
            size: 8 << 30,
            mem_path: None,
        };
        assert!(candidates(&v, &big).is_empty());
    }

    #[test]
    fn the_block_at_the_end_of_a_merged_mapping() {
        // seen on a 4 GiB q35 guest: the kernel merged 14 MiB of other anonymous memory
        // before the block into its VMA; the guard page after it stays
        let maps = "\
7f61f702f000-7f62f7e00000 rw-p 00000000 00:00 0 
7f62f7e00000-7f62f7e01000 ---p 00000000 00:00 0 
7f6300000000-7f6340000000 rw-p 00000000 00:00 0 
";
        let hint = BlockHint {
            id: "pc.ram".into(),
            size: 4 << 30,
            mem_path: None,
        };
        assert_eq!(
            candidates(&parse_maps(maps), &hint),
            vec![(0x7f61_f7e0_0000, 0x7f62_f7e0_0000)]
        );
        // without the guard, a mapping much larger than the block is not it
        let unguarded = maps.lines().take(1).collect::<Vec<_>>().join("\n");
        assert!(candidates(&parse_maps(&unguarded), &hint).is_empty());
        assert!(largest(&parse_maps(maps)).contains("4109 MiB, guarded"));
    }

    #[test]
    fn kept_pages_until_invalidated() {
        let mut data = vec![7u8; 12 * PAGE as usize];
        let me = std::process::id() as i32;
        let ram = ProcessRam::new(
            me,
            data.as_ptr() as u64,
            data.len() as u64,
            start_time(me).unwrap(),
        );
        let mut b = vec![0u8; 100];
        // across a chunk boundary
        ram.read(4 * PAGE - 50, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 7));
        // the process changes its memory: after invalidate the read sees it
        data[4 * PAGE as usize] = 9;
        std::hint::black_box(&data);
        ram.invalidate();
        ram.read(4 * PAGE, &mut b[..1]).unwrap();
        assert_eq!(b[0], 9);
        assert!(ram.read(12 * PAGE - 10, &mut b[..20]).is_err());
        let mut all = vec![0u8; data.len()];
        ram.read(0, &mut all).unwrap();
        assert_eq!(all, data);
    }

    #[test]
    fn this_process_reads_itself() {
        let data: Vec<u8> = (0..=255u8).cycle().take(3 * 4096).collect();
        let me = std::process::id() as i32;
        let ram = ProcessRam::new(
            me,
            data.as_ptr() as u64,
            data.len() as u64,
            start_time(me).unwrap(),
        );
        let mut buf = vec![0u8; 5000];
        ram.copy_out(4000, &mut buf).unwrap();
        assert_eq!(buf, data[4000..9000]);
        assert!(ram.copy_out(3 * 4096 - 4, &mut [0u8; 8]).is_err());
        assert!(ram.alive().is_ok());
        let gone = ProcessRam::new(me, ram.base, ram.len, 1);
        assert!(gone.alive().is_err());
    }

    #[test]
    fn a_sealed_shared_memfd_is_mapped_and_anything_else_copied() {
        let len = 64 * PAGE as usize;
        let me = std::process::id() as i32;
        // SAFETY: plain system calls on a memfd this test owns; the mapping is used only
        // through `block` below and unmapped at the end.
        let (fd, block) = unsafe {
            let fd = libc::memfd_create(c"pc.ram".as_ptr(), libc::MFD_ALLOW_SEALING);
            assert!(fd >= 0);
            assert_eq!(libc::ftruncate(fd, len as i64), 0);
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            (fd, std::slice::from_raw_parts_mut(p.cast::<u8>(), len))
        };
        block[5 * PAGE as usize] = 42;
        let maps = || parse_maps(&std::fs::read_to_string("/proc/self/maps").unwrap());
        let ram = |maps: &[Vma]| {
            ProcessRam::new(
                me,
                block.as_ptr() as u64,
                len as u64,
                start_time(me).unwrap(),
            )
            .map_shared(maps)
        };
        // not sealed: copied through the process
        let unsealed = ram(&maps());
        assert!(!unsealed.is_mapped());
        // sealed against shrinking: mapped, where /proc/PID/map_files may be opened
        // (CAP_SYS_ADMIN), else copied as well
        // SAFETY: fcntl on the memfd above.
        assert_eq!(
            unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) },
            0
        );
        let sealed = ram(&maps());
        let may_map = std::fs::File::open(format!(
            "/proc/self/map_files/{:x}-{:x}",
            block.as_ptr() as u64,
            block.as_ptr() as u64 + len as u64
        ))
        .is_ok();
        assert_eq!(sealed.is_mapped(), may_map);
        for r in [&unsealed, &sealed] {
            let mut b = [0u8; 2];
            r.read(5 * PAGE - 1, &mut b).unwrap();
            assert_eq!(b, [0, 42]);
            assert!(r.read(len as u64 - 1, &mut b).is_err());
        }
        // the mapping follows the writer
        block[7] = 9;
        let mut b = [0u8; 1];
        sealed.read(7, &mut b).unwrap();
        assert_eq!(b[0], 9);
        // SAFETY: the mapping and descriptor made above, no longer used.
        unsafe {
            libc::munmap(block.as_mut_ptr().cast(), len);
            libc::close(fd);
        }
    }
}
