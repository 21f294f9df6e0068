// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_kthread: starts a kernel thread running a function of its own and then removes
 * itself from the modules list (lsmod, /proc/modules), keeping its kobject in
 * /sys/module, as rootkits that keep a worker thread (a backdoor's listener, a
 * keylogger's flusher) do. The thread sleeps in a loop until it is stopped.
 */
#include <linux/module.h>
#include <linux/list.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/err.h>

static struct task_struct *worker;

static int vmi_kthread_worker(void *data)
{
	while (!kthread_should_stop())
		msleep_interruptible(1000);
	return 0;
}

static int __init vmi_kthread_init(void)
{
	worker = kthread_run(vmi_kthread_worker, NULL, "vmi_kworker");
	if (IS_ERR(worker))
		return PTR_ERR(worker);
	list_del_init(&THIS_MODULE->list);
	pr_info("vmi_kthread: thread %d started, module hidden from the modules list\n",
		worker->pid);
	return 0;
}

static void __exit vmi_kthread_exit(void)
{
	kthread_stop(worker);
}

module_init(vmi_kthread_init);
module_exit(vmi_kthread_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: a kernel thread of a module hidden from the modules list");
