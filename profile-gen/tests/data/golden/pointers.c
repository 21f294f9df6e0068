/* Pointers: to structs (self-referential), to pointers, void, const char, function
 * pointers (plain, typedef'd, to function pointer, arrays of them). */

struct list_head {
	struct list_head *next, *prev;
};

typedef int (*handler_t)(void *ctx, int code);

struct ops {
	void (*open)(void);
	handler_t handle;
	handler_t *handlers;
	int (**vec)(int);
	void (*table[2])(int);
	char *(*name_of)(const struct ops *);
	void *cookie;
	const char *name;
	char **argv;
	const char *const *envp;
	struct list_head list;
	struct list_head *head;
	struct ops *self;
	struct list_head **slot;
};

struct ops g_ops;
