//! The evidence commands' output: what an administrator asks for once an alert fired,
//! read from outside instead of by logging into the suspect guest. `env PID` (a
//! process's environment, as `/proc/PID/environ`), `lsof PID` (its open files, as
//! `/proc/PID/fd` and `/proc/PID/fdinfo`) and `cat PATH` (a file from the page cache,
//! or with `--list` a directory's cached entries), each as text or JSON. Guest strings
//! are escaped (`\xNN`) before they reach either; a file's text keeps its newlines and
//! tabs, its bytes go to a file (`-o`) or JSON (base64) unchanged. `dump-module`'s summary of
//! the file it wrote ([`crate::moddump`]).

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use serde_json::{json, Value};
use vmi_core::kernel::openfiles::OpenFile;
use vmi_core::kernel::pagecache::{CachedFile, DirEntry};
use vmi_core::kernel::userspace::Environment;
use vmi_core::kernel::Module;

use crate::finding::guest_str;
use crate::moddump::{ModuleFile, View};

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

/// A file's bytes for a terminal: printable ASCII, newlines and tabs as they are,
/// every other byte (and `\\`) escaped as `\xNN`.
pub fn escape_text(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            b'\n' | b'\t' | 0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s
}

/// `cat` as text: the resident bytes escaped ([`escape_text`]), each range that is
/// not resident as a line `[bytes A..B not in the page cache]`.
pub fn cat_text(f: &CachedFile) -> String {
    let mut s = String::new();
    let mut at = 0u64;
    for &(from, to) in &f.missing {
        s.push_str(&escape_text(&f.data[at as usize..from as usize]));
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        let _ = writeln!(s, "[bytes {from}..{to} not in the page cache]");
        at = to;
    }
    s.push_str(&escape_text(&f.data[at as usize..]));
    s
}

/// `cat` as JSON: the path (escaped), size, what was read (base64; zeros where not
/// resident), the ranges not resident and whether the file was cut.
pub fn cat_json(path: &[u8], f: &CachedFile) -> Value {
    json!({
        "path": guest_str(path),
        "size": f.size,
        "read": f.data.len(),
        "truncated": f.truncated,
        "missing": f.missing.iter().map(|(a, b)| json!({"start": a, "end": b})).collect::<Vec<_>>(),
        "data_base64": base64::engine::general_purpose::STANDARD.encode(&f.data),
    })
}

/// `cat --list` as JSON: one object per cached entry.
pub fn list_json(path: &[u8], entries: &[DirEntry]) -> Value {
    json!({
        "path": guest_str(path),
        "entries": entries.iter().map(|e| {
            let inode = e.inode.map(|i| json!({
                "ino": i.ino,
                "type": i.type_char().to_string(),
                "mode": format!("{:o}", i.mode),
                "size": i.size,
            }));
            json!({
                "name": guest_str(&e.name),
                "negative": e.inode.is_none(),
                "inode": inode,
                "cached_pages": e.cached_pages,
            })
        }).collect::<Vec<_>>(),
    })
}

/// `cat --list` as text: type and permission bits, inode, size, cached pages and
/// name, in the manner of `ls -il`; a negative dentry (a name the guest looked up
/// and did not find) as `(negative)`.
pub fn list_text(entries: &[DirEntry]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<10} {:>10} {:>12} {:>7} NAME",
        "MODE", "INODE", "SIZE", "CACHED"
    );
    for e in entries {
        let name = guest_str(&e.name);
        match e.inode {
            Some(i) => {
                let _ = writeln!(
                    s,
                    "{}{:<9o} {:>10} {:>12} {:>7} {name}",
                    i.type_char(),
                    i.mode & 0o7777,
                    i.ino,
                    i.size,
                    e.cached_pages
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "{:<10} {:>10} {:>12} {:>7} {name} (negative)",
                    "-", "-", "-", "-"
                );
            }
        }
    }
    s
}

