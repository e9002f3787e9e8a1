/*
 * snap-read.c - reading and verifying snapshot files and chains.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Nothing read from a file is used before it is checked: sizes, offsets and
 * counts against the file and the limits, every section against its hash,
 * every reference against what it points into (doc/FORMAT.md, "What a
 * reader checks").  All memory comes from ckpt's own pool: a reader runs
 * inside a process whose heap it may be about to restore.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "snap-read.h"
#include "dir.h"
#include "error.h"
#include "mem.h"
#include "own-thread.h"
#include "xxhash.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Reads [off, off+len) of the file. */
static int rd(const struct ckpt__snap *s, uint64_t off, void *buf, size_t len)
{
	if (off > s->size || len > s->size - off)
		return ckpt__fail(CKPT_ECORRUPT, "%s: read past the end of the file", s->name);
	if (s->mem) {
		memcpy(buf, s->mem + off, len);
		return 0;
	}
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(s->fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return ckpt__fail(ckpt__from_errno(errno), "%s: %s", s->name, strerror(errno));
		if (n == 0)
			return ckpt__fail(CKPT_ECORRUPT, "%s: truncated while reading", s->name);
		done += (size_t)n;
	}
	return 0;
}

#define BAD(...) ckpt__fail(CKPT_ECORRUPT, __VA_ARGS__)

/* A fuzzer gets past the hashes to the checks behind them. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define HASH_OK(computed, stored) ((void)(computed), (void)(stored), 1)
#else
#define HASH_OK(computed, stored) ((computed) == (stored))
#endif

static int check_header(struct ckpt__snap *s)
{
	const struct ckpt__fhdr *h = &s->h;
	const char *n = s->name;
	if (memcmp(h->magic, CKPT__MAGIC, 8) != 0)
		return ckpt__fail(CKPT_ECORRUPT, "%s: not a ckpt snapshot (bad magic)", n);
	if (h->version != CKPT__FORMAT_VERSION)
		return ckpt__fail(CKPT_EVERSION, "%s: format version %u, this ckpt reads %u", n,
				  h->version, CKPT__FORMAT_VERSION);
	if (h->header_size != sizeof *h)
		return BAD("%s: header size %u", n, h->header_size);
	if (!HASH_OK(ckpt__xxh64(h, offsetof(struct ckpt__fhdr, hash), 0), h->hash))
		return BAD("%s: header hash mismatch", n);
	if (h->flags & ~CKPT__SF_KNOWN)
		return BAD("%s: unknown flags %#x", n, h->flags & ~CKPT__SF_KNOWN);
	if (h->page_size < 4096 || h->page_size > CKPT__MAX_PAGE_SIZE ||
	    (h->page_size & (h->page_size - 1)))
		return BAD("%s: page size %u", n, h->page_size);
	if (h->id == 0 || ((h->flags & CKPT__SF_BASE) ? h->parent != 0 : h->parent != h->id - 1))
		return BAD("%s: snapshot %llu with parent %llu", n, (unsigned long long)h->id,
			   (unsigned long long)h->parent);
	return 0;
}

/* Checks [off, off+len) lies inside the file between header and footer and
 * does not overlap [a, b). */
static int region_ok(const struct ckpt__snap *s, uint64_t off, uint64_t len)
{
	uint64_t lo = sizeof(struct ckpt__fhdr), hi = s->size - sizeof(struct ckpt__ffooter);
	return off >= lo && off <= hi && len <= hi - off;
}

static int overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

static int check_maps(struct ckpt__snap *s)
{
	const char *n = s->name;
	uint64_t strsz = s->h.sect[CKPT__SEC_STRINGS].size;
	uint64_t pmask = s->h.page_size - 1;
	for (size_t i = 0; i < s->nmaps; i++) {
		const struct ckpt__fmap *m = &s->maps[i];
		if ((m->start & pmask) || (m->end & pmask) || m->start >= m->end)
			return BAD("%s: mapping %zu: bad range %#llx-%#llx", n, i,
				   (unsigned long long)m->start, (unsigned long long)m->end);
		if (i && m->start < s->maps[i - 1].end)
			return BAD("%s: mapping %zu: out of order or overlapping", n, i);
		if (m->flags & ~CKPT__MF_KNOWN)
			return BAD("%s: mapping %zu: unknown flags %#x", n, i, m->flags);
		if (m->kind < CKPT__MK_TRACKED || m->kind > CKPT__MK_TLS)
			return BAD("%s: mapping %zu: unknown kind %u", n, i, m->kind);
		if (m->born == 0 || m->born > s->h.id)
			return BAD("%s: mapping %zu: born in snapshot %llu", n, i,
				   (unsigned long long)m->born);
		if ((uint64_t)m->name_off + m->name_len > strsz)
			return BAD("%s: mapping %zu: name outside the strings", n, i);
		if ((uint64_t)m->keep_off + m->keep_len > m->end - m->start)
			return BAD("%s: mapping %zu: keep range outside the mapping", n, i);
		if (m->page_shift < 12 || m->page_shift > 30 ||
		    ((m->start | m->end) & (((uint64_t)1 << m->page_shift) - 1)))
			return BAD("%s: mapping %zu: page shift %u", n, i, m->page_shift);
	}
	return 0;
}

