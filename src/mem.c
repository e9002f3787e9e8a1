/*
 * mem.c - ckpt's own memory: anonymous mappings made with raw system calls,
 * recorded so that tracking leaves them out.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Most allocations come from one large reserved mapping (the pool), pages
 * handed out first-fit and given back to the kernel with MADV_DONTNEED when
 * freed.  One mapping matters: a program whose tracked memory has reached
 * vm.max_map_count cannot get a new mapping from the kernel, and ckpt must
 * still be able to allocate to report its dirty set.  Allocations the pool
 * cannot hold get mappings of their own.
 */
#include "mem.h"
#include "state.h"

#include <string.h>
#include <sys/mman.h>
#include <time.h>

size_t ckpt__pagesize = 4096;
unsigned ckpt__pageshift = 12;

struct own_range {
	uintptr_t lo, hi;
};

union ckpt__state_page ckpt__state_page __attribute__((aligned(4096)));

/* The list of own ranges lives in its own raw mapping, itself listed; the
 * words that describe it are in the state block. */
#define own_lock (ckpt__g.own_lock)
#define own (*(struct own_range **)&ckpt__g.own)
#define own_n (ckpt__g.own_n)
#define own_cap (ckpt__g.own_cap)

#define POOL_BYTES ((size_t)256 << 20)

/* Where ckpt's mappings go in a process without address randomisation (a
 * resumable one): a band of the address space of their own, far below
 * where the kernel places the program's mappings (top down from under
 * the stack) and below the executable and its heap.  Otherwise they would
 * take, in a resumed process, addresses the program's thread stacks had,
 * which the resume must map again.  0: wherever the kernel chooses. */
#define BAND_START ((uintptr_t)0x200000000000)
#define BAND_END ((uintptr_t)0x300000000000)
static uintptr_t band_next;

__attribute__((constructor(101))) static void mem_init(void)
{
	long ps = sysconf(_SC_PAGESIZE);
	if (ps > 0) {
		ckpt__pagesize = (size_t)ps;
		ckpt__pageshift = (unsigned)__builtin_ctzl((unsigned long)ps);
	}
	long pers = ckpt__sys3(SYS_personality, 0xffffffff, 0, 0);
	if (pers >= 0 && (pers & 0x0040000 /* ADDR_NO_RANDOMIZE */))
		band_next = BAND_START;
}


static void *raw_map(size_t size, int extra)
{
	uintptr_t at = 0;
	if (__atomic_load_n(&band_next, __ATOMIC_RELAXED))
		at = __atomic_fetch_add(&band_next, ckpt__page_up(size) + ckpt__pagesize,
					__ATOMIC_RELAXED);
	if (at && at + size <= BAND_END) {
		long r = ckpt__sys6(SYS_mmap, (long)at, (long)size, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | extra, -1, 0);
		if (r == (long)at)
			return (void *)r;
		if (r >= 0 || r <= -4096)
			ckpt__sys3(SYS_munmap, r, (long)size, 0); /* an old kernel's hint */
	}
	long r = ckpt__sys6(SYS_mmap, 0, (long)size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | extra, -1, 0);
	if (r < 0 && r > -4096)
		return NULL;
	return (void *)r;
}

static void raw_unmap(void *p, size_t size)
{
	ckpt__sys3(SYS_munmap, (long)p, (long)size, 0);
}

/* Inserts [lo, hi) keeping the list sorted; own_lock held. */
static int own_add(uintptr_t lo, uintptr_t hi)
{
	if (own_n == own_cap) {
		size_t ncap = own_cap ? own_cap * 2 : 256;
		size_t bytes = ckpt__page_up(ncap * sizeof *own);
		struct own_range *n = raw_map(bytes, 0);
		if (!n)
			return -1;
		if (own)
			memcpy(n, own, own_n * sizeof *own);
		struct own_range *old = own;
		size_t oldbytes = ckpt__page_up(own_cap * sizeof *own);
		own = n;
		own_cap = bytes / sizeof *own;
		/* The list's own mapping is listed like any other. */
		size_t i = own_n;
		while (i > 0 && own[i - 1].lo > (uintptr_t)n)
			i--;
		memmove(&own[i + 1], &own[i], (own_n - i) * sizeof *own);
		own[i] = (struct own_range){(uintptr_t)n, (uintptr_t)n + bytes};
		own_n++;
		if (old) {
			for (size_t j = 0; j < own_n; j++)
				if (own[j].lo == (uintptr_t)old) {
					memmove(&own[j], &own[j + 1], (own_n - j - 1) * sizeof *own);
					own_n--;
					break;
				}
			raw_unmap(old, oldbytes);
		}
	}
	size_t i = own_n;
	while (i > 0 && own[i - 1].lo > lo)
		i--;
	memmove(&own[i + 1], &own[i], (own_n - i) * sizeof *own);
	own[i] = (struct own_range){lo, hi};
	own_n++;
	return 0;
}

