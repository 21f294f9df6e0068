// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_layout.c: the C half of the vmi_profile module.
 *
 * The Rust half computes field offsets with core::mem::offset_of! on the kernel's own
 * bindings. This file covers what the bindings do not give:
 *  - the compact type name of every needed field, written next to the C type it stands
 *    for; the compiler checks that the field has exactly that C type (a wrong name fails
 *    the build, it is never reported);
 *  - offsetof() and sizeof() of every needed field and type, including those the Rust
 *    bindings do not reach (struct mount lives in fs/mount.h, outside include/); the Rust
 *    half checks that both agree wherever both exist;
 *  - the addresses of the exported symbols the profile needs, and compile-time
 *    constants (__START_KERNEL, CONFIG_PHYSICAL_ALIGN, KERNEL_IMAGE_SIZE);
 *  - the running kernel's release and version strings.
 *
 * Field renames across kernel versions are chosen by LINUX_VERSION_CODE. Nothing here
 * writes kernel state.
 *
 * The table is kept by hand, not generated: what it must cover is the needed set
 * vmi-core derives from its readers' declarations (vmi_core::profile::needs::types(),
 * symbols()), and guest-module/tests/kmod_sources.rs fails when a declared type, field
 * or symbol is missing here or from NEEDED_TYPES/NEEDED_SYMBOLS. The module writes
 * format 1.0 (no enums).
 */
#include <linux/kernel.h>
#include <linux/version.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/mm_types.h>
#include <linux/cred.h>
#include <linux/module.h>
#include <linux/kobject.h>
#include <linux/pid.h>
#include <linux/pid_namespace.h>
#include <linux/idr.h>
#include <linux/xarray.h>
#include <linux/fs.h>
#include <linux/fs_struct.h>
#include <linux/nsproxy.h>
#include <linux/path.h>
#include <linux/mount.h>
#include <linux/dcache.h>
#include <linux/utsname.h>
#include <linux/cpumask.h>
#include <linux/percpu.h>
#include <asm/page.h>
#include <asm/pgtable_types.h>
#include <asm/current.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 1, 0)
#error "vmi_profile supports kernels from 6.1 on (Rust-for-Linux out-of-tree modules); use the BTF extractor or profile-gen for older kernels"
#endif

#include <linux/tracepoint-defs.h>
#include <linux/ftrace.h>
#include <linux/kprobes.h>
#include <linux/notifier.h>
#include <linux/rbtree_types.h>
#include <linux/seq_file.h>
#include <linux/proc_fs.h>
#include <linux/tty.h>
#include <linux/tty_driver.h>
#include <linux/tty_ldisc.h>
#include <linux/netfilter.h>
#include <linux/fdtable.h>
#include <linux/net.h>
#include <net/sock.h>
#include <linux/filter.h>
#include <net/af_unix.h>
#include <net/net_namespace.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <linux/trace_events.h>

/*
 * Types private to a kernel directory: the kernel tree has them, headers packages may
 * not (then the profile lists them as missing).
 */
#if __has_include(<../fs/proc/internal.h>)
#include <../fs/proc/internal.h>
#define VMI_HAVE_PROC_INTERNAL 1
#endif
#if __has_include(<../fs/mount.h>)
#include <../fs/mount.h>
#define VMI_HAVE_MOUNT 1
#endif
#if __has_include(<../kernel/sched/sched.h>)
/* what the scheduler's own files include before it */
#include <linux/mmu_context.h>
#include <../kernel/sched/sched.h>
#define VMI_HAVE_SCHED 1
#endif
#if defined(CONFIG_TRACING) && __has_include(<../kernel/trace/trace.h>)
#include <../kernel/trace/trace.h>
#define VMI_HAVE_TRACE 1
#endif

#include "vmi_layout.h"

#define VMI_MEMBER(T, f) (((struct T *)0)->f)

/* A field of type CT (written as C), named NAME in compact notation. */
#define F(T, f, CT, NAME)                                                      \
	{ #T, #f, NAME,                                                        \
	  offsetof(struct T, f) +                                              \
		  0 * BUILD_BUG_ON_ZERO(!__builtin_types_compatible_p(          \
			      typeof(VMI_MEMBER(T, f)), CT)),                   \
	  VMI_NO_DIM }

/* An array of CT (named NAME): its length comes from the array itself. */
#define FA(T, f, CT, NAME)                                                     \
	{ #T, #f, NAME,                                                        \
	  offsetof(struct T, f) +                                              \
		  0 * BUILD_BUG_ON_ZERO(!__builtin_types_compatible_p(          \
			      typeof(VMI_MEMBER(T, f)[0]), CT)),                \
	  ARRAY_SIZE(VMI_MEMBER(T, f)) }

/* A flexible array member of CT (named NAME): length 0. */
#define FX(T, f, CT, NAME)                                                     \
	{ #T, #f, NAME,                                                        \
	  offsetof(struct T, f) +                                              \
		  0 * BUILD_BUG_ON_ZERO(!__builtin_types_compatible_p(          \
			      typeof(VMI_MEMBER(T, f)), CT[])),                 \
	  0 }

