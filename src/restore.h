/*
 * restore.h - rolling the process' memory back to a snapshot, in place.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_RESTORE_H
#define CKPT_RESTORE_H

#include "commit.h"
#include "rangeset.h"

struct ckpt__restore_stats {
	uint64_t pages;     /* pages rewritten */
	uint64_t blocks;    /* blocks read from disk */
	uint64_t verify_ns; /* reading and verifying, before memory changed */
	uint64_t total_ns;
	int fast;           /* the pages written came from the log of faults */
};

/* Sets every tracked page to its content as of snapshot id (CKPT_LATEST:
 * the newest) of the chain w writes; with use_shadow, pages copied since
 * the newest commit come from memory.  0 or CKPT_E* with memory untouched
 * (ENOENT: no such snapshot; ECORRUPT: a file failed verification;
 * EFOREIGN: another executable or page size; ESTATE: not tracking). */
CKPT__HIDDEN int ckpt__restore(struct ckpt__chainw *w, uint64_t id, int use_shadow,
			       struct ckpt__restore_stats *st);

#define CKPT__RESTORE_ALL 0x1  /* every page of the snapshot */
#define CKPT__RESTORE_LAZY 0x2 /* `made` filled lazily (lazy.c) */

/* The same, with three more choices: `how` CKPT__RESTORE_ALL rewrites every
 * page of the snapshot (a resume: nothing is known of the memory now), and
 * with CKPT__RESTORE_LAZY the anonymous memory of `made` is filled as the
 * program touches it, and in the background, after the call returns
 * (lazy.c: the caller hands the chain reader over with
 * ckpt__lazy_adopt_chain, or calls ckpt__lazy_cancel if it gives up);
 * `before`,
 * when not NULL, runs once everything is verified and the mappings to
 * recreate are made, before memory the program has mapped changes; its
 * failure is the restore's (the mappings made are removed again); and
 * `made`, when not NULL, names memory the caller mapped for this restore,
 * fresh (zeros, or a file's pages), which it removes itself if the restore
 * fails: its pages are written as soon as their blocks are checked, in
 * parallel, with nothing staged.  Zero pages of anonymous private memory
 * are discarded, not written. */
CKPT__HIDDEN int ckpt__restore_ex(struct ckpt__chainw *w, uint64_t id, int use_shadow, int how,
				  int (*before)(void *arg), void *arg,
				  const struct ckpt__rset *made, struct ckpt__restore_stats *st);

#endif /* CKPT_RESTORE_H */
