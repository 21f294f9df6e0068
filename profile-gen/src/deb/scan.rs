//! Finding vmlinux and System.map in the data archive: which member is which, reading
//! them (with their md5), and what a package without vmlinux is instead.

use std::io::Read;

use md5::{Digest, Md5};

use super::tar::{normalize, TarEntry, TarReader};
use super::{MAX_SYSTEM_MAP, MAX_VMLINUX};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Vmlinux,
    SystemMap,
}

/// What a member is, with its ABI and directory: `usr/lib/debug/boot/vmlinux-<abi>`,
/// `usr/lib/debug/lib/modules/<abi>/vmlinux` and the same for System.map.
pub(super) fn classify(path: &str) -> Option<(Role, &str, &str)> {
    let p = normalize(path);
    let single = |s: &str| !s.is_empty() && !s.contains('/');
    if let Some(file) = p.strip_prefix("usr/lib/debug/boot/") {
        let dir = &p[..p.len() - file.len()];
        if let Some(abi) = file.strip_prefix("vmlinux-").filter(|a| single(a)) {
            return Some((Role::Vmlinux, abi, dir));
        }
        if let Some(abi) = file.strip_prefix("System.map-").filter(|a| single(a)) {
            return Some((Role::SystemMap, abi, dir));
        }
    }
    if let Some(rest) = p.strip_prefix("usr/lib/debug/lib/modules/") {
        let (abi, file) = rest.split_once('/')?;
        let dir = &p[..p.len() - file.len()];
        if single(abi) {
            match file {
                "vmlinux" => return Some((Role::Vmlinux, abi, dir)),
                "System.map" => return Some((Role::SystemMap, abi, dir)),
                _ => {}
            }
        }
    }
    None
}

/// What was seen of a package without vmlinux, to say what it is.
#[derive(Debug, Default)]
pub(super) struct Hints {
    /// `boot/vmlinuz-<abi>`: a boot image package.
    vmlinuz: Option<String>,
    /// `lib/modules/<abi>/...` or `usr/lib/modules/<abi>/...`.
    modules_abi: Option<String>,
    files: u64,
    first_file: Option<String>,
}

impl Hints {
    fn note(&mut self, entry: &TarEntry) {
        if !entry.is_file() && entry.kind != b'2' {
            return;
        }
        let p = normalize(&entry.path);
        if self.vmlinuz.is_none() {
            if let Some(abi) = p.strip_prefix("boot/vmlinuz-") {
                if !abi.is_empty() && !abi.contains('/') {
                    self.vmlinuz = Some(entry.path.clone());
                }
            }
        }
        if self.modules_abi.is_none() {
            let rest = p
                .strip_prefix("lib/modules/")
                .or_else(|| p.strip_prefix("usr/lib/modules/"));
            if let Some((abi, _)) = rest.and_then(|r| r.split_once('/')) {
                if !abi.is_empty() {
                    self.modules_abi = Some(abi.to_string());
                }
            }
        }
        if entry.is_file() {
            self.files += 1;
            if self.first_file.is_none() {
                self.first_file = Some(entry.path.clone());
            }
        }
    }

    fn abi(&self) -> Option<&str> {
        self.vmlinuz
            .as_deref()
            .and_then(|v| normalize(v).strip_prefix("boot/vmlinuz-"))
            .or(self.modules_abi.as_deref())
    }
}

/// A member read from the data archive.
#[derive(Debug)]
pub(super) struct Found {
    pub(super) member: String,
    pub(super) data: Vec<u8>,
    /// Lowercase hex; `None` when the data was verified otherwise (xz block checks).
    pub(super) md5: Option<String>,
}

impl Found {
    /// Read `entry`'s data, with its md5 when `hash`.
    pub(super) fn read<R: Read>(
        tar: &mut TarReader<R>,
        entry: &TarEntry,
        cap: u64,
        hash: bool,
    ) -> Result<Found, String> {
        let mut md5 = hash.then(Md5::new);
        let data = tar.read_data(entry, cap, &mut |piece| {
            if let Some(md5) = &mut md5 {
                md5.update(piece);
            }
        })?;
        Ok(Found {
            member: entry.path.clone(),
            data,
            md5: md5.map(|m| hex::encode(m.finalize())),
        })
    }
}

