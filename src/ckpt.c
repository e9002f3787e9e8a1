/*
 * ckpt.c - the public handle: argument checks, states, and the calls that
 * tie the tracker to a handle.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ckpt.h"
#include "async.h"
#include "commit.h"
#include "compress.h"
#include "error.h"
#include "lazy.h"
#include "mem.h"
#include "named.h"
#include "pipes.h"
#include "rangeset.h"
#include "restore.h"
#include "resume.h"
#include "run.h"
#include "state.h"
#include "threadrec.h"
#include "track.h"

#include <stdio.h>

#include <limits.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <errno.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <sys/mman.h>

enum { H_OPEN, H_TRACKING, H_ENDED };

struct ckpt {
	char *dir;
	size_t dir_bytes;
	ckpt_options opt;
	const struct ckpt__backend *be;
	int state;
	struct ckpt__rset excl;     /* ckpt_exclude ranges */
	struct ckpt__runs frozen;   /* dirty set of the epoch that ended */
	struct ckpt__begin_info info;
	struct ckpt__counters cnt;  /* counters of the epoch that ended */
	unsigned epochs;
	uint64_t begin_ns;
	struct ckpt__chainw *w;     /* the chain, when opened with a directory */
	struct ckpt__async *as;     /* CKPT_F_ASYNC: the commit in flight */
	uint64_t commits;
	struct ckpt__restore_stats restored;
	int resumable;              /* opened with CKPT_F_RESUME */
	struct ckpt__pbuf rec;      /* the record of an async commit in flight */
	struct ckpt__pctx ctx;      /* the registers of its last commit */
	struct ckpt__named *named;  /* ckpt_protect's regions, or NULL */
	const char *run_writer;     /* how ckpt run's last commit was written */
};

_Static_assert(sizeof(struct ckpt) <= sizeof ckpt__g.resume_slot, "resume slot");

CKPT_API unsigned ckpt_version(void)
{
	return CKPT_VERSION_NUMBER;
}

CKPT_API const char *ckpt_version_string(void)
{
	return CKPT_VERSION_STRING;
}

CKPT_API void ckpt_options_init(ckpt_options *opt)
{
	if (opt)
		memset(opt, 0, sizeof *opt);
}

#define KNOWN_FLAGS                                                                   \
	(CKPT_F_RESUME | CKPT_F_SHADOW | CKPT_F_OVERWRITE | CKPT_F_NO_SHARED | CKPT_F_ASYNC | \
	 CKPT_F_LAZY | CKPT_F_CONTINUE)

static int check_options(const ckpt_options *o)
{
	if (o->backend < CKPT_BACKEND_AUTO || o->backend > CKPT_BACKEND_SOFTDIRTY)
		return ckpt__fail(CKPT_EINVAL, "ckpt_open: unknown back-end %d", o->backend);
	if (o->flags & ~KNOWN_FLAGS)
		return ckpt__fail(CKPT_EINVAL, "ckpt_open: unknown flags %#x", o->flags & ~KNOWN_FLAGS);
	if ((o->flags & CKPT_F_LAZY) && !(o->flags & CKPT_F_RESUME))
		return ckpt__fail(CKPT_EINVAL, "ckpt_open: CKPT_F_LAZY is only valid with "
					       "CKPT_F_RESUME");
	if ((o->flags & CKPT_F_CONTINUE) && (o->flags & (CKPT_F_RESUME | CKPT_F_OVERWRITE)))
		return ckpt__fail(CKPT_EINVAL, "ckpt_open: CKPT_F_CONTINUE excludes %s",
				  (o->flags & CKPT_F_RESUME) ? "CKPT_F_RESUME" : "CKPT_F_OVERWRITE");
	if (o->level < -131072 || o->level > 22)
		return ckpt__fail(CKPT_EINVAL, "ckpt_open: zstd level %d out of range (-131072..22)",
				  o->level);
	if (o->threads < 0 || o->threads > 1024)
		return ckpt__fail(CKPT_EINVAL, "ckpt_open: threads %d out of range (0..1024)",
				  o->threads);
	for (size_t i = 0; i < sizeof o->reserved / sizeof o->reserved[0]; i++)
		if (o->reserved[i])
			return ckpt__fail(CKPT_EINVAL, "ckpt_open: reserved option field %zu is not zero",
					  i);
	return 0;
}

/* Continues from the newest sound snapshot of c's chain: returns only on
 * failure, before anything of the process changed.  A snapshot that fails
 * its checks (CKPT_ECORRUPT) gives way to the one before, twice at most. */
