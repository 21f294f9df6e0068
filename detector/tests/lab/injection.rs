//! The injection step (issue 20 items 3 and 4): a process holding others traced, and
//! the loader's preloads.
//!
//! [`injection`] boots a clean guest (`check` finds nothing), then starts the lab
//! worker's `ptrace` mode: it attaches to its child with `PTRACE_SEIZE` and to a
//! grandchild (whose parent is another process) with `PTRACE_ATTACH`. The guest's own
//! `/proc/PID/status` must name the worker as `TracerPid` of both; `check` must report
//! exactly the two traces, high, naming tracee and tracer, live and paused; a policy
//! allowing the worker's executable as a tracer must silence them. Then a process is
//! started with `LD_PRELOAD` naming a library written to `/dev/shm` and
//! `LD_LIBRARY_PATH=/tmp`, and `/etc/ld.so.preload` is written (and read, so the page
//! cache holds it): its `/proc/PID/environ` must hold both variables, and `check`
//! must report both (high, medium) and the file with its content (high), live,
//! paused and from an ELF dump, with the traces. On the dump, Volatility 3's
//! `linux.ptrace` and `linux.envars` must show exactly the traced threads and loader
//! variables the detector reports.

use super::*;

/// The pids the worker's `ptrace` mode printed.
struct Traced {
    tracer: u32,
    seized: u32,
    attached: u32,
}

/// `key=N` of a `ready` line.
fn field(line: &str, key: &str) -> Option<u32> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn start_tracer(label: &str, guest: &mut Guest) -> Result<Traced, String> {
    guest
        .sh("/bin/lab-sleeper ptrace </dev/null >/tmp/ptrace.out 2>&1 &")
        .map_err(|e| format!("{label}: start: {e}"))?;
    let out = guest
        .sh("for i in 1 2 3 4 5 6 7 8 9 10; do grep -q ready /tmp/ptrace.out && break; sleep 1; done; cat /tmp/ptrace.out")
        .map_err(|e| format!("{label}: sh: {e}"))?;
    let line = out
        .lines
        .iter()
        .find(|l| l.starts_with("ptrace ready"))
        .ok_or_else(|| format!("{label}: the worker's ptrace mode: {:?}", out.lines))?;
    let get = |k| field(line, k).ok_or_else(|| format!("{label}: no {k} in {line}"));
    Ok(Traced {
        tracer: get("tracer")?,
        seized: get("seized")?,
        attached: get("attached")?,
    })
}

/// The guest's own TracerPid of `pid`.
fn tracer_pid(guest: &mut Guest, pid: u32) -> Option<u32> {
    let out = guest
        .sh(&format!("grep TracerPid /proc/{pid}/status"))
        .ok()?;
    out.lines.first()?.split_whitespace().nth(1)?.parse().ok()
}

fn wants(t: &Traced) -> Vec<Want> {
    let tracer = t.tracer;
    [(t.seized, "yes"), (t.attached, "")]
        .into_iter()
        .map(|(pid, seized)| {
            want(&format!("{pid} traced by {tracer}"), "ptrace", move |e| {
                e["pid"] == pid
                    && e["comm"] == "lab-sleeper"
                    && e["exe"] == "/bin/lab-sleeper"
                    && e["tracer_pid"] == tracer
                    && e["tracer_tid"] == tracer
                    && e["tracer_comm"] == "lab-sleeper"
                    && e["tracer_exe"] == "/bin/lab-sleeper"
                    && e["rule"] == "traced"
                    && e["threads"] == 1
                    && (seized.is_empty() || e["seized"] == seized)
            })
        })
        .collect()
}

/// The library the preloaded process names, and the content of `/etc/ld.so.preload`.
const PRELOAD_LIB: &str = "/dev/shm/libvmi-preload.so";
/// A library mapped from outside the system directories.
const NON_SYSTEM_LIB: &str = "/srv/libvmi-nonsys.so";

