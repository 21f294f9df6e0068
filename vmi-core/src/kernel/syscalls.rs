//! The system call tables, and the kernel's text range.
//!
//! `sys_call_table` holds `NR_syscalls` function pointers. The profile gives that number
//! as the length of `trace_array.enter_syscall_files` (an array of `NR_syscalls`
//! elements in every kernel built with `CONFIG_FTRACE_SYSCALLS`, as distribution kernels
//! are). `ia32_sys_call_table` (kernels before 6.1.85/6.6.26) has no such array: its
//! length is found by reading entries while they point into kernel text or the module
//! area, at most [`MAX_SYSCALLS`], and reported as such.
//!
//! From 6.9 (and 6.1.85, 6.6.26 with the branch-history-injection fix) x86 dispatches
//! through the `x64_sys_call`/`ia32_sys_call` switch, not the table; the table stays
//! in memory (tracing reads it) and is still checked here. The dispatch function's code
//! is covered by the kernel-text comparison.

use crate::addr::Va;
use crate::kernel::layout::array_len;
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// The symbols and fields the system call tables are read with.
pub const NEEDS: crate::profile::needs::Declaration = crate::declaration!(
    "syscalls";
    // NR_syscalls, the length of sys_call_table, is the length of this array (present
    // with CONFIG_FTRACE_SYSCALLS, as in every distribution kernel): `nr_syscalls`
    fields [
        opt "trace_array" ["enter_syscall_files"],
        // the names of the system calls (CONFIG_FTRACE_SYSCALLS): `syscall_names`
        opt_type "syscall_metadata" ["name"],
    ];
    symbols [
        ["sys_call_table"],
        // the syscall_metadata of each number, filled at boot
        opt ["syscalls_metadata"],
        opt ["ia32_sys_call_table"],
        // the switch 6.9 on dispatches through: read by no walker yet
        opt ["x64_sys_call"],
        // kernel text bounds
        ["_stext"],
        ["_etext"],
    ]
);

/// Most entries read from a system call table.
pub const MAX_SYSCALLS: usize = 1024;

/// Where the module area starts (`MODULES_VADDR`: the end of the 1 GiB kernel image
/// mapping of KASLR kernels).
pub const MODULES_START: u64 = 0xffff_ffff_c000_0000;
/// Where it ends (`MODULES_END`).
pub const MODULES_END: u64 = 0xffff_ffff_ff00_0000;

/// Which table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SyscallAbi {
    /// `sys_call_table` (64-bit system calls).
    X64,
    /// `ia32_sys_call_table` (32-bit compatibility system calls).
    Ia32,
}

impl SyscallAbi {
    /// The table's symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            SyscallAbi::X64 => "sys_call_table",
            SyscallAbi::Ia32 => "ia32_sys_call_table",
        }
    }
}

/// How a table's length was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableLength {
    /// From the profile (`NR_syscalls`).
    Profile,
    /// By reading entries while they point into kernel text or the module area.
    Scanned,
}

/// A system call table as it is in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyscallTable {
    /// Which one.
    pub abi: SyscallAbi,
    /// Its address (relocated).
    pub addr: Va,
    /// The handler of every system call number.
    pub entries: Vec<Va>,
    /// How the length was found.
    pub length: TableLength,
}

/// `[start, end)` of the kernel's text (`_stext`..`_etext`, relocated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRange {
    /// `_stext`.
    pub start: Va,
    /// `_etext`.
    pub end: Va,
}

impl TextRange {
    /// True when `va` is in the range.
    pub fn contains(&self, va: Va) -> bool {
        self.start <= va && va < self.end
    }
}

