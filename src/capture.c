/*
 * capture.c - what a commit must store, taken from the tracker.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A capture re-plans the table from the current /proc/self/maps (regions
 * that are still mapped, plus writable memory that appeared since, now
 * protected too), takes the dirty bits and re-protects the pages they name,
 * and reads /proc/self/pagemap to learn which pages hold data at all (never
 * touched pages are zero and cost nothing) and which ones the kernel
 * discarded since the last capture (MADV_DONTNEED by glibc, invisible to the
 * interposers).
 *
 * Order, for a write racing with the capture: bits are taken, then the
 * pages re-protected.  A write before the re-protect lands in memory before
 * the writer copies it (this snapshot); one after faults and marks the page
 * for the next.  If the snapshot cannot be written, the pages taken are
 * marked dirty again, so the next commit stores them.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bitmap.h"
#include "pagemap.h"
#include "error.h"
#include "inject.h"
#include "shadow.h"
#include "thread.h"
#include "track.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define T ckpt__T

#define PM_PRESENT (1ull << 63)

static int piece_push(struct ckpt__capture *cap, const struct ckpt__piece *p)
{
	if (ckpt__mem_grow((void **)&cap->p, &cap->cap, cap->n + 1, sizeof *cap->p))
		return CKPT_ENOMEM;
	cap->p[cap->n++] = *p;
	return 0;
}

/* Moves p[i] down the max-heap p[0..n) until both children start lower. */
static void sift_piece(struct ckpt__piece *p, size_t i, size_t n)
{
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			return;
		if (c + 1 < n && p[c + 1].start > p[c].start)
			c++;
		if (p[i].start >= p[c].start)
			return;
		struct ckpt__piece t = p[i];
		p[i] = p[c];
		p[c] = t;
		i = c;
	}
}

/* Sorts the pieces by address, in place (a heapsort: they are disjoint, so
 * stability does not matter).  Not qsort: glibc's sorts elements this large
 * through an array of pointers that it takes from malloc once it passes
 * 1 KiB (about 60 pieces; a region the mprotect back-end has split makes
 * that many soon).  That malloc and its free write the program's heap and
 * glibc's arena after their dirty bits were taken: the snapshot then holds
 * the pages written since the last commit as they are after it, the others
 * as they were before, a heap glibc aborts on once the snapshot is resumed
 * or rolled back to. */
static void sort_pieces(struct ckpt__piece *p, size_t n)
{
	for (size_t i = n / 2; i-- > 0;)
		sift_piece(p, i, n);
	for (size_t end = n; end-- > 1;) {
		struct ckpt__piece t = p[0];
		p[0] = p[end];
		p[end] = t;
		sift_piece(p, 0, end);
	}
}

struct take_ctx {
	struct ckpt__capture *cap;
	const struct ckpt__region *r;
	int close; /* the pages taken are to be closed (else closed already) */
	int rc;
	struct ckpt__closer cl;
};

static int took(uintptr_t lo, uintptr_t hi, void *arg)
{
	struct take_ctx *t = arg;
	t->rc |= ckpt__rset_add(&t->cap->taken, lo, hi) | ckpt__rset_add(&t->cap->changed, lo, hi);
	/* Clean again: the next write faults and counts for the next commit.
	 * (A write racing in between lands in this snapshot or, marked by
	 * its fault, in the next.) */
	if (t->close)
		ckpt__closer_add(&t->cl, t->r, lo, hi);
	return 0;
}

struct piece_ctx {
	struct ckpt__capture *cap;
	const struct ckpt__region *r;
	const struct ckpt__rset *skip;
	int rc;
	int merge_ok; /* the last piece came from this region */
};

