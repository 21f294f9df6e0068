//! The offsets the object readers use, resolved once from a profile.
//!
//! Each field is looked up under its aliases (kernel versions rename fields, see
//! [`crate::profile::needs`]); a walk fails up front with the missing field's name
//! instead of reading at a wrong offset.

use crate::kernel::KernelError;
use crate::profile::Profile;

crate::kernel_layout! {
    /// Offsets into `task_struct` and the structures a process walk touches.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Layout(p) {
        /// `task_struct.tasks` (list of thread-group leaders)
        pub task_tasks: u64 = "task_struct" ["tasks"],
        /// `task_struct.pid`
        pub task_pid: u64 = "task_struct" ["pid"],
        /// `task_struct.tgid`
        pub task_tgid: u64 = "task_struct" ["tgid"],
        /// `task_struct.comm` (16 bytes)
        pub task_comm: u64 = "task_struct" ["comm"],
        /// `task_struct.__state` or `.state`
        pub task_state: u64 = "task_struct" ["__state", "state"],
        /// `task_struct.flags`
        pub task_flags: u64 = "task_struct" ["flags"],
        /// `task_struct.mm`
        pub task_mm: u64 = "task_struct" ["mm"],
        /// `task_struct.real_parent`
        pub task_real_parent: u64 = "task_struct" ["real_parent"],
        /// `task_struct.parent`
        pub task_parent: u64 = "task_struct" ["parent"],
        /// `task_struct.group_leader`
        pub task_group_leader: u64 = "task_struct" ["group_leader"],
        /// `task_struct.thread_node` (in `signal_struct.thread_head`)
        pub task_thread_node: u64 = "task_struct" ["thread_node"],
        /// `task_struct.signal`
        pub task_signal: u64 = "task_struct" ["signal"],
        /// `task_struct.real_cred` (objective credentials)
        pub task_real_cred: u64 = "task_struct" ["real_cred"],
        /// `task_struct.cred` (subjective credentials)
        pub task_cred: u64 = "task_struct" ["cred"],
        /// `task_struct.start_time` (ns, monotonic)
        pub task_start_time: u64 = "task_struct" ["start_time"],
        /// `task_struct.exit_state`
        pub task_exit_state: u64 = "task_struct" ["exit_state"],
        /// `signal_struct.thread_head`
        pub signal_thread_head: u64 = "signal_struct" ["thread_head"],
        /// `signal_struct.nr_threads`
        pub signal_nr_threads: u64 = "signal_struct" ["nr_threads"],
        /// `cred.uid`, `.gid`, `.euid`, `.egid` (kuid_t/kgid_t: one u32)
        pub cred_uid: u64 = "cred" ["uid"],
        /// `cred.gid`
        pub cred_gid: u64 = "cred" ["gid"],
        /// `cred.euid`
        pub cred_euid: u64 = "cred" ["euid"],
        /// `cred.egid`
        pub cred_egid: u64 = "cred" ["egid"],
        /// `mm_struct.pgd`
        pub mm_pgd: u64 = "mm_struct" ["pgd"],
        /// `module.list`
        pub module_list: u64 = "module" ["list"],
        /// `module.name` (char[MODULE_NAME_LEN - sizeof(unsigned long)])
        pub module_name: u64 = "module" ["name"],
        /// `module.state`
        pub module_state: u64 = "module" ["state"],
        /// `module.mem` (6.4+: `mem[MOD_TEXT]`, a `module_memory`)
        pub module_mem: Option<u64> = opt "module" ["mem"],
        /// `module.core_layout` (before 6.4: a `module_layout`)
        pub module_core_layout: Option<u64> = opt "module" ["core_layout"],
    }
    computed {
        /// `module.mem` or, before 6.4, `module.core_layout`
        pub module_core: u64 = module_mem
            .or(module_core_layout)
            .ok_or_else(|| KernelError::MissingField("module.mem".into()))?,
        /// The size of a `module_memory` when the module has `mem` (6.4+: its other
        /// regions, data and read-only data, are the next elements of `mem`).
        pub module_mem_stride: Option<u64> = module_mem
            .and(p.types.get("module_memory"))
            .map(|t| t.size)
            .filter(|s| (16..=256).contains(s)),
        /// size of `module.name`
        pub module_name_len: u64 = p
            .field("module", "name")
            .and_then(|f| array_len(&f.ty))
            .unwrap_or(56)
            .clamp(1, 256),
        /// `base` (a pointer) and `size` (an `unsigned int`) in that struct: 0 and 8 up to
        /// 7.1, 0 and 12 from 7.2 (`bool is_rox` between them). A profile that lacks the
        /// struct (made before it was needed) gets 0 and 8.
        pub module_core_base: u64 = module_core_field(p, "base", 0),
        /// See `module_core_base`.
        pub module_core_size: u64 = module_core_field(p, "size", 8),
        /// The span of `task_struct` the walk reads in one go: `[start, end)`.
        pub task_span: (u64, u64) = task_span(&[
            (task_tasks, 16),
            (task_pid, 4),
            (task_tgid, 4),
            (task_comm, 16),
            (task_state, 4),
            (task_flags, 4),
            (task_mm, 8),
            (task_real_parent, 8),
            (task_parent, 8),
            (task_group_leader, 8),
            (task_thread_node, 16),
            (task_signal, 8),
            (task_real_cred, 8),
            (task_cred, 8),
            (task_start_time, 8),
            (task_exit_state, 4),
        ])?,
    }
    // the struct `module_core` is: read by `module_core_field`, under both names
    also [
        opt_type "module_memory" ["base"],
        opt_type "module_memory" ["size"],
        opt_type "module_layout" ["base"],
        opt_type "module_layout" ["size"],
    ]
}