/// What the data archive gave so far.
#[derive(Debug, Default)]
pub(super) struct Scan {
    pub(super) vmlinux: Option<Found>,
    pub(super) system_map: Option<Found>,
    /// The vmlinux's ABI and directory.
    vmlinux_at: Option<(String, String)>,
    /// The ABI of the System.map read.
    map_abi: Option<String>,
    /// Hash vmlinux for md5sums (not needed when xz block checks cover it).
    pub(super) hash_vmlinux: bool,
    pub(super) hints: Hints,
}

/// Walk the data tar until vmlinux and its System.map are read (or the map is known to
/// be absent), or to the end. With `defer`, stop at the first module debug file of
/// `usr/lib/debug/lib/modules/<abi>/` when no vmlinux was read yet (its vmlinux sorts
/// after them) and return that ABI; the walk can go on with another call.
pub(super) fn scan_data<R: Read>(
    tar: &mut TarReader<R>,
    scan: &mut Scan,
    defer: bool,
) -> Result<Option<String>, String> {
    while let Some(entry) = tar.next_entry()? {
        if let Some((_, dir)) = &scan.vmlinux_at {
            // archivers list a directory's entries together: once the stream has left the
            // vmlinux's directory, its System.map is not in the package
            if !normalize(&entry.path).starts_with(dir.as_str()) {
                break;
            }
        }
        scan.hints.note(&entry);
        if !entry.is_file() {
            continue;
        }
        match classify(&entry.path) {
            Some((Role::Vmlinux, abi, dir)) if scan.vmlinux.is_none() => {
                if entry.size > MAX_VMLINUX {
                    return Err(too_large(&entry.path, entry.header_offset, entry.size));
                }
                let found = Found::read(tar, &entry, MAX_VMLINUX, scan.hash_vmlinux)?;
                check_elf(&found.data, &entry.path, entry.header_offset)?;
                scan.found_vmlinux(found, abi, dir);
            }
            Some((Role::SystemMap, abi, _)) if scan.system_map.is_none() => {
                if scan.vmlinux_at.as_ref().is_some_and(|(v, _)| v != abi) {
                    continue;
                }
                scan.map_abi = Some(abi.to_string());
                scan.system_map = Some(Found::read(tar, &entry, MAX_SYSTEM_MAP, true)?);
            }
            None if defer && scan.vmlinux.is_none() => {
                let abi = normalize(&entry.path)
                    .strip_prefix("usr/lib/debug/lib/modules/")
                    .and_then(|rest| rest.split_once('/'))
                    .map(|(abi, _)| abi)
                    .filter(|abi| !abi.is_empty());
                if let Some(abi) = abi {
                    return Ok(Some(abi.to_string()));
                }
            }
            _ => {}
        }
        if scan.vmlinux.is_some() && scan.system_map.is_some() {
            break;
        }
    }
    Ok(None)
}

impl Scan {
    pub(super) fn found_vmlinux(&mut self, found: Found, abi: &str, dir: &str) {
        if self.map_abi.as_deref().is_some_and(|m| m != abi) {
            self.system_map = None; // another kernel's map
        }
        self.vmlinux_at = Some((abi.to_string(), dir.to_string()));
        self.vmlinux = Some(found);
    }
}

pub(super) fn too_large(member: &str, header_offset: u64, size: u64) -> String {
    format!(
        "`{member}` (tar header at offset {header_offset}) is {size} bytes: profile-gen \
         refuses a vmlinux larger than 4 GiB"
    )
}

pub(super) fn check_elf(data: &[u8], member: &str, header_offset: u64) -> Result<(), String> {
    if data.starts_with(b"\x7fELF") {
        Ok(())
    } else {
        Err(format!(
            "`{member}` (tar header at offset {header_offset}) is not an ELF file"
        ))
    }
}

