//! A libvirtd of the lab's own (Debian's, started without systemd in its own mount
//! namespace, with its own configuration, run and state directories, so the system's
//! /etc/libvirt is left alone), to run lab guests as libvirt domains: the way most KVM
//! hosts run their VMs, with the monitor owned by libvirtd.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::external::ExternalGuest;

/// A private libvirtd: killed with every QEMU it started when dropped (also while
/// unwinding from a panic); its thread dying kills it too (`PR_SET_PDEATHSIG`).
pub struct Libvirtd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    uri: String,
    /// The UUIDs of the domains defined, to find their QEMUs if libvirtd cannot.
    uuids: Vec<String>,
}

const LIBVIRTD_CONF: &str = r#"auth_unix_ro = "none"
auth_unix_rw = "none"
"#;

/// QEMU as root, no security driver, no cgroups and no private /dev (none of which a
/// container offers), QEMU's output to a file (no virtlogd).
const QEMU_CONF: &str = r#"user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
"#;

impl Libvirtd {
    /// Start one and wait (up to 120 s) until it answers.
    pub fn start() -> Result<Libvirtd> {
        let dir = tempfile::Builder::new()
            .prefix("vmi-libvirtd-")
            .tempdir()
            .ctx("creating", std::env::temp_dir())?;
        let d = dir.path();
        for sub in ["etc", "run", "lib", "cache", "log", "sock"] {
            std::fs::create_dir_all(d.join(sub)).ctx("creating", d.join(sub))?;
        }
        let sock = d.join("sock");
        std::fs::write(
            d.join("etc/libvirtd.conf"),
            format!(
                "{LIBVIRTD_CONF}unix_sock_dir = \"{}\"\nlog_outputs = \"3:file:{}\"\n",
                sock.display(),
                d.join("libvirtd.log").display()
            ),
        )
        .ctx("writing", d.join("etc/libvirtd.conf"))?;
        std::fs::write(d.join("etc/qemu.conf"), QEMU_CONF)
            .ctx("writing", d.join("etc/qemu.conf"))?;
        let mut script = String::from("set -e\n");
        for (own, system) in [
            ("etc", "/etc/libvirt"),
            ("run", "/run/libvirt"),
            ("lib", "/var/lib/libvirt"),
            ("cache", "/var/cache/libvirt"),
            ("log", "/var/log/libvirt"),
        ] {
            script.push_str(&format!(
                "mkdir -p {system}; mount --bind {} {system}\n",
                d.join(own).display()
            ));
        }
        // its own pid file too: the default, /run/libvirtd.pid, would make two daemons
        // of tests running side by side refuse each other
        script
            .push_str("exec libvirtd -f /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid\n");
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(d.join("libvirtd.stderr"))
                    .ctx("creating", d.join("libvirtd.stderr"))?,
            );
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            Error::Libvirt(format!(
                "starting libvirtd: {e} (is libvirt-daemon-system installed? scripts/setup.sh)"
            ))
        })?;
        let mut daemon = Libvirtd {
            uri: format!(
                "qemu:///system?socket={}",
                sock.join("libvirt-sock").display()
            ),
            dir,
            child: Some(child),
            uuids: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if daemon.virsh(&["version"]).is_ok() {
                break;
            }
            if let Some(Ok(Some(status))) = daemon.child.as_mut().map(Child::try_wait) {
                return Err(Error::Libvirt(format!(
                    "libvirtd exited ({status}): {}",
                    daemon.log()
                )));
            }
            if Instant::now() >= deadline {
                return Err(Error::Libvirt(format!(
                    "libvirtd did not answer in 120 s: {}",
                    daemon.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(daemon)
    }

    /// Its connection URI (`qemu:///system?socket=...`).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Its own directory (configuration, logs, domain XML).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last 30 lines of its stderr and log.
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        let text = format!("{}\n{}", read("libvirtd.stderr"), read("libvirtd.log"));
        text.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Run virsh on this daemon; its stdout, or an error with its stderr.
    pub fn virsh(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("virsh")
            .args(["-q", "-c", &self.uri])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Libvirt(format!("virsh: {e} (is libvirt-clients installed?)")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Libvirt(format!(
                "virsh {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// Define domain `name` booting `guest` (console to a file, the lab channel on the
    /// second serial port).
    pub fn define(&mut self, name: &str, guest: &ExternalGuest, memory_mib: u32) -> Result<()> {
        let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .ctx("reading", "/proc/sys/kernel/random/uuid")?
            .trim()
            .to_string();
        let xml = format!(
            r#"<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/><vmcoreinfo state='on'/></features>
  <cpu mode='maximum' check='none'><feature policy='disable' name='la57'/></cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <serial type='unix'><source mode='connect' path='{channel}'/><target port='1'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
"#,
            kernel = guest.vmlinuz().display(),
            initrd = guest.initramfs().display(),
            cmdline = guest.cmdline(),
            console = guest.console_path().display(),
            channel = guest.channel_socket().display(),
        );
        let file = self.dir.path().join(format!("{name}.xml"));
        std::fs::write(&file, xml).ctx("writing", &file)?;
        self.uuids.push(uuid);
        self.virsh(&["define", &file.to_string_lossy()]).map(drop)
    }

    /// The QEMU processes of this daemon's domains, by their `-uuid`.
    pub fn qemu_pids(&self) -> Vec<i32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let mut raw = Vec::new();
                let _ = std::fs::File::open(format!("/proc/{pid}/cmdline"))
                    .and_then(|f| f.take(1 << 20).read_to_end(&mut raw));
                let args: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
                args.windows(2)
                    .any(|w| w[0] == b"-uuid" && self.uuids.iter().any(|u| w[1] == u.as_bytes()))
            })
            .collect()
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        if let Ok(list) = self.virsh(&["list", "--name"]) {
            for name in list.lines().filter(|l| !l.trim().is_empty()) {
                let _ = self.virsh(&["destroy", name.trim()]);
            }
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // a QEMU libvirtd left behind
        for pid in self.qemu_pids() {
            // SAFETY: kill(2) on a QEMU this test's daemon started (matched by UUID).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}
