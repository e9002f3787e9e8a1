/*
 * test-threadrec.c - a resumable commit of a program with threads: every
 * program thread is stopped and recorded (and none of ckpt's), the blocked
 * ones finish their calls afterwards, the commit may come from any thread,
 * and a thread that cannot be stopped fails the commit, chain unchanged.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "helpers.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A CKPT_F_RESUME handle, tracking; NULL under a sanitizer build, where
 * such a handle is refused (its shadow memory is not snapshotted), after
 * checking that refusal. */
static ckpt_t *open_resumable_with(const char *dir, unsigned flags)
{
	ckpt_t *c = resumable_handle(dir, flags);
	if (c)
		CHECK_RC(ckpt_begin(c));
	return c;
}

static ckpt_t *open_resumable(const char *dir)
{
	return open_resumable_with(dir, 0);
}

static int gettid_(void)
{
	return (int)syscall(SYS_gettid);
}

/* The system call thread tid is blocked in (/proc/self/task/TID/syscall),
 * -1 while it runs. */
static long blocked_in(int tid)
{
	char path[64], buf[256];
	snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -2;
	long nr = -1;
	if (!fgets(buf, sizeof buf, f) || sscanf(buf, "%ld", &nr) != 1)
		nr = -1;
	fclose(f);
	return nr;
}

/* Waits (at most 5 s) until thread tid is blocked in system call nr. */
static void wait_blocked(int tid, long nr)
{
	for (int i = 0; i < 5000 && blocked_in(tid) != nr; i++)
		usleep(1000);
	CHECK(blocked_in(tid) == nr);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- what the threads do ------------------------------------------------------------ */

struct world {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int flag, woke;
	int pipe[2];
	char got[8];
	ssize_t nread;
	uint64_t slept_ns;
	int sleep_rc;
	int stop_spin;
	uint64_t spins;
	double sum;
	int tid[4];
};

static struct world W;

static void publish(int k, const char *name)
{
	pthread_setname_np(pthread_self(), name);
	__atomic_store_n(&W.tid[k], gettid_(), __ATOMIC_RELEASE);
}

static void *in_cond(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&W.mu);
	publish(0, "tr-cond");
	while (!W.flag)
		pthread_cond_wait(&W.cv, &W.mu);
	W.woke = 1;
	pthread_mutex_unlock(&W.mu);
	return NULL;
}

#define SLEEP_NS 400000000u

static void *in_sleep(void *arg)
{
	(void)arg;
	publish(1, "tr-sleep");
	uint64_t t0 = now_ns();
	struct timespec ts = {0, SLEEP_NS};
	W.sleep_rc = nanosleep(&ts, NULL);
	W.slept_ns = now_ns() - t0;
	return NULL;
}

static void *in_read(void *arg)
{
	(void)arg;
	publish(2, "tr-read");
	W.nread = read(W.pipe[0], W.got, 5);
	return NULL;
}

/* Sums 0.5 * i for i = 0, 1, 2...: exact in a double for the counts
 * reached, so a register or SSE value lost across the stop shows. */
static void *spin(void *arg)
{
	(void)arg;
	publish(3, "tr-spin");
	double s = 0;
	uint64_t i = 0;
	while (!__atomic_load_n(&W.stop_spin, __ATOMIC_RELAXED)) {
		s += 0.5 * (double)i;
		i++;
	}
	W.spins = i;
	W.sum = s;
	return NULL;
}

static void *idle(void *arg);

struct seen {
	ckpt_thread_info t[16];
	char name[16][17];
	int n;
};

static int collect(const ckpt_thread_info *t, void *arg)
{
	struct seen *s = arg;
	if (s->n == 16)
		return -1;
	s->t[s->n] = *t;
	snprintf(s->name[s->n], sizeof s->name[0], "%s", t->name);
	s->n++;
	return 0;
}

static const ckpt_thread_info *by_tid(const struct seen *s, int tid, const char **name)
{
	for (int i = 0; i < s->n; i++)
		if (s->t[i].tid == tid) {
			*name = s->name[i];
			return &s->t[i];
		}
	return NULL;
}

static void read_threads(const char *dir, uint64_t id, struct seen *s, ckpt_snapshot_info *si)
{
	ckpt_chain *ch;
	CHECK_RC(ckpt_chain_open(&ch, dir));
	CHECK_RC(ckpt_chain_info(ch, id, si));
	memset(s, 0, sizeof *s);
	CHECK_RC(ckpt_chain_threads(ch, id, collect, s));
	ckpt_chain_close(ch);
}

