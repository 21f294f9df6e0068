//! `sockets` against the guest's /proc/net and /proc/PID/fd, the listen policy, and
//! Volatility's sockstat; a passive backdoor's packet socket and its filter
//! ([`packet_filter`]: the `socket-filter` check).

use super::*;

/// Internet sockets in the guest: busybox `nc` listening on TCP 4444 (IPv6, dual
/// stack), the lab worker bound to UDP 5555 (IPv4; busybox's nc has no UDP), and a
/// connected TCP pair (an IPv4 client to an nc listening on 4445, which nc closes once
/// it accepts), the loopback brought up first.
pub(crate) fn start_sockets(label: &str, guest: &mut Guest) -> Vec<String> {
    let out = guest.sh("ip link set lo up; \
         sleep 100000 2>/dev/null | nc -l -p 4444 >/dev/null 2>&1 & \
         /bin/lab-sleeper udp 5555 </dev/null >/dev/null 2>&1 & \
         sleep 100000 2>/dev/null | nc -l -p 4445 >/dev/null 2>&1 & sleep 1; \
         sleep 100000 2>/dev/null | nc 127.0.0.1 4445 >/dev/null 2>&1 & sleep 1; echo started");
    match out {
        Ok(o) if o.lines.last().map(String::as_str) == Some("started") => Vec::new(),
        o => vec![format!("{label}: starting the sockets: {o:?}")],
    }
}

/// One socket as "proto local remote state inode pid", from the guest's /proc/net.
pub(crate) type SocketRow = String;

/// The guest's own view: every socket of `/proc/net/{tcp,tcp6,udp,udp6}` with an inode,
/// once per process holding it (`/proc/PID/fd` links `socket:[INODE]`).
pub(crate) fn guest_sockets(label: &str, guest: &mut Guest) -> Result<BTreeSet<SocketRow>, String> {
    let out = guest
        .sh(
            "for f in tcp tcp6 udp udp6; do sed 1d /proc/net/$f | sed \"s/^/$f /\"; done; \
             for l in /proc/[0-9]*/fd/*; do t=$(readlink $l 2>/dev/null); \
             case $t in socket:*) echo \"fd $l $t\";; esac; done",
        )
        .map_err(|e| format!("{label}: reading /proc/net: {e}"))?;
    let mut pids: std::collections::BTreeMap<u64, BTreeSet<u32>> = Default::default();
    let mut rows = Vec::new();
    for line in &out.lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"fd") && f.len() == 3 {
            let pid = f[1].split('/').nth(2).and_then(|p| p.parse().ok());
            let ino = f[2]
                .trim_start_matches("socket:[")
                .trim_end_matches(']')
                .parse()
                .ok();
            if let (Some(pid), Some(ino)) = (pid, ino) {
                pids.entry(ino).or_default().insert(pid);
            }
        } else if f.len() > 10 {
            rows.push((f[0], f[2], f[3], f[4], f[10]));
        }
    }
    let addr = |a: &str| -> Option<String> {
        let (ip, port) = a.split_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        let words: Vec<[u8; 4]> = (0..ip.len() / 8)
            .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).map(u32::to_le_bytes))
            .collect::<Result<_, _>>()
            .ok()?;
        Some(match words.len() {
            1 => format!("{}:{port}", std::net::Ipv4Addr::from(words[0])),
            4 => {
                let b: Vec<u8> = words.concat();
                let b: [u8; 16] = b.try_into().ok()?;
                format!("[{}]:{port}", std::net::Ipv6Addr::from(b))
            }
            _ => return None,
        })
    };
    let mut set = BTreeSet::new();
    for (file, local, remote, st, ino) in rows {
        let ino: u64 = ino.parse().map_err(|_| format!("{label}: inode {ino}"))?;
        if ino == 0 {
            continue;
        }
        let (Some(l), Some(r), Ok(st)) = (addr(local), addr(remote), u8::from_str_radix(st, 16))
        else {
            return Err(format!(
                "{label}: /proc/net/{file} line {local} {remote} {st}"
            ));
        };
        for pid in pids.get(&ino).into_iter().flatten() {
            set.insert(format!("{file} {l} {r} {st} {ino} {pid}"));
        }
    }
    Ok(set)
}

