/* Bitfields in packed structs that straddle the storage unit of their declared type.
 * DWARF 2-4 describe them with a negative DW_AT_bit_offset (DW_FORM_sdata). */

struct __attribute__((packed)) straddle {
	char c;
	unsigned int x : 30;        /* bits 8-37: past the end of the int at offset 0 */
	unsigned int y : 2;
	unsigned long long z : 60;  /* bits 40-99 */
	int s : 20;                 /* signed, bits 100-119 */
};

struct straddle g_straddle;
