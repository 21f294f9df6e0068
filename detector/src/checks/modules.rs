//! `hidden-module`: every module with a kobject in `module_kset` (`/sys/module`) must
//! be on the `modules` list (`/proc/modules`, `lsmod`).
//!
//! A rootkit that `list_del`s itself from `modules` vanishes from `lsmod` and from
//! list-walking tools but keeps its kobject. Found that way, the module's name and core
//! memory are read from its `struct module`, whose own `mkobj.mod` must point back to
//! it; the other checks then name it as the owner of any hook inside it.

use std::collections::HashSet;

use vmi_core::kernel::{Kernel, KernelError, Module};
use vmi_core::memory::PhysicalMemory;
use vmi_core::Va;

use crate::checks::{broken, CheckFailure, Scan, MAX_KOBJECTS};
use crate::finding::{guest_str, Finding, Severity};

const NAME: &str = "hidden-module";

/// A module found through its kobject only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HiddenModule {
    /// The module, read from its `struct module`.
    pub module: Module,
    /// Its kobject.
    pub kobj: Va,
    /// The kobject's name (guest bytes).
    pub kobj_name: Vec<u8>,
}

/// A kobject of `module_kset` whose `mod` is no module.
#[derive(Debug)]
pub struct Bogus {
    /// The kobject.
    pub kobj: Va,
    /// Its name (guest bytes).
    pub name: Vec<u8>,
    /// What its `mod` points to.
    pub module: Va,
    /// Why that is no module.
    pub error: KernelError,
}

/// What `module_kset` holds beyond the `modules` list.
#[derive(Debug, Default)]
pub struct KsetView {
    /// Modules not on the list.
    pub hidden: Vec<HiddenModule>,
    /// Kobjects whose module cannot be read as one.
    pub bogus: Vec<Bogus>,
}

/// Compare `module_kset` with the listed modules.
pub fn kset_view<M: PhysicalMemory>(
    kernel: &Kernel<M>,
    listed: &[Module],
) -> Result<KsetView, KernelError> {
    let on_list: HashSet<Va> = listed.iter().map(|m| m.addr).collect();
    let mut hidden = Vec::new();
    let mut bogus = Vec::new();
    for k in kernel.module_kobjects(MAX_KOBJECTS)? {
        let Some(m) = k.module else { continue };
        if on_list.contains(&m) {
            continue;
        }
        match kernel.module_at(m) {
            Ok(module) => hidden.push(HiddenModule {
                module,
                kobj: k.kobj,
                kobj_name: k.name,
            }),
            Err(error) => bogus.push(Bogus {
                kobj: k.kobj,
                name: k.name,
                module: m,
                error,
            }),
        }
    }
    Ok(KsetView { hidden, bogus })
}

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    let mut findings = list_breaks(scan);
    let view = match &scan.kset {
        Ok(v) => v,
        Err(CheckFailure::Kernel(e)) if broken::is_manipulation(e) => {
            findings.push(broken::check_stopped(NAME, e));
            return Ok(findings);
        }
        Err(CheckFailure::Walk { walk, error }) => {
            return Err(CheckFailure::Walk {
                walk,
                error: error.clone(),
            })
        }
        Err(e) => {
            return Err(CheckFailure::Walk {
                walk: "the module kset",
                error: e.to_string(),
            })
        }
    };
    for h in &view.hidden {
        let name = guest_str(&h.module.name);
        findings.push(
            Finding::new(
                NAME,
                Severity::High,
                format!("{NAME}:{:#x}", h.module.addr.0),
                format!(
                    "module {name} is loaded (it has a kobject in /sys/module) but is not on the modules list: hidden from lsmod"
                ),
            )
            .text("module", name)
            .addr("struct_module", h.module.addr.0)
            .addr("core_base", h.module.core_base.0)
            .num("core_size", u64::from(h.module.core_size))
            .addr("kobject", h.kobj.0)
            .text("kobject_name", guest_str(&h.kobj_name)),
        );
    }
    for b in &view.bogus {
        let name = guest_str(&b.name);
        findings.push(
            Finding::new(
                NAME,
                Severity::Medium,
                format!("{NAME}:bogus:{:#x}", b.kobj.0),
                format!(
                    "the /sys/module kobject {name} points to {:#x}, which is not a module on the list and not a readable module ({})",
                    b.module.0, b.error
                ),
            )
            .text("kobject_name", name)
            .addr("kobject", b.kobj.0)
            .addr("module", b.module.0),
        );
    }
    Ok(findings)
}