/* A mapped part of an old region, minus what is excluded or pinned now. */
static int old_part(uintptr_t s, uintptr_t e, const struct ckpt__vma *v, void *arg)
{
	struct piece_ctx *c = arg;
	uintptr_t at = s;
	size_t j = ckpt__rset_lower(c->skip, at);
	while (at < e) {
		if (j < c->skip->n && c->skip->r[j].lo <= at) {
			at = c->skip->r[j].hi;
			j++;
			continue;
		}
		uintptr_t end = (j < c->skip->n && c->skip->r[j].lo < e) ? c->skip->r[j].lo : e;
		struct ckpt__piece p = {
			.start = at, .end = end, .prot = c->r->prot, .flags = c->r->flags,
			.pgshift = c->r->pgshift, .kind = 1, .name = ckpt__track_intern(v->path),
			.offset = v->offset + (at - v->start), .inode = v->inode,
			.dev_major = v->major, .dev_minor = v->minor,
			.heap = !strcmp(v->path, "[heap]"),
		};
		/* One piece per region stretch, however many mappings ckpt's
		 * own protection split it into. */
		struct ckpt__piece *last = c->cap->n ? &c->cap->p[c->cap->n - 1] : NULL;
		if (last && last->end == at && last->kind == 1 && last->prot == p.prot &&
		    last->flags == p.flags && last->name == p.name && last->inode == p.inode &&
		    last->offset + (at - last->start) == p.offset && c->merge_ok)
			last->end = end;
		else
			c->rc |= piece_push(c->cap, &p);
		c->merge_ok = 1;
		/* Writable although clean: changed behind ckpt's back (or
		 * written since the marks were taken: stored now, and again
		 * next time).  Closed through the back-end, which leaves
		 * alone what a system call in flight may still write. */
		if (T->be->writable_means_dirty && (v->perms & CKPT__VMA_W) &&
		    !ckpt__rset_covers(&c->cap->taken, at, end)) {
			c->rc |= ckpt__rset_add(&c->cap->changed, at, end);
			if (c->r->prot & PROT_WRITE)
				T->be->close(c->r, at, end);
		}
		at = end;
	}
	return 0;
}

/*
 * Swapped, or only marked.  PAGEMAP_SCAN reports as SWAPPED every page
 * table entry that is neither empty nor present: a page on swap or under
 * migration, but also a marker, which holds nothing: the entry userfaultfd
 * write-protection leaves on every empty page of a range it protects (the
 * uffd back-end asks for them: WP_UNPOPULATED), or a guard page
 * (MADV_GUARD_INSTALL).  Counted as data, a 16 GiB mapping with every 64th
 * page written costs a read fault per page of it, four million, for pages
 * that then turn out to be zero (3.5 s against 0.7 for the same pages
 * written densely, in bench/commit).
 *
 * mincore(2) tells them apart where no swap device exists: it reports a
 * present page or one under migration as 1, a marker (and a page out on
 * swap, hence the condition) as 0.  So the first ambiguous range of a
 * capture opens /proc/swaps; if it lists no device, mincore decides, and
 * at the end of the capture the same descriptor is polled: the kernel
 * flags it once a swapon or swapoff happened since it was opened, and the
 * capture then scans again counting every such page as data.  Without a
 * device at the opening, no page was on swap then; one swapped out since
 * needs a swapon, which the poll sees; and a page that came back from swap
 * before mincore looked is present to it.  A page a swapoff brought back
 * between the scan and the opening is present to mincore as well.
 */
struct swapless {
	int state; /* 0 not asked yet, 1 no swap device (fd open), -1 swap (or unknown) */
	int fd;    /* /proc/swaps while state is 1 */
};

static void swapless_ask(struct swapless *sw)
{
	char buf[512];
	long fd = ckpt__raw_open("/proc/swaps", O_RDONLY | O_CLOEXEC);
	sw->state = -1;
	if (fd < 0)
		return;
	/* The header line alone: no device. */
	long n = ckpt__raw_read((int)fd, buf, sizeof buf);
	int lines = 0;
	for (long i = 0; i < n; i++)
		lines += buf[i] == '\n';
	if (n > 0 && n < (long)sizeof buf && lines == 1) {
		sw->state = 1;
		sw->fd = (int)fd;
		return;
	}
	ckpt__raw_close((int)fd);
}

/* Whether a swapon or swapoff happened since the question was asked (or
 * it cannot be told); closes the descriptor. */
static int swapless_changed(struct swapless *sw)
{
	if (sw->state != 1)
		return 0;
	struct pollfd pf = {.fd = sw->fd, .events = POLLPRI};
	struct timespec zero = {0, 0};
	long n = ckpt__sys6(SYS_ppoll, (long)&pf, 1, (long)&zero, 0, 8, 0);
	ckpt__raw_close(sw->fd);
	sw->state = -1;
	return n != 0 || (pf.revents & (POLLPRI | POLLERR)) || ckpt__inject(CKPT__IO_SWAPS);
}

struct scan_ctx {
	struct ckpt__capture *cap;
	struct ckpt__bmap *now;
	uintptr_t run_lo, run_hi; /* data pages not added yet */
	int rc;
	struct swapless *sw;
};

/* [a, b): whether it holds data of its own (else zero, or the file's), and
 * whether it is present for telling a discard later (a page read after a
 * discard maps the shared zero page: present, but not the program's). */
