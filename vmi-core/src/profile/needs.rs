//! What the detector needs from a profile: the union of what every reader declares.
//!
//! Each reader in [`crate::kernel`] declares the fields and symbols it reads beside its
//! code, once, with [`crate::kernel_layout!`] (a layout struct: the declaration also
//! generates its `from_profile`) or [`crate::declaration!`] (code without a layout
//! struct); [`DECLARATIONS`] lists them and [`types`] and [`symbols`] merge them. The
//! merged set is frozen in `tests/data/needs.txt` (a golden list: a change to what
//! profiles contain is a reviewed diff, `UPDATE_NEEDS=1` rewrites it).
//!
//! Each needed field lists its aliases in order of preference (kernel versions rename
//! fields: `task_struct.__state` since 5.14, `.state` before; `module.mem` since 6.4,
//! `.core_layout` before). A field is *optional* when some supported kernels lack it
//! under every alias; a missing required field is listed in the profile's `missing`
//! section and reported as a warning, never written as 0.

/// A needed field: aliases in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeededField {
    /// Names the field has had; the first one found is used.
    pub aliases: &'static [&'static str],
    /// True when some supported kernels have none of the aliases.
    pub optional: bool,
}

/// A needed struct or union with its needed fields: the union of every declaration
/// that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeededType {
    /// The type's name (`struct` and `union` share one namespace in profiles).
    pub name: &'static str,
    /// Its needed fields.
    pub fields: Vec<NeededField>,
    /// True when some supported kernels lack the type entirely: in the profile when the
    /// kernel has it, never listed as missing.
    pub optional: bool,
}

/// A needed symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeededSymbol {
    /// Names the symbol has had; the first one found is used.
    pub aliases: &'static [&'static str],
    /// True when some supported kernels lack it.
    pub optional: bool,
}

/// One field as a reader declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeclaredField {
    /// The struct or union.
    pub ty: &'static str,
    /// The field's aliases and whether kernels may lack it.
    pub field: NeededField,
    /// True when some supported kernels lack `ty` entirely.
    pub optional_type: bool,
}

/// What one reader (a layout, or code without one) takes from a profile, declared
/// beside it with [`crate::kernel_layout!`] or [`crate::declaration!`].
#[derive(Debug, Clone, Copy)]
pub struct Declaration {
    /// The reader, e.g. `CredLayout`.
    pub name: &'static str,
    /// The fields it reads.
    pub fields: &'static [DeclaredField],
    /// The symbols it reads.
    pub symbols: &'static [NeededSymbol],
    /// The enums whose values it reads from the profile when there (never missing: a
    /// reader keeps its own copy for profiles without them).
    pub enums: &'static [&'static str],
    /// A layout's `from_profile`, its result dropped: a test resolves every layout from
    /// a real kernel's profile through this.
    pub resolve: Option<Resolve>,
}

/// A layout's `from_profile` with its result dropped.
pub type Resolve = fn(&crate::profile::Profile) -> Result<(), crate::kernel::KernelError>;

use crate::kernel;

/// Every reader's declaration: the needed set is their union ([`types`], [`symbols`]).
pub const DECLARATIONS: &[Declaration] = &[
    kernel::Layout::NEEDS,
    kernel::layout::UNREAD,
    kernel::creds::CredLayout::NEEDS,
    kernel::vma::VmaLayout::NEEDS,
    kernel::files::FileLayout::NEEDS,
    kernel::sockets::FdLayout::NEEDS,
    kernel::openfiles::OpenFileLayout::NEEDS,
    kernel::pagecache::PageCacheLayout::NEEDS,
    kernel::procmem::ProcMemLayout::NEEDS,
    kernel::modmem::ModMemLayout::NEEDS,
    kernel::modtree::ModTreeLayout::NEEDS,
    kernel::sockets::SocketLayout::NEEDS,
    kernel::kobject::KobjLayout::NEEDS,
    kernel::pidns::XaShape::NEEDS,
    kernel::pidns::PidNsLayout::NEEDS,
    kernel::syscalls::NEEDS,
    kernel::ftrace::FtraceLayout::NEEDS,
    kernel::kprobes::KprobeLayout::NEEDS,
    kernel::tracepoints::TracepointLayout::NEEDS,
    kernel::bpf::BpfLayout::NEEDS,
    kernel::bpf::RawTpLayout::NEEDS,
    kernel::bpf::PerfLinkLayout::NEEDS,
    kernel::bpf::PerfLayout::NEEDS,
    kernel::bpf::TpEventLayout::NEEDS,
    kernel::perf::PerfContextLayout::NEEDS,
    kernel::kthread::KthreadLayout::NEEDS,
    kernel::ptrace::PtraceLayout::NEEDS,
    kernel::iouring::IoUringLayout::NEEDS,
    kernel::netfilter::NetNsLayout::NEEDS,
    kernel::netfilter::NetfilterLayout::NEEDS,
    kernel::notifiers::NotifierLayout::NEEDS,
    kernel::tty::TtyLayout::NEEDS,
    kernel::procnet::PdeLayout::NEEDS,
    kernel::vfs::VfsLayout::NEEDS,
    kernel::userspace::ArgsLayout::NEEDS,
    kernel::NEEDS,
    kernel::objects::NEEDS,
    kernel::cpus::NEEDS,
    kernel::cpustate::NEEDS,
    kernel::runqueue::RunqueueLayout::NEEDS,
    kernel::idt::NEEDS,
    kernel::kallsyms::NEEDS,
];

