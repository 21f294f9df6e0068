/* Bitfields inside an anonymous struct inside a union (a device register), and a
 * struct that embeds such unions named and anonymously. */

union reg {
	unsigned int raw;
	struct {
		unsigned int enable : 1;
		unsigned int mode : 3;
		unsigned int : 4;       /* reserved */
		unsigned int count : 12;
		int delta : 12;         /* signed, ends at bit 31 */
	};
	unsigned char bytes[4];
};

struct dev {
	char name[6];
	union reg ctl;              /* named member: not flattened */
	union {
		unsigned short word;
		struct {
			unsigned char lo_nib : 4, hi_nib : 4;
			unsigned char top : 5;
			unsigned char : 0;
		};
	};
	struct {
		unsigned char irq : 6;
		unsigned short prio : 10; /* straddles bytes: bits 6-15 of the anonymous struct */
	};
};

union reg g_reg;
struct dev g_dev;
