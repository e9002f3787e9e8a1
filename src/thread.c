/*
 * thread.c - the thread registry.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A thread whose stack is write-protected dies at its first push: the
 * kernel cannot write the SIGSEGV frame onto that same stack.  The same goes
 * for the TLS block (glibc and the kernel write errno and the rseq area
 * there) and for an alternate signal stack.  So ckpt must know every
 * thread's stack, including stacks that are not in use yet: glibc keeps the
 * stacks of dead threads in a cache and hands them to new threads, and a new
 * thread starts running on its stack before any code of ours runs in it.
 *
 * Threads created through pthread_create (interposed below) register their
 * exact stack from inside the new thread before the start routine runs; a
 * pthread key destructor marks them dead when they exit.  A dead thread's
 * stack stays excluded while glibc may still reuse it, which is checked by
 * reading the thread descriptor it leaves at the top of the stack (the
 * tcbhead_t self pointers) without risking a fault (process_vm_readv).
 * Threads ckpt did not see start are found in /proc/self/task and located by
 * the stack pointer the kernel reports for them; their mapping is pinned
 * (never protected, always reported dirty), the safe choice when a stack may
 * share a mapping with other data.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "thread.h"
#include "dir.h"
#include "error.h"
#include "interpose.h"
#include "state.h"
#include "track.h"

#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/rseq.h>
#include <sys/uio.h>
#include <time.h>

/* T_RESUMING: a stack a resume is bringing back (a thread it recreates, or
 * a stack glibc keeps for reuse); excluded like a live thread's until the
 * resume settles it (ckpt__threads_adopted). */
enum { T_FREE, T_STARTING, T_LIVE, T_EXITED, T_RESUMING };

struct ckpt__thread {
	int state; /* T_*, atomic */
	int user_stack; /* the program supplied the stack: never cached by glibc */
	pid_t tid;
	uintptr_t stack_lo, stack_hi;
	uintptr_t tp; /* thread pointer (glibc's struct pthread) */
	uintptr_t alt_lo, alt_hi;
	void *(*fn)(void *);
	void *arg;
};

#define CHUNK_ENTRIES 256

struct chunk {
	struct chunk *next;
	struct ckpt__thread e[CHUNK_ENTRIES];
};

struct registry {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int creating; /* threads created but not registered yet */
	int holding;  /* the tracker is computing what to protect */
	pthread_key_t key;
	struct chunk *chunks;
	struct ckpt__thread main;
};

static __thread struct ckpt__thread *self_entry __attribute__((tls_model("initial-exec")));

#define R ((struct registry *)ckpt__g.thread_chunks)

CKPT__REAL(int, pthread_create, (pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))
CKPT__REAL(int, sigaltstack, (const stack_t *, stack_t *))

static uintptr_t thread_pointer(void)
{
	return (uintptr_t)pthread_self();
}

static void thread_gone(void *p)
{
	struct ckpt__thread *e = p;
	/* A stack the program supplied is the program's memory again. */
	__atomic_store_n(&e->state, e->user_stack ? T_FREE : T_EXITED, __ATOMIC_RELEASE);
}

static void atfork_prepare(void)
{
	if (R)
		pthread_mutex_lock(&R->lock);
}

static void atfork_parent(void)
{
	if (R)
		pthread_mutex_unlock(&R->lock);
}

