//! eBPF: every loaded BPF program, every BPF link, and the perf events that run
//! programs.
//!
//! `bpf_prog_load` files each program in `prog_idr` (an IDR, i.e. an XArray keyed by
//! the program's id, walked as [`crate::kernel::pidns::xarray_entries`] walks the pid
//! IDR); `bpf_link_prime` files each link in `link_idr`. A program is a `struct
//! bpf_prog` (`type`, `expected_attach_type`, the 8-byte `tag`, the JITed image at
//! `bpf_func`, `jited_len` bytes) with a `struct bpf_prog_aux` (`id`, `name`,
//! `load_time`, `attach_func_name` for BTF-attached tracing and LSM programs,
//! `dst_prog` for programs attached to another program). A link (`struct bpf_link`:
//! `id`, `type`, `prog`) is what holds a program attached; a raw tracepoint link
//! (`struct bpf_raw_tp_link`) names its tracepoint through `btp->tp->name`.
//!
//! kprobe, uprobe and tracepoint programs can also be attached through a perf event
//! (`perf_event_open` then `PERF_EVENT_IOC_SET_BPF`, no link): the event's `prog` is the
//! program and `tp_event` the `trace_event_call` (its `name`, or for a static
//! tracepoint its `tp`, both at one offset: a `tp` points at a `struct tracepoint`
//! whose first word is a kernel pointer, a name's first word is text). Events opened
//! from user space are on their owner's `task_struct.perf_event_list`
//! (`perf_event.owner_entry`), as Volatility's `linux.tracing.perf_events` reads them.
//!
//! Fields used: [`BpfLayout`], [`PerfLayout`]. Symbols: `prog_idr`, `link_idr`.
//! Kernels without `CONFIG_PERF_EVENTS` (the perf fields absent) list no perf events;
//! a profile without `bpf_raw_tp_link.btp` (the type is private to
//! kernel/bpf/syscall.c before 6.9) names no raw tracepoint.
//!
//! Bounds: at most [`MAX_PROGRAMS`] programs and links each, [`MAX_EVENTS`] perf
//! events per task; XArray nodes are visited once; a list element seen twice is a
//! [`KernelError::Cycle`].

use std::collections::BTreeMap;

use crate::addr::Va;
use crate::kernel::objects::{is_kernel_va, name_at, read_err, u32_at, u64_at, walk_list};
use crate::kernel::pidns::{xarray_entries, PidLimits, XaShape};
use crate::kernel::{Kernel, KernelError, Process};
use crate::memory::{PhysicalMemory, VirtualMemory};
use crate::profile::Profile;

/// Most programs (and most links) read.
pub const MAX_PROGRAMS: usize = 1 << 16;
/// Most perf events read per task.
pub const MAX_EVENTS: usize = 1 << 12;
/// `BPF_OBJ_NAME_LEN`.
pub const NAME_LEN: usize = 16;
/// Longest attach function, tracepoint or PMU name read.
pub const MAX_NAME: usize = 256;

/// `enum bpf_prog_type` (uapi, stable), by value.
pub const PROG_TYPES: [&str; 33] = [
    "unspec",
    "socket_filter",
    "kprobe",
    "sched_cls",
    "sched_act",
    "tracepoint",
    "xdp",
    "perf_event",
    "cgroup_skb",
    "cgroup_sock",
    "lwt_in",
    "lwt_out",
    "lwt_xmit",
    "sock_ops",
    "sk_skb",
    "cgroup_device",
    "sk_msg",
    "raw_tracepoint",
    "cgroup_sock_addr",
    "lwt_seg6local",
    "lirc_mode2",
    "sk_reuseport",
    "flow_dissector",
    "cgroup_sysctl",
    "raw_tracepoint_writable",
    "cgroup_sockopt",
    "tracing",
    "struct_ops",
    "ext",
    "lsm",
    "sk_lookup",
    "syscall",
    "netfilter",
];

/// `enum bpf_attach_type` (uapi, stable), by value.
pub const ATTACH_TYPES: [&str; 49] = [
    "cgroup_inet_ingress",
    "cgroup_inet_egress",
    "cgroup_inet_sock_create",
    "cgroup_sock_ops",
    "sk_skb_stream_parser",
    "sk_skb_stream_verdict",
    "cgroup_device",
    "sk_msg_verdict",
    "cgroup_inet4_bind",
    "cgroup_inet6_bind",
    "cgroup_inet4_connect",
    "cgroup_inet6_connect",
    "cgroup_inet4_post_bind",
    "cgroup_inet6_post_bind",
    "cgroup_udp4_sendmsg",
    "cgroup_udp6_sendmsg",
    "lirc_mode2",
    "flow_dissector",
    "cgroup_sysctl",
    "cgroup_udp4_recvmsg",
    "cgroup_udp6_recvmsg",
    "cgroup_getsockopt",
    "cgroup_setsockopt",
    "trace_raw_tp",
    "trace_fentry",
    "trace_fexit",
    "modify_return",
    "lsm_mac",
    "trace_iter",
    "cgroup_inet4_getpeername",
    "cgroup_inet6_getpeername",
    "cgroup_inet4_getsockname",
    "cgroup_inet6_getsockname",
    "xdp_devmap",
    "cgroup_inet_sock_release",
    "xdp_cpumap",
    "sk_lookup",
    "xdp",
    "sk_skb_verdict",
    "sk_reuseport_select",
    "sk_reuseport_select_or_migrate",
    "perf_event",
    "trace_kprobe_multi",
    "lsm_cgroup",
    "struct_ops",
    "netfilter",
    "tcx_ingress",
    "tcx_egress",
    "trace_uprobe_multi",
];