/// The detector's `sockets --json` in the same form as [`guest_sockets`]: its TCP and
/// UDP sockets (the other families are [`packet_filter`]'s).
pub(crate) fn detector_sockets(run: &Run) -> BTreeSet<SocketRow> {
    let mut set = BTreeSet::new();
    let tcp_udp = |s: &&Value| {
        matches!(s["family"].as_str(), Some("ipv4" | "ipv6"))
            && matches!(s["protocol"].as_str(), Some("tcp" | "udp"))
    };
    for s in run.json().as_array().into_iter().flatten().filter(tcp_udp) {
        let v6 = s["family"] == "ipv6";
        let ep = |a: &Value, p: &Value| {
            if v6 {
                format!("[{}]:{}", a.as_str().unwrap_or(""), p)
            } else {
                format!("{}:{}", a.as_str().unwrap_or(""), p)
            }
        };
        set.insert(format!(
            "{}{} {} {} {} {} {}",
            s["protocol"].as_str().unwrap_or(""),
            if v6 { "6" } else { "" },
            ep(&s["local_address"], &s["local_port"]),
            ep(&s["remote_address"], &s["remote_port"]),
            s["state_code"],
            s["inode"],
            s["pid"]
        ));
    }
    set
}

/// `sockets` lists exactly the guest's /proc/net sockets with their processes, and
/// has the nc listeners and the connected pair (they stay as they are between the
/// guest's read and the detector's).
pub(crate) fn sockets_match(label: &str, d: &Detector, guest: &mut Guest) -> Vec<String> {
    let mut problems = Vec::new();
    let want = match guest_sockets(label, guest) {
        Ok(w) => w,
        Err(e) => return vec![e],
    };
    let run = d.live(guest, &["--json", "sockets"]);
    if !run.ok_but_hidden() {
        return vec![format!(
            "{label}: sockets: exit {}: {}",
            run.code, run.stderr
        )];
    }
    let got = detector_sockets(&run);
    for w in want.difference(&got) {
        problems.push(format!(
            "{label}: the guest has socket {w}, the detector not"
        ));
    }
    for g in got.difference(&want) {
        problems.push(format!(
            "{label}: the detector lists socket {g}, the guest not"
        ));
    }
    let listens = |p: &str, port: &str| want.iter().any(|w| w.contains(p) && w.contains(port));
    if !(listens("tcp", ":4444 ") && listens("udp", ":5555 ") && listens(" 1 ", ":4445 ")) {
        problems.push(format!(
            "{label}: the nc sockets are not all there: {want:#?}"
        ));
    }
    eprintln!("{label}: {} sockets, as the guest lists them", want.len());
    problems
}

/// `allow_listen` in a policy: the listeners on 4444 (tcp) and 5555 (udp) are the
/// findings of a policy that allows only tcp:4445 and tcp:22; allowing `*:*` finds
/// nothing.
pub(crate) fn listen_policy(
    label: &str,
    d: &Detector,
    guest: &mut Guest,
    dir: &Path,
) -> Vec<String> {
    let file = dir.join("listen.toml");
    let mut problems = Vec::new();
    for (text, wants) in [
        (
            "allow_listen = [\"tcp:22\", \"tcp:4445\"]\n",
            vec![
                want("nc listening on tcp 4444", "policy", |e| {
                    e["rule"] == "allow_listen" && e["protocol"] == "tcp" && e["port"] == 4444
                }),
                want("nc bound to udp 5555", "policy", |e| {
                    e["rule"] == "allow_listen" && e["protocol"] == "udp" && e["port"] == 5555
                }),
            ],
        ),
        ("allow_listen = [\"*:*\"]\n", vec![]),
    ] {
        let run = run_policy(d, guest, &file, text);
        problems.extend(expect_exactly(
            &format!("{label} {}", text.trim()),
            &run,
            &wants,
        ));
    }
    problems
}

/// Volatility 3's `linux.sockstat` on the ELF dump: every TCP and UDP socket of the
/// IPv4 and IPv6 families it lists (by pid, fd and local port) is in the detector's
/// `sockets` on the same dump.
pub(crate) fn volatility_sockets(v: &Volatility, d: &Detector) -> Vec<String> {
    let kernel = v.kernel.as_str();
    let run = d.run(&["--dump", v.elf.to_str().unwrap()], &["--json", "sockets"]);
    let ours = run.json();
    let ours = ours.as_array().cloned().unwrap_or_default();
    let mut problems = Vec::new();
    let rows = v.rows("linux.sockstat");
    // a string in Volatility's JSON
    let port = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .or_else(|| v.as_u64().map(|n| n.to_string()))
    };
    let mut seen = 0;
    for r in rows.iter().filter(|r| {
        matches!(r["Family"].as_str(), Some("AF_INET" | "AF_INET6"))
            && matches!(r["Proto"].as_str(), Some("TCP" | "UDP"))
    }) {
        seen += 1;
        let ok = ours.iter().any(|s| {
            s["pid"] == r["PID"]
                && s["fd"] == r["FD"]
                && Some(s["local_port"].to_string().as_str()) == port(&r["Source Port"]).as_deref()
                && s["protocol"].as_str().map(str::to_uppercase).as_deref() == r["Proto"].as_str()
        });
        if !ok {
            problems.push(format!(
                "{kernel}: Volatility's sockstat lists a socket the detector does not: {r}"
            ));
        }
    }
    if seen == 0 {
        problems.push(format!(
            "{kernel}: Volatility's sockstat lists no TCP or UDP socket"
        ));
    }
    problems
}

