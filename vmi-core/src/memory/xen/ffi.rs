//! Xen 4.17's tool libraries, loaded at run time (`dlopen`, through libloading), and the
//! few structures they fill.
//!
//! Nothing links against Xen: the crate builds and its tests run on any host, and the
//! libraries are looked up only when a domain is opened (in dom0). The sonames are Xen
//! 4.17's (`libxenctrl.so.4.17`: its domctl structures change between Xen releases).
//! The structure layouts below are checked against Debian's libxen-dev headers by
//! the unit test at the end of this file (`layouts_equal_the_xen_headers`).

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void};
use std::sync::OnceLock;

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};

/// `xc_interface *`.
pub type XcInterface = *mut c_void;
/// `xenforeignmemory_handle *`.
pub type ForeignMemory = *mut c_void;
/// `struct xs_handle *`.
pub type XsHandle = *mut c_void;
/// `xentoollog_logger *`.
pub type Logger = *mut c_void;
/// `xen_pfn_t` on x86-64.
pub type XenPfn = u64;

/// The libraries, in load order (dependencies first), and the soname each is asked for.
pub const LIBRARIES: &[&str] = &[
    "libxentoollog.so.1",
    "libxenforeignmemory.so.1",
    "libxenctrl.so.4.17",
    "libxenstore.so.4",
];

/// `XEN_DOMINF_*` flags of [`DomainInfo::flags`].
pub const DOMINF_DYING: u32 = 1 << 0;
/// An HVM (or PVH) guest.
pub const DOMINF_HVM_GUEST: u32 = 1 << 1;
/// The guest has shut down.
pub const DOMINF_SHUTDOWN: u32 = 1 << 2;
/// Paused by the toolstack.
pub const DOMINF_PAUSED: u32 = 1 << 3;

/// `XEN_X86_EMU_*` devices Xen emulates for a full HVM guest; a PVH guest has none of
/// them (at most the local APIC and vPCI).
pub const EMU_HVM_DEVICES: u32 = (1 << 1) // HPET
    | (1 << 2) // PM
    | (1 << 3) // RTC
    | (1 << 4) // IOAPIC
    | (1 << 5) // PIC
    | (1 << 6) // VGA
    | (1 << 8); // PIT

/// `XEN_DOMCTL_PFINFO_LTAB_MASK`: the type bits `xc_get_pfn_type_batch` returns.
pub const PFINFO_LTAB_MASK: u64 = 0xf << 28;
/// An invalid (unpopulated) frame.
pub const PFINFO_XTAB: u64 = 0xf << 28;
/// A broken frame.
pub const PFINFO_BROKEN: u64 = 0xd << 28;

/// `HVM_SAVE_CODE(CPU)`.
pub const HVM_SAVE_CODE_CPU: u16 = 2;

/// `VGCF_in_kernel`: a PV vCPU's context was saved in guest kernel mode.
pub const VGCF_IN_KERNEL: u64 = 1 << 2;

/// Offset of `struct shared_info`'s `arch` (`struct arch_shared_info`) on x86-64.
pub const SHARED_INFO_ARCH: usize = 3088;

/// `struct arch_shared_info` (x86-64): how a PV guest publishes its p2m to tools.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchSharedInfo {
    /// Frames the p2m covers (entries in the list).
    pub max_pfn: u64,
    /// Machine frame of the p2m's frame-list list (the three-level tree); 0 or !0 when
    /// the guest publishes only the virtually mapped list.
    pub pfn_to_mfn_frame_list_list: u64,
    pub nmi_reason: u64,
    /// The page-table base (`xen_pfn_to_cr3` of a machine frame) mapping `p2m_vaddr`.
    pub p2m_cr3: u64,
    /// Guest-virtual address of the linear p2m list (one `unsigned long` per frame).
    pub p2m_vaddr: u64,
    /// Odd while the guest changes the list's mapping; changes with every change.
    pub p2m_generation: u64,
}

