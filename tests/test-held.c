/*
 * test-held.c - the locks a thread holds with its id in them (held.c): what
 * the interposed lock functions list, and the fix of a resume giving them
 * a thread's new id.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A resumed thread keeps its locks but gets a new kernel id.  The tests
 * make that situation without a resume: a thread takes a lock, the test
 * writes a made-up "old" id into the owner fields, as the killed process
 * left them, and checks what glibc does with the lock then, and after
 * ckpt__held_fix (or ckpt__held_fix_robust) gave the lock the thread's
 * real id.  The fix is made from another thread, as the resume makes it,
 * with the locking thread's thread pointer.
 */
#include "held.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The id the killed process's thread had. */
#define OLD_TID 1234567

/* ---- a thread that runs what it is given, one call at a time ------------- */

struct worker {
	pthread_t t;
	pthread_mutex_t mu; /* a default mutex: never listed */
	pthread_cond_t cv;
	int (*fn)(void *);
	void *arg;
	int rc, pending, quit;
	uintptr_t tp;
	pid_t tid;
};

static void *worker_main(void *p)
{
	struct worker *w = p;
	pthread_mutex_lock(&w->mu);
	w->tp = (uintptr_t)__builtin_thread_pointer();
	w->tid = gettid();
	pthread_cond_broadcast(&w->cv);
	for (;;) {
		while (!w->pending && !w->quit)
			pthread_cond_wait(&w->cv, &w->mu);
		if (!w->pending)
			break;
		pthread_mutex_unlock(&w->mu);
		int rc = w->fn(w->arg);
		pthread_mutex_lock(&w->mu);
		w->rc = rc;
		w->pending = 0;
		pthread_cond_broadcast(&w->cv);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

static void worker_start(struct worker *w)
{
	memset(w, 0, sizeof *w);
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	cr_assert_eq(pthread_create(&w->t, NULL, worker_main, w), 0);
	pthread_mutex_lock(&w->mu);
	while (!w->tid)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
}

/* Runs fn(arg) on the worker and returns what it returned. */
static int on_worker(struct worker *w, int (*fn)(void *), void *arg)
{
	pthread_mutex_lock(&w->mu);
	w->fn = fn;
	w->arg = arg;
	w->pending = 1;
	pthread_cond_broadcast(&w->cv);
	while (w->pending)
		pthread_cond_wait(&w->cv, &w->mu);
	int rc = w->rc;
	pthread_mutex_unlock(&w->mu);
	return rc;
}

static void worker_stop(struct worker *w)
{
	pthread_mutex_lock(&w->mu);
	w->quit = 1;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->t, NULL);
}

static int do_lock(void *m) { return pthread_mutex_lock(m); }
static int do_trylock(void *m) { return pthread_mutex_trylock(m); }
static int do_unlock(void *m) { return pthread_mutex_unlock(m); }
static int do_wrlock(void *l) { return pthread_rwlock_wrlock(l); }
static int do_rwunlock(void *l) { return pthread_rwlock_unlock(l); }
static int do_count(void *unused) { (void)unused; return (int)ckpt__held_count(); }

static uintptr_t self_tp(void)
{
	return (uintptr_t)__builtin_thread_pointer();
}

static void mutex_make(pthread_mutex_t *m, int type, int robust, int protocol)
{
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	cr_assert_eq(pthread_mutexattr_settype(&a, type), 0);
	cr_assert_eq(pthread_mutexattr_setrobust(&a, robust), 0);
	cr_assert_eq(pthread_mutexattr_setprotocol(&a, protocol), 0);
	cr_assert_eq(pthread_mutex_init(m, &a), 0);
	pthread_mutexattr_destroy(&a);
}

/* The futex word's thread-id bits set to tid, its flag bits kept. */
static void word_set_tid(pthread_mutex_t *m, pid_t tid)
{
	unsigned v = (unsigned)m->__data.__lock;
	m->__data.__lock = (int)((v & ~(unsigned)FUTEX_TID_MASK) | (unsigned)tid);
}

static pid_t word_tid(const pthread_mutex_t *m)
{
	return (pid_t)((unsigned)m->__data.__lock & FUTEX_TID_MASK);
}

/* Another thread (this one) can take m, and give it back. */
static void mutex_works_here(pthread_mutex_t *m)
{
	cr_assert_eq(pthread_mutex_lock(m), 0);
	cr_assert_eq(pthread_mutex_unlock(m), 0);
	cr_assert_eq(pthread_mutex_trylock(m), 0);
	cr_assert_eq(pthread_mutex_unlock(m), 0);
	cr_assert_eq(ckpt__held_count(), 0, "listed after the last unlock: %u",
		     ckpt__held_count());
}

/* ---- what is listed ----------------------------------------------------------- */

Test(held, default_normal_and_adaptive_mutexes_and_read_locks_are_not_listed)
{
	pthread_mutex_t d = PTHREAD_MUTEX_INITIALIZER, n, a;
	mutex_make(&n, PTHREAD_MUTEX_NORMAL, PTHREAD_MUTEX_STALLED, PTHREAD_PRIO_NONE);
	mutex_make(&a, PTHREAD_MUTEX_ADAPTIVE_NP, PTHREAD_MUTEX_STALLED, PTHREAD_PRIO_NONE);
	pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
	cr_assert_eq(pthread_mutex_lock(&d), 0);
	cr_assert_eq(pthread_mutex_trylock(&n), 0);
	cr_assert_eq(pthread_mutex_lock(&a), 0);
	cr_assert_eq(pthread_rwlock_rdlock(&l), 0);
	cr_assert_eq(ckpt__held_count(), 0, "listed: %u", ckpt__held_count());
	cr_assert_eq(pthread_rwlock_unlock(&l), 0);
	cr_assert_eq(pthread_mutex_unlock(&a), 0);
	cr_assert_eq(pthread_mutex_unlock(&n), 0);
	cr_assert_eq(pthread_mutex_unlock(&d), 0);
	cr_assert_eq(ckpt__held_count(), 0);
	cr_assert_eq(ckpt__held_unlisted(self_tp()), 0);
}

/* Priority-protect mutexes are listed by their type bits like these; not
 * tried here: glibc refuses to lock one (EINVAL) where the thread cannot
 * take the ceiling's real-time priority. */
Test(held, every_kind_whose_owner_matters_is_listed_while_held)
{
	static const struct {
		int type, robust, protocol, pshared;
	} kinds[] = {
		{PTHREAD_MUTEX_ERRORCHECK, PTHREAD_MUTEX_STALLED, PTHREAD_PRIO_NONE, 0},
		{PTHREAD_MUTEX_RECURSIVE, PTHREAD_MUTEX_STALLED, PTHREAD_PRIO_NONE, 0},
		{PTHREAD_MUTEX_NORMAL, PTHREAD_MUTEX_ROBUST, PTHREAD_PRIO_NONE, 0},
		{PTHREAD_MUTEX_NORMAL, PTHREAD_MUTEX_STALLED, PTHREAD_PRIO_INHERIT, 0},
		{PTHREAD_MUTEX_ERRORCHECK, PTHREAD_MUTEX_STALLED, PTHREAD_PRIO_NONE, 1},
	};
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
		pthread_mutexattr_t a;
		pthread_mutex_t m;
		pthread_mutexattr_init(&a);
		pthread_mutexattr_settype(&a, kinds[i].type);
		pthread_mutexattr_setrobust(&a, kinds[i].robust);
		pthread_mutexattr_setprotocol(&a, kinds[i].protocol);
		pthread_mutexattr_setpshared(&a, kinds[i].pshared ? PTHREAD_PROCESS_SHARED
								  : PTHREAD_PROCESS_PRIVATE);
		cr_assert_eq(pthread_mutex_init(&m, &a), 0, "kind %zu", i);
		pthread_mutexattr_destroy(&a);
		int rc = pthread_mutex_lock(&m);
		cr_assert_eq(rc, 0, "kind %zu (__kind %d): lock %s", i, m.__data.__kind,
			     strerror(rc));
		cr_expect_eq(ckpt__held_count(), 1, "kind %zu (__kind %d): %u listed", i,
			     m.__data.__kind, ckpt__held_count());
		cr_assert_eq(pthread_mutex_unlock(&m), 0);
		cr_expect_eq(ckpt__held_count(), 0, "kind %zu: %u listed after the unlock", i,
			     ckpt__held_count());
		pthread_mutex_destroy(&m);
	}
}

