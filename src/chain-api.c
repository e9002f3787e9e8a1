/*
 * chain-api.c - the public read-only view of a chain (ckpt_chain_*), its
 * verification and its compaction.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ckpt.h"
#include "commit.h"
#include "dir.h"
#include "error.h"
#include "mem.h"
#include "named.h"
#include "proc.h"
#include "rangeset.h"
#include "snap-read.h"
#include "snap-write.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

struct ckpt_chain {
	struct ckpt__chain c;
	char **exe;     /* per snapshot, made on demand */
	char *cwd;      /* ckpt_chain_launch's */
	size_t nexe;
	/* The last block decompressed, for reads page after page. */
	const struct ckpt__snap *cache_snap;
	uint32_t cache_block;
	int cache_ok;
};

CKPT_API int ckpt_chain_open(ckpt_chain **out, const char *dir)
{
	ckpt__clear_error();
	if (!out || !dir)
		return ckpt__fail(CKPT_EINVAL, "ckpt_chain_open: %s is NULL", out ? "dir" : "out");
	*out = NULL;
	struct ckpt_chain *ch = ckpt__mem_alloc(sizeof *ch);
	if (!ch)
		return ckpt__fail(CKPT_ENOMEM, "ckpt_chain_open: out of memory");
	int rc = ckpt__chain_open(&ch->c, dir, -1);
	if (!rc && ch->c.dirfd < 0 && access(dir, F_OK) != 0)
		rc = ckpt__fail(CKPT_ENOENT, "ckpt_chain_open: %s: no such directory", dir);
	if (rc) {
		ckpt__mem_free(ch, sizeof *ch);
		return rc;
	}
	*out = ch;
	return 0;
}

CKPT_API void ckpt_chain_close(ckpt_chain *ch)
{
	if (!ch)
		return;
	for (size_t i = 0; i < ch->nexe; i++)
		if (ch->exe[i])
			ckpt__mem_free(ch->exe[i], 4096);
	if (ch->exe)
		ckpt__mem_free(ch->exe, ch->nexe * sizeof *ch->exe);
	if (ch->cwd)
		ckpt__mem_free(ch->cwd, 4096);
	ckpt__chain_close(&ch->c);
	ckpt__mem_free(ch, sizeof *ch);
}

CKPT_API uint64_t ckpt_chain_first(ckpt_chain *ch)
{
	return ch && ch->c.n ? ch->c.snaps[0].h.id : 0;
}

CKPT_API uint64_t ckpt_chain_latest(ckpt_chain *ch)
{
	return ch && ch->c.n ? ch->c.snaps[ch->c.n - 1].h.id : 0;
}

static const struct ckpt__snap *find(ckpt_chain *ch, uint64_t id, const char *who)
{
	if (!ch) {
		ckpt__fail(CKPT_EINVAL, "%s: chain is NULL", who);
		return NULL;
	}
	const struct ckpt__snap *s = ckpt__chain_find(&ch->c, id);
	if (!s)
		ckpt__fail(CKPT_ENOENT, "%s: no snapshot %llu in the chain", who,
			   (unsigned long long)id);
	return s;
}

static int is_ctx(uint32_t type, const unsigned char *p, size_t len, void *arg)
{
	(void)p;
	(void)len;
	(void)arg;
	return type == CKPT__PE_CTX;
}

/* Whether s has the registers a resume needs: a record of named regions
 * alone is not a resumable one. */
static int has_ctx(const struct ckpt__snap *s)
{
	return s->proc && ckpt__proc_walk(s->proc, s->proc_size, is_ctx, NULL) == 1;
}

static void hex(char *out, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", p[i]);
	out[2 * n] = '\0';
}

CKPT_API int ckpt_chain_info(ckpt_chain *ch, uint64_t id, ckpt_snapshot_info *out)
{
	ckpt__clear_error();
	if (!out)
		return ckpt__fail(CKPT_EINVAL, "ckpt_chain_info: out is NULL");
	const struct ckpt__snap *s = find(ch, id, "ckpt_chain_info");
	if (!s)
		return ch ? CKPT_ENOENT : CKPT_EINVAL;
	memset(out, 0, sizeof *out);
	out->id = s->h.id;
	out->parent = s->h.parent;
	out->time_ns = s->h.time_ns;
	out->base = (s->h.flags & CKPT__SF_BASE) != 0;
	out->resumable = has_ctx(s) && !(s->h.flags & CKPT__SF_NOT_RESUMABLE);
	out->page_size = s->h.page_size;
	out->threads = s->h.nthreads;
	out->mappings = s->nmaps;
	out->runs = s->nruns;
	out->blocks = s->nblocks;
	out->data_pages = s->h.data_pages;
	out->zero_pages = s->h.zero_pages;
	out->file_pages = s->h.file_pages;
	out->raw_bytes = s->h.raw_bytes;
	for (size_t i = 0; i < s->nblocks; i++)
		out->stored_bytes += s->blocks[i].csize;
	out->file_bytes = s->size;
	hex(out->chain_id, s->h.chain_id, 16);
	hex(out->build_id, (const unsigned char *)s->strings + s->h.bid_off,
	    s->h.bid_len <= 64 ? s->h.bid_len : 64);
	out->file = s->name;
	size_t idx = (size_t)(s - ch->c.snaps);
	if (!ch->exe) {
		ch->nexe = ch->c.n;
		ch->exe = ckpt__mem_alloc(ch->nexe * sizeof *ch->exe);
	}
	if (ch->exe && idx < ch->nexe && !ch->exe[idx] && (ch->exe[idx] = ckpt__mem_alloc(4096)))
		ckpt__snap_str(s, s->h.exe_off, s->h.exe_len, ch->exe[idx], 4096);
	out->exe = ch->exe && ch->exe[idx] ? ch->exe[idx] : "";
	return 0;
}

