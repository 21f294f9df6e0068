//! The interrupt descriptor table.
//!
//! x86-64 Linux keeps one IDT for every CPU, `idt_table` (256 gates of 16 bytes, a
//! layout the hardware fixes: `struct gate_struct`). Since 4.15 the CPUs load a
//! read-only alias of it in the CPU entry area, so IDTR does not hold `idt_table`'s
//! address but maps to the same physical page; [`Kernel::idtr_matches`] checks that.

use crate::addr::Va;
use crate::arch::x86_64::translate;
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// The symbols the IDT check reads.
pub const NEEDS: crate::profile::needs::Declaration = crate::declaration!(
    "idt";
    fields [];
    symbols [
        ["idt_table"],
        // the early exception stubs: reserved vectors 20..31 keep pointing at them after
        // boot (idt_setup_early_handler fills all 32, idt_setup_traps only the defined)
        opt ["early_idt_handler_array"],
    ]
);

/// Gates in the IDT.
pub const IDT_ENTRIES: usize = 256;
/// `__KERNEL_CS`.
pub const KERNEL_CS: u16 = 0x10;
/// `EARLY_IDT_HANDLER_SIZE`, bytes per stub of `early_idt_handler_array`: 9, plus 4
/// for the `endbr64` of kernels built with `CONFIG_X86_KERNEL_IBT` (6.2 on).
pub const EARLY_IDT_HANDLER_SIZES: [u64; 2] = [9, 13];
/// Exception vectors (`NUM_EXCEPTION_VECTORS`).
pub const EXCEPTION_VECTORS: u8 = 32;

/// One IDT gate, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// The vector (0..=255).
    pub vector: u8,
    /// The handler address.
    pub target: Va,
    /// The code segment selector.
    pub selector: u16,
    /// Interrupt stack table index (0: none).
    pub ist: u8,
    /// Gate type (14 interrupt gate, 15 trap gate).
    pub kind: u8,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// Present bit.
    pub present: bool,
}

impl Gate {
    /// Decode the 16 bytes of a gate.
    pub fn decode(vector: u8, b: &[u8; 16]) -> Gate {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let low = u64::from(u16_at(0));
        let mid = u64::from(u16_at(6));
        let high = u64::from(u32::from_le_bytes([b[8], b[9], b[10], b[11]]));
        let bits = u16_at(4);
        Gate {
            vector,
            target: Va(low | (mid << 16) | (high << 32)),
            selector: u16_at(2),
            ist: (bits & 0x7) as u8,
            kind: ((bits >> 8) & 0x1f) as u8,
            dpl: ((bits >> 13) & 0x3) as u8,
            present: bits & 0x8000 != 0,
        }
    }
}

impl<M: PhysicalMemory> Kernel<M> {
    /// `idt_table` and its gates.
    pub fn idt(&self) -> Result<(Va, Vec<Gate>), KernelError> {
        let at = self.symbol("idt_table")?;
        let mut buf = vec![0u8; IDT_ENTRIES * 16];
        self.space
            .read_virt(at, &mut buf)
            .map_err(|source| KernelError::Read {
                what: "idt_table",
                source,
            })?;
        let gates = buf
            .chunks_exact(16)
            .enumerate()
            .map(|(i, c)| Gate::decode(i as u8, c.try_into().unwrap_or(&[0; 16])))
            .collect();
        Ok((at, gates))
    }

    /// Whether `target` is the boot-time stub of exception `vector` in
    /// `early_idt_handler_array`, where Linux leaves the reserved exception vectors
    /// (20..31 on most kernels) after boot: `idt_setup_early_handler` points all 32
    /// there and `idt_setup_traps` replaces only the vectors it has handlers for. False
    /// for other vectors and when the profile lacks the symbol.
    pub fn is_early_idt_stub(&self, vector: u8, target: Va) -> bool {
        if vector >= EXCEPTION_VECTORS {
            return false;
        }
        let Some(base) = self.profile.symbol("early_idt_handler_array") else {
            return false;
        };
        let base = base.wrapping_add(self.placement.virt_shift);
        EARLY_IDT_HANDLER_SIZES
            .iter()
            .any(|size| target.0 == base.wrapping_add(u64::from(vector) * size))
    }

    /// Whether an IDTR base (from a vCPU's registers) maps to the same physical page as
    /// `idt_table`, through the kernel's page table. `Ok(false)` means the CPU uses
    /// another table.
    pub fn idtr_matches(&self, idtr_base: u64) -> Result<bool, KernelError> {
        let table = self.symbol("idt_table")?;
        let root = self.placement.root;
        let mem = self.space.memory();
        let a = translate(mem, root, table).map_err(|e| KernelError::Read {
            what: "idt_table",
            source: e.into(),
        })?;
        match translate(mem, root, Va(idtr_base)) {
            Ok(b) => Ok(a.pa == b.pa),
            Err(_) => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_linux_interrupt_gate() {
        // asm_exc_page_fault at 0xffffffff81e00b70, __KERNEL_CS, IST 0, interrupt gate,
        // DPL 0, present
        let target: u64 = 0xffff_ffff_81e0_0b70;
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&(target as u16).to_le_bytes());
        b[2..4].copy_from_slice(&0x10u16.to_le_bytes());
        b[4..6].copy_from_slice(&0x8e00u16.to_le_bytes());
        b[6..8].copy_from_slice(&((target >> 16) as u16).to_le_bytes());
        b[8..12].copy_from_slice(&((target >> 32) as u32).to_le_bytes());
        let g = Gate::decode(14, &b);
        assert_eq!(
            g,
            Gate {
                vector: 14,
                target: Va(target),
                selector: 0x10,
                ist: 0,
                kind: 14,
                dpl: 0,
                present: true
            }
        );
        // int 0x80: DPL 3; the double fault on IST stack 1
        b[4..6].copy_from_slice(&0xee00u16.to_le_bytes());
        assert_eq!(Gate::decode(0x80, &b).dpl, 3);
        b[4..6].copy_from_slice(&0x8e01u16.to_le_bytes());
        assert_eq!(Gate::decode(8, &b).ist, 1);
        assert!(!Gate::decode(0, &[0; 16]).present);
    }
}
