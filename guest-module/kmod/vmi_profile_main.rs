// SPDX-License-Identifier: GPL-2.0

//! vmi_profile: the running kernel's profile, computed inside the kernel.
//!
//! Replaces libVMI's findoffsets.ko. On load, the module
//! - computes the offset of every field the project's default profile needs with
//!   `core::mem::offset_of!` on the kernel's own Rust bindings, and the sizes of the
//!   types; the C half (vmi_layout.c) gives the compiler-checked type names, the fields
//!   the bindings do not reach, and `offsetof()` of every field. The C half is compiled
//!   by the compiler that built the kernel, so where the bindings disagree (bindgen
//!   imitates the layout through libclang; on GCC-built kernels it loses the alignment
//!   of an empty member, moving every later `task_struct` field) the compiler's value is
//!   reported and the difference logged;
//! - finds the running kernel's `_text` (the KASLR shift) by asking kallsyms
//!   (`sprint_symbol`) which 2 MiB-aligned candidate is `_text`, and the banner by
//!   searching the kernel image for `Linux version <release> (` with faulting-safe
//!   reads; both are checked against kallsyms' names before use;
//! - turns the addresses of the exported symbols it sees into link-time addresses;
//! - writes the profile (docs/profile.md, format 1.0, `provenance.source = "module"`)
//!   into `/proc/vmi_profile` (read-only, root only; `cat` reads it whole) and prints the
//!   libVMI offsets the way findoffsets.ko did.
//!
//! Symbols no module can see (`modules`, `sys_call_table`, ...) are listed under
//! `missing.symbols`; `profile-gen --complete <profile> <System.map>` fills them in.
//! Nothing here writes kernel state: kallsyms lookups and reads only.

use core::fmt::Write;
use core::mem::{offset_of, size_of};

use kernel::bindings;
use kernel::ffi::{c_char, c_int, c_void};
use kernel::prelude::*;

module! {
    type: VmiProfile,
    name: "vmi_profile",
    author: "vmi project",
    description: "Reports the running kernel's VMI profile (struct offsets, symbols, banner) in /proc/vmi_profile",
    license: "GPL",
}

/// The profile format this module writes.
const FORMAT_VERSION: &str = "1.0";
/// provenance.tool: the module and the workspace version it belongs to.
const TOOL: &str = "vmi_profile 0.1.0 (Rust-for-Linux module)";
/// The proc file.
const PROC_NAME: &[u8] = b"vmi_profile\0";
/// Longest banner accepted.
const BANNER_MAX: usize = 1024;
/// How far past `_text` the banner is looked for (it lies in .rodata, ~20 MiB in on
/// distribution kernels).
const BANNER_SCAN: usize = 256 << 20;
/// sprint_symbol's buffer (KSYM_SYMBOL_LEN is ~700 bytes).
const SYM_BUF: usize = 1024;
const PAGE: usize = 4096;

#[repr(C)]
struct FieldInfo {
    ty: *const c_char,
    field: *const c_char,
    ctype: *const c_char,
    offset: usize,
    dim: usize,
}

/// FieldInfo.dim of a field that is not an array.
const NO_DIM: usize = usize::MAX;

#[repr(C)]
struct TypeInfo {
    name: *const c_char,
    kind: *const c_char,
    size: usize,
}

#[repr(C)]
struct SymbolInfo {
    name: *const c_char,
    address: usize,
    ty: c_char,
    percpu: u8,
}

extern "C" {
    fn vmi_layout_fields(n: *mut usize) -> *const FieldInfo;
    fn vmi_layout_types(n: *mut usize) -> *const TypeInfo;
    fn vmi_layout_symbols(n: *mut usize) -> *const SymbolInfo;
    fn vmi_layout_start_kernel() -> usize;
    fn vmi_layout_physical_align() -> usize;
    fn vmi_layout_image_size() -> usize;
    fn vmi_layout_phys_base() -> usize;
    fn vmi_layout_release() -> *const c_char;
    fn vmi_layout_version() -> *const c_char;

    fn proc_create_single_data(
        name: *const c_char,
        mode: bindings::umode_t,
        parent: *mut bindings::proc_dir_entry,
        show: Option<unsafe extern "C" fn(*mut bindings::seq_file, *mut c_void) -> c_int>,
        data: *mut c_void,
    ) -> *mut bindings::proc_dir_entry;
    fn remove_proc_entry(name: *const c_char, parent: *mut bindings::proc_dir_entry);
}

