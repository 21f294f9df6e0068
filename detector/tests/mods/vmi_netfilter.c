// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_netfilter: registers a netfilter hook of its own in the initial network
 * namespace (IPv4, NF_INET_LOCAL_IN, priority `prio`), as magic-packet backdoors do.
 * The hook only counts the packets it sees (`hits`) and accepts them; the module stays
 * on the modules list.
 */
#include <linux/module.h>
#include <linux/netfilter.h>
#include <linux/netfilter_ipv4.h>
#include <net/net_namespace.h>

static int prio = -150;
module_param(prio, int, 0444);
MODULE_PARM_DESC(prio, "the hook's priority");
static unsigned long hits;
module_param(hits, ulong, 0444);
MODULE_PARM_DESC(hits, "how many packets the hook saw");

static unsigned int vmi_hook(void *priv, struct sk_buff *skb, const struct nf_hook_state *state)
{
	hits++;
	return NF_ACCEPT;
}

static struct nf_hook_ops vmi_ops = {
	.hook = vmi_hook,
	.pf = NFPROTO_IPV4,
	.hooknum = NF_INET_LOCAL_IN,
};

static int __init vmi_netfilter_init(void)
{
	int err;

	vmi_ops.priority = prio;
	err = nf_register_net_hook(&init_net, &vmi_ops);
	if (err) {
		pr_err("vmi_netfilter: nf_register_net_hook: %d\n", err);
		return err;
	}
	pr_info("vmi_netfilter: ipv4 LOCAL_IN calls %px (priority %d)\n", vmi_hook, prio);
	return 0;
}

static void __exit vmi_netfilter_exit(void)
{
	nf_unregister_net_hook(&init_net, &vmi_ops);
}

module_init(vmi_netfilter_init);
module_exit(vmi_netfilter_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: a netfilter hook on IPv4 LOCAL_IN");
