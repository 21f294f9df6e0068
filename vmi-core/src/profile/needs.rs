//! What the detector needs from a profile, declared once.
//!
//! Each needed field lists its aliases in order of preference (kernel versions rename
//! fields: `task_struct.__state` since 5.14, `.state` before; `module.mem` since 6.4,
//! `.core_layout` before). A field is *optional* when some supported kernels lack it
//! under every alias; a missing required field is listed in the profile's `missing`
//! section and reported as a warning, never written as 0.

/// A needed field: aliases in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeededField {
    /// Names the field has had; the first one found is used.
    pub aliases: &'static [&'static str],
    /// True when some supported kernels have none of the aliases.
    pub optional: bool,
}

/// A needed struct or union with its needed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeededType {
    /// The type's name (`struct` and `union` share one namespace in profiles).
    pub name: &'static str,
    /// Its needed fields.
    pub fields: &'static [NeededField],
}

/// A needed symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeededSymbol {
    /// Names the symbol has had; the first one found is used.
    pub aliases: &'static [&'static str],
    /// True when some supported kernels lack it.
    pub optional: bool,
}

const fn f(aliases: &'static [&'static str]) -> NeededField {
    NeededField {
        aliases,
        optional: false,
    }
}

const fn opt(aliases: &'static [&'static str]) -> NeededField {
    NeededField {
        aliases,
        optional: true,
    }
}

const fn sym(aliases: &'static [&'static str]) -> NeededSymbol {
    NeededSymbol {
        aliases,
        optional: false,
    }
}

const fn opt_sym(aliases: &'static [&'static str]) -> NeededSymbol {
    NeededSymbol {
        aliases,
        optional: true,
    }
}

