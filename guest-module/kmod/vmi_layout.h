/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C half of vmi_profile, as the Rust half declares it (vmi_profile_main.rs:
 * FieldInfo, TypeInfo, SymbolInfo and the extern "C" block must match).
 */
#ifndef VMI_LAYOUT_H
#define VMI_LAYOUT_H

#include <linux/types.h>

struct vmi_field_info {
	const char *type;
	const char *field;
	const char *ctype; /* the compact type name (docs/profile.md) */
	unsigned long offset;
	unsigned long dim; /* array length (0: flexible), VMI_NO_DIM when not an array */
};

#define VMI_NO_DIM (~0UL)

struct vmi_type_info {
	const char *name;
	const char *kind; /* "struct" or "union" */
	unsigned long size;
};

struct vmi_symbol_info {
	const char *name;
	unsigned long address; /* as the running kernel sees it */
	char type;             /* System.map type letter */
	unsigned char percpu;  /* a per-CPU offset: not moved by KASLR */
};

const struct vmi_field_info *vmi_layout_fields(size_t *n);
const struct vmi_type_info *vmi_layout_types(size_t *n);
const struct vmi_symbol_info *vmi_layout_symbols(size_t *n);
unsigned long vmi_layout_start_kernel(void);
unsigned long vmi_layout_physical_align(void);
unsigned long vmi_layout_image_size(void);
unsigned long vmi_layout_phys_base(void);
const char *vmi_layout_release(void);
const char *vmi_layout_version(void);

#endif