static void note(struct scan_ctx *s, uintptr_t a, uintptr_t b, int own, int present)
{
	if (present)
		ckpt__bmx_set(s->now, a, b);
	if (!own)
		return;
	if (s->run_hi == a) {
		s->run_hi = b;
		return;
	}
	if (s->run_lo < s->run_hi && ckpt__rset_add(&s->cap->data, s->run_lo, s->run_hi))
		s->rc = CKPT_ENOMEM;
	s->run_lo = a;
	s->run_hi = b;
}

/* Whether mincore may tell data from markers in this capture (asks the
 * first time; see struct swapless). */
static int swapless_now(struct swapless *sw)
{
	if (sw && sw->state == 0)
		swapless_ask(sw);
	return sw && sw->state == 1;
}

/* Calls fn on the runs of [a, b) that mincore finds (present, or under
 * migration), in order.  -1 if mincore fails at a (nothing reported then);
 * a failure further on reports the rest as one run.  Else 0, or what fn
 * returned when it did not return 0 (the walk stops there). */
static int mincore_runs(uintptr_t a, uintptr_t b, int (*fn)(uintptr_t, uintptr_t, void *),
			void *arg)
{
	unsigned char vec[8192];
	size_t ps = ckpt__pagesize;
	for (uintptr_t at = a; at < b;) {
		size_t n = (b - at) / ps;
		if (n > sizeof vec)
			n = sizeof vec;
		if (ckpt__sys3(SYS_mincore, (long)at, (long)(n * ps), (long)vec) != 0)
			return at == a ? -1 : fn(at, b, arg);
		for (size_t i = 0; i < n;) {
			size_t j = i;
			int in = vec[i] & 1;
			while (j < n && (vec[j] & 1) == in)
				j++;
			int rc = in ? fn(at + i * ps, at + j * ps, arg) : 0;
			if (rc)
				return rc;
			i = j;
		}
		at += n * ps;
	}
	return 0;
}

static int note_data(uintptr_t a, uintptr_t b, void *arg)
{
	note(arg, a, b, 1, 1);
	return 0;
}

/* Notes the pages of [a, b) that mincore finds as data, and present.  In a
 * file mapping such a page may be the file's own (in the page cache, under
 * a marker): then it is stored though it need not be, as it was before
 * mincore was asked.  -1 if mincore fails at a (nothing noted then). */
static int mincore_pages(struct scan_ctx *s, uintptr_t a, uintptr_t b)
{
	return mincore_runs(a, b, note_data, s);
}

/*
 * Regions armed since the last capture.  Under uffd, a page of private
 * anonymous memory that held nothing when its region was armed carries a
 * marker, and the first write to it clears the marker's bit: from then on
 * it is written, in the tracker's record.  So what a region's first capture
 * must store is what held data when it was armed and what was written
 * since; the first is noted at the arm (mincore, with no swap device: see
 * struct swapless), and the capture needs no second walk over the page
 * tables after the tracker's own.  A mapping made in place of the region
 * behind ckpt's back is unregistered and counts as written whole.
 *
 * For a 16 GiB mapping with every 64th page holding data, that walk is
 * 4 M entries, about 40 ms; arming it costs as much again (the markers).
 * The record is good for the next capture only; later ones that find a
 * region fresh (a failed commit) walk it as before.
 */
static int add_armed(uintptr_t a, uintptr_t b, void *arg)
{
	(void)arg;
	return ckpt__rset_add(&T->armed_data, a, b) ? CKPT_ENOMEM : 0;
}

static void note_armed(const struct ckpt__region *r, struct swapless *sw)
{
	if (T->be->id != CKPT_BACKEND_UFFD ||
	    (r->flags & (CKPT__RG_SHARED | CKPT__RG_ANON)) != CKPT__RG_ANON ||
	    !(r->prot & PROT_WRITE) || r->pgshift != ckpt__pageshift || !swapless_now(sw))
		return;
	if (mincore_runs(r->start, r->end, add_armed, NULL) != 0 ||
	    ckpt__rset_add(&T->armed_span, r->start, r->end) != 0)
		ckpt__rset_del(&T->armed_span, r->start, r->end);
}

void ckpt__track_note_armed(const struct ckpt__rtab *t)
{
	struct swapless sw = {0, -1};
	for (size_t i = 0; i < t->n; i++)
		note_armed(&t->r[i], &sw);
	if (swapless_changed(&sw)) {
		ckpt__rset_clear(&T->armed_span);
		ckpt__rset_clear(&T->armed_data);
	}
}

/* The data of a piece inside T->armed_span: its pages in the record, and
 * those taken from the tracker (written since). */
