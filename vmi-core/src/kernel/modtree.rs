//! Modules as the module tree knows them: `mod_tree`, the latched red-black tree the
//! kernel looks an address up in (`__module_address`: oopses, kallsyms, `kprobes`).
//!
//! Each module's memory regions (6.4 on: every `mem[]` type with memory; before: the
//! core and init layouts) is a node of it, a `mod_tree_node` (`mod` and the
//! `latch_tree_node`, two `rb_node`s, one per copy of the tree). A module that unlinks
//! itself from the `modules` list and deletes its kobject is still here as long as its
//! code can run: the kernel must find it to unwind through it. Copy 0 of the latch is
//! walked (bounded, cycle-checked: [`objects::rb_nodes`](super::objects)).
//!
//! Fields used ([`ModTreeLayout`], optional but for `rb_node`'s: the tree is private to
//! kernel/module and exists with `CONFIG_MODULES_TREE_LOOKUP`): the symbol `mod_tree`,
//! `mod_tree_root.root`, `latch_tree_root.tree`, `mod_tree_node.{mod,node}`,
//! `rb_node.{rb_left,rb_right}`.

use crate::addr::Va;
use crate::kernel::objects::{is_kernel_va, rb_nodes, read_err};
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

crate::kernel_layout! {
    /// Offsets of the module tree walk.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ModTreeLayout(p) {
        /// `mod_tree_root.root` (a `latch_tree_root`)
        pub root: Option<u64> = opt_both "mod_tree_root" ["root"],
        /// `latch_tree_root.tree` (`struct rb_root[2]`)
        pub tree: Option<u64> = opt_both "latch_tree_root" ["tree"],
        /// `mod_tree_node.mod`
        pub node_mod: Option<u64> = opt_both "mod_tree_node" ["mod"],
        /// `mod_tree_node.node` (a `latch_tree_node`: `rb_node node[2]`)
        pub node_node: Option<u64> = opt_both "mod_tree_node" ["node"],
        /// `rb_node.rb_left`
        pub rb_left: u64 = "rb_node" ["rb_left"],
        /// `rb_node.rb_right`
        pub rb_right: u64 = "rb_node" ["rb_right"],
    }
    symbols [
        opt ["mod_tree"],
    ]
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The `struct module` of every node of the module tree, each once, in tree order
    /// of first appearance; at most `max` nodes walked. `None` when the profile has no
    /// module tree.
    pub fn module_tree(&self, max: usize) -> Result<Option<Vec<Va>>, KernelError> {
        let l = ModTreeLayout::from_profile(self.profile())?;
        let (Some(root), Some(tree), Some(node_mod), Some(node_node), Ok(mod_tree)) = (
            l.root,
            l.tree,
            l.node_mod,
            l.node_node,
            self.symbol("mod_tree"),
        ) else {
            return Ok(None);
        };
        let what = "mod_tree";
        // tree[0].rb_node
        let top = self
            .space()
            .read_u64(Va(mod_tree.0 + root + tree))
            .map_err(read_err(what))?;
        let nodes = rb_nodes(self.space(), top, (l.rb_left, l.rb_right), max, what)?;
        let mut out: Vec<Va> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for n in nodes {
            let m = self
                .space()
                .read_u64(Va(n.wrapping_sub(node_node).wrapping_add(node_mod)))
                .map_err(read_err("mod_tree_node.mod"))?;
            if !is_kernel_va(m) {
                return Err(KernelError::BadPointer {
                    what: "mod_tree_node.mod",
                    value: m,
                });
            }
            if seen.insert(m) {
                out.push(Va(m));
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SyntheticKernel;

    #[test]
    fn the_tree_holds_modules_gone_from_the_list_and_the_kset() {
        let mut sk = SyntheticKernel::clean();
        let a = sk.add_module(b"a", 0x1000);
        let ghost = sk.add_module(b"ghost", 0x1000);
        // a second region of the ghost: one more node of the same module
        sk.add_module_region(&ghost, 1, 0x1000, &[]);
        let mem = sk.field_va(ghost.addr, "module", "mem");
        let data = Va(mem.0 + sk.size_of("module_memory"));
        let mtn = sk.field_va(data, "module_memory", "mtn");
        sk.set(mtn, "mod_tree_node", "mod", ghost.addr.0);
        let node = sk.field_va(mtn, "mod_tree_node", "node");
        let text_node = sk.field_va(
            sk.field_va(mem, "module_memory", "mtn"),
            "mod_tree_node",
            "node",
        );
        sk.set(text_node, "rb_node", "rb_right", node.0);
        sk.hide_module(&ghost);
        sk.delete_module_kobject(&ghost);
        let k = sk.discover().unwrap();
        assert_eq!(k.modules(&Default::default()).unwrap().len(), 1);
        assert_eq!(k.module_kobjects(16).unwrap().len(), 1);
        assert_eq!(k.module_tree(64).unwrap(), Some(vec![ghost.addr, a.addr]));
    }

    #[test]
    fn a_looping_tree_or_a_wild_module_pointer_is_an_error() {
        let mut sk = SyntheticKernel::clean();
        let a = sk.add_module(b"a", 0x1000);
        let mtn = sk.field_va(sk.field_va(a.addr, "module", "mem"), "module_memory", "mtn");
        let node = sk.field_va(mtn, "mod_tree_node", "node");
        sk.set(node, "rb_node", "rb_left", node.0);
        let k = sk.discover().unwrap();
        assert!(matches!(k.module_tree(64), Err(KernelError::Cycle { .. })));

        let mut sk = SyntheticKernel::clean();
        let a = sk.add_module(b"a", 0x1000);
        let mtn = sk.field_va(sk.field_va(a.addr, "module", "mem"), "module_memory", "mtn");
        sk.set(mtn, "mod_tree_node", "mod", 0x1000);
        let k = sk.discover().unwrap();
        assert!(matches!(
            k.module_tree(64),
            Err(KernelError::BadPointer { .. })
        ));
    }

    #[test]
    fn a_kernel_without_the_tree_has_none() {
        let mut sk = SyntheticKernel::clean();
        sk.profile_mut().symbols.remove("mod_tree");
        sk.add_module(b"a", 0x1000);
        let k = sk.discover().unwrap();
        assert_eq!(k.module_tree(64).unwrap(), None);
    }
}
