//! The kernel store: Debian kernel builds fetched by ABI name and cached.
//!
//! A kernel build is named by its ABI, e.g. `6.1.0-56-amd64` or `7.2.13+deb14-amd64`,
//! with the flavours `-amd64`, `-cloud-amd64` and `-rt-amd64`. A series such as
//! `newest:7` or `newest:6.12-rt-amd64` names the newest build of that series the archive
//! has today, so tests survive the archive dropping old builds.
//!
//! Each build is fetched in parts, only the ones asked for:
//! - [`Part::Image`]: `vmlinuz`, `config` and the `qemu_fw_cfg` module (so the guest can
//!   hand its VMCOREINFO to QEMU), from `linux-image-<abi>-unsigned` or, where the
//!   archive splits the image (sid), from `linux-binary[-unsigned]-<abi>`,
//!   `linux-base-<abi>` and `linux-modules-<abi>`;
//! - [`Part::Debug`]: `vmlinux` (DWARF) and the real `System.map`, streamed out of the
//!   ~1 GB `linux-image-<abi>-dbg` package: tar stops reading once both are out;
//! - [`Part::Headers`]: `linux-headers-<abi>` with its `-common` and `linux-kbuild`
//!   dependencies unpacked into one tree, for building out-of-tree modules;
//! - [`Part::DebugPackage`]: the `linux-image-<abi>-dbg` package file itself, kept for
//!   tools that read the package directly ([`Part::Debug`] then reuses it).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::apt::Archive;
use crate::cache::{self, Cache};
use crate::error::{Error, IoContext, Result};
use crate::tools::{self, DPKG_DEB, TAR, XZ, ZSTD};

/// The flavours of Debian's amd64 kernels.
pub const FLAVOURS: &[&str] = &["cloud-amd64", "rt-amd64", "amd64"];

/// A kernel named by the user: an exact ABI name or a series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSpec {
    /// An exact ABI name such as `6.1.0-56-amd64`.
    Abi(String),
    /// The newest build whose version starts with `series` (`7`, `6.12`) in `flavour`.
    Newest {
        /// The version prefix, e.g. `7` or `6.12`.
        series: String,
        /// The flavour, e.g. `amd64`.
        flavour: String,
    },
}

impl KernelSpec {
    /// Parse a kernel name (`6.1.0-56-amd64`, `newest:7`, `newest:6.12-rt-amd64`).
    pub fn parse(name: &str) -> Result<KernelSpec> {
        let bad = || Error::BadKernelName(name.to_string());
        if let Some(rest) = name.strip_prefix("newest:") {
            let (series, flavour) = match FLAVOURS
                .iter()
                .find_map(|f| rest.strip_suffix(&format!("-{f}")).map(|s| (s, *f)))
            {
                Some((s, f)) => (s, f),
                None => (rest, "amd64"),
            };
            let valid = !series.is_empty()
                && series
                    .split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            if !valid {
                return Err(bad());
            }
            return Ok(KernelSpec::Newest {
                series: series.to_string(),
                flavour: flavour.to_string(),
            });
        }
        let valid = flavour_of(name).is_some()
            && name.as_bytes().first().is_some_and(u8::is_ascii_digit)
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'~'));
        if valid {
            Ok(KernelSpec::Abi(name.to_string()))
        } else {
            Err(bad())
        }
    }
}

/// The flavour suffix of an ABI name.
pub fn flavour_of(abi: &str) -> Option<&'static str> {
    FLAVOURS
        .iter()
        .find(|f| {
            abi.strip_suffix(*f)
                .is_some_and(|rest| rest.ends_with('-') && rest.len() > 1)
        })
        .copied()
}

/// The version part of an ABI name (`6.1.0-56` of `6.1.0-56-amd64`).
pub fn version_of(abi: &str) -> &str {
    match flavour_of(abi) {
        Some(f) => &abi[..abi.len() - f.len() - 1],
        None => abi,
    }
}