/// The types of the default profile.
pub const TYPES: &[NeededType] = &[
    NeededType {
        name: "task_struct",
        fields: &[
            f(&["tasks"]),
            f(&["pid"]),
            f(&["tgid"]),
            f(&["comm"]),
            f(&["__state", "state"]),
            f(&["flags"]),
            f(&["mm"]),
            f(&["active_mm"]),
            f(&["parent"]),
            f(&["real_parent"]),
            f(&["children"]),
            f(&["sibling"]),
            f(&["group_leader"]),
            f(&["thread_node"]),
            opt(&["thread_group"]),
            opt(&["perf_event_list"]),
            opt(&["perf_event_ctxp"]),
            f(&["signal"]),
            f(&["cred"]),
            f(&["real_cred"]),
            f(&["start_time"]),
            f(&["start_boottime", "real_start_time"]),
            f(&["thread_pid"]),
            f(&["pid_links"]),
            f(&["stack"]),
            f(&["on_cpu"]),
            f(&["exit_state"]),
            f(&["files"]),
        ],
    },
    NeededType {
        name: "signal_struct",
        fields: &[f(&["nr_threads"]), f(&["thread_head"])],
    },
    NeededType {
        name: "mm_struct",
        fields: &[
            f(&["pgd"]),
            f(&["arg_start"]),
            f(&["arg_end"]),
            f(&["env_end"]),
            f(&["start_code"]),
            f(&["end_code"]),
            f(&["exe_file"]),
            opt(&["mm_mt"]),
            opt(&["mmap"]),
            f(&["map_count"]),
            f(&["start_brk"]),
            f(&["brk"]),
            f(&["start_stack"]),
        ],
    },
    // a process's memory mappings: in the maple tree mm_mt (6.1 on) or on the list
    // mmap/vm_next (before); anon_name with CONFIG_ANON_VMA_NAME (5.17 on)
    NeededType {
        name: "vm_area_struct",
        fields: &[
            f(&["vm_start"]),
            f(&["vm_end"]),
            f(&["vm_flags"]),
            f(&["vm_pgoff"]),
            f(&["vm_file"]),
            f(&["vm_mm"]),
            f(&["vm_ops"]),
            f(&["vm_private_data"]),
            opt(&["vm_next"]),
            opt(&["anon_name"]),
        ],
    },
    NeededType {
        name: "vm_special_mapping",
        fields: &[f(&["name"])],
    },
    NeededType {
        name: "super_block",
        fields: &[f(&["s_dev"])],
    },
    NeededType {
        name: "cred",
        fields: &[
            f(&["uid"]),
            f(&["gid"]),
            f(&["suid"]),
            f(&["sgid"]),
            f(&["euid"]),
            f(&["egid"]),
            f(&["fsuid"]),
            f(&["fsgid"]),
            f(&["usage"]),
            f(&["user"]),
        ],
    },
    NeededType {
        name: "user_struct",
        fields: &[f(&["uid"])],
    },
    NeededType {
        name: "list_head",
        fields: &[f(&["next"]), f(&["prev"])],
    },
    NeededType {
        name: "hlist_head",
        fields: &[f(&["first"])],
    },
    NeededType {
        name: "hlist_node",
        fields: &[f(&["next"]), f(&["pprev"])],
    },
    NeededType {
        name: "module",
        fields: &[
            f(&["list"]),
            f(&["name"]),
            f(&["state"]),
            f(&["mkobj"]),
            opt(&["mem"]),
            opt(&["core_layout"]),
            f(&["num_syms"]),
            f(&["syms"]),
        ],
    },
    NeededType {
        name: "module_kobject",
        fields: &[f(&["kobj"]), f(&["mod"])],
    },
    NeededType {
        name: "kobject",
        fields: &[f(&["name"]), f(&["entry"]), f(&["parent"]), f(&["kset"])],
    },
    NeededType {
        name: "kset",
        fields: &[f(&["list"]), f(&["kobj"])],
    },
    NeededType {
        name: "pid",
        fields: &[f(&["level"]), f(&["numbers"]), f(&["tasks"])],
    },
    NeededType {
        name: "upid",
        fields: &[f(&["nr"]), f(&["ns"])],
    },
    NeededType {
        name: "pid_namespace",
        fields: &[f(&["idr"]), f(&["level"])],
    },
    NeededType {
        name: "idr",
        fields: &[f(&["idr_rt"]), f(&["idr_base"])],
    },
    NeededType {
        name: "xarray",
        fields: &[f(&["xa_head"])],
    },
    NeededType {
        name: "xa_node",
        fields: &[f(&["shift"]), f(&["slots"]), f(&["count"])],
    },
    // NR_syscalls, the length of sys_call_table, is the length of this array (present
    // with CONFIG_FTRACE_SYSCALLS, as in every distribution kernel)
    NeededType {
        name: "trace_array",
        fields: &[opt(&["enter_syscall_files"])],
    },
    NeededType {
        name: "file",
        fields: &[
            f(&["f_path"]),
            f(&["f_op"]),
            f(&["private_data"]),
            f(&["f_inode"]),
        ],
    },
    // open files and the internet sockets among them
    NeededType {
        name: "files_struct",
        fields: &[f(&["fdt"])],
    },
    NeededType {
        name: "fdtable",
        fields: &[f(&["max_fds"]), f(&["fd"])],
    },
    NeededType {
        name: "inode",
        fields: &[f(&["i_ino"]), f(&["i_sb"])],
    },
    NeededType {
        name: "socket",
        fields: &[f(&["sk"])],
    },
    NeededType {
        name: "sock",
        fields: &[f(&["__sk_common"]), f(&["sk_protocol"]), f(&["sk_type"])],
    },
    // IPv6 addresses with CONFIG_IPV6
    NeededType {
        name: "sock_common",
        fields: &[
            f(&["skc_family"]),
            f(&["skc_state"]),
            f(&["skc_rcv_saddr"]),
            f(&["skc_daddr"]),
            f(&["skc_num"]),
            f(&["skc_dport"]),
            opt(&["skc_v6_rcv_saddr"]),
            opt(&["skc_v6_daddr"]),
        ],
    },
    // crossing mount points on the way from a dentry to the root
    NeededType {
        name: "mount",
        fields: &[f(&["mnt_parent"]), f(&["mnt_mountpoint"]), f(&["mnt"])],
    },
    NeededType {
        name: "vfsmount",
        fields: &[f(&["mnt_root"])],
    },
    NeededType {
        name: "path",
        fields: &[f(&["dentry"]), f(&["mnt"])],
    },
    NeededType {
        name: "dentry",
        fields: &[f(&["d_name"]), f(&["d_parent"])],
    },
    NeededType {
        name: "qstr",
        fields: &[f(&["name"])],
    },
    // ftrace: the registered ftrace_ops and the functions each filters on
    // (CONFIG_DYNAMIC_FTRACE, in every distribution kernel)
    NeededType {
        name: "ftrace_ops",
        fields: &[
            f(&["func"]),
            f(&["next"]),
            f(&["flags"]),
            f(&["saved_func"]),
            f(&["func_hash"]),
            f(&["trampoline"]),
            f(&["trampoline_size"]),
            // CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS, in ftrace_ops since 6.3
            opt(&["direct_call"]),
        ],
    },
    NeededType {
        name: "ftrace_ops_hash",
        fields: &[f(&["filter_hash"]), f(&["notrace_hash"])],
    },
    NeededType {
        name: "ftrace_hash",
        fields: &[f(&["size_bits"]), f(&["buckets"]), f(&["count"])],
    },
    NeededType {
        name: "ftrace_func_entry",
        fields: &[f(&["hlist"]), f(&["ip"]), f(&["direct"])],
    },
    // kprobes and kretprobes (CONFIG_KPROBES, in every supported kernel)
    NeededType {
        name: "kprobe",
        fields: &[
            f(&["hlist"]),
            f(&["list"]),
            f(&["addr"]),
            f(&["symbol_name"]),
            f(&["offset"]),
            f(&["pre_handler"]),
            f(&["post_handler"]),
            f(&["flags"]),
        ],
    },
    NeededType {
        name: "kretprobe",
        fields: &[f(&["kp"]), f(&["handler"]), f(&["entry_handler"])],
    },
    // the kernel's tracepoints and the probes registered on them
    NeededType {
        name: "tracepoint",
        fields: &[f(&["name"]), f(&["funcs"])],
    },
    NeededType {
        name: "tracepoint_func",
        fields: &[f(&["func"]), f(&["data"]), f(&["prio"])],
    },
    // eBPF: programs and links (prog_idr, link_idr; CONFIG_BPF_SYSCALL, in every
    // supported kernel); bpf_raw_tp_link is private to kernel/bpf/syscall.c before 6.9
    NeededType {
        name: "bpf_prog",
        fields: &[
            f(&["type"]),
            f(&["expected_attach_type"]),
            f(&["jited_len"]),
            f(&["tag"]),
            f(&["bpf_func"]),
            f(&["aux"]),
        ],
    },
    NeededType {
        name: "bpf_prog_aux",
        fields: &[
            f(&["id"]),
            f(&["name"]),
            f(&["attach_func_name"]),
            f(&["load_time"]),
            f(&["dst_prog", "linked_prog"]),
        ],
    },
    NeededType {
        name: "bpf_link",
        fields: &[f(&["id"]), f(&["type"]), f(&["prog"])],
    },
    NeededType {
        name: "bpf_raw_tp_link",
        fields: &[opt(&["btp"])],
    },
    NeededType {
        name: "bpf_raw_event_map",
        fields: &[f(&["tp"])],
    },
    // perf events opened by tasks, the BPF programs they run and their trace events
    // (CONFIG_PERF_EVENTS, CONFIG_EVENT_TRACING)
    NeededType {
        name: "perf_event",
        fields: &[
            opt(&["event_entry"]),
            opt(&["owner_entry"]),
            opt(&["pmu"]),
            opt(&["prog"]),
            opt(&["overflow_handler"]),
            opt(&["tp_event"]),
        ],
    },
    NeededType {
        name: "pmu",
        fields: &[opt(&["name"]), opt(&["entry"]), opt(&["pmu_cpu_context"])],
    },
    // the events of CPU and task contexts (pmu.pmu_cpu_context before 6.2, the per-CPU
    // perf_cpu_context from 6.2)
    NeededType {
        name: "perf_event_context",
        fields: &[opt(&["event_list"])],
    },
    NeededType {
        name: "perf_cpu_context",
        fields: &[opt(&["ctx"])],
    },
    NeededType {
        name: "trace_event_call",
        fields: &[opt(&["name"])],
    },
    // network namespaces and their netfilter hooks (CONFIG_NETFILTER; ARP and bridge
    // hooks with CONFIG_NETFILTER_FAMILY_ARP/_BRIDGE, IPv6 with CONFIG_IPV6)
    NeededType {
        name: "net",
        fields: &[f(&["list"]), f(&["nf"]), f(&["proc_net"])],
    },
    NeededType {
        name: "netns_nf",
        fields: &[
            f(&["hooks_ipv4"]),
            opt(&["hooks_ipv6"]),
            opt(&["hooks_arp"]),
            opt(&["hooks_bridge"]),
        ],
    },
    NeededType {
        name: "nf_hook_entries",
        fields: &[f(&["num_hook_entries"]), f(&["hooks"])],
    },
    NeededType {
        name: "nf_hook_entry",
        fields: &[f(&["hook"]), f(&["priv"])],
    },
    NeededType {
        name: "nf_hook_ops",
        fields: &[f(&["hook"]), f(&["pf"]), f(&["hooknum"]), f(&["priority"])],
    },
    // notifier chains
    NeededType {
        name: "notifier_block",
        fields: &[f(&["notifier_call"]), f(&["next"]), f(&["priority"])],
    },
    NeededType {
        name: "atomic_notifier_head",
        fields: &[f(&["head"])],
    },
    NeededType {
        name: "blocking_notifier_head",
        fields: &[f(&["head"])],
    },
    NeededType {
        name: "raw_notifier_head",
        fields: &[f(&["head"])],
    },
    // tty line disciplines and drivers: the function pointers of the ops tables are
    // every `ptr fn` member the profile has (these few at least)
    NeededType {
        name: "tty_ldisc_ops",
        fields: &[
            f(&["name"]),
            f(&["open"]),
            f(&["close"]),
            f(&["read"]),
            f(&["write"]),
            f(&["ioctl"]),
            f(&["receive_buf"]),
            f(&["receive_buf2"]),
        ],
    },
    NeededType {
        name: "tty_driver",
        fields: &[
            f(&["tty_drivers"]),
            f(&["name"]),
            f(&["driver_name"]),
            f(&["ops"]),
            f(&["num"]),
            f(&["ttys"]),
        ],
    },
    NeededType {
        name: "tty_operations",
        fields: &[
            f(&["open"]),
            f(&["close"]),
            f(&["write"]),
            f(&["ioctl"]),
            f(&["set_termios"]),
        ],
    },
    NeededType {
        name: "tty_struct",
        fields: &[f(&["name"]), f(&["ldisc"])],
    },
    NeededType {
        name: "tty_ldisc",
        fields: &[f(&["ops"])],
    },
    // /proc/net entries and their seq_file operations
    NeededType {
        name: "seq_operations",
        fields: &[f(&["start"]), f(&["stop"]), f(&["next"]), f(&["show"])],
    },
    NeededType {
        name: "proc_ops",
        fields: &[
            f(&["proc_open"]),
            f(&["proc_read"]),
            f(&["proc_read_iter"]),
            f(&["proc_write"]),
            f(&["proc_lseek"]),
            f(&["proc_release"]),
        ],
    },
    NeededType {
        name: "proc_dir_entry",
        fields: &[
            f(&["name"]),
            f(&["subdir"]),
            f(&["subdir_node"]),
            f(&["seq_ops"]),
            f(&["proc_ops"]),
        ],
    },
    NeededType {
        name: "rb_root",
        fields: &[f(&["rb_node"])],
    },
    NeededType {
        name: "rb_node",
        fields: &[f(&["rb_left"]), f(&["rb_right"])],
    },
];

