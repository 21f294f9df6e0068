//! A booted lab guest: QEMU (TCG) with guest RAM in a shareable file, a QMP socket, the
//! serial console in a log file and the lab channel (second serial port) to the guest
//! worker.
//!
//! A [`Guest`] owns its QEMU process: dropping it kills QEMU and removes the RAM file,
//! also during a panic. QEMU is started from a helper thread that lives as long as the
//! process and gets `PR_SET_PDEATHSIG`, so it also dies when the test process is killed.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use atomic_write_file::AtomicWriteFile;
use serde_json::json;

use crate::error::{Error, IoContext, Result};
use crate::qmp::Qmp;
use crate::scenario::Scenario;
use crate::store::KernelImage;
use crate::tools::{self, QEMU};
use crate::truth::{self, escape, unescape, GroundTruth};

/// Lines of console shown in errors.
pub const CONSOLE_TAIL: usize = 50;

/// How to boot a guest.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Leave KASLR on (the default); `false` boots with `nokaslr`.
    pub kaslr: bool,
    /// Offer 5-level paging (LA57) to the guest.
    pub five_level_paging: bool,
    /// How long to wait for READY.
    pub timeout: Duration,
    /// Extra kernel command-line words.
    pub append: Vec<String>,
    /// The accelerator: `tcg` (default; `VMI_LAB_ACCEL` overrides) or `kvm`.
    pub accel: String,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            memory_mib: 1024,
            cpus: 1,
            kaslr: true,
            five_level_paging: false,
            timeout: Duration::from_secs(600),
            append: Vec::new(),
            accel: std::env::var("VMI_LAB_ACCEL").unwrap_or_else(|_| "tcg".into()),
        }
    }
}

/// One range of guest-physical RAM and where it is in the RAM file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRange {
    /// First guest-physical address.
    pub start: u64,
    /// One past the last guest-physical address.
    pub end: u64,
    /// Offset of `start` in the RAM file.
    pub file_offset: u64,
}

/// Output of a shell command run in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellOutput {
    /// Exit status (128 + signal for a killed command).
    pub status: i32,
    /// Lines it printed (stdout and stderr together).
    pub lines: Vec<String>,
}

enum ChanMsg {
    Line(String),
    Closed,
}

/// The host end of a lab channel: lines from the guest worker arrive on a reader thread;
/// ground-truth blocks, shell commands and file copies are framed over it. Shared by
/// [`Guest`] and the Xen rig's guests.
pub(crate) struct Channel {
    writer: UnixStream,
    rx: Receiver<ChanMsg>,
}

