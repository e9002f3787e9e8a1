/*
 * track.h - the tracker: what is protected, the dirty set, and the
 * interface its back-ends implement.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_TRACK_H
#define CKPT_TRACK_H

#include "ckpt.h"
#include "maps.h"
#include "rangeset.h"
#include "state.h"

#include <pthread.h>

/* A tracked region: part of one mapping as it was at ckpt_begin, minus
 * excluded and pinned pages.  Protection changes by ckpt split mappings
 * (VMAs) but never regions; the program's own mprotect/munmap do. */
struct ckpt__region {
	uintptr_t start, end;
	int prot;         /* protection the program wants (PROT_*) */
	unsigned flags;   /* CKPT__RG_* */
	unsigned pgshift; /* log2 of the mapping's page size */
	const char *name; /* interned mapping name */
};

#define CKPT__RG_SHARED 0x1u
#define CKPT__RG_ANON 0x2u

/* An immutable, sorted table of regions.  Readers (the fault handler,
 * interposers) load the current one under ckpt__rcu_enter; writers replace
 * it whole under the tracker lock. */
struct ckpt__rtab {
	size_t n;
	size_t bytes;
	struct ckpt__rtab *retired_next;
	struct ckpt__region r[];
};

/* The operations a tracking back-end provides. */
struct ckpt__backend {
	int id;           /* CKPT_BACKEND_* */
	const char *name;
	/* Whether it can work here; fills `why` when not.  0 or CKPT_E*. */
	int (*probe)(char *why, size_t whylen);
	/* Process-wide setup done once (fault handler).  0 or CKPT_E*. */
	int (*install)(void);
	/* Protect a region (the table holding it is published). */
	int (*arm)(const struct ckpt__region *r);
	/* Give [lo, hi) of region r its protection back. */
	int (*disarm)(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi);
	/* Make [lo, hi) of region r writable and mark it dirty, ahead of a
	 * kernel write.  Fault-safe.  NULL if the kernel's writes need no help. */
	void (*touch)(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi);
	/* Apply the program's `prot` to [lo, hi) of region r, keeping clean
	 * pages tracked.  0 or -errno. */
	int (*protect)(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi, int prot);
	/* Makes [lo, hi) of region r clean again: its next write is seen.
	 * 0 or CKPT_E*. */
	int (*close)(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi);
	/* Makes [lo, hi) of region r writable for ckpt's own copies (a
	 * restore); NULL when ckpt's writes need no help. */
	int (*open)(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi);
	/* Brings the kernel's record of the pages of [lo, hi) of region r
	 * written since they were closed into the dirty bitmap; `rearm`:
	 * closes them again in the same step.  NULL when faults mark the
	 * bitmap themselves.  T->lock held.  0 or CKPT_E*. */
	int (*sync)(const struct ckpt__region *r, uintptr_t lo, uintptr_t hi, int rearm);
	/* Protection is per mapping: a writable mapping over a tracked page
	 * means it was written (or changed behind ckpt's back). */
	int writable_means_dirty;
	/* Ranges of one region this close (in pages) are closed in one call,
	 * with the clean pages between them (see struct ckpt__closer). */
	unsigned close_gap_pages;
	/* An address inside the library the back-end depends on, whose data
	 * is excluded like ckpt's own (or NULL). */
	const void *module;
};

CKPT__HIDDEN extern const struct ckpt__backend ckpt__backend_mprotect;
CKPT__HIDDEN extern const struct ckpt__backend ckpt__backend_uffd;
CKPT__HIDDEN extern const struct ckpt__backend ckpt__backend_softdirty;

/* Handler-visible counters (ckpt's own memory). */
struct ckpt__counters {
	uint64_t faults, fallbacks, fallback_pages, kernel_writes, moved;
	uint64_t fast_restores; /* resets from the log of faults (restore.c) */
};

