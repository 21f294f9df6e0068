//! Helpers shared by profile-gen's integration tests.
#![allow(dead_code)] // each test binary uses a part

use std::collections::BTreeSet;

use vmi_core::profile::{needs, Profile, TypeDef};
use vmi_lab::GroundTruth;

/// Kernel image addresses start here on x86-64; smaller ones are per-CPU offsets.
pub const KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;

/// BTF (as pahole writes it) stores a multi-dimensional array as one dimension holding
/// the product of the counts: `T[a][b]` in DWARF is `T[a*b]` in BTF. The DWARF compact
/// type written the BTF way.
pub fn flatten_dims(ty: &str) -> String {
    if ty.starts_with("ptr (") || !ty.ends_with(']') {
        return ty.to_string();
    }
    let Some(first) = ty.find('[') else {
        return ty.to_string();
    };
    let dims: Option<Vec<u64>> = ty[first..]
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split("][")
        .map(|d| d.parse().ok())
        .collect();
    match dims {
        Some(d) if d.len() > 1 => format!("{}[{}]", &ty[..first], d.iter().product::<u64>()),
        _ => ty.to_string(),
    }
}

/// Differences between a type laid out from BTF and from DWARF, beyond the flattened
/// array dimensions (which are counted in `flattened`).
pub fn type_differences(
    name: &str,
    dwarf: &TypeDef,
    btf: &TypeDef,
    flattened: &mut usize,
) -> Vec<String> {
    let mut out = Vec::new();
    if dwarf.size != btf.size || dwarf.kind != btf.kind {
        out.push(format!(
            "{name}: {:?} of {} bytes in DWARF, {:?} of {} in BTF",
            dwarf.kind, dwarf.size, btf.kind, btf.size
        ));
    }
    for (field, d) in &dwarf.fields {
        match btf.fields.get(field) {
            None => out.push(format!("{name}.{field}: only in DWARF")),
            Some(b) if b == d => {}
            Some(b)
                if b.offset == d.offset
                    && b.bit_offset == d.bit_offset
                    && b.bit_size == d.bit_size
                    && b.ty == flatten_dims(&d.ty) =>
            {
                *flattened += 1
            }
            Some(b) => out.push(format!("{name}.{field}: DWARF {d:?}, BTF {b:?}")),
        }
    }
    for field in btf.fields.keys() {
        if !dwarf.fields.contains_key(field) {
            out.push(format!("{name}.{field}: only in BTF"));
        }
    }
    out
}

/// The kernel's own /proc/kallsyms: the first address and type of each name, module
/// symbols left out.
pub fn parse_kallsyms(text: &str) -> std::collections::BTreeMap<String, (u64, String)> {
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() != 3 {
            continue; // "[module]" symbols
        }
        let addr = u64::from_str_radix(w[0], 16).expect("a hex address");
        out.entry(w[2].to_string())
            .or_insert((addr, w[1].to_string()));
    }
    out
}

/// (pid, ppid, comm) of every process (thread-group leader), comm as `task_struct.comm`
/// holds it: at most 15 bytes, and without the workqueue suffix `/proc` adds to kworkers.
pub fn processes(truth: &GroundTruth) -> BTreeSet<(u32, u32, String)> {
    truth
        .processes
        .iter()
        .filter(|p| p.pid == p.tgid)
        .map(|p| {
            let mut comm = p.comm.clone();
            if comm.starts_with("kworker/") {
                if let Some(i) = comm.find('-') {
                    comm.truncate(i);
                }
            }
            let mut end = comm.len().min(15);
            while !comm.is_char_boundary(end) {
                end -= 1;
            }
            comm.truncate(end);
            (p.pid, p.ppid, comm)
        })
        .collect()
}

/// The processes of `vol -r csv linux.pslist` output.
pub fn parse_pslist_csv(text: &str) -> BTreeSet<(u32, u32, String)> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with("TreeDepth,"));
    let header: Vec<&str> = lines.next().expect("a CSV header").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    let (pid, ppid, comm) = (col("PID"), col("PPID"), col("COMM"));
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[pid].parse().expect("a pid"),
                f[ppid].parse().expect("a ppid"),
                f[comm].trim_matches('"').to_string(),
            )
        })
        .collect()
}

