/*
 * held.c - the per-thread list of the locks a thread holds whose owner is
 * a thread id (held.h), kept by libckpt's pthread_mutex_* and
 * pthread_rwlock_* lock and unlock functions, and the fix a resume makes
 * with it.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Mutexes are told apart by glibc's __data.__kind (glibc 2.36,
 * nptl/pthreadP.h): the low two bits are the type (0 normal or timed,
 * 1 recursive, 2 error-checking, 3 adaptive), 16 robust, 32 priority
 * inheritance, 64 priority protection, 128 process-shared, 256 and 512
 * elision.  Only the types glibc checks the owner of (recursive and
 * error-checking: pthread_mutex_unlock compares __owner with the caller's
 * id) and the mutexes whose futex word holds the owner's id (robust, PI)
 * are listed.  What a lock or unlock of any other mutex costs beyond
 * libc's function and the call through a pointer that every interposer
 * makes is kind & 0x33 == 0: one load and one test (an adaptive mutex, 3,
 * goes on to the out-of-line path to be told apart).  C11's mtx_lock and
 * the other functions glibc builds on its own pthread_mutex_lock call it
 * internally, not through here: their mutexes are not listed.
 *
 * The list is the thread's, in its static TLS: only the thread itself
 * writes it, and the stop signal of a resumable commit (threadrec.c) can
 * interrupt it at any instruction.  So an entry is written before the count
 * that makes it part of the list, and the list is one step ahead of the
 * lock: a mutex is listed before the lock call and taken off after the
 * unlock has let it go, with compiler barriers in between.  A thread
 * stopped anywhere in here leaves a list that has every lock it holds,
 * maybe one more (not held, or held by another thread: the fix checks the
 * owner field first) and maybe one entry twice (the fix of the second
 * finds the new id and leaves it).
 *
 * A rwlock's unlock is a write unlock when its __cur_writer is the id
 * glibc gives this thread; that id is taken from __cur_writer itself after
 * each write lock (writer_tid), so telling one unlock from the other needs
 * no system call.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "held.h"
#include "interpose.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <time.h>

#define KIND_TYPE 3
#define KIND_RECURSIVE 1
#define KIND_ERRORCHECK 2
#define KIND_ROBUST 16
#define KIND_PI 32
/* The bits that can make a mutex one to list. */
#define KIND_WATCH (KIND_TYPE | KIND_ROBUST | KIND_PI)

/* The low bit of an entry marks a rwlock (both lock types are 8-aligned). */
#define TAG_RWLOCK ((uintptr_t)1)

/* The walk of a robust list stops after this many entries. */
#define ROBUST_MAX (1ul << 20)

#if defined(__has_attribute)
#if __has_attribute(no_stack_protector)
#define NO_STACK_PROTECTOR __attribute__((no_stack_protector))
#endif
#endif
#ifndef NO_STACK_PROTECTOR
#define NO_STACK_PROTECTOR
#endif

/* Orders the list's stores against the lock calls and a signal handler on
 * this thread; no instruction. */
#define BARRIER() __atomic_signal_fence(__ATOMIC_SEQ_CST)

struct held {
	unsigned n;         /* entries of e in the list */
	unsigned unlisted;  /* held locks the list had no room for */
	int32_t writer_tid; /* this thread's id in a rwlock's __cur_writer */
	uintptr_t e[CKPT__HELD_MAX]; /* a mutex, or a rwlock | TAG_RWLOCK */
};

static __thread struct held self_held __attribute__((tls_model("initial-exec")));

CKPT__REAL(int, pthread_mutex_lock, (pthread_mutex_t *))
CKPT__REAL(int, pthread_mutex_trylock, (pthread_mutex_t *))
CKPT__REAL(int, pthread_mutex_timedlock, (pthread_mutex_t *, const struct timespec *))
CKPT__REAL(int, pthread_mutex_clocklock, (pthread_mutex_t *, clockid_t, const struct timespec *))
CKPT__REAL(int, pthread_mutex_unlock, (pthread_mutex_t *))
CKPT__REAL(int, pthread_rwlock_wrlock, (pthread_rwlock_t *))
CKPT__REAL(int, pthread_rwlock_trywrlock, (pthread_rwlock_t *))
CKPT__REAL(int, pthread_rwlock_timedwrlock, (pthread_rwlock_t *, const struct timespec *))
CKPT__REAL(int, pthread_rwlock_clockwrlock,
	   (pthread_rwlock_t *, clockid_t, const struct timespec *))
