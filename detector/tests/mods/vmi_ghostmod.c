// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_ghostmod: on `echo 1 > /sys/module/vmi_ghostmod/parameters/hide`, removes itself
 * from the modules list (lsmod, /proc/modules, /proc/kallsyms) and deletes its kobject
 * (/sys/module/vmi_ghostmod), as rootkits that hide from both do; only the kernel's
 * module tree (mod_tree, where it looks up the module of an address) still holds it.
 * The hiding runs from a work item, after the parameter's write has returned (its
 * sysfs file is removed with the kobject). Hiding is on request so that a test can read
 * /sys/module/vmi_ghostmod/sections first.
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/list.h>
#include <linux/kobject.h>
#include <linux/workqueue.h>

static int hidden;

static void vmi_ghost_hide(struct work_struct *work)
{
	list_del_init(&THIS_MODULE->list);
	kobject_del(&THIS_MODULE->mkobj.kobj);
	pr_info("vmi_ghostmod: hidden from the modules list and /sys/module\n");
}

static DECLARE_WORK(vmi_ghost_work, vmi_ghost_hide);

static int vmi_ghost_set_hide(const char *val, const struct kernel_param *kp)
{
	int ret = param_set_int(val, kp);

	if (!ret && hidden)
		schedule_work(&vmi_ghost_work);
	return ret;
}

static const struct kernel_param_ops vmi_ghost_hide_ops = {
	.set = vmi_ghost_set_hide,
	.get = param_get_int,
};
module_param_cb(hide, &vmi_ghost_hide_ops, &hidden, 0644);
MODULE_PARM_DESC(hide, "1: hide from the modules list and /sys/module");

static int __init vmi_ghostmod_init(void)
{
	pr_info("vmi_ghostmod: loaded\n");
	return 0;
}

module_init(vmi_ghostmod_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: a module only the module tree still holds");
