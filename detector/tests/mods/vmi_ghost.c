// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_ghost: hides a process from the tasks list and from the pid namespace alike
 * (its pid is removed from init_pid_ns's IDR, so /proc, kill and every lookup by pid
 * lose it too). Only the scheduler still knows it: when it runs, a CPU's runqueue
 * names it.
 */
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/pid.h>
#include <linux/pid_namespace.h>
#include <linux/idr.h>
#include <linux/rculist.h>

static int pid = -1;
module_param(pid, int, 0444);
MODULE_PARM_DESC(pid, "the process to hide from every list");

static int __init vmi_ghost_init(void)
{
	struct task_struct *task;

	rcu_read_lock();
	task = pid_task(find_vpid(pid), PIDTYPE_PID);
	if (!task) {
		rcu_read_unlock();
		pr_err("vmi_ghost: no process %d\n", pid);
		return -ESRCH;
	}
	list_del_init(&task->tasks);
	rcu_read_unlock();
	idr_remove(&init_pid_ns.idr, pid);
	pr_info("vmi_ghost: %d is off the tasks list and out of the pid namespace\n", pid);
	return 0;
}

module_init(vmi_ghost_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: hide a process from the tasks list and the pid namespace");
