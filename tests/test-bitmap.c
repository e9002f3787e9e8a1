/*
 * test-bitmap.c - the dirty bitmap against a brute-force model, across word
 * and leaf boundaries.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "bitmap.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

/* An address range that crosses a leaf boundary (every 128 MiB with 4 KiB
 * pages); nothing needs to be mapped there. */
#define PAGES 4096
static uintptr_t base;

static void setup(void)
{
	cr_assert_eq(ckpt__bm_init(), 0);
	uintptr_t leaf = (uintptr_t)1 << (CKPT__BM_LEAF_PAGES_SHIFT + ckpt__pageshift);
	base = 0x500000000000ull + leaf - (PAGES / 2) * ckpt__pagesize;
	cr_assert_eq(ckpt__bm_ensure(base, base + PAGES * ckpt__pagesize), 0);
	ckpt__bm_clear(base, base + PAGES * ckpt__pagesize);
}

static void teardown(void)
{
	ckpt__bm_release();
}

static uintptr_t pg(size_t i)
{
	return base + i * ckpt__pagesize;
}

struct runs {
	unsigned char seen[PAGES];
	size_t nruns;
	uintptr_t last_hi;
	int order_ok;
};

static int record(uintptr_t lo, uintptr_t hi, void *arg)
{
	struct runs *r = arg;
	if (lo <= r->last_hi && r->nruns)
		r->order_ok = 0; /* touching or out of order: not maximal */
	r->last_hi = hi;
	r->nruns++;
	for (uintptr_t a = lo; a < hi; a += ckpt__pagesize)
		r->seen[(a - base) / ckpt__pagesize]++;
	return 0;
}

Test(bitmap, matches_a_model, .init = setup, .fini = teardown)
{
	unsigned char model[PAGES] = {0};
	srand(42);
	for (int step = 0; step < 300; step++) {
		size_t a = (size_t)rand() % PAGES, n = 1 + (size_t)rand() % 200;
		if (a + n > PAGES)
			n = PAGES - a;
		if (rand() % 4) {
			ckpt__bm_set(pg(a), pg(a + n));
			memset(model + a, 1, n);
		} else {
			ckpt__bm_clear(pg(a), pg(a + n));
			memset(model + a, 0, n);
		}
	}
	size_t expect = 0;
	for (size_t i = 0; i < PAGES; i++) {
		cr_assert_eq(ckpt__bm_test(pg(i)), model[i], "page %zu", i);
		expect += model[i];
	}
	cr_assert_eq(ckpt__bm_count(pg(0), pg(PAGES)), expect);

	struct runs r = {.order_ok = 1};
	cr_assert_eq(ckpt__bm_runs(pg(0), pg(PAGES), record, &r), 0);
	cr_assert(r.order_ok, "runs are not sorted and maximal");
	for (size_t i = 0; i < PAGES; i++)
		cr_assert_eq(r.seen[i], model[i], "runs: page %zu seen %d times", i, r.seen[i]);

	/* Taking returns the same runs and leaves nothing behind. */
	struct runs t = {.order_ok = 1};
	cr_assert_eq(ckpt__bm_take(pg(0), pg(PAGES), record, &t), 0);
	cr_assert_eq(memcmp(t.seen, r.seen, sizeof r.seen), 0);
	cr_assert_eq(ckpt__bm_count(pg(0), pg(PAGES)), 0);
}

static int stop_at_second(uintptr_t lo, uintptr_t hi, void *arg)
{
	(void)lo;
	(void)hi;
	return ++*(int *)arg == 2 ? 7 : 0;
}

Test(bitmap, a_walk_stops_where_told, .init = setup, .fini = teardown)
{
	ckpt__bm_set(pg(1), pg(2));
	ckpt__bm_set(pg(10), pg(12));
	ckpt__bm_set(pg(100), pg(101));
	int calls = 0;
	cr_assert_eq(ckpt__bm_runs(pg(0), pg(PAGES), stop_at_second, &calls), 7);
	cr_assert_eq(calls, 2);
}

Test(bitmap, a_run_across_the_leaf_boundary_is_one_run, .init = setup, .fini = teardown)
{
	ckpt__bm_set(pg(PAGES / 2 - 3), pg(PAGES / 2 + 3));
	struct runs r = {.order_ok = 1};
	ckpt__bm_runs(pg(0), pg(PAGES), record, &r);
	cr_assert_eq(r.nruns, 1);
}

Test(bitmap, pages_without_a_leaf_read_clean, .init = setup, .fini = teardown)
{
	uintptr_t far = 0x600000000000ull;
	cr_assert_eq(ckpt__bm_test(far), 0);
	cr_assert_eq(ckpt__bm_count(far, far + 64 * ckpt__pagesize), 0);
	cr_assert_eq(ckpt__bm_test(CKPT__BM_LIMIT + 4096), 0);
}
