//! Typed kernel objects read through a profile: processes, threads, modules.
//!
//! Every walk is bounded ([`Limits`]), detects cycles (an element seen twice that is not
//! the list head), and refuses pointers outside the kernel half of the address space.
//! A `task_struct` is read with one guest read of the span of fields used
//! ([`Layout::task_span`](crate::kernel::Layout::task_span)), then decoded from that buffer.

use std::collections::HashSet;

use crate::addr::Va;
use crate::kernel::census::Views;
use crate::kernel::{escape, Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// The symbols the process and module walks start from.
pub const NEEDS: crate::profile::needs::Declaration = crate::declaration!(
    "objects";
    fields [];
    symbols [["init_task"], ["modules"]]
);

/// The tasks list's name in errors and breaks.
pub const TASKS_LIST: &str = "init_task.tasks";
/// A thread group's list's name in errors and breaks.
pub const THREAD_LIST: &str = "signal_struct.thread_head";
/// The modules list's name in errors and breaks.
pub const MODULES_LIST: &str = "modules";

/// Bounds of the walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most processes (thread-group leaders) walked.
    pub max_processes: usize,
    /// Most threads walked per process.
    pub max_threads: usize,
    /// Most modules walked.
    pub max_modules: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        // PID_MAX_LIMIT is 4M; a guest with more tasks than this is unusual enough to
        // ask for a raised limit
        Limits {
            max_processes: 1 << 20,
            max_threads: 1 << 20,
            max_modules: 1 << 14,
        }
    }
}

/// A thread.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Thread {
    /// Its `task_struct`.
    pub task: Va,
    /// Thread id (`task_struct.pid`).
    pub tid: u32,
    /// `task_struct.comm` (at most 15 bytes; guest bytes, not text).
    pub comm: Vec<u8>,
}

/// A process: a thread-group leader on `init_task.tasks`, and its threads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Process {
    /// Its `task_struct`.
    pub task: Va,
    /// `task_struct.pid` (equals `tgid` for a group leader).
    pub pid: u32,
    /// `task_struct.tgid`.
    pub tgid: u32,
    /// `real_parent->tgid` (0 for the idle task's children).
    pub ppid: u32,
    /// `task_struct.comm` (at most 15 bytes; guest bytes, not text).
    pub comm: Vec<u8>,
    /// `__state` (or `state`).
    pub state: u32,
    /// `exit_state`.
    pub exit_state: u32,
    /// `task_struct.flags` (PF_*).
    pub flags: u32,
    /// `real_cred->uid`, `gid`, `euid`, `egid`.
    pub uid: u32,
    /// Real group id.
    pub gid: u32,
    /// Effective user id (of the objective credentials).
    pub euid: u32,
    /// Effective group id.
    pub egid: u32,
    /// `task_struct.mm` (null for kernel threads).
    pub mm: Va,
    /// `start_time` (ns since boot, monotonic clock).
    pub start_time: u64,
    /// Every thread of the group, the leader included, from `signal->thread_head`.
    pub threads: Vec<Thread>,
    /// The kernel's views that hold it ([`Views::TASKS`] from [`Kernel::processes`];
    /// see [`Kernel::census`]).
    pub views: Views,
}

impl Process {
    /// `comm` escaped for a terminal.
    pub fn name(&self) -> String {
        escape(&self.comm)
    }

    /// True for kernel threads (PF_KTHREAD).
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & 0x0020_0000 != 0
    }
}

/// A loaded module, from the `modules` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Its `struct module`.
    pub addr: Va,
    /// `module.name` (guest bytes).
    pub name: Vec<u8>,
    /// `module.state` (0 live, 1 coming, 2 going, 3 unformed).
    pub state: u32,
    /// Base of its core text (`mem[MOD_TEXT].base` or `core_layout.base`).
    pub core_base: Va,
    /// Size of its core text.
    pub core_size: u32,
    /// Its other core regions, (base, size) of `mem[MOD_DATA]`, `mem[MOD_RODATA]` and
    /// `mem[MOD_RO_AFTER_INIT]` (6.4+; before, the core text's size covers them).
    pub data: Vec<(Va, u32)>,
}

