/*
 * track.c - the tracker: which memory is protected, and the dirty set.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * At ckpt_begin every writable mapping is sorted into three kinds:
 *   tracked   protected by the back-end; a write marks its page in the
 *             dirty bitmap (regions of the published table);
 *   pinned    must stay writable although it is the program's memory (the
 *             main thread's TLS block, alternate signal stacks, stacks of
 *             threads ckpt did not see start): always reported dirty;
 *   excluded  not the program's state to track: thread stacks, the vDSO,
 *             device memory, sanitizer shadow, ckpt's own memory, and
 *             ckpt_exclude ranges: never protected, never reported.
 * Memory that appears later (new mappings, a heap that grew, memory the
 * program made writable) is not protected and counts as fully dirty; memory
 * unmapped since drops out.
 *
 * The dirty set is computed against a fresh read of /proc/self/maps, which
 * also catches what interposition cannot see (glibc's internal mremap and
 * munmap): a tracked page whose mapping is writable although its bit is
 * clear was changed behind ckpt's back and counts as dirty.
 *
 * Concurrency: the fault handler and the interposers read the region table
 * without locks (ckpt__rcu_enter); everything that changes it holds
 * T->lock, builds a new table and publishes it whole.  A change of
 * protection is applied only once no reader can hold the table from before
 * it (rcu_synchronize), or a fault handled with that table could apply the
 * old protection after the new one.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "track.h"
#include "faultlog.h"
#include "bitmap.h"
#include "error.h"
#include "shadow.h"
#include "thread.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statfs.h>

#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

#define T ckpt__T

/* ---- setup ---------------------------------------------------------------- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_rc;

/* fork: the child has only the forking thread.  Another thread of the
 * parent may have been inside a table read, or held a spin lock, at that
 * instant; in the child it never leaves, so those are reset, and the
 * tracker's lock is taken around the fork so that no commit or restore is
 * half-way (registered after the thread registry's, so taken first). */
static void atfork_prepare(void)
{
	pthread_mutex_lock(&T->lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&T->lock);
}

static void atfork_child(void)
{
	__atomic_store_n(&T->readers, 0, __ATOMIC_SEQ_CST);
	T->fault_lock.v = 0;
	ckpt__g.own_lock.v = 0;
	pthread_mutex_unlock(&T->lock);
}

