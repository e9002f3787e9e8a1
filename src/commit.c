/*
 * commit.c - a handle's snapshot chain on disk: opening it, committing.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A commit turns a capture (capture.c) into a plan for the writer: the
 * mapping table, each mapping with the snapshot it was born in, and the
 * runs to store.  Memory that has been tracked without a break since the
 * newest snapshot stores only the pages that changed; everything else
 * (the first snapshot, memory that appeared or came back, pinned memory)
 * stores every page that holds data.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "commit.h"
#include "compress.h"
#include "dir.h"
#include "shadow.h"
#include "error.h"
#include "mem.h"
#include "track.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the directory -------------------------------------------------------------- */

static int count_snapshot(const char *name, unsigned type, void *arg)
{
	(void)type;
	uint64_t id;
	*(int *)arg += ckpt__snap_name_parse(name, &id) == CKPT__NAME_SNAP;
	return 0;
}

struct clear_ctx {
	int dirfd;
	int snapshots; /* 0: the files of an unfinished commit; 1: snapshots too */
};

static int remove_file(const char *name, unsigned type, void *arg)
{
	(void)type;
	const struct clear_ctx *cc = arg;
	uint64_t id;
	int kind = ckpt__snap_name_parse(name, &id);
	if (kind == CKPT__NAME_TEMP)
		unlinkat(cc->dirfd, name, 0);
	else if (cc->snapshots && kind == CKPT__NAME_SNAP && unlinkat(cc->dirfd, name, 0) != 0)
		return ckpt__from_errno(errno);
	return 0;
}

int ckpt__chainw_open(struct ckpt__chainw *w, const char *dir, int mode, int level,
		      unsigned threads)
{
	int overwrite = mode == CKPT__CW_OVERWRITE;
	memset(w, 0, sizeof *w);
	w->dirfd = w->lockfd = -1;
	w->level = level;
	w->threads = threads;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return ckpt__fail(ckpt__from_errno(errno), "ckpt_open: cannot create %s: %s", dir,
				  strerror(errno));
	/* Only a directory nobody else could write into (dir.c): with
	 * CKPT_F_RESUME, what it holds becomes this process. */
	int rc = ckpt__chain_dir_open(dir, "ckpt_open: ", &w->dirfd);
	if (rc)
		return rc;
	/* One writer per chain. */
	w->lockfd = openat(w->dirfd, CKPT__LOCK_NAME, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
			   0600);
	if (w->lockfd < 0)
		rc = ckpt__fail(ckpt__from_errno(errno), "ckpt_open: %s/%s: %s", dir, CKPT__LOCK_NAME,
				strerror(errno));
	else if (flock(w->lockfd, LOCK_EX | LOCK_NB) != 0)
		rc = ckpt__fail(errno == EWOULDBLOCK ? CKPT_EBUSY : ckpt__from_errno(errno),
				"ckpt_open: %s is in use by another process", dir);
	int n = 0;
	if (!rc)
		rc = ckpt__dir_foreach(w->dirfd, count_snapshot, &n);
	if (!rc && n && mode == CKPT__CW_CONTINUE)
		w->existing = (unsigned)n;
	else if (!rc && n && !overwrite)
		rc = ckpt__fail(CKPT_EEXIST,
				"ckpt_open: %s already holds a chain of %d snapshot(s); it is kept "
				"(CKPT_F_OVERWRITE starts a new one)",
				dir, n);
	struct clear_ctx cc = {w->dirfd, overwrite};
	if (!rc && (rc = ckpt__dir_foreach(w->dirfd, remove_file, &cc)) != 0)
		rc = ckpt__fail(rc, "ckpt_open: cannot clear %s", dir);
	if (!rc && overwrite && fsync(w->dirfd) != 0)
		rc = ckpt__fail(ckpt__from_errno(errno), "ckpt_open: %s: %s", dir, strerror(errno));
	if (!rc && getrandom(w->chain_id, sizeof w->chain_id, 0) != sizeof w->chain_id)
		rc = ckpt__fail(CKPT_EIO, "ckpt_open: no random bytes for a chain id");
	if (!rc)
		ckpt__exe_identity(w->exe, sizeof w->exe, w->build_id, &w->build_id_len);
	if (rc)
		ckpt__chainw_close(w);
	return rc;
}

