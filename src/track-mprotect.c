/*
 * track-mprotect.c - the mprotect + SIGSEGV back-end (GNU libsigsegv).
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A clean tracked page is mapped without PROT_WRITE.  The first write
 * faults; libsigsegv hands the address to on_fault(), which marks the page
 * in the dirty bitmap and gives it its protection back; the write then runs
 * again and succeeds.
 *
 * Rules for everything on the fault path (CKPT__FAULTPATH functions):
 *  - Only raw system calls: glibc's wrappers write errno, which lives in the
 *    TLS block, and ckpt must never write memory it may have protected while
 *    SIGSEGV is blocked (a second fault then kills the process).  errno is
 *    therefore never written, so it needs no saving.
 *  - No allocation, and no lock that code it interrupts may hold.  The only
 *    lock (fault_lock) guards the buffer used to read /proc/self/maps; the
 *    handler runs with every signal blocked, and normal code that takes it
 *    (an interposer opening a buffer near the mapping limit) blocks every
 *    signal first, so no thread can be interrupted while holding it by a
 *    handler that then waits for it.
 *  - Writes go to ckpt's own memory only: the dirty bitmap (one atomic OR
 *    per word) and the counters.  libckpt is linked with -z now, so no lazy
 *    binding writes a GOT entry during a fault.
 *  - Unprotect, then mark: a collector (ckpt_commit) takes the marks and
 *    then re-protects what it took.  If it takes the mark before we set it,
 *    our mark stays for the next round; if after, our unprotect came first
 *    and its re-protect comes after: either the page ends protected or it
 *    ends marked, so a racing write is never lost.
 *  - The kernel's own writes do not fault, so that order cannot help them:
 *    memory a system call in flight lets the kernel write is registered
 *    (ckpt__kw_enter) and never protected while it is (protect_around).
 *
 * The installed SIGSEGV handler is ckpt's dispatcher, which stays installed
 * once tracking has begun: it sends write faults on tracked pages to
 * libsigsegv's handler (and so to on_fault), recognises mappings that
 * glibc's realloc moved with mremap while they were protected, retries
 * faults that a concurrent ckpt_end made stale, and passes everything else
 * to the program's own handler, or lets it kill the process exactly as it
 * would have without ckpt.  The program's sigaction() calls for SIGSEGV are
 * recorded as that chain target (interpose-mem.c), so it sees its own
 * handler.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "track-mprotect.h"
#include "bitmap.h"
#include "error.h"
#include "interpose.h"
#include "shadow.h"
#include "track.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sigsegv.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#define T ckpt__T

/* Ranges of memory system calls in flight let the kernel write, one word
 * each so that a slot is claimed and published in one compare-and-swap:
 * the first page's number above KW_LEN_BITS bits of length in pages; 0 is
 * a free slot. */
#define KW_SLOTS 1024
#define KW_LEN_BITS 29

/* The back-end's process-wide state, in ckpt's own memory. */
struct mp_state {
	int installed;                 /* dispatcher installed, atomic */
	int installing;                /* libsigsegv is installing its handler */
	struct sigaction prog;         /* the program's SIGSEGV action (chain target) */
	void (*lib)(int, siginfo_t *, void *); /* libsigsegv's handler */
	uintptr_t stale_addr;          /* loop guard for stale faults */
	unsigned stale_count;
	/* Kernel writes in flight (ckpt__kw_enter), all atomic. */
	unsigned long kw_closing, kw_closed; /* protect_around calls begun, ended */
	long kw_overflow;              /* calls in flight without a slot */
	uint64_t kw[KW_SLOTS];
};

#define MP (*(struct mp_state **)&ckpt__g.mp)

CKPT__REAL(int, sigaction, (int, const struct sigaction *, struct sigaction *))

/* Kernel sigaction for raw rt_sigaction calls. */
struct ksigaction {
	void *handler;
	unsigned long flags;
	void *restorer;
	uint64_t mask;
};

/* ---- the fault path -------------------------------------------------------- */

