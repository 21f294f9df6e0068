//! A synthetic kernel for tests that need no guest: [`SyntheticKernel`] writes a kernel
//! image, its page tables and kernel objects into a [`MockMemory`] at a profile's
//! offsets, so that [`Kernel::discover`] finds it as it finds a real guest and every
//! walker reads it through the same page tables.
//!
//! Built only with the `test-support` feature (and for vmi-core's own tests); release
//! builds do not contain it.
//!
//! The layout: the image (`_text` of the profile, 2 MiB pages) is loaded at a physical
//! KASLR shift of [`PHYS_SHIFT`] and mapped at a virtual one of [`VIRT_SHIFT`]; the
//! page tables start at `init_top_pgt` and fill the MiB after it; all physical memory
//! is mapped at [`PAGE_OFFSET`] (the direct map), where objects a test adds are
//! allocated; a module's memory is mapped in the module area (zeroed: tables a test
//! copies there are read, its code is not), code of no module is not mapped. A new
//! kernel is *clean*: `init_task` alone (pid 0, `swapper/0`), no modules,
//! every `sys_call_table` entry and IDT gate in kernel text, no ftrace_ops, kprobes,
//! tracepoint probes, netfilter hooks, notifier blocks, perf events or BPF programs,
//! `n_tty` in `tty_ldiscs[0]`
//! and one tty driver whose operations are kernel text, the `/proc/net` seq_operations
//! in kernel text, init's mount namespace with the root file system and `/proc` on the
//! kernel's VFS tables ([`VFS_TABLES`], in `.rodata`). Tests then add objects (processes, modules, hooks) and tamper with
//! them (unlink, overwrite a pointer, make a cycle).
//!
//! [`synthetic_profile`] is a profile with everything the builder places; a test may
//! change it (drop a field, move a symbol) before building.
//!
//! This is test support: a method given something the profile lacks (a type, field or
//! symbol) or memory that runs out panics with a message that says which.

mod profile;

use std::collections::HashMap;
use std::sync::Arc;

pub use profile::{
    synthetic_profile, BANNER, IMAGE_SIZE, NOTIFIER_CHAINS, NR_SYSCALLS, PGT_OFFSET, RODATA_END,
    SEQ_OPS, TEXT, TEXT_SIZE, TRACEPOINTS, TRACEPOINT_OFFSET,
};

use crate::addr::{Pa, Va};
use crate::arch::x86_64::{translate, PageSize, PageTableBuilder, PageTableRoot, PagingMode};
use crate::kernel::notifiers::CHAINS;
use crate::kernel::syscalls::MODULES_START;
use crate::kernel::{Hints, Kernel, KernelError, START_KERNEL_MAP};
use crate::memory::{MockMemory, PhysRange, PhysicalMemory};
use crate::profile::Profile;

/// The physical KASLR shift of the synthetic kernel.
pub const PHYS_SHIFT: u64 = 0x2a0_0000;
/// The virtual KASLR shift of the synthetic kernel.
pub const VIRT_SHIFT: u64 = 0x1c0_0000;
/// `page_offset_base`: where all physical memory is mapped.
pub const PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;
/// `PF_KTHREAD`.
pub const PF_KTHREAD: u32 = 0x0020_0000;
/// `VM_READ`.
pub const VM_READ: u64 = 1;
/// `VM_WRITE`.
pub const VM_WRITE: u64 = 2;
/// `VM_EXEC`.
pub const VM_EXEC: u64 = 4;
/// Where a process's arguments page is (user space).
pub const ARGS_PAGE: u64 = 0x7ffd_0000_0000;
/// Physical memory objects are allocated from.
const HEAP: (u64, u64) = (0x10_0000, 0x100_0000);
/// Bytes of page tables after `init_top_pgt`.
const PGT_BYTES: u64 = 0x10_0000;
const MB2: u64 = 0x20_0000;

/// The system calls the synthetic kernel's tracing metadata names (the others have
/// none, as unimplemented numbers have none in a real kernel).
pub const SYSCALL_NAMES: [(u64, &[u8]); 3] = [
    (0, b"sys_read"),
    (62, b"sys_kill"),
    (217, b"sys_getdents64"),
];

/// A page of a file [`SyntheticKernel::cache_file`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// Not in the page cache.
    Missing,
    /// The first page of a folio (its own XArray entry).
    Head,
    /// A later page of the folio of the last `Head` (no entry of its own).
    Tail,
}

/// A task the builder made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthTask {
    /// Its `task_struct`.
    pub task: Va,
    /// Its pid (thread id).
    pub pid: u32,
    /// Its thread group id.
    pub tgid: u32,
    /// Its `struct pid`.
    pub struct_pid: Va,
    /// Its `struct cred` (both `cred` and `real_cred`).
    pub cred: Va,
    /// Its `signal_struct`.
    pub signal: Va,
}

/// A module the builder made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthModule {
    /// Its `struct module`.
    pub addr: Va,
    /// Its kobject in `module_kset`.
    pub kobj: Va,
    /// Base of its core text (in the module area).
    pub core_base: Va,
    /// Size of its core text.
    pub core_size: u32,
}

impl SynthModule {
    /// An address `off` bytes into the module's core text.
    pub fn code(&self, off: u64) -> Va {
        Va(self.core_base.0 + off)
    }
}

/// One netfilter hook in a blob the builder keeps: (hook, priv, nf_hook_ops).
type NfEntry = (u64, u64, u64);

/// A kernel in mock memory, built object by object (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct SyntheticKernel {
    profile: Profile,
    mem: MockMemory,
    root: PageTableRoot,
    heap: u64,
    module_next: u64,
    next_fn: u64,
    /// Netfilter blobs by the address of their slot in `netns_nf`.
    nf: HashMap<u64, Vec<NfEntry>>,
    /// Dentries by path (the root file system, one mount).
    dentries: HashMap<Vec<u8>, Va>,
    /// The root mount.
    root_mount: Option<Va>,
    /// The internal shmem mount of memfd files ([`Self::memfd_file`]).
    shm_mount: Option<Va>,
    /// The mounts by mount point (the root file system's is `/`).
    mounts: HashMap<Vec<u8>, Va>,
    /// Each process's page table, by its `mm_struct`.
    user_tables: HashMap<u64, PageTableBuilder>,
    /// The kernel's page table (modules' memory is mapped as they are added).
    kernel_tables: PageTableBuilder,
}

impl SyntheticKernel {
    /// A clean kernel of [`synthetic_profile`].
    pub fn clean() -> SyntheticKernel {
        SyntheticKernel::new(synthetic_profile())
    }

    /// A clean kernel of `profile` (which needs the symbols and types the builder
    /// places: [`synthetic_profile`] has them all; the kernel-wide tables a profile
    /// lacks are left out).
    pub fn new(profile: Profile) -> SyntheticKernel {
        let text = link(&profile, "_text");
        assert!(
            text >= START_KERNEL_MAP && (text - START_KERNEL_MAP).is_multiple_of(MB2),
            "_text must be 2 MiB aligned in the kernel image mapping"
        );
        let pgt = link(&profile, "init_top_pgt")
            .checked_sub(text)
            .expect("init_top_pgt is in the image");
        let last = profile
            .symbols
            .values()
            .map(|s| s.address)
            .filter(|a| (text..text + (1 << 30)).contains(a))
            .max()
            .unwrap_or(text);
        let image_len = (last - text + 0x1000).max(pgt + PGT_BYTES).div_ceil(MB2) * MB2;
        let image_pa = text - START_KERNEL_MAP + PHYS_SHIFT;
        let mem_size = image_pa + image_len;
        let mut mem = MockMemory::with_size(mem_size);
        let pgt_pa = image_pa + pgt;
        let mut pt = PageTableBuilder::new(
            &mut mem,
            PagingMode::FourLevel,
            PhysRange::new(pgt_pa, pgt_pa + PGT_BYTES),
        )
        .expect("room for the page tables");
        // as mark_rodata_ro leaves them: text read-only and executable, read-only data
        // read-only, the rest writable, neither executable; the direct map the same for
        // the image's pages (its aliases), writable elsewhere
        use crate::arch::x86_64::{PTE_NX, PTE_WRITABLE};
        let image_flags = |off: u64| {
            if off < TEXT_SIZE {
                0
            } else if off < RODATA_END {
                PTE_NX
            } else {
                PTE_WRITABLE | PTE_NX
            }
        };
        for off in (0..image_len).step_by(MB2 as usize) {
            pt.map(
                &mut mem,
                Va(text + VIRT_SHIFT + off),
                Pa(image_pa + off),
                PageSize::Size2M,
                image_flags(off),
            )
            .expect("map the image");
        }
        for pa in (0..mem_size).step_by(MB2 as usize) {
            let flags = match pa.checked_sub(image_pa) {
                Some(off) if off < RODATA_END => PTE_NX,
                _ => PTE_WRITABLE | PTE_NX,
            };
            pt.map(
                &mut mem,
                Va(PAGE_OFFSET + pa),
                Pa(pa),
                PageSize::Size2M,
                flags,
            )
            .expect("map the direct map");
        }
        let mut k = SyntheticKernel {
            root: pt.root(),
            kernel_tables: pt,
            profile,
            mem,
            heap: HEAP.0,
            module_next: MODULES_START + 0x10_0000,
            next_fn: 0,
            nf: HashMap::new(),
            dentries: HashMap::new(),
            root_mount: None,
            shm_mount: None,
            mounts: HashMap::new(),
            user_tables: HashMap::new(),
        };
        k.populate();
        k
    }

