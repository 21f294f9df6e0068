//! The VFS operation tables: what every file operation goes through, and what rootkits
//! replace to hide files and processes (Volatility 2's `linux_check_fop`).
//!
//! Every inode points at its `inode_operations` (`i_op`) and default
//! `file_operations` (`i_fop`), its page cache at `address_space_operations`
//! (`i_mapping->a_ops`); every dentry at its `dentry_operations` (`d_op`, often
//! null), every super block at its `super_operations` (`s_op`), every open file at its
//! `file_operations` (`f_op`, copied from `i_fop` at open). adore-ng hides processes by
//! pointing the `/proc` root inode's `i_fop` at a copy of `proc_root_operations` whose
//! `iterate_shared` filters the entries.
//!
//! Read here:
//! - the mounts of every mount namespace ([`Kernel::mount_namespaces`]: `init_task`'s
//!   and every given task's `nsproxy->mnt_ns`): `mnt_namespace.list` of `mount.mnt_list`
//!   before 6.8, the red-black tree `mnt_namespace.mounts` of `mount.mnt_node` from
//!   6.8 on; for each ([`MountOps`]) its super block's `s_op` and its root dentry's
//!   `d_op` and inode's `i_op`, `i_fop` and `i_mapping->a_ops`, with the file system
//!   type's name and `owner` module;
//! - every open file of a process ([`Kernel::open_file_ops`], through the fd table walk
//!   of [`crate::kernel::sockets`]): `f_op`, its dentry's `d_op`, its inode's `i_op`
//!   and `i_fop`, `f_mapping->a_ops`, and its super block as above.
//!
//! The tables themselves are read with [`Kernel::ops_table`] as every `ptr fn` member
//! the profile has ([`FnTable`]). `proc_root_operations` and
//! `proc_root_inode_operations` are the tables every procfs root must use
//! ([`PROC_ROOT`]).
//!
//! Bounds: at most [`MAX_MOUNTS`] mounts, every namespace together, and
//! [`MAX_NAMESPACES`] namespaces; at most [`MAX_OPEN_FILES`] distinct open files per
//! [`FileWalk`]; a mount seen twice is a [`KernelError::Cycle`]; pointers that are not
//! kernel addresses are [`KernelError::BadPointer`]s naming the field.

use std::collections::{HashMap, HashSet};

use crate::addr::Va;
use crate::kernel::objects::{
    fn_fields, is_kernel_va, name_at, rb_nodes, read_err, read_fn_table, u64_at, walk_list, FnTable,
};
use crate::kernel::sockets::FdLayout;
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// Most mounts walked, every namespace together (`fs.mount-max` is 100000 per
/// namespace by default).
pub const MAX_MOUNTS: usize = 1 << 17;
/// Most mount namespaces.
pub const MAX_NAMESPACES: usize = 1 << 14;
/// Most distinct open files one [`FileWalk`] reads.
pub const MAX_OPEN_FILES: usize = 1 << 20;
/// Longest file system type name read.
const MAX_NAME: usize = 64;

/// The kernel's tables of a procfs root: (pointer, symbol).
pub const PROC_ROOT: [(Slot, &str); 2] = [
    (Slot::IFop, "proc_root_operations"),
    (Slot::IOp, "proc_root_inode_operations"),
];

/// Where an operations table pointer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// `super_block.s_op`
    SOp,
    /// `dentry.d_op`
    DOp,
    /// `inode.i_op`
    IOp,
    /// `inode.i_fop`
    IFop,
    /// `inode.i_mapping->a_ops` (of a file: `file.f_mapping->a_ops`)
    AOps,
    /// `file.f_op`
    FOp,
}

impl Slot {
    /// The member's name (`i_fop`).
    pub fn name(self) -> &'static str {
        match self {
            Slot::SOp => "s_op",
            Slot::DOp => "d_op",
            Slot::IOp => "i_op",
            Slot::IFop => "i_fop",
            Slot::AOps => "a_ops",
            Slot::FOp => "f_op",
        }
    }

    /// The type of the table it points to.
    pub fn table_type(self) -> &'static str {
        match self {
            Slot::SOp => "super_operations",
            Slot::DOp => "dentry_operations",
            Slot::IOp => "inode_operations",
            Slot::IFop | Slot::FOp => "file_operations",
            Slot::AOps => "address_space_operations",
        }
    }
}

