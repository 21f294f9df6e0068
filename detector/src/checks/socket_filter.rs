//! `socket-filter`: a BPF filter on a socket that sees raw traffic, the wake-up filter
//! of a passive backdoor.
//!
//! BPFDoor and its kind change no kernel structure and listen on no port: the implant
//! opens an `AF_PACKET` (or raw IP) socket, attaches a classic BPF filter that lets
//! through only its magic packet, and sleeps until one arrives. No listener shows in
//! `ss -l`, and a firewall in front of the host's ports does not stop the packet. The
//! filter stays in the kernel (`sock.sk_filter`; see [`vmi_core::kernel::sockets`]).
//!
//! A filter on a packet socket or a raw internet socket ([`Socket::is_raw`]) of a user
//! process is reported unless the process's executable (the kernel's `mm->exe_file`
//! path, not its name, which BPFDoor rewrites to `/usr/sbin/haldaemon`) is allowed:
//! the policy's `allow_socket_filter` globs, or without that key
//! [`DEFAULT_ALLOWED`] (packet capture, DHCP clients and servers, network managers;
//! they filter raw sockets every day). High when the executable is not installed (a
//! memfd, a deleted file, a world-writable directory: [`exec_location::judge`]),
//! medium otherwise. Filters on other sockets (a UDP server's, systemd's on its unix
//! sockets) are not judged, nor `SO_ATTACH_REUSEPORT_*` programs (`sk_reuseport_cb`,
//! not read). One finding per socket,
//! with the classic program decoded as `tcpdump -d` prints it (`; `-separated, one
//! line per finding), or the eBPF program's id as `bpf` lists it.

use vmi_core::kernel::cbpf;
use vmi_core::kernel::files::FileName;
use vmi_core::kernel::sockets::{Filter, Socket};
use vmi_core::kernel::Process;
use vmi_core::memory::PhysicalMemory;

use crate::checks::exec_location::{self, Role};
use crate::checks::{read_process, reread, unchanged, CheckFailure, Scan, READ_TRIES};
use crate::finding::{guest_str, Finding, Severity};
use crate::policy::Policy;

const NAME: &str = "socket-filter";

/// Executables allowed a raw socket's filter without a policy's `allow_socket_filter`:
/// exact paths.
pub const DEFAULT_ALLOWED: &[&str] = &[
    "/usr/bin/tcpdump",
    "/usr/sbin/tcpdump",
    "/usr/bin/dumpcap",
    "/usr/sbin/dhclient",
    "/sbin/dhclient",
    "/usr/sbin/dhcpcd",
    "/sbin/dhcpcd",
    "/usr/sbin/dnsmasq",
    "/usr/sbin/dhcpd",
    "/usr/lib/systemd/systemd-networkd",
    "/lib/systemd/systemd-networkd",
    "/usr/sbin/NetworkManager",
    "/usr/sbin/wpa_supplicant",
    "/usr/sbin/hostapd",
    "/usr/sbin/lldpd",
    "/usr/sbin/arpwatch",
    "/usr/sbin/keepalived",
];

/// Judge one socket of a process whose executable is `exe`: `None` when there is
/// nothing to report.
pub fn judge(s: &Socket, exe: Option<&FileName>, policy: Option<&Policy>) -> Option<Severity> {
    s.filter.as_ref()?;
    if !s.is_raw() {
        return None;
    }
    if let Some(exe) = exe {
        let allowed = match policy {
            Some(p) => p.socket_filter_allowed(&exe.path),
            None => Policy::default().socket_filter_allowed(&exe.path),
        };
        if allowed {
            return None;
        }
    }
    // not installed where programs are: a dropper's, as exec-location judges it
    match exe {
        None => Some(Severity::High),
        Some(e) if exec_location::judge(e, Role::Executable).is_some() => Some(Severity::High),
        Some(_) => Some(Severity::Medium),
    }
}

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    ready(scan)?;
    crate::checks::per_process(scan, one)
}

/// Whether the profile has what the check reads: a kernel built without networking
/// has no sockets to judge, and the check cannot run (not a low finding per process).
pub fn ready<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<(), CheckFailure> {
    Ok(scan.kernel.can_read_sockets()?)
}

/// A filter described in words: `a classic BPF filter of 12 instructions`.
fn says(f: &Filter) -> String {
    match f {
        Filter::Classic { len, .. } => format!("a classic BPF filter of {len} instructions"),
        Filter::Ebpf { id, len, .. } => {
            format!("an eBPF filter (program {id}) of {len} instructions")
        }
    }
}