Test(held, nested_recursive_locks_stay_listed_until_the_last_unlock)
{
	pthread_mutex_t m = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
	cr_assert_eq(pthread_mutex_lock(&m), 0);
	cr_assert_eq(pthread_mutex_trylock(&m), 0);
	cr_assert_eq(pthread_mutex_lock(&m), 0);
	cr_assert_eq(m.__data.__count, 3);
	cr_assert_eq(ckpt__held_count(), 1, "listed: %u", ckpt__held_count());
	for (int left = 2; left >= 0; left--) {
		cr_assert_eq(pthread_mutex_unlock(&m), 0);
		cr_assert_eq(ckpt__held_count(), left > 0, "%d left: %u listed", left,
			     ckpt__held_count());
	}
	/* An unlock too many is glibc's EPERM, and changes nothing. */
	cr_assert_eq(pthread_mutex_unlock(&m), EPERM);
	cr_assert_eq(ckpt__held_count(), 0);
}

Test(held, locks_not_taken_are_not_listed)
{
	struct worker w;
	worker_start(&w);
	pthread_mutex_t e;
	mutex_make(&e, PTHREAD_MUTEX_ERRORCHECK, PTHREAD_MUTEX_STALLED, PTHREAD_PRIO_NONE);
	pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
	cr_assert_eq(on_worker(&w, do_lock, &e), 0);
	cr_assert_eq(on_worker(&w, do_wrlock, &l), 0);
	cr_assert_eq(on_worker(&w, do_count, NULL), 2);

	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_nsec += 20000000;
	if (t.tv_nsec >= 1000000000) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000;
	}
	cr_assert_eq(pthread_mutex_trylock(&e), EBUSY);
	cr_assert_eq(pthread_mutex_timedlock(&e, &t), ETIMEDOUT);
	cr_assert_eq(pthread_mutex_clocklock(&e, CLOCK_REALTIME, &t), ETIMEDOUT);
	cr_assert_eq(pthread_rwlock_trywrlock(&l), EBUSY);
	cr_assert_eq(pthread_rwlock_timedwrlock(&l, &t), ETIMEDOUT);
	cr_assert_eq(pthread_rwlock_clockwrlock(&l, CLOCK_REALTIME, &t), ETIMEDOUT);
	cr_assert_eq(ckpt__held_count(), 0, "listed: %u", ckpt__held_count());
	cr_assert_eq(ckpt__held_unlisted(self_tp()), 0);

	/* The holder's own second lock: EDEADLK, and listed once. */
	cr_assert_eq(on_worker(&w, do_lock, &e), EDEADLK);
	cr_assert_eq(on_worker(&w, do_wrlock, &l), EDEADLK);
	cr_assert_eq(on_worker(&w, do_count, NULL), 2);
	cr_assert_eq(on_worker(&w, do_rwunlock, &l), 0);
	cr_assert_eq(on_worker(&w, do_unlock, &e), 0);
	cr_assert_eq(on_worker(&w, do_count, NULL), 0);
	worker_stop(&w);
}

