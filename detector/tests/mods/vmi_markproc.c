// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_markproc: marks a process as Diamorphine does to hide it: it sets bit 0x10000000
 * of task_struct.flags (Diamorphine's PF_INVISIBLE, PF_MEMALLOC_PIN to the kernel),
 * which Diamorphine's getdents and kill hooks look for. No list changes: the detector
 * must notice the mark itself.
 */
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/pid.h>

#define PF_INVISIBLE 0x10000000

static int pid = -1;
module_param(pid, int, 0444);
MODULE_PARM_DESC(pid, "the process to mark");

static int __init vmi_markproc_init(void)
{
	struct task_struct *task;

	rcu_read_lock();
	task = pid_task(find_vpid(pid), PIDTYPE_PID);
	if (!task) {
		rcu_read_unlock();
		pr_err("vmi_markproc: no process %d\n", pid);
		return -ESRCH;
	}
	task->flags |= PF_INVISIBLE;
	rcu_read_unlock();
	pr_info("vmi_markproc: marked %d (%s) invisible\n", pid, task->comm);
	return 0;
}

module_init(vmi_markproc_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: mark a process with Diamorphine's PF_INVISIBLE");
