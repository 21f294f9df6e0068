//! The guest-memory fuzzer (issue 23): real lab dumps, kernel objects mutated by the
//! profile's layout, every command run on each mutant.
//!
//! - [`Sites::collect`] walks the kernel the detector reads from a dump once: the
//!   processes and threads of the census, the modules, the typed roots among the
//!   profile's symbols (`init_task`, `init_pid_ns`, `prog_idr`, ...), and from each
//!   object every field the profile has for its type, following pointers to the types
//!   the profile knows (so `task_struct.mm` leads to the `mm_struct`, its `mm_mt` to the
//!   maple tree's nodes and the VMAs in its leaves, `files` to the `fdtable` and the
//!   `file`s, `pid_namespace.idr` to the XArray's nodes). Each field becomes a
//!   [`Site`] of a class (pointer, list link, count, string, word of a node, page-table
//!   entry); the page-table entries are those that map the objects found, in the
//!   kernel's tables and each process's own.
//! - A mutant ([`Mutant::make`]) is one to three mutations of sites chosen by a seeded
//!   RNG from `(seed, index)` alone, so one mutant replays by its seed and index: a
//!   pointer zeroed, moved by 8, all ones, to itself, to another object of its type or
//!   of another, non-canonical, unmapped, to user space; a list link to its own list
//!   head; a count zeroed, all ones or huge; a string's bytes with terminal escapes and
//!   no terminator; a page-table entry not present, a huge page, to a frame past the
//!   end of memory or to its own table. The bytes go into an [`Overlay`] over the dump,
//!   never into a copy of it.
//! - [`run_commands`] runs what `ps`, `lsmod`, `sockets`, `bpf`, `maps` (every process)
//!   and `check` (every check, the policy and kernel-text checks included when given)
//!   run, through the same library calls and render functions as `detector`, and
//!   [`Fuzzer::run_one`] runs it on a thread of its own: a panic, a run over the time
//!   bound (the thread's CPU time, so other programs on a shared machine do not count;
//!   a run that has not ended at ten times the bound, wall clock, is a hang), a run
//!   allocating more than the memory bound or output holding a raw control character
//!   is a [`Problem`].
//!
//! Shared by `tests/fuzz.rs` (the bounded CI mode) and `examples/fuzz_guest.rs` (the
//! long mode, `scripts/fuzz-guest.sh`).
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use detector::checks::{self, Check, Settings};
use detector::render;
use detector::target::Memory;
use detector::Target;
use vmi_core::addr::{Pa, Va};
use vmi_core::arch::x86_64::{PageTableRoot, Registers};
use vmi_core::kernel::{Hints, Kernel, Limits};
use vmi_core::memory::{Overlay, PhysicalMemory, VirtualMemory};
use vmi_core::profile::Profile;

// ---------------------------------------------------------------------------------------
// memory accounting: the heap this process holds now and at most since the last reset

/// The system allocator, counting the bytes held.
pub struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; the counters are plain atomics
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the system allocator's
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = HELD.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above
        unsafe { System.dealloc(ptr, layout) };
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap held now.
pub fn heap_held() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// Start a new peak from what is held now.
fn reset_peak() {
    PEAK.store(HELD.load(Ordering::Relaxed), Ordering::Relaxed);
}

fn heap_peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// The process's peak resident set (VmHWM), in bytes.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

// ---------------------------------------------------------------------------------------
// a small seeded RNG (splitmix64): no dependency, the same sequence everywhere

/// splitmix64.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The generator of mutant `index` of the run seeded `seed`.
    pub fn for_mutant(seed: u64, index: u64) -> Rng {
        let mut r = Rng(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.next();
        r
    }

    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

// ---------------------------------------------------------------------------------------
// sites: the places a mutation can go

/// What kind of value a site holds, which decides its mutations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// A pointer (8 bytes); `ty` is the struct it points to when the profile knows it.
    Pointer { ty: Option<String> },
    /// A `list_head` (`next`, then `prev`).
    ListHead,
    /// An integer of this many bytes (1, 2, 4, 8).
    Int(usize),
    /// A string of this many bytes.
    Bytes(usize),
    /// An 8-byte word of a node whose layout the profile does not give (XArray and maple
    /// nodes, the first words of a global).
    Word,
    /// A page-table entry at this level (1 = the page table).
    Pte(u8),
}

/// A place a mutation can go.
#[derive(Debug, Clone)]
pub struct Site {
    /// What it is: `task_struct@ffff...+0x5a8 tasks` (type, object, offset, field).
    pub what: String,
    /// The object it is in (for pointers to the object itself).
    pub object: u64,
    /// Where: a guest-virtual address, or for page-table entries a physical one.
    pub at: Loc,
    /// What it holds.
    pub class: Class,
}

/// A site's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    /// Guest-virtual, through the kernel's tables.
    Va(u64),
    /// Guest-physical.
    Pa(u64),
}

/// Every site found in a dump, and the objects by type (targets of pointer mutations).
pub struct Sites {
    /// The sites, in the order found (deterministic for a dump).
    pub sites: Vec<Site>,
    /// Objects found, by type.
    pub objects: BTreeMap<String, Vec<u64>>,
    /// The sites' indexes by class (none empty).
    pub by_class: Vec<Vec<usize>>,
}

/// A class's name.
pub fn class_name(c: &Class) -> &'static str {
    match c {
        Class::Pointer { .. } => "pointer",
        Class::ListHead => "list link",
        Class::Int(_) => "integer",
        Class::Bytes(_) => "string",
        Class::Word => "node/table word",
        Class::Pte(_) => "page-table entry",
    }
}

/// At most this many objects of one type are walked.
const PER_TYPE: usize = 48;
/// At most this many objects in all.
const MAX_OBJECTS: usize = 4000;
/// At most this many maple or XArray nodes per tree.
const PER_TREE: usize = 24;

fn is_kernel_va(v: u64) -> bool {
    v >= 0xffff_8000_0000_0000 && v != u64::MAX
}

/// The struct a compact type names: `ptr struct mm_struct` → (1, `mm_struct`),
/// `struct list_head` → (0, `list_head`), `ptr ptr struct file` → (2, `file`).
fn struct_of(ty: &str) -> Option<(usize, &str)> {
    let mut depth = 0;
    let mut t = ty.trim();
    while let Some(rest) = t.strip_prefix("ptr ") {
        depth += 1;
        t = rest.trim();
    }
    let t = t.strip_prefix("const ").unwrap_or(t);
    let name = t
        .strip_prefix("struct ")
        .or_else(|| t.strip_prefix("union "))?;
    (!name.contains('[')).then_some((depth, name))
}