/// Start a process with `LD_PRELOAD` and `LD_LIBRARY_PATH`, write `/etc/ld.so.preload`,
/// check both in the guest's own view and return the findings they must make.
fn start_preloaded(label: &str, guest: &mut Guest) -> Result<Vec<Want>, String> {
    let sh = |guest: &mut Guest, cmd: &str| {
        guest
            .sh(cmd)
            .map(|o| o.lines)
            .map_err(|e| format!("{label}: {cmd}: {e}"))
    };
    let started = |guest: &mut Guest, cmd: String| -> Result<u32, String> {
        let out = sh(
            guest,
            &format!("{cmd} </dev/null >/dev/null 2>&1 & echo $!"),
        )?;
        out.first()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("{label}: {cmd}: {out:?}"))
    };
    sh(
        guest,
        &format!("mkdir -p /dev/shm /srv && cp /bin/lab-sleeper {PRELOAD_LIB}"),
    )?;
    let pid = started(
        guest,
        format!("LD_PRELOAD={PRELOAD_LIB} LD_LIBRARY_PATH=/tmp /bin/lab-sleeper sleep"),
    )?;
    let env = sh(
        guest,
        &format!("sleep 1; tr '\\0' '\\n' </proc/{pid}/environ | grep ^LD_"),
    )?;
    eprintln!("{label}: guest: /proc/{pid}/environ holds {env:?}");
    let want_env = [
        format!("LD_PRELOAD={PRELOAD_LIB}"),
        "LD_LIBRARY_PATH=/tmp".to_string(),
    ];
    if want_env.iter().any(|w| !env.contains(w)) {
        return Err(format!("{label}: the guest's environ of {pid} is {env:?}"));
    }
    // the preloaded library as the loader would map it, from outside the system
    // directories (with the worker's other "libraries": deleted in /dev/shm, a memfd)
    let maplib = started(
        guest,
        format!("/bin/lab-sleeper maplib {NON_SYSTEM_LIB} /dev/shm/libvmi-gone2.so vmi-preload"),
    )?;
    let maps = sh(
        guest,
        &format!("sleep 1; grep -c libvmi-nonsys /proc/{maplib}/maps"),
    )?;
    if maps.first().map(String::as_str) != Some("1") {
        return Err(format!(
            "{label}: /proc/{maplib}/maps names the library {maps:?} times"
        ));
    }
    let content = sh(
        guest,
        &format!("printf '{PRELOAD_LIB}\\n' >/etc/ld.so.preload && cat /etc/ld.so.preload"),
    )?;
    if content != [PRELOAD_LIB] {
        return Err(format!("{label}: /etc/ld.so.preload reads {content:?}"));
    }
    let var = |name: &'static str, value: &'static str| {
        want(&format!("{pid} {name}={value}"), "preload", move |e| {
            e["pid"] == pid
                && e["comm"] == "lab-sleeper"
                && e["rule"] == "environment"
                && e["variable"] == name
                && e["value"] == value
        })
    };
    let mapping = |rule: &'static str, file: &'static str| {
        want(
            &format!("{maplib} maps {file}"),
            "exec-location",
            move |e| {
                e["pid"] == maplib
                    && e["role"] == "mapping"
                    && e["rule"] == rule
                    && e["file"] == file
            },
        )
    };
    Ok(vec![
        mapping("non-system", NON_SYSTEM_LIB),
        mapping(
            "deleted-world-writable",
            "/dev/shm/libvmi-gone2.so (deleted)",
        ),
        mapping("memory", "/memfd:vmi-preload (deleted)"),
        var("LD_PRELOAD", PRELOAD_LIB),
        var("LD_LIBRARY_PATH", "/tmp"),
        want("/etc/ld.so.preload", "preload", |e| {
            e["rule"] == "ld.so.preload"
                && e["file"] == "/etc/ld.so.preload"
                && e["content"] == format!("{PRELOAD_LIB}\\x0a")
                && e["libraries"] == 1
        }),
    ])
}