/// The classic program the worker's `packet-filter` mode attaches (labworker.c's
/// `magic_filter`), as `tcpdump -d` prints it.
const MAGIC_FILTER: [&str; 11] = [
    "(000) ldh      [12]",
    "(001) jeq      #0x800           jt 2\tjf 9",
    "(002) ldb      [23]",
    "(003) jeq      #0x11            jt 4\tjf 9",
    "(004) ldh      [20]",
    "(005) jset     #0x1fff          jt 9\tjf 6",
    "(006) ldxb     4*([14]&0xf)",
    "(007) ldh      [x + 22]",
    "(008) jeq      #0x7255          jt 10\tjf 9",
    "(009) ret      #0",
    "(010) ret      #262144",
];

/// The BPFDoor-like worker: its pid, the packet and raw sockets' descriptors and the
/// raw socket's eBPF program id, as the worker printed them (the id from the kernel's
/// BPF_OBJ_GET_INFO_BY_FD).
struct Backdoor {
    pid: u32,
    packet: u32,
    raw: u32,
    ebpf_id: u64,
}

/// Start the worker's `packet-filter` mode as BPFDoor runs: copied to /dev/shm, run
/// from there renamed `haldaemon`, the copy deleted.
fn start_backdoor(label: &str, guest: &mut Guest) -> Result<Backdoor, String> {
    let out = guest
        .sh(
            "ip link set lo up; mkdir -p /dev/shm; cp /bin/lab-sleeper /dev/shm/kdmtmpflush; \
             /dev/shm/kdmtmpflush packet-filter haldaemon </dev/null >/tmp/pf.out 2>&1 & \
             for i in 1 2 3 4 5 6 7 8 9 10; do grep -q ready /tmp/pf.out && break; sleep 1; done; \
             rm -f /dev/shm/kdmtmpflush; cat /tmp/pf.out",
        )
        .map_err(|e| format!("{label}: starting the backdoor: {e}"))?;
    let field = |prefix: &str, key: &str| -> Option<u64> {
        let line = out.lines.iter().find(|l| l.starts_with(prefix))?;
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))?
            .parse()
            .ok()
    };
    let u32_of = |prefix, key| field(prefix, key).and_then(|v| u32::try_from(v).ok());
    match (
        u32_of("packet-filter ready", "pid"),
        u32_of("packet-filter ready", "packet"),
        u32_of("packet-filter ready", "raw"),
        field("bpf kind=raw_filter", "id"),
    ) {
        (Some(pid), Some(packet), Some(raw), Some(ebpf_id)) => Ok(Backdoor {
            pid,
            packet,
            raw,
            ebpf_id,
        }),
        _ => Err(format!(
            "{label}: the backdoor did not start: {:?}",
            out.lines
        )),
    }
}

/// The name /proc uses for a socket type number.
fn type_name(t: &str) -> &'static str {
    match u32::from_str_radix(t, 16).unwrap_or(0) {
        1 => "stream",
        2 => "dgram",
        3 => "raw",
        5 => "seqpacket",
        _ => "other",
    }
}