struct ckpt__tracker {
	pthread_mutex_t lock;
	struct ckpt__rtab *tab;      /* published table, atomic; NULL when not tracking */
	long readers;                /* readers inside ckpt__rcu_enter/exit, atomic */
	struct ckpt__rtab *retired;  /* replaced tables waiting for readers to drain */
	const struct ckpt__backend *be;
	int armed;                   /* tracking, atomic */
	int touch;                   /* interposers must unprotect ahead of kernel writes */
	unsigned flags;              /* CKPT_F_* of the tracking handle */
	struct ckpt__rset user_excl; /* the tracking handle's ckpt_exclude ranges */
	struct ckpt__rset pinned;    /* never protected, always dirty */
	struct ckpt__rset nosave;    /* pinned but not the program's to save (stacks of
	                              * threads ckpt did not see start) */
	struct ckpt__rset since;     /* tracked without a break since the last capture */
	/* uffd: the private anonymous regions armed since the last capture
	 * (span) and which of their pages held data then (see
	 * ckpt__track_note_armed). */
	struct ckpt__rset armed_span, armed_data;
	/* Named regions: the pages tracked, none other adopted (empty: all
	 * writable memory). */
	struct ckpt__rset only;
	struct ckpt__bmap present;   /* anonymous pages present at the last capture */
	struct ckpt__bmap present_next; /* the same for the capture in progress */
	struct ckpt__rset newdirty;  /* untracked ranges known written (made read-only since) */
	/* A restore to an older snapshot left marked pages protected: until
	 * the next capture, marked does not imply writable. */
	int marked_closed;
	/* Moves at every change of the regions and at every change the program
	 * makes through libc to its mappings or to their contents without a
	 * write (munmap, mremap, madvise, mprotect...): a reset that learns the
	 * written pages from the log of faults (faultlog.c) needs none since
	 * the log was armed.  Atomic. */
	unsigned long layout_gen;
	struct ckpt__maps maps;      /* scratch */
	struct ckpt__counters cnt;
	/* Mappings (VMAs) in the process, as estimated from the splits and
	 * merges ckpt causes, and how many ckpt lets itself reach: the rest of
	 * vm.max_map_count is left for the program's (and ckpt's own) mmaps. */
	long vma_est, vma_budget;
	/* Anonymous memory the program mapped or made read-only itself while
	 * tracking: never mistaken for a mapping mremap moved (a ring of the
	 * latest; the fault path reads it without locks). */
#define CKPT__RO_SLOTS 256
	struct {
		uintptr_t lo, hi;
	} ro[CKPT__RO_SLOTS];
	unsigned ro_next;
	/* The same, for what was read-only and anonymous at begin (sorted). */
	struct ckpt__rset ro_begin;
	unsigned coarse_min;   /* smallest block (index) used over budget */
	unsigned long coarse_opens, resync_every;
	/* The fault path's view of /proc/self/maps. */
	ckpt__spin fault_lock;
	char fault_buf[16384];
	/* Interned mapping names. */
	char *names;
	size_t names_len, names_cap;
};

#define ckpt__T (ckpt__g.tracker)

/* ---- capture: what a commit stores -------------------------------------------- */

/* A piece of the table being committed. */
struct ckpt__piece {
	uintptr_t start, end;
	int prot;
	unsigned flags;   /* CKPT__RG_* */
	unsigned pgshift;
	int kind;         /* 1 tracked, 2 pinned, 3 the main thread's TLS block */
	uintptr_t keep_lo, keep_hi; /* TLS: bytes a restore must leave alone */
	int fresh;        /* not tracked without a break since the last capture */
	int heap;
	uint64_t offset, inode;
	unsigned dev_major, dev_minor;
	const char *name;
};

struct ckpt__capture {
	struct ckpt__piece *p;
	size_t n, cap;
	struct ckpt__rset changed; /* pages of non-fresh pieces written or discarded since */
	struct ckpt__rset data;    /* pages that hold data (present, swapped, or shared) */
	struct ckpt__rset taken;   /* dirty bits taken: given back if the commit fails */
	struct ckpt__rset unreadable; /* pieces the program made unreadable (PROT_NONE) */
	unsigned nthreads;
	uint64_t ns;
};

/* Takes the dirty set and re-protects it, adopts (protects) memory that
 * appeared since, and describes everything a snapshot must hold.  Other
 * threads must not write meanwhile (their writes are not lost: they fault
 * and count for the next capture).  0 or CKPT_E*. */
CKPT__HIDDEN int ckpt__track_capture(struct ckpt__capture *cap);
/* Under a back-end that keeps its own record (uffd), notes which pages of
 * the private anonymous regions of t, just armed, hold data: their first
 * capture then stores those and the ones written since, with no walk over
 * their page tables.  T->lock held. */
CKPT__HIDDEN void ckpt__track_note_armed(const struct ckpt__rtab *t);
/* The snapshot was written: the next capture is relative to this one. */
CKPT__HIDDEN void ckpt__track_capture_done(struct ckpt__capture *cap);
/* It was not: the pages taken count as dirty again. */
CKPT__HIDDEN void ckpt__track_capture_undo(struct ckpt__capture *cap);
/* After ckpt__track_capture_done, the snapshot was not written after all
 * (an async commit failed in the background): what was taken counts as
 * dirty again, and memory first seen by that capture counts as new again,
 * so the next commit stores all of it. */