/// What a super block says of its file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    /// The `struct super_block`.
    pub sb: Va,
    /// `s_type->name` (guest bytes, e.g. `proc`).
    pub fs_type: Vec<u8>,
    /// `s_type->owner`: the module implementing it (0 when built in).
    pub owner: Va,
    /// `s_op` (0 when null).
    pub s_op: Va,
}

/// The tables of a mount's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOps {
    /// The `struct mount`.
    pub mount: Va,
    /// The `struct mnt_namespace` it is in.
    pub ns: Va,
    /// Its file system.
    pub fs: FsInfo,
    /// Its root dentry.
    pub root: Va,
    /// The root's inode (0 for a negative dentry).
    pub inode: Va,
    /// The non-null table pointers: `s_op`, the root's `d_op`, `i_op`, `i_fop`, `a_ops`.
    pub ops: Vec<(Slot, Va)>,
}

/// The tables of an open file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOps {
    /// The file descriptor.
    pub fd: u32,
    /// The `struct file`.
    pub file: Va,
    /// Its file system (`None` for a file without an inode).
    pub fs: Option<FsInfo>,
    /// The non-null table pointers: `f_op`, `d_op`, `i_op`, `i_fop`, `a_ops`, and the
    /// super block's `s_op`.
    pub ops: Vec<(Slot, Va)>,
}

/// How a namespace links its mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountLinks {
    /// `mnt_namespace.list` of `mount.mnt_list` (before 6.8).
    List {
        /// `mnt_namespace.list`
        head: u64,
        /// `mount.mnt_list`
        node: u64,
    },
    /// The red-black tree `mnt_namespace.mounts` of `mount.mnt_node` (6.8 on).
    Tree {
        /// `mnt_namespace.mounts` (an `rb_root`: its `rb_node` first)
        root: u64,
        /// `mount.mnt_node`
        node: u64,
    },
}

crate::kernel_layout! {
    /// Offsets of the VFS walks.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct VfsLayout(p) {
        /// `task_struct.nsproxy`
        pub task_nsproxy: u64 = "task_struct" ["nsproxy"],
        /// `nsproxy.mnt_ns`
        pub nsproxy_mnt_ns: u64 = "nsproxy" ["mnt_ns"],
        /// `mnt_namespace.list` (before 6.8)
        pub ns_list: Option<u64> = opt "mnt_namespace" ["list"],
        /// `mnt_namespace.mounts` (6.8 on a tree; before, a count)
        pub ns_mounts: Option<u64> = opt "mnt_namespace" ["mounts"],
        /// `mount.mnt_list`
        pub mount_list: u64 = "mount" ["mnt_list"],
        /// `mount.mnt_node` (6.8 on)
        pub mount_node: Option<u64> = opt "mount" ["mnt_node"],
        /// `mount.mnt`
        pub mount_mnt: u64 = "mount" ["mnt"],
        /// `vfsmount.mnt_root`
        pub vfsmount_root: u64 = "vfsmount" ["mnt_root"],
        /// `vfsmount.mnt_sb`
        pub vfsmount_sb: u64 = "vfsmount" ["mnt_sb"],
        /// `dentry.d_inode`
        pub dentry_inode: u64 = "dentry" ["d_inode"],
        /// `dentry.d_op`
        pub dentry_op: u64 = "dentry" ["d_op"],
        /// `inode.i_op`
        pub inode_op: u64 = "inode" ["i_op"],
        /// `inode.i_fop`
        pub inode_fop: u64 = "inode" ["i_fop"],
        /// `inode.i_mapping`
        pub inode_mapping: u64 = "inode" ["i_mapping"],
        /// `inode.i_sb`
        pub inode_sb: u64 = "inode" ["i_sb"],
        /// `super_block.s_op`
        pub sb_op: u64 = "super_block" ["s_op"],
        /// `super_block.s_type`
        pub sb_type: u64 = "super_block" ["s_type"],
        /// `file_system_type.name`
        pub fs_name: u64 = "file_system_type" ["name"],
        /// `file_system_type.owner`
        pub fs_owner: u64 = "file_system_type" ["owner"],
        /// `address_space.a_ops`
        pub mapping_aops: u64 = "address_space" ["a_ops"],
        /// `file.f_mapping`
        pub file_mapping: u64 = "file" ["f_mapping"],
        /// `file.f_path`
        pub file_path: u64 = "file" ["f_path"],
        /// `path.dentry`
        pub path_dentry: u64 = "path" ["dentry"],
        /// `file_operations.owner`
        pub fops_owner: u64 = "file_operations" ["owner"],
        /// `rb_node.rb_left`
        pub rb_left: u64 = "rb_node" ["rb_left"],
        /// `rb_node.rb_right`
        pub rb_right: u64 = "rb_node" ["rb_right"],
    }
    computed {
        /// How the namespaces link their mounts: the list where the kernel has one (a
        /// `mounts` beside it is a count), else the tree.
        pub links: MountLinks = match (ns_list, ns_mounts, mount_node) {
            (Some(head), _, _) => MountLinks::List { head, node: mount_list },
            (None, Some(root), Some(node)) => MountLinks::Tree { root, node },
            _ => return Err(KernelError::MissingField("mnt_namespace.list".into())),
        },
    }
    // the operation tables are read as every `ptr fn` member the profile has
    // (`fn_fields`): these at least
    also [
        "file_operations" ["llseek"],
        "file_operations" ["read"],
        "file_operations" ["write"],
        "file_operations" ["iterate_shared"],
        "file_operations" ["open"],
        "file_operations" ["release"],
        "inode_operations" ["lookup"],
        "inode_operations" ["permission"],
        "inode_operations" ["getattr"],
        "dentry_operations" ["d_revalidate"],
        "dentry_operations" ["d_delete"],
        "super_operations" ["alloc_inode"],
        "super_operations" ["evict_inode"],
        "super_operations" ["statfs"],
        "address_space_operations" ["writepages"],
        "address_space_operations" ["readahead"],
    ]
    symbols [
        opt ["proc_root_operations"],
        opt ["proc_root_inode_operations"],
    ]
}