/// `enum bpf_link_type` (uapi, stable), by value.
pub const LINK_TYPES: [&str; 15] = [
    "unspec",
    "raw_tracepoint",
    "tracing",
    "cgroup",
    "iter",
    "netns",
    "xdp",
    "perf_event",
    "kprobe_multi",
    "struct_ops",
    "netfilter",
    "tcx",
    "uprobe_multi",
    "netkit",
    "sockmap",
];

/// `BPF_LINK_TYPE_RAW_TRACEPOINT`.
pub const LINK_RAW_TRACEPOINT: u32 = 1;
/// `BPF_LINK_TYPE_PERF_EVENT`.
pub const LINK_PERF_EVENT: u32 = 7;

/// The names of the BPF enums (`bpf_prog_type`, `bpf_attach_type`, `bpf_link_type`): the
/// profile's (format 1.1, from the kernel's BTF or DWARF) where it has them, else
/// [`PROG_TYPES`], [`ATTACH_TYPES`] and [`LINK_TYPES`] (the `Default`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BpfNames {
    prog_types: Option<BTreeMap<i64, String>>,
    attach_types: Option<BTreeMap<i64, String>>,
    link_types: Option<BTreeMap<i64, String>>,
}

impl BpfNames {
    /// The profile's enums, where it has them.
    pub fn from_profile(p: &Profile) -> BpfNames {
        BpfNames {
            prog_types: p.enum_names("bpf_prog_type", "BPF_PROG_TYPE_"),
            attach_types: p.enum_names("bpf_attach_type", "BPF_"),
            link_types: p.enum_names("bpf_link_type", "BPF_LINK_TYPE_"),
        }
    }

    /// A program type's name (`kprobe`), `type-N` for one unknown.
    pub fn prog_type(&self, v: u32) -> String {
        named(self.prog_types.as_ref(), &PROG_TYPES, "type", v)
    }

    /// An attach type's name (`trace_fentry`), `attach-N` for one unknown.
    pub fn attach_type(&self, v: u32) -> String {
        named(self.attach_types.as_ref(), &ATTACH_TYPES, "attach", v)
    }

    /// A link type's name (`raw_tracepoint`), `link-N` for one unknown.
    pub fn link_type(&self, v: u32) -> String {
        named(self.link_types.as_ref(), &LINK_TYPES, "link", v)
    }
}

fn named(profile: Option<&BTreeMap<i64, String>>, table: &[&str], prefix: &str, v: u32) -> String {
    match profile {
        Some(names) => names
            .get(&i64::from(v))
            .cloned()
            .unwrap_or_else(|| format!("{prefix}-{v}")),
        None => enum_name(table, prefix, v),
    }
}

/// The name of entry `v` of a uapi enum table, `PREFIX-N` beyond it.
pub fn enum_name(table: &[&str], prefix: &str, v: u32) -> String {
    table
        .get(v as usize)
        .map_or_else(|| format!("{prefix}-{v}"), |s| (*s).to_string())
}