    /// Write what a booted, untampered kernel has.
    fn populate(&mut self) {
        let banner = self.profile.kernel.banner.clone();
        self.write(self.symbol("linux_banner"), banner.as_bytes());
        for (name, v) in [
            ("page_offset_base", PAGE_OFFSET),
            ("vmalloc_base", 0xffff_c900_0000_0000),
            ("vmemmap_base", 0xffff_ea00_0000_0000),
        ] {
            if self.has(name) {
                self.write_u64(self.symbol(name), v);
            }
        }

        // init_task, init_cred (root_user), a one-CPU per-CPU area running init_task
        let init = self.symbol("init_task");
        let init_cred = self.symbol("init_cred");
        self.fill_cred(init_cred, 0);
        self.set_u32(init, "task_struct", "pid", 0);
        self.set_u32(init, "task_struct", "flags", PF_KTHREAD);
        self.write_field(init, "task_struct", "comm", b"swapper/0\0");
        for f in ["real_parent", "parent", "group_leader"] {
            self.set(init, "task_struct", f, init.0);
        }
        for f in ["real_cred", "cred"] {
            self.set(init, "task_struct", f, init_cred.0);
        }
        self.list_init(self.field_va(init, "task_struct", "tasks"));
        let signal = self.alloc_type("signal_struct");
        self.list_init(self.field_va(signal, "signal_struct", "thread_head"));
        self.set(init, "task_struct", "signal", signal.0);
        self.list_add_tail(
            self.field_va(signal, "signal_struct", "thread_head"),
            self.field_va(init, "task_struct", "thread_node"),
        );
        self.write_u64(self.symbol("__per_cpu_offset"), 0);
        self.write_u32(self.symbol("nr_cpu_ids"), 1);
        self.write_u64(self.symbol("current_task"), init.0);
        // what the kernel pinned in CR4 (SMEP, SMAP) and its page tables using NX
        self.write_u64(self.symbol("cr4_pinned_bits"), (1 << 20) | (1 << 21));
        self.write_u64(self.symbol("__supported_pte_mask"), (1 << 63) | 0xfff);
        // the CPU features it uses: SMEP and SMAP (word 9, bits 7 and 20)
        let caps = self.symbol("boot_cpu_data").0 + self.offset("cpuinfo_x86", "x86_capability");
        self.write_u32(Va(caps + 9 * 4), (1 << 7) | (1 << 20));
        // empty run queues: the real-time lists point at themselves
        let rt_queue = self.symbol("runqueues").0
            + self.offset("rq", "rt")
            + self.offset("rt_rq", "active")
            + self.offset("rt_prio_array", "queue");
        for prio in 0..100 {
            self.list_init(Va(rt_queue + prio * 16));
        }

        // modules and /sys/module
        self.list_init(self.symbol("modules"));
        let kset = self.alloc_type("kset");
        self.list_init(self.field_va(kset, "kset", "list"));
        self.write_u64(self.symbol("module_kset"), kset.0);

        // system call table and IDT, every entry in kernel text
        if self.has("sys_call_table") {
            let table = self.symbol("sys_call_table");
            for nr in 0..self.nr_syscalls() {
                let f = self.kernel_fn();
                self.write_u64(Va(table.0 + nr * 8), f.0);
            }
        }
        // the tracing metadata that names them (CONFIG_FTRACE_SYSCALLS), for a few
        if self.has("syscalls_metadata") && self.profile.field("syscall_metadata", "name").is_some()
        {
            let metas = self.alloc(self.nr_syscalls() * 8);
            for (nr, name) in SYSCALL_NAMES {
                let meta = self.alloc_type("syscall_metadata");
                let text = self.alloc_str(name);
                self.set(meta, "syscall_metadata", "name", text.0);
                self.write_u64(Va(metas.0 + nr * 8), meta.0);
            }
            self.write_u64(self.symbol("syscalls_metadata"), metas.0);
        }
        for vector in 0..=255u8 {
            let f = self.kernel_fn();
            self.set_gate(vector, f, crate::kernel::idt::KERNEL_CS);
        }

        // ftrace_ops_list ends at ftrace_list_end; no kprobes, no tracepoint probes
        self.write_u64(
            self.symbol("ftrace_ops_list"),
            self.symbol("ftrace_list_end").0,
        );
        for (i, name) in TRACEPOINTS.iter().enumerate() {
            let sym = format!("__tracepoint_{name}");
            if !self.has(&sym) || !self.has("__start___tracepoints_ptrs") {
                continue;
            }
            let tp = self.symbol(&sym);
            let s = self.alloc_str(name.as_bytes());
            self.set(tp, "tracepoint", "name", s.0);
            let entry = self.symbol("__start___tracepoints_ptrs").0 + 4 * i as u64;
            let rel = tp.0.wrapping_sub(entry) as i64;
            self.write(Va(entry), &(rel as i32).to_le_bytes());
        }

        // init_net on net_namespace_list, no hooks, no proc_net
        let nets = self.symbol("net_namespace_list");
        self.list_init(nets);
        let init_net = self.symbol("init_net");
        self.list_add_tail(nets, self.field_va(init_net, "net", "list"));

        // CPU 0's perf context, no events
        if self.has("perf_cpu_context") && self.profile.types.contains_key("perf_cpu_context") {
            let list = Va(self.symbol("perf_cpu_context").0
                + self.offset("perf_cpu_context", "ctx")
                + self.offset("perf_event_context", "event_list"));
            self.list_init(list);
        }

        // n_tty and one serial driver, their operations kernel text
        if self.has("tty_ldiscs") {
            let n_tty = self.fn_table("tty_ldisc_ops");
            let name = self.alloc_str(b"n_tty");
            self.set(n_tty, "tty_ldisc_ops", "name", name.0);
            self.write_u64(self.symbol("tty_ldiscs"), n_tty.0);
        }
        if self.has("tty_drivers") {
            self.list_init(self.symbol("tty_drivers"));
            self.add_tty_driver(b"ttyS", b"serial");
        }
        for name in SEQ_OPS {
            if self.has(name) {
                let at = self.symbol(name);
                self.fill_fn_table(at, "seq_operations");
            }
        }

        // init's mount namespace: the root file system and /proc, their tables the
        // kernel's (in .rodata)
        if self.profile.types.contains_key("mnt_namespace") && self.has("proc_root_operations") {
            for (name, ty) in VFS_TABLES {
                let at = self.symbol(name);
                self.fill_fn_table(at, ty);
            }
            let ns = self.alloc_type("mnt_namespace");
            self.list_init(self.field_va(ns, "mnt_namespace", "list"));
            let nsproxy = self.alloc_type("nsproxy");
            self.set(nsproxy, "nsproxy", "mnt_ns", ns.0);
            self.set(init, "task_struct", "nsproxy", nsproxy.0);
            let root = self.dentry(b"");
            let mount = self
                .root_mount
                .expect("the root dentry makes the root mount");
            let [sops, iops, fops, aops] = [
                "ramfs_ops",
                "simple_dir_inode_operations",
                "simple_dir_operations",
                "ram_aops",
            ]
            .map(|n| self.symbol(n));
            self.mount_at(mount, root, b"/", b"rootfs", (sops, iops, fops, aops));
            let [sops, iops, fops] = [
                "proc_sops",
                "proc_root_inode_operations",
                "proc_root_operations",
            ]
            .map(|n| self.symbol(n));
            self.add_mount(b"/proc", b"proc", (sops, iops, fops, Va(0)));
        }
    }

    // ----- the profile, addresses and memory -----

    /// The profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The profile, to change (a test of a wrong profile: the memory keeps the offsets
    /// it was built with).
    pub fn profile_mut(&mut self) -> &mut Profile {
        &mut self.profile
    }

    /// The memory written so far.
    pub fn memory(&self) -> &MockMemory {
        &self.mem
    }

    /// The kernel's page-table root.
    pub fn root(&self) -> PageTableRoot {
        self.root
    }

    /// Whether the profile has the symbol `name`.
    pub fn has(&self, name: &str) -> bool {
        self.profile.symbol(name).is_some()
    }

    /// The run-time (relocated) address of the profile's symbol `name`.
    pub fn symbol(&self, name: &str) -> Va {
        Va(link(&self.profile, name) + VIRT_SHIFT)
    }

    /// The offset of `ty.field` in the profile.
    pub fn offset(&self, ty: &str, field: &str) -> u64 {
        self.profile
            .field(ty, field)
            .unwrap_or_else(|| panic!("the profile has no {ty}.{field}"))
            .offset
    }

    /// The size of `ty` in the profile.
    pub fn size_of(&self, ty: &str) -> u64 {
        self.profile
            .types
            .get(ty)
            .unwrap_or_else(|| panic!("the profile has no type {ty}"))
            .size
    }

    /// The address of `ty.field` of the object at `obj`.
    pub fn field_va(&self, obj: Va, ty: &str, field: &str) -> Va {
        Va(obj.0 + self.offset(ty, field))
    }

    /// `NR_syscalls` by the profile (the length of `trace_array.enter_syscall_files`).
    pub fn nr_syscalls(&self) -> u64 {
        self.profile
            .field("trace_array", "enter_syscall_files")
            .and_then(|f| {
                let open = f.ty.rfind('[')?;
                f.ty[open + 1..].strip_suffix(']')?.parse().ok()
            })
            .unwrap_or(NR_SYSCALLS)
    }

    /// A new function address in kernel text (each call a different one).
    pub fn kernel_fn(&mut self) -> Va {
        let text = self.symbol("_stext").0;
        let end = self.symbol("_etext").0;
        let f = text + 0x2_0000 + self.next_fn * 0x10;
        assert!(f < end, "kernel text is full");
        self.next_fn += 1;
        Va(f)
    }

    /// `size` bytes of direct-mapped memory, zeroed, 64-byte aligned.
    pub fn alloc(&mut self, size: u64) -> Va {
        let at = self.heap;
        self.heap = (at + size.max(1)).div_ceil(64) * 64;
        assert!(self.heap <= HEAP.1, "the synthetic kernel's heap is full");
        Va(PAGE_OFFSET + at)
    }

    /// A zeroed object of the profile's type `ty`.
    pub fn alloc_type(&mut self, ty: &str) -> Va {
        let size = self.size_of(ty);
        self.alloc(size)
    }

    /// A NUL-terminated copy of `s`.
    pub fn alloc_str(&mut self, s: &[u8]) -> Va {
        let at = self.alloc(s.len() as u64 + 1);
        self.write(at, s);
        at
    }

    /// Write `data` at `va`, through the kernel's page table.
    pub fn write(&mut self, va: Va, data: &[u8]) {
        let mut done = 0usize;
        while done < data.len() {
            let at = Va(va.0 + done as u64);
            let n = ((0x1000 - at.0 % 0x1000) as usize).min(data.len() - done);
            let pa = translate(&self.mem, self.root, at)
                .unwrap_or_else(|e| panic!("{at} is not mapped: {e}"))
                .pa;
            self.mem
                .write(pa, &data[done..done + n])
                .unwrap_or_else(|e| panic!("{at}: {e}"));
            done += n;
        }
    }

    /// Write a `u64` at `va`.
    pub fn write_u64(&mut self, va: Va, v: u64) {
        self.write(va, &v.to_le_bytes());
    }

    /// Write a `u32` at `va`.
    pub fn write_u32(&mut self, va: Va, v: u32) {
        self.write(va, &v.to_le_bytes());
    }

    /// The `u64` at `va`.
    pub fn read_u64(&self, va: Va) -> u64 {
        let pa = translate(&self.mem, self.root, va)
            .unwrap_or_else(|e| panic!("{va} is not mapped: {e}"))
            .pa;
        self.mem
            .read_phys_u64(pa)
            .unwrap_or_else(|e| panic!("{va}: {e}"))
    }

    /// Set the pointer (or `u64`) `ty.field` of the object at `obj`.
    pub fn set(&mut self, obj: Va, ty: &str, field: &str, v: u64) {
        self.write_u64(self.field_va(obj, ty, field), v);
    }

    /// Set the `u32` (an `int`, a uid) `ty.field` of the object at `obj`.
    pub fn set_u32(&mut self, obj: Va, ty: &str, field: &str, v: u32) {
        self.write_u32(self.field_va(obj, ty, field), v);
    }

