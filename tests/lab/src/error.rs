//! The lab's error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong in the lab. Each variant says what failed and, where
/// there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on a named file or directory failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done ("reading", "creating", ...).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A host program the lab needs is not installed.
    #[error("`{program}` is not installed: install the Debian package `{package}` (apt-get install {package})")]
    MissingTool {
        /// The program looked for.
        program: String,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// A host program ran but failed.
    #[error("`{command}` failed ({status}){}", fmt_stderr(.stderr))]
    Command {
        /// The command line, for the reader.
        command: String,
        /// Its exit status.
        status: String,
        /// The tail of what it printed on stderr.
        stderr: String,
    },
    /// No kernel build of that name exists in the archive.
    #[error("no kernel build `{name}` in the archive{}", fmt_closest(.closest))]
    UnknownKernel {
        /// The name asked for.
        name: String,
        /// The closest names the archive has.
        closest: Vec<String>,
    },
    /// A kernel name that is neither an ABI name nor a series (`newest:7`).
    #[error("`{0}` is not a kernel name: give an ABI name such as `6.1.0-56-amd64` (flavours -amd64, -cloud-amd64, -rt-amd64) or a series such as `newest:7` or `newest:6.12-rt-amd64`")]
    BadKernelName(String),
    /// profile-gen's package reader could not read vmlinux and System.map out of a
    /// -dbg package.
    #[error("reading vmlinux and System.map out of {package}: {message} (a damaged download: delete the package from the cache and fetch it again)")]
    DebugPackage {
        /// The package file.
        package: String,
        /// What the reader said.
        message: String,
    },
    /// A package did not contain a file the lab expected in it.
    #[error(
        "package {package} has no member matching {member}: the archive's layout may have changed"
    )]
    MissingMember {
        /// The package file.
        package: String,
        /// The member pattern looked for.
        member: String,
    },
    /// The system's apt configuration names no Debian mirror to derive ours from.
    #[error("no Debian mirror found in the system's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d/): the lab derives its archive URI from them")]
    NoMirror,
    /// The guest did not reach READY in time.
    #[error("guest did not print READY within {}s; last console lines:\n{console}", .timeout.as_secs())]
    BootTimeout {
        /// How long the lab waited.
        timeout: Duration,
        /// The last console lines.
        console: String,
    },
    /// QEMU exited when it should not have.
    #[error("QEMU exited ({status}); last console lines:\n{console}\nQEMU said:\n{stderr}")]
    QemuExited {
        /// Its exit status.
        status: String,
        /// The last console lines.
        console: String,
        /// What QEMU printed on stderr.
        stderr: String,
    },
    /// A QMP command failed or QMP said something unexpected.
    #[error("QMP {command}: {message}")]
    Qmp {
        /// The command sent.
        command: String,
        /// QMP's error, or what was wrong with its answer.
        message: String,
    },
    /// The lab channel (the guest agent on the second serial port) failed.
    #[error("lab channel: {0}")]
    Channel(String),
    /// A ground-truth block did not parse.
    #[error("ground truth, record {record}: {message}")]
    Truth {
        /// 1-based record number within the block.
        record: usize,
        /// What was wrong.
        message: String,
    },
    /// The scenario cannot be built (a bad name, a missing file).
    #[error("scenario: {0}")]
    Scenario(String),
    /// The lab's libvirtd or virsh failed; the message carries what they said.
    #[error("libvirt: {0}")]
    Libvirt(String),
    /// A program `lab validate` runs (profile-gen, detector) was not found.
    #[error("`{program}` not found (looked in {looked}): build it (cargo build --release -p {program}), install the vmi-detector package, or name it with --{program} PATH")]
    MissingProgram {
        /// The program.
        program: String,
        /// Where it was looked for.
        looked: String,
    },
    /// A kernel given as files (`lab validate`) cannot be used as it is; the message
    /// says what is wrong and what to give instead.
    #[error("{path}: {message}")]
    KernelFiles {
        /// The file or directory given.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The Xen rig (Xen and dom0 in QEMU, its domUs) failed; the message carries the
    /// console lines that say why.
    #[error("Xen rig: {0}")]
    Xen(String),
}

fn fmt_stderr(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", stderr.trim())
    }
}

fn fmt_closest(closest: &[String]) -> String {
    if closest.is_empty() {
        String::new()
    } else {
        format!("; closest names: {}", closest.join(", "))
    }
}

/// The lab's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a path and an action to an I/O error.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::result::Result<T, walkdir::Error> {
    fn ctx(self, what: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(io::Error::from).ctx(what, path)
    }
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            what,
            path: path.into(),
            source,
        })
    }
}
