/*
 * rangeset.c - sets of address ranges.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "rangeset.h"
#include "mem.h"

#include <string.h>

size_t ckpt__rset_lower(const struct ckpt__rset *s, uintptr_t addr)
{
	return CKPT__FIRST_ENDING_AFTER(s->r, s->n, hi, addr);
}

int ckpt__rset_add(struct ckpt__rset *s, uintptr_t lo, uintptr_t hi)
{
	if (lo >= hi)
		return 0;
	/* First range that ends at or after lo (touching ranges coalesce). */
	size_t i = lo ? CKPT__FIRST_ENDING_AFTER(s->r, s->n, hi, lo - 1) : 0;
	size_t j = i;
	while (j < s->n && s->r[j].lo <= hi) {
		if (s->r[j].lo < lo)
			lo = s->r[j].lo;
		if (s->r[j].hi > hi)
			hi = s->r[j].hi;
		j++;
	}
	if (j == i) {
		if (ckpt__mem_grow((void **)&s->r, &s->cap, s->n + 1, sizeof *s->r))
			return -1;
		if (s->n > i)
			memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof *s->r);
		s->r[i] = (struct ckpt__range){lo, hi};
		s->n++;
		return 0;
	}
	s->r[i] = (struct ckpt__range){lo, hi};
	if (s->n > j)
		memmove(&s->r[i + 1], &s->r[j], (s->n - j) * sizeof *s->r);
	s->n -= j - i - 1;
	return 0;
}

int ckpt__rset_del(struct ckpt__rset *s, uintptr_t lo, uintptr_t hi)
{
	if (lo >= hi)
		return 0;
	size_t i = ckpt__rset_lower(s, lo);
	if (i < s->n && s->r[i].lo < lo && s->r[i].hi > hi) {
		/* Splits one range in two. */
		if (ckpt__mem_grow((void **)&s->r, &s->cap, s->n + 1, sizeof *s->r))
			return -1;
		memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof *s->r);
		s->n++;
		s->r[i].hi = lo;
		s->r[i + 1].lo = hi;
		return 0;
	}
	if (i < s->n && s->r[i].lo < lo) {
		s->r[i].hi = lo;
		i++;
	}
	size_t j = i;
	while (j < s->n && s->r[j].hi <= hi)
		j++;
	if (j < s->n && s->r[j].lo < hi)
		s->r[j].lo = hi;
	if (s->n > j)
		memmove(&s->r[i], &s->r[j], (s->n - j) * sizeof *s->r);
	s->n -= j - i;
	return 0;
}

int ckpt__rset_overlaps(const struct ckpt__rset *s, uintptr_t lo, uintptr_t hi)
{
	size_t i = ckpt__rset_lower(s, lo);
	return i < s->n && s->r[i].lo < hi && lo < hi;
}

int ckpt__rset_covers(const struct ckpt__rset *s, uintptr_t lo, uintptr_t hi)
{
	size_t i = ckpt__rset_lower(s, lo);
	return i < s->n && s->r[i].lo <= lo && s->r[i].hi >= hi;
}

size_t ckpt__rset_bytes_in(const struct ckpt__rset *s, uintptr_t lo, uintptr_t hi)
{
	size_t n = 0;
	for (size_t i = ckpt__rset_lower(s, lo); i < s->n && s->r[i].lo < hi; i++) {
		uintptr_t a = s->r[i].lo > lo ? s->r[i].lo : lo;
		uintptr_t b = s->r[i].hi < hi ? s->r[i].hi : hi;
		if (a < b)
			n += b - a;
	}
	return n;
}

int ckpt__rset_copy(struct ckpt__rset *dst, const struct ckpt__rset *src)
{
	if (ckpt__mem_grow((void **)&dst->r, &dst->cap, src->n, sizeof *dst->r))
		return -1;
	if (src->n)
		memcpy(dst->r, src->r, src->n * sizeof *src->r);
	dst->n = src->n;
	return 0;
}

void ckpt__rset_clear(struct ckpt__rset *s)
{
	s->n = 0;
}

void ckpt__rset_free(struct ckpt__rset *s)
{
	ckpt__mem_array_free((void **)&s->r, &s->cap, sizeof *s->r);
	s->n = 0;
}