static void init_tracker(void)
{
	struct ckpt__tracker *t = ckpt__mem_alloc(sizeof *t);
	if (!t || ckpt__threads_init() != 0) {
		init_rc = -1;
		return;
	}
	pthread_mutex_init(&t->lock, NULL);
	__atomic_store_n(&ckpt__g.tracker, t, __ATOMIC_RELEASE);
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

int ckpt__track_init(void)
{
	pthread_once(&init_once, init_tracker);
	return init_rc ? CKPT_ENOMEM : 0;
}

/* CKPT_BACKEND=mprotect|uffd|softdirty in the environment, or -1. */
static int backend_from_env(void)
{
	const char *e = getenv("CKPT_BACKEND");
	if (!e || !e[0] || !strcmp(e, "auto"))
		return -1;
	if (!strcmp(e, "mprotect"))
		return CKPT_BACKEND_MPROTECT;
	if (!strcmp(e, "uffd"))
		return CKPT_BACKEND_UFFD;
	if (!strcmp(e, "softdirty"))
		return CKPT_BACKEND_SOFTDIRTY;
	return -2;
}

static const struct ckpt__backend *const backends[] = {
	[CKPT_BACKEND_MPROTECT] = &ckpt__backend_mprotect,
	[CKPT_BACKEND_UFFD] = &ckpt__backend_uffd,
	[CKPT_BACKEND_SOFTDIRTY] = &ckpt__backend_softdirty,
};

int ckpt__track_select(int want, const struct ckpt__backend **out, char *why, size_t whylen)
{
	*out = NULL;
	if (want == CKPT_BACKEND_AUTO) {
		int env = backend_from_env();
		if (env == -2) {
			snprintf(why, whylen, "CKPT_BACKEND=%s: not one of mprotect, uffd, softdirty",
				 getenv("CKPT_BACKEND"));
			return CKPT_EINVAL;
		}
		if (env > 0) {
			want = env;
		} else {
			/* By the figures of bench/track: a first write costs
			 * about a tenth under uffd, and collecting is a walk
			 * of the page tables either way. */
			char skip[256];
			if (ckpt__backend_uffd.probe(skip, sizeof skip) == 0) {
				*out = &ckpt__backend_uffd;
				return 0;
			}
			want = CKPT_BACKEND_MPROTECT;
		}
	}
	if (want < CKPT_BACKEND_MPROTECT || want > CKPT_BACKEND_SOFTDIRTY) {
		snprintf(why, whylen, "unknown back-end %d", want);
		return CKPT_EINVAL;
	}
	const struct ckpt__backend *be = backends[want];
	char reason[200] = "";
	if (be->probe(reason, sizeof reason) != 0) {
		snprintf(why, whylen, "the %s back-end cannot work here: %s", be->name, reason);
		return CKPT_ENOTSUP;
	}
	*out = be;
	return 0;
}

int ckpt__prot_clean(int prot)
{
	/* A clean page is readable and not writable.  PROT_WRITE alone means
	 * read-write on the hardware ckpt supports, so reads stay allowed. */
	return (prot & PROT_WRITE) ? ((prot & ~PROT_WRITE) | PROT_READ) : prot;
}

/* ---- interned mapping names ------------------------------------------------- */

#define NAMES_CHUNK 65536

/* Names never move: a region keeps a pointer for its whole life. */
const char *ckpt__track_intern(const char *s)
{
	size_t len = strlen(s) + 1;
	if (len > 4096)
		len = 4096;
	for (size_t off = 0; off < T->names_len;) {
		const char *p = T->names + off;
		if (strncmp(p, s, len - 1) == 0 && p[len - 1] == '\0')
			return p;
		off += strlen(p) + 1;
	}
	if (!T->names) {
		T->names = ckpt__mem_alloc(NAMES_CHUNK * 16);
		T->names_cap = T->names ? NAMES_CHUNK * 16 : 0;
	}
	if (T->names_len + len > T->names_cap)
		return "";
	char *p = T->names + T->names_len;
	memcpy(p, s, len - 1);
	p[len - 1] = '\0';
	T->names_len += len;
	return p;
}

/* ---- the region table -------------------------------------------------------- */

CKPT__FAULTPATH const struct ckpt__region *ckpt__rtab_find(const struct ckpt__rtab *t,
							   uintptr_t addr)
{
	if (!t)
		return NULL;
	size_t i = CKPT__FIRST_ENDING_AFTER(t->r, t->n, end, addr);
	return i < t->n && t->r[i].start <= addr ? &t->r[i] : NULL;
}

/* Index of the first region ending after addr. */
size_t ckpt__rtab_lower(const struct ckpt__rtab *t, uintptr_t addr)
{
	return CKPT__FIRST_ENDING_AFTER(t->r, t->n, end, addr);
}

struct ckpt__rtab *ckpt__rtab_new(size_t n)
{
	size_t bytes = sizeof(struct ckpt__rtab) + (n ? n : 1) * sizeof(struct ckpt__region);
	struct ckpt__rtab *t = ckpt__mem_alloc(bytes);
	if (t) {
		t->bytes = bytes;
		t->n = 0;
	}
	return t;
}

static void rtab_free(struct ckpt__rtab *t)
{
	if (t)
		ckpt__mem_free(t, t->bytes);
}

static int rtab_overlaps(const struct ckpt__rtab *t, uintptr_t lo, uintptr_t hi)
{
	if (!t)
		return 0;
	size_t i = ckpt__rtab_lower(t, lo);
	return i < t->n && t->r[i].start < hi;
}

enum { EDIT_REMOVE, EDIT_PROT };

/* A copy of t with [lo, hi) removed or given protection prot. */
static struct ckpt__rtab *rtab_edit(const struct ckpt__rtab *t, uintptr_t lo, uintptr_t hi,
				    int what, int prot)
{
	struct ckpt__rtab *n = ckpt__rtab_new(t->n + 2);
	if (!n)
		return NULL;
	for (size_t i = 0; i < t->n; i++) {
		struct ckpt__region r = t->r[i];
		if (r.end <= lo || r.start >= hi) {
			n->r[n->n++] = r;
			continue;
		}
		if (r.start < lo) {
			struct ckpt__region a = r;
			a.end = lo;
			n->r[n->n++] = a;
		}
		if (what == EDIT_PROT) {
			struct ckpt__region b = r;
			b.start = r.start > lo ? r.start : lo;
			b.end = r.end < hi ? r.end : hi;
			b.prot = prot;
			n->r[n->n++] = b;
		}
		if (r.end > hi) {
			struct ckpt__region c = r;
			c.start = hi;
			n->r[n->n++] = c;
		}
	}
	return n;
}

/* Frees replaced tables once no reader can hold them: a reader that enters
 * after the readers count was seen at zero loads the newer table. */
static void reclaim(int wait)
{
	if (!T->retired)
		return;
	while (__atomic_load_n(&T->readers, __ATOMIC_SEQ_CST) != 0) {
		if (!wait)
			return;
		ckpt__raw_sched_yield();
	}
	while (T->retired) {
		struct ckpt__rtab *t = T->retired;
		T->retired = t->retired_next;
		rtab_free(t);
	}
}

void ckpt__track_publish(struct ckpt__rtab *n, int wait)
{
	struct ckpt__rtab *old = __atomic_exchange_n(&T->tab, n, __ATOMIC_SEQ_CST);
	if (old) {
		old->retired_next = T->retired;
		T->retired = old;
	}
	reclaim(wait);
}

/* Waits until no reader can still hold a table replaced before this call
 * (T->lock held): one that entered before it has left, and one entering
 * now loads the newer table.  Readers (the fault handler, the interposers)
 * stay a few microseconds.  Bounded, should a reader never leave while
 * this waits: one interrupted on this very thread by a signal whose
 * handler changes a protection would wait for itself. */
static void rcu_synchronize(void)
{
	uint64_t t0 = 0;
	while (__atomic_load_n(&T->readers, __ATOMIC_SEQ_CST) != 0) {
		uint64_t now = ckpt__now_ns();
		if (!t0)
			t0 = now;
		else if (now - t0 > 100000000u)
			return;
		ckpt__raw_sched_yield();
	}
}

/* See T->layout_gen. */
static void layout_moved(void)
{
	__atomic_fetch_add(&T->layout_gen, 1, __ATOMIC_RELEASE);
}

static void publish(struct ckpt__rtab *n)
{
	layout_moved();
	struct ckpt__rtab *old = __atomic_exchange_n(&T->tab, n, __ATOMIC_SEQ_CST);
	if (old) {
		old->retired_next = T->retired;
		T->retired = old;
	}
	reclaim(0);
}

/* ---- what ckpt leaves out ---------------------------------------------------- */

struct module_ctx {
	uintptr_t addr; /* an address inside the module */
	struct ckpt__rset *out;
	int rc;
};

static int module_data(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	struct module_ctx *mc = arg;
	int hit = 0;
	for (int i = 0; i < info->dlpi_phnum && !hit; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
		hit = ph->p_type == PT_LOAD && mc->addr >= lo && mc->addr < lo + ph->p_memsz;
	}
	/* Never the executable itself: a static libckpt keeps its state in
	 * the state page, which is excluded on its own. */
	if (!hit || !info->dlpi_name || !info->dlpi_name[0])
		return hit;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_W))
			continue;
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
		mc->rc |= ckpt__rset_add(mc->out, ckpt__page_down(lo),
					 ckpt__page_up(lo + ph->p_memsz));
	}
	return 1;
}

static void add_own(uintptr_t lo, uintptr_t hi, void *arg)
{
	ckpt__rset_add(arg, lo, hi);
}

extern void __asan_get_shadow_mapping(size_t *scale, size_t *offset) __attribute__((weak));

/* Mappings left out because of what they are. */
static int special_vma(const struct ckpt__vma *v, unsigned flags)
{
	const char *p = v->path;
	if (!strcmp(p, "[stack]") || !strncmp(p, "[vvar", 5) || !strcmp(p, "[vdso]") ||
	    !strcmp(p, "[vsyscall]"))
		return 1;
	/* Device memory is written by devices; /dev/zero and /dev/shm are
	 * ordinary memory. */
	if (!strncmp(p, "/dev/", 5) && strncmp(p, "/dev/zero", 9) && strncmp(p, "/dev/shm/", 9))
		return 1;
	/* perf and io_uring rings, BPF maps, DMA buffers, KVM... */
	if (!strncmp(p, "anon_inode:", 11))
		return 1;
	if ((flags & CKPT_F_NO_SHARED) && (v->perms & CKPT__VMA_SHARED))
		return 1;
	return 0;
}

/* The excluded set for the current maps. */
int ckpt__track_excluded(const struct ckpt__maps *m, unsigned flags,
			    struct ckpt__rset *excl, struct ckpt__rset *pinned_out)
{
	int rc = 0;
	ckpt__rset_clear(excl);
	ckpt__mem_own_foreach(add_own, excl);
	rc |= ckpt__rset_add(excl, (uintptr_t)&ckpt__state_page,
			     (uintptr_t)&ckpt__state_page + sizeof ckpt__state_page);
	struct module_ctx mc = {(uintptr_t)&ckpt__track_init, excl, 0};
	dl_iterate_phdr(module_data, &mc);
	if (ckpt__backend_mprotect.module) {
		/* The mprotect back-end's library (libsigsegv), whichever
		 * back-end runs: libckpt links it either way, and a chain must
		 * describe the same memory under both. */
		mc.addr = (uintptr_t)ckpt__backend_mprotect.module;
		dl_iterate_phdr(module_data, &mc);
	}
	rc |= mc.rc;
	for (size_t i = 0; i < T->user_excl.n; i++)
		rc |= ckpt__rset_add(excl, T->user_excl.r[i].lo, T->user_excl.r[i].hi);
	for (size_t i = 0; i < m->n; i++)
		if ((m->v[i].perms & CKPT__VMA_W) && special_vma(&m->v[i], flags))
			rc |= ckpt__rset_add(excl, m->v[i].start, m->v[i].end);
	if (__asan_get_shadow_mapping) {
		size_t scale = 3, offset = 0;
		__asan_get_shadow_mapping(&scale, &offset);
		rc |= ckpt__rset_add(excl, offset, offset + (CKPT__BM_LIMIT >> scale));
	}
	struct ckpt__rset scratch = {0};
	rc |= ckpt__threads_ranges(m, excl, pinned_out ? pinned_out : &scratch);
	ckpt__rset_free(&scratch);
	return rc ? CKPT_ENOMEM : 0;
}

