//! `guest-module`: the in-guest profile extractor.
//!
//! This crate is a placeholder in the workspace laid down by the guest-lab issue. The
//! Rust-for-Linux module and the userspace extractor are tracked by their own issue;
//! nothing here claims to implement them yet.
#![deny(missing_docs)]