/// The sockets of process `pid` as the guest's /proc shows them, one "fd N family
/// details inode" row each: /proc/PID/fd for descriptors and inodes, and
/// /proc/net/{packet,raw,unix,netlink} for what each family says.
fn guest_family_sockets(
    label: &str,
    guest: &mut Guest,
    pid: u32,
) -> Result<BTreeSet<String>, String> {
    let out = guest
        .sh(&format!(
            "for l in /proc/{pid}/fd/*; do echo \"fd ${{l##*/}} $(readlink $l)\"; done; \
             for f in packet raw unix netlink; do sed 1d /proc/net/$f | sed \"s/^/$f /\"; done"
        ))
        .map_err(|e| format!("{label}: reading /proc/net: {e}"))?;
    let mut fds = std::collections::BTreeMap::new();
    let mut rows = Vec::new();
    for line in &out.lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let detail = match f.as_slice() {
            ["fd", n, link] => {
                if let Some(ino) = link
                    .strip_prefix("socket:[")
                    .and_then(|l| l.strip_suffix(']'))
                {
                    fds.insert(ino.to_string(), n.to_string());
                }
                continue;
            }
            // sk RefCnt Type Proto Iface R Rmem User Inode
            ["packet", _, _, ty, proto, iface, _, _, _, ino, ..] => {
                let proto = u16::from_str_radix(proto, 16).unwrap_or(u16::MAX);
                (
                    ino.to_string(),
                    format!("packet {} {proto:#06x}:{iface}", type_name(ty)),
                )
            }
            // sl local rem st tx:rx tr:when retr uid timeout inode (the local port is
            // the protocol)
            ["raw", _, local, _, _, _, _, _, _, _, ino, ..] => {
                let proto = local
                    .split_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
                (ino.to_string(), format!("ipv4 raw protocol {proto:?}"))
            }
            // Num RefCount Protocol Flags Type St Inode [Path]
            ["unix", _, _, _, _, ty, _, ino, rest @ ..] => (
                ino.to_string(),
                format!("unix {} {}", type_name(ty), rest.first().unwrap_or(&"*")),
            ),
            // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
            ["netlink", _, eth, portid, _, _, _, _, _, _, ino, ..] => {
                (ino.to_string(), format!("netlink raw {eth}:{portid}"))
            }
            _ => continue,
        };
        rows.push(detail);
    }
    Ok(rows
        .into_iter()
        .filter_map(|(ino, d)| fds.get(&ino).map(|fd| format!("fd {fd} {d} {ino}")))
        .collect())
}

/// The detector's `sockets --json` rows of process `pid` in [`guest_family_sockets`]'
/// form (TCP and UDP ones left out: [`sockets_match`] compares those).
fn detector_family_sockets(run: &Run, pid: u32) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for s in run.json().as_array().into_iter().flatten() {
        if s["pid"] != pid || matches!(s["protocol"].as_str(), Some("tcp" | "udp")) {
            continue;
        }
        let ty = s["type"].as_str().unwrap_or("");
        let detail = match s["family"].as_str().unwrap_or("") {
            "packet" => format!(
                "packet {ty} {:#06x}:{}",
                s["ethertype"].as_u64().unwrap_or(u64::MAX),
                s["ifindex"]
            ),
            "ipv4" => format!(
                "ipv4 {ty} protocol {:?}",
                s["local_port"].as_u64().and_then(|p| u16::try_from(p).ok())
            ),
            "unix" => format!("unix {ty} {}", s["path"].as_str().unwrap_or("*")),
            "netlink" => format!("netlink {ty} {}:{}", s["netlink_protocol"], s["portid"]),
            other => format!("{other} {ty}"),
        };
        set.insert(format!("fd {} {detail} {}", s["fd"], s["inode"]));
    }
    set
}

/// The `socket-filter` findings the backdoor raises: its packet socket's classic
/// filter and its raw socket's eBPF filter, both high (it runs from a deleted
/// /dev/shm file).
fn backdoor_wants(b: &Backdoor) -> Vec<Want> {
    let (pid, packet, raw, id) = (b.pid, b.packet, b.raw, b.ebpf_id);
    vec![
        want(
            "the packet socket's classic filter",
            "socket-filter",
            move |e| {
                e["pid"] == pid
                    && e["fd"] == packet
                    && e["family"] == "packet"
                    && e["filter"] == "cbpf"
                    && e["instructions"] == 11
                    && e["exe"] == "/dev/shm/kdmtmpflush (deleted)"
                    && e["program"]
                        .as_str()
                        .is_some_and(|p| p.contains("(008) jeq      #0x7255"))
            },
        ),
        want("the raw socket's eBPF filter", "socket-filter", move |e| {
            e["pid"] == pid
                && e["fd"] == raw
                && e["family"] == "inet"
                && e["filter"] == "ebpf"
                && e["bpf_id"] == id
        }),
    ]
}

