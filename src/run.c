/*
 * run.c - the commit thread of `ckpt run` and its signals (run.h).
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The thread is one of ckpt's own (own-thread.c): glibc does not know it,
 * a commit never records it, and every program thread, the main one
 * included, is stopped while it commits (ckpt__commit_detached).  It sleeps
 * on a futex until the interval ends or a signal handler wakes it.
 *
 * Signals.  For each signal that asks for a commit, ckpt's handler is
 * installed and stays installed; the program's sigaction() and signal()
 * calls for it go to ckpt__run_sigaction_hook, which keeps what the
 * program set as the program's action and answers with it.  The handler
 * (on a program thread, at any instruction: raw system calls and atomics
 * only, errno saved) marks the signal pending and wakes the thread.  After
 * the commit the thread gives the program its own action: nothing for an
 * ignored signal and for SIGUSR1 or SIGUSR2 left at their default (the
 * default would end a program that never asked for them); otherwise the
 * signal is sent to the process again, marked to pass, and the handler
 * that receives it acts as the program said: its handler is called, or the
 * default action is restored and the signal raised again (SIGTERM ends the
 * program after its commit).  A pass and a new signal from outside can
 * coincide; then one of them is taken for the other, as signals of one
 * number coalesce anyway.
 *
 * After a commit, with a `keep` N, the thread folds the chain's older
 * snapshots down to N increments once there are more than 2N
 * (ckpt__compact_held) while the program runs; the next commit waits for
 * it.
 *
 * Status lines (`ckpt run --json`): one JSON object a line, appended to a
 * file that is opened for each line and closed again, so that ckpt holds
 * no descriptor the program could close, reuse or see in its record.
 *
 * The thread's state is in ckpt's own memory (this library's data), which
 * a resume does not restore: the resumed process's thread is its own.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "run.h"
#include "error.h"
#include "futex.h"
#include "interpose.h"
#include "own-thread.h"
#include "threadrec.h"

#include <ckpt.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

CKPT__REAL(int, sigaction, (int, const struct sigaction *, struct sigaction *))

static struct {
	int prepared;
	struct ckpt *c;
	struct ckpt__run_opts o;
	struct ckpt__own_thread th;
	unsigned go;      /* futex word: 1 once the thread may commit */
	unsigned kick;    /* futex word: bumped by the handler */
	uint64_t pending; /* signals received since the last commit, bit sig-1 */
	unsigned pass[65]; /* signals sent again for the program's action */
	struct sigaction prog[65];
	unsigned commits;
	int resumed; /* set by ckpt__run_resumed */
} R = {.o.keep = -1};

static int mine(int sig)
{
	return R.prepared && sig > 0 && sig <= 64 && (R.o.sigs >> (sig - 1) & 1);
}

/* Kernel sigaction for a raw rt_sigaction with the default action. */
static void raw_default(int sig)
{
	struct {
		void *handler;
		unsigned long flags;
		void *restorer;
		uint64_t mask;
	} k = {0};
	ckpt__sys6(SYS_rt_sigaction, sig, (long)&k, 0, 8, 0, 0);
}

/* The program's action for sig, from a handler of ckpt's. */
static void act(int sig, siginfo_t *si, void *uc)
{
	struct sigaction p = R.prog[sig];
	if (!(p.sa_flags & SA_SIGINFO) && p.sa_handler == SIG_IGN)
		return;
	if (!(p.sa_flags & SA_SIGINFO) && p.sa_handler == SIG_DFL) {
		/* Blocked while this handler runs: acted on once it returns. */
		raw_default(sig);
		ckpt__sys6(SYS_tgkill, ckpt__sys3(SYS_getpid, 0, 0, 0), ckpt__raw_gettid(), sig, 0, 0,
			   0);
		return;
	}
	if (p.sa_flags & SA_RESETHAND) {
		memset(&R.prog[sig], 0, sizeof R.prog[sig]);
		R.prog[sig].sa_handler = SIG_DFL;
	}
	if (p.sa_flags & SA_SIGINFO)
		p.sa_sigaction(sig, si, uc);
	else
		p.sa_handler(sig);
}