static void own_del(uintptr_t lo)
{
	for (size_t i = 0; i < own_n; i++)
		if (own[i].lo == lo) {
			memmove(&own[i], &own[i + 1], (own_n - i - 1) * sizeof *own);
			own_n--;
			return;
		}
}

/* own_lock held. */
static int pool_init(void)
{
	if (ckpt__g.pool)
		return 0;
	char *p = raw_map(POOL_BYTES, MAP_NORESERVE);
	if (!p)
		return -1;
	size_t pages = POOL_BYTES / ckpt__pagesize;
	size_t map_pages = ckpt__page_up((pages + 7) / 8) / ckpt__pagesize;
	if (own_add((uintptr_t)p, (uintptr_t)p + POOL_BYTES)) {
		raw_unmap(p, POOL_BYTES);
		return -1;
	}
	ckpt__g.pool_used = (uint64_t *)p;
	ckpt__g.pool_pages = pages;
	/* The pages holding the bitmap itself are used. */
	for (size_t i = 0; i < map_pages; i++)
		ckpt__g.pool_used[i / 64] |= 1ull << (i % 64);
	ckpt__g.pool = p;
	return 0;
}

/* First fit for n free pages; own_lock held.  Returns the index or -1. */
static long pool_find(size_t n)
{
	uint64_t *used = ckpt__g.pool_used;
	size_t pages = ckpt__g.pool_pages, run = 0, start = 0;
	for (size_t i = 0; i < pages;) {
		if (run == 0 && (i & 63) == 0 && used[i / 64] == ~0ull) {
			i += 64;
			continue;
		}
		if (used[i / 64] & (1ull << (i & 63))) {
			run = 0;
		} else {
			if (run++ == 0)
				start = i;
			if (run == n)
				return (long)start;
		}
		i++;
	}
	return -1;
}

static void pool_mark(size_t first, size_t n, int on)
{
	for (size_t i = first; i < first + n; i++) {
		if (on)
			ckpt__g.pool_used[i / 64] |= 1ull << (i & 63);
		else
			ckpt__g.pool_used[i / 64] &= ~(1ull << (i & 63));
	}
}

static int in_pool(const void *p)
{
	return ckpt__g.pool && (const char *)p >= ckpt__g.pool &&
	       (const char *)p < ckpt__g.pool + POOL_BYTES;
}

static void *alloc_flags(size_t size, int extra)
{
	if (size == 0)
		size = 1;
	size = ckpt__page_up(size);
	size_t n = size / ckpt__pagesize;
	ckpt__spin_lock(&own_lock);
	if (pool_init() == 0) {
		long first = pool_find(n);
		if (first >= 0) {
			pool_mark((size_t)first, n, 1);
			ckpt__spin_unlock(&own_lock);
			return ckpt__g.pool + (size_t)first * ckpt__pagesize;
		}
	}
	ckpt__spin_unlock(&own_lock);
	void *p = raw_map(size, extra);
	if (!p)
		return NULL;
	ckpt__spin_lock(&own_lock);
	int rc = own_add((uintptr_t)p, (uintptr_t)p + size);
	ckpt__spin_unlock(&own_lock);
	if (rc) {
		raw_unmap(p, size);
		return NULL;
	}
	return p;
}

void *ckpt__mem_alloc(size_t size)
{
	return alloc_flags(size, 0);
}

void *ckpt__mem_reserve(size_t size)
{
	return alloc_flags(size, MAP_NORESERVE);
}

void ckpt__mem_free(void *p, size_t size)
{
	if (!p)
		return;
	if (size == 0)
		size = 1;
	size = ckpt__page_up(size);
	if (in_pool(p)) {
		/* Zero-filled again on next use, and the memory goes back; a
		 * few pages are cheaper to clear than to fault in again. */
		if (size <= 4 * ckpt__pagesize)
			memset(p, 0, size);
		else
			ckpt__sys3(SYS_madvise, (long)p, (long)size, MADV_DONTNEED);
		ckpt__spin_lock(&own_lock);
		pool_mark((size_t)((char *)p - ckpt__g.pool) / ckpt__pagesize, size / ckpt__pagesize, 0);
		ckpt__spin_unlock(&own_lock);
		return;
	}
	ckpt__spin_lock(&own_lock);
	own_del((uintptr_t)p);
	ckpt__spin_unlock(&own_lock);
	raw_unmap(p, size);
}

