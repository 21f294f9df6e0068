//! A lab guest whose QEMU someone else starts (libvirt, another manager): the lab builds
//! its boot files (kernel, the scenario's initramfs, command line) and listens on the
//! lab channel's socket, which that QEMU connects to as its second serial port; the
//! guest's ground truth and shell then work as for a [`Guest`](crate::Guest). The
//! socket stays open, so the guest can be started again (a destroyed and restarted
//! domain connects anew).

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::guest::{accept_until, console_tail, kernel_append, truth_until, Channel};
use crate::guest::{BootOptions, ShellOutput};
use crate::scenario::Scenario;
use crate::store::KernelImage;
use crate::truth::GroundTruth;
use crate::{tools, Lab};

/// The boot files and lab channel of a guest started outside the lab.
pub struct ExternalGuest {
    dir: tempfile::TempDir,
    kernel: KernelImage,
    listener: UnixListener,
    channel: Option<Channel>,
    append: String,
}

impl std::fmt::Debug for ExternalGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalGuest")
            .field("abi", &self.kernel.abi)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Lab {
    /// Prepare `kernel` with `scenario` for a QEMU started by someone else: see
    /// [`ExternalGuest`]. `opts` gives the command line (`kaslr`, `append`).
    pub fn external_guest(
        &self,
        kernel: &str,
        scenario: &Scenario,
        opts: &BootOptions,
    ) -> Result<ExternalGuest> {
        let image = self.store().image(kernel)?;
        let worker = self.worker()?;
        let dir = tempfile::Builder::new()
            .prefix("vmi-lab-external-")
            .tempdir()
            .ctx("creating a directory in", std::env::temp_dir())?;
        let initramfs = dir.path().join("initramfs.cpio");
        scenario.build_initramfs(
            &worker,
            &tools::static_busybox()?,
            image.fw_cfg_module.as_deref(),
            &initramfs,
        )?;
        let sock = dir.path().join("lab.sock");
        let listener = UnixListener::bind(&sock).ctx("listening on", &sock)?;
        listener.set_nonblocking(true).ctx("configuring", &sock)?;
        Ok(ExternalGuest {
            dir,
            kernel: image,
            listener,
            channel: None,
            append: kernel_append(opts).join(" "),
        })
    }
}

impl ExternalGuest {
    /// The kernel image to boot.
    pub fn vmlinuz(&self) -> &Path {
        &self.kernel.vmlinuz
    }

    /// The initramfs (the scenario and the guest worker).
    pub fn initramfs(&self) -> PathBuf {
        self.dir.path().join("initramfs.cpio")
    }

    /// The kernel command line (the console on the first serial port, the lab channel on
    /// the second).
    pub fn cmdline(&self) -> &str {
        &self.append
    }

    /// The unix socket the guest's second serial port must connect to.
    pub fn channel_socket(&self) -> PathBuf {
        self.dir.path().join("lab.sock")
    }

    /// Where the guest's console (first serial port) should be written.
    pub fn console_path(&self) -> PathBuf {
        self.dir.path().join("console.log")
    }

    /// A directory that lives as long as this value, for the manager's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Wait (up to `timeout`) for a QEMU to connect the lab channel and its guest to
    /// report ready; its ground truth. A guest started again replaces the previous
    /// connection.
    pub fn accept(&mut self, timeout: Duration) -> Result<GroundTruth> {
        let deadline = Instant::now() + timeout;
        let stream = accept_until(&self.listener, timeout, || false)?;
        self.channel = Some(Channel::spawn(
            stream,
            "vmi-lab-external",
            &self.channel_socket(),
        )?);
        self.read_truth(deadline, timeout, true)
    }

    fn channel(&mut self) -> Result<&mut Channel> {
        self.channel
            .as_mut()
            .ok_or_else(|| Error::Channel("no guest has connected the lab channel yet".into()))
    }

    fn read_truth(
        &mut self,
        deadline: Instant,
        total: Duration,
        ready: bool,
    ) -> Result<GroundTruth> {
        let console = self.console_path();
        let channel = self.channel()?;
        truth_until(channel, &mut || None, &console, deadline, total, ready)
    }

    /// Ask the guest for a fresh ground-truth block.
    pub fn refresh_truth(&mut self) -> Result<GroundTruth> {
        self.channel()?.send("truth")?;
        let total = Duration::from_secs(300);
        self.read_truth(Instant::now() + total, total, false)
    }

    /// Run a shell command in the guest (as [`Guest::sh`](crate::Guest::sh)).
    pub fn sh(&mut self, command: &str) -> Result<ShellOutput> {
        self.channel()?
            .sh_timeout(command, Duration::from_secs(300))
    }

    /// The last `n` console lines.
    pub fn console_tail(&self, n: usize) -> String {
        console_tail(&self.console_path(), n)
    }
}
