/*
 * fill.c - filling fresh memory from a chain, block by block, on every core.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Planning gives every page of the fresh ranges a code, newest snapshot
 * first: a page set by a newer snapshot is not looked at again, and a
 * snapshot older than the mapping's birth gives it nothing.  Then a counting
 * sort on the block groups the data pages into one task per block.
 *
 * Running hands the tasks out through one atomic counter.  A task reads its
 * block once (pread, so that a file changing or shrinking underneath is an
 * error, not a signal), checks its hash and that it is one zstd frame with a
 * content checksum, and decompresses it: straight to its place when the
 * task wants every page of the block at consecutive addresses (the usual
 * case for a base), into the thread's buffer otherwise, to copy the pages
 * wanted.  Each page is written once.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "fill.h"
#include "error.h"
#include "mem.h"
#include "own-thread.h"
#include "sys.h"
#include "zmem.h"

#include "xxhash.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_THREADS 64

/* Linux 5.14; Debian 12's headers have it, older ones may not. */
#define MADV_POPULATE_WRITE_ 23

/* Codes of the plan, one per page: 0 nothing found yet, ZERO or FILE (a
 * run says so: the fresh page holds it already), or a data page:
 * ((global block + 1) << 8) | page in the block. */
enum { C_NONE = 0, C_ZERO = 1, C_FILE = 2, C_DATA = 256 };

void ckpt__fill_free(struct ckpt__fill *f)
{
	ckpt__mem_array_free((void **)&f->task, &f->task_cap, sizeof *f->task);
	ckpt__mem_array_free((void **)&f->page, &f->page_cap, sizeof *f->page);
	ckpt__mem_array_free((void **)&f->pop, &f->pop_cap, sizeof *f->pop);
	ckpt__rset_free(&f->data);
	if (f->arena)
		ckpt__mem_free(f->arena, f->arena_size);
	memset(f, 0, sizeof *f);
}

/* Gives the pages of [lo, hi) (inside fresh range i, whose first page is
 * number base) that have no code yet the code run r of snapshot number j
 * (global block numbers from gb) gives them. */
static int mark(uint64_t *code, size_t base, uintptr_t rlo, const struct ckpt__snap *s,
		const struct ckpt__frun *r, uint64_t gb, uintptr_t lo, uintptr_t hi, size_t *unset)
{
	size_t ps = ckpt__pagesize;
	for (uintptr_t a = lo; a < hi; a += ps) {
		uint64_t *c = &code[base + ((a - rlo) >> ckpt__pageshift)];
		if (*c != C_NONE)
			continue;
		if (r->kind == CKPT__RK_ZERO) {
			*c = C_ZERO;
		} else if (r->kind == CKPT__RK_FILE) {
			*c = C_FILE;
		} else {
			uint64_t pg = r->block_page + ((a - r->start) >> ckpt__pageshift);
			if (r->block >= s->nblocks || pg >= CKPT__BLOCK_PAGES)
				return ckpt__fail(CKPT_ECORRUPT, "%s: the run at %#lx points past its block",
						  s->name, (unsigned long)r->start);
			*c = ((gb + r->block + 1) << 8) | pg;
		}
		(*unset)--;
	}
	return 0;
}

/* Pages made present in one call, by one thread. */
#define POP_CHUNK ((uintptr_t)2 << 20)

/* A run of data pages to make present before the copies (a fault per page
 * costs more); single pages are left to their fault. */
static int pop_add(struct ckpt__fill *f, uintptr_t lo, uintptr_t hi)
{
	if (hi - lo < 2 * ckpt__pagesize)
		return 0;
	if (ckpt__mem_grow((void **)&f->pop, &f->pop_cap, f->npop + 1, sizeof *f->pop))
		return CKPT_ENOMEM;
	f->pop[f->npop++] = (struct ckpt__range){lo, hi};
	return 0;
}

/* Appends the page at a to the set (pages come in ascending order). */
static int data_add(struct ckpt__rset *d, uintptr_t a)
{
	if (d->n && d->r[d->n - 1].hi == a) {
		d->r[d->n - 1].hi = a + ckpt__pagesize;
		return 0;
	}
	if (ckpt__mem_grow((void **)&d->r, &d->cap, d->n + 1, sizeof *d->r))
		return CKPT_ENOMEM;
	d->r[d->n++] = (struct ckpt__range){a, a + ckpt__pagesize};
	return 0;
}