impl Module {
    /// `name` escaped for a terminal.
    pub fn display_name(&self) -> String {
        escape(&self.name)
    }
}

/// True for addresses in the kernel half (the top bit set, canonical for 4- and 5-level).
pub(crate) fn is_kernel_va(v: u64) -> bool {
    v >= 0xff00_0000_0000_0000
}

/// A `list_head` walk: calls `f` with each element's `list_head` address (not the head).
pub(crate) fn walk_list<V: VirtualMemory + ?Sized>(
    mem: &V,
    head: Va,
    what: &'static str,
    max: usize,
    f: impl FnMut(Va) -> Result<(), KernelError>,
) -> Result<usize, KernelError> {
    walk_from(mem, head, head.0, what, max, f)
}

/// An `hlist` walk from the `hlist_head` at `head`: calls `f` with each node's address
/// (the `hlist_node`, not the object around it) until a null `next`.
pub(crate) fn walk_hlist<V: VirtualMemory + ?Sized>(
    mem: &V,
    head: Va,
    what: &'static str,
    max: usize,
    f: impl FnMut(Va) -> Result<(), KernelError>,
) -> Result<usize, KernelError> {
    walk_from(mem, head, 0, what, max, f)
}

/// A walk from the list or hlist head at `head` (`next` and `first` are both the first
/// member) to `end`.
fn walk_from<V: VirtualMemory + ?Sized>(
    mem: &V,
    head: Va,
    end: u64,
    what: &'static str,
    max: usize,
    f: impl FnMut(Va) -> Result<(), KernelError>,
) -> Result<usize, KernelError> {
    let first = mem
        .read_u64(head)
        .map_err(|source| KernelError::Read { what, source })?;
    walk_chain(mem, first, end, 0, what, max, f)
}

/// A singly linked walk from `first` to `end` (the list head, null, or an end marker)
/// through the pointer at `next` in each element: calls `f` with each element. Every
/// element must be a kernel address seen once, at most `max` of them.
pub(crate) fn walk_chain<V: VirtualMemory + ?Sized>(
    mem: &V,
    first: u64,
    end: u64,
    next: u64,
    what: &'static str,
    max: usize,
    mut f: impl FnMut(Va) -> Result<(), KernelError>,
) -> Result<usize, KernelError> {
    let mut seen: HashSet<u64> = HashSet::new();
    let mut node = first;
    let mut count = 0usize;
    while node != end {
        visit(&mut seen, node, count, max, what)?;
        f(Va(node))?;
        count += 1;
        node = mem
            .read_u64(Va(node.wrapping_add(next)))
            .map_err(|source| KernelError::Read { what, source })?;
    }
    Ok(count)
}

/// Admit `node` as element `count` of a walk of `what`: a kernel address not seen
/// before, within `max` elements.
pub(crate) fn visit(
    seen: &mut HashSet<u64>,
    node: u64,
    count: usize,
    max: usize,
    what: &'static str,
) -> Result<(), KernelError> {
    if !is_kernel_va(node) {
        return Err(KernelError::BadPointer { what, value: node });
    }
    if !seen.insert(node) {
        return Err(KernelError::Cycle {
            what,
            at: Va(node),
            after: count,
        });
    }
    if count >= max {
        return Err(KernelError::TooLong { what, max });
    }
    Ok(())
}

/// The nodes of the red-black tree whose root node is `root` (null for an empty tree),
/// children at `left` and `right` in each node: every node a kernel address seen once,
/// at most `max` of them. In no particular order.
pub(crate) fn rb_nodes<V: VirtualMemory + ?Sized>(
    mem: &V,
    root: u64,
    (left, right): (u64, u64),
    max: usize,
    what: &'static str,
) -> Result<Vec<u64>, KernelError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    let span = (left.max(right) + 8) as usize;
    while let Some(node) = stack.pop() {
        if node == 0 {
            continue;
        }
        visit(&mut seen, node, out.len(), max, what)?;
        let b = mem.read_bytes(Va(node), span).map_err(read_err(what))?;
        stack.push(u64_at(&b, right));
        stack.push(u64_at(&b, left));
        out.push(node);
    }
    Ok(out)
}

