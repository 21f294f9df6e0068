//! Paths of files the kernel holds: a process's executable (`mm->exe_file`), the files
//! it maps (`vm_area_struct.vm_file`).
//!
//! A path is rebuilt the way the kernel's `d_path` does it: from the dentry up through
//! `d_parent` to the root of its mount, then across to the mount point in the parent
//! mount (`mount.mnt_mountpoint`, `mount.mnt_parent`), until the root mount. Bounded:
//! at most [`MAX_PATH_COMPONENTS`] steps and [`MAX_NAME`] bytes per name; a loop in the
//! guest's dentries or mounts ends the walk with an error.
//!
//! A file's name also says what `d_path` adds to the path ([`FileName`], whose
//! [`FileName::display`] is what `/proc/PID/exe` and `/proc/PID/maps` print):
//!
//! - a file unlinked while open or mapped (`d_unlinked`: its dentry is not hashed,
//!   `dentry.d_hash.pprev` null, and not a root, its own `d_parent`) is printed with
//!   ` (deleted)` after its last path (a binary replaced by a package upgrade, or
//!   removed by the program that runs from it);
//! - a file with no place in any directory tree, made by `alloc_file_pseudo` on an
//!   internal mount whose dentries name themselves with `simple_dname` (`d_op->d_dname`
//!   is the symbol `simple_dname`): `memfd_create`'s files (`memfd:NAME` on the shmem
//!   mount), shared anonymous memory (`dev/zero`), System V segments (`SYSV...`),
//!   `[aio]`; printed as `/NAME (deleted)`. Without the symbol in the profile such a
//!   file keeps its bare name (`memfd:NAME`), as before.
//!
//! Fields used ([`FileLayout`]): `mm_struct.exe_file`, `file.f_path`, `path.dentry`,
//! `path.mnt`, `dentry.d_name`, `dentry.d_parent`, `dentry.d_hash`, `dentry.d_op`,
//! `hlist_bl_node.pprev`, `dentry_operations.d_dname`, `qstr.name`,
//! `mount.mnt_parent`, `mount.mnt_mountpoint`, `mount.mnt`, `vfsmount.mnt_root`; the
//! symbol `simple_dname` (optional).

use std::collections::HashSet;

use crate::addr::Va;
use crate::kernel::objects::is_kernel_va;
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// Most path components walked (dentries and mount crossings together).
pub const MAX_PATH_COMPONENTS: usize = 256;
/// Longest name read (NAME_MAX is 255).
pub const MAX_NAME: usize = 256;

crate::kernel_layout! {
    /// Offsets the path walk uses.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct FileLayout(p) {
        /// `mm_struct.exe_file`
        pub mm_exe_file: u64 = "mm_struct" ["exe_file"],
        /// `file.f_path`
        pub file_path: u64 = "file" ["f_path"],
        /// `path.dentry`
        pub path_dentry: u64 = "path" ["dentry"],
        /// `path.mnt`
        pub path_mnt: u64 = "path" ["mnt"],
        /// `dentry.d_name`
        pub dentry_name: u64 = "dentry" ["d_name"],
        /// `dentry.d_parent`
        pub dentry_parent: u64 = "dentry" ["d_parent"],
        /// `qstr.name`
        pub qstr_name: u64 = "qstr" ["name"],
        /// `mount.mnt_parent`
        pub mount_parent: u64 = "mount" ["mnt_parent"],
        /// `mount.mnt_mountpoint`
        pub mount_mountpoint: u64 = "mount" ["mnt_mountpoint"],
        /// `mount.mnt` (the `struct vfsmount` inside)
        pub mount_mnt: u64 = "mount" ["mnt"],
        /// `vfsmount.mnt_root`
        pub vfsmount_root: u64 = "vfsmount" ["mnt_root"],
        /// `dentry.d_hash` (a `hlist_bl_node`)
        pub dentry_hash: u64 = "dentry" ["d_hash"],
        /// `hlist_bl_node.pprev` (null: the dentry is not hashed)
        pub hlist_bl_pprev: u64 = "hlist_bl_node" ["pprev"],
        /// `dentry.d_op`
        pub dentry_op: u64 = "dentry" ["d_op"],
        /// `dentry_operations.d_dname`
        pub d_dname: u64 = "dentry_operations" ["d_dname"],
    }
    symbols [
        opt ["simple_dname"],
    ]
}

