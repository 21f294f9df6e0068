//! A booted lab guest: QEMU (TCG) with guest RAM in a shareable file, a QMP socket, the
//! serial console in a log file and the lab channel (second serial port) to the guest
//! worker.
//!
//! A [`Guest`] owns its QEMU process: dropping it kills QEMU and removes the RAM file,
//! also during a panic. QEMU is started from a helper thread that lives as long as the
//! process and gets `PR_SET_PDEATHSIG`, so it also dies when the test process is killed.

mod channel;
mod dump;
mod mtree;
mod process;

use std::fs::{self, File};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::qmp::Qmp;
use crate::scenario::Scenario;
use crate::store::KernelImage;
use crate::tools::{self, QEMU};
use crate::truth::GroundTruth;

pub use channel::quote;
pub(crate) use channel::Channel;
pub use dump::lime_header;
pub use mtree::{parse_memory_map, RamRange};
pub(crate) use process::{
    accept_until, boot_truth, console_tail, exited, kill, spawn_tied, truth_until, with_exit,
};

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
    /// How guest RAM is backed.
    pub ram: RamBacking,
    /// The machine type: `pc` (default) or `q35`.
    pub machine: String,
}

/// How a lab guest's RAM is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamBacking {
    /// A shared file in /dev/shm (`memory-backend-file,share=on`): the lab and the
    /// detector map it (the default).
    SharedFile,
    /// QEMU's default: anonymous memory of the QEMU process (`-m` alone), as most VMs
    /// in the field run. Raw and LiME dumps need the file and are not available.
    Anonymous,
    /// A `memory-backend-memfd` (libvirt's `<source type='memfd'/>`).
    Memfd,
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
            ram: RamBacking::SharedFile,
            machine: "pc".into(),
        }
    }
}

/// Output of a shell command run in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellOutput {
    /// Exit status (128 + signal for a killed command).
    pub status: i32,
    /// Lines it printed (stdout and stderr together).
    pub lines: Vec<String>,
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

/// The kernel command line of a lab guest: console on the first serial port, the lab
/// channel on the second (`8250.nr_uarts=2`).
pub(crate) fn kernel_append(opts: &BootOptions) -> Vec<String> {
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
    append
}

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

        let append = kernel_append(opts);
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
            .args(["-m", &format!("{}M", opts.memory_mib)]);
        let backend = match opts.ram {
            RamBacking::SharedFile => {
                cmd.arg("-object").arg(format!(
                    "memory-backend-file,id=lab-ram,size={}M,mem-path={},share=on",
                    opts.memory_mib,
                    ram_path.display()
                ));
                "lab-ram"
            }
            RamBacking::Memfd => {
                cmd.arg("-object").arg(format!(
                    "memory-backend-memfd,id=lab-ram,size={}M",
                    opts.memory_mib
                ));
                "lab-ram"
            }
            RamBacking::Anonymous => "pc.ram",
        };
        let machine = if backend == "pc.ram" {
            opts.machine.clone()
        } else {
            format!("{},memory-backend={backend}", opts.machine)
        };
        cmd.args(["-machine", &machine])
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
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                dir.join("watch-qmp.sock").display()
            ))
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
            Ok(text) => parse_memory_map(&text, backend),
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

    /// The ground truth the guest reported last: when it became ready, or at the latest
    /// `refresh_truth`.
    pub fn truth(&self) -> &GroundTruth {
        &self.truth
    }

    /// Ask the guest for a fresh ground-truth block; `truth` returns it from now on.
    pub fn refresh_truth(&mut self) -> Result<GroundTruth> {
        self.channel.send("truth")?;
        let total = Duration::from_secs(300);
        self.truth = self.read_truth(Instant::now() + total, total, false)?;
        Ok(self.truth.clone())
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

    /// A second QMP socket, for a client that stays connected (a `detector watch`)
    /// while the lab and other tools use [`Guest::qmp_socket`].
    pub fn watch_qmp_socket(&self) -> PathBuf {
        self.run_dir.path().join("watch-qmp.sock")
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

    /// Power the guest off cleanly and wait for QEMU to exit (QMP `quit`, then a kill,
    /// if it does not within a minute, or two seconds after the kernel said "Power down"
    /// or "System halted": one with no power-off driver halts there).
    pub fn shutdown(mut self) -> Result<()> {
        let _ = self.channel.send("poweroff");
        let start = Instant::now();
        let mut deadline = start + Duration::from_secs(60);
        let mut checked = start;
        while Instant::now() < deadline {
            if exited(&mut self.child) {
                return Ok(());
            }
            // a kernel with no way to power the machine off (no ACPI: tinyconfig, the
            // Rust-enabled kernel) halts after saying so ("reboot: Power off not
            // available: System halted instead"); QEMU is then ended at once rather than
            // after the whole wait
            if checked.elapsed() >= Duration::from_millis(500) {
                checked = Instant::now();
                let tail = self.console_tail(5);
                if tail.contains("reboot: Power down") || tail.contains("System halted") {
                    deadline = deadline.min(Instant::now() + Duration::from_secs(2));
                }
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
