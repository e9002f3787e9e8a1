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
	/* 4 KiB: the walk may run on a small thread stack (a commit from any
	 * thread).  uint64_t: the records are 8-byte aligned in the buffer. */
	uint64_t buf[512];
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
			if (e->reclen <= offsetof(struct dirent64_raw, name) ||
			    e->reclen > got - off)
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

/* ---- trust -------------------------------------------------------------------------- */

static const char *file_type(mode_t m)
{
	return S_ISDIR(m)    ? "a directory"
	       : S_ISFIFO(m) ? "a FIFO"
	       : S_ISCHR(m)  ? "a character device"
	       : S_ISBLK(m)  ? "a block device"
	       : S_ISSOCK(m) ? "a socket"
	       : S_ISLNK(m)  ? "a symbolic link"
			     : "of an unknown type";
}

/* Owner and mode: 0 or CKPT_EACCES with the reason, `what` naming the
 * directory or file and `kind` what it is to be. */
static int owner_ok(const struct stat *st, const char *who, const char *what, const char *kind)
{
	uid_t me = geteuid();
	if (st->st_uid != me && st->st_uid != 0)
		return ckpt__fail(CKPT_EACCES,
				  "%s%s: owned by uid %u; %s must belong to the user reading it "
				  "(uid %u) or to root",
				  who, what, (unsigned)st->st_uid, kind, (unsigned)me);
	if (st->st_mode & (S_IWGRP | S_IWOTH))
		return ckpt__fail(CKPT_EACCES,
				  "%s%s: writable by %s (mode %04o); %s must be writable by its "
				  "owner alone (chmod go-w)",
				  who, what, (st->st_mode & S_IWOTH) ? "others" : "its group",
				  (unsigned)(st->st_mode & 07777), kind);
	return 0;
}

int ckpt__chain_dir_open(const char *dir, const char *who, int *fd)
{
	*fd = -1;
	char path[PATH_MAX];
	size_t n = strlen(dir);
	if (!n || n >= sizeof path)
		return ckpt__fail(n ? CKPT_ENAMETOOLONG : CKPT_EINVAL, "%sthe directory name is %s",
				  who, n ? "too long" : "empty");
	memcpy(path, dir, n + 1);
	/* "link/" would follow the link whatever O_NOFOLLOW says. */
	while (n > 1 && path[n - 1] == '/')
		path[--n] = '\0';
	int d = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (d < 0) {
		int e = errno;
		struct stat st;
		if ((e == ENOTDIR || e == ELOOP) && lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
			return ckpt__fail(
			    CKPT_EACCES,
			    "%s%s: a symbolic link; a chain directory is opened by its "
			    "own name, not through a link (name the directory itself)",
			    who, dir);
		return ckpt__fail(ckpt__from_errno(e), "%s%s: %s", who, dir, strerror(e));
	}
	struct stat st;
	int rc = 0;
	if (fstat(d, &st) != 0)
		rc = ckpt__fail(ckpt__from_errno(errno), "%s%s: %s", who, dir, strerror(errno));
	else
		rc = owner_ok(&st, who, dir, "a chain directory");
	if (rc) {
		close(d);
		return rc;
	}
	*fd = d;
	return 0;
}

/* The checks on one status: 0 or a CKPT_E* code. */
static int file_ok(const struct stat *st, const char *name)
{
	if (S_ISLNK(st->st_mode))
		return ckpt__fail(CKPT_EACCES,
				  "%s: a symbolic link; snapshots are read only from regular files "
				  "of the chain directory",
				  name);
	if (!S_ISREG(st->st_mode))
		return ckpt__fail(CKPT_ECORRUPT, "%s: not a regular file (%s)", name,
				  file_type(st->st_mode));
	return owner_ok(st, "", name, "a file of a chain");
}

int ckpt__chain_file_open(int dirfd, const char *name, int *fd, struct stat *st)
{
	*fd = -1;
	/* Looked at before it is opened, so that a FIFO or a device is never
	 * opened at all... */
	if (fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW) != 0)
		return ckpt__fail(ckpt__from_errno(errno), "%s: %s", name, strerror(errno));
	int rc = file_ok(st, name);
	if (rc)
		return rc;
	int f = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (f < 0) {
		int e = errno;
		if (e == ELOOP)
			return file_ok(&(struct stat){.st_mode = S_IFLNK}, name);
		return ckpt__fail(ckpt__from_errno(e), "%s: %s", name, strerror(e));
	}
	/* ...and checked again open: what is read is what was checked, even
	 * if the name was given to another file in between. */
	if (fstat(f, st) != 0)
		rc = ckpt__fail(ckpt__from_errno(errno), "%s: %s", name, strerror(errno));
	else
		rc = file_ok(st, name);
	if (rc) {
		close(f);
		return rc;
	}
	*fd = f;
	return 0;
}
