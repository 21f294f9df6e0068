//! `vmi-core` reads a Linux guest's memory from outside the guest.
//!
//! Today it holds the kernel **profile** ([`profile::Profile`]): the versioned contract
//! between every crate of the project (struct layouts and symbol addresses of one kernel
//! build), and the declaration of what the detector needs from it
//! ([`profile::needs`]). Memory sources, translation, kernel discovery and typed kernel
//! objects are tracked by their own issue.
#![deny(missing_docs)]

pub mod profile;
