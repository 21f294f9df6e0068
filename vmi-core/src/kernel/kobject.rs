//! Modules as sysfs knows them: the kobjects of `module_kset` (`/sys/module`).
//!
//! Every loadable module registers a `struct module_kobject` in `module_kset` when it
//! loads; built-in modules with parameters have one too, with no module behind it
//! (`mk->mod` is null). A module unlinked from the `modules` list to hide from `lsmod`
//! usually keeps its kobject, so the two views must agree.
//!
//! Fields used ([`KobjLayout`]): `kset.list`, `kobject.entry`, `kobject.name`,
//! `module_kobject.kobj`, `module_kobject.mod`, and the module fields of
//! [`Layout`](crate::kernel::Layout).

use crate::addr::Va;
use crate::kernel::objects::{is_kernel_va, walk_list};
use crate::kernel::{Kernel, KernelError, Module};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// Longest kobject name read (sysfs names are short; module names are < 56 bytes).
pub const MAX_KOBJECT_NAME: usize = 256;

crate::kernel_layout! {
    /// Offsets the kset walk uses.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct KobjLayout(p) {
        /// `kset.list`
        pub kset_list: u64 = "kset" ["list"],
        /// `kobject.entry`
        pub kobj_entry: u64 = "kobject" ["entry"],
        /// `kobject.name` (a `char *`)
        pub kobj_name: u64 = "kobject" ["name"],
        /// `module_kobject.kobj`
        pub mk_kobj: u64 = "module_kobject" ["kobj"],
        /// `module_kobject.mod`
        pub mk_mod: u64 = "module_kobject" ["mod"],
        /// `module.mkobj` (the module's own `module_kobject`)
        pub module_mkobj: u64 = "module" ["mkobj"],
    }
    symbols [
        ["module_kset"],
    ]
}

/// One kobject of `module_kset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleKobject {
    /// The `struct kobject`.
    pub kobj: Va,
    /// Its name (guest bytes, the directory name under `/sys/module`).
    pub name: Vec<u8>,
    /// The module behind it (`module_kobject.mod`); `None` for built-in modules.
    pub module: Option<Va>,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// Every kobject of `module_kset`, at most `max` of them.
    pub fn module_kobjects(&self, max: usize) -> Result<Vec<ModuleKobject>, KernelError> {
        let kl = KobjLayout::from_profile(&self.profile)?;
        let kset_ptr = self.symbol("module_kset")?;
        let kset = self
            .space
            .read_u64(kset_ptr)
            .map_err(|source| KernelError::Read {
                what: "module_kset",
                source,
            })?;
        if !is_kernel_va(kset) {
            return Err(KernelError::BadPointer {
                what: "module_kset",
                value: kset,
            });
        }
        let head = Va(kset.wrapping_add(kl.kset_list));
        let mut out = Vec::new();
        walk_list(&self.space, head, "module_kset.list", max, |node| {
            let kobj = Va(node.0.wrapping_sub(kl.kobj_entry));
            let name_ptr = self
                .space
                .read_u64(Va(kobj.0.wrapping_add(kl.kobj_name)))
                .map_err(|source| KernelError::Read {
                    what: "kobject.name",
                    source,
                })?;
            let name = if is_kernel_va(name_ptr) {
                self.space
                    .read_cstr(Va(name_ptr), MAX_KOBJECT_NAME)
                    .map_err(|source| KernelError::Read {
                        what: "kobject.name string",
                        source,
                    })?
            } else {
                Vec::new()
            };
            let mk = kobj.0.wrapping_sub(kl.mk_kobj);
            let module = self
                .space
                .read_u64(Va(mk.wrapping_add(kl.mk_mod)))
                .map_err(|source| KernelError::Read {
                    what: "module_kobject.mod",
                    source,
                })?;
            let module = match module {
                0 => None,
                m if is_kernel_va(m) => Some(Va(m)),
                m => {
                    return Err(KernelError::BadPointer {
                        what: "module_kobject.mod",
                        value: m,
                    })
                }
            };
            out.push(ModuleKobject { kobj, name, module });
            Ok(())
        })?;
        Ok(out)
    }

    /// The `struct module` at `addr` (found other than through the `modules` list).
    /// The module's own `mkobj.mod` must point back to it: otherwise this is no module.
    pub fn module_at(&self, addr: Va) -> Result<Module, KernelError> {
        let kl = KobjLayout::from_profile(&self.profile)?;
        let back = self
            .space
            .read_u64(Va(addr.0.wrapping_add(kl.module_mkobj + kl.mk_mod)))
            .map_err(|source| KernelError::Read {
                what: "module.mkobj.mod",
                source,
            })?;
        if back != addr.0 {
            return Err(KernelError::Corrupt {
                what: format!("struct module: mkobj.mod is {back:#x}, not the module itself"),
                at: addr,
            });
        }
        self.read_module(addr)
    }
}
