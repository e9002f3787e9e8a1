/*
 * rethread.c - creating the program's threads again at a resume
 * (rethread.h).
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Each clone is made before the process changes, so that a failure (a
 * limit on threads) still returns to the program as it was.  It starts on a
 * stack of ckpt's with every signal blocked but SIGSEGV and SIGBUS, and the
 * thread pointer of the thread that made it, and waits on a futex; the
 * code it runs until then reads no TLS and has no stack protector (the
 * descriptor it would read is being rewritten meanwhile).  When released
 * it takes its own thread pointer and goes on as the thread it stands for.
 *
 * Registers come back the way the kernel gives them back after a signal
 * handler: rt_sigreturn with a frame built on the thread's own stack below
 * its red zone (where the stop handler's frame was), holding the recorded
 * general registers, xsave area and signal mask, and the alternate signal
 * stack.  A thread that was in a system call is at its `syscall`
 * instruction with the number in rax (the kernel, or ckpt's stop handler,
 * rewound it), so it makes the call again.
 *
 * glibc's view: every descriptor, list and counter of libpthread is in the
 * restored memory and names exactly the recorded threads; what the kernel
 * gives a thread is set again: its thread id in the descriptor (the
 * clear-on-exit word that pthread_join waits on, set_tid_address), its
 * robust list, its rseq area, its name.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "rethread.h"
#include "error.h"
#include "futex.h"
#include "held.h"
#include "mem.h"
#include "thread.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#if defined(__x86_64__)
#include <asm/prctl.h>
#include <cpuid.h>
#endif

#define XSAVE_MAX 12288u
#ifndef FP_XSTATE_MAGIC1
#define FP_XSTATE_MAGIC1 0x46505853u
#define FP_XSTATE_MAGIC2 0x46505845u
#endif
#ifndef SS_AUTODISARM
#define SS_AUTODISARM (1u << 31)
#endif
#define PARK_STACK (64u << 10)
#define RSEQ_SIG 0x53053053u
#define UC_FP_XSTATE 0x1
#define UC_SIGCONTEXT_SS 0x2
#define UC_STRICT_RESTORE_SS 0x4

enum { GO_WAIT, GO_RUN, GO_ABORT };

/* ckpt__ctx_jump of resume.c: loads the committing thread's registers. */
CKPT__HIDDEN void ckpt__ctx_jump(const struct ckpt__pctx *ctx, int value) __attribute__((noreturn));

static long sys(long n, long a, long b, long c)
{
	return ckpt__sys6(n, a, b, c, 0, 0, 0);
}

void ckpt__rthreads_settle_cached(struct ckpt__rthreads *g)
{
	for (size_t i = 0; i < g->ncached; i++)
		ckpt__threads_adopted(g->cached[i], 0);
}

int ckpt__rthreads_add(struct ckpt__rthreads *g, const unsigned char *p, size_t len)
{
	struct ckpt__pthread rec;
	if (len < sizeof rec)
		return CKPT_ECORRUPT;
	memcpy(&rec, p, sizeof rec);
	if (rec.xsave_len != len - sizeof rec || rec.xsave_len > XSAVE_MAX || rec.tid <= 0 ||
	    ((rec.flags & CKPT__PT_XSAVE) && rec.xsave_len < 512 + 64) ||
	    (rec.xsave_len && rec.xsave_len < 512))
		return CKPT_ECORRUPT;
	if (ckpt__mem_grow((void **)&g->t, &g->cap, g->n + 1, sizeof *g->t))
		return CKPT_ENOMEM;
	struct ckpt__rthr *t = &g->t[g->n];
	memset(t, 0, sizeof *t);
	t->rec = rec;
	t->g = g;
	if (rec.xsave_len) {
		t->xsave_cap = rec.xsave_len + 64;
		if (!(t->xsave = ckpt__mem_alloc(t->xsave_cap)))
			return CKPT_ENOMEM;
		memcpy(t->xsave, p + sizeof rec, rec.xsave_len);
		if (rec.flags & CKPT__PT_XSAVE) {
			uint32_t magic, size;
			memcpy(&magic, t->xsave + 464, 4);
			memcpy(&size, t->xsave + 480, 4);
			if (magic != FP_XSTATE_MAGIC1 || size != rec.xsave_len) {
				ckpt__mem_free(t->xsave, t->xsave_cap);
				return CKPT_ECORRUPT;
			}
		}
	}
	g->n++;
	return 0;
}