static int armed_pages(struct scan_ctx *s, const struct ckpt__piece *p)
{
	const struct ckpt__rset *d = &T->armed_data, *w = &s->cap->taken;
	size_t i = ckpt__rset_lower(d, p->start), j = ckpt__rset_lower(w, p->start);
	uintptr_t lo = 0, hi = 0;
	for (;;) {
		const struct ckpt__range *next = NULL;
		if (i < d->n && d->r[i].lo < p->end)
			next = &d->r[i];
		if (j < w->n && w->r[j].lo < p->end && (!next || w->r[j].lo < next->lo))
			next = &w->r[j];
		if (!next)
			break;
		if (next == &d->r[i])
			i++;
		else
			j++;
		uintptr_t a = next->lo > p->start ? next->lo : p->start,
			  b = next->hi < p->end ? next->hi : p->end;
		if (a <= hi && lo < hi) {
			if (b > hi)
				hi = b;
			continue;
		}
		if (lo < hi)
			note(s, lo, hi, 1, 1);
		lo = a;
		hi = b;
	}
	if (lo < hi)
		note(s, lo, hi, 1, 1);
	return s->rc;
}

/* PAGEMAP_SCAN (Linux 6.7+): runs of pages alike, not an entry per page,
 * so an untouched gigabyte costs one answer.  -1 when the kernel lacks it. */
static int pagemap_scan_works = 1;

static int scan_ioctl(int pm, struct scan_ctx *s, const struct ckpt__piece *p, int anon)
{
	struct ckpt__page_region vec[256];
	struct ckpt__pm_scan_arg a = {
		.size = sizeof a, .start = p->start, .end = p->end, .vec = (uintptr_t)vec,
		.vec_len = sizeof vec / sizeof vec[0],
		.category_anyof_mask = CKPT__PAGE_IS_PRESENT | CKPT__PAGE_IS_SWAPPED,
		.return_mask = CKPT__PAGE_IS_FILE | CKPT__PAGE_IS_PRESENT | CKPT__PAGE_IS_SWAPPED |
			       CKPT__PAGE_IS_PFNZERO,
	};
	for (;;) {
		long n = ioctl(pm, CKPT__PAGEMAP_SCAN, &a);
		if (n < 0) {
			if (errno == ENOTTY || errno == EINVAL || errno == EOPNOTSUPP) {
				pagemap_scan_works = 0;
				return -1;
			}
			return ckpt__fail(ckpt__from_errno(errno), "PAGEMAP_SCAN: %s", strerror(errno));
		}
		for (long i = 0; i < n; i++) {
			uint64_t c = vec[i].categories;
			int swapped = (c & CKPT__PAGE_IS_SWAPPED) != 0,
			    present = (c & CKPT__PAGE_IS_PRESENT) != 0,
			    file = (c & CKPT__PAGE_IS_FILE) != 0, zero = (c & CKPT__PAGE_IS_PFNZERO) != 0;
			if (swapped && !present && swapless_now(s->sw) &&
			    mincore_pages(s, vec[i].start, vec[i].end) == 0)
				continue;
			int own = anon ? 1 : swapped || (present && !file);
			note(s, vec[i].start, vec[i].end, own,
			     swapped || (present && !zero && (anon || !file)));
		}
		if (a.walk_end >= p->end)
			return s->rc;
		if (a.walk_end <= a.start)
			return ckpt__fail(CKPT_EINTERNAL, "PAGEMAP_SCAN made no progress at %#lx",
					  (unsigned long)a.start);
		a.start = a.walk_end;
	}
}

#define PM_SWAPPED (1ull << 62)
#define PM_FILE (1ull << 61) /* a file page, or shared anonymous */
#define PM_EXCLUSIVE (1ull << 56) /* mapped only here: not the shared zero page */

/* The same from the pagemap entries, one per page. */
static int scan_read(int pm, struct scan_ctx *s, const struct ckpt__piece *p, int anon)
{
	size_t ps = ckpt__pagesize;
	uint64_t buf[4096];
	for (uintptr_t a = p->start; a < p->end && !s->rc;) {
		size_t n = (p->end - a) / ps;
		if (n > sizeof buf / sizeof buf[0])
			n = sizeof buf / sizeof buf[0];
		ssize_t got = pread(pm, buf, n * 8, (off_t)((a / ps) * 8));
		if (got < 0)
			return ckpt__fail(ckpt__from_errno(errno), "/proc/self/pagemap: %s",
					  strerror(errno));
		n = (size_t)got / 8;
		if (!n)
			break;
		for (size_t i = 0; i < n; i++, a += ps) {
			uint64_t e = buf[i];
			int own = anon ? (e & (PM_PRESENT | PM_SWAPPED)) != 0
				       : (e & PM_SWAPPED) || ((e & PM_PRESENT) && !(e & PM_FILE));
			note(s, a, a + ps, own,
			     (e & PM_SWAPPED) ||
				     ((e & PM_PRESENT) && (e & PM_EXCLUSIVE) && (anon || !(e & PM_FILE))));
		}
	}
	return s->rc;
}

