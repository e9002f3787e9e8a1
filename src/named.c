/*
 * named.c - named regions (named.h).
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "named.h"
#include "error.h"
#include "fill.h"
#include "maps.h"
#include "mem.h"

#include <string.h>
#include <sys/mman.h>

static int name_ok(const char *name, size_t *len)
{
	size_t n = strnlen(name, CKPT__NAME_MAX + 1);
	*len = n;
	if (n == 0 || n > CKPT__NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)name[i];
		if (ch < 0x20 || ch == 0x7f || ch == '/')
			return 0;
	}
	return 1;
}

int ckpt__named_alloc(struct ckpt__named **np)
{
	if (*np)
		return 0;
	if (!(*np = ckpt__mem_alloc(sizeof **np)))
		return ckpt__fail(CKPT_ENOMEM, "ckpt_protect: out of memory");
	memset(*np, 0, sizeof **np);
	return 0;
}

int ckpt__named_add(struct ckpt__named **np, const char *name, void *addr, size_t len)
{
	size_t nl;
	if (!name_ok(name, &nl))
		return ckpt__fail(CKPT_EINVAL,
				  "ckpt_protect: a region's name is 1 to %d bytes, none of them '/' "
				  "or a control character (got \"%.*s\"%s)",
				  CKPT__NAME_MAX, (int)(nl > CKPT__NAME_MAX ? CKPT__NAME_MAX : nl), name,
				  nl > CKPT__NAME_MAX ? "..." : "");
	uintptr_t lo = (uintptr_t)addr, hi = lo + len;
	if (!addr || !len || hi < lo || ckpt__page_up(hi) < hi)
		return ckpt__fail(CKPT_EINVAL, "ckpt_protect: region %s: %s", name,
				  !addr ? "address is NULL" : !len ? "length is 0" : "address + length overflows");
	int rc = ckpt__named_alloc(np);
	if (rc)
		return rc;
	struct ckpt__named *n = *np;
	for (size_t i = 0; i < n->n; i++) {
		const struct ckpt__region_name *o = &n->r[i];
		if (!strcmp(o->name, name))
			return ckpt__fail(CKPT_EINVAL, "ckpt_protect: region %s is named twice", name);
		if (lo < o->addr + o->len && o->addr < hi)
			return ckpt__fail(CKPT_EINVAL,
					  "ckpt_protect: region %s (%p, %zu bytes) overlaps region %s "
					  "(%p, %zu bytes)",
					  name, addr, len, o->name, (void *)o->addr, o->len);
	}
	if (ckpt__mem_grow((void **)&n->r, &n->cap, n->n + 1, sizeof *n->r))
		return ckpt__fail(CKPT_ENOMEM, "ckpt_protect: out of memory");
	struct ckpt__region_name *r = &n->r[n->n++];
	memset(r, 0, sizeof *r);
	memcpy(r->name, name, nl);
	r->addr = lo;
	r->len = len;
	return 0;
}

void ckpt__named_free(struct ckpt__named *n)
{
	if (!n)
		return;
	ckpt__mem_array_free((void **)&n->r, &n->cap, sizeof *n->r);
	ckpt__pbuf_free(&n->rec);
	ckpt__mem_free(n, sizeof *n);
}

struct cover_ctx {
	uintptr_t next; /* covered up to here */
	int writable;   /* must be */
	int bad;        /* a mapping that is not writable */
};

static int cover(uintptr_t s, uintptr_t e, const struct ckpt__vma *v, void *arg)
{
	struct cover_ctx *c = arg;
	if (s != c->next || (c->writable && !(v->perms & CKPT__VMA_W)))
		c->bad = 1;
	if (!c->bad)
		c->next = e;
	return 0;
}

int ckpt__named_spans(const struct ckpt__named *n, struct ckpt__rset *out, int writable,
		      const char *what)
{
	ckpt__rset_clear(out);
	struct ckpt__maps m = {0};
	int rc = ckpt__maps_read(&m);
	if (rc)
		return ckpt__fail(rc, "%s: cannot read /proc/self/maps", what);
	for (size_t i = 0; i < n->n && !rc; i++) {
		const struct ckpt__region_name *r = &n->r[i];
		uintptr_t lo = ckpt__page_down(r->addr), hi = ckpt__page_up(r->addr + r->len);
		struct cover_ctx c = {lo, writable, 0};
		ckpt__maps_foreach(&m, lo, hi, cover, &c);
		if (c.bad || c.next != hi)
			rc = ckpt__fail(CKPT_EINVAL, "%s: region %s (%p, %zu bytes) is %s", what, r->name,
					(void *)r->addr, r->len,
					c.bad ? "not all writable memory" : "not all mapped");
		else if (ckpt__rset_add(out, lo, hi))
			rc = ckpt__fail(CKPT_ENOMEM, "%s: out of memory", what);
	}
	ckpt__maps_free(&m);
	return rc;
}