static const struct vmi_field_info fields[] = {
	F(task_struct, tasks, struct list_head, "struct list_head"),
	F(task_struct, pid, pid_t, "int"),
	F(task_struct, tgid, pid_t, "int"),
	FA(task_struct, comm, char, "char"),
	F(task_struct, __state, unsigned int, "unsigned int"),
	F(task_struct, flags, unsigned int, "unsigned int"),
	F(task_struct, mm, struct mm_struct *, "ptr struct mm_struct"),
	F(task_struct, active_mm, struct mm_struct *, "ptr struct mm_struct"),
	F(task_struct, parent, struct task_struct *, "ptr struct task_struct"),
	F(task_struct, real_parent, struct task_struct *, "ptr struct task_struct"),
	F(task_struct, children, struct list_head, "struct list_head"),
	F(task_struct, sibling, struct list_head, "struct list_head"),
	F(task_struct, group_leader, struct task_struct *, "ptr struct task_struct"),
	F(task_struct, thread_node, struct list_head, "struct list_head"),
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 7, 0)
	F(task_struct, thread_group, struct list_head, "struct list_head"),
#endif
	F(task_struct, signal, struct signal_struct *, "ptr struct signal_struct"),
	F(task_struct, cred, const struct cred *, "ptr struct cred"),
	F(task_struct, real_cred, const struct cred *, "ptr struct cred"),
	F(task_struct, start_time, u64, "long long unsigned int"),
	F(task_struct, start_boottime, u64, "long long unsigned int"),
	F(task_struct, thread_pid, struct pid *, "ptr struct pid"),
	FA(task_struct, pid_links, struct hlist_node, "struct hlist_node"),
	F(task_struct, stack, void *, "ptr void"),
	F(task_struct, on_cpu, int, "int"),
	F(task_struct, exit_state, int, "int"),
	F(task_struct, ptrace, unsigned int, "unsigned int"),
/*
 * A kernel thread's struct kthread (worker_private from 5.17). struct kthread itself is
 * private to kernel/kthread.c, in no header: it is an opt_type in vmi-core, and the
 * module's profiles lack it (the kthreads check then says so and the others run).
 */
	F(task_struct, set_child_tid, int __user *, "ptr int"),
	F(task_struct, worker_private, void *, "ptr void"),

	F(signal_struct, nr_threads, int, "int"),
	F(signal_struct, thread_head, struct list_head, "struct list_head"),

	F(mm_struct, pgd, pgd_t *, "ptr struct pgd_t"),
	F(mm_struct, arg_start, unsigned long, "long unsigned int"),
	F(mm_struct, arg_end, unsigned long, "long unsigned int"),
	F(mm_struct, env_start, unsigned long, "long unsigned int"),
	F(mm_struct, env_end, unsigned long, "long unsigned int"),
	F(mm_struct, start_code, unsigned long, "long unsigned int"),
	F(mm_struct, end_code, unsigned long, "long unsigned int"),
	F(mm_struct, exe_file, struct file *, "ptr struct file"),
	F(mm_struct, mm_mt, struct maple_tree, "struct maple_tree"),
	F(mm_struct, map_count, int, "int"),
	F(mm_struct, start_brk, unsigned long, "long unsigned int"),
	F(mm_struct, brk, unsigned long, "long unsigned int"),
	F(mm_struct, start_stack, unsigned long, "long unsigned int"),
	F(maple_tree, ma_root, void *, "ptr void"),
	F(maple_tree, ma_flags, unsigned int, "unsigned int"),
	F(vm_area_struct, vm_start, unsigned long, "long unsigned int"),
	F(vm_area_struct, vm_end, unsigned long, "long unsigned int"),
	F(vm_area_struct, vm_flags, vm_flags_t, "long unsigned int"),
	F(vm_area_struct, vm_pgoff, unsigned long, "long unsigned int"),
	F(vm_area_struct, vm_file, struct file *, "ptr struct file"),
	F(vm_area_struct, vm_mm, struct mm_struct *, "ptr struct mm_struct"),
	F(vm_area_struct, vm_ops, const struct vm_operations_struct *, "ptr struct vm_operations_struct"),
	F(vm_area_struct, vm_private_data, void *, "ptr void"),
#ifdef CONFIG_ANON_VMA_NAME
	F(vm_area_struct, anon_name, struct anon_vma_name *, "ptr struct anon_vma_name"),
#endif
	F(vm_special_mapping, name, const char *, "ptr char"),

	F(cred, uid, kuid_t, "struct kuid_t"),
	F(cred, gid, kgid_t, "struct kgid_t"),
	F(cred, suid, kuid_t, "struct kuid_t"),
	F(cred, sgid, kgid_t, "struct kgid_t"),
	F(cred, euid, kuid_t, "struct kuid_t"),
	F(cred, egid, kgid_t, "struct kgid_t"),
	F(cred, fsuid, kuid_t, "struct kuid_t"),
	F(cred, fsgid, kgid_t, "struct kgid_t"),
	F(cred, usage, atomic_long_t, "struct atomic64_t"),
	F(cred, user, struct user_struct *, "ptr struct user_struct"),

	F(user_struct, uid, kuid_t, "struct kuid_t"),

	F(list_head, next, struct list_head *, "ptr struct list_head"),
	F(hlist_head, first, struct hlist_node *, "ptr struct hlist_node"),
	F(list_head, prev, struct list_head *, "ptr struct list_head"),
	F(hlist_node, next, struct hlist_node *, "ptr struct hlist_node"),
	F(hlist_node, pprev, struct hlist_node **, "ptr ptr struct hlist_node"),

	F(module, list, struct list_head, "struct list_head"),
	FA(module, name, char, "char"),
	F(module, state, enum module_state, "enum module_state"),
	F(module, mkobj, struct module_kobject, "struct module_kobject"),
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
	FA(module, mem, struct module_memory, "struct module_memory"),
	F(module_memory, base, void *, "ptr void"),
	F(module_memory, size, unsigned int, "unsigned int"),
