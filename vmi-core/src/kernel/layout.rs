//! The offsets the object readers use, resolved once from a profile.
//!
//! Each field is looked up under its aliases (kernel versions rename fields, see
//! [`crate::profile::needs`]); a walk fails up front with the missing field's name
//! instead of reading at a wrong offset.

use crate::kernel::KernelError;
use crate::profile::Profile;

/// Offsets into `task_struct` and the structures a process walk touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// `task_struct.tasks` (list of thread-group leaders)
    pub task_tasks: u64,
    /// `task_struct.pid`
    pub task_pid: u64,
    /// `task_struct.tgid`
    pub task_tgid: u64,
    /// `task_struct.comm` (16 bytes)
    pub task_comm: u64,
    /// `task_struct.__state` or `.state`
    pub task_state: u64,
    /// `task_struct.flags`
    pub task_flags: u64,
    /// `task_struct.mm`
    pub task_mm: u64,
    /// `task_struct.real_parent`
    pub task_real_parent: u64,
    /// `task_struct.parent`
    pub task_parent: u64,
    /// `task_struct.group_leader`
    pub task_group_leader: u64,
    /// `task_struct.thread_node` (in `signal_struct.thread_head`)
    pub task_thread_node: u64,
    /// `task_struct.signal`
    pub task_signal: u64,
    /// `task_struct.real_cred` (objective credentials)
    pub task_real_cred: u64,
    /// `task_struct.cred` (subjective credentials)
    pub task_cred: u64,
    /// `task_struct.start_time` (ns, monotonic)
    pub task_start_time: u64,
    /// `task_struct.exit_state`
    pub task_exit_state: u64,
    /// `signal_struct.thread_head`
    pub signal_thread_head: u64,
    /// `signal_struct.nr_threads`
    pub signal_nr_threads: u64,
    /// `cred.uid`, `.gid`, `.euid`, `.egid` (kuid_t/kgid_t: one u32)
    pub cred_uid: u64,
    /// `cred.gid`
    pub cred_gid: u64,
    /// `cred.euid`
    pub cred_euid: u64,
    /// `cred.egid`
    pub cred_egid: u64,
    /// `mm_struct.pgd`
    pub mm_pgd: u64,
    /// `module.list`
    pub module_list: u64,
    /// `module.name` (char[MODULE_NAME_LEN - sizeof(unsigned long)])
    pub module_name: u64,
    /// size of `module.name`
    pub module_name_len: u64,
    /// `module.state`
    pub module_state: u64,
    /// `module.mem` (6.4+: `mem[MOD_TEXT]`, a `module_memory`) or `module.core_layout`
    /// (a `module_layout`)
    pub module_core: u64,
    /// `base` (a pointer) and `size` (an `unsigned int`) in that struct: 0 and 8 up to
    /// 7.1, 0 and 12 from 7.2 (`bool is_rox` between them). A profile that lacks the
    /// struct (made before it was needed) gets 0 and 8.
    pub module_core_base: u64,
    /// See `module_core_base`.
    pub module_core_size: u64,
    /// The span of `task_struct` the walk reads in one go: `[start, end)`.
    pub task_span: (u64, u64),
}

pub(crate) fn field(p: &Profile, ty: &str, aliases: &[&str]) -> Result<u64, KernelError> {
    p.field_any(ty, aliases)
        .map(|(_, f)| f.offset)
        .ok_or_else(|| KernelError::MissingField(format!("{ty}.{}", aliases[0])))
}

impl Layout {
    /// Resolve every offset from `profile`.
    pub fn from_profile(p: &Profile) -> Result<Layout, KernelError> {
        let t = |aliases: &[&str]| field(p, "task_struct", aliases);
        let module_name_len = p
            .field("module", "name")
            .and_then(|f| array_len(&f.ty))
            .unwrap_or(56);
        let core_ty = if p.field("module", "mem").is_some() {
            "module_memory"
        } else {
            "module_layout"
        };
        let core_field = |name: &str, old: u64| {
            p.field(core_ty, name)
                .map(|f| f.offset)
                .filter(|&o| o <= 56)
                .unwrap_or(old)
        };
        let mut l = Layout {
            task_tasks: t(&["tasks"])?,
            task_pid: t(&["pid"])?,
            task_tgid: t(&["tgid"])?,
            task_comm: t(&["comm"])?,
            task_state: t(&["__state", "state"])?,
            task_flags: t(&["flags"])?,
            task_mm: t(&["mm"])?,
            task_real_parent: t(&["real_parent"])?,
            task_parent: t(&["parent"])?,
            task_group_leader: t(&["group_leader"])?,
            task_thread_node: t(&["thread_node"])?,
            task_signal: t(&["signal"])?,
            task_real_cred: t(&["real_cred"])?,
            task_cred: t(&["cred"])?,
            task_start_time: t(&["start_time"])?,
            task_exit_state: t(&["exit_state"])?,
            signal_thread_head: field(p, "signal_struct", &["thread_head"])?,
            signal_nr_threads: field(p, "signal_struct", &["nr_threads"])?,
            cred_uid: field(p, "cred", &["uid"])?,
            cred_gid: field(p, "cred", &["gid"])?,
            cred_euid: field(p, "cred", &["euid"])?,
            cred_egid: field(p, "cred", &["egid"])?,
            mm_pgd: field(p, "mm_struct", &["pgd"])?,
            module_list: field(p, "module", &["list"])?,
            module_name: field(p, "module", &["name"])?,
            module_name_len: module_name_len.clamp(1, 256),
            module_state: field(p, "module", &["state"])?,
            module_core: field(p, "module", &["mem", "core_layout"])?,
            module_core_base: core_field("base", 0),
            module_core_size: core_field("size", 8),
            task_span: (0, 0),
        };
        let offsets = [
            (l.task_tasks, 16),
            (l.task_pid, 4),
            (l.task_tgid, 4),
            (l.task_comm, 16),
            (l.task_state, 4),
            (l.task_flags, 4),
            (l.task_mm, 8),
            (l.task_real_parent, 8),
            (l.task_parent, 8),
            (l.task_group_leader, 8),
            (l.task_thread_node, 16),
            (l.task_signal, 8),
            (l.task_real_cred, 8),
            (l.task_cred, 8),
            (l.task_start_time, 8),
            (l.task_exit_state, 4),
        ];
        let start = offsets.iter().map(|(o, _)| *o).min().unwrap_or(0);
        let end = offsets.iter().map(|(o, n)| o + n).max().unwrap_or(0);
        if end - start > 64 * 1024 {
            return Err(KernelError::MissingField(format!(
                "task_struct: fields span {} bytes, not a task_struct layout",
                end - start
            )));
        }
        l.task_span = (start, end);
        Ok(l)
    }
}

/// `char[56]` → 56.
pub(crate) fn array_len(ty: &str) -> Option<u64> {
    let open = ty.rfind('[')?;
    ty[open + 1..].strip_suffix(']')?.parse().ok()
}
