//! `kernel-entries`: kernel functions whose first instruction branches out of kernel
//! text, found without the kernel image.
//!
//! `kernel-text` needs the image the guest booted. Without one, the running kernel
//! still says where its functions begin: its kallsyms tables in guest memory list every
//! function ([`vmi_core::kernel::kallsyms::Kallsyms::addresses`]). An inline hook
//! (`jmp`/`call` to the rootkit's code written over a function's first bytes) and a hook
//! through a function's ftrace site (the `call __fentry__` NOP at its entry, or right
//! after its `endbr64` on IBT kernels) both sit there, so this check reads every entry
//! and reports a branch ([`super::text::branch_target`]: `jmp`/`call rel32`, `jmp
//! rel8`, `movabs; jmp *%rax`, `push; ret`) whose target is outside kernel text, with
//! the target's owner ([`super::Owners`]: a module, a hidden module, no known module).
//!
//! A separate check, not `kernel-text` without an image: it runs on every scan of every
//! guest (it needs nothing but the profile's kallsyms symbols), and what it can see is
//! a subset of what the image comparison sees (a branch at an entry, not a changed byte
//! anywhere), so its findings stand on their own.
//!
//! Allowed, because the kernel itself writes them and another check judges them:
//! - a branch to the trampoline of a registered `ftrace_ops` (an ftrace site of a traced
//!   function calls its ops' trampoline; the ops and its callback's owner are the
//!   `ftrace` check's);
//! - a branch to a registered `ftrace_ops`' direct-call target (`direct_call`, or a
//!   filter entry's `direct`: BPF trampolines, livepatch), likewise the `ftrace`
//!   check's;
//! - a static call's trampoline (`__SCT__*`, by its kallsyms name) jumping into a
//!   module on the modules list: `static_call_update` points it at a module's function
//!   (kvm's `kvm_x86_*` operations). Into a hidden module or no module it is reported.
//!
//! Calls to `ftrace_caller`, `ftrace_regs_caller` and the other callers in kernel text
//! are never candidates: they are kernel text.
//!
//! What it does not see: a hook in the middle of a function, and patch sites other than
//! function entries (static keys' jumps, inlined static-call sites, alternatives); the
//! image comparison (`--image`) sees those.
//!
//! A profile that does not locate the kallsyms tables (one made from a `/proc/kallsyms`
//! copy) leaves the check nothing to read: said in the report's `not_checked`.
//!
//! Cost: the address table (about 0.6 MB for 150,000 symbols) and kernel text (14-35
//! MB) read in 1 MiB chunks; names are decoded only for the entries reported.

use vmi_core::kernel::ftrace::Filter;
use vmi_core::kernel::syscalls::TextRange;
use vmi_core::memory::{PhysicalMemory, VirtualMemory};
use vmi_core::Va;

use crate::checks::text::branch_target;
use crate::checks::{CheckFailure, Owner, Scan};
use crate::finding::{Finding, Severity};

const NAME: &str = "kernel-entries";
/// Bytes of kernel text read at a time.
const CHUNK: u64 = 1 << 20;
/// Bytes read at each entry: `endbr64` (4) and the longest branch decoded (12).
const WINDOW: usize = 16;
/// `endbr64`.
const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];

/// A function entry whose first instruction (after `endbr64`) branches out of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    /// The function's entry.
    pub entry: u64,
    /// The branch instruction (the entry, or 4 bytes after it behind `endbr64`).
    pub at: u64,
    /// Where it goes.
    pub target: u64,
    /// The bytes at the entry.
    pub bytes: Vec<u8>,
}

/// The out-of-text branch at an entry with `bytes` (as many as were read, up to
/// [`WINDOW`]), if any.
pub fn branch_at_entry(entry: u64, bytes: &[u8], text: &TextRange) -> Option<Branch> {
    let mut at = entry;
    let mut b = bytes;
    if let Some(rest) = b.strip_prefix(&ENDBR64[..]) {
        at = entry.wrapping_add(4);
        b = rest;
    }
    let target = branch_target(b, at)?;
    (!text.contains(Va(target))).then(|| Branch {
        entry,
        at,
        target,
        bytes: bytes.to_vec(),
    })
}