#else
	F(module, core_layout, struct module_layout, "struct module_layout"),
	F(module_layout, base, void *, "ptr void"),
	F(module_layout, size, unsigned int, "unsigned int"),
#endif
	F(module, num_syms, unsigned int, "unsigned int"),
	F(module, syms, const struct kernel_symbol *, "ptr struct kernel_symbol"),
	/* dump-module: the module's sections and its own symbols */
#if defined(CONFIG_SYSFS) && defined(CONFIG_KALLSYMS)
	F(module, sect_attrs, struct module_sect_attrs *, "ptr struct module_sect_attrs"),
#endif
#ifdef CONFIG_KALLSYMS
	F(module, core_kallsyms, struct mod_kallsyms, "struct mod_kallsyms"),
#endif

	F(module_kobject, kobj, struct kobject, "struct kobject"),
	F(module_kobject, mod, struct module *, "ptr struct module"),

	F(kobject, name, const char *, "ptr char"),
	F(kobject, entry, struct list_head, "struct list_head"),
	F(kobject, parent, struct kobject *, "ptr struct kobject"),
	F(kobject, kset, struct kset *, "ptr struct kset"),

	F(kset, list, struct list_head, "struct list_head"),
	F(kset, kobj, struct kobject, "struct kobject"),

	F(pid, level, unsigned int, "unsigned int"),
	FX(pid, numbers, struct upid, "struct upid"),
	FA(pid, tasks, struct hlist_head, "struct hlist_head"),

	F(upid, nr, int, "int"),
	F(upid, ns, struct pid_namespace *, "ptr struct pid_namespace"),

	F(pid_namespace, idr, struct idr, "struct idr"),
	F(pid_namespace, level, unsigned int, "unsigned int"),

	F(idr, idr_rt, struct radix_tree_root, "struct xarray"),
	F(idr, idr_base, unsigned int, "unsigned int"),

	F(xarray, xa_head, void *, "ptr void"),

	F(xa_node, shift, unsigned char, "unsigned char"),
	FA(xa_node, slots, void *, "ptr void"),
	F(xa_node, count, unsigned char, "unsigned char"),

	F(file, f_path, struct path, "struct path"),
	F(file, f_op, const struct file_operations *, "ptr struct file_operations"),
	F(file, private_data, void *, "ptr void"),
	F(file, f_inode, struct inode *, "ptr struct inode"),
	F(file, f_mode, fmode_t, "unsigned int"),
	F(file, f_flags, unsigned int, "unsigned int"),
	F(file, f_pos, loff_t, "long long int"),
	F(task_struct, files, struct files_struct *, "ptr struct files_struct"),
	F(files_struct, fdt, struct fdtable *, "ptr struct fdtable"),
	F(fdtable, max_fds, unsigned int, "unsigned int"),
	F(fdtable, fd, struct file **, "ptr ptr struct file"),
	F(inode, i_ino, unsigned long, "long unsigned int"),
	F(inode, i_sb, struct super_block *, "ptr struct super_block"),
	F(inode, i_mode, umode_t, "short unsigned int"),
	F(inode, i_size, loff_t, "long long int"),
	F(super_block, s_dev, dev_t, "unsigned int"),
	F(super_block, s_magic, unsigned long, "long unsigned int"),
	F(socket, sk, struct sock *, "ptr struct sock"),
	F(sock, __sk_common, struct sock_common, "struct sock_common"),
	F(sock, sk_protocol, u16, "short unsigned int"),
	F(sock, sk_type, u16, "short unsigned int"),
	F(sock_common, skc_family, unsigned short, "short unsigned int"),
	F(sock_common, skc_state, volatile unsigned char, "unsigned char"),
	F(sock_common, skc_rcv_saddr, __be32, "unsigned int"),
	F(sock_common, skc_daddr, __be32, "unsigned int"),
	F(sock_common, skc_num, __u16, "short unsigned int"),
	F(sock_common, skc_dport, __be16, "short unsigned int"),
	/* a socket's filter and a unix socket's name (vmi_core::kernel::sockets);
	 * packet_sock and netlink_sock are private to net/{packet,netlink}/: opt_type */
	F(sock, sk_filter, struct sk_filter *, "ptr struct sk_filter"),
	F(sk_filter, prog, struct bpf_prog *, "ptr struct bpf_prog"),
	F(bpf_prog, len, u32, "unsigned int"),
	F(bpf_prog, orig_prog, struct sock_fprog_kern *, "ptr struct sock_fprog_kern"),
	F(sock_fprog_kern, len, u16, "short unsigned int"),
	F(sock_fprog_kern, filter, struct sock_filter *, "ptr struct sock_filter"),
	F(unix_sock, addr, struct unix_address *, "ptr struct unix_address"),
	F(unix_address, len, int, "int"),
	F(unix_address, name, struct sockaddr_un[], "struct sockaddr_un[]"),
