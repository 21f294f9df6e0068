//! Types from BTF (a boot image decompressed as far as needed, a vmlinux's `.BTF` or
//! raw BTF) with symbols from a list (KASLR undone, checked against the image), the
//! image's symbol table or its own kallsyms tables.

use std::path::Path;

use vmi_core::profile::{InputFile, SourceKind};

use crate::btf::Btf;
use crate::error::{Error, Result};
use crate::kimage::KernelElf;
use crate::symbols::{self, ListKind, SymbolMap};
use crate::vmlinuz;

use super::inputs::{describe_bytes, MapText};
use super::{Context, Progress, Types};

/// The x86-64 kernel inside a boot image, decompressed as far as a profile needs: the
/// read-only segments (text, rodata with kallsyms and the banner, notes, BTF).
#[cfg(feature = "vmlinuz")]
fn unpack(path: &Path, image: &[u8], progress: &mut dyn FnMut(Progress)) -> Result<Vec<u8>> {
    progress(Progress::Decompressing);
    let payload = vmlinuz::payload(image).map_err(|e| at_path(path, e))?;
    let mut u = vmlinuz::Unpacker::new(&payload).map_err(|e| at_path(path, e))?;
    let head = u.fill_to(64 << 10).map_err(|e| at_path(path, e))?;
    let need = KernelElf::parse(head)
        .map_err(|e| at_path(path, e))?
        .needed_len();
    u.fill_to(need).map_err(|e| at_path(path, e))?;
    let has_btf = KernelElf::parse(u.data())
        .ok()
        .and_then(|k| k.btf())
        .is_some();
    if !u.finished() && !has_btf {
        // not in the read-only segments: take everything (section headers are last)
        u.fill_to(usize::MAX).map_err(|e| at_path(path, e))?;
    }
    Ok(u.into_vec())
}

/// Without the decoders, a boot image is refused with what to give instead.
#[cfg(not(feature = "vmlinuz"))]
fn unpack(path: &Path, _image: &[u8], _progress: &mut dyn FnMut(Progress)) -> Result<Vec<u8>> {
    Err(Error::Input {
        path: path.to_path_buf(),
        message: "a boot image, and this build of profile-gen has no decompressors (its `vmlinuz` feature): give the vmlinux with .BTF or raw BTF".into(),
    })
}

/// Errors of the image readers name the file.
fn at_path(path: &Path, e: Error) -> Error {
    match e {
        Error::Input { message, .. } => Error::Input {
            path: path.to_path_buf(),
            message,
        },
        other => other,
    }
}