#if defined(__x86_64__)
/* The state components this processor and kernel save (XCR0). */
static uint64_t xcr0(void)
{
	unsigned a, b, c, d;
	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) /* OSXSAVE */
		return 3; /* x87 and SSE */
	__asm__ volatile("xgetbv" : "=a"(a), "=d"(d) : "c"(0));
	return (uint64_t)d << 32 | a;
}
#endif

int ckpt__rthreads_check(struct ckpt__rthreads *g, uintptr_t tcb_lo, uintptr_t tcb_hi, char *why,
			 size_t whysz)
{
	g->main = g->self = -1;
	for (size_t i = 0; i < g->n; i++) {
		const struct ckpt__pthread *r = &g->t[i].rec;
		if (r->flags & CKPT__PT_SELF) {
			if (g->self >= 0)
				goto corrupt;
			g->self = (long)i;
		}
		if (r->fs_base >= tcb_lo && r->fs_base < tcb_hi) {
			if (g->main >= 0)
				goto corrupt;
			g->main = (long)i;
		}
		if (!(r->flags & CKPT__PT_SELF) &&
		    (r->stack_lo >= r->stack_hi || r->gregs[CKPT__PT_RSP] < r->stack_lo + 4096 ||
		     r->gregs[CKPT__PT_RSP] > r->stack_hi))
			goto corrupt;
	}
	/* A thread made with a raw clone has no descriptor of glibc's: none
	 * to give it again. */
	for (size_t i = 0; i < g->n; i++)
		for (size_t k = 0; k < g->n; k++) {
			const struct ckpt__pthread *r = &g->t[i].rec;
			if (r->fs_base && (k == i || r->fs_base != g->t[k].rec.fs_base))
				continue;
			snprintf(why, whysz,
				 "thread %d (%s) had %s thread pointer (made with clone, not "
				 "pthread_create): it cannot be created again",
				 r->tid, r->name, r->fs_base ? "another thread's" : "no");
			return CKPT_ENOTSUP;
		}
	if (g->noself && g->self >= 0)
		goto corrupt;
	if ((g->self < 0 && !g->noself) || g->main < 0) {
		snprintf(why, whysz, "the record names no %s thread",
			 g->self < 0 ? "committing" : "main");
		return CKPT_ECORRUPT;
	}
#if defined(__x86_64__)
	uint64_t have = xcr0();
	for (size_t i = 0; i < g->n; i++) {
		const struct ckpt__rthr *t = &g->t[i];
		uint64_t want = 3;
		if (t->rec.flags & CKPT__PT_XSAVE)
			memcpy(&want, t->xsave + 472, 8); /* _fpx_sw_bytes.xfeatures */
		if (t->rec.xsave_len && (want & ~have)) {
			snprintf(why, whysz,
				 "thread %d (%s) used processor state this processor does not have "
				 "(xsave features %#llx, here %#llx)",
				 t->rec.tid, t->rec.name, (unsigned long long)want,
				 (unsigned long long)have);
			return CKPT_EFOREIGN;
		}
	}
#endif
	return 0;
corrupt:
	snprintf(why, whysz, "the thread entries of the record are inconsistent");
	return CKPT_ECORRUPT;
}