int ckpt__chainw_take_over(struct ckpt__chainw *w, const struct ckpt__snap *s)
{
	w->latest = s->h.id;
	memcpy(w->chain_id, s->h.chain_id, 16);
	w->nlct = 0;
	if (ckpt__mem_grow((void **)&w->lct, &w->lct_cap, s->nmaps ? s->nmaps : 1, sizeof *w->lct))
		return CKPT_ENOMEM;
	char name[PATH_MAX];
	for (size_t i = 0; i < s->nmaps; i++) {
		const struct ckpt__fmap *f = &s->maps[i];
		ckpt__snap_str(s, f->name_off, f->name_len, name, sizeof name);
		w->lct[w->nlct++] = (struct ckpt__wmap){
			.start = f->start, .end = f->end, .offset = f->offset, .inode = f->inode,
			.born = f->born, .dev_major = f->dev_major, .dev_minor = f->dev_minor,
			.prot = f->prot, .flags = f->flags, .kind = f->kind,
			.page_shift = f->page_shift, .keep_off = f->keep_off,
			.keep_len = f->keep_len, .name = ckpt__track_intern(name),
		};
	}
	return 0;
}

void ckpt__chainw_close_reader(struct ckpt__chainw *w)
{
	if (w->rd_open)
		ckpt__chain_close(&w->rd);
	w->rd_open = 0;
}

void ckpt__chainw_close(struct ckpt__chainw *w)
{
	ckpt__chainw_close_reader(w);
	if (w->lockfd >= 0)
		close(w->lockfd);
	if (w->dirfd >= 0)
		close(w->dirfd);
	w->lockfd = w->dirfd = -1;
	ckpt__mem_array_free((void **)&w->lct, &w->lct_cap, sizeof *w->lct);
	w->nlct = 0;
}

/* ---- the executable ----------------------------------------------------------- */

struct bid_ctx {
	unsigned char *bid;
	size_t *len;
};

int ckpt__phdr_build_id(const struct dl_phdr_info *info, unsigned char *bid, size_t *len)
{
	*len = 0;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_NOTE)
			continue;
		const char *p = (const char *)(info->dlpi_addr + ph->p_vaddr), *end = p + ph->p_memsz;
		while (p + sizeof(ElfW(Nhdr)) <= end) {
			const ElfW(Nhdr) *nh = (const void *)p;
			const char *name = p + sizeof *nh;
			const unsigned char *desc =
				(const unsigned char *)name + ((nh->n_namesz + 3) & ~3u);
			if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && !memcmp(name, "GNU", 4) &&
			    nh->n_descsz <= 64) {
				memcpy(bid, desc, nh->n_descsz);
				*len = nh->n_descsz;
				return 1;
			}
			p = (const char *)desc + ((nh->n_descsz + 3) & ~3u);
		}
	}
	return 0;
}

static int find_build_id(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	struct bid_ctx *b = arg;
	/* The first object is the executable. */
	ckpt__phdr_build_id(info, b->bid, b->len);
	return 1;
}

void ckpt__exe_identity(char *path, size_t pathsz, unsigned char *bid, size_t *bidlen)
{
	ssize_t n = readlink("/proc/self/exe", path, pathsz - 1);
	path[n > 0 ? n : 0] = '\0';
	*bidlen = 0;
	struct bid_ctx b = {bid, bidlen};
	dl_iterate_phdr(find_build_id, &b);
}

/* ---- commit ----------------------------------------------------------------------- */