#if IS_ENABLED(CONFIG_IPV6)
	F(sock_common, skc_v6_rcv_saddr, struct in6_addr, "struct in6_addr"),
	F(sock_common, skc_v6_daddr, struct in6_addr, "struct in6_addr"),
#endif

#ifdef VMI_HAVE_MOUNT
	F(mount, mnt_parent, struct mount *, "ptr struct mount"),
	F(mount, mnt_mountpoint, struct dentry *, "ptr struct dentry"),
	F(mount, mnt, struct vfsmount, "struct vfsmount"),
#endif

	F(vfsmount, mnt_root, struct dentry *, "ptr struct dentry"),

	F(path, dentry, struct dentry *, "ptr struct dentry"),
	F(path, mnt, struct vfsmount *, "ptr struct vfsmount"),

	F(dentry, d_name, struct qstr, "struct qstr"),
	F(dentry, d_parent, struct dentry *, "ptr struct dentry"),
	F(dentry, d_hash, struct hlist_bl_node, "struct hlist_bl_node"),
	F(hlist_bl_node, pprev, struct hlist_bl_node **, "ptr ptr struct hlist_bl_node"),

	F(qstr, name, const unsigned char *, "ptr unsigned char"),

	/* the run queues' tasks (vmi_core::kernel::runqueue); struct rq and its queues are
	 * private to kernel/sched/ */
	F(task_struct, se, struct sched_entity, "struct sched_entity"),
	F(task_struct, rt, struct sched_rt_entity, "struct sched_rt_entity"),
	F(sched_entity, run_node, struct rb_node, "struct rb_node"),
#ifdef CONFIG_FAIR_GROUP_SCHED
	F(sched_entity, my_q, struct cfs_rq *, "ptr struct cfs_rq"),
#endif
	F(sched_rt_entity, run_list, struct list_head, "struct list_head"),
#ifdef CONFIG_RT_GROUP_SCHED
	F(sched_rt_entity, my_q, struct rt_rq *, "ptr struct rt_rq"),
#endif
#ifdef VMI_HAVE_SCHED
	F(rq, cfs, struct cfs_rq, "struct cfs_rq"),
	F(rq, rt, struct rt_rq, "struct rt_rq"),
	F(cfs_rq, tasks_timeline, struct rb_root_cached, "struct rb_root_cached"),
	F(rt_rq, active, struct rt_prio_array, "struct rt_prio_array"),
	FA(rt_prio_array, queue, struct list_head, "struct list_head"),
#endif

	/* what the kernel set up every CPU with (vmi_core::kernel::cpustate) */
	FA(cpuinfo_x86, x86_capability, __u32, "unsigned int"),

	/* the VFS operation tables (vmi_core::kernel::vfs) */
	F(task_struct, nsproxy, struct nsproxy *, "ptr struct nsproxy"),
	F(nsproxy, mnt_ns, struct mnt_namespace *, "ptr struct mnt_namespace"),
#ifdef VMI_HAVE_MOUNT
	F(mount, mnt_list, struct list_head, "struct list_head"),
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 8, 0)
	F(mount, mnt_node, struct rb_node, "struct rb_node"),
	F(mnt_namespace, mounts, struct rb_root, "struct rb_root"),
#else
	F(mnt_namespace, list, struct list_head, "struct list_head"),
#endif
#endif
	F(vfsmount, mnt_sb, struct super_block *, "ptr struct super_block"),
	F(dentry, d_inode, struct inode *, "ptr struct inode"),
	/* a process's saved user registers (vmi_core::kernel::procmem) */
	F(pt_regs, ip, unsigned long, "long unsigned int"),
	/* files read from the page cache (vmi_core::kernel::pagecache) */
	F(task_struct, fs, struct fs_struct *, "ptr struct fs_struct"),
	F(fs_struct, root, struct path, "struct path"),
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 8, 0)
	F(dentry, d_children, struct hlist_head, "struct hlist_head"),
	F(dentry, d_sib, struct hlist_node, "struct hlist_node"),
#else
	F(dentry, d_subdirs, struct list_head, "struct list_head"),
	F(dentry, d_child, struct list_head, "struct list_head"),
#endif
	F(address_space, i_pages, struct xarray, "struct xarray"),
	F(address_space, nrpages, unsigned long, "long unsigned int"),
	F(page, mapping, struct address_space *, "ptr struct address_space"),
#if LINUX_VERSION_CODE >= KERNEL_VERSION(7, 2, 0) /* seen in 7.2 and 7.3, not 6.12 */
	F(page, compound_info, unsigned long, "long unsigned int"),
#else
	F(page, compound_head, unsigned long, "long unsigned int"),
