//! Helpers shared by the lab's integration tests.
#![allow(dead_code)]

use std::path::Path;

use vmi_lab::{Guest, Lab};

/// The lab in the default cache (VMI_LAB_CACHE in CI).
pub fn lab() -> Lab {
    Lab::open_default().expect("opening the lab cache")
}

/// Byte offset of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The whole RAM file of a guest (1 GiB; tests read it once).
pub fn read_ram(guest: &Guest) -> Vec<u8> {
    std::fs::read(guest.ram_path()).expect("reading guest RAM file")
}

/// True while a process with this pid exists (zombies included).
pub fn pid_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}