static int add_map(struct ckpt__plan *pl, const struct ckpt__piece *p, uintptr_t lo, uintptr_t hi,
		   uint64_t born)
{
	if (ckpt__mem_grow((void **)&pl->maps, &pl->maps_cap, pl->nmaps + 1, sizeof *pl->maps))
		return CKPT_ENOMEM;
	struct ckpt__wmap *m = &pl->maps[pl->nmaps++];
	memset(m, 0, sizeof *m);
	m->start = lo;
	m->end = hi;
	m->offset = p->offset + (lo - p->start);
	m->inode = p->inode;
	m->dev_major = p->dev_major;
	m->dev_minor = p->dev_minor;
	m->born = born;
	m->prot = p->prot;
	m->flags = ((p->flags & CKPT__RG_SHARED) ? CKPT__MF_SHARED : 0) |
		   ((p->flags & CKPT__RG_ANON) ? CKPT__MF_ANON : 0) | (p->heap ? CKPT__MF_HEAP : 0);
	m->kind = (unsigned)p->kind;
	m->page_shift = p->pgshift;
	if (p->kind == 3 && p->keep_lo < hi && p->keep_hi > lo) {
		uintptr_t a = p->keep_lo > lo ? p->keep_lo : lo, b = p->keep_hi < hi ? p->keep_hi : hi;
		m->keep_off = (uint32_t)(a - lo);
		m->keep_len = (uint32_t)(b - a);
	}
	m->name = p->name;
	return 0;
}

/* Adds DATA candidate runs for set ∩ [lo, hi). */
static int add_runs(struct ckpt__plan *pl, const struct ckpt__rset *set, uintptr_t lo, uintptr_t hi)
{
	for (size_t i = ckpt__rset_lower(set, lo); i < set->n && set->r[i].lo < hi; i++) {
		uintptr_t a = set->r[i].lo > lo ? set->r[i].lo : lo;
		uintptr_t b = set->r[i].hi < hi ? set->r[i].hi : hi;
		if (a >= b)
			continue;
		if (ckpt__mem_grow((void **)&pl->runs, &pl->runs_cap, pl->nruns + 1, sizeof *pl->runs))
			return CKPT_ENOMEM;
		pl->runs[pl->nruns++] =
			(struct ckpt__wrun){a, (b - a) >> ckpt__pageshift, CKPT__RK_DATA, 0};
	}
	return 0;
}

/* The born value of [lo, hi) if the newest snapshot held it with the same
 * identity; 0 if it did not (then it is new). */
static uint64_t born_of(const struct ckpt__chainw *w, const struct ckpt__piece *p, uintptr_t lo,
			uintptr_t *hi)
{
	size_t i = CKPT__FIRST_ENDING_AFTER(w->lct, w->nlct, end, lo);
	if (i == w->nlct || w->lct[i].start > lo) {
		/* Not held: new up to the next held mapping. */
		if (i < w->nlct && w->lct[i].start < *hi)
			*hi = w->lct[i].start;
		return 0;
	}
	const struct ckpt__wmap *m = &w->lct[i];
	if (m->end < *hi)
		*hi = m->end;
	int same = m->inode == p->inode && m->dev_major == p->dev_major &&
		   m->dev_minor == p->dev_minor &&
		   (p->inode == 0 || m->offset + (lo - m->start) == p->offset + (lo - p->start)) &&
		   (unsigned)m->kind == (unsigned)p->kind;
	return same ? m->born : 0;
}

