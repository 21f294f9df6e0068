//! The kernels `lab validate` is given, as files: what each `KERNEL` argument names and
//! the files found beside it.
//!
//! An argument is
//! - a boot image (`vmlinuz`, a bzImage);
//! - a `linux-image` (or `linux-binary`) `.deb` holding one (`./boot/vmlinuz-*`, or sid's
//!   `usr/lib/modules/*/vmlinuz`), its modules taken from the same package;
//! - a directory: each `vmlinuz-<release>` in it, and each `linux-image-<release>*.deb`
//!   whose release has no `vmlinuz-<release>` there.
//!
//! Beside a `vmlinuz-<release>` (same directory, same release), all optional:
//! `modules-<release>/` (a copy of `/lib/modules/<release>`) or a
//! `linux-image-<release>*.deb` / `linux-modules-<release>*.deb` for the modules the guest
//! loads at boot (`qemu_fw_cfg`, which hands the guest's VMCOREINFO to QEMU, when the
//! kernel has it as a module); `vmlinux-<release>` (DWARF) with `System.map-<release>`, or
//! `linux-image-<release>-dbg*.deb`, to make the profile from DWARF instead of the boot
//! image.
//!
//! Resolution only looks at names; the files' contents are checked when each kernel is
//! validated ([`bzimage_release`]), so one bad file fails its own kernel's report.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Where a kernel's modules come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modules {
    /// A directory tree holding `.ko` files (compressed or not).
    Dir(PathBuf),
    /// A Debian package holding them.
    Deb(PathBuf),
}

/// Where a kernel's DWARF comes from, to make its profile from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dwarf {
    /// A vmlinux with DWARF, and its System.map when there is one.
    Vmlinux {
        /// The vmlinux.
        vmlinux: PathBuf,
        /// Its System.map.
        system_map: Option<PathBuf>,
    },
    /// A `linux-image-<release>-dbg` package (profile-gen reads it in place).
    DbgDeb(PathBuf),
}

/// Where the boot image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootImage {
    /// A vmlinuz file.
    File(PathBuf),
    /// Inside a Debian package, extracted when the kernel is validated.
    Deb(PathBuf),
}

/// One kernel to validate, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFiles {
    /// Its name in reports: the release its file name gives, else the file name.
    pub name: String,
    /// The boot image.
    pub image: BootImage,
    /// Its modules, when given.
    pub modules: Option<Modules>,
    /// Its DWARF, when given.
    pub dwarf: Option<Dwarf>,
}

/// The kernels the arguments name, in order (a directory's sorted by name).
pub fn resolve(args: &[PathBuf]) -> Result<Vec<KernelFiles>> {
    let mut kernels = Vec::new();
    for arg in args {
        let meta = fs::metadata(arg).ctx("reading", arg)?;
        if meta.is_dir() {
            let found = resolve_dir(arg)?;
            if found.is_empty() {
                return Err(Error::KernelFiles {
                    path: arg.clone(),
                    message: "holds no vmlinuz-<release> and no linux-image-<release>*.deb: \
                              name boot images vmlinuz-<release> (as in /boot)"
                        .into(),
                });
            }
            kernels.extend(found);
        } else if is_deb(arg) {
            kernels.push(from_deb(arg));
        } else {
            kernels.push(from_vmlinuz(arg));
        }
    }
    Ok(kernels)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn is_deb(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "deb")
}

/// The release in a package file name: `linux-image-<release>[-unsigned|-dbg]_<ver>_<arch>.deb`
/// (also `linux-binary-`, `linux-modules-`), and whether it is a -dbg package.
pub fn deb_release(name: &str) -> Option<(String, bool)> {
    let stem = name.strip_suffix(".deb")?;
    let package = stem.split('_').next()?;
    let rest = [
        "linux-image-",
        "linux-binary-unsigned-",
        "linux-binary-",
        "linux-modules-",
    ]
    .iter()
    .find_map(|p| package.strip_prefix(p))?;
    if let Some(r) = rest.strip_suffix("-dbg") {
        return Some((r.to_string(), true));
    }
    let r = rest.strip_suffix("-unsigned").unwrap_or(rest);
    (!r.is_empty()).then(|| (r.to_string(), false))
}