struct launch_walk {
	ckpt_launch_info *out;
	char *cwd;
};

static int launch_entry(uint32_t type, const unsigned char *p, size_t len, void *arg)
{
	struct launch_walk *lw = arg;
	if (type == CKPT__PE_ARGV) {
		lw->out->argv = (const char *)p;
		lw->out->argv_len = len;
	} else if (type == CKPT__PE_ENV) {
		lw->out->env = (const char *)p;
		lw->out->env_len = len;
	} else if (type == CKPT__PE_CWD && len < 4096) {
		memcpy(lw->cwd, p, len);
		lw->cwd[len] = '\0';
		lw->out->cwd = lw->cwd;
	}
	return 0;
}

CKPT_API int ckpt_chain_launch(ckpt_chain *ch, uint64_t id, ckpt_launch_info *out)
{
	ckpt_snapshot_info si;
	ckpt__clear_error();
	if (!out)
		return ckpt__fail(CKPT_EINVAL, "ckpt_chain_launch: out is NULL");
	memset(out, 0, sizeof *out);
	int rc = ckpt_chain_info(ch, id, &si);
	if (rc)
		return rc;
	const struct ckpt__snap *s = ckpt__chain_find(&ch->c, id);
	if (!s->proc && (s->h.flags & CKPT__SF_BASE) && s->h.id > 1)
		return ckpt__fail(CKPT_ENOENT, "%s, a base made by ckpt compact, holds no process "
					       "record (the snapshot it replaced had none, or an older "
					       "ckpt compact dropped it): it does not say how the "
					       "program was started",
				  s->name);
	if (!s->proc)
		return ckpt__fail(CKPT_ENOENT, "%s was written without CKPT_F_RESUME: it does not "
					       "say how the program was started",
				  s->name);
	if (!ch->cwd && !(ch->cwd = ckpt__mem_alloc(4096)))
		return ckpt__fail(CKPT_ENOMEM, "ckpt_chain_launch: out of memory");
	ch->cwd[0] = '\0';
	out->exe = si.exe;
	out->cwd = "";
	struct launch_walk lw = {out, ch->cwd};
	rc = ckpt__proc_walk(s->proc, s->proc_size, launch_entry, &lw);
	if (!rc && (!out->argv_len || out->argv[out->argv_len - 1] != '\0' ||
		    (out->env_len && out->env[out->env_len - 1] != '\0')))
		rc = ckpt__fail(CKPT_ECORRUPT, "%s: the recorded arguments are malformed", s->name);
	if (rc)
		memset(out, 0, sizeof *out);
	return rc;
}

struct thread_walk {
	int (*fn)(const ckpt_thread_info *t, void *arg);
	void *arg;
	uint64_t rsp, rip; /* the committing thread's, from the CTX entry */
	unsigned n;
};

static int thread_entry(uint32_t type, const unsigned char *p, size_t len, void *arg)
{
	struct thread_walk *tw = arg;
	if (type == CKPT__PE_CTX && len == sizeof(struct ckpt__pctx)) {
		struct ckpt__pctx ctx;
		memcpy(&ctx, p, sizeof ctx);
		tw->rsp = ctx.rsp;
		tw->rip = ctx.rip;
	}
	if (type != CKPT__PE_THREAD)
		return 0;
	struct ckpt__pthread r;
	if (len < sizeof r)
		return ckpt__fail(CKPT_ECORRUPT, "a thread record of %zu bytes", len);
	memcpy(&r, p, sizeof r);
	if (len - sizeof r != r.xsave_len)
		return ckpt__fail(CKPT_ECORRUPT, "a thread record's FPU state is %zu bytes, not %u",
				  len - sizeof r, r.xsave_len);
	char name[sizeof r.name + 1];
	memcpy(name, r.name, sizeof r.name);
	name[sizeof r.name] = '\0';
	int self = (r.flags & CKPT__PT_SELF) != 0;
	ckpt_thread_info t = {
		.tid = r.tid, .flags = self ? CKPT_THREAD_COMMITTER : 0, .name = name,
		.syscall = (long)r.syscall_nr,
		.sp = self ? tw->rsp : r.gregs[CKPT__PT_RSP],
		.ip = self ? tw->rip : r.gregs[CKPT__PT_RIP],
		.stack_lo = r.stack_lo, .stack_hi = r.stack_hi, .fs_base = r.fs_base,
		.sigmask = r.sigmask, .fpu_bytes = r.xsave_len,
	};
	tw->n++;
	return tw->fn(&t, tw->arg);
}

