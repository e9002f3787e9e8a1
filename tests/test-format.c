/*
 * test-format.c - the reader against the golden files of tests/corrupt/:
 * the sound chain reads back exactly, each damaged file is refused with a
 * clear error.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "ckpt.h"
#include "error.h"
#include "snap-read.h"
#include "xxhash.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define BASE_ADDR 0x7f0000000000ull

static char golden_dir[64];

static void golden_remove(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", golden_dir);
	(void)!system(cmd);
}

/* A golden file or chain, from a private copy of tests/corrupt: a reader
 * refuses a chain directory others may write into, which a checkout made
 * with a umask of 002 would be. */
static const char *golden(const char *name)
{
	static char path[1024];
	if (!golden_dir[0]) {
		const char *src = getenv("top_srcdir");
		char cmd[2048];
		snprintf(golden_dir, sizeof golden_dir, "/tmp/ckpt-golden-XXXXXX");
		cr_assert(mkdtemp(golden_dir), "mkdtemp: %s", strerror(errno));
		snprintf(cmd, sizeof cmd, "cp -R '%s/tests/corrupt/.' '%s' && chmod -R go-w '%s'",
			 src ? src : "..", golden_dir, golden_dir);
		cr_assert_eq(system(cmd), 0, "%s", cmd);
		atexit(golden_remove);
	}
	snprintf(path, sizeof path, "%s/%s", golden_dir, name);
	return path;
}

static unsigned char *slurp(const char *name, size_t *len)
{
	FILE *f = fopen(golden(name), "rb");
	cr_assert(f, "missing golden file %s", golden(name));
	fseek(f, 0, SEEK_END);
	*len = (size_t)ftell(f);
	rewind(f);
	unsigned char *b = malloc(*len + 1);
	cr_assert_eq(fread(b, 1, *len, f), *len);
	fclose(f);
	return b;
}

Test(format, the_good_chain_reads_back_exactly)
{
	struct ckpt__chain c;
	cr_assert_eq(ckpt__chain_open(&c, golden("good"), -1), 0, "%s", ckpt_last_error());
	cr_assert_eq(c.n, 2);
	unsigned char page[4096];
	for (int p = 0; p < 8; p++) {
		cr_assert_eq(ckpt__chain_page(&c, 1, BASE_ADDR + (uint64_t)p * 4096, page), 0, "%s",
			     ckpt_last_error());
		for (int i = 0; i < 4096; i += 97)
			cr_assert_eq(page[i], (unsigned char)(p * 31 + i % 251), "page %d byte %d", p, i);
	}
	/* Snapshot 2 changed page 3 (to the content of page 7) and zeroed 5. */
	cr_assert_eq(ckpt__chain_page(&c, 2, BASE_ADDR + 3 * 4096, page), 0);
	cr_expect_eq(page[100], (unsigned char)(7 * 31 + 100 % 251));
	cr_assert_eq(ckpt__chain_page(&c, 2, BASE_ADDR + 5 * 4096, page), 0);
	cr_expect_eq(page[100], 0);
	cr_assert_eq(ckpt__chain_page(&c, 2, BASE_ADDR + 4 * 4096, page), 0);
	cr_expect_eq(page[100], (unsigned char)(4 * 31 + 100 % 251), "an unchanged page");
	cr_expect_eq(ckpt__chain_page(&c, 2, BASE_ADDR + 20 * 4096, page), CKPT_ENOENT);
	ckpt__chain_close(&c);
	cr_expect_eq(ckpt_chain_verify(golden("good"), NULL), 0, "%s", ckpt_last_error());
}

struct bad {
	const char *file;
	int code;
	const char *says;
};

static const struct bad bads[] = {
	{"truncated.ckpt", CKPT_ECORRUPT, "no footer"},
	{"empty.ckpt", CKPT_ECORRUPT, "truncated"},
	{"flipped-header.ckpt", CKPT_ECORRUPT, "header hash mismatch"},
	{"flipped-index.ckpt", CKPT_ECORRUPT, "index section hash mismatch"},
	{"flipped-footer.ckpt", CKPT_ECORRUPT, "footer hash mismatch"},
	{"wrong-magic.ckpt", CKPT_ECORRUPT, "not a ckpt snapshot"},
	{"version-2.ckpt", CKPT_EVERSION, "format version 2"},
	{"run-outside-mapping.ckpt", CKPT_ECORRUPT, "not inside one mapping"},
	{"block-out-of-range.ckpt", CKPT_ECORRUPT, "block 99"},
	{"huge-section.ckpt", CKPT_ECORRUPT, "mappings section: bad place or size"},
	{"base-with-parent.ckpt", CKPT_ECORRUPT, "with parent 7"},
	{"oversized/snap-00000001.ckpt", CKPT_ECORRUPT, "block 0: 327680 bytes stored for 262144"},
	{"raw-bytes.ckpt", CKPT_ECORRUPT, "262144 bytes of pages, the header says 266240"},
};