/// Every socket-filter finding is high.
fn all_high(label: &str, run: &Run) -> Vec<String> {
    run.json()["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["check"] == "socket-filter" && f["severity"] != "high")
        .map(|f| format!("{label}: a socket-filter finding is not high: {f}"))
        .collect()
}

/// `sockets` of the backdoor against the guest's /proc, with its two filters: the
/// classic one decoded, the eBPF one by the id the kernel gave the worker.
fn backdoor_sockets(label: &str, run: &Run, want: &BTreeSet<String>, b: &Backdoor) -> Vec<String> {
    let mut problems = Vec::new();
    let got = detector_family_sockets(run, b.pid);
    for w in want.difference(&got) {
        problems.push(format!(
            "{label}: the guest has socket {w}, the detector not"
        ));
    }
    for g in got.difference(want) {
        problems.push(format!(
            "{label}: the detector lists socket {g}, the guest not"
        ));
    }
    let v = run.json();
    let sock = |fd: u32| {
        v.as_array()
            .into_iter()
            .flatten()
            .find(|s| s["pid"] == b.pid && s["fd"] == fd)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let f = &sock(b.packet)["filter"];
    let program: Vec<&str> = f["program"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if f["kind"] != "cbpf" || f["instructions"] != 11 || program != MAGIC_FILTER {
        problems.push(format!("{label}: the packet socket's filter: {f}"));
    }
    let f = &sock(b.raw)["filter"];
    if f["kind"] != "ebpf" || f["id"] != b.ebpf_id || f["instructions"] != 2 {
        problems.push(format!(
            "{label}: the raw socket's filter (want eBPF program {} of 2 instructions): {f}",
            b.ebpf_id
        ));
    }
    let filtered = v
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["pid"] == b.pid && !s["filter"].is_null())
        .count();
    if filtered != 2 {
        problems.push(format!(
            "{label}: {filtered} filtered sockets of the backdoor, not 2"
        ));
    }
    problems
}

/// Volatility 3's `linux.sockstat` on the dump: every socket it lists for the backdoor
/// is the detector's too (by descriptor and family), with a filter where it has one and
/// the same eBPF program id; a unix path and a netlink port id as it gives them.
fn volatility_backdoor(vol: &Volatility, dump_run: &Run, b: &Backdoor) -> Vec<String> {
    let kernel = vol.kernel.as_str();
    let ours = dump_run.json();
    let ours: Vec<&Value> = ours
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["pid"] == b.pid)
        .collect();
    let mut problems = Vec::new();
    let rows: Vec<Value> = vol
        .rows("linux.sockstat")
        .into_iter()
        .filter(|r| r["PID"] == b.pid)
        .collect();
    for r in &rows {
        let family = match r["Family"].as_str() {
            Some("AF_UNIX") => "unix",
            Some("AF_INET") => "ipv4",
            Some("AF_INET6") => "ipv6",
            Some("AF_PACKET") => "packet",
            Some("AF_NETLINK") => "netlink",
            _ => "other",
        };
        let Some(s) = ours
            .iter()
            .find(|s| s["fd"] == r["FD"] && s["family"] == family)
        else {
            problems.push(format!(
                "{kernel}: Volatility's sockstat lists a socket the detector does not: {r}"
            ));
            continue;
        };
        let filter = r["Filter"].as_str().unwrap_or("");
        if filter.contains("bpf_filter_type") && s["filter"].is_null() {
            problems.push(format!(
                "{kernel}: Volatility sees a filter on {r}, the detector not"
            ));
        }
        let vol_id = filter
            .split(',')
            .find_map(|kv| kv.strip_prefix("bpf_filter_id="))
            .and_then(|id| id.parse::<u64>().ok())
            .filter(|&id| id != 0);
        if vol_id.is_some_and(|id| s["filter"]["id"] != id) {
            problems.push(format!(
                "{kernel}: filter ids differ: Volatility {r}, detector {s}"
            ));
        }
        let src = r["Source Addr"].as_str().unwrap_or("");
        if family == "unix" && src.starts_with('/') && s["path"] != src {
            problems.push(format!(
                "{kernel}: unix paths differ: Volatility {r}, detector {s}"
            ));
        }
        let port = r["Source Port"]
            .as_u64()
            .or_else(|| r["Source Port"].as_str()?.parse().ok());
        if family == "netlink" && port.is_some_and(|p| s["portid"] != p) {
            problems.push(format!(
                "{kernel}: netlink port ids differ: Volatility {r}, detector {s}"
            ));
        }
    }
    if rows.len() < 5 {
        problems.push(format!(
            "{kernel}: Volatility's sockstat lists {} sockets of the backdoor (5 open)",
            rows.len()
        ));
    }
    eprintln!(
        "{kernel}: Volatility's sockstat lists {} backdoor sockets",
        rows.len()
    );
    problems
}

/// The BPFDoor step on one guest of `kernel`: first `check` (every check) finds
/// nothing on the clean guest; then the worker's `packet-filter` mode runs as BPFDoor
/// does (from a deleted /dev/shm copy, renamed `haldaemon`): `sockets` must list its
/// packet, raw, unix (path and abstract) and netlink sockets as the guest's /proc does,
/// with both filters (the classic one decoded as `tcpdump -d` prints it, the eBPF one by
/// the id the kernel gave the worker); `socket-filter` must report both, high, live,
/// and from an ELF dump, and nothing with a policy allowing the program; `verify`'s
/// sockets rule passes on the dump with both filters counted; Volatility's
/// `linux.sockstat` on the dump lists no backdoor socket or filter the detector does
/// not.
pub(crate) fn packet_filter(lab: &Lab, kernel: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let Some((profiles, d, mut guest, label)) = clean_guest(lab, kernel, &mut problems) else {
        return problems;
    };
    let b = match start_backdoor(&label, &mut guest) {
        Ok(b) => b,
        Err(e) => {
            problems.push(e);
            return problems;
        }
    };
    let want = match guest_family_sockets(&label, &mut guest, b.pid) {
        Ok(w) => w,
        Err(e) => {
            problems.push(e);
            return problems;
        }
    };
    if want.len() != 5 {
        problems.push(format!(
            "{label}: the guest shows {} backdoor sockets, not 5: {want:#?}",
            want.len()
        ));
    }
    eprintln!("{label}: the backdoor's sockets as the guest lists them: {want:#?}");
    let run = d.live(&mut guest, &["--json", "sockets"]);
    if !run.ok_but_hidden() {
        problems.push(format!(
            "{label}: sockets: exit {}: {}",
            run.code, run.stderr
        ));
    }
    problems.extend(backdoor_sockets(&format!("{label} live"), &run, &want, &b));
    let text = d.live(&mut guest, &["sockets"]).stdout;
    let line = text
        .lines()
        .find(|l| l.starts_with("p_raw") && l.contains("cbpf:11"));
    if line.is_none_or(|l| !l.contains("0x0003:*") || !l.ends_with(" haldaemon")) {
        problems.push(format!(
            "{label}: no p_raw line with cbpf:11 for haldaemon in:\n{text}"
        ));
    }
    let run = d.live(&mut guest, &["--json", "check", "--check", "socket-filter"]);
    problems.extend(expect_exactly(
        &format!("{label} live"),
        &run,
        &backdoor_wants(&b),
    ));
    problems.extend(all_high(&format!("{label} live"), &run));
    let policy = profiles.path().join("pf.toml");
    let run = run_check_with_policy(
        &d,
        &mut guest,
        &policy,
        "allow_socket_filter = [\"/dev/shm/*\"]\n",
        "socket-filter",
    );
    problems.extend(expect_exactly(&format!("{label} allowed"), &run, &[]));
    let dump = tempfile::tempdir().expect("tempdir");
    let elf = dump.path().join("g.elf");
    guest.dump_elf(&elf).expect("ELF dump");
    guest.shutdown().expect("shutdown");
    let src = ["--dump", elf.to_str().unwrap()];
    let run = d.run(&src, &["--json", "check", "--check", "socket-filter"]);
    problems.extend(expect_exactly(
        &format!("{label} ELF"),
        &run,
        &backdoor_wants(&b),
    ));
    problems.extend(all_high(&format!("{label} ELF"), &run));
    let dump_run = d.run(&src, &["--json", "sockets"]);
    problems.extend(backdoor_sockets(
        &format!("{label} ELF"),
        &dump_run,
        &want,
        &b,
    ));
    // verify's sockets rule finds every family and both filters plausible
    let v = d.run(&src, &["--json", "verify"]).json();
    let rule = v["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["rule"] == "sockets")
        .cloned()
        .unwrap_or(Value::Null);
    let detail = rule["detail"].as_str().unwrap_or("");
    let filtered = detail
        .split_once("internet, ")
        .and_then(|(_, r)| r.split_whitespace().next()?.parse::<u32>().ok());
    if rule["outcome"] != "pass" || filtered.is_none_or(|n| n < 2) {
        problems.push(format!("{label}: verify's sockets rule: {rule}"));
    }
    eprintln!("{label}: verify sockets: {detail}");
    let vol = Volatility::new(lab, kernel, &elf, &d);
    problems.extend(volatility_backdoor(&vol, &dump_run, &b));
    problems
}
