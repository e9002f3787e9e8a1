/*
 * test-index.c - the packed page index (format.h, doc/FORMAT.md): written
 * by the real writer, read back as the flat index reads, a few bytes a run;
 * and every malformed one refused with an error that names the problem.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "ckpt.h"
#include "error.h"
#include "snap-read.h"
#include "snap-write.h"
#include "xxhash.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PS 4096
#define BASE_ADDR 0x7f0000000000ull
/* Two mappings far apart: a gap between runs of more than 2^32 pages. */
#define FAR_ADDR 0x7ff000000000ull
#define MAP_PAGES 4096

static unsigned char pages[256][PS];

/* The plan: the mapping at BASE_ADDR with every 64th page, runs of 1 to 3
 * pages, a dense stretch of 150 pages (three blocks), a zero page among
 * them, a ZERO and a FILE run; one page in the far mapping. */
static struct ckpt__wmap maps[2];
static struct ckpt__wrun runs[200];
static size_t plan_runs;

static void plan(void)
{
	for (int p = 0; p < 256; p++)
		for (int i = 0; i < PS; i++)
			pages[p][i] = (unsigned char)(p * 7 + i % 241 + (i == 0 ? p : 0));
	memset(pages[17], 0, PS); /* a zero page: not stored, not indexed in a base */
	maps[0] = (struct ckpt__wmap){.start = BASE_ADDR, .end = BASE_ADDR + MAP_PAGES * PS,
				      .born = 1, .prot = 3, .kind = CKPT__MK_TRACKED,
				      .page_shift = 12, .name = "/data/file"};
	maps[1] = (struct ckpt__wmap){.start = FAR_ADDR, .end = FAR_ADDR + 16 * PS, .born = 1,
				      .prot = 3, .flags = CKPT__MF_ANON, .kind = CKPT__MK_TRACKED,
				      .page_shift = 12, .name = ""};
	size_t n = 0, src = 0;
#define DATA(at, len)                                                                      \
	do {                                                                               \
		runs[n++] = (struct ckpt__wrun){BASE_ADDR + (uint64_t)(at) * PS, (len),     \
						CKPT__RK_DATA, (uintptr_t)pages[src % 256]}; \
		src += (len);                                                              \
	} while (0)
	for (size_t at = 0; at < 1024; at += 64)
		DATA(at, 1);
	DATA(1030, 2);
	DATA(1100, 3);
	runs[n++] = (struct ckpt__wrun){BASE_ADDR + 1200 * PS, 4, CKPT__RK_ZERO, 0};
	runs[n++] = (struct ckpt__wrun){BASE_ADDR + 1300 * PS, 2, CKPT__RK_FILE, 0};
	DATA(2000, 150);
	DATA(3000, 1);
	runs[n++] = (struct ckpt__wrun){FAR_ADDR + 3 * PS, 1, CKPT__RK_DATA, (uintptr_t)pages[9]};
	plan_runs = n;
#undef DATA
}

static char tmpdir[64];

static void tmp_remove(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	(void)!system(cmd);
}

/* Writes snapshot 1 of maps and runs into tmpdir/sub (flat or packed
 * index) and returns its bytes. */
static unsigned char *write_snap(const char *sub, const struct ckpt__wmap *m, size_t nm,
				 const struct ckpt__wrun *r, size_t nr, int flat, size_t *len)
{
	if (!tmpdir[0]) {
		snprintf(tmpdir, sizeof tmpdir, "/tmp/ckpt-index-XXXXXX");
		cr_assert(mkdtemp(tmpdir), "mkdtemp: %s", strerror(errno));
		atexit(tmp_remove);
	}
	char dir[128];
	snprintf(dir, sizeof dir, "%s/%s", tmpdir, sub);
	mkdir(dir, 0700);
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	cr_assert_geq(fd, 0);
	struct ckpt__wplan p = {
		.id = 1, .flags = CKPT__SF_BASE, .page_size = PS, .nthreads = 1, .exe = "/bin/x",
		.build_id = "test-index-build-id0", .build_id_len = 20,
		.maps = m, .nmaps = nm, .runs = r, .nruns = nr, .level = 3, .threads = 1,
		.time_ns = 1, .flat_index = flat,
	};
	struct ckpt__wresult res;
	cr_assert_eq(ckpt__snap_write(fd, &p, &res), 0, "%s", ckpt_last_error());
	int f = openat(fd, "snap-00000001.ckpt", O_RDONLY);
	cr_assert_geq(f, 0);
	struct stat st;
	cr_assert_eq(fstat(f, &st), 0);
	*len = (size_t)st.st_size;
	unsigned char *b = malloc(*len);
	cr_assert_eq(pread(f, b, *len, 0), (ssize_t)*len);
	close(f);
	close(fd);
	return b;
}