/// A struct or union as pahole prints it.
#[derive(Debug)]
pub struct PaholeStruct {
    /// Size in bytes.
    pub size: u64,
    /// name → bit position from the start of the struct
    pub fields: std::collections::BTreeMap<String, u64>,
}

struct Frame {
    fields: std::collections::BTreeMap<String, u64>,
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

/// `s` without its `__attribute__((...))` parts (balanced parentheses).
fn strip_attributes(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("__attribute__") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "__attribute__".len()..];
        let mut depth = 0usize;
        let mut end = after.len();
        for (k, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Parse `pahole -C ...` output: members of anonymous aggregates belong to the parent.
pub fn parse_pahole(text: &str) -> std::collections::BTreeMap<String, PaholeStruct> {
    let mut out = std::collections::BTreeMap::new();
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
                        fields: std::collections::BTreeMap::new(),
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
                fields: std::collections::BTreeMap::new(),
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
            // `} __attribute__((__aligned__(8))) flow __attribute__((__aligned__(8)));`
            let rest = strip_attributes(rest);
            let rest = rest.trim();
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

/// The needed types of `profile` equal what `pahole <format> -C <needed types> <file>`
/// prints: sizes, and every field's bit position; returns the number of fields compared.
pub fn assert_matches_pahole(
    abi: &str,
    profile: &Profile,
    format: &[&str],
    file: &std::path::Path,
) -> usize {
    // pahole 1.24 given a long -C list prints only some of the types and says the others
    // are "not found" (or prints a declaration of size 0); asked again for those, it
    // prints more: ask until every type is defined or a round brings nothing new
    let needed: Vec<_> = needs::types().into_iter().filter(|t| !t.optional).collect();
    let mut want: Vec<&str> = needed.iter().map(|t| t.name).collect();
    let mut pahole = std::collections::BTreeMap::new();
    for _ in 0..needed.len() {
        // a kernel built with Rust has bindgen's copies of C types in its Rust units
        // (`sched_entity` with `__bindgen_padding_0`): the C definitions are compared
        let out = std::process::Command::new("pahole")
            .args(format)
            .arg("--lang_exclude=rust")
            .arg("-C")
            .arg(want.join(","))
            .arg(file)
            .output()
            .expect("running pahole (Debian package dwarves)");
        assert!(
            out.status.success(),
            "pahole: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // a unit that only declares the type prints it with size 0: a definition wins
        for (name, t) in parse_pahole(&String::from_utf8_lossy(&out.stdout)) {
            if t.size > 0 || !pahole.contains_key(&name) {
                pahole.insert(name, t);
            }
        }
        let before = want.len();
        want.retain(|n| pahole.get(*n).is_none_or(|t: &PaholeStruct| t.size == 0));
        if want.is_empty() || want.len() == before {
            break;
        }
    }
    let mut compared = 0;
    for t in &needed {
        let ours = &profile.types[t.name];
        let theirs = pahole
            .get(t.name)
            .unwrap_or_else(|| panic!("{abi}: pahole printed no {}", t.name));
        assert_eq!(ours.size, theirs.size, "{abi}: size of {}", t.name);
        for (field, bits) in &theirs.fields {
            let f = ours
                .fields
                .get(field)
                .unwrap_or_else(|| panic!("{abi}: {}.{field} missing from the profile", t.name));
            let our_bits = f.offset * 8 + u64::from(f.bit_offset.unwrap_or(0));
            assert_eq!(our_bits, *bits, "{abi}: {}.{field} ({f:?})", t.name);
            compared += 1;
        }
        assert_eq!(
            ours.fields.len(),
            theirs.fields.len(),
            "{abi}: {} has fields pahole does not show: {:?}",
            t.name,
            ours.fields
                .keys()
                .filter(|k| !theirs.fields.contains_key(*k))
                .collect::<Vec<_>>()
        );
    }
    compared
}