static int add_changed(uintptr_t lo, uintptr_t hi, void *arg)
{
	struct ckpt__capture *cap = arg;
	return ckpt__rset_add(&cap->changed, lo, hi) ? CKPT_ENOMEM : 0;
}

/* Records which pages of p hold data and which are present. */
static int scan_pages(int pm, struct ckpt__capture *cap, struct ckpt__bmap *now,
		      const struct ckpt__piece *p, struct swapless *sw)
{
	int shared = (p->flags & CKPT__RG_SHARED) != 0, anon = (p->flags & CKPT__RG_ANON) != 0;
	struct scan_ctx s = {cap, now, 0, 0, 0, sw};
	int rc;
	if (shared || (T->only.n && !anon)) {
		/* Shared memory is stored whole: its pages are the object's.
		 * So is a named region in a file's private mapping (a
		 * program's .data): its bytes, not the file's, come back in
		 * another process. */
		note(&s, p->start, p->end, 1, 0);
		rc = s.rc;
	} else if (anon && sw && ckpt__rset_covers(&T->armed_span, p->start, p->end)) {
		rc = armed_pages(&s, p);
	} else if (anon && T->be->id == CKPT_BACKEND_UFFD && swapless_now(sw) &&
		   mincore_pages(&s, p->start, p->end) == 0) {
		/* Private anonymous memory under userfaultfd: every empty
		 * page of it is a marker, so mincore alone says what holds
		 * data, in half the time PAGEMAP_SCAN takes over the same
		 * entries.  A page mapped to the zero page is data to it (the
		 * writer finds it zero), and present: this back-end keeps no
		 * use for the presence map (see ckpt__track_capture). */
		rc = s.rc;
	} else {
		rc = pagemap_scan_works ? scan_ioctl(pm, &s, p, anon) : -1;
		if (rc == -1) {
			ckpt__bmx_clear(now, p->start, p->end);
			rc = scan_read(pm, &s, p, anon);
		}
	}
	if (!rc && s.run_lo < s.run_hi && ckpt__rset_add(&cap->data, s.run_lo, s.run_hi))
		rc = CKPT_ENOMEM;
	if (rc)
		return rc;
	/* Discarded since the last capture: present then, gone now. */
	if (!p->fresh && !shared && p->kind == 1 &&
	    ckpt__bmx_gone(&T->present, now, p->start, p->end, add_changed, cap))
		return CKPT_ENOMEM;
	return 0;
}

/* The bitmap of pages present at this capture, until it is done. */
#define present_now (T->present_next)

