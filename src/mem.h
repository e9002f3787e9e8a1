/*
 * mem.h - ckpt's own memory.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Everything ckpt allocates comes from anonymous mappings it makes with raw
 * system calls (never malloc, never the mmap interposer).  Their ranges are
 * kept in a list so that the tracker leaves them out: ckpt's own state is not
 * the program's and must neither fault nor be saved or restored.
 */
#ifndef CKPT_MEM_H
#define CKPT_MEM_H

#include "sys.h"

/* Zero-filled memory of at least `size` bytes, page-aligned, or NULL. */
CKPT__HIDDEN void *ckpt__mem_alloc(size_t size);
/* Zero-filled, address space only: pages cost memory once written. */
CKPT__HIDDEN void *ckpt__mem_reserve(size_t size);
/* Releases memory from ckpt__mem_alloc/ckpt__mem_reserve (same size). */
CKPT__HIDDEN void ckpt__mem_free(void *p, size_t size);

/* Grows the array *p (elements of `elsize` bytes, capacity *cap) so that it
 * holds at least `need` elements.  Returns 0 or -1 (out of memory, *p kept). */
CKPT__HIDDEN int ckpt__mem_grow(void **p, size_t *cap, size_t need, size_t elsize);
/* Frees an array grown with ckpt__mem_grow. */
CKPT__HIDDEN void ckpt__mem_array_free(void **p, size_t *cap, size_t elsize);

/* Calls fn for every range of ckpt's own memory (over a copy of the list:
 * fn may allocate). */
CKPT__HIDDEN void ckpt__mem_own_foreach(void (*fn)(uintptr_t lo, uintptr_t hi, void *arg),
					void *arg);
/* Whether [lo, hi) overlaps ckpt's own memory. */
CKPT__HIDDEN int ckpt__mem_is_own(uintptr_t lo, uintptr_t hi);

/* Copies n bytes (a multiple of 8) between 8-byte aligned buffers, one
 * word at a time.  For the program's pages: they may hold what a sanitizer
 * considers poisoned (redzones), which ckpt must read and write like any
 * other byte, so this is never instrumented or intercepted.  Fault-safe. */
CKPT__HIDDEN void ckpt__copy_words(void *dst, const void *src, size_t n);
/* Whether n bytes (a multiple of 64) at an 8-byte aligned p are all zero. */
CKPT__HIDDEN int ckpt__is_zero(const void *p, size_t n);

/* A test-and-set spin lock usable inside a fault (no futex, no errno). */
typedef struct { int v; } ckpt__spin;
static inline void ckpt__spin_lock(ckpt__spin *s)
{
	while (__atomic_exchange_n(&s->v, 1, __ATOMIC_ACQUIRE))
		while (__atomic_load_n(&s->v, __ATOMIC_RELAXED))
			ckpt__raw_sched_yield();
}
static inline void ckpt__spin_unlock(ckpt__spin *s)
{
	__atomic_store_n(&s->v, 0, __ATOMIC_RELEASE);
}

#endif /* CKPT_MEM_H */
