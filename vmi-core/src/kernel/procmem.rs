//! A process's memory and user registers, for a core file of it (`dump-process`).
//!
//! Memory: the pages of a range of the process's address space that its page table
//! maps (through `mm->pgd`, as `userspace.rs` reads arguments), as runs of resident
//! bytes. A page-table entry that is not present skips the whole range it would map
//! (a 1 GiB hole costs one read), so a reserved but empty region of terabytes is
//! walked in a few steps; every byte read counts against the caller's budget.
//!
//! Registers: a task that runs in user mode entered the kernel (a system call, an
//! interrupt) with its user registers saved in the `struct pt_regs` at the top of its
//! kernel stack (`task->stack + THREAD_SIZE - TOP_OF_KERNEL_STACK_PADDING -
//! sizeof(struct pt_regs)`; the padding is 16 bytes in kernels built with FRED
//! support, found by its entry point `asm_fred_entrypoint_user`, as Debian's 7.x
//! are, else 0), in the order the x86-64 ABI fixes (`r15` first, `ss` last:
//! the order of the core file's `user_regs_struct` up to `ss`). A task that is
//! running on a CPU at the moment of the read has them there only as of its last
//! entry.
//!
//! Fields used ([`ProcMemLayout`]): `task_struct.stack`, `pt_regs.ip` (its offset and
//! the type's size checked against the ABI's); the symbol `asm_fred_entrypoint_user`
//! (optional).

use crate::addr::Va;
use crate::error::TranslateError;
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// `THREAD_SIZE` of x86-64 kernels without KASAN (16 KiB).
pub const THREAD_SIZE: u64 = 16 * 1024;
/// The words of `struct pt_regs`, in order.
pub const PT_REGS: [&str; 21] = [
    "r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx", "si", "di",
    "orig_ax", "ip", "cs", "flags", "sp", "ss",
];
const PAGE: u64 = 4096;

crate::kernel_layout! {
    /// Where a task's saved user registers are.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ProcMemLayout(p) {
        /// `task_struct.stack`
        pub task_stack: u64 = "task_struct" ["stack"],
        /// `pt_regs.ip` (16 words in, by the ABI)
        pub regs_ip: u64 = "pt_regs" ["ip"],
    }
    computed {
        /// What the kernel leaves free above `pt_regs` (`TOP_OF_KERNEL_STACK_PADDING`):
        /// 16 bytes in a kernel built with FRED support (`CONFIG_X86_FRED`, whose
        /// entry point it has), else none.
        pub padding: u64 = if p.symbol("asm_fred_entrypoint_user").is_some() { 16 } else { 0 },
    }
    check {
        let size = p.types.get("pt_regs").map_or(0, |t| t.size);
        if regs_ip != 16 * 8 || size != 21 * 8 {
            return Err(KernelError::MissingField(format!(
                "pt_regs: ip at {regs_ip}, {size} bytes: not the x86-64 layout"
            )));
        }
    }
    symbols [
        opt ["asm_fred_entrypoint_user"],
    ]
}

