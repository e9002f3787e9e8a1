/*
 * proc.c - building and walking the process record (proc.h).
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The record is gathered inside ckpt_commit, while the program's memory is
 * being snapshotted, so nothing here allocates from the program's heap: no
 * opendir, no stdio; buffers come from ckpt's own memory.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "proc.h"
#include "commit.h"
#include "dir.h"
#include "error.h"
#include "maps.h"
#include "mem.h"
#include "track.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static void grow(struct ckpt__pbuf *b, size_t more)
{
	if (b->err || b->n + more <= b->cap)
		return;
	size_t ncap = b->cap ? b->cap : 65536;
	while (ncap < b->n + more)
		ncap *= 2;
	unsigned char *n = ckpt__mem_alloc(ncap);
	if (!n) {
		b->err = CKPT_ENOMEM;
		return;
	}
	if (b->p) {
		memcpy(n, b->p, b->n);
		ckpt__mem_free(b->p, b->cap);
	}
	b->p = n;
	b->cap = ncap;
}

void ckpt__pbuf_add(struct ckpt__pbuf *b, uint32_t type, const void *a, size_t alen,
		    const void *c, size_t clen)
{
	if (!b->n) {
		grow(b, 16);
		if (b->err)
			return;
		memcpy(b->p, CKPT__PROC_MAGIC, 8);
		uint32_t v[2] = {CKPT__PROC_VERSION, 0};
		memcpy(b->p + 8, v, 8);
		b->n = 16;
	}
	size_t len = alen + clen, padded = (len + 7) & ~(size_t)7;
	if (len > UINT32_MAX) {
		b->err = CKPT_EINVAL;
		return;
	}
	grow(b, 8 + padded);
	if (b->err)
		return;
	uint32_t h[2] = {type, (uint32_t)len};
	memcpy(b->p + b->n, h, 8);
	if (alen)
		memcpy(b->p + b->n + 8, a, alen);
	if (clen)
		memcpy(b->p + b->n + 8 + alen, c, clen);
	memset(b->p + b->n + 8 + len, 0, padded - len);
	b->n += 8 + padded;
}

void ckpt__pbuf_free(struct ckpt__pbuf *b)
{
	if (b->p)
		ckpt__mem_free(b->p, b->cap);
	memset(b, 0, sizeof *b);
}

int ckpt__proc_walk(const void *rec, size_t size,
		    int (*fn)(uint32_t type, const unsigned char *p, size_t len, void *arg), void *arg)
{
	const unsigned char *p = rec;
	if (size < 16 || memcmp(p, CKPT__PROC_MAGIC, 8) != 0)
		return ckpt__fail(CKPT_ECORRUPT, "process record: bad magic");
	uint32_t v;
	memcpy(&v, p + 8, 4);
	if (v != CKPT__PROC_VERSION)
		return ckpt__fail(CKPT_EVERSION, "process record: version %u, this ckpt reads %u", v,
				  CKPT__PROC_VERSION);
	size_t at = 16;
	while (at < size) {
		uint32_t h[2];
		if (size - at < 8)
			return ckpt__fail(CKPT_ECORRUPT, "process record: truncated entry header");
		memcpy(h, p + at, 8);
		size_t padded = ((size_t)h[1] + 7) & ~(size_t)7;
		if (padded > size - at - 8)
			return ckpt__fail(CKPT_ECORRUPT, "process record: entry of %u bytes overruns it",
					  h[1]);
		int rc = fn(h[0], p + at + 8, h[1], arg);
		if (rc)
			return rc;
		at += 8 + padded;
	}
	return 0;
}

/* ---- gathering ------------------------------------------------------------- */