static int resume_chain(struct ckpt *c, const char *dir, int lazy)
{
	int rc = CKPT_ECORRUPT;
	for (unsigned skip = 0; skip < 3 && rc == CKPT_ECORRUPT; skip++) {
		struct ckpt__resume *r;
		rc = ckpt__resume_load(c->w, dir, (uintptr_t)c, skip, &r);
		if (rc)
			continue;
		if (c->as)
			c->as->dirfd = c->w->dirfd; /* moved above the program's */
		/* The program's exclusions are the handle's, which it does not
		 * set again. */
		ckpt__rset_clear(&c->excl);
		rc = ckpt__resume_excluded(r, &c->excl);
		struct ckpt__rset fresh = {0};
		if (!rc && ckpt__resume_fresh(r, &fresh))
			rc = ckpt__fail(CKPT_ENOMEM, "ckpt_open: out of memory");
		if (!rc)
			rc = ckpt_begin(c);
		if (!rc) {
			rc = ckpt__restore_ex(c->w, ckpt__resume_id(r), 0,
					      CKPT__RESTORE_ALL | (lazy ? CKPT__RESTORE_LAZY : 0),
					      ckpt__resume_before, r, &fresh, &c->restored);
			if (!rc) {
				ckpt__track_adopt();
				/* The lazy fill goes on reading the chain after
				 * the resume lets its reader go. */
				ckpt__lazy_adopt_chain(&c->w->rd);
				/* ckpt run's thread commits to the resumed
				 * handle (if there is such a thread). */
				ckpt__run_attach(c);
				ckpt__resume_finish(r);
			}
			ckpt__lazy_cancel();
			if (ckpt__resume_started(r)) {
				/* Memory is half the old process's: nothing
				 * sound to return to. */
				fprintf(stderr, "ckpt: resuming from %s failed halfway: %s\n", dir,
					ckpt_last_error());
				_exit(127);
			}
		}
		ckpt__rset_free(&fresh);
		/* ckpt_end clears the message: keep it. */
		char why[512];
		snprintf(why, sizeof why, "%s", ckpt_last_error());
		if (c->state == H_TRACKING)
			ckpt_end(c);
		ckpt__resume_free(r);
		if (rc)
			ckpt__fail(rc, "%s", why);
	}
	return rc;
}

/* A child forked during a lazy fill would see the pages not filled yet as
 * zeros (its mappings lose the registration): a fork waits for the fill.
 * Registered by every CKPT_F_RESUME handle, in the run that writes the
 * chain too: the glibc state a resume restores is that run's. */
static pthread_once_t lazy_fork_once = PTHREAD_ONCE_INIT;

static void lazy_before_fork(void)
{
	ckpt__lazy_finish();
}

static void lazy_fork_register(void)
{
	pthread_atfork(lazy_before_fork, NULL, NULL);
}

CKPT_API int ckpt_open(ckpt_t **out, const char *dir, const ckpt_options *opt)
{
	ckpt__clear_error();
	if (!out)
		return ckpt__fail(CKPT_EINVAL, "ckpt_open: out is NULL");
	*out = NULL;
	ckpt_options o;
	ckpt_options_init(&o);
	if (opt)
		o = *opt;
	int rc = check_options(&o);
	if (rc)
		return rc;
	if (dir && (!dir[0] || strlen(dir) >= PATH_MAX))
		return ckpt__fail(dir[0] ? CKPT_ENAMETOOLONG : CKPT_EINVAL,
				  "ckpt_open: directory name is %s", dir[0] ? "too long" : "empty");
	rc = ckpt__track_init();
	if (rc)
		return ckpt__fail(rc, "ckpt_open: cannot set up the tracker");
	/* After the tracker's: its prepare handler takes the tracker's lock,
	 * which waiting for the fill needs, and handlers registered later
	 * run first. */
	if (o.flags & CKPT_F_RESUME)
		pthread_once(&lazy_fork_once, lazy_fork_register);
	const struct ckpt__backend *be;
	char why[256] = "";
	rc = ckpt__track_select(o.backend, &be, why, sizeof why);
	if (rc)
		return ckpt__fail(rc, "ckpt_open: %s", why);
	if ((o.flags & (CKPT_F_SHADOW | CKPT_F_OVERWRITE | CKPT_F_RESUME | CKPT_F_ASYNC |
			CKPT_F_CONTINUE)) &&
	    !dir)
		return ckpt__fail(CKPT_EINVAL, "ckpt_open: CKPT_F_SHADOW, CKPT_F_OVERWRITE, "
					       "CKPT_F_RESUME, CKPT_F_ASYNC and CKPT_F_CONTINUE need a "
					       "directory");
	int resume = (o.flags & CKPT_F_RESUME) != 0;
	if (resume && (o.flags & CKPT_F_OVERWRITE))
		return ckpt__fail(CKPT_EINVAL, "ckpt_open: CKPT_F_RESUME and CKPT_F_OVERWRITE "
					       "exclude each other");
	if (resume && __atomic_load_n(&ckpt__g.resume_slot_used, __ATOMIC_ACQUIRE))
		return ckpt__fail(CKPT_EBUSY, "ckpt_open: a process has one CKPT_F_RESUME handle");
	/* May execute the program again, with the layout fixed. */
	if (resume && (rc = ckpt__resume_norandom()) != 0)
		return rc;
	struct ckpt *c;
	if (resume) {
		if (__atomic_exchange_n(&ckpt__g.resume_slot_used, 1, __ATOMIC_ACQ_REL))
			return ckpt__fail(CKPT_EBUSY, "ckpt_open: a process has one CKPT_F_RESUME "
						      "handle");
		c = (struct ckpt *)ckpt__g.resume_slot;
		memset(c, 0, sizeof *c);
		c->resumable = 1;
	} else if (!(c = ckpt__mem_alloc(sizeof *c))) {
		return ckpt__fail(CKPT_ENOMEM, "ckpt_open: out of memory");
	}
	c->opt = o;
	c->be = be;
	c->state = H_OPEN;
	if (dir) {
		c->dir_bytes = strlen(dir) + 1;
		c->dir = ckpt__mem_alloc(c->dir_bytes);
		c->w = ckpt__mem_alloc(sizeof *c->w);
		if (!c->dir || !c->w) {
			ckpt_close(c);
			return ckpt__fail(CKPT_ENOMEM, "ckpt_open: out of memory");
		}
		memcpy(c->dir, dir, c->dir_bytes);
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		unsigned threads = o.threads ? (unsigned)o.threads : ncpu > 0 ? (unsigned)ncpu : 1;
		rc = ckpt__chainw_open(c->w, dir,
				       resume || (o.flags & CKPT_F_CONTINUE) ? CKPT__CW_CONTINUE
				       : (o.flags & CKPT_F_OVERWRITE)       ? CKPT__CW_OVERWRITE
									    : CKPT__CW_NEW,
				       o.level ? o.level : CKPT__DEFAULT_LEVEL, threads);
		if (rc) {
			ckpt__mem_free(c->w, sizeof *c->w);
			c->w = NULL;
			ckpt_close(c);
			return rc;
		}
		if (!resume && c->w->existing) {
			/* CKPT_F_CONTINUE: the next commit follows the newest. */
			rc = ckpt__chainw_adopt(c->w, dir);
			if (rc) {
				ckpt_close(c);
				return rc;
			}
		}
		if (o.flags & CKPT_F_ASYNC) {
			if (!(c->as = ckpt__mem_alloc(sizeof *c->as))) {
				ckpt_close(c);
				return ckpt__fail(CKPT_ENOMEM, "ckpt_open: out of memory");
			}
			ckpt__async_init(c->as, c->w->dirfd, (size_t)o.staging_limit);
		}
	}
	if (resume && c->w->existing) {
		/* CKPT_LAZY_OFF: a lazy resume of this chain met a damaged
		 * block and executed the program again (lazy.c). */
		const char *off = getenv("CKPT_LAZY_OFF");
		int lazy = (o.flags & CKPT_F_LAZY) && !(off && off[0] == '1');
		if (off)
			unsetenv("CKPT_LAZY_OFF");
		/* Returns only if the chain cannot be resumed. */
		rc = resume_chain(c, dir, lazy);
		char msg[512];
		snprintf(msg, sizeof msg, "%s", ckpt_last_error());
		ckpt_close(c);
		return ckpt__fail(rc, "%s", msg);
	}
	*out = c;
	return 0;
}

