// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_hookidt: points IDT gate `vector` at a function of its own, then (with hide=1)
 * removes itself from the modules list, so the detector has to name the owner of the
 * hook through the module's kobject. The default vector, 15, is reserved by Intel and
 * never raised; Linux fills it with a "spurious interrupt bug" handler.
 */
#include <linux/module.h>
#include <linux/list.h>
#include <asm/desc_defs.h>
#include "vmi_attack.h"

static int vector = 15;
module_param(vector, int, 0444);
MODULE_PARM_DESC(vector, "the IDT vector to hook");
static int hide = 1;
module_param(hide, int, 0444);
MODULE_PARM_DESC(hide, "remove this module from the modules list afterwards");

static gate_desc *idt;
static gate_desc saved;

static noinline void vmi_fake_handler(void)
{
	pr_info("vmi_hookidt: never called\n");
}

static int __init vmi_hookidt_init(void)
{
	unsigned long target = (unsigned long)vmi_fake_handler;
	gate_desc g;

	if (vector < 0 || vector > 255)
		return -EINVAL;
	idt = (gate_desc *)vmi_lookup("idt_table");
	if (!idt) {
		pr_err("vmi_hookidt: idt_table not found\n");
		return -ENOENT;
	}
	saved = idt[vector];
	g = saved;
	g.offset_low = (u16)target;
	g.offset_middle = (u16)(target >> 16);
	g.offset_high = (u32)(target >> 32);
	VMI_WITH_WP_OFF(idt[vector] = g);
	pr_info("vmi_hookidt: IDT vector %d -> %px\n", vector, vmi_fake_handler);
	if (hide)
		list_del_init(&THIS_MODULE->list);
	return 0;
}

static void __exit vmi_hookidt_exit(void)
{
	VMI_WITH_WP_OFF(idt[vector] = saved);
}

module_init(vmi_hookidt_init);
module_exit(vmi_hookidt_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: hook an IDT gate from a hidden module");
