//! Building modules for kernels made by another compiler than the host's.
//!
//! An out-of-tree module must be built by the compiler its kernel was built with: the
//! kernel's build flags (kept in its headers) name options only that compiler knows, and
//! its kbuild tools (`fixdep`, `modpost`, `objtool`) are linked against its suite's C
//! library. The host (bookworm) has gcc-12, which built Debian's 5.10, 6.1 and 6.12;
//! sid's 7.2 was built by gcc-16, trixie-backports' 7.x by gcc-14.
//!
//! For those kernels the lab keeps a minimal Debian root of the kernel's suite (made by
//! `debootstrap` from the mirror of the system's apt sources, with that suite's gcc and
//! make) in its cache, installs the kernel's headers package into it with the root's own
//! apt, and runs `make` there: in a private mount namespace (`unshare --mount`) that
//! mounts `/proc` for objtool and disappears with the build, so nothing stays mounted.
//! Making the root needs root privileges (as `debootstrap` and `chroot` do).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::apt::{Archive, Mirrors};
use crate::cache::{self, Cache};
use crate::error::{Error, IoContext, Result};
use crate::tools::{self, Tool, CC};

/// The marker of a complete root.
const COMPLETE: &str = ".lab-root-complete";

/// Makes Debian roots.
pub const DEBOOTSTRAP: Tool = Tool {
    program: "debootstrap",
    package: "debootstrap",
};

/// The compiler a kernel was built with, from its headers' `.config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelCompiler {
    /// `CONFIG_CC_VERSION_TEXT`, e.g. `x86_64-linux-gnu-gcc-16 (Debian 16.2.0-4) 16.2.0`.
    pub text: String,
    /// The gcc major version, when it was gcc.
    pub gcc_major: Option<u32>,
}

impl KernelCompiler {
    /// Read it from the kbuild directory's `.config`.
    pub fn of_kdir(kdir: &Path) -> Result<KernelCompiler> {
        let path = kdir.join(".config");
        let text = fs::read_to_string(&path).ctx("reading", &path)?;
        KernelCompiler::parse(&text).ok_or_else(|| {
            Error::Scenario(format!(
                "{}: no CONFIG_CC_VERSION_TEXT: cannot tell which compiler built the kernel",
                path.display()
            ))
        })
    }

    /// Find `CONFIG_CC_VERSION_TEXT` in a kernel configuration.
    pub fn parse(config: &str) -> Option<KernelCompiler> {
        let text = config.lines().find_map(|l| {
            l.strip_prefix("CONFIG_CC_VERSION_TEXT=")
                .map(|v| v.trim_matches('"').to_string())
        })?;
        Some(KernelCompiler {
            gcc_major: gcc_major_of(&text),
            text,
        })
    }
}

