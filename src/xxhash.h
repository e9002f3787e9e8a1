/*
 * xxhash.h - XXH64, the checksum of every part of a snapshot file.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_XXHASH_H
#define CKPT_XXHASH_H

#include "sys.h"

/* XXH64 of len bytes at p with the given seed (the published algorithm:
 * same results as xxhsum -H1 for seed 0). */
CKPT__HIDDEN uint64_t ckpt__xxh64(const void *p, size_t len, uint64_t seed);

struct iovec;
/* The same over the concatenation of n pieces, each a multiple of 32
 * bytes long (pages): what one call over them laid end to end gives. */
CKPT__HIDDEN uint64_t ckpt__xxh64_pieces(const struct iovec *iov, int n, uint64_t seed);

#endif /* CKPT_XXHASH_H */