static void atfork_child(void)
{
	if (!R)
		return;
	/* Only the forking thread exists in the child; the other threads'
	 * stacks stay mapped and glibc moves them to its cache. */
	for (struct chunk *c = R->chunks; c; c = c->next)
		for (int i = 0; i < CHUNK_ENTRIES; i++) {
			struct ckpt__thread *e = &c->e[i];
			if (e == self_entry)
				e->tid = (pid_t)ckpt__raw_gettid();
			else if (e->state == T_LIVE || e->state == T_STARTING)
				e->state = e->user_stack ? T_FREE : T_EXITED;
		}
	if (self_entry == &R->main || !self_entry)
		R->main.tid = getpid();
	R->creating = 0;
	R->holding = 0;
	pthread_mutex_init(&R->lock, NULL);
	pthread_cond_init(&R->cond, NULL);
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_rc;

static void init_registry(void)
{
	struct registry *r = ckpt__mem_alloc(sizeof *r);
	if (!r) {
		init_rc = -1;
		return;
	}
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	if (pthread_key_create(&r->key, thread_gone) != 0) {
		init_rc = -1;
		return;
	}
	/* The constructor runs on the main thread: its TLS block is the one
	 * ld.so allocated, its stack the [stack] mapping. */
	r->main.state = T_LIVE;
	r->main.tid = getpid();
	r->main.tp = thread_pointer();
	stack_t ss;
	if (get_sigaltstack()(NULL, &ss) == 0 && !(ss.ss_flags & SS_DISABLE) && ss.ss_size) {
		r->main.alt_lo = ckpt__page_down((uintptr_t)ss.ss_sp);
		r->main.alt_hi = ckpt__page_up((uintptr_t)ss.ss_sp + ss.ss_size);
	}
	self_entry = &r->main;
	ckpt__g.main_thread = &r->main;
	__atomic_store_n(&ckpt__g.thread_chunks, r, __ATOMIC_RELEASE);
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

int ckpt__threads_init(void)
{
	pthread_once(&init_once, init_registry);
	return init_rc;
}

__attribute__((constructor(102))) static void threads_ctor(void)
{
	(void)get_pthread_create();
	(void)get_sigaltstack();
	ckpt__threads_init();
}

/* Registry lock held. */
static struct ckpt__thread *entry_alloc(void)
{
	for (struct chunk *c = R->chunks; c; c = c->next)
		for (int i = 0; i < CHUNK_ENTRIES; i++)
			if (c->e[i].state == T_FREE) {
				memset(&c->e[i], 0, sizeof c->e[i]);
				return &c->e[i];
			}
	struct chunk *c = ckpt__mem_alloc(sizeof *c);
	if (!c)
		return NULL;
	c->next = R->chunks;
	R->chunks = c;
	return &c->e[0];
}

static void *trampoline(void *p)
{
	struct ckpt__thread *e = p;
	uintptr_t lo = 0, hi = 0;
	pthread_attr_t a;
	if (pthread_getattr_np(pthread_self(), &a) == 0) {
		void *addr;
		size_t size;
		if (pthread_attr_getstack(&a, &addr, &size) == 0) {
			lo = ckpt__page_down((uintptr_t)addr);
			hi = ckpt__page_up((uintptr_t)addr + size);
		}
		pthread_attr_destroy(&a);
	}
	uintptr_t tp = thread_pointer();
	self_entry = e;
	pthread_mutex_lock(&R->lock);
	/* A cached stack now in use again supersedes the dead thread's entry. */
	for (struct chunk *c = R->chunks; c; c = c->next)
		for (int i = 0; i < CHUNK_ENTRIES; i++) {
			struct ckpt__thread *o = &c->e[i];
			if (o != e && o->state == T_EXITED && o->stack_lo < hi && lo < o->stack_hi)
				o->state = T_FREE;
		}
	e->tid = (pid_t)ckpt__raw_gettid();
	e->stack_lo = lo;
	e->stack_hi = hi;
	e->tp = tp;
	__atomic_store_n(&e->state, T_LIVE, __ATOMIC_RELEASE);
	R->creating--;
	pthread_cond_broadcast(&R->cond);
	pthread_mutex_unlock(&R->lock);
	pthread_setspecific(R->key, e);
	return e->fn(e->arg);
}

CKPT__EXPORT int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *),
				void *arg)
{
	if (ckpt__threads_init() != 0)
		return get_pthread_create()(t, attr, fn, arg);
	pthread_mutex_lock(&R->lock);
	while (R->holding)
		pthread_cond_wait(&R->cond, &R->lock);
	struct ckpt__thread *e = entry_alloc();
	if (!e) {
		pthread_mutex_unlock(&R->lock);
		return EAGAIN;
	}
	e->state = T_STARTING;
	e->fn = fn;
	e->arg = arg;
	uintptr_t ulo = 0, uhi = 0;
	if (attr) {
		void *addr = NULL;
		size_t size = 0;
		if (pthread_attr_getstack(attr, &addr, &size) == 0 && addr) {
			e->user_stack = 1;
			ulo = ckpt__page_down((uintptr_t)addr);
			uhi = ckpt__page_up((uintptr_t)addr + size);
		}
	}
	R->creating++;
	pthread_mutex_unlock(&R->lock);
	/* A stack the program supplies is ordinary (tracked) memory: the new
	 * thread starts pushing onto it before any code of ckpt runs there. */
	if (ulo < uhi)
		ckpt__track_stack(ulo, uhi);

	int rc = get_pthread_create()(t, attr, trampoline, e);
	if (rc != 0) {
		pthread_mutex_lock(&R->lock);
		e->state = T_FREE;
		R->creating--;
		pthread_cond_broadcast(&R->cond);
		pthread_mutex_unlock(&R->lock);
	}
	return rc;
}

