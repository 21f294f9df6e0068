//! The BTF userspace extractor: the running kernel's profile from its own files.
//!
//! [`require_root`] first, then [`extract`] on [`Paths::running_kernel`]: the checks
//! before profile-gen runs turn the usual failures into typed errors with a remedy (no
//! BTF in this kernel, procfs or sysfs not mounted, `/proc/kallsyms` showing zeros);
//! [`write_atomically`] writes the result without ever leaving a partial file.
//!
//! The profile is profile-gen's ([`profile_gen::build::from_btf`] on the live files):
//! symbols of a KASLR kernel are moved back to link-time addresses there (a warning
//! gives the shift), the banner is `/proc/version`, and raw BTF carries no build-id.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use profile_gen::build::{self, Built, Options};

/// Where the running kernel shows its BTF, symbols and banner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Raw BTF (`/sys/kernel/btf/vmlinux`).
    pub btf: PathBuf,
    /// The symbol list (`/proc/kallsyms`).
    pub kallsyms: PathBuf,
    /// The banner (`/proc/version`).
    pub version: PathBuf,
    /// The `kernel.kptr_restrict` sysctl, named in the error when addresses are hidden.
    pub kptr_restrict: PathBuf,
}

impl Paths {
    /// The running kernel's files.
    pub fn running_kernel() -> Paths {
        Paths {
            btf: "/sys/kernel/btf/vmlinux".into(),
            kallsyms: "/proc/kallsyms".into(),
            version: "/proc/version".into(),
            kptr_restrict: "/proc/sys/kernel/kptr_restrict".into(),
        }
    }
}