#endif
	F(dentry, d_op, const struct dentry_operations *, "ptr struct dentry_operations"),
	F(inode, i_op, const struct inode_operations *, "ptr struct inode_operations"),
	F(inode, i_fop, const struct file_operations *, "ptr struct file_operations"),
	F(inode, i_mapping, struct address_space *, "ptr struct address_space"),
	F(super_block, s_op, const struct super_operations *, "ptr struct super_operations"),
	F(super_block, s_type, struct file_system_type *, "ptr struct file_system_type"),
	F(file_system_type, name, const char *, "ptr char"),
	F(file_system_type, owner, struct module *, "ptr struct module"),
	F(address_space, a_ops, const struct address_space_operations *,
	  "ptr struct address_space_operations"),
	F(file, f_mapping, struct address_space *, "ptr struct address_space"),
	F(file_operations, owner, struct module *, "ptr struct module"),
	F(file_operations, llseek, typeof(VMI_MEMBER(file_operations, llseek)), "ptr fn"),
	F(file_operations, read, typeof(VMI_MEMBER(file_operations, read)), "ptr fn"),
	F(file_operations, write, typeof(VMI_MEMBER(file_operations, write)), "ptr fn"),
	F(file_operations, iterate_shared, typeof(VMI_MEMBER(file_operations, iterate_shared)),
	  "ptr fn"),
	F(file_operations, open, typeof(VMI_MEMBER(file_operations, open)), "ptr fn"),
	F(file_operations, release, typeof(VMI_MEMBER(file_operations, release)), "ptr fn"),
	F(inode_operations, lookup, typeof(VMI_MEMBER(inode_operations, lookup)), "ptr fn"),
	F(inode_operations, permission, typeof(VMI_MEMBER(inode_operations, permission)),
	  "ptr fn"),
	F(inode_operations, getattr, typeof(VMI_MEMBER(inode_operations, getattr)), "ptr fn"),
	F(dentry_operations, d_revalidate, typeof(VMI_MEMBER(dentry_operations, d_revalidate)),
	  "ptr fn"),
	F(dentry_operations, d_delete, typeof(VMI_MEMBER(dentry_operations, d_delete)), "ptr fn"),
	F(dentry_operations, d_dname, typeof(VMI_MEMBER(dentry_operations, d_dname)), "ptr fn"),
	F(super_operations, alloc_inode, typeof(VMI_MEMBER(super_operations, alloc_inode)),
	  "ptr fn"),
	F(super_operations, evict_inode, typeof(VMI_MEMBER(super_operations, evict_inode)),
	  "ptr fn"),
	F(super_operations, statfs, typeof(VMI_MEMBER(super_operations, statfs)), "ptr fn"),
	F(address_space_operations, writepages,
	  typeof(VMI_MEMBER(address_space_operations, writepages)), "ptr fn"),
	F(address_space_operations, readahead,
	  typeof(VMI_MEMBER(address_space_operations, readahead)), "ptr fn"),

#ifdef CONFIG_TRACEPOINTS
	F(tracepoint, name, const char *, "ptr char"),
	F(tracepoint, funcs, struct tracepoint_func *, "ptr struct tracepoint_func"),
	F(tracepoint_func, func, void *, "ptr void"),
	F(tracepoint_func, data, void *, "ptr void"),
	F(tracepoint_func, prio, int, "int"),
#endif

#ifdef CONFIG_FUNCTION_TRACER
	F(ftrace_ops, func, ftrace_func_t, "ptr fn"),
	F(ftrace_ops, next, struct ftrace_ops *, "ptr struct ftrace_ops"),
	F(ftrace_ops, flags, unsigned long, "long unsigned int"),
	F(ftrace_ops, saved_func, ftrace_func_t, "ptr fn"),
#ifdef CONFIG_DYNAMIC_FTRACE
	F(ftrace_ops, func_hash, struct ftrace_ops_hash *, "ptr struct ftrace_ops_hash"),
	F(ftrace_ops, trampoline, unsigned long, "long unsigned int"),
	F(ftrace_ops, trampoline_size, unsigned long, "long unsigned int"),
	F(ftrace_ops_hash, filter_hash, struct ftrace_hash *, "ptr struct ftrace_hash"),
	F(ftrace_ops_hash, notrace_hash, struct ftrace_hash *, "ptr struct ftrace_hash"),
	F(ftrace_func_entry, hlist, struct hlist_node, "struct hlist_node"),
	F(ftrace_func_entry, ip, unsigned long, "long unsigned int"),
	F(ftrace_func_entry, direct, unsigned long, "long unsigned int"),
#endif
/* ftrace_ops.direct_call since 6.3 */
#if defined(CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS) && LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	F(ftrace_ops, direct_call, unsigned long, "long unsigned int"),
#endif
#endif

#ifdef VMI_HAVE_TRACE
#ifdef CONFIG_DYNAMIC_FTRACE
	F(ftrace_hash, size_bits, unsigned long, "long unsigned int"),
	F(ftrace_hash, buckets, struct hlist_head *, "ptr struct hlist_head"),
	F(ftrace_hash, count, unsigned long, "long unsigned int"),
#endif
#ifdef CONFIG_FTRACE_SYSCALLS
	FA(trace_array, enter_syscall_files, struct trace_event_file __rcu *, "ptr struct trace_event_file"),
#endif
#endif

#ifdef CONFIG_KPROBES
	F(kprobe, hlist, struct hlist_node, "struct hlist_node"),
	F(kprobe, list, struct list_head, "struct list_head"),
	F(kprobe, addr, kprobe_opcode_t *, "ptr unsigned char"),
	F(kprobe, symbol_name, const char *, "ptr char"),
	F(kprobe, offset, unsigned int, "unsigned int"),
	F(kprobe, pre_handler, kprobe_pre_handler_t, "ptr fn"),
	F(kprobe, post_handler, kprobe_post_handler_t, "ptr fn"),
	F(kprobe, flags, u32, "unsigned int"),
