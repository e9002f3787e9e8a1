/*
 * pipes.c - the program's own pipes across a resume (pipes.h).
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Recording runs inside a resumable commit while the program's other
 * threads are stopped, so that none writes to a pipe between the read of
 * its content and the capture of memory.  A stopped thread may hold any
 * lock of the C library's (malloc's, stdio's, the loader's), so the record
 * is made with raw system calls into ckpt's own memory: no malloc, no
 * stdio, no opendir (ckpt__dir_foreach reads /proc/self/fd with getdents),
 * and errno is left alone.
 *
 * The content is read without consuming it: tee(2) duplicates the pipe's
 * buffers into a temporary pipe of ckpt's, given the same capacity (so the
 * same number of buffer slots: tee copies buffer by buffer), and that one
 * is read.  The program's pipe is left exactly as it was.
 *
 * Which descriptors share an open file description (dup'd ones do, one
 * opened again through /proc/self/fd does not) is asked of kcmp(2); where
 * the kernel has no kcmp, descriptors of the same end with the same status
 * flags are taken to share one.  A resume gives each description back its
 * flags, so the program sees the same O_NONBLOCK on each number either
 * way.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "pipes.h"
#include "dir.h"
#include "error.h"
#include "inject.h"
#include "mem.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- recording -------------------------------------------------------------- */

/* A descriptor of a pipe, as the walk of /proc/self/fd found it. */
struct pfd {
	int fd;
	int acc; /* O_RDONLY, O_WRONLY or O_RDWR */
	int flags, fdflags;
	uint64_t dev, ino;
	int done; /* its pipe was handled */
};

struct scan {
	struct pfd *v;
	size_t n, cap;
	const struct ckpt__pown *own;
	int dfd;
	int err;
};

/* "/proc/self/fd/N" into buf (32 bytes at least), without stdio. */
static void fd_path(char *buf, int fd)
{
	static const char pre[] = "/proc/self/fd/";
	char digits[16];
	int n = 0;
	unsigned v = (unsigned)fd;
	do
		digits[n++] = (char)('0' + v % 10);
	while ((v /= 10) && n < (int)sizeof digits);
	memcpy(buf, pre, sizeof pre - 1);
	char *p = buf + sizeof pre - 1;
	while (n)
		*p++ = digits[--n];
	*p = '\0';
}

/* The descriptor number a /proc/self/fd entry names, or -1. */
static int fd_number(const char *name)
{
	long v = 0;
	if (!*name)
		return -1;
	for (; *name; name++) {
		if (*name < '0' || *name > '9')
			return -1;
		v = v * 10 + (*name - '0');
		if (v > INT_MAX)
			return -1;
	}
	return (int)v;
}

static int listed(const struct ckpt__pown *own, int fd)
{
	for (size_t i = 0; own && i < own->nfds; i++)
		if (own->fds[i] == fd)
			return 1;
	return 0;
}

static long sys_fcntl(int fd, int cmd, long arg)
{
	return ckpt__sys3(SYS_fcntl, fd, cmd, arg);
}

static void sys_close(int fd)
{
	if (fd >= 0)
		ckpt__sys3(SYS_close, fd, 0, 0);
}

static int scan_fd(const char *name, unsigned type, void *arg)
{
	(void)type;
	struct scan *sc = arg;
	int fd = fd_number(name);
	/* 0-2 are the new process's own, as for files (proc.c). */
	if (fd < 3 || fd == sc->dfd || listed(sc->own, fd))
		return 0;
	struct stat st;
	if (ckpt__sys3(SYS_fstat, fd, (long)&st, 0) < 0 || !S_ISFIFO(st.st_mode))
		return 0;
	/* An anonymous pipe reads as pipe:[INODE]; a named FIFO as its path
	 * (a file of the file system, another process's to open too). */
	char path[32], link[16];
	fd_path(path, fd);
	long len = ckpt__sys6(SYS_readlinkat, AT_FDCWD, (long)path, (long)link, sizeof link, 0, 0);
	if (len < 5 || memcmp(link, "pipe:", 5))
		return 0;
	long flags = sys_fcntl(fd, F_GETFL, 0), fdflags = sys_fcntl(fd, F_GETFD, 0);
	if (flags < 0 || fdflags < 0)
		return 0; /* closed since: not the program's any more */
	if (ckpt__mem_grow((void **)&sc->v, &sc->cap, sc->n + 1, sizeof *sc->v)) {
		sc->err = ckpt__fail(CKPT_ENOMEM, "ckpt_commit: out of memory listing pipes");
		return 1;
	}
	sc->v[sc->n++] = (struct pfd){.fd = fd,
				      .acc = (int)(flags & O_ACCMODE),
				      .flags = (int)flags,
				      .fdflags = (int)fdflags,
				      .dev = (uint64_t)st.st_dev,
				      .ino = (uint64_t)st.st_ino};
	return 0;
}

