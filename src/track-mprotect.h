/*
 * track-mprotect.h - the mprotect + SIGSEGV back-end.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_TRACK_MPROTECT_H
#define CKPT_TRACK_MPROTECT_H

#include "sys.h"

#include <signal.h>

/* The program's sigaction() for `sig`: once ckpt's SIGSEGV dispatcher is
 * installed, SIGSEGV actions are recorded as its chain target and reported
 * back as if installed.  Returns 1 if it took the call, 0 if the caller
 * should pass it on. */
CKPT__HIDDEN int ckpt__mp_sigaction_hook(int sig, const struct sigaction *act,
					 struct sigaction *old);

/* ---- kernel writes in flight ------------------------------------------------
 * The kernel does not fault on a protected page, so the interposers open a
 * buffer (unprotect it and mark it dirty) before a system call writes into
 * it.  A call can wait in the kernel for a long time (read on a pipe, recv,
 * epoll_wait), and a commit on another thread protects again the pages it
 * stores: the kernel's late write would then fail with EFAULT, and a
 * datagram would be lost with it.  So each such call registers the memory
 * it lets the kernel write for as long as it runs, and the back-end never
 * protects a registered page: a commit leaves it writable and marked, so it
 * is stored as it is and again by the next commit.
 *
 * The registry is a fixed table of slots in ckpt's own memory, claimed and
 * released with atomics only (async-signal-safe: read() may be called from
 * a signal handler).  A call with more ranges than a ckpt__kw_call holds
 * widens the nearest of its slots; a call that finds every slot taken
 * counts as all memory: while it is in flight, the back-end protects
 * nothing (a superset: every page it would have protected stays dirty). */
#define CKPT__KW_RANGES 16
struct ckpt__kw_call {
	int n;        /* slots held */
	int overflow; /* counted in the overflow instead */
	int slot[CKPT__KW_RANGES];
};

/* Registers [lo, hi), which the kernel is about to write for the calling
 * thread's system call, then waits until no protection ckpt began before
 * the registration is still under way, so that the caller may open the
 * range and count on it staying open until ckpt__kw_leave.  A no-op unless
 * this back-end is installed.  Async-signal-safe; never writes errno. */
CKPT__HIDDEN void ckpt__kw_enter(struct ckpt__kw_call *k, uintptr_t lo, uintptr_t hi);
/* The call returned: its ranges may be protected again.  Async-signal-safe;
 * never writes errno. */
CKPT__HIDDEN void ckpt__kw_leave(struct ckpt__kw_call *k);

#endif /* CKPT_TRACK_MPROTECT_H */