/// The length of an array type `char[16]`.
fn array_len(ty: &str) -> Option<usize> {
    let open = ty.rfind('[')?;
    ty[open + 1..].strip_suffix(']')?.parse().ok()
}

/// The size of an integer type by its name (4 when unknown).
fn int_size(ty: &str) -> usize {
    let t = ty.trim();
    if t.contains("long") || t.contains("64") || t.contains("size_t") || t.contains("loff_t") {
        8
    } else if t.contains("short") || t.contains("16") {
        2
    } else if t == "char" || t.contains("u8") || t.contains("bool") || t.contains("s8") {
        1
    } else {
        4
    }
}

/// The symbols whose object's type is known.
const TYPED_ROOTS: &[(&str, &str)] = &[
    ("init_task", "task_struct"),
    ("init_pid_ns", "pid_namespace"),
    ("init_mm", "mm_struct"),
    ("init_cred", "cred"),
    ("init_net", "net"),
    ("prog_idr", "idr"),
    ("link_idr", "idr"),
    ("module_kset", "kset"),
];

/// Symbols whose first words are mutated as they are (tables, list heads, counts).
const WORD_ROOTS: &[&str] = &[
    "modules",
    "sys_call_table",
    "idt_table",
    "ftrace_ops_list",
    "kprobe_table",
    "tty_drivers",
    "tty_ldiscs",
    "net_namespace_list",
    "nr_cpu_ids",
    "__per_cpu_offset",
    "pmus",
    "keyboard_notifier_list",
    "panic_notifier_list",
    "die_chain",
    "tcp4_seq_ops",
    "udp_seq_ops",
    "module_notify_list",
    "page_offset_base",
    "kallsyms_num_syms",
];

struct Walk<'a, M: PhysicalMemory> {
    kernel: &'a Kernel<M>,
    profile: &'a Profile,
    out: Sites,
    seen: BTreeSet<(String, u64)>,
    queue: VecDeque<(String, u64)>,
    /// Objects whose page-table entries are sites (by page).
    pages: BTreeSet<u64>,
}

