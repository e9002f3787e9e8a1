/*
 * dir.c - directories: walking their entries, the names of a chain's files,
 * and the checks that make a chain directory trusted.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A chain directory holds the whole memory of a process, and with
 * CKPT_F_RESUME what is in it becomes that process again: code, data,
 * registers.  So it is trusted only when nobody but its user (or root, who
 * can change the process anyway) can have put anything there: the directory
 * is opened by its own name, never through a symbolic link, belongs to the
 * user and is writable by nobody else, not even its group (a group may hold
 * other users; ACLs granting write show in the group bits).  The checks are
 * made on the open descriptors (fstat), so a directory or file swapped
 * after the check is never the one read.  Files in it are read only when
 * they are regular files of the same user: a FIFO or a device named like a
 * snapshot is never opened for reading in a way that could block.
 *
 * The walk uses raw getdents64 and a buffer on the stack: a commit must not
 * allocate in the program's heap, and the thread registry (thread.c) lists
 * /proc/self/task with it from inside a capture.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "dir.h"
#include "error.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

/* A record of getdents64 (struct linux_dirent64, which no header gives). */
struct dirent64_raw {
	uint64_t ino;
	int64_t off;
	unsigned short reclen;
	unsigned char type;
	char name[];
};

int ckpt__dir_foreach(int dirfd, int (*fn)(const char *name, unsigned type, void *arg), void *arg)
{
	/* uint64_t: the records are 8-byte aligned in the buffer. */
	uint64_t buf[1024];
	long rc = ckpt__sys3(SYS_lseek, dirfd, 0, SEEK_SET);
	if (rc < 0)
		return ckpt__from_errno((int)-rc);
	for (;;) {
		long got = ckpt__sys3(SYS_getdents64, dirfd, (long)buf, sizeof buf);
		if (got < 0)
			return ckpt__from_errno((int)-got);
		if (got == 0)
			return 0;
		for (long off = 0; off < got;) {
			const struct dirent64_raw *e = (const void *)((const char *)buf + off);
			/* The kernel's records, but a bad length would loop. */
			if (e->reclen <= offsetof(struct dirent64_raw, name) || e->reclen > got - off)
				return CKPT_EIO;
			off += e->reclen;
			int r = fn(e->name, e->type, arg);
			if (r)
				return r;
		}
	}
}

/* ---- names ------------------------------------------------------------------------ */

/* The rest of s after prefix, or NULL. */
static const char *after(const char *s, const char *prefix)
{
	for (; *prefix; s++, prefix++)
		if (*s != *prefix)
			return NULL;
	return s;
}

static int same(const char *a, const char *b)
{
	for (; *a == *b; a++, b++)
		if (!*a)
			return 1;
	return 0;
}

int ckpt__snap_name_parse(const char *name, uint64_t *id)
{
	const char *p, *suffix;
	int kind;
	if ((p = after(name, "snap-")) != NULL) {
		kind = CKPT__NAME_SNAP;
		suffix = ".ckpt";
	} else if ((p = after(name, ".snap-")) != NULL) {
		kind = CKPT__NAME_TEMP;
		suffix = ".tmp";
	} else {
		return CKPT__NAME_OTHER;
	}
	/* What "%08llu" prints, and nothing else: 8 digits, or more without
	 * a leading zero; no sign, no blank, no overflow. */
	uint64_t v = 0;
	size_t n = 0;
	for (; p[n] >= '0' && p[n] <= '9'; n++) {
		unsigned d = (unsigned)(p[n] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return CKPT__NAME_OTHER;
		v = v * 10 + d;
	}
	if (n < 8 || (n > 8 && p[0] == '0') || v == 0 || !same(p + n, suffix))
		return CKPT__NAME_OTHER;
	*id = v;
	return kind;
}