/* Waits for a commit in flight (CKPT_F_ASYNC); its failure stays for the
 * next ckpt_wait or ckpt_commit. */
static void settle(struct ckpt *c)
{
	if (c->as)
		ckpt__async_settle(c->as, c->w);
}

/* Named regions, at begin: every region of ckpt_protect_from's snapshot
 * named again, the pages to track, the record commits will carry. */
static int named_begin(struct ckpt *c, struct ckpt__rset *only)
{
	struct ckpt__named *n = c->named;
	int rc = 0;
	if (n->from)
		rc = ckpt__named_match(c->w, n, n->from, 1, "ckpt_begin");
	if (!rc)
		rc = ckpt__named_spans(n, only, 1, "ckpt_begin");
	if (!rc && ckpt__named_record(n))
		rc = ckpt__fail(CKPT_ENOMEM, "ckpt_begin: out of memory");
	return rc;
}

CKPT_API int ckpt_begin(ckpt_t *c)
{
	ckpt__clear_error();
	if (!c)
		return ckpt__fail(CKPT_EINVAL, "ckpt_begin: handle is NULL");
	if (c->state == H_TRACKING)
		return ckpt__fail(CKPT_EBUSY, "ckpt_begin: this handle is already tracking");
	settle(c);
	uint64_t t0 = ckpt__now_ns();
	struct ckpt__begin_info info;
	struct ckpt__rset only = {0};
	int rc = c->named ? named_begin(c, &only) : 0;
	if (rc) {
		ckpt__rset_free(&only);
		return rc;
	}
	const struct ckpt__rset *onlyp = c->named ? &only : NULL;
	rc = ckpt__track_begin(c->be, c->opt.flags, &c->excl, onlyp, &info);
	const char *env = getenv("CKPT_BACKEND");
	if (rc && rc != CKPT_EBUSY && rc != CKPT_ENOMEM && c->opt.backend == CKPT_BACKEND_AUTO &&
	    (!env || !env[0] || !strcmp(env, "auto")) && c->be != &ckpt__backend_mprotect) {
		/* Memory the back-end ckpt chose cannot protect (a mapping
		 * userfaultfd refuses): the choice falls back. */
		c->be = &ckpt__backend_mprotect;
		rc = ckpt__track_begin(c->be, c->opt.flags, &c->excl, onlyp, &info);
	}
	ckpt__rset_free(&only);
	if (rc)
		return rc;
	if (c->named)
		c->named->from = 0;
	c->begin_ns = ckpt__now_ns() - t0;
	c->info = info;
	c->state = H_TRACKING;
	c->epochs++;
	ckpt__runs_free(&c->frozen);
	memset(&c->cnt, 0, sizeof c->cnt);
	return 0;
}

CKPT_API int ckpt_dirty_foreach(ckpt_t *c, int (*fn)(const ckpt_page_run *run, void *arg),
				void *arg)
{
	ckpt__clear_error();
	if (!c || !fn)
		return ckpt__fail(CKPT_EINVAL, "ckpt_dirty_foreach: %s is NULL", c ? "fn" : "handle");
	if (c->state == H_OPEN)
		return ckpt__fail(CKPT_ESTATE, "ckpt_dirty_foreach: tracking never began");
	struct ckpt__runs live = {0};
	const struct ckpt__runs *runs = &c->frozen;
	if (c->state == H_TRACKING) {
		int rc = ckpt__track_collect(&live);
		if (rc) {
			ckpt__runs_free(&live);
			return rc;
		}
		runs = &live;
	}
	int rc = 0;
	for (size_t i = 0; i < runs->n && !rc; i++) {
		ckpt_page_run r = runs->r[i];
		rc = fn(&r, arg);
	}
	ckpt__runs_free(&live);
	return rc;
}

