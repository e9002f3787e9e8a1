/*
 * shadow.c - CKPT_F_SHADOW: copies of committed pages, kept in memory.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A two-level table maps each page to its copy: an entry holds the copy's
 * index and the generation it belongs to, so that forgetting every copy at a
 * commit is one increment.  Copies come from one reserved area, handed out
 * by an atomic counter; when it is full, pages go without a copy and a
 * rollback reads them from the snapshot files instead.
 *
 * Fault-path rules as in track-mprotect.c: the copy and the table entry are
 * ckpt's own memory, one compare-and-swap per page; no allocation.
 *
 * A back-end without faults (uffd) cannot copy before the first write; the
 * shadow is then a mirror instead: every page a commit stores is copied
 * (each page keeps its slot from commit to commit), and the copies stay
 * until the next commit replaces them.  It costs as much memory as the
 * pages committed, and a memcpy of each page per commit.
 */
#include "shadow.h"
#include "bitmap.h"
#include "mem.h"
#include "state.h"

#define LEAF_ENTRIES 8192u /* 64 KiB of entries per leaf */
#define LEAF_SHIFT 13

/* Mirror entries: the generation (fixed for the epoch), the slot, and this
 * bit when the page was committed as zero. */
#define MIRROR_ZERO 0x80000000ull

struct shadow {
	int on;
	int mirror;
	char *zero; /* one zero page */
	uint64_t gen;
	uint64_t **dir;
	size_t ndir;
	char *pool;
	size_t pool_bytes, slots;
	size_t next; /* atomic */
	struct leafchunk *chunks;
};

struct leafchunk {
	struct leafchunk *next;
	size_t bytes;
};

#define S ((struct shadow *)ckpt__g.shadow)

int ckpt__shadow_start(size_t limit, int mirror)
{
	if (!S) {
		struct shadow *s = ckpt__mem_alloc(sizeof *s);
		if (!s)
			return -1;
		ckpt__g.shadow = s;
	}
	if (!limit)
		limit = (size_t)1 << 30;
	limit = ckpt__page_up(limit);
	if (S->pool && S->pool_bytes != limit) {
		ckpt__mem_free(S->pool, S->pool_bytes);
		S->pool = NULL;
	}
	if (!S->pool) {
		S->pool = ckpt__mem_reserve(limit);
		if (!S->pool)
			return -1;
		S->pool_bytes = limit;
		S->slots = limit / ckpt__pagesize;
	}
	if (!S->dir) {
		S->ndir = (size_t)1 << (CKPT__BM_VA_BITS - ckpt__pageshift - LEAF_SHIFT);
		S->dir = ckpt__mem_reserve(S->ndir * sizeof *S->dir);
		if (!S->dir)
			return -1;
	}
	if (!S->zero && !(S->zero = ckpt__mem_alloc(ckpt__pagesize)))
		return -1;
	/* Every entry back to none, and every slot free. */
	S->mirror = 0;
	ckpt__shadow_reset();
	S->mirror = mirror;
	__atomic_store_n(&S->on, 1, __ATOMIC_RELEASE);
	return 0;
}

void ckpt__shadow_stop(void)
{
	if (!S)
		return;
	__atomic_store_n(&S->on, 0, __ATOMIC_RELEASE);
	/* The copies go back to the kernel; the reservation stays. */
	ckpt__sys3(SYS_madvise, (long)S->pool, (long)S->pool_bytes, 4 /* MADV_DONTNEED */);
}

CKPT__FAULTPATH int ckpt__shadow_on(void)
{
	return S && __atomic_load_n(&S->on, __ATOMIC_ACQUIRE);
}

void ckpt__shadow_reset(void)
{
	if (!S || S->mirror)
		return;
	__atomic_add_fetch(&S->gen, 1, __ATOMIC_SEQ_CST);
	__atomic_store_n(&S->next, 0, __ATOMIC_SEQ_CST);
}

int ckpt__shadow_ensure(uintptr_t lo, uintptr_t hi)
{
	if (!S || !S->dir || lo >= hi || hi > CKPT__BM_LIMIT)
		return 0;
	for (uintptr_t d = (lo >> ckpt__pageshift) >> LEAF_SHIFT;
	     d <= ((hi - 1) >> ckpt__pageshift) >> LEAF_SHIFT; d++) {
		if (S->dir[d])
			continue;
		uint64_t *leaf = ckpt__mem_alloc(LEAF_ENTRIES * sizeof *leaf);
		if (!leaf)
			return -1;
		__atomic_store_n(&S->dir[d], leaf, __ATOMIC_RELEASE);
	}
	return 0;
}

