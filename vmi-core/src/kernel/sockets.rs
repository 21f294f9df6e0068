//! The internet sockets a process holds open: what `ss -tulpn` shows, from outside.
//!
//! A process's open files are `task->files->fdt->fd[0..max_fds]`; a file is a socket
//! when its `f_op` is `socket_file_ops`, and then `private_data` is its `struct socket`,
//! whose `sk` is the `struct sock`. Its `sock_common` (`sock.__sk_common`) holds the
//! family, state, addresses and ports (`skc_rcv_saddr`/`skc_num` local,
//! `skc_daddr`/`skc_dport` remote; IPv6 in `skc_v6_rcv_saddr`/`skc_v6_daddr`), and
//! the socket's inode number (`file->f_inode->i_ino`) is the one `/proc/net/tcp` and
//! `/proc/PID/fd` show. Only `AF_INET` and `AF_INET6` sockets are returned.
//!
//! The same walk of a process's open files finds the BPF programs, links and perf
//! events it holds (`f_op` is `bpf_prog_fops`, `bpf_link_fops` or `perf_fops`).
//!
//! Bounded: at most [`MAX_FDS`] descriptors per process (the kernel's `NR_OPEN`), read
//! in pages; a pointer that is not a kernel address is an error naming it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::addr::Va;
use crate::kernel::objects::{is_kernel_va, read_err};
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// Most file descriptors read per process (`NR_OPEN`).
pub const MAX_FDS: usize = 1 << 20;
/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;
/// `TCP_LISTEN`.
pub const TCP_LISTEN: u8 = 10;
/// `TCP_CLOSE` (also an unconnected UDP socket).
pub const TCP_CLOSE: u8 = 7;
/// `TCP_ESTABLISHED` (also a connected UDP socket).
pub const TCP_ESTABLISHED: u8 = 1;

crate::kernel_layout! {
    /// Offsets of the walk of a process's open files.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct FdLayout(p) {
        task_files: u64 = "task_struct" ["files"],
        files_fdt: u64 = "files_struct" ["fdt"],
        fdt_max_fds: u64 = "fdtable" ["max_fds"],
        fdt_fd: u64 = "fdtable" ["fd"],
        file_op: u64 = "file" ["f_op"],
    }
}

crate::kernel_layout! {
    /// Offsets the socket walk uses.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct SocketLayout(p) {
        file_private: u64 = "file" ["private_data"],
        file_inode: u64 = "file" ["f_inode"],
        inode_ino: u64 = "inode" ["i_ino"],
        socket_sk: u64 = "socket" ["sk"],
        sk_common: u64 = "sock" ["__sk_common"],
        sk_protocol: u64 = "sock" ["sk_protocol"],
        sk_type: u64 = "sock" ["sk_type"],
        family: u64 = "sock_common" ["skc_family"],
        state: u64 = "sock_common" ["skc_state"],
        rcv_saddr: u64 = "sock_common" ["skc_rcv_saddr"],
        daddr: u64 = "sock_common" ["skc_daddr"],
        num: u64 = "sock_common" ["skc_num"],
        dport: u64 = "sock_common" ["skc_dport"],
        v6_rcv_saddr: Option<u64> = opt "sock_common" ["skc_v6_rcv_saddr"],
        v6_daddr: Option<u64> = opt "sock_common" ["skc_v6_daddr"],
    }
    symbols [
        ["socket_file_ops"],
        opt ["bpf_prog_fops"],
        opt ["bpf_link_fops"],
        opt ["perf_fops"],
    ]
}

/// A BPF object a process holds open (`file->private_data` is the object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpfFile {
    /// A program (`bpf_prog_fops`: a `struct bpf_prog`).
    Program,
    /// A link (`bpf_link_fops`: a `struct bpf_link`).
    Link,
    /// A perf event (`perf_fops`: a `struct perf_event`).
    PerfEvent,
}

/// An internet socket a process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    /// The file descriptor.
    pub fd: u32,
    /// The socket's inode number (`socket:[N]` in `/proc/PID/fd`).
    pub inode: u64,
    /// Its `struct sock`.
    pub sock: Va,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// `sk_protocol` (`IPPROTO_TCP` 6, `IPPROTO_UDP` 17, ...).
    pub protocol: u16,
    /// `sk_type` (`SOCK_STREAM` 1, `SOCK_DGRAM` 2, `SOCK_RAW` 3).
    pub sock_type: u16,
    /// `skc_state` (TCP states; UDP: 7 unconnected, 1 connected).
    pub state: u8,
    /// Local address and port.
    pub local: (IpAddr, u16),
    /// Remote address and port (unspecified and 0 when not connected).
    pub remote: (IpAddr, u16),
}

