/*
 * helpers.c - shared helpers of the end-to-end suites.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "helpers.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

size_t pagesz(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

static int collect_one(const ckpt_page_run *run, void *arg)
{
	struct dset *s = arg;
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->r = realloc(s->r, s->cap * sizeof *s->r);
		if (!s->r)
			return -1;
	}
	struct drun *d = &s->r[s->n++];
	d->start = run->start;
	d->npages = run->npages;
	snprintf(d->mapping, sizeof d->mapping, "%s", run->mapping);
	s->pages += run->npages;
	return 0;
}

int dset_collect(ckpt_t *c, struct dset *s)
{
	s->n = 0;
	s->pages = 0;
	/* Reserve room first: growing the array inside the callback writes
	 * the heap, which is fine, but keeps the set stable to look at. */
	if (!s->r) {
		s->cap = 1 << 16;
		s->r = malloc(s->cap * sizeof *s->r);
	}
	return ckpt_dirty_foreach(c, collect_one, s);
}

void dset_free(struct dset *s)
{
	free(s->r);
	memset(s, 0, sizeof *s);
}

static const struct drun *find(const struct dset *s, uintptr_t a)
{
	size_t lo = 0, hi = s->n, ps = pagesz();
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct drun *r = &s->r[mid];
		if (r->start + r->npages * ps <= a)
			lo = mid + 1;
		else if (r->start > a)
			hi = mid;
		else
			return r;
	}
	return NULL;
}

int dset_has(const struct dset *s, const void *addr)
{
	return find(s, (uintptr_t)addr) != NULL;
}

size_t dset_count_in(const struct dset *s, const void *p, size_t npages)
{
	size_t n = 0;
	for (size_t i = 0; i < npages; i++)
		n += dset_has(s, (const char *)p + i * pagesz());
	return n;
}

const char *dset_name(const struct dset *s, const void *addr)
{
	const struct drun *r = find(s, (uintptr_t)addr);
	return r ? r->mapping : NULL;
}

int dset_check_shape(const struct dset *s)
{
	size_t ps = pagesz();
	for (size_t i = 0; i < s->n; i++) {
		if (s->r[i].start % ps || s->r[i].npages == 0)
			return -1;
		if (i && s->r[i - 1].start + s->r[i - 1].npages * ps > s->r[i].start)
			return -1; /* unsorted or overlapping */
		if (i && s->r[i - 1].start + s->r[i - 1].npages * ps == s->r[i].start &&
		    !strcmp(s->r[i - 1].mapping, s->r[i].mapping))
			return -1; /* not maximal */
	}
	return 0;
}

void *map_anon(size_t npages, int fill)
{
	void *p = mmap(NULL, npages * pagesz(), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(p, MAP_FAILED, "mmap of %zu pages failed", npages);
	memset(p, fill, npages * pagesz());
	return p;
}

char *maps_lines(uintptr_t lo, uintptr_t hi)
{
	FILE *f = fopen("/proc/self/maps", "r");
	cr_assert(f);
	size_t cap = 1 << 16, len = 0;
	char *out = malloc(cap), line[4200];
	out[0] = '\0';
	while (fgets(line, sizeof line, f)) {
		unsigned long a, b;
		if (sscanf(line, "%lx-%lx", &a, &b) != 2 || b <= lo || a >= hi)
			continue;
		size_t l = strlen(line);
		if (len + l + 1 > cap)
			out = realloc(out, cap *= 2);
		memcpy(out + len, line, l + 1);
		len += l;
	}
	fclose(f);
	return out;
}

const char *perms_of(const void *addr, char out[8])
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[4200];
	out[0] = '\0';
	while (f && fgets(line, sizeof line, f)) {
		unsigned long a, b;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s", &a, &b, perms) == 3 && a <= (uintptr_t)addr &&
		    (uintptr_t)addr < b) {
			snprintf(out, 8, "%s", perms);
			break;
		}
	}
	if (f)
		fclose(f);
	return out;
}

ckpt_t *begin_tracking(unsigned flags)
{
	ckpt_t *c = NULL;
	ckpt_options o;
	ckpt_options_init(&o);
	o.backend = CKPT_BACKEND_AUTO; /* CKPT_BACKEND in the environment decides */
	o.flags = flags;
	int rc = ckpt_open(&c, NULL, &o);
	cr_assert_eq(rc, 0, "ckpt_open: %s (%s)", ckpt_strerror(rc), ckpt_last_error());
	rc = ckpt_begin(c);
	cr_assert_eq(rc, 0, "ckpt_begin: %s (%s)", ckpt_strerror(rc), ckpt_last_error());
	return c;
}

int backend_of(ckpt_t *c)
{
	ckpt_stats st;
	cr_assert_eq(ckpt_stats(c, &st), 0);
	return st.backend;
}

int uffd_wp_bit(const void *p)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	uint64_t e = 0;
	ssize_t n = pread(fd, &e, sizeof e, (off_t)((uintptr_t)p / pagesz() * sizeof e));
	close(fd);
	cr_assert_eq(n, (ssize_t)sizeof e);
	return (int)((e >> 57) & 1);
}

int write_protected(const void *p)
{
	char perms[8];
	perms_of(p, perms);
	if (perms[0] && perms[1] != 'w')
		return 1;
	return uffd_wp_bit(p);
}

/* ---- checks in a child process ------------------------------------------------- */

int child_report_fd = -1;

void child_die(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n > 0 && child_report_fd >= 0)
		(void)!write(child_report_fd, msg,
			     (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
	_exit(1);
}

void in_child(void (*fn)(const char *dir), const char *what)
{
	char tmp[] = "/tmp/ckpt-test-XXXXXX", dir[64];
	cr_assert(mkdtemp(tmp));
	snprintf(dir, sizeof dir, "%s/chain", tmp);
	int p[2];
	cr_assert_eq(pipe(p), 0);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(p[0]);
		child_report_fd = p[1];
		fn(dir);
		_exit(0);
	}
	close(p[1]);
	char msg[1024] = "";
	ssize_t n = read(p[0], msg, sizeof msg - 1);
	msg[n > 0 ? n : 0] = '\0';
	close(p[0]);
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	char cmd[256];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
	(void)!system(cmd);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: %s (status %#x)", what,
		  msg[0] ? msg : "child died", st);
}

char *safe_area(ckpt_t *c, size_t bytes)
{
	bytes = (bytes + pagesz() - 1) & ~(pagesz() - 1);
	char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(p != MAP_FAILED);
	CHECK_RC(ckpt_exclude(c, p, bytes));
	return p;
}

ckpt_t *resumable_handle(const char *dir, unsigned flags)
{
	CHECK(personality((unsigned long)personality(0xffffffff) | ADDR_NO_RANDOMIZE) >= 0);
	ckpt_t *c;
	ckpt_options o;
	ckpt_options_init(&o);
	o.flags = CKPT_F_RESUME | flags;
	int rc = ckpt_open(&c, dir, &o);
	if (rc == CKPT_ENOTSUP && strstr(ckpt_last_error(), "AddressSanitizer")) {
		struct stat sb;
		char snap[512];
		snprintf(snap, sizeof snap, "%s/snap-00000001.ckpt", dir);
		CHECK(stat(snap, &sb) != 0);
		return NULL;
	}
	CHECK_RC(rc);
	return c;
}
