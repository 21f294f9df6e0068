//! Who owns a kernel address: kernel text, a listed module, a hidden module, an ftrace
//! trampoline, or nobody.

use std::fmt;

use vmi_core::kernel::ftrace::FtraceOps;
use vmi_core::kernel::syscalls::{in_module_area, TextRange};
use vmi_core::kernel::Module;
use vmi_core::Va;

use crate::finding::{guest_str, Severity};

/// The owner of an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The kernel's own text.
    KernelText,
    /// A module's core memory; `hidden` when it is not on the `modules` list.
    Module {
        /// The module name (escaped).
        name: String,
        /// True for a module found only through its kobject.
        hidden: bool,
    },
    /// A trampoline the kernel made for a registered `ftrace_ops` (in the module area,
    /// owned by no module): what a function's ftrace site calls while it is traced.
    FtraceTrampoline {
        /// The `struct ftrace_ops`.
        ops: u64,
        /// Who owns its callback (displayed).
        callback: String,
    },
    /// In the module area, but in no module known (a module that hid itself entirely,
    /// or code left behind by one unloaded).
    UnknownModuleArea,
    /// Anywhere else.
    Unknown,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::KernelText => f.write_str("kernel text"),
            Owner::Module {
                name,
                hidden: false,
            } => write!(f, "module {name}"),
            Owner::Module { name, hidden: true } => write!(f, "hidden module {name}"),
            Owner::FtraceTrampoline { ops, callback } => write!(
                f,
                "the ftrace trampoline of ftrace_ops {ops:#x} (its callback in {callback})"
            ),
            Owner::UnknownModuleArea => f.write_str("module area, no known module (hidden)"),
            Owner::Unknown => f.write_str("unknown memory"),
        }
    }
}

impl Owner {
    /// How bad a hook whose code this owner holds is: a module on the list may be a
    /// monitoring agent that registered it openly (medium); code of a hidden module or
    /// of no module is a rootkit's (high).
    pub fn hook_severity(&self) -> Severity {
        match self {
            Owner::Module { hidden: false, .. } => Severity::Medium,
            _ => Severity::High,
        }
    }
}

/// Address ranges and their owners.
#[derive(Debug, Clone, Default)]
pub struct Owners {
    text: Option<TextRange>,
    /// (start, end, name, hidden), sorted by start.
    modules: Vec<(u64, u64, String, bool)>,
    /// (start, end, ftrace_ops, owner of its callback).
    trampolines: Vec<(u64, u64, u64, String)>,
}

impl Owners {
    /// Owners from the kernel's text range, the listed modules and hidden ones.
    pub fn new<'a>(
        text: Option<TextRange>,
        listed: &[Module],
        hidden: impl Iterator<Item = &'a Module>,
    ) -> Owners {
        let mut modules: Vec<(u64, u64, String, bool)> = listed
            .iter()
            .map(|m| (m, false))
            .chain(hidden.map(|m| (m, true)))
            .flat_map(|(m, h)| {
                let name = guest_str(&m.name);
                std::iter::once((m.core_base, m.core_size))
                    .chain(m.data.iter().copied())
                    .map(move |(start, size)| {
                        (
                            start.0,
                            start.0.saturating_add(u64::from(size)),
                            name.clone(),
                            h,
                        )
                    })
            })
            .collect();
        modules.sort();
        Owners {
            text,
            modules,
            trampolines: Vec::new(),
        }
    }

    /// Add the trampolines of registered ftrace_ops (sizes above 1 MiB are no
    /// trampoline's and are left out).
    pub fn add_ftrace_trampolines(&mut self, ops: &[FtraceOps]) {
        for o in ops {
            let (start, size) = (o.trampoline.0, o.trampoline_size);
            if start == 0 || size == 0 || size > 1 << 20 {
                continue;
            }
            let callback = self.owner(o.func).to_string();
            self.trampolines
                .push((start, start.saturating_add(size), o.addr.0, callback));
        }
    }

    /// Who owns `va`.
    pub fn owner(&self, va: Va) -> Owner {
        if self.text.is_some_and(|t| t.contains(va)) {
            return Owner::KernelText;
        }
        if let Some((_, _, name, hidden)) = self
            .modules
            .iter()
            .find(|(s, e, _, _)| (*s..*e).contains(&va.0))
        {
            return Owner::Module {
                name: name.clone(),
                hidden: *hidden,
            };
        }
        if let Some((_, _, ops, callback)) = self
            .trampolines
            .iter()
            .find(|(s, e, _, _)| (*s..*e).contains(&va.0))
        {
            return Owner::FtraceTrampoline {
                ops: *ops,
                callback: callback.clone(),
            };
        }
        if in_module_area(va) {
            Owner::UnknownModuleArea
        } else {
            Owner::Unknown
        }
    }

    /// True for kernel text.
    pub fn in_text(&self, va: Va) -> bool {
        self.text.is_some_and(|t| t.contains(va))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, base: u64, size: u32) -> Module {
        Module {
            addr: Va(0xffff_ffff_c100_0000),
            name: name.as_bytes().to_vec(),
            state: 0,
            core_base: Va(base),
            core_size: size,
            data: Vec::new(),
        }
    }

    #[test]
    fn addresses_get_their_owner() {
        let text = TextRange {
            start: Va(0xffff_ffff_8100_0000),
            end: Va(0xffff_ffff_8200_0000),
        };
        let mut ext4 = module("ext4", 0xffff_ffff_c000_0000, 0x1000);
        // 6.4+: its data apart from its text
        ext4.data.push((Va(0xffff_ffff_c000_4000), 0x800));
        let listed = [ext4];
        let hidden = [module("rk\x1b", 0xffff_ffff_c000_2000, 0x1000)];
        let o = Owners::new(Some(text), &listed, hidden.iter());
        assert_eq!(o.owner(Va(0xffff_ffff_8100_0010)), Owner::KernelText);
        assert_eq!(
            o.owner(Va(0xffff_ffff_c000_0fff)).to_string(),
            "module ext4"
        );
        assert_eq!(
            o.owner(Va(0xffff_ffff_c000_2010)).to_string(),
            "hidden module rk\\x1b"
        );
        assert_eq!(o.owner(Va(0xffff_ffff_c000_1000)), Owner::UnknownModuleArea);
        assert_eq!(
            o.owner(Va(0xffff_ffff_c000_4010)).to_string(),
            "module ext4"
        );
        assert_eq!(o.owner(Va(0xffff_ffff_c000_4800)), Owner::UnknownModuleArea);
        let mut o = o;
        o.add_ftrace_trampolines(&[vmi_core::kernel::ftrace::FtraceOps {
            addr: Va(0xffff_ffff_c000_2800),
            func: Va(0xffff_ffff_c000_2010),
            saved_func: Va(0xffff_ffff_c000_2010),
            flags: 0,
            trampoline: Va(0xffff_ffff_c000_1000),
            trampoline_size: 0x150,
            direct_call: None,
            filter: vmi_core::kernel::ftrace::Filter::All,
            notrace: 0,
        }]);
        assert_eq!(
            o.owner(Va(0xffff_ffff_c000_1010)).to_string(),
            "the ftrace trampoline of ftrace_ops 0xffffffffc0002800 (its callback in hidden module rk\\x1b)"
        );
        assert_eq!(o.owner(Va(0xffff_ffff_c000_1150)), Owner::UnknownModuleArea);
        assert_eq!(o.owner(Va(0xffff_8880_0000_0000)), Owner::Unknown);
        assert_eq!(o.owner(Va(0xffff_ffff_8200_0000)), Owner::Unknown);
    }
}
