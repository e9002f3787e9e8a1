/*
 * track-uffd.c - the userfaultfd write-protect back-end (Linux 6.7+).
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Tracked ranges are registered with a userfaultfd in write-protect mode,
 * with the WP_ASYNC feature: the kernel resolves a write to a protected page
 * itself, clearing the page's uffd-wp bit, and no thread waits for anyone.
 * No signal, no mprotect, no mapping split per page; a system call writing
 * into protected memory just works.  WP_UNPOPULATED protects pages that are
 * not there yet (a first touch is a write like any other).
 *
 * The record of what was written is in the page tables: PAGEMAP_SCAN on
 * /proc/self/pagemap lists the pages whose bit is clear (PAGE_IS_WRITTEN)
 * and, with PM_SCAN_WP_MATCHING, sets it again in the same walk.  That walk
 * costs a couple of nanoseconds per page-table entry when the masks are
 * exactly WRITTEN (the kernel's fast path), and is what sync does before
 * anything reads the dirty bitmap.
 *
 * Memory that lost its registration behind ckpt's back (a new mapping in
 * its place) is found by a walk that the kernel skips for registered
 * mappings; it counts as written and is registered again.
 *
 * fork: the child's mappings lose their registration and the inherited
 * descriptors name the parent's memory.  The child notices (its pid is not
 * the one that made them), makes its own, registers every region again and
 * counts every tracked page as written, since its writes before that were
 * not recorded.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "track.h"
#include "bitmap.h"
#include "error.h"
#include "lazy.h"
#include "pagemap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Newer than Debian 12's kernel headers. */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#define CKPT__UFFD_FEATURE_WP_UNPOPULATED (1ull << 13)
#define CKPT__UFFD_FEATURE_WP_ASYNC (1ull << 15)
#define CKPT__UFFD_FEATURES (CKPT__UFFD_FEATURE_WP_UNPOPULATED | CKPT__UFFD_FEATURE_WP_ASYNC)

#define T ckpt__T

struct uffd_state {
	int fd, pm;
	pid_t pid;  /* the process the descriptors belong to */
	int kernel; /* fd takes the kernel's faults too (no UFFD_USER_MODE_ONLY) */
};

/* In libckpt's data, which is never tracked. */
static struct uffd_state U = {-1, -1, 0, 0};
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static int probe_rc;
static char probe_why[192];

/* Write-protection in asynchronous mode needs no more than a descriptor
 * for user-mode faults, which any process may have; one that takes the
 * kernel's faults too (privileged, or vm.unprivileged_userfaultfd=1) is
 * taken when it can be had: a lazy resume registers it for missing pages
 * as well, and the kernel's accesses to those (read, write) must wait for
 * them rather than fail with EFAULT.  *kernel says which it is. */
static int make_uffd(char *why, size_t whylen, int *kernel)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	*kernel = fd >= 0;
	if (fd < 0)
		fd = (int)syscall(SYS_userfaultfd, UFFD_USER_MODE_ONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		int e = errno;
		snprintf(why, whylen, "userfaultfd: %s%s", strerror(e),
			 e == EPERM ? " (vm.unprivileged_userfaultfd, or a seccomp filter)"
			 : e == ENOSYS ? " (a kernel without CONFIG_USERFAULTFD)"
				       : "");
		return -1;
	}
	struct uffdio_api api = {.api = UFFD_API, .features = CKPT__UFFD_FEATURES};
	if (ioctl(fd, UFFDIO_API, &api) != 0 ||
	    (api.features & CKPT__UFFD_FEATURES) != CKPT__UFFD_FEATURES) {
		snprintf(why, whylen,
			 "userfaultfd lacks write-protect WP_ASYNC/WP_UNPOPULATED (Linux 6.7 or "
			 "later)");
		close(fd);
		return -1;
	}
	return fd;
}

static int uffd_register(int fd, uintptr_t lo, uintptr_t hi)
{
	struct uffdio_register r = {.range = {lo, hi - lo}, .mode = UFFDIO_REGISTER_MODE_WP};
	return ioctl(fd, UFFDIO_REGISTER, &r) ? -errno : 0;
}

static int uffd_protect(int fd, uintptr_t lo, uintptr_t hi, int on)
{
	struct uffdio_writeprotect w = {.range = {lo, hi - lo},
					.mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0};
	while (ioctl(fd, UFFDIO_WRITEPROTECT, &w) != 0) {
		if (errno != EAGAIN)
			return -errno;
	}
	return 0;
}