/// Judge the sockets of user process `p` (the unit `watch`'s incremental scans keep per
/// process).
pub fn one<M: PhysicalMemory>(
    scan: &Scan<'_, M>,
    p: &Process,
    policy: Option<&Policy>,
    out: &mut Vec<Finding>,
) {
    let k = scan.kernel;
    let comm = guest_str(&p.comm);
    let id = format!("{}:{}", p.pid, p.start_time);
    let Some(socks) = read_process(k, NAME, p, "sockets", out, || k.sockets(p.task)) else {
        return;
    };
    if !socks.iter().any(|s| s.filter.is_some() && s.is_raw()) {
        return;
    }
    let exe = reread(k, READ_TRIES, || k.exe_file(p.mm)).ok().flatten();
    if !unchanged(k, p) {
        return;
    }
    let shown = exe.as_ref().map(|e| guest_str(&e.display()));
    for s in &socks {
        let (Some(severity), Some(f)) = (judge(s, exe.as_ref(), policy), &s.filter) else {
            continue;
        };
        let mut finding = Finding::new(
            NAME,
            severity,
            format!("{NAME}:{id}:{}", s.inode),
            format!(
                "process {} ({comm}, {}) has {} on a {} {} socket (fd {}): a raw socket's filter picks the packets it wakes on",
                p.pid,
                shown.as_deref().unwrap_or("no executable"),
                says(f),
                s.family_name(),
                s.type_name(),
                s.fd
            ),
        )
        .num("pid", u64::from(p.pid))
        .text("comm", comm.clone())
        .text("exe", shown.clone().unwrap_or_default())
        .num("fd", u64::from(s.fd))
        .num("inode", s.inode)
        .text("family", s.family_name())
        .text("type", s.type_name())
        .text("filter", f.kind())
        .num("instructions", u64::from(f.len()));
        finding = match f {
            Filter::Classic { insns, .. } => {
                // one line per finding in text: instructions "; "-separated, no tabs
                let lines: Vec<String> = cbpf::disassemble(insns)
                    .iter()
                    .map(|l| l.replace('\t', " "))
                    .collect();
                finding.text("program", lines.join("; "))
            }
            Filter::Ebpf { id, .. } => finding.num("bpf_id", u64::from(*id)),
        };
        out.push(finding);
    }
}

#[cfg(test)]
mod tests {
    use vmi_core::kernel::files::Linkage;
    use vmi_core::kernel::sockets::{Detail, AF_INET, AF_PACKET, AF_UNIX};
    use vmi_core::Va;

    use super::*;

    fn sock(family: u16, sock_type: u16, filter: bool) -> Socket {
        Socket {
            fd: 3,
            inode: 7,
            sock: Va(0),
            family,
            protocol: 0,
            sock_type,
            state: 7,
            local: ([0, 0, 0, 0].into(), 0),
            remote: ([0, 0, 0, 0].into(), 0),
            detail: Detail::Other,
            filter: filter.then(|| Filter::Classic {
                len: 1,
                insns: vec![],
                prog: Va(0),
            }),
        }
    }

    fn exe(path: &str, linkage: Linkage) -> FileName {
        FileName {
            path: path.as_bytes().to_vec(),
            linkage,
        }
    }

    #[test]
    fn raw_filters_of_programs_not_allowed() {
        let shm = exe("/dev/shm/kdmtmpflush", Linkage::Deleted);
        let local = exe("/usr/local/bin/sniffer", Linkage::Linked);
        let tcpdump = exe("/usr/sbin/tcpdump", Linkage::Linked);
        let packet = sock(AF_PACKET, 3, true);
        let raw = sock(AF_INET, 3, true);
        // BPFDoor: a dropper from /dev/shm
        assert_eq!(judge(&packet, Some(&shm), None), Some(Severity::High));
        assert_eq!(judge(&raw, Some(&shm), None), Some(Severity::High));
        // an installed program not on the list
        assert_eq!(judge(&packet, Some(&local), None), Some(Severity::Medium));
        // no executable to judge by (it is gone): high
        assert_eq!(judge(&packet, None, None), Some(Severity::High));
        // the defaults allow packet capture and DHCP
        assert_eq!(judge(&packet, Some(&tcpdump), None), None);
        // no filter, or a socket that is not raw
        assert_eq!(judge(&sock(AF_PACKET, 3, false), Some(&shm), None), None);
        assert_eq!(judge(&sock(AF_INET, 2, true), Some(&shm), None), None);
        assert_eq!(judge(&sock(AF_UNIX, 2, true), Some(&shm), None), None);
        // a policy's list replaces the defaults
        let p = Policy::parse("allow_socket_filter = [\"/usr/local/bin/*\"]").unwrap();
        assert_eq!(judge(&packet, Some(&local), Some(&p)), None);
        assert_eq!(
            judge(&packet, Some(&tcpdump), Some(&p)),
            Some(Severity::Medium)
        );
        // a policy without the key keeps the defaults
        let p = Policy::parse("allow_jit = [\"/usr/bin/node\"]").unwrap();
        assert_eq!(judge(&packet, Some(&tcpdump), Some(&p)), None);
    }
}