/* Copies the unreadable pages the plan stores through /proc/self/mem. */
static int stage_unreadable(struct ckpt__plan *pl, const struct ckpt__rset *unreadable)
{
	if (!unreadable->n)
		return 0;
	int fd = -1, rc = 0;
	for (size_t i = 0; i < pl->nruns && !rc; i++) {
		struct ckpt__wrun *r = &pl->runs[i];
		uintptr_t end = r->start + (r->npages << ckpt__pageshift);
		if (!ckpt__rset_overlaps(unreadable, r->start, end))
			continue;
		size_t bytes = r->npages << ckpt__pageshift;
		if (pl->stage_used + bytes > pl->stage_bytes) {
			size_t nb = (pl->stage_used + bytes) * 2;
			char *n = ckpt__mem_alloc(nb);
			if (!n) {
				rc = CKPT_ENOMEM;
				break;
			}
			if (pl->stage) {
				memcpy(n, pl->stage, pl->stage_used);
				/* Runs staged before point into the old buffer. */
				for (size_t k = 0; k < i; k++)
					if (pl->runs[k].src >= (uintptr_t)pl->stage &&
					    pl->runs[k].src < (uintptr_t)pl->stage + pl->stage_bytes)
						pl->runs[k].src = (uintptr_t)n +
								  (pl->runs[k].src - (uintptr_t)pl->stage);
				ckpt__mem_free(pl->stage, pl->stage_bytes);
			}
			pl->stage = n;
			pl->stage_bytes = nb;
		}
		if (fd < 0 && (fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC)) < 0) {
			rc = ckpt__from_errno(errno);
			break;
		}
		if (pread(fd, pl->stage + pl->stage_used, bytes, (off_t)r->start) != (ssize_t)bytes) {
			rc = ckpt__fail(CKPT_EIO, "cannot read the unreadable pages at %#lx",
					(unsigned long)r->start);
			break;
		}
		r->src = (uintptr_t)pl->stage + pl->stage_used;
		pl->stage_used += bytes;
	}
	if (fd >= 0)
		close(fd);
	return rc;
}

/* CKPT_F_SHADOW without faults: the mirror takes every page just stored. */
static void mirror_runs(const struct ckpt__plan *pl)
{
	size_t ps = ckpt__pagesize;
	for (size_t i = 0; i < pl->nruns; i++) {
		const struct ckpt__wrun *r = &pl->runs[i];
		if (r->kind != CKPT__RK_DATA)
			continue;
		for (size_t k = 0; k < r->npages; k++) {
			uintptr_t a = r->start + k * ps;
			ckpt__shadow_store(a, (const void *)(r->src ? r->src + k * ps : a));
		}
	}
}

static void plan_free(struct ckpt__plan *pl)
{
	ckpt__mem_array_free((void **)&pl->maps, &pl->maps_cap, sizeof *pl->maps);
	ckpt__mem_array_free((void **)&pl->runs, &pl->runs_cap, sizeof *pl->runs);
	if (pl->stage)
		ckpt__mem_free(pl->stage, pl->stage_bytes);
	pl->stage = NULL;
}

/* ---- the phases of a commit ------------------------------------------------------------
 * prepare (workers, capture, plan) → write (may run on another thread) →
 * finish (the tracker and the handle learn the outcome).  ckpt__commit runs
 * them in a row; async.c hands the write to a thread of its own. */

