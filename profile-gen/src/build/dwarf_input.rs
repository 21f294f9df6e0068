//! A vmlinux with DWARF: its units indexed while it is hashed, symbols from its
//! System.map (checked to be of the same build) or its own symbol table.

use std::path::{Path, PathBuf};

use object::Object;
use vmi_core::profile::{InputFile, SourceKind};

use crate::dwarf::{DwarfSections, Layouts};
use crate::error::{Error, Result};
use crate::symbols::{self, SymbolMap};

use super::inputs::{describe_bytes, MapText};
use super::{Context, Progress, Types};

/// Open the vmlinux bytes, index them and call `f` with everything read.
pub(super) fn with_dwarf<T>(
    vmlinux_name: &str,
    data: &[u8],
    hash: impl FnOnce() -> Result<InputFile> + Send,
    map: Option<MapText>,
    progress: &mut dyn FnMut(Progress),
    f: impl FnOnce(&Context<'_>) -> Result<T>,
) -> Result<T> {
    let elf = object::File::parse(data).map_err(|e| Error::Input {
        path: PathBuf::from(vmlinux_name),
        message: format!("not an ELF vmlinux: {e}"),
    })?;
    if elf.kind() == object::ObjectKind::Relocatable {
        return Err(Error::Input {
            path: PathBuf::from(vmlinux_name),
            message: "this is a relocatable object (ET_REL, e.g. a .o or .ko): its DWARF needs relocations applied, which profile-gen does not do. Give a linked vmlinux (or link the object into a shared library first)".into(),
        });
    }
    progress(Progress::Indexing);
    // hash the vmlinux on one thread while the DWARF is indexed on the others
    std::thread::scope(|scope| {
        let hasher = scope.spawn(hash);
        let sections = DwarfSections::load(&elf)?;
        let layouts = Layouts::new(&sections)?;
        let vmlinux_input = hasher.join().map_err(|_| Error::Input {
            path: PathBuf::from(vmlinux_name),
            message: "hashing failed".into(),
        })??;
        let mut inputs = vec![vmlinux_input];
        let elf_symbols = symbols::from_elf(&elf);
        let (all_symbols, from_map) = match map {
            Some(m) => {
                let text = String::from_utf8_lossy(&m.bytes);
                let parsed = symbols::parse_system_map(&m.path, &text)?;
                check_map_matches(&m.path, &parsed, &elf_symbols)?;
                inputs.push(describe_bytes(&m.name, &m.bytes));
                (parsed, true)
            }
            None => (elf_symbols, false),
        };
        let banner = all_symbols
            .get("linux_banner")
            .and_then(|s| symbols::string_at(&elf, s.address, 1024));
        let ctx = Context {
            types: Types::Dwarf(&layouts),
            symbols: all_symbols,
            symbols_kind: if from_map { "system-map" } else { "symtab" },
            symbols_input: usize::from(from_map),
            banner,
            build_id: symbols::build_id(&elf),
            source: SourceKind::Dwarf,
            inputs,
            warnings: Vec::new(),
        };
        progress(Progress::Writing);
        f(&ctx)
    })
}

/// A System.map from another build shows different addresses for the same symbols.
fn check_map_matches(path: &Path, map: &SymbolMap, elf: &SymbolMap) -> Result<()> {
    if elf.is_empty() {
        return Ok(()); // stripped vmlinux: nothing to compare with
    }
    for name in ["_text", "linux_banner", "init_task", "_etext"] {
        if let (Some(a), Some(b)) = (map.get(name), elf.get(name)) {
            if a.address != b.address {
                return Err(Error::Mismatch {
                    path: PathBuf::from(path),
                    message: format!(
                        "{name} is at {:#x} in the System.map but at {:#x} in the vmlinux: they come from different builds",
                        a.address, b.address
                    ),
                });
            }
        }
    }
    Ok(())
}