impl<M: PhysicalMemory> Walk<'_, M> {
    fn read_u64(&self, va: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.kernel.space().read_virt(Va(va), &mut b).ok()?;
        Some(u64::from_le_bytes(b))
    }

    fn readable(&self, va: u64) -> bool {
        self.kernel.space().translate(Va(va)).is_ok()
    }

    fn add_object(&mut self, ty: &str, va: u64) {
        if !is_kernel_va(va) || !self.profile.types.contains_key(ty) || !self.readable(va) {
            return;
        }
        let n = self.out.objects.get(ty).map_or(0, Vec::len);
        if n >= PER_TYPE || self.seen.len() >= MAX_OBJECTS {
            return;
        }
        if self.seen.insert((ty.to_string(), va)) {
            self.out.objects.entry(ty.to_string()).or_default().push(va);
            self.queue.push_back((ty.to_string(), va));
        }
    }

    fn site(&mut self, what: String, object: u64, va: u64, class: Class) {
        self.out.sites.push(Site {
            what,
            object,
            at: Loc::Va(va),
            class,
        });
    }

    /// Every field of the object `ty` at `va`.
    fn visit(&mut self, ty: &str, va: u64) {
        self.pages.insert(va & !0xfff);
        let Some(def) = self.profile.types.get(ty).cloned() else {
            return;
        };
        for (name, f) in &def.fields {
            let at = va.wrapping_add(f.offset);
            let what = format!("{ty}@{va:x}+{:#x} {name}", f.offset);
            if f.bit_size.is_some() {
                self.site(what, va, at, Class::Int(1));
                continue;
            }
            let fty = f.ty.as_str();
            match struct_of(fty) {
                Some((0, "list_head")) | Some((0, "hlist_node")) => {
                    self.site(what, va, at, Class::ListHead)
                }
                Some((0, "maple_tree")) => {
                    self.site(what.clone(), va, at.wrapping_add(8), Class::Word);
                    self.maple(at);
                }
                Some((0, inner)) => {
                    if self.profile.types.contains_key(inner) {
                        let inner = inner.to_string();
                        self.visit_embedded(&inner, at);
                    } else {
                        self.site(what.clone(), va, at, Class::Word);
                        self.site(what, va, at.wrapping_add(8), Class::Word);
                    }
                }
                Some((1, target)) => {
                    let target = target.to_string();
                    self.site(
                        what,
                        va,
                        at,
                        Class::Pointer {
                            ty: Some(target.clone()),
                        },
                    );
                    if let Some(p) = self.read_u64(at) {
                        self.add_object(&target, p);
                    }
                }
                Some((2, target)) => {
                    // an array of pointers (fdtable.fd): its first entries
                    let target = target.to_string();
                    self.site(what.clone(), va, at, Class::Pointer { ty: None });
                    if let Some(arr) = self.read_u64(at).filter(|&a| is_kernel_va(a)) {
                        for i in 0..8u64 {
                            let slot = arr.wrapping_add(i * 8);
                            if let Some(p) = self.read_u64(slot) {
                                self.site(
                                    format!("{what}[{i}]"),
                                    arr,
                                    slot,
                                    Class::Pointer {
                                        ty: Some(target.clone()),
                                    },
                                );
                                self.add_object(&target, p);
                            }
                        }
                    }
                }
                _ if fty.starts_with("ptr char") || fty.starts_with("ptr const char") => {
                    self.site(what.clone(), va, at, Class::Pointer { ty: None });
                    if let Some(p) = self.read_u64(at).filter(|&p| is_kernel_va(p)) {
                        if self.readable(p) {
                            self.site(format!("*{what}"), p, p, Class::Bytes(24));
                        }
                    }
                }
                _ if fty.starts_with("ptr") => self.site(what, va, at, Class::Pointer { ty: None }),
                _ if fty.contains('[') => {
                    let len = array_len(fty).unwrap_or(8);
                    if fty.starts_with("char") || fty.starts_with("u8") || fty.contains("char[") {
                        self.site(what, va, at, Class::Bytes(len.min(256)));
                    } else {
                        // the first few elements as words
                        for i in 0..len.min(4) as u64 {
                            self.site(
                                format!("{what}[{i}]"),
                                va,
                                at.wrapping_add(8 * i),
                                Class::Word,
                            );
                        }
                    }
                }
                _ => self.site(what, va, at, Class::Int(int_size(fty))),
            }
        }
    }

    /// A struct inside another (`pid_namespace.idr`, `idr.idr_rt`): its own fields, at
    /// most a few levels down.
    fn visit_embedded(&mut self, ty: &str, va: u64) {
        if self.seen.insert((ty.to_string(), va)) && self.seen.len() < MAX_OBJECTS {
            if ty == "xarray" {
                if let Some(f) = self.profile.field("xarray", "xa_head") {
                    self.xarray(va.wrapping_add(f.offset));
                }
            }
            self.visit(ty, va);
        }
    }

    /// The nodes of the XArray whose `xa_head` is at `head_at`.
    fn xarray(&mut self, head_at: u64) {
        let slots = self
            .profile
            .field("xa_node", "slots")
            .map_or(0x28, |f| f.offset);
        let mut todo = vec![self.read_u64(head_at).unwrap_or(0)];
        let mut n = 0;
        while let Some(e) = todo.pop() {
            if !(e & 3 == 2 && e > 4096) || n >= PER_TREE {
                continue;
            }
            let node = e - 2;
            if !self.readable(node) || !self.seen.insert(("xa_node".into(), node)) {
                continue;
            }
            n += 1;
            self.site(
                format!("xa_node@{node:x} shift,offset,count"),
                node,
                node,
                Class::Int(4),
            );
            for i in 0..64u64 {
                let slot = node.wrapping_add(slots + 8 * i);
                let Some(v) = self.read_u64(slot) else { break };
                if v != 0 {
                    self.site(
                        format!("xa_node@{node:x} slots[{i}]"),
                        node,
                        slot,
                        Class::Word,
                    );
                    todo.push(v);
                }
            }
        }
    }

    /// The nodes of the maple tree at `tree` (its `ma_root` at +8), and the VMAs in its
    /// leaves.
    fn maple(&mut self, tree: u64) {
        let mut todo = vec![self.read_u64(tree.wrapping_add(8)).unwrap_or(0)];
        let mut n = 0;
        while let Some(enode) = todo.pop() {
            if !(enode & 3 == 2 && enode > 4096) || n >= PER_TREE {
                continue;
            }
            let node = enode & !0xff;
            let kind = (enode >> 3) & 0xf;
            if !self.readable(node) || !self.seen.insert(("maple_node".into(), node)) {
                continue;
            }
            n += 1;
            let (slots, count) = match kind {
                3 => (8 + 9 * 8, 10u64),
                _ => (8 + 15 * 8, 16u64),
            };
            for w in 0..32u64 {
                self.site(
                    format!("maple_node@{node:x} type {kind} word {w}"),
                    node,
                    node.wrapping_add(8 * w),
                    Class::Word,
                );
            }
            for i in 0..count {
                let Some(v) = self.read_u64(node.wrapping_add(slots + 8 * i)) else {
                    break;
                };
                if kind == 1 {
                    self.add_object("vm_area_struct", v);
                } else {
                    todo.push(v);
                }
            }
        }
    }

    /// The page-table entries on the way to `va` under `root`.
    fn ptes(&mut self, root: PageTableRoot, va: u64, who: &str) {
        let mem = self.kernel.space().memory();
        let mut table = root.table.0;
        for &level in root.mode.levels() {
            let entry_pa = table + level.index(Va(va)) * 8;
            let Ok(e) = mem.read_phys_u64(Pa(entry_pa)) else {
                return;
            };
            self.out.sites.push(Site {
                what: format!("{who} page-table entry L{} for {va:x}", level.number()),
                object: 0,
                at: Loc::Pa(entry_pa),
                class: Class::Pte(level.number()),
            });
            if e & 1 == 0 || (level.number() > 1 && e & 0x80 != 0) {
                return;
            }
            table = e & 0x000f_ffff_ffff_f000;
        }
    }
}

impl Sites {
    /// Walk the kernel of `target` and list every site.
    pub fn collect(target: &Target) -> Sites {
        let kernel = &target.kernel;
        let profile = kernel.profile().clone();
        let mut w = Walk {
            kernel,
            profile: &profile,
            out: Sites {
                sites: Vec::new(),
                objects: BTreeMap::new(),
                by_class: Vec::new(),
            },
            seen: BTreeSet::new(),
            queue: VecDeque::new(),
            pages: BTreeSet::new(),
        };
        let limits = Limits::default();
        let mut user_roots = Vec::new();
        if let Ok(c) = kernel.census(&limits) {
            for p in &c.processes {
                w.add_object("task_struct", p.task.0);
                for t in &p.threads {
                    w.add_object("task_struct", t.task.0);
                }
                if p.mm.0 != 0 {
                    user_roots.push((p.pid, p.mm.0));
                }
            }
        }
        if let Ok(m) = kernel.modules_salvaged(&limits) {
            for m in &m.modules {
                w.add_object("module", m.addr.0);
            }
        }
        for (sym, ty) in TYPED_ROOTS {
            if let Ok(va) = kernel.symbol(sym) {
                w.add_object(ty, va.0);
            }
        }
        for sym in WORD_ROOTS {
            if let Ok(va) = kernel.symbol(sym) {
                if w.readable(va.0) {
                    for i in 0..8u64 {
                        w.site(
                            format!("{sym}+{:#x}", 8 * i),
                            va.0,
                            va.0 + 8 * i,
                            Class::Word,
                        );
                    }
                    w.pages.insert(va.0 & !0xfff);
                }
            }
        }
        while let Some((ty, va)) = w.queue.pop_front() {
            w.visit(&ty, va);
        }
        // the kernel's page-table entries that map what was found
        let root = kernel.placement().root;
        let pages: Vec<u64> = w.pages.iter().copied().collect();
        for (i, va) in pages.iter().enumerate() {
            // every page's last levels, the upper levels once per 1 GiB
            if i.is_multiple_of(4) {
                w.ptes(root, *va, "kernel");
            }
        }
        // each process's own tables: the entries mapping its first mappings
        let pgd_off = profile.field("mm_struct", "pgd").map(|f| f.offset);
        for (pid, mm) in user_roots.into_iter().take(16) {
            let Some(off) = pgd_off else { break };
            let Some(pgd) = w.read_u64(mm + off) else {
                continue;
            };
            let Ok(t) = kernel.space().translate(Va(pgd)) else {
                continue;
            };
            let proot = PageTableRoot {
                table: t.pa,
                mode: root.mode,
            };
            if let Ok(maps) = kernel.maps(Va(mm)) {
                for m in maps.iter().take(4) {
                    w.ptes(proot, m.vma.start, &format!("pid {pid}"));
                }
            }
        }
        let mut by: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, s) in w.out.sites.iter().enumerate() {
            by.entry(class_name(&s.class)).or_default().push(i);
        }
        w.out.by_class = by.into_values().collect();
        w.out
    }
}