/* Snapshot 1 of the plan (flat or packed index), its bytes. */
static unsigned char *write_base(int flat, size_t *len)
{
	if (!plan_runs)
		plan();
	return write_snap(flat ? "flat" : "packed", maps, 2, runs, plan_runs, flat, len);
}

Test(index, the_packed_index_reads_as_the_flat_one)
{
	size_t flen, plen;
	unsigned char *flat = write_base(1, &flen), *packed = write_base(0, &plen);
	struct ckpt__snap a, b;
	cr_assert_eq(ckpt__snap_parse(&a, flat, flen, "flat"), 0, "%s", ckpt_last_error());
	cr_assert_eq(ckpt__snap_parse(&b, packed, plen, "packed"), 0, "%s", ckpt_last_error());
	cr_expect_eq(a.h.flags & CKPT__SF_PACKED_INDEX, 0u, "the flat file says packed");
	cr_expect_eq(b.h.flags & CKPT__SF_PACKED_INDEX, CKPT__SF_PACKED_INDEX);
	cr_assert_eq(a.nruns, b.nruns, "flat %zu runs, packed %zu", a.nruns, b.nruns);
	for (size_t i = 0; i < a.nruns; i++)
		cr_expect_eq(memcmp(&a.runs[i], &b.runs[i], sizeof a.runs[i]), 0,
			     "run %zu: flat %#llx+%u kind %u block %u/%u, packed %#llx+%u kind %u "
			     "block %u/%u",
			     i, (unsigned long long)a.runs[i].start, a.runs[i].npages, a.runs[i].kind,
			     a.runs[i].block, a.runs[i].block_page, (unsigned long long)b.runs[i].start,
			     b.runs[i].npages, b.runs[i].kind, b.runs[i].block, b.runs[i].block_page);
	/* Every run, the one 2^35 pages away included, in at most 4 bytes
	 * on average; the flat one takes 24. */
	uint64_t isz = b.h.sect[CKPT__SEC_INDEX].size;
	cr_expect_leq(isz, 4 * b.nruns, "%llu bytes for %zu runs", (unsigned long long)isz,
		      b.nruns);
	cr_expect_eq(a.h.sect[CKPT__SEC_INDEX].size, 24 * a.nruns);
	/* The same bytes come back for every page stored. */
	ZSTD_DCtx *d = ckpt__zstd_dctx();
	static unsigned char ba[64 * PS], bb[64 * PS], st[64 * PS];
	for (size_t i = 0; i < b.nruns; i++) {
		const struct ckpt__frun *r = &b.runs[i];
		if (r->kind != CKPT__RK_DATA)
			continue;
		cr_assert_eq(ckpt__snap_block(&a, d, a.runs[i].block, ba, st), 0);
		cr_assert_eq(ckpt__snap_block(&b, d, r->block, bb, st), 0);
		cr_expect_eq(memcmp(ba + (size_t)a.runs[i].block_page * PS,
				    bb + (size_t)r->block_page * PS, (size_t)r->npages * PS),
			     0, "run %zu reads back differently", i);
	}
	ZSTD_freeDCtx(d);
	ckpt__snap_close(&a);
	ckpt__snap_close(&b);
	free(flat);
	free(packed);
}

/* ---- blocks --------------------------------------------------------------------------- */

/*
 * A mapping with 8 data pages in a row or more has blocks of its own, and
 * the few pages of small mappings share one: a big array of noise and a
 * program's small, compressible mappings never share a block, which zstd
 * would compress for the sake of the small ones, so that a reader wanting
 * one page of noise would decompress it whole.  Mapping A holds 70 pages
 * of noise, every other page; B and C 3 and 2 pages of text; D 10.
 */