static int check_runs(struct ckpt__snap *s)
{
	const char *n = s->name;
	uint64_t ps = s->h.page_size;
	unsigned pshift = (unsigned)__builtin_ctzll(ps);
	size_t mi = 0;
	uint64_t pages[4] = {0};
	for (size_t i = 0; i < s->nruns; i++) {
		const struct ckpt__frun *r = &s->runs[i];
		if ((r->start & (ps - 1)) || r->npages == 0 ||
		    r->npages > (UINT64_MAX - r->start) >> pshift)
			return BAD("%s: run %zu: bad range", n, i);
		uint64_t end = r->start + (uint64_t)r->npages * ps;
		if (i && r->start < s->runs[i - 1].start + (uint64_t)s->runs[i - 1].npages * ps)
			return BAD("%s: run %zu: out of order or overlapping", n, i);
		while (mi < s->nmaps && s->maps[mi].end <= r->start)
			mi++;
		if (mi == s->nmaps || s->maps[mi].start > r->start || s->maps[mi].end < end)
			return BAD("%s: run %zu (%#llx): not inside one mapping", n, i,
				   (unsigned long long)r->start);
		if (r->kind < CKPT__RK_DATA || r->kind > CKPT__RK_FILE || r->pad[0] || r->pad[1] ||
		    r->pad[2])
			return BAD("%s: run %zu: unknown kind %u", n, i, r->kind);
		pages[r->kind] += r->npages;
		if (r->kind != CKPT__RK_DATA)
			continue;
		if (r->block >= s->nblocks)
			return BAD("%s: run %zu: block %u of %zu", n, i, r->block, s->nblocks);
		uint64_t bpages = (uint64_t)s->blocks[r->block].rsize >> pshift;
		if ((uint64_t)r->block_page + r->npages > bpages)
			return BAD("%s: run %zu: pages %u+%u outside block %u", n, i, r->block_page,
				   r->npages, r->block);
	}
	if (pages[CKPT__RK_DATA] != s->h.data_pages || pages[CKPT__RK_ZERO] != s->h.zero_pages ||
	    pages[CKPT__RK_FILE] != s->h.file_pages)
		return BAD("%s: page counts do not match the index", n);
	return 0;
}

static int check_blocks(struct ckpt__snap *s)
{
	const char *n = s->name;
	uint64_t ps = s->h.page_size, lo = s->h.data_offset, hi = lo + s->h.data_size;
	uint64_t prev = lo, raw = 0;
	for (size_t i = 0; i < s->nblocks; i++) {
		const struct ckpt__fblock *b = &s->blocks[i];
		if (b->rsize == 0 || b->rsize % ps || b->rsize / ps > CKPT__BLOCK_PAGES)
			return BAD("%s: block %zu: %u bytes of pages", n, i, b->rsize);
		if (b->offset < prev || b->offset > hi || CKPT__BLOCK_SPAN(b, ps) > hi - b->offset)
			return BAD("%s: block %zu: outside the data area or out of order", n, i);
		if (b->codec > CKPT__CODEC_RAWP ||
		    (b->codec != CKPT__CODEC_ZSTD && b->csize != b->rsize))
			return BAD("%s: block %zu: codec %u with %u of %u bytes", n, i, b->codec,
				   b->csize, b->rsize);
		/* A writer stores zstd only where it shrinks the pages: so no
		 * block stores more than its pages, and the stored bytes fit
		 * the one-block buffer (page size x 64) every reader holds. */
		if (b->codec == CKPT__CODEC_ZSTD && b->csize >= b->rsize)
			return BAD("%s: block %zu: %u bytes stored for %u bytes of pages", n, i,
				   b->csize, b->rsize);
		if (b->csize == 0)
			return BAD("%s: block %zu: empty", n, i);
		prev = b->offset + CKPT__BLOCK_SPAN(b, ps);
		raw += b->rsize;
	}
	if (raw != s->h.raw_bytes)
		return BAD("%s: the blocks hold %llu bytes of pages, the header says %llu", n,
			   (unsigned long long)raw, (unsigned long long)s->h.raw_bytes);
	return 0;
}

/* ---- the packed index (format.h, doc/FORMAT.md) ------------------------------ */

/* Reads the LEB128 number at p[*at], of at most CKPT__VARINT_MAX bytes and
 * 64 bits, before `len`.  0, or -1 if it is cut short or too long. */
static inline int get_varint(const unsigned char *p, size_t len, size_t *at, uint64_t *v)
{
	/* Most numbers of an index are one byte (a run's length less one). */
	if (*at < len && p[*at] < 0x80) {
		*v = p[(*at)++];
		return 0;
	}
	uint64_t x = 0;
	for (unsigned i = 0; i < CKPT__VARINT_MAX && *at < len; i++) {
		unsigned char b = p[(*at)++];
		if (i == CKPT__VARINT_MAX - 1 && b > 1)
			return -1; /* past 64 bits */
		x |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			*v = x;
			return 0;
		}
	}
	return -1;
}

/*
 * Expands the packed index held in s->runs (the section's bytes) into
 * struct ckpt__frun entries of an allocation of their own: counted first,
 * so that what is allocated is bounded by the limits before anything is.
 * Each entry is checked as it is read (kind, range, its place in the
 * blocks); check_runs then checks the result as any index.
 */