Test(format, each_damaged_file_is_refused_with_a_clear_error)
{
	for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
		size_t len;
		unsigned char *b = slurp(bads[i].file, &len);
		struct ckpt__snap s;
		ckpt__clear_error();
		int rc = ckpt__snap_parse(&s, b, len, bads[i].file);
		cr_expect_eq(rc, bads[i].code, "%s: got %s (%s)", bads[i].file, ckpt_err_name(rc),
			     ckpt_last_error());
		cr_expect(strstr(ckpt_last_error(), bads[i].says), "%s: says \"%s\", not \"%s\"",
			  bads[i].file, ckpt_last_error(), bads[i].says);
		cr_expect(strstr(ckpt_last_error(), bads[i].file), "%s: the message does not name it",
			  bads[i].file);
		if (rc == 0)
			ckpt__snap_close(&s);
		free(b);
	}
}

Test(format, a_damaged_block_is_found_when_read)
{
	size_t len;
	unsigned char *b = slurp("flipped-block.ckpt", &len);
	struct ckpt__snap s;
	cr_assert_eq(ckpt__snap_parse(&s, b, len, "flipped-block.ckpt"), 0, "%s",
		     ckpt_last_error());
	ZSTD_DCtx *d = ckpt__zstd_dctx();
	static char out[64 * 4096], stored[64 * 4096];
	int rc = ckpt__snap_block(&s, d, 0, out, stored);
	cr_expect_eq(rc, CKPT_ECORRUPT);
	cr_expect(strstr(ckpt_last_error(), "block 0: hash mismatch"), "%s", ckpt_last_error());
	ZSTD_freeDCtx(d);
	ckpt__snap_close(&s);
	free(b);
}

Test(format, a_sound_file_from_another_executable_still_reads)
{
	/* Refused by a restore (another build-id), not by the reader. */
	size_t len;
	unsigned char *b = slurp("other-executable.ckpt", &len);
	struct ckpt__snap s;
	cr_assert_eq(ckpt__snap_parse(&s, b, len, "other-executable.ckpt"), 0, "%s",
		     ckpt_last_error());
	cr_expect_eq(memcmp(s.strings + s.h.bid_off, "other-build-id-00099", 20), 0);
	ckpt__snap_close(&s);
	free(b);
}

Test(format, chains_that_do_not_hold_together)
{
	struct ckpt__chain c;
	int rc = ckpt__chain_open(&c, golden("foreign"), -1);
	cr_expect_eq(rc, CKPT_EFOREIGN, "foreign: %s", ckpt_last_error());
	cr_expect(strstr(ckpt_last_error(), "another chain"), "%s", ckpt_last_error());
	ckpt__clear_error();
	rc = ckpt__chain_open(&c, golden("pagesize"), -1);
	cr_expect_eq(rc, CKPT_EFOREIGN, "pagesize: %s", ckpt_last_error());
	cr_expect(strstr(ckpt_last_error(), "page size"), "%s", ckpt_last_error());
	ckpt__clear_error();
	rc = ckpt__chain_open(&c, golden("gap"), -1);
	cr_expect_eq(rc, CKPT_ENOENT, "gap: %s", ckpt_last_error());
	cr_expect(strstr(ckpt_last_error(), "snap-00000002.ckpt is missing"), "%s",
		  ckpt_last_error());
	cr_expect_neq(ckpt_chain_verify(golden("foreign"), NULL), 0);
	cr_expect_neq(ckpt_chain_verify(golden("gap"), NULL), 0);
}

Test(format, every_truncation_of_a_good_file_is_refused)
{
	size_t len;
	unsigned char *b = slurp("good/snap-00000001.ckpt", &len);
	for (size_t cut = 0; cut < len; cut += 7) {
		struct ckpt__snap s;
		int rc = ckpt__snap_parse(&s, b, cut, "cut");
		cr_assert_eq(rc, CKPT_ECORRUPT, "a file cut at %zu of %zu bytes was accepted", cut, len);
	}
	free(b);
}

