/*
 * rangeset.h - sets of address ranges: sorted, disjoint, coalesced.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_RANGESET_H
#define CKPT_RANGESET_H

#include "sys.h"

struct ckpt__range {
	uintptr_t lo, hi;
};

struct ckpt__rset {
	struct ckpt__range *r;
	size_t n, cap;
};

/* Adds [lo, hi); returns 0 or -1 (out of memory, set unchanged). */
CKPT__HIDDEN int ckpt__rset_add(struct ckpt__rset *s, uintptr_t lo, uintptr_t hi);
/* Removes [lo, hi); returns 0 or -1 (out of memory: a split needed room). */
CKPT__HIDDEN int ckpt__rset_del(struct ckpt__rset *s, uintptr_t lo, uintptr_t hi);
/* Whether [lo, hi) overlaps the set / lies inside it. */
CKPT__HIDDEN int ckpt__rset_overlaps(const struct ckpt__rset *s, uintptr_t lo, uintptr_t hi);
CKPT__HIDDEN int ckpt__rset_covers(const struct ckpt__rset *s, uintptr_t lo, uintptr_t hi);
/* Index of the first range that ends after addr (n if none). */
CKPT__HIDDEN size_t ckpt__rset_lower(const struct ckpt__rset *s, uintptr_t addr);
/* Total length in bytes of the set within [lo, hi). */
CKPT__HIDDEN size_t ckpt__rset_bytes_in(const struct ckpt__rset *s, uintptr_t lo, uintptr_t hi);
CKPT__HIDDEN int ckpt__rset_copy(struct ckpt__rset *dst, const struct ckpt__rset *src);
CKPT__HIDDEN void ckpt__rset_clear(struct ckpt__rset *s);
CKPT__HIDDEN void ckpt__rset_free(struct ckpt__rset *s);

#endif /* CKPT_RANGESET_H */