/// The io_uring instances of the worker's `iouring sqpoll` mode as the guest shows them.
struct Rings {
    pid: u32,
    /// The descriptors `/proc/PID/fd` names `anon_inode:[io_uring]`.
    fds: Vec<u32>,
    /// The SQPOLL ring's descriptor, as the worker printed it.
    sqpoll_fd: u32,
    /// The polling thread (`iou-sqp-PID` in `/proc/PID/task`).
    sq_thread: u32,
}

fn start_rings(label: &str, guest: &mut Guest) -> Result<Rings, String> {
    let mut sh = |cmd: &str| {
        guest
            .sh(cmd)
            .map(|o| o.lines)
            .map_err(|e| format!("{label}: {cmd}: {e}"))
    };
    sh("/bin/lab-sleeper iouring sqpoll </dev/null >/tmp/iouring.out 2>&1 &")?;
    let out = sh("for i in 1 2 3 4 5 6 7 8 9 10; do grep -q ready /tmp/iouring.out && break; sleep 1; done; cat /tmp/iouring.out")?;
    let line = out
        .iter()
        .find(|l| l.starts_with("iouring ready"))
        .ok_or_else(|| format!("{label}: the worker's iouring mode: {out:?}"))?
        .clone();
    let get = |k| field(&line, k).ok_or_else(|| format!("{label}: no {k} in {line}"));
    let (pid, sqpoll_fd) = (get("pid")?, get("sqpoll_fd")?);
    if sqpoll_fd == 0 {
        return Err(format!(
            "{label}: the kernel refused IORING_SETUP_SQPOLL: {out:?}"
        ));
    }
    let fds: Vec<u32> = sh(&format!("ls -l /proc/{pid}/fd"))?
        .iter()
        .filter(|l| l.ends_with("anon_inode:[io_uring]"))
        .filter_map(|l| {
            l.split(" -> ")
                .next()?
                .split_whitespace()
                .last()?
                .parse()
                .ok()
        })
        .collect();
    let sq_thread = sh(&format!("grep -l '^iou-sqp' /proc/{pid}/task/*/comm"))?
        .first()
        .and_then(|l| l.split('/').nth(4)?.parse().ok())
        .ok_or_else(|| format!("{label}: no iou-sqp thread in /proc/{pid}/task"))?;
    eprintln!("{label}: guest: {pid} holds io_urings at fds {fds:?}, SQPOLL thread {sq_thread}");
    Ok(Rings {
        pid,
        fds,
        sqpoll_fd,
        sq_thread,
    })
}

/// `ps --json` lists the worker's io_uring instances as the guest does, and nobody
/// else's.
fn rings_listed(label: &str, ps: &Run, r: &Rings) -> Vec<String> {
    let v = ps.json();
    let mut problems = Vec::new();
    for p in v.as_array().into_iter().flatten() {
        let rings = p["io_uring"].as_array().cloned().unwrap_or_default();
        if p["pid"] != r.pid {
            if !rings.is_empty() {
                problems.push(format!("{label}: {} has io_urings: {rings:?}", p["pid"]));
            }
            continue;
        }
        let fds: Vec<u64> = rings.iter().filter_map(|x| x["fd"].as_u64()).collect();
        let want: Vec<u64> = r.fds.iter().map(|&f| u64::from(f)).collect();
        if fds != want {
            problems.push(format!(
                "{label}: io_uring fds {fds:?}, the guest's {want:?}"
            ));
        }
        for x in &rings {
            let sqpoll = x["fd"] == r.sqpoll_fd;
            let ok = x["sq_entries"] == 8
                && x["cq_entries"] == 16
                && x["sqpoll"] == sqpoll
                && (if sqpoll {
                    x["sq_thread"] == r.sq_thread
                } else {
                    x["sq_thread"].is_null()
                });
            if !ok {
                problems.push(format!("{label}: io_uring {x}"));
            }
        }
    }
    problems
}