CKPT_API int ckpt_chain_threads(ckpt_chain *ch, uint64_t id,
				int (*fn)(const ckpt_thread_info *t, void *arg), void *arg)
{
	ckpt__clear_error();
	if (!fn)
		return ckpt__fail(CKPT_EINVAL, "ckpt_chain_threads: fn is NULL");
	const struct ckpt__snap *s = find(ch, id, "ckpt_chain_threads");
	if (!s)
		return ch ? CKPT_ENOENT : CKPT_EINVAL;
	if (!s->proc)
		return ckpt__fail(CKPT_ENOENT, "%s holds no process record (not written with "
					       "CKPT_F_RESUME)",
				  s->name);
	struct thread_walk tw = {fn, arg, 0, 0, 0};
	int rc = ckpt__proc_walk(s->proc, s->proc_size, thread_entry, &tw);
	if (!rc && !tw.n)
		return ckpt__fail(CKPT_ENOENT, "%s records no threads (written by an older ckpt)",
				  s->name);
	return rc;
}

static unsigned map_flags(const struct ckpt__fmap *m)
{
	return ((m->flags & CKPT__MF_SHARED) ? CKPT_MAP_SHARED : 0) |
	       ((m->flags & CKPT__MF_ANON) ? CKPT_MAP_ANON : 0) |
	       ((m->flags & CKPT__MF_HEAP) ? CKPT_MAP_HEAP : 0) |
	       (m->kind != CKPT__MK_TRACKED ? CKPT_MAP_PINNED : 0);
}

CKPT_API int ckpt_chain_mappings(ckpt_chain *ch, uint64_t id,
				 int (*fn)(const ckpt_mapping_info *m, void *arg), void *arg)
{
	ckpt__clear_error();
	if (!fn)
		return ckpt__fail(CKPT_EINVAL, "ckpt_chain_mappings: fn is NULL");
	const struct ckpt__snap *s = find(ch, id, "ckpt_chain_mappings");
	if (!s)
		return ch ? CKPT_ENOENT : CKPT_EINVAL;
	char name[4096];
	for (size_t i = 0; i < s->nmaps; i++) {
		const struct ckpt__fmap *m = &s->maps[i];
		ckpt_mapping_info mi = {m->start, m->end, m->prot, map_flags(m), m->born, m->offset,
					m->inode, ckpt__snap_str(s, m->name_off, m->name_len, name,
								  sizeof name)};
		int rc = fn(&mi, arg);
		if (rc)
			return rc;
	}
	return 0;
}

CKPT_API int ckpt_chain_runs(ckpt_chain *ch, uint64_t id,
			     int (*fn)(const ckpt_stored_run *r, void *arg), void *arg)
{
	ckpt__clear_error();
	if (!fn)
		return ckpt__fail(CKPT_EINVAL, "ckpt_chain_runs: fn is NULL");
	const struct ckpt__snap *s = find(ch, id, "ckpt_chain_runs");
	if (!s)
		return ch ? CKPT_ENOENT : CKPT_EINVAL;
	for (size_t i = 0; i < s->nruns; i++) {
		ckpt_stored_run r = {s->runs[i].start, s->runs[i].npages, s->runs[i].kind};
		int rc = fn(&r, arg);
		if (rc)
			return rc;
	}
	return 0;
}

/* One page as of snapshot id, through the block cache.  1 if the page is in
 * no mapping of the snapshot, 0 when copied, or CKPT_E*. */
static int page_at(ckpt_chain *ch, uint64_t id, uintptr_t addr, void *out)
{
	struct ckpt__source src;
	if (ckpt__chain_source(&ch->c, id, addr, &src) != 0)
		return 1;
	size_t ps = ch->c.snaps[0].h.page_size;
	if (src.kind != CKPT__RK_DATA)
		return ckpt__chain_page(&ch->c, id, addr, out);
	if (!ch->cache_ok || ch->cache_snap != src.snap || ch->cache_block != src.run->block) {
		ch->cache_ok = 0;
		int rc = ckpt__snap_block(src.snap, ch->c.dctx, src.run->block, ch->c.blockbuf,
					  ch->c.storedbuf);
		if (rc)
			return rc;
		ch->cache_ok = 1;
		ch->cache_snap = src.snap;
		ch->cache_block = src.run->block;
	}
	size_t page = src.run->block_page + (addr - src.run->start) / ps;
	memcpy(out, (char *)ch->c.blockbuf + page * ps, ps);
	return 0;
}

