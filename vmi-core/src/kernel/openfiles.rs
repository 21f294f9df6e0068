//! A process's open files as `/proc/PID/fd` and `/proc/PID/fdinfo` show them: what
//! `lsof -p PID` tells an administrator, read from outside.
//!
//! Each descriptor of the process's file table (the walk `sockets.rs` shares,
//! bounded by `MAX_FDS`) is one [`OpenFile`]: the `struct file`'s access mode
//! (`f_mode`: `FMODE_READ`, `FMODE_WRITE`), open flags (`f_flags`, as fdinfo's
//! `flags:` less `O_CLOEXEC`, which the kernel keeps in the table's bitmap), position
//! (`f_pos`), and its inode's number, type (`i_mode`), size and device. The name is the
//! link `/proc/PID/fd/N` reads: the files of the kernel's pseudo file systems are named
//! as their `d_dname` names them, told apart by their super block's magic
//! (`socket:[INODE]` on sockfs, `pipe:[INODE]` on pipefs, `anon_inode:NAME` on the
//! anonymous-inode file system, `NAME` being the dentry's: `[eventpoll]`, `bpf-prog`,
//! ...); every other file by its path as `d_path` makes it ([`Kernel::file_name`]:
//! ` (deleted)`, `/memfd:NAME (deleted)`). Names are guest bytes.
//!
//! Fields used ([`OpenFileLayout`]): `file.f_mode`, `file.f_flags`, `file.f_pos`,
//! `file.f_inode`, `inode.i_ino`, `inode.i_mode`, `inode.i_size`, `inode.i_sb`,
//! `super_block.s_magic`, `super_block.s_dev`; the path walk's (`files.rs`) and the
//! file table's (`sockets.rs`).

use crate::addr::Va;
use crate::kernel::files::FileLayout;
use crate::kernel::objects::read_err;
use crate::kernel::sockets::FdLayout;
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

crate::kernel_layout! {
    /// Offsets of what an open file says of itself.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct OpenFileLayout(p) {
        /// `file.f_mode`
        pub file_mode: u64 = "file" ["f_mode"],
        /// `file.f_flags`
        pub file_flags: u64 = "file" ["f_flags"],
        /// `file.f_pos`
        pub file_pos: u64 = "file" ["f_pos"],
        /// `file.f_inode`
        pub file_inode: u64 = "file" ["f_inode"],
        /// `inode.i_ino`
        pub inode_ino: u64 = "inode" ["i_ino"],
        /// `inode.i_mode`
        pub inode_mode: u64 = "inode" ["i_mode"],
        /// `inode.i_size`
        pub inode_size: u64 = "inode" ["i_size"],
        /// `inode.i_sb`
        pub inode_sb: u64 = "inode" ["i_sb"],
        /// `super_block.s_magic`
        pub sb_magic: u64 = "super_block" ["s_magic"],
        /// `super_block.s_dev`
        pub sb_dev: u64 = "super_block" ["s_dev"],
    }
}

/// `FMODE_READ`.
pub const FMODE_READ: u32 = 1;
/// `FMODE_WRITE`.
pub const FMODE_WRITE: u32 = 2;
/// `SOCKFS_MAGIC`.
pub const SOCKFS_MAGIC: u64 = 0x534f_434b;
/// `PIPEFS_MAGIC`.
pub const PIPEFS_MAGIC: u64 = 0x5049_5045;
/// `ANON_INODE_FS_MAGIC`.
pub const ANON_INODE_FS_MAGIC: u64 = 0x0904_1934;

/// The inode behind an open file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InodeInfo {
    /// `i_ino`.
    pub ino: u64,
    /// `i_mode` (type and permission bits).
    pub mode: u16,
    /// `i_size`.
    pub size: i64,
    /// Its super block's `s_dev` (the kernel's `dev_t`: major << 20 | minor).
    pub dev: u32,
    /// Its super block's `s_magic`.
    pub magic: u64,
}

impl InodeInfo {
    /// The file type as `ls -l` writes it (`-`, `d`, `l`, `c`, `b`, `p`, `s`, `?`).
    pub fn type_char(&self) -> char {
        match self.mode & 0o170_000 {
            0o100_000 => '-',
            0o040_000 => 'd',
            0o120_000 => 'l',
            0o020_000 => 'c',
            0o060_000 => 'b',
            0o010_000 => 'p',
            0o140_000 => 's',
            _ => '?',
        }
    }

