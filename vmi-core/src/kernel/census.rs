//! The processes from every view the kernel keeps of them, so that one corrupted or
//! unlinked structure hides nothing: the `tasks` list forwards, and backwards from where
//! it breaks ([`salvage`](crate::kernel::salvage)), the initial pid namespace's IDR, and
//! each CPU's current task. Each process says which views hold it ([`Views`]); each
//! break and each task that could not be decoded is kept with where it happened.
//!
//! [`Kernel::processes`] stays the strict walk (any break is an error): it is what a
//! profile is judged by. The census is what the detector reads a possibly hostile guest
//! with.

use std::collections::{HashMap, HashSet};

use bitflags::bitflags;

use crate::addr::Va;
use crate::kernel::cpus::Running;
use crate::kernel::objects::{
    is_kernel_va, Limits, Module, Process, MODULES_LIST, TASKS_LIST, THREAD_LIST,
};
use crate::kernel::pidns::{PidLimits, PidNamespaceView};
use crate::kernel::runqueue::Queued;
use crate::kernel::salvage::{salvage_list, ListBreak};
use crate::kernel::{Kernel, KernelError};
use crate::memory::PhysicalMemory;

bitflags! {
    /// The kernel's views of its tasks that hold a process.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Views: u8 {
        /// `init_task.tasks`, walked forwards from its head.
        const TASKS = 1;
        /// `init_task.tasks`, walked backwards (beyond a break of the forward walk).
        const TASKS_BACKWARD = 1 << 1;
        /// The initial pid namespace's IDR (the leader's or a thread's pid).
        const PID_NAMESPACE = 1 << 2;
        /// A CPU's current task (`current_task` / `pcpu_hot.current_task`).
        const RUNNING = 1 << 3;
        /// Queued on a CPU's run queue (the fair tree or a real-time list).
        const QUEUED = 1 << 4;
    }
}

impl Views {
    /// On the tasks list, from either end.
    pub fn on_tasks_list(self) -> bool {
        self.intersects(Views::TASKS | Views::TASKS_BACKWARD)
    }

    /// The views' names (`tasks`, `tasks-backward`, `pid-namespace`, `running`,
    /// `queued`).
    pub fn names(self) -> Vec<&'static str> {
        [
            (Views::TASKS, "tasks"),
            (Views::TASKS_BACKWARD, "tasks-backward"),
            (Views::PID_NAMESPACE, "pid-namespace"),
            (Views::RUNNING, "running"),
            (Views::QUEUED, "queued"),
        ]
        .into_iter()
        .filter(|(v, _)| self.contains(*v))
        .map(|(_, n)| n)
        .collect()
    }
}

/// A task a view holds that could not be read as a process (a wild `real_cred`, an
/// unreadable `task_struct`).
#[derive(Debug)]
pub struct Undecodable {
    /// The `task_struct`.
    pub task: Va,
    /// The view that holds it.
    pub view: Views,
    /// Why.
    pub error: KernelError,
}

impl std::fmt::Display for Undecodable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the task at {} ({}) cannot be read as a process: {}",
            self.task,
            self.view.names().join(", "),
            self.error
        )
    }
}

/// Every process any view holds.
#[derive(Debug)]
pub struct Census {
    /// The processes: the tasks list's in its order (forwards, then the tail reached
    /// backwards), then those only other views hold.
    pub processes: Vec<Process>,
    /// Where the tasks list and the processes' thread lists broke.
    pub breaks: Vec<ListBreak>,
    /// Tasks a view holds that could not be decoded.
    pub undecodable: Vec<Undecodable>,
    /// The pid namespace's IDR.
    pub pid_namespace: Result<PidNamespaceView, KernelError>,
    /// Each CPU's current task.
    pub running: Result<Vec<Running>, KernelError>,
    /// The tasks queued on the CPUs' run queues (a walk a running guest can tear: an
    /// error here is no evidence).
    pub queued: Result<Vec<Queued>, KernelError>,
}

impl Census {
    /// True when nothing is broken: every list walked whole, every task decoded.
    pub fn is_whole(&self) -> bool {
        self.breaks.is_empty() && self.undecodable.is_empty()
    }

