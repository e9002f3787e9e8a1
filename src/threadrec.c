/*
 * threadrec.c - stopping and recording the program's other threads at a
 * resumable commit (threadrec.h).
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The stop signal's handler runs on a program thread at any instruction:
 * it makes raw system calls only (errno is never written, and is saved and
 * restored all the same), writes nothing but its slot in ckpt's memory and
 * the counters below, and waits on a futex.  Its stack frame is on the
 * thread's stack (or alternate stack), which is never write-protected.
 * Every signal but SIGSEGV and SIGBUS is blocked while it runs, so no
 * handler of the program runs on a parked thread.
 *
 * A slot goes ASKED (set by the committer before the signal is sent) ->
 * FILLING -> PARKED (by the handler); the handler parks only if it wins
 * ASKED -> FILLING, so a late or repeated signal (one that a thread had
 * blocked until after a failed stop, or the program's own tgkill) finds no
 * asked slot, or no stop in progress, and returns at once.  The slot arrays
 * are never freed: a late handler may still be reading an old one.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "threadrec.h"
#include "error.h"
#include "futex.h"
#include "maps.h"
#include "mem.h"
#include "own-thread.h"
#include "thread.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <pthread.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <asm/prctl.h>
#include <sys/rseq.h>
#endif

/* The kernel's xsave area of a signal frame is at most this big here (AVX-512
 * needs about 2.7 KiB; AMX tiles more): a larger one is refused. */
#define XSAVE_MAX 12288u

enum { S_FREE, S_ASKED, S_FILLING, S_PARKED };

/* A slot's state in round g (the value of S.go while the round lasts). */
#define ST(g, st) ((unsigned)(g) << 2 | (unsigned)(st))

struct slot {
	unsigned state; /* ST(round, S_*), atomic */
	long blocked_nr;      /* the call /proc showed it blocked in, or -1 */
	uintptr_t blocked_pc; /* and the address after its syscall instruction */
	struct ckpt__pthread rec;
	unsigned char xsave[XSAVE_MAX];
};

static struct {
	struct slot *slots;
	size_t n, cap;   /* slots in use (published before a signal), allocated */
	int active;      /* a stop is in progress */
	unsigned parked; /* threads parked, futex word */
	unsigned want;   /* how many the committer waits for */
	unsigned go;     /* bumped to release them (ends a round), futex word */
	unsigned round;  /* the value of go during the current round */
	int sig;         /* the stop signal (SIGRTMAX) */
	int self, pid;   /* the committing thread, the process */
	int stopped;     /* the other threads are parked, the registry held */
	int taskfd;      /* /proc/self/task during a stop */
	uintptr_t main_lo, main_hi; /* the main thread's stack mapping, as last seen */
	const char *why; /* what a handler could not record */
} S;

#if defined(__x86_64__)
static long sys(long n, long a, long b, long c)
{
	return ckpt__sys6(n, a, b, c, 0, 0, 0);
}

