/*
 * thread.h - the threads of the process: their stacks, TLS blocks and
 * alternate signal stacks, which must never be write-protected.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_THREAD_H
#define CKPT_THREAD_H

#include "maps.h"
#include "own-thread.h"
#include "rangeset.h"

#include <pthread.h>

CKPT__HIDDEN int ckpt__threads_init(void);

/* Waits until every thread being created has registered its stack, and
 * makes new pthread_create calls wait until ckpt__threads_release: the
 * tracker computes what to protect in between. */
CKPT__HIDDEN void ckpt__threads_hold(void);
CKPT__HIDDEN void ckpt__threads_release(void);

/* Adds the stacks of known threads (alive, or dead with a stack glibc may
 * hand to a new thread) to `stacks`, and their alternate signal stacks plus
 * the main thread's TLS block to `pinned`.  `m` is the current maps. */
CKPT__HIDDEN int ckpt__threads_ranges(const struct ckpt__maps *m, struct ckpt__rset *stacks,
				      struct ckpt__rset *pinned);

/* Finds the threads of the process that ckpt did not see start (created
 * before libckpt was loaded, or by raw clone) and pins the mapping holding
 * each one's stack pointer.  Returns how many there were. */
CKPT__HIDDEN unsigned ckpt__threads_unknown(const struct ckpt__maps *m,
					    const struct ckpt__rset *stacks,
					    struct ckpt__rset *pinned);

/* The main thread's thread pointer (glibc's thread descriptor starts there),
 * or 0 if it is not alive. */
CKPT__HIDDEN uintptr_t ckpt__threads_main_tp(void);

/* Calls fn(tid, arg) for every thread of the process (/proc/self/task). */
CKPT__HIDDEN void ckpt__threads_each(void (*fn)(pid_t, void *), void *arg);

/* The stack of live thread tid as the registry knows it: 1 and [*lo, *hi),
 * or 0 if it does not.  Takes no lock (for use while threads are stopped). */
CKPT__HIDDEN int ckpt__threads_stack_of(pid_t tid, uintptr_t *lo, uintptr_t *hi);

/* Whether another thread holds the registry's lock (a stopped thread may:
 * then the caller must not take it). */
CKPT__HIDDEN int ckpt__threads_lock_taken(void);

/* Number of threads the process has (from /proc/self/task). */
CKPT__HIDDEN unsigned ckpt__threads_count(void);

/* The stacks of dead threads that glibc keeps for reuse (its descriptor
 * still at the top): fn(tp, lo, hi) for each.  No lock, as
 * ckpt__threads_stack_of. */
CKPT__HIDDEN void ckpt__threads_cached_each(void (*fn)(uintptr_t tp, uintptr_t lo, uintptr_t hi,
						       void *arg),
					    void *arg);

/* At a resume: a stack [lo, hi) with its descriptor at tp that the resume
 * brings back, excluded from tracking from now on.  Returns the entry
 * (NULL: out of memory); ckpt__threads_adopt_undo forgets it again;
 * ckpt__threads_adopted settles it as the live thread tid (0: a stack glibc
 * keeps for reuse); ckpt__threads_adopted_self, run by that thread once its
 * thread pointer is back, points its TLS at the entry. */
CKPT__HIDDEN void *ckpt__threads_adopt(uintptr_t lo, uintptr_t hi, uintptr_t tp);
CKPT__HIDDEN void ckpt__threads_adopt_undo(void *entry);
CKPT__HIDDEN void ckpt__threads_adopted(void *entry, pid_t tid);
CKPT__HIDDEN void ckpt__threads_adopted_self(void *entry);

#endif /* CKPT_THREAD_H */