/// The state of a walk of open files across processes: the layouts, the super blocks
/// read so far, the files seen (a `files_struct` shared by several processes is read
/// once).
#[derive(Debug)]
pub struct FileWalk {
    l: VfsLayout,
    sl: FdLayout,
    supers: HashMap<u64, FsInfo>,
    seen: HashSet<u64>,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The pointer at `obj + off` of `what`: null or a kernel address.
    fn ptr_at(&self, obj: u64, off: u64, what: &'static str) -> Result<Va, KernelError> {
        self.ptr(obj.wrapping_add(off), what).map(Va)
    }

    /// The mount namespaces of `init_task` and of `tasks` (each `nsproxy->mnt_ns`;
    /// a task without an `nsproxy`, one exiting, has none), each once, in that order.
    pub fn mount_namespaces(&self, tasks: &[Va]) -> Result<Vec<Va>, KernelError> {
        let l = VfsLayout::from_profile(&self.profile)?;
        let mut out: Vec<Va> = Vec::new();
        let mut seen = HashSet::new();
        let init = self.symbol("init_task")?;
        for &task in std::iter::once(&init).chain(tasks) {
            let nsproxy = self.ptr_at(task.0, l.task_nsproxy, "task_struct.nsproxy")?;
            if nsproxy.0 == 0 {
                continue;
            }
            let ns = self.ptr_at(nsproxy.0, l.nsproxy_mnt_ns, "nsproxy.mnt_ns")?;
            if ns.0 != 0 && seen.insert(ns.0) {
                if out.len() >= MAX_NAMESPACES {
                    return Err(KernelError::TooLong {
                        what: "mount namespaces",
                        max: MAX_NAMESPACES,
                    });
                }
                out.push(ns);
            }
        }
        Ok(out)
    }

    /// The `struct mount`s of the namespace `ns`, at most `max`.
    pub fn mounts(&self, ns: Va, max: usize) -> Result<Vec<Va>, KernelError> {
        let l = VfsLayout::from_profile(&self.profile)?;
        self.mounts_with(&l, ns, max)
    }

