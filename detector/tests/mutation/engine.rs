//! Profile mutation (issue 22): every needed field and symbol of a real profile moved,
//! one at a time, and judged against a lab dump of its kernel.
//!
//! - [`mutations`] moves each needed field (the first of its aliases the profile has) by
//!   +8 and -8 bytes and onto the offset of its nearest other needed field of the same
//!   type, and each needed symbol by +8 and -8.
//! - [`Judge::judge`] runs what `detector verify` runs on a dump where every rule passes
//!   with the right profile, and on a busy dump of the same boot (test rootkits,
//!   sockets, BPF programs): discovery with the mutated profile, then the rules. A rule
//!   that fails where it passes with the right profile is the mutant being *caught*.
//!   A mutant no rule catches is run through
//!   every command (`ps`, `lsmod`, `sockets`, `bpf`, `maps`, `check` with every check:
//!   `tests/fuzz/engine.rs`'s [`run_commands`]) on the busy dump and its outputs
//!   compared with the right profile's:
//!   equal (*same*: on this guest nothing the detector reports depends on the value) or
//!   not (*differs*: a wrong profile that `verify` passes and that changes results, which
//!   the test does not accept).
//!
//! Shared by `tests/mutation.rs` (CI) and `examples/mutate_profile.rs` (a table on kept
//! dumps).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use detector::checks::{Check, Settings};
use detector::target::Memory;
use detector::verify::{self, Outcome};
use detector::Target;
use vmi_core::addr::Pa;
use vmi_core::arch::x86_64::Registers;
use vmi_core::kernel::{Hints, Kernel, Limits};
use vmi_core::profile::needs;
use vmi_core::profile::Profile;

use crate::engine::{run_commands, Outputs, POLICY};

/// The dumps each profile is judged on: (kernel, the clean guest's dump, the busy
/// guest's), by the names `tests/fuzz/engine.rs`'s `prepare` gives them.
pub const DUMPS: [(&str, &str, &str); 2] = [
    ("6.1", "6.1-clean", "6.1-rootkits"),
    ("7", "7-sockets-bpf", "7-sockets-bpf"),
];

/// How a value was moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// 8 bytes up.
    Plus8,
    /// 8 bytes down.
    Minus8,
    /// Onto another needed field's offset (its name).
    As(String),
}

impl std::fmt::Display for How {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            How::Plus8 => f.write_str("+8"),
            How::Minus8 => f.write_str("-8"),
            How::As(other) => write!(f, "at {other}"),
        }
    }
}

/// One mutant profile.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// `type.field` or the symbol's name.
    pub name: String,
    /// True for a symbol.
    pub symbol: bool,
    /// How it was moved.
    pub how: How,
    /// True when only [`vmi_core::kernel::layout::UNREAD`] declares it (no reader reads it).
    pub unread: bool,
    /// The profile with that one value moved.
    pub profile: Profile,
}

/// Declared by a reader, not only by the list of unread fields.
fn read_field(ty: &str, alias: &str) -> bool {
    needs::DECLARATIONS
        .iter()
        .filter(|d| d.name != vmi_core::kernel::layout::UNREAD.name)
        .flat_map(|d| d.fields)
        .any(|f| f.ty == ty && f.field.aliases.contains(&alias))
}

fn read_symbol(name: &str) -> bool {
    needs::DECLARATIONS
        .iter()
        .filter(|d| d.name != vmi_core::kernel::layout::UNREAD.name)
        .flat_map(|d| d.symbols)
        .any(|s| s.aliases.contains(&name))
}

