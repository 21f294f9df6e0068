//! The sockets a process holds open, of every family: what `ss -apn` shows, from
//! outside, with each socket's filter.
//!
//! A process's open files are `task->files->fdt->fd[0..max_fds]`; a file is a socket
//! when its `f_op` is `socket_file_ops`, and then `private_data` is its `struct socket`,
//! whose `sk` is the `struct sock`. Its `sock_common` (`sock.__sk_common`) holds the
//! family, state, addresses and ports (`skc_rcv_saddr`/`skc_num` local,
//! `skc_daddr`/`skc_dport` remote; IPv6 in `skc_v6_rcv_saddr`/`skc_v6_daddr`), and
//! the socket's inode number (`file->f_inode->i_ino`) is the one `/proc/net/tcp` and
//! `/proc/PID/fd` show. A family's own socket structure begins with the `struct sock`:
//! a unix socket's bound name is `unix_sock.addr` (a `unix_address`: `len` bytes of
//! `sockaddr_un`, an abstract name's first byte 0), a packet socket's protocol and
//! interface are `packet_sock.num` (network order) and `ifindex`, a netlink socket's
//! port id `netlink_sock.portid` (its protocol is `sk_protocol`). `packet_sock` and
//! `netlink_sock` are private to their `.c` files, and a kernel may build AF_UNIX as a
//! module or not at all (no `unix_sock` in its types): a profile without them gives
//! those sockets no details, not an error.
//!
//! A socket's filter (`sock.sk_filter`, a `struct sk_filter` holding a `bpf_prog`) is
//! classic BPF when the program keeps its original (`bpf_prog.orig_prog`, a
//! `sock_fprog_kern`: `SO_ATTACH_FILTER`; decoded by [`crate::kernel::cbpf`]), eBPF
//! otherwise (`SO_ATTACH_BPF`: the program's id, `bpf_prog_aux.id`, the one `bpf`
//! lists).
//!
//! The same walk of a process's open files finds the BPF programs, links and perf
//! events it holds (`f_op` is `bpf_prog_fops`, `bpf_link_fops` or `perf_fops`).
//!
//! Bounded: at most [`MAX_FDS`] descriptors per process (the kernel's `NR_OPEN`), read
//! in pages, a unix name at most 108 bytes, a classic filter at most
//! [`cbpf::BPF_MAXINSNS`] instructions and [`MAX_DECODED_INSNS`] per process (beyond
//! either, a filter's length is kept, its program not read); a pointer that is not a
//! kernel address is an error naming it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::addr::Va;
use crate::kernel::cbpf;
use crate::kernel::objects::{is_kernel_va, read_err};
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// Most file descriptors read per process (`NR_OPEN`).
pub const MAX_FDS: usize = 1 << 20;
/// `AF_UNIX`.
pub const AF_UNIX: u16 = 1;
/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_NETLINK`.
pub const AF_NETLINK: u16 = 16;
/// `AF_PACKET`.
pub const AF_PACKET: u16 = 17;
/// `SOCK_RAW`.
pub const SOCK_RAW: u16 = 3;
/// Most classic filter instructions decoded per process (16 programs of
/// `BPF_MAXINSNS`): a process whose descriptors all name one filtered socket must not
/// make the walk hold a program per descriptor.
pub const MAX_DECODED_INSNS: usize = 16 * cbpf::BPF_MAXINSNS;
/// Bytes of `sockaddr_un.sun_path`.
pub const UNIX_PATH_MAX: usize = 108;
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
        sk_filter: u64 = "sock" ["sk_filter"],
        filter_prog: u64 = "sk_filter" ["prog"],
        prog_len: u64 = "bpf_prog" ["len"],
        prog_orig: u64 = "bpf_prog" ["orig_prog"],
        prog_aux: u64 = "bpf_prog" ["aux"],
        aux_id: u64 = "bpf_prog_aux" ["id"],
        fprog_len: u64 = "sock_fprog_kern" ["len"],
        fprog_filter: u64 = "sock_fprog_kern" ["filter"],
        unix_addr: Option<u64> = opt_type "unix_sock" ["addr"],
        unix_addr_len: Option<u64> = opt_type "unix_address" ["len"],
        unix_addr_name: Option<u64> = opt_type "unix_address" ["name"],
        packet_ifindex: Option<u64> = opt_type "packet_sock" ["ifindex"],
        packet_num: Option<u64> = opt_type "packet_sock" ["num"],
        netlink_portid: Option<u64> = opt_type "netlink_sock" ["portid"],
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

/// What a socket's family adds to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    /// `AF_INET`, `AF_INET6`: the addresses are [`Socket::local`] and
    /// [`Socket::remote`].
    Inet,
    /// `AF_UNIX`: the bound name's bytes (a path, or an abstract name starting with a
    /// 0 byte), `None` when unbound.
    Unix {
        /// The name, as the process gave it (trailing NULs of a path dropped).
        name: Option<Vec<u8>>,
    },
    /// `AF_PACKET`: the Ethernet protocol it receives (host order; 3 is `ETH_P_ALL`)
    /// and the interface it is bound to (0: all). `None` when the profile lacks
    /// `packet_sock`.
    Packet {
        /// `ntohs(packet_sock.num)`.
        protocol: Option<u16>,
        /// `packet_sock.ifindex`.
        ifindex: Option<i32>,
    },
    /// `AF_NETLINK`: its port id (`None` when the profile lacks `netlink_sock`); the
    /// netlink protocol is [`Socket::protocol`].
    Netlink {
        /// `netlink_sock.portid`.
        portid: Option<u32>,
    },
    /// Another family.
    Other,
}

/// A socket's attached filter (`sock.sk_filter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Classic BPF (`SO_ATTACH_FILTER`): the original program's length and, when it is
    /// 1..=[`cbpf::BPF_MAXINSNS`], its instructions.
    Classic {
        /// `sock_fprog_kern.len`.
        len: u16,
        /// The program (empty when `len` is out of range).
        insns: Vec<cbpf::Insn>,
        /// The `struct bpf_prog` it was converted to.
        prog: Va,
    },
    /// eBPF (`SO_ATTACH_BPF`): a loaded program, as `bpf` lists it.
    Ebpf {
        /// `bpf_prog_aux.id`.
        id: u32,
        /// Its instruction count (`bpf_prog.len`).
        len: u32,
        /// The `struct bpf_prog`.
        prog: Va,
    },
}

