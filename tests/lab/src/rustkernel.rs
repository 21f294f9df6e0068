//! A small Rust-enabled kernel for the guest module, built from Debian's
//! `linux-source-6.12` with Debian's `rustc-web` and cached.
//!
//! Debian's distribution kernels before 7.x have no `CONFIG_RUST`, and their headers
//! packages lack the `rust/` metadata (`*.rmeta`) that out-of-tree Rust modules are built
//! against, so the lab builds its own: `make tinyconfig` plus [`CONFIG_FRAGMENT`] (what the
//! lab's guests need, KASLR, DWARF 5 and BTF, `CONFIG_RUST`). A build takes 7-10 minutes
//! on two cores; it is cached under `rustkernel/<key>/` where the key digests the source
//! package's version, the rustc and bindgen versions and the configuration, so reruns and
//! later CI jobs on the same machine reuse it. The cached tree keeps its objects: modules
//! are built against it with `make -C <tree> M=<dir>` ([`RustKernel::build_module`]).
//!
//! What it needs on the host: the Debian packages `linux-source-6.12`, `rustc-web`,
//! `rust-web-src`, `libclang-dev`, `flex`, `bison`, `bc`, `libelf-dev`, `libssl-dev`,
//! `dwarves` (scripts/setup.sh installs them) and `bindgen-cli` from the Rust crate
//! registry (Debian's is below the kernel's minimum), which the lab installs with
//! `cargo install` into the cache.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::build::digest;
use crate::cache::{self, Cache};
use crate::error::{Error, IoContext, Result};
use crate::store::KernelImage;
use crate::tools::{self, Tool, MAKE, TAR};

/// The kernel source: Debian's package and the tarball it installs.
pub const SOURCE_PACKAGE: &str = "linux-source-6.12";
/// Where the source package puts the tarball.
pub const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
/// Debian's Rust compiler with the library source the kernel needs (rustup's has none).
pub const RUSTC: Tool = Tool {
    program: "/usr/bin/rustc",
    package: "rustc-web",
};
/// rustdoc of the same toolchain.
pub const RUSTDOC: Tool = Tool {
    program: "/usr/bin/rustdoc",
    package: "rustc-web",
};
/// The bindgen-cli version installed from the crate registry.
pub const BINDGEN_VERSION: &str = "0.73.2";

/// Options merged into `make tinyconfig`: what the lab's guests use (serial consoles, an
/// initramfs, procfs/sysfs/devtmpfs, modules, threads and uids for the worker), what the
/// detector reads (SMP per-CPU data, kallsyms with data symbols, KASLR, ftrace, kprobes,
/// syscall tracepoints), debug info (DWARF 5 for profile-gen's reference profile, BTF) and
/// Rust. `CONFIG_SCHEDSTATS` stays off as in tinyconfig: the guest module's test relies on
/// the layout difference it causes between the Rust bindings and GCC.
pub const CONFIG_FRAGMENT: &str = "\
CONFIG_64BIT=y
CONFIG_SMP=y
CONFIG_NR_CPUS=8
CONFIG_PRINTK=y
CONFIG_TTY=y
CONFIG_SERIAL_8250=y
CONFIG_SERIAL_8250_CONSOLE=y
CONFIG_BLK_DEV_INITRD=y
CONFIG_RD_GZIP=y
CONFIG_PROC_FS=y
CONFIG_PROC_SYSCTL=y
CONFIG_SYSFS=y
CONFIG_DEVTMPFS=y
CONFIG_DEVTMPFS_MOUNT=y
CONFIG_BINFMT_ELF=y
CONFIG_BINFMT_SCRIPT=y
CONFIG_MULTIUSER=y
CONFIG_FUTEX=y
CONFIG_EPOLL=y
CONFIG_SHMEM=y
CONFIG_TMPFS=y
CONFIG_MODULES=y
CONFIG_MODULE_UNLOAD=y
CONFIG_KALLSYMS=y
CONFIG_KALLSYMS_ALL=y
CONFIG_RELOCATABLE=y
CONFIG_RANDOMIZE_BASE=y
CONFIG_DEBUG_KERNEL=y
CONFIG_DEBUG_INFO=y
CONFIG_DEBUG_INFO_DWARF5=y
CONFIG_BPF_SYSCALL=y
CONFIG_DEBUG_INFO_BTF=y
CONFIG_FTRACE=y
CONFIG_FUNCTION_TRACER=y
CONFIG_DYNAMIC_FTRACE=y
CONFIG_FTRACE_SYSCALLS=y
CONFIG_KPROBES=y
CONFIG_RUST=y
";