CKPT_API size_t ckpt_dirty_count(ckpt_t *c)
{
	ckpt__clear_error();
	if (!c || c->state == H_OPEN)
		return 0;
	if (c->state == H_ENDED)
		return c->frozen.pages;
	struct ckpt__runs live = {0};
	size_t n = ckpt__track_collect(&live) == 0 ? live.pages : 0;
	ckpt__runs_free(&live);
	return n;
}

CKPT_API int ckpt_exclude(ckpt_t *c, void *addr, size_t len)
{
	ckpt__clear_error();
	if (!c)
		return ckpt__fail(CKPT_EINVAL, "ckpt_exclude: handle is NULL");
	uintptr_t lo = (uintptr_t)addr;
	if (lo & (ckpt__pagesize - 1))
		return ckpt__fail(CKPT_EINVAL, "ckpt_exclude: address %p is not page-aligned", addr);
	if (len == 0)
		return ckpt__fail(CKPT_EINVAL, "ckpt_exclude: length is 0");
	uintptr_t hi = lo + len;
	if (hi < lo || ckpt__page_up(hi) < hi)
		return ckpt__fail(CKPT_EINVAL, "ckpt_exclude: %p + %zu overflows", addr, len);
	hi = ckpt__page_up(hi);
	if (ckpt__rset_add(&c->excl, lo, hi))
		return ckpt__fail(CKPT_ENOMEM, "ckpt_exclude: out of memory");
	if (c->state == H_TRACKING) {
		int rc = ckpt__track_exclude(lo, hi);
		if (rc)
			return ckpt__fail(rc, "ckpt_exclude: cannot exclude %p: %s", addr,
					  ckpt_strerror(rc));
	}
	return 0;
}

CKPT_API int ckpt_end(ckpt_t *c)
{
	ckpt__clear_error();
	if (!c)
		return ckpt__fail(CKPT_EINVAL, "ckpt_end: handle is NULL");
	if (c->state != H_TRACKING)
		return ckpt__fail(CKPT_ESTATE, "ckpt_end: this handle is not tracking");
	/* A lazy resume's pages all there before tracking stops. */
	ckpt__lazy_finish();
	if (c->as)
		ckpt__async_release(c->as, c->w);
	int rc = ckpt__track_end(&c->frozen);
	ckpt__lazy_stop();
	/* After the final collection, which counts what the kernel recorded. */
	ckpt__track_counters(&c->cnt);
	c->state = H_ENDED;
	return rc;
}

CKPT_API void ckpt_close(ckpt_t *c)
{
	if (!c)
		return;
	ckpt__lazy_stop();
	if (c->state == H_TRACKING)
		ckpt_end(c);
	if (c->as) {
		ckpt__async_destroy(c->as, c->w);
		ckpt__mem_free(c->as, sizeof *c->as);
	}
	ckpt__pbuf_free(&c->rec);
	ckpt__runs_free(&c->frozen);
	ckpt__rset_free(&c->excl);
	ckpt__named_free(c->named);
	c->named = NULL;
	if (c->w) {
		ckpt__chainw_close(c->w);
		ckpt__mem_free(c->w, sizeof *c->w);
	}
	if (c->dir)
		ckpt__mem_free(c->dir, c->dir_bytes);
	if (c->resumable) {
		memset(c, 0, sizeof *c);
		__atomic_store_n(&ckpt__g.resume_slot_used, 0, __ATOMIC_RELEASE);
		return;
	}
	ckpt__mem_free(c, sizeof *c);
}

CKPT_API int ckpt_stats_get(ckpt_t *c, ckpt_stats *out)
{
	ckpt__clear_error();
	if (!c || !out)
		return ckpt__fail(CKPT_EINVAL, "ckpt_stats: %s is NULL", c ? "out" : "handle");
	memset(out, 0, sizeof *out);
	out->backend = c->epochs ? c->be->id : 0;
	out->tracking = c->state == H_TRACKING;
	out->regions = c->info.regions;
	out->tracked_pages = c->info.tracked_pages;
	out->pinned_pages = c->info.pinned_pages;
	out->excluded_pages = c->info.excluded_pages;
	out->unknown_threads = c->info.unknown_threads;
	out->epochs = c->epochs;
	out->begin_ns = c->begin_ns;
	/* First: with a back-end that keeps its own record, counting the
	 * dirty pages brings it in, first writes included. */
	out->dirty_pages = ckpt_dirty_count(c);
	struct ckpt__counters k = c->cnt;
	if (c->state == H_TRACKING)
		ckpt__track_counters(&k);
	out->faults = k.faults;
	out->fallbacks = k.fallbacks;
	out->fallback_pages = k.fallback_pages;
	out->kernel_writes = k.kernel_writes;
	out->moved_mappings = k.moved;
	out->fast_restores = k.fast_restores;
	if (c->as)
		c->commits = c->as->durable;
	if (c->w && c->commits) {
		const struct ckpt__commit_stats *cs = &c->w->last;
		out->commit_id = cs->id;
		out->commit_pause_ns = cs->pause_ns;
		out->commit_capture_ns = cs->capture_ns;
		out->commit_compress_ns = cs->compress_ns;
		out->commit_write_ns = cs->write_ns;
		out->commit_sync_ns = cs->sync_ns;
		out->commit_pages = cs->pages;
		out->commit_raw_bytes = cs->raw_bytes;
		out->commit_stored_bytes = cs->stored_bytes;
		out->commit_file_bytes = cs->file_bytes;
		out->commit_wait_ns = cs->wait_ns;
		out->commit_staged_bytes = cs->staged_bytes;
	}
	out->commits = c->commits;
	out->restore_pages = c->restored.pages;
	out->restore_ns = c->restored.total_ns;
	return 0;
}