/* Whether descriptors a and b have one open file description. */
static int same_description(const struct pfd *a, const struct pfd *b)
{
	long pid = ckpt__sys3(SYS_getpid, 0, 0, 0);
	long r = ckpt__sys6(SYS_kcmp, pid, pid, KCMP_FILE, a->fd, b->fd, 0);
	if (r >= 0)
		return r == 0;
	return a->flags == b->flags; /* no kcmp here */
}

/* Whether the other end of the pipe fd is gone from every process: no
 * writer left for a read end (POLLHUP), no reader for a write end
 * (POLLERR).  A read end opened through /proc never reports POLLHUP (the
 * kernel compares it with the writers it saw at its opening): taken as
 * not gone, so not recorded. */
static int peer_gone(int fd, short ev)
{
	struct pollfd p = {.fd = fd};
	struct timespec zero = {0, 0};
	long r = ckpt__sys6(SYS_ppoll, (long)&p, 1, (long)&zero, 0, 8, 0);
	return r > 0 && (p.revents & ev);
}

/* The bytes pipe rfd holds, `avail` of them (FIONREAD) in a pipe of `cap`
 * bytes, copied into buf (cap bytes) without consuming them; *got how
 * many.  0 or a negative errno. */
static long peek(int rfd, long cap, long avail, unsigned char *buf, long *got)
{
	int t[2];
	long rc = ckpt__sys3(SYS_pipe2, (long)t, O_CLOEXEC | O_NONBLOCK, 0);
	if (rc < 0)
		return rc;
	/* As many buffer slots as the program's pipe: tee copies whole
	 * buffers, and a partly read one takes a slot of its own.  If the
	 * capacity cannot be had, what fits is checked below. */
	if (sys_fcntl(t[1], F_GETPIPE_SZ, 0) < cap)
		sys_fcntl(t[1], F_SETPIPE_SZ, cap);
	long n = ckpt__sys6(SYS_tee, rfd, t[1], cap, SPLICE_F_NONBLOCK, 0, 0);
	if (n >= 0 && n < avail)
		n = -ENOSPC; /* the temporary pipe took only part of it */
	for (long off = 0; n > 0 && off < n;) {
		long r = ckpt__sys3(SYS_read, t[0], (long)(buf + off), n - off);
		if (r == -EINTR)
			continue;
		if (r <= 0) {
			n = r < 0 ? r : -EIO;
			break;
		}
		off += r;
	}
	sys_close(t[0]);
	sys_close(t[1]);
	if (n < 0)
		return n;
	*got = n;
	return 0;
}

