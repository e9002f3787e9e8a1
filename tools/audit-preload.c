/*
 * tools/audit-preload.c - the half of ckpt-audit that runs inside the audited
 * program (libckpt-audit.so, loaded with LD_PRELOAD by ckpt-audit(1)).
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * It starts tracking from its constructor (or after a delay), and a sampling
 * thread reads the live dirty set every interval.  Pages in the set that no
 * earlier sample held were first written in that interval; they are written,
 * as text lines, to a file of their own in the directory ckpt-audit names in
 * CKPT_AUDIT_DIR.  The launcher does all the counting and formatting after
 * the program ended, so a program that dies by _exit or a signal still leaves
 * every interval up to its last sample.
 *
 * The file, one record a line (addresses in hex, times in ns since tracking
 * began):
 *     ckpt-audit-samples 1
 *     P pid PID ppid PPID how start|fork|exec
 *     P pagesize N interval_ms N backend mprotect|uffd
 *     P exe PATH
 *     P cmd ARGV joined by spaces
 *     M ID NAME                    a mapping name, before its first use
 *     N SAMPLE START NPAGES ID     pages first seen by sample SAMPLE
 *     S SAMPLE T_NS                sample SAMPLE taken at T_NS
 *     E SAMPLE T_NS TRACKED PINNED the program called exit (last sample)
 *     X MESSAGE                    tracking failed or stopped; why
 *
 * Rules, so that the program runs as it would without the tool:
 *   - nothing on its stdout or stderr, never a change of exit status;
 *   - every descriptor opened here is O_CLOEXEC;
 *   - LD_PRELOAD's entry and the CKPT_AUDIT_* variables leave the
 *     environment in the constructor, before main, unless CKPT_AUDIT_FOLLOW
 *     asks for children to be tracked too; then a fork child starts a section
 *     of its own, and a program it executes loads this library again;
 *   - what this file writes while the program is tracked is ckpt's own
 *     memory (this library's data, which embeds libckpt, is ckpt's), an
 *     excluded mapping (the sample buffers), or the sampling thread's stack,
 *     which ckpt never tracks: the report shows the program, not the audit.
 */
#include <ckpt.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The sample buffers: reserved once, touched as needed, excluded whole.
 * MAP_NORESERVE: pages never touched cost nothing. */
#define ARENA_BYTES ((size_t)192 << 20)
#define MAX_RUNS    ((size_t)2 << 20) /* per array: 3 arrays of 16-24 bytes */
#define MAX_NAMES   8192
#define NAME_BYTES  ((size_t)2 << 20)
#define OUT_BYTES   ((size_t)1 << 20)
#define HASH_SLOTS  16384

struct span {
	uintptr_t lo, hi;
};

struct cur_run {
	uintptr_t lo, hi;
	uint32_t name;
};

struct arena {
	struct span *seen, *seen2; /* every page written so far, coalesced */
	struct cur_run *cur;	   /* the live set of this sample */
	char *names;		   /* NUL-terminated names, back to back */
	uint32_t *name_off;	   /* offset of each name in `names` */
	int32_t *hash;		   /* name hash -> index + 1 */
	char *out;		   /* text waiting to be written */
};

static struct {
	ckpt_t *c;
	struct arena a;
	void *base;
	int fd;
	int follow;
	int active;  /* this process writes samples */
	int tracked; /* ckpt_begin succeeded in this process */
	int stop;    /* no sample after the final one */
	int overflow;
	pid_t pid;
	unsigned interval_ms, delay_ms;
	size_t ps;
	size_t nseen, ncur, nnames, names_used, out_len;
	uint64_t sample;
	struct timespec t0;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t started; /* A.tracked or A.stop set */
	int running;		/* the sampling thread runs */
	int atfork_done;
	char dir[PATH_MAX];
	char self[PATH_MAX]; /* this library's path, as LD_PRELOAD names it */
} A = {.fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER, .started = PTHREAD_COND_INITIALIZER};

static void register_atfork(void);
static int start_thread(void);

/* ---- output -------------------------------------------------------------- */