impl Channel {
    /// Start reading `stream` on a thread named `name`.
    pub(crate) fn spawn(stream: UnixStream, name: &str, what: &Path) -> Result<Channel> {
        let reader = stream.try_clone().ctx("cloning", what)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut r = BufReader::new(reader);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => {
                            let _ = tx.send(ChanMsg::Closed);
                            return;
                        }
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&buf)
                                .trim_end_matches(['\n', '\r'])
                                .to_string();
                            if tx.send(ChanMsg::Line(line)).is_err() {
                                return;
                            }
                        }
                    }
                }
            })
            .ctx("starting channel reader for", what)?;
        Ok(Channel { writer: stream, rx })
    }

    pub(crate) fn send(&mut self, line: &str) -> Result<()> {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| Error::Channel(format!("sending {line:?}: {e}")))
    }

    /// Drop the lines received so far (what a previous user of the channel left).
    pub(crate) fn drain(&mut self) {
        while let Ok(ChanMsg::Line(_)) = self.rx.try_recv() {}
    }

    fn next_line(&mut self, deadline: Instant) -> Result<Option<String>> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(ChanMsg::Line(l)) => Ok(Some(l)),
            Ok(ChanMsg::Closed) | Err(RecvTimeoutError::Disconnected) => {
                Err(Error::Channel("the guest closed the lab channel".into()))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
        }
    }

    /// Read one ground-truth block (and, with `ready`, the READY line after it) by
    /// `deadline`. Every half second `alive` may report that the guest is gone; a timeout
    /// becomes the error `timed_out` makes. Lines outside a block (console text when the
    /// channel is a console) are passed to `other`.
    pub(crate) fn read_truth(
        &mut self,
        deadline: Instant,
        ready: bool,
        alive: &mut dyn FnMut() -> Option<Error>,
        timed_out: &dyn Fn() -> Error,
        other: &mut dyn FnMut(&str),
    ) -> Result<GroundTruth> {
        let mut block = String::new();
        let mut inside = false;
        let mut done = false;
        loop {
            let line =
                match self.next_line(deadline.min(Instant::now() + Duration::from_millis(500))) {
                    Ok(Some(l)) => l,
                    Ok(None) => {
                        if let Some(e) = alive() {
                            return Err(e);
                        }
                        if Instant::now() >= deadline {
                            return Err(timed_out());
                        }
                        continue;
                    }
                    Err(e) => {
                        return Err(alive().unwrap_or(e));
                    }
                };
            if line == truth::BEGIN {
                inside = true;
                block.clear();
            }
            if inside {
                block.push_str(&line);
                block.push('\n');
                if line.starts_with(truth::END) {
                    inside = false;
                    done = true;
                    if !ready {
                        break;
                    }
                }
            } else if done && line == "@@READY" {
                break;
            } else {
                other(&line);
            }
        }
        GroundTruth::parse(&block)
    }

    /// Run a shell command in the guest and wait for its output and status.
    pub(crate) fn sh_timeout(&mut self, command: &str, timeout: Duration) -> Result<ShellOutput> {
        self.send(&format!("sh {}", escape(command.as_bytes())))?;
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let Some(line) = self.next_line(deadline)? else {
                return Err(Error::Channel(format!(
                    "no reply to {command:?} within {}s",
                    timeout.as_secs()
                )));
            };
            if let Some(out) = line.strip_prefix("@@OUT ") {
                lines.push(String::from_utf8_lossy(&unescape(out)).into_owned());
            } else if let Some(status) = line.strip_prefix("@@EXIT ") {
                let status = status
                    .trim()
                    .parse()
                    .map_err(|_| Error::Channel(format!("bad exit line {line:?}")))?;
                return Ok(ShellOutput { status, lines });
            }
        }
    }

    /// Copy a file out of the guest (gzip + base64 over the channel). The gzip CRC
    /// checks what arrived; a damaged copy is read again, up to three times in all (one
    /// copy of a 5 MB BTF file in a few hundred CI runs arrived with a base64 character
    /// changed, on a machine loaded with other guests).
    pub(crate) fn read_file(&mut self, path: &str) -> Result<Vec<u8>> {
        let mut last = None;
        for _ in 0..3 {
            match self.read_file_once(path) {
                Ok(data) => return Ok(data),
                Err(e @ Error::Channel(_)) if e.to_string().contains("the guest sent a bad") => {
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Channel(format!("{path}: no copy arrived intact"))))
    }

    fn read_file_once(&mut self, path: &str) -> Result<Vec<u8>> {
        let out = self.sh_timeout(
            &format!("gzip -c {} | base64", quote(path)?),
            Duration::from_secs(300),
        )?;
        if out.status != 0 {
            return Err(Error::Channel(format!(
                "reading {path} in the guest failed (status {}): {}",
                out.status,
                out.lines.join(" / ")
            )));
        }
        let packed = base64_decode(&out.lines.concat())
            .ok_or_else(|| Error::Channel(format!("{path}: the guest sent bad base64")))?;
        let mut data = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut data)
            .map_err(|e| {
                Error::Channel(format!("{path}: the guest sent a bad gzip stream: {e}"))
            })?;
        Ok(data)
    }
}

/// A running lab guest.
pub struct Guest {
    child: Option<Child>,
    run_dir: tempfile::TempDir,
    ram_path: PathBuf,
    /// The lab's QMP session; `None` after [`Guest::release_qmp`] until next needed.
    qmp: Option<Qmp>,
    channel: Channel,
    truth: GroundTruth,
    memory_map: Vec<RamRange>,
    abi: String,
    boot_time: Duration,
    ram_size: u64,
}

impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guest")
            .field("abi", &self.abi)
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("ram_path", &self.ram_path)
            .finish_non_exhaustive()
    }
}

type SpawnRequest = (Command, Sender<std::io::Result<Child>>);

/// QEMU is spawned from one thread that never exits, so PR_SET_PDEATHSIG (which fires
/// when the *thread* that forked exits) only fires when the whole process goes.
fn spawner() -> &'static Mutex<Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("vmi-lab-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawning the lab's spawner thread");
        Mutex::new(tx)
    })
}