#ifdef CONFIG_KRETPROBES
	F(kretprobe, kp, struct kprobe, "struct kprobe"),
	F(kretprobe, handler, kretprobe_handler_t, "ptr fn"),
	F(kretprobe, entry_handler, kretprobe_handler_t, "ptr fn"),
#endif
#endif

#ifdef CONFIG_BPF_SYSCALL
	F(bpf_prog, type, enum bpf_prog_type, "enum bpf_prog_type"),
	F(bpf_prog, expected_attach_type, enum bpf_attach_type, "enum bpf_attach_type"),
	F(bpf_prog, jited_len, u32, "unsigned int"),
	FA(bpf_prog, tag, u8, "unsigned char"),
	F(bpf_prog, bpf_func, typeof(VMI_MEMBER(bpf_prog, bpf_func)), "ptr fn"),
	F(bpf_prog, aux, struct bpf_prog_aux *, "ptr struct bpf_prog_aux"),
	F(bpf_prog_aux, id, u32, "unsigned int"),
	FA(bpf_prog_aux, name, char, "char"),
	F(bpf_prog_aux, attach_func_name, const char *, "ptr char"),
	F(bpf_prog_aux, load_time, u64, "long long unsigned int"),
	F(bpf_prog_aux, dst_prog, struct bpf_prog *, "ptr struct bpf_prog"),
	F(bpf_link, id, u32, "unsigned int"),
	F(bpf_link, type, enum bpf_link_type, "enum bpf_link_type"),
	F(bpf_link, prog, struct bpf_prog *, "ptr struct bpf_prog"),
	F(bpf_raw_event_map, tp, struct tracepoint *, "ptr struct tracepoint"),
/* struct bpf_raw_tp_link is private to kernel/bpf/syscall.c before 6.9 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
	F(bpf_raw_tp_link, btp, struct bpf_raw_event_map *, "ptr struct bpf_raw_event_map"),
#endif
#endif
#ifdef CONFIG_PERF_EVENTS
	F(task_struct, perf_event_list, struct list_head, "struct list_head"),
	F(perf_event, owner_entry, struct list_head, "struct list_head"),
	F(perf_event, pmu, struct pmu *, "ptr struct pmu"),
	F(perf_event, overflow_handler, perf_overflow_handler_t, "ptr fn"),
#ifdef CONFIG_BPF_SYSCALL
	F(perf_event, prog, struct bpf_prog *, "ptr struct bpf_prog"),
#endif
#ifdef CONFIG_EVENT_TRACING
	F(perf_event, tp_event, struct trace_event_call *, "ptr struct trace_event_call"),
	F(trace_event_call, name, const char *, "ptr char"),
#endif
	F(pmu, name, const char *, "ptr char"),
	F(pmu, entry, struct list_head, "struct list_head"),
	F(perf_event, event_entry, struct list_head, "struct list_head"),
	F(perf_event_context, event_list, struct list_head, "struct list_head"),
	F(perf_cpu_context, ctx, struct perf_event_context, "struct perf_event_context"),
/* one context per PMU kind and per-task arrays before 6.2, one per CPU and task from 6.2 */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 2, 0)
	F(pmu, pmu_cpu_context, struct perf_cpu_context __percpu *, "ptr struct perf_cpu_context"),
	FA(task_struct, perf_event_ctxp, struct perf_event_context *, "ptr struct perf_event_context"),
#else
	F(task_struct, perf_event_ctxp, struct perf_event_context *, "ptr struct perf_event_context"),
#endif
#endif

/* function-pointer members: checked by name only (their types drift between versions) */

	F(net, list, struct list_head, "struct list_head"),
#ifdef CONFIG_NETFILTER
	F(net, nf, struct netns_nf, "struct netns_nf"),
	FA(netns_nf, hooks_ipv4, struct nf_hook_entries __rcu *, "ptr struct nf_hook_entries"),
#if IS_ENABLED(CONFIG_IPV6)
	FA(netns_nf, hooks_ipv6, struct nf_hook_entries __rcu *, "ptr struct nf_hook_entries"),
#endif
#ifdef CONFIG_NETFILTER_FAMILY_ARP
	FA(netns_nf, hooks_arp, struct nf_hook_entries __rcu *, "ptr struct nf_hook_entries"),
#endif
#ifdef CONFIG_NETFILTER_FAMILY_BRIDGE
	FA(netns_nf, hooks_bridge, struct nf_hook_entries __rcu *, "ptr struct nf_hook_entries"),
#endif
	F(nf_hook_entries, num_hook_entries, u16, "short unsigned int"),
	FX(nf_hook_entries, hooks, struct nf_hook_entry, "struct nf_hook_entry"),
	F(nf_hook_entry, hook, nf_hookfn *const, "ptr fn"),
	F(nf_hook_entry, priv, void *, "ptr void"),
	F(nf_hook_ops, hook, nf_hookfn *, "ptr fn"),
	F(nf_hook_ops, pf, u_int8_t, "unsigned char"),
	F(nf_hook_ops, hooknum, unsigned int, "unsigned int"),
	F(nf_hook_ops, priority, int, "int"),
#endif
#ifdef CONFIG_PROC_FS
	F(net, proc_net, struct proc_dir_entry *, "ptr struct proc_dir_entry"),