/* ---- every thread recorded, and each goes on ---------------------------------------------- */

static void four_threads(const char *dir)
{
	ckpt_t *c = open_resumable(dir);
	if (!c)
		return;
	pthread_mutex_init(&W.mu, NULL);
	pthread_cond_init(&W.cv, NULL);
	CHECK(pipe(W.pipe) == 0);
	pthread_setname_np(pthread_self(), "tr-main");
	pthread_t th[4];
	void *(*fn[4])(void *) = {in_cond, in_sleep, in_read, spin};
	for (int k = 0; k < 4; k++)
		CHECK(pthread_create(&th[k], NULL, fn[k], NULL) == 0);
	for (int k = 0; k < 4; k++)
		while (!__atomic_load_n(&W.tid[k], __ATOMIC_ACQUIRE))
			usleep(1000);
	wait_blocked(W.tid[0], SYS_futex);
	wait_blocked(W.tid[1], SYS_clock_nanosleep);
	wait_blocked(W.tid[2], SYS_read);

	uint64_t id;
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 1);

	struct seen s;
	ckpt_snapshot_info si;
	read_threads(dir, id, &s, &si);
	/* The program's five threads and nothing else (no compression worker). */
	CHECK(si.threads == 5, "header: %u threads", si.threads);
	CHECK(si.resumable);
	if (s.n != 5)
		child_die("%d thread records, not 5", s.n);
	CHECK(s.t[0].tid == gettid_() && (s.t[0].flags & CKPT_THREAD_COMMITTER));
	const char *name;
	CHECK(by_tid(&s, gettid_(), &name) && !strcmp(name, "tr-main"));
	static const char *names[4] = {"tr-cond", "tr-sleep", "tr-read", "tr-spin"};
	/* Each blocked call is rewound to be made again: futex and read by
	 * the kernel (SA_RESTART), nanosleep, which the kernel would end with
	 * EINTR, by ckpt. */
	static const long sys_nr[4] = {SYS_futex, SYS_clock_nanosleep, SYS_read, -1};
	for (int k = 0; k < 4; k++) {
		const ckpt_thread_info *t = by_tid(&s, W.tid[k], &name);
		if (!t)
			child_die("thread %s (%d) not recorded", names[k], W.tid[k]);
		if (strcmp(name, names[k]))
			child_die("thread %d recorded as \"%s\", not %s", W.tid[k], name, names[k]);
		if (!(t->stack_lo <= t->sp && t->sp < t->stack_hi))
			child_die("%s: sp %#lx outside its stack [%#lx, %#lx)", names[k],
				  (unsigned long)t->sp, (unsigned long)t->stack_lo,
				  (unsigned long)t->stack_hi);
		if (t->syscall != sys_nr[k])
			child_die("%s: syscall %ld recorded, not %ld", names[k], t->syscall,
				  sys_nr[k]);
		CHECK(!(t->flags & CKPT_THREAD_COMMITTER) && t->fs_base && t->fpu_bytes >= 512);
		pthread_attr_t a;
		void *lo;
		size_t size;
		CHECK(pthread_getattr_np(th[k], &a) == 0 && pthread_attr_getstack(&a, &lo, &size) == 0);
		pthread_attr_destroy(&a);
		CHECK(t->sp >= (uintptr_t)lo && t->sp < (uintptr_t)lo + size);
		CHECK(t->fs_base == (uintptr_t)th[k]);
	}

	/* They go on: the read gets its bytes, the waiter wakes, the sleep
	 * lasts its full time, the sum is exact. */
	CHECK(write(W.pipe[1], "hello", 5) == 5);
	pthread_mutex_lock(&W.mu);
	W.flag = 1;
	pthread_cond_signal(&W.cv);
	pthread_mutex_unlock(&W.mu);
	__atomic_store_n(&W.stop_spin, 1, __ATOMIC_RELAXED);
	for (int k = 0; k < 4; k++)
		CHECK(pthread_join(th[k], NULL) == 0);
	CHECK(W.nread == 5 && !memcmp(W.got, "hello", 5));
	CHECK(W.woke);
	CHECK(W.sleep_rc == 0 && W.slept_ns >= SLEEP_NS, "slept %llu ns",
	      (unsigned long long)W.slept_ns);
	double n = (double)W.spins;
	CHECK(W.spins > 0 && W.sum == 0.25 * n * (n - 1));
	/* Back to one thread: the next commit records it alone. */
	CHECK_RC(ckpt_commit(c, &id));
	read_threads(dir, id, &s, &si);
	CHECK(s.n == 1 && si.threads == 1 && si.resumable);
	ckpt_close(c);
}