/// Why a branch out of text is the kernel's own, when it is (see the module doc).
pub fn allowed(
    name: Option<&str>,
    owner: &Owner,
    target: u64,
    direct_calls: &[u64],
) -> Option<&'static str> {
    match owner {
        Owner::FtraceTrampoline { .. } => Some("the trampoline of a registered ftrace_ops"),
        _ if direct_calls.contains(&target) => {
            Some("the direct-call target of a registered ftrace_ops")
        }
        Owner::Module { hidden: false, .. } if name.is_some_and(|n| n.starts_with("__SCT__")) => {
            Some("a static call set to a listed module's function")
        }
        _ => None,
    }
}

/// Every entry of `entries` (sorted, in `text`) whose first instruction branches out of
/// text: `text` read in [`CHUNK`]s, each with the [`WINDOW`] bytes after it.
pub fn branches<V: VirtualMemory + ?Sized>(
    mem: &V,
    text: &TextRange,
    entries: &[u64],
) -> Result<Vec<Branch>, vmi_core::kernel::KernelError> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; CHUNK as usize + WINDOW];
    let mut i = 0usize;
    let mut at = text.start.0;
    while at < text.end.0 && i < entries.len() {
        // the chunk of the next entry
        if entries[i] >= at + CHUNK {
            at = entries[i] - (entries[i] - text.start.0) % CHUNK;
            continue;
        }
        let n = (text.end.0 - at).min(CHUNK + WINDOW as u64) as usize;
        let buf = &mut buf[..n];
        mem.read_virt(Va(at), buf)
            .map_err(|source| vmi_core::kernel::KernelError::Read {
                what: "kernel text",
                source,
            })?;
        while i < entries.len() && entries[i] < at + CHUNK {
            let off = (entries[i] - at) as usize;
            if let Some(window) = buf.get(off..(off + WINDOW).min(n)) {
                out.extend(branch_at_entry(entries[i], window, text));
            }
            i += 1;
        }
        at += CHUNK;
    }
    Ok(out)
}

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    let k = scan.kernel;
    let text = k.text_range()?;
    let kallsyms = match k.kallsyms() {
        Ok(t) => t,
        // a profile made from a /proc/kallsyms copy does not locate the tables: said,
        // as what this source cannot look at, not a failure of every scan
        Err(vmi_core::kernel::KernelError::MissingSymbol(s)) => {
            scan.not_checked(
                NAME,
                format!("function entries: the profile does not locate the kernel's kallsyms tables ({s})"),
            );
            return Ok(Vec::new());
        }
        Err(e) => return Err(e.into()),
    };
    let mut entries: Vec<u64> = kallsyms
        .addresses(k.space())?
        .into_iter()
        .filter(|&a| text.contains(Va(a)))
        .collect();
    entries.sort_unstable();
    entries.dedup();
    let found = branches(k.space(), &text, &entries)?;
    Ok(judge(scan, found))
}

