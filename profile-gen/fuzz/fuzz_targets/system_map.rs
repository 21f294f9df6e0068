//! Any text as a System.map.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = profile_gen::symbols::parse_system_map(std::path::Path::new("System.map"), &text);
});