#[cfg(test)]
mod synthetic_tests {
    use vmi_core::kernel::sockets::{AF_INET, AF_PACKET, AF_UNIX, SOCK_RAW};

    use crate::checks::synthetic::{ev, run, run_on, single, system};
    use crate::checks::{Check, Settings};
    use crate::finding::Severity;
    use crate::policy::Policy;

    const CHECK: Check = Check::SocketFilter;

    /// BPFDoor's filter: `ldh [12]; jeq #0x800 jt 2 jf 3; ret #65535; ret #0`.
    fn magic() -> Vec<[u8; 8]> {
        [
            (0x28u16, 0u8, 0u8, 12u32),
            (0x15, 0, 1, 0x800),
            (0x06, 0, 0, 0xffff),
            (0x06, 0, 0, 0),
        ]
        .iter()
        .map(|&(c, jt, jf, k)| {
            let mut b = [0u8; 8];
            b[..2].copy_from_slice(&c.to_le_bytes());
            b[2] = jt;
            b[3] = jf;
            b[4..].copy_from_slice(&k.to_le_bytes());
            b
        })
        .collect()
    }

    #[test]
    fn bpfdoor_is_high_with_its_program() {
        let mut s = system();
        let t = s.sk.add_process(2100, b"haldaemon", 0);
        let exe: &[u8] = b"/dev/shm/kdmtmpflush";
        s.sk.exec(&t, exe, &[b"/usr/sbin/haldaemon"], exe);
        s.sk.unlink(exe);
        let pkt =
            s.sk.add_socket(&t, 3, (AF_PACKET, SOCK_RAW, 0x0300, 7), 9001);
        s.sk.attach_cbpf(pkt, &magic(), 4);
        // a unix socket with a filter and a TCP listener: not raw, not judged
        let u = s.sk.add_socket(&t, 4, (AF_UNIX, 2, 0, 7), 9002);
        s.sk.attach_cbpf(u, &magic(), 4);
        s.sk.add_socket(&t, 5, (AF_INET, 1, 6, 10), 9003);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(f.key, "socket-filter:2100:2100000:9001");
        assert_eq!(ev(f, "exe"), "/dev/shm/kdmtmpflush (deleted)");
        assert_eq!(ev(f, "family"), "packet");
        assert_eq!(ev(f, "filter"), "cbpf");
        assert_eq!(ev(f, "instructions"), "4");
        assert_eq!(
            ev(f, "program"),
            "(000) ldh      [12]; (001) jeq      #0x800           jt 2 jf 3; (002) ret      #65535; (003) ret      #0"
        );
    }

    #[test]
    fn an_ebpf_filter_on_a_raw_socket_names_its_program() {
        let mut s = system();
        let raw = s.sk.add_socket(&s.bash, 3, (AF_INET, SOCK_RAW, 1, 7), 9001);
        let prog = s.sk.add_bpf_prog(42, 1, b"wake", [0; 8]);
        s.sk.attach_prog(raw, prog);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::Medium);
        assert_eq!(ev(f, "bpf_id"), "42");
        assert_eq!(ev(f, "exe"), "/usr/bin/bash");
    }

    /// The system with tcpdump's packet socket and its filter.
    fn tcpdump() -> vmi_core::testing::SyntheticKernel {
        let mut s = system();
        let t = s.sk.add_process(2200, b"tcpdump", 0);
        s.sk.exec(
            &t,
            b"/usr/sbin/tcpdump",
            &[b"tcpdump"],
            b"/usr/sbin/tcpdump",
        );
        let pkt =
            s.sk.add_socket(&t, 3, (AF_PACKET, SOCK_RAW, 0x0300, 7), 9001);
        s.sk.attach_cbpf(pkt, &magic(), 4);
        s.sk
    }

    #[test]
    fn allowed_programs_and_a_clean_system_raise_nothing() {
        assert!(run(system().sk, CHECK).is_empty());
        assert!(run(tcpdump(), CHECK).is_empty());
        // the policy replaces the list
        let settings = Settings {
            policy: Some(Policy::parse("allow_socket_filter = [\"/opt/*\"]").unwrap()),
            ..Settings::default()
        };
        assert_eq!(run_on(tcpdump(), &[], &settings, CHECK).unwrap().len(), 1);
    }

    /// Sockets that cannot be read (a wild file pointer) are a low finding.
    #[test]
    fn unreadable_sockets_are_low() {
        let mut s = system();
        s.sk.add_socket(&s.bash, 3, (AF_UNIX, 1, 0, 7), 9001);
        let files = s.sk.get(s.bash.task, "task_struct", "files");
        let fdt = s.sk.get(vmi_core::Va(files), "files_struct", "fdt");
        let array = s.sk.get(vmi_core::Va(fdt), "fdtable", "fd");
        s.sk.write_u64(vmi_core::Va(array + 3 * 8), 0x4141);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::Low);
        assert_eq!(f.key, "socket-filter:unreadable:1000:1000000");
    }
}