int ckpt__named_record(struct ckpt__named *n)
{
	ckpt__pbuf_free(&n->rec);
	for (size_t i = 0; i < n->n; i++) {
		const struct ckpt__region_name *r = &n->r[i];
		uint64_t h[2] = {r->addr, r->len};
		ckpt__pbuf_add(&n->rec, CKPT__PE_REGION, h, sizeof h, r->name, strlen(r->name));
	}
	return n->rec.err ? CKPT_ENOMEM : 0;
}

/* ---- reading them back ---------------------------------------------------------- */

struct walk_ctx {
	int (*fn)(const char *name, size_t name_len, uint64_t addr, uint64_t len, void *arg);
	void *arg;
	const char *file;
};

static int walk_entry(uint32_t type, const unsigned char *p, size_t len, void *arg)
{
	struct walk_ctx *w = arg;
	if (type != CKPT__PE_REGION)
		return 0;
	char name[CKPT__NAME_MAX + 1];
	size_t nl = len >= 16 ? len - 16 : 0;
	if (len < 17 || nl > CKPT__NAME_MAX)
		return ckpt__fail(CKPT_ECORRUPT, "%s: a region entry of %zu bytes", w->file, len);
	memcpy(name, p + 16, nl);
	name[nl] = '\0';
	size_t got;
	uint64_t h[2];
	memcpy(h, p, sizeof h);
	if (!name_ok(name, &got) || got != nl || !h[1] || h[0] + h[1] < h[0])
		return ckpt__fail(CKPT_ECORRUPT, "%s: a malformed region entry", w->file);
	return w->fn(name, nl, h[0], h[1], w->arg);
}

int ckpt__snap_regions(const struct ckpt__snap *s,
		       int (*fn)(const char *name, size_t name_len, uint64_t addr, uint64_t len,
				 void *arg),
		       void *arg)
{
	if (!s->proc)
		return 0;
	struct walk_ctx w = {fn, arg, s->name};
	return ckpt__proc_walk(s->proc, s->proc_size, walk_entry, &w);
}

/* The snapshot's regions, gathered. */
struct found {
	struct ckpt__region_name *r;
	size_t n, cap;
};

static int gather(const char *name, size_t nl, uint64_t addr, uint64_t len, void *arg)
{
	struct found *f = arg;
	if (ckpt__mem_grow((void **)&f->r, &f->cap, f->n + 1, sizeof *f->r))
		return CKPT_ENOMEM;
	struct ckpt__region_name *r = &f->r[f->n++];
	memset(r, 0, sizeof *r);
	memcpy(r->name, name, nl);
	r->addr = (uintptr_t)addr;
	r->len = (size_t)len;
	return 0;
}

static const struct ckpt__region_name *find_name(const struct ckpt__region_name *r, size_t n,
						  const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(r[i].name, name))
			return &r[i];
	return NULL;
}

/* The snapshot id of w's chain and its regions in *f. */
static int load_regions(struct ckpt__chainw *w, uint64_t id, struct ckpt__chain **cp,
			const struct ckpt__snap **sp, struct found *f, const char *what)
{
	int rc = ckpt__chainw_reader(w, cp);
	if (rc)
		return rc;
	const struct ckpt__snap *s = ckpt__chain_find(*cp, id);
	if (!s)
		return ckpt__fail(CKPT_ENOENT, "%s: snapshot %llu is not in the chain (newest %llu)",
				  what, (unsigned long long)id, (unsigned long long)w->latest);
	if (s->h.page_size != ckpt__pagesize)
		return ckpt__fail(CKPT_EFOREIGN, "%s: %s has page size %u, this system %zu", what,
				  s->name, s->h.page_size, ckpt__pagesize);
	*sp = s;
	rc = ckpt__snap_regions(s, gather, f);
	if (rc == CKPT_ENOMEM)
		return ckpt__fail(rc, "%s: out of memory", what);
	if (!rc && !f->n)
		rc = ckpt__fail(CKPT_EMISMATCH, "%s: %s holds no named regions (its handle named none)",
				what, s->name);
	return rc;
}