impl Filter {
    /// Its instruction count (the classic program's, for a classic filter).
    pub fn len(&self) -> u32 {
        match self {
            Filter::Classic { len, .. } => u32::from(*len),
            Filter::Ebpf { len, .. } => *len,
        }
    }

    /// True for a program of no instructions (which the kernel never attaches).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `cbpf` or `ebpf`.
    pub fn kind(&self) -> &'static str {
        match self {
            Filter::Classic { .. } => "cbpf",
            Filter::Ebpf { .. } => "ebpf",
        }
    }
}

/// A socket a process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    /// The file descriptor.
    pub fd: u32,
    /// The socket's inode number (`socket:[N]` in `/proc/PID/fd`).
    pub inode: u64,
    /// Its `struct sock`.
    pub sock: Va,
    /// `skc_family` (`AF_UNIX` 1, `AF_INET` 2, `AF_INET6` 10, `AF_NETLINK` 16,
    /// `AF_PACKET` 17, ...).
    pub family: u16,
    /// `sk_protocol` (`IPPROTO_TCP` 6, `IPPROTO_UDP` 17, ...; a packet socket's in
    /// network order, a netlink socket's `NETLINK_*`).
    pub protocol: u16,
    /// `sk_type` (`SOCK_STREAM` 1, `SOCK_DGRAM` 2, `SOCK_RAW` 3, `SOCK_SEQPACKET` 5).
    pub sock_type: u16,
    /// `skc_state` (TCP states; UDP: 7 unconnected, 1 connected).
    pub state: u8,
    /// Local address and port (internet sockets; unspecified and 0 for others).
    pub local: (IpAddr, u16),
    /// Remote address and port (unspecified and 0 when not connected).
    pub remote: (IpAddr, u16),
    /// What the family adds.
    pub detail: Detail,
    /// The attached filter.
    pub filter: Option<Filter>,
}

impl Socket {
    /// True for `AF_INET` and `AF_INET6`.
    pub fn is_inet(&self) -> bool {
        matches!(self.family, AF_INET | AF_INET6)
    }

    /// The family's name: `unix`, `inet`, `inet6`, `netlink`, `packet`, `af-N`.
    pub fn family_name(&self) -> String {
        match self.family {
            AF_UNIX => "unix".into(),
            AF_INET => "inet".into(),
            AF_INET6 => "inet6".into(),
            AF_NETLINK => "netlink".into(),
            AF_PACKET => "packet".into(),
            f => format!("af-{f}"),
        }
    }

