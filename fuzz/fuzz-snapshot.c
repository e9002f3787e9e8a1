/*
 * fuzz/fuzz-snapshot.c - libFuzzer target over the snapshot reader.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The input is one snapshot file.  Whatever the bytes, the reader must
 * refuse them or hand out only what it checked: every block it accepted
 * decompresses to its stated size, every run it accepted points inside its
 * mapping and its block.  Built with FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION,
 * which lets inputs through the hashes to the checks behind them (see
 * scripts/fuzz.sh).
 */
#include "snap-read.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static ZSTD_DCtx *d;
	static unsigned char *out, *stored;
	if (!d) {
		d = ckpt__zstd_dctx();
		out = malloc((size_t)CKPT__MAX_PAGE_SIZE * CKPT__BLOCK_PAGES);
		stored = malloc((size_t)CKPT__MAX_PAGE_SIZE * CKPT__BLOCK_PAGES);
	}
	struct ckpt__snap s;
	if (ckpt__snap_parse(&s, data, size, "fuzz") != 0)
		return 0;
	for (size_t b = 0; b < s.nblocks && b < 64; b++)
		ckpt__snap_block(&s, d, (uint32_t)b, out, stored);
	for (size_t i = 0; i < s.nruns && i < 256; i++) {
		const struct ckpt__frun *r = &s.runs[i];
		const struct ckpt__frun *again = ckpt__snap_run_at(&s, r->start);
		const struct ckpt__fmap *m = ckpt__snap_map_at(&s, r->start);
		if (again != r || !m)
			abort(); /* the checks promised both */
	}
	char name[64];
	for (size_t i = 0; i < s.nmaps; i++)
		ckpt__snap_str(&s, s.maps[i].name_off, s.maps[i].name_len, name, sizeof name);
	ckpt__snap_close(&s);
	return 0;
}
