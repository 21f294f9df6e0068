//! The evidence commands' output: what an administrator asks for once an alert fired,
//! read from outside instead of by logging into the suspect guest. `env PID` (a
//! process's environment, as `/proc/PID/environ`) and `lsof PID` (its open files, as
//! `/proc/PID/fd` and `/proc/PID/fdinfo`), each as text or JSON. Guest strings are
//! escaped (`\xNN`) before they reach either.

use std::fmt::Write as _;

use serde_json::{json, Value};
use vmi_core::kernel::openfiles::OpenFile;
use vmi_core::kernel::userspace::Environment;

use crate::finding::guest_str;

/// `env` as JSON: the process, its variables (escaped) and whether they were cut.
/// `pid` and `comm` are the process's.
pub fn env_json(pid: u32, comm: &[u8], env: &Environment) -> Value {
    json!({
        "pid": pid,
        "comm": guest_str(comm),
        "vars": env.vars.iter().map(|v| guest_str(v)).collect::<Vec<_>>(),
        "truncated": env.truncated,
    })
}

/// `env` as text: one variable a line (escaped), and a last line when cut.
pub fn env_text(env: &Environment) -> String {
    let mut s = String::new();
    for v in &env.vars {
        let _ = writeln!(s, "{}", guest_str(v));
    }
    if env.truncated {
        let _ = writeln!(
            s,
            "# cut after {} bytes",
            vmi_core::kernel::userspace::MAX_ENVIRON
        );
    }
    s
}

/// `lsof` as JSON: one object per descriptor.
/// `pid` and `comm` are the process's.
pub fn lsof_json(pid: u32, comm: &[u8], files: &[OpenFile]) -> Value {
    json!({
        "pid": pid,
        "comm": guest_str(comm),
        "files": files.iter().map(|f| {
            let inode = f.inode.map(|i| {
                let (major, minor) = i.dev_pair();
                json!({
                    "ino": i.ino,
                    "type": i.type_char().to_string(),
                    "mode": format!("{:o}", i.mode),
                    "size": i.size,
                    "dev": format!("{major}:{minor}"),
                    "magic": format!("{:#x}", i.magic),
                })
            });
            json!({
                "fd": f.fd,
                "access": f.access(),
                "flags": format!("{:o}", f.flags),
                "pos": f.pos,
                "name": guest_str(&f.name),
                "inode": inode,
                "file": format!("{:#x}", f.file.0),
            })
        }).collect::<Vec<_>>(),
    })
}

/// `lsof` as text: a table in the manner of `lsof -p PID`.
pub fn lsof_text(files: &[OpenFile]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>5} {:<3} {:>8} {:<4} {:>7} {:>12} {:>10} NAME",
        "FD", "ACC", "FLAGS", "TYPE", "DEVICE", "SIZE/OFF", "NODE"
    );
    for f in files {
        let (ty, dev, size, ino) = match f.inode {
            Some(i) => {
                let (major, minor) = i.dev_pair();
                (
                    i.type_char().to_string(),
                    format!("{major},{minor}"),
                    if i.type_char() == '-' {
                        i.size.to_string()
                    } else {
                        format!("0t{}", f.pos)
                    },
                    i.ino.to_string(),
                )
            }
            None => ("?".into(), "-".into(), format!("0t{}", f.pos), "-".into()),
        };
        let _ = writeln!(
            s,
            "{:>5} {:<3} {:>8o} {:<4} {:>7} {:>12} {:>10} {}",
            f.fd,
            f.access(),
            f.flags,
            ty,
            dev,
            size,
            ino,
            guest_str(&f.name)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmi_core::kernel::openfiles::InodeInfo;
    use vmi_core::Va;

    #[test]
    fn guest_strings_are_escaped_in_text_and_json() {
        let env = Environment {
            vars: vec![b"A=\x1b]0;pwned\x07".to_vec(), b"B=\xff".to_vec()],
            truncated: true,
        };
        let t = env_text(&env);
        assert!(!t.contains('\x1b') && !t.contains('\x07'));
        assert!(t.starts_with("A=\\x1b]0;pwned\\x07\nB=\\xff\n# cut after"));
        let f = OpenFile {
            fd: 3,
            file: Va(0xffff_8880_0000_1000),
            f_mode: 3,
            flags: 0o2,
            pos: 7,
            inode: Some(InodeInfo {
                ino: 12,
                mode: 0o100_600,
                size: 99,
                dev: (8 << 20) | 1,
                magic: 0,
            }),
            name: b"/tmp/\x1b[2Jx".to_vec(),
        };
        let t = lsof_text(std::slice::from_ref(&f));
        assert!(t.lines().nth(1).unwrap().ends_with("/tmp/\\x1b[2Jx"), "{t}");
        assert!(t.contains(" 8,1 ") && t.contains(" rw "), "{t}");
        let j = lsof_json(9, b"x", &[f]);
        assert_eq!(j["files"][0]["name"], "/tmp/\\x1b[2Jx");
        assert_eq!(j["files"][0]["inode"]["dev"], "8:1");
        assert_eq!(j["files"][0]["inode"]["type"], "-");
        assert_eq!(env_json(9, b"x", &env)["vars"][1], "B=\\xff");
    }
}