/// Options that must be on in the final configuration, or the build is refused (e.g.
/// `RUST` drops out silently when `make olddefconfig` finds no usable toolchain).
const REQUIRED: &[&str] = &[
    "CONFIG_RUST",
    "CONFIG_SMP",
    "CONFIG_MODULES",
    "CONFIG_KALLSYMS_ALL",
    "CONFIG_RANDOMIZE_BASE",
    "CONFIG_DEBUG_INFO_BTF",
    "CONFIG_DEBUG_INFO_DWARF5",
    "CONFIG_SERIAL_8250_CONSOLE",
    "CONFIG_MULTIUSER",
    "CONFIG_DYNAMIC_FTRACE",
    "CONFIG_FTRACE_SYSCALLS",
    "CONFIG_KPROBES",
];

/// A built Rust-enabled kernel in the cache.
#[derive(Debug, Clone)]
pub struct RustKernel {
    /// The kernel's release (`make kernelrelease`), e.g. `6.12.117`.
    pub release: String,
    /// The boot image, as the lab boots kernels.
    pub image: KernelImage,
    /// The vmlinux with DWARF (and `.BTF`).
    pub vmlinux: PathBuf,
    /// Its System.map.
    pub system_map: PathBuf,
    /// The build tree (sources and objects): `make -C <tree> M=<dir>` builds modules.
    pub tree: PathBuf,
    /// The rustc that built it (modules must use the same).
    pub rustc: PathBuf,
    /// The bindgen that made its bindings.
    pub bindgen: PathBuf,
}

/// The bindgen-cli of [`BINDGEN_VERSION`], installed into the cache on first use.
pub fn bindgen(cache: &Cache) -> Result<PathBuf> {
    let root = cache
        .root()
        .join("tools")
        .join(format!("bindgen-cli-{BINDGEN_VERSION}"));
    let bin = root.join("bin").join("bindgen");
    if bin.exists() {
        return Ok(bin);
    }
    let _lock = cache.lock("bindgen-cli")?;
    if bin.exists() {
        return Ok(bin);
    }
    let cargo = tools::which("cargo").ok_or(Error::MissingTool {
        program: "cargo".into(),
        package: "cargo",
    })?;
    eprintln!("lab: installing bindgen-cli {BINDGEN_VERSION} with cargo (about 2 minutes)");
    tools::run(
        Command::new(cargo)
            .args(["install", "--locked", "--quiet", "bindgen-cli", "--version"])
            .arg(BINDGEN_VERSION)
            .arg("--root")
            .arg(&root),
    )?;
    if !bin.exists() {
        return Err(Error::Command {
            command: format!("cargo install bindgen-cli --version {BINDGEN_VERSION}"),
            status: "exit status 0".into(),
            stderr: format!("no {} was installed", bin.display()),
        });
    }
    Ok(bin)
}

fn first_line(out: &[u8]) -> String {
    String::from_utf8_lossy(out)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

fn source_version() -> Result<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", SOURCE_PACKAGE])
        .output()
        .ctx("running", "dpkg-query")?;
    let v = first_line(&out.stdout);
    if !out.status.success() || v.is_empty() || !Path::new(SOURCE_TARBALL).exists() {
        return Err(Error::MissingTool {
            program: SOURCE_TARBALL.into(),
            package: SOURCE_PACKAGE,
        });
    }
    Ok(v)
}

impl RustKernel {
    /// The cached kernel, built first when the cache has none for this source, toolchain
    /// and configuration.
    pub fn ensure(cache: &Cache) -> Result<RustKernel> {
        let rustc = RUSTC.find()?;
        // make_command names rustdoc beside rustc: say which package when it is missing
        RUSTDOC.find()?;
        let source = source_version()?;
        let rustc_version = first_line(&tools::run(Command::new(&rustc).arg("--version"))?.stdout);
        let bindgen = bindgen(cache)?;
        let bindgen_version =
            first_line(&tools::run(Command::new(&bindgen).arg("--version"))?.stdout);
        let key = digest(&[
            source.as_bytes(),
            rustc_version.as_bytes(),
            bindgen_version.as_bytes(),
            CONFIG_FRAGMENT.as_bytes(),
        ]);
        let dir = cache.root().join("rustkernel").join(&key);
        if !cache::is_complete(&dir, false)? {
            let _lock = cache.lock(&format!("rustkernel-{key}"))?;
            if !cache::is_complete(&dir, false)? {
                build(cache, &dir, &rustc, &bindgen, &source)?;
                prune_others(&dir);
            }
        }
        let tree = dir.join("tree");
        let release = fs::read_to_string(tree.join("include/config/kernel.release"))
            .ctx("reading", tree.join("include/config/kernel.release"))?
            .trim()
            .to_string();
        Ok(RustKernel {
            image: KernelImage {
                abi: format!("{release}-rust"),
                vmlinuz: tree.join("arch/x86/boot/bzImage"),
                config: tree.join(".config"),
                fw_cfg_module: None,
            },
            release,
            vmlinux: tree.join("vmlinux"),
            system_map: tree.join("System.map"),
            tree,
            rustc,
            bindgen,
        })
    }