    /// Write bytes at `ty.field` of the object at `obj`.
    pub fn write_field(&mut self, obj: Va, ty: &str, field: &str, data: &[u8]) {
        self.write(self.field_va(obj, ty, field), data);
    }

    /// The pointer `ty.field` of the object at `obj`.
    pub fn get(&self, obj: Va, ty: &str, field: &str) -> u64 {
        self.read_u64(self.field_va(obj, ty, field))
    }

    /// An empty `list_head` at `head`.
    pub fn list_init(&mut self, head: Va) {
        self.write_u64(head, head.0);
        self.write_u64(Va(head.0 + 8), head.0);
    }

    /// `list_add_tail(node, head)`.
    pub fn list_add_tail(&mut self, head: Va, node: Va) {
        let prev = self.read_u64(Va(head.0 + 8));
        self.write_u64(node, head.0);
        self.write_u64(Va(node.0 + 8), prev);
        self.write_u64(Va(prev), node.0);
        self.write_u64(Va(head.0 + 8), node.0);
    }

    /// `list_del(node)`: its neighbours are linked to each other (the node keeps its
    /// own pointers, as a rootkit's unlinked node does).
    pub fn list_del(&mut self, node: Va) {
        let next = self.read_u64(node);
        let prev = self.read_u64(Va(node.0 + 8));
        self.write_u64(Va(prev), next);
        self.write_u64(Va(next + 8), prev);
    }

    /// Copy the table of the profile's type `ty` at `from` to `to` (a rootkit's copy
    /// of a kernel table).
    pub fn copy_table(&mut self, from: Va, to: Va, ty: &str) {
        for off in (0..self.size_of(ty)).step_by(8) {
            let v = self.read_u64(Va(from.0 + off));
            self.write_u64(Va(to.0 + off), v);
        }
    }

    /// A table of the profile's type `ty` whose every `ptr fn` member points to its
    /// own kernel function.
    pub fn fn_table(&mut self, ty: &str) -> Va {
        let at = self.alloc_type(ty);
        self.fill_fn_table(at, ty);
        at
    }

    /// Point every `ptr fn` member of the `ty` at `at` to its own kernel function.
    pub fn fill_fn_table(&mut self, at: Va, ty: &str) {
        let offsets: Vec<u64> = self
            .profile
            .types
            .get(ty)
            .unwrap_or_else(|| panic!("the profile has no type {ty}"))
            .fields
            .values()
            .filter(|f| f.ty == "ptr fn")
            .map(|f| f.offset)
            .collect();
        for off in offsets {
            let f = self.kernel_fn();
            self.write_u64(Va(at.0 + off), f.0);
        }
    }

    /// Find the kernel as a detector would: banner, shifts, page table, `init_task`.
    pub fn discover(self) -> Result<Kernel<MockMemory>, KernelError> {
        Kernel::discover(self.mem, Arc::new(self.profile), &Hints::default())
    }

    /// [`SyntheticKernel::discover`] over `wrap(memory)`: for tests whose memory
    /// changes after discovery, or that record what is read.
    pub fn discover_over<W: PhysicalMemory>(
        self,
        wrap: impl FnOnce(MockMemory) -> W,
    ) -> Result<Kernel<W>, KernelError> {
        Kernel::discover(wrap(self.mem), Arc::new(self.profile), &Hints::default())
    }

    // ----- tasks and credentials -----

    /// A `struct cred` with every id `uid` and the `user_struct` of `uid`.
    pub fn new_cred(&mut self, uid: u32) -> Va {
        let cred = self.alloc_type("cred");
        self.fill_cred(cred, uid);
        cred
    }

    fn fill_cred(&mut self, cred: Va, uid: u32) {
        for f in [
            "uid", "gid", "suid", "sgid", "euid", "egid", "fsuid", "fsgid",
        ] {
            self.set_u32(cred, "cred", f, uid);
        }
        self.set_u32(cred, "cred", "usage", 1);
        let user = self.alloc_type("user_struct");
        self.set_u32(user, "user_struct", "uid", uid);
        self.set(cred, "cred", "user", user.0);
    }

    /// A user process (thread-group leader) with pid `pid`, on the tasks list and in
    /// the pid namespace, with its own credentials of `uid`.
    /// It has an empty file table, as every live process has one.
    pub fn add_process(&mut self, pid: u32, comm: &[u8], uid: u32) -> SynthTask {
        let cred = self.new_cred(uid);
        let t = self.leader(pid, comm, 0, cred);
        self.files_table(t.task);
        t
    }

    /// A kernel thread (PF_KTHREAD, `init_cred`) with pid `pid`, started by
    /// `kthread_create`: its `struct kthread` (when the profile has the type) runs a
    /// function of kernel text.
    pub fn add_kthread(&mut self, pid: u32, comm: &[u8]) -> SynthTask {
        let cred = self.symbol("init_cred");
        let t = self.leader(pid, comm, PF_KTHREAD, cred);
        if self.profile.types.contains_key("kthread") {
            let kthread = self.alloc_type("kthread");
            let f = self.kernel_fn();
            self.set(kthread, "kthread", "threadfn", f.0);
            let at = self.kthread_pointer();
            self.set(t.task, "task_struct", at, kthread.0);
        }
        t
    }