pub(crate) fn spawn_tied(mut cmd: Command) -> std::io::Result<Child> {
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork
    // and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() == 1 {
                // the parent is already gone
                return Err(std::io::Error::other("parent exited before exec"));
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .map_err(|_| std::io::Error::other("spawner lock poisoned"))?
        .send((cmd, tx))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?
}

/// Directory for guest RAM files: /dev/shm when it exists (so a reader maps RAM, not disk).
fn ram_dir(fallback: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        fallback.to_path_buf()
    }
}

/// Remove RAM files of lab processes that no longer exist (killed before their Drop ran).
fn remove_stale_ram_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("vmi-lab-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = fs::remove_file(e.path());
        }
    }
}

static GUEST_SEQ: AtomicU32 = AtomicU32::new(0);

impl Guest {
    /// Boot `kernel` with the initramfs at `initramfs` and wait for READY.
    pub fn boot(kernel: &KernelImage, initramfs: &Path, opts: &BootOptions) -> Result<Guest> {
        let qemu = QEMU.find()?;
        let run_dir = tempfile::Builder::new()
            .prefix("vmi-lab-")
            .tempdir()
            .ctx("creating run directory in", std::env::temp_dir())?;
        let dir = run_dir.path();
        let shm = ram_dir(dir);
        remove_stale_ram_files(&shm);
        let ram_path = shm.join(format!(
            "vmi-lab-{}-{}.ram",
            std::process::id(),
            GUEST_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let console = dir.join("console.log");
        let qmp_sock = dir.join("qmp.sock");
        let lab_sock = dir.join("lab.sock");
        let stderr_path = dir.join("qemu.stderr");
        let listener = UnixListener::bind(&lab_sock).ctx("listening on", &lab_sock)?;
        listener
            .set_nonblocking(true)
            .ctx("configuring", &lab_sock)?;

        let mut append = vec![
            "console=ttyS0".to_string(),
            "panic=-1".into(),
            "loglevel=4".into(),
            "8250.nr_uarts=2".into(),
        ];
        if !opts.kaslr {
            append.push("nokaslr".into());
        }
        append.extend(opts.append.iter().cloned());
        let cpu = if opts.five_level_paging {
            "max,la57=on"
        } else {
            "max,la57=off"
        };
        let mut cmd = Command::new(qemu);
        cmd.args(["-name", &format!("vmi-lab-{}", kernel.abi)])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .args(["-accel", &opts.accel, "-cpu", cpu])
            .args(["-smp", &opts.cpus.to_string()])
            .args(["-m", &format!("{}M", opts.memory_mib)])
            .arg("-object")
            .arg(format!(
                "memory-backend-file,id=lab-ram,size={}M,mem-path={},share=on",
                opts.memory_mib,
                ram_path.display()
            ))
            .args(["-machine", "pc,memory-backend=lab-ram"])
            .args(["-device", "vmcoreinfo"])
            .arg("-kernel")
            .arg(&kernel.vmlinuz)
            .arg("-initrd")
            .arg(initramfs)
            .args(["-append", &append.join(" ")])
            .arg("-chardev")
            .arg(format!("file,id=con,path={}", console.display()))
            .args(["-serial", "chardev:con"])
            .arg("-chardev")
            .arg(format!("socket,id=lab,path={}", lab_sock.display()))
            .args(["-serial", "chardev:lab"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr_path).ctx("creating", &stderr_path)?);
        let start = Instant::now();
        let child = spawn_tied(cmd).ctx("starting", "qemu-system-x86_64")?;
        let mut guest_child = Some(child);

        // From here on, any error must kill QEMU: wrap the pieces in a guard.
        let result = (|| {
            let stream = accept_until(&listener, Duration::from_secs(60), || {
                exited(&mut guest_child)
            })
            .map_err(|e| with_exit(e, &mut guest_child, &console, &stderr_path))?;
            let qmp = Qmp::connect(&qmp_sock, Duration::from_secs(60))?;
            Ok::<_, Error>((stream, qmp))
        })();
        let (stream, mut qmp) = match result {
            Ok(v) => v,
            Err(e) => {
                kill(&mut guest_child);
                let _ = fs::remove_file(&ram_path);
                return Err(e);
            }
        };
        let channel = match Channel::spawn(stream, "vmi-lab-channel", &lab_sock) {
            Ok(c) => c,
            Err(e) => {
                kill(&mut guest_child);
                let _ = fs::remove_file(&ram_path);
                return Err(e);
            }
        };
        let memory_map = match qmp.hmp("info mtree -f") {
            Ok(text) => parse_memory_map(&text, "lab-ram"),
            Err(e) => {
                kill(&mut guest_child);
                let _ = fs::remove_file(&ram_path);
                return Err(e);
            }
        };
        let mut guest = Guest {
            child: guest_child,
            run_dir,
            ram_path,
            qmp: Some(qmp),
            channel,
            truth: GroundTruth::default(),
            memory_map,
            abi: kernel.abi.clone(),
            boot_time: Duration::ZERO,
            ram_size: u64::from(opts.memory_mib) << 20,
        };
        let deadline = start + opts.timeout;
        guest.truth = guest.read_truth(deadline, opts.timeout, true)?;
        guest.boot_time = start.elapsed();
        Ok(guest)
    }

    /// Build the scenario's initramfs in the run directory of a new guest and boot it.
    pub fn boot_scenario(
        kernel: &KernelImage,
        scenario: &Scenario,
        worker: &Path,
        opts: &BootOptions,
    ) -> Result<Guest> {
        let busybox = tools::static_busybox()?;
        let dir = tempfile::Builder::new()
            .prefix("vmi-lab-initramfs-")
            .tempdir()
            .ctx("creating a directory in", std::env::temp_dir())?;
        let initramfs = dir.path().join("initramfs.cpio");
        scenario.build_initramfs(
            worker,
            &busybox,
            kernel.fw_cfg_module.as_deref(),
            &initramfs,
        )?;
        Guest::boot(kernel, &initramfs, opts)
    }

    /// Read one ground-truth block from the channel (and, with `ready`, the READY line
    /// after it).
    fn read_truth(
        &mut self,
        deadline: Instant,
        total: Duration,
        ready: bool,
    ) -> Result<GroundTruth> {
        let console = self.console_path();
        let stderr = self.run_dir.path().join("qemu.stderr");
        let Guest { channel, child, .. } = self;
        boot_truth(channel, child, &console, &stderr, deadline, total, ready)
    }

    /// The ground truth the guest reported when it became ready.
    pub fn truth(&self) -> &GroundTruth {
        &self.truth
    }

    /// Ask the guest for a fresh ground-truth block.
    pub fn refresh_truth(&mut self) -> Result<GroundTruth> {
        self.channel.send("truth")?;
        let total = Duration::from_secs(300);
        self.read_truth(Instant::now() + total, total, false)
    }

    /// Run a shell command in the guest (busybox sh, as root), wait for it and return its
    /// output. Start long-running programs with `&`.
    pub fn sh(&mut self, command: &str) -> Result<ShellOutput> {
        self.sh_timeout(command, Duration::from_secs(300))
    }

    /// [`Guest::sh`] with a timeout.
    pub fn sh_timeout(&mut self, command: &str, timeout: Duration) -> Result<ShellOutput> {
        self.channel.sh_timeout(command, timeout)
    }

    /// Copy a file out of the guest (e.g. `/proc/kallsyms`, `/sys/kernel/btf/vmlinux`):
    /// the guest sends it gzip-compressed and base64-encoded over the lab channel, which
    /// carries text lines. Several MB take a few seconds under TCG.
    pub fn read_file(&mut self, path: &str) -> Result<Vec<u8>> {
        self.channel.read_file(path)
    }

    /// The kernel's ABI name.
    pub fn abi(&self) -> &str {
        &self.abi
    }

    /// Time from starting QEMU to READY.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// The QMP socket (this object holds a session on it; QEMU accepts one at a time, so
    /// other clients connect after [`Guest::release_qmp`] or use this object).
    pub fn qmp_socket(&self) -> PathBuf {
        self.run_dir.path().join("qmp.sock")
    }

    /// Close the lab's QMP session so another client (a VMI tool under test) can
    /// connect to [`Guest::qmp_socket`]; the lab reconnects when it next needs QMP
    /// (pause, resume, dumps, ...), so that client must have disconnected by then.
    pub fn release_qmp(&mut self) {
        self.qmp = None;
    }

    /// The lab's QMP session, reconnected after [`Guest::release_qmp`].
    fn qmp_session(&mut self) -> Result<&mut Qmp> {
        if self.qmp.is_none() {
            self.qmp = Some(Qmp::connect(&self.qmp_socket(), Duration::from_secs(60))?);
        }
        match self.qmp.as_mut() {
            Some(q) => Ok(q),
            None => Err(Error::Channel("no QMP session".into())),
        }
    }

    /// Run a QMP command on the guest's QEMU.
    pub fn qmp(
        &mut self,
        command: &str,
        arguments: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        self.qmp_session()?.execute(command, arguments)
    }

    /// The guest RAM file (shared mapping of all guest RAM; see [`Guest::memory_map`]).
    pub fn ram_path(&self) -> &Path {
        &self.ram_path
    }

    /// Guest RAM size in bytes.
    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    /// Guest-physical RAM ranges and their offsets in the RAM file.
    pub fn memory_map(&self) -> &[RamRange] {
        &self.memory_map
    }

    /// QEMU's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The serial console log.
    pub fn console_path(&self) -> PathBuf {
        self.run_dir.path().join("console.log")
    }

    /// The last `n` console lines.
    pub fn console_tail(&self, n: usize) -> String {
        console_tail(&self.console_path(), n)
    }

    /// Stop the guest's vCPUs.
    pub fn pause(&mut self) -> Result<()> {
        self.qmp_session()?.execute("stop", None).map(|_| ())
    }

    /// Resume the guest's vCPUs.
    pub fn resume(&mut self) -> Result<()> {
        self.qmp_session()?.execute("cont", None).map(|_| ())
    }

    /// True when the vCPUs run.
    pub fn is_running(&mut self) -> Result<bool> {
        let status = self.qmp_session()?.execute("query-status", None)?;
        Ok(status
            .get("running")
            .and_then(|v| v.as_bool())
            .unwrap_or(false))
    }

    /// Write an ELF core of guest memory (QMP `dump-guest-memory`, paging off; with the
    /// guest's VMCOREINFO note when its fw_cfg driver handed it over). Written atomically.
    pub fn dump_elf(&mut self, path: &Path) -> Result<()> {
        let tmp = temp_beside(path)?;
        let r = self.qmp_session()?.execute_timeout(
            "dump-guest-memory",
            Some(json!({ "paging": false, "protocol": format!("file:{}", tmp.display()) })),
            Duration::from_secs(900),
        );
        if let Err(e) = r {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, path).ctx("renaming dump to", path)
    }

    /// Write a raw physical image (file offset = guest-physical address, holes as
    /// zeros, sparse) while the guest is paused. Written atomically.
    pub fn dump_raw(&mut self, path: &Path) -> Result<()> {
        self.dump_with(path, |ram, out, map| {
            let end = map.iter().map(|r| r.end).max().unwrap_or(0);
            out.set_len(end)?;
            for r in map {
                out.seek(SeekFrom::Start(r.start))?;
                copy_range(ram, out, r.file_offset, r.end - r.start)?;
            }
            Ok(())
        })
    }

    /// Write a LiME image (one header per RAM range, then its bytes) while the guest is
    /// paused. Written atomically.
    pub fn dump_lime(&mut self, path: &Path) -> Result<()> {
        self.dump_with(path, |ram, out, map| {
            for r in map {
                out.write_all(&lime_header(r.start, r.end))?;
                copy_range(ram, out, r.file_offset, r.end - r.start)?;
            }
            Ok(())
        })
    }

    fn dump_with(
        &mut self,
        path: &Path,
        write: impl FnOnce(&mut File, &mut File, &[RamRange]) -> std::io::Result<()>,
    ) -> Result<()> {
        let was_running = self.is_running()?;
        if was_running {
            self.pause()?;
        }
        let result = (|| {
            let mut ram = File::open(&self.ram_path).ctx("opening", &self.ram_path)?;
            let mut out = AtomicWriteFile::open(path).ctx("creating", path)?;
            write(&mut ram, out.as_file_mut(), &self.memory_map).ctx("writing dump", path)?;
            out.commit().ctx("renaming dump to", path)
        })();
        if was_running {
            self.resume()?;
        }
        result
    }

    /// Power the guest off cleanly and wait for QEMU to exit (QMP `quit`, then a kill,
    /// if it does not within a minute).
    pub fn shutdown(mut self) -> Result<()> {
        let _ = self.channel.send("poweroff");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if exited(&mut self.child) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Ok(qmp) = self.qmp_session() {
            let _ = qmp.execute("quit", None);
        }
        std::thread::sleep(Duration::from_secs(2));
        if exited(&mut self.child) {
            return Ok(());
        }
        Err(Error::Channel(
            "the guest did not power off within 60 s; QEMU was killed".into(),
        ))
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        kill(&mut self.child);
        let _ = fs::remove_file(&self.ram_path);
    }
}

/// Read a ground-truth block from the channel of the guest QEMU `child` runs: QEMU
/// exiting is an error with its console and stderr, a timeout one with the console.
pub(crate) fn boot_truth(
    channel: &mut Channel,
    child: &mut Option<Child>,
    console: &Path,
    stderr: &Path,
    deadline: Instant,
    total: Duration,
    ready: bool,
) -> Result<GroundTruth> {
    channel.read_truth(
        deadline,
        ready,
        &mut || {
            exited(child)
                .then(|| with_exit(Error::Channel("QEMU exited".into()), child, console, stderr))
        },
        &|| Error::BootTimeout {
            timeout: total,
            console: console_tail(console, CONSOLE_TAIL),
        },
        &mut |_| {},
    )
}

pub(crate) fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// True when the child has exited (it stays in the Option so its status can be read).
pub(crate) fn exited(child: &mut Option<Child>) -> bool {
    match child {
        Some(c) => !matches!(c.try_wait(), Ok(None)),
        None => true,
    }
}

pub(crate) fn with_exit(
    e: Error,
    child: &mut Option<Child>,
    console: &Path,
    stderr: &Path,
) -> Error {
    if let Some(c) = child {
        if let Ok(Some(status)) = c.try_wait() {
            return Error::QemuExited {
                status: status.to_string(),
                console: console_tail(console, CONSOLE_TAIL),
                stderr: tools::tail(&fs::read_to_string(stderr).unwrap_or_default(), 20),
            };
        }
    }
    e
}

pub(crate) fn accept_until(
    listener: &UnixListener,
    timeout: Duration,
    mut gone: impl FnMut() -> bool,
) -> Result<UnixStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)
                    .map_err(|e| Error::Channel(e.to_string()))?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if gone() {
                    return Err(Error::Channel("QEMU exited before connecting".into()));
                }
                if Instant::now() >= deadline {
                    return Err(Error::Channel(format!(
                        "QEMU did not connect the lab channel within {}s",
                        timeout.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(Error::Channel(format!("accepting: {e}"))),
        }
    }
}

pub(crate) fn console_tail(path: &Path, n: usize) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    // console text comes from the guest: keep it printable
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .map(|c| if c.is_control() && c != '\n' { '.' } else { c })
        .collect();
    tools::tail(&text, n)
}

fn temp_beside(path: &Path) -> Result<PathBuf> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dump".into());
    if !dir.is_dir() {
        return Err(Error::Io {
            what: "writing into",
            path: dir.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    Ok(dir.join(format!(".{name}.partial-{}", std::process::id())))
}

fn copy_range(ram: &mut File, out: &mut File, offset: u64, len: u64) -> std::io::Result<()> {
    ram.seek(SeekFrom::Start(offset))?;
    let copied = std::io::copy(&mut ram.take(len), out)?;
    if copied != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("RAM file ended after {copied} of {len} bytes at offset {offset:#x}"),
        ));
    }
    Ok(())
}