static void on_signal(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;
	unsigned n = __atomic_load_n(&R.pass[sig], __ATOMIC_ACQUIRE);
	while (n && !__atomic_compare_exchange_n(&R.pass[sig], &n, n - 1, 0, __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE))
		;
	if (n) {
		act(sig, si, uc);
	} else {
		__atomic_or_fetch(&R.pending, 1ull << (sig - 1), __ATOMIC_ACQ_REL);
		__atomic_add_fetch(&R.kick, 1, __ATOMIC_ACQ_REL);
		ckpt__futex_wake(&R.kick, 1);
	}
	if (errno != saved)
		errno = saved;
}

int ckpt__run_sigaction_hook(int sig, const struct sigaction *a, struct sigaction *old)
{
	if (!mine(sig))
		return 0;
	struct sigaction prev = R.prog[sig];
	if (a)
		R.prog[sig] = *a;
	if (old)
		*old = prev;
	return 1;
}

void ckpt__run_forked(void)
{
	if (!R.prepared)
		return;
	for (int sig = 1; sig <= 64; sig++)
		if (mine(sig))
			get_sigaction()(sig, &R.prog[sig], NULL);
	R.prepared = 0;
}

/* Status lines: a buffer filled by put and put_str, appended to the
 * status file by line_end. */
static struct {
	char b[2048];
	size_t n;
} L;

__attribute__((format(printf, 1, 2))) static void put(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(L.b + L.n, sizeof L.b - L.n, fmt, ap);
	va_end(ap);
	if (n > 0)
		L.n = L.n + (size_t)n < sizeof L.b ? L.n + (size_t)n : sizeof L.b - 1;
}

/* s as a JSON string: quotes, backslashes and control characters escaped,
 * a byte outside ASCII as U+FFFD (messages hold paths, any bytes). */
static void put_str(const char *s)
{
	put("\"");
	for (; *s && L.n + 8 < sizeof L.b; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			put("\\%c", ch);
		else if (ch < 0x20 || ch == 0x7f)
			put("\\u%04x", ch);
		else if (ch >= 0x80)
			put("\\ufffd");
		else
			L.b[L.n++] = (char)ch;
	}
	put("\"");
}

static void line_start(const char *event)
{
	L.n = 0;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	put("{\"event\":\"%s\",\"time\":%lld.%03ld,\"pid\":%d", event, (long long)ts.tv_sec,
	    ts.tv_nsec / 1000000, (int)getpid());
}

static void line_end(void)
{
	put("}\n");
	if (!R.o.status[0])
		return;
	int fd = open(R.o.status, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK | O_NOCTTY,
		      0644);
	if (fd < 0)
		return;
	ckpt__raw_write(fd, L.b, L.n);
	close(fd);
}

static void put_error(int rc)
{
	put(",\"error\":\"%s\",\"message\":", ckpt_err_name(rc));
	put_str(ckpt_last_error());
}

static void put_signal(int sig)
{
	if (sig)
		put(",\"signal\":\"SIG%s\"", sigabbrev_np(sig) ? sigabbrev_np(sig) : "?");
	else
		put(",\"signal\":null");
}

/* The first line: how the program is run, and whether it was resumed. */
static void status_start(void)
{
	line_start(R.resumed ? "resume" : "start");
	if (R.resumed)
		put(",\"id\":%llu", (unsigned long long)ckpt__latest_id(R.c));
	put(",\"every_ms\":%llu,\"keep\":", (unsigned long long)(R.o.every_ns / 1000000u));
	put(R.o.keep < 0 ? "null" : "%d", R.o.keep);
	put(",\"signals\":[");
	for (int sig = 1, first = 1; sig <= 64; sig++)
		if (R.o.sigs >> (sig - 1) & 1) {
			put("%s\"SIG%s\"", first ? "" : ",", sigabbrev_np(sig) ? sigabbrev_np(sig) : "?");
			first = 0;
		}
	put("],\"loader_locks\":%d", ckpt__threads_loader_locks());
	line_end();
}

