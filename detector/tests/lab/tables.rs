//! The netfilter, notifiers, tty and afinfo checks: their walkers against the guest's
//! own views, the table hooks of step 8 of the attacks, and Volatility's plugins.

use super::*;

/// The walkers of the netfilter, notifiers, tty and afinfo checks against the guest's
/// own views: `/proc/tty/ldiscs` (every registered line discipline by name and
/// number), `/proc/tty/drivers` (every tty driver by driver name), `ls /proc/net` (the
/// socket-list files read); the namespace walk holds `init_net`, the kernel's own
/// notifier chains are read (netdev_chain and reboot_notifier_list have blocks of the
/// kernel's), and the kernel's tables are kernel text.
pub(crate) fn hook_table_walkers(label: &str, guest: &mut Guest, profiles: &Path) -> Vec<String> {
    let out = guest
        .sh("cat /proc/tty/ldiscs; echo ==; cat /proc/tty/drivers; echo ==; ls /proc/net")
        .expect("sh");
    let parts: Vec<&[String]> = out.lines.split(|l| l == "==").collect();
    let (0, [ldiscs, drivers, net]) = (out.status, parts.as_slice()) else {
        return vec![format!(
            "{label}: the guest's tty and net views: {:?}",
            out.lines
        )];
    };
    let want_ldiscs: BTreeSet<(String, u32)> = ldiscs
        .iter()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect();
    // the first lines name device nodes (/dev/tty, /dev/console, ...), not drivers; a
    // driver without a driver_name is "unknown"
    let want_drivers: BTreeSet<String> = drivers
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|d| !d.starts_with("/dev/"))
        .map(str::to_string)
        .collect();
    let want_files: BTreeSet<String> = net
        .iter()
        .flat_map(|l| l.split_whitespace())
        .filter(|f| vmi_core::kernel::procnet::ENTRIES.contains(f))
        .map(str::to_string)
        .collect();
    with_paused_kernel(guest, profiles, |k| {
        let mut problems = Vec::new();
        let text = k.text_range().expect("text");
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let got: BTreeSet<(String, u32)> = k
            .tty_ldiscs()
            .expect("tty_ldiscs")
            .iter()
            .map(|l| (lossy(&l.name), l.num))
            .collect();
        if got != want_ldiscs {
            problems.push(format!(
                "{label}: tty_ldiscs {got:?}, /proc/tty/ldiscs {want_ldiscs:?}"
            ));
        }
        let drivers = k.tty_drivers().expect("tty_drivers");
        let got: BTreeSet<String> = drivers
            .iter()
            .map(|d| match d.driver_name.as_slice() {
                b"" => "unknown".to_string(),
                n => lossy(n),
            })
            .collect();
        if got != want_drivers {
            problems.push(format!(
                "{label}: tty_drivers {got:?}, /proc/tty/drivers {want_drivers:?}"
            ));
        }
        if !drivers
            .iter()
            .any(|d| d.ttys.iter().any(|t| t.ldisc_ops.0 != 0))
        {
            problems.push(format!("{label}: no open tty with a line discipline"));
        }
        let nets = k.net_namespaces().expect("net_namespace_list");
        let init_net = k.symbol("init_net").expect("init_net");
        if !nets.contains(&init_net) {
            problems.push(format!("{label}: the namespaces {nets:?} lack init_net"));
        }
        k.netfilter_hooks(&nets).expect("netfilter hooks");
        let entries = k.proc_net_entries(&nets).expect("/proc/net entries");
        let got: BTreeSet<String> = entries
            .iter()
            .filter(|e| e.net == init_net && e.seq_ops.is_some())
            .map(|e| e.name.to_string())
            .collect();
        if got != want_files {
            problems.push(format!(
                "{label}: /proc/net entries read {got:?}, the guest lists {want_files:?}"
            ));
        }
        let tables = k.seq_ops_tables().expect("seq_operations");
        let all_text = |t: &vmi_core::kernel::objects::FnTable| {
            t.fns.len() >= 4 && t.fns.iter().all(|(_, v)| text.contains(*v))
        };
        if tables.len() < 6 || !tables.iter().all(|t| all_text(&t.ops)) {
            problems.push(format!("{label}: the seq_operations tables {tables:?}"));
        }
        let chains = k.notifier_chains().expect("notifier chains");
        for name in ["netdev_chain", "reboot_notifier_list"] {
            if !chains
                .iter()
                .any(|c| c.name == name && !c.blocks.is_empty())
            {
                problems.push(format!("{label}: {name} has no blocks"));
            }
        }
        if !chains.iter().any(|c| c.name == "keyboard_notifier_list") {
            problems.push(format!("{label}: no keyboard_notifier_list"));
        }
        problems
    })
}

