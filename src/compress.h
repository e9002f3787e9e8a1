/*
 * compress.h - packing pages into compressed blocks on worker threads.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_COMPRESS_H
#define CKPT_COMPRESS_H

#include "format.h"
#include "futex.h"
#include "own-thread.h"


/* One packed block, handed to the sink in job order. */
struct ckpt__cblock {
	size_t job;
	uint64_t zero_mask;  /* pages of the job that were all zero (not stored) */
	unsigned npages;     /* pages of the job */
	unsigned stored;     /* pages in the block (npages - zeros) */
	const void *data;    /* csize bytes to write; NULL when every page was zero */
	const uint64_t *phash; /* CKPT__CODEC_RAWP: the XXH64 of each page, after data */
	uint32_t csize, rsize, codec;
	uint64_t hash;       /* XXH64 of data */
};

/* Worker threads for ckpt__compress_pages: threads of ckpt's own
 * (own-thread.h), which glibc does not know, so that starting and stopping
 * them writes nothing in the program's memory.  A commit starts them for
 * its duration and stops them before it returns; none outlives it.  Their
 * locks are futex.h's. */
#define CKPT__MAX_WORKERS 64
struct ckpt__workers {
	ckpt__mutex lock;
	ckpt__cond cond;
	unsigned n;       /* started */
	unsigned busy;    /* running the current round */
	uint64_t round;   /* bumped to hand them work */
	int quit;
	void *(*fn)(void *);
	void *arg;
	struct ckpt__own_thread th[CKPT__MAX_WORKERS];
};
/* Starts up to `n` workers (fewer if threads cannot be made; 0 is fine:
 * the caller then packs alone). */
CKPT__HIDDEN void ckpt__workers_start(struct ckpt__workers *w, unsigned n);
CKPT__HIDDEN void ckpt__workers_stop(struct ckpt__workers *w);
/* Gives each started worker the nice value `nice` (setpriority: a thread
 * of one's own may be made nicer, never less nice without privilege).
 * w may be NULL. */
CKPT__HIDDEN void ckpt__workers_nice(struct ckpt__workers *w, int nice);

/* Packs pages[0..n) (addresses of pages of `page_size` bytes, readable) in
 * njobs jobs of consecutive entries, job j from first[j] to first[j + 1]
 * (first[njobs] = n; at most CKPT__BLOCK_PAGES a job): each page is copied out
 * and tested for zero, the non-zero ones compressed together at `level`
 * (stored raw if zstd does not shrink them), on the workers of `wk` when
 * it has some, else on `threads` workers started for the call (0 or 1: the
 * calling thread alone).  sink() runs on the calling thread for every
 * job in order; a non-zero return stops the packing and is returned.
 * Returns 0, sink's value, or CKPT_ENOMEM/CKPT_EINTERNAL. */
CKPT__HIDDEN int ckpt__compress_pages(const uintptr_t *pages, size_t n, const size_t *first,
				      size_t njobs, size_t page_size, int level, unsigned threads,
				      struct ckpt__workers *wk,
				      int (*sink)(const struct ckpt__cblock *b, void *arg),
				      void *arg, uint64_t *compress_ns);

#endif /* CKPT_COMPRESS_H */
