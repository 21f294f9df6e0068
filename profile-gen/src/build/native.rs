//! The native builder: the needed (or every) type and symbol out of a context, what is
//! missing listed, the profile assembled.

use std::collections::BTreeMap;

use vmi_core::profile::{needs, KernelIdentity, Missing, Profile, Provenance, FORMAT_VERSION};

use crate::error::Result;

use super::{Built, Context, Options};

pub(super) fn native(ctx: &Context<'_>, opts: &Options) -> Result<Built> {
    let layouts = ctx.types.source();
    let all_symbols = &ctx.symbols;
    let mut warnings = ctx.warnings.clone();
    let mut missing = Missing::default();
    let mut types = BTreeMap::new();
    let needed = needs::types();
    let wanted: Vec<String> = if opts.full {
        layouts.type_names()
    } else {
        needed
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
            None if needed.iter().any(|t| t.optional && t.name == name) => {}
            None => {
                if !missing.types.contains(name) {
                    missing.types.push(name.clone());
                }
            }
        }
    }
    for t in needed.iter().filter(|t| !t.optional) {
        let Some(def) = types.get(t.name) else {
            continue;
        };
        for f in &t.fields {
            let found = f.aliases.iter().any(|a| def.fields.contains_key(*a));
            if !found && !f.optional {
                missing.fields.push(format!("{}.{}", t.name, f.aliases[0]));
            }
        }
    }
    // the enums readers name: never missing (each reader keeps its own copy)
    let enums: BTreeMap<String, BTreeMap<String, i64>> = needs::enums()
        .into_iter()
        .filter_map(|name| Some((name.to_string(), layouts.enumeration(name)?)))
        .collect();
    let mut syms = BTreeMap::new();
    let wanted_syms: Vec<(Vec<&str>, bool)> = needs::symbols()
        .iter()
        .map(|s| (s.aliases.to_vec(), s.optional))
        .chain(opts.symbols.iter().map(|s| (vec![s.as_str()], false)))
        .collect();
    if opts.full {
        syms = all_symbols.clone();
    }
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
    for t in &missing.types {
        warnings.push(format!("type {t} not found"));
    }
    for f in &missing.fields {
        warnings.push(format!("field {f} not found (under any alias)"));
    }
    for s in &missing.symbols {
        warnings.push(format!("symbol {s} not found"));
    }

    let banner = ctx.banner.clone().unwrap_or_default();
    if banner.is_empty() {
        warnings.push("linux_banner could not be read: kernel.banner is empty".into());
    }
    let release = banner
        .strip_prefix("Linux version ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_default()
        .to_string();
    let profile = Profile {
        enums,
        format_version: FORMAT_VERSION.into(),
        kernel: KernelIdentity {
            release,
            banner,
            arch: "x86_64".into(),
            build_id: ctx.build_id.clone(),
        },
        provenance: Provenance {
            source: ctx.source,
            inputs: ctx.inputs.clone(),
            tool: format!("profile-gen {}", env!("CARGO_PKG_VERSION")),
        },
        symbols: syms,
        types,
        missing,
    };
    Ok(Built { profile, warnings })
}