int ckpt__track_capture(struct ckpt__capture *cap)
{
	memset(cap, 0, sizeof *cap);
	pthread_mutex_lock(&T->lock);
	struct ckpt__rtab *ot = T->tab;
	if (!ot) {
		pthread_mutex_unlock(&T->lock);
		return ckpt__fail(CKPT_ESTATE, "ckpt_commit: not tracking (call ckpt_begin first)");
	}
	uint64_t t0 = ckpt__now_ns();
	ckpt__threads_hold();
	struct ckpt__rset excl = {0}, skip = {0};
	struct swapless sw = {0, -1};
	struct ckpt__rtab *nt = NULL;
	/* The old regions' dirty bits, their pages protected again, before
	 * the maps are read: scattered writable pages are as many mappings,
	 * and /proc/self/maps costs about a microsecond per line. */
	int rc = 0;
	for (size_t i = 0; i < ot->n && !rc; i++) {
		const struct ckpt__region *r = &ot->r[i];
		int writable = (r->prot & PROT_WRITE) != 0;
		/* A back-end with a record of its own: written pages into the
		 * bitmap, closed again in the same step; read-only regions
		 * too (written before the program took write away).  If that
		 * fails, the commit fails: a walk that stopped half-way may
		 * have closed pages it never reported, so the whole region
		 * counts as written, and the regions after it keep their
		 * record for the next try (what was taken before is given
		 * back below). */
		if (T->be->sync) {
			int inj = ckpt__inject(CKPT__IO_SYNC);
			rc = inj ? ckpt__fail(ckpt__from_errno(inj), "PAGEMAP_SCAN: %s", strerror(inj))
				 : T->be->sync(r, r->start, r->end, 1);
			if (rc) {
				char why[160];
				snprintf(why, sizeof why, "%s", ckpt_last_error());
				ckpt__clear_error(); /* the region named first */
				ckpt__bm_set(r->start, r->end);
				ckpt__fail(rc, "ckpt_commit: cannot collect the pages written in "
					       "%#lx-%#lx (%s): %s",
					   (unsigned long)r->start, (unsigned long)r->end,
					   r->name[0] ? r->name : "anonymous", why);
				break;
			}
		}
		struct take_ctx tc = {cap, r, writable && !T->be->sync, 0, {0, 0, 0}};
		ckpt__bm_take(r->start, r->end, took, &tc);
		ckpt__closer_flush(&tc.cl);
		if (tc.rc)
			rc = CKPT_ENOMEM;
	}
	if (!rc)
		rc = ckpt__maps_read(&T->maps);
	if (!rc)
		rc = ckpt__track_excluded(&T->maps, T->flags, &excl, NULL);
	if (!rc)
		rc = ckpt__rset_copy(&skip, &excl) ? CKPT_ENOMEM : 0;
	for (size_t i = 0; !rc && i < T->pinned.n; i++)
		rc = ckpt__rset_add(&skip, T->pinned.r[i].lo, T->pinned.r[i].hi) ? CKPT_ENOMEM : 0;

	/* The old regions, as far as they are still mapped. */
	for (size_t i = 0; !rc && i < ot->n; i++) {
		const struct ckpt__region *r = &ot->r[i];
		struct piece_ctx pc = {cap, r, &skip, 0, 0};
		ckpt__maps_foreach(&T->maps, r->start, r->end, old_part, &pc);
		if (pc.rc)
			rc = CKPT_ENOMEM;
	}
	size_t nold = cap->n;

	/* Writable memory that appeared since: new regions, protected now. */
	for (size_t i = 0; !rc && i < ot->n; i++)
		rc = ckpt__rset_add(&skip, ot->r[i].start, ot->r[i].end) ? CKPT_ENOMEM : 0;
	/* (None with named regions: only what the program named.) */
	for (size_t i = 0; !rc && !T->only.n && i < T->maps.n; i++) {
		const struct ckpt__vma *v = &T->maps.v[i];
		if (!(v->perms & CKPT__VMA_W) || v->end > CKPT__BM_LIMIT ||
		    ckpt__rset_covers(&skip, v->start, v->end))
			continue;
		unsigned shift = ckpt__track_hugetlb_shift(v);
		uintptr_t hmask = shift > ckpt__pageshift ? ((uintptr_t)1 << shift) - 1 : 0;
		uintptr_t at = v->start;
		size_t j = ckpt__rset_lower(&skip, at);
		while (at < v->end && !rc) {
			if (j < skip.n && skip.r[j].lo <= at) {
				at = skip.r[j].hi;
				j++;
				continue;
			}
			uintptr_t end = (j < skip.n && skip.r[j].lo < v->end) ? skip.r[j].lo : v->end;
			uintptr_t a = (at + hmask) & ~hmask, b = end & ~hmask;
			if (a < b) {
				struct ckpt__piece p = {
					.start = a, .end = b, .prot = ckpt__vma_prot(v->perms),
					.flags = ((v->perms & CKPT__VMA_SHARED) ? CKPT__RG_SHARED : 0) |
						 ((!v->inode && (!v->path[0] || v->path[0] == '['))
							  ? CKPT__RG_ANON
							  : 0),
					.pgshift = hmask ? shift : ckpt__pageshift, .kind = 1,
					.fresh = 1, .name = ckpt__track_intern(v->path),
					.offset = v->offset + (a - v->start), .inode = v->inode,
					.dev_major = v->major, .dev_minor = v->minor,
					.heap = !strcmp(v->path, "[heap]"),
				};
				rc = piece_push(cap, &p);
			}
			at = end;
		}
	}
	sort_pieces(cap->p, cap->n);

	/* Publish the new table, then protect what is new in it. */
	if (!rc && !(nt = ckpt__rtab_new(cap->n)))
		rc = CKPT_ENOMEM;
	for (size_t i = 0; !rc && i < cap->n; i++) {
		const struct ckpt__piece *p = &cap->p[i];
		nt->r[nt->n++] = (struct ckpt__region){p->start, p->end, p->prot, p->flags, p->pgshift,
						       p->name};
		if (p->fresh && (ckpt__bm_ensure(p->start, p->end) != 0 ||
				 ckpt__shadow_ensure(p->start, p->end) != 0))
			rc = CKPT_ENOMEM;
		else if (p->fresh)
			ckpt__bm_clear(p->start, p->end);
	}
	if (!rc) {
		ckpt__track_publish(nt, 0);
		nt = NULL;
		long armed = 0;
		for (size_t i = 0; i < cap->n; i++) {
			const struct ckpt__region *r = &T->tab->r[i];
			if (cap->p[i].fresh && (r->prot & PROT_WRITE)) {
				T->be->arm(r);
				note_armed(r, &sw);
				armed++;
			}
		}
		/* The mappings read above, less the opened pages that merged
		 * back, plus at most two splits per region armed now. */
		ckpt__track_vma_recount((long)T->maps.n + 2 * armed);
		T->marked_closed = 0; /* every mark was taken, its page protected */
	}
	if (nt)
		ckpt__mem_free(nt, nt->bytes);
	ckpt__threads_release();
	(void)nold;

	/* What has been tracked without a break since the last capture. */
	for (size_t i = 0; !rc && i < cap->n; i++)
		if (!cap->p[i].fresh && !ckpt__rset_covers(&T->since, cap->p[i].start, cap->p[i].end))
			cap->p[i].fresh = 1;

	/* Pinned memory the program owns: saved whole every time. */
	uintptr_t tp = ckpt__threads_main_tp();
	for (size_t i = 0; !rc && i < T->pinned.n; i++) {
		uintptr_t lo = T->pinned.r[i].lo, hi = T->pinned.r[i].hi;
		for (long k = ckpt__maps_find(&T->maps, lo); k >= 0 && (size_t)k < T->maps.n &&
							     T->maps.v[k].start < hi && !rc;
		     k++) {
			const struct ckpt__vma *v = &T->maps.v[k];
			uintptr_t a = v->start > lo ? v->start : lo, b = v->end < hi ? v->end : hi;
			if (a >= b || ckpt__rset_overlaps(&T->nosave, a, b) ||
			    ckpt__rset_overlaps(&excl, a, b))
				continue;
			struct ckpt__piece p = {
				.start = a, .end = b, .prot = ckpt__vma_prot(v->perms),
				.flags = ((v->perms & CKPT__VMA_SHARED) ? CKPT__RG_SHARED : 0) |
					 (!v->inode ? CKPT__RG_ANON : 0),
				.pgshift = ckpt__pageshift, .kind = 2, .fresh = 1,
				.name = ckpt__track_intern(v->path), .offset = v->offset + (a - v->start),
				.inode = v->inode, .dev_major = v->major, .dev_minor = v->minor,
			};
			if (tp >= a && tp < b) {
				/* glibc's thread descriptor, rseq area included. */
				p.kind = 3;
				p.keep_lo = tp;
				p.keep_hi = tp + 2560 < b ? tp + 2560 : b;
			}
			rc = piece_push(cap, &p);
		}
	}
	sort_pieces(cap->p, cap->n);

	/* Pages that hold data, and what the kernel discarded. */
	int pm = -1;
	if (!rc && (pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)) < 0)
		rc = ckpt__fail(ckpt__from_errno(errno), "/proc/self/pagemap: %s", strerror(errno));
	ckpt__bmx_release(&present_now);
	for (size_t i = 0; !rc && i < cap->n; i++) {
		const struct ckpt__piece *p = &cap->p[i];
		if (ckpt__bmx_ensure(&present_now, p->start, p->end) ||
		    ckpt__bmx_ensure(&T->present, p->start, p->end)) {
			rc = CKPT_ENOMEM;
			break;
		}
		/* With a back-end that keeps its own record (uffd), a page the
		 * kernel discarded has lost its uffd-wp bit and came back as
		 * written: only new memory needs the walk, for its data. */
		if (!T->be->sync || p->fresh)
			rc = scan_pages(pm, cap, &present_now, p, &sw);
		if (!rc && !(p->prot & PROT_READ))
			rc = ckpt__rset_add(&cap->unreadable, p->start, p->end) ? CKPT_ENOMEM : 0;
	}
	if (swapless_changed(&sw) && !rc) {
		/* A swap device came or went while mincore told markers from
		 * pages: every swapped entry counts as data, as it may be. */
		ckpt__rset_clear(&cap->data);
		for (size_t i = 0; !rc && i < cap->n; i++) {
			const struct ckpt__piece *p = &cap->p[i];
			if (!T->be->sync || p->fresh)
				rc = scan_pages(pm, cap, &present_now, p, NULL);
		}
	}
	if (pm >= 0)
		close(pm);
	/* Good for this capture only. */
	ckpt__rset_clear(&T->armed_span);
	ckpt__rset_clear(&T->armed_data);
	cap->nthreads = ckpt__threads_count();
	cap->ns = ckpt__now_ns() - t0;
	if (rc) {
		/* Nothing is lost: what was taken counts as dirty again (and
		 * stays protected: marked no longer means writable). */
		for (size_t i = 0; i < cap->changed.n; i++)
			ckpt__bm_set(cap->changed.r[i].lo, cap->changed.r[i].hi);
		if (cap->changed.n)
			T->marked_closed = 1;
	}
	pthread_mutex_unlock(&T->lock);
	ckpt__rset_free(&excl);
	ckpt__rset_free(&skip);
	if (rc == CKPT_ENOMEM)
		rc = ckpt__fail(rc, "ckpt_commit: out of memory capturing the dirty set");
	return rc;
}

