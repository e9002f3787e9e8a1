/*
 * test-rangeset.c - address range sets against a brute-force model.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "rangeset.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#define SPAN 256

static void check_model(const struct ckpt__rset *s, const unsigned char *model)
{
	unsigned char got[SPAN] = {0};
	for (size_t i = 0; i < s->n; i++) {
		cr_assert_lt(s->r[i].lo, s->r[i].hi, "empty range %zu", i);
		if (i)
			cr_assert_lt(s->r[i - 1].hi, s->r[i].lo,
				     "ranges %zu and %zu touch or overlap: not coalesced", i - 1, i);
		for (uintptr_t a = s->r[i].lo; a < s->r[i].hi; a++)
			got[a] = 1;
	}
	for (int a = 0; a < SPAN; a++)
		cr_assert_eq(got[a], model[a], "address %d: set says %d, model %d", a, got[a],
			     model[a]);
}

Test(rangeset, random_adds_and_deletes_match_a_model)
{
	struct ckpt__rset s = {0};
	unsigned char model[SPAN] = {0};
	srand(1234);
	for (int step = 0; step < 5000; step++) {
		uintptr_t lo = (uintptr_t)(rand() % SPAN), hi = lo + (uintptr_t)(rand() % 24);
		if (hi > SPAN)
			hi = SPAN;
		if (rand() % 3) {
			cr_assert_eq(ckpt__rset_add(&s, lo, hi), 0);
			memset(model + lo, 1, hi - lo);
		} else {
			cr_assert_eq(ckpt__rset_del(&s, lo, hi), 0);
			memset(model + lo, 0, hi - lo);
		}
		check_model(&s, model);
		uintptr_t a = (uintptr_t)(rand() % SPAN), b = a + 1 + (uintptr_t)(rand() % 8);
		if (b > SPAN)
			b = SPAN;
		int any = 0, all = 1;
		size_t bytes = 0;
		for (uintptr_t x = a; x < b; x++) {
			any |= model[x];
			all &= model[x];
			bytes += model[x];
		}
		cr_assert_eq(ckpt__rset_overlaps(&s, a, b), any, "overlaps [%lu,%lu)",
			     (unsigned long)a, (unsigned long)b);
		cr_assert_eq(ckpt__rset_covers(&s, a, b), all, "covers [%lu,%lu)",
			     (unsigned long)a, (unsigned long)b);
		cr_assert_eq(ckpt__rset_bytes_in(&s, a, b), bytes);
	}
	ckpt__rset_free(&s);
}

Test(rangeset, touching_ranges_coalesce)
{
	struct ckpt__rset s = {0};
	ckpt__rset_add(&s, 10, 20);
	ckpt__rset_add(&s, 30, 40);
	ckpt__rset_add(&s, 20, 30);
	cr_assert_eq(s.n, 1);
	cr_assert_eq(s.r[0].lo, 10);
	cr_assert_eq(s.r[0].hi, 40);
	ckpt__rset_del(&s, 15, 25);
	cr_assert_eq(s.n, 2);
	cr_assert_eq(s.r[0].hi, 15);
	cr_assert_eq(s.r[1].lo, 25);
	ckpt__rset_free(&s);
}