/* The program's resident memory (/proc/self/statm) but for ckpt's
 * staging area: what a full dump would write. */
static uint64_t rss_bytes(void)
{
	char b[128];
	int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	long n = ckpt__sys3(SYS_read, fd, (long)b, sizeof b - 1);
	close(fd);
	if (n <= 0)
		return 0;
	b[n] = '\0';
	unsigned long long size, res;
	if (sscanf(b, "%llu %llu", &size, &res) != 2)
		return 0;
	uint64_t bytes = res * (uint64_t)sysconf(_SC_PAGESIZE), own = ckpt__run_staging();
	return bytes > own ? bytes - own : 0;
}

/* "ckpt run: WHAT failed: <the last error>" on standard error, written
 * raw (the commit thread uses no stdio the program may hold locked). */
static void say_failed(const char *what)
{
	char msg[640];
	int n = snprintf(msg, sizeof msg, "ckpt run: %s failed: %s\n", what, ckpt_last_error());
	if (n > 0)
		ckpt__raw_write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg);
}

static void status_commit(int rc, int sig, uint64_t ns)
{
	line_start(rc ? "commit-failed" : "commit");
	put_signal(sig);
	ckpt_stats st;
	if (rc)
		put_error(rc);
	else if (ckpt_stats(R.c, &st) == 0)
		put(",\"id\":%llu,\"us\":%llu,\"pause_us\":%llu,\"capture_us\":%llu,\"pages\":%llu,"
		    "\"raw_bytes\":%llu,\"file_bytes\":%llu",
		    (unsigned long long)st.commit_id, (unsigned long long)(ns / 1000),
		    (unsigned long long)(st.commit_pause_ns / 1000),
		    (unsigned long long)(st.commit_capture_ns / 1000),
		    (unsigned long long)st.commit_pages, (unsigned long long)st.commit_raw_bytes,
		    (unsigned long long)st.commit_file_bytes);
	if (!rc)
		put(",\"writer\":\"%s\",\"rss_bytes\":%llu", ckpt__run_writer(R.c),
		    (unsigned long long)rss_bytes());
	line_end();
}

/* Folds the chain to R.o.keep increments once it has twice as many: a
 * compaction writes the whole base again, so it is made every keep
 * commits, not after each. */
static void compact(void)
{
	size_t folded = 0;
	uint64_t t0 = ckpt__now_ns();
	unsigned keep = (unsigned)R.o.keep;
	int rc = ckpt__compact_held(R.c, keep, 2 * keep, &folded);
	if (rc) {
		say_failed("compaction");
	}
	if (!rc && !folded)
		return;
	line_start(rc ? "compact-failed" : "compact");
	put(",\"keep\":%d", R.o.keep);
	if (rc)
		put_error(rc);
	else
		put(",\"folded\":%zu,\"us\":%llu", folded,
		    (unsigned long long)((ckpt__now_ns() - t0) / 1000));
	line_end();
}

/* The program's action for each signal that asked for this commit. */
static void deliver(uint64_t sigs)
{
	for (int sig = 1; sig <= 64; sig++) {
		if (!(sigs >> (sig - 1) & 1))
			continue;
		const struct sigaction *p = &R.prog[sig];
		int handler = (p->sa_flags & SA_SIGINFO) || (p->sa_handler != SIG_IGN &&
							      p->sa_handler != SIG_DFL);
		if (!handler && p->sa_handler == SIG_IGN)
			continue;
		if (!handler && (sig == SIGUSR1 || sig == SIGUSR2))
			continue;
		__atomic_add_fetch(&R.pass[sig], 1, __ATOMIC_ACQ_REL);
		kill(getpid(), sig);
	}
}