CKPT__EXPORT int sigaltstack(const stack_t *ss, stack_t *old)
{
	/* The kernel writes *old; and the new stack must be writable before a
	 * signal can be delivered on it, so it is pinned first. */
	if (old)
		ckpt__track_touch(old, sizeof *old);
	uintptr_t lo = 0, hi = 0;
	int enable = ss && !(ss->ss_flags & SS_DISABLE) && ss->ss_size;
	if (enable) {
		lo = ckpt__page_down((uintptr_t)ss->ss_sp);
		hi = ckpt__page_up((uintptr_t)ss->ss_sp + ss->ss_size);
		ckpt__track_pin(lo, hi);
	}
	int rc = get_sigaltstack()(ss, old);
	if (rc == 0 && ss) {
		struct ckpt__thread *e = self_entry;
		if (e) {
			__atomic_store_n(&e->alt_lo, enable ? lo : 0, __ATOMIC_RELAXED);
			__atomic_store_n(&e->alt_hi, enable ? hi : 0, __ATOMIC_RELAXED);
		}
	}
	return rc;
}

/* A hold may nest in the thread that holds: a resumable commit holds
 * while it stops the other threads (threadrec.c), and its capture holds
 * again.  Only the holder reads or writes these, but it reads hold_owner
 * before it knows it is the holder. */
static int hold_owner, hold_depth;

void ckpt__threads_hold(void)
{
	if (ckpt__threads_init() != 0)
		return;
	int me = (int)ckpt__raw_gettid();
	if (__atomic_load_n(&hold_owner, __ATOMIC_RELAXED) == me) {
		hold_depth++;
		return;
	}
	pthread_mutex_lock(&R->lock);
	R->holding = 1;
	while (R->creating > 0)
		pthread_cond_wait(&R->cond, &R->lock);
	pthread_mutex_unlock(&R->lock);
	__atomic_store_n(&hold_owner, me, __ATOMIC_RELAXED);
	hold_depth = 1;
}

void ckpt__threads_release(void)
{
	if (!R)
		return;
	if (__atomic_load_n(&hold_owner, __ATOMIC_RELAXED) == (int)ckpt__raw_gettid()) {
		if (--hold_depth > 0)
			return;
		__atomic_store_n(&hold_owner, 0, __ATOMIC_RELAXED);
	}
	pthread_mutex_lock(&R->lock);
	R->holding = 0;
	pthread_cond_broadcast(&R->cond);
	pthread_mutex_unlock(&R->lock);
}

/* Whether the dead thread's descriptor is still at the top of its stack:
 * glibc's tcbhead_t starts with `tcb` and has `self` third, both pointing
 * at the descriptor itself.  Read without faulting. */
static int stack_still_cached(const struct ckpt__thread *e)
{
	uintptr_t words[3];
	struct iovec local = {words, sizeof words};
	struct iovec remote = {(void *)e->tp, sizeof words};
	if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != (ssize_t)sizeof words)
		return 0;
	return words[0] == e->tp && words[2] == e->tp;
}