/* ---- huge pages ------------------------------------------------------------- */

/* log2 of the page size of a hugetlb mapping, read from /proc/self/smaps;
 * 0 if it is not one or cannot be told. */
unsigned ckpt__track_hugetlb_shift(const struct ckpt__vma *v)
{
	int candidate = !strncmp(v->path, "/anon_hugepage", 14);
	if (!candidate && v->path[0] == '/') {
		struct statfs sf;
		char path[4096];
		snprintf(path, sizeof path, "%s", v->path);
		char *del = strstr(path, " (deleted)");
		if (del)
			*del = '\0';
		candidate = statfs(path, &sf) == 0 && (unsigned long)sf.f_type == HUGETLBFS_MAGIC;
	}
	if (!candidate)
		return 0;
	FILE *f = fopen("/proc/self/smaps", "re");
	if (!f)
		return 0;
	char line[4608], head[64];
	snprintf(head, sizeof head, "%lx-%lx ", (unsigned long)v->start, (unsigned long)v->end);
	unsigned shift = 0;
	int in = 0;
	while (fgets(line, sizeof line, f)) {
		if (!in) {
			in = !strncmp(line, head, strlen(head));
			continue;
		}
		unsigned long kb;
		if (sscanf(line, "KernelPageSize: %lu kB", &kb) == 1) {
			if (kb && !(kb & (kb - 1)))
				shift = (unsigned)__builtin_ctzl(kb) + 10;
			break;
		}
	}
	fclose(f);
	return shift;
}

/* ---- begin ------------------------------------------------------------------- */

struct region_list {
	struct ckpt__region *r;
	size_t n, cap;
};

static int region_push(struct region_list *l, const struct ckpt__region *r)
{
	if (ckpt__mem_grow((void **)&l->r, &l->cap, l->n + 1, sizeof *l->r))
		return -1;
	l->r[l->n++] = *r;
	return 0;
}

int ckpt__vma_prot(unsigned perms)
{
	return ((perms & CKPT__VMA_R) ? PROT_READ : 0) | ((perms & CKPT__VMA_W) ? PROT_WRITE : 0) |
	       ((perms & CKPT__VMA_X) ? PROT_EXEC : 0);
}

/* Pages of the set that are mapped. */
static size_t mapped_pages(const struct ckpt__maps *m, const struct ckpt__rset *s)
{
	size_t n = 0;
	for (size_t i = 0; i < m->n; i++)
		n += ckpt__rset_bytes_in(s, m->v[i].start, m->v[i].end) >> ckpt__pageshift;
	return n;
}

/* Splits the writable mappings into regions around the excluded and pinned
 * sets. */
static int plan_regions(const struct ckpt__maps *m, const struct ckpt__rset *excl,
			struct ckpt__rset *pinned, struct region_list *out, size_t *excluded_pages)
{
	struct ckpt__rset skip = {0};
	int rc = ckpt__rset_copy(&skip, excl);
	for (size_t i = 0; i < pinned->n && !rc; i++)
		rc = ckpt__rset_add(&skip, pinned->r[i].lo, pinned->r[i].hi);
	for (size_t i = 0; i < m->n && !rc; i++) {
		const struct ckpt__vma *v = &m->v[i];
		if (!(v->perms & CKPT__VMA_W))
			continue;
		*excluded_pages += ckpt__rset_bytes_in(excl, v->start, v->end) >> ckpt__pageshift;
		if (ckpt__rset_covers(excl, v->start, v->end))
			continue;
		if (v->end > CKPT__BM_LIMIT) {
			rc = ckpt__rset_add(pinned, v->start, v->end);
			continue;
		}
		unsigned shift = ckpt__track_hugetlb_shift(v);
		int huge = shift > ckpt__pageshift;
		uintptr_t hmask = huge ? ((uintptr_t)1 << shift) - 1 : 0;
		struct ckpt__region proto = {
			.prot = ckpt__vma_prot(v->perms),
			.flags = ((v->perms & CKPT__VMA_SHARED) ? CKPT__RG_SHARED : 0) |
				 ((!v->inode && (!v->path[0] || v->path[0] == '[')) ? CKPT__RG_ANON
										     : 0),
			.pgshift = huge ? shift : ckpt__pageshift,
			.name = ckpt__track_intern(v->path),
		};
		/* Walk the gaps of `skip` inside the mapping. */
		uintptr_t at = v->start;
		size_t j = ckpt__rset_lower(&skip, at);
		while (at < v->end && !rc) {
			uintptr_t lo = at, hi = v->end;
			if (j < skip.n && skip.r[j].lo <= at) {
				at = skip.r[j].hi < v->end ? skip.r[j].hi : v->end;
				j++;
				continue;
			}
			if (j < skip.n && skip.r[j].lo < hi)
				hi = skip.r[j].lo;
			at = hi;
			if (huge) {
				/* Only whole huge pages can be protected; the
				 * rest of a cut huge page stays writable. */
				uintptr_t a = (lo + hmask) & ~hmask, b = hi & ~hmask;
				if (a >= b) {
					rc = ckpt__rset_add(pinned, lo, hi);
					continue;
				}
				if (lo < a)
					rc |= ckpt__rset_add(pinned, lo, a);
				if (b < hi)
					rc |= ckpt__rset_add(pinned, b, hi);
				lo = a;
				hi = b;
			}
			struct ckpt__region r = proto;
			r.start = lo;
			r.end = hi;
			rc |= region_push(out, &r);
		}
	}
	ckpt__rset_free(&skip);
	return rc ? CKPT_ENOMEM : 0;
}

struct disarm_ctx {
	const struct ckpt__region *r;
	uintptr_t lo, hi; /* pending contiguous run */
	int rc;
};

static int disarm_piece(uintptr_t s, uintptr_t e, const struct ckpt__vma *v, void *arg)
{
	(void)v;
	struct disarm_ctx *d = arg;
	if (d->hi == s) {
		d->hi = e;
		return 0;
	}
	if (d->lo < d->hi && T->be->disarm(d->r, d->lo, d->hi) && !d->rc)
		d->rc = CKPT_EIO;
	d->lo = s;
	d->hi = e;
	return 0;
}

