//! Any bytes as a vmlinux: every output format must return (an error is fine), never
//! panic, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profile_gen::build::{generate_bytes, Format, Options};

fuzz_target!(|data: &[u8]| {
    for (format, full) in [(Format::Native, false), (Format::Native, true), (Format::Isf, true)] {
        let opts = Options {
            full,
            ..Options::default()
        };
        let _ = generate_bytes(data, None, &opts, format, &mut std::io::sink());
    }
});
