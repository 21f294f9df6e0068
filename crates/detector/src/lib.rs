//! `detector` runs intrusion checks against a Linux guest read through `vmi-core`.
//!
//! This crate is a placeholder in the workspace laid down by the guest-lab issue. Its
//! commands and checks are tracked by their own issues; nothing here claims to implement
//! them yet.
#![deny(missing_docs)]