/// Compare version strings the way people read them: digit runs numerically.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let ord = match (x.0, y.0) {
            (true, true) => {
                let (xa, ya) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                xa.len().cmp(&ya.len()).then_with(|| xa.cmp(ya))
            }
            _ => x.1.cmp(y.1),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// The parts of a kernel build the store can fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// vmlinuz, config and the qemu_fw_cfg module.
    Image,
    /// vmlinux with DWARF and the real System.map.
    Debug,
    /// The headers tree for building modules.
    Headers,
    /// The `linux-image-<abi>-dbg` package file itself (about 1 GB).
    DebugPackage,
}

impl Part {
    fn dir_name(self) -> &'static str {
        match self {
            Part::Image => "image",
            Part::Debug => "dbg",
            Part::Headers => "headers",
            Part::DebugPackage => "dbg-deb",
        }
    }
}

/// A kernel image in the store.
#[derive(Debug, Clone)]
pub struct KernelImage {
    /// The ABI name.
    pub abi: String,
    /// The compressed boot image.
    pub vmlinuz: PathBuf,
    /// The kernel's build configuration.
    pub config: PathBuf,
    /// `qemu_fw_cfg.ko`, uncompressed, when the build has it as a module.
    pub fw_cfg_module: Option<PathBuf>,
}

/// The debug files of a kernel build.
#[derive(Debug, Clone)]
pub struct KernelDebug {
    /// The ABI name.
    pub abi: String,
    /// vmlinux with DWARF.
    pub vmlinux: PathBuf,
    /// The real System.map.
    pub system_map: PathBuf,
}

/// The headers of a kernel build.
#[derive(Debug, Clone)]
pub struct KernelHeaders {
    /// The ABI name.
    pub abi: String,
    /// The kbuild directory to pass as `make -C`.
    pub kdir: PathBuf,
}

/// The kernel store.
#[derive(Debug, Clone)]
pub struct Store {
    cache: Cache,
    archive: Archive,
    visible: bool,
}

impl Store {
    /// A store in `cache`.
    pub fn new(cache: &Cache) -> Result<Store> {
        Ok(Store {
            cache: cache.clone(),
            archive: Archive::new(cache)?,
            visible: false,
        })
    }

    /// A store in the default cache.
    pub fn open_default() -> Result<Store> {
        Store::new(&Cache::open_default()?)
    }

    /// Show apt's download progress on the terminal.
    pub fn with_progress(mut self, visible: bool) -> Store {
        self.visible = visible;
        self
    }

    /// The cache this store lives in.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Every ABI name the archive has an image for, sorted by version.
    pub fn available(&self) -> Result<Vec<String>> {
        self.archive.update(false)?;
        let mut abis = Vec::new();
        for name in self.archive.package_names("linux-image-")? {
            if let Some(abi) = name
                .strip_prefix("linux-image-")
                .and_then(|r| r.strip_suffix("-unsigned"))
            {
                abis.push(abi.to_string());
            }
        }
        for name in self.archive.package_names("linux-binary-")? {
            if let Some(abi) = name.strip_prefix("linux-binary-unsigned-") {
                abis.push(abi.to_string());
            } else if let Some(abi) = name.strip_prefix("linux-binary-") {
                abis.push(abi.to_string());
            }
        }
        abis.retain(|a| flavour_of(a).is_some());
        abis.sort_by(|a, b| compare_versions(a, b));
        abis.dedup();
        Ok(abis)
    }

    /// Resolve a kernel name to an ABI name the archive has.
    pub fn resolve(&self, name: &str) -> Result<String> {
        let spec = KernelSpec::parse(name)?;
        let available = self.available()?;
        resolve_in(&spec, name, &available)
    }

    fn part_dir(&self, abi: &str, part: Part) -> PathBuf {
        self.cache
            .root()
            .join("kernels")
            .join(cache::sanitize(abi))
            .join(part.dir_name())
    }