/// What `d_path` says of a file besides its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linkage {
    /// In its directory.
    Linked,
    /// Unlinked while in use (`d_unlinked`): printed with ` (deleted)`.
    Deleted,
    /// A file of an internal mount named by `simple_dname` (a memfd, shared anonymous
    /// memory, a System V segment): `/NAME (deleted)`; it never had a directory.
    Pseudo,
}

/// A file's name as the kernel's `d_path` makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName {
    /// The path (a pseudo file's `/NAME`), without ` (deleted)`.
    pub path: Vec<u8>,
    /// Whether it is still in its directory.
    pub linkage: Linkage,
}

/// The prefix `memfd_create` gives its files' names.
pub const MEMFD_PREFIX: &[u8] = b"memfd:";

impl FileName {
    /// The name as `/proc/PID/exe` and `/proc/PID/maps` print it (guest bytes).
    pub fn display(&self) -> Vec<u8> {
        let mut s = self.path.clone();
        if self.linkage != Linkage::Linked {
            s.extend_from_slice(b" (deleted)");
        }
        s
    }

    /// True when the file is no longer (or never was) in a directory.
    pub fn is_deleted(&self) -> bool {
        self.linkage != Linkage::Linked
    }

    /// The name given to `memfd_create` (after `memfd:`), for a memfd's file.
    pub fn memfd_name(&self) -> Option<&[u8]> {
        if self.linkage != Linkage::Pseudo {
            return None;
        }
        self.path.strip_prefix(b"/")?.strip_prefix(MEMFD_PREFIX)
    }
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The pointer at `at`: null or a kernel address.
    pub(crate) fn ptr(&self, at: u64, what: &'static str) -> Result<u64, KernelError> {
        let v = self
            .space
            .read_u64(Va(at))
            .map_err(|source| KernelError::Read { what, source })?;
        if v != 0 && !is_kernel_va(v) {
            return Err(KernelError::BadPointer { what, value: v });
        }
        Ok(v)
    }

    /// The path of the executable of the address space `mm` (`None` when it has
    /// none, e.g. a kernel thread's null `mm`), without ` (deleted)`: see
    /// [`Self::exe_file`].
    pub fn exe_path(&self, mm: Va) -> Result<Option<Vec<u8>>, KernelError> {
        Ok(self.exe_file(mm)?.map(|n| n.path))
    }

    /// The name of the executable of the address space `mm` (`None` when it has
    /// none), with whether it was deleted or is a memfd.
    pub fn exe_file(&self, mm: Va) -> Result<Option<FileName>, KernelError> {
        if mm.0 == 0 {
            return Ok(None);
        }
        let fl = FileLayout::from_profile(&self.profile)?;
        let file = self.ptr(mm.0.wrapping_add(fl.mm_exe_file), "mm_struct.exe_file")?;
        self.file_name_with(file, &fl)
    }

    /// The path of the `struct file` at `file` (`None` for a null file or one with no
    /// path), without ` (deleted)`: see [`Self::file_name`].
    pub fn file_path(&self, file: u64) -> Result<Option<Vec<u8>>, KernelError> {
        Ok(self.file_name(file)?.map(|n| n.path))
    }

    /// The name of the `struct file` at `file` (`None` for a null file or one with no
    /// path).
    pub fn file_name(&self, file: u64) -> Result<Option<FileName>, KernelError> {
        let fl = FileLayout::from_profile(&self.profile)?;
        self.file_name_with(file, &fl)
    }

    /// The mount point of the `struct mount` at `mount` (its root's path, across the
    /// mounts above it).
    pub fn mount_path(&self, mount: Va) -> Result<Vec<u8>, KernelError> {
        let fl = FileLayout::from_profile(&self.profile)?;
        let vfsmount = mount.0.wrapping_add(fl.mount_mnt);
        let root = self.ptr(vfsmount.wrapping_add(fl.vfsmount_root), "vfsmount.mnt_root")?;
        self.path_of(root, vfsmount, &fl)
    }