    fn mounts_with(&self, l: &VfsLayout, ns: Va, max: usize) -> Result<Vec<Va>, KernelError> {
        let mut out = Vec::new();
        match l.links {
            MountLinks::List { head, node } => {
                walk_list(
                    &self.space,
                    Va(ns.0.wrapping_add(head)),
                    "mnt_namespace.list",
                    max,
                    |n| {
                        out.push(Va(n.0.wrapping_sub(node)));
                        Ok(())
                    },
                )?;
            }
            MountLinks::Tree { root, node } => {
                let what = "mnt_namespace.mounts";
                let top = self
                    .space
                    .read_u64(Va(ns.0.wrapping_add(root)))
                    .map_err(read_err(what))?;
                for n in rb_nodes(&self.space, top, (l.rb_left, l.rb_right), max, what)? {
                    out.push(Va(n.wrapping_sub(node)));
                }
            }
        }
        Ok(out)
    }

    /// The tables of every mount of the namespaces `namespaces`.
    pub fn mount_ops(&self, namespaces: &[Va]) -> Result<Vec<MountOps>, KernelError> {
        let l = VfsLayout::from_profile(&self.profile)?;
        let mut supers = HashMap::new();
        let mut out = Vec::new();
        for &ns in namespaces {
            let mounts = self.mounts_with(&l, ns, MAX_MOUNTS - out.len())?;
            for mount in mounts {
                let mnt = mount.0.wrapping_add(l.mount_mnt);
                let root = self.ptr_at(mnt, l.vfsmount_root, "vfsmount.mnt_root")?;
                let sb = self.ptr_at(mnt, l.vfsmount_sb, "vfsmount.mnt_sb")?;
                if root.0 == 0 || sb.0 == 0 {
                    return Err(KernelError::Corrupt {
                        what: "a mount without a root or super block".into(),
                        at: mount,
                    });
                }
                let fs = self.fs_info(&l, &mut supers, sb)?;
                let mut ops = vec![(Slot::SOp, fs.s_op)];
                let inode = self.dentry_ops(&l, root, &mut ops)?;
                ops.retain(|(_, v)| v.0 != 0);
                out.push(MountOps {
                    mount,
                    ns,
                    fs,
                    root,
                    inode,
                    ops,
                });
            }
        }
        Ok(out)
    }

    /// Push `dentry`'s `d_op` and its inode's tables onto `ops`; return the inode.
    fn dentry_ops(
        &self,
        l: &VfsLayout,
        dentry: Va,
        ops: &mut Vec<(Slot, Va)>,
    ) -> Result<Va, KernelError> {
        ops.push((
            Slot::DOp,
            self.ptr_at(dentry.0, l.dentry_op, "dentry.d_op")?,
        ));
        let inode = self.ptr_at(dentry.0, l.dentry_inode, "dentry.d_inode")?;
        if inode.0 != 0 {
            self.inode_ops(l, inode, ops)?;
        }
        Ok(inode)
    }