// ---------------------------------------------------------------------------------------
// mutants

/// One mutation: the site and the bytes written there.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// Which site (index into [`Sites::sites`]).
    pub site: usize,
    /// Offset within the site.
    pub offset: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// How, in words: `next = self`.
    pub how: String,
}

/// A mutant: its index and mutations.
#[derive(Debug, Clone)]
pub struct Mutant {
    /// Its index in the run.
    pub index: u64,
    /// What it changes.
    pub mutations: Vec<Mutation>,
}

fn pointer_value(rng: &mut Rng, sites: &Sites, site: &Site, at: u64, old: u64) -> (u64, String) {
    let other_of = |rng: &mut Rng, ty: Option<&str>| -> Option<u64> {
        let list: Vec<&Vec<u64>> = match ty {
            Some(t) => sites.objects.get(t).into_iter().collect(),
            None => sites.objects.values().collect(),
        };
        let l = list.get(rng.below(list.len()))?;
        l.get(rng.below(l.len())).copied()
    };
    let same_ty = match &site.class {
        Class::Pointer { ty } => ty.clone(),
        _ => None,
    };
    match rng.below(13) {
        0 => (0, "0".into()),
        1 => (old.wrapping_add(8), "+8".into()),
        2 => (old.wrapping_sub(8), "-8".into()),
        3 => (u64::MAX, "all ones".into()),
        4 => (at, "its own address".into()),
        5 => (site.object, "its own object".into()),
        6 => match other_of(rng, same_ty.as_deref()) {
            Some(v) => (v, "another object of its type".into()),
            None => (old ^ 0x1000, "flipped bit 12".into()),
        },
        7 => match other_of(rng, None) {
            Some(v) => (v, "an object of another type".into()),
            None => (old ^ 0x40, "flipped bit 6".into()),
        },
        8 => (
            0x8000_0000_0000_0000 | (rng.next() & 0xfff8),
            "non-canonical".into(),
        ),
        9 => (
            0xffff_ffff_0000_0000 | (rng.next() & 0xfff_fff8),
            "unmapped kernel".into(),
        ),
        10 => (
            0x0000_7fff_0000_0000 | (rng.next() & 0xff_fff8),
            "user space".into(),
        ),
        11 => (old.wrapping_add(1), "+1 (misaligned)".into()),
        _ => {
            let v = rng.next();
            (v, format!("random {v:#x}"))
        }
    }
}

fn int_value(rng: &mut Rng, size: usize, old: u64) -> (u64, String) {
    let max = if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * size)) - 1
    };
    let (v, how) = match rng.below(7) {
        0 => (0, "0".to_string()),
        1 => (max, "all ones".into()),
        2 => (max >> 1, "largest signed".into()),
        3 => (old.wrapping_add(1), "+1".into()),
        4 => (old.wrapping_sub(1), "-1".into()),
        5 => (0x7fff_ffff, "huge count".into()),
        _ => {
            let v = rng.next();
            (v, format!("random {:#x}", v & max))
        }
    };
    (v & max, how)
}

fn pte_value(rng: &mut Rng, at: u64, old: u64) -> (u64, String) {
    let frame = old & 0x000f_ffff_ffff_f000;
    match rng.below(7) {
        0 => (old & !1, "not present".into()),
        1 => (old | 0x80, "huge page".into()),
        2 => (
            (old & !0x000f_ffff_ffff_f000) | 0x000f_ffff_ffff_f000,
            "frame past the end of memory".into(),
        ),
        3 => ((old & 0xfff) | (at & !0xfff), "its own table".into()),
        4 => (0, "0".into()),
        5 => (u64::MAX, "all ones".into()),
        _ => (
            (old & !0x000f_ffff_ffff_f000) | (frame ^ ((rng.below(64) as u64 + 1) << 12)),
            "another frame".into(),
        ),
    }
}

fn string_bytes(rng: &mut Rng, len: usize) -> (Vec<u8>, String) {
    const NASTY: &[u8] = &[
        0x1b, b'[', b'2', b'J', 0x07, 0x0a, 0x0d, 0x08, 0x9b, 0xff, 0x7f,
    ];
    let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    match rng.below(3) {
        0 => {
            // terminal escapes, no terminator
            for (i, x) in b.iter_mut().enumerate() {
                *x = NASTY[i % NASTY.len()];
            }
            (b, "terminal escapes, no terminator".into())
        }
        1 => {
            // ESC first, then random bytes
            if let Some(x) = b.first_mut() {
                *x = 0x1b;
            }
            (b, "ESC and random bytes".into())
        }
        _ => {
            for x in b.iter_mut() {
                if *x == 0 {
                    *x = 0x1b;
                }
            }
            (b, "random bytes, no terminator".into())
        }
    }
}

