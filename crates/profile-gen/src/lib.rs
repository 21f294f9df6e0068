//! `profile-gen` builds kernel profiles for `vmi-core`.
//!
//! This crate is a placeholder in the workspace laid down by the guest-lab issue. The
//! profile builder (DWARF + System.map, BTF, kallsyms, boot image) is tracked by its own
//! issues; nothing here claims to implement it yet.
#![deny(missing_docs)]