impl Socket {
    /// `tcp`, `udp`, `raw`, ... (`ipproto-N` for others).
    pub fn protocol_name(&self) -> String {
        match (self.protocol, self.sock_type) {
            (6, _) => "tcp".into(),
            (17, _) => "udp".into(),
            (136, _) => "udplite".into(),
            (_, 3) => "raw".into(),
            (132, _) => "sctp".into(),
            (262, _) => "mptcp".into(),
            (p, _) => format!("ipproto-{p}"),
        }
    }

    /// True for a socket that waits for peers: TCP in `LISTEN`, a UDP socket bound to
    /// a port and not connected.
    pub fn is_listening(&self) -> bool {
        match self.protocol {
            6 | 132 | 262 => self.state == TCP_LISTEN,
            17 | 136 => self.state == TCP_CLOSE && self.local.1 != 0,
            _ => false,
        }
    }

    /// The TCP state's name (`LISTEN`, `ESTABLISHED`, ...; UDP `UNCONN` and
    /// `ESTABLISHED`, as `ss` says).
    pub fn state_name(&self) -> &'static str {
        const TCP: [&str; 13] = [
            "UNKNOWN",
            "ESTABLISHED",
            "SYN-SENT",
            "SYN-RECV",
            "FIN-WAIT-1",
            "FIN-WAIT-2",
            "TIME-WAIT",
            "CLOSE",
            "CLOSE-WAIT",
            "LAST-ACK",
            "LISTEN",
            "CLOSING",
            "NEW-SYN-RECV",
        ];
        if matches!(self.protocol, 17 | 136) && self.state == TCP_CLOSE {
            return "UNCONN";
        }
        TCP.get(usize::from(self.state))
            .copied()
            .unwrap_or("UNKNOWN")
    }
}

