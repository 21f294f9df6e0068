// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_cpu: switches off two CPU protections on every CPU, the way exploits and
 * rootkits do it: CR0.WP (supervisor writes then ignore read-only pages) and CR4.SMEP
 * (the kernel may then execute user pages), each with a plain `mov` to the control
 * register, which bypasses the kernel's pinning in native_write_cr0/cr4. Nothing else
 * changes: the guest keeps running.
 */
#include <linux/module.h>
#include <linux/smp.h>
#include "vmi_attack.h"

static void vmi_cpu_off(void *unused)
{
	unsigned long cr0 = read_cr0(), cr4 = __read_cr4();

	vmi_cr0_write(cr0 & ~X86_CR0_WP);
	asm volatile("mov %0, %%cr4" : : "r"(cr4 & ~X86_CR4_SMEP) : "memory");
}

static int __init vmi_cpu_init(void)
{
	on_each_cpu(vmi_cpu_off, NULL, 1);
	pr_info("vmi_cpu: CR0.WP and CR4.SMEP cleared on every CPU\n");
	return 0;
}

module_init(vmi_cpu_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: clear CR0.WP and CR4.SMEP behind the kernel's back");
