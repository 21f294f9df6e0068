//! Kernel symbols: System.map, or the vmlinux symbol table when there is none.

use std::collections::BTreeMap;
use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};
use vmi_core::profile::Symbol;

use crate::error::{Error, Result};

/// Symbols by name (the first occurrence of a name wins, as in the kernel's own
/// kallsyms lookup).
pub type SymbolMap = BTreeMap<String, Symbol>;

/// The x86-64 link-time address of `_text` (`__START_KERNEL_map` + the default
/// `CONFIG_PHYSICAL_START` of 16 MiB), where an unrelocated kernel starts.
pub const X86_64_TEXT: u64 = 0xffff_ffff_8100_0000;
/// Kernel image addresses start here on x86-64 (`__START_KERNEL_map`); smaller ones
/// (per-CPU offsets) are not moved by KASLR.
const KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;

/// What a symbol list is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// A System.map from the build.
    SystemMap,
    /// `/proc/kallsyms` of a running kernel (module symbols, when present, are left out).
    Kallsyms,
}

/// Parse a System.map (`<hex address> <type letter> <name>` lines).
pub fn parse_system_map(path: &Path, text: &str) -> Result<SymbolMap> {
    parse_symbol_list(path, text).map(|(m, _)| m)
}

/// Parse a System.map or a copy of `/proc/kallsyms` (same lines; kallsyms adds
/// `[module]` to module symbols, which are skipped, and shows zeros to readers that may
/// not see addresses). The name decides the kind when no module line does.
pub fn parse_symbol_list(path: &Path, text: &str) -> Result<(SymbolMap, ListKind)> {
    let mut map = SymbolMap::new();
    let mut kind_seen = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("kallsyms"));
    let mut nonzero = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut w = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (w.next(), w.next(), w.next()) else {
            return Err(bad_map(path, i, line));
        };
        if let Some(module) = w.next() {
            if module.starts_with('[') {
                kind_seen = true;
                continue;
            }
            return Err(bad_map(path, i, line));
        }
        let Ok(address) = u64::from_str_radix(addr, 16) else {
            return Err(bad_map(path, i, line));
        };
        if kind.chars().count() != 1 {
            return Err(bad_map(path, i, line));
        }
        nonzero |= address != 0;
        map.entry(name.to_string()).or_insert(Symbol {
            address,
            kind: kind.to_string(),
        });
    }
    if map.is_empty() {
        return Err(Error::Input {
            path: path.to_path_buf(),
            message: "the System.map holds no symbols (Debian's linux-image package ships an 83-byte placeholder; the real one is in the -dbg package)".into(),
        });
    }
    if !nonzero {
        return Err(Error::Input {
            path: path.to_path_buf(),
            message: "every address is 0: /proc/kallsyms hides addresses from readers without privilege. Read it as root with kernel.kptr_restrict=0 (sysctl -w kernel.kptr_restrict=0)".into(),
        });
    }
    let kind = if kind_seen {
        ListKind::Kallsyms
    } else {
        ListKind::SystemMap
    };
    Ok((map, kind))
}

/// Move the symbols of a KASLR-relocated kernel back to their link-time addresses, given
/// where `_text` is linked (`link_text`); per-CPU offsets stay. Returns the shift
/// removed (0 when `_text` is already there or unknown).
pub fn unrelocate(map: &mut SymbolMap, link_text: u64) -> u64 {
    let Some(text) = map.get("_text").map(|s| s.address) else {
        return 0;
    };
    let shift = text.wrapping_sub(link_text);
    if shift == 0 {
        return 0;
    }
    for s in map.values_mut() {
        if s.address >= KERNEL_MAP {
            s.address = s.address.wrapping_sub(shift);
        }
    }
    shift
}

fn bad_map(path: &Path, line: usize, text: &str) -> Error {
    Error::Input {
        path: path.to_path_buf(),
        message: format!(
            "line {}: {:?} is not a System.map line (<hex address> <type> <name>)",
            line + 1,
            text.chars().take(80).collect::<String>()
        ),
    }
}

/// Symbols from the ELF symbol table, with System.map-style type letters.
pub fn from_elf(elf: &object::File<'_>) -> SymbolMap {
    let mut map = SymbolMap::new();
    for s in elf.symbols() {
        let Ok(name) = s.name() else { continue };
        if name.is_empty() || matches!(s.kind(), SymbolKind::File | SymbolKind::Section) {
            continue;
        }
        let kind = match s.section_index().and_then(|i| elf.section_by_index(i).ok()) {
            None if s.is_undefined() => continue,
            None => 'A',
            Some(sec) => match sec.kind() {
                SectionKind::Text => 'T',
                SectionKind::ReadOnlyData | SectionKind::ReadOnlyString => 'R',
                SectionKind::UninitializedData => 'B',
                _ => 'D',
            },
        };
        let kind = if s.is_global() {
            kind
        } else {
            kind.to_ascii_lowercase()
        };
        map.entry(name.to_string()).or_insert(Symbol {
            address: s.address(),
            kind: kind.to_string(),
        });
    }
    map
}

/// Read a NUL-terminated string at a virtual address of the ELF (e.g. `linux_banner`).
pub fn string_at(elf: &object::File<'_>, address: u64, max: usize) -> Option<String> {
    for sec in elf.sections() {
        let (start, size) = (sec.address(), sec.size());
        if address < start || address >= start + size {
            continue;
        }
        let data = sec.data().ok()?;
        let off = usize::try_from(address - start).ok()?;
        let tail = data.get(off..)?;
        let end = tail.iter().take(max).position(|&b| b == 0)?;
        return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
    }
    None
}

/// The GNU build-id, lowercase hex.
pub fn build_id(elf: &object::File<'_>) -> Option<String> {
    let id = elf.build_id().ok()??;
    Some(hex::encode(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_system_map() {
        let m = parse_system_map(
            Path::new("System.map"),
            "ffffffff81000000 T _text\nffffffff82a1aa40 D init_task\nffffffff81000000 T _text\n",
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["init_task"].address, 0xffffffff82a1aa40);
        assert_eq!(m["init_task"].kind, "D");
    }

    #[test]
    fn kallsyms_text_skips_modules_and_is_unrelocated() {
        let text = "0000000000000000 A fixed_percpu_data\nffffffff9a200000 T _text\nffffffff9bc1aa40 D init_task\nffffffffc0a01000 t sr_do_ioctl\t[sr_mod]\n";
        let (mut m, kind) = parse_symbol_list(Path::new("k"), text).unwrap();
        assert_eq!(kind, ListKind::Kallsyms);
        assert_eq!(m.len(), 3);
        assert_eq!(unrelocate(&mut m, X86_64_TEXT), 0x19200000);
        assert_eq!(m["_text"].address, X86_64_TEXT);
        assert_eq!(m["init_task"].address, 0xffffffff82a1aa40);
        assert_eq!(m["fixed_percpu_data"].address, 0);
        let hidden = "0000000000000000 T _text\n0000000000000000 D init_task\n";
        let e = parse_symbol_list(Path::new("kallsyms"), hidden).unwrap_err();
        assert!(e.to_string().contains("kptr_restrict"), "{e}");
        let e = parse_symbol_list(Path::new("x"), "ffffffff81000000 T _text extra\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn rejects_garbage_and_placeholders() {
        let e = parse_system_map(Path::new("x"), "not a map\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = parse_system_map(Path::new("x"), "\n").unwrap_err();
        assert!(e.to_string().contains("-dbg"), "{e}");
    }
}