CKPT__REAL(int, pthread_rwlock_unlock, (pthread_rwlock_t *))

__attribute__((constructor(103))) static void resolve(void)
{
	(void)get_pthread_mutex_lock();
	(void)get_pthread_mutex_trylock();
	(void)get_pthread_mutex_timedlock();
	(void)get_pthread_mutex_clocklock();
	(void)get_pthread_mutex_unlock();
	(void)get_pthread_rwlock_wrlock();
	(void)get_pthread_rwlock_trywrlock();
	(void)get_pthread_rwlock_timedwrlock();
	(void)get_pthread_rwlock_clockwrlock();
	(void)get_pthread_rwlock_unlock();
}

/* ---- the list -------------------------------------------------------------- */

static inline int mutex_kind(const pthread_mutex_t *m)
{
	return __atomic_load_n(&m->__data.__kind, __ATOMIC_RELAXED);
}

static inline int kind_watched(int kind)
{
	int type = kind & KIND_TYPE;
	return (kind & (KIND_ROBUST | KIND_PI)) || type == KIND_RECURSIVE ||
	       type == KIND_ERRORCHECK;
}

/* Where key is on the list, searched from the newest entry, or -1. */
static inline int list_find(const struct held *h, uintptr_t key)
{
	for (unsigned i = h->n; i-- > 0;)
		if (h->e[i] == key)
			return (int)i;
	return -1;
}

enum { NOTED_NOT, NOTED_LISTED, NOTED_COUNTED };

/* Before a lock call: lists key (counts it if the list is full), unless the
 * thread lists it already, which means it holds it (a recursive lock, or
 * one glibc refuses with EDEADLK).  Returns what it did. */
static inline int note(uintptr_t key)
{
	struct held *h = &self_held;
	if (list_find(h, key) >= 0)
		return NOTED_NOT;
	unsigned n = h->n;
	if (CKPT__LIKELY(n < CKPT__HELD_MAX)) {
		h->e[n] = key;
		BARRIER();
		h->n = n + 1;
		BARRIER();
		return NOTED_LISTED;
	}
	h->unlisted++;
	BARRIER();
	return NOTED_COUNTED;
}

/* After an unlock that let key go: takes it off the list, or off the count
 * if it was not listed. */
static inline void forget(uintptr_t key)
{
	struct held *h = &self_held;
	int i = list_find(h, key);
	if (i < 0) {
		if (h->unlisted)
			h->unlisted--;
		BARRIER();
		return;
	}
	unsigned last = h->n - 1;
	if ((unsigned)i != last) {
		h->e[i] = h->e[last];
		BARRIER();
	}
	h->n = last;
	BARRIER();
}

/* After a lock call that did not take the lock: undoes note(). */
static inline void note_undo(uintptr_t key, int noted)
{
	if (noted == NOTED_LISTED)
		forget(key);
	else if (noted == NOTED_COUNTED)
		self_held.unlisted--;
	BARRIER();
}

/* After the lock call of a listed-kind mutex that returned rc. */
static inline int mutex_locked(pthread_mutex_t *m, int kind, int noted, int rc)
{
	if (noted == NOTED_NOT)
		return rc;
	if (CKPT__UNLIKELY(rc != 0 && rc != EOWNERDEAD)) {
		/* Not taken (busy, timed out, not recoverable, deadlock). */
		note_undo((uintptr_t)m, noted);
	} else if ((kind & KIND_TYPE) == KIND_RECURSIVE &&
		   __atomic_load_n(&m->__data.__count, __ATOMIC_RELAXED) != 1) {
		/* A recursive lock of one the thread held unlisted: it is
		 * listed now, or was counted twice. */
		self_held.unlisted--;
		BARRIER();
	}
	return rc;
}

/* ---- the interposers ------------------------------------------------------- */

/* The interposer of `name`: a mutex of a kind not listed is libc's business
 * alone, and the test on its kind is all that is added to its lock.  The
 * rest, and the first call's resolution of libc's function, are out of
 * line, so that this path needs no stack frame. */
