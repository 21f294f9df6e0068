//! Completing a profile made elsewhere: the guest module's `/proc/vmi_profile` knows every
//! needed type and field, but only the symbols a module can see (exported ones, `_text`,
//! `linux_banner`); the rest are listed under `missing.symbols`. Given the kernel's
//! System.map (or a root copy of `/proc/kallsyms`), this fills them in.
//!
//! The symbol list must belong to the same build: every symbol the profile already has
//! must be in the list at the same link-time address (a KASLR-relocated kallsyms copy is
//! moved back first by `_text`), or the list is refused.

use std::path::Path;

use vmi_core::profile::{needs, Profile};

use crate::build::{describe_bytes, Built, Options};
use crate::error::{Error, Result};
use crate::symbols::{self, ListKind};

fn input_error(path: &Path, message: String) -> Error {
    Error::Input {
        path: path.to_path_buf(),
        message,
    }
}

/// Read a profile (any source) and, with `symbols`, add the needed symbols (and
/// `opts.symbols`) it lacks from that System.map or kallsyms copy.
pub fn complete(profile_path: &Path, symbols: Option<&Path>, opts: &Options) -> Result<Built> {
    let text = std::fs::read_to_string(profile_path).map_err(|source| Error::Io {
        path: profile_path.to_path_buf(),
        source,
    })?;
    let mut profile =
        Profile::from_json(&text).map_err(|e| input_error(profile_path, format!("{e}")))?;
    if opts.full || !opts.types.is_empty() {
        return Err(input_error(
            profile_path,
            "a profile can gain symbols, not types: for --full or --type give the vmlinux, the -dbg package or the boot image".into(),
        ));
    }
    let mut warnings = Vec::new();
    let Some(list_path) = symbols else {
        if !profile.missing.symbols.is_empty() {
            warnings.push(format!(
                "still missing: {} (give the kernel's System.map to fill them in)",
                profile.missing.symbols.join(", ")
            ));
        }
        return Ok(Built { profile, warnings });
    };
    let bytes = std::fs::read(list_path).map_err(|source| Error::Io {
        path: list_path.to_path_buf(),
        source,
    })?;
    let (mut map, kind) = symbols::parse_symbol_list(list_path, &String::from_utf8_lossy(&bytes))?;
    // a kallsyms copy of a KASLR boot: back to link addresses, by the profile's _text
    if let Some(text) = profile.symbol("_text") {
        let shift = symbols::unrelocate(&mut map, text);
        if shift != 0 {
            if kind == ListKind::SystemMap {
                return Err(input_error(
                    list_path,
                    format!("_text is at {:#x} here but at {text:#x} in the profile: this System.map belongs to another build", text.wrapping_add(shift)),
                ));
            }
            warnings.push(format!(
                "{}: _text is {shift:#x} bytes above its link address (KASLR): every kernel address was moved back by that much",
                list_path.display()
            ));
        }
    }
    // every symbol the profile has must agree: else the list is another build's
    let mut disagree = Vec::new();
    for (name, sym) in &profile.symbols {
        if let Some(m) = map.get(name) {
            if m.address != sym.address {
                disagree.push(format!(
                    "{name} at {:#x} here, {:#x} in the profile",
                    m.address, sym.address
                ));
            }
        }
    }
    if !disagree.is_empty() {
        return Err(Error::Mismatch {
            path: list_path.to_path_buf(),
            message: format!(
                "{} (it belongs to another build of {})",
                disagree.join("; "),
                profile.kernel.release
            ),
        });
    }
    let mut wanted: Vec<(Vec<&str>, bool)> = needs::symbols()
        .iter()
        .map(|s| (s.aliases.to_vec(), s.optional))
        .collect();
    wanted.extend(opts.symbols.iter().map(|s| (vec![s.as_str()], false)));
    let mut missing = Vec::new();
    for (aliases, optional) in wanted {
        if aliases.iter().any(|a| profile.symbols.contains_key(*a)) {
            continue;
        }
        match aliases.iter().find_map(|a| map.get(*a).map(|s| (*a, s))) {
            Some((name, sym)) => {
                profile.symbols.insert(name.to_string(), sym.clone());
            }
            None if optional => {}
            None => missing.push(aliases[0].to_string()),
        }
    }
    profile.missing.symbols = missing;
    if !profile.missing.symbols.is_empty() {
        warnings.push(format!(
            "not in {} either: {}",
            list_path.display(),
            profile.missing.symbols.join(", ")
        ));
    }
    let name = list_path
        .file_name()
        .map_or_else(|| "symbols".into(), |n| n.to_string_lossy().into_owned());
    profile
        .provenance
        .inputs
        .push(describe_bytes(&name, &bytes));
    profile.provenance.tool = format!(
        "{} + profile-gen {}",
        profile.provenance.tool,
        env!("CARGO_PKG_VERSION")
    );
    Ok(Built { profile, warnings })
}
