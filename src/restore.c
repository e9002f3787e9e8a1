/*
 * restore.c - rolling the process' memory back to a snapshot, in place.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Which pages can differ from snapshot k: those dirtied since the newest
 * snapshot, those any snapshot after k stored, pinned memory, and the
 * mappings that appeared or vanished since k.  Only those are rewritten, so
 * rolling back to the newest snapshot costs what was dirtied since.
 *
 * Three phases, and memory the program can see changes only in the last:
 *
 * 1. Making room: the mappings snapshot k had and the process has not are
 *    created in place (fixed addresses nothing occupies) and the break is
 *    raised, before anything large is allocated (an allocation of ckpt's
 *    could otherwise take their place).  That changes nothing the program
 *    has mapped, and is undone on any failure before phase 3.
 * 2. Reading.  Pages in memory phase 1 (or the caller, a resume) mapped
 *    are fresh: the program has not seen them and a failure unmaps them,
 *    so they are filled now, straight from the blocks, on every core
 *    (fill.c).  For the others every block the pages need is read, its
 *    hash checked, and decompressed in full (zstd checks the frame's content checksum), so a
 *    block that passes its hash but not decompression (a damaged frame, a
 *    wrong size) is refused here.  Decompressed blocks are kept, up to
 *    STAGE_LIMIT bytes in all; past that a block is decompressed once to
 *    check it, kept compressed, and decompressed again when written: memory
 *    bounded at the cost of a second decompression for restores that large
 *    (a resume of a big heap).  The second decompression works on the
 *    verified bytes, held in ckpt's memory, with a context whose buffers
 *    the first one sized, so a file that changes under the restore cannot
 *    make it fail.
 * 3. Applying (no return): the break lowered, mappings snapshot k did not
 *    have unmapped, every page written.
 *
 * Pages that read as zero are not written where the memory is anonymous
 * and private: MADV_DONTNEED gives back the kernel's zero page, and leaves
 * the page absent (a sparse mapping stays sparse; a resume does not make
 * every reserved page resident).
 *
 * Not touched: ckpt's own memory, excluded ranges, thread stacks (the
 * calling thread's included) and glibc's thread descriptor in the main
 * thread's TLS block.  Other threads must be quiescent.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "restore.h"
#include "bitmap.h"
#include "error.h"
#include "faultlog.h"
#include "fill.h"
#include "inject.h"
#include "lazy.h"
#include "mem.h"
#include "shadow.h"
#include "thread.h"
#include "track.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define T ckpt__T

/* Linux 5.14; Debian 12's headers have it, older ones may not. */
#define CKPT__MADV_POPULATE_WRITE 23

/* Decompressed blocks a restore keeps in memory; beyond, blocks are kept
 * compressed (checked, and decompressed again when written). */
#define STAGE_LIMIT ((size_t)64 << 20)

/* A verified block: decompressed (raw), or compressed (bytes) when the
 * staging limit was reached. */
struct vblock {
	const struct ckpt__snap *snap;
	uint32_t block;
	void *bytes; /* csize bytes as stored, or NULL */
	uint32_t csize;
	uint32_t rsize;
	void *raw;   /* rsize bytes, decompressed, or NULL */
};

struct rctx {
	struct ckpt__chain *c;
	const struct ckpt__snap *target;
	uint64_t k, latest;
	struct ckpt__rset cand;     /* pages that may differ from snapshot k */
	struct ckpt__rset unmap;    /* mapped now, absent from snapshot k */
	struct ckpt__rset recreate; /* in snapshot k, not mapped now */
	struct ckpt__rset spans;    /* made writable for the copy */
	struct ckpt__rset fresh;    /* of cand, in memory make_room mapped */
	struct ckpt__rset rest;     /* cand less fresh: written in phase 3 */
	struct ckpt__fill sf;       /* rest's data pages, staged in phase 2 */
	struct ckpt__rset unstaged; /* rest less those: written page by page */
	struct vblock *vb;
	size_t nvb, vb_cap;
	size_t staged;              /* bytes of decompressed blocks kept */
	uint64_t pages, blocks_read;
	const struct vblock *inbuf; /* the block decompressed in c->blockbuf */
	size_t nmade;               /* recreate ranges mapped so far */
	uintptr_t brk_k;            /* the break as of snapshot k, or 0 */
	uintptr_t brk_cur;          /* the break when the restore began */
	uint64_t fresh_pages;       /* pages of fresh */
	int brk_raised;             /* phase 1 raised it to brk_k */
	struct zrun {               /* pages to discard, gathered */
		uintptr_t lo, hi;
	} zr;
};

static int cmp_vb(const struct vblock *a, const struct ckpt__snap *s, uint32_t b)
{
	if (a->snap != s)
		return (uintptr_t)a->snap < (uintptr_t)s ? -1 : 1;
	return a->block < b ? -1 : a->block > b;
}

