/*
 * labworker: the guest side of the vmi lab. One static binary, copied into the
 * initramfs under several names.
 *
 *   as /init (pid 1)         mount /proc, /sys, /dev; run /lab/boot.sh (the scenario);
 *                            then serve the lab channel (/dev/ttyS1, or the device named
 *                            by labchannel=/dev/NAME on the kernel command line, e.g. a
 *                            Xen guest's console /dev/hvc0): print the ground truth,
 *                            READY, and answer commands from the host.
 *   NAME sleep [args...]     sleep forever (args only lengthen the command line)
 *   NAME threads N           N threads in one process (the main thread counts)
 *   NAME chain DEPTH         parent -> child -> ... DEPTH processes, all sleeping
 *   NAME setuid UID          drop to uid/gid UID, then sleep
 *   NAME spawn N             fork N sleeping children (reaped by the kernel when killed)
 *   NAME truth               print the ground-truth block on stdout
 *   NAME cpubench ROUNDS N   fixed CPU-bound work: ROUNDS rounds of N iterations of an
 *                            integer hash over a 64 KiB table, each round timed by the
 *                            guest's CLOCK_MONOTONIC; one line per round on stdout,
 *                            "@@BENCH round=I iters=N ns=T ops_per_s=X", then
 *                            "@@BENCH-END rounds=R check=C" (C keeps the work observable)
 *   NAME churn PER_SEC       process churn: fork PER_SEC children a second (guest clock),
 *                            each named "churn-child", living 10-200 ms, then exiting;
 *                            the parent keeps NAME and runs forever
 *   NAME spoof-comm NEW      rename itself to NEW (prctl PR_SET_NAME), then sleep
 *   NAME spoof-argv NEW      overwrite its argument area with NEW (argv[0] only), sleep
 *   NAME udp PORT            bind a UDP socket to 0.0.0.0:PORT, then sleep
 *   NAME inject              memory as injected code leaves it: an anonymous RWX
 *                            region (two pages, the first holding shellcode-like bytes)
 *                            and an anonymous region written, then made r-x with
 *                            mprotect; prints "inject rwx=ADDR rx=ADDR rwx_head=HEX
 *                            rx_head=HEX" (addresses and first 64 bytes in hex), sleeps
 *   NAME bpf MODE            eBPF through the raw bpf() syscall (no libbpf): MODE "all"
 *                            loads a kprobe program (vmi_bpf_kprobe) attached to
 *                            __x64_sys_getuid by a kprobe perf event
 *                            (PERF_EVENT_IOC_SET_BPF), a raw tracepoint program
 *                            (vmi_bpf_rawtp) on sched_process_exec
 *                            (BPF_RAW_TRACEPOINT_OPEN) and a socket filter
 *                            (vmi_bpf_filter) on a UDP socket, and a kprobe program
 *                            (vmi_bpf_kplink) on __x64_sys_getgid through a BPF link to
 *                            a kprobe perf event (BPF_LINK_CREATE); prints
 *                            "bpf kind=K id=N tag=HEX type=T fd=F" per program (from
 *                            BPF_OBJ_GET_INFO_BY_FD), then "bpf ready" and sleeps
 *                            holding them
 *   NAME memfd-exec MEMFD    fileless execution: copy its own image into a memfd named
 *                            MEMFD (memfd_create), then fexecve it (argv[0] MEMFD, mode
 *                            sleep); /proc/PID/exe is then "/memfd:MEMFD (deleted)"
 *   NAME drop DIR FILE [COMM] a dropper as BPFDoor is one: copy its own image to
 *                            DIR/FILE, execute it (same pid), and the new image deletes
 *                            DIR/FILE, renames itself COMM (prctl) when given, prints
 *                            "drop ready" and sleeps
 *   NAME maplib KEEP GONE MEMFD  libraries from where none are installed: copy its own
 *                            image to KEEP and to GONE and into a memfd named MEMFD,
 *                            map a page of each PROT_READ|PROT_EXEC (as a loader maps
 *                            text), delete GONE; prints "maplib keep=ADDR gone=ADDR
 *                            memfd=ADDR" and sleeps
 *   NAME packet-filter [COMM] a passive backdoor's sockets (BPFDoor): AF_PACKET SOCK_RAW
 *                            with a classic BPF filter for a magic packet
 *                            (SO_ATTACH_FILTER, 11 instructions), a raw UDP socket with
 *                            an eBPF socket filter (vmi_raw_filter, SO_ATTACH_BPF), a
 *                            unix stream socket listening on /tmp/lab-pf.sock, a unix
 *                            datagram socket on the abstract name "lab-pf-abstract",
 *                            a netlink route socket; renames itself COMM when given;
 *                            prints "bpf kind=raw_filter id=N ..." and
 *                            "packet-filter ready pid=P packet=FD raw=FD unix=FD
 *                            abstract=FD netlink=FD", then sleeps
 *   NAME ptrace              an injector's hold on other processes: fork a child
 *                            (sleeping) and attach to it with PTRACE_SEIZE; fork a
 *                            child that forks a grandchild and attach to it with
 *                            PTRACE_ATTACH (so its tracer is not its parent); prints
 *                            "ptrace ready tracer=P seized=C attached=G" and sleeps
 *                            holding both
 *   NAME iouring [sqpoll]    io_uring_setup(2) through syscall(2) (no liburing): an
 *                            instance of 8 entries, and with "sqpoll" a second one
 *                            with IORING_SETUP_SQPOLL; prints "iouring ready pid=P
 *                            fd=N sq=S cq=C [sqpoll_fd=M]" (0 for an instance the
 *                            kernel refused) and sleeps holding them
 *
 * Wire format (lab channel and `truth`): one record per line, "kind key=value ...";
 * values escape every byte outside 0x21..0x7e, and '%', as %XX. Blocks:
 *   @@TRUTH-BEGIN 1 ... @@TRUTH-END records=N
 *   @@OUT <escaped line> ... @@EXIT <status>      (reply to "sh <escaped command>")
 *   @@READY                                       (after the first truth block)
 *
 * Host input is untrusted only in the sense of being a test harness: lines are
 * bounded, unknown commands get "@@ERR unknown-command".
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE 65536
#define MAX_KSYMS 256

static void sleep_forever(void)
{
	for (;;)
		pause();
}

static void put_escaped(FILE *out, const unsigned char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];
		if (c <= 0x20 || c >= 0x7f || c == '%') {
			fputc('%', out);
			fputc(hex[c >> 4], out);
			fputc(hex[c & 15], out);
		} else {
			fputc(c, out);
		}
	}
}

static void put_str(FILE *out, const char *s)
{
	put_escaped(out, (const unsigned char *)s, strlen(s));
}

/* Read a whole (small) file; returns length or -1. Always NUL-terminates. */
static ssize_t read_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t len = 0;
	while (len + 1 < cap) {
		ssize_t r = read(fd, buf + len, cap - 1 - len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			close(fd);
			return -1;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = 0;
	return (ssize_t)len;
}

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t r = write(fd, text, strlen(text));
	(void)r;
	close(fd);
}

