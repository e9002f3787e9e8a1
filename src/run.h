/*
 * run.h - commits of a program that never calls ckpt (`ckpt run`): a thread
 * of ckpt's own commits every interval and on the signals named, with
 * every program thread stopped.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The order, in the run preload's constructor: ckpt__run_prepare (the
 * signal handlers, the thread, parked), ckpt_open with CKPT_F_RESUME and
 * ckpt_begin, ckpt__run_attach (the handle), ckpt__run_go.  A resume does
 * not return from ckpt_open: it attaches the resumed handle and lets the
 * thread go itself (ckpt__run_resumed) just before the program's threads
 * go on.  Nothing here is used unless ckpt__run_prepare ran.
 */
#ifndef CKPT_RUN_H
#define CKPT_RUN_H

#include "sys.h"

#include <signal.h>
#include <stdint.h>

struct ckpt;

struct ckpt__run_opts {
	uint64_t every_ns; /* 0: no periodic commits */
	uint64_t sigs;     /* bit sig-1: signals that ask for a commit */
	int keep;          /* -1, or compact to that many increments after a commit */
	char status[4096]; /* a file that gets one JSON object a line, or "" */
};

/* Installs ckpt's handler for each signal of o->sigs (what the program
 * sets for them from now on is kept as its own and acted on after each
 * commit) and starts the commit thread, which waits for ckpt__run_go.
 * 0 or an error code with the message set. */
CKPT__HIDDEN int ckpt__run_prepare(const struct ckpt__run_opts *o);
/* The handle the thread commits to. */
CKPT__HIDDEN void ckpt__run_attach(struct ckpt *c);
/* Lets the thread go: the first commit after one interval. */
CKPT__HIDDEN void ckpt__run_go(void);
/* ckpt__run_go if a thread is prepared and attached; a no-op otherwise.
 * Async-signal-safe, no stack protector: it runs at the end of a resume. */
CKPT__HIDDEN void ckpt__run_resumed(void);
/* Whether sig is one of ckpt run's: then the program's action is what
 * act sets and old reads, and 1 is returned (sigaction's interposer). */
CKPT__HIDDEN int ckpt__run_sigaction_hook(int sig, const struct sigaction *act,
					  struct sigaction *old);
/* In the child of a fork: the program's own actions back for ckpt run's
 * signals (no thread commits there). */
CKPT__HIDDEN void ckpt__run_forked(void);

/* ckpt.c: a resumable commit of c made by a thread of ckpt's own, every
 * program thread stopped at a safe point (not in ckpt's code nor in the
 * dynamic linker's; tried again for up to a second).  As ckpt_commit.
 * Unless `urgent`, what is left once the program goes on runs at a low
 * priority. */
CKPT__HIDDEN int ckpt__commit_detached(struct ckpt *c, uint64_t *id, int urgent);
/* ckpt.c: how the last ckpt__commit_detached wrote its file: "copy" (its
 * pages copied, the program going on meanwhile), "fork" (by a child
 * process), "stopped" (with the program stopped). */
CKPT__HIDDEN const char *ckpt__run_writer(const struct ckpt *c);
/* ckpt.c: the bytes of the staging area the commits keep (ckpt's, not
 * the program's memory). */
CKPT__HIDDEN size_t ckpt__run_staging(void);
/* ckpt.c: the id of the newest snapshot of c's chain (0: none). */
CKPT__HIDDEN uint64_t ckpt__latest_id(const struct ckpt *c);
/* ckpt.c: ckpt_chain_compact of c's own chain, under the lock c holds,
 * with the program running (one compression thread), when it has more
 * than `above` increments. */
CKPT__HIDDEN int ckpt__compact_held(struct ckpt *c, unsigned keep, unsigned above,
				    size_t *folded);

#endif /* CKPT_RUN_H */