crate::kernel_layout! {
    /// Offsets of the program and link walks.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct BpfLayout(p) {
        /// `idr.idr_rt`
        pub idr_rt: u64 = "idr" ["idr_rt"],
        /// `xarray.xa_head`
        pub xa_head: u64 = "xarray" ["xa_head"],
        /// `bpf_prog.type`
        pub prog_type: u64 = "bpf_prog" ["type"],
        /// `bpf_prog.expected_attach_type`
        pub expected_attach_type: u64 = "bpf_prog" ["expected_attach_type"],
        /// `bpf_prog.jited_len`
        pub jited_len: u64 = "bpf_prog" ["jited_len"],
        /// `bpf_prog.tag`
        pub tag: u64 = "bpf_prog" ["tag"],
        /// `bpf_prog.bpf_func`
        pub bpf_func: u64 = "bpf_prog" ["bpf_func"],
        /// `bpf_prog.aux`
        pub aux: u64 = "bpf_prog" ["aux"],
        /// `bpf_prog_aux.id`
        pub aux_id: u64 = "bpf_prog_aux" ["id"],
        /// `bpf_prog_aux.name`
        pub aux_name: u64 = "bpf_prog_aux" ["name"],
        /// `bpf_prog_aux.attach_func_name`
        pub attach_func_name: u64 = "bpf_prog_aux" ["attach_func_name"],
        /// `bpf_prog_aux.load_time`
        pub load_time: u64 = "bpf_prog_aux" ["load_time"],
        /// `bpf_prog_aux.dst_prog` (`linked_prog` before 5.10)
        pub dst_prog: u64 = "bpf_prog_aux" ["dst_prog", "linked_prog"],
        /// `bpf_link.id`
        pub link_id: u64 = "bpf_link" ["id"],
        /// `bpf_link.type`
        pub link_type: u64 = "bpf_link" ["type"],
        /// `bpf_link.prog`
        pub link_prog: u64 = "bpf_link" ["prog"],
    }
    computed {
        /// The XArray node shape.
        pub xa: XaShape = XaShape::from_profile(p)?,
        /// `bpf_raw_tp_link.btp`, `bpf_raw_event_map.tp` and `tracepoint.name`, when the
        /// profile has the private `bpf_raw_tp_link`.
        pub raw_tp: Option<(u64, u64, u64)> = RawTpLayout::from_profile(p)
            .ok()
            .map(|r| (r.btp, r.tp, r.name)),
        /// What a perf event link's event is, when the profile has the private
        /// `bpf_perf_link` (5.15+).
        pub perf_link: Option<PerfLinkLayout> = PerfLinkLayout::from_profile(p).ok(),
    }
    symbols [
        ["prog_idr"],
        ["link_idr"],
    ]
    // their names, when the profile has them (`BpfNames`)
    enums [
        "bpf_prog_type",
        "bpf_attach_type",
        "bpf_link_type",
    ]
}

crate::kernel_layout! {
    /// Offsets from a `struct bpf_perf_link` to its perf event's PMU and trace event.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PerfLinkLayout(p) {
        /// `bpf_perf_link.perf_file`
        pub perf_file: u64 = opt_type "bpf_perf_link" ["perf_file"],
        /// `file.private_data` (the `struct perf_event`)
        pub private_data: u64 = "file" ["private_data"],
        /// `perf_event.pmu`
        pub pmu: u64 = opt "perf_event" ["pmu"],
        /// `pmu.name`
        pub pmu_name: u64 = opt "pmu" ["name"],
    }
    computed {
        /// `perf_event.tp_event` and `trace_event_call.name`, when the perf event walk
        /// can be made ([`PerfLayout`])
        pub tp_event: Option<(u64, u64)> = PerfLayout::from_profile(p)
            .ok()
            .and_then(|l| l.tp_event),
    }
}

crate::kernel_layout! {
    /// Offsets from a `struct bpf_raw_tp_link` to the name of its tracepoint.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RawTpLayout(p) {
        /// `bpf_raw_tp_link.btp` (the type is private to kernel/bpf/syscall.c before 6.9)
        pub btp: u64 = opt "bpf_raw_tp_link" ["btp"],
        /// `bpf_raw_event_map.tp`
        pub tp: u64 = "bpf_raw_event_map" ["tp"],
        /// `tracepoint.name`
        pub name: u64 = "tracepoint" ["name"],
    }
}

crate::kernel_layout! {
    /// Offsets from a `struct perf_event` to the name of its trace event
    /// (`CONFIG_EVENT_TRACING`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct TpEventLayout(p) {
        /// `perf_event.tp_event`
        pub tp_event: u64 = opt "perf_event" ["tp_event"],
        /// `trace_event_call.name`
        pub name: u64 = opt "trace_event_call" ["name"],
    }
}

impl BpfLayout {
    fn prog_span(&self) -> usize {
        [
            self.prog_type + 4,
            self.expected_attach_type + 4,
            self.jited_len + 4,
            self.tag + 8,
            self.bpf_func + 8,
            self.aux + 8,
        ]
        .into_iter()
        .max()
        .unwrap_or(0) as usize
    }

    fn aux_span(&self) -> usize {
        [
            self.aux_id + 4,
            self.aux_name + NAME_LEN as u64,
            self.attach_func_name + 8,
            self.load_time + 8,
            self.dst_prog + 8,
        ]
        .into_iter()
        .max()
        .unwrap_or(0) as usize
    }

    fn limits() -> PidLimits {
        PidLimits {
            max_pids: MAX_PROGRAMS,
            max_nodes: MAX_PROGRAMS,
        }
    }
}

