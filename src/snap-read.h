/*
 * snap-read.h - reading and verifying snapshot files and chains.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_SNAP_READ_H
#define CKPT_SNAP_READ_H

#include "format.h"
#include "zmem.h"

/* One snapshot file, its metadata read and verified. */
struct ckpt__snap {
	char name[48];
	int fd;                     /* -1 when parsed from memory */
	const unsigned char *mem;   /* the file, when parsed from memory */
	uint64_t size;
	struct ckpt__fhdr h;
	char *strings;
	struct ckpt__fmap *maps;
	struct ckpt__frun *runs;
	struct ckpt__fblock *blocks;
	size_t nmaps, nruns, nblocks;
	const void *proc;           /* the process record, NULL if none */
	size_t proc_size;
	void *alloc;                /* one allocation holding the arrays above */
	size_t alloc_size;
	void *runs_alloc;           /* the runs expanded from a packed index, or NULL */
	size_t runs_alloc_size;
};

/* Opens and verifies the metadata of `name` in the directory dirfd (every
 * check of doc/FORMAT.md except the block contents).  0, or a CKPT_E* code
 * with ckpt_last_error() naming the file and the problem. */
CKPT__HIDDEN int ckpt__snap_open(struct ckpt__snap *s, int dirfd, const char *name);
/* The same for a file held in memory (the buffer must outlive s). */
CKPT__HIDDEN int ckpt__snap_parse(struct ckpt__snap *s, const void *buf, size_t len,
				  const char *name);
CKPT__HIDDEN void ckpt__snap_close(struct ckpt__snap *s);

/* Reads block b into out (h.page_size * CKPT__BLOCK_PAGES bytes at least),
 * verifying its hash and, for zstd, its frame and size.  `stored` is a
 * buffer of at least as many bytes for the compressed data (or NULL: then a
 * temporary one is used).  0 or CKPT_ECORRUPT/CKPT_EIO. */
CKPT__HIDDEN int ckpt__snap_block(const struct ckpt__snap *s, ZSTD_DCtx *dctx, uint32_t b,
				  void *out, void *stored);

/* Reads block b as stored into `stored` (its csize bytes), verifying its
 * hash and, for zstd, that the frame announces the block's size: what a
 * restore checks before it changes memory, without decompressing twice.
 * 0 or CKPT_ECORRUPT/CKPT_EIO. */
CKPT__HIDDEN int ckpt__snap_block_stored(const struct ckpt__snap *s, uint32_t b, void *stored);

/* A CKPT__CODEC_RAWP block's page hashes into out (one per page), read and
 * checked against the block's hash; then page `page`'s bytes against its
 * own.  0 or CKPT_ECORRUPT (an I/O error's code) with the message set. */
CKPT__HIDDEN int ckpt__snap_page_hashes(const struct ckpt__snap *s, uint32_t b, uint64_t *out);
CKPT__HIDDEN int ckpt__snap_page_check(const struct ckpt__snap *s, uint32_t b,
				       const uint64_t *hashes, uint32_t page, const void *bytes);

/* A string of the snapshot as a C string in buf (truncated to fit). */
CKPT__HIDDEN const char *ckpt__snap_str(const struct ckpt__snap *s, uint32_t off, uint32_t len,
					char *buf, size_t bufsz);

/* The run holding the page at addr, or NULL. */
CKPT__HIDDEN const struct ckpt__frun *ckpt__snap_run_at(const struct ckpt__snap *s,
							uintptr_t addr);
/* The mapping holding addr, or NULL. */
CKPT__HIDDEN const struct ckpt__fmap *ckpt__snap_map_at(const struct ckpt__snap *s,
							uintptr_t addr);

/* A chain directory: the snapshots from the newest down to its base. */
struct ckpt__chain {
	int dirfd;
	struct ckpt__snap *snaps; /* ascending ids; snaps[n-1] is the newest */
	size_t n, cap;
	ZSTD_DCtx *dctx;
	void *blockbuf, *storedbuf; /* one block each */
	size_t bufsz;
};

/* Opens the chain in dir (dirfd >= 0: already open, taken over).  An empty
 * or missing directory is a chain of 0 snapshots.  0 or CKPT_E*. */
CKPT__HIDDEN int ckpt__chain_open(struct ckpt__chain *c, const char *dir, int dirfd);
/* The highest snapshot id among the files of a chain directory; 0 if none. */
CKPT__HIDDEN uint64_t ckpt__chain_newest_id(int dirfd);
/* The same, ignoring the snapshots above max_id. */
CKPT__HIDDEN int ckpt__chain_open_upto(struct ckpt__chain *c, const char *dir, int dirfd,
				       uint64_t max_id);
CKPT__HIDDEN void ckpt__chain_close(struct ckpt__chain *c);
/* The snapshot with this id (CKPT_LATEST: the newest), or NULL. */
CKPT__HIDDEN struct ckpt__snap *ckpt__chain_find(struct ckpt__chain *c, uint64_t id);

/* Where the content of the page at addr comes from as of snapshot `id`:
 * kind (CKPT__RK_*), and for DATA the snapshot and run.  -1 if the page is
 * in no mapping of that snapshot. */
struct ckpt__source {
	int kind;
	const struct ckpt__snap *snap;
	const struct ckpt__frun *run;
	const struct ckpt__fmap *map; /* the mapping in snapshot `id` */
};
CKPT__HIDDEN int ckpt__chain_source(struct ckpt__chain *c, uint64_t id, uintptr_t addr,
				    struct ckpt__source *out);
/* Copies the page at addr as of snapshot id into out (one page).  FILE
 * pages are read from the mapped file's path.  0 or CKPT_E*. */
CKPT__HIDDEN int ckpt__chain_page(struct ckpt__chain *c, uint64_t id, uintptr_t addr, void *out);

#endif /* CKPT_SNAP_READ_H */