struct cond_wait {
	pthread_mutex_t *m;
	pthread_cond_t cv;
	int go, waiting;
	unsigned listed_after;
};

static int wait_on_cond(void *p)
{
	struct cond_wait *c = p;
	int rc = pthread_mutex_lock(c->m);
	if (rc)
		return rc;
	c->waiting = 1;
	pthread_cond_broadcast(&c->cv);
	while (!c->go)
		pthread_cond_wait(&c->cv, c->m);
	c->listed_after = ckpt__held_count();
	return pthread_mutex_unlock(c->m);
}

Test(held, a_mutex_a_thread_waits_with_stays_listed_and_is_fixed_only_by_its_owner)
{
	pthread_mutex_t e;
	mutex_make(&e, PTHREAD_MUTEX_ERRORCHECK, PTHREAD_MUTEX_STALLED, PTHREAD_PRIO_NONE);
	struct cond_wait c = {.m = &e};
	pthread_cond_init(&c.cv, NULL);
	struct worker w;
	worker_start(&w);
	pthread_mutex_lock(&w.mu);
	w.fn = wait_on_cond;
	w.arg = &c;
	w.pending = 1;
	pthread_cond_broadcast(&w.cv);
	pthread_mutex_unlock(&w.mu);

	/* glibc let e go inside pthread_cond_wait: this thread takes it,
	 * while it is on the waiting thread's list. */
	cr_assert_eq(pthread_mutex_lock(&e), 0);
	while (!c.waiting) {
		pthread_cond_wait(&c.cv, &e);
	}
	pid_t me = gettid();
	cr_assert_eq(e.__data.__owner, me);
	cr_assert_eq(ckpt__held_fix(w.tp, w.tid, OLD_TID), 0);
	cr_assert_eq(e.__data.__owner, me, "the waiter's fix took another thread's mutex");
	c.go = 1;
	pthread_cond_broadcast(&c.cv);
	cr_assert_eq(pthread_mutex_unlock(&e), 0);

	pthread_mutex_lock(&w.mu);
	while (w.pending)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	cr_assert_eq(w.rc, 0);
	cr_assert_eq(c.listed_after, 1, "listed after the wait: %u", c.listed_after);
	cr_assert_eq(on_worker(&w, do_count, NULL), 0);
	worker_stop(&w);
}

