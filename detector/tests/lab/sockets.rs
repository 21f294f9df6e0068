//! `sockets` against the guest's /proc/net and /proc/PID/fd, the listen policy, and
//! Volatility's sockstat.

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

/// The detector's `sockets --json` in the same form as [`guest_sockets`].
pub(crate) fn detector_sockets(run: &Run) -> BTreeSet<SocketRow> {
    let mut set = BTreeSet::new();
    for s in run.json().as_array().into_iter().flatten() {
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