/// The error for a package without vmlinux: what it is and what to give instead.
pub(super) fn not_dbg_message(package: Option<&str>, hints: &Hints) -> String {
    let what = match package {
        Some(p) => format!("this is {p}"),
        None => "this package".to_string(),
    };
    let holds = if let Some(v) = &hints.vmlinuz {
        format!(
            "the boot image package: it holds {v}, a compressed kernel without DWARF, but \
             no vmlinux"
        )
    } else if let Some(abi) = &hints.modules_abi {
        format!("it holds kernel modules of {abi} but no vmlinux")
    } else if let Some(f) = &hints.first_file {
        format!("it holds {} files such as {f}, none a vmlinux", hints.files)
    } else {
        "its data archive holds no files".to_string()
    };
    let want = match hints.abi() {
        Some(abi) => format!("give the matching linux-image-{abi}-dbg package"),
        None => "give a linux-image-<abi>-dbg package".to_string(),
    };
    format!(
        "no vmlinux with debug info in this package (looked for \
         ./usr/lib/debug/boot/vmlinux-<abi> and ./usr/lib/debug/lib/modules/<abi>/vmlinux); \
         {what} ({holds}); {want}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deb::testdata::*;
    use crate::error::Error;

    #[test]
    fn stops_once_both_are_read() {
        // garbage after the two members is never decompressed
        let mut tar = dbg_tar(ABI);
        let cut = tar.len() - 1024 - 5120;
        tar.truncate(cut);
        tar.extend_from_slice(&[0xAB; 4096]);
        let k = read(&deb(&control_tar("p"), "data.tar", &tar)).unwrap();
        assert_eq!(k.vmlinux, vmlinux_bytes());
    }

    #[test]
    fn map_absent_when_the_vmlinux_directory_is_left() {
        let mut t = Vec::new();
        add(
            &mut t,
            &format!("./usr/lib/debug/lib/modules/{ABI}/vmlinux"),
            &vmlinux_bytes(),
            b'0',
        );
        add(&mut t, "./usr/share/doc/x/copyright", b"c", b'0');
        t.extend_from_slice(&[0xCD; 2048]); // never read
        let k = read(&deb(&control_tar("p"), "data.tar", &t)).unwrap();
        assert!(k.system_map.is_none() && k.system_map_member.is_none());
    }

    #[test]
    fn map_of_another_kernel_is_not_taken() {
        let mut t = Vec::new();
        add(
            &mut t,
            "./usr/lib/debug/boot/System.map-9.9.9-amd64",
            b"other",
            b'0',
        );
        add(
            &mut t,
            &format!("./usr/lib/debug/boot/vmlinux-{ABI}"),
            &vmlinux_bytes(),
            b'0',
        );
        end(&mut t);
        let k = read(&deb(&control_tar("p"), "data.tar", &t)).unwrap();
        assert!(k.system_map.is_none());
    }

    #[test]
    fn image_package_is_a_clear_error() {
        let mut t = Vec::new();
        add(&mut t, "./boot/", b"", b'5');
        add(&mut t, &format!("./boot/System.map-{ABI}"), b"map", b'0');
        add(&mut t, &format!("./boot/vmlinuz-{ABI}"), b"MZ...", b'0');
        add(
            &mut t,
            &format!("./lib/modules/{ABI}/kernel/a.ko"),
            b"ko",
            b'0',
        );
        end(&mut t);
        let err = read(&deb(
            &control_tar("linux-image-6.1.0-56-amd64"),
            "data.tar.xz",
            &xz(&t),
        ))
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Input { .. }), "{msg}");
        assert!(
            msg.contains("this is linux-image-6.1.0-56-amd64 6.1.192-2"),
            "{msg}"
        );
        assert!(msg.contains("boot image package"), "{msg}");
        assert!(
            msg.contains("give the matching linux-image-6.1.0-56-amd64-dbg package"),
            "{msg}"
        );
    }

    #[test]
    fn other_packages_say_what_they_hold() {
        let mut t = Vec::new();
        add(&mut t, "./usr/bin/hello", b"#!", b'0');
        end(&mut t);
        let msg = read(&deb(&control_tar("hello"), "data.tar", &t))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("this is hello") && msg.contains("./usr/bin/hello"),
            "{msg}"
        );
        assert!(
            msg.contains("give a linux-image-<abi>-dbg package"),
            "{msg}"
        );
    }

    #[test]
    fn classify_members() {
        assert_eq!(
            classify("./usr/lib/debug/boot/vmlinux-6.1.0-56-amd64"),
            Some((Role::Vmlinux, "6.1.0-56-amd64", "usr/lib/debug/boot/"))
        );
        assert_eq!(
            classify("usr/lib/debug/lib/modules/7.2-amd64/System.map"),
            Some((
                Role::SystemMap,
                "7.2-amd64",
                "usr/lib/debug/lib/modules/7.2-amd64/"
            ))
        );
        assert_eq!(classify("./usr/lib/debug/boot/vmlinux-"), None);
        assert_eq!(
            classify("./usr/lib/debug/lib/modules/x/kernel/vmlinux"),
            None
        );
        assert_eq!(classify("./boot/vmlinuz-6.1.0-56-amd64"), None);
    }
}