static struct vblock *vb_find(struct rctx *r, const struct ckpt__snap *s, uint32_t b)
{
	size_t lo = 0, hi = r->nvb;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = cmp_vb(&r->vb[mid], s, b);
		if (c == 0)
			return &r->vb[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Decompresses a zstd block of s into out (rsize bytes) and checks it
 * decompressed whole, to its size, with a matching content checksum. */
static int decompress(struct rctx *r, const struct ckpt__snap *s, uint32_t b, const void *bytes,
		      void *out)
{
	const struct ckpt__fblock *fb = &s->blocks[b];
	ZSTD_frameHeader zh;
	if (ZSTD_getFrameHeader(&zh, bytes, fb->csize) != 0 || !zh.checksumFlag)
		return ckpt__fail(CKPT_ECORRUPT, "%s: block %u: the frame has no content checksum",
				  s->name, b);
	size_t got = ZSTD_decompressDCtx(r->c->dctx, out, fb->rsize, bytes, fb->csize);
	if (ZSTD_isError(got) || got != fb->rsize)
		return ckpt__fail(CKPT_ECORRUPT, "%s: block %u: %s", s->name, b,
				  ZSTD_isError(got) ? ZSTD_getErrorName(got)
						    : "wrong size when decompressed");
	return 0;
}

/* Reads, checks and keeps block b of s: its hash, then the whole of its
 * decompression (phase 2). */
static int vb_add(struct rctx *r, const struct ckpt__snap *s, uint32_t b)
{
	if (vb_find(r, s, b))
		return 0;
	if (b >= s->nblocks)
		return ckpt__fail(CKPT_ECORRUPT, "%s: no block %u", s->name, b);
	const struct ckpt__fblock *fb = &s->blocks[b];
	if (fb->rsize > r->c->bufsz || (fb->codec != CKPT__CODEC_ZSTD && fb->csize != fb->rsize))
		return ckpt__fail(CKPT_ECORRUPT, "%s: block %u: %u bytes stored for %u", s->name, b,
				  fb->csize, fb->rsize);
	void *bytes = ckpt__mem_alloc(fb->csize ? fb->csize : 1);
	if (!bytes)
		return ckpt__fail(CKPT_ENOMEM, "ckpt_restore: out of memory for block %u of %s", b,
				  s->name);
	int rc = ckpt__snap_block_stored(s, b, bytes);
	void *raw = NULL;
	if (!rc && fb->codec == CKPT__CODEC_ZSTD) {
		if (r->staged + fb->rsize <= STAGE_LIMIT)
			raw = ckpt__mem_alloc(fb->rsize);
		/* Into the chain's block buffer when not kept: checked only. */
		r->inbuf = NULL;
		rc = decompress(r, s, b, bytes, raw ? raw : r->c->blockbuf);
		if (!rc && raw) {
			ckpt__mem_free(bytes, fb->csize ? fb->csize : 1);
			bytes = NULL;
			r->staged += fb->rsize;
		}
	}
	if (!rc && ckpt__mem_grow((void **)&r->vb, &r->vb_cap, r->nvb + 1, sizeof *r->vb))
		rc = ckpt__fail(CKPT_ENOMEM, "ckpt_restore: out of memory");
	if (rc) {
		if (bytes)
			ckpt__mem_free(bytes, fb->csize ? fb->csize : 1);
		if (raw)
			ckpt__mem_free(raw, fb->rsize);
		return rc;
	}
	size_t i = r->nvb;
	while (i > 0 && cmp_vb(&r->vb[i - 1], s, b) > 0) {
		r->vb[i] = r->vb[i - 1];
		i--;
	}
	r->vb[i] = (struct vblock){s, b, bytes, fb->csize, fb->rsize, raw};
	r->nvb++;
	r->blocks_read++;
	return 0;
}

static void rctx_free(struct rctx *r)
{
	for (size_t i = 0; i < r->nvb; i++) {
		if (r->vb[i].bytes)
			ckpt__mem_free(r->vb[i].bytes, r->vb[i].csize ? r->vb[i].csize : 1);
		if (r->vb[i].raw)
			ckpt__mem_free(r->vb[i].raw, r->vb[i].rsize);
	}
	ckpt__mem_array_free((void **)&r->vb, &r->vb_cap, sizeof *r->vb);
	ckpt__rset_free(&r->cand);
	ckpt__rset_free(&r->unmap);
	ckpt__rset_free(&r->recreate);
	ckpt__rset_free(&r->spans);
	ckpt__rset_free(&r->fresh);
	ckpt__rset_free(&r->rest);
	ckpt__fill_free(&r->sf);
	ckpt__rset_free(&r->unstaged);
}

static int add(struct ckpt__rset *s, uintptr_t lo, uintptr_t hi)
{
	return ckpt__rset_add(s, lo, hi) ? CKPT_ENOMEM : 0;
}

static int bits_to(uintptr_t lo, uintptr_t hi, void *arg)
{
	return add(arg, lo, hi);
}

static int writable_to(uintptr_t s, uintptr_t e, const struct ckpt__vma *v, void *arg)
{
	return (v->perms & CKPT__VMA_W) && T->be->writable_means_dirty ? add(arg, s, e) : 0;
}

/* out = a ∩ b. */
static int intersect(const struct ckpt__rset *a, const struct ckpt__rset *b, struct ckpt__rset *out)
{
	for (size_t i = 0; i < b->n; i++)
		for (size_t j = ckpt__rset_lower(a, b->r[i].lo); j < a->n && a->r[j].lo < b->r[i].hi;
		     j++) {
			uintptr_t lo = a->r[j].lo > b->r[i].lo ? a->r[j].lo : b->r[i].lo;
			uintptr_t hi = a->r[j].hi < b->r[i].hi ? a->r[j].hi : b->r[i].hi;
			if (lo < hi && add(out, lo, hi))
				return CKPT_ENOMEM;
		}
	return 0;
}

/* ---- planning ----------------------------------------------------------------- */

static int plan(struct rctx *r, int use_shadow, int all)
{
	const struct ckpt__snap *k = r->target;
	const struct ckpt__maps *m = &T->maps;
	struct ckpt__rset excl = {0}, mapped_k = {0};
	int rc = ckpt__track_excluded(m, T->flags, &excl, NULL);
	/* Dirty since the newest snapshot, and what changed behind ckpt's back. */
	for (size_t i = 0; !rc && i < T->tab->n; i++) {
		const struct ckpt__region *g = &T->tab->r[i];
		rc = ckpt__bm_runs(g->start, g->end, bits_to, &r->cand);
		if (!rc)
			rc = ckpt__maps_foreach(m, g->start, g->end, writable_to, &r->cand);
	}
	for (size_t i = 0; !rc && i < T->pinned.n; i++)
		rc = add(&r->cand, T->pinned.r[i].lo, T->pinned.r[i].hi);
	/* What the snapshots after k changed. */
	for (uint64_t j = r->k + 1; !rc && j <= r->latest; j++) {
		const struct ckpt__snap *s = ckpt__chain_find(r->c, j);
		for (size_t i = 0; !rc && i < s->nruns; i++)
			rc = add(&r->cand, s->runs[i].start,
				 s->runs[i].start + ((uint64_t)s->runs[i].npages << ckpt__pageshift));
		/* Mappings born after k were not in k: whatever they hold goes. */
		for (size_t i = 0; !rc && i < s->nmaps; i++)
			if (s->maps[i].born > r->k)
				rc = add(&r->cand, s->maps[i].start, s->maps[i].end);
	}
	for (size_t i = 0; !rc && i < k->nmaps; i++) {
		const struct ckpt__fmap *fm = &k->maps[i];
		rc = add(&mapped_k, fm->start, fm->end);
		/* A resume rewrites everything. */
		if (!rc && all)
			rc = add(&r->cand, fm->start, fm->end);
		/* Not mapped now: recreated, and written whole. */
		uintptr_t at = fm->start;
		while (!rc && at < fm->end) {
			long v = ckpt__maps_find(m, at);
			if (v >= 0) {
				at = m->v[v].end;
				continue;
			}
			size_t nx = CKPT__FIRST_ENDING_AFTER(m->v, m->n, end, at);
			uintptr_t end = nx < m->n && m->v[nx].start < fm->end ? m->v[nx].start : fm->end;
			rc = add(&r->recreate, at, end);
			if (!rc)
				rc = add(&r->cand, at, end);
			at = end;
		}
	}
	/* Writable memory now that snapshot k does not have: it goes, unless
	 * it is not the program's state (stacks, ckpt, exclusions). */
	for (size_t i = 0; !rc && i < m->n; i++) {
		const struct ckpt__vma *v = &m->v[i];
		if (!(v->perms & CKPT__VMA_W) && !ckpt__rtab_find(T->tab, v->start))
			continue;
		for (uintptr_t at = v->start; at < v->end && !rc;) {
			size_t j = ckpt__rset_lower(&mapped_k, at);
			uintptr_t stop = v->end;
			if (j < mapped_k.n && mapped_k.r[j].lo <= at) {
				at = mapped_k.r[j].hi;
				continue;
			}
			if (j < mapped_k.n && mapped_k.r[j].lo < stop)
				stop = mapped_k.r[j].lo;
			rc = add(&r->unmap, at, stop);
			at = stop;
		}
	}
	for (size_t i = 0; !rc && i < excl.n; i++) {
		ckpt__rset_del(&r->unmap, excl.r[i].lo, excl.r[i].hi);
		ckpt__rset_del(&r->cand, excl.r[i].lo, excl.r[i].hi);
	}
	for (size_t i = 0; !rc && i < T->nosave.n; i++) {
		ckpt__rset_del(&r->unmap, T->nosave.r[i].lo, T->nosave.r[i].hi);
		ckpt__rset_del(&r->cand, T->nosave.r[i].lo, T->nosave.r[i].hi);
	}
	/* Only pages snapshot k describes are written. */
	struct ckpt__rset keep = {0};
	if (!rc)
		rc = intersect(&r->cand, &mapped_k, &keep);
	if (!rc) {
		ckpt__rset_free(&r->cand);
		r->cand = keep;
		memset(&keep, 0, sizeof keep);
	}
	ckpt__rset_free(&keep);
	ckpt__rset_free(&excl);
	ckpt__rset_free(&mapped_k);
	return rc;
}

/* Phase 2: every block the pages need, read, verified and decompressed;
 * every file a recreated mapping shows pages of, checked. */
static int load_blocks(struct rctx *r, int use_shadow)
{
	const struct ckpt__snap *k = r->target;
	size_t ps = ckpt__pagesize;
	int rc = 0;
	for (size_t i = 0; !rc && i < r->unstaged.n; i++)
		for (uintptr_t a = r->unstaged.r[i].lo; !rc && a < r->unstaged.r[i].hi; a += ps) {
			if (use_shadow && ckpt__shadow_get(a))
				continue;
			struct ckpt__source src;
			if (ckpt__chain_source(r->c, r->k, a, &src) != 0)
				continue;
			if (src.kind == CKPT__RK_DATA)
				rc = vb_add(r, src.snap, src.run->block);
			else if (src.kind == CKPT__RK_FILE && ckpt__rset_overlaps(&r->recreate, a, a + ps)) {
				/* Recreating a file mapping needs the file. */
				char path[4096];
				ckpt__snap_str(k, src.map->name_off, src.map->name_len, path, sizeof path);
				struct stat st;
				if (stat(path, &st) != 0 || st.st_ino != src.map->inode)
					rc = ckpt__fail(CKPT_ENOENT,
							"ckpt_restore: %s is gone or replaced; the mapping at %#lx "
							"cannot be recreated",
							path, (unsigned long)src.map->start);
			}
		}
	return rc;
}

/* ---- phase 1: making room ----------------------------------------------------------- */

/* Maps [lo, hi) of snapshot k where nothing is mapped now: a private file
 * mapping from its file, anonymous memory otherwise.  CKPT_FAULT=map:N
 * makes the Nth fail. */
static int recreate(struct rctx *r, uintptr_t lo, uintptr_t hi)
{
	const struct ckpt__fmap *fm = ckpt__snap_map_at(r->target, lo);
	char path[4096] = "";
	long p = -ENOMEM;
	int fd = -1, e = ckpt__inject(CKPT__IO_MAP);
	if (fm && !(fm->flags & CKPT__MF_ANON) && !(fm->flags & CKPT__MF_SHARED)) {
		ckpt__snap_str(r->target, fm->name_off, fm->name_len, path, sizeof path);
		fd = e ? -1 : open(path, O_RDONLY | O_CLOEXEC);
		if (!e && fd < 0)
			return ckpt__fail(CKPT_ENOENT, "ckpt_restore: cannot open %s to recreate the "
						       "mapping at %#lx: %s",
					  path, (unsigned long)lo, strerror(errno));
	}
	if (!e && fd >= 0)
		p = ckpt__sys6(SYS_mmap, (long)lo, (long)(hi - lo), PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_FIXED_NOREPLACE, fd,
			       (long)(fm->offset + (lo - fm->start)));
	else if (!e)
		p = ckpt__sys6(SYS_mmap, (long)lo, (long)(hi - lo), PROT_READ | PROT_WRITE,
			       MAP_ANONYMOUS | MAP_FIXED_NOREPLACE |
				       (fm && (fm->flags & CKPT__MF_SHARED) ? MAP_SHARED : MAP_PRIVATE),
			       -1, 0);
	if (fd >= 0)
		close(fd);
	if (e)
		p = -e;
	if (p == (long)lo)
		return 0;
	if (p >= 0 || p < -4095) {
		/* An old kernel without MAP_FIXED_NOREPLACE placed it elsewhere. */
		ckpt__sys3(SYS_munmap, p, (long)(hi - lo), 0);
		p = -EEXIST;
	}
	return ckpt__fail(ckpt__from_errno((int)-p),
			  "ckpt_restore: cannot recreate the mapping at %#lx-%#lx%s%s: %s",
			  (unsigned long)lo, (unsigned long)hi, path[0] ? " of " : "", path,
			  strerror((int)-p));
}

/* Undoes make_room: the process as it was. */
static void unmake_room(struct rctx *r)
{
	for (size_t i = 0; i < r->nmade; i++)
		ckpt__sys3(SYS_munmap, (long)r->recreate.r[i].lo,
			   (long)(r->recreate.r[i].hi - r->recreate.r[i].lo), 0);
	r->nmade = 0;
	if (r->brk_raised)
		ckpt__sys3(SYS_brk, (long)r->brk_cur, 0, 0);
	r->brk_raised = 0;
}

/* Phase 1: raises the break if snapshot k's heap was larger, and maps
 * what snapshot k had and the process has not, in place.  Nothing the
 * program has mapped changes; on failure nothing is left of it. */
static int make_room(struct rctx *r)
{
	/* The heap first: the kernel's break goes where it was at snapshot k,
	 * which glibc's data (restored with the rest) expects. */
	uintptr_t brk_k = 0;
	for (size_t i = 0; i < r->target->nmaps; i++) {
		const struct ckpt__fmap *fm = &r->target->maps[i];
		if ((fm->flags & CKPT__MF_HEAP) && fm->end > brk_k)
			brk_k = fm->end;
	}
	if (!brk_k) {
		/* No heap then: one made since (a first malloc) goes, and
		 * the break back to its start, or the next sbrk would
		 * shrink it over nothing and hand out unmapped memory. */
		for (size_t i = 0; i < T->maps.n; i++)
			if (!strcmp(T->maps.v[i].path, "[heap]") &&
			    ckpt__rset_covers(&r->unmap, T->maps.v[i].start, T->maps.v[i].end)) {
				brk_k = T->maps.v[i].start;
				break;
			}
	}
	r->brk_k = brk_k;
	r->brk_cur = (uintptr_t)ckpt__sys3(SYS_brk, 0, 0, 0);
	if (brk_k > r->brk_cur && (uintptr_t)ckpt__sys3(SYS_brk, (long)brk_k, 0, 0) == brk_k) {
		/* The kernel mapped the difference itself. */
		r->brk_raised = 1;
		ckpt__rset_del(&r->recreate, r->brk_cur, brk_k);
	}
	int rc = 0;
	for (size_t i = 0; !rc && i < r->recreate.n; i++) {
		rc = recreate(r, r->recreate.r[i].lo, r->recreate.r[i].hi);
		if (!rc)
			r->nmade = i + 1;
	}
	if (rc)
		unmake_room(r);
	return rc;
}

/* ---- phase 3: applying ---------------------------------------------------------------- */

/* Whether the page at a is anonymous private memory, where MADV_DONTNEED
 * makes it read as zero (fm: its mapping in snapshot k).  Not the pages
 * of glibc's thread descriptor, which are written around it. */
static int discardable(const struct rctx *r, uintptr_t a, const struct ckpt__fmap *fm)
{
	if (!fm || !(fm->flags & CKPT__MF_ANON) || (fm->flags & CKPT__MF_SHARED) ||
	    (fm->kind == CKPT__MK_TLS && fm->keep_len))
		return 0;
	if (ckpt__rset_overlaps(&r->recreate, a, a + ckpt__pagesize) ||
	    (r->brk_raised && a >= r->brk_cur && a < r->brk_k))
		return 1; /* made by make_room, anonymous */
	long v = ckpt__maps_find(&T->maps, a);
	return v >= 0 && !T->maps.v[v].inode && !(T->maps.v[v].perms & CKPT__VMA_SHARED);
}

/* Writes zeros over [lo, hi) the long way (memory MADV_DONTNEED refused:
 * locked, huge pages...). */
static void zero_span(uintptr_t lo, uintptr_t hi)
{
	static const uint64_t zeros[512];
	for (uintptr_t a = lo; a < hi; a += sizeof zeros) {
		size_t n = hi - a < sizeof zeros ? hi - a : sizeof zeros;
		ckpt__copy_words((void *)a, zeros, n);
	}
}

static void zrun_flush(struct rctx *r)
{
	if (r->zr.lo < r->zr.hi &&
	    ckpt__sys3(SYS_madvise, (long)r->zr.lo, (long)(r->zr.hi - r->zr.lo), MADV_DONTNEED) != 0)
		zero_span(r->zr.lo, r->zr.hi);
	r->zr.lo = r->zr.hi = 0;
}

/* The page at a is to read as zero and is discardable: gathered into runs,
 * one madvise each. */
static void zrun_add(struct rctx *r, uintptr_t a)
{
	if (a != r->zr.hi || r->zr.lo == r->zr.hi) {
		zrun_flush(r);
		r->zr.lo = a;
	}
	r->zr.hi = a + ckpt__pagesize;
}

/* A page whose content is in a block, written once the pages of every
 * block are together: a block is decompressed once, however the pages of
 * a long chain interleave. */
struct pend {
	const struct vblock *vb;
	uintptr_t addr;
	uint32_t page;    /* in the block */
	uint32_t zero_ok; /* discardable(): a page of zeros is not written */
};

struct pends {
	struct pend *p;
	size_t n, cap;
	struct pend *sorted; /* cap of them */
	size_t *start;       /* nvb + 1 */
};

/* Room for a pending write per page to write, allocated before the point
 * of no return.  0 or CKPT_ENOMEM. */
static int pends_alloc(struct pends *pd, const struct rctx *r)
{
	size_t n = 0;
	for (size_t i = 0; i < r->unstaged.n; i++)
		n += (r->unstaged.r[i].hi - r->unstaged.r[i].lo) >> ckpt__pageshift;
	if (ckpt__mem_grow((void **)&pd->p, &pd->cap, n ? n : 1, sizeof *pd->p))
		return ckpt__fail(CKPT_ENOMEM, "ckpt_restore: out of memory");
	pd->sorted = ckpt__mem_alloc(pd->cap * sizeof *pd->sorted);
	pd->start = ckpt__mem_alloc((r->nvb + 1) * sizeof *pd->start);
	if (!pd->sorted || !pd->start)
		return ckpt__fail(CKPT_ENOMEM, "ckpt_restore: out of memory");
	return 0;
}

static void pends_free(struct pends *pd, const struct rctx *r)
{
	if (pd->sorted)
		ckpt__mem_free(pd->sorted, pd->cap * sizeof *pd->sorted);
	if (pd->start)
		ckpt__mem_free(pd->start, (r->nvb + 1) * sizeof *pd->start);
	ckpt__mem_array_free((void **)&pd->p, &pd->cap, sizeof *pd->p);
}

/* The bytes of vb's pages: kept decompressed, stored raw, or (past the
 * staging limit) decompressed again into the chain's block buffer, once
 * for a run of its pages.  That decompression succeeded in phase 2 on the
 * same bytes; NULL only if it does not now (memory gone bad). */
static const char *block_bytes(struct rctx *r, const struct vblock *vb)
{
	const struct ckpt__fblock *fb = &vb->snap->blocks[vb->block];
	if (vb->raw)
		return vb->raw;
	if (fb->codec != CKPT__CODEC_ZSTD)
		return vb->bytes;
	if (r->inbuf != vb) {
		r->inbuf = NULL;
		size_t got = ZSTD_decompressDCtx(r->c->dctx, r->c->blockbuf, fb->rsize, vb->bytes,
						 vb->csize);
		if (ZSTD_isError(got) || got != fb->rsize) {
			ckpt__fail(CKPT_EINTERNAL, "ckpt_restore: %s: block %u, verified, failed to "
						   "decompress again",
				   vb->snap->name, vb->block);
			return NULL;
		}
		r->inbuf = vb;
	}
	return r->c->blockbuf;
}

/* Writes the pending pages, grouped by block: a counting sort on the
 * block's index (qsort would allocate from the program's heap, which is
 * being rewritten). */
static int flush_pends(struct rctx *r, struct pends *pd)
{
	size_t ps = ckpt__pagesize, nvb = r->nvb, *start = pd->start;
	struct pend *sorted = pd->sorted;
	int rc = 0;
	memset(start, 0, (nvb + 1) * sizeof *start);
	for (size_t i = 0; i < pd->n; i++)
		start[(size_t)(pd->p[i].vb - r->vb) + 1]++;
	for (size_t b = 0; b < nvb; b++)
		start[b + 1] += start[b];
	for (size_t i = 0; i < pd->n; i++)
		sorted[start[pd->p[i].vb - r->vb]++] = pd->p[i];
	for (size_t i = 0; !rc && i < pd->n; i++) {
		const char *data = block_bytes(r, sorted[i].vb);
		if (!data) {
			rc = CKPT_EINTERNAL;
			break;
		}
		const char *from = data + (size_t)sorted[i].page * ps;
		if (sorted[i].zero_ok && ckpt__is_zero(from, ps)) {
			zrun_add(r, sorted[i].addr);
			continue;
		}
		/* A run of data pages that follow each other in one block,
		 * made present in one call: cheaper than a fault per page (a
		 * resume writes everything into memory it just mapped). */
		if (i == 0 || sorted[i].addr != sorted[i - 1].addr + ps ||
		    sorted[i].vb != sorted[i - 1].vb) {
			size_t k = i + 1;
			while (k < pd->n && sorted[k].addr == sorted[k - 1].addr + ps &&
			       sorted[k].vb == sorted[i].vb &&
			       !(sorted[k].zero_ok &&
				 ckpt__is_zero(data + (size_t)sorted[k].page * ps, ps)))
				k++;
			if (k - i > 1)
				ckpt__sys3(SYS_madvise, (long)sorted[i].addr, (long)((k - i) * ps),
					   CKPT__MADV_POPULATE_WRITE);
		}
		ckpt__copy_words((void *)sorted[i].addr, from, ps);
	}
	zrun_flush(r);
	pd->n = 0;
	return rc;
}

/* Copies from `from` to [lo, hi): words where aligned, bytes at the ends. */
static void copy_span(uintptr_t lo, uintptr_t hi, const char *from)
{
	for (; lo < hi && (lo & 7); lo++)
		*(volatile char *)lo = *from++;
	size_t words = (hi - lo) & ~(size_t)7;
	ckpt__copy_words((void *)lo, from, words);
	for (size_t i = words; lo + i < hi; i++)
		*(volatile char *)(lo + i) = from[i];
}

/* Writes one page as of snapshot k.  The page is writable.  A page from a
 * block may go to `pd` instead, for flush_pends. */

static int write_page(struct rctx *r, uintptr_t a, void *scratch, int use_shadow,
		      struct pends *pd)
{
	size_t ps = ckpt__pagesize;
	const void *from = use_shadow ? ckpt__shadow_get(a) : NULL;
	struct ckpt__source src;
	if (!from && ckpt__chain_source(r->c, r->k, a, &src) != 0)
		return 0;
	r->pages++;
	const struct ckpt__fmap *fm = from ? ckpt__snap_map_at(r->target, a) : src.map;
	if (!from && src.kind == CKPT__RK_ZERO) {
		if (discardable(r, a, fm)) {
			zrun_add(r, a);
			return 0;
		}
		memset(scratch, 0, ps);
		from = scratch;
	} else if (!from && src.kind == CKPT__RK_FILE) {
		/* A private file page goes back to the file's content. */
		ckpt__sys3(SYS_madvise, (long)a, (long)ps, MADV_DONTNEED);
		return 0;
	} else if (!from) {
		struct vblock *vb = vb_find(r, src.snap, src.run->block);
		if (!vb)
			return ckpt__fail(CKPT_EINTERNAL, "ckpt_restore: block not verified");
		uint32_t page = (uint32_t)(src.run->block_page + (a - src.run->start) / ps);
		if (pd && !(fm && fm->kind == CKPT__MK_TLS && fm->keep_len)) {
			if (ckpt__mem_grow((void **)&pd->p, &pd->cap, pd->n + 1, sizeof *pd->p))
				return ckpt__fail(CKPT_ENOMEM, "ckpt_restore: out of memory");
			pd->p[pd->n++] = (struct pend){vb, a, page, (uint32_t)discardable(r, a, fm)};
			return 0;
		}
		const char *data = block_bytes(r, vb);
		if (!data)
			return CKPT_EINTERNAL;
		from = data + (size_t)page * ps;
	}
	if (fm && fm->kind == CKPT__MK_TLS && fm->keep_len) {
		/* Around glibc's thread descriptor only. */
		uintptr_t ka = fm->start + fm->keep_off, kb = ka + fm->keep_len;
		ka = ka < a ? a : ka > a + ps ? a + ps : ka;
		kb = kb < ka ? ka : kb > a + ps ? a + ps : kb;
		copy_span(a, ka, from);
		copy_span(kb, a + ps, (const char *)from + (kb - a));
		return 0;
	}
	ckpt__copy_words((void *)a, from, ps);
	return 0;
}

/* Makes the pages to write writable; the tracker protects them again
 * afterwards.  A range at a time costs least (mprotect's price is per page
 * table entry) and splits a mapping for each, for the time of the copy;
 * when that many more mappings would not fit under the kernel's limit
 * (vm.max_map_count, ckpt's budget of it), one stretch per region from its
 * first to its last page to write, which splits a mapping at most in three. */
static int flush_span(struct rctx *r, uintptr_t lo, uintptr_t hi)
{
	if (lo >= hi)
		return 0;
	if (add(&r->spans, lo, hi))
		return ckpt__fail(CKPT_ENOMEM, "ckpt_restore: out of memory");
	/* Pages written since the last commit are writable already (marked
	 * means open, unless an older snapshot was restored since), except
	 * in a region the program made read-only since. */
	const struct ckpt__region *rg = ckpt__rtab_find(T->tab, lo);
	int ro = rg && !(rg->prot & PROT_WRITE);
	if (!ro && (!T->be->open || (!T->marked_closed &&
				     ckpt__bm_count(lo, hi) == (hi - lo) >> ckpt__pageshift)))
		return 0;
	if (rg && T->be->open)
		T->be->open(rg, lo, hi);
	else
		ckpt__raw_mprotect(lo, hi - lo, PROT_READ | PROT_WRITE);
	return 0;
}

static int open_spans(struct rctx *r, const struct ckpt__rset *set)
{
	const struct ckpt__rtab *t = T->tab;
	long est = __atomic_load_n(&T->vma_est, __ATOMIC_RELAXED);
	long budget = __atomic_load_n(&T->vma_budget, __ATOMIC_RELAXED);
	int whole = budget && est + 2 * (long)set->n + 64 > budget;
	const struct ckpt__region *srg = NULL;
	uintptr_t slo = 0, shi = 0;
	for (size_t i = 0; i < set->n; i++) {
		uintptr_t at = set->r[i].lo, hi = set->r[i].hi;
		while (at < hi) {
			/* The piece of the range in one region, or between two. */
			size_t j = ckpt__rtab_lower(t, at);
			const struct ckpt__region *rg = j < t->n && t->r[j].start <= at ? &t->r[j] : NULL;
			uintptr_t e = rg ? rg->end : j < t->n ? t->r[j].start : hi;
			if (e > hi)
				e = hi;
			if (whole && rg && rg == srg) {
				shi = e;
			} else {
				int rc = flush_span(r, slo, shi);
				if (rc)
					return rc;
				srg = rg;
				slo = at;
				shi = e;
			}
			at = e;
		}
	}
	return flush_span(r, slo, shi);
}

/* ---- phase 2 for fresh memory ----------------------------------------------------------- */

/* Splits the pages to write into fresh (in what make_room or the caller
 * mapped for this restore: no staging needed, a failure unmaps it) and
 * rest, and fills the fresh ones from the chain now, on `threads` threads.
 * Not with the shadow: its copies, not the files, hold those pages. */
static int fill_fresh(struct rctx *r, int use_shadow, const struct ckpt__rset *made_before,
		      unsigned threads, int lazy)
{
	struct ckpt__rset made = {0};
	int rc = 0;
	if (!use_shadow && !ckpt__shadow_on()) {
		for (size_t i = 0; !rc && made_before && i < made_before->n; i++)
			rc = add(&made, made_before->r[i].lo, made_before->r[i].hi);
		for (size_t i = 0; !rc && i < r->nmade; i++)
			rc = add(&made, r->recreate.r[i].lo, r->recreate.r[i].hi);
		if (!rc && r->brk_raised)
			rc = add(&made, r->brk_cur, r->brk_k);
		/* Not the TLS block written around glibc's descriptor. */
		for (size_t i = 0; !rc && i < r->target->nmaps; i++) {
			const struct ckpt__fmap *fm = &r->target->maps[i];
			if (fm->kind == CKPT__MK_TLS && fm->keep_len &&
			    ckpt__rset_del(&made, fm->start, fm->end))
				rc = CKPT_ENOMEM;
		}
	}
	if (!rc)
		rc = intersect(&r->cand, &made, &r->fresh);
	if (!rc && ckpt__rset_copy(&r->rest, &r->cand))
		rc = CKPT_ENOMEM;
	for (size_t i = 0; !rc && i < r->fresh.n; i++) {
		if (ckpt__rset_del(&r->rest, r->fresh.r[i].lo, r->fresh.r[i].hi))
			rc = CKPT_ENOMEM;
		r->fresh_pages += (r->fresh.r[i].hi - r->fresh.r[i].lo) >> ckpt__pageshift;
	}
	ckpt__rset_free(&made);
	if (rc)
		return ckpt__fail(rc, "ckpt_restore: out of memory planning");
	if (!r->fresh.n)
		return 0;
	/* Writable for the copy (the tracker armed what the caller made). */
	rc = open_spans(r, &r->fresh);
	if (rc)
		return rc;
	/* Lazily: anonymous memory filled as the program touches it and in
	 * the background, after the resume (lazy.c). */
	if (lazy)
		return ckpt__lazy_start(r->c, r->k, &r->fresh, threads, &r->blocks_read);
	struct ckpt__fill f;
	rc = ckpt__fill_plan(&f, r->c, r->k, &r->fresh);
	if (!rc)
		rc = ckpt__fill_run(&f, threads);
	r->blocks_read += f.ntask;
	ckpt__fill_free(&f);
	return rc;
}

/* out = a less b (both sorted and disjoint), in one pass. */
static int subtract(const struct ckpt__rset *a, const struct ckpt__rset *b, struct ckpt__rset *out)
{
	size_t j = 0;
	for (size_t i = 0; i < a->n; i++) {
		uintptr_t lo = a->r[i].lo, hi = a->r[i].hi;
		while (j < b->n && b->r[j].hi <= lo)
			j++;
		for (size_t k = j; lo < hi && k < b->n && b->r[k].lo < hi; k++) {
			if (b->r[k].lo > lo && add(out, lo, b->r[k].lo))
				return CKPT_ENOMEM;
			if (b->r[k].hi > lo)
				lo = b->r[k].hi;
		}
		if (lo < hi && add(out, lo, hi))
			return CKPT_ENOMEM;
	}
	return 0;
}

/* The data pages of rest (memory the program has mapped): their blocks
 * read, checked and kept on `threads` threads now, written in phase 3
 * (fill.c).  Not with the shadow (its copies hold pages), nor the TLS
 * block written around glibc's descriptor.  What is left (pages that read
 * as zero or as their file, the TLS block) is written page by page. */
static int stage_rest(struct rctx *r, int use_shadow, unsigned threads)
{
	struct ckpt__rset in = {0};
	int rc = 0;
	if (!use_shadow && r->rest.n) {
		rc = ckpt__rset_copy(&in, &r->rest) ? CKPT_ENOMEM : 0;
		for (size_t i = 0; !rc && i < r->target->nmaps; i++) {
			const struct ckpt__fmap *fm = &r->target->maps[i];
			if (fm->kind == CKPT__MK_TLS && fm->keep_len &&
			    ckpt__rset_del(&in, fm->start, fm->end))
				rc = CKPT_ENOMEM;
		}
		if (rc)
			rc = ckpt__fail(rc, "ckpt_restore: out of memory planning");
		if (!rc)
			rc = ckpt__fill_plan(&r->sf, r->c, r->k, &in);
		if (!rc)
			rc = ckpt__fill_stage(&r->sf, threads, STAGE_LIMIT);
		r->blocks_read += r->sf.ntask;
	}
	if (!rc && subtract(&r->rest, &r->sf.data, &r->unstaged))
		rc = ckpt__fail(CKPT_ENOMEM, "ckpt_restore: out of memory planning");
	ckpt__rset_free(&in);
	return rc;
}

/* Phase 3, with everything read, verified and mapped: from here on the
 * restore goes through. */
static int apply(struct rctx *r, int use_shadow, struct pends *pd, void *scratch,
		 unsigned threads)
{
	size_t ps = ckpt__pagesize;
	uintptr_t brk_k = r->brk_k, cur = r->brk_cur;
	if (brk_k && brk_k < cur && (uintptr_t)ckpt__sys3(SYS_brk, (long)brk_k, 0, 0) == brk_k) {
		/* The kernel unmapped the difference itself. */
		ckpt__rset_del(&r->unmap, brk_k, cur);
		ckpt__track_unmapped_locked(brk_k, cur);
	}
	for (size_t i = 0; i < r->unmap.n; i++) {
		ckpt__sys3(SYS_munmap, (long)r->unmap.r[i].lo,
			   (long)(r->unmap.r[i].hi - r->unmap.r[i].lo), 0);
		ckpt__track_unmapped_locked(r->unmap.r[i].lo, r->unmap.r[i].hi);
	}
	int rc = open_spans(r, &r->rest);
	/* With the shadow on, the clean pages about to change are the newest
	 * snapshot's: their copies make a later rollback to it cheap.  Not
	 * the memory mapped for this restore (recreated, or the break
	 * raised), which holds zeros, not the snapshot: a copy of it would
	 * be written back in place of the snapshot's pages.  (Only saved
	 * when there is memory to plan it: the copies are an economy.) */
	struct ckpt__rset made = {0}, save = {0};
	int mrc = 0;
	for (size_t i = 0; !mrc && i < r->nmade; i++)
		mrc = add(&made, r->recreate.r[i].lo, r->recreate.r[i].hi);
	if (!mrc && r->brk_raised)
		mrc = add(&made, r->brk_cur, r->brk_k);
	if (!mrc && ckpt__shadow_on())
		mrc = subtract(&r->rest, &made, &save);
	for (size_t i = 0; !rc && !mrc && i < save.n; i++)
		ckpt__shadow_save(save.r[i].lo, save.r[i].hi);
	ckpt__rset_free(&made);
	ckpt__rset_free(&save);
	for (size_t i = 0; !rc && i < r->unstaged.n; i++)
		for (uintptr_t a = r->unstaged.r[i].lo; !rc && a < r->unstaged.r[i].hi; a += ps)
			rc = write_page(r, a, scratch, use_shadow, pd);
	if (!rc)
		rc = ckpt__fill_apply(&r->sf, threads);
	r->pages += r->fresh_pages + r->sf.npage;
	zrun_flush(r);
	if (!rc)
		rc = flush_pends(r, pd);
	return rc;
}

/* ---- resets from the log of faults ------------------------------------------------------ */

/*
 * A reset (rolling back to the newest snapshot, its pages copied in memory)
 * under uffd learns the pages written since the last reset from the
 * kernel's log of page faults (faultlog.c) instead of walking every tracked
 * page-table entry, and skips the maps: the log vouches that the layout is
 * the one the last full restore left.  Its plan is then the pages logged
 * (plus those of the heaps the log must walk, and pinned memory) within
 * what that restore found snapshot k describes less what ckpt leaves out
 * (`keep`); nothing is mapped, unmapped or recreated.
 */
static struct {
	const struct ckpt__snap *target; /* the snapshot `keep` describes, or NULL */
	uint64_t k;			 /* its id */
	struct ckpt__rset keep;
	uintptr_t *addr;		 /* the pages logged, sorted */
	size_t n, cap;
	struct ckpt__rset logged, cand;	 /* kept from reset to reset: no allocation */
	int rc;
	void *scratch; /* a page */
} RL;

static void log_add(uintptr_t a, void *arg)
{
	(void)arg;
	const struct ckpt__region *g = ckpt__rtab_find(T->tab, a);
	if (!g)
		return; /* a stack, ckpt's own memory... */
	if (ckpt__mem_grow((void **)&RL.addr, &RL.cap, RL.n + 1, sizeof *RL.addr)) {
		RL.rc = CKPT_ENOMEM;
		return;
	}
	RL.addr[RL.n++] = a & ~(((uintptr_t)1 << g->pgshift) - 1);
}

static void sift(uintptr_t *v, size_t i, size_t n)
{
	for (size_t c; (c = 2 * i + 1) < n; i = c) {
		if (c + 1 < n && v[c + 1] > v[c])
			c++;
		if (v[i] >= v[c])
			break;
		uintptr_t x = v[i];
		v[i] = v[c];
		v[c] = x;
	}
}

/* Heapsort, in place: qsort may allocate from the program's heap. */
static void sort_addr(uintptr_t *v, size_t n)
{
	for (size_t i = n / 2; i-- > 0;)
		sift(v, i, n);
	for (size_t end = n; end-- > 1;) {
		uintptr_t x = v[0];
		v[0] = v[end];
		v[end] = x;
		sift(v, 0, end);
	}
}

/* After a full restore to snapshot k that armed the log: what a reset
 * from the log may write, from the maps the arm read. */
static void keep_plan(const struct ckpt__snap *k)
{
	struct ckpt__rset excl = {0}, mapped_k = {0};
	RL.target = NULL;
	ckpt__rset_clear(&RL.keep);
	int rc = ckpt__track_excluded(&T->maps, T->flags, &excl, NULL);
	for (size_t i = 0; !rc && i < k->nmaps; i++)
		rc = add(&mapped_k, k->maps[i].start, k->maps[i].end);
	if (!rc)
		rc = subtract(&mapped_k, &excl, &RL.keep);
	for (size_t i = 0; !rc && i < T->nosave.n; i++)
		rc = ckpt__rset_del(&RL.keep, T->nosave.r[i].lo, T->nosave.r[i].hi) ? CKPT_ENOMEM : 0;
	if (!rc && !RL.scratch && !(RL.scratch = ckpt__mem_alloc(ckpt__pagesize)))
		rc = CKPT_ENOMEM;
	if (!rc) {
		RL.target = k;
		RL.k = k->h.id;
	}
	ckpt__rset_free(&excl);
	ckpt__rset_free(&mapped_k);
}

/* Before the log starts, every tracked page must be protected: its next
 * write a fault.  Memory that lost its registration (glibc unmapped a
 * tracked block and the restore mapped it again, in place of a region the
 * tracker still holds) is registered again; what it holds is the newest
 * snapshot's, the restore just wrote it.  0 or CKPT_E*. */
static int rearm_all(void)
{
	const struct ckpt__rtab *t = T->tab;
	int rc = 0;
	for (size_t i = 0; !rc && i < t->n; i++)
		if (t->r[i].prot & PROT_WRITE)
			rc = ckpt__uffd_reregister(t->r[i].start, t->r[i].end);
	return rc;
}

/* Whether the page at a can be written now without reading a snapshot
 * file: writable (a region the program keeps read-only is opened for the
 * copy by the long way only), its copy in memory or none needed. */
static int in_memory(struct rctx *r, uintptr_t a)
{
	const struct ckpt__region *g = ckpt__rtab_find(T->tab, a);
	if (g && !(g->prot & PROT_WRITE))
		return 0;
	struct ckpt__source src;
	return ckpt__shadow_get(a) || ckpt__chain_source(r->c, r->k, a, &src) != 0 ||
	       src.kind != CKPT__RK_DATA;
}

/* The reset from the log, T->lock held.  1 done; 0 the caller restores
 * the long way (the log consumed or refused: it walks); CKPT_E* failed
 * before memory changed. */
static int reset_from_log(struct rctx *r)
{
	const struct ckpt__rset *walk;
	RL.n = 0;
	RL.rc = 0;
	if (RL.target != r->target || RL.k != r->k || !ckpt__flog_take(log_add, NULL, &walk))
		return 0;
	if (RL.rc)
		return RL.rc;
	sort_addr(RL.addr, RL.n);
	struct ckpt__rset *logged = &RL.logged, *cand = &RL.cand;
	ckpt__rset_clear(logged);
	ckpt__rset_clear(cand);
	int rc = 0;
	for (size_t i = 0; !rc && i < RL.n; i++) {
		const struct ckpt__region *g = ckpt__rtab_find(T->tab, RL.addr[i]);
		rc = add(logged, RL.addr[i], RL.addr[i] + ((uintptr_t)1 << g->pgshift));
	}
	/* The heaps glibc may trim behind ckpt's back, walked. */
	const struct ckpt__rtab *t = T->tab;
	for (size_t i = 0; !rc && i < walk->n; i++)
		for (size_t j = ckpt__rtab_lower(t, walk->r[i].lo);
		     !rc && j < t->n && t->r[j].start < walk->r[i].hi; j++) {
			uintptr_t a = t->r[j].start > walk->r[i].lo ? t->r[j].start : walk->r[i].lo;
			uintptr_t b = t->r[j].end < walk->r[i].hi ? t->r[j].end : walk->r[i].hi;
			if (a < b && T->be->sync(&t->r[j], a, b, 0) != 0)
				rc = CKPT_EIO;
			if (!rc && a < b)
				rc = ckpt__bm_runs(a, b, bits_to, logged);
		}
	for (size_t i = 0; !rc && i < T->pinned.n; i++)
		rc = add(logged, T->pinned.r[i].lo, T->pinned.r[i].hi);
	if (!rc)
		rc = intersect(logged, &RL.keep, cand);
	if (rc)
		return 0; /* the long way, which walks */
	for (size_t i = 0; i < cand->n; i++)
		for (uintptr_t a = cand->r[i].lo; a < cand->r[i].hi; a += ckpt__pagesize)
			if (!in_memory(r, a))
				return 0;
	for (size_t i = 0; !rc && i < cand->n; i++)
		for (uintptr_t a = cand->r[i].lo; !rc && a < cand->r[i].hi; a += ckpt__pagesize)
			rc = write_page(r, a, RL.scratch, 1, NULL);
	zrun_flush(r);
	/* The pages hold the newest snapshot again: clean, and protected. */
	ckpt__track_restored_locked(cand, cand, &r->recreate, 1);
	if (rc)
		return rc;
	ckpt__flog_arm(1);
	return 1;
}

int ckpt__restore(struct ckpt__chainw *w, uint64_t id, int use_shadow,
		  struct ckpt__restore_stats *st)
{
	return ckpt__restore_ex(w, id, use_shadow, 0, NULL, NULL, NULL, st);
}

int ckpt__restore_ex(struct ckpt__chainw *w, uint64_t id, int use_shadow, int how,
		     int (*before)(void *arg), void *arg, const struct ckpt__rset *made,
		     struct ckpt__restore_stats *st)
{
	uint64_t t0 = ckpt__now_ns();
	memset(st, 0, sizeof *st);
	struct ckpt__chain *c;
	int rc = ckpt__chainw_reader(w, &c);
	if (rc)
		return rc;
	struct rctx r = {.c = c, .latest = w->latest};
	r.k = id == CKPT_LATEST ? w->latest : id;
	r.target = ckpt__chain_find(c, r.k);
	if (!r.target)
		return ckpt__fail(CKPT_ENOENT, "ckpt_restore: snapshot %llu is not in the chain (1..%llu%s)",
				  (unsigned long long)id, (unsigned long long)w->latest,
				  c->n && c->snaps[0].h.id > 1 ? ", older ones compacted" : "");
	if (r.target->h.page_size != ckpt__pagesize)
		return ckpt__fail(CKPT_EFOREIGN, "ckpt_restore: %s has page size %u, this system %zu",
				  r.target->name, r.target->h.page_size, ckpt__pagesize);
	if (r.target->h.bid_len && w->build_id_len &&
	    (r.target->h.bid_len != w->build_id_len ||
	     memcmp(r.target->strings + r.target->h.bid_off, w->build_id, w->build_id_len)))
		return ckpt__fail(CKPT_EFOREIGN, "ckpt_restore: %s was written by another executable",
				  r.target->name);
	/* Shadow copies hold the newest snapshot's pages. */
	use_shadow = use_shadow && r.k == w->latest;

	pthread_mutex_lock(&T->lock);
	if (!T->tab) {
		pthread_mutex_unlock(&T->lock);
		return ckpt__fail(CKPT_ESTATE, "ckpt_restore: not tracking (call ckpt_begin first)");
	}
	ckpt__threads_hold();
	/* A reset (the newest snapshot, its copies in memory) under uffd may
	 * take the pages written from the log of faults; anything else walks,
	 * and reads the maps. */
	int resettable = use_shadow && !(how & CKPT__RESTORE_ALL) && !made && !before &&
			 T->be == &ckpt__backend_uffd;
	if (resettable) {
		rc = reset_from_log(&r);
		if (rc == 1) {
			rc = 0;
			st->fast = 1;
			__atomic_fetch_add(&T->cnt.fast_restores, 1, __ATOMIC_RELAXED);
			ckpt__threads_release();
			pthread_mutex_unlock(&T->lock);
			st->pages = r.pages;
			st->verify_ns = 0;
			st->total_ns = ckpt__now_ns() - t0;
			rctx_free(&r);
			return 0;
		}
		if (rc) {
			ckpt__threads_release();
			pthread_mutex_unlock(&T->lock);
			rctx_free(&r);
			return ckpt__fail(rc, "ckpt_restore: %s, resetting from the log of faults",
					  ckpt_strerror(rc));
		}
		ckpt__rset_clear(&r.cand);
	}
	rc = ckpt__track_sync_locked(0);
	if (!rc)
		rc = ckpt__maps_read(&T->maps);
	if (!rc)
		rc = plan(&r, use_shadow, (how & CKPT__RESTORE_ALL) != 0);
	if (rc == CKPT_ENOMEM)
		rc = ckpt__fail(rc, "ckpt_restore: out of memory planning");
	if (!rc)
		rc = make_room(&r);
	if (!rc && (rc = fill_fresh(&r, use_shadow, made, w->threads,
				    made && (how & CKPT__RESTORE_LAZY))) != 0)
		unmake_room(&r);
	if (!rc)
		rc = stage_rest(&r, use_shadow, w->threads);
	if (!rc)
		rc = load_blocks(&r, use_shadow);
	/* What applying needs, allocated before the point of no return. */
	struct pends pd = {0};
	void *scratch = rc ? NULL : ckpt__mem_alloc(ckpt__pagesize);
	if (!rc && !scratch)
		rc = ckpt__fail(CKPT_ENOMEM, "ckpt_restore: out of memory");
	if (!rc)
		rc = pends_alloc(&pd, &r);
	if (!rc && before)
		rc = before(arg);
	if (rc)
		unmake_room(&r);
	uint64_t t1 = ckpt__now_ns();
	if (!rc)
		rc = apply(&r, use_shadow, &pd, scratch, w->threads);
	pends_free(&pd, &r);
	if (scratch)
		ckpt__mem_free(scratch, ckpt__pagesize);
	if (!rc) {
		/* The tracker follows: restored pages equal the newest snapshot
		 * (clean, protected) or differ from it (dirty). */
		ckpt__track_restored_locked(&r.cand, &r.spans, &r.recreate, r.k == w->latest);
		/* The mappings read before, less the opened pages protected
		 * again, plus what unmapping and recreating may have split. */
		ckpt__track_vma_recount((long)T->maps.n + 2 * (long)(r.unmap.n + r.recreate.n));
	}
	/* Every tracked page is protected again and the memory is the newest
	 * snapshot's: the log starts from here. */
	RL.target = NULL;
	if (!rc && resettable && ckpt__flog_wanted() && rearm_all() == 0 && ckpt__flog_arm(0) == 0)
		keep_plan(r.target);
	else
		ckpt__flog_disarm();
	ckpt__threads_release();
	pthread_mutex_unlock(&T->lock);
	st->pages = r.pages;
	st->blocks = r.blocks_read;
	st->verify_ns = t1 - t0;
	st->total_ns = ckpt__now_ns() - t0;
	rctx_free(&r);
	return rc;
}
