/*
 * test-remap.c - mappings that move or grow while tracked: glibc's realloc
 * (which calls mremap where no interposer sees it) and explicit mremap.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "helpers.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)

static void fill_pattern(unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i += 512)
		p[i] = (unsigned char)(i / 512 * 7);
}

static size_t pattern_errors(const unsigned char *p, size_t n)
{
	size_t bad = 0;
	for (size_t i = 0; i < n; i += 512)
		bad += p[i] != (unsigned char)(i / 512 * 7);
	return bad;
}

Test(remap, realloc_of_a_64mib_block_while_protected)
{
	/* A 64 MiB block is its own mapping in glibc's malloc; untouched since
	 * begin, it is one protected mapping, which mremap moves or grows
	 * whole, protection included, to addresses ckpt never saw. */
	unsigned char *p = malloc(64 * MIB);
	cr_assert(p);
	fill_pattern(p, 64 * MIB);
	DSET(s);
	dset_collect(NULL, &s);
	ckpt_t *c = begin_tracking(0);
	unsigned char *q = realloc(p, 128 * MIB);
	cr_assert(q);
	q[0] = 0;          /* a page of the old contents (the pattern has 0 there) */
	q[100 * MIB] = 42; /* a page of the new part */
	cr_expect_eq(q[100 * MIB], 42);
	cr_expect_eq(pattern_errors(q, 64 * MIB), 0, "contents lost in the move");
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect(dset_has(&s, q), "a written page of the moved block is not reported");
	cr_expect(dset_has(&s, q + 100 * MIB), "a written page of the grown part is not reported");
#ifndef __SANITIZE_ADDRESS__
	/* AddressSanitizer's realloc copies instead of calling mremap.  A
	 * moved mapping is noticed by the fault its first write takes; with
	 * userfaultfd no fault is taken: the moved mapping lost its
	 * registration, and the next collection finds it unregistered and
	 * counts it whole (the reports above), which is not counted here. */
	ckpt_stats st;
	ckpt_stats(c, &st);
	if (backend_of(c) == CKPT_BACKEND_MPROTECT)
		cr_expect_geq(st.moved_mappings, 1, "glibc's mremap was not seen");
	else
		cr_expect_eq(st.moved_mappings, 0, "moved_mappings counts under uffd");
#endif
	free(q);
	ckpt_close(c);
}

Test(remap, realloc_of_a_block_written_since_begin)
{
	/* Written pages split the mapping; glibc's mremap then fails and
	 * realloc copies instead.  Either way nothing is lost. */
	unsigned char *p = malloc(32 * MIB);
	cr_assert(p);
	fill_pattern(p, 32 * MIB);
	ckpt_t *c = begin_tracking(0);
	p[5 * MIB] = (unsigned char)(5 * MIB / 512 * 7);
	p[9 * MIB + 512] = (unsigned char)((9 * MIB + 512) / 512 * 7);
	unsigned char *q = realloc(p, 96 * MIB);
	cr_assert(q);
	cr_expect_eq(pattern_errors(q, 32 * MIB), 0);
	q[90 * MIB] = 1;
	DSET(s);
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect(dset_has(&s, q + 90 * MIB));
	free(q);
	ckpt_close(c);
}

Test(remap, an_explicit_mremap_that_moves)
{
	size_t ps = pagesz();
	unsigned char *m = map_anon(16, 0);
	fill_pattern(m, 16 * ps);
	/* Room that is surely free, to move into. */
	unsigned char *dst = mmap(NULL, 64 * ps, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(dst, MAP_FAILED);
	ckpt_t *c = begin_tracking(0);
	m[2 * ps] = (unsigned char)(2 * ps / 512 * 7); /* splits the mapping */
	unsigned char *q = mremap(m, 16 * ps, 32 * ps, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	cr_assert_eq(q, dst, "mremap failed: %m");
	cr_expect_eq(pattern_errors(q, 16 * ps), 0);
	q[20 * ps] = 9;
	q[3 * ps] = (unsigned char)(3 * ps / 512 * 7);
	DSET(s);
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect(dset_has(&s, q + 20 * ps));
	cr_expect(dset_has(&s, q + 3 * ps));
	cr_expect_eq(dset_count_in(&s, m, 16), 0, "the old place is still reported");
	cr_assert_eq(ckpt_end(c), 0);
	char perms[8];
	cr_expect_str_eq(perms_of(q + 5 * ps, perms), "rw-p");
	ckpt_close(c);
}

Test(remap, an_explicit_mremap_that_grows_in_place)
{
	size_t ps = pagesz();
	/* Reserve 32 pages, keep 8: the rest is free to grow into. */
	unsigned char *m = mmap(NULL, 32 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				-1, 0);
	cr_assert_neq(m, MAP_FAILED);
	munmap(m + 8 * ps, 24 * ps);
	fill_pattern(m, 8 * ps);
	ckpt_t *c = begin_tracking(0);
	unsigned char *q = mremap(m, 8 * ps, 24 * ps, 0);
	cr_assert_eq(q, m, "mremap failed: %m");
	cr_expect_eq(pattern_errors(q, 8 * ps), 0);
	q[20 * ps] = 1;
	DSET(s);
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect(dset_has(&s, q + 20 * ps));
	ckpt_close(c);
}
