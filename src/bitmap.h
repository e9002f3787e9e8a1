/*
 * bitmap.h - the dirty bitmap: one bit per page of the address space.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Two levels: a directory reserved for the whole 47-bit user address space
 * (its pages cost memory only once used) points to 4 KiB leaves, each
 * covering 32768 pages.  Leaves exist for tracked ranges only; they are
 * allocated outside faults (ckpt__bm_ensure) so that marking a page inside a
 * fault is one atomic OR on memory ckpt owns.  Bits are addressed by system
 * page, also in huge-page mappings (a huge page sets all its bits).
 */
#ifndef CKPT_BITMAP_H
#define CKPT_BITMAP_H

#include "sys.h"

#define CKPT__BM_VA_BITS 47
#define CKPT__BM_LEAF_PAGES_SHIFT 15

/* Highest address + 1 the bitmap can describe. */
#define CKPT__BM_LIMIT ((uintptr_t)1 << CKPT__BM_VA_BITS)

/* An instance; the dirty bitmap is the one the ckpt__bm_* calls use.  The
 * others (pages present at the last commit...) use the ckpt__bmx_* ones. */
struct ckpt__bmap {
	uint64_t **dir;
	size_t ndir;
	void *chunks;
};

CKPT__HIDDEN int ckpt__bmx_init(struct ckpt__bmap *b);
CKPT__HIDDEN int ckpt__bmx_ensure(struct ckpt__bmap *b, uintptr_t lo, uintptr_t hi);
CKPT__HIDDEN void ckpt__bmx_set(struct ckpt__bmap *b, uintptr_t lo, uintptr_t hi);
CKPT__HIDDEN void ckpt__bmx_clear(struct ckpt__bmap *b, uintptr_t lo, uintptr_t hi);
CKPT__HIDDEN int ckpt__bmx_test(const struct ckpt__bmap *b, uintptr_t addr);
CKPT__HIDDEN void ckpt__bmx_release(struct ckpt__bmap *b);
/* Calls fn for every maximal run of pages of [lo, hi) set in `then` and
 * clear in `now`; stops at fn's first non-zero return and returns it. */
CKPT__HIDDEN int ckpt__bmx_gone(const struct ckpt__bmap *then, const struct ckpt__bmap *now,
				uintptr_t lo, uintptr_t hi,
				int (*fn)(uintptr_t lo, uintptr_t hi, void *arg), void *arg);

CKPT__HIDDEN int ckpt__bm_init(void);
/* Allocates zeroed leaves so that every page of [lo, hi) has a bit.
 * Returns 0 or -1 (out of memory).  Not for faults. */
CKPT__HIDDEN int ckpt__bm_ensure(uintptr_t lo, uintptr_t hi);
/* Sets the bits of [lo, hi) (page-aligned; leaves must exist).  Fault-safe. */
CKPT__HIDDEN void ckpt__bm_set(uintptr_t lo, uintptr_t hi);
/* Clears the bits of [lo, hi) where leaves exist. */
CKPT__HIDDEN void ckpt__bm_clear(uintptr_t lo, uintptr_t hi);
/* Whether the page at addr is marked.  Fault-safe. */
CKPT__HIDDEN int ckpt__bm_test(uintptr_t addr);
/* Number of marked pages in [lo, hi). */
CKPT__HIDDEN size_t ckpt__bm_count(uintptr_t lo, uintptr_t hi);
/* Calls fn for every maximal run of marked pages in [lo, hi), in order;
 * stops at fn's first non-zero return and returns it. */
CKPT__HIDDEN int ckpt__bm_runs(uintptr_t lo, uintptr_t hi,
			       int (*fn)(uintptr_t lo, uintptr_t hi, void *arg), void *arg);
/* Atomically takes the marks of [lo, hi): fn sees each run that was marked,
 * and those bits are clear afterwards.  Returns as ckpt__bm_runs. */
CKPT__HIDDEN int ckpt__bm_take(uintptr_t lo, uintptr_t hi,
			       int (*fn)(uintptr_t lo, uintptr_t hi, void *arg), void *arg);
/* Frees every leaf (no fault may be in flight). */
CKPT__HIDDEN void ckpt__bm_release(void);

#endif /* CKPT_BITMAP_H */