/// The major version in a gcc version text: the last word is the version for gcc
/// (`gcc-16 (Debian 16.2.0-4) 16.2.0`); None for other compilers (clang).
fn gcc_major_of(text: &str) -> Option<u32> {
    let first = text.split_whitespace().next()?;
    if !first.contains("gcc") {
        return None;
    }
    text.split_whitespace()
        .last()?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The host gcc's major version (`gcc -dumpversion`).
pub fn host_gcc_major() -> Result<u32> {
    let out = tools::run(CC.command()?.arg("-dumpversion"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| Error::Scenario(format!("gcc -dumpversion printed {:?}", text.trim())))
}

/// The suite a package comes from (the newest version's), e.g. `sid` or
/// `trixie-backports`.
fn suite_of(archive: &Archive, package: &str) -> Result<String> {
    archive.suites_of(package)?.into_iter().next().ok_or_else(|| {
        Error::Scenario(format!(
            "{package} is in none of the lab's suites: the kernel's headers are needed to build its modules"
        ))
    })
}

/// The release a suite belongs to: `trixie` for `trixie-backports`.
fn base_suite(suite: &str) -> &str {
    ["-backports", "-updates", "-security"]
        .iter()
        .find_map(|s| suite.strip_suffix(s))
        .unwrap_or(suite)
}

/// A Debian root with one suite's gcc, in the lab cache.
#[derive(Debug, Clone)]
pub struct BuildRoot {
    root: PathBuf,
    cache: Cache,
    lock: String,
}

impl BuildRoot {
    /// The root for the kernel whose headers are `linux-headers-<abi>` and whose
    /// compiler is gcc `gcc_major`: made on first use (about 30 s and 500 MB), with
    /// the headers installed.
    pub fn for_kernel(cache: &Cache, abi: &str, gcc_major: u32) -> Result<BuildRoot> {
        // SAFETY: geteuid has no preconditions
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::Scenario(format!(
                "kernel {abi} was built by gcc-{gcc_major}, which this machine lacks: the lab builds its modules in a Debian root it makes with debootstrap, which needs root; run as root or install gcc-{gcc_major}"
            )));
        }
        let archive = Archive::new(cache)?;
        archive.update(false)?;
        let package = format!("linux-headers-{abi}");
        let suite = suite_of(&archive, &package)?;
        let base = base_suite(&suite).to_string();
        let name = format!("{base}-gcc-{gcc_major}");
        let root = cache.root().join("toolchains").join(&name);
        let lock = format!("toolchain-{name}");
        let _lock = cache.lock(&lock)?;
        if !root.join(COMPLETE).exists() {
            make_root(cache, &root, &base, gcc_major)?;
        }
        let br = BuildRoot {
            root,
            cache: cache.clone(),
            lock,
        };
        br.install_headers(&package, &suite, &base)?;
        Ok(br)
    }

    /// Where kbuild lives inside the root for `abi`.
    fn kdir(abi: &str) -> String {
        format!("/usr/src/linux-headers-{abi}")
    }

    fn install_headers(&self, package: &str, suite: &str, base: &str) -> Result<()> {
        let abi = package.trim_start_matches("linux-headers-");
        if self
            .root
            .join(BuildRoot::kdir(abi).trim_start_matches('/'))
            .join(".config")
            .exists()
        {
            return Ok(());
        }
        // the kernel's own suite next to the release the root was made from
        let mirrors = Mirrors::from_system()?;
        let list = self.root.join("etc/apt/sources.list.d/lab.list");
        let mut text = String::new();
        if suite != base {
            text.push_str(&format!("deb {} {suite} main\n", mirrors.main));
        }
        cache::write_atomic(&list, text.as_bytes())?;
        self.copy_host_apt_settings()?;
        self.chroot(&["apt-get", "-qq", "update"])?;
        let mut install = vec![
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "-qq",
            "-y",
            "--no-install-recommends",
            "install",
        ];
        if suite != base {
            install.extend(["-t", suite]);
        }
        install.push(package);
        self.chroot(&install)?;
        self.chroot(&["apt-get", "-qq", "clean"])?;
        Ok(())
    }

    /// The host's apt settings for reaching the archive (`Acquire::` options: proxies,
    /// a mirror's validity window) and its credentials, so the root's apt reaches the
    /// mirror as the host's does.
    fn copy_host_apt_settings(&self) -> Result<()> {
        let conf = Path::new("/etc/apt/apt.conf.d");
        let into = self.root.join("etc/apt/apt.conf.d");
        if let Ok(dir) = fs::read_dir(conf) {
            for entry in dir.flatten() {
                let path = entry.path();
                let Ok(text) = fs::read_to_string(&path) else {
                    continue;
                };
                if text.contains("Acquire") {
                    cache::write_atomic(&into.join(entry.file_name()), text.as_bytes())?;
                }
            }
        }
        let auth = Path::new("/etc/apt/auth.conf.d");
        if let Ok(dir) = fs::read_dir(auth) {
            let into = self.root.join("etc/apt/auth.conf.d");
            fs::create_dir_all(&into).ctx("creating", &into)?;
            for entry in dir.flatten() {
                fs::copy(entry.path(), into.join(entry.file_name()))
                    .ctx("copying", entry.path())?;
            }
        }
        Ok(())
    }

    /// Run a command in the root (no /proc).
    fn chroot(&self, argv: &[&str]) -> Result<()> {
        tools::run(Command::new("chroot").arg(&self.root).args(argv)).map(drop)
    }

    /// `make -C <kbuild of abi> M=<dir> modules` in the root, for the sources in
    /// `src` (a host directory); the built files are copied back into `src`.
    pub fn make_modules(&self, abi: &str, src: &Path) -> Result<()> {
        let _lock = self.cache.lock(&self.lock)?;
        let builds = self.root.join("build");
        fs::create_dir_all(&builds).ctx("creating", &builds)?;
        let dir = tempfile::Builder::new()
            .prefix("m-")
            .tempdir_in(&builds)
            .ctx("creating a build directory in", &builds)?;
        for entry in fs::read_dir(src).ctx("listing", src)? {
            let entry = entry.ctx("listing", src)?;
            fs::copy(entry.path(), dir.path().join(entry.file_name()))
                .ctx("copying", entry.path())?;
        }
        let inside = Path::new("/build").join(dir.path().file_name().unwrap_or_default());
        let proc_dir = self.root.join("proc");
        let script = "mount -t proc proc \"$1\" && shift && exec chroot \"$@\"";
        tools::run(
            Command::new("unshare")
                .args([
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    script,
                    "sh",
                ])
                .arg(&proc_dir)
                .arg(&self.root)
                .args(["make", "-C", &BuildRoot::kdir(abi)])
                .arg(format!("M={}", inside.display()))
                .arg("modules"),
        )?;
        for entry in fs::read_dir(dir.path()).ctx("listing", dir.path())? {
            let entry = entry.ctx("listing", dir.path())?;
            if entry.path().extension().is_some_and(|e| e == "ko") {
                fs::copy(entry.path(), src.join(entry.file_name())).ctx("copying", entry.path())?;
            }
        }
        Ok(())
    }
}

