// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_kprobe: hooks kernel functions through kprobes: two kprobes on one function (by
 * default getpgid(2)'s handler; the second makes the kernel put an aggregate probe in
 * kprobe_table with both under it) and a kretprobe on another (getppid(2)'s), all
 * with handlers in this module that only count their calls (`hits`). Then, with
 * hide=1, the module removes itself from the modules list, and with hide=2 also from
 * /sys/module (its kobject deleted, as adore-ng-style rootkits do), so that no module
 * list names the owner of the handlers.
 */
#include <linux/module.h>
#include <linux/kobject.h>
#include <linux/kprobes.h>

static char *func = "__x64_sys_getpgid";
module_param(func, charp, 0444);
MODULE_PARM_DESC(func, "the kernel function to probe twice");
static char *retfunc = "__x64_sys_getppid";
module_param(retfunc, charp, 0444);
MODULE_PARM_DESC(retfunc, "the kernel function to probe on return");
static int hide = 2;
module_param(hide, int, 0444);
MODULE_PARM_DESC(hide, "1: leave the modules list; 2: and /sys/module");
static unsigned long hits;
module_param(hits, ulong, 0444);
MODULE_PARM_DESC(hits, "how often the handlers ran");

static int vmi_pre(struct kprobe *p, struct pt_regs *regs)
{
	hits++;
	return 0;
}

static void vmi_post(struct kprobe *p, struct pt_regs *regs, unsigned long flags)
{
	hits++;
}

static int vmi_pre2(struct kprobe *p, struct pt_regs *regs)
{
	hits++;
	return 0;
}

static int vmi_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	hits++;
	return 0;
}

static int vmi_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	hits++;
	return 0;
}

static struct kprobe vmi_kp = { .pre_handler = vmi_pre, .post_handler = vmi_post };
static struct kprobe vmi_kp2 = { .pre_handler = vmi_pre2 };
static struct kretprobe vmi_krp = {
	.handler = vmi_ret,
	.entry_handler = vmi_entry,
	.maxactive = 8,
};

static int __init vmi_kprobe_init(void)
{
	int err;

	vmi_kp.symbol_name = func;
	vmi_kp2.symbol_name = func;
	vmi_krp.kp.symbol_name = retfunc;
	err = register_kprobe(&vmi_kp);
	if (err)
		goto fail;
	err = register_kprobe(&vmi_kp2);
	if (err) {
		unregister_kprobe(&vmi_kp);
		goto fail;
	}
	err = register_kretprobe(&vmi_krp);
	if (err) {
		unregister_kprobe(&vmi_kp2);
		unregister_kprobe(&vmi_kp);
		goto fail;
	}
	pr_info("vmi_kprobe: kprobes at %px (%s), kretprobe at %px (%s)\n", vmi_kp.addr, func,
		vmi_krp.kp.addr, retfunc);
	if (hide >= 1)
		list_del_init(&THIS_MODULE->list);
	if (hide >= 2)
		kobject_del(&THIS_MODULE->mkobj.kobj);
	return 0;
fail:
	pr_err("vmi_kprobe: registering on %s, %s: %d\n", func, retfunc, err);
	return err;
}

static void __exit vmi_kprobe_exit(void)
{
	unregister_kretprobe(&vmi_krp);
	unregister_kprobe(&vmi_kp2);
	unregister_kprobe(&vmi_kp);
}

module_init(vmi_kprobe_init);
module_exit(vmi_kprobe_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: hook kernel functions through kprobes and hide");
