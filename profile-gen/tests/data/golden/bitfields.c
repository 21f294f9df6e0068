/* Bitfields in plain structs: after a char, straddling bytes and storage units,
 * signed and unsigned, unnamed padding, zero-width `:0`, _Bool, enum and char types. */

enum gear { GEAR_P, GEAR_R, GEAR_N, GEAR_D };

struct flags {
	char tag;                   /* a bitfield after a char shares its int unit */
	unsigned int lo : 3;        /* byte 1, bits 0-2 */
	signed int mid : 9;         /* straddles bytes 1 and 2 */
	unsigned int : 2;           /* unnamed padding: no member */
	int neg : 4;                /* plain int bitfield (signed on gcc) */
	unsigned int : 0;           /* zero-width: the next field starts a new int unit */
	unsigned int after_zero : 5;
	_Bool on : 1;
	enum gear gear : 2;
	signed char sc : 3;
	unsigned char uc : 7;       /* does not fit in the rest of the byte: next byte */
};

struct wide {
	unsigned int a : 20;
	unsigned long long b : 30;  /* bits 20-49: crosses the first 32-bit boundary */
	unsigned long long c : 14;  /* ends exactly at bit 63 */
	long long d : 33;           /* signed, 5 bytes */
	unsigned short e : 9;
	unsigned short f : 7;
	long long tail;
};

struct flags g_flags;
struct wide g_wide;
