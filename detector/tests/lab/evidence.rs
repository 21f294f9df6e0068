//! The evidence commands on a real guest, against what the guest says of itself.
//!
//! One guest per kernel ([`evidence`]): a process started with a chosen environment
//! (one value holding an escape byte) and open files of every kind the step can make
//! with a shell (a file read from, one appended to, one read and written, one
//! deleted while open, a pipe, /dev/null); `env PID` must list exactly the
//! strings of the guest's own `/proc/PID/environ` (escaped), and `lsof PID` exactly
//! the descriptors of `/proc/PID/fd`, each with the link's text, and fdinfo's `pos:`
//! and `flags:` (less `O_CLOEXEC`), live and from an ELF dump.

use super::*;

/// The evidence kernels: the two ends of what the lab boots, and 6.12.
pub(crate) fn evidence(lab: &Lab, kernel: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let profiles = tempfile::tempdir().expect("tempdir");
    profile_into(lab, kernel, profiles.path());
    let d = Detector {
        profiles: profiles.path().to_path_buf(),
        image: None,
    };
    let mut guest = match lab.boot(kernel, &Scenario::standard(), &BootOptions::default()) {
        Ok(g) => g,
        Err(e) => return vec![format!("{kernel}: boot: {e}")],
    };
    let truth = guest.refresh_truth().expect("truth");
    let label = format!("{kernel} ({})", truth.release);
    let out = guest
        .sh(
            "echo secret > /tmp/ev-read; printf 0123456789 > /tmp/ev-log; : > /tmp/ev-rw; \
             echo gone > /tmp/ev-gone; \
             env -i PATH=/bin:/sbin \"ESC=$(printf 'a\\033[2Jb')\" LD_PRELOAD=/tmp/ev.so \
             sh -c 'exec 3</tmp/ev-read 4>>/tmp/ev-log 5<>/tmp/ev-rw 6</tmp/ev-gone 7</dev/null; \
             read x <&3; echo more >&4; exec sleep 100000' \
             </dev/null 2>/dev/null | cat >/dev/null 2>&1 & \
             sleep 1; p=$(pidof sleep | tr ' ' '\\n' | while read q; do \
             [ -e /proc/$q/fd/7 ] && echo $q; done | head -n1); rm /tmp/ev-gone; echo $p",
        )
        .expect("sh");
    let Some(pid) = out.lines.last().and_then(|l| l.trim().parse::<u32>().ok()) else {
        guest.shutdown().ok();
        return vec![format!(
            "{label}: the evidence process did not start: {:?}",
            out.lines
        )];
    };
    // the guest's own view
    let environ = guest
        .read_file(&format!("/proc/{pid}/environ"))
        .expect("environ");
    let mut want_env: Vec<String> = environ
        .split(|&b| b == 0)
        .map(vmi_core::kernel::escape)
        .collect();
    if want_env.last().is_some_and(String::is_empty) {
        want_env.pop();
    }
    if !want_env.iter().any(|v| v == "ESC=a\\x1b[2Jb") {
        problems.push(format!(
            "{label}: the guest's environ lacks ESC: {want_env:?}"
        ));
    }
    let fds = guest
        .sh(&format!(
            "cd /proc/{pid}/fd && for f in *; do echo \"$f|$(readlink $f)|$(grep -E '^(pos|flags):' ../fdinfo/$f | tr -s '\\t\\n' '  ')\"; done"
        ))
        .expect("fds");
    // fd -> (link, pos, flags without O_CLOEXEC)
    let mut want_fds: Vec<(u64, String, i64, u64)> = Vec::new();
    for l in &fds.lines {
        let mut parts = l.splitn(3, '|');
        let (Some(fd), Some(link), Some(info)) = (parts.next(), parts.next(), parts.next()) else {
            problems.push(format!("{label}: fd line {l:?}"));
            continue;
        };
        let field = |k: &str| {
            info.split_whitespace()
                .skip_while(|w| *w != k)
                .nth(1)
                .unwrap_or("")
                .to_string()
        };
        let pos = field("pos:").parse().unwrap_or(-1);
        let flags = u64::from_str_radix(&field("flags:"), 8).unwrap_or(u64::MAX) & !0o2_000_000;
        want_fds.push((fd.parse().unwrap_or(u64::MAX), link.to_string(), pos, flags));
    }
    want_fds.sort();
    eprintln!("{label}: /proc/{pid}/fd: {want_fds:?}");
    let kinds = [
        "/tmp/ev-read",
        "/tmp/ev-log",
        "/tmp/ev-rw",
        "/tmp/ev-gone (deleted)",
        "pipe:[",
        "/dev/null",
    ];
    // positions moved by a read and an appending write
    for (fd, pos) in [(3, 7), (4, 15)] {
        if !want_fds.iter().any(|w| w.0 == fd && w.2 == pos) {
            problems.push(format!(
                "{label}: the guest's fd {fd} is not at {pos}: {want_fds:?}"
            ));
        }
    }
    for k in kinds {
        if !want_fds.iter().any(|(_, l, _, _)| l.starts_with(k)) {
            problems.push(format!(
                "{label}: the guest's /proc/{pid}/fd lacks {k}: {want_fds:?}"
            ));
        }
    }

    let dump = tempfile::tempdir().expect("tempdir");
    let elf = dump.path().join("g.elf");
    guest.dump_elf(&elf).expect("ELF dump");
    let sock = guest.qmp_socket();
    guest.release_qmp();
    let sock = sock.to_str().unwrap().to_string();
    let sources: [(&str, Vec<&str>); 2] = [
        ("live", vec!["--qemu", sock.as_str()]),
        ("ELF", vec!["--dump", elf.to_str().unwrap()]),
    ];
    for (how, source) in &sources {
        let pid_s = pid.to_string();
        let run = d.run(source, &["--json", "env", &pid_s]);
        if run.code != 0 {
            problems.push(format!(
                "{label} {how}: env exit {}: {}",
                run.code, run.stderr
            ));
        } else {
            let v = run.json();
            let got: Vec<String> = v["vars"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| s.as_str().unwrap_or("?").to_string())
                        .collect()
                })
                .unwrap_or_default();
            if got != want_env || v["truncated"] != false || v["pid"] != pid {
                problems.push(format!("{label} {how}: env {v} (the guest: {want_env:?})"));
            }
        }
        let run = d.run(source, &["--json", "lsof", &pid_s]);
        if run.code != 0 {
            problems.push(format!(
                "{label} {how}: lsof exit {}: {}",
                run.code, run.stderr
            ));
            continue;
        }
        let v = run.json();
        let mut got: Vec<(u64, String, i64, u64)> = v["files"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| {
                        (
                            f["fd"].as_u64().unwrap_or(u64::MAX),
                            f["name"].as_str().unwrap_or("?").to_string(),
                            f["pos"].as_i64().unwrap_or(-1),
                            u64::from_str_radix(f["flags"].as_str().unwrap_or("x"), 8)
                                .unwrap_or(u64::MAX),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        got.sort();
        if got != want_fds {
            problems.push(format!(
                "{label} {how}: lsof {got:?}, the guest {want_fds:?}"
            ));
        }
        // the text table names the same files
        let run = d.run(source, &["lsof", &pid_s]);
        for (_, link, _, _) in &want_fds {
            if !run.stdout.contains(link.as_str()) {
                problems.push(format!(
                    "{label} {how}: lsof text lacks {link}:\n{}",
                    run.stdout
                ));
            }
        }
    }
    // a pid no view holds is an error naming it
    let run = d.run(&sources[1].1, &["env", "4000000"]);
    if run.code != 2 || !run.stderr.contains("no process 4000000") {
        problems.push(format!(
            "{label}: env of no process: {} {}",
            run.code, run.stderr
        ));
    }
    guest.shutdown().expect("shutdown");
    problems
}