static int mapped(const struct ckpt__maps *m, uintptr_t lo, uintptr_t hi)
{
	while (lo < hi) {
		long i = ckpt__maps_find(m, lo);
		if (i < 0)
			return 0;
		lo = m->v[i].end;
	}
	return 1;
}

struct tls_low {
	uintptr_t tp;
	uintptr_t low; /* lowest static TLS block of the calling thread */
};

static int tls_lowest(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	struct tls_low *t = arg;
	uintptr_t d = (uintptr_t)info->dlpi_tls_data;
	/* Static TLS blocks sit just below the thread pointer. */
	if (d && d < t->tp && t->tp - d < ((uintptr_t)1 << 24) && d < t->low)
		t->low = d;
	return 0;
}

int ckpt__threads_ranges(const struct ckpt__maps *m, struct ckpt__rset *stacks,
			 struct ckpt__rset *pinned)
{
	if (ckpt__threads_init() != 0)
		return CKPT_ENOMEM;
	pthread_mutex_lock(&R->lock);
	int rc = 0;
	for (struct chunk *c = R->chunks; c && !rc; c = c->next)
		for (int i = 0; i < CHUNK_ENTRIES && !rc; i++) {
			struct ckpt__thread *e = &c->e[i];
			int st = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
			if (st == T_EXITED && !(mapped(m, e->stack_lo, e->stack_hi) &&
						stack_still_cached(e))) {
				e->state = T_FREE;
				continue;
			}
			if (st != T_LIVE && st != T_EXITED && st != T_RESUMING)
				continue;
			if (e->stack_lo < e->stack_hi)
				rc |= ckpt__rset_add(stacks, e->stack_lo, e->stack_hi);
			if (st == T_LIVE && e->alt_lo < e->alt_hi)
				rc |= ckpt__rset_add(pinned, e->alt_lo, e->alt_hi);
		}
	/* The main thread: its stack is the [stack] mapping; its TLS block
	 * (static TLS of every module below the thread pointer, glibc's thread
	 * descriptor with the rseq area above it) sits in anonymous memory
	 * that ld.so allocated, which may share a mapping with other data: pin
	 * its pages only, within the mapping that holds it.  Offsets from the
	 * thread pointer are the same in every thread, so the calling
	 * thread's layout gives the main thread's. */
	struct ckpt__thread *mt = &R->main;
	long vi = mt->state == T_LIVE ? ckpt__maps_find(m, mt->tp) : -1;
	if (vi >= 0) {
		struct tls_low tl = {thread_pointer(), thread_pointer()};
		dl_iterate_phdr(tls_lowest, &tl);
		uintptr_t below = tl.tp - tl.low;
		uintptr_t lo = ckpt__page_down(mt->tp - below);
		uintptr_t hi = ckpt__page_up(mt->tp + 2560); /* glibc's struct pthread */
		uintptr_t rseq_area = mt->tp + (uintptr_t)__rseq_offset;
		if (__rseq_size && rseq_area < lo)
			lo = ckpt__page_down(rseq_area);
		if (__rseq_size && rseq_area + __rseq_size > hi)
			hi = ckpt__page_up(rseq_area + __rseq_size);
		if (lo < m->v[vi].start)
			lo = m->v[vi].start;
		if (hi > m->v[vi].end)
			hi = m->v[vi].end;
		rc |= ckpt__rset_add(pinned, lo, hi);
		if (mt->alt_lo < mt->alt_hi)
			rc |= ckpt__rset_add(pinned, mt->alt_lo, mt->alt_hi);
	}
	pthread_mutex_unlock(&R->lock);
	/* The calling thread's alternate stack, however it was set. */
	stack_t ss;
	if (get_sigaltstack()(NULL, &ss) == 0 && !(ss.ss_flags & SS_DISABLE) && ss.ss_size)
		rc |= ckpt__rset_add(pinned, ckpt__page_down((uintptr_t)ss.ss_sp),
				     ckpt__page_up((uintptr_t)ss.ss_sp + ss.ss_size));
	return rc ? CKPT_ENOMEM : 0;
}

