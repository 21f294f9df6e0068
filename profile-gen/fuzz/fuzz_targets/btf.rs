//! Any bytes as raw BTF: parse, lay out every struct, name every type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profile_gen::btf::Btf;

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse(data) else { return };
    let names: Vec<String> = btf.type_names().map(str::to_string).collect();
    for name in names.iter().take(256) {
        let _ = btf.layout(name);
    }
    for id in 0..(btf.len() as u32 + 2).min(4096) {
        let _ = btf.type_name(id);
        let _ = btf.size_of(id);
    }
    let _ = btf.variables();
});
