/* Enums (named, anonymous, negative, packed) as fields, and named unions. */

enum state { S_IDLE, S_RUN = 5, S_DEAD = -1 };
enum __attribute__((packed)) small { SMALL_A, SMALL_B };
enum big { BIG = 0x100000000LL };

union value {
	long long i;
	double d;
	char s[12];
	struct value_pair { int a, b; } pair;
	enum state st;
};

struct task {
	enum state state;
	enum small small;           /* 1 byte */
	enum { ANON_A, ANON_B } anon_kind;
	enum big big;               /* 8 bytes */
	union value v;
	union value *pv;
};

union value g_value;
struct task g_task;