/// `struct cpu_user_regs` (x86-64).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
#[allow(missing_docs)]
pub struct CpuUserRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub error_code: u32,
    pub entry_vector: u32,
    pub rip: u64,
    pub cs: u16,
    pub pad0: u16,
    pub saved_upcall_mask: u8,
    pub pad1: [u8; 3],
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u16,
    pub pad2: [u16; 3],
    pub es: u16,
    pub pad3: [u16; 3],
    pub ds: u16,
    pub pad4: [u16; 3],
    pub fs: u16,
    pub pad5: [u16; 3],
    pub gs: u16,
    pub pad6: [u16; 3],
}

/// `vcpu_guest_context_any_t` as x86-64 fills it (`struct vcpu_guest_context`): a PV
/// vCPU's state from `xc_vcpu_getcontext`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)]
pub struct VcpuGuestContext {
    pub fpu_ctxt: [u8; 512],
    /// `VGCF_*`.
    pub flags: u64,
    pub user_regs: CpuUserRegs,
    /// The virtual IDT (`struct trap_info[256]`).
    pub trap_ctxt: [[u64; 2]; 256],
    pub ldt_base: u64,
    pub ldt_ents: u64,
    pub gdt_frames: [u64; 16],
    pub gdt_ents: u64,
    pub kernel_ss: u64,
    pub kernel_sp: u64,
    /// CR0-CR7; CR3 holds the kernel page table's machine frame (`xen_pfn_to_cr3`),
    /// CR1 the user one's.
    pub ctrlreg: [u64; 8],
    pub debugreg: [u64; 8],
    pub event_callback_eip: u64,
    pub failsafe_callback_eip: u64,
    pub syscall_callback_eip: u64,
    pub vm_assist: u64,
    pub fs_base: u64,
    pub gs_base_kernel: u64,
    pub gs_base_user: u64,
}

impl Default for VcpuGuestContext {
    fn default() -> Self {
        // SAFETY: every field is an integer or an array of integers; all zeros is valid.
        unsafe { std::mem::zeroed() }
    }
}

/// `XTL_NUM_LEVELS`: a stdio logger at this minimum level prints nothing.
const XTL_NUM_LEVELS: c_int = 10;

/// `xc_domaininfo_t`, i.e. `struct xen_domctl_getdomaininfo` of domctl interface
/// version 0x15 (Xen 4.17).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DomainInfo {
    /// Domain id.
    pub domain: u16,
    pub pad1: u16,
    /// `XEN_DOMINF_*`.
    pub flags: u32,
    /// Pages the domain owns.
    pub tot_pages: u64,
    /// Its limit.
    pub max_pages: u64,
    pub outstanding_pages: u64,
    pub shr_pages: u64,
    pub paged_pages: u64,
    pub shared_info_frame: u64,
    pub cpu_time: u64,
    /// vCPUs online.
    pub nr_online_vcpus: u32,
    /// Highest vCPU id.
    pub max_vcpu_id: u32,
    pub ssidref: u32,
    pub handle: [u8; 16],
    pub cpupool: u32,
    pub gpaddr_bits: u8,
    pub pad2: [u8; 7],
    /// `arch_config.emulation_flags` (`XEN_X86_EMU_*`).
    pub emulation_flags: u32,
    pub misc_flags: u32,
}