static int known_tid(pid_t tid)
{
	if (R->main.state == T_LIVE && R->main.tid == tid)
		return 1;
	if (ckpt__thread_is_own(tid))
		return 1;
	for (struct chunk *c = R->chunks; c; c = c->next)
		for (int i = 0; i < CHUNK_ENTRIES; i++)
			if (c->e[i].state == T_LIVE && c->e[i].tid == tid)
				return 1;
	return 0;
}

/* The stack pointer of a blocked thread, from /proc/self/task/TID/syscall
 * ("nr args... sp pc", or "-1 sp pc"); 0 while it is running. */
static uintptr_t task_sp(pid_t tid)
{
	char path[64], buf[256];
	snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
	long fd = ckpt__raw_open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	long n = ckpt__raw_read((int)fd, buf, sizeof buf - 1);
	ckpt__raw_close((int)fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	if (strncmp(buf, "running", 7) == 0)
		return 0;
	/* The stack pointer is the second to last field. */
	char *fields[10], *save = NULL;
	int nf = 0;
	for (char *tok = strtok_r(buf, " \n", &save); tok && nf < 10;
	     tok = strtok_r(NULL, " \n", &save))
		fields[nf++] = tok;
	if (nf < 3)
		return 0;
	return (uintptr_t)strtoull(fields[nf - 2], NULL, 0);
}

struct task_walk {
	void (*fn)(pid_t, void *);
	void *arg;
	unsigned n;
};

static int task_entry(const char *name, unsigned type, void *arg)
{
	(void)type;
	struct task_walk *tw = arg;
	if (name[0] < '0' || name[0] > '9')
		return 0;
	tw->n++;
	if (tw->fn)
		tw->fn((pid_t)atoi(name), tw->arg);
	return 0;
}

/* Calls fn for every thread id in /proc/self/task (raw calls: readdir is
 * interposed). */
static unsigned foreach_task(void (*fn)(pid_t, void *), void *arg)
{
	long fd = ckpt__raw_open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	struct task_walk tw = {fn, arg, 0};
	ckpt__dir_foreach((int)fd, task_entry, &tw);
	ckpt__raw_close((int)fd);
	return tw.n;
}

void ckpt__threads_each(void (*fn)(pid_t, void *), void *arg)
{
	foreach_task(fn, arg);
}

int ckpt__threads_stack_of(pid_t tid, uintptr_t *lo, uintptr_t *hi)
{
	if (!R)
		return 0;
	/* Read without the lock: the callers run while every other thread of
	 * the program is stopped, one of them perhaps inside it. */
	const struct ckpt__thread *f = NULL;
	if (__atomic_load_n(&R->main.state, __ATOMIC_ACQUIRE) == T_LIVE && R->main.tid == tid)
		f = &R->main;
	for (struct chunk *c = R->chunks; c && !f; c = c->next)
		for (int i = 0; i < CHUNK_ENTRIES && !f; i++)
			if (__atomic_load_n(&c->e[i].state, __ATOMIC_ACQUIRE) == T_LIVE &&
			    c->e[i].tid == tid)
				f = &c->e[i];
	if (!f || f->stack_lo >= f->stack_hi)
		return 0;
	*lo = f->stack_lo;
	*hi = f->stack_hi;
	return 1;
}

int ckpt__threads_lock_taken(void)
{
	if (!R)
		return 0;
	if (pthread_mutex_trylock(&R->lock) != 0)
		return 1;
	pthread_mutex_unlock(&R->lock);
	return 0;
}

uintptr_t ckpt__threads_main_tp(void)
{
	return R && R->main.state == T_LIVE ? R->main.tp : 0;
}

unsigned ckpt__threads_count(void)
{
	return foreach_task(NULL, NULL);
}

struct unknown_ctx {
	const struct ckpt__maps *m;
	const struct ckpt__rset *stacks;
	struct ckpt__rset *pinned;
	unsigned count;
	unsigned unresolved;
};

static void check_task(pid_t tid, void *arg)
{
	struct unknown_ctx *u = arg;
	if (known_tid(tid))
		return;
	u->count++;
	uintptr_t sp = 0;
	for (int tries = 0; tries < 50 && !sp; tries++) {
		sp = task_sp(tid);
		if (!sp)
			nanosleep(&(struct timespec){0, 1000000}, NULL);
	}
	long i = sp ? ckpt__maps_find(u->m, sp) : -1;
	if (i < 0) {
		u->unresolved++;
		return;
	}
	if (!ckpt__rset_covers(u->stacks, sp, sp + 1))
		ckpt__rset_add(u->pinned, u->m->v[i].start, u->m->v[i].end);
}

unsigned ckpt__threads_unknown(const struct ckpt__maps *m, const struct ckpt__rset *stacks,
			       struct ckpt__rset *pinned)
{
	if (ckpt__threads_init() != 0)
		return 0;
	struct unknown_ctx u = {m, stacks, pinned, 0, 0};
	pthread_mutex_lock(&R->lock);
	foreach_task(check_task, &u);
	pthread_mutex_unlock(&R->lock);
	if (u.unresolved) {
		/* A thread that kept running: fall back on the shape of a glibc
		 * thread stack, an anonymous writable mapping right above a
		 * PROT_NONE guard, and pin every such mapping not known. */
		for (size_t i = 1; i < m->n; i++) {
			const struct ckpt__vma *v = &m->v[i], *g = &m->v[i - 1];
			if ((v->perms & CKPT__VMA_W) && !v->inode && !v->path[0] &&
			    g->end == v->start && !(g->perms & (CKPT__VMA_R | CKPT__VMA_W)) &&
			    !ckpt__rset_overlaps(stacks, v->start, v->end))
				ckpt__rset_add(pinned, v->start, v->end);
		}
	}
	return u.count;
}

void ckpt__threads_cached_each(void (*fn)(uintptr_t tp, uintptr_t lo, uintptr_t hi, void *arg),
			       void *arg)
{
	if (!R)
		return;
	/* Without the lock, as ckpt__threads_stack_of. */
	for (struct chunk *c = R->chunks; c; c = c->next)
		for (int i = 0; i < CHUNK_ENTRIES; i++) {
			const struct ckpt__thread *e = &c->e[i];
			if (__atomic_load_n(&e->state, __ATOMIC_ACQUIRE) == T_EXITED &&
			    e->stack_lo < e->stack_hi && e->tp >= e->stack_lo &&
			    e->tp < e->stack_hi && stack_still_cached(e))
				fn(e->tp, e->stack_lo, e->stack_hi, arg);
		}
}

void *ckpt__threads_adopt(uintptr_t lo, uintptr_t hi, uintptr_t tp)
{
	if (ckpt__threads_init() != 0)
		return NULL;
	pthread_mutex_lock(&R->lock);
	struct ckpt__thread *e = entry_alloc();
	if (e) {
		e->stack_lo = lo;
		e->stack_hi = hi;
		e->tp = tp;
		__atomic_store_n(&e->state, T_RESUMING, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&R->lock);
	return e;
}

void ckpt__threads_adopt_undo(void *entry)
{
	struct ckpt__thread *e = entry;
	if (e)
		__atomic_store_n(&e->state, T_FREE, __ATOMIC_RELEASE);
}

void ckpt__threads_adopted(void *entry, pid_t tid)
{
	struct ckpt__thread *e = entry;
	if (!e)
		return;
	e->tid = tid;
	__atomic_store_n(&e->state, tid ? T_LIVE : T_EXITED, __ATOMIC_RELEASE);
}

void ckpt__threads_adopted_self(void *entry)
{
	/* The thread's TLS block and descriptor are the killed process's:
	 * they name its registry entry, which is gone. */
	self_entry = entry;
	pthread_setspecific(R->key, entry);
}