/// Every mutant of `p`: each needed field the profile has moved by ±8 and onto its
/// nearest other needed field, each needed symbol it has moved by ±8.
pub fn mutations(p: &Profile) -> Vec<Mutation> {
    let mut out = Vec::new();
    for t in needs::types() {
        // the needed fields this profile has, by the alias it has them under
        let present: Vec<(String, u64)> = t
            .fields
            .iter()
            .filter_map(|f| p.field_any(t.name, f.aliases))
            .map(|(name, f)| (name.to_string(), f.offset))
            .collect();
        for (name, offset) in &present {
            let unread = !read_field(t.name, name);
            let full = format!("{}.{name}", t.name);
            let mut hows = vec![How::Plus8];
            if *offset >= 8 {
                hows.push(How::Minus8);
            }
            // the nearest other needed field at another offset (above first)
            let other = present
                .iter()
                .filter(|(n, o)| n != name && o != offset)
                .min_by_key(|(_, o)| (*o < *offset, o.abs_diff(*offset)));
            if let Some((n, _)) = other {
                hows.push(How::As(format!("{}.{n}", t.name)));
            }
            for how in hows {
                let mut q = p.clone();
                let Some(f) = q.types.get_mut(t.name).and_then(|t| t.fields.get_mut(name)) else {
                    continue;
                };
                f.offset = match &how {
                    How::Plus8 => offset + 8,
                    How::Minus8 => offset - 8,
                    How::As(_) => other.map_or(*offset, |(_, o)| *o),
                };
                out.push(Mutation {
                    name: full.clone(),
                    symbol: false,
                    how,
                    unread,
                    profile: q,
                });
            }
        }
    }
    for s in needs::symbols() {
        let Some(name) = s.aliases.iter().find(|a| p.symbols.contains_key(**a)) else {
            continue;
        };
        for how in [How::Plus8, How::Minus8] {
            let mut q = p.clone();
            if let Some(sym) = q.symbols.get_mut(*name) {
                sym.address = match how {
                    How::Plus8 => sym.address.wrapping_add(8),
                    _ => sym.address.wrapping_sub(8),
                };
            }
            out.push(Mutation {
                name: name.to_string(),
                symbol: true,
                how,
                unread: !read_symbol(name),
                profile: q,
            });
        }
    }
    out
}

/// What became of a mutant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A rule that passes with the right profile failed (or discovery did).
    Caught {
        /// The first such rule.
        rule: String,
        /// Its evidence.
        detail: String,
    },
    /// No rule failed, and every command printed what it prints with the right profile.
    Same,
    /// No rule failed, but a command's output changed.
    Differs {
        /// The command.
        command: &'static str,
        /// The first line that differs, right and mutated.
        detail: String,
    },
}

/// An opened dump: its memory, where its kernel is, its registers.
pub struct Opened {
    mem: Memory,
    banner_pa: Pa,
    hints: Hints,
    registers: Vec<Registers>,
}

impl Opened {
    fn open(dump: &Path, profile: &Path) -> Result<Opened, String> {
        let target = Target::open(
            &detector::SourceSpec::Dump(dump.to_path_buf()),
            &detector::ProfileSpec::File(profile.to_path_buf()),
        )
        .map_err(|e| format!("opening {}: {e}", dump.display()))?;
        let core = vmi_core::memory::ElfCore::open(dump).map_err(|e| e.to_string())?;
        Ok(Opened {
            mem: target.kernel.space().memory().clone(),
            banner_pa: target.kernel.placement().banner_pa,
            hints: Hints {
                registers: target.registers.first().cloned(),
                vmcoreinfo: core.vmcoreinfo().cloned(),
            },
            registers: target.registers.clone(),
        })
    }

    fn kernel(&self, p: Profile) -> Result<Kernel<Memory>, String> {
        Kernel::discover_at(self.mem.clone(), Arc::new(p), self.banner_pa, &self.hints)
            .map_err(|e| e.to_string())
    }
}

/// A profile's dumps and what the right profile gives on them.
pub struct Judge {
    /// The right profile.
    pub profile: Profile,
    verify_dump: Opened,
    busy_dump: Opened,
    settings: Settings,
    wanted: Vec<Check>,
    /// The rules that pass with the right profile on the verify dump.
    pub passing: BTreeSet<&'static str>,
    /// Those that fail there, with their evidence (none on a clean guest).
    pub failing: Vec<String>,
    /// Those that pass on the busy dump (a guest with rootkits fails the rules on what
    /// they hide).
    pub passing_busy: BTreeSet<&'static str>,
    baseline: Outputs,
}