Test(threadrec, every_thread_recorded_and_goes_on)
{
	in_child(four_threads, "four threads");
}

/* ---- a commit from another thread than main ---------------------------------------------- */

struct committer {
	ckpt_t *c;
	const char *dir;
	int tid;
	int rc;
};

static void *commit_here(void *arg)
{
	struct committer *k = arg;
	pthread_setname_np(pthread_self(), "tr-committer");
	k->tid = gettid_();
	/* Main is in pthread_join by now (the caller checks below). */
	for (int i = 0; i < 5000 && blocked_in(getpid()) != SYS_futex; i++)
		usleep(1000);
	k->rc = ckpt_commit(k->c, NULL);
	return NULL;
}

static void from_worker(const char *dir)
{
	ckpt_t *c = open_resumable(dir);
	if (!c)
		return;
	pthread_setname_np(pthread_self(), "tr-main");
	struct committer k = {c, dir, 0, 1};
	pthread_t t;
	CHECK(pthread_create(&t, NULL, commit_here, &k) == 0);
	CHECK(pthread_join(t, NULL) == 0);
	CHECK_RC(k.rc);
	struct seen s;
	ckpt_snapshot_info si;
	read_threads(dir, 1, &s, &si);
	CHECK(s.n == 2 && si.threads == 2, "%d records, %u threads", s.n, si.threads);
	CHECK(s.t[0].tid == k.tid && (s.t[0].flags & CKPT_THREAD_COMMITTER));
	CHECK(!strcmp(s.name[0], "tr-committer"));
	CHECK(s.t[1].tid == getpid() && !strcmp(s.name[1], "tr-main"));
	/* Main was waiting for the committer in pthread_join. */
	CHECK(s.t[1].syscall == SYS_futex, "main: syscall %ld", s.t[1].syscall);
	CHECK(s.t[1].stack_lo <= s.t[1].sp && s.t[1].sp < s.t[1].stack_hi);
	ckpt_close(c);
}

Test(threadrec, commit_from_another_thread)
{
	in_child(from_worker, "commit from a worker");
}

/* ---- with CKPT_F_ASYNC ------------------------------------------------------------------ */

static void with_async(const char *dir)
{
	ckpt_t *c = open_resumable_with(dir, CKPT_F_ASYNC);
	if (!c)
		return;
	int done = 0;
	pthread_t t[2];
	for (int k = 0; k < 2; k++)
		CHECK(pthread_create(&t[k], NULL, idle, &done) == 0);
	/* The second commit finds the first one's writer thread alive or
	 * just gone: it is ckpt's, never recorded. */
	for (int k = 0; k < 3; k++)
		CHECK_RC(ckpt_commit(c, NULL));
	uint64_t id;
	CHECK_RC(ckpt_wait(c, &id));
	CHECK(id == 3);
	for (uint64_t i = 1; i <= 3; i++) {
		struct seen s;
		ckpt_snapshot_info si;
		read_threads(dir, i, &s, &si);
		if (s.n != 3 || si.threads != 3)
			child_die("snapshot %llu: %d records, %u threads", (unsigned long long)i, s.n,
				  si.threads);
		CHECK(s.t[0].tid == gettid_());
	}
	__atomic_store_n(&done, 1, __ATOMIC_RELEASE);
	for (int k = 0; k < 2; k++)
		CHECK(pthread_join(t[k], NULL) == 0);
	ckpt_close(c);
}

Test(threadrec, async_commits_record_the_program_threads_only)
{
	in_child(with_async, "CKPT_F_ASYNC");
}

/* ---- a thread that cannot be stopped --------------------------------------------------- */

static int blocked_go;

static void *all_blocked(void *arg)
{
	(void)arg;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	__atomic_store_n(&W.tid[0], gettid_(), __ATOMIC_RELEASE);
	while (!__atomic_load_n(&blocked_go, __ATOMIC_ACQUIRE))
		usleep(1000);
	/* The stop signal is still pending: let it in, it must do nothing. */
	pthread_sigmask(SIG_UNBLOCK, &all, NULL);
	usleep(10000);
	return NULL;
}

