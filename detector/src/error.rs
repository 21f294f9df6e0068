//! The detector library's errors.

use std::path::PathBuf;

use vmi_core::kernel::KernelError;

/// What can go wrong opening a guest or running a command on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DetectorError {
    /// A memory source could not be opened.
    #[error("opening {}: {source}", path.display())]
    Open {
        /// The dump file or QMP socket.
        path: PathBuf,
        /// Why.
        source: vmi_core::Error,
    },
    /// A dump file could not be read to recognise its format.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No profile was loaded.
    #[error("no profiles in {}{}", path.display(), warnings_text(.warnings))]
    NoProfiles {
        /// The directory.
        path: PathBuf,
        /// Files skipped and why.
        warnings: Vec<String>,
    },
    /// Finding the kernel or reading its objects failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// No profile matched and none could be made from the guest's memory.
    #[error("no profile matches this guest, and making one from its memory failed: {0}")]
    ZeroTouch(String),
    /// The live guest could not be paused or resumed.
    #[error("pausing or resuming the guest: {0}")]
    Pause(vmi_core::Error),
    /// A process's open files could not be read.
    #[error("reading the open files of process {pid} ({name}): {source}")]
    ProcessFiles {
        /// Its pid.
        pid: u32,
        /// Its name, escaped.
        name: String,
        /// Why.
        source: KernelError,
    },
}

fn warnings_text(w: &[String]) -> String {
    if w.is_empty() {
        return String::new();
    }
    let mut s = String::from(":");
    for l in w.iter().take(10) {
        s.push_str("\n  ");
        s.push_str(l);
    }
    s
}