/* One PIPE entry for the descriptors v[idx[0..k)], of one pipe. */
static int record_one(struct ckpt__pbuf *b, const struct pfd *v, const size_t *idx, size_t k)
{
	/* A read end to read the content through; a pipe of write ends
	 * only (no reader left anywhere) holds nothing anyone can read. */
	const struct pfd *r = &v[idx[0]];
	for (size_t i = 0; i < k; i++)
		if (v[idx[i]].acc == O_RDONLY) {
			r = &v[idx[i]];
			break;
		}
	unsigned long long ino = (unsigned long long)r->ino;
	if (k > UINT16_MAX)
		return ckpt__fail(CKPT_ENOTSUP,
				  "ckpt_commit: pipe:[%llu] has %zu descriptors, more than a "
				  "record holds",
				  ino, k);
	long cap = sys_fcntl(r->fd, F_GETPIPE_SZ, 0);
	int avail = 0;
	long rc = cap;
	if (cap > 0)
		rc = r->acc == O_RDONLY ? ckpt__sys3(SYS_ioctl, r->fd, FIONREAD, (long)&avail) : 0;
	if (rc >= 0 && (avail < 0 || avail > cap))
		rc = -EIO;
	if (rc < 0)
		return ckpt__fail(ckpt__from_errno((int)-rc),
				  "ckpt_commit: pipe:[%llu] (descriptor %d): cannot read its size: %s",
				  ino, r->fd, strerrordesc_np((int)-rc));
	size_t hlen = sizeof(struct ckpt__ppipe) + k * sizeof(struct ckpt__ppipe_fd);
	unsigned char *h = ckpt__mem_alloc(hlen);
	unsigned char *content = avail ? ckpt__mem_alloc((size_t)cap) : NULL;
	if (!h || (avail && !content)) {
		rc = ckpt__fail(CKPT_ENOMEM, "ckpt_commit: out of memory recording pipe:[%llu]",
				ino);
		goto out;
	}
	long got = 0;
	if (avail && (rc = peek(r->fd, cap, avail, content, &got)) < 0) {
		rc = ckpt__fail(ckpt__from_errno((int)-rc),
				"ckpt_commit: pipe:[%llu] (descriptor %d): "
				"cannot read the %d bytes it holds: %s",
				ino, r->fd, avail, strerrordesc_np((int)-rc));
		goto out;
	}
	struct ckpt__ppipe ph = {
	    .ino = r->ino, .capacity = (uint32_t)cap, .nfds = (uint32_t)k, .len = (uint32_t)got};
	memcpy(h, &ph, sizeof ph);
	struct ckpt__ppipe_fd *pf = (struct ckpt__ppipe_fd *)(h + sizeof ph);
	for (size_t i = 0; i < k; i++) {
		const struct pfd *d = &v[idx[i]];
		uint16_t end = d->acc == O_RDONLY ? CKPT__PP_READ : CKPT__PP_WRITE;
		pf[i] = (struct ckpt__ppipe_fd){.fd = d->fd,
						.end = end,
						.share = (uint16_t)i,
						.flags = d->flags,
						.fdflags = d->fdflags};
		for (size_t j = 0; j < i; j++)
			if (pf[j].end == end && same_description(d, &v[idx[j]])) {
				pf[i].share = pf[j].share;
				break;
			}
	}
	ckpt__pbuf_add(b, CKPT__PE_PIPE, h, hlen, content, (size_t)got);
	rc = b->err;
out:
	if (h)
		ckpt__mem_free(h, hlen);
	if (content)
		ckpt__mem_free(content, (size_t)cap);
	return (int)rc;
}

int ckpt__pipes_record(struct ckpt__pbuf *b, const struct ckpt__pown *own)
{
	struct scan sc = {.own = own};
	sc.dfd = (int)ckpt__sys6(SYS_openat, AT_FDCWD, (long)"/proc/self/fd",
				 O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, 0, 0);
	if (sc.dfd < 0)
		return ckpt__fail(ckpt__from_errno(-sc.dfd),
				  "ckpt_commit: cannot list /proc/self/fd: %s",
				  strerrordesc_np(-sc.dfd));
	int rc = ckpt__dir_foreach(sc.dfd, scan_fd, &sc);
	sys_close(sc.dfd);
	if (sc.err)
		rc = sc.err;
	else if (rc < 0)
		rc = ckpt__fail(rc, "ckpt_commit: cannot list /proc/self/fd");
	/* Grouped by pipe, in the order of their first descriptor. */
	size_t *idx = rc || !sc.n ? NULL : ckpt__mem_alloc(sc.n * sizeof *idx);
	if (!rc && sc.n && !idx)
		rc = ckpt__fail(CKPT_ENOMEM, "ckpt_commit: out of memory listing pipes");
	for (size_t i = 0; !rc && i < sc.n; i++) {
		if (sc.v[i].done)
			continue;
		size_t k = 0;
		int readers = 0, writers = 0, both = 0;
		for (size_t j = i; j < sc.n; j++) {
			if (sc.v[j].done || sc.v[j].ino != sc.v[i].ino ||
			    sc.v[j].dev != sc.v[i].dev)
				continue;
			sc.v[j].done = 1;
			idx[k++] = j;
			readers += sc.v[j].acc == O_RDONLY;
			writers += sc.v[j].acc == O_WRONLY;
			both += sc.v[j].acc == O_RDWR;
		}
		/* The process's alone: both ends here, or one end here and
		 * the other closed everywhere (a reader then reads what is
		 * left, then end of file; a writer gets EPIPE).  Else the
		 * other end is another process's.  A descriptor open for
		 * both (reopened through /proc) is not made again. */
		const struct pfd *first = &sc.v[idx[0]];
		if (!both && ((readers && writers) || (readers && peer_gone(first->fd, POLLHUP)) ||
			      (writers && !readers && peer_gone(first->fd, POLLERR))))
			rc = record_one(b, sc.v, idx, k);
	}
	if (idx)
		ckpt__mem_free(idx, sc.n * sizeof *idx);
	ckpt__mem_array_free((void **)&sc.v, &sc.cap, sizeof *sc.v);
	return rc;
}

