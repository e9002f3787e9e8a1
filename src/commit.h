/*
 * commit.h - a handle's snapshot chain on disk: opening it, committing.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_COMMIT_H
#define CKPT_COMMIT_H

#include "snap-read.h"
#include "snap-write.h"
#include "track.h"

#include <limits.h>

/* zstd level when the options say 0. */
#define CKPT__DEFAULT_LEVEL 1

struct ckpt__commit_stats {
	uint64_t id;
	uint64_t pause_ns;     /* time inside ckpt_commit */
	uint64_t capture_ns;   /* taking the dirty set, re-protecting, scanning */
	uint64_t wait_ns;      /* part of the pause spent waiting for the previous commit */
	uint64_t staged_bytes; /* pages copied to the staging area (async commits) */
	uint64_t compress_ns, write_ns, sync_ns;
	uint64_t pages;        /* pages stored (data) */
	uint64_t zero_pages, file_pages;
	uint64_t raw_bytes, stored_bytes, file_bytes;
};

struct ckpt__chainw {
	int dirfd, lockfd;
	uint8_t chain_id[16];
	uint64_t latest;               /* newest id on disk (0: none yet) */
	struct ckpt__wmap *lct;        /* the newest snapshot's mapping table */
	size_t nlct, lct_cap;
	int level;
	unsigned threads;
	unsigned workers;              /* if not 0: compression threads of a commit */
	char exe[PATH_MAX];
	unsigned char build_id[64];
	size_t build_id_len;
	struct ckpt__commit_stats last;
	struct ckpt__chain rd;         /* the chain for restores, opened lazily */
	int rd_open;
	unsigned existing;             /* snapshots found by CKPT__CW_CONTINUE */
	const void *proc;              /* the next commit's process record */
	size_t proc_size;
};

enum { CKPT__CW_NEW, CKPT__CW_OVERWRITE, CKPT__CW_CONTINUE };

/* What a commit stores: the mapping table and the runs of pages. */
struct ckpt__plan {
	struct ckpt__wmap *maps;
	size_t nmaps, maps_cap;
	struct ckpt__wrun *runs;
	size_t nruns, runs_cap;
	char *stage; /* copies of pages the program made unreadable */
	size_t stage_bytes, stage_used;
};

/* A commit between its phases. */
struct ckpt__pending {
	uint64_t id, t0;
	struct ckpt__workers *wk;      /* started before the capture */
	struct ckpt__capture cap;
	struct ckpt__plan pl;
	struct ckpt__wplan wp;         /* for ckpt__snap_write */
	struct ckpt__wresult res;
	int settled;                   /* the tracker was told at once (async) */
	uint64_t pause_ns, wait_ns, staged_bytes;
};

/* Opens (creating it 0700 if needed) and locks the chain directory.  A
 * directory holding a chain is refused (CKPT_EEXIST) with CKPT__CW_NEW,
 * deleted with CKPT__CW_OVERWRITE, kept with CKPT__CW_CONTINUE (w->existing
 * counts its snapshots; a resume takes it over).  0 or CKPT_E*. */
CKPT__HIDDEN int ckpt__chainw_open(struct ckpt__chainw *w, const char *dir, int mode,
				   int level, unsigned threads);
CKPT__HIDDEN void ckpt__chainw_close(struct ckpt__chainw *w);
/* The chain's writer state taken over from snapshot s (its newest): the
 * next commit is its child.  0 or CKPT_ENOMEM. */
CKPT__HIDDEN int ckpt__chainw_take_over(struct ckpt__chainw *w, const struct ckpt__snap *s);
/* The chain found in dir (CKPT__CW_CONTINUE) opened for reading and taken
 * over from its newest snapshot.  0 or CKPT_E*, with the message set. */
CKPT__HIDDEN int ckpt__chainw_adopt(struct ckpt__chainw *w, const char *dir);
/* Writes the next snapshot from what the tracker captured. */
CKPT__HIDDEN int ckpt__commit(struct ckpt__chainw *w, uint64_t *id);

/* The same in phases.  prepare starts the workers, captures and plans
 * snapshot latest + 1 (own_threads: threads of ckpt's own alive besides
 * the workers, not counted as the program's); on failure everything is
 * undone.  write writes the file and stops the workers; it touches
 * nothing but pd and the directory, so it may run on another thread.
 * finish tells the tracker and the handle the outcome of the write (rc)
 * and releases pd's contents; on failure the pages go back into the dirty
 * set.  0 or CKPT_E* (prepare, write). */
CKPT__HIDDEN int ckpt__commit_prepare(struct ckpt__chainw *w, struct ckpt__pending *pd,
				      unsigned own_threads);
CKPT__HIDDEN int ckpt__commit_write(int dirfd, struct ckpt__pending *pd);
CKPT__HIDDEN void ckpt__commit_workers_stop(struct ckpt__pending *pd);
CKPT__HIDDEN void ckpt__commit_finish(struct ckpt__chainw *w, struct ckpt__pending *pd, int rc,
				      uint64_t *id);
/* The chain as written so far, for reading (kept open and up to date). */
CKPT__HIDDEN int ckpt__chainw_reader(struct ckpt__chainw *w, struct ckpt__chain **out);
/* Closes that reader, if open: the chain's files changed (a compaction). */
CKPT__HIDDEN void ckpt__chainw_close_reader(struct ckpt__chainw *w);
/* chain-api.c: ckpt_chain_compact of the chain open in dirfd (dir names
 * it in messages), whose writer's lock the caller holds, made only when
 * more than `above` increments are there (at least keep); compression on
 * `threads` threads. */
CKPT__HIDDEN int ckpt__chain_compact_locked(const char *dir, int dirfd, unsigned keep,
					    unsigned above, unsigned threads, size_t *folded);

struct dl_phdr_info;
/* The GNU build-id of a loaded object (at most 64 bytes): 1 if it has one. */
CKPT__HIDDEN int ckpt__phdr_build_id(const struct dl_phdr_info *info, unsigned char *bid,
				     size_t *len);
/* The executable's path and GNU build-id. */
CKPT__HIDDEN void ckpt__exe_identity(char *path, size_t pathsz, unsigned char *bid,
				     size_t *bidlen);

#endif /* CKPT_COMMIT_H */