static const char *status_field(const char *status, const char *key)
{
	size_t kl = strlen(key);
	for (const char *p = status; p && *p;) {
		if (strncmp(p, key, kl) == 0 && p[kl] == ':') {
			p += kl + 1;
			while (*p == ' ' || *p == '\t')
				p++;
			return p;
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return NULL;
}

struct stat_fields {
	char comm[64];
	char state;
	long ppid;
	unsigned long long start;
};

/* Parse /proc/<pid>/stat: "pid (comm) S ppid ... starttime(22) ..." */
static int parse_stat(const char *path, struct stat_fields *sf)
{
	static char buf[4096];
	if (read_file(path, buf, sizeof buf) <= 0)
		return -1;
	char *open_paren = strchr(buf, '(');
	char *close_paren = strrchr(buf, ')');
	if (!open_paren || !close_paren || close_paren < open_paren)
		return -1;
	size_t cl = (size_t)(close_paren - open_paren - 1);
	if (cl >= sizeof sf->comm)
		cl = sizeof sf->comm - 1;
	memcpy(sf->comm, open_paren + 1, cl);
	sf->comm[cl] = 0;
	char *p = close_paren + 2;
	sf->state = *p;
	/* fields after state: 4=ppid ... 22=starttime */
	int field = 3;
	sf->ppid = -1;
	sf->start = 0;
	while (*p) {
		if (*p == ' ') {
			field++;
			if (field == 4)
				sf->ppid = strtol(p + 1, NULL, 10);
			if (field == 22) {
				sf->start = strtoull(p + 1, NULL, 10);
				break;
			}
		}
		p++;
	}
	return 0;
}

static int is_number(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return 0;
	return 1;
}

static unsigned long records;

static void emit_process(FILE *out, const char *pid)
{
	char path[320];
	static char status[8192];
	static char cmdline[MAX_LINE];
	static char exe[4096];
	struct stat_fields sf;

	snprintf(path, sizeof path, "/proc/%s/stat", pid);
	if (parse_stat(path, &sf) != 0)
		return; /* exited meanwhile */
	snprintf(path, sizeof path, "/proc/%s/status", pid);
	if (read_file(path, status, sizeof status) <= 0)
		return;
	const char *tgid = status_field(status, "Tgid");
	const char *uid = status_field(status, "Uid");
	const char *threads = status_field(status, "Threads");
	long uids[4] = {-1, -1, -1, -1};
	if (uid)
		sscanf(uid, "%ld %ld %ld %ld", &uids[0], &uids[1], &uids[2], &uids[3]);
	snprintf(path, sizeof path, "/proc/%s/cmdline", pid);
	ssize_t cl = read_file(path, cmdline, sizeof cmdline);
	snprintf(path, sizeof path, "/proc/%s/exe", pid);
	ssize_t el = readlink(path, exe, sizeof exe - 1);

	fprintf(out, "proc pid=%s ppid=%ld tgid=%ld uid=%ld euid=%ld state=%c threads=%ld start=%llu comm=",
		pid, sf.ppid, tgid ? strtol(tgid, NULL, 10) : -1, uids[0], uids[1], sf.state,
		threads ? strtol(threads, NULL, 10) : -1, sf.start);
	put_str(out, sf.comm);
	fputs(" exe=", out);
	put_escaped(out, (const unsigned char *)exe, el > 0 ? (size_t)el : 0);
	fputs(" cmdline=", out);
	/* drop the trailing NUL of the last argument */
	if (cl > 0 && cmdline[cl - 1] == 0)
		cl--;
	put_escaped(out, (const unsigned char *)cmdline, cl > 0 ? (size_t)cl : 0);
	fputc('\n', out);
	records++;

	/* every thread of the process */
	snprintf(path, sizeof path, "/proc/%s/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!is_number(e->d_name))
			continue;
		char tpath[600];
		struct stat_fields tf;
		snprintf(tpath, sizeof tpath, "/proc/%s/task/%s/stat", pid, e->d_name);
		if (parse_stat(tpath, &tf) != 0)
			continue;
		fprintf(out, "thread tgid=%s tid=%s state=%c comm=", pid, e->d_name, tf.state);
		put_str(out, tf.comm);
		fputc('\n', out);
		records++;
	}
	closedir(d);
}

/* Module list: "name size refs deps state addr" per /proc/modules line. */
static void emit_modules(FILE *out)
{
	FILE *f = fopen("/proc/modules", "re");
	if (!f)
		return;
	static char line[4096];
	while (fgets(line, sizeof line, f)) {
		char name[256], deps[2048], state[32], addr[32];
		unsigned long size;
		long refs;
		if (sscanf(line, "%255s %lu %ld %2047s %31s %31s", name, &size, &refs, deps, state, addr) != 6)
			continue;
		fprintf(out, "module name=");
		put_str(out, name);
		fprintf(out, " size=%lu refs=%ld state=", size, refs);
		put_str(out, state);
		fputs(" addr=", out);
		put_str(out, addr);
		fputs(" deps=", out);
		put_str(out, deps);
		fputc('\n', out);
		records++;
	}
	fclose(f);
}

/* Symbols the scenario asked for (/lab/ksyms, one name per line), looked up in
 * /proc/kallsyms. Every occurrence is printed (static symbols can repeat). */
static void emit_ksyms(FILE *out, unsigned long long *text_addr)
{
	static char names[MAX_KSYMS][128];
	int count = 0;
	FILE *f = fopen("/lab/ksyms", "re");
	char line[512];
	if (f) {
		while (count < MAX_KSYMS && fgets(line, sizeof line, f)) {
			size_t n = strcspn(line, "\r\n");
			line[n] = 0;
			if (n == 0 || n >= sizeof names[0])
				continue;
			memcpy(names[count++], line, n + 1);
		}
		fclose(f);
	}
	f = fopen("/proc/kallsyms", "re");
	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		char addr[32], type[8], name[256], mod[256];
		mod[0] = 0;
		int k = sscanf(line, "%31s %7s %255s %255s", addr, type, name, mod);
		if (k < 3)
			continue;
		if (strcmp(name, "_text") == 0 && mod[0] == 0)
			*text_addr = strtoull(addr, NULL, 16);
		for (int i = 0; i < count; i++) {
			if (strcmp(names[i], name) == 0) {
				fprintf(out, "ksym addr=%s type=%s name=", addr, type);
				put_str(out, name);
				if (mod[0]) {
					/* "[module]" */
					size_t ml = strlen(mod);
					fputs(" module=", out);
					if (ml >= 2 && mod[0] == '[' && mod[ml - 1] == ']')
						put_escaped(out, (unsigned char *)mod + 1, ml - 2);
					else
						put_str(out, mod);
				}
				fputc('\n', out);
				records++;
				break;
			}
		}
	}
	fclose(f);
}

static void emit_truth(FILE *out)
{
	static char buf[MAX_LINE];
	struct utsname u;
	records = 0;
	fputs("@@TRUTH-BEGIN 1\n", out);
	if (uname(&u) == 0) {
		fputs("uname release=", out);
		put_str(out, u.release);
		fputs(" machine=", out);
		put_str(out, u.machine);
		fputc('\n', out);
		records++;
	}
	ssize_t n = read_file("/proc/version", buf, sizeof buf);
	if (n > 0) {
		if (buf[n - 1] == '\n')
			buf[--n] = 0;
		fputs("version text=", out);
		put_escaped(out, (unsigned char *)buf, (size_t)n);
		fputc('\n', out);
		records++;
	}
	n = read_file("/proc/cmdline", buf, sizeof buf);
	if (n > 0) {
		if (buf[n - 1] == '\n')
			buf[--n] = 0;
		fputs("cmdline text=", out);
		put_escaped(out, (unsigned char *)buf, (size_t)n);
		fputc('\n', out);
		records++;
	}
	unsigned long long text_addr = 0;
	emit_ksyms(out, &text_addr);
	/* The unrelocated x86-64 kernel starts at 0xffffffff81000000; any other _text
	 * means the kernel was moved by KASLR. */
	fprintf(out, "kaslr active=%d text=%llx\n", text_addr != 0 && text_addr != 0xffffffff81000000ULL,
		text_addr);
	records++;
	emit_modules(out);

	DIR *d = opendir("/proc");
	if (d) {
		struct dirent *e;
		while ((e = readdir(d)))
			if (is_number(e->d_name))
				emit_process(out, e->d_name);
		closedir(d);
	}
	fprintf(out, "@@TRUTH-END records=%lu\n", records);
	fflush(out);
}

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Fixed CPU-bound work (see the header): the same instructions every round. */
static int cpubench(long rounds, long iters)
{
	static uint32_t table[16384];
	uint64_t x = 0x9E3779B97F4A7C15ULL;
	for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
		table[i] = (uint32_t)(i * 2654435761U);
	if (rounds <= 0 || iters <= 0) {
		fprintf(stderr, "cpubench: ROUNDS and N must be positive\n");
		return 2;
	}
	for (long r = 0; r < rounds; r++) {
		long long t0 = now_ns();
		for (long i = 0; i < iters; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			uint32_t *slot = &table[x & 16383];
			*slot = (*slot + (uint32_t)(x >> 32)) * 0x01000193U;
			x += *slot;
		}
		long long ns = now_ns() - t0;
		printf("@@BENCH round=%ld iters=%ld ns=%lld ops_per_s=%.0f\n", r, iters, ns,
		       ns > 0 ? (double)iters * 1e9 / (double)ns : 0.0);
		fflush(stdout);
	}
	printf("@@BENCH-END rounds=%ld check=%llu\n", rounds, (unsigned long long)x);
	fflush(stdout);
	return 0;
}

/* Process churn (see the header): the tasks list changes under every scan. */
static void churn(long per_sec)
{
	if (per_sec <= 0)
		per_sec = 1;
	signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel */
	long long period = 1000000000LL / per_sec;
	long long next = now_ns();
	unsigned long long seed = (unsigned long long)getpid() * 0x9E3779B97F4A7C15ULL;
	for (;;) {
		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		long life_us = 10000 + (long)((seed >> 33) % 190000);
		pid_t pid = fork();
		if (pid == 0) {
			prctl(PR_SET_NAME, "churn-child", 0, 0, 0);
			usleep((useconds_t)life_us);
			_exit(0);
		}
		next += period;
		long long wait = next - now_ns();
		if (wait > 0) {
			struct timespec ts = { wait / 1000000000LL, wait % 1000000000LL };
			while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
				;
		} else {
			next = now_ns(); /* fell behind: do not burst */
		}
	}
}

static void *thread_main(void *arg)
{
	(void)arg;
	sleep_forever();
	return NULL;
}

static int unhex(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* In-place %XX decoding; returns the decoded length. */
static size_t unescape(char *s)
{
	char *w = s;
	for (char *r = s; *r; r++) {
		if (*r == '%' && unhex(r[1]) >= 0 && unhex(r[2]) >= 0) {
			*w++ = (char)(unhex(r[1]) * 16 + unhex(r[2]));
			r += 2;
		} else {
			*w++ = *r;
		}
	}
	*w = 0;
	return (size_t)(w - s);
}

/* Run a shell command, its output framed as @@OUT lines, then @@EXIT. */
static void run_shell(FILE *out, char *cmd)
{
	int pipefd[2];
	unescape(cmd);
	if (pipe2(pipefd, O_CLOEXEC) != 0) {
		fprintf(out, "@@EXIT 255\n");
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		int devnull = open("/dev/null", O_RDONLY);
		if (devnull >= 0)
			dup2(devnull, 0);
		setsid();
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	FILE *in = fdopen(pipefd[0], "r");
	static char line[MAX_LINE];
	for (;;) {
		if (!in)
			break;
		if (!fgets(line, sizeof line, in)) {
			/* a signal is no end of output: read on (the pipe's end is EOF) */
			if (ferror(in) && errno == EINTR) {
				clearerr(in);
				continue;
			}
			break;
		}
		size_t n = strlen(line);
		if (n && line[n - 1] == '\n')
			line[--n] = 0;
		fputs("@@OUT ", out);
		put_escaped(out, (unsigned char *)line, n);
		fputc('\n', out);
	}
	if (in)
		fclose(in);
	int status = 0;
	pid_t r;
	/* pid 1 also reaps orphans here; keep waiting until our own child is seen */
	while ((r = waitpid(-1, &status, 0)) != pid) {
		if (r < 0 && errno != EINTR) {
			status = 255 << 8;
			break;
		}
	}
	fprintf(out, "@@EXIT %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	fflush(out);
}

static void reap(int sig)
{
	(void)sig;
}

static int serve(const char *dev)
{
	int fd = open(dev, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "labworker: cannot open %s: %s\n", dev, strerror(errno));
		return 1;
	}
	struct termios t;
	if (tcgetattr(fd, &t) == 0) {
		cfmakeraw(&t);
		cfsetispeed(&t, B115200);
		cfsetospeed(&t, B115200);
		tcsetattr(fd, TCSANOW, &t);
	}
	FILE *out = fdopen(fd, "w");
	FILE *in = fdopen(dup(fd), "r");
	if (!out || !in)
		return 1;
	emit_truth(out);
	fputs("@@READY\n", out);
	fflush(out);
	static char line[MAX_LINE];
	for (;;) {
		if (!fgets(line, sizeof line, in)) {
			if (ferror(in) && errno == EINTR) {
				clearerr(in);
				continue;
			}
			clearerr(in);
			sleep(1);
			continue;
		}
		size_t n = strcspn(line, "\r\n");
		line[n] = 0;
		/* collect orphans that died meanwhile */
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		if (strcmp(line, "truth") == 0) {
			emit_truth(out);
		} else if (strncmp(line, "sh ", 3) == 0) {
			run_shell(out, line + 3);
		} else if (strcmp(line, "poweroff") == 0) {
			fputs("@@BYE\n", out);
			fflush(out);
			sync();
			reboot(RB_POWER_OFF);
			reboot(RB_AUTOBOOT); /* with -no-reboot this exits QEMU too */
		} else if (n > 0) {
			fputs("@@ERR unknown-command\n", out);
		}
		fflush(out);
	}
}

/* The lab channel: labchannel=/dev/NAME on the kernel command line, else /dev/ttyS1. */
static const char *channel_device(void)
{
	static char buf[4096];
	static char dev[64];
	if (read_file("/proc/cmdline", buf, sizeof buf) <= 0)
		return "/dev/ttyS1";
	for (char *p = buf; (p = strstr(p, "labchannel=/dev/")) != NULL; p++) {
		if (p != buf && p[-1] != ' ')
			continue;
		p += strlen("labchannel=");
		size_t n = strcspn(p, " \n");
		if (n < sizeof dev && !memchr(p, '.', n)) {
			memcpy(dev, p, n);
			dev[n] = 0;
			return dev;
		}
	}
	return "/dev/ttyS1";
}

static void init_main(void)
{
	mkdir("/proc", 0555);
	mkdir("/sys", 0555);
	mkdir("/dev", 0755);
	mkdir("/tmp", 01777);
	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	mount("tmpfs", "/tmp", "tmpfs", 0, NULL);
	write_file("/proc/sys/kernel/kptr_restrict", "0\n");

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = reap;
	/* an orphan dying while a shell command's output is read must not cut the read
	 * short: without SA_RESTART fgets() saw EINTR as the end and the output was lost */
	sa.sa_flags = SA_RESTART;
	sigaction(SIGCHLD, &sa, NULL);

	printf("lab: running scenario\n");
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		execl("/bin/sh", "sh", "/lab/boot.sh", (char *)NULL);
		_exit(127);
	}
	int status = 0;
	pid_t r;
	while ((r = waitpid(-1, &status, 0)) != pid)
		if (r < 0 && errno != EINTR)
			break;
	printf("lab: scenario finished with status %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	printf("lab: READY\n");
	fflush(stdout);
	serve(channel_device());
	sleep_forever();
}

/*
 * bpf MODE: eBPF programs loaded and attached with the raw bpf() syscall, each two
 * hand-written instructions ("r0 = IMM; exit": IMM differs, and so do the tags).
 */
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

static long bpf_call(int cmd, union bpf_attr *attr)
{
	return syscall(__NR_bpf, cmd, attr, sizeof *attr);
}

static int bpf_load(__u32 type, const char *name, int imm)
{
	struct bpf_insn insns[2];
	static char log[4096];
	union bpf_attr attr;
	memset(insns, 0, sizeof insns);
	insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
	insns[0].dst_reg = BPF_REG_0;
	insns[0].imm = imm;
	insns[1].code = BPF_JMP | BPF_EXIT;
	memset(&attr, 0, sizeof attr);
	attr.prog_type = type;
	attr.insns = (__u64)(unsigned long)insns;
	attr.insn_cnt = 2;
	attr.license = (__u64)(unsigned long)"GPL";
	attr.log_buf = (__u64)(unsigned long)log;
	attr.log_size = sizeof log;
	attr.log_level = 1;
	snprintf(attr.prog_name, sizeof attr.prog_name, "%s", name);
	int fd = (int)bpf_call(BPF_PROG_LOAD, &attr);
	if (fd < 0)
		fprintf(stderr, "bpf: loading %s: %s\n%s\n", name, strerror(errno), log);
	return fd;
}

static int bpf_report(const char *kind, int fd)
{
	struct bpf_prog_info info;
	union bpf_attr attr;
	memset(&info, 0, sizeof info);
	memset(&attr, 0, sizeof attr);
	attr.info.bpf_fd = (__u32)fd;
	attr.info.info_len = sizeof info;
	attr.info.info = (__u64)(unsigned long)&info;
	if (bpf_call(BPF_OBJ_GET_INFO_BY_FD, &attr) != 0) {
		fprintf(stderr, "bpf: info of %s: %s\n", kind, strerror(errno));
		return -1;
	}
	printf("bpf kind=%s id=%u tag=", kind, info.id);
	for (int i = 0; i < BPF_TAG_SIZE; i++)
		printf("%02x", info.tag[i]);
	printf(" type=%u fd=%d\n", info.type, fd);
	return 0;
}

static int lab_bpf(const char *mode)
{
	if (strcmp(mode, "all") != 0) {
		fprintf(stderr, "bpf: unknown mode %s\n", mode);
		return 2;
	}
	/* a kprobe program on __x64_sys_getuid through a kprobe perf event */
	int kp = bpf_load(BPF_PROG_TYPE_KPROBE, "vmi_bpf_kprobe", 1);
	char type[32];
	if (kp < 0 || read_file("/sys/bus/event_source/devices/kprobe/type", type, sizeof type) <= 0)
		return 1;
	struct perf_event_attr pa;
	memset(&pa, 0, sizeof pa);
	pa.size = sizeof pa;
	pa.type = (__u32)strtoul(type, NULL, 10);
	pa.config1 = (__u64)(unsigned long)"__x64_sys_getuid"; /* kprobe_func */
	pa.sample_period = 1;
	pa.wakeup_events = 1;
	int ev = (int)syscall(__NR_perf_event_open, &pa, -1, 0, -1, PERF_FLAG_FD_CLOEXEC);
	if (ev < 0 || ioctl(ev, PERF_EVENT_IOC_SET_BPF, kp) != 0 ||
	    ioctl(ev, PERF_EVENT_IOC_ENABLE, 0) != 0) {
		fprintf(stderr, "bpf: kprobe perf event: %s\n", strerror(errno));
		return 1;
	}
	/* a raw tracepoint program on sched_process_exec (a bpf_raw_tp_link) */
	int rt = bpf_load(BPF_PROG_TYPE_RAW_TRACEPOINT, "vmi_bpf_rawtp", 2);
	union bpf_attr attr;
	memset(&attr, 0, sizeof attr);
	attr.raw_tracepoint.name = (__u64)(unsigned long)"sched_process_exec";
	attr.raw_tracepoint.prog_fd = (__u32)rt;
	int link = rt < 0 ? -1 : (int)bpf_call(BPF_RAW_TRACEPOINT_OPEN, &attr);
	if (link < 0) {
		fprintf(stderr, "bpf: raw tracepoint: %s\n", strerror(errno));
		return 1;
	}
	/* a socket filter on a UDP socket: listed, not a hook */
	int sf = bpf_load(BPF_PROG_TYPE_SOCKET_FILTER, "vmi_bpf_filter", 3);
	int sock = socket(AF_INET, SOCK_DGRAM, 0);
	if (sf < 0 || sock < 0 || setsockopt(sock, SOL_SOCKET, SO_ATTACH_BPF, &sf, sizeof sf) != 0) {
		fprintf(stderr, "bpf: socket filter: %s\n", strerror(errno));
		return 1;
	}
	/* a kprobe program on __x64_sys_getgid through a BPF link to a perf event */
	int kl = bpf_load(BPF_PROG_TYPE_KPROBE, "vmi_bpf_kplink", 4);
	pa.config1 = (__u64)(unsigned long)"__x64_sys_getgid";
	int ev2 = (int)syscall(__NR_perf_event_open, &pa, -1, 0, -1, PERF_FLAG_FD_CLOEXEC);
	memset(&attr, 0, sizeof attr);
	attr.link_create.prog_fd = (__u32)kl;
	attr.link_create.target_fd = (__u32)ev2;
	attr.link_create.attach_type = BPF_PERF_EVENT;
	int plink = kl < 0 || ev2 < 0 ? -1 : (int)bpf_call(BPF_LINK_CREATE, &attr);
	if (plink < 0) {
		fprintf(stderr, "bpf: perf event link: %s\n", strerror(errno));
		return 1;
	}
	getuid(); /* the kprobes run */
	getgid();
	if (bpf_report("kprobe", kp) || bpf_report("raw_tracepoint", rt) ||
	    bpf_report("socket_filter", sf) || bpf_report("kprobe_link", kl))
		return 1;
	printf("bpf ready pid=%d perf_fd=%d link_fd=%d\n", (int)getpid(), ev, link);
	fflush(stdout);
	sleep_forever();
	return 0;
}

/*
 * packet-filter: a passive backdoor's sockets, as BPFDoor holds them, and the other
 * families beside them. An AF_PACKET SOCK_RAW socket (ETH_P_ALL) with a classic BPF
 * filter (SO_ATTACH_FILTER) that passes only IPv4 UDP whose payload starts 0x7255 (the
 * magic packet), a raw IPv4 UDP socket with an eBPF socket filter (SO_ATTACH_BPF), a
 * unix stream socket listening on a path, a unix datagram socket bound to an abstract
 * name, and a netlink route socket.
 */
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/netlink.h>
#include <sys/un.h>

static const struct sock_filter magic_filter[] = {
	{ BPF_LD | BPF_H | BPF_ABS, 0, 0, 12 },           /* (000) ldh [12] */
	{ BPF_JMP | BPF_JEQ | BPF_K, 0, 7, 0x0800 },      /* (001) jeq #0x800 jt 2 jf 9 */
	{ BPF_LD | BPF_B | BPF_ABS, 0, 0, 23 },           /* (002) ldb [23] */
	{ BPF_JMP | BPF_JEQ | BPF_K, 0, 5, 17 },          /* (003) jeq #0x11 jt 4 jf 9 */
	{ BPF_LD | BPF_H | BPF_ABS, 0, 0, 20 },           /* (004) ldh [20] */
	{ BPF_JMP | BPF_JSET | BPF_K, 3, 0, 0x1fff },     /* (005) jset #0x1fff jt 9 jf 6 */
	{ BPF_LDX | BPF_B | BPF_MSH, 0, 0, 14 },          /* (006) ldxb 4*([14]&0xf) */
	{ BPF_LD | BPF_H | BPF_IND, 0, 0, 22 },           /* (007) ldh [x + 22] */
	{ BPF_JMP | BPF_JEQ | BPF_K, 1, 0, 0x7255 },      /* (008) jeq #0x7255 jt 10 jf 9 */
	{ BPF_RET | BPF_K, 0, 0, 0 },                     /* (009) ret #0 */
	{ BPF_RET | BPF_K, 0, 0, 0x40000 },               /* (010) ret #262144 */
};

static int packet_filter(const char *comm)
{
	struct sock_fprog prog = {
		.len = sizeof magic_filter / sizeof magic_filter[0],
		.filter = (struct sock_filter *)magic_filter,
	};
	int pkt = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	if (pkt < 0 || setsockopt(pkt, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0) {
		fprintf(stderr, "packet-filter: packet socket: %s\n", strerror(errno));
		return 1;
	}
	int sf = bpf_load(BPF_PROG_TYPE_SOCKET_FILTER, "vmi_raw_filter", 0);
	int raw = socket(AF_INET, SOCK_RAW, IPPROTO_UDP);
	if (sf < 0 || raw < 0 || setsockopt(raw, SOL_SOCKET, SO_ATTACH_BPF, &sf, sizeof sf) != 0) {
		fprintf(stderr, "packet-filter: raw socket: %s\n", strerror(errno));
		return 1;
	}
	struct sockaddr_un un;
	memset(&un, 0, sizeof un);
	un.sun_family = AF_UNIX;
	snprintf(un.sun_path, sizeof un.sun_path, "/tmp/lab-pf.sock");
	unlink(un.sun_path);
	int path = socket(AF_UNIX, SOCK_STREAM, 0);
	if (path < 0 || bind(path, (struct sockaddr *)&un, sizeof un) != 0 || listen(path, 1) != 0) {
		fprintf(stderr, "packet-filter: unix path: %s\n", strerror(errno));
		return 1;
	}
	static const char abstract[] = "lab-pf-abstract";
	memset(&un, 0, sizeof un);
	un.sun_family = AF_UNIX;
	memcpy(un.sun_path + 1, abstract, sizeof abstract - 1);
	socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + sizeof abstract - 1);
	int abs_fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (abs_fd < 0 || bind(abs_fd, (struct sockaddr *)&un, alen) != 0) {
		fprintf(stderr, "packet-filter: unix abstract: %s\n", strerror(errno));
		return 1;
	}
	struct sockaddr_nl nl;
	memset(&nl, 0, sizeof nl);
	nl.nl_family = AF_NETLINK;
	int nlfd = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	if (nlfd < 0 || bind(nlfd, (struct sockaddr *)&nl, sizeof nl) != 0) {
		fprintf(stderr, "packet-filter: netlink: %s\n", strerror(errno));
		return 1;
	}
	if (comm)
		prctl(PR_SET_NAME, comm, 0, 0, 0);
	if (bpf_report("raw_filter", sf))
		return 1;
	printf("packet-filter ready pid=%d packet=%d raw=%d unix=%d abstract=%d netlink=%d\n",
	       (int)getpid(), pkt, raw, path, abs_fd, nlfd);
	fflush(stdout);
	sleep_forever();
	return 0;
}

/*
 * inject: the malfind check's case. Shellcode-like bytes (exit(0) through the syscall
 * instruction, then a marker) in anonymous memory that is writable and executable,
 * and a second copy in anonymous memory written and then made read-only executable.
 */
#include <sys/mman.h>

static const unsigned char inject_code[] = {
	0x48, 0x31, 0xc0,             /* xor rax, rax */
	0x48, 0x31, 0xff,             /* xor rdi, rdi */
	0xb0, 0x3c,                   /* mov al, 60 (exit) */
	0x0f, 0x05,                   /* syscall */
	'V', 'M', 'I', '-', 'I', 'N', 'J', 'E', 'C', 'T', 'E', 'D',
	0x90, 0x90, 0xcc, 0xc3,       /* nop; nop; int3; ret */
};

static void inject_hex(const char *key, const unsigned char *p)
{
	printf(" %s=", key);
	for (int i = 0; i < 64; i++)
		printf("%02x", p[i]);
}

static int inject(void)
{
	long page = sysconf(_SC_PAGESIZE);
	unsigned char *rwx = mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE | PROT_EXEC,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	unsigned char *rx = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (rwx == MAP_FAILED || rx == MAP_FAILED) {
		perror("inject: mmap");
		return 1;
	}
	memcpy(rwx, inject_code, sizeof inject_code);
	memcpy(rx, inject_code, sizeof inject_code);
	memcpy(rx + 10, "VMI-UNPACKED", 12);
	if (mprotect(rx, (size_t)page, PROT_READ | PROT_EXEC) != 0) {
		perror("inject: mprotect");
		return 1;
	}
	printf("inject rwx=%lx rx=%lx", (unsigned long)rwx, (unsigned long)rx);
	inject_hex("rwx_head", rwx);
	inject_hex("rx_head", rx);
	printf("\n");
	fflush(stdout);
	sleep_forever();
	return 0;
}

/*
 * The exec-location check's cases: programs and libraries that run from a memfd, from
 * a deleted file or from a world-writable directory. The worker is static, so a
 * "library" is a copy of its own image mapped as a loader maps text.
 */
extern char **environ;

/* Copy /proc/self/exe to the open file fd: 0, or -1 with errno. */
static int copy_self(int fd)
{
	int in = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return -1;
	char buf[65536];
	ssize_t n;
	while ((n = read(in, buf, sizeof buf)) > 0) {
		for (ssize_t done = 0; done < n;) {
			ssize_t w = write(fd, buf + done, (size_t)(n - done));
			if (w <= 0) {
				close(in);
				return -1;
			}
			done += w;
		}
	}
	close(in);
	return n < 0 ? -1 : 0;
}

/* A copy of its own image at path, closed (so it can be executed): 0 or -1. */
static int copy_self_to(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
	if (fd < 0 || copy_self(fd) != 0) {
		perror(path);
		return -1;
	}
	return close(fd);
}

static int memfd_exec(const char *name)
{
	int fd = memfd_create(name, MFD_CLOEXEC);
	if (fd < 0 || copy_self(fd) != 0) {
		perror("memfd-exec");
		return 1;
	}
	char *args[] = {(char *)name, "sleep", NULL};
	fexecve(fd, args, environ);
	perror("memfd-exec: fexecve");
	return 1;
}

static int drop(const char *dir, const char *file, const char *comm)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, file);
	if (copy_self_to(path) != 0)
		return 1;
	char *args[] = {path, "drop-run", (char *)comm, NULL};
	execv(path, args);
	perror("drop: execv");
	return 1;
}

/* The dropped image: delete itself, take another name, stay. */
static int drop_run(const char *self, const char *comm)
{
	if (unlink(self) != 0) {
		perror("drop-run: unlink");
		return 1;
	}
	if (comm)
		prctl(PR_SET_NAME, comm, 0, 0, 0);
	printf("drop ready pid=%d\n", (int)getpid());
	fflush(stdout);
	sleep_forever();
	return 0;
}

/* A page of fd mapped read + execute, as a loader maps a library's text. */
static void *map_text(int fd, const char *what)
{
	void *p = mmap(NULL, (size_t)sysconf(_SC_PAGESIZE), PROT_READ | PROT_EXEC, MAP_PRIVATE,
		       fd, 0);
	if (p == MAP_FAILED) {
		perror(what);
		return NULL;
	}
	return p;
}

static void *map_copy(const char *path)
{
	if (copy_self_to(path) != 0)
		return NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		perror(path);
		return NULL;
	}
	void *p = map_text(fd, path);
	close(fd);
	return p;
}