int ckpt__commit_prepare(struct ckpt__chainw *w, struct ckpt__pending *pd, unsigned own_threads)
{
	memset(pd, 0, sizeof *pd);
	pd->t0 = ckpt__now_ns();
	/* The compression workers first (see struct ckpt__workers). */
	struct ckpt__workers *wk = ckpt__mem_alloc(sizeof *wk);
	if (!wk)
		return ckpt__fail(CKPT_ENOMEM, "ckpt_commit: out of memory");
	ckpt__workers_start(wk, w->workers ? w->workers : w->threads > 1 ? w->threads : 0);
	pd->wk = wk;
	struct ckpt__capture *cap = &pd->cap;
	struct ckpt__plan *pl = &pd->pl;
	int rc = ckpt__track_capture(cap);
	if (rc) {
		ckpt__commit_workers_stop(pd);
		ckpt__capture_free(cap);
		return rc;
	}
	/* They are ckpt's, not the program's. */
	own_threads += wk->n;
	if (cap->nthreads > own_threads)
		cap->nthreads -= own_threads;
	uint64_t id = w->latest + 1;
	pd->id = id;
	for (size_t i = 0; i < cap->n && !rc; i++) {
		const struct ckpt__piece *p = &cap->p[i];
		for (uintptr_t lo = p->start; lo < p->end && !rc;) {
			uintptr_t hi = p->end;
			uint64_t born = p->fresh || p->kind != 1 ? 0 : born_of(w, p, lo, &hi);
			rc = add_map(pl, p, lo, hi, born ? born : id);
			/* New: every page that holds data; held: what changed. */
			if (!rc)
				rc = add_runs(pl, born ? &cap->changed : &cap->data, lo, hi);
			lo = hi;
		}
	}
	if (!rc)
		rc = stage_unreadable(pl, &cap->unreadable);
	if (rc == CKPT_ENOMEM)
		rc = ckpt__fail(rc, "ckpt_commit: out of memory planning the snapshot");
	if (rc) {
		ckpt__commit_workers_stop(pd);
		ckpt__commit_finish(w, pd, rc, NULL);
		return rc;
	}
	pd->wp = (struct ckpt__wplan){
		.id = id, .parent = w->latest,
		.flags = w->latest ? 0 : CKPT__SF_BASE,
		.page_size = (uint32_t)ckpt__pagesize, .nthreads = cap->nthreads,
		.exe = w->exe, .build_id = w->build_id, .build_id_len = w->build_id_len,
		.maps = pl->maps, .nmaps = pl->nmaps, .runs = pl->runs, .nruns = pl->nruns,
		.level = w->level, .threads = w->workers ? w->workers : w->threads, .workers = wk,
		.proc = w->proc, .proc_size = w->proc_size,
	};
	memcpy(pd->wp.chain_id, w->chain_id, 16);
	return 0;
}

int ckpt__commit_write(int dirfd, struct ckpt__pending *pd)
{
	int rc = ckpt__snap_write(dirfd, &pd->wp, &pd->res);
	ckpt__commit_workers_stop(pd);
	return rc;
}

void ckpt__commit_workers_stop(struct ckpt__pending *pd)
{
	if (!pd->wk)
		return;
	ckpt__workers_stop(pd->wk);
	ckpt__mem_free(pd->wk, sizeof *pd->wk);
	pd->wk = NULL;
}

void ckpt__commit_finish(struct ckpt__chainw *w, struct ckpt__pending *pd, int rc,
			 uint64_t *id_out)
{
	struct ckpt__plan *pl = &pd->pl;
	struct ckpt__capture *cap = &pd->cap;
	if (rc && pd->settled) {
		/* The tracker was told already (an async commit): take it back. */
		ckpt__track_capture_revert(cap);
	} else if (rc) {
		ckpt__track_capture_undo(cap);
	} else {
		if (ckpt__shadow_mirror())
			mirror_runs(pl);
		if (!pd->settled)
			ckpt__track_capture_done(cap);
		w->latest = pd->id;
		/* The newest table, for the next commit's "born" values. */
		struct ckpt__wmap *old = w->lct;
		size_t oldcap = w->lct_cap;
		w->lct = pl->maps;
		w->nlct = pl->nmaps;
		w->lct_cap = pl->maps_cap;
		pl->maps = old;
		pl->maps_cap = oldcap;
		struct ckpt__wresult *res = &pd->res;
		w->last = (struct ckpt__commit_stats){
			.id = pd->id, .pause_ns = pd->pause_ns ? pd->pause_ns : ckpt__now_ns() - pd->t0,
			.capture_ns = cap->ns, .wait_ns = pd->wait_ns,
			.staged_bytes = pd->staged_bytes,
			.compress_ns = res->compress_ns, .write_ns = res->write_ns,
			.sync_ns = res->sync_ns, .pages = res->data_pages, .zero_pages = res->zero_pages,
			.file_pages = res->file_pages, .raw_bytes = res->raw_bytes,
			.stored_bytes = res->stored_bytes, .file_bytes = res->file_bytes,
		};
		if (id_out)
			*id_out = pd->id;
	}
	plan_free(pl);
	ckpt__capture_free(cap);
}

