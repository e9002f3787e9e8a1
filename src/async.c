/*
 * async.c - CKPT_F_ASYNC: commits whose file is written in the background.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The design is a staging copy.  ckpt_commit captures as a synchronous
 * commit does (the dirty set taken, its pages protected again), then copies
 * every page the snapshot stores into the staging area, ckpt's own memory
 * that tracking never protects, and returns.  The plan's runs point at those
 * copies, so the writer thread and the compression workers read nothing but
 * ckpt's memory while the program goes on writing its own: the snapshot is
 * the memory as of the commit whatever happens after.  The program pays
 * the capture and one memcpy of its dirty pages; compression, the write and
 * the fsyncs go on in the background.
 *
 * One commit is in flight at a time.  The next ckpt_commit, ckpt_wait,
 * ckpt_restore, ckpt_end, ckpt_begin or ckpt_close waits for it first and
 * tells the tracker and the handle how it went (ckpt__async_settle): only
 * then does the snapshot count as the newest (restores, the next commit's
 * parent), as it is only then durable.  Memory stays bounded: the staging
 * area holds one commit and never more than the limit; a commit whose
 * pages do not fit is written before ckpt_commit returns, like a commit
 * without CKPT_F_ASYNC (it blocks rather than exceeding the limit).
 *
 * The tracker is told of the capture at once (the next capture is relative
 * to it, whatever the program does meanwhile).  If the write then fails,
 * ckpt__track_capture_revert puts the pages back into the dirty set and
 * makes the memory the snapshot stored whole count as new again: the next
 * commit stores all of it, and reuses the id (ids of a chain are
 * consecutive: snapshot n's parent is n - 1).
 *
 * Threads: the writer is a thread of ckpt's own (own-thread.h: made with
 * clone, unknown to glibc, so starting and ending it writes nothing in the
 * program's memory; no malloc, futex.h's locks).  It touches nothing but
 * the pending commit and the directory.  Where such a thread cannot be
 * made, the commit is written before ckpt_commit returns.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "async.h"
#include "error.h"
#include "mem.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

void ckpt__async_init(struct ckpt__async *a, int dirfd, size_t limit)
{
	memset(a, 0, sizeof *a);
	a->dirfd = dirfd;
	if (!limit) {
		long pages = sysconf(_SC_PHYS_PAGES);
		limit = CKPT__STAGING_DEFAULT;
		if (pages > 0 && (size_t)pages / 4 * ckpt__pagesize < limit)
			limit = (size_t)pages / 4 * ckpt__pagesize;
	}
	a->limit = ckpt__page_up(limit);
}

static void *writer_main(void *arg)
{
	struct ckpt__async *a = arg;
	ckpt__mutex_lock(&a->lock);
	while (!a->go && !a->quit)
		ckpt__cond_wait(&a->cond, &a->lock);
	int go = a->go;
	ckpt__mutex_unlock(&a->lock);
	if (!go)
		return NULL;
	ckpt__clear_error();
	int rc = ckpt__commit_write(a->dirfd, a->pd);
	ckpt__mutex_lock(&a->lock);
	a->rc = rc;
	if (rc)
		snprintf(a->msg, sizeof a->msg, "%s", ckpt_last_error());
	a->done = 1;
	ckpt__cond_broadcast(&a->cond);
	ckpt__mutex_unlock(&a->lock);
	return NULL;
}

/* Stops a writer that was given nothing to do. */
static void writer_dismiss(struct ckpt__async *a)
{
	ckpt__mutex_lock(&a->lock);
	a->quit = 1;
	ckpt__cond_broadcast(&a->cond);
	ckpt__mutex_unlock(&a->lock);
	ckpt__thread_join(&a->th);
	a->quit = 0;
}