static int unpack_index(struct ckpt__snap *s)
{
	const char *n = s->name;
	const unsigned char *p = (const unsigned char *)s->runs;
	size_t len = s->h.sect[CKPT__SEC_INDEX].size, count = 0;
	uint64_t v;
	for (size_t at = 0; at < len; count++) {
		if (get_varint(p, len, &at, &v) || get_varint(p, len, &at, &v))
			return BAD("%s: index: run %zu is cut short or holds a number past 64 bits",
				   n, count);
		if (count >= CKPT__MAX_RUNS)
			return BAD("%s: index: more than %u runs", n, CKPT__MAX_RUNS);
	}
	s->runs_alloc_size = (count ? count : 1) * sizeof *s->runs;
	struct ckpt__frun *r = ckpt__mem_alloc(s->runs_alloc_size);
	if (!r)
		return ckpt__fail(CKPT_ENOMEM, "%s: out of memory for %zu runs", n, count);
	s->runs_alloc = r;
	uint64_t ps = s->h.page_size, end = 0, used = 0;
	unsigned pshift = (unsigned)__builtin_ctzll(ps);
	size_t b = 0, at = 0;
	for (size_t i = 0; i < count; i++) {
		uint64_t g = 0, np = 0;
		get_varint(p, len, &at, &g);
		get_varint(p, len, &at, &np);
		uint64_t gap = g >> CKPT__PACKED_KIND_BITS;
		unsigned kind = (unsigned)(g & ((1u << CKPT__PACKED_KIND_BITS) - 1));
		if (kind < CKPT__RK_DATA || kind > CKPT__RK_FILE)
			return BAD("%s: run %zu: unknown kind %u", n, i, kind);
		if (np >= UINT32_MAX)
			return BAD("%s: run %zu: %llu pages", n, i, (unsigned long long)np + 1);
		/* (Shifts, not divisions: a long chain has many runs to read,
		 * and the page size is a power of two, checked above.) */
		if (gap > (UINT64_MAX - end) >> pshift ||
		    np + 1 > (UINT64_MAX - end - (gap << pshift)) >> pshift)
			return BAD("%s: run %zu: past the end of the address space", n, i);
		memset(&r[i], 0, sizeof r[i]);
		r[i].start = end + gap * ps;
		r[i].npages = (uint32_t)(np + 1);
		r[i].kind = (uint8_t)kind;
		end = r[i].start + (np + 1) * ps;
		if (kind != CKPT__RK_DATA)
			continue;
		if (b < s->nblocks && used == ((uint64_t)s->blocks[b].rsize >> pshift)) {
			b++;
			used = 0;
		}
		if (b >= s->nblocks)
			return BAD("%s: run %zu: %u pages of data past the last block", n, i,
				   r[i].npages);
		if (used + r[i].npages > ((uint64_t)s->blocks[b].rsize >> pshift))
			return BAD("%s: run %zu: pages %llu+%u outside block %zu", n, i,
				   (unsigned long long)used, r[i].npages, b);
		r[i].block = (uint32_t)b;
		r[i].block_page = (uint32_t)used;
		used += r[i].npages;
	}
	if (s->nblocks && (b != s->nblocks - 1 || used != ((uint64_t)s->blocks[b].rsize >> pshift)))
		return BAD("%s: index: the runs end in block %zu, page %llu, before the end of the "
			   "data (%zu blocks)",
			   n, b, (unsigned long long)used, s->nblocks);
	s->runs = r;
	s->nruns = count;
	return 0;
}

static void snap_free(struct ckpt__snap *s)
{
	if (s->alloc)
		ckpt__mem_free(s->alloc, s->alloc_size);
	s->alloc = NULL;
	if (s->runs_alloc)
		ckpt__mem_free(s->runs_alloc, s->runs_alloc_size);
	s->runs_alloc = NULL;
}

