// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_tty: replaces two operation pointers the way TTY sniffers and connection hiders
 * do: `receive_buf2` of the N_TTY line discipline (tty_ldiscs[N_TTY], which every
 * terminal's input goes through) and `show` of tcp4_seq_ops (what /proc/net/tcp
 * prints each socket with; the table is in .rodata, written with CR0.WP clear). Both
 * replacements call the original and count their calls (`hits`); both are restored
 * on unload. The module stays on the modules list.
 */
#include <linux/module.h>
#include <linux/seq_file.h>
#include <linux/tty.h>
#include <linux/tty_ldisc.h>
#include <linux/version.h>
#include "vmi_attack.h"

static unsigned long hits;
module_param(hits, ulong, 0444);
MODULE_PARM_DESC(hits, "how often the replacements ran");

static struct tty_ldisc_ops *vmi_ntty;
static struct seq_operations *vmi_tcp4;
static int (*orig_show)(struct seq_file *m, void *v);

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0)
static size_t (*orig_receive)(struct tty_struct *tty, const u8 *cp, const u8 *fp, size_t count);

static size_t vmi_receive(struct tty_struct *tty, const u8 *cp, const u8 *fp, size_t count)
{
	hits++;
	return orig_receive(tty, cp, fp, count);
}
#else
static int (*orig_receive)(struct tty_struct *tty, const unsigned char *cp, const char *fp,
			   int count);

static int vmi_receive(struct tty_struct *tty, const unsigned char *cp, const char *fp,
		       int count)
{
	hits++;
	return orig_receive(tty, cp, fp, count);
}
#endif

static int vmi_show(struct seq_file *m, void *v)
{
	hits++;
	return orig_show(m, v);
}

static int __init vmi_tty_init(void)
{
	struct tty_ldisc_ops **ldiscs = (struct tty_ldisc_ops **)vmi_lookup("tty_ldiscs");

	vmi_tcp4 = (struct seq_operations *)vmi_lookup("tcp4_seq_ops");
	if (!ldiscs || !ldiscs[N_TTY] || !ldiscs[N_TTY]->receive_buf2 || !vmi_tcp4) {
		pr_err("vmi_tty: tty_ldiscs or tcp4_seq_ops not found\n");
		return -ENOENT;
	}
	vmi_ntty = ldiscs[N_TTY];
	orig_receive = vmi_ntty->receive_buf2;
	orig_show = vmi_tcp4->show;
	VMI_WITH_WP_OFF({
		vmi_ntty->receive_buf2 = vmi_receive;
		vmi_tcp4->show = vmi_show;
	});
	pr_info("vmi_tty: n_tty receive_buf2 -> %px, tcp4_seq_ops.show -> %px\n", vmi_receive,
		vmi_show);
	return 0;
}

static void __exit vmi_tty_exit(void)
{
	VMI_WITH_WP_OFF({
		vmi_ntty->receive_buf2 = orig_receive;
		vmi_tcp4->show = orig_show;
	});
}

module_init(vmi_tty_init);
module_exit(vmi_tty_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: replace tty ldisc and /proc/net/tcp operations");
