/*
 * zmem.h - zstd contexts whose memory is ckpt's own.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * zstd allocates its contexts with malloc by default: into the program's
 * heap, which ckpt tracks, saves and restores.  A restore rewriting the heap
 * under a context would corrupt it, so every context ckpt uses allocates
 * from ckpt's own memory instead.
 */
#ifndef CKPT_ZMEM_H
#define CKPT_ZMEM_H

#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_customMem, stable since zstd 1.3 */
#include <zstd.h>

#include "sys.h"

CKPT__HIDDEN ZSTD_DCtx *ckpt__zstd_dctx(void);
CKPT__HIDDEN ZSTD_CCtx *ckpt__zstd_cctx(int level);

#endif /* CKPT_ZMEM_H */
