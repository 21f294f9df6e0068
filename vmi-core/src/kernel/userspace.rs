//! A process's own memory: its command line, its environment and the name it was
//! executed by.
//!
//! The strings `execve` copies to the top of a new process's stack are read through
//! the process's page table (`mm_struct.pgd`, found in the kernel's direct map): the
//! arguments (`mm_struct.arg_start..arg_end`, what `/proc/PID/cmdline` shows), the
//! environment (`mm_struct.env_start..env_end`, what `/proc/PID/environ` shows) and
//! the file name `execve` was given (what `AT_EXECFN` points to: the kernel copies it
//! first, so it lies right above the environment strings, at `mm_struct.env_end`).
//! All are the process's own memory: it may rewrite them (setproctitle does), and a
//! page it never touched again may be swapped out. Reads are bounded
//! ([`MAX_CMDLINE`], [`MAX_ENVIRON`], [`MAX_EXECFN`]) and refuse addresses outside the
//! user half.
//!
//! Fields used: `mm_struct.pgd`, `mm_struct.arg_start`, `mm_struct.arg_end`,
//! `mm_struct.env_start`, `mm_struct.env_end`.

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
        /// `mm_struct.env_start`
        pub env_start: u64 = "mm_struct" ["env_start"],
        /// `mm_struct.env_end`
        pub env_end: u64 = "mm_struct" ["env_end"],
    }
}

/// Most bytes of a command line read (what `ps` shows by default is less).
pub const MAX_CMDLINE: usize = 4096;
/// Most bytes of an environment read (the kernel's own limit on the argument and
/// environment strings together is a quarter of the stack limit, 2 MiB by default;
/// an environment larger than this is cut, and said to be).
pub const MAX_ENVIRON: usize = 256 * 1024;
/// Longest executed file name read (`PATH_MAX`).
pub const MAX_EXECFN: usize = 4096;
/// The top of the user half of the address space (4-level paging; 5-level user
/// addresses above it are not used by execve's stack on distribution kernels).
const USER_TOP: u64 = 0x0000_8000_0000_0000;

/// A process's environment, as `/proc/PID/environ` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Environment {
    /// The `NAME=value` strings, split at NUL bytes (guest bytes), at most
    /// [`MAX_ENVIRON`] bytes of them; a trailing empty string from the final NUL is
    /// dropped.
    pub vars: Vec<Vec<u8>>,
    /// True when `env_end - env_start` was larger than what was read.
    pub truncated: bool,
}

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
        let [start, end, env_end] = self.mm_words(mm, [l.arg_start, l.arg_end, l.env_end])?;
        if end == 0 || env_end == 0 {
            return Ok(None);
        }
        user_span(mm, start, end, "arguments")?;
        let user = self.user_space(mm)?;
        let argv = strings_at(&user, start, end, MAX_CMDLINE, "the process's arguments")?;
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

    /// The environment of the address space `mm` (`None` for a null `mm` and for one
    /// whose environment is not set up yet: `execve` sets `env_end` last, see
    /// [`Self::exec_strings`]).
    pub fn environment(&self, mm: Va) -> Result<Option<Environment>, KernelError> {
        if mm.0 == 0 {
            return Ok(None);
        }
        let l = ArgsLayout::from_profile(&self.profile)?;
        let [start, end] = self.mm_words(mm, [l.env_start, l.env_end])?;
        if end == 0 {
            return Ok(None);
        }
        user_span(mm, start, end, "environment")?;
        let user = self.user_space(mm)?;
        let vars = strings_at(&user, start, end, MAX_ENVIRON, "the process's environment")?;
        Ok(Some(Environment {
            vars,
            truncated: (end - start) as usize > MAX_ENVIRON,
        }))
    }
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The `mm_struct` words at the offsets `offs`.
    fn mm_words<const N: usize>(&self, mm: Va, offs: [u64; N]) -> Result<[u64; N], KernelError> {
        let mut out = [0u64; N];
        for (o, off) in out.iter_mut().zip(offs) {
            *o = self
                .space
                .read_u64(Va(mm.0.wrapping_add(off)))
                .map_err(read_err("mm_struct"))?;
        }
        Ok(out)
    }
}

/// Refuse a span of `mm`'s strings that ends below its start or above the user half.
fn user_span(mm: Va, start: u64, end: u64, what: &str) -> Result<(), KernelError> {
    if end < start || end > USER_TOP {
        return Err(KernelError::Corrupt {
            what: format!("mm_struct {what} {start:#x}..{end:#x}"),
            at: mm,
        });
    }
    Ok(())
}

