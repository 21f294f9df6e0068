//! The default profile made from Debian's -dbg packages equals what pahole (Debian's
//! dwarves) says about the same vmlinux: every struct size and field offset (bitfields
//! by bit position), and every symbol equals the package's System.map.

use std::collections::BTreeMap;
use std::process::Command;

use profile_gen::build::{self, Options};
use vmi_core::profile::needs;

#[derive(Debug)]
struct PaholeStruct {
    size: u64,
    /// name → bit position from the start of the struct
    fields: BTreeMap<String, u64>,
}

struct Frame {
    fields: BTreeMap<String, u64>,
}

fn member_name(decl: &str) -> Option<String> {
    let decl = match decl.find("__attribute__") {
        Some(i) => decl[..i].trim(),
        None => decl,
    };
    // function pointers: "void (*name)(args)"
    if let Some(i) = decl.find("(*") {
        let rest = &decl[i + 2..];
        let end = rest.find(')')?;
        return Some(rest[..end].trim().to_string());
    }
    if decl.contains(':') {
        // an unnamed bitfield ("unsigned int :0") names no member
        let before = decl.split(':').next()?.trim();
        let last = before.split_whitespace().last()?;
        if [
            "int", "char", "long", "short", "_Bool", "unsigned", "signed", "u8", "u16", "u32",
            "u64",
        ]
        .contains(&last)
        {
            return None;
        }
    }
    let decl = decl.split(':').next()?.trim(); // drop ":bits"
    let decl = decl.split('[').next()?.trim(); // drop array dimensions
    let name = decl
        .rsplit(|c: char| c.is_whitespace() || c == '*')
        .next()?;
    Some(name.to_string())
}

/// "/* 2344: 2  4 */" → bit position; "/* 24 4 */" → byte offset * 8
fn comment_bits(comment: &str) -> Option<u64> {
    let inner = comment
        .trim()
        .strip_prefix("/*")?
        .strip_suffix("*/")?
        .trim();
    let first = inner.split_whitespace().next()?;
    if let Some(byte) = first.strip_suffix(':') {
        let bit: u64 = inner.split_whitespace().nth(1)?.parse().ok()?;
        return Some(byte.parse::<u64>().ok()? * 8 + bit);
    }
    if let Some((byte, bit)) = first.split_once(':') {
        return Some(byte.parse::<u64>().ok()? * 8 + bit.parse::<u64>().ok()?);
    }
    Some(first.parse::<u64>().ok()? * 8)
}

fn parse_pahole(text: &str) -> BTreeMap<String, PaholeStruct> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut stack: Vec<Frame> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if stack.is_empty() {
            if let Some(rest) = t
                .strip_prefix("struct ")
                .or_else(|| t.strip_prefix("union "))
            {
                if let Some(name) = rest.strip_suffix(" {") {
                    current = Some(name.to_string());
                    stack.push(Frame {
                        fields: BTreeMap::new(),
                    });
                }
            }
            continue;
        }
        if let Some(size) = t.strip_prefix("/* size: ") {
            if stack.len() == 1 {
                let n: u64 = size.split(',').next().unwrap().trim().parse().unwrap();
                let frame = stack.pop().unwrap();
                out.insert(
                    current.take().unwrap(),
                    PaholeStruct {
                        size: n,
                        fields: frame.fields,
                    },
                );
                stack.clear();
            }
            continue;
        }
        if t.starts_with("/*") || t.is_empty() {
            continue;
        }
        let (code, comment) = match t.find("/*") {
            Some(i) => (t[..i].trim(), &t[i..]),
            None => (t, ""),
        };
        if code.ends_with('{') {
            stack.push(Frame {
                fields: BTreeMap::new(),
            });
            continue;
        }
        if code.starts_with('}') {
            let frame = stack.pop().unwrap();
            let rest = code
                .trim_start_matches('}')
                .trim()
                .trim_end_matches(';')
                .trim();
            let rest = match rest.find("__attribute__") {
                Some(i) => rest[..i].trim(),
                None => rest,
            };
            let parent = stack.last_mut().expect("closing brace at top level");
            if rest.is_empty() {
                // anonymous: its members belong to the parent
                parent.fields.extend(frame.fields);
            } else if let (Some(name), Some(bits)) = (member_name(rest), comment_bits(comment)) {
                parent.fields.insert(name, bits);
            }
            continue;
        }
        if code.ends_with(';') {
            if let (Some(name), Some(bits)) = (
                member_name(code.trim_end_matches(';')),
                comment_bits(comment),
            ) {
                stack.last_mut().unwrap().fields.insert(name, bits);
            }
        }
    }
    out
}