    /// Where a task points at its `struct kthread`: `worker_private` (5.17 on), else
    /// `set_child_tid`.
    fn kthread_pointer(&self) -> &'static str {
        if self
            .profile
            .field("task_struct", "worker_private")
            .is_some()
        {
            "worker_private"
        } else {
            "set_child_tid"
        }
    }

    /// Make the kernel thread `t` run `threadfn` (its `struct kthread`'s), named
    /// `full_name` when given.
    pub fn set_threadfn(&mut self, t: &SynthTask, threadfn: Va, full_name: Option<&[u8]>) {
        let kthread = Va(self.get(t.task, "task_struct", self.kthread_pointer()));
        self.set(kthread, "kthread", "threadfn", threadfn.0);
        if let Some(name) = full_name {
            let s = self.alloc_str(name);
            self.set(kthread, "kthread", "full_name", s.0);
        }
    }

    fn leader(&mut self, pid: u32, comm: &[u8], flags: u32, cred: Va) -> SynthTask {
        let signal = self.alloc_type("signal_struct");
        self.list_init(self.field_va(signal, "signal_struct", "thread_head"));
        let t = self.task(pid, pid, comm, flags, cred, signal);
        self.set(t.task, "task_struct", "group_leader", t.task.0);
        let init = self.symbol("init_task");
        self.list_add_tail(
            self.field_va(init, "task_struct", "tasks"),
            self.field_va(t.task, "task_struct", "tasks"),
        );
        t
    }

    /// Another thread of `leader`'s process, with thread id `tid`: on its thread list
    /// and in the pid namespace.
    pub fn add_thread(&mut self, leader: &SynthTask, tid: u32, comm: &[u8]) -> SynthTask {
        let flags = self.read_u64(self.field_va(leader.task, "task_struct", "flags")) as u32;
        let t = self.task(tid, leader.tgid, comm, flags, leader.cred, leader.signal);
        self.set(t.task, "task_struct", "group_leader", leader.task.0);
        t
    }

    fn task(
        &mut self,
        pid: u32,
        tgid: u32,
        comm: &[u8],
        flags: u32,
        cred: Va,
        signal: Va,
    ) -> SynthTask {
        let task = self.alloc_type("task_struct");
        let init = self.symbol("init_task");
        self.set_u32(task, "task_struct", "pid", pid);
        self.set_u32(task, "task_struct", "tgid", tgid);
        self.set_u32(task, "task_struct", "flags", flags);
        let mut name = [0u8; 16];
        let n = comm.len().min(15);
        name[..n].copy_from_slice(&comm[..n]);
        self.write_field(task, "task_struct", "comm", &name);
        self.set(task, "task_struct", "real_parent", init.0);
        self.set(task, "task_struct", "parent", init.0);
        self.set(task, "task_struct", "real_cred", cred.0);
        self.set(task, "task_struct", "cred", cred.0);
        self.set(task, "task_struct", "signal", signal.0);
        self.set_u32(task, "task_struct", "start_time", pid * 1000);
        // asleep (TASK_INTERRUPTIBLE), as most tasks are: enqueue and set_running wake it
        self.set_u32(task, "task_struct", "__state", 1);
        self.list_add_tail(
            self.field_va(signal, "signal_struct", "thread_head"),
            self.field_va(task, "task_struct", "thread_node"),
        );
        let threads = self.read_u64(self.field_va(signal, "signal_struct", "nr_threads")) as u32;
        self.set_u32(signal, "signal_struct", "nr_threads", threads + 1);
        let struct_pid = self.attach_pid(task, pid);
        SynthTask {
            task,
            pid,
            tgid,
            struct_pid,
            cred,
            signal,
        }
    }

    /// A `struct pid` numbered `nr` for `task`, filed in the pid namespace under `nr`.
    pub fn attach_pid(&mut self, task: Va, nr: u32) -> Va {
        let pid = self.alloc_type("pid");
        let numbers = self.offset("pid", "numbers") + self.offset("upid", "nr");
        self.write_u32(Va(pid.0 + numbers), nr);
        let links = self.field_va(task, "task_struct", "pid_links");
        let first = self.field_va(pid, "pid", "tasks");
        self.write_u64(first, links.0);
        self.write_u64(Va(links.0 + self.offset("hlist_node", "pprev")), first.0);
        self.set(task, "task_struct", "thread_pid", pid.0);
        self.idr_set(u64::from(nr), pid.0);
        pid
    }

    /// Set entry `index` of `init_pid_ns.idr` (pids below 4096); 0 removes it.
    pub fn idr_set(&mut self, index: u64, entry: u64) {
        let ns = self.symbol("init_pid_ns");
        let idr = self.field_va(ns, "pid_namespace", "idr");
        self.idr_store(idr, index, entry);
    }

    /// Set entry `index` of the `struct idr` at `idr` (an XArray of two levels:
    /// indices below 4096); 0 removes it.
    pub fn idr_store(&mut self, idr: Va, index: u64, entry: u64) {
        self.xarray_store(Va(idr.0 + self.offset("idr", "idr_rt")), index, entry);
    }

    /// Set entry `index` of the `struct xarray` at `xa` (two levels: indices below
    /// 4096); 0 removes it.
    pub fn xarray_store(&mut self, xa: Va, index: u64, entry: u64) {
        assert!(
            index < 4096,
            "the synthetic XArrays hold indices below 4096"
        );
        let head = Va(xa.0 + self.offset("xarray", "xa_head"));
        let slots = self.offset("xa_node", "slots");
        let shift = self.offset("xa_node", "shift");
        let mut root = self.read_u64(head);
        if root == 0 {
            let node = self.alloc_type("xa_node");
            self.write(Va(node.0 + shift), &[6]);
            root = node.0 + 2;
            self.write_u64(head, root);
        }
        let root = root - 2;
        let slot = Va(root + slots + (index >> 6) * 8);
        let mut leaf = self.read_u64(slot);
        if leaf == 0 {
            leaf = self.alloc_type("xa_node").0 + 2;
            self.write_u64(slot, leaf);
        }
        self.write_u64(Va(leaf - 2 + slots + (index & 63) * 8), entry);
    }

    /// Unlink `task` from the tasks list (the DKOM way to hide a process).
    pub fn unlink_task(&mut self, task: &SynthTask) {
        self.list_del(self.field_va(task.task, "task_struct", "tasks"));
    }

    /// Unlink `task` from its process's thread list.
    pub fn unlink_thread(&mut self, task: &SynthTask) {
        self.list_del(self.field_va(task.task, "task_struct", "thread_node"));
    }

    /// Queue `task` on CPU 0's fair run queue (as the rightmost node of its tree).
    pub fn enqueue(&mut self, task: &SynthTask) {
        let mut link = Va(self.symbol("runqueues").0
            + self.offset("rq", "cfs")
            + self.offset("cfs_rq", "tasks_timeline"));
        let right = self.offset("rb_node", "rb_right");
        while self.read_u64(link) != 0 {
            link = Va(self.read_u64(link) + right);
        }
        let node = self.field_va(task.task, "task_struct", "se").0
            + self.offset("sched_entity", "run_node");
        self.write_u64(link, node);
        self.set_u32(task.task, "task_struct", "__state", 0);
    }

    /// Queue `task` on CPU 0's real-time list of priority `prio` (below 100).
    pub fn enqueue_rt(&mut self, task: &SynthTask, prio: u64) {
        let head = Va(self.symbol("runqueues").0
            + self.offset("rq", "rt")
            + self.offset("rt_rq", "active")
            + self.offset("rt_prio_array", "queue")
            + 16 * prio);
        let node = Va(self.field_va(task.task, "task_struct", "rt").0
            + self.offset("sched_rt_entity", "run_list"));
        self.list_add_tail(head, node);
        self.set_u32(task.task, "task_struct", "__state", 0);
    }

    /// Set the bits `set` and clear the bits `clear` of the leaf entry that maps `va`
    /// in the kernel's page tables (a page made writable, executable, ...).
    pub fn set_pte_bits(&mut self, va: Va, set: u64, clear: u64) {
        let mut table = self.root.table.0;
        for shift in [39u64, 30, 21, 12] {
            let at = Pa(table + 8 * ((va.0 >> shift) & 511));
            let e = self.mem.read_phys_u64(at).expect("a page-table entry");
            assert!(e & 1 != 0, "{va} is not mapped");
            if shift == 12 || e & 0x80 != 0 {
                self.mem
                    .write_u64(at, (e | set) & !clear)
                    .expect("write the entry");
                return;
            }
            table = e & crate::arch::x86_64::ADDR_MASK;
        }
    }

    /// Make `task` what CPU 0 runs.
    pub fn set_running(&mut self, task: Va) {
        self.write_u64(self.symbol("current_task"), task.0);
        self.set_u32(task, "task_struct", "__state", 0);
    }

    // ----- files and user memory -----

    /// `n` zeroed, page-aligned pages of physical memory.
    pub fn alloc_pages(&mut self, n: u64) -> Pa {
        self.heap = self.heap.div_ceil(0x1000) * 0x1000;
        let at = self.alloc(n * 0x1000);
        Pa(at.0 - PAGE_OFFSET)
    }

    /// The dentry of the absolute `path` on the root file system (made on first use,
    /// its parents too).
    pub fn dentry(&mut self, path: &[u8]) -> Va {
        let path = path.strip_suffix(b"/").unwrap_or(path);
        if let Some(&d) = self.dentries.get(path) {
            return d;
        }
        let d = self.alloc_type("dentry");
        let name_at = self.offset("dentry", "d_name") + self.offset("qstr", "name");
        self.list_init(self.field_va(d, "dentry", "d_subdirs"));
        if path.is_empty() {
            // the root: its own parent, the root of the root mount
            let s = self.alloc_str(b"/");
            self.write_u64(Va(d.0 + name_at), s.0);
            self.root_mount = Some(self.lone_mount(d));
        } else {
            let cut = path.iter().rposition(|&b| b == b'/').unwrap_or(0);
            let parent = self.dentry(&path[..cut]);
            let s = self.alloc_str(&path[cut + 1..]);
            self.write_u64(Va(d.0 + name_at), s.0);
            self.set(d, "dentry", "d_parent", parent.0);
            self.list_add_tail(
                self.field_va(parent, "dentry", "d_subdirs"),
                self.field_va(d, "dentry", "d_child"),
            );
            // hashed (in the dentry cache): any non-null `pprev`
            let hash = self.field_va(d, "dentry", "d_hash");
            self.set(hash, "hlist_bl_node", "pprev", parent.0);
        }
        self.dentries.insert(path.to_vec(), d);
        d
    }

    /// Unlink the file at the absolute `path` while it stays open (its dentry
    /// unhashed, as `d_delete` leaves a dentry still in use).
    pub fn unlink(&mut self, path: &[u8]) {
        let d = self.dentry(path);
        let hash = self.field_va(d, "dentry", "d_hash");
        self.set(hash, "hlist_bl_node", "pprev", 0);
    }

    /// An open `struct file` of the absolute `path` (with its own inode).
    pub fn new_file(&mut self, path: &[u8]) -> Va {
        let dentry = self.dentry(path);
        let mount = self
            .root_mount
            .expect("making a dentry makes the root mount");
        self.file_at(mount, dentry)
    }

    /// A file of `memfd_create(name)`: a dentry `memfd:NAME` of its own (its own
    /// parent) on an internal mount, named by `simple_dname` as `alloc_file_pseudo`
    /// leaves it.
    pub fn memfd_file(&mut self, name: &[u8]) -> Va {
        let shm = match self.shm_mount {
            Some(m) => m,
            None => {
                let root = self.alloc_type("dentry");
                let m = self.lone_mount(root);
                self.shm_mount = Some(m);
                m
            }
        };
        let ops = self.alloc_type("dentry_operations");
        let simple = self.symbol("simple_dname");
        self.set(ops, "dentry_operations", "d_dname", simple.0);
        let d = self.alloc_type("dentry");
        let mut full = b"memfd:".to_vec();
        full.extend_from_slice(name);
        let s = self.alloc_str(&full);
        let name_at = self.offset("dentry", "d_name") + self.offset("qstr", "name");
        self.write_u64(Va(d.0 + name_at), s.0);
        self.set(d, "dentry", "d_parent", d.0);
        self.set(d, "dentry", "d_op", ops.0);
        self.file_at(shm, d)
    }

    /// Give `task` the root file system as its root (`fs->root`).
    pub fn set_fs_root(&mut self, task: &SynthTask) {
        let root = self.dentry(b"/");
        let mount = self
            .root_mount
            .expect("making a dentry makes the root mount");
        let fs = self.alloc_type("fs_struct");
        let path = self.field_va(fs, "fs_struct", "root");
        self.set(path, "path", "mnt", self.field_va(mount, "mount", "mnt").0);
        self.set(path, "path", "dentry", root.0);
        self.set(task.task, "task_struct", "fs", fs.0);
    }

    /// A regular file at the absolute `path` whose data `content` is in the page
    /// cache as `pages` says, page by page (one folio of `PageState::Head` and the
    /// `PageState::Tail`s after it). Its `struct page`s are the only ones
    /// `vmemmap_base` is made to index (one cached file per kernel). Returns the inode.
    pub fn cache_file(&mut self, path: &[u8], content: &[u8], pages: &[PageState]) -> Va {
        let d = self.dentry(path);
        let inode = self.alloc_type("inode");
        self.set(inode, "inode", "i_mode", 0o100_644);
        self.set(inode, "inode", "i_size", content.len() as u64);
        self.set(d, "dentry", "d_inode", inode.0);
        let mapping = self.alloc_type("address_space");
        self.set(inode, "inode", "i_mapping", mapping.0);
        let n = pages.len() as u64;
        let frames = self.alloc_pages(n.max(1));
        let psize = self.size_of("page");
        let structs = self.alloc(psize * n.max(1));
        let vmemmap = structs.0 - (frames.0 >> 12) * psize;
        self.write_u64(self.symbol("vmemmap_base"), vmemmap);
        let xa = self.field_va(mapping, "address_space", "i_pages");
        let mut head = 0;
        let mut cached = 0;
        for (i, state) in pages.iter().enumerate() {
            let i = i as u64;
            let page = Va(structs.0 + i * psize);
            let start = (i * 0x1000) as usize;
            let chunk = &content[start.min(content.len())..(start + 0x1000).min(content.len())];
            match state {
                PageState::Missing => continue,
                PageState::Head => {
                    head = page.0;
                    self.set(page, "page", "mapping", mapping.0);
                    self.xarray_store(xa, i, page.0);
                }
                PageState::Tail => self.set(page, "page", "compound_head", head + 1),
            }
            cached += 1;
            self.write(Va(PAGE_OFFSET + frames.0 + i * 0x1000), chunk);
        }
        self.set(mapping, "address_space", "nrpages", cached);
        inode
    }

    /// A file of a pseudo file system whose super block has the magic `magic` (sockfs,
    /// pipefs, the anonymous-inode file system), its dentry named `name` and its own
    /// parent, as `alloc_file_pseudo` leaves it.
    pub fn pseudo_file(&mut self, magic: u64, name: &[u8]) -> Va {
        let root = self.alloc_type("dentry");
        let m = self.lone_mount(root);
        let d = self.alloc_type("dentry");
        let s = self.alloc_str(name);
        let name_at = self.offset("dentry", "d_name") + self.offset("qstr", "name");
        self.write_u64(Va(d.0 + name_at), s.0);
        self.set(d, "dentry", "d_parent", d.0);
        let file = self.file_at(m, d);
        let inode = self.get(file, "file", "f_inode");
        let sb = self.get(Va(inode), "inode", "i_sb");
        self.set(Va(sb), "super_block", "s_magic", magic);
        // an in-memory file system's anonymous device (major 0), one per super block
        let minor = ((sb >> 6) & 0xf_ffff) as u32;
        self.set_u32(Va(sb), "super_block", "s_dev", minor);
        file
    }

    /// A mount of its own (its own parent, as the root mount and internal mounts are)
    /// whose root is `root`, made its own parent.
    fn lone_mount(&mut self, root: Va) -> Va {
        self.set(root, "dentry", "d_parent", root.0);
        let m = self.alloc_type("mount");
        self.set(m, "mount", "mnt_parent", m.0);
        self.set(m, "mount", "mnt_mountpoint", root.0);
        let mnt = self.field_va(m, "mount", "mnt");
        self.set(mnt, "vfsmount", "mnt_root", root.0);
        m
    }

    /// A `struct file` of `dentry` in the mount `mount`, with its own inode on the
    /// mount's super block.
    fn file_at(&mut self, mount: Va, dentry: Va) -> Va {
        let file = self.alloc_type("file");
        let f_path = self.field_va(file, "file", "f_path");
        self.set(
            f_path,
            "path",
            "mnt",
            self.field_va(mount, "mount", "mnt").0,
        );
        self.set(f_path, "path", "dentry", dentry.0);
        let inode = self.alloc_type("inode");
        // the files of a mount share its super block (made with the first)
        let mnt = self.field_va(mount, "mount", "mnt");
        let sb = match self.get(mnt, "vfsmount", "mnt_sb") {
            0 => {
                let sb = self.alloc_type("super_block");
                self.set_u32(sb, "super_block", "s_dev", 0x0800_0001);
                self.set(mnt, "vfsmount", "mnt_sb", sb.0);
                sb
            }
            sb => {
                if self.get(Va(sb), "super_block", "s_dev") & 0xffff_ffff == 0 {
                    self.set_u32(Va(sb), "super_block", "s_dev", 0x0800_0001);
                }
                Va(sb)
            }
        };
        self.set(inode, "inode", "i_sb", sb.0);
        self.set(inode, "inode", "i_ino", 1000 + self.dentries.len() as u64);
        self.set(file, "file", "f_inode", inode.0);
        file
    }

    /// Give `task` a user address space as `execve(execfn, argv)` of the executable
    /// `exe` leaves it: its own page table, the arguments and the executed file name
    /// in a page at [`ARGS_PAGE`], `exe_file`; no mappings yet ([`Self::add_vma`]).
    /// Returns the `mm_struct`.
    pub fn exec(&mut self, task: &SynthTask, exe: &[u8], argv: &[&[u8]], execfn: &[u8]) -> Va {
        let file = self.new_file(exe);
        self.exec_file(task, file, argv, execfn)
    }

    /// [`Self::exec`] of an open `struct file` (e.g. [`Self::memfd_file`], as
    /// `fexecve` runs it).
    pub fn exec_file(&mut self, task: &SynthTask, file: Va, argv: &[&[u8]], execfn: &[u8]) -> Va {
        self.exec_file_env(task, file, argv, &[], execfn)
    }

    /// [`Self::exec`] with the environment `env` (its strings between the arguments
    /// and the executed file name, as `execve` lays them out).
    pub fn exec_env(
        &mut self,
        task: &SynthTask,
        exe: &[u8],
        argv: &[&[u8]],
        env: &[&[u8]],
        execfn: &[u8],
    ) -> Va {
        let file = self.new_file(exe);
        self.exec_file_env(task, file, argv, env, execfn)
    }

    fn exec_file_env(
        &mut self,
        task: &SynthTask,
        file: Va,
        argv: &[&[u8]],
        env: &[&[u8]],
        execfn: &[u8],
    ) -> Va {
        let mm = self.alloc_type("mm_struct");
        let tables = self.alloc_pages(16);
        let mut pt = PageTableBuilder::new(
            &mut self.mem,
            PagingMode::FourLevel,
            PhysRange::new(tables.0, tables.0 + 16 * 0x1000),
        )
        .expect("room for a user page table");
        let page = self.alloc_pages(1);
        let user = crate::arch::x86_64::PTE_USER | crate::arch::x86_64::PTE_WRITABLE;
        pt.map(&mut self.mem, Va(ARGS_PAGE), page, PageSize::Size4K, user)
            .expect("map the arguments");
        let mut strings: Vec<u8> = Vec::new();
        for a in argv {
            strings.extend_from_slice(a);
            strings.push(0);
        }
        let arg_end = ARGS_PAGE + strings.len() as u64;
        for e in env {
            strings.extend_from_slice(e);
            strings.push(0);
        }
        let env_end = ARGS_PAGE + strings.len() as u64;
        strings.extend_from_slice(execfn);
        strings.push(0);
        self.write(Va(PAGE_OFFSET + page.0), &strings);
        self.set(mm, "mm_struct", "pgd", PAGE_OFFSET + pt.root().table.0);
        self.set(mm, "mm_struct", "arg_start", ARGS_PAGE);
        self.set(mm, "mm_struct", "arg_end", arg_end);
        self.set(mm, "mm_struct", "env_start", arg_end);
        self.set(mm, "mm_struct", "env_end", env_end);
        // argc and the argument pointers lie below the strings
        self.set(mm, "mm_struct", "start_stack", ARGS_PAGE - 0x100);
        self.set(mm, "mm_struct", "exe_file", file.0);
        self.set(task.task, "task_struct", "mm", mm.0);
        self.set(task.task, "task_struct", "active_mm", mm.0);
        self.user_tables.insert(mm.0, pt);
        mm
    }

    /// Map `start..end` with `VM_*` `flags` in `mm` (in address order): of
    /// the file `file`, or anonymous; with `bytes` at `start` in memory, or not
    /// resident. Returns the `vm_area_struct`.
    pub fn add_vma(
        &mut self,
        mm: Va,
        range: (u64, u64),
        flags: u64,
        file: Option<&[u8]>,
        bytes: Option<&[u8]>,
    ) -> Va {
        let vma = self.alloc_type("vm_area_struct");
        self.set(vma, "vm_area_struct", "vm_start", range.0);
        self.set(vma, "vm_area_struct", "vm_end", range.1);
        self.set(vma, "vm_area_struct", "vm_flags", flags);
        self.set(vma, "vm_area_struct", "vm_mm", mm.0);
        if let Some(path) = file {
            let f = self.new_file(path);
            self.set(vma, "vm_area_struct", "vm_file", f.0);
        }
        self.link_vma(mm, vma, range, bytes);
        vma
    }

    /// [`Self::add_vma`] of an open `struct file` (e.g. [`Self::memfd_file`]).
    pub fn add_file_vma(&mut self, mm: Va, range: (u64, u64), flags: u64, file: Va) -> Va {
        let vma = self.alloc_type("vm_area_struct");
        self.set(vma, "vm_area_struct", "vm_start", range.0);
        self.set(vma, "vm_area_struct", "vm_end", range.1);
        self.set(vma, "vm_area_struct", "vm_flags", flags);
        self.set(vma, "vm_area_struct", "vm_mm", mm.0);
        self.set(vma, "vm_area_struct", "vm_file", file.0);
        self.link_vma(mm, vma, range, None);
        vma
    }

    /// Map `pages` pages of user memory at `start` in `mm`, each filled with `fill`
    /// (no mapping is recorded: only the page table and the memory).
    pub fn map_user(&mut self, mm: Va, start: u64, pages: u64, fill: u8) {
        let at = self.alloc_pages(pages);
        self.write(
            Va(PAGE_OFFSET + at.0),
            &vec![fill; (pages * 0x1000) as usize],
        );
        let mut pt = self.user_tables.remove(&mm.0).expect("exec made this mm");
        let user = crate::arch::x86_64::PTE_USER;
        for i in 0..pages {
            pt.map(
                &mut self.mem,
                Va(start + i * 0x1000),
                Pa(at.0 + i * 0x1000),
                PageSize::Size4K,
                user,
            )
            .expect("map a user page");
        }
        self.user_tables.insert(mm.0, pt);
    }

    /// Link `vma` into `mm`'s mappings in address order (as the kernel keeps them),
    /// with `bytes` at its start.
    fn link_vma(&mut self, mm: Va, vma: Va, range: (u64, u64), bytes: Option<&[u8]>) {
        let mut link = self.field_va(mm, "mm_struct", "mmap");
        loop {
            let next = self.read_u64(link);
            if next == 0 || self.get(Va(next), "vm_area_struct", "vm_start") > range.0 {
                break;
            }
            link = self.field_va(Va(next), "vm_area_struct", "vm_next");
        }
        let next = self.read_u64(link);
        self.set(vma, "vm_area_struct", "vm_next", next);
        self.write_u64(link, vma.0);
        let count = self.read_u64(self.field_va(mm, "mm_struct", "map_count")) as u32;
        self.set_u32(mm, "mm_struct", "map_count", count + 1);
        if let Some(bytes) = bytes {
            let page = self.alloc_pages(1);
            self.write(Va(PAGE_OFFSET + page.0), bytes);
            let mut pt = self.user_tables.remove(&mm.0).expect("exec made this mm");
            let user = crate::arch::x86_64::PTE_USER;
            pt.map(&mut self.mem, Va(range.0), page, PageSize::Size4K, user)
                .expect("map the mapping's first page");
            self.user_tables.insert(mm.0, pt);
        }
    }

    /// Map `start..end` of `mm`'s executable (its `exe_file`, from file offset 0),
    /// as `execve` maps an ELF's first segment.
    pub fn map_exe(&mut self, mm: Va, range: (u64, u64), flags: u64, bytes: Option<&[u8]>) -> Va {
        let vma = self.add_vma(mm, range, flags, None, bytes);
        let exe = self.get(mm, "mm_struct", "exe_file");
        self.set(vma, "vm_area_struct", "vm_file", exe);
        vma
    }

    /// The main thread's stack (`VM_GROWSDOWN`, holding `start_stack` and the
    /// arguments at [`ARGS_PAGE`]) and above it the vDSO (a special mapping named
    /// `[vdso]`), as `execve` leaves them.
    pub fn add_stack_and_vdso(&mut self, mm: Va) {
        use crate::kernel::vma::{VM_GROWSDOWN, VM_READ, VM_WRITE};
        self.add_vma(
            mm,
            (ARGS_PAGE - 0x2_0000, ARGS_PAGE + 0x1000),
            VM_READ | VM_WRITE | VM_GROWSDOWN,
            None,
            None,
        );
        let vdso = self.add_vma(
            mm,
            (ARGS_PAGE + 0x1_0000, ARGS_PAGE + 0x1_2000),
            crate::kernel::vma::VM_READ | crate::kernel::vma::VM_EXEC,
            None,
            None,
        );
        let special = self.alloc_type("vm_special_mapping");
        let name = self.alloc_str(b"[vdso]");
        self.set(special, "vm_special_mapping", "name", name.0);
        let ops = self.symbol("special_mapping_vmops");
        self.set(vdso, "vm_area_struct", "vm_ops", ops.0);
        self.set(vdso, "vm_area_struct", "vm_private_data", special.0);
    }

    // ----- mounts and open files -----

    /// Mount a file system named `fs` (a new super block and root inode with the
    /// tables `s_op`, `i_op`, `i_fop`, `a_ops`; a null `a_ops` leaves the inode
    /// without a mapping) at the absolute path `at` of the root file system, in init's
    /// mount namespace; returns the `struct mount`.
    pub fn add_mount(&mut self, at: &[u8], fs: &[u8], tables: (Va, Va, Va, Va)) -> Va {
        let mountpoint = self.dentry(at);
        let root = self.alloc_type("dentry");
        let name_at = self.offset("dentry", "d_name") + self.offset("qstr", "name");
        let s = self.alloc_str(b"/");
        self.write_u64(Va(root.0 + name_at), s.0);
        self.set(root, "dentry", "d_parent", root.0);
        let m = self.alloc_type("mount");
        let parent = self.root_mount.expect("the root mount is made first");
        self.set(m, "mount", "mnt_parent", parent.0);
        self.set(m, "mount", "mnt_mountpoint", mountpoint.0);
        self.mount_at(m, root, at, fs, tables);
        m
    }

    /// Make `mount` a mount of a new file system named `fs` whose root is `root`, at
    /// `at`, on init's mount list.
    fn mount_at(&mut self, mount: Va, root: Va, at: &[u8], fs: &[u8], tables: (Va, Va, Va, Va)) {
        let (s_op, i_op, i_fop, a_ops) = tables;
        let fs_type = self.alloc_type("file_system_type");
        let name = self.alloc_str(fs);
        self.set(fs_type, "file_system_type", "name", name.0);
        let sb = self.alloc_type("super_block");
        self.set(sb, "super_block", "s_type", fs_type.0);
        self.set(sb, "super_block", "s_op", s_op.0);
        let inode = self.alloc_type("inode");
        self.set(inode, "inode", "i_mode", 0o040_755);
        self.set(inode, "inode", "i_sb", sb.0);
        self.set(inode, "inode", "i_op", i_op.0);
        self.set(inode, "inode", "i_fop", i_fop.0);
        if a_ops.0 != 0 {
            let mapping = self.alloc_type("address_space");
            self.set(mapping, "address_space", "a_ops", a_ops.0);
            self.set(inode, "inode", "i_mapping", mapping.0);
        }
        self.set(root, "dentry", "d_inode", inode.0);
        let mnt = self.field_va(mount, "mount", "mnt");
        self.set(mnt, "vfsmount", "mnt_root", root.0);
        self.set(mnt, "vfsmount", "mnt_sb", sb.0);
        let nsproxy = self.get(self.symbol("init_task"), "task_struct", "nsproxy");
        let ns = self.get(Va(nsproxy), "nsproxy", "mnt_ns");
        self.list_add_tail(
            self.field_va(Va(ns), "mnt_namespace", "list"),
            self.field_va(mount, "mount", "mnt_list"),
        );
        self.mounts.insert(at.to_vec(), mount);
    }

    /// The `struct mount` mounted at `at`.
    pub fn mount(&self, at: &[u8]) -> Va {
        self.mounts[at]
    }

    /// The root inode of the file system mounted at `at`.
    pub fn mount_root_inode(&self, at: &[u8]) -> Va {
        let mnt = self.field_va(self.mount(at), "mount", "mnt");
        let root = self.get(mnt, "vfsmount", "mnt_root");
        Va(self.get(Va(root), "dentry", "d_inode"))
    }

    /// Open `file` as descriptor `fd` of `task` (a file table of 64 descriptors is made
    /// on first use).
    pub fn open_fd(&mut self, task: &SynthTask, fd: u32, file: Va) {
        assert!(fd < 64, "the synthetic file table has 64 descriptors");
        let files = self.files_table(task.task);
        let fdt = self.get(Va(files), "files_struct", "fdt");
        let array = self.get(Va(fdt), "fdtable", "fd");
        self.write_u64(Va(array + u64::from(fd) * 8), file.0);
    }

    /// `task`'s `files_struct`, made with an empty table of 64 descriptors when it has
    /// none.
    fn files_table(&mut self, task: Va) -> u64 {
        let files = self.get(task, "task_struct", "files");
        if files != 0 {
            return files;
        }
        let f = self.alloc_type("files_struct");
        let fdt = self.alloc_type("fdtable");
        let array = self.alloc(64 * 8);
        self.set_u32(fdt, "fdtable", "max_fds", 64);
        self.set(fdt, "fdtable", "fd", array.0);
        self.set(f, "files_struct", "fdt", fdt.0);
        self.set(task, "task_struct", "files", f.0);
        f.0
    }

    /// Open a socket of `family`, `sock_type` and `protocol` (`sk_protocol` as the
    /// kernel stores it) in `state` as descriptor `fd` of `task`: a socket file (its
    /// `f_op` `socket_file_ops`, inode number `ino`), its `struct socket` and a `struct
    /// sock` the size of the family's own (`unix_sock`, `packet_sock`, `netlink_sock`).
    /// Returns the `sock`.
    pub fn add_socket(
        &mut self,
        task: &SynthTask,
        fd: u32,
        (family, sock_type, protocol, state): (u16, u16, u16, u8),
        ino: u64,
    ) -> Va {
        let file = self.alloc_type("file");
        let ops = self.symbol("socket_file_ops");
        self.set(file, "file", "f_op", ops.0);
        let inode = self.alloc_type("inode");
        self.set(inode, "inode", "i_ino", ino);
        self.set(file, "file", "f_inode", inode.0);
        let socket = self.alloc_type("socket");
        self.set(file, "file", "private_data", socket.0);
        let sk = self.alloc_type(match family {
            1 => "unix_sock",
            16 => "netlink_sock",
            17 => "packet_sock",
            _ => "sock",
        });
        self.set(socket, "socket", "sk", sk.0);
        let common = self.field_va(sk, "sock", "__sk_common");
        self.write_field(common, "sock_common", "skc_family", &family.to_le_bytes());
        self.write_field(common, "sock_common", "skc_state", &[state]);
        self.write_field(sk, "sock", "sk_type", &sock_type.to_le_bytes());
        self.write_field(sk, "sock", "sk_protocol", &protocol.to_le_bytes());
        self.open_fd(task, fd, file);
        sk
    }

    /// Bind the unix socket `sk` to `name` (a path, or an abstract name starting with
    /// a 0 byte), as `unix_bind` leaves it: `len` counts `sun_family` and, for a path,
    /// its NUL.
    pub fn bind_unix(&mut self, sk: Va, name: &[u8]) {
        let path = name.first().is_some_and(|&b| b != 0);
        let len = 2 + name.len() + usize::from(path);
        let addr = self.alloc(8 + 2 + 110);
        self.set_u32(addr, "unix_address", "len", len as u32);
        let at = self.field_va(addr, "unix_address", "name");
        self.write(at, &1u16.to_le_bytes());
        self.write(Va(at.0 + 2), name);
        self.set(sk, "unix_sock", "addr", addr.0);
    }

    /// Attach the classic BPF program `insns` (8 bytes each, as `struct sock_filter`)
    /// to `sk` as `SO_ATTACH_FILTER` leaves it: an `sk_filter` whose `bpf_prog` keeps
    /// the original in `orig_prog`. `len` is what `sock_fprog_kern.len` says. Returns
    /// the `bpf_prog`.
    pub fn attach_cbpf(&mut self, sk: Va, insns: &[[u8; 8]], len: u16) -> Va {
        let prog = self.alloc_type("bpf_prog");
        self.set_u32(prog, "bpf_prog", "len", u32::from(len) + 2);
        let orig = self.alloc_type("sock_fprog_kern");
        let code = self.alloc(insns.len().max(1) as u64 * 8);
        self.write(code, &insns.concat());
        self.write_field(orig, "sock_fprog_kern", "len", &len.to_le_bytes());
        self.set(orig, "sock_fprog_kern", "filter", code.0);
        self.set(prog, "bpf_prog", "orig_prog", orig.0);
        self.attach_prog(sk, prog);
        prog
    }

    /// Attach the loaded BPF program `prog` ([`Self::add_bpf_prog`]) to `sk` as
    /// `SO_ATTACH_BPF` does.
    pub fn attach_prog(&mut self, sk: Va, prog: Va) {
        let f = self.alloc_type("sk_filter");
        self.set(f, "sk_filter", "prog", prog.0);
        self.set(sk, "sock", "sk_filter", f.0);
    }

    // ----- modules -----

    /// A live module named `name` with `core_size` bytes of code in the module area,
    /// on the `modules` list and with its kobject in `module_kset`.
    pub fn add_module(&mut self, name: &[u8], core_size: u32) -> SynthModule {
        let m = self.alloc_type("module");
        let mut n = vec![0u8; 56];
        let len = name.len().min(55);
        n[..len].copy_from_slice(&name[..len]);
        self.write_field(m, "module", "name", &n);
        let core = ["mem", "core_layout"]
            .into_iter()
            .find_map(|f| self.profile.field("module", f))
            .map(|f| f.offset)
            .expect("the profile has module.mem or module.core_layout");
        let core_ty = if self.profile.field("module", "mem").is_some() {
            "module_memory"
        } else {
            "module_layout"
        };
        // its memory, readable (tables a test puts there are read)
        let base = self.module_memory(core_size, &[]);
        let (b, s) = (self.offset(core_ty, "base"), self.offset(core_ty, "size"));
        self.write_u64(Va(m.0 + core + b), base.0);
        self.write_u32(Va(m.0 + core + s), core_size);
        self.list_add_tail(self.symbol("modules"), self.field_va(m, "module", "list"));
        let synth = SynthModule {
            addr: m,
            kobj: Va(0),
            core_base: base,
            core_size,
        };
        if self.has("mod_tree") && core_ty == "module_memory" {
            self.add_to_mod_tree(&synth);
        }
        let mk = self.field_va(m, "module", "mkobj");
        self.set(mk, "module_kobject", "mod", m.0);
        let kobj = self.field_va(mk, "module_kobject", "kobj");
        let s = self.alloc_str(name);
        self.set(kobj, "kobject", "name", s.0);
        let kset = Va(self.read_u64(self.symbol("module_kset")));
        self.list_add_tail(
            self.field_va(kset, "kset", "list"),
            self.field_va(kobj, "kobject", "entry"),
        );
        SynthModule {
            addr: m,
            kobj,
            core_base: base,
            core_size,
        }
    }

    /// Unlink `m` from the `modules` list (it keeps its kobject: hidden from lsmod).
    pub fn hide_module(&mut self, m: &SynthModule) {
        self.list_del(self.field_va(m.addr, "module", "list"));
    }

    /// Take `m`'s kobject out of `module_kset` (gone from /sys/module too).
    pub fn delete_module_kobject(&mut self, m: &SynthModule) {
        self.list_del(self.field_va(m.kobj, "kobject", "entry"));
    }

    /// `size` bytes in the module area, mapped but for the pages numbered in
    /// `unmapped`, with a page left unmapped after them.
    fn module_memory(&mut self, size: u32, unmapped: &[u64]) -> Va {
        let base = Va(self.module_next);
        let pages = u64::from(size).div_ceil(0x1000);
        self.module_next += pages * 0x1000 + 0x1000;
        let pa = self.alloc_pages(pages);
        // read-only and executable, as a loaded module's text is (writes here are
        // physical)
        for i in (0..pages).filter(|i| !unmapped.contains(i)) {
            self.kernel_tables
                .map(
                    &mut self.mem,
                    Va(base.0 + i * 0x1000),
                    Pa(pa.0 + i * 0x1000),
                    PageSize::Size4K,
                    0,
                )
                .expect("map the module's memory");
        }
        base
    }

    /// Put `m`'s `mem[MOD_TEXT]` into the module tree (`mod_tree`, copy 0 of the
    /// latch): its node becomes the root, the old root its left child.
    pub fn add_to_mod_tree(&mut self, m: &SynthModule) {
        let mtn = self.field_va(
            self.field_va(m.addr, "module", "mem"),
            "module_memory",
            "mtn",
        );
        self.set(mtn, "mod_tree_node", "mod", m.addr.0);
        let node = self.field_va(mtn, "mod_tree_node", "node");
        let root = self.field_va(self.symbol("mod_tree"), "mod_tree_root", "root");
        let top = self.field_va(root, "latch_tree_root", "tree");
        let old = self.read_u64(top);
        self.set(node, "rb_node", "rb_left", old);
        self.write_u64(top, node.0);
    }

    /// Give `m` a `mem[index]` region of `size` bytes (6.4+ profiles), mapped but for
    /// the pages whose numbers are in `unmapped`; returns its base.
    pub fn add_module_region(
        &mut self,
        m: &SynthModule,
        index: u64,
        size: u32,
        unmapped: &[u64],
    ) -> Va {
        let base = self.module_memory(size, unmapped);
        let mem = self.field_va(m.addr, "module", "mem");
        let at = Va(mem.0 + index * self.size_of("module_memory"));
        self.set(at, "module_memory", "base", base.0);
        self.set_u32(at, "module_memory", "size", size);
        base
    }

    /// Give `m` the sections `/sys/module/NAME/sections` lists, as (name, address):
    /// `sect_attrs` with a null-terminated `grp.bin_attrs`, each address in a
    /// `module_sect_attr` around the attribute when the profile has that type (before
    /// 6.15), else in the attribute's `private`. Returns the `bin_attrs` array.
    pub fn add_module_sections(&mut self, m: &SynthModule, sections: &[(&[u8], u64)]) -> Va {
        let attrs = self.alloc_type("module_sect_attrs");
        let array = self.alloc(8 * (sections.len() as u64 + 1));
        let old = self.profile.types.contains_key("module_sect_attr");
        for (i, (name, addr)) in sections.iter().enumerate() {
            let battr = if old {
                let sa = self.alloc_type("module_sect_attr");
                self.set(sa, "module_sect_attr", "address", *addr);
                self.field_va(sa, "module_sect_attr", "battr")
            } else {
                let b = self.alloc_type("bin_attribute");
                self.set(b, "bin_attribute", "private", *addr);
                b
            };
            let n = self.alloc_str(name);
            let attr = self.field_va(battr, "bin_attribute", "attr");
            self.set(attr, "attribute", "name", n.0);
            self.write_u64(Va(array.0 + 8 * i as u64), battr.0);
        }
        let grp = self.field_va(attrs, "module_sect_attrs", "grp");
        self.set(grp, "attribute_group", "bin_attrs", array.0);
        self.set(m.addr, "module", "sect_attrs", attrs.0);
        array
    }

    /// Give `m` the symbols of its `core_kallsyms`, as (name, value, size, st_info),
    /// after the null symbol. Returns the `mod_kallsyms`.
    pub fn add_module_symbols(&mut self, m: &SynthModule, symbols: &[(&[u8], u64, u64, u8)]) -> Va {
        let mut strtab = vec![0u8];
        let mut symtab = vec![0u8; 24];
        for (name, value, size, info) in symbols {
            let mut sym = [0u8; 24];
            sym[0..4].copy_from_slice(&(strtab.len() as u32).to_le_bytes());
            sym[4] = *info;
            sym[8..16].copy_from_slice(&value.to_le_bytes());
            sym[16..24].copy_from_slice(&size.to_le_bytes());
            symtab.extend_from_slice(&sym);
            strtab.extend_from_slice(name);
            strtab.push(0);
        }
        let tab = self.alloc(symtab.len() as u64);
        self.write(tab, &symtab);
        let strs = self.alloc(strtab.len() as u64);
        self.write(strs, &strtab);
        let ks = self.field_va(m.addr, "module", "core_kallsyms");
        self.set(ks, "mod_kallsyms", "symtab", tab.0);
        self.set_u32(ks, "mod_kallsyms", "num_symtab", symbols.len() as u32 + 1);
        self.set(ks, "mod_kallsyms", "strtab", strs.0);
        ks
    }

    /// Code in the module area that belongs to no module (a module that hid itself
    /// entirely, or was freed).
    pub fn orphan_code(&mut self) -> Va {
        let at = Va(self.module_next);
        self.module_next += 0x2000;
        at
    }

    // ----- tables -----

    /// Point `sys_call_table[nr]` to `target`.
    pub fn set_syscall(&mut self, nr: u64, target: Va) {
        let table = self.symbol("sys_call_table");
        self.write_u64(Va(table.0 + nr * 8), target.0);
    }

    /// Write IDT gate `vector`: a present interrupt gate to `target` through
    /// `selector`.
    pub fn set_gate(&mut self, vector: u8, target: Va, selector: u16) {
        let mut g = [0u8; 16];
        let t = target.0;
        g[0..2].copy_from_slice(&(t as u16).to_le_bytes());
        g[2..4].copy_from_slice(&selector.to_le_bytes());
        g[4..6].copy_from_slice(&0x8e00u16.to_le_bytes());
        g[6..8].copy_from_slice(&((t >> 16) as u16).to_le_bytes());
        g[8..12].copy_from_slice(&((t >> 32) as u32).to_le_bytes());
        let at = Va(self.symbol("idt_table").0 + u64::from(vector) * 16);
        self.write(at, &g);
    }

    // ----- hooks -----

    /// Register an `ftrace_ops` calling `func`, filtering on `ips` (every function
    /// when empty), at the head of `ftrace_ops_list`.
    pub fn add_ftrace_ops(&mut self, func: Va, ips: &[Va]) -> Va {
        let ops = self.alloc_type("ftrace_ops");
        self.set(ops, "ftrace_ops", "func", func.0);
        self.set(ops, "ftrace_ops", "saved_func", func.0);
        self.set(ops, "ftrace_ops", "flags", 1);
        if !ips.is_empty() {
            let hash = self.alloc_type("ftrace_hash");
            let bucket = self.alloc(8);
            self.set(hash, "ftrace_hash", "size_bits", 0);
            self.set(hash, "ftrace_hash", "buckets", bucket.0);
            self.set(hash, "ftrace_hash", "count", ips.len() as u64);
            for ip in ips {
                let e = self.alloc_type("ftrace_func_entry");
                self.set(e, "ftrace_func_entry", "ip", ip.0);
                let node = self.field_va(e, "ftrace_func_entry", "hlist");
                let first = self.read_u64(bucket);
                self.write_u64(node, first);
                self.write_u64(bucket, node.0);
            }
            let ops_hash = self.alloc_type("ftrace_ops_hash");
            self.set(ops_hash, "ftrace_ops_hash", "filter_hash", hash.0);
            self.set(ops, "ftrace_ops", "func_hash", ops_hash.0);
        }
        let list = self.symbol("ftrace_ops_list");
        let first = self.read_u64(list);
        self.set(ops, "ftrace_ops", "next", first);
        self.write_u64(list, ops.0);
        ops
    }

    /// Register a kprobe on `addr` (registered by the name `symbol`) whose
    /// `pre_handler` is `handler`.
    pub fn add_kprobe(&mut self, addr: Va, symbol: &[u8], handler: Va) -> Va {
        let p = self.alloc_type("kprobe");
        self.fill_kprobe(p, addr, symbol, handler);
        p
    }

    /// Register a kretprobe on `addr` whose return `handler` is `handler`; its kprobe
    /// runs the kernel's `pre_handler_kretprobe`. Returns the `struct kretprobe`.
    pub fn add_kretprobe(&mut self, addr: Va, symbol: &[u8], handler: Va) -> Va {
        let rp = self.alloc_type("kretprobe");
        self.set(rp, "kretprobe", "handler", handler.0);
        let kp = self.field_va(rp, "kretprobe", "kp");
        let pre = self.symbol("pre_handler_kretprobe");
        self.fill_kprobe(kp, addr, symbol, pre);
        rp
    }

    fn fill_kprobe(&mut self, p: Va, addr: Va, symbol: &[u8], pre: Va) {
        self.set(p, "kprobe", "addr", addr.0);
        self.set(p, "kprobe", "pre_handler", pre.0);
        let name = self.alloc_str(symbol);
        self.set(p, "kprobe", "symbol_name", name.0);
        let bucket = Va(self.symbol("kprobe_table").0 + (addr.0 >> 4) % 64 * 8);
        let node = self.field_va(p, "kprobe", "hlist");
        let first = self.read_u64(bucket);
        self.write_u64(node, first);
        self.write_u64(Va(node.0 + 8), bucket.0);
        self.write_u64(bucket, node.0);
    }

    /// Register `func` (with `data`, priority `prio`) on the tracepoint `name` (one of
    /// [`TRACEPOINTS`]); returns the `struct tracepoint`.
    pub fn add_tracepoint_probe(&mut self, name: &str, func: Va, data: Va, prio: i32) -> Va {
        let tp = self.symbol(&format!("__tracepoint_{name}"));
        let size = self.size_of("tracepoint_func");
        let old = self.get(tp, "tracepoint", "funcs");
        let mut probes: Vec<[u8; 24]> = Vec::new();
        let (fo, d, p) = (
            self.offset("tracepoint_func", "func"),
            self.offset("tracepoint_func", "data"),
            self.offset("tracepoint_func", "prio"),
        );
        if old != 0 {
            let mut at = old;
            while self.read_u64(Va(at + fo)) != 0 {
                let mut b = [0u8; 24];
                b[..8].copy_from_slice(&self.read_u64(Va(at + fo)).to_le_bytes());
                b[8..16].copy_from_slice(&self.read_u64(Va(at + d)).to_le_bytes());
                b[16..20].copy_from_slice(&(self.read_u64(Va(at + p)) as u32).to_le_bytes());
                probes.push(b);
                at += size;
            }
        }
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&func.0.to_le_bytes());
        b[8..16].copy_from_slice(&data.0.to_le_bytes());
        b[16..20].copy_from_slice(&prio.to_le_bytes());
        probes.push(b);
        let funcs = self.alloc(size * (probes.len() as u64 + 1));
        for (i, b) in probes.iter().enumerate() {
            let at = funcs.0 + i as u64 * size;
            self.write_u64(
                Va(at + fo),
                u64::from_le_bytes(b[..8].try_into().unwrap_or_default()),
            );
            self.write_u64(
                Va(at + d),
                u64::from_le_bytes(b[8..16].try_into().unwrap_or_default()),
            );
            self.write(Va(at + p), &b[16..20]);
        }
        self.set(tp, "tracepoint", "funcs", funcs.0);
        tp
    }

    /// A new network namespace on `net_namespace_list`.
    pub fn add_net(&mut self) -> Va {
        let net = self.alloc_type("net");
        let list = self.symbol("net_namespace_list");
        self.list_add_tail(list, self.field_va(net, "net", "list"));
        net
    }

    /// Register the netfilter hook `hook` at hook point `hooknum` of the family whose
    /// `netns_nf` member is `family` (`hooks_ipv4`, ...) in the namespace `net`, with
    /// `priority`; returns its `nf_hook_ops`.
    pub fn add_nf_hook(
        &mut self,
        net: Va,
        family: &str,
        hooknum: u64,
        hook: Va,
        priority: i32,
    ) -> Va {
        let ops = self.alloc_type("nf_hook_ops");
        self.set(ops, "nf_hook_ops", "hook", hook.0);
        self.set_u32(ops, "nf_hook_ops", "hooknum", hooknum as u32);
        self.set_u32(ops, "nf_hook_ops", "priority", priority as u32);
        let slot =
            Va(net.0 + self.offset("net", "nf") + self.offset("netns_nf", family) + hooknum * 8);
        let mut entries = self.nf.remove(&slot.0).unwrap_or_default();
        entries.push((hook.0, 0, ops.0));
        let esize = self.size_of("nf_hook_entry");
        let hooks = self.offset("nf_hook_entries", "hooks");
        let n = entries.len() as u64;
        let blob = self.alloc(hooks + n * esize + n * 8);
        let num = self.field_va(blob, "nf_hook_entries", "num_hook_entries");
        self.write(num, &(n as u16).to_le_bytes());
        for (i, &(h, p, o)) in entries.iter().enumerate() {
            let e = Va(blob.0 + hooks + i as u64 * esize);
            self.set(e, "nf_hook_entry", "hook", h);
            self.set(e, "nf_hook_entry", "priv", p);
            self.write_u64(Va(blob.0 + hooks + n * esize + i as u64 * 8), o);
        }
        self.write_u64(slot, blob.0);
        self.nf.insert(slot.0, entries);
        ops
    }

    /// Register a `notifier_block` calling `call` with `priority` on the chain `chain`
    /// (one of [`NOTIFIER_CHAINS`]), at its head.
    pub fn add_notifier(&mut self, chain: &str, call: Va, priority: i32) -> Va {
        let kind = CHAINS
            .iter()
            .find(|(n, _)| *n == chain)
            .map(|(_, k)| *k)
            .unwrap_or_else(|| panic!("{chain} is no chain the walker reads"));
        let head = self.field_va(self.symbol(chain), kind.type_name(), "head");
        let nb = self.alloc_type("notifier_block");
        self.set(nb, "notifier_block", "notifier_call", call.0);
        self.set_u32(nb, "notifier_block", "priority", priority as u32);
        let first = self.read_u64(head);
        self.set(nb, "notifier_block", "next", first);
        self.write_u64(head, nb.0);
        nb
    }

    /// Install a perf event whose PMU is named `pmu` and whose overflow handler is
    /// `handler` in CPU 0's context (`task` `None`) or in `task`'s context; returns
    /// the `struct perf_event`.
    pub fn add_perf_event(&mut self, task: Option<&SynthTask>, pmu: &[u8], handler: Va) -> Va {
        let list = match task {
            None => Va(self.symbol("perf_cpu_context").0
                + self.offset("perf_cpu_context", "ctx")
                + self.offset("perf_event_context", "event_list")),
            Some(t) => {
                let mut ctx = self.get(t.task, "task_struct", "perf_event_ctxp");
                if ctx == 0 {
                    ctx = self.alloc_type("perf_event_context").0;
                    self.list_init(self.field_va(Va(ctx), "perf_event_context", "event_list"));
                    self.set(t.task, "task_struct", "perf_event_ctxp", ctx);
                }
                self.field_va(Va(ctx), "perf_event_context", "event_list")
            }
        };
        let p = self.alloc_type("pmu");
        let name = self.alloc_str(pmu);
        self.set(p, "pmu", "name", name.0);
        let event = self.alloc_type("perf_event");
        self.set(event, "perf_event", "pmu", p.0);
        self.set(event, "perf_event", "overflow_handler", handler.0);
        self.list_add_tail(list, self.field_va(event, "perf_event", "event_entry"));
        event
    }

    /// Load a BPF program with id `id`, `enum bpf_prog_type` `prog_type`, name and
    /// tag into `prog_idr`; its image is in the module area. Returns the `bpf_prog`.
    pub fn add_bpf_prog(&mut self, id: u32, prog_type: u32, name: &[u8], tag: [u8; 8]) -> Va {
        let prog = self.alloc_type("bpf_prog");
        let aux = self.alloc_type("bpf_prog_aux");
        self.set_u32(prog, "bpf_prog", "type", prog_type);
        self.write_field(prog, "bpf_prog", "tag", &tag);
        let image = self.orphan_code();
        self.set(prog, "bpf_prog", "bpf_func", image.0);
        self.set_u32(prog, "bpf_prog", "jited_len", 0x100);
        self.set(prog, "bpf_prog", "aux", aux.0);
        self.set_u32(aux, "bpf_prog_aux", "id", id);
        let mut n = [0u8; 16];
        let len = name.len().min(15);
        n[..len].copy_from_slice(&name[..len]);
        self.write_field(aux, "bpf_prog_aux", "name", &n);
        let idr = self.symbol("prog_idr");
        self.idr_store(idr, u64::from(id), prog.0);
        prog
    }

    /// The `tty_ldisc_ops` registered as line discipline `num` (0 when none).
    pub fn ldisc_ops(&self, num: u64) -> Va {
        Va(self.read_u64(Va(self.symbol("tty_ldiscs").0 + num * 8)))
    }

    /// A tty driver on `tty_drivers` with its own `tty_operations` in kernel text;
    /// returns the `struct tty_driver`.
    pub fn add_tty_driver(&mut self, name: &[u8], driver_name: &[u8]) -> Va {
        let d = self.alloc_type("tty_driver");
        let ops = self.fn_table("tty_operations");
        self.set(d, "tty_driver", "ops", ops.0);
        let n = self.alloc_str(name);
        self.set(d, "tty_driver", "name", n.0);
        let n = self.alloc_str(driver_name);
        self.set(d, "tty_driver", "driver_name", n.0);
        let list = self.symbol("tty_drivers");
        self.list_add_tail(list, self.field_va(d, "tty_driver", "tty_drivers"));
        d
    }

    /// The first tty driver on `tty_drivers`.
    pub fn first_tty_driver(&self) -> Va {
        let first = self.read_u64(self.symbol("tty_drivers"));
        Va(first - self.offset("tty_driver", "tty_drivers"))
    }

    /// Give the driver `driver` one open tty named `name` whose line discipline uses
    /// `ldisc_ops`; returns the `tty_struct`.
    pub fn add_tty(&mut self, driver: Va, name: &[u8], ldisc_ops: Va) -> Va {
        let tty = self.alloc_type("tty_struct");
        self.write_field(tty, "tty_struct", "name", name);
        let ld = self.alloc_type("tty_ldisc");
        self.set(ld, "tty_ldisc", "ops", ldisc_ops.0);
        self.set(tty, "tty_struct", "ldisc", ld.0);
        let ttys = self.alloc(8);
        self.write_u64(ttys, tty.0);
        self.set(driver, "tty_driver", "ttys", ttys.0);
        self.set_u32(driver, "tty_driver", "num", 1);
        tty
    }
}