    /// Fetch (or reuse) a part; returns its directory.
    fn ensure(&self, abi: &str, part: Part) -> Result<PathBuf> {
        let dir = self.part_dir(abi, part);
        if cache::is_complete(&dir, false)? {
            return Ok(dir);
        }
        let _lock = self
            .cache
            .lock(&format!("kernel-{abi}-{}", part.dir_name()))?;
        if cache::is_complete(&dir, false)? {
            return Ok(dir); // another process fetched it while we waited
        }
        let stage = self.cache.staging()?;
        let mut used = Vec::new();
        match part {
            Part::Image => self.fetch_image(abi, stage.path(), &mut used)?,
            Part::Debug => self.fetch_debug(abi, stage.path(), &mut used)?,
            Part::Headers => self.fetch_headers(abi, stage.path(), &mut used)?,
            Part::DebugPackage => self.fetch_debug_package(abi, stage.path())?,
        }
        self.cache.commit(stage, &dir)?;
        if !cache::is_complete(&dir, false)? {
            return Err(cache::incomplete(&dir));
        }
        // the part is what is kept: its packages (up to ~1 GB for -dbg) are not needed again
        for deb in used {
            let _ = fs::remove_file(deb);
        }
        Ok(dir)
    }

    /// The kernel image of a build (fetched when not cached). `name` may be a series.
    pub fn image(&self, name: &str) -> Result<KernelImage> {
        let abi = self.resolve_cached(name, Part::Image)?;
        let dir = self.ensure(&abi, Part::Image)?;
        let fw = dir.join("qemu_fw_cfg.ko");
        Ok(KernelImage {
            vmlinuz: dir.join("vmlinuz"),
            config: dir.join("config"),
            fw_cfg_module: fw.exists().then_some(fw),
            abi,
        })
    }

    /// The debug files of a build (about 1 GB download when not cached).
    pub fn debug(&self, name: &str) -> Result<KernelDebug> {
        let abi = self.resolve_cached(name, Part::Debug)?;
        let dir = self.ensure(&abi, Part::Debug)?;
        Ok(KernelDebug {
            vmlinux: dir.join("vmlinux"),
            system_map: dir.join("System.map"),
            abi,
        })
    }

    /// The `linux-image-<abi>-dbg` package file of a build, kept in the cache (about
    /// 1 GB download when not cached).
    pub fn dbg_package(&self, name: &str) -> Result<PathBuf> {
        let abi = self.resolve_cached(name, Part::DebugPackage)?;
        let dir = self.ensure(&abi, Part::DebugPackage)?;
        find_deb_in(&dir)?.ok_or_else(|| cache::incomplete(&dir))
    }

    /// The headers of a build, unpacked.
    pub fn headers(&self, name: &str) -> Result<KernelHeaders> {
        let abi = self.resolve_cached(name, Part::Headers)?;
        let dir = self.ensure(&abi, Part::Headers)?;
        Ok(KernelHeaders {
            kdir: dir.join("usr/src").join(format!("linux-headers-{abi}")),
            abi,
        })
    }

    /// An exact ABI name whose part is already cached needs no archive look-up (so the
    /// lab works offline once filled); anything else is resolved against the archive.
    fn resolve_cached(&self, name: &str, part: Part) -> Result<String> {
        if let KernelSpec::Abi(abi) = KernelSpec::parse(name)? {
            if cache::is_complete(&self.part_dir(&abi, part), false)? {
                return Ok(abi);
            }
        }
        self.resolve(name)
    }

    fn download(&self, package: &str, used: &mut Vec<PathBuf>) -> Result<PathBuf> {
        let deb = self.archive.download(package, self.visible)?;
        used.push(deb.clone());
        Ok(deb)
    }

    fn has_package(&self, name: &str) -> Result<bool> {
        Ok(self.archive.package_names(name)?.iter().any(|n| n == name))
    }