impl Mutant {
    /// Mutant `index` of the run seeded `seed` over `sites`, reading the current values
    /// from `kernel`.
    pub fn make<M: PhysicalMemory>(
        seed: u64,
        index: u64,
        sites: &Sites,
        kernel: &Kernel<M>,
    ) -> Mutant {
        let mut rng = Rng::for_mutant(seed, index);
        let n = match rng.below(10) {
            0..=6 => 1,
            7 | 8 => 2,
            _ => 3,
        };
        let mut mutations = Vec::new();
        for _ in 0..n {
            if sites.sites.is_empty() {
                break;
            }
            // a class first, so the rarer ones (strings, list links, page-table
            // entries) are hit as often as the many integers
            let class = &sites.by_class[rng.below(sites.by_class.len())];
            let i = class[rng.below(class.len())];
            let site = &sites.sites[i];
            let read = |at: u64| -> u64 {
                let mut b = [0u8; 8];
                let ok = match site.at {
                    Loc::Va(_) => kernel.space().read_virt(Va(at), &mut b).is_ok(),
                    Loc::Pa(_) => kernel.space().memory().read_phys(Pa(at), &mut b).is_ok(),
                };
                if ok {
                    u64::from_le_bytes(b)
                } else {
                    0
                }
            };
            let base = match site.at {
                Loc::Va(v) | Loc::Pa(v) => v,
            };
            let (offset, bytes, how) = match &site.class {
                Class::Pointer { .. } | Class::Word => {
                    let (v, how) = if rng.below(4) == 0 && site.class == Class::Word {
                        int_value(&mut rng, 8, read(base))
                    } else {
                        pointer_value(&mut rng, sites, site, base, read(base))
                    };
                    (0, v.to_le_bytes().to_vec(), how)
                }
                Class::ListHead => {
                    let off = 8 * rng.below(2) as u64;
                    let (v, how) = if rng.below(4) == 0 {
                        (base, "its own list head (an empty list)".to_string())
                    } else {
                        pointer_value(&mut rng, sites, site, base + off, read(base + off))
                    };
                    let name = if off == 0 { "next" } else { "prev" };
                    (off, v.to_le_bytes().to_vec(), format!("{name} = {how}"))
                }
                Class::Int(size) => {
                    let (v, how) = int_value(&mut rng, *size, read(base));
                    (0, v.to_le_bytes()[..*size].to_vec(), how)
                }
                Class::Bytes(len) => {
                    let (b, how) = string_bytes(&mut rng, *len);
                    (0, b, how)
                }
                Class::Pte(_) => {
                    let (v, how) = pte_value(&mut rng, base, read(base));
                    (0, v.to_le_bytes().to_vec(), how)
                }
            };
            mutations.push(Mutation {
                site: i,
                offset,
                bytes,
                how,
            });
        }
        Mutant { index, mutations }
    }