int ckpt__mem_grow(void **p, size_t *cap, size_t need, size_t elsize)
{
	if (need <= *cap)
		return 0;
	size_t ncap = *cap ? *cap : 4096 / elsize;
	if (ncap == 0)
		ncap = 1;
	while (ncap < need)
		ncap *= 2;
	size_t bytes = ckpt__page_up(ncap * elsize);
	void *n = ckpt__mem_alloc(bytes);
	if (!n)
		return -1;
	if (*p) {
		memcpy(n, *p, *cap * elsize);
		ckpt__mem_free(*p, *cap * elsize);
	}
	*p = n;
	*cap = bytes / elsize;
	return 0;
}

void ckpt__mem_array_free(void **p, size_t *cap, size_t elsize)
{
	if (*p)
		ckpt__mem_free(*p, *cap * elsize);
	*p = NULL;
	*cap = 0;
}

void ckpt__mem_own_foreach(void (*fn)(uintptr_t lo, uintptr_t hi, void *arg), void *arg)
{
	/* fn may allocate, which takes own_lock: iterate over a copy, on the
	 * stack while the list is short (it is: the pool and a few more). */
	struct own_range local[64];
	ckpt__spin_lock(&own_lock);
	size_t n0 = own_n;
	if (n0 <= 64)
		memcpy(local, own, n0 * sizeof *own);
	ckpt__spin_unlock(&own_lock);
	if (n0 <= 64) {
		for (size_t i = 0; i < n0; i++)
			fn(local[i].lo, local[i].hi, arg);
		return;
	}
	for (;;) {
		ckpt__spin_lock(&own_lock);
		size_t n = own_n;
		ckpt__spin_unlock(&own_lock);
		size_t bytes = ckpt__page_up((n + 1) * sizeof *own);
		struct own_range *copy = raw_map(bytes, 0);
		if (!copy)
			return;
		ckpt__spin_lock(&own_lock);
		int fits = own_n <= n + 1;
		if (fits) {
			memcpy(copy, own, own_n * sizeof *own);
			n = own_n;
		}
		ckpt__spin_unlock(&own_lock);
		if (fits)
			for (size_t i = 0; i < n; i++)
				fn(copy[i].lo, copy[i].hi, arg);
		raw_unmap(copy, bytes);
		if (fits)
			return;
	}
}

int ckpt__mem_is_own(uintptr_t lo, uintptr_t hi)
{
	int hit = 0;
	ckpt__spin_lock(&own_lock);
	for (size_t i = 0; i < own_n && !hit; i++)
		hit = own[i].lo < hi && lo < own[i].hi;
	ckpt__spin_unlock(&own_lock);
	return hit;
}

uint64_t ckpt__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static size_t str_len(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

void ckpt__fault_message(const char *msg, const uintptr_t *values, int nvalues)
{
	/* "%x" placeholders in msg take the values in order. */
	char buf[320];
	size_t n = 0;
	const char *pre = "ckpt: ";
	for (size_t i = 0; pre[i]; i++)
		buf[n++] = pre[i];
	int v = 0;
	for (size_t i = 0, l = str_len(msg); i < l && n < sizeof buf - 24; i++) {
		if (msg[i] == '%' && msg[i + 1] == 'x' && v < nvalues) {
			uintptr_t x = values[v++];
			int sh = 60;
			while (sh > 0 && !((x >> sh) & 15))
				sh -= 4;
			buf[n++] = '0';
			buf[n++] = 'x';
			for (; sh >= 0; sh -= 4)
				buf[n++] = "0123456789abcdef"[(x >> sh) & 15];
			i++;
			continue;
		}
		buf[n++] = msg[i];
	}
	buf[n++] = '\n';
	ckpt__raw_write(2, buf, n);
}

#if defined(__SANITIZE_ADDRESS__)
#define CKPT__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CKPT__ASAN 1
#endif
#endif

CKPT__FAULTPATH void ckpt__copy_words(void *dst, const void *src, size_t n)
{
#ifndef CKPT__ASAN
	/* Without the sanitizer nothing checks the program's memory: the C
	 * library's copy is the fastest (and async-signal-safe). */
	memcpy(dst, src, n);
#else
	uint64_t *d = dst;
	const uint64_t *s = src;
	for (size_t i = 0; i < n / 8; i++)
		d[i] = s[i];
#endif
}

CKPT__FAULTPATH int ckpt__is_zero(const void *p, size_t n)
{
	const uint64_t *w = p;
	uint64_t acc = 0;
	for (size_t i = 0; i < n / 8; i += 8)
		acc |= w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] |
		       w[i + 7];
	return acc == 0;
}
