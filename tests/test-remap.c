/*
 * test-remap.c - mappings that move or grow while tracked: glibc's realloc
 * (which calls mremap where no interposer sees it) and explicit mremap.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "helpers.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
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

/* ---- a JIT: pages written, then made read-only (and executable) ---------------- */

/* A page of `m` with its index and a version in every word. */
static void stamp(unsigned char *m, size_t page, unsigned version)
{
	size_t ps = pagesz();
	uint64_t *w = (uint64_t *)(m + page * ps);
	for (size_t i = 0; i < ps / 8; i++)
		w[i] = ((uint64_t)version << 32) | (page << 16) | i;
}

static int stamped(const unsigned char *m, size_t page, unsigned version)
{
	size_t ps = pagesz();
	const uint64_t *w = (const uint64_t *)(m + page * ps);
	for (size_t i = 0; i < ps / 8; i++)
		if (w[i] != (((uint64_t)version << 32) | (page << 16) | i))
			return 0;
	return 1;
}


/* Rolls back to snapshot 1 and checks pages [0, n) of m are as its commit
 * stamped them. */
static void restored_to_1(ckpt_t *c, const unsigned char *m, size_t n)
{
	CHECK_RC(ckpt_restore(c, 1));
	for (size_t i = 0; i < n; i++)
		if (!stamped(m, i, 1))
			child_die("page %zu is not as committed in snapshot 1", i);
}

Test(remap, pages_written_then_made_read_only_are_reported)
{
	/* A JIT writes code, then flips it to read+execute (or data to
	 * read-only): the writes happened and must be reported, whichever
	 * back-end recorded them. */
	size_t ps = pagesz();
	unsigned char *m = map_anon(16, 1);
	DSET(s);
	dset_collect(NULL, &s);
	ckpt_t *c = begin_tracking(0);
	stamp(m, 1, 1);
	stamp(m, 2, 1);
	cr_assert_eq(mprotect(m + ps, 3 * ps, PROT_READ | PROT_EXEC), 0, "mprotect: %m");
	stamp(m, 6, 1);
	cr_assert_eq(mprotect(m + 6 * ps, ps, PROT_READ), 0, "mprotect: %m");
	stamp(m, 9, 1);
	cr_assert_eq(mprotect(m + 8 * ps, 4 * ps, PROT_NONE), 0, "mprotect: %m");
	stamp(m, 13, 1);
	cr_assert_eq(dset_collect(c, &s), 0);
	for (size_t i = 0; i < 16; i++) {
		int written = i == 1 || i == 2 || i == 6 || i == 9 || i == 13;
		cr_expect_eq(dset_has(&s, m + i * ps), written, "page %zu: reported %d, written %d", i,
			     dset_has(&s, m + i * ps), written);
	}
	/* Reported again while still tracking, and at the end. */
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect(dset_has(&s, m + ps) && dset_has(&s, m + 6 * ps) && dset_has(&s, m + 9 * ps));
	cr_assert_eq(ckpt_end(c), 0);
	cr_assert_eq(dset_collect(c, &s), 0);
	cr_expect(dset_has(&s, m + ps) && dset_has(&s, m + 2 * ps) && dset_has(&s, m + 6 * ps) &&
		  dset_has(&s, m + 9 * ps) && dset_has(&s, m + 13 * ps));
	char p[8];
	cr_expect_str_eq(perms_of(m + ps, p), "r-xp");
	cr_expect_str_eq(perms_of(m + 6 * ps, p), "r--p");
	cr_expect_str_eq(perms_of(m + 9 * ps, p), "---p");
	cr_expect_str_eq(perms_of(m + 13 * ps, p), "rw-p");
	ckpt_close(c);
}

static int count_in(const ckpt_page_run *r, void *arg)
{
	uintptr_t *a = arg; /* {lo, hi, count} */
	uintptr_t lo = r->start, hi = r->start + r->npages * pagesz();
	lo = lo > a[0] ? lo : a[0];
	hi = hi < a[1] ? hi : a[1];
	if (lo < hi)
		a[2] += (hi - lo) / pagesz();
	return 0;
}

/* Pages of [p, p + npages) that ckpt_dirty_foreach reports. */
static size_t dirty_in(ckpt_t *c, const void *p, size_t npages)
{
	uintptr_t a[3] = {(uintptr_t)p, (uintptr_t)p + npages * pagesz(), 0};
	CHECK_RC(ckpt_dirty_foreach(c, count_in, a));
	return a[2];
}

static ckpt_t *open_chain(const char *dir)
{
	ckpt_t *c;
	ckpt_options o;
	ckpt_options_init(&o);
	o.backend = CKPT_BACKEND_AUTO; /* CKPT_BACKEND in the environment decides */
	CHECK_RC(ckpt_open(&c, dir, &o));
	return c;
}