CKPT__HIDDEN void ckpt__track_capture_revert(struct ckpt__capture *cap);
CKPT__HIDDEN void ckpt__capture_free(struct ckpt__capture *cap);
/* After a resume wrote every tracked page back to the newest snapshot: the
 * regions count as tracked since its capture, with the pages present now,
 * so that the next commit is an increment.  0 or CKPT_E* (then the next
 * commit stores everything again). */
CKPT__HIDDEN int ckpt__track_adopt(void);

/* A list of dirty runs with their own copy of the mapping names. */
struct ckpt__runs {
	ckpt_page_run *r;
	size_t n, cap;
	char *text;
	size_t text_len, text_cap;
	size_t pages;
};
CKPT__HIDDEN void ckpt__runs_free(struct ckpt__runs *runs);

/* What ckpt_begin measured. */
struct ckpt__begin_info {
	size_t regions, tracked_pages, pinned_pages, excluded_pages;
	unsigned unknown_threads;
};

CKPT__HIDDEN int ckpt__track_init(void);
/* Chooses the back-end for CKPT_BACKEND_* `want`; fills why on failure. */
CKPT__HIDDEN int ckpt__track_select(int want, const struct ckpt__backend **out, char *why,
				    size_t whylen);
/* only: NULL, or the page-aligned ranges to track and nothing else (named
 * regions): memory that appears later is not adopted, nothing is pinned,
 * and every page of `only` must be trackable (else CKPT_EINVAL, the
 * message naming the first address that is not). */
CKPT__HIDDEN int ckpt__track_begin(const struct ckpt__backend *be, unsigned flags,
				   const struct ckpt__rset *user_excl, const struct ckpt__rset *only,
				   struct ckpt__begin_info *info);
/* The current dirty set (tracking only). */
CKPT__HIDDEN int ckpt__track_collect(struct ckpt__runs *out);
/* Stops tracking; the final dirty set goes to `final`. */
CKPT__HIDDEN int ckpt__track_end(struct ckpt__runs *final);
/* Excludes [lo, hi) at once (tracking only). */
CKPT__HIDDEN int ckpt__track_exclude(uintptr_t lo, uintptr_t hi);
CKPT__HIDDEN void ckpt__track_counters(struct ckpt__counters *out);

/* For the interposers; all are cheap no-ops when not tracking. */
static inline int ckpt__track_armed(void)
{
	return ckpt__T && __atomic_load_n(&ckpt__T->armed, __ATOMIC_ACQUIRE);
}
/* [p, p+n) is about to be written by the kernel. */
CKPT__HIDDEN void ckpt__track_touch_slow(uintptr_t p, size_t n);
static inline void ckpt__track_touch(const void *p, size_t n)
{
	if (CKPT__UNLIKELY(ckpt__T && __atomic_load_n(&ckpt__T->touch, __ATOMIC_ACQUIRE)) && p &&
	    n)
		ckpt__track_touch_slow((uintptr_t)p, n);
}
/* The program's mprotect: applies it, keeping tracked pages tracked and
 * what was written there recorded (the back-end's sync, first); waits
 * until no fault handler can still use the regions as they were.
 * Returns 0 or -errno. */
CKPT__HIDDEN int ckpt__track_mprotect(uintptr_t lo, uintptr_t hi, int prot,
				      int (*real)(void *, size_t, int));
/* The program mapped (or made) [lo, hi) read-only anonymous memory. */
CKPT__HIDDEN void ckpt__track_read_only(uintptr_t lo, uintptr_t hi);
/* [lo, hi) was unmapped, or replaced by a new mapping. */
CKPT__HIDDEN void ckpt__track_unmapped(uintptr_t lo, uintptr_t hi);
/* The contents of [lo, hi) are about to be discarded (MADV_DONTNEED...). */
CKPT__HIDDEN void ckpt__track_discard(uintptr_t lo, uintptr_t hi);
/* [lo, hi) must stay writable from now on (an alternate signal stack). */
CKPT__HIDDEN void ckpt__track_pin(uintptr_t lo, uintptr_t hi);
/* [lo, hi) is about to become a thread's stack: untracked from now on. */
CKPT__HIDDEN void ckpt__track_stack(uintptr_t lo, uintptr_t hi);

/* Sets T->vma_est and T->vma_budget from the kernel's limit and the current
 * number of mappings. */
CKPT__HIDDEN void ckpt__track_vma_sync(size_t nvmas);
/* Sets T->vma_est to `n`, a bound on the mappings now (after a commit or
 * a restore re-protected what the faults had opened: they merge back, which
 * the fault path's estimate cannot see), and lets unprotect go back to page
 * granularity when that leaves room. */