    /// Push `inode`'s `i_op`, `i_fop` and `i_mapping->a_ops` onto `ops`.
    fn inode_ops(
        &self,
        l: &VfsLayout,
        inode: Va,
        ops: &mut Vec<(Slot, Va)>,
    ) -> Result<(), KernelError> {
        let lo = l.inode_op.min(l.inode_fop).min(l.inode_mapping);
        let hi = l.inode_op.max(l.inode_fop).max(l.inode_mapping) + 8;
        let b = self
            .space
            .read_bytes(Va(inode.0.wrapping_add(lo)), (hi - lo) as usize)
            .map_err(read_err("struct inode"))?;
        let get = |off: u64, what: &'static str| -> Result<Va, KernelError> {
            let v = u64_at(&b, off - lo);
            if v != 0 && !is_kernel_va(v) {
                return Err(KernelError::BadPointer { what, value: v });
            }
            Ok(Va(v))
        };
        ops.push((Slot::IOp, get(l.inode_op, "inode.i_op")?));
        ops.push((Slot::IFop, get(l.inode_fop, "inode.i_fop")?));
        let mapping = get(l.inode_mapping, "inode.i_mapping")?;
        if mapping.0 != 0 {
            ops.push((
                Slot::AOps,
                self.ptr_at(mapping.0, l.mapping_aops, "address_space.a_ops")?,
            ));
        }
        Ok(())
    }

    /// The file system of the super block `sb` (read once per walk).
    fn fs_info(
        &self,
        l: &VfsLayout,
        supers: &mut HashMap<u64, FsInfo>,
        sb: Va,
    ) -> Result<FsInfo, KernelError> {
        if let Some(fs) = supers.get(&sb.0) {
            return Ok(fs.clone());
        }
        let s_op = self.ptr_at(sb.0, l.sb_op, "super_block.s_op")?;
        let s_type = self.ptr_at(sb.0, l.sb_type, "super_block.s_type")?;
        let (fs_type, owner) = if s_type.0 == 0 {
            (Vec::new(), Va(0))
        } else {
            let name = self
                .space
                .read_u64(Va(s_type.0.wrapping_add(l.fs_name)))
                .map_err(read_err("file_system_type.name"))?;
            (
                name_at(&self.space, name, MAX_NAME),
                self.ptr_at(s_type.0, l.fs_owner, "file_system_type.owner")?,
            )
        };
        let fs = FsInfo {
            sb,
            fs_type,
            owner,
            s_op,
        };
        supers.insert(sb.0, fs.clone());
        Ok(fs)
    }

    /// A walk of open files ([`Kernel::open_file_ops`]).
    pub fn file_walk(&self) -> Result<FileWalk, KernelError> {
        Ok(FileWalk {
            l: VfsLayout::from_profile(&self.profile)?,
            sl: FdLayout::from_profile(&self.profile)?,
            supers: HashMap::new(),
            seen: HashSet::new(),
        })
    }

    /// The tables of the open files of the process whose group leader is `task`, but
    /// for files `walk` has read before (another process's, through a shared
    /// `files_struct` or a passed descriptor). On an error nothing of this process is
    /// remembered, so the process can be read again.
    pub fn open_file_ops(
        &self,
        walk: &mut FileWalk,
        task: Va,
    ) -> Result<Vec<FileOps>, KernelError> {
        let l = walk.l;
        let mut out = Vec::new();
        let mut new = HashSet::new();
        let seen = &walk.seen;
        let supers = &mut walk.supers;
        self.open_files(task, &walk.sl, |fd, file, f_op| {
            if seen.contains(&file) || !new.insert(file) {
                return Ok(());
            }
            if seen.len() + new.len() > MAX_OPEN_FILES {
                return Err(KernelError::TooLong {
                    what: "open files",
                    max: MAX_OPEN_FILES,
                });
            }
            let mut ops = vec![(Slot::FOp, Va(f_op))];
            let dentry = self.ptr_at(
                file.wrapping_add(l.file_path),
                l.path_dentry,
                "file.f_path.dentry",
            )?;
            let mut fs = None;
            if dentry.0 != 0 {
                let inode = self.dentry_ops(&l, dentry, &mut ops)?;
                if inode.0 != 0 {
                    let sb = self.ptr_at(inode.0, l.inode_sb, "inode.i_sb")?;
                    if sb.0 != 0 {
                        let info = self.fs_info(&l, supers, sb)?;
                        ops.push((Slot::SOp, info.s_op));
                        fs = Some(info);
                    }
                }
            }
            // the file's own mapping (an inode's a_ops is the same table, or the
            // block device's for a device file)
            let mapping = self.ptr_at(file, l.file_mapping, "file.f_mapping")?;
            if mapping.0 != 0 {
                let a_ops = self.ptr_at(mapping.0, l.mapping_aops, "address_space.a_ops")?;
                if !ops.contains(&(Slot::AOps, a_ops)) {
                    ops.push((Slot::AOps, a_ops));
                }
            }
            ops.retain(|(_, v)| v.0 != 0);
            out.push(FileOps {
                fd,
                file: Va(file),
                fs,
                ops,
            });
            Ok(())
        })?;
        walk.seen.extend(new);
        Ok(out)
    }

    /// The operations table of type `ty` (one of [`Slot::table_type`]) at `at`.
    pub fn ops_table(&self, ty: &str, at: Va) -> Result<FnTable, KernelError> {
        let fields = fn_fields(&self.profile, ty)?;
        read_fn_table(&self.space, &fields, at, "operations table")
    }

    /// `file_operations.owner` of the table at `at` (the module whose code it is, 0
    /// for the kernel's own).
    pub fn fops_owner(&self, at: Va) -> Result<Va, KernelError> {
        let l = VfsLayout::from_profile(&self.profile)?;
        self.ptr_at(at.0, l.fops_owner, "file_operations.owner")
    }
}