/* C cannot give the type ckpt_stats and a function the same name, so the
 * header makes ckpt_stats() a macro; the symbol exists too, for callers from
 * other languages. */
__asm__(".globl ckpt_stats\n.set ckpt_stats, ckpt_stats_get\n.type ckpt_stats, @function");

/* A commit a resumed process returns from: the registers here, the record
 * of the process in the snapshot.  Its own frame, like setjmp's caller's,
 * must not change between the save and the second return: it does not. */
static __attribute__((noinline)) int commit_resumable(struct ckpt *c, uint64_t *id)
{
	/* With CKPT_F_ASYNC the previous record is written once settled. */
	if (c->as)
		ckpt__async_settle(c->as, c->w);
	ckpt__pbuf_free(&c->rec);
	/* What stdio holds is written now, not again by the resumed run. */
	fflush(NULL);
	c->ctx.handle = (uintptr_t)c;
	if (ckpt__ctx_save(&c->ctx)) {
		if (id)
			*id = ckpt__resumed_id;
		return CKPT_RESUMED;
	}
	struct ckpt__pbuf b = {0};
	for (size_t i = 0; i < c->excl.n; i++) {
		uint64_t range[2] = {c->excl.r[i].lo, c->excl.r[i].hi};
		ckpt__pbuf_add(&b, CKPT__PE_EXCL, range, sizeof range, NULL, 0);
	}
	int rc = ckpt__resume_record(&b, &c->ctx, c->w);
	if (rc) {
		ckpt__pbuf_free(&b);
		return ckpt__fail(rc == CKPT_ENOMEM ? rc : CKPT_EIO,
				  "ckpt_commit: cannot record the process: %s", ckpt_last_error());
	}
	/* The other threads are stopped once the process record is made (it
	 * takes locks a stopped thread may hold) and go on when the pages are
	 * captured: the async staging copy, or the whole write. */
	rc = ckpt__threads_stop();
	/* With the threads stopped: a lazy resume's registration back to the
	 * tracker's own, what was written since in the dirty set. */
	if (!rc)
		ckpt__lazy_handover();
	if (!rc && (rc = ckpt__threads_record(&b, c->ctx.rsp)) != 0)
		rc = ckpt__fail(rc, "ckpt_commit: cannot record the threads");
	/* The content of the program's pipes, which its threads may write:
	 * read while they are stopped.  ckpt holds no pipe of its own. */
	if (!rc)
		rc = ckpt__pipes_record(&b, NULL);
	if (rc) {
		ckpt__threads_go();
		ckpt__pbuf_free(&b);
		return rc;
	}
	c->w->proc = b.p;
	c->w->proc_size = b.n;
	rc = c->as ? ckpt__async_commit(c->as, c->w, id) : ckpt__commit(c->w, id);
	ckpt__threads_go();
	c->w->proc = NULL;
	c->w->proc_size = 0;
	if (c->as)
		c->rec = b; /* the background write reads it */
	else
		ckpt__pbuf_free(&b);
	return rc;
}

/* What a commit of `ckpt run` may copy to let the program go on: as for
 * CKPT_F_ASYNC's staging, a quarter of the memory, but at least its
 * default (the copy lives only until the file is written). */
static size_t run_staging_limit(void)
{
	long pages = sysconf(_SC_PHYS_PAGES);
	size_t q = pages > 0 ? (size_t)pages / 4 * ckpt__pagesize : 0;
	return q > CKPT__STAGING_DEFAULT ? q : CKPT__STAGING_DEFAULT;
}

uint64_t ckpt__latest_id(const struct ckpt *c)
{
	return c && c->w ? c->w->latest : 0;
}

const char *ckpt__run_writer(const struct ckpt *c)
{
	return c && c->run_writer ? c->run_writer : "none";
}

/* The staging area of `ckpt run`'s commits, kept from one commit to the
 * next: its pages are then in memory already, and the copy, made while
 * the program is stopped, costs no page faults (a copy into new memory
 * costs five times as much here).  After each commit the part it did not
 * use is handed back lazily (MADV_FREE: the kernel takes those pages only
 * when it needs memory; until then the next commit finds them). */
static struct {
	char *p;
	size_t cap;
} RS;

static char *run_stage(size_t bytes)
{
	if (bytes <= RS.cap)
		return RS.p;
	ckpt__mem_free(RS.p, RS.cap);
	/* A quarter more: the next commits, about as large, fit. */
	size_t cap = ckpt__page_up(bytes + bytes / 4);
	RS.p = ckpt__mem_reserve(cap);
	RS.cap = RS.p ? cap : 0;
	/* Fewer faults while the program waits for the copy. */
	if (RS.p)
		madvise(RS.p, cap, MADV_HUGEPAGE);
	return RS.p;
}

static void run_stage_done(size_t bytes)
{
	size_t used = ckpt__page_up(bytes);
	if (RS.p && used < RS.cap)
		madvise(RS.p + used, RS.cap - used, MADV_FREE);
}