/// A loaded BPF program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfProgram {
    /// The `struct bpf_prog`.
    pub at: Va,
    /// `aux->id`: the id `bpftool prog` shows.
    pub id: u32,
    /// `type` (`enum bpf_prog_type`).
    pub prog_type: u32,
    /// `expected_attach_type` (`enum bpf_attach_type`).
    pub expected_attach_type: u32,
    /// `aux->name` (guest bytes, at most 15).
    pub name: Vec<u8>,
    /// `tag`: the hash of the instructions, as `bpftool` shows it.
    pub tag: [u8; 8],
    /// `bpf_func`: the JITed image (or the interpreter).
    pub image: Va,
    /// `jited_len`.
    pub jited_len: u32,
    /// `aux->load_time` (ns since boot).
    pub load_time: u64,
    /// `aux->attach_func_name` (guest bytes; empty for none).
    pub attach_func_name: Vec<u8>,
    /// `aux->dst_prog`: the program it attaches to (0 for none).
    pub dst_prog: Va,
    /// The name of `prog_type` ([`BpfNames`]).
    pub type_label: String,
    /// The name of `expected_attach_type` ([`BpfNames`]).
    pub attach_label: String,
}

impl BpfProgram {
    /// The program type's name (`kprobe`, `tracing`, ...).
    pub fn type_name(&self) -> String {
        self.type_label.clone()
    }

    /// The expected attach type's name (`trace_fentry`, ...).
    pub fn attach_type_name(&self) -> String {
        self.attach_label.clone()
    }

    /// `type/attach_type`, or the type alone when the expected attach type is 0 (most
    /// types do not use it; 0 is also `cgroup_inet_ingress`).
    pub fn kind(&self) -> String {
        if self.expected_attach_type == 0 {
            self.type_name()
        } else {
            format!("{}/{}", self.type_name(), self.attach_type_name())
        }
    }

    /// The tag as 16 hex digits.
    pub fn tag_hex(&self) -> String {
        hex::encode(self.tag)
    }
}

/// A BPF link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfLink {
    /// The `struct bpf_link`.
    pub at: Va,
    /// `id`.
    pub id: u32,
    /// `type` (`enum bpf_link_type`).
    pub link_type: u32,
    /// `prog`.
    pub prog: Va,
    /// What it attaches to, when the walk knows (a raw tracepoint's name).
    pub target: Vec<u8>,
    /// The name of `link_type` ([`BpfNames`]).
    pub type_label: String,
}

impl BpfLink {
    /// The link type's name (`raw_tracepoint`, `perf_event`, ...).
    pub fn type_name(&self) -> String {
        self.type_label.clone()
    }
}

crate::kernel_layout! {
    /// Offsets of the perf event walk.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PerfLayout(p) {
        /// `task_struct.perf_event_list`
        pub task_list: u64 = opt "task_struct" ["perf_event_list"],
        /// `perf_event.owner_entry`
        pub owner_entry: u64 = opt "perf_event" ["owner_entry"],
        /// `perf_event.pmu`
        pub pmu: u64 = opt "perf_event" ["pmu"],
        /// `pmu.name`
        pub pmu_name: u64 = opt "pmu" ["name"],
        /// `perf_event.prog`
        pub prog: u64 = opt "perf_event" ["prog"],
        /// `perf_event.overflow_handler`
        pub overflow_handler: u64 = opt "perf_event" ["overflow_handler"],
    }
    computed {
        /// `perf_event.tp_event` and `trace_event_call.name` (`CONFIG_EVENT_TRACING`)
        pub tp_event: Option<(u64, u64)> = TpEventLayout::from_profile(p)
            .ok()
            .map(|t| (t.tp_event, t.name)),
    }
}

/// A perf event a task opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerfEvent {
    /// The `struct perf_event`.
    pub at: Va,
    /// The owner's pid (thread-group id) and thread id.
    pub pid: u32,
    /// The thread that opened it.
    pub tid: u32,
    /// The owner's `comm` (guest bytes).
    pub comm: Vec<u8>,
    /// The PMU's name (`kprobe`, `tracepoint`, `software`, ...; guest bytes).
    pub pmu: Vec<u8>,
    /// The trace event it is (a kprobe's function, a tracepoint's name; guest bytes,
    /// empty for other events).
    pub event: Vec<u8>,
    /// `prog`: the BPF program it runs (0 for none).
    pub prog: Va,
    /// `overflow_handler`.
    pub overflow_handler: Va,
}

/// Every BPF program, link and program-carrying perf event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BpfView {
    /// Programs, by id.
    pub programs: Vec<BpfProgram>,
    /// Links, by id.
    pub links: Vec<BpfLink>,
    /// Perf events of user tasks (all of them, with or without a program).
    pub perf_events: Vec<PerfEvent>,
}