/// The NUL-separated strings at `start..end` of the user address space `user`, at
/// most `max` bytes of them; the empty string after a final NUL is dropped.
fn strings_at<V: VirtualMemory>(
    user: &V,
    start: u64,
    end: u64,
    max: usize,
    what: &'static str,
) -> Result<Vec<Vec<u8>>, KernelError> {
    let len = (end.saturating_sub(start) as usize).min(max);
    let mut buf = vec![0u8; len];
    user.read_virt(Va(start), &mut buf)
        .map_err(read_err(what))?;
    if buf.last() == Some(&0) {
        buf.pop();
    }
    Ok(if buf.is_empty() {
        Vec::new()
    } else {
        buf.split(|&b| b == 0).map(<[u8]>::to_vec).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{SyntheticKernel, ARGS_PAGE};

    fn with_env(env: &[&[u8]]) -> (SyntheticKernel, Va) {
        let mut sk = SyntheticKernel::clean();
        let t = sk.add_process(100, b"sshd", 0);
        let mm = sk.exec_env(
            &t,
            b"/usr/sbin/sshd",
            &[b"sshd", b"-D"],
            env,
            b"/usr/sbin/sshd",
        );
        (sk, mm)
    }

    #[test]
    fn the_environment_is_what_lies_between_the_arguments_and_execfn() {
        let (sk, mm) = with_env(&[b"PATH=/bin", b"LD_PRELOAD=/tmp/x.so", b"A=\x1b[31m"]);
        let k = sk.discover().unwrap();
        let env = k.environment(mm).unwrap().unwrap();
        assert_eq!(
            env.vars,
            vec![
                b"PATH=/bin".to_vec(),
                b"LD_PRELOAD=/tmp/x.so".to_vec(),
                b"A=\x1b[31m".to_vec()
            ]
        );
        assert!(!env.truncated);
        // the arguments and the executed name are not part of it
        let s = k.exec_strings(mm).unwrap().unwrap();
        assert_eq!(s.argv, vec![b"sshd".to_vec(), b"-D".to_vec()]);
        assert_eq!(s.execfn.as_deref(), Some(&b"/usr/sbin/sshd"[..]));
    }

    #[test]
    fn an_empty_environment_and_a_null_mm() {
        let (sk, mm) = with_env(&[]);
        let k = sk.discover().unwrap();
        assert_eq!(
            k.environment(mm).unwrap().unwrap().vars,
            Vec::<Vec<u8>>::new()
        );
        assert_eq!(k.environment(Va(0)).unwrap(), None);
    }

    #[test]
    fn a_process_in_the_middle_of_execve_has_none_yet() {
        let (mut sk, mm) = with_env(&[b"A=1"]);
        sk.set(mm, "mm_struct", "env_end", 0);
        let k = sk.discover().unwrap();
        assert_eq!(k.environment(mm).unwrap(), None);
    }

    #[test]
    fn hostile_bounds_are_errors_and_a_huge_one_reads_at_most_the_cap() {
        // end below start, end in the kernel half: corrupt
        for (start, end) in [(ARGS_PAGE + 0x10, ARGS_PAGE), (ARGS_PAGE, u64::MAX - 7)] {
            let (mut sk, mm) = with_env(&[b"A=1"]);
            sk.set(mm, "mm_struct", "env_start", start);
            sk.set(mm, "mm_struct", "env_end", end);
            let k = sk.discover().unwrap();
            assert!(
                matches!(k.environment(mm), Err(KernelError::Corrupt { .. })),
                "{start:#x}..{end:#x}"
            );
        }
        // 1 TiB claimed below the strings: at most the cap is read (no 1 TiB
        // buffer), and its unmapped pages are a read error
        let (mut sk, mm) = with_env(&[b"A=1"]);
        sk.set(mm, "mm_struct", "env_start", ARGS_PAGE - (1 << 40));
        let k = sk.discover().unwrap();
        assert!(matches!(k.environment(mm), Err(KernelError::Read { .. })));
    }

    #[test]
    fn an_environment_longer_than_the_cap_is_cut_and_said_to_be() {
        let (mut sk, mm) = with_env(&[b"A=1"]);
        // the strings end in the arguments' page; say the environment begins well
        // below it, on a page the test maps with filler
        let start = ARGS_PAGE - MAX_ENVIRON as u64 - 0x1000;
        sk.map_user(mm, start, (MAX_ENVIRON as u64 + 0x1000) / 0x1000, b'x');
        sk.set(mm, "mm_struct", "env_start", start);
        let k = sk.discover().unwrap();
        let env = k.environment(mm).unwrap().unwrap();
        assert!(env.truncated);
        assert_eq!(env.vars.iter().map(Vec::len).sum::<usize>(), MAX_ENVIRON);
    }
}