/* ---- resuming ---------------------------------------------------------------- */

struct ckpt__rpipe {
	struct ckpt__ppipe h;
	unsigned char *ent; /* the entry, copied */
	size_t ent_len;
	const struct ckpt__ppipe_fd *fds; /* in ent */
	const unsigned char *content;	  /* in ent */
	int *src; /* per descriptor: what it is placed from (ckpt's, made); -1 */
};

int ckpt__pipes_has_fd(const struct ckpt__rpipes *s, int fd)
{
	for (size_t i = 0; i < s->nnums; i++)
		if (s->nums[i] == fd)
			return 1;
	return 0;
}

int ckpt__pipes_take(struct ckpt__rpipes *s, const unsigned char *p, size_t len)
{
	struct ckpt__ppipe h;
	const size_t fsz = sizeof(struct ckpt__ppipe_fd);
	if (len < sizeof h)
		return CKPT_ECORRUPT;
	memcpy(&h, p, sizeof h);
	if (h.nfds < 1 || h.nfds > (len - sizeof h) / fsz ||
	    len - sizeof h - h.nfds * fsz != h.len || !h.capacity || h.capacity > INT_MAX ||
	    h.len > h.capacity)
		return CKPT_ECORRUPT;
	unsigned char *ent = ckpt__mem_alloc(len);
	int *src = ckpt__mem_alloc(h.nfds * sizeof *src);
	int rc = ent && src ? 0 : CKPT_ENOMEM;
	if (!rc)
		memcpy(ent, p, len);
	const struct ckpt__ppipe_fd *f = (const struct ckpt__ppipe_fd *)(ent + sizeof h);
	int ends = 0;
	for (uint32_t i = 0; !rc && i < h.nfds; i++) {
		src[i] = -1;
		if (f[i].fd < 0 || f[i].end > CKPT__PP_WRITE || f[i].share > i ||
		    f[f[i].share].share != f[i].share || f[f[i].share].end != f[i].end ||
		    ckpt__pipes_has_fd(s, f[i].fd))
			rc = CKPT_ECORRUPT;
		for (uint32_t j = 0; !rc && j < i; j++)
			if (f[j].fd == f[i].fd)
				rc = CKPT_ECORRUPT;
		ends |= 1 << f[i].end;
	}
	/* Content only where there is a reader. */
	if (!rc && !(ends & (1 << CKPT__PP_READ)) && h.len)
		rc = CKPT_ECORRUPT;
	if (!rc &&
	    (ckpt__mem_grow((void **)&s->p, &s->cap, s->n + 1, sizeof *s->p) ||
	     ckpt__mem_grow((void **)&s->nums, &s->nums_cap, s->nnums + h.nfds, sizeof *s->nums)))
		rc = CKPT_ENOMEM;
	if (rc) {
		if (ent)
			ckpt__mem_free(ent, len);
		if (src)
			ckpt__mem_free(src, h.nfds * sizeof *src);
		return rc;
	}
	for (uint32_t i = 0; i < h.nfds; i++)
		s->nums[s->nnums++] = f[i].fd;
	s->p[s->n++] = (struct ckpt__rpipe){h, ent, len, f, ent + sizeof h + h.nfds * fsz, src};
	return 0;
}

void ckpt__pipes_close(struct ckpt__rpipes *s)
{
	for (size_t i = 0; i < s->n; i++) {
		struct ckpt__rpipe *p = &s->p[i];
		for (uint32_t k = 0; k < p->h.nfds; k++) {
			/* A shared description is closed once, by its first. */
			if (p->fds[k].share == k && p->src[k] >= 0)
				close(p->src[k]);
			p->src[k] = -1;
		}
	}
}

/* "descriptors 5, 6 and 9" of a recorded pipe, for messages. */
static const char *numbers(const struct ckpt__rpipe *p, char *buf, size_t sz)
{
	size_t at = 0;
	for (uint32_t k = 0; k < p->h.nfds && at < sz; k++) {
		const char *sep = k == 0 ? "" : k + 1 == p->h.nfds ? " and " : ", ";
		int n = snprintf(buf + at, sz - at, "%s%d", sep, p->fds[k].fd);
		at += n > 0 ? (size_t)n : 0;
	}
	return buf;
}