/* The program thread's part (see the top of the file). */
static void on_stop(int sig, siginfo_t *si, void *ucv)
{
	(void)sig;
	int saved = errno;
	/* The round first, then whether one is on: a handler that sees a
	 * round on works in that round or in none (each release bumps go). */
	unsigned go = __atomic_load_n(&S.go, __ATOMIC_SEQ_CST);
	if (si->si_code != SI_TKILL || !__atomic_load_n(&S.active, __ATOMIC_SEQ_CST))
		goto out;
	int tid = (int)sys(SYS_gettid, 0, 0, 0);
	size_t n = __atomic_load_n(&S.n, __ATOMIC_ACQUIRE);
	struct slot *sl = NULL, *slots = __atomic_load_n(&S.slots, __ATOMIC_ACQUIRE);
	for (size_t i = 0; i < n && !sl; i++)
		if (slots[i].rec.tid == tid)
			sl = &slots[i];
	unsigned st = ST(go, S_ASKED);
	if (!sl || !__atomic_compare_exchange_n(&sl->state, &st, ST(go, S_FILLING), 0,
						__ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
		goto out;
	const ucontext_t *uc = ucv;
	struct ckpt__pthread *r = &sl->rec;
	memcpy(r->gregs, uc->uc_mcontext.gregs, sizeof r->gregs);
	memcpy(&r->sigmask, &uc->uc_sigmask, sizeof r->sigmask);
	r->xsave_len = 0;
	const unsigned char *fp = (const void *)uc->uc_mcontext.fpregs;
	if (fp) {
		/* struct _fpx_sw_bytes at byte 464 of the fxsave area says
		 * whether an xsave header and components follow. */
		uint32_t magic1, size = 512;
		memcpy(&magic1, fp + 464, 4);
		if (magic1 == 0x46505853u) { /* FP_XSTATE_MAGIC1 */
			memcpy(&size, fp + 480, 4); /* xstate_size */
			r->flags |= CKPT__PT_XSAVE;
		}
		if (size <= XSAVE_MAX) {
			memcpy(sl->xsave, fp, size);
			r->xsave_len = size;
		} else {
			S.why = "its xsave area is larger than ckpt records";
		}
	}
	/* A call the kernel ends with EINTR when a handler runs, whatever
	 * SA_RESTART says (nanosleep, poll, epoll_wait, select, pause: signal(7))
	 * is rewound here to be made again, as the kernel does for the others:
	 * the arguments are still in their registers.  It is recognised by
	 * -EINTR just after the syscall instruction of the call the thread was
	 * seen blocked in before the signal was sent.  A relative timeout
	 * starts again in full (never a shorter wait). */
	greg_t *g = ((ucontext_t *)ucv)->uc_mcontext.gregs;
	if (sl->blocked_nr >= 0 && (uintptr_t)g[REG_RIP] == sl->blocked_pc &&
	    g[REG_RAX] == -EINTR && ((const unsigned char *)sl->blocked_pc)[-2] == 0x0f &&
	    ((const unsigned char *)sl->blocked_pc)[-1] == 0x05) {
		g[REG_RAX] = sl->blocked_nr;
		g[REG_RIP] -= 2;
		r->gregs[REG_RAX] = (uint64_t)g[REG_RAX];
		r->gregs[REG_RIP] = (uint64_t)g[REG_RIP];
		r->flags |= CKPT__PT_REWOUND;
	}
	/* At a syscall instruction: either about to make a call or rewound
	 * (by the kernel or above) to make it again; rax holds the number. */
	const unsigned char *ip = (const unsigned char *)r->gregs[REG_RIP];
	r->syscall_nr = ip[0] == 0x0f && ip[1] == 0x05 ? (int64_t)r->gregs[REG_RAX] : -1;
	sys(SYS_arch_prctl, ARCH_GET_FS, (long)&r->fs_base, 0);
	stack_t ss;
	if (sys(SYS_sigaltstack, 0, (long)&ss, 0) == 0) {
		r->ss_sp = (uintptr_t)ss.ss_sp;
		r->ss_size = ss.ss_size;
		r->ss_flags = (uint32_t)ss.ss_flags;
	}
	void *head = NULL;
	size_t hlen = 0;
	if (sys(SYS_get_robust_list, 0, (long)&head, (long)&hlen) == 0) {
		r->robust_head = (uintptr_t)head;
		r->robust_len = hlen;
	}
	if (__rseq_size && r->fs_base) {
		r->rseq_area = r->fs_base + (uintptr_t)__rseq_offset;
		r->rseq_len = __rseq_size;
	}
	sys(SYS_prctl, PR_GET_NAME, (long)r->name, 0);
	r->name[15] = '\0';
	/* If the round ended meanwhile (the commit failed), the slot may be
	 * the next round's: leave it, do not park. */
	st = ST(go, S_FILLING);
	if (!__atomic_compare_exchange_n(&sl->state, &st, ST(go, S_PARKED), 0, __ATOMIC_ACQ_REL,
					 __ATOMIC_RELAXED))
		goto out;
	/* The last one wakes the committer (want is set before it waits). */
	if (__atomic_add_fetch(&S.parked, 1, __ATOMIC_ACQ_REL) >=
	    __atomic_load_n(&S.want, __ATOMIC_ACQUIRE))
		ckpt__futex_wake(&S.parked, 1);
	/* Parked: the slot is the committer's from here on. */
	while (__atomic_load_n(&S.go, __ATOMIC_ACQUIRE) == go)
		ckpt__futex_wait(&S.go, go);
	/* The committer wakes one; each wakes the next, so that it is not
	 * the committer who pays for waking them all. */
	ckpt__futex_wake(&S.go, 1);
out:
	if (errno != saved)
		errno = saved;
}

/* Installs the handler, or says why it cannot. */
static int install(void)
{
	struct sigaction old, sa;
	S.sig = SIGRTMAX;
	if (sigaction(S.sig, NULL, &old) != 0)
		return ckpt__fail(ckpt__from_errno(errno), "ckpt_commit: sigaction(%d): %s", S.sig,
				  strerror(errno));
	if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction == on_stop)
		return 0;
	if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL) {
		memset(&sa, 0, sizeof sa);
		sa.sa_sigaction = on_stop;
		sa.sa_flags = SA_SIGINFO | SA_RESTART;
		sigfillset(&sa.sa_mask);
		sigdelset(&sa.sa_mask, SIGSEGV);
		sigdelset(&sa.sa_mask, SIGBUS);
		if (sigaction(S.sig, &sa, NULL) == 0)
			return 0;
	}
	return ckpt__fail(CKPT_EBUSY,
			  "ckpt_commit: signal %d (SIGRTMAX), which ckpt uses to stop the other "
			  "threads at a resumable commit, has a handler of the program's",
			  S.sig);
}