Test(index, a_big_mapping_has_blocks_of_its_own_and_small_ones_share)
{
	static unsigned char noise[70][PS], text[15][PS];
	uint64_t x = 0x2545f4914f6cdd1dull;
	for (int p = 0; p < 70; p++)
		for (int i = 0; i < PS; i++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			noise[p][i] = (unsigned char)(x >> 56);
		}
	for (int p = 0; p < 15; p++)
		for (int i = 0; i < PS; i += 32)
			snprintf((char *)text[p] + i, 32, "page %2d of a small mapping ..", p);
	const uint64_t at[4] = {0x7f1000000000ull, 0x7f2000000000ull, 0x7f3000000000ull,
				0x7f4000000000ull};
	struct ckpt__wmap m[4];
	for (int i = 0; i < 4; i++)
		m[i] = (struct ckpt__wmap){.start = at[i], .end = at[i] + 256 * PS, .born = 1,
					   .prot = 3, .flags = CKPT__MF_ANON,
					   .kind = CKPT__MK_TRACKED, .page_shift = 12, .name = ""};
	struct ckpt__wrun r[73];
	size_t n = 0;
	for (int p = 0; p < 70; p++)
		r[n++] = (struct ckpt__wrun){at[0] + 2ull * p * PS, 1, CKPT__RK_DATA,
					     (uintptr_t)noise[p]};
	r[n++] = (struct ckpt__wrun){at[1], 3, CKPT__RK_DATA, (uintptr_t)text[0]};
	r[n++] = (struct ckpt__wrun){at[2], 2, CKPT__RK_DATA, (uintptr_t)text[3]};
	r[n++] = (struct ckpt__wrun){at[3], 10, CKPT__RK_DATA, (uintptr_t)text[5]};
	size_t len;
	unsigned char *file = write_snap("blocks", m, 4, r, n, 0, &len);
	struct ckpt__snap s;
	cr_assert_eq(ckpt__snap_parse(&s, file, len, "blocks"), 0, "%s", ckpt_last_error());

	/* Each block: the mappings its pages come from (a bit each). */
	const unsigned want_maps[4] = {1, 1, 2 | 4, 8}, want_pages[4] = {64, 6, 5, 10};
	const unsigned want_codec[4] = {CKPT__CODEC_RAWP, CKPT__CODEC_RAWP, CKPT__CODEC_ZSTD,
					CKPT__CODEC_ZSTD};
	cr_assert_eq(s.nblocks, 4, "%zu blocks, not 4", s.nblocks);
	unsigned maps_of[4] = {0};
	for (size_t i = 0; i < s.nruns; i++)
		for (int k = 0; k < 4; k++)
			if (s.runs[i].start >= at[k] && s.runs[i].start < at[k] + 256 * PS)
				maps_of[s.runs[i].block] |= 1u << k;
	for (int b = 0; b < 4; b++) {
		cr_expect_eq(maps_of[b], want_maps[b], "block %d holds pages of mappings %#x, not %#x",
			     b, maps_of[b], want_maps[b]);
		cr_expect_eq(s.blocks[b].rsize, want_pages[b] * PS, "block %d: %u bytes of pages", b,
			     s.blocks[b].rsize);
		cr_expect_eq(s.blocks[b].codec, want_codec[b], "block %d: codec %u, not %u", b,
			     s.blocks[b].codec, want_codec[b]);
	}
	/* And every page reads back. */
	ZSTD_DCtx *d = ckpt__zstd_dctx();
	static unsigned char out[64 * PS], st[64 * PS];
	for (size_t i = 0; i < s.nruns; i++) {
		const struct ckpt__frun *q = &s.runs[i];
		cr_assert_eq(ckpt__snap_block(&s, d, q->block, out, st), 0, "%s", ckpt_last_error());
		const unsigned char *from = i < 70 ? noise[i] : (const unsigned char *)r[i].src;
		cr_expect_eq(memcmp(out + (size_t)q->block_page * PS, from, (size_t)q->npages * PS), 0,
			     "run %zu reads back differently", i);
	}
	ZSTD_freeDCtx(d);
	ckpt__snap_close(&s);
	free(file);
}

/* ---- malformed packed indexes ------------------------------------------------------ */

/*
 * The packed file with its index replaced by `idx` (len bytes): the new
 * section is put after the others, where the footer was, the header and
 * footer made to agree again, so that only the index itself is wrong.
 */