CKPT__FAULTPATH static uint64_t *entry(uintptr_t a)
{
	uintptr_t p = a >> ckpt__pageshift;
	if (!S || !S->dir || a >= CKPT__BM_LIMIT)
		return 0;
	uint64_t *leaf = __atomic_load_n(&S->dir[p >> LEAF_SHIFT], __ATOMIC_ACQUIRE);
	return leaf ? &leaf[p & (LEAF_ENTRIES - 1)] : 0;
}

CKPT__FAULTPATH void ckpt__shadow_save(uintptr_t lo, uintptr_t hi)
{
	if (!S || S->mirror)
		return;
	uint64_t gen = __atomic_load_n(&S->gen, __ATOMIC_ACQUIRE);
	for (uintptr_t a = lo; a < hi; a += ckpt__pagesize) {
		uint64_t *e = entry(a);
		if (!e)
			continue;
		uint64_t cur = __atomic_load_n(e, __ATOMIC_ACQUIRE);
		if (cur && (cur >> 32) == (gen & 0xffffffffu))
			continue; /* copied already since the last commit */
		/* Only a clean page holds what the newest snapshot holds: a
		 * dirty one (written, or rolled back to an older snapshot)
		 * kept its copy from before, or has none. */
		if (ckpt__bm_test(a))
			continue;
		size_t slot = __atomic_fetch_add(&S->next, 1, __ATOMIC_RELAXED);
		if (slot >= S->slots)
			return; /* full: the rollback reads the snapshot */
		ckpt__copy_words(S->pool + slot * ckpt__pagesize, (const void *)a, ckpt__pagesize);
		uint64_t want = ((gen & 0xffffffffu) << 32) | (uint64_t)(slot + 1);
		__atomic_compare_exchange_n(e, &cur, want, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
	}
}

int ckpt__shadow_mirror(void)
{
	return S && S->mirror && __atomic_load_n(&S->on, __ATOMIC_ACQUIRE);
}

void ckpt__shadow_store(uintptr_t addr, const void *src)
{
	uint64_t *e = entry(addr);
	if (!e)
		return;
	uint64_t cur = *e, gen = S->gen & 0xffffffffu;
	size_t slot = (cur >> 32) == gen ? (size_t)(cur & (MIRROR_ZERO - 1)) : 0;
	if (!slot) {
		slot = __atomic_fetch_add(&S->next, 1, __ATOMIC_RELAXED) + 1;
		if (slot > S->slots || slot >= MIRROR_ZERO) {
			*e = 0; /* full: the rollback reads the snapshot */
			return;
		}
	}
	if (ckpt__is_zero(src, ckpt__pagesize)) {
		*e = (gen << 32) | MIRROR_ZERO | slot;
		return;
	}
	ckpt__copy_words(S->pool + (slot - 1) * ckpt__pagesize, src, ckpt__pagesize);
	*e = (gen << 32) | slot;
}

const void *ckpt__shadow_get(uintptr_t addr)
{
	if (!S || !__atomic_load_n(&S->on, __ATOMIC_ACQUIRE))
		return NULL;
	uint64_t *e = entry(addr);
	if (!e)
		return NULL;
	uint64_t cur = __atomic_load_n(e, __ATOMIC_ACQUIRE);
	if (S->mirror) {
		size_t slot = (size_t)(cur & (MIRROR_ZERO - 1));
		if (!cur || (cur >> 32) != (S->gen & 0xffffffffu))
			return NULL;
		if (cur & MIRROR_ZERO)
			return S->zero;
		return slot && slot <= S->slots ? S->pool + (slot - 1) * ckpt__pagesize : NULL;
	}
	uint64_t gen = __atomic_load_n(&S->gen, __ATOMIC_ACQUIRE);
	if (!cur || (cur >> 32) != (gen & 0xffffffffu))
		return NULL;
	size_t slot = (size_t)(cur & 0xffffffffu) - 1;
	return slot < S->slots ? S->pool + slot * ckpt__pagesize : NULL;
}