#endif

	F(notifier_block, notifier_call, notifier_fn_t, "ptr fn"),
	F(notifier_block, next, struct notifier_block __rcu *, "ptr struct notifier_block"),
	F(notifier_block, priority, int, "int"),
	F(atomic_notifier_head, head, struct notifier_block __rcu *, "ptr struct notifier_block"),
	F(blocking_notifier_head, head, struct notifier_block __rcu *, "ptr struct notifier_block"),
	F(raw_notifier_head, head, struct notifier_block __rcu *, "ptr struct notifier_block"),

#ifdef CONFIG_TTY
	F(tty_ldisc_ops, name, char *, "ptr char"),
	F(tty_ldisc_ops, open, typeof(VMI_MEMBER(tty_ldisc_ops, open)), "ptr fn"),
	F(tty_ldisc_ops, close, typeof(VMI_MEMBER(tty_ldisc_ops, close)), "ptr fn"),
	F(tty_ldisc_ops, read, typeof(VMI_MEMBER(tty_ldisc_ops, read)), "ptr fn"),
	F(tty_ldisc_ops, write, typeof(VMI_MEMBER(tty_ldisc_ops, write)), "ptr fn"),
	F(tty_ldisc_ops, ioctl, typeof(VMI_MEMBER(tty_ldisc_ops, ioctl)), "ptr fn"),
	F(tty_ldisc_ops, receive_buf, typeof(VMI_MEMBER(tty_ldisc_ops, receive_buf)), "ptr fn"),
	F(tty_ldisc_ops, receive_buf2, typeof(VMI_MEMBER(tty_ldisc_ops, receive_buf2)), "ptr fn"),
	F(tty_driver, tty_drivers, struct list_head, "struct list_head"),
	F(tty_driver, name, const char *, "ptr char"),
	F(tty_driver, driver_name, const char *, "ptr char"),
	F(tty_driver, ops, const struct tty_operations *, "ptr struct tty_operations"),
	F(tty_driver, num, unsigned int, "unsigned int"),
	F(tty_driver, ttys, struct tty_struct **, "ptr ptr struct tty_struct"),
	F(tty_operations, open, typeof(VMI_MEMBER(tty_operations, open)), "ptr fn"),
	F(tty_operations, close, typeof(VMI_MEMBER(tty_operations, close)), "ptr fn"),
	F(tty_operations, write, typeof(VMI_MEMBER(tty_operations, write)), "ptr fn"),
	F(tty_operations, ioctl, typeof(VMI_MEMBER(tty_operations, ioctl)), "ptr fn"),
	F(tty_operations, set_termios, typeof(VMI_MEMBER(tty_operations, set_termios)), "ptr fn"),
	FA(tty_struct, name, char, "char"),
	F(tty_struct, ldisc, struct tty_ldisc *, "ptr struct tty_ldisc"),
	F(tty_ldisc, ops, struct tty_ldisc_ops *, "ptr struct tty_ldisc_ops"),
#endif

	F(seq_operations, start, typeof(VMI_MEMBER(seq_operations, start)), "ptr fn"),
	F(seq_operations, stop, typeof(VMI_MEMBER(seq_operations, stop)), "ptr fn"),
	F(seq_operations, next, typeof(VMI_MEMBER(seq_operations, next)), "ptr fn"),
	F(seq_operations, show, typeof(VMI_MEMBER(seq_operations, show)), "ptr fn"),
	F(proc_ops, proc_open, typeof(VMI_MEMBER(proc_ops, proc_open)), "ptr fn"),
	F(proc_ops, proc_read, typeof(VMI_MEMBER(proc_ops, proc_read)), "ptr fn"),
	F(proc_ops, proc_read_iter, typeof(VMI_MEMBER(proc_ops, proc_read_iter)), "ptr fn"),
	F(proc_ops, proc_write, typeof(VMI_MEMBER(proc_ops, proc_write)), "ptr fn"),
	F(proc_ops, proc_lseek, typeof(VMI_MEMBER(proc_ops, proc_lseek)), "ptr fn"),
	F(proc_ops, proc_release, typeof(VMI_MEMBER(proc_ops, proc_release)), "ptr fn"),
	F(rb_root, rb_node, struct rb_node *, "ptr struct rb_node"),
	F(rb_node, rb_left, struct rb_node *, "ptr struct rb_node"),
	F(rb_node, rb_right, struct rb_node *, "ptr struct rb_node"),
#ifdef VMI_HAVE_PROC_INTERNAL
	F(proc_dir_entry, name, char *, "ptr char"),
	F(proc_dir_entry, subdir, struct rb_root, "struct rb_root"),
	F(proc_dir_entry, subdir_node, struct rb_node, "struct rb_node"),
	F(proc_dir_entry, seq_ops, const struct seq_operations *, "ptr struct seq_operations"),
	F(proc_dir_entry, proc_ops, const struct proc_ops *, "ptr struct proc_ops"),
#endif
};

#define T(name) { #name, "struct", sizeof(struct name) }

static const struct vmi_type_info types[] = {
	T(task_struct), T(signal_struct), T(mm_struct),	 T(cred),
	T(user_struct), T(list_head),	  T(hlist_node), T(module),
	T(module_kobject), T(kobject),	  T(kset),	 T(pid),
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 4, 0)
	T(module_memory),
#else
	T(module_layout),