/// The breaks of the `modules` list and its elements that are no readable module.
fn list_breaks<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Vec<Finding> {
    let Ok(list) = &scan.modules else {
        return Vec::new();
    };
    let off = scan.kernel.layout().module_list;
    let head = scan.kernel.symbol("modules").ok();
    let mut findings = Vec::new();
    for b in &list.breaks {
        let at = Va(b.from.0.wrapping_sub(off));
        let element = match list.modules.iter().find(|m| m.addr == at) {
            _ if Some(b.from) == head => "the list head (modules)".to_string(),
            Some(m) => format!("module {} at {at}", guest_str(&m.name)),
            None => format!("the element at {}", b.from),
        };
        findings.push(broken::list_break(NAME, b, &element));
    }
    for u in &list.undecodable {
        findings.push(
            Finding::new(
                NAME,
                Severity::High,
                format!("{NAME}:undecodable:{:#x}", u.addr.0),
                u.to_string(),
            )
            .addr("struct_module", u.addr.0)
            .text("cause", u.error.to_string()),
        );
    }
    findings
}

#[cfg(test)]
mod tests {
    use crate::checks::synthetic::{ev, ev_addr, run, single, system};
    use crate::checks::Check;
    use crate::finding::Severity;

    const CHECK: Check = Check::HiddenModule;

    #[test]
    fn clean() {
        assert!(run(system().sk, CHECK).is_empty());
    }

    #[test]
    fn a_module_unlinked_from_the_list_is_found_by_its_kobject() {
        let mut s = system();
        let rk = s.sk.add_module(b"diamorphine", 0x4000);
        s.sk.hide_module(&rk);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(f.key, format!("hidden-module:{:#x}", rk.addr.0));
        assert_eq!(ev(f, "module"), "diamorphine");
        assert_eq!(ev_addr(f, "core_base"), rk.core_base.0);
        assert_eq!(ev(f, "core_size"), "16384");
        assert_eq!(ev_addr(f, "kobject"), rk.kobj.0);
    }

    #[test]
    fn a_kobject_whose_module_does_not_point_back_is_bogus() {
        let mut s = system();
        let rk = s.sk.add_module(b"fake", 0x1000);
        s.sk.hide_module(&rk);
        let mk = s.sk.field_va(rk.addr, "module", "mkobj");
        let other = s.sk.alloc_type("module");
        s.sk.set(mk, "module_kobject", "mod", other.0);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::Medium);
        assert_eq!(f.key, format!("hidden-module:bogus:{:#x}", rk.kobj.0));
        assert_eq!(ev_addr(f, "module"), other.0);
    }

    #[test]
    fn a_kset_cycle_is_a_high_finding() {
        let mut s = system();
        let rk = s.sk.add_module(b"loop", 0x1000);
        let entry = s.sk.field_va(rk.kobj, "kobject", "entry");
        s.sk.write_u64(entry, entry.0);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(f.key, "hidden-module:broken:module_kset.list");
    }

    #[test]
    fn a_wild_next_in_the_modules_list_is_found_and_hides_no_module() {
        let mut s = system();
        let a = s.sk.add_module(b"ext4", 0x1000);
        s.sk.add_module(b"e1000", 0x1000);
        let rk = s.sk.add_module(b"vmi_rk", 0x1000);
        s.sk.hide_module(&rk);
        let next = s.sk.field_va(a.addr, "module", "list");
        s.sk.write_u64(next, 0x4141_4141_4141_4141);
        let findings = run(s.sk, CHECK);
        assert_eq!(findings.len(), 2, "{findings:#?}");
        let b = &findings[0];
        assert_eq!(b.severity, Severity::High);
        assert_eq!(
            b.key,
            format!("hidden-module:broken:modules:next:{:#x}", next.0)
        );
        assert!(b.summary.contains("module ext4"), "{}", b.summary);
        assert!(
            b.summary
                .contains("0x4141414141414141, not a kernel address"),
            "{}",
            b.summary
        );
        // e1000, beyond the break, is read backwards: only the hidden one is reported
        assert_eq!(findings[1].key, format!("hidden-module:{:#x}", rk.addr.0));
    }

    #[test]
    fn a_wild_module_kset_pointer_is_a_high_finding() {
        let mut s = system();
        let kset = s.sk.symbol("module_kset");
        s.sk.write_u64(kset, 0x4141_4141);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(f.key, "hidden-module:broken:module_kset");
    }
}