    fn fetch_image(&self, abi: &str, stage: &Path, used: &mut Vec<PathBuf>) -> Result<()> {
        let fw_glob = format!("*/modules/{abi}/kernel/drivers/firmware/qemu_fw_cfg.ko*");
        let unsigned = format!("linux-image-{abi}-unsigned");
        let tmp = stage.join("x");
        fs::create_dir_all(&tmp).ctx("creating", &tmp)?;
        if self.has_package(&unsigned)? {
            let deb = self.download(&unsigned, used)?;
            let vmlinuz = format!("./boot/vmlinuz-{abi}");
            let config = format!("./boot/config-{abi}");
            extract(&deb, &tmp, &[&vmlinuz, &config], &[&fw_glob], false)?;
            move_into(&tmp.join(&vmlinuz), &stage.join("vmlinuz"))?;
            move_into(&tmp.join(&config), &stage.join("config"))?;
        } else {
            // sid's split layout
            let binary = [
                format!("linux-binary-unsigned-{abi}"),
                format!("linux-binary-{abi}"),
            ];
            let mut found = None;
            for b in &binary {
                if self.has_package(b)? {
                    found = Some(b.clone());
                    break;
                }
            }
            let Some(binary) = found else {
                return Err(Error::UnknownKernel {
                    name: abi.to_string(),
                    closest: closest(abi, &self.available()?),
                });
            };
            let deb = self.download(&binary, used)?;
            let vmlinuz_glob = format!("*/modules/{abi}/vmlinuz*");
            extract(&deb, &tmp, &[], &[&vmlinuz_glob], false)?;
            let found = find_file(&tmp, |p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
            })?
            .ok_or_else(|| Error::MissingMember {
                package: deb.display().to_string(),
                member: vmlinuz_glob.clone(),
            })?;
            move_into(&found, &stage.join("vmlinuz"))?;
            let base = self
                .archive
                .download(&format!("linux-base-{abi}"), self.visible)?;
            let config = format!("./usr/lib/modules/{abi}/config");
            extract(&base, &tmp, &[&config], &[], false)?;
            move_into(&tmp.join(&config), &stage.join("config"))?;
            let modules = format!("linux-modules-{abi}");
            if self.has_package(&modules)? {
                let deb = self.download(&modules, used)?;
                extract(&deb, &tmp, &[], &[&fw_glob], true)?;
            }
        }
        // the fw_cfg module, decompressed (busybox insmod takes plain .ko files)
        if let Some(ko) = find_file(&tmp, |p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("qemu_fw_cfg.ko"))
        })? {
            decompress_module(&ko, &stage.join("qemu_fw_cfg.ko"))?;
        }
        fs::remove_dir_all(&tmp).ctx("removing", &tmp)?;
        Ok(())
    }

    fn fetch_debug_package(&self, abi: &str, stage: &Path) -> Result<()> {
        // the debug part deletes the package it downloaded: never both at once
        let _lock = self
            .cache
            .lock(&format!("kernel-{abi}-{}", Part::Debug.dir_name()))?;
        let deb = self
            .archive
            .download(&format!("linux-image-{abi}-dbg"), self.visible)?;
        let name = deb.file_name().map(PathBuf::from).unwrap_or_default();
        move_into(&deb, &stage.join(name))
    }

    fn fetch_debug(&self, abi: &str, stage: &Path, used: &mut Vec<PathBuf>) -> Result<()> {
        let kept = self.part_dir(abi, Part::DebugPackage);
        let deb = if cache::is_complete(&kept, false)? {
            find_deb_in(&kept)?.ok_or_else(|| cache::incomplete(&kept))?
        } else {
            self.download(&format!("linux-image-{abi}-dbg"), used)?
        };
        // profile-gen's package reader: bookworm's layout has vmlinux before the modules
        // (the walk stops there); sid's has it after 7 GB of module debug info, reached
        // from the end through the xz index instead of decompressing all of it (tar took
        // about 3 minutes of a core per 7.x package)
        let package = deb.display().to_string();
        let kernel = profile_gen::deb::read_dbg_deb(&deb, &mut |_, _| {}).map_err(|e| {
            Error::DebugPackage {
                package: package.clone(),
                message: e.to_string(),
            }
        })?;
        // the package of this ABI, not another build's
        let member_abi_ok = kernel.vmlinux_member.contains(&format!("/{abi}/"))
            || kernel.vmlinux_member.ends_with(&format!("/vmlinux-{abi}"));
        if !member_abi_ok {
            return Err(Error::MissingMember {
                package,
                member: format!("vmlinux of {abi} (found {})", kernel.vmlinux_member),
            });
        }
        let map = kernel.system_map.ok_or_else(|| Error::MissingMember {
            package: package.clone(),
            member: format!("System.map of {abi}"),
        })?;
        let (vmlinux, system_map) = (stage.join("vmlinux"), stage.join("System.map"));
        fs::write(&vmlinux, &kernel.vmlinux).ctx("writing", &vmlinux)?;
        fs::write(&system_map, &map).ctx("writing", &system_map)?;
        Ok(())
    }

    fn fetch_headers(&self, abi: &str, stage: &Path, used: &mut Vec<PathBuf>) -> Result<()> {
        let top = format!("linux-headers-{abi}");
        if !self.has_package(&top)? {
            return Err(Error::UnknownKernel {
                name: top,
                closest: Vec::new(),
            });
        }
        let mut packages = vec![top.clone()];
        for dep in self.archive.depends(&top)? {
            if (dep.starts_with("linux-headers-") && dep.contains("common"))
                || dep.starts_with("linux-kbuild-")
            {
                packages.push(dep);
            }
        }
        for p in &packages {
            let deb = self.download(p, used)?;
            tools::run(DPKG_DEB.command()?.arg("-x").arg(&deb).arg(stage))?;
        }
        let kdir = stage.join("usr/src").join(&top);
        let makefile = kdir.join("Makefile");
        let Ok(text) = fs::read_to_string(&makefile) else {
            return Err(Error::MissingMember {
                package: top,
                member: "usr/src/linux-headers-<abi>/Makefile".into(),
            });
        };
        // Debian's per-flavour Makefile includes the -common tree by absolute path
        // (/usr/src/...); point it at our unpacked tree, relative to the Makefile itself
        // so the entry can be moved into the cache.
        let relocated = text.replace(
            "/usr/src/",
            "$(abspath $(dir $(lastword $(MAKEFILE_LIST)))/..)/",
        );
        fs::write(&makefile, relocated).ctx("writing", &makefile)?;
        Ok(())
    }
}

