// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_hidemod: removes itself from the modules list (lsmod, /proc/modules) and keeps
 * its kobject in /sys/module, as Diamorphine-style rootkits do.
 */
#include <linux/module.h>
#include <linux/list.h>

static int __init vmi_hidemod_init(void)
{
	list_del_init(&THIS_MODULE->list);
	pr_info("vmi_hidemod: hidden from the modules list\n");
	return 0;
}

module_init(vmi_hidemod_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: a module hidden from the modules list");