/* The first run of s that ends after addr (runs are sorted and apart). */
static size_t first_run_after(const struct ckpt__snap *s, uintptr_t addr)
{
	size_t lo = 0, hi = s->nruns;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct ckpt__frun *r = &s->runs[mid];
		if (r->start + ((uintptr_t)r->npages << ckpt__pageshift) <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int plan(struct ckpt__fill *f, struct ckpt__chain *c, uint64_t id,
		const struct ckpt__rset *fresh, struct ckpt__fill_at **by_addr, size_t *nby)
{
	memset(f, 0, sizeof *f);
	if (by_addr) {
		*by_addr = NULL;
		*nby = 0;
	}
	const struct ckpt__snap *top = ckpt__chain_find(c, id);
	if (!top || !fresh->n)
		return 0;
	size_t nsnap = (size_t)(top - c->snaps) + 1, ps = ckpt__pagesize;
	size_t *base = ckpt__mem_alloc((fresh->n + 1) * sizeof *base);
	uint64_t *gbase = ckpt__mem_alloc((nsnap + 1) * sizeof *gbase);
	uint64_t *code = NULL;
	uint32_t *count = NULL;
	int rc = base && gbase ? 0 : CKPT_ENOMEM;
	size_t npages = 0;
	for (size_t i = 0; !rc && i < fresh->n; i++) {
		base[i] = npages;
		npages += (fresh->r[i].hi - fresh->r[i].lo) >> ckpt__pageshift;
	}
	for (size_t j = 0; !rc && j < nsnap; j++)
		gbase[j + 1] = gbase[j] + c->snaps[j].nblocks;
	if (!rc && !(code = ckpt__mem_alloc(npages * sizeof *code)))
		rc = CKPT_ENOMEM;
	/* Newest first; stops when every page has its code. */
	size_t unset = npages;
	for (size_t j = nsnap; !rc && unset && j-- > 0;) {
		const struct ckpt__snap *s = &c->snaps[j];
		if (s->h.page_size != ps) {
			rc = ckpt__fail(CKPT_EFOREIGN, "%s: page size %u in a chain of %zu", s->name,
					s->h.page_size, ps);
			break;
		}
		/* The runs that meet each fresh range (a restore in place
		 * plans a few pages against a hundred files of runs). */
		const struct ckpt__fmap *m = NULL;
		for (size_t i = 0; !rc && i < fresh->n; i++)
			for (size_t k = first_run_after(s, fresh->r[i].lo);
			     !rc && k < s->nruns && s->runs[k].start < fresh->r[i].hi; k++) {
				const struct ckpt__frun *r = &s->runs[k];
				uintptr_t rlo = r->start;
				uintptr_t rhi = rlo + ((uintptr_t)r->npages << ckpt__pageshift);
				uintptr_t lo = rlo > fresh->r[i].lo ? rlo : fresh->r[i].lo;
				uintptr_t hi = rhi < fresh->r[i].hi ? rhi : fresh->r[i].hi;
				while (!rc && lo < hi) {
					/* Only from snapshots that had the mapping. */
					if (!m || lo < m->start || lo >= m->end)
						m = ckpt__snap_map_at(top, lo);
					uintptr_t e = m && m->end < hi ? m->end : hi;
					if (m && s->h.id >= m->born)
						rc = mark(code, base[i], fresh->r[i].lo, s, r, gbase[j], lo,
							  e, &unset);
					lo = m ? e : lo + ps;
				}
			}
	}
	/* The data pages, grouped by block (a counting sort keeps each
	 * block's pages in address order). */
	uint64_t nblocks = gbase ? gbase[nsnap] : 0;
	if (!rc && !(count = ckpt__mem_alloc((nblocks + 1) * sizeof *count)))
		rc = CKPT_ENOMEM;
	size_t ndata = 0;
	for (size_t p = 0; !rc && p < npages; p++) {
		if (code[p] >= C_DATA) {
			count[(code[p] >> 8)]++;
			ndata++;
		}
	}
	size_t ntask = 0;
	for (uint64_t b = 1; !rc && b <= nblocks; b++)
		ntask += count[b] != 0;
	if (!rc && (ckpt__mem_grow((void **)&f->page, &f->page_cap, ndata ? ndata : 1,
				   sizeof *f->page) ||
		    ckpt__mem_grow((void **)&f->task, &f->task_cap, ntask ? ntask : 1,
				   sizeof *f->task)))
		rc = CKPT_ENOMEM;
	if (!rc && by_addr && ndata && !(*by_addr = ckpt__mem_alloc(ndata * sizeof **by_addr)))
		rc = CKPT_ENOMEM;
	if (!rc) {
		/* count[b] becomes where block b's pages start; one task each. */
		size_t at = 0, j = 0;
		for (uint64_t b = 1; b <= nblocks; b++) {
			if (!count[b])
				continue;
			while (gbase[j + 1] < b)
				j++;
			f->task[f->ntask++] = (struct ckpt__fill_task){
				.snap = &c->snaps[j],
				.block = (uint32_t)(b - 1 - gbase[j]),
				.n = count[b],
				.first = at,
			};
			size_t n = count[b];
			count[b] = (uint32_t)f->ntask - 1;
			at += n;
		}
		uintptr_t plo = 0, phi = 0;
		for (size_t i = 0; !rc && i < fresh->n; i++)
			for (uintptr_t a = fresh->r[i].lo; !rc && a < fresh->r[i].hi; a += ps) {
				uint64_t cd = code[base[i] + ((a - fresh->r[i].lo) >> ckpt__pageshift)];
				if (cd < C_DATA)
					continue;
				if (a != phi || phi - plo >= POP_CHUNK) {
					rc = pop_add(f, plo, phi);
					plo = a;
				}
				phi = a + ps;
				if (!rc)
					rc = data_add(&f->data, a);
				struct ckpt__fill_task *t = &f->task[count[cd >> 8]];
				f->page[t->first + t->set++] = (struct ckpt__fill_page){
					.addr = a, .page = (uint32_t)(cd & 0xff)};
				if (by_addr && *by_addr)
					(*by_addr)[(*nby)++] = (struct ckpt__fill_at){
						.addr = a, .task = count[cd >> 8]};
			}
		if (!rc)
			rc = pop_add(f, plo, phi);
		f->npage = ndata;
	}
	if (rc && by_addr && *by_addr) {
		ckpt__mem_free(*by_addr, ndata * sizeof **by_addr);
		*by_addr = NULL;
		*nby = 0;
	}
	if (rc == CKPT_ENOMEM)
		rc = ckpt__fail(CKPT_ENOMEM, "out of memory planning a restore of %zu pages", npages);
	if (count)
		ckpt__mem_free(count, (nblocks + 1) * sizeof *count);
	if (code)
		ckpt__mem_free(code, npages * sizeof *code);
	if (gbase)
		ckpt__mem_free(gbase, (nsnap + 1) * sizeof *gbase);
	if (base)
		ckpt__mem_free(base, (fresh->n + 1) * sizeof *base);
	return rc;
}

int ckpt__fill_plan(struct ckpt__fill *f, struct ckpt__chain *c, uint64_t id,
		    const struct ckpt__rset *fresh)
{
	return plan(f, c, id, fresh, NULL, NULL);
}

int ckpt__fill_plan_at(struct ckpt__fill *f, struct ckpt__chain *c, uint64_t id,
		       const struct ckpt__rset *fresh, struct ckpt__fill_at **by_addr, size_t *nby)
{
	return plan(f, c, id, fresh, by_addr, nby);
}

/* ---- running ------------------------------------------------------------------------------ */

enum mode {
	M_FILL,  /* blocks read and written to the pages' places */
	M_STAGE, /* blocks read and checked, kept in the arena */
	M_APPLY, /* from the arena to the pages' places */
};

struct run {
	struct ckpt__fill *f;
	enum mode mode;
	size_t next_pop; /* the next run to make present */
	size_t next;     /* the next task to take */
	int err;         /* the first failure */
	ckpt__spin lock; /* over msg */
	char msg[256];
};

struct worker {
	struct run *run;
	ZSTD_DCtx *dctx;
	void *raw, *stored; /* a block each */
};

#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define HASH_OK(computed, stored) ((void)(computed), (void)(stored), 1)
#else
#define HASH_OK(computed, stored) ((computed) == (stored))
#endif

/* Where page i of task t goes: its place, or its slot in the arena when
 * staging pages. */
static inline char *dst(const struct run *r, const struct ckpt__fill_task *t, uint32_t i)
{
	if (r->mode == M_STAGE)
		return r->f->arena + (t->first + i) * ckpt__pagesize;
	return (char *)r->f->page[t->first + i].addr;
}

/* Reads len bytes of s from off into the n pieces of iov: 0, 1 on a short
 * read, or the failure. */
static int read_pieces(const struct ckpt__snap *s, uint64_t off, const struct iovec *iov, int n,
		       size_t len)
{
	if (s->mem) {
		const unsigned char *from = s->mem + off;
		for (int i = 0; i < n; i++) {
			memcpy(iov[i].iov_base, from, iov[i].iov_len);
			from += iov[i].iov_len;
		}
		return 0;
	}
	/* One piece (a stretch of pages at consecutive places) is the usual
	 * case: pread spares the kernel the vector. */
	long got;
	do
		got = n == 1 ? ckpt__raw_pread(s->fd, iov[0].iov_base, iov[0].iov_len, off)
			     : ckpt__raw_preadv(s->fd, iov, n, off);
	while (got == -EINTR);
	if (got < 0)
		return ckpt__fail(ckpt__from_errno((int)-got), "%s: %s", s->name, strerror((int)-got));
	return (size_t)got != len;
}

/* A raw block of which only some pages are wanted: one preadv puts each
 * wanted page where it goes and the others in the thread's buffer, and the
 * hash is taken over the pieces in the block's order (each page read and
 * written once).  1 when it cannot (a page wanted twice, a short read):
 * the caller reads the block whole. */
static int raw_scatter(struct worker *w, const struct ckpt__fill_task *t,
		       const struct ckpt__fblock *fb, uint32_t npages)
{
	const struct ckpt__fill_page *pg = &w->run->f->page[t->first];
	const struct ckpt__snap *s = t->snap;
	size_t ps = ckpt__pagesize;
	char *at[CKPT__BLOCK_PAGES] = {0};
	struct iovec iov[CKPT__BLOCK_PAGES];
	for (uint32_t i = 0; i < t->n; i++) {
		if (at[pg[i].page])
			return 1;
		at[pg[i].page] = dst(w->run, t, i);
	}
	int n = 0;
	for (uint32_t p = 0; p < npages; p++) {
		char *d = at[p] ? at[p] : (char *)w->raw + (size_t)p * ps;
		if (n && (char *)iov[n - 1].iov_base + iov[n - 1].iov_len == d)
			iov[n - 1].iov_len += ps;
		else
			iov[n++] = (struct iovec){d, ps};
	}
	if (fb->offset > s->size || fb->csize > s->size - fb->offset)
		return ckpt__fail(CKPT_ECORRUPT, "%s: read past the end of the file", s->name);
	int rc = read_pieces(s, fb->offset, iov, n, fb->csize);
	if (rc)
		return rc;
	if (!HASH_OK(ckpt__xxh64_pieces(iov, n, 0), fb->hash))
		return ckpt__fail(CKPT_ECORRUPT, "%s: block %u: hash mismatch", s->name, t->block);
	return 0;
}

/* The pages of block b of s (CKPT__CODEC_RAWP, npages of them) that at[]
 * has a place for, each read there and checked against its hash; the
 * others are not read at all, not even between two wanted ones: copying
 * such a page out of the page cache cost more here than the call it saves
 * (a long chain resumed 3-4% slower with gaps of two pages read along).
 * One read a stretch of wanted pages.  0, 1 on a short read, or the
 * failure. */
static int read_wanted(const struct ckpt__snap *s, uint32_t b, const struct ckpt__fblock *fb,
		       uint32_t npages, char *const *at)
{
	size_t ps = ckpt__pagesize;
	uint64_t h[CKPT__BLOCK_PAGES];
	int rc = ckpt__snap_page_hashes(s, b, h);
	if (rc)
		return rc;
	if (fb->offset > s->size || fb->csize > s->size - fb->offset)
		return ckpt__fail(CKPT_ECORRUPT, "%s: read past the end of the file", s->name);
	for (uint32_t p = 0; p < npages;) {
		if (!at[p]) {
			p++;
			continue;
		}
		struct iovec iov[CKPT__BLOCK_PAGES];
		int n = 0;
		uint32_t q = p;
		for (; q < npages && at[q]; q++) {
			if (n && (char *)iov[n - 1].iov_base + iov[n - 1].iov_len == at[q])
				iov[n - 1].iov_len += ps;
			else
				iov[n++] = (struct iovec){at[q], ps};
		}
		rc = read_pieces(s, fb->offset + (uint64_t)p * ps, iov, n, (size_t)(q - p) * ps);
		if (rc)
			return rc;
		for (uint32_t k = p; k < q; k++)
			if ((rc = ckpt__snap_page_check(s, b, h, k, at[k])) != 0)
				return rc;
		p = q;
	}
	return 0;
}

/* A block with a hash a page of which only some pages are wanted: those
 * read where they go.  1 when it cannot (a page wanted twice, a short
 * read): the caller reads the block whole. */
static int raw_pages(struct worker *w, const struct ckpt__fill_task *t,
		     const struct ckpt__fblock *fb, uint32_t npages)
{
	const struct ckpt__fill_page *pg = &w->run->f->page[t->first];
	char *at[CKPT__BLOCK_PAGES] = {0};
	for (uint32_t i = 0; i < t->n; i++) {
		if (at[pg[i].page])
			return 1;
		at[pg[i].page] = dst(w->run, t, i);
	}
	return read_wanted(t->snap, t->block, fb, npages, at);
}

static int no_checksum(const struct ckpt__snap *s, uint32_t b, const void *stored, uint32_t csize)
{
	ZSTD_frameHeader zh;
	if (ZSTD_getFrameHeader(&zh, stored, csize) != 0 || !zh.checksumFlag)
		return ckpt__fail(CKPT_ECORRUPT, "%s: block %u: the frame has no content checksum",
				  s->name, b);
	return 0;
}

/* Block t of its snapshot where its pages go (M_FILL, M_STAGE), or its
 * stored bytes into the arena, checked (M_STAGE without arena_pages). */
/* Checks task t against its block: *fb and *npages, or CKPT_ECORRUPT. */
static int check_task(const struct ckpt__fill *f, const struct ckpt__fill_task *t,
		      const struct ckpt__fblock **fbp, uint32_t *npages)
{
	const struct ckpt__fill_page *pg = &f->page[t->first];
	const struct ckpt__snap *s = t->snap;
	if (t->block >= s->nblocks)
		return ckpt__fail(CKPT_ECORRUPT, "%s: no block %u", s->name, t->block);
	const struct ckpt__fblock *fb = &s->blocks[t->block];
	*fbp = fb;
	*npages = fb->rsize / (uint32_t)ckpt__pagesize;
	if (fb->rsize % ckpt__pagesize || *npages > CKPT__BLOCK_PAGES || fb->csize > fb->rsize ||
	    (fb->codec != CKPT__CODEC_ZSTD && fb->csize != fb->rsize))
		return ckpt__fail(CKPT_ECORRUPT, "%s: block %u: %u bytes stored for %u of pages",
				  s->name, t->block, fb->csize, fb->rsize);
	for (uint32_t i = 0; i < t->n; i++)
		if (pg[i].page >= *npages)
			return ckpt__fail(CKPT_ECORRUPT, "%s: block %u holds %u pages, not %u",
					  s->name, t->block, *npages, pg[i].page + 1);
	return 0;
}

static int do_read(struct worker *w, const struct ckpt__fill_task *t)
{
	const struct ckpt__fill_page *pg = &w->run->f->page[t->first];
	const struct ckpt__snap *s = t->snap;
	size_t ps = ckpt__pagesize;
	const struct ckpt__fblock *fb;
	uint32_t npages;
	int crc = check_task(w->run->f, t, &fb, &npages);
	if (crc)
		return crc;
	if (w->run->mode == M_STAGE && !w->run->f->arena_pages) {
		char *kept = w->run->f->arena + t->kept;
		int rc = ckpt__snap_block_stored(s, t->block, kept);
		if (rc || fb->codec != CKPT__CODEC_ZSTD)
			return rc;
		if ((rc = no_checksum(s, t->block, kept, fb->csize)) != 0)
			return rc;
		size_t got = ZSTD_decompressDCtx(w->dctx, w->raw, fb->rsize, kept, fb->csize);
		if (ZSTD_isError(got) || got != fb->rsize)
			return ckpt__fail(CKPT_ECORRUPT, "%s: block %u: %s", s->name, t->block,
					  ZSTD_isError(got) ? ZSTD_getErrorName(got)
							    : "wrong size when decompressed");
		return 0;
	}
	/* Every page of the block, in order, to consecutive addresses. */
	int direct = t->n == npages;
	for (uint32_t i = 0; direct && i < t->n; i++)
		if (pg[i].page != i || dst(w->run, t, i) != dst(w->run, t, 0) + i * ps)
			direct = 0;
	if (!direct && fb->codec == CKPT__CODEC_RAWP) {
		int rc = raw_pages(w, t, fb, npages);
		if (rc <= 0)
			return rc;
	} else if (!direct && fb->codec == CKPT__CODEC_RAW) {
		int rc = raw_scatter(w, t, fb, npages);
		if (rc <= 0)
			return rc;
	}
	void *out = direct ? dst(w->run, t, 0) : w->raw;
	int rc = ckpt__snap_block(s, w->dctx, t->block, out, w->stored);
	if (!rc && fb->codec == CKPT__CODEC_ZSTD)
		rc = no_checksum(s, t->block, w->stored, fb->csize);
	for (uint32_t i = 0; !rc && !direct && i < t->n; i++)
		ckpt__copy_words(dst(w->run, t, i), (const char *)w->raw + (size_t)pg[i].page * ps,
				 ps);
	return rc;
}

/* Task t's pages from the arena to their places (M_APPLY). */
static int do_apply(struct worker *w, const struct ckpt__fill_task *t)
{
	const struct ckpt__fill *f = w->run->f;
	const struct ckpt__fill_page *pg = &f->page[t->first];
	size_t ps = ckpt__pagesize;
	if (f->arena_pages) {
		for (uint32_t i = 0; i < t->n; i++)
			ckpt__copy_words((void *)pg[i].addr, f->arena + (t->first + i) * ps, ps);
		return 0;
	}
	const struct ckpt__fblock *fb = &t->snap->blocks[t->block];
	const char *from = f->arena + t->kept;
	if (fb->codec == CKPT__CODEC_ZSTD) {
		size_t got = ZSTD_decompressDCtx(w->dctx, w->raw, fb->rsize, from, fb->csize);
		if (ZSTD_isError(got) || got != fb->rsize)
			return ckpt__fail(CKPT_EINTERNAL, "ckpt_restore: %s: block %u, verified, failed "
							  "to decompress again",
					  t->snap->name, t->block);
		from = w->raw;
	}
	for (uint32_t i = 0; i < t->n; i++)
		ckpt__copy_words((void *)pg[i].addr, from + (size_t)pg[i].page * ps, ps);
	return 0;
}

static void *work(void *arg)
{
	struct worker *w = arg;
	struct run *r = w->run;
	/* Fresh memory: every run of pages to write made present first, all
	 * threads at it; a thread that finds none left goes on to the
	 * blocks. */
	while (r->mode == M_FILL) {
		size_t i = __atomic_fetch_add(&r->next_pop, 1, __ATOMIC_RELAXED);
		if (i >= r->f->npop)
			break;
		const struct ckpt__range *p = &r->f->pop[i];
		ckpt__sys3(SYS_madvise, (long)p->lo, (long)(p->hi - p->lo), MADV_POPULATE_WRITE_);
	}
	for (;;) {
		if (__atomic_load_n(&r->err, __ATOMIC_RELAXED))
			break;
		size_t i = __atomic_fetch_add(&r->next, 1, __ATOMIC_RELAXED);
		if (i >= r->f->ntask)
			break;
		const struct ckpt__fill_task *t = &r->f->task[i];
		int rc = r->mode == M_APPLY ? do_apply(w, t) : do_read(w, t);
		if (rc) {
			ckpt__spin_lock(&r->lock);
			if (!r->err) {
				r->err = rc;
				snprintf(r->msg, sizeof r->msg, "%s", ckpt_last_error());
			}
			ckpt__spin_unlock(&r->lock);
			break;
		}
	}
	return NULL;
}

static int run(struct ckpt__fill *f, enum mode mode, unsigned threads)
{
	if (!f->ntask)
		return 0;
	if (threads < 1)
		threads = 1;
	if (threads > MAX_THREADS)
		threads = MAX_THREADS;
	if (threads > f->ntask)
		threads = (unsigned)f->ntask;
	size_t blk = (size_t)CKPT__BLOCK_PAGES * ckpt__pagesize;
	struct run r = {.f = f, .mode = mode};
	struct worker w[MAX_THREADS];
	struct ckpt__own_thread th[MAX_THREADS];
	unsigned n = 0, started = 0;
	int rc = 0;
	for (; n < threads; n++) {
		w[n] = (struct worker){.run = &r, .dctx = ckpt__zstd_dctx(),
				       .raw = ckpt__mem_alloc(blk), .stored = ckpt__mem_alloc(blk)};
		if (!w[n].dctx || !w[n].raw || !w[n].stored) {
			n++;
			rc = ckpt__fail(CKPT_ENOMEM, "out of memory for restoring");
			break;
		}
	}
	/* Workers 1..n-1 on threads of ckpt's own, worker 0 here. */
	while (!rc && started + 1 < n && ckpt__thread_spawn(&th[started], work, &w[started + 1]) == 0)
		started++;
	if (!rc)
		work(&w[0]);
	for (unsigned i = 0; i < started; i++)
		ckpt__thread_join(&th[i]);
	if (!rc && r.err)
		rc = ckpt__fail(r.err, "%s", r.msg);
	for (unsigned i = 0; i < n; i++) {
		if (w[i].dctx)
			ZSTD_freeDCtx(w[i].dctx);
		if (w[i].raw)
			ckpt__mem_free(w[i].raw, blk);
		if (w[i].stored)
			ckpt__mem_free(w[i].stored, blk);
	}
	return rc;
}

void ckpt__fill_move(struct ckpt__fill *f, intptr_t delta)
{
	for (size_t i = 0; i < f->npage; i++)
		f->page[i].addr += (uintptr_t)delta;
	for (size_t i = 0; i < f->npop; i++) {
		f->pop[i].lo += (uintptr_t)delta;
		f->pop[i].hi += (uintptr_t)delta;
	}
}

int ckpt__fill_run(struct ckpt__fill *f, unsigned threads)
{
	return run(f, M_FILL, threads);
}

int ckpt__fill_stage(struct ckpt__fill *f, unsigned threads, size_t limit)
{
	if (!f->ntask)
		return 0;
	size_t ps = ckpt__pagesize, pages = f->npage * ps, bytes = 0;
	/* The blocks as stored, one after the other, or (when that takes no
	 * less memory, or the pages fit the limit) just the pages wanted:
	 * kept as pages, a block is read and decompressed once. */
	for (size_t i = 0; i < f->ntask; i++) {
		struct ckpt__fill_task *t = &f->task[i];
		if (t->block >= t->snap->nblocks)
			return ckpt__fail(CKPT_ECORRUPT, "%s: no block %u", t->snap->name, t->block);
		uint32_t cs = t->snap->blocks[t->block].csize;
		if (cs > CKPT__BLOCK_PAGES * ps)
			return ckpt__fail(CKPT_ECORRUPT, "%s: block %u: %u bytes stored",
					  t->snap->name, t->block, cs);
		t->kept = bytes;
		bytes += (cs + 7) & ~(size_t)7;
	}
	f->arena_pages = pages <= limit || pages <= bytes;
	if (f->arena_pages)
		bytes = pages;
	f->arena_size = bytes ? bytes : 1;
	if (!(f->arena = ckpt__mem_alloc(f->arena_size))) {
		f->arena_size = 0;
		return ckpt__fail(CKPT_ENOMEM, "ckpt_restore: out of memory for %zu bytes of blocks",
				  bytes);
	}
	return run(f, M_STAGE, threads);
}

int ckpt__fill_apply(struct ckpt__fill *f, unsigned threads)
{
	return run(f, M_APPLY, threads);
}

/* ---- loading one block, for a filler of its own ------------------------------------------ */

int ckpt__fill_load(const struct ckpt__fill *f, const struct ckpt__fill_task *t, ZSTD_DCtx *dctx,
		    void *raw, void *stored)
{
	const struct ckpt__fblock *fb;
	uint32_t npages;
	int rc = check_task(f, t, &fb, &npages);
	if (rc)
		return rc;
	if (fb->codec == CKPT__CODEC_RAWP && t->n < npages) {
		/* The wanted pages alone, at their places in the block (a
		 * long chain's base is mostly pages later snapshots
		 * replaced); after a short read, the block whole. */
		char *at[CKPT__BLOCK_PAGES] = {0};
		const struct ckpt__fill_page *pg = &f->page[t->first];
		for (uint32_t i = 0; i < t->n; i++)
			at[pg[i].page] = (char *)raw + (size_t)pg[i].page * ckpt__pagesize;
		if ((rc = read_wanted(t->snap, t->block, fb, npages, at)) <= 0)
			return rc;
	}
	rc = ckpt__snap_block(t->snap, dctx, t->block, raw, stored);
	if (!rc && fb->codec == CKPT__CODEC_ZSTD)
		rc = no_checksum(t->snap, t->block, stored, fb->csize);
	return rc;
}
