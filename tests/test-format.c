/*
 * test-format.c - the reader against the golden files of tests/corrupt/:
 * the sound chain reads back exactly, each damaged file is refused with a
 * clear error.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "ckpt.h"
#include "error.h"
#include "snap-read.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BASE_ADDR 0x7f0000000000ull

static const char *golden(const char *name)
{
	static char path[1024];
	const char *src = getenv("top_srcdir");
	snprintf(path, sizeof path, "%s/tests/corrupt/%s", src ? src : "..", name);
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
