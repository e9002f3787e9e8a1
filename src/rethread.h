/*
 * rethread.h - the program's threads at a resume: created again before the
 * process changes, parked, and set going where each was stopped once its
 * memory is back.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The new process's main thread (the one running the resume) takes the
 * killed process's main thread's part; every other recorded thread is a
 * clone(2) made by ckpt__rthreads_spawn, parked on a futex on a stack of
 * ckpt's own.  ckpt__rthreads_go gives each its thread pointer, its thread
 * id in glibc's descriptor, its robust list, rseq area and name, then its
 * registers: the committing thread's through the CTX entry (it returns
 * from ckpt_commit), every other's through rt_sigreturn with the signal
 * frame the commit recorded (general registers, xsave area, signal mask,
 * alternate stack), as when its stop handler returns.
 */
#ifndef CKPT_RETHREAD_H
#define CKPT_RETHREAD_H

#include "proc.h"

struct ckpt__rthreads;

struct ckpt__rthr {
	struct ckpt__pthread rec;
	unsigned char *xsave; /* rec.xsave_len bytes, and room for the end marker */
	size_t xsave_cap;
	void *reg;            /* its entry in ckpt's thread registry */
	uintptr_t reg_lo, reg_hi; /* the stack it has there (0: rec's) */
	int new_tid;          /* its id in this process */
	int ctid;             /* the kernel's word: set at clone, cleared at exit */
	struct ckpt__rthreads *g;
};

struct ckpt__rthreads {
	struct ckpt__rthr *t;
	size_t n, cap;
	long main, self;        /* indexes of the main and the committing thread (-1:
				 * none, a commit of ckpt's own thread) */
	int noself;             /* set before ckpt__rthreads_check: no thread commits */
	const struct ckpt__pctx *ctx;
	uint32_t tid_off;       /* glibc's tid in its descriptor */
	unsigned go;            /* futex word: GO_* */
	unsigned char *stacks;  /* the clones' stacks while parked */
	size_t stacks_size;
	size_t spawned;         /* clones made */
	void **cached;          /* registry entries of reusable stacks */
	size_t ncached, cached_cap;
};

/* Adds a THREAD entry of the record (CKPT_ECORRUPT if malformed). */
CKPT__HIDDEN int ckpt__rthreads_add(struct ckpt__rthreads *g, const unsigned char *p, size_t len);

/* Finds the main thread (its thread pointer inside [tcb_lo, tcb_hi), the
 * main thread's descriptor) and the committing one, and checks that this
 * processor can take every recorded FPU state.  0, or an error with the
 * reason written to why. */
CKPT__HIDDEN int ckpt__rthreads_check(struct ckpt__rthreads *g, uintptr_t tcb_lo, uintptr_t tcb_hi,
				      char *why, size_t whysz);

/* Excludes from tracking the stacks the resume brings back: each recorded
 * thread's but the main one's, and [lo, hi) of each reusable stack with
 * its descriptor at tp (ckpt__rthreads_adopt_cached).  Undone by
 * ckpt__rthreads_cancel. */
CKPT__HIDDEN int ckpt__rthreads_adopt(struct ckpt__rthreads *g);
CKPT__HIDDEN int ckpt__rthreads_adopt_cached(struct ckpt__rthreads *g, uintptr_t lo, uintptr_t hi,
					     uintptr_t tp);

/* Makes the clones, parked.  0 or the error (none is left). */
CKPT__HIDDEN int ckpt__rthreads_spawn(struct ckpt__rthreads *g);

/* Ends the parked clones and forgets the adopted stacks: the resume is
 * given up before the process changed. */
CKPT__HIDDEN void ckpt__rthreads_cancel(struct ckpt__rthreads *g);

/* Once every thread's memory is back: thread ids, then every thread goes
 * on; the calling (main) thread too.  Runs on a stack of ckpt's own. */
CKPT__HIDDEN void ckpt__rthreads_go(struct ckpt__rthreads *g) __attribute__((noreturn));

/* The reusable stacks adopted are glibc's cache again (one thread or
 * many; ckpt__rthreads_go does it itself). */
CKPT__HIDDEN void ckpt__rthreads_settle_cached(struct ckpt__rthreads *g);

CKPT__HIDDEN void ckpt__rthreads_free(struct ckpt__rthreads *g);

#endif /* CKPT_RETHREAD_H */