/// A field offset computed from the Rust bindings.
struct RsField {
    ty: &'static str,
    field: &'static str,
    offset: usize,
}

macro_rules! rf {
    ($ty:ident, $field:ident) => {
        RsField {
            ty: stringify!($ty),
            field: stringify!($field),
            offset: offset_of!(bindings::$ty, $field),
        }
    };
    ($ty:ident, $field:ident, $($path:tt)+) => {
        RsField {
            ty: stringify!($ty),
            field: stringify!($field),
            offset: offset_of!(bindings::$ty, $($path)+),
        }
    };
}

macro_rules! rs {
    ($ty:ident) => {
        (stringify!($ty), size_of::<bindings::$ty>())
    };
}

/// Offsets from the bindings: the fields every supported kernel (6.1 on) has under
/// one name. Renamed fields (`module.mem`/`core_layout`, `task_struct.thread_group`)
/// and types the bindings know only by name (`struct mount` is private to fs/,
/// `struct pid_namespace` is opaque to bindgen) come from the C half alone.
fn rust_fields() -> [RsField; 66] {
    [
        rf!(task_struct, tasks),
        rf!(task_struct, pid),
        rf!(task_struct, tgid),
        rf!(task_struct, comm),
        rf!(task_struct, __state),
        rf!(task_struct, flags),
        rf!(task_struct, mm),
        rf!(task_struct, active_mm),
        rf!(task_struct, parent),
        rf!(task_struct, real_parent),
        rf!(task_struct, children),
        rf!(task_struct, sibling),
        rf!(task_struct, group_leader),
        rf!(task_struct, thread_node),
        rf!(task_struct, signal),
        rf!(task_struct, cred),
        rf!(task_struct, real_cred),
        rf!(task_struct, start_time),
        rf!(task_struct, start_boottime),
        rf!(task_struct, thread_pid),
        rf!(task_struct, pid_links),
        rf!(task_struct, stack),
        rf!(task_struct, on_cpu),
        rf!(task_struct, exit_state),
        rf!(signal_struct, nr_threads),
        rf!(signal_struct, thread_head),
        rf!(mm_struct, pgd, __bindgen_anon_1.pgd),
        rf!(mm_struct, arg_start, __bindgen_anon_1.arg_start),
        rf!(mm_struct, arg_end, __bindgen_anon_1.arg_end),
        rf!(mm_struct, env_start, __bindgen_anon_1.env_start),
        rf!(mm_struct, env_end, __bindgen_anon_1.env_end),
        rf!(mm_struct, start_code, __bindgen_anon_1.start_code),
        rf!(mm_struct, end_code, __bindgen_anon_1.end_code),
        rf!(mm_struct, exe_file, __bindgen_anon_1.exe_file),
        rf!(mm_struct, mm_mt, __bindgen_anon_1.mm_mt),
        rf!(cred, uid),
        rf!(cred, gid),
        rf!(cred, suid),
        rf!(cred, sgid),
        rf!(cred, euid),
        rf!(cred, egid),
        rf!(cred, fsuid),
        rf!(cred, fsgid),
        rf!(cred, usage),
        rf!(cred, user),
        rf!(user_struct, uid),
        rf!(list_head, next),
        rf!(list_head, prev),
        rf!(hlist_node, next),
        rf!(hlist_node, pprev),
        rf!(module, list),
        rf!(module, name),
        rf!(module, state),
        rf!(module, mkobj),
        rf!(module, num_syms),
        rf!(module, syms),
        rf!(module_kobject, kobj),
        rf!(module_kobject, mod_),
        rf!(kobject, name),
        rf!(kobject, entry),
        rf!(kobject, parent),
        rf!(kobject, kset),
        rf!(kset, list),
        rf!(kset, kobj),
        rf!(pid, level),
        rf!(pid, tasks),
    ]
}