CKPT__HIDDEN void ckpt__track_vma_recount(long n);

/* Read side of the table: a counter of readers, so that a replaced table is
 * freed only once none can still use it.  Fault-safe. */
static inline struct ckpt__rtab *ckpt__rcu_enter(void)
{
	__atomic_fetch_add(&ckpt__T->readers, 1, __ATOMIC_SEQ_CST);
	return __atomic_load_n(&ckpt__T->tab, __ATOMIC_SEQ_CST);
}
static inline void ckpt__rcu_exit(void)
{
	__atomic_fetch_sub(&ckpt__T->readers, 1, __ATOMIC_RELEASE);
}
/* The region holding addr, or NULL.  Fault-safe. */
CKPT__HIDDEN const struct ckpt__region *ckpt__rtab_find(const struct ckpt__rtab *t,
							uintptr_t addr);

/* The protection a tracked page has while it is clean. */
CKPT__HIDDEN int ckpt__prot_clean(int prot);

/* Protecting ranges of one region again, in address order.  An mprotect
 * call costs a fixed few microseconds (a mapping split and merged back, a
 * TLB shootdown) plus a few nanoseconds per page table entry it walks, so
 * ranges closer than the back-end's close_gap_pages are closed in one call,
 * together with the clean (protected already) pages between them.  (Not
 * for uffd: UFFDIO_WRITEPROTECT rewrites every entry it walks.)  Never for
 * opening: a clean page made writable would lose its next write. */
struct ckpt__closer {
	const struct ckpt__region *r;
	uintptr_t lo, hi;
};
/* Adds [lo, hi) of region r (ranges in address order, one region after
 * the other) and closes through the back-end. */
CKPT__HIDDEN void ckpt__closer_add(struct ckpt__closer *c, const struct ckpt__region *r,
				   uintptr_t lo, uintptr_t hi);
CKPT__HIDDEN void ckpt__closer_flush(struct ckpt__closer *c);

/* Brings the back-end's record of written pages into the dirty bitmap
 * (see struct ckpt__backend's sync); T->lock held.  0 or CKPT_E*. */
CKPT__HIDDEN int ckpt__track_sync_locked(int rearm);

/* [lo, hi) was unmapped (T->lock held). */
CKPT__HIDDEN void ckpt__track_unmapped_locked(uintptr_t lo, uintptr_t hi);
/* After a restore (T->lock held): the pages of `written` now hold a
 * snapshot's content, `created` are mappings made for it, `opened` (which
 * covers `written`) was made writable for the copy.  `clean`: that content
 * is the newest snapshot's, so the pages are clean; else they are dirty.
 * Either way `opened` is protected whole again: a written page that is
 * dirty faults once more at its next write, which costs less than the
 * mappings that leaving scattered pages writable would (and sets
 * T->marked_closed until the next capture or clean restore). */
CKPT__HIDDEN void ckpt__track_restored_locked(const struct ckpt__rset *written,
					      const struct ckpt__rset *opened,
					      const struct ckpt__rset *created, int clean);

/* uffd: registers and protects the memory of [lo, hi) that lost its
 * registration (a mapping made in place of a tracked one: glibc's munmap
 * and mmap, a restore recreating it), without counting it written: for a
 * restore that just wrote it back to the newest snapshot, before the
 * kernel's log of faults starts (restore.c).  T->lock held.  0 or CKPT_E*. */
CKPT__HIDDEN int ckpt__uffd_reregister(uintptr_t lo, uintptr_t hi);

/* Helpers shared with the commit and restore code (T->lock held). */
CKPT__HIDDEN int ckpt__track_excluded(const struct ckpt__maps *m, unsigned flags,
				      struct ckpt__rset *excl, struct ckpt__rset *pinned_out);
CKPT__HIDDEN const char *ckpt__track_intern(const char *s);
CKPT__HIDDEN unsigned ckpt__track_hugetlb_shift(const struct ckpt__vma *v);
CKPT__HIDDEN int ckpt__vma_prot(unsigned perms);
CKPT__HIDDEN int ckpt__track_disarm(const struct ckpt__maps *m, const struct ckpt__region *r);
CKPT__HIDDEN size_t ckpt__rtab_lower(const struct ckpt__rtab *t, uintptr_t addr);

/* Publishes a table (NULL to stop) and frees replaced ones when it can;
 * T->lock held.  For back-ends' self-tests. */
CKPT__HIDDEN void ckpt__track_publish(struct ckpt__rtab *t, int wait);
CKPT__HIDDEN struct ckpt__rtab *ckpt__rtab_new(size_t n);

#endif /* CKPT_TRACK_H */
