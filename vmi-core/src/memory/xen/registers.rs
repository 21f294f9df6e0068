//! vCPU registers: from Xen's HVM save record (PVH, HVM) or from the vCPU context
//! (PV, CR3 turned back into a guest-physical address).

use std::ffi::c_void;
use std::io;

use crate::arch::x86_64::{
    DescriptorTable, Registers, Segment, ADDR_MASK, CR0_PG, CR4_PAE, EFER_LMA,
};
use crate::error::Error;
use crate::memory::{PhysicalMemory, VcpuRegisters};

use super::ffi::{self, seg, HvmHwCpu, VcpuGuestContext};
use super::handles::Inner;
use super::{XenDomain, XenError, XenGuestKind, PAGE};

/// Registers from a PV vCPU's context, with CR3 as a guest-physical address (`cr3` is
/// the guest frame of the page table's machine frame).
///
/// Xen reports only the control-register bits a PV guest controls: a PV guest always
/// runs in long mode with 4-level paging, so CR0.PG, CR4.PAE and EFER.LMA/LME are set
/// here. The kernel runs in ring 3 (its CS has RPL 3); GS is the kernel's per-CPU base
/// while the vCPU is in guest kernel mode. PV guests have no GDTR or IDTR a tool can
/// read (their trap table is Xen's): both are reported as 0.
pub(crate) fn registers_from_pv(c: &VcpuGuestContext, cr3: u64) -> Registers {
    let u = &c.user_regs;
    let in_kernel = c.flags & ffi::VGCF_IN_KERNEL != 0;
    let (gs, other) = if in_kernel {
        (c.gs_base_kernel, c.gs_base_user)
    } else {
        (c.gs_base_user, c.gs_base_kernel)
    };
    let selector = |s: u16| Segment {
        selector: s,
        ..Segment::default()
    };
    Registers {
        rax: u.rax,
        rbx: u.rbx,
        rcx: u.rcx,
        rdx: u.rdx,
        rsi: u.rsi,
        rdi: u.rdi,
        rsp: u.rsp,
        rbp: u.rbp,
        r: [u.r8, u.r9, u.r10, u.r11, u.r12, u.r13, u.r14, u.r15],
        rip: u.rip,
        rflags: u.rflags,
        cr0: c.ctrlreg[0] | CR0_PG | 1,
        cr2: c.ctrlreg[2],
        cr3,
        cr4: c.ctrlreg[4] | CR4_PAE,
        efer: Some(EFER_LMA | (1 << 8)),
        cs: selector(u.cs),
        ss: selector(u.ss),
        ds: selector(u.ds),
        es: selector(u.es),
        fs: Segment {
            base: c.fs_base,
            ..selector(u.fs)
        },
        gs: Segment {
            base: gs,
            ..selector(u.gs)
        },
        kernel_gs_base: Some(other),
        gdt: DescriptorTable::default(),
        idt: DescriptorTable::default(),
        // a PV guest's system-call entries are Xen's; it registers callbacks instead
        lstar: None,
        cstar: None,
        sysenter_eip: None,
        paravirtual: true,
    }
}

/// QEMU-style segment flags (descriptor bits 8..23) from Xen's attributes, in either
/// the packed 12-bit form (type, S, DPL, P, then AVL, L, D/B, G at bits 8..11) or the
/// VMX form (those four at bits 12..15).
fn segment_flags(ar: u32) -> u32 {
    let low = ar & 0xff;
    let high = if ar & 0xf000 != 0 {
        (ar >> 12) & 0xf
    } else {
        (ar >> 8) & 0xf
    };
    (low << 8) | (high << 20)
}