/// More offsets from the bindings (a second array keeps each under the size the
/// compiler infers easily).
fn rust_fields_2() -> [RsField; 11] {
    [
        rf!(pid, numbers),
        rf!(upid, nr),
        rf!(upid, ns),
        rf!(idr, idr_rt),
        rf!(idr, idr_base),
        rf!(xarray, xa_head),
        rf!(xa_node, shift),
        rf!(xa_node, slots),
        rf!(xa_node, count),
        rf!(file, f_path),
        rf!(vfsmount, mnt_root),
    ]
}

fn rust_fields_3() -> [RsField; 6] {
    [
        rf!(hlist_head, first),
        rf!(path, dentry),
        rf!(path, mnt),
        rf!(dentry, d_name),
        rf!(dentry, d_parent),
        rf!(qstr, name),
    ]
}

fn rust_sizes() -> [(&'static str, usize); 22] {
    [
        rs!(hlist_head),
        rs!(task_struct),
        rs!(signal_struct),
        rs!(mm_struct),
        rs!(cred),
        rs!(user_struct),
        rs!(list_head),
        rs!(hlist_node),
        rs!(module),
        rs!(module_kobject),
        rs!(kobject),
        rs!(kset),
        rs!(pid),
        rs!(upid),
        rs!(idr),
        rs!(xarray),
        rs!(xa_node),
        rs!(file),
        rs!(vfsmount),
        rs!(path),
        rs!(dentry),
        rs!(qstr),
    ]
}

/// The required symbols of the default profile (vmi_core::profile::needs::symbols(), the
/// symbols vmi-core's readers declare; first aliases; guest-module's `kmod_tracks_needs` test keeps the lists in step): those not
/// found are listed as missing.
const NEEDED_SYMBOLS: &[&str] = &[
    "prog_idr",
    "link_idr",
    "linux_banner",
    "_text",
    "_stext",
    "_etext",
    "__start_rodata",
    "__end_rodata",
    "init_task",
    "init_cred",
    "init_mm",
    "init_top_pgt",
    "init_pid_ns",
    "modules",
    "module_kset",
    "sys_call_table",
    "idt_table",
    "__per_cpu_offset",
    "current_task",
    "nr_cpu_ids",
    "page_offset_base",
    "vmemmap_base",
    "vmalloc_base",
    "ftrace_ops_list",
    "ftrace_list_end",
    "kprobe_table",
    "aggr_pre_handler",
    "pre_handler_kretprobe",
    "__start___tracepoints_ptrs",
    "__stop___tracepoints_ptrs",
    "net_namespace_list",
    "init_net",
    "tty_ldiscs",
    "tty_drivers",
    "tcp4_seq_ops",
    "udp_seq_ops",
    "socket_file_ops",
    "runqueues",
    "entry_SYSCALL_64",
];

/// The types of the default profile (vmi_core::profile::needs::types(), those not
/// optional; kept in step by the same test).
const NEEDED_TYPES: &[&str] = &[
    "fs_struct",
    "page",
    "pt_regs",
    "sched_entity",
    "sched_rt_entity",
    "rq",
    "cfs_rq",
    "rt_rq",
    "rt_prio_array",
    "cpuinfo_x86",
    "nsproxy",
    "mnt_namespace",
    "file_system_type",
    "address_space",
    "file_operations",
    "inode_operations",
    "dentry_operations",
    "super_operations",
    "address_space_operations",
    "bpf_prog",
    "bpf_prog_aux",
    "bpf_link",
    "bpf_raw_tp_link",
    "bpf_raw_event_map",
    "perf_event",
    "pmu",
    "perf_event_context",
    "perf_cpu_context",
    "trace_event_call",
    "task_struct",
    "signal_struct",
    "mm_struct",
    "cred",
    "user_struct",
    "list_head",
    "hlist_node",
    "hlist_bl_node",
    "module",
    "module_kobject",
    "kobject",
    "kset",
    "pid",
    "upid",
    "pid_namespace",
    "idr",
    "xarray",
    "xa_node",
    "trace_array",
    "file",
    "files_struct",
    "fdtable",
    "inode",
    "socket",
    "sock",
    "sock_common",
    "sk_filter",
    "sock_fprog_kern",
    "unix_sock",
    "unix_address",
    "mount",
    "vfsmount",
    "path",
    "dentry",
    "qstr",
    "hlist_head",
    "vm_area_struct",
    "vm_special_mapping",
    "super_block",
    "maple_tree",
    "ftrace_ops",
    "ftrace_ops_hash",
    "ftrace_hash",
    "ftrace_func_entry",
    "kprobe",
    "kretprobe",
    "tracepoint",
    "tracepoint_func",
    "net",
    "netns_nf",
    "nf_hook_entries",
    "nf_hook_entry",
    "nf_hook_ops",
    "notifier_block",
    "atomic_notifier_head",
    "blocking_notifier_head",
    "raw_notifier_head",
    "tty_ldisc_ops",
    "tty_driver",
    "tty_operations",
    "tty_struct",
    "tty_ldisc",
    "seq_operations",
    "proc_ops",
    "proc_dir_entry",
    "rb_root",
    "rb_node",
];

/// A C string from the C half (static, NUL-terminated) as `&str`.
///
/// # Safety
/// `p` points at a NUL-terminated string that lives as long as the module.
unsafe fn cstr(p: *const c_char) -> &'static str {
    if p.is_null() {
        return "";
    }
    // SAFETY: the caller guarantees a NUL-terminated static string.
    let s = unsafe { CStr::from_char_ptr(p) };
    s.to_str().unwrap_or("")
}