int ckpt__rthreads_adopt(struct ckpt__rthreads *g)
{
	for (size_t i = 0; i < g->n; i++) {
		struct ckpt__rthr *t = &g->t[i];
		if ((long)i == g->main)
			continue;
		uintptr_t lo = t->reg_hi ? t->reg_lo : t->rec.stack_lo;
		uintptr_t hi = t->reg_hi ? t->reg_hi : t->rec.stack_hi;
		if (!(t->reg = ckpt__threads_adopt(lo, hi, t->rec.fs_base)))
			return CKPT_ENOMEM;
	}
	return 0;
}

int ckpt__rthreads_adopt_cached(struct ckpt__rthreads *g, uintptr_t lo, uintptr_t hi, uintptr_t tp)
{
	if (ckpt__mem_grow((void **)&g->cached, &g->cached_cap, g->ncached + 1, sizeof *g->cached))
		return CKPT_ENOMEM;
	void *e = ckpt__threads_adopt(lo, hi, tp);
	if (!e)
		return CKPT_ENOMEM;
	g->cached[g->ncached++] = e;
	return 0;
}

#if defined(__x86_64__)
/* Gives the thread its registers back, as the return from a signal
 * handler does: never returns. */
__attribute__((noreturn, noinline, no_stack_protector)) static void sigreturn_to(
	const struct ckpt__rthr *t)
{
	const struct ckpt__pthread *r = &t->rec;
	uintptr_t sp = r->gregs[CKPT__PT_RSP] - 128;
	void *fp = NULL;
	if (r->xsave_len) {
		sp = (sp - r->xsave_len - 4) & ~(uintptr_t)63;
		memcpy((void *)sp, t->xsave, r->xsave_len);
		if (r->flags & CKPT__PT_XSAVE) {
			uint32_t m2 = FP_XSTATE_MAGIC2;
			memcpy((char *)sp + r->xsave_len, &m2, 4);
		}
		fp = (void *)sp;
	}
	sp = (sp - sizeof(ucontext_t)) & ~(uintptr_t)15;
	ucontext_t *uc = (ucontext_t *)sp;
	memset(uc, 0, sizeof *uc);
	uc->uc_flags = UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS |
		       ((r->flags & CKPT__PT_XSAVE) ? UC_FP_XSTATE : 0);
	if ((r->ss_flags & SS_DISABLE) || !r->ss_size) {
		uc->uc_stack.ss_flags = SS_DISABLE;
	} else {
		uc->uc_stack.ss_sp = (void *)r->ss_sp;
		uc->uc_stack.ss_size = r->ss_size;
		uc->uc_stack.ss_flags = (int)(r->ss_flags & SS_AUTODISARM);
	}
	memcpy(uc->uc_mcontext.gregs, r->gregs, sizeof r->gregs);
	uc->uc_mcontext.fpregs = fp;
	memcpy(&uc->uc_sigmask, &r->sigmask, sizeof r->sigmask);
	/* The kernel reads the frame at the stack pointer (its return
	 * address slot just below). */
	__asm__ volatile("movq %0, %%rsp\n\t"
			 "movl $15, %%eax\n\t" /* rt_sigreturn */
			 "syscall\n\t"
			 "ud2"
			 :
			 : "r"(uc)
			 : "memory");
	__builtin_unreachable();
}

/* What the kernel keeps per thread, given again; on the thread itself. */
__attribute__((no_stack_protector)) static void kernel_state(const struct ckpt__rthr *t)
{
	const struct ckpt__pthread *r = &t->rec;
	if (r->robust_head)
		sys(SYS_set_robust_list, (long)r->robust_head, (long)r->robust_len, 0);
	if (r->rseq_area) {
		uint32_t len = r->rseq_len < 32 ? 32 : r->rseq_len;
		if (ckpt__sys6(SYS_rseq, (long)r->rseq_area, len, 0, RSEQ_SIG, 0, 0) != 0)
			((volatile int32_t *)r->rseq_area)[1] = -2; /* cpu_id: not registered */
	}
	sys(SYS_prctl, PR_SET_NAME, (long)r->name, 0);
}

