// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_keylog: registers a keyboard notifier, the hook of kernel keyloggers: the
 * callback sees every key press on the VT keyboard. This one only counts the events
 * (`hits`) and records nothing. Then, with hide=1, the module removes itself from the
 * modules list (its kobject stays in /sys/module).
 */
#include <linux/module.h>
#include <linux/keyboard.h>
#include <linux/notifier.h>

static int hide = 1;
module_param(hide, int, 0444);
MODULE_PARM_DESC(hide, "1: leave the modules list");
static unsigned long hits;
module_param(hits, ulong, 0444);
MODULE_PARM_DESC(hits, "how many keyboard events the notifier saw");

static int vmi_key(struct notifier_block *nb, unsigned long action, void *data)
{
	hits++;
	return NOTIFY_OK;
}

static struct notifier_block vmi_nb = { .notifier_call = vmi_key };

static int __init vmi_keylog_init(void)
{
	int err = register_keyboard_notifier(&vmi_nb);

	if (err) {
		pr_err("vmi_keylog: register_keyboard_notifier: %d\n", err);
		return err;
	}
	pr_info("vmi_keylog: keyboard_notifier_list calls %px\n", vmi_key);
	if (hide >= 1)
		list_del_init(&THIS_MODULE->list);
	return 0;
}

static void __exit vmi_keylog_exit(void)
{
	unregister_keyboard_notifier(&vmi_nb);
}

module_init(vmi_keylog_init);
module_exit(vmi_keylog_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: a keyboard notifier from a module that hides");