/// A growable output buffer usable with `write!`.
struct Out {
    buf: KVec<u8>,
}

impl Write for Out {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.buf
            .extend_from_slice(s.as_bytes(), GFP_KERNEL)
            .map_err(|_| core::fmt::Error)
    }
}

/// A JSON string literal of `s`.
fn json_str(out: &mut Out, s: &[u8]) -> core::fmt::Result {
    out.write_char('"')?;
    for &b in s {
        match b {
            b'"' => out.write_str("\\\"")?,
            b'\\' => out.write_str("\\\\")?,
            b'\n' => out.write_str("\\n")?,
            b'\t' => out.write_str("\\t")?,
            0x20..=0x7e => out.write_char(b as char)?,
            // the banner is ASCII on every kernel seen; anything else is escaped
            // byte-wise so the output stays valid JSON
            _ => write!(out, "\\u{:04x}", b)?,
        }
    }
    out.write_char('"')
}

/// What kallsyms calls the address: `name+0xoff/0xsize` (or a bare hex number).
fn symbol_at(buf: &mut [u8; SYM_BUF], addr: usize) -> &[u8] {
    buf.fill(0);
    // SAFETY: the buffer is larger than KSYM_SYMBOL_LEN; sprint_symbol only looks the
    // address up, it never dereferences it.
    let n = unsafe { bindings::sprint_symbol(buf.as_mut_ptr().cast(), addr as _) };
    let n = (n.max(0) as usize).min(SYM_BUF);
    &buf[..n]
}

fn is_symbol_start(found: &[u8], name: &[u8]) -> bool {
    found.len() > name.len() + 4
        && found.starts_with(name)
        && found[name.len()..].starts_with(b"+0x0/")
}

/// The running `_text`: the `align`-aligned candidate at or above the link address
/// that kallsyms names `_text` (or `startup_64`, at the same address).
fn find_text(
    sym: &mut [u8; SYM_BUF],
    link: usize,
    align: usize,
    span: usize,
    below: usize,
) -> Option<usize> {
    // no panicking arithmetic here: objtool does not know Rust's panic paths
    let steps = span.checked_div(align)?;
    let mut c = link;
    for _ in 0..=steps {
        if c > below {
            break;
        }
        let found = symbol_at(sym, c);
        if is_symbol_start(found, b"_text") || is_symbol_start(found, b"startup_64") {
            return Some(c);
        }
        c = c.checked_add(align)?;
    }
    None
}

