/*
 * zmem.c - zstd contexts allocated from ckpt's own memory.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "zmem.h"
#include "mem.h"

/* Each allocation records its size in front, for ckpt__mem_free. */
#define HEAD 64

static void *zalloc(void *opaque, size_t size)
{
	(void)opaque;
	char *p = ckpt__mem_alloc(size + HEAD);
	if (!p)
		return NULL;
	*(size_t *)p = size + HEAD;
	return p + HEAD;
}

static void zfree(void *opaque, void *addr)
{
	(void)opaque;
	if (!addr)
		return;
	char *p = (char *)addr - HEAD;
	ckpt__mem_free(p, *(size_t *)p);
}

static const ZSTD_customMem own = {zalloc, zfree, NULL};

ZSTD_DCtx *ckpt__zstd_dctx(void)
{
	return ZSTD_createDCtx_advanced(own);
}

ZSTD_CCtx *ckpt__zstd_cctx(int level)
{
	ZSTD_CCtx *c = ZSTD_createCCtx_advanced(own);
	if (!c)
		return NULL;
	if (ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1))) {
		ZSTD_freeCCtx(c);
		return NULL;
	}
	return c;
}