static int load(struct ckpt__snap *s)
{
	const char *n = s->name;
	struct ckpt__ffooter f;
	if (s->size < sizeof(struct ckpt__fhdr) + sizeof f)
		return BAD("%s: truncated (%llu bytes)", n, (unsigned long long)s->size);
	int rc = rd(s, s->size - sizeof f, &f, sizeof f);
	if (rc)
		return rc;
	if (memcmp(f.magic, CKPT__FOOTER_MAGIC, 8) != 0)
		return BAD("%s: no footer: the file is truncated or was not finished", n);
	if (!HASH_OK(ckpt__xxh64(&f, offsetof(struct ckpt__ffooter, hash), 0), f.hash))
		return BAD("%s: footer hash mismatch", n);
	if (f.file_size != s->size)
		return BAD("%s: %llu bytes, the footer says %llu", n, (unsigned long long)s->size,
			   (unsigned long long)f.file_size);
	if ((rc = rd(s, 0, &s->h, sizeof s->h)) != 0)
		return rc;
	if ((rc = check_header(s)) != 0)
		return rc;
	if (!HASH_OK(f.header_hash, s->h.hash))
		return BAD("%s: footer and header do not belong together", n);

	/* The sections: inside the file, clear of each other and of the
	 * blocks, whole entries, under the limits. */
	/* A packed index is bytes, bounded as the flat one (its runs are
	 * counted when it is expanded). */
	int packed = (s->h.flags & CKPT__SF_PACKED_INDEX) != 0;
	const size_t esize[CKPT__NSECT_ALL] = {1, sizeof(struct ckpt__fmap),
					       packed ? 1 : sizeof(struct ckpt__frun),
					       sizeof(struct ckpt__fblock), 1};
	const uint64_t emax[CKPT__NSECT_ALL] = {
		CKPT__MAX_STRINGS, CKPT__MAX_MAPS,
		packed ? (uint64_t)CKPT__MAX_RUNS * sizeof(struct ckpt__frun) : CKPT__MAX_RUNS,
		CKPT__MAX_RUNS, CKPT__MAX_PROC};
	static const char *const sname[CKPT__NSECT_ALL] = {"strings", "mappings", "index", "blocks",
						       "process"};
	if (!region_ok(s, s->h.data_offset, s->h.data_size))
		return BAD("%s: data area outside the file", n);
	uint64_t total = 0;
	for (int i = 0; i < CKPT__NSECT_ALL; i++) {
		const struct ckpt__fsect *x = CKPT__HSECT(&s->h, i);
		/* An absent process record is all zero. */
		if (i == CKPT__SEC_PROC && !x->offset && !x->size && !x->hash)
			continue;
		if (!region_ok(s, x->offset, x->size) || x->size % esize[i] ||
		    x->size / esize[i] > emax[i])
			return BAD("%s: %s section: bad place or size", n, sname[i]);
		if (overlap(x->offset, x->size, s->h.data_offset, s->h.data_size))
			return BAD("%s: %s section overlaps the data", n, sname[i]);
		for (int j = 0; j < i; j++)
			if (overlap(x->offset, x->size, CKPT__HSECT(&s->h, j)->offset,
				    CKPT__HSECT(&s->h, j)->size))
				return BAD("%s: %s and %s sections overlap", n, sname[j], sname[i]);
		total += x->size;
	}
	s->alloc_size = total + 64;
	s->alloc = ckpt__mem_alloc(s->alloc_size);
	if (!s->alloc)
		return ckpt__fail(CKPT_ENOMEM, "%s: out of memory for %llu bytes of metadata", n,
				  (unsigned long long)total);
	char *p = s->alloc;
	void *dst[CKPT__NSECT_ALL];
	for (int i = CKPT__NSECT_ALL - 1; i >= 0; i--) {
		/* Largest alignment first: blocks, index, mappings (8), strings. */
		const struct ckpt__fsect *x = CKPT__HSECT(&s->h, i);
		dst[i] = p;
		if (i == CKPT__SEC_PROC && !x->size)
			continue;
		if ((rc = rd(s, x->offset, p, x->size)) != 0)
			return rc;
		if (!HASH_OK(ckpt__xxh64(p, x->size, 0), x->hash))
			return BAD("%s: %s section hash mismatch", n, sname[i]);
		p += (x->size + 7) & ~(uint64_t)7;
	}
	s->strings = dst[CKPT__SEC_STRINGS];
	s->maps = dst[CKPT__SEC_MAPS];
	s->runs = dst[CKPT__SEC_INDEX];
	s->blocks = dst[CKPT__SEC_BLOCKS];
	s->proc = s->h.proc.size ? dst[CKPT__SEC_PROC] : NULL;
	s->proc_size = s->h.proc.size;
	s->nmaps = s->h.sect[CKPT__SEC_MAPS].size / sizeof *s->maps;
	s->nruns = s->h.sect[CKPT__SEC_INDEX].size / sizeof *s->runs;
	s->nblocks = s->h.sect[CKPT__SEC_BLOCKS].size / sizeof *s->blocks;
	uint64_t strsz = s->h.sect[CKPT__SEC_STRINGS].size;
	if ((uint64_t)s->h.exe_off + s->h.exe_len > strsz ||
	    (uint64_t)s->h.bid_off + s->h.bid_len > strsz)
		return BAD("%s: executable or build-id outside the strings", n);
	if ((rc = check_maps(s)) || (rc = check_blocks(s)) || (packed && (rc = unpack_index(s))) ||
	    (rc = check_runs(s)))
		return rc;
	return 0;
}

int ckpt__snap_parse(struct ckpt__snap *s, const void *buf, size_t len, const char *name)
{
	memset(s, 0, sizeof *s);
	s->fd = -1;
	s->mem = buf;
	s->size = len;
	snprintf(s->name, sizeof s->name, "%s", name);
	int rc = load(s);
	if (rc)
		snap_free(s);
	return rc;
}

int ckpt__snap_open(struct ckpt__snap *s, int dirfd, const char *name)
{
	memset(s, 0, sizeof *s);
	snprintf(s->name, sizeof s->name, "%s", name);
	/* A regular file of the user's, never a FIFO or a link (dir.c). */
	struct stat st;
	int rc = ckpt__chain_file_open(dirfd, name, &s->fd, &st);
	if (rc)
		return rc;
	s->size = (uint64_t)st.st_size;
	rc = load(s);
	if (rc)
		ckpt__snap_close(s);
	return rc;
}

void ckpt__snap_close(struct ckpt__snap *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	snap_free(s);
}

/* Block b, checked again where its bytes are copied: what check_blocks
 * bounded, the callers' buffers of one block (page size x 64) rely on. */
static const struct ckpt__fblock *block_at(const struct ckpt__snap *s, uint32_t b)
{
	if (b >= s->nblocks) {
		BAD("%s: no block %u", s->name, b);
		return NULL;
	}
	const struct ckpt__fblock *blk = &s->blocks[b];
	if (blk->rsize > (uint64_t)s->h.page_size * CKPT__BLOCK_PAGES || blk->csize > blk->rsize) {
		BAD("%s: block %u: %u bytes stored for %u bytes of pages", s->name, b, blk->csize,
		    blk->rsize);
		return NULL;
	}
	return blk;
}