CKPT_API int ckpt_chain_read(ckpt_chain *ch, uint64_t id, uintptr_t addr, void *buf, size_t len)
{
	ckpt__clear_error();
	if (!buf && len)
		return ckpt__fail(CKPT_EINVAL, "ckpt_chain_read: buf is NULL");
	const struct ckpt__snap *s = find(ch, id, "ckpt_chain_read");
	if (!s)
		return ch ? CKPT_ENOENT : CKPT_EINVAL;
	if (addr + len < addr)
		return ckpt__fail(CKPT_EINVAL, "ckpt_chain_read: %#lx + %zu overflows",
				  (unsigned long)addr, len);
	size_t ps = s->h.page_size;
	char *page = ckpt__mem_alloc(ps);
	if (!page)
		return ckpt__fail(CKPT_ENOMEM, "ckpt_chain_read: out of memory");
	int rc = 0;
	for (size_t done = 0; done < len && !rc;) {
		uintptr_t a = addr + done, pa = a & ~(uintptr_t)(ps - 1);
		size_t n = ps - (a - pa);
		if (n > len - done)
			n = len - done;
		rc = page_at(ch, s->h.id, pa, page);
		if (rc == 1)
			rc = ckpt__fail(CKPT_ENOENT, "ckpt_chain_read: %#lx is not in snapshot %llu",
					(unsigned long)a, (unsigned long long)s->h.id);
		if (!rc)
			memcpy((char *)buf + done, page + (a - pa), n);
		done += n;
	}
	ckpt__mem_free(page, ps);
	return rc;
}

struct diffrun {
	uintptr_t lo, hi;
	uintptr_t map; /* start of the mapping the run is in: runs never span two */
	char name[4096];
	size_t ps;
	int (*fn)(const ckpt_page_run *run, void *arg);
	void *arg;
};

/* Adds [p, p + len), which differs and lies in mapping m of snapshot ns,
 * to the run being built; hands the run to fn when it cannot grow. */
static int diff_add(struct diffrun *run, const struct ckpt__snap *ns, const struct ckpt__fmap *m,
		    uintptr_t p, uintptr_t len)
{
	char name[4096];
	ckpt__snap_str(ns, m ? m->name_off : 0, m ? m->name_len : 0, name, sizeof name);
	uintptr_t mstart = m ? m->start : 0;
	if (run->hi == p && run->lo < run->hi && run->map == mstart && !strcmp(run->name, name)) {
		run->hi = p + len;
		return 0;
	}
	int rc = 0;
	if (run->lo < run->hi) {
		ckpt_page_run pr = {run->lo, (run->hi - run->lo) / run->ps, run->name};
		rc = run->fn(&pr, run->arg);
	}
	run->lo = p;
	run->hi = p + len;
	run->map = mstart;
	memcpy(run->name, name, sizeof name);
	return rc;
}

/* [lo, hi), in the mappings of ns and not in the other snapshot's: it
 * differs whole, without a page read, one stretch per mapping. */
static int diff_one_side(struct diffrun *run, const struct ckpt__snap *ns, uintptr_t lo,
			 uintptr_t hi)
{
	int rc = 0;
	for (size_t i = 0; i < ns->nmaps && !rc; i++) {
		const struct ckpt__fmap *m = &ns->maps[i];
		uintptr_t s = m->start > lo ? m->start : lo, e = m->end < hi ? m->end : hi;
		if (s < e)
			rc = diff_add(run, ns, m, s, e - s);
	}
	return rc;
}

