//! The synthetic kernel's profile: every type, field and symbol the detector's checks
//! read, at offsets of the builder's own choosing (6.1's where the unit tests of the
//! walkers already use them). Nothing here is read from [`crate::profile::needs`]: the
//! builder depends only on what a profile says.

use std::collections::BTreeMap;

use crate::kernel::START_KERNEL_MAP;
use crate::profile::{Field, KernelIdentity, Profile, Provenance, Symbol, TypeDef, TypeKind};

/// `_text` of the synthetic kernel (a link-time address: KASLR is applied on top).
pub const TEXT: u64 = START_KERNEL_MAP + 0x100_0000;
/// Bytes of kernel text (`_stext` = `_text`, `_etext` = `_text` + this).
pub const TEXT_SIZE: u64 = 0x20_0000;
/// Where read-only data ends (`__end_rodata`), from `_text`.
pub const RODATA_END: u64 = 0x40_0000;
/// Bytes of the image the builder maps: text, rodata, data, page tables.
pub const IMAGE_SIZE: u64 = 0x80_0000;
/// Where `init_top_pgt` is in the image; the page tables fill the rest of it.
pub const PGT_OFFSET: u64 = 0x60_0000;
/// `NR_syscalls` of the synthetic kernel (the length of
/// `trace_array.enter_syscall_files`).
pub const NR_SYSCALLS: u64 = 335;
/// The tracepoints of the synthetic kernel, in `__start___tracepoints_ptrs` order.
pub const TRACEPOINTS: [&str; 4] = [
    "sys_enter",
    "sys_exit",
    "sched_process_exec",
    "sched_switch",
];

/// The banner of the synthetic kernel.
pub const BANNER: &str =
    "Linux version 6.1.0-synthetic (vmi@synthetic) (gcc 12.2.0) #1 SMP PREEMPT_DYNAMIC\n";

type Fields = &'static [(&'static str, u64, &'static str)];

const L: &str = "struct list_head";
const P: &str = "ptr void";
const F: &str = "ptr fn";