static void signal_blocked(const char *dir)
{
	ckpt_t *c = open_resumable(dir);
	if (!c)
		return;
	uint64_t id;
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 1);
	memset(&W, 0, sizeof W);
	pthread_t t;
	CHECK(pthread_create(&t, NULL, all_blocked, NULL) == 0);
	while (!__atomic_load_n(&W.tid[0], __ATOMIC_ACQUIRE))
		usleep(1000);
	int rc = ckpt_commit(c, &id);
	CHECK(rc == CKPT_EBUSY, "commit: %s", ckpt_strerror(rc));
	char want[64];
	snprintf(want, sizeof want, "thread %d (", W.tid[0]);
	const char *msg = ckpt_last_error();
	if (!strstr(msg, want) || !strstr(msg, "it blocks the signal"))
		child_die("the error does not name the thread that blocks the signal: %s", msg);
	/* The chain is as it was. */
	ckpt_chain *ch;
	CHECK_RC(ckpt_chain_open(&ch, dir));
	CHECK(ckpt_chain_latest(ch) == 1);
	ckpt_chain_close(ch);
	/* The thread gets the late signal and goes on; the next commit,
	 * with it gone, succeeds. */
	__atomic_store_n(&blocked_go, 1, __ATOMIC_RELEASE);
	CHECK(pthread_join(t, NULL) == 0);
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 2);
	ckpt_close(c);
}

Test(threadrec, thread_blocking_every_signal_fails_the_commit, .timeout = 30)
{
	in_child(signal_blocked, "a thread with every signal blocked");
}

/* ---- a thread waiting in vfork ------------------------------------------------------------ */

static int vfork_tid;

static void *in_vfork(void *arg)
{
	(void)arg;
	__atomic_store_n(&vfork_tid, gettid_(), __ATOMIC_RELEASE);
	/* The parent thread waits, unstoppable, until the child ends. */
	pid_t p = vfork();
	if (p == 0) {
		struct timespec ts = {2, 0};
		syscall(SYS_nanosleep, &ts, NULL);
		_exit(0);
	}
	int st;
	waitpid(p, &st, 0);
	return NULL;
}

static void vfork_waits(const char *dir)
{
	ckpt_t *c = open_resumable(dir);
	if (!c)
		return;
	uint64_t id;
	pthread_t t;
	CHECK(pthread_create(&t, NULL, in_vfork, NULL) == 0);
	while (!__atomic_load_n(&vfork_tid, __ATOMIC_ACQUIRE))
		usleep(1000);
	usleep(100000);
	int rc = ckpt_commit(c, &id);
	CHECK(rc == CKPT_EBUSY, "commit: %s", ckpt_strerror(rc));
	char want[64];
	snprintf(want, sizeof want, "thread %d (", vfork_tid);
	const char *msg = ckpt_last_error();
	if (!strstr(msg, want) || !strstr(msg, "vfork"))
		child_die("the error does not say the thread waits in vfork: %s", msg);
	CHECK(pthread_join(t, NULL) == 0);
	/* Once the child is gone, the thread stops like any other. */
	CHECK_RC(ckpt_commit(c, &id));
	CHECK(id == 1);
	ckpt_close(c);
}

Test(threadrec, thread_in_vfork_is_named, .timeout = 30)
{
	in_child(vfork_waits, "a thread waiting in vfork");
}

/* ---- the program's own handler for the signal ---------------------------------------------- */

static void program_handler(int sig)
{
	(void)sig;
}

static void *idle(void *arg)
{
	while (!__atomic_load_n((int *)arg, __ATOMIC_ACQUIRE))
		usleep(1000);
	return NULL;
}

static void signal_taken(const char *dir)
{
	ckpt_t *c = open_resumable(dir);
	if (!c)
		return;
	signal(SIGRTMAX, program_handler);
	int done = 0;
	pthread_t t;
	CHECK(pthread_create(&t, NULL, idle, &done) == 0);
	int rc = ckpt_commit(c, NULL);
	CHECK(rc == CKPT_EBUSY, "commit: %s", ckpt_strerror(rc));
	CHECK(strstr(ckpt_last_error(), "SIGRTMAX"), "%s", ckpt_last_error());
	__atomic_store_n(&done, 1, __ATOMIC_RELEASE);
	CHECK(pthread_join(t, NULL) == 0);
	/* Alone, the program keeps the signal: the commit needs no stop. */
	CHECK_RC(ckpt_commit(c, NULL));
	ckpt_close(c);
}

Test(threadrec, program_handler_for_the_signal_is_refused)
{
	in_child(signal_taken, "the program's handler for SIGRTMAX");
}
