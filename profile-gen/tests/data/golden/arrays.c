/* Arrays: multi-dimensional, arrays of structs and pointers, arrays inside anonymous
 * members, a zero-length array and a flexible array member. */

struct item {
	short id;
	char tag;
};

struct arrays {
	int grid[2][3];
	unsigned char cube[2][3][4];
	struct item items[3];
	struct item pairs[2][2];
	struct item *ptrs[4];
	char name[16];
	union {
		long words[2];
		char raw[16];
	};
	int none[0];                /* GNU zero-length array, not last */
	unsigned int count;
	char x[];                   /* flexible array member */
};

struct arrays g_arrays;