/* Whether the csize bytes at buf are one zstd frame announcing rsize bytes:
 * nothing before, after or inside it that a decompressor would skip. */
static int one_frame(const struct ckpt__snap *s, uint32_t b, const void *buf)
{
	const struct ckpt__fblock *blk = &s->blocks[b];
	size_t fsize = ZSTD_findFrameCompressedSize(buf, blk->csize);
	if (ZSTD_isError(fsize) || fsize != blk->csize)
		return BAD("%s: block %u: not one zstd frame", s->name, b);
	if (ZSTD_getFrameContentSize(buf, blk->csize) != blk->rsize)
		return BAD("%s: block %u: the frame does not hold %u bytes", s->name, b, blk->rsize);
	return 0;
}

int ckpt__snap_page_hashes(const struct ckpt__snap *s, uint32_t b, uint64_t *out)
{
	const struct ckpt__fblock *blk = block_at(s, b);
	if (!blk)
		return CKPT_ECORRUPT;
	if (blk->codec != CKPT__CODEC_RAWP)
		return BAD("%s: block %u: no page hashes (codec %u)", s->name, b, blk->codec);
	size_t n = blk->rsize / s->h.page_size * 8;
	int rc = rd(s, blk->offset + blk->csize, out, n);
	if (!rc && !HASH_OK(ckpt__xxh64(out, n, 0), blk->hash))
		rc = BAD("%s: block %u: hash mismatch in its page hashes", s->name, b);
	return rc;
}

int ckpt__snap_page_check(const struct ckpt__snap *s, uint32_t b, const uint64_t *hashes,
			  uint32_t page, const void *bytes)
{
	if (!HASH_OK(ckpt__xxh64(bytes, s->h.page_size, 0), hashes[page]))
		return BAD("%s: block %u: page %u: hash mismatch", s->name, b, page);
	return 0;
}

/* A raw block read whole (at buf): checked against its hash, or (RAWP)
 * its page hashes and each page against its own. */
static int raw_check(const struct ckpt__snap *s, uint32_t b, const void *buf)
{
	const struct ckpt__fblock *blk = &s->blocks[b];
	if (blk->codec != CKPT__CODEC_RAWP)
		return HASH_OK(ckpt__xxh64(buf, blk->csize, 0), blk->hash)
			       ? 0
			       : BAD("%s: block %u: hash mismatch", s->name, b);
	uint64_t h[CKPT__BLOCK_PAGES];
	int rc = ckpt__snap_page_hashes(s, b, h);
	for (uint32_t i = 0; !rc && i < blk->rsize / s->h.page_size; i++)
		rc = ckpt__snap_page_check(s, b, h, i, (const char *)buf + (size_t)i * s->h.page_size);
	return rc;
}

int ckpt__snap_block(const struct ckpt__snap *s, ZSTD_DCtx *dctx, uint32_t b, void *out,
		     void *stored)
{
	const struct ckpt__fblock *blk = block_at(s, b);
	if (!blk)
		return CKPT_ECORRUPT;
	void *buf = blk->codec != CKPT__CODEC_ZSTD ? out : stored;
	void *tmp = NULL;
	if (!buf) {
		tmp = ckpt__mem_alloc(blk->csize);
		if (!tmp)
			return ckpt__fail(CKPT_ENOMEM, "out of memory reading %s", s->name);
		buf = tmp;
	}
	int rc = rd(s, blk->offset, buf, blk->csize);
	if (!rc && blk->codec != CKPT__CODEC_ZSTD)
		rc = raw_check(s, b, buf);
	else if (!rc && !HASH_OK(ckpt__xxh64(buf, blk->csize, 0), blk->hash))
		rc = BAD("%s: block %u: hash mismatch", s->name, b);
	if (!rc && blk->codec == CKPT__CODEC_ZSTD)
		rc = one_frame(s, b, buf);
	if (!rc && blk->codec == CKPT__CODEC_ZSTD) {
		size_t got = ZSTD_decompressDCtx(dctx, out, blk->rsize, buf, blk->csize);
		if (ZSTD_isError(got) || got != blk->rsize)
			rc = BAD("%s: block %u: %s", s->name, b,
				 ZSTD_isError(got) ? ZSTD_getErrorName(got) : "wrong size when decompressed");
	}
	if (tmp)
		ckpt__mem_free(tmp, blk->csize);
	return rc;
}

int ckpt__snap_block_stored(const struct ckpt__snap *s, uint32_t b, void *stored)
{
	const struct ckpt__fblock *blk = block_at(s, b);
	if (!blk)
		return CKPT_ECORRUPT;
	int rc = rd(s, blk->offset, stored, blk->csize);
	if (!rc && blk->codec != CKPT__CODEC_ZSTD)
		rc = raw_check(s, b, stored);
	else if (!rc && !HASH_OK(ckpt__xxh64(stored, blk->csize, 0), blk->hash))
		rc = BAD("%s: block %u: hash mismatch", s->name, b);
	if (!rc && blk->codec == CKPT__CODEC_ZSTD)
		rc = one_frame(s, b, stored);
	return rc;
}

const char *ckpt__snap_str(const struct ckpt__snap *s, uint32_t off, uint32_t len, char *buf,
			   size_t bufsz)
{
	size_t n = len < bufsz - 1 ? len : bufsz - 1;
	memcpy(buf, s->strings + off, n);
	buf[n] = '\0';
	return buf;
}