static unsigned char *with_index(const unsigned char *file, size_t flen, const void *idx,
				 size_t len, size_t *out_len)
{
	struct ckpt__ffooter f;
	size_t body = flen - sizeof f;
	*out_len = body + len + sizeof f;
	unsigned char *b = malloc(*out_len);
	memcpy(b, file, body);
	memcpy(b + body, idx, len);
	struct ckpt__fhdr h;
	memcpy(&h, b, sizeof h);
	h.sect[CKPT__SEC_INDEX] = (struct ckpt__fsect){body, len, ckpt__xxh64(idx, len, 0)};
	h.hash = ckpt__xxh64(&h, offsetof(struct ckpt__fhdr, hash), 0);
	memcpy(b, &h, sizeof h);
	memset(&f, 0, sizeof f);
	memcpy(f.magic, CKPT__FOOTER_MAGIC, 8);
	f.file_size = *out_len;
	f.header_hash = h.hash;
	f.hash = ckpt__xxh64(&f, offsetof(struct ckpt__ffooter, hash), 0);
	memcpy(b + body + len, &f, sizeof f);
	return b;
}

/* LEB128 of v at p; returns the bytes written. */
static size_t leb(unsigned char *p, uint64_t v)
{
	size_t n = 0;
	do {
		p[n] = v & 0x7f;
		v >>= 7;
		p[n] |= v ? 0x80 : 0;
		n++;
	} while (v);
	return n;
}

/* The packed file's own index, re-encoded from its runs (as the writer
 * does), into idx: returns its length.  Checks the encoding first. */
static size_t encode(const struct ckpt__snap *s, unsigned char *idx)
{
	size_t n = 0;
	uint64_t end = 0;
	for (size_t i = 0; i < s->nruns; i++) {
		n += leb(idx + n, (s->runs[i].start - end) / PS << 2 | s->runs[i].kind);
		n += leb(idx + n, s->runs[i].npages - 1u);
		end = s->runs[i].start + (uint64_t)s->runs[i].npages * PS;
	}
	return n;
}

static unsigned char idx[64 * 1024], bad[64 * 1024];

/* Parses the file with index bad[0..len): must be refused, saying `says`. */
static void refused(const unsigned char *file, size_t flen, size_t len, const char *what,
		    const char *says)
{
	size_t blen;
	unsigned char *b = with_index(file, flen, bad, len, &blen);
	struct ckpt__snap s;
	ckpt__clear_error();
	int rc = ckpt__snap_parse(&s, b, blen, "snap-00000001.ckpt");
	cr_expect_eq(rc, CKPT_ECORRUPT, "%s: got %s (%s)", what, ckpt_err_name(rc),
		     ckpt_last_error());
	cr_expect(strstr(ckpt_last_error(), says), "%s: says \"%s\", not \"%s\"", what,
		  ckpt_last_error(), says);
	cr_expect(strstr(ckpt_last_error(), "snap-00000001.ckpt"), "%s: the file is not named",
		  what);
	if (rc == 0)
		ckpt__snap_close(&s);
	free(b);
}