/// Findings for `found`, the kernel's own branches left out.
pub fn judge<M: PhysicalMemory>(scan: &Scan<'_, M>, found: Vec<Branch>) -> Vec<Finding> {
    let direct_calls: Vec<u64> = scan
        .ftrace
        .as_ref()
        .map(|ops| {
            ops.iter()
                .flat_map(|o| {
                    let entries = match &o.filter {
                        Filter::Functions(f) => f.iter().map(|e| e.direct.0).collect(),
                        Filter::All => Vec::new(),
                    };
                    o.direct_call.map(|v| v.0).into_iter().chain(entries)
                })
                .filter(|&a| a != 0)
                .collect()
        })
        .unwrap_or_default();
    let reported: Vec<(Branch, Owner, Option<String>)> = found
        .into_iter()
        .filter_map(|b| {
            let owner = scan.owners.owner(Va(b.target));
            let name = scan
                .function_name(Va(b.entry))
                .map(|n| n.trim_end_matches("+0x0").to_string());
            allowed(name.as_deref(), &owner, b.target, &direct_calls)
                .is_none()
                .then_some((b, owner, name))
        })
        .collect();
    let total = reported.len();
    let listed = if total > super::MAX_FINDINGS_PER_CHECK {
        super::MAX_FINDINGS_PER_CHECK - 1
    } else {
        total
    };
    let mut findings = Vec::new();
    for (b, owner, name) in reported.into_iter().take(listed) {
        let symbol = name.unwrap_or_else(|| format!("{:#x}", b.entry));
        let off = b.at - b.entry;
        findings.push(
            Finding::new(
                NAME,
                Severity::High,
                format!("{NAME}:{:#x}:{:#x}", b.at, b.target),
                format!(
                    "{symbol}+{off:#x}, the entry of a kernel function, branches to {:#x} in {owner}, outside kernel text: an inline hook (or a hook through its ftrace site) that no registered ftrace_ops accounts for",
                    b.target
                ),
            )
            .text("symbol", symbol)
            .addr("address", b.at)
            .addr("target", b.target)
            .text("owner", owner.to_string())
            .text("running", hex::encode(&b.bytes)),
        );
    }
    if listed < total {
        findings.push(super::more_findings(NAME, listed, total));
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    use vmi_core::testing::TEXT;
    use vmi_core::Va;

    use crate::checks::synthetic::{ev, ev_addr, system};
    use crate::checks::{Scan, Settings};

    const TEXT_RANGE: TextRange = TextRange {
        start: Va(TEXT),
        end: Va(TEXT + 0x20_0000),
    };

    fn jmp(from: u64, to: u64, op: u8) -> Vec<u8> {
        let mut b = vec![op];
        b.extend_from_slice(&((to as i64 - (from as i64 + 5)) as i32).to_le_bytes());
        b
    }

    #[test]
    fn branches_at_entries_and_behind_endbr() {
        let f = TEXT + 0x1000;
        let module = 0xffff_ffff_c000_1000u64;
        // a jmp out of text at the entry
        let b = branch_at_entry(f, &jmp(f, module, 0xe9), &TEXT_RANGE).unwrap();
        assert_eq!((b.at, b.target), (f, module));
        // the ftrace site behind endbr64 calling out
        let mut ibt = ENDBR64.to_vec();
        ibt.extend(jmp(f + 4, module, 0xe8));
        let b = branch_at_entry(f, &ibt, &TEXT_RANGE).unwrap();
        assert_eq!((b.at, b.target), (f + 4, module));
        // calls into text (ftrace_caller), NOPs and ordinary code are nothing
        assert_eq!(
            branch_at_entry(f, &jmp(f, TEXT + 0x10, 0xe8), &TEXT_RANGE),
            None
        );
        assert_eq!(
            branch_at_entry(f, &[0x0f, 0x1f, 0x44, 0, 0], &TEXT_RANGE),
            None
        );
        assert_eq!(
            branch_at_entry(f, &[0x55, 0x48, 0x89, 0xe5], &TEXT_RANGE),
            None
        );
        // a window cut short decodes nothing rather than guessing
        assert_eq!(branch_at_entry(f, &[0xe9, 0x10], &TEXT_RANGE), None);
    }

    #[test]
    fn what_is_allowed() {
        let module = |hidden| Owner::Module {
            name: "kvm_intel".into(),
            hidden,
        };
        let tramp = Owner::FtraceTrampoline {
            ops: 1,
            callback: "kernel text".into(),
        };
        assert!(allowed(Some("vfs_read"), &tramp, 5, &[]).is_some());
        assert!(allowed(Some("vfs_read"), &Owner::UnknownModuleArea, 5, &[5]).is_some());
        assert!(allowed(Some("__SCT__kvm_x86_run"), &module(false), 5, &[]).is_some());
        // a static call into a hidden module, an entry jumping into a listed module
        assert!(allowed(Some("__SCT__kvm_x86_run"), &module(true), 5, &[]).is_none());
        assert!(allowed(Some("vfs_read"), &module(false), 5, &[]).is_none());
        assert!(allowed(None, &Owner::UnknownModuleArea, 5, &[6]).is_none());
    }

    #[test]
    fn findings_are_bounded_and_the_rest_counted() {
        let s = system();
        let t = s.sk.symbol("_stext").0;
        let kernel = s.sk.discover().expect("discover the synthetic kernel");
        let settings = Settings::default();
        let scan = Scan::new(&kernel, &[], &settings);
        let n = crate::checks::MAX_FINDINGS_PER_CHECK + 44;
        let found: Vec<Branch> = (0..n as u64)
            .map(|i| Branch {
                entry: t + 0x10 * i,
                at: t + 0x10 * i,
                target: 0xffff_ffff_c0f0_0000,
                bytes: vec![0xe9, 0, 0, 0, 0],
            })
            .collect();
        let findings = judge(&scan, found);
        assert_eq!(findings.len(), crate::checks::MAX_FINDINGS_PER_CHECK);
        let last = findings.last().unwrap();
        assert_eq!(last.key, "kernel-entries:more");
        assert_eq!(ev(last, "total"), n.to_string());
    }

    #[test]
    fn entries_are_read_in_chunks_and_judged_with_their_owners() {
        let mut s = system();
        let t = s.sk.symbol("_stext").0;
        // entries on both sides of a chunk boundary, one with its branch across it
        let hooked = t + CHUNK - 2;
        let traced = t + 0x3000;
        let clean = t + 0x4000;
        let hidden_hook = t + CHUNK + 0x100;
        let hook = s.e1000.code(0x40).0;
        s.sk.write(Va(hooked), &jmp(hooked, hook, 0xe9));
        // an ftrace site calling a registered ops' trampoline
        let tramp = 0xffff_ffff_c080_0000u64;
        let ops = s.sk.add_ftrace_ops(Va(t + 0x10), &[Va(traced)]);
        s.sk.set(ops, "ftrace_ops", "trampoline", tramp);
        s.sk.set(ops, "ftrace_ops", "trampoline_size", 0x100);
        s.sk.write(Va(traced), &jmp(traced, tramp + 0x10, 0xe8));
        s.sk.write(Va(clean), &[0x0f, 0x1f, 0x44, 0, 0]);
        // into the module area, no module there
        let nowhere = 0xffff_ffff_c0f0_0000u64;
        s.sk.write(Va(hidden_hook), &jmp(hidden_hook, nowhere, 0xe9));
        let kernel = s.sk.discover().expect("discover the synthetic kernel");
        let text = kernel.text_range().unwrap();
        assert_eq!(text.start.0, t);
        let entries = [traced, clean, hooked, hidden_hook];
        let found = branches(kernel.space(), &text, &entries).unwrap();
        let at: Vec<u64> = found.iter().map(|b| b.entry).collect();
        assert_eq!(at, vec![traced, hooked, hidden_hook]);
        let settings = Settings::default();
        let scan = Scan::new(&kernel, &[], &settings);
        let findings = judge(&scan, found);
        assert_eq!(findings.len(), 2, "{findings:#?}");
        assert_eq!(ev_addr(&findings[0], "target"), hook);
        assert_eq!(ev(&findings[0], "owner"), "module e1000");
        assert_eq!(ev(&findings[0], "symbol"), format!("{hooked:#x}"));
        assert_eq!(
            ev(&findings[1], "owner"),
            "module area, no known module (hidden)"
        );
        assert!(findings.iter().all(|f| f.severity == Severity::High));
    }
}