/* Reads a whole /proc file into ckpt memory; *len its size.  NULL on failure. */
static char *slurp(const char *path, size_t *len, size_t *cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	size_t c = 16384, n = 0;
	char *buf = ckpt__mem_alloc(c);
	while (buf) {
		if (n == c) {
			char *nb = ckpt__mem_alloc(c * 2);
			if (nb)
				memcpy(nb, buf, n);
			ckpt__mem_free(buf, c);
			buf = nb;
			c *= 2;
			if (!buf)
				break;
		}
		ssize_t r = read(fd, buf + n, c - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	*len = n;
	*cap = c;
	return buf;
}

static void add_file(struct ckpt__pbuf *b, uint32_t type, const char *path)
{
	size_t n = 0, cap = 0;
	char *s = slurp(path, &n, &cap);
	if (!s) {
		b->err = ckpt__fail(CKPT_EIO, "cannot read %s", path);
		return;
	}
	ckpt__pbuf_add(b, type, s, n, NULL, 0);
	ckpt__mem_free(s, cap);
}

int ckpt__proc_in_dir(const char *path, size_t len, uint64_t dir_dev, uint64_t dir_ino)
{
	/* The directory part is the path up to its last slash: " (deleted)"
	 * only ever follows the file's own name. */
	const char *slash = len && path[0] == '/' ? memrchr(path, '/', len) : NULL;
	char dir[PATH_MAX];
	size_t n = slash == path ? 1 : (size_t)(slash - path);
	if (!slash || n >= sizeof dir)
		return 0;
	memcpy(dir, path, n);
	dir[n] = '\0';
	struct stat st;
	return stat(dir, &st) == 0 && (uint64_t)st.st_dev == dir_dev &&
	       (uint64_t)st.st_ino == dir_ino;
}

static int listed(const struct ckpt__pown *own, long fd)
{
	for (size_t i = 0; own && i < own->nfds; i++)
		if (own->fds[i] == fd)
			return 1;
	return 0;
}

struct fd_walk {
	struct ckpt__pbuf *b;
	const struct ckpt__pown *own;
	int dfd;
	int have_chain;
	struct stat chain;
	char *path;
};

static int add_fd(const char *name, unsigned type, void *arg)
{
	(void)type;
	struct fd_walk *w = arg;
	char *end;
	long fd = strtol(name, &end, 10);
	if (*end || end == name || fd < 3 || fd == w->dfd || listed(w->own, fd))
		return 0;
	struct stat st;
	if (fstat((int)fd, &st) != 0)
		return 0;
	char link[64];
	snprintf(link, sizeof link, "/proc/self/fd/%ld", fd);
	ssize_t len = readlink(link, w->path, PATH_MAX - 1);
	if (len <= 0)
		return 0;
	if (!S_ISREG(st.st_mode)) {
		/* Sockets, pipes, devices: not restored (the program's own
		 * pipes are pipes.c's), but their numbers are the program's (it
		 * may close them), never ckpt's; ckpt's own
		 * userfaultfd is not one of them. */
		static const char uffd[] = "anon_inode:[userfaultfd]";
		if ((size_t)len == sizeof uffd - 1 && !memcmp(w->path, uffd, sizeof uffd - 1))
			return 0;
		int32_t num[2] = {(int32_t)fd, fcntl((int)fd, F_GETFD)};
		ckpt__pbuf_add(w->b, CKPT__PE_FDNUM, num, sizeof num, NULL, 0);
		return 0;
	}
	/* /proc files name this process: not a program's file. */
	if (len >= 6 && !memcmp(w->path, "/proc/", 6))
		return 0;
	/* ckpt's: reopening a snapshot file would hand it to the resumed
	 * program, and a compacted chain no longer has it. */
	if (w->have_chain && ckpt__proc_in_dir(w->path, (size_t)len, (uint64_t)w->chain.st_dev,
					       (uint64_t)w->chain.st_ino))
		return 0;
	struct ckpt__pfd f = {
		.fd = (int32_t)fd,
		.flags = fcntl((int)fd, F_GETFL),
		.fdflags = fcntl((int)fd, F_GETFD),
		.offset = lseek((int)fd, 0, SEEK_CUR),
		.size = st.st_size,
		.ino = st.st_ino,
		.dev = st.st_dev,
	};
	ckpt__pbuf_add(w->b, CKPT__PE_FD, &f, sizeof f, w->path, (size_t)len);
	return 0;
}

static void add_fds(struct ckpt__pbuf *b, const struct ckpt__pown *own)
{
	struct fd_walk w = {.b = b, .own = own};
	w.dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (w.dfd < 0) {
		b->err = ckpt__fail(CKPT_EIO, "cannot list /proc/self/fd: %s", strerror(errno));
		return;
	}
	w.have_chain = own && own->chain_dirfd >= 0 && fstat(own->chain_dirfd, &w.chain) == 0;
	w.path = ckpt__mem_alloc(PATH_MAX);
	if (!w.path)
		b->err = CKPT_ENOMEM;
	else if (ckpt__dir_foreach(w.dfd, add_fd, &w) < 0 && !b->err)
		b->err = ckpt__fail(CKPT_EIO, "cannot list /proc/self/fd");
	if (w.path)
		ckpt__mem_free(w.path, PATH_MAX);
	close(w.dfd);
}

static int add_lib(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	struct ckpt__pbuf *b = arg;
	unsigned char bid[64];
	size_t bidlen = 0;
	ckpt__phdr_build_id(info, bid, &bidlen);
	const char *name = info->dlpi_name ? info->dlpi_name : "";
	size_t nl = strlen(name);
	struct ckpt__plib l = {info->dlpi_addr, (uint32_t)nl, (uint32_t)bidlen};
	unsigned char tmp[sizeof l + PATH_MAX + 64];
	if (nl > PATH_MAX)
		return 0;
	memcpy(tmp, &l, sizeof l);
	memcpy(tmp + sizeof l, name, nl);
	memcpy(tmp + sizeof l + nl, bid, bidlen);
	ckpt__pbuf_add(b, CKPT__PE_LIB, tmp, sizeof l + nl + bidlen, NULL, 0);
	return 0;
}

uint64_t ckpt__start_brk(void)
{
	size_t n = 0, cap = 0;
	char *s = slurp("/proc/self/stat", &n, &cap);
	uint64_t v = 0;
	if (!s)
		return 0;
	char *p = n ? memrchr(s, ')', n) : NULL;
	if (p) {
		p += 2; /* field 3 */
		for (int field = 3; field < 47 && p < s + n; field++) {
			p = memchr(p, ' ', (size_t)(s + n - p));
			if (!p)
				break;
			p++;
		}
		if (p && p < s + n)
			v = strtoull(p, NULL, 10);
	}
	ckpt__mem_free(s, cap);
	return v;
}

static unsigned read_umask(void)
{
	size_t n = 0, cap = 0;
	char *s = slurp("/proc/self/status", &n, &cap);
	unsigned v = 022;
	if (s) {
		char *p = n ? memmem(s, n, "\nUmask:", 7) : NULL;
		if (p)
			v = (unsigned)strtoul(p + 7, NULL, 8);
		ckpt__mem_free(s, cap);
	}
	return v;
}

int ckpt__proc_gather(struct ckpt__pbuf *b, const struct ckpt__pown *own)
{
	sigset_t set;
	pthread_sigmask(SIG_BLOCK, NULL, &set);
	uint64_t mask = 0;
	for (int sig = 1; sig <= 64; sig++)
		if (sigismember(&set, sig) == 1)
			mask |= 1ull << (sig - 1);
	ckpt__pbuf_add(b, CKPT__PE_SIGMASK, &mask, sizeof mask, NULL, 0);

	/* Dispositions as the program sees them (ckpt's own SIGSEGV handler
	 * answers with the program's).  32 and 33 belong to glibc. */
	for (int sig = 1; sig < 65; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP || sig == 32 || sig == 33)
			continue;
		struct sigaction sa;
		if (sigaction(sig, NULL, &sa) != 0)
			continue;
		if (sa.sa_handler == SIG_DFL && !sa.sa_flags)
			continue;
		struct ckpt__psig ps = {.sig = (uint32_t)sig,
					.handler = (uint64_t)(uintptr_t)sa.sa_handler,
					.flags = (uint64_t)(unsigned)sa.sa_flags};
		for (int s = 1; s <= 64; s++)
			if (sigismember(&sa.sa_mask, s) == 1)
				ps.mask |= 1ull << (s - 1);
		ckpt__pbuf_add(b, CKPT__PE_SIGACT, &ps, sizeof ps, NULL, 0);
	}

	char *cwd = ckpt__mem_alloc(PATH_MAX);
	if (cwd && getcwd(cwd, PATH_MAX))
		ckpt__pbuf_add(b, CKPT__PE_CWD, cwd, strlen(cwd), NULL, 0);
	if (cwd)
		ckpt__mem_free(cwd, PATH_MAX);
	uint32_t um = read_umask();
	ckpt__pbuf_add(b, CKPT__PE_UMASK, &um, sizeof um, NULL, 0);
	uint64_t brk[2] = {ckpt__start_brk(), (uint64_t)syscall(SYS_brk, 0)};
	ckpt__pbuf_add(b, CKPT__PE_BRK, brk, sizeof brk, NULL, 0);
	add_fds(b, own);

	struct ckpt__maps m = {0};
	if (ckpt__maps_read(&m) != 0) {
		b->err = b->err ? b->err : CKPT_EIO;
	} else {
		struct ckpt__rtab *tab = ckpt__T ? ckpt__rcu_enter() : NULL;
		for (size_t i = 0; i < m.n; i++) {
			const struct ckpt__vma *v = &m.v[i];
			/* Tracked memory is the snapshot's mapping table; its
			 * protection here is ckpt's, not the program's. */
			if ((tab && ckpt__rtab_find(tab, v->start)) || ckpt__mem_is_own(v->start, v->end))
				continue;
			struct ckpt__pvma pv = {v->start, v->end, v->offset, v->inode,
						((v->perms & CKPT__VMA_R) ? CKPT__PV_R : 0) |
							((v->perms & CKPT__VMA_W) ? CKPT__PV_W : 0) |
							((v->perms & CKPT__VMA_X) ? CKPT__PV_X : 0) |
							((v->perms & CKPT__VMA_SHARED) ? CKPT__PV_SHARED
										       : 0),
						0};
			ckpt__pbuf_add(b, CKPT__PE_VMA, &pv, sizeof pv, v->path, strlen(v->path));
		}
		if (ckpt__T)
			ckpt__rcu_exit();
	}
	ckpt__maps_free(&m);
	dl_iterate_phdr(add_lib, b);
	add_file(b, CKPT__PE_ARGV, "/proc/self/cmdline");
	add_file(b, CKPT__PE_ENV, "/proc/self/environ");
	return b->err;
}