Test(index, a_malformed_packed_index_is_refused_with_a_clear_error)
{
	size_t plen;
	unsigned char *file = write_base(0, &plen);
	struct ckpt__snap s;
	cr_assert_eq(ckpt__snap_parse(&s, file, plen, "packed"), 0, "%s", ckpt_last_error());
	size_t n = encode(&s, idx), nruns = s.nruns;
	cr_assert_eq(n, s.h.sect[CKPT__SEC_INDEX].size, "the encoding differs from the writer's");
	cr_assert_eq(memcmp(idx, s.mem + s.h.sect[CKPT__SEC_INDEX].offset, n), 0,
		     "the encoding differs from the writer's");
	/* Unchanged, moved to the end: still read. */
	{
		size_t blen;
		unsigned char *b = with_index(file, plen, idx, n, &blen);
		struct ckpt__snap t;
		cr_expect_eq(ckpt__snap_parse(&t, b, blen, "moved"), 0, "%s", ckpt_last_error());
		if (t.nruns)
			ckpt__snap_close(&t);
		free(b);
	}

	/* Cut in the middle of a number, and after a run's first number. */
	memcpy(bad, idx, n);
	bad[n - 1] |= 0x80;
	refused(file, plen, n, "truncated number", "is cut short");
	refused(file, plen, n - 1, "half a run", "is cut short");
	/* A number of 11 bytes, and one of 10 past 64 bits. */
	size_t k = 0;
	for (int i = 0; i < 10; i++)
		bad[k++] = 0x81;
	bad[k++] = 0x01;
	bad[k++] = 0x00;
	refused(file, plen, k, "11-byte number", "past 64 bits");
	k = 0;
	for (int i = 0; i < 9; i++)
		bad[k++] = 0xff;
	bad[k++] = 0x02;
	bad[k++] = 0x00;
	refused(file, plen, k, "65-bit number", "past 64 bits");
	/* Kind 0. */
	memcpy(bad, idx, n);
	bad[0] &= (unsigned char)~3u;
	refused(file, plen, n, "kind 0", "run 0: unknown kind 0");

	/* The runs moved 5 pages down, the first one now before the first
	 * mapping (the others follow it: each starts from the end of the
	 * one before). */
	k = leb(bad, (BASE_ADDR / PS - 5) << 2 | CKPT__RK_DATA);
	size_t first = 0;
	while (idx[first++] & 0x80)
		;
	memcpy(bad + k, idx + first, n - first);
	refused(file, plen, k + n - first, "before the first mapping",
		"run 0 (0x7effffffb000): not inside one mapping");
	/* After the last run (one page at FAR_ADDR + 3 pages): a run at the
	 * end of its mapping, one across it, a gap past 2^64, 2^32 pages. */
	memcpy(bad, idx, n);
	k = n + leb(bad + n, 12 << 2 | CKPT__RK_ZERO);
	k += leb(bad + k, 0);
	refused(file, plen, k, "past the last mapping", "not inside one mapping");
	k = n + leb(bad + n, 11 << 2 | CKPT__RK_ZERO);
	k += leb(bad + k, 1);
	refused(file, plen, k, "across a mapping's end", "not inside one mapping");
	k = n + leb(bad + n, (UINT64_MAX >> 2) << 2 | CKPT__RK_ZERO);
	k += leb(bad + k, 0);
	refused(file, plen, k, "a gap past 2^64", "past the end of the address space");
	k = n + leb(bad + n, 0 << 2 | CKPT__RK_ZERO);
	k += leb(bad + k, UINT32_MAX);
	refused(file, plen, k, "2^32 pages", "4294967296 pages");

	/* Data runs against the blocks: one page more than they hold, the
	 * last page of them left out, none at all, and a run across the end
	 * of a block (the 150-page stretch starts in block 0 after 20 pages:
	 * its first part ends the block, one page longer it crosses). */
	k = n + leb(bad + n, 0 << 2 | CKPT__RK_DATA);
	k += leb(bad + k, 0);
	refused(file, plen, k, "a page past the blocks", "past the last block");
	/* Where the last run (the far page) starts in the index. */
	size_t last = 0;
	for (size_t i = 0; i + 1 < nruns; i++) {
		while (idx[last++] & 0x80)
			;
		while (idx[last++] & 0x80)
			;
	}
	cr_assert_eq(s.runs[nruns - 1].start, FAR_ADDR + 3 * PS);
	memcpy(bad, idx, n);
	refused(file, plen, last, "a block page left over", "before the end of the data");
	refused(file, plen, 0, "no runs", "before the end of the data");
	uint64_t end = 0;
	uint32_t b0 = s.blocks[0].rsize / PS;
	char says[64] = "";
	k = 0;
	for (size_t i = 0; i < nruns; i++) {
		const struct ckpt__frun *r = &s.runs[i];
		int longer = r->kind == CKPT__RK_DATA && r->block == 0 && r->npages > 1 &&
			     r->block_page + r->npages == b0;
		if (longer)
			snprintf(says, sizeof says, "pages %u+%u outside block 0", r->block_page,
				 r->npages + 1);
		k += leb(bad + k, (r->start - end) / PS << 2 | r->kind);
		k += leb(bad + k, r->npages - 1u + (longer ? 1 : 0));
		end = r->start + (uint64_t)(r->npages + (longer ? 1 : 0)) * PS;
	}
	cr_assert(says[0], "no data run ends block 0");
	refused(file, plen, k, "a run across a block's end", says);
	/* Runs cannot overlap or go backwards: each one starts a gap (0 or
	 * more pages) after the end of the one before, so no encoding says
	 * that; what would have to be checked in the flat index is not there. */
	ckpt__snap_close(&s);
	free(file);
}