int ckpt__commit(struct ckpt__chainw *w, uint64_t *id_out)
{
	struct ckpt__pending *pd = ckpt__mem_alloc(sizeof *pd);
	if (!pd)
		return ckpt__fail(CKPT_ENOMEM, "ckpt_commit: out of memory");
	int rc = ckpt__commit_prepare(w, pd, 0);
	if (!rc) {
		rc = ckpt__commit_write(w->dirfd, pd);
		ckpt__commit_finish(w, pd, rc, id_out);
	}
	ckpt__mem_free(pd, sizeof *pd);
	return rc;
}

int ckpt__chainw_adopt(struct ckpt__chainw *w, const char *dir)
{
	int fd = dup(w->dirfd);
	if (fd < 0)
		return ckpt__fail(ckpt__from_errno(errno), "ckpt_open: %s: %s", dir, strerror(errno));
	int rc = ckpt__chain_open(&w->rd, dir, fd);
	if (rc)
		return rc;
	w->rd_open = 1;
	if (!w->rd.n)
		return ckpt__fail(CKPT_ECORRUPT, "ckpt_open: %s holds snapshots but no chain", dir);
	if (ckpt__chainw_take_over(w, &w->rd.snaps[w->rd.n - 1]))
		return ckpt__fail(CKPT_ENOMEM, "ckpt_open: out of memory");
	return 0;
}

int ckpt__chainw_reader(struct ckpt__chainw *w, struct ckpt__chain **out)
{
	*out = NULL;
	if (!w->latest)
		return ckpt__fail(CKPT_ENOENT, "the chain has no snapshot yet");
	struct ckpt__chain *c = &w->rd;
	if (w->rd_open && c->n && c->snaps[c->n - 1].h.id == w->latest) {
		*out = c;
		return 0;
	}
	if (w->rd_open && c->n && c->snaps[c->n - 1].h.id + 1 == w->latest) {
		/* Open just the snapshot that was added. */
		if (ckpt__mem_grow((void **)&c->snaps, &c->cap, c->n + 1, sizeof *c->snaps) == 0) {
			char name[48];
			snprintf(name, sizeof name, CKPT__SNAP_FMT, (unsigned long long)w->latest);
			struct ckpt__snap *s = &c->snaps[c->n];
			const struct ckpt__snap *p = &c->snaps[c->n - 1];
			int rc = ckpt__snap_open(s, c->dirfd, name);
			if (rc)
				return rc;
			/* The checks a whole chain's opening makes: a file put
			 * in its place must not be read with the chain's buffers. */
			if (s->h.id != w->latest || s->h.parent != p->h.id ||
			    (s->h.flags & CKPT__SF_BASE))
				rc = ckpt__fail(CKPT_ECORRUPT, "%s: not snapshot %llu of this chain",
						name, (unsigned long long)w->latest);
			else if (memcmp(s->h.chain_id, p->h.chain_id, 16))
				rc = ckpt__fail(CKPT_EFOREIGN, "%s: belongs to another chain", name);
			else if (s->h.page_size != p->h.page_size)
				rc = ckpt__fail(CKPT_EFOREIGN, "%s: page size %u, its parent %u", name,
						s->h.page_size, p->h.page_size);
			if (rc) {
				ckpt__snap_close(s);
				return rc;
			}
			c->n++;
			*out = c;
			return 0;
		}
	}
	if (w->rd_open)
		ckpt__chain_close(c);
	w->rd_open = 0;
	int fd = dup(w->dirfd);
	if (fd < 0)
		return ckpt__fail(ckpt__from_errno(errno), "cannot reopen the chain: %s",
				  strerror(errno));
	int rc = ckpt__chain_open(c, "chain", fd);
	if (rc)
		return rc;
	w->rd_open = 1;
	*out = c;
	return 0;
}