int ckpt__track_adopt(void)
{
	pthread_mutex_lock(&T->lock);
	struct ckpt__capture cap;
	memset(&cap, 0, sizeof cap);
	/* As in a capture: a back-end that keeps its own record (uffd) sees
	 * discarded pages come back as written, and needs no presence map. */
	int scan = !T->be->sync, rc = 0, pm = -1;
	if (scan && (pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)) < 0)
		rc = ckpt__from_errno(errno);
	const struct ckpt__rtab *t = T->tab;
	ckpt__bmx_release(&T->present);
	ckpt__rset_clear(&T->since);
	/* Memory was refilled since the arm: what it held then is past. */
	ckpt__rset_clear(&T->armed_span);
	ckpt__rset_clear(&T->armed_data);
	for (size_t i = 0; !rc && t && i < t->n; i++) {
		const struct ckpt__region *g = &t->r[i];
		struct ckpt__piece p = {
			.start = g->start, .end = g->end, .prot = g->prot, .flags = g->flags,
			.pgshift = g->pgshift, .kind = 1, .fresh = 1, .name = g->name,
		};
		if (ckpt__rset_add(&T->since, g->start, g->end) ||
		    (scan && ckpt__bmx_ensure(&T->present, g->start, g->end)))
			rc = CKPT_ENOMEM;
		else if (scan)
			rc = scan_pages(pm, &cap, &T->present, &p, NULL);
	}
	if (pm >= 0)
		close(pm);
	if (rc) {
		/* The next commit stores everything again: sound, only larger. */
		ckpt__rset_clear(&T->since);
		ckpt__bmx_release(&T->present);
	}
	ckpt__capture_free(&cap);
	pthread_mutex_unlock(&T->lock);
	return rc;
}

