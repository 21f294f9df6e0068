//! `dump-module` on a real guest (a step of [`super::evidence::evidence`]): a listed
//! module (the lab's `lab_hello`), one hidden from the modules list that keeps its
//! kobject and a kernel thread (`vmi_kthread`) and one that also deletes its kobject
//! (`vmi_ghostmod`, which only the module tree still holds), each dumped by name and by
//! the address of one of its functions, live and from an ELF dump; the summary must
//! name the views holding each (the list, the kset, the module tree).
//!
//! The oracles: the guest's own `/sys/module/NAME/sections` (every section's name and
//! address must be the file's), its `/proc/kallsyms` (the listed module's symbols, names
//! and addresses, exactly the file's; the hidden one is not in /proc/kallsyms any more),
//! and the module file loaded (the `.ko` built on the host): each of its function and
//! object symbols in a section the guest keeps must be in the file at the guest's
//! address of that section plus the symbol's offset, each function's bytes must be the
//! `.ko`'s except where the loader relocates or patches (a relocation's bytes and the
//! opcode before it), and `objdump -d` must disassemble each function under its name at
//! that address.

use std::collections::{BTreeMap, BTreeSet};

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind, SymbolSection};

use super::*;

/// A module of the guest and what the guest says of it.
pub(crate) struct ModTruth {
    pub(crate) name: &'static str,
    /// The module file loaded (host path).
    pub(crate) ko: PathBuf,
    /// What it hides from.
    pub(crate) hiding: Hiding,
    /// `/sys/module/NAME/sections`: name → address.
    pub(crate) sections: BTreeMap<String, u64>,
    /// Its `/proc/kallsyms` lines (name, address); empty for a hidden module.
    pub(crate) kallsyms: BTreeSet<(String, u64)>,
}

/// What a test module hides from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hiding {
    /// Nothing.
    Nothing,
    /// The modules list (it keeps its kobject).
    List,
    /// The modules list and /sys/module (on request, after its sections were read).
    ListAndKset,
}

impl Hiding {
    /// The views `dump-module` must say hold the module.
    fn views(self) -> Value {
        match self {
            Hiding::Nothing => serde_json::json!(["list", "kset", "tree"]),
            Hiding::List => serde_json::json!(["kset", "tree"]),
            Hiding::ListAndKset => serde_json::json!(["tree"]),
        }
    }
}

/// The modules the evidence guest loads at boot.
pub(crate) fn modules(lab: &Lab, kernel: &str) -> Vec<(&'static str, PathBuf, Hiding)> {
    let hello = lab
        .build_module(
            kernel,
            &vmi_lab::build::ModuleSource::single(
                "lab_hello",
                include_str!("../../../tests/lab/testmods/lab_hello.c"),
            ),
        )
        .unwrap_or_else(|e| panic!("building lab_hello for {kernel}: {e}"));
    vec![
        ("lab_hello", hello, Hiding::Nothing),
        (
            "vmi_kthread",
            common::attack_module(lab, kernel, "vmi_kthread"),
            Hiding::List,
        ),
        (
            "vmi_ghostmod",
            common::attack_module(lab, kernel, "vmi_ghostmod"),
            Hiding::ListAndKset,
        ),
    ]
}

/// What the guest says of module `name`.
pub(crate) fn truth(
    guest: &mut Guest,
    (name, ko, hiding): (&'static str, PathBuf, Hiding),
) -> Result<ModTruth, String> {
    let out = guest
        .sh(&format!(
            "echo 0 > /proc/sys/kernel/kptr_restrict; cd /sys/module/{name}/sections && \
             for f in .* *; do [ -f \"$f\" ] && echo \"$f $(cat \"$f\")\"; done; \
             grep '\\[{name}\\]' /proc/kallsyms | sed 's/^/K /'"
        ))
        .map_err(|e| format!("{name}: the guest's view: {e}"))?;
    let mut sections = BTreeMap::new();
    let mut kallsyms = BTreeSet::new();
    for l in &out.lines {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["K", addr, _, sym, ..] => {
                if let Ok(a) = u64::from_str_radix(addr, 16) {
                    kallsyms.insert((sym.to_string(), a));
                }
            }
            [sec, addr] => {
                if let Ok(a) = u64::from_str_radix(addr.trim_start_matches("0x"), 16) {
                    sections.insert(sec.to_string(), a);
                }
            }
            _ => {}
        }
    }
    if sections.is_empty() || (hiding == Hiding::List) != kallsyms.is_empty() {
        return Err(format!(
            "{name}: the guest shows sections {sections:?} and {} kallsyms lines: {:?}",
            kallsyms.len(),
            out.lines
        ));
    }
    if hiding == Hiding::ListAndKset {
        // hidden now, from lsmod, /proc/kallsyms and /sys/module
        kallsyms.clear();
        let out = guest
            .sh(&format!(
                "echo 1 > /sys/module/{name}/parameters/hide; i=0; \
                 while [ -e /sys/module/{name} ] && [ $i -lt 30 ]; do sleep 1; i=$((i+1)); done; \
                 [ -e /sys/module/{name} ] && echo still; grep -c '^{name} ' /proc/modules"
            ))
            .map_err(|e| format!("{name}: hiding: {e}"))?;
        if out.lines.iter().any(|l| l.trim() != "0") {
            return Err(format!("{name} did not hide: {:?}", out.lines));
        }
    }
    Ok(ModTruth {
        name,
        ko,
        hiding,
        sections,
        kallsyms,
    })
}