CKPT_API int ckpt_chain_diff(ckpt_chain *ch, uint64_t a, uint64_t b,
			     int (*fn)(const ckpt_page_run *run, void *arg), void *arg)
{
	ckpt__clear_error();
	if (!fn)
		return ckpt__fail(CKPT_EINVAL, "ckpt_chain_diff: fn is NULL");
	const struct ckpt__snap *sa = find(ch, a, "ckpt_chain_diff"), *sb = NULL;
	if (sa)
		sb = find(ch, b, "ckpt_chain_diff");
	if (!sa || !sb)
		return ch ? CKPT_ENOENT : CKPT_EINVAL;
	uint64_t lo = sa->h.id < sb->h.id ? sa->h.id : sb->h.id;
	uint64_t hi = sa->h.id < sb->h.id ? sb->h.id : sa->h.id;
	/* Candidates: every page a snapshot after the older one stored, and
	 * every page of a mapping born since; then the pages in the mappings
	 * of only one of the two (onlya, onlyb), which differ whole: range
	 * arithmetic, never a walk page by page, whatever a mapping's size. */
	struct ckpt__rset cand = {0}, onlya = {0}, onlyb = {0};
	int rc = 0;
	for (uint64_t j = lo + 1; j <= hi && !rc; j++) {
		const struct ckpt__snap *s = ckpt__chain_find(&ch->c, j);
		for (size_t i = 0; i < s->nruns && !rc; i++)
			rc = ckpt__rset_add(&cand, s->runs[i].start,
					    s->runs[i].start + (uint64_t)s->runs[i].npages * s->h.page_size);
		for (size_t i = 0; i < s->nmaps && !rc; i++)
			if (s->maps[i].born > lo)
				rc = ckpt__rset_add(&cand, s->maps[i].start, s->maps[i].end);
	}
	for (size_t i = 0; i < sa->nmaps && !rc; i++)
		rc = ckpt__rset_add(&onlya, sa->maps[i].start, sa->maps[i].end);
	for (size_t i = 0; i < sb->nmaps && !rc; i++)
		rc = ckpt__rset_add(&onlyb, sb->maps[i].start, sb->maps[i].end);
	for (size_t i = 0; i < sb->nmaps && !rc; i++)
		rc = ckpt__rset_del(&onlya, sb->maps[i].start, sb->maps[i].end);
	for (size_t i = 0; i < sa->nmaps && !rc; i++)
		rc = ckpt__rset_del(&onlyb, sa->maps[i].start, sa->maps[i].end);
	for (size_t i = 0; i < onlya.n && !rc; i++)
		rc = ckpt__rset_del(&cand, onlya.r[i].lo, onlya.r[i].hi);
	for (size_t i = 0; i < onlyb.n && !rc; i++)
		rc = ckpt__rset_del(&cand, onlyb.r[i].lo, onlyb.r[i].hi);
	size_t ps = sa->h.page_size;
	char *pa = ckpt__mem_alloc(2 * ps), *pb = pa ? pa + ps : NULL;
	struct diffrun *run = ckpt__mem_alloc(sizeof *run);
	if (!rc && (!pa || !run))
		rc = CKPT_ENOMEM;
	if (rc == CKPT_ENOMEM)
		rc = ckpt__fail(rc, "ckpt_chain_diff: out of memory");
	if (run) {
		run->lo = run->hi = 0;
		run->ps = ps;
		run->fn = fn;
		run->arg = arg;
	}
	/* The three sets are disjoint: merged in address order. */
	size_t ic = 0, ia = 0, ib = 0;
	while (!rc) {
		uintptr_t nc = ic < cand.n ? cand.r[ic].lo : UINTPTR_MAX;
		uintptr_t na = ia < onlya.n ? onlya.r[ia].lo : UINTPTR_MAX;
		uintptr_t nb = ib < onlyb.n ? onlyb.r[ib].lo : UINTPTR_MAX;
		if (nc == UINTPTR_MAX && na == UINTPTR_MAX && nb == UINTPTR_MAX)
			break;
		if (na < nc && na < nb) {
			rc = diff_one_side(run, sa, onlya.r[ia].lo, onlya.r[ia].hi);
			ia++;
			continue;
		}
		if (nb < nc) {
			rc = diff_one_side(run, sb, onlyb.r[ib].lo, onlyb.r[ib].hi);
			ib++;
			continue;
		}
		for (uintptr_t p = cand.r[ic].lo; p < cand.r[ic].hi && !rc; p += ps) {
			int ra = page_at(ch, sa->h.id, p, pa);
			int rb = ra < 0 ? 0 : page_at(ch, sb->h.id, p, pb);
			if (ra < 0 || rb < 0) {
				rc = ra < 0 ? ra : rb;
				break;
			}
			if (ra == rb && (ra != 0 || memcmp(pa, pb, ps) == 0))
				continue;
			const struct ckpt__snap *ns = rb == 0 ? sb : sa;
			rc = diff_add(run, ns, ckpt__snap_map_at(ns, p), p, ps);
		}
		ic++;
	}
	if (!rc && run && run->lo < run->hi) {
		ckpt_page_run pr = {run->lo, (run->hi - run->lo) / ps, run->name};
		rc = fn(&pr, arg);
	}
	if (pa)
		ckpt__mem_free(pa, 2 * ps);
	if (run)
		ckpt__mem_free(run, sizeof *run);
	ckpt__rset_free(&cand);
	ckpt__rset_free(&onlya);
	ckpt__rset_free(&onlyb);
	return rc;
}

/* ---- verify ------------------------------------------------------------------- */

struct ids {
	unsigned long long *v;
	size_t n, cap;
};