static int asked(int tid)
{
	for (size_t i = 0; i < S.n; i++)
		if (S.slots[i].rec.tid == tid)
			return 1;
	return 0;
}

/* The system call thread tid is blocked in and the address after its
 * syscall instruction, from /proc/self/task/TID/syscall ("nr args... sp
 * pc"; "running" or "-1 sp pc" when in none): *nr -1 if none. */
static void blocked_call(int tid, long *nr, uintptr_t *pc)
{
	char path[64], buf[256];
	*nr = -1;
	*pc = 0;
	snprintf(path, sizeof path, "%d/syscall", tid);
	long fd = S.taskfd < 0 ? -1
			       : ckpt__sys6(SYS_openat, S.taskfd, (long)path, O_RDONLY | O_CLOEXEC, 0,
					    0, 0);
	if (fd < 0)
		return;
	long n = ckpt__raw_read((int)fd, buf, sizeof buf - 1);
	ckpt__raw_close((int)fd);
	if (n <= 0 || buf[0] < '0' || buf[0] > '9')
		return;
	buf[n] = '\0';
	char *end, *last = NULL;
	long v = strtol(buf, &end, 10);
	for (char *p = end; *p; p++)
		if (*p == ' ')
			last = p + 1;
	if (!last)
		return;
	*pc = (uintptr_t)strtoull(last, NULL, 16);
	*nr = *pc ? v : -1;
}

struct scan {
	int added, err;
};

/* Asks one more thread to stop (a slot first, then the signal). */
static void ask(pid_t tid, void *arg)
{
	struct scan *sc = arg;
	if (tid == S.self || ckpt__thread_is_own(tid) || asked(tid) || sc->err)
		return;
	if (S.n == S.cap) {
		sc->err = 1;
		return;
	}
	struct slot *sl = &S.slots[S.n];
	memset(&sl->rec, 0, sizeof sl->rec);
	sl->rec.tid = tid;
	blocked_call(tid, &sl->blocked_nr, &sl->blocked_pc);
	__atomic_store_n(&sl->state, ST(S.round, S_ASKED), __ATOMIC_RELEASE);
	__atomic_store_n(&S.n, S.n + 1, __ATOMIC_RELEASE);
	if (sys(SYS_tgkill, S.pid, tid, S.sig) == 0)
		sc->added++;
	else
		__atomic_store_n(&sl->state, ST(S.round, S_FREE), __ATOMIC_RELEASE); /* ended */
}
#endif