/// Registers from a vCPU's HVM save record.
pub(crate) fn registers_from_hvm(c: &HvmHwCpu) -> Registers {
    let segment = |i: usize| Segment {
        selector: c.sel[i] as u16,
        base: c.base[i],
        limit: c.limit[i],
        flags: segment_flags(c.arbytes[i]),
    };
    Registers {
        rax: c.rax,
        rbx: c.rbx,
        rcx: c.rcx,
        rdx: c.rdx,
        rsi: c.rsi,
        rdi: c.rdi,
        rsp: c.rsp,
        rbp: c.rbp,
        r: c.r8_15,
        rip: c.rip,
        rflags: c.rflags,
        cr0: c.cr0,
        cr2: c.cr2,
        cr3: c.cr3,
        cr4: c.cr4,
        efer: Some(c.msr_efer),
        cs: segment(seg::CS),
        ss: segment(seg::SS),
        ds: segment(seg::DS),
        es: segment(seg::ES),
        fs: segment(seg::FS),
        gs: segment(seg::GS),
        kernel_gs_base: Some(c.shadow_gs),
        gdt: DescriptorTable {
            base: c.base[seg::GDTR],
            limit: c.limit[seg::GDTR],
        },
        idt: DescriptorTable {
            base: c.base[seg::IDTR],
            limit: c.limit[seg::IDTR],
        },
        lstar: Some(c.msr_lstar),
        cstar: Some(c.msr_cstar),
        sysenter_eip: Some(c.sysenter_eip),
        paravirtual: false,
    }
}

impl VcpuRegisters for XenDomain {
    fn vcpu_count(&self) -> usize {
        self.vcpus
    }

    fn registers(&self, vcpu: usize) -> Result<Registers, Error> {
        if vcpu >= self.vcpus {
            return Err(Error::NoSuchVcpu {
                vcpu,
                count: self.vcpus,
            });
        }
        if self.kind == XenGuestKind::Pv {
            return self.pv_registers(vcpu);
        }
        let inner = self.lock()?;
        let mut ctx = HvmHwCpu::default();
        // SAFETY: ctx is a struct hvm_hw_cpu (layout checked against Xen's headers) and
        // its size is passed.
        let rc = unsafe {
            (inner.libs.xc_domain_hvm_getcontext_partial)(
                inner.xch,
                self.domid,
                ffi::HVM_SAVE_CODE_CPU,
                vcpu as u16,
                (&mut ctx as *mut HvmHwCpu).cast::<c_void>(),
                std::mem::size_of::<HvmHwCpu>() as u32,
            )
        };
        if rc != 0 {
            return Err(self.context_error(&inner, vcpu, "xc_domain_hvm_getcontext_partial"));
        }
        Ok(registers_from_hvm(&ctx))
    }
}

impl XenDomain {
    /// Why `call` failed for `vcpu` (errno still set): the domain is gone, or the
    /// registers are unavailable.
    fn context_error(&self, inner: &Inner, vcpu: usize, call: &str) -> Error {
        let e = io::Error::last_os_error();
        if inner.info(self.domid).ok().flatten().is_none() {
            return XenError::Gone { domid: self.domid }.into();
        }
        Error::RegistersUnavailable {
            vcpu,
            why: format!("{call}: {e}"),
        }
    }

