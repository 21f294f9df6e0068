//! Paths of files the kernel holds: a process's executable (`mm->exe_file`), the files
//! it maps (`vm_area_struct.vm_file`).
//!
//! A path is rebuilt the way the kernel's `d_path` does it: from the dentry up through
//! `d_parent` to the root of its mount, then across to the mount point in the parent
//! mount (`mount.mnt_mountpoint`, `mount.mnt_parent`), until the root mount. Bounded:
//! at most [`MAX_PATH_COMPONENTS`] steps and [`MAX_NAME`] bytes per name; a loop in the
//! guest's dentries or mounts ends the walk with an error.
//!
//! Fields used ([`FileLayout`]): `mm_struct.exe_file`, `file.f_path`, `path.dentry`,
//! `path.mnt`, `dentry.d_name`, `dentry.d_parent`, `qstr.name`, `mount.mnt_parent`,
//! `mount.mnt_mountpoint`, `mount.mnt`, `vfsmount.mnt_root`.

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

    /// The executable of the address space `mm` (`None` when it has none, e.g. a
    /// kernel thread's null `mm`).
    pub fn exe_path(&self, mm: Va) -> Result<Option<Vec<u8>>, KernelError> {
        if mm.0 == 0 {
            return Ok(None);
        }
        let fl = FileLayout::from_profile(&self.profile)?;
        let file = self.ptr(mm.0.wrapping_add(fl.mm_exe_file), "mm_struct.exe_file")?;
        self.file_path_with(file, &fl)
    }

    /// The path of the `struct file` at `file` (`None` for a null file or one with no
    /// path).
    pub fn file_path(&self, file: u64) -> Result<Option<Vec<u8>>, KernelError> {
        let fl = FileLayout::from_profile(&self.profile)?;
        self.file_path_with(file, &fl)
    }

    /// The mount point of the `struct mount` at `mount` (its root's path, across the
    /// mounts above it).
    pub fn mount_path(&self, mount: Va) -> Result<Vec<u8>, KernelError> {
        let fl = FileLayout::from_profile(&self.profile)?;
        let vfsmount = mount.0.wrapping_add(fl.mount_mnt);
        let root = self.ptr(vfsmount.wrapping_add(fl.vfsmount_root), "vfsmount.mnt_root")?;
        self.path_of(root, vfsmount, &fl)
    }

    fn file_path_with(&self, file: u64, fl: &FileLayout) -> Result<Option<Vec<u8>>, KernelError> {
        if file == 0 {
            return Ok(None);
        }
        let path = file.wrapping_add(fl.file_path);
        let dentry = self.ptr(path.wrapping_add(fl.path_dentry), "file.f_path.dentry")?;
        let vfsmount = self.ptr(path.wrapping_add(fl.path_mnt), "file.f_path.mnt")?;
        if dentry == 0 || vfsmount == 0 {
            return Ok(None);
        }
        self.path_of(dentry, vfsmount, fl).map(Some)
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
            let name_ptr = self.ptr(
                dentry.wrapping_add(fl.dentry_name + fl.qstr_name),
                "dentry.d_name.name",
            )?;
            let name = self
                .space
                .read_cstr(Va(name_ptr), MAX_NAME)
                .map_err(|source| KernelError::Read {
                    what: "dentry name",
                    source,
                })?;
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