/// `debootstrap` a minimal root of `suite` with gcc-`gcc_major` and make into `root`.
fn make_root(cache: &Cache, root: &Path, suite: &str, gcc_major: u32) -> Result<()> {
    let mirrors = Mirrors::from_system()?;
    let stage = cache.staging()?;
    let target = stage.path().join("root");
    eprintln!(
        "lab: making a {suite} root with gcc-{gcc_major} for module builds (debootstrap, about 30 s)"
    );
    tools::run(
        DEBOOTSTRAP
            .command()?
            .args(["--variant=minbase"])
            .arg(format!("--include=gcc-{gcc_major},make"))
            .arg(suite)
            .arg(&target)
            .arg(&mirrors.main),
    )?;
    // the root changes later (headers are installed into it), so it is not a manifest
    // entry: a marker written last says it is complete
    fs::write(target.join(COMPLETE), b"").ctx("writing", target.join(COMPLETE))?;
    if root.exists() {
        fs::remove_dir_all(root).ctx("removing incomplete root", root)?;
    }
    if let Some(parent) = root.parent() {
        fs::create_dir_all(parent).ctx("creating", parent)?;
    }
    fs::rename(&target, root).ctx("moving the new root to", root)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiler_text_is_read() {
        let c = KernelCompiler::parse(
            "CONFIG_X=y\nCONFIG_CC_VERSION_TEXT=\"x86_64-linux-gnu-gcc-16 (Debian 16.2.0-4) 16.2.0\"\n",
        )
        .unwrap();
        assert_eq!(c.gcc_major, Some(16));
        let c = KernelCompiler::parse(
            "CONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0\"",
        )
        .unwrap();
        assert_eq!(c.gcc_major, Some(12));
        let c = KernelCompiler::parse("CONFIG_CC_VERSION_TEXT=\"Debian clang version 19.1.7\"")
            .unwrap();
        assert_eq!(c.gcc_major, None);
        assert!(KernelCompiler::parse("CONFIG_X=y\n").is_none());
    }

    #[test]
    fn suites_map_to_their_release() {
        assert_eq!(base_suite("trixie-backports"), "trixie");
        assert_eq!(base_suite("sid"), "sid");
        assert_eq!(base_suite("bookworm-security"), "bookworm");
    }
}
