//! `guest-module`: profile extractors that run inside the guest.
//!
//! - [`extract`] is the BTF userspace extractor behind the static `vmi-extract` binary
//!   (`src/bin/vmi-extract.rs`): run as root in a guest whose kernel has
//!   `CONFIG_DEBUG_INFO_BTF`, it reads `/sys/kernel/btf/vmlinux`, `/proc/kallsyms` and
//!   `/proc/version` and builds the profile with profile-gen's BTF code
//!   ([`profile_gen::build::from_btf`]), so it equals the profile profile-gen makes on
//!   the host from the same kernel's boot image (but for provenance and `build_id`).
//!   [`extract::Error`] says what is wrong and what to do: not root, no BTF, addresses
//!   hidden by `kptr_restrict`.
//! - The Rust-for-Linux module (`kmod/`, for kernels without BTF) is built by kbuild,
//!   not by cargo.
#![deny(missing_docs)]

pub mod extract;
