/*
 * compress.c - packing pages into compressed blocks on worker threads.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Jobs are numbered; workers take the next one, fill the slot job % window
 * and mark it done; the calling thread hands done slots to the sink in job
 * order and frees them.  A worker waits while its job would be more than
 * `window` ahead of the sink, which bounds the memory in flight to
 * window * (block + compressed block).  The workers come from a crew
 * (struct ckpt__workers) that sleeps between calls.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "compress.h"
#include "error.h"
#include "mem.h"
#include "xxhash.h"
#include "zmem.h"

#include <string.h>
#include <sys/resource.h>

struct slot {
	int state; /* 0 free, 1 busy, 2 done */
	struct ckpt__cblock b;
	char *raw, *out;
};

struct pool {
	const uintptr_t *pages;
	const size_t *first; /* job j: pages[first[j] .. first[j + 1]) */
	size_t n, njobs, page_size, window;
	int level;
	ckpt__mutex lock;
	ckpt__cond cond;
	size_t next;    /* next job to take */
	size_t emitted; /* jobs handed to the sink */
	int stop;       /* the sink failed or memory ran out */
	int err;
	struct slot *slots;
	size_t raw_bytes, out_bytes;
};

/* Fills slot s with job j. */
static int pack(struct pool *p, ZSTD_CCtx *cctx, size_t j, struct slot *s)
{
	size_t first = p->first[j], count = p->first[j + 1] - first;
	struct ckpt__cblock *b = &s->b;
	memset(b, 0, sizeof *b);
	b->job = j;
	b->npages = (unsigned)count;
	size_t ps = p->page_size, used = 0;
	for (size_t i = 0; i < count; i++) {
		const void *src = (const void *)p->pages[first + i];
		/* The program's memory, read word by word (see ckpt__copy_words). */
		if (ckpt__is_zero(src, ps)) {
			b->zero_mask |= 1ull << i;
			continue;
		}
		ckpt__copy_words(s->raw + used, src, ps);
		used += ps;
	}
	b->stored = (unsigned)(used / ps);
	b->rsize = (uint32_t)used;
	if (!used)
		return 0;
	size_t c = ZSTD_compress2(cctx, s->out, ZSTD_compressBound(used), s->raw, used);
	if (ZSTD_isError(c))
		return ckpt__fail(CKPT_EINTERNAL, "zstd: %s", ZSTD_getErrorName(c));
	/* Compressed only when it saves an eighth: below that, reading the
	 * bytes zstd would save costs less than decompressing them (about
	 * 0.9 GB/s a core on noisy floats), and a raw block can be read
	 * straight into place. */
	if (c <= used - used / 8) {
		b->codec = CKPT__CODEC_ZSTD;
		b->data = s->out;
		b->csize = (uint32_t)c;
	} else {
		/* With a hash a page, so that a reader needs only its pages
		 * (a resume under a long chain reads a fraction of a base). */
		uint64_t *ph = (uint64_t *)(void *)s->out;
		for (size_t i = 0; i < used / ps; i++)
			ph[i] = ckpt__xxh64(s->raw + i * ps, ps, 0);
		b->codec = CKPT__CODEC_RAWP;
		b->data = s->raw;
		b->csize = (uint32_t)used;
		b->phash = ph;
		b->hash = ckpt__xxh64(ph, used / ps * 8, 0);
		return 0;
	}
	b->hash = ckpt__xxh64(b->data, b->csize, 0);
	return 0;
}

static void *worker(void *arg)
{
	struct pool *p = arg;
	ZSTD_CCtx *cctx = ckpt__zstd_cctx(p->level);
	ckpt__mutex_lock(&p->lock);
	if (!cctx && !p->err)
		p->err = ckpt__fail(CKPT_ENOMEM, "out of memory for a zstd context");
	for (;;) {
		while (!p->stop && !p->err && p->next < p->njobs && p->next >= p->emitted + p->window)
			ckpt__cond_wait(&p->cond, &p->lock);
		if (p->stop || p->err || p->next >= p->njobs)
			break;
		size_t j = p->next++;
		struct slot *s = &p->slots[j % p->window];
		s->state = 1;
		ckpt__mutex_unlock(&p->lock);
		int rc = pack(p, cctx, j, s);
		ckpt__mutex_lock(&p->lock);
		s->state = 2;
		if (rc && !p->err)
			p->err = rc;
		ckpt__cond_broadcast(&p->cond);
	}
	ckpt__cond_broadcast(&p->cond);
	ckpt__mutex_unlock(&p->lock);
	if (cctx)
		ZSTD_freeCCtx(cctx);
	return NULL;
}

static void *crew_main(void *arg)
{
	struct ckpt__workers *w = arg;
	uint64_t seen = 0;
	ckpt__mutex_lock(&w->lock);
	for (;;) {
		while (!w->quit && w->round == seen)
			ckpt__cond_wait(&w->cond, &w->lock);
		if (w->quit)
			break;
		seen = w->round;
		void *(*fn)(void *) = w->fn;
		void *fa = w->arg;
		ckpt__mutex_unlock(&w->lock);
		fn(fa);
		ckpt__mutex_lock(&w->lock);
		if (--w->busy == 0)
			ckpt__cond_broadcast(&w->cond);
	}
	ckpt__mutex_unlock(&w->lock);
	return NULL;
}