/// `struct hvm_hw_cpu`: one vCPU's state in Xen's HVM save format (HVM and PVH guests).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)]
pub struct HvmHwCpu {
    pub fpu_regs: [u8; 512],
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub r8_15: [u64; 8],
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub dr: [u64; 6],
    /// cs, ds, es, fs, gs, ss, tr, ldtr.
    pub sel: [u32; 8],
    /// cs, ds, es, fs, gs, ss, tr, ldtr, idtr, gdtr.
    pub limit: [u32; 10],
    /// cs, ds, es, fs, gs, ss, tr, ldtr, idtr, gdtr.
    pub base: [u64; 10],
    /// cs, ds, es, fs, gs, ss, tr, ldtr.
    pub arbytes: [u32; 8],
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub shadow_gs: u64,
    pub msr_flags: u64,
    pub msr_lstar: u64,
    pub msr_star: u64,
    pub msr_cstar: u64,
    pub msr_syscall_mask: u64,
    pub msr_efer: u64,
    pub msr_tsc_aux: u64,
    pub tsc: u64,
    pub pending_event: u32,
    pub error_code: u32,
    pub flags: u32,
    pub pad0: u32,
}

/// Indexes into [`HvmHwCpu::sel`], `limit`, `base` and `arbytes`.
pub mod seg {
    /// CS.
    pub const CS: usize = 0;
    /// DS.
    pub const DS: usize = 1;
    /// ES.
    pub const ES: usize = 2;
    /// FS.
    pub const FS: usize = 3;
    /// GS.
    pub const GS: usize = 4;
    /// SS.
    pub const SS: usize = 5;
    /// IDTR (limit and base only).
    pub const IDTR: usize = 8;
    /// GDTR (limit and base only).
    pub const GDTR: usize = 9;
}

impl Default for HvmHwCpu {
    fn default() -> Self {
        // SAFETY: every field is an integer or an array of integers; all zeros is valid.
        unsafe { std::mem::zeroed() }
    }
}

/// The functions used, resolved once per process.
#[allow(missing_docs)]
pub struct Libs {
    pub xc_interface_open:
        unsafe extern "C" fn(logger: Logger, dombuild_logger: Logger, flags: c_uint) -> XcInterface,
    pub xc_interface_close: unsafe extern "C" fn(xch: XcInterface) -> c_int,
    pub xc_domain_getinfolist: unsafe extern "C" fn(
        xch: XcInterface,
        first_domain: u32,
        max_domains: c_uint,
        info: *mut DomainInfo,
    ) -> c_int,
    pub xc_domain_pause: unsafe extern "C" fn(xch: XcInterface, domid: u32) -> c_int,
    pub xc_domain_unpause: unsafe extern "C" fn(xch: XcInterface, domid: u32) -> c_int,
    pub xc_domain_maximum_gpfn:
        unsafe extern "C" fn(xch: XcInterface, domid: u32, gpfns: *mut XenPfn) -> c_int,
    pub xc_domain_hvm_getcontext_partial: unsafe extern "C" fn(
        xch: XcInterface,
        domid: u32,
        typecode: u16,
        instance: u16,
        ctxt_buf: *mut c_void,
        size: u32,
    ) -> c_int,
    pub xc_vcpu_getcontext: unsafe extern "C" fn(
        xch: XcInterface,
        domid: u32,
        vcpu: u32,
        ctxt: *mut VcpuGuestContext,
    ) -> c_int,
    pub xc_get_pfn_type_batch:
        unsafe extern "C" fn(xch: XcInterface, dom: u32, num: c_uint, arr: *mut XenPfn) -> c_int,
    pub xenforeignmemory_open: unsafe extern "C" fn(logger: Logger, flags: c_uint) -> ForeignMemory,
    pub xenforeignmemory_close: unsafe extern "C" fn(fmem: ForeignMemory) -> c_int,
    pub xenforeignmemory_map: unsafe extern "C" fn(
        fmem: ForeignMemory,
        dom: u32,
        prot: c_int,
        pages: usize,
        arr: *const XenPfn,
        err: *mut c_int,
    ) -> *mut c_void,
    pub xenforeignmemory_unmap:
        unsafe extern "C" fn(fmem: ForeignMemory, addr: *mut c_void, pages: usize) -> c_int,
    pub xs_open: unsafe extern "C" fn(flags: c_ulong) -> XsHandle,
    pub xs_close: unsafe extern "C" fn(h: XsHandle),
    pub xs_read: unsafe extern "C" fn(
        h: XsHandle,
        t: u32,
        path: *const c_char,
        len: *mut c_uint,
    ) -> *mut c_void,
    /// A logger that prints nothing (the libraries' default one prints every failed
    /// hypercall on stderr; errors are reported through return values here).
    pub quiet: Logger,
    /// The libraries, never closed: the functions above point into them.
    _libraries: [Library; 4],
}