/// Fields profiles carry that no reader in vmi-core uses (the detector's ISF output and
/// other consumers of a profile may): declared here so that they stay in the needed set.
pub const UNREAD: crate::profile::needs::Declaration = crate::declaration!(
    "unread";
    fields [
        "task_struct" ["active_mm"],
        "task_struct" ["children"],
        "task_struct" ["sibling"],
        opt "task_struct" ["thread_group"],
        "task_struct" ["start_boottime", "real_start_time"],
        "task_struct" ["thread_pid"],
        "task_struct" ["stack"],
        "task_struct" ["on_cpu"],
        "mm_struct" ["start_code"],
        "mm_struct" ["end_code"],
        "module" ["num_syms"],
        "module" ["syms"],
        "kobject" ["parent"],
        "kobject" ["kset"],
        "kset" ["kobj"],
        "pid" ["level"],
        "upid" ["ns"],
        "pid_namespace" ["level"],
        "xa_node" ["count"],
        "cred" ["usage"],
        "list_head" ["next"],
        "list_head" ["prev"],
        "hlist_head" ["first"],
        "hlist_node" ["next"],
        "hlist_node" ["pprev"],
    ];
    symbols [
        ["_text"],
        ["__start_rodata"],
        ["__end_rodata"],
        ["init_mm"],
        ["page_offset_base"],
        ["vmemmap_base"],
        ["vmalloc_base"],
    ]
);

pub(crate) fn field(p: &Profile, ty: &str, aliases: &[&str]) -> Result<u64, KernelError> {
    p.field_any(ty, aliases)
        .map(|(_, f)| f.offset)
        .ok_or_else(|| KernelError::MissingField(format!("{ty}.{}", aliases[0])))
}

/// A field of the struct `module.mem` or `module.core_layout` is (`module_memory` when
/// the module has `mem`), when at a plausible offset; `old` otherwise.
fn module_core_field(p: &Profile, name: &str, old: u64) -> u64 {
    let core_ty = if p.field("module", "mem").is_some() {
        "module_memory"
    } else {
        "module_layout"
    };
    p.field(core_ty, name)
        .map(|f| f.offset)
        .filter(|&o| o <= 56)
        .unwrap_or(old)
}

/// `[start, end)` of the (offset, size) fields, refused when wider than 64 KiB.
fn task_span(offsets: &[(u64, u64)]) -> Result<(u64, u64), KernelError> {
    let start = offsets.iter().map(|(o, _)| *o).min().unwrap_or(0);
    let end = offsets.iter().map(|(o, n)| o + n).max().unwrap_or(0);
    if end - start > 64 * 1024 {
        return Err(KernelError::MissingField(format!(
            "task_struct: fields span {} bytes, not a task_struct layout",
            end - start
        )));
    }
    Ok((start, end))
}

/// `char[56]` → 56.
pub(crate) fn array_len(ty: &str) -> Option<u64> {
    let open = ty.rfind('[')?;
    ty[open + 1..].strip_suffix(']')?.parse().ok()
}
