//! Text and JSON forms of what the commands print.
//!
//! JSON is built with `serde_json` values (never by string concatenation), so it is valid
//! for any name; guest strings are escaped to printable ASCII in both forms.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use serde_json::{json, Value};
use vmi_core::arch::x86_64::PagingMode;
use vmi_core::kernel::cbpf;
use vmi_core::kernel::census::ModuleList;
use vmi_core::kernel::iouring::IoUring;
use vmi_core::kernel::sockets::{
    Detail, Filter, Socket, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET, AF_UNIX,
};
use vmi_core::kernel::vma::MapsEntry;
use vmi_core::kernel::{Census, KernelError, Module, Process, Views};

use crate::checks::Report;
use crate::finding::guest_str;
use crate::target::Target;

/// The `ps` state letter of a task (as `/proc/<pid>/stat` shows it).
pub fn state_letter(state: u32, exit_state: u32) -> char {
    const TASK_IDLE: u32 = 0x0402;
    if state == TASK_IDLE {
        return 'I';
    }
    let report = (state | exit_state) & 0x7f;
    let idx = (32 - report.leading_zeros()) as usize;
    b"RSDTtXZP"[idx.min(7)] as char
}

/// `identify` as JSON.
pub fn identify_json(t: &Target) -> Value {
    let p = t.profile();
    let place = t.kernel.placement();
    let mut source = json!({ "kind": t.kind.name(), "path": t.path.display().to_string() });
    if let Some(ram) = t.ram_access() {
        source["ram"] = json!(ram);
    }
    json!({
        "source": source,
        "banner": p.kernel.banner.trim_end(),
        "release": p.kernel.release,
        "profile": {
            "path": t.profile_path.display().to_string(),
            "source": p.provenance.source.to_string(),
            "build_id": p.kernel.build_id,
        },
        "banner_pa": format!("{:#x}", place.banner_pa.0),
        "kaslr": {
            "virtual_shift": format!("{:#x}", place.virt_shift),
            "physical_shift": format!("{:#x}", place.phys_shift),
        },
        "page_table_root": format!("{:#x}", place.root.table.0),
        "paging": paging(place.root.mode),
        "vcpus": t.registers.len(),
        "warnings": t.warnings,
    })
}

fn paging(m: PagingMode) -> &'static str {
    match m {
        PagingMode::FourLevel => "4-level",
        PagingMode::FiveLevel => "5-level",
    }
}

/// `identify` as text.
pub fn identify_text(t: &Target) -> String {
    let p = t.profile();
    let place = t.kernel.placement();
    let mut s = String::new();
    let _ = writeln!(s, "source          {} {}", t.kind.name(), t.path.display());
    if let Some(ram) = t.ram_access() {
        let _ = writeln!(s, "ram             {ram}");
    }
    let _ = writeln!(
        s,
        "banner          {}",
        guest_str(p.kernel.banner.trim_end().as_bytes())
    );
    let _ = writeln!(
        s,
        "release         {}",
        guest_str(p.kernel.release.as_bytes())
    );
    let _ = writeln!(
        s,
        "profile         {} ({})",
        t.profile_path.display(),
        p.provenance.source
    );
    let _ = writeln!(s, "banner at       {:#x} (physical)", place.banner_pa.0);
    let _ = writeln!(s, "KASLR virtual   {:#x}", place.virt_shift);
    let _ = writeln!(s, "KASLR physical  {:#x}", place.phys_shift);
    let _ = writeln!(
        s,
        "page tables     {:#x} ({})",
        place.root.table.0,
        paging(place.root.mode)
    );
    let _ = writeln!(s, "vCPUs           {}", t.registers.len());
    for w in &t.warnings {
        let _ = writeln!(s, "warning         {w}");
    }
    s
}

/// A process's io_uring instances as `ps --json` gives them.
fn rings_json(rings: &[IoUring]) -> Value {
    rings
        .iter()
        .map(|r| {
            json!({
                "fd": r.fd,
                "ctx": format!("{:#x}", r.ctx.0),
                "flags": r.flags,
                "sqpoll": r.sqpoll(),
                "sq_entries": r.sq_entries,
                "cq_entries": r.cq_entries,
                "sq_thread": r.sq_thread,
                "submitter": r.submitter,
            })
        })
        .collect()
}

