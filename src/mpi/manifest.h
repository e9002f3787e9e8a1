/*
 * manifest.h - the manifest of an MPI job's checkpoint folder: which epochs
 * are complete, and every rank's snapshot of each.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The format is in doc/MPI.md ("The manifest").  This module knows nothing
 * of MPI: libckpt-mpi writes the manifest (rank 0 only), the ckpt tool reads
 * it (`ckpt ls` and `ckpt verify` on a job folder), and so does a unit test.
 * Every function returns 0 or a negative CKPT_E* code, and on failure leaves
 * a sentence in `why` (a buffer of CKPT__MANIFEST_WHY bytes) naming the file
 * and what is wrong with it.
 */
#ifndef CKPT_MPI_MANIFEST_H
#define CKPT_MPI_MANIFEST_H

#include <ckpt.h>

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define CKPT__MANIFEST_HIDDEN __attribute__((visibility("hidden")))
#else
#define CKPT__MANIFEST_HIDDEN
#endif

#define CKPT__MANIFEST_NAME    "manifest"
#define CKPT__MANIFEST_TMP     ".manifest.tmp"
#define CKPT__MANIFEST_VERSION 1u
/* The newest complete epochs a manifest keeps (older ones drop out of it;
 * their snapshots stay in the rank folders).  A restart needs the newest
 * alone; a few more let `ckpt ls` show the history. */
#define CKPT__MANIFEST_KEEP 64u
/* Sanity bounds for a manifest read from disk. */
#define CKPT__MANIFEST_MAX_RANKS (1 << 20)
#define CKPT__MANIFEST_MAX_BYTES ((size_t)256 << 20)
#define CKPT__MANIFEST_WHY	 512

struct ckpt__manifest {
	int ranks;	  /* ranks of the job */
	size_t nepochs;	  /* complete epochs listed, oldest first */
	uint64_t *epochs; /* [nepochs]: strictly increasing, from 1 */
	uint64_t *ids;	  /* [nepochs * ranks]: ids[e * ranks + r], rank r's
			   * snapshot of epochs[e]; strictly increasing per rank */
};

/* An empty manifest of `ranks` ranks (no epoch). */
CKPT__MANIFEST_HIDDEN void ckpt__manifest_init(struct ckpt__manifest *m, int ranks);
CKPT__MANIFEST_HIDDEN void ckpt__manifest_free(struct ckpt__manifest *m);

/* The newest complete epoch (0 if none), and its ids (NULL if none). */
CKPT__MANIFEST_HIDDEN uint64_t ckpt__manifest_newest(const struct ckpt__manifest *m);
CKPT__MANIFEST_HIDDEN const uint64_t *ckpt__manifest_newest_ids(const struct ckpt__manifest *m);

/* Appends epoch `epoch` with one id a rank (m->ranks of them), dropping the
 * oldest epoch beyond CKPT__MANIFEST_KEEP.  The epoch must be newer than
 * the newest, every id newer than the rank's in it (CKPT_EINVAL).  0,
 * CKPT_EINVAL, CKPT_ENOMEM. */
CKPT__MANIFEST_HIDDEN int ckpt__manifest_add(struct ckpt__manifest *m, uint64_t epoch,
					     const uint64_t *ids, char *why);
/* Takes back the epoch the last ckpt__manifest_add appended (after a write
 * that failed). */
CKPT__MANIFEST_HIDDEN void ckpt__manifest_pop(struct ckpt__manifest *m);

/* Parses the text of a manifest; `name` is what messages call it.  0,
 * CKPT_ECORRUPT (anything out of place: a bad line, a number out of range,
 * epochs or ids out of order, the checksum), CKPT_EVERSION (a version of
 * the format this build does not know), CKPT_ENOMEM.  *m is filled on
 * success only. */
CKPT__MANIFEST_HIDDEN int ckpt__manifest_parse(const char *text, size_t len, const char *name,
					       struct ckpt__manifest *m, char *why);
/* The text of m, in a malloc'ed buffer of *len bytes.  0 or CKPT_ENOMEM. */
CKPT__MANIFEST_HIDDEN int ckpt__manifest_format(const struct ckpt__manifest *m, char **text,
						size_t *len, char *why);

/* Reads and parses DIR/manifest.  CKPT_ENOENT when there is none; else as
 * ckpt__manifest_parse, plus CKPT_EACCES (a symbolic link, not a regular
 * file, another user's or writable by others), system errors. */
CKPT__MANIFEST_HIDDEN int ckpt__manifest_read(const char *dir, struct ckpt__manifest *m, char *why);
/* Replaces DIR/manifest with m, atomically and durably: written to
 * DIR/.manifest.tmp, fsynced, renamed over the manifest, DIR fsynced.  On
 * failure the manifest is as it was.  0 or a CKPT_E* code. */
CKPT__MANIFEST_HIDDEN int ckpt__manifest_write(const char *dir, const struct ckpt__manifest *m,
					       char *why);

/* Checks that DIR is fit to hold a job's checkpoints, creating it (0700)
 * when `create` is set and it does not exist: a directory, not a
 * symbolic link, the calling user's (or root's), writable by its owner
 * alone (the rules ckpt_open has for a chain's directory).  0, CKPT_ENOENT
 * (absent and not created), CKPT_EACCES, CKPT_ENOTDIR, system errors. */
CKPT__MANIFEST_HIDDEN int ckpt__manifest_dir_check(const char *dir, int create, char *why);

/* A CKPT_E* code for an errno value (CKPT_EIO for one ckpt does not list). */
CKPT__MANIFEST_HIDDEN int ckpt__manifest_errno(int err);

#endif /* CKPT_MPI_MANIFEST_H */
