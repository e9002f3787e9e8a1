/*
 * futex.h - a mutex and a condition variable on raw futexes, for ckpt's own
 * threads (own-thread.h), which glibc does not know and which therefore
 * call no pthread function.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The mutex is the classic three-state one (0 free, 1 locked, 2 locked
 * with waiters); the condition variable is a sequence number that a waiter
 * reads before it lets the mutex go, so a signal sent between the unlock
 * and the wait is never missed (the futex wait returns at once when the
 * number has moved).  Both are zero when ready: a zeroed struct needs no
 * init and no destroy.  Raw system calls: errno is never written.
 */
#ifndef CKPT_FUTEX_H
#define CKPT_FUTEX_H

#include "sys.h"

#include <limits.h>
#include <linux/futex.h>

typedef struct { int v; } ckpt__mutex;
typedef struct { unsigned seq; } ckpt__cond;

static inline void ckpt__futex_wait(void *word, unsigned val)
{
	ckpt__sys6(SYS_futex, (long)word, FUTEX_WAIT_PRIVATE, (long)val, 0, 0, 0);
}

static inline void ckpt__futex_wake(void *word, int n)
{
	ckpt__sys6(SYS_futex, (long)word, FUTEX_WAKE_PRIVATE, n, 0, 0, 0);
}

static inline void ckpt__mutex_lock(ckpt__mutex *m)
{
	int c = 0;
	if (__atomic_compare_exchange_n(&m->v, &c, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
		return;
	if (c != 2)
		c = __atomic_exchange_n(&m->v, 2, __ATOMIC_ACQUIRE);
	while (c != 0) {
		ckpt__futex_wait(&m->v, 2);
		c = __atomic_exchange_n(&m->v, 2, __ATOMIC_ACQUIRE);
	}
}

static inline void ckpt__mutex_unlock(ckpt__mutex *m)
{
	if (__atomic_exchange_n(&m->v, 0, __ATOMIC_RELEASE) == 2)
		ckpt__futex_wake(&m->v, 1);
}

/* Lets m go, waits for a broadcast on c, takes m again.  May return
 * without one (callers wait in a loop over their condition). */
static inline void ckpt__cond_wait(ckpt__cond *c, ckpt__mutex *m)
{
	unsigned seq = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE);
	ckpt__mutex_unlock(m);
	ckpt__futex_wait(&c->seq, seq);
	ckpt__mutex_lock(m);
}

static inline void ckpt__cond_broadcast(ckpt__cond *c)
{
	__atomic_add_fetch(&c->seq, 1, __ATOMIC_RELEASE);
	ckpt__futex_wake(&c->seq, INT_MAX);
}

#endif /* CKPT_FUTEX_H */