static int maplib(const char *keep, const char *gone, const char *memfd)
{
	void *k = map_copy(keep);
	void *g = map_copy(gone);
	int fd = memfd_create(memfd, MFD_CLOEXEC);
	if (fd < 0 || copy_self(fd) != 0) {
		perror("maplib: memfd");
		return 1;
	}
	void *m = map_text(fd, "maplib: memfd");
	close(fd);
	if (!k || !g || !m || unlink(gone) != 0) {
		perror("maplib");
		return 1;
	}
	printf("maplib keep=%lx gone=%lx memfd=%lx\n", (unsigned long)k, (unsigned long)g,
	       (unsigned long)m);
	fflush(stdout);
	sleep_forever();
	return 0;
}

/*
 * ptrace and io_uring: a process that holds others traced (an injector's grip), and
 * io_uring instances (Curing's channel, invisible to system-call monitors).
 */
#include <sys/ptrace.h>
#include <linux/io_uring.h>

static int lab_ptrace(void)
{
	pid_t seized = fork();
	if (seized == 0)
		sleep_forever();
	int fds[2];
	if (seized < 0 || pipe(fds) != 0) {
		perror("ptrace: fork");
		return 1;
	}
	pid_t middle = fork();
	if (middle == 0) {
		pid_t g = fork();
		if (g == 0)
			sleep_forever();
		if (write(fds[1], &g, sizeof g) != sizeof g)
			_exit(1);
		sleep_forever();
	}
	pid_t attached = -1;
	if (middle < 0 || read(fds[0], &attached, sizeof attached) != sizeof attached ||
	    attached <= 0) {
		perror("ptrace: grandchild");
		return 1;
	}
	if (ptrace(PTRACE_SEIZE, seized, NULL, NULL) != 0) {
		perror("ptrace: PTRACE_SEIZE");
		return 1;
	}
	if (ptrace(PTRACE_ATTACH, attached, NULL, NULL) != 0) {
		perror("ptrace: PTRACE_ATTACH");
		return 1;
	}
	int status;
	waitpid(attached, &status, __WALL);
	printf("ptrace ready tracer=%d seized=%d attached=%d\n", (int)getpid(), (int)seized,
	       (int)attached);
	fflush(stdout);
	sleep_forever();
	return 0;
}

