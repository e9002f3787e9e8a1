/*
 * fill.h - filling fresh memory from a chain, block by block, on every core.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A restore (and a resume, which is a restore of everything) writes most of
 * its pages into mappings it has just made: memory the program has not
 * seen, which a failure simply unmaps.  There nothing has to be staged: each
 * block the pages need is read once, checked and decompressed straight to
 * its place (or, when only some of its pages are wanted, into a buffer they
 * are copied from), by as many threads of ckpt's own as asked.  Which
 * snapshot each page comes from is worked out once for all pages, newest
 * snapshot first, in time that follows the runs of the chain rather than
 * pages times snapshots.
 */
#ifndef CKPT_FILL_H
#define CKPT_FILL_H

#include "rangeset.h"
#include "snap-read.h"

/* The pages of one block to write. */
struct ckpt__fill_task {
	const struct ckpt__snap *snap;
	uint32_t block;
	uint32_t n;     /* pages */
	uint32_t set;   /* pages placed so far, while planning */
	size_t first;   /* the first in ckpt__fill.page */
	size_t kept;    /* staged: where its bytes are in ckpt__fill.arena */
};

struct ckpt__fill_page {
	uintptr_t addr;
	uint32_t page;  /* in the block */
	uint32_t pad;
};

struct ckpt__fill {
	struct ckpt__fill_task *task;
	size_t ntask, task_cap;
	struct ckpt__fill_page *page; /* grouped by task, ascending addresses */
	size_t npage, page_cap;
	struct ckpt__range *pop;      /* runs of data pages, to make present first */
	size_t npop, pop_cap;
	struct ckpt__rset data;       /* the data pages */
	char *arena;                  /* staged: pages or blocks as stored */
	size_t arena_size;
	int arena_pages;              /* the arena holds the pages, decompressed */
};

/* Works out, for every page of `fresh` (page-aligned ranges inside mappings
 * of snapshot `id` of chain c, holding what a new mapping holds: zeros, or
 * its file), which block of which snapshot holds its content as of `id`.
 * Pages with no data stay as they are.  0, CKPT_ENOMEM or CKPT_ECORRUPT
 * (a run pointing outside its block), with the message set.  f is freed
 * with ckpt__fill_free either way. */
CKPT__HIDDEN int ckpt__fill_plan(struct ckpt__fill *f, struct ckpt__chain *c, uint64_t id,
				 const struct ckpt__rset *fresh);

/* A data page of a plan, and the task that fills it. */
struct ckpt__fill_at {
	uintptr_t addr;
	uint32_t task;
	uint32_t pad;
};

/* ckpt__fill_plan, and every data page with its task, by ascending address,
 * in *by_addr: *nby of them, from ckpt__mem_alloc (the caller frees *nby *
 * sizeof **by_addr bytes), NULL when there are none or on failure.  What a
 * filler that follows the program's touches looks pages up in (lazy.c). */
CKPT__HIDDEN int ckpt__fill_plan_at(struct ckpt__fill *f, struct ckpt__chain *c, uint64_t id,
				    const struct ckpt__rset *fresh,
				    struct ckpt__fill_at **by_addr, size_t *nby);

/* Has the plan write each page `delta` bytes from where it was: into a
 * buffer, for a region that lies elsewhere now (named.c). */
CKPT__HIDDEN void ckpt__fill_move(struct ckpt__fill *f, intptr_t delta);

/* Reads, checks and decompresses every block of the plan into place, on
 * `threads` threads (the caller's among them; fewer if ckpt cannot make
 * them).  The first failure stops the others and is returned with its
 * message; the memory is then partly written and the caller unmaps it. */
CKPT__HIDDEN int ckpt__fill_run(struct ckpt__fill *f, unsigned threads);

/* For memory the program has mapped, in two steps around the point of no
 * return.  ckpt__fill_stage reads and checks every block (decompressing
 * it) on `threads` threads, and keeps what the writes need in ckpt's
 * memory: the pages themselves when they take at most `limit` bytes or no
 * more than the blocks as stored, the blocks as stored otherwise (decompressed again when written).  Nothing
 * of the program's changes.  0, or the first failure with its message.
 * ckpt__fill_apply then writes the pages, on `threads` threads: the pages
 * must be writable.  It fails only if a block checked before no longer
 * decompresses (CKPT_EINTERNAL: memory gone bad). */
CKPT__HIDDEN int ckpt__fill_stage(struct ckpt__fill *f, unsigned threads, size_t limit);
CKPT__HIDDEN int ckpt__fill_apply(struct ckpt__fill *f, unsigned threads);

CKPT__HIDDEN void ckpt__fill_free(struct ckpt__fill *f);

/* Reads, checks and decompresses the block of task t into `raw` (a block's
 * bytes), each page at its place: for a filler that places the pages
 * itself (lazy.c).  Of a raw block with a hash a page, only the task's
 * pages are read (the rest of `raw` is left as it was).  `stored`: a
 * buffer as large, for the compressed bytes.  Checks the task's pages
 * against the block too.  0, CKPT_ECORRUPT or CKPT_EIO with the message
 * set. */
CKPT__HIDDEN int ckpt__fill_load(const struct ckpt__fill *f, const struct ckpt__fill_task *t,
				 ZSTD_DCtx *dctx, void *raw, void *stored);

#endif /* CKPT_FILL_H */
