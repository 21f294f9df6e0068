// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_perf: a kernel perf counter whose overflow handler is the module's own, as
 * rootkits install hardware breakpoints (register_wide_hw_breakpoint) to run code on
 * every access to an address without changing a table or a byte of text. Both go
 * through perf_event_create_kernel_counter into a CPU's perf context; this one counts
 * CPU time (a software event TCG has) on CPU 0 and samples every 10 ms. The handler
 * only counts its calls (`hits`); the module stays on the modules list.
 */
#include <linux/module.h>
#include <linux/perf_event.h>

static unsigned long hits;
module_param(hits, ulong, 0444);
MODULE_PARM_DESC(hits, "how often the overflow handler ran");

static struct perf_event *vmi_event;

static void vmi_overflow(struct perf_event *event, struct perf_sample_data *data,
			 struct pt_regs *regs)
{
	hits++;
}

static int __init vmi_perf_init(void)
{
	struct perf_event_attr attr = {
		.type = PERF_TYPE_SOFTWARE,
		.config = PERF_COUNT_SW_CPU_CLOCK,
		.size = sizeof(attr),
		.sample_period = 10 * NSEC_PER_MSEC,
		.pinned = 1,
	};

	vmi_event = perf_event_create_kernel_counter(&attr, 0, NULL, vmi_overflow, NULL);
	if (IS_ERR(vmi_event)) {
		pr_err("vmi_perf: perf_event_create_kernel_counter: %ld\n", PTR_ERR(vmi_event));
		return PTR_ERR(vmi_event);
	}
	pr_info("vmi_perf: event %px calls %px\n", vmi_event, vmi_overflow);
	return 0;
}

static void __exit vmi_perf_exit(void)
{
	perf_event_release_kernel(vmi_event);
}

module_init(vmi_perf_init);
module_exit(vmi_perf_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: a kernel perf counter with its own overflow handler");
