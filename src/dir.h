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

/*
 * Opens the chain directory `dir` (O_DIRECTORY, O_NOFOLLOW; trailing
 * slashes ignored) into *fd, refusing with CKPT_EACCES a directory another
 * user could have written into: one that is a symbolic link, owned by a
 * user other than the calling one (the effective uid) or root, or writable
 * by its group or by others.  Only the directory itself is checked, not the
 * path to it.  `who` prefixes the messages ("ckpt_open: ", or "").
 * Returns 0, or CKPT_EACCES, CKPT_ENOENT, CKPT_ENOTDIR and other system
 * errors, with ckpt_last_error() naming the directory and the reason.
 */
CKPT__HIDDEN int ckpt__chain_dir_open(const char *dir, const char *who, int *fd);

/*
 * Opens the file `name` of the chain directory dirfd for reading into *fd,
 * with its status in *st: only a regular file (CKPT_ECORRUPT otherwise;
 * never a FIFO or device, which could block or act on being opened), not
 * a symbolic link, owned by the calling user or root and writable by its
 * owner alone (CKPT_EACCES).  Opened with O_NONBLOCK.  Returns 0 or a
 * CKPT_E* code with ckpt_last_error() naming the file.
 */
CKPT__HIDDEN int ckpt__chain_file_open(int dirfd, const char *name, int *fd, struct stat *st);

#endif /* CKPT_DIR_H */