    fn file_name_with(&self, file: u64, fl: &FileLayout) -> Result<Option<FileName>, KernelError> {
        if file == 0 {
            return Ok(None);
        }
        let path = file.wrapping_add(fl.file_path);
        let dentry = self.ptr(path.wrapping_add(fl.path_dentry), "file.f_path.dentry")?;
        let vfsmount = self.ptr(path.wrapping_add(fl.path_mnt), "file.f_path.mnt")?;
        if dentry == 0 || vfsmount == 0 {
            return Ok(None);
        }
        let parent = self.ptr(dentry.wrapping_add(fl.dentry_parent), "dentry.d_parent")?;
        let is_root = parent == dentry;
        let mnt_root = self.ptr(vfsmount.wrapping_add(fl.vfsmount_root), "vfsmount.mnt_root")?;
        // d_path: a dentry with d_op->d_dname names itself, unless it is the root of
        // its mount
        if (!is_root || dentry != mnt_root) && self.names_itself_simply(dentry, fl)? {
            let name = self.dentry_name(dentry, fl)?;
            let mut path = Vec::with_capacity(name.len() + 1);
            path.push(b'/');
            path.extend_from_slice(&name);
            return Ok(Some(FileName {
                path,
                linkage: Linkage::Pseudo,
            }));
        }
        let pprev = self
            .space
            .read_u64(Va(dentry.wrapping_add(fl.dentry_hash + fl.hlist_bl_pprev)))
            .map_err(|source| KernelError::Read {
                what: "dentry.d_hash.pprev",
                source,
            })?;
        let linkage = if pprev == 0 && !is_root {
            Linkage::Deleted
        } else {
            Linkage::Linked
        };
        let path = self.path_of(dentry, vfsmount, fl)?;
        Ok(Some(FileName { path, linkage }))
    }

    /// True when `dentry`'s `d_op->d_dname` is `simple_dname` (false when the
    /// profile does not know the symbol).
    fn names_itself_simply(&self, dentry: u64, fl: &FileLayout) -> Result<bool, KernelError> {
        let Some(simple) = self.profile.symbol("simple_dname") else {
            return Ok(false);
        };
        let ops = self.ptr(dentry.wrapping_add(fl.dentry_op), "dentry.d_op")?;
        if ops == 0 {
            return Ok(false);
        }
        let dname = self
            .space
            .read_u64(Va(ops.wrapping_add(fl.d_dname)))
            .map_err(|source| KernelError::Read {
                what: "dentry_operations.d_dname",
                source,
            })?;
        Ok(dname != 0 && dname == simple.wrapping_add(self.placement.virt_shift))
    }

    /// `dentry.d_name` (at most [`MAX_NAME`] bytes).
    pub(crate) fn dentry_name(&self, dentry: u64, fl: &FileLayout) -> Result<Vec<u8>, KernelError> {
        let name_ptr = self.ptr(
            dentry.wrapping_add(fl.dentry_name + fl.qstr_name),
            "dentry.d_name.name",
        )?;
        self.space
            .read_cstr(Va(name_ptr), MAX_NAME)
            .map_err(|source| KernelError::Read {
                what: "dentry name",
                source,
            })
    }