#if defined(__x86_64__)
static void count_task(pid_t tid, void *arg)
{
	(void)tid;
	++*(size_t *)arg;
}

/* Whether thread tid blocks sig, from /proc/self/task/TID/status. */
static int blocks(int tid, int sig)
{
	char path[64], buf[4096];
	snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
	long fd = ckpt__raw_open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	long n = ckpt__raw_read((int)fd, buf, sizeof buf - 1);
	ckpt__raw_close((int)fd);
	buf[n > 0 ? n : 0] = '\0';
	const char *p = strstr(buf, "SigBlk:");
	unsigned long long m = 0;
	return p && sscanf(p + 7, "%llx", &m) == 1 && (m >> (sig - 1)) & 1;
}

static int alive(int tid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/self/task/%d", tid);
	return access(path, F_OK) == 0;
}

static void name_of(int tid, char *name, size_t len)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/self/task/%d/comm", tid);
	long fd = ckpt__raw_open(path, O_RDONLY | O_CLOEXEC);
	long n = fd >= 0 ? ckpt__raw_read((int)fd, name, len - 1) : 0;
	if (fd >= 0)
		ckpt__raw_close((int)fd);
	name[n > 0 ? n : 0] = '\0';
	char *nl = strchr(name, '\n');
	if (nl)
		*nl = '\0';
}

/* Waits until every asked thread that is alive has parked, for at most the
 * bound.  0, or CKPT_EBUSY naming the first that did not. */