fn process_json(p: &Process, exe: Option<&String>, rings: Option<&Vec<IoUring>>) -> Value {
    json!({
        "exe": exe,
        "io_uring": rings.map(|r| rings_json(r)),
        "pid": p.pid,
        "ppid": p.ppid,
        "tgid": p.tgid,
        "uid": p.uid,
        "gid": p.gid,
        "euid": p.euid,
        "egid": p.egid,
        "comm": guest_str(&p.comm),
        "state": state_letter(p.state, p.exit_state).to_string(),
        "kernel_thread": p.is_kernel_thread(),
        "start_time_ns": p.start_time,
        "task": format!("{:#x}", p.task.0),
        "views": p.views.names(),
        "threads": p.threads.iter().map(|t| json!({
            "tid": t.tid,
            "comm": guest_str(&t.comm),
            "task": format!("{:#x}", t.task.0),
        })).collect::<Vec<_>>(),
    })
}

/// `ps` as JSON: an array of processes; `exes` (escaped executable paths, `null` for
/// kernel threads and unreadable ones) and `rings` (the io_uring instances, `null` when
/// they cannot be read or the kernel has no io_uring) in the same order.
pub fn ps_json(
    procs: &[Process],
    exes: &[Option<String>],
    rings: &[Option<Vec<IoUring>>],
) -> Value {
    Value::Array(
        procs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                process_json(
                    p,
                    exes.get(i).and_then(Option::as_ref),
                    rings.get(i).and_then(Option::as_ref),
                )
            })
            .collect(),
    )
}