/// The types of the default profile, optional ones included (`optional`), in the order
/// the declarations first name them; a field several readers declare appears once.
pub fn types() -> Vec<NeededType> {
    let mut out: Vec<NeededType> = Vec::new();
    for d in DECLARATIONS {
        for f in d.fields {
            let i = match out.iter().position(|t| t.name == f.ty) {
                Some(i) => i,
                None => {
                    out.push(NeededType {
                        name: f.ty,
                        fields: Vec::new(),
                        optional: true,
                    });
                    out.len() - 1
                }
            };
            let t = &mut out[i];
            t.optional &= f.optional_type;
            match t.fields.iter_mut().find(|n| n.aliases == f.field.aliases) {
                Some(known) => known.optional &= f.field.optional,
                None => t.fields.push(f.field),
            }
        }
    }
    out
}

/// The enums of the default profile (each optional), in the order the declarations
/// first name them.
pub fn enums() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for e in DECLARATIONS.iter().flat_map(|d| d.enums) {
        if !out.contains(e) {
            out.push(e);
        }
    }
    out
}

/// The symbols of the default profile, in the order the declarations first name them.
pub fn symbols() -> Vec<NeededSymbol> {
    let mut out: Vec<NeededSymbol> = Vec::new();
    for s in DECLARATIONS.iter().flat_map(|d| d.symbols) {
        match out.iter_mut().find(|n| n.aliases == s.aliases) {
            Some(known) => known.optional &= s.optional,
            None => out.push(*s),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_declarations_agree() {
        let types = types();
        let mut names: Vec<&str> = types.iter().map(|t| t.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
        for t in &types {
            assert!(!t.fields.is_empty(), "{}", t.name);
        }
        // every reader that names a field names it alike: same aliases, presence, type
        // presence (a field's presence is the kernel's, not the reader's)
        let all: Vec<(&str, &DeclaredField)> = DECLARATIONS
            .iter()
            .flat_map(|d| d.fields.iter().map(move |f| (d.name, f)))
            .collect();
        for (who, f) in &all {
            assert!(!f.field.aliases.is_empty(), "{who}: {}", f.ty);
            for (other, g) in &all {
                let same =
                    f.ty == g.ty && f.field.aliases.iter().any(|a| g.field.aliases.contains(a));
                assert!(
                    !same || f == g,
                    "{who} and {other} declare {}.{} differently",
                    f.ty,
                    f.field.aliases[0]
                );
                assert!(
                    f.ty != g.ty || f.optional_type == g.optional_type,
                    "{who} and {other} disagree on whether type {} is optional",
                    f.ty
                );
            }
        }
        let syms: Vec<&NeededSymbol> = DECLARATIONS.iter().flat_map(|d| d.symbols).collect();
        for s in &syms {
            for t in &syms {
                let same = s.aliases.iter().any(|a| t.aliases.contains(a));
                assert!(
                    !same || s == t,
                    "symbol {} declared differently",
                    s.aliases[0]
                );
            }
        }
    }
}

#[cfg(test)]
mod readers {
    //! What the readers' code names is declared: every `symbol("…")` and
    //! `.field("type", "…")` literal in `src/kernel`, the tables of symbols they walk,
    //! and no field is looked up past the declarations.
    use super::*;
    use crate::kernel::{netfilter::Family, notifiers::CHAINS, procnet::SEQ_OPS};

    fn sources() -> Vec<(String, String)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/kernel");
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.display().to_string(), text));
        }
        out
    }

    /// The string literals after each `pattern` (up to the closing parenthesis).
    fn literals_after<'a>(text: &'a str, pattern: &str) -> Vec<Vec<&'a str>> {
        text.match_indices(pattern)
            .map(|(i, _)| {
                let rest = &text[i + pattern.len() - 1..];
                let call = &rest[..rest.find(')').unwrap_or(rest.len())];
                call.split('"').skip(1).step_by(2).collect()
            })
            .collect()
    }

    fn symbol_declared(name: &str) -> bool {
        symbols().iter().any(|s| s.aliases.contains(&name))
    }

    fn field_declared(ty: &str, name: &str) -> bool {
        types()
            .iter()
            .any(|t| t.name == ty && t.fields.iter().any(|f| f.aliases.contains(&name)))
    }

    #[test]
    fn symbols_and_fields_read_by_code_are_declared() {
        for (path, text) in sources() {
            for lits in literals_after(&text, "symbol(\"") {
                let name = lits[0];
                assert!(
                    symbol_declared(name),
                    "{path}: symbol {name} is not declared"
                );
            }
            // a name not written as a literal (`Family::member`) is checked below
            for lits in literals_after(&text, ".field(\"") {
                let (ty, Some(name)) = (lits[0], lits.get(1)) else {
                    continue;
                };
                assert!(
                    field_declared(ty, name),
                    "{path}: {ty}.{name} is not declared"
                );
            }
            if !path.ends_with("layout.rs") {
                for pattern in ["field(p, \"", "field(&self.profile, \"", "field_any(\""] {
                    assert!(
                        !text.contains(pattern),
                        "{path}: a field looked up by name past the declarations ({pattern})"
                    );
                }
            }
        }
        for (name, _) in CHAINS {
            assert!(symbol_declared(name), "notifier chain {name}");
        }
        for (name, _) in SEQ_OPS {
            assert!(symbol_declared(name), "seq_operations {name}");
        }
        for fam in Family::ALL {
            assert!(field_declared("netns_nf", fam.member()), "{fam:?}");
        }
    }
}

