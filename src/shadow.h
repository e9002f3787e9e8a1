/*
 * shadow.h - CKPT_F_SHADOW: copies of committed pages, kept in memory.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The first write to a tracked page after a commit copies the page, as
 * committed, before it is unprotected (the fault path does it: one copy per
 * page per commit).  Rolling back to the newest snapshot then copies those
 * pages back, reading no disk: the cost of a reset is the number of pages
 * the program dirtied.
 */
#ifndef CKPT_SHADOW_H
#define CKPT_SHADOW_H

#include "sys.h"

/* Sets up (or resets) the shadow for a new epoch; limit: bytes of copies at
 * most (0: 1 GiB); `mirror`: copies made by commits (a back-end without
 * faults), not by first writes.  0 or -1. */
CKPT__HIDDEN int ckpt__shadow_start(size_t limit, int mirror);
/* Whether the shadow is a mirror, and on. */
CKPT__HIDDEN int ckpt__shadow_mirror(void);
/* Mirror: the page at addr, as committed just now, is src (not in faults;
 * one thread). */
CKPT__HIDDEN void ckpt__shadow_store(uintptr_t addr, const void *src);
CKPT__HIDDEN void ckpt__shadow_stop(void);
/* Forgets every copy (a commit made them stale).  O(1). */
CKPT__HIDDEN void ckpt__shadow_reset(void);
/* Makes room for the copies of [lo, hi) (not in faults).  0 or -1. */
CKPT__HIDDEN int ckpt__shadow_ensure(uintptr_t lo, uintptr_t hi);
/* Copies the clean pages of [lo, hi) that have no copy yet (a clean page
 * holds what the newest snapshot holds).  Fault-safe. */
CKPT__HIDDEN void ckpt__shadow_save(uintptr_t lo, uintptr_t hi);
/* The copy of the page at addr, or NULL. */
CKPT__HIDDEN const void *ckpt__shadow_get(uintptr_t addr);
/* Whether the shadow is on. Fault-safe. */
CKPT__HIDDEN int ckpt__shadow_on(void);

#endif /* CKPT_SHADOW_H */