    /// One line per mutation: site, how, bytes.
    pub fn describe(&self, sites: &Sites) -> String {
        self.mutations
            .iter()
            .map(|m| {
                format!(
                    "{} +{:#x}: {} ({})",
                    sites.sites[m.site].what,
                    m.offset,
                    m.how,
                    hex(&m.bytes)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The mutant's bytes laid over `mem` (a mutation whose address does not translate
    /// in the unmutated kernel is left out).
    pub fn overlay<M: PhysicalMemory>(
        &self,
        sites: &Sites,
        kernel: &Kernel<M>,
        mem: Memory,
    ) -> Overlay<Memory> {
        let mut o = Overlay::new(mem);
        for m in &self.mutations {
            let site = &sites.sites[m.site];
            match site.at {
                Loc::Pa(pa) => {
                    let _ = o.patch(Pa(pa + m.offset), &m.bytes);
                }
                Loc::Va(va) => {
                    // byte by byte across pages: each page translated on its own
                    let mut done = 0usize;
                    while done < m.bytes.len() {
                        let at = va + m.offset + done as u64;
                        let in_page = (0x1000 - (at & 0xfff)) as usize;
                        let n = in_page.min(m.bytes.len() - done);
                        if let Ok(t) = kernel.space().translate(Va(at)) {
                            let _ = o.patch(t.pa, &m.bytes[done..done + n]);
                        }
                        done += n;
                    }
                }
            }
        }
        o
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// running the commands

/// What the commands printed (text and JSON) and the errors they returned, to be
/// checked for raw guest bytes.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Every text and JSON output and error message, by command.
    pub texts: Vec<(&'static str, String)>,
    /// What was read: processes, modules, sockets, BPF programs, mappings, findings,
    /// and the checks that failed (by name).
    pub summary: String,
    /// The checks that could not run.
    pub check_errors: Vec<String>,
    /// How long each command took.
    pub times: Vec<(&'static str, Duration)>,
    last: Option<Instant>,
}

impl Outputs {
    fn push(&mut self, cmd: &'static str, s: String) {
        self.texts.push((cmd, s));
    }

    /// `cmd` ended now.
    fn lap(&mut self, cmd: &'static str) {
        let now = Instant::now();
        let from = self.last.unwrap_or(now);
        self.times.push((cmd, now - from));
        self.last = Some(now);
    }

    /// The first raw control character (other than newline and tab) in any output.
    pub fn raw_control(&self) -> Option<String> {
        for (cmd, s) in &self.texts {
            if let Some((i, c)) = s
                .char_indices()
                .find(|&(_, c)| c.is_control() && c != '\n' && c != '\t')
            {
                let from = s[..i].char_indices().rev().nth(40).map_or(0, |(j, _)| j);
                return Some(format!(
                    "{cmd}: raw {:?} after {:?}",
                    c,
                    s[from..i].to_string()
                ));
            }
        }
        None
    }
}

/// Run what `ps`, `lsmod`, `sockets`, `bpf`, `maps` and `check` run, through the
/// library's calls and render functions, on `kernel`.
pub fn run_commands<M: PhysicalMemory>(
    kernel: &Kernel<M>,
    registers: &[Registers],
    settings: &Settings,
    wanted: &[Check],
) -> Outputs {
    let mut out = Outputs {
        last: Some(Instant::now()),
        ..Outputs::default()
    };
    let limits = settings.limits;
    // ps (and the census sockets, bpf and maps start from)
    let procs = match kernel.census(&limits) {
        Ok(c) => {
            out.push("ps", render::census_warnings(&c).join("\n"));
            let exes: Vec<Option<String>> = c
                .processes
                .iter()
                .map(|p| match kernel.exe_file(p.mm) {
                    Ok(Some(name)) => Some(vmi_core::kernel::escape(&name.display())),
                    Ok(None) => None,
                    Err(e) => {
                        out.push("ps", e.to_string());
                        None
                    }
                })
                .collect();
            let rings: Vec<_> = c
                .processes
                .iter()
                .map(|p| match kernel.io_urings(p.task) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        out.push("ps", e.to_string());
                        None
                    }
                })
                .collect();
            out.push("ps", render::ps_text(&c.processes, &rings, false));
            out.push("ps", render::ps_text(&c.processes, &rings, true));
            out.push(
                "ps",
                render::ps_json(&c.processes, &exes, &rings).to_string(),
            );
            c.processes
        }
        Err(e) => {
            out.push("ps", e.to_string());
            Vec::new()
        }
    };
    out.lap("ps");
    // lsmod
    let mut n_modules = 0;
    match kernel.modules_salvaged(&limits) {
        Ok(l) => {
            n_modules = l.modules.len();
            out.push("lsmod", render::module_warnings(&l).join("\n"));
            out.push("lsmod", render::lsmod_text(&l.modules));
            out.push("lsmod", render::lsmod_json(&l.modules).to_string());
        }
        Err(e) => out.push("lsmod", e.to_string()),
    }
    out.lap("lsmod");
    // sockets
    let mut rows = Vec::new();
    for p in &procs {
        match kernel.sockets(p.task) {
            Ok(s) if !s.is_empty() => rows.push((p, s)),
            Ok(_) => {}
            Err(e) => out.push("sockets", e.to_string()),
        }
    }
    out.push("sockets", render::sockets_text(&rows));
    out.push("sockets", render::sockets_json(&rows).to_string());
    out.lap("sockets");
    // bpf
    let mut n_bpf = 0;
    match kernel.bpf(&procs) {
        Ok(view) => match render::bpf_holders(kernel, &procs, &view) {
            Ok(h) => {
                n_bpf = view.programs.len();
                out.push("bpf", render::bpf_text(&view, &h));
                out.push("bpf", render::bpf_json(&view, &h).to_string());
            }
            Err(e) => out.push("bpf", e.to_string()),
        },
        Err(e) => out.push("bpf", e.to_string()),
    }
    out.lap("bpf");
    // maps, of every process with an address space
    let mut n_maps = 0;
    for p in procs.iter().filter(|p| p.mm.0 != 0) {
        match kernel.maps(p.mm) {
            Ok(m) => {
                n_maps += m.len();
                out.push("maps", render::maps_text(&m));
                out.push("maps", render::maps_json(&m).to_string());
            }
            Err(e) => out.push("maps", e.to_string()),
        }
    }
    out.lap("maps");
    // check
    let report = checks::run_once(kernel, registers, wanted, settings);
    out.push("check", render::report_text(&report));
    out.push("check", render::report_json(&report).to_string());
    out.lap("check");
    out.check_errors = report.errors.iter().map(|e| e.to_string()).collect();
    out.summary = format!(
        "{} processes, {} modules, {} sockets, {} BPF programs, {} mappings; check: {} ran, {} findings ({}), {} failed",
        procs.len(),
        n_modules,
        rows.iter().map(|(_, s)| s.len()).sum::<usize>(),
        n_bpf,
        n_maps,
        report.ran.len(),
        report.findings.len(),
        report
            .findings
            .iter()
            .map(|f| f.check)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(", "),
        report.errors.len()
    );
    out
}

// ---------------------------------------------------------------------------------------
// the fuzzer

/// What went wrong with one mutant.
#[derive(Debug, Clone)]
pub enum Problem {
    /// A panic, with its message.
    Panic(String),
    /// Still running at ten times the bound (wall clock): it would never end.
    Hang,
    /// Ended, but took more CPU time than the bound.
    Slow(Duration),
    /// More heap than the bound at once.
    Memory(usize),
    /// A raw control character in the output.
    Unescaped(String),
}

/// One mutant's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How long it ran (wall clock).
    pub took: Duration,
    /// The CPU time of its thread: what the bound is judged by, as the wall clock of a
    /// shared machine counts other programs' time too.
    pub cpu: Duration,
    /// The most heap it held beyond what was held before it.
    pub heap: usize,
    /// What went wrong, if anything.
    pub problem: Option<Problem>,
    /// What the commands read ([`Outputs::summary`]), and the checks that could not
    /// run; empty after a panic or hang.
    pub summary: String,
    /// The checks that could not run.
    pub check_errors: Vec<String>,
    /// How long each command took.
    pub times: String,
}

/// A dump opened, its kernel found and its sites collected.
pub struct Fuzzer {
    /// Its name in reports.
    pub name: String,
    target: Target,
    registers: Arc<Vec<Registers>>,
    /// The sites.
    pub sites: Arc<Sites>,
    settings: Arc<Settings>,
    wanted: Vec<Check>,
    /// Wall-clock bound of one mutant's run.
    pub bound: Duration,
    /// Heap bound of one mutant's run.
    pub heap_bound: usize,
    /// The unmutated dump's [`Outcome::summary`].
    pub baseline: String,
}

/// The policy the fuzzer gives the `policy` check: a rule of every kind.
pub const POLICY: &str = r#"
deny_names = ["nc", "vmi-*"]
deny_exe = ["/tmp/*"]
root_uids = [0]
allow_listen = ["tcp:22"]
"#;

impl Fuzzer {
    /// Open `dump` with `profile` (a file), the image for the kernel-text check when
    /// given.
    pub fn open(
        name: &str,
        dump: &std::path::Path,
        profile: &std::path::Path,
        image: Option<&std::path::Path>,
        bound: Duration,
    ) -> Result<Fuzzer, String> {
        let target = Target::open(
            &detector::SourceSpec::Dump(dump.to_path_buf()),
            &detector::ProfileSpec::File(profile.to_path_buf()),
        )
        .map_err(|e| format!("{name}: opening {}: {e}", dump.display()))?;
        let mut wanted = Check::ALL.to_vec();
        let policy = detector::policy::Policy::parse(POLICY).map_err(|e| e.to_string())?;
        wanted.push(Check::Policy);
        let image = match image {
            Some(p) => {
                wanted.push(Check::KernelText);
                Some(Arc::new(
                    detector::image::KernelImage::open(p, target.profile())
                        .map_err(|e| format!("{name}: the image {}: {e}", p.display()))?,
                ))
            }
            None => None,
        };
        let settings = Settings {
            limits: Limits::default(),
            policy: Some(policy),
            image,
        };
        let sites = Sites::collect(&target);
        Ok(Fuzzer {
            name: name.to_string(),
            registers: Arc::new(target.registers.clone()),
            target,
            sites: Arc::new(sites),
            settings: Arc::new(settings),
            wanted,
            bound,
            heap_bound: 512 << 20,
            baseline: String::new(),
        })
    }

    /// The sites by class, for the report.
    pub fn census(&self) -> String {
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &self.sites.sites {
            *by.entry(class_name(&s.class)).or_default() += 1;
        }
        let objects: usize = self.sites.objects.values().map(Vec::len).sum();
        format!(
            "{} sites ({}) in {} objects of {} types",
            self.sites.sites.len(),
            by.iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", "),
            objects,
            self.sites.objects.len()
        )
    }

    /// Run the unmutated dump and keep its summary as the baseline (what a mutant
    /// changes is counted against it).
    pub fn baseline(&mut self) -> Outcome {
        let o = self.run_one(&Mutant {
            index: u64::MAX,
            mutations: Vec::new(),
        });
        self.baseline = o.summary.clone();
        o
    }

    /// Each check of `mutant` run alone on this thread (no bound: for a replay), with
    /// the heap it held at most and its time.
    pub fn per_check(&self, mutant: &Mutant) -> Vec<(&'static str, usize, Duration)> {
        let overlay = mutant.overlay(
            &self.sites,
            &self.target.kernel,
            self.target.kernel.space().memory().clone(),
        );
        let mem: Memory = Arc::new(overlay);
        let k = &self.target.kernel;
        let hints = Hints {
            registers: self.registers.first().cloned(),
            vmcoreinfo: None,
        };
        let Ok(kernel) =
            Kernel::discover_at(mem, k.profile().clone(), k.placement().banner_pa, &hints)
        else {
            return Vec::new();
        };
        self.wanted
            .iter()
            .map(|&c| {
                let t = Instant::now();
                reset_peak();
                let before = heap_held();
                let r = checks::run_once(&kernel, &self.registers, &[c], &self.settings);
                let heap = heap_peak().saturating_sub(before);
                drop(r);
                (c.name(), heap, t.elapsed())
            })
            .collect()
    }

    /// Mutant `index` of the run seeded `seed`.
    pub fn mutant(&self, seed: u64, index: u64) -> Mutant {
        Mutant::make(seed, index, &self.sites, &self.target.kernel)
    }

    /// Run the commands on `mutant` (no mutation: the dump itself) on a thread of its
    /// own, bounded in time; `Err` when it hung (the thread is left behind: the caller
    /// should stop).
    pub fn run_one(&self, mutant: &Mutant) -> Outcome {
        let overlay = mutant.overlay(
            &self.sites,
            &self.target.kernel,
            self.target.kernel.space().memory().clone(),
        );
        let profile = self.target.kernel.profile().clone();
        let banner_pa = self.target.kernel.placement().banner_pa;
        let registers = self.registers.clone();
        let settings = self.settings.clone();
        let wanted = self.wanted.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let start = Instant::now();
        reset_peak();
        let before = heap_held();
        let spawned = std::thread::Builder::new()
            .name(format!("mutant-{}", mutant.index))
            .spawn(move || {
                let cpu0 = thread_cpu();
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let mem: Memory = Arc::new(overlay);
                    let hints = Hints {
                        registers: registers.first().cloned(),
                        vmcoreinfo: None,
                    };
                    match Kernel::discover_at(mem, profile, banner_pa, &hints) {
                        Ok(kernel) => run_commands(&kernel, &registers, &settings, &wanted),
                        Err(e) => {
                            let mut o = Outputs::default();
                            o.push("discover", e.to_string());
                            o
                        }
                    }
                }));
                let cpu = thread_cpu().saturating_sub(cpu0);
                let _ = tx.send(r.map(|o| (o, cpu)).map_err(|p| panic_text(&*p)));
            });
        if let Err(e) = spawned {
            return Outcome {
                took: start.elapsed(),
                cpu: Duration::ZERO,
                heap: 0,
                problem: Some(Problem::Panic(format!("spawning the run: {e}"))),
                summary: String::new(),
                check_errors: Vec::new(),
                times: String::new(),
            };
        }
        let got = rx.recv_timeout(self.bound * 10);
        let took = start.elapsed();
        let heap = heap_peak().saturating_sub(before);
        let (mut summary, mut check_errors, mut times) = (String::new(), Vec::new(), String::new());
        let mut cpu = Duration::ZERO;
        let problem = match got {
            Err(_) => Some(Problem::Hang),
            Ok(Err(msg)) => Some(Problem::Panic(msg)),
            Ok(Ok((outputs, used))) => {
                cpu = used;
                summary = outputs.summary.clone();
                check_errors = outputs.check_errors.clone();
                times = format!("{:.0?}", outputs.times);
                if used > self.bound {
                    Some(Problem::Slow(used))
                } else if heap > self.heap_bound {
                    Some(Problem::Memory(heap))
                } else {
                    outputs.raw_control().map(Problem::Unescaped)
                }
            }
        };
        Outcome {
            took,
            cpu,
            heap,
            problem,
            summary,
            check_errors,
            times,
        }
    }
}