/// `dump-module`'s summary as JSON: the module, where it was found, what the file holds
/// (sections with their addresses and sizes, symbols, bytes) and the ranges not mapped.
pub fn dump_module_json(m: &Module, views: &[View], output: &Path, f: &ModuleFile) -> Value {
    json!({
        "module": guest_str(&m.name),
        "struct_module": format!("{:#x}", m.addr.0),
        "views": views.iter().map(|v| v.key()).collect::<Vec<_>>(),
        "output": output.display().to_string(),
        "bytes": f.memory,
        "symbols": f.symbols,
        "sections": f.sections.iter().map(|s| json!({
            "name": guest_str(&s.name),
            "addr": format!("{:#x}", s.addr),
            "size": s.size,
            "in_memory": s.region.is_some(),
        })).collect::<Vec<_>>(),
        "not_mapped": f.missing.iter().map(|(a, b)| json!({
            "start": format!("{a:#x}"),
            "end": format!("{b:#x}"),
        })).collect::<Vec<_>>(),
    })
}

/// `dump-module`'s summary as text: one line for the file, one per section.
pub fn dump_module_text(m: &Module, views: &[View], output: &Path, f: &ModuleFile) -> String {
    let not_mapped: u64 = f.missing.iter().map(|(a, b)| b - a).sum();
    let mut s = format!(
        "{}: module {} (struct module {:#x}, views: {}): {} bytes, {} sections, {} symbols, {not_mapped} bytes not mapped (zeros)\n",
        output.display(),
        guest_str(&m.name),
        m.addr.0,
        views.iter().map(|v| v.key()).collect::<Vec<_>>().join(","),
        f.memory,
        f.sections.len(),
        f.symbols,
    );
    for sec in &f.sections {
        let _ = writeln!(
            s,
            "  {:#018x} {:>8} {}{}",
            sec.addr,
            sec.size,
            guest_str(&sec.name),
            if sec.region.is_none() {
                " (not in the module's memory)"
            } else {
                ""
            }
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
    fn dump_module_s_summary_escapes_guest_names() {
        let m = Module {
            addr: Va(0xffff_ffff_c000_0000),
            name: b"rk\x1b[2J".to_vec(),
            state: 0,
            core_base: Va(0xffff_ffff_c000_1000),
            core_size: 0x1000,
            data: Vec::new(),
        };
        let f = ModuleFile {
            bytes: Vec::new(),
            sections: vec![crate::moddump::OutSection {
                name: b".text\x07".to_vec(),
                addr: 0xffff_ffff_c000_1000,
                size: 0x1000,
                region: Some(0),
            }],
            symbols: 3,
            memory: 0x2000,
            missing: vec![(0xffff_ffff_c000_2000, 0xffff_ffff_c000_3000)],
        };
        let out = Path::new("/tmp/rk.elf");
        let t = dump_module_text(&m, &[View::Kset, View::Tree], out, &f);
        assert!(!t.contains('\x1b') && !t.contains('\x07'), "{t}");
        assert!(t.contains("rk\\x1b[2J") && t.contains(".text\\x07"), "{t}");
        assert!(t.contains("4096 bytes not mapped"), "{t}");
        let j = dump_module_json(&m, &[View::Kset, View::Tree], out, &f);
        assert_eq!(j["module"], "rk\\x1b[2J");
        assert_eq!(j["views"], serde_json::json!(["kset", "tree"]));
        assert!(t.contains("views: kset,tree"), "{t}");
        assert_eq!(j["sections"][0]["name"], ".text\\x07");
        assert_eq!(j["not_mapped"][0]["start"], "0xffffffffc0002000");
    }

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

    #[test]
    fn a_files_text_keeps_lines_and_says_what_is_not_resident() {
        let mut data = b"* * * * * root /tmp/.x\n\x1b[2J\\\n".to_vec();
        let first = data.len() as u64;
        data.extend_from_slice(&[0; 8]);
        data.extend_from_slice(b"tail\n");
        let f = CachedFile {
            size: data.len() as u64,
            data,
            missing: vec![(first, first + 8)],
            truncated: false,
        };
        assert_eq!(
            cat_text(&f),
            format!(
                "* * * * * root /tmp/.x\n\\x1b[2J\\\\\n[bytes {first}..{} not in the page cache]\ntail\n",
                first + 8
            )
        );
        let j = cat_json(b"/etc/cron\x07", &f);
        assert_eq!(j["path"], "/etc/cron\\x07");
        assert_eq!(j["missing"][0]["start"], first);
        let back = base64::engine::general_purpose::STANDARD
            .decode(j["data_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(back, f.data);
    }
}