/// What can stop the extractor, each with what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The effective uid is not 0.
    #[error("vmi-extract must run as root (the effective uid is {euid}): the kernel shows the addresses in /proc/kallsyms only to root. Run it as root, e.g. with sudo")]
    NotRoot {
        /// The effective uid.
        euid: u32,
    },
    /// The kernel has no `/sys/kernel/btf/vmlinux`.
    #[error("{} does not exist: this kernel was built without CONFIG_DEBUG_INFO_BTF, so it has no BTF to read (its boot image has none either). Make the profile on the host with profile-gen from the kernel's DWARF (the vmlinux and System.map of its -dbg package, or that package itself), or inside the guest with the Rust guest module", path.display())]
    NoBtf {
        /// The missing file.
        path: PathBuf,
    },
    /// A file the extractor needs is missing for another reason than the kernel's
    /// configuration (a file system not mounted).
    #[error("{} does not exist: {hint}", path.display())]
    Missing {
        /// The missing file.
        path: PathBuf,
        /// Why it may be missing and what to do.
        hint: &'static str,
    },
    /// `/proc/kallsyms` shows every address as 0.
    #[error("{} shows every address as 0: {reason}. vmi-extract does not change the setting itself", path.display())]
    AddressesHidden {
        /// The symbol list.
        path: PathBuf,
        /// Why, from `kernel.kptr_restrict`, and what to do.
        reason: String,
    },
    /// Reading a file failed.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// profile-gen could not build the profile.
    #[error(transparent)]
    Profile(#[from] profile_gen::Error),
    /// Writing the output failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The output file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The extractor's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The process's effective uid.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}

/// [`Error::NotRoot`] unless the effective uid is 0.
pub fn require_root() -> Result<()> {
    match effective_uid() {
        0 => Ok(()),
        euid => Err(Error::NotRoot { euid }),
    }
}

/// True when some line of a `/proc/kallsyms`-style list (`<hex address> <type> <name>`)
/// has an address other than 0. Stops at the first one: on kernels with absolute
/// per-CPU symbols the list starts with legitimate zeros, then `_text` follows within a
/// few hundred lines; only a hidden list is read to its end.
pub fn addresses_visible(list: impl BufRead) -> io::Result<bool> {
    for line in list.split(b'\n') {
        let line = line?;
        let hex = line.split(|&b| b == b' ').next().unwrap_or_default();
        let visible = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .is_some_and(|a| a != 0);
        if visible {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Why addresses are hidden, from the value of `kernel.kptr_restrict` (when readable).
pub fn hidden_reason(kptr_restrict: Option<&str>) -> String {
    match kptr_restrict.map(str::trim) {
        Some("2") => "kernel.kptr_restrict is 2, which hides kernel addresses from everyone, root included. Run `sysctl kernel.kptr_restrict=1` as root (root then sees them), run vmi-extract again, and set it back to 2 afterwards if you want".into(),
        Some(v) => format!("kernel.kptr_restrict is {v}, so this process lacks CAP_SYSLOG (root in a container or user namespace, or capabilities dropped). Run vmi-extract as root in the guest's initial namespaces with CAP_SYSLOG"),
        None => "the kernel hides them: kernel.kptr_restrict is 2 (run `sysctl kernel.kptr_restrict=1` as root) or this process lacks CAP_SYSLOG".into(),
    }
}

/// Build the profile of the running kernel from `paths` (see the module docs). Does
/// not check the uid: call [`require_root`] first.
pub fn extract(paths: &Paths, opts: &Options) -> Result<Built> {
    check_btf(paths)?;
    check_kallsyms(paths)?;
    Ok(build::from_btf(
        &paths.btf,
        Some(&paths.kallsyms),
        Some(&paths.version),
        opts,
    )?)
}

fn missing(path: &Path, e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound && !path.exists()
}

fn read_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// The BTF file exists; when it does not, tell a kernel without BTF from sysfs not
/// mounted (its directory `/sys/kernel` absent).
fn check_btf(paths: &Paths) -> Result<()> {
    let btf = &paths.btf;
    match File::open(btf) {
        Ok(_) => Ok(()),
        Err(e) if missing(btf, &e) => {
            let sysfs_kernel = btf.parent().and_then(Path::parent);
            if sysfs_kernel.is_some_and(Path::is_dir) {
                Err(Error::NoBtf { path: btf.clone() })
            } else {
                Err(Error::Missing {
                    path: btf.clone(),
                    hint: "sysfs is not mounted (mount -t sysfs sysfs /sys)",
                })
            }
        }
        Err(e) => Err(read_error(btf)(e)),
    }
}

/// The symbol list exists and shows addresses.
fn check_kallsyms(paths: &Paths) -> Result<()> {
    let list = &paths.kallsyms;
    let file = match File::open(list) {
        Ok(f) => f,
        Err(e) if missing(list, &e) => {
            let hint = if paths.version.exists() {
                "this kernel was built without CONFIG_KALLSYMS: make the profile on the host from its -dbg package (vmlinux + System.map), or give profile-gen the raw BTF with the System.map"
            } else {
                "procfs is not mounted (mount -t proc proc /proc)"
            };
            return Err(Error::Missing {
                path: list.clone(),
                hint,
            });
        }
        Err(e) => return Err(read_error(list)(e)),
    };
    if addresses_visible(BufReader::new(file)).map_err(read_error(list))? {
        return Ok(());
    }
    let setting = std::fs::read_to_string(&paths.kptr_restrict).ok();
    Err(Error::AddressesHidden {
        path: list.clone(),
        reason: hidden_reason(setting.as_deref()),
    })
}

/// Write `bytes` to `path` whole or not at all (atomic-write-file: a temporary file in
/// the same directory, renamed over `path` once written): a failure leaves no partial
/// file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let failed = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = atomic_write_file::AtomicWriteFile::open(path).map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    file.commit().map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_addresses_are_told_from_leading_per_cpu_zeros() {
        // kptr_restrict=2 or no CAP_SYSLOG: every line is zero, module lines included
        let hidden = "0000000000000000 A fixed_percpu_data\n0000000000000000 T _text\n0000000000000000 D init_task\n0000000000000000 t sr_do_ioctl\t[sr_mod]\n";
        assert!(!addresses_visible(hidden.as_bytes()).unwrap());
        assert!(!addresses_visible(&b""[..]).unwrap());
        // before 6.15, per-CPU symbols are absolute and listed first, at 0 and up
        let visible = "0000000000000000 A fixed_percpu_data\n0000000000001000 A cpu_debug_store\nffffffff9a200000 T _text\n";
        assert!(addresses_visible(visible.as_bytes()).unwrap());
        // 6.15 and later: _text first
        assert!(addresses_visible(&b"ffffffff81000000 T _text"[..]).unwrap());
        // garbage is not an address
        assert!(!addresses_visible(&b"zzzz T x\n\n \n"[..]).unwrap());
    }

    #[test]
    fn hidden_addresses_say_what_to_do() {
        let r = hidden_reason(Some("2\n"));
        assert!(r.contains("sysctl kernel.kptr_restrict=1"), "{r}");
        let r = hidden_reason(Some("1\n"));
        assert!(r.contains("CAP_SYSLOG") && !r.contains("sysctl"), "{r}");
        let r = hidden_reason(None);
        assert!(
            r.contains("kptr_restrict") && r.contains("CAP_SYSLOG"),
            "{r}"
        );
    }

    fn fixture(dir: &Path, kallsyms: &str) -> Paths {
        let sys = dir.join("sys/kernel/btf");
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::create_dir_all(dir.join("proc/sys/kernel")).unwrap();
        std::fs::write(dir.join("proc/kallsyms"), kallsyms).unwrap();
        std::fs::write(
            dir.join("proc/version"),
            "Linux version 6.1.0-56-amd64 (x)\n",
        )
        .unwrap();
        std::fs::write(dir.join("proc/sys/kernel/kptr_restrict"), "2\n").unwrap();
        Paths {
            btf: sys.join("vmlinux"),
            kallsyms: dir.join("proc/kallsyms"),
            version: dir.join("proc/version"),
            kptr_restrict: dir.join("proc/sys/kernel/kptr_restrict"),
        }
    }

    #[test]
    fn errors_are_typed_and_checked_before_profile_gen_runs() {
        let dir = tempfile::tempdir().unwrap();
        let paths = fixture(dir.path(), "0000000000000000 T _text\n");
        let e = extract(&paths, &Options::default()).unwrap_err();
        assert!(matches!(e, Error::NoBtf { .. }), "{e}");
        assert!(e.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{e}");

        // BTF present (its content is profile-gen's business), addresses hidden
        std::fs::write(&paths.btf, b"\x9f\xeb\x01\x00").unwrap();
        let e = extract(&paths, &Options::default()).unwrap_err();
        assert!(matches!(e, Error::AddressesHidden { .. }), "{e}");
        assert!(e.to_string().contains("kptr_restrict is 2"), "{e}");

        // no /proc/kallsyms: a kernel without kallsyms, or no procfs at all
        std::fs::remove_file(&paths.kallsyms).unwrap();
        let e = extract(&paths, &Options::default()).unwrap_err();
        assert!(e.to_string().contains("CONFIG_KALLSYMS"), "{e}");
        std::fs::remove_file(&paths.version).unwrap();
        let e = extract(&paths, &Options::default()).unwrap_err();
        assert!(e.to_string().contains("mount -t proc"), "{e}");

        // no sysfs
        let bare = Paths {
            btf: dir.path().join("nosys/kernel/btf/vmlinux"),
            ..paths
        };
        let e = extract(&bare, &Options::default()).unwrap_err();
        assert!(e.to_string().contains("mount -t sysfs"), "{e}");
    }

    #[test]
    fn atomic_write_replaces_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("profile.json");
        write_atomically(&out, b"{}\n").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"{}\n");
        write_atomically(&out, b"{\"a\": 1}\n").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"{\"a\": 1}\n");
        let e = write_atomically(&dir.path().join("no/such/dir/p.json"), b"x").unwrap_err();
        assert!(matches!(e, Error::Write { .. }), "{e}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(
            left.len(),
            1,
            "only the profile, no temporary file: {left:?}"
        );
    }
}