/// Copy kernel memory without faulting; false when any of it is unmapped.
fn read_kernel(dst: &mut [u8], src: usize) -> bool {
    // SAFETY: copy_from_kernel_nofault validates the source and handles faults; the
    // destination is a valid buffer of that length.
    let r = unsafe {
        bindings::copy_from_kernel_nofault(dst.as_mut_ptr().cast(), src as *const c_void, dst.len())
    };
    r == 0
}

/// The address of the banner: the first `Linux version <release> (` in the image
/// whose string ends with ` <version>\n`.
fn find_banner(start: usize, release: &str, version: &str) -> Result<Option<(usize, KVec<u8>)>> {
    let mut needle = KVec::new();
    needle.extend_from_slice(b"Linux version ", GFP_KERNEL)?;
    needle.extend_from_slice(release.as_bytes(), GFP_KERNEL)?;
    needle.extend_from_slice(b" (", GFP_KERNEL)?;
    let n = needle.len();
    // a page plus the needle's length: matches across page boundaries are found
    let mut window = KVec::from_elem(0u8, PAGE + n, GFP_KERNEL)?;
    let mut carry = 0usize;
    let mut page = 0usize;
    while page < BANNER_SCAN {
        let addr = start + page;
        if !read_kernel(&mut window[carry..carry + PAGE], addr) {
            carry = 0;
            page += PAGE;
            continue;
        }
        let have = carry + PAGE;
        let base = addr - carry;
        let mut i = 0;
        while i + n <= have {
            if window[i] == b'L' && window[i..i + n] == needle[..] {
                let at = base + i;
                if let Some(text) = read_banner(at, version)? {
                    return Ok(Some((at, text)));
                }
            }
            i += 1;
        }
        let keep = (n - 1).min(have);
        window.copy_within(have - keep..have, 0);
        carry = keep;
        page += PAGE;
    }
    Ok(None)
}

/// The NUL-terminated string at `at`, when it ends with ` <version>\n`.
fn read_banner(at: usize, version: &str) -> Result<Option<KVec<u8>>> {
    let mut s = KVec::with_capacity(BANNER_MAX, GFP_KERNEL)?;
    let mut byte = [0u8; 1];
    for k in 0..BANNER_MAX {
        if !read_kernel(&mut byte, at + k) {
            return Ok(None);
        }
        if byte[0] == 0 {
            let tail_len = version.len() + 2;
            let ok = s.len() > tail_len
                && s[s.len() - 1] == b'\n'
                && s[s.len() - tail_len] == b' '
                && &s[s.len() - tail_len + 1..s.len() - 1] == version.as_bytes();
            return Ok(if ok { Some(s) } else { None });
        }
        s.push(byte[0], GFP_KERNEL)?;
    }
    Ok(None)
}

/// A link-time symbol: name, address, type letter.
struct Sym {
    name: &'static str,
    address: usize,
    ty: u8,
}