const struct ckpt__frun *ckpt__snap_run_at(const struct ckpt__snap *s, uintptr_t addr)
{
	size_t lo = 0, hi = s->nruns;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct ckpt__frun *r = &s->runs[mid];
		if (r->start + (uint64_t)r->npages * s->h.page_size <= addr)
			lo = mid + 1;
		else if (r->start > addr)
			hi = mid;
		else
			return r;
	}
	return NULL;
}

const struct ckpt__fmap *ckpt__snap_map_at(const struct ckpt__snap *s, uintptr_t addr)
{
	size_t i = CKPT__FIRST_ENDING_AFTER(s->maps, s->nmaps, end, addr);
	return i < s->nmaps && s->maps[i].start <= addr ? &s->maps[i] : NULL;
}

/* ---- chains ------------------------------------------------------------------ */

static int cmp_id(const void *a, const void *b)
{
	unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;
	return x < y ? -1 : x > y;
}

struct each_id {
	int (*fn)(unsigned long long id, void *arg);
	void *arg;
};

static int id_of(const char *name, unsigned type, void *arg)
{
	(void)type;
	const struct each_id *e = arg;
	uint64_t id;
	return ckpt__snap_name_parse(name, &id) == CKPT__NAME_SNAP ? e->fn(id, e->arg) : 0;
}

/* Calls fn with the id of every snapshot file in the directory fd (read
 * from its start; no allocation in the program's heap).  Stops at fn's
 * first non-zero value and returns it; a failed read is a CKPT_E* code. */
static int each_id(int fd, int (*fn)(unsigned long long id, void *arg), void *arg)
{
	struct each_id e = {fn, arg};
	return ckpt__dir_foreach(fd, id_of, &e);
}

static int newer(unsigned long long id, void *arg)
{
	uint64_t *newest = arg;
	if (id > *newest)
		*newest = id;
	return 0;
}

uint64_t ckpt__chain_newest_id(int dirfd)
{
	uint64_t newest = 0;
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	each_id(fd, newer, &newest);
	close(fd);
	return newest;
}

struct id_list {
	unsigned long long *ids;
	size_t n, cap;
	uint64_t max;
};

static int add_id(unsigned long long id, void *arg)
{
	struct id_list *l = arg;
	if (id > l->max)
		return 0;
	if (ckpt__mem_grow((void **)&l->ids, &l->cap, l->n + 1, sizeof *l->ids))
		return 1;
	l->ids[l->n++] = id;
	return 0;
}

/* ---- loading a chain's files on every core ---------------------------------------------- */

/* A long chain is a hundred files whose checks do not depend on each
 * other: they are loaded ahead of the walk that links them, on ckpt's own
 * threads.  The candidates are the ids from the newest down while they are
 * consecutive (the walk uses no other); once a base is loaded, the older
 * ones (left over from before a compaction) are not.  The walk then takes
 * each file from here, and reports a file's failure only where the walk
 * needs that file, as it would have reading them one by one. */
#define PRE_MIN 8	  /* fewer candidates are loaded by the walk itself */
#define PRE_THREADS 8
#define PRE_SKIPPED 1 /* not loaded (below a base) */

struct preload {
	const unsigned long long *ids; /* newest first */
	size_t n;	/* loaded (or tried) */
	size_t cap;	/* the arrays' length */
	int dirfd;
	struct ckpt__snap *snaps;
	int *rc;
	char (*msg)[256];
	size_t next;	/* the next to take */
	uint64_t floor; /* the newest base loaded so far */
};

static void *preload_work(void *arg)
{
	struct preload *p = arg;
	for (;;) {
		size_t i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
		if (i >= p->n)
			break;
		if (p->ids[i] < __atomic_load_n(&p->floor, __ATOMIC_RELAXED)) {
			p->rc[i] = PRE_SKIPPED;
			continue;
		}
		char name[48];
		snprintf(name, sizeof name, CKPT__SNAP_FMT, p->ids[i]);
		p->rc[i] = ckpt__snap_open(&p->snaps[i], p->dirfd, name);
		if (p->rc[i]) {
			snprintf(p->msg[i], sizeof p->msg[i], "%s", ckpt_last_error());
			continue;
		}
		uint64_t f = __atomic_load_n(&p->floor, __ATOMIC_RELAXED);
		while ((p->snaps[i].h.flags & CKPT__SF_BASE) && p->ids[i] > f &&
		       !__atomic_compare_exchange_n(&p->floor, &f, p->ids[i], 0, __ATOMIC_RELAXED,
						    __ATOMIC_RELAXED))
			;
	}
	return NULL;
}

/* Loads the candidates below ids[top] (inclusive) into p; 0 or CKPT_ENOMEM. */
static int preload_run(struct preload *p, const unsigned long long *ids, size_t top, int dirfd)
{
	size_t n = 1;
	while (n <= top && ids[top - n] == ids[top - n + 1] - 1)
		n++;
	memset(p, 0, sizeof *p);
	if (n < PRE_MIN)
		return 0;
	p->cap = n;
	p->ids = ckpt__mem_alloc(n * sizeof *p->ids);
	p->snaps = ckpt__mem_alloc(n * sizeof *p->snaps);
	p->rc = ckpt__mem_alloc(n * sizeof *p->rc);
	p->msg = ckpt__mem_alloc(n * sizeof *p->msg);
	if (!p->ids || !p->snaps || !p->rc || !p->msg)
		return CKPT_ENOMEM;
	for (size_t i = 0; i < n; i++)
		((unsigned long long *)p->ids)[i] = ids[top - i];
	p->n = n;
	p->dirfd = dirfd;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned want = ncpu < 1 ? 1 : ncpu > PRE_THREADS ? PRE_THREADS : (unsigned)ncpu, started = 0;
	struct ckpt__own_thread th[PRE_THREADS];
	while (started + 1 < want && ckpt__thread_spawn(&th[started], preload_work, p) == 0)
		started++;
	preload_work(p);
	for (unsigned i = 0; i < started; i++)
		ckpt__thread_join(&th[i]);
	return 0;
}

