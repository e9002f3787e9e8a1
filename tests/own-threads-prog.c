/*
 * own-threads-prog.c - a program that checks that ckpt's own threads leave
 * nothing of theirs in what a commit saves and a reset brings back.  Run by
 * test-own-threads:
 *
 *   own-threads-prog DIR same THREADS SYNC|ASYNC
 *       commits with CKPT_F_SHADOW (and CKPT_F_ASYNC), writes, resets to
 *       the snapshot, then compares every page of every mapping the
 *       snapshot holds with what the chain reader gives for it (what
 *       `ckpt extract` writes); prints "same: N pages" or the pages that
 *       differ, and exits 0 only when none does.
 *   own-threads-prog DIR exit THREADS
 *       commits, resets, prints glibc's thread count and a line without
 *       flushing it, and ends main with pthread_exit(NULL): glibc ends the
 *       process with exit(0), which flushes stdout, only if it counts no
 *       other thread.
 *
 * Everything the check needs after the reset lives in a mapping excluded
 * from tracking (the reset leaves it alone) or in ckpt's own memory (the
 * chain reader's).
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <ckpt.h>

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/rseq.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_MAPPINGS 4096
#define MAX_DIFFS 32

struct scratch {
	size_t n;
	struct {
		uintptr_t start, end;
		char name[128];
	} m[MAX_MAPPINGS];
	uintptr_t alt_lo, alt_hi; /* the alternate signal stack */
	size_t ndiff;
	struct {
		uintptr_t addr;
		size_t name, off;
		unsigned char file, mem;
	} d[MAX_DIFFS];
	char page[1 << 16];
};

static struct scratch *S;

static void die(const char *what, int rc)
{
	fprintf(stderr, "own-threads-prog: %s: %s (%s)\n", what, ckpt_strerror(rc),
		ckpt_last_error());
	exit(2);
}

static int note_mapping(const ckpt_mapping_info *m, void *arg)
{
	(void)arg;
	if (S->n == MAX_MAPPINGS)
		return -1;
	S->m[S->n].start = m->start;
	S->m[S->n].end = m->end;
	snprintf(S->m[S->n].name, sizeof S->m[S->n].name, "%s", m->name);
	S->n++;
	return 0;
}

/* A sanitizer's heap redzones are bytes like any other here. */
__attribute__((no_sanitize_address)) static size_t first_diff(const void *a, const void *b,
								size_t n)
{
	const volatile unsigned char *x = a, *y = b;
	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return i;
	return n;
}

/* Bytes no file can predict are taken from memory before comparing. */
static void ignore_range(uintptr_t page, size_t ps, uintptr_t lo, uintptr_t hi)
{
	for (uintptr_t a = lo > page ? lo : page; a < hi && a < page + ps; a++)
		S->page[a - page] = *(const volatile char *)a;
}

/* The kernel rewrites this thread's rseq area (the CPU it runs on, its
 * concurrency id) at every migration: no file can hold what it will read.
 * glibc may report fewer bytes than the kernel's 32 of the original
 * registration, which the kernel writes all of. */
static void ignore_rseq(uintptr_t page, size_t ps)
{
	if (!__rseq_size)
		return;
	uintptr_t lo = (uintptr_t)pthread_self() + (uintptr_t)__rseq_offset;
	ignore_range(page, ps, lo, lo + (__rseq_size > 32 ? __rseq_size : 32));
}

/* The program's own state: globals, a heap that grows and shrinks. */
static unsigned long field[64 * 1024];
static char *blocks[64];

static void work(unsigned step)
{
	for (size_t i = step; i < sizeof field / sizeof *field; i += 61)
		field[i] = i * 2654435761u + step;
	for (int i = 0; i < 64; i++) {
		free(blocks[i]);
		blocks[i] = malloc(32 + (size_t)(i * 97 + step) % 9000);
		memset(blocks[i], (int)(i + step), 32);
	}
}

static ckpt_t *start(const char *dir, unsigned threads, unsigned flags)
{
	ckpt_options o;
	ckpt_options_init(&o);
	o.threads = threads;
	o.flags = CKPT_F_SHADOW | flags;
	ckpt_t *c;
	int rc = ckpt_open(&c, dir, &o);
	if (rc < 0)
		die("ckpt_open", rc);
	if ((rc = ckpt_exclude(c, S, sizeof *S)) < 0)
		die("ckpt_exclude", rc);
	work(1);
	if ((rc = ckpt_begin(c)) < 0)
		die("ckpt_begin", rc);
	work(2);
	uint64_t id;
	if ((rc = ckpt_commit(c, &id)) < 0)
		die("ckpt_commit", rc);
	if ((flags & CKPT_F_ASYNC) && (rc = ckpt_wait(c, &id)) < 0)
		die("ckpt_wait", rc);
	work(3);
	return c;
}

