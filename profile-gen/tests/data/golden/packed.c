/* packed and aligned attributes, #pragma pack, and small bitfields in a packed struct
 * that stay inside their storage unit. */

struct __attribute__((packed)) hdr {
	char c;
	int i;                      /* offset 1 */
	short s;                    /* offset 5 */
	unsigned int lo : 4;        /* byte 7 */
	unsigned int hi : 4;
	long long l;                /* offset 8 */
};

struct aligned {
	char c;
	int big __attribute__((aligned(16)));
	char d;
	long long q __attribute__((packed));
} __attribute__((aligned(32)));

#pragma pack(push, 2)
struct pack2 {
	char c;
	int i;                      /* offset 2 */
	char d;
	long long l;                /* offset 8 */
};
#pragma pack(pop)

struct outer_packed {
	char c;
	struct hdr h;               /* packed struct: alignment 1 */
	struct aligned a;           /* offset 32 */
};

struct hdr g_hdr;
struct aligned g_aligned;
struct pack2 g_pack2;
struct outer_packed g_outer_packed;
