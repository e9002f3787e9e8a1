/*
 * faultlog.h - the kernel's log of the process's page faults, for resets
 * whose cost follows the pages written (doc/TRACKING.md, "Resets").
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Under the userfaultfd back-end a first write to a protected page is a
 * page fault the kernel resolves itself.  A perf software event samples
 * every page fault of the process's threads with its address into a ring
 * buffer that ckpt reads without a system call, so that a reset learns the
 * pages written since the last one from the log instead of walking every
 * page-table entry; and a few cheap checks tell when the log cannot be
 * trusted (faults it did not see, a layout that may have changed, contents
 * discarded without a fault), when the reset walks as before.
 */
#ifndef CKPT_FAULTLOG_H
#define CKPT_FAULTLOG_H

#include "rangeset.h"
#include "sys.h"

/* Opens the events (ckpt_begin under uffd with CKPT_F_SHADOW: threads made
 * from then on inherit them), unless they are open or cannot be. */
CKPT__HIDDEN void ckpt__flog_open(void);
/* Closes them (ckpt_end): sampling costs every fault about 0.3 µs. */
CKPT__HIDDEN void ckpt__flog_close(void);
/* Whether a log may be had (not turned off, the events not refused). */
CKPT__HIDDEN int ckpt__flog_wanted(void);
/* Starts a log at this point (T->lock held, tracking under uffd, every
 * tracked page protected): opens the events if needed, forgets what they
 * logged so far and takes the baselines the next ckpt__flog_take compares
 * against.  `same_layout`:
 * right after a reset that used the log, whose layout checks still hold
 * (the maps are not read again).  0, or -1 when the log is not available
 * here. */
CKPT__HIDDEN int ckpt__flog_arm(int same_layout);
/* The log is not a basis for the next reset any more. */
CKPT__HIDDEN void ckpt__flog_disarm(void);
/* Reads the log: fn(addr, arg) runs for the address of every page fault
 * since ckpt__flog_arm (a superset of the tracked pages written since, by
 * any thread or by the kernel).  Returns 1 if the log was armed and
 * nothing the program did since could hide a change from it: then those
 * pages and the ranges `walk` (walked as before) are all that can differ.
 * 0: walk everything (fn may have run: a superset is harmless).  The log
 * is disarmed either way.  T->lock held. */
CKPT__HIDDEN int ckpt__flog_take(void (*fn)(uintptr_t addr, void *arg), void *arg,
				 const struct ckpt__rset **walk);

#endif /* CKPT_FAULTLOG_H */