/// An address and port as `ss` writes them (`[::1]:22` for IPv6).
pub fn endpoint((ip, port): &(std::net::IpAddr, u16)) -> String {
    match ip {
        std::net::IpAddr::V4(a) => format!("{a}:{port}"),
        std::net::IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// A unix socket's name as `ss` writes it: the path, `@NAME` for an abstract name, `*`
/// when unbound; escaped.
pub fn unix_name(name: Option<&[u8]>) -> String {
    match name {
        None => "*".into(),
        Some([0, rest @ ..]) => format!("@{}", guest_str(rest)),
        Some(path) => guest_str(path),
    }
}

/// A socket's local end as `sockets` writes it: `ADDRESS:PORT` for an internet socket,
/// the name of a unix socket, `PROTOCOL:IFINDEX` of a packet socket (`0x0003:*` for
/// `ETH_P_ALL` on every interface), `PROTOCOL:PORTID` of a netlink socket.
pub fn local_end(s: &Socket) -> String {
    let or_star = |v: Option<String>| v.unwrap_or_else(|| "?".into());
    match &s.detail {
        Detail::Inet => endpoint(&s.local),
        Detail::Unix { name } => unix_name(name.as_deref()),
        Detail::Packet { protocol, ifindex } => format!(
            "{}:{}",
            or_star(protocol.map(|p| format!("{p:#06x}"))),
            match ifindex {
                Some(0) => "*".into(),
                i => or_star(i.map(|i| i.to_string())),
            }
        ),
        Detail::Netlink { portid } => {
            format!("{}:{}", s.protocol, or_star(portid.map(|p| p.to_string())))
        }
        Detail::Other => "*".into(),
    }
}

/// `ss`'s name for the socket's family and type: `tcp`, `udp6`, `raw`, `u_str`,
/// `u_dgr`, `u_seq`, `p_raw`, `p_dgr`, `nl`, ...
pub fn netid(s: &Socket) -> String {
    let t = match s.sock_type {
        1 => "str",
        2 => "dgr",
        3 => "raw",
        5 => "seq",
        _ => "oth",
    };
    match s.family {
        AF_INET6 => format!("{}6", s.protocol_name()),
        AF_UNIX => format!("u_{t}"),
        AF_PACKET => format!("p_{t}"),
        AF_NETLINK => "nl".into(),
        _ if s.is_inet() => s.protocol_name(),
        _ => s.family_name(),
    }
}

/// A filter in one word: `cbpf:N` (N classic instructions), `ebpf#ID:N`, `-` for none.
pub fn filter_word(f: Option<&Filter>) -> String {
    match f {
        None => "-".into(),
        Some(Filter::Classic { len, .. }) => format!("cbpf:{len}"),
        Some(Filter::Ebpf { id, len, .. }) => format!("ebpf#{id}:{len}"),
    }
}

/// A filter as JSON: its kind and instruction count, a classic program decoded as
/// `tcpdump -d` prints it, an eBPF program's id (the one `bpf` lists).
pub fn filter_json(f: &Filter) -> Value {
    match f {
        Filter::Classic { len, insns, prog } => json!({
            "kind": "cbpf",
            "instructions": len,
            "program": cbpf::disassemble(insns),
            "bpf_prog": prog.to_string(),
        }),
        Filter::Ebpf { id, len, prog } => json!({
            "kind": "ebpf",
            "instructions": len,
            "id": id,
            "bpf_prog": prog.to_string(),
        }),
    }
}

/// One socket of one process as JSON.
pub fn socket_json(p: &Process, s: &Socket) -> Value {
    let family = match s.family {
        AF_INET => "ipv4".to_string(),
        AF_INET6 => "ipv6".to_string(),
        _ => s.family_name(),
    };
    let mut v = json!({
        "pid": p.pid,
        "comm": guest_str(&p.comm),
        "fd": s.fd,
        "inode": s.inode,
        "family": family,
        "type": s.type_name(),
        "protocol": s.protocol_name(),
        "state": s.state_name(),
        "state_code": s.state,
        "listening": s.is_listening(),
        "local": local_end(s),
        "filter": s.filter.as_ref().map(filter_json),
    });
    match &s.detail {
        Detail::Inet => {
            v["local_address"] = json!(s.local.0.to_string());
            v["local_port"] = json!(s.local.1);
            v["remote_address"] = json!(s.remote.0.to_string());
            v["remote_port"] = json!(s.remote.1);
        }
        Detail::Unix { name } => {
            v["path"] = json!(name.as_deref().map(|n| unix_name(Some(n))));
            v["abstract"] = json!(name.as_deref().is_some_and(|n| n.first() == Some(&0)));
        }
        Detail::Packet { protocol, ifindex } => {
            v["ethertype"] = json!(protocol);
            v["ifindex"] = json!(ifindex);
        }
        Detail::Netlink { portid } => {
            v["netlink_protocol"] = json!(s.protocol);
            v["portid"] = json!(portid);
        }
        Detail::Other => {}
    }
    v
}

/// `sockets` as JSON: one object per socket.
pub fn sockets_json(rows: &[(&Process, Vec<Socket>)]) -> Value {
    Value::Array(
        rows.iter()
            .flat_map(|(p, socks)| socks.iter().map(|s| socket_json(p, s)))
            .collect(),
    )
}

/// `sockets` as text, as `ss -apn` would show them, with each socket's filter.
pub fn sockets_text(rows: &[(&Process, Vec<Socket>)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<7} {:<12} {:<45} {:<45} {:>7} {:>4} {:>10} {:<12} COMM",
        "NETID", "STATE", "LOCAL", "REMOTE", "PID", "FD", "INODE", "FILTER"
    );
    for (p, socks) in rows {
        for k in socks {
            let remote = if k.is_inet() {
                endpoint(&k.remote)
            } else {
                "*".into()
            };
            let _ = writeln!(
                s,
                "{:<7} {:<12} {:<45} {:<45} {:>7} {:>4} {:>10} {:<12} {}",
                netid(k),
                k.state_name(),
                local_end(k),
                remote,
                p.pid,
                k.fd,
                k.inode,
                filter_word(k.filter.as_ref()),
                guest_str(&p.comm)
            );
        }
    }
    s
}

/// `maps` as JSON: one object per mapping.
pub fn maps_json(maps: &[MapsEntry]) -> Value {
    Value::Array(
        maps.iter()
            .map(|m| {
                let (major, minor) = m.dev();
                json!({
                    "start": format!("{:#x}", m.vma.start),
                    "end": format!("{:#x}", m.vma.end),
                    "perms": m.vma.perms(),
                    "vm_flags": format!("{:#x}", m.vma.flags),
                    "offset": format!("{:#x}", m.offset()),
                    "dev": format!("{major:02x}:{minor:02x}"),
                    "inode": m.inode(),
                    "name": guest_str(&m.name.display()),
                    "anonymous": m.vma.is_anonymous(),
                    "vma": format!("{:#x}", m.vma.addr.0),
                })
            })
            .collect(),
    )
}

/// `maps` as text, as `/proc/PID/maps` prints it (the name from column 74).
pub fn maps_text(maps: &[MapsEntry]) -> String {
    let mut s = String::new();
    for m in maps {
        let (major, minor) = m.dev();
        let head = format!(
            "{:08x}-{:08x} {} {:08x} {major:02x}:{minor:02x} {} ",
            m.vma.start,
            m.vma.end,
            m.vma.perms(),
            m.offset(),
            m.inode()
        );
        let name = guest_str(&m.name.display());
        if name.is_empty() {
            let _ = writeln!(s, "{head}");
        } else {
            let _ = writeln!(s, "{head:<73}{name}");
        }
    }
    s
}

/// `ps` as text, as a table or a tree (children under their parent).
///
/// A process holding io_uring instances (`rings`, in the order of `procs`) is marked
/// ` [io_uring:N]`.
pub fn ps_text(procs: &[Process], rings: &[Option<Vec<IoUring>>], tree: bool) -> String {
    let ring_count: HashMap<vmi_core::Va, usize> = procs
        .iter()
        .zip(rings)
        .filter_map(|(p, r)| Some((p.task, r.as_ref()?.len())))
        .filter(|(_, n)| *n > 0)
        .collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>7} {:>7} {:>6} {:>6} {:>4} S COMM",
        "PID", "PPID", "UID", "EUID", "THR"
    );
    let line = |s: &mut String, p: &Process, indent: usize| {
        let name = guest_str(&p.comm);
        let mut name = if p.is_kernel_thread() {
            format!("[{name}]")
        } else {
            name
        };
        if let Some(n) = ring_count.get(&p.task) {
            name.push_str(&format!(" [io_uring:{n}]"));
        }
        if !p.views.contains(Views::TASKS) {
            // read beyond a break of the tasks list, or from another view only
            name.push_str(&format!("  <{}>", p.views.names().join(",")));
        }
        let _ = writeln!(
            s,
            "{:>7} {:>7} {:>6} {:>6} {:>4} {} {}{}",
            p.pid,
            p.ppid,
            p.uid,
            p.euid,
            p.threads.len(),
            state_letter(p.state, p.exit_state),
            if indent > 0 {
                format!("{}\\_ ", "  ".repeat(indent - 1))
            } else {
                String::new()
            },
            name
        );
    };
    if !tree {
        for p in procs {
            line(&mut s, p, 0);
        }
        return s;
    }
    let pids: HashSet<u32> = procs.iter().map(|p| p.pid).collect();
    let mut children: BTreeMap<u32, Vec<&Process>> = BTreeMap::new();
    let mut roots: Vec<&Process> = Vec::new();
    for p in procs {
        if p.ppid != p.pid && pids.contains(&p.ppid) {
            children.entry(p.ppid).or_default().push(p);
        } else {
            roots.push(p);
        }
    }
    // depth-first, each pid once (a hostile parent cycle cannot loop)
    let mut printed: HashSet<u32> = HashSet::new();
    let mut stack: Vec<(&Process, usize)> = roots.iter().rev().map(|p| (*p, 0)).collect();
    while let Some((p, depth)) = stack.pop() {
        if !printed.insert(p.pid) {
            continue;
        }
        line(&mut s, p, depth);
        if let Some(kids) = children.get(&p.pid) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    // processes in a parent cycle have no root: print them flat
    for p in procs.iter().filter(|p| !printed.contains(&p.pid)) {
        line(&mut s, p, 0);
    }
    s
}

