/*
 * snap-write.h - writing one snapshot file, atomically.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_SNAP_WRITE_H
#define CKPT_SNAP_WRITE_H

#include "format.h"

struct ckpt__workers;

/* A mapping of the snapshot's table. */
struct ckpt__wmap {
	uintptr_t start, end;
	uint64_t offset, inode, born;
	unsigned dev_major, dev_minor;
	int prot;
	unsigned flags, kind, page_shift; /* CKPT__MF_*, CKPT__MK_* */
	uint32_t keep_off, keep_len;
	const char *name;
};

/* A run of the plan.  DATA runs are candidates: pages read from `src` (the
 * run's own address when 0), all-zero ones recorded as zero. */
struct ckpt__wrun {
	uintptr_t start;
	size_t npages;
	int kind;       /* CKPT__RK_* */
	uintptr_t src;
};

struct ckpt__wplan {
	uint64_t id, parent;
	uint8_t chain_id[16];
	uint32_t flags, page_size, nthreads;
	const char *exe;
	const void *build_id;
	size_t build_id_len;
	const struct ckpt__wmap *maps; /* sorted, disjoint */
	size_t nmaps;
	const struct ckpt__wrun *runs; /* sorted, disjoint, inside the maps */
	size_t nruns;
	int level;
	unsigned threads;
	struct ckpt__workers *workers; /* started already, or NULL */
	uint64_t time_ns; /* 0: now */
	const void *proc; /* the process record (proc.h), or NULL */
	size_t proc_size;
	int flat_index;   /* write the index as struct ckpt__frun entries, not packed
			     (what readers without CKPT__SF_PACKED_INDEX read) */
};

struct ckpt__wresult {
	uint64_t file_bytes, stored_bytes, raw_bytes;
	uint64_t data_pages, zero_pages, file_pages;
	uint64_t compress_ns, write_ns, sync_ns;
};

/* Writes snapshot plan->id into the directory dirfd: to a temporary name,
 * fsynced, renamed, the directory fsynced.  On failure nothing is left
 * behind and the chain is as it was.  0 or a CKPT_E* code (ENOSPC, EIO...
 * with ckpt_last_error naming the step). */
CKPT__HIDDEN int ckpt__snap_write(int dirfd, const struct ckpt__wplan *plan,
				  struct ckpt__wresult *res);

#endif /* CKPT_SNAP_WRITE_H */