    /// `make` in the kernel tree with this toolchain (rustup's rustc, first on `PATH`,
    /// has no library source and a different version: the kernel's must be used).
    fn make(&self) -> Result<Command> {
        make_command(&self.tree, &self.rustc, &self.bindgen)
    }

    /// Build the out-of-tree module in `src` (a directory with its Kbuild file) against
    /// this kernel, in a copy under a temporary directory; returns the `.ko` copied to
    /// `out`.
    pub fn build_module(&self, src: &Path, name: &str, out: &Path) -> Result<PathBuf> {
        let work = tempfile::Builder::new()
            .prefix("vmi-lab-rustmod-")
            .tempdir()
            .ctx("creating a directory in", std::env::temp_dir())?;
        for entry in fs::read_dir(src).ctx("reading", src)? {
            let entry = entry.ctx("reading", src)?;
            let path = entry.path();
            if path.is_file() {
                let dest = work.path().join(entry.file_name());
                fs::copy(&path, &dest).ctx("copying", &path)?;
            }
        }
        tools::run(
            self.make()?
                .arg(format!("M={}", work.path().display()))
                .arg("modules"),
        )?;
        let built = work.path().join(format!("{name}.ko"));
        if !built.exists() {
            return Err(Error::Command {
                command: format!(
                    "make -C {} M={} modules",
                    self.tree.display(),
                    src.display()
                ),
                status: "exit status 0".into(),
                stderr: format!("no {name}.ko was produced"),
            });
        }
        fs::create_dir_all(out).ctx("creating", out)?;
        let dest = out.join(format!("{name}.ko"));
        fs::copy(&built, &dest).ctx("copying", &built)?;
        Ok(dest)
    }
}

/// Remove the trees of other keys (an older toolchain or configuration): 2-3 GB each.
fn prune_others(keep: &Path) {
    let Some(parent) = keep.parent() else { return };
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path != keep && path.is_dir() {
            if let Err(e) = fs::remove_dir_all(&path) {
                eprintln!(
                    "lab: could not remove the stale kernel tree {}: {e}",
                    path.display()
                );
            }
        }
    }
}

fn make_command(tree: &Path, rustc: &Path, bindgen: &Path) -> Result<Command> {
    let mut cmd = MAKE.command()?;
    cmd.arg("-C")
        .arg(tree)
        .arg(format!("RUSTC={}", rustc.display()))
        .arg(format!("HOSTRUSTC={}", rustc.display()))
        .arg(format!(
            "RUSTDOC={}",
            rustc.with_file_name("rustdoc").display()
        ))
        .arg(format!("BINDGEN={}", bindgen.display()));
    Ok(cmd)
}

fn build(cache: &Cache, dir: &Path, rustc: &Path, bindgen: &Path, source: &str) -> Result<()> {
    let started = std::time::Instant::now();
    eprintln!(
        "lab: building a Rust-enabled kernel from {SOURCE_PACKAGE} {source} (7-10 minutes; cached afterwards)"
    );
    let stage = cache.staging()?;
    tools::run(
        TAR.command()?
            .arg("-xf")
            .arg(SOURCE_TARBALL)
            .arg("-C")
            .arg(stage.path()),
    )?;
    let unpacked = stage.path().join(SOURCE_PACKAGE);
    let tree = stage.path().join("tree");
    fs::rename(&unpacked, &tree).ctx("renaming", &unpacked)?;
    let make = || make_command(&tree, rustc, bindgen);
    tools::run(make()?.arg("tinyconfig"))?;
    let fragment = tree.join("lab.config");
    fs::write(&fragment, CONFIG_FRAGMENT).ctx("writing", &fragment)?;
    tools::run(
        Command::new(tree.join("scripts/kconfig/merge_config.sh"))
            .current_dir(&tree)
            .args(["-m", ".config", "lab.config"]),
    )?;
    tools::run(make()?.arg("olddefconfig"))?;
    let config = fs::read_to_string(tree.join(".config")).ctx("reading", tree.join(".config"))?;
    let off: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|opt| !config.lines().any(|l| l == format!("{opt}=y")))
        .collect();
    if !off.is_empty() {
        // say why RUST is off: the kernel's own toolchain check
        let why = make()?.arg("rustavailable").output().ok().map(|o| {
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
        });
        return Err(Error::Command {
            command: format!("make olddefconfig (in {})", tree.display()),
            status: "exit status 0".into(),
            stderr: format!(
                "{} not set in the final configuration{}",
                off.join(", "),
                why.map(|w| format!("; make rustavailable says: {}", w.trim()))
                    .unwrap_or_default()
            ),
        });
    }
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    tools::run(make()?.arg(format!("-j{jobs}")).arg("all"))?;
    for f in ["vmlinux", "System.map", "arch/x86/boot/bzImage"] {
        if !tree.join(f).exists() {
            return Err(cache::incomplete(&tree.join(f)));
        }
    }
    eprintln!(
        "lab: Rust-enabled kernel built in {:.0?}",
        started.elapsed()
    );
    cache.commit(stage, dir)
}