/// (type, size, fields as (name, offset, compact type)).
const TYPES: &[(&str, u64, Fields)] = &[
    (
        "task_struct",
        0x1000,
        &[
            ("__state", 0x18, "unsigned int"),
            ("stack", 0x20, P),
            ("flags", 0x2c, "unsigned int"),
            ("on_cpu", 0x34, "int"),
            ("tasks", 0x100, L),
            ("mm", 0x110, "ptr struct mm_struct"),
            ("fs", 0x260, "ptr struct fs_struct"),
            ("active_mm", 0x118, "ptr struct mm_struct"),
            ("exit_state", 0x120, "int"),
            ("pid", 0x128, "int"),
            ("tgid", 0x12c, "int"),
            ("real_parent", 0x130, "ptr struct task_struct"),
            ("parent", 0x138, "ptr struct task_struct"),
            ("children", 0x140, L),
            ("sibling", 0x150, L),
            ("group_leader", 0x160, "ptr struct task_struct"),
            ("pid_links", 0x168, "struct hlist_node[4]"),
            ("thread_pid", 0x1a8, "ptr struct pid"),
            ("thread_node", 0x1b0, L),
            ("thread_group", 0x1c0, L),
            ("start_time", 0x1d0, "u64"),
            ("start_boottime", 0x1d8, "u64"),
            ("real_cred", 0x1e0, "ptr struct cred"),
            ("cred", 0x1e8, "ptr struct cred"),
            ("comm", 0x1f0, "char[16]"),
            ("files", 0x200, "ptr struct files_struct"),
            ("signal", 0x208, "ptr struct signal_struct"),
            ("perf_event_ctxp", 0x210, "ptr struct perf_event_context"),
            ("perf_event_list", 0x218, L),
            ("nsproxy", 0x230, "ptr struct nsproxy"),
            ("set_child_tid", 0x238, "ptr int"),
            ("worker_private", 0x240, P),
            ("ptrace", 0x248, "unsigned int"),
            ("se", 0x300, "struct sched_entity"),
            ("rt", 0x400, "struct sched_rt_entity"),
        ],
    ),
    // a kernel thread's own (5.17+: task_struct.worker_private points at it)
    (
        "kthread",
        0x70,
        &[
            ("threadfn", 0x10, F),
            ("data", 0x18, P),
            ("full_name", 0x68, "ptr char"),
        ],
    ),
    (
        "signal_struct",
        0x100,
        &[("nr_threads", 0x4, "int"), ("thread_head", 0x10, L)],
    ),
    (
        "cred",
        0xa8,
        &[
            ("usage", 0x0, "atomic_long_t"),
            ("uid", 0x8, "kuid_t"),
            ("gid", 0xc, "kgid_t"),
            ("suid", 0x10, "kuid_t"),
            ("sgid", 0x14, "kgid_t"),
            ("euid", 0x18, "kuid_t"),
            ("egid", 0x1c, "kgid_t"),
            ("fsuid", 0x20, "kuid_t"),
            ("fsgid", 0x24, "kgid_t"),
            ("user", 0x80, "ptr struct user_struct"),
        ],
    ),
    ("user_struct", 0x40, &[("uid", 0x10, "kuid_t")]),
    (
        "mm_struct",
        0x400,
        &[
            ("mmap", 0x0, "ptr struct vm_area_struct"),
            ("pgd", 0x48, "ptr pgd_t"),
            ("map_count", 0x58, "int"),
            ("start_code", 0xc0, "unsigned long"),
            ("end_code", 0xc8, "unsigned long"),
            ("start_brk", 0xe0, "unsigned long"),
            ("brk", 0xe8, "unsigned long"),
            ("start_stack", 0xf0, "unsigned long"),
            ("arg_start", 0x100, "unsigned long"),
            ("arg_end", 0x108, "unsigned long"),
            ("env_start", 0x110, "unsigned long"),
            ("env_end", 0x118, "unsigned long"),
            ("exe_file", 0x120, "ptr struct file"),
        ],
    ),
    // mappings on the mmap list (the layout before 6.1's maple tree)
    (
        "vm_area_struct",
        0xc8,
        &[
            ("vm_start", 0x0, "unsigned long"),
            ("vm_end", 0x8, "unsigned long"),
            ("vm_next", 0x10, "ptr struct vm_area_struct"),
            ("vm_mm", 0x40, "ptr struct mm_struct"),
            ("vm_flags", 0x50, "unsigned long"),
            ("vm_ops", 0x90, "ptr const struct vm_operations_struct"),
            ("vm_pgoff", 0x98, "unsigned long"),
            ("vm_file", 0xa0, "ptr struct file"),
            ("vm_private_data", 0xa8, P),
        ],
    ),
    (
        "vm_special_mapping",
        0x30,
        &[("name", 0x0, "ptr const char")],
    ),
    (
        "file",
        0x100,
        &[
            ("f_path", 0x10, "struct path"),
            ("f_inode", 0x20, "ptr struct inode"),
            ("f_op", 0x28, "ptr const struct file_operations"),
            ("f_flags", 0x30, "unsigned int"),
            ("f_mode", 0x34, "fmode_t"),
            ("f_pos", 0x40, "loff_t"),
            ("private_data", 0xc0, P),
            ("f_mapping", 0xd0, "ptr struct address_space"),
        ],
    ),
    ("files_struct", 0x40, &[("fdt", 0x20, "ptr struct fdtable")]),
    ("fs_struct", 0x38, &[("root", 0x18, "struct path")]),
    ("pt_regs", 0xa8, &[("ip", 0x80, "unsigned long")]),
    // a 64-byte `struct page` (vmemmap)
    (
        "page",
        0x40,
        &[
            ("compound_head", 0x8, "unsigned long"),
            ("mapping", 0x18, "ptr struct address_space"),
        ],
    ),
    // an io_uring instance's context and SQPOLL's thread data
    (
        "io_ring_ctx",
        0x100,
        &[
            ("flags", 0x0, "unsigned int"),
            ("sq_entries", 0x40, "unsigned int"),
            ("cq_entries", 0x44, "unsigned int"),
            ("sq_data", 0x48, "ptr struct io_sq_data"),
            ("submitter_task", 0x50, "ptr struct task_struct"),
        ],
    ),
    (
        "io_sq_data",
        0x80,
        &[("thread", 0x20, "ptr struct task_struct")],
    ),
    (
        "fdtable",
        0x38,
        &[
            ("max_fds", 0, "unsigned int"),
            ("fd", 8, "ptr ptr struct file"),
        ],
    ),
    (
        "path",
        16,
        &[
            ("mnt", 0x0, "ptr struct vfsmount"),
            ("dentry", 0x8, "ptr struct dentry"),
        ],
    ),
    (
        "inode",
        0x260,
        &[
            ("i_mode", 0x0, "umode_t"),
            ("i_op", 0x20, "ptr const struct inode_operations"),
            ("i_sb", 0x28, "ptr struct super_block"),
            ("i_mapping", 0x30, "ptr struct address_space"),
            ("i_ino", 0x40, "unsigned long"),
            ("i_size", 0x50, "loff_t"),
            ("i_fop", 0x168, "ptr const struct file_operations"),
        ],
    ),
    (
        "super_block",
        0x500,
        &[
            ("s_dev", 0x10, "dev_t"),
            ("s_magic", 0x60, "unsigned long"),
            ("s_type", 0x28, "ptr struct file_system_type"),
            ("s_op", 0x30, "ptr const struct super_operations"),
        ],
    ),
    (
        "file_system_type",
        0x48,
        &[
            ("name", 0, "ptr const char"),
            ("owner", 0x30, "ptr struct module"),
        ],
    ),
    (
        "address_space",
        0xa0,
        &[
            ("i_pages", 0x8, "struct xarray"),
            ("nrpages", 0x58, "unsigned long"),
            ("a_ops", 0x70, "ptr const struct address_space_operations"),
        ],
    ),
    (
        "file_operations",
        0x100,
        &[
            ("owner", 0, "ptr struct module"),
            ("llseek", 0x8, F),
            ("read", 0x10, F),
            ("write", 0x18, F),
            ("iterate_shared", 0x38, F),
            ("open", 0x70, F),
            ("release", 0x80, F),
        ],
    ),
    (
        "inode_operations",
        0xc0,
        &[
            ("lookup", 0, F),
            ("permission", 0x10, F),
            ("getattr", 0x68, F),
        ],
    ),
    (
        "dentry_operations",
        0x80,
        &[
            ("d_revalidate", 0, F),
            ("d_delete", 0x20, F),
            ("d_dname", 0x48, F),
        ],
    ),
    (
        "super_operations",
        0xe0,
        &[
            ("alloc_inode", 0, F),
            ("evict_inode", 0x38, F),
            ("statfs", 0x68, F),
        ],
    ),
    (
        "address_space_operations",
        0xa0,
        &[("writepages", 0x8, F), ("readahead", 0x20, F)],
    ),
    (
        "nsproxy",
        0x48,
        &[("mnt_ns", 0x18, "ptr struct mnt_namespace")],
    ),
    // the mount list of 6.1 (a `mounts` count beside it)
    (
        "mnt_namespace",
        0x78,
        &[
            ("root", 0x18, "ptr struct mount"),
            ("list", 0x20, L),
            ("mounts", 0x70, "unsigned int"),
        ],
    ),
    (
        "dentry",
        0xc0,
        &[
            ("d_hash", 0x8, "struct hlist_bl_node"),
            ("d_parent", 0x18, "ptr struct dentry"),
            ("d_name", 0x20, "struct qstr"),
            ("d_inode", 0x30, "ptr struct inode"),
            ("d_op", 0x60, "ptr const struct dentry_operations"),
            // the children of 6.1 (a list; 6.8 on, an hlist `d_children` of `d_sib`)
            ("d_child", 0x80, L),
            ("d_subdirs", 0x90, L),
        ],
    ),
    ("qstr", 16, &[("name", 0x8, "ptr const unsigned char")]),
    (
        "mount",
        0x140,
        &[
            ("mnt_parent", 0x10, "ptr struct mount"),
            ("mnt_mountpoint", 0x18, "ptr struct dentry"),
            ("mnt", 0x20, "struct vfsmount"),
            ("mnt_list", 0x88, L),
        ],
    ),
    (
        "vfsmount",
        0x20,
        &[
            ("mnt_root", 0x0, "ptr struct dentry"),
            ("mnt_sb", 0x8, "ptr struct super_block"),
        ],
    ),
    (
        "list_head",
        16,
        &[
            ("next", 0, "ptr struct list_head"),
            ("prev", 8, "ptr struct list_head"),
        ],
    ),
    ("hlist_head", 8, &[("first", 0, "ptr struct hlist_node")]),
    (
        "hlist_bl_node",
        16,
        &[
            ("next", 0, "ptr struct hlist_bl_node"),
            ("pprev", 8, "ptr ptr struct hlist_bl_node"),
        ],
    ),
    (
        "hlist_node",
        16,
        &[
            ("next", 0, "ptr struct hlist_node"),
            ("pprev", 8, "ptr ptr struct hlist_node"),
        ],
    ),
    (
        "module",
        0x400,
        &[
            ("state", 0x0, "enum module_state"),
            ("list", 0x8, L),
            ("name", 0x18, "char[56]"),
            ("mkobj", 0x50, "struct module_kobject"),
            ("mem", 0x140, "struct module_memory[7]"),
            ("num_syms", 0x370, "unsigned int"),
            ("syms", 0x378, "ptr struct kernel_symbol"),
            ("core_kallsyms", 0x380, "struct mod_kallsyms"),
            ("sect_attrs", 0x3a0, "ptr struct module_sect_attrs"),
        ],
    ),
    (
        "mod_kallsyms",
        0x20,
        &[
            ("symtab", 0x0, "ptr Elf64_Sym"),
            ("num_symtab", 0x8, "unsigned int"),
            ("strtab", 0x10, "ptr char"),
            ("typetab", 0x18, "ptr char"),
        ],
    ),
    // the 6.15+ shape: `attrs` are `bin_attribute`s, the address in `private`
    (
        "module_sect_attrs",
        0x30,
        &[
            ("grp", 0x0, "struct attribute_group"),
            ("attrs", 0x30, "struct bin_attribute[]"),
        ],
    ),
    (
        "attribute_group",
        0x30,
        &[
            ("name", 0x0, "ptr const char"),
            ("bin_attrs", 0x28, "ptr ptr const struct bin_attribute"),
        ],
    ),
    (
        "bin_attribute",
        0x48,
        &[
            ("attr", 0x0, "struct attribute"),
            ("size", 0x10, "size_t"),
            ("private", 0x18, P),
        ],
    ),
    (
        "attribute",
        0x10,
        &[("name", 0x0, "ptr const char"), ("mode", 0x8, "umode_t")],
    ),
    (
        "module_memory",
        0x50,
        &[
            ("base", 0x0, P),
            ("size", 0x8, "unsigned int"),
            ("mtn", 0x10, "struct mod_tree_node"),
        ],
    ),
    (
        "mod_tree_node",
        0x38,
        &[
            ("mod", 0x0, "ptr struct module"),
            ("node", 0x8, "struct latch_tree_node"),
        ],
    ),
    (
        "mod_tree_root",
        0x28,
        &[
            ("root", 0x0, "struct latch_tree_root"),
            ("addr_min", 0x18, "unsigned long"),
            ("addr_max", 0x20, "unsigned long"),
        ],
    ),
    (
        "latch_tree_root",
        0x18,
        &[
            ("seq", 0x0, "seqcount_latch_t"),
            ("tree", 0x8, "struct rb_root[2]"),
        ],
    ),
    (
        "module_kobject",
        0x60,
        &[
            ("kobj", 0x0, "struct kobject"),
            ("mod", 0x40, "ptr struct module"),
        ],
    ),
    (
        "kobject",
        0x40,
        &[
            ("name", 0x0, "ptr const char"),
            ("entry", 0x8, L),
            ("parent", 0x18, "ptr struct kobject"),
            ("kset", 0x20, "ptr struct kset"),
        ],
    ),
    (
        "kset",
        0x60,
        &[("list", 0x0, L), ("kobj", 0x18, "struct kobject")],
    ),
    (
        "pid",
        0x60,
        &[
            ("level", 0x4, "unsigned int"),
            ("tasks", 0x10, "struct hlist_head[4]"),
            ("numbers", 0x50, "struct upid[1]"),
        ],
    ),
    (
        "upid",
        16,
        &[("nr", 0x0, "int"), ("ns", 0x8, "ptr struct pid_namespace")],
    ),
    (
        "pid_namespace",
        0x80,
        &[("idr", 0x0, "struct idr"), ("level", 0x40, "unsigned int")],
    ),
    (
        "idr",
        0x18,
        &[
            ("idr_rt", 0x0, "struct xarray"),
            ("idr_base", 0x10, "unsigned int"),
        ],
    ),
    ("xarray", 0x10, &[("xa_head", 0x8, P)]),
    (
        "xa_node",
        0x228,
        &[
            ("shift", 0x0, "unsigned char"),
            ("count", 0x2, "unsigned char"),
            ("slots", 0x28, "ptr void[64]"),
        ],
    ),
    ("syscall_metadata", 0x40, &[("name", 0, "ptr const char")]),
    (
        "trace_array",
        0x1000,
        &[(
            "enter_syscall_files",
            0x100,
            "ptr struct trace_event_file[335]",
        )],
    ),
    (
        "ftrace_ops",
        0xe0,
        &[
            ("func", 0x0, F),
            ("next", 0x8, "ptr struct ftrace_ops"),
            ("flags", 0x10, "unsigned long"),
            ("saved_func", 0x20, F),
            ("func_hash", 0x78, "ptr struct ftrace_ops_hash"),
            ("trampoline", 0x98, "unsigned long"),
            ("trampoline_size", 0xa0, "unsigned long"),
            ("direct_call", 0xd0, "unsigned long"),
        ],
    ),
    (
        "ftrace_ops_hash",
        0x38,
        &[
            ("notrace_hash", 0x0, "ptr struct ftrace_hash"),
            ("filter_hash", 0x8, "ptr struct ftrace_hash"),
        ],
    ),
    (
        "ftrace_hash",
        0x30,
        &[
            ("size_bits", 0x0, "unsigned long"),
            ("buckets", 0x8, "ptr struct hlist_head"),
            ("count", 0x10, "unsigned long"),
        ],
    ),
    (
        "ftrace_func_entry",
        0x20,
        &[
            ("hlist", 0x0, "struct hlist_node"),
            ("ip", 0x10, "unsigned long"),
            ("direct", 0x18, "unsigned long"),
        ],
    ),
    (
        "kprobe",
        0x80,
        &[
            ("hlist", 0, "struct hlist_node"),
            ("list", 16, L),
            ("addr", 40, "ptr kprobe_opcode_t"),
            ("symbol_name", 48, "ptr const char"),
            ("offset", 56, "unsigned int"),
            ("pre_handler", 64, F),
            ("post_handler", 72, F),
            ("flags", 120, "u32"),
        ],
    ),
    (
        "kretprobe",
        0xb0,
        &[
            ("kp", 0, "struct kprobe"),
            ("handler", 128, F),
            ("entry_handler", 136, F),
        ],
    ),
    (
        "tracepoint",
        0x50,
        &[
            ("name", 0x0, "ptr const char"),
            ("funcs", 0x40, "ptr struct tracepoint_func"),
        ],
    ),
    (
        "tracepoint_func",
        24,
        &[("func", 0, P), ("data", 8, P), ("prio", 16, "int")],
    ),
    (
        "net",
        0x1000,
        &[
            ("list", 0x20, L),
            ("proc_net", 0x100, "ptr struct proc_dir_entry"),
            ("nf", 0xa38, "struct netns_nf"),
        ],
    ),
    (
        "netns_nf",
        0x100,
        &[
            ("hooks_ipv4", 104, "ptr struct nf_hook_entries[5]"),
            ("hooks_ipv6", 144, "ptr struct nf_hook_entries[5]"),
            ("hooks_arp", 184, "ptr struct nf_hook_entries[3]"),
            ("hooks_bridge", 208, "ptr struct nf_hook_entries[6]"),
        ],
    ),
    (
        "nf_hook_entries",
        8,
        &[
            ("num_hook_entries", 0, "u16"),
            ("hooks", 8, "struct nf_hook_entry[]"),
        ],
    ),
    ("nf_hook_entry", 16, &[("hook", 0, F), ("priv", 8, P)]),
    (
        "nf_hook_ops",
        0x40,
        &[
            ("hook", 16, F),
            ("pf", 40, "u8"),
            ("hooknum", 44, "unsigned int"),
            ("priority", 48, "int"),
        ],
    ),
    (
        "notifier_block",
        0x18,
        &[
            ("notifier_call", 0, F),
            ("next", 8, "ptr struct notifier_block"),
            ("priority", 16, "int"),
        ],
    ),
    (
        "atomic_notifier_head",
        0x10,
        &[("head", 8, "ptr struct notifier_block")],
    ),
    (
        "blocking_notifier_head",
        0x30,
        &[("head", 40, "ptr struct notifier_block")],
    ),
    (
        "raw_notifier_head",
        8,
        &[("head", 0, "ptr struct notifier_block")],
    ),
    (
        "tty_ldisc_ops",
        0x90,
        &[
            ("name", 0x0, "ptr char"),
            ("num", 0x8, "int"),
            ("open", 0x10, F),
            ("close", 0x18, F),
            ("read", 0x28, F),
            ("write", 0x30, F),
            ("ioctl", 0x38, F),
            ("receive_buf", 0x60, F),
            ("receive_buf2", 0x80, F),
            ("owner", 0x88, "ptr struct module"),
        ],
    ),
    (
        "tty_driver",
        0x100,
        &[
            ("driver_name", 0x18, "ptr const char"),
            ("name", 0x20, "ptr const char"),
            ("num", 0x34, "unsigned int"),
            ("ttys", 0x68, "ptr ptr struct tty_struct"),
            ("ops", 0xb8, "ptr const struct tty_operations"),
            ("tty_drivers", 0xc0, L),
        ],
    ),
    (
        "tty_operations",
        0x40,
        &[
            ("lookup", 0x0, F),
            ("install", 0x8, F),
            ("open", 0x18, F),
            ("close", 0x20, F),
            ("write", 0x28, F),
            ("ioctl", 0x30, F),
            ("set_termios", 0x38, F),
        ],
    ),
    (
        "tty_struct",
        0x300,
        &[
            ("ldisc", 0x30, "ptr struct tty_ldisc"),
            ("name", 0x1a0, "char[64]"),
        ],
    ),
    (
        "tty_ldisc",
        16,
        &[
            ("ops", 0, "ptr struct tty_ldisc_ops"),
            ("tty", 8, "ptr struct tty_struct"),
        ],
    ),
    (
        "seq_operations",
        32,
        &[
            ("start", 0, F),
            ("stop", 8, F),
            ("next", 16, F),
            ("show", 24, F),
        ],
    ),
    (
        "proc_ops",
        0x48,
        &[
            ("proc_open", 8, F),
            ("proc_read", 16, F),
            ("proc_read_iter", 24, F),
            ("proc_write", 32, F),
            ("proc_lseek", 40, F),
            ("proc_release", 48, F),
        ],
    ),
    (
        "proc_dir_entry",
        0xb8,
        &[
            ("subdir", 0x20, "struct rb_root"),
            ("subdir_node", 0x28, "struct rb_node"),
            ("proc_ops", 0x40, "ptr const struct proc_ops"),
            ("seq_ops", 0x48, "ptr const struct seq_operations"),
            ("name", 0x78, "ptr const char"),
        ],
    ),
    // perf events in CPU and task contexts (the 6.2+ per-CPU perf_cpu_context)
    (
        "perf_event",
        0x400,
        &[
            ("event_entry", 0, L),
            ("pmu", 0x98, "ptr struct pmu"),
            ("overflow_handler", 0x398, F),
        ],
    ),
    ("pmu", 0x100, &[("name", 0x30, "ptr const char")]),
    ("perf_event_context", 0x100, &[("event_list", 0x60, L)]),
    (
        "perf_cpu_context",
        0x100,
        &[("ctx", 0, "struct perf_event_context")],
    ),
    // sockets among the open files (a family's socket begins with its struct sock)
    ("socket", 0x80, &[("sk", 0x18, "ptr struct sock")]),
    (
        "sock_common",
        0x88,
        &[
            ("skc_daddr", 0, "__be32"),
            ("skc_rcv_saddr", 4, "__be32"),
            ("skc_dport", 0xc, "__be16"),
            ("skc_num", 0xe, "__u16"),
            ("skc_family", 0x10, "short unsigned int"),
            ("skc_state", 0x12, "volatile unsigned char"),
            ("skc_v6_daddr", 0x38, "struct in6_addr"),
            ("skc_v6_rcv_saddr", 0x48, "struct in6_addr"),
        ],
    ),
    (
        "sock",
        0x308,
        &[
            ("__sk_common", 0, "struct sock_common"),
            ("sk_filter", 0x110, "ptr struct sk_filter"),
            ("sk_type", 0x1fc, "u16"),
            ("sk_protocol", 0x1fe, "u16"),
        ],
    ),
    ("sk_filter", 0x20, &[("prog", 0x18, "ptr struct bpf_prog")]),
    (
        "sock_fprog_kern",
        0x10,
        &[("len", 0, "u16"), ("filter", 8, "ptr struct sock_filter")],
    ),
    (
        "unix_sock",
        0x400,
        &[("addr", 0x308, "ptr struct unix_address")],
    ),
    (
        "unix_address",
        8,
        &[("len", 4, "int"), ("name", 8, "struct sockaddr_un[]")],
    ),
    (
        "packet_sock",
        0x600,
        &[("ifindex", 0x4f0, "int"), ("num", 0x4f4, "__be16")],
    ),
    ("netlink_sock", 0x440, &[("portid", 0x310, "u32")]),
    // BPF programs and links in prog_idr and link_idr
    (
        "bpf_prog",
        0x48,
        &[
            ("type", 4, "enum bpf_prog_type"),
            ("expected_attach_type", 8, "enum bpf_attach_type"),
            ("len", 12, "u32"),
            ("jited_len", 16, "u32"),
            ("tag", 20, "u8[8]"),
            ("bpf_func", 0x30, P),
            ("aux", 0x38, "ptr struct bpf_prog_aux"),
            ("orig_prog", 0x40, "ptr struct sock_fprog_kern"),
        ],
    ),
    (
        "bpf_prog_aux",
        0x400,
        &[
            ("id", 0x10, "u32"),
            ("load_time", 0x48, "u64"),
            ("attach_func_name", 0x60, "ptr const char"),
            ("dst_prog", 0x68, "ptr struct bpf_prog"),
            ("name", 0x100, "char[16]"),
        ],
    ),
    (
        "bpf_link",
        0x40,
        &[
            ("id", 8, "u32"),
            ("type", 12, "enum bpf_link_type"),
            ("prog", 24, "ptr struct bpf_prog"),
        ],
    ),
    ("rb_root", 8, &[("rb_node", 0, "ptr struct rb_node")]),
    (
        "rb_node",
        24,
        &[
            ("rb_right", 8, "ptr struct rb_node"),
            ("rb_left", 16, "ptr struct rb_node"),
        ],
    ),
    // the scheduler's run queues (the per-CPU `runqueues`)
    (
        "rq",
        0x900,
        &[
            ("cfs", 0x80, "struct cfs_rq"),
            ("rt", 0x200, "struct rt_rq"),
        ],
    ),
    (
        "cfs_rq",
        0x100,
        &[("tasks_timeline", 0x30, "struct rb_root_cached")],
    ),
    (
        "sched_entity",
        0x100,
        &[
            ("run_node", 0x10, "struct rb_node"),
            ("my_q", 0x80, "ptr struct cfs_rq"),
        ],
    ),
    ("rt_rq", 0x700, &[("active", 0, "struct rt_prio_array")]),
    (
        "rt_prio_array",
        0x650,
        &[("queue", 0x10, "struct list_head[100]")],
    ),
    ("sched_rt_entity", 0x40, &[("run_list", 0, L)]),
    (
        "cpuinfo_x86",
        0xc0,
        &[("x86_capability", 0x20, "__u32[22]")],
    ),
];