static int wait_parked(uint64_t deadline)
{
	for (;;) {
		/* The counter only wakes this thread (a handler of an ended
		 * round may have counted too); the slots say who is parked. */
		unsigned want = 0, parked = 0;
		unsigned seen = __atomic_load_n(&S.parked, __ATOMIC_ACQUIRE);
		for (size_t i = 0; i < S.n; i++) {
			unsigned st = __atomic_load_n(&S.slots[i].state, __ATOMIC_ACQUIRE);
			want += st != ST(S.round, S_FREE);
			parked += st == ST(S.round, S_PARKED);
		}
		if (parked >= want)
			return 0;
		__atomic_store_n(&S.want, seen + (want - parked), __ATOMIC_SEQ_CST);
		unsigned got = __atomic_load_n(&S.parked, __ATOMIC_SEQ_CST);
		if (got != seen)
			continue;
		uint64_t now = ckpt__now_ns();
		if (now >= deadline) {
			/* Threads that ended meanwhile are not waited for. */
			for (size_t i = 0; i < S.n; i++) {
				struct slot *sl = &S.slots[i];
				if (__atomic_load_n(&sl->state, __ATOMIC_ACQUIRE) !=
				    ST(S.round, S_ASKED))
					continue;
				int tid = sl->rec.tid;
				unsigned st = ST(S.round, S_ASKED);
				if (!alive(tid) &&
				    __atomic_compare_exchange_n(&sl->state, &st, ST(S.round, S_FREE), 0,
								__ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
					continue;
				char name[32];
				name_of(tid, name, sizeof name);
				long nr;
				uintptr_t pc;
				blocked_call(tid, &nr, &pc);
				const char *why = blocks(tid, S.sig) ? ": it blocks the signal"
						  : nr == SYS_vfork || nr == SYS_clone || nr == SYS_clone3
							  ? ": it waits in vfork for its child to "
							    "execute a program or exit"
							  : "";
				return ckpt__fail(
					CKPT_EBUSY,
					"ckpt_commit: thread %d (%s) did not stop within %llu ms%s; a "
					"resumable commit stops every thread with signal %d (SIGRTMAX)",
					tid, name, (unsigned long long)(CKPT__STOP_TIMEOUT_NS / 1000000),
					why, S.sig);
			}
			continue;
		}
		uint64_t left = deadline - now;
		struct timespec ts = {(time_t)(left / 1000000000u), (long)(left % 1000000000u)};
		ckpt__sys6(SYS_futex, (long)&S.parked, FUTEX_WAIT_PRIVATE, (long)got, (long)&ts, 0,
			   0);
	}
}

/* Lets every parked thread go and ends the stop. */
static void release(void)
{
	__atomic_store_n(&S.active, 0, __ATOMIC_SEQ_CST);
	__atomic_add_fetch(&S.go, 1, __ATOMIC_SEQ_CST);
	ckpt__futex_wake(&S.go, 1);
}

static int stop_all(void);

static void count_other(pid_t tid, void *arg)
{
	*(size_t *)arg += tid != S.self && !ckpt__thread_is_own(tid);
}

int ckpt__threads_stop(void)
{
	S.self = (int)ckpt__raw_gettid();
	S.pid = getpid();
	S.stopped = 0;
	__atomic_store_n(&S.n, 0, __ATOMIC_RELEASE);
	/* Alone: nothing to stop, and the signal stays the program's. */
	size_t others = 0;
	ckpt__threads_each(count_other, &others);
	if (!others)
		return 0;
	int rc = install();
	if (rc)
		return rc;
	ckpt__threads_hold();
	S.taskfd = (int)ckpt__raw_open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	rc = stop_all();
	if (S.taskfd >= 0)
		ckpt__raw_close(S.taskfd);
	S.taskfd = -1;
	if (rc)
		ckpt__threads_release();
	return rc;
}

/* ckpt__threads_stop once the handler is in place and the registry held. */
static int stop_all(void)
{
	int rc;
	for (int attempt = 0;; attempt++) {
		size_t ntask = 0;
		ckpt__threads_each(count_task, &ntask);
		if (ntask + 16 > S.cap) {
			size_t cap = (ntask + 16) * 2;
			struct slot *n = ckpt__mem_alloc(cap * sizeof *n);
			if (!n)
				return ckpt__fail(CKPT_ENOMEM, "ckpt_commit: out of memory");
			/* The old array is left to late handlers. */
			__atomic_store_n(&S.n, 0, __ATOMIC_RELEASE);
			__atomic_store_n(&S.slots, n, __ATOMIC_RELEASE);
			S.cap = cap;
		}
		__atomic_store_n(&S.n, 0, __ATOMIC_RELEASE);
		/* No wake-ups until the committer waits (parked only grows). */
		__atomic_store_n(&S.want, UINT_MAX, __ATOMIC_RELEASE);
		S.why = NULL;
		S.round = __atomic_load_n(&S.go, __ATOMIC_ACQUIRE);
		__atomic_store_n(&S.active, 1, __ATOMIC_SEQ_CST);
		uint64_t deadline = ckpt__now_ns() + CKPT__STOP_TIMEOUT_NS;
		/* Ask, wait, and look again for threads started meanwhile (by
		 * raw clone: pthread_create waits for the hold). */
		struct scan sc = {0, 0};
		do {
			sc.added = 0;
			ckpt__threads_each(ask, &sc);
			if (sc.err)
				rc = ckpt__fail(CKPT_EBUSY, "ckpt_commit: threads appear faster than "
							    "they can be stopped");
			else
				rc = wait_parked(deadline);
		} while (!rc && sc.added);
		if (!rc && S.why)
			rc = ckpt__fail(CKPT_ENOTSUP, "ckpt_commit: a thread cannot be recorded: %s",
					S.why);
		if (rc) {
			release();
			return rc;
		}
		/* A thread stopped inside the registry's critical section would
		 * hold the lock the capture takes: let them go and try again. */
		if (!ckpt__threads_lock_taken()) {
			S.stopped = 1;
			return 0;
		}
		release();
		if (attempt == 100)
			return ckpt__fail(CKPT_EBUSY, "ckpt_commit: the other threads could not be "
						      "stopped outside ckpt's thread registry");
		ckpt__raw_sched_yield();
	}
}

static void add_tmem(struct ckpt__pbuf *b, uintptr_t lo, uintptr_t hi)
{
	uint64_t range[2] = {lo, hi};
	ckpt__pbuf_add(b, CKPT__PE_TMEM, range, sizeof range, (const void *)lo, hi - lo);
}

static void add_cached(uintptr_t tp, uintptr_t lo, uintptr_t hi, void *arg)
{
	(void)lo;
	add_tmem(arg, tp & ~(uintptr_t)15, hi);
}

int ckpt__threads_record(struct ckpt__pbuf *b, uint64_t sp)
{
	struct ckpt__maps m = {0};
	int have_maps = 0;
	struct ckpt__pthread self = {0};
	self.tid = S.self;
	self.flags = CKPT__PT_SELF;
	self.syscall_nr = -1;
	sigset_t cur;
	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	memcpy(&self.sigmask, &cur, sizeof self.sigmask);
	syscall(SYS_arch_prctl, ARCH_GET_FS, &self.fs_base);
	stack_t ss;
	if (sys(SYS_sigaltstack, 0, (long)&ss, 0) == 0) {
		self.ss_sp = (uintptr_t)ss.ss_sp;
		self.ss_size = ss.ss_size;
		self.ss_flags = (uint32_t)ss.ss_flags;
	}
	void *head = NULL;
	size_t hlen = 0;
	if (sys(SYS_get_robust_list, 0, (long)&head, (long)&hlen) == 0) {
		self.robust_head = (uintptr_t)head;
		self.robust_len = hlen;
	}
	if (__rseq_size && self.fs_base) {
		self.rseq_area = self.fs_base + (uintptr_t)__rseq_offset;
		self.rseq_len = __rseq_size;
	}
	prctl(PR_GET_NAME, self.name);
	self.name[15] = '\0';
	/* Called from a thread of ckpt's own (ckpt run): no program thread
	 * commits, every one of them is a stopped one. */
	int detached = ckpt__thread_is_own(S.self);
	for (size_t i = detached; i <= S.n; i++) {
		struct ckpt__pthread *r = i == 0 ? &self : &S.slots[i - 1].rec;
		const void *xs = i == 0 ? NULL : S.slots[i - 1].xsave;
		if (i > 0 && __atomic_load_n(&S.slots[i - 1].state, __ATOMIC_ACQUIRE) !=
				     ST(S.round, S_PARKED))
			continue;
		uintptr_t lo, hi, rsp = i == 0 ? sp : r->gregs[REG_RSP];
		int reg = ckpt__threads_stack_of(r->tid, &lo, &hi);
		int known = reg && rsp >= lo && rsp < hi;
		/* Running elsewhere (a signal handler on its alternate stack, a
		 * coroutine): its own stack is saved whole, its frames below
		 * are live too. */
		if (reg && !known)
			add_tmem(b, lo, hi);
		/* Else the mapping holding sp (the main thread's, a thread ckpt
		 * did not see start).  The main thread's stack mapping only
		 * grows down: while sp is in the one seen last, it is that. */
		if (!known && r->tid == S.pid && rsp >= S.main_lo && rsp < S.main_hi) {
			lo = S.main_lo;
			hi = S.main_hi;
			known = 1;
		}
		if (!known) {
			if (!have_maps) {
				int rc = ckpt__maps_read(&m);
				if (rc)
					return rc;
				have_maps = 1;
			}
			long k = ckpt__maps_find(&m, rsp);
			lo = k >= 0 ? m.v[k].start : 0;
			hi = k >= 0 ? m.v[k].end : 0;
			if (r->tid == S.pid) {
				S.main_lo = lo;
				S.main_hi = hi;
			}
		}
		r->stack_lo = lo;
		r->stack_hi = hi;
		ckpt__pbuf_add(b, CKPT__PE_THREAD, r, sizeof *r, xs, xs ? r->xsave_len : 0);
		/* Its stack from below the red zone up (with the TLS block and
		 * glibc's descriptor at the top of a thread's stack): thread
		 * stacks are not tracked memory.  The caller's is the STACK
		 * entry. */
		if (i > 0 && hi > lo)
			add_tmem(b, rsp - 128 > lo ? (rsp - 128) & ~(uintptr_t)15 : lo, hi);
	}
	ckpt__maps_free(&m);
	/* Stacks glibc keeps for new threads: their descriptors (list nodes
	 * and sizes glibc reads when it hands one out). */
	ckpt__threads_cached_each(add_cached, b);
	return b->err ? CKPT_ENOMEM : 0;
}

uintptr_t ckpt__threads_main_fs(void)
{
	for (size_t i = 0; S.stopped && i < S.n; i++)
		if (S.slots[i].rec.tid == S.pid &&
		    __atomic_load_n(&S.slots[i].state, __ATOMIC_ACQUIRE) == ST(S.round, S_PARKED))
			return S.slots[i].rec.fs_base;
	return 0;
}

/* The code a thread must not be stopped in for a commit made from a thread
 * of ckpt's own: ckpt's (the object holding this file, libckpt or a preload
 * carrying it), libsigsegv's, and the dynamic linker's (which holds the
 * loader's lock a capture takes).  Their executable mappings, found once. */
#define UNSAFE_MAX 16
static void find_loader_locks(void);
static struct {
	int done;
	size_t n;
	uintptr_t lo[UNSAFE_MAX], hi[UNSAFE_MAX];
} U;

extern void sigsegv_install_handler(void) __attribute__((weak));

static void unsafe_ranges(void)
{
	if (U.done)
		return;
	char paths[3][PATH_MAX];
	size_t np = 0;
	Dl_info di;
	if (dladdr((void *)ckpt__threads_stop, &di) && di.dli_fname && di.dli_fname[0])
		realpath(di.dli_fname, paths[np]) ? np++ : 0;
	if (sigsegv_install_handler && dladdr((void *)sigsegv_install_handler, &di) &&
	    di.dli_fname && di.dli_fname[0])
		realpath(di.dli_fname, paths[np]) ? np++ : 0;
	struct ckpt__maps m = {0};
	if (ckpt__maps_read(&m) != 0)
		return;
	/* The dynamic linker: the file mapped at AT_BASE. */
	uintptr_t ld = (uintptr_t)getauxval(AT_BASE);
	for (size_t i = 0; ld && i < m.n; i++)
		if (m.v[i].start == ld && m.v[i].path[0] == '/') {
			snprintf(paths[np++], PATH_MAX, "%s", m.v[i].path);
			break;
		}
	for (size_t i = 0; i < m.n && U.n < UNSAFE_MAX; i++) {
		if (!(m.v[i].perms & CKPT__VMA_X))
			continue;
		for (size_t k = 0; k < np; k++)
			if (!strcmp(m.v[i].path, paths[k])) {
				U.lo[U.n] = m.v[i].start;
				U.hi[U.n++] = m.v[i].end;
				break;
			}
	}
	ckpt__maps_free(&m);
	find_loader_locks();
	U.done = 1;
}

/* The loader's locks.  A thread can hold one outside the dynamic linker's
 * code: dl_iterate_phdr (in libc) holds _dl_load_write_lock while it calls
 * its callback (the program's code: a C++ exception being unwound), and
 * dlopen holds _dl_load_lock while the new objects' constructors run.  The
 * record and the capture take them (dl_iterate_phdr, dladdr), so a thread
 * stopped holding one is not at a safe point.  The locks are recursive
 * mutexes inside ld.so's _rtld_global, whose layout is glibc's own; what is
 * public is a mutex's: its owner's thread id.  So they are found by looking:
 * inside a dl_iterate_phdr callback, the write lock is the one recursive
 * mutex of _rtld_global that this thread owns, and _dl_load_lock is
 * declared just before it (glibc 2.2 to 2.40 at least), which is checked
 * (a recursive mutex there too).  Where either is not found so, it is not
 * watched. */
static struct {
	const int *owner[2]; /* the __owner fields of the write lock and the load lock */
	pid_t tid;
	const char *g;
	size_t gsize;
} LL;

static int recursive_mutex_at(const char *p)
{
	const pthread_mutex_t *mx = (const pthread_mutex_t *)(const void *)p;
	return (mx->__data.__kind & 3) == PTHREAD_MUTEX_RECURSIVE_NP;
}

static int locks_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)info;
	(void)size;
	const int **found = arg;
	size_t hits = 0;
	const char *hit = NULL;
	for (size_t o = 0; o + sizeof(pthread_mutex_t) <= LL.gsize; o += sizeof(int)) {
		const pthread_mutex_t *mx = (const pthread_mutex_t *)(const void *)(LL.g + o);
		if (mx->__data.__owner == LL.tid && mx->__data.__count >= 1 && mx->__data.__lock &&
		    recursive_mutex_at(LL.g + o)) {
			hit = LL.g + o;
			hits++;
		}
	}
	if (hits == 1) {
		found[0] = &((const pthread_mutex_t *)(const void *)hit)->__data.__owner;
		if (hit - LL.g >= (ptrdiff_t)sizeof(pthread_mutex_t) &&
		    recursive_mutex_at(hit - sizeof(pthread_mutex_t)))
			found[1] = &((const pthread_mutex_t *)(const void *)(hit - sizeof(pthread_mutex_t)))
					    ->__data.__owner;
	}
	return 1; /* once */
}