static void flush_out(void)
{
	size_t off = 0;
	while (off < A.out_len) {
		ssize_t n = write(A.fd, A.a.out + off, A.out_len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	A.out_len = 0;
}

__attribute__((format(printf, 1, 2))) static void emit(const char *fmt, ...)
{
	if (A.fd < 0)
		return;
	if (A.out_len > OUT_BYTES - 8192)
		flush_out();
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(A.a.out + A.out_len, OUT_BYTES - A.out_len, fmt, ap);
	va_end(ap);
	if (n > 0)
		A.out_len += (size_t)n < OUT_BYTES - A.out_len ? (size_t)n : OUT_BYTES - A.out_len - 1;
}

static uint64_t since_t0(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)(now.tv_sec - A.t0.tv_sec) * 1000000000u + (uint64_t)now.tv_nsec -
	       (uint64_t)A.t0.tv_nsec;
}

/* ---- mapping names ------------------------------------------------------- */

static uint32_t name_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

/* The index of `name`, announced with an M record the first time. */
static uint32_t intern(const char *name)
{
	if (!name[0])
		name = "[anon]";
	uint32_t h = name_hash(name);
	for (uint32_t i = h % HASH_SLOTS;; i = (i + 1) % HASH_SLOTS) {
		int32_t e = A.a.hash[i];
		if (e == 0)
			break;
		if (!strcmp(A.a.names + A.a.name_off[e - 1], name))
			return (uint32_t)(e - 1);
	}
	size_t len = strlen(name) + 1;
	if (A.nnames == MAX_NAMES || A.names_used + len > NAME_BYTES) {
		/* Counted under the first name; the file says it overflowed. */
		A.overflow = 1;
		return 0;
	}
	uint32_t id = (uint32_t)A.nnames++;
	memcpy(A.a.names + A.names_used, name, len);
	A.a.name_off[id] = (uint32_t)A.names_used;
	A.names_used += len;
	for (uint32_t i = h % HASH_SLOTS;; i = (i + 1) % HASH_SLOTS)
		if (A.a.hash[i] == 0) {
			A.a.hash[i] = (int32_t)id + 1;
			break;
		}
	/* Names come from /proc/self/maps, where a newline is escaped. */
	emit("M %u %s\n", id, name);
	return id;
}

/* ---- sampling ------------------------------------------------------------ */

static int keep_run(const ckpt_page_run *r, void *arg)
{
	(void)arg;
	if (A.ncur == MAX_RUNS) {
		A.overflow = 1;
		return 1;
	}
	A.a.cur[A.ncur++] =
		(struct cur_run){r->start, r->start + r->npages * A.ps, intern(r->mapping)};
	return 0;
}

/* Takes one sample: the pages of the live set outside `seen` are reported
 * as first written in it, and join `seen`.  Called with A.lock held. */
static void take_sample(void)
{
	size_t ps = A.ps;
	A.ncur = 0;
	A.sample++;
	int rc = ckpt_dirty_foreach(A.c, keep_run, NULL);
	uint64_t t = since_t0();
	if (rc < 0)
		emit("X ckpt_dirty_foreach: %s (%s)\n", ckpt_strerror(rc), ckpt_last_error());
	/* cur minus seen (both sorted, seen coalesced), merged into seen2. */
	size_t j = 0, n2 = 0;
	struct span *s = A.a.seen, *s2 = A.a.seen2;
#define PUSH(l, h)                                                        \
	do {                                                              \
		if (n2 && s2[n2 - 1].hi >= (l)) {                          \
			if ((h) > s2[n2 - 1].hi)                          \
				s2[n2 - 1].hi = (h);                      \
		} else if (n2 < MAX_RUNS) {                               \
			s2[n2++] = (struct span){(l), (h)};               \
		} else {                                                  \
			A.overflow = 1;                                   \
		}                                                         \
	} while (0)
	for (size_t i = 0; i < A.ncur; i++) {
		uintptr_t p = A.a.cur[i].lo, e = A.a.cur[i].hi;
		while (j < A.nseen && s[j].hi <= p) {
			PUSH(s[j].lo, s[j].hi);
			j++;
		}
		while (p < e) {
			if (j < A.nseen && s[j].lo <= p) {
				/* Seen already: skip to the end of that span. */
				p = s[j].hi < e ? s[j].hi : e;
				if (s[j].hi <= e) {
					PUSH(s[j].lo, s[j].hi);
					j++;
				}
				continue;
			}
			uintptr_t stop = (j < A.nseen && s[j].lo < e) ? s[j].lo : e;
			emit("N %llu %lx %zu %u\n", (unsigned long long)A.sample, (unsigned long)p,
			     (size_t)(stop - p) / ps, A.a.cur[i].name);
			PUSH(p, stop);
			p = stop;
		}
	}
	for (; j < A.nseen; j++)
		PUSH(s[j].lo, s[j].hi);
#undef PUSH
	A.a.seen = s2;
	A.a.seen2 = s;
	A.nseen = n2;
	emit("S %llu %llu\n", (unsigned long long)A.sample, (unsigned long long)t);
	if (A.overflow) {
		emit("X too many runs or mappings for the sample buffers: later samples are incomplete\n");
		A.overflow = 0;
	}
	flush_out();
}

/* Starts tracking this process and says so in its file.  A.lock held. */
static void start_tracking(void)
{
	int rc = ckpt_begin(A.c);
	if (rc < 0) {
		emit("X ckpt_begin: %s (%s)\n", ckpt_strerror(rc), ckpt_last_error());
		flush_out();
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &A.t0);
	A.tracked = 1;
	ckpt_stats st;
	const char *be = "?";
	if (ckpt_stats(A.c, &st) == 0)
		be = st.backend == CKPT_BACKEND_UFFD ? "uffd" : st.backend == CKPT_BACKEND_MPROTECT ? "mprotect" : "?";
	emit("P pagesize %zu interval_ms %u backend %s start_ns %llu\n", A.ps, A.interval_ms, be,
	     (unsigned long long)A.t0.tv_sec * 1000000000u + (unsigned long long)A.t0.tv_nsec);
	flush_out();
}

static void *sampler(void *arg)
{
	(void)arg;
	struct timespec next;
	__atomic_store_n(&A.running, 1, __ATOMIC_RELEASE);
	clock_gettime(CLOCK_MONOTONIC, &next);
	if (!A.delay_ms) {
		/* The thread that started this one begins the tracking. */
		pthread_mutex_lock(&A.lock);
		while (!A.tracked && !A.stop)
			pthread_cond_wait(&A.started, &A.lock);
		pthread_mutex_unlock(&A.lock);
	} else {
		next.tv_sec += A.delay_ms / 1000;
		next.tv_nsec += (long)(A.delay_ms % 1000) * 1000000L;
		if (next.tv_nsec >= 1000000000L) {
			next.tv_sec++;
			next.tv_nsec -= 1000000000L;
		}
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
			;
		pthread_mutex_lock(&A.lock);
		if (!A.stop)
			start_tracking();
		pthread_mutex_unlock(&A.lock);
		if (A.tracked)
			register_atfork();
	}
	for (uint64_t k = 1;; k++) {
		/* Absolute times, so that sample k falls at t0 + k intervals. */
		uint64_t ns = A.t0.tv_nsec + k * (uint64_t)A.interval_ms * 1000000u;
		next.tv_sec = A.t0.tv_sec + (time_t)(ns / 1000000000u);
		next.tv_nsec = (long)(ns % 1000000000u);
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
			;
		pthread_mutex_lock(&A.lock);
		if (A.stop || !A.tracked || !A.active) {
			pthread_mutex_unlock(&A.lock);
			return NULL;
		}
		take_sample();
		pthread_mutex_unlock(&A.lock);
	}
}

/* ---- the process' file ----------------------------------------------------- */

static void open_file(const char *how)
{
	char path[PATH_MAX + 64];
	A.pid = getpid();
	for (unsigned n = 0; n < 1000; n++) {
		snprintf(path, sizeof path, "%s/%d.%u", A.dir, (int)A.pid, n);
		A.fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
		if (A.fd >= 0 || errno != EEXIST)
			break;
		/* A file of this pid already: the program before an exec. */
		if (!strcmp(how, "start"))
			how = "exec";
	}
	if (A.fd < 0)
		return;
	emit("ckpt-audit-samples 1\nP pid %d ppid %d how %s\n", (int)A.pid, (int)getppid(), how);
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	exe[n > 0 ? n : 0] = '\0';
	emit("P exe %s\n", exe);
	/* The command line, NULs made spaces, newlines escaped. */
	int cfd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	char cmd[4096];
	n = cfd >= 0 ? read(cfd, cmd, sizeof cmd - 1) : -1;
	if (cfd >= 0)
		close(cfd);
	if (n > 0) {
		for (ssize_t i = 0; i < n; i++)
			if (cmd[i] == '\0' || cmd[i] == '\n')
				cmd[i] = i == n - 1 ? '\0' : ' ';
		cmd[n] = '\0';
		emit("P cmd %s\n", cmd);
	}
	flush_out();
}

static void reset_samples(void)
{
	A.nseen = A.ncur = A.nnames = A.names_used = A.out_len = 0;
	A.sample = 0;
	memset(A.a.hash, 0, HASH_SLOTS * sizeof *A.a.hash);
}

static int start_thread(void)
{
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	/* The thread must not take signals meant for the program. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(&A.thread, &at, sampler, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&at);
	return rc;
}

/* Starts the sampling thread, then (without a delay) the tracking.  The
 * thread runs before ckpt_begin so that ckpt knows its stack: a thread's
 * stack is left out of tracking once the thread has registered it, which it
 * does before its first instruction; a stack mapped after ckpt_begin and not
 * registered yet would count as 8 MiB the program wrote.  (In a fork child
 * it matters more: glibc hands the parent's sampling-thread stack to the
 * next thread created, which under the mprotect back-end would die on it
 * had ckpt protected it.)  A.lock must not be held. */
static void start_sampling(void)
{
	__atomic_store_n(&A.running, 0, __ATOMIC_RELEASE);
	if (start_thread() != 0) {
		emit("X cannot start the sampling thread\n");
		flush_out();
		return;
	}
	if (A.delay_ms)
		return;
	/* A thread that never runs would leave the program untracked, not
	 * stuck: give up after 5 s. */
	for (int i = 0; i < 5000 && !__atomic_load_n(&A.running, __ATOMIC_ACQUIRE); i++) {
		struct timespec ms = {0, 1000000};
		nanosleep(&ms, NULL);
	}
	pthread_mutex_lock(&A.lock);
	start_tracking();
	if (!A.tracked)
		A.stop = 1;
	pthread_cond_broadcast(&A.started);
	pthread_mutex_unlock(&A.lock);
	if (A.tracked)
		register_atfork();
}

/* ---- fork ---------------------------------------------------------------- */

static void atfork_prepare(void)
{
	pthread_mutex_lock(&A.lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&A.lock);
}

/* The child inherits the tracking and this library's state, but not the
 * sampling thread.  Without --follow it stops tracking and writes nothing;
 * with it, it starts over: a file, an epoch and a thread of its own. */
static void atfork_child(void)
{
	pthread_mutex_unlock(&A.lock);
	if (A.fd >= 0)
		close(A.fd);
	A.fd = -1;
	if (A.tracked)
		ckpt_end(A.c);
	A.tracked = 0;
	if (!A.follow || !A.active) {
		A.active = 0;
		A.stop = 1;
		ckpt_close(A.c);
		A.c = NULL;
		return;
	}
	reset_samples();
	pthread_cond_init(&A.started, NULL);
	open_file("fork");
	A.delay_ms = 0;
	start_sampling();
}

/* After the first ckpt_begin: ckpt registers its own fork handlers there,
 * and they must run in the child before this library's (child handlers run
 * in the order they were registered). */
static void register_atfork(void)
{
	if (!A.atfork_done && pthread_atfork(atfork_prepare, atfork_parent, atfork_child) == 0)
		A.atfork_done = 1;
}

/* ---- constructor and destructor --------------------------------------------- */

/* Removes this library from LD_PRELOAD (other entries stay) and the
 * CKPT_AUDIT_* variables, so that programs this one runs are not audited. */
static void clean_environment(void)
{
	const char *lp = getenv("LD_PRELOAD");
	if (lp) {
		char keep[4096];
		size_t k = 0;
		const char *p = lp;
		while (*p) {
			size_t n = strcspn(p, ": ");
			int mine = n == strlen(A.self) && !strncmp(p, A.self, n);
			if (n && !mine && k + n + 2 < sizeof keep) {
				if (k)
					keep[k++] = ':';
				memcpy(keep + k, p, n);
				k += n;
			}
			p += n;
			p += strspn(p, ": ");
		}
		keep[k] = '\0';
		if (k)
			setenv("LD_PRELOAD", keep, 1);
		else
			unsetenv("LD_PRELOAD");
	}
	unsetenv("CKPT_AUDIT_DIR");
	unsetenv("CKPT_AUDIT_INTERVAL");
	unsetenv("CKPT_AUDIT_DELAY");
	unsetenv("CKPT_AUDIT_FOLLOW");
	unsetenv("CKPT_AUDIT_LIB");
	unsetenv("CKPT_AUDIT_ROOT");
}

static int setup_arena(void)
{
	A.base = mmap(NULL, ARENA_BYTES, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (A.base == MAP_FAILED)
		return -1;
	char *p = A.base;
	A.a.seen = (struct span *)p;
	p += MAX_RUNS * sizeof(struct span);
	A.a.seen2 = (struct span *)p;
	p += MAX_RUNS * sizeof(struct span);
	A.a.cur = (struct cur_run *)p;
	p += MAX_RUNS * sizeof(struct cur_run);
	A.a.names = p;
	p += NAME_BYTES;
	A.a.name_off = (uint32_t *)p;
	p += MAX_NAMES * sizeof(uint32_t);
	A.a.hash = (int32_t *)p;
	p += HASH_SLOTS * sizeof(int32_t);
	A.a.out = p;
	p += OUT_BYTES;
	return (size_t)(p - (char *)A.base) <= ARENA_BYTES ? 0 : -1;
}

__attribute__((constructor)) static void audit_start(void)
{
	const char *dir = getenv("CKPT_AUDIT_DIR");
	if (!dir || !*dir || strlen(dir) >= sizeof A.dir)
		return;
	snprintf(A.dir, sizeof A.dir, "%s", dir);
	const char *v = getenv("CKPT_AUDIT_INTERVAL");
	A.ps = (size_t)sysconf(_SC_PAGESIZE);
	A.interval_ms = v ? (unsigned)strtoul(v, NULL, 10) : 100;
	if (A.interval_ms == 0)
		A.interval_ms = 100;
	v = getenv("CKPT_AUDIT_DELAY");
	A.delay_ms = v ? (unsigned)strtoul(v, NULL, 10) : 0;
	v = getenv("CKPT_AUDIT_FOLLOW");
	A.follow = v && !strcmp(v, "1");
	v = getenv("CKPT_AUDIT_LIB");
	snprintf(A.self, sizeof A.self, "%s", v ? v : "");
	/* Whether this process was started by exec from an audited one. */
	v = getenv("CKPT_AUDIT_ROOT");
	int execd = v && atoi(v) != (int)getpid();
	if (!A.follow)
		clean_environment();

	if (setup_arena() != 0)
		return;
	open_file(execd ? "exec" : "start");
	if (A.fd < 0)
		return;
	int rc = ckpt_open(&A.c, NULL, NULL);
	if (rc == 0)
		rc = ckpt_exclude(A.c, A.base, ARENA_BYTES);
	if (rc < 0) {
		emit("X ckpt_open: %s (%s)\n", ckpt_strerror(rc), ckpt_last_error());
		flush_out();
		return;
	}
	A.active = 1;
	start_sampling();
}

/* exit() (or a return from main), or _exit(): the last, partial interval. */
static void audit_finish(void)
{
	if (!A.active || A.pid != getpid())
		return;
	pthread_mutex_lock(&A.lock);
	if (A.tracked && !A.stop) {
		take_sample();
		ckpt_stats st;
		memset(&st, 0, sizeof st);
		ckpt_stats(A.c, &st);
		emit("E %llu %llu %zu %zu\n", (unsigned long long)A.sample,
		     (unsigned long long)since_t0(), st.tracked_pages, st.pinned_pages);
		flush_out();
	}
	A.stop = 1;
	pthread_mutex_unlock(&A.lock);
}


__attribute__((destructor)) static void audit_destructor(void)
{
	audit_finish();
}

/* _exit and _Exit called by the program (dash, for one, ends that way) take
 * the last sample too.  glibc's own exit() reaches the kernel without them,
 * after the destructor above.  A vfork child calling _exit shares the
 * parent's memory: audit_finish() sees another pid and does nothing. */
__attribute__((visibility("default"), noreturn)) void _exit(int status)
{
	audit_finish();
	for (;;)
		syscall(SYS_exit_group, status);
}

__attribute__((visibility("default"), noreturn)) void _Exit(int status)
{
	_exit(status);
}