    /// (major, minor) of `dev` (the kernel's `MAJOR`/`MINOR`).
    pub fn dev_pair(&self) -> (u32, u32) {
        (self.dev >> 20, self.dev & 0xf_ffff)
    }
}

/// One open file descriptor of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFile {
    /// The descriptor.
    pub fd: u32,
    /// The `struct file`.
    pub file: Va,
    /// `f_mode`.
    pub f_mode: u32,
    /// `f_flags` (`O_*`; `O_CLOEXEC` is not among them).
    pub flags: u32,
    /// `f_pos`.
    pub pos: i64,
    /// Its inode (`None` for a file without one).
    pub inode: Option<InodeInfo>,
    /// What `/proc/PID/fd/N` links to (guest bytes).
    pub name: Vec<u8>,
}

impl OpenFile {
    /// `r`, `w`, `rw` or `-`, from `f_mode`.
    pub fn access(&self) -> &'static str {
        match (
            self.f_mode & FMODE_READ != 0,
            self.f_mode & FMODE_WRITE != 0,
        ) {
            (true, true) => "rw",
            (true, false) => "r",
            (false, true) => "w",
            (false, false) => "-",
        }
    }
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The open files of the process whose group leader is `task`, in descriptor
    /// order (none for a process without a file table, e.g. one exiting).
    pub fn lsof(&self, task: Va) -> Result<Vec<OpenFile>, KernelError> {
        let fl = FdLayout::from_profile(&self.profile)?;
        let ol = OpenFileLayout::from_profile(&self.profile)?;
        let mut out = Vec::new();
        self.open_files(task, &fl, |fd, file, _| {
            out.push(self.open_file(fd, file, &ol)?);
            Ok(())
        })?;
        Ok(out)
    }

    fn open_file(&self, fd: u32, file: u64, l: &OpenFileLayout) -> Result<OpenFile, KernelError> {
        let u32_at = |off: u64, what: &'static str| {
            self.space
                .read_u32(Va(file.wrapping_add(off)))
                .map_err(read_err(what))
        };
        let f_mode = u32_at(l.file_mode, "file.f_mode")?;
        let flags = u32_at(l.file_flags, "file.f_flags")?;
        let pos = self
            .space
            .read_u64(Va(file.wrapping_add(l.file_pos)))
            .map_err(read_err("file.f_pos"))? as i64;
        let inode = self.ptr(file.wrapping_add(l.file_inode), "file.f_inode")?;
        let inode = if inode == 0 {
            None
        } else {
            Some(self.inode_info(Va(inode), l)?)
        };
        let name = match inode {
            Some(i) if i.magic == SOCKFS_MAGIC => format!("socket:[{}]", i.ino).into_bytes(),
            Some(i) if i.magic == PIPEFS_MAGIC => format!("pipe:[{}]", i.ino).into_bytes(),
            Some(i) if i.magic == ANON_INODE_FS_MAGIC => {
                let fl = FileLayout::from_profile(&self.profile)?;
                let dentry = self.ptr(
                    file.wrapping_add(fl.file_path + fl.path_dentry),
                    "file.f_path.dentry",
                )?;
                let mut n = b"anon_inode:".to_vec();
                if dentry != 0 {
                    n.extend_from_slice(&self.dentry_name(dentry, &fl)?);
                }
                n
            }
            _ => self
                .file_name(file)?
                .map(|n| n.display())
                .unwrap_or_default(),
        };
        Ok(OpenFile {
            fd,
            file: Va(file),
            f_mode,
            flags,
            pos,
            inode,
            name,
        })
    }

    /// What an inode says of its file (see [`InodeInfo`]).
    pub fn inode_info(&self, inode: Va, l: &OpenFileLayout) -> Result<InodeInfo, KernelError> {
        let at = |off: u64| Va(inode.0.wrapping_add(off));
        let ino = self
            .space
            .read_u64(at(l.inode_ino))
            .map_err(read_err("inode.i_ino"))?;
        let mode = self
            .space
            .read_u16(at(l.inode_mode))
            .map_err(read_err("inode.i_mode"))?;
        let size = self
            .space
            .read_u64(at(l.inode_size))
            .map_err(read_err("inode.i_size"))? as i64;
        let sb = self.ptr(inode.0.wrapping_add(l.inode_sb), "inode.i_sb")?;
        let (dev, magic) = if sb == 0 {
            (0, 0)
        } else {
            let dev = self
                .space
                .read_u32(Va(sb.wrapping_add(l.sb_dev)))
                .map_err(read_err("super_block.s_dev"))?;
            let magic = self
                .space
                .read_u64(Va(sb.wrapping_add(l.sb_magic)))
                .map_err(read_err("super_block.s_magic"))?;
            (dev, magic)
        };
        Ok(InodeInfo {
            ino,
            mode,
            size,
            dev,
            magic,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SyntheticKernel;

    #[test]
    fn each_descriptor_is_named_as_proc_pid_fd_links_it() {
        let mut sk = SyntheticKernel::clean();
        let t = sk.add_process(100, b"backdoor", 0);
        sk.exec(
            &t,
            b"/usr/bin/backdoor",
            &[b"backdoor"],
            b"/usr/bin/backdoor",
        );
        let log = sk.new_file(b"/var/log/x\x1b[2J.log");
        sk.set_u32(log, "file", "f_mode", FMODE_READ | FMODE_WRITE);
        sk.set_u32(log, "file", "f_flags", 0o2002);
        sk.set(log, "file", "f_pos", 1234);
        let inode = Va(sk.get(log, "file", "f_inode"));
        sk.set(inode, "inode", "i_mode", 0o100_644);
        sk.set(inode, "inode", "i_size", 4096);
        let sock = sk.pseudo_file(SOCKFS_MAGIC, b"");
        let pipe = sk.pseudo_file(PIPEFS_MAGIC, b"");
        sk.set_u32(pipe, "file", "f_mode", FMODE_READ);
        let anon = sk.pseudo_file(ANON_INODE_FS_MAGIC, b"[eventpoll]");
        let memfd = sk.memfd_file(b"stage2");
        sk.unlink(b"/var/log/x\x1b[2J.log");
        for (fd, f) in [(0, log), (3, sock), (4, pipe), (7, anon), (63, memfd)] {
            sk.open_fd(&t, fd, f);
        }
        let ino = |f: Va, sk: &SyntheticKernel| {
            sk.get(Va(sk.get(f, "file", "f_inode")), "inode", "i_ino")
        };
        let (sock_ino, pipe_ino) = (ino(sock, &sk), ino(pipe, &sk));
        let k = sk.discover().unwrap();
        let files = k.lsof(t.task).unwrap();
        let names: Vec<(u32, String)> = files
            .iter()
            .map(|f| (f.fd, String::from_utf8_lossy(&f.name).into_owned()))
            .collect();
        assert_eq!(
            names,
            vec![
                (0, "/var/log/x\x1b[2J.log (deleted)".to_string()),
                (3, format!("socket:[{sock_ino}]")),
                (4, format!("pipe:[{pipe_ino}]")),
                (7, "anon_inode:[eventpoll]".to_string()),
                (63, "/memfd:stage2 (deleted)".to_string()),
            ]
        );
        let f = &files[0];
        assert_eq!((f.access(), f.flags, f.pos), ("rw", 0o2002, 1234));
        let i = f.inode.unwrap();
        assert_eq!(
            (i.type_char(), i.size, i.dev_pair()),
            ('-', 4096, (0x80, 1))
        );
        assert_eq!(files[2].access(), "r");
        assert_eq!(files[1].access(), "-");
    }

    #[test]
    fn a_process_without_files_has_none_and_wild_pointers_are_errors() {
        let mut sk = SyntheticKernel::clean();
        let t = sk.add_process(100, b"a", 0);
        let u = sk.add_process(101, b"b", 0);
        let f = sk.new_file(b"/etc/passwd");
        sk.open_fd(&u, 1, f);
        sk.set(f, "file", "f_inode", 0x4141_4141_4141);
        let k = sk.discover().unwrap();
        assert_eq!(k.lsof(t.task).unwrap(), Vec::new());
        assert!(matches!(
            k.lsof(u.task),
            Err(KernelError::BadPointer {
                what: "file.f_inode",
                ..
            })
        ));
    }

    #[test]
    fn a_huge_file_table_is_refused_before_it_is_read() {
        let mut sk = SyntheticKernel::clean();
        let t = sk.add_process(100, b"a", 0);
        let f = sk.new_file(b"/etc/passwd");
        sk.open_fd(&t, 1, f);
        let files = sk.get(t.task, "task_struct", "files");
        let fdt = sk.get(Va(files), "files_struct", "fdt");
        sk.set_u32(Va(fdt), "fdtable", "max_fds", u32::MAX);
        let k = sk.discover().unwrap();
        assert!(matches!(k.lsof(t.task), Err(KernelError::TooLong { .. })));
    }
}