/// A failed read of `what`, as a [`KernelError`].
pub(crate) fn read_err(what: &'static str) -> impl FnOnce(crate::error::ReadError) -> KernelError {
    move |source| KernelError::Read { what, source }
}

/// The names of the bits set in `flags`, `|`-separated (bit `i` is `names[i]`).
pub(crate) fn flag_names(names: &[&str], flags: u64) -> String {
    names
        .iter()
        .enumerate()
        .filter(|(i, _)| flags & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join("|")
}

/// The little-endian `u32` at `off` in `buf` (0 beyond its end).
pub(crate) fn u32_at(buf: &[u8], off: u64) -> u32 {
    let o = off as usize;
    buf.get(o..o + 4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
        .unwrap_or(0)
}

/// The little-endian `u64` at `off` in `buf` (0 beyond its end).
pub(crate) fn u64_at(buf: &[u8], off: u64) -> u64 {
    let o = off as usize;
    buf.get(o..o + 8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        .unwrap_or(0)
}

fn comm_at(buf: &[u8], off: u64) -> Vec<u8> {
    let o = off as usize;
    let raw = buf.get(o..o + 16).unwrap_or_default();
    raw.split(|&b| b == 0).next().unwrap_or_default().to_vec()
}

impl<M: PhysicalMemory> Kernel<M> {
    /// Read the span of a `task_struct` the walk uses (offsets relative to the task).
    fn task_bytes(&self, task: Va, buf: &mut Vec<u8>) -> Result<(), KernelError> {
        let (start, end) = self.layout.task_span;
        buf.resize((end - start) as usize, 0);
        self.space
            .read_virt(Va(task.0.wrapping_add(start)), buf)
            .map_err(|source| KernelError::Read {
                what: "task_struct",
                source,
            })
    }

    /// Every process on `init_task.tasks` (the idle task itself excluded, as in /proc),
    /// with its threads. Any break in the list or a task is an error; [`Kernel::census`]
    /// reads what a damaged list still holds, with the other views.
    pub fn processes(&self, limits: &Limits) -> Result<Vec<Process>, KernelError> {
        let l = self.layout;
        let init = self.symbol("init_task")?;
        let head = Va(init.0.wrapping_add(l.task_tasks));
        let mut out = Vec::new();
        let mut buf = Vec::new();
        walk_list(
            &self.space,
            head,
            TASKS_LIST,
            limits.max_processes,
            |node| {
                let task = Va(node.0.wrapping_sub(l.task_tasks));
                let (mut p, signal) = self.read_process(task, &mut buf)?;
                if let Some(signal) = signal {
                    p.threads = self.threads(signal, limits)?;
                }
                out.push(p);
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// The process whose leader is the `task_struct` at `task`, read again (its threads
    /// not read): a check that read a process's memory compares it with what the census
    /// read, to tell whether the process changed while it was read (exited, its
    /// `mm_struct` freed and reused by another; `execve`; renamed).
    pub fn process_at(&self, task: Va) -> Result<Process, KernelError> {
        let mut buf = Vec::new();
        self.read_process(task, &mut buf).map(|(p, _)| p)
    }

    /// The process whose leader is the `task_struct` at `task`, on the `tasks` list, its
    /// threads not yet read, and where they are (its `signal`; `None` for a zombie whose
    /// signal is gone). `buf` is scratch space.
    pub(crate) fn read_process(
        &self,
        task: Va,
        buf: &mut Vec<u8>,
    ) -> Result<(Process, Option<Va>), KernelError> {
        let l = self.layout;
        let base = l.task_span.0;
        self.task_bytes(task, buf)?;
        let at = |off: u64| off - base;
        let real_parent = u64_at(buf, at(l.task_real_parent));
        let ppid = if is_kernel_va(real_parent) {
            self.space
                .read_u32(Va(real_parent.wrapping_add(l.task_tgid)))
                .map_err(|source| KernelError::Read {
                    what: "task_struct.real_parent->tgid",
                    source,
                })?
        } else {
            return Err(KernelError::BadPointer {
                what: "task_struct.real_parent",
                value: real_parent,
            });
        };
        let cred = u64_at(buf, at(l.task_real_cred));
        if !is_kernel_va(cred) {
            return Err(KernelError::BadPointer {
                what: "task_struct.real_cred",
                value: cred,
            });
        }
        let read_cred = |off: u64| {
            self.space
                .read_u32(Va(cred.wrapping_add(off)))
                .map_err(|source| KernelError::Read {
                    what: "cred",
                    source,
                })
        };
        let p = Process {
            task,
            pid: u32_at(buf, at(l.task_pid)),
            tgid: u32_at(buf, at(l.task_tgid)),
            ppid,
            comm: comm_at(buf, at(l.task_comm)),
            state: u32_at(buf, at(l.task_state)),
            exit_state: u32_at(buf, at(l.task_exit_state)),
            flags: u32_at(buf, at(l.task_flags)),
            uid: read_cred(l.cred_uid)?,
            gid: read_cred(l.cred_gid)?,
            euid: read_cred(l.cred_euid)?,
            egid: read_cred(l.cred_egid)?,
            mm: Va(u64_at(buf, at(l.task_mm))),
            start_time: u64_at(buf, at(l.task_start_time)),
            threads: Vec::new(),
            views: Views::TASKS,
        };
        let signal = u64_at(buf, at(l.task_signal));
        if is_kernel_va(signal) {
            Ok((p, Some(Va(signal))))
        } else if p.exit_state == 0 {
            Err(KernelError::BadPointer {
                what: "task_struct.signal",
                value: signal,
            })
        } else {
            Ok((p, None))
        }
    }

    /// The threads on `signal->thread_head`.
    fn threads(&self, signal: Va, limits: &Limits) -> Result<Vec<Thread>, KernelError> {
        let l = self.layout;
        let head = Va(signal.0.wrapping_add(l.signal_thread_head));
        let mut threads = Vec::new();
        walk_list(&self.space, head, THREAD_LIST, limits.max_threads, |node| {
            threads.push(self.read_thread(Va(node.0.wrapping_sub(l.task_thread_node)))?);
            Ok(())
        })?;
        Ok(threads)
    }

    /// The thread whose `task_struct` is at `task`.
    pub(crate) fn read_thread(&self, task: Va) -> Result<Thread, KernelError> {
        let l = self.layout;
        let what = "thread task_struct";
        let mut buf = [0u8; 20];
        self.space
            .read_virt(Va(task.0.wrapping_add(l.task_pid)), &mut buf[..4])
            .map_err(|source| KernelError::Read { what, source })?;
        let tid = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        self.space
            .read_virt(Va(task.0.wrapping_add(l.task_comm)), &mut buf[4..20])
            .map_err(|source| KernelError::Read { what, source })?;
        Ok(Thread {
            task,
            tid,
            comm: comm_at(&buf[4..20], 0),
        })
    }

    /// The name, state and core memory of the `struct module` at `addr`.
    pub(crate) fn read_module(&self, addr: Va) -> Result<Module, KernelError> {
        let l = self.layout;
        let what = "struct module";
        let read = |off: u64, buf: &mut [u8]| {
            self.space
                .read_virt(Va(addr.0.wrapping_add(off)), buf)
                .map_err(|source| KernelError::Read { what, source })
        };
        let mut name = vec![0u8; l.module_name_len as usize];
        read(l.module_name, &mut name)?;
        let name = name.split(|&b| b == 0).next().unwrap_or_default().to_vec();
        let mut state = [0u8; 4];
        read(l.module_state, &mut state)?;
        // base and size of the core text, both within the first 64 bytes (Layout checks)
        let mut core = [0u8; 64];
        let (b, z) = (l.module_core_base, l.module_core_size);
        let span = ((b + 8).max(z + 4) as usize).min(core.len());
        read(l.module_core, &mut core[..span])?;
        let mut data = Vec::new();
        if let Some(stride) = l.module_mem_stride {
            // MOD_DATA, MOD_RODATA, MOD_RO_AFTER_INIT follow MOD_TEXT
            let mut regions = vec![0u8; 4 * stride as usize];
            read(l.module_core, &mut regions)?;
            for i in 1..4 {
                let at = i * stride;
                let size = u32_at(&regions, at + z);
                if size != 0 {
                    data.push((Va(u64_at(&regions, at + b)), size));
                }
            }
        }
        Ok(Module {
            addr,
            name,
            state: u32::from_le_bytes(state),
            core_base: Va(u64_at(&core, b)),
            core_size: u32_at(&core, z),
            data,
        })
    }

    /// Every module on the `modules` list.
    pub fn modules(&self, limits: &Limits) -> Result<Vec<Module>, KernelError> {
        let l = self.layout;
        let head = self.symbol("modules")?;
        let mut out = Vec::new();
        walk_list(
            &self.space,
            head,
            MODULES_LIST,
            limits.max_modules,
            |node| {
                out.push(self.read_module(Va(node.0.wrapping_sub(l.module_list)))?);
                Ok(())
            },
        )?;
        Ok(out)
    }
}

/// A table of function pointers (an `*_operations` struct) read from the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FnTable {
    /// The table.
    pub at: Va,
    /// Every non-null function pointer, by member name, in offset order.
    pub fns: Vec<(String, Va)>,
}

/// The function-pointer members (`ptr fn`) of type `ty` the profile describes, with their
/// offsets, and the span they cover; an error when it describes none.
pub(crate) fn fn_fields(
    p: &crate::profile::Profile,
    ty: &str,
) -> Result<(Vec<(String, u64)>, usize), KernelError> {
    let t = p
        .types
        .get(ty)
        .ok_or_else(|| KernelError::MissingField(format!("{ty} (the type)")))?;
    let mut fields: Vec<(String, u64)> = t
        .fields
        .iter()
        .filter(|(_, f)| f.ty == "ptr fn")
        .map(|(n, f)| (n.clone(), f.offset))
        .collect();
    fields.sort_by_key(|(_, o)| *o);
    let span = fields.iter().map(|(_, o)| o + 8).max().unwrap_or(0);
    if fields.is_empty() || span > 4096 {
        return Err(KernelError::MissingField(format!(
            "{ty} (its function pointers)"
        )));
    }
    Ok((fields, span as usize))
}

/// Read the function-pointer table of type `ty` at `at` (members from [`fn_fields`]).
pub(crate) fn read_fn_table<V: VirtualMemory + ?Sized>(
    mem: &V,
    fields: &(Vec<(String, u64)>, usize),
    at: Va,
    what: &'static str,
) -> Result<FnTable, KernelError> {
    if !is_kernel_va(at.0) {
        return Err(KernelError::BadPointer { what, value: at.0 });
    }
    let b = mem.read_bytes(at, fields.1).map_err(read_err(what))?;
    Ok(FnTable {
        at,
        fns: fields
            .0
            .iter()
            .map(|(n, o)| (n.clone(), Va(u64_at(&b, *o))))
            .filter(|(_, v)| v.0 != 0)
            .collect(),
    })
}

/// A NUL-terminated guest string at the pointer `ptr` (empty when null or unreadable:
/// names are evidence, not structure).
pub(crate) fn name_at<V: VirtualMemory + ?Sized>(mem: &V, ptr: u64, max: usize) -> Vec<u8> {
    if !is_kernel_va(ptr) {
        return Vec::new();
    }
    mem.read_cstr(Va(ptr), max).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::addr::Pa;
    use crate::error::ReadError;

    /// A flat virtual memory over a byte vector at a kernel base address.
    pub(crate) struct Flat {
        pub(crate) base: u64,
        pub(crate) bytes: Vec<u8>,
    }

    impl Flat {
        /// `size` zero bytes at `base`.
        pub(crate) fn new(base: u64, size: usize) -> Flat {
            Flat {
                base,
                bytes: vec![0u8; size],
            }
        }

        /// Write `b` at `at`.
        pub(crate) fn put(&mut self, at: u64, b: &[u8]) {
            let o = (at - self.base) as usize;
            self.bytes[o..o + b.len()].copy_from_slice(b);
        }
    }

    impl VirtualMemory for Flat {
        fn read_virt(&self, va: Va, buf: &mut [u8]) -> Result<(), ReadError> {
            let off = va.0.wrapping_sub(self.base) as usize;
            match self.bytes.get(off..off + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    Ok(())
                }
                None => Err(ReadError::Phys {
                    va,
                    pa: Pa(0),
                    cause: crate::error::PhysError::Unmapped { pa: Pa(0) },
                }),
            }
        }
    }

    const BASE: u64 = 0xffff_8880_0000_0000;

    fn list(links: &[(u64, u64)]) -> Flat {
        let mut bytes = vec![0u8; 0x1000];
        for &(at, next) in links {
            let o = (at - BASE) as usize;
            bytes[o..o + 8].copy_from_slice(&next.to_le_bytes());
        }
        Flat { base: BASE, bytes }
    }

    #[test]
    fn walks_a_list_and_stops_at_its_head() {
        let m = list(&[
            (BASE, BASE + 0x100),
            (BASE + 0x100, BASE + 0x200),
            (BASE + 0x200, BASE),
        ]);
        let mut seen = Vec::new();
        let n = walk_list(&m, Va(BASE), "t", 10, |v| {
            seen.push(v.0);
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(seen, vec![BASE + 0x100, BASE + 0x200]);
    }

    #[test]
    fn a_cycle_that_skips_the_head_is_reported() {
        let m = list(&[
            (BASE, BASE + 0x100),
            (BASE + 0x100, BASE + 0x200),
            (BASE + 0x200, BASE + 0x100),
        ]);
        let e = walk_list(&m, Va(BASE), "t", 10, |_| Ok(())).unwrap_err();
        assert!(
            matches!(e, KernelError::Cycle { at, after: 2, .. } if at == Va(BASE + 0x100)),
            "{e}"
        );
    }

    #[test]
    fn wild_pointers_and_long_lists_are_reported() {
        let m = list(&[(BASE, 0x4141_4141_4141_4141)]);
        let e = walk_list(&m, Va(BASE), "t", 10, |_| Ok(())).unwrap_err();
        assert!(
            matches!(
                e,
                KernelError::BadPointer {
                    value: 0x4141_4141_4141_4141,
                    ..
                }
            ),
            "{e}"
        );

        let links: Vec<(u64, u64)> = (0..20u64)
            .map(|i| (BASE + i * 0x40, BASE + (i + 1) * 0x40))
            .collect();
        let m = list(&links);
        let e = walk_list(&m, Va(BASE), "t", 5, |_| Ok(())).unwrap_err();
        assert!(matches!(e, KernelError::TooLong { max: 5, .. }), "{e}");

        // a pointer into unreadable memory is a read error carrying the address
        let m = list(&[(BASE, BASE + 0x10_0000)]);
        let e = walk_list(&m, Va(BASE), "t", 5, |_| Ok(())).unwrap_err();
        assert!(
            matches!(e, KernelError::Read { source, .. } if source.va() == Va(BASE + 0x10_0000)),
            "{e}"
        );
    }

    #[test]
    fn walks_an_hlist_to_its_null_end_and_catches_loops() {
        let m = list(&[(BASE, BASE + 0x100), (BASE + 0x100, BASE + 0x200)]);
        let mut seen = Vec::new();
        let n = walk_hlist(&m, Va(BASE), "h", 10, |v| {
            seen.push(v.0);
            Ok(())
        })
        .unwrap();
        assert_eq!((n, seen), (2, vec![BASE + 0x100, BASE + 0x200]));
        assert_eq!(
            walk_hlist(&m, Va(BASE + 0x300), "h", 10, |_| Ok(())).unwrap(),
            0
        );
        let m = list(&[
            (BASE, BASE + 0x100),
            (BASE + 0x100, BASE + 0x200),
            (BASE + 0x200, BASE + 0x100),
        ]);
        let e = walk_hlist(&m, Va(BASE), "h", 10, |_| Ok(())).unwrap_err();
        assert!(matches!(e, KernelError::Cycle { after: 2, .. }), "{e}");
        let e = walk_hlist(&m, Va(BASE), "h", 1, |_| Ok(())).unwrap_err();
        assert!(matches!(e, KernelError::TooLong { max: 1, .. }), "{e}");
    }
}