/// Resident bytes of a process's address space starting at `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidentRun {
    /// The first address.
    pub start: u64,
    /// The bytes (whole pages).
    pub data: Vec<u8>,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The resident pages of `start..end` (page-aligned) in the address space `mm`, as
    /// runs; stops with [`KernelError::TooLong`] when more than `*budget` bytes would
    /// be read, and takes what it read from `*budget`.
    pub fn resident_memory(
        &self,
        mm: Va,
        start: u64,
        end: u64,
        budget: &mut u64,
    ) -> Result<Vec<ResidentRun>, KernelError> {
        let user = self.user_space(mm)?;
        let mut runs: Vec<ResidentRun> = Vec::new();
        let mut at = start & !(PAGE - 1);
        let mut page = [0u8; PAGE as usize];
        while at < end {
            match user.translate(Va(at)) {
                Ok(_) => {
                    if *budget < PAGE {
                        return Err(KernelError::TooLong {
                            what: "process memory: bytes left to read",
                            max: usize::try_from(*budget).unwrap_or(usize::MAX),
                        });
                    }
                    if user.read_virt(Va(at), &mut page).is_ok() {
                        *budget -= PAGE;
                        match runs.last_mut() {
                            Some(r) if r.start + r.data.len() as u64 == at => {
                                r.data.extend_from_slice(&page)
                            }
                            _ => runs.push(ResidentRun {
                                start: at,
                                data: page.to_vec(),
                            }),
                        }
                    }
                    at += PAGE;
                }
                // skip what the missing entry would map
                Err(TranslateError::NotPresent { level, .. }) => {
                    let span = 1u64 << level.shift();
                    at = (at & !(span - 1)).saturating_add(span);
                }
                Err(_) => at += PAGE,
            }
        }
        Ok(runs)
    }

    /// The user registers `task` saved on entering the kernel, in [`PT_REGS`] order
    /// (`None` for a task without a stack: one exiting).
    pub fn user_registers(&self, task: Va) -> Result<Option<[u64; 21]>, KernelError> {
        let l = ProcMemLayout::from_profile(&self.profile)?;
        let stack = self.ptr(task.0.wrapping_add(l.task_stack), "task_struct.stack")?;
        if stack == 0 {
            return Ok(None);
        }
        let at = stack.wrapping_add(THREAD_SIZE - l.padding - 21 * 8);
        let mut buf = [0u8; 21 * 8];
        self.space
            .read_virt(Va(at), &mut buf)
            .map_err(|source| KernelError::Read {
                what: "pt_regs",
                source,
            })?;
        let mut regs = [0u64; 21];
        for (r, c) in regs.iter_mut().zip(buf.chunks_exact(8)) {
            *r = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
        }
        Ok(Some(regs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::vma::{VM_READ, VM_WRITE};
    use crate::testing::{SyntheticKernel, ARGS_PAGE};

    #[test]
    fn resident_pages_are_read_in_runs_and_holes_skipped_within_the_budget() {
        let mut sk = SyntheticKernel::clean();
        let t = sk.add_process(100, b"a", 0);
        let mm = sk.exec(&t, b"/bin/a", &[b"a"], b"/bin/a");
        sk.add_vma(
            mm,
            (0x40_0000, 0x40_3000),
            VM_READ | VM_WRITE,
            None,
            Some(b"first"),
        );
        sk.map_user(mm, 0x40_2000, 1, b'z');
        let k = sk.discover().unwrap();
        let mut budget = 1 << 20;
        let runs = k
            .resident_memory(mm, 0x40_0000, 0x40_3000, &mut budget)
            .unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].start, runs[0].data.len()), (0x40_0000, 4096));
        assert_eq!(&runs[0].data[..5], b"first");
        assert_eq!((runs[1].start, runs[1].data[0]), (0x40_2000, b'z'));
        assert_eq!(budget, (1 << 20) - 2 * 4096);
        // 64 TiB of nothing but the arguments' page: a few steps, one page read
        let mut budget = 1 << 20;
        let runs = k
            .resident_memory(mm, 0x1000, 0x7fff_ffff_f000, &mut budget)
            .unwrap();
        assert!(runs.iter().any(|r| r.start == ARGS_PAGE));
        // a budget smaller than what is resident stops the read
        let mut budget = 4096;
        assert!(matches!(
            k.resident_memory(mm, 0x40_0000, 0x40_3000, &mut budget),
            Err(KernelError::TooLong { .. })
        ));
    }

    #[test]
    fn user_registers_are_the_pt_regs_at_the_top_of_the_kernel_stack() {
        let mut sk = SyntheticKernel::clean();
        let t = sk.add_process(100, b"a", 0);
        let stack = sk.alloc(THREAD_SIZE);
        sk.set(t.task, "task_struct", "stack", stack.0);
        let regs: Vec<u8> = (0..21u64)
            .flat_map(|i| (0x1000 + i).to_le_bytes())
            .collect();
        sk.write(Va(stack.0 + THREAD_SIZE - 168), &regs);
        let k = sk.discover().unwrap();
        let r = k.user_registers(t.task).unwrap().unwrap();
        assert_eq!((r[0], r[16], r[20]), (0x1000, 0x1010, 0x1014));
        // a kernel built with FRED support leaves 16 bytes above them
        let mut sk = SyntheticKernel::clean();
        let t = sk.add_process(100, b"a", 0);
        let text = sk.profile().symbols["_text"].clone();
        sk.profile_mut()
            .symbols
            .insert("asm_fred_entrypoint_user".into(), text);
        let stack = sk.alloc(THREAD_SIZE);
        sk.set(t.task, "task_struct", "stack", stack.0);
        sk.write(Va(stack.0 + THREAD_SIZE - 16 - 168), &regs);
        let k = sk.discover().unwrap();
        let r = k.user_registers(t.task).unwrap().unwrap();
        assert_eq!((r[0], r[16], r[20]), (0x1000, 0x1010, 0x1014));
        // a layout that is not the ABI's is refused
        let mut sk = SyntheticKernel::clean();
        let t = sk.add_process(100, b"a", 0);
        sk.profile_mut()
            .types
            .get_mut("pt_regs")
            .unwrap()
            .fields
            .get_mut("ip")
            .unwrap()
            .offset = 0x78;
        let k = sk.discover().unwrap();
        assert!(matches!(
            k.user_registers(t.task),
            Err(KernelError::MissingField(_))
        ));
    }
}