/* A clone once released: noreturn. */
__attribute__((noreturn, noinline, no_stack_protector)) static void run(const struct ckpt__rthr *t)
{
	const struct ckpt__rthreads *g = t->g;
	const struct ckpt__pthread *r = &t->rec;
	sys(SYS_arch_prctl, ARCH_SET_FS, (long)r->fs_base, 0);
	/* The word pthread_join waits on: cleared, and woken, at exit. */
	sys(SYS_set_tid_address, (long)(r->fs_base + g->tid_off), 0, 0);
	kernel_state(t);
	ckpt__threads_adopted_self(t->reg);
	if (r->flags & CKPT__PT_SELF) {
		if (!(r->ss_flags & SS_DISABLE) && r->ss_size) {
			stack_t ss = {(void *)r->ss_sp, (int)(r->ss_flags & SS_AUTODISARM), r->ss_size};
			sys(SYS_sigaltstack, (long)&ss, 0, 0);
		}
		uint64_t mask = r->sigmask & ~(1ull << (SIGSEGV - 1));
		ckpt__sys6(SYS_rt_sigprocmask, SIG_SETMASK, (long)&mask, 0, 8, 0, 0);
		ckpt__ctx_jump(g->ctx, 1);
	}
	sigreturn_to(t);
}

/* The clone's first code: parked until released. */
__attribute__((no_stack_protector)) static int parked(void *arg)
{
	struct ckpt__rthr *t = arg;
	struct ckpt__rthreads *g = t->g;
	unsigned go;
	while ((go = __atomic_load_n(&g->go, __ATOMIC_ACQUIRE)) == GO_WAIT)
		ckpt__futex_wait(&g->go, GO_WAIT);
	if (go == GO_ABORT)
		return 0; /* the kernel clears ctid and wakes the canceller */
	run(t);
}

int ckpt__rthreads_spawn(struct ckpt__rthreads *g)
{
	size_t n = g->n ? g->n - 1 : 0;
	g->go = GO_WAIT;
	g->spawned = 0;
	if (!n)
		return 0;
	g->stacks_size = n * PARK_STACK;
	if (!(g->stacks = ckpt__mem_alloc(g->stacks_size)))
		return ckpt__fail(CKPT_ENOMEM, "ckpt_open: out of memory");
	uint64_t mask = ~((1ull << (SIGSEGV - 1)) | (1ull << (SIGBUS - 1))), old = 0;
	ckpt__sys6(SYS_rt_sigprocmask, SIG_SETMASK, (long)&mask, (long)&old, 8, 0, 0);
	int flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
		    CLONE_SYSVSEM | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;
	int rc = 0;
	for (size_t i = 0, k = 0; i < g->n; i++) {
		struct ckpt__rthr *t = &g->t[i];
		if ((long)i == g->main)
			continue;
		char *top = (char *)g->stacks + (k + 1) * PARK_STACK - 64;
		int tid = clone(parked, top, flags, t, &t->ctid, NULL, &t->ctid);
		if (tid < 0) {
			int e = errno;
			rc = ckpt__fail(ckpt__from_errno(e), "ckpt_open: cannot create thread %zu of %zu "
							     "(%d, %s) again: %s",
					i + 1, g->n, t->rec.tid, t->rec.name, strerror(e));
			break;
		}
		t->new_tid = tid;
		k++;
		g->spawned = k;
	}
	ckpt__sys6(SYS_rt_sigprocmask, SIG_SETMASK, (long)&old, 0, 8, 0, 0);
	if (rc)
		ckpt__rthreads_cancel(g);
	return rc;
}