Test(held, more_locks_than_the_list_holds_are_counted)
{
	enum { N = CKPT__HELD_MAX + 5 };
	static pthread_mutex_t m[N];
	for (int i = 0; i < N; i++) {
		mutex_make(&m[i], PTHREAD_MUTEX_ERRORCHECK, PTHREAD_MUTEX_STALLED,
			   PTHREAD_PRIO_NONE);
		cr_assert_eq(pthread_mutex_lock(&m[i]), 0);
	}
	pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
	cr_assert_eq(pthread_rwlock_wrlock(&l), 0);
	cr_assert_eq(ckpt__held_count(), CKPT__HELD_MAX);
	cr_assert_eq(ckpt__held_unlisted(self_tp()), 6, "unlisted: %u",
		     ckpt__held_unlisted(self_tp()));
	/* A recursive relock of an unlisted mutex is not counted twice. */
	pthread_mutex_t r = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
	cr_assert_eq(pthread_mutex_lock(&r), 0);
	cr_assert_eq(pthread_mutex_lock(&r), 0);
	cr_assert_eq(ckpt__held_unlisted(self_tp()), 7);

	/* The fix reaches the listed ones only. */
	pid_t me = gettid();
	for (int i = 0; i < N; i++)
		m[i].__data.__owner = OLD_TID;
	cr_assert_eq(ckpt__held_fix(self_tp(), OLD_TID, me), CKPT__HELD_MAX);
	for (int i = 0; i < N; i++)
		cr_assert_eq(m[i].__data.__owner, i < CKPT__HELD_MAX ? me : OLD_TID, "mutex %d",
			     i);
	for (int i = CKPT__HELD_MAX; i < N; i++)
		m[i].__data.__owner = me;

	cr_assert_eq(pthread_mutex_unlock(&r), 0);
	cr_assert_eq(pthread_mutex_unlock(&r), 0);
	cr_assert_eq(pthread_rwlock_unlock(&l), 0);
	for (int i = 0; i < N; i++)
		cr_assert_eq(pthread_mutex_unlock(&m[i]), 0);
	cr_assert_eq(ckpt__held_count(), 0);
	cr_assert_eq(ckpt__held_unlisted(self_tp()), 0);
}

/* ---- the fix ------------------------------------------------------------------ */