/// `check --check hidden-module` from `source` reports each hidden module once: the one
/// off the list by its kobject, the one also out of /sys/module by the module tree.
pub(crate) fn hidden_modules(
    label: &str,
    d: &Detector,
    source: &[&str],
    truths: &[ModTruth],
) -> Vec<String> {
    let mut wants = Vec::new();
    for t in truths.iter().filter(|t| t.hiding != Hiding::Nothing) {
        let name = t.name;
        let tree_only = t.hiding == Hiding::ListAndKset;
        wants.push(want(name, "hidden-module", move |e| {
            e["module"] == name && (e["views"] == "tree") == tree_only
        }));
    }
    let run = d.run(source, &["--json", "check", "--check", "hidden-module"]);
    expect_exactly(&format!("{label} hidden-module"), &run, &wants)
}

/// `dump-module` of each module, by name and by address, from `source`.
pub(crate) fn dump_modules(
    label: &str,
    d: &Detector,
    source: &[&str],
    truths: &[ModTruth],
    dir: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    for t in truths {
        let label = format!("{label} dump-module {}", t.name);
        let out = dir.join(format!("{}.elf", t.name));
        let run = d.run(
            source,
            &["--json", "dump-module", t.name, "-o", out.to_str().unwrap()],
        );
        eprintln!("{label}: {} {}", run.stdout.trim(), run.stderr.trim());
        if run.code != 0 {
            problems.push(format!("{label}: exit {}: {}", run.code, run.stderr));
            continue;
        }
        let v = run.json();
        // every view holds it but the list for the hidden one: the kset (its kobject)
        // and the module tree
        let views = t.hiding.views();
        if v["module"] != t.name || v["views"] != views {
            problems.push(format!("{label}: summary {v}, want views {views}"));
        }
        let bytes = std::fs::read(&out).expect("the dumped file");
        let functions = match compare(&label, t, &bytes, &out) {
            Ok(f) => f,
            Err(p) => {
                problems.extend(p);
                continue;
            }
        };
        // by the address of one of its functions: the same module
        let Some(addr) = functions.first() else {
            problems.push(format!("{label}: no function of the .ko checked"));
            continue;
        };
        let by_addr = dir.join(format!("{}-addr.elf", t.name));
        let run = d.run(
            source,
            &[
                "--json",
                "dump-module",
                &format!("{addr:#x}"),
                "-o",
                by_addr.to_str().unwrap(),
            ],
        );
        if run.code != 0 || run.json()["module"] != t.name || run.json()["views"] != views {
            problems.push(format!(
                "{label}: by address {addr:#x}: exit {}: {} {}",
                run.code, run.stdout, run.stderr
            ));
        }
    }
    problems
}