/* Snapshot `id` from p into *s: 0, its failure, or 1 when p does not
 * have it (the caller loads it). */
static int preload_take(struct preload *p, unsigned long long id, struct ckpt__snap *s)
{
	if (!p->n || id > p->ids[0] || p->ids[0] - id >= p->n)
		return 1;
	size_t i = (size_t)(p->ids[0] - id);
	int rc = p->rc[i];
	if (rc == PRE_SKIPPED)
		return 1;
	p->rc[i] = PRE_SKIPPED; /* taken */
	if (rc)
		return ckpt__fail(rc, "%s", p->msg[i]);
	*s = p->snaps[i];
	return 0;
}

static void preload_free(struct preload *p)
{
	for (size_t i = 0; i < p->n; i++)
		if (!p->rc[i])
			ckpt__snap_close(&p->snaps[i]);
	if (p->ids)
		ckpt__mem_free((void *)p->ids, p->cap * sizeof *p->ids);
	if (p->snaps)
		ckpt__mem_free(p->snaps, p->cap * sizeof *p->snaps);
	if (p->rc)
		ckpt__mem_free(p->rc, p->cap * sizeof *p->rc);
	if (p->msg)
		ckpt__mem_free(p->msg, p->cap * sizeof *p->msg);
	memset(p, 0, sizeof *p);
}

int ckpt__chain_open(struct ckpt__chain *c, const char *dir, int dirfd)
{
	return ckpt__chain_open_upto(c, dir, dirfd, UINT64_MAX);
}

int ckpt__chain_open_upto(struct ckpt__chain *c, const char *dir, int dirfd, uint64_t max_id)
{
	memset(c, 0, sizeof *c);
	c->dirfd = dirfd;
	if (dirfd < 0) {
		/* Only a directory nobody else could write into (dir.c). */
		int rc = ckpt__chain_dir_open(dir, "", &c->dirfd);
		if (rc)
			return rc == CKPT_ENOENT ? 0 : rc;
	}
	/* The ids present, then the chain: the newest file and its parents
	 * down to a base. */
	struct id_list l = {NULL, 0, 0, max_id};
	int rc = each_id(c->dirfd, add_id, &l);
	if (rc < 0)
		rc = ckpt__fail(rc, "%s: cannot list the directory: %s", dir, ckpt_strerror(rc));
	else if (rc > 0)
		rc = ckpt__fail(CKPT_ENOMEM, "out of memory listing %s", dir);
	unsigned long long *ids = l.ids;
	size_t nids = l.n, cap = l.cap;
	if (rc)
		goto out;
	if (nids)
		qsort(ids, nids, sizeof *ids, cmp_id);
	struct preload pre;
	if (nids && preload_run(&pre, ids, nids - 1, c->dirfd)) {
		preload_free(&pre);
		rc = ckpt__fail(CKPT_ENOMEM, "out of memory opening %s", dir);
		goto out;
	}
	/* From the newest down: every snapshot must verify; a gap or a bad
	 * file below the newest is an error (the chain would be wrong). */
	for (size_t k = nids; k-- > 0;) {
		if (c->n && ids[k] != c->snaps[0].h.id - 1)
			continue; /* leftovers from before a compaction */
		if (ckpt__mem_grow((void **)&c->snaps, &c->cap, c->n + 1, sizeof *c->snaps)) {
			rc = ckpt__fail(CKPT_ENOMEM, "out of memory opening %s", dir);
			break;
		}
		memmove(&c->snaps[1], &c->snaps[0], c->n * sizeof *c->snaps);
		char name[48];
		snprintf(name, sizeof name, CKPT__SNAP_FMT, ids[k]);
		rc = preload_take(&pre, ids[k], &c->snaps[0]);
		if (rc == 1)
			rc = ckpt__snap_open(&c->snaps[0], c->dirfd, name);
		if (rc) {
			memmove(&c->snaps[0], &c->snaps[1], c->n * sizeof *c->snaps);
			break;
		}
		c->n++;
		const struct ckpt__snap *s = &c->snaps[0];
		if (s->h.id != ids[k]) {
			rc = BAD("%s: holds snapshot %llu", name, (unsigned long long)s->h.id);
			break;
		}
		if (c->n > 1 && memcmp(s->h.chain_id, c->snaps[1].h.chain_id, 16)) {
			rc = ckpt__fail(CKPT_EFOREIGN, "%s: belongs to another chain", name);
			break;
		}
		if (c->n > 1 && s->h.page_size != c->snaps[1].h.page_size) {
			rc = ckpt__fail(CKPT_EFOREIGN, "%s: page size %u, its child %u", name,
					s->h.page_size, c->snaps[1].h.page_size);
			break;
		}
		if (s->h.flags & CKPT__SF_BASE)
			break;
		if (k == 0 || ids[k - 1] != s->h.id - 1) {
			rc = ckpt__fail(CKPT_ENOENT, "%s: its parent snap-%08llu.ckpt is missing", name,
					(unsigned long long)s->h.parent);
			break;
		}
	}
	if (nids)
		preload_free(&pre);
	if (!rc && c->n && !(c->snaps[0].h.flags & CKPT__SF_BASE))
		rc = ckpt__fail(CKPT_ENOENT, "%s: the chain has no base", dir);
	if (!rc && c->n) {
		c->bufsz = (size_t)c->snaps[0].h.page_size * CKPT__BLOCK_PAGES;
		c->dctx = ckpt__zstd_dctx();
		c->blockbuf = ckpt__mem_alloc(c->bufsz);
		c->storedbuf = ckpt__mem_alloc(c->bufsz);
		if (!c->dctx || !c->blockbuf || !c->storedbuf)
			rc = ckpt__fail(CKPT_ENOMEM, "out of memory opening %s", dir);
	}
out:
	ckpt__mem_array_free((void **)&ids, &cap, sizeof *ids);
	if (rc) {
		ckpt__chain_close(c);
		c->dirfd = -1;
	}
	return rc;
}