/// True for addresses in the module area.
pub fn in_module_area(va: Va) -> bool {
    (MODULES_START..MODULES_END).contains(&va.0)
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The kernel's text range.
    pub fn text_range(&self) -> Result<TextRange, KernelError> {
        let start = self.symbol("_stext")?;
        let end = self.symbol("_etext")?;
        if end <= start {
            return Err(KernelError::MissingSymbol("_etext"));
        }
        Ok(TextRange { start, end })
    }

    /// `NR_syscalls`, from the profile.
    pub fn nr_syscalls(&self) -> Option<usize> {
        self.profile
            .field("trace_array", "enter_syscall_files")
            .and_then(|f| array_len(&f.ty))
            .map(|n| n as usize)
            .filter(|&n| n > 0 && n <= MAX_SYSCALLS)
    }

    /// The system call tables this kernel has (the ia32 table only when the profile
    /// names it).
    pub fn syscall_tables(&self) -> Result<Vec<SyscallTable>, KernelError> {
        let mut out = Vec::new();
        let nr = self.nr_syscalls().ok_or_else(|| {
            KernelError::MissingField(
                "trace_array.enter_syscall_files (its length is NR_syscalls)".into(),
            )
        })?;
        let addr = self.symbol("sys_call_table")?;
        out.push(SyscallTable {
            abi: SyscallAbi::X64,
            addr,
            entries: self.read_pointers(addr, nr, "sys_call_table")?,
            length: TableLength::Profile,
        });
        if self.profile.symbol("ia32_sys_call_table").is_some() {
            let addr = self.symbol("ia32_sys_call_table")?;
            let text = self.text_range()?;
            // page by page, so that a table at the end of a mapping reads fine
            let mut entries = Vec::new();
            let mut at = addr;
            'scan: while entries.len() < MAX_SYSCALLS {
                let n = ((at.to_page_end() / 8) as usize).clamp(1, MAX_SYSCALLS - entries.len());
                let chunk = match self.read_pointers(at, n, "ia32_sys_call_table") {
                    Ok(c) => c,
                    Err(e) if entries.is_empty() => return Err(e),
                    Err(_) => break,
                };
                for p in chunk {
                    if !text.contains(p) && !in_module_area(p) {
                        break 'scan;
                    }
                    entries.push(p);
                }
                at = at.wrapping_add(n as u64 * 8);
            }
            out.push(SyscallTable {
                abi: SyscallAbi::Ia32,
                addr,
                entries,
                length: TableLength::Scanned,
            });
        }
        Ok(out)
    }

    /// The name of each x64 system call by number (`sys_getdents64` → `getdents64`),
    /// from the kernel's own tracing metadata (`syscalls_metadata`, which
    /// CONFIG_FTRACE_SYSCALLS fills at boot): `None` for a number without metadata (an
    /// unimplemented one) or a name that cannot be read. An error when the kernel or the
    /// profile has no metadata.
    pub fn syscall_names(&self) -> Result<Vec<Option<String>>, KernelError> {
        let nr = self.nr_syscalls().ok_or_else(|| {
            KernelError::MissingField(
                "trace_array.enter_syscall_files (its length is NR_syscalls)".into(),
            )
        })?;
        let name_off = self
            .profile
            .field("syscall_metadata", "name")
            .map(|f| f.offset)
            .ok_or_else(|| KernelError::MissingField("syscall_metadata.name".into()))?;
        let table = self
            .space
            .read_va(self.symbol("syscalls_metadata")?)
            .map_err(|source| KernelError::Read {
                what: "syscalls_metadata",
                source,
            })?;
        if table.0 == 0 {
            return Err(KernelError::MissingField(
                "syscalls_metadata (the kernel did not fill it: no CONFIG_FTRACE_SYSCALLS)".into(),
            ));
        }
        let metas = self.read_pointers(table, nr, "syscalls_metadata[]")?;
        Ok(metas
            .into_iter()
            .map(|m| {
                if m.0 == 0 {
                    return None;
                }
                let name = self.space.read_va(Va(m.0.wrapping_add(name_off))).ok()?;
                let bytes = self.space.read_cstr(name, 64).ok()?;
                let text = std::str::from_utf8(&bytes).ok()?;
                let text = text.strip_prefix("sys_").unwrap_or(text);
                (!text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                    .then(|| text.to_string())
            })
            .collect())
    }

    fn read_pointers(&self, at: Va, n: usize, what: &'static str) -> Result<Vec<Va>, KernelError> {
        let mut buf = vec![0u8; n * 8];
        self.space
            .read_virt(at, &mut buf)
            .map_err(|source| KernelError::Read { what, source })?;
        Ok(buf
            .chunks_exact(8)
            .map(|c| Va(u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
            .collect())
    }
}
