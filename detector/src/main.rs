//! `detector`: what runs in a Linux guest, and was its kernel tampered with, read from
//! outside the guest.
//!
//! Exit status: 0 clean, 1 findings, 2 error (also when a check could not run and
//! nothing was found).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use detector::checks::{self, Check, Report, Settings};
use detector::events::{self, AlertFile, Record};
use detector::image::KernelImage;
use detector::policy::Policy;
use detector::render;
use detector::serve::config::parse_duration;
use detector::target::{ProfileSpec, SourceSpec, Target};
use detector::watch::{self, Event, Tick, WatchOptions, Watcher};
use vmi_core::kernel::pagecache::Lookup;
use vmi_core::kernel::Limits;

#[derive(Parser, Debug)]
#[command(
    name = "detector",
    version,
    about = "Read a Linux guest from outside (a memory dump, a live QEMU guest or a Xen domain) and check its kernel for tampering",
    after_help = "Exit status: 0 clean, 1 findings, 2 error."
)]
struct Cli {
    #[command(flatten)]
    opts: Opts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Opts {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// A memory dump: ELF core (QEMU dump-guest-memory, virsh dump), LiME or raw,
    /// recognised by content.
    #[arg(long, global = true, value_name = "FILE", conflicts_with_all = ["qemu", "xen", "qemu_pid", "libvirt"])]
    dump: Option<PathBuf>,
    /// A live QEMU guest, by its QMP socket. Guest RAM is read from its shared RAM file
    /// (memory-backend-file, share=on) when it has one, else through the QEMU process
    /// (needs root or CAP_SYS_PTRACE).
    #[arg(
        long,
        global = true,
        value_name = "QMP_SOCKET",
        conflicts_with_all = ["qemu_pid", "libvirt"]
    )]
    qemu: Option<PathBuf>,
    /// The guest RAM file, when QEMU's mem-path is not the path to open.
    #[arg(long, global = true, value_name = "FILE", requires = "qemu")]
    mem_path: Option<PathBuf>,
    /// A running QEMU process, by pid, whatever its memory backend (QEMU's default RAM,
    /// memfd, hugepages, a file); read through the process (root or CAP_SYS_PTRACE).
    /// Without --qmp the monitor is left alone (a manager may own it): the memory map
    /// comes from QEMU's command line (pc and q35 machines), and --pause and the vCPU
    /// registers are not available.
    #[arg(long, global = true, value_name = "PID", conflicts_with_all = ["xen", "libvirt"])]
    qemu_pid: Option<i32>,
    /// With --qemu-pid: the QMP socket of that QEMU, for registers and --pause.
    #[arg(long, global = true, value_name = "QMP_SOCKET", requires = "qemu_pid")]
    qmp: Option<PathBuf>,
    /// A live Xen domain (PV, PVH or HVM), by name or id; run in dom0 as root.
    #[arg(long, global = true, value_name = "DOMAIN", conflicts_with_all = ["qemu", "libvirt"])]
    xen: Option<String>,
    /// A running libvirt domain (QEMU), by name: guest RAM read through its QEMU process
    /// (root or CAP_SYS_PTRACE; an AppArmor or SELinux profile confining QEMU may refuse
    /// it), registers and --pause through libvirt's API (virDomainQemuMonitorCommand,
    /// virDomainSuspend), never through the monitor socket libvirt owns.
    #[arg(long, global = true, value_name = "NAME")]
    libvirt: Option<String>,
    /// With --libvirt: libvirt's connection URI [default: qemu:///system].
    #[arg(long, global = true, value_name = "URI", requires = "libvirt")]
    libvirt_uri: Option<String>,
    /// A directory of profiles; the one matching the guest's banner is used.
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "profile")]
    profiles: Option<PathBuf>,
    /// One profile file, or `auto`: make it from the guest's own memory (its BTF and
    /// kallsyms). With --profiles DIR, a guest no profile matches gets one made that way
    /// and written into DIR.
    #[arg(long, global = true, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// A policy file (TOML: deny_names, deny_exe, root_uids, allow_listen, allow_jit); adds the `policy` check to
    /// `check` and `watch`; its ebpf_types and ebpf_allow set what the `ebpf` check reports.
    #[arg(long, global = true, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The kernel the guest booted: its vmlinuz (/boot/vmlinuz-ABI), its linux-image
    /// .deb, or the vmlinux or -dbg .deb of the -dbg package; adds the `kernel-text`
    /// check (.text and .rodata against the image).
    #[arg(long, global = true, value_name = "IMAGE")]
    image: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The guest's kernel: banner, release, KASLR shifts, page-table root, profile.
    Identify,
    /// Whether the profile is right for this guest, from the guest's own consistency
    /// (no ground truth): the kernel found with it (init_task is the idle task), its
    /// banner where linux_banner is, tasks-list links that point back, task names that
    /// are text, thread groups and parents that agree, the tasks list equal to the pid
    /// namespace and the run queues, the modules list equal to the module kset, the
    /// syscall table and IDT in kernel text. One line per rule: pass, FAIL with its
    /// evidence, or n/a; exit 0 when no rule fails, 1 otherwise, 2 when the guest
    /// cannot be read. Give the profile with --profile FILE. A rootkit can fail a rule
    /// too (a process unlinked from the tasks list fails pid-namespace): `check` says
    /// what it did.
    Verify {
        /// Pause a live guest while it is read (the lists are then read at one moment).
        #[arg(long)]
        pause: bool,
    },
    /// Processes, from the kernel's tasks list, and those only the pid namespace or a
    /// CPU holds (marked with the views that hold them). Where the tasks list is broken
    /// it is read from its other end; each break is a warning on stderr, and the exit
    /// status is then 1. With --json, each process's executable as /proc/PID/exe names
    /// it ("PATH (deleted)" for a deleted file, "/memfd:NAME (deleted)" for a memfd).
    Ps {
        /// Show children under their parents.
        #[arg(long)]
        tree: bool,
    },
    /// Loaded kernel modules, from the modules list (from both ends where it is
    /// broken: a warning on stderr and exit status 1).
    Lsmod,
    /// Sockets of every family per process, from each process's open files: internet
    /// (TCP, UDP, raw; IPv4 and IPv6) with addresses, ports and state, unix with their
    /// path or abstract name, packet with protocol and interface, netlink with port id;
    /// inode, and the attached filter (classic BPF or eBPF) with its instruction count
    /// (with --json, a classic program decoded as `tcpdump -d` prints it, an eBPF
    /// program's id as `bpf` lists it).
    Sockets {
        /// Only listening sockets (TCP LISTEN, UDP bound and not connected).
        #[arg(long)]
        listening: bool,
    },
    /// Loaded BPF programs, from the kernel's program IDR: id, type, name, tag,
    /// address, the processes holding them open and what they are attached to (links,
    /// perf events).
    Bpf,
    /// A process's memory mappings, as /proc/PID/maps shows them: range, rwxp, file
    /// offset, device, inode and path ([heap], [stack], [vdso], ... for the others; a
    /// deleted file's path followed by " (deleted)", a memfd as "/memfd:NAME (deleted)").
    Maps {
        /// The process (its thread-group leader's pid).
        pid: u32,
    },
    /// A process's environment, as /proc/PID/environ holds it: one NAME=value a line
    /// (guest bytes escaped as \xNN), read from the process's own memory
    /// (mm_struct.env_start..env_end), at most 256 KiB (a last line says when cut).
    Env {
        /// The process (its thread-group leader's pid).
        pid: u32,
    },
    /// A process's open files, as /proc/PID/fd and /proc/PID/fdinfo show them: the
    /// descriptor, access (r, w, rw), open flags (octal, as fdinfo's less O_CLOEXEC),
    /// type, device, size or offset, inode and name (a path with " (deleted)" for an
    /// unlinked file, "/memfd:NAME (deleted)", "socket:[INODE]", "pipe:[INODE]",
    /// "anon_inode:NAME").
    Lsof {
        /// The process (its thread-group leader's pid).
        pid: u32,
    },
    /// A file of the guest, from its page cache: e.g. /etc/ld.so.preload, a crontab or
    /// authorized_keys, read without logging into the guest. The path is looked up in
    /// the guest's dentry cache from the root of process 1 (--root-of), across mounts;
    /// a name the cache does not hold is an error saying where the lookup stopped (it
    /// may still exist on disk). Text: the bytes with non-printable ones escaped as
    /// \xNN (newlines and tabs kept), and a line "[bytes A..B not in the page cache]"
    /// for each range not resident; --json: the bytes in base64 and the ranges; -o
    /// FILE: the bytes (zeros where not resident) written to FILE whole or not at all.
    /// Exit 1 when a range was not resident or the file was cut at --max-bytes.
    Cat {
        /// The absolute path in the guest.
        path: PathBuf,
        /// List the directory's cached entries instead (mode, inode, size, pages in the
        /// page cache, name; names looked up and not found as "(negative)").
        #[arg(long)]
        list: bool,
        /// Write the file's bytes to FILE (a temporary file beside it, renamed).
        #[arg(
            short = 'o',
            long = "output",
            value_name = "FILE",
            conflicts_with = "list"
        )]
        output: Option<PathBuf>,
        /// Most bytes of the file read.
        #[arg(long, value_name = "N", default_value_t = 16 << 20)]
        max_bytes: u64,
        /// Most directory entries listed (more is an error).
        #[arg(long, value_name = "N", default_value_t = 100_000)]
        max_entries: usize,
        /// Look the path up from this process's root (its chroot or container).
        #[arg(long, value_name = "PID", default_value_t = 1)]
        root_of: u32,
    },
    /// A process as an ELF core file gdb opens (gdb PROGRAM FILE): every resident page
    /// of its mappings, each thread's user registers as its kernel stack saved them,
    /// its name and arguments, and its file mappings (gdb's info proc mappings). Pages
    /// not resident are left out; the file is written whole or not at all.
    DumpProcess {
        /// The process (its thread-group leader's pid).
        pid: u32,
        /// The core file to write.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// Most bytes of memory read.
        #[arg(long, value_name = "N", default_value_t = 4 << 30)]
        max_bytes: u64,
    },
    /// A kernel module's memory as an ELF file (readelf -S -s, objdump -d): the module
    /// named by its name (on the modules list, or only in /sys/module or the kernel's
    /// module tree: a module hidden from lsmod) or by an address in its memory or of its
    /// struct module (0x...); the summary says which views hold it.
    /// Sections with the module's names at its addresses (from
    /// /sys/module/NAME/sections), its symbols as /proc/kallsyms lists them, a PT_LOAD
    /// per memory region; pages not mapped are written as zeros and listed. The file is
    /// written whole or not at all; exit 1 when pages were not mapped or sections or
    /// symbols could not be read.
    DumpModule {
        /// The module's name, or an address (0x...).
        module: String,
        /// The ELF file to write.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// Most bytes of module memory read (more is an error, and no file is written).
        #[arg(long, value_name = "N", default_value_t = 64 << 20)]
        max_bytes: u64,
    },
    /// Run the intrusion checks; one finding per line.
    Check {
        /// Only these checks (repeat or comma-separate): hidden-process, hidden-module,
        /// syscall-table, idt, credentials, ftrace, kprobes, tracepoints, netfilter,
        /// notifiers, tty, afinfo, vfs-ops, spoofing, exec-location, malfind,
        /// socket-filter, perf-events, ebpf, cpu-state, kthreads, kernel-pages,
        /// kernel-entries, policy, kernel-text.
        #[arg(long = "check", value_name = "NAME", value_delimiter = ',')]
        only: Vec<String>,
        /// Pause a live guest while it is read (default: read it running and confirm
        /// each finding with a second read).
        #[arg(long)]
        pause: bool,
    },
    /// Monitor a live guest: one line per process start and exit, per new finding and
    /// per change of the guest's state (paused, reset, shut down). SIGTERM and SIGINT
    /// stop it cleanly. With --json each line is one JSON object with `ts` (RFC 3339,
    /// UTC), `guest` and `event`, the format serve writes: docs/events.schema.json (in
    /// the source, and under /usr/share/doc/vmi-detector/ of the package).
    Watch {
        /// Time between scans (e.g. 1s, 500ms, 2m).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Append findings and guest resets/shutdowns to this file as JSON lines (the
        /// --json format, whatever the output is), each synced to disk before watch goes
        /// on.
        #[arg(long, value_name = "FILE")]
        alerts: Option<PathBuf>,
        /// The guest's name in JSON lines (`guest`). Default: QEMU's name for it (its
        /// -name, which libvirt sets to the domain's name), else the QMP socket's path;
        /// a libvirt domain's name; a Xen domain's name, else the domain as given.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Pause the guest around each scan (default: read it running).
        #[arg(long)]
        pause: bool,
        /// When the guest goes away (QEMU exits, the Xen domain is destroyed or shuts
        /// down, the libvirt domain is destroyed or shut off): exit (status 0), or wait
        /// for a guest to appear at the same QMP socket (a libvirt domain of the same
        /// name running again, a Xen domain of the same name or id) and watch it.
        #[arg(long, value_enum, default_value = "exit")]
        on_shutdown: OnShutdown,
        /// Stop after this many scans.
        #[arg(long, value_name = "N")]
        scans: Option<u64>,
        /// Only these checks (as for `check`).
        #[arg(long = "check", value_name = "NAME", value_delimiter = ',')]
        only: Vec<String>,
        /// Read all of kernel text (the kernel-entries check, and kernel-text with
        /// --image) on one scan in N (the first included).
        #[arg(long, value_name = "N", default_value_t = 10)]
        text_every: u64,
        /// Run every check in full on every scan. By default a check runs again only
        /// when a byte of guest memory it read at its last run changed (the bytes
        /// themselves are compared), when the modules, module kobjects, ftrace_ops or
        /// network namespaces changed, or for the process checks, when a process
        /// started, exited, or changed its name, ids, address space or threads; the
        /// per-process checks (spoofing, exec-location, malfind, socket-filter) per
        /// process. hidden-process, idt and cpu-state run on every scan.
        #[arg(long)]
        full_scans: bool,
        /// With incremental scans, run every check in full on one scan in N
        /// whatever changed (0: never).
        #[arg(long, value_name = "N", default_value_t = 600)]
        full_every: u64,
    },
    /// Run as a service: watch every guest of the configuration file (QEMU guests,
    /// Xen domains by name or all running ones), each with its own interval, policy and
    /// profiles; events as JSON lines (stdout, syslog, a file; watch --json's format,
    /// `guest` the configured name), metrics for Prometheus.
    /// SIGHUP reloads the file, SIGTERM and SIGINT stop. The source and profile options
    /// above do not apply: the file says everything.
    Serve {
        /// The configuration file.
        #[arg(long, value_name = "FILE", default_value = "/etc/vmi/detector.toml")]
        config: PathBuf,
        /// Check the file (syntax, profile directories, policies) and exit.
        #[arg(long)]
        check_config: bool,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum OnShutdown {
    /// Report it and exit 0.
    Exit,
    /// Report it and wait for the guest to come back.
    Wait,
}

/// `1s`, `500ms`, `2m`, `1.5s`.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hangup(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    // SAFETY: as above
    unsafe {
        libc::signal(libc::SIGHUP, on_hangup as *const () as libc::sighandler_t);
    }
}