fn module_state(state: u32) -> &'static str {
    match state {
        0 => "live",
        1 => "coming",
        2 => "going",
        3 => "unformed",
        _ => "invalid",
    }
}

/// `lsmod` as JSON.
pub fn lsmod_json(mods: &[Module]) -> Value {
    Value::Array(
        mods.iter()
            .map(|m| {
                json!({
                    "name": guest_str(&m.name),
                    "state": module_state(m.state),
                    "core_base": format!("{:#x}", m.core_base.0),
                    "core_size": m.core_size,
                    "struct_module": format!("{:#x}", m.addr.0),
                })
            })
            .collect(),
    )
}

/// `lsmod` as text.
pub fn lsmod_text(mods: &[Module]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<24} {:>18} {:>8} {:<8} STRUCT",
        "MODULE", "CORE", "SIZE", "STATE"
    );
    for m in mods {
        let _ = writeln!(
            s,
            "{:<24} {:>#18x} {:>8} {:<8} {:#x}",
            guest_str(&m.name),
            m.core_base.0,
            m.core_size,
            module_state(m.state),
            m.addr.0
        );
    }
    s
}

/// A check report as JSON.
pub fn report_json(r: &Report) -> Value {
    json!({
        "findings": r.findings.iter().map(|f| f.to_json()).collect::<Vec<_>>(),
        "errors": r.errors.iter().map(|e| json!({
            "check": e.check,
            "error": e.source.to_string(),
        })).collect::<Vec<_>>(),
        "checks": r.ran.iter().map(|c| c.name()).collect::<Vec<_>>(),
        "not_checked": r.not_checked.iter().map(|(c, w)| json!({
            "check": c,
            "what": w,
        })).collect::<Vec<_>>(),
    })
}

