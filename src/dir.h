/*
 * dir.h - directories: walking their entries, the names of a chain's files,
 * and the checks that make a chain directory trusted.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_DIR_H
#define CKPT_DIR_H

#include "sys.h"

#include <stdint.h>
#include <sys/stat.h>

/* Calls fn(name, type, arg) for every entry of the directory open as dirfd,
 * "." and ".." included, from the directory's start (type: the DT_* value
 * getdents reports, DT_UNKNOWN on some file systems).  Raw system calls and
 * a buffer on the stack: no allocation, errno untouched, async-signal-safe
 * when fn is.  Returns 0 after the last entry, fn's first non-zero value
 * (the walk stops there), or the CKPT_E* code of a failed read. */
CKPT__HIDDEN int ckpt__dir_foreach(int dirfd, int (*fn)(const char *name, unsigned type, void *arg),
				   void *arg);

/* What a name in a chain directory is.  Only the exact names the writer
 * makes count: "snap-" and the id in decimal, 8 digits with leading zeros
 * or as many as it takes above 99999999, then ".ckpt" (CKPT__SNAP_FMT); the
 * same between ".snap-" and ".tmp" for a file being written
 * (CKPT__TEMP_FMT).  Ids start at 1. */
enum { CKPT__NAME_OTHER, CKPT__NAME_SNAP, CKPT__NAME_TEMP };
/* CKPT__NAME_* of name, and for a snapshot or temporary file its id in
 * *id.  Async-signal-safe. */
CKPT__HIDDEN int ckpt__snap_name_parse(const char *name, uint64_t *id);

#endif /* CKPT_DIR_H */