#endif
	T(upid),	T(pid_namespace), T(idr),	 T(xarray),
	T(xa_node),	T(file), T(files_struct), T(fdtable), T(inode), T(socket), T(sock),
	T(sock_common), T(sk_filter), T(sock_fprog_kern), T(unix_sock), T(unix_address),
	T(vm_area_struct), T(vm_special_mapping), T(super_block),
	T(maple_tree),
#ifdef VMI_HAVE_MOUNT
	T(mount),
#endif
	T(vfsmount),	T(path),	  T(dentry),	 T(qstr),
	T(hlist_head),	T(hlist_bl_node), T(fs_struct), T(page), T(pt_regs),
#ifdef CONFIG_TRACEPOINTS
	T(tracepoint), T(tracepoint_func),
#endif
#ifdef CONFIG_FUNCTION_TRACER
	T(ftrace_ops),
#ifdef CONFIG_DYNAMIC_FTRACE
	T(ftrace_ops_hash), T(ftrace_func_entry),
#endif
#endif
#ifdef VMI_HAVE_TRACE
#ifdef CONFIG_DYNAMIC_FTRACE
	T(ftrace_hash),
#endif
#ifdef CONFIG_FTRACE_SYSCALLS
	T(trace_array),
#endif
#endif
#ifdef CONFIG_KPROBES
	T(kprobe),
#ifdef CONFIG_KRETPROBES
	T(kretprobe),
#endif
#endif
#ifdef CONFIG_BPF_SYSCALL
	T(bpf_prog), T(bpf_prog_aux), T(bpf_link), T(bpf_raw_event_map),
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
	T(bpf_raw_tp_link),
#endif
#endif
#ifdef CONFIG_PERF_EVENTS
	T(perf_event), T(pmu), T(perf_event_context), T(perf_cpu_context),
#ifdef CONFIG_EVENT_TRACING
	T(trace_event_call),
#endif
#endif
	T(net), T(notifier_block), T(atomic_notifier_head), T(blocking_notifier_head),
	T(raw_notifier_head), T(seq_operations), T(proc_ops), T(rb_root), T(rb_node),
#ifdef CONFIG_NETFILTER
	T(netns_nf), T(nf_hook_entries), T(nf_hook_entry), T(nf_hook_ops),
#endif
#ifdef CONFIG_TTY
	T(tty_ldisc_ops), T(tty_driver), T(tty_operations), T(tty_struct), T(tty_ldisc),
#endif
#ifdef VMI_HAVE_PROC_INTERNAL
	T(proc_dir_entry),
#endif
	T(nsproxy), T(file_system_type), T(address_space), T(file_operations),
	T(inode_operations), T(dentry_operations), T(super_operations),
	T(address_space_operations),
#ifdef VMI_HAVE_MOUNT
	T(mnt_namespace),
#endif
	T(sched_entity), T(sched_rt_entity), T(cpuinfo_x86),
#ifdef VMI_HAVE_SCHED
	T(rq), T(cfs_rq), T(rt_rq), T(rt_prio_array),
#endif
};

static const struct vmi_symbol_info symbols[] = {
	{ "init_task", (unsigned long)&init_task, 'D', 0 },
	{ "init_pid_ns", (unsigned long)&init_pid_ns, 'D', 0 },
#ifdef CONFIG_DYNAMIC_MEMORY_LAYOUT
	{ "page_offset_base", (unsigned long)&page_offset_base, 'D', 0 },
	{ "vmalloc_base", (unsigned long)&vmalloc_base, 'D', 0 },
	{ "vmemmap_base", (unsigned long)&vmemmap_base, 'D', 0 },
#endif
#ifdef CONFIG_SMP
	{ "__per_cpu_offset", (unsigned long)&__per_cpu_offset, 'D', 0 },
	{ "nr_cpu_ids", (unsigned long)&nr_cpu_ids, 'D', 0 },
#endif
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0) && LINUX_VERSION_CODE < KERNEL_VERSION(6, 15, 0)
	{ "pcpu_hot", (unsigned long)&pcpu_hot, 'D', 1 },
#else
	{ "current_task", (unsigned long)&current_task, 'D', 1 },
#endif
};

const struct vmi_field_info *vmi_layout_fields(size_t *n)
{
	*n = ARRAY_SIZE(fields);
	return fields;
}

const struct vmi_type_info *vmi_layout_types(size_t *n)
{
	*n = ARRAY_SIZE(types);
	return types;
}

const struct vmi_symbol_info *vmi_layout_symbols(size_t *n)
{
	*n = ARRAY_SIZE(symbols);
	return symbols;
}

/* The link-time address of _text. */
unsigned long vmi_layout_start_kernel(void)
{
	return __START_KERNEL;
}

/* KASLR moves the kernel by multiples of this. */
unsigned long vmi_layout_physical_align(void)
{
	return CONFIG_PHYSICAL_ALIGN;
}

/* The kernel image lies within this many bytes of __START_KERNEL_map. */
unsigned long vmi_layout_image_size(void)
{
	return KERNEL_IMAGE_SIZE;
}

/* Where the kernel was loaded physically, relative to its link address. */
unsigned long vmi_layout_phys_base(void)
{
	return phys_base;
}

const char *vmi_layout_release(void)
{
	return init_uts_ns.name.release;
}

const char *vmi_layout_version(void)
{
	return init_uts_ns.name.version;
}