/// A check report as text: one finding per line, then errors, then a summary line.
pub fn report_text(r: &Report) -> String {
    let mut s = String::new();
    for f in &r.findings {
        let _ = writeln!(s, "{f}");
    }
    for e in &r.errors {
        let _ = writeln!(s, "error  {e}");
    }
    for (c, w) in &r.not_checked {
        let _ = writeln!(s, "not checked  {c}: {w}");
    }
    let _ = writeln!(
        s,
        "{} finding(s); checks run: {}{}",
        r.findings.len(),
        r.ran
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", "),
        if r.errors.is_empty() {
            String::new()
        } else {
            format!("; {} check(s) could not run", r.errors.len())
        }
    );
    s
}

/// A process holding a BPF object open: pid, comm, descriptor.
pub type BpfHolder = (u32, String, u32);

/// The processes holding each BPF program open (by the program's address): through a
/// program descriptor, a link's or a perf event's.
pub fn bpf_holders<M: vmi_core::memory::PhysicalMemory>(
    kernel: &vmi_core::kernel::Kernel<M>,
    procs: &[Process],
    view: &vmi_core::kernel::bpf::BpfView,
) -> Result<BTreeMap<u64, Vec<BpfHolder>>, crate::DetectorError> {
    use vmi_core::kernel::sockets::BpfFile;
    let mut out: BTreeMap<u64, Vec<BpfHolder>> = Default::default();
    for p in procs {
        let files =
            kernel
                .bpf_files(p.task)
                .map_err(|source| crate::DetectorError::ProcessFiles {
                    pid: p.pid,
                    name: p.name(),
                    source,
                })?;
        for (fd, kind, obj) in files {
            let prog = match kind {
                BpfFile::Program => Some(obj),
                BpfFile::Link => view.links.iter().find(|l| l.at == obj).map(|l| l.prog),
                BpfFile::PerfEvent => view
                    .perf_events
                    .iter()
                    .find(|e| e.at == obj)
                    .map(|e| e.prog),
            };
            if let Some(prog) = prog.filter(|v| v.0 != 0) {
                out.entry(prog.0).or_default().push((p.pid, p.name(), fd));
            }
        }
    }
    Ok(out)
}