    /// The processes the tasks list holds (from either end).
    pub fn listed(&self) -> impl Iterator<Item = &Process> {
        self.processes.iter().filter(|p| p.views.on_tasks_list())
    }
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The processes of every view. Fails only when the tasks list cannot even be
    /// located (the profile lacks `init_task`); a damaged list, IDR or task is reported
    /// in the census and the other views still count.
    pub fn census(&self, limits: &Limits) -> Result<Census, KernelError> {
        let l = self.layout;
        let init = self.symbol("init_task")?;
        let head = Va(init.0.wrapping_add(l.task_tasks));
        let list = salvage_list(&self.space, head, TASKS_LIST, limits.max_processes);
        let mut census = Census {
            processes: Vec::new(),
            breaks: list.breaks,
            undecodable: Vec::new(),
            pid_namespace: self.pid_namespace_tasks(&PidLimits::default()),
            running: self.running(),
            queued: self.queued(),
        };
        let mut seen: HashSet<Va> = HashSet::new();
        let mut buf = Vec::new();
        for (i, node) in list.nodes.iter().enumerate() {
            let task = Va(node.0.wrapping_sub(l.task_tasks));
            let view = if i < list.forward {
                Views::TASKS
            } else {
                Views::TASKS_BACKWARD
            };
            seen.insert(task);
            self.census_add(&mut census, task, view, limits, &mut buf);
        }

        // tasks of the other views no process read so far holds (as its leader or a
        // thread): task -> its process's index
        let mut held: HashMap<Va, usize> = HashMap::new();
        let hold = |held: &mut HashMap<Va, usize>, processes: &[Process], from: usize| {
            for (i, p) in processes.iter().enumerate().skip(from) {
                held.insert(p.task, i);
                for t in &p.threads {
                    held.entry(t.task).or_insert(i);
                }
            }
        };
        hold(&mut held, &census.processes, 0);
        let mut others: Vec<(Va, Views)> = Vec::new();
        if let Ok(view) = &census.pid_namespace {
            for t in &view.tasks {
                // a thread's process is its group leader's
                let leader = if t.tid == t.tgid || !is_kernel_va(t.group_leader.0) {
                    t.task
                } else {
                    t.group_leader
                };
                others.push((leader, Views::PID_NAMESPACE));
                others.push((t.task, Views::PID_NAMESPACE));
            }
        }
        if let Ok(running) = &census.running {
            for r in running.iter().filter(|r| r.tid != 0 && r.exit_state == 0) {
                others.push((r.task, Views::RUNNING));
            }
        }
        if let Ok(queued) = &census.queued {
            others.extend(queued.iter().map(|q| (q.task, Views::QUEUED)));
        }
        for (task, view) in others {
            if let Some(&i) = held.get(&task) {
                census.processes[i].views |= view;
                continue;
            }
            if !seen.insert(task) {
                continue; // could not be decoded before
            }
            let before = census.processes.len();
            self.census_add(&mut census, task, view, limits, &mut buf);
            hold(&mut held, &census.processes, before);
        }
        Ok(census)
    }

    /// Decode the process led by `task` into the census, its thread list salvaged.
    fn census_add(
        &self,
        census: &mut Census,
        task: Va,
        view: Views,
        limits: &Limits,
        buf: &mut Vec<u8>,
    ) {
        match self.read_process(task, buf) {
            Ok((mut p, signal)) => {
                p.views = view;
                if let Some(signal) = signal {
                    let head = Va(signal.0.wrapping_add(self.layout.signal_thread_head));
                    let threads = salvage_list(&self.space, head, THREAD_LIST, limits.max_threads);
                    for node in &threads.nodes {
                        let t = Va(node.0.wrapping_sub(self.layout.task_thread_node));
                        match self.read_thread(t) {
                            Ok(th) => p.threads.push(th),
                            Err(error) => census.undecodable.push(Undecodable {
                                task: t,
                                view,
                                error,
                            }),
                        }
                    }
                    census.breaks.extend(threads.breaks);
                }
                census.processes.push(p);
            }
            // a run queue walk of a running guest can be torn: what it gives that is
            // no task is no evidence
            Err(_) if view == Views::QUEUED => {}
            Err(error) => census.undecodable.push(Undecodable { task, view, error }),
        }
    }
}

/// What a damaged `modules` list still holds.
#[derive(Debug, Default)]
pub struct ModuleList {
    /// The modules reached forwards, then backwards.
    pub modules: Vec<Module>,
    /// Where the list broke.
    pub breaks: Vec<ListBreak>,
    /// Elements that could not be read as a `struct module`.
    pub undecodable: Vec<UndecodableModule>,
}

/// An element of the `modules` list that is no readable `struct module`.
#[derive(Debug)]
pub struct UndecodableModule {
    /// Where its `struct module` would be.
    pub addr: Va,
    /// Why it could not be read.
    pub error: KernelError,
}

