/*
 * async.h - CKPT_F_ASYNC: commits whose file is written in the background.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef CKPT_ASYNC_H
#define CKPT_ASYNC_H

#include "commit.h"
#include "futex.h"
#include "own-thread.h"

/* The default staging limit: 512 MiB, or a quarter of the physical memory
 * if that is less. */
#define CKPT__STAGING_DEFAULT ((size_t)512 << 20)

struct ckpt__async {
	size_t limit;                /* bytes of staging at most */
	char *stage;                 /* reserved `limit` bytes, or NULL */
	struct ckpt__pending *pd;    /* the commit in flight, or NULL */
	struct ckpt__own_thread th;  /* its writer */
	int dirfd;
	ckpt__mutex lock;
	ckpt__cond cond;
	int go, quit, done, rc;      /* writer hand-off, under lock */
	char msg[256];               /* the writer's ckpt_last_error on failure */
	int err;                     /* a failure not reported yet */
	char err_msg[256];
	uint64_t durable;            /* commits of this state that succeeded */
};

/* Bytes of the pages the plan reads from the program's memory. */
CKPT__HIDDEN size_t ckpt__stage_bytes(const struct ckpt__plan *pl);
/* Copies those pages to `at` (ckpt__stage_bytes of them), and points the
 * plan's runs at the copies. */
CKPT__HIDDEN void ckpt__stage_copy(struct ckpt__plan *pl, char *at);

/* Sets up `a` for the chain open in dirfd; limit 0: the default. */
CKPT__HIDDEN void ckpt__async_init(struct ckpt__async *a, int dirfd, size_t limit);
/* Waits for the commit in flight, if any, and reports its outcome to the
 * tracker and to w; a failure is kept for ckpt__async_report.  Returns the
 * nanoseconds waited. */
CKPT__HIDDEN uint64_t ckpt__async_settle(struct ckpt__async *a, struct ckpt__chainw *w);
/* The failure kept by a settle (with its message for ckpt_last_error),
 * once; 0 if none. */
CKPT__HIDDEN int ckpt__async_report(struct ckpt__async *a);
/* Commits with the write in the background (see ckpt_commit): settles the
 * previous commit (its failure is returned, and nothing is committed),
 * captures, copies the pages to store into the staging area and hands the
 * rest to a writer thread.  A commit whose pages do not fit in the limit is
 * written before returning.  0 or CKPT_E*. */
CKPT__HIDDEN int ckpt__async_commit(struct ckpt__async *a, struct ckpt__chainw *w, uint64_t *id);
/* Settles, then gives the staging area back to the kernel. */
CKPT__HIDDEN void ckpt__async_release(struct ckpt__async *a, struct ckpt__chainw *w);
CKPT__HIDDEN void ckpt__async_destroy(struct ckpt__async *a, struct ckpt__chainw *w);

#endif /* CKPT_ASYNC_H */