/// Types some supported kernels lack entirely: in the profile when the kernel has
/// them, never listed as missing. `maple_tree` holds a process's mappings from 6.1 on.
/// A module's core text is `module.mem[MOD_TEXT]`, a `module_memory` (6.4+; 7.2 put
/// `bool is_rox` between its base and size), or `module.core_layout`, a
/// `module_layout` (before). `bpf_perf_link` links a BPF program to a perf event from
/// 5.15 on.
pub const OPTIONAL_TYPES: &[NeededType] = &[
    NeededType {
        name: "maple_tree",
        fields: &[f(&["ma_root"]), f(&["ma_flags"])],
    },
    NeededType {
        name: "module_memory",
        fields: &[f(&["base"]), f(&["size"])],
    },
    NeededType {
        name: "module_layout",
        fields: &[f(&["base"]), f(&["size"])],
    },
    // a BPF link to a perf event (kprobe, uprobe, tracepoint): 5.15+, private to
    // kernel/bpf/syscall.c
    NeededType {
        name: "bpf_perf_link",
        fields: &[f(&["perf_file"])],
    },
];

/// The symbols of the default profile.
pub const SYMBOLS: &[NeededSymbol] = &[
    sym(&["linux_banner"]),
    sym(&["_text"]),
    sym(&["_stext"]),
    sym(&["_etext"]),
    sym(&["__start_rodata"]),
    sym(&["__end_rodata"]),
    sym(&["init_task"]),
    sym(&["init_cred"]),
    sym(&["init_mm"]),
    sym(&["init_top_pgt", "swapper_pg_dir"]),
    sym(&["init_pid_ns"]),
    sym(&["modules"]),
    sym(&["module_kset"]),
    sym(&["sys_call_table"]),
    opt_sym(&["ia32_sys_call_table"]),
    opt_sym(&["x64_sys_call"]),
    sym(&["idt_table"]),
    // the early exception stubs: reserved vectors 20..31 keep pointing at them after
    // boot (idt_setup_early_handler fills all 32, idt_setup_traps only the defined)
    opt_sym(&["early_idt_handler_array"]),
    sym(&["__per_cpu_offset"]),
    // the task each CPU runs: the per-CPU `current_task` (inside `pcpu_hot`, at its
    // start, from 6.2 to 6.14)
    sym(&["current_task", "pcpu_hot"]),
    sym(&["nr_cpu_ids"]),
    sym(&["page_offset_base"]),
    sym(&["vmemmap_base"]),
    sym(&["vmalloc_base"]),
    // the kernel's own symbol table, read in guest memory to name addresses
    opt_sym(&["kallsyms_num_syms"]),
    opt_sym(&["kallsyms_names"]),
    opt_sym(&["kallsyms_markers"]),
    opt_sym(&["kallsyms_token_table"]),
    opt_sym(&["kallsyms_token_index"]),
    opt_sym(&["kallsyms_offsets"]),
    opt_sym(&["kallsyms_relative_base"]),
    opt_sym(&["kallsyms_addresses"]),
    // ftrace: the list of registered ftrace_ops and its end marker
    sym(&["ftrace_ops_list"]),
    sym(&["ftrace_list_end"]),
    // kprobes: the hash table of registered probes, and the handlers that mark an
    // aggregate probe and a kretprobe
    sym(&["kprobe_table"]),
    sym(&["aggr_pre_handler"]),
    sym(&["pre_handler_kretprobe"]),
    // the kernel's tracepoints (their PC-relative pointers)
    sym(&["__start___tracepoints_ptrs"]),
    sym(&["__stop___tracepoints_ptrs"]),
    // network namespaces (their netfilter hooks, their /proc/net)
    sym(&["net_namespace_list"]),
    sym(&["init_net"]),
    // notifier chains (each optional: a kernel built without the subsystem lacks it)
    opt_sym(&["keyboard_notifier_list"]),
    opt_sym(&["vt_notifier_list"]),
    opt_sym(&["module_notify_list"]),
    opt_sym(&["netdev_chain"]),
    opt_sym(&["inetaddr_chain"]),
    opt_sym(&["inet6addr_chain"]),
    opt_sym(&["netlink_chain"]),
    opt_sym(&["reboot_notifier_list"]),
    opt_sym(&["panic_notifier_list"]),
    opt_sym(&["die_chain"]),
    opt_sym(&["pm_chain_head"]),
    // tty line disciplines and drivers
    sym(&["tty_ldiscs"]),
    sym(&["tty_drivers"]),
    // the seq_operations of /proc/net/{tcp,udp,raw}{,6}, arp, unix, packet
    sym(&["tcp4_seq_ops"]),
    sym(&["udp_seq_ops"]),
    opt_sym(&["tcp6_seq_ops"]),
    opt_sym(&["udp6_seq_ops"]),
    opt_sym(&["raw_seq_ops"]),
    opt_sym(&["raw6_seq_ops"]),
    opt_sym(&["arp_seq_ops"]),
    opt_sym(&["unix_seq_ops"]),
    opt_sym(&["packet_seq_ops"]),
    // a file is a socket when its f_op is this
    sym(&["socket_file_ops"]),
    // the operations of mappings the kernel installs (the vDSO's, ...): their names
    opt_sym(&["special_mapping_vmops"]),
    // the IDRs of BPF programs and links; the file operations of BPF and perf event
    // files (who holds them open)
    sym(&["prog_idr"]),
    sym(&["link_idr"]),
    opt_sym(&["bpf_prog_fops"]),
    opt_sym(&["bpf_link_fops"]),
    opt_sym(&["perf_fops"]),
    opt_sym(&["perf_cpu_context"]),
    opt_sym(&["pmus"]),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = TYPES.iter().chain(OPTIONAL_TYPES).map(|t| t.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
        for t in TYPES.iter().chain(OPTIONAL_TYPES) {
            assert!(!t.fields.is_empty(), "{}", t.name);
            for field in t.fields {
                assert!(!field.aliases.is_empty(), "{}", t.name);
            }
        }
    }
}