// SAFETY: the function pointers are plain code addresses, and the logger is only ever
// passed to the libraries (which serialise their use of it).
unsafe impl Send for Libs {}
// SAFETY: as above.
unsafe impl Sync for Libs {}

/// Why the libraries could not be loaded: the library (or symbol) and the loader's text.
#[derive(Debug, Clone)]
pub struct LoadError {
    /// The soname or `soname: symbol`.
    pub what: String,
    /// The loader's message (dlerror's).
    pub why: String,
}

fn open(soname: &str) -> Result<Library, LoadError> {
    // SAFETY: loading runs the library's initialisers: Xen's tool libraries have none
    // that touch this process's state. The handle lives in `Libs`, which is never
    // dropped, so the functions stay valid for the life of the process.
    unsafe { Library::open(Some(soname), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| LoadError {
        what: soname.into(),
        why: e.to_string(),
    })
}

/// The function `name` of `lib` as the function-pointer type `F`.
///
/// # Safety
/// `F` must be an `unsafe extern "C" fn` type transcribing the C prototype of `name`.
unsafe fn sym<F: Copy>(lib: &Library, soname: &str, name: &str) -> Result<F, LoadError> {
    // SAFETY: the caller vouches for the type; libloading refuses a NULL symbol and a
    // type that is not pointer-sized.
    match unsafe { lib.get::<F>(name.as_bytes()) } {
        Ok(f) => Ok(*f),
        Err(e) => Err(LoadError {
            what: format!("{soname}: {name}"),
            why: e.to_string(),
        }),
    }
}

fn load() -> Result<Libs, LoadError> {
    let [toollog, fmem, ctrl, store] = LIBRARIES else {
        unreachable!("four libraries")
    };
    let libraries = [open(toollog)?, open(fmem)?, open(ctrl)?, open(store)?];
    let [l_toollog, l_fmem, l_ctrl, l_store] = &libraries;
    // SAFETY (of every sym call below): each type transcribes Xen 4.17's prototype
    let xtl_createlogger_stdiostream: unsafe extern "C" fn(
        *mut libc::FILE,
        c_int,
        c_uint,
    ) -> Logger = unsafe { sym(l_toollog, toollog, "xtl_createlogger_stdiostream")? };
    // SAFETY: fdopen on a dup of stderr (never closed): the logger only ever holds it
    let quiet = unsafe {
        let fd = libc::dup(2);
        let f = if fd >= 0 {
            libc::fdopen(fd, c"w".as_ptr())
        } else {
            std::ptr::null_mut()
        };
        if f.is_null() {
            std::ptr::null_mut()
        } else {
            xtl_createlogger_stdiostream(f, XTL_NUM_LEVELS, 0)
        }
    };
    // SAFETY: see above
    Ok(unsafe {
        Libs {
            xc_interface_open: sym(l_ctrl, ctrl, "xc_interface_open")?,
            xc_interface_close: sym(l_ctrl, ctrl, "xc_interface_close")?,
            xc_domain_getinfolist: sym(l_ctrl, ctrl, "xc_domain_getinfolist")?,
            xc_domain_pause: sym(l_ctrl, ctrl, "xc_domain_pause")?,
            xc_domain_unpause: sym(l_ctrl, ctrl, "xc_domain_unpause")?,
            xc_domain_maximum_gpfn: sym(l_ctrl, ctrl, "xc_domain_maximum_gpfn")?,
            xc_domain_hvm_getcontext_partial: sym(
                l_ctrl,
                ctrl,
                "xc_domain_hvm_getcontext_partial",
            )?,
            xc_vcpu_getcontext: sym(l_ctrl, ctrl, "xc_vcpu_getcontext")?,
            xc_get_pfn_type_batch: sym(l_ctrl, ctrl, "xc_get_pfn_type_batch")?,
            xenforeignmemory_open: sym(l_fmem, fmem, "xenforeignmemory_open")?,
            xenforeignmemory_close: sym(l_fmem, fmem, "xenforeignmemory_close")?,
            xenforeignmemory_map: sym(l_fmem, fmem, "xenforeignmemory_map")?,
            xenforeignmemory_unmap: sym(l_fmem, fmem, "xenforeignmemory_unmap")?,
            xs_open: sym(l_store, store, "xs_open")?,
            xs_close: sym(l_store, store, "xs_close")?,
            xs_read: sym(l_store, store, "xs_read")?,
            quiet,
            _libraries: libraries,
        }
    })
}

/// The libraries (loaded at the first call).
pub fn libs() -> Result<&'static Libs, LoadError> {
    static LIBS: OnceLock<Result<Libs, LoadError>> = OnceLock::new();
    LIBS.get_or_init(load).as_ref().map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::mem::{offset_of, size_of};

    /// Sizes and offsets as the C compiler lays out Xen's own headers (Debian's
    /// libxen-dev, which scripts/setup.sh installs), against this file's structures.
    #[test]
    fn layouts_equal_the_xen_headers() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("layout.c");
        // (C type, C member, the offset this file's structures give it)
        let user = offset_of!(VcpuGuestContext, user_regs);
        #[rustfmt::skip]
        let fields: &[(&str, &str, usize)] = &[
            ("xc_domaininfo_t", "domain", offset_of!(DomainInfo, domain)),
            ("xc_domaininfo_t", "flags", offset_of!(DomainInfo, flags)),
            ("xc_domaininfo_t", "tot_pages", offset_of!(DomainInfo, tot_pages)),
            ("xc_domaininfo_t", "max_pages", offset_of!(DomainInfo, max_pages)),
            ("xc_domaininfo_t", "nr_online_vcpus", offset_of!(DomainInfo, nr_online_vcpus)),
            ("xc_domaininfo_t", "max_vcpu_id", offset_of!(DomainInfo, max_vcpu_id)),
            ("xc_domaininfo_t", "arch_config.emulation_flags", offset_of!(DomainInfo, emulation_flags)),
            ("struct hvm_hw_cpu", "rax", offset_of!(HvmHwCpu, rax)),
            ("struct hvm_hw_cpu", "rbx", offset_of!(HvmHwCpu, rbx)),
            ("struct hvm_hw_cpu", "rsp", offset_of!(HvmHwCpu, rsp)),
            ("struct hvm_hw_cpu", "r8", offset_of!(HvmHwCpu, r8_15)),
            ("struct hvm_hw_cpu", "r15", offset_of!(HvmHwCpu, r8_15) + 56),
            ("struct hvm_hw_cpu", "rip", offset_of!(HvmHwCpu, rip)),
            ("struct hvm_hw_cpu", "rflags", offset_of!(HvmHwCpu, rflags)),
            ("struct hvm_hw_cpu", "cr0", offset_of!(HvmHwCpu, cr0)),
            ("struct hvm_hw_cpu", "cr3", offset_of!(HvmHwCpu, cr3)),
            ("struct hvm_hw_cpu", "cr4", offset_of!(HvmHwCpu, cr4)),
            ("struct hvm_hw_cpu", "cs_sel", offset_of!(HvmHwCpu, sel)),
            ("struct hvm_hw_cpu", "ss_sel", offset_of!(HvmHwCpu, sel) + 4 * seg::SS),
            ("struct hvm_hw_cpu", "cs_limit", offset_of!(HvmHwCpu, limit)),
            ("struct hvm_hw_cpu", "gdtr_limit", offset_of!(HvmHwCpu, limit) + 4 * seg::GDTR),
            ("struct hvm_hw_cpu", "cs_base", offset_of!(HvmHwCpu, base)),
            ("struct hvm_hw_cpu", "gs_base", offset_of!(HvmHwCpu, base) + 8 * seg::GS),
            ("struct hvm_hw_cpu", "idtr_base", offset_of!(HvmHwCpu, base) + 8 * seg::IDTR),
            ("struct hvm_hw_cpu", "gdtr_base", offset_of!(HvmHwCpu, base) + 8 * seg::GDTR),
            ("struct hvm_hw_cpu", "cs_arbytes", offset_of!(HvmHwCpu, arbytes)),
            ("struct hvm_hw_cpu", "shadow_gs", offset_of!(HvmHwCpu, shadow_gs)),
            ("struct hvm_hw_cpu", "msr_efer", offset_of!(HvmHwCpu, msr_efer)),
            ("struct hvm_hw_cpu", "flags", offset_of!(HvmHwCpu, flags)),
            ("xc_domaininfo_t", "shared_info_frame", offset_of!(DomainInfo, shared_info_frame)),
            ("shared_info_t", "arch.max_pfn", SHARED_INFO_ARCH + offset_of!(ArchSharedInfo, max_pfn)),
            ("shared_info_t", "arch.pfn_to_mfn_frame_list_list", SHARED_INFO_ARCH + offset_of!(ArchSharedInfo, pfn_to_mfn_frame_list_list)),
            ("shared_info_t", "arch.p2m_cr3", SHARED_INFO_ARCH + offset_of!(ArchSharedInfo, p2m_cr3)),
            ("shared_info_t", "arch.p2m_vaddr", SHARED_INFO_ARCH + offset_of!(ArchSharedInfo, p2m_vaddr)),
            ("shared_info_t", "arch.p2m_generation", SHARED_INFO_ARCH + offset_of!(ArchSharedInfo, p2m_generation)),
            ("vcpu_guest_context_t", "flags", offset_of!(VcpuGuestContext, flags)),
            ("vcpu_guest_context_t", "user_regs.rax", user + offset_of!(CpuUserRegs, rax)),
            ("vcpu_guest_context_t", "user_regs.rip", user + offset_of!(CpuUserRegs, rip)),
            ("vcpu_guest_context_t", "user_regs.cs", user + offset_of!(CpuUserRegs, cs)),
            ("vcpu_guest_context_t", "user_regs.rsp", user + offset_of!(CpuUserRegs, rsp)),
            ("vcpu_guest_context_t", "user_regs.gs", user + offset_of!(CpuUserRegs, gs)),
            ("vcpu_guest_context_t", "trap_ctxt", offset_of!(VcpuGuestContext, trap_ctxt)),
            ("vcpu_guest_context_t", "ctrlreg", offset_of!(VcpuGuestContext, ctrlreg)),
            ("vcpu_guest_context_t", "syscall_callback_eip", offset_of!(VcpuGuestContext, syscall_callback_eip)),
            ("vcpu_guest_context_t", "fs_base", offset_of!(VcpuGuestContext, fs_base)),
            ("vcpu_guest_context_t", "gs_base_kernel", offset_of!(VcpuGuestContext, gs_base_kernel)),
            ("vcpu_guest_context_t", "gs_base_user", offset_of!(VcpuGuestContext, gs_base_user)),
        ];
        let mut c = String::from(
            "#include <stdio.h>\n#include <stddef.h>\n#include <xenctrl.h>\n#include <xen/hvm/save.h>\nint main(void) {\n",
        );
        c.push_str("printf(\"size xc_domaininfo_t %zu\\n\", sizeof(xc_domaininfo_t));\n");
        c.push_str("printf(\"size struct hvm_hw_cpu %zu\\n\", sizeof(struct hvm_hw_cpu));\n");
        c.push_str("printf(\"const HVM_SAVE_CODE(CPU) %zu\\n\", (size_t)HVM_SAVE_CODE(CPU));\n");
        c.push_str(
            "printf(\"size vcpu_guest_context_any_t %zu\\n\", sizeof(vcpu_guest_context_any_t));\n",
        );
        c.push_str(
            "printf(\"size struct arch_shared_info %zu\\n\", sizeof(struct arch_shared_info));\n",
        );
        c.push_str("printf(\"const VGCF_in_kernel %zu\\n\", (size_t)VGCF_in_kernel);\n");
        c.push_str("printf(\"const XEN_DOMINF_paused %zu\\n\", (size_t)XEN_DOMINF_paused);\n");
        c.push_str(
            "printf(\"const XEN_DOMINF_hvm_guest %zu\\n\", (size_t)XEN_DOMINF_hvm_guest);\n",
        );
        c.push_str(
            "printf(\"const XEN_DOMCTL_PFINFO_XTAB %zu\\n\", (size_t)XEN_DOMCTL_PFINFO_XTAB);\n",
        );
        c.push_str("printf(\"const EMU_HVM_DEVICES %zu\\n\", (size_t)(XEN_X86_EMU_HPET|XEN_X86_EMU_PM|XEN_X86_EMU_RTC|XEN_X86_EMU_IOAPIC|XEN_X86_EMU_PIC|XEN_X86_EMU_VGA|XEN_X86_EMU_PIT));\n");
        for (ty, field, _) in fields {
            c.push_str(&format!(
                "printf(\"offset {ty} {field} %zu\\n\", offsetof({ty}, {field}));\n"
            ));
        }
        c.push_str("return 0;\n}\n");
        std::fs::write(&src, c).unwrap();
        let exe = dir.path().join("layout");
        let built = std::process::Command::new("gcc")
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .output()
            .expect("gcc (scripts/setup.sh installs it)");
        assert!(
            built.status.success(),
            "compiling against Xen's headers failed (scripts/setup.sh installs libxen-dev): {}",
            String::from_utf8_lossy(&built.stderr)
        );
        let out = std::process::Command::new(&exe).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let c_value = |key: &str| -> usize {
            text.lines()
                .find_map(|l| l.strip_prefix(key).map(|v| v.trim().parse().unwrap()))
                .unwrap_or_else(|| panic!("{key} not printed: {text}"))
        };
        assert_eq!(c_value("size xc_domaininfo_t "), size_of::<DomainInfo>());
        assert_eq!(c_value("size struct hvm_hw_cpu "), size_of::<HvmHwCpu>());
        assert_eq!(
            c_value("size vcpu_guest_context_any_t "),
            size_of::<VcpuGuestContext>()
        );
        assert_eq!(
            c_value("size struct arch_shared_info "),
            size_of::<ArchSharedInfo>()
        );
        assert_eq!(c_value("const VGCF_in_kernel ") as u64, VGCF_IN_KERNEL);
        assert_eq!(
            c_value("const HVM_SAVE_CODE(CPU) "),
            usize::from(HVM_SAVE_CODE_CPU)
        );
        assert_eq!(c_value("const XEN_DOMINF_paused "), DOMINF_PAUSED as usize);
        assert_eq!(
            c_value("const XEN_DOMINF_hvm_guest "),
            DOMINF_HVM_GUEST as usize
        );
        assert_eq!(
            c_value("const XEN_DOMCTL_PFINFO_XTAB "),
            PFINFO_XTAB as usize
        );
        assert_eq!(c_value("const EMU_HVM_DEVICES "), EMU_HVM_DEVICES as usize);
        for (ty, field, rust) in fields {
            assert_eq!(
                c_value(&format!("offset {ty} {field} ")),
                *rust,
                "{ty}.{field}"
            );
        }
    }
}
