/*
 * snap-write.c - writing one snapshot file, atomically.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The file is written front to back (header placeholder, blocks as the
 * compressor hands them over, then the metadata sections and the footer),
 * the header is filled in last, and only a complete, fsynced file is
 * renamed into the chain: a crash at any instant leaves either the old
 * chain or the new one.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "snap-write.h"
#include "compress.h"
#include "error.h"
#include "inject.h"
#include "mem.h"
#include "xxhash.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct job_result {
	uint64_t zero_mask;
	uint32_t block; /* UINT32_MAX: nothing stored */
};

#define CKPT__WRITEBACK_BYTES ((uint64_t)8 << 20)

struct wctx {
	int fd;
	const char *tmpname;
	uint64_t off;
	uint64_t flushed; /* written back from here on is up to the final fsync */
	struct ckpt__fblock *blocks;
	size_t nblocks, blocks_cap;
	struct job_result *jobs;
	uint64_t stored, raw, write_ns;
};

static int io_fail(struct wctx *w, const char *what, int err)
{
	return ckpt__fail(ckpt__from_errno(err), "%s: %s: %s", w->tmpname, what, strerror(err));
}

static int put(struct wctx *w, const void *buf, size_t len)
{
	uint64_t t0 = ckpt__now_ns();
	size_t done = 0;
	while (done < len) {
		int inj = ckpt__inject(CKPT__IO_WRITE);
		if (inj)
			return io_fail(w, "write", inj);
		ssize_t n = write(w->fd, (const char *)buf + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return io_fail(w, "write", errno);
		done += (size_t)n;
	}
	w->off += len;
	/* Writeback starts as the file grows: the page cache never holds
	 * much of it dirty (a writer over the dirty limit is throttled), and
	 * the final fsync has little left to do.  Errors surface there. */
	if (w->off - w->flushed >= CKPT__WRITEBACK_BYTES) {
		(void)sync_file_range(w->fd, (off64_t)w->flushed, (off64_t)(w->off - w->flushed),
				      SYNC_FILE_RANGE_WRITE);
		w->flushed = w->off;
	}
	w->write_ns += ckpt__now_ns() - t0;
	return 0;
}

static int sink(const struct ckpt__cblock *b, void *arg)
{
	struct wctx *w = arg;
	w->jobs[b->job].zero_mask = b->zero_mask;
	w->jobs[b->job].block = UINT32_MAX;
	if (!b->stored)
		return 0;
	if (ckpt__mem_grow((void **)&w->blocks, &w->blocks_cap, w->nblocks + 1, sizeof *w->blocks))
		return ckpt__fail(CKPT_ENOMEM, "out of memory writing a snapshot");
	struct ckpt__fblock *fb = &w->blocks[w->nblocks];
	memset(fb, 0, sizeof *fb);
	fb->offset = w->off;
	fb->csize = b->csize;
	fb->rsize = b->rsize;
	fb->codec = b->codec;
	fb->hash = b->hash;
	size_t extra = b->codec == CKPT__CODEC_RAWP ? (size_t)b->stored * 8 : 0;
	int rc = put(w, b->data, b->csize);
	if (!rc && extra)
		rc = put(w, b->phash, extra);
	if (rc)
		return rc;
	w->jobs[b->job].block = (uint32_t)w->nblocks++;
	w->stored += b->csize + extra;
	w->raw += b->rsize;
	return 0;
}

struct index {
	struct ckpt__frun *r;
	size_t n, cap;
	uint64_t pages[4];
	const struct ckpt__wmap *last_map; /* runs never span two mappings */
};

static int index_add(struct index *x, const struct ckpt__wmap *m, uintptr_t start, size_t page_size,
		     int kind, uint32_t block, uint32_t block_page)
{
	x->pages[kind]++;
	int same_map = m == x->last_map;
	x->last_map = m;
	if (x->n && same_map) {
		struct ckpt__frun *l = &x->r[x->n - 1];
		if (l->kind == kind && l->start + (uint64_t)l->npages * page_size == start &&
		    (kind != CKPT__RK_DATA ||
		     (l->block == block && l->block_page + l->npages == block_page))) {
			l->npages++;
			return 0;
		}
	}
	if (ckpt__mem_grow((void **)&x->r, &x->cap, x->n + 1, sizeof *x->r))
		return CKPT_ENOMEM;
	struct ckpt__frun *r = &x->r[x->n++];
	memset(r, 0, sizeof *r);
	r->start = start;
	r->npages = 1;
	r->kind = (uint8_t)kind;
	r->block = kind == CKPT__RK_DATA ? block : 0;
	r->block_page = kind == CKPT__RK_DATA ? block_page : 0;
	return 0;
}

static const struct ckpt__wmap *map_of(const struct ckpt__wplan *p, uintptr_t a)
{
	size_t i = CKPT__FIRST_ENDING_AFTER(p->maps, p->nmaps, end, a);
	return i < p->nmaps && p->maps[i].start <= a ? &p->maps[i] : NULL;
}

/* Strings: appended, referenced by offset and length. */
struct strings {
	char *s;
	size_t n, cap;
};

static int str_add(struct strings *st, const void *p, size_t len, uint32_t *off, uint32_t *olen)
{
	if (ckpt__mem_grow((void **)&st->s, &st->cap, st->n + len + 1, 1))
		return CKPT_ENOMEM;
	memcpy(st->s + st->n, p, len);
	*off = (uint32_t)st->n;
	*olen = (uint32_t)len;
	st->n += len;
	return 0;
}

/*
 * Where each block starts among the data pages, in index order: cuts at 0,
 * ..., npages.  A mapping with BLOCK_ALONE data pages in a row or more has
 * blocks of its own; the few pages of smaller ones share blocks.  A
 * program's small mappings (libc's data, malloc's heap) compress well and
 * its big arrays often do not: in one block, they made a block of noise
 * zstd-compressed, which a reader wanting a page of the noise then
 * decompressed whole (a resume of a long chain, once an increment).
 */
#define BLOCK_ALONE 8

struct cuts {
	size_t *at;
	size_t n, cap;
};

static int cut(struct cuts *c, size_t at)
{
	if (c->n && c->at[c->n - 1] >= at)
		return 0;
	if (ckpt__mem_grow((void **)&c->at, &c->cap, c->n + 1, sizeof *c->at))
		return CKPT_ENOMEM;
	c->at[c->n++] = at;
	return 0;
}

/* Ends the stretch of one mapping's data pages [seg, k). */
static int stretch_end(struct cuts *c, size_t seg, size_t k)
{
	int alone = k - seg >= BLOCK_ALONE, rc = alone ? cut(c, seg) : 0;
	for (size_t q = seg; !rc && q < k; q++)
		if (q - c->at[c->n - 1] == CKPT__BLOCK_PAGES)
			rc = cut(c, q);
	return !rc && alone ? cut(c, k) : rc;
}

static int plan_blocks(const struct ckpt__wplan *p, struct cuts *c)
{
	size_t ps = p->page_size, k = 0, seg = 0;
	const struct ckpt__wmap *segm = NULL;
	int rc = cut(c, 0);
	for (size_t i = 0; !rc && i < p->nruns; i++) {
		const struct ckpt__wrun *r = &p->runs[i];
		if (r->kind != CKPT__RK_DATA)
			continue;
		const struct ckpt__wmap *m = map_of(p, r->start);
		for (size_t j = 0; !rc && j < r->npages; j++, k++) {
			uintptr_t a = r->start + j * ps;
			if (m && a >= m->end)
				m = map_of(p, a);
			if (m != segm && k > seg) {
				rc = stretch_end(c, seg, k);
				seg = k;
			}
			segm = m;
		}
	}
	if (!rc)
		rc = stretch_end(c, seg, k);
	return rc ? rc : cut(c, k);
}

static int build_index(const struct ckpt__wplan *p, struct wctx *w, const struct cuts *c,
		       struct index *x)
{
	size_t ps = p->page_size, k = 0, job = 0;
	int base = (p->flags & CKPT__SF_BASE) != 0;
	for (size_t i = 0; i < p->nruns; i++) {
		const struct ckpt__wrun *r = &p->runs[i];
		const struct ckpt__wmap *m = map_of(p, r->start);
		for (size_t j = 0; j < r->npages; j++) {
			uintptr_t a = r->start + j * ps;
			int rc = 0;
			if (m && a >= m->end)
				m = map_of(p, a);
			if (r->kind != CKPT__RK_DATA) {
				rc = index_add(x, m, a, ps, r->kind, 0, 0);
			} else {
				while (k >= c->at[job + 1])
					job++;
				const struct job_result *jr = &w->jobs[job];
				unsigned bit = (unsigned)(k - c->at[job]);
				k++;
				if (jr->zero_mask & (1ull << bit)) {
					/* A zero page of an anonymous mapping in a base
					 * is zero by default: nothing to record. */
					if (!(base && m && (m->flags & CKPT__MF_ANON)))
						rc = index_add(x, m, a, ps, CKPT__RK_ZERO, 0, 0);
				} else {
					uint64_t below = jr->zero_mask & ((1ull << bit) - 1);
					uint32_t pos = bit - (uint32_t)__builtin_popcountll(below);
					rc = index_add(x, m, a, ps, CKPT__RK_DATA, jr->block, pos);
				}
			}
			if (rc)
				return ckpt__fail(CKPT_ENOMEM, "out of memory indexing a snapshot");
		}
	}
	return 0;
}

/* The packed index (format.h): bytes appended as LEB128 numbers. */
struct packed {
	unsigned char *b;
	size_t n, cap;
};

static int put_varint(struct packed *pk, uint64_t v)
{
	if (ckpt__mem_grow((void **)&pk->b, &pk->cap, pk->n + CKPT__VARINT_MAX, 1))
		return CKPT_ENOMEM;
	do {
		unsigned char byte = v & 0x7f;
		v >>= 7;
		pk->b[pk->n++] = byte | (v ? 0x80 : 0);
	} while (v);
	return 0;
}

/*
 * Packs the runs of x.  The blocks hold the DATA pages in index order, so a
 * DATA run's block and first page follow from the runs before it; this
 * checks they do.  0, 1 if the runs do not follow that order (then the flat
 * index is written), or CKPT_ENOMEM.
 */
static int pack_index(const struct index *x, const struct wctx *w, size_t ps, struct packed *pk)
{
	uint64_t end = 0; /* of the previous run */
	size_t b = 0;     /* the block the next DATA page is in */
	uint64_t used = 0; /* its pages used so far */
	for (size_t i = 0; i < x->n; i++) {
		const struct ckpt__frun *r = &x->r[i];
		if (r->kind == CKPT__RK_DATA) {
			if (b < w->nblocks && used == w->blocks[b].rsize / ps) {
				b++;
				used = 0;
			}
			if (b >= w->nblocks || r->block != b || r->block_page != used ||
			    used + r->npages > w->blocks[b].rsize / ps)
				return 1;
			used += r->npages;
		}
		if (r->start < end || (r->start - end) % ps)
			return 1;
		uint64_t gap = (r->start - end) / ps;
		if (gap >> (64 - CKPT__PACKED_KIND_BITS))
			return 1;
		if (put_varint(pk, gap << CKPT__PACKED_KIND_BITS | r->kind) ||
		    put_varint(pk, r->npages - 1u))
			return CKPT_ENOMEM;
		end = r->start + (uint64_t)r->npages * ps;
	}
	/* Every page of every block. */
	if (w->nblocks && (b != w->nblocks - 1 || used != w->blocks[b].rsize / ps))
		return 1;
	return 0;
}

int ckpt__snap_write(int dirfd, const struct ckpt__wplan *p, struct ckpt__wresult *res)
{
	memset(res, 0, sizeof *res);
	char tmpname[64], name[64];
	snprintf(tmpname, sizeof tmpname, CKPT__TEMP_FMT, (unsigned long long)p->id);
	snprintf(name, sizeof name, CKPT__SNAP_FMT, (unsigned long long)p->id);
	struct wctx w = {.fd = -1, .tmpname = tmpname};
	struct index x = {0};
	struct packed pk = {0};
	int packed = 0;
	struct strings st = {0};
	uintptr_t *pages = NULL;
	size_t pages_cap = 0, npages = 0, jobs_bytes = 0;
	struct ckpt__fmap *fmaps = NULL;
	size_t fmaps_bytes = 0;
	int rc = 0;

	/* The pages to pack, in index order. */
	for (size_t i = 0; i < p->nruns && !rc; i++) {
		const struct ckpt__wrun *r = &p->runs[i];
		if (r->kind != CKPT__RK_DATA)
			continue;
		if (ckpt__mem_grow((void **)&pages, &pages_cap, npages + r->npages, sizeof *pages)) {
			rc = ckpt__fail(CKPT_ENOMEM, "out of memory planning a snapshot");
			break;
		}
		uintptr_t src = r->src ? r->src : r->start;
		for (size_t j = 0; j < r->npages; j++)
			pages[npages++] = src + j * p->page_size;
	}
	struct cuts cuts = {0};
	if (!rc && plan_blocks(p, &cuts))
		rc = ckpt__fail(CKPT_ENOMEM, "out of memory planning a snapshot");
	size_t njobs = !rc && npages ? cuts.n - 1 : 0;
	jobs_bytes = (njobs ? njobs : 1) * sizeof *w.jobs;
	if (!rc && !(w.jobs = ckpt__mem_alloc(jobs_bytes)))
		rc = ckpt__fail(CKPT_ENOMEM, "out of memory planning a snapshot");

	if (!rc) {
		unlinkat(dirfd, tmpname, 0);
		int inj = ckpt__inject(CKPT__IO_OPEN);
		w.fd = inj ? (errno = inj, -1)
			   : openat(dirfd, tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (w.fd < 0)
			rc = io_fail(&w, "create", errno);
	}
	struct ckpt__fhdr h;
	memset(&h, 0, sizeof h);
	if (!rc)
		rc = put(&w, &h, sizeof h);
	h.data_offset = w.off;
	if (!rc)
		rc = ckpt__compress_pages(pages, npages, cuts.at, njobs, p->page_size, p->level,
					  p->threads, p->workers, sink, &w, &res->compress_ns);
	h.data_size = w.off - h.data_offset;
	if (!rc)
		rc = build_index(p, &w, &cuts, &x);
	if (!rc && !p->flat_index) {
		rc = pack_index(&x, &w, p->page_size, &pk);
		if (rc == CKPT_ENOMEM)
			rc = ckpt__fail(rc, "out of memory indexing a snapshot");
		packed = rc == 0;
		rc = rc == 1 ? 0 : rc;
	}

	/* Strings and the mapping table. */
	fmaps_bytes = (p->nmaps ? p->nmaps : 1) * sizeof *fmaps;
	if (!rc && !(fmaps = ckpt__mem_alloc(fmaps_bytes)))
		rc = ckpt__fail(CKPT_ENOMEM, "out of memory writing a snapshot");
	for (size_t i = 0; i < p->nmaps && !rc; i++) {
		const struct ckpt__wmap *m = &p->maps[i];
		struct ckpt__fmap *f = &fmaps[i];
		f->start = m->start;
		f->end = m->end;
		f->offset = m->offset;
		f->inode = m->inode;
		f->born = m->born;
		f->dev_major = m->dev_major;
		f->dev_minor = m->dev_minor;
		f->prot = (uint8_t)m->prot;
		f->flags = (uint8_t)m->flags;
		f->page_shift = (uint8_t)m->page_shift;
		f->kind = (uint8_t)m->kind;
		f->keep_off = m->keep_off;
		f->keep_len = m->keep_len;
		const char *nm = m->name ? m->name : "";
		if (str_add(&st, nm, strlen(nm), &f->name_off, &f->name_len))
			rc = ckpt__fail(CKPT_ENOMEM, "out of memory writing a snapshot");
	}
	if (!rc && (str_add(&st, p->exe ? p->exe : "", p->exe ? strlen(p->exe) : 0, &h.exe_off,
			    &h.exe_len) ||
		    str_add(&st, p->build_id, p->build_id_len, &h.bid_off, &h.bid_len)))
		rc = ckpt__fail(CKPT_ENOMEM, "out of memory writing a snapshot");

	const void *sect_data[CKPT__NSECT_ALL] = {st.s, fmaps, packed ? (const void *)pk.b : x.r,
						  w.blocks, p->proc};
	size_t sect_size[CKPT__NSECT_ALL] = {st.n, p->nmaps * sizeof *fmaps,
					     packed ? pk.n : x.n * sizeof *x.r,
					     w.nblocks * sizeof *w.blocks, p->proc_size};
	for (int i = 0; i < CKPT__NSECT_ALL && !rc; i++) {
		if (i == CKPT__SEC_PROC && !sect_size[i])
			continue; /* absent: all zero */
		struct ckpt__fsect *fs = CKPT__HSECT(&h, i);
		fs->offset = w.off;
		fs->size = sect_size[i];
		fs->hash = ckpt__xxh64(sect_data[i] ? sect_data[i] : "", sect_size[i], 0);
		if (sect_size[i])
			rc = put(&w, sect_data[i], sect_size[i]);
	}

	if (!rc) {
		memcpy(h.magic, CKPT__MAGIC, 8);
		h.version = CKPT__FORMAT_VERSION;
		h.header_size = sizeof h;
		h.flags = (p->flags & ~CKPT__SF_PACKED_INDEX) | (packed ? CKPT__SF_PACKED_INDEX : 0);
		h.page_size = p->page_size;
		h.nthreads = p->nthreads;
		memcpy(h.chain_id, p->chain_id, 16);
		h.id = p->id;
		h.parent = p->parent;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		h.time_ns = p->time_ns ? p->time_ns
				       : (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
		h.data_pages = x.pages[CKPT__RK_DATA];
		h.zero_pages = x.pages[CKPT__RK_ZERO];
		h.file_pages = x.pages[CKPT__RK_FILE];
		h.raw_bytes = w.raw;
		h.hash = ckpt__xxh64(&h, offsetof(struct ckpt__fhdr, hash), 0);
		struct ckpt__ffooter f;
		memset(&f, 0, sizeof f);
		memcpy(f.magic, CKPT__FOOTER_MAGIC, 8);
		f.file_size = w.off + sizeof f;
		f.header_hash = h.hash;
		f.hash = ckpt__xxh64(&f, offsetof(struct ckpt__ffooter, hash), 0);
		rc = put(&w, &f, sizeof f);
		if (!rc) {
			int inj = ckpt__inject(CKPT__IO_WRITE);
			if (inj || pwrite(w.fd, &h, sizeof h, 0) != (ssize_t)sizeof h)
				rc = io_fail(&w, "write", inj ? inj : errno ? errno : EIO);
		}
	}
	uint64_t t0 = ckpt__now_ns();
	if (!rc) {
		int inj = ckpt__inject(CKPT__IO_FSYNC);
		if (inj || fsync(w.fd) != 0)
			rc = io_fail(&w, "fsync", inj ? inj : errno);
	}
	if (w.fd >= 0 && close(w.fd) != 0 && !rc)
		rc = io_fail(&w, "close", errno);
	if (!rc) {
		int inj = ckpt__inject(CKPT__IO_RENAME);
		if (inj || renameat(dirfd, tmpname, dirfd, name) != 0)
			rc = io_fail(&w, "rename", inj ? inj : errno);
	}
	if (!rc) {
		/* The rename is durable once the directory is. */
		int inj = ckpt__inject(CKPT__IO_FSYNC);
		if (inj || fsync(dirfd) != 0) {
			rc = io_fail(&w, "fsync of the directory", inj ? inj : errno);
			/* The new name may or may not survive a crash: take it
			 * back so that failure means "as before". */
			unlinkat(dirfd, name, 0);
		}
	}
	res->sync_ns = ckpt__now_ns() - t0;
	if (rc)
		unlinkat(dirfd, tmpname, 0);
	else {
		res->file_bytes = w.off;
		res->stored_bytes = w.stored;
		res->raw_bytes = w.raw;
		res->data_pages = x.pages[CKPT__RK_DATA];
		res->zero_pages = x.pages[CKPT__RK_ZERO];
		res->file_pages = x.pages[CKPT__RK_FILE];
		res->write_ns = w.write_ns;
	}
	ckpt__mem_array_free((void **)&pages, &pages_cap, sizeof *pages);
	ckpt__mem_array_free((void **)&cuts.at, &cuts.cap, sizeof *cuts.at);
	ckpt__mem_array_free((void **)&x.r, &x.cap, sizeof *x.r);
	ckpt__mem_array_free((void **)&pk.b, &pk.cap, 1);
	ckpt__mem_array_free((void **)&st.s, &st.cap, 1);
	ckpt__mem_array_free((void **)&w.blocks, &w.blocks_cap, sizeof *w.blocks);
	if (w.jobs)
		ckpt__mem_free(w.jobs, jobs_bytes);
	if (fmaps)
		ckpt__mem_free(fmaps, fmaps_bytes);
	return rc;
}