/// The CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to fill
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with no message".into())
}

/// A run's figures over many mutants.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Mutants run.
    pub mutants: u64,
    /// Panics.
    pub panics: u64,
    /// Runs that did not end.
    pub hangs: u64,
    /// Runs that ended over the CPU-time bound.
    pub slow: u64,
    /// The most CPU time one run took.
    pub max_cpu: Duration,
    /// Runs over the heap bound.
    pub memory: u64,
    /// Outputs with raw guest bytes.
    pub unescaped: u64,
    /// Mutants whose commands read something else than from the dump itself (another
    /// summary, or a check that could not run): the mutations that reached the walks.
    pub changed: u64,
    /// The longest run.
    pub max_took: Duration,
    /// The most heap one run held.
    pub max_heap: usize,
    /// Total run time.
    pub total: Duration,
    /// One line per problem: dump, seed, index, mutations, what happened.
    pub problems: Vec<String>,
    /// The slowest mutant: its CPU time and line (dump, seed, index, mutations).
    pub slowest: Option<(Duration, String)>,
    /// The mutant that held the most heap: bytes and line.
    pub heaviest: Option<(usize, String)>,
}

impl Tally {
    /// Count `o`, the outcome of `m` on `f` in the run seeded `seed`.
    pub fn add(&mut self, f: &Fuzzer, seed: u64, m: &Mutant, o: &Outcome) {
        self.mutants += 1;
        let line = || {
            format!(
                "{} seed {seed} mutant {}: {}",
                f.name,
                m.index,
                m.describe(&f.sites)
            )
        };
        if self.slowest.as_ref().is_none_or(|(t, _)| o.cpu > *t) {
            self.slowest = Some((o.cpu, line()));
        }
        if self.heaviest.as_ref().is_none_or(|(h, _)| o.heap > *h) {
            self.heaviest = Some((o.heap, line()));
        }
        self.max_took = self.max_took.max(o.took);
        self.max_cpu = self.max_cpu.max(o.cpu);
        self.max_heap = self.max_heap.max(o.heap);
        self.total += o.took;
        if o.problem.is_none() && (o.summary != f.baseline || !o.check_errors.is_empty()) {
            self.changed += 1;
        }
        if let Some(p) = &o.problem {
            match p {
                Problem::Panic(_) => self.panics += 1,
                Problem::Hang => self.hangs += 1,
                Problem::Slow(_) => self.slow += 1,
                Problem::Memory(_) => self.memory += 1,
                Problem::Unescaped(_) => self.unescaped += 1,
            }
            self.problems
                .push(format!("{p:?} after {:.2?}: {}", o.took, line()));
        }
    }

