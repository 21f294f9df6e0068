// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_tracepoint: registers a probe of its own on a kernel tracepoint (by default
 * sys_enter, which fires on every system call), as rootkits that watch system calls
 * without touching a table do. The probe only counts its calls (`hits`); the module
 * stays on the modules list.
 */
#include <linux/module.h>
#include <linux/string.h>
#include <linux/tracepoint.h>

static char *tp_name = "sys_enter";
module_param(tp_name, charp, 0444);
MODULE_PARM_DESC(tp_name, "the tracepoint to probe");
static unsigned long hits;
module_param(hits, ulong, 0444);
MODULE_PARM_DESC(hits, "how often the probe ran");

static struct tracepoint *vmi_tp;

/* every tracepoint passes its data pointer first; this probe reads no argument */
static void vmi_probe(void *data)
{
	hits++;
}

static void vmi_find(struct tracepoint *tp, void *priv)
{
	if (!strcmp(tp->name, tp_name))
		vmi_tp = tp;
}

static int __init vmi_tracepoint_init(void)
{
	int err;

	for_each_kernel_tracepoint(vmi_find, NULL);
	if (!vmi_tp) {
		pr_err("vmi_tracepoint: no tracepoint %s\n", tp_name);
		return -ENOENT;
	}
	err = tracepoint_probe_register(vmi_tp, vmi_probe, NULL);
	if (err) {
		pr_err("vmi_tracepoint: tracepoint_probe_register: %d\n", err);
		return err;
	}
	pr_info("vmi_tracepoint: %s calls %px\n", tp_name, vmi_probe);
	return 0;
}

static void __exit vmi_tracepoint_exit(void)
{
	tracepoint_probe_unregister(vmi_tp, vmi_probe, NULL);
	tracepoint_synchronize_unregister();
}

module_init(vmi_tracepoint_init);
module_exit(vmi_tracepoint_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: a probe on a kernel tracepoint");