/// Resolve a parsed spec against the archive's ABI names.
pub fn resolve_in(spec: &KernelSpec, name: &str, available: &[String]) -> Result<String> {
    match spec {
        KernelSpec::Abi(abi) => {
            if available.iter().any(|a| a == abi) {
                Ok(abi.clone())
            } else {
                Err(Error::UnknownKernel {
                    name: name.to_string(),
                    closest: closest(abi, available),
                })
            }
        }
        KernelSpec::Newest { series, flavour } => available
            .iter()
            .filter(|a| flavour_of(a) == Some(flavour.as_str()))
            .filter(|a| {
                version_of(a)
                    .strip_prefix(series.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '-', '+']))
            })
            .max_by(|a, b| compare_versions(a, b))
            .cloned()
            .ok_or_else(|| Error::UnknownKernel {
                name: name.to_string(),
                closest: closest(&format!("{series}-{flavour}"), available),
            }),
    }
}

/// The five names closest to `name` (edit distance, same flavour first).
pub fn closest(name: &str, available: &[String]) -> Vec<String> {
    let flavour = flavour_of(name);
    let mut scored: Vec<(bool, usize, &String)> = available
        .iter()
        .map(|a| (flavour_of(a) != flavour, edit_distance(name, a), a))
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(5)
        .map(|(_, _, a)| a.clone())
        .collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Extract members of a .deb's data archive into `dest`: `exact` names and `globs`
/// (shell patterns). Every exact name and glob must match, except globs when
/// `globs_optional`. With only exact names, tar stops at the last one found.
pub(crate) fn extract(
    deb: &Path,
    dest: &Path,
    exact: &[&str],
    globs: &[&str],
    globs_optional: bool,
) -> Result<()> {
    let mut dpkg = DPKG_DEB.command()?;
    dpkg.arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut dpkg = dpkg.spawn().ctx("running dpkg-deb on", deb)?;
    let stdout = dpkg
        .stdout
        .take()
        .ok_or_else(|| Error::Channel("dpkg-deb stdout".into()))?;
    let mut tar = TAR.command()?;
    tar.arg("-x").arg("-C").arg(dest).arg("-f").arg("-");
    if globs.is_empty() {
        tar.arg("--occurrence=1");
    } else {
        tar.arg("--wildcards");
    }
    tar.args(exact).args(globs).stdin(stdout);
    let out = tar.output().ctx("running tar for", deb)?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        // tar may stop early (--occurrence): dpkg-deb then dies of a broken pipe, fine
        let _ = dpkg.kill();
        let _ = dpkg.wait();
    } else {
        // tar stopped reading, so dpkg-deb ends too; if it failed on its own, the
        // package itself is the problem
        let dpkg_out = dpkg.wait_with_output().ctx("running dpkg-deb on", deb)?;
        use std::os::unix::process::ExitStatusExt;
        let sigpipe = dpkg_out.status.signal() == Some(libc::SIGPIPE);
        if !dpkg_out.status.success() && !sigpipe {
            return Err(Error::Command {
                command: format!("dpkg-deb --fsys-tarfile {}", deb.display()),
                status: dpkg_out.status.to_string(),
                stderr: format!(
                    "{} (the package file is damaged: delete it and fetch again)",
                    tools::tail(&String::from_utf8_lossy(&dpkg_out.stderr), 5)
                ),
            });
        }
        let missing: Vec<&str> = exact
            .iter()
            .chain(globs.iter())
            .filter(|m| stderr.contains(&format!("{m}: Not found in archive")))
            .copied()
            .collect();
        let all_optional = globs_optional && missing.iter().all(|m| globs.contains(m));
        if missing.is_empty() || !all_optional {
            if let Some(m) = missing.first() {
                return Err(Error::MissingMember {
                    package: deb.display().to_string(),
                    member: m.to_string(),
                });
            }
            return Err(Error::Command {
                command: format!("dpkg-deb --fsys-tarfile {} | tar -x", deb.display()),
                status: out.status.to_string(),
                stderr: tools::tail(&stderr, 10),
            });
        }
        // only optional globs were missing: the exact members are checked below
    }
    for m in exact {
        if !dest.join(m).exists() {
            return Err(Error::MissingMember {
                package: deb.display().to_string(),
                member: m.to_string(),
            });
        }
    }
    Ok(())
}