    /// True when nothing went wrong.
    pub fn clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The figures on one line.
    pub fn line(&self) -> String {
        format!(
            "{} mutants ({} changed what the commands read), {} panics, {} hangs, {} over the time bound, {} over the heap bound, {} unescaped; longest run {:.2?} ({:.2?} CPU), mean {:.0?}, most heap in one run {} KiB, peak RSS {} MiB",
            self.mutants,
            self.changed,
            self.panics,
            self.hangs,
            self.slow,
            self.memory,
            self.unescaped,
            self.max_took,
            self.max_cpu,
            self.total.checked_div(self.mutants.max(1) as u32).unwrap_or_default(),
            self.max_heap >> 10,
            peak_rss() >> 20
        )
    }
}

// ---------------------------------------------------------------------------------------
// the dumps

/// A dump to fuzz: its name, the ELF core, the profile and the vmlinux of its kernel.
#[derive(Debug, Clone)]
pub struct DumpSpec {
    /// `6.1-clean`, `6.1-rootkits`, `7-sockets-bpf`.
    pub name: String,
    /// The ELF core.
    pub elf: std::path::PathBuf,
    /// The profile (from the boot image's BTF and kallsyms).
    pub profile: std::path::PathBuf,
    /// The vmlinux (for the kernel-text check).
    pub image: std::path::PathBuf,
}

/// The lab kernels: Debian 6.1 and the newest 7.x.
pub const KERNELS: [&str; 2] = ["6.1.0-56-amd64", "newest:7"];

/// Internet sockets and BPF objects in a guest, for `sockets` and `bpf` to read: busybox
/// `nc` listening on TCP 4444, the lab worker on UDP 5555, a connected TCP pair, and the
/// lab worker's BPF programs (`bpf all`: kprobe, raw tracepoint, socket filter, perf
/// link), as the lab tests start them.
pub fn start_workloads(guest: &mut vmi_lab::Guest) {
    let o = guest
        .sh("ip link set lo up; \
             sleep 100000 2>/dev/null | nc -l -p 4444 >/dev/null 2>&1 & \
             /bin/lab-sleeper udp 5555 </dev/null >/dev/null 2>&1 & \
             sleep 100000 2>/dev/null | nc -l -p 4445 >/dev/null 2>&1 & sleep 1; \
             sleep 100000 2>/dev/null | nc 127.0.0.1 4445 >/dev/null 2>&1 & \
             /bin/lab-sleeper bpf all </dev/null >/tmp/bpf.out 2>&1 & \
             for i in 1 2 3 4 5 6 7 8 9 10; do grep -q ready /tmp/bpf.out && break; sleep 1; done; \
             cat /tmp/bpf.out")
        .expect("sh");
    assert!(
        o.lines.iter().any(|l| l.starts_with("bpf ready")),
        "the guest's BPF programs: {:?}",
        o.lines
    );
}

/// The dumps under `dir`, made by booting lab guests where missing (an existing dump is
/// reused: the long mode prepares once): Debian 6.1 clean, then with the demo's test
/// rootkits, sockets and BPF programs (one boot, dumped before and after), and the
/// newest 7.x with sockets and BPF programs.
pub fn prepare(lab: &vmi_lab::Lab, dir: &std::path::Path) -> Vec<DumpSpec> {
    let mut out = Vec::new();
    for (i, kernel) in KERNELS.iter().enumerate() {
        let short = if i == 0 { "6.1" } else { "7" };
        let profile = dir.join(format!("{short}.json"));
        if !profile.exists() {
            let img = lab.store().image(kernel).expect("boot image");
            let built = profile_gen::build::from_btf(&img.vmlinuz, None, None, &Default::default())
                .expect("profile-gen");
            std::fs::write(&profile, built.profile.to_json()).expect("writing the profile");
        }
        let image = lab.store().debug(kernel).expect("-dbg package").vmlinux;
        let spec = |what: &str| DumpSpec {
            name: format!("{short}-{what}"),
            elf: dir.join(format!("{short}-{what}.elf")),
            profile: profile.clone(),
            image: image.clone(),
        };
        if i == 0 {
            let (clean, rk) = (spec("clean"), spec("rootkits"));
            if !clean.elf.exists() || !rk.elf.exists() {
                let mut g = crate::common::boot_demo_rootkit_guest(lab, kernel);
                g.dump_elf(&clean.elf).expect("dump");
                start_workloads(&mut g);
                crate::common::load_demo_rootkits(&mut g);
                g.dump_elf(&rk.elf).expect("dump");
                g.shutdown().expect("shutdown");
            }
            out.push(clean);
            out.push(rk);
        } else {
            let busy = spec("sockets-bpf");
            if !busy.elf.exists() {
                let mut g = lab
                    .boot(
                        kernel,
                        &vmi_lab::Scenario::standard(),
                        &vmi_lab::BootOptions::default(),
                    )
                    .expect("boot");
                start_workloads(&mut g);
                g.dump_elf(&busy.elf).expect("dump");
                g.shutdown().expect("shutdown");
            }
            out.push(busy);
        }
    }
    out
}
