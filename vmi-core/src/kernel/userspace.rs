//! A process's own memory: its command line and the name it was executed by.
//!
//! The strings `execve` copies to the top of a new process's stack are read through
//! the process's page table (`mm_struct.pgd`, found in the kernel's direct map): the
//! arguments (`mm_struct.arg_start..arg_end`, what `/proc/PID/cmdline` shows) and the
//! file name `execve` was given (what `AT_EXECFN` points to: the kernel copies it
//! first, so it lies right above the environment strings, at `mm_struct.env_end`).
//! Both are the process's own memory: it may rewrite them (setproctitle does), and a
//! page it never touched again may be swapped out. Reads are bounded
//! ([`MAX_CMDLINE`], [`MAX_EXECFN`]) and refuse addresses outside the user half.
//!
//! Fields used: `mm_struct.pgd`, `mm_struct.arg_start`, `mm_struct.arg_end`,
//! `mm_struct.env_end`.

use crate::addr::Va;
use crate::arch::x86_64::{AddressSpace, PageTableRoot};
use crate::kernel::objects::read_err;
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

crate::kernel_layout! {
    /// Where a process's arguments and environment are.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ArgsLayout(p) {
        /// `mm_struct.arg_start`
        pub arg_start: u64 = "mm_struct" ["arg_start"],
        /// `mm_struct.arg_end`
        pub arg_end: u64 = "mm_struct" ["arg_end"],
        /// `mm_struct.env_end`
        pub env_end: u64 = "mm_struct" ["env_end"],
    }
}

/// Most bytes of a command line read (what `ps` shows by default is less).
pub const MAX_CMDLINE: usize = 4096;
/// Longest executed file name read (`PATH_MAX`).
pub const MAX_EXECFN: usize = 4096;
/// The top of the user half of the address space (4-level paging; 5-level user
/// addresses above it are not used by execve's stack on distribution kernels).
const USER_TOP: u64 = 0x0000_8000_0000_0000;

/// What `execve` left in a process's memory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecStrings {
    /// The arguments, split at NUL bytes (guest bytes), at most [`MAX_CMDLINE`] bytes
    /// of them; a trailing empty argument from the final NUL is dropped.
    pub argv: Vec<Vec<u8>>,
    /// True when `arg_end - arg_start` was larger than what was read.
    pub truncated: bool,
    /// The file name `execve` was given (`AT_EXECFN`), `None` when it cannot be read
    /// (the page is not present).
    pub execfn: Option<Vec<u8>>,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The address space of `mm` (its `pgd` through the kernel's direct map).
    pub(crate) fn user_space(&self, mm: Va) -> Result<AddressSpace<&M>, KernelError> {
        let pgd = self.ptr(mm.0.wrapping_add(self.layout.mm_pgd), "mm_struct.pgd")?;
        if pgd == 0 {
            return Err(KernelError::BadPointer {
                what: "mm_struct.pgd",
                value: pgd,
            });
        }
        let t = self
            .space
            .translate(Va(pgd))
            .map_err(|e| read_err("mm_struct.pgd's page table")(e.into()))?;
        let root = PageTableRoot {
            table: t.pa,
            mode: self.placement.root.mode,
        };
        Ok(AddressSpace::with_tlb_entries(self.space.memory(), root, 0))
    }

    /// The arguments and executed file name of the address space `mm` (`None` for a
    /// null `mm`, a kernel thread or a process that is exiting, and for an address
    /// space whose arguments are not set up yet: `execve` installs the new `mm`, then
    /// sets `arg_start`, then `arg_end`, and `env_end` last, so while `arg_end` or
    /// `env_end` is 0 the process is in the middle of `execve`; user space cannot set
    /// them to 0 (`prctl(PR_SET_MM)` keeps them above `mmap_min_addr`)).
    pub fn exec_strings(&self, mm: Va) -> Result<Option<ExecStrings>, KernelError> {
        if mm.0 == 0 {
            return Ok(None);
        }
        let l = ArgsLayout::from_profile(&self.profile)?;
        let read = |off: u64| -> Result<u64, KernelError> {
            self.space
                .read_u64(Va(mm.0.wrapping_add(off)))
                .map_err(read_err("mm_struct"))
        };
        let (start, end, env_end) = (read(l.arg_start)?, read(l.arg_end)?, read(l.env_end)?);
        if end == 0 || env_end == 0 {
            return Ok(None);
        }
        if end < start || end > USER_TOP {
            return Err(KernelError::Corrupt {
                what: format!("mm_struct arguments {start:#x}..{end:#x}"),
                at: mm,
            });
        }
        let user = self.user_space(mm)?;
        let len = ((end - start) as usize).min(MAX_CMDLINE);
        let mut buf = vec![0u8; len];
        user.read_virt(Va(start), &mut buf)
            .map_err(read_err("the process's arguments"))?;
        if buf.last() == Some(&0) {
            buf.pop();
        }
        let argv = if buf.is_empty() {
            Vec::new()
        } else {
            buf.split(|&b| b == 0).map(<[u8]>::to_vec).collect()
        };
        let execfn = if env_end != 0 && env_end < USER_TOP - MAX_EXECFN as u64 {
            user.read_cstr(Va(env_end), MAX_EXECFN).ok()
        } else {
            None
        };
        Ok(Some(ExecStrings {
            argv,
            truncated: (end - start) as usize > MAX_CMDLINE,
            execfn,
        }))
    }
}