    /// The socket type's name: `stream`, `dgram`, `raw`, `rdm`, `seqpacket`, `dccp`,
    /// `packet`, `type-N`.
    pub fn type_name(&self) -> String {
        match self.sock_type {
            1 => "stream".into(),
            2 => "dgram".into(),
            3 => "raw".into(),
            4 => "rdm".into(),
            5 => "seqpacket".into(),
            6 => "dccp".into(),
            10 => "packet".into(),
            t => format!("type-{t}"),
        }
    }

    /// True for a socket that sees packets not addressed to a port of its own: a packet
    /// socket, or a raw internet socket.
    pub fn is_raw(&self) -> bool {
        self.family == AF_PACKET || (self.is_inet() && self.sock_type == SOCK_RAW)
    }

    /// `raw` (any `SOCK_RAW`), `tcp`, `udp`, ... (`ipproto-N` for others); for other families the
    /// family's name (`unix`, `packet`, `netlink`).
    pub fn protocol_name(&self) -> String {
        if !self.is_inet() {
            return self.family_name();
        }
        match (self.protocol, self.sock_type) {
            // a raw socket of any protocol (SOCK_RAW, IPPROTO_UDP is raw, as ss says)
            (_, SOCK_RAW) => "raw".into(),
            (6, _) => "tcp".into(),
            (17, _) => "udp".into(),
            (136, _) => "udplite".into(),
            (132, _) => "sctp".into(),
            (262, _) => "mptcp".into(),
            (p, _) => format!("ipproto-{p}"),
        }
    }

    /// True for a socket that waits for peers: TCP in `LISTEN`, a UDP socket bound to
    /// a port and not connected.
    pub fn is_listening(&self) -> bool {
        if !self.is_inet() {
            return false;
        }
        match self.protocol {
            6 | 132 | 262 => self.state == TCP_LISTEN,
            17 | 136 => self.state == TCP_CLOSE && self.local.1 != 0,
            _ => false,
        }
    }