/* Gives every mapped page of region r its protection back. */
int ckpt__track_disarm(const struct ckpt__maps *m, const struct ckpt__region *r)
{
	struct disarm_ctx d = {r, 0, 0, 0};
	ckpt__maps_foreach(m, r->start, r->end, disarm_piece, &d);
	if (d.lo < d.hi && T->be->disarm(r, d.lo, d.hi) && !d.rc)
		d.rc = CKPT_EIO;
	return d.rc;
}

/* Keeps of the plan what lies in `only`; every page of it must be there. */
static int restrict_plan(struct region_list *plan, const struct ckpt__rset *only,
			 const struct ckpt__rset *excl)
{
	struct region_list out = {0};
	struct ckpt__rset got = {0};
	int rc = 0;
	for (size_t i = 0; i < plan->n && !rc; i++) {
		const struct ckpt__region *r = &plan->r[i];
		uintptr_t mask = ((uintptr_t)1 << r->pgshift) - 1;
		for (size_t j = ckpt__rset_lower(only, r->start); j < only->n && only->r[j].lo < r->end && !rc;
		     j++) {
			uintptr_t a = only->r[j].lo > r->start ? only->r[j].lo : r->start;
			uintptr_t b = only->r[j].hi < r->end ? only->r[j].hi : r->end;
			struct ckpt__region n = *r;
			n.start = a & ~mask;
			n.end = (b + mask) & ~mask;
			if (out.n && out.r[out.n - 1].end > n.start)
				n.start = out.r[out.n - 1].end;
			if (n.start < n.end)
				rc = region_push(&out, &n) || ckpt__rset_add(&got, a, b) ? CKPT_ENOMEM : 0;
		}
	}
	for (size_t j = 0; j < only->n && !rc; j++) {
		if (ckpt__rset_covers(&got, only->r[j].lo, only->r[j].hi))
			continue;
		uintptr_t a = only->r[j].lo;
		while (a < only->r[j].hi && ckpt__rset_covers(&got, a, a + ckpt__pagesize))
			a += ckpt__pagesize;
		rc = ckpt__fail(CKPT_EINVAL, "the page at %#lx cannot be tracked (%s)", (unsigned long)a,
				ckpt__rset_overlaps(excl, a, a + ckpt__pagesize)
					? "a thread's stack, ckpt's own memory or an excluded range"
					: "not writable memory");
	}
	ckpt__rset_free(&got);
	ckpt__mem_array_free((void **)&plan->r, &plan->cap, sizeof *plan->r);
	*plan = out;
	plan->n = rc ? 0 : plan->n;
	return rc;
}

int ckpt__track_begin(const struct ckpt__backend *be, unsigned flags,
		      const struct ckpt__rset *user_excl, const struct ckpt__rset *only,
		      struct ckpt__begin_info *info)
{
	int rc = ckpt__track_init();
	if (rc)
		return ckpt__fail(rc, "cannot set up the tracker");
	pthread_mutex_lock(&T->lock);
	if (__atomic_load_n(&T->tab, __ATOMIC_ACQUIRE)) {
		pthread_mutex_unlock(&T->lock);
		return ckpt__fail(CKPT_EBUSY, "ckpt_begin: another handle is tracking this process");
	}
	memset(info, 0, sizeof *info);
	T->be = be;
	rc = be->install();
	if (rc) {
		pthread_mutex_unlock(&T->lock);
		return rc;
	}
	if (ckpt__bm_init() != 0) {
		pthread_mutex_unlock(&T->lock);
		return ckpt__fail(CKPT_ENOMEM, "ckpt_begin: cannot reserve the dirty bitmap");
	}
	/* No thread may start on a stack ckpt is about to protect. */
	ckpt__threads_hold();

	struct ckpt__rset excl = {0};
	struct region_list plan = {0};
	struct ckpt__rtab *tab = NULL;
	T->flags = flags;
	rc = ckpt__rset_copy(&T->user_excl, user_excl) ? CKPT_ENOMEM : 0;
	ckpt__rset_clear(&T->pinned);
	ckpt__rset_clear(&T->newdirty);
	if (!rc)
		rc = ckpt__maps_read(&T->maps);
	if (!rc)
		rc = ckpt__track_excluded(&T->maps, flags, &excl, &T->pinned);
	ckpt__rset_clear(&T->nosave);
	ckpt__rset_clear(&T->since);
	ckpt__rset_clear(&T->armed_span);
	ckpt__rset_clear(&T->armed_data);
	if (!rc) {
		info->unknown_threads = ckpt__threads_unknown(&T->maps, &excl, &T->nosave);
		for (size_t i = 0; i < T->nosave.n && !rc; i++)
			rc = ckpt__rset_add(&T->pinned, T->nosave.r[i].lo, T->nosave.r[i].hi)
				     ? CKPT_ENOMEM
				     : 0;
	}
	if (!rc)
		for (size_t i = 0; i < excl.n && !rc; i++)
			rc = ckpt__rset_del(&T->pinned, excl.r[i].lo, excl.r[i].hi) ? CKPT_ENOMEM : 0;
	if (!rc)
		rc = plan_regions(&T->maps, &excl, &T->pinned, &plan, &info->excluded_pages);
	ckpt__rset_clear(&T->only);
	if (!rc && only) {
		/* Named regions: their pages and nothing else, none pinned. */
		rc = restrict_plan(&plan, only, &excl);
		if (!rc && ckpt__rset_copy(&T->only, only))
			rc = CKPT_ENOMEM;
		ckpt__rset_clear(&T->pinned);
		ckpt__rset_clear(&T->nosave);
		info->unknown_threads = 0;
	}
	if (!rc && !(tab = ckpt__rtab_new(plan.n)))
		rc = CKPT_ENOMEM;
	if (!rc && (flags & CKPT_F_SHADOW)) {
		/* A mirror holds every committed page: room for all tracked
		 * memory and then some (address space only until used). */
		size_t want = 0;
		for (size_t i = 0; i < plan.n; i++)
			want += plan.r[i].end - plan.r[i].start;
		want += want / 4 + ((size_t)64 << 20);
		int mirror = be->sync != NULL;
		if (ckpt__shadow_start(mirror && want > ((size_t)1 << 30) ? want : 0, mirror) != 0)
			rc = CKPT_ENOMEM;
	}
	for (size_t i = 0; !rc && i < plan.n; i++) {
		if (ckpt__bm_ensure(plan.r[i].start, plan.r[i].end) != 0 ||
		    ((flags & CKPT_F_SHADOW) && ckpt__shadow_ensure(plan.r[i].start, plan.r[i].end))) {
			rc = CKPT_ENOMEM;
			break;
		}
		ckpt__bm_clear(plan.r[i].start, plan.r[i].end);
		tab->r[tab->n++] = plan.r[i];
		info->tracked_pages += (plan.r[i].end - plan.r[i].start) >> ckpt__pageshift;
	}
	if (rc) {
		rtab_free(tab);
		ckpt__rset_free(&excl);
		ckpt__mem_array_free((void **)&plan.r, &plan.cap, sizeof *plan.r);
		ckpt__threads_release();
		pthread_mutex_unlock(&T->lock);
		return rc == CKPT_ENOMEM ? ckpt__fail(rc, "ckpt_begin: out of memory planning what to protect")
					 : rc;
	}
	info->regions = tab->n;
	info->pinned_pages = mapped_pages(&T->maps, &T->pinned);
	memset(&T->cnt, 0, sizeof T->cnt);
	memset(T->ro, 0, sizeof T->ro);
	ckpt__rset_clear(&T->ro_begin);
	for (size_t i = 0; i < T->maps.n; i++) {
		const struct ckpt__vma *v = &T->maps.v[i];
		if (!(v->perms & (CKPT__VMA_W | CKPT__VMA_SHARED)) && !v->inode && !v->path[0])
			ckpt__rset_add(&T->ro_begin, v->start, v->end);
	}