void ckpt__workers_start(struct ckpt__workers *w, unsigned n)
{
	memset(w, 0, sizeof *w);
	if (n > CKPT__MAX_WORKERS)
		n = CKPT__MAX_WORKERS;
	while (w->n < n && ckpt__thread_spawn(&w->th[w->n], crew_main, w) == 0)
		w->n++;
}

void ckpt__workers_nice(struct ckpt__workers *w, int nice)
{
	for (unsigned i = 0; w && i < w->n; i++) {
		int tid = __atomic_load_n(&w->th[i].tid, __ATOMIC_ACQUIRE);
		if (tid > 0)
			setpriority(PRIO_PROCESS, (id_t)tid, nice);
	}
}

void ckpt__workers_stop(struct ckpt__workers *w)
{
	ckpt__mutex_lock(&w->lock);
	w->quit = 1;
	ckpt__cond_broadcast(&w->cond);
	ckpt__mutex_unlock(&w->lock);
	for (unsigned i = 0; i < w->n; i++)
		ckpt__thread_join(&w->th[i]);
	w->n = 0;
}

/* Runs fn(arg) once on every worker; returns at once. */
static void crew_run(struct ckpt__workers *w, void *(*fn)(void *), void *arg)
{
	ckpt__mutex_lock(&w->lock);
	w->fn = fn;
	w->arg = arg;
	w->busy = w->n;
	w->round++;
	ckpt__cond_broadcast(&w->cond);
	ckpt__mutex_unlock(&w->lock);
}

static void crew_wait(struct ckpt__workers *w)
{
	ckpt__mutex_lock(&w->lock);
	while (w->busy)
		ckpt__cond_wait(&w->cond, &w->lock);
	ckpt__mutex_unlock(&w->lock);
}

int ckpt__compress_pages(const uintptr_t *pages, size_t n, const size_t *first, size_t njobs,
			 size_t page_size, int level, unsigned threads, struct ckpt__workers *wk,
			 int (*sink)(const struct ckpt__cblock *b, void *arg), void *arg,
			 uint64_t *compress_ns)
{
	struct pool p = {.pages = pages, .first = first, .n = n, .njobs = njobs,
			 .page_size = page_size, .level = level};
	if (wk)
		threads = wk->n;
	if (threads < 1)
		threads = 1;
	if (threads > p.njobs)
		threads = p.njobs ? (unsigned)p.njobs : 1;
	p.window = 2 * (size_t)threads + 2;
	size_t raw = page_size * CKPT__BLOCK_PAGES, out = ZSTD_compressBound(raw);
	size_t slots_bytes = p.window * sizeof *p.slots;
	p.slots = ckpt__mem_alloc(slots_bytes);
	if (!p.slots)
		return ckpt__fail(CKPT_ENOMEM, "out of memory for compression");
	int rc = 0;
	for (size_t i = 0; i < p.window && !rc; i++) {
		p.slots[i].raw = ckpt__mem_alloc(raw);
		p.slots[i].out = ckpt__mem_alloc(out);
		if (!p.slots[i].raw || !p.slots[i].out)
			rc = ckpt__fail(CKPT_ENOMEM, "out of memory for compression");
	}
	uint64_t t0 = ckpt__now_ns();
	/* Outside a commit (compaction, the tool): a crew for this call. */
	struct ckpt__workers *local = NULL;
	if (!rc && !wk && threads > 1 && (local = ckpt__mem_alloc(sizeof *local))) {
		ckpt__workers_start(local, threads);
		wk = local;
	}
	unsigned started = !rc && wk && p.njobs > 1 ? wk->n : 0;
	if (started)
		crew_run(wk, worker, &p);
	if (!rc && started == 0) {
		/* No workers: pack each job here, just before it is emitted. */
		ZSTD_CCtx *cctx = ckpt__zstd_cctx(level);
		if (!cctx)
			rc = ckpt__fail(CKPT_ENOMEM, "out of memory for a zstd context");
		for (size_t j = 0; !rc && j < p.njobs; j++) {
			rc = pack(&p, cctx, j, &p.slots[0]);
			if (!rc)
				rc = sink(&p.slots[0].b, arg);
		}
		if (cctx)
			ZSTD_freeCCtx(cctx);
	} else if (!rc) {
		ckpt__mutex_lock(&p.lock);
		while (p.emitted < p.njobs && !p.err) {
			struct slot *s = &p.slots[p.emitted % p.window];
			if (s->state != 2 || s->b.job != p.emitted) {
				ckpt__cond_wait(&p.cond, &p.lock);
				continue;
			}
			ckpt__mutex_unlock(&p.lock);
			int r = sink(&s->b, arg);
			ckpt__mutex_lock(&p.lock);
			s->state = 0;
			p.emitted++;
			if (r) {
				p.err = r;
				p.stop = 1;
			}
			ckpt__cond_broadcast(&p.cond);
		}
		p.stop = 1;
		rc = p.err;
		ckpt__cond_broadcast(&p.cond);
		ckpt__mutex_unlock(&p.lock);
		crew_wait(wk);
	}
	if (local) {
		ckpt__workers_stop(local);
		ckpt__mem_free(local, sizeof *local);
	}
	if (compress_ns)
		*compress_ns = ckpt__now_ns() - t0;
	for (size_t i = 0; i < p.window; i++) {
		ckpt__mem_free(p.slots[i].raw, raw);
		ckpt__mem_free(p.slots[i].out, out);
	}
	ckpt__mem_free(p.slots, slots_bytes);
	return rc;
}