    fn pv_registers(&self, vcpu: usize) -> Result<Registers, Error> {
        let inner = self.lock()?;
        let mut ctx = VcpuGuestContext::default();
        // SAFETY: ctx is a vcpu_guest_context_any_t (size checked against Xen's headers).
        let rc = unsafe {
            (inner.libs.xc_vcpu_getcontext)(inner.xch, self.domid, vcpu as u32, &mut ctx)
        };
        if rc != 0 {
            return Err(self.context_error(&inner, vcpu, "xc_vcpu_getcontext"));
        }
        drop(inner);
        // xen_cr3_to_pfn on x86-64: the machine frame in bits 51:12
        let machine = ctx.ctrlreg[3] & ADDR_MASK;
        let cr3 = self
            .table_frame(machine)
            .ok_or_else(|| Error::RegistersUnavailable {
                vcpu,
                why: format!(
                    "its page table (machine frame {:#x}) is not in the domain's p2m",
                    machine / PAGE
                ),
            })?;
        Ok(registers_from_pv(&ctx, cr3.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Pa;
    use crate::arch::x86_64::PagingMode;

    #[test]
    fn registers_from_a_pv_context() {
        let mut c = VcpuGuestContext {
            flags: ffi::VGCF_IN_KERNEL,
            ..VcpuGuestContext::default()
        };
        c.user_regs.rip = 0xffff_ffff_8100_0000;
        c.user_regs.cs = 0xe033; // FLAT_KERNEL_CS64: ring 3
        c.user_regs.r8 = 8;
        c.user_regs.r15 = 15;
        c.ctrlreg = [
            0x8000_003b & !(1 << 31),
            0,
            0x1234,
            0x42_5000,
            0x0620,
            0,
            0,
            0,
        ];
        c.gs_base_kernel = 0xffff_8880_0f40_0000;
        c.gs_base_user = 0x7f00_0000_0000;
        let r = registers_from_pv(&c, 0x1_d000);
        assert_eq!(
            (r.rip, r.r[0], r.r[7], r.cr2),
            (c.user_regs.rip, 8, 15, 0x1234)
        );
        let root = r.page_table_root().unwrap();
        assert_eq!(
            (root.table, root.mode),
            (Pa(0x1_d000), PagingMode::FourLevel)
        );
        assert_eq!(r.cpl(), 3);
        assert_eq!(r.gs.base, 0xffff_8880_0f40_0000);
        assert_eq!(r.kernel_gs_base, Some(0x7f00_0000_0000));
        assert_eq!((r.idt.base, r.gdt.base), (0, 0));
        c.flags = 0; // user mode: the bases are the other way round
        let r = registers_from_pv(&c, 0x1_d000);
        assert_eq!(r.gs.base, 0x7f00_0000_0000);
    }

    #[test]
    fn segment_attributes_in_both_forms() {
        // 64-bit kernel code: type 0xb, S, DPL 0, P; L and G set
        let packed = 0x9b | (1 << 9) | (1 << 11);
        let vmx = 0x9b | (1 << 13) | (1 << 15);
        for ar in [packed, vmx] {
            let f = segment_flags(ar);
            assert_eq!(f & 0xff00, 0x9b00, "{ar:#x}");
            assert_ne!(f & (1 << 21), 0, "L bit of {ar:#x}");
            assert_ne!(f & (1 << 23), 0, "G bit of {ar:#x}");
        }
        assert_eq!(segment_flags(0), 0);
    }

    #[test]
    fn registers_from_a_save_record() {
        let mut c = HvmHwCpu {
            rax: 1,
            r8_15: [8, 9, 10, 11, 12, 13, 14, 15],
            rip: 0xffff_ffff_8100_0000,
            cr0: 0x8005_0033,
            cr3: 0x5a5_6000,
            cr4: 0x10ef0,
            msr_efer: 0xd01,
            shadow_gs: 0x7f00_0000_0000,
            ..HvmHwCpu::default()
        };
        c.sel[seg::CS] = 0x10;
        c.arbytes[seg::CS] = 0xa9b;
        c.base[seg::GS] = 0xffff_8880_0f40_0000;
        c.base[seg::IDTR] = 0xffff_fe00_0000_0000;
        c.limit[seg::IDTR] = 0xfff;
        let r = registers_from_hvm(&c);
        assert_eq!((r.rax, r.r[7], r.rip), (1, 15, 0xffff_ffff_8100_0000));
        assert_eq!((r.cr3, r.efer, r.cpl()), (0x5a5_6000, Some(0xd01), 0));
        assert_eq!(r.gs.base, 0xffff_8880_0f40_0000);
        assert_eq!(r.kernel_gs_base, Some(0x7f00_0000_0000));
        assert_eq!((r.idt.base, r.idt.limit), (0xffff_fe00_0000_0000, 0xfff));
        assert!(r.page_table_root().is_ok());
    }
}