static int perms_are(const void *p, const char *want)
{
	char got[8];
	return !strcmp(perms_of(p, got), want);
}

#define JIT_PAGES 8

/* A chain in dir, tracking begun, and JIT_PAGES pages stamped with version
 * 1 and committed as snapshot 1. */
static unsigned char *committed_at_1(const char *dir, ckpt_t **c)
{
	*c = open_chain(dir);
	unsigned char *m = map_anon(JIT_PAGES, 0);
	for (size_t i = 0; i < JIT_PAGES; i++)
		stamp(m, i, 1);
	CHECK_RC(ckpt_begin(*c));
	CHECK_RC(ckpt_commit(*c, NULL));
	return m;
}

static void jit(const char *dir)
{
	size_t ps = pagesz();
	ckpt_t *c;
	unsigned char *m = committed_at_1(dir, &c);
	CHECK(dirty_in(c, m, JIT_PAGES) == 0);

	/* Code emitted into pages 2..5, then made executable; page 7 is data
	 * made read-only. */
	for (size_t i = 2; i < 6; i++)
		stamp(m, i, 2);
	stamp(m, 7, 2);
	CHECK(mprotect(m + 2 * ps, 4 * ps, PROT_READ | PROT_EXEC) == 0);
	CHECK(mprotect(m + 7 * ps, ps, PROT_READ) == 0);
	CHECK(dirty_in(c, m, JIT_PAGES) == 5);
	CHECK_RC(ckpt_commit(c, NULL)); /* 2: pages 2..5 and 7 at version 2 */
	CHECK(dirty_in(c, m, JIT_PAGES) == 0);

	/* Patched in place (made writable, written, executable again). */
	CHECK(mprotect(m + 2 * ps, 4 * ps, PROT_READ | PROT_WRITE) == 0);
	stamp(m, 3, 3);
	CHECK(mprotect(m + 2 * ps, 4 * ps, PROT_READ | PROT_EXEC) == 0);
	CHECK(dirty_in(c, m, JIT_PAGES) == 1);

	/* Back to 2: the patch goes, the protections stay the program's. */
	CHECK_RC(ckpt_restore(c, 2));
	for (size_t i = 0; i < JIT_PAGES; i++)
		if (!stamped(m, i, (i >= 2 && i < 6) || i == 7 ? 2 : 1))
			child_die("page %zu is not as committed in snapshot 2", i);
	CHECK(perms_are(m + 3 * ps, "r-xp"));
	CHECK(perms_are(m + 7 * ps, "r--p"));

	/* Back to 1: read-only pages rewritten, still read-only after. */
	restored_to_1(c, m, JIT_PAGES);
	CHECK(perms_are(m + 2 * ps, "r-xp"));
	CHECK(perms_are(m + 5 * ps, "r-xp"));
	CHECK(perms_are(m + 7 * ps, "r--p"));

	/* And forward to 2 again, from the files. */
	CHECK_RC(ckpt_restore(c, 2));
	for (size_t i = 2; i < 6; i++)
		CHECK(stamped(m, i, 2));
	CHECK(stamped(m, 7, 2));
	CHECK(perms_are(m + 4 * ps, "r-xp"));

	/* A write made read-only and never committed is rolled back too. */
	CHECK(mprotect(m, ps, PROT_READ | PROT_WRITE) == 0);
	stamp(m, 0, 4);
	CHECK(mprotect(m, ps, PROT_READ) == 0);
	CHECK_RC(ckpt_restore(c, CKPT_LATEST));
	CHECK(stamped(m, 0, 1));
	CHECK(perms_are(m, "r--p"));
	CHECK_RC(ckpt_end(c));
	CHECK(perms_are(m, "r--p"));
	CHECK(perms_are(m + 2 * ps, "r-xp"));
	CHECK(perms_are(m + 6 * ps, "rw-p"));
	ckpt_close(c);
}

Test(remap, pages_made_read_only_are_committed_and_restored, .timeout = 60)
{
	in_child(jit, "written, made read-only, committed, restored");
}