	/* Publish first: the first write to a protected page must find it. */
	publish(tab);
	__atomic_store_n(&T->touch, be->touch != NULL, __ATOMIC_RELEASE);
	__atomic_store_n(&T->armed, 1, __ATOMIC_RELEASE);
	ckpt__track_vma_sync(T->maps.n);
	size_t armed = 0;
	for (; armed < tab->n; armed++) {
		rc = be->arm(&tab->r[armed]);
		if (rc)
			break;
	}
	if (rc) {
		/* Out of mappings (vm.max_map_count) or memory: undo. */
		const struct ckpt__region *bad = &tab->r[armed];
		ckpt__fail(rc, "ckpt_begin: cannot protect %#lx-%#lx (%s): %s",
			   (unsigned long)bad->start, (unsigned long)bad->end,
			   bad->name[0] ? bad->name : "anonymous", ckpt_strerror(rc));
		for (size_t i = 0; i < armed; i++)
			ckpt__track_disarm(&T->maps, &tab->r[i]);
		__atomic_store_n(&T->armed, 0, __ATOMIC_RELEASE);
		__atomic_store_n(&T->touch, 0, __ATOMIC_RELEASE);
		publish(NULL);
		reclaim(1);
	} else {
		ckpt__track_note_armed(tab);
		/* Resets may learn the pages written from the kernel's log of
		 * faults: its events opened now are inherited by the threads
		 * made from here on. */
		if (be == &ckpt__backend_uffd && (flags & CKPT_F_SHADOW))
			ckpt__flog_open();
		if (ckpt__maps_read(&T->maps) == 0) {
			/* Protecting split mappings at the edges of regions. */
			ckpt__track_vma_sync(T->maps.n);
		}
	}
	ckpt__rset_free(&excl);
	ckpt__mem_array_free((void **)&plan.r, &plan.cap, sizeof *plan.r);
	ckpt__threads_release();
	pthread_mutex_unlock(&T->lock);
	return rc;
}

void ckpt__closer_flush(struct ckpt__closer *c)
{
	if (c->lo < c->hi)
		T->be->close(c->r, c->lo, c->hi);
	c->lo = c->hi = 0;
}

void ckpt__closer_add(struct ckpt__closer *c, const struct ckpt__region *r, uintptr_t lo,
		      uintptr_t hi)
{
	if (c->lo < c->hi && r == c->r && lo >= c->hi &&
	    lo - c->hi <= ((uintptr_t)T->be->close_gap_pages << ckpt__pageshift)) {
		c->hi = hi;
		return;
	}
	ckpt__closer_flush(c);
	c->r = r;
	c->lo = lo;
	c->hi = hi;
}

void ckpt__track_vma_recount(long n)
{
	long budget = __atomic_load_n(&T->vma_budget, __ATOMIC_RELAXED);
	__atomic_store_n(&T->vma_est, n, __ATOMIC_RELAXED);
	if (budget && n < budget - budget / 8) {
		__atomic_store_n(&T->coarse_min, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&T->resync_every, 64, __ATOMIC_RELAXED);
	}
}

void ckpt__track_vma_sync(size_t nvmas)
{
	long limit = 65530;
	char buf[32];
	long fd = ckpt__raw_open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		long n = ckpt__raw_read((int)fd, buf, sizeof buf - 1);
		ckpt__raw_close((int)fd);
		if (n > 0) {
			buf[n] = '\0';
			long v = strtol(buf, NULL, 10);
			if (v > 0)
				limit = v;
		}
	}
	/* An eighth of the limit (at least 1024) stays free for others. */
	long reserve = limit / 8 > 1024 ? limit / 8 : 1024;
	__atomic_store_n(&T->vma_budget, limit > reserve ? limit - reserve : limit / 2,
			 __ATOMIC_RELAXED);
	__atomic_store_n(&T->vma_est, (long)nvmas, __ATOMIC_RELAXED);
	__atomic_store_n(&T->coarse_min, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&T->coarse_opens, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&T->resync_every, 64, __ATOMIC_RELAXED);
}

/* ---- the dirty set ----------------------------------------------------------- */

static int add_range(uintptr_t lo, uintptr_t hi, void *arg)
{
	return ckpt__rset_add(arg, lo, hi) ? CKPT_ENOMEM : 0;
}

struct tracked_ctx {
	struct ckpt__rset *d;
	int rc;
};

static int tracked_piece(uintptr_t s, uintptr_t e, const struct ckpt__vma *v, void *arg)
{
	struct tracked_ctx *c = arg;
	/* A writable mapping over a tracked page means the page is dirty, or
	 * was changed behind ckpt's back (a new mapping in its place, a move):
	 * either way it counts. */
	if ((v->perms & CKPT__VMA_W) && T->be->writable_means_dirty)
		c->rc |= add_range(s, e, c->d);
	else
		c->rc |= ckpt__bm_runs(s, e, add_range, c->d);
	return 0;
}

/* The back-end's record of written pages into the bitmap (T->lock held). */
int ckpt__track_sync_locked(int rearm)
{
	const struct ckpt__rtab *t = T->tab;
	if (!t || !T->be->sync)
		return 0;
	/* Read-only regions too: a page written and then made read-only by
	 * the program (a JIT flipping code to read+execute) keeps its record
	 * in the page tables, and nothing else holds it. */
	int rc = 0;
	for (size_t i = 0; i < t->n && !rc; i++)
		rc = T->be->sync(&t->r[i], t->r[i].start, t->r[i].end, rearm);
	return rc;
}

/* Brings the record of the pages of [lo, hi) written so far into the
 * bitmap, ahead of a change the program makes there (T->lock held).  A
 * sync that fails marks the tracked part dirty instead: a superset, never
 * a loss. */
static void sync_range_locked(uintptr_t lo, uintptr_t hi)
{
	const struct ckpt__rtab *t = T->tab;
	if (!t || !T->be->sync)
		return;
	for (size_t i = ckpt__rtab_lower(t, lo); i < t->n && t->r[i].start < hi; i++) {
		const struct ckpt__region *r = &t->r[i];
		uintptr_t mask = ((uintptr_t)1 << r->pgshift) - 1;
		uintptr_t a = (r->start > lo ? r->start : lo) & ~mask;
		uintptr_t b = ((r->end < hi ? r->end : hi) + mask) & ~mask;
		if (a < b && T->be->sync(r, a, b, 1) != 0)
			ckpt__bm_set(a, b);
	}
}