/// `bpf` as JSON: one object per program, with its attach points and holders, and
/// every perf event that runs a program.
pub fn bpf_json(
    view: &vmi_core::kernel::bpf::BpfView,
    holders: &BTreeMap<u64, Vec<BpfHolder>>,
) -> Value {
    let programs: Vec<Value> = view
        .programs
        .iter()
        .map(|p| {
            let held: Vec<Value> = holders
                .get(&p.at.0)
                .map(|h| {
                    h.iter()
                        .map(|(pid, comm, fd)| json!({"pid": pid, "comm": comm, "fd": fd}))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "id": p.id,
                "type": p.type_name(),
                "type_code": p.prog_type,
                "expected_attach_type": p.expected_attach_type,
                "attach_type": (p.expected_attach_type != 0).then(|| p.attach_type_name()),
                "name": guest_str(&p.name),
                "tag": p.tag_hex(),
                "address": format!("{:#x}", p.at.0),
                "image": format!("{:#x}", p.image.0),
                "jited_len": p.jited_len,
                "load_time": p.load_time,
                "attach": crate::checks::ebpf::attach_points(view, p),
                "holders": held,
            })
        })
        .collect();
    let events: Vec<Value> = view
        .perf_events
        .iter()
        .filter(|e| e.prog.0 != 0)
        .map(|e| {
            json!({
                "pid": e.pid,
                "tid": e.tid,
                "comm": guest_str(&e.comm),
                "pmu": guest_str(&e.pmu),
                "event": guest_str(&e.event),
                "address": format!("{:#x}", e.at.0),
                "program": format!("{:#x}", e.prog.0),
                "overflow_handler": format!("{:#x}", e.overflow_handler.0),
            })
        })
        .collect();
    json!({ "programs": programs, "perf_events": events })
}

/// `bpf` as text: a table of programs, as `bpftool prog` shows them.
pub fn bpf_text(
    view: &vmi_core::kernel::bpf::BpfView,
    holders: &BTreeMap<u64, Vec<BpfHolder>>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>6} {:<24} {:<16} {:<16} {:<18} {:<20} ATTACHED TO",
        "ID", "TYPE", "NAME", "TAG", "ADDRESS", "HELD BY"
    );
    for p in &view.programs {
        let held: Vec<String> = holders
            .get(&p.at.0)
            .map(|h| {
                h.iter()
                    .map(|(pid, comm, fd)| format!("{pid}/{comm}:{fd}"))
                    .collect()
            })
            .unwrap_or_default();
        let points = crate::checks::ebpf::attach_points(view, p);
        let _ = writeln!(
            s,
            "{:>6} {:<24} {:<16} {:<16} {:<18} {:<20} {}",
            p.id,
            p.kind(),
            guest_str(&p.name),
            p.tag_hex(),
            format!("{:#x}", p.at.0),
            if held.is_empty() {
                "-".to_string()
            } else {
                held.join(",")
            },
            if points.is_empty() {
                "-".to_string()
            } else {
                points.join("; ")
            }
        );
    }
    s
}

/// `verify` as text: one line per rule.
pub fn verify_text(results: &[crate::verify::RuleResult]) -> String {
    let mut s = String::new();
    for r in results {
        // guest strings in details are escaped where they are quoted
        s.push_str(&format!(
            "{:<5} {:<14} {}\n",
            r.outcome.name(),
            r.rule,
            r.detail.replace(|c: char| c.is_control(), ".")
        ));
    }
    s
}

/// `verify` as JSON.
pub fn verify_json(
    results: &[crate::verify::RuleResult],
    took: std::time::Duration,
) -> serde_json::Value {
    serde_json::json!({
        "passed": !results.iter().any(|r| r.outcome == crate::verify::Outcome::Fail),
        "seconds": took.as_secs_f64(),
        "rules": results.iter().map(|r| serde_json::json!({
            "rule": r.rule,
            "outcome": match r.outcome {
                crate::verify::Outcome::Pass => "pass",
                crate::verify::Outcome::Fail => "fail",
                crate::verify::Outcome::NotApplicable => "n/a",
            },
            "detail": r.detail,
        })).collect::<Vec<_>>(),
    })
}

/// What `ps` (and the other process views) must say besides the processes: where the
/// tasks list broke, tasks that could not be read, processes only other views hold.
/// Empty for a whole kernel.
pub fn census_warnings(c: &Census) -> Vec<String> {
    let mut w: Vec<String> = c.breaks.iter().map(|b| b.to_string()).collect();
    w.extend(c.undecodable.iter().map(|u| u.to_string()));
    let elsewhere: Vec<String> = c
        .processes
        .iter()
        .filter(|p| !p.views.on_tasks_list())
        .map(|p| format!("{} ({})", p.pid, guest_str(&p.comm)))
        .collect();
    if !elsewhere.is_empty() {
        w.push(format!(
            "{} process(es) are not on the tasks list, found only by the pid namespace or a CPU: {} (run `check` for the hidden-process findings)",
            elsewhere.len(),
            elsewhere.join(", ")
        ));
    }
    for (view, r) in [
        ("pid namespace", c.pid_namespace.as_ref().err()),
        ("CPUs' current tasks", c.running.as_ref().err()),
    ] {
        if let Some(e) = r {
            if !matches!(
                e,
                KernelError::MissingField(_) | KernelError::MissingSymbol(_)
            ) {
                w.push(format!("the {view} could not be read: {e}"));
            }
        }
    }
    w
}