static int add_id(const char *name, unsigned type, void *arg)
{
	(void)type;
	struct ids *ids = arg;
	uint64_t id;
	if (ckpt__snap_name_parse(name, &id) != CKPT__NAME_SNAP)
		return 0;
	if (ckpt__mem_grow((void **)&ids->v, &ids->cap, ids->n + 1, sizeof *ids->v))
		return CKPT_ENOMEM;
	ids->v[ids->n++] = id;
	return 0;
}

CKPT_API int ckpt_chain_verify(const char *dir, size_t *checked)
{
	ckpt__clear_error();
	if (checked)
		*checked = 0;
	if (!dir)
		return ckpt__fail(CKPT_EINVAL, "ckpt_chain_verify: dir is NULL");
	int dirfd;
	int rc = ckpt__chain_dir_open(dir, "", &dirfd);
	if (rc)
		return rc;
	struct ids ids = {0};
	rc = ckpt__dir_foreach(dirfd, add_id, &ids);
	if (rc)
		rc = ckpt__fail(rc, "%s: cannot list the directory", dir);
	ZSTD_DCtx *dctx = ckpt__zstd_dctx();
	size_t bsz = (size_t)CKPT__MAX_PAGE_SIZE * CKPT__BLOCK_PAGES;
	void *out = ckpt__mem_reserve(bsz), *stored = ckpt__mem_reserve(bsz);
	if (!rc && (!dctx || !out || !stored))
		rc = ckpt__fail(CKPT_ENOMEM, "ckpt_chain_verify: out of memory");
	/* Every file, every block, in id order. */
	for (size_t i = 0; i < ids.n && !rc; i++) {
		for (size_t j = i + 1; j < ids.n; j++)
			if (ids.v[j] < ids.v[i]) {
				unsigned long long t = ids.v[i];
				ids.v[i] = ids.v[j];
				ids.v[j] = t;
			}
		char name[48];
		snprintf(name, sizeof name, CKPT__SNAP_FMT, ids.v[i]);
		struct ckpt__snap s;
		rc = ckpt__snap_open(&s, dirfd, name);
		for (size_t b = 0; !rc && b < s.nblocks; b++)
			rc = ckpt__snap_block(&s, dctx, (uint32_t)b, out, stored);
		if (!rc && s.h.id != ids.v[i])
			rc = ckpt__fail(CKPT_ECORRUPT, "%s: holds snapshot %llu", name,
					(unsigned long long)s.h.id);
		if (s.alloc || s.fd >= 0)
			ckpt__snap_close(&s);
		if (!rc && checked)
			(*checked)++;
	}
	if (dctx)
		ZSTD_freeDCtx(dctx);
	ckpt__mem_free(out, bsz);
	ckpt__mem_free(stored, bsz);
	ckpt__mem_array_free((void **)&ids.v, &ids.cap, sizeof *ids.v);
	/* And the links between them. */
	if (!rc) {
		struct ckpt__chain c;
		rc = ckpt__chain_open(&c, dir, dirfd);
		dirfd = -1;
		if (!rc)
			ckpt__chain_close(&c);
	}
	if (dirfd >= 0)
		close(dirfd);
	return rc;
}

/* ---- compact ------------------------------------------------------------------- */

/* Opens the chain directory and takes its writer's lock, as a writer
 * would (CKPT_EBUSY while one has it). */