static int mapped_piece(uintptr_t s, uintptr_t e, const struct ckpt__vma *v, void *arg)
{
	(void)v;
	struct tracked_ctx *c = arg;
	c->rc |= add_range(s, e, c->d);
	return 0;
}

static int runs_push(struct ckpt__runs *out, uintptr_t lo, uintptr_t hi, const char *name)
{
	size_t np = (hi - lo) >> ckpt__pageshift;
	if (out->n) {
		ckpt_page_run *last = &out->r[out->n - 1];
		const char *lname = out->text + (uintptr_t)last->mapping;
		if (last->start + (last->npages << ckpt__pageshift) == lo && !strcmp(lname, name)) {
			last->npages += np;
			out->pages += np;
			return 0;
		}
	}
	size_t len = strlen(name) + 1;
	if (ckpt__mem_grow((void **)&out->r, &out->cap, out->n + 1, sizeof *out->r) ||
	    ckpt__mem_grow((void **)&out->text, &out->text_cap, out->text_len + len, 1))
		return CKPT_ENOMEM;
	memcpy(out->text + out->text_len, name, len);
	out->r[out->n++] = (ckpt_page_run){lo, np, (const char *)(uintptr_t)out->text_len};
	out->text_len += len;
	out->pages += np;
	return 0;
}

static int run_piece(uintptr_t s, uintptr_t e, const struct ckpt__vma *v, void *arg)
{
	return runs_push(arg, s, e, v->path);
}

/* T->lock held, tracking.  Reads the maps afresh. */
static int collect_locked(struct ckpt__runs *out)
{
	out->n = out->text_len = out->pages = 0;
	int rc = ckpt__track_sync_locked(0);
	if (!rc)
		rc = ckpt__maps_read(&T->maps);
	if (rc)
		return rc;
	const struct ckpt__maps *m = &T->maps;
	const struct ckpt__rtab *t = T->tab;
	struct ckpt__rset excl = {0}, d = {0}, known = {0};
	struct tracked_ctx c = {&d, 0};
	rc = ckpt__track_excluded(m, T->flags, &excl, NULL);
	for (size_t i = 0; !rc && i < t->n; i++) {
		ckpt__maps_foreach(m, t->r[i].start, t->r[i].end, tracked_piece, &c);
		c.rc |= ckpt__rset_add(&known, t->r[i].start, t->r[i].end);
	}
	for (size_t i = 0; !rc && i < T->pinned.n; i++) {
		ckpt__maps_foreach(m, T->pinned.r[i].lo, T->pinned.r[i].hi, mapped_piece, &c);
		c.rc |= ckpt__rset_add(&known, T->pinned.r[i].lo, T->pinned.r[i].hi);
	}
	for (size_t i = 0; !rc && !T->only.n && i < T->newdirty.n; i++)
		ckpt__maps_foreach(m, T->newdirty.r[i].lo, T->newdirty.r[i].hi, mapped_piece, &c);
	for (size_t i = 0; !rc && i < excl.n; i++)
		c.rc |= ckpt__rset_add(&known, excl.r[i].lo, excl.r[i].hi);
	/* Writable memory that is none of the above appeared after begin
	 * (not with named regions: only what the program named counts). */
	for (size_t i = 0; !rc && !c.rc && !T->only.n && i < m->n; i++) {
		const struct ckpt__vma *v = &m->v[i];
		if (!(v->perms & CKPT__VMA_W))
			continue;
		uintptr_t at = v->start;
		size_t j = ckpt__rset_lower(&known, at);
		while (at < v->end) {
			if (j < known.n && known.r[j].lo <= at) {
				at = known.r[j].hi;
				j++;
				continue;
			}
			uintptr_t e = (j < known.n && known.r[j].lo < v->end) ? known.r[j].lo : v->end;
			c.rc |= add_range(at, e, &d);
			at = e;
		}
	}
	for (size_t i = 0; !rc && i < excl.n; i++)
		c.rc |= ckpt__rset_del(&d, excl.r[i].lo, excl.r[i].hi);
	if (!rc && c.rc)
		rc = CKPT_ENOMEM;
	for (size_t i = 0; !rc && i < d.n; i++)
		rc = ckpt__maps_foreach(m, d.r[i].lo, d.r[i].hi, run_piece, out);
	for (size_t i = 0; !rc && i < out->n; i++)
		out->r[i].mapping = out->text + (uintptr_t)out->r[i].mapping;
	ckpt__rset_free(&excl);
	ckpt__rset_free(&d);
	ckpt__rset_free(&known);
	if (rc)
		return ckpt__fail(rc, "out of memory computing the dirty set");
	return 0;
}

int ckpt__track_collect(struct ckpt__runs *out)
{
	if (ckpt__track_init())
		return CKPT_ENOMEM;
	pthread_mutex_lock(&T->lock);
	int rc = T->tab ? collect_locked(out) : CKPT_ESTATE;
	pthread_mutex_unlock(&T->lock);
	return rc;
}

void ckpt__runs_free(struct ckpt__runs *runs)
{
	ckpt__mem_array_free((void **)&runs->r, &runs->cap, sizeof *runs->r);
	ckpt__mem_array_free((void **)&runs->text, &runs->text_cap, 1);
	runs->n = runs->text_len = runs->pages = 0;
}

/* ---- end -------------------------------------------------------------------- */

int ckpt__track_end(struct ckpt__runs *final)
{
	if (ckpt__track_init())
		return CKPT_ENOMEM;
	pthread_mutex_lock(&T->lock);
	struct ckpt__rtab *t = T->tab;
	if (!t) {
		pthread_mutex_unlock(&T->lock);
		return ckpt__fail(CKPT_ESTATE, "ckpt_end: not tracking");
	}
	int rc = collect_locked(final);
	if (rc)
		final->n = final->pages = 0;
	/* collect_locked just read the maps: give back every protection. */
	int drc = 0;
	for (size_t i = 0; i < t->n; i++)
		drc |= ckpt__track_disarm(&T->maps, &t->r[i]);
	__atomic_store_n(&T->armed, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&T->touch, 0, __ATOMIC_RELEASE);
	publish(NULL);
	reclaim(1);
	ckpt__flog_close();
	ckpt__shadow_stop();
	ckpt__bm_release();
	ckpt__rset_clear(&T->pinned);
	ckpt__rset_clear(&T->newdirty);
	ckpt__rset_free(&T->armed_span);
	ckpt__rset_free(&T->armed_data);
	ckpt__rset_free(&T->only);
	pthread_mutex_unlock(&T->lock);
	if (drc)
		return ckpt__fail(CKPT_EIO, "ckpt_end: could not restore every protection");
	return rc;
}