/// The file against the guest and the `.ko`; the addresses of the functions checked.
fn compare(label: &str, t: &ModTruth, bytes: &[u8], path: &Path) -> Result<Vec<u64>, Vec<String>> {
    let mut problems = Vec::new();
    let file =
        object::File::parse(bytes).map_err(|e| vec![format!("{label}: not an ELF file: {e}")])?;
    // sections: the guest's exactly (fillers `.mod_*` aside)
    let got: BTreeMap<String, u64> = file
        .sections()
        .filter(|s| s.address() != 0)
        .filter_map(|s| Some((s.name().ok()?.to_string(), s.address())))
        .filter(|(n, _)| !n.starts_with(".mod_"))
        .collect();
    if got != t.sections {
        problems.push(format!(
            "{label}: sections {got:x?}, the guest's /sys/module/{}/sections {:x?}",
            t.name, t.sections
        ));
    }
    let symbols: BTreeSet<(String, u64)> = file
        .symbols()
        .filter_map(|s| Some((s.name().ok()?.to_string(), s.address())))
        .collect();
    if t.hiding == Hiding::Nothing && symbols != t.kallsyms {
        problems.push(format!(
            "{label}: symbols differ from /proc/kallsyms: only in the file {:x?}, only in the guest {:x?}",
            symbols.difference(&t.kallsyms).collect::<Vec<_>>(),
            t.kallsyms.difference(&symbols).collect::<Vec<_>>()
        ));
    }
    // the .ko: its symbols at the guest's section address + offset, its functions' bytes
    let ko_bytes = std::fs::read(&t.ko).expect("the .ko");
    let ko = object::File::parse(&ko_bytes[..]).expect("the .ko parses");
    let mut functions = Vec::new();
    let mut want_asm = Vec::new();
    let mut compared = 0usize;
    for sym in ko.symbols() {
        let (Ok(name), SymbolSection::Section(si)) = (sym.name(), sym.section()) else {
            continue;
        };
        if name.is_empty() || !matches!(sym.kind(), SymbolKind::Text | SymbolKind::Data) {
            continue;
        }
        let sec = ko.section_by_index(si).expect("the symbol's section");
        let sec_name = sec.name().unwrap_or("");
        let Some(base) = t.sections.get(sec_name) else {
            continue;
        };
        if sec_name.starts_with(".init") {
            continue;
        }
        let at = base + sym.address();
        if !symbols.contains(&(name.to_string(), at)) {
            problems.push(format!(
                "{label}: the .ko's {name} ({sec_name}+{:#x}) is not in the file at {at:#x}",
                sym.address()
            ));
            continue;
        }
        if sym.kind() != SymbolKind::Text {
            continue;
        }
        functions.push(at);
        // objdump labels the address with one of the names it has (an alias such as
        // cleanup_module for the exit function may win)
        let names: Vec<String> = symbols
            .iter()
            .filter(|(_, a)| *a == at)
            .map(|(n, _)| format!("{at:016x} <{n}>:"))
            .collect();
        want_asm.push(names);
    }
    // the bytes of each section the guest keeps and does not write (text, read-only
    // data, notes), but where the loader relocates or patches: a relocation's bytes and
    // the opcode before it, and the tables it sorts
    for sec in ko.sections() {
        let name = sec.name().unwrap_or("");
        let Some(&base) = t.sections.get(name) else {
            continue;
        };
        let writable = matches!(sec.flags(), object::SectionFlags::Elf { sh_flags } if sh_flags & u64::from(object::elf::SHF_WRITE) != 0);
        let Ok(want) = sec.data() else { continue };
        // outside the module's memory (the loader's full symbol table, freed with the
        // init memory): its address was compared above
        let freed = file
            .section_by_name(name)
            .is_none_or(|s| s.kind() == object::SectionKind::UninitializedData);
        // tables the loader sorts in place (their entries move): ORC's two arrays
        // (unwind_module_init), the exception table, jump labels and static call sites
        let sorted = matches!(
            name,
            ".orc_unwind" | ".orc_unwind_ip" | "__ex_table" | "__jump_table" | ".static_call_sites"
        );
        if name.starts_with(".init") || writable || want.is_empty() || freed || sorted {
            continue;
        }
        let mut masked = vec![false; want.len()];
        for (r_off, r) in sec.relocations() {
            let (start, len) = (r_off as usize, usize::from(r.size() / 8).max(4));
            for m in masked
                .iter_mut()
                .take(start + len)
                .skip(start.saturating_sub(1))
            {
                *m = true;
            }
        }
        let got = file.sections().find_map(|s| {
            let d = s.data().ok()?;
            let rel = base.checked_sub(s.address())? as usize;
            d.get(rel..rel + want.len())
        });
        let Some(got) = got else {
            problems.push(format!(
                "{label}: {name}'s {} bytes are not in the file",
                want.len()
            ));
            continue;
        };
        let differ: Vec<usize> = (0..want.len())
            .filter(|&i| !masked[i] && got[i] != want[i])
            .collect();
        if !differ.is_empty() {
            problems.push(format!(
                "{label}: {name} differs from the .ko's at offsets {differ:?}: file {got:02x?}, .ko {want:02x?}"
            ));
        }
        compared += masked.iter().filter(|m| !**m).count();
    }
    if compared < 32 {
        problems.push(format!(
            "{label}: only {compared} bytes compared with the .ko"
        ));
    }
    let out = vmi_lab::tools::OBJDUMP
        .command()
        .expect("objdump (scripts/setup.sh installs binutils)")
        .arg("-d")
        .arg(path)
        .output()
        .expect("objdump");
    let asm = String::from_utf8_lossy(&out.stdout);
    for w in &want_asm {
        if !w.iter().any(|l| asm.contains(l.as_str())) {
            problems.push(format!("{label}: objdump -d lacks all of {w:?}"));
        }
    }
    eprintln!(
        "{label}: {} sections, {} symbols, {} functions, {compared} bytes as the .ko's",
        got.len(),
        symbols.len(),
        functions.len()
    );
    if problems.is_empty() {
        Ok(functions)
    } else {
        Err(problems)
    }
}
