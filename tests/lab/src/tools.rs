//! Host programs the lab runs, and how it runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::error::{Error, IoContext, Result};

/// A host program and the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    /// The program name looked up on `PATH`.
    pub program: &'static str,
    /// The Debian package to install when it is missing.
    pub package: &'static str,
}

/// QEMU for x86-64 guests.
pub const QEMU: Tool = Tool {
    program: "qemu-system-x86_64",
    package: "qemu-system-x86",
};
/// Debian's package tools (download and unpack).
pub const APT_GET: Tool = Tool {
    program: "apt-get",
    package: "apt",
};
/// Package queries.
pub const APT_CACHE: Tool = Tool {
    program: "apt-cache",
    package: "apt",
};
/// Unpacks .deb files.
pub const DPKG_DEB: Tool = Tool {
    program: "dpkg-deb",
    package: "dpkg",
};
/// Extracts members from the package's tar stream.
pub const TAR: Tool = Tool {
    program: "tar",
    package: "tar",
};
/// The C compiler for the guest worker and test modules.
pub const CC: Tool = Tool {
    program: "gcc",
    package: "gcc",
};
/// Kernel module builds.
pub const MAKE: Tool = Tool {
    program: "make",
    package: "make",
};
/// Decompresses xz-compressed kernel modules.
pub const XZ: Tool = Tool {
    program: "xz",
    package: "xz-utils",
};
/// Disassembles the ELF files of `dump-module` (the oracle of its tests).
pub const OBJDUMP: Tool = Tool {
    program: "objdump",
    package: "binutils",
};
/// Lists the sections and symbols of the ELF files of `dump-module`.
pub const READELF: Tool = Tool {
    program: "readelf",
    package: "binutils",
};
/// Decompresses zstd-compressed kernel modules.
pub const ZSTD: Tool = Tool {
    program: "zstd",
    package: "zstd",
};

/// The static busybox the initramfs is built from.
pub const BUSYBOX_PATHS: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];
/// The Debian package that provides a static busybox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";

impl Tool {
    /// Find the program on `PATH`, or say which package to install.
    pub fn find(&self) -> Result<PathBuf> {
        which(self.program).ok_or(Error::MissingTool {
            program: self.program.to_string(),
            package: self.package,
        })
    }

    /// A command for this tool, after checking that it exists.
    pub fn command(&self) -> Result<Command> {
        Ok(Command::new(self.find()?))
    }
}

/// Look a program up on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A statically linked busybox, or an error naming `busybox-static`.
pub fn static_busybox() -> Result<PathBuf> {
    for candidate in BUSYBOX_PATHS {
        let path = Path::new(candidate);
        if is_executable(path) && is_static_elf(path) {
            return Ok(path.to_path_buf());
        }
    }
    Err(Error::MissingTool {
        program: "busybox (statically linked)".into(),
        package: BUSYBOX_PACKAGE,
    })
}

/// True when the ELF file at `path` has no program interpreter (PT_INTERP).
fn is_static_elf(path: &Path) -> bool {
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    elf_has_no_interp(&data).unwrap_or(false)
}

fn elf_has_no_interp(data: &[u8]) -> Option<bool> {
    if data.get(..4)? != b"\x7fELF" || *data.get(4)? != 2 {
        return None; // not a 64-bit ELF
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let off = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let p_type = u32::from_le_bytes(data.get(off..off + 4)?.try_into().ok()?);
        if p_type == 3 {
            return Some(false);
        }
    }
    Some(true)
}

/// Run a command to completion, capturing its output; a non-zero exit is an error that
/// carries the tail of stderr.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let shown = display(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .ctx("running", PathBuf::from(cmd.get_program()))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: shown,
            status: out.status.to_string(),
            stderr: tail(&String::from_utf8_lossy(&out.stderr), 20),
        });
    }
    Ok(out)
}

/// Run a command with its output going to the caller's terminal.
pub fn run_visible(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .ctx("running", PathBuf::from(cmd.get_program()))?;
    if !status.success() {
        return Err(Error::Command {
            command: shown,
            status: status.to_string(),
            stderr: String::new(),
        });
    }
    Ok(())
}

/// A command line for messages.
pub fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn static_detection_on_truncated_elf_is_none() {
        assert_eq!(elf_has_no_interp(b"\x7fELF\x02"), None);
        assert_eq!(elf_has_no_interp(b"not elf"), None);
    }

    #[test]
    fn missing_tool_names_package() {
        let t = Tool {
            program: "definitely-not-a-program-xyz",
            package: "some-package",
        };
        let e = t.find().unwrap_err().to_string();
        assert!(e.contains("some-package"), "{e}");
    }
}