Test(format, every_single_bit_flip_in_the_metadata_is_refused)
{
	/* Everything but the page data is covered by a hash that the reader
	 * checks when it opens the file. */
	size_t len;
	unsigned char *b = slurp("good/snap-00000001.ckpt", &len);
	struct ckpt__fhdr h;
	memcpy(&h, b, sizeof h);
	for (size_t off = 0; off < len; off++) {
		if (off >= h.data_offset && off < h.data_offset + h.data_size)
			continue;
		for (int bit = 0; bit < 8; bit += 3) {
			b[off] ^= (unsigned char)(1 << bit);
			struct ckpt__snap s;
			int rc = ckpt__snap_parse(&s, b, len, "flip");
			b[off] ^= (unsigned char)(1 << bit);
			if (rc == 0 && off >= 224 && off < 248)
				ckpt__snap_close(&s); /* reserved header bytes... are hashed too */
			cr_assert_neq(rc, 0, "a flip of bit %d at %zu was accepted", bit, off);
		}
	}
	free(b);
}

/* ---- block sizes against a reader's one-block buffer ---------------------------- */

/* The golden files with blocks: those the reader opens, what reading their
 * blocks gives, and one it must refuse for a block's size. */
static const struct {
	const char *file;
	int open, read;
	const char *says;
} with_blocks[] = {
	{"good/snap-00000001.ckpt", 0, 0, NULL},
	{"good/snap-00000002.ckpt", 0, 0, NULL},
	{"full/snap-00000001.ckpt", 0, 0, NULL},
	{"full/snap-00000002.ckpt", 0, 0, NULL},
	{"other-executable.ckpt", 0, 0, NULL},
	{"flipped-block.ckpt", 0, CKPT_ECORRUPT, "block 0: hash mismatch"},
	{"trailing-frame.ckpt", 0, CKPT_ECORRUPT, "block 0: not one zstd frame"},
	{"oversized/snap-00000001.ckpt", CKPT_ECORRUPT, 0, NULL},
};

static unsigned char full_byte(size_t off)
{
	return (unsigned char)(off / 4096 + off % 4096 % 13);
}

Test(format, no_block_is_read_past_a_one_block_buffer)
{
	/* Buffers of exactly what snap-read.h asks for, from malloc so that
	 * AddressSanitizer sees a byte past them: page size x 64 for the
	 * pages and for the stored bytes, csize for a restore's copy. */
	ZSTD_DCtx *d = ckpt__zstd_dctx();
	cr_assert(d);
	for (size_t i = 0; i < sizeof with_blocks / sizeof with_blocks[0]; i++) {
		const char *name = with_blocks[i].file;
		size_t len;
		unsigned char *b = slurp(name, &len);
		struct ckpt__snap s;
		ckpt__clear_error();
		int rc = ckpt__snap_parse(&s, b, len, name);
		cr_expect_eq(rc, with_blocks[i].open, "%s: opens with %s (%s)", name,
			     ckpt_err_name(rc), ckpt_last_error());
		if (rc) {
			free(b);
			continue;
		}
		size_t bufsz = (size_t)s.h.page_size * CKPT__BLOCK_PAGES;
		unsigned char *out = malloc(bufsz), *stored = malloc(bufsz);
		cr_assert(out && stored);
		for (uint32_t k = 0; k < s.nblocks; k++) {
			cr_expect_leq(s.blocks[k].csize, bufsz, "%s: block %u", name, k);
			unsigned char *copy = malloc(s.blocks[k].csize);
			cr_assert(copy);
			int got[3];
			ckpt__clear_error();
			got[0] = ckpt__snap_block(&s, d, k, out, stored);
			got[1] = ckpt__snap_block(&s, d, k, out, NULL);
			got[2] = ckpt__snap_block_stored(&s, k, copy);
			free(copy);
			for (int j = 0; j < 3; j++)
				cr_expect_eq(got[j], with_blocks[i].read,
					     "%s: block %u, reader %d: %s (%s)", name, k, j,
					     ckpt_err_name(got[j]), ckpt_last_error());
			if (with_blocks[i].says)
				cr_expect(strstr(ckpt_last_error(), with_blocks[i].says),
					  "%s: says %s", name, ckpt_last_error());
		}
		if (!strcmp(name, "full/snap-00000001.ckpt")) {
			/* Its one block fills the buffer: 64 pages, exactly. */
			cr_expect_eq(s.nblocks, 1);
			cr_expect_eq(s.blocks[0].rsize, bufsz);
			cr_expect_eq(s.blocks[0].codec, CKPT__CODEC_ZSTD);
			cr_assert_eq(ckpt__snap_block(&s, d, 0, out, stored), 0);
			for (size_t off = 0; off < bufsz; off++)
				if (out[off] != full_byte(off))
					cr_assert_fail("byte %zu is %u", off, out[off]);
		}
		free(out);
		free(stored);
		ckpt__snap_close(&s);
		free(b);
	}
	ZSTD_freeDCtx(d);
}

