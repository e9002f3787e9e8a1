/*
 * lazy.h - a resume that lets the program go on before its memory is back
 * (CKPT_F_LAZY): pages filled on first touch and by threads of ckpt's own
 * in address order, through userfaultfd.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_LAZY_H
#define CKPT_LAZY_H

#include "rangeset.h"
#include "snap-read.h"

/* Non-zero while a lazy fill runs (atomic). */
extern CKPT__HIDDEN int ckpt__lazy_on;

/* Fills `fresh` (ranges a resume mapped for snapshot `id` of chain c,
 * holding what new mappings hold) as of that snapshot: its anonymous
 * private memory lazily (registered with a userfaultfd: a page is filled
 * when first touched, or by the background fill, which goes on after this
 * returns), the rest now, as ckpt__fill_run does.  Where no userfaultfd
 * that also takes the kernel's own accesses can be had, or CKPT_FAULT has
 * uffd:N fail, everything is filled now and stderr says why.  Tracking
 * must be on.  *blocks: blocks read now.  0, or CKPT_E* with nothing left
 * running.  Calls on the resuming thread only. */
CKPT__HIDDEN int ckpt__lazy_start(struct ckpt__chain *c, uint64_t id,
				  const struct ckpt__rset *fresh, unsigned threads,
				  uint64_t *blocks);
/* The resume succeeded and hands its chain reader over: the lazy fill
 * keeps c's snapshots open until it ends, and c is left empty (closing it
 * is a no-op).  Nothing when no lazy fill runs. */
CKPT__HIDDEN void ckpt__lazy_adopt_chain(struct ckpt__chain *c);
/* The resume failed after ckpt__lazy_start: the fill stops, its threads
 * end and the registrations go (the caller unmaps the memory). */
CKPT__HIDDEN void ckpt__lazy_cancel(void);
/* Waits for the fill to end, then releases what it held (the chain's
 * files); afterwards the tracker holds the filled pages as clean (equal
 * to the newest snapshot).
 * Called first by every call that reads or replaces the program's memory
 * (commit, restore) or stops tracking, and before fork.  Thread-safe;
 * nothing when no lazy fill runs. */
CKPT__HIDDEN void ckpt__lazy_finish(void);
/* Tracking ends (ckpt_end, ckpt_close): waits for the fill, then ends
 * what is left of it (under the uffd back-end, the thread that answers
 * later faults on the memory it registered).  Nothing when no lazy fill
 * ran. */
CKPT__HIDDEN void ckpt__lazy_stop(void);
/* The pages of [lo, hi) filled now, on the calling thread, if a lazy
 * fill has not filled them yet: ahead of a system call that reads or
 * writes them, a discard (MADV_DONTNEED) or a move (mremap). */
CKPT__HIDDEN void ckpt__lazy_fill_slow(uintptr_t lo, uintptr_t hi);

/* Other threads of the program stopped (or quiescent): waits for the fill,
 * and under the uffd back-end gives the registration back as the tracker
 * had it (write-protection alone: what was written since recorded in the
 * dirty bitmap first) and ends the thread that answered faults.  Before
 * a commit's capture and a restore. */
CKPT__HIDDEN void ckpt__lazy_handover(void);
/* In track-uffd.c: [lo, hi) registered for write-protection alone again
 * and protected whole, the pages written since their last close marked in
 * the dirty bitmap first.  Other threads must not write meanwhile.  0 or
 * CKPT_E* (then the range counts as written). */
CKPT__HIDDEN int ckpt__uffd_lazy_unmiss(uintptr_t lo, uintptr_t hi);
/* In track-uffd.c: the uffd back-end's userfaultfd, which a lazy fill
 * registers for missing pages too (a mapping takes one userfaultfd only),
 * or -1 when that back-end does not track; *kernel: whether it takes the
 * faults of the kernel's own accesses (made without UFFD_USER_MODE_ONLY). */
CKPT__HIDDEN int ckpt__uffd_lazy_fd(int *kernel);

static inline void ckpt__lazy_fill(const void *p, size_t n)
{
	if (CKPT__UNLIKELY(__atomic_load_n(&ckpt__lazy_on, __ATOMIC_ACQUIRE)) && p && n) {
		uintptr_t lo = (uintptr_t)p, hi = lo + n;
		ckpt__lazy_fill_slow(lo, hi < lo ? UINTPTR_MAX : hi);
	}
}

#endif /* CKPT_LAZY_H */
