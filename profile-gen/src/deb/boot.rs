//! The boot image (vmlinuz) read straight out of a kernel image package, and which
//! kernel file a kernel package holds.
//!
//! `linux-image-<abi>[-unsigned]` holds `/boot/vmlinuz-<abi>`; sid's split packages
//! (`linux-binary-<abi>` and friends) hold `/usr/lib/modules/<abi>/vmlinuz`. A -dbg
//! package holds the vmlinux instead ([`super::read_dbg_deb`]). [`read_kernel_deb`]
//! tells them apart by the control file's package name (a -dbg package's data is 5-8 GB
//! of tar: it is never walked looking for a boot image) and reads the one the package
//! has. The boot image is checked against the package's md5sums like the vmlinux.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use crate::error::{Error, Result};

use super::control::read_control;
use super::decode::Compression;
use super::scan::Found;
use super::source::{At, FileSource, Source};
use super::tar::{normalize, TarReader};
use super::DebKernel;

/// The largest boot image read into memory (Debian's are 8-14 MB).
pub const MAX_BOOT_IMAGE: u64 = 256 << 20;

/// A boot image read out of a package.
#[derive(Clone)]
pub struct DebBootImage {
    /// The bzImage.
    pub vmlinuz: Vec<u8>,
    /// Its member name in the data archive, e.g. `./boot/vmlinuz-6.1.0-56-amd64`.
    pub member: String,
    /// `Package Version` from the control file, when it could be read.
    pub package: Option<String>,
}

impl std::fmt::Debug for DebBootImage {
    /// Sizes, not contents.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebBootImage")
            .field("vmlinuz", &format_args!("{} bytes", self.vmlinuz.len()))
            .field("member", &self.member)
            .field("package", &self.package)
            .finish()
    }
}

/// The kernel file of a kernel package.
#[derive(Debug, Clone)]
pub enum DebKernelFile {
    /// A -dbg package's vmlinux (and System.map).
    Vmlinux(DebKernel),
    /// An image package's boot image.
    BootImage(DebBootImage),
}

/// Whether `path` (in a data archive) is a boot image: `boot/vmlinuz-<abi>` or
/// `usr/lib/modules/<abi>/vmlinuz` (or `lib/modules/...`); its ABI when it is.
pub(super) fn boot_image_abi(path: &str) -> Option<&str> {
    let p = normalize(path);
    let single = |s: &&str| !s.is_empty() && !s.contains('/');
    if let Some(abi) = p.strip_prefix("boot/vmlinuz-").filter(single) {
        return Some(abi);
    }
    let rest = p
        .strip_prefix("usr/lib/modules/")
        .or_else(|| p.strip_prefix("lib/modules/"))?;
    rest.strip_suffix("/vmlinuz").filter(single)
}

/// Read the kernel file of a package: the vmlinux of a `-dbg` package (as
/// [`super::read_dbg_deb`], `progress` likewise), else the boot image of an image package.
///
/// Errors: [`Error::Io`] when the file cannot be opened; [`Error::Input`] when it is not
/// a .deb, is damaged, or holds neither (naming what it holds).
pub fn read_kernel_deb(path: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<DebKernelFile> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    let src = FileSource { file, size };
    let package = package_name(&src, path)?;
    if package
        .as_deref()
        .and_then(|p| p.split(' ').next())
        .is_some_and(|name| name.ends_with("-dbg"))
    {
        return super::read_deb(&src, path, progress).map(DebKernelFile::Vmlinux);
    }
    read_boot_image(&src, path).map(DebKernelFile::BootImage)
}

/// The control file's `Package Version`, after checking the file is a .deb.
fn package_name<S: Source + ?Sized>(src: &S, path: &Path) -> Result<Option<String>> {
    let members = super::deb_members(src, path)?;
    Ok(members
        .iter()
        .find(|m| m.name.starts_with("control.tar"))
        .and_then(|m| read_control(src, m).ok())
        .and_then(|c| c.package))
}