/* One PAGEMAP_SCAN call.  Returns the count of regions or -errno. */
static long scan(int pm, struct ckpt__pm_scan_arg *a)
{
	long n;
	do
		n = ioctl(pm, CKPT__PAGEMAP_SCAN, a);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

/* The written pages of [lo, hi), closed again when `wp`, the fast way
 * (masks of exactly PAGE_IS_WRITTEN). */
static long scan_written(int pm, uintptr_t lo, uintptr_t hi, int wp, struct ckpt__page_region *v,
			 size_t nv, uintptr_t *walk_end)
{
	struct ckpt__pm_scan_arg a = {
		.size = sizeof a,
		.flags = CKPT__PM_SCAN_CHECK_WPASYNC | (wp ? CKPT__PM_SCAN_WP_MATCHING : 0),
		.start = lo, .end = hi, .vec = (uintptr_t)v, .vec_len = nv,
		.category_mask = CKPT__PAGE_IS_WRITTEN, .return_mask = CKPT__PAGE_IS_WRITTEN,
	};
	long n = scan(pm, &a);
	*walk_end = (uintptr_t)a.walk_end;
	return n;
}

/* Checks that the whole chain works on two pages of its own. */
static void probe_now(void)
{
	char why[160];
	int kernel;
	int fd = make_uffd(why, sizeof why, &kernel);
	if (fd < 0) {
		snprintf(probe_why, sizeof probe_why, "%s", why);
		probe_rc = CKPT_ENOTSUP;
		return;
	}
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	size_t ps = ckpt__pagesize;
	char *m = mmap(NULL, 2 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	probe_rc = CKPT_ENOTSUP;
	if (pm < 0) {
		snprintf(probe_why, sizeof probe_why, "/proc/self/pagemap: %s", strerror(errno));
	} else if (m == MAP_FAILED) {
		snprintf(probe_why, sizeof probe_why, "mmap: %s", strerror(errno));
	} else if (uffd_register(fd, (uintptr_t)m, (uintptr_t)m + 2 * ps) ||
		   uffd_protect(fd, (uintptr_t)m, (uintptr_t)m + 2 * ps, 1)) {
		snprintf(probe_why, sizeof probe_why,
			 "userfaultfd cannot write-protect anonymous memory: %s", strerror(errno));
	} else {
		m[ps] = 1;
		struct ckpt__page_region v[4];
		uintptr_t end;
		long n = scan_written(pm, (uintptr_t)m, (uintptr_t)m + 2 * ps, 1, v, 4, &end);
		if (n < 0)
			snprintf(probe_why, sizeof probe_why, "PAGEMAP_SCAN: %s%s", strerror((int)-n),
				 n == -ENOTTY || n == -EINVAL ? " (Linux 6.7 or later)" : "");
		else if (n != 1 || v[0].start != (uintptr_t)m + ps || v[0].end != (uintptr_t)m + 2 * ps)
			snprintf(probe_why, sizeof probe_why,
				 "PAGEMAP_SCAN does not report a write to a protected page");
		else
			probe_rc = 0;
	}
	if (m != MAP_FAILED)
		munmap(m, 2 * ps);
	if (pm >= 0)
		close(pm);
	close(fd);
}

static int uf_probe(char *why, size_t whylen)
{
	pthread_once(&probe_once, probe_now);
	if (probe_rc)
		snprintf(why, whylen, "%s", probe_why);
	return probe_rc;
}

/* Every tracked region registered and protected anew; all of it counts as
 * written (T->lock held; after a fork). */
static void rearm_all(void)
{
	const struct ckpt__rtab *t = T->tab;
	for (size_t i = 0; t && i < t->n; i++) {
		const struct ckpt__region *r = &t->r[i];
		if (!(r->prot & PROT_WRITE))
			continue;
		ckpt__bm_set(r->start, r->end);
		if (uffd_register(U.fd, r->start, r->end) == 0)
			uffd_protect(U.fd, r->start, r->end, 1);
	}
}

/* Set in a forked child: the descriptors are the parent's. */
static int forked_since;

static void atfork_child(void)
{
	forked_since = 1;
}

/* The descriptors of this process, made afresh after a fork. */
static int ready(void)
{
	if (U.fd >= 0 && !forked_since)
		return 0;
	pid_t me = getpid();
	forked_since = 0;
	if (U.fd >= 0 && U.pid == me)
		return 0;
	int forked = U.fd >= 0;
	if (U.fd >= 0)
		close(U.fd);
	if (U.pm >= 0)
		close(U.pm);
	U.fd = U.pm = -1;
	char why[160];
	int kernel;
	int fd = make_uffd(why, sizeof why, &kernel);
	if (fd < 0)
		return ckpt__fail(CKPT_ENOTSUP, "%s", why);
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pm < 0) {
		int e = errno;
		close(fd);
		return ckpt__fail(ckpt__from_errno(e), "/proc/self/pagemap: %s", strerror(e));
	}
	U.fd = fd;
	U.pm = pm;
	U.pid = me;
	U.kernel = kernel;
	if (forked)
		rearm_all();
	return 0;
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void register_atfork(void)
{
	pthread_atfork(NULL, NULL, atfork_child);
}

static int uf_install(void)
{
	char why[192];
	if (uf_probe(why, sizeof why))
		return ckpt__fail(CKPT_ENOTSUP, "ckpt_begin: %s", why);
	pthread_once(&atfork_once, register_atfork);
	return ready();
}

static int uf_arm(const struct ckpt__region *r)
{
	int rc = ready();
	if (rc)
		return rc;
	int e = uffd_register(U.fd, r->start, r->end);
	if (!e)
		e = uffd_protect(U.fd, r->start, r->end, 1);
	if (e)
		return ckpt__fail(ckpt__from_errno(-e), "userfaultfd cannot protect %#lx-%#lx: %s",
				  (unsigned long)r->start, (unsigned long)r->end, strerror(-e));
	return 0;
}

static int uf_disarm(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi)
{
	(void)r;
	if (ready())
		return CKPT_ENOTSUP;
	struct uffdio_range range = {lo, hi - lo};
	return ioctl(U.fd, UFFDIO_UNREGISTER, &range) ? ckpt__from_errno(errno) : 0;
}

static int uf_protect(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi, int prot)
{
	(void)r;
	/* The uffd-wp bits survive mprotect: the program's protection as is. */
	long rc = ckpt__raw_mprotect(lo, hi - lo, prot);
	return (int)rc;
}

/* Marks [lo, hi) dirty; the pages that were not count as first writes
 * (the kernel took them without a fault ckpt could count). */
static void mark(uintptr_t lo, uintptr_t hi)
{
	size_t fresh = ((hi - lo) >> ckpt__pageshift) - ckpt__bm_count(lo, hi);
	ckpt__bm_set(lo, hi);
	if (fresh)
		__atomic_fetch_add(&T->cnt.faults, fresh, __ATOMIC_RELAXED);
}

/* Runs PAGEMAP_SCAN over [lo, hi) with `proto`'s flags and masks, calling
 * fn (if any) on every range it reports.  0 or CKPT_E*. */
static int walk(uintptr_t lo, uintptr_t hi, const struct ckpt__pm_scan_arg *proto,
		void (*fn)(uintptr_t lo, uintptr_t hi))
{
	struct ckpt__page_region v[512];
	/* The kernel allocates a buffer of vec_len entries (up to 512) for
	 * every call: 12 KiB is a page allocation, 40 entries a small one.
	 * Few runs are the common case; a full vector asks for more. */
	size_t nv = 40;
	uintptr_t at = lo;
	while (at < hi) {
		struct ckpt__pm_scan_arg a = *proto;
		a.size = sizeof a;
		a.start = at;
		a.end = hi;
		/* Without a vector a protecting walk takes the kernel's fast
		 * path (no buffer allocated, no entry reported): half the cost
		 * of closing a page or two, as a reset does. */
		a.vec = fn ? (uintptr_t)v : 0;
		a.vec_len = fn ? nv : 0;
		long n = scan(U.pm, &a);
		if (n < 0)
			return ckpt__fail(ckpt__from_errno((int)-n), "PAGEMAP_SCAN: %s",
					  strerror((int)-n));
		for (long i = 0; fn && i < n; i++)
			fn(v[i].start, v[i].end);
		if ((size_t)n == nv && nv < sizeof v / sizeof v[0])
			nv = sizeof v / sizeof v[0];
		if (a.walk_end <= at)
			break;
		at = a.walk_end;
	}
	return 0;
}

/* The written pages, the kernel's fast path (masks of exactly WRITTEN). */
static const struct ckpt__pm_scan_arg written_scan = {
	.category_mask = CKPT__PAGE_IS_WRITTEN,
	.return_mask = CKPT__PAGE_IS_WRITTEN,
};
/* The same, closing them in the walk.  Without PM_SCAN_CHECK_WPASYNC: a
 * walk failing half-way would have closed pages it never reported;
 * unregistered mappings are skipped instead (see below). */
static const struct ckpt__pm_scan_arg written_close = {
	.flags = CKPT__PM_SCAN_WP_MATCHING,
	.category_mask = CKPT__PAGE_IS_WRITTEN,
	.return_mask = CKPT__PAGE_IS_WRITTEN,
};
/* Memory without a registration (a mapping made in place of a tracked one
 * behind ckpt's back): the kernel skips registered mappings whole, so this
 * costs little unless there is something to find. */
static const struct ckpt__pm_scan_arg unregistered = {
	.category_inverted = CKPT__PAGE_IS_WPALLOWED,
	.category_mask = CKPT__PAGE_IS_WPALLOWED,
	.return_mask = CKPT__PAGE_IS_WPALLOWED,
};

static void register_range(uintptr_t lo, uintptr_t hi)
{
	if (uffd_register(U.fd, lo, hi) == 0)
		uffd_protect(U.fd, lo, hi, 1);
}

static void mark_and_register(uintptr_t lo, uintptr_t hi)
{
	mark(lo, hi);
	register_range(lo, hi);
}

static int uf_sync(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi, int rearm)
{
	(void)r;
	int rc = ready();
	if (rc)
		return rc;
	/* Without closing, an unregistered mapping's pages come back as
	 * written anyway (no uffd-wp bit): one walk does. */
	if (!rearm)
		return walk(lo, hi, &written_scan, mark);
	rc = walk(lo, hi, &unregistered, mark_and_register);
	if (!rc)
		rc = walk(lo, hi, &written_close, mark);
	return rc;
}

/* Closes [lo, hi): the written pages in it are protected again, by a walk
 * that passes over protected ones in a couple of nanoseconds each (where
 * UFFDIO_WRITEPROTECT rewrites every entry it walks). */
static int uf_close(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi)
{
	(void)r;
	int rc = ready();
	if (!rc)
		rc = walk(lo, hi, &written_close, NULL);
	return rc;
}

int ckpt__uffd_reregister(uintptr_t lo, uintptr_t hi)
{
	if (ready())
		return CKPT_ENOTSUP;
	return walk(lo, hi, &unregistered, register_range);
}

int ckpt__uffd_lazy_unmiss(uintptr_t lo, uintptr_t hi)
{
	if (ready())
		return CKPT_ENOTSUP;
	/* What was written is in the bitmap before unregistering clears
	 * the bits that say so; then protected whole again (clean). */
	int rc = walk(lo, hi, &written_scan, mark);
	struct uffdio_range range = {lo, hi - lo};
	ioctl(U.fd, UFFDIO_UNREGISTER, &range);
	if (rc)
		ckpt__bm_set(lo, hi);
	int e = uffd_register(U.fd, lo, hi);
	if (!e)
		e = uffd_protect(U.fd, lo, hi, 1);
	if (e) {
		/* Mapped anew or unmapped since: the tracker finds what is
		 * there unregistered at its next look, written. */
		return ckpt__from_errno(-e);
	}
	return rc;
}

int ckpt__uffd_lazy_fd(int *kernel)
{
	*kernel = 0;
	if (!T || T->be != &ckpt__backend_uffd || !T->tab || U.fd < 0 || U.pid != getpid())
		return -1;
	*kernel = U.kernel;
	return U.fd;
}

const struct ckpt__backend ckpt__backend_uffd = {
	.id = CKPT_BACKEND_UFFD,
	.name = "uffd",
	.probe = uf_probe,
	.install = uf_install,
	.arm = uf_arm,
	.disarm = uf_disarm,
	.touch = NULL, /* the kernel resolves its own writes */
	.protect = uf_protect,
	.close = uf_close,
	.open = NULL,
	.sync = uf_sync,
	.writable_means_dirty = 0,
	/* A walk passes over a protected entry in about 2.5 ns, and a call
	 * costs about 0.9 µs (a reset measured: bench/reset). */
	.close_gap_pages = 256,
	.module = NULL,
};