/// `serve`: the service until SIGTERM or SIGINT.
fn run_serve(config: &std::path::Path, check_only: bool) -> Result<ExitCode> {
    use detector::serve::{self, config::Config, Service};
    let cfg = Config::load(config).map_err(anyhow::Error::new)?;
    serve::validate(&cfg).map_err(anyhow::Error::new)?;
    if check_only {
        print!("{}", serve::describe(&cfg));
        return Ok(ExitCode::SUCCESS);
    }
    let mut service = Service::new(cfg).context("starting the service")?;
    if let Some(addr) = service.metrics_addr() {
        eprintln!("detector serve: metrics on http://{addr}/metrics");
    }
    install_signal_handlers();
    service.run(&|| STOP.load(Ordering::SeqCst), &mut || {
        RELOAD.swap(false, Ordering::SeqCst)
    });
    Ok(ExitCode::SUCCESS)
}

fn open(opts: &Opts) -> Result<Target> {
    if let Some(name) = &opts.libvirt {
        return open_source(
            opts,
            SourceSpec::Libvirt {
                name: name.clone(),
                uri: opts
                    .libvirt_uri
                    .clone()
                    .unwrap_or_else(|| vmi_core::memory::SYSTEM_URI.into()),
            },
        );
    }
    let source = match (&opts.dump, &opts.qemu, &opts.qemu_pid, &opts.xen) {
        (Some(d), None, None, None) => SourceSpec::Dump(d.clone()),
        (None, Some(q), None, None) => SourceSpec::Qemu {
            socket: q.clone(),
            mem_path: opts.mem_path.clone(),
        },
        (None, None, Some(pid), None) => SourceSpec::QemuPid {
            pid: *pid,
            qmp: opts.qmp.clone(),
        },
        (None, None, None, Some(x)) => SourceSpec::Xen { domain: x.clone() },
        _ => bail!(
            "give the guest: --dump FILE, --qemu QMP_SOCKET, --qemu-pid PID or --libvirt NAME (or --xen DOMAIN in a Xen dom0)"
        ),
    };
    open_source(opts, source)
}