void ckpt__track_counters(struct ckpt__counters *out)
{
	memset(out, 0, sizeof *out);
	if (!T)
		return;
	out->faults = __atomic_load_n(&T->cnt.faults, __ATOMIC_RELAXED);
	out->fallbacks = __atomic_load_n(&T->cnt.fallbacks, __ATOMIC_RELAXED);
	out->fallback_pages = __atomic_load_n(&T->cnt.fallback_pages, __ATOMIC_RELAXED);
	out->kernel_writes = __atomic_load_n(&T->cnt.kernel_writes, __ATOMIC_RELAXED);
	out->moved = __atomic_load_n(&T->cnt.moved, __ATOMIC_RELAXED);
	out->fast_restores = __atomic_load_n(&T->cnt.fast_restores, __ATOMIC_RELAXED);
}

/* ---- changes while tracking --------------------------------------------------- */

/* Removes [lo, hi) from the table, giving it its protection back first if
 * `disarm`.  T->lock held. */
static int drop_range(uintptr_t lo, uintptr_t hi, int disarm)
{
	struct ckpt__rtab *t = T->tab;
	ckpt__rset_del(&T->since, lo, hi);
	if (!rtab_overlaps(t, lo, hi))
		return 0;
	struct ckpt__rtab *n = rtab_edit(t, lo, hi, EDIT_REMOVE, 0);
	if (!n)
		return CKPT_ENOMEM;
	if (disarm) {
		int rc = ckpt__maps_read(&T->maps);
		if (rc) {
			rtab_free(n);
			return rc;
		}
		for (size_t i = ckpt__rtab_lower(t, lo); i < t->n && t->r[i].start < hi; i++) {
			struct ckpt__region r = t->r[i];
			r.start = r.start > lo ? r.start : lo;
			r.end = r.end < hi ? r.end : hi;
			ckpt__track_disarm(&T->maps, &r);
		}
	}
	publish(n);
	return 0;
}

int ckpt__track_exclude(uintptr_t lo, uintptr_t hi)
{
	if (ckpt__track_init())
		return CKPT_ENOMEM;
	pthread_mutex_lock(&T->lock);
	int rc = 0;
	if (T->tab) {
		rc = ckpt__rset_add(&T->user_excl, lo, hi) ? CKPT_ENOMEM : 0;
		if (!rc)
			rc = drop_range(lo, hi, 1);
		if (!rc) {
			ckpt__bm_clear(lo, hi);
			ckpt__rset_del(&T->pinned, lo, hi);
			ckpt__rset_del(&T->newdirty, lo, hi);
		}
	}
	pthread_mutex_unlock(&T->lock);
	return rc;
}

void ckpt__track_pin(uintptr_t lo, uintptr_t hi)
{
	if (!ckpt__track_armed())
		return;
	pthread_mutex_lock(&T->lock);
	if (T->only.n) {
		/* Named regions: pinned (saved whole) only where named. */
		for (size_t i = ckpt__rset_lower(&T->only, lo); T->tab && i < T->only.n && T->only.r[i].lo < hi;
		     i++) {
			uintptr_t a = T->only.r[i].lo > lo ? T->only.r[i].lo : lo;
			uintptr_t b = T->only.r[i].hi < hi ? T->only.r[i].hi : hi;
			if (ckpt__rset_add(&T->pinned, a, b) == 0)
				drop_range(a, b, 1);
		}
	} else if (T->tab && ckpt__rset_add(&T->pinned, lo, hi) == 0) {
		drop_range(lo, hi, 1);
	}
	pthread_mutex_unlock(&T->lock);
}

void ckpt__track_read_only(uintptr_t lo, uintptr_t hi)
{
	if (!ckpt__track_armed())
		return;
	layout_moved();
	unsigned i = __atomic_fetch_add(&T->ro_next, 1, __ATOMIC_RELAXED) % CKPT__RO_SLOTS;
	/* Emptied first so that a reader never sees a mixed pair as a range
	 * larger than either. */
	__atomic_store_n(&T->ro[i].hi, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&T->ro[i].lo, lo, __ATOMIC_RELEASE);
	__atomic_store_n(&T->ro[i].hi, hi, __ATOMIC_RELEASE);
}

static void forget_locked(uintptr_t lo, uintptr_t hi, int disarm)
{
	if (!T->tab)
		return;
	drop_range(lo, hi, disarm);
	ckpt__bm_clear(lo, hi);
	if (!disarm) {
		ckpt__rset_del(&T->pinned, lo, hi);
		ckpt__rset_del(&T->newdirty, lo, hi);
	}
}

/* Stops tracking [lo, hi): given its protection back if it stays mapped
 * (`disarm`), forgotten whole if it is gone. */
static void forget(uintptr_t lo, uintptr_t hi, int disarm)
{
	if (!ckpt__track_armed())
		return;
	layout_moved();
	pthread_mutex_lock(&T->lock);
	forget_locked(lo, hi, disarm);
	pthread_mutex_unlock(&T->lock);
}

void ckpt__track_unmapped_locked(uintptr_t lo, uintptr_t hi)
{
	forget_locked(lo, hi, 0);
}

void ckpt__track_restored_locked(const struct ckpt__rset *written, const struct ckpt__rset *opened,
				 const struct ckpt__rset *created, int clean)
{
	/* Recreated mappings become regions (new: the next commit stores them
	 * whole); writable pages are tracked like any other. */
	struct ckpt__rtab *t = T->tab;
	size_t extra = 0;
	for (size_t i = 0; i < created->n; i++)
		extra += !rtab_overlaps(t, created->r[i].lo, created->r[i].hi);
	struct ckpt__rset added = {0};
	if (extra) {
		struct ckpt__rtab *n = ckpt__rtab_new(t->n + extra);
		if (n) {
			size_t a = 0, b = 0;
			while (a < t->n || b < created->n) {
				if (b < created->n && rtab_overlaps(t, created->r[b].lo, created->r[b].hi)) {
					b++;
					continue;
				}
				if (b == created->n || (a < t->n && t->r[a].start < created->r[b].lo)) {
					n->r[n->n++] = t->r[a++];
					continue;
				}
				uintptr_t lo = created->r[b].lo, hi = created->r[b].hi;
				if (ckpt__bm_ensure(lo, hi) == 0 && ckpt__rset_add(&added, lo, hi) == 0) {
					ckpt__bm_clear(lo, hi);
					n->r[n->n++] = (struct ckpt__region){
						lo, hi, PROT_READ | PROT_WRITE, CKPT__RG_ANON,
						ckpt__pageshift, ""};
				}
				b++;
			}
			publish(n);
			t = n;
			/* Armed like any region (registered, for uffd), once
			 * published. */
			for (size_t i = 0; i < added.n; i++) {
				size_t j = ckpt__rtab_lower(t, added.r[i].lo);
				for (; j < t->n && t->r[j].start < added.r[i].hi; j++)
					T->be->arm(&t->r[j]);
			}
		}
	}
	ckpt__rset_free(&added);
	for (size_t i = 0; i < written->n; i++) {
		uintptr_t lo = written->r[i].lo, hi = written->r[i].hi;
		for (size_t j = ckpt__rtab_lower(t, lo); j < t->n && t->r[j].start < hi; j++) {
			const struct ckpt__region *r = &t->r[j];
			uintptr_t a = r->start > lo ? r->start : lo, b = r->end < hi ? r->end : hi;
			if (a >= b)
				continue;
			if (clean)
				ckpt__bm_clear(a, b);
			else
				ckpt__bm_set(a, b);
		}
	}
	struct ckpt__closer cl = {0};
	for (size_t i = 0; i < opened->n; i++) {
		uintptr_t lo = opened->r[i].lo, hi = opened->r[i].hi;
		for (size_t j = ckpt__rtab_lower(t, lo); j < t->n && t->r[j].start < hi; j++) {
			const struct ckpt__region *r = &t->r[j];
			uintptr_t a = r->start > lo ? r->start : lo, b = r->end < hi ? r->end : hi;
			if (a >= b)
				continue;
			if (r->prot & PROT_WRITE) {
				ckpt__closer_add(&cl, r, a, b);
				continue;
			}
			/* A region the program keeps read-only (or PROT_NONE) was
			 * made writable for the copy: its protection goes back,
			 * and (userfaultfd) the copy's writes are not the
			 * program's. */
			T->be->protect(r, a, b, r->prot);
			T->be->close(r, a, b);
		}
	}
	ckpt__closer_flush(&cl);
	for (size_t i = 0; i < created->n; i++)
		ckpt__rset_del(&T->since, created->r[i].lo, created->r[i].hi);
	/* A clean restore rewrote every marked page (all were candidates). */
	T->marked_closed = !clean && written->n;
}