fn check_kernel(name: &str) {
    let lab = vmi_lab::Lab::open_default().unwrap();
    let dbg = lab.store().debug(name).expect("fetching the -dbg part");
    let built = build::from_dwarf(&dbg.vmlinux, Some(&dbg.system_map), &Options::default())
        .expect("building the profile");
    let p = built.profile;
    assert!(p.missing.is_empty(), "{}: missing {:?}", dbg.abi, p.missing);
    assert_eq!(p.kernel.release, dbg.abi);
    assert!(p
        .kernel
        .banner
        .starts_with(&format!("Linux version {} ", dbg.abi)));

    // symbols equal the System.map
    let map = std::fs::read_to_string(&dbg.system_map).unwrap();
    let mut first = BTreeMap::new();
    for line in map.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        first
            .entry(w[2].to_string())
            .or_insert((u64::from_str_radix(w[0], 16).unwrap(), w[1].to_string()));
    }
    for (name, s) in &p.symbols {
        assert_eq!(
            first.get(name),
            Some(&(s.address, s.kind.clone())),
            "{}: symbol {name}",
            dbg.abi
        );
    }

    // types equal pahole's view
    let names: Vec<&str> = needs::TYPES.iter().map(|t| t.name).collect();
    let out = Command::new("pahole")
        .arg("-C")
        .arg(names.join(","))
        .arg(&dbg.vmlinux)
        .output()
        .expect("running pahole (Debian package dwarves)");
    assert!(
        out.status.success(),
        "pahole: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pahole = parse_pahole(&String::from_utf8_lossy(&out.stdout));
    let mut compared = 0;
    for t in needs::TYPES {
        let ours = &p.types[t.name];
        let theirs = pahole
            .get(t.name)
            .unwrap_or_else(|| panic!("{}: pahole printed no {}", dbg.abi, t.name));
        assert_eq!(ours.size, theirs.size, "{}: size of {}", dbg.abi, t.name);
        for (field, bits) in &theirs.fields {
            let f = ours.fields.get(field).unwrap_or_else(|| {
                panic!("{}: {}.{field} missing from the profile", dbg.abi, t.name)
            });
            let our_bits = f.offset * 8 + u64::from(f.bit_offset.unwrap_or(0));
            assert_eq!(our_bits, *bits, "{}: {}.{field} ({f:?})", dbg.abi, t.name);
            compared += 1;
        }
        assert_eq!(
            ours.fields.len(),
            theirs.fields.len(),
            "{}: {} has fields pahole does not show: {:?}",
            dbg.abi,
            t.name,
            ours.fields
                .keys()
                .filter(|k| !theirs.fields.contains_key(*k))
                .collect::<Vec<_>>()
        );
    }
    assert!(compared > 300, "only {compared} fields compared");
    eprintln!(
        "{}: {compared} fields and {} symbols agree",
        dbg.abi,
        p.symbols.len()
    );
}

#[test]
fn debian_6_1_equals_pahole_and_system_map() {
    check_kernel("6.1.0-56-amd64");
}

#[test]
fn debian_7_2_equals_pahole_and_system_map() {
    check_kernel("newest:7.2");
}
