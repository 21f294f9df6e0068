//! `vmi-core` reads a Linux guest's memory from outside the guest.
//!
//! This crate is a placeholder in the workspace laid down by the guest-lab issue. Its
//! scope (memory sources, x86-64 translation, kernel discovery, typed kernel objects and
//! the profile schema) is tracked by its own issue; nothing here claims to implement it yet.
#![deny(missing_docs)]
