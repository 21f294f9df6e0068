// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_ftrace: hooks kernel functions through ftrace, as rootkits built on
 * ftrace_helper.h do: an ftrace_ops filtered on two system call handlers (by default
 * kill(2)'s and getdents64(2)'s, the classic targets) whose callback lives in this
 * module, registered with the flags such a hook uses to rewrite the instruction
 * pointer. The callback only counts its calls (`hits`, in sysfs), so the guest behaves
 * as before. With hide=1 the module then removes itself from the modules list.
 */
#include <linux/module.h>
#include <linux/ftrace.h>
#include <linux/string.h>

static char *func = "__x64_sys_kill";
module_param(func, charp, 0444);
MODULE_PARM_DESC(func, "the first kernel function to hook");
static char *func2 = "__x64_sys_getdents64";
module_param(func2, charp, 0444);
MODULE_PARM_DESC(func2, "the second kernel function to hook");
static int hide = 1;
module_param(hide, int, 0444);
MODULE_PARM_DESC(hide, "remove this module from the modules list afterwards");
static unsigned long hits;
module_param(hits, ulong, 0444);
MODULE_PARM_DESC(hits, "how often the callback ran");

static void notrace vmi_ftrace_callback(unsigned long ip, unsigned long parent_ip,
					struct ftrace_ops *op, struct ftrace_regs *fregs)
{
	hits++;
}

static struct ftrace_ops vmi_ops = {
	.func = vmi_ftrace_callback,
	.flags = FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_RECURSION | FTRACE_OPS_FL_IPMODIFY,
};

static int __init vmi_ftrace_init(void)
{
	int err;

	err = ftrace_set_filter(&vmi_ops, func, strlen(func), 0);
	if (!err)
		err = ftrace_set_filter(&vmi_ops, func2, strlen(func2), 0);
	if (err) {
		pr_err("vmi_ftrace: filter on %s, %s: %d\n", func, func2, err);
		return err;
	}
	err = register_ftrace_function(&vmi_ops);
	if (err) {
		pr_err("vmi_ftrace: register_ftrace_function: %d\n", err);
		return err;
	}
	pr_info("vmi_ftrace: ftrace_ops at %px calls %px on %s, %s\n", &vmi_ops,
		vmi_ftrace_callback, func, func2);
	if (hide)
		list_del_init(&THIS_MODULE->list);
	return 0;
}

static void __exit vmi_ftrace_exit(void)
{
	unregister_ftrace_function(&vmi_ops);
}

module_init(vmi_ftrace_init);
module_exit(vmi_ftrace_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: hook kernel functions through ftrace");