static int match(const struct ckpt__named *n, const struct found *f, long one, int all,
		 const char *file, const char *what)
{
	for (size_t i = 0; i < n->n; i++) {
		if (one >= 0 && (size_t)one != i)
			continue;
		const struct ckpt__region_name *r = &n->r[i];
		const struct ckpt__region_name *o = find_name(f->r, f->n, r->name);
		if (!o && (all || one >= 0))
			return ckpt__fail(CKPT_EMISMATCH, "%s: region %s is not in %s", what, r->name,
					  file);
		if (o && o->len != r->len)
			return ckpt__fail(CKPT_EMISMATCH,
					  "%s: region %s is %zu bytes, %zu bytes in %s", what, r->name,
					  r->len, o->len, file);
	}
	if (all)
		for (size_t i = 0; i < f->n; i++)
			if (!find_name(n->r, n->n, f->r[i].name))
				return ckpt__fail(CKPT_EMISMATCH,
						  "%s: region %s of %s is not protected (ckpt_protect)",
						  what, f->r[i].name, file);
	return 0;
}

int ckpt__named_match(struct ckpt__chainw *w, const struct ckpt__named *n, uint64_t id, int all,
		      const char *what)
{
	static const struct ckpt__named none;
	struct ckpt__chain *c;
	const struct ckpt__snap *s;
	struct found f = {0};
	int rc = load_regions(w, id, &c, &s, &f, what);
	if (!rc)
		rc = match(n ? n : &none, &f, -1, all, s->name, what);
	ckpt__mem_array_free((void **)&f.r, &f.cap, sizeof *f.r);
	return rc;
}

/* One region's pages as of the snapshot, in ckpt's memory. */
struct staged {
	const struct ckpt__region_name *to; /* where it goes */
	uintptr_t from;                     /* where it was */
	char *buf;                          /* its pages: [page_down(from), ...) */
	size_t bytes;
};

int ckpt__named_restore(struct ckpt__chainw *w, const struct ckpt__named *n, uint64_t id, long one,
			const char *what)
{
	struct ckpt__chain *c;
	const struct ckpt__snap *s;
	struct found f = {0};
	int rc = load_regions(w, id, &c, &s, &f, what);
	if (!rc)
		rc = match(n, &f, one, one < 0, s->name, what);
	struct staged *st = NULL;
	size_t nst = 0, stcap = 0;
	for (size_t i = 0; !rc && i < n->n; i++) {
		if (one >= 0 && (size_t)one != i)
			continue;
		const struct ckpt__region_name *r = &n->r[i];
		const struct ckpt__region_name *o = find_name(f.r, f.n, r->name);
		uintptr_t lo = ckpt__page_down(o->addr), hi = ckpt__page_up(o->addr + o->len);
		if (ckpt__mem_grow((void **)&st, &stcap, nst + 1, sizeof *st)) {
			rc = ckpt__fail(CKPT_ENOMEM, "%s: out of memory", what);
			break;
		}
		struct staged *g = &st[nst++];
		*g = (struct staged){r, o->addr, ckpt__mem_alloc(hi - lo), hi - lo};
		if (!g->buf) {
			rc = ckpt__fail(CKPT_ENOMEM, "%s: out of memory for region %s (%zu bytes)", what,
					r->name, r->len);
			break;
		}
		/* Its pages as a new mapping there would hold them, moved to
		 * the buffer: zero where the snapshot has no data. */
		struct ckpt__rset span = {0};
		struct ckpt__fill fl = {0};
		if (ckpt__rset_add(&span, lo, hi))
			rc = ckpt__fail(CKPT_ENOMEM, "%s: out of memory", what);
		if (!rc)
			rc = ckpt__fill_plan(&fl, c, s->h.id, &span);
		if (!rc) {
			ckpt__fill_move(&fl, (intptr_t)((uintptr_t)g->buf - lo));
			rc = ckpt__fill_run(&fl, w->threads);
		}
		ckpt__fill_free(&fl);
		ckpt__rset_free(&span);
		if (rc)
			rc = ckpt__fail(rc, "%s: region %s: %s", what, r->name, ckpt_last_error());
	}
	/* Everything read and checked: now the program's memory. */
	for (size_t i = 0; !rc && i < nst; i++)
		memcpy((void *)st[i].to->addr, st[i].buf + (st[i].from - ckpt__page_down(st[i].from)),
		       st[i].to->len);
	for (size_t i = 0; i < nst; i++)
		if (st[i].buf)
			ckpt__mem_free(st[i].buf, st[i].bytes);
	ckpt__mem_array_free((void **)&st, &stcap, sizeof *st);
	ckpt__mem_array_free((void **)&f.r, &f.cap, sizeof *f.r);
	return rc;
}
