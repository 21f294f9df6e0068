//! The detector's JSON views against the guest's own ([`GroundTruth`]): `ps --json`
//! (pid, parent, uid and thread count of every process; executables) and `lsmod --json`
//! (name and base address of every module). Shared by the detector's lab tests and
//! `lab validate`.
//!
//! The lab knows nothing of kernel structures: these compare two reports, the JSON
//! the detector printed and what the guest said of itself. The JSON comes from a
//! program reading hostile guest memory, so a missing or mistyped field is a
//! difference, never a panic. Each function returns the differences, empty when the
//! views agree; compare a guest at rest (paused, its truth read just before).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::truth::GroundTruth;

/// The entries of a JSON array, or the difference that it is none.
fn entries<'a>(view: &'a Value, what: &str) -> Result<&'a Vec<Value>, String> {
    view.as_array()
        .ok_or_else(|| format!("{what} --json printed no array: {}", short(view)))
}

/// A value as JSON, cut to a readable length.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// "only in memory ..., only in the guest ..." of two sets.
fn only<T: Ord + std::fmt::Debug>(got: &BTreeSet<T>, want: &BTreeSet<T>) -> String {
    format!(
        "only in memory {:?}, only in the guest {:?}",
        got.difference(want).collect::<Vec<_>>(),
        want.difference(got).collect::<Vec<_>>()
    )
}

/// (pid, ppid, uid, threads) of every process of `ps --json` against the guest's.
pub fn ps_differences(ps: &Value, truth: &GroundTruth) -> Vec<String> {
    let list = match entries(ps, "ps") {
        Ok(l) => l,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    let mut got = BTreeSet::new();
    for p in list {
        let fields = (
            p["pid"].as_u64(),
            p["ppid"].as_u64(),
            p["uid"].as_u64(),
            p["threads"].as_array().map(Vec::len),
        );
        match fields {
            (Some(pid), Some(ppid), Some(uid), Some(threads)) => {
                got.insert((pid, ppid, uid, threads));
            }
            _ => problems.push(format!(
                "ps --json: a process without pid, ppid, uid or threads: {}",
                short(p)
            )),
        }
    }
    let want: BTreeSet<(u64, u64, u64, usize)> = truth
        .processes
        .iter()
        .map(|p| {
            (
                u64::from(p.pid),
                u64::from(p.ppid),
                u64::from(p.uid),
                p.threads as usize,
            )
        })
        .collect();
    if got != want {
        problems.push(format!(
            "ps (pid, ppid, uid, threads) differs from the guest: {}",
            only(&got, &want)
        ));
    }
    problems
}

/// The executables of `ps --json` (rebuilt from `mm->exe_file` across mounts) against
/// what `/proc/<pid>/exe` says; a guest that reported none is a difference too.
pub fn exe_differences(ps: &Value, truth: &GroundTruth) -> Vec<String> {
    let list = match entries(ps, "ps") {
        Ok(l) => l,
        Err(e) => return vec![e],
    };
    let got: BTreeSet<(u64, String)> = list
        .iter()
        .filter_map(|p| Some((p["pid"].as_u64()?, p["exe"].as_str()?.to_string())))
        .collect();
    let want: BTreeSet<(u64, String)> = truth
        .processes
        .iter()
        .filter(|p| !p.exe.is_empty())
        .map(|p| (u64::from(p.pid), p.exe.clone()))
        .collect();
    if got != want || want.is_empty() {
        vec![format!("executables differ: {}", only(&got, &want))]
    } else {
        Vec::new()
    }
}

/// (name, core base) of every module of `lsmod --json` against `/proc/modules`.
pub fn lsmod_differences(lsmod: &Value, truth: &GroundTruth) -> Vec<String> {
    let list = match entries(lsmod, "lsmod") {
        Ok(l) => l,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    let mut got = BTreeSet::new();
    for m in list {
        match (m["name"].as_str(), m["core_base"].as_str()) {
            (Some(name), Some(base)) => {
                got.insert((name.to_string(), base.to_string()));
            }
            _ => problems.push(format!(
                "lsmod --json: a module without name or core_base: {}",
                short(m)
            )),
        }
    }
    let want: BTreeSet<(String, String)> = truth
        .modules
        .iter()
        .map(|m| (m.name.clone(), format!("{:#x}", m.addr)))
        .collect();
    if got != want {
        problems.push(format!(
            "lsmod (name, base) differs from /proc/modules: {}",
            only(&got, &want)
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::truth::{Module, Process};
    use serde_json::json;

    fn truth() -> GroundTruth {
        let process = |pid, ppid, threads, exe: &str| Process {
            pid,
            ppid,
            tgid: pid,
            uid: 0,
            euid: 0,
            state: 'S',
            threads,
            start_ticks: 0,
            comm: "x".into(),
            exe: exe.into(),
            cmdline: Vec::new(),
        };
        GroundTruth {
            processes: vec![process(1, 0, 1, "/init"), process(2, 0, 1, "")],
            modules: vec![Module {
                name: "qemu_fw_cfg".into(),
                size: 1,
                refs: 0,
                state: "Live".into(),
                addr: 0xffff_ffff_c000_0000,
            }],
            ..GroundTruth::default()
        }
    }

    #[test]
    fn equal_views_have_no_differences() {
        let t = truth();
        let ps = json!([
            {"pid": 1, "ppid": 0, "uid": 0, "threads": [1], "exe": "/init"},
            {"pid": 2, "ppid": 0, "uid": 0, "threads": [2]},
        ]);
        assert!(ps_differences(&ps, &t).is_empty());
        assert!(exe_differences(&ps, &t).is_empty());
        let lsmod = json!([{"name": "qemu_fw_cfg", "core_base": "0xffffffffc0000000"}]);
        assert!(lsmod_differences(&lsmod, &t).is_empty());
    }

    #[test]
    fn differences_and_malformed_views_are_reported_not_panics() {
        let t = truth();
        let ps = json!([{"pid": 1, "ppid": 0, "uid": 0, "threads": [1, 5]}, {"pid": "2"}]);
        let d = ps_differences(&ps, &t);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("without pid"), "{d:?}");
        assert!(d[1].contains("only in memory [(1, 0, 0, 2)]"), "{d:?}");
        assert_eq!(ps_differences(&json!({"error": "x"}), &t).len(), 1);
        assert_eq!(exe_differences(&json!(null), &t).len(), 1);
        let lsmod = json!([{"name": "qemu_fw_cfg", "core_base": "0x1"}, 7]);
        let d = lsmod_differences(&lsmod, &t);
        assert_eq!(d.len(), 2, "{d:?}");
    }
}
