/* Typedefs: typedef'd anonymous struct/union/enum (named by the typedef), a typedef of
 * a named struct, typedef chains, const and volatile. */

typedef struct {
	int val;
} uid_like_t;

typedef union {
	int i;
	float f;
} num_t;

typedef enum { RED, GREEN, BLUE } color_t;

typedef struct node node_t;
typedef unsigned long ulong_t;
typedef ulong_t ulong2_t;
typedef const char *cstr_t;

struct node {
	node_t *next;
	uid_like_t uid;
	num_t num;
	color_t color;
	const volatile ulong2_t cv;
	ulong2_t *p;
	cstr_t label;
	const uid_like_t *owner;
};

uid_like_t g_uid;
num_t g_num;
color_t g_color;
node_t g_node;