/// Step 8 of the attacks: `vmi_netfilter` (a hook on IPv4 NF_INET_LOCAL_IN of
/// `init_net`, priority -150, left listed), `vmi_keylog` (a keyboard notifier, then
/// hidden from the modules list) and `vmi_tty` (N_TTY's `receive_buf2` and
/// `tcp4_seq_ops.show` replaced by wrappers of its own, left listed). The `show`
/// wrapper runs (`cat /proc/net/tcp` counts `hits`); `check` must report each hook
/// with its place and owner. `tcp4_seq_ops` is in `.rodata`, so the kernel-text check
/// sees the write too.
pub(crate) fn table_hooks(
    kernel: &str,
    d: &Detector,
    guest: &mut Guest,
    wants: &mut Vec<Want>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for m in ["vmi_netfilter", "vmi_keylog", "vmi_tty"] {
        insmod(kernel, guest, &format!("/lab/{m}.ko"));
    }
    let out = guest
        .sh("cat /proc/net/tcp >/dev/null; cat /sys/module/vmi_tty/parameters/hits")
        .expect("sh");
    let hits = out.lines.first().and_then(|h| h.trim().parse::<u64>().ok());
    if out.status != 0 || hits.unwrap_or(0) == 0 {
        problems.push(format!(
            "{kernel}: vmi_tty's wrappers did not run: {:?}",
            out.lines
        ));
    }
    wants.push(want(
        "vmi_netfilter's hook on ipv4 NF_INET_LOCAL_IN of init_net",
        "netfilter",
        |e| {
            e["namespace"] == "init_net"
                && e["family"] == "ipv4"
                && e["hook_point"] == "NF_INET_LOCAL_IN"
                && e["priority"] == "-150"
                && e["owner"] == "module vmi_netfilter"
        },
    ));
    wants.push(want("the hidden vmi_keylog", "hidden-module", |e| {
        e["module"] == "vmi_keylog"
    }));
    wants.push(want(
        "vmi_keylog's keyboard notifier, owned by the hidden vmi_keylog",
        "notifiers",
        |e| e["chain"] == "keyboard_notifier_list" && e["owner"] == "hidden module vmi_keylog",
    ));
    wants.push(want("N_TTY's receive_buf2 in vmi_tty", "tty", |e| {
        e["kind"] == "ldisc"
            && e["ldisc"] == 0
            && e["name"] == "n_tty"
            && e["members"] == "receive_buf2"
            && e["owner"] == "module vmi_tty"
    }));
    wants.push(want("tcp4_seq_ops.show in vmi_tty", "afinfo", |e| {
        e["symbol"] == "tcp4_seq_ops"
            && e["members"] == "show"
            && e["files"] == "/proc/net/tcp"
            && e["owner"] == "module vmi_tty"
    }));
    wants.push(want(
        "tcp4_seq_ops differing from the image",
        "kernel-text",
        |e| e["symbol"] == "tcp4_seq_ops",
    ));
    live_and_paused(
        &format!("{kernel} table hooks"),
        d,
        guest,
        wants,
        &mut problems,
    );
    problems
}