Test(held, errorcheck_mutex_unlocks_again_after_the_fix)
{
	struct worker w;
	worker_start(&w);
	pthread_mutex_t m;
	mutex_make(&m, PTHREAD_MUTEX_ERRORCHECK, PTHREAD_MUTEX_STALLED, PTHREAD_PRIO_NONE);
	cr_assert_eq(on_worker(&w, do_lock, &m), 0);
	cr_assert_eq(on_worker(&w, do_count, NULL), 1);
	cr_assert_eq(m.__data.__owner, w.tid);

	m.__data.__owner = OLD_TID;
	cr_assert_eq(on_worker(&w, do_unlock, &m), EPERM);
	cr_assert_eq(on_worker(&w, do_count, NULL), 1, "still held, still listed");

	cr_assert_eq(ckpt__held_fix(w.tp, OLD_TID, 0), 0, "a new id of 0 is refused");
	cr_assert_eq(ckpt__held_fix(w.tp, OLD_TID + 1, w.tid), 0);
	cr_assert_eq(m.__data.__owner, OLD_TID);
	cr_assert_eq(ckpt__held_fix(w.tp, OLD_TID, w.tid), 1);
	cr_assert_eq(m.__data.__owner, w.tid, "owner %d, thread %d", m.__data.__owner, w.tid);
	cr_assert_eq(on_worker(&w, do_unlock, &m), 0);
	cr_assert_eq(on_worker(&w, do_count, NULL), 0);
	mutex_works_here(&m);
	worker_stop(&w);
}

Test(held, recursive_mutex_locks_and_unlocks_again_after_the_fix)
{
	struct worker w;
	worker_start(&w);
	pthread_mutex_t m = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
	for (int i = 0; i < 3; i++)
		cr_assert_eq(on_worker(&w, do_lock, &m), 0);
	cr_assert_eq(on_worker(&w, do_count, NULL), 1);

	m.__data.__owner = OLD_TID;
	/* The holder is a stranger to its own mutex now: a lock would wait
	 * for ever (trylock says so), an unlock is refused. */
	cr_assert_eq(on_worker(&w, do_trylock, &m), EBUSY);
	cr_assert_eq(on_worker(&w, do_unlock, &m), EPERM);
	cr_assert_eq(m.__data.__count, 3);

	cr_assert_eq(ckpt__held_fix(w.tp, OLD_TID, w.tid), 1);
	cr_assert_eq(m.__data.__owner, w.tid);
	cr_assert_eq(on_worker(&w, do_trylock, &m), 0);
	cr_assert_eq(m.__data.__count, 4);
	for (int left = 3; left >= 0; left--) {
		cr_assert_eq(on_worker(&w, do_unlock, &m), 0);
		cr_assert_eq(on_worker(&w, do_count, NULL), left > 0, "%d left", left);
	}
	mutex_works_here(&m);
	worker_stop(&w);
}

Test(held, robust_mutex_unlocks_again_after_the_fix)
{
	struct worker w;
	worker_start(&w);
	pthread_mutex_t m;
	mutex_make(&m, PTHREAD_MUTEX_ERRORCHECK, PTHREAD_MUTEX_ROBUST, PTHREAD_PRIO_NONE);
	cr_assert_eq(on_worker(&w, do_lock, &m), 0);
	cr_assert_eq(word_tid(&m), w.tid);

	m.__data.__owner = OLD_TID;
	word_set_tid(&m, OLD_TID);
	cr_assert_eq(on_worker(&w, do_unlock, &m), EPERM);

	cr_assert_eq(ckpt__held_fix(w.tp, OLD_TID, w.tid), 1);
	cr_assert_eq(m.__data.__owner, w.tid);
	cr_assert_eq(word_tid(&m), w.tid);
	cr_assert_eq(on_worker(&w, do_unlock, &m), 0);
	cr_assert_eq(on_worker(&w, do_count, NULL), 0);
	mutex_works_here(&m);
	worker_stop(&w);
}

Test(held, pi_mutex_is_free_again_after_the_fix)
{
	struct worker w;
	worker_start(&w);
	pthread_mutex_t m;
	mutex_make(&m, PTHREAD_MUTEX_RECURSIVE, PTHREAD_MUTEX_STALLED, PTHREAD_PRIO_INHERIT);
	cr_assert_eq(on_worker(&w, do_lock, &m), 0);
	cr_assert_eq(word_tid(&m), w.tid);

	m.__data.__owner = OLD_TID;
	word_set_tid(&m, OLD_TID);
	cr_assert_eq(on_worker(&w, do_unlock, &m), EPERM);

	cr_assert_eq(ckpt__held_fix(w.tp, OLD_TID, w.tid), 1);
	cr_assert_eq(m.__data.__owner, w.tid);
	cr_assert_eq(word_tid(&m), w.tid, "futex word %#x", (unsigned)m.__data.__lock);
	cr_assert_eq(on_worker(&w, do_unlock, &m), 0);
	/* With the owner alone fixed, glibc would have passed the unlock to
	 * the kernel, which refuses it for the word's other id: still held. */
	cr_assert_eq(m.__data.__lock, 0, "futex word %#x", (unsigned)m.__data.__lock);
	mutex_works_here(&m);
	worker_stop(&w);
}