/// The one `.deb` file in a cache entry.
fn find_deb_in(dir: &Path) -> Result<Option<PathBuf>> {
    find_file(dir, |p| p.extension().is_some_and(|e| e == "deb"))
}

fn move_into(src: &Path, dest: &Path) -> Result<()> {
    fs::rename(src, dest).ctx("moving into place", dest)
}

pub(crate) fn find_file(dir: &Path, pred: impl Fn(&Path) -> bool) -> Result<Option<PathBuf>> {
    for entry in walkdir::WalkDir::new(dir).min_depth(1) {
        let entry = entry.ctx("listing", dir)?;
        if entry.file_type().is_file() && pred(entry.path()) {
            return Ok(Some(entry.into_path()));
        }
    }
    Ok(None)
}

pub(crate) fn decompress_module(src: &Path, dest: &Path) -> Result<()> {
    let name = src.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some(XZ)
    } else if name.ends_with(".zst") {
        Some(ZSTD)
    } else {
        None
    };
    match tool {
        None => move_into(src, dest),
        Some(tool) => {
            let out = tools::run(Command::new(tool.find()?).arg("-dc").arg(src))?;
            fs::write(dest, &out.stdout).ctx("writing", dest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        [
            "5.10.0-45-amd64",
            "5.10.0-46-amd64",
            "6.1.0-56-amd64",
            "6.1.0-56-rt-amd64",
            "6.12.117+deb12-amd64",
            "6.12.118+deb13-amd64",
            "6.1.0-0.deb11.52-amd64",
            "7.2.13+deb14-amd64",
            "7.2.9+deb14-amd64",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn parses_names() {
        assert_eq!(
            KernelSpec::parse("6.1.0-56-amd64").unwrap(),
            KernelSpec::Abi("6.1.0-56-amd64".into())
        );
        assert_eq!(
            KernelSpec::parse("newest:6.12-rt-amd64").unwrap(),
            KernelSpec::Newest {
                series: "6.12".into(),
                flavour: "rt-amd64".into()
            }
        );
        assert!(KernelSpec::parse("newest:").is_err());
        assert!(KernelSpec::parse("6.1.0-56").is_err());
        assert!(KernelSpec::parse("../6.1-amd64").is_err());
        assert!(KernelSpec::parse("amd64").is_err());
    }

    #[test]
    fn flavours_and_versions() {
        assert_eq!(flavour_of("6.1.0-56-rt-amd64"), Some("rt-amd64"));
        assert_eq!(flavour_of("6.1.0-56-cloud-amd64"), Some("cloud-amd64"));
        assert_eq!(flavour_of("6.1.0-56-amd64"), Some("amd64"));
        assert_eq!(version_of("6.12.117+deb12-amd64"), "6.12.117+deb12");
    }

    #[test]
    fn resolves_series_to_newest() {
        let n = names();
        let spec = KernelSpec::parse("newest:7").unwrap();
        assert_eq!(
            resolve_in(&spec, "newest:7", &n).unwrap(),
            "7.2.13+deb14-amd64"
        );
        let spec = KernelSpec::parse("newest:6.1").unwrap();
        // 6.1 must not match 6.12
        assert_eq!(
            resolve_in(&spec, "newest:6.1", &n).unwrap(),
            "6.1.0-56-amd64"
        );
        let spec = KernelSpec::parse("newest:6.1-rt-amd64").unwrap();
        assert_eq!(resolve_in(&spec, "x", &n).unwrap(), "6.1.0-56-rt-amd64");
        let spec = KernelSpec::parse("newest:8").unwrap();
        assert!(matches!(
            resolve_in(&spec, "newest:8", &n),
            Err(Error::UnknownKernel { .. })
        ));
    }

    #[test]
    fn unknown_name_lists_closest() {
        let spec = KernelSpec::parse("6.1.0-57-amd64").unwrap();
        let err = resolve_in(&spec, "6.1.0-57-amd64", &names()).unwrap_err();
        let Error::UnknownKernel { closest, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(closest[0], "6.1.0-56-amd64");
        assert!(err.to_string().contains("6.1.0-56-amd64"));
    }

    #[test]
    fn damaged_package_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("bad.deb");
        fs::write(&deb, b"!<arch>\nthis is not a Debian package\n").unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let err = extract(&deb, &out, &["./boot/vmlinuz-x"], &[], false).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Command { .. }), "{msg}");
        assert!(msg.contains("damaged"), "{msg}");
    }

    #[test]
    fn version_order_is_numeric() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("7.2.9+deb14", "7.2.13+deb14"), Less);
        assert_eq!(compare_versions("6.1.0-56", "6.1.0-6"), Greater);
        assert_eq!(compare_versions("6.12.1", "6.12.1"), Equal);
    }
}
