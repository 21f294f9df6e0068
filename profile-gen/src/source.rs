//! Where struct layouts come from: DWARF ([`Layouts`]) or BTF ([`Btf`]). The native
//! profile builder ([`crate::build`]) works over [`TypeSource`], so both paths lay out
//! types the same way (anonymous members flattened at their accumulated offset, named
//! nested ones not; the compact type names of docs/profile.md).

use vmi_core::profile::TypeDef;

use crate::btf::Btf;
use crate::dwarf::Layouts;
use crate::error::Result;

/// A source of struct and union layouts.
pub trait TypeSource {
    /// The layout of the named struct or union (`None`: not defined here).
    fn layout(&self, name: &str) -> Result<Option<TypeDef>>;
    /// Every struct and union name defined, sorted.
    fn type_names(&self) -> Vec<String>;
}

impl TypeSource for Layouts<'_> {
    fn layout(&self, name: &str) -> Result<Option<TypeDef>> {
        Layouts::layout(self, name)
    }

    fn type_names(&self) -> Vec<String> {
        let mut all: Vec<String> = Layouts::type_names(self).map(str::to_string).collect();
        all.sort();
        all
    }
}

impl TypeSource for Btf {
    fn layout(&self, name: &str) -> Result<Option<TypeDef>> {
        Btf::layout(self, name)
    }

    fn type_names(&self) -> Vec<String> {
        let mut all: Vec<String> = Btf::type_names(self).map(str::to_string).collect();
        all.sort();
        all
    }
}
