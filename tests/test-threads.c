/*
 * test-threads.c - tracking in a process with threads: concurrent writers,
 * threads created inside the epoch (on fresh or recycled stacks), threads
 * alive across begin, stacks the program supplies, alternate signal stacks.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "helpers.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define NTHREADS 8
#define PER_THREAD 64

struct job {
	char *base;
	int id;
	pthread_barrier_t *go;
	uintptr_t stack_sample; /* an address on the thread's own stack */
};

/* Thread `id` writes pages id, id + NTHREADS, id + 2*NTHREADS...; each write
 * fills a whole page with its own byte, so torn or lost writes show. */
static void *writer(void *arg)
{
	struct job *j = arg;
	volatile char here = 0;
	j->stack_sample = (uintptr_t)&here;
	if (j->go)
		pthread_barrier_wait(j->go);
	for (int k = 0; k < PER_THREAD; k++) {
		char *p = j->base + (size_t)(k * NTHREADS + j->id) * pagesz();
		memset(p, 0x40 + j->id, pagesz());
	}
	return NULL;
}

static void check_all_written(char *base, const struct dset *s)
{
	for (size_t i = 0; i < (size_t)NTHREADS * PER_THREAD; i++) {
		char want = (char)(0x40 + (int)(i % NTHREADS));
		cr_expect_eq(base[i * pagesz()], want, "page %zu holds %#x", i, base[i * pagesz()]);
		cr_expect_eq(base[i * pagesz() + pagesz() - 1], want);
		cr_expect(dset_has(s, base + i * pagesz()), "page %zu written but not reported", i);
	}
}

Test(threads, eight_writers_alive_across_begin)
{
	char *base = map_anon(NTHREADS * PER_THREAD + 1, 0);
	pthread_barrier_t go;
	pthread_barrier_init(&go, NULL, NTHREADS + 1);
	pthread_t t[NTHREADS];
	struct job j[NTHREADS];
	for (int i = 0; i < NTHREADS; i++) {
		j[i] = (struct job){base, i, &go, 0};
		cr_assert_eq(pthread_create(&t[i], NULL, writer, &j[i]), 0);
	}
	DSET(s);
	dset_collect(NULL, &s);
	/* The threads exist and wait, their stacks in use, when tracking
	 * begins; then they all write at once. */
	ckpt_t *c = begin_tracking(0);
	pthread_barrier_wait(&go);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	cr_assert_eq(dset_collect(c, &s), 0);
	check_all_written(base, &s);
	cr_expect(!dset_has(&s, base + (size_t)NTHREADS * PER_THREAD * pagesz()),
		  "the page no thread wrote is reported");
	for (int i = 0; i < NTHREADS; i++)
		cr_expect(!dset_has(&s, (void *)j[i].stack_sample), "thread %d's stack is reported", i);
	ckpt_close(c);
}

static void *nothing(void *arg)
{
	return arg;
}

Test(threads, created_and_joined_inside_the_epoch)
{
	/* Threads that died before begin leave their stacks in glibc's cache;
	 * the threads created inside the epoch get those stacks back (or fresh
	 * ones), and must be able to run on them. */
	pthread_t t[NTHREADS];
	for (int i = 0; i < NTHREADS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, nothing, NULL), 0);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	char *base = map_anon(NTHREADS * PER_THREAD, 0);
	struct job j[NTHREADS];
	DSET(s);
	dset_collect(NULL, &s);
	ckpt_t *c = begin_tracking(0);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < NTHREADS; i++) {
			j[i] = (struct job){base, i, NULL, 0};
			cr_assert_eq(pthread_create(&t[i], NULL, writer, &j[i]), 0);
		}
		for (int i = 0; i < NTHREADS; i++)
			pthread_join(t[i], NULL);
	}
	cr_assert_eq(dset_collect(c, &s), 0);
	check_all_written(base, &s);
	for (int i = 0; i < NTHREADS; i++)
		cr_expect(!dset_has(&s, (void *)j[i].stack_sample), "thread %d's stack is reported", i);
	ckpt_close(c);
}

static void *write_and_return_page(void *arg)
{
	char *p = arg;
	p[0] = 'w';
	return p;
}