static int make_one(struct ckpt__rpipe *p)
{
	const char *what = "make it again";
	int e = ckpt__inject(CKPT__IO_OPEN), t[2] = {-1, -1};
	if (!e && pipe2(t, O_CLOEXEC | O_NONBLOCK) != 0)
		e = errno;
	if (!e && fcntl(t[1], F_GETPIPE_SZ) != (int)p->h.capacity &&
	    fcntl(t[1], F_SETPIPE_SZ, (int)p->h.capacity) < 0) {
		e = errno;
		what = "give it its capacity";
	}
	/* O_NONBLOCK: what does not fit fails here, not hangs. */
	for (size_t off = 0; !e && off < p->h.len;) {
		ssize_t n = write(t[1], p->content + off, p->h.len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			e = n < 0 ? errno : EIO;
			what = "write back what it held";
		} else {
			off += (size_t)n;
		}
	}
	/* The first descriptor of each end holds the made one (and shares
	 * it with the later ones of its description); another description
	 * of an end is opened through /proc, as the program's was.  An end
	 * with no descriptor recorded is closed: it was closed everywhere. */
	int first[2] = {-1, -1};
	for (uint32_t k = 0; !e && k < p->h.nfds; k++) {
		const struct ckpt__ppipe_fd *f = &p->fds[k];
		if (f->share != k)
			continue;
		if (first[f->end] < 0) {
			first[f->end] = (int)k;
			p->src[k] = t[f->end];
			t[f->end] = -1;
			continue;
		}
		char path[32];
		fd_path(path, p->src[first[f->end]]);
		int acc = f->end == CKPT__PP_READ ? O_RDONLY : O_WRONLY;
		if ((p->src[k] = open(path, acc | O_NONBLOCK | O_CLOEXEC)) < 0) {
			e = errno;
			what = "open an end of it again";
		}
	}
	for (int i = 0; i < 2; i++)
		if (t[i] >= 0)
			close(t[i]);
	if (!e)
		return 0;
	char nums[128];
	return ckpt__fail(ckpt__from_errno(e),
			  "ckpt_open: pipe:[%llu] (descriptor%s %s, %u bytes "
			  "held): cannot %s: %s",
			  (unsigned long long)p->h.ino, p->h.nfds > 1 ? "s" : "",
			  numbers(p, nums, sizeof nums), p->h.len, what, strerror(e));
}

int ckpt__pipes_make(struct ckpt__rpipes *s)
{
	int rc = 0;
	for (size_t i = 0; !rc && i < s->n; i++)
		rc = make_one(&s->p[i]);
	if (rc)
		ckpt__pipes_close(s);
	return rc;
}

int ckpt__pipes_place(struct ckpt__rpipes *s)
{
	int rc = 0;
	for (size_t i = 0; i < s->n; i++) {
		const struct ckpt__rpipe *p = &s->p[i];
		for (uint32_t k = 0; k < p->h.nfds; k++) {
			const struct ckpt__ppipe_fd *f = &p->fds[k];
			int from = p->src[f->share];
			int ok =
			    from >= 0 &&
			    (from == f->fd ||
			     dup3(from, f->fd, (f->fdflags & FD_CLOEXEC) ? O_CLOEXEC : 0) >= 0) &&
			    fcntl(f->fd, F_SETFD, f->fdflags & FD_CLOEXEC) == 0 &&
			    fcntl(f->fd, F_SETFL, f->flags) == 0;
			if (!ok && !rc)
				rc = ckpt__fail(from < 0 ? CKPT_EINTERNAL : ckpt__from_errno(errno),
						"ckpt_open: cannot place pipe:[%llu] at %d: %s",
						(unsigned long long)p->h.ino, f->fd,
						from < 0 ? "it was not made" : strerror(errno));
		}
	}
	ckpt__pipes_close(s);
	return rc;
}

void ckpt__pipes_free(struct ckpt__rpipes *s)
{
	ckpt__pipes_close(s);
	for (size_t i = 0; i < s->n; i++) {
		ckpt__mem_free(s->p[i].ent, s->p[i].ent_len);
		ckpt__mem_free(s->p[i].src, s->p[i].h.nfds * sizeof *s->p[i].src);
	}
	ckpt__mem_array_free((void **)&s->p, &s->cap, sizeof *s->p);
	ckpt__mem_array_free((void **)&s->nums, &s->nums_cap, sizeof *s->nums);
	s->n = s->nnums = 0;
}