void ckpt__track_capture_done(struct ckpt__capture *cap)
{
	pthread_mutex_lock(&T->lock);
	ckpt__rset_clear(&T->since);
	for (size_t i = 0; i < cap->n; i++)
		if (cap->p[i].kind == 1)
			ckpt__rset_add(&T->since, cap->p[i].start, cap->p[i].end);
	ckpt__bmx_release(&T->present);
	T->present = present_now;
	memset(&present_now, 0, sizeof present_now);
	/* Shadow copies were of the previous snapshot. */
	ckpt__shadow_reset();
	pthread_mutex_unlock(&T->lock);
}

void ckpt__track_capture_undo(struct ckpt__capture *cap)
{
	pthread_mutex_lock(&T->lock);
	if (T->tab && cap->changed.n) {
		for (size_t i = 0; i < cap->changed.n; i++)
			ckpt__bm_set(cap->changed.r[i].lo, cap->changed.r[i].hi);
		T->marked_closed = 1; /* marked, but protected by the capture */
	}
	ckpt__bmx_release(&present_now);
	pthread_mutex_unlock(&T->lock);
}

void ckpt__track_capture_revert(struct ckpt__capture *cap)
{
	pthread_mutex_lock(&T->lock);
	if (T->tab) {
		for (size_t i = 0; i < cap->changed.n; i++)
			ckpt__bm_set(cap->changed.r[i].lo, cap->changed.r[i].hi);
		if (cap->changed.n)
			T->marked_closed = 1; /* marked, but protected by the capture */
		/* Stored whole by the failed snapshot: whole again by the next. */
		for (size_t i = 0; i < cap->n; i++)
			if (cap->p[i].kind == 1 && cap->p[i].fresh)
				ckpt__rset_del(&T->since, cap->p[i].start, cap->p[i].end);
	}
	/* Copies made since were of a snapshot that does not exist. */
	ckpt__shadow_reset();
	pthread_mutex_unlock(&T->lock);
}

void ckpt__capture_free(struct ckpt__capture *cap)
{
	ckpt__mem_array_free((void **)&cap->p, &cap->cap, sizeof *cap->p);
	ckpt__rset_free(&cap->changed);
	ckpt__rset_free(&cap->data);
	ckpt__rset_free(&cap->taken);
	ckpt__rset_free(&cap->unreadable);
}
