//! Processor architectures. Only x86-64 today.

pub mod x86_64;