fn open_source(opts: &Opts, source: SourceSpec) -> Result<Target> {
    let profiles = match (&opts.profiles, &opts.profile) {
        (Some(d), None) => ProfileSpec::Dir(d.clone()),
        (None, Some(f)) if f.as_os_str() == "auto" => ProfileSpec::Auto,
        (None, Some(f)) => ProfileSpec::File(f.clone()),
        _ => {
            bail!("give the profile: --profiles DIR or --profile FILE (make one with profile-gen)")
        }
    };
    Ok(Target::open(&source, &profiles)?)
}

/// `verify`: the discovery of the kernel with the profile is the first rule; a profile
/// that does not fit this kernel fails it instead of ending the command.
fn run_verify(opts: &Opts, pause: bool, limits: &Limits) -> Result<ExitCode> {
    use detector::verify::{Outcome, RuleResult};
    let started = std::time::Instant::now();
    let mut results = Vec::new();
    match open(opts) {
        Ok(target) => {
            results.push(RuleResult {
                rule: "discovery",
                outcome: Outcome::Pass,
                detail: format!(
                    "{} found with {}",
                    target.profile().kernel.release,
                    target.profile_path.display()
                ),
            });
            let _paused = if pause { target.pause()? } else { None };
            results.extend(detector::verify::verify(&target.kernel, limits));
        }
        Err(e) => match e.downcast_ref::<detector::error::DetectorError>() {
            Some(detector::error::DetectorError::Kernel(_))
            | Some(detector::error::DetectorError::ZeroTouch(_)) => {
                results.push(RuleResult {
                    rule: "discovery",
                    outcome: Outcome::Fail,
                    detail: cli_docs::error_text(e.as_ref()),
                });
            }
            _ => return Err(e),
        },
    }
    let failed = results.iter().any(|r| r.outcome == Outcome::Fail);
    emit(
        opts.json,
        render::verify_json(&results, started.elapsed()),
        render::verify_text(&results),
    )?;
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn emit(json: bool, value: serde_json::Value, text: String) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{value}")?;
    } else {
        out.write_all(text.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// The checks `check` runs: those named, or all (with `policy` when there is a policy,
/// `kernel-text` when there is an image).
fn wanted_checks(only: &[String], opts: &Opts) -> Result<Vec<Check>> {
    let mut wanted = Vec::new();
    for name in only {
        match Check::from_name(name) {
            Some(Check::Policy) if opts.policy.is_none() => {
                bail!("the policy check needs a policy: --policy FILE")
            }
            Some(Check::KernelText) if opts.image.is_none() => {
                bail!("the kernel-text check needs the kernel image: --image IMAGE (the guest kernel's vmlinuz, its linux-image .deb, or its vmlinux)")
            }
            Some(c) => wanted.push(c),
            None => bail!(
                "no check named {:?}; the checks are: {}, policy, kernel-text",
                vmi_core::kernel::escape(name.as_bytes()),
                Check::ALL.map(|c| c.name()).join(", ")
            ),
        }
    }
    if wanted.is_empty() {
        wanted = Check::ALL.to_vec();
        if opts.policy.is_some() {
            wanted.push(Check::Policy);
        }
        if opts.image.is_some() {
            wanted.push(Check::KernelText);
        }
    }
    Ok(wanted)
}

/// Open the image given with `--image` for the target's kernel.
fn open_image(opts: &Opts, target: &Target) -> Result<Option<std::sync::Arc<KernelImage>>> {
    match &opts.image {
        Some(p) => {
            let image = KernelImage::open(p, target.profile())?;
            for what in image.unchecked() {
                eprintln!("detector: warning: --image {}: {what}", p.display());
            }
            Ok(Some(std::sync::Arc::new(image)))
        }
        None => Ok(None),
    }
}

fn settings(opts: &Opts) -> Result<Settings> {
    let policy = match &opts.policy {
        Some(p) => Some(Policy::load(p)?),
        None => None,
    };
    Ok(Settings {
        limits: Limits::default(),
        policy,
        image: None,
    })
}

fn run(cli: &Cli) -> Result<ExitCode> {
    if let Command::Serve {
        config,
        check_config,
    } = &cli.command
    {
        return run_serve(config, *check_config);
    }
    let mut settings = settings(&cli.opts)?;
    let wanted = match &cli.command {
        Command::Check { only, .. } | Command::Watch { only, .. } => {
            wanted_checks(only, &cli.opts)?
        }
        _ => Vec::new(),
    };
    if let Command::Watch {
        interval,
        alerts,
        pause,
        on_shutdown,
        scans,
        text_every,
        full_scans,
        full_every,
        name,
        ..
    } = &cli.command
    {
        if cli.opts.qemu.is_none()
            && cli.opts.qemu_pid.is_none()
            && cli.opts.xen.is_none()
            && cli.opts.libvirt.is_none()
        {
            bail!("watch needs a live guest: --qemu QMP_SOCKET, --qemu-pid PID, --libvirt NAME or --xen DOMAIN");
        }
        let opts = WatchOptions {
            checks: wanted,
            pause: *pause,
            settings,
            text_every: *text_every,
            incremental: !*full_scans,
            full_every: *full_every,
            ..WatchOptions::default()
        };
        let out = WatchOutput {
            alerts: alerts.as_ref(),
            name: name.as_deref(),
        };
        return run_watch(cli, opts, *interval, out, *on_shutdown, *scans);
    }
    if let Command::Verify { pause } = &cli.command {
        return run_verify(&cli.opts, *pause, &settings.limits);
    }
    let target = open(&cli.opts)?;
    settings.image = open_image(&cli.opts, &target)?;
    let json = cli.opts.json;
    let limits = settings.limits;
    match &cli.command {
        Command::Identify => {
            emit(
                json,
                render::identify_json(&target),
                render::identify_text(&target),
            )?;
        }
        Command::Ps { tree } => {
            let (census, damaged) = census(&target, &limits)?;
            let procs = census.processes;
            let exes: Vec<Option<String>> = procs
                .iter()
                // as /proc/PID/exe names it: ` (deleted)`, `/memfd:NAME (deleted)`
                .map(|p| match target.kernel.exe_file(p.mm) {
                    Ok(Some(name)) => Some(vmi_core::kernel::escape(&name.display())),
                    _ => None,
                })
                .collect();
            // each process's io_uring instances (`null`: unreadable, or no io_uring)
            let rings: Vec<Option<Vec<vmi_core::kernel::iouring::IoUring>>> = procs
                .iter()
                .map(|p| target.kernel.io_urings(p.task).ok())
                .collect();
            emit(
                json,
                render::ps_json(&procs, &exes, &rings),
                render::ps_text(&procs, &rings, *tree),
            )?;
            return Ok(status(damaged));
        }
        Command::Sockets { listening } => {
            let (census, damaged) = census(&target, &limits)?;
            let procs = census.processes;
            let mut rows = Vec::new();
            for p in &procs {
                let mut socks = target.kernel.sockets(p.task).with_context(|| {
                    format!("reading the open files of process {} ({})", p.pid, p.name())
                })?;
                socks.retain(|s| !*listening || s.is_listening());
                if !socks.is_empty() {
                    rows.push((p, socks));
                }
            }
            emit(
                json,
                render::sockets_json(&rows),
                render::sockets_text(&rows),
            )?;
            return Ok(status(damaged));
        }
        Command::Bpf => {
            let (census, damaged) = census(&target, &limits)?;
            let procs = census.processes;
            let view = target
                .kernel
                .bpf(&procs)
                .context("reading the BPF programs")?;
            let holders = render::bpf_holders(&target.kernel, &procs, &view)?;
            emit(
                json,
                render::bpf_json(&view, &holders),
                render::bpf_text(&view, &holders),
            )?;
            return Ok(status(damaged));
        }
        Command::Maps { pid } => {
            let (p, damaged) = process(&target, &limits, *pid)?;
            let maps = target
                .kernel
                .maps(p.mm)
                .with_context(|| format!("reading the mappings of process {pid} ({})", p.name()))?;
            emit(json, render::maps_json(&maps), render::maps_text(&maps))?;
            return Ok(status(damaged));
        }
        Command::Env { pid } => {
            let (p, damaged) = process(&target, &limits, *pid)?;
            let Some(env) = target.kernel.environment(p.mm).with_context(|| {
                format!("reading the environment of process {pid} ({})", p.name())
            })?
            else {
                bail!("process {pid} ({}) has no environment: a kernel thread, or exiting or in execve", p.name());
            };
            emit(
                json,
                detector::evidence::env_json(p.pid, &p.comm, &env),
                detector::evidence::env_text(&env),
            )?;
            return Ok(status(damaged));
        }
        Command::Lsof { pid } => {
            let (p, damaged) = process(&target, &limits, *pid)?;
            let files = target.kernel.lsof(p.task).with_context(|| {
                format!("reading the open files of process {pid} ({})", p.name())
            })?;
            emit(
                json,
                detector::evidence::lsof_json(p.pid, &p.comm, &files),
                detector::evidence::lsof_text(&files),
            )?;
            return Ok(status(damaged));
        }
        Command::Cat {
            path,
            list,
            output,
            max_bytes,
            max_entries,
            root_of,
        } => {
            let (p, damaged) = process(&target, &limits, *root_of)?;
            let bytes = path.as_os_str().as_encoded_bytes();
            let shown = vmi_core::kernel::escape(bytes);
            let entry = match target
                .kernel
                .lookup_cached(p.task, bytes)
                .with_context(|| format!("looking {shown} up in the guest's dentry cache"))?
            {
                Lookup::Found(e) => e,
                Lookup::Negative => bail!(
                    "{shown}: the guest's dentry cache holds it as not existing (a negative dentry)"
                ),
                Lookup::NotCached { found, missing } => bail!(
                    "{shown}: {:?} is not in the guest's dentry cache under {:?} (the guest has not looked it up since its dentries were last reclaimed; it may exist on disk)",
                    vmi_core::kernel::escape(&missing),
                    if found.is_empty() { "/".to_string() } else { vmi_core::kernel::escape(&found) }
                ),
                Lookup::NotDirectory { at } => bail!(
                    "{shown}: {} is not a directory (symbolic links are not followed)",
                    vmi_core::kernel::escape(&at)
                ),
            };
            if *list {
                let entries = target
                    .kernel
                    .cached_children(&entry, *max_entries)
                    .with_context(|| format!("listing {shown}"))?;
                emit(
                    json,
                    detector::evidence::list_json(bytes, &entries),
                    detector::evidence::list_text(&entries),
                )?;
                return Ok(status(damaged));
            }
            let file = target
                .kernel
                .read_cached(entry.inode, *max_bytes)
                .with_context(|| format!("reading {shown} from the page cache"))?;
            let mut warnings: Vec<String> = file
                .missing
                .iter()
                .map(|(a, b)| format!("{shown}: bytes {a}..{b} are not in the page cache"))
                .collect();
            if file.truncated {
                warnings.push(format!(
                    "{shown}: cut at {} of {} bytes (--max-bytes)",
                    file.data.len(),
                    file.size
                ));
            }
            match output {
                Some(out) => write_atomically(out, &file.data)?,
                None => emit(
                    json,
                    detector::evidence::cat_json(bytes, &file),
                    detector::evidence::cat_text(&file),
                )?,
            }
            return Ok(status(warn(&warnings) || damaged));
        }
        Command::DumpProcess {
            pid,
            output,
            max_bytes,
        } => {
            let (p, damaged) = process(&target, &limits, *pid)?;
            let k = &target.kernel;
            let what = || format!("process {pid} ({})", p.name());
            let maps = k
                .maps(p.mm)
                .with_context(|| format!("reading the mappings of {}", what()))?;
            let mut budget = *max_bytes;
            let mut memory = Vec::with_capacity(maps.len());
            for m in &maps {
                memory.push(
                    k.resident_memory(p.mm, m.vma.start, m.vma.end, &mut budget)
                        .with_context(|| format!("reading the memory of {}", what()))?,
                );
            }
            let mut threads = vec![detector::coredump::ThreadRegs {
                tid: p.pid,
                regs: k.user_registers(p.task).ok().flatten(),
            }];
            for t in p.threads.iter().filter(|t| t.tid != p.pid) {
                threads.push(detector::coredump::ThreadRegs {
                    tid: t.tid,
                    regs: k.user_registers(t.task).ok().flatten(),
                });
            }
            let args = k
                .exec_strings(p.mm)
                .ok()
                .flatten()
                .map(|s| s.argv.join(&b' '))
                .unwrap_or_default();
            let core = detector::coredump::ProcessCore {
                pid: p.pid,
                ppid: p.ppid,
                uid_gid: (p.uid, p.gid),
                comm: &p.comm,
                args,
                threads,
                maps: &maps,
                memory,
            };
            let segments: usize = core.memory.iter().map(Vec::len).sum();
            if segments >= detector::coredump::MAX_SEGMENTS {
                bail!(
                    "{}: {segments} runs of resident pages, more than a core's program header count holds ({}); no file written",
                    what(),
                    detector::coredump::MAX_SEGMENTS - 1
                );
            }
            write_atomically(output, &detector::coredump::write(&core))?;
            let resident: usize = core.memory.iter().flatten().map(|r| r.data.len()).sum();
            let text = format!(
                "{}: {} mappings, {resident} resident bytes, {} threads\n",
                output.display(),
                maps.len(),
                core.threads.len()
            );
            emit(
                json,
                serde_json::json!({
                    "pid": p.pid,
                    "output": output.display().to_string(),
                    "mappings": maps.len(),
                    "resident_bytes": resident,
                    "threads": core.threads.len(),
                }),
                text,
            )?;
            return Ok(status(damaged));
        }
        Command::DumpModule {
            module,
            output,
            max_bytes,
        } => {
            use detector::moddump::{self, ModuleSpec};
            let k = &target.kernel;
            let (list, mut warnings) = settled(&target, || {
                let list = k
                    .modules_salvaged(&limits)
                    .context("walking the modules list")?;
                let w = render::module_warnings(&list);
                Ok((list, w))
            })?;
            let hidden: Vec<vmi_core::kernel::Module> =
                match detector::checks::modules::kset_view(k, &list.modules) {
                    Ok(v) => v.hidden.into_iter().map(|h| h.module).collect(),
                    Err(e) => {
                        warnings.push(format!("the module kset could not be read ({e})"));
                        Vec::new()
                    }
                };
            let max = detector::checks::MAX_KOBJECTS;
            let kobjects: Option<Vec<vmi_core::Va>> = match k.module_kobjects(max) {
                Ok(ks) => Some(ks.iter().filter_map(|k| k.module).collect()),
                Err(_) => None, // said above
            };
            // each module is a node per memory region: room for eight each
            let tree = match k.module_tree(max * 8) {
                Ok(t) => t,
                Err(e) => {
                    warnings.push(format!("the module tree could not be read ({e})"));
                    None
                }
            };
            let views = moddump::Views {
                list: &list.modules,
                kset: &hidden,
                kobjects: kobjects.as_deref(),
                tree: tree.as_deref(),
            };
            let spec = ModuleSpec::parse(module);
            let shown = vmi_core::kernel::escape(module.as_bytes());
            let Some((m, views)) = moddump::find(k, views, &spec) else {
                warn(&warnings);
                bail!("no module {shown} on the modules list, in /sys/module or in the module tree (an address must be in a module's memory or of a struct module)");
            };
            let name = m.display_name();
            let image = k
                .module_image(&m, *max_bytes)
                .with_context(|| format!("reading the memory of module {name}"))?;
            warnings.extend(moddump::warnings(&image));
            let file = moddump::write(&image)
                .with_context(|| format!("making the ELF file of module {name}"))?;
            for (a, b) in &file.missing {
                warnings.push(format!(
                    "module {name}: {a:#x}..{b:#x} is not mapped: zeros written"
                ));
            }
            write_atomically(output, &file.bytes)?;
            emit(
                json,
                detector::evidence::dump_module_json(&m, &views, output, &file),
                detector::evidence::dump_module_text(&m, &views, output, &file),
            )?;
            return Ok(status(warn(&warnings)));
        }
        Command::Lsmod => {
            let (list, warnings) = settled(&target, || {
                let list = target
                    .kernel
                    .modules_salvaged(&limits)
                    .context("walking the modules list")?;
                let w = render::module_warnings(&list);
                Ok((list, w))
            })?;
            emit(
                json,
                render::lsmod_json(&list.modules),
                render::lsmod_text(&list.modules),
            )?;
            return Ok(status(warn(&warnings)));
        }
        Command::Check { pause, .. } => {
            let report = check(&target, &wanted, *pause, &settings)?;
            emit(
                json,
                render::report_json(&report),
                render::report_text(&report),
            )?;
            return Ok(if !report.findings.is_empty() {
                ExitCode::from(1)
            } else if !report.errors.is_empty() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            });
        }
        Command::Watch { .. } | Command::Serve { .. } | Command::Verify { .. } => {
            unreachable!("watch, serve and verify returned above")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Write `data` to `path` whole or not at all (a temporary file beside it, renamed).
fn write_atomically(path: &std::path::Path, data: &[u8]) -> Result<()> {
    let mut file = atomic_write_file::AtomicWriteFile::open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(data)
        .and_then(|()| file.commit())
        .with_context(|| format!("writing {}", path.display()))
}

/// The process `pid` of any view ([`census`]), with whether a view was broken.
fn process(
    target: &Target,
    limits: &Limits,
    pid: u32,
) -> Result<(vmi_core::kernel::Process, bool)> {
    let (census, damaged) = census(target, limits)?;
    let Some(p) = census.processes.into_iter().find(|p| p.pid == pid) else {
        bail!("no process {pid} in the tasks list, the pid namespace or on a CPU");
    };
    Ok((p, damaged))
}

/// The processes of every view ([`vmi_core::kernel::Kernel::census`]); what is broken
/// or hidden is said on stderr, and the flag is true when something was.
fn census(target: &Target, limits: &Limits) -> Result<(vmi_core::kernel::Census, bool)> {
    let (c, warnings) = settled(target, || {
        let c = target
            .kernel
            .census(limits)
            .context("reading the processes")?;
        let w = render::census_warnings(&c);
        Ok((c, w))
    })?;
    Ok((c, warn(&warnings)))
}

/// `read` (a view and its warnings), read again while it warns (at most
/// [`checks::READ_TRIES`] times, as the checks read a running guest): the guest changes
/// under a walk (a task forked between the read of the tasks list and that of the pid
/// IDR looks hidden once, a module being unloaded breaks the list once); a warning still
/// there on the last read is the guest's state.
fn settled<T>(
    target: &Target,
    mut read: impl FnMut() -> Result<(T, Vec<String>)>,
) -> Result<(T, Vec<String>)> {
    checks::reread(&target.kernel, checks::READ_TRIES, || match read() {
        Ok((v, w)) if w.is_empty() => Ok((v, w)),
        other => Err(Box::new(other)),
    })
    .or_else(|last| *last)
}

/// Say each of `lines` on stderr as a warning; true when there was one.
fn warn(lines: &[String]) -> bool {
    let mut err = std::io::stderr().lock();
    for l in lines {
        let _ = writeln!(err, "detector: warning: {l}");
    }
    !lines.is_empty()
}

/// Exit status 1 when what was printed comes with warnings of a damaged or hiding
/// kernel, 0 otherwise (2 is for nothing read at all).
fn status(damaged: bool) -> ExitCode {
    if damaged {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Where watch events go: stdout (text, or the JSON lines serve writes too), the alert
/// file (JSON lines), and a spinner on a terminal.
struct Sink {
    json: bool,
    /// The guest's name in JSON lines.
    guest: String,
    alerts: Option<AlertFile>,
    spinner: Option<indicatif::ProgressBar>,
}

impl Sink {
    fn emit(&mut self, events: &[Event]) -> Result<()> {
        for e in events {
            let rec = Record::watch(&self.guest, e);
            let line = rec.to_line(SystemTime::now());
            if self.json {
                events::print_line(&line)?;
            } else {
                let mut out = std::io::stdout().lock();
                match &self.spinner {
                    Some(s) => s.suspend(|| writeln!(out, "{}", e.to_text()))?,
                    None => writeln!(out, "{}", e.to_text())?,
                }
                out.flush()?;
            }
            if rec.alert {
                if let Some(f) = &mut self.alerts {
                    f.append(&line).context("writing the alert file")?;
                }
            }
        }
        Ok(())
    }
}

/// Where `watch` writes besides standard output, and the guest's name there.
struct WatchOutput<'a> {
    alerts: Option<&'a PathBuf>,
    name: Option<&'a str>,
}

fn run_watch(
    cli: &Cli,
    opts: WatchOptions,
    interval: Duration,
    out: WatchOutput<'_>,
    on_shutdown: OnShutdown,
    max_scans: Option<u64>,
) -> Result<ExitCode> {
    install_signal_handlers();
    let alerts = match out.alerts {
        Some(p) => Some(AlertFile::open(p)?),
        None => None,
    };
    let spinner = (!cli.opts.json && std::io::stderr().is_terminal()).then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.enable_steady_tick(Duration::from_millis(200));
        s
    });
    let stop = || STOP.load(Ordering::SeqCst);
    let mut target = open(&cli.opts)?;
    // named once: a guest that comes back (--on-shutdown wait) keeps its name
    let guest = match out.name {
        Some(n) => vmi_core::kernel::escape(n.as_bytes()),
        None => target.name(),
    };
    let mut sink = Sink {
        json: cli.opts.json,
        guest,
        alerts,
        spinner,
    };
    let mut opts = opts;
    opts.settings.image = open_image(&cli.opts, &target)?;
    let mut watcher = Watcher::new(opts.clone());
    let reason = loop {
        let t = Instant::now();
        let tick = watcher.tick(&mut target);
        let gone = matches!(tick, Tick::Gone(_));
        let (Tick::Continue(events) | Tick::Gone(events)) = tick;
        sink.emit(&events)?;
        if let Some(s) = &sink.spinner {
            s.set_message(format!("scan {} in {:.1?}", watcher.scans(), t.elapsed()));
        }
        if gone {
            if on_shutdown == OnShutdown::Exit {
                break "the guest is gone".to_string();
            }
            // wait for a guest at the same socket
            let next = loop {
                watch::sleep_until(Instant::now() + interval, &stop);
                if stop() {
                    break None;
                }
                if let Ok(t) = open(&cli.opts) {
                    break Some(t);
                }
            };
            match next {
                Some(t) => {
                    target = t;
                    watcher = Watcher::new(opts.clone());
                    continue;
                }
                None => break "signal".to_string(),
            }
        }
        if max_scans.is_some_and(|m| watcher.scans() >= m) {
            break format!("{} scans done", watcher.scans());
        }
        watch::sleep_until(t + interval, &stop);
        if stop() {
            break "signal".to_string();
        }
    };
    if let Some(s) = sink.spinner.take() {
        s.finish_and_clear();
    }
    sink.emit(&[Event::Stopped {
        scans: watcher.scans(),
        reason,
    }])?;
    Ok(ExitCode::SUCCESS)
}

fn check(target: &Target, wanted: &[Check], pause: bool, settings: &Settings) -> Result<Report> {
    let guard = if pause { target.pause()? } else { None };
    let first = checks::run_once(&target.kernel, &target.registers, wanted, settings);
    if guard.is_some() || !target.is_live() || first.findings.is_empty() {
        if let Some(g) = guard {
            g.resume().context("resuming the guest")?;
        }
        return Ok(first);
    }
    // a running guest: what a second read confirms is real
    target.kernel.invalidate();
    let second = checks::run_once(&target.kernel, &target.registers, wanted, settings);
    Ok(checks::confirmed(first, &second))
}

fn main() -> ExitCode {
    let cli: Cli = match cli_docs::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            // stdout or stderr may be gone (a closed pipe is one way to fail): no panic
            if cli.opts.json {
                let v = serde_json::json!({ "error": cli_docs::error_text(e.as_ref()) });
                let _ = writeln!(std::io::stdout(), "{v}");
            }
            let _ = writeln!(
                std::io::stderr(),
                "detector: {}",
                cli_docs::error_text(e.as_ref())
            );
            ExitCode::from(2)
        }
    }
}
