//! Any bytes as a boot image or as the kernel inside one: find and decompress the
//! payload (bounded), read the ELF headers, the BTF and the kallsyms tables.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profile_gen::kimage::KernelElf;
use profile_gen::{kallsyms, vmlinuz};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = vmlinuz::payload(data) {
        let _ = vmlinuz::decompress(&p, 1 << 20);
    }
    let Ok(k) = KernelElf::parse(data) else { return };
    let _ = k.needed_len();
    let _ = k.build_id();
    let _ = k.btf();
    let _ = kallsyms::recover(&k);
});
