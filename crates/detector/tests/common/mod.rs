//! What the detector's lab tests and examples share: building the test rootkits.

use std::path::{Path, PathBuf};

use vmi_lab::build::ModuleSource;
use vmi_lab::Lab;

/// Where the test rootkits' sources are.
pub const MODS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mods");

/// Build test rootkit `name` (`tests/mods/<name>.c` with `vmi_attack.h`) against the
/// headers of `kernel`.
pub fn attack_module(lab: &Lab, kernel: &str, name: &str) -> PathBuf {
    let read = |f: &str| {
        std::fs::read_to_string(Path::new(MODS).join(f)).unwrap_or_else(|e| panic!("{f}: {e}"))
    };
    let src = ModuleSource {
        name: name.to_string(),
        files: vec![
            (format!("{name}.c"), read(&format!("{name}.c"))),
            ("vmi_attack.h".into(), read("vmi_attack.h")),
        ],
    };
    lab.build_module(kernel, &src)
        .unwrap_or_else(|e| panic!("building {name} for {kernel}: {e}"))
}