fn from_deb(deb: &Path) -> KernelFiles {
    let release = deb_release(&file_name(deb)).map(|(r, _)| r);
    // its DWARF may be beside it too (vmlinux-<release>, the -dbg package)
    let dwarf = match (&release, deb.parent()) {
        (Some(release), Some(dir)) => beside(dir, release).1,
        _ => None,
    };
    KernelFiles {
        name: release.unwrap_or_else(|| file_name(deb)),
        image: BootImage::Deb(deb.to_path_buf()),
        modules: Some(Modules::Deb(deb.to_path_buf())),
        dwarf,
    }
}

fn from_vmlinuz(vmlinuz: &Path) -> KernelFiles {
    let name = file_name(vmlinuz);
    let release = name.strip_prefix("vmlinuz-").filter(|r| !r.is_empty());
    let (modules, dwarf) = match (release, vmlinuz.parent()) {
        (Some(release), Some(dir)) => beside(dir, release),
        _ => (None, None),
    };
    KernelFiles {
        name: release.unwrap_or(&name).to_string(),
        image: BootImage::File(vmlinuz.to_path_buf()),
        modules,
        dwarf,
    }
}

/// The directory's entries, sorted by name.
fn listing(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .ctx("listing", dir)?
        .map(|e| e.map(|e| e.path()).ctx("listing", dir))
        .collect::<Result<_>>()?;
    entries.sort();
    Ok(entries)
}

/// The modules and DWARF beside `vmlinuz-<release>` in `dir`.
fn beside(dir: &Path, release: &str) -> (Option<Modules>, Option<Dwarf>) {
    let entries = listing(dir).unwrap_or_default();
    let debs: Vec<(&PathBuf, bool)> = entries
        .iter()
        .filter(|p| is_deb(p))
        .filter_map(|p| {
            let (r, dbg) = deb_release(&file_name(p))?;
            (r == release).then_some((p, dbg))
        })
        .collect();
    let modules_dir = dir.join(format!("modules-{release}"));
    let modules = if modules_dir.is_dir() {
        Some(Modules::Dir(modules_dir))
    } else {
        debs.iter()
            .find(|(_, dbg)| !dbg)
            .map(|(p, _)| Modules::Deb(p.to_path_buf()))
    };
    let vmlinux = dir.join(format!("vmlinux-{release}"));
    let map = dir.join(format!("System.map-{release}"));
    let dwarf = if vmlinux.is_file() {
        Some(Dwarf::Vmlinux {
            vmlinux,
            system_map: map.is_file().then_some(map),
        })
    } else {
        debs.iter()
            .find(|(_, dbg)| *dbg)
            .map(|(p, _)| Dwarf::DbgDeb(p.to_path_buf()))
    };
    (modules, dwarf)
}

fn resolve_dir(dir: &Path) -> Result<Vec<KernelFiles>> {
    let entries = listing(dir)?;
    let mut kernels: Vec<KernelFiles> = entries
        .iter()
        .filter(|p| p.is_file() && file_name(p).starts_with("vmlinuz-"))
        .map(|p| from_vmlinuz(p))
        .collect();
    for p in entries.iter().filter(|p| p.is_file() && is_deb(p)) {
        let name = file_name(p);
        let Some((release, false)) = deb_release(&name) else {
            continue;
        };
        let is_image = name.starts_with("linux-image-") || name.starts_with("linux-binary-");
        if is_image && !kernels.iter().any(|k| k.name == release) {
            kernels.push(from_deb(p));
        }
    }
    Ok(kernels)
}

/// The x86 boot protocol's setup header is within the first 32 KiB (setup_sects < 64).
const SETUP_MAX: u64 = 64 * 512;