/// The kernel's VFS tables the synthetic kernel's mounts use, with their types.
pub const VFS_TABLES: [(&str, &str); 7] = [
    ("proc_root_operations", "file_operations"),
    ("proc_root_inode_operations", "inode_operations"),
    ("proc_sops", "super_operations"),
    ("simple_dir_operations", "file_operations"),
    ("simple_dir_inode_operations", "inode_operations"),
    ("ramfs_ops", "super_operations"),
    ("ram_aops", "address_space_operations"),
];

/// The link-time address of `name`.
fn link(profile: &Profile, name: &str) -> u64 {
    profile
        .symbol(name)
        .unwrap_or_else(|| panic!("the profile has no symbol {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::Limits;

    #[test]
    fn a_clean_kernel_is_discovered_at_its_shifts() {
        let k = SyntheticKernel::clean().discover().unwrap();
        let p = k.placement();
        assert_eq!(p.virt_shift, VIRT_SHIFT);
        assert_eq!(p.phys_shift, PHYS_SHIFT);
        assert!(k.processes(&Limits::default()).unwrap().is_empty());
        assert!(k.modules(&Limits::default()).unwrap().is_empty());
    }

    #[test]
    fn the_builder_follows_the_profile_s_offsets() {
        // task_struct and cred laid out elsewhere: what is built reads back the same
        let mut p = synthetic_profile();
        for ty in ["task_struct", "cred"] {
            let t = p.types.get_mut(ty).unwrap();
            t.size += 0x80;
            for f in t.fields.values_mut() {
                f.offset += 0x80;
            }
        }
        let mut sk = SyntheticKernel::new(p);
        sk.add_process(7, b"moved", 1000);
        let k = sk.discover().unwrap();
        let procs = k.processes(&Limits::default()).unwrap();
        assert_eq!(procs.len(), 1);
        assert_eq!((procs[0].pid, procs[0].uid), (7, 1000));
        assert_eq!(procs[0].comm, b"moved");
    }

    #[test]
    fn a_profile_that_does_not_fit_is_refused_at_discovery() {
        let sk = SyntheticKernel::clean();
        let mut p = sk.profile().clone();
        p.types
            .get_mut("task_struct")
            .unwrap()
            .fields
            .get_mut("comm")
            .unwrap()
            .offset += 8;
        let e = Kernel::discover(sk.memory().clone(), Arc::new(p), &Hints::default()).unwrap_err();
        assert!(matches!(e, KernelError::Inconsistent { .. }), "{e}");
    }

    #[test]
    fn processes_threads_and_modules_read_back() {
        let mut sk = SyntheticKernel::clean();
        let init = sk.add_process(1, b"init", 0);
        let bash = sk.add_process(300, b"bash", 1000);
        sk.add_thread(&bash, 301, b"bash-worker");
        sk.add_kthread(2, b"kthreadd");
        let m = sk.add_module(b"e1000", 0x3000);
        let k = sk.discover().unwrap();
        let procs = k.processes(&Limits::default()).unwrap();
        let pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [1, 300, 2]);
        assert_eq!(procs[0].task, init.task);
        assert_eq!(procs[1].uid, 1000);
        assert_eq!(procs[1].threads.len(), 2);
        assert!(procs[2].is_kernel_thread());
        let view = k
            .pid_namespace_tasks(&crate::kernel::pidns::PidLimits::default())
            .unwrap();
        let mut tids: Vec<u32> = view.tasks.iter().map(|t| t.tid).collect();
        tids.sort_unstable();
        assert_eq!(tids, [1, 2, 300, 301]);
        let mods = k.modules(&Limits::default()).unwrap();
        assert_eq!(mods.len(), 1);
        assert_eq!(mods[0].name, b"e1000");
        assert_eq!(mods[0].core_base, m.core_base);
        assert_eq!(k.module_kobjects(16).unwrap()[0].module, Some(m.addr));
    }
}