/// The chains of `vmi_core::kernel::notifiers` the synthetic kernel has, each head
/// 0x40 bytes after the previous one from image offset 0x408000.
pub const NOTIFIER_CHAINS: [&str; 11] = [
    "keyboard_notifier_list",
    "vt_notifier_list",
    "module_notify_list",
    "netdev_chain",
    "inetaddr_chain",
    "inet6addr_chain",
    "netlink_chain",
    "reboot_notifier_list",
    "panic_notifier_list",
    "die_chain",
    "pm_chain_head",
];

/// The `/proc/net` seq_operations tables, 0x40 apart from image offset 0x206000.
pub const SEQ_OPS: [&str; 9] = [
    "tcp4_seq_ops",
    "tcp6_seq_ops",
    "udp_seq_ops",
    "udp6_seq_ops",
    "raw_seq_ops",
    "raw6_seq_ops",
    "arp_seq_ops",
    "unix_seq_ops",
    "packet_seq_ops",
];

/// (symbol, offset from `_text`, System.map type).
const SYMBOLS: &[(&str, u64, &str)] = &[
    ("_text", 0, "T"),
    ("_stext", 0, "T"),
    ("aggr_pre_handler", 0x1_0000, "t"),
    ("pre_handler_kretprobe", 0x1_0100, "t"),
    ("entry_SYSCALL_64", 0x1_0200, "T"),
    ("entry_SYSCALL_compat", 0x1_0300, "T"),
    ("entry_SYSENTER_compat", 0x1_0400, "T"),
    ("simple_dname", 0x1_0500, "T"),
    ("_etext", TEXT_SIZE, "T"),
    // init text, after _etext (not mapped: nothing reads it)
    ("early_idt_handler_array", 0xe0_0000, "T"),
    ("__start_rodata", 0x20_0000, "D"),
    ("linux_banner", 0x20_0100, "R"),
    ("sys_call_table", 0x20_2000, "R"),
    ("__start___tracepoints_ptrs", 0x20_4000, "R"),
    (
        "__stop___tracepoints_ptrs",
        0x20_4000 + 4 * TRACEPOINTS.len() as u64,
        "R",
    ),
    ("socket_file_ops", 0x20_5000, "r"),
    ("special_mapping_vmops", 0x20_5100, "r"),
    ("io_uring_fops", 0x20_5800, "r"),
    // the VFS tables of the root file system and /proc (0x100 apart)
    ("proc_root_operations", 0x20_7000, "r"),
    ("proc_root_inode_operations", 0x20_7100, "r"),
    ("proc_sops", 0x20_7200, "R"),
    ("simple_dir_operations", 0x20_7300, "R"),
    ("simple_dir_inode_operations", 0x20_7400, "R"),
    ("ramfs_ops", 0x20_7500, "r"),
    ("ram_aops", 0x20_7600, "r"),
    // a character device's (the console's)
    ("tty_fops", 0x20_7700, "r"),
    ("__end_rodata", RODATA_END, "D"),
    ("init_task", 0x40_0000, "D"),
    ("init_cred", 0x40_2000, "D"),
    ("init_mm", 0x40_2100, "D"),
    ("init_pid_ns", 0x40_3000, "D"),
    ("modules", 0x40_3100, "d"),
    ("module_kset", 0x40_3110, "D"),
    ("mod_tree", 0x40_3140, "d"),
    ("idt_table", 0x40_4000, "D"),
    ("__per_cpu_offset", 0x40_5000, "D"),
    ("current_task", 0x40_5100, "D"),
    ("runqueues", 0x40_5400, "D"),
    ("cr4_pinned_bits", 0x40_5d00, "d"),
    ("boot_cpu_data", 0x40_5e00, "D"),
    ("__supported_pte_mask", 0x40_5d08, "D"),
    ("nr_cpu_ids", 0x40_5108, "D"),
    ("page_offset_base", 0x40_5110, "D"),
    ("vmemmap_base", 0x40_5118, "D"),
    ("vmalloc_base", 0x40_5120, "D"),
    ("ftrace_ops_list", 0x40_5200, "D"),
    ("ftrace_list_end", 0x40_5300, "D"),
    ("kprobe_table", 0x40_6000, "b"),
    ("net_namespace_list", 0x40_6400, "D"),
    ("init_net", 0x40_7000, "D"),
    ("tty_ldiscs", 0x40_9000, "b"),
    ("tty_drivers", 0x40_9100, "D"),
    ("prog_idr", 0x40_9200, "b"),
    ("link_idr", 0x40_9240, "b"),
    ("perf_cpu_context", 0x40_9300, "D"),
    ("syscalls_metadata", 0x40_9400, "b"),
    ("init_top_pgt", PGT_OFFSET, "D"),
];