impl Judge {
    /// `verify_dump` must pass every rule with `profile`; `busy_dump` is the guest the
    /// commands run on (the same kernel; may be the same file).
    pub fn open(
        profile: &Path,
        verify_dump: &Path,
        busy_dump: &Path,
        image: Option<&Path>,
    ) -> Result<Judge, String> {
        let right = detector::target::read_profile(profile).map_err(|e| e.to_string())?;
        let v = Opened::open(verify_dump, profile)?;
        let b = Opened::open(busy_dump, profile)?;
        let mut wanted = Check::ALL.to_vec();
        wanted.push(Check::Policy);
        let image = match image {
            Some(p) => {
                wanted.push(Check::KernelText);
                Some(Arc::new(
                    detector::image::KernelImage::open(p, &right)
                        .map_err(|e| format!("the image {}: {e}", p.display()))?,
                ))
            }
            None => None,
        };
        let settings = Settings {
            limits: Limits::default(),
            policy: Some(detector::policy::Policy::parse(POLICY).map_err(|e| e.to_string())?),
            image,
        };
        // the rules that pass with the right profile (and the evidence of those that fail)
        let outcomes = |dump: &Opened| -> Result<(BTreeSet<&'static str>, Vec<String>), String> {
            let rules = verify::verify(&dump.kernel(right.clone())?, &settings.limits);
            Ok((
                rules
                    .iter()
                    .filter(|r| r.outcome == Outcome::Pass)
                    .map(|r| r.rule)
                    .collect(),
                rules
                    .iter()
                    .filter(|r| r.outcome == Outcome::Fail)
                    .map(|r| format!("{}: {}", r.rule, r.detail))
                    .collect(),
            ))
        };
        let (passing, failing) = outcomes(&v)?;
        let (passing_busy, _) = outcomes(&b)?;
        let k = b.kernel(right.clone())?;
        let baseline = run_commands(&k, &b.registers, &settings, &wanted);
        Ok(Judge {
            profile: right,
            verify_dump: v,
            busy_dump: b,
            settings,
            wanted,
            passing,
            failing,
            passing_busy,
            baseline,
        })
    }

    /// The right profile's outputs twice: equal, or the comparison would mean nothing.
    pub fn deterministic(&self) -> Result<(), String> {
        let k = self.busy_dump.kernel(self.profile.clone())?;
        let again = run_commands(&k, &self.busy_dump.registers, &self.settings, &self.wanted);
        match first_difference(&self.baseline, &again) {
            None => Ok(()),
            Some((cmd, d)) => Err(format!(
                "the right profile's {cmd} differs between runs: {d}"
            )),
        }
    }

    /// What the commands read with the right profile (for the report).
    pub fn summary(&self) -> &str {
        &self.baseline.summary
    }

    /// Judge one mutant.
    pub fn judge(&self, m: &Mutation) -> Verdict {
        // the busy guest holds what the clean one lacks (hooks, sockets, BPF programs)
        let mut busy = None;
        for (dump, passing) in [
            (&self.verify_dump, &self.passing),
            (&self.busy_dump, &self.passing_busy),
        ] {
            let k = match dump.kernel(m.profile.clone()) {
                Ok(k) => k,
                Err(detail) => {
                    return Verdict::Caught {
                        rule: "discovery".into(),
                        detail,
                    }
                }
            };
            if let Some(r) = verify::verify(&k, &self.settings.limits)
                .into_iter()
                .find(|r| r.outcome == Outcome::Fail && passing.contains(r.rule))
            {
                return Verdict::Caught {
                    rule: r.rule.into(),
                    detail: r.detail,
                };
            }
            busy = Some(k);
        }
        let Some(k) = busy else {
            return Verdict::Same;
        };
        let o = run_commands(&k, &self.busy_dump.registers, &self.settings, &self.wanted);
        match first_difference(&self.baseline, &o) {
            None => Verdict::Same,
            Some((command, detail)) => Verdict::Differs { command, detail },
        }
    }
}

/// The first output that differs, with its first differing line.
fn first_difference(a: &Outputs, b: &Outputs) -> Option<(&'static str, String)> {
    let n = a.texts.len().max(b.texts.len());
    for i in 0..n {
        let (ca, ta) = a.texts.get(i).map_or(("", ""), |(c, t)| (*c, t.as_str()));
        let (cb, tb) = b.texts.get(i).map_or(("", ""), |(c, t)| (*c, t.as_str()));
        if ca != cb || ta != tb {
            let cmd = if ca.is_empty() { cb } else { ca };
            let cut = |s: &str| s.chars().take(160).collect::<String>();
            let detail = match ta.lines().zip(tb.lines()).find(|(x, y)| x != y) {
                Some((x, y)) => format!("{:?} became {:?}", cut(x), cut(y)),
                None => format!("{} lines became {}", ta.lines().count(), tb.lines().count()),
            };
            return Some((cmd, detail));
        }
    }
    None
}