size_t ckpt__run_staging(void)
{
	return RS.cap;
}

/* The rest of ckpt__commit_detached's commit: the pages copied into ckpt's
 * memory, the program goes on while they are compressed and written; a
 * commit too large to copy is written with the program stopped. */
static int run_copied_write(struct ckpt *c, struct ckpt__pending *pd, size_t bytes, int nice,
			    uint64_t *id)
{
	char *stage = bytes && bytes <= run_staging_limit() ? run_stage(bytes) : NULL;
	c->run_writer = stage || !bytes ? "copy" : "stopped";
	if (stage || !bytes) {
		ckpt__stage_copy(&pd->pl, stage);
		pd->settled = 1;
		ckpt__track_capture_done(&pd->cap);
		pd->staged_bytes = bytes;
		pd->pause_ns = ckpt__now_ns() - pd->t0;
		ckpt__threads_go();
		/* The program first: compression takes the CPU it leaves. */
		if (nice)
			ckpt__workers_nice(pd->wk, nice);
	}
	int rc = ckpt__commit_write(c->w->dirfd, pd);
	ckpt__commit_finish(c->w, pd, rc, id);
	run_stage_done(bytes);
	return rc;
}

/* The nice value of the threads that compress and write a commit once
 * the program goes on, unless a signal asked for it (a preemption
 * notice: it is urgent).  19: the program's threads get the CPU they
 * share with them (a weight of 15 against 1024), and so do other
 * programs of the machine. */
#define RUN_NICE 19

/* The staging area is warmed, after a commit written by a child, up to
 * this (or an eighth of the memory, if less). */
#define RUN_WARM_MAX ((size_t)256 << 20)
/* A commit with more than this to copy into memory not yet faulted in is
 * written by a child instead. */
#define RUN_COLD_COPY_MAX ((size_t)32 << 20)

/* Faults in the staging area, up to what a commit of `bytes` needs (a
 * quarter more), within RUN_WARM_MAX: the next commits of that size are
 * copied, not forked. */
static void run_stage_warm(size_t bytes)
{
	long pages = sysconf(_SC_PHYS_PAGES);
	size_t max = pages > 0 ? (size_t)pages / 8 * ckpt__pagesize : RUN_WARM_MAX;
	if (max > RUN_WARM_MAX)
		max = RUN_WARM_MAX;
	size_t want = bytes > max ? max : bytes;
	if (want <= RS.cap || !run_stage(want))
		return;
	memset(RS.p, 0, RS.cap);
}

/* What the child writing a commit reports. */
struct run_child {
	int rc;
	struct ckpt__wresult res;
	char msg[1024];
};

/* Writes pd's snapshot from a child process (clone without CLONE_VM, so a
 * copy-on-write image of the process as of the capture), and lets the
 * program go on at once: a commit too large to copy quickly costs the
 * program the page tables' copy and, later, one copy of each page it
 * writes while the child reads.  The child is the caller's copy alone
 * (no program thread, no fork handler), keeps only the chain's directory
 * open (a pipe's other end must not stay open in it), writes the file with
 * workers of its own, and exits; no signal tells the program of its end
 * (exit signal 0: only a wait with __WALL sees it).  Returns 1 with *rcp
 * set once the child has ended, 0 if no child could be made (nothing was
 * done: the caller copies or writes with the program stopped). */
static int run_forked_write(struct ckpt__chainw *w, struct ckpt__pending *pd, size_t bytes,
			    int nice, int *rcp)
{
	size_t sz = ckpt__page_up(sizeof(struct run_child));
	long m = ckpt__sys6(SYS_mmap, 0, (long)sz, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m < 0 && m > -4096)
		return 0;
	struct run_child *rch = (struct run_child *)m;
	rch->rc = CKPT_EIO;
	int dirfd = w->dirfd;
	long parent = ckpt__sys3(SYS_getpid, 0, 0, 0);
	long pid = ckpt__sys6(SYS_clone, 0, 0, 0, 0, 0, 0);
	if (pid == 0) {
		/* Killed with the program: a kill during a commit leaves the
		 * chain as it was, and a resume must not meet a writer that
		 * outlived the lock. */
		ckpt__sys6(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0, 0);
		if (ckpt__sys3(SYS_getppid, 0, 0, 0) != parent)
			ckpt__sys3(SYS_exit_group, 1, 0, 0);
		if (dirfd > 0)
			ckpt__sys3(SYS_close_range, 0, (long)dirfd - 1, 0);
		ckpt__sys3(SYS_close_range, (long)dirfd + 1, ~0u, 0);
		if (nice)
			setpriority(PRIO_PROCESS, 0, nice); /* and its workers */
		/* The workers started for the capture are the parent's. */
		pd->wk = NULL;
		pd->wp.workers = NULL;
		int rc = ckpt__snap_write(dirfd, &pd->wp, &rch->res);
		if (rc)
			snprintf(rch->msg, sizeof rch->msg, "%s", ckpt_last_error());
		rch->rc = rc;
		ckpt__sys3(SYS_exit_group, rc ? 1 : 0, 0, 0);
	}
	if (pid < 0) {
		ckpt__sys3(SYS_munmap, m, (long)sz, 0);
		return 0;
	}
	pd->settled = 1;
	ckpt__track_capture_done(&pd->cap);
	pd->pause_ns = ckpt__now_ns() - pd->t0;
	ckpt__threads_go();
	ckpt__commit_workers_stop(pd);
	run_stage_warm(bytes + bytes / 4);
	int st = 0;
	long r;
	while ((r = ckpt__sys6(SYS_wait4, pid, (long)&st, __WALL, 0, 0, 0)) == -EINTR)
		;
	if (r != pid)
		*rcp = ckpt__fail(CKPT_EIO, "ckpt run: lost the process writing snapshot %llu",
				  (unsigned long long)pd->id);
	else if (WIFSIGNALED(st))
		*rcp = ckpt__fail(CKPT_EIO, "ckpt run: the process writing snapshot %llu ended by "
					    "signal %d",
				  (unsigned long long)pd->id, WTERMSIG(st));
	else if (rch->rc)
		*rcp = ckpt__fail(rch->rc, "%s", rch->msg);
	else {
		pd->res = rch->res;
		*rcp = 0;
	}
	ckpt__sys3(SYS_munmap, m, (long)sz, 0);
	return 1;
}