void ckpt__rthreads_cancel(struct ckpt__rthreads *g)
{
	if (g->spawned) {
		__atomic_store_n(&g->go, GO_ABORT, __ATOMIC_RELEASE);
		ckpt__futex_wake(&g->go, INT_MAX);
		for (size_t i = 0; i < g->n; i++) {
			int tid;
			/* The kernel's wake at thread exit is a shared futex wake. */
			while ((tid = __atomic_load_n(&g->t[i].ctid, __ATOMIC_ACQUIRE)) != 0)
				ckpt__sys6(SYS_futex, (long)&g->t[i].ctid, FUTEX_WAIT, tid, 0, 0, 0);
		}
		g->spawned = 0;
		g->go = GO_WAIT;
	}
	if (g->stacks)
		ckpt__mem_free(g->stacks, g->stacks_size);
	g->stacks = NULL;
	for (size_t i = 0; i < g->n; i++) {
		ckpt__threads_adopt_undo(g->t[i].reg);
		g->t[i].reg = NULL;
	}
	for (size_t i = 0; i < g->ncached; i++)
		ckpt__threads_adopt_undo(g->cached[i]);
	g->ncached = 0;
}

/* Marks no thread id can take (above PID_MAX_LIMIT, within the futex tid
 * bits): owners pass through them so that an old id equal to another
 * thread's new one is never rewritten twice. */
#define TID_MARK(i) ((int32_t)(0x3f000000 + (int32_t)(i)))

__attribute__((no_stack_protector)) static void fix_owners(struct ckpt__rthreads *g)
{
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < g->n; i++) {
			const struct ckpt__rthr *t = &g->t[i];
			int32_t from = pass ? TID_MARK(i) : t->rec.tid;
			int32_t to = pass ? t->new_tid : TID_MARK(i);
			ckpt__held_fix(t->rec.fs_base, from, to);
			if (t->rec.robust_head)
				ckpt__held_fix_robust(t->rec.robust_head, from, to);
		}
}

void ckpt__rthreads_go(struct ckpt__rthreads *g)
{
	struct ckpt__rthr *m = &g->t[g->main];
	m->new_tid = (int)ckpt__raw_gettid();
	for (size_t i = 0; i < g->n; i++)
		*(int32_t *)(g->t[i].rec.fs_base + g->tid_off) = g->t[i].new_tid;
	fix_owners(g);
	for (size_t i = 0; i < g->n; i++)
		if ((long)i != g->main)
			ckpt__threads_adopted(g->t[i].reg, g->t[i].new_tid);
	ckpt__rthreads_settle_cached(g);
	__atomic_store_n(&g->go, GO_RUN, __ATOMIC_RELEASE);
	ckpt__futex_wake(&g->go, INT_MAX);
	/* The main thread's part, on this (the new main) thread. */
	sys(SYS_arch_prctl, ARCH_SET_FS, (long)m->rec.fs_base, 0);
	sys(SYS_prctl, PR_SET_NAME, (long)m->rec.name, 0);
	if (g->main == g->self) {
		uint64_t mask = m->rec.sigmask & ~(1ull << (SIGSEGV - 1));
		ckpt__sys6(SYS_rt_sigprocmask, SIG_SETMASK, (long)&mask, 0, 8, 0, 0);
		ckpt__ctx_jump(g->ctx, 1);
	}
	sigreturn_to(m);
}
#else
int ckpt__rthreads_spawn(struct ckpt__rthreads *g)
{
	(void)g;
	return ckpt__fail(CKPT_ENOTSUP, "ckpt_open: resuming threads is implemented for x86-64 only");
}

void ckpt__rthreads_cancel(struct ckpt__rthreads *g)
{
	(void)g;
}

void ckpt__rthreads_go(struct ckpt__rthreads *g)
{
	(void)g;
	abort();
}
#endif

void ckpt__rthreads_free(struct ckpt__rthreads *g)
{
	for (size_t i = 0; i < g->n; i++)
		if (g->t[i].xsave)
			ckpt__mem_free(g->t[i].xsave, g->t[i].xsave_cap);
	ckpt__mem_array_free((void **)&g->t, &g->cap, sizeof *g->t);
	ckpt__mem_array_free((void **)&g->cached, &g->cached_cap, sizeof *g->cached);
	g->n = 0;
}