/// Read BTF types and symbols for the BTF path and call `f`.
pub(super) fn with_btf<T>(
    path: &Path,
    data: &[u8],
    hash: impl FnOnce() -> Result<InputFile> + Send,
    list: Option<MapText>,
    version: Option<(String, Vec<u8>)>,
    progress: &mut dyn FnMut(Progress),
    f: impl FnOnce(&Context<'_>) -> Result<T>,
) -> Result<T> {
    std::thread::scope(|scope| {
        let hasher = scope.spawn(hash);
        let mut warnings = Vec::new();
        let unpacked;
        let kernel = if vmlinuz::is_boot_image(data) {
            unpacked = unpack(path, data, progress)?;
            Some(KernelElf::parse(&unpacked).map_err(|e| at_path(path, e))?)
        } else if data.starts_with(b"\x7fELF") {
            Some(KernelElf::parse(data).map_err(|e| at_path(path, e))?)
        } else if Btf::looks_like(data) {
            None
        } else {
            return Err(Error::Input {
                path: path.to_path_buf(),
                message: format!(
                    "not a boot image, an ELF kernel or raw BTF (first bytes {:02x?})",
                    &data[..data.len().min(8)]
                ),
            });
        };
        progress(Progress::Indexing);
        let btf_bytes = match &kernel {
            Some(k) => k.btf().ok_or_else(|| Error::NoBtf {
                path: path.to_path_buf(),
            })?,
            None => data,
        };
        let btf = Btf::parse(btf_bytes)?;
        let input = hasher.join().map_err(|_| Error::Input {
            path: path.to_path_buf(),
            message: "hashing failed".into(),
        })??;
        let mut inputs = vec![input];

        let (symbols, symbols_kind, symbols_input) = match (list, &kernel) {
            (Some(m), _) => {
                let text = String::from_utf8_lossy(&m.bytes);
                let (mut parsed, kind) = symbols::parse_symbol_list(&m.path, &text)?;
                let link_text = kernel
                    .as_ref()
                    .and_then(|k| k.text_address())
                    .unwrap_or(symbols::X86_64_TEXT);
                let shift = symbols::unrelocate(&mut parsed, link_text);
                if shift != 0 {
                    warnings.push(format!(
                        "{}: _text is {shift:#x} bytes above its link address {link_text:#x} (KASLR): every kernel address was moved back by that much{}",
                        m.name,
                        if kernel.is_none() { " (the x86-64 default link address; give the boot image to check it)" } else { "" }
                    ));
                }
                if let Some(k) = &kernel {
                    check_list_matches(&m.path, &parsed, k)?;
                }
                inputs.push(describe_bytes(&m.name, &m.bytes));
                let kind = match kind {
                    ListKind::Kallsyms => "proc-kallsyms",
                    ListKind::SystemMap => "system-map",
                };
                (parsed, kind, 1)
            }
            (None, Some(k)) => {
                let elf_symbols = object::File::parse(k.data)
                    .map(|elf| symbols::from_elf(&elf))
                    .unwrap_or_default();
                if elf_symbols.contains_key("_text") {
                    (elf_symbols, "symtab", 0)
                } else {
                    progress(Progress::Kallsyms);
                    let (map, _) = crate::kallsyms::symbols(k).map_err(|e| at_path(path, e))?;
                    (map, "kallsyms", 0)
                }
            }
            (None, None) => {
                return Err(Error::Input {
                    path: path.to_path_buf(),
                    message: "raw BTF carries no symbols: give /proc/kallsyms (read as root with kernel.kptr_restrict=0) or the System.map with it".into(),
                })
            }
        };
        let banner = match (&kernel, version) {
            (Some(k), _) => symbols
                .get("linux_banner")
                .and_then(|s| k.string_at(s.address, 1024))
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            (None, Some((name, text))) => {
                let t = String::from_utf8_lossy(&text).into_owned();
                inputs.push(describe_bytes(&name, &text));
                Some(t)
            }
            (None, None) => {
                warnings.push("no banner: give a copy of the guest's /proc/version with raw BTF so the profile names its kernel".into());
                None
            }
        };
        let ctx = Context {
            types: Types::Btf(&btf),
            symbols,
            symbols_kind,
            symbols_input,
            banner,
            build_id: kernel.as_ref().and_then(|k| k.build_id()),
            source: SourceKind::Btf,
            inputs,
            warnings,
        };
        progress(Progress::Writing);
        f(&ctx)
    })
}

/// A symbol list given with a kernel image must describe it: its `linux_banner` must
/// point at the banner in the image.
fn check_list_matches(path: &Path, list: &SymbolMap, kernel: &KernelElf<'_>) -> Result<()> {
    let Some(s) = list.get("linux_banner") else {
        return Ok(());
    };
    match kernel.string_at(s.address, 1024) {
        Some(b) if b.starts_with(b"Linux version ") => Ok(()),
        _ => Err(Error::Mismatch {
            path: path.to_path_buf(),
            message: format!(
                "linux_banner is at {:#x} in the list, where the image holds no banner: they come from different builds",
                s.address
            ),
        }),
    }
}

#[cfg(all(test, not(feature = "vmlinuz")))]
mod tests {
    use super::*;

    #[test]
    fn boot_image_without_decoders_is_refused() {
        let mut image = vec![0u8; 1024];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        let hash = || Ok(describe_bytes("vmlinuz", &[]));
        let err = with_btf(
            Path::new("vmlinuz"),
            &image,
            hash,
            None,
            None,
            &mut |_| {},
            |_| Ok(()),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("vmlinuz: a boot image"), "{err}");
        assert!(err.contains("`vmlinuz` feature"), "{err}");
    }
}