/// The needed set as sorted text, one line per type, field and symbol: what the golden
/// test `tests/data/needs.txt` freezes.
#[cfg(test)]
fn render() -> String {
    let mut lines = Vec::new();
    for t in types() {
        lines.push(format!(
            "type {}{}",
            t.name,
            if t.optional { " (optional type)" } else { "" }
        ));
        for f in &t.fields {
            lines.push(format!(
                "field {}.{}{}",
                t.name,
                f.aliases.join("|"),
                if f.optional { " (optional)" } else { "" }
            ));
        }
    }
    for s in symbols() {
        lines.push(format!(
            "symbol {}{}",
            s.aliases.join("|"),
            if s.optional { " (optional)" } else { "" }
        ));
    }
    for e in enums() {
        lines.push(format!("enum {e} (optional)"));
    }
    lines.sort();
    lines.dedup();
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod golden {
    /// The needed set is frozen in `tests/data/needs.txt`: a change to what profiles
    /// contain is a reviewed diff of that file (regenerate with `UPDATE_NEEDS=1`).
    #[test]
    fn needed_set_matches_the_golden_list() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/needs.txt");
        let now = super::render();
        if std::env::var_os("UPDATE_NEEDS").is_some() {
            std::fs::write(path, &now).unwrap();
        }
        let golden = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            now == golden,
            "the needed set changed (UPDATE_NEEDS=1 rewrites {path}):\n{}",
            diff(&golden, &now)
        );
    }

    fn diff(old: &str, new: &str) -> String {
        let old: std::collections::BTreeSet<&str> = old.lines().collect();
        let new: std::collections::BTreeSet<&str> = new.lines().collect();
        let gone = old.difference(&new).map(|l| format!("- {l}"));
        let added = new.difference(&old).map(|l| format!("+ {l}"));
        gone.chain(added).collect::<Vec<_>>().join("\n")
    }
}
