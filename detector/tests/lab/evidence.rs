//! The evidence commands on a real guest, against what the guest says of itself.
//!
//! One guest per kernel ([`evidence`]): a process started with a chosen environment
//! (one value holding an escape byte) and open files of every kind the step can make
//! with a shell (a file read from, one appended to, one read and written, one
//! deleted while open, a pipe, /dev/null); `env PID` must list exactly the
//! strings of the guest's own `/proc/PID/environ` (escaped), and `lsof PID` exactly
//! the descriptors of `/proc/PID/fd`, each with the link's text, and fdinfo's `pos:`
//! and `flags:` (less `O_CLOEXEC`), live and from an ELF dump. Files an administrator
//! reads after an alert (an /etc/ld.so.preload holding an escape byte, a crontab,
//! authorized_keys, 20000 random bytes on a tmpfs mounted on the way) are written in the
//! guest: `cat` must give exactly the guest's bytes (`-o`, `--json`), escape the text,
//! `cat --list /etc` list what `ls -A /etc` does, and a name the dcache does not hold
//! be an error. `dump-process` of the process must give a core gdb opens with the
//! guest's executable: its mappings listed, its first environment variable at the
//! environment's start (/proc/PID/stat), `$pc` and `$sp` where /proc/PID/syscall says
//! the process waits. `dump-module` of a listed module and of modules hidden from the
//! list and from /sys/module too (`moddump.rs`) must give ELF files whose sections,
//! symbols and bytes are the guest's and the module file's.

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
    let mods = super::moddump::modules(lab, kernel);
    let mut scenario = Scenario::standard();
    for (_, ko, _) in &mods {
        scenario = scenario.insmod(ko, "");
    }
    let mut guest = match lab.boot(kernel, &scenario, &BootOptions::default()) {
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

    // files an administrator reads after an alert, one on a tmpfs mounted on the way
    let out = guest
        .sh(
            "mkdir -p /root/.ssh /var/spool/cron/crontabs /mnt/ev && mount -t tmpfs ev /mnt/ev && \
             printf '/tmp/.libev.so\\n\\033[2Jx\\n' > /etc/ld.so.preload && \
             echo '* * * * * root /tmp/.x' > /var/spool/cron/crontabs/root && \
             echo 'ssh-ed25519 AAAAC3Nza evil@x' > /root/.ssh/authorized_keys && \
             head -c 20000 /dev/urandom > /mnt/ev/blob && ls -A /etc",
        )
        .expect("sh");
    if out.status != 0 {
        problems.push(format!("{label}: making the files: {:?}", out.lines));
    }
    let etc_names: BTreeSet<String> = out.lines.iter().map(|l| l.trim().to_string()).collect();
    let files = [
        "/etc/ld.so.preload",
        "/var/spool/cron/crontabs/root",
        "/root/.ssh/authorized_keys",
        "/mnt/ev/blob",
    ];
    let contents: Vec<Vec<u8>> = files
        .iter()
        .map(|f| guest.read_file(f).expect("the guest's copy"))
        .collect();

    // the guest's own view of the process for its core: where its system call left
    // the stack pointer and instruction pointer, where its environment starts (stat
    // field 50), its executable
    let out = guest
        .sh(&format!(
            "cat /proc/{pid}/syscall; cut -d' ' -f50 /proc/{pid}/stat; readlink /proc/{pid}/exe"
        ))
        .expect("sh");
    let (sp_pc, env_start, exe) = match out.lines.as_slice() {
        [sys, env, exe, ..] => {
            let w: Vec<&str> = sys.split_whitespace().collect();
            let n = w.len();
            (
                (n >= 2).then(|| (w[n - 2].to_string(), w[n - 1].to_string())),
                env.trim().parse::<u64>().unwrap_or(0),
                exe.trim().to_string(),
            )
        }
        _ => (None, 0, String::new()),
    };
    let exe_copy = guest.read_file(&exe).unwrap_or_default();

    let mut truths = Vec::new();
    for m in mods {
        match super::moddump::truth(&mut guest, m) {
            Ok(t) => truths.push(t),
            Err(e) => problems.push(format!("{label}: {e}")),
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
        problems.extend(super::moddump::dump_modules(
            &format!("{label} {how}"),
            &d,
            source,
            &truths,
            dump.path(),
        ));
        problems.extend(super::moddump::hidden_modules(
            &format!("{label} {how}"),
            &d,
            source,
            &truths,
        ));
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
    let prog = dump.path().join("prog");
    std::fs::write(&prog, &exe_copy).expect("writing the executable");
    for (how, source) in &sources {
        problems.extend(core_opens_in_gdb(
            &format!("{label} {how}"),
            &d,
            source,
            pid,
            (&prog, &exe),
            (
                sp_pc.clone(),
                env_start,
                want_env.first().cloned().unwrap_or_default(),
            ),
            dump.path(),
        ));
    }
    for (how, source) in &sources {
        problems.extend(cat_matches(
            &format!("{label} {how}"),
            &d,
            source,
            &files,
            &contents,
            &etc_names,
            dump.path(),
        ));
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

/// `cat` of each of `files` equals the guest's copy (`-o`, JSON), the text form
/// escapes the escape byte of ld.so.preload, `cat --list /etc` lists what `ls -A /etc`
/// does, and a name the dcache does not hold is an error.
fn cat_matches(
    label: &str,
    d: &Detector,
    source: &[&str],
    files: &[&str],
    contents: &[Vec<u8>],
    etc_names: &BTreeSet<String>,
    dir: &Path,
) -> Vec<String> {
    use base64::Engine as _;
    let mut problems = Vec::new();
    for (path, want) in files.iter().zip(contents) {
        let out = dir.join("cat.out");
        let run = d.run(source, &["cat", "-o", out.to_str().unwrap(), path]);
        let got = std::fs::read(&out).unwrap_or_default();
        if run.code != 0 || &got != want {
            problems.push(format!(
                "{label}: cat -o {path}: exit {} ({}), {} bytes, the guest's {} ({})",
                run.code,
                run.stderr,
                got.len(),
                want.len(),
                got == *want
            ));
        }
        std::fs::remove_file(&out).ok();
        let run = d.run(source, &["--json", "cat", path]);
        let v = run.json();
        let data = base64::engine::general_purpose::STANDARD
            .decode(v["data_base64"].as_str().unwrap_or(""))
            .unwrap_or_default();
        if run.code != 0
            || &data != want
            || v["missing"] != serde_json::json!([])
            || v["size"] != want.len()
        {
            problems.push(format!(
                "{label}: cat --json {path}: exit {}, {v}",
                run.code
            ));
        }
    }
    let run = d.run(source, &["cat", "/etc/ld.so.preload"]);
    if run.stdout != "/tmp/.libev.so\n\\x1b[2Jx\n" {
        problems.push(format!(
            "{label}: cat /etc/ld.so.preload printed {:?}",
            run.stdout
        ));
    }
    let run = d.run(source, &["--json", "cat", "--list", "/etc"]);
    let listed: BTreeSet<String> = run.json()["entries"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["negative"] == false)
                .map(|e| e["name"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default();
    if run.code != 0 || &listed != etc_names || !listed.contains("ld.so.preload") {
        problems.push(format!(
            "{label}: cat --list /etc: {listed:?}, the guest's ls -A: {etc_names:?}"
        ));
    }
    let run = d.run(source, &["cat", "/etc/no-such-file-here"]);
    if run.code != 2 || !run.stderr.contains("not in the guest's dentry cache") {
        problems.push(format!(
            "{label}: cat of an uncached name: {} {}",
            run.code, run.stderr
        ));
    }
    problems
}

/// `dump-process` writes a core gdb opens: `info proc mappings` lists the executable,
/// `x/s` at the environment's start prints the first variable of the guest's
/// /proc/PID/environ, and `$pc`/`$sp` are
/// where the guest's /proc/PID/syscall says the process waits.
fn core_opens_in_gdb(
    label: &str,
    d: &Detector,
    source: &[&str],
    pid: u32,
    (prog, exe): (&Path, &str),
    (sp_pc, env_start, first_var): (Option<(String, String)>, u64, String),
    dir: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    let core = dir.join("proc.core");
    let run = d.run(
        source,
        &[
            "--json",
            "dump-process",
            &pid.to_string(),
            "-o",
            core.to_str().unwrap(),
        ],
    );
    if run.code != 0 {
        return vec![format!(
            "{label}: dump-process exit {}: {}",
            run.code, run.stderr
        )];
    }
    eprintln!("{label}: dump-process: {}", run.stdout.trim());
    let out = Command::new("gdb")
        .args(["-nx", "-batch", "-ex", "info proc mappings"])
        .args(["-ex", &format!("x/s {env_start:#x}")])
        .args(["-ex", "p/x $pc", "-ex", "p/x $sp"])
        .arg(prog)
        .arg(&core)
        .output()
        .expect("gdb (scripts/setup.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "{label}: gdb:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if !text.lines().any(|l| l.trim_end().ends_with(exe)) {
        problems.push(format!("{label}: gdb's info proc mappings lacks {exe}"));
    }
    if first_var.is_empty() || !text.contains(&format!("\"{first_var}\"")) {
        problems.push(format!(
            "{label}: gdb's x/s {env_start:#x} is not {first_var:?}"
        ));
    }
    match sp_pc {
        Some((sp, pc)) => {
            let want_pc = format!("= {pc}");
            let want_sp = format!("= {sp}");
            if !text.contains(&want_pc) || !text.contains(&want_sp) {
                problems.push(format!(
                    "{label}: gdb's $pc/$sp are not /proc/{pid}/syscall's {pc} {sp}"
                ));
            }
        }
        None => problems.push(format!("{label}: no /proc/{pid}/syscall from the guest")),
    }
    std::fs::remove_file(&core).ok();
    problems
}