    /// The TCP state's name (`LISTEN`, `ESTABLISHED`, ...; a closed socket that is
    /// not a TCP-like one, UDP, raw, unix, packet, netlink, `UNCONN`, as `ss` says).
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
        // only a connection-oriented internet socket is CLOSE when it has no peer
        let tcp_like = self.is_inet() && matches!(self.protocol, 6 | 132 | 262);
        if self.state == TCP_CLOSE && !(tcp_like && self.sock_type != SOCK_RAW) {
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
    /// `Ok` when the profile has what [`Kernel::sockets`] reads (a kernel built
    /// without networking has no `socket_file_ops`): the error names what it lacks.
    pub fn can_read_sockets(&self) -> Result<(), KernelError> {
        SocketLayout::from_profile(&self.profile)?;
        FdLayout::from_profile(&self.profile)?;
        self.symbol("socket_file_ops")?;
        Ok(())
    }

    /// The sockets among the open files of the process whose group leader is `task`
    /// (none for a process without a file table, e.g. one exiting).
    pub fn sockets(&self, task: Va) -> Result<Vec<Socket>, KernelError> {
        let sl = SocketLayout::from_profile(&self.profile)?;
        let fl = FdLayout::from_profile(&self.profile)?;
        let ops = self.symbol("socket_file_ops")?;
        let mut out = Vec::new();
        let mut budget = MAX_DECODED_INSNS;
        self.open_files(task, &fl, |fd, file, f_op| {
            if f_op == ops.0 {
                if let Some(s) = self.socket_of(file, fd, &sl, &mut budget)? {
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

    /// The socket behind the socket file `file` (`None` for one without a `sock`).
    fn socket_of(
        &self,
        file: u64,
        fd: u32,
        sl: &SocketLayout,
        budget: &mut usize,
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
        let inet = family == AF_INET || family == AF_INET6;
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
        let none = (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        let (local, remote) = if inet {
            let dport = u16_at(common, sl.dport, "sock_common.skc_dport")?;
            (
                (
                    addr(sl.rcv_saddr, sl.v6_rcv_saddr, "sock_common local address")?,
                    u16_at(common, sl.num, "sock_common.skc_num")?,
                ),
                (
                    addr(sl.daddr, sl.v6_daddr, "sock_common remote address")?,
                    u16::from_be(dport),
                ),
            )
        } else {
            (none, none)
        };
        Ok(Some(Socket {
            fd,
            inode: ino,
            sock: Va(sk),
            family,
            protocol: u16_at(sk, sl.sk_protocol, "sock.sk_protocol")?,
            sock_type: u16_at(sk, sl.sk_type, "sock.sk_type")?,
            state: bytes(sl.state, 1, "sock_common.skc_state")?[0],
            local,
            remote,
            detail: self.detail(sk, family, sl)?,
            filter: self.filter(sk, sl, budget)?,
        }))
    }

    /// What the socket's family adds (see [`Detail`]).
    fn detail(&self, sk: u64, family: u16, sl: &SocketLayout) -> Result<Detail, KernelError> {
        let opt_u32 =
            |off: Option<u64>, what| off.map(|o| self.read_u32_at(Va(sk), o, what)).transpose();
        Ok(match family {
            AF_INET | AF_INET6 => Detail::Inet,
            AF_UNIX => {
                // a kernel built without AF_UNIX (or with it as a module) has no
                // unix_sock in its types: the socket is listed without its name
                let (Some(at), Some(len_at), Some(name_at)) =
                    (sl.unix_addr, sl.unix_addr_len, sl.unix_addr_name)
                else {
                    return Ok(Detail::Other);
                };
                let addr = self.ptr(sk.wrapping_add(at), "unix_sock.addr")?;
                if addr == 0 {
                    return Ok(Detail::Unix { name: None });
                }
                let len = self.read_u32_at(Va(addr), len_at, "unix_address.len")?;
                // len counts sun_family (2 bytes) and the name
                let n = (len as usize).saturating_sub(2).min(UNIX_PATH_MAX);
                let mut name = self.read_bytes_at(Va(addr), name_at + 2, n, "unix_address.name")?;
                if name.first().is_some_and(|&b| b != 0) {
                    // a path: NUL-terminated within len
                    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                    name.truncate(end);
                }
                Detail::Unix { name: Some(name) }
            }
            AF_PACKET => Detail::Packet {
                // num is the first half of a 32-bit word on every layout: read it alone
                protocol: match sl.packet_num {
                    Some(o) => {
                        let b = self.read_bytes_at(Va(sk), o, 2, "packet_sock.num")?;
                        Some(u16::from_be_bytes(b.try_into().unwrap_or([0; 2])))
                    }
                    None => None,
                },
                ifindex: opt_u32(sl.packet_ifindex, "packet_sock.ifindex")?.map(|v| v as i32),
            },
            AF_NETLINK => Detail::Netlink {
                portid: opt_u32(sl.netlink_portid, "netlink_sock.portid")?,
            },
            _ => Detail::Other,
        })
    }

    /// The socket's filter (see [`Filter`]); a classic program is decoded while
    /// `budget` instructions remain, and spends them.
    fn filter(
        &self,
        sk: u64,
        sl: &SocketLayout,
        budget: &mut usize,
    ) -> Result<Option<Filter>, KernelError> {
        let f = self.ptr(sk.wrapping_add(sl.sk_filter), "sock.sk_filter")?;
        if f == 0 {
            return Ok(None);
        }
        let prog = self.ptr(f.wrapping_add(sl.filter_prog), "sk_filter.prog")?;
        if prog == 0 {
            return Err(KernelError::BadPointer {
                what: "sk_filter.prog",
                value: 0,
            });
        }
        let orig = self.ptr(prog.wrapping_add(sl.prog_orig), "bpf_prog.orig_prog")?;
        if orig != 0 {
            let b = self.read_bytes_at(Va(orig), sl.fprog_len, 2, "sock_fprog_kern.len")?;
            let len = u16::from_le_bytes(b.try_into().unwrap_or([0; 2]));
            let mut insns = Vec::new();
            if (1..=cbpf::BPF_MAXINSNS).contains(&usize::from(len)) && usize::from(len) <= *budget {
                *budget -= usize::from(len);
                let at = self.ptr(orig.wrapping_add(sl.fprog_filter), "sock_fprog_kern.filter")?;
                let n = usize::from(len) * 8;
                insns =
                    cbpf::parse(&self.read_bytes_at(Va(at), 0, n, "sock_fprog_kern.filter[]")?);
            }
            return Ok(Some(Filter::Classic {
                len,
                insns,
                prog: Va(prog),
            }));
        }
        let len = self.read_u32_at(Va(prog), sl.prog_len, "bpf_prog.len")?;
        let aux = self.ptr(prog.wrapping_add(sl.prog_aux), "bpf_prog.aux")?;
        let id = match aux {
            0 => 0,
            a => self.read_u32_at(Va(a), sl.aux_id, "bpf_prog_aux.id")?,
        };
        Ok(Some(Filter::Ebpf {
            id,
            len,
            prog: Va(prog),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SyntheticKernel;

    /// `ldh [12]; jeq #0x800 jt 2 jf 3; ret #65535; ret #0` as the kernel stores it.
    fn prog() -> Vec<[u8; 8]> {
        let i = |code: u16, jt: u8, jf: u8, k: u32| {
            let mut b = [0u8; 8];
            b[..2].copy_from_slice(&code.to_le_bytes());
            b[2] = jt;
            b[3] = jf;
            b[4..].copy_from_slice(&k.to_le_bytes());
            b
        };
        vec![
            i(0x28, 0, 0, 12),
            i(0x15, 0, 1, 0x800),
            i(0x06, 0, 0, 0xffff),
            i(0x06, 0, 0, 0),
        ]
    }

    /// Every family a BPFDoor-like implant and the programs beside it hold: what each
    /// family adds, and the filters, classic decoded and eBPF by id.
    #[test]
    fn every_family_and_its_filter() {
        let mut sk = SyntheticKernel::clean();
        let t = sk.add_process(300, b"haldaemon", 0);
        let tcp = sk.add_socket(&t, 3, (AF_INET, 1, 6, TCP_LISTEN), 5001);
        let c = sk.field_va(tcp, "sock", "__sk_common");
        sk.write_field(c, "sock_common", "skc_rcv_saddr", &[127, 0, 0, 1]);
        sk.write_field(c, "sock_common", "skc_num", &4444u16.to_le_bytes());
        // AF_PACKET, SOCK_RAW, htons(ETH_P_ALL) with the magic packet's filter
        let pkt = sk.add_socket(&t, 4, (AF_PACKET, 3, 0x0300, 1), 5002);
        sk.write_field(pkt, "packet_sock", "num", &0x0300u16.to_le_bytes());
        sk.set_u32(pkt, "packet_sock", "ifindex", 2);
        let cprog = sk.attach_cbpf(pkt, &prog(), 4);
        let raw = sk.add_socket(&t, 5, (AF_INET, SOCK_RAW, 17, 7), 5003);
        let bpf = sk.add_bpf_prog(9, 1, b"magic", [1; 8]);
        sk.set_u32(bpf, "bpf_prog", "len", 12);
        sk.attach_prog(raw, bpf);
        let path = sk.add_socket(&t, 6, (AF_UNIX, 1, 0, TCP_LISTEN), 5004);
        sk.bind_unix(path, b"/run/lab.sock");
        let abs = sk.add_socket(&t, 7, (AF_UNIX, 2, 0, TCP_CLOSE), 5005);
        sk.bind_unix(abs, b"\0lab-abstract");
        sk.add_socket(&t, 8, (AF_UNIX, 1, 0, TCP_ESTABLISHED), 5006);
        let nl = sk.add_socket(&t, 9, (AF_NETLINK, 3, 0, TCP_CLOSE), 5007);
        sk.set_u32(nl, "netlink_sock", "portid", 300);
        let k = sk.discover().expect("discover");
        let socks = k.sockets(t.task).expect("sockets");
        let by_fd = |fd: u32| socks.iter().find(|s| s.fd == fd).expect("fd");
        assert_eq!(socks.len(), 7);

        let s = by_fd(3);
        assert_eq!(
            (s.detail.clone(), s.filter.clone(), s.local.1, s.inode),
            (Detail::Inet, None, 4444, 5001)
        );
        assert!(s.is_listening() && !s.is_raw());
        assert_eq!(s.local.0.to_string(), "127.0.0.1");

        let s = by_fd(4);
        assert_eq!(
            s.detail,
            Detail::Packet {
                protocol: Some(3),
                ifindex: Some(2)
            }
        );
        assert!(s.is_raw() && !s.is_listening());
        assert_eq!(
            (s.family_name(), s.type_name()),
            ("packet".into(), "raw".into())
        );
        let Some(Filter::Classic { len, insns, prog }) = &s.filter else {
            panic!("{:?}", s.filter);
        };
        assert_eq!((*len, *prog), (4, cprog));
        assert_eq!(
            cbpf::disassemble(insns),
            [
                "(000) ldh      [12]",
                "(001) jeq      #0x800           jt 2\tjf 3",
                "(002) ret      #65535",
                "(003) ret      #0",
            ]
        );

        let s = by_fd(5);
        assert!(s.is_raw());
        assert_eq!(s.protocol_name(), "raw");
        assert_eq!(
            s.filter,
            Some(Filter::Ebpf {
                id: 9,
                len: 12,
                prog: bpf
            })
        );

        let name = |fd: u32| match &by_fd(fd).detail {
            Detail::Unix { name } => name.clone(),
            d => panic!("{d:?}"),
        };
        assert_eq!(name(6), Some(b"/run/lab.sock".to_vec()));
        assert_eq!(name(7), Some(b"\0lab-abstract".to_vec()));
        assert_eq!(name(8), None);
        assert_eq!(by_fd(6).protocol_name(), "unix");
        assert!(
            !by_fd(6).is_listening(),
            "only internet sockets listen on ports"
        );

        let s = by_fd(9);
        assert_eq!(s.detail, Detail::Netlink { portid: Some(300) });
        assert_eq!(s.family_name(), "netlink");
    }

    /// A classic filter longer than BPF_MAXINSNS keeps its length and is not read; a
    /// unix name longer than sun_path is cut to it; at most MAX_DECODED_INSNS are
    /// decoded per process; a wild filter pointer is an error naming it.
    #[test]
    fn hostile_filters_and_names_are_bounded() {
        let mut sk = SyntheticKernel::clean();
        let t = sk.add_process(300, b"x", 0);
        let pkt = sk.add_socket(&t, 3, (AF_PACKET, 3, 0x0300, 1), 1);
        sk.attach_cbpf(pkt, &prog(), u16::MAX);
        let u = sk.add_socket(&t, 4, (AF_UNIX, 1, 0, TCP_CLOSE), 2);
        sk.bind_unix(u, &[b'a'; 108]);
        let addr = Va(sk.get(u, "unix_sock", "addr"));
        sk.set_u32(addr, "unix_address", "len", u32::MAX);
        let k = sk.discover().expect("discover");
        let socks = k.sockets(t.task).expect("sockets");
        match &socks[0].filter {
            Some(Filter::Classic { len, insns, .. }) => {
                assert_eq!((*len, insns.len()), (u16::MAX, 0));
            }
            f => panic!("{f:?}"),
        }
        match &socks[1].detail {
            Detail::Unix { name: Some(n) } => assert_eq!(n.len(), UNIX_PATH_MAX),
            d => panic!("{d:?}"),
        }

        // one filtered socket on every descriptor: 16 full programs are decoded
        let mut sk = SyntheticKernel::clean();
        let t = sk.add_process(300, b"x", 0);
        let pkt = sk.add_socket(&t, 0, (AF_PACKET, 3, 0x0300, 1), 1);
        sk.attach_cbpf(
            pkt,
            &vec![[6, 0, 0, 0, 0, 0, 0, 0]; cbpf::BPF_MAXINSNS],
            4096,
        );
        let file = sk.read_u64(Va(sk.get(
            Va(sk.get(
                Va(sk.get(t.task, "task_struct", "files")),
                "files_struct",
                "fdt",
            )),
            "fdtable",
            "fd",
        )));
        for fd in 1..20 {
            sk.open_fd(&t, fd, Va(file));
        }
        let k = sk.discover().expect("discover");
        let socks = k.sockets(t.task).expect("sockets");
        let decoded: Vec<usize> = socks
            .iter()
            .map(|s| match &s.filter {
                Some(Filter::Classic {
                    len: 4096, insns, ..
                }) => insns.len(),
                f => panic!("{f:?}"),
            })
            .collect();
        assert_eq!(decoded.len(), 20);
        assert!(decoded[..16].iter().all(|&n| n == 4096), "{decoded:?}");
        assert!(decoded[16..].iter().all(|&n| n == 0), "{decoded:?}");

        let mut sk = SyntheticKernel::clean();
        let t = sk.add_process(300, b"x", 0);
        let pkt = sk.add_socket(&t, 3, (AF_PACKET, 3, 0x0300, 1), 1);
        sk.set(pkt, "sock", "sk_filter", 0x4141_4141);
        let k = sk.discover().expect("discover");
        match k.sockets(t.task) {
            Err(KernelError::BadPointer { what, value }) => {
                assert_eq!((what, value), ("sock.sk_filter", 0x4141_4141));
            }
            r => panic!("{r:?}"),
        }
    }
}