/// Image offset of the first `struct tracepoint` (0x80 apart, in [`TRACEPOINTS`]
/// order).
pub const TRACEPOINT_OFFSET: u64 = 0x40_a000;

/// A profile of the synthetic kernel: every type and symbol its builder places, as a
/// generator would write them for a real build.
pub fn synthetic_profile() -> Profile {
    let mut symbols = BTreeMap::new();
    let mut sym = |name: &str, off: u64, kind: &str| {
        symbols.insert(
            name.to_string(),
            Symbol {
                address: TEXT + off,
                kind: kind.to_string(),
            },
        );
    };
    for &(name, off, kind) in SYMBOLS {
        sym(name, off, kind);
    }
    for (i, name) in NOTIFIER_CHAINS.iter().enumerate() {
        sym(name, 0x40_8000 + 0x40 * i as u64, "D");
    }
    for (i, name) in SEQ_OPS.iter().enumerate() {
        sym(name, 0x20_6000 + 0x40 * i as u64, "r");
    }
    for (i, name) in TRACEPOINTS.iter().enumerate() {
        sym(
            &format!("__tracepoint_{name}"),
            TRACEPOINT_OFFSET + 0x80 * i as u64,
            "D",
        );
    }
    let types = TYPES
        .iter()
        .map(|&(name, size, fields)| {
            let fields = fields
                .iter()
                .map(|&(f, offset, ty)| {
                    (
                        f.to_string(),
                        Field {
                            offset,
                            bit_offset: None,
                            bit_size: None,
                            ty: ty.to_string(),
                        },
                    )
                })
                .collect();
            (
                name.to_string(),
                TypeDef {
                    kind: TypeKind::Struct,
                    size,
                    fields,
                },
            )
        })
        .collect();
    Profile {
        format_version: "1.0".into(),
        kernel: KernelIdentity {
            release: "6.1.0-synthetic".into(),
            banner: BANNER.into(),
            arch: "x86_64".into(),
            build_id: None,
        },
        provenance: Provenance {
            source: crate::profile::SourceKind::Dwarf,
            inputs: Vec::new(),
            tool: "vmi-core synthetic kernel".into(),
        },
        symbols,
        types,
        // a 1.0 profile: readers fall back on their own enum values
        enums: Default::default(),
        missing: Default::default(),
    }
}