Test(threads, a_buffer_sharing_a_mapping_with_a_cached_stack)
{
	/* Anonymous mappings merge.  A stack without a guard page, and a
	 * buffer mapped right below it with the same flags (MAP_STACK means
	 * "no huge pages" on this kernel), become one mapping.  After the
	 * thread dies glibc keeps the stack for the next thread with the same
	 * attributes.  The buffer must be tracked page by page; the stack must
	 * stay unprotected for that next thread. */
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setguardsize(&attr, 0);
	pthread_t t;
	cr_assert_eq(pthread_create(&t, &attr, nothing, NULL), 0);
	pthread_attr_t a;
	void *saddr;
	size_t ssize;
	pthread_getattr_np(t, &a);
	pthread_attr_getstack(&a, &saddr, &ssize);
	pthread_attr_destroy(&a);
	pthread_join(t, NULL);
	char *want = (char *)saddr - 8 * pagesz();
	char *buf = mmap(want, 8 * pagesz(), PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	cr_assert_eq(buf, want, "cannot map right below the stack at %p", (void *)want);
	madvise(buf, 8 * pagesz(), MADV_NOHUGEPAGE);
	char *lines = maps_lines((uintptr_t)buf, (uintptr_t)saddr + pagesz());
	cr_assert_eq(strchr(lines, '\n'), strrchr(lines, '\n'), "not one mapping:\n%s", lines);
	free(lines);
	memset(buf, 1, 8 * pagesz());
	DSET(s);
	dset_collect(NULL, &s);
	ckpt_t *c = begin_tracking(0);
	buf[3 * pagesz()] = 2;
	void *ret = NULL;
	cr_assert_eq(pthread_create(&t, &attr, write_and_return_page, buf + 5 * pagesz()), 0);
	pthread_join(t, &ret);
	cr_expect_eq(ret, buf + 5 * pagesz());
	cr_assert_eq(dset_collect(c, &s), 0);
	for (size_t i = 0; i < 8; i++)
		cr_expect_eq(dset_has(&s, buf + i * pagesz()), i == 3 || i == 5, "buffer page %zu", i);
	cr_expect(!dset_has(&s, (char *)saddr + ssize - pagesz()), "the cached stack is reported");
	ckpt_close(c);
	pthread_attr_destroy(&attr);
}

Test(threads, a_stack_the_program_supplies)
{
	size_t size = 64 * pagesz();
	char *stack = map_anon(64, 0);
	char *base = map_anon(NTHREADS * PER_THREAD, 0);
	ckpt_t *c = begin_tracking(0);
	pthread_attr_t a;
	pthread_attr_init(&a);
	pthread_attr_setstack(&a, stack, size);
	pthread_t t;
	struct job j = {base, 3, NULL, 0};
	cr_assert_eq(pthread_create(&t, &a, writer, &j), 0);
	pthread_join(t, NULL);
	cr_expect_eq(base[3 * pagesz()], 0x43);
	cr_expect(j.stack_sample >= (uintptr_t)stack && j.stack_sample < (uintptr_t)stack + size);
	pthread_attr_destroy(&a);
	ckpt_close(c);
}

static volatile sig_atomic_t handled;
static char *handler_target;
static char *alt_buf; /* tracked memory, protected at begin */

static void on_usr1(int sig)
{
	(void)sig;
	handler_target[0] = 'h';
	handled = 1;
}

static void *altstack_thread(void *arg)
{
	(void)arg;
	/* An alternate signal stack in memory that is tracked and clean: the
	 * kernel could not write the signal frame there. */
	stack_t ss = {.ss_sp = alt_buf, .ss_size = 1 << 16};
	cr_assert_eq(sigaltstack(&ss, NULL), 0);
	raise(SIGUSR1);
	ss.ss_flags = SS_DISABLE;
	sigaltstack(&ss, NULL);
	return NULL;
}

Test(threads, an_alternate_signal_stack_in_tracked_memory)
{
	handler_target = map_anon(1, 0);
	alt_buf = map_anon((1 << 16) / pagesz(), 0);
	struct sigaction sa = {0};
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_ONSTACK;
	sigaction(SIGUSR1, &sa, NULL);
	ckpt_t *c = begin_tracking(0);
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, altstack_thread, NULL), 0);
	pthread_join(t, NULL);
	cr_expect(handled);
	cr_expect_eq(handler_target[0], 'h');
	ckpt_close(c);
}
