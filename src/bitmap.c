/*
 * bitmap.c - the dirty bitmap.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Fault path rules: ckpt__bm_set and ckpt__bm_test read the directory and
 * write leaves only, both ckpt's own memory; one atomic OR per word; no
 * allocation, no errno.
 */
#include "bitmap.h"
#include "mem.h"
#include "state.h"

#include <string.h>

#define LEAF_BYTES 4096u
#define LEAF_WORDS (LEAF_BYTES / 8u)
#define LEAF_PAGES ((uintptr_t)1 << CKPT__BM_LEAF_PAGES_SHIFT)
#define CHUNK_LEAVES 64u

struct chunk {
	struct chunk *next;
	unsigned used;
	char *mem;
};

/* The dirty bitmap lives in the state block. */
#define DIRTY (&ckpt__g.dirty)

int ckpt__bmx_init(struct ckpt__bmap *b)
{
	if (b->dir)
		return 0;
	b->ndir = (size_t)1 << (CKPT__BM_VA_BITS - ckpt__pageshift - CKPT__BM_LEAF_PAGES_SHIFT);
	b->dir = ckpt__mem_reserve(b->ndir * sizeof *b->dir);
	return b->dir ? 0 : -1;
}

int ckpt__bm_init(void)
{
	return ckpt__bmx_init(DIRTY);
}

static uint64_t *leaf_alloc(struct ckpt__bmap *b)
{
	struct chunk *head = b->chunks;
	if (!head || head->used == CHUNK_LEAVES) {
		struct chunk *c = ckpt__mem_alloc(sizeof *c + CHUNK_LEAVES * LEAF_BYTES + LEAF_BYTES);
		if (!c)
			return NULL;
		/* Leaves start on the page after the header. */
		c->mem = (char *)c + LEAF_BYTES;
		c->next = head;
		b->chunks = head = c;
	}
	return (uint64_t *)(head->mem + (size_t)head->used++ * LEAF_BYTES);
}

static inline uintptr_t pageno(uintptr_t a)
{
	return a >> ckpt__pageshift;
}

int ckpt__bmx_ensure(struct ckpt__bmap *b, uintptr_t lo, uintptr_t hi)
{
	if (hi > CKPT__BM_LIMIT || lo >= hi)
		return lo >= hi ? 0 : -1;
	if (ckpt__bmx_init(b))
		return -1;
	for (uintptr_t d = pageno(lo) >> CKPT__BM_LEAF_PAGES_SHIFT;
	     d <= (pageno(hi - 1) >> CKPT__BM_LEAF_PAGES_SHIFT); d++) {
		if (__atomic_load_n(&b->dir[d], __ATOMIC_ACQUIRE))
			continue;
		uint64_t *leaf = leaf_alloc(b);
		if (!leaf)
			return -1;
		__atomic_store_n(&b->dir[d], leaf, __ATOMIC_RELEASE);
	}
	return 0;
}

int ckpt__bm_ensure(uintptr_t lo, uintptr_t hi)
{
	return ckpt__bmx_ensure(DIRTY, lo, hi);
}

/* Calls op on every word overlapping the page range [p0, p1) with the mask
 * of the bits inside it. */
#define FOR_EACH_WORD_IN(bm, p0, p1, WORD, MASK, BODY)                           \
	do {                                                                       \
		uintptr_t p_ = (p0);                                               \
		while (p_ < (p1)) {                                                \
			uint64_t *leaf_ = __atomic_load_n(                         \
				&(bm)->dir[p_ >> CKPT__BM_LEAF_PAGES_SHIFT], __ATOMIC_ACQUIRE); \
			uintptr_t leaf_end_ =                                      \
				(p_ | (LEAF_PAGES - 1)) + 1;                       \
			uintptr_t stop_ = (p1) < leaf_end_ ? (p1) : leaf_end_;      \
			if (!leaf_) {                                              \
				p_ = stop_;                                        \
				continue;                                          \
			}                                                          \
			while (p_ < stop_) {                                       \
				unsigned bit_ = (unsigned)(p_ & 63);               \
				uintptr_t wend_ = (p_ | 63) + 1;                   \
				uintptr_t e_ = stop_ < wend_ ? stop_ : wend_;       \
				unsigned n_ = (unsigned)(e_ - p_);                 \
				uint64_t MASK = (n_ == 64 ? ~0ull : ((1ull << n_) - 1)) << bit_; \
				uint64_t *WORD = &leaf_[(p_ & (LEAF_PAGES - 1)) >> 6]; \
				BODY;                                              \
				p_ = e_;                                           \
			}                                                          \
		}                                                                  \
	} while (0)