/// Volatility 3's `linux.ptrace` and `linux.envars` on the dump: every traced thread
/// and every loader variable they show is in the detector's findings, and the other
/// way round.
fn volatility_agrees(label: &str, vol: &Volatility, run: &Run) -> Vec<String> {
    let mut problems = Vec::new();
    let found = findings(&run.json());
    let of = |check: &str| -> Vec<&Value> {
        found
            .iter()
            .filter(|(c, _)| c == check)
            .map(|(_, e)| e)
            .collect()
    };
    // (pid, tid, tracer tid) of every traced thread
    let mut vol_traced: Vec<(u64, u64, u64)> = vol
        .rows("linux.ptrace")
        .iter()
        .filter_map(|r| {
            Some((
                r["PID"].as_u64()?,
                r["TID"].as_u64()?,
                r["Tracer TID"].as_u64()?,
            ))
        })
        .collect();
    let mut ours: Vec<(u64, u64, u64)> = of("ptrace")
        .iter()
        .flat_map(|e| {
            let (pid, tracer) = (e["pid"].as_u64(), e["tracer_tid"].as_u64());
            e["tids"]
                .as_str()
                .unwrap_or("")
                .split(',')
                .filter_map(move |t| Some((pid?, t.parse().ok()?, tracer?)))
                .collect::<Vec<_>>()
        })
        .collect();
    vol_traced.sort_unstable();
    ours.sort_unstable();
    if vol_traced.is_empty() || vol_traced != ours {
        problems.push(format!(
            "{label}: Volatility's linux.ptrace traces {vol_traced:?}, the detector's {ours:?}"
        ));
    }
    // (pid, variable, value) of every loader variable
    let loader = ["LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH"];
    let mut vol_vars: Vec<(u64, String, String)> = vol
        .rows("linux.envars")
        .iter()
        .filter_map(|r| {
            let key = r["KEY"].as_str()?;
            loader.contains(&key).then_some(())?;
            Some((
                r["PID"].as_u64()?,
                key.to_string(),
                r["VALUE"].as_str()?.to_string(),
            ))
        })
        .collect();
    let mut our_vars: Vec<(u64, String, String)> = of("preload")
        .iter()
        .filter(|e| e["rule"] == "environment")
        .filter_map(|e| {
            Some((
                e["pid"].as_u64()?,
                e["variable"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect();
    vol_vars.sort_unstable();
    our_vars.sort_unstable();
    if vol_vars.is_empty() || vol_vars != our_vars {
        problems.push(format!(
            "{label}: Volatility's linux.envars shows {vol_vars:?}, the detector {our_vars:?}"
        ));
    }
    eprintln!(
        "{label}: Volatility agrees on {} traced threads and {} loader variables",
        ours.len(),
        our_vars.len()
    );
    problems
}

/// Every finding of a run has its severity: high but for `LD_LIBRARY_PATH=/tmp`'s
/// and the memfd mapping's (medium) and the library outside the system directories
/// (low).
fn severities(label: &str, run: &Run) -> Vec<String> {
    run.json()["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| {
            let e = &f["evidence"];
            let want = if e["variable"] == "LD_LIBRARY_PATH" || e["rule"] == "memory" {
                "medium"
            } else if e["rule"] == "non-system" {
                "low"
            } else {
                "high"
            };
            f["severity"] != want
        })
        .map(|f| format!("{label}: finding of the wrong severity: {f}"))
        .collect()
}

pub(crate) fn injection(lab: &Lab, kernel: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let Some((profiles, d, mut guest, label)) = clean_guest(lab, kernel, &mut problems) else {
        return problems;
    };
    let t = match start_tracer(&label, &mut guest) {
        Ok(t) => t,
        Err(e) => {
            problems.push(e);
            return problems;
        }
    };
    for pid in [t.seized, t.attached] {
        let guest_says = tracer_pid(&mut guest, pid);
        eprintln!("{label}: guest: TracerPid of {pid} is {guest_says:?}");
        if guest_says != Some(t.tracer) {
            problems.push(format!(
                "{label}: the guest says the tracer of {pid} is {guest_says:?}, not {}",
                t.tracer
            ));
        }
    }
    let wanted = wants(&t);
    let run = live_and_paused(&label, &d, &mut guest, &wanted, &mut problems);
    problems.extend(severities(&format!("{label} paused"), &run));
    let policy = profiles.path().join("tracers.toml");
    let run = run_check_with_policy(
        &d,
        &mut guest,
        &policy,
        "allow_tracers = [\"/bin/lab-sleeper\"]\n",
        "ptrace",
    );
    problems.extend(expect_exactly(&format!("{label} allowed"), &run, &[]));
    let run = run_check_with_policy(
        &d,
        &mut guest,
        &policy,
        "allow_tracers = [\"/usr/bin/gdb\"]\n",
        "ptrace",
    );
    problems.extend(expect_exactly(
        &format!("{label} not allowed"),
        &run,
        &wanted,
    ));
    let mut wanted = wanted;
    match start_preloaded(&label, &mut guest) {
        Ok(w) => wanted.extend(w),
        Err(e) => {
            problems.push(e);
            return problems;
        }
    }
    let run = live_and_paused(
        &format!("{label} preload"),
        &d,
        &mut guest,
        &wanted,
        &mut problems,
    );
    problems.extend(severities(&format!("{label} preload paused"), &run));
    let policy_text = "allow_preload = [\"/dev/shm/libvmi-preload.so\", \"/tmp\"]\n";
    let run = run_check_with_policy(
        &d,
        &mut guest,
        &policy,
        &format!("allow_exec_location = [\"{NON_SYSTEM_LIB}\", \"/dev/shm/*\", \"/memfd:*\"]\n"),
        "exec-location",
    );
    problems.extend(expect_exactly(
        &format!("{label} libraries allowed"),
        &run,
        &[],
    ));
    let run = run_check_with_policy(&d, &mut guest, &policy, policy_text, "preload");
    problems.extend(expect_exactly(
        &format!("{label} preload allowed"),
        &run,
        &[],
    ));
    let rings = match start_rings(&label, &mut guest) {
        Ok(r) => r,
        Err(e) => {
            problems.push(e);
            return problems;
        }
    };
    let ps = d.live(&mut guest, &["--json", "ps"]);
    problems.extend(rings_listed(&format!("{label} live"), &ps, &rings));
    let text = d.live(&mut guest, &["ps"]).stdout;
    let marked = format!(" [io_uring:{}]", rings.fds.len());
    if !text.lines().any(|l| {
        l.split_whitespace().next() == Some(&rings.pid.to_string()) && l.ends_with(&marked)
    }) {
        problems.push(format!(
            "{label}: ps does not mark {} with{marked}:\n{text}",
            rings.pid
        ));
    }
    let dump = tempfile::tempdir().expect("tempdir");
    let elf = dump.path().join("g.elf");
    guest.dump_elf(&elf).expect("ELF dump");
    guest.shutdown().expect("shutdown");
    let src = ["--dump", elf.to_str().unwrap()];
    let t1 = std::time::Instant::now();
    let run = d.run(&src, &["--json", "check"]);
    eprintln!(
        "{label}: check of the dump {:.1?}:\n{}",
        t1.elapsed(),
        run.stdout
    );
    problems.extend(expect_exactly(&format!("{label} ELF"), &run, &wanted));
    problems.extend(severities(&format!("{label} ELF"), &run));
    let ps = d.run(&src, &["--json", "ps"]);
    problems.extend(rings_listed(&format!("{label} ELF"), &ps, &rings));
    let vol = Volatility::new(lab, kernel, &elf, &d);
    problems.extend(volatility_agrees(&label, &vol, &run));
    problems
}
