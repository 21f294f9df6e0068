// SPDX-License-Identifier: GPL-2.0
/*
 * lab_hello: the lab's own test module. It takes a string parameter and exposes it
 * read-only in sysfs, so a test can check that the module was built against the right
 * headers, loaded with its parameters, and shows up in /proc/modules.
 */
#include <linux/init.h>
#include <linux/module.h>
#include <linux/moduleparam.h>

static char *tag = "none";
module_param(tag, charp, 0444);
MODULE_PARM_DESC(tag, "a string the lab test reads back from sysfs");

static int __init lab_hello_init(void)
{
	pr_info("lab_hello: loaded with tag=%s\n", tag);
	return 0;
}

static void __exit lab_hello_exit(void)
{
	pr_info("lab_hello: unloaded\n");
}

module_init(lab_hello_init);
module_exit(lab_hello_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi lab test module");