static void *loop(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&R.go, __ATOMIC_ACQUIRE))
		ckpt__futex_wait(&R.go, 0);
	status_start();
	uint64_t next = R.o.every_ns ? ckpt__now_ns() + R.o.every_ns : 0;
	unsigned seen = __atomic_load_n(&R.kick, __ATOMIC_ACQUIRE);
	for (;;) {
		unsigned k = __atomic_load_n(&R.kick, __ATOMIC_ACQUIRE);
		uint64_t now = ckpt__now_ns();
		if (k == seen && (!next || now < next)) {
			struct timespec ts, *tp = NULL;
			if (next) {
				uint64_t left = next - now;
				ts.tv_sec = (time_t)(left / 1000000000u);
				ts.tv_nsec = (long)(left % 1000000000u);
				tp = &ts;
			}
			ckpt__sys6(SYS_futex, (long)&R.kick, FUTEX_WAIT_PRIVATE, (long)k, (long)tp,
				   0, 0);
			continue;
		}
		seen = k;
		uint64_t sigs = __atomic_exchange_n(&R.pending, 0, __ATOMIC_ACQ_REL);
		int sig = 0;
		for (int s = 1; s <= 64 && !sig; s++)
			if (sigs >> (s - 1) & 1)
				sig = s;
		uint64_t id = 0, t0 = ckpt__now_ns();
		int rc = ckpt__commit_detached(R.c, &id, sig != 0);
		uint64_t t1 = ckpt__now_ns();
		status_commit(rc, sig, t1 - t0);
		if (rc) {
			say_failed("commit");
		} else {
			R.commits++;
		}
		deliver(sigs);
		if (!rc && R.o.keep >= 0)
			compact();
		next = R.o.every_ns ? ckpt__now_ns() + R.o.every_ns : 0;
	}
	return NULL;
}

int ckpt__run_prepare(const struct ckpt__run_opts *o)
{
	if (R.prepared)
		return ckpt__fail(CKPT_EBUSY, "ckpt run: already prepared");
	R.o = *o;
	/* Found now, on a program thread: the thread must not look for them
	 * (realpath may allocate). */
	(void)ckpt__threads_unsafe();
	for (int sig = 1; sig <= 64; sig++) {
		if (!(o->sigs >> (sig - 1) & 1))
			continue;
		if (sig == SIGKILL || sig == SIGSTOP || sig == SIGSEGV || sig == SIGBUS ||
		    sig == SIGRTMAX || sig == 32 || sig == 33)
			return ckpt__fail(CKPT_EINVAL, "ckpt run: signal %d cannot ask for a commit",
					  sig);
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_sigaction = on_signal;
		sa.sa_flags = SA_SIGINFO | SA_RESTART;
		if (get_sigaction()(sig, &sa, &R.prog[sig]) != 0)
			return ckpt__fail(ckpt__from_errno(errno), "ckpt run: sigaction(%d): %s", sig,
					  strerror(errno));
	}
	R.prepared = 1;
	int e = ckpt__thread_spawn(&R.th, loop, NULL);
	if (e) {
		ckpt__run_forked(); /* the program's actions back */
		return ckpt__fail(ckpt__from_errno(e), "ckpt run: cannot start its thread: %s",
				  strerror(e));
	}
	return 0;
}

void ckpt__run_attach(struct ckpt *c)
{
	R.c = c;
}

void ckpt__run_go(void)
{
	__atomic_store_n(&R.go, 1, __ATOMIC_RELEASE);
	ckpt__futex_wake(&R.go, 1);
}

__attribute__((no_stack_protector)) void ckpt__run_resumed(void)
{
	if (R.prepared && R.c) {
		R.resumed = 1;
		__atomic_store_n(&R.go, 1, __ATOMIC_RELEASE);
		ckpt__futex_wake(&R.go, 1);
	}
}