static int same(const char *dir, unsigned threads, unsigned flags)
{
	ckpt_t *c = start(dir, threads, flags);
	ckpt_chain *ch;
	int rc = ckpt_chain_open(&ch, dir);
	if (rc < 0)
		die("ckpt_chain_open", rc);
	uint64_t id = ckpt_chain_latest(ch);
	if ((rc = ckpt_chain_mappings(ch, id, note_mapping, NULL)) < 0)
		die("ckpt_chain_mappings", rc);
	stack_t ss;
	if (sigaltstack(NULL, &ss) == 0 && !(ss.ss_flags & SS_DISABLE)) {
		S->alt_lo = (uintptr_t)ss.ss_sp;
		S->alt_hi = (uintptr_t)ss.ss_sp + ss.ss_size;
	}
	if ((rc = ckpt_restore(c, id)) < 0)
		die("ckpt_restore", rc);
	/* From here to the comparison's end nothing but the chain reader
	 * (ckpt's memory) and this loop (the stack, S) runs. */
	size_t ps = (size_t)sysconf(_SC_PAGESIZE), pages = 0;
	for (size_t i = 0; i < S->n; i++)
		for (uintptr_t a = S->m[i].start; a < S->m[i].end; a += ps) {
			if ((rc = ckpt_chain_read(ch, id, a, S->page, ps)) < 0)
				die("ckpt_chain_read", rc);
			pages++;
			ignore_rseq(a, ps);
			/* What the last signal handler left on the alternate
			 * stack (a sanitizer's, when the tracker's SIGSEGV
			 * handler ran there) is dead. */
			ignore_range(a, ps, S->alt_lo, S->alt_hi);
			size_t off = first_diff(S->page, (const void *)a, ps);
			if (off < ps && S->ndiff < MAX_DIFFS) {
				S->d[S->ndiff].addr = a;
				S->d[S->ndiff].name = i;
				S->d[S->ndiff].off = off;
				S->d[S->ndiff].file = (unsigned char)S->page[off];
				S->d[S->ndiff].mem = *(const volatile unsigned char *)(a + off);
				S->ndiff++;
			}
		}
	for (size_t k = 0; k < S->ndiff; k++)
		printf("differs: page %#lx (%s) from byte %zu: %#x in the file, %#x in memory\n",
		       (unsigned long)S->d[k].addr, S->m[S->d[k].name].name, S->d[k].off,
		       S->d[k].file, S->d[k].mem);
	printf("same: %zu pages, %zu differ\n", pages, S->ndiff);
	ckpt_chain_close(ch);
	ckpt_end(c);
	ckpt_close(c);
	return S->ndiff ? 1 : 0;
}

static int end_by_pthread_exit(const char *dir, unsigned threads)
{
	ckpt_t *c = start(dir, threads, 0);
	int rc = ckpt_restore(c, CKPT_LATEST);
	if (rc < 0)
		die("ckpt_restore", rc);
	/* glibc's own count (a private symbol: the check below stands alone
	 * where it cannot be read). */
	const int *nthreads = dlsym(RTLD_DEFAULT, "__nptl_nthreads");
	if (nthreads)
		printf("glibc counts %d threads\n", *nthreads);
	printf("flushed at exit\n"); /* stdout is a pipe: buffered */
	ckpt_end(c);
	ckpt_close(c);
	pthread_exit(NULL);
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: own-threads-prog DIR same|exit THREADS [SYNC|ASYNC]\n");
		return 2;
	}
	S = mmap(NULL, sizeof *S, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (S == MAP_FAILED)
		return 2;
	unsigned threads = (unsigned)atoi(argv[3]);
	if (!strcmp(argv[2], "same"))
		return same(argv[1], threads,
			    argc > 4 && !strcmp(argv[4], "ASYNC") ? CKPT_F_ASYNC : 0);
	if (!strcmp(argv[2], "exit"))
		return end_by_pthread_exit(argv[1], threads);
	return 2;
}