impl std::fmt::Display for UndecodableModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the modules list holds {}, which cannot be read as a module: {}",
            self.addr, self.error
        )
    }
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The modules on the `modules` list, read from both ends where it is broken. Fails
    /// only when the profile lacks the list's symbol.
    pub fn modules_salvaged(&self, limits: &Limits) -> Result<ModuleList, KernelError> {
        let head = self.symbol("modules")?;
        let list = salvage_list(&self.space, head, MODULES_LIST, limits.max_modules);
        let mut out = ModuleList {
            breaks: list.breaks,
            ..ModuleList::default()
        };
        for node in list.nodes {
            let addr = Va(node.0.wrapping_sub(self.layout.module_list));
            match self.read_module(addr) {
                Ok(m) => out.modules.push(m),
                Err(error) => out.undecodable.push(UndecodableModule { addr, error }),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::salvage::Direction;
    use crate::testing::{SynthTask, SyntheticKernel};

    fn views(c: &Census) -> Vec<(u32, Vec<&'static str>)> {
        c.processes
            .iter()
            .map(|p| (p.pid, p.views.names()))
            .collect()
    }

    const BOTH: [&str; 2] = ["tasks", "pid-namespace"];

    /// init, kthreadd, sshd, bash (two threads), cron.
    fn five() -> (SyntheticKernel, Vec<SynthTask>) {
        let mut sk = SyntheticKernel::clean();
        let t = vec![
            sk.add_process(1, b"init", 0),
            sk.add_kthread(2, b"kthreadd"),
            sk.add_process(300, b"sshd", 0),
            sk.add_process(400, b"bash", 1000),
            sk.add_process(500, b"cron", 0),
        ];
        sk.add_thread(&t[3], 401, b"bash-worker");
        (sk, t)
    }

    fn tasks_next(sk: &SyntheticKernel, t: &SynthTask) -> Va {
        sk.field_va(t.task, "task_struct", "tasks")
    }

    #[test]
    fn a_whole_kernel_gives_the_strict_walk_with_its_views() {
        let (sk, _) = five();
        let k = sk.discover().unwrap();
        let c = k.census(&Limits::default()).unwrap();
        assert!(c.is_whole(), "{:?}", c.breaks);
        let mut strict = k.processes(&Limits::default()).unwrap();
        for p in &mut strict {
            p.views |= Views::PID_NAMESPACE;
        }
        assert_eq!(c.processes, strict);
        assert_eq!(c.listed().count(), 5);
    }

    #[test]
    fn a_wild_next_in_the_tasks_list_hides_nothing() {
        let (mut sk, t) = five();
        let at = tasks_next(&sk, &t[2]);
        sk.write_u64(at, 0x4141_4141_4141_4141);
        let k = sk.discover().unwrap();
        assert!(k.processes(&Limits::default()).is_err());
        let c = k.census(&Limits::default()).unwrap();
        let back = vec!["tasks-backward", "pid-namespace"];
        assert_eq!(
            views(&c),
            [
                (1, BOTH.to_vec()),
                (2, BOTH.to_vec()),
                (300, BOTH.to_vec()),
                (400, back.clone()),
                (500, back)
            ]
        );
        assert_eq!(c.breaks.len(), 1);
        let b = &c.breaks[0];
        assert_eq!((b.direction, b.from, b.after), (Direction::Forward, at, 3));
        assert_eq!(c.processes[3].threads.len(), 2);
    }

    #[test]
    fn a_loop_an_unlinked_process_and_a_running_one_are_each_found() {
        let (mut sk, t) = five();
        let rk = sk.add_process(666, b"rootkitd", 0);
        sk.unlink_task(&rk);
        let miner = sk.add_process(777, b"miner", 0);
        sk.unlink_task(&miner);
        sk.idr_set(777, 0);
        sk.set_running(miner.task);
        // sshd's next goes back to kthreadd, cron's prev is null: bash is in neither half
        let sshd = tasks_next(&sk, &t[2]);
        sk.write_u64(sshd, tasks_next(&sk, &t[1]).0);
        sk.write_u64(Va(tasks_next(&sk, &t[4]).0 + 8), 0);
        let k = sk.discover().unwrap();
        let c = k.census(&Limits::default()).unwrap();
        let got = views(&c);
        assert!(got.contains(&(666, vec!["pid-namespace"])), "{got:?}");
        assert!(got.contains(&(777, vec!["running"])), "{got:?}");
        // bash: in neither half of the list, still in the pid namespace
        assert!(got.contains(&(400, vec!["pid-namespace"])), "{got:?}");
        let pids: HashSet<u32> = c.processes.iter().map(|p| p.pid).collect();
        assert_eq!(pids, HashSet::from([1, 2, 300, 400, 500, 666, 777]));
        assert!(
            matches!(c.breaks[0].cause, KernelError::Cycle { .. }),
            "{:?}",
            c.breaks
        );
        assert!(
            matches!(c.breaks[1].cause, KernelError::BadPointer { value: 0, .. }),
            "{:?}",
            c.breaks
        );
    }

    #[test]
    fn tasks_queued_on_a_run_queue_are_a_view_of_their_own() {
        let (mut sk, t) = five();
        sk.enqueue(&t[2]);
        sk.enqueue(&t[3]);
        let fair = sk.add_process(800, b"miner", 0);
        let rt = sk.add_process(801, b"rtkit", 0);
        for x in [&fair, &rt] {
            sk.unlink_task(x);
            sk.idr_set(u64::from(x.pid), 0);
        }
        sk.enqueue(&fair);
        sk.enqueue_rt(&rt, 42);
        let k = sk.discover().unwrap();
        let q = k.queued().unwrap();
        let classes: Vec<(Va, &str)> = q.iter().map(|q| (q.task, q.class)).collect();
        assert_eq!(
            classes,
            [
                (t[2].task, "fair"),
                (t[3].task, "fair"),
                (fair.task, "fair"),
                (rt.task, "rt")
            ]
        );
        let c = k.census(&Limits::default()).unwrap();
        let got = views(&c);
        assert!(
            got.contains(&(300, vec!["tasks", "pid-namespace", "queued"])),
            "{got:?}"
        );
        assert!(got.contains(&(800, vec!["queued"])), "{got:?}");
        assert!(got.contains(&(801, vec!["queued"])), "{got:?}");
    }

    #[test]
    fn a_run_queue_tree_that_loops_is_an_error_not_a_hang() {
        let (mut sk, t) = five();
        sk.enqueue(&t[2]);
        let node =
            sk.field_va(t[2].task, "task_struct", "se").0 + sk.offset("sched_entity", "run_node");
        sk.write_u64(Va(node + sk.offset("rb_node", "rb_left")), node);
        let k = sk.discover().unwrap();
        assert!(matches!(k.queued(), Err(KernelError::Cycle { .. })));
        // the other views still count
        let c = k.census(&Limits::default()).unwrap();
        assert_eq!(c.processes.len(), 5);
    }

    #[test]
    fn a_task_that_cannot_be_decoded_is_kept_aside_and_the_walk_goes_on() {
        let (mut sk, t) = five();
        sk.set(t[2].task, "task_struct", "real_cred", 0x10);
        let k = sk.discover().unwrap();
        let c = k.census(&Limits::default()).unwrap();
        let pids: Vec<u32> = c.processes.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [1, 2, 400, 500]);
        assert_eq!(c.undecodable.len(), 1, "{:?}", c.undecodable);
        assert_eq!(c.undecodable[0].task, t[2].task);
        assert!(matches!(
            c.undecodable[0].error,
            KernelError::BadPointer { value: 0x10, .. }
        ));
    }

    #[test]
    fn a_thread_list_loop_keeps_its_process_and_threads() {
        let (mut sk, t) = five();
        let node = sk.field_va(t[3].task, "task_struct", "thread_node");
        sk.write_u64(node, node.0);
        let k = sk.discover().unwrap();
        let c = k.census(&Limits::default()).unwrap();
        let bash = c.processes.iter().find(|p| p.pid == 400).unwrap();
        // the leader forwards, the worker backwards
        assert_eq!(bash.threads.len(), 2);
        assert!(c
            .breaks
            .iter()
            .any(|b| b.list == THREAD_LIST && matches!(b.cause, KernelError::Cycle { .. })));
    }

    #[test]
    fn a_wild_next_in_the_modules_list_hides_no_module() {
        let mut sk = SyntheticKernel::clean();
        let ms: Vec<_> = [&b"e1000"[..], b"ext4", b"vmi_rk", b"nf_tables"]
            .iter()
            .map(|n| sk.add_module(n, 0x2000))
            .collect();
        let next = sk.field_va(ms[1].addr, "module", "list");
        sk.write_u64(next, 0xdead_0000_0000_0000);
        let k = sk.discover().unwrap();
        assert!(k.modules(&Limits::default()).is_err());
        let l = k.modules_salvaged(&Limits::default()).unwrap();
        let names: Vec<&[u8]> = l.modules.iter().map(|m| m.name.as_slice()).collect();
        assert_eq!(names, [&b"e1000"[..], b"ext4", b"vmi_rk", b"nf_tables"]);
        assert_eq!(l.breaks.len(), 1);
        assert_eq!(l.breaks[0].from, next);
    }
}