#define MUTEX_LOCK(name, params, args)                                          \
	static __attribute__((noinline)) int name##_listed params              \
	{                                                                       \
		int kind = mutex_kind(m);                                       \
		if (!kind_watched(kind))                                        \
			return get_##name() args;                               \
		int noted = note((uintptr_t)m);                                 \
		int rc = get_##name() args;                                     \
		return mutex_locked(m, kind, noted, rc);                        \
	}                                                                       \
	CKPT__EXPORT int name params                                            \
	{                                                                       \
		__typeof__(real_##name) next = real_##name;                     \
		if (CKPT__LIKELY(!(mutex_kind(m) & KIND_WATCH) && next))        \
			return next args;                                       \
		return name##_listed args;                                      \
	}

MUTEX_LOCK(pthread_mutex_lock, (pthread_mutex_t * m), (m))
MUTEX_LOCK(pthread_mutex_trylock, (pthread_mutex_t * m), (m))
MUTEX_LOCK(pthread_mutex_timedlock, (pthread_mutex_t * m, const struct timespec *t), (m, t))
MUTEX_LOCK(pthread_mutex_clocklock, (pthread_mutex_t * m, clockid_t c, const struct timespec *t),
	   (m, c, t))

static __attribute__((noinline)) int mutex_unlock_listed(pthread_mutex_t *m)
{
	int kind = mutex_kind(m);
	if (!kind_watched(kind))
		return get_pthread_mutex_unlock()(m);
	/* Read while the caller holds it: after the unlock the mutex may be
	 * another thread's, or gone. */
	int last = (kind & KIND_TYPE) != KIND_RECURSIVE ||
		   __atomic_load_n(&m->__data.__count, __ATOMIC_RELAXED) == 1;
	int rc = get_pthread_mutex_unlock()(m);
	if (rc == 0 && last)
		forget((uintptr_t)m);
	return rc;
}

CKPT__EXPORT int pthread_mutex_unlock(pthread_mutex_t *m)
{
	__typeof__(real_pthread_mutex_unlock) next = real_pthread_mutex_unlock;
	if (CKPT__LIKELY(!(mutex_kind(m) & KIND_WATCH) && next))
		return next(m);
	return mutex_unlock_listed(m);
}

/* Every write lock is listed. */
#define RWLOCK_WRLOCK(name, params, args)                                       \
	CKPT__EXPORT int name params                                            \
	{                                                                       \
		uintptr_t key = (uintptr_t)l | TAG_RWLOCK;                      \
		int noted = note(key);                                          \
		int rc = get_##name() args;                                     \
		if (rc == 0)                                                    \
			self_held.writer_tid = __atomic_load_n(                 \
				&l->__data.__cur_writer, __ATOMIC_RELAXED);     \
		else                                                            \
			note_undo(key, noted);                                  \
		return rc;                                                      \
	}

RWLOCK_WRLOCK(pthread_rwlock_wrlock, (pthread_rwlock_t * l), (l))
RWLOCK_WRLOCK(pthread_rwlock_trywrlock, (pthread_rwlock_t * l), (l))
RWLOCK_WRLOCK(pthread_rwlock_timedwrlock, (pthread_rwlock_t * l, const struct timespec *t), (l, t))
RWLOCK_WRLOCK(pthread_rwlock_clockwrlock,
	      (pthread_rwlock_t * l, clockid_t c, const struct timespec *t), (l, c, t))

static __attribute__((noinline)) int rwlock_unlock_listed(pthread_rwlock_t *l)
{
	/* glibc 2.36 write-unlocks when __cur_writer is the caller's id. */
	int32_t w = self_held.writer_tid;
	int writing = w != 0 && __atomic_load_n(&l->__data.__cur_writer, __ATOMIC_RELAXED) == w;
	int rc = get_pthread_rwlock_unlock()(l);
	if (rc == 0 && writing)
		forget((uintptr_t)l | TAG_RWLOCK);
	return rc;
}

CKPT__EXPORT int pthread_rwlock_unlock(pthread_rwlock_t *l)
{
	struct held *h = &self_held;
	__typeof__(real_pthread_rwlock_unlock) next = real_pthread_rwlock_unlock;
	/* A thread that holds no write lock can only be read-unlocking. */
	if (CKPT__LIKELY((h->n | h->unlisted) == 0 && next))
		return next(l);
	return rwlock_unlock_listed(l);
}

/* ---- the fix ------------------------------------------------------------------ */

/* The list of the thread whose thread pointer is tp: initial-exec TLS is at
 * one offset from the thread pointer in every thread.  The compiler folds
 * the difference into that offset (a load from the GOT): the calling
 * thread's descriptor is not read. */
static inline struct held *held_at(uintptr_t tp)
{
	uintptr_t off = (uintptr_t)&self_held - (uintptr_t)__builtin_thread_pointer();
	return (struct held *)(tp + off);
}

/* Gives the thread-id bits of the futex word at w new_tid if they are
 * old_tid, keeping FUTEX_WAITERS and FUTEX_OWNER_DIED.  1 if it did. */
static inline unsigned fix_word(uintptr_t w, int32_t old_tid, int32_t new_tid)
{
	unsigned *word = (unsigned *)w;
	unsigned v = __atomic_load_n(word, __ATOMIC_RELAXED);
	do {
		if ((v & FUTEX_TID_MASK) != (unsigned)old_tid)
			return 0;
	} while (!__atomic_compare_exchange_n(word, &v,
					      (v & ~(unsigned)FUTEX_TID_MASK) | (unsigned)new_tid,
					      0, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
	return 1;
}

static inline int tid_ok(int32_t tid)
{
	return tid > 0 && (uint32_t)tid <= FUTEX_TID_MASK;
}

NO_STACK_PROTECTOR unsigned ckpt__held_fix(uintptr_t tp, int32_t old_tid, int32_t new_tid)
{
	if (!tp || !tid_ok(old_tid) || !tid_ok(new_tid))
		return 0;
	struct held *h = held_at(tp);
	unsigned n = h->n < CKPT__HELD_MAX ? h->n : CKPT__HELD_MAX;
	unsigned fixed = 0;
	for (unsigned i = 0; i < n; i++) {
		uintptr_t key = h->e[i];
		if (key & TAG_RWLOCK) {
			pthread_rwlock_t *l = (pthread_rwlock_t *)(key & ~TAG_RWLOCK);
			if (__atomic_load_n(&l->__data.__cur_writer, __ATOMIC_RELAXED) == old_tid) {
				__atomic_store_n(&l->__data.__cur_writer, new_tid, __ATOMIC_RELAXED);
				fixed++;
			}
			continue;
		}
		pthread_mutex_t *m = (pthread_mutex_t *)key;
		if (!m)
			continue;
		unsigned hit = 0;
		if (__atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED) == old_tid) {
			__atomic_store_n(&m->__data.__owner, new_tid, __ATOMIC_RELAXED);
			hit = 1;
		}
		if (mutex_kind(m) & (KIND_ROBUST | KIND_PI))
			hit |= fix_word((uintptr_t)&m->__data.__lock, old_tid, new_tid);
		fixed += hit;
	}
	if (h->writer_tid == old_tid)
		h->writer_tid = new_tid;
	return fixed;
}

NO_STACK_PROTECTOR unsigned ckpt__held_fix_robust(uintptr_t head, int32_t old_tid,
						  int32_t new_tid)
{
	if (!head || !tid_ok(old_tid) || !tid_ok(new_tid))
		return 0;
	const struct robust_list_head *rh = (const struct robust_list_head *)head;
	long off = rh->futex_offset;
	unsigned fixed = 0;
	/* Bit 0 of a link marks a PI futex (the kernel's fetch_robust_entry). */
	uintptr_t e = (uintptr_t)rh->list.next & ~(uintptr_t)1;
	for (unsigned long k = 0; e && e != head && k < ROBUST_MAX; k++) {
		fixed += fix_word(e + (uintptr_t)off, old_tid, new_tid);
		e = (uintptr_t)((const struct robust_list *)e)->next & ~(uintptr_t)1;
	}
	/* A lock or unlock under way; maybe an entry of the list, fixed
	 * already and left alone now. */
	uintptr_t p = (uintptr_t)rh->list_op_pending & ~(uintptr_t)1;
	if (p)
		fixed += fix_word(p + (uintptr_t)off, old_tid, new_tid);
	return fixed;
}

NO_STACK_PROTECTOR unsigned ckpt__held_unlisted(uintptr_t tp)
{
	return tp ? held_at(tp)->unlisted : 0;
}

unsigned ckpt__held_count(void)
{
	return self_held.n;
}