Test(held, write_held_rwlock_unlocks_for_writing_again_after_the_fix)
{
	struct worker w;
	worker_start(&w);
	pthread_rwlock_t l = PTHREAD_RWLOCK_INITIALIZER;
	cr_assert_eq(on_worker(&w, do_wrlock, &l), 0);
	cr_assert_eq(on_worker(&w, do_count, NULL), 1);
	cr_assert_eq(l.__data.__cur_writer, w.tid);

	pthread_rwlock_t held;
	memcpy(&held, &l, sizeof held);
	l.__data.__cur_writer = OLD_TID;
	/* glibc 2.36 takes an unlock by a thread that is not __cur_writer for
	 * a read unlock: it returns 0, leaves the writer, and counts one
	 * reader fewer than none. */
	unsigned readers = l.__data.__readers;
	cr_assert_eq(on_worker(&w, do_rwunlock, &l), 0);
	cr_assert_eq(l.__data.__cur_writer, OLD_TID);
	cr_assert_eq(l.__data.__readers >> 3, ((readers >> 3) - 1) & 0x1fffffffu,
		     "readers %#x before, %#x after", readers, l.__data.__readers);
	cr_assert_eq(on_worker(&w, do_count, NULL), 1, "a read unlock took the writer off");

	/* The same write-held lock, made again. */
	memcpy(&l, &held, sizeof l);
	l.__data.__cur_writer = OLD_TID;
	cr_assert_eq(ckpt__held_fix(w.tp, OLD_TID, w.tid), 1);
	cr_assert_eq(l.__data.__cur_writer, w.tid);
	cr_assert_eq(on_worker(&w, do_rwunlock, &l), 0);
	cr_assert_eq(l.__data.__cur_writer, 0);
	/* No reader, not write-locked (glibc's __readers: the reader count
	 * above bit 3, bit 1 write-locked; bit 0, the phase, may stay). */
	cr_assert_eq(l.__data.__readers & ~1u, 0u, "readers %#x", l.__data.__readers);
	cr_assert_eq(on_worker(&w, do_count, NULL), 0);

	cr_assert_eq(pthread_rwlock_wrlock(&l), 0);
	cr_assert_eq(pthread_rwlock_unlock(&l), 0);
	cr_assert_eq(pthread_rwlock_trywrlock(&l), 0);
	cr_assert_eq(pthread_rwlock_unlock(&l), 0);
	cr_assert_eq(pthread_rwlock_rdlock(&l), 0);
	cr_assert_eq(pthread_rwlock_unlock(&l), 0);
	cr_assert_eq(ckpt__held_count(), 0);
	worker_stop(&w);
}

/* ---- the robust list ---------------------------------------------------------- */

static uintptr_t robust_head_of(pid_t tid)
{
	void *head = NULL;
	size_t len = 0;
	cr_assert_eq(syscall(SYS_get_robust_list, tid, &head, &len), 0, "%s", strerror(errno));
	cr_assert_eq(len, sizeof(struct robust_list_head));
	return (uintptr_t)head;
}