static void find_loader_locks(void)
{
	void *g = dlsym(RTLD_DEFAULT, "_rtld_global");
	Dl_info di;
	const ElfW(Sym) *sym = NULL;
	if (!g || !dladdr1(g, &di, (void **)&sym, RTLD_DL_SYMENT) || !sym || !sym->st_size)
		return;
	LL.g = g;
	LL.gsize = sym->st_size;
	LL.tid = (pid_t)syscall(SYS_gettid);
	const int *found[2] = {NULL, NULL};
	dl_iterate_phdr(locks_cb, found);
	LL.owner[0] = found[0];
	LL.owner[1] = found[1];
}

int ckpt__threads_loader_locks(void)
{
	unsafe_ranges();
	return (LL.owner[0] != NULL) + (LL.owner[1] != NULL);
}

int ckpt__threads_unsafe(void)
{
	unsafe_ranges();
	for (size_t i = 0; S.stopped && i < S.n; i++) {
		const struct slot *sl = &S.slots[i];
		if (__atomic_load_n(&sl->state, __ATOMIC_ACQUIRE) != ST(S.round, S_PARKED))
			continue;
		uintptr_t pc = sl->rec.gregs[REG_RIP];
		for (size_t k = 0; k < U.n; k++)
			if (pc >= U.lo[k] && pc < U.hi[k])
				return sl->rec.tid;
		for (size_t k = 0; k < 2; k++)
			if (LL.owner[k] && __atomic_load_n(LL.owner[k], __ATOMIC_ACQUIRE) == sl->rec.tid)
				return sl->rec.tid;
	}
	return 0;
}

void ckpt__threads_go(void)
{
	if (!S.stopped)
		return;
	S.stopped = 0;
	release();
	ckpt__threads_release();
}
#else
int ckpt__threads_stop(void)
{
	return 0;
}

static void add_tmem(struct ckpt__pbuf *b, uintptr_t lo, uintptr_t hi)
{
	uint64_t range[2] = {lo, hi};
	ckpt__pbuf_add(b, CKPT__PE_TMEM, range, sizeof range, (const void *)lo, hi - lo);
}

static void add_cached(uintptr_t tp, uintptr_t lo, uintptr_t hi, void *arg)
{
	(void)lo;
	add_tmem(arg, tp & ~(uintptr_t)15, hi);
}

int ckpt__threads_record(struct ckpt__pbuf *b, uint64_t sp)
{
	(void)b;
	(void)sp;
	return 0;
}

void ckpt__threads_go(void)
{
}

uintptr_t ckpt__threads_main_fs(void)
{
	return 0;
}

int ckpt__threads_unsafe(void)
{
	return 0;
}
#endif