CKPT__FAULTPATH static long count_add(uint64_t *c, uint64_t n)
{
	return (long)__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

/* Whether page p of region r is writable now (marked); pages outside the
 * region count as protected: whatever is there, ckpt cannot merge with it. */
CKPT__FAULTPATH static int page_open(const struct ckpt__region *r, uintptr_t p)
{
	return p >= r->start && p < r->end && ckpt__bm_test(p);
}

/* How many mappings unprotecting [lo, hi) of r adds (negative: removes).
 * Inside a region a page is writable when it is marked, so the mapping
 * boundaries around and inside the block can be counted on the bitmap:
 * after the change the block is one writable stretch.  (A rollback to an
 * older snapshot leaves the pages it wrote marked but protected; the count
 * then runs low, and the kernel's refusal makes unprotect recount.) */
CKPT__FAULTPATH static long vma_delta(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi)
{
	uintptr_t pg = (uintptr_t)1 << r->pgshift;
	long before = 0;
	int prev = page_open(r, lo - pg);
	for (uintptr_t p = lo; p <= hi; p += pg) {
		int cur = page_open(r, p);
		before += cur != prev;
		prev = cur;
	}
	long after = !page_open(r, lo - pg) + !page_open(r, hi);
	return after - before;
}

/* Makes [lo, hi) of r writable and marks it.  0 or -errno. */
CKPT__FAULTPATH static long open_block(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi,
				       long delta)
{
	/* CKPT_F_SHADOW: the committed content, copied while it still is. */
	if ((r->prot & PROT_READ) && ckpt__shadow_on())
		ckpt__shadow_save(lo, hi);
	long rc = ckpt__raw_mprotect(lo, hi - lo, r->prot);
	if (rc == 0) {
		ckpt__bm_set(lo, hi);
		__atomic_add_fetch(&T->vma_est, delta, __ATOMIC_RELAXED);
	}
	return rc;
}

/* The aligned block around [lo, hi) of 2^shift system pages, in r. */
CKPT__FAULTPATH static void block_of(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi,
				     unsigned shift, uintptr_t *a, uintptr_t *b)
{
	*a = r->start;
	*b = r->end;
	unsigned sh = shift + ckpt__pageshift;
	if (sh >= 8 * sizeof(uintptr_t) - 1)
		return;
	uintptr_t size = (uintptr_t)1 << sh;
	if (size < ((uintptr_t)1 << r->pgshift))
		size = (uintptr_t)1 << r->pgshift;
	uintptr_t ba = lo & ~(size - 1), bb = (hi + size - 1) & ~(size - 1);
	if (ba > *a)
		*a = ba;
	if (bb < *b && bb > ba)
		*b = bb;
}

CKPT__FAULTPATH static int count_cb(const struct ckpt__vma *v, void *arg)
{
	(void)v;
	++*(long *)arg;
	return 0;
}

/* Takes fault_lock with every signal blocked (the old mask in *old).  A
 * signal handler can write a tracked page, and its fault takes this lock;
 * if it interrupted the same thread while that held the lock (an
 * interposer opening a buffer near the mapping limit), it would spin
 * forever.  Inside the fault handler every signal is blocked already and
 * the calls change nothing. */
CKPT__FAULTPATH static void fault_lock(uint64_t *old)
{
	uint64_t all = ~(uint64_t)0;
	if (ckpt__sys6(SYS_rt_sigprocmask, SIG_BLOCK, (long)&all, (long)old, 8, 0, 0) != 0)
		*old = all; /* then leave the mask as it is (see fault_unlock) */
	ckpt__spin_lock(&T->fault_lock);
}

CKPT__FAULTPATH static void fault_unlock(const uint64_t *old)
{
	ckpt__spin_unlock(&T->fault_lock);
	if (*old != ~(uint64_t)0)
		ckpt__sys6(SYS_rt_sigprocmask, SIG_SETMASK, (long)old, 0, 8, 0, 0);
}

/* Replaces the estimate by the kernel's count.  The estimate assumes the
 * kernel merges neighbouring writable pieces, which it declines when their
 * anon_vma differ; reading /proc/self/maps costs milliseconds at tens of
 * thousands of mappings, so this runs only near the budget. */
CKPT__FAULTPATH static long vma_resync(void)
{
	long n = 0;
	uint64_t mask;
	fault_lock(&mask);
	long rc = ckpt__maps_stream(T->fault_buf, sizeof T->fault_buf, count_cb, &n);
	fault_unlock(&mask);
	if (rc == 0)
		__atomic_store_n(&T->vma_est, n, __ATOMIC_RELAXED);
	return __atomic_load_n(&T->vma_est, __ATOMIC_RELAXED);
}

static const unsigned block_shifts[] = {4, 6, 9, 12, 15, 18, 63};
#define NSHIFTS (sizeof block_shifts / sizeof block_shifts[0])

/* Unprotects [lo, hi) of r (aligned to its page size) and marks it dirty.
 *
 * Every isolated page unprotected splits a mapping, and the kernel allows
 * vm.max_map_count mappings per process.  Near ckpt's share of that limit
 * (T->vma_budget) it unprotects the smallest aligned block around the page
 * that does not add a mapping: the writable pages it reaches merge into one,
 * and its clean pages count as dirty, a superset, never a loss.  The
 * estimate is checked against the kernel's count now and then; while the
 * count stays over budget the blocks grow, up to the whole region, after
 * which the region cannot add a mapping any more.  0 or -errno. */
CKPT__FAULTPATH static long unprotect(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi)
{
	long delta = vma_delta(r, lo, hi);
	long est = __atomic_load_n(&T->vma_est, __ATOMIC_RELAXED);
	long budget = __atomic_load_n(&T->vma_budget, __ATOMIC_RELAXED);
	if (delta <= 0 || budget == 0 /* not measured yet */ || est + delta <= budget) {
		long rc = open_block(r, lo, hi, delta);
		if (rc != -ENOMEM)
			return rc;
		vma_resync();
	}
	unsigned k = __atomic_load_n(&T->coarse_min, __ATOMIC_RELAXED);
	unsigned long every = __atomic_load_n(&T->resync_every, __ATOMIC_RELAXED);
	if (!every)
		every = 64;
	if (__atomic_add_fetch(&T->coarse_opens, 1, __ATOMIC_RELAXED) % every == 0) {
		/* Checking costs a read of /proc/self/maps (milliseconds at this
		 * size): check less often while the estimate holds. */
		long before = __atomic_load_n(&T->vma_est, __ATOMIC_RELAXED);
		long actual = vma_resync();
		long off = actual > before ? actual - before : before - actual;
		if (off < T->vma_budget / 64) {
			if (every < 4096)
				__atomic_store_n(&T->resync_every, every * 2, __ATOMIC_RELAXED);
		} else {
			__atomic_store_n(&T->resync_every, 64, __ATOMIC_RELAXED);
		}
		/* Blocks of this size do not bring the count down here. */
		if (actual > T->vma_budget && k + 1 < NSHIFTS)
			__atomic_store_n(&T->coarse_min, ++k, __ATOMIC_RELAXED);
	}
	for (; k < NSHIFTS - 1; k++) {
		uintptr_t a, b;
		block_of(r, lo, hi, block_shifts[k], &a, &b);
		if (vma_delta(r, a, b) <= 0)
			break;
	}
	for (; k < NSHIFTS; k++) {
		uintptr_t a, b;
		block_of(r, lo, hi, block_shifts[k], &a, &b);
		long d = vma_delta(r, a, b);
		long rc = open_block(r, a, b, d);
		if (rc == 0) {
			count_add(&T->cnt.fallbacks, 1);
			count_add(&T->cnt.fallback_pages, (b - a) >> ckpt__pageshift);
			return 0;
		}
		if (rc != -ENOMEM)
			return rc;
	}
	return -ENOMEM;
}

struct find_ctx {
	uintptr_t addr;
	struct ckpt__vma v;
	int found;
	char path0; /* first byte of the path */
};

CKPT__FAULTPATH static int find_cb(const struct ckpt__vma *v, void *arg)
{
	struct find_ctx *f = arg;
	if (v->start <= f->addr && f->addr < v->end) {
		f->v = *v;
		f->path0 = v->path[0];
		f->found = 1;
		return 1;
	}
	return v->start > f->addr;
}

/* The kernel's current view of the mapping holding addr. */
CKPT__FAULTPATH static int vma_of(uintptr_t addr, struct find_ctx *f)
{
	f->addr = addr;
	f->found = 0;
	uint64_t mask;
	fault_lock(&mask);
	ckpt__maps_stream(T->fault_buf, sizeof T->fault_buf, find_cb, f);
	fault_unlock(&mask);
	return f->found;
}

CKPT__FAULTPATH static void die_now(const char *why, const uintptr_t *v, int nv)
{
	ckpt__fault_message(why, v, nv);
	struct ksigaction dfl = {0};
	ckpt__sys6(SYS_rt_sigaction, SIGSEGV, (long)&dfl, 0, 8, 0, 0);
}

/* libsigsegv's user handler: a write to a tracked page. */
CKPT__FAULTPATH static int on_fault(void *fault_address, int serious)
{
	(void)serious;
	uintptr_t addr = (uintptr_t)fault_address;
	const struct ckpt__rtab *t = ckpt__rcu_enter();
	const struct ckpt__region *r = ckpt__rtab_find(t, addr);
	if (r && (r->prot & PROT_WRITE)) {
		uintptr_t mask = ((uintptr_t)1 << r->pgshift) - 1;
		uintptr_t page = addr & ~mask;
		long rc = unprotect(r, page, page + mask + 1);
		if (rc == 0) {
			count_add(&T->cnt.faults, 1);
		} else {
			struct find_ctx f;
			/* Unmapped meanwhile: the retry faults as unmapped
			 * and goes to the program.  Otherwise ckpt cannot
			 * let the write through and says so before dying. */
			if (vma_of(addr, &f)) {
				uintptr_t v[6] = {addr, r->start, r->end, (uintptr_t)-rc,
						  (uintptr_t)T->vma_est, (uintptr_t)T->vma_budget};
				die_now("cannot unprotect the tracked page at %x (region %x-%x): "
					"error %x; mappings about %x, ckpt's budget %x",
					v, 6);
			}
		}
	}
	ckpt__rcu_exit();
	/* Always "handled": when the table changed in between, the write runs
	 * again and the dispatcher looks at it afresh.  Declining would make
	 * libsigsegv reset SIGSEGV to SIG_DFL for every thread. */
	return 1;
}

struct adopt_ctx {
	const struct ckpt__rtab *t;
	uintptr_t addr;
	size_t ri;         /* first region ending after prev_end */
	uintptr_t prev_end;
	int found;
	struct ckpt__vma v;
	char path0;
	uintptr_t min_vanished; /* smallest unmapped piece of a writable anonymous region */
};

/* Regions (or parts of them) in the unmapped gap [a->prev_end, upto). */
CKPT__FAULTPATH static void vanished_upto(struct adopt_ctx *a, uintptr_t upto)
{
	const struct ckpt__rtab *t = a->t;
	for (size_t i = a->ri; i < t->n && t->r[i].start < upto; i++) {
		const struct ckpt__region *r = &t->r[i];
		uintptr_t lo = r->start > a->prev_end ? r->start : a->prev_end;
		uintptr_t hi = r->end < upto ? r->end : upto;
		if (lo < hi && (r->flags & CKPT__RG_ANON) && !(r->flags & CKPT__RG_SHARED) &&
		    (r->prot & PROT_WRITE) && hi - lo < a->min_vanished)
			a->min_vanished = hi - lo;
	}
	while (a->ri < t->n && t->r[a->ri].end <= upto)
		a->ri++;
}

CKPT__FAULTPATH static int adopt_cb(const struct ckpt__vma *v, void *arg)
{
	struct adopt_ctx *a = arg;
	vanished_upto(a, v->start);
	a->prev_end = v->end;
	if (v->start <= a->addr && a->addr < v->end) {
		a->v = *v;
		a->path0 = v->path[0];
		a->found = 1;
	}
	return 0;
}

/* Whether [lo, hi) overlaps anonymous memory the program itself mapped or
 * made read-only while tracking (recorded by the interposers). */
CKPT__FAULTPATH static int program_read_only(uintptr_t lo, uintptr_t hi)
{
	/* Read-only anonymous memory that existed at begin (sorted, stable
	 * while tracking). */
	const struct ckpt__rset *rb = &T->ro_begin;
	size_t i0 = CKPT__FIRST_ENDING_AFTER(rb->r, rb->n, hi, lo);
	if (i0 < rb->n && rb->r[i0].lo < hi)
		return 1;
	for (unsigned i = 0; i < CKPT__RO_SLOTS; i++) {
		uintptr_t a = __atomic_load_n(&T->ro[i].lo, __ATOMIC_ACQUIRE);
		uintptr_t b = __atomic_load_n(&T->ro[i].hi, __ATOMIC_ACQUIRE);
		if (a < b && a < hi && lo < b)
			return 1;
	}
	return 0;
}

/* A write fault outside every region: was it a tracked anonymous mapping
 * that mremap moved or grew while it was protected (glibc's realloc does
 * this internally, where no interposer sees it)?  Such memory is private,
 * anonymous, readable and not writable, is not memory the program made
 * read-only itself, and either continues the region it grew out of or
 * appeared while a writable anonymous region, or part of one, of at most its
 * size vanished.
 * Its part outside every region is made writable and counts as new (fully
 * dirty). */
CKPT__FAULTPATH static int adopt_moved(uintptr_t addr)
{
	const struct ckpt__rtab *t = ckpt__rcu_enter();
	int adopted = 0;
	if (!t)
		goto out;
	struct adopt_ctx a = {.t = t, .addr = addr, .min_vanished = UINTPTR_MAX};
	uint64_t mask;
	fault_lock(&mask);
	ckpt__maps_stream(T->fault_buf, sizeof T->fault_buf, adopt_cb, &a);
	fault_unlock(&mask);
	vanished_upto(&a, UINTPTR_MAX);
	if (!a.found || a.v.inode || a.path0 || (a.v.perms & (CKPT__VMA_W | CKPT__VMA_SHARED)) ||
	    !(a.v.perms & CKPT__VMA_R))
		goto out;
	/* Regions inside the mapping (the kernel merges a moved mapping with a
	 * protected neighbour of the same kind) bound the part that is new; one
	 * that ends where that part starts grew into it; one holding addr is
	 * memory the program made read-only itself. */
	uintptr_t gap_lo = a.v.start, gap_hi = a.v.end;
	int grown = 0;
	for (size_t i = CKPT__FIRST_ENDING_AFTER(t->r, t->n, end, a.v.start);
	     i < t->n && t->r[i].start < a.v.end; i++) {
		const struct ckpt__region *r = &t->r[i];
		if (r->start <= addr && addr < r->end)
			goto out;
		if (r->end <= addr && r->end > gap_lo) {
			gap_lo = r->end;
			grown = (r->flags & CKPT__RG_ANON) && (r->prot & PROT_WRITE);
		}
		if (r->start > addr && r->start < gap_hi)
			gap_hi = r->start;
	}
	if (!grown && a.min_vanished > gap_hi - gap_lo)
		goto out;
	if (program_read_only(gap_lo, gap_hi))
		goto out;
	/* Only the new part: regions around it stay tracked page by page. */
	int prot = PROT_READ | PROT_WRITE | ((a.v.perms & CKPT__VMA_X) ? PROT_EXEC : 0);
	if (ckpt__raw_mprotect(gap_lo, gap_hi - gap_lo, prot) != 0)
		goto out;
	count_add(&T->cnt.moved, 1);
	adopted = 1;
out:
	ckpt__rcu_exit();
	return adopted;
}

CKPT__FAULTPATH static int is_write_fault(const void *ucv)
{
#if defined(__x86_64__)
	const ucontext_t *uc = ucv;
	return (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#else
	(void)ucv;
	return 1;
#endif
}

CKPT__FAULTPATH static uint64_t ksigbit(int sig)
{
	return (uint64_t)1 << (sig - 1);
}

/* Hands the signal to the program's handler, or makes the default action
 * happen, as if ckpt had never installed anything. */
CKPT__FAULTPATH static void chain(int sig, siginfo_t *si, void *ucv)
{
	struct sigaction *p = &MP->prog;
	void (*h)(int) = p->sa_handler;
	int user_sent = si->si_code <= 0; /* kill, tgkill, sigqueue */
	if (h == SIG_IGN && user_sent)
		return;
	if (h == SIG_DFL || h == SIG_IGN) {
		/* The faulting instruction runs again under the default action
		 * (a fault cannot be ignored); a sent signal is sent again and
		 * arrives when this handler returns. */
		struct ksigaction dfl = {0};
		ckpt__sys6(SYS_rt_sigaction, sig, (long)&dfl, 0, 8, 0, 0);
		if (user_sent)
			ckpt__sys3(SYS_tgkill, ckpt__sys3(SYS_getpid, 0, 0, 0), ckpt__raw_gettid(),
				   sig);
		return;
	}
	/* The mask the kernel would have set for the program's handler, but
	 * with SIGSEGV open: the handler may write tracked memory. */
	const ucontext_t *uc = ucv;
	uint64_t mask;
	__builtin_memcpy(&mask, &uc->uc_sigmask, sizeof mask);
	uint64_t pm;
	__builtin_memcpy(&pm, &p->sa_mask, sizeof pm);
	mask |= pm;
	if (!(p->sa_flags & SA_NODEFER))
		mask |= ksigbit(sig);
	mask &= ~ksigbit(SIGSEGV);
	ckpt__sys6(SYS_rt_sigprocmask, SIG_SETMASK, (long)&mask, 0, 8, 0, 0);
	if (p->sa_flags & SA_RESETHAND)
		p->sa_handler = SIG_DFL;
	if (p->sa_flags & SA_SIGINFO)
		p->sa_sigaction(sig, si, ucv);
	else
		h(sig);
}

CKPT__FAULTPATH static int page_writable_now(uintptr_t addr)
{
	struct find_ctx f;
	return vma_of(addr, &f) && (f.v.perms & CKPT__VMA_W);
}

CKPT__FAULTPATH static void dispatch(int sig, siginfo_t *si, void *uc)
{
	if (sig == SIGSEGV && si->si_code == SEGV_ACCERR && is_write_fault(uc)) {
		uintptr_t addr = (uintptr_t)si->si_addr;
		const struct ckpt__rtab *t = ckpt__rcu_enter();
		const struct ckpt__region *r = ckpt__rtab_find(t, addr);
		int ours = r && (r->prot & PROT_WRITE);
		ckpt__rcu_exit();
		if (ours) {
			MP->lib(sig, si, uc);
			return;
		}
		if (t && adopt_moved(addr))
			return;
		/* A fault raised before ckpt_end gave the page back but
		 * delivered after: the page is writable now, just retry.  A
		 * fault that keeps coming back is not stale. */
		if (page_writable_now(addr)) {
			if (__atomic_exchange_n(&MP->stale_addr, addr, __ATOMIC_RELAXED) != addr)
				__atomic_store_n(&MP->stale_count, 0, __ATOMIC_RELAXED);
			if (__atomic_add_fetch(&MP->stale_count, 1, __ATOMIC_RELAXED) < 64)
				return;
		}
	}
	chain(sig, si, uc);
}

/* ---- kernel writes in flight ------------------------------------------------
 * Why and what: track-mprotect.h.  The order that makes it sound, in the
 * single total order of sequentially consistent atomics:
 *
 *   a call (ckpt__kw_enter)              protect_around (T->lock held)
 *     publish its range in a slot          kw_closing++
 *     n = kw_closing                       read the slots
 *     wait until kw_closed >= n            mprotect all but the ranges read
 *     open the range, call the kernel      kw_closed++
 *
 * A protect_around that did not see the range read the slot before it was
 * published, so its kw_closing++ came before the call read kw_closing: the
 * call waits for it to end before it opens the range.  Every later one sees
 * the range and leaves it alone.  protect_around calls run one at a time
 * (under T->lock), so kw_closed >= n means all of the first n have ended;
 * and they run with signals blocked, so no handler on their thread can be
 * the caller waiting for them.  A call that finds every slot taken
 * (kw_overflow) counts as every range at once.  A call costs one
 * compare-and-swap on a slot of its own, two loads (the wait, when no
 * protection is under way) and a store. */

CKPT__FAULTPATH static struct mp_state *mp_ready(void)
{
	struct mp_state *m = __atomic_load_n((struct mp_state **)&ckpt__g.mp, __ATOMIC_ACQUIRE);
	return m && __atomic_load_n(&m->installed, __ATOMIC_ACQUIRE) ? m : NULL;
}

/* [lo, hi) as a slot word (page-aligned, lo at least a page), or 0 when it
 * does not fit one. */
CKPT__FAULTPATH static uint64_t kw_pack(uintptr_t lo, uintptr_t hi)
{
	uint64_t first = lo >> ckpt__pageshift, n = (hi - lo) >> ckpt__pageshift;
	if (first >> (64 - KW_LEN_BITS) || n >> KW_LEN_BITS)
		return 0;
	return first << KW_LEN_BITS | n;
}

CKPT__FAULTPATH static void kw_unpack(uint64_t w, uintptr_t *lo, uintptr_t *hi)
{
	*lo = (uintptr_t)(w >> KW_LEN_BITS) << ckpt__pageshift;
	*hi = *lo + ((uintptr_t)(w & (((uint64_t)1 << KW_LEN_BITS) - 1)) << ckpt__pageshift);
}

CKPT__FAULTPATH void ckpt__kw_enter(struct ckpt__kw_call *k, uintptr_t lo, uintptr_t hi)
{
	struct mp_state *m = mp_ready();
	uintptr_t mask = ckpt__pagesize - 1;
	if (!m || lo >= hi)
		return;
	lo &= ~mask;
	hi = hi > UINTPTR_MAX - mask ? UINTPTR_MAX & ~mask : (hi + mask) & ~mask;
	if (lo < ckpt__pagesize)
		lo = ckpt__pagesize; /* page 0 is never memory, and 0 is a free slot */
	if (lo >= hi)
		return;
	int published = 0;
	if (k->n == CKPT__KW_RANGES) {
		/* A call with many ranges (recvmmsg): the slot it holds whose
		 * range is nearest grows to cover this one too.  A new word is
		 * published like a first one, and the wait below follows. */
		int best = 0;
		uintptr_t best_gap = UINTPTR_MAX, a, b;
		for (int i = 0; i < k->n; i++) {
			kw_unpack(m->kw[k->slot[i]], &a, &b);
			uintptr_t gap = hi < a ? a - hi : lo > b ? lo - b : 0;
			if (gap < best_gap) {
				best_gap = gap;
				best = i;
			}
		}
		kw_unpack(m->kw[k->slot[best]], &a, &b);
		uint64_t w = kw_pack(lo < a ? lo : a, hi > b ? hi : b);
		if (w) {
			__atomic_store_n(&m->kw[k->slot[best]], w, __ATOMIC_SEQ_CST);
			published = 1;
		}
	} else {
		uint64_t w = kw_pack(lo, hi);
		/* Threads start at different slots (their stacks differ), and
		 * a thread finds the slot it used last free again. */
		uint64_t sp_page = (uintptr_t)__builtin_frame_address(0) >> 12;
		unsigned from = (unsigned)((sp_page * 0x9e3779b97f4a7c15ull) >> 54);
		for (unsigned i = 0; w && i < KW_SLOTS && !published; i++) {
			unsigned j = (from + i) % KW_SLOTS;
			uint64_t free_w = 0;
			if (__atomic_load_n(&m->kw[j], __ATOMIC_RELAXED) == 0 &&
			    __atomic_compare_exchange_n(&m->kw[j], &free_w, w, 0, __ATOMIC_SEQ_CST,
							__ATOMIC_RELAXED)) {
				k->slot[k->n++] = (int)j;
				published = 1;
			}
		}
	}
	if (!published && !k->overflow) {
		/* Every slot taken, or a range too wide for one: this call
		 * counts as all memory. */
		k->overflow = 1;
		__atomic_fetch_add(&m->kw_overflow, 1, __ATOMIC_SEQ_CST);
	}
	unsigned long n = __atomic_load_n(&m->kw_closing, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&m->kw_closed, __ATOMIC_SEQ_CST) < n)
		ckpt__raw_sched_yield();
}

CKPT__FAULTPATH void ckpt__kw_leave(struct ckpt__kw_call *k)
{
	struct mp_state *m = __atomic_load_n((struct mp_state **)&ckpt__g.mp, __ATOMIC_ACQUIRE);
	if (!m)
		return;
	for (int i = 0; i < k->n; i++)
		__atomic_store_n(&m->kw[k->slot[i]], 0, __ATOMIC_RELEASE);
	if (k->overflow)
		__atomic_fetch_sub(&m->kw_overflow, 1, __ATOMIC_RELEASE);
	k->n = k->overflow = 0;
}

struct kw_piece {
	uintptr_t lo, hi;
};

/* The registered ranges overlapping [lo, hi), widened to whole pages of
 * `mask`+1 bytes, clipped, sorted and merged into out (at most max).
 * Returns their count, or -1 when [lo, hi) must count as in flight whole
 * (a call without a slot, or more pieces than max). */
static int kw_in_flight(struct mp_state *m, uintptr_t lo, uintptr_t hi, uintptr_t mask,
			struct kw_piece *out, int max)
{
	if (__atomic_load_n(&m->kw_overflow, __ATOMIC_SEQ_CST) > 0)
		return -1;
	int n = 0;
	for (unsigned i = 0; i < KW_SLOTS; i++) {
		uint64_t w = __atomic_load_n(&m->kw[i], __ATOMIC_SEQ_CST);
		if (!w)
			continue;
		uintptr_t a, b;
		kw_unpack(w, &a, &b);
		a &= ~mask;
		b = b > UINTPTR_MAX - mask ? UINTPTR_MAX & ~mask : (b + mask) & ~mask;
		if (a < lo)
			a = lo;
		if (b > hi)
			b = hi;
		if (a >= b)
			continue;
		if (n == max)
			return -1;
		int j = n++;
		for (; j > 0 && out[j - 1].lo > a; j--)
			out[j] = out[j - 1];
		out[j] = (struct kw_piece){a, b};
	}
	int m2 = 0;
	for (int i = 0; i < n; i++) {
		if (m2 && out[i].lo <= out[m2 - 1].hi) {
			if (out[i].hi > out[m2 - 1].hi)
				out[m2 - 1].hi = out[i].hi;
		} else {
			out[m2++] = out[i];
		}
	}
	return m2;
}

/* Synchronous signals stay deliverable: blocking them would turn a genuine
 * fault into death without a handler. */
#define SYNC_SIGNALS                                                               \
	(ksigbit(SIGSEGV) | ksigbit(SIGBUS) | ksigbit(SIGILL) | ksigbit(SIGFPE) |   \
	 ksigbit(SIGTRAP))

/* Gives [lo, hi) of region r the protection `clean`, except the pages a
 * system call in flight lets the kernel write: those get `open` and are
 * marked dirty, when `open` lets them be written (else they get `clean`
 * like the rest).  Every protection this back-end sets on the program's
 * pages after ckpt_begin goes through here (arm, close, protect).  T->lock
 * held.  0 or -errno of the first mprotect that failed. */
static long protect_around(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi, int clean,
			   int open)
{
	struct mp_state *m = mp_ready();
	if (!m)
		return ckpt__raw_mprotect(lo, hi - lo, clean);
	uint64_t block = ~SYNC_SIGNALS, old;
	int masked = ckpt__sys6(SYS_rt_sigprocmask, SIG_BLOCK, (long)&block, (long)&old, 8, 0, 0) == 0;
	__atomic_fetch_add(&m->kw_closing, 1, __ATOMIC_SEQ_CST);
	struct kw_piece fl[32];
	int n = kw_in_flight(m, lo, hi, ((uintptr_t)1 << r->pgshift) - 1, fl, 32);
	if (n < 0) {
		fl[0] = (struct kw_piece){lo, hi};
		n = 1;
	}
	long rc = 0, e;
	uintptr_t at = lo;
	for (int i = 0; i < n; i++) {
		if (at < fl[i].lo && (e = ckpt__raw_mprotect(at, fl[i].lo - at, clean)) && !rc)
			rc = e;
		if (open & PROT_WRITE) {
			/* Open, then mark, as a fault would. */
			ckpt__raw_mprotect(fl[i].lo, fl[i].hi - fl[i].lo, open);
			ckpt__bm_set(fl[i].lo, fl[i].hi);
		} else if ((e = ckpt__raw_mprotect(fl[i].lo, fl[i].hi - fl[i].lo, clean)) && !rc) {
			rc = e;
		}
		at = fl[i].hi;
	}
	if (at < hi && (e = ckpt__raw_mprotect(at, hi - at, clean)) && !rc)
		rc = e;
	__atomic_fetch_add(&m->kw_closed, 1, __ATOMIC_SEQ_CST);
	if (masked)
		ckpt__sys6(SYS_rt_sigprocmask, SIG_SETMASK, (long)&old, 0, 8, 0, 0);
	return rc;
}

/* fork: the child has only the forking thread, which is in no call; the
 * calls of the others never return there.  (No protect_around is under way:
 * the tracker's lock is held across the fork.) */
static void kw_atfork_child(void)
{
	struct mp_state *m = MP;
	for (unsigned i = 0; i < KW_SLOTS; i++)
		m->kw[i] = 0;
	m->kw_overflow = 0;
}

/* ---- set-up ------------------------------------------------------------------ */

static int mp_probe(char *why, size_t whylen)
{
#if HAVE_SIGSEGV_RECOVERY
	(void)why;
	(void)whylen;
	return 0;
#else
	snprintf(why, whylen, "libsigsegv cannot catch SIGSEGV on this system");
	return CKPT_ENOTSUP;
#endif
}

/* Writes to an own page once with the whole fault path in place: proves
 * that it works here and binds every symbol it uses. */
static int selftest(void)
{
	size_t ps = ckpt__pagesize;
	char *page = ckpt__mem_alloc(ps);
	struct ckpt__rtab *t = ckpt__rtab_new(1);
	if (!page || !t || ckpt__bm_init() || ckpt__bm_ensure((uintptr_t)page, (uintptr_t)page + ps)) {
		ckpt__mem_free(page, ps);
		if (t)
			ckpt__mem_free(t, t->bytes);
		return ckpt__fail(CKPT_ENOMEM, "ckpt_begin: out of memory for the fault self-test");
	}
	t->r[0] = (struct ckpt__region){(uintptr_t)page, (uintptr_t)page + ps,
					 PROT_READ | PROT_WRITE, CKPT__RG_ANON, ckpt__pageshift, ""};
	t->n = 1;
	ckpt__bm_clear((uintptr_t)page, (uintptr_t)page + ps);
	ckpt__track_publish(t, 0);
	int rc = 0;
	uint64_t before = T->cnt.faults;
	if (ckpt__raw_mprotect((uintptr_t)page, ps, PROT_READ) != 0) {
		rc = ckpt__fail(CKPT_ENOMEM, "ckpt_begin: mprotect failed in the fault self-test");
	} else {
		*(volatile char *)page = 1;
		if (!ckpt__bm_test((uintptr_t)page) || T->cnt.faults != before + 1)
			rc = ckpt__fail(CKPT_ENOTSUP,
					"ckpt_begin: the SIGSEGV handler did not see a test write");
	}
	ckpt__bm_clear((uintptr_t)page, (uintptr_t)page + ps);
	T->cnt.faults = before;
	ckpt__track_publish(NULL, 1);
	ckpt__mem_free(page, ps);
	return rc;
}

static int mp_install_once(void);

/* A handler whose mask blocks SIGSEGV dies at its first write to a tracked
 * page (a fault while SIGSEGV is blocked is fatal), and so does a thread
 * that blocked it.  Blocking a synchronous signal never meant anything, so
 * ckpt takes SIGSEGV out of every mask: here for what exists, and in the
 * interposers (interpose-mem.c) for what comes later. */
static void signals_prepare(void)
{
	int (*sa)(int, const struct sigaction *, struct sigaction *) = get_sigaction();
	for (int sig = 1; sig < NSIG; sig++) {
		struct sigaction cur;
		if (sig == SIGKILL || sig == SIGSTOP || sig == SIGSEGV || sa(sig, NULL, &cur) != 0)
			continue;
		if (cur.sa_handler == SIG_DFL || cur.sa_handler == SIG_IGN ||
		    !sigismember(&cur.sa_mask, SIGSEGV))
			continue;
		sigdelset(&cur.sa_mask, SIGSEGV);
		sa(sig, &cur, NULL);
	}
	uint64_t open = ksigbit(SIGSEGV);
	ckpt__sys6(SYS_rt_sigprocmask, SIG_UNBLOCK, (long)&open, 0, 8, 0, 0);
}

static int mp_install(void)
{
	int rc = mp_install_once();
	if (rc == 0)
		signals_prepare();
	return rc;
}

static int mp_install_once(void)
{
	if (MP && __atomic_load_n(&MP->installed, __ATOMIC_ACQUIRE))
		return 0;
	if (!MP) {
		struct mp_state *m = ckpt__mem_alloc(sizeof *MP);
		if (!m)
			return ckpt__fail(CKPT_ENOMEM, "ckpt_begin: out of memory");
		__atomic_store_n((struct mp_state **)&ckpt__g.mp, m, __ATOMIC_RELEASE);
		pthread_atfork(NULL, NULL, kw_atfork_child);
	}
	struct sigaction prog_bus, lib, mine;
	int (*sa)(int, const struct sigaction *, struct sigaction *) = get_sigaction();
	if (!sa || sa(SIGSEGV, NULL, &MP->prog) || sa(SIGBUS, NULL, &prog_bus))
		return ckpt__fail(CKPT_ENOTSUP, "ckpt_begin: cannot read the SIGSEGV action");
	MP->installing = 1;
	int rc = sigsegv_install_handler(on_fault);
	MP->installing = 0;
	if (rc != 0)
		return ckpt__fail(CKPT_ENOTSUP, "ckpt_begin: libsigsegv cannot install its handler");
	sa(SIGSEGV, NULL, &lib);
	if (!(lib.sa_flags & SA_SIGINFO) || !lib.sa_sigaction)
		return ckpt__fail(CKPT_ENOTSUP, "ckpt_begin: unexpected libsigsegv handler");
	MP->lib = lib.sa_sigaction;
	/* libsigsegv catches SIGBUS on some systems: SIGBUS is the program's. */
	sa(SIGBUS, &prog_bus, NULL);
	memset(&mine, 0, sizeof mine);
	mine.sa_sigaction = dispatch;
	/* Every signal blocked: no other handler may run (and write a
	 * protected page) while SIGSEGV is blocked.  SA_ONSTACK: a fault on a
	 * stack ckpt did not know about can still be handled on an alternate
	 * stack. */
	sigfillset(&mine.sa_mask);
	mine.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
	if (sa(SIGSEGV, &mine, NULL) != 0)
		return ckpt__fail(CKPT_ENOTSUP, "ckpt_begin: cannot install the SIGSEGV handler");
	__atomic_store_n(&MP->installed, 1, __ATOMIC_RELEASE);
	return selftest();
}

/* Runs inside a sanitizer's start-up too: never instrumented. */
CKPT__FAULTPATH int ckpt__mp_sigaction_hook(int sig, const struct sigaction *act,
					    struct sigaction *old)
{
	if (sig != SIGSEGV || !MP || MP->installing ||
	    !__atomic_load_n(&MP->installed, __ATOMIC_ACQUIRE))
		return 0;
	struct sigaction prev = MP->prog;
	if (act) {
		MP->prog = *act;
		/* sigdelset, without a call a sanitizer intercepts. */
		((unsigned long *)&MP->prog.sa_mask)[0] &= ~(1ul << (SIGSEGV - 1));
	}
	if (old)
		*old = prev;
	return 1;
}

static int mp_arm(const struct ckpt__region *r)
{
	long rc = protect_around(r, r->start, r->end, ckpt__prot_clean(r->prot), r->prot);
	return rc ? ckpt__from_errno((int)-rc) : 0;
}

static int mp_disarm(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi)
{
	long rc = ckpt__raw_mprotect(lo, hi - lo, r->prot);
	return rc ? ckpt__from_errno((int)-rc) : 0;
}

CKPT__FAULTPATH static void mp_touch(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi)
{
	unprotect(r, lo, hi);
}

static int mp_protect(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi, int prot)
{
	return (int)protect_around(r, lo, hi, ckpt__prot_clean(prot), prot);
}

static int mp_close(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi)
{
	long rc = protect_around(r, lo, hi, ckpt__prot_clean(r->prot), r->prot);
	return rc ? ckpt__from_errno((int)-rc) : 0;
}

static int mp_open(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi)
{
	(void)r;
	long rc = ckpt__raw_mprotect(lo, hi - lo, PROT_READ | PROT_WRITE);
	return rc ? ckpt__from_errno((int)-rc) : 0;
}

const struct ckpt__backend ckpt__backend_mprotect = {
	.id = CKPT_BACKEND_MPROTECT,
	.name = "mprotect",
	.probe = mp_probe,
	.install = mp_install,
	.arm = mp_arm,
	.disarm = mp_disarm,
	.touch = mp_touch,
	.protect = mp_protect,
	.close = mp_close,
	.open = mp_open,
	.writable_means_dirty = 1,
	.close_gap_pages = 1024,
	.module = (const void *)&sigsegv_install_handler,
};
