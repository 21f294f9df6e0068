// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_hooksys: replaces sys_call_table[nr] with a function of its own that calls the
 * original handler. Kernels from 6.9 (and 6.1.85, 6.6.26) dispatch through
 * x64_sys_call and no longer call the table, but the table is still the classic
 * rootkit target and still checked.
 */
#include <linux/module.h>
#include <linux/ptrace.h>
#include "vmi_attack.h"

static int nr = 180; /* nfsservctl: not implemented since 3.1 */
module_param(nr, int, 0444);
MODULE_PARM_DESC(nr, "the system call number to hook");

typedef long (*sys_fn)(const struct pt_regs *);
static sys_fn *table;
static sys_fn original;

static noinline long vmi_hooked_syscall(const struct pt_regs *regs)
{
	return original(regs);
}

static int __init vmi_hooksys_init(void)
{
	table = (sys_fn *)vmi_lookup("sys_call_table");
	if (!table) {
		pr_err("vmi_hooksys: sys_call_table not found\n");
		return -ENOENT;
	}
	original = table[nr];
	VMI_WITH_WP_OFF(table[nr] = vmi_hooked_syscall);
	pr_info("vmi_hooksys: sys_call_table[%d] %px -> %px\n", nr, original, vmi_hooked_syscall);
	return 0;
}

static void __exit vmi_hooksys_exit(void)
{
	VMI_WITH_WP_OFF(table[nr] = original);
}

module_init(vmi_hooksys_init);
module_exit(vmi_hooksys_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: hook a system call table entry");