uint64_t ckpt__async_settle(struct ckpt__async *a, struct ckpt__chainw *w)
{
	if (!a->pd)
		return 0;
	uint64_t t0 = ckpt__now_ns();
	ckpt__mutex_lock(&a->lock);
	while (!a->done)
		ckpt__cond_wait(&a->cond, &a->lock);
	ckpt__mutex_unlock(&a->lock);
	ckpt__thread_join(&a->th);
	int rc = a->rc;
	ckpt__commit_finish(w, a->pd, rc, NULL);
	ckpt__mem_free(a->pd, sizeof *a->pd);
	a->pd = NULL;
	a->go = a->done = a->rc = 0;
	if (rc) {
		a->err = rc;
		memcpy(a->err_msg, a->msg, sizeof a->err_msg);
	} else {
		a->durable++;
	}
	return ckpt__now_ns() - t0;
}

int ckpt__async_report(struct ckpt__async *a)
{
	int rc = a->err;
	if (!rc)
		return 0;
	a->err = 0;
	return ckpt__fail(rc, "%s (a background commit failed; its pages go into the next one)",
			  a->err_msg);
}

size_t ckpt__stage_bytes(const struct ckpt__plan *pl)
{
	size_t n = 0;
	for (size_t i = 0; i < pl->nruns; i++)
		if (pl->runs[i].kind == CKPT__RK_DATA && !pl->runs[i].src)
			n += pl->runs[i].npages << ckpt__pageshift;
	return n;
}

void ckpt__stage_copy(struct ckpt__plan *pl, char *at)
{
	for (size_t i = 0; i < pl->nruns; i++) {
		struct ckpt__wrun *r = &pl->runs[i];
		if (r->kind != CKPT__RK_DATA || r->src)
			continue;
		size_t len = r->npages << ckpt__pageshift;
		ckpt__copy_words(at, (const void *)r->start, len);
		r->src = (uintptr_t)at;
		at += len;
	}
}

int ckpt__async_commit(struct ckpt__async *a, struct ckpt__chainw *w, uint64_t *id)
{
	uint64_t t0 = ckpt__now_ns();
	uint64_t waited = ckpt__async_settle(a, w);
	int rc = ckpt__async_report(a);
	if (rc)
		return rc;
	if (!a->stage && !(a->stage = ckpt__mem_reserve(a->limit)))
		return ckpt__fail(CKPT_ENOMEM, "ckpt_commit: cannot reserve %zu bytes of staging",
				  a->limit);
	struct ckpt__pending *pd = ckpt__mem_alloc(sizeof *pd);
	if (!pd)
		return ckpt__fail(CKPT_ENOMEM, "ckpt_commit: out of memory");
	/* No writer (the thread could not be made): written in the
	 * program's time, as a commit too large to stage. */
	int nowriter = ckpt__thread_spawn(&a->th, writer_main, a) != 0;
	rc = ckpt__commit_prepare(w, pd, nowriter ? 0 : 1);
	size_t bytes = rc ? 0 : ckpt__stage_bytes(&pd->pl);
	if (rc || bytes > a->limit || nowriter) {
		if (!nowriter)
			writer_dismiss(a);
		if (!rc) {
			/* Too large to stage: written now, in the program's time. */
			rc = ckpt__commit_write(w->dirfd, pd);
			pd->wait_ns = waited;
			pd->t0 = t0;
			ckpt__commit_finish(w, pd, rc, id);
			if (!rc)
				a->durable++;
		}
		ckpt__mem_free(pd, sizeof *pd);
		return rc;
	}
	/* The copies, then the runs read them instead of the program's pages. */
	ckpt__stage_copy(&pd->pl, a->stage);
	pd->settled = 1;
	ckpt__track_capture_done(&pd->cap);
	pd->staged_bytes = bytes;
	pd->wait_ns = waited;
	pd->t0 = t0;
	pd->pause_ns = ckpt__now_ns() - t0;
	if (id)
		*id = pd->id;
	ckpt__mutex_lock(&a->lock);
	a->pd = pd;
	a->go = 1;
	ckpt__cond_broadcast(&a->cond);
	ckpt__mutex_unlock(&a->lock);
	return 0;
}

void ckpt__async_release(struct ckpt__async *a, struct ckpt__chainw *w)
{
	ckpt__async_settle(a, w);
	if (a->stage)
		ckpt__mem_free(a->stage, a->limit);
	a->stage = NULL;
}

void ckpt__async_destroy(struct ckpt__async *a, struct ckpt__chainw *w)
{
	ckpt__async_release(a, w);
}