static int lock_chain(const char *dir, const char *who, int *dirfd, int *lockfd)
{
	char prefix[64];
	snprintf(prefix, sizeof prefix, "%s: ", who);
	int rc = ckpt__chain_dir_open(dir, prefix, dirfd);
	if (rc)
		return rc;
	*lockfd = openat(*dirfd, CKPT__LOCK_NAME, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (*lockfd < 0 || flock(*lockfd, LOCK_EX | LOCK_NB) != 0) {
		int e = errno;
		if (*lockfd >= 0)
			close(*lockfd);
		close(*dirfd);
		if (*lockfd >= 0 && e == EWOULDBLOCK)
			return ckpt__fail(CKPT_EBUSY, "%s: %s is in use by another process", who, dir);
		return ckpt__fail(ckpt__from_errno(e), "%s: %s/%s: %s", who, dir, CKPT__LOCK_NAME,
				  strerror(e));
	}
	return 0;
}

CKPT_API int ckpt_chain_compact(const char *dir, unsigned keep, size_t *folded)
{
	ckpt__clear_error();
	if (folded)
		*folded = 0;
	if (!dir)
		return ckpt__fail(CKPT_EINVAL, "ckpt_chain_compact: dir is NULL");
	int dirfd, lockfd;
	int rc = lock_chain(dir, "ckpt_chain_compact", &dirfd, &lockfd);
	if (rc)
		return rc;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	rc = ckpt__chain_compact_locked(dir, dirfd, keep, keep, ncpu > 0 ? (unsigned)ncpu : 1,
					folded);
	close(lockfd);
	close(dirfd);
	return rc;
}

int ckpt__chain_compact_locked(const char *dir, int dirfd, unsigned keep, unsigned above,
			       unsigned threads, size_t *folded)
{
	if (folded)
		*folded = 0;
	int fd = dup(dirfd);
	if (fd < 0)
		return ckpt__fail(ckpt__from_errno(errno), "ckpt_chain_compact: %s: %s", dir,
				  strerror(errno));
	struct ckpt__chain c;
	int rc = ckpt__chain_open(&c, dir, fd);
	if (rc)
		return rc;
	if (c.n <= (size_t)(above > keep ? above : keep) + 1) {
		ckpt__chain_close(&c);
		return 0;
	}
	const struct ckpt__snap *k = &c.snaps[c.n - 1 - keep];
	size_t ps = k->h.page_size;
	/* Memory as of k, page by page: data staged in memory (reserved,
	 * paid for as it is written), zero and file pages by default. */
	size_t total = 0;
	for (size_t i = 0; i < k->nmaps; i++)
		total += (k->maps[i].end - k->maps[i].start) / ps;
	char *stage = total ? ckpt__mem_reserve(total * ps) : NULL;
	struct ckpt__wmap *maps = ckpt__mem_alloc((k->nmaps ? k->nmaps : 1) * sizeof *maps);
	struct ckpt__wrun *runs = ckpt__mem_alloc((total ? total : 1) * sizeof *runs);
	char *names = ckpt__mem_alloc(k->nmaps * 4096 + 1);
	if ((total && !stage) || !maps || !runs || !names)
		rc = ckpt__fail(CKPT_ENOMEM, "ckpt_chain_compact: out of memory");
	size_t nruns = 0, used = 0;
	for (size_t i = 0; i < k->nmaps && !rc; i++) {
		const struct ckpt__fmap *m = &k->maps[i];
		maps[i] = (struct ckpt__wmap){
			.start = m->start, .end = m->end, .offset = m->offset, .inode = m->inode,
			.born = k->h.id, .dev_major = m->dev_major, .dev_minor = m->dev_minor,
			.prot = m->prot, .flags = m->flags, .kind = m->kind, .page_shift = m->page_shift,
			.keep_off = m->keep_off, .keep_len = m->keep_len,
			.name = ckpt__snap_str(k, m->name_off, m->name_len, names + i * 4096, 4096),
		};
		for (uintptr_t a = m->start; a < m->end && !rc; a += ps) {
			struct ckpt__source src;
			ckpt__chain_source(&c, k->h.id, a, &src);
			int dflt = (m->flags & CKPT__MF_ANON) ? CKPT__RK_ZERO : CKPT__RK_FILE;
			if (src.kind == CKPT__RK_DATA) {
				rc = ckpt__chain_page(&c, k->h.id, a, stage + used);
				runs[nruns++] = (struct ckpt__wrun){a, 1, CKPT__RK_DATA,
								    (uintptr_t)(stage + used)};
				used += ps;
			} else if (src.kind != dflt) {
				runs[nruns++] = (struct ckpt__wrun){a, 1, src.kind, 0};
			}
		}
	}
	if (!rc) {
		struct ckpt__wplan p = {
			.id = k->h.id, .parent = 0, .flags = CKPT__SF_BASE | (k->h.flags & CKPT__SF_NOT_RESUMABLE),
			.page_size = (uint32_t)ps, .nthreads = k->h.nthreads,
			.build_id = k->strings + k->h.bid_off, .build_id_len = k->h.bid_len,
			.maps = maps, .nmaps = k->nmaps, .runs = runs, .nruns = nruns,
			.level = 3, .threads = threads ? threads : 1,
			.time_ns = k->h.time_ns, /* the commit it stands for */
			/* A resume continues from the new base as from k. */
			.proc = k->proc, .proc_size = k->proc_size,
		};
		char exe[4096];
		p.exe = ckpt__snap_str(k, k->h.exe_off, k->h.exe_len, exe, sizeof exe);
		memcpy(p.chain_id, k->h.chain_id, 16);
		struct ckpt__wresult res;
		rc = ckpt__snap_write(c.dirfd, &p, &res);
	}
	size_t nfold = 0;
	if (!rc) {
		/* The new base is in place: the older files are not part of the
		 * chain any more. */
		for (size_t i = 0; i < c.n - 1 - keep; i++) {
			char name[48];
			snprintf(name, sizeof name, CKPT__SNAP_FMT, (unsigned long long)c.snaps[i].h.id);
			unlinkat(c.dirfd, name, 0);
			nfold++;
		}
		fsync(c.dirfd);
		if (folded)
			*folded = nfold;
	}
	if (stage)
		ckpt__mem_free(stage, total * ps);
	if (maps)
		ckpt__mem_free(maps, (k->nmaps ? k->nmaps : 1) * sizeof *maps);
	if (runs)
		ckpt__mem_free(runs, (total ? total : 1) * sizeof *runs);
	if (names)
		ckpt__mem_free(names, k->nmaps * 4096 + 1);
	ckpt__chain_close(&c);
	return rc;
}

struct region_call {
	int (*fn)(const ckpt_region_info *r, void *arg);
	void *arg;
};

static int call_region(const char *name, size_t nl, uint64_t addr, uint64_t len, void *arg)
{
	(void)nl;
	struct region_call *rc = arg;
	ckpt_region_info r = {name, (uintptr_t)addr, (size_t)len};
	return rc->fn(&r, rc->arg);
}

CKPT_API int ckpt_chain_regions(ckpt_chain *ch, uint64_t id,
				int (*fn)(const ckpt_region_info *r, void *arg), void *arg)
{
	ckpt__clear_error();
	if (!fn)
		return ckpt__fail(CKPT_EINVAL, "ckpt_chain_regions: fn is NULL");
	const struct ckpt__snap *s = find(ch, id, "ckpt_chain_regions");
	if (!s)
		return ch ? CKPT_ENOENT : CKPT_EINVAL;
	struct region_call rc = {fn, arg};
	return ckpt__snap_regions(s, call_region, &rc);
}

struct aside_ctx {
	uint64_t keep, newest;
	int found;
	uint64_t *ids;
	size_t n, cap;
};

static int list_newer(const char *name, unsigned type, void *arg)
{
	(void)type;
	struct aside_ctx *a = arg;
	uint64_t id;
	if (ckpt__snap_name_parse(name, &id) != CKPT__NAME_SNAP)
		return 0;
	a->found |= id == a->keep;
	if (id <= a->keep)
		return 0;
	if (ckpt__mem_grow((void **)&a->ids, &a->cap, a->n + 1, sizeof *a->ids))
		return CKPT_ENOMEM;
	a->ids[a->n++] = id;
	return 0;
}

CKPT_API int ckpt_chain_set_aside(const char *dir, uint64_t keep, size_t *moved)
{
	ckpt__clear_error();
	if (moved)
		*moved = 0;
	if (!dir)
		return ckpt__fail(CKPT_EINVAL, "ckpt_chain_set_aside: dir is NULL");
	int dirfd, lockfd;
	int rc = lock_chain(dir, "ckpt_chain_set_aside", &dirfd, &lockfd);
	if (rc)
		return rc;
	struct aside_ctx a = {.keep = keep};
	rc = ckpt__dir_foreach(dirfd, list_newer, &a);
	if (rc)
		rc = ckpt__fail(rc, "ckpt_chain_set_aside: cannot list %s", dir);
	else if (keep && !a.found)
		rc = ckpt__fail(CKPT_ENOENT, "ckpt_chain_set_aside: %s has no snapshot %llu", dir,
				(unsigned long long)keep);
	char sub[96];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(sub, sizeof sub, "aside-%llu-%lld%09ld", (unsigned long long)keep,
		 (long long)ts.tv_sec, ts.tv_nsec);
	int subfd = -1;
	if (!rc && a.n) {
		if (mkdirat(dirfd, sub, 0700) != 0 ||
		    (subfd = openat(dirfd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
			rc = ckpt__fail(ckpt__from_errno(errno), "ckpt_chain_set_aside: %s/%s: %s", dir,
					sub, strerror(errno));
	}
	/* Newest first: a chain cut short at any instant is still a chain. */
	size_t done = 0;
	for (size_t k = a.n; !rc && k-- > 0;) {
		uint64_t newest = 0;
		size_t at = 0;
		for (size_t i = 0; i < a.n; i++)
			if (a.ids[i] > newest && a.ids[i] != UINT64_MAX) {
				newest = a.ids[i];
				at = i;
			}
		a.ids[at] = UINT64_MAX;
		char name[48];
		snprintf(name, sizeof name, CKPT__SNAP_FMT, (unsigned long long)newest);
		if (renameat(dirfd, name, subfd, name) != 0)
			rc = ckpt__fail(ckpt__from_errno(errno), "ckpt_chain_set_aside: %s/%s: %s", dir,
					name, strerror(errno));
		else
			done++;
	}
	if (subfd >= 0 && (fsync(subfd) != 0 || fsync(dirfd) != 0) && !rc)
		rc = ckpt__fail(ckpt__from_errno(errno), "ckpt_chain_set_aside: %s: %s", dir,
				strerror(errno));
	if (subfd >= 0)
		close(subfd);
	if (moved)
		*moved = done;
	ckpt__mem_array_free((void **)&a.ids, &a.cap, sizeof *a.ids);
	close(lockfd);
	close(dirfd);
	return rc;
}
