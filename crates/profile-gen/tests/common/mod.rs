//! Helpers shared by profile-gen's integration tests.
#![allow(dead_code)] // each test binary uses a part

use std::collections::BTreeSet;

use vmi_core::profile::TypeDef;
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