/// The boot image of an image package (the whole data archive is walked when it has
/// none: an image package's is 70-120 MB).
pub(super) fn read_boot_image<S: Source + ?Sized>(src: &S, path: &Path) -> Result<DebBootImage> {
    let input = |message: String| Error::Input {
        path: path.to_path_buf(),
        message,
    };
    let members = super::deb_members(src, path)?;
    let control = members
        .iter()
        .find(|m| m.name.starts_with("control.tar"))
        .and_then(|m| read_control(src, m).ok())
        .unwrap_or_default();
    let data = members
        .iter()
        .find(|m| m.name.starts_with("data.tar"))
        .ok_or_else(|| input("the package has no data.tar.* member".into()))?;
    let compression = Compression::of(&data.name).ok_or_else(|| {
        input(format!(
            "ar member `{}`: unsupported compression (data.tar.xz, .zst, .gz, .lzma and \
             plain data.tar are read)",
            data.name
        ))
    })?;
    let in_data = |e: String| input(format!("ar member `{}`: {e}", data.name));
    let stream = compression
        .decoder(BufReader::with_capacity(
            1 << 20,
            At::new(src, data.offset, data.size),
        ))
        .map_err(in_data)?;
    let mut tar = TarReader::new(stream);
    let mut files = 0u64;
    let mut first_file = None;
    while let Some(entry) = tar.next_entry().map_err(in_data)? {
        if !entry.is_file() {
            continue;
        }
        files += 1;
        if first_file.is_none() {
            first_file = Some(entry.path.clone());
        }
        if boot_image_abi(&entry.path).is_none() {
            continue;
        }
        let found = Found::read(&mut tar, &entry, MAX_BOOT_IMAGE, true).map_err(in_data)?;
        control.check(&found).map_err(in_data)?;
        return Ok(DebBootImage {
            vmlinuz: found.data,
            member: found.member,
            package: control.package,
        });
    }
    let what = match (&control.package, first_file) {
        (Some(p), Some(f)) => format!("{p} holds {files} files such as {f}"),
        (None, Some(f)) => format!("it holds {files} files such as {f}"),
        (_, None) => "its data archive holds no files".into(),
    };
    Err(input(format!(
        "no kernel in this package (looked for ./boot/vmlinuz-<abi> and \
         ./usr/lib/modules/<abi>/vmlinuz); {what}; give the linux-image-<abi> package of \
         the guest's kernel (or its -dbg package, or the vmlinuz itself)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deb::testdata::*;

    fn read(bytes: &[u8]) -> Result<DebBootImage> {
        read_boot_image(bytes, Path::new("test.deb"))
    }

    #[test]
    fn boot_images_of_both_layouts() {
        assert_eq!(boot_image_abi("./boot/vmlinuz-6.1.0-56-amd64"), Some(ABI));
        assert_eq!(
            boot_image_abi("./usr/lib/modules/7.2.13+deb14-amd64/vmlinuz"),
            Some("7.2.13+deb14-amd64")
        );
        assert_eq!(boot_image_abi("./boot/vmlinuz-"), None);
        assert_eq!(boot_image_abi("./boot/config-6.1.0-56-amd64"), None);
        assert_eq!(boot_image_abi("./usr/lib/modules/a/b/vmlinuz"), None);
        assert_eq!(
            boot_image_abi("./usr/lib/debug/boot/vmlinux-6.1.0-56-amd64"),
            None
        );
    }

    #[test]
    fn the_boot_image_is_read_and_checked() {
        let image = b"MZ\0\0 a bzImage".repeat(100);
        for member in [
            format!("./boot/vmlinuz-{ABI}"),
            format!("./usr/lib/modules/{ABI}/vmlinuz"),
        ] {
            let mut t = Vec::new();
            add(&mut t, "./", b"", b'5');
            add(
                &mut t,
                &format!("./boot/config-{ABI}"),
                b"CONFIG_X=y\n",
                b'0',
            );
            add(&mut t, &member, &image, b'0');
            end(&mut t);
            let pkg = deb(&control_tar("linux-image-x"), "data.tar.xz", &xz(&t));
            let got = read(&pkg).unwrap();
            assert_eq!(got.vmlinuz, image);
            assert_eq!(got.member, member);
            assert_eq!(got.package.as_deref(), Some("linux-image-x 6.1.192-2"));
        }
    }

    #[test]
    fn a_damaged_boot_image_is_refused_by_the_md5sums() {
        let image = b"MZ a bzImage".to_vec();
        let member = format!("./boot/vmlinuz-{ABI}");
        let mut t = Vec::new();
        add(&mut t, &member, &image, b'0');
        end(&mut t);
        let mut c = Vec::new();
        add(
            &mut c,
            "./control",
            b"Package: linux-image-x\nVersion: 1\n",
            b'0',
        );
        let sums = format!("{}  boot/vmlinuz-{ABI}\n", md5_hex(b"something else"));
        add(&mut c, "./md5sums", sums.as_bytes(), b'0');
        end(&mut c);
        let msg = read(&deb(&c, "data.tar.xz", &xz(&t)))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("damaged"), "{msg}");
    }

    #[test]
    fn a_package_without_a_kernel_says_what_it_holds() {
        let mut t = Vec::new();
        add(&mut t, "./usr/share/doc/x/copyright", b"c", b'0');
        end(&mut t);
        let msg = read(&deb(
            &control_tar("linux-headers-x"),
            "data.tar.xz",
            &xz(&t),
        ))
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("no kernel in this package")
                && msg.contains(
                    "linux-headers-x 6.1.192-2 holds 1 files such as ./usr/share/doc/x/copyright"
                ),
            "{msg}"
        );
        let msg = read(b"junk, not an archive").unwrap_err().to_string();
        assert!(msg.contains("not"), "{msg}");
    }
}