/// The needed set as sorted text, one line per type, field and symbol: what the golden
/// test `tests/data/needs.txt` freezes.
#[cfg(test)]
fn render() -> String {
    let mut lines = Vec::new();
    for (t, type_optional) in TYPES
        .iter()
        .map(|t| (t, false))
        .chain(OPTIONAL_TYPES.iter().map(|t| (t, true)))
    {
        lines.push(format!(
            "type {}{}",
            t.name,
            if type_optional { " (optional type)" } else { "" }
        ));
        for f in t.fields {
            lines.push(format!(
                "field {}.{}{}",
                t.name,
                f.aliases.join("|"),
                if f.optional { " (optional)" } else { "" }
            ));
        }
    }
    for s in SYMBOLS {
        lines.push(format!(
            "symbol {}{}",
            s.aliases.join("|"),
            if s.optional { " (optional)" } else { "" }
        ));
    }
    lines.sort();
    lines.dedup();
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod golden {
    /// The needed set is frozen in `tests/data/needs.txt`: a change to what profiles
    /// contain is a reviewed diff of that file (regenerate with `UPDATE_NEEDS=1`).
    #[test]
    fn needed_set_matches_the_golden_list() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/needs.txt");
        let now = super::render();
        if std::env::var_os("UPDATE_NEEDS").is_some() {
            std::fs::write(path, &now).unwrap();
        }
        let golden = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            now == golden,
            "the needed set changed (UPDATE_NEEDS=1 rewrites {path}):\n{}",
            diff(&golden, &now)
        );
    }

    fn diff(old: &str, new: &str) -> String {
        let old: std::collections::BTreeSet<&str> = old.lines().collect();
        let new: std::collections::BTreeSet<&str> = new.lines().collect();
        let gone = old.difference(&new).map(|l| format!("- {l}"));
        let added = new.difference(&old).map(|l| format!("+ {l}"));
        gone.chain(added).collect::<Vec<_>>().join("\n")
    }
}
