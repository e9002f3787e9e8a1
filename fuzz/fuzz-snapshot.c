/*
 * fuzz/fuzz-snapshot.c - libFuzzer target over the snapshot reader.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The input is one snapshot file.  Whatever the bytes, the reader must
 * refuse them or hand out only what it checked: every block it accepted
 * fits the buffers a reader holds and decompresses to its stated size,
 * every run it accepted points inside its mapping and its block.  Built
 * with FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, which lets inputs through
 * the hashes to the checks behind them (see scripts/fuzz.sh).
 *
 * The buffers are the size the readers of the library use, no larger, and
 * come from malloc for each input: AddressSanitizer reports the first byte
 * written past one.  Blocks are read the three ways the library reads them:
 * into the chain's two one-block buffers (ckpt_chain_read, diff, compact),
 * through a temporary copy (no stored buffer given), and as stored into a
 * buffer of exactly its size (a restore).
 */
#include "snap-read.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static ZSTD_DCtx *d;
	if (!d && !(d = ckpt__zstd_dctx()))
		abort();
	struct ckpt__snap s;
	if (ckpt__snap_parse(&s, data, size, "fuzz") != 0)
		return 0;
	/* What snap-read.h asks of a caller: page size x 64 bytes each. */
	size_t bufsz = (size_t)s.h.page_size * CKPT__BLOCK_PAGES;
	unsigned char *out = malloc(bufsz), *stored = malloc(bufsz);
	if (!out || !stored)
		abort();
	for (size_t b = 0; b < s.nblocks && b < 64; b++) {
		const struct ckpt__fblock *blk = &s.blocks[b];
		int rc = ckpt__snap_block(&s, d, (uint32_t)b, out, stored);
		if (ckpt__snap_block(&s, d, (uint32_t)b, out, NULL) != rc)
			abort(); /* the same block, the same verdict */
		unsigned char *copy = malloc(blk->csize);
		if (!copy)
			abort();
		int rc2 = ckpt__snap_block_stored(&s, (uint32_t)b, copy);
		free(copy);
		if (rc == 0 && rc2 != 0)
			abort(); /* decompressed, yet refused as stored */
		if (blk->csize > bufsz || blk->rsize > bufsz)
			abort(); /* the checks promised a block fits */
	}
	for (size_t i = 0; i < s.nruns && i < 256; i++) {
		const struct ckpt__frun *r = &s.runs[i];
		const struct ckpt__frun *again = ckpt__snap_run_at(&s, r->start);
		const struct ckpt__fmap *m = ckpt__snap_map_at(&s, r->start);
		if (again != r || !m)
			abort(); /* the checks promised both */
		if (r->kind == CKPT__RK_DATA &&
		    ((uint64_t)r->block_page + r->npages) * s.h.page_size > s.blocks[r->block].rsize)
			abort(); /* a run's pages lie inside its block */
	}
	char name[64];
	for (size_t i = 0; i < s.nmaps; i++)
		ckpt__snap_str(&s, s.maps[i].name_off, s.maps[i].name_len, name, sizeof name);
	ckpt__snap_str(&s, s.h.exe_off, s.h.exe_len, name, sizeof name);
	ckpt__snap_str(&s, s.h.bid_off, s.h.bid_len, name, sizeof name);
	free(out);
	free(stored);
	ckpt__snap_close(&s);
	return 0;
}