/// The release a bzImage's setup header names (its `kernel_version` string, up to the
/// first space), or what is wrong with the file, said so that the user knows what to give
/// instead.
pub fn bzimage_release(path: &Path) -> Result<String> {
    let bad = |message: String| Error::KernelFiles {
        path: path.to_path_buf(),
        message,
    };
    let mut head = Vec::new();
    fs::File::open(path)
        .ctx("opening", path)?
        .take(SETUP_MAX)
        .read_to_end(&mut head)
        .ctx("reading", path)?;
    if head.starts_with(b"\x7fELF") {
        return Err(bad(
            "is an ELF file (a vmlinux?), not a boot image: give the \
             compressed bzImage (arch/x86/boot/bzImage, /boot/vmlinuz-<release>); a vmlinux \
             goes beside it as vmlinux-<release> for a DWARF profile"
                .into(),
        ));
    }
    if head.get(0x202..0x206) != Some(b"HdrS") {
        return Err(bad(
            "is not an x86 bzImage (no \"HdrS\" setup header at 0x202): give the \
             compressed boot image (arch/x86/boot/bzImage, /boot/vmlinuz-<release>)"
                .into(),
        ));
    }
    let offset = head
        .get(0x20e..0x210)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .unwrap_or(0);
    let start = 0x200 + usize::from(offset);
    let text = head
        .get(start..)
        .filter(|_| offset != 0)
        .map(|t| &t[..t.len().min(256)])
        .ok_or_else(|| bad(format!("its setup header's kernel_version ({offset:#x}) points outside the setup code: a damaged bzImage")))?;
    let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(text.len())];
    let release = String::from_utf8_lossy(text)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    if release.is_empty() {
        return Err(bad(
            "its setup header names no kernel version: a damaged bzImage".into(),
        ));
    }
    Ok(release)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with a bzImage setup header naming `version`.
    fn fake_bzimage(path: &Path, version: &str) {
        let mut img = vec![0u8; 0x1000];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20e..0x210].copy_from_slice(&0x200u16.to_le_bytes());
        img[0x400..0x400 + version.len()].copy_from_slice(version.as_bytes());
        fs::write(path, img).unwrap();
    }

    #[test]
    fn package_names_give_their_release() {
        let r = |n: &str| deb_release(n);
        assert_eq!(
            r("linux-image-6.1.0-56-amd64-unsigned_6.1.170-1_amd64.deb"),
            Some(("6.1.0-56-amd64".into(), false))
        );
        assert_eq!(
            r("linux-image-6.1.0-56-amd64-dbg_6.1.170-1_amd64.deb"),
            Some(("6.1.0-56-amd64".into(), true))
        );
        assert_eq!(
            r("linux-image-6.12.117+deb12-amd64_6.12.117-1_amd64.deb"),
            Some(("6.12.117+deb12-amd64".into(), false))
        );
        assert_eq!(
            r("linux-modules-7.2.13+deb14-amd64_7.2.13-1_amd64.deb"),
            Some(("7.2.13+deb14-amd64".into(), false))
        );
        assert_eq!(r("busybox_1.35_amd64.deb"), None);
        assert_eq!(r("linux-image-.deb"), None);
        assert_eq!(r("vmlinuz-6.1"), None);
    }

    #[test]
    fn a_directory_gives_each_vmlinuz_with_what_is_beside_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        fake_bzimage(&p.join("vmlinuz-6.1.0-56-amd64"), "6.1.0-56-amd64 (x) #1");
        fake_bzimage(&p.join("vmlinuz-6.12.9-custom"), "6.12.9-custom (y) #1");
        fs::create_dir(p.join("modules-6.12.9-custom")).unwrap();
        fs::write(p.join("vmlinux-6.12.9-custom"), b"\x7fELF").unwrap();
        fs::write(p.join("System.map-6.12.9-custom"), b"").unwrap();
        fs::write(
            p.join("linux-image-6.1.0-56-amd64-unsigned_1_amd64.deb"),
            b"",
        )
        .unwrap();
        fs::write(p.join("linux-image-6.1.0-56-amd64-dbg_1_amd64.deb"), b"").unwrap();
        // a package of a release with no vmlinuz beside is a kernel of its own
        fs::write(p.join("linux-image-7.2.13+deb14-amd64_1_amd64.deb"), b"").unwrap();
        fs::write(p.join("README"), b"").unwrap();
        let ks = resolve(&[p.to_path_buf()]).unwrap();
        let names: Vec<&str> = ks.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(
            names,
            ["6.1.0-56-amd64", "6.12.9-custom", "7.2.13+deb14-amd64"]
        );
        assert_eq!(
            ks[0].modules,
            Some(Modules::Deb(
                p.join("linux-image-6.1.0-56-amd64-unsigned_1_amd64.deb")
            ))
        );
        assert_eq!(
            ks[0].dwarf,
            Some(Dwarf::DbgDeb(
                p.join("linux-image-6.1.0-56-amd64-dbg_1_amd64.deb")
            ))
        );
        assert_eq!(
            ks[1].modules,
            Some(Modules::Dir(p.join("modules-6.12.9-custom")))
        );
        assert_eq!(
            ks[1].dwarf,
            Some(Dwarf::Vmlinux {
                vmlinux: p.join("vmlinux-6.12.9-custom"),
                system_map: Some(p.join("System.map-6.12.9-custom")),
            })
        );
        assert!(matches!(ks[2].image, BootImage::Deb(_)));
        assert!(matches!(ks[2].modules, Some(Modules::Deb(_))));
        assert_eq!(ks[2].dwarf, None);
        // a package named alone finds its -dbg package beside it
        let deb = p.join("linux-image-6.1.0-56-amd64-unsigned_1_amd64.deb");
        let ks = resolve(std::slice::from_ref(&deb)).unwrap();
        assert_eq!(ks[0].name, "6.1.0-56-amd64");
        assert_eq!(ks[0].image, BootImage::Deb(deb));
        assert_eq!(
            ks[0].dwarf,
            Some(Dwarf::DbgDeb(
                p.join("linux-image-6.1.0-56-amd64-dbg_1_amd64.deb")
            ))
        );
    }

    #[test]
    fn files_name_themselves_and_bad_arguments_say_what_to_give() {
        let d = tempfile::tempdir().unwrap();
        let bz = d.path().join("bzImage");
        fake_bzimage(&bz, "6.12.117 (rust@lab) #1 SMP");
        let ks = resolve(std::slice::from_ref(&bz)).unwrap();
        assert_eq!(ks[0].name, "bzImage");
        assert_eq!(ks[0].modules, None);
        assert_eq!(bzimage_release(&bz).unwrap(), "6.12.117");

        let missing = d.path().join("nope");
        let e = resolve(&[missing]).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        let empty = d.path().join("empty");
        fs::create_dir(&empty).unwrap();
        let e = resolve(&[empty]).unwrap_err().to_string();
        assert!(e.contains("vmlinuz-<release>"), "{e}");

        let elf = d.path().join("vmlinux");
        fs::write(&elf, b"\x7fELF\x02\x01").unwrap();
        let e = bzimage_release(&elf).unwrap_err().to_string();
        assert!(e.contains("ELF") && e.contains("bzImage"), "{e}");
        let junk = d.path().join("junk");
        fs::write(&junk, vec![0xffu8; 100]).unwrap();
        let e = bzimage_release(&junk).unwrap_err().to_string();
        assert!(e.contains("not an x86 bzImage"), "{e}");
        // a version pointer past the end of the setup code
        let mut img = vec![0u8; 0x300];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20e..0x210].copy_from_slice(&0x7000u16.to_le_bytes());
        fs::write(&junk, img).unwrap();
        let e = bzimage_release(&junk).unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
    }
}