static void unmapped_part(const char *dir)
{
	size_t ps = pagesz();
	ckpt_t *c;
	unsigned char *m = committed_at_1(dir, &c);
	for (size_t i = 0; i < JIT_PAGES; i++)
		stamp(m, i, 2);
	/* Written, then partly unmapped: the rest stays tracked and written;
	 * the unmapped part drops out of the set. */
	CHECK(munmap(m + 2 * ps, 2 * ps) == 0);
	CHECK(dirty_in(c, m, JIT_PAGES) == JIT_PAGES - 2);
	CHECK(dirty_in(c, m + 2 * ps, 2) == 0);
	CHECK_RC(ckpt_commit(c, NULL));
	for (size_t i = 0; i < JIT_PAGES; i++)
		if (i < 2 || i >= 4)
			stamp(m, i, 3);
	/* Back to 2: the unmapped pages stay unmapped. */
	CHECK_RC(ckpt_restore(c, 2));
	for (size_t i = 0; i < JIT_PAGES; i++)
		if ((i < 2 || i >= 4) && !stamped(m, i, 2))
			child_die("page %zu is not as committed in snapshot 2", i);
	CHECK(perms_are(m + 2 * ps, ""));
	/* Back to 1: they come back, as they were. */
	restored_to_1(c, m, JIT_PAGES);
	ckpt_close(c);
}

Test(remap, pages_written_then_partly_unmapped, .timeout = 60)
{
	in_child(unmapped_part, "written, partly unmapped, committed, restored");
}

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

static void moved_out(const char *dir)
{
	size_t ps = pagesz();
	ckpt_t *c;
	unsigned char *m = committed_at_1(dir, &c);
	stamp(m, 1, 2);
	/* MREMAP_DONTUNMAP moves the pages and leaves the old range mapped
	 * and empty: every page of it changed, written or not. */
	unsigned char *q = mremap(m, JIT_PAGES * ps, JIT_PAGES * ps,
				  MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
	if (q == MAP_FAILED)
		child_die("mremap(MREMAP_DONTUNMAP): %s (Linux 5.7 or later)", strerror(errno));
	CHECK(stamped(q, 1, 2) && stamped(q, 0, 1));
	CHECK(m[0] == 0 && m[ps] == 0);
	CHECK(dirty_in(c, m, JIT_PAGES) == JIT_PAGES);
	CHECK(dirty_in(c, q, JIT_PAGES) == JIT_PAGES);
	restored_to_1(c, m, JIT_PAGES);
	CHECK(perms_are(q, ""));

	/* Shrunk in place after a write: the rest stays tracked. */
	stamp(m, 1, 3);
	stamp(m, 6, 3);
	CHECK(mremap(m, JIT_PAGES * ps, 4 * ps, 0) == m);
	/* (The mprotect back-end counts the rest as written too: it makes the
	 * range one writable mapping for the kernel first.) */
	CHECK(dirty_in(c, m + ps, 1) == 1);
	CHECK(dirty_in(c, m + 4 * ps, JIT_PAGES - 4) == 0);
	CHECK_RC(ckpt_commit(c, NULL));
	stamp(m, 1, 4);
	CHECK_RC(ckpt_restore(c, CKPT_LATEST));
	CHECK(stamped(m, 1, 3));
	ckpt_close(c);
}

Test(remap, the_range_mremap_leaves_behind, .timeout = 60)
{
	in_child(moved_out, "mremap with MREMAP_DONTUNMAP and in place");
}

static void moved_out_aligned(const char *dir)
{
	/* Aligned to 2 MiB at both ends, the kernel moves whole page tables:
	 * the old range is left without any, not with empty entries. */
	size_t ps = pagesz(), two = (size_t)2 << 20, len = 2 * two, n = len / ps;
	ckpt_t *c = open_chain(dir);
	unsigned char *raw = mmap(NULL, 3 * len, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(raw != MAP_FAILED);
	unsigned char *m = (unsigned char *)(((uintptr_t)raw + two - 1) & ~(uintptr_t)(two - 1));
	unsigned char *dst = m + len;
	CHECK(madvise(m, 2 * len, MADV_NOHUGEPAGE) == 0);
	CHECK(munmap(dst, len) == 0);
	for (size_t i = 0; i < n; i++)
		stamp(m, i, 1);
	CHECK_RC(ckpt_begin(c));
	CHECK_RC(ckpt_commit(c, NULL));
	unsigned char *q = mremap(m, len, len, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, dst);
	if (q != dst)
		child_die("mremap(MREMAP_DONTUNMAP): %s (Linux 5.7 or later)", strerror(errno));
	CHECK(stamped(q, 3, 1) && m[3 * ps] == 0);
	size_t d = dirty_in(c, m, n);
	if (d != n)
		child_die("%zu of %zu pages emptied by mremap reported", d, n);
	restored_to_1(c, m, n);
	ckpt_close(c);
}

Test(remap, the_range_mremap_leaves_behind_whole_page_tables, .timeout = 60)
{
	in_child(moved_out_aligned, "mremap with MREMAP_DONTUNMAP, 2 MiB aligned");
}
