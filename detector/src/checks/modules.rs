//! `hidden-module`: every module with a kobject in `module_kset` (`/sys/module`) must
//! be on the `modules` list (`/proc/modules`, `lsmod`).
//!
//! A rootkit that `list_del`s itself from `modules` vanishes from `lsmod` and from
//! list-walking tools but keeps its kobject. Found that way, the module's name and core
//! memory are read from its `struct module`, whose own `mkobj.mod` must point back to
//! it; the other checks then name it as the owner of any hook inside it.
//!
//! One that also deletes its kobject (`kobject_del`: gone from `/sys/module` too) stays
//! in the module tree (`mod_tree`), where the kernel looks its code up while it can run
//! ([`Kernel::module_tree`]): a module of the tree that is neither listed nor in the
//! kset is reported too, with the views that hold it, and named as the owner of hooks
//! in it like the kset's hidden modules.

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

/// What `module_kset` and the module tree hold beyond the `modules` list.
#[derive(Debug, Default)]
pub struct KsetView {
    /// Modules not on the list.
    pub hidden: Vec<HiddenModule>,
    /// Kobjects whose module cannot be read as one.
    pub bogus: Vec<Bogus>,
    /// Modules of the module tree neither on the list nor in the kset.
    pub tree_only: Vec<Module>,
    /// Nodes of the module tree whose module is on neither and cannot be read as one.
    pub tree_bogus: Vec<(Va, KernelError)>,
    /// The module tree found corrupted (a loop, a pointer out of the kernel).
    pub tree_broken: Option<KernelError>,
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
    let mut view = KsetView {
        hidden,
        bogus,
        ..KsetView::default()
    };
    tree_view(kernel, listed, &mut view);
    Ok(view)
}

/// The modules only the module tree holds: neither on the list nor in the kset.
fn tree_view<M: PhysicalMemory>(kernel: &Kernel<M>, listed: &[Module], view: &mut KsetView) {
    // each module is a node per memory region
    let tree = match kernel.module_tree(MAX_KOBJECTS * 8) {
        Ok(Some(t)) => t,
        Ok(None) => return, // no module tree in this kernel's profile
        Err(e) if broken::is_manipulation(&e) => {
            view.tree_broken = Some(e);
            return;
        }
        Err(_) => return, // unreadable: the list and the kset are compared
    };
    let mut known: HashSet<Va> = listed.iter().map(|m| m.addr).collect();
    known.extend(view.hidden.iter().map(|h| h.module.addr));
    known.extend(view.bogus.iter().map(|b| b.module));
    for m in tree {
        if !known.insert(m) {
            continue;
        }
        match kernel.module_at(m) {
            Ok(module) => view.tree_only.push(module),
            Err(e) => view.tree_bogus.push((m, e)),
        }
    }
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
    findings.extend(tree_only(view));
    Ok(findings)
}

/// The findings for what only the module tree holds.
fn tree_only(view: &KsetView) -> Vec<Finding> {
    let mut findings: Vec<Finding> = view
        .tree_broken
        .iter()
        .map(|e| broken::check_stopped(NAME, e))
        .collect();
    for module in &view.tree_only {
        let name = guest_str(&module.name);
        findings.push(
            Finding::new(
                NAME,
                Severity::High,
                format!("{NAME}:{:#x}", module.addr.0),
                format!(
                    "module {name} is loaded (the module tree holds its code) but is neither on the modules list nor in /sys/module: hidden from lsmod and sysfs"
                ),
            )
            .text("module", name)
            .addr("struct_module", module.addr.0)
            .addr("core_base", module.core_base.0)
            .num("core_size", u64::from(module.core_size))
            .text("views", "tree"),
        );
    }
    for (m, e) in &view.tree_bogus {
        findings.push(
            Finding::new(
                NAME,
                Severity::Medium,
                format!("{NAME}:bogus-tree:{:#x}", m.0),
                format!(
                    "the module tree holds {:#x}, which is not a module on the list or in /sys/module and not a readable module ({e})",
                    m.0
                ),
            )
            .addr("module", m.0)
            .text("views", "tree"),
        );
    }
    findings
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

    /// Off the list and out of /sys/module, the module tree still holds it: found
    /// once, with the tree as its only view; a module hidden from the list only is
    /// found by its kobject, not twice.
    #[test]
    fn a_module_only_the_module_tree_holds_is_found() {
        let mut s = system();
        let ghost = s.sk.add_module(b"ghost", 0x2000);
        s.sk.hide_module(&ghost);
        s.sk.delete_module_kobject(&ghost);
        let rk = s.sk.add_module(b"rk", 0x1000);
        s.sk.hide_module(&rk);
        let findings = run(s.sk, CHECK);
        assert_eq!(findings.len(), 2, "{findings:#?}");
        let f = findings
            .iter()
            .find(|f| f.key == format!("hidden-module:{:#x}", ghost.addr.0))
            .expect("the ghost");
        assert_eq!(f.severity, Severity::High);
        assert_eq!(ev(f, "module"), "ghost");
        assert_eq!(ev(f, "views"), "tree");
        assert_eq!(ev_addr(f, "core_base"), ghost.core_base.0);
        assert!(findings
            .iter()
            .any(|f| f.key == format!("hidden-module:{:#x}", rk.addr.0)));
    }

    /// A hook in a module only the tree holds is named after that module.
    #[test]
    fn a_hook_in_a_tree_only_module_names_it() {
        let mut s = system();
        let ghost = s.sk.add_module(b"ghost", 0x2000);
        s.sk.hide_module(&ghost);
        s.sk.delete_module_kobject(&ghost);
        s.sk.set_syscall(59, ghost.code(0x80));
        let findings = run(s.sk, Check::SyscallTable);
        let f = single(&findings, Check::SyscallTable, Severity::High);
        assert_eq!(ev(f, "owner"), "hidden module ghost");
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
        // the kobject's, and the module tree's node of the module it no longer points to
        assert_eq!(findings.len(), 2, "{findings:#?}");
        assert!(findings.iter().all(|f| f.severity == Severity::Medium));
        let f = &findings[0];
        assert_eq!(f.key, format!("hidden-module:bogus:{:#x}", rk.kobj.0));
        assert_eq!(ev_addr(f, "module"), other.0);
        assert_eq!(
            findings[1].key,
            format!("hidden-module:bogus-tree:{:#x}", rk.addr.0)
        );
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
