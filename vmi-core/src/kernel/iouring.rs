//! A process's io_uring instances.
//!
//! An io_uring is an open file (`anon_inode:[io_uring]` in `/proc/PID/fd`) whose
//! `f_op` is `io_uring_fops` and whose `private_data` is the ring's `io_ring_ctx`.
//! Work submitted through its queues runs in the kernel without a system call per
//! operation (and with `IORING_SETUP_SQPOLL` without any: a kernel thread polls the
//! queue), so a program that does its I/O this way (Curing's C2 channel) is invisible
//! to monitors that watch system calls. Reading the instances from memory shows it.
//!
//! Per instance: the descriptor, the context, `flags` (`IORING_SETUP_*`),
//! `sq_entries` and `cq_entries`; the submitter task (`submitter_task`, 6.0 on, set
//! with `IORING_SETUP_SINGLE_ISSUER`) and, for `IORING_SETUP_SQPOLL`, the polling
//! thread (`sq_data->thread`). `io_ring_ctx` is in `include/linux` only from 6.0 and
//! `io_sq_data` never is (io_uring/sqpoll.h), and a kernel built without io_uring has
//! neither nor `io_uring_fops`: every one of them is optional ([`IoUringLayout`]), a
//! field the profile lacks is `None` in the result, and [`Kernel::io_urings`] without
//! `io_uring_fops` or the context's sizes is a [`KernelError::MissingSymbol`] /
//! [`KernelError::MissingField`] the caller can show as "not known".
//!
//! Hostile memory: the descriptor walk is the bounded one `sockets.rs` shares; a
//! context or thread pointer that is no kernel address is a
//! [`KernelError::BadPointer`]; at most [`MAX_RINGS`] instances per process are
//! read, more is [`KernelError::TooLong`].

use crate::addr::Va;
use crate::kernel::sockets::FdLayout;
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// `IORING_SETUP_SQPOLL`.
pub const IORING_SETUP_SQPOLL: u32 = 1 << 1;
/// Most io_uring instances read per process.
pub const MAX_RINGS: usize = 4096;

crate::kernel_layout! {
    /// Offsets of an io_uring instance.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct IoUringLayout(p) {
        /// `file.private_data` (the `io_ring_ctx`)
        pub file_private: u64 = "file" ["private_data"],
        /// `io_ring_ctx.flags`
        pub ctx_flags: Option<u64> = opt_type "io_ring_ctx" ["flags"],
        /// `io_ring_ctx.sq_entries`
        pub ctx_sq_entries: Option<u64> = opt_type "io_ring_ctx" ["sq_entries"],
        /// `io_ring_ctx.cq_entries`
        pub ctx_cq_entries: Option<u64> = opt_type "io_ring_ctx" ["cq_entries"],
        /// `io_ring_ctx.sq_data` (SQPOLL's `io_sq_data`)
        pub ctx_sq_data: Option<u64> = opt_type "io_ring_ctx" ["sq_data"],
        /// `io_ring_ctx.submitter_task` (6.0 on)
        pub ctx_submitter: Option<u64> = opt_both "io_ring_ctx" ["submitter_task"],
        /// `io_sq_data.thread` (the polling thread; private to io_uring/sqpoll.h)
        pub sqd_thread: Option<u64> = opt_type "io_sq_data" ["thread"],
    }
    symbols [
        opt ["io_uring_fops"],
    ]
}

/// One io_uring instance a process holds open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoUring {
    /// The descriptor.
    pub fd: u32,
    /// The `io_ring_ctx`.
    pub ctx: Va,
    /// `flags` (`IORING_SETUP_*`), when the profile has it.
    pub flags: Option<u32>,
    /// `sq_entries`.
    pub sq_entries: Option<u32>,
    /// `cq_entries`.
    pub cq_entries: Option<u32>,
    /// The thread id of the task allowed to submit (`submitter_task`), when set.
    pub submitter: Option<u32>,
    /// The thread id of the SQPOLL polling thread, when there is one.
    pub sq_thread: Option<u32>,
}

impl IoUring {
    /// True when the ring was set up with `IORING_SETUP_SQPOLL`.
    pub fn sqpoll(&self) -> bool {
        self.flags.is_some_and(|f| f & IORING_SETUP_SQPOLL != 0)
    }
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The io_uring instances among the open files of the process whose group leader
    /// is `task`.
    pub fn io_urings(&self, task: Va) -> Result<Vec<IoUring>, KernelError> {
        let l = IoUringLayout::from_profile(&self.profile)?;
        let fl = FdLayout::from_profile(&self.profile)?;
        let fops = self.symbol("io_uring_fops")?;
        let mut out = Vec::new();
        self.open_files(task, &fl, |fd, file, f_op| {
            if f_op != fops.0 {
                return Ok(());
            }
            if out.len() >= MAX_RINGS {
                return Err(KernelError::TooLong {
                    what: "io_uring instances",
                    max: MAX_RINGS,
                });
            }
            let ctx = self.ptr(file.wrapping_add(l.file_private), "file.private_data")?;
            if ctx == 0 {
                return Ok(());
            }
            out.push(self.io_uring_at(&l, fd, ctx)?);
            Ok(())
        })?;
        Ok(out)
    }