/// How a program is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attachment<'a> {
    /// Through a link.
    Link(&'a BpfLink),
    /// Through a perf event.
    PerfEvent(&'a PerfEvent),
}

impl BpfView {
    /// The links and perf events that hold the program at `prog`.
    pub fn attachments(&self, prog: Va) -> Vec<Attachment<'_>> {
        self.links
            .iter()
            .filter(|l| l.prog == prog)
            .map(Attachment::Link)
            .chain(
                self.perf_events
                    .iter()
                    .filter(|e| e.prog == prog)
                    .map(Attachment::PerfEvent),
            )
            .collect()
    }
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The entries of the IDR at the symbol `idr` (the IDR's base is 0 for ids from 1).
    fn idr_entries(
        &self,
        l: &BpfLayout,
        idr: &'static str,
    ) -> Result<Vec<(u64, u64)>, KernelError> {
        let at = self.symbol(idr)?;
        let head = self
            .space
            .read_u64(Va(at.0.wrapping_add(l.idr_rt + l.xa_head)))
            .map_err(read_err("bpf idr.idr_rt.xa_head"))?;
        let (leaves, _) = xarray_entries(&self.space, head, &l.xa, &BpfLayout::limits(), idr)?;
        Ok(leaves)
    }

    /// The indexes of `prog_idr` and `link_idr` with the objects they hold, by index: a
    /// program's or link's id is its index plus the IDR's `idr_base`.
    #[allow(clippy::type_complexity)]
    pub fn bpf_indexes(&self) -> Result<(Vec<(u64, Va)>, Vec<(u64, Va)>), KernelError> {
        let l = BpfLayout::from_profile(&self.profile)?;
        let index = |idr| -> Result<Vec<(u64, Va)>, KernelError> {
            Ok(self
                .idr_entries(&l, idr)?
                .into_iter()
                .map(|(k, p)| (k, Va(p)))
                .collect())
        };
        Ok((index("prog_idr")?, index("link_idr")?))
    }

    /// Every program in `prog_idr`, every link in `link_idr`, and the perf events on
    /// the lists of the threads of `processes`.
    pub fn bpf(&self, processes: &[Process]) -> Result<BpfView, KernelError> {
        let l = BpfLayout::from_profile(&self.profile)?;
        let names = BpfNames::from_profile(&self.profile);
        let programs = self
            .idr_entries(&l, "prog_idr")?
            .into_iter()
            .map(|(_, p)| read_program(&self.space, &l, &names, p))
            .collect::<Result<Vec<_>, _>>()?;
        let links = self
            .idr_entries(&l, "link_idr")?
            .into_iter()
            .map(|(_, p)| read_link(&self.space, &l, &names, p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut perf_events = Vec::new();
        if let Ok(pl) = PerfLayout::from_profile(&self.profile) {
            for p in processes {
                for t in &p.threads {
                    perf_events.extend(task_events(
                        &self.space,
                        &pl,
                        (p.pid, &p.comm),
                        t.tid,
                        t.task,
                    )?);
                }
            }
        }
        Ok(BpfView {
            programs,
            links,
            perf_events,
        })
    }
}

/// A pointer that must be a kernel address.
fn kernel_ptr(value: u64, what: &'static str) -> Result<u64, KernelError> {
    if is_kernel_va(value) {
        Ok(value)
    } else {
        Err(KernelError::BadPointer { what, value })
    }
}

/// The name of the PMU at `pmu` (a `struct pmu`; empty for none or no name).
pub(crate) fn pmu_name<V: VirtualMemory + ?Sized>(
    mem: &V,
    pmu: u64,
    name: u64,
) -> Result<Vec<u8>, KernelError> {
    if !is_kernel_va(pmu) {
        return Ok(Vec::new());
    }
    let p = mem
        .read_u64(Va(pmu.wrapping_add(name)))
        .map_err(read_err("pmu.name"))?;
    Ok(name_at(mem, p, MAX_NAME))
}

/// The program at `at`.
pub fn read_program<V: VirtualMemory + ?Sized>(
    mem: &V,
    l: &BpfLayout,
    names: &BpfNames,
    at: u64,
) -> Result<BpfProgram, KernelError> {
    let at = kernel_ptr(at, "prog_idr entry (struct bpf_prog)")?;
    let b = mem
        .read_bytes(Va(at), l.prog_span())
        .map_err(read_err("struct bpf_prog"))?;
    let aux = kernel_ptr(u64_at(&b, l.aux), "bpf_prog.aux")?;
    let a = mem
        .read_bytes(Va(aux), l.aux_span())
        .map_err(read_err("struct bpf_prog_aux"))?;
    let o = l.aux_name as usize;
    let name = a
        .get(o..o + NAME_LEN)
        .unwrap_or_default()
        .split(|&c| c == 0)
        .next()
        .unwrap_or_default()
        .to_vec();
    let t = l.tag as usize;
    let tag = b
        .get(t..t + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .unwrap_or([0; 8]);
    let (prog_type, expected_attach_type) =
        (u32_at(&b, l.prog_type), u32_at(&b, l.expected_attach_type));
    Ok(BpfProgram {
        at: Va(at),
        id: u32_at(&a, l.aux_id),
        prog_type,
        expected_attach_type,
        type_label: names.prog_type(prog_type),
        attach_label: names.attach_type(expected_attach_type),
        name,
        tag,
        image: Va(u64_at(&b, l.bpf_func)),
        jited_len: u32_at(&b, l.jited_len),
        load_time: u64_at(&a, l.load_time),
        attach_func_name: name_at(mem, u64_at(&a, l.attach_func_name), MAX_NAME),
        dst_prog: Va(u64_at(&a, l.dst_prog)),
    })
}

/// The link at `at`.
pub fn read_link<V: VirtualMemory + ?Sized>(
    mem: &V,
    l: &BpfLayout,
    names: &BpfNames,
    at: u64,
) -> Result<BpfLink, KernelError> {
    let at = kernel_ptr(at, "link_idr entry (struct bpf_link)")?;
    let span = [l.link_id + 4, l.link_type + 4, l.link_prog + 8]
        .into_iter()
        .max()
        .unwrap_or(0) as usize;
    let b = mem
        .read_bytes(Va(at), span)
        .map_err(read_err("struct bpf_link"))?;
    let link_type = u32_at(&b, l.link_type);
    // names are evidence: an unreadable one is left empty
    let ptr = |a: u64| {
        mem.read_u64(Va(a))
            .ok()
            .filter(|&p| is_kernel_va(p))
            .unwrap_or(0)
    };
    // the pointer at `off` in the object at `base` (0 when `base` is 0)
    let at_off = |base: u64, off: u64| {
        if base == 0 {
            0
        } else {
            ptr(base.wrapping_add(off))
        }
    };
    let mut target = Vec::new();
    match (link_type, l.raw_tp, l.perf_link) {
        (LINK_RAW_TRACEPOINT, Some((btp, tp, name)), _) => {
            let tracepoint = at_off(at_off(at, btp), tp);
            if tracepoint != 0 {
                target = name_at(mem, ptr(tracepoint.wrapping_add(name)), MAX_NAME);
            }
        }
        (LINK_PERF_EVENT, _, Some(pl)) => {
            let event = at_off(at_off(at, pl.perf_file), pl.private_data);
            if event != 0 {
                target =
                    pmu_name(mem, ptr(event.wrapping_add(pl.pmu)), pl.pmu_name).unwrap_or_default();
                if let Some((tp_event, name)) = pl.tp_event {
                    let call = ptr(event.wrapping_add(tp_event));
                    let ev = trace_event_name(mem, call, name);
                    if !ev.is_empty() {
                        target.push(b' ');
                        target.extend(ev);
                    }
                }
            }
        }
        _ => {}
    }
    Ok(BpfLink {
        at: Va(at),
        id: u32_at(&b, l.link_id),
        link_type,
        prog: Va(u64_at(&b, l.link_prog)),
        target,
        type_label: names.link_type(link_type),
    })
}

/// The perf events on the list of the thread `task` (thread `tid` of the process `pid`
/// named `comm`).
pub fn task_events<V: VirtualMemory + ?Sized>(
    mem: &V,
    l: &PerfLayout,
    (pid, comm): (u32, &[u8]),
    tid: u32,
    task: Va,
) -> Result<Vec<PerfEvent>, KernelError> {
    let mut out = Vec::new();
    let head = Va(task.0.wrapping_add(l.task_list));
    walk_list(
        mem,
        head,
        "task_struct.perf_event_list",
        MAX_EVENTS,
        |node| {
            let at = node.0.wrapping_sub(l.owner_entry);
            let read = |off: u64, what: &'static str| {
                mem.read_u64(Va(at.wrapping_add(off)))
                    .map_err(read_err(what))
            };
            let pmu = pmu_name(mem, read(l.pmu, "perf_event.pmu")?, l.pmu_name)?;
            let event = match l.tp_event {
                Some((tp_event, name)) => {
                    let call = read(tp_event, "perf_event.tp_event")?;
                    trace_event_name(mem, call, name)
                }
                None => Vec::new(),
            };
            out.push(PerfEvent {
                at: Va(at),
                pid,
                tid,
                comm: comm.to_vec(),
                pmu,
                event,
                prog: Va(read(l.prog, "perf_event.prog")?),
                overflow_handler: Va(read(l.overflow_handler, "perf_event.overflow_handler")?),
            });
            Ok(())
        },
    )?;
    Ok(out)
}

/// The name of the `trace_event_call` at `call`: `name` is a union of the event's
/// name and, for a static tracepoint, its `struct tracepoint *`, whose first word
/// (`tracepoint.name`) is a kernel pointer where a name's first word is text.
fn trace_event_name<V: VirtualMemory + ?Sized>(mem: &V, call: u64, name: u64) -> Vec<u8> {
    if !is_kernel_va(call) {
        return Vec::new();
    }
    let Ok(p) = mem.read_u64(Va(call.wrapping_add(name))) else {
        return Vec::new();
    };
    if !is_kernel_va(p) {
        return Vec::new();
    }
    match mem.read_u64(Va(p)) {
        Ok(first) if is_kernel_va(first) => name_at(mem, first, MAX_NAME),
        _ => name_at(mem, p, MAX_NAME),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::objects::tests::Flat;

    const BASE: u64 = 0xffff_8880_0000_0000;

    /// 6.1's offsets.
    fn layout() -> BpfLayout {
        BpfLayout {
            idr_rt: 0,
            xa_head: 8,
            xa: XaShape {
                chunk_size: 64,
                node_shift: 0,
                node_slots: 0x28,
            },
            prog_type: 4,
            expected_attach_type: 8,
            jited_len: 16,
            tag: 20,
            bpf_func: 48,
            aux: 56,
            aux_id: 28,
            aux_name: 0x2c0,
            attach_func_name: 0xe8,
            load_time: 0x2a0,
            dst_prog: 0x80,
            link_id: 8,
            link_type: 12,
            link_prog: 24,
            raw_tp: Some((64, 0, 0)),
            perf_link: Some(PerfLinkLayout {
                perf_file: 64,
                private_data: 0x20,
                pmu: 0x30,
                pmu_name: 0,
                tp_event: Some((0x48, 0)),
            }),
        }
    }

    fn put(m: &mut Flat, at: u64, v: u64) {
        m.put(at, &v.to_le_bytes());
    }

    /// A kprobe program at 0x1000 (aux 0x2000) named "vmi_kp", and a raw tracepoint
    /// link at 0x4000 to it, on "sys_enter" (map 0x5000, tracepoint 0x5100).
    fn guest() -> Flat {
        let mut m = Flat::new(BASE, 0x8000);
        let (prog, aux) = (BASE + 0x1000, BASE + 0x2000);
        m.put(prog + 4, &2u32.to_le_bytes());
        m.put(prog + 8, &41u32.to_le_bytes());
        m.put(prog + 16, &77u32.to_le_bytes());
        m.put(prog + 20, &[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]);
        put(&mut m, prog + 48, 0xffff_ffff_c000_1000);
        put(&mut m, prog + 56, aux);
        m.put(aux + 28, &7u32.to_le_bytes());
        m.put(aux + 0x2c0, b"vmi_kp\0");
        put(&mut m, aux + 0xe8, BASE + 0x3000);
        m.put(BASE + 0x3000, b"vfs_read\0");
        put(&mut m, aux + 0x2a0, 123_456);
        let link = BASE + 0x4000;
        m.put(link + 8, &3u32.to_le_bytes());
        m.put(link + 12, &LINK_RAW_TRACEPOINT.to_le_bytes());
        put(&mut m, link + 24, prog);
        put(&mut m, link + 64, BASE + 0x5000);
        put(&mut m, BASE + 0x5000, BASE + 0x5100);
        put(&mut m, BASE + 0x5100, BASE + 0x5200);
        m.put(BASE + 0x5200, b"sys_enter\0");
        m
    }

    #[test]
    fn programs_and_links_are_read() {
        let m = guest();
        let p = read_program(&m, &layout(), &BpfNames::default(), BASE + 0x1000).unwrap();
        assert_eq!(p.id, 7);
        assert_eq!(p.type_name(), "kprobe");
        assert_eq!(p.attach_type_name(), "perf_event");
        assert_eq!(p.kind(), "kprobe/perf_event");
        assert_eq!(p.name, b"vmi_kp");
        assert_eq!(p.tag_hex(), "deadbeef00010203");
        assert_eq!(p.image, Va(0xffff_ffff_c000_1000));
        assert_eq!((p.jited_len, p.load_time), (77, 123_456));
        assert_eq!(p.attach_func_name, b"vfs_read");
        let l = read_link(&m, &layout(), &BpfNames::default(), BASE + 0x4000).unwrap();
        assert_eq!((l.id, l.type_name()), (3, "raw_tracepoint".to_string()));
        assert_eq!(l.prog, Va(BASE + 0x1000));
        assert_eq!(l.target, b"sys_enter");
        // without the private link type the tracepoint is not named
        let mut no_tp = layout();
        no_tp.raw_tp = None;
        assert!(read_link(&m, &no_tp, &BpfNames::default(), BASE + 0x4000)
            .unwrap()
            .target
            .is_empty());
        assert_eq!(enum_name(&PROG_TYPES, "type", 99), "type-99");
        // a perf event link: file 0x6000, event 0x6100 (PMU 0x6200 "kprobe", trace
        // event call 0x6300 named "vfs_read")
        let mut m = guest();
        let link = BASE + 0x4000;
        m.put(link + 12, &LINK_PERF_EVENT.to_le_bytes());
        put(&mut m, link + 64, BASE + 0x6000);
        put(&mut m, BASE + 0x6020, BASE + 0x6100);
        put(&mut m, BASE + 0x6130, BASE + 0x6200);
        put(&mut m, BASE + 0x6200, BASE + 0x6280);
        m.put(BASE + 0x6280, b"kprobe\0");
        put(&mut m, BASE + 0x6148, BASE + 0x6300);
        put(&mut m, BASE + 0x6300, BASE + 0x6380);
        m.put(BASE + 0x6380, b"vfs_read\0");
        let l = read_link(&m, &layout(), &BpfNames::default(), link).unwrap();
        assert_eq!(l.type_name(), "perf_event");
        assert_eq!(l.target, b"kprobe vfs_read");
    }

    #[test]
    fn bad_pointers_are_errors() {
        let mut m = guest();
        let e = read_program(&m, &layout(), &BpfNames::default(), 0x4141).unwrap_err();
        assert!(
            matches!(e, KernelError::BadPointer { value: 0x4141, .. }),
            "{e}"
        );
        put(&mut m, BASE + 0x1000 + 56, 0x1234);
        let e = read_program(&m, &layout(), &BpfNames::default(), BASE + 0x1000).unwrap_err();
        assert!(
            matches!(e, KernelError::BadPointer { value: 0x1234, .. }),
            "{e}"
        );
    }

    #[test]
    fn enum_names_come_from_the_profile_when_it_has_them() {
        let mut p = Profile::from_json(include_str!("../../../docs/profile.example.json")).unwrap();
        let names = BpfNames::from_profile(&p);
        // the example has bpf_link_type only: the others fall back to the copies
        assert_eq!(names.link_type(1), "raw_tracepoint");
        assert_eq!(names.link_type(2), "link-2");
        assert_eq!(names.prog_type(2), "kprobe");
        assert_eq!(names.attach_type(1), "cgroup_inet_egress");
        // a kernel newer than the copies: its own names, prefix stripped, the __MAX_
        // sentinel left out
        let e = p.enums.entry("bpf_prog_type".into()).or_default();
        e.insert("BPF_PROG_TYPE_KPROBE".into(), 2);
        e.insert("BPF_PROG_TYPE_FUTURE".into(), 99);
        e.insert("__MAX_BPF_PROG_TYPE".into(), 100);
        let names = BpfNames::from_profile(&p);
        assert_eq!(names.prog_type(2), "kprobe");
        assert_eq!(names.prog_type(99), "future");
        assert_eq!(names.prog_type(100), "type-100");
        assert_eq!(BpfNames::default().prog_type(99), "type-99");
    }

    fn perf_layout() -> PerfLayout {
        PerfLayout {
            task_list: 0x10,
            owner_entry: 0x20,
            pmu: 0x30,
            pmu_name: 0,
            prog: 0x38,
            overflow_handler: 0x40,
            tp_event: Some((0x48, 0)),
        }
    }

    #[test]
    fn perf_events_of_a_task_with_their_trace_event() {
        let mut m = Flat::new(BASE, 0x8000);
        let task = BASE + 0x100;
        let (e1, e2) = (BASE + 0x1000, BASE + 0x2000);
        // task list -> e1 -> e2 -> head
        put(&mut m, task + 0x10, e1 + 0x20);
        put(&mut m, e1 + 0x20, e2 + 0x20);
        put(&mut m, e2 + 0x20, task + 0x10);
        put(&mut m, e1 + 0x30, BASE + 0x3000);
        put(&mut m, BASE + 0x3000, BASE + 0x3100);
        m.put(BASE + 0x3100, b"kprobe\0");
        put(&mut m, e1 + 0x38, BASE + 0x6000);
        // a kprobe event: the call's name is the function
        put(&mut m, e1 + 0x48, BASE + 0x4000);
        put(&mut m, BASE + 0x4000, BASE + 0x4100);
        m.put(BASE + 0x4100, b"vfs_read\0");
        // a tracepoint event: the call's tp points at a struct tracepoint
        put(&mut m, e2 + 0x48, BASE + 0x5000);
        put(&mut m, BASE + 0x5000, BASE + 0x5100);
        put(&mut m, BASE + 0x5100, BASE + 0x5200);
        m.put(BASE + 0x5200, b"sched_switch\0");
        let p = (42, &b"loader"[..]);
        let ev = task_events(&m, &perf_layout(), p, 42, Va(task)).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(
            (ev[0].pmu.as_slice(), ev[0].event.as_slice()),
            (&b"kprobe"[..], &b"vfs_read"[..])
        );
        assert_eq!(ev[0].prog, Va(BASE + 0x6000));
        assert_eq!(ev[1].event, b"sched_switch");
        assert!(ev[1].pmu.is_empty());
        let view = BpfView {
            perf_events: ev,
            ..BpfView::default()
        };
        assert_eq!(view.attachments(Va(BASE + 0x6000)).len(), 1);
        // a list looping back into itself
        put(&mut m, e2 + 0x20, e1 + 0x20);
        let e = task_events(&m, &perf_layout(), p, 42, Va(task)).unwrap_err();
        assert!(matches!(e, KernelError::Cycle { .. }), "{e}");
    }
}