int ckpt__compact_held(struct ckpt *c, unsigned keep, unsigned above, size_t *folded)
{
	ckpt__clear_error();
	if (!c || !c->w)
		return ckpt__fail(CKPT_EINVAL, "ckpt run: the handle has no chain");
	int rc = ckpt__chain_compact_locked(c->dir, c->w->dirfd, keep, above, 1, folded);
	/* Its files were replaced: the next restore opens the chain again. */
	ckpt__chainw_close_reader(c->w);
	return rc;
}

int ckpt__commit_detached(struct ckpt *c, uint64_t *id, int urgent)
{
	ckpt__clear_error();
	if (!c || !c->w || !c->resumable || c->as)
		return ckpt__fail(CKPT_EINVAL, "ckpt run: the handle is not a resumable one "
					       "without CKPT_F_ASYNC");
	if (c->state != H_TRACKING)
		return ckpt__fail(CKPT_ESTATE, "ckpt run: not tracking");
	ckpt__lazy_finish();
	/* Every program thread stopped, none in ckpt's code or the dynamic
	 * linker's: a thread caught there is let go and all are stopped
	 * again a moment later. */
	int rc = 0, tid = 0;
	uint64_t t_stop;
	for (int attempt = 0;; attempt++) {
		t_stop = ckpt__now_ns();
		rc = ckpt__threads_stop();
		if (rc)
			return rc;
		if (!(tid = ckpt__threads_unsafe()))
			break;
		ckpt__threads_go();
		if (attempt == 1000)
			return ckpt__fail(CKPT_EBUSY, "ckpt run: thread %d stayed inside ckpt or the "
						      "dynamic linker, or held the loader's lock, for "
						      "a second; no commit",
					  tid);
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	ckpt__lazy_handover();
	struct ckpt__pbuf b = {0};
	for (size_t i = 0; i < c->excl.n; i++) {
		uint64_t range[2] = {c->excl.r[i].lo, c->excl.r[i].hi};
		ckpt__pbuf_add(&b, CKPT__PE_EXCL, range, sizeof range, NULL, 0);
	}
	/* The record is made with the threads stopped: the files' sizes and
	 * offsets are those of the memory captured (no stdio buffer is
	 * flushed twice or lost), and no lock the record takes is held. */
	rc = ckpt__resume_record_detached(&b, (uintptr_t)c, ckpt__threads_main_fs(), c->w);
	if (rc)
		rc = ckpt__fail(rc == CKPT_ENOMEM ? rc : CKPT_EIO,
				"ckpt run: cannot record the process: %s", ckpt_last_error());
	if (!rc && (rc = ckpt__threads_record(&b, 0)) != 0)
		rc = ckpt__fail(rc, "ckpt run: cannot record the threads");
	if (!rc)
		rc = ckpt__pipes_record(&b, NULL);
	if (!rc) {
		c->w->proc = b.p;
		c->w->proc_size = b.n;
		/* A commit that is not urgent is compressed by one worker, at
		 * a low priority: a single-threaded program keeps a core. */
		c->w->workers = urgent ? 0 : 1;
		struct ckpt__pending *pd = ckpt__mem_alloc(sizeof *pd);
		if (!pd)
			rc = ckpt__fail(CKPT_ENOMEM, "ckpt run: out of memory");
		/* This thread is ckpt's, not the program's. */
		else if (!(rc = ckpt__commit_prepare(c->w, pd, 1))) {
			pd->t0 = t_stop; /* the program's pause, from the stop */
			/* Written by a child when there is much to copy into
			 * memory not faulted in yet; else copied. */
			size_t bytes = ckpt__stage_bytes(&pd->pl);
			int nice = urgent ? 0 : RUN_NICE;
			if (bytes > RS.cap && bytes > RUN_COLD_COPY_MAX &&
			    run_forked_write(c->w, pd, bytes, nice, &rc)) {
				c->run_writer = "fork";
				ckpt__commit_finish(c->w, pd, rc, id);
			} else {
				rc = run_copied_write(c, pd, bytes, nice, id);
			}
		}
		c->w->workers = 0;
		if (pd)
			ckpt__mem_free(pd, sizeof *pd);
		c->w->proc = NULL;
		c->w->proc_size = 0;
	}
	ckpt__threads_go();
	ckpt__pbuf_free(&b);
	if (!rc)
		c->commits++;
	return rc;
}

CKPT_API int ckpt_commit(ckpt_t *c, uint64_t *id)
{
	ckpt__clear_error();
	if (!c)
		return ckpt__fail(CKPT_EINVAL, "ckpt_commit: handle is NULL");
	if (!c->w)
		return ckpt__fail(CKPT_EINVAL, "ckpt_commit: the handle was opened without a directory");
	if (c->state != H_TRACKING)
		return ckpt__fail(CKPT_ESTATE, "ckpt_commit: not tracking (call ckpt_begin first)");
	/* Every page of a lazy resume filled first: they are what the
	 * commit reads (and, clean, what it leaves out). */
	ckpt__lazy_finish();
	if (c->resumable) {
		int rc = commit_resumable(c, id);
		if (rc == 0 && !c->as)
			c->commits++;
		return rc;
	}
	if (c->named) {
		/* The regions must still be there; the record names them. */
		struct ckpt__rset spans = {0};
		int rc = ckpt__named_spans(c->named, &spans, 0, "ckpt_commit");
		ckpt__rset_free(&spans);
		if (rc)
			return rc;
		c->w->proc = c->named->rec.p;
		c->w->proc_size = c->named->rec.n;
	}
	if (c->as)
		return ckpt__async_commit(c->as, c->w, id);
	int rc = ckpt__commit(c->w, id);
	if (rc == 0)
		c->commits++;
	return rc;
}

CKPT_API int ckpt_wait(ckpt_t *c, uint64_t *id)
{
	ckpt__clear_error();
	if (!c)
		return ckpt__fail(CKPT_EINVAL, "ckpt_wait: handle is NULL");
	ckpt__lazy_finish();
	int rc = 0;
	if (c->as) {
		ckpt__async_settle(c->as, c->w);
		rc = ckpt__async_report(c->as);
	}
	if (id)
		*id = c->w ? c->w->latest : 0;
	return rc;
}

CKPT_API int ckpt_restore(ckpt_t *c, uint64_t id)
{
	ckpt__clear_error();
	if (!c)
		return ckpt__fail(CKPT_EINVAL, "ckpt_restore: handle is NULL");
	if (!c->w)
		return ckpt__fail(CKPT_EINVAL, "ckpt_restore: the handle was opened without a directory");
	if (id == 0)
		return ckpt__fail(CKPT_EINVAL, "ckpt_restore: snapshot ids start at 1");
	if (c->named) {
		settle(c);
		ckpt__lazy_handover();
		return ckpt__named_restore(c->w, c->named, id == CKPT_LATEST ? c->w->latest : id, -1,
					   "ckpt_restore");
	}
	if (c->state != H_TRACKING)
		return ckpt__fail(CKPT_ESTATE, "ckpt_restore: not tracking (call ckpt_begin first)");
	settle(c);
	/* Other threads are quiescent (see ckpt.h). */
	ckpt__lazy_handover();
	return ckpt__restore(c->w, id, (c->opt.flags & CKPT_F_SHADOW) != 0, &c->restored);
}

/* Whether c can name regions now: a handle with a directory, not a resume
 * handle (`resume_rc` then), not tracking. */
static int named_usable(struct ckpt *c, const char *who, int resume_rc)
{
	if (!c)
		return ckpt__fail(CKPT_EINVAL, "%s: handle is NULL", who);
	if (c->resumable)
		return ckpt__fail(resume_rc, "%s: a CKPT_F_RESUME handle saves the whole process; it "
					     "names no regions", who);
	if (!c->w)
		return ckpt__fail(CKPT_EINVAL, "%s: the handle was opened without a directory", who);
	if (c->state == H_TRACKING)
		return ckpt__fail(CKPT_ESTATE, "%s: regions are named before ckpt_begin", who);
	return 0;
}

CKPT_API int ckpt_protect(ckpt_t *c, const char *name, void *addr, size_t len)
{
	ckpt__clear_error();
	if (c && !name)
		return ckpt__fail(CKPT_EINVAL, "ckpt_protect: name is NULL");
	int rc = named_usable(c, "ckpt_protect", CKPT_ESTATE);
	if (!rc)
		rc = ckpt__named_add(&c->named, name, addr, len);
	if (rc || !c->named->from)
		return rc;
	/* ckpt_protect_from: the region comes back at once. */
	settle(c);
	rc = ckpt__named_restore(c->w, c->named, c->named->from, (long)c->named->n - 1,
				 "ckpt_protect");
	if (rc)
		c->named->n--; /* left as it was, and not named */
	return rc;
}

CKPT_API int ckpt_protect_from(ckpt_t *c, uint64_t id)
{
	ckpt__clear_error();
	int rc = named_usable(c, "ckpt_protect_from", CKPT_EINVAL);
	if (rc)
		return rc;
	if (id == 0)
		return ckpt__fail(CKPT_EINVAL, "ckpt_protect_from: snapshot ids start at 1");
	settle(c);
	if (id == CKPT_LATEST)
		id = c->w->latest;
	if (!id)
		return ckpt__fail(CKPT_ENOENT, "ckpt_protect_from: the chain in %s is empty", c->dir);
	/* The snapshot's metadata now; the regions already named must be in it. */
	rc = ckpt__named_match(c->w, c->named, id, 0, "ckpt_protect_from");
	if (rc)
		return rc;
	if ((rc = ckpt__named_alloc(&c->named)) != 0)
		return rc;
	/* Regions named before come back now. */
	for (size_t i = 0; i < c->named->n && !rc; i++)
		rc = ckpt__named_restore(c->w, c->named, id, (long)i, "ckpt_protect_from");
	if (!rc)
		c->named->from = id;
	return rc;
}