/// A process's file table: `files_struct`, its `fdtable`, and the table's size and
/// array of `struct file` pointers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdTable {
    /// `task_struct.files`.
    pub files: Va,
    /// `files_struct.fdt` (null in a table being torn down).
    pub fdt: Va,
    /// `fdtable.max_fds`.
    pub max_fds: u32,
    /// `fdtable.fd`: `max_fds` pointers.
    pub fd: Va,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The internet sockets among the open files of the process whose group leader is
    /// `task` (none for a process without a file table, e.g. one exiting).
    pub fn sockets(&self, task: Va) -> Result<Vec<Socket>, KernelError> {
        let sl = SocketLayout::from_profile(&self.profile)?;
        let fl = FdLayout::from_profile(&self.profile)?;
        let ops = self.symbol("socket_file_ops")?;
        let mut out = Vec::new();
        self.open_files(task, &fl, |fd, file, f_op| {
            if f_op == ops.0 {
                if let Some(s) = self.socket_of(file, fd, &sl)? {
                    out.push(s);
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The file table of the process whose group leader is `task`: `None` for a
    /// process without one (one exiting); a null `fdt` has no `max_fds` or `fd` (0).
    /// Pointers are kernel addresses or null; nothing else is judged.
    pub fn fd_table(&self, task: Va) -> Result<Option<FdTable>, KernelError> {
        self.fd_table_with(task, &FdLayout::from_profile(&self.profile)?)
    }

    fn fd_table_with(&self, task: Va, sl: &FdLayout) -> Result<Option<FdTable>, KernelError> {
        let files = self.ptr(task.0.wrapping_add(sl.task_files), "task_struct.files")?;
        if files == 0 {
            return Ok(None);
        }
        let fdt = self.ptr(files.wrapping_add(sl.files_fdt), "files_struct.fdt")?;
        if fdt == 0 {
            return Ok(Some(FdTable {
                files: Va(files),
                fdt: Va(0),
                max_fds: 0,
                fd: Va(0),
            }));
        }
        let max_fds = self
            .space
            .read_u32(Va(fdt.wrapping_add(sl.fdt_max_fds)))
            .map_err(read_err("fdtable.max_fds"))?;
        let fd = self.ptr(fdt.wrapping_add(sl.fdt_fd), "fdtable.fd")?;
        Ok(Some(FdTable {
            files: Va(files),
            fdt: Va(fdt),
            max_fds,
            fd: Va(fd),
        }))
    }

    /// Call `f` with (descriptor, `struct file`, its `f_op`) for each open file of the
    /// process whose group leader is `task` (none for a process without a file table,
    /// e.g. one exiting).
    pub(crate) fn open_files(
        &self,
        task: Va,
        sl: &FdLayout,
        mut f: impl FnMut(u32, u64, u64) -> Result<(), KernelError>,
    ) -> Result<(), KernelError> {
        let Some(table) = self.fd_table_with(task, sl)? else {
            return Ok(());
        };
        if table.fdt.0 == 0 {
            return Ok(());
        }
        let max = table.max_fds as usize;
        if max > MAX_FDS {
            return Err(KernelError::TooLong {
                what: "fdtable.fd",
                max: MAX_FDS,
            });
        }
        let array = table.fd.0;
        if array == 0 {
            return Ok(());
        }
        let mut chunk = [0u8; 4096];
        for first in (0..max).step_by(512) {
            let n = (max - first).min(512);
            let buf = &mut chunk[..n * 8];
            self.space
                .read_virt(Va(array.wrapping_add(first as u64 * 8)), buf)
                .map_err(read_err("fdtable.fd[]"))?;
            for (i, e) in buf.chunks_exact(8).enumerate() {
                let file = u64::from_le_bytes(e.try_into().unwrap_or([0; 8]));
                if file == 0 {
                    continue;
                }
                if !is_kernel_va(file) {
                    return Err(KernelError::BadPointer {
                        what: "fdtable.fd[]",
                        value: file,
                    });
                }
                let f_op = self.ptr(file.wrapping_add(sl.file_op), "file.f_op")?;
                f((first + i) as u32, file, f_op)?;
            }
        }
        Ok(())
    }

    /// The BPF programs, links and perf events among the open files of the process
    /// whose group leader is `task`, as (descriptor, what, the object).
    pub fn bpf_files(&self, task: Va) -> Result<Vec<(u32, BpfFile, Va)>, KernelError> {
        let sl = SocketLayout::from_profile(&self.profile)?;
        let fl = FdLayout::from_profile(&self.profile)?;
        let kinds: Vec<(u64, BpfFile)> = [
            ("bpf_prog_fops", BpfFile::Program),
            ("bpf_link_fops", BpfFile::Link),
            ("perf_fops", BpfFile::PerfEvent),
        ]
        .into_iter()
        .filter_map(|(s, k)| self.symbol(s).ok().map(|a| (a.0, k)))
        .collect();
        let mut out = Vec::new();
        self.open_files(task, &fl, |fd, file, f_op| {
            if let Some((_, kind)) = kinds.iter().find(|(a, _)| *a == f_op) {
                let obj = self.ptr(file.wrapping_add(sl.file_private), "file.private_data")?;
                out.push((fd, *kind, Va(obj)));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The internet socket behind the socket file `file`, `None` for other families.
    fn socket_of(
        &self,
        file: u64,
        fd: u32,
        sl: &SocketLayout,
    ) -> Result<Option<Socket>, KernelError> {
        let socket = self.ptr(file.wrapping_add(sl.file_private), "file.private_data")?;
        let sk = if socket == 0 {
            0
        } else {
            self.ptr(socket.wrapping_add(sl.socket_sk), "socket.sk")?
        };
        if sk == 0 {
            return Ok(None);
        }
        let common = sk.wrapping_add(sl.sk_common);
        let u16_at = |base: u64, off: u64, what: &'static str| {
            self.space
                .read_u16(Va(base.wrapping_add(off)))
                .map_err(read_err(what))
        };
        let family = u16_at(common, sl.family, "sock_common.skc_family")?;
        if family != AF_INET && family != AF_INET6 {
            return Ok(None);
        }
        let bytes = |off: u64, n: usize, what: &'static str| {
            self.space
                .read_bytes(Va(common.wrapping_add(off)), n)
                .map_err(read_err(what))
        };
        let addr = |v4: u64, v6: Option<u64>, what: &'static str| -> Result<IpAddr, KernelError> {
            match (family, v6) {
                (AF_INET6, Some(off)) => {
                    let b: [u8; 16] = bytes(off, 16, what)?.try_into().unwrap_or([0; 16]);
                    Ok(IpAddr::V6(Ipv6Addr::from(b)))
                }
                _ => {
                    let b: [u8; 4] = bytes(v4, 4, what)?.try_into().unwrap_or([0; 4]);
                    Ok(IpAddr::V4(Ipv4Addr::from(b)))
                }
            }
        };
        let inode = self.ptr(file.wrapping_add(sl.file_inode), "file.f_inode")?;
        let ino = if inode == 0 {
            0
        } else {
            self.space
                .read_u64(Va(inode.wrapping_add(sl.inode_ino)))
                .map_err(read_err("inode.i_ino"))?
        };
        let dport = u16_at(common, sl.dport, "sock_common.skc_dport")?;
        Ok(Some(Socket {
            fd,
            inode: ino,
            sock: Va(sk),
            family,
            protocol: u16_at(sk, sl.sk_protocol, "sock.sk_protocol")?,
            sock_type: u16_at(sk, sl.sk_type, "sock.sk_type")?,
            state: bytes(sl.state, 1, "sock_common.skc_state")?[0],
            local: (
                addr(sl.rcv_saddr, sl.v6_rcv_saddr, "sock_common local address")?,
                u16_at(common, sl.num, "sock_common.skc_num")?,
            ),
            remote: (
                addr(sl.daddr, sl.v6_daddr, "sock_common remote address")?,
                u16::from_be(dport),
            ),
        }))
    }
}