/// What `lsmod` must say besides the modules: where the list broke, elements that are
/// no readable module.
pub fn module_warnings(l: &ModuleList) -> Vec<String> {
    let mut w: Vec<String> = l.breaks.iter().map(|b| b.to_string()).collect();
    w.extend(l.undecodable.iter().map(|u| u.to_string()));
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmi_core::kernel::Thread;
    use vmi_core::Va;

    fn proc_(pid: u32, ppid: u32, comm: &[u8]) -> Process {
        Process {
            task: Va(0xffff_8880_0000_0000 + u64::from(pid) * 0x1000),
            pid,
            tgid: pid,
            ppid,
            comm: comm.to_vec(),
            state: 1,
            exit_state: 0,
            flags: 0,
            uid: 0,
            gid: 0,
            euid: 0,
            egid: 0,
            mm: Va(1),
            start_time: 0,
            threads: vec![Thread {
                task: Va(0),
                tid: pid,
                comm: comm.to_vec(),
            }],
            views: vmi_core::kernel::Views::TASKS,
        }
    }

    #[test]
    fn state_letters_follow_proc() {
        assert_eq!(state_letter(0, 0), 'R');
        assert_eq!(state_letter(1, 0), 'S');
        assert_eq!(state_letter(2, 0), 'D');
        assert_eq!(state_letter(0x402, 0), 'I');
        assert_eq!(state_letter(0, 0x20), 'Z');
        assert_eq!(state_letter(4, 0), 'T');
    }

    #[test]
    fn the_tree_nests_children_and_survives_parent_cycles() {
        let procs = vec![
            proc_(1, 0, b"init"),
            proc_(5, 1, b"sh"),
            proc_(7, 5, b"child\x1b[31m"),
            proc_(9, 1, b"other"),
            // 20 and 21 are each other's parent
            proc_(20, 21, b"a"),
            proc_(21, 20, b"b"),
        ];
        let t = ps_text(&procs, &[], true);
        let names: Vec<&str> = t.lines().skip(1).map(|l| l.split_at(37).1).collect();
        assert_eq!(
            names,
            vec![
                "init",
                "\\_ sh",
                "  \\_ child\\x1b[31m",
                "\\_ other",
                "a",
                "b"
            ],
            "{t}"
        );
        assert!(t.bytes().all(|b| b == b'\n' || (0x20..0x7f).contains(&b)));
        let j = ps_json(&procs, &[], &[]).to_string();
        let back: Value = serde_json::from_str(&j).unwrap();
        assert_eq!(back[2]["comm"], "child\\x1b[31m");
        assert!(back[2]["io_uring"].is_null());
    }

    #[test]
    fn io_uring_instances_are_listed_and_marked() {
        let procs = vec![proc_(1, 0, b"init"), proc_(5, 1, b"curing")];
        let ring = IoUring {
            fd: 4,
            ctx: Va(0xffff_8880_0001_0000),
            flags: Some(vmi_core::kernel::iouring::IORING_SETUP_SQPOLL),
            sq_entries: Some(8),
            cq_entries: Some(16),
            submitter: None,
            sq_thread: Some(6),
        };
        let rings = vec![Some(vec![]), Some(vec![ring])];
        let t = ps_text(&procs, &rings, false);
        assert!(
            t.lines().nth(2).unwrap().ends_with("curing [io_uring:1]"),
            "{t}"
        );
        assert!(t.lines().nth(1).unwrap().ends_with(" init"), "{t}");
        let j = ps_json(&procs, &[], &rings);
        assert_eq!(j[0]["io_uring"], serde_json::json!([]));
        assert_eq!(
            j[1]["io_uring"],
            serde_json::json!([{
                "fd": 4, "ctx": "0xffff888000010000", "flags": 2, "sqpoll": true,
                "sq_entries": 8, "cq_entries": 16, "sq_thread": 6, "submitter": null,
            }])
        );
    }
}
