//! Where struct layouts come from: DWARF ([`Layouts`]) or BTF ([`Btf`]). The native
//! profile builder ([`crate::build`]) works over [`TypeSource`], so both paths lay out
//! types the same way (anonymous members flattened at their accumulated offset, named
//! nested ones not; the compact type names of docs/profile.md).

use std::collections::BTreeMap;

use vmi_core::profile::TypeDef;

use crate::btf::Btf;
#[cfg(feature = "dwarf")]
use crate::dwarf::Layouts;
use crate::error::Result;

/// A source of struct and union layouts.
pub trait TypeSource {
    /// The layout of the named struct or union (`None`: not defined here).
    fn layout(&self, name: &str) -> Result<Option<TypeDef>>;
    /// Every struct and union name defined, sorted.
    fn type_names(&self) -> Vec<String>;
    /// The enumerators of the named enum (`None`: not defined here); values that do
    /// not fit an `i64` are left out.
    fn enumeration(&self, name: &str) -> Option<BTreeMap<String, i64>>;
}

fn enumerators<'s>(all: impl IntoIterator<Item = (&'s str, i128)>) -> BTreeMap<String, i64> {
    all.into_iter()
        .filter_map(|(n, v)| Some((n.to_string(), i64::try_from(v).ok()?)))
        .collect()
}

#[cfg(feature = "dwarf")]
impl TypeSource for Layouts<'_> {
    fn layout(&self, name: &str) -> Result<Option<TypeDef>> {
        Layouts::layout(self, name)
    }

    fn type_names(&self) -> Vec<String> {
        let mut all: Vec<String> = Layouts::type_names(self).map(str::to_string).collect();
        all.sort();
        all
    }

    fn enumeration(&self, name: &str) -> Option<BTreeMap<String, i64>> {
        let loc = Layouts::enumeration(self, name)?;
        let all = self.enumerators(loc);
        Some(enumerators(all.iter().map(|(n, v)| (n.as_str(), *v))))
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

    fn enumeration(&self, name: &str) -> Option<BTreeMap<String, i64>> {
        let t = self.get(Btf::enumeration(self, name)?)?;
        Some(enumerators(self.enumerators(t)))
    }
}