void ckpt__chain_close(struct ckpt__chain *c)
{
	for (size_t i = 0; i < c->n; i++)
		ckpt__snap_close(&c->snaps[i]);
	ckpt__mem_array_free((void **)&c->snaps, &c->cap, sizeof *c->snaps);
	c->n = 0;
	if (c->dctx)
		ZSTD_freeDCtx(c->dctx);
	c->dctx = NULL;
	ckpt__mem_free(c->blockbuf, c->bufsz);
	ckpt__mem_free(c->storedbuf, c->bufsz);
	c->blockbuf = c->storedbuf = NULL;
	if (c->dirfd >= 0)
		close(c->dirfd);
	c->dirfd = -1;
}

struct ckpt__snap *ckpt__chain_find(struct ckpt__chain *c, uint64_t id)
{
	if (!c->n)
		return NULL;
	if (id == UINT64_MAX)
		return &c->snaps[c->n - 1];
	uint64_t first = c->snaps[0].h.id;
	if (id < first || id - first >= c->n)
		return NULL;
	return &c->snaps[id - first];
}

int ckpt__chain_source(struct ckpt__chain *c, uint64_t id, uintptr_t addr,
		       struct ckpt__source *out)
{
	struct ckpt__snap *top = ckpt__chain_find(c, id);
	memset(out, 0, sizeof *out);
	if (!top)
		return -1;
	const struct ckpt__fmap *m = ckpt__snap_map_at(top, addr);
	if (!m)
		return -1;
	out->map = m;
	uint64_t first = c->snaps[0].h.id;
	for (uint64_t j = top->h.id; j >= m->born && j >= first; j--) {
		const struct ckpt__snap *s = &c->snaps[j - first];
		const struct ckpt__frun *r = ckpt__snap_run_at(s, addr);
		if (r) {
			out->kind = r->kind;
			out->snap = s;
			out->run = r;
			return 0;
		}
	}
	out->kind = (m->flags & CKPT__MF_ANON) ? CKPT__RK_ZERO : CKPT__RK_FILE;
	return 0;
}

/* The content of a page of a file mapping as the file has it now. */
static int file_page(const struct ckpt__snap *s, const struct ckpt__fmap *m, uintptr_t addr,
		     void *out)
{
	char path[4096];
	size_t ps = s->h.page_size;
	ckpt__snap_str(s, m->name_off, m->name_len, path, sizeof path);
	memset(out, 0, ps);
	int fd = path[0] == '/' ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	if (fd < 0)
		return ckpt__fail(CKPT_ENOENT, "%s: the file behind %#lx (%s) cannot be read",
				  s->name, (unsigned long)addr, path[0] ? path : "?");
	ssize_t n = pread(fd, out, ps, (off_t)(m->offset + (addr - m->start)));
	close(fd);
	/* Past the end of the file a mapping reads zeros. */
	return n < 0 ? ckpt__fail(ckpt__from_errno(errno), "%s: %s", path, strerror(errno)) : 0;
}

int ckpt__chain_page(struct ckpt__chain *c, uint64_t id, uintptr_t addr, void *out)
{
	struct ckpt__source src;
	if (ckpt__chain_source(c, id, addr, &src) != 0)
		return ckpt__fail(CKPT_ENOENT, "%#lx is not in snapshot %llu", (unsigned long)addr,
				  (unsigned long long)id);
	size_t ps = c->snaps[0].h.page_size;
	if (src.kind == CKPT__RK_ZERO) {
		memset(out, 0, ps);
		return 0;
	}
	if (src.kind == CKPT__RK_FILE)
		return file_page(ckpt__chain_find(c, id), src.map, addr, out);
	/* The chain's buffers hold one block of its page size. */
	if (src.snap->h.page_size != ps)
		return ckpt__fail(CKPT_EFOREIGN, "%s: page size %u in a chain of %zu",
				  src.snap->name, src.snap->h.page_size, ps);
	int rc = ckpt__snap_block(src.snap, c->dctx, src.run->block, c->blockbuf, c->storedbuf);
	if (rc)
		return rc;
	size_t page = src.run->block_page + (addr - src.run->start) / ps;
	memcpy(out, (char *)c->blockbuf + page * ps, ps);
	return 0;
}