static int runs_seen(const ckpt_page_run *run, void *arg)
{
	*(size_t *)arg += run->npages;
	return 0;
}

/* A copy of the golden chain `name` in a new directory (0700, the files
 * 0600, as ckpt makes them).  Returns dir. */
static char *chain_copy(const char *name, char *dir)
{
	strcpy(dir, "/tmp/ckpt-format-XXXXXX");
	cr_assert(mkdtemp(dir));
	for (int id = 1; id <= 2; id++) {
		char file[64], path[1024];
		snprintf(file, sizeof file, "%s/" CKPT__SNAP_FMT, name, (unsigned long long)id);
		size_t len;
		unsigned char *b = slurp(file, &len);
		snprintf(path, sizeof path, "%s/" CKPT__SNAP_FMT, dir, (unsigned long long)id);
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		cr_assert(fd >= 0, "%s", path);
		cr_assert_eq(write(fd, b, len), (ssize_t)len);
		close(fd);
		free(b);
	}
	return dir;
}

static void chain_remove(const char *dir)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	(void)!system(cmd);
}

Test(format, an_oversized_block_is_refused_by_every_entry_point)
{
	char dir[32];
	chain_copy("oversized", dir);
	/* The public view of the chain refuses it when it opens.  Were it
	 * opened, reading a page of the block or a diff must still refuse. */
	ckpt_chain *ch = NULL;
	ckpt__clear_error();
	int rc = ckpt_chain_open(&ch, dir);
	cr_expect_eq(rc, CKPT_ECORRUPT, "ckpt_chain_open: %s (%s)", ckpt_err_name(rc),
		     ckpt_last_error());
	cr_expect(strstr(ckpt_last_error(), "snap-00000001.ckpt: block 0: "), "says: %s",
		  ckpt_last_error());
	if (rc == 0) {
		static unsigned char page[4096];
		rc = ckpt_chain_read(ch, 1, BASE_ADDR, page, sizeof page);
		cr_expect_eq(rc, CKPT_ECORRUPT, "ckpt_chain_read: %s", ckpt_err_name(rc));
		size_t n = 0;
		rc = ckpt_chain_diff(ch, 1, 2, runs_seen, &n);
		cr_expect_eq(rc, CKPT_ECORRUPT, "ckpt_chain_diff: %s", ckpt_err_name(rc));
		ckpt_chain_close(ch);
	}
	ckpt__clear_error();
	size_t checked = 99;
	rc = ckpt_chain_verify(dir, &checked);
	cr_expect_eq(rc, CKPT_ECORRUPT, "ckpt_chain_verify: %s (%s)", ckpt_err_name(rc),
		     ckpt_last_error());
	cr_expect_eq(checked, 0);
	cr_expect(strstr(ckpt_last_error(), "snap-00000001.ckpt: block 0: "), "says: %s",
		  ckpt_last_error());
	/* Compaction (2 made the base) reads every page of 1: refused, and
	 * the chain is left as it was. */
	ckpt__clear_error();
	size_t folded = 99;
	rc = ckpt_chain_compact(dir, 0, &folded);
	cr_expect_eq(rc, CKPT_ECORRUPT, "ckpt_chain_compact: %s (%s)", ckpt_err_name(rc),
		     ckpt_last_error());
	cr_expect_eq(folded, 0);
	char path[128];
	snprintf(path, sizeof path, "%s/snap-00000001.ckpt", dir);
	struct stat st;
	cr_expect(stat(path, &st) == 0 && st.st_size == 328136, "snapshot 1 was changed");
	chain_remove(dir);
}

