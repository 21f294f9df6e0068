//! The control archive: the package's name and version, and its md5sums, which the
//! kernel files read are checked against.

use std::collections::HashMap;
use std::io::{BufReader, Read};

use super::ar::ArMember;
use super::boot::boot_image_abi;
use super::decode::Compression;
use super::scan::{classify, Found};
use super::source::{At, Source};
use super::tar::{normalize, TarReader};

/// The largest decompressed control archive read (a kernel's is a few hundred KB).
const MAX_CONTROL: u64 = 64 << 20;

/// What the control archive says.
#[derive(Debug, Default)]
pub(super) struct Control {
    /// `Package Version`.
    pub(super) package: Option<String>,
    /// md5 (lowercase hex) of the members [`classify`] knows and of boot images, by
    /// normalized path.
    md5sums: HashMap<String, String>,
}

/// The control file's package and version, and the md5sums of the kernel files.
pub(super) fn read_control<S: Source + ?Sized>(src: &S, m: &ArMember) -> Result<Control, String> {
    let compression = Compression::of(&m.name).ok_or("unknown compression")?;
    let stream = compression.decoder(BufReader::new(At::new(src, m.offset, m.size)))?;
    let mut tar = TarReader::new(stream.take(MAX_CONTROL));
    let mut control = Control::default();
    while let Some(entry) = tar.next_entry()? {
        if !entry.is_file() {
            continue;
        }
        match normalize(&entry.path) {
            "control" => {
                let data = tar.read_data(&entry, MAX_CONTROL, &mut |_| {})?;
                let text = String::from_utf8_lossy(&data);
                let field = |name: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                        .map(|v| v.trim().to_string())
                };
                control.package = field("Package").map(|p| match field("Version") {
                    Some(v) => format!("{p} {v}"),
                    None => p,
                });
            }
            "md5sums" => {
                let data = tar.read_data(&entry, MAX_CONTROL, &mut |_| {})?;
                for line in String::from_utf8_lossy(&data).lines() {
                    let Some((md5, path)) = line.split_once(char::is_whitespace) else {
                        continue;
                    };
                    let path = normalize(path.trim_start());
                    if classify(path).is_some() || boot_image_abi(path).is_some() {
                        control
                            .md5sums
                            .insert(path.to_string(), md5.to_ascii_lowercase());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(control)
}

impl Control {
    /// Check `found` against the md5sums: an error when they list it with another md5.
    /// Nothing to check when they do not list it, or when its md5 was not computed (the
    /// data was verified otherwise: xz block checks).
    pub(super) fn check(&self, found: &Found) -> Result<(), String> {
        let Some(listed) = self.md5sums.get(normalize(&found.member)) else {
            return Ok(());
        };
        let Some(md5) = &found.md5 else {
            return Ok(());
        };
        if listed != md5 {
            return Err(format!(
                "`{}` has md5 {md5} but the package's md5sums lists {listed}: the package \
                 is damaged (download it again)",
                found.member
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::deb::testdata::*;

    #[test]
    fn md5sums_are_checked() {
        let tar = dbg_tar(ABI);
        let with_sums = |vmlinux_md5: &str| {
            let mut t = Vec::new();
            add(&mut t, "./control", b"Package: p\nVersion: 1\n", b'0');
            let sums = format!(
                "{}  usr/lib/debug/boot/System.map-{ABI}\n{vmlinux_md5}  \
                 usr/lib/debug/boot/vmlinux-{ABI}\n0123  usr/share/doc/x\n",
                md5_hex(b"ffffffff81000000 T _text\n")
            );
            add(&mut t, "./md5sums", sums.as_bytes(), b'0');
            end(&mut t);
            t
        };
        let good = with_sums(&md5_hex(&vmlinux_bytes()).to_uppercase());
        read(&deb(&good, "data.tar.xz", &xz(&tar))).unwrap();
        let bad = with_sums(&md5_hex(b"something else"));
        let msg = read(&deb(&bad, "data.tar.xz", &xz(&tar)))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&format!("`./usr/lib/debug/boot/vmlinux-{ABI}` has md5")),
            "{msg}"
        );
        assert!(msg.contains("damaged"), "{msg}");
    }
}