    fn io_uring_at(&self, l: &IoUringLayout, fd: u32, ctx: u64) -> Result<IoUring, KernelError> {
        let u32_at = |off: Option<u64>, what: &'static str| -> Result<Option<u32>, KernelError> {
            off.map(|o| {
                self.space
                    .read_u32(Va(ctx.wrapping_add(o)))
                    .map_err(|source| KernelError::Read { what, source })
            })
            .transpose()
        };
        let flags = u32_at(l.ctx_flags, "io_ring_ctx.flags")?;
        let tid_of = |task: u64, what: &'static str| -> Result<Option<u32>, KernelError> {
            if task == 0 {
                return Ok(None);
            }
            self.space
                .read_u32(Va(task.wrapping_add(self.layout.task_pid)))
                .map(Some)
                .map_err(|source| KernelError::Read { what, source })
        };
        let submitter = match l.ctx_submitter {
            Some(off) => {
                let t = self.ptr(ctx.wrapping_add(off), "io_ring_ctx.submitter_task")?;
                tid_of(t, "io_ring_ctx.submitter_task->pid")?
            }
            None => None,
        };
        let sq_thread = match (l.ctx_sq_data, l.sqd_thread) {
            (Some(sq), Some(th)) if flags.is_some_and(|f| f & IORING_SETUP_SQPOLL != 0) => {
                let sqd = self.ptr(ctx.wrapping_add(sq), "io_ring_ctx.sq_data")?;
                if sqd == 0 {
                    None
                } else {
                    let t = self.ptr(sqd.wrapping_add(th), "io_sq_data.thread")?;
                    tid_of(t, "io_sq_data.thread->pid")?
                }
            }
            _ => None,
        };
        Ok(IoUring {
            fd,
            ctx: Va(ctx),
            flags,
            sq_entries: u32_at(l.ctx_sq_entries, "io_ring_ctx.sq_entries")?,
            cq_entries: u32_at(l.ctx_cq_entries, "io_ring_ctx.cq_entries")?,
            submitter,
            sq_thread,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SyntheticKernel;

    /// A ring of `entries` for `fd` of `t`, SQPOLL'd by `poller` when given.
    fn ring(
        sk: &mut SyntheticKernel,
        t: &crate::testing::SynthTask,
        fd: u32,
        entries: u32,
        poller: Option<Va>,
    ) -> Va {
        let file = sk.pseudo_file(crate::kernel::openfiles::ANON_INODE_FS_MAGIC, b"[io_uring]");
        let fops = sk.symbol("io_uring_fops");
        sk.set(file, "file", "f_op", fops.0);
        let ctx = sk.alloc_type("io_ring_ctx");
        sk.set(file, "file", "private_data", ctx.0);
        sk.set_u32(ctx, "io_ring_ctx", "sq_entries", entries);
        sk.set_u32(ctx, "io_ring_ctx", "cq_entries", entries * 2);
        if let Some(thread) = poller {
            sk.set_u32(ctx, "io_ring_ctx", "flags", IORING_SETUP_SQPOLL);
            let sqd = sk.alloc_type("io_sq_data");
            sk.set(sqd, "io_sq_data", "thread", thread.0);
            sk.set(ctx, "io_ring_ctx", "sq_data", sqd.0);
        }
        sk.open_fd(t, fd, file);
        ctx
    }

    #[test]
    fn rings_with_and_without_sqpoll() {
        let mut sk = SyntheticKernel::clean();
        let t = sk.add_process(700, b"curing", 0);
        let poller = sk.add_thread(&t, 701, b"iou-sqp-700");
        let plain = ring(&mut sk, &t, 3, 8, None);
        let polled = ring(&mut sk, &t, 4, 64, Some(poller.task));
        let other = sk.add_process(800, b"bash", 0);
        let k = sk.discover().unwrap();
        let rings = k.io_urings(t.task).unwrap();
        assert_eq!(rings.len(), 2, "{rings:#?}");
        assert_eq!(
            (
                rings[0].fd,
                rings[0].ctx,
                rings[0].sq_entries,
                rings[0].cq_entries
            ),
            (3, plain, Some(8), Some(16))
        );
        assert!(!rings[0].sqpoll());
        assert_eq!(rings[0].sq_thread, None);
        assert_eq!((rings[1].fd, rings[1].ctx), (4, polled));
        assert!(rings[1].sqpoll());
        assert_eq!(rings[1].sq_thread, Some(701));
        assert!(k.io_urings(other.task).unwrap().is_empty());
    }

    #[test]
    fn a_wild_context_or_thread_is_an_error() {
        let mut sk = SyntheticKernel::clean();
        let t = sk.add_process(700, b"curing", 0);
        ring(&mut sk, &t, 3, 8, Some(Va(0x4141_4141)));
        let u = sk.add_process(701, b"curing2", 0);
        ring(&mut sk, &u, 3, 8, None);
        let files = sk.get(u.task, "task_struct", "files");
        let fdt = sk.get(Va(files), "files_struct", "fdt");
        let file = sk.read_u64(Va(sk.get(Va(fdt), "fdtable", "fd") + 3 * 8));
        sk.set(Va(file), "file", "private_data", 0x4242_4242);
        let k = sk.discover().unwrap();
        assert!(matches!(
            k.io_urings(t.task),
            Err(KernelError::BadPointer {
                what: "io_sq_data.thread",
                ..
            })
        ));
        assert!(matches!(
            k.io_urings(u.task),
            Err(KernelError::BadPointer {
                what: "file.private_data",
                ..
            })
        ));
    }

    #[test]
    fn a_profile_without_io_uring_says_so() {
        let mut sk = SyntheticKernel::clean();
        let t = sk.add_process(700, b"x", 0);
        sk.profile_mut().symbols.remove("io_uring_fops");
        let k = sk.discover().unwrap();
        assert!(matches!(
            k.io_urings(t.task),
            Err(KernelError::MissingSymbol(_))
        ));
    }
}
