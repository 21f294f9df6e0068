// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_inline: an inline hook. The first bytes of a kernel function (by default the
 * handler of the sysfs(2) system call, which nothing in the lab calls) become a
 * `jmp` into this module, written with CR0.WP clear, as inline-hooking rootkits do
 * now that x86 no longer dispatches system calls through sys_call_table.
 */
#include <linux/module.h>
#include <linux/string.h>
#include "vmi_attack.h"

static char *func = "__x64_sys_sysfs";
module_param(func, charp, 0444);
MODULE_PARM_DESC(func, "the kernel function to hook");

static u8 *target;
static u8 saved[5];

static noinline long vmi_inline_handler(void)
{
	return -ENOSYS;
}

static int __init vmi_inline_init(void)
{
	u8 jmp[5];
	s32 rel;

	target = (u8 *)vmi_lookup(func);
	if (!target) {
		pr_err("vmi_inline: %s not found\n", func);
		return -ENOENT;
	}
	rel = (s32)((long)vmi_inline_handler - ((long)target + 5));
	jmp[0] = 0xe9;
	memcpy(&jmp[1], &rel, 4);
	memcpy(saved, target, 5);
	VMI_WITH_WP_OFF(memcpy(target, jmp, 5));
	pr_info("vmi_inline: %s at %px jumps to %px\n", func, target, vmi_inline_handler);
	return 0;
}

static void __exit vmi_inline_exit(void)
{
	VMI_WITH_WP_OFF(memcpy(target, saved, 5));
}

module_init(vmi_inline_init);
module_exit(vmi_inline_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: an inline hook at a kernel function's entry");