static int uring(unsigned flags, struct io_uring_params *p)
{
	memset(p, 0, sizeof *p);
	p->flags = flags;
	p->sq_thread_idle = 60000;
	long fd = syscall(__NR_io_uring_setup, 8, p);
	if (fd < 0)
		perror("iouring: io_uring_setup");
	return fd < 0 ? 0 : (int)fd;
}

static int lab_iouring(int sqpoll)
{
	struct io_uring_params p, q;
	int fd = uring(0, &p);
	if (fd <= 0)
		return 1;
	printf("iouring ready pid=%d fd=%d sq=%u cq=%u", (int)getpid(), fd, p.sq_entries,
	       p.cq_entries);
	if (sqpoll)
		printf(" sqpoll_fd=%d", uring(IORING_SETUP_SQPOLL, &q));
	printf("\n");
	fflush(stdout);
	sleep_forever();
	return 0;
}

int main(int argc, char **argv)
{
	const char *base = strrchr(argv[0], '/');
	base = base ? base + 1 : argv[0];
	if (getpid() == 1 || strcmp(base, "init") == 0) {
		init_main();
		return 0;
	}
	if (argc < 2) {
		fprintf(stderr, "usage: %s sleep|threads N|chain N|setuid UID|spawn N|truth|cpubench ROUNDS N|churn PER_SEC|spoof-comm NAME|spoof-argv NAME|udp PORT|inject|bpf all|memfd-exec NAME|drop DIR FILE [COMM]|maplib KEEP GONE MEMFD|packet-filter [COMM]|ptrace|iouring [sqpoll]\n", base);
		return 2;
	}
	const char *mode = argv[1];
	long n = argc > 2 ? strtol(argv[2], NULL, 10) : 0;
	if (strcmp(mode, "sleep") == 0) {
		sleep_forever();
	} else if (strcmp(mode, "threads") == 0) {
		for (long i = 1; i < n; i++) {
			pthread_t t;
			pthread_create(&t, NULL, thread_main, NULL);
		}
		sleep_forever();
	} else if (strcmp(mode, "chain") == 0) {
		for (long depth = 1; depth < n; depth++) {
			pid_t pid = fork();
			if (pid != 0)
				sleep_forever(); /* parent (or fork failure) stays here */
		}
		sleep_forever();
	} else if (strcmp(mode, "setuid") == 0) {
		if (setgid((gid_t)n) != 0 || setuid((uid_t)n) != 0) {
			perror("setuid");
			return 1;
		}
		sleep_forever();
	} else if (strcmp(mode, "spawn") == 0) {
		/* a child killed by a test is reaped by the kernel, not left a zombie */
		signal(SIGCHLD, SIG_IGN);
		for (long i = 0; i < n; i++) {
			pid_t pid = fork();
			if (pid == 0)
				sleep_forever();
			if (pid < 0) {
				perror("fork");
				break;
			}
		}
		sleep_forever();
	} else if (strcmp(mode, "truth") == 0) {
		emit_truth(stdout);
		return 0;
	} else if (strcmp(mode, "cpubench") == 0) {
		return cpubench(n, argc > 3 ? strtol(argv[3], NULL, 10) : 0);
	} else if (strcmp(mode, "churn") == 0) {
		churn(n);
		return 0;
	} else if (strcmp(mode, "udp") == 0) {
		int fd = socket(AF_INET, SOCK_DGRAM, 0);
		struct sockaddr_in sin;
		memset(&sin, 0, sizeof sin);
		sin.sin_family = AF_INET;
		sin.sin_port = htons((unsigned short)n);
		if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
			perror("udp");
			return 1;
		}
		sleep_forever();
	} else if (strcmp(mode, "bpf") == 0 && argc > 2) {
		return lab_bpf(argv[2]);
	} else if (strcmp(mode, "inject") == 0) {
		return inject();
	} else if (strcmp(mode, "ptrace") == 0) {
		return lab_ptrace();
	} else if (strcmp(mode, "iouring") == 0) {
		return lab_iouring(argc > 2 && strcmp(argv[2], "sqpoll") == 0);
	} else if (strcmp(mode, "packet-filter") == 0) {
		return packet_filter(argc > 2 ? argv[2] : NULL);
	} else if (strcmp(mode, "memfd-exec") == 0 && argc > 2) {
		return memfd_exec(argv[2]);
	} else if (strcmp(mode, "drop") == 0 && argc > 3) {
		return drop(argv[2], argv[3], argc > 4 ? argv[4] : NULL);
	} else if (strcmp(mode, "drop-run") == 0) {
		return drop_run(argv[0], argc > 2 ? argv[2] : NULL);
	} else if (strcmp(mode, "maplib") == 0 && argc > 4) {
		return maplib(argv[2], argv[3], argv[4]);
	} else if (strcmp(mode, "spoof-comm") == 0 && argc > 2) {
		/* process spoofing: rename itself (comm) without exec */
		prctl(PR_SET_NAME, argv[2], 0, 0, 0);
		sleep_forever();
	} else if (strcmp(mode, "spoof-argv") == 0 && argc > 2) {
		/* process spoofing: overwrite the argument area (setproctitle-style) with
		 * argv[2], padded with NULs; comm stays */
		char name[256];
		snprintf(name, sizeof name, "%s", argv[2]);
		char *start = argv[0];
		char *end = argv[argc - 1] + strlen(argv[argc - 1]) + 1;
		size_t room = (size_t)(end - start);
		memset(start, 0, room);
		memcpy(start, name, strlen(name) < room ? strlen(name) : room - 1);
		sleep_forever();
	}
	fprintf(stderr, "%s: unknown mode %s\n", base, mode);
	return 2;
}