/// Volatility 3's `linux.malware.netfilter`, `linux.malware.keyboard_notifiers`,
/// `linux.malware.tty_check` and `linux.malware.check_afinfo` on the ELF dump of the
/// hooked guest: every hook they report outside kernel text must be a finding of the
/// detector's (netfilter: same namespace, family, hook point and handler; keyboard
/// notifiers: same callback; tty: a tty finding with that receive_buf; afinfo: the
/// same table member and handler).
///
/// keyboard_notifiers prints the address of each `notifier_block` (where its
/// `notifier_call` member is, at offset 0), not the callback, so a row is matched by
/// the finding's `notifier_block` or `callback`.
///
/// What Volatility misses here (the test does not require it to see it): tty_check
/// reads only `receive_buf`, which N_TTY does not use (input goes through
/// `receive_buf2` when a discipline has it), so it reports vmi_tty's hook on no tty;
/// it reads no driver's `tty_operations`. keyboard_notifiers is the only notifier
/// chain it reads. check_afinfo reads the tables by symbol only (not the /proc/net
/// entries, which a rootkit can point elsewhere).
pub(crate) fn volatility_tables(v: &Volatility, run: &Run) -> Vec<String> {
    let mut problems = Vec::new();
    let kernel = v.kernel.as_str();
    let got = findings(&run.json());
    let outside = |a: Option<u64>| a.is_some_and(|a| !v.text.contains(&a));
    let has = |check: &str, f: &dyn Fn(&Value) -> bool| got.iter().any(|(c, e)| c == check && f(e));

    let rows = v.rows("linux.malware.netfilter");
    for r in rows.iter().filter(|r| outside(vol_addr(&r["Handler"]))) {
        let ok = has("netfilter", &|e| {
            e["hook"] == vol_hex(&r["Handler"]).as_str()
                && r["Proto"]
                    .as_str()
                    .is_some_and(|p| p.eq_ignore_ascii_case(e["family"].as_str().unwrap_or("")))
                && r["Hook"].as_str().is_some_and(|h| {
                    e["hook_point"]
                        .as_str()
                        .is_some_and(|p| p.ends_with(&format!("_{h}")))
                })
        });
        if !ok {
            problems.push(format!(
                "{kernel}: Volatility reports a netfilter hook the detector does not: {r}"
            ));
        }
    }
    if !rows.iter().any(|r| outside(vol_addr(&r["Handler"]))) {
        eprintln!("{kernel}: Volatility's netfilter plugin reports no hook outside kernel text");
    }
    let rows = v.rows("linux.malware.keyboard_notifiers");
    for r in rows.iter().filter(|r| outside(vol_addr(&r["Address"]))) {
        let a = vol_hex(&r["Address"]);
        let ok = has("notifiers", &|e| {
            e["chain"] == "keyboard_notifier_list"
                && (e["callback"] == a.as_str() || e["notifier_block"] == a.as_str())
        });
        if !ok {
            problems.push(format!(
                "{kernel}: Volatility reports a keyboard notifier the detector does not: {r}"
            ));
        }
    }
    let rows = v.rows("linux.malware.tty_check");
    for r in rows.iter().filter(|r| outside(vol_addr(&r["Address"]))) {
        let ok = has("tty", &|e| {
            e["member"] == "receive_buf" && e["target"] == vol_hex(&r["Address"]).as_str()
                || e["targets"]
                    .as_str()
                    .is_some_and(|t| t.contains(&format!("receive_buf={}", vol_hex(&r["Address"]))))
        });
        if !ok {
            problems.push(format!(
                "{kernel}: Volatility reports a tty hook the detector does not: {r}"
            ));
        }
    }
    let rows = v.rows("linux.malware.check_afinfo");
    for r in &rows {
        let member = r["Member"].as_str().unwrap_or("");
        let target = vol_hex(&r["Handler Address"]);
        let ok = has("afinfo", &|e| {
            e["symbol"] == r["Symbol Name"]
                && (e["member"] == member && e["target"] == target.as_str()
                    || e["targets"]
                        .as_str()
                        .is_some_and(|t| t.contains(&format!("{member}={target}"))))
        });
        if !ok {
            problems.push(format!(
                "{kernel}: Volatility reports an afinfo hook the detector does not: {r}"
            ));
        }
    }
    problems
}

/// Step 8a of the attacks: `vmi_fop` hides a `sleep` from /proc's listing as adore-ng
/// does, pointing the /proc root inode's `i_fop` at a copy of `proc_root_operations`
/// in the module whose `iterate_shared` filters (left listed). The guest must stop
/// listing the process while `/proc/PID` still opens; `check` must report the copy
/// with the pointer (`i_fop`), the mount, the member and the owner, and that it is not
/// the kernel's `proc_root_operations`. The inode is slab memory, so the kernel-text
/// check sees nothing. Volatility 3 has no plugin for file operations (Volatility 2's
/// `linux_check_fop` was not ported), so no oracle here.
pub(crate) fn vfs_hooks(
    kernel: &str,
    d: &Detector,
    guest: &mut Guest,
    wants: &mut Vec<Want>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let out = guest
        .sh("sleep 100000 >/dev/null 2>&1 & echo $!")
        .expect("sh");
    let pid: u32 = out.lines[0].trim().parse().expect("pid");
    insmod(kernel, guest, &format!("/lab/vmi_fop.ko pid={pid}"));
    let out = guest
        .sh(&format!(
            "ls /proc | grep -cx {pid}; cat /proc/{pid}/comm; cat /sys/module/vmi_fop/parameters/hits"
        ))
        .expect("sh");
    let hits = out.lines.get(2).and_then(|h| h.trim().parse::<u64>().ok());
    if out.lines.first().map(|l| l.trim()) != Some("0")
        || out.lines.get(1).map(|l| l.trim()) != Some("sleep")
        || hits.unwrap_or(0) == 0
    {
        problems.push(format!(
            "{kernel}: vmi_fop did not hide {pid} from /proc's listing alone: {:?}",
            out.lines
        ));
    }
    wants.push(want(
        "/proc's root i_fop on vmi_fop's copy of proc_root_operations",
        "vfs-ops",
        |e| {
            e["type"] == "file_operations"
                && e["pointer"]
                    .as_str()
                    .is_some_and(|p| p.split(',').any(|s| s == "i_fop"))
                && e["used_by"]
                    .as_str()
                    .is_some_and(|u| u.contains("i_fop of the root of proc at /proc"))
                && e["expected"] == "proc_root_operations"
                && e["members"] == "iterate_shared"
                && e["location"] == "module vmi_fop"
                && e["owner"] == "module vmi_fop"
        },
    ));
    live_and_paused(
        &format!("{kernel} vfs hooks"),
        d,
        guest,
        wants,
        &mut problems,
    );
    problems
}