#define FOR_EACH_WORD(p0, p1, WORD, MASK, BODY) FOR_EACH_WORD_IN(DIRTY, p0, p1, WORD, MASK, BODY)

CKPT__FAULTPATH void ckpt__bmx_set(struct ckpt__bmap *b, uintptr_t lo, uintptr_t hi)
{
	FOR_EACH_WORD_IN(b, pageno(lo), pageno(hi), w, m,
			 __atomic_fetch_or(w, m, __ATOMIC_SEQ_CST));
}

CKPT__FAULTPATH void ckpt__bm_set(uintptr_t lo, uintptr_t hi)
{
	ckpt__bmx_set(DIRTY, lo, hi);
}

void ckpt__bmx_clear(struct ckpt__bmap *b, uintptr_t lo, uintptr_t hi)
{
	if (hi > CKPT__BM_LIMIT)
		hi = CKPT__BM_LIMIT;
	if (lo >= hi || !b->dir)
		return;
	FOR_EACH_WORD_IN(b, pageno(lo), pageno(hi), w, m,
			 __atomic_fetch_and(w, ~m, __ATOMIC_SEQ_CST));
}

void ckpt__bm_clear(uintptr_t lo, uintptr_t hi)
{
	ckpt__bmx_clear(DIRTY, lo, hi);
}

CKPT__FAULTPATH int ckpt__bmx_test(const struct ckpt__bmap *b, uintptr_t addr)
{
	uintptr_t p = pageno(addr);
	if (addr >= CKPT__BM_LIMIT || !b->dir)
		return 0;
	uint64_t *leaf = __atomic_load_n(&b->dir[p >> CKPT__BM_LEAF_PAGES_SHIFT], __ATOMIC_ACQUIRE);
	if (!leaf)
		return 0;
	return (int)((__atomic_load_n(&leaf[(p & (LEAF_PAGES - 1)) >> 6], __ATOMIC_RELAXED) >>
		      (p & 63)) & 1);
}

static uint64_t word_at(const struct ckpt__bmap *b, uintptr_t p)
{
	uint64_t *leaf = b->dir ? __atomic_load_n(&b->dir[p >> CKPT__BM_LEAF_PAGES_SHIFT],
						  __ATOMIC_ACQUIRE)
				: NULL;
	return leaf ? __atomic_load_n(&leaf[(p & (LEAF_PAGES - 1)) >> 6], __ATOMIC_RELAXED) : 0;
}

int ckpt__bmx_gone(const struct ckpt__bmap *then, const struct ckpt__bmap *now, uintptr_t lo,
		   uintptr_t hi, int (*fn)(uintptr_t lo, uintptr_t hi, void *arg), void *arg)
{
	if (hi > CKPT__BM_LIMIT)
		hi = CKPT__BM_LIMIT;
	if (lo >= hi || !then->dir)
		return 0;
	uintptr_t run_lo = 0, run_hi = 0;
	int rc = 0;
	FOR_EACH_WORD_IN(then, pageno(lo), pageno(hi), w, m, {
		uint64_t bits = __atomic_load_n(w, __ATOMIC_RELAXED) & ~word_at(now, p_) & m;
		uintptr_t base = p_ & ~(uintptr_t)63;
		while (bits && !rc) {
			unsigned b = (unsigned)__builtin_ctzll(bits);
			uintptr_t a = base + b;
			if (run_hi != a) {
				if (run_lo < run_hi)
					rc = fn(run_lo << ckpt__pageshift, run_hi << ckpt__pageshift, arg);
				run_lo = a;
			}
			run_hi = a + 1;
			bits &= bits - 1;
		}
	});
	if (!rc && run_lo < run_hi)
		rc = fn(run_lo << ckpt__pageshift, run_hi << ckpt__pageshift, arg);
	return rc;
}

