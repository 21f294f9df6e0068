//! The QEMU process of a guest: spawned tied to the test process (it dies with it),
//! its exit and console read into errors, the lab channel's connection accepted.

use std::fs;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{Channel, CONSOLE_TAIL};
use crate::error::{Error, Result};
use crate::tools;
use crate::truth::GroundTruth;

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
    let mut alive = || {
        exited(child)
            .then(|| with_exit(Error::Channel("QEMU exited".into()), child, console, stderr))
    };
    truth_until(channel, &mut alive, console, deadline, total, ready)
}

/// Read a ground-truth block by `deadline`; `alive` says when the guest is gone, a
/// timeout is an error with the console's last lines.
pub(crate) fn truth_until(
    channel: &mut Channel,
    alive: &mut dyn FnMut() -> Option<Error>,
    console: &Path,
    deadline: Instant,
    total: Duration,
    ready: bool,
) -> Result<GroundTruth> {
    channel.read_truth(
        deadline,
        ready,
        alive,
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