void ckpt__track_stack(uintptr_t lo, uintptr_t hi)
{
	forget(lo, hi, 1);
}

void ckpt__track_unmapped(uintptr_t lo, uintptr_t hi)
{
	forget(lo, hi, 0);
}

void ckpt__track_discard(uintptr_t lo, uintptr_t hi)
{
	if (!ckpt__track_armed())
		return;
	/* The pages will read as zero (or the file's data): a change of
	 * content that no write fault shows. */
	layout_moved();
	const struct ckpt__rtab *t = ckpt__rcu_enter();
	if (t)
		for (size_t i = ckpt__rtab_lower(t, lo); i < t->n && t->r[i].start < hi; i++) {
			uintptr_t a = t->r[i].start > lo ? t->r[i].start : lo;
			uintptr_t b = t->r[i].end < hi ? t->r[i].end : hi;
			uintptr_t mask = ((uintptr_t)1 << t->r[i].pgshift) - 1;
			ckpt__bm_set(a & ~mask, (b + mask) & ~mask);
		}
	ckpt__rcu_exit();
}

void ckpt__track_touch_slow(uintptr_t p, size_t n)
{
	uintptr_t lo = p, hi = lo + n;
	if (hi < lo)
		hi = UINTPTR_MAX;
	const struct ckpt__rtab *t = ckpt__rcu_enter();
	if (t && T->be && T->be->touch) {
		int hit = 0;
		for (size_t i = ckpt__rtab_lower(t, lo); i < t->n && t->r[i].start < hi; i++) {
			const struct ckpt__region *r = &t->r[i];
			if (!(r->prot & PROT_WRITE))
				continue;
			uintptr_t mask = ((uintptr_t)1 << r->pgshift) - 1;
			uintptr_t a = (r->start > lo ? r->start : lo) & ~mask;
			uintptr_t b = ((r->end < hi ? r->end : hi) + mask) & ~mask;
			T->be->touch(r, a, b);
			hit = 1;
		}
		if (hit)
			__atomic_fetch_add(&T->cnt.kernel_writes, 1, __ATOMIC_RELAXED);
	}
	ckpt__rcu_exit();
}

struct newdirty_ctx {
	int rc;
};

static int note_writable(uintptr_t s, uintptr_t e, const struct ckpt__vma *v, void *arg)
{
	struct newdirty_ctx *c = arg;
	if (v->perms & CKPT__VMA_W)
		c->rc |= ckpt__rset_add(&T->newdirty, s, e);
	return 0;
}

int ckpt__track_mprotect(uintptr_t lo, uintptr_t hi, int prot, int (*real)(void *, size_t, int))
{
	if (!ckpt__track_armed())
		return real((void *)lo, hi - lo, prot) ? -errno : 0;
	pthread_mutex_lock(&T->lock);
	layout_moved();
	struct ckpt__rtab *t = T->tab;
	int rc = 0;
	if (!t)
		goto plain;
	if (!(prot & PROT_WRITE) && ckpt__maps_read(&T->maps) == 0) {
		/* Untracked memory written since begin and made read-only now
		 * would no longer look new: remember it. */
		struct newdirty_ctx c = {0};
		ckpt__maps_foreach(&T->maps, lo, hi, note_writable, &c);
		for (size_t i = ckpt__rtab_lower(t, lo); i < t->n && t->r[i].start < hi; i++)
			ckpt__rset_del(&T->newdirty, t->r[i].start, t->r[i].end);
	}
	if (!rtab_overlaps(t, lo, hi))
		goto plain;
	/* What was written there so far is recorded before the protection
	 * changes: under userfaultfd the record is in the page tables, and a
	 * page made read-only must still count as written. */
	sync_range_locked(lo, hi);
	struct ckpt__rtab *n = rtab_edit(t, lo, hi, EDIT_PROT, prot);
	if (!n) {
		pthread_mutex_unlock(&T->lock);
		return -ENOMEM;
	}
	publish(n);
	/* A fault handler (or an interposer) on another thread that loaded
	 * the table before this change would give a page the protection it
	 * had before, after the change: a JIT's code page would lose
	 * PROT_EXEC, a page made read-only would become writable.  None may
	 * still hold the old table once the protection is applied. */
	rcu_synchronize();
	reclaim(0);
	/* Tracked pieces get the program's protection minus write while
	 * clean; the rest gets it as asked. */
	uintptr_t at = lo;
	size_t i = ckpt__rtab_lower(n, lo);
	while (at < hi && !rc) {
		if (i < n->n && n->r[i].start <= at) {
			uintptr_t e = n->r[i].end < hi ? n->r[i].end : hi;
			rc = T->be->protect(&n->r[i], at, e, prot);
			at = e;
			i++;
			continue;
		}
		uintptr_t e = (i < n->n && n->r[i].start < hi) ? n->r[i].start : hi;
		if (real((void *)at, e - at, prot))
			rc = -errno;
		else if (!(prot & PROT_WRITE))
			ckpt__track_read_only(at, e);
		at = e;
	}
	pthread_mutex_unlock(&T->lock);
	return rc;
plain:
	if (real((void *)lo, hi - lo, prot))
		rc = -errno;
	else if (!(prot & PROT_WRITE))
		ckpt__track_read_only(lo, hi);
	pthread_mutex_unlock(&T->lock);
	return rc;
}