Test(held, robust_list_fix_gives_the_futex_words_the_new_id)
{
	struct worker w;
	worker_start(&w);
	pthread_mutex_t a, b, other;
	mutex_make(&a, PTHREAD_MUTEX_NORMAL, PTHREAD_MUTEX_ROBUST, PTHREAD_PRIO_NONE);
	mutex_make(&b, PTHREAD_MUTEX_RECURSIVE, PTHREAD_MUTEX_ROBUST, PTHREAD_PRIO_NONE);
	mutex_make(&other, PTHREAD_MUTEX_NORMAL, PTHREAD_MUTEX_ROBUST, PTHREAD_PRIO_NONE);
	cr_assert_eq(on_worker(&w, do_lock, &a), 0);
	cr_assert_eq(on_worker(&w, do_lock, &b), 0);
	cr_assert_eq(pthread_mutex_lock(&other), 0);
	uintptr_t head = robust_head_of(w.tid);
	cr_assert_neq(head, 0);

	word_set_tid(&a, OLD_TID);
	a.__data.__lock |= (int)FUTEX_WAITERS;
	word_set_tid(&b, OLD_TID);
	cr_assert_eq(on_worker(&w, do_unlock, &a), EPERM);
	cr_assert_eq(ckpt__held_fix_robust(head, OLD_TID, w.tid), 2);
	cr_assert_eq(word_tid(&a), w.tid);
	cr_assert_eq((unsigned)a.__data.__lock & FUTEX_WAITERS, FUTEX_WAITERS, "flag lost");
	cr_assert_eq(word_tid(&b), w.tid);
	cr_assert_eq(word_tid(&other), gettid(), "another thread's mutex changed");
	/* A second pass finds nothing more to do. */
	cr_assert_eq(ckpt__held_fix_robust(head, OLD_TID, w.tid), 0);

	cr_assert_eq(on_worker(&w, do_unlock, &a), 0);
	cr_assert_eq(on_worker(&w, do_unlock, &b), 0);
	cr_assert_eq(pthread_mutex_unlock(&other), 0);
	mutex_works_here(&a);
	mutex_works_here(&b);
	worker_stop(&w);
}

struct dying {
	pthread_mutex_t *m;
	int fix;
	unsigned fixed;
};

/* Takes the mutex, makes its word look like the killed process's, maybe
 * fixes it, and exits holding it. */
static void *die_holding(void *p)
{
	struct dying *d = p;
	if (pthread_mutex_lock(d->m) != 0)
		return NULL;
	word_set_tid(d->m, OLD_TID);
	d->m->__data.__owner = OLD_TID;
	if (d->fix) {
		pid_t me = gettid();
		d->fixed = ckpt__held_fix_robust(robust_head_of(0), OLD_TID, me);
		d->fixed += ckpt__held_fix(self_tp(), OLD_TID, me);
	}
	return NULL;
}

Test(held, a_thread_exiting_with_a_fixed_robust_mutex_leaves_it_owner_dead)
{
	pthread_mutex_t m;
	mutex_make(&m, PTHREAD_MUTEX_NORMAL, PTHREAD_MUTEX_ROBUST, PTHREAD_PRIO_NONE);
	struct dying d = {.m = &m, .fix = 1};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, die_holding, &d), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	/* The robust-list fix and the held-list fix both found the word
	 * (the second one the owner only: the word was right by then). */
	cr_assert_eq(d.fixed, 2, "fixed %u", d.fixed);
	int rc = pthread_mutex_lock(&m);
	cr_assert_eq(rc, EOWNERDEAD, "%s", strerror(rc));
	cr_assert_eq(ckpt__held_count(), 1, "taken from a dead owner, and listed");
	cr_assert_eq(pthread_mutex_consistent(&m), 0);
	cr_assert_eq(pthread_mutex_unlock(&m), 0);
	cr_assert_eq(ckpt__held_count(), 0);
	mutex_works_here(&m);
}

Test(held, a_thread_exiting_with_an_unfixed_robust_mutex_leaves_it_locked)
{
	/* Why the robust list must be fixed: the kernel marks at exit only
	 * the words with the thread's id. */
	pthread_mutex_t m;
	mutex_make(&m, PTHREAD_MUTEX_NORMAL, PTHREAD_MUTEX_ROBUST, PTHREAD_PRIO_NONE);
	struct dying d = {.m = &m, .fix = 0};
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, die_holding, &d), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += 50000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	int rc = pthread_mutex_timedlock(&m, &ts);
	cr_assert_eq(rc, ETIMEDOUT, "%s", strerror(rc));
	cr_assert_eq(ckpt__held_count(), 0);
}
