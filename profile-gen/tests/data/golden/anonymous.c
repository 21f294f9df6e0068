/* Anonymous structs and unions nested several levels deep. Fields of named nested
 * structs (`struct point`, `struct inner`) share names with flattened fields and must
 * not be flattened: they come first, so a wrongly flattened `x` would win. */

struct point {
	int x;
	int y;
};

struct inner {
	long deep;
	char s;
};

struct outer {
	char kind;
	struct point where;         /* named: x, y stay in struct point */
	struct inner in;            /* named: deep, s stay in struct inner */
	union {                     /* level 1 */
		struct {            /* level 2 */
			short x;
			short y;
		};
		struct {
			char s;
			union {     /* level 3 */
				char c;
				long l;
				struct { /* level 4 */
					int deep;
					struct point corner; /* named inside anonymous */
				};
			};
		};
	};
	struct {
		int after;
		struct { int pair_a, pair_b; } pair; /* named member of an anonymous type */
	};
	int last;
};

/* an anonymous union directly at offset 0 and an anonymous struct at the end */
union either {
	struct {
		int tag;
		union {
			float f;
			int i;
		};
	};
	long long raw;
};

struct outer g_outer;
union either g_either;