/// The computed profile, before it is written.
struct Computed {
    release: &'static str,
    banner: KVec<u8>,
    shift: usize,
    phys_base: usize,
    symbols: KVec<Sym>,
    fields: KVec<(&'static str, &'static str, &'static str, usize, usize)>,
    types: KVec<(&'static str, &'static str, usize)>,
    from_rust: usize,
    bindings_differ: usize,
}

fn compute() -> Result<Computed> {
    // SAFETY: the C half returns static arrays and their lengths.
    let (c_fields, c_types, c_symbols) = unsafe {
        let mut nf = 0usize;
        let mut nt = 0usize;
        let mut ns = 0usize;
        let f = vmi_layout_fields(&mut nf);
        let t = vmi_layout_types(&mut nt);
        let s = vmi_layout_symbols(&mut ns);
        (
            core::slice::from_raw_parts(f, nf),
            core::slice::from_raw_parts(t, nt),
            core::slice::from_raw_parts(s, ns),
        )
    };
    let r1 = rust_fields();
    let r2 = rust_fields_2();
    let r3 = rust_fields_3();
    let sizes = rust_sizes();

    let mut fields = KVec::with_capacity(c_fields.len(), GFP_KERNEL)?;
    let mut from_rust = 0;
    let mut bindings_differ = 0;
    for cf in c_fields {
        // SAFETY: static strings from the C half.
        let (ty, field, ctype) = unsafe { (cstr(cf.ty), cstr(cf.field), cstr(cf.ctype)) };
        // bindgen renames fields that are Rust keywords (`mod` -> `mod_`)
        let rs = Iterator::chain(Iterator::chain(r1.iter(), r2.iter()), r3.iter())
            .find(|r| r.ty == ty && (r.field == field || r.field.strip_suffix('_') == Some(field)));
        let offset = match rs {
            Some(r) if r.offset != cf.offset => {
                // the C half is compiled by the compiler that built the kernel (kbuild
                // insists); bindgen only imitates that layout through libclang, and on
                // GCC-built kernels it can be wrong (it drops the alignment of an empty
                // member: task_struct.stats without CONFIG_SCHEDSTATS): the kernel's
                // compiler is right
                pr_warn!(
                    "{}.{}: the Rust bindings put it at {} but the kernel's compiler at {}: reporting {}\n",
                    ty, field, r.offset, cf.offset, cf.offset
                );
                bindings_differ += 1;
                cf.offset
            }
            Some(r) => {
                from_rust += 1;
                r.offset
            }
            None => cf.offset,
        };
        fields.push((ty, field, ctype, offset, cf.dim), GFP_KERNEL)?;
    }
    let mut types = KVec::with_capacity(c_types.len(), GFP_KERNEL)?;
    for ct in c_types {
        // SAFETY: static strings from the C half.
        let (name, kind) = unsafe { (cstr(ct.name), cstr(ct.kind)) };
        if let Some((_, size)) = sizes.iter().find(|(n, _)| *n == name) {
            if *size != ct.size {
                pr_warn!(
                    "struct {}: the Rust bindings say {} bytes but the kernel's compiler {}: reporting {}\n",
                    name, size, ct.size, ct.size
                );
                bindings_differ += 1;
            }
        }
        types.push((name, kind, ct.size), GFP_KERNEL)?;
    }

    // the KASLR shift: where kallsyms says _text is now
    // SAFETY: constants and exported data read through the C half.
    let (link_text, align, image, phys_base) = unsafe {
        (
            vmi_layout_start_kernel(),
            vmi_layout_physical_align(),
            vmi_layout_image_size(),
            vmi_layout_phys_base(),
        )
    };
    let init_task = c_symbols
        .iter()
        // SAFETY: static strings from the C half.
        .find(|s| unsafe { cstr(s.name) } == "init_task")
        .map(|s| s.address)
        .ok_or(EINVAL)?;
    let mut sym = KBox::new([0u8; SYM_BUF], GFP_KERNEL)?;
    let Some(text) = find_text(&mut sym, link_text, align.max(PAGE), image, init_task) else {
        pr_err!(
            "kallsyms names no {:#x}-aligned address between {:#x} and init_task ({:#x}) _text: cannot tell the KASLR shift\n",
            align, link_text, init_task
        );
        return Err(ENOENT);
    };
    let shift = text - link_text;

    let mut symbols = KVec::with_capacity(c_symbols.len() + 2, GFP_KERNEL)?;
    symbols.push(
        Sym {
            name: "_text",
            address: link_text,
            ty: b'T',
        },
        GFP_KERNEL,
    )?;
    for s in c_symbols {
        // SAFETY: static strings from the C half.
        let name = unsafe { cstr(s.name) };
        let address = if s.percpu != 0 {
            s.address
        } else {
            // an exported symbol must be where kallsyms says it is
            let found = symbol_at(&mut sym, s.address);
            if !is_symbol_start(found, name.as_bytes()) {
                pr_warn!(
                    "{} at {:#x}: kallsyms says {}; reported anyway (an alias)\n",
                    name,
                    s.address,
                    core::str::from_utf8(found).unwrap_or("?")
                );
            }
            s.address.wrapping_sub(shift)
        };
        symbols.push(
            Sym {
                name,
                address,
                ty: s.ty as u8,
            },
            GFP_KERNEL,
        )?;
    }

    // SAFETY: init_uts_ns strings, NUL-terminated, live for the kernel's lifetime.
    let (release, version) = unsafe { (cstr(vmi_layout_release()), cstr(vmi_layout_version())) };
    let Some((banner_at, banner)) = find_banner(text, release, version)? else {
        pr_err!(
            "no \"Linux version {} (\" banner ending in \"{}\" within {} MiB of _text\n",
            release,
            version,
            BANNER_SCAN >> 20
        );
        return Err(ENOENT);
    };
    let found = symbol_at(&mut sym, banner_at);
    if !is_symbol_start(found, b"linux_banner") {
        pr_err!(
            "the banner at {:#x} is not linux_banner (kallsyms says {})\n",
            banner_at,
            core::str::from_utf8(found).unwrap_or("?")
        );
        return Err(ENOENT);
    }
    symbols.push(
        Sym {
            name: "linux_banner",
            address: banner_at - shift,
            ty: b'D',
        },
        GFP_KERNEL,
    )?;
    Ok(Computed {
        release,
        banner,
        shift,
        phys_base,
        symbols,
        fields,
        types,
        from_rust,
        bindings_differ,
    })
}

fn write_profile(c: &Computed) -> Result<KVec<u8>> {
    let mut out = Out { buf: KVec::new() };
    let r = (|| -> core::fmt::Result {
        write!(
            out,
            "{{\n  \"format_version\": \"{FORMAT_VERSION}\",\n  \"kernel\": {{\n    \"release\": "
        )?;
        json_str(&mut out, c.release.as_bytes())?;
        out.write_str(",\n    \"banner\": ")?;
        json_str(&mut out, &c.banner)?;
        out.write_str(",\n    \"arch\": \"x86_64\"\n  },\n  \"provenance\": {\n    \"source\": \"module\",\n    \"inputs\": [],\n")?;
        write!(out, "    \"tool\": \"{TOOL}\"\n  }},\n  \"symbols\": {{")?;
        for (i, s) in c.symbols.iter().enumerate() {
            write!(
                out,
                "{}\n    \"{}\": {{ \"address\": \"{:#x}\", \"type\": \"{}\" }}",
                if i == 0 { "" } else { "," },
                s.name,
                s.address,
                s.ty as char
            )?;
        }
        out.write_str("\n  },\n  \"types\": {")?;
        for (i, (name, kind, size)) in c.types.iter().enumerate() {
            write!(
                out,
                "{}\n    \"{}\": {{\n      \"kind\": \"{}\",\n      \"size\": {},\n      \"fields\": {{",
                if i == 0 { "" } else { "," },
                name,
                kind,
                size
            )?;
            let mut first = true;
            for (ty, field, ctype, offset, dim) in c.fields.iter() {
                if ty != name {
                    continue;
                }
                write!(
                    out,
                    "{}\n        \"{}\": {{ \"offset\": {}, \"type\": \"{}",
                    if first { "" } else { "," },
                    field,
                    offset,
                    ctype
                )?;
                if *dim != NO_DIM {
                    write!(out, "[{dim}]")?;
                }
                out.write_str("\" }")?;
                first = false;
            }
            out.write_str("\n      }\n    }")?;
        }
        out.write_str("\n  }")?;
        // what the default profile needs and this module cannot see
        let missing_types = NEEDED_TYPES
            .iter()
            .filter(|t| !c.types.iter().any(|(n, _, _)| n == *t));
        let missing_syms = NEEDED_SYMBOLS.iter().filter(|s| {
            !c.symbols.iter().any(|x| x.name == **s)
                && !(**s == "current_task" && c.symbols.iter().any(|x| x.name == "pcpu_hot"))
        });
        out.write_str(",\n  \"missing\": {\n    \"types\": [")?;
        for (i, t) in missing_types.enumerate() {
            write!(out, "{}\"{}\"", if i == 0 { "" } else { ", " }, t)?;
        }
        out.write_str("],\n    \"fields\": [],\n    \"symbols\": [")?;
        for (i, s) in missing_syms.enumerate() {
            write!(out, "{}\"{}\"", if i == 0 { "" } else { ", " }, s)?;
        }
        out.write_str("]\n  }\n}\n")
    })();
    r.map_err(|_| ENOMEM)?;
    Ok(out.buf)
}

/// The findoffsets.ko lines, for scripts that scrape them from the kernel log.
fn print_findoffsets(c: &Computed) {
    let off = |ty: &str, field: &str| {
        c.fields
            .iter()
            .find(|(t, f, _, _, _)| *t == ty && *f == field)
            .map_or(0, |(_, _, _, o, _)| *o)
    };
    let init_task = c
        .symbols
        .iter()
        .find(|s| s.name == "init_task")
        .map_or(0, |s| s.address);
    pr_info!(
        "libVMI offsets for Linux {} (as findoffsets.ko printed them):\n",
        c.release
    );
    pr_info!("    ostype = \"Linux\";\n");
    pr_info!("    linux_tasks = {:#x};\n", off("task_struct", "tasks"));
    pr_info!("    linux_mm = {:#x};\n", off("task_struct", "mm"));
    pr_info!("    linux_pid = {:#x};\n", off("task_struct", "pid"));
    pr_info!("    linux_name = {:#x};\n", off("task_struct", "comm"));
    pr_info!("    linux_pgd = {:#x};\n", off("mm_struct", "pgd"));
    pr_info!("    linux_init_task = {:#x};\n", init_task);
}

/// The profile text, read by the proc file's show callback.
struct Blob {
    data: KVec<u8>,
}

unsafe extern "C" fn show(m: *mut bindings::seq_file, _v: *mut c_void) -> c_int {
    // SAFETY: single_open stores the proc entry's data, our Blob, in m->private; the
    // Blob outlives the entry (it is freed after remove_proc_entry returns).
    unsafe {
        let blob = &*((*m).private as *const Blob);
        bindings::seq_write(m, blob.data.as_ptr().cast(), blob.data.len());
    }
    0
}

struct VmiProfile {
    blob: KBox<Blob>,
}

// SAFETY: the Blob is immutable after init; the proc entry only reads it.
unsafe impl Sync for VmiProfile {}
// SAFETY: as above; nothing is tied to the loading thread.
unsafe impl Send for VmiProfile {}

impl kernel::Module for VmiProfile {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let c = compute()?;
        let data = write_profile(&c)?;
        pr_info!(
            "{} fields ({} from the Rust bindings, {} sizes or offsets where the bindings differ from the kernel's compiler), {} types, {} symbols; KASLR shift {:#x} (virtual), {:#x} (physical); profile in /proc/vmi_profile ({} bytes)\n",
            c.fields.len(),
            c.from_rust,
            c.bindings_differ,
            c.types.len(),
            c.symbols.len(),
            c.shift,
            // phys_base is the physical shift minus the virtual one
            c.phys_base.wrapping_add(c.shift),
            data.len()
        );
        print_findoffsets(&c);
        let blob = KBox::new(Blob { data }, GFP_KERNEL)?;
        let ptr = &*blob as *const Blob as *mut c_void;
        // SAFETY: a static name, a show callback matching single_open's contract, and
        // data that lives until the entry is removed in drop().
        let entry = unsafe {
            proc_create_single_data(
                PROC_NAME.as_ptr().cast(),
                0o400,
                core::ptr::null_mut(),
                Some(show),
                ptr,
            )
        };
        if entry.is_null() {
            pr_err!("could not create /proc/vmi_profile (already loaded?)\n");
            return Err(EEXIST);
        }
        Ok(VmiProfile { blob })
    }
}

impl Drop for VmiProfile {
    fn drop(&mut self) {
        // SAFETY: the entry created in init; remove_proc_entry waits for readers.
        unsafe { remove_proc_entry(PROC_NAME.as_ptr().cast(), core::ptr::null_mut()) };
        let _ = &self.blob;
    }
}
