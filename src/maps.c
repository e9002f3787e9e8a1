/*
 * maps.c - /proc/self/maps parser.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The streaming reader uses raw system calls and no allocation so that the
 * fault handler can consult the kernel's view of an address (a mapping that
 * mremap moved, a stale fault).  The snapshot reader builds on it.
 */
#include "maps.h"
#include "error.h"
#include "mem.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

CKPT__FAULTPATH static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Parses a hexadecimal field ending at `stop`; advances *p past it. */
CKPT__FAULTPATH static int hexfield(const char **p, const char *end, char stop, uint64_t *out)
{
	const char *s = *p;
	uint64_t v = 0;
	int digits = 0, d;
	while (s < end && (d = hexval(*s)) >= 0) {
		v = (v << 4) | (uint64_t)d;
		s++;
		digits++;
	}
	if (!digits || digits > 16 || s >= end || *s != stop)
		return -1;
	*p = s + 1;
	*out = v;
	return 0;
}

CKPT__FAULTPATH int ckpt__maps_parse_line(char *line, size_t len, struct ckpt__vma *out)
{
	const char *p = line, *end = line + len;
	uint64_t start, stop, off, major, minor, inode = 0;
	if (hexfield(&p, end, '-', &start) || hexfield(&p, end, ' ', &stop))
		return -1;
	if (end - p < 5)
		return -1;
	unsigned perms = 0;
	if (p[0] == 'r')
		perms |= CKPT__VMA_R;
	if (p[1] == 'w')
		perms |= CKPT__VMA_W;
	if (p[2] == 'x')
		perms |= CKPT__VMA_X;
	if (p[3] == 's')
		perms |= CKPT__VMA_SHARED;
	if (p[4] != ' ')
		return -1;
	p += 5;
	if (hexfield(&p, end, ' ', &off) || hexfield(&p, end, ':', &major) ||
	    hexfield(&p, end, ' ', &minor))
		return -1;
	int digits = 0;
	while (p < end && *p >= '0' && *p <= '9') {
		inode = inode * 10 + (uint64_t)(*p - '0');
		p++;
		digits++;
	}
	if (!digits)
		return -1;
	while (p < end && *p == ' ')
		p++;
	line[len] = '\0';
	out->start = (uintptr_t)start;
	out->end = (uintptr_t)stop;
	out->perms = perms;
	out->offset = off;
	out->major = (unsigned)major;
	out->minor = (unsigned)minor;
	out->inode = inode;
	out->path = p;
	return start < stop ? 0 : -1;
}

/* Byte loops instead of memchr/memmove: this runs inside faults, where a
 * sanitizer's interceptor must not run. */
CKPT__FAULTPATH static char *find_nl(char *p, char *end)
{
	for (; p < end; p++)
		if (*p == '\n')
			return p;
	return NULL;
}

CKPT__FAULTPATH static void move_down(char *dst, const char *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = src[i];
}

CKPT__FAULTPATH long ckpt__maps_stream(char *buf, size_t bufsz,
				  int (*fn)(const struct ckpt__vma *, void *), void *arg)
{
	long fd = ckpt__raw_open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fd;
	size_t have = 0;
	int skipping = 0; /* inside a line longer than the buffer */
	long ret = 0;
	for (;;) {
		long n = ckpt__raw_read((int)fd, buf + have, bufsz - 1 - have);
		if (n == -EINTR)
			continue;
		if (n < 0) {
			ret = n;
			break;
		}
		if (n == 0)
			break;
		have += (size_t)n;
		size_t pos = 0;
		for (;;) {
			char *nl = find_nl(buf + pos, buf + have);
			if (!nl)
				break;
			size_t len = (size_t)(nl - (buf + pos));
			if (!skipping) {
				struct ckpt__vma v;
				if (ckpt__maps_parse_line(buf + pos, len, &v) == 0) {
					int r = fn(&v, arg);
					if (r) {
						ret = r;
						goto out;
					}
				}
			}
			skipping = 0;
			pos += len + 1;
		}
		move_down(buf, buf + pos, have - pos);
		have -= pos;
		if (have == bufsz - 1) {
			have = 0;
			skipping = 1;
		}
	}
out:
	ckpt__raw_close((int)fd);
	return ret;
}

struct read_ctx {
	struct ckpt__maps *m;
	int err;
};

static int read_one(const struct ckpt__vma *v, void *arg)
{
	struct read_ctx *rc = arg;
	struct ckpt__maps *m = rc->m;
	size_t plen = strlen(v->path) + 1;
	if (ckpt__mem_grow((void **)&m->v, &m->cap, m->n + 1, sizeof *m->v) ||
	    ckpt__mem_grow((void **)&m->text, &m->text_cap, m->text_len + plen, 1)) {
		rc->err = CKPT_ENOMEM;
		return 1;
	}
	memcpy(m->text + m->text_len, v->path, plen);
	m->v[m->n] = *v;
	/* Paths are stored as offsets until the text stops moving. */
	m->v[m->n].path = (const char *)(uintptr_t)m->text_len;
	m->text_len += plen;
	m->n++;
	return 0;
}

int ckpt__maps_read(struct ckpt__maps *m)
{
	char buf[16384];
	struct read_ctx rc = {m, 0};
	m->n = 0;
	m->text_len = 0;
	long r = ckpt__maps_stream(buf, sizeof buf, read_one, &rc);
	if (rc.err)
		return ckpt__fail(rc.err, "out of memory reading /proc/self/maps");
	if (r < 0)
		return ckpt__fail(ckpt__from_errno((int)-r), "cannot read /proc/self/maps: %s",
				  strerror((int)-r));
	for (size_t i = 0; i < m->n; i++)
		m->v[i].path = m->text + (uintptr_t)m->v[i].path;
	return 0;
}

void ckpt__maps_free(struct ckpt__maps *m)
{
	ckpt__mem_array_free((void **)&m->v, &m->cap, sizeof *m->v);
	ckpt__mem_array_free((void **)&m->text, &m->text_cap, 1);
	m->n = m->text_len = 0;
}

long ckpt__maps_find(const struct ckpt__maps *m, uintptr_t addr)
{
	size_t i = CKPT__FIRST_ENDING_AFTER(m->v, m->n, end, addr);
	return i < m->n && m->v[i].start <= addr ? (long)i : -1;
}

/* Calls fn on the maximal mapped parts of [lo, hi). */
int ckpt__maps_foreach(const struct ckpt__maps *m, uintptr_t lo, uintptr_t hi,
			  int (*fn)(uintptr_t, uintptr_t, const struct ckpt__vma *, void *),
			  void *arg)
{
	for (size_t i = CKPT__FIRST_ENDING_AFTER(m->v, m->n, end, lo);
	     i < m->n && m->v[i].start < hi; i++) {
		uintptr_t s = m->v[i].start > lo ? m->v[i].start : lo;
		uintptr_t e = m->v[i].end < hi ? m->v[i].end : hi;
		if (s < e) {
			int rc = fn(s, e, &m->v[i], arg);
			if (rc)
				return rc;
		}
	}
	return 0;
}