CKPT__FAULTPATH int ckpt__bm_test(uintptr_t addr)
{
	return ckpt__bmx_test(DIRTY, addr);
}

size_t ckpt__bm_count(uintptr_t lo, uintptr_t hi)
{
	size_t n = 0;
	if (hi > CKPT__BM_LIMIT)
		hi = CKPT__BM_LIMIT;
	if (lo >= hi)
		return 0;
	FOR_EACH_WORD(pageno(lo), pageno(hi), w, m,
		      n += (size_t)__builtin_popcountll(__atomic_load_n(w, __ATOMIC_RELAXED) & m));
	return n;
}

static int walk(uintptr_t lo, uintptr_t hi, int take,
		int (*fn)(uintptr_t lo, uintptr_t hi, void *arg), void *arg)
{
	if (hi > CKPT__BM_LIMIT)
		hi = CKPT__BM_LIMIT;
	if (lo >= hi)
		return 0;
	uintptr_t run_lo = 0, run_hi = 0; /* page numbers; empty when equal */
	int rc = 0;
	/* A walk stops at fn's first non-zero return, except when taking:
	 * every run whose bits were cleared must reach the caller. */
#define EMIT_()                                                                 \
	do {                                                                    \
		if (run_lo != run_hi) {                                         \
			int r_ = fn(run_lo << ckpt__pageshift, run_hi << ckpt__pageshift, arg); \
			if (!rc)                                                \
				rc = r_;                                        \
			if (rc && !take)                                        \
				return rc;                                      \
		}                                                               \
	} while (0)
	FOR_EACH_WORD(pageno(lo), pageno(hi), w, m, {
		uint64_t bits = take ? __atomic_fetch_and(w, ~m, __ATOMIC_SEQ_CST)
				     : __atomic_load_n(w, __ATOMIC_RELAXED);
		bits &= m;
		uintptr_t base = p_ & ~(uintptr_t)63;
		while (bits) {
			unsigned b = (unsigned)__builtin_ctzll(bits);
			uint64_t rest = ~(bits >> b);
			unsigned len = rest ? (unsigned)__builtin_ctzll(rest) : 64 - b;
			uintptr_t s = base + b;
			uintptr_t e = s + len;
			if (run_hi == s && run_lo != run_hi) {
				run_hi = e;
			} else {
				EMIT_();
				run_lo = s;
				run_hi = e;
			}
			bits &= b + len >= 64 ? 0 : ~0ull << (b + len);
		}
	});
	EMIT_();
#undef EMIT_
	return rc;
}

int ckpt__bm_runs(uintptr_t lo, uintptr_t hi, int (*fn)(uintptr_t, uintptr_t, void *), void *arg)
{
	return walk(lo, hi, 0, fn, arg);
}

int ckpt__bm_take(uintptr_t lo, uintptr_t hi, int (*fn)(uintptr_t, uintptr_t, void *), void *arg)
{
	return walk(lo, hi, 1, fn, arg);
}

void ckpt__bmx_release(struct ckpt__bmap *b)
{
	/* Unmapping the directory drops the pages its entries used; the next
	 * init reserves a fresh one. */
	if (b->dir) {
		ckpt__mem_free(b->dir, b->ndir * sizeof *b->dir);
		b->dir = NULL;
	}
	while (b->chunks) {
		struct chunk *c = b->chunks;
		b->chunks = c->next;
		ckpt__mem_free(c, sizeof *c + CHUNK_LEAVES * LEAF_BYTES + LEAF_BYTES);
	}
}

void ckpt__bm_release(void)
{
	ckpt__bmx_release(DIRTY);
}