Test(format, a_block_that_fills_the_buffer_reads_through_every_entry_point)
{
	/* The largest block a sound file has: 64 pages. */
	char dir[32];
	chain_copy("full", dir);
	ckpt_chain *ch;
	cr_assert_eq(ckpt_chain_open(&ch, dir), 0, "%s", ckpt_last_error());
	static unsigned char all[64 * 4096];
	for (uint64_t id = 1; id <= 2; id++) {
		cr_assert_eq(ckpt_chain_read(ch, id, BASE_ADDR, all, sizeof all), 0, "%s",
			     ckpt_last_error());
		for (size_t off = 0; off < sizeof all; off++) {
			/* 2 changed page 5 to the content of golden page 7. */
			unsigned char want = id == 2 && off / 4096 == 5
						     ? (unsigned char)(7 * 31 + off % 4096 % 251)
						     : full_byte(off);
			if (all[off] != want)
				cr_assert_fail("snapshot %llu: byte %zu is %u, not %u",
					       (unsigned long long)id, off, all[off], want);
		}
	}
	size_t n = 0;
	cr_expect_eq(ckpt_chain_diff(ch, 1, 2, runs_seen, &n), 0, "%s", ckpt_last_error());
	cr_expect_eq(n, 1, "%zu pages differ", n);
	ckpt_chain_close(ch);
	size_t checked = 0;
	cr_expect_eq(ckpt_chain_verify(dir, &checked), 0, "%s", ckpt_last_error());
	cr_expect_eq(checked, 2);
	size_t folded = 0;
	cr_expect_eq(ckpt_chain_compact(dir, 0, &folded), 0, "%s", ckpt_last_error());
	cr_expect_eq(folded, 1);
	chain_remove(dir);
}

Test(format, a_snapshot_of_another_page_size_added_to_an_open_chain_is_not_read)
{
	/* A writer adds its newest snapshot to the chain it has open without
	 * opening the chain again; a file of another page size (16 KiB pages:
	 * blocks up to 1 MiB) must not be read into buffers made for 4 KiB. */
	struct ckpt__chain c;
	cr_assert_eq(ckpt__chain_open(&c, golden("good"), -1), 0, "%s", ckpt_last_error());
	cr_assert_eq(c.n, 2);
	ckpt__snap_close(&c.snaps[1]);
	int dfd = open(golden("pagesize"), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert(dfd >= 0);
	cr_assert_eq(ckpt__snap_open(&c.snaps[1], dfd, "snap-00000002.ckpt"), 0, "%s",
		     ckpt_last_error());
	close(dfd);
	cr_assert_eq(c.snaps[1].h.page_size, 16384);
	unsigned char page[16384];
	ckpt__clear_error();
	int rc = ckpt__chain_page(&c, 2, BASE_ADDR, page);
	cr_expect_eq(rc, CKPT_EFOREIGN, "%s (%s)", ckpt_err_name(rc), ckpt_last_error());
	cr_expect(strstr(ckpt_last_error(), "page size 16384"), "says: %s", ckpt_last_error());
	ckpt__chain_close(&c);
}

/* ---- the hash ---------------------------------------------------------------------------- */

Test(format, xxh64_gives_the_published_values)
{
	/* From the reference implementation's test vectors. */
	cr_expect_eq(ckpt__xxh64("", 0, 0), 0xEF46DB3751D8E999ull);
	cr_expect_eq(ckpt__xxh64("abc", 3, 0), 0x44BC2CF5AD770999ull);
}

Test(format, xxh64_over_pieces_equals_xxh64_over_them_laid_end_to_end)
{
	static unsigned char buf[64 * 1024];
	uint64_t s = 0x9e3779b97f4a7c15ull;
	for (size_t i = 0; i < sizeof buf; i++) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		buf[i] = (unsigned char)s;
	}
	/* Pieces of 32 bytes to 16 KiB, cut at many places. */
	for (size_t cut = 32; cut < sizeof buf; cut += 4096 + 96) {
		struct iovec iov[3] = {{buf, cut}, {buf + cut, 32}, {buf + cut + 32, 0}};
		size_t total = cut + 32;
		if (total + 4096 <= sizeof buf) {
			iov[2].iov_len = 4096;
			total += 4096;
		}
		cr_expect_eq(ckpt__xxh64_pieces(iov, 3, 7), ckpt__xxh64(buf, total, 7), "cut at %zu",
			     cut);
	}
	struct iovec none = {buf, 0};
	cr_expect_eq(ckpt__xxh64_pieces(&none, 1, 0), ckpt__xxh64("", 0, 0));
}
