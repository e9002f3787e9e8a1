/*
 * named.h - named regions: a handle that stores only the memory the program
 * names, and brings it back by name wherever it lies now (ckpt_protect).
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * In a snapshot the regions are REGION entries of the process record
 * (doc/FORMAT.md): the address and length each had at the commit, and its
 * name; the pages they touch are the snapshot's mappings, as for any
 * handle.  A restore by name reads a region's pages at the address it had
 * then into memory of ckpt's own, every one checked, and only then copies
 * its bytes to where the region is now.
 */
#ifndef CKPT_NAMED_H
#define CKPT_NAMED_H

#include "commit.h"
#include "proc.h"
#include "rangeset.h"

#define CKPT__NAME_MAX 63

struct ckpt__region_name {
	char name[CKPT__NAME_MAX + 1];
	uintptr_t addr;
	size_t len;
};

struct ckpt__named {
	struct ckpt__region_name *r; /* in the order they were named */
	size_t n, cap;
	uint64_t from;          /* ckpt_protect_from's snapshot, 0 if none */
	struct ckpt__pbuf rec;  /* the REGION entries a commit writes */
};

/* *np allocated (empty) if it is not yet.  0 or CKPT_ENOMEM. */
CKPT__HIDDEN int ckpt__named_alloc(struct ckpt__named **np);
/* Adds a region to *np (allocated on first use), after checking the name
 * and that it overlaps no other.  0, CKPT_EINVAL or CKPT_ENOMEM, with the
 * message set. */
CKPT__HIDDEN int ckpt__named_add(struct ckpt__named **np, const char *name, void *addr, size_t len);
CKPT__HIDDEN void ckpt__named_free(struct ckpt__named *n);

/* The pages the regions touch, and a check that all of them are mapped
 * (and writable: before tracking protects them) now (CKPT_EINVAL naming
 * the region if not; `what` is the caller's name for messages). */
CKPT__HIDDEN int ckpt__named_spans(const struct ckpt__named *n, struct ckpt__rset *out,
				   int writable, const char *what);

/* Makes n->rec, the process record of the handle's commits. */
CKPT__HIDDEN int ckpt__named_record(struct ckpt__named *n);

/* Calls fn(name, name_len, addr, len, arg) for each REGION entry of s, in
 * the record's order; stops at fn's first non-zero.  CKPT_ECORRUPT for a
 * malformed entry. */
CKPT__HIDDEN int ckpt__snap_regions(const struct ckpt__snap *s,
				    int (*fn)(const char *name, size_t name_len, uint64_t addr,
					      uint64_t len, void *arg),
				    void *arg);

/* Whether snapshot `id` of w's chain holds named regions, each of n's
 * among them with the same length (`all`: and none that n lacks):
 * 0, or CKPT_EMISMATCH naming the first that differs, CKPT_ENOENT... */
CKPT__HIDDEN int ckpt__named_match(struct ckpt__chainw *w, const struct ckpt__named *n,
				   uint64_t id, int all, const char *what);

/* Fills regions of n from snapshot id of w's chain, by name: all of them
 * (one < 0; the snapshot must then hold exactly those), or region `one`
 * alone.  Every page is read and checked before the first byte of the
 * program's memory changes.  0, CKPT_EMISMATCH naming the region,
 * CKPT_ENOENT, CKPT_ECORRUPT, CKPT_ENOMEM... with the message set. */
CKPT__HIDDEN int ckpt__named_restore(struct ckpt__chainw *w, const struct ckpt__named *n,
				     uint64_t id, long one, const char *what);

#endif /* CKPT_NAMED_H */