/// `word` quoted for a guest's (or dom0's) shell, for a command built with `format!`.
pub fn quote(word: &str) -> Result<std::borrow::Cow<'_, str>> {
    shlex::try_quote(word)
        .map_err(|e| Error::Channel(format!("{word:?} cannot be given to a shell: {e}")))
}

/// Decode standard base64 (RFC 4648, padding optional; whitespace is not allowed).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::engine::{general_purpose, DecodePaddingMode, Engine as _, GeneralPurpose};
    const STANDARD_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        general_purpose::PAD.with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    STANDARD_ANY_PADDING.decode(text).ok()
}

/// The LiME range header: magic "EMiL" (0x4C694D45 little-endian), version 1, first and
/// last (inclusive) physical address, 8 reserved bytes.
pub fn lime_header(start: u64, end: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[0..4].copy_from_slice(&0x4C69_4D45u32.to_le_bytes());
    h[4..8].copy_from_slice(&1u32.to_le_bytes());
    h[8..16].copy_from_slice(&start.to_le_bytes());
    h[16..24].copy_from_slice(&(end - 1).to_le_bytes());
    h
}

/// Parse the RAM ranges backed by `backend` from `info mtree -f` (the flat view of the
/// "memory" address space), merging ranges that are contiguous in both address spaces.
pub fn parse_memory_map(mtree: &str, backend: &str) -> Vec<RamRange> {
    let mut ranges: Vec<RamRange> = Vec::new();
    let mut in_memory_view = false;
    for line in mtree.lines() {
        let t = line.trim();
        if t.starts_with("FlatView") {
            in_memory_view = false;
            continue;
        }
        if t.starts_with("AS \"memory\"") {
            in_memory_view = true;
            continue;
        }
        if !in_memory_view {
            continue;
        }
        // 0000000000100000-000000003fffffff (prio 0, ram): lab-ram @0000000000100000
        let Some((span, rest)) = t.split_once(' ') else {
            continue;
        };
        let Some((a, b)) = span.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(last)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        let Some((kind, name)) = rest.split_once("): ") else {
            continue;
        };
        if !(kind.ends_with("ram") || kind.ends_with("rom")) {
            continue;
        }
        let mut words = name.split_whitespace();
        if words.next() != Some(backend) {
            continue;
        }
        let offset = words
            .next()
            .and_then(|w| w.strip_prefix('@'))
            .and_then(|w| u64::from_str_radix(w, 16).ok())
            .unwrap_or(0);
        let r = RamRange {
            start,
            end: last + 1,
            file_offset: offset,
        };
        match ranges.last_mut() {
            Some(prev)
                if prev.end == r.start
                    && prev.file_offset + (prev.end - prev.start) == r.file_offset =>
            {
                prev.end = r.end;
            }
            _ => ranges.push(r),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTREE: &str = "FlatView #0\n AS \"memory\", root: system\n AS \"cpu-memory-0\", root: system\n Root memory region: system\n  0000000000000000-000000000009ffff (prio 0, ram): lab-ram\n  00000000000a0000-00000000000bffff (prio 1, i/o): vga-lowmem\n  00000000000c0000-00000000000cafff (prio 0, rom): lab-ram @00000000000c0000\n  00000000000cb000-00000000000cdfff (prio 0, ram): lab-ram @00000000000cb000\n  0000000000100000-000000003fffffff (prio 0, ram): lab-ram @0000000000100000\n  0000000100000000-000000013fffffff (prio 0, ram): lab-ram @00000000c0000000\n  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios\n\nFlatView #1\n AS \"cpu-smm-0\", root: memory\n  0000000000000000-00000000000bffff (prio 0, ram): lab-ram\n";

    #[test]
    fn memory_map_from_mtree() {
        let m = parse_memory_map(MTREE, "lab-ram");
        assert_eq!(
            m,
            vec![
                RamRange {
                    start: 0,
                    end: 0xa0000,
                    file_offset: 0
                },
                RamRange {
                    start: 0xc0000,
                    end: 0xce000,
                    file_offset: 0xc0000
                },
                RamRange {
                    start: 0x100000,
                    end: 0x40000000,
                    file_offset: 0x100000
                },
                RamRange {
                    start: 0x1_0000_0000,
                    end: 0x1_4000_0000,
                    file_offset: 0xc000_0000
                },
            ]
        );
    }

    #[test]
    fn quoted_words_reach_the_shell_as_one_word() {
        let word = "/tmp/a b;$(reboot)'\"`x`";
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("printf %s {}", quote(word).unwrap())])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), word);
        assert!(quote("a\0b").is_err());
    }

    #[test]
    fn base64_decodes_rfc4648_vectors() {
        for (text, want) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYmFy", "foobar"),
        ] {
            assert_eq!(base64_decode(text).unwrap(), want.as_bytes(), "{text}");
        }
        assert!(base64_decode("Zm9v YmFy").is_none());
    }

    #[test]
    fn lime_header_layout() {
        let h = lime_header(0x1000, 0x2000);
        assert_eq!(&h[0..4], &[0x45, 0x4d, 0x69, 0x4c]);
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(h[8..16].try_into().unwrap()), 0x1000);
        assert_eq!(u64::from_le_bytes(h[16..24].try_into().unwrap()), 0x1fff);
    }
}
