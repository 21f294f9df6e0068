//! Assemble a profile from DWARF layouts and symbols.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use vmi_core::profile::{
    needs, InputFile, KernelIdentity, Missing, Profile, Provenance, SourceKind, FORMAT_VERSION,
};

use crate::dwarf::{DwarfSections, Layouts};
use crate::error::{Error, Result};
use crate::symbols::{self, SymbolMap};

/// What to put into the profile.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Every struct and union, not only the needed ones.
    pub full: bool,
    /// Extra types to include.
    pub types: Vec<String>,
    /// Extra symbols to include.
    pub symbols: Vec<String>,
}

/// A profile and the warnings about what could not be found.
#[derive(Debug)]
pub struct Built {
    /// The profile.
    pub profile: Profile,
    /// Human-readable warnings (missing needed items, ...).
    pub warnings: Vec<String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// sha256 and size of a file.
pub fn describe(path: &Path) -> Result<InputFile> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok(InputFile {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size,
        sha256: h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
    })
}

/// Build a profile from a DWARF vmlinux and, optionally, its System.map.
pub fn from_dwarf(vmlinux: &Path, system_map: Option<&Path>, opts: &Options) -> Result<Built> {
    let file = File::open(vmlinux).map_err(io(vmlinux))?;
    // SAFETY: the file is opened read-only and not modified while mapped (a concurrent
    // writer could change what we read, never memory safety of our own data).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io(vmlinux))?;
    let elf = object::File::parse(&map[..]).map_err(|e| Error::Input {
        path: vmlinux.to_path_buf(),
        message: format!("not an ELF vmlinux: {e}"),
    })?;
    let sections = DwarfSections::load(&elf)?;
    let layouts = Layouts::new(&sections)?;

    let mut inputs = vec![describe(vmlinux)?];
    let elf_symbols = symbols::from_elf(&elf);
    let all_symbols: SymbolMap = match system_map {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(io(p))?;
            let m = symbols::parse_system_map(p, &text)?;
            check_map_matches(p, &m, &elf_symbols)?;
            inputs.push(describe(p)?);
            m
        }
        None => elf_symbols,
    };

    let mut warnings = Vec::new();
    let mut missing = Missing::default();
    let mut types = BTreeMap::new();
    let wanted: Vec<String> = if opts.full {
        let mut all: Vec<String> = layouts.type_names().map(str::to_string).collect();
        all.sort();
        all
    } else {
        needs::TYPES
            .iter()
            .map(|t| t.name.to_string())
            .chain(opts.types.iter().cloned())
            .collect()
    };
    for name in &wanted {
        match layouts.layout(name)? {
            Some(def) => {
                types.insert(name.clone(), def);
            }
            None => {
                if !missing.types.contains(name) {
                    missing.types.push(name.clone());
                }
            }
        }
    }
    for t in needs::TYPES {
        let Some(def) = types.get(t.name) else {
            continue;
        };
        for f in t.fields {
            let found = f.aliases.iter().any(|a| def.fields.contains_key(*a));
            if !found && !f.optional {
                missing.fields.push(format!("{}.{}", t.name, f.aliases[0]));
            }
        }
    }
    let mut syms = BTreeMap::new();
    let wanted_syms: Vec<(Vec<&str>, bool)> = needs::SYMBOLS
        .iter()
        .map(|s| (s.aliases.to_vec(), s.optional))
        .chain(opts.symbols.iter().map(|s| (vec![s.as_str()], false)))
        .collect();
    if opts.full {
        syms = all_symbols.clone();
    } else {
        for (aliases, optional) in &wanted_syms {
            let mut found = false;
            for a in aliases {
                if let Some(s) = all_symbols.get(*a) {
                    syms.insert(a.to_string(), s.clone());
                    found = true;
                }
            }
            if !found && !optional {
                missing.symbols.push(aliases[0].to_string());
            }
        }
    }
    for t in &missing.types {
        warnings.push(format!("type {t} not found"));
    }
    for f in &missing.fields {
        warnings.push(format!("field {f} not found (under any alias)"));
    }
    for s in &missing.symbols {
        warnings.push(format!("symbol {s} not found"));
    }

    let banner_addr = all_symbols.get("linux_banner").map(|s| s.address);
    let banner = banner_addr
        .and_then(|a| symbols::string_at(&elf, a, 1024))
        .unwrap_or_default();
    if banner.is_empty() {
        warnings.push("linux_banner could not be read: kernel.banner is empty".into());
    }
    let release = banner
        .strip_prefix("Linux version ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_default()
        .to_string();
    let profile = Profile {
        format_version: FORMAT_VERSION.into(),
        kernel: KernelIdentity {
            release,
            banner,
            arch: "x86_64".into(),
            build_id: symbols::build_id(&elf),
        },
        provenance: Provenance {
            source: SourceKind::Dwarf,
            inputs,
            tool: format!("profile-gen {}", env!("CARGO_PKG_VERSION")),
        },
        symbols: syms,
        types,
        missing,
    };
    Ok(Built { profile, warnings })
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