    /// The absolute path of `dentry` in the mount `vfsmount`.
    fn path_of(
        &self,
        mut dentry: u64,
        vfsmount: u64,
        fl: &FileLayout,
    ) -> Result<Vec<u8>, KernelError> {
        let mut mount = vfsmount.wrapping_sub(fl.mount_mnt);
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        for _ in 0..MAX_PATH_COMPONENTS {
            if !seen.insert((dentry, mount)) {
                return Err(KernelError::Cycle {
                    what: "dentry path",
                    at: Va(dentry),
                    after: names.len(),
                });
            }
            let mnt_root = self.ptr(
                mount.wrapping_add(fl.mount_mnt + fl.vfsmount_root),
                "vfsmount.mnt_root",
            )?;
            if dentry == mnt_root {
                let parent = self.ptr(mount.wrapping_add(fl.mount_parent), "mount.mnt_parent")?;
                if parent == mount || parent == 0 {
                    let mut out = Vec::new();
                    for n in names.iter().rev() {
                        out.push(b'/');
                        out.extend_from_slice(n);
                    }
                    if out.is_empty() {
                        out.push(b'/');
                    }
                    return Ok(out);
                }
                dentry = self.ptr(
                    mount.wrapping_add(fl.mount_mountpoint),
                    "mount.mnt_mountpoint",
                )?;
                mount = parent;
                continue;
            }
            let parent = self.ptr(dentry.wrapping_add(fl.dentry_parent), "dentry.d_parent")?;
            let name = self.dentry_name(dentry, fl)?;
            if parent == dentry || parent == 0 {
                // the root of a file system that is not mounted where the walk expects
                // (a detached mount): what is known so far, marked relative
                let mut out = name;
                for n in names.iter().rev() {
                    out.push(b'/');
                    out.extend_from_slice(n);
                }
                return Ok(out);
            }
            names.push(name);
            dentry = parent;
        }
        Err(KernelError::TooLong {
            what: "dentry path",
            max: MAX_PATH_COMPONENTS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::vma::{MapName, VM_EXEC, VM_READ};
    use crate::testing::SyntheticKernel;

    #[test]
    fn names_say_deleted_and_memfd_as_d_path_does() {
        let mut sk = SyntheticKernel::clean();
        let a = sk.add_process(100, b"sleeper", 0);
        let b = sk.add_process(200, b"kdmtmpflush", 0);
        let c = sk.add_process(300, b"3", 0);
        let a_mm = sk.exec(&a, b"/usr/bin/sleeper", &[b"sleeper"], b"/usr/bin/sleeper");
        let b_mm = sk.exec(
            &b,
            b"/dev/shm/kdmtmpflush",
            &[b"x"],
            b"/dev/shm/kdmtmpflush",
        );
        sk.unlink(b"/dev/shm/kdmtmpflush");
        let memfd = sk.memfd_file(b"stage2");
        let c_mm = sk.exec_file(&c, memfd, &[b"stage2"], b"/dev/fd/3");
        sk.add_vma(
            a_mm,
            (0x40_0000, 0x40_1000),
            VM_READ | VM_EXEC,
            Some(b"/tmp/libx.so"),
            None,
        );
        sk.unlink(b"/tmp/libx.so");
        let lib = sk.memfd_file(b"lib");
        sk.add_file_vma(a_mm, (0x50_0000, 0x50_1000), VM_READ | VM_EXEC, lib);
        let k = sk.discover().unwrap();

        let exe = k.exe_file(a_mm).unwrap().unwrap();
        assert_eq!(
            (exe.linkage, exe.display()),
            (Linkage::Linked, b"/usr/bin/sleeper".to_vec())
        );
        assert_eq!(exe.memfd_name(), None);
        let exe = k.exe_file(b_mm).unwrap().unwrap();
        assert_eq!(exe.linkage, Linkage::Deleted);
        assert_eq!(exe.display(), b"/dev/shm/kdmtmpflush (deleted)".to_vec());
        assert_eq!(
            k.exe_path(b_mm).unwrap().unwrap(),
            b"/dev/shm/kdmtmpflush".to_vec()
        );
        let exe = k.exe_file(c_mm).unwrap().unwrap();
        assert_eq!(exe.linkage, Linkage::Pseudo);
        assert_eq!(exe.display(), b"/memfd:stage2 (deleted)".to_vec());
        assert_eq!(exe.memfd_name(), Some(&b"stage2"[..]));
        assert!(exe.is_deleted());

        let names: Vec<Vec<u8>> = k
            .maps(a_mm)
            .unwrap()
            .iter()
            .filter(|m| matches!(m.name, MapName::File(_)))
            .map(|m| m.name.display())
            .collect();
        assert_eq!(
            names,
            vec![
                b"/tmp/libx.so (deleted)".to_vec(),
                b"/memfd:lib (deleted)".to_vec()
            ]
        );
    }

    /// A process run from a memfd `stage2` (`fexecve`): the kernel, its `mm` and the
    /// memfd's `struct file`.
    fn memfd_process() -> (SyntheticKernel, Va, Va) {
        let mut sk = SyntheticKernel::clean();
        let c = sk.add_process(300, b"3", 0);
        let memfd = sk.memfd_file(b"stage2");
        let mm = sk.exec_file(&c, memfd, &[b"stage2"], b"/dev/fd/3");
        (sk, mm, memfd)
    }

    #[test]
    fn without_simple_dname_a_memfd_keeps_its_bare_name() {
        let (mut sk, mm, _) = memfd_process();
        sk.profile_mut().symbols.remove("simple_dname");
        let k = sk.discover().unwrap();
        let exe = k.exe_file(mm).unwrap().unwrap();
        // the root of no mount, its own parent: named as a detached path, and a
        // dentry that is its own parent is never "deleted"
        assert_eq!(
            (exe.linkage, exe.path),
            (Linkage::Linked, b"memfd:stage2".to_vec())
        );
    }

    #[test]
    fn a_d_dname_that_is_not_simple_dname_is_not_followed() {
        let (mut sk, mm, memfd) = memfd_process();
        let dentry = sk.get(sk.field_va(memfd, "file", "f_path"), "path", "dentry");
        let ops = sk.get(Va(dentry), "dentry", "d_op");
        let other = sk.kernel_fn();
        sk.set(Va(ops), "dentry_operations", "d_dname", other.0);
        let k = sk.discover().unwrap();
        assert_eq!(k.exe_file(mm).unwrap().unwrap().linkage, Linkage::Linked);
    }
}
