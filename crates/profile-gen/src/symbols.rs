//! Kernel symbols: System.map, or the vmlinux symbol table when there is none.

use std::collections::BTreeMap;
use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};
use vmi_core::profile::Symbol;

use crate::error::{Error, Result};

/// Symbols by name (the first occurrence of a name wins, as in the kernel's own
/// kallsyms lookup).
pub type SymbolMap = BTreeMap<String, Symbol>;

/// Parse a System.map (`<hex address> <type letter> <name>` lines).
pub fn parse_system_map(path: &Path, text: &str) -> Result<SymbolMap> {
    let mut map = SymbolMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut w = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (w.next(), w.next(), w.next()) else {
            return Err(bad_map(path, i, line));
        };
        let Ok(address) = u64::from_str_radix(addr, 16) else {
            return Err(bad_map(path, i, line));
        };
        if kind.chars().count() != 1 {
            return Err(bad_map(path, i, line));
        }
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
    Ok(map)
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
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
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
    fn rejects_garbage_and_placeholders() {
        let e = parse_system_map(Path::new("x"), "not a map\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = parse_system_map(Path::new("x"), "\n").unwrap_err();
        assert!(e.to_string().contains("-dbg"), "{e}");
    }
}
